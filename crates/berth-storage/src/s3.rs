//! The S3 blob store (feature `s3`): blobs and staged uploads as objects in one bucket of
//! AWS S3 or a compatible server (MinIO, Ceph RGW, Garage), through `object_store`'s S3
//! client. Not a general S3 client: it only does what [`BlobStore`] needs.
//!
//! # Layout, under the configured prefix
//!
//! | object | what |
//! |---|---|
//! | `objects/<upload id>` | a committed blob's bytes: the upload's multipart upload completed in place (or, for a small blob, its one pending segment copied there) |
//! | `digests/sha256/<hex>` | dedupe marker: a few bytes holding the storage key of a blob with that digest |
//! | `uploads/<upload id>/<offset>-<random>` | a pending segment: bytes of an upload not yet in a part |
//! | `uploads/<upload id>/multipart` | the S3 multipart upload id, written when the multipart upload is created |
//!
//! A blob's storage key is `sha256/<hex>/<upload id>`: it names the bytes
//! (`objects/<upload id>`) *and* the digest, so [`BlobStore::delete_blob`] can drop the
//! dedupe marker with the bytes (it is given the key only). Nothing is ever copied or
//! renamed on commit: S3 has no rename and the bytes stay where the upload put them.
//!
//! # Uploads and their state
//!
//! The [`UploadState`] is a small JSON `State`: the part size, the multipart upload id,
//! the ETags of the parts so far, the pending segments, and the segments the last append
//! turned into a part. The metadata store keeps it, so any node (or this one after a
//! restart) continues the upload from it. It grows by one ETag (~40 bytes) per part:
//! about 5 KB per GiB at the default part size.
//!
//! - Bytes accumulate in memory until `part_size` (default 8 MiB) is reached, counting the
//!   pending segments; then the segments are read back, joined with the new bytes and sent
//!   as the next part. At the end of an append the bytes left over (fewer than a part) are
//!   written as a new pending segment. Memory per upload stays around one part whatever
//!   the blob size. Every part but the last is exactly `part_size` bytes (some servers,
//!   e.g. R2, require equal parts); the last part, sent on commit, may be small.
//! - The multipart upload is created lazily, with the first full part: a blob that never
//!   fills a part (most config blobs and many layers) costs no multipart upload at all,
//!   and is committed by copying its one segment (or re-putting its few segments, less
//!   than a part together) to `objects/<id>`.
//! - Appends are all or nothing, and the state handed in stays valid even after an
//!   append that succeeded but was never recorded: segments are immutable and uniquely
//!   named, parts past the recorded ones are overwritten by the next append (and ignored
//!   by completion, which lists only recorded parts), and a segment consumed by a part is
//!   deleted only by the *next* append, once the state that consumed it is the recorded
//!   one (offsets only move forward, so older states are dead).
//! - An upload never exceeds 10,000 parts: `part_size` × 10,000 bytes (78 GiB at 8 MiB;
//!   raise `part_size` for larger blobs).
//! - Two appends from the same state at once (two nodes, a misbehaving client) both write
//!   part n+1; S3 checks the recorded ETags on completion, so the commit then fails
//!   (`InvalidPart`) instead of making other bytes the blob.
//! - A part is sent while the request body waits (no pipelining): simple, and memory
//!   stays at one part; overlapping the two could speed an upload up to 2x, at twice the memory.
//!
//! # Commit, dedupe, idempotency
//!
//! `commit_upload` first reads the digest marker. If it names a blob that exists (checked
//! with HEAD), the upload is dropped and that key returned — unless this upload's own
//! object exists already (an earlier commit got that far before a crash), in which case
//! its own key is returned, so a repeated commit returns the same key. Otherwise the
//! upload is completed at `objects/<id>`; if that fails but the object is there with the
//! right length, an earlier commit completed it. Then the marker is written (last writer
//! wins: two concurrent commits of the same digest both succeed, each with its own key)
//! and the staging objects are deleted.
//!
//! # What object_store can't do
//!
//! It cannot list multipart uploads in progress (no ListMultipartUploads), so every
//! multipart upload is recorded in `uploads/<id>/multipart` right after it is created:
//! [`BlobStore::list_uploads`] lists the `uploads/` "directories" and
//! [`BlobStore::delete_upload`] with an empty state aborts what that marker names. A
//! crash between creating a multipart upload and writing its marker leaks the
//! (empty) multipart upload: configure the bucket's `AbortIncompleteMultipartUpload`
//! lifecycle rule (a day is plenty) as the backstop for that.
//!
//! # Environment
//!
//! The client is built from [`S3Config`] alone, never with `AmazonS3Builder::from_env`:
//! other `AWS_*` variables (`AWS_ENDPOINT`, `AWS_PROFILE`, …) are ignored, except the
//! credentials `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` when
//! the config has none. object_store 0.14 does not read `AWS_CA_BUNDLE` at all (checked in
//! its source); TLS roots come from the platform (`SSL_CERT_FILE`/`SSL_CERT_DIR` on
//! Linux), and a plain-HTTP endpoint uses no TLS, so those variables cannot break it.
//! Without credentials anywhere, object_store falls back to the EC2/ECS instance
//! metadata service (an IAM role).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use berth_core::Digest;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::{BlobStore, ByteStream, StorageError, UploadState};

/// S3's minimum size of every part but the last.
pub const MIN_PART_SIZE: usize = 5 << 20;
/// The part size when the config names none: the memory one upload holds at most.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// S3's maximum part size.
const MAX_PART_SIZE: usize = 5 << 30;
/// S3's maximum number of parts in a multipart upload.
const MAX_PARTS: usize = 10_000;

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
            .finish()
    }
}

/// A bad S3 configuration or storage URL.
#[derive(Debug, thiserror::Error)]
#[error("S3 storage: {0}")]
pub struct S3ConfigError(String);

