//! A read-through cache in front of a metadata store that this process owns alone (the
//! embedded SQLite database, guarded by a lock on the data directory).
//!
//! It caches the lookups every pull makes: a manifest by tag or digest, and a blob's
//! presence in a repository. Every write goes through this wrapper, which invalidates
//! what it changed after the write commits. A lookup that raced with a write is not
//! cached (a generation counter tells), so a stale entry can never be inserted after its
//! invalidation. Not for PostgreSQL: other nodes' writes would not invalidate it.
//!
//! Memory is bounded by bytes, keys included: one [`ClockMap`] holds every entry under
//! one budget (`--manifest-cache-bytes`). A manifest's bytes are held once per
//! repository and digest; a tag entry holds only the digest it points to, so one large
//! manifest under many tags costs its size once. Likewise a blob's record is held once
//! per digest, and a repository's right to read it is an entry of its own.
//!
//! Hits take the read lock only (CLOCK marks an entry used with an atomic bit); misses,
//! inserts and invalidations take the write lock.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use berth_core::{Digest, Error, Reference, RepoName, Tag};

use crate::clock::{ClockMap, HeapSize};
use crate::gc::{GarbageBlob, GarbageManifest, GcRun, GcStore};
use crate::{
    Artifacts, BlobInfo, DeleteIf, ManifestRecord, MetadataStore, NewManifest, Page, PageSpec, Referrers, TagTarget,
    UploadRecord,
};

/// The cache's budget when none is configured.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    /// `repo` may read the blob (the value is [`Value::Link`]).
    Link(RepoName, Digest),
    /// A live blob's record.
    Blob(Digest),
    /// The digest a tag points to.
    Tag(RepoName, Tag),
    /// A manifest, bytes and all.
    Manifest(RepoName, Digest),
}

impl HeapSize for Key {
    fn heap_size(&self) -> usize {
        match self {
            Key::Link(r, d) | Key::Manifest(r, d) => r.as_str().len() + d.as_str().len(),
            Key::Blob(d) => d.as_str().len(),
            Key::Tag(r, t) => r.as_str().len() + t.as_str().len(),
        }
    }
}

enum Value {
    Link,
    Blob(BlobInfo),
    Tag(Digest),
    Manifest(Arc<ManifestRecord>),
}

impl Value {
    /// Heap bytes besides the key (the Arc's header and the record's fields included).
    fn size(&self) -> usize {
        match self {
            Value::Link => 0,
            Value::Blob(info) => info.key.len(),
            Value::Tag(d) => d.as_str().len(),
            Value::Manifest(m) => 64 + m.digest.as_str().len() + m.media_type.len() + m.body.len(),
        }
    }
}

pub struct CachedStore<M> {
    inner: M,
    generation: AtomicU64,
    entries: RwLock<ClockMap<Key, Value>>,
}

impl<M: MetadataStore> CachedStore<M> {
    async fn store_manifest(&self, manifest: NewManifest<'_>, check: bool) -> Result<(), Error> {
        let repo = manifest.repo.clone();
        let tags: Vec<Tag> = manifest.tags.to_vec();
        let result =
            if check { self.inner.put_manifest(manifest).await } else { self.inner.cache_manifest(manifest).await };
        // A manifest's bytes never change under its digest; only tags move.
        self.invalidate(|entries| {
            for tag in tags {
                entries.remove(&Key::Tag(repo.clone(), tag));
            }
        });
        result
    }

    /// A cache of at most `budget` bytes in front of `inner`.
    pub fn new(inner: M, budget: usize) -> CachedStore<M> {
        CachedStore { inner, generation: AtomicU64::new(0), entries: RwLock::new(ClockMap::new(budget)) }
    }

    /// Runs after a committed write: later lookups must not use or insert older values.
    fn invalidate(&self, f: impl FnOnce(&mut ClockMap<Key, Value>)) {
        let mut entries = self.entries.write().unwrap();
        self.generation.fetch_add(1, Ordering::SeqCst);
        f(&mut entries);
    }

    /// Inserts what a lookup that began at generation `seen` found, unless a write
    /// committed since.
    fn insert(&self, seen: u64, found: impl IntoIterator<Item = (Key, Value)>) {
        let mut entries = self.entries.write().unwrap();
        // Checked under the lock that invalidation also takes.
        if self.generation.load(Ordering::SeqCst) != seen {
            return;
        }
        for (key, value) in found {
            let size = value.size();
            entries.insert(key, value, size);
        }
    }

