//! The leader's side of the metadata: [`Leader`] turns requests into [`Command`]s
//! (choosing placements and victims) and keeps the soft state that is never
//! replicated: read leases. [`MetaStore`] applies its commands at once, in-process; a
//! replicated meta service proposes the same commands through Raft instead.

use std::collections::VecDeque;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use memcache_core::{
    Blob, BlobLocation, Error, Key, KeyInfo, LocalServiceId, Medium, ReplicateConfig, Result,
    SegmentId, MAX_BATCH_OP_COUNT, PAGE_SIZE,
};
use memcache_proto::{
    Allocation, HbmAnswer, HbmReport, LeaseId, Located, PutId, Recovered, SegmentSpec, SsdAnswer,
    SsdReport, SsdWork, TierMove, ToPromote,
};

use crate::alloc::pages_for;
use crate::policy::PolicyKind;
use crate::state::{Applied, Command, StateMachine};

mod hbm;
mod leases;
mod moves;
mod planner;
mod tier;

pub use hbm::demotions;
pub use leases::Cap;
use leases::Leases;
pub use moves::REMOVE_ALL_CHUNK;
use planner::{place_alone, InFlight, Planner};
pub use tier::promotions;

/// Settings of the metadata service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetaConfig {
    /// Eviction starts when a medium's usage passes this percentage …
    #[serde(alias = "evictThresholdHigh")]
    pub evict_threshold_high: u16,
    /// … and stops once usage is at or below this one.
    #[serde(alias = "evictThresholdLow")]
    pub evict_threshold_low: u16,
    /// Time a writer has between `alloc` and `commit` before its space is reclaimed.
    #[serde(with = "millis")]
    pub put_lease: Duration,
    /// Longest time a reader's lease protects an object it did not release.
    #[serde(with = "millis")]
    pub read_lease: Duration,
    pub eviction_policy: PolicyKind,
    /// Most a local service's clock may lag the leader's. A data-plane capability
    /// expires at its put's deadline or its read lease's end on the local's own clock,
    /// so memory freed while one may still be honoured is kept from new objects until
    /// its expiry plus this margin.
    #[serde(with = "millis", alias = "clockSkewMs")]
    pub clock_skew: Duration,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            evict_threshold_high: 90,
            evict_threshold_low: 80,
            put_lease: Duration::from_secs(10),
            read_lease: Duration::from_secs(5),
            eviction_policy: PolicyKind::Lru,
            clock_skew: Duration::from_secs(1),
        }
    }
}

impl MetaConfig {
    pub fn validate(&self) -> Result<()> {
        let (hi, lo) = (self.evict_threshold_high, self.evict_threshold_low);
        if hi == 0 || hi > 100 || lo > hi {
            return Err(Error::invalid(format!(
                "eviction watermarks need 0 <= low <= high <= 100 and high > 0 (low {lo}, high {hi})"
            )));
        }
        if self.put_lease.is_zero() || self.read_lease.is_zero() {
            return Err(Error::invalid("leases must be longer than zero"));
        }
        Ok(())
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// One put request of an alloc: its items, its replica settings and the token of its
/// writer (0 for none), so a repeated attempt is recognised.
#[derive(Debug, Clone)]
pub struct AllocRequest {
    pub items: Vec<(Key, u64)>,
    pub config: ReplicateConfig,
    pub writer: u64,
    /// How long the puts may write before they are rolled back; 0: `put_lease`.
    pub lease_ms: u64,
}

/// A decided request: the answers known at once, and the command whose application
/// gives the others. [`Plan::finish`] puts them together.
pub struct Plan<T> {
    results: Vec<Option<Result<T>>>,
    /// The answer each result of the command goes to.
    slots: Vec<usize>,
    command: Option<Command>,
    doomed: Vec<Key>,
    outcome: fn(Applied) -> Vec<Result<T>>,
}

impl<T: Clone> Plan<T> {
    fn new(len: usize, outcome: fn(Applied) -> Vec<Result<T>>) -> Self {
        Plan {
            results: vec![None; len],
            slots: Vec::new(),
            command: None,
            doomed: Vec::new(),
            outcome,
        }
    }

    /// A request refused as a whole.
    fn refused(len: usize, e: Error, outcome: fn(Applied) -> Vec<Result<T>>) -> Self {
        let mut plan = Plan::new(len, outcome);
        plan.results = vec![Some(Err(e)); len];
        plan
    }

    /// The command to apply (through the log); `None` when every answer is known.
    pub fn take_command(&mut self) -> Option<Command> {
        self.command.take()
    }

    /// The answers, given what applying the command gave or why it was not applied
    /// (then every item it carried gets that error). Call it exactly once per plan
    /// whose command was taken: it also lets lookups of the keys it dropped go on.
    pub fn finish(self, leader: &mut Leader, applied: Option<Result<Applied>>) -> Vec<Result<T>> {
        leader.undoom(&self.doomed);
        let mut results = self.results;
        let n = self.slots.len();
        let mut applied = match applied {
            Some(Ok(a)) => (self.outcome)(a),
            Some(Err(e)) => vec![Err(e); n],
            None => Vec::new(),
        }
        .into_iter();
        for slot in self.slots {
            results[slot] = Some(
                applied
                    .next()
                    .unwrap_or_else(|| Err(Error::Failed("the command was not applied".into()))),
            );
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Failed("unanswered item".into()))))
            .collect()
    }
}

