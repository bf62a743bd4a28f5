//! The leader's side of the metadata: it turns requests into [`Command`]s (choosing
//! placements and victims), applies them to the [`StateMachine`], and keeps the soft
//! state that is never replicated: read leases. With a single node the "log" is just
//! [`MetaStore::execute`]; a replicated meta service proposes the same commands instead.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use memcache_core::{
    Blob, BlobLocation, Error, Key, KeyInfo, LocalServiceId, ReplicateConfig, Result, SegmentId,
    MAX_BATCH_OP_COUNT, PAGE_SIZE,
};

use crate::policy::PolicyKind;
use crate::state::{Allocation, Applied, Command, PutId, SegmentSpec, StateMachine};

mod leases;
mod planner;

pub use leases::LeaseId;
use leases::Leases;
use planner::Planner;

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
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            evict_threshold_high: 90,
            evict_threshold_low: 80,
            put_lease: Duration::from_secs(10),
            read_lease: Duration::from_secs(5),
            eviction_policy: PolicyKind::Lru,
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

/// Where a readable object lives; the reader holds `lease` on it until it releases it
/// (or the lease ends by itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Located {
    pub size: u64,
    pub blobs: Vec<Blob>,
    pub lease: LeaseId,
    /// One read capability per blob for the TCP data plane (see `Allocation::tags`).
    pub tags: Vec<u64>,
}

pub struct MetaStore {
    config: MetaConfig,
    sm: StateMachine,
    leases: Leases,
    next_lease_sweep_ms: u64,
    journal: Option<Vec<Command>>,
}

impl MetaStore {
    pub fn new(config: MetaConfig) -> Result<Self> {
        Self::with_first_segment_id(config, 1)
    }

    /// A store whose segment ids start at `first` (see
    /// [`StateMachine::with_first_segment_id`]).
    pub fn with_first_segment_id(config: MetaConfig, first: SegmentId) -> Result<Self> {
        config.validate()?;
        Ok(MetaStore {
            sm: StateMachine::new(config.eviction_policy).with_first_segment_id(first),
            config,
            leases: Leases::default(),
            next_lease_sweep_ms: 0,
            journal: None,
        })
    }

