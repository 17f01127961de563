//! The replication store: the registries artifacts are copied to and from, the rules that
//! say what to copy where, and each rule's executions, made of one task per artifact.
//!
//! A store of its own beside [`MetadataStore`](crate::MetadataStore), in the same
//! database; `berth-federation` is its one user, and decides everything the store does not
//! keep: which artifacts a rule takes, what a task copies, how often it is tried. The store
//! keeps that state durably and hands the work out safely across nodes:
//!
//! - An execution and its tasks appear in one transaction
//!   ([`start_execution`](ReplicationStore::start_execution)); event-triggered ones in the
//!   outbox's fan-out transaction (`OutboxStore::fan_out`), so an event becomes its tasks
//!   exactly once, as it becomes its webhook deliveries.
//! - A task is [claimed](ReplicationStore::claim_tasks) by moving its due time to when the
//!   claim ends: a node that dies mid-copy leaves it due again then. On PostgreSQL the
//!   claim skips rows another node's claim has locked, so two nodes never take one task.
//!   Tasks are claimed oldest first: the caller inserts them in the order they must be
//!   attempted (an index's children before the index, a subject before its referrers).
//! - A [result](ReplicationStore::record_task) updates its task and, once the task is
//!   final, its execution's counts, in one transaction; the result that leaves no task
//!   pending finishes the execution. A result for a task already final (from a node whose
//!   claim ran out, racing the node that took the task over) changes nothing, so nothing
//!   is counted twice.
//!
//! A registry's password arrives sealed (`berth-federation`'s `seal.rs`): the store keeps
//! bytes it cannot read. A rule's filters and options are JSON the store does not read.

use async_trait::async_trait;
use berth_core::Error;

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;

/// A registry artifacts are replicated to or from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationRegistry {
    /// `[a-z0-9]` and inner `-` (checked by the caller).
    pub name: String,
    /// The registry's base URL (`https://harbor.example`).
    pub url: String,
    pub username: Option<String>,
    /// The password, sealed.
    pub sealed_password: Option<Vec<u8>>,
    /// PEM certificates the registry's TLS certificate may chain to, besides the system's.
    pub ca_pem: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// Which way a rule copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the local project to the remote registry.
    Push,
    /// From the remote registry into the local project.
    Pull,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        [Direction::Push, Direction::Pull].into_iter().find(|d| d.as_str() == s)
    }
}

/// What to copy where, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationRule {
    /// `[a-z0-9]` and inner `-` (checked by the caller).
    pub name: String,
    /// The [`ReplicationRegistry`] it copies to or from.
    pub registry: String,
    pub direction: Direction,
    /// The local project.
    pub project: String,
    /// Runs on the outbox's events (pushes, deletes) as they are fanned out.
    pub on_event: bool,
    /// Runs on this schedule (the caller parses it).
    pub cron: Option<String>,
    /// When the schedule next runs it (Unix milliseconds), as the caller computed it.
    pub next_run_ms: Option<i64>,
    pub enabled: bool,
    /// Filters and options, as JSON (the store does not read it).
    pub spec: String,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// What started an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The outbox's events, as they were fanned out.
    Event,
    /// The rule's schedule.
    Schedule,
    /// Someone, by hand.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Event => "event",
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        [Trigger::Event, Trigger::Schedule, Trigger::Manual].into_iter().find(|t| t.as_str() == s)
    }
}

/// What a task does to its artifact at the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskOp {
    /// Copies a manifest with everything it references.
    Copy,
    /// Deletes it (or the tags named).
    Delete,
}

impl TaskOp {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskOp::Copy => "copy",
            TaskOp::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<TaskOp> {
        [TaskOp::Copy, TaskOp::Delete].into_iter().find(|o| o.as_str() == s)
    }
}

/// Where a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Not done yet; due at `due_ms` (a claimed task's claim ends then).
    Pending,
    Succeeded,
    /// Given up.
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        [TaskState::Pending, TaskState::Succeeded, TaskState::Failed].into_iter().find(|t| t.as_str() == s)
    }
}

/// Where an execution is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutionState {
    /// A task of it is pending.
    Running,
    /// Every task succeeded (or there were none).
    Succeeded,
    /// Every task failed.
    Failed,
    /// Some tasks failed, some succeeded.
    Partial,
}

impl ExecutionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Running => "running",
            ExecutionState::Succeeded => "succeeded",
            ExecutionState::Failed => "failed",
            ExecutionState::Partial => "partial",
        }
    }

    pub fn parse(s: &str) -> Option<ExecutionState> {
        [ExecutionState::Running, ExecutionState::Succeeded, ExecutionState::Failed, ExecutionState::Partial]
            .into_iter()
            .find(|e| e.as_str() == s)
    }
}

/// A task to make, as the caller renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTask {
    /// The rule whose execution it joins: [`start_execution`](ReplicationStore::start_execution)
    /// takes tasks of its rule only; the outbox's fan-out groups them by it.
    pub rule: String,
    pub op: TaskOp,
    pub repo: String,
    pub digest: Option<String>,
    /// The tags concerned, in the caller's order.
    pub tags: Vec<String>,
}

/// One run of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub id: i64,
    pub rule: String,
    pub trigger: Trigger,
    pub state: ExecutionState,
    /// Unix milliseconds.
    pub started_ms: i64,
    /// When its last task became final (when it started, if it had none).
    pub finished_ms: Option<i64>,
    /// Its tasks, and how many of them are final each way.
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Bytes its final tasks copied.
    pub bytes: u64,
    /// Why it failed as a whole (nothing the store writes yet).
    pub error: Option<String>,
}

