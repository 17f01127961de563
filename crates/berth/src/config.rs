//! `berth serve`'s settings: one [`Config`], read from a TOML file, then the `BERTH_…`
//! environment variables and the command-line flags, each layer over the one before
//! (figment does the layering). Not the wiring: `lib.rs` turns a `Config` into a server.
//!
//! A setting is one field in one section struct, its default in that struct's `Default`;
//! the flag that sets it is one field in `main.rs`'s `ServeArgs`. Every key and value is
//! checked while the layers are read: an unknown key or a bad value stops the start with
//! a message naming the key and the file (`berth.toml: unknown key "limits.max_conections"`).
//! A secret may come from a file instead (`…_file` keys), read once at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_access::authorizer::AccessConfig;
use berth_server::listen::ServeLimits;
use berth_server::{RegistryConfig, TrustedProxies};
use berth_storage::S3Config;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// How long the audit log keeps an entry unless told otherwise: 90 days.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// How often the integrity scrub runs unless configured.
pub const DEFAULT_SCRUB_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a redirect's presigned URL is valid unless told otherwise.
pub const DEFAULT_REDIRECT_TTL: Duration = Duration::from_secs(300);
/// How often each node recomputes `berth_storage_bytes` unless told otherwise (one scan
/// of `repo_blobs`).
pub const DEFAULT_STORAGE_GAUGE_INTERVAL: Duration = Duration::from_secs(60);

/// The commented example `berth config example` prints; it passes `berth config check`
/// and sets every key to its default (a unit test checks both).
pub const EXAMPLE: &str = include_str!("berth.example.toml");

/// Everything `berth serve` can be told, in the file's sections.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Embedded mode: blobs under `<data_dir>/blobs`, staged uploads under
    /// `<data_dir>/uploads`, metadata in `<data_dir>/berth.db`.
    pub data_dir: PathBuf,
    /// Refuse pushes and deletes (pulls continue); the management API can turn it on for
    /// every node (stored in the database) and off again.
    pub read_only: bool,
    pub listen: Listen,
    pub tls: Tls,
    pub storage: Storage,
    pub database: Database,
    pub auth: Auth,
    pub limits: Limits,
    pub jobs: Jobs,
    pub metrics: MetricsSettings,
    pub federation: FederationSettings,
    pub webhooks: WebhookSettings,
    pub logging: Logging,
}

/// `[listen]`: the socket and what bounds its connections.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    pub address: SocketAddr,
    /// The URL clients reach Berth at; the token realm is `<external_url>/token`.
    /// `None`: `http://` (or `https://` with TLS) and the request's `Host`.
    pub external_url: Option<String>,
    /// Peers (CIDRs) whose `X-Forwarded-For` names the client; none by default.
    pub trusted_proxies: TrustedProxies,
    /// Time allowed for a request head (and an idle HTTP/1 keep-alive connection), and
    /// for a TLS handshake.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// Connections open at once; at most three quarters of the open-file limit.
    pub max_connections: usize,
    /// On SIGTERM or SIGINT, requests in flight may finish for this long.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
}

/// `[tls]`: a certificate chain and its key (PEM files), re-read when they change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[storage]`: where blobs live.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// `s3://BUCKET/PREFIX?endpoint=URL&region=REGION&path_style=true`; without it,
    /// blobs are files in the data directory.
    pub url: Option<S3Url>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Answer blob `GET`s with 307 to a presigned URL of the bucket (S3 storage only;
    /// refused at start with the filesystem store). `HEAD` is still answered by Berth.
    pub redirect: bool,
    /// The S3 endpoint clients can reach (e.g. `https://s3.example.com`), which redirects
    /// send them to; `None`: the endpoint in `url`.
    pub redirect_endpoint: Option<String>,
    /// How long a redirect's presigned URL is valid (at most 7 days).
    #[serde(with = "duration")]
    pub redirect_ttl: Duration,
}

/// `[database]`: where metadata lives, and PostgreSQL's pool.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`; without it, an embedded SQLite database
    /// in the data directory.
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    /// PostgreSQL connections per node.
    pub max_connections: u32,
    /// A request waits this long for a free database connection, then fails.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
    /// An idle connection is closed after this long.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
}

