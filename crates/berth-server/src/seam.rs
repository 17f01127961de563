//! The edge's side of the authorization seam: what a request presents to
//! `berth_access`, read from its headers.

use std::net::IpAddr;

use axum::http::{HeaderMap, header};
use berth_access::authorizer::Presented;
use berth_access::refusal::refusal_event;
use berth_access::{Access, Credentials};
use berth_core::Error;

use crate::state::Registry;

/// The credentials `headers` present, from `peer`.
pub fn credentials(headers: &HeaderMap, peer: Option<IpAddr>) -> Credentials<'_> {
    Credentials {
        authorization: headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
        host: headers.get(header::HOST).and_then(|h| h.to_str().ok()),
        peer,
    }
}

/// Records `error`, the authorizer's refusal of `access` to `credentials`, in the audit
/// log if it belongs there (`berth_access::refusal`).
pub(crate) async fn audit_refusal(
    registry: &Registry,
    credentials: &Credentials<'_>,
    access: Access<'_>,
    error: &Error,
) {
    if let Some(event) = refusal_event(registry.tokens.as_deref(), credentials, access, error).await {
        registry.jobs.audit.record(event).await;
    }
}

/// What `headers` present in `Authorization`.
pub(crate) fn presented(headers: &HeaderMap) -> Presented {
    Presented::parse(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
}
