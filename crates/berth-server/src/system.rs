//! Switches and signals every node must share, kept in the database
//! ([`OpsStore::setting`]) so that they reach every node whichever one the load balancer
//! sent the change to; each node re-reads them every [`SYNC_INTERVAL`] ([`sync_every`]).
//!
//! - **Read-only mode** (`PUT /api/v1/system/read-only`, or a node started with
//!   `--read-only`): survives restarts; read into the flag requests read
//!   ([`Registry::read_only`], an atomic: no request waits on the database for it).
//! - **Access changed** ([`access_changed`]): a change to accounts, memberships or
//!   projects drops what this node's authorizer cached of them, and stores a new
//!   generation; a node that reads a generation other than the one it last saw clears its
//!   authorizer's caches ([`Authorizer::access_changed`]), so a disabled robot or a
//!   rotated secret stops working everywhere within the interval, not when a cached login
//!   expires.
//!
//! Without a metadata store to keep them in (a registry assembled without `ops`), both
//! are this node's alone.
//!
//! [`OpsStore::setting`]: berth_meta::OpsStore::setting
//! [`Authorizer::access_changed`]: berth_access::auth::Authorizer::access_changed

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_core::Error;
use tokio_util::sync::CancellationToken;

use crate::state::Registry;
use berth_access::auth::AccessChange;

/// How often each node re-reads the stored switch: how long a switch sent to one node
/// takes, at most, to reach the others.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
const SETTING: &str = "read_only";
const ACCESS_GENERATION: &str = "access_generation";

/// Stores the switch and applies it on this node at once.
pub async fn set_read_only(registry: &Registry, on: bool) -> Result<(), Error> {
    if let Some(ops) = &registry.ops {
        ops.set_setting(SETTING, if on { "true" } else { "false" }).await?;
    }
    registry.read_only.store(on, Ordering::Relaxed);
    Ok(())
}

/// Accounts, memberships or projects changed: this node's caches are cleared now, and a
/// new generation is stored for the other nodes. A failure to store it is logged, not
/// returned: the change itself is made, and the other nodes' caches expire on their own.
pub async fn access_changed(registry: &Registry, change: AccessChange<'_>) {
    let generation = uuid::Uuid::new_v4().to_string();
    *registry.access_generation.lock().unwrap_or_else(|e| e.into_inner()) = generation.clone();
    registry.auth.access_changed(change);
    if let Some(ops) = &registry.ops
        && let Err(e) = ops.set_setting(ACCESS_GENERATION, &generation).await
    {
        tracing::warn!(error = %e, "storing the access generation failed; other nodes see the change when their caches expire");
    }
}

/// Re-reads the stored switch into this node's flag, and clears the authorizer's caches
/// if another node stored a new access generation.
pub async fn sync(registry: &Registry) -> Result<(), Error> {
    let Some(ops) = &registry.ops else { return Ok(()) };
    let stored = ops.setting(SETTING).await?;
    registry.read_only.store(stored.as_deref() == Some("true"), Ordering::Relaxed);
    let generation = ops.setting(ACCESS_GENERATION).await?.unwrap_or_default();
    let changed = {
        let mut seen = registry.access_generation.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *seen, generation.clone()) != generation
    };
    if changed {
        registry.auth.access_changed(AccessChange::Anything);
    }
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
            tracing::warn!(error = %e, "reading the stored switches failed; they stay as they were");
        }
    }
}
