//! The pull-through cache: manifests and blobs of a proxy repository, served from what is
//! stored and fetched from the upstream when they must be.
//!
//! **Manifests.** By digest: immutable, so once stored (after its digest checked against
//! its bytes) always served from here. By tag: served from here for the upstream's tag
//! TTL after the tag was last found current; then one `HEAD` asks the upstream where the
//! tag points (Docker Hub does not count it against its pull limit): the same digest
//! renews the check, another one is fetched and the tag moved. When the upstream cannot
//! be asked (down, slow past the timeout, refusing or rate limiting Berth), a cached tag
//! is served as it was ([`Served::stale`], which the edge shows as a `Warning` header and
//! counts); an uncached one fails with an error naming the upstream. An upstream 404 is
//! a 404. Stored with `MetadataStore::cache_manifest`: what it names need not be cached
//! yet.
//!
//! **Blobs.** A blob is fetched once however many clients ask at once on this node: the
//! first request starts a fetch ([`Flight`]) that streams the upstream's bytes into an
//! upload, hashing them, and to that client as they arrive; the others wait for the
//! fetch and are served what it stored. The first client's last chunk is held back until
//! the digest checks, so no client receives a whole blob that does not match; the blob is
//! recorded (the upload's commit and link, as a push's) only after it does. A client that
//! hangs up, or reads too slowly, is dropped from the fetch, which goes on for the others.
//! Across nodes each node fetches on its own; the metadata store keeps one copy.

use std::io;
use std::sync::Arc;

use berth_core::manifest::{self, ParsedManifest};
use berth_core::{Digest, Error, ErrorKind, Reference, RepoName, Tag};
use berth_meta::{BlobInfo, ManifestRecord, NewManifest};
use berth_storage::ByteStream;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::client::RemoteManifest;
use crate::route::Via;
use crate::service::{Federation, Flight};

/// Chunks in flight to the first client.
const CLIENT_BUFFER: usize = 16;

/// A manifest as the cache serves it.
pub struct Served {
    pub record: ManifestRecord,
    /// The upstream could not be asked whether the tag moved: this is what was cached.
    pub stale: bool,
    /// Fetched from the upstream for this request (not served from the cache).
    pub fetched: bool,
}

/// Where a blob's bytes come from.
pub enum BlobSource {
    /// Stored here: served as any blob.
    Stored(BlobInfo),
    /// Being fetched for this request: its length if the upstream said it, and its bytes.
    Fetching { size: Option<u64>, body: ByteStream },
    /// Not stored; the upstream has it with this size (an answer to a `HEAD`).
    Remote { size: u64 },
}

impl Federation {
    /// A manifest of the proxy repository `repo` (reached through `via`); `None` if
    /// neither the cache nor the upstream has it.
    pub async fn manifest(&self, via: &Via, repo: &RepoName, reference: &Reference) -> Result<Option<Served>, Error> {
        let meta = &self.jobs.meta;
        let fresh = |record| Ok(Some(Served { record, stale: false, fetched: false }));
        let fetched = |record| Ok(Some(Served { record, stale: false, fetched: true }));
        let client = &via.proxy.client;
        let tag = match reference {
            Reference::Digest(digest) => {
                if let Some(record) = meta.manifest(repo, reference).await? {
                    return fresh(record);
                }
                let Some(remote) = client.manifest(&via.remote, digest.as_str()).await? else { return Ok(None) };
                return fetched(self.store_manifest(via, repo, remote, Some(digest), None).await?);
            }
            Reference::Tag(tag) => tag,
        };
        let local = meta.manifest(repo, reference).await?;
        let now = berth_meta::now();
        if local.is_some()
            && let Some(at) = self.store.tag_checked(repo.as_str(), tag.as_str()).await?
            && now - at < via.proxy.upstream.tag_ttl_secs
        {
            return fresh(local.expect("checked"));
        }
        let head = match client.head_manifest(&via.remote, tag.as_str()).await {
            Ok(None) => return Ok(None),
            Ok(Some(head)) => head,
            Err(e) => return stale_or(via, repo, tag, local, e),
        };
        if let (Some(record), Some(digest)) = (&local, &head)
            && record.digest == *digest
        {
            self.store.check_tag(repo.as_str(), tag.as_str(), now).await?;
            return fresh(local.expect("checked"));
        }
        let remote = match client.manifest(&via.remote, tag.as_str()).await {
            Ok(Some(remote)) => remote,
            Ok(None) => return Ok(None),
            Err(e) => return stale_or(via, repo, tag, local, e),
        };
        // Not checked against the HEAD's digest: the tag may have moved since, and the
        // digest of record is computed from the bytes received.
        let record = self.store_manifest(via, repo, remote, None, Some(tag)).await?;
        self.store.check_tag(repo.as_str(), tag.as_str(), now).await?;
        fetched(record)
    }

