//! The S3 blob store (feature `s3`): blobs and staged uploads as objects in one bucket of
//! AWS S3 or a compatible server (MinIO, Ceph RGW, Garage), through `object_store`'s S3
//! client. Not a general S3 client: it only does what [`BlobStore`] needs.
//!
//! # Layout, under the configured prefix
//!
//! | object | what |
//! |---|---|
//! | `objects/<upload id>` | a committed blob's bytes: the upload's multipart upload completed in place (or, for a small blob, its one pending segment copied there) |
//! | `uploads/<upload id>/<offset>-<random>` | a pending segment: bytes of an upload not yet in a part |
//! | `uploads/<upload id>/multipart` | the S3 multipart upload id, written when the multipart upload is created |
//!
//! A blob's storage key is `sha256/<hex>/<upload id>`: it names the bytes
//! (`objects/<upload id>`) and says their digest. Nothing is ever copied or renamed on
//! commit: S3 has no rename and the bytes stay where the upload put them. (Earlier builds
//! also wrote `digests/sha256/<hex>` dedupe markers; nothing reads them now, and they may
//! be deleted.)
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
//! - Memory across appends is bounded too: every byte an append holds (received, or read
//!   back from segments) is taken from one budget per store, `append_budget` (default
//!   256 MiB, 32 parts), so N stalled requests cannot hold N parts. When the budget is
//!   short, an append writes what it holds as a pending segment and waits holding nothing
//!   (`s3/budget.rs` says why this cannot deadlock); a client idle for `SPILL_IDLE` while
//!   its append holds `SPILL_MIN` or more gets the same treatment, so a stalled request
//!   holds less than `SPILL_MIN`. Uncontended, an append costs a non-blocking semaphore
//!   operation per chunk and a timer.
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
//!   (`InvalidPart`) instead of making other bytes the blob. That failure is a
//!   [`StorageError::Conflict`], a client error: the upload cannot be completed.
//! - A part is sent while the request body waits (no pipelining): simple, and memory
//!   stays at one part; overlapping the two could speed an upload up to 2x, at twice the memory.
//!
//! # Commit, dedupe, idempotency
//!
//! `commit_upload` completes the upload at `objects/<id>` and returns the upload's own
//! key; if completing fails but the object is there with the right length, an earlier
//! commit of the same upload completed it (a retry after a crash), and the same key is
//! returned. The store never hands out another upload's bytes: deduplication is the
//! metadata store's (`link_blob` keeps the first key recorded for a digest, and the
//! committer deletes its own copy). So an object is only ever recorded by the commit of
//! the upload it is named after, which is what lets garbage collection tell, from the
//! metadata alone, that an object with no record and no upload will never get one.
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
use std::ops::Range;
use std::time::{Duration, UNIX_EPOCH};

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

use crate::{BlobStore, ByteStream, StorageError, StoredBlob, UploadState};

/// S3's minimum size of every part but the last.
pub const MIN_PART_SIZE: usize = 5 << 20;
/// The part size when the config names none: the memory one upload holds at most.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// S3's maximum part size.
const MAX_PART_SIZE: usize = 5 << 30;
/// S3's maximum number of parts in a multipart upload.
const MAX_PARTS: usize = 10_000;
/// The memory all appends of a store may hold when the config names no other: 32 parts.
pub const DEFAULT_APPEND_BUDGET: usize = 256 << 20;
/// An append whose client has sent nothing for this long while the append holds
/// [`SPILL_MIN`] or more writes what it holds to the bucket and gives back its budget.
const SPILL_IDLE: Duration = Duration::from_secs(1);
const SPILL_MIN: usize = 64 << 10;
/// How many times a bulk delete sends keys that failed (pauses of 0.1, 0.4, 1.6 s).
const DELETE_ATTEMPTS: u32 = 4;

mod budget;
mod config;
#[cfg(test)]
mod tests;

use budget::Budget;
pub use config::{S3Config, S3ConfigError};
use config::{config_err, is_loopback};

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