    /// The cached manifest `reference` names, if both it and (for a tag) its tag entry are held.
    fn cached_manifest(&self, repo: &RepoName, reference: &Reference) -> Option<ManifestRecord> {
        let entries = self.entries.read().unwrap();
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => match entries.get(&Key::Tag(repo.clone(), t.clone()))? {
                Value::Tag(d) => d.clone(),
                _ => return None,
            },
        };
        match entries.get(&Key::Manifest(repo.clone(), digest))? {
            Value::Manifest(m) => Some(ManifestRecord::clone(m)),
            _ => None,
        }
    }

    fn cached_blob(&self, repo: &RepoName, digest: &Digest) -> Option<BlobInfo> {
        let entries = self.entries.read().unwrap();
        entries.get(&Key::Link(repo.clone(), digest.clone()))?;
        match entries.get(&Key::Blob(digest.clone()))? {
            Value::Blob(info) => Some(info.clone()),
            _ => None,
        }
    }
}

#[async_trait]
impl<M: MetadataStore> MetadataStore for CachedStore<M> {
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobInfo>, Error> {
        if let Some(info) = self.cached_blob(repo, digest) {
            return Ok(Some(info));
        }
        let seen = self.generation.load(Ordering::SeqCst);
        let found = self.inner.repo_blob(repo, digest).await?;
        if let Some(info) = &found {
            self.insert(
                seen,
                [
                    (Key::Blob(digest.clone()), Value::Blob(info.clone())),
                    (Key::Link(repo.clone(), digest.clone()), Value::Link),
                ],
            );
        }
        Ok(found)
    }

    async fn delete_repository(&self, repo: &RepoName) -> Result<Option<u64>, Error> {
        let result = self.inner.delete_repository(repo).await;
        self.invalidate(|entries| {
            entries.retain(|k, _| match k {
                Key::Link(r, _) | Key::Tag(r, _) | Key::Manifest(r, _) => r != repo,
                Key::Blob(_) => true,
            })
        });
        result
    }

    async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, Error> {
        if let Some(m) = self.cached_manifest(repo, reference) {
            return Ok(Some(m));
        }
        let seen = self.generation.load(Ordering::SeqCst);
        let found = self.inner.manifest(repo, reference).await?;
        if let Some(m) = &found {
            let mut entries = Vec::with_capacity(2);
            if let Reference::Tag(t) = reference {
                entries.push((Key::Tag(repo.clone(), t.clone()), Value::Tag(m.digest.clone())));
            }
            let key = Key::Manifest(repo.clone(), m.digest.clone());
            // Held once: a tag whose manifest is cached already adds only its own entry.
            let held = self.entries.read().unwrap().get(&key).is_some();
            if !held {
                entries.push((key, Value::Manifest(Arc::new(m.clone()))));
            }
            self.insert(seen, entries);
        }
        Ok(found)
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        blob: &BlobInfo,
        upload_id: Option<&str>,
    ) -> Result<String, Error> {
        let result = self.inner.link_blob(repo, digest, blob, upload_id).await;
        // The storage key may have changed (a blob revived after deletion). Links are
        // only ever cached present, which a new link does not change.
        self.invalidate(|entries| {
            entries.remove(&Key::Blob(digest.clone()));
        });
        result
    }

