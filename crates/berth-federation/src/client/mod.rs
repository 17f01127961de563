//! The registry client proxy projects fetch with and replication sends with: the OCI
//! distribution API's reads (manifests, blobs, tags) and writes (`push.rs`) against one
//! registry, answering its challenge with Basic
//! credentials or the Docker token flow (tokens kept per scope until shortly before
//! they expire), following redirects (a blob's bytes are often on a CDN or a bucket),
//! every request bounded in time.
//!
//! Written here rather than taken from `oci-client`: that crate pulls a second TLS and
//! JSON stack's worth of features, buffers whole blobs or hides their stream behind its
//! own writer, and cannot report an upstream's 429 apart from its other failures. What
//! Berth needs is a handful of `GET`/`HEAD`s over `reqwest`, which the workspace already
//! builds. Digests are verified by the caller, which stores what it reads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_core::manifest::Descriptor;
use berth_core::manifest::MAX_MANIFEST_SIZE;
use berth_core::{Digest, Error, ErrorKind, MediaType};
use berth_storage::ByteStream;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, Url};

use crate::challenge::{self, Challenge};

mod push;

pub use push::{BlobToPush, Pushed, Sent};

/// One request to the registry, as [`UpstreamClient::exchange`] sends it.
pub(crate) struct Request<'a> {
    pub method: Method,
    pub url: Url,
    /// The repository the request is about, and what it needs there (`pull`,
    /// `pull,push`, `pull,push,delete`): the scope of the token asked for.
    pub repo: &'a str,
    pub actions: &'static str,
    pub accept: Option<&'a str>,
    /// A content type and the body.
    pub body: Option<(&'a str, Bytes)>,
    /// More headers (`Content-Range` of a chunk).
    pub headers: Vec<(&'static str, String)>,
    /// Bounded by the request timeout (a manifest, a HEAD); else only each read is.
    pub timed: bool,
    /// A token scope other than the repository's (the catalog's).
    pub scope: Option<&'static str>,
}

impl Request<'_> {
    fn with_scope(mut self, scope: &'static str) -> Self {
        self.scope = Some(scope);
        self
    }
}

/// Every manifest type Berth stores, asked for at once: the upstream answers with what it
/// has, byte for byte, never a conversion.
pub(crate) const ACCEPT_MANIFESTS: &str = concat!(
    "application/vnd.oci.image.index.v1+json, ",
    "application/vnd.oci.image.manifest.v1+json, ",
    "application/vnd.docker.distribution.manifest.list.v2+json, ",
    "application/vnd.docker.distribution.manifest.v2+json"
);

/// How long to wait for an upstream's answer to a manifest or tag request, and for each
/// read of a blob's body.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    /// A manifest `GET`/`HEAD`, a tag listing, a token.
    pub request: Duration,
    /// Between two reads of a blob's body.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { connect: Duration::from_secs(5), request: Duration::from_secs(15), read: Duration::from_secs(30) }
    }
}

/// A client for one upstream. Its password is held in memory only, never logged.
pub struct UpstreamClient {
    name: String,
    base: Url,
    http: reqwest::Client,
    credentials: Option<(String, String)>,
    timeouts: Timeouts,
    /// Bearer tokens by scope, with when to stop using them.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// The registry asked for Basic credentials.
    basic_first: AtomicBool,
    /// What errors call the registry: `upstream` (a proxy project's) or `registry` (a
    /// replication destination).
    role: &'static str,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").field("name", &self.name).field("base", &self.base.as_str()).finish()
    }
}

/// A manifest as the upstream serves it.
pub struct RemoteManifest {
    pub body: Bytes,
    pub media_type: String,
}

