//! The SQLite metadata store (embedded mode): one writer connection, a pool of readers,
//! WAL journal.
//!
//! Durability is a group commit: the writer commits with `synchronous = NORMAL` (frames
//! are written to the WAL, not fsynced), and a write that acknowledges something then
//! waits in [`WalSync`] for an fsync of the WAL that started after its commit. Concurrent
//! writers share one fsync instead of queueing for one each on the single writer
//! connection; upload progress, which need not be durable, pays none.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_core::{Descriptor, Digest, Error, ErrorKind, Reference, RepoName, Tag};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::audit::sql::audit_store;
use crate::column::{digest, repo_name};
use crate::db_error::db_err;
use crate::federation::sql::federation_store;
use crate::gc::sql::gc_store;
use crate::identity::sql::identity_store;
use crate::ops::sql::ops_store;
use crate::outbox::sql::outbox_store;
use crate::policy::sql::{policy_checks, policy_store};
use crate::replication::sql::replication_store;
use crate::retention::sql::retention_store;
use crate::scrub::sql::{scrub_checks, scrub_store};
use crate::sql::{page, sql_store};
use crate::webhooks::sql::webhook_store;
use crate::{
    Artifact, Artifacts, BlobInfo, ManifestRecord, NewManifest, Page, PageSpec, Referrers, TagTarget, UploadRecord, now,
};

/// Schema migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_registry.sql")),
    (2, include_str!("../migrations/sqlite/0002_bounds.sql")),
    (3, include_str!("../migrations/sqlite/0003_identity.sql")),
    (4, include_str!("../migrations/sqlite/0004_gc.sql")),
    (5, include_str!("../migrations/sqlite/0005_policies.sql")),
    (6, include_str!("../migrations/sqlite/0006_retention.sql")),
    (8, include_str!("../migrations/sqlite/0008_audit_count.sql")),
    (9, include_str!("../migrations/sqlite/0009_settings.sql")),
    (10, include_str!("../migrations/sqlite/0010_gc_review_ms.sql")),
    (11, include_str!("../migrations/sqlite/0011_federation.sql")),
    (12, include_str!("../migrations/sqlite/0012_outbox.sql")),
    (13, include_str!("../migrations/sqlite/0013_replication.sql")),
];

/// Clones share the pools: the registry's store (behind its cache) and the identity and
/// audit stores are one database.
#[derive(Clone)]
pub struct SqliteStore {
    /// Exactly one connection: SQLite has one writer, and queueing here avoids
    /// `SQLITE_BUSY` on lock upgrades.
    writer: SqlitePool,
    reader: SqlitePool,
    wal: Arc<WalSync>,
}

/// Group fsync of the WAL: every caller returns after an fsync that started after it
/// called, and callers that arrive while one runs share the next.
struct WalSync {
    wal: PathBuf,
    /// Tickets handed out: a ticket is taken after the caller's commit was written.
    tickets: AtomicU64,
    /// What the fsyncs so far covered; held while an fsync runs.
    synced: tokio::sync::Mutex<Synced>,
    /// fsyncs done.
    fsyncs: AtomicU64,
}

#[derive(Default)]
struct Synced {
    /// The highest ticket covered.
    ticket: u64,
    /// The WAL file's inode: a new WAL file's directory entry must be made durable too.
    inode: Option<u64>,
}

impl WalSync {
    fn new(db: &Path) -> WalSync {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal: wal.into(),
            tickets: AtomicU64::new(0),
            synced: tokio::sync::Mutex::default(),
            fsyncs: AtomicU64::new(0),
        }
    }

    async fn sync(&self) -> Result<(), Error> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        if synced.ticket >= ticket {
            return Ok(());
        }
        // Every ticket up to here was taken after its commit was written, so this fsync,
        // starting now, covers them all.
        let upto = self.tickets.load(Ordering::SeqCst);
        let (wal, seen) = (self.wal.clone(), synced.inode);
        synced.inode = tokio::task::spawn_blocking(move || sync_wal(&wal, seen))
            .await
            .map_err(Error::internal)?
            .map_err(|e| Error::internal(format!("fsync of the SQLite WAL: {e}")))?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        synced.ticket = upto;
        Ok(())
    }
}

/// fsyncs the WAL at `path` (opened afresh: SQLite may have replaced it) and, if it is a
/// file not synced before, its directory. Returns its inode. A missing WAL means every
/// commit was checkpointed into the database, which SQLite fsyncs when it checkpoints.
fn sync_wal(path: &Path, seen: Option<u64>) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::MetadataExt;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    file.sync_data()?;
    let inode = file.metadata()?.ino();
    if seen != Some(inode)
        && let Some(dir) = path.parent()
    {
        std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })?.sync_all()?;
    }
    Ok(Some(inode))
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub async fn open(path: &Path) -> Result<SqliteStore, Error> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(db_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .after_release(|conn, _| Box::pin(out_of_transaction(conn)))
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
        Ok(SqliteStore { writer, reader, wal: Arc::new(WalSync::new(path)) })
    }

    async fn durable(&self) -> Result<(), Error> {
        self.wal.sync().await
    }

    fn pools(&self) -> [(&'static str, &SqlitePool); 2] {
        [("writer", &self.writer), ("reader", &self.reader)]
    }
}