fn allocated(a: Applied) -> Vec<Result<Allocation>> {
    match a {
        Applied::Allocated { results, .. } => results,
        other => unreachable!("alloc gave {other:?}"),
    }
}

/// Who is joining: a local service's registration, as the leader plans it.
#[derive(Debug, Clone, Default)]
pub struct Joining {
    pub requested: Option<LocalServiceId>,
    pub device_id: u32,
    pub segments: Vec<SegmentSpec>,
    pub recovered: Vec<Recovered>,
}

fn unit_results(a: Applied) -> Vec<Result<()>> {
    match a {
        Applied::Committed(r) | Applied::Aborted(r) | Applied::Removed(r) => r,
        other => unreachable!("expected per-item results, got {other:?}"),
    }
}

/// The leader's side of the metadata: it decides (placements, victims, ids) against
/// the applied [`StateMachine`] and keeps the soft state that is never replicated:
/// read leases, and the keys a proposed command is about to drop.
pub struct Leader {
    config: MetaConfig,
    leases: Leases,
    /// Lookups of these wait until the command dropping them is applied or fails, so
    /// no reader is leased bytes that are about to be freed.
    doomed: FxHashMap<Key, u32>,
    next_lease_sweep_ms: u64,
    /// Reads of objects only on SSD, and those read often enough to copy back into
    /// memory, by the local service whose SSD tier holds them. Advice, like the
    /// eviction order: a new leader starts counting again.
    ssd_reads: FxHashMap<Key, u8>,
    to_promote: std::collections::BTreeMap<LocalServiceId, Vec<Key>>,
    /// Objects an `evict` waits for, by the local service whose SSD tier is to store
    /// them: handed to it before the rest of its backlog. Advice, like `to_promote`.
    store_first: std::collections::BTreeMap<LocalServiceId, Vec<Key>>,
    /// Most bytes the memory media may hold (memcached's `cache_memlimit`): puts past
    /// it evict first. The leader's policy, like the eviction order.
    memory_limit: Option<u64>,
    /// `Alloc` commands proposed and not yet applied, oldest first, when allocations
    /// are pipelined (see [`Leader::pipeline_allocs`]): each plan replays them.
    unapplied: Option<VecDeque<Unapplied>>,
}

/// An `Alloc` command in the log that the state machine has not applied yet.
struct Unapplied {
    /// [`StateMachine::allocs_applied`] once it is applied.
    applied_at: u64,
    alloc: InFlight,
}

impl Leader {
    pub fn new(config: MetaConfig) -> Result<Self> {
        config.validate()?;
        let mut leases = Leases::default();
        leases.skew_ms = config.clock_skew.as_millis() as u64;
        Ok(Leader {
            config,
            leases,
            doomed: FxHashMap::default(),
            next_lease_sweep_ms: 0,
            ssd_reads: FxHashMap::default(),
            to_promote: Default::default(),
            store_first: Default::default(),
            memory_limit: None,
            unapplied: None,
        })
    }

    /// Lets allocations be planned while earlier `Alloc` commands are still on their
    /// way through the log: every plan then replays those (see
    /// [`Leader::plan_alloc`]). The proposer must put commands in the log in the
    /// order they were planned, and call [`Leader::alloc_unknown`] when one fails.
    pub fn pipeline_allocs(&mut self) {
        self.unapplied.get_or_insert_with(VecDeque::new);
    }

    /// A proposed `Alloc` command failed, so it may or may not be applied later: the
    /// plans stop counting on the order of what is in flight. (Until the next term, a
    /// late one can make a later plan's item fail as out of memory; it never makes
    /// two objects share memory, since `apply` allocates.)
    pub fn alloc_unknown(&mut self) {
        if let Some(u) = &mut self.unapplied {
            u.clear();
        }
    }

    pub fn config(&self) -> &MetaConfig {
        &self.config
    }

    /// Called when this node becomes leader. If an earlier leader may have granted
    /// read leases (`inherited`), their readers may still be copying, so nothing is
    /// freed for one read-lease length.
    pub fn begin_term(&mut self, now_ms: u64, inherited: bool) {
        self.alloc_unknown();
        if inherited {
            let lease_ms = self.config.read_lease.as_millis() as u64;
            self.leases.hold_all_until(now_ms.saturating_add(lease_ms));
            // Nor does it know its predecessor's capabilities: committed puts' (pending
            // ones' deadlines are in the state) and released leases'.
            let put_ms = self.config.put_lease.as_millis() as u64;
            self.leases
                .fence_all_until(now_ms.saturating_add(lease_ms.max(put_ms)));
        }
    }

    /// Records a data-plane capability issued for `key`'s memory, valid until
    /// `until_ms` (a put's deadline, a read lease's end); in-process stores issue none.
    pub fn fence(&mut self, key: &Key, cap: Cap, until_ms: u64) {
        self.leases.fence(key, cap, until_ms);
    }

    /// Every owner of `key`'s memory refuses `cap` now (it was revoked: the put was
    /// committed or aborted, the lease released).
    pub fn unfence(&mut self, key: &Key, cap: Cap) {
        self.leases.unfence(key, cap);
    }

