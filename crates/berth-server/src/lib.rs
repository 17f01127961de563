//! Berth's HTTP edge: the OCI Distribution API (`/v2`), the management API
//! (`/api/v1`), `/token`'s HTTP side, listening (TLS, idle and body timeouts, trusted
//! proxies), metrics and access logs.
//!
//! Every request goes the same way: parse the path into an [`Endpoint`], check the
//! method, authorize the typed access through `berth_access`'s seam, run one registry
//! operation, render. Handlers never pick status codes (the error table in `berth-core`
//! does) and never parse paths.
//!
//! This crate names no concrete storage or database: it is handed trait objects.

use std::sync::Arc;

use axum::Router;

pub mod api;
mod blobs;
mod claims;
mod ctx;
pub mod endpoint;
mod idle;
pub mod listen;
mod manifests;
pub mod observe;
mod probes;
pub mod proxies;
pub mod range;
mod response;
pub mod seam;
pub mod state;
pub mod system;
pub mod text;
pub mod tls;
mod token_endpoint;
pub mod track;
mod uploads;
mod v2;

pub use endpoint::Endpoint;
pub use proxies::TrustedProxies;
pub use state::{Registry, RegistryConfig};

/// The whole HTTP application.
pub fn app(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/token", axum::routing::any(token_endpoint::token))
        .nest(
            "/api/v1",
            api::router().route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&registry),
                api::refuse_writes_when_read_only,
            )),
        )
        .route("/healthz", axum::routing::get(probes::healthz))
        .route("/readyz", axum::routing::get(probes::readyz))
        .route("/metrics", axum::routing::get(probes::metrics_authorized))
        .fallback(v2::dispatch)
        .layer(axum::middleware::from_fn(text::refuse_control_characters))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&registry), track::track))
        .with_state(registry)
}

/// What `--metrics-listen` serves: `/metrics` without credentials, and the probes.
pub fn metrics_app(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(probes::metrics_open))
        .route("/healthz", axum::routing::get(probes::healthz))
        .route("/readyz", axum::routing::get(probes::readyz))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&registry), track::track))
        .with_state(registry)
}
