//! The `berth` command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

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
    /// Check or write a config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    #[command(flatten)]
    Manage(berth::cli::Command),
}

/// `berth serve`'s flags, in the config file's sections. Every one is optional: one not
/// given (nor its `BERTH_…` variable) leaves the file's value, or the default (see
/// `berth config example`). Each field is named as its key in the file.
#[derive(clap::Args, serde::Serialize)]
struct ServeArgs {
    /// A TOML file with the settings (see `berth config example`); flags and `BERTH_…`
    /// variables override it.
    #[arg(long, env = "BERTH_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Where blobs, staged uploads and the metadata database live [default: ./berth-data].
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Refuse pushes and deletes; pulls continue.
    #[arg(long, env = "BERTH_READ_ONLY", num_args = 0..=1, default_missing_value = "true")]
    read_only: Option<bool>,
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    limits: LimitsArgs,
    #[command(flatten)]
    jobs: JobsArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    federation: FederationArgs,
    #[command(flatten)]
    logging: LoggingArgs,
}

#[derive(clap::Args, serde::Serialize)]
struct FederationArgs {
    /// The key upstream passwords are sealed with (64 hex digits); every node of a
    /// scale-out registry needs the same file [embedded default: <data_dir>/federation.key].
    #[arg(id = "federation-key-file", long = "federation-key-file", env = "BERTH_FEDERATION_KEY_FILE")]
    key_file: Option<PathBuf>,
}

#[derive(clap::Args, serde::Serialize)]
struct MetricsArgs {
    /// Record Prometheus metrics and serve /metrics (`--metrics false`: record nothing)
    /// [default: true].
    #[arg(id = "metrics", long = "metrics", env = "BERTH_METRICS", action = clap::ArgAction::Set)]
    enabled: Option<bool>,
    /// Also serve /metrics (without credentials) and the health probes on this address,
    /// e.g. a private interface; on the main address /metrics needs a system administrator.
    #[arg(id = "metrics-listen", long = "metrics-listen", env = "BERTH_METRICS_LISTEN")]
    listen: Option<SocketAddr>,
    /// How often the storage-per-project gauge is recomputed [default: 60s].
    #[arg(id = "metrics-storage-interval", long = "metrics-storage-interval", env = "BERTH_METRICS_STORAGE_INTERVAL", value_parser = duration)]
    storage_interval: Option<String>,
}

#[derive(clap::Args, serde::Serialize)]
struct LoggingArgs {
    /// How the log is written on stderr: text (for people) or json (one object per line)
    /// [default: text].
    #[arg(id = "log-format", long = "log-format", env = "BERTH_LOG_FORMAT", value_enum)]
    format: Option<berth::LogFormat>,
}

#[derive(clap::Args, serde::Serialize)]
struct ListenArgs {
    /// Address to listen on [default: 0.0.0.0:5000].
    #[arg(long = "listen", env = "BERTH_LISTEN")]
    address: Option<SocketAddr>,
    /// The URL clients reach Berth at (e.g. https://registry.example.com behind a TLS
    /// proxy); the token realm in challenges is URL/token. Default: the request's Host.
    #[arg(long, env = "BERTH_EXTERNAL_URL")]
    external_url: Option<String>,
    /// Reverse proxies (CIDRs, comma-separated) whose X-Forwarded-For names the client.
    #[arg(long, env = "BERTH_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<String>>,
    /// Close a connection that has not sent a complete request head within this long of
    /// connecting or (HTTP/1) of its previous request [default: 30s].
    #[arg(long, env = "BERTH_HEADER_TIMEOUT", value_parser = duration)]
    header_timeout: Option<String>,
    /// Connections open at once; at the limit, new ones wait until one closes. Lowered to
    /// three quarters of the open-file limit if that is smaller [default: 10000].
    #[arg(long, env = "BERTH_MAX_CONNECTIONS")]
    max_connections: Option<NonZeroUsize>,
    /// On SIGTERM/SIGINT, let requests in flight finish for this long [default: 30s].
    #[arg(long, env = "BERTH_SHUTDOWN_TIMEOUT", value_parser = duration)]
    shutdown_timeout: Option<String>,
}

#[derive(clap::Args, serde::Serialize)]
struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM); re-read when it changes.
    #[arg(long = "tls-cert", env = "BERTH_TLS_CERT")]
    cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long = "tls-key", env = "BERTH_TLS_KEY")]
    key: Option<PathBuf>,
}

