//! Chooses the segments and victims of one `Alloc` command.
//!
//! The planner works on the real allocators inside allocator trials: every allocation
//! and every victim's free it decides on is performed, in exactly the order `apply`
//! will perform them, and undone when the plan is finished. So the plan can only
//! succeed where `apply` succeeds; fragmentation cannot make them disagree.

use rustc_hash::FxHashSet;
use smallvec::SmallVec;

use memcache_core::{
    Error, Key, LocalServiceId, Medium, ReplicateConfig, Result, SegmentId, PAGE_SIZE,
};
use memcache_proto::Allocation;

use super::leases::Leases;
use super::MAX_OBJECT_BYTES;
use crate::alloc::{pages_for, PageAllocator, Savepoint};
use crate::state::{expired_in, AllocItem, PlanView, Segment};

/// What a plan replays of an `Alloc` command still in the log (see [`Planner::after`]):
/// its items' keys, sizes, segments and victims, without the rest of the command.
pub(crate) struct InFlight {
    now_ms: u64,
    items: Vec<InFlightItem>,
    drop_after: Vec<Key>,
}

struct InFlightItem {
    key: Key,
    size: u64,
    segments: SmallVec<[SegmentId; 2]>,
    drop_first: Vec<Key>,
}

impl InFlight {
    pub fn new(now_ms: u64, items: &[AllocItem], drop_after: &[Key]) -> InFlight {
        let items = items
            .iter()
            .map(|i| InFlightItem {
                key: i.key.clone(),
                size: i.size,
                segments: SmallVec::from_slice(&i.segments),
                drop_first: i.drop_first.clone(),
            })
            .collect();
        InFlight {
            now_ms,
            items,
            drop_after: drop_after.to_vec(),
        }
    }
}

pub(crate) struct Planner<'a> {
    view: PlanView<'a>,
    leases: &'a Leases,
    now_ms: u64,
    /// Segments whose allocator is in a trial.
    touched: Vec<SegmentId>,
    /// Keys allocated by this plan (a second put of one answers -3006).
    planned: FxHashSet<Key>,
    dropped: FxHashSet<Key>,
    /// Objects dropped since the last item was placed: they go before the next item.
    pending_drops: Vec<Key>,
    /// Expired objects first, then the policy's order; never rewound. Made when the
    /// first victim is needed: most plans need none.
    candidates: Option<Box<dyn Iterator<Item = &'a Key> + 'a>>,
    /// Each local service's largest memory segment, largest first.
    largest: Vec<u64>,
    /// Most bytes the memory media may hold (see `MetaStore::set_memory_limit`).
    limit: Option<u64>,
    /// The high watermark, percent: how full a preferred medium's segment may get.
    high: u16,
    /// Quarantined ranges are handed back up to this time.
    released: Option<u64>,
}

/// Where an item's planning started, to undo it if the item cannot be placed.
struct Mark {
    savepoints: Vec<(SegmentId, Savepoint)>,
    touched: usize,
    drops: usize,
}

