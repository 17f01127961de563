//! The one SQL implementation of [`GcStore`](super::GcStore), instantiated for SQLite and
//! for PostgreSQL by [`gc_store!`], and the `queue_*` statements the registry's writes run
//! in their own transactions to queue what they may have left unreferenced.
//!
//! The expanding module defines `row_lock!(share)` / `row_lock!(update)` (see `sql_store!`).

/// Queues blob `$digest` now (an upsert: queueing again restarts its grace). An expression
/// of type `Result<(), Error>`.
macro_rules! queue_blob {
    ($tx:expr, $digest:expr, $reason:expr) => {
        sqlx::query(
            "INSERT INTO gc_blob_review (digest, queued_at, reason) VALUES ($1, $2, $3)
             ON CONFLICT (digest) DO UPDATE SET queued_at = excluded.queued_at, reason = excluded.reason",
        )
        .bind($digest)
        .bind($crate::gc::review_now())
        .bind($reason)
        .execute($tx)
        .await
        .map(|_| ())
        .map_err($crate::db_error::db_err)
    };
}

/// Queues manifest `$digest` of `$repo` now.
macro_rules! queue_manifest {
    ($tx:expr, $repo:expr, $digest:expr, $reason:expr) => {
        sqlx::query(
            "INSERT INTO gc_manifest_review (repo, digest, queued_at, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo, digest) DO UPDATE SET queued_at = excluded.queued_at, reason = excluded.reason",
        )
        .bind($repo)
        .bind($digest)
        .bind($crate::gc::review_now())
        .bind($reason)
        .execute($tx)
        .await
        .map(|_| ())
        .map_err($crate::db_error::db_err)
    };
}

/// Queues what manifest `$digest` of `$repo` references (blobs, child manifests) and its
/// referrers: run before it is deleted. Rows are queued (locked) in digest order, so two
/// such transactions sharing candidates never wait for each other in a cycle.
macro_rules! queue_children {
    ($tx:expr, $repo:expr, $digest:expr) => {
        async {
            for sql in [
                "INSERT INTO gc_blob_review (digest, queued_at, reason)
                 SELECT child_digest, $3, 'manifest' FROM manifest_refs
                 WHERE repo = $1 AND manifest_digest = $2 AND kind = 'blob' ORDER BY child_digest
                 ON CONFLICT (digest) DO UPDATE SET queued_at = excluded.queued_at, reason = excluded.reason",
                "INSERT INTO gc_manifest_review (repo, digest, queued_at, reason)
                 SELECT repo, child_digest, $3, 'parent' FROM manifest_refs
                 WHERE repo = $1 AND manifest_digest = $2 AND kind = 'manifest' ORDER BY child_digest
                 ON CONFLICT (repo, digest) DO UPDATE SET queued_at = excluded.queued_at, reason = excluded.reason",
                "INSERT INTO gc_manifest_review (repo, digest, queued_at, reason)
                 SELECT repo, digest, $3, 'subject' FROM manifests WHERE repo = $1 AND subject = $2 ORDER BY digest
                 ON CONFLICT (repo, digest) DO UPDATE SET queued_at = excluded.queued_at, reason = excluded.reason",
            ] {
                sqlx::query(sql)
                    .bind($repo)
                    .bind($digest)
                    .bind($crate::gc::review_now())
                    .execute(&mut *$tx)
                    .await
                    .map_err($crate::db_error::db_err)?;
            }
            Ok::<(), berth_core::Error>(())
        }
        .await
    };
}

/// Deletes manifest `$digest` of `$repo` (its tags and references go with it: ON DELETE
/// CASCADE) and its queue entry, after queueing what it referenced and its referrers.
/// Evaluates to the number of manifests deleted (0 or 1).
macro_rules! delete_manifest {
    ($tx:expr, $repo:expr, $digest:expr) => {
        async {
            $crate::gc::sql::queue_children!($tx, $repo, $digest)?;
            let mut deleted = 0;
            for sql in [
                "DELETE FROM manifests WHERE repo = $1 AND digest = $2",
                "DELETE FROM gc_manifest_review WHERE repo = $1 AND digest = $2",
            ] {
                let done = sqlx::query(sql)
                    .bind($repo)
                    .bind($digest)
                    .execute(&mut *$tx)
                    .await
                    .map_err($crate::db_error::db_err)?;
                deleted = deleted.max(done.rows_affected());
            }
            Ok::<u64, berth_core::Error>(deleted)
        }
        .await
    };
}

