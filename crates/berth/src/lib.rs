//! Wiring: turns a [`Config`] into a running registry. The only place that names
//! concrete backends.

use std::sync::Arc;
use std::time::Duration;

use berth_access::authorizer::{AccessConfig, TokenAuthorizer};
use berth_access::oidc::{IssuerPolicy, OidcConfig};
use berth_federation::replication::Replication;
use berth_federation::{Federation, SealKey, Timeouts, UpstreamSpec, WebhookConfig, Webhooks};
use berth_jobs::audit::AuditLog;
use berth_jobs::gc::{Collector, Gc, GcConfig};
use berth_jobs::janitor::Janitor;
use berth_jobs::prune::AuditPruner;
use berth_jobs::retention::{self, RetentionJob};
use berth_jobs::{JobRecorder, Jobs};
use berth_meta::{
    AuditStore, CachedStore, FederationStore, GcStore, IdentityStore, MetadataStore, OpsStore, PgStore, PolicyStore,
    PoolConfig, RetentionStore, ScrubStore, SqliteStore,
};
use berth_server::listen::{self, ServeLimits};
use berth_server::observe::stores::Timed;
use berth_server::observe::{JobOutcome, Metrics};
use berth_server::tls::{self, TlsFiles};
use berth_server::{Registry, RegistryConfig};
pub use berth_storage::S3Config;
use berth_storage::{BlobStore, FsBlobStore, S3BlobStore};
pub use config::S3Url;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The longest validity S3 accepts for a presigned URL (SigV4): 7 days.
const MAX_REDIRECT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the audit log is pruned.
const AUDIT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How long replication copies running at a graceful stop may take to finish (the rest
/// are taken over when their claim runs out, by this node after a restart or another).
const REPLICATION_GRACE: Duration = Duration::from_secs(10);

mod bootstrap;
pub use bootstrap::ADMIN;
pub mod cli;
pub mod config;
pub use config::{
    Config, ConfigError, DEFAULT_AUDIT_RETENTION, DEFAULT_REDIRECT_TTL, DEFAULT_SCRUB_INTERVAL,
    DEFAULT_STORAGE_GAUGE_INTERVAL, LogFormat,
};
mod error;
pub use error::BoxError;

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
    pub retention: Arc<dyn RetentionStore>,
    pub policy: Arc<dyn PolicyStore>,
    pub scrub: Arc<dyn ScrubStore>,
    /// The registry's store again, as the garbage collector sees it (through the same
    /// cache in embedded mode, so that what GC removes leaves the cache too).
    pub gc: Arc<dyn GcStore>,
    pub ops: Arc<dyn OpsStore>,
    /// Upstreams and cached tags' checks (`berth_federation`).
    pub federation: Arc<dyn FederationStore>,
    /// The outbox and the webhooks its dispatcher delivers to.
    pub outbox: Arc<dyn berth_meta::OutboxStore>,
    pub webhooks: Arc<dyn berth_meta::WebhookStore>,
    /// Replication's registries, rules, executions and tasks.
    pub replication: Arc<dyn berth_meta::ReplicationStore>,
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
    let (stores, lock) = match &config.database.url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let db = &config.database;
            let pool = PoolConfig {
                max_connections: db.max_connections,
                acquire_timeout: db.acquire_timeout,
                idle_timeout: db.idle_timeout,
            };
            let store = PgStore::connect(url, &pool).await?;
            let meta = Arc::new(Timed::database(store.clone(), metrics));
            let (identity, audit, ops) = (Arc::new(store.clone()), Arc::new(store.clone()), Arc::new(store.clone()));
            let (policy, scrub, retention) =
                (Arc::new(store.clone()), Arc::new(store.clone()), Arc::new(store.clone()));
            let federation = Arc::new(store.clone());
            let (outbox, webhooks) = (Arc::new(store.clone()), Arc::new(store.clone()));
            let replication = Arc::new(store.clone());
            let gc = Arc::new(store);
            let stores = Stores {
                meta,
                identity,
                audit,
                ops,
                policy,
                scrub,
                retention,
                gc,
                federation,
                outbox,
                webhooks,
                replication,
                lock: None,
            };
            (stores, None)
        }
        // Not the URL itself: it holds a password.
        Some(_) => return Err("database.url: unsupported database URL: expected postgres://".into()),
        None => {
            // The embedded database belongs to one process, which is what makes its
            // read cache coherent: a second `berth serve` on the same directory stops here.
            let lock = std::fs::File::create(config.data_dir.join("berth.lock"))?;
            lock.try_lock().map_err(|_| format!("{} is in use by another berth process", config.data_dir.display()))?;
            // One database, its pools shared by the clones: the registry's tables behind
            // the read cache, the identity and audit tables read directly.
            let store = SqliteStore::open(&config.data_dir.join("berth.db")).await?;
            // Timed inside the cache: a hit is not a database operation.
            let timed = Timed::database(store.clone(), metrics);
            let cached = Arc::new(CachedStore::new(timed, config.limits.manifest_cache_bytes));
            let stores = Stores {
                meta: cached.clone(),
                identity: Arc::new(store.clone()),
                audit: Arc::new(store.clone()),
                retention: Arc::new(store.clone()),
                policy: Arc::new(store.clone()),
                scrub: Arc::new(store.clone()),
                federation: Arc::new(store.clone()),
                outbox: Arc::new(store.clone()),
                webhooks: Arc::new(store.clone()),
                replication: Arc::new(store.clone()),
                ops: Arc::new(store),
                gc: cached,
                lock: None,
            };
            (stores, Some(lock))
        }
    };
    Ok(Stores { lock, ..stores })
}

