//! Wiring: turns a [`Config`] into a running registry. The only place that names
//! concrete backends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_meta::{
    AuditStore, CachedStore, DEFAULT_CACHE_BYTES, IdentityStore, MetadataStore, OpsStore, PgStore, SqliteStore,
};
use berth_server::access::authorizer::{AccessConfig, TokenAuthorizer};
use berth_server::audit::{AuditLog, AuditPruner};
use berth_server::janitor::Janitor;
use berth_server::listen::{self, ServeLimits};
use berth_server::observe::stores::Timed;
use berth_server::observe::{JobOutcome, Metrics};
use berth_server::{Registry, RegistryConfig};
pub use berth_storage::S3Config;
use berth_storage::{BlobStore, FsBlobStore, S3BlobStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long the audit log keeps an entry unless told otherwise: 90 days.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// How often the audit log is pruned.
const AUDIT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often each node recomputes `berth_storage_bytes` unless told otherwise (one scan
/// of `repo_blobs`).
pub const DEFAULT_STORAGE_GAUGE_INTERVAL: Duration = Duration::from_secs(60);

/// How log lines are written (on stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one line per event, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// Everything `berth serve` can be told.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Embedded mode: blobs under `<data_dir>/blobs`, staged uploads under
    /// `<data_dir>/uploads`, metadata in `<data_dir>/berth.db`.
    pub data_dir: PathBuf,
    /// `postgres://…` for shared metadata; `None` for the embedded SQLite database.
    pub database: Option<String>,
    /// An S3 bucket for shared blob storage; `None` for files under the data directory.
    pub storage: Option<S3Config>,
    pub upload_ttl: Duration,
    pub janitor_interval: Duration,
    /// Uploads open at once in one repository; a `POST` beyond is refused (429).
    pub max_open_uploads: u32,
    /// Bytes of manifests and blob records the embedded mode keeps in memory, keys
    /// included (unused in scale-out mode, which caches nothing).
    pub manifest_cache_bytes: usize,
    /// Time allowed for a request head (and an idle HTTP/1 keep-alive connection).
    pub header_timeout: Duration,
    /// A request body silent this long fails.
    pub body_idle_timeout: Duration,
    /// Connections open at once; at most three quarters of the open-file limit.
    pub max_connections: usize,
    /// Requests carrying upload bytes in flight at once; more get 429.
    pub max_uploads: usize,
    /// The password of the `admin` user created on first start (when no system
    /// administrator exists); `None` takes `BERTH_ADMIN_PASSWORD`, else the file
    /// `BERTH_ADMIN_PASSWORD_FILE` names, else generates one and prints it once on stderr.
    pub admin_password: Option<String>,
    /// The URL clients reach Berth at; the token realm is `<external_url>/token`.
    /// `None`: `http://` and the request's `Host`.
    pub external_url: Option<String>,
    /// The token service's name (`service` in challenges, `iss`/`aud` in tokens).
    pub service_name: String,
    /// Lifetime of registry tokens.
    pub token_ttl: Duration,
    /// A system administrator's push into a missing project creates it (private).
    pub auto_create_projects: bool,
    /// Audit entries older than this are pruned.
    pub audit_retention: Duration,
    /// Record metrics and serve `/metrics` (off: nothing is recorded, `/metrics` is 404).
    pub metrics: bool,
    /// A second listen address serving `/metrics` without credentials (and the probes),
    /// meant for a private interface; on the main address `/metrics` is a system
    /// administrator's.
    pub metrics_listen: Option<SocketAddr>,
    /// How often `berth_storage_bytes` (bytes per project) is recomputed.
    pub metrics_storage_interval: Duration,
    /// How `berth serve` writes its log (read by `main`, which sets up logging).
    pub log_format: LogFormat,
}

impl Config {
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let (registry, limits) = (RegistryConfig::default(), ServeLimits::default());
        let access = AccessConfig::default();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            database: None,
            storage: None,
            upload_ttl: registry.upload_ttl,
            janitor_interval: Duration::from_secs(600),
            max_open_uploads: RegistryConfig::default().max_open_uploads,
            manifest_cache_bytes: DEFAULT_CACHE_BYTES,
            header_timeout: limits.header_timeout,
            body_idle_timeout: registry.body_idle_timeout,
            max_connections: limits.max_connections,
            max_uploads: registry.max_uploads,
            admin_password: None,
            external_url: access.external_url,
            service_name: access.service,
            token_ttl: access.token_ttl,
            auto_create_projects: access.auto_create_projects,
            audit_retention: DEFAULT_AUDIT_RETENTION,
            metrics: true,
            metrics_listen: None,
            metrics_storage_interval: DEFAULT_STORAGE_GAUGE_INTERVAL,
            log_format: LogFormat::Text,
        }
    }
}

