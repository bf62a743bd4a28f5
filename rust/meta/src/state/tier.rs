//! The SSD tier in the state machine: objects stored on SSD segments, demoted there
//! by eviction from memory, evicted from them, recovered into them, and promoted back
//! into memory.

use std::collections::BTreeSet;

use memcache_core::{Blob, Error, Key, LocalServiceId, Medium, Result, SegmentId, PAGE_SIZE};

use super::{min_key, Object, PutId, Recovered, Replicas, Segment, StateMachine};
use crate::alloc::pages_for;

impl StateMachine {
    /// Gives an SSD-only object memory on `segment` to be copied into.
    pub(super) fn stage(
        &mut self,
        key: &Key,
        put: PutId,
        segment: SegmentId,
        now_ms: u64,
    ) -> Result<Blob> {
        let obj = self.unstaged(key, put, now_ms)?;
        if obj.in_memory() {
            return Err(Error::DuplicatedObject);
        }
        let size = obj.size;
        let memory = |s: &Segment| s.spec.medium != Medium::Ssd;
        self.stage_on(key, size, segment, memory)
    }

    /// Gives a committed object in HBM DRAM on `segment`, of the local service holding
    /// the HBM replica, to be copied into.
    pub(super) fn stage_demotion(
        &mut self,
        key: &Key,
        put: PutId,
        segment: SegmentId,
        now_ms: u64,
    ) -> Result<Blob> {
        let obj = self.unstaged(key, put, now_ms)?;
        let hbm_on = |service| {
            obj.blobs
                .iter()
                .any(|b| b.medium == Medium::Hbm && b.service == service)
        };
        let dram_of_holder = |s: &Segment| s.spec.medium == Medium::Dram && hbm_on(s.service);
        let fits = self.segments.get(&segment).is_some_and(dram_of_holder);
        if !fits {
            return Err(Error::invalid(format!(
                "segment {segment} is no DRAM of a local service holding {key} in HBM"
            )));
        }
        let size = obj.size;
        self.stage_on(key, size, segment, |_| true)
    }

    /// Put `put` of `key`, readable at `now_ms` and with no memory being filled for it.
    fn unstaged(&self, key: &Key, put: PutId, now_ms: u64) -> Result<&Object> {
        let obj = match self.objects.get(key) {
            Some(o) if o.put_id == put && o.visible(now_ms) => o,
            _ => return Err(Error::ObjectNotFound),
        };
        if obj.staging().is_some() {
            return Err(Error::DuplicatedObject);
        }
        Ok(obj)
    }

    /// Allocates `size` bytes on `segment` (one `accept` takes) as the staging of the
    /// object under `key`.
    fn stage_on(
        &mut self,
        key: &Key,
        size: u64,
        segment: SegmentId,
        accept: impl Fn(&Segment) -> bool,
    ) -> Result<Blob> {
        let seg = self
            .segments
            .get_mut(&segment)
            .filter(|s| accept(s))
            .ok_or_else(|| Error::invalid(format!("no memory segment {segment}")))?;
        let offset = seg
            .alloc
            .alloc(size)
            .ok_or_else(|| Error::OutOfMemory(format!("segment {segment} is full")))?;
        let blob = Blob {
            service: seg.service,
            medium: seg.spec.medium,
            segment,
            offset,
            len: size,
        };
        self.objects
            .get_mut(key)
            .expect("found above")
            .set_staging(Some(blob));
        Ok(blob)
    }

    /// Makes a promoted object's filled memory readable.
    pub(super) fn promoted(&mut self, key: &Key, put: PutId) -> Result<()> {
        let obj = match self.objects.get_mut(key) {
            // Staged and still not in memory: a promotion, not a demotion.
            Some(o) if o.put_id == put && o.staging().is_some() && !o.in_memory() => o,
            _ => return Err(Error::ObjectNotFound),
        };
        let blob = obj.staging().expect("checked above");
        obj.set_staging(None);
        obj.blobs.insert(0, blob);
        self.policy.insert(key);
        self.counters.promoted += 1;
        Ok(())
    }

    /// Makes the DRAM that local service `service` filled a demoted object's replica
    /// in place of its HBM one there, which is freed (held while a capability may
    /// still reach it).
    pub(super) fn hbm_demoted(
        &mut self,
        key: &Key,
        put: PutId,
        service: LocalServiceId,
    ) -> Result<()> {
        let obj = match self.objects.get_mut(key) {
            Some(o) if o.put_id == put && o.in_memory() => o,
            _ => return Err(Error::ObjectNotFound),
        };
        let Some(dram) = obj.staging().filter(|b| b.service == service) else {
            return Err(Error::ObjectNotFound);
        };
        obj.set_staging(None);
        let (hbm, mut kept): (Replicas, Replicas) = obj
            .blobs
            .iter()
            .copied()
            .partition(|b| b.medium == Medium::Hbm && b.service == service);
        kept.push(dram);
        obj.blobs = kept;
        self.free_blobs(key, &hbm);
        self.counters.hbm_demoted += 1;
        Ok(())
    }

