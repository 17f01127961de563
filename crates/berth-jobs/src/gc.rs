//! The garbage collector's runner: one run at a time across nodes (the `gc` lease, renewed
//! while it runs, plus a per-node mutex), on a schedule ([`Collector::run`]) and on demand
//! ([`collect`], behind `POST /api/v1/gc`), optionally a dry run.
//!
//! A run decides first and acts second. It reads, from the review queues, the candidates
//! due (queued before its start minus the grace period) that are garbage now; a dry run
//! stops there and reports them. A real run then removes each one, re-checked in its own
//! transaction ([`GcStore`]); what a removal makes unreferenced is queued afresh and
//! reviewed by a later run, so a dry run lists exactly what the real run that follows
//! removes (when nothing else changes in between). Blobs go metadata first, bytes second:
//! marked `deleting` with their links dropped, bytes removed, record deleted; a crash in
//! between leaves a `deleting` record that the next run finishes (the first thing a run
//! does). A full run also queues everything unreferenced (the consistency check) and
//! removes blob-store objects no record names, older than the grace period.
//!
//! # Why a run never removes what is in use
//!
//! **Garbage collection never removes what is in use.** A blob is removed only when no
//! manifest in any repository references it, a manifest only when it is untagged, no
//! index references it, and then a referrer (a manifest with a `subject`) only when its
//! subject is gone (it lives as long as its subject, whatever `--gc-delete-untagged`
//! says) and any other only when untagged manifests go (`--gc-delete-untagged`); each
//! once its grace period (`--gc-grace`) has passed since it was queued (`queued_at +
//! grace <= now`, review times in milliseconds: a grace of 0 is due at once; a run reads
//! nothing before its start's millisecond has passed, so what is queued while it runs is
//! the next run's and never cleared unreviewed; an entry in seconds, from a node of an
//! older version during a rolling upgrade, is read as seconds: `due_by!`). A run
//! decides first (reads), then removes each candidate in its own transaction that
//! re-checks the decision under the row's lock (PostgreSQL: `FOR UPDATE` on the blob or
//! manifest row; `put_manifest` takes `FOR SHARE` on every blob and manifest it names,
//! itself included, each blob's row before its repository link: the order `doom_blobs`
//! takes them in, so the two never deadlock; the GC suite races them). So a concurrent put that names a blob being collected either commits
//! first (GC then sees the reference and keeps the blob) or waits and finds the blob
//! `deleting`, and fails with `MANIFEST_BLOB_UNKNOWN`; a re-upload that refreshed the
//! blob's queue entry makes GC's re-check fail. SQLite's one writer serializes the same
//! transactions. Metadata before bytes: a blob is marked `deleting` and its repository
//! links dropped (plain `DELETE`s), then its bytes go, then its record; a crash in between
//! leaves a `deleting` record the next run finishes first. `link_blob` revives a
//! `deleting` blob only with other bytes than those being removed (else `BLOB_UNKNOWN`, a
//! clean failure); on the filesystem, where every copy of a digest has one key, the
//! upload's commit-and-link, a mount's read-of-the-source-and-link (with `from` or
//! automatic), the scrub's re-check-and-remove of damaged bytes and GC's
//! mark-remove-forget hold the same `BlobLocks` stripe.
//! Blobs go in batches of 64 (`BATCH`): each marked in its own transaction (so no lock
//! is held across blobs that a put takes one by one), the batch made durable once before
//! any of its bytes go, the bytes deleted in one request where the store can (S3's
//! `DeleteObjects`), the records forgotten in one transaction; the batch holds its
//! digests' stripes, taken in stripe order (`BlobLocks::lock_all`).
//! Uploads in progress are not blobs and are never touched. A full run also removes
//! blob-store objects no record names, older than the grace period and than its snapshot
//! of the records. Where the name is the digest (the filesystem) each is re-checked under
//! its stripe lock. Where it is an upload id (S3) the candidates are re-checked as a set:
//! first that no upload of that id exists (a commit between storing the bytes and
//! recording them still has its upload, which `link_blob` deletes in the transaction
//! that records the blob; S3 dates a multipart object from the upload's start, so an old
//! object can be a commit in progress), then against the records read again. This is
//! sound because of a storage invariant: **a store with a key per commit only ever hands
//! out an upload's own bytes** (`commit_upload` never adopts another upload's object;
//! the metadata store deduplicates and the committer deletes the copy it does not keep),
//! so an object with neither an upload nor a record never gets one. (Before, S3 commits
//! deduplicated through `digests/` marker objects, and a commit could adopt bytes a
//! sweep was removing: the cause of the GC stress test's intermittent 500s on the
//! scale-out stores.) On S3 a removed blob's record stays an hour as a tombstone
//! (`deleting`, size -1), so a link that read its key just before the bytes went (a
//! mount) cannot make it live again (`link_blob` refuses a `deleting` blob's own key).
//! Deletes that act on a decision made earlier carry it into their transaction:
//! retention deletes a tag only if it still names what the run saw
//! (`delete_tag(…, Some(&TagTarget))`) and a manifest only if nothing holds it then:
//! untagged, no index of its repository naming it, not a referrer, pushed longer ago than
//! the GC grace (`delete_manifest(…, DeleteIf::Unheld)`, under the manifest's row lock,
//! which an index's put takes in share mode on each child); the immutability check of a delete runs in the
//! delete's transaction, with the manifest row locked. One run at a time: the
//! `gc` lease, renewed while a run lasts (the run on a task of its own, the renewer
//! stopped by a drop guard), plus a per-node mutex; `gc.rs` tests (dry run = real run,
//! SIGKILL mid-run, GC in a loop under load, mounts racing a run, a client hanging up on
//! `POST /gc`) check this on both backends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use berth_core::access::project_of;
use berth_core::{Error, ErrorKind};
use berth_meta::{AuditEvent, GarbageBlob, GarbageManifest, GcKind, GcRun};
use berth_storage::StoredBlob;
use tokio_util::sync::CancellationToken;

