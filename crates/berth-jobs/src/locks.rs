//! What the storage lifecycle jobs share with the write path: [`BlobLocks`], the
//! per-node lock that keeps a blob's bytes from being removed while an upload of the
//! same content commits: the filesystem store gives every copy of a digest
//! the same key, so an upload committing while GC removes that key could record bytes that
//! are gone. Every path that links bytes to a repository holds the digest's stripe from
//! the moment it knows the key until the link commits — an upload's commit-and-link, a
//! cross-repository mount's read of the source's record and link (with `from` or found
//! automatically) — and so do GC's doom-remove-forget of one digest and the scrub's
//! re-check-record-remove of a damaged blob. Across nodes (S3), keys are per upload and
//! `link_blob` refuses to revive a blob with the very key being removed (a tombstone).

use std::hash::{Hash, Hasher};

use berth_core::Digest;
use tokio::sync::{Mutex, MutexGuard};

/// Stripes: distinct digests rarely share one, and the table stays small.
const STRIPES: usize = 64;

/// Per-digest locks, striped (uncontended: one atomic operation).
pub struct BlobLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for BlobLocks {
    fn default() -> BlobLocks {
        BlobLocks { stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
    }
}

impl BlobLocks {
    /// Waits for the stripe of `digest`.
    pub async fn lock(&self, digest: &Digest) -> MutexGuard<'_, ()> {
        self.stripes[stripe(digest)].lock().await
    }

    /// Waits for the stripes of all `digests`, taken in stripe order: two callers of this
    /// never wait for each other in a cycle, and [`BlobLocks::lock`] holds only one.
    pub async fn lock_all<'d>(&self, digests: impl IntoIterator<Item = &'d Digest>) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = digests.into_iter().map(stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }
}

fn stripe(digest: &Digest) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    digest.as_str().hash(&mut hasher);
    (hasher.finish() % STRIPES as u64) as usize
}
