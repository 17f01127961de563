//! The distribution API over HTTP: every endpoint, status, header and error the spec
//! defines, against the real server on a loopback socket.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::support::{Creds, TestServer, client_as};

mod manifests;
mod stores;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A client of the distribution API at `base`. It sends the admin's credentials on every
/// request unless made with [`Api::anonymous`] or [`Api::as_user`].
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: String) -> Api {
        Api::as_user(base, Some(&crate::support::admin()))
    }

    /// A client that sends no credentials.
    pub fn anonymous(base: String) -> Api {
        Api::as_user(base, None)
    }

    /// A client that sends `creds` (Basic) on every request, or none.
    pub fn as_user(base: String, creds: Option<&Creds>) -> Api {
        Api { client: client_as(creds).build().unwrap(), base }
    }

    /// A client that sends `Authorization: Bearer TOKEN` on every request.
    pub fn with_token(base: String, token: &str) -> Api {
        Api { client: crate::support::client_authorized(Some(format!("Bearer {token}"))).build().unwrap(), base }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        self.client.request(method, url)
    }

    pub async fn send(&self, method: Method, path: &str) -> Response {
        self.req(method, path).send().await.unwrap()
    }

    /// Starts an upload session; returns its Location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        location(&r)
    }

    /// POST + PUT: pushes a blob monolithically; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let loc = self.start_upload(repo).await;
        let r = self
            .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        digest
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a config and one layer and an image manifest of `media_type` tagged `tag`.
    pub async fn push_image(&self, repo: &str, tag: &str, media_type: &str, seed: u64) -> (String, Vec<u8>) {
        let config = self.push_blob(repo, format!("{{\"seed\":{seed}}}").as_bytes()).await;
        let layer_bytes = random_bytes(1000, seed);
        let layer = self.push_blob(repo, &layer_bytes).await;
        let body = image_manifest(media_type, (&config, 12 + seed.to_string().len()), &[(&layer, 1000)], None);
        let r = self.put_manifest(repo, tag, media_type, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        (sha256(&body), body)
    }
}

pub fn location(r: &Response) -> String {
    r.headers().get("location").expect("Location header").to_str().unwrap().to_owned()
}

pub fn header(r: &Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') { format!("{url}&{query}") } else { format!("{url}?{query}") }
}

pub fn image_manifest(
    media_type: &str,
    config: (&str, usize),
    layers: &[(&str, usize)],
    subject: Option<(&str, usize)>,
) -> Vec<u8> {
    let (config_type, layer_type) = if media_type == DOCKER_MANIFEST {
        ("application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip")
    } else {
        ("application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip")
    };
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": { "mediaType": config_type, "digest": config.0, "size": config.1 },
        "layers": layers.iter().map(|(d, s)| json!({ "mediaType": layer_type, "digest": d, "size": s })).collect::<Vec<_>>(),
    });
    if let Some((d, s)) = subject {
        m["subject"] = json!({ "mediaType": OCI_MANIFEST, "digest": d, "size": s });
    }
    serde_json::to_vec(&m).unwrap()
}

fn index(media_type: &str, children: &[(&str, usize)]) -> Vec<u8> {
    let child_type = if media_type == DOCKER_LIST { DOCKER_MANIFEST } else { OCI_MANIFEST };
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": children.iter().enumerate().map(|(i, (d, s))| json!({
            "mediaType": child_type, "digest": d, "size": s,
            "platform": { "architecture": if i == 0 { "amd64" } else { "arm64" }, "os": "linux" },
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Asserts an error response: status, JSON content type, and the spec's body shape.
pub async fn assert_error(r: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status, "status for expected {code}");
    assert_eq!(header(&r, "content-type").as_deref(), Some("application/json"));
    let body: Value = r.json().await.expect("error body is JSON");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    body
}

fn setup() -> (TestServer, Api) {
    let server = TestServer::start();
    let api = Api::new(server.url());
    (server, api)
}