impl<'a> Planner<'a> {
    /// A planner for the state that follows `unapplied`: `Alloc` commands already in
    /// the log but not yet applied, oldest first. Each is replayed as `apply` will
    /// perform it (its time's quarantine releases, its victims freed, its items
    /// allocated and their keys taken), so a plan made while they are in flight can
    /// only succeed where `apply` will succeed after them. Nothing of theirs goes into
    /// this plan's command.
    pub fn after<'u>(
        view: PlanView<'a>,
        leases: &'a Leases,
        now_ms: u64,
        unapplied: impl Iterator<Item = &'u InFlight>,
    ) -> Self {
        let mut largest: Vec<u64> = view
            .services
            .values()
            .filter_map(|svc| {
                svc.segments
                    .iter()
                    .filter_map(|id| view.segments.get(id))
                    .filter(|s| s.spec.medium != Medium::Ssd)
                    .map(|s| s.capacity())
                    .max()
            })
            .collect();
        largest.sort_unstable_by(|a, b| b.cmp(a));
        let mut planner = Planner {
            view,
            leases,
            now_ms,
            touched: Vec::new(),
            planned: FxHashSet::default(),
            dropped: FxHashSet::default(),
            pending_drops: Vec::new(),
            candidates: None,
            largest,
            limit: None,
            high: 100,
            released: None,
        };
        for alloc in unapplied {
            planner.replay(alloc);
        }
        planner.release_until(now_ms);
        planner
    }

    /// `apply` hands quarantined ranges whose hold ended back first: so does the
    /// trial, up to `until_ms` (each range once).
    fn release_until(&mut self, until_ms: u64) {
        let from = self.released;
        let released: Vec<_> = self
            .view
            .quarantine
            .iter()
            .skip_while(|q| from.is_some_and(|f| q.0 <= f))
            .take_while(|q| q.0 <= until_ms)
            .map(|q| (q.1, q.2, q.3))
            .collect();
        self.released = Some(self.released.map_or(until_ms, |f| f.max(until_ms)));
        for (segment, offset, len) in released {
            if let Some(a) = self.allocator(segment) {
                a.free(offset, len);
            }
        }
    }

    /// One unapplied `Alloc` command, as `apply` will perform it (see [`Self::after`]).
    fn replay(&mut self, alloc: &InFlight) {
        self.release_until(alloc.now_ms);
        for item in &alloc.items {
            for key in &item.drop_first {
                self.free_object(key);
            }
            // All replicas or none, as `alloc_one`; a key it takes is taken.
            let mut placed = Vec::with_capacity(item.segments.len());
            for &segment in &item.segments {
                match self.allocator(segment).and_then(|a| a.alloc(item.size)) {
                    Some(offset) => placed.push((segment, offset)),
                    None => break,
                }
            }
            if placed.len() == item.segments.len() {
                self.planned.insert(item.key.clone());
                continue;
            }
            for (segment, offset) in placed {
                if let Some(a) = self.allocator(segment) {
                    a.free(offset, item.size);
                }
            }
        }
        for key in &alloc.drop_after {
            self.free_object(key);
        }
    }

    /// Holds the memory media to `limit` bytes in all: items past it evict first, and
    /// the watermarks count against it.
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// Lets a preferred medium take replicas only up to `high` percent of a segment.
    pub fn with_high_watermark(mut self, high: u16) -> Self {
        self.high = high;
        self
    }

    /// Plans one object of `replicas` (validated) replicas as `config` asks; on
    /// success it becomes the next item of the command.
    pub fn plan(
        &mut self,
        key: Key,
        size: u64,
        replicas: usize,
        config: &ReplicateConfig,
    ) -> Result<AllocItem> {
        let ttl_ms = ttl_ms(config);
        let replace = config.replace;
        let preferred = &config.preferred_local_service_ids;
        let mark = self.mark();
        let placed = self
            .admit(&key, size, replace)
            .and_then(|()| self.place(size, replicas, preferred, config.medium));
        match placed {
            Ok(segments) => {
                self.planned.insert(key.clone());
                Ok(AllocItem {
                    key,
                    size,
                    segments,
                    ttl_ms,
                    writer: 0,
                    lease_ms: None,
                    drop_first: std::mem::take(&mut self.pending_drops),
                    replace,
                })
            }
            Err(e) => {
                self.undo_to(mark);
                Err(e)
            }
        }
    }

    /// The allocation a writer already holds for `key`, when it asks again (its
    /// first answer was lost with a leader or a connection).
    pub fn repeated(&self, key: &Key, size: u64, writer: u64) -> Option<Allocation> {
        // Writer 0 (an in-process store, an anonymous caller) never asks again.
        if writer == 0 {
            return None;
        }
        let in_flight =
            |d: &'a crate::state::Directory| d.get(key).filter(|o| o.put_in_progress().is_some());
        let o = in_flight(self.view.replacements).or_else(|| in_flight(self.view.objects))?;
        let p = o.put_in_progress()?;
        let mine = p.writer == writer && o.size == size;
        mine.then(|| Allocation {
            put_id: o.put_id,
            blobs: o.blobs.to_vec(),
            lease_ms: p.deadline_ms.saturating_sub(self.now_ms),
            deadline_ms: p.deadline_ms,
            tags: Vec::new(),
        })
    }

    /// Evicts until every memory medium above `high` percent is at or below `low`
    /// percent; returns the objects to drop after the items, and ends every trial.
    /// (The SSD tier makes room when objects are stored on it, and HBM by demoting
    /// objects to the DRAM of its local service, where every one has DRAM.)
    pub fn finish(mut self, high: u16, low: u16) -> Vec<Key> {
        for medium in [Medium::Dram, Medium::Hbm] {
            if medium == Medium::Hbm && self.hbm_demotes() {
                continue;
            }
            if self.over(medium, high) {
                while self.over(medium, low) && self.evict_one() {}
            }
        }
        for id in &self.touched {
            if let Some(seg) = self.view.segments.get_mut(id) {
                seg.allocator_mut().end_trial();
            }
        }
        self.pending_drops
    }

    /// As [`Leader::fenced_until`](super::Leader): the holds `apply` will use.
    fn fenced_until(&self, key: &Key) -> u64 {
        self.leases.fenced_until(key)
    }

    fn leased(&self, key: &Key) -> bool {
        self.leases.held(key, self.now_ms)
    }

    /// The allocator of `id`, in a trial from the first time the plan touches it.
    fn allocator(&mut self, id: SegmentId) -> Option<&mut PageAllocator> {
        let a = self.view.segments.get_mut(&id)?.allocator_mut();
        if !a.in_trial() {
            a.begin_trial();
            self.touched.push(id);
        }
        Some(a)
    }

    fn mark(&self) -> Mark {
        Mark {
            savepoints: self
                .touched
                .iter()
                .map(|id| (*id, self.view.segments[id].allocator().savepoint()))
                .collect(),
            touched: self.touched.len(),
            drops: self.pending_drops.len(),
        }
    }

    fn undo_to(&mut self, mark: Mark) {
        for (id, sp) in mark.savepoints {
            if let Some(seg) = self.view.segments.get_mut(&id) {
                seg.allocator_mut().rollback_to(sp);
            }
        }
        for id in self.touched.drain(mark.touched..) {
            if let Some(seg) = self.view.segments.get_mut(&id) {
                seg.allocator_mut().end_trial();
            }
        }
        for key in self.pending_drops.drain(mark.drops..) {
            self.dropped.remove(&key);
        }
    }

    /// Checks that `key` may be put: free, held by an expired object (dropped first),
    /// or, for a `replace` put, by a committed one no other put is replacing.
    fn admit(&mut self, key: &Key, size: u64, replace: bool) -> Result<()> {
        if size == 0 {
            return Err(Error::invalid("object size 0"));
        }
        if size > MAX_OBJECT_BYTES {
            return Err(Error::invalid(format!(
                "object of {size} bytes is above the limit of {MAX_OBJECT_BYTES}"
            )));
        }
        if self.planned.contains(key) {
            return Err(Error::DuplicatedObject);
        }
        if self.dropped.contains(key) {
            return Ok(());
        }
        match self.view.objects.get(key) {
            None => Ok(()),
            Some(o) if o.is_committed() && o.expired(self.now_ms) => {
                if self.leased(key) {
                    return Err(Error::LeaseNotExpired);
                }
                self.drop_object(key);
                Ok(())
            }
            Some(o) if replace && o.is_committed() && !self.view.replacements.contains_key(key) => {
                Ok(())
            }
            Some(_) => Err(Error::DuplicatedObject),
        }
    }

    /// Segments for `replicas` replicas of `size` bytes on distinct local services,
    /// preferred services first, then the emptiest; evicts while nothing fits.
    fn place(
        &mut self,
        size: u64,
        replicas: usize,
        preferred: &[LocalServiceId],
        medium: Option<Medium>,
    ) -> Result<Vec<SegmentId>> {
        let need = pages_for(size) * PAGE_SIZE;
        let able = self.largest.partition_point(|&c| c >= need);
        if able < replicas {
            return Err(Error::OutOfMemory(format!(
                "{replicas} replica(s) of {size} bytes need as many local services with a large enough segment; there are {able}"
            )));
        }
        let adding = need.saturating_mul(replicas as u64);
        loop {
            let within = self
                .limit
                .is_none_or(|l| self.memory_used().saturating_add(adding) <= l);
            if within {
                if let Some(chosen) = self.try_place(size, replicas, preferred, medium) {
                    return Ok(chosen);
                }
            }
            if !self.evict_one() {
                return Err(Error::OutOfMemory(format!(
                    "no room for {replicas} replica(s) of {size} bytes and nothing left to evict"
                )));
            }
        }
    }

    /// Allocates every replica (in trial), or nothing.
    fn try_place(
        &mut self,
        size: u64,
        replicas: usize,
        preferred: &[LocalServiceId],
        medium: Option<Medium>,
    ) -> Option<Vec<SegmentId>> {
        let need = pages_for(size) * PAGE_SIZE;
        let mut chosen: Vec<(SegmentId, LocalServiceId, Savepoint)> = Vec::with_capacity(replicas);
        // Preferred services first; any service for what they cannot take.
        let order = preferred
            .iter()
            .map(Some)
            .chain(std::iter::repeat_n(None, replicas));
        for want in order {
            if chosen.len() == replicas {
                break;
            }
            // Emptiest first; ties by id so every run decides the same.
            let fits = |s: &&Segment| {
                s.spec.medium != Medium::Ssd
                    && s.free() >= need
                    && want.is_none_or(|w| s.service == *w)
                    && chosen.iter().all(|c| c.1 != s.service)
            };
            let high = self.high;
            let rank_of = |s: &Segment| rank(s, need, medium, high);
            // One pass finds the emptiest; it nearly always takes the replica, so the
            // full order is built only when fragmentation turns it down.
            let Some(best) = self
                .view
                .segments
                .values()
                .filter(fits)
                .max_by_key(|s| rank_of(s))
            else {
                continue;
            };
            let (best_id, best_service) = (best.id, best.service);
            if let Some(sp) = self.try_alloc(best_id, size) {
                chosen.push((best_id, best_service, sp));
                continue;
            }
            let mut candidates: Vec<_> = self
                .view
                .segments
                .values()
                .filter(fits)
                .filter(|s| s.id != best_id)
                .map(|s: &Segment| (rank_of(s), s.id, s.service))
                .collect();
            candidates.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
            for (_, id, service) in candidates {
                if let Some(sp) = self.try_alloc(id, size) {
                    chosen.push((id, service, sp));
                    break;
                }
            }
        }
        if chosen.len() == replicas {
            return Some(chosen.into_iter().map(|c| c.0).collect());
        }
        for (id, _, sp) in chosen.into_iter().rev() {
            self.allocator(id).expect("chosen").rollback_to(sp);
        }
        None
    }

    /// Allocates `size` bytes on segment `id` (in trial): the savepoint before it, or
    /// `None` with the allocator as it was.
    fn try_alloc(&mut self, id: SegmentId, size: u64) -> Option<Savepoint> {
        let a = self.allocator(id).expect("a listed segment");
        let sp = a.savepoint();
        if a.alloc(size).is_some() {
            return Some(sp);
        }
        a.rollback_to(sp); // a failed attempt may have folded the cache
        None
    }

    /// Drops the next evictable object; false when none is left.
    fn evict_one(&mut self) -> bool {
        let (expiring, policy, now_ms) = (self.view.expiring, self.view.policy, self.now_ms);
        self.candidates
            .get_or_insert_with(|| Box::new(expired_in(expiring, now_ms).chain(policy.coldest())));
        while let Some(key) = self.candidates.as_mut().and_then(|c| c.next()) {
            let committed = self.view.objects.get(key).is_some_and(|o| o.is_committed());
            // A fenced victim would make no room (its memory goes to quarantine).
            let fenced = self.fenced_until(key) > self.now_ms;
            if committed && !self.dropped.contains(key) && !self.leased(key) && !fenced {
                self.drop_object(key);
                return true;
            }
        }
        false
    }

    /// Frees the object's memory blobs (in trial) and lists it to evict; applying it
    /// keeps an object with an SSD replica there. SSD space is not planned here.
    fn drop_object(&mut self, key: &Key) {
        self.free_object(key);
        self.pending_drops.push(key.clone());
    }

    /// Frees a committed object's memory blobs (in trial) unless it is gone already.
    fn free_object(&mut self, key: &Key) {
        let objects = self.view.objects;
        let Some(obj) = objects.get(key).filter(|o| o.is_committed()) else {
            return;
        };
        if !self.dropped.insert(key.clone()) {
            return;
        }
        // A range a capability may still reach goes to quarantine, not back to the
        // allocator (the command's holds say so): it makes no room now.
        let held = self.fenced_until(key) > self.now_ms;
        for b in obj
            .blobs
            .iter()
            .filter(|b| b.medium != Medium::Ssd && !held)
        {
            if let Some(a) = self.allocator(b.segment) {
                a.free(b.offset, b.len);
            }
        }
    }

    fn over(&self, medium: Medium, pct: u16) -> bool {
        let (used, cap) = fill(self.view.segments.values(), medium, self.limit);
        above(used, cap, pct)
    }

    /// Whether every local service with HBM also has DRAM to demote its objects to.
    fn hbm_demotes(&self) -> bool {
        let has_dram = |service| {
            self.view.services.get(&service).is_some_and(|svc| {
                svc.segments
                    .iter()
                    .filter_map(|id| self.view.segments.get(id))
                    .any(|s| s.spec.medium == Medium::Dram)
            })
        };
        self.view
            .segments
            .values()
            .filter(|s| s.spec.medium == Medium::Hbm)
            .all(|s| has_dram(s.service))
    }

    /// Bytes the memory media hold, as this plan leaves them so far.
    fn memory_used(&self) -> u64 {
        memory_used(self.view.segments.values())
    }
}