#[derive(clap::Args, serde::Serialize)]
struct StorageArgs {
    /// Shared blob storage (`s3://BUCKET/PREFIX?endpoint=URL&region=REGION&path_style=true`,
    /// credentials from the file or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); without it,
    /// blobs are files in the data directory.
    #[arg(id = "storage", long = "storage", env = "BERTH_STORAGE")]
    url: Option<String>,
    /// Answer blob GETs with 307 to a short-lived presigned URL of the bucket, so blob
    /// bytes flow from S3 to clients directly (S3 storage only).
    #[arg(long = "redirect", env = "BERTH_REDIRECT", num_args = 0..=1, default_missing_value = "true")]
    redirect: Option<bool>,
    /// The S3 endpoint URL clients can reach, which redirects send them to [default: the
    /// endpoint of --storage].
    #[arg(long = "redirect-endpoint", env = "BERTH_REDIRECT_ENDPOINT")]
    redirect_endpoint: Option<String>,
    /// How long a redirect's presigned URL is valid, at most 7 days [default: 5m].
    #[arg(long = "redirect-ttl", env = "BERTH_REDIRECT_TTL", value_parser = duration)]
    redirect_ttl: Option<String>,
}

#[derive(clap::Args, serde::Serialize)]
struct DatabaseArgs {
    /// Shared metadata database (`postgres://USER:PASSWORD@HOST:PORT/DB`) for scale-out;
    /// without it, metadata is an embedded SQLite database in the data directory.
    #[arg(id = "database", long = "database", env = "BERTH_DATABASE", hide_env_values = true)]
    url: Option<String>,
    /// PostgreSQL connections per node [default: 16].
    #[arg(id = "database-max-connections", long = "database-max-connections", env = "BERTH_DATABASE_MAX_CONNECTIONS")]
    max_connections: Option<u32>,
    /// Wait this long for a free PostgreSQL connection [default: 30s].
    #[arg(id = "database-acquire-timeout", long = "database-acquire-timeout", env = "BERTH_DATABASE_ACQUIRE_TIMEOUT", value_parser = duration)]
    acquire_timeout: Option<String>,
    /// Close PostgreSQL connections idle this long [default: 10m].
    #[arg(id = "database-idle-timeout", long = "database-idle-timeout", env = "BERTH_DATABASE_IDLE_TIMEOUT", value_parser = duration)]
    idle_timeout: Option<String>,
}

#[derive(clap::Args, serde::Serialize)]
struct AuthArgs {
    /// The first administrator's password (created on first start).
    #[arg(long = "admin-password", env = "BERTH_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// A file holding it.
    #[arg(long = "admin-password-file", env = "BERTH_ADMIN_PASSWORD_FILE")]
    admin_password_file: Option<PathBuf>,
    /// The token service's name: `service` in challenges, issuer and audience of tokens
    /// [default: berth].
    #[arg(long, env = "BERTH_SERVICE_NAME")]
    service_name: Option<String>,
    /// Lifetime of the registry tokens /token issues [default: 5m].
    #[arg(long, env = "BERTH_TOKEN_TTL", value_parser = duration)]
    token_ttl: Option<String>,
    /// Let a system administrator's push into a project that does not exist create it
    /// (private); without it such a push is refused.
    #[arg(long, env = "BERTH_AUTO_CREATE_PROJECTS", num_args = 0..=1, default_missing_value = "true")]
    auto_create_projects: Option<bool>,
    /// An OIDC issuer keyless robots may trust (its URL, or one above it at a `/`); the
    /// flag may be repeated, the variable holds a comma-separated list
    /// [default: https://token.actions.githubusercontent.com, https://gitlab.com].
    #[arg(id = "oidc-issuer", long = "oidc-issuer", env = "BERTH_OIDC_ISSUERS", value_delimiter = ',')]
    oidc_issuers: Option<Vec<String>>,
    /// Let issuers be on loopback, private or link-local addresses (plain http on loopback).
    #[arg(long, env = "BERTH_OIDC_ALLOW_PRIVATE", num_args = 0..=1, default_missing_value = "true")]
    oidc_allow_private: Option<bool>,
}

#[derive(clap::Args, serde::Serialize)]
struct LimitsArgs {
    /// Uploads open at once in one repository; a POST beyond is refused (429) until one
    /// finishes, is cancelled or expires [default: 1000].
    #[arg(long, env = "BERTH_MAX_OPEN_UPLOADS")]
    max_open_uploads: Option<u32>,
    /// Requests carrying upload bytes in flight at once; more are answered 429
    /// [default: 1024].
    #[arg(long, env = "BERTH_MAX_UPLOADS")]
    max_uploads: Option<NonZeroUsize>,
    /// Fail a request whose body sends no bytes for this long (an upload is then not
    /// advanced) [default: 60s].
    #[arg(long, env = "BERTH_BODY_IDLE_TIMEOUT", value_parser = duration)]
    body_idle_timeout: Option<String>,
    /// Bytes of manifests and blob records kept in memory in embedded mode, keys included
    /// [default: 64 MiB].
    #[arg(long, env = "BERTH_MANIFEST_CACHE_BYTES")]
    manifest_cache_bytes: Option<usize>,
}