    /// The holds for a command freeing `keys`' memory at `now_ms` (see
    /// [`Command::Remove`]): most keys need none.
    pub(crate) fn holds<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k Key>,
        now_ms: u64,
    ) -> Vec<(Key, u64)> {
        keys.into_iter()
            .filter_map(|k| {
                let until = self.leases.fenced_until(k);
                (until > now_ms).then(|| (k.clone(), until))
            })
            .collect()
    }

    fn doom(&mut self, keys: &[Key]) {
        for k in keys {
            *self.doomed.entry(k.clone()).or_default() += 1;
        }
    }

    fn undoom(&mut self, keys: &[Key]) {
        for k in keys {
            if let Some(n) = self.doomed.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    self.doomed.remove(k);
                }
            }
        }
    }

    // ---- local services ----

    /// The command adding a local service. `requested` picks the id (it must be
    /// free); otherwise the smallest free id is used. Segment ids start at
    /// `first_segment` or above. `recovered` objects were found on its SSD segment.
    pub fn plan_register(
        &self,
        sm: &StateMachine,
        joining: Joining,
        first_segment: SegmentId,
        attachment: Vec<u8>,
        now_ms: u64,
    ) -> Result<Command> {
        let Joining {
            requested,
            device_id,
            segments,
            recovered,
        } = joining;
        if segments.is_empty() || segments.iter().all(|s| s.medium == Medium::Ssd) {
            return Err(Error::invalid(
                "a local service must offer a memory segment",
            ));
        }
        if segments.iter().filter(|s| s.medium == Medium::Ssd).count() > 1 {
            return Err(Error::invalid(
                "a local service offers at most one SSD segment",
            ));
        }
        if !recovered.is_empty() && !segments.iter().any(|s| s.medium == Medium::Ssd) {
            return Err(Error::invalid("recovered objects need an SSD segment"));
        }
        if let Some(s) = segments.iter().find(|s| s.capacity < PAGE_SIZE) {
            return Err(Error::invalid(format!(
                "segment of {} bytes is smaller than one {PAGE_SIZE}-byte page",
                s.capacity
            )));
        }
        check_registration(&segments, &recovered)?;
        let service = match requested {
            Some(id) => id,
            None => (0..=LocalServiceId::MAX)
                .find(|id| sm.service(*id).is_none())
                .ok_or_else(|| Error::OutOfCapacity("no free local service id".into()))?,
        };
        Ok(Command::RegisterService {
            service,
            device_id,
            segments,
            first_segment,
            attachment,
            now_ms,
            recovered,
        })
    }

    // ---- puts ----

    /// Reserves space for each item of each request; one result per item, in order,
    /// all requests' items one after the other. Objects become visible only once
    /// committed.
    pub fn plan_alloc(
        &mut self,
        sm: &mut StateMachine,
        requests: Vec<AllocRequest>,
        now_ms: u64,
    ) -> Plan<Allocation> {
        let len = requests.iter().map(|r| r.items.len()).sum();
        let mut plan = Plan::new(len, allocated);
        let mut planned = Vec::with_capacity(len);
        let applied = sm.allocs_applied();
        if let Some(u) = &mut self.unapplied {
            while u.front().is_some_and(|a| a.applied_at <= applied) {
                u.pop_front();
            }
        }
        let drop_after = {
            let unapplied = self.unapplied.iter().flatten().map(|u| &u.alloc);
            let mut planner = Planner::after(sm.plan_view(), &self.leases, now_ms, unapplied)
                .with_limit(self.memory_limit)
                .with_high_watermark(self.config.evict_threshold_high);
            let mut i = 0;
            for req in requests {
                let n = req.items.len();
                let refused = check_batch(n).and_then(|()| req.config.validated_replicas());
                let replicas = match refused {
                    Ok(r) => r,
                    Err(e) => {
                        plan.results[i..i + n].fill(Some(Err(e)));
                        i += n;
                        continue;
                    }
                };
                for (key, size) in req.items {
                    if let Some(again) = planner.repeated(&key, size, req.writer) {
                        plan.results[i] = Some(Ok(again));
                    } else {
                        match planner.plan(key, size, replicas, &req.config) {
                            Ok(mut item) => {
                                item.writer = req.writer;
                                item.lease_ms = (req.lease_ms > 0).then_some(req.lease_ms);
                                plan.slots.push(i);
                                planned.push(item);
                            }
                            Err(e) => plan.results[i] = Some(Err(e)),
                        }
                    }
                    i += 1;
                }
            }
            planner.finish(
                self.config.evict_threshold_high,
                self.config.evict_threshold_low,
            )
        };
        if !planned.is_empty() {
            plan.doomed = planned
                .iter()
                .flat_map(|p| p.drop_first.iter())
                .chain(&drop_after)
                .cloned()
                .collect();
            self.doom(&plan.doomed);
            let holds = self.holds(&plan.doomed, now_ms);
            let put_ms = self.config.put_lease.as_millis() as u64;
            if let Some(u) = &mut self.unapplied {
                u.push_back(Unapplied {
                    applied_at: u.back().map_or(applied, |a| a.applied_at) + 1,
                    alloc: InFlight::new(now_ms, &planned, &drop_after),
                });
            }
            plan.command = Some(Command::Alloc {
                now_ms,
                lease_ms: put_ms,
                items: planned,
                drop_after,
                holds,
            });
        }
        plan
    }

    /// Makes written objects visible.
    pub fn plan_commit(
        &mut self,
        sm: &StateMachine,
        items: Vec<(Key, PutId)>,
        now_ms: u64,
    ) -> Plan<()> {
        // A replacing put retires the object it replaces: readers may still be copying
        // it (read leases) or reach it (capabilities), so its memory is held until
        // then; and no lease is granted on it while the commit is in flight.
        let replaced: Vec<Key> = items
            .iter()
            .filter(|(k, id)| sm.replacing(k, *id))
            .map(|(k, _)| k.clone())
            .collect();
        let holds = replaced
            .iter()
            .filter_map(|k| self.retiring_hold(k, now_ms))
            .collect();
        let mut plan = self.plan_each(items.len(), unit_results, || Command::Commit {
            now_ms,
            items,
            holds,
        });
        if plan.command.is_some() && !replaced.is_empty() {
            self.doom(&replaced);
            plan.doomed = replaced;
        }
        plan
    }

    /// Until when the object a put retires may still be reached (by a reader's lease
    /// or a capability): its memory is held that long.
    fn retiring_hold(&self, key: &Key, now_ms: u64) -> Option<(Key, u64)> {
        let until = self
            .leases
            .fenced_until(key)
            .max(self.leases.held_until(key, now_ms));
        (until > now_ms).then(|| (key.clone(), until))
    }

    /// A [`Command::Put`] of one object, for a writer that fills it while the state
    /// stays locked, where the put needs no more than its space: one replica on no
    /// preferred service, nothing to evict (see [`place_alone`]), the key free or held
    /// by a committed, unexpired object it replaces, and no `Alloc` in flight to plan
    /// after. `None` where [`Self::plan_alloc`] must plan it.
    pub fn plan_put(
        &self,
        sm: &StateMachine,
        key: &[u8],
        size: u64,
        config: &ReplicateConfig,
        now_ms: u64,
    ) -> Option<Command> {
        let simple = self.unapplied.is_none()
            && config.preferred_local_service_ids.is_empty()
            && config.validated_replicas().ok() == Some(1)
            && !self.doomed.contains_key(key);
        if !simple {
            return None;
        }
        // A replaced object's key is reused: the directory keeps its own copy anyway.
        let (key, replacing) = match sm.entry(key) {
            None => (Key::new(key).ok()?, false),
            Some((k, o)) if config.replace && o.is_committed() && !o.expired(now_ms) => {
                (k.clone(), true)
            }
            Some(_) => return None,
        };
        let (segment, ttl_ms) = place_alone(
            sm.segments(),
            size,
            config,
            self.memory_limit,
            self.config.evict_threshold_high,
        )?;
        let holds = replacing
            .then(|| self.retiring_hold(&key, now_ms))
            .flatten()
            .into_iter()
            .collect();
        Some(Command::Put {
            now_ms,
            key,
            size,
            segments: smallvec::smallvec![segment],
            ttl_ms,
            replace: config.replace,
            holds,
        })
    }

    /// Rolls back puts whose writes failed.
    pub fn plan_abort(&self, items: Vec<(Key, PutId)>, now_ms: u64) -> Plan<()> {
        let holds = self.holds(items.iter().map(|(k, _)| k), now_ms);
        self.plan_each(items.len(), unit_results, || Command::Abort {
            items,
            now_ms,
            holds,
        })
    }

    /// A command whose every item is answered by applying it.
    fn plan_each<T: Clone>(
        &self,
        len: usize,
        outcome: fn(Applied) -> Vec<Result<T>>,
        command: impl FnOnce() -> Command,
    ) -> Plan<T> {
        if let Err(e) = check_batch(len) {
            return Plan::refused(len, e, outcome);
        }
        let mut plan = Plan::new(len, outcome);
        plan.slots = (0..len).collect();
        plan.command = Some(command());
        plan
    }

    // ---- reads ----

    /// Locates readable objects and leases each found one to the caller, who must
    /// `release` it after reading (the lease also ends by itself after `lease_ms`, or
    /// `read_lease` when 0). `None` when one of the keys is about to be dropped by a
    /// command in flight: ask again once it is finished.
    pub fn lookup(
        &mut self,
        sm: &mut StateMachine,
        keys: &[Key],
        lease_ms: u64,
        now_ms: u64,
    ) -> Option<Vec<Result<Located>>> {
        if let Err(e) = check_batch(keys.len()) {
            return Some(vec![Err(e); keys.len()]);
        }
        if keys.iter().any(|k| self.doomed.contains_key(k)) {
            return None;
        }
        let lease_ms = match lease_ms {
            0 => self.config.read_lease.as_millis() as u64,
            l => l,
        };
        let until_ms = now_ms.saturating_add(lease_ms);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let found = sm.visible(key, now_ms).map(|o| (o.size, o.blobs.to_vec()));
            if let Ok((_, blobs)) = &found {
                self.count_ssd_read(sm, key, blobs);
            }
            out.push(found.map(|(size, blobs)| {
                sm.touch(key.as_bytes());
                Located {
                    size,
                    blobs,
                    lease: self.leases.grant(key, until_ms, now_ms),
                    lease_ms,
                    until_ms,
                    tags: Vec::new(),
                }
            }));
        }
        Some(out)
    }

    /// Ends leases `lookup` granted. Releasing an ended or unknown lease does nothing.
    pub fn release(&mut self, leases: &[(Key, LeaseId)]) {
        for (key, id) in leases {
            self.leases.release(key, *id);
        }
    }

    pub fn exists(&self, sm: &StateMachine, keys: &[Key], now_ms: u64) -> Vec<Result<bool>> {
        if let Err(e) = check_batch(keys.len()) {
            return vec![Err(e); keys.len()];
        }
        keys.iter()
            .map(|k| Ok(sm.visible(k, now_ms).is_ok()))
            .collect()
    }

    pub fn key_info(&self, sm: &StateMachine, keys: &[Key], now_ms: u64) -> Vec<KeyInfo> {
        if let Err(e) = check_batch(keys.len()) {
            return keys
                .iter()
                .map(|k| KeyInfo::failed(k.as_bytes(), &e))
                .collect();
        }
        keys.iter()
            .map(|key| match sm.visible(key, now_ms) {
                Ok(o) => {
                    let locations: Vec<BlobLocation> = o
                        .blobs
                        .iter()
                        .map(|b| BlobLocation {
                            service: b.service,
                            device_id: sm.service(b.service).map_or(0, |s| s.device_id),
                            medium: b.medium,
                            segment: b.segment,
                            offset: b.offset,
                            gva: 0,
                        })
                        .collect();
                    KeyInfo {
                        key: key.as_bytes().to_vec(),
                        size: o.size,
                        device_id: locations.first().map_or(0, |l| l.device_id),
                        status: 0,
                        locations,
                    }
                }
                Err(e) => KeyInfo::failed(key.as_bytes(), &e),
            })
            .collect()
    }

    // ---- removal and housekeeping ----

    /// Removes objects; a leased one answers -3104 and stays.
    pub fn plan_remove(&mut self, sm: &StateMachine, keys: Vec<Key>, now_ms: u64) -> Plan<()> {
        if let Err(e) = check_batch(keys.len()) {
            return Plan::refused(keys.len(), e, unit_results);
        }
        let mut plan = Plan::new(keys.len(), unit_results);
        let mut doomed = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            if let Err(e) = sm.visible(&key, now_ms) {
                plan.results[i] = Some(Err(e));
            } else if self.leases.held(&key, now_ms) {
                plan.results[i] = Some(Err(Error::LeaseNotExpired));
            } else {
                plan.slots.push(i);
                doomed.push(key);
            }
        }
        if !doomed.is_empty() {
            self.doom(&doomed);
            plan.command = Some(Command::Remove {
                now_ms,
                holds: self.holds(&doomed, now_ms),
                keys: doomed.clone(),
            });
            plan.doomed = doomed;
        }
        plan
    }

    /// Commands rolling back puts whose lease ended and freeing expired objects (none
    /// when there is nothing to do); also forgets ended read leases. Expired objects
    /// are invisible already, so no lookup can be leased one: nothing is doomed.
    pub fn plan_reclaim(&mut self, sm: &StateMachine, now_ms: u64) -> Vec<Command> {
        const MAX_PER_CALL: usize = 4096;
        let mut out = Vec::new();
        let overdue: Vec<(Key, PutId)> = sm
            .overdue_puts(now_ms)
            .take(MAX_PER_CALL)
            .map(|(k, id)| (k.clone(), id))
            .collect();
        if !overdue.is_empty() {
            tracing::debug!(count = overdue.len(), "rolling back puts whose lease ended");
            // Rolled back at their deadline: only the skew margin may still hold them.
            let holds = self.holds(overdue.iter().map(|(k, _)| k), now_ms);
            out.push(Command::Abort {
                items: overdue,
                now_ms,
                holds,
            });
        }
        let expired: Vec<Key> = sm
            .expired(now_ms)
            .filter(|k| !self.leases.held(k, now_ms))
            .take(MAX_PER_CALL)
            .cloned()
            .collect();
        if !expired.is_empty() {
            out.push(Command::Remove {
                now_ms,
                holds: self.holds(&expired, now_ms),
                keys: expired,
            });
        }
        // Quarantined memory no capability can reach any more (every one revoked)
        // goes back before its hold ends.
        let mut unheld: Vec<Key> = sm
            .quarantined()
            .filter(|q| {
                q.0 > now_ms
                    && self.leases.fenced_until(&q.4) <= now_ms
                    && !self.leases.held(&q.4, now_ms)
            })
            .map(|q| q.4.clone())
            .collect();
        unheld.sort_unstable();
        unheld.dedup();
        unheld.truncate(MAX_PER_CALL);
        if !unheld.is_empty() {
            out.push(Command::Unhold {
                now_ms,
                keys: unheld,
            });
        }
        // Quarantined memory whose hold ended goes back (any command with a time does
        // it; this one when nothing else comes).
        if out.is_empty() && sm.quarantined().next().is_some_and(|q| q.0 <= now_ms) {
            out.push(Command::Remove {
                now_ms,
                keys: Vec::new(),
                holds: Vec::new(),
            });
        }
        // Leases of readers that died without releasing: swept once per lease length.
        if now_ms >= self.next_lease_sweep_ms {
            self.leases.sweep(now_ms);
            self.next_lease_sweep_ms =
                now_ms.saturating_add(self.config.read_lease.as_millis() as u64);
        }
        out
    }
}

