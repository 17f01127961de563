//! The garbage collector's store: review queues, the decisions on queued candidates, the
//! removal of their metadata, and the record of every run.
//!
//! Its own store beside [`MetadataStore`](crate::MetadataStore), in the same database, one
//! SQL implementation for both dialects (`sql.rs`) and a shared suite (`suite.rs`). The
//! queues are filled by the registry's own writes, in their transactions (`sql_store!`
//! calls `gc::sql`'s `queue_*`); this store only reads and empties them. It never touches
//! blob bytes: the runner (`berth-server`'s `lifecycle/gc.rs`) removes them, between
//! [`GcStore::doom_blobs`] and [`GcStore::forget_blobs`] ("metadata before bytes").
//!
//! # What is garbage
//!
//! A candidate is due when it was queued at or before the run's cutoff (`before`: the
//! run's start minus the grace period). Both are Unix milliseconds ([`review_now`]), so
//! that a grace of 0 makes a candidate due as soon as it is queued. Then:
//! - a blob is garbage when no manifest in any repository references it
//!   (`manifest_refs.kind = 'blob'`); its repository links go with it;
//! - a manifest is garbage when it is untagged, no index in its repository references it
//!   (`kind = 'manifest'`), and then: a referrer (a manifest with a `subject`) when its
//!   subject is not in the repository, tagged or not, whatever the setting (a signature or
//!   an SBOM lives as long as its subject, and the subject's removal queues it); any other
//!   when untagged manifests go (the setting).
//!
//! # Concurrency
//!
//! Decisions are re-checked in the transaction that removes, under the row's lock on
//! PostgreSQL (`FOR UPDATE`), which `put_manifest` takes in share mode on every blob and
//! child manifest it names: one of the two waits for the other and sees its outcome, so a
//! put either keeps what it needs or fails with `MANIFEST_BLOB_UNKNOWN`. SQLite's one
//! writer serializes them anyway.

use async_trait::async_trait;
use berth_core::{Digest, Error, ErrorKind, RepoName};

use crate::BlobInfo;

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;

/// A blob that is (or would be) removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageBlob {
    pub digest: Digest,
    /// Where the blob store keeps it.
    pub key: String,
    pub size: u64,
}

/// A manifest that is (or would be) removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageManifest {
    pub repo: RepoName,
    pub digest: Digest,
    /// Bytes of the manifest itself.
    pub size: u64,
}

/// What kind of run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcKind {
    /// Reviews the queued candidates only: work proportional to what changed.
    Incremental,
    /// Also queues everything unreferenced and removes blob-store bytes with no record.
    Full,
}

impl GcKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GcKind::Incremental => "incremental",
            GcKind::Full => "full",
        }
    }

    fn parse(s: &str) -> GcKind {
        if s == "full" { GcKind::Full } else { GcKind::Incremental }
    }
}

/// One run's result, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcRun {
    /// Increasing; 0 before it is recorded.
    pub id: i64,
    pub kind: GcKind,
    pub dry_run: bool,
    /// Unix milliseconds.
    pub started_ms: i64,
    pub duration_ms: i64,
    /// Queued candidates that were due.
    pub candidates: u64,
    pub manifests_removed: u64,
    pub blobs_removed: u64,
    /// Bytes of the removed blobs.
    pub bytes_freed: u64,
    /// Blob-store objects without a record removed by a full run.
    pub orphans_removed: u64,
    pub orphan_bytes: u64,
    /// Why the run ended early, if it did.
    pub error: Option<String>,
}

/// The review queues' clock, Unix milliseconds: when a candidate is queued, and what a
/// run's cutoff is read from.
pub fn review_now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The error a link gets for bytes that garbage collection is removing right now.
pub fn being_collected(digest: &Digest) -> Error {
    Error::new(ErrorKind::BlobUnknown)
        .with_message(format!("{digest} is being removed by garbage collection; upload it again"))
}

#[async_trait]
pub trait GcStore: Send + Sync + 'static {
    /// How many queued candidates (blobs and manifests) were queued at or before `before`
    /// (Unix milliseconds, as every `before` here: see [`review_now`]).
    async fn due_count(&self, before: i64) -> Result<u64, Error>;

    /// Up to `limit` queued blobs, queued by `before`, that no manifest references
    /// now, sorted by digest. Reads only.
    async fn garbage_blobs(&self, before: i64, limit: u32) -> Result<Vec<GarbageBlob>, Error>;

    /// Up to `limit` queued manifests, queued by `before`, that are garbage now
    /// (untagged, unreferenced, and a referrer whose subject is gone or, with
    /// `delete_untagged`, any other), sorted by
    /// repository and digest. Reads only.
    async fn garbage_manifests(
        &self,
        before: i64,
        delete_untagged: bool,
        limit: u32,
    ) -> Result<Vec<GarbageManifest>, Error>;

    /// Deletes a manifest if, re-checked in this transaction under its lock, it is still
    /// queued and garbage; queues what it referenced and its referrers. `true` if deleted.
    async fn remove_manifest(&self, repo: &RepoName, digest: &Digest, delete_untagged: bool) -> Result<bool, Error>;

    /// Marks each blob `deleting` if, re-checked in a transaction of its own under its
    /// lock, it is still queued by `before` and unreferenced; drops its repository
    /// links and its queue entry. Returns each one's record, or `None` where it stays: the
    /// caller removes the bytes, then calls [`GcStore::forget_blobs`]. Durable once, for
    /// the batch, when it returns.
    async fn doom_blobs(&self, digests: &[Digest], before: i64) -> Result<Vec<Option<BlobInfo>>, Error>;

    /// Blobs marked `deleting` (this run's, or left by a run that crashed), up to `limit`.
    async fn doomed_blobs(&self, limit: u32) -> Result<Vec<GarbageBlob>, Error>;

    /// Deletes the record of each blob marked `deleting` under its `key`, whose bytes are
    /// gone; with `tombstone`, keeps it (an hour) as a record that those bytes are gone, so
    /// that a link that read this key just before they went (a cross-repository mount)
    /// cannot make them live again: `link_blob` refuses a `deleting` blob's own key.
    /// Returns, for each, whether its record was the one forgotten.
    async fn forget_blobs(&self, blobs: &[GarbageBlob], tombstone: bool) -> Result<Vec<bool>, Error>;

    /// Drops the queue entries queued by `before` (reviewed: kept or removed), of
    /// blobs and of manifests as asked.
    async fn clear_reviewed(&self, before: i64, blobs: bool, manifests: bool) -> Result<(), Error>;

    /// The consistency check: queues every blob no manifest references and every manifest
    /// that is garbage now (already queued ones keep their time). Returns how many.
    async fn queue_unreferenced(&self, delete_untagged: bool) -> Result<u64, Error>;

    /// `(digest, storage key)` of recorded blobs, live or `deleting`, after digest `after`,
    /// sorted by digest.
    async fn blob_keys(&self, after: Option<&str>, limit: u32) -> Result<Vec<(String, String)>, Error>;

    /// Whether a blob with this digest is recorded, live or `deleting`.
    async fn blob_recorded(&self, digest: &Digest) -> Result<bool, Error>;

    /// Records a finished run; returns its id.
    async fn record_run(&self, run: &GcRun) -> Result<i64, Error>;

    /// Recorded runs with ids below `before_id`, newest first, at most `limit`.
    async fn runs(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<GcRun>, Error>;
}