use crate::Jobs;
use berth_storage::storage_err;

/// Candidates of each kind (blobs, manifests, orphans) one run decides on; the next run
/// takes the rest.
pub const MAX_RUN: usize = 10_000;
/// The `gc` lease's lifetime; the running node renews it every third of it. A node that
/// dies mid-run holds up the next run on another node this long at most.
const LEASE: Duration = Duration::from_secs(15);
/// Records and blob-store names read per page by a full run.
const PAGE: usize = 1_000;
/// Blobs removed together: their decisions made durable at once, their bytes deleted in
/// one request where the store can, their records forgotten in one transaction. Uploads
/// of the same digests (a stripe of each, `BlobLocks`) wait for the batch.
const BATCH: usize = 64;

pub use crate::{Gc, GcConfig};

/// What a run is asked to do.
#[derive(Clone, Copy, Debug, Default)]
pub struct GcRequest {
    pub full: bool,
    pub dry_run: bool,
}

/// A run's result: the recorded figures and what was (or would be) removed.
#[derive(Clone, Debug)]
pub struct GcReport {
    pub run: GcRun,
    pub manifests: Vec<GarbageManifest>,
    pub blobs: Vec<GarbageBlob>,
    pub orphans: Vec<StoredBlob>,
}

/// Runs the collector once, now, if no run is in progress on any node (else `CONFLICT`).
/// The run goes on a task of its own, which this awaits: a caller that goes away (a client
/// that hangs up on `POST /gc`) neither stops it midway nor keeps its lease alive; it
/// ends, is recorded, and releases the lease.
pub async fn collect(reg: &Arc<Jobs>, request: GcRequest) -> Result<GcReport, Error> {
    let reg = Arc::clone(reg);
    let run = tokio::spawn(async move { collect_here(&reg, request).await });
    run.await.map_err(|e| Error::internal(format!("the garbage collection run's task failed: {e}")))?
}

