//! The layer every request passes first: it names the request (`X-Request-Id`), opens the
//! span its errors are logged in, and when the response body ends (or is dropped: a
//! client gone) writes the access-log line and records the request's metrics.
//!
//! The access log has one line per request at info (target `berth::access`; probes and
//! scrapes at debug): method, path (never the query, which may carry a token request's
//! parameters), status, bytes received and sent, duration, client address, principal once
//! authorized, request id. No header is logged, so no `Authorization` either.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tracing::Instrument;

use crate::listen;
use crate::observe::Route;
use crate::seam::presented;
use crate::state::Registry;
use berth_access::authorizer::Presented;

/// The response header (and accepted request header) naming a request.
pub const REQUEST_ID: &str = "x-request-id";
/// The longest incoming `X-Request-Id` taken as it is; a longer or stranger one is
/// replaced by a generated id.
const MAX_INCOMING_ID: usize = 64;

/// Who a request was authorized as, set by the authorization seam once it passes and
/// read when the access-log line is written.
#[derive(Clone, Default)]
pub(crate) struct PrincipalSlot(Arc<OnceLock<String>>);

impl PrincipalSlot {
    pub(crate) fn set(&self, name: Option<&str>) {
        let _ = self.0.set(name.unwrap_or("anonymous").to_owned());
    }
}

/// `-` separated: this process's random prefix and a counter. Unique across nodes with
/// overwhelming likelihood, and cheap (no randomness per request).
fn generated_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
    format!("{prefix}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// An incoming id is kept if it is short and made of safe characters (it goes into a
/// response header and log lines); else the request gets a generated one.
fn request_id(request: &Request) -> String {
    match request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        Some(id) if is_sane(id) => id.to_owned(),
        _ => generated_id(),
    }
}

fn is_sane(id: &str) -> bool {
    (1..=MAX_INCOMING_ID).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// What a request is before it is dispatched, from its path's first segment; `/v2`
/// requests are named by `dispatch` (the typed endpoint), in the response's extensions.
fn route_of(path: &str) -> Route {
    match path {
        "/token" => Route::Token,
        "/metrics" => Route::Metrics,
        "/healthz" | "/readyz" => Route::Health,
        p if p.starts_with("/api/") => Route::Api,
        _ => Route::Unknown,
    }
}

/// After an authorization: who passed goes to the access log, a refusal to the metrics.
pub(crate) fn authorized(
    registry: &Registry,
    slot: Option<&PrincipalSlot>,
    headers: &axum::http::HeaderMap,
    result: &Result<berth_access::Principal, berth_core::Error>,
) {
    match result {
        Ok(principal) => {
            if let Some(slot) = slot {
                slot.set(principal.name());
            }
        }
        Err(e) => registry.metrics.auth_failure(credentials_kind(headers), e.code()),
    }
}

/// What a refused request presented, as a metric label.
pub(crate) fn credentials_kind(headers: &axum::http::HeaderMap) -> &'static str {
    match presented(headers) {
        Presented::Nothing => "none",
        Presented::Basic(..) => "basic",
        Presented::Bearer(_) => "bearer",
        Presented::Unreadable => "unreadable",
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn track(State(registry): State<Arc<Registry>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&request);
    let route = route_of(request.uri().path());
    let method = request.method().clone();
    // The path is copied only when the line will be written.
    let path = access_log_enabled(route).then(|| request.uri().path().to_owned());
    let peer = request.extensions().get::<listen::PeerAddr>().map(|p| p.0.ip());
    let principal = PrincipalSlot::default();
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(principal.clone());
    let received = matches!(method, Method::POST | Method::PUT | Method::PATCH).then(|| Arc::new(AtomicU64::new(0)));
    let body = match &received {
        Some(count) => Body::new(Metered { inner: body, bytes: 0, sink: Some(Sink::Received(Arc::clone(count))) }),
        None => body,
    };
    let span = tracing::info_span!("request", id = %id);
    let response = next.run(Request::from_parts(parts, body)).instrument(span).await;
    let (mut parts, body) = response.into_parts();
    let route = parts.extensions.get::<Route>().copied().unwrap_or(route);
    if let Ok(value) = HeaderValue::from_str(&id) {
        parts.headers.insert(REQUEST_ID, value);
    }
    let done = Finished {
        registry,
        route,
        method,
        status: parts.status.as_u16(),
        started,
        id,
        path,
        peer,
        principal,
        received,
    };
    Response::from_parts(parts, Body::new(Metered { inner: body, bytes: 0, sink: Some(Sink::Sent(done)) }))
}

fn access_log_enabled(route: Route) -> bool {
    if route.is_probe() {
        tracing::enabled!(target: "berth::access", tracing::Level::DEBUG)
    } else {
        tracing::enabled!(target: "berth::access", tracing::Level::INFO)
    }
}

/// A body that counts the bytes it delivers and, when dropped, hands the count on: a
/// request body to the request's counter, a response body to [`Finished::finish`].
struct Metered {
    inner: Body,
    bytes: u64,
    sink: Option<Sink>,
}

enum Sink {
    Received(Arc<AtomicU64>),
    Sent(Finished),
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        match self.sink.take() {
            Some(Sink::Received(count)) => count.store(self.bytes, Ordering::Relaxed),
            Some(Sink::Sent(done)) => done.finish(self.bytes),
            None => {}
        }
    }
}

/// What is known of a request when its response starts; finished when its body ends.
struct Finished {
    registry: Arc<Registry>,
    route: Route,
    method: Method,
    status: u16,
    started: Instant,
    id: String,
    path: Option<String>,
    peer: Option<std::net::IpAddr>,
    principal: PrincipalSlot,
    received: Option<Arc<AtomicU64>>,
}

impl Finished {
    fn finish(self, sent: u64) {
        let elapsed = self.started.elapsed();
        let received = self.received.as_ref().map_or(0, |c| c.load(Ordering::Relaxed));
        self.registry.metrics.request(self.route, &self.method, self.status, elapsed, (received, sent));
        let Some(path) = &self.path else { return };
        macro_rules! access {
            ($level:expr) => {
                tracing::event!(
                    target: "berth::access",
                    $level,
                    request_id = %self.id,
                    method = %self.method,
                    path = %path,
                    status = self.status,
                    bytes_received = received,
                    bytes_sent = sent,
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    client = self.peer.map(tracing::field::display),
                    principal = self.principal.0.get().map(String::as_str),
                    "request"
                )
            };
        }
        if self.route.is_probe() {
            access!(tracing::Level::DEBUG);
        } else {
            access!(tracing::Level::INFO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_safe_incoming_request_ids_are_kept() {
        assert!(is_sane("abc-123_X.y:z"));
        assert!(is_sane(&"a".repeat(64)));
        assert!(!is_sane(""));
        assert!(!is_sane(&"a".repeat(65)));
        assert!(!is_sane("a b"));
        assert!(!is_sane("a\"b"));
        assert!(!is_sane("é"));
    }

    #[test]
    fn generated_request_ids_differ() {
        let (a, b) = (generated_id(), generated_id());
        assert_ne!(a, b);
        assert!(is_sane(&a) && is_sane(&b));
    }
}
