//! The upload janitor: removes uploads abandoned for longer than the configured TTL,
//! and staged bytes that no upload record owns (left by a crash between creating the
//! staging file and recording the upload).
//!
//! Shaped like every background job: `run_once` does one pass (tests call it), `run`
//! repeats it until shutdown.
//!
//! A pass keeps up with uploads created as fast as clients may: it expires stale records
//! in batches (one statement deletes a batch and returns what it deleted), removes each
//! batch's staged bytes a bounded number at a time, and goes on until no stale record is
//! left or the pass has run for [`PASS_TIME`]; the next pass takes the rest.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::Error;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::Jobs;
use berth_storage::storage_err;

pub struct Janitor {
    registry: Arc<Jobs>,
    /// Staged ids without a record seen on the previous pass. An id is removed only when
    /// seen twice, so an upload whose record is being written right now is left alone.
    orphans: HashSet<String>,
}

/// An upload with no activity for this long is abandoned and its bytes removed
/// (`berth serve`'s default; [`Jobs::upload_ttl`](crate::Jobs::upload_ttl)).
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Upload records expired per statement.
const BATCH: u32 = 500;
/// Staged uploads removed from the blob store at once.
const CONCURRENT_DELETES: usize = 16;
/// How long one pass may go on expiring batches.
const PASS_TIME: Duration = Duration::from_secs(60);

/// Removes the staged bytes of `(id, state)` uploads, a bounded number at a time; returns
/// the ids whose bytes could not be removed (logged).
async fn remove_staged(reg: &Jobs, uploads: Vec<(String, String)>) -> Vec<String> {
    futures_util::stream::iter(uploads)
        .map(|(id, state)| async move {
            let result = reg.blobs.delete_upload(&id, &state).await;
            result.err().map(|e| {
                tracing::warn!(upload = %id, error = %storage_err(e), "removing an upload's staged bytes");
                id
            })
        })
        .buffer_unordered(CONCURRENT_DELETES)
        .filter_map(|failed| async move { failed })
        .collect()
        .await
}

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub expired: usize,
    pub orphans: usize,
}

impl Janitor {
    pub fn new(registry: Arc<Jobs>) -> Janitor {
        Janitor { registry, orphans: HashSet::new() }
    }

    pub async fn run_once(&mut self) -> Result<Sweep, Error> {
        let reg = &self.registry;
        let mut sweep = Sweep::default();
        let ttl = reg.upload_ttl.as_secs() as i64;
        let deadline = Instant::now() + PASS_TIME;
        loop {
            // Record first: once it is gone, no request can append to the bytes.
            let batch = reg.meta.expire_uploads(berth_meta::now() - ttl, BATCH).await?;
            let full = batch.len() == BATCH as usize;
            sweep.expired += batch.len();
            // Recordless now: bytes that fail to go are orphans for a later pass.
            remove_staged(reg, batch).await;
            if !full || Instant::now() >= deadline {
                break;
            }
        }
        let staged = reg.blobs.list_uploads().await.map_err(storage_err)?;
        let known = reg.meta.known_uploads(&staged).await?;
        let mut orphans = HashSet::new();
        let mut doomed = Vec::new();
        for (id, known) in staged.into_iter().zip(known) {
            if known {
                continue;
            }
            if self.orphans.contains(&id) {
                doomed.push((id, String::new()));
            } else {
                orphans.insert(id);
            }
        }
        let tried = doomed.len();
        let failed = remove_staged(reg, doomed).await;
        sweep.orphans = tried - failed.len();
        // One that failed to go is still an orphan next pass, and goes then.
        orphans.extend(failed);
        self.orphans = orphans;
        Ok(sweep)
    }

    /// Sweeps every `interval` until `shutdown` is cancelled, on whichever node holds
    /// the `janitor` lease (taken and renewed here; a dead node's lease expires).
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        let ttl = (interval.as_secs() as i64 * 3).max(30);
        loop {
            let lease = self.registry.meta.try_lease("janitor", &self.registry.node_id, ttl).await;
            let recorder = Arc::clone(&self.registry.recorder);
            let pass = crate::leased_pass(&*recorder, "janitor", lease, self.run_once()).await;
            let pass = pass.map(Option::unwrap_or_default);
            match pass {
                Ok(sweep) if sweep != Sweep::default() => tracing::info!(?sweep, "upload janitor"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "upload janitor pass failed"),
            }
            if !crate::pause(interval, &shutdown).await {
                return;
            }
        }
    }
}
