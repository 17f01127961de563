//! The one SQL implementation of [`WebhookStore`](super::WebhookStore) (`webhook_store!`),
//! for SQLite and PostgreSQL alike.

/// Implements `WebhookStore` for a struct with `writer` and `reader` pools and an
/// `async fn durable(&self)` (see `sql_store!`). The expanding module imports `sqlx::Row`.
macro_rules! webhook_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::webhooks::WebhookStore for $store {
            async fn all_webhooks(&self) -> Result<Vec<$crate::webhooks::Webhook>, Error> {
                let rows = sqlx::query(concat!($crate::webhooks::sql::SELECT_WEBHOOK!(), " ORDER BY project, name"))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(rows.iter().map(|r| $crate::webhooks::sql::webhook!(r)).collect())
            }

            async fn webhooks(&self, project: &str) -> Result<Vec<$crate::webhooks::Webhook>, Error> {
                let rows = sqlx::query(concat!(
                    $crate::webhooks::sql::SELECT_WEBHOOK!(),
                    " WHERE project = $1 ORDER BY name"
                ))
                .bind(project)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(rows.iter().map(|r| $crate::webhooks::sql::webhook!(r)).collect())
            }

            async fn put_webhook(
                &self,
                w: &$crate::webhooks::Webhook,
                create: bool,
            ) -> Result<$crate::webhooks::Webhook, Error> {
                use $crate::db_error::{unknown, write_err};
                let now = now();
                let events = $crate::webhooks::sql::join_events(&w.events);
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let written = if create {
                    sqlx::query(
                        "INSERT INTO webhooks (project, name, url, events, format, sealed_secret, sealed_header,
                           enabled, failures, disable_after, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $10)
                         RETURNING created_at",
                    )
                } else {
                    sqlx::query(
                        "UPDATE webhooks SET url = $3, events = $4, format = $5, sealed_secret = $6,
                           sealed_header = $7, enabled = $8, failures = 0, disable_after = $9, updated_at = $10
                         WHERE project = $1 AND name = $2 RETURNING created_at",
                    )
                }
                .bind(&w.project)
                .bind(&w.name)
                .bind(&w.url)
                .bind(&events)
                .bind(&w.format)
                .bind(&w.sealed_secret)
                .bind(&w.sealed_header)
                .bind(w.enabled)
                .bind(i64::from(w.disable_after))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| match e.as_database_error() {
                    Some(d) if d.is_foreign_key_violation() => unknown("project", &w.project),
                    _ => write_err(e, "webhook", &w.name),
                })?;
                let Some(row) = written else {
                    return Err(unknown("webhook", &w.name));
                };
                tx.commit().await.map_err(|e| write_err(e, "webhook", &w.name))?;
                self.durable().await?;
                Ok($crate::webhooks::Webhook { created_at: row.get(0), updated_at: now, failures: 0, ..w.clone() })
            }

            async fn delete_webhook(&self, project: &str, name: &str) -> Result<bool, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // Its deliveries first (the log goes with it), then the webhook.
                sqlx::query("DELETE FROM webhook_deliveries WHERE project = $1 AND webhook = $2")
                    .bind(project)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let done = sqlx::query("DELETE FROM webhooks WHERE project = $1 AND name = $2")
                    .bind(project)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected();
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(done > 0)
            }

            async fn claim_deliveries(
                &self,
                now_ms: i64,
                until_ms: i64,
                limit: u32,
                per_webhook: u32,
                busy: &[((String, String), u32)],
            ) -> Result<Vec<$crate::webhooks::Delivery>, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // The first `per_webhook` due of each enabled webhook: one webhook's backlog
                // never hides another's.
                let rows = sqlx::query(concat!(
                    "SELECT ", $crate::webhooks::sql::DELIVERY_COLUMNS!(), " FROM (
                       SELECT d.*, ROW_NUMBER() OVER (PARTITION BY d.project, d.webhook ORDER BY d.due_ms, d.id) AS rn
                       FROM webhook_deliveries d JOIN webhooks w ON w.project = d.project AND w.name = d.webhook
                       WHERE d.state = 'pending' AND d.due_ms <= $1 AND w.enabled
                     ) x WHERE rn <= $2 ORDER BY due_ms, id"
                ))
                .bind(now_ms)
                .bind(i64::from(per_webhook))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
                let mut taken: std::collections::HashMap<(String, String), u32> = busy.iter().cloned().collect();
                let mut claimed = Vec::new();
                for r in &rows {
                    let d = $crate::webhooks::sql::delivery!(r);
                    let n = taken.entry((d.project.clone(), d.webhook.clone())).or_default();
                    if *n >= per_webhook || claimed.len() >= limit as usize {
                        continue;
                    }
                    *n += 1;
                    sqlx::query("UPDATE webhook_deliveries SET due_ms = $2 WHERE id = $1")
                        .bind(d.id)
                        .bind(until_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    claimed.push(d);
                }
                tx.commit().await.map_err(db_err)?;
                Ok(claimed)
            }

            async fn record_attempt(&self, a: &$crate::webhooks::Attempt) -> Result<bool, Error> {
                let state = match (&a.error, a.retry_at_ms) {
                    (None, _) => "delivered",
                    (Some(_), Some(_)) => "pending",
                    (Some(_), None) => "failed",
                };
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let hook = sqlx::query(
                    "UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, due_ms = COALESCE($3, due_ms),
                       last_ms = $4, status_code = $5, duration_ms = $6, error = $7
                     WHERE id = $1 RETURNING project, webhook",
                )
                .bind(a.delivery)
                .bind(state)
                .bind(a.retry_at_ms)
                .bind(a.at_ms)
                .bind(a.status_code.map(i64::from))
                .bind(a.duration_ms as i64)
                .bind(a.error.as_deref())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let Some(hook) = hook else {
                    // Deleted with its webhook meanwhile.
                    return Ok(false);
                };
                let (project, name): (String, String) = (hook.get(0), hook.get(1));
                let disabled = if a.error.is_none() {
                    sqlx::query("UPDATE webhooks SET failures = 0 WHERE project = $1 AND name = $2 AND failures <> 0")
                        .bind(&project)
                        .bind(&name)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    false
                } else {
                    let row = sqlx::query(concat!(
                        "SELECT enabled, failures, disable_after FROM webhooks WHERE project = $1 AND name = $2",
                        row_lock!(update)
                    ))
                    .bind(&project)
                    .bind(&name)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?;
                    let (enabled, failures, limit): (bool, i64, i64) = (row.get(0), row.get::<i64, _>(1) + 1, row.get(2));
                    // Disabled by the attempt that reaches the limit (0: never).
                    let disable = enabled && limit > 0 && failures >= limit;
                    sqlx::query("UPDATE webhooks SET failures = $3, enabled = $4 WHERE project = $1 AND name = $2")
                        .bind(&project)
                        .bind(&name)
                        .bind(failures)
                        .bind(enabled && !disable)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    disable
                };
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(disabled)
            }

            async fn deliveries(
                &self,
                project: &str,
                webhook: &str,
                before: Option<i64>,
                limit: u32,
            ) -> Result<Vec<$crate::webhooks::Delivery>, Error> {
                let rows = sqlx::query(concat!(
                    "SELECT ", $crate::webhooks::sql::DELIVERY_COLUMNS!(),
                    " FROM webhook_deliveries WHERE project = $1 AND webhook = $2 AND ($3 IS NULL OR id < $3)
                     ORDER BY id DESC LIMIT $4"
                ))
                .bind(project)
                .bind(webhook)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(rows.iter().map(|r| $crate::webhooks::sql::delivery!(r)).collect())
            }

            async fn prune_deliveries(&self, before_ms: i64, limit: u32) -> Result<u64, Error> {
                let done = sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE id IN
                       (SELECT id FROM webhook_deliveries WHERE created_ms < $1 AND state <> 'pending'
                        ORDER BY created_ms LIMIT $2)",
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
pub(crate) use webhook_store;

use crate::outbox::EventKind;

macro_rules! SELECT_WEBHOOK {
    () => {
        "SELECT project, name, url, events, format, sealed_secret, sealed_header, enabled, failures, disable_after,
                created_at, updated_at FROM webhooks"
    };
}
pub(crate) use SELECT_WEBHOOK;

/// A row of [`SELECT_WEBHOOK`] as a webhook.
macro_rules! webhook {
    ($r:expr) => {{
        let r = $r;
        $crate::webhooks::Webhook {
            project: r.get(0),
            name: r.get(1),
            url: r.get(2),
            events: $crate::webhooks::sql::split_events(&r.get::<String, _>(3)),
            format: r.get(4),
            sealed_secret: r.get(5),
            sealed_header: r.get(6),
            enabled: r.get(7),
            failures: r.get::<i64, _>(8).clamp(0, i64::from(u32::MAX)) as u32,
            disable_after: r.get::<i64, _>(9).clamp(0, i64::from(u32::MAX)) as u32,
            created_at: r.get(10),
            updated_at: r.get(11),
        }
    }};
}
pub(crate) use webhook;

macro_rules! DELIVERY_COLUMNS {
    () => {
        "id, project, webhook, event_id, kind, body, state, attempts, due_ms, created_ms, last_ms, status_code,
         duration_ms, error"
    };
}
pub(crate) use DELIVERY_COLUMNS;

/// A row of [`DELIVERY_COLUMNS`] as a delivery.
macro_rules! delivery {
    ($r:expr) => {{
        let r = $r;
        $crate::webhooks::Delivery {
            id: r.get(0),
            project: r.get(1),
            webhook: r.get(2),
            event_id: r.get(3),
            kind: r.get(4),
            body: r.get(5),
            state: $crate::webhooks::DeliveryState::parse(&r.get::<String, _>(6)),
            attempts: r.get::<i64, _>(7).clamp(0, i64::from(u32::MAX)) as u32,
            due_ms: r.get(8),
            created_ms: r.get(9),
            last_ms: r.get(10),
            status_code: r.get::<Option<i64>, _>(11).and_then(|c| u16::try_from(c).ok()),
            duration_ms: r.get::<Option<i64>, _>(12).map(|d| d.max(0) as u64),
            error: r.get(13),
        }
    }};
}
pub(crate) use delivery;

pub(crate) fn join_events(events: &[EventKind]) -> String {
    events.iter().map(|e| e.as_str()).collect::<Vec<_>>().join("\n")
}

/// Kinds this build does not know (a newer node's) are left out.
pub(crate) fn split_events(s: &str) -> Vec<EventKind> {
    s.lines().filter_map(EventKind::parse).collect()
}
