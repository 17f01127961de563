//! The integrity scrub: reads every recorded blob through the blob store, hashes it, and
//! records those whose bytes are missing, shorter than recorded, or do not hash to their
//! digest (`berth_meta::ScrubStore`). A damaged blob is then not live to the registry:
//! a `GET`/`HEAD` of it answers 404 `BLOB_UNKNOWN` (so a client pushing an image that
//! needs it uploads it again rather than trusting bad bytes) and a manifest naming it is
//! refused with `MANIFEST_BLOB_UNKNOWN`. Its bad bytes are then removed from the blob
//! store (record first, bytes second), so that a push of the right bytes stores them
//! afresh and repairs it (`link_blob` takes their key); a later run that finds its bytes
//! sound (restored by hand) makes it live again too. The damage is confirmed (read again),
//! recorded and removed holding the digest's `BlobLocks` stripe, as a commit stores and
//! links under it: a push of the same content either came first (bytes it stored are
//! read again and kept; a filesystem commit that found the bad file in place kept that
//! file, which then goes as damaged, and the next push repairs the blob) or comes after
//! the removal and repairs the blob. No commit stores bytes that the removal then takes.
//!
//! Shaped like every background job: `run_once` does one run (the API and tests call
//! it), `run` repeats it on a schedule. One run at a time across nodes: the `scrub`
//! lease, renewed after each page of blobs; on one node, a flag.
//!
//! A read error other than "not found" is reported (`unreadable`) but does not mark the
//! blob damaged: on S3 it may pass. Nothing here panics on what it reads, and a damaged
//! file costs only its own check.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_core::{DigestHasher, Error, ErrorKind};
use berth_meta::{Finding, ScrubRun, StoredBlob};
use berth_storage::{BlobStore, StorageError};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::Jobs;

/// The lease one scrub run holds.
const LEASE: &str = "scrub";
/// How long the lease lasts unless renewed (it is, after every page).
const LEASE_TTL: i64 = 300;
/// Blobs read from the store per query.
const PAGE: u32 = 100;
/// How often a run's counters are stored while it goes (what `berth scrub` shows).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Starts a run if none runs (on this node or, by the lease, another), and returns it
/// as started; the run goes on in a task of its own. `None` if one runs already. The
/// start happens on that task too: a caller that goes away midway (a client that hangs
/// up) leaves neither this node's flag nor a lease without a run.
pub async fn start(registry: &Arc<Jobs>) -> Result<Option<ScrubRun>, Error> {
    let registry = Arc::clone(registry);
    let (started_tx, started) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Some(_running) = Running::take(&registry) else {
            let _ = started_tx.send(Ok(None));
            return;
        };
        match begin(&registry).await {
            Ok(Some(run)) => {
                let _ = started_tx.send(Ok(Some(run.clone())));
                scrub(&registry, run).await;
            }
            other => {
                let _ = started_tx.send(other);
            }
        }
    });
    started.await.map_err(|_| Error::internal("the scrub run's task ended before it started"))?
}

/// One whole run, here; `None` if one runs already.
pub async fn run_once(registry: &Arc<Jobs>) -> Result<Option<ScrubRun>, Error> {
    let Some(_running) = Running::take(registry) else { return Ok(None) };
    match begin(registry).await {
        Ok(Some(run)) => Ok(Some(scrub(registry, run).await)),
        other => other,
    }
}

/// This node's "a run is going" flag, taken; cleared when dropped, however its holder ends.
struct Running<'a>(&'a Jobs);

