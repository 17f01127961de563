//! The one SQL implementation of [`ReplicationStore`](super::ReplicationStore)
//! (`replication_store!`), for SQLite and PostgreSQL alike, and [`insert_execution!`],
//! which the outbox's fan-out calls inside its transaction too.
//!
//! The expanding module defines `row_lock!(share)`, `row_lock!(update)` and
//! `row_lock!(skip)` (see `sql_store!`): PostgreSQL's row locks, nothing on SQLite, whose
//! one writer runs write transactions one at a time already.

/// Starts an execution of rule `$rule` (`&str`) in the transaction `$tx` (an identifier: a
/// `sqlx::Transaction`), started by `$trigger` (a [`Trigger`](crate::replication::Trigger))
/// at `$now_ms`, with `$tasks` (anything that iterates as `&NewTask` and has a `len`), each
/// pending and due at once, inserted in their order. Evaluates to
/// `Result<Option<Execution>, Error>`: `None` if there is no such rule (nothing written).
///
/// The rule's row is read under a share lock (PostgreSQL): a `delete_rule` racing this
/// waits for its commit and takes the new execution with it, instead of this insert
/// failing on the foreign key.
macro_rules! insert_execution {
    ($tx:ident, $rule:expr, $trigger:expr, $tasks:expr, $now_ms:expr) => {{
        let (rule, trigger, tasks, now_ms): (&str, $crate::replication::Trigger, _, i64) =
            ($rule, $trigger, $tasks, $now_ms);
        let total = tasks.len();
        async {
            let exists = sqlx::query(concat!("SELECT 1 FROM replication_rules WHERE name = $1", row_lock!(share)))
                .bind(rule)
                .fetch_optional(&mut *$tx)
                .await
                .map_err($crate::db_error::db_err)?
                .is_some();
            if !exists {
                return Ok(None);
            }
            // With nothing to do, it is done.
            let (state, finished_ms) = if total == 0 {
                ($crate::replication::ExecutionState::Succeeded, Some(now_ms))
            } else {
                ($crate::replication::ExecutionState::Running, None)
            };
            let id: i64 = sqlx::query(
                "INSERT INTO replication_executions (rule, trigger, state, started_ms, finished_ms, total)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(rule)
            .bind(trigger.as_str())
            .bind(state.as_str())
            .bind(now_ms)
            .bind(finished_ms)
            .bind(total as i64)
            .fetch_one(&mut *$tx)
            .await
            .map_err($crate::db_error::db_err)?
            .get(0);
            for t in tasks {
                let t: &$crate::replication::NewTask = t;
                sqlx::query(
                    "INSERT INTO replication_tasks (execution, rule, op, repo, digest, tags, state, attempts,
                       due_ms, created_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7)",
                )
                .bind(id)
                .bind(rule)
                .bind(t.op.as_str())
                .bind(&t.repo)
                .bind(t.digest.as_deref())
                .bind(t.tags.join("\n"))
                .bind(now_ms)
                .execute(&mut *$tx)
                .await
                .map_err($crate::db_error::db_err)?;
            }
            Ok::<_, Error>(Some($crate::replication::Execution {
                id,
                rule: rule.to_owned(),
                trigger,
                state,
                started_ms: now_ms,
                finished_ms,
                total: u32::try_from(total).unwrap_or(u32::MAX),
                succeeded: 0,
                failed: 0,
                bytes: 0,
                error: None,
            }))
        }
        .await
    }};
}
pub(crate) use insert_execution;