/// One artifact of an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub id: i64,
    pub execution: i64,
    pub rule: String,
    pub op: TaskOp,
    pub repo: String,
    pub digest: Option<String>,
    pub tags: Vec<String>,
    pub state: TaskState,
    /// Results recorded for it so far.
    pub attempts: u32,
    /// Unix milliseconds: when it is due (pending), when it was made, when it became final.
    pub due_ms: i64,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// The latest attempt: bytes copied, how long it took, why it failed.
    pub bytes: u64,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
}

/// How one attempt at a task went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskResult {
    pub task: i64,
    /// Unix milliseconds when it ended.
    pub at_ms: i64,
    pub bytes: u64,
    pub duration_ms: u64,
    /// `None`: succeeded.
    pub error: Option<String>,
    /// When it failed: try again then (`Some`), or give up (`None`).
    pub retry_at_ms: Option<i64>,
}

#[async_trait]
pub trait ReplicationStore: Send + Sync + 'static {
    /// Every registry, sorted by name (a handful).
    async fn all_registries(&self) -> Result<Vec<ReplicationRegistry>, Error>;

    /// Creates a registry (`create`; `CONFLICT` if the name is taken) or replaces one
    /// (`NOT_FOUND` if there is none), keeping its `created_at`.
    async fn put_registry(&self, registry: &ReplicationRegistry, create: bool) -> Result<ReplicationRegistry, Error>;

    /// Removes a registry; `false` if there was none. `CONFLICT`, naming them, while rules
    /// use it: a rule never points at nothing.
    async fn delete_registry(&self, name: &str) -> Result<bool, Error>;

    /// Every rule, sorted by name.
    async fn all_rules(&self) -> Result<Vec<ReplicationRule>, Error>;

    /// Creates a rule (`create`; `CONFLICT` if the name is taken) or replaces one
    /// (`NOT_FOUND` if there is none), keeping its `created_at`. `NOT_FOUND` when its
    /// registry does not exist.
    async fn put_rule(&self, rule: &ReplicationRule, create: bool) -> Result<ReplicationRule, Error>;

    /// Removes a rule with its executions and their tasks (pending ones too: nothing
    /// claims them any more); `false` if there was none.
    async fn delete_rule(&self, name: &str) -> Result<bool, Error>;

    /// Sets when the rule's schedule next runs it (`None`: not); `false` if there is no
    /// such rule.
    async fn set_next_run(&self, rule: &str, next_run_ms: Option<i64>) -> Result<bool, Error>;

    /// Starts an execution of `rule` with `tasks` (all of that rule: else an internal
    /// error, a caller's mistake), in one transaction: the execution running, its tasks
    /// pending and due at `now_ms`, in their order (the order they are claimed in). With no
    /// task it is finished at once, succeeded. `NOT_FOUND` if there is no such rule.
    async fn start_execution(
        &self,
        rule: &str,
        trigger: Trigger,
        tasks: &[NewTask],
        now_ms: i64,
    ) -> Result<Execution, Error>;

    /// Takes up to `limit` pending tasks of `rule` due at `now_ms`, the oldest (lowest id)
    /// first, and moves each one's due time to `until_ms`, in one transaction: a node that
    /// dies while doing one leaves it due again then. Never the same task to two callers
    /// whose claims overlap in time. Returned in id order.
    async fn claim_tasks(&self, rule: &str, now_ms: i64, until_ms: i64, limit: u32) -> Result<Vec<Task>, Error>;

    /// Moves the due time of `tasks` still pending to `until_ms`: the claim of a node still
    /// copying them, renewed, so that a short claim (quick to take over when the node
    /// dies) never runs out under a long copy.
    async fn extend_claims(&self, tasks: &[i64], until_ms: i64) -> Result<(), Error>;

    /// Records an attempt at a pending task: succeeded, to be retried at `retry_at_ms`
    /// (pending again, its error kept), or given up. A task made final adds to its
    /// execution's counts in the same transaction, and the one that leaves none of the
    /// execution's tasks pending finishes it (succeeded, failed, or partial), which is then
    /// returned. A result for a task already final, or gone with its rule, changes nothing
    /// (`None`).
    async fn record_task(&self, result: &TaskResult) -> Result<Option<Execution>, Error>;

    /// How many of `rule`'s tasks are pending.
    async fn pending_tasks(&self, rule: &str) -> Result<u64, Error>;

    /// Executions (of `rule`, or of every rule), newest first, before id `before`
    /// (exclusive).
    async fn executions(&self, rule: Option<&str>, before: Option<i64>, limit: u32) -> Result<Vec<Execution>, Error>;

    async fn execution(&self, id: i64) -> Result<Option<Execution>, Error>;

    /// An execution's tasks in id order (the order they are claimed in), after id `after`
    /// (exclusive).
    async fn tasks(&self, execution: i64, after: Option<i64>, limit: u32) -> Result<Vec<Task>, Error>;

    /// Deletes up to `limit` executions (with their tasks) that finished before
    /// `before_ms`, the earliest finished first; returns how many. Running ones stay.
    async fn prune_executions(&self, before_ms: i64, limit: u32) -> Result<u64, Error>;
}