/// The condition that queue entry time `$at` is due by the cutoff `$before` (both Unix
/// milliseconds). A node of a version before milliseconds (issue 17) queues in seconds,
/// below 10^11 (1973 in milliseconds): read as seconds, so that during a rolling upgrade
/// its entries are neither due at once nor never. The first comparison keeps the
/// `queued_at` index usable.
macro_rules! due_by {
    ($at:literal, $before:literal) => {
        concat!("(", $at, " <= ", $before, " AND (", $at, " >= 100000000000 OR ", $at, " * 1000 <= ", $before, "))")
    };
}

/// The condition under which manifest `m` is garbage: untagged, unreferenced, and then a
/// referrer (a manifest with a `subject`) when its subject is gone, any other when untagged
/// manifests go (the boolean parameter `$untagged`). A referrer lives as long as its
/// subject, tagged or not: signatures and SBOMs are untagged by design, and the subject's
/// removal queues them (`queue_children`).
macro_rules! manifest_is_garbage {
    ($untagged:literal) => {
        concat!(
            " NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = m.repo AND t.manifest_digest = m.digest)
              AND NOT EXISTS (SELECT 1 FROM manifest_refs x
                              WHERE x.repo = m.repo AND x.child_digest = m.digest AND x.kind = 'manifest')
              AND CASE WHEN m.subject IS NULL THEN ",
            $untagged,
            " ELSE NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repo = m.repo AND s.digest = m.subject) END "
        )
    };
}

