//! Eviction policies: which committed object goes first when a medium passes its high
//! watermark. The state machine only asks for an order; the leader skips leased objects.

use std::collections::{BTreeSet, VecDeque};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use memcache_core::Key;

mod keylist;
use keylist::KeyList;

/// Orders the committed objects from the first to evict to the last.
pub trait EvictionPolicy: Send + Sync {
    fn name(&self) -> &'static str;
    /// A key was committed.
    fn insert(&mut self, key: &Key);
    /// A key was read.
    fn touch(&mut self, key: &Key);
    /// A key left the directory.
    fn remove(&mut self, key: &Key);
    /// A key's object was replaced by a new one in one commit: by default, as if the
    /// old one left and the new one came.
    fn replace(&mut self, key: &Key) {
        self.remove(key);
        self.insert(key);
    }
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
    /// Least frequently read first (reads counted up to 15), the older of equals first.
    Lfu,
    /// S3-FIFO: new objects wait in a small FIFO and leave first unless read again;
    /// objects read there, or coming back soon after leaving, live in the main FIFO.
    #[serde(alias = "s3-fifo")]
    S3fifo,
    /// Segmented LRU: objects read at least once after their write are protected (80 %
    /// of the objects at most) and leave only after every unprotected one.
    Hybrid,
}

impl PolicyKind {
    /// Every policy, the default first.
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::Lru,
        PolicyKind::Fifo,
        PolicyKind::Lfu,
        PolicyKind::S3fifo,
        PolicyKind::Hybrid,
    ];

    pub fn build(self) -> Box<dyn EvictionPolicy> {
        match self {
            PolicyKind::Lru | PolicyKind::Fifo => Box::new(RecencyList {
                order: KeyList::default(),
                reads_count: self == PolicyKind::Lru,
            }),
            PolicyKind::Lfu => Box::<Lfu>::default(),
            PolicyKind::S3fifo => Box::<S3Fifo>::default(),
            PolicyKind::Hybrid => Box::new(Segmented {
                probation: KeyList::default(),
                protected: KeyList::default(),
            }),
        }
    }
}

/// LRU and FIFO differ only in whether a read moves a key to the hot end (the back).
struct RecencyList {
    order: KeyList,
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
        self.order.push_back(key);
    }

    fn touch(&mut self, key: &Key) {
        if self.reads_count {
            self.order.touch(key);
        }
    }

    fn remove(&mut self, key: &Key) {
        self.order.remove(key);
    }

    /// Leaving and coming back is a move to the back: done in place, without taking
    /// the node out of the list and its table.
    fn replace(&mut self, key: &Key) {
        self.order.push_back(key);
    }

    fn coldest(&self) -> Box<dyn Iterator<Item = &Key> + '_> {
        Box::new(self.order.iter())
    }
}

/// Reads counted per key, capped so an object once hot can still age out.
const MAX_COUNT: u8 = 15;

/// Bits of an LFU rank below its read count: the order of the last change.
const TICK_BITS: u32 = 56;

#[derive(Default)]
struct Lfu {
    /// (rank, key), the coldest first. A rank is the reads above the order of the
    /// last change, in one word: the directory holds one per object.
    order: BTreeSet<(u64, Key)>,
    keys: FxHashMap<Key, u64>,
    tick: u64,
}

impl Lfu {
    fn set(&mut self, key: &Key, count: u8) {
        // 2^56 changes would take millennia at a million a second.
        self.tick = (self.tick + 1) & ((1 << TICK_BITS) - 1);
        let rank = (u64::from(count) << TICK_BITS) | self.tick;
        if let Some(old) = self.keys.insert(key.clone(), rank) {
            self.order.remove(&(old, key.clone()));
        }
        self.order.insert((rank, key.clone()));
    }
}

impl EvictionPolicy for Lfu {
    fn name(&self) -> &'static str {
        "lfu"
    }

    fn insert(&mut self, key: &Key) {
        self.set(key, 0);
    }

    fn touch(&mut self, key: &Key) {
        if let Some(&rank) = self.keys.get(key) {
            let c = (rank >> TICK_BITS) as u8;
            self.set(key, (c + 1).min(MAX_COUNT));
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(rank) = self.keys.remove(key) {
            self.order.remove(&(rank, key.clone()));
        }
    }

    fn coldest(&self) -> Box<dyn Iterator<Item = &Key> + '_> {
        Box::new(self.order.iter().map(|(_, k)| k))
    }
}

