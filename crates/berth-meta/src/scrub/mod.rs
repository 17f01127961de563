//! The scrub store: the integrity scrub's runs, what each found, and which blobs are
//! damaged now.
//!
//! A store of its own beside [`MetadataStore`](crate::MetadataStore), in the same
//! database. A damaged blob (a row in `blob_damage`) is not live to the registry: the
//! registry's lookups (`repo_blob`, `blob`, `repos_with_blob`) and a manifest put's check
//! of the blobs it names skip it, so it is neither served nor accepted in a manifest
//! until a later run finds its bytes sound again. The scrub itself is the server's
//! (`berth-server/src/scrub.rs`).

use async_trait::async_trait;
use berth_core::{Digest, Error};

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;

/// One scrub run, as it goes and once done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrubRun {
    pub id: i64,
    /// The node that ran it.
    pub node: String,
    /// Unix seconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// `running`, `finished`, or `failed` (`error` says why; a run its node did not
    /// finish is `failed` once the next one starts).
    pub state: String,
    /// Blobs recorded when it started.
    pub blobs_total: u64,
    /// Blobs read so far, and their bytes.
    pub checked: u64,
    pub bytes: u64,
    /// Blobs found damaged (missing, truncated, or not matching their digest).
    pub damaged: u64,
    pub error: Option<String>,
}

/// A blob as the scrub reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    /// Where the blob store keeps it.
    pub key: String,
    /// Found damaged by an earlier run.
    pub damaged: bool,
}

/// What a run found about one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub digest: String,
    /// `missing`, `truncated: …`, `mismatch: …`, or `unreadable: …` (a read error: reported,
    /// but the blob is not marked damaged, since the error may pass).
    pub reason: String,
}

#[async_trait]
pub trait ScrubStore: Send + Sync + 'static {
    /// Records a new run by `node` (with the number of blobs to check); runs still
    /// `running` become `failed` (interrupted): the caller holds the scrub lease.
    async fn start_run(&self, node: &str) -> Result<ScrubRun, Error>;

    /// Live blobs after digest `last`, sorted by digest, at most `limit`.
    async fn blobs_after(&self, last: Option<&str>, limit: u32) -> Result<Vec<StoredBlob>, Error>;

    /// Records a finding of run `run`; a damaged one (not `unreadable`) also marks the blob
    /// damaged.
    async fn record_finding(&self, run: i64, finding: &Finding) -> Result<(), Error>;

    /// The blob's bytes are sound again: no longer damaged.
    async fn clear_damage(&self, digest: &Digest) -> Result<(), Error>;

    /// Stores a run's counters, state, end and error.
    async fn update_run(&self, run: &ScrubRun) -> Result<(), Error>;

    /// Runs, newest first, at most `limit`.
    async fn runs(&self, limit: u32) -> Result<Vec<ScrubRun>, Error>;

    async fn run(&self, id: i64) -> Result<Option<ScrubRun>, Error>;

    /// What run `id` found with digests after `after`, sorted by digest, at most `limit`.
    async fn findings(&self, id: i64, after: Option<&str>, limit: u32) -> Result<Vec<Finding>, Error>;
}

/// Whether a finding's reason marks the blob damaged (every reason but `unreadable`).
pub fn is_damage(reason: &str) -> bool {
    !reason.starts_with("unreadable")
}
