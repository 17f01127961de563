//! The blob store: content-addressed bytes and the staging area uploads write into.
//!
//! A blob store is dumb on purpose: it never sees repositories, tags or users, and it
//! never decides whether content is visible. The metadata store does. The store's only
//! promises are the ones the write path needs: an append is all-or-nothing, a committed
//! blob is durable before `commit_upload` returns, and a blob never exists half-written.
//!
//! # The backends
//!
//! `BlobStore` trait, `FsBlobStore` (`blobs/sha256/<2 hex>/<hex>`, `uploads/<id>`) and,
//! behind the `s3` feature, `S3BlobStore` (object_store; see the module doc of `s3.rs` for
//! its layout; `s3/config.rs` parses `s3://` URLs, `s3/budget.rs` is the byte budget every
//! append's buffered bytes come from, `s3/tests.rs` runs against Garage). Two appends from
//! one upload state make the commit fail with `StorageError::Conflict` (a client error),
//! never a blob of the loser's bytes. `presign_get` gives a URL anyone may `GET` a blob at
//! for a while (S3: a presigned URL, signed for the public endpoint when one is set, since
//! the signature covers the host; the filesystem: none). `list_blobs` pages through what a
//! store holds (by its own names; S3 lists with `start-after`, 1,000 a request) and
//! `delete_stored` removes by name (S3: `DeleteObjects` batches, whose per-key failures are
//! sent again a few times, since the client's request retries never see them), for GC's
//! full sweep. `probe` is the cheap readiness request (`/readyz`). `suite.rs` is the
//! behaviour every backend must show; each backend's tests run it (the S3 one against a
//! real Garage server). `s3` is a default feature so that `cargo test -p berth-storage`
//! always runs the S3 tests (a build without it has one
//! failing test saying so); the HTTP edge and the jobs depend with default features off.
//!
//! # Invariants
//!
//!  an append is all-or-nothing; the backend's progress record
//! (`UploadState`: the boot id for files, multipart id and parts for S3) is returned to the
//! caller, who stores it with the upload, so any node continues any upload.
//! `commit_upload` makes a blob durable before returning and returns its storage key; it
//! is idempotent, so a commit repeated after a crash finds the bytes. It never pads: a
//! staged object shorter than the recorded size fails the commit. S3 commits never
//! copy large objects: the multipart upload completes in place. The store never decides
//! visibility. `FsBlobStore` runs system calls on blocking threads only when there is work
//! ready: an append waits for body bytes on the request's task (a stalled client holds no
//! thread) and hands 1 MiB batches to blocking writes, the request task hashing the next
//! batch while one is written; a helper thread starts writeback as bytes arrive
//! (`sync_file_range`), so the commit's fsync has little left. One writer per staged file
//! by construction: every operation on an upload holds that upload's lock, and every
//! blocking write holds a share of it, so the lock frees only when no write can still
//! happen, even after the caller's future was dropped. Its `UploadState` is the machine's
//! boot id: staged bytes written before a power loss are never continued (they are not
//! fsynced until the commit). A shard directory is created, and fsynced into its parent,
//! by the first commit into it. Blobs are served by `pread`, never memory-mapped
//! (`fs/serve.rs`), in 256 KiB chunks: what the page cache holds is read on the sending task
//! with `preadv2(RWF_NOWAIT)` (no thread handoff, and the chunk is still in the CPU cache when
//! the socket write copies it), a read that would wait for the disk goes to a blocking thread;
//! reading ahead is the kernel's (`POSIX_FADV_SEQUENTIAL`). A disk error or a file shorter
//! than recorded fails that one response (before the headers if the file is already short,
//! else by cutting the body, logged), never the process.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use berth_core::Digest;
use bytes::Bytes;
use futures_util::Stream;

mod fs;
#[cfg(feature = "s3")]
mod s3;
#[cfg(test)]
mod suite;

/// The S3 backend's tests live in `s3.rs`, behind the `s3` feature (on by default). A test
/// run without the feature fails here rather than pass with that suite compiled out.
#[cfg(all(test, not(feature = "s3")))]
#[test]
fn the_s3_suite_is_not_compiled_out() {
    panic!("berth-storage was built without its `s3` feature, so its S3 tests did not run: test with default features");
}

pub use fs::FsBlobStore;
#[cfg(feature = "s3")]
pub use s3::{DEFAULT_APPEND_BUDGET, DEFAULT_PART_SIZE, MIN_PART_SIZE, S3BlobStore, S3Config, S3ConfigError};

/// A stream of body bytes, in or out.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    /// The staged upload is not `offset` bytes long and cannot be made so.
    #[error("upload is {actual} bytes, expected {expected}")]
    OffsetMismatch { expected: u64, actual: u64 },
    /// The incoming body failed (client went away, truncated body). Nothing was kept.
    #[error("request body: {0}")]
    Body(io::Error),
    #[error("storage is full")]
    Full,
    /// Concurrent requests changed the upload in ways that cannot both hold (e.g. two
    /// appends from one state to S3); the upload cannot be completed as recorded.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("storage: {0}")]
    Io(io::Error),
}

/// Maps a storage failure to what the client is told.
pub fn storage_err(e: StorageError) -> berth_core::Error {
    use berth_core::{Error, ErrorKind};
    match e {
        StorageError::Full => Error::new(ErrorKind::StorageFull),
        StorageError::Conflict(why) => Error::new(ErrorKind::BlobUploadInvalid).with_message(why),
        StorageError::Body(e) => Error::new(ErrorKind::BlobUploadInvalid).with_message(format!("request body: {e}")),
        other => Error::internal(other),
    }
}

