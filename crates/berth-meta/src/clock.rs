//! A map bounded by bytes, evicting by CLOCK (second chance): the memory behind
//! [`CachedStore`](crate::CachedStore). Not a cache by itself: it knows nothing of
//! invalidation or of what its values mean.
//!
//! A hit only sets a bit in its entry (an atomic, so readers share a read lock); an
//! insert that would pass the budget sweeps a ring of keys in insertion order, giving
//! each entry whose bit is set a second chance and evicting the first one whose bit is
//! clear. Each entry is accounted at the size its owner declares plus its key (held
//! twice: map and ring) plus a fixed overhead, so the accounted total bounds the memory
//! the map holds. Keys removed from the map stay in the ring until the sweep or a
//! compaction (amortised O(1) per removal) drops them; a stamp tells a stale ring key
//! from a later entry under the same key.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes accounted per entry beyond its key and value: the map's slot, the ring's slot,
/// the stamp and the bit.
pub(crate) const ENTRY_OVERHEAD: usize = 96;

/// What a key occupies on the heap, for accounting.
pub(crate) trait HeapSize {
    fn heap_size(&self) -> usize;
}

struct Slot<V> {
    value: V,
    /// Everything this entry is accounted for.
    bytes: usize,
    stamp: u64,
    referenced: AtomicBool,
}

pub(crate) struct ClockMap<K, V> {
    map: HashMap<K, Slot<V>>,
    /// Keys in insertion order with the stamp of the insert that queued them.
    ring: VecDeque<(K, u64)>,
    next_stamp: u64,
    bytes: usize,
    budget: usize,
}

impl<K: Hash + Eq + Clone + HeapSize, V> ClockMap<K, V> {
    pub(crate) fn new(budget: usize) -> ClockMap<K, V> {
        ClockMap { map: HashMap::new(), ring: VecDeque::new(), next_stamp: 0, bytes: 0, budget }
    }

    /// Bytes accounted to the entries held now; never more than the budget.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The value under `key`, marking it recently used.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        let slot = self.map.get(key)?;
        // Load first: a store on every hit would bounce the cache line between cores.
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(&slot.value)
    }

    /// Inserts `value` (occupying `size` bytes besides its key), evicting as needed.
    /// `false` if it alone is larger than the budget (then nothing changes but the removal
    /// of an older value under `key`).
    pub(crate) fn insert(&mut self, key: K, value: V, size: usize) -> bool {
        self.remove(&key);
        let bytes = size + 2 * key.heap_size() + ENTRY_OVERHEAD;
        if bytes > self.budget {
            return false;
        }
        while self.bytes + bytes > self.budget {
            if !self.evict_one() {
                break;
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.ring.push_back((key.clone(), stamp));
        self.map.insert(key, Slot { value, bytes, stamp, referenced: AtomicBool::new(false) });
        self.bytes += bytes;
        true
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.bytes -= slot.bytes;
        self.compact_if_sparse();
        Some(slot.value)
    }

    /// Keeps only the entries `keep` approves. O(n): for rare writes only.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let mut freed = 0;
        self.map.retain(|k, slot| {
            let kept = keep(k, &slot.value);
            if !kept {
                freed += slot.bytes;
            }
            kept
        });
        self.bytes -= freed;
        self.compact_if_sparse();
    }

    /// Moves the hand until it evicts one entry; `false` if there is none.
    fn evict_one(&mut self) -> bool {
        while let Some((key, stamp)) = self.ring.pop_front() {
            let Some(slot) = self.map.get(&key) else { continue };
            if slot.stamp != stamp {
                continue;
            }
            if slot.referenced.swap(false, Ordering::Relaxed) {
                self.ring.push_back((key, stamp));
                continue;
            }
            let slot = self.map.remove(&key).expect("looked up above");
            self.bytes -= slot.bytes;
            return true;
        }
        false
    }

    /// Drops stale ring keys once they outnumber the live ones: each compaction costs
    /// O(ring) and follows at least as many removals.
    fn compact_if_sparse(&mut self) {
        if self.ring.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.ring.retain(|(k, stamp)| map.get(k).is_some_and(|s| s.stamp == *stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl HeapSize for String {
        fn heap_size(&self) -> usize {
            self.len()
        }
    }

    fn key(i: usize) -> String {
        format!("k{i:04}")
    }

    /// What one entry of `size` value bytes under a 5-byte key is accounted.
    fn cost(size: usize) -> usize {
        size + 10 + ENTRY_OVERHEAD
    }

    #[test]
    fn accounted_bytes_never_exceed_the_budget() {
        let budget = 10 * cost(100);
        let mut m = ClockMap::new(budget);
        for i in 0..1000 {
            let size = (i * 37) % 300;
            m.insert(key(i % 50), i, size);
            assert!(m.bytes() <= budget, "{} > {budget} after {i}", m.bytes());
            if i % 7 == 0 {
                m.remove(&key((i * 3) % 50));
            }
            let live: usize = m.map.values().map(|s| s.bytes).sum();
            assert_eq!(live, m.bytes(), "accounting drifted");
        }
        assert!(m.ring.len() <= 2 * m.len() + 64 + 1, "stale ring keys pile up: {}", m.ring.len());
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_not_kept() {
        let mut m = ClockMap::new(cost(10));
        assert!(m.insert(key(1), 1, 10));
        assert!(!m.insert(key(2), 2, 11));
        assert_eq!((m.len(), m.bytes()), (1, cost(10)));
    }

    #[test]
    fn recently_used_entries_get_a_second_chance() {
        let mut m = ClockMap::new(3 * cost(0));
        for i in 0..3 {
            m.insert(key(i), i, 0);
        }
        assert_eq!(m.get(&key(0)), Some(&0));
        // k0 was used: the hand passes it and evicts k1, then k2.
        m.insert(key(3), 3, 0);
        assert!(m.get(&key(1)).is_none() && m.get(&key(0)).is_some());
        m.insert(key(4), 4, 0);
        assert!(m.get(&key(2)).is_none());
        let mut left: Vec<_> = m.map.keys().cloned().collect();
        left.sort();
        assert_eq!(left, [key(0), key(3), key(4)]);
    }

    #[test]
    fn a_replaced_or_removed_key_is_not_evicted_through_its_stale_ring_entry() {
        let mut m = ClockMap::new(2 * cost(0));
        m.insert(key(1), 1, 0);
        m.insert(key(2), 2, 0);
        m.remove(&key(1));
        m.insert(key(1), 10, 0); // k1 is now the newest entry
        m.insert(key(3), 3, 0); // evicts the oldest live one: k2
        assert!(m.get(&key(2)).is_none());
        assert_eq!(m.get(&key(1)), Some(&10));
        m.retain(|_, v| *v != 10);
        assert_eq!((m.len(), m.bytes()), (1, cost(0)));
    }
}
