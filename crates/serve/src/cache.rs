//! A small least-recently-used cache of captioning results. Keys are SHA-256 of the image bytes,
//! the model version and the decoding options, so a new production version or other options
//! never see another's results.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;

/// Thread-safe LRU map: `get` refreshes an entry, `insert` evicts the least recently used one
/// when full. Capacity 0 stores nothing.
#[derive(Debug)]
pub struct LruCache<K, V> {
    capacity: usize,
    inner: Mutex<Inner<K, V>>,
}

#[derive(Debug)]
struct Inner<K, V> {
    /// Value and the tick of its last use.
    entries: HashMap<K, (V, u64)>,
    /// Tick of last use → key; the first entry is the least recently used.
    order: BTreeMap<u64, K>,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> LruCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        LruCache { capacity, inner: Mutex::new(Inner { entries: HashMap::new(), order: BTreeMap::new(), tick: 0 }) }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tick = inner.next_tick();
        let (value, last) = inner.entries.get_mut(key)?;
        let (value, old) = (value.clone(), std::mem::replace(last, tick));
        inner.order.remove(&old);
        inner.order.insert(tick, key.clone());
        Some(value)
    }

    pub fn insert(&self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tick = inner.next_tick();
        if let Some((_, old)) = inner.entries.insert(key.clone(), (value, tick)) {
            inner.order.remove(&old);
        }
        inner.order.insert(tick, key);
        while inner.entries.len() > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else { break };
            inner.entries.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, V> Inner<K, V> {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let cache = LruCache::new(2);
        cache.insert("a", 1);
        cache.insert("b", 2);
        assert_eq!(cache.get(&"a"), Some(1)); // b is now the oldest
        cache.insert("c", 3);
        assert_eq!(cache.get(&"b"), None);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"c"), Some(3));
        cache.insert("c", 4);
        assert_eq!((cache.get(&"c"), cache.len()), (Some(4), 2));

        let off = LruCache::new(0);
        off.insert("a", 1);
        assert!(off.is_empty());
    }
}
