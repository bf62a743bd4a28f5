//! The leader's side of the SSD tier: what each local service's tier is to store,
//! erase and copy back into memory, and the commands recording what it did.

use memcache_core::{Blob, Error, Key, LocalServiceId, Medium, Result, SegmentId, PAGE_SIZE};
use memcache_proto::{PutId, SsdWork, ToPromote, ToStore};

use super::{Leader, Plan};
use crate::alloc::pages_for;
use crate::state::{Applied, Command, StateMachine};

/// Reads of an object only on SSD that make it hot enough to copy back into memory.
const PROMOTE_AFTER_READS: u8 = 2;
/// Most SSD-only objects whose reads are counted at a time.
const MAX_COUNTED: usize = 1 << 16;

fn promoting(a: Applied) -> Vec<Result<Blob>> {
    match a {
        Applied::Promoting(r) => r,
        other => unreachable!("promote gave {other:?}"),
    }
}

fn tier_results(a: Applied) -> Vec<Result<()>> {
    match a {
        Applied::Stored(r) | Applied::Promoted(r) => r,
        other => unreachable!("store gave {other:?}"),
    }
}

/// The copies to make for a promotion: each record with the memory it got.
pub fn promotions(records: Vec<(Key, PutId, u64)>, blobs: Vec<Result<Blob>>) -> Vec<ToPromote> {
    records
        .into_iter()
        .zip(blobs)
        .filter_map(|((key, put, record), blob)| {
            blob.ok().map(|blob| ToPromote {
                key,
                put,
                record,
                blob,
            })
        })
        .collect()
}

impl Leader {
    /// The command recording what the owner of an SSD segment stored (`items`: key,
    /// put, record id) and erased (`trash_done` trash entries). When the new objects
    /// would take the segment past the high watermark, its oldest objects that no
    /// reader holds lose their SSD replica first, down to the low watermark.
    pub fn plan_stored(
        &mut self,
        sm: &StateMachine,
        service: LocalServiceId,
        items: Vec<(Key, PutId, u64)>,
        trash_done: u64,
        now_ms: u64,
    ) -> Plan<()> {
        let Some(segment) = sm.ssd_segment_of(service) else {
            let e = Error::invalid(format!("local service {service} has no SSD segment"));
            return Plan::refused(items.len(), e, tier_results);
        };
        if let Some(first) = self.store_first.get_mut(&service) {
            first.retain(|k| sm.store_target_of(k) == Some(service));
            if first.is_empty() {
                self.store_first.remove(&service);
            }
        }
        let seg = sm.segment(segment).expect("the service's segment");
        let incoming: u64 = items
            .iter()
            .filter_map(|(k, put, _)| sm.object(k).filter(|o| o.put_id == *put))
            .map(|o| pages_for(o.size) * PAGE_SIZE)
            .sum();
        let cap = seg.capacity() as u128;
        let pct = |used: u64| used as u128 * 100;
        let mut used = seg.used() + incoming;
        let mut drop_first = Vec::new();
        if pct(used) > cap * self.config.evict_threshold_high as u128 {
            let storing: rustc_hash::FxHashSet<&Key> = items.iter().map(|(k, _, _)| k).collect();
            for key in sm.ssd_order(segment) {
                if pct(used) <= cap * self.config.evict_threshold_low as u128 {
                    break;
                }
                if storing.contains(key) || self.leases.held(key, now_ms) {
                    continue;
                }
                let size = sm.object(key).map_or(0, |o| o.size);
                used = used.saturating_sub(pages_for(size) * PAGE_SIZE);
                drop_first.push(key.clone());
            }
        }
        if items.is_empty() && drop_first.is_empty() && trash_done <= seg.trash().0 {
            return Plan::new(0, tier_results);
        }
        let mut plan = self.plan_each(items.len(), tier_results, || Command::Stored {
            now_ms,
            segment,
            trash_done,
            drop_first: drop_first.clone(),
            items,
        });
        self.doom(&drop_first);
        plan.doomed = drop_first;
        plan
    }

    /// What the owner of an SSD segment should do next: erase the records in its
    /// trash (up to `limit`) and store up to `limit` objects (and about `max_bytes`),
    /// oldest first.
    pub fn ssd_work(
        &self,
        sm: &StateMachine,
        service: LocalServiceId,
        limit: usize,
        max_bytes: u64,
    ) -> SsdWork {
        let Some(segment) = sm.ssd_segment_of(service) else {
            return SsdWork::default();
        };
        let seg = sm.segment(segment).expect("the service's segment");
        let (trash_from, trash) = seg.trash();
        let trash = trash.take(limit).cloned().collect();
        let mut bytes = 0;
        let mut store = Vec::new();
        // Objects an evict waits for go first.
        let first = self.store_first.get(&service);
        let mut handed = rustc_hash::FxHashSet::default();
        let keys = first.into_iter().flatten().chain(sm.unstored(service));
        for key in keys {
            if store.len() >= limit || bytes >= max_bytes {
                break;
            }
            if first.is_some() && !handed.insert(key) {
                continue;
            }
            if sm.store_target_of(key) != Some(service) {
                continue;
            }
            let Some(obj) = sm.object(key) else { continue };
            let Some(blob) = obj
                .blobs
                .iter()
                .find(|b| b.service == service && b.medium != Medium::Ssd)
            else {
                continue;
            };
            if obj.size > seg.capacity() {
                continue;
            }
            bytes += obj.size;
            store.push(ToStore {
                key: key.clone(),
                put: obj.put_id,
                blob: *blob,
                expires_ms: obj.expires_ms(),
            });
        }
        SsdWork {
            trash_from,
            trash,
            store,
        }
    }