/// A [`Leader`] and its [`StateMachine`] in one process: each command is applied the
/// moment it is decided (the embedded pool, and tests). A replicated meta service runs
/// the same leader and sends the commands through its Raft log instead.
pub struct MetaStore {
    leader: Leader,
    sm: StateMachine,
    journal: Option<Vec<Command>>,
}

impl MetaStore {
    pub fn new(config: MetaConfig) -> Result<Self> {
        Self::with_first_segment_id(config, 1)
    }

    /// A store whose segment ids start at `first` (see
    /// [`StateMachine::with_first_segment_id`]).
    pub fn with_first_segment_id(config: MetaConfig, first: SegmentId) -> Result<Self> {
        Ok(MetaStore {
            sm: StateMachine::new(config.eviction_policy).with_first_segment_id(first),
            leader: Leader::new(config)?,
            journal: None,
        })
    }

    pub fn config(&self) -> &MetaConfig {
        self.leader.config()
    }

    /// Caps the bytes the memory media hold at `bytes` from now on: puts past it evict
    /// first, as memcached's `cache_memlimit`. Refused (and nothing changes) below what
    /// they hold now.
    pub fn set_memory_limit(&mut self, bytes: u64) -> Result<()> {
        let used = self.sm.memory_used();
        if bytes < used {
            return Err(Error::OutOfMemory(format!(
                "a limit of {bytes} bytes is below the {used} bytes in use"
            )));
        }
        self.leader.memory_limit = Some(bytes);
        Ok(())
    }

