//! Federation: proxy projects that cache other registries.
//!
//! An administrator binds an upstream registry to a project (`upstreams.rs`); the
//! project's repositories are then a cache of the upstream's: `hub/library/nginx:1.27`
//! is `library/nginx:1.27` at the upstream. A pull through the cache is served from what
//! is stored when it can be and fetched from the upstream when it must (`cache.rs`), and
//! what is fetched becomes ordinary content of the project: quota, retention, GC and
//! access rules apply to it as to anything pushed.
//!
//! Two ways in (`route.rs`): the prefix (`hub/…`), and the transparent mirror, where a
//! client that names no project (docker's `registry-mirrors`, containerd's `hosts.toml`
//! with `?ns=docker.io`) is routed to the proxy project of the upstream it means.
//!
//! Which upstreams exist is read from the federation store into a snapshot on every
//! change made through this node and every [`REFRESH`] otherwise, so routing a request
//! costs no query; another node's change is seen within that time.
//!
//! **Invariants:** what the cache stores it has verified (every manifest and blob digest
//! is checked against the bytes before anything records them); every digest and media
//! type is kept as the upstream served it; the upstream's credentials never widen what a
//! caller may do (the caller is authorized on the proxy repository first, as any pull);
//! a password is stored sealed (`seal.rs`) and never logged or returned.

mod cache;
mod challenge;
pub mod client;
mod fetch;
pub mod replication;
mod route;
pub mod seal;
mod service;
pub mod upstreams;
pub mod webhooks;

pub use cache::{BlobSource, Served};
pub use client::Timeouts;
pub use route::Via;
pub use seal::SealKey;
pub use service::{Federation, REFRESH};
pub use upstreams::{UpstreamSpec, UpstreamView};
pub use webhooks::{WebhookConfig, WebhookSpec, WebhookView, Webhooks};

/// The wait before attempt `attempts + 1` of something that failed `attempts` times:
/// `base` doubling with each failure up to `max`, then between half and all of that
/// (jitter, so that what failed together is not retried together).
pub(crate) fn backoff(base: std::time::Duration, max: std::time::Duration, attempts: u32) -> std::time::Duration {
    let full = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(max);
    let random = (uuid::Uuid::new_v4().as_u128() % 1001) as u32;
    full.mul_f64(0.5 + f64::from(random) / 2000.0)
}