/// `[auth]`: the token service and the first administrator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// The password of the `admin` user created on first start (when no system
    /// administrator exists); neither it nor the file: generated and printed once.
    pub admin_password: Option<String>,
    pub admin_password_file: Option<PathBuf>,
    /// `service` in challenges, `iss`/`aud` in tokens.
    pub service_name: String,
    #[serde(with = "duration")]
    pub token_ttl: Duration,
    /// A system administrator's push into a missing project creates it (private).
    pub auto_create_projects: bool,
    /// The OIDC issuers keyless robots may trust: each entry allows its own URL and those
    /// below it at a `/`. Only https, and only public addresses unless `oidc_allow_private`.
    pub oidc_issuers: Vec<String>,
    /// Let keyless robots' issuers be on loopback, private or link-local addresses (and
    /// plain http on loopback): for an issuer inside the cluster, or a test's.
    pub oidc_allow_private: bool,
}

/// `[limits]`: what one node holds at once.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Uploads open at once in one repository; a `POST` beyond is refused (429).
    pub max_open_uploads: u32,
    /// Requests carrying upload bytes in flight at once; more get 429.
    pub max_uploads: usize,
    /// A request body silent this long fails.
    #[serde(with = "duration")]
    pub body_idle_timeout: Duration,
    /// Bytes of manifests and blob records the embedded mode keeps in memory, keys
    /// included (unused in scale-out mode, which caches nothing).
    pub manifest_cache_bytes: usize,
}

/// `[jobs]`: background work.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Jobs {
    /// Uploads idle this long are abandoned.
    #[serde(with = "duration")]
    pub upload_ttl: Duration,
    #[serde(with = "duration")]
    pub janitor_interval: Duration,
    /// Audit entries older than this are pruned.
    #[serde(with = "duration")]
    pub audit_retention: Duration,
    /// How often retention policies run (one node at a time: the `retention` lease).
    #[serde(with = "duration")]
    pub retention_interval: Duration,
    /// How often the pull times held in memory are written, in one batch.
    #[serde(with = "duration")]
    pub pull_flush_interval: Duration,
    /// How often the integrity scrub re-hashes every blob (zero: never on its own).
    #[serde(with = "duration")]
    pub scrub_interval: Duration,
    /// Garbage collection reviews a candidate once it has been queued this long (and
    /// removes blob-store objects with no record once this old); `0s` allowed.
    #[serde(with = "duration")]
    pub gc_grace: Duration,
    /// Between scheduled garbage collection runs.
    #[serde(with = "duration")]
    pub gc_interval: Duration,
    /// Between scheduled full runs (which also check everything and sweep the blob store).
    #[serde(with = "duration")]
    pub gc_full_interval: Duration,
    /// Garbage collection removes untagged manifests no index references.
    pub gc_delete_untagged: bool,
}

/// `[metrics]`: Prometheus metrics and where `/metrics` is served.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Record metrics and serve `/metrics` (off: nothing is recorded, `/metrics` is 404).
    pub enabled: bool,
    /// A second listen address serving `/metrics` without credentials (and the probes),
    /// meant for a private interface; on the main address `/metrics` is a system
    /// administrator's.
    pub listen: Option<SocketAddr>,
    /// How often `berth_storage_bytes` (bytes per project) is recomputed.
    #[serde(with = "duration")]
    pub storage_interval: Duration,
}

impl Default for MetricsSettings {
    fn default() -> MetricsSettings {
        MetricsSettings { enabled: true, listen: None, storage_interval: DEFAULT_STORAGE_GAUGE_INTERVAL }
    }
}

/// `[federation]`: the pull-through cache's settings (its upstreams are managed through
/// the API).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationSettings {
    /// The key upstream passwords are sealed with (64 hex digits); embedded mode creates
    /// `<data_dir>/federation.key` when unset.
    pub key_file: Option<PathBuf>,
    /// Upstreams created, or replaced, at every start (`[[federation.upstreams]]`): the
    /// management API's fields (docs/federation.md), with `password_file` in place of
    /// `password`. One removed from the file stays until removed through the API.
    pub upstreams: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// `[webhooks]`: how the outbox's events are delivered to projects' webhooks.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Receivers at loopback, private and link-local addresses may be named (off: such a
    /// URL is refused, and so is a name that resolves to one).
    pub allow_private: bool,
    /// For one attempt, connecting included.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Attempts of one delivery before it is given up.
    pub max_attempts: u32,
    /// The wait after the first failed attempt, doubling with each one up to `retry_max`.
    #[serde(with = "duration")]
    pub retry_base: Duration,
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// Deliveries in flight at once, and of one webhook.
    pub concurrency: u32,
    pub per_webhook: u32,
    /// How long the delivery log keeps a finished delivery.
    #[serde(with = "duration")]
    pub keep: Duration,
}

