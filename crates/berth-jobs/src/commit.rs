//! The one commit of a verified upload: its bytes made durable under their digest, then
//! recorded and linked to the repository. Shared by a push's closing request (the edge's
//! `uploads.rs`) and the pull-through cache's fetch (`berth-federation`), so both keep
//! the write path's order and its race with garbage collection (`locks.rs`).

use berth_core::{Digest, Error, ErrorKind, RepoName};
use berth_meta::BlobInfo;
use berth_storage::upload_err;

use crate::Jobs;

/// Makes the first `size` bytes of upload `id` (blob-store state `state`), whose digest
/// the caller has checked is `digest`, a blob `repo` may read. The upload is gone after.
pub async fn commit_and_link(
    jobs: &Jobs,
    repo: &RepoName,
    digest: &Digest,
    id: &str,
    state: &str,
    size: u64,
) -> Result<(), Error> {
    // Bytes first (durable), metadata second: a crash in between leaves an unrecorded
    // blob, never a recorded one without bytes. Committing again after such a crash
    // finds the bytes where the first commit put them.
    // GC removing this digest's bytes waits for this commit-and-link, or this waits for it.
    let _stripe = jobs.blob_locks.lock(digest).await;
    let key = match jobs.blobs.commit_upload(id, state, size, digest).await {
        Ok(key) => key,
        Err(e) => {
            let e = upload_err(e);
            if e.kind == ErrorKind::BlobUploadUnknown {
                jobs.meta.delete_upload(id).await?;
            }
            return Err(e);
        }
    };
    let linked = jobs.meta.link_blob(repo, digest, &BlobInfo { size, key: key.clone() }, Some(id)).await;
    let kept = match &linked {
        Ok(kept) => Some(kept.clone()),
        // A policy refused the link (a quota) after recording the blob, for GC to collect.
        Err(e) if e.kind == ErrorKind::Denied => jobs.meta.blob(digest).await.ok().flatten().map(|b| b.key),
        Err(_) => None,
    };
    if kept.as_ref().is_some_and(|kept| *kept != key) {
        // The same content was recorded first under another key (a concurrent push,
        // maybe on another node): the bytes are stored once, and these go.
        if let Err(e) = jobs.blobs.delete_blob(&key).await {
            tracing::warn!(error = %e, %key, "could not drop a duplicate blob; garbage collection will");
        }
    }
    linked.map(|_| ())
}
