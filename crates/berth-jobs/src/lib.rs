//! Berth's background work: the jobs that keep storage and logs in shape while the
//! registry serves, and what they share with the write path.
//!
//! Every job has one shape: `run_once` does one pass (tests and the management API call
//! it), `run` repeats it every interval until a `CancellationToken` is cancelled
//! ([`pause`] between passes; a pass in progress is never cut), and a job that must run
//! on one node at a time takes a lease in the metadata store first: the janitor and the
//! audit pruner one per pass, recorded by [`leased_pass`]; GC, retention and the scrub
//! one renewed while a run lasts. A run's result is kept where an operator reads it:
//! GC's and the scrub's runs in their stores, retention's in the audit log.
//!
//! The jobs: garbage collection ([`gc`]), tag retention ([`retention`]) and the pull
//! times it reads ([`pulls`]), the integrity scrub ([`scrub`]), upload expiry
//! ([`janitor`]), and the audit log's writer ([`audit`]) and pruner ([`prune`]).
//! [`locks::BlobLocks`] is what GC and the scrub share with uploads on the same node.
//!
//! Inside the crate the state the jobs share comes first: the leaf modules (`audit`'s
//! writer, `pulls`, `locks`) and [`Jobs`] here, which holds them; the jobs that work on a
//! `Jobs` come after and never the other way round.
//!
//! No HTTP type is named here. What the jobs work on is one [`Jobs`], built by the
//! binary's wiring from the stores it opened; the HTTP edge holds it too, to record
//! audit events and pulls, take blob locks and start runs on demand.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use berth_core::Error;
use berth_meta::{MetadataStore, RetentionStore, ScrubStore};
use berth_storage::BlobStore;
use tokio_util::sync::CancellationToken;

pub mod audit;
pub mod commit;
pub mod gc;
pub mod janitor;
pub mod locks;
pub mod prune;
pub mod pulls;
pub mod retention;
pub mod scrub;

/// The jobs' stores, settings and this node's job state.
pub struct Jobs {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetadataStore>,
    /// The integrity scrub's runs and findings (`scrub.rs`).
    pub scrub: Arc<dyn ScrubStore>,
    /// Where events are recorded (`audit.rs`).
    pub audit: audit::AuditLog,
    /// This process's name in leases.
    pub node_id: String,
    /// An upload with no activity for this long is abandoned and its bytes removed.
    pub upload_ttl: Duration,
    /// Held by an upload's commit-and-link and by GC's removal of the same digest.
    pub blob_locks: locks::BlobLocks,
    /// The garbage collector, when configured ([`Jobs::with_gc`]).
    pub gc: Option<Gc>,
    /// Pull times and retention policies, when configured ([`Jobs::with_retention`]).
    pub retention: Option<Arc<dyn RetentionStore>>,
    /// When manifests and tags were last pulled, held until the next flush.
    pub pulls: pulls::PullRecorder,
    /// A scrub run goes on on this node (`scrub.rs`).
    pub(crate) scrubbing: AtomicBool,
    /// Where passes are counted and timed.
    pub recorder: Arc<dyn JobRecorder>,
}

impl Jobs {
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        meta: Arc<dyn MetadataStore>,
        scrub: Arc<dyn ScrubStore>,
        audit: audit::AuditLog,
        recorder: Arc<dyn JobRecorder>,
        upload_ttl: Duration,
    ) -> Jobs {
        Jobs {
            blobs,
            meta,
            scrub,
            audit,
            node_id: uuid::Uuid::new_v4().to_string(),
            upload_ttl,
            blob_locks: locks::BlobLocks::default(),
            gc: None,
            retention: None,
            pulls: pulls::PullRecorder::default(),
            scrubbing: AtomicBool::new(false),
            recorder,
        }
    }

    /// Collects garbage with `gc` (scheduled by [`gc::Collector`], on demand through the
    /// management API).
    pub fn with_gc(mut self, gc: Gc) -> Jobs {
        self.gc = Some(gc);
        self
    }

    /// Keeps pull times and retention policies in `store`.
    pub fn with_retention(mut self, store: Arc<dyn RetentionStore>) -> Jobs {
        self.retention = Some(store);
        self
    }

    /// The retention store (every node built by `berth::open` has one).
    pub fn retention_store(&self) -> Result<&Arc<dyn RetentionStore>, Error> {
        self.retention.as_ref().ok_or_else(|| Error::internal("this registry has no retention store"))
    }
}

/// The collector's settings.
#[derive(Clone, Debug)]
pub struct GcConfig {
    /// A candidate is reviewed once queued this long (and an orphan removed once this old).
    pub grace: Duration,
    /// Between scheduled runs (incremental).
    pub interval: Duration,
    /// Between scheduled full runs.
    pub full_interval: Duration,
    /// Untagged, unreferenced manifests are removed (default: kept).
    pub delete_untagged: bool,
}

impl Default for GcConfig {
    fn default() -> GcConfig {
        GcConfig {
            grace: Duration::from_secs(3600),
            interval: Duration::from_secs(3600),
            full_interval: Duration::from_secs(7 * 24 * 3600),
            delete_untagged: false,
        }
    }
}

/// The collector's part of the registry: its store, settings, and this node's run lock.
pub struct Gc {
    pub store: Arc<dyn berth_meta::GcStore>,
    pub config: GcConfig,
    running: tokio::sync::Mutex<()>,
}

impl Gc {
    pub fn new(store: Arc<dyn berth_meta::GcStore>, config: GcConfig) -> Gc {
        Gc { store, config, running: tokio::sync::Mutex::new(()) }
    }
}

/// How a background job's pass ended, for [`JobRecorder::job_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// It ran and finished.
    Ok,
    /// It ran and failed.
    Failed,
    /// Another node holds the job's lease: nothing ran here.
    Skipped,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Ok => "ok",
            JobOutcome::Failed => "failed",
            JobOutcome::Skipped => "skipped",
        }
    }
}

/// Where jobs report their passes (the edge's metrics implement it).
pub trait JobRecorder: Send + Sync {
    /// One pass of background job `job` (a name of a few fixed words: `janitor`,
    /// `audit-prune`, `gc`, …) and how long it took.
    fn job_run(&self, job: &'static str, outcome: JobOutcome, elapsed: Duration);
}

/// Records nothing (a node with metrics off still needs a recorder).
pub struct NoRecorder;

impl JobRecorder for NoRecorder {
    fn job_run(&self, _job: &'static str, _outcome: JobOutcome, _elapsed: Duration) {}
}

/// Waits `interval` between two passes: `false` if `shutdown` is cancelled first (the
/// job returns then; cancellation is cooperative, a pass in progress is not cut).
pub async fn pause(interval: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(interval) => true,
    }
}

/// One pass of a job that runs on the node holding its lease: `pass` runs if `lease`
/// says this node holds it (`None` if not), and the run is recorded.
pub async fn leased_pass<T>(
    recorder: &dyn JobRecorder,
    job: &'static str,
    lease: Result<bool, Error>,
    pass: impl Future<Output = Result<T, Error>>,
) -> Result<Option<T>, Error> {
    let started = Instant::now();
    let (result, outcome) = match lease {
        Ok(true) => {
            let result = pass.await;
            let outcome = if result.is_ok() { JobOutcome::Ok } else { JobOutcome::Failed };
            (result.map(Some), outcome)
        }
        Ok(false) => (Ok(None), JobOutcome::Skipped),
        Err(e) => (Err(e), JobOutcome::Failed),
    };
    recorder.job_run(job, outcome, started.elapsed());
    result
}
