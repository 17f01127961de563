//! The load generator's HTTP side: keep-alive HTTP/1.1 connections on hyper's low-level
//! client, the registry protocol calls the workloads need, and fixed-time load at N
//! connections with latency percentiles. Requests to Berth carry credentials (a
//! [`Target`]'s `Authorization`); distribution runs without auth and gets none.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn empty() -> Body {
    Empty::new().boxed()
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A server under load: its address, and the `Authorization` header every request sends
/// unless the request names its own.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub authorization: Option<Arc<str>>,
}

impl Target {
    /// The same server, asked without credentials.
    pub fn anonymous(&self) -> Target {
        Target { addr: self.addr, authorization: None }
    }
}

/// One keep-alive connection.
pub struct Conn {
    sender: SendRequest<Body>,
    authorization: Option<Arc<str>>,
}

impl Conn {
    pub async fn open(target: &Target) -> Result<Conn, BoxError> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        // Reads of up to 4 MiB: with hyper's default (about 400 KiB) the client, not the
        // server, bounds a 1 GiB pull.
        let (sender, conn) = http1::Builder::new().max_buf_size(4 << 20).handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn { sender, authorization: target.authorization.clone() })
    }

    /// Sends a request; returns the status, headers and the number of body bytes (the
    /// body is read and dropped, never buffered whole).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Reply, BoxError> {
        self.exchange(method, path, headers, body, true).await
    }

    /// The load loop's variant of `send`: no copy of the response headers or body.
    pub async fn send_lean(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, u64), BoxError> {
        let r = self.exchange(method, path, headers, empty(), false).await?;
        Ok((r.status, r.len))
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
        keep: bool,
    ) -> Result<Reply, BoxError> {
        let mut req = Request::builder().method(method).uri(path).header("host", "bench");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(auth) = &self.authorization
            && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            req = req.header("authorization", &**auth);
        }
        self.sender.ready().await?;
        let resp: Response<hyper::body::Incoming> = self.sender.send_request(req.body(body)?).await?;
        let status = resp.status();
        let headers = if keep { resp.headers().clone() } else { hyper::HeaderMap::new() };
        let mut body = resp.into_body();
        let mut len = 0u64;
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                len += data.len() as u64;
                if keep && kept.len() < 64 * 1024 {
                    kept.extend_from_slice(&data[..data.len().min(64 * 1024 - kept.len())]);
                }
            }
        }
        Ok(Reply { status, headers, len, head: kept })
    }

    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
        want: StatusCode,
    ) -> Result<Reply, BoxError> {
        let reply = self.send(method.clone(), path, headers, body).await?;
        if reply.status != want {
            return Err(format!(
                "{method} {path}: {} (wanted {want}): {}",
                reply.status,
                String::from_utf8_lossy(&reply.head)
            )
            .into());
        }
        Ok(reply)
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub len: u64,
    /// The first 64 KiB of the body.
    pub head: Vec<u8>,
}

impl Reply {
    pub fn location(&self) -> Result<String, BoxError> {
        Ok(self.headers.get("location").ok_or("no Location")?.to_str()?.to_owned())
    }
}

/// Turns an absolute or relative Location into a path with the query appended.
pub fn with_query(location: &str, query: &str) -> String {
    let path = match location.find("://") {
        Some(i) => location[i + 3..].find('/').map(|j| &location[i + 3 + j..]).unwrap_or("/"),
        None => location,
    };
    if path.contains('?') { format!("{path}&{query}") } else { format!("{path}?{query}") }
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// POST + PUT with the whole body.
pub async fn push_monolithic(c: &mut Conn, repo: &str, data: Bytes, digest: &str) -> Result<(), BoxError> {
    let r = c.expect(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], empty(), StatusCode::ACCEPTED).await?;
    let put = with_query(&r.location()?, &format!("digest={digest}"));
    let len = data.len().to_string();
    c.expect(
        Method::PUT,
        &put,
        &[("content-type", "application/octet-stream"), ("content-length", &len)],
        full(data),
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

/// POST, PATCH per chunk with Content-Range, closing PUT. Returns how long the closing PUT
/// took (where a server that syncs on commit pays for it).
pub async fn push_chunked(
    c: &mut Conn,
    repo: &str,
    data: Bytes,
    digest: &str,
    chunk: usize,
) -> Result<Duration, BoxError> {
    let r = c.expect(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], empty(), StatusCode::ACCEPTED).await?;
    let mut location = r.location()?;
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let range = format!("{offset}-{}", end - 1);
        let len = (end - offset).to_string();
        let path = with_query(&location, "");
        let path = path.trim_end_matches('?').trim_end_matches('&');
        let r = c
            .expect(
                Method::PATCH,
                path,
                &[("content-type", "application/octet-stream"), ("content-range", &range), ("content-length", &len)],
                full(data.slice(offset..end)),
                StatusCode::ACCEPTED,
            )
            .await?;
        location = r.location()?;
        offset = end;
    }
    let t = Instant::now();
    c.expect(
        Method::PUT,
        &with_query(&location, &format!("digest={digest}")),
        &[("content-length", "0")],
        empty(),
        StatusCode::CREATED,
    )
    .await?;
    Ok(t.elapsed())
}

/// What a fixed-time load measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub requests: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Load {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
}

pub type Headers = Vec<(&'static str, String)>;

/// What a connection does once before a load starts (untimed): the headers it returns are
/// added to each of its requests.
pub type Setup = Arc<
    dyn for<'c> Fn(&'c mut Conn) -> Pin<Box<dyn Future<Output = Result<Headers, BoxError>> + Send + 'c>> + Send + Sync,
>;

/// Sends requests made by `make(i)` on `conns` connections for `duration`.
pub async fn load(
    target: &Target,
    conns: usize,
    duration: Duration,
    make: Arc<dyn Fn(u64) -> (Method, String, Headers) + Send + Sync>,
    want: StatusCode,
) -> Result<Load, BoxError> {
    load_with(target, conns, duration, make, want, None).await
}

/// [`load`], each connection first running `setup` (before the clock starts).
pub async fn load_with(
    target: &Target,
    conns: usize,
    duration: Duration,
    make: Arc<dyn Fn(u64) -> (Method, String, Headers) + Send + Sync>,
    want: StatusCode,
    setup: Option<Setup>,
) -> Result<Load, BoxError> {
    let mut ready = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut conn = Conn::open(target).await?;
        let extra = match &setup {
            Some(setup) => setup(&mut conn).await?,
            None => Vec::new(),
        };
        ready.push((conn, extra));
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (n, (mut conn, extra)) in ready.into_iter().enumerate() {
        let make = Arc::clone(&make);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut bytes = 0u64;
            let mut i = n as u64;
            while Instant::now() < deadline {
                let (method, path, headers) = make(i);
                let headers: Vec<(&str, &str)> = headers.iter().chain(&extra).map(|(k, v)| (*k, v.as_str())).collect();
                let t = Instant::now();
                let (status, len) = conn.send_lean(method, &path, &headers).await?;
                if status != want {
                    return Err::<_, BoxError>(format!("{path}: {status}").into());
                }
                lat.push(t.elapsed().as_micros() as u32);
                bytes += len;
                i += conns as u64;
            }
            Ok((lat, bytes))
        }));
    }
    let mut all = Vec::new();
    let mut bytes = 0;
    for t in tasks {
        let (lat, b) = t.await??;
        all.extend(lat);
        bytes += b;
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0) as f64
            / 1000.0
    };
    Ok(Load { requests: all.len() as u64, bytes, seconds, p50_ms: pct(0.50), p99_ms: pct(0.99) })
}