/// S3-FIFO (Yang et al., SOSP 2023) as an order: the state machine asks for victims
/// without evicting through the policy, so the queues' moves happen on insert and
/// the order lists what S3-FIFO would evict first.
#[derive(Default)]
struct S3Fifo {
    /// Entries carry the generation of their insert: entries of removed (or removed
    /// and inserted again) keys are stale and skipped, dropped at the front, and swept
    /// out when they outnumber the current ones (see [`S3Fifo::sweep`]).
    small: VecDeque<(Key, u64)>,
    main: VecDeque<(Key, u64)>,
    /// Where each live key is, how often it was read, its generation.
    live: FxHashMap<Key, Place>,
    /// Live keys whose place is the small queue (the others are in main).
    in_small: usize,
    generation: u64,
    /// Keys that left the small queue unread, recently: back soon, they go to main.
    /// Each remembers the generation of its entry in `ghost_order`, so an old entry
    /// of a key that left again later does not forget it.
    ghost: FxHashMap<Key, u64>,
    ghost_order: VecDeque<(Key, u64)>,
}

/// A queue is swept when it holds more than twice its live keys and this many more.
const STALE_SLACK: usize = 64;

/// Where a live key is, in one word (the directory holds one per object): its
/// generation above a bit for the main queue above two bits of reads (capped at 3).
#[derive(Clone, Copy)]
struct Place(u64);

impl Place {
    fn new(generation: u64, in_main: bool) -> Place {
        Place(generation << 3 | u64::from(in_main) << 2)
    }
    fn generation(self) -> u64 {
        self.0 >> 3
    }
    fn in_main(self) -> bool {
        self.0 & 4 != 0
    }
    fn reads(self) -> u8 {
        (self.0 & 3) as u8
    }
    fn read(&mut self) {
        if self.reads() < 3 {
            self.0 += 1;
        }
    }
}

impl S3Fifo {
    /// The reads of a queue entry that is current.
    fn current(&self, entry: &(Key, u64), in_main: bool) -> Option<u8> {
        self.live
            .get(&entry.0)
            .filter(|p| p.in_main() == in_main && p.generation() == entry.1)
            .map(|p| p.reads())
    }

    fn push(&mut self, key: &Key, in_main: bool) {
        self.generation += 1;
        // 2^61 pushes would take millennia at a million a second.
        let place = Place::new(self.generation, in_main);
        if let Some(old) = self.live.insert(key.clone(), place) {
            self.in_small -= !old.in_main() as usize;
        }
        self.in_small += !in_main as usize;
        let q = if in_main {
            &mut self.main
        } else {
            &mut self.small
        };
        q.push_back((key.clone(), self.generation));
    }

    /// Moves read keys from the front of the small queue to the main queue while the
    /// small queue holds more than a tenth of the objects, and drops stale entries
    /// at the fronts.
    fn rebalance(&mut self) {
        loop {
            while self
                .main
                .front()
                .is_some_and(|e| self.current(e, true).is_none())
            {
                self.main.pop_front();
            }
            while self
                .small
                .front()
                .is_some_and(|e| self.current(e, false).is_none())
            {
                self.small.pop_front();
            }
            let over = self.small.len() * 10 > self.live.len().max(10);
            match self.small.front() {
                Some(e) if over && self.current(e, false).is_some_and(|r| r > 0) => {
                    let (k, _) = self.small.pop_front().expect("a front entry");
                    self.push(&k, true);
                }
                // Unread at the front: it is the first to go.
                _ => break,
            }
        }
        self.sweep();
    }