/// Whether the writer connection coming back to its pool is out of any transaction, in
/// SQLite's view and in sqlx's; if not, the pool closes it (SQLite rolls back what it
/// held) and opens another.
///
/// A write that fails for want of disk space or by an I/O error can end with SQLite
/// having rolled its transaction back on its own while sqlx still counts it open, or
/// with a `ROLLBACK` that failed: sqlx then begins the next transaction as a savepoint
/// inside one that never commits, and every write after it is answered as committed and
/// lost (issue 17: projects created with the disk full answered 201 and were gone).
/// The one writer connection is the one place every write passes, so it is checked on
/// every release; the check is an atomic load and one call into SQLite on its thread.
async fn out_of_transaction(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is this connection's, alive and locked for this call;
    // sqlite3_get_autocommit only reads its state.
    let autocommit = unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) } != 0;
    drop(handle);
    let consistent = autocommit && !conn.is_in_transaction();
    if !consistent {
        tracing::warn!(
            sqlite_in_transaction = !autocommit,
            sqlx_in_transaction = conn.is_in_transaction(),
            "the SQLite writer connection was left inside a failed transaction: closing it (what it held is rolled back)"
        );
    }
    Ok(consistent)
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

/// The row-lock clauses of the shared SQL: SQLite has one writer: write transactions run one at a time already.
macro_rules! row_lock {
    (share) => {
        ""
    };
    (skip) => {
        ""
    };
    (update) => {
        ""
    };
}

sql_store!(SqliteStore);
gc_store!(SqliteStore);
identity_store!(SqliteStore, sqlx::Sqlite);
audit_store!(SqliteStore);
retention_store!(SqliteStore);
policy_store!(SqliteStore);
federation_store!(SqliteStore);
outbox_store!(SqliteStore);
webhook_store!(SqliteStore);
replication_store!(SqliteStore);
scrub_store!(SqliteStore);
scrub_checks!(SqliteStore, sqlx::Sqlite);
policy_checks!(SqliteStore, sqlx::Sqlite);
ops_store!(
    SqliteStore,
    "CASE WHEN instr(rb.repo, '/') > 0 THEN substr(rb.repo, 1, instr(rb.repo, '/') - 1) ELSE 'library' END"
);

#[cfg(test)]
mod tests {

    #[tokio::test]
    async fn sqlite_store_passes_the_gc_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::gc::suite::run(&store).await;
    }

    #[tokio::test]
    async fn sqlite_store_reads_gc_queue_entries_an_older_node_wrote_in_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        let queue = crate::gc::suite::queue_in_seconds!(store.writer.clone());
        crate::gc::suite::entries_an_older_node_queued_in_seconds_are_read_as_seconds(&store, queue).await;
    }

    #[tokio::test]
    async fn cached_sqlite_store_passes_the_gc_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::gc::suite::run(&crate::CachedStore::new(store, 1 << 20)).await;
    }
    #[tokio::test]
    async fn sqlite_store_passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::suite::run(&store).await;
    }

    #[tokio::test]
    async fn sqlite_store_passes_the_identity_and_audit_suites() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::identity::suite::run(&store, &store).await;
        crate::audit::suite::run(&store).await;
        crate::policy::suite::run(&store, &store, &store).await;
        crate::federation::suite::run(&store, &store).await;
        crate::scrub::suite::run(&store, &store).await;
    }

    /// SQLite stores any text, so a trigger plays the refusal (a real refusal by the
    /// real database: `SQLITE_CONSTRAINT_TRIGGER`).
    #[tokio::test]
    async fn sqlite_refuses_an_audit_event_a_trigger_rejects_as_bad_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        sqlx::raw_sql(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_log WHEN NEW.actor = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poison refused'); END",
        )
        .execute(&store.writer)
        .await
        .unwrap();
        let poison = crate::audit::suite::login_by("poison");
        crate::audit::suite::refused_batches(&store, poison).await;
    }

    #[tokio::test]
    async fn sqlite_store_passes_the_retention_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::retention::suite::run(&store, &store).await;
    }

    #[tokio::test]
    async fn sqlite_store_passes_the_webhook_and_outbox_suites() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::webhooks::suite::run(&store, &store, &store).await;
        crate::outbox::suite::run(&store, &store, &store, &store, &store).await;
    }

    #[tokio::test]
    async fn sqlite_store_passes_the_replication_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::replication::suite::run(&store, &store).await;
        // Trivially so (one writer), but the same statements run.
        crate::replication::suite::concurrent_claims_never_share_a_task(&store).await;
        crate::replication::suite::results_at_once_finish_an_execution_once(&store).await;
    }

    #[tokio::test]
    async fn sqlite_store_passes_the_ops_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::ops::suite::run(&store, &store).await;
    }

    #[tokio::test]
    async fn concurrent_waits_share_one_wal_fsync() {
        use std::sync::Arc;
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(super::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap());
        assert!(dir.path().join("berth.db-wal").exists(), "WAL mode keeps a -wal file");
        // On this single-threaded runtime all 50 take their ticket before the first fsync
        // ends: the first runs alone, the second covers the other 49.
        let waits: Vec<_> = (0..50)
            .map(|_| {
                let s = Arc::clone(&store);
                tokio::spawn(async move { s.durable().await })
            })
            .collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        assert_eq!(store.wal.fsyncs.load(Ordering::Relaxed), 2);
        // A later wait is never served by an earlier fsync.
        store.durable().await.unwrap();
        assert_eq!(store.wal.fsyncs.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_missing_wal_needs_no_fsync() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(super::sync_wal(&dir.path().join("none.db-wal"), None).unwrap(), None);
        let wal = dir.path().join("x.db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        assert!(super::sync_wal(&wal, None).unwrap().is_some());
    }
}
