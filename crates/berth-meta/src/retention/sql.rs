//! The one SQL implementation of [`RetentionStore`](super::RetentionStore), instantiated for
//! SQLite and for PostgreSQL by [`retention_store!`].
//!
//! Pulls are upserted by multi-row statements that keep the later time
//! (`ON CONFLICT … DO UPDATE … WHERE excluded.last_pulled_at > …`, the same in both
//! dialects); a batch is deduplicated first, as PostgreSQL refuses to update one row twice
//! in a statement.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Pull;

/// Rows per upsert: 3 parameters each, well under both dialects' limits.
pub(crate) const ROWS_PER_INSERT: usize = 100;

/// Implements `RetentionStore` for a struct with `writer` and `reader` pools and an
/// `async fn durable(&self)` (see `sql_store!`). The expanding module imports `sqlx::Row`.
macro_rules! retention_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::retention::RetentionStore for $store {
            async fn record_pulls(
                &self,
                pulls: &[$crate::retention::Pull],
                announce: bool,
            ) -> Result<(), berth_core::Error> {
                use $crate::retention::sql::{ROWS_PER_INSERT, latest, upsert_sql};
                use $crate::db_error::db_err;
                let (manifests, tags) = latest(pulls);
                if manifests.is_empty() {
                    return Ok(());
                }
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                for (table, key, rows) in [("manifest_pulls", "digest", manifests), ("tag_pulls", "tag", tags)] {
                    for chunk in rows.chunks(ROWS_PER_INSERT) {
                        // Only placeholders and these two fixed names are formatted in.
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(upsert_sql(table, key, chunk.len())));
                        for ((repo, name), at) in chunk {
                            query = query.bind(*repo).bind(*name).bind(*at);
                        }
                        query.execute(&mut *tx).await.map_err(db_err)?;
                    }
                }
                if announce {
                    for ((repo, digest), (at, tags)) in $crate::retention::sql::by_manifest(pulls) {
                        $crate::outbox::sql::outbox_event!(
                            &mut *tx, at * 1000, $crate::outbox::EventKind::ArtifactPulled, repo, Some(digest),
                            None::<&str>, tags.into_iter().collect::<Vec<_>>().join("\n"), None::<i64>, None::<&str>
                        )?;
                    }
                }
                tx.commit().await.map_err(db_err)
            }

            async fn repo_state(&self, repo: &RepoName) -> Result<$crate::retention::RepoState, berth_core::Error> {
                use $crate::db_error::db_err;
                // A pull counts for a tag only if it is not older than the tag's last push.
                let tags = sqlx::query(
                    "SELECT t.name, t.manifest_digest, t.pushed_at,
                        (SELECT p.last_pulled_at FROM tag_pulls p
                          WHERE p.repo = t.repo AND p.tag = t.name AND p.last_pulled_at >= t.pushed_at),
                        (SELECT p.last_pulled_at FROM manifest_pulls p
                          WHERE p.repo = t.repo AND p.digest = t.manifest_digest AND p.last_pulled_at >= t.pushed_at)
                     FROM tags t WHERE t.repo = $1 ORDER BY t.name",
                )
                .bind(repo.as_str())
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                let manifests = sqlx::query(
                    "SELECT m.digest, m.created_at FROM manifests m
                     WHERE m.repo = $1 AND m.subject IS NULL AND NOT EXISTS
                       (SELECT 1 FROM manifest_refs r
                         WHERE r.child_digest = m.digest AND r.repo = m.repo AND r.kind = 'manifest')
                     ORDER BY m.digest",
                )
                .bind(repo.as_str())
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                Ok($crate::retention::RepoState {
                    tags: tags
                        .into_iter()
                        .map(|r| {
                            let (by_tag, by_manifest): (Option<i64>, Option<i64>) = (r.get(3), r.get(4));
                            $crate::retention::TagState {
                                tag: r.get(0),
                                digest: r.get(1),
                                pushed_at: r.get(2),
                                last_pulled_at: by_tag.max(by_manifest),
                            }
                        })
                        .collect(),
                    manifests: manifests
                        .into_iter()
                        .map(|r| $crate::retention::TopManifest { digest: r.get(0), pushed_at: r.get(1) })
                        .collect(),
                })
            }

            async fn set_policy(&self, project: &str, policy: Option<&str>) -> Result<(), berth_core::Error> {
                use $crate::db_error::db_err;
                match policy {
                    Some(policy) => sqlx::query(
                        "INSERT INTO retention_policies (project, policy, updated_at) VALUES ($1, $2, $3)
                         ON CONFLICT (project) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
                    )
                    .bind(project)
                    .bind(policy)
                    .bind($crate::now())
                    .execute(&self.writer)
                    .await
                    .map_err(db_err)?,
                    None => sqlx::query("DELETE FROM retention_policies WHERE project = $1")
                        .bind(project)
                        .execute(&self.writer)
                        .await
                        .map_err(db_err)?,
                };
                self.durable().await
            }

            async fn policy(&self, project: &str) -> Result<Option<String>, berth_core::Error> {
                let row = sqlx::query("SELECT policy FROM retention_policies WHERE project = $1")
                    .bind(project)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err($crate::db_error::db_err)?;
                Ok(row.map(|r| r.get(0)))
            }

            async fn policies(&self) -> Result<Vec<(String, String)>, berth_core::Error> {
                let rows = sqlx::query("SELECT project, policy FROM retention_policies ORDER BY project")
                    .fetch_all(&self.reader)
                    .await
                    .map_err($crate::db_error::db_err)?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            }
        }
    };
}