impl UpstreamClient {
    pub fn new(
        name: &str,
        url: &str,
        ca_pem: Option<&str>,
        credentials: Option<(String, String)>,
        timeouts: Timeouts,
    ) -> Result<UpstreamClient, Error> {
        let bad = |m: String| Error::new(ErrorKind::BadRequest).with_message(m);
        let base = Url::parse(url).map_err(|e| bad(format!("upstream URL {url}: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| bad(format!("the CA of upstream {name}: {e}")))?;
            if certs.is_empty() {
                return Err(bad(format!("the CA of upstream {name} holds no certificate")));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| Error::internal(format!("building the client of {name}: {e}")))?;
        Ok(UpstreamClient {
            name: name.to_owned(),
            base,
            http,
            credentials,
            timeouts,
            tokens: Mutex::default(),
            basic_first: AtomicBool::new(false),
            role: "upstream",
        })
    }

    /// The same client, its errors naming a replication destination (`registry NAME`).
    pub fn for_replication(mut self) -> UpstreamClient {
        self.role = "registry";
        self
    }

    /// `HEAD` of a manifest: its digest, when the upstream says it (`None`: no such
    /// manifest). Docker Hub does not count a `HEAD` against its pull limit.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<Option<Digest>>, Error> {
        let path = format!("{repo}/manifests/{reference}");
        let Some(response) = self.send(Method::HEAD, &path, repo, Some(ACCEPT_MANIFESTS)).await? else {
            return Ok(None);
        };
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        Ok(Some(digest))
    }

    /// `GET` of a manifest (at most [`MAX_MANIFEST_SIZE`] bytes), as served.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<Option<RemoteManifest>, Error> {
        let path = format!("{repo}/manifests/{reference}");
        let Some(response) = self.send(Method::GET, &path, repo, Some(ACCEPT_MANIFESTS)).await? else {
            return Ok(None);
        };
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| berth_core::manifest::essence(v).to_owned())
            .unwrap_or_else(|| MediaType::OCI_MANIFEST.to_owned());
        let body = tokio::time::timeout(self.timeouts.request, read_limited(response, MAX_MANIFEST_SIZE))
            .await
            .map_err(|_| self.unreachable("timed out reading a manifest"))??;
        Ok(Some(RemoteManifest { body, media_type }))
    }

    /// `HEAD` of a blob: its size, if it exists.
    pub async fn blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, Error> {
        let path = format!("{repo}/blobs/{digest}");
        Ok(self.send(Method::HEAD, &path, repo, None).await?.map(|r| length(&r).unwrap_or(0)))
    }