async fn collect_here(reg: &Jobs, request: GcRequest) -> Result<GcReport, Error> {
    let gc = reg.gc.as_ref().ok_or_else(|| Error::internal("garbage collection is not configured"))?;
    let busy = || Error::new(ErrorKind::Conflict).with_message("a garbage collection run is in progress");
    let _running = gc.running.try_lock().map_err(|_| busy())?;
    if !reg.meta.try_lease("gc", &reg.node_id, LEASE.as_secs() as i64).await? {
        return Err(busy());
    }
    // Renewed while the run goes on; released (expired) when it ends. The renewer stops
    // when this ends however it does (a panic included: the guard), so the lease expires.
    let done = CancellationToken::new();
    let renewer = tokio::spawn(renew(Arc::clone(&reg.meta), reg.node_id.clone(), done.clone()));
    let stop_renewing = done.drop_guard();
    let mut run = Run::new(reg, gc, request);
    let outcome = run.go().await;
    drop(stop_renewing);
    let _ = renewer.await;
    if let Err(e) = reg.meta.try_lease("gc", &reg.node_id, -1).await {
        tracing::warn!(error = %e, "releasing the gc lease");
    }
    let mut report = run.report;
    report.run.duration_ms = run.started.elapsed().as_millis() as i64;
    if let Err(e) = &outcome {
        // Recorded too, with what it did before it stopped; the cause is in the log.
        tracing::warn!(error = %e, "garbage collection run stopped early");
        report.run.error = Some(format!("stopped early ({})", e.kind.wire().0));
    }
    report.run.id = gc.store.record_run(&report.run).await?;
    outcome.map(|()| report)
}

async fn renew(meta: Arc<dyn berth_meta::MetadataStore>, holder: String, done: CancellationToken) {
    loop {
        if !crate::pause(LEASE / 3, &done).await {
            return;
        }
        if let Err(e) = meta.try_lease("gc", &holder, LEASE.as_secs() as i64).await {
            tracing::warn!(error = %e, "renewing the gc lease");
        }
    }
}

/// One run in progress.
struct Run<'a> {
    reg: &'a Jobs,
    gc: &'a Gc,
    request: GcRequest,
    /// Candidates queued at or before this (Unix milliseconds, the review queues' clock)
    /// are due: with a grace of 0, everything queued before the run started.
    before: i64,
    started: Instant,
    report: GcReport,
}

