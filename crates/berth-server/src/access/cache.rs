//! A small map whose entries expire: verified tokens (until their `exp`) and verified
//! Basic credentials (for a few seconds). Bounded in entries: when full, expired entries
//! go first, and if none has expired the map starts over (every entry can be recomputed
//! from its source; dropping one costs a signature check or a password hash).
//!
//! Reads take a shared lock: the hot path (a bearer token on every pull) never waits for
//! another reader.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::Instant;

pub struct TtlCache<K, V> {
    entries: RwLock<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize) -> TtlCache<K, V> {
        TtlCache { entries: RwLock::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// The value under `key`, unless it has expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|(_, until)| Instant::now() < *until).map(|(v, _)| v.clone())
    }

    /// Keeps `value` under `key` until `until`.
    pub fn insert(&self, key: K, value: V, until: Instant) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let now = Instant::now();
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (value, until));
    }

    /// Keeps only the entries whose value `keep` accepts.
    pub fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        self.entries.write().unwrap_or_else(|e| e.into_inner()).retain(|_, (v, _)| keep(v));
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// SHA-256 of `parts`, each length-prefixed (so `("ab", "c")` and `("a", "bc")` differ).
pub fn digest(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let cache = TtlCache::new(3);
        let later = Instant::now() + Duration::from_secs(60);
        cache.insert(1, "a", later);
        cache.insert(2, "b", Instant::now());
        assert_eq!(cache.get(&1), Some("a"));
        assert_eq!(cache.get(&2), None, "expired");
        cache.insert(3, "c", later);
        // Full: the expired entry makes room.
        cache.insert(4, "d", later);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&1), Some("a"));
        // Full of live entries: it starts over rather than grow.
        cache.insert(5, "e", later);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&5), Some("e"));
        // Retaining drops exactly the values refused.
        cache.insert(6, "f", later);
        cache.retain(|v| *v != "e");
        assert_eq!((cache.get(&5), cache.get(&6), cache.len()), (None, Some("f"), 1));
    }

    #[test]
    fn digests_are_length_prefixed() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_eq!(digest(&[b"a", b"bc"]), digest(&[b"a", b"bc"]));
    }
}
