//! The leader's side of demotion from HBM to DRAM: HBM holds the hottest objects, and
//! eviction from it keeps an object in the DRAM of the same local service instead of
//! dropping it, as eviction from DRAM keeps it on SSD.
//!
//! Puts that prefer HBM fill it up to the high watermark; demotions keep it down to
//! the low one, so the room between is there for the next burst of puts. A demotion
//! takes two commands around one copy. While a service's HBM is above the low
//! watermark, its coldest objects there get DRAM of that service, below DRAM's high
//! watermark (`StageHbmDemotion`), down to the low watermark. The service copies
//! each from device to host and reports it; then the DRAM becomes the replica and the
//! HBM range is freed (`HbmDemoted`), held in quarantine while a reader's capability may
//! still reach it. Until then readers use the HBM replica; a put or remove of the key
//! meanwhile frees the staged DRAM with the object, and the report is refused.

use memcache_core::{Blob, Key, LocalServiceId, Medium, Result, SegmentId, PAGE_SIZE};
use memcache_proto::{PutId, ToDemote};

use super::{Leader, Plan};
use crate::alloc::pages_for;
use crate::state::{Applied, Command, StateMachine};

/// Most objects of the eviction order looked at for one round of one service.
const MAX_SCANNED: usize = 1 << 16;

fn staged(a: Applied) -> Vec<Result<Blob>> {
    match a {
        Applied::HbmStaged(r) => r,
        other => unreachable!("staging a demotion gave {other:?}"),
    }
}

fn demoted(a: Applied) -> Vec<Result<()>> {
    match a {
        Applied::HbmDemoted(r) => r,
        other => unreachable!("a demotion gave {other:?}"),
    }
}

/// The copies to make for a demotion: each object's HBM replica with the DRAM it got.
pub fn demotions(from: Vec<(Key, PutId, Blob)>, staged: Vec<Result<Blob>>) -> Vec<ToDemote> {
    from.into_iter()
        .zip(staged)
        .filter_map(|((key, put, from), to)| to.ok().map(|to| ToDemote { key, put, from, to }))
        .collect()
}

impl Leader {
    /// The command giving DRAM of `service` to up to `limit` of its coldest HBM
    /// objects, while its HBM is above the low watermark, in DRAM below its high
    /// watermark; with each item, the HBM replica to copy.
    pub fn plan_hbm_demotion(
        &mut self,
        sm: &StateMachine,
        service: LocalServiceId,
        limit: usize,
        now_ms: u64,
    ) -> (Plan<Blob>, Vec<(Key, PutId, Blob)>) {
        let (high, low) = (
            self.config.evict_threshold_high as u128,
            self.config.evict_threshold_low as u128,
        );
        let segments: Vec<_> = sm
            .service(service)
            .into_iter()
            .flat_map(|s| s.segments.iter())
            .filter_map(|id| sm.segment(*id))
            .collect();
        let share = |cap: u64, pct: u128| (cap as u128 * pct / 100) as u64;
        // HBM segments above the low watermark, with the bytes to move out of each.
        // Quarantined ranges (of objects demoted or removed while a capability could
        // still reach them) are on their way back: they count as gone.
        let mut excess: Vec<(SegmentId, u64)> = segments
            .iter()
            .filter(|s| s.spec.medium == Medium::Hbm)
            .map(|s| (s.id, s.used().saturating_sub(share(s.capacity(), low))))
            .filter(|(_, e)| *e > 0)
            .collect();
        if !excess.is_empty() {
            for (_, segment, _, len, _) in sm.quarantined() {
                if let Some(e) = excess.iter_mut().find(|(id, _)| id == segment) {
                    e.1 = e.1.saturating_sub(pages_for(*len) * PAGE_SIZE);
                }
            }
        }
        let mut room: Vec<(SegmentId, u64)> = segments
            .iter()
            .filter(|s| s.spec.medium == Medium::Dram)
            .map(|s| (s.id, share(s.capacity(), high).saturating_sub(s.used())))
            .collect();
        let mut items = Vec::new();
        let mut from = Vec::new();
        // Stuck while DRAM is full (its own eviction makes room): no scan meanwhile.
        let dram_room = room.iter().any(|(_, free)| *free >= PAGE_SIZE);
        if !excess.is_empty() && dram_room {
            for key in sm.policy().coldest().take(MAX_SCANNED) {
                if items.len() >= limit || excess.iter().all(|(_, e)| *e == 0) {
                    break;
                }
                let Some(obj) = sm.object(key) else { continue };
                let hot = |b: &&Blob| excess.iter().any(|(id, e)| *id == b.segment && *e > 0);
                let Some(hbm) = obj.blobs.iter().find(hot).copied() else {
                    continue;
                };
                let need = pages_for(obj.size) * PAGE_SIZE;
                let leaves = |excess: &mut Vec<(SegmentId, u64)>| {
                    if let Some(e) = excess.iter_mut().find(|(id, _)| *id == hbm.segment) {
                        e.1 = e.1.saturating_sub(need);
                    }
                };
                if obj.staging().is_some() {
                    leaves(&mut excess); // a demotion in flight already
                    continue;
                }
                if !obj.visible(now_ms) || self.doomed.contains_key(key) {
                    continue;
                }
                let Some(slot) = room.iter_mut().find(|(_, free)| *free >= need) else {
                    continue;
                };
                slot.1 -= need;
                leaves(&mut excess);
                items.push((key.clone(), obj.put_id, slot.0));
                from.push((key.clone(), obj.put_id, hbm));
            }
        }
        if items.is_empty() {
            return (Plan::new(0, staged), from);
        }
        let plan = self.plan_each(items.len(), staged, || Command::StageHbmDemotion {
            now_ms,
            items,
        });
        (plan, from)
    }

    /// The command making the DRAM that `service` filled its objects' replicas in
    /// place of their HBM ones. Lookups of these keys wait for it: a read lease granted
    /// meanwhile must be counted in the command's holds, or the HBM range could be
    /// reused under its reader.
    pub fn plan_hbm_demoted(
        &mut self,
        service: LocalServiceId,
        items: Vec<(Key, PutId)>,
        now_ms: u64,
    ) -> Plan<()> {
        if items.is_empty() {
            return Plan::new(0, demoted);
        }
        let keys: Vec<Key> = items.iter().map(|(k, _)| k.clone()).collect();
        let holds = self.holds(&keys, now_ms);
        let mut plan = self.plan_each(items.len(), demoted, || Command::HbmDemoted {
            now_ms,
            service,
            items,
            holds,
        });
        self.doom(&keys);
        plan.doomed = keys;
        plan
    }
}