mod bootstrap;
pub use bootstrap::ADMIN;
pub mod cli;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running registry's state, and what it holds while it runs.
pub struct Node {
    pub registry: Arc<Registry>,
    /// The exclusive lock on an embedded data directory.
    _lock: Option<std::fs::File>,
}

/// The database's stores, and the data directory's lock in embedded mode.
pub struct Stores {
    pub meta: Arc<dyn MetadataStore>,
    pub identity: Arc<dyn IdentityStore>,
    pub audit: Arc<dyn AuditStore>,
    pub ops: Arc<dyn OpsStore>,
    lock: Option<std::fs::File>,
}

/// Opens the database the config names (taking the data directory's lock in embedded
/// mode): `berth serve`'s, and the offline commands' on a stopped server's data.
pub async fn open_database(config: &Config) -> Result<Stores, BoxError> {
    open_database_timed(config, Arc::new(Metrics::new(false))).await
}

/// [`open_database`], the registry's store timed into `metrics`.
async fn open_database_timed(config: &Config, metrics: Arc<Metrics>) -> Result<Stores, BoxError> {
    tokio::fs::create_dir_all(&config.data_dir).await?;
    let (stores, lock) = match &config.database {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = PgStore::open(url).await?;
            let stores = Stores {
                meta: Arc::new(Timed::database(store.clone(), metrics)),
                identity: Arc::new(store.clone()),
                audit: Arc::new(store.clone()),
                ops: Arc::new(store),
                lock: None,
            };
            (stores, None)
        }
        Some(other) => return Err(format!("unsupported database URL {other:?}: expected postgres://").into()),
        None => {
            // The embedded database belongs to one process, which is what makes its
            // read cache coherent: a second `berth serve` on the same directory stops here.
            let lock = std::fs::File::create(config.data_dir.join("berth.lock"))?;
            lock.try_lock().map_err(|_| format!("{} is in use by another berth process", config.data_dir.display()))?;
            // One database, its pools shared by the clones: the registry's tables behind
            // the read cache, the identity and audit tables read directly.
            let store = SqliteStore::open(&config.data_dir.join("berth.db")).await?;
            let stores = Stores {
                // Timed inside the cache: a hit is not a database operation.
                meta: Arc::new(CachedStore::new(Timed::database(store.clone(), metrics), config.manifest_cache_bytes)),
                identity: Arc::new(store.clone()),
                audit: Arc::new(store.clone()),
                ops: Arc::new(store),
                lock: None,
            };
            (stores, Some(lock))
        }
    };
    Ok(Stores { lock, ..stores })
}

/// Opens the stores the config names and starts the audit log's writer.
pub async fn open(config: &Config) -> Result<Node, BoxError> {
    let metrics = Arc::new(Metrics::new(config.metrics));
    let stores = open_database_timed(config, Arc::clone(&metrics)).await?;
    let blobs: Arc<dyn BlobStore> = match &config.storage {
        Some(s3) => Arc::new(Timed::blobs(S3BlobStore::new(s3.clone())?, Arc::clone(&metrics))),
        None => Arc::new(Timed::blobs(FsBlobStore::open(&config.data_dir).await?, Arc::clone(&metrics))),
    };
    let registry_config = RegistryConfig {
        upload_ttl: config.upload_ttl,
        max_open_uploads: config.max_open_uploads,
        body_idle_timeout: config.body_idle_timeout,
        max_uploads: config.max_uploads,
        ..RegistryConfig::default()
    };
    bootstrap::ensure_admin(&*stores.identity, config.admin_password.as_deref()).await?;
    let access = AccessConfig {
        service: config.service_name.clone(),
        external_url: config.external_url.clone(),
        token_ttl: config.token_ttl,
        auto_create_projects: config.auto_create_projects,
        ..AccessConfig::default()
    };
    let tokens = Arc::new(TokenAuthorizer::open(Arc::clone(&stores.identity), access).await?);
    let registry = Registry::new(
        blobs,
        stores.meta,
        stores.identity,
        tokens.clone(),
        AuditLog::new(stores.audit),
        registry_config,
    )
    .with_token_auth(tokens)
    .with_observability(metrics, stores.ops);
    // The audit writer runs from here on (so that recording never waits on a writer
    // nobody started); `serve` stops it after the last request.
    registry.audit.start();
    Ok(Node { registry: Arc::new(registry), _lock: stores.lock })
}

