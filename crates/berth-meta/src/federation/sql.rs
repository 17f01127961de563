//! The one SQL implementation of [`FederationStore`](super::FederationStore)
//! (`federation_store!`), for SQLite and PostgreSQL alike.

/// Implements `FederationStore` for a struct with `writer` and `reader` pools and an
/// `async fn durable(&self)` (see `sql_store!`). The expanding module imports `sqlx::Row`.
macro_rules! federation_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::federation::FederationStore for $store {
            async fn upstreams(&self) -> Result<Vec<$crate::federation::Upstream>, Error> {
                let rows = sqlx::query(
                    "SELECT name, url, project, username, sealed_password, ca_pem, tag_ttl_secs, hosts,
                            short_names, is_default, created_at, updated_at
                     FROM upstreams ORDER BY name",
                )
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::federation::Upstream {
                        name: r.get(0),
                        url: r.get(1),
                        project: r.get(2),
                        username: r.get(3),
                        sealed_password: r.get(4),
                        ca_pem: r.get(5),
                        tag_ttl_secs: r.get(6),
                        hosts: r.get::<String, _>(7).lines().map(str::to_owned).collect(),
                        short_names: r.get(8),
                        is_default: r.get(9),
                        created_at: r.get(10),
                        updated_at: r.get(11),
                    })
                    .collect())
            }

            async fn put_upstream(
                &self,
                u: &$crate::federation::Upstream,
                create: bool,
            ) -> Result<$crate::federation::Upstream, Error> {
                use $crate::db_error::{unknown, write_err};
                let now = now();
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                if u.is_default {
                    sqlx::query("UPDATE upstreams SET is_default = $1 WHERE is_default AND name <> $2")
                        .bind(false)
                        .bind(&u.name)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
                let hosts = u.hosts.join("\n");
                let written = if create {
                    sqlx::query(
                        "INSERT INTO upstreams (name, url, project, username, sealed_password, ca_pem,
                           tag_ttl_secs, hosts, short_names, is_default, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
                         RETURNING created_at",
                    )
                } else {
                    sqlx::query(
                        "UPDATE upstreams SET url = $2, project = $3, username = $4, sealed_password = $5,
                           ca_pem = $6, tag_ttl_secs = $7, hosts = $8, short_names = $9, is_default = $10,
                           updated_at = $11
                         WHERE name = $1 RETURNING created_at",
                    )
                }
                .bind(&u.name)
                .bind(&u.url)
                .bind(&u.project)
                .bind(&u.username)
                .bind(&u.sealed_password)
                .bind(&u.ca_pem)
                .bind(u.tag_ttl_secs)
                .bind(&hosts)
                .bind(u.short_names)
                .bind(u.is_default)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| $crate::federation::sql::upstream_write_err(e, u))?;
                let Some(row) = written else {
                    return Err(unknown("upstream", &u.name));
                };
                tx.commit().await.map_err(|e| write_err(e, "upstream", &u.name))?;
                self.durable().await?;
                Ok($crate::federation::Upstream { created_at: row.get(0), updated_at: now, ..u.clone() })
            }

            async fn delete_upstream(&self, name: &str) -> Result<bool, Error> {
                let done = sqlx::query("DELETE FROM upstreams WHERE name = $1")
                    .bind(name)
                    .execute(&self.writer)
                    .await
                    .map_err(db_err)?;
                self.durable().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn tag_checked(&self, repo: &str, tag: &str) -> Result<Option<i64>, Error> {
                let row = sqlx::query("SELECT checked_at FROM proxy_tags WHERE repo = $1 AND tag = $2")
                    .bind(repo)
                    .bind(tag)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(row.map(|r| r.get(0)))
            }

            async fn check_tag(&self, repo: &str, tag: &str, at: i64) -> Result<(), Error> {
                // Not made durable: a check lost to a power cut only means one more `HEAD`.
                sqlx::query(
                    "INSERT INTO proxy_tags (repo, tag, checked_at) VALUES ($1, $2, $3)
                     ON CONFLICT (repo, tag) DO UPDATE SET checked_at = excluded.checked_at",
                )
                .bind(repo)
                .bind(tag)
                .bind(at)
                .execute(&self.writer)
                .await
                .map_err(db_err)?;
                Ok(())
            }
        }
    };
}
pub(crate) use federation_store;

use berth_core::{Error, ErrorKind};

/// A write of `u` that broke a constraint: its name or its project is taken (`CONFLICT`),
/// or its project does not exist (`NOT_FOUND`).
pub(crate) fn upstream_write_err(e: sqlx::Error, u: &super::Upstream) -> Error {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() && d.message().contains("project") => Error::new(ErrorKind::Conflict)
            .with_message(format!("project {} is the proxy project of another upstream", u.project))
            .with_detail(u.project.as_str()),
        Some(d) if d.is_foreign_key_violation() => crate::db_error::unknown("project", &u.project),
        _ => crate::db_error::write_err(e, "upstream", &u.name),
    }
}
