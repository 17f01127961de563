//! The pull recorder: remembers when each manifest and tag was last pulled without a
//! database write per pull. A manifest GET records `(repository, digest, tag)` → now in
//! memory; [`PullRecorder::flush`] writes everything recorded since the last flush in one
//! batched transaction (`RetentionStore::record_pulls`), every `--pull-flush-interval`, early
//! when the map fills, and once more after the last request when the server stops.
//!
//! Cost on the hot path (reasoned, the manifest GET benchmark measures the whole): one
//! `SystemTime::now` (a vDSO call, ~25 ns), one uncontended mutex out of 16 (the shard is
//! chosen by the digest's last hex digit, no hashing), one SipHash of the key (~100 bytes,
//! ~100 ns) and a lookup. A key already present is updated in place, borrowed: no
//! allocation; a new key allocates its three strings once per flush interval. No lock is
//! held across an `.await`; the flush takes each shard's map by swapping in an empty one.
//!
//! Bounded: at most [`MAX_ENTRIES`] keys are held (keys are at most ~500 bytes: a name of
//! ≤ 255, a digest, a tag of ≤ 128; so at most ~32 MiB, typically ~5 MiB). A shard three
//! quarters full wakes the flusher; a pull that finds its shard full is not recorded
//! (counted and logged at the next flush): its time is then the previous pull's. A kill -9
//! loses what was recorded since the last flush (at most one interval of pull times).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use berth_core::Error;
use berth_meta::{Pull, RetentionStore};
use tokio::sync::Notify;

/// Keys held at most across all shards.
pub const MAX_ENTRIES: usize = 65_536;
const SHARDS: usize = 16;

/// A recorded key, owned.
#[derive(Debug)]
struct PullKey {
    repo: Box<str>,
    digest: Box<str>,
    tag: Option<Box<str>>,
}

/// A key, borrowed: what a lookup builds without allocating.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
struct KeyRef<'a> {
    repo: &'a str,
    digest: &'a str,
    tag: Option<&'a str>,
}

/// Both key forms, seen alike, so that an owned key is found by a borrowed one.
trait AsKey {
    fn key(&self) -> KeyRef<'_>;
}

impl AsKey for PullKey {
    fn key(&self) -> KeyRef<'_> {
        KeyRef { repo: &self.repo, digest: &self.digest, tag: self.tag.as_deref() }
    }
}

impl AsKey for KeyRef<'_> {
    fn key(&self) -> KeyRef<'_> {
        *self
    }
}

impl<'a> Borrow<dyn AsKey + 'a> for PullKey {
    fn borrow(&self) -> &(dyn AsKey + 'a) {
        self
    }
}

impl Hash for dyn AsKey + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl PartialEq for dyn AsKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn AsKey + '_ {}

impl Hash for PullKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl PartialEq for PullKey {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for PullKey {}

type Shard = Mutex<HashMap<PullKey, i64>>;

pub struct PullRecorder {
    shards: Vec<Shard>,
    per_shard: usize,
    /// Pulls not recorded because their shard was full, since the last flush.
    dropped: AtomicU64,
    /// Wakes the flusher when a shard fills up.
    pub(crate) filling: Notify,
    /// Each flush also announces its pulls (an `artifact.pulled` event per manifest in
    /// the outbox): set while a webhook wants them.
    announce: AtomicBool,
}

impl Default for PullRecorder {
    fn default() -> PullRecorder {
        PullRecorder::with_capacity(MAX_ENTRIES)
    }
}

impl PullRecorder {
    /// A recorder holding at most about `entries` keys.
    pub fn with_capacity(entries: usize) -> PullRecorder {
        PullRecorder {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: entries.div_ceil(SHARDS).max(1),
            dropped: AtomicU64::new(0),
            filling: Notify::new(),
            announce: AtomicBool::new(false),
        }
    }

    fn shard(&self, digest: &str) -> &Shard {
        let last = digest.chars().next_back().unwrap_or('0');
        let n = last.to_digit(16).unwrap_or(u32::from(last)) as usize;
        &self.shards[n % SHARDS]
    }

    /// Records that `repo`'s manifest `digest` was served now, asked for by `tag`.
    pub fn record(&self, repo: &str, digest: &str, tag: Option<&str>) {
        self.record_at(repo, digest, tag, berth_meta::now());
    }

    fn record_at(&self, repo: &str, digest: &str, tag: Option<&str>, at: i64) {
        let key = KeyRef { repo, digest, tag };
        let mut map = self.shard(digest).lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = map.get_mut(&key as &dyn AsKey) {
            *last = (*last).max(at);
            return;
        }
        if map.len() >= self.per_shard {
            drop(map);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.filling.notify_one();
            return;
        }
        map.insert(PullKey { repo: repo.into(), digest: digest.into(), tag: tag.map(Into::into) }, at);
        if map.len() * 4 >= self.per_shard * 3 {
            drop(map);
            self.filling.notify_one();
        }
    }

    /// Whether flushes announce the pulls they write (see [`RetentionStore::record_pulls`]).
    pub fn set_announce(&self, announce: bool) {
        self.announce.store(announce, Ordering::Relaxed);
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes what was recorded since the last flush to `store` in one transaction;
    /// returns how many keys it wrote. If the write fails, the pulls are put back (as
    /// far as there is room) for the next flush, and the error returned.
    pub async fn flush(&self, store: &dyn RetentionStore) -> Result<usize, Error> {
        let mut pulls = Vec::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(PoisonError::into_inner));
            pulls.extend(taken.into_iter().map(|(k, at)| Pull {
                repo: k.repo.into(),
                digest: k.digest.into(),
                tag: k.tag.map(Into::into),
                at,
            }));
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "pulls not recorded: the pull recorder was full (flushes cannot keep up)");
        }
        if pulls.is_empty() {
            return Ok(0);
        }
        match store.record_pulls(&pulls, self.announce.load(Ordering::Relaxed)).await {
            Ok(()) => Ok(pulls.len()),
            Err(e) => {
                for p in &pulls {
                    self.record_at(&p.repo, &p.digest, p.tag.as_deref(), p.at);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_pulls_of_one_key_are_one_entry_with_the_latest_time() {
        let r = PullRecorder::default();
        for at in [5, 9, 7] {
            r.record_at("team/app", "sha256:ab", Some("v1"), at);
        }
        r.record_at("team/app", "sha256:ab", None, 3);
        r.record_at("team/app", "sha256:cd", Some("v1"), 4);
        assert_eq!(r.len(), 3, "(repo, digest, tag) is the key: by tag, by digest, another manifest");
        let shard = r.shard("sha256:ab").lock().unwrap();
        let key = KeyRef { repo: "team/app", digest: "sha256:ab", tag: Some("v1") };
        assert_eq!(shard.get(&key as &dyn AsKey), Some(&9));
    }

    #[test]
    fn a_full_recorder_drops_new_keys_and_wakes_the_flusher() {
        let r = PullRecorder::with_capacity(16);
        // One per shard fits (digests ending in each hex digit); a second key in a shard does not.
        for d in "0123456789abcdef".chars() {
            r.record_at("r", &format!("sha256:{d}"), None, 1);
        }
        assert_eq!(r.len(), 16);
        r.record_at("r", "sha256:10", None, 2);
        assert_eq!((r.len(), r.dropped.load(Ordering::Relaxed)), (16, 1));
        // A key already held is still updated.
        r.record_at("r", "sha256:0", None, 3);
        assert_eq!(r.dropped.load(Ordering::Relaxed), 1);
        assert!(futures_util::FutureExt::now_or_never(r.filling.notified()).is_some(), "the flusher was woken");
    }
}