impl<'a> Run<'a> {
    fn new(reg: &'a Jobs, gc: &'a Gc, request: GcRequest) -> Run<'a> {
        let kind = if request.full { GcKind::Full } else { GcKind::Incremental };
        let run = GcRun {
            id: 0,
            kind,
            dry_run: request.dry_run,
            started_ms: berth_meta::now_ms(),
            duration_ms: 0,
            candidates: 0,
            manifests_removed: 0,
            blobs_removed: 0,
            bytes_freed: 0,
            orphans_removed: 0,
            orphan_bytes: 0,
            error: None,
        };
        Run {
            reg,
            gc,
            request,
            before: berth_meta::gc::review_now() - gc.config.grace.as_millis() as i64,
            started: Instant::now(),
            report: GcReport { run, manifests: Vec::new(), blobs: Vec::new(), orphans: Vec::new() },
        }
    }

    async fn go(&mut self) -> Result<(), Error> {
        let (reg, store) = (self.reg, &self.gc.store);
        // Nothing is read before the millisecond the run started in has passed: what is
        // queued in it is due (a grace of 0 is "at once"), and what is queued from the
        // reads on (a removal's children, a concurrent write) is later than the cutoff,
        // for the next run — never cleared unreviewed by `clear_reviewed`.
        // (At most a few milliseconds: a clock stepped back leaves entries queued during the
        // run at or before the cutoff, cleared unreviewed: garbage left, never removed early.)
        let started = self.before + self.gc.config.grace.as_millis() as i64;
        for _ in 0..10 {
            if berth_meta::gc::review_now() > started {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A run that crashed left blobs marked `deleting`: they go first.
        self.finish_doomed().await?;
        if self.request.full && !self.request.dry_run {
            store.queue_unreferenced(self.gc.config.delete_untagged).await?;
        }
        self.report.run.candidates = store.due_count(self.before).await?;
        // Every decision first, against one state; then the removals.
        let limit = MAX_RUN as u32;
        let blobs = store.garbage_blobs(self.before, limit).await?;
        let manifests = store.garbage_manifests(self.before, self.gc.config.delete_untagged, limit).await?;
        let complete = (blobs.len() < MAX_RUN, manifests.len() < MAX_RUN);
        if self.request.dry_run {
            self.report.manifests.extend(manifests);
            for blob in blobs {
                self.removed_blob(blob);
            }
        } else {
            for m in manifests {
                if store.remove_manifest(&m.repo, &m.digest, self.gc.config.delete_untagged).await? {
                    self.audit_removal(&m).await;
                    self.report.manifests.push(m);
                }
            }
            for batch in blobs.chunks(BATCH) {
                let digests: Vec<_> = batch.iter().map(|b| b.digest.clone()).collect();
                let _stripes = reg.blob_locks.lock_all(&digests).await;
                let doomed = store.doom_blobs(&digests, self.before).await?;
                let doomed = batch
                    .iter()
                    .zip(doomed)
                    .filter_map(|(blob, info)| {
                        info.map(|info| GarbageBlob { key: info.key, size: info.size, digest: blob.digest.clone() })
                    })
                    .collect();
                self.remove_bytes(doomed).await?;
            }
            // Whatever was due is reviewed now, unless a kind had more than one run takes.
            store.clear_reviewed(self.before, complete.0, complete.1).await?;
        }
        self.report.run.manifests_removed = self.report.manifests.len() as u64;
        if self.request.full {
            self.sweep_orphans().await?;
        }
        Ok(())
    }

    fn removed_blob(&mut self, blob: GarbageBlob) {
        self.report.run.blobs_removed += 1;
        self.report.run.bytes_freed += blob.size;
        self.report.blobs.push(blob);
    }

    /// Removes the bytes of blobs marked `deleting`, then their records.
    async fn remove_bytes(&mut self, blobs: Vec<GarbageBlob>) -> Result<(), Error> {
        if blobs.is_empty() {
            return Ok(());
        }
        let reg = self.reg;
        let blob_store = &reg.blobs;
        // In one request where the store can (S3's `DeleteObjects`). A key that names no
        // object (a record no commit of this store made) has no bytes to delete.
        let names: Vec<String> = blobs.iter().filter_map(|b| blob_store.stored_name(&b.key)).collect();
        blob_store.delete_stored(&names).await.map_err(storage_err)?;
        // Where keys are per commit, a tombstone keeps a link that read this key just
        // before the bytes went (a mount) from making it live again (one key per digest:
        // `BlobLocks` does that).
        let tombstone = !blob_store.key_per_digest();
        let forgotten = self.gc.store.forget_blobs(&blobs, tombstone).await?;
        for (blob, forgotten) in blobs.into_iter().zip(forgotten) {
            if forgotten {
                self.removed_blob(blob);
            }
        }
        Ok(())
    }

    /// Finishes the blobs marked `deleting` (a dry run lists them: the real run removes them).
    async fn finish_doomed(&mut self) -> Result<(), Error> {
        let reg = self.reg;
        loop {
            let doomed = self.gc.store.doomed_blobs(PAGE as u32).await?;
            let last = doomed.len() < PAGE;
            if self.request.dry_run {
                for blob in doomed {
                    self.removed_blob(blob);
                }
            } else {
                for batch in doomed.chunks(BATCH) {
                    let _stripes = reg.blob_locks.lock_all(batch.iter().map(|b| &b.digest)).await;
                    self.remove_bytes(batch.to_vec()).await?;
                }
            }
            if last || self.request.dry_run || self.report.blobs.len() >= MAX_RUN {
                return Ok(());
            }
        }
    }

    async fn audit_removal(&self, m: &GarbageManifest) {
        let event = AuditEvent {
            at_ms: berth_meta::now_ms(),
            actor: Some("gc".to_owned()),
            address: "-".to_owned(),
            operation: "gc.manifest.delete".to_owned(),
            project: Some(project_of(&m.repo).to_owned()),
            resource: Some(format!("{}@{}", m.repo, m.digest)),
            outcome: "success".to_owned(),
            detail: None,
            count: 1,
        };
        self.reg.audit.record(event).await;
    }

    /// Removes blob-store objects that no record names and that are older than the grace
    /// period (and than the snapshot of records, so that a blob committed and recorded
    /// during the sweep is never taken for an orphan).
    async fn sweep_orphans(&mut self) -> Result<(), Error> {
        let cutoff = SystemTime::now() - self.gc.config.grace;
        let known = self.recorded_names().await?;
        let mut candidates: Vec<StoredBlob> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.reg.blobs.list_blobs(after.as_deref(), PAGE).await.map_err(storage_err)?;
            let last = page.len() < PAGE;
            after = page.last().map(|b| b.name.clone());
            candidates.extend(page.into_iter().filter(|b| b.modified < cutoff && !known.contains(&b.name)));
            if last || candidates.len() >= MAX_RUN {
                break;
            }
        }
        candidates.truncate(MAX_RUN);
        let candidates = self.still_orphans(candidates).await?;
        self.remove_orphans(candidates).await
    }

    /// The names of every recorded blob (live or `deleting`), read in pages.
    async fn recorded_names(&self) -> Result<HashSet<String>, Error> {
        let mut names = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.gc.store.blob_keys(after.as_deref(), PAGE as u32).await?;
            let last = page.len() < PAGE;
            after = page.last().map(|(digest, _)| digest.clone());
            names.extend(page.into_iter().filter_map(|(_, key)| self.reg.blobs.stored_name(&key)));
            if last {
                return Ok(names);
            }
        }
    }

    /// Drops the candidates named after an upload (S3) that a commit may still record: an
    /// old object can belong to a commit in progress (S3 dates a multipart object from
    /// the upload's start), whose upload record exists until the record of its blob is
    /// made, in one transaction. Checked in that order — uploads first, then the records
    /// read again — no such commit slips between the two. An object with neither is never
    /// recorded afterwards: a store keyed per commit only hands out an upload's own bytes.
    /// (Objects named by digest are re-checked one by one under their lock instead.)
    async fn still_orphans(&self, candidates: Vec<StoredBlob>) -> Result<Vec<StoredBlob>, Error> {
        let by_upload: Vec<String> = candidates.iter().filter(|b| b.digest.is_none()).map(|b| b.name.clone()).collect();
        if by_upload.is_empty() {
            return Ok(candidates);
        }
        let known = self.reg.meta.known_uploads(&by_upload).await?;
        let uploading: HashSet<String> =
            by_upload.into_iter().zip(known).filter_map(|(name, known)| known.then_some(name)).collect();
        let recorded = self.recorded_names().await?;
        Ok(candidates
            .into_iter()
            .filter(|b| b.digest.is_some() || !(uploading.contains(&b.name) || recorded.contains(&b.name)))
            .collect())
    }

    async fn remove_orphans(&mut self, orphans: Vec<StoredBlob>) -> Result<(), Error> {
        let reg = self.reg;
        let mut batch = Vec::new();
        for orphan in orphans {
            if self.request.dry_run {
                self.removed_orphan(orphan);
                continue;
            }
            match &orphan.digest {
                // The name is the digest (a filesystem store): an upload of the same
                // content could adopt these bytes; re-checked under its lock.
                Some(digest) => {
                    let _stripe = reg.blob_locks.lock(digest).await;
                    if !self.gc.store.blob_recorded(digest).await? {
                        reg.blobs.delete_stored(std::slice::from_ref(&orphan.name)).await.map_err(storage_err)?;
                        self.removed_orphan(orphan);
                    }
                }
                None => batch.push(orphan),
            }
        }
        for chunk in batch.chunks(PAGE) {
            let names: Vec<String> = chunk.iter().map(|b| b.name.clone()).collect();
            self.reg.blobs.delete_stored(&names).await.map_err(storage_err)?;
        }
        for orphan in batch {
            self.removed_orphan(orphan);
        }
        Ok(())
    }

    fn removed_orphan(&mut self, orphan: StoredBlob) {
        self.report.run.orphans_removed += 1;
        self.report.run.orphan_bytes += orphan.size;
        self.report.orphans.push(orphan);
    }
}

/// The scheduled collector: an incremental run every `interval`, a full one every
/// `full_interval`, on whichever node gets the `gc` lease.
pub struct Collector {
    registry: Arc<Jobs>,
}

impl Collector {
    pub fn new(registry: Arc<Jobs>) -> Collector {
        Collector { registry }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let Some(gc) = self.registry.gc.as_ref() else { return };
        let (interval, full_interval) = (gc.config.interval, gc.config.full_interval);
        let mut last_full = Instant::now();
        loop {
            if !crate::pause(interval, &shutdown).await {
                return;
            }
            let full = last_full.elapsed() >= full_interval;
            match collect(&self.registry, GcRequest { full, dry_run: false }).await {
                Ok(report) => {
                    if full {
                        last_full = Instant::now();
                    }
                    tracing::info!(run = ?report.run, "garbage collection");
                }
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => tracing::warn!(error = %e, "garbage collection run failed"),
            }
        }
    }
}
