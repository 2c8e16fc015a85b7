//! A small weight-bounded LRU map (few entries, so eviction scans linearly).

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    map: HashMap<K, (V, u64, usize)>,
    tick: u64,
    weight: usize,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Lru {
            map: HashMap::new(),
            tick: 0,
            weight: 0,
            cap,
        }
    }

    pub(crate) fn get(&mut self, k: &K) -> Option<V> {
        self.tick += 1;
        let t = self.tick;
        self.map.get_mut(k).map(|e| {
            e.1 = t;
            e.0.clone()
        })
    }

    pub(crate) fn peek(&self, k: &K) -> Option<V> {
        self.map.get(k).map(|e| e.0.clone())
    }

    /// Inserts, then evicts least-recently-used entries (never the new one) while over capacity.
    pub(crate) fn insert(&mut self, k: K, v: V, weight: usize) {
        self.tick += 1;
        if let Some(old) = self.map.insert(k.clone(), (v, self.tick, weight)) {
            self.weight -= old.2;
        }
        self.weight += weight;
        while self.weight > self.cap && self.map.len() > 1 {
            let victim = self
                .map
                .iter()
                .filter(|(key, _)| **key != k)
                .min_by_key(|(_, e)| e.1)
                .map(|(key, _)| key.clone());
            match victim {
                Some(key) => {
                    if let Some(e) = self.map.remove(&key) {
                        self.weight -= e.2;
                    }
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recent() {
        let mut l = Lru::new(2);
        l.insert(1, "a", 1);
        l.insert(2, "b", 1);
        assert_eq!(l.get(&1), Some("a"));
        l.insert(3, "c", 1);
        assert_eq!(l.peek(&2), None);
        assert_eq!(l.peek(&1), Some("a"));
        assert_eq!(l.peek(&3), Some("c"));
    }
}
