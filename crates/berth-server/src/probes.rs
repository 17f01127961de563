//! `/healthz` (the process serves), `/readyz` (its stores answer and the schema is this
//! build's) and `/metrics` (the Prometheus text exposition).
//!
//! The probes need no credentials and reveal nothing internal: `/readyz` names the check
//! that failed, the cause goes to the log. `/metrics` on the main listener is for system
//! administrators (it names projects); on its own listen address (`--metrics-listen`,
//! meant for a private interface) it is open, as Harbor's and distribution's are.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{Error, ErrorKind};

use crate::listen;
use crate::response::ApiError;
use crate::state::Registry;
use berth_access::Access;

/// How long `/readyz` waits for each store (a database that is down may otherwise hold a
/// connection attempt for the pool's acquire timeout).
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Response {
    json(StatusCode::OK, serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(registry): State<Arc<Registry>>) -> Response {
    let database = async {
        match &registry.ops {
            Some(ops) => ops.check_ready().await,
            None => Ok(()),
        }
    };
    let blobs = async { registry.blobs.probe().await.map_err(|e| Error::internal(format!("blob store: {e}"))) };
    let (database, blobs) = tokio::join!(within(database), within(blobs));
    let checks = [("database", database), ("blob_store", blobs)];
    let mut body = serde_json::Map::new();
    for (name, result) in &checks {
        let verdict = match result {
            Ok(()) => "ok",
            Err(Failure::Timeout) => "timeout",
            Err(Failure::Error(_)) => "failed",
        };
        body.insert((*name).to_owned(), verdict.into());
        if let Err(failure) = result {
            let cause = match failure {
                Failure::Timeout => format!("no answer within {READY_TIMEOUT:?}"),
                Failure::Error(e) => e.source.clone().unwrap_or_else(|| e.message().to_owned()),
            };
            tracing::warn!(check = name, cause = %cause, "not ready");
        }
    }
    if checks.iter().all(|(_, r)| r.is_ok()) {
        json(StatusCode::OK, serde_json::json!({ "status": "ready", "checks": body }))
    } else {
        let status = StatusCode::from_u16(ErrorKind::Unavailable.wire().1).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        json(status, serde_json::json!({ "status": "unavailable", "checks": body }))
    }
}

enum Failure {
    Timeout,
    Error(Error),
}

async fn within(check: impl Future<Output = Result<(), Error>>) -> Result<(), Failure> {
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(_) => Err(Failure::Timeout),
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `/metrics` on the main listener: a system administrator's (the series name projects).
pub async fn metrics_authorized(State(registry): State<Arc<Registry>>, request: axum::extract::Request) -> Response {
    if !registry.metrics.enabled() {
        return ApiError(Error::new(ErrorKind::NotFound)).into_response();
    }
    let peer = request.extensions().get::<listen::PeerAddr>().map(|p| p.0.ip());
    let credentials = crate::seam::credentials(request.headers(), peer);
    if let Err(e) = registry.auth.authorize(credentials, Access::System).await {
        registry.metrics.auth_failure(crate::track::credentials_kind(request.headers()), e.code());
        return ApiError(e).into_response();
    }
    exposition(&registry)
}

/// `/metrics` on `--metrics-listen`: open to whoever reaches that address.
pub async fn metrics_open(State(registry): State<Arc<Registry>>) -> Response {
    if !registry.metrics.enabled() {
        return ApiError(Error::new(ErrorKind::NotFound)).into_response();
    }
    exposition(&registry)
}

fn exposition(registry: &Registry) -> Response {
    let pools = registry.ops.as_ref().map(|ops| ops.pool_usage()).unwrap_or_default();
    let text = registry.metrics.render(registry.uploads_in_progress(), registry.jobs.audit.queued(), &pools);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