/// Opens the stores the config names and starts the audit log's writer.
pub async fn open(config: &Config) -> Result<Node, BoxError> {
    let metrics = Arc::new(Metrics::new(config.metrics.enabled));
    let stores = open_database_timed(config, Arc::clone(&metrics)).await?;
    let blobs = open_blobs(config, &metrics).await?;
    let registry_config = RegistryConfig {
        max_open_uploads: config.limits.max_open_uploads,
        body_idle_timeout: config.limits.body_idle_timeout,
        max_uploads: config.limits.max_uploads,
        redirect_ttl: config.storage.redirect.then_some(config.storage.redirect_ttl),
        ..RegistryConfig::default()
    };
    bootstrap::ensure_admin(&*stores.identity, config.auth.admin_password.as_deref()).await?;
    let access = AccessConfig {
        service: config.auth.service_name.clone(),
        external_url: config.listen.external_url.clone(),
        https: config.tls.cert.is_some(),
        token_ttl: config.auth.token_ttl,
        auto_create_projects: config.auth.auto_create_projects,
        oidc: OidcConfig {
            issuers: IssuerPolicy {
                allowed: config.auth.oidc_issuers.clone(),
                allow_private: config.auth.oidc_allow_private,
            },
            ..OidcConfig::default()
        },
        ..AccessConfig::default()
    };
    let tokens = Arc::new(TokenAuthorizer::open(Arc::clone(&stores.identity), access).await?);
    let jobs = Jobs::new(
        Arc::clone(&blobs),
        Arc::clone(&stores.meta),
        stores.scrub,
        AuditLog::new(stores.audit).with_metrics(metrics.audit_writer()),
        Arc::clone(&metrics) as Arc<dyn JobRecorder>,
        config.jobs.upload_ttl,
    )
    .with_retention(stores.retention)
    .with_gc(Gc::new(stores.gc, gc_config(config)));
    let jobs = Arc::new(jobs);
    let key = federation_key(config)?;
    let outbox = Arc::clone(&stores.outbox);
    let replication =
        Arc::new(Replication::new(stores.replication, outbox, Arc::clone(&jobs), key.clone(), Timeouts::default()));
    let webhooks =
        Webhooks::new(stores.webhooks, stores.outbox, Arc::clone(&jobs), key.clone(), webhook_config(config)?)?
            .with_replication(Arc::clone(&replication));
    let federation = Federation::new(stores.federation, Arc::clone(&jobs), key, Timeouts::default())
        .with_webhooks(Arc::new(webhooks))
        .with_replication(replication);
    federation.refresh().await?;
    configure_upstreams(&federation, &config.federation.upstreams).await?;
    let registry =
        Registry::new(blobs, stores.meta, stores.identity, stores.policy, tokens.clone(), jobs, registry_config)
            .with_token_auth(tokens)
            .with_observability(metrics, stores.ops)
            .with_federation(Arc::new(federation));
    // Started read-only: the switch is stored for every node. Otherwise the stored one
    // (a switch set through the API survives restarts).
    if config.read_only {
        berth_server::system::set_read_only(&registry, true).await?;
    } else {
        berth_server::system::sync(&registry).await?;
    }
    // The audit writer runs from here on (so that recording never waits on a writer
    // nobody started); `serve` stops it after the last request.
    registry.jobs.audit.start();
    Ok(Node { registry: Arc::new(registry), _lock: stores.lock })
}

