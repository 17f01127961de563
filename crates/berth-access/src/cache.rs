//! A small map whose entries expire: verified tokens (until their `exp`) and verified
//! Basic credentials (for a few seconds). Bounded in entries and, for values whose size
//! varies with what a client sent, in bytes (each entry's key and value, as its weight
//! says): when full, expired entries go first, and if that is not enough the map starts
//! over (every entry can be recomputed from its source; dropping one costs a signature
//! check or a password hash). An entry heavier than [`Bounds::max_entry_bytes`] is never
//! kept: it is recomputed on every use.
//!
//! Reads take a shared lock: the hot path (a bearer token on every pull) never waits for
//! another reader.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::Instant;

/// How much a cache holds.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_entries: usize,
    /// Total weight of the entries kept.
    pub max_bytes: usize,
    /// Heaviest entry kept.
    pub max_entry_bytes: usize,
}

impl Bounds {
    /// Bounded in entries only.
    pub fn entries(max_entries: usize) -> Bounds {
        Bounds { max_entries, max_bytes: usize::MAX, max_entry_bytes: usize::MAX }
    }
}

/// What a cached value weighs, in bytes: its own size and what it owns on the heap.
pub trait Weigh {
    fn weight(&self) -> usize;
}

struct Entries<K, V> {
    map: HashMap<K, (V, Instant, usize)>,
    bytes: usize,
}

pub struct TtlCache<K, V> {
    entries: RwLock<Entries<K, V>>,
    bounds: Bounds,
}

impl<K: Eq + Hash, V: Clone + Weigh> TtlCache<K, V> {
    pub fn new(bounds: Bounds) -> TtlCache<K, V> {
        let bounds = Bounds { max_entries: bounds.max_entries.max(1), ..bounds };
        TtlCache { entries: RwLock::new(Entries { map: HashMap::new(), bytes: 0 }), bounds }
    }

    /// The value under `key`, unless it has expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.map.get(key).filter(|(_, until, _)| Instant::now() < *until).map(|(v, _, _)| v.clone())
    }

    /// Keeps `value` under `key` until `until`, unless it weighs more than an entry may.
    pub fn insert(&self, key: K, value: V, until: Instant) {
        let weight = std::mem::size_of::<(K, V, Instant, usize)>() + value.weight();
        if weight > self.bounds.max_entry_bytes {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, old)) = entries.map.remove(&key) {
            entries.bytes -= old;
        }
        let full = |e: &Entries<K, V>| {
            e.map.len() >= self.bounds.max_entries || e.bytes.saturating_add(weight) > self.bounds.max_bytes
        };
        if full(&entries) {
            let now = Instant::now();
            let Entries { map, bytes } = &mut *entries;
            map.retain(|_, (_, until, w)| {
                let live = now < *until;
                if !live {
                    *bytes -= *w;
                }
                live
            });
            if full(&entries) {
                entries.map.clear();
                entries.bytes = 0;
            }
        }
        entries.bytes += weight;
        entries.map.insert(key, (value, until, weight));
    }

    /// Keeps only the entries whose value `keep` accepts.
    pub fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let Entries { map, bytes } = &mut *entries;
        map.retain(|_, (v, _, w)| {
            let kept = keep(v);
            if !kept {
                *bytes -= *w;
            }
            kept
        });
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The weight of the entries kept, in bytes.
    pub fn bytes(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).bytes
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

    impl Weigh for &'static str {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let cache = TtlCache::new(Bounds::entries(3));
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
    fn the_verified_token_cache_is_bounded_by_bytes_not_only_entries() {
        let overhead = std::mem::size_of::<(u32, &str, Instant, usize)>();
        let (small, large): (&'static str, &'static str) = ("s", &*"x".repeat(1000).leak());
        let cache =
            TtlCache::new(Bounds { max_entries: 1000, max_bytes: 3 * (overhead + 1000), max_entry_bytes: 2000 });
        let later = Instant::now() + Duration::from_secs(60);
        // Far fewer entries than the count allows fill the bytes: the map starts over.
        for key in 0..3 {
            cache.insert(key, large, later);
        }
        assert_eq!((cache.len(), cache.bytes()), (3, 3 * (overhead + 1000)));
        cache.insert(3, large, later);
        assert_eq!((cache.len(), cache.bytes()), (1, overhead + 1000));
        // Replacing an entry or retaining counts its weight out again.
        cache.insert(3, small, later);
        assert_eq!(cache.bytes(), overhead + 1);
        cache.insert(4, small, later);
        cache.retain(|_| false);
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
        // An entry heavier than an entry may be is never kept.
        cache.insert(5, &*"y".repeat(3000).leak(), later);
        assert_eq!((cache.get(&5), cache.bytes()), (None, 0));
    }

    #[test]
    fn digests_are_length_prefixed() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_eq!(digest(&[b"a", b"bc"]), digest(&[b"a", b"bc"]));
    }
}