    fn uncache_blob(&self, digest: &Digest) {
        self.invalidate(|entries| {
            entries.remove(&Key::Blob(digest.clone()));
        });
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, Error> {
        let result = self.inner.unlink_blob(repo, digest).await;
        self.invalidate(|entries| {
            entries.remove(&Key::Link(repo.clone(), digest.clone()));
        });
        result
    }

    async fn put_manifest(&self, manifest: NewManifest<'_>) -> Result<(), Error> {
        self.store_manifest(manifest, true).await
    }

    async fn cache_manifest(&self, manifest: NewManifest<'_>) -> Result<(), Error> {
        self.store_manifest(manifest, false).await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest, condition: DeleteIf) -> Result<bool, Error> {
        let result = self.inner.delete_manifest(repo, digest, condition).await;
        // Every tag on it goes too; which ones is not known here, so look at them all.
        self.invalidate(|entries| {
            entries.remove(&Key::Manifest(repo.clone(), digest.clone()));
            entries.retain(|k, v| !matches!((k, v), (Key::Tag(r, _), Value::Tag(d)) if r == repo && d == digest));
        });
        result
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, expected: Option<&TagTarget>) -> Result<bool, Error> {
        let result = self.inner.delete_tag(repo, tag, expected).await;
        self.invalidate(|entries| {
            entries.remove(&Key::Tag(repo.clone(), tag.clone()));
        });
        result
    }

    // Everything else passes through.

    async fn blob(&self, digest: &Digest) -> Result<Option<BlobInfo>, Error> {
        self.inner.blob(digest).await
    }
    async fn repos_with_blob(&self, digest: &Digest, limit: u32) -> Result<Vec<RepoName>, Error> {
        self.inner.repos_with_blob(digest, limit).await
    }
    async fn create_upload(&self, id: &str, repo: &RepoName, state: &str, max_open: u32) -> Result<bool, Error> {
        self.inner.create_upload(id, repo, state, max_open).await
    }
    async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<UploadRecord>, Error> {
        self.inner.upload(repo, id).await
    }
    async fn advance_upload(
        &self,
        id: &str,
        from: u64,
        to: u64,
        hash_state: &[u8],
        state: &str,
    ) -> Result<bool, Error> {
        self.inner.advance_upload(id, from, to, hash_state, state).await
    }
    async fn delete_upload(&self, id: &str) -> Result<bool, Error> {
        self.inner.delete_upload(id).await
    }
    async fn expire_uploads(&self, before: i64, limit: u32) -> Result<Vec<(String, String)>, Error> {
        self.inner.expire_uploads(before, limit).await
    }
    async fn known_uploads(&self, ids: &[String]) -> Result<Vec<bool>, Error> {
        self.inner.known_uploads(ids).await
    }
    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, Error> {
        self.inner.repo_exists(repo).await
    }
    async fn tags(&self, repo: &RepoName, last: Option<&str>, limit: u32) -> Result<Option<Page>, Error> {
        self.inner.tags(repo, last, limit).await
    }
    async fn catalog(&self, last: Option<&str>, limit: u32) -> Result<Page, Error> {
        self.inner.catalog(last, limit).await
    }
    async fn artifacts(&self, repo: &RepoName, last: Option<&str>, limit: u32) -> Result<Option<Artifacts>, Error> {
        self.inner.artifacts(repo, last, limit).await
    }
    async fn try_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Result<bool, Error> {
        self.inner.try_lease(name, holder, ttl_secs).await
    }
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: PageSpec<'_>,
    ) -> Result<Referrers, Error> {
        self.inner.referrers(repo, subject, artifact_type, page).await
    }
}

/// Garbage collection goes through the cache too: what it removes is invalidated here.
#[async_trait]
impl<M: MetadataStore + GcStore> GcStore for CachedStore<M> {
    async fn remove_manifest(&self, repo: &RepoName, digest: &Digest, delete_untagged: bool) -> Result<bool, Error> {
        let removed = self.inner.remove_manifest(repo, digest, delete_untagged).await;
        // Untagged when removed: no tag entry can point to it.
        self.invalidate(|entries| {
            entries.remove(&Key::Manifest(repo.clone(), digest.clone()));
        });
        removed
    }

    async fn doom_blobs(&self, digests: &[Digest], before: i64) -> Result<Vec<Option<BlobInfo>>, Error> {
        let doomed = self.inner.doom_blobs(digests, before).await;
        let gone: std::collections::HashSet<&Digest> = digests.iter().collect();
        self.invalidate(|entries| {
            entries.retain(|k, _| !matches!(k, Key::Blob(d) | Key::Link(_, d) if gone.contains(d)));
        });
        doomed
    }

    // Everything else reads, or writes only what the cache does not hold.

    async fn due_count(&self, before: i64) -> Result<u64, Error> {
        self.inner.due_count(before).await
    }
    async fn garbage_blobs(&self, before: i64, limit: u32) -> Result<Vec<GarbageBlob>, Error> {
        self.inner.garbage_blobs(before, limit).await
    }
    async fn garbage_manifests(&self, before: i64, untagged: bool, limit: u32) -> Result<Vec<GarbageManifest>, Error> {
        self.inner.garbage_manifests(before, untagged, limit).await
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

#[cfg(test)]
mod tests {
    use berth_core::{MediaType, Reference, RepoName, Tag, manifest};

    use super::*;

    async fn sqlite(dir: &tempfile::TempDir) -> crate::SqliteStore {
        crate::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap()
    }

    #[tokio::test]
    async fn cached_sqlite_store_passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        crate::suite::run(&CachedStore::new(sqlite(&dir).await, DEFAULT_CACHE_BYTES)).await;
    }

    #[tokio::test]
    async fn a_blob_the_scrub_finds_damaged_is_no_longer_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let inner = sqlite(&dir).await;
        crate::scrub::suite::run(&CachedStore::new(inner.clone(), DEFAULT_CACHE_BYTES), &inner).await;
    }