/// The TTL a put asks for, in ms (at least 1).
fn ttl_ms(config: &ReplicateConfig) -> Option<u64> {
    config.ttl.map(|t| (t.as_millis() as u64).max(1))
}

/// How segment `s` ranks for a replica of `need` bytes (the highest takes it): the
/// preferred medium while it stays below the `high` watermark (percent), then the
/// emptiest; ties by id so every run decides the same.
fn rank(
    s: &Segment,
    need: u64,
    medium: Option<Medium>,
    high: u16,
) -> (bool, u64, std::cmp::Reverse<SegmentId>) {
    let wanted = medium == Some(s.spec.medium)
        && s.used().saturating_add(need) as u128 * 100 <= s.capacity() as u128 * high as u128;
    (wanted, s.free(), std::cmp::Reverse(s.id))
}

fn is_memory(s: &&Segment) -> bool {
    s.spec.medium != Medium::Ssd
}

fn memory_used<'s>(segments: impl Iterator<Item = &'s Segment>) -> u64 {
    segments.filter(is_memory).map(|s| s.used()).sum()
}

/// Bytes `medium`'s segments hold, and what they may hold: their capacity, or under a
/// `limit` their share of it (the memory media share it in proportion to their
/// capacity).
fn fill<'s>(
    segments: impl Iterator<Item = &'s Segment>,
    medium: Medium,
    limit: Option<u64>,
) -> (u128, u128) {
    let (mut used, mut cap, mut all) = (0u128, 0u128, 0u128);
    for s in segments.filter(is_memory) {
        all += s.capacity() as u128;
        if s.spec.medium == medium {
            cap += s.capacity() as u128;
            used += s.used() as u128;
        }
    }
    if let Some(share) = limit.and_then(|l| (l as u128 * cap).checked_div(all)) {
        cap = cap.min(share);
    }
    (used, cap)
}