    /// The cap [`Self::set_memory_limit`] set, if any.
    pub fn memory_limit(&self) -> Option<u64> {
        self.leader.memory_limit
    }

    pub fn state(&self) -> &StateMachine {
        &self.sm
    }

    /// Keeps a copy of every command applied from now on (to replay it elsewhere).
    pub fn record_journal(&mut self) {
        self.journal = Some(Vec::new());
    }

    pub fn take_journal(&mut self) -> Vec<Command> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The single point where decisions become state.
    fn execute(&mut self, cmd: Command) -> Applied {
        if let Some(j) = &mut self.journal {
            j.push(cmd.clone());
        }
        self.sm.apply(cmd)
    }

    fn run<T: Clone>(&mut self, mut plan: Plan<T>) -> Vec<Result<T>> {
        let applied = plan.take_command().map(|c| Ok(self.execute(c)));
        plan.finish(&mut self.leader, applied)
    }

    // ---- local services ----

    /// Adds a local service with its segments (see [`Leader::plan_register`]).
    pub fn register_service(
        &mut self,
        requested: Option<LocalServiceId>,
        device_id: u32,
        segments: Vec<SegmentSpec>,
    ) -> Result<(LocalServiceId, Vec<SegmentId>)> {
        let joining = Joining {
            requested,
            device_id,
            segments,
            recovered: Vec::new(),
        };
        self.join(joining, 0).map(|(id, ids, _)| (id, ids))
    }