fn config_err(msg: impl Into<String>) -> S3ConfigError {
    S3ConfigError(msg.into())
}

impl S3Config {
    /// Parses `s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION&path_style=true&allow_http=true&part_size=BYTES]`.
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
                "part_size" => {
                    config.part_size = value
                        .parse()
                        .map_err(|_| config_err(format!("part_size must be a number of bytes, not {value:?}")))?
                }
                _ => return Err(config_err(format!("unknown parameter {key:?} in {url:?}"))),
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), S3ConfigError> {
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
fn is_loopback(url: &str) -> bool {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An upload's progress, serialized into its [`UploadState`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// The size of every part but the last, fixed when the upload is created so that
    /// nodes configured differently still agree.
    part_size: u64,
    /// The multipart upload, created with the first full part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<String>,
    /// ETags of parts 1..=n, each `part_size` bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<String>,
    /// The bytes after the last part, in order: `uploads/<id>/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<Segment>,
    /// Segments the append that made this state turned into a part: garbage once this
    /// state is the recorded one, which it is when the next append starts from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    consumed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Segment {
    name: String,
    len: u64,
}

impl State {
    fn pending_len(&self) -> u64 {
        self.pending.iter().map(|s| s.len).sum()
    }

    fn len(&self) -> u64 {
        self.parts.len() as u64 * self.part_size + self.pending_len()
    }
}

/// Bytes received but not yet sent anywhere: the incoming chunks, uncopied.
#[derive(Default)]
struct Chunks {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, b: Bytes) {
        self.len += b.len();
        self.chunks.push(b);
    }

    /// The first `n` bytes (`n <= len`), splitting a chunk without copying.
    fn take(&mut self, n: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut need = n;
        let mut rest = std::mem::take(&mut self.chunks).into_iter();
        for mut c in rest.by_ref() {
            if c.len() <= need {
                need -= c.len();
                out.push(c);
            } else {
                out.push(c.split_to(need));
                need = 0;
                self.chunks.push(c);
            }
            if need == 0 {
                break;
            }
        }
        self.chunks.extend(rest);
        self.len -= n;
        out
    }
}

fn s3_err(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        e => StorageError::Io(io::Error::other(e)),
    }
}

fn corrupt(msg: String) -> StorageError {
    StorageError::Io(io::Error::new(io::ErrorKind::InvalidData, msg))
}

/// Upload ids are opaque but the server only passes UUIDs; anything else never reaches S3.
fn check_id(id: &str) -> Result<(), StorageError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(StorageError::NotFound);
    }
    Ok(())
}

/// `sha256/<hex>/<id>` → (hex, id).
fn parse_key(key: &str) -> Option<(&str, &str)> {
    let (hex, id) = key.strip_prefix("sha256/")?.split_once('/')?;
    let hex_ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex_ok && check_id(id).is_ok()).then_some((hex, id))
}

/// Blobs and uploads in an S3 bucket; see the module docs for the layout.
pub struct S3BlobStore {
    s3: AmazonS3,
    prefix: Path,
    part_size: usize,
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BlobStore").field("s3", &self.s3.to_string()).field("prefix", &self.prefix.as_ref()).finish()
    }
}

impl S3BlobStore {
    /// Builds the client; nothing is sent until the first operation.
    pub fn new(config: S3Config) -> Result<S3BlobStore, S3ConfigError> {
        config.validate()?;
        let prefix = Path::parse(&config.prefix).map_err(|e| config_err(e.to_string()))?;
        let allow_http = config.allow_http || config.endpoint.as_deref().is_some_and(is_loopback);
        // No total timeout: a blob GET streams for as long as the registry's client reads.
        // A stalled server is caught by the read timeout (first byte of the response, then
        // between body frames), and object_store resumes broken GET streams itself.
        let options = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout_disabled()
            .with_connect_timeout(Duration::from_secs(10))
            .with_read_timeout(Duration::from_secs(120));
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_client_options(options)
            .with_virtual_hosted_style_request(!config.path_style);
        if let Some(endpoint) = &config.endpoint {
            let endpoint = endpoint.trim_end_matches('/');
            builder = if config.path_style {
                builder.with_endpoint(endpoint)
            } else {
                // object_store takes a virtual-hosted endpoint as given: put the bucket in.
                let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", endpoint));
                builder.with_endpoint(format!("{scheme}://{}.{host}", config.bucket))
            };
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (key_id, secret, token) = match (config.access_key_id, config.secret_access_key) {
            (Some(k), Some(s)) => (Some(k), Some(s), config.session_token),
            (None, None) => (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"), env("AWS_SESSION_TOKEN")),
            _ => return Err(config_err("give both access_key_id and secret_access_key, or neither")),
        };
        match (key_id, secret) {
            (Some(k), Some(s)) => {
                builder = builder.with_access_key_id(k).with_secret_access_key(s);
                if let Some(t) = token {
                    builder = builder.with_token(t);
                }
            }
            (None, None) => {}
            _ => return Err(config_err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together")),
        }
        let s3 = builder.build().map_err(|e| config_err(e.to_string()))?;
        Ok(S3BlobStore { s3, prefix, part_size: config.part_size })
    }

    /// A URL that lets anyone GET the blob `key` for `ttl`, for answering blob GETs with a
    /// redirect. `None` if the key is not one of this store's or signing fails (e.g. no
    /// credentials). It does not check that the blob exists.
    pub async fn presigned_get(&self, key: &str, ttl: Duration) -> Option<String> {
        let path = self.blob_path(key).ok()?;
        self.s3.signed_url(http::Method::GET, &path, ttl).await.ok().map(|u| u.to_string())
    }

    fn at(&self, parts: &[&str]) -> Path {
        parts.iter().fold(self.prefix.clone(), |p, part| p.join(*part))
    }

    fn object(&self, id: &str) -> Path {
        self.at(&["objects", id])
    }

    fn digest_marker(&self, hex: &str) -> Path {
        self.at(&["digests", "sha256", hex])
    }

    fn upload_dir(&self, id: &str) -> Path {
        self.at(&["uploads", id])
    }

    fn segment(&self, id: &str, name: &str) -> Path {
        self.at(&["uploads", id, name])
    }

    fn multipart_marker(&self, id: &str) -> Path {
        self.at(&["uploads", id, "multipart"])
    }

    fn blob_path(&self, key: &str) -> Result<Path, StorageError> {
        let (_, id) = parse_key(key).ok_or(StorageError::NotFound)?;
        Ok(self.object(id))
    }

    fn state(&self, state: &str) -> Result<State, StorageError> {
        if state.is_empty() {
            return Ok(State { part_size: self.part_size as u64, ..State::default() });
        }
        let st: State = serde_json::from_str(state).map_err(|e| corrupt(format!("upload state: {e}")))?;
        if !(MIN_PART_SIZE as u64..=MAX_PART_SIZE as u64).contains(&st.part_size) {
            return Err(corrupt(format!("upload state: part size {} is outside S3's limits", st.part_size)));
        }
        Ok(st)
    }

    async fn size_of(&self, path: &Path) -> Result<Option<u64>, StorageError> {
        match self.s3.head(path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_err(e)),
        }
    }

    /// A small object's bytes, or `None`.
    async fn get_small(&self, path: &Path) -> Result<Option<Bytes>, StorageError> {
        match self.s3.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(s3_err)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_err(e)),
        }
    }

