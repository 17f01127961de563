//! The SQLite metadata store (embedded mode): one writer connection, a pool of readers,
//! WAL journal, `synchronous = FULL` so that an acknowledged write survives a crash.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{Descriptor, Digest, Error, ErrorKind, Reference, RepoName, Tag};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection};

use crate::{ManifestRecord, MetadataStore, NewManifest, Page, UploadRecord, now};

/// Schema migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/sqlite/0001_registry.sql"))];

pub struct SqliteStore {
    /// Exactly one connection: SQLite has one writer, and queueing here avoids
    /// `SQLITE_BUSY` on lock upgrades.
    writer: SqlitePool,
    reader: SqlitePool,
}

fn db_err(e: sqlx::Error) -> Error {
    Error::internal(format!("sqlite: {e}"))
}

fn repo_name(s: String) -> Result<RepoName, Error> {
    RepoName::parse(&s).map_err(|_| Error::internal(format!("corrupt repository name {s:?}")))
}

fn digest(s: String) -> Result<Digest, Error> {
    Digest::parse(&s).map_err(|_| Error::internal(format!("corrupt digest {s:?}")))
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub async fn open(path: &Path) -> Result<SqliteStore, Error> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(db_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(db_err)?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.read_only(true))
            .await
            .map_err(db_err)?;
        Ok(SqliteStore { writer, reader })
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), Error> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        .execute(pool)
        .await
        .map_err(db_err)?;
    for &(version, sql) in MIGRATIONS {
        let mut tx = pool.begin().await.map_err(db_err)?;
        let applied = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = ?")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .is_some();
        if !applied {
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
    }
    Ok(())
}

