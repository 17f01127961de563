//! The PostgreSQL metadata store (scale-out mode): one pooled set of connections shared
//! by every node of a deployment; the database carries all coordination.

use std::time::Duration;

use berth_core::{Descriptor, Digest, Error, ErrorKind, Reference, RepoName, Tag};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

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
    (1, include_str!("../migrations/postgres/0001_registry.sql")),
    (2, include_str!("../migrations/postgres/0002_bounds.sql")),
    (3, include_str!("../migrations/postgres/0003_identity.sql")),
    (4, include_str!("../migrations/postgres/0004_gc.sql")),
    (5, include_str!("../migrations/postgres/0005_policies.sql")),
    (6, include_str!("../migrations/postgres/0006_retention.sql")),
    (8, include_str!("../migrations/postgres/0008_audit_count.sql")),
    (9, include_str!("../migrations/postgres/0009_settings.sql")),
    (10, include_str!("../migrations/postgres/0010_gc_review_ms.sql")),
    (11, include_str!("../migrations/postgres/0011_federation.sql")),
    (12, include_str!("../migrations/postgres/0012_outbox.sql")),
    (13, include_str!("../migrations/postgres/0013_replication.sql")),
];

/// The PostgreSQL pool of one node.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Connections open at most (sqlx's default is 10; a node serves many requests).
    pub max_connections: u32,
    /// A request waits this long for a free database connection, then fails.
    pub acquire_timeout: Duration,
    /// An idle connection is closed after this long (sqlx's default).
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    /// The same pool: PostgreSQL has no single-writer rule.
    writer: PgPool,
    reader: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`) with the default
    /// pool and migrates.
    pub async fn open(url: &str) -> Result<PgStore, Error> {
        PgStore::connect(url, &PoolConfig::default()).await
    }

    /// Connects to `url` with `pool`'s bounds and migrates.
    pub async fn connect(url: &str, pool: &PoolConfig) -> Result<PgStore, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections)
            .acquire_timeout(pool.acquire_timeout)
            .idle_timeout(pool.idle_timeout)
            .connect(url)
            .await
            .map_err(db_err)?;
        migrate(&pool).await?;
        Ok(PgStore { writer: pool.clone(), reader: pool })
    }

    /// A PostgreSQL commit is durable when it returns (`synchronous_commit = on`), and
    /// concurrent commits share WAL flushes already.
    async fn durable(&self) -> Result<(), Error> {
        Ok(())
    }

    fn pools(&self) -> [(&'static str, &PgPool); 1] {
        [("shared", &self.reader)]
    }
}

async fn migrate(pool: &PgPool) -> Result<(), Error> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    // Nodes starting together migrate one at a time.
    sqlx::query("SELECT pg_advisory_xact_lock(7420512)").execute(&mut *tx).await.map_err(db_err)?;
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    for &(version, sql) in MIGRATIONS {
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
    }
    tx.commit().await.map_err(db_err)
}

/// The row-lock clauses of the shared SQL: PostgreSQL row locks (see `sql_store!` and `gc`);
/// `skip` takes the rows not locked by others, without waiting.
macro_rules! row_lock {
    (share) => {
        " FOR SHARE"
    };
    (skip) => {
        " FOR UPDATE SKIP LOCKED"
    };
    (update) => {
        " FOR UPDATE"
    };
}

sql_store!(PgStore);
gc_store!(PgStore);
identity_store!(PgStore, sqlx::Postgres);
audit_store!(PgStore);
retention_store!(PgStore);
policy_store!(PgStore);
federation_store!(PgStore);
outbox_store!(PgStore);
webhook_store!(PgStore);
replication_store!(PgStore);
scrub_store!(PgStore);
scrub_checks!(PgStore, sqlx::Postgres);
policy_checks!(PgStore, sqlx::Postgres);
ops_store!(PgStore, "CASE WHEN strpos(rb.repo, '/') > 0 THEN split_part(rb.repo, '/', 1) ELSE 'library' END");

#[cfg(test)]
mod tests {

    #[tokio::test]
    async fn postgres_store_passes_the_gc_suite() {
        let pg = berth_testkit::Postgres::start();
        let store = super::PgStore::open(&pg.database("gc")).await.unwrap();
        crate::gc::suite::run(&store).await;
    }
    #[tokio::test]
    async fn postgres_store_reads_gc_queue_entries_an_older_node_wrote_in_seconds() {
        let pg = berth_testkit::Postgres::start();
        let store = super::PgStore::open(&pg.database("gc_seconds")).await.unwrap();
        let queue = crate::gc::suite::queue_in_seconds!(store.writer.clone());
        crate::gc::suite::entries_an_older_node_queued_in_seconds_are_read_as_seconds(&store, queue).await;
    }

    #[tokio::test]
    async fn postgres_store_passes_the_shared_suite() {
        let pg = berth_testkit::Postgres::start();
        let store = super::PgStore::open(&pg.database("suite")).await.unwrap();
        crate::suite::run(&store).await;
    }

    #[tokio::test]
    async fn postgres_store_passes_the_identity_and_audit_suites() {
        let pg = berth_testkit::Postgres::start();
        let store = super::PgStore::open(&pg.database("identity")).await.unwrap();
        crate::identity::suite::run(&store, &store).await;
        crate::audit::suite::run(&store).await;
        crate::policy::suite::run(&store, &store, &store).await;
        crate::federation::suite::run(&store, &store).await;
        crate::scrub::suite::run(&store, &store).await;
    }

    /// PostgreSQL's `TEXT` refuses U+0000.
    #[tokio::test]
    async fn postgres_refuses_a_nul_in_an_audit_event_as_bad_request() {
        let pg = berth_testkit::Postgres::start();
        let store = super::PgStore::open(&pg.database("refused")).await.unwrap();
        let poison = crate::audit::suite::login_by("\0admin");
        crate::audit::suite::refused_batches(&store, poison).await;
    }

    #[tokio::test]
    async fn postgres_store_passes_the_retention_suite() {
        let pg = berth_testkit::Postgres::start();
        let store = super::PgStore::open(&pg.database("retention")).await.unwrap();
        crate::retention::suite::run(&store, &store).await;
    }

    #[tokio::test]
    async fn postgres_store_passes_the_webhook_and_outbox_suites() {
        let pg = berth_testkit::Postgres::start();
        let store = super::PgStore::open(&pg.database("outbox")).await.unwrap();
        crate::webhooks::suite::run(&store, &store, &store).await;
        crate::outbox::suite::run(&store, &store, &store, &store, &store).await;
    }

    #[tokio::test]
    async fn postgres_store_passes_the_replication_suite() {
        let pg = berth_testkit::Postgres::start();
        let store = super::PgStore::open(&pg.database("replication")).await.unwrap();
        crate::replication::suite::run(&store, &store).await;
        // Two nodes at once, on two connections: `FOR UPDATE SKIP LOCKED` gives each task
        // to one of them, and the execution's row, updated before its pending tasks are
        // counted, lets exactly one of two last results finish it.
        crate::replication::suite::concurrent_claims_never_share_a_task(&store).await;
        crate::replication::suite::results_at_once_finish_an_execution_once(&store).await;
    }

    #[tokio::test]
    async fn postgres_store_passes_the_ops_suite() {
        let pg = berth_testkit::Postgres::start();
        let store = super::PgStore::open(&pg.database("ops")).await.unwrap();
        crate::ops::suite::run(&store, &store).await;
    }

    #[tokio::test]
    async fn concurrent_nodes_migrate_once() {
        let pg = berth_testkit::Postgres::start();
        let url = pg.database("migrate");
        let (a, b) = tokio::join!(super::PgStore::open(&url), super::PgStore::open(&url));
        a.unwrap();
        b.unwrap();
    }
}
