//! The accept loop: Berth's own, on hyper, so that every connection is bounded in time
//! and in number. Not the application: it serves whatever `Router` it is given.
//!
//! What a connection may cost, and for how long:
//! - at most [`ServeLimits::max_connections`] are open at once; at the limit the loop stops
//!   accepting until one closes;
//! - a connection must deliver a complete request head within
//!   [`ServeLimits::header_timeout`] of being accepted, and (HTTP/1) of finishing its
//!   previous request, or it is closed; a head is at most [`HEAD_BUFFER`] bytes and
//!   [`MAX_HEADERS`] fields (HTTP/1), a header list at most [`H2_MAX_HEADER_LIST`] bytes
//!   (HTTP/2);
//! - HTTP/2 (prior knowledge, as clients use it over plain HTTP) carries at most
//!   [`H2_MAX_STREAMS`] concurrent streams per connection and pings its peer every
//!   [`H2_PING_INTERVAL`], closing the connection when a ping goes unanswered for
//!   [`H2_PING_TIMEOUT`], so a dead peer is noticed.
//!
//! With TLS (`tls.rs`) the handshake runs in the connection's task, never in the loop (a
//! slow client costs its socket only), within the same [`ServeLimits::header_timeout`];
//! HTTP/2 is then chosen by ALPN.
//!
//! On shutdown the loop stops accepting, open connections are told to close after their
//! current request, and those requests may finish for [`ServeLimits::shutdown_timeout`];
//! whatever still runs then is cut (an upload cut so is not acknowledged, and its client
//! resumes it from the size the registry reports).
//!
//! Request bodies are bounded in time by the application (`body_idle_timeout`, see
//! `idle.rs`), whatever serves it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::proxies::TrustedProxies;

/// Largest HTTP/1 request head (request line and headers), which is also the largest
/// read buffer of a connection: hyper answers a larger head with 431. Large enough that
/// an upload body is read in few system calls.
pub const HEAD_BUFFER: usize = 256 * 1024;
/// Most header fields in one HTTP/1 request.
pub const MAX_HEADERS: usize = 100;
/// Largest HTTP/2 header list (decoded), as a `SETTINGS_MAX_HEADER_LIST_SIZE`.
pub const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// Most concurrent HTTP/2 streams on one connection (nginx's default is 128).
pub const H2_MAX_STREAMS: u32 = 128;
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the loop pauses after an accept error that is not about one connection
/// (out of file descriptors or memory), instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bounds on connections, and what a connection is served with. The defaults are
/// `berth serve`'s.
#[derive(Clone)]
pub struct ServeLimits {
    /// Time allowed for a complete request head: from accept to the first request, and
    /// between requests of one HTTP/1 connection (so it is also the keep-alive idle
    /// timeout). 30 s: hyper's default, between zot's 5 s and nginx's 60 s.
    pub header_timeout: Duration,
    /// Connections open at once (nginx: 512 per worker; distribution and zot: no limit).
    pub max_connections: usize,
    /// After shutdown begins, requests in flight may finish for this long (30 s, as
    /// Kubernetes' default grace period).
    pub shutdown_timeout: Duration,
    /// Peers whose `X-Forwarded-For` names the client (none by default).
    pub trusted_proxies: TrustedProxies,
    /// TLS on every connection, or plain HTTP.
    pub tls: Option<TlsAcceptor>,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            header_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            shutdown_timeout: Duration::from_secs(30),
            trusted_proxies: TrustedProxies::default(),
            tls: None,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting and
/// waits for the requests in flight to finish (open connections are told to close when
/// their current request is done).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let builder = Arc::new(builder(&limits));
    // At the limit the loop stops accepting rather than accepting and closing: a client
    // waits in the kernel's backlog (or sees its own connect timeout) instead of a reset
    // it would take for a server fault, and the connections holding the slots are all
    // bounded in time (header timeout, body idle timeout), so a slot always comes free.
    // nginx and Go's netutil.LimitListener do the same.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let proxies = Arc::new(limits.trusted_proxies.clone());
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the connection semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let watcher = graceful.watcher();
        let builder = Arc::clone(&builder);
        let router = router.clone();
        let (header_timeout, tls) = (limits.header_timeout, limits.tls.clone());
        let proxies = Arc::clone(&proxies);
        tokio::spawn(async move {
            let started = Arc::new(AtomicBool::new(false));
            let service = Service { router, started: Arc::clone(&started), peer: PeerAddr(peer), proxies };
            let deadline = tokio::time::Instant::now() + header_timeout;
            match tls {
                None => connection(&builder, watcher, TokioIo::new(stream), service, deadline).await,
                Some(tls) => {
                    let Ok(Ok(stream)) = tokio::time::timeout_at(deadline, tls.accept(stream)).await else {
                        return drop(slot);
                    };
                    connection(&builder, watcher, TokioIo::new(stream), service, deadline).await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?limits.shutdown_timeout, "requests still running at the shutdown deadline were cut");
    }
    Ok(())
}

/// Serves one connection until it ends; one that has started no request by `deadline`
/// is closed.
async fn connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: TokioIo<IO>,
    service: Service,
    deadline: tokio::time::Instant,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::clone(&service.started);
    let conn = watcher.watch(builder.serve_connection(io, service));
    let mut conn = std::pin::pin!(conn);
    // hyper times the head of each HTTP/1 request, but not the bytes it reads to tell
    // HTTP/1 from HTTP/2, nor an HTTP/2 connection that opens no stream: a connection
    // that has started no request by then is closed here.
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = tokio::time::sleep_until(deadline) => {
            if started.load(Ordering::Relaxed) {
                let _ = conn.await;
            }
        }
    }
}

fn builder(limits: &ServeLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HEAD_BUFFER)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// Errors that concern one connection only (the peer went away before it was accepted).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// The router as a hyper service, noting that the connection has started a request.
#[derive(Clone)]
struct Service {
    router: Router,
    started: Arc<AtomicBool>,
    peer: PeerAddr,
    proxies: Arc<TrustedProxies>,
}

/// The client's address, in every request's extensions: the peer's, or the one a
/// trusted proxy forwarded (`proxies.rs`).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let peer = if self.proxies.is_empty() {
            self.peer
        } else {
            let client = self.proxies.client(self.peer.0.ip(), request.headers());
            PeerAddr(std::net::SocketAddr::new(client, self.peer.0.port()))
        };
        request.extensions_mut().insert(peer);
        if !self.started.load(Ordering::Relaxed) {
            self.started.store(true, Ordering::Relaxed);
        }
        // A `Router` is always ready: no `poll_ready` needed.
        tower_service::Service::call(&mut self.router.clone(), request)
    }
}
