//! The S3 backend's configuration: [`S3Config`], from a config file or an `s3://` URL,
//! and its validation. Builds nothing; [`S3BlobStore::new`](super::S3BlobStore::new) does.

use std::fmt;
use std::net::IpAddr;

use object_store::path::Path;
use serde::Deserialize;

use super::{DEFAULT_APPEND_BUDGET, DEFAULT_PART_SIZE, MAX_PART_SIZE, MIN_PART_SIZE};

/// Where and how to reach the bucket. Deserializable from a config file (every field
/// optional but `bucket`), or parsed from an `s3://` URL by [`S3Config::from_url`].
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Every object lives under this prefix (`""`: the whole bucket).
    pub prefix: String,
    /// Default `us-east-1`.
    pub region: String,
    /// For S3-compatible servers, e.g. `http://127.0.0.1:3900`; `None` for AWS.
    pub endpoint: Option<String>,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`. Most
    /// self-hosted servers (MinIO, Garage, Ceph RGW without wildcard DNS) need it.
    pub path_style: bool,
    /// Allow a plain-HTTP endpoint that is not on loopback (loopback always may).
    pub allow_http: bool,
    /// Static credentials; when absent, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN`, then the instance metadata service.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Size of every multipart part but the last, and the memory one upload holds at most.
    pub part_size: usize,
    /// Memory all appends of the process may hold at once, in bytes (see `s3/budget.rs`):
    /// at least two parts.
    pub append_budget: usize,
}

impl Default for S3Config {
    fn default() -> S3Config {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            region: "us-east-1".to_owned(),
            endpoint: None,
            path_style: false,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            part_size: DEFAULT_PART_SIZE,
            append_budget: DEFAULT_APPEND_BUDGET,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("part_size", &self.part_size)
            .field("append_budget", &self.append_budget)
            .finish()
    }
}

/// A bad S3 configuration or storage URL.
#[derive(Debug, thiserror::Error)]
#[error("S3 storage: {0}")]
pub struct S3ConfigError(String);

pub(super) fn config_err(msg: impl Into<String>) -> S3ConfigError {
    S3ConfigError(msg.into())
}

impl S3Config {
    /// Parses `s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION&path_style=true&allow_http=true&part_size=BYTES&append_budget=BYTES]`.
    ///
    /// Credentials are not taken from the URL (it ends up in logs and process lists):
    /// set them in the config file or the standard AWS environment variables.
    pub fn from_url(url: &str) -> Result<S3Config, S3ConfigError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| config_err(format!("{url:?} is not an s3:// URL")))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        let mut config =
            S3Config { bucket: bucket.to_owned(), prefix: prefix.trim_matches('/').to_owned(), ..S3Config::default() };
        let flag = |key: &str, value: &str| match value {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(config_err(format!("{key} must be true or false, not {value:?}"))),
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "endpoint" => config.endpoint = Some(value.trim_end_matches('/').to_owned()),
                "region" => config.region = value.into_owned(),
                "path_style" => config.path_style = flag(&key, &value)?,
                "allow_http" => config.allow_http = flag(&key, &value)?,
                "part_size" | "append_budget" => {
                    let bytes = value
                        .parse()
                        .map_err(|_| config_err(format!("{key} must be a number of bytes, not {value:?}")))?;
                    if key == "part_size" { config.part_size = bytes } else { config.append_budget = bytes }
                }
                _ => return Err(config_err(format!("unknown parameter {key:?} in {url:?}"))),
            }
        }
        config.validate()?;
        Ok(config)
    }

    pub(super) fn validate(&self) -> Result<(), S3ConfigError> {
        let b = &self.bucket;
        if b.is_empty() || !b.bytes().all(|c| c.is_ascii_alphanumeric() || b".-_".contains(&c)) {
            return Err(config_err(format!("invalid bucket name {b:?}")));
        }
        if self.region.is_empty() {
            return Err(config_err("the region is empty"));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(config_err(format!(
                "part_size {} is outside S3's limits ({MIN_PART_SIZE}..={MAX_PART_SIZE})",
                self.part_size
            )));
        }
        if self.append_budget < 2 * self.part_size {
            return Err(config_err(format!(
                "append_budget {} is less than two parts of {} bytes",
                self.append_budget, self.part_size
            )));
        }
        if let Some(endpoint) = &self.endpoint {
            let plain = endpoint.starts_with("http://");
            if !plain && !endpoint.starts_with("https://") {
                return Err(config_err(format!("endpoint {endpoint:?} must start with http:// or https://")));
            }
            if plain && !self.allow_http && !is_loopback(endpoint) {
                return Err(config_err(format!(
                    "endpoint {endpoint:?} is plain HTTP and not on loopback: set allow_http to allow it"
                )));
            }
        }
        Path::parse(&self.prefix).map_err(|e| config_err(format!("invalid prefix {:?}: {e}", self.prefix)))?;
        Ok(())
    }
}

/// Whether an `http(s)://host[:port][/…]` URL names a loopback host.
pub(super) fn is_loopback(url: &str) -> bool {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
