//! Eviction policies: which committed object goes first when a medium passes its high
//! watermark. The state machine only asks for an order; the leader skips leased objects.

use lru::LruCache;
use serde::{Deserialize, Serialize};

use memcache_core::Key;

/// Orders the committed objects from the first to evict to the last.
pub trait EvictionPolicy: Send + Sync {
    fn name(&self) -> &'static str;
    /// A key was committed.
    fn insert(&mut self, key: &Key);
    /// A key was read.
    fn touch(&mut self, key: &Key);
    /// A key left the directory.
    fn remove(&mut self, key: &Key);
    /// Keys from the coldest to the hottest.
    fn coldest(&self) -> Box<dyn Iterator<Item = &Key> + '_>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Least recently used first.
    #[default]
    Lru,
    /// Oldest commit first; reads do not matter.
    Fifo,
}

impl PolicyKind {
    pub fn build(self) -> Box<dyn EvictionPolicy> {
        Box::new(RecencyList {
            order: LruCache::unbounded(),
            reads_count: self == PolicyKind::Lru,
        })
    }
}

/// LRU and FIFO differ only in whether a read moves a key to the hot end.
struct RecencyList {
    order: LruCache<Key, ()>,
    reads_count: bool,
}

impl EvictionPolicy for RecencyList {
    fn name(&self) -> &'static str {
        if self.reads_count {
            "lru"
        } else {
            "fifo"
        }
    }

    fn insert(&mut self, key: &Key) {
        self.order.put(key.clone(), ());
    }

    fn touch(&mut self, key: &Key) {
        if self.reads_count {
            self.order.promote(key);
        }
    }

    fn remove(&mut self, key: &Key) {
        self.order.pop(key);
    }

    fn coldest(&self) -> Box<dyn Iterator<Item = &Key> + '_> {
        Box::new(self.order.iter().rev().map(|(k, _)| k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(p: &dyn EvictionPolicy) -> Vec<String> {
        p.coldest().map(|k| k.to_string()).collect()
    }

    #[test]
    fn lru_moves_read_keys_to_the_hot_end() {
        let mut p = PolicyKind::Lru.build();
        for k in ["a", "b", "c"] {
            p.insert(&Key::new(k).unwrap());
        }
        p.touch(&Key::new("a").unwrap());
        assert_eq!(keys(p.as_ref()), ["b", "c", "a"]);
        p.remove(&Key::new("c").unwrap());
        assert_eq!(keys(p.as_ref()), ["b", "a"]);
    }

    #[test]
    fn fifo_ignores_reads() {
        let mut p = PolicyKind::Fifo.build();
        for k in ["a", "b"] {
            p.insert(&Key::new(k).unwrap());
        }
        p.touch(&Key::new("a").unwrap());
        assert_eq!(keys(p.as_ref()), ["a", "b"]);
    }
}
