//! Page allocator of one segment.
//!
//! KV-cache traffic is dominated by many blocks of a few sizes, allocated and freed all
//! the time. Freed blocks therefore first go to an exact-size cache, so the common
//! alloc + free pair is two hash lookups and a `Vec` push/pop. Everything else is a
//! best-fit search over coalesced free extents kept in two B-trees (by size and by
//! offset), O(log n). When the extents cannot serve a request, the cache is folded back
//! into them (coalescing neighbours) and the request retried, so cached blocks never
//! cause a spurious "out of memory".
//!
//! The allocator is deterministic: the same sequence of calls gives the same offsets on
//! every replica of the meta state. A *trial* lets the leader try a plan on the real
//! allocator and then undo it exactly, so that what it plans is what `apply` will do.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use memcache_core::PAGE_SIZE;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageAllocator {
    total_pages: u64,
    free_pages: u64,
    /// Coalesced free extents: start page → length in pages.
    by_offset: BTreeMap<u64, u64>,
    /// The same extents ordered by (length, start) for best fit.
    by_size: BTreeSet<(u64, u64)>,
    /// Freed blocks not yet coalesced: length in pages → start pages (LIFO).
    cache: FxHashMap<u64, Vec<u64>>,
    cached_pages: u64,
    /// While a trial runs: how to undo each change, oldest first.
    #[serde(skip)]
    trial: Option<Trial>,
}

#[derive(Debug, Clone)]
struct Trial {
    undo: Vec<Undo>,
    free_pages: u64,
    cached_pages: u64,
}

#[derive(Debug, Clone)]
enum Undo {
    ExtentAdded(u64, u64),
    ExtentTaken(u64, u64),
    CachePopped(u64, u64),
    CachePushed(u64),
    CacheDrained(Vec<(u64, Vec<u64>)>),
}

/// A point inside a trial to roll back to.
#[derive(Debug, Clone, Copy)]
pub struct Savepoint {
    undo_len: usize,
    free_pages: u64,
    cached_pages: u64,
}

/// Counters, extents and non-empty cache lists, sorted.
#[cfg(test)]
type LogicalState = (u64, u64, Vec<(u64, u64)>, Vec<(u64, Vec<u64>)>);

/// Pages needed for `bytes` (at least one).
pub fn pages_for(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE_SIZE).max(1)
}

impl PageAllocator {
    /// An allocator over `capacity` bytes; a trailing partial page is not used.
    pub fn new(capacity: u64) -> Self {
        let total_pages = capacity / PAGE_SIZE;
        let mut a = PageAllocator {
            total_pages,
            free_pages: total_pages,
            by_offset: BTreeMap::new(),
            by_size: BTreeSet::new(),
            cache: FxHashMap::default(),
            cached_pages: 0,
            trial: None,
        };
        if total_pages > 0 {
            a.add_extent(0, total_pages);
        }
        a
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.total_pages * PAGE_SIZE
    }

    pub fn free_bytes(&self) -> u64 {
        self.free_pages * PAGE_SIZE
    }

    pub fn used_bytes(&self) -> u64 {
        (self.total_pages - self.free_pages) * PAGE_SIZE
    }

    /// Allocates `bytes` (rounded up to whole pages); returns the byte offset.
    pub fn alloc(&mut self, bytes: u64) -> Option<u64> {
        let pages = pages_for(bytes);
        if pages > self.free_pages {
            return None;
        }
        if let Some(start) = self.cache.get_mut(&pages).and_then(Vec::pop) {
            self.log(Undo::CachePopped(pages, start));
            self.cached_pages -= pages;
            self.free_pages -= pages;
            return Some(start * PAGE_SIZE);
        }
        let start = match self.take_best_fit(pages) {
            Some(s) => s,
            None if self.cached_pages > 0 => {
                self.flush_cache();
                self.take_best_fit(pages)?
            }
            None => return None,
        };
        self.free_pages -= pages;
        Some(start * PAGE_SIZE)
    }

    /// Whether `alloc(bytes)` would succeed without folding the cache back into the
    /// extents first (a fold changes the offsets of later allocations).
    pub fn fits_unfolded(&self, bytes: u64) -> bool {
        let pages = pages_for(bytes);
        pages <= self.free_pages
            && (self.cache.get(&pages).is_some_and(|c| !c.is_empty())
                || self.by_size.range((pages, 0)..).next().is_some())
    }

    /// Frees a block returned by `alloc(bytes)`.
    pub fn free(&mut self, offset: u64, bytes: u64) {
        let pages = pages_for(bytes);
        debug_assert_eq!(offset % PAGE_SIZE, 0);
        debug_assert!(offset / PAGE_SIZE + pages <= self.total_pages);
        self.cache
            .entry(pages)
            .or_default()
            .push(offset / PAGE_SIZE);
        self.log(Undo::CachePushed(pages));
        self.cached_pages += pages;
        self.free_pages += pages;
    }