pub(crate) use retention_store;

/// A key of a pull table and the latest time it was pulled.
pub(crate) type Latest<'a> = ((&'a str, &'a str), i64);

/// The latest time of each manifest and of each tag in `pulls`: `(manifests, tags)`, keyed
/// by `(repo, digest)` and `(repo, tag)`.
pub(crate) fn latest(pulls: &[Pull]) -> (Vec<Latest<'_>>, Vec<Latest<'_>>) {
    let mut manifests: HashMap<(&str, &str), i64> = HashMap::new();
    let mut tags: HashMap<(&str, &str), i64> = HashMap::new();
    for p in pulls {
        let at = manifests.entry((&p.repo, &p.digest)).or_insert(p.at);
        *at = (*at).max(p.at);
        if let Some(tag) = &p.tag {
            let at = tags.entry((&p.repo, tag)).or_insert(p.at);
            *at = (*at).max(p.at);
        }
    }
    (manifests.into_iter().collect(), tags.into_iter().collect())
}

/// An upsert of `rows` `(repo, <key>, last_pulled_at)` rows into `table` that keeps the
/// later time.
pub(crate) fn upsert_sql(table: &str, key: &str, rows: usize) -> String {
    let values: Vec<String> = (0..rows).map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
    format!(
        "INSERT INTO {table} (repo, {key}, last_pulled_at) VALUES {}
         ON CONFLICT (repo, {key}) DO UPDATE SET last_pulled_at = excluded.last_pulled_at
         WHERE excluded.last_pulled_at > {table}.last_pulled_at",
        values.join(", ")
    )
}

/// The pulls of each manifest: the latest time, and the tags it was pulled by.
pub(crate) fn by_manifest(pulls: &[Pull]) -> BTreeMap<(&str, &str), (i64, BTreeSet<&str>)> {
    let mut out: BTreeMap<(&str, &str), (i64, BTreeSet<&str>)> = BTreeMap::new();
    for p in pulls {
        let entry = out.entry((p.repo.as_str(), p.digest.as_str())).or_default();
        entry.0 = entry.0.max(p.at);
        entry.1.extend(p.tag.as_deref());
    }
    out
}