    /// Evicts the listed committed objects from memory: one with an SSD replica stays
    /// there (demoted), the others go. Returns how many were evicted.
    pub(super) fn evict_from_memory(&mut self, keys: &[Key], now_ms: u64) -> usize {
        let mut n = 0;
        for key in keys {
            let Some(obj) = self.objects.get_mut(key) else {
                continue;
            };
            if !obj.is_committed() {
                continue;
            }
            n += 1;
            if !obj.demotes(now_ms) {
                self.remove_object(key);
                continue;
            }
            let (ssd, mut memory): (Replicas, Replicas) = obj
                .blobs
                .iter()
                .copied()
                .partition(|b| b.medium == Medium::Ssd);
            // DRAM a demotion from HBM is filling goes with the rest of its memory.
            memory.extend(obj.staging());
            obj.set_staging(None);
            obj.blobs = ssd;
            self.free_blobs(key, &memory);
            self.policy.remove(key);
            self.counters.demoted += 1;
        }
        self.counters.evicted += n as u64;
        n
    }

    /// Drops the DRAM replicas of an object that has an SSD replica (an explicit
    /// evict to SSD). Ok also when it has no DRAM replica left.
    pub(super) fn demote(&mut self, key: &Key, now_ms: u64) -> Result<()> {
        let obj = match self.objects.get_mut(key) {
            Some(o) if o.visible(now_ms) => o,
            _ => return Err(Error::ObjectNotFound),
        };
        if !obj.blobs.iter().any(|b| b.medium == Medium::Dram) {
            return Ok(());
        }
        if !obj.on_ssd() {
            return Err(Error::UnmatchedState(format!("{key} has no SSD replica")));
        }
        let (dram, kept): (Replicas, Replicas) = obj
            .blobs
            .iter()
            .copied()
            .partition(|b| b.medium == Medium::Dram);
        obj.blobs = kept;
        let in_memory = obj.in_memory();
        self.free_blobs(key, &dram);
        if !in_memory {
            self.policy.remove(key);
        }
        self.counters.demoted += 1;
        Ok(())
    }

    /// The local service that should write `key` to its SSD segment (see
    /// [`StateMachine::unstored`]); None once it is on SSD, or when no holder of a
    /// memory replica has an SSD segment.
    pub fn store_target_of(&self, key: &Key) -> Option<LocalServiceId> {
        self.store_target(self.objects.get(key)?)
    }

    /// Takes `key`'s replica off SSD segment `segment`; an object left with no replica
    /// goes.
    pub(super) fn drop_from_ssd(&mut self, key: &Key, segment: SegmentId) {
        let Some(obj) = self.objects.get_mut(key) else {
            return;
        };
        let (gone, kept): (Replicas, Replicas) = obj
            .blobs
            .iter()
            .copied()
            .partition(|b| b.segment == segment);
        if gone.is_empty() {
            return;
        }
        if kept.is_empty() {
            self.remove_object(key);
            self.counters.evicted += 1;
            return;
        }
        obj.blobs = kept;
        let created = obj.created_ms;
        self.ssd_order.remove(&(segment, created, key.clone()));
        self.free_blobs(key, &gone);
    }

    /// Gives `key` the SSD replica its owner wrote, if the object is still the put
    /// `put` and has none yet.
    pub(super) fn store_one(
        &mut self,
        key: Key,
        put: PutId,
        segment: SegmentId,
        record: u64,
        now_ms: u64,
    ) -> Result<()> {
        let Some(obj) = self.objects.get(&key) else {
            return Err(Error::ObjectNotFound);
        };
        // The same report again (its first answer was lost, or the service registered
        // the record again meanwhile) is no news.
        let same = |b: &Blob| b.segment == segment && b.offset == record;
        if obj.blobs.iter().any(same) {
            return Ok(());
        }
        if obj.put_id != put || !obj.visible(now_ms) {
            return Err(Error::ObjectNotFound);
        }
        if obj.on_ssd() {
            return Err(Error::DuplicatedObject);
        }
        let size = obj.size;
        let created = obj.created_ms;
        let Some(seg) = self.segments.get_mut(&segment) else {
            return Err(Error::invalid(format!("no segment {segment}")));
        };
        let pages = pages_for(size) * PAGE_SIZE;
        if seg.spec.medium != Medium::Ssd || seg.free() < pages {
            return Err(Error::OutOfMemory(format!(
                "SSD segment {segment} cannot take {size} bytes"
            )));
        }
        seg.ssd_used += pages;
        let blob = Blob {
            service: seg.service,
            medium: Medium::Ssd,
            segment,
            offset: record,
            len: size,
        };
        if let Some(target) = self.store_target(self.objects.get(&key).expect("found above")) {
            self.unstored.remove(&(target, created, key.clone()));
        }
        self.objects
            .get_mut(&key)
            .expect("found above")
            .blobs
            .push(blob);
        self.ssd_order.insert((segment, created, key));
        self.counters.stored += 1;
        Ok(())
    }

