//! Berth's HTTP surface: the OCI Distribution API.
//!
//! Every request goes the same way: parse the path into an [`Endpoint`], check the
//! method, authorize the typed access, run one registry operation, render. Handlers
//! never pick status codes (the error table in `berth-core` does) and never parse paths.
//!
//! This crate names no concrete storage or database: it is handed trait objects.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use berth_core::{Error, ErrorKind};
use berth_meta::{IdentityStore, MetadataStore, PolicyStore, RetentionStore, ScrubStore};
use berth_storage::BlobStore;
use tokio::sync::Semaphore;

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
mod blobs;
mod claims;
pub mod endpoint;
mod idle;
pub mod janitor;
pub mod lifecycle;
pub mod listen;
mod manifests;
pub mod observe;
pub mod proxies;
pub mod range;
mod response;
pub mod retention;
pub mod scrub;
pub mod system;
pub mod text;
pub mod tls;
mod uploads;

pub use auth::{Access, Action, AllowAll, Authorizer, Credentials, Grants, Principal, Subject};
pub use endpoint::Endpoint;
pub use proxies::TrustedProxies;
use response::ApiError;

/// Tunables of the registry core. The defaults are `berth serve`'s.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// An upload with no activity for this long is abandoned and its bytes removed.
    pub upload_ttl: Duration,
    /// How long a request waits for another request on the same upload to end before it
    /// is refused (a client retrying after a timeout while its first attempt still runs).
    pub busy_wait: Duration,
    /// Uploads open at once in one repository; a `POST` beyond is refused (429).
    pub max_open_uploads: u32,
    /// A request body that delivers no bytes for this long fails (nginx's
    /// `client_body_timeout` is 60 s too).
    pub body_idle_timeout: Duration,
    /// Requests carrying upload bytes (a monolithic `POST`, `PATCH`, the closing `PUT`)
    /// in flight on this node at once; more are answered 429 with `Retry-After`.
    pub max_uploads: usize,
    /// Blob `GET`s are answered 307 to a presigned URL of the blob store valid this long
    /// (when the store can make one); `None` serves the bytes through Berth.
    pub redirect_ttl: Option<Duration>,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            upload_ttl: Duration::from_secs(24 * 3600),
            busy_wait: Duration::from_secs(10),
            max_open_uploads: 1000,
            body_idle_timeout: Duration::from_secs(60),
            max_uploads: 1024,
            redirect_ttl: None,
        }
    }
}

/// The registry: its stores, its authorizer, and per-node upload state.
pub struct Registry {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetadataStore>,
    /// Users, projects, members, robots and signing keys.
    pub identity: Arc<dyn IdentityStore>,
    /// Immutable tag rules and quotas (enforced by `meta`'s own transactions).
    pub policy: Arc<dyn PolicyStore>,
    /// The integrity scrub's runs and findings (`scrub.rs`).
    pub scrub: Arc<dyn ScrubStore>,
    pub auth: Arc<dyn Authorizer>,
    /// Where events are recorded (`audit.rs`).
    pub audit: audit::AuditLog,
    pub config: RegistryConfig,
    /// This process's name in leases.
    pub node_id: String,
    /// Uploads a request on this node works on right now.
    claims: Arc<claims::Claims>,
    /// One permit per request carrying upload bytes (`config.max_uploads`).
    uploads: Semaphore,
    /// A scrub run goes on on this node (`scrub.rs`).
    scrubbing: std::sync::atomic::AtomicBool,
    /// The token service behind `/token`, when the authorizer is the token authorizer.
    pub tokens: Option<Arc<access::authorizer::TokenAuthorizer>>,
    /// Pull times and retention policies (`retention/`), set by [`Registry::with_retention`].
    pub retention: Option<Arc<dyn RetentionStore>>,
    /// When manifests and tags were last pulled, held until the next flush.
    pub pulls: retention::PullRecorder,
    /// Read-only mode: pushes, deletes and management writes are refused (one load per
    /// write request; reads never look): the registry-wide switch as this node last
    /// read it (`system.rs`).
    pub read_only: AtomicBool,
    /// The stored generation of accounts, memberships and projects this node's caches
    /// were last cleared for (`system.rs`).
    access_generation: std::sync::Mutex<String>,
    /// The garbage collector, when configured (`with_gc`).
    pub gc: Option<lifecycle::gc::Gc>,
    /// Held by an upload's commit-and-link and by GC's removal of the same digest.
    pub blob_locks: lifecycle::BlobLocks,
    /// This node's metrics (`observe`); enabled unless configured off.
    pub metrics: Arc<observe::Metrics>,
    /// What `/readyz` and `/metrics` read of the database; `None`: not checked.
    pub ops: Option<Arc<dyn berth_meta::OpsStore>>,
}