#[derive(clap::Args, serde::Serialize)]
struct JobsArgs {
    /// Abandon uploads idle for this long (e.g. 24h, 30m) [default: 24h].
    #[arg(long, env = "BERTH_UPLOAD_TTL", value_parser = duration)]
    upload_ttl: Option<String>,
    /// How often the upload janitor runs [default: 10m].
    #[arg(long, env = "BERTH_JANITOR_INTERVAL", value_parser = duration)]
    janitor_interval: Option<String>,
    /// Keep audit log entries this long; older ones are pruned (hourly, by one node)
    /// [default: 90days].
    #[arg(long, env = "BERTH_AUDIT_RETENTION", value_parser = duration)]
    audit_retention: Option<String>,
    /// How often retention policies run (by one node: the `retention` lease) [default: 24h].
    #[arg(long, env = "BERTH_RETENTION_INTERVAL", value_parser = duration)]
    retention_interval: Option<String>,
    /// How often pull times (kept in memory, for retention's "pulled" rules) are written
    /// to the database, in one batch; also when the server stops [default: 60s].
    #[arg(long, env = "BERTH_PULL_FLUSH_INTERVAL", value_parser = duration)]
    pull_flush_interval: Option<String>,
    /// Re-hash every stored blob this often (one node at a time; `0s`: only on demand,
    /// `berth scrub`) [default: 7days].
    #[arg(long, env = "BERTH_SCRUB_INTERVAL", value_parser = duration)]
    scrub_interval: Option<String>,
    /// Garbage collection removes what became unreferenced once it has been so for this
    /// long (and blob-store objects with no record once this old), and retention deletes
    /// no untagged manifest younger; 0s: at once [default: 1h].
    #[arg(long, env = "BERTH_GC_GRACE", value_parser = duration)]
    gc_grace: Option<String>,
    /// Between scheduled garbage collection runs (each reviews what changed since)
    /// [default: 1h].
    #[arg(long, env = "BERTH_GC_INTERVAL", value_parser = duration)]
    gc_interval: Option<String>,
    /// Between scheduled full garbage collection runs (a check of everything, and a sweep
    /// of the blob store for bytes with no record) [default: 7days].
    #[arg(long, env = "BERTH_GC_FULL_INTERVAL", value_parser = duration)]
    gc_full_interval: Option<String>,
    /// Garbage collection also removes untagged manifests that no index references
    /// (referrers stay as long as their subject) [default: kept].
    #[arg(long, env = "BERTH_GC_DELETE_UNTAGGED", num_args = 0..=1, default_missing_value = "true")]
    gc_delete_untagged: Option<bool>,
}

/// A duration flag, checked as it is parsed and passed on as written.
fn duration(text: &str) -> Result<String, humantime::DurationError> {
    humantime::parse_duration(text).map(|_| text.to_owned())
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config file: exit 0 if `berth serve --config FILE` would accept it, else
    /// print what is wrong and exit 1.
    Check { file: PathBuf },
    /// Print a commented example config file, every setting at its default.
    Example,
}

/// Logs on stderr, filtered by `BERTH_LOG` (else `level`), as text or JSON.
fn init_logging(level: &str, format: berth::LogFormat) {
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new(level)))
        .with_writer(std::io::stderr);
    match format {
        berth::LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        // The request span (its id) rides along as `span`; fields at the top level.
        berth::LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}

fn main() -> std::process::ExitCode {
    berth::return_large_blocks();
    let cli = Cli::parse();
    let config = match &cli.command {
        Command::Serve(args) => match berth::Config::load(args.config.as_deref(), args) {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let level = config.as_ref().map_or("info", |c| c.logging.level.as_str());
    let format = config.as_ref().map_or(berth::LogFormat::Text, |c| c.logging.format);
    init_logging(level, format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match (cli.command, config) {
            (Command::Serve(_), Some(config)) => serve(config).await,
            (Command::Serve(_), None) => unreachable!("the config was loaded above"),
            (Command::Config { command }, _) => config_command(command),
            (Command::Manage(command), _) => berth::cli::run(command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn config_command(command: ConfigCommand) -> Result<(), berth::BoxError> {
    match command {
        ConfigCommand::Check { file } => {
            berth::Config::load(Some(&file), serde_json::json!({}))?;
            println!("{}: ok", file.display());
        }
        ConfigCommand::Example => print!("{}", berth::config::EXAMPLE),
    }
    Ok(())
}

async fn serve(config: berth::Config) -> Result<(), berth::BoxError> {
    match berth::raise_nofile_limit() {
        Ok(limit) => tracing::info!(limit, "open files"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    // A benchmark's switch (bench/src/outbox_off.rs), not a setting: without the outbox no
    // webhook or replication ever hears of a change.
    if std::env::var_os("BERTH_BENCH_OUTBOX_OFF").is_some_and(|v| v == "1") {
        berth_meta::outbox::turn_off_for_benchmark();
        tracing::warn!("BERTH_BENCH_OUTBOX_OFF=1: changes write no events; webhooks and replication get nothing");
    }
    let listener = tokio::net::TcpListener::bind(config.listen.address).await?;
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
    let result = berth::serve(config, listener, shutdown).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "berth failed");
    }
    result
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