    /// Starts recording changes so that `end_trial` can undo them all.
    pub fn begin_trial(&mut self) {
        debug_assert!(self.trial.is_none(), "nested trial");
        self.trial = Some(Trial {
            undo: Vec::new(),
            free_pages: self.free_pages,
            cached_pages: self.cached_pages,
        });
    }

    pub fn in_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// The current point of the running trial.
    pub fn savepoint(&self) -> Savepoint {
        let undo_len = self.trial.as_ref().map_or(0, |t| t.undo.len());
        Savepoint {
            undo_len,
            free_pages: self.free_pages,
            cached_pages: self.cached_pages,
        }
    }

    /// Undoes every change since `sp`, leaving the allocator exactly as it was then.
    pub fn rollback_to(&mut self, sp: Savepoint) {
        let Some(mut trial) = self.trial.take() else {
            return;
        };
        while trial.undo.len() > sp.undo_len {
            match trial.undo.pop().expect("length checked") {
                Undo::ExtentAdded(start, len) => self.remove_extent(start, len),
                Undo::ExtentTaken(start, len) => self.add_extent(start, len),
                Undo::CachePopped(pages, start) => self.cache.entry(pages).or_default().push(start),
                Undo::CachePushed(pages) => {
                    self.cache.get_mut(&pages).and_then(Vec::pop);
                }
                Undo::CacheDrained(entries) => self.cache.extend(entries),
            }
        }
        self.free_pages = sp.free_pages;
        self.cached_pages = sp.cached_pages;
        self.trial = Some(trial);
    }

    /// Undoes the whole trial and stops recording.
    pub fn end_trial(&mut self) {
        if let Some(t) = &self.trial {
            let sp = Savepoint {
                undo_len: 0,
                free_pages: t.free_pages,
                cached_pages: t.cached_pages,
            };
            self.rollback_to(sp);
            self.trial = None;
        }
    }

    fn log(&mut self, u: Undo) {
        if let Some(t) = &mut self.trial {
            t.undo.push(u);
        }
    }

    fn take_best_fit(&mut self, pages: u64) -> Option<u64> {
        let &(len, start) = self.by_size.range((pages, 0)..).next()?;
        self.take_extent(start, len);
        if len > pages {
            self.put_extent(start + pages, len - pages);
        }
        Some(start)
    }

    /// Returns every cached block to the extent trees, merging neighbours. The result
    /// does not depend on the order blocks are returned in.
    fn flush_cache(&mut self) {
        let drained: Vec<(u64, Vec<u64>)> = self.cache.drain().collect();
        let mut blocks: Vec<(u64, u64)> = drained
            .iter()
            .flat_map(|(len, starts)| starts.iter().map(move |&s| (s, *len)))
            .collect();
        if self.trial.is_some() {
            self.log(Undo::CacheDrained(drained));
        }
        blocks.sort_unstable();
        for (start, len) in blocks {
            self.insert_extent(start, len);
        }
        self.cached_pages = 0;
    }

    /// Adds a free extent, merging it with free neighbours.
    fn insert_extent(&mut self, mut start: u64, mut len: u64) {
        if let Some((&prev_start, &prev_len)) = self.by_offset.range(..start).next_back() {
            debug_assert!(prev_start + prev_len <= start, "double free");
            if prev_start + prev_len == start {
                self.take_extent(prev_start, prev_len);
                start = prev_start;
                len += prev_len;
            }
        }
        if let Some(&next_len) = self.by_offset.get(&(start + len)) {
            self.take_extent(start + len, next_len);
            len += next_len;
        }
        self.put_extent(start, len);
    }

    /// Logged extent changes: every edit of the trees goes through these two.
    fn put_extent(&mut self, start: u64, len: u64) {
        self.add_extent(start, len);
        self.log(Undo::ExtentAdded(start, len));
    }

    fn take_extent(&mut self, start: u64, len: u64) {
        self.remove_extent(start, len);
        self.log(Undo::ExtentTaken(start, len));
    }

    fn add_extent(&mut self, start: u64, len: u64) {
        self.by_offset.insert(start, len);
        self.by_size.insert((len, start));
    }

    fn remove_extent(&mut self, start: u64, len: u64) {
        self.by_offset.remove(&start);
        self.by_size.remove(&(len, start));
    }

