//! Storing a blob another registry sends, verified: the bytes go into an upload, hashed
//! as they pass (and, for the pull-through cache, to the first client as they arrive),
//! and the blob is recorded only once they hash to its digest. Shared by the cache
//! (`cache.rs`) and pull replication (`replication/pull.rs`); it knows neither.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{Digest, DigestHasher, Error, ErrorKind, RepoName};
use berth_storage::{ByteStream, storage_err};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// How long the fetch waits for its first client to take a chunk before it drops that
/// client and goes on without it.
const CLIENT_STALL: Duration = Duration::from_secs(30);

/// Stores a blob another registry (`from`, for messages) is sending: its bytes go into an
/// upload, hashed as they pass (and to `client` too, if there is one: [`tee`]), and the
/// blob is recorded in `repo` only once they hash to `digest` (and are `size` long, when
/// known); returns its size. Bytes that do not match are removed, and nothing is recorded.
pub(crate) async fn store_fetched(
    jobs: &berth_jobs::Jobs,
    from: &str,
    repo: &RepoName,
    digest: &Digest,
    size: Option<u64>,
    upstream: ByteStream,
    client: Option<mpsc::Sender<io::Result<Bytes>>>,
) -> Result<u64, Error> {
    let (blobs, meta) = (&jobs.blobs, &jobs.meta);
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let state = blobs.create_upload(&id).await.map_err(storage_err)?;
    meta.create_upload(&id, repo, &state, u32::MAX).await?;
    let outcome = Arc::new(Mutex::new(None));
    let tee = tee(upstream, client, digest.clone(), size, Arc::clone(&outcome));
    let appended = blobs.append_upload(&id, &state, 0, tee).await.map_err(storage_err);
    let verdict = outcome.lock().unwrap().take();
    let (written, state) = match (appended, verdict) {
        (Ok(done), Some(Ok(()))) => done,
        (Ok(_), Some(Err(why))) => {
            discard(jobs, &id, &state).await;
            return Err(Error::new(ErrorKind::Unavailable)
                .with_message(format!("{from} sent bytes for {digest} that {why}; nothing was stored")));
        }
        (Ok(_), None) => {
            discard(jobs, &id, &state).await;
            return Err(Error::internal("the blob's stream ended unchecked"));
        }
        (Err(e), _) => {
            discard(jobs, &id, &state).await;
            return Err(e);
        }
    };
    berth_jobs::commit::commit_and_link(jobs, repo, digest, &id, &state, written).await?;
    Ok(written)
}

/// Removes a failed fetch's upload, record first (as the janitor does).
async fn discard(jobs: &berth_jobs::Jobs, id: &str, state: &str) {
    if let Err(e) = jobs.meta.delete_upload(id).await {
        tracing::warn!(%id, error = %e, "could not remove a failed fetch's upload; the janitor will");
        return;
    }
    if let Err(e) = jobs.blobs.delete_upload(id, state).await {
        tracing::warn!(%id, error = %e, "could not remove a failed fetch's bytes; the janitor will");
    }
}

/// The upstream's bytes, hashed, passed on to the upload and to `client`. The client gets
/// each chunk once the next one arrives, and the last one only once the whole checks
/// against `digest` (and `size`, when known); otherwise it gets an error instead. The
/// verdict goes to `outcome` when the stream ends.
fn tee(
    upstream: ByteStream,
    client: Option<mpsc::Sender<io::Result<Bytes>>>,
    digest: Digest,
    size: Option<u64>,
    outcome: Arc<Mutex<Option<Result<(), String>>>>,
) -> ByteStream {
    struct Tee {
        upstream: ByteStream,
        hasher: DigestHasher,
        held: Option<Bytes>,
        client: Option<mpsc::Sender<io::Result<Bytes>>>,
        digest: Digest,
        size: Option<u64>,
        outcome: Arc<Mutex<Option<Result<(), String>>>>,
    }
    impl Tee {
        async fn forward(&mut self, item: io::Result<Bytes>) {
            if let Some(tx) = &self.client
                && !matches!(tokio::time::timeout(CLIENT_STALL, tx.send(item)).await, Ok(Ok(())))
            {
                // Gone, or not reading: the fetch goes on without it.
                self.client = None;
            }
        }
    }
    let state = Tee { upstream, hasher: DigestHasher::new(), held: None, client, digest, size, outcome };
    Box::pin(futures_util::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        match st.upstream.next().await {
            Some(Ok(chunk)) => {
                st.hasher.update(&chunk);
                if let Some(previous) = st.held.replace(chunk.clone()) {
                    st.forward(Ok(previous)).await;
                }
                Some((Ok(chunk), Some(st)))
            }
            Some(Err(e)) => {
                st.forward(Err(io::Error::new(e.kind(), e.to_string()))).await;
                Some((Err(e), None))
            }
            None => {
                let len = st.hasher.len();
                let actual = st.hasher.clone().finish();
                let verdict = if st.size.is_some_and(|s| s != len) {
                    Err(format!("are {len} bytes long where it said {}", st.size.unwrap_or(0)))
                } else if actual != st.digest {
                    Err(format!("hash to {actual}"))
                } else {
                    Ok(())
                };
                match &verdict {
                    Ok(()) => {
                        if let Some(last) = st.held.take() {
                            st.forward(Ok(last)).await;
                        }
                    }
                    Err(why) => st.forward(Err(io::Error::other(format!("the upstream's bytes {why}")))).await,
                }
                *st.outcome.lock().unwrap() = Some(verdict);
                None
            }
        }
    }))
}