/// `[webhooks]`, and the external host the payloads name.
fn webhook_config(config: &Config) -> Result<WebhookConfig, BoxError> {
    let w = &config.webhooks;
    for (key, value) in
        [("max_attempts", w.max_attempts), ("concurrency", w.concurrency), ("per_webhook", w.per_webhook)]
    {
        if value == 0 {
            return Err(format!("webhooks.{key} must be at least 1").into());
        }
    }
    if w.timeout.is_zero() || w.retry_base.is_zero() || w.retry_max < w.retry_base {
        return Err("webhooks: timeout and retry_base must be more than 0, retry_max at least retry_base".into());
    }
    let host = config.listen.external_url.as_deref().and_then(|url| {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        rest.split('/').next().filter(|h| !h.is_empty()).map(str::to_owned)
    });
    Ok(WebhookConfig {
        allow_private: w.allow_private,
        timeout: w.timeout,
        max_attempts: w.max_attempts,
        retry_base: w.retry_base,
        retry_max: w.retry_max,
        concurrency: w.concurrency,
        per_webhook: w.per_webhook,
        keep: w.keep,
        origin: berth_federation::webhooks::Origin { host },
        ..WebhookConfig::default()
    })
}

/// The key upstream passwords are sealed with: the configured file, else (embedded mode)
/// one kept in the data directory, created on first start; scale-out nodes without one
/// cannot store passwords (each node would make its own key).
fn federation_key(config: &Config) -> Result<Option<SealKey>, BoxError> {
    Ok(match (&config.federation.key_file, &config.database.url) {
        (Some(path), _) => Some(SealKey::load(path).map_err(|e| format!("federation.key_file: {e}"))?),
        (None, None) => Some(SealKey::load_or_create(&config.data_dir.join("federation.key"))?),
        (None, Some(_)) => None,
    })
}

/// Creates or replaces the config file's upstreams (`[[federation.upstreams]]`), each
/// `password_file` read into the password the API would take.
async fn configure_upstreams(
    federation: &Federation,
    entries: &[serde_json::Map<String, serde_json::Value>],
) -> Result<(), BoxError> {
    for (i, entry) in entries.iter().enumerate() {
        let what = format!("federation.upstreams[{i}]");
        let mut entry = entry.clone();
        if let Some(path) = entry.remove("password_file") {
            let path = path.as_str().ok_or_else(|| format!("{what}.password_file: expected a path"))?;
            let password = std::fs::read_to_string(path).map_err(|e| format!("{what}.password_file: {path}: {e}"))?;
            entry.insert("password".into(), password.trim_end_matches(['\r', '\n']).into());
        }
        let spec: UpstreamSpec = serde_json::from_value(entry.into()).map_err(|e| format!("{what}: {e}"))?;
        let exists = federation.upstreams().await?.iter().any(|u| u.name == spec.name);
        let result = match federation.put_upstream(spec.clone(), !exists).await {
            // Another node of the registry created it first.
            Err(e)
                if !exists
                    && e.kind == berth_core::ErrorKind::Conflict
                    && e.detail.as_ref().and_then(|d| d.as_str()) == Some(spec.name.as_str()) =>
            {
                federation.put_upstream(spec, false).await
            }
            other => other,
        };
        result.map_err(|e| format!("{what}: {}", e.message()))?;
    }
    Ok(())
}

/// The blob store the config names, set up to sign redirects if they are on.
async fn open_blobs(config: &Config, metrics: &Arc<Metrics>) -> Result<Arc<dyn BlobStore>, BoxError> {
    let storage = &config.storage;
    if storage.redirect && (storage.redirect_ttl.is_zero() || storage.redirect_ttl > MAX_REDIRECT_TTL) {
        return Err(
            format!("redirect TTL must be more than 0 and at most 7 days, not {:?}", storage.redirect_ttl).into()
        );
    }
    Ok(match config.s3() {
        Some(s3) => {
            let store = S3BlobStore::new(s3.clone())?;
            match &storage.redirect_endpoint {
                Some(endpoint) if storage.redirect => {
                    Arc::new(Timed::blobs(store.with_public_endpoint(&s3, endpoint)?, Arc::clone(metrics)))
                }
                _ => Arc::new(Timed::blobs(store, Arc::clone(metrics))),
            }
        }
        None if storage.redirect => {
            return Err("redirects (--redirect) need S3 storage (--storage s3://…): the filesystem store has no URL \
                        to redirect to"
                .into());
        }
        None => Arc::new(Timed::blobs(FsBlobStore::open(&config.data_dir).await?, Arc::clone(metrics))),
    })
}

fn gc_config(config: &Config) -> GcConfig {
    GcConfig {
        grace: config.jobs.gc_grace,
        interval: config.jobs.gc_interval,
        full_interval: config.jobs.gc_full_interval,
        delete_untagged: config.jobs.gc_delete_untagged,
    }
}