impl Registry {
    // One store per concern, each a trait object handed in by the wiring (`berth::open`,
    // its one caller): a struct of them would only rename this list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        meta: Arc<dyn MetadataStore>,
        identity: Arc<dyn IdentityStore>,
        policy: Arc<dyn PolicyStore>,
        scrub: Arc<dyn ScrubStore>,
        auth: Arc<dyn Authorizer>,
        audit: audit::AuditLog,
        config: RegistryConfig,
    ) -> Registry {
        let uploads = Semaphore::new(config.max_uploads);
        Registry {
            blobs,
            meta,
            identity,
            policy,
            scrub,
            auth,
            audit,
            config,
            node_id: uuid::Uuid::new_v4().to_string(),
            claims: Arc::default(),
            uploads,
            scrubbing: Default::default(),
            tokens: None,
            retention: None,
            pulls: retention::PullRecorder::default(),
            read_only: AtomicBool::new(false),
            access_generation: Default::default(),
            gc: None,
            blob_locks: lifecycle::BlobLocks::default(),
            metrics: Arc::new(observe::Metrics::new(true)),
            ops: None,
        }
    }

    /// Collects garbage with `gc` (scheduled by `lifecycle::gc::Collector`, on demand
    /// through the management API).
    pub fn with_gc(mut self, gc: lifecycle::gc::Gc) -> Registry {
        self.gc = Some(gc);
        self
    }

    /// Keeps pull times and retention policies in `store`.
    pub fn with_retention(mut self, store: Arc<dyn RetentionStore>) -> Registry {
        self.retention = Some(store);
        self
    }

    /// Records into `metrics` (the ones the stores were wrapped with, see
    /// [`observe::stores::Timed`]) and checks the database's readiness with `ops`.
    pub fn with_observability(
        mut self,
        metrics: Arc<observe::Metrics>,
        ops: Arc<dyn berth_meta::OpsStore>,
    ) -> Registry {
        self.metrics = metrics;
        self.ops = Some(ops);
        self
    }

    /// Requests carrying upload bytes running now (the upload permits taken).
    pub fn uploads_in_progress(&self) -> usize {
        self.config.max_uploads.saturating_sub(self.uploads.available_permits())
    }

    /// Authorizes with `tokens` and serves its `/token`.
    pub fn with_token_auth(mut self, tokens: Arc<access::authorizer::TokenAuthorizer>) -> Registry {
        self.auth = Arc::clone(&tokens) as Arc<dyn Authorizer>;
        self.tokens = Some(tokens);
        self
    }
}

/// The whole HTTP application.
pub fn app(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/token", axum::routing::any(access::token_endpoint::token))
        .nest(
            "/api/v1",
            api::router().route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&registry),
                api::refuse_writes_when_read_only,
            )),
        )
        .route("/healthz", axum::routing::get(observe::health::healthz))
        .route("/readyz", axum::routing::get(observe::health::readyz))
        .route("/metrics", axum::routing::get(observe::health::metrics_authorized))
        .fallback(dispatch)
        .layer(axum::middleware::from_fn(text::refuse_control_characters))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&registry), observe::http::track))
        .with_state(registry)
}

/// What `--metrics-listen` serves: `/metrics` without credentials, and the probes.
pub fn metrics_app(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(observe::health::metrics_open))
        .route("/healthz", axum::routing::get(observe::health::healthz))
        .route("/readyz", axum::routing::get(observe::health::readyz))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&registry), observe::http::track))
        .with_state(registry)
}

async fn dispatch(State(registry): State<Arc<Registry>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = idle::with_idle_timeout(body, registry.config.body_idle_timeout);
    let peer = parts.extensions.get::<listen::PeerAddr>().map(|p| p.0.ip());
    let principal = parts.extensions.get::<observe::http::PrincipalSlot>();
    let ctx = Ctx {
        registry: &registry,
        method: &parts.method,
        headers: &parts.headers,
        query: parts.uri.query(),
        peer,
        principal,
    };
    let (route, result) = match Endpoint::parse(parts.uri.path()) {
        Ok(endpoint) if !endpoint.allows(&parts.method) => {
            (observe::Route::of(&endpoint), Err(Error::new(ErrorKind::MethodNotAllowed)))
        }
        Ok(endpoint)
            if !matches!(parts.method, Method::GET | Method::HEAD) && registry.read_only.load(Ordering::Relaxed) =>
        {
            (observe::Route::of(&endpoint), Err(Error::new(ErrorKind::ReadOnly)))
        }
        Ok(endpoint) => (observe::Route::of(&endpoint), handle(ctx, endpoint, body).await),
        Err(e) => (observe::Route::Unknown, Err(e)),
    };
    let mut response = result.unwrap_or_else(|e| ApiError(e).into_response());
    response.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    response.extensions_mut().insert(route);
    response
}

