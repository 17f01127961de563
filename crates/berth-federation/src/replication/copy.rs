//! Copying one artifact from this registry to another, byte for byte, in the order a
//! registry accepts it: every blob a manifest names before the manifest, every child of
//! an index before the index, the subject before its referrers (signatures, SBOMs,
//! attestations), and the tags last, once everything they name is there.
//!
//! Cheap where it can be: a blob the destination has is skipped after one `HEAD`, a blob
//! this copy has already sent to another repository of the destination is mounted from
//! there, and a blob larger than a chunk is sent in chunks, resumed after a failure.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_core::manifest;
use berth_core::{Digest, Error, ErrorKind, Reference, RepoName};
use berth_jobs::Jobs;
use berth_storage::storage_err;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::client::{BlobToPush, Pushed, Sent, UpstreamClient};

/// Chunks of a large blob (a chunk is in memory while it is sent).
pub const CHUNK: usize = 8 << 20;
/// Referrers of one subject copied at most (a page of the referrers listing).
const MAX_REFERRERS: u32 = 1000;
/// How deep an index may nest indexes.
const MAX_DEPTH: u32 = 4;

/// What one copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub manifests: u32,
    pub blobs_uploaded: u32,
    pub blobs_present: u32,
    pub blobs_mounted: u32,
    /// Bytes of blobs sent (chunks sent again included).
    pub bytes: u64,
    /// Tags left alone: the destination's points elsewhere and the rule does not overwrite.
    pub tags_kept: Vec<String>,
}

/// Which destination repository holds a blob, as copies to one registry have seen: the
/// source of a later copy's mount. Kept per node, bounded (forgotten whole when full: a
/// blob not found here is sent, or skipped after a `HEAD`, as without it).
#[derive(Default)]
pub struct Placed(Mutex<HashMap<Digest, String>>);

/// Blobs remembered per registry.
const MAX_PLACED: usize = 50_000;

impl Placed {
    fn get(&self, digest: &Digest) -> Option<String> {
        self.0.lock().unwrap().get(digest).cloned()
    }

    fn insert(&self, digest: &Digest, repo: &str) {
        let mut placed = self.0.lock().unwrap();
        if placed.len() >= MAX_PLACED {
            placed.clear();
        }
        placed.insert(digest.clone(), repo.to_owned());
    }
}

/// Copies from the registry `jobs` serves to one destination, mounting what an earlier
/// copy to it placed in another repository there.
pub struct Copier<'a> {
    pub jobs: &'a Jobs,
    pub client: &'a UpstreamClient,
    pub sent: &'a Sent,
    /// Copy the referrers of every manifest copied, and theirs.
    pub referrers: bool,
    /// Move a destination tag that points elsewhere.
    pub overwrite: bool,
    /// Blobs known to be in a destination repository: a mount's source.
    pub placed: &'a Placed,
}

impl<'a> Copier<'a> {
    /// Copies manifest `digest` of local `repo`, with all it references (and its
    /// referrers if asked), to `dest` at the destination, then points `tags` at it there.
    pub async fn copy(&self, repo: &RepoName, digest: &Digest, dest: &str, tags: &[String]) -> Result<Copied, Error> {
        let mut copied = Copied::default();
        let (media_type, body) = self.manifest_tree(repo, digest, dest, 0, &mut copied).await?;
        for tag in tags {
            if !self.overwrite
                && let Some(Some(there)) = self.client.head_manifest(dest, tag).await?
                && there != *digest
            {
                copied.tags_kept.push(tag.clone());
                continue;
            }
            self.client.put_manifest(dest, tag, &media_type, body.clone()).await?;
        }
        Ok(copied)
    }

    /// Copies one manifest after everything it names (children, blobs), then its
    /// referrers; returns its media type and bytes.
    async fn manifest_tree(
        &self,
        repo: &RepoName,
        digest: &Digest,
        dest: &str,
        depth: u32,
        copied: &mut Copied,
    ) -> Result<(String, Bytes), Error> {
        if depth > MAX_DEPTH {
            return Err(Error::new(ErrorKind::ManifestInvalid)
                .with_message(format!("{repo}@{digest}: indexes nest deeper than {MAX_DEPTH}")));
        }
        let record = self.jobs.meta.manifest(repo, &Reference::Digest(digest.clone())).await?.ok_or_else(|| {
            Error::new(ErrorKind::ManifestUnknown).with_message(format!("{repo}@{digest} is no longer here"))
        })?;
        let parsed = manifest::parse(Some(&record.media_type), &record.body)?;
        // Already at the destination (a retry, another tag's copy): its children and blobs are too.
        let there = self.client.head_manifest(dest, digest.as_str()).await?.is_some();
        if !there {
            for child in &parsed.manifests {
                Box::pin(self.manifest_tree(repo, child, dest, depth + 1, copied)).await?;
            }
            for blob in &parsed.blobs {
                self.blob(repo, blob, dest, copied).await?;
            }
            self.client.put_manifest(dest, digest.as_str(), &record.media_type, record.body.clone()).await?;
            copied.manifests += 1;
        }
        if self.referrers && depth < MAX_DEPTH {
            let page = berth_meta::PageSpec { last: None, limit: MAX_REFERRERS, max_bytes: usize::MAX };
            let referrers = self.jobs.meta.referrers(repo, digest, None, page).await?;
            for r in referrers.descriptors {
                let referrer = Digest::parse(&r.digest)?;
                Box::pin(self.manifest_tree(repo, &referrer, dest, depth + 1, copied)).await?;
            }
        }
        Ok((record.media_type, record.body))
    }

    /// Sends one blob of local `repo` to `dest`, unless it is there or can be mounted.
    async fn blob(&self, repo: &RepoName, digest: &Digest, dest: &str, copied: &mut Copied) -> Result<(), Error> {
        let info = self.jobs.meta.repo_blob(repo, digest).await?.ok_or_else(|| {
            Error::new(ErrorKind::BlobUnknown).with_message(format!("{repo} no longer holds blob {digest}"))
        })?;
        let mount_from = self.placed.get(digest).filter(|r| r.as_str() != dest);
        let blobs = &self.jobs.blobs;
        let key = info.key.clone();
        let read = |offset: u64, len: usize| {
            let key = key.clone();
            async move {
                let mut stream = blobs.read_blob(&key, Some(offset..offset + len as u64)).await.map_err(storage_err)?;
                let mut buf = BytesMut::with_capacity(len);
                while let Some(chunk) = stream.next().await {
                    buf.extend_from_slice(&chunk.map_err(Error::internal)?);
                }
                if buf.len() != len {
                    return Err(Error::internal(format!("blob {key}: read {} bytes of {len}", buf.len())));
                }
                Ok(buf.freeze())
            }
        };
        let blob = BlobToPush { digest, size: info.size, mount_from: mount_from.as_deref() };
        let pushed = self.client.push_blob(dest, blob, CHUNK, self.sent, read).await?;
        match pushed {
            Pushed::Present => copied.blobs_present += 1,
            Pushed::Mounted => copied.blobs_mounted += 1,
            Pushed::Uploaded(n) => {
                copied.blobs_uploaded += 1;
                copied.bytes += n;
            }
        }
        self.placed.insert(digest, dest);
        Ok(())
    }
}
