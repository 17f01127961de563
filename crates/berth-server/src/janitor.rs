//! The upload janitor: removes uploads abandoned for longer than the configured TTL,
//! and staged bytes that no upload record owns (left by a crash between creating the
//! staging file and recording the upload).
//!
//! Shaped like every background job: `run_once` does one pass (tests call it), `run`
//! repeats it until shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use berth_core::Error;
use tokio_util::sync::CancellationToken;

use crate::Registry;
use crate::blobs::storage_err;

pub struct Janitor {
    registry: Arc<Registry>,
    /// Staged ids without a record seen on the previous pass. An id is removed only when
    /// seen twice, so an upload whose record is being written right now is left alone.
    orphans: HashSet<String>,
}

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub expired: usize,
    pub orphans: usize,
}

impl Janitor {
    pub fn new(registry: Arc<Registry>) -> Janitor {
        Janitor { registry, orphans: HashSet::new() }
    }

    pub async fn run_once(&mut self) -> Result<Sweep, Error> {
        let reg = &self.registry;
        let mut sweep = Sweep::default();
        let ttl = reg.config.upload_ttl.as_secs() as i64;
        for (id, state) in reg.meta.stale_uploads(berth_meta::now() - ttl).await? {
            // Record first: once it is gone, no request can append to the bytes.
            reg.meta.delete_upload(&id).await?;
            reg.blobs.delete_upload(&id, &state).await.map_err(storage_err)?;
            sweep.expired += 1;
        }
        let staged = reg.blobs.list_uploads().await.map_err(storage_err)?;
        let known = reg.meta.known_uploads(&staged).await?;
        let mut orphans = HashSet::new();
        for (id, known) in staged.into_iter().zip(known) {
            if known {
                continue;
            }
            if self.orphans.contains(&id) {
                reg.blobs.delete_upload(&id, "").await.map_err(storage_err)?;
                sweep.orphans += 1;
            } else {
                orphans.insert(id);
            }
        }
        self.orphans = orphans;
        Ok(sweep)
    }

    /// Sweeps every `interval` until `shutdown` is cancelled, on whichever node holds
    /// the `janitor` lease (taken and renewed here; a dead node's lease expires).
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        let ttl = (interval.as_secs() as i64 * 3).max(30);
        loop {
            let holder = &self.registry.node_id;
            let pass = match self.registry.meta.try_lease("janitor", holder, ttl).await {
                Ok(true) => self.run_once().await,
                Ok(false) => Ok(Sweep::default()),
                Err(e) => Err(e),
            };
            match pass {
                Ok(sweep) if sweep != Sweep::default() => tracing::info!(?sweep, "upload janitor"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "upload janitor pass failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
