//! The one SQL implementation of [`OutboxStore`](super::OutboxStore) (`outbox_store!`), and
//! [`outbox_event!`], which the registry's own writes call inside their transactions.

/// Writes one event in the transaction `$tx` (an expression giving `&mut` of a connection):
/// when (Unix milliseconds), `$kind` an [`EventKind`](crate::outbox::EventKind), then the
/// repository, digest,
/// media type (both `Option<&str>`), tags (`&[&str]`-like, joined by lines), size
/// (`Option<i64>`) and detail (`Option<&str>`). Evaluates to `Result<(), Error>`.
macro_rules! outbox_event {
    ($tx:expr, $at_ms:expr, $kind:expr, $repo:expr, $digest:expr, $media_type:expr, $tags:expr, $size:expr, $detail:expr) => {
        if !$crate::outbox::on() {
            Ok(())
        } else {
            sqlx::query(
                "INSERT INTO outbox (at_ms, kind, repo, digest, media_type, tags, size, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind($at_ms)
            .bind($kind.as_str())
            .bind($repo)
            .bind($digest)
            .bind($media_type)
            .bind($tags)
            .bind($size)
            .bind($detail)
            .execute($tx)
            .await
            .map(|_| ())
            .map_err($crate::db_error::db_err)
        }
    };
}
pub(crate) use outbox_event;

/// Implements `OutboxStore` for a struct with `writer` and `reader` pools and an
/// `async fn durable(&self)` (see `sql_store!`). The expanding module imports `sqlx::Row`.
macro_rules! outbox_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::outbox::OutboxStore for $store {
            async fn append(&self, events: &[$crate::outbox::NewEvent]) -> Result<(), Error> {
                if events.is_empty() {
                    return Ok(());
                }
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                for e in events {
                    let size = e.size.map(|s| s as i64);
                    $crate::outbox::sql::outbox_event!(
                        &mut *tx,
                        e.at_ms,
                        e.kind,
                        e.repo.as_str(),
                        e.digest.as_deref(),
                        e.media_type.as_deref(),
                        e.tags.join("\n"),
                        size,
                        e.detail.as_deref()
                    )?;
                }
                tx.commit().await.map_err(db_err)?;
                self.durable().await
            }

            async fn pending(&self, limit: u32) -> Result<Vec<$crate::outbox::OutboxEvent>, Error> {
                let rows = sqlx::query(
                    "SELECT id, at_ms, kind, repo, digest, media_type, tags, size, detail
                     FROM outbox ORDER BY id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.writer)
                .await
                .map_err(db_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        let kind: String = r.get(2);
                        let tags: String = r.get(6);
                        let size: Option<i64> = r.get(7);
                        $crate::outbox::OutboxEvent {
                            id: r.get(0),
                            event: $crate::outbox::EventKind::parse(&kind).map(|kind| $crate::outbox::NewEvent {
                                kind,
                                at_ms: r.get(1),
                                repo: r.get(3),
                                digest: r.get(4),
                                media_type: r.get(5),
                                tags: tags.lines().map(str::to_owned).collect(),
                                size: size.map(|s| s as u64),
                                detail: r.get(8),
                            }),
                        }
                    })
                    .collect())
            }

            async fn fan_out(
                &self,
                ids: &[i64],
                deliveries: &[$crate::outbox::NewDelivery],
                tasks: &[$crate::replication::NewTask],
            ) -> Result<bool, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                for id in ids {
                    let gone = sqlx::query("DELETE FROM outbox WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .rows_affected();
                    if gone != 1 {
                        // Fanned out by another dispatcher already: its work stands.
                        return Ok(false);
                    }
                }
                for d in deliveries {
                    // Not for a webhook deleted since the dispatcher read them.
                    sqlx::query(
                        "INSERT INTO webhook_deliveries
                           (project, webhook, event_id, kind, body, state, attempts, due_ms, created_ms)
                         SELECT $1, $2, $3, $4, $5, 'pending', 0, $6, $6
                         WHERE EXISTS (SELECT 1 FROM webhooks WHERE project = $1 AND name = $2)",
                    )
                    .bind(&d.project)
                    .bind(&d.webhook)
                    .bind(&d.event_id)
                    .bind(&d.kind)
                    .bind(&d.body)
                    .bind(d.created_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                // Event-triggered replication: an execution per rule, as `start_execution`
                // makes one, its tasks in their order (the order they are claimed in); the
                // rules in the order their first task came.
                let mut rules: Vec<&str> = Vec::new();
                for t in tasks {
                    if !rules.contains(&t.rule.as_str()) {
                        rules.push(&t.rule);
                    }
                }
                let now_ms = $crate::now_ms();
                for rule in rules {
                    let of_rule: Vec<&$crate::replication::NewTask> = tasks.iter().filter(|t| t.rule == rule).collect();
                    // `None`, nothing written, for a rule deleted since the dispatcher read them.
                    $crate::replication::sql::insert_execution!(
                        tx,
                        rule,
                        $crate::replication::Trigger::Event,
                        of_rule,
                        now_ms
                    )?;
                }
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(true)
            }
        }
    };
}
pub(crate) use outbox_store;