    /// Adds a local service that may bring objects of its SSD tier; its id, its
    /// segments' ids, and which recovered objects were taken.
    pub fn join(
        &mut self,
        joining: Joining,
        now_ms: u64,
    ) -> Result<(LocalServiceId, Vec<SegmentId>, Vec<bool>)> {
        let cmd = self
            .leader
            .plan_register(&self.sm, joining, 0, Vec::new(), now_ms)?;
        let Command::RegisterService { service, .. } = cmd else {
            unreachable!("plan_register plans a registration")
        };
        match self.execute(cmd) {
            Applied::Registered(r) => r.map(|(ids, taken)| (service, ids, taken)),
            other => unreachable!("register gave {other:?}"),
        }
    }

    /// Removes a local service (it left or stopped heartbeating). Returns how many
    /// objects lost their last replica.
    pub fn remove_service(&mut self, service: LocalServiceId) -> Result<usize> {
        if self.sm.service(service).is_none() {
            return Err(Error::invalid(format!("unknown local service {service}")));
        }
        match self.execute(Command::RemoveService { service }) {
            Applied::ServiceRemoved { dropped_objects } => Ok(dropped_objects),
            other => unreachable!("remove service gave {other:?}"),
        }
    }

    // ---- puts ----

    /// Reserves space for each `(key, size)`; one result per item, in order. Objects
    /// become visible only once committed.
    pub fn alloc(
        &mut self,
        items: Vec<(Key, u64)>,
        config: &ReplicateConfig,
        now_ms: u64,
    ) -> Vec<Result<Allocation>> {
        self.alloc_leased(items, config, 0, now_ms)
    }

    /// [`alloc`](Self::alloc) with the puts' own lease length (0: `put_lease`).
    pub fn alloc_leased(
        &mut self,
        items: Vec<(Key, u64)>,
        config: &ReplicateConfig,
        lease_ms: u64,
        now_ms: u64,
    ) -> Vec<Result<Allocation>> {
        self.reclaim(now_ms);
        let request = AllocRequest {
            items,
            config: config.clone(),
            writer: 0,
            lease_ms,
        };
        let plan = self.leader.plan_alloc(&mut self.sm, vec![request], now_ms);
        self.run(plan)
    }

    /// Puts one object that `write` fills while this store stays locked, so no one
    /// sees it before it is whole: its space is reserved and it is committed in one
    /// command (see [`Leader::plan_put`]). Only replicas on segments `mapped` says
    /// `write` reaches. `None` (nothing done) where the put must take the general
    /// path: alloc, write, commit. A failed `write` leaves the key without an object.
    pub fn put_now(
        &mut self,
        key: &[u8],
        size: u64,
        config: &ReplicateConfig,
        now_ms: u64,
        mapped: impl Fn(SegmentId) -> bool,
        write: impl FnOnce(&[Blob]) -> Result<()>,
    ) -> Option<Result<()>> {
        self.reclaim(now_ms);
        let cmd = self
            .leader
            .plan_put(&self.sm, key, size, config, now_ms)
            .filter(|c| matches!(c, Command::Put { segments, .. } if segments.iter().all(|&s| mapped(s))))?;
        let blobs = match self.execute(cmd) {
            Applied::Put(Ok(blobs)) => blobs,
            // Fragmentation left no range of the size: the general path evicts.
            Applied::Put(Err(_)) => return None,
            other => unreachable!("put gave {other:?}"),
        };
        let written = write(&blobs);
        if written.is_err() {
            if let Ok(key) = Key::new(key) {
                self.execute(Command::Remove {
                    now_ms,
                    keys: vec![key],
                    holds: Vec::new(),
                });
            }
        }
        Some(written)
    }