    /// The pending segments' bytes (less than a part in all), checked against the state.
    /// A few at a time: a client sending small chunks leaves many small segments.
    async fn read_segments(&self, id: &str, segments: &[Segment]) -> Result<Vec<Bytes>, StorageError> {
        let mut reads = Vec::with_capacity(segments.len());
        for s in segments {
            // Owned ('static) futures: a borrowing closure here trips async-trait's Send check.
            let (s3, path, expected, what) =
                (self.s3.clone(), self.segment(id, &s.name), s.len, format!("upload {id}: segment {}", s.name));
            reads.push(async move {
                let bytes = s3.get(&path).await.map_err(s3_err)?.bytes().await.map_err(s3_err)?;
                if bytes.len() as u64 != expected {
                    return Err(corrupt(format!("{what} is {} bytes, expected {expected}", bytes.len())));
                }
                Ok(bytes)
            });
        }
        stream::iter(reads).buffered(8).try_collect().await
    }

    /// The upload's multipart upload id, creating it (and its marker) if needed. An
    /// append that created one but was never recorded left its marker: reuse that one.
    async fn multipart(&self, id: &str, st: &mut State) -> Result<String, StorageError> {
        if let Some(m) = &st.multipart {
            return Ok(m.clone());
        }
        let marker = self.multipart_marker(id);
        let m = match self.get_small(&marker).await? {
            Some(m) => {
                String::from_utf8(m.to_vec()).map_err(|_| corrupt(format!("upload {id}: bad multipart marker")))?
            }
            None => {
                let m = self.s3.create_multipart(&self.object(id)).await.map_err(s3_err)?;
                self.s3.put(&marker, m.clone().into()).await.map_err(s3_err)?;
                m
            }
        };
        st.multipart = Some(m.clone());
        Ok(m)
    }

    /// Sends `bytes` as the next part.
    async fn put_part(&self, id: &str, st: &mut State, bytes: Vec<Bytes>) -> Result<(), StorageError> {
        if st.parts.len() >= MAX_PARTS - 1 {
            return Err(StorageError::Io(io::Error::other(format!(
                "upload {id} exceeds S3's {MAX_PARTS} parts of {} bytes",
                st.part_size
            ))));
        }
        let m = self.multipart(id, st).await?;
        let part = self
            .s3
            .put_part(&self.object(id), &m, st.parts.len(), PutPayload::from_iter(bytes))
            .await
            .map_err(s3_err)?;
        st.parts.push(part.content_id);
        Ok(())
    }

    /// Makes the upload's bytes the object `objects/<id>`.
    async fn complete(&self, id: &str, st: &State) -> Result<(), StorageError> {
        let object = self.object(id);
        match &st.multipart {
            None => match st.pending.as_slice() {
                [] => {
                    self.s3.put(&object, PutPayload::new()).await.map_err(s3_err)?;
                }
                // One server-side copy of less than a part: the common small-blob case.
                [one] => self.s3.copy(&self.segment(id, &one.name), &object).await.map_err(s3_err)?,
                several => {
                    let bytes = self.read_segments(id, several).await?;
                    self.s3.put(&object, PutPayload::from_iter(bytes)).await.map_err(s3_err)?;
                }
            },
            Some(m) => {
                let mut parts: Vec<PartId> = st.parts.iter().map(|e| PartId { content_id: e.clone() }).collect();
                if !st.pending.is_empty() {
                    let bytes = self.read_segments(id, &st.pending).await?;
                    let part = self
                        .s3
                        .put_part(&object, m, parts.len(), PutPayload::from_iter(bytes))
                        .await
                        .map_err(s3_err)?;
                    parts.push(part);
                }
                self.s3.complete_multipart(&object, m, parts).await.map_err(s3_err)?;
            }
        }
        Ok(())
    }

    /// The key of an existing blob `hex` of `len` bytes, if the marker names one.
    async fn existing(&self, hex: &str, len: u64) -> Result<Option<String>, StorageError> {
        let Some(marker) = self.get_small(&self.digest_marker(hex)).await? else {
            return Ok(None);
        };
        let Some(key) = std::str::from_utf8(&marker).ok().filter(|k| parse_key(k).is_some_and(|(h, _)| h == hex))
        else {
            return Ok(None);
        };
        // A marker outlives its blob if a crash came between deleting the two.
        Ok((self.size_of(&self.blob_path(key)?).await? == Some(len)).then(|| key.to_owned()))
    }