/// Implements `GcStore` for a struct like `sql_store!`'s. The expanding module imports
/// `sqlx::Row` and defines `row_lock!`.
macro_rules! gc_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::gc::GcStore for $store {
            async fn due_count(&self, before: i64) -> Result<u64, berth_core::Error> {
                let n: i64 = sqlx::query(
                    concat!(
                        "SELECT (SELECT COUNT(*) FROM gc_blob_review WHERE ",
                        $crate::gc::sql::due_by!("queued_at", "$1"),
                        ") + (SELECT COUNT(*) FROM gc_manifest_review WHERE ",
                        $crate::gc::sql::due_by!("queued_at", "$1"),
                        ")"
                    ),
                )
                .bind(before)
                .fetch_one(&self.reader)
                .await
                .map_err($crate::db_error::db_err)?
                .get(0);
                Ok(n as u64)
            }

            async fn garbage_blobs(
                &self,
                before: i64,
                limit: u32,
            ) -> Result<Vec<$crate::gc::GarbageBlob>, berth_core::Error> {
                let rows = sqlx::query(concat!(
                    "SELECT r.digest, b.storage_key, b.size FROM gc_blob_review r JOIN blobs b ON b.digest = r.digest
                     WHERE ",
                    $crate::gc::sql::due_by!("r.queued_at", "$1"),
                    " AND b.state = 'live'
                       AND NOT EXISTS (SELECT 1 FROM manifest_refs m WHERE m.child_digest = r.digest AND m.kind = 'blob')
                     ORDER BY r.digest LIMIT $2",
                ))
                .bind(before)
                .bind(limit as i64)
                .fetch_all(&self.reader)
                .await
                .map_err($crate::db_error::db_err)?;
                rows.into_iter()
                    .map(|r| {
                        Ok($crate::gc::GarbageBlob {
                            digest: $crate::column::digest(r.get(0))?,
                            key: r.get(1),
                            size: r.get::<i64, _>(2) as u64,
                        })
                    })
                    .collect()
            }

            async fn garbage_manifests(
                &self,
                before: i64,
                delete_untagged: bool,
                limit: u32,
            ) -> Result<Vec<$crate::gc::GarbageManifest>, berth_core::Error> {
                let rows = sqlx::query(concat!(
                    "SELECT m.repo, m.digest, m.size FROM gc_manifest_review r
                     JOIN manifests m ON m.repo = r.repo AND m.digest = r.digest
                     WHERE ",
                    $crate::gc::sql::due_by!("r.queued_at", "$1"),
                    " AND",
                    $crate::gc::sql::manifest_is_garbage!("$3"),
                    "ORDER BY m.repo, m.digest LIMIT $2"
                ))
                .bind(before)
                .bind(limit as i64)
                .bind(delete_untagged)
                .fetch_all(&self.reader)
                .await
                .map_err($crate::db_error::db_err)?;
                rows.into_iter()
                    .map(|r| {
                        Ok($crate::gc::GarbageManifest {
                            repo: $crate::column::repo_name(r.get(0))?,
                            digest: $crate::column::digest(r.get(1))?,
                            size: r.get::<i64, _>(2) as u64,
                        })
                    })
                    .collect()
            }

            async fn remove_manifest(
                &self,
                repo: &RepoName,
                digest: &Digest,
                delete_untagged: bool,
            ) -> Result<bool, berth_core::Error> {
                use $crate::db_error::db_err;
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // Locked first: a concurrent put naming it finished before the check below.
                let locked = sqlx::query(concat!("SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2", row_lock!(update)))
                    .bind(repo.as_str())
                    .bind(digest.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if locked.is_none() {
                    sqlx::query("DELETE FROM gc_manifest_review WHERE repo = $1 AND digest = $2")
                        .bind(repo.as_str())
                        .bind(digest.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    return Ok(false);
                }
                let garbage = sqlx::query(concat!(
                    "SELECT 1 FROM manifests m WHERE m.repo = $1 AND m.digest = $2
                       AND EXISTS (SELECT 1 FROM gc_manifest_review r WHERE r.repo = m.repo AND r.digest = m.digest) AND",
                    $crate::gc::sql::manifest_is_garbage!("$3")
                ))
                .bind(repo.as_str())
                .bind(digest.as_str())
                .bind(delete_untagged)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .is_some();
                if !garbage {
                    return Ok(false);
                }
                $crate::gc::sql::delete_manifest!(tx, repo.as_str(), digest.as_str())?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(true)
            }

            async fn doom_blobs(
                &self,
                digests: &[Digest],
                before: i64,
            ) -> Result<Vec<Option<BlobInfo>>, berth_core::Error> {
                use $crate::db_error::db_err;
                let mut doomed = Vec::with_capacity(digests.len());
                // One transaction each, as a put takes its blobs' locks one by one (in its
                // manifest's order): locks held across the batch could deadlock with it.
                for digest in digests {
                    let mut tx = self.writer.begin().await.map_err(db_err)?;
                    // Locked first: a concurrent put naming it, or a link reviving its
                    // grace, finished before the check below (or waits for this one).
                    sqlx::query(concat!("SELECT 1 FROM blobs WHERE digest = $1", row_lock!(update)))
                        .bind(digest.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let row = sqlx::query(concat!(
                        "SELECT b.storage_key, b.size FROM blobs b WHERE b.digest = $1 AND b.state = 'live'
                           AND EXISTS (SELECT 1 FROM gc_blob_review r WHERE r.digest = b.digest AND ",
                        $crate::gc::sql::due_by!("r.queued_at", "$2"),
                        ")
                           AND NOT EXISTS (SELECT 1 FROM manifest_refs m WHERE m.child_digest = b.digest AND m.kind = 'blob')",
                    ))
                    .bind(digest.as_str())
                    .bind(before)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                    let Some(row) = row else {
                        doomed.push(None);
                        continue;
                    };
                    for sql in [
                        "UPDATE blobs SET state = 'deleting' WHERE digest = $1",
                        // Plain deletes: triggers on `repo_blobs` (quotas) see each link go.
                        "DELETE FROM repo_blobs WHERE digest = $1",
                        "DELETE FROM gc_blob_review WHERE digest = $1",
                    ] {
                        sqlx::query(sql).bind(digest.as_str()).execute(&mut *tx).await.map_err(db_err)?;
                    }
                    tx.commit().await.map_err(db_err)?;
                    doomed.push(Some(BlobInfo { key: row.get(0), size: row.get::<i64, _>(1) as u64 }));
                }
                // Durable before any of their bytes go.
                if doomed.iter().any(Option::is_some) {
                    self.durable().await?;
                }
                Ok(doomed)
            }

            async fn doomed_blobs(&self, limit: u32) -> Result<Vec<$crate::gc::GarbageBlob>, berth_core::Error> {
                let rows = sqlx::query(
                    "SELECT digest, storage_key, size FROM blobs WHERE state = 'deleting' AND size >= 0
                     ORDER BY digest LIMIT $1",
                )
                .bind(limit as i64)
                .fetch_all(&self.writer)
                .await
                .map_err($crate::db_error::db_err)?;
                rows.into_iter()
                    .map(|r| {
                        Ok($crate::gc::GarbageBlob {
                            digest: $crate::column::digest(r.get(0))?,
                            key: r.get(1),
                            size: r.get::<i64, _>(2) as u64,
                        })
                    })
                    .collect()
            }

            async fn forget_blobs(
                &self,
                blobs: &[$crate::gc::GarbageBlob],
                tombstone: bool,
            ) -> Result<Vec<bool>, berth_core::Error> {
                // A tombstone is a `deleting` record of size -1; it goes an hour later.
                let now = $crate::now();
                let mut tx = self.writer.begin().await.map_err($crate::db_error::db_err)?;
                let mut forgotten = Vec::with_capacity(blobs.len());
                for blob in blobs {
                    let done = sqlx::query(if tombstone {
                        "UPDATE blobs SET size = -1, created_at = $3
                         WHERE digest = $1 AND state = 'deleting' AND storage_key = $2 AND size >= 0"
                    } else {
                        "DELETE FROM blobs WHERE digest = $1 AND state = 'deleting' AND storage_key = $2 AND $3 = $3"
                    })
                    .bind(blob.digest.as_str())
                    .bind(&blob.key)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::db_error::db_err)?;
                    forgotten.push(done.rows_affected() > 0);
                }
                sqlx::query("DELETE FROM blobs WHERE state = 'deleting' AND size < 0 AND created_at < $1")
                    .bind(now - 3600)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::db_error::db_err)?;
                tx.commit().await.map_err($crate::db_error::db_err)?;
                self.durable().await?;
                Ok(forgotten)
            }

            async fn clear_reviewed(&self, before: i64, blobs: bool, manifests: bool) -> Result<(), berth_core::Error> {
                let mut tx = self.writer.begin().await.map_err($crate::db_error::db_err)?;
                // Entries a concurrent write is queueing again right now are skipped (on
                // PostgreSQL): they stay, queued afresh, and this never waits for a lock.
                for (clear, sql) in [
                    (
                        blobs,
                        concat!(
                            "DELETE FROM gc_blob_review WHERE digest IN
                               (SELECT digest FROM gc_blob_review WHERE ",
                            $crate::gc::sql::due_by!("queued_at", "$1"),
                            row_lock!(skip),
                            ")"
                        ),
                    ),
                    (
                        manifests,
                        concat!(
                            "DELETE FROM gc_manifest_review WHERE (repo, digest) IN
                               (SELECT repo, digest FROM gc_manifest_review WHERE ",
                            $crate::gc::sql::due_by!("queued_at", "$1"),
                            row_lock!(skip),
                            ")"
                        ),
                    ),
                ] {
                    if clear {
                        sqlx::query(sql).bind(before).execute(&mut *tx).await.map_err($crate::db_error::db_err)?;
                    }
                }
                tx.commit().await.map_err($crate::db_error::db_err)
            }

            async fn queue_unreferenced(&self, delete_untagged: bool) -> Result<u64, berth_core::Error> {
                let mut tx = self.writer.begin().await.map_err($crate::db_error::db_err)?;
                let now = $crate::gc::review_now();
                let blobs = sqlx::query(
                    "INSERT INTO gc_blob_review (digest, queued_at, reason)
                     SELECT b.digest, $1, 'sweep' FROM blobs b
                     WHERE b.state = 'live'
                       AND NOT EXISTS (SELECT 1 FROM manifest_refs m WHERE m.child_digest = b.digest AND m.kind = 'blob')
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err($crate::db_error::db_err)?
                .rows_affected();
                let manifests = sqlx::query(concat!(
                    "INSERT INTO gc_manifest_review (repo, digest, queued_at, reason)
                     SELECT m.repo, m.digest, $1, 'sweep' FROM manifests m WHERE",
                    $crate::gc::sql::manifest_is_garbage!("$2"),
                    "ON CONFLICT (repo, digest) DO NOTHING"
                ))
                .bind(now)
                .bind(delete_untagged)
                .execute(&mut *tx)
                .await
                .map_err($crate::db_error::db_err)?
                .rows_affected();
                tx.commit().await.map_err($crate::db_error::db_err)?;
                Ok(blobs + manifests)
            }

            async fn blob_keys(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<(String, String)>, berth_core::Error> {
                let rows =
                    sqlx::query("SELECT digest, storage_key FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2")
                        .bind(after.unwrap_or(""))
                        .bind(limit as i64)
                        .fetch_all(&self.reader)
                        .await
                        .map_err($crate::db_error::db_err)?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            }

            async fn blob_recorded(&self, digest: &Digest) -> Result<bool, berth_core::Error> {
                let row = sqlx::query("SELECT 1 FROM blobs WHERE digest = $1")
                    .bind(digest.as_str())
                    .fetch_optional(&self.writer)
                    .await
                    .map_err($crate::db_error::db_err)?;
                Ok(row.is_some())
            }

            async fn record_run(&self, run: &$crate::gc::GcRun) -> Result<i64, berth_core::Error> {
                let mut tx = self.writer.begin().await.map_err($crate::db_error::db_err)?;
                let id: i64 = sqlx::query(
                    "INSERT INTO gc_runs (kind, dry_run, started_ms, duration_ms, candidates, manifests_removed,
                                          blobs_removed, bytes_freed, orphans_removed, orphan_bytes, error)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                )
                .bind(run.kind.as_str())
                .bind(run.dry_run)
                .bind(run.started_ms)
                .bind(run.duration_ms)
                .bind(run.candidates as i64)
                .bind(run.manifests_removed as i64)
                .bind(run.blobs_removed as i64)
                .bind(run.bytes_freed as i64)
                .bind(run.orphans_removed as i64)
                .bind(run.orphan_bytes as i64)
                .bind(run.error.as_deref())
                .fetch_one(&mut *tx)
                .await
                .map_err($crate::db_error::db_err)?
                .get(0);
                tx.commit().await.map_err($crate::db_error::db_err)?;
                self.durable().await?;
                Ok(id)
            }

            async fn runs(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<$crate::gc::GcRun>, berth_core::Error> {
                let rows = sqlx::query(
                    "SELECT id, kind, dry_run, started_ms, duration_ms, candidates, manifests_removed, blobs_removed,
                            bytes_freed, orphans_removed, orphan_bytes, error
                     FROM gc_runs WHERE id < $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(before_id.unwrap_or(i64::MAX))
                .bind(limit as i64)
                .fetch_all(&self.reader)
                .await
                .map_err($crate::db_error::db_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::gc::GcRun {
                        id: r.get(0),
                        kind: $crate::gc::sql::kind(r.get(1)),
                        dry_run: r.get(2),
                        started_ms: r.get(3),
                        duration_ms: r.get(4),
                        candidates: r.get::<i64, _>(5) as u64,
                        manifests_removed: r.get::<i64, _>(6) as u64,
                        blobs_removed: r.get::<i64, _>(7) as u64,
                        bytes_freed: r.get::<i64, _>(8) as u64,
                        orphans_removed: r.get::<i64, _>(9) as u64,
                        orphan_bytes: r.get::<i64, _>(10) as u64,
                        error: r.get(11),
                    })
                    .collect())
            }
        }
    };
}

pub(crate) use {delete_manifest, due_by, gc_store, manifest_is_garbage, queue_blob, queue_children, queue_manifest};

pub(crate) fn kind(s: String) -> super::GcKind {
    super::GcKind::parse(&s)
}