/// A completion the server refused because the recorded parts are not the ones it holds
/// (`InvalidPart`: another append from the same state overwrote one) is a conflict the
/// client caused; anything else stays what it was.
fn conflict_or(e: StorageError, id: &str) -> StorageError {
    let invalid_part = |io: &io::Error| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(io);
        while let Some(c) = cause {
            if c.to_string().contains("InvalidPart") {
                return true;
            }
            cause = c.source();
        }
        false
    };
    match e {
        StorageError::Io(io) if invalid_part(&io) => StorageError::Conflict(format!(
            "upload {id} was appended to concurrently from the same offset; its parts no longer match: start it again"
        )),
        other => other,
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
    /// Signs presigned URLs: `s3`, or a client of the public endpoint
    /// ([`S3BlobStore::with_public_endpoint`]); it sends no requests.
    signer: AmazonS3,
    prefix: Path,
    part_size: usize,
    budget: Budget,
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
        let s3 = client(&config, config.endpoint.as_deref())?;
        Ok(S3BlobStore {
            signer: s3.clone(),
            s3,
            prefix,
            part_size: config.part_size,
            budget: Budget::new(config.append_budget),
        })
    }

    /// Makes [`BlobStore::presign_get`] sign URLs for `endpoint` (e.g.
    /// `https://s3.example.com`), the address clients reach the bucket at, instead of the
    /// endpoint this store talks to (which may be an internal name). A presigned URL's
    /// signature covers its host, so the URL must be signed for the host the client sends.
    pub fn with_public_endpoint(mut self, config: &S3Config, endpoint: &str) -> Result<S3BlobStore, S3ConfigError> {
        let parsed = endpoint.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(parsed, Some("http" | "https")) {
            return Err(config_err(format!("public endpoint {endpoint:?} must be an http:// or https:// URL")));
        }
        self.signer = client(config, Some(endpoint))?;
        Ok(self)
    }

    fn at(&self, parts: &[&str]) -> Path {
        parts.iter().fold(self.prefix.clone(), |p, part| p.join(*part))
    }

    fn object(&self, id: &str) -> Path {
        self.at(&["objects", id])
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

    /// Writes the buffer, the bytes just before `end`, as the upload's next pending
    /// segment, and empties it. Nothing to do for an empty buffer.
    async fn spill(&self, id: &str, st: &mut State, buf: &mut Chunks, end: u64) -> Result<(), StorageError> {
        if buf.len == 0 {
            return Ok(());
        }
        let start = end - buf.len as u64;
        // Unique, so an append that is never recorded cannot touch a recorded segment.
        let name = format!("{start}-{}", uuid::Uuid::new_v4().simple());
        let len = buf.len as u64;
        let bytes = std::mem::take(buf).chunks;
        self.s3.put(&self.segment(id, &name), PutPayload::from_iter(bytes)).await.map_err(s3_err)?;
        st.pending.push(Segment { name, len });
        Ok(())
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
    ///
    /// A bulk delete answers 200 with an error per key it could not delete (`SlowDown`,
    /// `InternalError`, a busy server), which the client's retries of failed requests never
    /// see. Deleting is idempotent, so the keys of a batch that had one are sent again, a
    /// few times with a growing pause, before the error is returned.
    async fn delete_all(&self, paths: Vec<Path>) -> Result<(), StorageError> {
        let mut pause = Duration::from_millis(100);
        let mut left = paths;
        let mut attempt = 0;
        while !left.is_empty() {
            attempt += 1;
            let input = stream::iter(left.clone().into_iter().map(Ok)).boxed();
            let mut results = self.s3.delete_stream(input);
            let mut error = None;
            let mut deleted = std::collections::HashSet::new();
            while let Some(r) = results.next().await {
                match r {
                    Ok(path) => {
                        deleted.insert(path);
                    }
                    Err(object_store::Error::NotFound { path, .. }) => {
                        deleted.insert(Path::from(path));
                    }
                    Err(e) => error = Some(e),
                }
            }
            let Some(e) = error else { return Ok(()) };
            if attempt == DELETE_ATTEMPTS {
                return Err(s3_err(e));
            }
            tracing::warn!(error = %e, attempt, "a bulk delete failed for some keys; sending them again");
            left.retain(|p| !deleted.contains(p));
            tokio::time::sleep(pause).await;
            pause *= 4;
        }
        Ok(())
    }
}

/// An S3 client of the bucket `config` names, at `endpoint` (`None`: AWS).
fn client(config: &S3Config, endpoint: Option<&str>) -> Result<AmazonS3, S3ConfigError> {
    let allow_http = config.allow_http || endpoint.is_some_and(is_loopback);
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
    if let Some(endpoint) = endpoint {
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
    let (key_id, secret, token) = match (&config.access_key_id, &config.secret_access_key) {
        (Some(k), Some(s)) => (Some(k.clone()), Some(s.clone()), config.session_token.clone()),
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
    builder.build().map_err(|e| config_err(e.to_string()))
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
        // Bytes received but not yet in the bucket; every one of them is in `grant`.
        let mut buf = Chunks::default();
        let mut grant = self.budget.grant();
        let mut written = 0u64;
        loop {
            let next = if buf.len >= SPILL_MIN {
                match tokio::time::timeout(SPILL_IDLE, data.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // The client stalls: its bytes wait in the bucket, not in memory.
                        self.spill(id, &mut st, &mut buf, offset + written).await?;
                        grant.shrink_to(0);
                        continue;
                    }
                }
            } else {
                data.next().await
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(StorageError::Body)?;
            if !grant.try_grow(chunk.len()) {
                // Never wait holding budget (see s3/budget.rs).
                self.spill(id, &mut st, &mut buf, offset + written).await?;
                grant.shrink_to(0);
                grant.grow(chunk.len()).await;
            }
            written += chunk.len() as u64;
            buf.push(chunk);
            while st.pending_len() as usize + buf.len >= part_size {
                let pending = st.pending_len() as usize;
                if pending > 0 && !grant.try_grow(pending) {
                    self.spill(id, &mut st, &mut buf, offset + written).await?;
                    grant.shrink_to(0);
                    grant.grow(st.pending_len() as usize).await;
                }
                // The pending segments' bytes go first, then the buffer's.
                let mut joined = Chunks::default();
                for b in self.read_segments(id, &st.pending).await? {
                    joined.push(b);
                }
                for b in std::mem::take(&mut buf).chunks {
                    joined.push(b);
                }
                buf = joined;
                let consumed: Vec<String> = st.pending.drain(..).map(|s| s.name).collect();
                st.consumed.extend(consumed);
                let part = buf.take(part_size);
                self.put_part(id, &mut st, part).await?;
                grant.shrink_to(buf.len);
            }
        }
        self.spill(id, &mut st, &mut buf, offset + written).await?;
        Ok((written, serde_json::to_string(&st).expect("a State serializes")))
    }

    async fn commit_upload(&self, id: &str, state: &str, len: u64, digest: &Digest) -> Result<String, StorageError> {
        check_id(id)?;
        let st = self.state(state)?;
        let own = format!("sha256/{}/{id}", digest.hex());
        let object = self.object(id);
        if st.len() != len {
            return Err(StorageError::OffsetMismatch { expected: len, actual: st.len() });
        }
        if let Err(e) = self.complete(id, &st).await {
            // An earlier commit may have completed it (then the multipart upload and the
            // segments are gone) and crashed before the metadata recorded it.
            if self.size_of(&object).await? != Some(len) {
                return Err(conflict_or(e, id));
            }
        }
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

    async fn probe(&self) -> Result<(), StorageError> {
        // An object nobody writes: "not found" is the bucket answering.
        self.size_of(&self.at(&["probe"])).await.map(|_| ())
    }

    async fn delete_blob(&self, key: &str) -> Result<(), StorageError> {
        match self.s3.delete(&self.blob_path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_err(e)),
        }
    }

    /// Signed for the public endpoint when one is configured; signing is local (an HMAC
    /// over the URL), unless credentials must first be fetched from the instance role.
    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>, StorageError> {
        let path = self.blob_path(key)?;
        let url = self.signer.signed_url(http::Method::GET, &path, ttl).await.map_err(s3_err)?;
        Ok(Some(url.into()))
    }

    async fn list_blobs(&self, after: Option<&str>, limit: usize) -> Result<Vec<StoredBlob>, StorageError> {
        let prefix = self.at(&["objects"]);
        // `start-after` pushed down: one ListObjectsV2 request per 1,000 objects, and no
        // more requests than the page needs (the stream is dropped once it is full).
        let listing = match after {
            Some(id) => self.s3.list_with_offset(Some(&prefix), &self.object(id)),
            None => self.s3.list(Some(&prefix)),
        };
        let mut found: Vec<StoredBlob> = listing
            .map_err(s3_err)
            .try_filter_map(|meta| async move {
                let Some(id) = meta.location.filename().filter(|id| check_id(id).is_ok()) else {
                    return Ok(None);
                };
                let millis = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
                Ok(Some(StoredBlob {
                    name: id.to_owned(),
                    digest: None,
                    size: meta.size,
                    modified: UNIX_EPOCH + Duration::from_millis(millis),
                }))
            })
            .take(limit)
            .try_collect()
            .await?;
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn stored_name(&self, key: &str) -> Option<String> {
        parse_key(key).map(|(_, id)| id.to_owned())
    }

    async fn delete_stored(&self, names: &[String]) -> Result<(), StorageError> {
        let paths = names.iter().map(|id| check_id(id).map(|()| self.object(id))).collect::<Result<Vec<_>, _>>()?;
        // DeleteObjects: up to 1,000 keys a request, those that failed sent again.
        self.delete_all(paths).await
    }
}
