//! Wiring: turns a [`Config`] into a running registry. The only place that names
//! concrete backends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_meta::SqliteStore;
use berth_server::janitor::Janitor;
use berth_server::{AllowAll, Registry, RegistryConfig};
use berth_storage::FsBlobStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything `berth serve` can be told.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Blobs under `<data_dir>/blobs`, staged uploads under `<data_dir>/uploads`,
    /// metadata in `<data_dir>/berth.db`.
    pub data_dir: PathBuf,
    pub upload_ttl: Duration,
    pub janitor_interval: Duration,
}

impl Config {
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            upload_ttl: RegistryConfig::default().upload_ttl,
            janitor_interval: Duration::from_secs(600),
        }
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the stores under the data directory.
pub async fn registry(config: &Config) -> Result<Arc<Registry>, BoxError> {
    tokio::fs::create_dir_all(&config.data_dir).await?;
    let blobs = FsBlobStore::open(&config.data_dir).await?;
    let meta = SqliteStore::open(&config.data_dir.join("berth.db")).await?;
    Ok(Arc::new(Registry::new(
        Arc::new(blobs),
        Arc::new(meta),
        Arc::new(AllowAll),
        RegistryConfig { upload_ttl: config.upload_ttl },
    )))
}

/// Serves the registry on `listener` until `shutdown` is cancelled, running the
/// background jobs alongside.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), BoxError> {
    let registry = registry(&config).await?;
    let janitor = tokio::spawn(Janitor::new(Arc::clone(&registry)).run(config.janitor_interval, shutdown.clone()));
    let app = berth_server::app(registry);
    tracing::info!(addr = %listener.local_addr()?, data_dir = %config.data_dir.display(), "serving");
    let stop = shutdown.clone();
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await?;
    shutdown.cancel();
    janitor.await?;
    Ok(())
}