/// Serves the registry on `listener` until `shutdown` is cancelled, running the
/// background jobs alongside.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), BoxError> {
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(TlsFiles { cert: cert.clone(), key: key.clone() })?),
        (None, None) => None,
        _ => return Err("tls.cert and tls.key: set both or neither".into()),
    };
    let node = open(&config).await?;
    let registry = Arc::clone(&node.registry);
    let janitor =
        tokio::spawn(Janitor::new(Arc::clone(&registry.jobs)).run(config.jobs.janitor_interval, shutdown.clone()));
    let pruner = AuditPruner::new(Arc::clone(&registry.jobs), config.jobs.audit_retention);
    let pruner = tokio::spawn(pruner.run(AUDIT_PRUNE_INTERVAL, shutdown.clone()));
    let flusher = tokio::spawn(retention::flush_pulls(
        Arc::clone(&registry.jobs),
        config.jobs.pull_flush_interval,
        shutdown.clone(),
    ));
    let retention = tokio::spawn(
        RetentionJob::new(Arc::clone(&registry.jobs)).run(config.jobs.retention_interval, shutdown.clone()),
    );
    let scrub = berth_jobs::scrub::run_every(Arc::clone(&registry.jobs), config.jobs.scrub_interval, shutdown.clone());
    let scrub = tokio::spawn(scrub);
    let collector = tokio::spawn(Collector::new(Arc::clone(&registry.jobs)).run(shutdown.clone()));
    let usage = storage_gauge(Arc::clone(&registry), config.metrics.storage_interval, shutdown.clone());
    let usage = tokio::spawn(usage);
    let switches = tokio::spawn(berth_server::system::sync_every(Arc::clone(&registry), shutdown.clone()));
    let upstreams = registry.federation.clone().map(|f| tokio::spawn(f.run(shutdown.clone().cancelled_owned())));
    // The outbox's dispatcher: with no webhook it empties the outbox all the same.
    let dispatcher =
        registry.federation.as_ref().and_then(|f| f.webhooks.clone()).map(|w| tokio::spawn(w.run(shutdown.clone())));
    // Replication's executor: copies that run at a stop get a little time to finish.
    let replicator = registry
        .federation
        .as_ref()
        .and_then(|f| f.replication.clone())
        .map(|r| tokio::spawn(r.execute(shutdown.clone(), REPLICATION_GRACE)));
    let metrics_server = match config.metrics.listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            tracing::info!(metrics_addr = %listener.local_addr()?, "serving /metrics");
            let app = berth_server::metrics_app(Arc::clone(&registry));
            let limits = ServeLimits {
                header_timeout: config.listen.header_timeout,
                max_connections: 64,
                shutdown_timeout: config.listen.shutdown_timeout,
                ..ServeLimits::default()
            };
            Some(tokio::spawn(listen::serve(listener, app, limits, shutdown.clone())))
        }
        None => None,
    };
    let app = berth_server::app(Arc::clone(&registry));
    let storage = config.s3().map(|s| format!("s3://{}/{}", s.bucket, s.prefix));
    tracing::info!(
        addr = %listener.local_addr()?,
        tls = tls.is_some(),
        storage = storage.as_deref().unwrap_or("data-dir"),
        database = if config.database.url.is_some() { "postgres" } else { "sqlite" },
        data_dir = %config.data_dir.display(),
        "serving"
    );
    let limits = ServeLimits {
        header_timeout: config.listen.header_timeout,
        max_connections: connection_bound(config.listen.max_connections),
        shutdown_timeout: config.listen.shutdown_timeout,
        trusted_proxies: config.listen.trusted_proxies.clone(),
        tls,
    };
    let served = listen::serve(listener, app, limits, shutdown.clone()).await;
    shutdown.cancel();
    janitor.await?;
    pruner.await?;
    flusher.await?;
    retention.await?;
    // No request runs any more: the pull times they recorded are written.
    if let Ok(store) = registry.jobs.retention_store()
        && let Err(e) = registry.jobs.pulls.flush(&**store).await
    {
        tracing::warn!(error = %e, "writing pull times at shutdown failed: they are lost");
    }
    scrub.await?;
    collector.await?;
    usage.await?;
    switches.await?;
    if let Some(dispatcher) = dispatcher {
        dispatcher.await?;
    }
    if let Some(replicator) = replicator {
        replicator.await?;
    }
    if let Some(upstreams) = upstreams {
        upstreams.await?;
    }
    if let Some(server) = metrics_server {
        server.await??;
    }
    // No request runs any more: what they recorded is stored before the process ends.
    registry.jobs.audit.stop().await;
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

/// Makes glibc's malloc serve every allocation of 4 MiB or more with its own mapping,
/// returned to the system when freed. Without it glibc raises that threshold to the size
/// of the largest block freed so far, so after the first password check (argon2id takes a
/// 19 MiB block) each thread's arena kept such a block resident: a crowd of logins left
/// the server at 200–300 MB instead of ~40 MB. Call before starting threads.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
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
