//! The federation store: the upstream registries proxy projects cache, and when each
//! cached tag was last checked against its upstream.
//!
//! A store of its own beside [`MetadataStore`](crate::MetadataStore), in the same
//! database; `berth-federation` is its one user. Cached manifests and blobs are ordinary
//! content, in the registry's own tables: only what is about the upstream lives here. An
//! upstream's password arrives sealed (`berth-federation`'s `seal.rs`): the store keeps
//! bytes it cannot read.

use async_trait::async_trait;
use berth_core::Error;

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;

/// A registry whose content a proxy project caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `[a-z0-9]` and inner `-` (checked by the caller).
    pub name: String,
    /// The registry's base URL (`https://registry-1.docker.io`).
    pub url: String,
    /// The proxy project: `PROJECT/REPO` pulls `REPO` from this upstream. One upstream per
    /// project and one project per upstream.
    pub project: String,
    pub username: Option<String>,
    /// The password, sealed.
    pub sealed_password: Option<Vec<u8>>,
    /// PEM certificates the upstream's TLS certificate may chain to, besides the system's.
    pub ca_pem: Option<String>,
    /// How long a cached tag is served before it is checked with the upstream again.
    pub tag_ttl_secs: i64,
    /// The registry host names (`docker.io`) a mirror request's `ns` names it by.
    pub hosts: Vec<String>,
    /// One-component names are Docker Hub's official images: `nginx` is `library/nginx`.
    pub short_names: bool,
    /// Mirror requests without `ns` go here (at most one upstream is).
    pub is_default: bool,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

#[async_trait]
pub trait FederationStore: Send + Sync + 'static {
    /// Every upstream, sorted by name (a registry has a handful).
    async fn upstreams(&self) -> Result<Vec<Upstream>, Error>;

    /// Creates an upstream (`create`; `CONFLICT` if the name is taken) or replaces one
    /// (`NOT_FOUND` if there is none), keeping its `created_at`. `CONFLICT` when another
    /// upstream has the project, `NOT_FOUND` when the project does not exist. A default
    /// upstream takes the role from the one that had it, in the same transaction.
    async fn put_upstream(&self, upstream: &Upstream, create: bool) -> Result<Upstream, Error>;

    /// Removes an upstream; `false` if there was none. The project and what it cached stay.
    async fn delete_upstream(&self, name: &str) -> Result<bool, Error>;

    /// When the cached tag `repo:tag` was last found current at its upstream (Unix
    /// seconds), if ever.
    async fn tag_checked(&self, repo: &str, tag: &str) -> Result<Option<i64>, Error>;

    /// Records that `repo:tag` was found current at `at`.
    async fn check_tag(&self, repo: &str, tag: &str, at: i64) -> Result<(), Error>;
}
