//! The outbox: the changes other systems hear of, written in the transaction of the change.
//!
//! A manifest push (`artifact.pushed`), a manifest, tag or repository delete
//! (`artifact.deleted`, `tag.deleted`, `repository.deleted`) writes its event in its own
//! transaction (`sql_store!`, through [`outbox_event!`](sql::outbox_event)); pulls are
//! written by the pull recorder's flush, one event per manifest and flush, in the flush's
//! transaction (`RetentionStore::record_pulls` with `announce`); other events (a quota
//! refusal, whose own transaction rolled back) by [`OutboxStore::append`]. The dispatcher
//! (`berth-federation`) reads what is [`pending`](OutboxStore::pending) and
//! [`fans it out`](OutboxStore::fan_out): the webhook deliveries and replication tasks it
//! makes are inserted and the events deleted in one transaction, so each event becomes its
//! work exactly once, and an event is never seen before the change that made it committed.
//! Rows are taken by what is present, not by an id cursor: PostgreSQL assigns ids before
//! commit, so a later id can commit first.

use async_trait::async_trait;
use berth_core::Error;

use crate::replication::NewTask;

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;
#[cfg(test)]
pub(crate) use suite::suite_webhook;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    ArtifactPushed,
    ArtifactPulled,
    ArtifactDeleted,
    TagDeleted,
    RepositoryDeleted,
    QuotaExceeded,
    /// A replication execution finished (its `repo` is the rule's project, its `detail`
    /// the execution as JSON).
    ReplicationFinished,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::ArtifactPushed,
        EventKind::ArtifactPulled,
        EventKind::ArtifactDeleted,
        EventKind::TagDeleted,
        EventKind::RepositoryDeleted,
        EventKind::QuotaExceeded,
        EventKind::ReplicationFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ArtifactPushed => "artifact.pushed",
            EventKind::ArtifactPulled => "artifact.pulled",
            EventKind::ArtifactDeleted => "artifact.deleted",
            EventKind::TagDeleted => "tag.deleted",
            EventKind::RepositoryDeleted => "repository.deleted",
            EventKind::QuotaExceeded => "quota.exceeded",
            EventKind::ReplicationFinished => "replication.finished",
        }
    }

    /// The project an event of this kind about `repo` belongs to: a replication's names
    /// its project, every other one a repository.
    pub fn project_of(self, repo: &str) -> &str {
        match self {
            EventKind::ReplicationFinished => repo,
            _ => repo.split_once('/').map_or(berth_core::access::DEFAULT_PROJECT, |(p, _)| p),
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An event to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub repo: String,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    /// The tags concerned (pushed, deleted with the manifest, pulled by), sorted.
    pub tags: Vec<String>,
    /// Bytes of the manifest.
    pub size: Option<u64>,
    /// A note: a quota refusal's message.
    pub detail: Option<String>,
    /// Unix milliseconds.
    pub at_ms: i64,
}

/// An event in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: i64,
    /// `None` for a kind this build does not know (written by a newer node): fanned out to
    /// nothing.
    pub event: Option<NewEvent>,
}

/// A webhook delivery to make, as a fan-out makes it (`webhooks` keeps them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    pub project: String,
    pub webhook: String,
    /// The same for every attempt and every webhook the event goes to.
    pub event_id: String,
    pub kind: String,
    pub body: Vec<u8>,
    /// Unix milliseconds.
    pub created_ms: i64,
}

/// Off only while a benchmark measures what the outbox costs a push
/// (`bench/src/outbox_off.rs`, through `BERTH_BENCH_OUTBOX_OFF`): changes then write no
/// event, so webhooks and replication learn of nothing. Process-wide, set once at start.
static OFF_FOR_BENCHMARK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the outbox off for a benchmark's comparison (see [`OFF_FOR_BENCHMARK`]).
pub fn turn_off_for_benchmark() {
    OFF_FOR_BENCHMARK.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether changes write their events (always, outside that benchmark).
pub(crate) fn on() -> bool {
    !OFF_FOR_BENCHMARK.load(std::sync::atomic::Ordering::Relaxed)
}

#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Writes `events` in one transaction (made durable).
    async fn append(&self, events: &[NewEvent]) -> Result<(), Error>;

    /// Up to `limit` events, the oldest first.
    async fn pending(&self, limit: u32) -> Result<Vec<OutboxEvent>, Error>;

    /// In one transaction: deletes the events `ids` and inserts the work they made, unless
    /// one of the events is gone already (another dispatcher fanned it out: then nothing is
    /// written and `false` returned). The work: `deliveries`, and `tasks`, grouped by rule
    /// into one execution each (triggered by `event`, as
    /// [`start_execution`](crate::ReplicationStore::start_execution) makes it, tasks in
    /// their order). A delivery for a webhook, or the tasks of a rule, deleted meanwhile
    /// are left out.
    async fn fan_out(&self, ids: &[i64], deliveries: &[NewDelivery], tasks: &[NewTask]) -> Result<bool, Error>;
}
