//! [`Timed`]: a store decorator that times every operation of the store it wraps into
//! `berth_store_operation_duration_seconds{store, operation, outcome}`. `berth` wraps the
//! blob store and the registry's metadata store with it (the metadata store inside the
//! embedded read cache, so that a cache hit is not counted as a database operation); the
//! backends know nothing of it.
//!
//! A decorator, not code in each backend: a method added to a store trait must be added
//! here too (the compiler says so).

use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use berth_core::{Digest, Error, Reference, RepoName, Tag};
use berth_meta::gc::{GarbageBlob, GarbageManifest, GcRun, GcStore};
use berth_meta::{
    Artifacts, BlobInfo, ManifestRecord, MetadataStore, NewManifest, Page, PageSpec, Referrers, TagTarget, UploadRecord,
};
use berth_storage::{BlobStore, ByteStream, StorageError, StoredBlob, UploadState};
use prometheus_client::metrics::histogram::Histogram;

use super::{Metrics, OperationLabels};

/// `inner`, timed. `S` is the store's type (generic, so the embedded cache can hold it).
pub struct Timed<S> {
    inner: S,
    metrics: Arc<Metrics>,
    store: &'static str,
    /// Each operation's series (ok, error), resolved on first use.
    slots: Box<[[OnceLock<Histogram>; 2]]>,
}

/// The operations of each store, in the order of their slots.
const META_OPS: [&str; 23] = [
    "repo_blob",
    "blob",
    "repos_with_blob",
    "link_blob",
    "unlink_blob",
    "create_upload",
    "upload",
    "advance_upload",
    "delete_upload",
    "expire_uploads",
    "known_uploads",
    "put_manifest",
    "manifest",
    "delete_manifest",
    "delete_tag",
    "repo_exists",
    "tags",
    "catalog",
    "artifacts",
    "try_lease",
    "referrers",
    "delete_repository",
    "cache_manifest",
];
const BLOB_OPS: [&str; 9] = [
    "create_upload",
    "append_upload",
    "commit_upload",
    "delete_upload",
    "list_uploads",
    "blob_size",
    "read_blob",
    "delete_blob",
    "probe",
];

impl<S> Timed<S> {
    /// Times a metadata store (`store="database"`).
    pub fn database(inner: S, metrics: Arc<Metrics>) -> Timed<S> {
        Timed::new(inner, metrics, "database", META_OPS.len())
    }

    /// Times a blob store (`store="blobs"`).
    pub fn blobs(inner: S, metrics: Arc<Metrics>) -> Timed<S> {
        Timed::new(inner, metrics, "blobs", BLOB_OPS.len())
    }

    fn new(inner: S, metrics: Arc<Metrics>, store: &'static str, ops: usize) -> Timed<S> {
        let slots = (0..ops).map(|_| [OnceLock::new(), OnceLock::new()]).collect();
        Timed { inner, metrics, store, slots }
    }