    /// Drops the stale entries of a queue once they outnumber its live keys (plus some
    /// slack): a key that stays at the front (never read, never removed) would
    /// otherwise keep every stale entry behind it forever. Each sweep is paid for by
    /// the removals that made the entries stale, so the cost per change stays O(1).
    fn sweep(&mut self) {
        let in_main = self.live.len() - self.in_small;
        for (q, live_here, main) in [
            (&mut self.small, self.in_small, false),
            (&mut self.main, in_main, true),
        ] {
            if q.len() > 2 * live_here + STALE_SLACK {
                let live = &self.live;
                q.retain(|(k, g)| {
                    live.get(k)
                        .is_some_and(|p| p.in_main() == main && p.generation() == *g)
                });
            }
        }
    }

    /// Forgets the oldest ghosts beyond about as many keys as there are objects.
    fn trim_ghosts(&mut self) {
        while self.ghost_order.len() > self.live.len().max(16) {
            if let Some((old, g)) = self.ghost_order.pop_front() {
                if self.ghost.get(&old) == Some(&g) {
                    self.ghost.remove(&old);
                }
            }
        }
    }
}

impl EvictionPolicy for S3Fifo {
    fn name(&self) -> &'static str {
        "s3fifo"
    }

    fn insert(&mut self, key: &Key) {
        let to_main = self.ghost.remove(key).is_some();
        self.push(key, to_main);
        self.rebalance();
    }

    fn touch(&mut self, key: &Key) {
        if let Some(p) = self.live.get_mut(key) {
            p.read();
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(p) = self.live.remove(key) {
            self.in_small -= !p.in_main() as usize;
            if !p.in_main() && p.reads() == 0 {
                self.ghost.insert(key.clone(), p.generation());
                self.ghost_order.push_back((key.clone(), p.generation()));
            }
        }
        self.trim_ghosts();
        self.rebalance();
    }

    fn coldest(&self) -> Box<dyn Iterator<Item = &Key> + '_> {
        let pick = |in_main: bool, read: bool| {
            let q = if in_main { &self.main } else { &self.small };
            q.iter()
                .filter(move |e| self.current(e, in_main).is_some_and(|r| (r > 0) == read))
                .map(|(k, _)| k)
        };
        Box::new(
            pick(false, false)
                .chain(pick(true, false))
                .chain(pick(false, true))
                .chain(pick(true, true)),
        )
    }
}

/// Segmented LRU: recency within two segments, frequency (read again or not) between.
struct Segmented {
    probation: KeyList,
    protected: KeyList,
}