/// Maps a storage failure on an upload's staged bytes. Staged bytes that are gone or
/// shorter than acknowledged (lost with the machine) cannot be resumed: the client is
/// told the upload is unknown (`BLOB_UPLOAD_UNKNOWN`) and starts again. Anything else as
/// [`storage_err`].
pub fn upload_err(e: StorageError) -> berth_core::Error {
    use berth_core::{Error, ErrorKind};
    match e {
        StorageError::NotFound | StorageError::OffsetMismatch { .. } => {
            Error::new(ErrorKind::BlobUploadUnknown).with_message(format!("the upload's staged bytes are gone: {e}"))
        }
        other => storage_err(other),
    }
}

impl From<io::Error> for StorageError {
    fn from(e: io::Error) -> StorageError {
        match e.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StorageError::Full,
            _ => StorageError::Io(e),
        }
    }
}

/// A blob as the store holds it, seen by a listing (garbage collection's full sweep looks
/// for bytes no record names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    /// The store's own name for it: listings page by it, [`BlobStore::delete_stored`]
    /// takes it, [`BlobStore::stored_name`] maps a storage key to it.
    pub name: String,
    /// Its digest, when the name says it (the filesystem's does). Without one, the name
    /// is the id of the upload whose commit stored these bytes (S3).
    pub digest: Option<Digest>,
    pub size: u64,
    pub modified: SystemTime,
}

/// A backend's record of an upload's progress beyond its bytes (for S3: the multipart
/// upload id, the parts so far, a pending tail). Kept in the metadata store with the
/// upload, so that any node can continue it. Empty for the filesystem.
pub type UploadState = String;

/// Content-addressed blob storage with a staging area for uploads.
///
/// Upload ids are opaque, validated by the caller (`[0-9a-f-]+`), and unique. Blobs are
/// addressed by the storage key [`BlobStore::commit_upload`] returned, which the metadata
/// store records with the blob.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Creates an empty staged upload.
    async fn create_upload(&self, id: &str) -> Result<UploadState, StorageError>;

    /// Appends `data` to an upload that is `offset` bytes long (anything past `offset` left
    /// by an interrupted append is discarded first). All or nothing: if the body or the
    /// store fails, the upload is left at `offset`. Returns the number of bytes appended
    /// and the new state. An append at offset 0 with the state `create_upload` returned
    /// works even after the upload was committed (it starts the upload over): a retried
    /// closing request that carries the whole blob needs nothing else.
    async fn append_upload(
        &self,
        id: &str,
        state: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<(u64, UploadState), StorageError>;

    /// Makes the upload's first `len` bytes the blob `digest`, durably, and returns the
    /// blob's storage key; the upload is gone afterwards. The caller has verified the
    /// digest. Where keys are per digest ([`BlobStore::key_per_digest`]) an existing blob
    /// keeps its bytes and this upload is dropped; otherwise the key names this upload's
    /// bytes only, never another upload's (the metadata store deduplicates). Idempotent:
    /// for an upload committed before (a crash came before the metadata recorded it) it
    /// returns the same key, or `NotFound` if the bytes are gone.
    async fn commit_upload(&self, id: &str, state: &str, len: u64, digest: &Digest) -> Result<String, StorageError>;

    /// Drops an upload; dropping a missing one succeeds. `state` is empty when the
    /// upload's record is lost (an orphan the janitor found by id).
    async fn delete_upload(&self, id: &str, state: &str) -> Result<(), StorageError>;

    /// Ids of all staged uploads, for the janitor.
    async fn list_uploads(&self) -> Result<Vec<String>, StorageError>;

    /// The size of a stored blob, or `None`.
    async fn blob_size(&self, key: &str) -> Result<Option<u64>, StorageError>;

    /// Streams a blob, or the given byte range of it.
    async fn read_blob(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StorageError>;

    /// Removes a blob; removing a missing one succeeds.
    async fn delete_blob(&self, key: &str) -> Result<(), StorageError>;

    /// A URL at which anyone may `GET` the blob `key` (with a `Range` if they like) for
    /// `ttl`, without credentials: a presigned URL, for answering blob pulls with a
    /// redirect; `None` when the store cannot make one (the filesystem has no URL). It
    /// does not check that the blob exists; the caller has.
    async fn presign_get(&self, _key: &str, _ttl: Duration) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    /// Up to `limit` stored blobs with names after `after`, sorted by name: one page of
    /// everything the store holds (S3: one listing request per 1,000).
    async fn list_blobs(&self, after: Option<&str>, limit: usize) -> Result<Vec<StoredBlob>, StorageError>;

    /// The name a listing gives the blob stored under `key`.
    fn stored_name(&self, key: &str) -> Option<String>;

    /// Every copy of a digest has the same key (the filesystem); otherwise each commit
    /// has its own (S3: the upload's id).
    fn key_per_digest(&self) -> bool {
        false
    }

    /// Removes blobs by their listing names, in batches where the store has them (S3's
    /// `DeleteObjects`); removing a missing one succeeds.
    async fn delete_stored(&self, names: &[String]) -> Result<(), StorageError>;
    /// Whether the store answers at all (a readiness probe): one cheap request that
    /// touches no blob (a `stat` of the blob directory, a `HEAD` in the bucket).
    async fn probe(&self) -> Result<(), StorageError>;
}