async fn ensure_repo(conn: &mut SqliteConnection, repo: &RepoName) -> Result<(), Error> {
    sqlx::query("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
        .bind(repo.as_str())
        .bind(now())
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, Error> {
        let row = sqlx::query(
            "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo = ? AND rb.digest = ? AND b.state = 'live'",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    async fn blob(&self, digest: &Digest) -> Result<Option<u64>, Error> {
        let row = sqlx::query("SELECT size FROM blobs WHERE digest = ? AND state = 'live'")
            .bind(digest.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    async fn repos_with_blob(&self, digest: &Digest, limit: u32) -> Result<Vec<RepoName>, Error> {
        let rows = sqlx::query(
            "SELECT rb.repo FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.digest = ? AND b.state = 'live' ORDER BY rb.repo LIMIT ?",
        )
        .bind(digest.as_str())
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(|r| repo_name(r.get(0))).collect()
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        upload_id: Option<&str>,
    ) -> Result<(), Error> {
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        ensure_repo(&mut tx, repo).await?;
        let now = now();
        // A blob being deleted by GC comes back to life: its bytes are about to be
        // (re)written by the caller's commit, which happened before this call.
        sqlx::query(
            "INSERT INTO blobs (digest, size, state, created_at) VALUES (?, ?, 'live', ?)
             ON CONFLICT (digest) DO UPDATE SET state = 'live'",
        )
        .bind(digest.as_str())
        .bind(size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("INSERT INTO repo_blobs (repo, digest, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if let Some(id) = upload_id {
            sqlx::query("DELETE FROM uploads WHERE id = ?").bind(id).execute(&mut *tx).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM repo_blobs WHERE repo = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_upload(&self, id: &str, repo: &RepoName) -> Result<(), Error> {
        let now = now();
        sqlx::query("INSERT INTO uploads (id, repo, size, started_at, updated_at) VALUES (?, ?, 0, ?, ?)")
            .bind(id)
            .bind(repo.as_str())
            .bind(now)
            .bind(now)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<UploadRecord>, Error> {
        // From the writer: an upload is read right before it is advanced, and must be
        // read after the last write to it.
        let row = sqlx::query("SELECT size, updated_at FROM uploads WHERE id = ? AND repo = ?")
            .bind(id)
            .bind(repo.as_str())
            .fetch_optional(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| UploadRecord {
            id: id.to_owned(),
            repo: repo.clone(),
            size: r.get::<i64, _>(0) as u64,
            updated_at: r.get(1),
        }))
    }

    async fn advance_upload(&self, id: &str, from: u64, to: u64) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE uploads SET size = ?, updated_at = ? WHERE id = ? AND size = ?")
            .bind(to as i64)
            .bind(now())
            .bind(id)
            .bind(from as i64)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn stale_uploads(&self, before: i64) -> Result<Vec<String>, Error> {
        let rows = sqlx::query("SELECT id FROM uploads WHERE updated_at < ? LIMIT 1000")
            .bind(before)
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn known_uploads(&self, ids: &[String]) -> Result<Vec<bool>, Error> {
        let mut known = Vec::with_capacity(ids.len());
        let mut conn = self.writer.acquire().await.map_err(db_err)?;
        for id in ids {
            let row = sqlx::query("SELECT 1 FROM uploads WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_err)?;
            known.push(row.is_some());
        }
        Ok(known)
    }

    async fn put_manifest(&self, m: NewManifest<'_>) -> Result<(), Error> {
        let repo = m.repo.as_str();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        let mut missing = Vec::new();
        for blob in &m.parsed.blobs {
            let found = sqlx::query(
                "SELECT 1 FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
                 WHERE rb.repo = ? AND rb.digest = ? AND b.state = 'live'",
            )
            .bind(repo)
            .bind(blob.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if found.is_none() {
                missing.push(blob.to_string());
            }
        }
        for child in &m.parsed.manifests {
            let found = sqlx::query("SELECT 1 FROM manifests WHERE repo = ? AND digest = ?")
                .bind(repo)
                .bind(child.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            if found.is_none() {
                missing.push(child.to_string());
            }
        }
        if !missing.is_empty() {
            return Err(Error::new(ErrorKind::ManifestBlobUnknown).with_detail(missing));
        }
        ensure_repo(&mut tx, m.repo).await?;
        let now = now();
        let annotations = m.parsed.annotations.as_ref().map(|a| serde_json::Value::Object(a.clone()).to_string());
        let inserted = sqlx::query(
            "INSERT INTO manifests
               (repo, digest, media_type, artifact_type, subject, annotations, size, body, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(repo)
        .bind(m.digest.as_str())
        .bind(&m.parsed.media_type)
        .bind(m.parsed.artifact_type.as_deref())
        .bind(m.parsed.subject.as_ref().map(|s| s.as_str()))
        .bind(annotations)
        .bind(m.body.len() as i64)
        .bind(m.body)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected()
            == 1;
        if inserted {
            let refs = m.parsed.blobs.iter().map(|d| (d, "blob")).chain(m.parsed.manifests.iter().map(|d| (d, "manifest")));
            for (child, kind) in refs {
                sqlx::query(
                    "INSERT INTO manifest_refs (repo, manifest_digest, child_digest, kind) VALUES (?, ?, ?, ?)
                     ON CONFLICT DO NOTHING",
                )
                .bind(repo)
                .bind(m.digest.as_str())
                .bind(child.as_str())
                .bind(kind)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
        }
        for tag in m.tags {
            sqlx::query(
                "INSERT INTO tags (repo, name, manifest_digest, pushed_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (repo, name) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                                                        pushed_at = excluded.pushed_at",
            )
            .bind(repo)
            .bind(tag.as_str())
            .bind(m.digest.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, Error> {
        let row = match reference {
            Reference::Digest(d) => {
                sqlx::query("SELECT digest, media_type, body FROM manifests WHERE repo = ? AND digest = ?")
                    .bind(repo.as_str())
                    .bind(d.as_str())
                    .fetch_optional(&self.reader)
                    .await
            }
            Reference::Tag(t) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.body FROM tags t
                     JOIN manifests m ON m.repo = t.repo AND m.digest = t.manifest_digest
                     WHERE t.repo = ? AND t.name = ?",
                )
                .bind(repo.as_str())
                .bind(t.as_str())
                .fetch_optional(&self.reader)
                .await
            }
        }
        .map_err(db_err)?;
        row.map(|r| {
            Ok(ManifestRecord { digest: digest(r.get(0))?, media_type: r.get(1), body: r.get(2) })
        })
        .transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, Error> {
        // Tags and references go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM manifests WHERE repo = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM tags WHERE repo = ? AND name = ?")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, Error> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = ?")
            .bind(repo.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(row.is_some())
    }

    async fn tags(&self, repo: &RepoName, last: Option<&str>, limit: u32) -> Result<Option<Page>, Error> {
        if !self.repo_exists(repo).await? {
            return Ok(None);
        }
        let rows = sqlx::query("SELECT name FROM tags WHERE repo = ? AND name > ? ORDER BY name LIMIT ?")
            .bind(repo.as_str())
            .bind(last.unwrap_or(""))
            .bind(limit as i64 + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(Some(page(rows.into_iter().map(|r| r.get(0)).collect(), limit)))
    }

    async fn catalog(&self, last: Option<&str>, limit: u32) -> Result<Page, Error> {
        let rows = sqlx::query("SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?")
            .bind(last.unwrap_or(""))
            .bind(limit as i64 + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(page(rows.into_iter().map(|r| r.get(0)).collect(), limit))
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, Error> {
        let rows = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests
             WHERE repo = ? AND subject = ? AND (? IS NULL OR artifact_type = ?)
             ORDER BY created_at, digest",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .bind(artifact_type)
        .bind(artifact_type)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|r| {
                let annotations: Option<String> = r.get(4);
                let annotations = annotations
                    .map(|a| serde_json::from_str(&a))
                    .transpose()
                    .map_err(|e| Error::internal(format!("corrupt annotations: {e}")))?;
                Ok(Descriptor {
                    digest: r.get(0),
                    media_type: r.get(1),
                    size: r.get::<i64, _>(2) as u64,
                    artifact_type: r.get(3),
                    annotations,
                    urls: None,
                    platform: None,
                })
            })
            .collect()
    }
}

/// Trims a `limit + 1` result to `limit`, noting whether more followed.
fn page(mut items: Vec<String>, limit: u32) -> Page {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Page { items, more }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn sqlite_store_passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::suite::run(&store).await;
    }
}