    /// Removes an upload's staging objects: everything under `uploads/<id>/` plus the
    /// ones `st` names, aborting the multipart upload the marker names unless it is
    /// `done` (completed or aborted already).
    async fn purge(&self, id: &str, st: &State, done: Option<&str>) -> Result<(), StorageError> {
        let mut paths: Vec<Path> =
            self.s3.list(Some(&self.upload_dir(id))).map_ok(|m| m.location).try_collect().await.map_err(s3_err)?;
        let marker = self.multipart_marker(id);
        if paths.contains(&marker)
            && let Some(m) = self.get_small(&marker).await?
        {
            let m = String::from_utf8_lossy(&m).into_owned();
            if done != Some(m.as_str()) {
                self.abort(id, &m).await?;
            }
        }
        for name in st.pending.iter().map(|s| &s.name).chain(&st.consumed) {
            let p = self.segment(id, name);
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
        self.delete_all(paths).await
    }

    async fn abort(&self, id: &str, multipart: &str) -> Result<(), StorageError> {
        match self.s3.abort_multipart(&self.object(id), &multipart.to_owned()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_err(e)),
        }
    }

    /// Deletes objects (in bulk where the server can); missing ones are fine.
    async fn delete_all(&self, paths: Vec<Path>) -> Result<(), StorageError> {
        if paths.is_empty() {
            return Ok(());
        }
        let input = stream::iter(paths.into_iter().map(Ok)).boxed();
        let mut results = self.s3.delete_stream(input);
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_err(e)),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    /// Costs no request: nothing is staged until bytes arrive.
    async fn create_upload(&self, id: &str) -> Result<UploadState, StorageError> {
        check_id(id)?;
        let st = State { part_size: self.part_size as u64, ..State::default() };
        Ok(serde_json::to_string(&st).expect("a State serializes"))
    }

