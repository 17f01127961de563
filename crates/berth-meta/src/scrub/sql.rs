//! The one SQL implementation of [`ScrubStore`](super::ScrubStore) for SQLite and
//! PostgreSQL (`scrub_store!`).

/// Implements `ScrubStore` for a struct with `writer` and `reader` pools and an
/// `async fn durable(&self)` (see `sql_store!`). The expanding module imports `sqlx::Row`.
macro_rules! scrub_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::scrub::ScrubStore for $store {
            async fn start_run(&self, node: &str) -> Result<$crate::scrub::ScrubRun, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let now = now();
                sqlx::query(
                    "UPDATE scrub_runs SET state = 'failed', finished_at = $1,
                       error = 'interrupted: its node stopped before it finished' WHERE state = 'running'",
                )
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                let row = sqlx::query(concat!(
                    "INSERT INTO scrub_runs (node, started_at, state, blobs_total)
                     VALUES ($1, $2, 'running', (SELECT COUNT(*) FROM blobs WHERE state = 'live')) RETURNING ",
                    $crate::scrub::sql::run_columns!()
                ))
                .bind(node)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok($crate::scrub::sql::run_row!(row))
            }

            async fn blobs_after(
                &self,
                last: Option<&str>,
                limit: u32,
            ) -> Result<Vec<$crate::scrub::StoredBlob>, Error> {
                let rows = sqlx::query(
                    "SELECT b.digest, b.size, b.storage_key, d.digest IS NOT NULL
                     FROM blobs b LEFT JOIN blob_damage d ON d.digest = b.digest
                     WHERE b.state = 'live' AND b.digest > $1 ORDER BY b.digest LIMIT $2",
                )
                .bind(last.unwrap_or(""))
                .bind(limit as i64)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                rows.into_iter()
                    .map(|r| {
                        Ok($crate::scrub::StoredBlob {
                            digest: digest(r.get(0))?,
                            size: r.get::<i64, _>(1) as u64,
                            key: r.get(2),
                            damaged: r.get(3),
                        })
                    })
                    .collect()
            }

            async fn record_finding(&self, run: i64, finding: &$crate::scrub::Finding) -> Result<(), Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                sqlx::query(
                    "INSERT INTO scrub_findings (run_id, digest, reason) VALUES ($1, $2, $3)
                     ON CONFLICT (run_id, digest) DO UPDATE SET reason = excluded.reason",
                )
                .bind(run)
                .bind(&finding.digest)
                .bind(&finding.reason)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                if $crate::scrub::is_damage(&finding.reason) {
                    sqlx::query(
                        "INSERT INTO blob_damage (digest, reason, found_at, run_id) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (digest) DO UPDATE SET reason = excluded.reason, found_at = excluded.found_at,
                                                            run_id = excluded.run_id",
                    )
                    .bind(&finding.digest)
                    .bind(&finding.reason)
                    .bind(now())
                    .bind(run)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                tx.commit().await.map_err(db_err)?;
                self.durable().await
            }

            async fn clear_damage(&self, digest: &Digest) -> Result<(), Error> {
                sqlx::query("DELETE FROM blob_damage WHERE digest = $1")
                    .bind(digest.as_str())
                    .execute(&self.writer)
                    .await
                    .map_err(db_err)?;
                self.durable().await
            }

            async fn update_run(&self, run: &$crate::scrub::ScrubRun) -> Result<(), Error> {
                sqlx::query(
                    "UPDATE scrub_runs SET finished_at = $1, state = $2, checked = $3, bytes = $4, damaged = $5,
                       error = $6 WHERE id = $7",
                )
                .bind(run.finished_at)
                .bind(&run.state)
                .bind(run.checked as i64)
                .bind(run.bytes as i64)
                .bind(run.damaged as i64)
                .bind(run.error.as_deref())
                .bind(run.id)
                .execute(&self.writer)
                .await
                .map_err(db_err)?;
                Ok(())
            }

            async fn runs(&self, limit: u32) -> Result<Vec<$crate::scrub::ScrubRun>, Error> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    $crate::scrub::sql::run_columns!(),
                    " FROM scrub_runs ORDER BY id DESC LIMIT $1"
                ))
                .bind(limit as i64)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(rows.into_iter().map(|r| $crate::scrub::sql::run_row!(r)).collect())
            }

            async fn run(&self, id: i64) -> Result<Option<$crate::scrub::ScrubRun>, Error> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    $crate::scrub::sql::run_columns!(),
                    " FROM scrub_runs WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(row.map(|r| $crate::scrub::sql::run_row!(r)))
            }

            async fn findings(
                &self,
                id: i64,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<$crate::scrub::Finding>, Error> {
                let rows = sqlx::query(
                    "SELECT digest, reason FROM scrub_findings WHERE run_id = $1 AND digest > $2 ORDER BY digest LIMIT $3",
                )
                .bind(id)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(rows.into_iter().map(|r| $crate::scrub::Finding { digest: r.get(0), reason: r.get(1) }).collect())
            }
        }
    };
}

/// The scrub's part in a registry operation's transaction (`$db`'s), as an associated
/// function of the store for `sql_store!` to call.
macro_rules! scrub_checks {
    ($store:ty, $db:ty) => {
        impl $store {
            /// In `link_blob`, before the blob is recorded: a blob the scrub found damaged
            /// (and whose bad bytes it removed) takes the bytes just committed under `key`,
            /// and is live again. `link_blob` then returns `key`, so its caller keeps them.
            async fn repair_damaged(
                tx: &mut sqlx::Transaction<'_, $db>,
                digest: &Digest,
                key: &str,
            ) -> Result<(), Error> {
                let repaired = sqlx::query("DELETE FROM blob_damage WHERE digest = $1")
                    .bind(digest.as_str())
                    .execute(&mut **tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected()
                    > 0;
                if repaired {
                    sqlx::query("UPDATE blobs SET storage_key = $1 WHERE digest = $2")
                        .bind(key)
                        .bind(digest.as_str())
                        .execute(&mut **tx)
                        .await
                        .map_err(db_err)?;
                }
                Ok(())
            }
        }
    };
}

/// The columns of a run, in the order `run_row!` reads them.
macro_rules! run_columns {
    () => {
        "id, node, started_at, finished_at, state, blobs_total, checked, bytes, damaged, error"
    };
}

macro_rules! run_row {
    ($r:expr) => {
        $crate::scrub::ScrubRun {
            id: $r.get(0),
            node: $r.get(1),
            started_at: $r.get(2),
            finished_at: $r.get(3),
            state: $r.get(4),
            blobs_total: $r.get::<i64, _>(5) as u64,
            checked: $r.get::<i64, _>(6) as u64,
            bytes: $r.get::<i64, _>(7) as u64,
            damaged: $r.get::<i64, _>(8) as u64,
            error: $r.get(9),
        }
    };
}

pub(crate) use {run_columns, run_row, scrub_checks, scrub_store};
