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
//! every replica of the meta state.

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
}

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
            free_pages: 0,
            by_offset: BTreeMap::new(),
            by_size: BTreeSet::new(),
            cache: FxHashMap::default(),
            cached_pages: 0,
        };
        if total_pages > 0 {
            a.insert_extent(0, total_pages);
            a.free_pages = total_pages;
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

    /// Whether `alloc(bytes)` can succeed right now.
    pub fn can_alloc(&self, bytes: u64) -> bool {
        let pages = pages_for(bytes);
        if self.cache.get(&pages).is_some_and(|v| !v.is_empty()) {
            return true;
        }
        if self.largest_extent() >= pages {
            return true;
        }
        // Folding the cache back may coalesce a large enough extent; only trying tells.
        self.cached_pages > 0 && self.free_pages >= pages && {
            let mut probe = self.clone();
            probe.flush_cache();
            probe.largest_extent() >= pages
        }
    }

    /// Allocates `bytes` (rounded up to whole pages); returns the byte offset.
    pub fn alloc(&mut self, bytes: u64) -> Option<u64> {
        let pages = pages_for(bytes);
        if pages > self.free_pages {
            return None;
        }
        if let Some(start) = self.cache.get_mut(&pages).and_then(Vec::pop) {
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

    /// Frees a block returned by `alloc(bytes)`.
    pub fn free(&mut self, offset: u64, bytes: u64) {
        let pages = pages_for(bytes);
        debug_assert_eq!(offset % PAGE_SIZE, 0);
        debug_assert!(offset / PAGE_SIZE + pages <= self.total_pages);
        self.cache
            .entry(pages)
            .or_default()
            .push(offset / PAGE_SIZE);
        self.cached_pages += pages;
        self.free_pages += pages;
    }

    /// Length in pages of the largest coalesced free extent.
    fn largest_extent(&self) -> u64 {
        self.by_size.last().map_or(0, |&(len, _)| len)
    }

    fn take_best_fit(&mut self, pages: u64) -> Option<u64> {
        let &(len, start) = self.by_size.range((pages, 0)..).next()?;
        self.by_size.remove(&(len, start));
        self.by_offset.remove(&start);
        if len > pages {
            self.by_offset.insert(start + pages, len - pages);
            self.by_size.insert((len - pages, start + pages));
        }
        Some(start)
    }

    /// Returns every cached block to the extent trees, merging neighbours. The result
    /// does not depend on the order blocks are returned in.
    fn flush_cache(&mut self) {
        let mut blocks: Vec<(u64, u64)> = self
            .cache
            .drain()
            .flat_map(|(len, starts)| starts.into_iter().map(move |s| (s, len)))
            .collect();
        blocks.sort_unstable();
        for (start, len) in blocks {
            self.insert_extent(start, len);
        }
        self.cached_pages = 0;
    }

    fn insert_extent(&mut self, mut start: u64, mut len: u64) {
        if let Some((&prev_start, &prev_len)) = self.by_offset.range(..start).next_back() {
            debug_assert!(prev_start + prev_len <= start, "double free");
            if prev_start + prev_len == start {
                self.by_offset.remove(&prev_start);
                self.by_size.remove(&(prev_len, prev_start));
                start = prev_start;
                len += prev_len;
            }
        }
        if let Some(next_len) = self.by_offset.remove(&(start + len)) {
            self.by_size.remove(&(next_len, start + len));
            len += next_len;
        }
        self.by_offset.insert(start, len);
        self.by_size.insert((len, start));
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
        assert!(!a.can_alloc(1));
        for b in blocks {
            a.free(b, PAGE_SIZE);
        }
        // Every block sits in the exact-size cache; a larger request must coalesce them.
        assert!(a.can_alloc(16 * PAGE_SIZE));
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
                    let could = a.can_alloc(bytes);
                    match a.alloc(bytes) {
                        Some(off) => {
                            prop_assert!(could);
                            let end = off + pages * PAGE_SIZE;
                            prop_assert!(end <= total);
                            for &(o, l) in &live {
                                prop_assert!(end <= o || o + l <= off, "overlap");
                            }
                            live.push((off, pages * PAGE_SIZE));
                        }
                        None => prop_assert!(!could),
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
}