    /// Makes written objects visible.
    pub fn commit(&mut self, items: Vec<(Key, PutId)>, now_ms: u64) -> Vec<Result<()>> {
        let plan = self.leader.plan_commit(&self.sm, items, now_ms);
        self.run(plan)
    }

    /// Rolls back puts whose writes failed.
    pub fn abort(&mut self, items: Vec<(Key, PutId)>, now_ms: u64) -> Vec<Result<()>> {
        let plan = self.leader.plan_abort(items, now_ms);
        self.run(plan)
    }

    // ---- reads ----

    /// Locates readable objects and leases each found one to the caller.
    pub fn lookup(&mut self, keys: &[Key], now_ms: u64) -> Vec<Result<Located>> {
        self.lookup_leased(keys, 0, now_ms)
    }

    /// [`lookup`](Self::lookup) with the leases' own length (0: `read_lease`).
    pub fn lookup_leased(
        &mut self,
        keys: &[Key],
        lease_ms: u64,
        now_ms: u64,
    ) -> Vec<Result<Located>> {
        self.leader
            .lookup(&mut self.sm, keys, lease_ms, now_ms)
            .expect("a store that applies at once has no command in flight")
    }

    /// Ends leases `lookup` granted.
    pub fn release(&mut self, leases: &[(Key, LeaseId)]) {
        self.leader.release(leases)
    }

    /// Reads `key` without a lease: `read` gets the object's size and replicas while
    /// this store stays borrowed, so nothing frees or reuses their memory meanwhile (for
    /// an in-process reader of a small object, cheaper than a lease granted and then
    /// released). `None` where a lookup is needed instead: the object has no replica
    /// in memory, or its memory is being freed. Takes `&self` so readers can share the
    /// store; the caller reports the access with [`MetaStore::touch`].
    pub fn read_now<R>(
        &self,
        key: &[u8],
        now_ms: u64,
        read: impl FnOnce(u64, &[Blob]) -> R,
    ) -> Option<Result<R>> {
        if self.leader.doomed.contains_key(key) {
            return None;
        }
        match self.sm.visible(key, now_ms) {
            Err(e) => Some(Err(e)),
            Ok(o) if o.blobs.iter().all(|b| b.medium == Medium::Ssd) => None,
            Ok(o) => Some(Ok(read(o.size, &o.blobs))),
        }
    }

    /// Marks `key` as just read, for the eviction policy (after a [`MetaStore::read_now`]).
    pub fn touch(&mut self, key: &[u8]) {
        self.sm.touch(key);
    }

    pub fn exists(&self, keys: &[Key], now_ms: u64) -> Vec<Result<bool>> {
        self.leader.exists(&self.sm, keys, now_ms)
    }

    pub fn key_info(&self, keys: &[Key], now_ms: u64) -> Vec<KeyInfo> {
        self.leader.key_info(&self.sm, keys, now_ms)
    }

    // ---- the SSD tier ----

    /// The next work of `service`'s SSD tier (see [`Leader::ssd_work`]).
    pub fn ssd_work(&self, service: LocalServiceId, limit: usize) -> SsdWork {
        self.leader.ssd_work(&self.sm, service, limit, u64::MAX)
    }

    /// Records what `service`'s SSD tier stored and erased (see [`Leader::plan_stored`]).
    pub fn stored(
        &mut self,
        service: LocalServiceId,
        items: Vec<(Key, PutId, u64)>,
        trash_done: u64,
        now_ms: u64,
    ) -> Vec<Result<()>> {
        let plan = self
            .leader
            .plan_stored(&self.sm, service, items, trash_done, now_ms);
        self.run(plan)
    }

    /// Gives memory to the objects of `service` read often on SSD; what to copy where.
    pub fn promote(
        &mut self,
        service: LocalServiceId,
        limit: usize,
        now_ms: u64,
    ) -> Vec<ToPromote> {
        let (plan, records) = self.leader.plan_promote(&self.sm, service, limit, now_ms);
        let blobs = self.run(plan);
        promotions(records, blobs)
    }

    /// One round of `service`'s SSD tier (the replicated meta service's `ssd_sync`,
    /// applied at once).
    pub fn ssd_sync(
        &mut self,
        service: LocalServiceId,
        report: SsdReport,
        now_ms: u64,
    ) -> Result<SsdAnswer> {
        report.check()?;
        let limit = report.limit();
        self.promoted(report.promoted);
        let stored = self.stored(service, report.stored, report.trash_done, now_ms);
        let promote = self.promote(service, limit, now_ms);
        Ok(SsdAnswer {
            stored,
            current: self.leader.still_current(&self.sm, &report.copied, now_ms),
            work: self
                .leader
                .ssd_work(&self.sm, service, limit, report.max_bytes),
            promote,
        })
    }