    /// The command giving memory to the hot objects queued for `service`'s SSD tier
    /// (up to `limit`), on its memory segments, below the high watermark; the coldest
    /// objects there that no reader holds are evicted first where room is short. With
    /// each item, the SSD record to copy.
    pub fn plan_promote(
        &mut self,
        sm: &StateMachine,
        service: LocalServiceId,
        limit: usize,
        now_ms: u64,
    ) -> (Plan<Blob>, Vec<(Key, PutId, u64)>) {
        let mut queued = self.to_promote.remove(&service).unwrap_or_default();
        if queued.len() > limit {
            let rest = queued.split_off(limit);
            self.to_promote.insert(service, rest);
        }
        let high = self.config.evict_threshold_high as u128;
        let mut room: Vec<(SegmentId, u64)> = sm
            .service(service)
            .into_iter()
            .flat_map(|s| s.segments.iter())
            .filter_map(|id| sm.segment(*id))
            .filter(|s| s.spec.medium != Medium::Ssd)
            .map(|s| {
                let allowed = (s.capacity() as u128 * high / 100) as u64;
                (s.id, allowed.saturating_sub(s.used()))
            })
            .collect();
        let mut items = Vec::new();
        let mut records = Vec::new();
        let mut victims = Vec::new();
        let mut coldest = sm.policy().coldest();
        for key in queued {
            let Ok(obj) = sm.visible(&key, now_ms) else {
                continue;
            };
            let Some(ssd) = obj.blobs.iter().find(|b| b.medium == Medium::Ssd) else {
                continue;
            };
            if obj.in_memory() || obj.staging().is_some() {
                continue;
            }
            let need = pages_for(obj.size) * PAGE_SIZE;
            while !room.iter().any(|(_, free)| *free >= need) {
                let Some(victim) = coldest.next() else { break };
                let Some(v) = sm.object(victim) else { continue };
                let here = |b: &Blob| room.iter().any(|(id, _)| *id == b.segment);
                if !v.is_committed()
                    || !v.blobs.iter().any(here)
                    || self.leases.held(victim, now_ms)
                    || self.doomed.contains_key(victim)
                    // Its memory would go to quarantine, not to this promotion.
                    || self.leases.fenced_until(victim) > now_ms
                {
                    continue;
                }
                for b in &v.blobs {
                    if let Some(r) = room.iter_mut().find(|(id, _)| *id == b.segment) {
                        r.1 += pages_for(b.len) * PAGE_SIZE;
                    }
                }
                victims.push(victim.clone());
            }
            let Some(slot) = room.iter_mut().find(|(_, free)| *free >= need) else {
                continue;
            };
            slot.1 -= need;
            items.push((key.clone(), obj.put_id, slot.0));
            records.push((key, obj.put_id, ssd.offset));
        }
        if items.is_empty() {
            return (Plan::new(0, promoting), records);
        }
        let holds = self.holds(&victims, now_ms);
        let mut plan = self.plan_each(items.len(), promoting, || Command::Promote {
            now_ms,
            drop_first: victims.clone(),
            items,
            holds,
        });
        self.doom(&victims);
        plan.doomed = victims;
        (plan, records)
    }

    /// Makes the memory the SSD tier filled readable.
    pub fn plan_promoted(&self, items: Vec<(Key, PutId)>) -> Plan<()> {
        if items.is_empty() {
            return Plan::new(0, tier_results);
        }
        self.plan_each(items.len(), tier_results, || Command::Promoted { items })
    }

    /// For each `(key, put)`: whether that put is still the object under `key`.
    pub fn still_current(
        &self,
        sm: &StateMachine,
        items: &[(Key, PutId)],
        now_ms: u64,
    ) -> Vec<bool> {
        items
            .iter()
            .map(|(k, put)| sm.visible(k, now_ms).is_ok_and(|o| o.put_id == *put))
            .collect()
    }

    /// Counts a read of an object only on SSD; the reads that make it hot queue it
    /// for its SSD tier to copy back into memory.
    pub(super) fn count_ssd_read(&mut self, sm: &StateMachine, key: &Key, blobs: &[Blob]) {
        let Some(ssd) = blobs.iter().find(|b| b.medium == Medium::Ssd) else {
            return;
        };
        let staged = sm.object(key).is_some_and(|o| o.staging().is_some());
        if blobs.iter().any(|b| b.medium != Medium::Ssd) || staged {
            return;
        }
        if self.ssd_reads.len() >= MAX_COUNTED && !self.ssd_reads.contains_key(key) {
            self.ssd_reads.clear();
        }
        let n = self.ssd_reads.entry(key.clone()).or_default();
        *n += 1;
        if *n >= PROMOTE_AFTER_READS {
            self.ssd_reads.remove(key);
            self.to_promote
                .entry(ssd.service)
                .or_default()
                .push(key.clone());
        }
    }
}
