//! The one SQL implementation of [`PolicyStore`](super::PolicyStore) (`policy_store!`),
//! and the policy checks the registry's operations make inside their own transactions
//! (`policy_checks!`, called from `sql_store!`), for SQLite and PostgreSQL alike.

use berth_core::glob::glob_matches;
use berth_core::{Error, ErrorKind};

use super::human_bytes;

/// Implements `PolicyStore` for a struct with `writer` and `reader` pools and an
/// `async fn durable(&self)` (see `sql_store!`). The expanding module imports `sqlx::Row`.
macro_rules! policy_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::policy::PolicyStore for $store {
            async fn immutable_rules(&self, project: &str) -> Result<Vec<$crate::policy::ImmutableRule>, Error> {
                let rows = sqlx::query(
                    "SELECT project, pattern, created_at FROM immutable_rules WHERE project = $1 ORDER BY pattern",
                )
                .bind(project)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::policy::ImmutableRule {
                        project: r.get(0),
                        pattern: r.get(1),
                        created_at: r.get(2),
                    })
                    .collect())
            }

            async fn add_immutable_rule(
                &self,
                project: &str,
                pattern: &str,
            ) -> Result<$crate::policy::ImmutableRule, Error> {
                let created_at = now();
                sqlx::query("INSERT INTO immutable_rules (project, pattern, created_at) VALUES ($1, $2, $3)")
                    .bind(project)
                    .bind(pattern)
                    .bind(created_at)
                    .execute(&self.writer)
                    .await
                    .map_err(|e| $crate::policy::sql::rule_write_err(e, project, pattern))?;
                self.durable().await?;
                Ok($crate::policy::ImmutableRule {
                    project: project.to_owned(),
                    pattern: pattern.to_owned(),
                    created_at,
                })
            }

            async fn remove_immutable_rule(&self, project: &str, pattern: &str) -> Result<bool, Error> {
                let done = sqlx::query("DELETE FROM immutable_rules WHERE project = $1 AND pattern = $2")
                    .bind(project)
                    .bind(pattern)
                    .execute(&self.writer)
                    .await
                    .map_err(db_err)?;
                self.durable().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn quota(&self, project: &str) -> Result<$crate::policy::Quota, Error> {
                let row = sqlx::query(
                    "SELECT (SELECT limit_bytes FROM project_quotas WHERE project = $1),
                            (SELECT bytes FROM project_usage WHERE project = $1)",
                )
                .bind(project)
                .fetch_one(&self.reader)
                .await
                .map_err(db_err)?;
                Ok($crate::policy::Quota {
                    limit: r_u64(row.get::<Option<i64>, _>(0)),
                    used: r_u64(row.get::<Option<i64>, _>(1)).unwrap_or(0),
                })
            }

            async fn set_quota(&self, project: &str, limit: Option<u64>) -> Result<$crate::policy::Quota, Error> {
                match limit {
                    Some(limit) => {
                        sqlx::query(
                            "INSERT INTO project_quotas (project, limit_bytes) VALUES ($1, $2)
                             ON CONFLICT (project) DO UPDATE SET limit_bytes = excluded.limit_bytes",
                        )
                        .bind(project)
                        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                        .execute(&self.writer)
                        .await
                        .map_err(|e| $crate::db_error::write_err(e, "project", project))?;
                    }
                    None => {
                        let known = sqlx::query("SELECT 1 FROM projects WHERE name = $1")
                            .bind(project)
                            .fetch_optional(&self.writer)
                            .await
                            .map_err(db_err)?;
                        if known.is_none() {
                            return Err($crate::db_error::unknown("project", project));
                        }
                        sqlx::query("DELETE FROM project_quotas WHERE project = $1")
                            .bind(project)
                            .execute(&self.writer)
                            .await
                            .map_err(db_err)?;
                    }
                }
                self.durable().await?;
                $crate::policy::PolicyStore::quota(self, project).await
            }
        }

        /// A count or size read from the database (never negative).
        fn r_u64(value: Option<i64>) -> Option<u64> {
            value.map(|v| u64::try_from(v).unwrap_or(0))
        }
    };
}