/// What every handler gets besides its endpoint.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    registry: &'a Arc<Registry>,
    method: &'a Method,
    headers: &'a axum::http::HeaderMap,
    query: Option<&'a str>,
    /// The client's address (`None` when served without [`listen::serve`]).
    peer: Option<std::net::IpAddr>,
    /// Where the access log learns who the request was authorized as.
    principal: Option<&'a observe::http::PrincipalSlot>,
}

impl<'a> Ctx<'a> {
    async fn authorize(&self, access: Access<'_>) -> Result<Principal, Error> {
        self.authorize_also(access, &[]).await
    }

    /// [`Ctx::authorize`], a refusal's challenge naming `also` too ([`Authorizer::authorize_also`]).
    async fn authorize_also(&self, access: Access<'_>, also: &[Access<'_>]) -> Result<Principal, Error> {
        let credentials = Credentials { headers: self.headers, peer: self.peer };
        let result = self.registry.auth.authorize_also(credentials, access, also).await;
        observe::http::authorized(self.registry, self.principal, self.headers, &result);
        if let Err(e) = &result {
            self.registry.audit_refusal(self.headers, self.peer, access, e).await;
        }
        result
    }

    /// The first value of query parameter `key`.
    fn param(&self, key: &str) -> Option<String> {
        self.params(key).into_iter().next()
    }

    /// Every value of query parameter `key`, in order.
    fn params(&self, key: &str) -> Vec<String> {
        form_urlencoded::parse(self.query.unwrap_or("").as_bytes())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .collect()
    }

    /// One of the `max_uploads` permits, for a request carrying upload bytes (a
    /// monolithic `POST`, `PATCH`, the closing `PUT`), held until its handler is done (or
    /// dropped with the request); past them, 429. Taken once the request is authorized, so
    /// that callers still being authorized (a password hashing) hold none.
    fn upload_permit(&self) -> Result<tokio::sync::SemaphorePermit<'a>, Error> {
        self.registry
            .uploads
            .try_acquire()
            .map_err(|_| Error::new(ErrorKind::TooManyRequests).with_message("too many uploads in flight; retry later"))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn handle(ctx: Ctx<'_>, endpoint: Endpoint, body: Body) -> Result<Response, Error> {
    let m = ctx.method;
    match endpoint {
        Endpoint::Base => {
            ctx.authorize(Access::Base).await?;
            Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        Endpoint::Catalog => manifests::catalog(ctx).await,
        Endpoint::Tags(repo) => manifests::tags(ctx, &repo).await,
        Endpoint::Referrers(repo, digest) => manifests::referrers(ctx, &repo, &digest).await,
        Endpoint::Manifest(repo, reference) => match *m {
            Method::PUT => manifests::put(ctx, &repo, &reference, body).await,
            Method::DELETE => manifests::delete(ctx, &repo, &reference).await,
            _ => manifests::get(ctx, &repo, &reference).await,
        },
        Endpoint::InvalidReference(repo, reference, why) => {
            manifests::invalid_reference(ctx, &repo, &reference, why).await
        }
        Endpoint::Blob(repo, digest) => match *m {
            Method::DELETE => blobs::delete(ctx, &repo, &digest).await,
            _ => blobs::get(ctx, &repo, &digest).await,
        },
        Endpoint::UploadStart(repo) => uploads::start(ctx, &repo, body).await,
        Endpoint::Upload(repo, id) => {
            // Only ids this registry could have issued; anything else is unknown.
            let id = uuid::Uuid::try_parse(&id)
                .map_err(|_| Error::new(ErrorKind::BlobUploadUnknown))?
                .hyphenated()
                .to_string();
            match *m {
                Method::GET => uploads::status(ctx, &repo, &id).await,
                Method::PATCH => uploads::patch(ctx, &repo, &id, body).await,
                Method::PUT => uploads::finish(ctx, &repo, &id, body).await,
                _ => uploads::cancel(ctx, &repo, &id).await,
            }
        }
    }
}
