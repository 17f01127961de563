//! The `berth` command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "berth", version, about = "A container image registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant (serve's flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the registry.
    Serve(ServeArgs),
    #[command(flatten)]
    Manage(berth::cli::Command),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BERTH_LISTEN", default_value = "0.0.0.0:5000")]
    listen: SocketAddr,
    /// Where blobs, staged uploads and the metadata database live.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    data_dir: PathBuf,
    /// Shared metadata database (`postgres://USER:PASSWORD@HOST:PORT/DB`) for scale-out;
    /// without it, metadata is an embedded SQLite database in the data directory.
    #[arg(long, env = "BERTH_DATABASE")]
    database: Option<String>,
    /// Shared blob storage (`s3://BUCKET/PREFIX?endpoint=URL&region=REGION&path_style=true`,
    /// credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); without it, blobs are
    /// files in the data directory.
    #[arg(long, env = "BERTH_STORAGE", value_parser = berth::S3Config::from_url)]
    storage: Option<berth::S3Config>,
    /// Abandon uploads idle for this long (e.g. 24h, 30m).
    #[arg(long, env = "BERTH_UPLOAD_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    upload_ttl: Duration,
    /// How often the upload janitor runs.
    #[arg(long, env = "BERTH_JANITOR_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    janitor_interval: Duration,
    /// Uploads open at once in one repository; a POST beyond is refused (429) until one
    /// finishes, is cancelled or expires.
    #[arg(long, env = "BERTH_MAX_OPEN_UPLOADS", default_value_t = 1000)]
    max_open_uploads: u32,
    /// Bytes of manifests and blob records kept in memory in embedded mode, keys included.
    #[arg(long, env = "BERTH_MANIFEST_CACHE_BYTES", default_value_t = berth_meta::DEFAULT_CACHE_BYTES)]
    manifest_cache_bytes: usize,
    /// Close a connection that has not sent a complete request head within this long of
    /// connecting or (HTTP/1) of its previous request.
    #[arg(long, env = "BERTH_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Fail a request whose body sends no bytes for this long (an upload is then not
    /// advanced).
    #[arg(long, env = "BERTH_BODY_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    body_idle_timeout: Duration,
    /// Connections open at once; at the limit, new ones wait until one closes. Lowered to
    /// three quarters of the open-file limit if that is smaller.
    #[arg(long, env = "BERTH_MAX_CONNECTIONS", default_value = "10000")]
    max_connections: NonZeroUsize,
    /// Requests carrying upload bytes in flight at once; more are answered 429.
    #[arg(long, env = "BERTH_MAX_UPLOADS", default_value = "1024")]
    max_uploads: NonZeroUsize,
    /// Keep audit log entries this long; older ones are pruned (hourly, by one node).
    #[arg(long, env = "BERTH_AUDIT_RETENTION", default_value = "90days", value_parser = humantime::parse_duration)]
    audit_retention: Duration,
    /// The URL clients reach Berth at (e.g. https://registry.example.com behind a TLS
    /// proxy); the token realm in challenges is URL/token. Default: http:// and the
    /// request's Host.
    #[arg(long, env = "BERTH_EXTERNAL_URL")]
    external_url: Option<String>,
    /// The token service's name: `service` in challenges, issuer and audience of tokens.
    #[arg(long, env = "BERTH_SERVICE_NAME", default_value = "berth")]
    service_name: String,
    /// Lifetime of the registry tokens /token issues.
    #[arg(long, env = "BERTH_TOKEN_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
    /// Let a system administrator's push into a project that does not exist create it
    /// (private); without it such a push is refused.
    #[arg(long, env = "BERTH_AUTO_CREATE_PROJECTS")]
    auto_create_projects: bool,
    /// Record Prometheus metrics and serve /metrics (`--metrics false`: record nothing).
    #[arg(long, env = "BERTH_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    metrics: bool,
    /// Also serve /metrics (without credentials) and the health probes on this address,
    /// e.g. a private interface; on the main address /metrics needs a system administrator.
    #[arg(long, env = "BERTH_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// How often the storage-per-project gauge is recomputed (one scan of the blob links).
    #[arg(long, env = "BERTH_METRICS_STORAGE_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    metrics_storage_interval: Duration,
    /// How the log is written on stderr: text (for people) or json (one object per line).
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = berth::LogFormat::Text)]
    log_format: berth::LogFormat,
}

/// Logs on stderr, filtered by `BERTH_LOG` (default `info`).
fn init_logging(format: berth::LogFormat) {
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr);
    match format {
        berth::LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        // The request span (its id) rides along as `span`; fields at the top level.
        berth::LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(match &cli.command {
        Command::Serve(args) => args.log_format,
        Command::Manage(_) => berth::LogFormat::Text,
    });
    let is_serve = matches!(cli.command, Command::Serve(_));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Manage(command) => berth::cli::run(command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if !is_serve => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(error = %e, "berth failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), berth::BoxError> {
    let config = berth::Config {
        listen: args.listen,
        data_dir: args.data_dir,
        database: args.database,
        storage: args.storage,
        upload_ttl: args.upload_ttl,
        janitor_interval: args.janitor_interval,
        max_open_uploads: args.max_open_uploads,
        manifest_cache_bytes: args.manifest_cache_bytes,
        header_timeout: args.header_timeout,
        body_idle_timeout: args.body_idle_timeout,
        max_connections: args.max_connections.get(),
        max_uploads: args.max_uploads.get(),
        admin_password: None,
        external_url: args.external_url,
        service_name: args.service_name,
        token_ttl: args.token_ttl,
        auto_create_projects: args.auto_create_projects,
        audit_retention: args.audit_retention,
        metrics: args.metrics,
        metrics_listen: args.metrics_listen,
        metrics_storage_interval: args.metrics_storage_interval,
        log_format: args.log_format,
    };
    match berth::raise_nofile_limit() {
        Ok(limit) => tracing::info!(limit, "open files"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        signal.cancel();
    });
    berth::serve(config, listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
