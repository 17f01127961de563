//! The audit log's pruner: removes entries older than the retention, on the node holding
//! the `audit-prune` lease, a bounded batch per statement and a bounded time per pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::Error;
use tokio_util::sync::CancellationToken;

use crate::Jobs;

/// Entries deleted per statement.
const PRUNE_BATCH: u32 = 5000;
/// How long one pass may go on deleting batches.
const PRUNE_PASS_TIME: Duration = Duration::from_secs(60);

/// Deletes audit entries older than the retention, in batches, on the node holding the
/// `audit-prune` lease. Shaped like the janitor: `run_once` is one pass, `run` repeats.
pub struct AuditPruner {
    registry: Arc<Jobs>,
    retention: Duration,
}

impl AuditPruner {
    pub fn new(registry: Arc<Jobs>, retention: Duration) -> AuditPruner {
        AuditPruner { registry, retention }
    }

    /// Deletes entries recorded before now minus the retention, the oldest first, until
    /// none is left or the pass has run for a minute; returns how many it deleted.
    pub async fn run_once(&self) -> Result<u64, Error> {
        let before = berth_meta::now_ms().saturating_sub(self.retention.as_millis().try_into().unwrap_or(i64::MAX));
        let deadline = Instant::now() + PRUNE_PASS_TIME;
        let mut deleted = 0;
        loop {
            let n = self.registry.audit.store().prune(before, PRUNE_BATCH).await?;
            deleted += n;
            if n < u64::from(PRUNE_BATCH) || Instant::now() >= deadline {
                return Ok(deleted);
            }
        }
    }

    /// Prunes every `interval` until `shutdown` is cancelled.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let ttl = (interval.as_secs() as i64 * 3).max(30);
        loop {
            let lease = self.registry.meta.try_lease("audit-prune", &self.registry.node_id, ttl).await;
            let recorder = &*self.registry.recorder;
            let pass = crate::leased_pass(recorder, "audit-prune", lease, self.run_once()).await;
            let pass = pass.map(Option::unwrap_or_default);
            match pass {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "audit log pruned"),
                Err(e) => tracing::warn!(error = %e, "audit log pruning failed"),
            }
            if !crate::pause(interval, &shutdown).await {
                return;
            }
        }
    }
}