impl<'a> Running<'a> {
    fn take(registry: &'a Jobs) -> Option<Running<'a>> {
        (!registry.scrubbing.swap(true, Ordering::SeqCst)).then_some(Running(registry))
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.scrubbing.store(false, Ordering::SeqCst);
    }
}

/// Runs every `interval` (zero: never) until `shutdown` is cancelled.
pub async fn run_every(registry: Arc<Jobs>, interval: Duration, shutdown: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    loop {
        if !crate::pause(interval, &shutdown).await {
            return;
        }
        match run_once(&registry).await {
            Ok(Some(run)) => tracing::info!(id = run.id, checked = run.checked, damaged = run.damaged, "scrub"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "scrub run could not start"),
        }
    }
}

async fn begin(registry: &Jobs) -> Result<Option<ScrubRun>, Error> {
    if !registry.meta.try_lease(LEASE, &registry.node_id, LEASE_TTL).await? {
        return Ok(None);
    }
    registry.scrub.start_run(&registry.node_id).await.map(Some)
}

/// Checks every blob, recording what it finds; returns the run as stored at its end.
async fn scrub(registry: &Jobs, mut run: ScrubRun) -> ScrubRun {
    let outcome = check_all(registry, &mut run).await;
    run.finished_at = Some(berth_meta::now());
    match outcome {
        Ok(()) => run.state = "finished".into(),
        Err(e) => {
            tracing::warn!(error = %e, id = run.id, "scrub run failed");
            run.state = "failed".into();
            run.error =
                Some(if e.kind == ErrorKind::Internal { "internal error (logged)".into() } else { e.message().into() });
        }
    }
    if let Err(e) = registry.scrub.update_run(&run).await {
        tracing::warn!(error = %e, id = run.id, "storing the end of a scrub run");
    }
    run
}

async fn check_all(registry: &Jobs, run: &mut ScrubRun) -> Result<(), Error> {
    let mut last: Option<String> = None;
    let mut reported = Instant::now();
    loop {
        let page = registry.scrub.blobs_after(last.as_deref(), PAGE).await?;
        for blob in &page {
            let mut reason = check(&*registry.blobs, blob).await;
            run.checked += 1;
            // Damage is confirmed, recorded and removed under the digest's stripe, which a
            // commit holds from storing its bytes to linking them: bytes a push stored
            // since the first read are read again here and kept, and a push that comes
            // after finds the damage recorded and repairs it. (Damage is rare: a second
            // read costs little.)
            let _stripe = if reason.as_deref().is_some_and(berth_meta::scrub::is_damage) {
                let stripe = registry.blob_locks.lock(&blob.digest).await;
                reason = check(&*registry.blobs, blob).await;
                Some(stripe)
            } else {
                None
            };
            match reason {
                Some(reason) => {
                    let damage = berth_meta::scrub::is_damage(&reason);
                    tracing::warn!(digest = %blob.digest, %reason, "scrub finding");
                    let finding = Finding { digest: blob.digest.to_string(), reason };
                    registry.scrub.record_finding(run.id, &finding).await?;
                    if damage {
                        run.damaged += 1;
                        registry.meta.uncache_blob(&blob.digest);
                        if let Err(e) = registry.blobs.delete_blob(&blob.key).await {
                            tracing::warn!(digest = %blob.digest, error = %e, "removing a damaged blob's bytes");
                        }
                    }
                }
                None => {
                    run.bytes += blob.size;
                    if blob.damaged {
                        registry.scrub.clear_damage(&blob.digest).await?;
                        registry.meta.uncache_blob(&blob.digest);
                    }
                }
            }
            if reported.elapsed() >= PROGRESS_EVERY {
                registry.scrub.update_run(run).await?;
                reported = Instant::now();
            }
        }
        match page.last() {
            Some(blob) if page.len() == PAGE as usize => last = Some(blob.digest.to_string()),
            _ => return Ok(()),
        }
        if !registry.meta.try_lease(LEASE, &registry.node_id, LEASE_TTL).await? {
            return Err(Error::new(ErrorKind::Conflict).with_message("the scrub lease was lost to another node"));
        }
    }
}

/// What is wrong with a blob's stored bytes, or `None` if they hash to its digest.
async fn check(blobs: &dyn BlobStore, blob: &StoredBlob) -> Option<String> {
    let mut stream = match blobs.read_blob(&blob.key, None).await {
        Ok(stream) => stream,
        Err(StorageError::NotFound) => return Some("missing".into()),
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    let mut hasher = DigestHasher::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => hasher.update(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some("missing".into()),
            Err(e) => return Some(format!("unreadable: {e}")),
        }
    }
    let read = hasher.len();
    if read < blob.size {
        return Some(format!("truncated: {read} of {} bytes", blob.size));
    }
    let actual = hasher.finish();
    if read > blob.size || actual != blob.digest {
        return Some(format!("mismatch: {read} bytes hashing to {actual}, recorded {} bytes", blob.size));
    }
    None
}
