//! Upload claims: on one node, at most one request works on an upload at a time.
//!
//! A request takes the claim *before* it reads the upload's record, so what it reads is
//! what the previous holder left; the claim then moves into the task that does the work
//! (append, record, commit, cancel), and is released only when that task ends — a
//! handler future dropped by a client that went away cannot release it while a write
//! runs on. A request that finds the upload claimed waits for the holder to finish (a
//! client retrying after a timeout is served once the earlier request ends), up to a
//! bound. Across nodes, `advance_upload` moves an upload only from the size it was read
//! at, and the blob stores refuse state that another append replaced.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{Error, ErrorKind};
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Claims {
    held: Mutex<HashSet<String>>,
    released: Notify,
}

/// The exclusive right to work on one upload; released when dropped.
pub(crate) struct Claim {
    claims: Arc<Claims>,
    id: String,
}

impl Claims {
    /// Claims upload `id`, waiting up to `wait` for a current holder to finish.
    pub(crate) async fn claim(self: &Arc<Self>, id: &str, wait: Duration) -> Result<Claim, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the check, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.held.lock().unwrap().insert(id.to_owned()) {
                return Ok(Claim { claims: Arc::clone(self), id: id.to_owned() });
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(Error::new(ErrorKind::BlobUploadInvalid)
                    .with_message("another request is still writing to this upload; retry later"));
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claims.held.lock().unwrap().remove(&self.id);
        self.claims.released.notify_waiters();
    }
}

impl Claim {
    /// Runs `work` holding this claim, in a task of its own: it runs to its end (and the
    /// claim with it) even if the caller stops waiting.
    pub(crate) async fn run<T, F>(self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let task = tokio::spawn(async move {
            let result = work.await;
            drop(self);
            result
        });
        task.await.map_err(Error::internal)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_claim_waits_for_the_first_to_end() {
        let claims = Arc::new(Claims::default());
        let first = claims.claim("u", Duration::from_secs(1)).await.unwrap();
        let waiting = {
            let claims = Arc::clone(&claims);
            tokio::spawn(async move { claims.claim("u", Duration::from_secs(5)).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second claim must wait");
        drop(first);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_claim_held_too_long_is_refused_after_the_wait() {
        let claims = Arc::new(Claims::default());
        let _first = claims.claim("u", Duration::from_secs(1)).await.unwrap();
        let err = claims.claim("u", Duration::from_millis(50)).await.err().unwrap();
        assert_eq!(err.kind, ErrorKind::BlobUploadInvalid);
        // Other uploads are not held up.
        claims.claim("v", Duration::ZERO).await.unwrap();
    }

    #[tokio::test]
    async fn the_claim_outlives_a_caller_that_stops_waiting() {
        let claims = Arc::new(Claims::default());
        let claim = claims.claim("u", Duration::ZERO).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = claim.run(async move {
            let _ = rx.await;
            Ok(())
        });
        // The caller gives up (a dropped handler future).
        let _ = tokio::time::timeout(Duration::from_millis(20), run).await;
        assert!(claims.claim("u", Duration::from_millis(50)).await.is_err(), "the work still holds the claim");
        tx.send(()).unwrap();
        claims.claim("u", Duration::from_secs(5)).await.unwrap();
    }
}
