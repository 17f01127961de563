//! The management API's client for `berth` subcommands: where the server is and who is
//! calling (flags, then `BERTH_URL`/`BERTH_USER`/`BERTH_PASSWORD`, then the login file),
//! and requests whose errors come back as the server's code and message. `https://`
//! servers are verified against the system's trusted roots, plus a CA file if one is given
//! (`--ca-cert`, for a private CA or a self-signed certificate).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::BoxError;

/// Where the server is and who is calling; each unset flag falls back to its
/// environment variable, then to the login file (`berth login`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Remote {
    /// The registry's URL, e.g. https://registry.example or http://127.0.0.1:5000.
    #[arg(long, env = "BERTH_URL", global = true)]
    pub url: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's, for a server whose
    /// certificate a private CA signed (or a self-signed one).
    #[arg(long, env = "BERTH_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// The user (or robot) to call as.
    #[arg(long, env = "BERTH_USER", global = true)]
    pub user: Option<String>,
    /// Its password (prefer the environment or `berth login`: flags show in `ps`).
    #[arg(long, env = "BERTH_PASSWORD", global = true, hide_env_values = true)]
    pub password: Option<String>,
}

/// What `berth login` keeps: `login.json` in `$BERTH_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/berth`, else `~/.config/berth`, readable by its owner only (0600).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Login {
    pub url: String,
    pub user: String,
    pub password: String,
    /// The CA file `berth login` was given, used again by the commands that follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

impl Login {
    pub fn path() -> Result<PathBuf, BoxError> {
        let dir = match (std::env::var_os("BERTH_CONFIG_DIR"), std::env::var_os("XDG_CONFIG_HOME")) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(config)) => PathBuf::from(config).join("berth"),
            (None, None) => {
                let home = std::env::var_os("HOME").ok_or("HOME is not set: set BERTH_CONFIG_DIR")?;
                PathBuf::from(home).join(".config").join("berth")
            }
        };
        Ok(dir.join("login.json"))
    }

    fn read() -> Result<Option<Login>, BoxError> {
        let path = Login::path()?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display()).into()),
        }
    }

    /// Writes the file whole (a new file renamed over the old), created with mode 0600
    /// in a directory of mode 0700, so that the password is never readable by others.
    pub fn write(&self) -> Result<PathBuf, BoxError> {
        let path = Login::path()?;
        let dir = path.parent().ok_or("the login file has no directory")?;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let staged = dir.join(format!(".login.json.{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staged)?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_all()?;
        std::fs::rename(&staged, &path)?;
        Ok(path)
    }
}

/// A client of one server, as one caller.
pub struct Client {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

/// A failed request, as the server explained it.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    /// Flags and environment first, then the login file.
    pub fn new(remote: &Remote) -> Result<Client, BoxError> {
        let saved = if remote.url.is_none() || remote.user.is_none() || remote.password.is_none() {
            Login::read()?.unwrap_or_default()
        } else {
            Login::default()
        };
        let pick = |flag: &Option<String>, saved: String, what: &str| {
            flag.clone().or(Some(saved).filter(|s| !s.is_empty())).ok_or_else(|| {
                format!("no {what}: pass --{what}, set BERTH_{}, or run `berth login`", what.to_uppercase())
            })
        };
        let url = pick(&remote.url, saved.url, "url")?;
        let user = pick(&remote.user, saved.user, "user")?;
        let password = pick(&remote.password, saved.password, "password")?;
        Client::with(&url, user, password, remote.ca_cert.as_deref().or(saved.ca_cert.as_deref()))
    }

    pub fn with(url: &str, user: String, password: String, ca_cert: Option<&Path>) -> Result<Client, BoxError> {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(format!("{url:?}: expected an http:// or https:// URL").into());
        }
        let mut http = reqwest::Client::builder();
        if let Some(file) = ca_cert {
            let pem = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: {e}", file.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no PEM certificate in it", file.display()).into());
            }
            http = http.tls_certs_merge(certs);
        }
        Ok(Client { http: http.build()?, base: url.trim_end_matches('/').to_owned(), user, password })
    }

    /// `method` on `/api/v1{path}` with an optional JSON body; the response's JSON
    /// (`null` for an empty body), or the server's error.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, BoxError> {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .basic_auth(&self.user, Some(&self.password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            return Ok(if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? });
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let entry = &body["errors"][0];
        let text = |v: &Value, default: &str| v.as_str().unwrap_or(default).to_owned();
        Err(ApiFailure {
            status,
            code: text(&entry["code"], "UNKNOWN"),
            message: text(&entry["message"], status.canonical_reason().unwrap_or("")),
        }
        .into())
    }

    pub async fn get(&self, path: &str) -> Result<Value, BoxError> {
        self.call(Method::GET, path, None).await
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