    async fn append_upload(
        &self,
        id: &str,
        state: &str,
        offset: u64,
        mut data: ByteStream,
    ) -> Result<(u64, UploadState), StorageError> {
        check_id(id)?;
        let old = self.state(state)?;
        if old.len() != offset {
            return Err(StorageError::OffsetMismatch { expected: offset, actual: old.len() });
        }
        // `old` is the recorded state, so the segments its predecessor consumed are dead.
        // Best effort: whatever stays is removed with the upload.
        let dead = old.consumed.iter().map(|n| self.segment(id, n)).collect();
        let _ = self.delete_all(dead).await;

        let mut st = State { consumed: Vec::new(), ..old };
        let part_size = st.part_size as usize;
        let mut pending = st.pending_len() as usize;
        let mut buf = Chunks::default();
        let mut written = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(StorageError::Body)?;
            written += chunk.len() as u64;
            buf.push(chunk);
            while pending + buf.len >= part_size {
                let mut part = self.read_segments(id, &st.pending).await?;
                part.extend(buf.take(part_size - pending));
                self.put_part(id, &mut st, part).await?;
                let consumed: Vec<String> = st.pending.drain(..).map(|s| s.name).collect();
                st.consumed.extend(consumed);
                pending = 0;
            }
        }
        if buf.len > 0 {
            let start = offset + written - buf.len as u64;
            // Unique, so an append that is never recorded cannot touch a recorded segment.
            let name = format!("{start}-{}", uuid::Uuid::new_v4().simple());
            let len = buf.len as u64;
            self.s3.put(&self.segment(id, &name), PutPayload::from_iter(buf.chunks)).await.map_err(s3_err)?;
            st.pending.push(Segment { name, len });
        }
        Ok((written, serde_json::to_string(&st).expect("a State serializes")))
    }

    async fn commit_upload(&self, id: &str, state: &str, len: u64, digest: &Digest) -> Result<String, StorageError> {
        check_id(id)?;
        let st = self.state(state)?;
        let hex = digest.hex();
        let own = format!("sha256/{hex}/{id}");
        let object = self.object(id);
        if let Some(existing) = self.existing(hex, len).await? {
            if existing != own && self.size_of(&object).await? != Some(len) {
                // Dedupe: the bytes are there already. Best effort, as below.
                if let Some(m) = &st.multipart {
                    let _ = self.abort(id, m).await;
                }
                let _ = self.purge(id, &st, st.multipart.as_deref()).await;
                return Ok(existing);
            }
            // Committed before (this commit is a retry): the same key again.
            let _ = self.purge(id, &st, st.multipart.as_deref()).await;
            return Ok(own);
        }
        if st.len() != len {
            return Err(StorageError::OffsetMismatch { expected: len, actual: st.len() });
        }
        if let Err(e) = self.complete(id, &st).await {
            // An earlier commit may have completed it (then the multipart upload and the
            // segments are gone), and crashed before writing the marker.
            if self.size_of(&object).await? != Some(len) {
                return Err(e);
            }
        }
        self.s3.put(&self.digest_marker(hex), own.clone().into()).await.map_err(s3_err)?;
        // Best effort: leftovers are listed by list_uploads, and the janitor removes them.
        let _ = self.purge(id, &st, st.multipart.as_deref()).await;
        Ok(own)
    }

    async fn delete_upload(&self, id: &str, state: &str) -> Result<(), StorageError> {
        check_id(id)?;
        let st = self.state(state)?;
        if let Some(m) = &st.multipart {
            self.abort(id, m).await?;
        }
        self.purge(id, &st, st.multipart.as_deref()).await
    }

    /// Uploads with anything staged: pending segments or a multipart upload. An upload
    /// that was created but got no bytes has nothing in the bucket and is not listed.
    async fn list_uploads(&self) -> Result<Vec<String>, StorageError> {
        let listing = self.s3.list_with_delimiter(Some(&self.at(&["uploads"]))).await.map_err(s3_err)?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter(|id| check_id(id).is_ok())
            .map(str::to_owned)
            .collect())
    }

    async fn blob_size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.size_of(&self.blob_path(key)?).await
    }

    async fn read_blob(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        let path = self.blob_path(key)?;
        if let Some(r) = &range
            && r.start >= r.end
        {
            // S3 cannot express an empty range.
            return match self.size_of(&path).await? {
                Some(_) => Ok(Box::pin(stream::empty())),
                None => Err(StorageError::NotFound),
            };
        }
        let options = GetOptions::default().with_range(range.map(GetRange::Bounded));
        let result = self.s3.get_opts(&path, options).await.map_err(s3_err)?;
        Ok(Box::pin(result.into_stream().map_err(io::Error::other)))
    }

    async fn delete_blob(&self, key: &str) -> Result<(), StorageError> {
        let (hex, id) = parse_key(key).ok_or(StorageError::NotFound)?;
        match self.s3.delete(&self.object(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(s3_err(e)),
        }
        // The marker goes only if it names this blob: another copy may hold the digest.
        let marker = self.digest_marker(hex);
        if self.get_small(&marker).await?.is_some_and(|k| k == key.as_bytes()) {
            match self.s3.delete(&marker).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_err(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use berth_testkit::Garage;

    use super::*;

    fn config(g: &Garage, prefix: &str) -> S3Config {
        S3Config {
            bucket: g.bucket.clone(),
            prefix: prefix.to_owned(),
            region: g.region.clone(),
            endpoint: Some(g.endpoint.clone()),
            path_style: true,
            access_key_id: Some(g.access_key_id.clone()),
            secret_access_key: Some(g.secret_access_key.clone()),
            ..S3Config::default()
        }
    }

    fn store(g: &Garage, prefix: &str) -> S3BlobStore {
        S3BlobStore::new(config(g, prefix)).unwrap()
    }

    fn body(parts: Vec<Vec<u8>>) -> ByteStream {
        Box::pin(stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))).collect::<Vec<_>>()))
    }

    /// `first`, then the client goes away.
    fn failing_body(first: Vec<u8>) -> ByteStream {
        Box::pin(stream::iter(vec![Ok(Bytes::from(first)), Err(io::Error::new(io::ErrorKind::UnexpectedEof, "gone"))]))
    }

    async fn collect(s: ByteStream) -> Vec<u8> {
        s.try_fold(Vec::new(), |mut v, b| async move {
            v.extend_from_slice(&b);
            Ok(v)
        })
        .await
        .unwrap()
    }

    /// Deterministic incompressible bytes.
    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed as u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn parsed(state: &str) -> State {
        serde_json::from_str(state).unwrap()
    }

    async fn objects_under(store: &S3BlobStore, rel: &str) -> Vec<String> {
        let prefix = store.at(&[rel]);
        store.s3.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect().await.unwrap()
    }

    const MIB: usize = 1 << 20;

    #[tokio::test]
    async fn s3_store_passes_the_shared_suite() {
        let garage = Garage::start();
        let store = store(&garage, "suite");
        crate::suite::run(&store).await;
        assert!(objects_under(&store, "uploads").await.is_empty());
    }

    #[tokio::test]
    async fn an_upload_continues_on_another_node_whatever_happened_before() {
        let garage = Garage::start();
        let (a, b) = (store(&garage, "p/q"), store(&garage, "p/q"));
        let content = bytes(30 * MIB + 12_345, 7);
        let id = "0000bbbb-0000-4000-8000-000000000001";
        let st = a.create_upload(id).await.unwrap();

        // Node A: 3 MiB, a pending segment only.
        let (n, st) = a.append_upload(id, &st, 0, body(vec![content[..3 * MIB].to_vec()])).await.unwrap();
        assert_eq!(n as usize, 3 * MIB);
        assert!(parsed(&st).multipart.is_none());

        // Node B: a body that fails after filling a part (with A's segment) leaves the
        // state as it was, though a multipart upload and a part were made.
        let err = b
            .append_upload(id, &st, 3 * MIB as u64, failing_body(content[3 * MIB..12 * MIB].to_vec()))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Body(_)), "{err:?}");

        // Node B: an append that succeeds but is never recorded (the server saw a short
        // body), with different bytes than the real ones.
        let (_, unrecorded) = b.append_upload(id, &st, 3 * MIB as u64, body(vec![bytes(7 * MIB, 99)])).await.unwrap();
        assert_eq!(parsed(&unrecorded).parts.len(), 1);

        // Node A continues from the recorded state: 6 MiB fills part 1 with the 3 MiB
        // segment and leaves 1 MiB pending.
        let (_, st) =
            a.append_upload(id, &st, 3 * MIB as u64, body(vec![content[3 * MIB..9 * MIB].to_vec()])).await.unwrap();
        let s = parsed(&st);
        assert_eq!((s.parts.len(), s.pending_len() as usize, s.consumed.len()), (1, MIB, 1));
        assert!(s.multipart.is_some());

        // A restart of node B: a new instance takes over, in small and large chunks.
        drop(b);
        let b = store(&garage, "p/q");
        let mut offset = 9 * MIB;
        let mut st = st;
        for end in [9 * MIB + 10, 9 * MIB + 100_000, 20 * MIB, content.len()] {
            let chunk = content[offset..end].to_vec();
            let node = if end % 2 == 0 { &a } else { &b };
            let (n, next) = node.append_upload(id, &st, offset as u64, body(vec![chunk])).await.unwrap();
            assert_eq!(n as usize, end - offset);
            (st, offset) = (next, end);
        }
        assert_eq!(parsed(&st).parts.len(), 3);
        // The wrong offset is refused.
        assert!(matches!(
            a.append_upload(id, &st, 5, body(vec![b"x".to_vec()])).await,
            Err(StorageError::OffsetMismatch { expected: 5, .. })
        ));

        let key = a.commit_upload(id, &st, content.len() as u64, &Digest::of(&content)).await.unwrap();
        assert!(collect(b.read_blob(&key, None).await.unwrap()).await == content, "content differs");
        assert!(a.list_uploads().await.unwrap().is_empty());
        assert_eq!(objects_under(&a, "uploads").await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn small_blobs_are_one_put_and_large_ones_multipart() {
        let garage = Garage::start();
        let store = store(&garage, "");
        // Several small appends up to just under a part: no multipart upload.
        let content = bytes(DEFAULT_PART_SIZE - 1, 3);
        let id = "0000cccc-0000-4000-8000-000000000001";
        let mut st = store.create_upload(id).await.unwrap();
        let mut offset = 0;
        for end in [10, 5 * MIB, content.len()] {
            (_, st) =
                store.append_upload(id, &st, offset as u64, body(vec![content[offset..end].to_vec()])).await.unwrap();
            offset = end;
        }
        let s = parsed(&st);
        assert!(s.multipart.is_none() && s.parts.is_empty(), "{s:?}");
        assert_eq!(s.pending.len(), 3);
        assert!(objects_under(&store, &format!("uploads/{id}")).await.iter().all(|o| !o.ends_with("/multipart")));
        let key = store.commit_upload(id, &st, content.len() as u64, &Digest::of(&content)).await.unwrap();
        assert!(collect(store.read_blob(&key, None).await.unwrap()).await == content);

        // One append of a small blob: committed by copying its one segment.
        let id = "0000cccc-0000-4000-8000-000000000002";
        let st = store.create_upload(id).await.unwrap();
        let (_, st) = store.append_upload(id, &st, 0, body(vec![b"{}".to_vec()])).await.unwrap();
        assert_eq!(parsed(&st).pending.len(), 1);
        let key = store.commit_upload(id, &st, 2, &Digest::of(b"{}")).await.unwrap();
        assert_eq!(collect(store.read_blob(&key, None).await.unwrap()).await, b"{}");

        // The empty blob.
        let id = "0000cccc-0000-4000-8000-000000000003";
        let st = store.create_upload(id).await.unwrap();
        let key = store.commit_upload(id, &st, 0, &Digest::of(b"")).await.unwrap();
        assert_eq!(store.blob_size(&key).await.unwrap(), Some(0));
        assert!(collect(store.read_blob(&key, None).await.unwrap()).await.is_empty());

        // Exactly one part: multipart, with nothing pending.
        let content = bytes(DEFAULT_PART_SIZE, 4);
        let id = "0000cccc-0000-4000-8000-000000000004";
        let st = store.create_upload(id).await.unwrap();
        let (_, st) = store.append_upload(id, &st, 0, body(vec![content.clone()])).await.unwrap();
        let s = parsed(&st);
        assert!(s.multipart.is_some() && s.parts.len() == 1 && s.pending.is_empty(), "{s:?}");
        let key = store.commit_upload(id, &st, content.len() as u64, &Digest::of(&content)).await.unwrap();
        assert!(collect(store.read_blob(&key, None).await.unwrap()).await == content);
        assert!(store.list_uploads().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ranges_across_parts() {
        let garage = Garage::start();
        let store = store(&garage, "r");
        let content = bytes(2 * DEFAULT_PART_SIZE + 1000, 5);
        let id = "0000dddd-0000-4000-8000-000000000001";
        let st = store.create_upload(id).await.unwrap();
        let (_, st) = store.append_upload(id, &st, 0, body(vec![content.clone()])).await.unwrap();
        let key = store.commit_upload(id, &st, content.len() as u64, &Digest::of(&content)).await.unwrap();
        let p = DEFAULT_PART_SIZE as u64;
        let len = content.len() as u64;
        for r in [0..1, p - 5..p + 5, 2 * p - 1..2 * p + 1, len - 1..len, 0..len, 12..3 * MIB as u64] {
            let got = collect(store.read_blob(&key, Some(r.clone())).await.unwrap()).await;
            assert!(got == content[r.start as usize..r.end as usize], "range {r:?}");
        }
        assert!(collect(store.read_blob(&key, Some(7..7)).await.unwrap()).await.is_empty());
        let missing = format!("sha256/{}/0000dddd-0000-4000-8000-000000000002", "0".repeat(64));
        assert!(matches!(store.read_blob(&missing, Some(0..5)).await, Err(StorageError::NotFound)));
        assert!(matches!(store.read_blob(&missing, Some(5..5)).await, Err(StorageError::NotFound)));
        for bad in ["", "../x", "sha256/abc/0000", &format!("sha256/{}/../x", "0".repeat(64))] {
            assert!(matches!(store.read_blob(bad, None).await, Err(StorageError::NotFound)), "{bad}");
        }
    }

    #[tokio::test]
    async fn dedupe_and_repeated_commits() {
        let garage = Garage::start();
        let store = store(&garage, "d");
        let content = bytes(9 * MIB, 6);
        let digest = Digest::of(&content);
        let len = content.len() as u64;
        let upload = |id: &'static str| {
            let store = &store;
            let content = content.clone();
            async move {
                let st = store.create_upload(id).await.unwrap();
                store.append_upload(id, &st, 0, body(vec![content])).await.unwrap().1
            }
        };
        let (u1, u2, u3) = (
            "0000eeee-0000-4000-8000-000000000001",
            "0000eeee-0000-4000-8000-000000000002",
            "0000eeee-0000-4000-8000-000000000003",
        );
        let (s1, s2) = (upload(u1).await, upload(u2).await);
        let k1 = store.commit_upload(u1, &s1, len, &digest).await.unwrap();
        assert_eq!(k1, format!("sha256/{}/{u1}", digest.hex()));
        // Same digest: the second upload is dropped (multipart aborted, segments gone).
        let k2 = store.commit_upload(u2, &s2, len, &digest).await.unwrap();
        assert_eq!(k2, k1);
        assert!(store.list_uploads().await.unwrap().is_empty());
        assert_eq!(store.size_of(&store.object(u2)).await.unwrap(), None);
        let m2 = parsed(&s2).multipart.unwrap();
        let err = store.s3.put_part(&store.object(u2), &m2, 5, PutPayload::from_static(b"x")).await;
        assert!(err.is_err(), "the dropped upload's multipart upload is aborted");
        // A repeated commit returns the same key, also after the marker was lost (a crash
        // between completing the upload and writing it).
        assert_eq!(store.commit_upload(u1, &s1, len, &digest).await.unwrap(), k1);
        store.s3.delete(&store.digest_marker(digest.hex())).await.unwrap();
        assert_eq!(store.commit_upload(u1, &s1, len, &digest).await.unwrap(), k1);
        assert!(store.get_small(&store.digest_marker(digest.hex())).await.unwrap().is_some());

        // A crash after completing u3 but before its marker, while the marker names u1:
        // the retry still answers u3's own key.
        let s3 = upload(u3).await;
        store.complete(u3, &parsed(&s3)).await.unwrap();
        let k3 = store.commit_upload(u3, &s3, len, &digest).await.unwrap();
        assert_eq!(k3, format!("sha256/{}/{u3}", digest.hex()));
        assert!(collect(store.read_blob(&k3, None).await.unwrap()).await == content);

        // Deleting a copy the marker does not name keeps the marker; deleting the one it
        // names drops it, and the next commit of that digest stores it anew.
        store.delete_blob(&k3).await.unwrap();
        assert_eq!(store.existing(digest.hex(), len).await.unwrap(), Some(k1.clone()));
        store.delete_blob(&k1).await.unwrap();
        store.delete_blob(&k1).await.unwrap();
        assert_eq!(store.get_small(&store.digest_marker(digest.hex())).await.unwrap(), None);
        assert_eq!(store.blob_size(&k1).await.unwrap(), None);
        let u4 = "0000eeee-0000-4000-8000-000000000004";
        let s4 = upload(u4).await;
        assert_eq!(store.commit_upload(u4, &s4, len, &digest).await.unwrap(), format!("sha256/{}/{u4}", digest.hex()));
        // A stale marker (its blob deleted behind its back) is not trusted.
        store.s3.delete(&store.object(u4)).await.unwrap();
        let u5 = "0000eeee-0000-4000-8000-000000000005";
        let s5 = upload(u5).await;
        assert_eq!(store.commit_upload(u5, &s5, len, &digest).await.unwrap(), format!("sha256/{}/{u5}", digest.hex()));
    }

    #[tokio::test]
    async fn orphans_are_listed_and_removed_without_their_state() {
        let garage = Garage::start();
        let store = store(&garage, "o");
        let id = "0000ffff-0000-4000-8000-000000000001";
        let st = store.create_upload(id).await.unwrap();
        assert!(store.list_uploads().await.unwrap().is_empty(), "nothing staged yet");
        let (_, st) = store.append_upload(id, &st, 0, body(vec![bytes(9 * MIB, 8)])).await.unwrap();
        let m = parsed(&st).multipart.unwrap();
        assert_eq!(store.list_uploads().await.unwrap(), vec![id.to_owned()]);
        // The record is lost: the janitor passes an empty state.
        store.delete_upload(id, "").await.unwrap();
        assert!(store.list_uploads().await.unwrap().is_empty());
        assert!(objects_under(&store, "uploads").await.is_empty());
        let err = store.s3.put_part(&store.object(id), &m, 3, PutPayload::from_static(b"x")).await;
        assert!(err.is_err(), "the multipart upload is aborted");
        store.delete_upload(id, "").await.unwrap();

        // A multipart upload made by an append that was never recorded is aborted too.
        let id = "0000ffff-0000-4000-8000-000000000002";
        let st = store.create_upload(id).await.unwrap();
        let (_, unrecorded) = store.append_upload(id, &st, 0, body(vec![bytes(9 * MIB, 9)])).await.unwrap();
        store.delete_upload(id, &st).await.unwrap();
        assert!(store.list_uploads().await.unwrap().is_empty());
        let m = parsed(&unrecorded).multipart.unwrap();
        assert!(store.s3.put_part(&store.object(id), &m, 3, PutPayload::from_static(b"x")).await.is_err());
    }

    #[tokio::test]
    async fn presigned_get_serves_the_blob() {
        let garage = Garage::start();
        let store = store(&garage, "s");
        let id = "0000abab-0000-4000-8000-000000000001";
        let st = store.create_upload(id).await.unwrap();
        let (_, st) = store.append_upload(id, &st, 0, body(vec![b"hello world".to_vec()])).await.unwrap();
        let key = store.commit_upload(id, &st, 11, &Digest::of(b"hello world")).await.unwrap();
        let url = store.presigned_get(&key, Duration::from_secs(60)).await.unwrap();
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(&resp.bytes().await.unwrap()[..], b"hello world");
        assert_eq!(store.presigned_get("not-a-key", Duration::from_secs(60)).await, None);
    }

    #[tokio::test]
    async fn parts_of_unrecorded_appends_never_reach_a_blob() {
        let garage = Garage::start();
        let store = store(&garage, "x");
        let part = DEFAULT_PART_SIZE;
        // A part uploaded past the recorded ones by an append that was never recorded is
        // left out of the completed object.
        let id = "0000a0a0-0000-4000-8000-000000000001";
        let st = store.create_upload(id).await.unwrap();
        let content = bytes(part, 1);
        let (_, recorded) = store.append_upload(id, &st, 0, body(vec![content.clone()])).await.unwrap();
        let (_, unrecorded) =
            store.append_upload(id, &recorded, part as u64, body(vec![bytes(part, 2)])).await.unwrap();
        assert_eq!(parsed(&unrecorded).parts.len(), 2);
        let key = store.commit_upload(id, &recorded, part as u64, &Digest::of(&content)).await.unwrap();
        assert!(collect(store.read_blob(&key, None).await.unwrap()).await == content);

        // Two nodes appending from the same state at once (a misbehaving client): the
        // loser's part overwrites the winner's, and the server refuses to complete with
        // the winner's ETag. The commit fails; it never makes other bytes the blob.
        let id = "0000a0a0-0000-4000-8000-000000000002";
        let st = store.create_upload(id).await.unwrap();
        let content = bytes(part + 10, 3);
        let (_, winner) = store.append_upload(id, &st, 0, body(vec![content.clone()])).await.unwrap();
        let (_, _loser) = store.append_upload(id, &st, 0, body(vec![bytes(part + 10, 4)])).await.unwrap();
        assert!(store.commit_upload(id, &winner, content.len() as u64, &Digest::of(&content)).await.is_err());
        assert_eq!(store.size_of(&store.object(id)).await.unwrap(), None);
        store.delete_upload(id, &winner).await.unwrap();
        assert!(store.list_uploads().await.unwrap().is_empty());
    }

    /// Peak resident memory of this process (nextest runs each test in its own).
    fn peak_rss() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB");
        kib.trim().parse::<usize>().unwrap() * 1024
    }

    #[tokio::test]
    async fn memory_stays_bounded_whatever_the_blob_size() {
        let garage = Garage::start();
        let store = store(&garage, "m");
        let size = 400 * MIB;
        // A fresh allocation per chunk, as a request body gives: buffering shows in RSS.
        let chunk = |i: usize| vec![i as u8; MIB];
        let before = peak_rss();
        let id = "0000c0c0-0000-4000-8000-000000000001";
        let st = store.create_upload(id).await.unwrap();
        let data: ByteStream = Box::pin(stream::iter((0..size / MIB).map(move |i| Ok(Bytes::from(chunk(i))))));
        let (n, st) = store.append_upload(id, &st, 0, data).await.unwrap();
        assert_eq!(n as usize, size);
        let mut hasher = berth_core::DigestHasher::new();
        for i in 0..size / MIB {
            hasher.update(&chunk(i));
        }
        let key = store.commit_upload(id, &st, size as u64, &hasher.finish()).await.unwrap();
        let mut read = 0;
        let mut body = store.read_blob(&key, None).await.unwrap();
        while let Some(b) = body.next().await {
            read += b.unwrap().len();
        }
        assert_eq!(read, size);
        let grown = peak_rss().saturating_sub(before);
        assert!(grown < 64 * MIB, "peak memory grew by {} MiB for a {} MiB blob", grown / MIB, size / MIB);
    }

    #[test]
    fn config_from_url() {
        let c = S3Config::from_url(
            "s3://my-bucket/some/prefix/?endpoint=http%3A%2F%2F127.0.0.1%3A3900&region=garage&path_style=true",
        )
        .unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str(), c.region.as_str()), ("my-bucket", "some/prefix", "garage"));
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(c.path_style && !c.allow_http);
        assert_eq!(c.part_size, DEFAULT_PART_SIZE);

        let c = S3Config::from_url("s3://b").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str(), c.region.as_str(), c.endpoint.as_deref()),
            ("b", "", "us-east-1", None)
        );
        assert!(!c.path_style);

        let c = S3Config::from_url("s3://b/p?endpoint=http://minio.internal:9000&allow_http=true&part_size=16777216")
            .unwrap();
        assert!(c.allow_http);
        assert_eq!(c.part_size, 16 << 20);

        for bad in [
            "http://b/p",
            "s3://",
            "s3:///p",
            "s3://b/p?bogus=1",
            "s3://b?path_style=yes",
            "s3://b?part_size=1024",
            "s3://b?part_size=lots",
            "s3://b?endpoint=minio:9000",
            "s3://b?endpoint=http://minio.internal:9000",
            "s3://b/a//c",
            "s3://b?region=",
        ] {
            assert!(S3Config::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_endpoints_may_be_plain_http() {
        for url in ["http://127.0.0.1:3900", "http://localhost", "http://[::1]:9000/", "http://127.8.9.10"] {
            assert!(is_loopback(url), "{url}");
        }
        for url in ["http://10.0.0.1", "http://127.0.0.1.example.com", "http://example.com/127.0.0.1", "http://[::2]"] {
            assert!(!is_loopback(url), "{url}");
        }
        let c = S3Config { bucket: "b".into(), endpoint: Some("http://127.0.0.1:1".into()), ..S3Config::default() };
        assert!(S3BlobStore::new(c).is_ok());
        let c = S3Config { bucket: "b".into(), endpoint: Some("http://10.1.1.1:1".into()), ..S3Config::default() };
        assert!(S3BlobStore::new(c).is_err());
        let c = S3Config { bucket: "b".into(), access_key_id: Some("k".into()), ..S3Config::default() };
        assert!(S3BlobStore::new(c).is_err(), "a key id without a secret");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = S3Config {
            secret_access_key: Some("hunter2".into()),
            session_token: Some("tok".into()),
            ..S3Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("tok\""), "{shown}");
    }

    #[test]
    fn chunks_split_without_losing_bytes() {
        let mut c = Chunks::default();
        for part in [&b"abc"[..], b"defgh", b"i"] {
            c.push(Bytes::copy_from_slice(part));
        }
        let first: Vec<u8> = c.take(4).concat();
        assert_eq!(first, b"abcd");
        assert_eq!(c.len, 5);
        assert_eq!(c.take(5).concat(), b"efghi");
        assert_eq!(c.len, 0);
    }
}
