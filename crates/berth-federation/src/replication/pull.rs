//! Copying one artifact from another registry into this one (a pull rule), byte for
//! byte and in the order this registry accepts it: the blobs a manifest names, then the
//! manifest, children before their index, the subject before its referrers, tags last.
//!
//! Every manifest's digest is checked against its bytes, every blob's as it is stored
//! (`fetch.rs`'s `store_fetched`, which records nothing that does not match). What is
//! here already is not fetched again: a manifest by its digest, a blob linked from
//! another repository of this registry when one holds it. What arrives is ordinary
//! content, stored as a push would be: the project's quota and immutable tags apply, and
//! the outbox announces it.

use berth_core::manifest;
use berth_core::{Digest, Error, ErrorKind, Reference, RepoName, Tag};
use berth_jobs::Jobs;
use berth_meta::NewManifest;
use bytes::Bytes;

use super::copy::Copied;
use crate::client::UpstreamClient;

/// How deep an index may nest indexes, and referrers referrers.
const MAX_DEPTH: u32 = 4;

pub struct Puller<'a> {
    pub jobs: &'a Jobs,
    pub client: &'a UpstreamClient,
    pub referrers: bool,
    pub overwrite: bool,
}

impl Puller<'_> {
    /// Copies manifest `digest` of the other registry's `remote` (with everything it
    /// references, and its referrers if asked) into local `repo`, then tags it `tags`.
    pub async fn pull(&self, remote: &str, digest: &Digest, repo: &RepoName, tags: &[String]) -> Result<Copied, Error> {
        let mut copied = Copied::default();
        let (parsed, body) = self.tree(remote, digest, repo, 0, &mut copied).await?;
        for tag in tags {
            let tag = Tag::parse(tag)?;
            let here = self.jobs.meta.manifest(repo, &Reference::Tag(tag.clone())).await?;
            match here {
                Some(record) if record.digest == *digest => continue,
                Some(_) if !self.overwrite => {
                    copied.tags_kept.push(tag.as_str().to_owned());
                    continue;
                }
                _ => {}
            }
            let tags = [tag];
            let new = NewManifest { repo, digest, parsed: &parsed, body: &body, tags: &tags };
            self.jobs.meta.put_manifest(new).await?;
        }
        Ok(copied)
    }

    /// Copies one manifest after everything it names, then its referrers.
    async fn tree(
        &self,
        remote: &str,
        digest: &Digest,
        repo: &RepoName,
        depth: u32,
        copied: &mut Copied,
    ) -> Result<(manifest::ParsedManifest, Bytes), Error> {
        if depth > MAX_DEPTH {
            return Err(Error::new(ErrorKind::ManifestInvalid)
                .with_message(format!("{remote}@{digest}: nested deeper than {MAX_DEPTH}")));
        }
        let (parsed, body) = match self.jobs.meta.manifest(repo, &Reference::Digest(digest.clone())).await? {
            // Here already, and so is everything it names.
            Some(record) => (manifest::parse(Some(&record.media_type), &record.body)?, record.body),
            None => {
                let fetched = self.client.manifest(remote, digest.as_str()).await?.ok_or_else(|| {
                    Error::new(ErrorKind::ManifestUnknown).with_message(format!("{remote}@{digest} is not there"))
                })?;
                let actual = Digest::of(&fetched.body);
                if actual != *digest {
                    return Err(Error::new(ErrorKind::Unavailable).with_message(format!(
                        "{remote}@{digest} came with bytes that hash to {actual}; nothing was stored"
                    )));
                }
                let parsed = manifest::parse(Some(&fetched.media_type), &fetched.body)?;
                for child in &parsed.manifests {
                    Box::pin(self.tree(remote, child, repo, depth + 1, copied)).await?;
                }
                for blob in &parsed.blobs {
                    self.blob(remote, blob, repo, copied).await?;
                }
                let new = NewManifest { repo, digest, parsed: &parsed, body: &fetched.body, tags: &[] };
                self.jobs.meta.put_manifest(new).await?;
                copied.manifests += 1;
                (parsed, fetched.body)
            }
        };
        if self.referrers && depth < MAX_DEPTH {
            for r in self.client.referrers(remote, digest).await?.unwrap_or_default() {
                let referrer = Digest::parse(&r.digest)?;
                Box::pin(self.tree(remote, &referrer, repo, depth + 1, copied)).await?;
            }
        }
        Ok((parsed, body))
    }

    /// Makes blob `digest` readable in `repo`: there already, linked from another local
    /// repository, or fetched from the other registry.
    async fn blob(&self, remote: &str, digest: &Digest, repo: &RepoName, copied: &mut Copied) -> Result<(), Error> {
        let meta = &self.jobs.meta;
        if meta.repo_blob(repo, digest).await?.is_some() {
            copied.blobs_present += 1;
            return Ok(());
        }
        {
            // Read and linked under the digest's stripe, as a mount is (GC in between
            // would leave a link to bytes that are gone).
            let _stripe = self.jobs.blob_locks.lock(digest).await;
            if let Some(info) = meta.blob(digest).await? {
                match meta.link_blob(repo, digest, &info, None).await {
                    Ok(_) => {
                        copied.blobs_mounted += 1;
                        return Ok(());
                    }
                    Err(e) if e.kind == ErrorKind::BlobUnknown => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let (size, stream) =
            self.client.blob(remote, digest).await?.ok_or_else(|| {
                Error::new(ErrorKind::BlobUnknown).with_message(format!("{remote} has no blob {digest}"))
            })?;
        let from = format!("registry {remote}");
        copied.bytes += crate::fetch::store_fetched(self.jobs, &from, repo, digest, size, stream, None).await?;
        copied.blobs_uploaded += 1;
        Ok(())
    }
}
