//! The audit log's store: an append-only table of who did what, from where, when, with
//! which outcome.
//!
//! Its own store beside [`MetadataStore`](crate::MetadataStore), in the same database,
//! one SQL implementation for both dialects and a shared suite. The store only appends
//! (in batches, one transaction each), queries and prunes; batching the hot path's
//! events is the server's writer task. An entry never holds a secret: callers put names,
//! never passwords, tokens or headers.

use async_trait::async_trait;
use berth_core::Error;

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;

/// One event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Who: a user's or robot's name; `None` for an anonymous caller.
    pub actor: Option<String>,
    /// The client's address (IP, without port).
    pub address: String,
    /// What, dotted: `manifest.push`, `manifest.pull`, `manifest.delete`, `login`,
    /// `token.issue`, `user.create`, `project.delete`, `member.set`, `robot.create`, …
    pub operation: String,
    /// The project concerned, if any.
    pub project: Option<String>,
    /// The object concerned: `team/app:1.0`, `team/app@sha256:…`, a user's name, …
    pub resource: Option<String>,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    /// A short free-form note (why it was denied, which scope was granted). Never a secret.
    pub detail: Option<String>,
    /// How many identical events this entry stands for: the writer records pulls queued
    /// together that differ only in time once, from the first one's time (1 otherwise).
    pub count: u32,
}

/// A recorded event and its place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Increasing in the order of recording; pages continue from it.
    pub id: i64,
    pub event: AuditEvent,
}

/// Which entries to read: every filter that is set must match. Newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub project: Option<String>,
    /// An exact operation (`manifest.push`) or a prefix ending in `.` (`robot.`).
    pub operation: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until_ms: Option<i64>,
    /// Entries older than this id (the last id of the previous page).
    pub before_id: Option<i64>,
    pub limit: u32,
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Records `events` in one transaction, in order. Fails with `BadRequest` when the
    /// database refuses a value an event carries (then nothing of the batch is stored,
    /// and sending the same batch again cannot succeed); any other error may pass.
    async fn append(&self, events: &[AuditEvent]) -> Result<(), Error>;
    /// Entries matching `query`, newest first, at most `query.limit`.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, Error>;
    /// Deletes up to `limit` entries recorded before `before_ms`, oldest first; returns
    /// how many it deleted.
    async fn prune(&self, before_ms: i64, limit: u32) -> Result<u64, Error>;
}