    #[tokio::test]
    async fn a_cache_too_small_for_anything_still_passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = CachedStore::new(sqlite(&dir).await, 1000);
        crate::suite::run(&store).await;
        assert!(store.entries.read().unwrap().bytes() <= 1000);
    }

    /// An image manifest (no layers) padded to about `pad` bytes with an annotation.
    fn padded_manifest(pad: usize, seed: u32) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/x.cfg","digest":"{}","size":1}},"layers":[],"annotations":{{"seed":"{seed}","pad":"{}"}}}}"#,
            MediaType::OCI_MANIFEST,
            Digest::of(b"cfg"),
            "p".repeat(pad)
        )
        .into_bytes()
    }

    async fn put(store: &dyn MetadataStore, repo: &RepoName, body: &[u8], tags: &[Tag]) -> Digest {
        let parsed = manifest::parse(None, body).unwrap();
        let digest = Digest::of(body);
        store.put_manifest(NewManifest { repo, digest: &digest, parsed: &parsed, body, tags }).await.unwrap();
        digest
    }

    async fn setup(budget: usize) -> (tempfile::TempDir, CachedStore<crate::SqliteStore>, RepoName) {
        let dir = tempfile::tempdir().unwrap();
        let store = CachedStore::new(sqlite(&dir).await, budget);
        let repo = RepoName::parse("cache/test").unwrap();
        let info = BlobInfo { size: 3, key: "k/cfg".into() };
        store.link_blob(&repo, &Digest::of(b"cfg"), &info, None).await.unwrap();
        (dir, store, repo)
    }

    fn manifests_held(store: &CachedStore<crate::SqliteStore>) -> usize {
        let mut n = 0;
        store.entries.write().unwrap().retain(|k, _| {
            n += matches!(k, Key::Manifest(..)) as usize;
            true
        });
        n
    }

    #[tokio::test]
    async fn a_manifest_under_300_tags_is_held_once() {
        let (_dir, store, repo) = setup(DEFAULT_CACHE_BYTES).await;
        let body = padded_manifest(300_000, 1);
        let tags: Vec<Tag> = (0..300).map(|i| Tag::parse(&format!("t{i}")).unwrap()).collect();
        let digest = put(&store, &repo, &body, &tags).await;
        for tag in &tags {
            for _ in 0..2 {
                let m = store.manifest(&repo, &Reference::Tag(tag.clone())).await.unwrap().unwrap();
                assert!(m.digest == digest && m.body[..] == body[..]);
            }
        }
        assert_eq!(manifests_held(&store), 1);
        let bytes = store.entries.read().unwrap().bytes();
        assert!(bytes < body.len() + 300 * 512, "{bytes} bytes accounted for one {} byte manifest", body.len());
    }

    #[tokio::test]
    async fn accounted_bytes_never_exceed_the_budget() {
        let budget = 1 << 20;
        let (_dir, store, repo) = setup(budget).await;
        let mut pushed = Vec::new();
        for i in 0..30 {
            let body = padded_manifest(100_000 + i * 1000, i as u32);
            let tag = Tag::parse(&format!("v{i}")).unwrap();
            pushed.push((put(&store, &repo, &body, std::slice::from_ref(&tag)).await, tag, body));
        }
        for round in 0..3 {
            for (digest, tag, body) in &pushed {
                let by_tag = store.manifest(&repo, &Reference::Tag(tag.clone())).await.unwrap().unwrap();
                let by_digest = store.manifest(&repo, &Reference::Digest(digest.clone())).await.unwrap().unwrap();
                assert!(by_tag.body[..] == body[..] && by_digest.body[..] == body[..], "round {round}");
                assert!(store.repo_blob(&repo, &Digest::of(b"cfg")).await.unwrap().is_some());
                let bytes = store.entries.read().unwrap().bytes();
                assert!(bytes <= budget, "{bytes} bytes accounted, budget {budget}");
            }
        }
        assert!((5..30).contains(&manifests_held(&store)), "{} manifests held", manifests_held(&store));
    }

    #[tokio::test]
    async fn a_deleted_manifest_pushed_again_does_not_bring_back_its_old_tags() {
        let (_dir, store, repo) = setup(DEFAULT_CACHE_BYTES).await;
        let body = padded_manifest(10, 2);
        let old = Tag::parse("old").unwrap();
        let digest = put(&store, &repo, &body, std::slice::from_ref(&old)).await;
        assert!(store.manifest(&repo, &Reference::Tag(old.clone())).await.unwrap().is_some());
        assert!(store.delete_manifest(&repo, &digest, DeleteIf::Any).await.unwrap());
        put(&store, &repo, &body, &[]).await;
        assert!(store.manifest(&repo, &Reference::Digest(digest)).await.unwrap().is_some());
        assert!(store.manifest(&repo, &Reference::Tag(old)).await.unwrap().is_none());
    }
}