    /// Makes promoted objects' memory readable.
    pub fn promoted(&mut self, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        let plan = self.leader.plan_promoted(items);
        self.run(plan)
    }

    /// One round of `service`'s HBM upkeep (the replicated meta service's `hbm_sync`,
    /// applied at once).
    pub fn hbm_sync(
        &mut self,
        service: LocalServiceId,
        report: HbmReport,
        now_ms: u64,
    ) -> Result<HbmAnswer> {
        report.check()?;
        let limit = report.limit();
        let plan = self
            .leader
            .plan_hbm_demoted(service, report.demoted, now_ms);
        let demoted = self.run(plan);
        let (plan, from) = self
            .leader
            .plan_hbm_demotion(&self.sm, service, limit, now_ms);
        let staged = self.run(plan);
        Ok(HbmAnswer {
            demoted,
            demote: demotions(from, staged),
        })
    }

    // ---- removal and housekeeping ----

    /// Removes objects; a leased one answers -3104 and stays.
    pub fn remove(&mut self, keys: Vec<Key>, now_ms: u64) -> Vec<Result<()>> {
        let plan = self.leader.plan_remove(&self.sm, keys, now_ms);
        self.run(plan)
    }

    /// Removes every committed object no reader holds (see
    /// [`Leader::plan_remove_all`]); how many were removed.
    pub fn remove_all(&mut self, now_ms: u64) -> usize {
        let plans = self.leader.plan_remove_all(&self.sm, now_ms);
        plans
            .into_iter()
            .map(|plan| self.run(plan).iter().filter(|r| r.is_ok()).count())
            .sum()
    }

    /// One step of an evict from DRAM to SSD (see [`Leader::plan_evict`]).
    pub fn evict(
        &mut self,
        keys: Vec<Key>,
        src: Medium,
        dst: Medium,
        now_ms: u64,
    ) -> Vec<Result<TierMove>> {
        let plan = self.leader.plan_evict(&self.sm, keys, src, dst, now_ms);
        self.run(plan)
    }

    /// One step of a prefetch from SSD to DRAM (see [`Leader::plan_prefetch`]).
    pub fn prefetch(
        &mut self,
        keys: &[Key],
        src: Medium,
        dst: Medium,
        now_ms: u64,
    ) -> Vec<Result<TierMove>> {
        self.leader.plan_prefetch(&self.sm, keys, src, dst, now_ms)
    }

    /// Rolls back puts whose lease ended, frees expired objects and forgets ended read
    /// leases. Cheap when there is nothing to do; returns how many objects it freed.
    pub fn reclaim(&mut self, now_ms: u64) -> usize {
        let mut freed = 0;
        for cmd in self.leader.plan_reclaim(&self.sm, now_ms) {
            freed += match self.execute(cmd) {
                Applied::Aborted(r) | Applied::Removed(r) => r.len(),
                _ => 0,
            };
        }
        freed
    }
}

/// Largest object the pool accepts (256 TiB): far above any segment, and small enough
/// that page arithmetic on it cannot overflow.
pub const MAX_OBJECT_BYTES: u64 = 1 << 48;

fn check_batch(len: usize) -> Result<()> {
    if len > MAX_BATCH_OP_COUNT {
        return Err(Error::invalid(format!(
            "batch of {len} keys is above the limit of {MAX_BATCH_OP_COUNT}"
        )));
    }
    Ok(())
}

/// Segments one local service may offer: one per medium is the norm, and DRAM and HBM
/// may come per device.
pub const MAX_SEGMENTS_PER_SERVICE: usize = 16;
/// Largest segment the pool takes (1 PiB): beyond any host's memory or disk, and far
/// enough below 2^64 that no sum of a pool's segments overflows.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 50;

/// What a registration's sizes and counts must satisfy before any arithmetic on them:
/// they come from the network. Each recovered object must fit the SSD segment it is
/// on, and together they must fit it, one page each at least.
fn check_registration(segments: &[SegmentSpec], recovered: &[Recovered]) -> Result<()> {
    if segments.len() > MAX_SEGMENTS_PER_SERVICE {
        return Err(Error::invalid(format!(
            "{} segments offered; a local service offers at most {MAX_SEGMENTS_PER_SERVICE}",
            segments.len()
        )));
    }
    if let Some(s) = segments.iter().find(|s| s.capacity > MAX_SEGMENT_BYTES) {
        return Err(Error::invalid(format!(
            "a segment of {} bytes is above the limit of {MAX_SEGMENT_BYTES}",
            s.capacity
        )));
    }
    let ssd = segments
        .iter()
        .find(|s| s.medium == Medium::Ssd)
        .map_or(0, |s| s.capacity);
    if recovered.len() as u64 > ssd / PAGE_SIZE {
        return Err(Error::invalid(format!(
            "{} recovered objects cannot fit an SSD segment of {ssd} bytes",
            recovered.len()
        )));
    }
    let mut total = 0u64;
    for r in recovered {
        if r.size == 0 || r.size > ssd {
            return Err(Error::invalid(format!(
                "recovered object {} of {} bytes does not fit an SSD segment of {ssd} bytes",
                r.key, r.size
            )));
        }
        total = total.saturating_add(pages_for(r.size) * PAGE_SIZE);
    }
    if total > ssd {
        return Err(Error::invalid(format!(
            "recovered objects of {total} bytes cannot fit an SSD segment of {ssd} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