impl Default for WebhookSettings {
    fn default() -> WebhookSettings {
        let d = berth_federation::WebhookConfig::default();
        WebhookSettings {
            allow_private: d.allow_private,
            timeout: d.timeout,
            max_attempts: d.max_attempts,
            retry_base: d.retry_base,
            retry_max: d.retry_max,
            concurrency: d.concurrency,
            per_webhook: d.per_webhook,
            keep: d.keep,
        }
    }
}

/// `[logging]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Logging {
    /// A tracing filter (`info`, `berth_server=debug,info`); `BERTH_LOG` overrides it.
    pub level: String,
    /// `text` (for people) or `json` (one object per line).
    pub format: LogFormat,
}

/// How log lines are written (on stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one line per event, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("./berth-data"),
            read_only: false,
            listen: Listen::default(),
            tls: Tls::default(),
            storage: Storage::default(),
            database: Database::default(),
            auth: Auth::default(),
            limits: Limits::default(),
            jobs: Jobs::default(),
            metrics: MetricsSettings::default(),
            federation: FederationSettings::default(),
            webhooks: WebhookSettings::default(),
            logging: Logging::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Listen {
        let limits = ServeLimits::default();
        Listen {
            address: SocketAddr::from(([0, 0, 0, 0], 5000)),
            external_url: None,
            trusted_proxies: TrustedProxies::default(),
            header_timeout: limits.header_timeout,
            max_connections: limits.max_connections,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Database {
    fn default() -> Database {
        let pool = berth_meta::PoolConfig::default();
        Database {
            url: None,
            url_file: None,
            max_connections: pool.max_connections,
            acquire_timeout: pool.acquire_timeout,
            idle_timeout: pool.idle_timeout,
        }
    }
}

impl Default for Auth {
    fn default() -> Auth {
        let access = AccessConfig::default();
        Auth {
            admin_password: None,
            admin_password_file: None,
            service_name: access.service,
            token_ttl: access.token_ttl,
            auto_create_projects: access.auto_create_projects,
            oidc_issuers: access.oidc.issuers.allowed,
            oidc_allow_private: access.oidc.issuers.allow_private,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        let registry = RegistryConfig::default();
        Limits {
            max_open_uploads: registry.max_open_uploads,
            max_uploads: registry.max_uploads,
            body_idle_timeout: registry.body_idle_timeout,
            manifest_cache_bytes: berth_meta::DEFAULT_CACHE_BYTES,
        }
    }
}

impl Default for Jobs {
    fn default() -> Jobs {
        let gc = berth_jobs::gc::GcConfig::default();
        Jobs {
            upload_ttl: berth_jobs::janitor::DEFAULT_UPLOAD_TTL,
            janitor_interval: Duration::from_secs(600),
            audit_retention: DEFAULT_AUDIT_RETENTION,
            retention_interval: Duration::from_secs(24 * 3600),
            pull_flush_interval: Duration::from_secs(60),
            scrub_interval: DEFAULT_SCRUB_INTERVAL,
            gc_grace: gc.grace,
            gc_interval: gc.interval,
            gc_full_interval: gc.full_interval,
            gc_delete_untagged: gc.delete_untagged,
        }
    }
}

impl Default for Storage {
    fn default() -> Storage {
        Storage {
            url: None,
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
            redirect: false,
            redirect_endpoint: None,
            redirect_ttl: DEFAULT_REDIRECT_TTL,
        }
    }
}

impl Default for Logging {
    fn default() -> Logging {
        Logging { level: "info".to_owned(), format: LogFormat::Text }
    }
}

/// A setting refused at start: the message names the key and where it came from.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The defaults over `data_dir`, listening on a free loopback port (for tests and
    /// the offline commands).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let listen = Listen { address: SocketAddr::from(([127, 0, 0, 1], 0)), ..Listen::default() };
        Config { data_dir: data_dir.into(), listen, ..Config::default() }
    }

    /// The defaults, then `file` (if any), then `overrides` (the flags and environment
    /// variables given, as nested sections; absent ones leave the layers below), then the
    /// secrets the `…_file` keys name.
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // figment skips a missing file silently; a named file must exist.
            std::fs::metadata(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let overrides = figment::value::Value::serialize(overrides).map_err(|e| ConfigError(e.to_string()))?;
        figment = figment.merge(Serialized::defaults(without_empty(overrides)));
        let mut config: Config = figment.extract().map_err(describe)?;
        config.read_secret_files()?;
        Ok(config)
    }

    /// Fills every secret not given itself from its `…_file` (the file's contents without
    /// a trailing newline): a value set in a higher layer (an environment variable) wins
    /// over a file named in a lower one; an empty value counts as unset.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        let pairs = [
            ("auth.admin_password", &mut self.auth.admin_password, &self.auth.admin_password_file),
            ("database.url", &mut self.database.url, &self.database.url_file),
            ("storage.secret_access_key", &mut self.storage.secret_access_key, &self.storage.secret_access_key_file),
        ];
        for (key, value, file) in pairs {
            // An empty secret is never meant (an environment variable set to nothing).
            value.take_if(|v| v.is_empty());
            let Some(path) = file.as_ref().filter(|_| value.is_none()) else { continue };
            let contents = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("{key}_file: cannot read {}: {e}", path.display())))?;
            *value = Some(contents.trim_end_matches(['\r', '\n']).to_owned());
        }
        Ok(())
    }

    /// The S3 store's settings with the configured credentials, when blobs are on S3.
    pub fn s3(&self) -> Option<S3Config> {
        let mut s3 = self.storage.url.clone()?.config;
        if let Some(id) = &self.storage.access_key_id {
            s3.access_key_id = Some(id.clone());
        }
        if let Some(secret) = &self.storage.secret_access_key {
            s3.secret_access_key = Some(secret.clone());
        }
        Some(s3)
    }
}

