//! Read-only mode, registry-wide: the switch (`PUT /api/v1/system/read-only`, or a node
//! started with `--read-only`) is stored in the database ([`OpsStore::setting`]), so that
//! it applies to every node whichever one the load balancer sent it to, and survives
//! restarts; each node re-reads it every [`SYNC_INTERVAL`] ([`sync_every`]) into the flag
//! requests read ([`Registry::read_only`], an atomic: no request waits on the database for
//! it). Without a metadata store to keep it in (a registry assembled without `ops`), the
//! switch is this node's alone.
//!
//! [`OpsStore::setting`]: berth_meta::OpsStore::setting

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_core::Error;
use tokio_util::sync::CancellationToken;

use crate::Registry;

/// How often each node re-reads the stored switch: how long a switch sent to one node
/// takes, at most, to reach the others.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
const SETTING: &str = "read_only";

/// Stores the switch and applies it on this node at once.
pub async fn set_read_only(registry: &Registry, on: bool) -> Result<(), Error> {
    if let Some(ops) = &registry.ops {
        ops.set_setting(SETTING, if on { "true" } else { "false" }).await?;
    }
    registry.read_only.store(on, Ordering::Relaxed);
    Ok(())
}

/// Re-reads the stored switch into this node's flag.
pub async fn sync(registry: &Registry) -> Result<(), Error> {
    let Some(ops) = &registry.ops else { return Ok(()) };
    let stored = ops.setting(SETTING).await?;
    registry.read_only.store(stored.as_deref() == Some("true"), Ordering::Relaxed);
    Ok(())
}

/// [`sync`] every [`SYNC_INTERVAL`] until `shutdown`; a failed read keeps the mode as it was.
pub async fn sync_every(registry: Arc<Registry>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SYNC_INTERVAL) => {}
        }
        if let Err(e) = sync(&registry).await {
            tracing::warn!(error = %e, "reading the stored read-only switch failed; the mode stays as it was");
        }
    }
}