    /// Puts objects a local service found on its SSD segment when it started; whether
    /// each was taken.
    pub(super) fn recover(
        &mut self,
        service: LocalServiceId,
        now_ms: u64,
        recovered: Vec<Recovered>,
    ) -> Vec<bool> {
        let segment = self.ssd_segment_of(service);
        recovered
            .into_iter()
            .map(|r| {
                let Some(segment) = segment else {
                    return false;
                };
                let seg = self
                    .segments
                    .get_mut(&segment)
                    .expect("the service's segment");
                // Sizes came from the network: checked before any arithmetic.
                let pages = pages_for(r.size).checked_mul(PAGE_SIZE);
                let expired = r.expires_ms.is_some_and(|t| t <= now_ms);
                let Some(pages) = pages.filter(|p| r.size != 0 && seg.free() >= *p) else {
                    return false;
                };
                if expired || self.objects.contains_key(&r.key) {
                    return false;
                }
                seg.ssd_used += pages;
                let put_id = self.next_put;
                self.next_put += 1;
                if let Some(t) = r.expires_ms {
                    self.expiring.insert((t, r.key.clone()));
                }
                self.ssd_order.insert((segment, now_ms, r.key.clone()));
                self.objects.insert(
                    r.key,
                    Box::new(Object::committed(
                        r.size,
                        put_id,
                        now_ms,
                        Replicas::from_buf([Blob {
                            service,
                            medium: Medium::Ssd,
                            segment,
                            offset: r.record,
                            len: r.size,
                        }]),
                        r.expires_ms,
                    )),
                );
                true
            })
            .collect()
    }

    /// The SSD segment of a local service, if it has one.
    pub fn ssd_segment_of(&self, service: LocalServiceId) -> Option<SegmentId> {
        let info = self.services.get(&service)?;
        info.segments.iter().copied().find(|id| {
            self.segments
                .get(id)
                .is_some_and(|s| s.spec.medium == Medium::Ssd)
        })
    }

    /// The local service that should write `obj` to its SSD segment: the first holder
    /// of a memory replica that has one. None once it is on SSD.
    pub(super) fn store_target(&self, obj: &Object) -> Option<LocalServiceId> {
        if !obj.is_committed() || obj.on_ssd() {
            return None;
        }
        obj.blobs
            .iter()
            .map(|b| b.service)
            .find(|s| self.ssd_segment_of(*s).is_some())
    }

    /// Recomputes the derived tier indexes, after services came or went.
    pub(super) fn rebuild_tiers(&mut self) {
        let mut unstored = BTreeSet::new();
        let mut ssd_order = BTreeSet::new();
        for (key, obj) in &self.objects {
            if let Some(t) = self.store_target(obj) {
                unstored.insert((t, obj.created_ms, key.clone()));
            }
            if obj.is_committed() {
                for b in obj.blobs.iter().filter(|b| b.medium == Medium::Ssd) {
                    ssd_order.insert((b.segment, obj.created_ms, key.clone()));
                }
            }
        }
        self.unstored = unstored;
        self.ssd_order = ssd_order;
    }

    /// Objects local service `service` should write to its SSD segment, oldest first.
    pub fn unstored(&self, service: LocalServiceId) -> impl Iterator<Item = &Key> {
        self.unstored
            .range((service, 0, min_key())..)
            .take_while(move |(s, _, _)| *s == service)
            .map(|(_, _, k)| k)
    }

    /// Objects on SSD segment `segment`, the first to evict first.
    pub fn ssd_order(&self, segment: SegmentId) -> impl Iterator<Item = &Key> {
        self.ssd_order
            .range((segment, 0, min_key())..)
            .take_while(move |(s, _, _)| *s == segment)
            .map(|(_, _, k)| k)
    }
}