    /// `GET` of a blob: its length, if the upstream says it, and its bytes as they arrive
    /// (unverified: the caller hashes them).
    pub async fn blob(&self, repo: &str, digest: &Digest) -> Result<Option<(Option<u64>, ByteStream)>, Error> {
        let path = format!("{repo}/blobs/{digest}");
        let Some(response) = self.send(Method::GET, &path, repo, None).await? else {
            return Ok(None);
        };
        let len = length(&response);
        let stream: ByteStream = Box::pin(response.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)));
        Ok(Some((len, stream)))
    }

    /// The upstream's tags of `repo`, all of them (following its `Link` pages, up to
    /// 100 pages).
    pub async fn tags(&self, repo: &str) -> Result<Option<Vec<String>>, Error> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut path = format!("{repo}/tags/list");
        for _ in 0..100 {
            let Some(response) = self.send(Method::GET, &path, repo, None).await? else {
                return Ok(None);
            };
            let next = next_page(&response);
            let body = tokio::time::timeout(self.timeouts.request, read_limited(response, 16 << 20))
                .await
                .map_err(|_| self.unreachable("timed out reading tags"))??;
            let list: TagList = serde_json::from_slice(&body)
                .map_err(|e| self.unreachable(&format!("answered a tag listing that is not JSON: {e}")))?;
            tags.extend(list.tags.unwrap_or_default());
            match next {
                Some(next) => path = next,
                None => break,
            }
        }
        Ok(Some(tags))
    }

    /// The referrers of manifest `digest` in `repo` (OCI 1.1's referrers API; the first
    /// page), or `None` from a registry without that API.
    pub async fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<Descriptor>>, Error> {
        #[derive(serde::Deserialize)]
        struct Index {
            manifests: Vec<Descriptor>,
        }
        let url = self.url(&format!("{repo}/referrers/{digest}"))?;
        let accept = Some("application/vnd.oci.image.index.v1+json");
        let request = Request {
            method: Method::GET,
            url,
            repo,
            actions: "pull",
            accept,
            body: None,
            headers: Vec::new(),
            timed: true,
            scope: None,
        };
        let response = self.exchange(request).await?;
        match response.status().as_u16() {
            200 => {}
            // No such API (distribution 2.8 answers 404, others 400 or 405).
            400 | 404 | 405 => return Ok(None),
            status => return Err(self.refused(status)),
        }
        let body = tokio::time::timeout(self.timeouts.request, read_limited(response, MAX_MANIFEST_SIZE))
            .await
            .map_err(|_| self.unreachable("timed out reading referrers"))??;
        match serde_json::from_slice::<Index>(&body) {
            Ok(index) => Ok(Some(index.manifests)),
            Err(_) => Ok(None),
        }
    }

    /// Every repository the registry lists (`/v2/_catalog`, following its pages, up to
    /// 100 of 1,000), for a pull rule's globs.
    pub async fn catalog(&self) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            repositories: Option<Vec<String>>,
        }
        let mut names = Vec::new();
        let mut path = "_catalog?n=1000".to_owned();
        for _ in 0..100 {
            let url = self.url(&path)?;
            let request = Request {
                method: Method::GET,
                url,
                repo: "",
                actions: "",
                accept: None,
                body: None,
                headers: Vec::new(),
                timed: true,
                scope: None,
            };
            let response = self.exchange(request.with_scope("registry:catalog:*")).await?;
            if !response.status().is_success() {
                return Err(self.refused(response.status().as_u16()));
            }
            let next = next_page(&response);
            let body = read_limited(response, 16 << 20).await?;
            let page: Catalog = serde_json::from_slice(&body)
                .map_err(|e| self.unreachable(&format!("answered a catalog that is not JSON: {e}")))?;
            names.extend(page.repositories.unwrap_or_default());
            match next {
                Some(next) => path = next,
                None => break,
            }
        }
        Ok(names)
    }

    /// Sends a request for `/v2/{path}` with whatever credentials the upstream asks
    /// for, scoped to pulling `repo`; `None` on 404. Any other failure is an error naming
    /// the upstream.
    async fn send(
        &self,
        method: Method,
        path: &str,
        repo: &str,
        accept: Option<&str>,
    ) -> Result<Option<reqwest::Response>, Error> {
        let timed = method == Method::HEAD || accept.is_some();
        let url = self.url(path)?;
        let request =
            Request { method, url, repo, actions: "pull", accept, body: None, headers: Vec::new(), timed, scope: None };
        let response = self.exchange(request).await?;
        match response.status().as_u16() {
            200..=299 => Ok(Some(response)),
            404 => Ok(None),
            status => Err(self.refused(status)),
        }
    }

    /// Sends `request`, answering a 401's challenge once (a Docker token for the
    /// request's scope, or Basic credentials), and returns whatever came back after that:
    /// the caller reads the status. A body is sent again after a challenge, so it is
    /// whole bytes, never a stream.
    pub(crate) async fn exchange(&self, request: Request<'_>) -> Result<reqwest::Response, Error> {
        let scope = match request.scope {
            Some(scope) => scope.to_owned(),
            None => format!("repository:{}:{}", request.repo, request.actions),
        };
        let mut authorization = match self.cached_token(&scope) {
            Some(token) => Some(format!("Bearer {token}")),
            // A registry that asked for Basic once gets it at once from then on.
            None if self.basic_first.load(Ordering::Relaxed) => self.basic(),
            None => None,
        };
        for attempt in 0..2 {
            let mut builder = self.http.request(request.method.clone(), request.url.clone());
            if let Some(accept) = request.accept {
                builder = builder.header(ACCEPT, accept);
            }
            if let Some((content_type, body)) = &request.body {
                builder = builder.header(CONTENT_TYPE, *content_type).body(body.clone());
            }
            for (name, value) in &request.headers {
                builder = builder.header(*name, value);
            }
            if let Some(value) = &authorization {
                builder = builder.header(AUTHORIZATION, value);
            }
            // A blob's body is bounded by the read timeout, not by this one.
            if request.timed {
                builder = builder.timeout(self.timeouts.request);
            }
            let response = builder.send().await.map_err(|e| self.unreachable(&transport(&e)))?;
            if response.status().as_u16() != 401 || attempt == 1 {
                return Ok(response);
            }
            let challenge =
                response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(challenge::parse);
            authorization = match challenge {
                Some(Challenge::Bearer { realm, service }) => {
                    Some(format!("Bearer {}", self.token(&realm, service.as_deref(), &scope).await?))
                }
                Some(Challenge::Basic) if self.credentials.is_some() => {
                    self.basic_first.store(true, Ordering::Relaxed);
                    self.basic()
                }
                _ => return Err(self.refused(401)),
            };
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// A URL the registry named (an upload's `Location`, absolute or a path).
    pub(crate) fn resolve(&self, location: &str) -> Result<Url, Error> {
        self.base.join(location).map_err(|e| self.unreachable(&format!("named a bad location: {e}")))
    }

    pub(crate) fn url(&self, path: &str) -> Result<Url, Error> {
        let base = self.base.as_str().trim_end_matches('/');
        let path = path.trim_start_matches("/v2/");
        Url::parse(&format!("{base}/v2/{path}")).map_err(|e| Error::internal(format!("upstream URL: {e}")))
    }

    fn basic(&self) -> Option<String> {
        use base64::Engine as _;
        let (user, password) = self.credentials.as_ref()?;
        Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))))
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap();
        tokens.get(scope).filter(|(_, until)| Instant::now() < *until).map(|(t, _)| t.clone())
    }

    /// A token for `scope` from the upstream's token service (with the credentials, if any).
    async fn token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String, Error> {
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let mut url = Url::parse(realm).map_err(|e| self.unreachable(&format!("sent a bad token realm: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = self.http.get(url).timeout(self.timeouts.request);
        if let Some(basic) = self.basic() {
            request = request.header(AUTHORIZATION, basic);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&transport(&e)))?;
        if !response.status().is_success() {
            return Err(self.refused(response.status().as_u16()));
        }
        let body = read_limited(response, 1 << 20).await?;
        let token: Token = serde_json::from_slice(&body)
            .map_err(|e| self.unreachable(&format!("answered a token request with something else: {e}")))?;
        let value = token
            .token
            .or(token.access_token)
            .ok_or_else(|| self.unreachable("answered a token request without a token"))?;
        // Docker's default lifetime is 60 s; stop using a token 10 s before it ends.
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(60).max(20) - 10);
        let mut tokens = self.tokens.lock().unwrap();
        if tokens.len() > 1024 {
            tokens.retain(|_, (_, until)| Instant::now() < *until);
        }
        tokens.insert(scope.to_owned(), (value.clone(), Instant::now() + lifetime));
        Ok(value)
    }

    pub(crate) fn unreachable(&self, why: &str) -> Error {
        Error::new(ErrorKind::Unavailable)
            .with_message(format!("{} {} {why}", self.role, self.name))
            .with_retry_after(5)
    }

    /// The error for an upstream's refusal: its credentials (401, 403) or its rate limit
    /// (429) name the upstream and what to do.
    pub(crate) fn refused(&self, status: u16) -> Error {
        let (role, name) = (self.role, &self.name);
        match status {
            401 | 403 => Error::new(ErrorKind::Denied).with_message(format!(
                "{role} {name} refused Berth's credentials for it ({status}); an administrator must update them"
            )),
            429 => Error::new(ErrorKind::TooManyRequests)
                .with_message(format!("{role} {name} is rate limiting Berth (429); retry later"))
                .with_retry_after(30),
            other => self.unreachable(&format!("answered HTTP {other}")),
        }
    }
}

/// What went wrong sending a request, without the URL (which can carry a token's query).
fn transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "is unreachable"
    } else if e.is_redirect() {
        "redirected too often"
    } else {
        "failed to answer"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { kind.to_owned() } else { format!("{kind} ({cause})") }
}

pub(crate) fn length(response: &reqwest::Response) -> Option<u64> {
    response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// The next page a `Link: </v2/…>; rel="next"` header names, as a path under `/v2/`.
fn next_page(response: &reqwest::Response) -> Option<String> {
    let link = response.headers().get("link")?.to_str().ok()?;
    let start = link.find('<')? + 1;
    let end = link[start..].find('>')? + start;
    let target = &link[start..end];
    let path = target.split_once("/v2/").map(|(_, p)| p)?;
    Some(path.to_owned())
}

pub(crate) async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, Error> {
    let mut stream = response.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::new(ErrorKind::Unavailable).with_message(format!("upstream: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(Error::new(ErrorKind::ManifestTooLarge).with_detail(format!("limit is {limit} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}