/// The checks a registry operation makes in its own transaction (`$db`'s), as associated
/// functions of the store, for `sql_store!` to call. The expanding module imports
/// `sqlx::Row`.
macro_rules! policy_checks {
    ($store:ty, $db:ty) => {
        impl $store {
            /// The patterns of the immutable rules of `repo`'s project (a put checks each tag
            /// it moves against them, under the tag row's lock: `put_manifest`).
            async fn immutable_patterns(
                tx: &mut sqlx::Transaction<'_, $db>,
                repo: &RepoName,
            ) -> Result<Vec<String>, Error> {
                let rows = sqlx::query("SELECT pattern FROM immutable_rules WHERE project = $1")
                    .bind(berth_core::access::project_of(repo))
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(db_err)?;
                Ok(rows.into_iter().map(|r| r.get(0)).collect())
            }

            /// Refuses deleting `tag`, or the manifest `manifest` (with every tag on it), or
            /// with neither the whole repository, when a tag concerned matches one of the
            /// project's immutable rules.
            async fn check_immutable_delete(
                tx: &mut sqlx::Transaction<'_, $db>,
                repo: &RepoName,
                tag: Option<&Tag>,
                manifest: Option<&Digest>,
            ) -> Result<(), Error> {
                let project = berth_core::access::project_of(repo);
                let rules = Self::immutable_patterns(tx, repo).await?;
                if rules.is_empty() {
                    return Ok(());
                }
                let mut names: Vec<String> = tag.map(|t| t.as_str().to_owned()).into_iter().collect();
                if tag.is_none() {
                    // The manifest's tags, or (no manifest either) every tag of the repository.
                    let rows = sqlx::query(
                        "SELECT name FROM tags WHERE repo = $1 AND ($2 IS NULL OR manifest_digest = $2) ORDER BY name",
                    )
                    .bind(repo.as_str())
                    .bind(manifest.map(Digest::as_str))
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(db_err)?;
                    names.extend(rows.into_iter().map(|r| r.get::<String, _>(0)));
                }
                for name in &names {
                    if let Some(rule) = $crate::policy::sql::matching_rule(&rules, name) {
                        return Err($crate::policy::sql::immutable(name, rule, project));
                    }
                }
                Ok(())
            }

            /// Refuses linking a blob new to the project when it would take the project past
            /// its quota. Locks the project's usage row first (PostgreSQL: concurrent links in
            /// one project run one after the other from here), as the usage triggers do.
            async fn check_quota(
                tx: &mut sqlx::Transaction<'_, $db>,
                repo: &RepoName,
                digest: &Digest,
                size: u64,
            ) -> Result<(), Error> {
                let project = berth_core::access::project_of(repo);
                let Some(limit) = Self::quota_limit(tx, project).await? else { return Ok(()) };
                let used: i64 = sqlx::query(
                    "INSERT INTO project_usage (project, bytes) VALUES ($1, 0)
                     ON CONFLICT (project) DO UPDATE SET bytes = project_usage.bytes RETURNING bytes",
                )
                .bind(project)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_err)?
                .get(0);
                let counted = sqlx::query("SELECT 1 FROM project_blobs WHERE project = $1 AND digest = $2")
                    .bind(project)
                    .bind(digest.as_str())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_err)?
                    .is_some();
                let used = u64::try_from(used).unwrap_or(0);
                if !counted && used.saturating_add(size) > limit {
                    return Err($crate::policy::sql::quota_exceeded(project, used, Some(size), limit));
                }
                Ok(())
            }

            /// Refuses a manifest put into a project already past its quota (it was lowered).
            async fn check_quota_held(tx: &mut sqlx::Transaction<'_, $db>, repo: &RepoName) -> Result<(), Error> {
                let project = berth_core::access::project_of(repo);
                let Some(limit) = Self::quota_limit(tx, project).await? else { return Ok(()) };
                let used: Option<i64> = sqlx::query("SELECT bytes FROM project_usage WHERE project = $1")
                    .bind(project)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_err)?
                    .map(|r| r.get(0));
                let used = used.map_or(0, |u| u64::try_from(u).unwrap_or(0));
                if used > limit {
                    return Err($crate::policy::sql::quota_exceeded(project, used, None, limit));
                }
                Ok(())
            }

            async fn quota_limit(tx: &mut sqlx::Transaction<'_, $db>, project: &str) -> Result<Option<u64>, Error> {
                let limit: Option<i64> = sqlx::query("SELECT limit_bytes FROM project_quotas WHERE project = $1")
                    .bind(project)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_err)?
                    .map(|r| r.get(0));
                Ok(limit.map(|l| u64::try_from(l).unwrap_or(0)))
            }
        }
    };
}

pub(crate) use {policy_checks, policy_store};

/// The first of `rules` that `tag` matches.
pub(crate) fn matching_rule<'a>(rules: &'a [String], tag: &str) -> Option<&'a str> {
    rules.iter().map(String::as_str).find(|rule| glob_matches(rule, tag))
}

pub(crate) fn immutable(tag: &str, rule: &str, project: &str) -> Error {
    Error::new(ErrorKind::Denied)
        .with_message(format!("tag {tag:?} is immutable (rule {rule:?} of project {project:?})"))
        .with_detail(serde_json::json!({ "tag": tag, "rule": rule, "project": project }))
}

/// `size`: the blob being linked (none for a manifest put into a project already past
/// its limit).
pub(crate) fn quota_exceeded(project: &str, used: u64, size: Option<u64>, limit: u64) -> Error {
    let message = match size {
        Some(size) => format!(
            "quota exceeded for project {project:?}: {} used + {} > {} limit",
            human_bytes(used),
            human_bytes(size),
            human_bytes(limit)
        ),
        None => {
            format!("quota exceeded for project {project:?}: {} used > {} limit", human_bytes(used), human_bytes(limit))
        }
    };
    Error::new(ErrorKind::Denied)
        .with_message(message)
        .with_detail(serde_json::json!({ "project": project, "used": used, "size": size, "limit": limit }))
}

pub(crate) fn rule_write_err(e: sqlx::Error, project: &str, pattern: &str) -> Error {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => Error::new(ErrorKind::Conflict)
            .with_message(format!("project {project} has the immutable rule {pattern:?} already"))
            .with_detail(pattern),
        _ => crate::db_error::write_err(e, "project", project),
    }
}
