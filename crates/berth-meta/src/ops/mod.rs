//! What an operator watches in the database: readiness (the database answers and its
//! schema is this build's), the connection pools' use, and the bytes stored per project;
//! and the registry-wide settings an administrator changes at run time (read-only mode).
//!
//! Its own store beside [`MetadataStore`](crate::MetadataStore), read-only, one SQL
//! implementation for both dialects (`sql.rs`) and a shared suite (`suite.rs`). Nothing
//! here is on a request's path: `/readyz`, a scrape of `/metrics`, the management API and
//! periodic jobs call it.

use async_trait::async_trait;
use berth_core::Error;

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;

/// One connection pool's state right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    /// `writer` or `reader` (PostgreSQL has one pool, `shared`).
    pub pool: &'static str,
    /// Connections open, idle ones included.
    pub size: u32,
    /// Connections open and not in use.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

#[async_trait]
pub trait OpsStore: Send + Sync + 'static {
    /// `Ok` when the database answers a query and every migration this build knows is
    /// applied (a newer node may have applied more); the error says which failed.
    async fn check_ready(&self) -> Result<(), Error>;

    /// The pools, without touching the database.
    fn pool_usage(&self) -> Vec<PoolUsage>;

    /// Bytes of blobs each project's repositories may read, a blob counted once per
    /// project however many of its repositories link it. A repository belongs to the
    /// project named by its first component, one-component names to `library`. One scan
    /// of `repo_blobs`: for a periodic gauge, not for a request.
    async fn storage_by_project(&self) -> Result<Vec<(String, u64)>, Error>;

    /// A registry-wide setting, shared by every node; `None` if never set.
    async fn setting(&self, name: &str) -> Result<Option<String>, Error>;

    /// Sets (or replaces) a registry-wide setting.
    async fn set_setting(&self, name: &str, value: &str) -> Result<(), Error>;
}