    /// Everything that decides future offsets, for comparing allocators in tests.
    #[cfg(test)]
    fn logical_state(&self) -> LogicalState {
        let mut cache: Vec<(u64, Vec<u64>)> = self
            .cache
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        cache.sort();
        (
            self.free_pages,
            self.cached_pages,
            self.by_offset.iter().map(|(a, b)| (*a, *b)).collect(),
            cache,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    const MIB: u64 = 1 << 20;

    #[test]
    fn offsets_are_page_aligned_and_disjoint() {
        let mut a = PageAllocator::new(64 * MIB);
        let x = a.alloc(1).unwrap();
        let y = a.alloc(PAGE_SIZE + 1).unwrap();
        let z = a.alloc(3 * PAGE_SIZE).unwrap();
        for o in [x, y, z] {
            assert_eq!(o % PAGE_SIZE, 0);
        }
        assert!(x + PAGE_SIZE <= y && y + 2 * PAGE_SIZE <= z);
        assert_eq!(a.used_bytes(), 6 * PAGE_SIZE);
    }

    #[test]
    fn full_pool_is_reported_and_recovers_after_free() {
        let mut a = PageAllocator::new(16 * PAGE_SIZE);
        let blocks: Vec<u64> = (0..16).map(|_| a.alloc(PAGE_SIZE).unwrap()).collect();
        assert_eq!(a.alloc(1), None);
        for b in blocks {
            a.free(b, PAGE_SIZE);
        }
        // Every block sits in the exact-size cache; a larger request must coalesce them.
        assert_eq!(a.alloc(16 * PAGE_SIZE), Some(0));
    }

    #[test]
    fn equal_size_churn_reuses_blocks_without_growing() {
        let block = 8784 * 1024;
        let mut a = PageAllocator::new(1024 * MIB);
        let live: Vec<u64> = (0..100).map(|_| a.alloc(block).unwrap()).collect();
        let high_water = live.iter().max().copied().unwrap();
        let mut live = live;
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..10_000 {
            let i = rng.random_range(0..live.len());
            a.free(live[i], block);
            live[i] = a.alloc(block).unwrap();
            assert!(live[i] <= high_water);
        }
    }

    proptest! {
        /// Random alloc/free sequences never hand out overlapping ranges, keep the
        /// counters exact, and end with one extent covering the whole segment.
        #[test]
        fn never_overlaps(ops in proptest::collection::vec((0u8..3, 1u64..40), 1..400)) {
            let total = 256 * PAGE_SIZE;
            let mut a = PageAllocator::new(total);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (op, pages) in ops {
                if op < 2 {
                    let bytes = pages * PAGE_SIZE - 17;
                    match a.alloc(bytes) {
                        Some(off) => {
                            let end = off + pages * PAGE_SIZE;
                            prop_assert!(end <= total);
                            for &(o, l) in &live {
                                prop_assert!(end <= o || o + l <= off, "overlap");
                            }
                            live.push((off, pages * PAGE_SIZE));
                        }
                        // A refusal means no run of free pages is long enough, even
                        // after folding the cache back.
                        None => prop_assert!(
                            pages > a.free_pages
                                || (a.cached_pages == 0
                                    && a.by_size.last().map_or(0, |e| e.0) < pages)
                        ),
                    }
                } else if !live.is_empty() {
                    let (o, l) = live.swap_remove((pages as usize) % live.len());
                    a.free(o, l);
                }
                let used: u64 = live.iter().map(|&(_, l)| l).sum();
                prop_assert_eq!(a.used_bytes(), used);
            }
            for (o, l) in live.drain(..) {
                a.free(o, l);
            }
            prop_assert_eq!(a.alloc(total), Some(0));
        }
    }

    proptest! {
        /// A trial of any alloc/free sequence, rolled back, leaves the allocator exactly
        /// as it was; and the same sequence replayed outside a trial gives the offsets
        /// the trial saw.
        #[test]
        fn trials_roll_back_exactly(
            setup in proptest::collection::vec((any::<bool>(), 1u64..30), 0..200),
            trial in proptest::collection::vec((any::<bool>(), 1u64..30), 1..100),
        ) {
            let mut a = PageAllocator::new(512 * PAGE_SIZE);
            let mut live = Vec::new();
            let run = |a: &mut PageAllocator, live: &mut Vec<(u64, u64)>, ops: &[(bool, u64)]| {
                let mut seen = Vec::new();
                for &(is_alloc, n) in ops {
                    if is_alloc || live.is_empty() {
                        let got = a.alloc(n * PAGE_SIZE);
                        if let Some(o) = got {
                            live.push((o, n * PAGE_SIZE));
                        }
                        seen.push(got);
                    } else {
                        let (o, l) = live.swap_remove(n as usize % live.len());
                        a.free(o, l);
                    }
                }
                seen
            };
            run(&mut a, &mut live, &setup);
            let before = a.logical_state();
            let mut trial_live = live.clone();
            a.begin_trial();
            let in_trial = run(&mut a, &mut trial_live, &trial);
            a.end_trial();
            prop_assert_eq!(a.logical_state(), before);
            let replayed = run(&mut a, &mut live, &trial);
            prop_assert_eq!(in_trial, replayed);
        }
    }
}