    async fn time<T, E>(&self, op: usize, f: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        if !self.metrics.enabled() {
            return f.await;
        }
        let started = Instant::now();
        let result = f.await;
        let outcome = usize::from(result.is_err());
        let names = if self.store == "database" { &META_OPS[..] } else { &BLOB_OPS[..] };
        let histogram = self.slots[op][outcome].get_or_init(|| {
            let labels = OperationLabels {
                store: self.store,
                operation: names[op],
                outcome: if outcome == 0 { "ok" } else { "error" },
            };
            self.metrics.operations.get_or_create_owned(&labels)
        });
        histogram.observe(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl<S: MetadataStore> MetadataStore for Timed<S> {
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobInfo>, Error> {
        self.time(0, self.inner.repo_blob(repo, digest)).await
    }

    async fn blob(&self, digest: &Digest) -> Result<Option<BlobInfo>, Error> {
        self.time(1, self.inner.blob(digest)).await
    }

    async fn repos_with_blob(&self, digest: &Digest, limit: u32) -> Result<Vec<RepoName>, Error> {
        self.time(2, self.inner.repos_with_blob(digest, limit)).await
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        blob: &BlobInfo,
        upload_id: Option<&str>,
    ) -> Result<String, Error> {
        self.time(3, self.inner.link_blob(repo, digest, blob, upload_id)).await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, Error> {
        self.time(4, self.inner.unlink_blob(repo, digest)).await
    }

    async fn create_upload(&self, id: &str, repo: &RepoName, state: &str, max_open: u32) -> Result<bool, Error> {
        self.time(5, self.inner.create_upload(id, repo, state, max_open)).await
    }

    async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<UploadRecord>, Error> {
        self.time(6, self.inner.upload(repo, id)).await
    }

    async fn advance_upload(
        &self,
        id: &str,
        from: u64,
        to: u64,
        hash_state: &[u8],
        state: &str,
    ) -> Result<bool, Error> {
        self.time(7, self.inner.advance_upload(id, from, to, hash_state, state)).await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, Error> {
        self.time(8, self.inner.delete_upload(id)).await
    }

    async fn expire_uploads(&self, before: i64, limit: u32) -> Result<Vec<(String, String)>, Error> {
        self.time(9, self.inner.expire_uploads(before, limit)).await
    }

    async fn known_uploads(&self, ids: &[String]) -> Result<Vec<bool>, Error> {
        self.time(10, self.inner.known_uploads(ids)).await
    }

    async fn put_manifest(&self, manifest: NewManifest<'_>) -> Result<(), Error> {
        self.time(11, self.inner.put_manifest(manifest)).await
    }

    async fn cache_manifest(&self, manifest: NewManifest<'_>) -> Result<(), Error> {
        self.time(22, self.inner.cache_manifest(manifest)).await
    }

    async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, Error> {
        self.time(12, self.inner.manifest(repo, reference)).await
    }

    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        condition: berth_meta::DeleteIf,
    ) -> Result<bool, Error> {
        self.time(13, self.inner.delete_manifest(repo, digest, condition)).await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, expected: Option<&TagTarget>) -> Result<bool, Error> {
        self.time(14, self.inner.delete_tag(repo, tag, expected)).await
    }

    async fn delete_repository(&self, repo: &RepoName) -> Result<Option<u64>, Error> {
        self.time(21, self.inner.delete_repository(repo)).await
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, Error> {
        self.time(15, self.inner.repo_exists(repo)).await
    }

    async fn tags(&self, repo: &RepoName, last: Option<&str>, limit: u32) -> Result<Option<Page>, Error> {
        self.time(16, self.inner.tags(repo, last, limit)).await
    }

    async fn catalog(&self, last: Option<&str>, limit: u32) -> Result<Page, Error> {
        self.time(17, self.inner.catalog(last, limit)).await
    }

    async fn artifacts(&self, repo: &RepoName, last: Option<&str>, limit: u32) -> Result<Option<Artifacts>, Error> {
        self.time(18, self.inner.artifacts(repo, last, limit)).await
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Result<bool, Error> {
        self.time(19, self.inner.try_lease(name, holder, ttl_secs)).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: PageSpec<'_>,
    ) -> Result<Referrers, Error> {
        self.time(20, self.inner.referrers(repo, subject, artifact_type, page)).await
    }
}

#[async_trait]
impl<S: BlobStore> BlobStore for Timed<S> {
    async fn create_upload(&self, id: &str) -> Result<UploadState, StorageError> {
        self.time(0, self.inner.create_upload(id)).await
    }

    async fn append_upload(
        &self,
        id: &str,
        state: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<(u64, UploadState), StorageError> {
        self.time(1, self.inner.append_upload(id, state, offset, data)).await
    }

    async fn commit_upload(&self, id: &str, state: &str, len: u64, digest: &Digest) -> Result<String, StorageError> {
        self.time(2, self.inner.commit_upload(id, state, len, digest)).await
    }

    async fn delete_upload(&self, id: &str, state: &str) -> Result<(), StorageError> {
        self.time(3, self.inner.delete_upload(id, state)).await
    }

    async fn list_uploads(&self) -> Result<Vec<String>, StorageError> {
        self.time(4, self.inner.list_uploads()).await
    }

    async fn blob_size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.time(5, self.inner.blob_size(key)).await
    }

    /// Timed until the stream is open, not until it is read: reading is the response's.
    async fn read_blob(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        self.time(6, self.inner.read_blob(key, range)).await
    }

    async fn delete_blob(&self, key: &str) -> Result<(), StorageError> {
        self.time(7, self.inner.delete_blob(key)).await
    }

    async fn probe(&self) -> Result<(), StorageError> {
        self.time(8, self.inner.probe()).await
    }

    // Not timed: redirects, GC's listing and deleting (background work, not a request's).
    async fn presign_get(&self, key: &str, ttl: std::time::Duration) -> Result<Option<String>, StorageError> {
        self.inner.presign_get(key, ttl).await
    }

    async fn list_blobs(&self, after: Option<&str>, limit: usize) -> Result<Vec<StoredBlob>, StorageError> {
        self.inner.list_blobs(after, limit).await
    }

    fn stored_name(&self, key: &str) -> Option<String> {
        self.inner.stored_name(key)
    }

    fn key_per_digest(&self) -> bool {
        self.inner.key_per_digest()
    }

    async fn delete_stored(&self, names: &[String]) -> Result<(), StorageError> {
        self.inner.delete_stored(names).await
    }
}

/// The garbage collector's view of a timed store, untimed (background work): passed
/// through, so that GC in embedded mode goes through the same read cache as requests.
#[async_trait]
impl<S: GcStore> GcStore for Timed<S> {
    async fn due_count(&self, before: i64) -> Result<u64, Error> {
        self.inner.due_count(before).await
    }
    async fn garbage_blobs(&self, before: i64, limit: u32) -> Result<Vec<GarbageBlob>, Error> {
        self.inner.garbage_blobs(before, limit).await
    }
    async fn garbage_manifests(
        &self,
        before: i64,
        delete_untagged: bool,
        limit: u32,
    ) -> Result<Vec<GarbageManifest>, Error> {
        self.inner.garbage_manifests(before, delete_untagged, limit).await
    }
    async fn remove_manifest(&self, repo: &RepoName, digest: &Digest, delete_untagged: bool) -> Result<bool, Error> {
        self.inner.remove_manifest(repo, digest, delete_untagged).await
    }
    async fn doom_blobs(&self, digests: &[Digest], before: i64) -> Result<Vec<Option<BlobInfo>>, Error> {
        self.inner.doom_blobs(digests, before).await
    }
    async fn doomed_blobs(&self, limit: u32) -> Result<Vec<GarbageBlob>, Error> {
        self.inner.doomed_blobs(limit).await
    }
    async fn forget_blobs(&self, blobs: &[GarbageBlob], tombstone: bool) -> Result<Vec<bool>, Error> {
        self.inner.forget_blobs(blobs, tombstone).await
    }
    async fn clear_reviewed(&self, before: i64, blobs: bool, manifests: bool) -> Result<(), Error> {
        self.inner.clear_reviewed(before, blobs, manifests).await
    }
    async fn queue_unreferenced(&self, delete_untagged: bool) -> Result<u64, Error> {
        self.inner.queue_unreferenced(delete_untagged).await
    }
    async fn blob_keys(&self, after: Option<&str>, limit: u32) -> Result<Vec<(String, String)>, Error> {
        self.inner.blob_keys(after, limit).await
    }
    async fn blob_recorded(&self, digest: &Digest) -> Result<bool, Error> {
        self.inner.blob_recorded(digest).await
    }
    async fn record_run(&self, run: &GcRun) -> Result<i64, Error> {
        self.inner.record_run(run).await
    }
    async fn runs(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<GcRun>, Error> {
        self.inner.runs(before_id, limit).await
    }
}