/// Whether `used` is above `pct` percent of `cap`.
fn above(used: u128, cap: u128, pct: u16) -> bool {
    cap > 0 && used * 100 > cap * pct as u128
}

/// What [`Planner::plan`] decides for an object of `size` bytes with one replica on no
/// preferred service, where that decision needs no victim: the segment it takes and
/// its TTL. `None` where something would have to be evicted for it, before (no room,
/// the `limit`) or after (a memory medium past the `high` watermark): the planner
/// must plan it then.
pub(crate) fn place_alone<'s>(
    segments: impl Iterator<Item = &'s Segment> + Clone,
    size: u64,
    config: &ReplicateConfig,
    limit: Option<u64>,
    high: u16,
) -> Option<(SegmentId, Option<u64>)> {
    if size == 0 || size > MAX_OBJECT_BYTES {
        return None;
    }
    let need = pages_for(size) * PAGE_SIZE;
    let best = segments
        .clone()
        .filter(is_memory)
        .filter(|s| s.free() >= need)
        .max_by_key(|s| rank(s, need, config.medium, high))
        .filter(|s| s.allocator().fits_unfolded(size))?;
    let used = memory_used(segments.clone());
    if limit.is_some_and(|l| used.saturating_add(need) > l) {
        return None;
    }
    for medium in [Medium::Dram, Medium::Hbm] {
        let (mut used, cap) = fill(segments.clone(), medium, limit);
        if medium == best.spec.medium {
            used += need as u128;
        }
        if above(used, cap, high) {
            return None;
        }
    }
    Some((best.id, ttl_ms(config)))
}
