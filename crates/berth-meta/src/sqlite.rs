//! The SQLite metadata store (embedded mode): one writer connection, a pool of readers,
//! WAL journal, `synchronous = FULL` so that an acknowledged write survives a crash.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use berth_core::{Descriptor, Digest, Error, ErrorKind, Reference, RepoName, Tag};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::sql::{db_err, digest, page, repo_name, sql_store};
use crate::{BlobInfo, ManifestRecord, NewManifest, Page, UploadRecord, now};

/// Schema migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/sqlite/0001_registry.sql"))];

pub struct SqliteStore {
    /// Exactly one connection: SQLite has one writer, and queueing here avoids
    /// `SQLITE_BUSY` on lock upgrades.
    writer: SqlitePool,
    reader: SqlitePool,
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
        let applied = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .is_some();
        if !applied {
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
    }
    Ok(())
}

sql_store!(SqliteStore);

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn sqlite_store_passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::suite::run(&store).await;
    }
}
