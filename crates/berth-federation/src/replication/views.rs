//! Executions and their tasks as the API shows them.

use berth_meta::{Execution, Task};
use serde::Serialize;

/// One run of a rule.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ExecutionView {
    pub id: i64,
    pub rule: String,
    /// `event`, `schedule` or `manual`.
    pub trigger: String,
    /// `running`, `succeeded`, `failed` or `partial` (some tasks failed).
    pub state: String,
    /// Unix milliseconds.
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Bytes of blobs sent.
    pub bytes: u64,
    pub error: Option<String>,
}

impl From<&Execution> for ExecutionView {
    fn from(e: &Execution) -> ExecutionView {
        ExecutionView {
            id: e.id,
            rule: e.rule.clone(),
            trigger: e.trigger.as_str().to_owned(),
            state: e.state.as_str().to_owned(),
            started_ms: e.started_ms,
            finished_ms: e.finished_ms,
            total: e.total,
            succeeded: e.succeeded,
            failed: e.failed,
            bytes: e.bytes,
            error: e.error.clone(),
        }
    }
}

/// One artifact of an execution.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TaskView {
    pub id: i64,
    /// `copy` or `delete`.
    pub op: String,
    pub repository: String,
    pub digest: Option<String>,
    pub tags: Vec<String>,
    /// `pending`, `succeeded` or `failed` (given up).
    pub state: String,
    pub attempts: u32,
    /// When a pending one is tried next (Unix milliseconds).
    pub due_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// The latest attempt's bytes sent, time taken and error.
    pub bytes: u64,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> TaskView {
        let pending = t.state == berth_meta::TaskState::Pending;
        TaskView {
            id: t.id,
            op: t.op.as_str().to_owned(),
            repository: t.repo.clone(),
            digest: t.digest.clone(),
            tags: t.tags.clone(),
            state: t.state.as_str().to_owned(),
            attempts: t.attempts,
            due_ms: pending.then_some(t.due_ms),
            finished_ms: t.finished_ms,
            bytes: t.bytes,
            duration_ms: t.duration_ms,
            error: t.error.clone(),
        }
    }
}
