//! An ordered set of keys, compact: the recency lists of the LRU, FIFO and segmented
//! policies, which hold every object in memory.
//!
//! Nodes live in one vector, linked by index, and are found through a hash table of
//! indexes: 24 bytes per key (its handle and two links) plus 5 per table slot, where
//! `LruCache<Key, ()>` takes a 48-byte heap node and a 17-byte slot per key.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use memcache_core::Key;

const NIL: u32 = u32::MAX;

struct Node {
    key: Key,
    prev: u32,
    next: u32,
}

/// Keys from the front (the coldest) to the back (the hottest).
#[derive(Default)]
pub(super) struct KeyList {
    nodes: Vec<Node>,
    /// Index of each key's node, hashed by the key.
    index: HashTable<u32>,
    hasher: FxBuildHasher,
    head: Option<u32>,
    tail: Option<u32>,
}

impl KeyList {
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    fn find(&self, key: &Key) -> Option<u32> {
        let nodes = &self.nodes;
        self.index
            .find(self.hasher.hash_one(key), |&i| {
                nodes[i as usize].key == *key
            })
            .copied()
    }

    fn link_back(&mut self, i: u32) {
        let node = &mut self.nodes[i as usize];
        node.prev = self.tail.unwrap_or(NIL);
        node.next = NIL;
        match self.tail {
            Some(t) => self.nodes[t as usize].next = i,
            None => self.head = Some(i),
        }
        self.tail = Some(i);
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = (next != NIL).then_some(next),
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = (prev != NIL).then_some(prev),
            n => self.nodes[n as usize].prev = prev,
        }
    }

    /// Adds `key` at the back, or moves it there if present.
    pub fn push_back(&mut self, key: &Key) {
        if self.touch(key) {
            return;
        }
        let i = u32::try_from(self.nodes.len()).expect("fewer than 2^32 keys");
        self.nodes.push(Node {
            key: key.clone(),
            prev: NIL,
            next: NIL,
        });
        self.link_back(i);
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.index.insert_unique(hasher.hash_one(key), i, |&j| {
            hasher.hash_one(&nodes[j as usize].key)
        });
    }

    /// Moves `key` to the back; whether it is here.
    pub fn touch(&mut self, key: &Key) -> bool {
        let Some(i) = self.find(key) else {
            return false;
        };
        if self.tail != Some(i) {
            self.unlink(i);
            self.link_back(i);
        }
        true
    }

    /// Takes `key` out; whether it was here.
    pub fn remove(&mut self, key: &Key) -> bool {
        let Some(i) = self.find(key) else {
            return false;
        };
        self.take(i);
        true
    }

    /// Takes the front key out.
    pub fn pop_front(&mut self) -> Option<Key> {
        let i = self.head?;
        Some(self.take(i))
    }

    /// Removes node `i`; the last node moves into its place.
    fn take(&mut self, i: u32) -> Key {
        self.unlink(i);
        let hash = self.hasher.hash_one(&self.nodes[i as usize].key);
        if let Ok(e) = self.index.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        let last = (self.nodes.len() - 1) as u32;
        let node = self.nodes.swap_remove(i as usize);
        if i != last {
            // The node that was last is now at `i`: its neighbours and its table entry
            // follow it.
            let (prev, next) = (self.nodes[i as usize].prev, self.nodes[i as usize].next);
            match prev {
                NIL => self.head = Some(i),
                p => self.nodes[p as usize].next = i,
            }
            match next {
                NIL => self.tail = Some(i),
                n => self.nodes[n as usize].prev = i,
            }
            let moved = self.hasher.hash_one(&self.nodes[i as usize].key);
            if let Some(slot) = self.index.find_mut(moved, |&j| j == last) {
                *slot = i;
            }
        }
        node.key
    }

    /// Keys from the front to the back.
    pub fn iter(&self) -> impl Iterator<Item = &Key> + '_ {
        let mut at = self.head;
        std::iter::from_fn(move || {
            let n = &self.nodes[at? as usize];
            at = (n.next != NIL).then_some(n.next);
            Some(&n.key)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Random pushes, touches, removals and pops agree with a plain deque.
    #[test]
    fn behaves_as_an_ordered_set() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut list = KeyList::default();
        let mut model: VecDeque<Key> = VecDeque::new();
        for _ in 0..20_000 {
            let k = Key::new(format!("k{}", rng.random_range(0..300))).unwrap();
            match rng.random_range(0..10) {
                0..4 => {
                    list.push_back(&k);
                    model.retain(|m| *m != k);
                    model.push_back(k);
                }
                4..6 => {
                    let here = model.iter().position(|m| *m == k);
                    assert_eq!(list.touch(&k), here.is_some());
                    if let Some(p) = here {
                        let k = model.remove(p).unwrap();
                        model.push_back(k);
                    }
                }
                6..9 => {
                    let here = model.iter().position(|m| *m == k);
                    assert_eq!(list.remove(&k), here.is_some());
                    if let Some(p) = here {
                        model.remove(p);
                    }
                }
                _ => assert_eq!(list.pop_front(), model.pop_front()),
            }
            assert_eq!(list.len(), model.len());
        }
        assert!(list.iter().eq(model.iter()));
        while let Some(k) = list.pop_front() {
            assert_eq!(Some(k), model.pop_front());
        }
        assert_eq!(list.iter().count(), 0);
    }
}