    pub fn config(&self) -> &MetaConfig {
        &self.config
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

    // ---- local services ----

    /// Adds a local service with its segments. `requested` picks the id (it must be
    /// free); otherwise the smallest free id is used.
    pub fn register_service(
        &mut self,
        requested: Option<LocalServiceId>,
        device_id: u32,
        segments: Vec<SegmentSpec>,
    ) -> Result<(LocalServiceId, Vec<SegmentId>)> {
        if segments.is_empty() {
            return Err(Error::invalid("a local service must offer a segment"));
        }
        if let Some(s) = segments.iter().find(|s| s.capacity < PAGE_SIZE) {
            return Err(Error::invalid(format!(
                "segment of {} bytes is smaller than one {PAGE_SIZE}-byte page",
                s.capacity
            )));
        }
        let service = match requested {
            Some(id) => id,
            None => (0..=LocalServiceId::MAX)
                .find(|id| self.sm.service(*id).is_none())
                .ok_or_else(|| Error::OutOfCapacity("no free local service id".into()))?,
        };
        match self.execute(Command::RegisterService {
            service,
            device_id,
            segments,
        }) {
            Applied::Registered(r) => r.map(|ids| (service, ids)),
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
        if let Err(e) = check_batch(items.len()) {
            return vec![Err(e); items.len()];
        }
        let replicas = match config.validated_replicas() {
            Ok(n) => n,
            Err(e) => return vec![Err(e); items.len()],
        };
        self.reclaim(now_ms);
        let ttl_ms = config.ttl.map(|t| (t.as_millis() as u64).max(1));
        let mut results: Vec<Option<Result<Allocation>>> = vec![None; items.len()];
        let mut slots = Vec::with_capacity(items.len());
        let mut planned = Vec::with_capacity(items.len());
        let drop_after = {
            let mut planner = Planner::new(self.sm.plan_view(), &self.leases, now_ms);
            let preferred = &config.preferred_local_service_ids;
            for (i, (key, size)) in items.into_iter().enumerate() {
                match planner.plan(key, size, replicas, preferred, ttl_ms) {
                    Ok(item) => {
                        slots.push(i);
                        planned.push(item);
                    }
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            planner.finish(
                self.config.evict_threshold_high,
                self.config.evict_threshold_low,
            )
        };
        if !planned.is_empty() {
            let cmd = Command::Alloc {
                now_ms,
                lease_ms: self.config.put_lease.as_millis() as u64,
                items: planned,
                drop_after,
            };
            let Applied::Allocated {
                results: applied, ..
            } = self.execute(cmd)
            else {
                unreachable!("alloc gives Allocated")
            };
            for (slot, r) in slots.into_iter().zip(applied) {
                debug_assert!(r.is_ok(), "the plan held but apply refused: {r:?}");
                results[slot] = Some(r);
            }
        }
        results.into_iter().map(Option::unwrap).collect()
    }

    /// Makes written objects visible.
    pub fn commit(&mut self, items: Vec<(Key, PutId)>, now_ms: u64) -> Vec<Result<()>> {
        if let Err(e) = check_batch(items.len()) {
            return vec![Err(e); items.len()];
        }
        match self.execute(Command::Commit { now_ms, items }) {
            Applied::Committed(r) => r,
            other => unreachable!("commit gave {other:?}"),
        }
    }

    /// Rolls back puts whose writes failed.
    pub fn abort(&mut self, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        if let Err(e) = check_batch(items.len()) {
            return vec![Err(e); items.len()];
        }
        match self.execute(Command::Abort { items }) {
            Applied::Aborted(r) => r,
            other => unreachable!("abort gave {other:?}"),
        }
    }

    // ---- reads ----

    /// Locates readable objects and leases each found one to the caller, who must
    /// `release` it after reading (the lease also ends by itself).
    pub fn lookup(&mut self, keys: &[Key], now_ms: u64) -> Vec<Result<Located>> {
        if let Err(e) = check_batch(keys.len()) {
            return vec![Err(e); keys.len()];
        }
        let until_ms = now_ms.saturating_add(self.config.read_lease.as_millis() as u64);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let found = self
                .sm
                .visible(key, now_ms)
                .map(|o| (o.size, o.blobs.clone()));
            out.push(found.map(|(size, blobs)| {
                self.sm.touch(key);
                Located {
                    size,
                    blobs,
                    lease: self.leases.grant(key, until_ms, now_ms),
                    tags: Vec::new(),
                }
            }));
        }
        out
    }

    /// Ends leases `lookup` granted. Releasing an ended or unknown lease does nothing.
    pub fn release(&mut self, leases: &[(Key, LeaseId)]) {
        for (key, id) in leases {
            self.leases.release(key, *id);
        }
    }

    pub fn exists(&self, keys: &[Key], now_ms: u64) -> Vec<Result<bool>> {
        if let Err(e) = check_batch(keys.len()) {
            return vec![Err(e); keys.len()];
        }
        keys.iter()
            .map(|k| Ok(self.sm.visible(k, now_ms).is_ok()))
            .collect()
    }

    pub fn key_info(&self, keys: &[Key], now_ms: u64) -> Vec<KeyInfo> {
        if let Err(e) = check_batch(keys.len()) {
            return keys
                .iter()
                .map(|k| KeyInfo::failed(k.as_bytes(), &e))
                .collect();
        }
        keys.iter()
            .map(|key| match self.sm.visible(key, now_ms) {
                Ok(o) => {
                    let locations: Vec<BlobLocation> = o
                        .blobs
                        .iter()
                        .map(|b| BlobLocation {
                            service: b.service,
                            device_id: self.sm.service(b.service).map_or(0, |s| s.device_id),
                            medium: b.medium,
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
    pub fn remove(&mut self, keys: Vec<Key>, now_ms: u64) -> Vec<Result<()>> {
        if let Err(e) = check_batch(keys.len()) {
            return vec![Err(e); keys.len()];
        }
        let mut results: Vec<Option<Result<()>>> = vec![None; keys.len()];
        let mut slots = Vec::new();
        let mut doomed = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            if let Err(e) = self.sm.visible(&key, now_ms) {
                results[i] = Some(Err(e));
            } else if self.leases.held(&key, now_ms) {
                results[i] = Some(Err(Error::LeaseNotExpired));
            } else {
                slots.push(i);
                doomed.push(key);
            }
        }
        if !doomed.is_empty() {
            let Applied::Removed(applied) = self.execute(Command::Remove {
                now_ms,
                keys: doomed,
            }) else {
                unreachable!("remove gives Removed")
            };
            for (slot, r) in slots.into_iter().zip(applied) {
                results[slot] = Some(r);
            }
        }
        results.into_iter().map(Option::unwrap).collect()
    }

    /// Rolls back puts whose lease ended, frees expired objects and forgets ended read
    /// leases. Cheap when there is nothing to do; returns how many objects it freed.
    pub fn reclaim(&mut self, now_ms: u64) -> usize {
        const MAX_PER_CALL: usize = 4096;
        let overdue: Vec<(Key, PutId)> = self
            .sm
            .overdue_puts(now_ms)
            .take(MAX_PER_CALL)
            .map(|(k, id)| (k.clone(), id))
            .collect();
        let mut freed = 0;
        if !overdue.is_empty() {
            tracing::debug!(count = overdue.len(), "rolling back puts whose lease ended");
            freed += overdue.len();
            self.execute(Command::Abort { items: overdue });
        }
        let expired: Vec<Key> = self
            .sm
            .expired(now_ms)
            .filter(|k| !self.leases.held(k, now_ms))
            .take(MAX_PER_CALL)
            .cloned()
            .collect();
        if !expired.is_empty() {
            freed += expired.len();
            self.execute(Command::Remove {
                now_ms,
                keys: expired,
            });
        }
        // Leases of readers that died without releasing: swept once per lease length.
        if now_ms >= self.next_lease_sweep_ms {
            self.leases.sweep(now_ms);
            self.next_lease_sweep_ms =
                now_ms.saturating_add(self.config.read_lease.as_millis() as u64);
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

#[cfg(test)]
mod tests;
