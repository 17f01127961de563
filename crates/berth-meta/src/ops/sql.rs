//! The one SQL implementation of [`OpsStore`](super::OpsStore), instantiated for SQLite
//! and for PostgreSQL by [`ops_store!`].

/// The storage query, around the dialect's expression for a repository's project
/// (`rb.repo`'s first component, else `library`).
macro_rules! storage_by_project_sql {
    ($project_of:literal) => {
        concat!(
            "SELECT project, CAST(SUM(size) AS BIGINT) FROM (SELECT DISTINCT ",
            $project_of,
            " AS project, b.digest, b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest) AS t ",
            "GROUP BY project ORDER BY project"
        )
    };
}
pub(crate) use storage_by_project_sql;

/// Implements `OpsStore` for a struct with `writer` and `reader` pools, a `MIGRATIONS`
/// table in the expanding module and `pools`, the pools by name. `$project_of` is the
/// dialect's SQL for the project of repository `rb.repo`.
macro_rules! ops_store {
    ($store:ty, $project_of:literal) => {
        #[async_trait::async_trait]
        impl $crate::ops::OpsStore for $store {
            async fn check_ready(&self) -> Result<(), berth_core::Error> {
                let known = MIGRATIONS.last().map_or(0, |m| m.0);
                let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations WHERE version <= $1")
                    .bind(known)
                    .fetch_one(&self.reader)
                    .await
                    .map_err(db_err)?;
                if applied != MIGRATIONS.len() as i64 {
                    return Err(berth_core::Error::internal(format!(
                        "schema: {applied} of this build's {} migrations applied",
                        MIGRATIONS.len()
                    )));
                }
                Ok(())
            }

            fn pool_usage(&self) -> Vec<$crate::ops::PoolUsage> {
                self.pools()
                    .into_iter()
                    .map(|(pool, p)| $crate::ops::PoolUsage {
                        pool,
                        size: p.size(),
                        idle: u32::try_from(p.num_idle()).unwrap_or(u32::MAX),
                        max: p.options().get_max_connections(),
                    })
                    .collect()
            }

            async fn storage_by_project(&self) -> Result<Vec<(String, u64)>, berth_core::Error> {
                let rows: Vec<(String, i64)> = sqlx::query_as($crate::ops::sql::storage_by_project_sql!($project_of))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(rows.into_iter().map(|(p, n)| (p, u64::try_from(n).unwrap_or(0))).collect())
            }

            async fn setting(&self, name: &str) -> Result<Option<String>, berth_core::Error> {
                sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(db_err)
            }

            async fn set_setting(&self, name: &str, value: &str) -> Result<(), berth_core::Error> {
                sqlx::query(
                    "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .bind(name)
                .bind(value)
                .bind($crate::now())
                .execute(&self.writer)
                .await
                .map_err(db_err)?;
                self.durable().await
            }
        }
    };
}
pub(crate) use ops_store;