#[tokio::test]
async fn base_endpoint_reports_the_api_version() {
    let (_s, api) = setup();
    let r = api.send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-distribution-api-version").as_deref(), Some("registry/2.0"));
    let r = api.send(Method::GET, "/v2").await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn monolithic_post_then_put_makes_a_pullable_blob() {
    let (_s, api) = setup();
    let bytes = random_bytes(3 * 1024 * 1024 + 17, 1);
    let loc = api.start_upload("mono/one").await;
    let digest = sha256(&bytes);
    let r =
        api.req(Method::PUT, &with_query(&loc, &format!("digest={digest}"))).body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/mono/one/blobs/{digest}"));
    assert_eq!(header(&r, "docker-content-digest").unwrap(), digest);

    for method in [Method::HEAD, Method::GET] {
        let r = api.send(method.clone(), &format!("/v2/mono/one/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{method}");
        assert_eq!(header(&r, "content-type").as_deref(), Some("application/octet-stream"), "{method}");
        assert_eq!(header(&r, "content-length").unwrap(), bytes.len().to_string(), "{method}");
        assert_eq!(header(&r, "docker-content-digest").unwrap(), digest, "{method}");
        let body = r.bytes().await.unwrap();
        let expected: &[u8] = if method == Method::HEAD { &[] } else { &bytes };
        assert!(body.as_ref() == expected, "{method}: {} bytes of body", body.len());
    }
}

#[tokio::test]
async fn single_post_with_digest_creates_the_blob_at_once() {
    let (_s, api) = setup();
    let bytes = random_bytes(5000, 2);
    let digest = sha256(&bytes);
    let r = api
        .req(Method::POST, &format!("/v2/single/blobs/uploads/?digest={digest}"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/single/blobs/{digest}"));
    let r = api.send(Method::GET, &format!("/v2/single/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);

    // The same, with a wrong digest: refused, and nothing is visible.
    let wrong = sha256(b"something else");
    let r =
        api.req(Method::POST, &format!("/v2/single/blobs/uploads/?digest={wrong}")).body(bytes).send().await.unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = api.send(Method::HEAD, &format!("/v2/single/blobs/{wrong}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn chunked_upload_reports_progress_and_completes() {
    let (_s, api) = setup();
    let bytes = random_bytes(30, 3);
    let digest = sha256(&bytes);
    let loc = api.start_upload("chunked").await;
    let id = loc.rsplit('/').next().unwrap().to_owned();

    let r = api.send(Method::GET, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range").unwrap(), "0-0");

    let r =
        api.req(Method::PATCH, &loc).header("content-range", "0-9").body(bytes[..10].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range").unwrap(), "0-9");
    assert_eq!(header(&r, "docker-upload-uuid").unwrap(), id);
    let loc = location(&r);

    let r = api.send(Method::GET, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range").unwrap(), "0-9");
    assert_eq!(location(&r), loc);

    // A chunk without Content-Range (docker's streaming PATCH) appends.
    let r = api.req(Method::PATCH, &loc).body(bytes[10..20].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range").unwrap(), "0-19");

    // The final chunk rides on the closing PUT.
    let r = api
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("content-range", "20-29")
        .body(bytes[20..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = api.send(Method::GET, &format!("/v2/chunked/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
    // The session is over.
    assert_error(api.send(Method::GET, &loc).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn out_of_order_or_overlapping_chunks_are_416_and_change_nothing() {
    let (_s, api) = setup();
    let bytes = random_bytes(20, 4);
    let loc = api.start_upload("order").await;
    let r =
        api.req(Method::PATCH, &loc).header("content-range", "5-9").body(bytes[5..10].to_vec()).send().await.unwrap();
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
    let r =
        api.req(Method::PATCH, &loc).header("content-range", "0-9").body(bytes[..10].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Overlaps what is there.
    let r =
        api.req(Method::PATCH, &loc).header("content-range", "5-14").body(bytes[5..15].to_vec()).send().await.unwrap();
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
    // A final chunk out of order on PUT, too.
    let r = api
        .req(Method::PUT, &with_query(&loc, &format!("digest={}", sha256(&bytes))))
        .header("content-range", "12-19")
        .body(bytes[12..].to_vec())
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
    // Content-Range and Content-Length disagree.
    let r = api
        .req(Method::PATCH, &loc)
        .header("content-range", "10-14")
        .body(bytes[10..20].to_vec())
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "SIZE_INVALID").await;
    let r = api.send(Method::GET, &loc).await;
    assert_eq!(header(&r, "range").unwrap(), "0-9");
    let r = api
        .req(Method::PUT, &with_query(&loc, &format!("digest={}", sha256(&bytes))))
        .header("content-range", "10-19")
        .body(bytes[10..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // The refused chunks left no trace in the blob.
    let r = api.send(Method::GET, &format!("/v2/order/blobs/{}", sha256(&bytes))).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
}

#[tokio::test]
async fn malformed_and_unsupported_digests_are_400() {
    let (_s, api) = setup();
    let loc = api.start_upload("digests").await;
    for (digest, code) in [
        ("sha256:abc", "DIGEST_INVALID"),
        ("nonsense", "DIGEST_INVALID"),
        (&format!("sha512:{}", "a".repeat(128)) as &str, "DIGEST_INVALID"),
    ] {
        let r = api
            .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
            .body(b"x".to_vec())
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, code).await;
    }
    let r = api.req(Method::PUT, &loc).body(b"x".to_vec()).send().await.unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = api.send(Method::GET, &format!("/v2/digests/blobs/sha512:{}", "a".repeat(128))).await;
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = api.send(Method::POST, "/v2/digests/blobs/uploads/?digest-algorithm=sha512").await;
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn unknown_upload_sessions_are_404() {
    let (_s, api) = setup();
    for id in ["0b9e6e7e-4b8e-4bd5-9a7a-b3c3c7cf0a0e", "not-a-uuid", "..%2F..%2Fetc"] {
        let path = format!("/v2/ghost/blobs/uploads/{id}");
        assert_error(api.send(Method::GET, &path).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        let r = api.req(Method::PATCH, &path).body(b"x".to_vec()).send().await.unwrap();
        assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        let r =
            api.req(Method::PUT, &format!("{path}?digest={}", sha256(b"x"))).body(b"x".to_vec()).send().await.unwrap();
        assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        assert_error(api.send(Method::DELETE, &path).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    }
    // A session belongs to its repository.
    let loc = api.start_upload("owner").await;
    let other = loc.replace("/v2/owner/", "/v2/intruder/");
    assert_error(api.send(Method::GET, &other).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn blob_ranges_are_served_and_unsatisfiable_ones_are_416() {
    let (_s, api) = setup();
    let bytes = random_bytes(1000, 5);
    let digest = api.push_blob("ranges", &bytes).await;
    let path = format!("/v2/ranges/blobs/{digest}");
    for (range, expect, content_range) in [
        ("bytes=0-99", &bytes[..100], "bytes 0-99/1000"),
        ("bytes=900-", &bytes[900..], "bytes 900-999/1000"),
        ("bytes=-10", &bytes[990..], "bytes 990-999/1000"),
        ("bytes=500-5000", &bytes[500..], "bytes 500-999/1000"),
    ] {
        let r = api.req(Method::GET, &path).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(header(&r, "content-range").unwrap(), content_range);
        assert_eq!(r.bytes().await.unwrap().as_ref(), expect, "{range}");
    }
    let r = api.req(Method::GET, &path).header("range", "bytes=1000-1100").send().await.unwrap();
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UNKNOWN").await;
    let r = api.req(Method::GET, &path).header("range", "bytes=5000-").send().await.unwrap();
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn unknown_blobs_are_404_with_error_json() {
    let (_s, api) = setup();
    let digest = sha256(b"never pushed");
    assert_error(
        api.send(Method::GET, &format!("/v2/nothing/blobs/{digest}")).await,
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(api.send(Method::HEAD, &format!("/v2/nothing/blobs/{digest}")).await.status(), StatusCode::NOT_FOUND);
    assert_error(
        api.send(Method::DELETE, &format!("/v2/nothing/blobs/{digest}")).await,
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn blobs_are_readable_only_where_pushed_or_mounted() {
    let (_s, api) = setup();
    let bytes = random_bytes(4096, 6);
    let digest = api.push_blob("src/repo", &bytes).await;
    assert_eq!(api.send(Method::HEAD, &format!("/v2/dst/repo/blobs/{digest}")).await.status(), StatusCode::NOT_FOUND);

    let r = api.send(Method::POST, &format!("/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/dst/repo/blobs/{digest}"));
    assert_eq!(header(&r, "docker-content-digest").unwrap(), digest);
    let r = api.send(Method::GET, &format!("/v2/dst/repo/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);

    // From a repository that lacks it: a normal upload session instead.
    let r = api.send(Method::POST, &format!("/v2/third/blobs/uploads/?mount={digest}&from=empty/repo")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(location(&r).starts_with("/v2/third/blobs/uploads/"));
    // A blob nobody has: the same.
    let r = api.send(Method::POST, &format!("/v2/third/blobs/uploads/?mount={}&from=src/repo", sha256(b"nope"))).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(location(&r).starts_with("/v2/third/blobs/uploads/"));
    // Without `from`, a blob the caller can read anywhere mounts, and reads back whole.
    let r = api.send(Method::POST, &format!("/v2/third/blobs/uploads/?mount={digest}")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/third/blobs/{digest}"));
    assert_eq!(header(&r, "docker-content-digest").unwrap(), digest);
    let r = api.send(Method::GET, &format!("/v2/third/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), digest);
    let got = r.bytes().await.unwrap();
    assert_eq!(sha256(&got), digest);
    assert_eq!(got.as_ref(), &bytes[..]);

    // Deleting unlinks from one repository only.
    assert_eq!(api.send(Method::DELETE, &format!("/v2/src/repo/blobs/{digest}")).await.status(), StatusCode::ACCEPTED);
    assert_eq!(api.send(Method::HEAD, &format!("/v2/src/repo/blobs/{digest}")).await.status(), StatusCode::NOT_FOUND);
    let r = api.send(Method::GET, &format!("/v2/dst/repo/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths_get_error_json() {
    let (_s, api) = setup();
    assert_error(api.send(Method::POST, "/v2/a/tags/list").await, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    assert_error(
        api.send(Method::PATCH, "/v2/a/manifests/latest").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
    )
    .await;
    assert_error(api.send(Method::GET, "/v2/a/something/else").await, StatusCode::NOT_FOUND, "UNSUPPORTED").await;
    assert_error(api.send(Method::GET, "/nope").await, StatusCode::NOT_FOUND, "UNSUPPORTED").await;
}

/// Sends one raw HTTP/1.1 request; returns status and body.
pub fn raw_request(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = crate::support::admin().header_line();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn truncated_chunk_is_not_acknowledged_and_the_upload_resumes() {
    use std::io::Write;
    let (s, api) = setup();
    let bytes = random_bytes(2000, 7);
    let loc = api.start_upload("trunc").await;
    // Promise 2000 bytes, send 700, hang up.
    {
        let mut sock = std::net::TcpStream::connect(s.addr).unwrap();
        let auth = crate::support::admin().header_line();
        write!(sock, "PATCH {loc} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2000\r\nContent-Range: 0-1999\r\n\r\n")
            .unwrap();
        sock.write_all(&bytes[..700]).unwrap();
        sock.shutdown(std::net::Shutdown::Both).unwrap();
    }
    // The server notices the short body; nothing of it counts.
    let mut range = String::new();
    for _ in 0..100 {
        let r = api.send(Method::GET, &loc).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        range = header(&r, "range").unwrap();
        let r = api
            .req(Method::PATCH, &loc)
            .header("content-range", "0-999")
            .body(bytes[..1000].to_vec())
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::ACCEPTED {
            break;
        }
        // Still busy with the broken request: try again shortly.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(range, "0-0");
    let r = api
        .req(Method::PUT, &with_query(&loc, &format!("digest={}", sha256(&bytes))))
        .header("content-range", "1000-1999")
        .body(bytes[1000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = api.send(Method::GET, &format!("/v2/trunc/blobs/{}", sha256(&bytes))).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
}

#[tokio::test]
async fn uploads_survive_a_restart_and_resume() {
    let s = TestServer::start();
    let api = Api::new(s.url());
    let bytes = random_bytes(100_000, 8);
    let loc = api.start_upload("resume").await;
    let r = api
        .req(Method::PATCH, &loc)
        .header("content-range", "0-59999")
        .body(bytes[..60_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let s = s.restart();
    let api = Api::new(s.url());
    let r = api.send(Method::GET, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range").unwrap(), "0-59999");
    // The running hash was lost with the process; the server recomputes it.
    let r = api
        .req(Method::PUT, &with_query(&loc, &format!("digest={}", sha256(&bytes))))
        .header("content-range", "60000-99999")
        .body(bytes[60_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = api.send(Method::GET, &format!("/v2/resume/blobs/{}", sha256(&bytes))).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
}