impl EvictionPolicy for Segmented {
    fn name(&self) -> &'static str {
        "hybrid"
    }

    fn insert(&mut self, key: &Key) {
        self.protected.remove(key);
        self.probation.push_back(key);
    }

    fn touch(&mut self, key: &Key) {
        if self.protected.touch(key) {
            return;
        }
        if self.probation.remove(key) {
            self.protected.push_back(key);
            let total = self.protected.len() + self.probation.len();
            // The protected segment keeps at most 80 % of the objects; its least
            // recent one goes back on probation, as the most recent there.
            while self.protected.len() * 5 > total * 4 {
                match self.protected.pop_front() {
                    Some(k) => self.probation.push_back(&k),
                    None => break,
                };
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        self.probation.remove(key);
        self.protected.remove(key);
    }

    fn coldest(&self) -> Box<dyn Iterator<Item = &Key> + '_> {
        Box::new(self.probation.iter().chain(self.protected.iter()))
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

    fn build(kind: PolicyKind, ks: &[&str]) -> Box<dyn EvictionPolicy> {
        let mut p = kind.build();
        for k in ks {
            p.insert(&Key::new(*k).unwrap());
        }
        p
    }

    fn touch(p: &mut Box<dyn EvictionPolicy>, k: &str, times: usize) {
        for _ in 0..times {
            p.touch(&Key::new(k).unwrap());
        }
    }

    #[test]
    fn lfu_evicts_the_least_read_and_the_older_of_equals() {
        let mut p = build(PolicyKind::Lfu, &["a", "b", "c", "d"]);
        touch(&mut p, "a", 3);
        touch(&mut p, "b", 1);
        touch(&mut p, "d", 1);
        assert_eq!(keys(p.as_ref()), ["c", "b", "d", "a"]);
        p.remove(&Key::new("b").unwrap());
        // Capped counts let an object read long ago fall behind newer hot ones.
        touch(&mut p, "d", 100);
        touch(&mut p, "a", 100);
        assert_eq!(keys(p.as_ref()), ["c", "d", "a"]);
    }

    #[test]
    fn s3fifo_lets_unread_newcomers_go_first_and_remembers_them() {
        let names: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut p = build(PolicyKind::S3fifo, &refs);
        // Read once while new: these move to the main queue and stay longest.
        touch(&mut p, "k0", 1);
        touch(&mut p, "k1", 1);
        let order = keys(p.as_ref());
        assert_eq!(order.len(), 20);
        assert_eq!(&order[18..], ["k0", "k1"]);
        // An unread newcomer leaves first; coming back soon, it goes to main.
        let first = order[0].clone();
        p.remove(&Key::new(first.as_str()).unwrap());
        p.insert(&Key::new(first.as_str()).unwrap());
        let again = keys(p.as_ref());
        assert_eq!(again.len(), 20);
        assert_ne!(again[0], first);
    }

    /// Keys that never leave stay at the fronts of both queues (one never read, one
    /// read), while a million others come and go behind them, half of them read: the
    /// queues and the ghost stay near the live keys' count, and the order stays exact.
    #[test]
    fn s3fifo_queues_and_ghost_stay_bounded_under_churn() {
        let mut p = S3Fifo::default();
        let k = |i: usize| Key::new(format!("k{i}")).unwrap();
        let (cold, hot) = (Key::new("cold").unwrap(), Key::new("hot").unwrap());
        p.insert(&cold);
        p.insert(&hot);
        p.touch(&hot);
        const LIVE: usize = 100;
        let mut most = (0, 0);
        for i in 0..200_000 {
            p.insert(&k(i));
            if i % 2 == 0 {
                p.touch(&k(i));
            }
            if i >= LIVE {
                p.remove(&k(i - LIVE));
            }
            let live = p.live.len();
            assert_eq!(live, (i + 1).min(LIVE) + 2);
            most.0 = most.0.max(p.small.len() + p.main.len());
            most.1 = most.1.max(p.ghost_order.len());
            assert!(p.ghost.len() <= p.ghost_order.len());
        }
        let bound = 2 * (LIVE + 2) + 2 * STALE_SLACK;
        assert!(most.0 <= bound, "queues held {} entries", most.0);
        assert!(most.1 <= LIVE + 2, "the ghost held {} keys", most.1);
        let order = keys(&p);
        assert_eq!(order.len(), LIVE + 2);
        assert_eq!(order[0], "cold");
        assert!(order.contains(&"hot".to_string()));
    }

    #[test]
    fn hybrid_protects_objects_read_again() {
        let mut p = build(PolicyKind::Hybrid, &["a", "b", "c", "d", "e"]);
        touch(&mut p, "a", 1);
        touch(&mut p, "c", 1);
        assert_eq!(keys(p.as_ref()), ["b", "d", "e", "a", "c"]);
        // A write of a protected key puts it back on probation.
        p.insert(&Key::new("a").unwrap());
        assert_eq!(keys(p.as_ref()), ["b", "d", "e", "a", "c"]);
        touch(&mut p, "b", 1);
        touch(&mut p, "d", 1);
        touch(&mut p, "e", 1);
        // At most 80 % protected: the least recently protected goes back.
        assert_eq!(keys(p.as_ref())[0], "a");
        assert_eq!(p.name(), "hybrid");
    }

    #[test]
    fn every_policy_orders_each_live_key_once() {
        for kind in PolicyKind::ALL {
            let mut p = kind.build();
            let mut live = std::collections::BTreeSet::new();
            for i in 0..500u32 {
                let k = format!("k{}", i % 97);
                let key = Key::new(k.as_str()).unwrap();
                match i % 5 {
                    0..=2 => {
                        p.touch(&key);
                        p.remove(&key);
                        p.insert(&key);
                        live.insert(k);
                    }
                    3 => p.touch(&key),
                    _ => {
                        p.remove(&key);
                        live.remove(&k);
                    }
                }
            }
            let mut order = keys(p.as_ref());
            order.sort();
            let live: Vec<String> = live.into_iter().collect();
            assert_eq!(order, live, "{}", p.name());
        }
    }
}