/// Serves the registry on `listener` until `shutdown` is cancelled, running the
/// background jobs alongside.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), BoxError> {
    let node = open(&config).await?;
    let registry = Arc::clone(&node.registry);
    let janitor = tokio::spawn(Janitor::new(Arc::clone(&registry)).run(config.janitor_interval, shutdown.clone()));
    let pruner = AuditPruner::new(Arc::clone(&registry), config.audit_retention);
    let pruner = tokio::spawn(pruner.run(AUDIT_PRUNE_INTERVAL, shutdown.clone()));
    let usage = storage_gauge(Arc::clone(&registry), config.metrics_storage_interval, shutdown.clone());
    let usage = tokio::spawn(usage);
    let metrics_server = match config.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            tracing::info!(metrics_addr = %listener.local_addr()?, "serving /metrics");
            let app = berth_server::metrics_app(Arc::clone(&registry));
            let limits = ServeLimits { header_timeout: config.header_timeout, max_connections: 64 };
            Some(tokio::spawn(listen::serve(listener, app, limits, shutdown.clone())))
        }
        None => None,
    };
    let app = berth_server::app(Arc::clone(&registry));
    let storage = config.storage.as_ref().map(|s| format!("s3://{}/{}", s.bucket, s.prefix));
    tracing::info!(
        addr = %listener.local_addr()?,
        storage = storage.as_deref().unwrap_or("data-dir"),
        database = if config.database.is_some() { "postgres" } else { "sqlite" },
        data_dir = %config.data_dir.display(),
        "serving"
    );
    let limits = ServeLimits {
        header_timeout: config.header_timeout,
        max_connections: connection_bound(config.max_connections),
    };
    let served = listen::serve(listener, app, limits, shutdown.clone()).await;
    shutdown.cancel();
    janitor.await?;
    pruner.await?;
    usage.await?;
    if let Some(server) = metrics_server {
        server.await??;
    }
    // No request runs any more: what they recorded is stored before the process ends.
    registry.audit.stop().await;
    drop(node);
    Ok(served?)
}

/// Keeps `berth_storage_bytes` current: every node computes it every `interval` (a gauge
/// each node exposes; no lease, the query only reads).
async fn storage_gauge(registry: Arc<Registry>, interval: Duration, shutdown: CancellationToken) {
    let Some(ops) = registry.ops.clone().filter(|_| registry.metrics.enabled()) else { return };
    loop {
        let started = std::time::Instant::now();
        let outcome = match ops.storage_by_project().await {
            Ok(usage) => {
                registry.metrics.set_storage(&usage);
                JobOutcome::Ok
            }
            Err(e) => {
                tracing::warn!(error = %e, "computing storage per project failed");
                JobOutcome::Failed
            }
        };
        registry.metrics.job_run("storage-usage", outcome, started.elapsed());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (each connection
/// is a file descriptor); returns the limit now in force.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// `configured`, or fewer if the open-file limit could not hold them: connections may
/// take three quarters of it, the rest is kept for files (blobs being served, staged
/// uploads, the database), so a crowd of connections cannot make those fail.
fn connection_bound(configured: usize) -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return configured;
    }
    let room = usize::try_from(limit.rlim_cur / 4 * 3).unwrap_or(usize::MAX);
    if configured > room {
        tracing::warn!(
            configured,
            open_files = limit.rlim_cur,
            used = room,
            "max-connections lowered to fit the open-file limit"
        );
        return room;
    }
    configured
}
