//! Rendering: registry errors as the spec's JSON body, and the headers every response
//! carries. Errors are logged here, once, at the edge.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{Error, ErrorKind};

/// A registry error on its way to the client.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        } else {
            tracing::debug!(error = %e, "request refused");
        }
        let mut entry = serde_json::json!({ "code": e.code(), "message": e.message() });
        // Internal errors say nothing internal.
        if let (Some(detail), false) = (&e.detail, e.kind == ErrorKind::Internal) {
            entry["detail"] = detail.clone();
        }
        let body = serde_json::json!({ "errors": [entry] }).to_string();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // A 429 always says when to come back; a 503 when its cause knows.
        let retry_after = match (e.kind, e.retry_after) {
            (ErrorKind::TooManyRequests | ErrorKind::Unavailable, Some(secs)) => Some(HeaderValue::from(secs.max(1))),
            (ErrorKind::TooManyRequests, None) => Some(HeaderValue::from_static(RETRY_AFTER_SECS)),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, retry_after);
        }
        // A challenge is built from validated names and the configured realm; one that
        // is not a valid header value is a bug, and then the 401 goes without it.
        if let Some(challenge) = e.challenge.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// `Retry-After` on a 429 that names no time of its own: a slot frees when a request in flight ends, which takes
/// seconds for a busy upload.
const RETRY_AFTER_SECS: &str = "5";

/// `Location`-style header values are built from validated names and digests only.
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("validated names and digests are valid header values")
}

pub fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}