    /// Checks a fetched manifest (its digest, when one was expected, and its form) and
    /// stores it, tagged `tag`. A policy that refuses it (the project's quota, an
    /// immutable tag) leaves it served but not stored.
    async fn store_manifest(
        &self,
        via: &Via,
        repo: &RepoName,
        remote: RemoteManifest,
        expected: Option<&Digest>,
        tag: Option<&Tag>,
    ) -> Result<ManifestRecord, Error> {
        let digest = Digest::of(&remote.body);
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::new(ErrorKind::Unavailable).with_message(format!(
                "upstream {} sent a manifest for {expected} whose bytes hash to {digest}; nothing was stored",
                via.upstream()
            )));
        }
        let parsed: ParsedManifest = manifest::parse(Some(&remote.media_type), &remote.body).map_err(|e| {
            Error::new(ErrorKind::Unavailable).with_message(format!(
                "upstream {} sent a manifest Berth cannot store: {}",
                via.upstream(),
                e.message()
            ))
        })?;
        let tags: Vec<Tag> = tag.into_iter().cloned().collect();
        let new = NewManifest { repo, digest: &digest, parsed: &parsed, body: &remote.body, tags: &tags };
        match self.jobs.meta.cache_manifest(new).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::Denied => {
                tracing::warn!(%repo, %digest, reason = %e.message(), "a fetched manifest is served but not cached");
            }
            Err(e) => return Err(e),
        }
        Ok(ManifestRecord { digest, media_type: parsed.media_type, body: remote.body })
    }

    /// The upstream's tags of the proxy repository `repo`, or, when the upstream cannot
    /// be asked, the tags cached here (`None`: neither has the repository).
    pub async fn tags(&self, via: &Via, repo: &RepoName) -> Result<Option<Vec<String>>, Error> {
        match via.proxy.client.tags(&via.remote).await {
            Ok(tags) => Ok(tags),
            Err(e) => {
                let Some(page) = self.jobs.meta.tags(repo, None, 100_000).await? else { return Err(e) };
                tracing::warn!(upstream = %via.upstream(), %repo, error = %e.message(),
                    "the upstream could not be asked; listing the cached tags");
                Ok(Some(page.items))
            }
        }
    }

    /// A blob of the proxy repository `repo`. `head`: only its size is wanted. `whole`:
    /// the request wants all of it (a fetch for it may stream to it); a ranged request
    /// waits for the blob to be stored. `None` if neither the cache nor the upstream has it.
    pub async fn blob(
        self: &Arc<Self>,
        via: &Via,
        repo: &RepoName,
        digest: &Digest,
        head: bool,
        whole: bool,
    ) -> Result<Option<BlobSource>, Error> {
        loop {
            if let Some(info) = self.stored_blob(repo, digest).await? {
                return Ok(Some(BlobSource::Stored(info)));
            }
            if head {
                return Ok(via
                    .proxy
                    .client
                    .blob_size(&via.remote, digest)
                    .await?
                    .map(|size| BlobSource::Remote { size }));
            }
            let (flight, leader) = {
                let mut flights = self.flights.lock().unwrap();
                match flights.get(digest) {
                    Some(flight) => (Arc::clone(flight), false),
                    None => {
                        let flight = Arc::new(Flight { done: watch::channel(None).0 });
                        flights.insert(digest.clone(), Arc::clone(&flight));
                        (flight, true)
                    }
                }
            };
            let mut done = flight.done.subscribe();
            if leader {
                // Until the fetch is spawned, this request holds the lead: if it ends
                // (the client hung up), the guard gives the lead up and the others retry.
                let mut lead = Lead { fed: self, digest, flight: Arc::clone(&flight), armed: true };
                // A fetch that ended between this request's look at the store and its
                // taking the lead has stored the blob: no second fetch.
                if let Some(info) = self.stored_blob(repo, digest).await? {
                    drop(lead);
                    return Ok(Some(BlobSource::Stored(info)));
                }
                let (tx, rx) = if whole { Some(mpsc::channel(CLIENT_BUFFER)) } else { None }.unzip();
                let (started_tx, started) = oneshot::channel();
                let task = Arc::clone(self);
                let (via, repo, digest) = (via.clone(), repo.clone(), digest.clone());
                tokio::spawn(async move {
                    let result = task.fetch(&via, &repo, &digest, tx, started_tx).await;
                    if let Err(e) = &result {
                        tracing::warn!(upstream = %via.upstream(), %digest, error = %e, "fetching a blob failed");
                    }
                    task.flights.lock().unwrap().remove(&digest);
                    flight.done.send_replace(Some(result));
                });
                // The task has the lead now: it removes the flight when it ends.
                lead.armed = false;
                let size = match started.await {
                    Ok(Ok(Some(size))) => size,
                    Ok(Ok(None)) => return Ok(None),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(Error::internal("the blob fetch ended before it started")),
                };
                if let Some(mut rx) = rx {
                    let body: ByteStream = Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
                    return Ok(Some(BlobSource::Fetching { size, body }));
                }
            }
            let outcome = done.wait_for(Option::is_some).await.map(|o| o.clone()).ok().flatten();
            match outcome {
                // Stored: served from here on the next turn.
                Some(Ok(())) => continue,
                Some(Err(e)) if e.kind == ErrorKind::BlobUnknown => return Ok(None),
                Some(Err(e)) => return Err(e),
                None => return Err(Error::internal("the blob fetch ended without an outcome")),
            }
        }
    }

    /// The blob if `repo` may read it, or if it is stored for another repository (then
    /// linked into `repo`, as a mount).
    async fn stored_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobInfo>, Error> {
        let meta = &self.jobs.meta;
        if let Some(info) = meta.repo_blob(repo, digest).await? {
            return Ok(Some(info));
        }
        if meta.blob(digest).await?.is_none() {
            return Ok(None);
        }
        // Read and linked under the digest's stripe, as a mount does (GC may be removing it).
        let _stripe = self.jobs.blob_locks.lock(digest).await;
        let Some(info) = meta.blob(digest).await? else { return Ok(None) };
        match meta.link_blob(repo, digest, &info, None).await {
            Ok(key) => Ok(Some(BlobInfo { size: info.size, key })),
            Err(e) if e.kind == ErrorKind::BlobUnknown => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fetches a blob into an upload, streaming it to `client` as it goes, and records it
    /// once its digest checks. `started` learns first whether the upstream has it.
    async fn fetch(
        &self,
        via: &Via,
        repo: &RepoName,
        digest: &Digest,
        client: Option<mpsc::Sender<io::Result<Bytes>>>,
        started: oneshot::Sender<Result<Option<Option<u64>>, Error>>,
    ) -> Result<(), Error> {
        let (size, upstream) = match via.proxy.client.blob(&via.remote, digest).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                let _ = started.send(Ok(None));
                return Err(Error::new(ErrorKind::BlobUnknown));
            }
            Err(e) => {
                let _ = started.send(Err(e.clone()));
                return Err(e);
            }
        };
        let _ = started.send(Ok(Some(size)));
        let from = format!("upstream {}", via.upstream());
        crate::fetch::store_fetched(&self.jobs, &from, repo, digest, size, upstream, client).await.map(drop)
    }
}

/// The lead of a blob fetch before its task runs; dropped, it removes the flight and tells
/// the waiting requests to look again (one of them takes the lead).
struct Lead<'a> {
    fed: &'a Federation,
    digest: &'a Digest,
    flight: Arc<Flight>,
    /// Cleared once the fetch's task is spawned.
    armed: bool,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.fed.flights.lock().unwrap().remove(self.digest);
            self.flight.done.send_replace(Some(Ok(())));
        }
    }
}

/// What a cached tag's revalidation does when the upstream cannot answer: serve the
/// cached manifest, marked stale, or fail with the upstream's error.
fn stale_or(
    via: &Via,
    repo: &RepoName,
    tag: &Tag,
    local: Option<ManifestRecord>,
    e: Error,
) -> Result<Option<Served>, Error> {
    match local {
        Some(record) => {
            tracing::warn!(upstream = %via.upstream(), %repo, %tag, error = %e.message(),
                "the upstream could not be asked; serving the cached tag");
            Ok(Some(Served { record, stale: true, fetched: false }))
        }
        None => Err(e),
    }
}
