//! A read-through cache in front of a metadata store that this process owns alone (the
//! embedded SQLite database, guarded by a lock on the data directory).
//!
//! It caches the two lookups every pull makes: a manifest by tag or digest, and a blob's
//! presence in a repository. Every write goes through this wrapper, which invalidates
//! what it changed after the write commits. A lookup that raced with a write is not
//! cached (a generation counter tells), so a stale entry can never be inserted after its
//! invalidation. Not for PostgreSQL: other nodes' writes would not invalidate it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use berth_core::{Descriptor, Digest, Error, Reference, RepoName, Tag};

use crate::{BlobInfo, ManifestRecord, MetadataStore, NewManifest, Page, UploadRecord};

/// Entries kept per map before it is cleared (a crude bound on memory).
const MAX_ENTRIES: usize = 50_000;

pub struct CachedStore<M> {
    inner: M,
    generation: AtomicU64,
    manifests: RwLock<HashMap<(RepoName, String), Arc<ManifestRecord>>>,
    blobs: RwLock<HashMap<(RepoName, Digest), BlobInfo>>,
}

impl<M: MetadataStore> CachedStore<M> {
    pub fn new(inner: M) -> CachedStore<M> {
        CachedStore { inner, generation: AtomicU64::new(0), manifests: RwLock::default(), blobs: RwLock::default() }
    }

    /// Runs after a committed write: later lookups must not use or insert older values.
    fn invalidate(
        &self,
        f: impl FnOnce(&mut HashMap<(RepoName, String), Arc<ManifestRecord>>, &mut HashMap<(RepoName, Digest), BlobInfo>),
    ) {
        let mut manifests = self.manifests.write().unwrap();
        let mut blobs = self.blobs.write().unwrap();
        self.generation.fetch_add(1, Ordering::SeqCst);
        f(&mut manifests, &mut blobs);
    }

    fn insert<K: std::hash::Hash + Eq, V>(&self, map: &RwLock<HashMap<K, V>>, seen: u64, key: K, value: V) {
        let mut map = map.write().unwrap();
        // Checked under the lock that invalidation also takes.
        if self.generation.load(Ordering::SeqCst) != seen {
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, value);
    }
}

#[async_trait]
impl<M: MetadataStore> MetadataStore for CachedStore<M> {
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobInfo>, Error> {
        let key = (repo.clone(), digest.clone());
        if let Some(info) = self.blobs.read().unwrap().get(&key) {
            return Ok(Some(info.clone()));
        }
        let seen = self.generation.load(Ordering::SeqCst);
        let found = self.inner.repo_blob(repo, digest).await?;
        if let Some(info) = &found {
            self.insert(&self.blobs, seen, key, info.clone());
        }
        Ok(found)
    }

    async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, Error> {
        let key = (repo.clone(), reference.to_string());
        if let Some(m) = self.manifests.read().unwrap().get(&key) {
            return Ok(Some(ManifestRecord::clone(m)));
        }
        let seen = self.generation.load(Ordering::SeqCst);
        let found = self.inner.manifest(repo, reference).await?;
        if let Some(m) = &found {
            self.insert(&self.manifests, seen, key, Arc::new(m.clone()));
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
        // The storage key may have changed (a blob revived after deletion).
        self.invalidate(|_, blobs| {
            blobs.retain(|(_, d), _| d != digest);
        });
        result
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, Error> {
        let result = self.inner.unlink_blob(repo, digest).await;
        self.invalidate(|_, blobs| {
            blobs.remove(&(repo.clone(), digest.clone()));
        });
        result
    }

    async fn put_manifest(&self, manifest: NewManifest<'_>) -> Result<(), Error> {
        let repo = manifest.repo.clone();
        let tags: Vec<Tag> = manifest.tags.to_vec();
        let result = self.inner.put_manifest(manifest).await;
        self.invalidate(|manifests, _| {
            for tag in tags {
                manifests.remove(&(repo.clone(), tag.to_string()));
            }
        });
        result
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, Error> {
        let result = self.inner.delete_manifest(repo, digest).await;
        // Every tag on it goes too; which ones is not known here.
        self.invalidate(|manifests, _| manifests.retain(|(r, _), _| r != repo));
        result
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, Error> {
        let result = self.inner.delete_tag(repo, tag).await;
        self.invalidate(|manifests, _| {
            manifests.remove(&(repo.clone(), tag.to_string()));
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
    async fn create_upload(&self, id: &str, repo: &RepoName, state: &str) -> Result<(), Error> {
        self.inner.create_upload(id, repo, state).await
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
    async fn stale_uploads(&self, before: i64) -> Result<Vec<(String, String)>, Error> {
        self.inner.stale_uploads(before).await
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
    async fn try_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Result<bool, Error> {
        self.inner.try_lease(name, holder, ttl_secs).await
    }
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, Error> {
        self.inner.referrers(repo, subject, artifact_type).await
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn cached_sqlite_store_passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        crate::suite::run(&super::CachedStore::new(store)).await;
    }
}