/// Removes absent values (a flag not given) so that they leave the layers below alone.
fn without_empty(value: figment::value::Value) -> figment::value::Value {
    use figment::value::Value;
    match value {
        Value::Dict(tag, dict) => Value::Dict(
            tag,
            dict.into_iter()
                .filter(|(_, v)| !matches!(v, Value::Empty(..)))
                .map(|(k, v)| (k, without_empty(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `FILE: unknown key "section.key"`, `FILE: section.key: invalid duration "3O s"`.
fn describe(errors: figment::Error) -> ConfigError {
    let messages: Vec<String> = errors.into_iter().map(|e| describe_one(&e)).collect();
    ConfigError(messages.join("\n"))
}

fn describe_one(e: &figment::Error) -> String {
    use figment::error::Kind;
    let source = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(path)) => path.display().to_string(),
        _ => "the command line or environment".to_owned(),
    };
    let mut path = e.path.clone();
    match &e.kind {
        Kind::UnknownField(field, _) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("{source}: unknown key \"{}\"", path.join("."))
        }
        Kind::Message(message) => format!("{source}: {}: {message}", path.join(".")),
        other => format!("{source}: {}: {other}", path.join(".")),
    }
}

/// `Duration`s as humantime strings (`30s`, `24h`, `90days`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|_| D::Error::custom(format!("invalid duration {text:?}")))
    }
}

/// A storage URL, parsed (and so checked) as the file is read; written back as given.
#[derive(Clone, Debug)]
pub struct S3Url {
    text: String,
    pub config: S3Config,
}

impl S3Url {
    pub fn parse(text: &str) -> Result<S3Url, berth_storage::S3ConfigError> {
        Ok(S3Url { text: text.to_owned(), config: S3Config::from_url(text)? })
    }
}

impl From<S3Config> for S3Url {
    /// A store configured in code (tests): its URL names only the bucket and prefix.
    fn from(config: S3Config) -> S3Url {
        S3Url { text: format!("s3://{}/{}", config.bucket, config.prefix), config }
    }
}

impl Serialize for S3Url {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for S3Url {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<S3Url, D::Error> {
        let text = String::deserialize(d)?;
        S3Url::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(Some(&path), serde_json::json!({}))
            .map_err(|e| ConfigError(e.0.replace(&*dir.path().to_string_lossy(), "")))
    }

    #[test]
    fn the_example_sets_every_key_to_its_default() {
        let example = load_str(EXAMPLE).expect("the example passes the check");
        let (example, default) =
            (serde_json::to_value(example).unwrap(), serde_json::to_value(Config::default()).unwrap());
        assert_eq!(example, default);
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_section_and_file() {
        let err = load_str("[limits]\nmax_conections = 3\n").unwrap_err();
        assert_eq!(err.0, "/berth.toml: unknown key \"limits.max_conections\"");
    }

    #[test]
    fn a_bad_duration_is_refused_with_its_key_and_file() {
        let err = load_str("[listen]\nheader_timeout = \"3O s\"\n").unwrap_err();
        assert_eq!(err.0, "/berth.toml: listen.header_timeout: invalid duration \"3O s\"");
    }

    #[test]
    fn a_secret_comes_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let config = load_str(&format!("[auth]\nadmin_password_file = {:?}\n", secret)).unwrap();
        assert_eq!(config.auth.admin_password.as_deref(), Some("s3cret"));
    }
}