/// Implements `ReplicationStore` for a struct with `writer` and `reader` pools and an
/// `async fn durable(&self)` (see `sql_store!`). The expanding module imports `sqlx::Row`.
macro_rules! replication_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::replication::ReplicationStore for $store {
            async fn all_registries(&self) -> Result<Vec<$crate::replication::ReplicationRegistry>, Error> {
                let rows = sqlx::query(
                    "SELECT name, url, username, sealed_password, ca_pem, created_at, updated_at
                     FROM replication_registries ORDER BY name",
                )
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::replication::ReplicationRegistry {
                        name: r.get(0),
                        url: r.get(1),
                        username: r.get(2),
                        sealed_password: r.get(3),
                        ca_pem: r.get(4),
                        created_at: r.get(5),
                        updated_at: r.get(6),
                    })
                    .collect())
            }

            async fn put_registry(
                &self,
                g: &$crate::replication::ReplicationRegistry,
                create: bool,
            ) -> Result<$crate::replication::ReplicationRegistry, Error> {
                use $crate::db_error::{unknown, write_err};
                let now = now();
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let written = if create {
                    sqlx::query(
                        "INSERT INTO replication_registries (name, url, username, sealed_password, ca_pem,
                           created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING created_at",
                    )
                } else {
                    sqlx::query(
                        "UPDATE replication_registries SET url = $2, username = $3, sealed_password = $4,
                           ca_pem = $5, updated_at = $6
                         WHERE name = $1 RETURNING created_at",
                    )
                }
                .bind(&g.name)
                .bind(&g.url)
                .bind(&g.username)
                .bind(&g.sealed_password)
                .bind(&g.ca_pem)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| write_err(e, "replication registry", &g.name))?;
                let Some(row) = written else {
                    return Err(unknown("replication registry", &g.name));
                };
                tx.commit().await.map_err(|e| write_err(e, "replication registry", &g.name))?;
                self.durable().await?;
                Ok($crate::replication::ReplicationRegistry { created_at: row.get(0), updated_at: now, ..g.clone() })
            }

            async fn delete_registry(&self, name: &str) -> Result<bool, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // Locked first (PostgreSQL): a rule being put for it holds a key-share lock
                // on this row until it commits, so the rules read next are all there are,
                // and a rule put after waits and then finds the registry gone.
                let found =
                    sqlx::query(concat!("SELECT 1 FROM replication_registries WHERE name = $1", row_lock!(update)))
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .is_some();
                if !found {
                    return Ok(false);
                }
                let rules: Vec<String> =
                    sqlx::query("SELECT name FROM replication_rules WHERE registry = $1 ORDER BY name")
                        .bind(name)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                if !rules.is_empty() {
                    return Err($crate::replication::sql::in_use(name, &rules));
                }
                sqlx::query("DELETE FROM replication_registries WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match e.as_database_error() {
                        Some(d) if d.is_foreign_key_violation() => $crate::replication::sql::in_use(name, &[]),
                        _ => db_err(e),
                    })?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(true)
            }

            async fn all_rules(&self) -> Result<Vec<$crate::replication::ReplicationRule>, Error> {
                let rows = sqlx::query(concat!($crate::replication::sql::SELECT_RULE!(), " ORDER BY name"))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(db_err)?;
                rows.iter().map(|r| $crate::replication::sql::rule!(r)).collect()
            }

            async fn put_rule(
                &self,
                u: &$crate::replication::ReplicationRule,
                create: bool,
            ) -> Result<$crate::replication::ReplicationRule, Error> {
                use $crate::db_error::{unknown, write_err};
                let now = now();
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let written = if create {
                    sqlx::query(
                        "INSERT INTO replication_rules (name, registry, direction, project, on_event, cron,
                           next_run_ms, enabled, spec, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING created_at",
                    )
                } else {
                    sqlx::query(
                        "UPDATE replication_rules SET registry = $2, direction = $3, project = $4, on_event = $5,
                           cron = $6, next_run_ms = $7, enabled = $8, spec = $9, updated_at = $10
                         WHERE name = $1 RETURNING created_at",
                    )
                }
                .bind(&u.name)
                .bind(&u.registry)
                .bind(u.direction.as_str())
                .bind(&u.project)
                .bind(u.on_event)
                .bind(&u.cron)
                .bind(u.next_run_ms)
                .bind(u.enabled)
                .bind(&u.spec)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| match e.as_database_error() {
                    Some(d) if d.is_foreign_key_violation() => unknown("replication registry", &u.registry),
                    _ => write_err(e, "replication rule", &u.name),
                })?;
                let Some(row) = written else {
                    return Err(unknown("replication rule", &u.name));
                };
                tx.commit().await.map_err(|e| write_err(e, "replication rule", &u.name))?;
                self.durable().await?;
                Ok($crate::replication::ReplicationRule { created_at: row.get(0), updated_at: now, ..u.clone() })
            }

            async fn delete_rule(&self, name: &str) -> Result<bool, Error> {
                // Its executions, and their tasks, go by the foreign keys' cascades.
                let done = sqlx::query("DELETE FROM replication_rules WHERE name = $1")
                    .bind(name)
                    .execute(&self.writer)
                    .await
                    .map_err(db_err)?;
                self.durable().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_next_run(&self, rule: &str, next_run_ms: Option<i64>) -> Result<bool, Error> {
                // Made durable: a schedule's run lost to a power cut would be started again.
                let done = sqlx::query("UPDATE replication_rules SET next_run_ms = $2 WHERE name = $1")
                    .bind(rule)
                    .bind(next_run_ms)
                    .execute(&self.writer)
                    .await
                    .map_err(db_err)?;
                self.durable().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn start_execution(
                &self,
                rule: &str,
                trigger: $crate::replication::Trigger,
                tasks: &[$crate::replication::NewTask],
                now_ms: i64,
            ) -> Result<$crate::replication::Execution, Error> {
                if let Some(t) = tasks.iter().find(|t| t.rule != rule) {
                    return Err(Error::internal(format!(
                        "a task of replication rule {} given to an execution of {rule}",
                        t.rule
                    )));
                }
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let execution = $crate::replication::sql::insert_execution!(tx, rule, trigger, tasks, now_ms)?;
                let Some(execution) = execution else {
                    return Err($crate::db_error::unknown("replication rule", rule));
                };
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(execution)
            }

            async fn claim_tasks(
                &self,
                rule: &str,
                now_ms: i64,
                until_ms: i64,
                limit: u32,
            ) -> Result<Vec<$crate::replication::Task>, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // One statement: the due tasks are selected and locked (on PostgreSQL,
                // skipping those another claim has locked: it has them) and moved on. A task
                // another claim moved since this statement's snapshot is read again once
                // locked, and left out, no longer due.
                let rows = sqlx::query(concat!(
                    "UPDATE replication_tasks SET due_ms = $3 WHERE id IN (
                       SELECT id FROM replication_tasks WHERE rule = $1 AND state = 'pending' AND due_ms <= $2
                       ORDER BY id LIMIT $4",
                    row_lock!(skip),
                    ") RETURNING ",
                    $crate::replication::sql::TASK_COLUMNS!()
                ))
                .bind(rule)
                .bind(now_ms)
                .bind(until_ms)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
                // Not made durable: a claim lost to a power cut leaves its tasks due now.
                tx.commit().await.map_err(db_err)?;
                let mut claimed: Vec<$crate::replication::Task> =
                    rows.iter().map(|r| $crate::replication::sql::task!(r)).collect::<Result<_, _>>()?;
                // `RETURNING` keeps no order.
                claimed.sort_by_key(|t| t.id);
                Ok(claimed)
            }

            async fn extend_claims(&self, tasks: &[i64], until_ms: i64) -> Result<(), Error> {
                if tasks.is_empty() {
                    return Ok(());
                }
                // One statement per task (a node runs a few at a time), in one transaction. Not
                // made durable: a renewal lost to a power cut leaves the claim as it was,
                // which runs out a little sooner.
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                for id in tasks {
                    sqlx::query("UPDATE replication_tasks SET due_ms = $1 WHERE id = $2 AND state = 'pending'")
                        .bind(until_ms)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
                tx.commit().await.map_err(db_err)
            }

            async fn record_task(
                &self,
                t: &$crate::replication::TaskResult,
            ) -> Result<Option<$crate::replication::Execution>, Error> {
                use $crate::replication::TaskState;
                let state = match (&t.error, t.retry_at_ms) {
                    (None, _) => TaskState::Succeeded,
                    (Some(_), Some(_)) => TaskState::Pending,
                    (Some(_), None) => TaskState::Failed,
                };
                let last = state != TaskState::Pending;
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // Only a pending task takes a result: one already final keeps its first.
                let execution = sqlx::query(
                    "UPDATE replication_tasks SET state = $2, attempts = attempts + 1, due_ms = COALESCE($3, due_ms),
                       finished_ms = $4, bytes = $5, duration_ms = $6, error = $7
                     WHERE id = $1 AND state = 'pending' RETURNING execution",
                )
                .bind(t.task)
                .bind(state.as_str())
                .bind(if last { None } else { t.retry_at_ms })
                .bind(last.then_some(t.at_ms))
                .bind(t.bytes.min(i64::MAX as u64) as i64)
                .bind(t.duration_ms.min(i64::MAX as u64) as i64)
                .bind(t.error.as_deref())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let Some(execution) = execution else {
                    // Final already, or gone with its rule: nothing was written.
                    return Ok(None);
                };
                let execution: i64 = execution.get(0);
                let finished = if last {
                    let (succeeded, failed): (i64, i64) = if state == TaskState::Succeeded { (1, 0) } else { (0, 1) };
                    // The execution's row is updated (so locked) before its pending tasks are
                    // counted: of two results finishing its last two tasks at once, the
                    // second waits here for the first's commit, then (a statement of its own,
                    // a snapshot of its own on PostgreSQL) sees the first's task final and
                    // finishes the execution. Counted in the same statement, it would read
                    // the snapshot it started with, see the other task pending, and neither
                    // would.
                    sqlx::query(
                        "UPDATE replication_executions SET succeeded = succeeded + $2, failed = failed + $3,
                           bytes = bytes + $4
                         WHERE id = $1",
                    )
                    .bind(execution)
                    .bind(succeeded)
                    .bind(failed)
                    .bind(t.bytes.min(i64::MAX as u64) as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                    let pending =
                        sqlx::query("SELECT 1 FROM replication_tasks WHERE execution = $1 AND state = 'pending' LIMIT 1")
                            .bind(execution)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db_err)?
                            .is_some();
                    if pending {
                        None
                    } else {
                        let row = sqlx::query(concat!(
                            "UPDATE replication_executions SET finished_ms = $2,
                               state = CASE WHEN failed = 0 THEN 'succeeded' WHEN succeeded = 0 THEN 'failed'
                                            ELSE 'partial' END
                             WHERE id = $1 AND state = 'running' RETURNING ",
                            $crate::replication::sql::EXECUTION_COLUMNS!()
                        ))
                        .bind(execution)
                        .bind(t.at_ms)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        row.map(|r| $crate::replication::sql::execution!(r)).transpose()?
                    }
                } else {
                    None
                };
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(finished)
            }

            async fn pending_tasks(&self, rule: &str) -> Result<u64, Error> {
                let row = sqlx::query("SELECT COUNT(*) FROM replication_tasks WHERE rule = $1 AND state = 'pending'")
                    .bind(rule)
                    .fetch_one(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(row.get::<i64, _>(0).max(0) as u64)
            }

            async fn executions(
                &self,
                rule: Option<&str>,
                before: Option<i64>,
                limit: u32,
            ) -> Result<Vec<$crate::replication::Execution>, Error> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    $crate::replication::sql::EXECUTION_COLUMNS!(),
                    " FROM replication_executions WHERE ($1 IS NULL OR rule = $1) AND ($2 IS NULL OR id < $2)
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(rule)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                rows.iter().map(|r| $crate::replication::sql::execution!(r)).collect()
            }

            async fn execution(&self, id: i64) -> Result<Option<$crate::replication::Execution>, Error> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    $crate::replication::sql::EXECUTION_COLUMNS!(),
                    " FROM replication_executions WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.reader)
                .await
                .map_err(db_err)?;
                row.map(|r| $crate::replication::sql::execution!(r)).transpose()
            }

            async fn tasks(
                &self,
                execution: i64,
                after: Option<i64>,
                limit: u32,
            ) -> Result<Vec<$crate::replication::Task>, Error> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    $crate::replication::sql::TASK_COLUMNS!(),
                    " FROM replication_tasks WHERE execution = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
                ))
                .bind(execution)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                rows.iter().map(|r| $crate::replication::sql::task!(r)).collect()
            }

            async fn prune_executions(&self, before_ms: i64, limit: u32) -> Result<u64, Error> {
                // Their tasks go by the foreign key's cascade; a running execution has no
                // `finished_ms`.
                let done = sqlx::query(
                    "DELETE FROM replication_executions WHERE id IN
                       (SELECT id FROM replication_executions WHERE finished_ms < $1 ORDER BY finished_ms LIMIT $2)",
                )
                .bind(before_ms)
                .bind(i64::from(limit))
                .execute(&self.writer)
                .await
                .map_err(db_err)?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use replication_store;

use berth_core::{Error, ErrorKind};

macro_rules! SELECT_RULE {
    () => {
        "SELECT name, registry, direction, project, on_event, cron, next_run_ms, enabled, spec, created_at, updated_at
         FROM replication_rules"
    };
}
pub(crate) use SELECT_RULE;

/// A row of [`SELECT_RULE`] as a rule: `Result<ReplicationRule, Error>`.
macro_rules! rule {
    ($r:expr) => {{
        let r = $r;
        $crate::replication::sql::column(r.get(2), $crate::replication::Direction::parse, "direction").map(
            |direction| $crate::replication::ReplicationRule {
                name: r.get(0),
                registry: r.get(1),
                direction,
                project: r.get(3),
                on_event: r.get(4),
                cron: r.get(5),
                next_run_ms: r.get(6),
                enabled: r.get(7),
                spec: r.get(8),
                created_at: r.get(9),
                updated_at: r.get(10),
            },
        )
    }};
}
pub(crate) use rule;

macro_rules! EXECUTION_COLUMNS {
    () => {
        "id, rule, trigger, state, started_ms, finished_ms, total, succeeded, failed, bytes, error"
    };
}
pub(crate) use EXECUTION_COLUMNS;

/// A row of [`EXECUTION_COLUMNS`] as an execution: `Result<Execution, Error>`.
macro_rules! execution {
    ($r:expr) => {{
        let r = $r;
        use $crate::replication::sql::{column, count};
        match (
            column(r.get(2), $crate::replication::Trigger::parse, "trigger"),
            column(r.get(3), $crate::replication::ExecutionState::parse, "execution state"),
        ) {
            (Ok(trigger), Ok(state)) => Ok($crate::replication::Execution {
                id: r.get(0),
                rule: r.get(1),
                trigger,
                state,
                started_ms: r.get(4),
                finished_ms: r.get(5),
                total: count(r.get(6)),
                succeeded: count(r.get(7)),
                failed: count(r.get(8)),
                bytes: r.get::<i64, _>(9).max(0) as u64,
                error: r.get(10),
            }),
            (Err(e), _) | (_, Err(e)) => Err::<$crate::replication::Execution, Error>(e),
        }
    }};
}
pub(crate) use execution;

macro_rules! TASK_COLUMNS {
    () => {
        "id, execution, rule, op, repo, digest, tags, state, attempts, due_ms, created_ms, finished_ms, bytes,
         duration_ms, error"
    };
}
pub(crate) use TASK_COLUMNS;

/// A row of [`TASK_COLUMNS`] as a task: `Result<Task, Error>`.
macro_rules! task {
    ($r:expr) => {{
        let r = $r;
        use $crate::replication::sql::{column, count};
        match (
            column(r.get(3), $crate::replication::TaskOp::parse, "task op"),
            column(r.get(7), $crate::replication::TaskState::parse, "task state"),
        ) {
            (Ok(op), Ok(state)) => Ok($crate::replication::Task {
                id: r.get(0),
                execution: r.get(1),
                rule: r.get(2),
                op,
                repo: r.get(4),
                digest: r.get(5),
                tags: r.get::<String, _>(6).lines().map(str::to_owned).collect(),
                state,
                attempts: count(r.get(8)),
                due_ms: r.get(9),
                created_ms: r.get(10),
                finished_ms: r.get(11),
                bytes: r.get::<i64, _>(12).max(0) as u64,
                duration_ms: r.get::<Option<i64>, _>(13).map(|d| d.max(0) as u64),
                error: r.get(14),
            }),
            (Err(e), _) | (_, Err(e)) => Err::<$crate::replication::Task, Error>(e),
        }
    }};
}
pub(crate) use task;

/// A stored name of one of the store's enums read back: one this build does not know is a
/// corrupt row (or a newer node's), an internal error rather than a guess (a push read as
/// a pull would copy the wrong way).
pub(crate) fn column<T>(s: String, parse: fn(&str) -> Option<T>, what: &str) -> Result<T, Error> {
    parse(&s).ok_or_else(|| Error::internal(format!("unknown replication {what} {s:?}")))
}

/// A stored count as a `u32`.
pub(crate) fn count(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

/// The refusal to delete registry `name` while `rules` use it (empty: a rule put at the same
/// moment, named by nobody yet).
pub(crate) fn in_use(name: &str, rules: &[String]) -> Error {
    let message = if rules.is_empty() {
        format!("replication registry {name} is used by a replication rule")
    } else {
        format!("replication registry {name} is used by the replication rules {}", rules.join(", "))
    };
    Error::new(ErrorKind::Conflict)
        .with_message(message)
        .with_detail(serde_json::json!({ "registry": name, "rules": rules }))
}
