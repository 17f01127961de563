//! The one SQL implementation of [`AuditStore`](super::AuditStore), instantiated for SQLite
//! and for PostgreSQL by [`audit_store!`].
//!
//! A batch is appended by multi-row inserts in one transaction, then made durable once
//! (the group commit of the server's writer task ends here). Queries are built from the
//! filters that are set, with placeholders only, so each uses the index of its filter.

use super::AuditQuery;

/// Events per `INSERT` statement, 9 parameters each. Small on purpose: sqlx binds each
/// SQLite parameter by looking its name up, which SQLite does by a scan of the
/// statement's parameters, so a statement's binding costs the square of its parameters
/// (800 of them took an eighth of the server's CPU under a pull load).
pub(crate) const ROWS_PER_INSERT: usize = 16;
/// Columns of an inserted event.
const COLUMNS: usize = 9;

/// An append's error: `BAD_REQUEST` when the database refused the events' values (no
/// retry of the batch can succeed, see `AuditStore::append`), else as any write's.
pub(crate) fn refused(e: sqlx::Error) -> berth_core::Error {
    if crate::db_error::refused_content(&e) {
        return berth_core::Error {
            source: Some(format!("database: {e}")),
            ..berth_core::Error::new(berth_core::ErrorKind::BadRequest)
                .with_message("the database refused a value of an audit event")
        };
    }
    crate::db_error::db_err(e)
}

/// Implements `AuditStore` for a struct with `writer` and `reader` pools and an
/// `async fn durable(&self)` (see `sql_store!`). The expanding module imports `sqlx::Row`.
macro_rules! audit_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::audit::AuditStore for $store {
            async fn append(&self, events: &[$crate::audit::AuditEvent]) -> Result<(), berth_core::Error> {
                if events.is_empty() {
                    return Ok(());
                }
                let refused = $crate::audit::sql::refused;
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                for chunk in events.chunks($crate::audit::sql::ROWS_PER_INSERT) {
                    // Only placeholders are formatted into the statement.
                    let sql = $crate::audit::sql::insert_sql(chunk.len());
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for e in chunk {
                        query = query
                            .bind(e.at_ms)
                            .bind(e.actor.as_deref())
                            .bind(&e.address)
                            .bind(&e.operation)
                            .bind(e.project.as_deref())
                            .bind(e.resource.as_deref())
                            .bind(&e.outcome)
                            .bind(e.detail.as_deref())
                            .bind(i64::from(e.count));
                    }
                    query.execute(&mut *tx).await.map_err(refused)?;
                }
                tx.commit().await.map_err(refused)?;
                self.durable().await
            }

            async fn query(
                &self,
                q: &$crate::audit::AuditQuery,
            ) -> Result<Vec<$crate::audit::AuditRecord>, berth_core::Error> {
                use $crate::audit::sql::Param;
                let (sql, params) = $crate::audit::sql::select(q);
                // Only placeholders are formatted into the statement.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for p in params {
                    query = match p {
                        Param::Text(s) => query.bind(s),
                        Param::Int(i) => query.bind(i),
                    };
                }
                let rows = query.fetch_all(&self.reader).await.map_err(db_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::audit::AuditRecord {
                        id: r.get(0),
                        event: $crate::audit::AuditEvent {
                            at_ms: r.get(1),
                            actor: r.get(2),
                            address: r.get(3),
                            operation: r.get(4),
                            project: r.get(5),
                            resource: r.get(6),
                            outcome: r.get(7),
                            detail: r.get(8),
                            count: u32::try_from(r.get::<i64, _>(9)).unwrap_or(u32::MAX),
                        },
                    })
                    .collect())
            }

            async fn prune(&self, before_ms: i64, limit: u32) -> Result<u64, berth_core::Error> {
                // One statement; the oldest first (by the time index, ties by id).
                let done = sqlx::query(
                    "DELETE FROM audit_log WHERE id IN
                       (SELECT id FROM audit_log WHERE at_ms < $1 ORDER BY at_ms, id LIMIT $2)",
                )
                .bind(before_ms)
                .bind(limit as i64)
                .execute(&self.writer)
                .await
                .map_err(db_err)?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use audit_store;

/// `INSERT … VALUES (…), (…)` for `rows` events.
pub(crate) fn insert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let n = i * COLUMNS;
            let p: Vec<String> = (1..=COLUMNS).map(|k| format!("${}", n + k)).collect();
            format!("({})", p.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO audit_log (at_ms, actor, address, operation, project, resource, outcome, detail, count) \
         VALUES {}",
        values.join(", ")
    )
}

/// A bound parameter of a query built at run time.
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// The `SELECT` for `q` and its parameters, in placeholder order.
pub(crate) fn select(q: &AuditQuery) -> (String, Vec<Param>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    let mut condition = |sql: &str, p: Param| {
        params.push(p);
        conditions.push(sql.replace('?', &format!("${}", params.len())));
    };
    if let Some(actor) = &q.actor {
        condition("actor = ?", Param::Text(actor.clone()));
    }
    if let Some(project) = &q.project {
        condition("project = ?", Param::Text(project.clone()));
    }
    match q.operation.as_deref() {
        // A prefix: the range of names that start with it (bytewise, '.' + 1 is '/').
        Some(prefix) if prefix.ends_with('.') => {
            let (from, to) = crate::identity::sql::prefix_range(prefix);
            condition("operation >= ?", Param::Text(from));
            condition("operation < ?", Param::Text(to));
        }
        Some(operation) => condition("operation = ?", Param::Text(operation.to_owned())),
        None => {}
    }
    if let Some(since) = q.since_ms {
        condition("at_ms >= ?", Param::Int(since));
    }
    if let Some(until) = q.until_ms {
        condition("at_ms < ?", Param::Int(until));
    }
    if let Some(before) = q.before_id {
        condition("id < ?", Param::Int(before));
    }
    let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    params.push(Param::Int(q.limit as i64));
    let sql = format!(
        "SELECT id, at_ms, actor, address, operation, project, resource, outcome, detail, count FROM audit_log {filter}
         ORDER BY id DESC LIMIT ${}",
        params.len()
    );
    (sql, params)
}
