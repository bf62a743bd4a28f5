//! The replicated part of the metadata: a deterministic state machine.
//!
//! Every change is a [`Command`] applied with [`StateMachine::apply`]. Commands carry the
//! leader's decisions as values (which segments hold each replica, which objects to
//! evict, the time), so replicas that apply the same commands in the same order reach
//! the same state: offsets inside a segment come from the segment's deterministic
//! allocator. Nothing here performs I/O or reads a clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use memcache_core::{Blob, Error, Key, LocalServiceId, Medium, Result, SegmentId, PAGE_SIZE};
use memcache_proto::{Allocation, PutId, Recovered, SegmentSpec};

use crate::alloc::{pages_for, PageAllocator};
use crate::policy::{EvictionPolicy, PolicyKind};

mod tier;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Segment {
    pub id: SegmentId,
    pub service: LocalServiceId,
    pub spec: SegmentSpec,
    alloc: PageAllocator,
    /// SSD segments only: bytes their objects take (in whole pages). An SSD blob's
    /// offset is its owner's record id, not a place the allocator chose.
    #[serde(default)]
    ssd_used: u64,
    /// SSD segments only: records whose objects are gone, `(record id, key)`, oldest
    /// first, until their owner says it erased them.
    #[serde(default)]
    trash: VecDeque<(u64, Key)>,
    /// Sequence number of the first trash entry (entries are numbered from 0 as they
    /// are added), so the owner's report of what it erased can be repeated safely.
    #[serde(default)]
    trash_base: u64,
}

impl Segment {
    pub fn capacity(&self) -> u64 {
        self.alloc.capacity_bytes()
    }
    pub fn used(&self) -> u64 {
        match self.spec.medium {
            Medium::Ssd => self.ssd_used,
            _ => self.alloc.used_bytes(),
        }
    }
    pub fn free(&self) -> u64 {
        self.capacity().saturating_sub(self.used())
    }
    /// Records of gone objects the owner has not yet erased, oldest first, and the
    /// sequence number of the first.
    pub fn trash(&self) -> (u64, impl Iterator<Item = &(u64, Key)>) {
        (self.trash_base, self.trash.iter())
    }
    pub fn allocator(&self) -> &PageAllocator {
        &self.alloc
    }
    pub(crate) fn allocator_mut(&mut self) -> &mut PageAllocator {
        &mut self.alloc
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub id: LocalServiceId,
    pub device_id: u32,
    pub segments: Vec<SegmentId>,
    /// What the serving layer keeps with the service (its data endpoint and capability
    /// key), replicated so that a new leader can serve it at once; opaque here.
    pub attachment: Vec<u8>,
}

/// An object's replicas. One is the common case and costs no allocation of its own.
pub type Replicas = SmallVec<[Blob; 1]>;

/// A put in progress: space is reserved and the writer is copying; invisible to
/// readers. Rolled back when `deadline_ms` passes without a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pending {
    pub deadline_ms: u64,
    /// The put attempt's writer token (0 for none): an alloc repeated with the same
    /// token gets this allocation back instead of -3006.
    pub writer: u64,
    /// Starts counting at the commit.
    pub ttl_ms: Option<u64>,
}

/// What few objects have, kept out of line so that a committed object without a TTL
/// (the common case) pays one pointer for all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Rare {
    pending: Option<Pending>,
    expires_ms: Option<u64>,
    /// Memory its SSD tier is copying it into (promotion), or DRAM its local service
    /// is copying its HBM replica into (demotion); readers see it once done.
    staging: Option<Blob>,
}

/// One directory entry. It is the bulk of the meta service's memory (one per stored
/// object, a million and more), so it is kept small: 72 bytes with one replica inline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Object {
    pub size: u64,
    pub put_id: PutId,
    /// The commit time (the allocation's until then).
    pub created_ms: u64,
    pub blobs: Replicas,
    rare: Option<Box<Rare>>,
}

impl Object {
    /// An allocated object that its writer is filling.
    pub fn pending(size: u64, put_id: PutId, now_ms: u64, blobs: Replicas, p: Pending) -> Self {
        let mut o = Object::committed(size, put_id, now_ms, blobs, None);
        o.rare_mut().pending = Some(p);
        o
    }

    /// A committed object.
    pub fn committed(
        size: u64,
        put_id: PutId,
        created_ms: u64,
        blobs: Replicas,
        expires_ms: Option<u64>,
    ) -> Self {
        let mut o = Object {
            size,
            put_id,
            created_ms,
            blobs,
            rare: None,
        };
        if expires_ms.is_some() {
            o.rare_mut().expires_ms = expires_ms;
        }
        o
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Drops the out-of-line part once it holds nothing.
    fn shed(&mut self) {
        if self.rare.as_deref() == Some(&Rare::default()) {
            self.rare = None;
        }
    }

    /// The put in progress, None once committed.
    pub fn put_in_progress(&self) -> Option<&Pending> {
        self.rare.as_ref()?.pending.as_ref()
    }

    pub fn is_committed(&self) -> bool {
        self.put_in_progress().is_none()
    }

    /// Commits the put at `now_ms`: its TTL starts. Returns what the put was, or None
    /// where it was already committed.
    pub fn commit(&mut self, now_ms: u64) -> Option<Pending> {
        let p = self.rare.as_mut()?.pending.take()?;
        self.created_ms = now_ms;
        self.rare_mut().expires_ms = p.ttl_ms.map(|t| now_ms.saturating_add(t));
        self.shed();
        Some(p)
    }

    pub fn expires_ms(&self) -> Option<u64> {
        self.rare.as_ref()?.expires_ms
    }

    pub fn staging(&self) -> Option<Blob> {
        self.rare.as_ref()?.staging
    }

    pub fn set_staging(&mut self, blob: Option<Blob>) {
        self.rare_mut().staging = blob;
        self.shed();
    }

    /// Readable at `now_ms`: committed and not past its TTL.
    pub fn visible(&self, now_ms: u64) -> bool {
        self.is_committed() && !self.expired(now_ms)
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms().is_some_and(|t| t <= now_ms)
    }

    /// Has a replica on an SSD segment.
    pub fn on_ssd(&self) -> bool {
        self.blobs.iter().any(|b| b.medium == Medium::Ssd)
    }

    /// Has a replica in memory (DRAM or HBM).
    pub fn in_memory(&self) -> bool {
        self.blobs.iter().any(|b| b.medium != Medium::Ssd)
    }

    /// Eviction from memory keeps it on SSD (demotes it) rather than dropping it.
    pub fn demotes(&self, now_ms: u64) -> bool {
        !self.expired(now_ms) && self.on_ssd() && self.in_memory()
    }
}

/// One object of an `Alloc` command: the leader chose one segment per replica and the
/// objects to drop to make room for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocItem {
    pub key: Key,
    pub size: u64,
    pub segments: Vec<SegmentId>,
    pub ttl_ms: Option<u64>,
    pub writer: u64,
    /// How long the put may write before it is rolled back, when not the command's
    /// default (an in-place writer asks for its own, `batch_alloc`'s `leaseTtlMs`).
    pub lease_ms: Option<u64>,
    /// Dropped (if still committed) just before this item is allocated.
    pub drop_first: Vec<Key>,
    /// A committed object under the key is replaced when this put commits (see
    /// `ReplicateConfig::replace`).
    #[serde(default)]
    pub replace: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Adds a local service and its segments; segment ids are assigned in order, from
    /// `first_segment` or the next unused id, whichever is larger. `recovered` objects
    /// go on its (first) SSD segment, in order, each unless its key is taken, it has
    /// expired or the segment is full.
    RegisterService {
        service: LocalServiceId,
        device_id: u32,
        segments: Vec<SegmentSpec>,
        first_segment: SegmentId,
        attachment: Vec<u8>,
        #[serde(default)]
        now_ms: u64,
        #[serde(default)]
        recovered: Vec<Recovered>,
    },
    /// A local service left or was declared dead: its segments and every replica in
    /// them go; objects left with no replica go too.
    RemoveService { service: LocalServiceId },
    /// For each item in order: drops its `drop_first` objects (victims and expired
    /// objects the leader chose), then reserves its space. Then drops `drop_after`
    /// (eviction down to the low watermark). Items stay invisible until committed.
    Alloc {
        now_ms: u64,
        lease_ms: u64,
        items: Vec<AllocItem>,
        drop_after: Vec<Key>,
        /// See [`Command::Remove::holds`].
        #[serde(default)]
        holds: Vec<(Key, u64)>,
    },
    /// A put whose writer fills the space while it holds the state (an in-process
    /// writer that keeps the store locked): its space is reserved and it is committed
    /// in this one step, retiring the committed object of its key where `replace`.
    /// Nothing is evicted for it: the leader plans it only where nothing has to be.
    Put {
        now_ms: u64,
        key: Key,
        size: u64,
        /// One per replica.
        segments: SmallVec<[SegmentId; 1]>,
        ttl_ms: Option<u64>,
        replace: bool,
        /// For the object it retires: see [`Command::Remove::holds`].
        holds: Vec<(Key, u64)>,
    },
    Commit {
        now_ms: u64,
        items: Vec<(Key, PutId)>,
        /// For the objects replacing puts retire: see [`Command::Remove::holds`].
        #[serde(default)]
        holds: Vec<(Key, u64)>,
    },
    /// Rolls back puts that failed or whose lease ended.
    Abort {
        items: Vec<(Key, PutId)>,
        #[serde(default)]
        now_ms: u64,
        /// See [`Command::Remove::holds`].
        #[serde(default)]
        holds: Vec<(Key, u64)>,
    },
    Remove {
        now_ms: u64,
        keys: Vec<Key>,
        /// Keys whose memory a data-plane capability may still reach, with the time
        /// (wall-clock ms, skew margin included) until which their freed ranges stay
        /// in quarantine instead of going back to the allocator.
        #[serde(default)]
        holds: Vec<(Key, u64)>,
    },
    /// The owner of SSD segment `segment` wrote these objects there, as records
    /// `(key, put, record id)`: each one still current gets that SSD replica. First,
    /// `drop_first` objects (victims the leader chose) lose their SSD replica, and the
    /// trash entries numbered below `trash_done`, which the owner erased, are forgotten.
    Stored {
        now_ms: u64,
        segment: SegmentId,
        trash_done: u64,
        drop_first: Vec<Key>,
        items: Vec<(Key, PutId, u64)>,
    },
    /// Objects read often while only on SSD get memory on these segments, which
    /// their SSD tier fills (each unless the object changed or the space is short),
    /// after `drop_first` objects (victims the leader chose) are evicted from memory.
    Promote {
        now_ms: u64,
        drop_first: Vec<Key>,
        items: Vec<(Key, PutId, SegmentId)>,
        /// See [`Command::Remove::holds`].
        #[serde(default)]
        holds: Vec<(Key, u64)>,
    },
    /// The SSD tier filled these objects' memory: readers may use it.
    Promoted { items: Vec<(Key, PutId)> },
    /// An explicit evict (DRAM → SSD): each object that has an SSD replica loses its
    /// DRAM replicas; one without an SSD replica is left as it is (-3101).
    Demote {
        now_ms: u64,
        keys: Vec<Key>,
        /// See [`Command::Remove::holds`].
        #[serde(default)]
        holds: Vec<(Key, u64)>,
    },
    /// The quarantined memory of these keys' former objects goes back to its allocator
    /// now: every capability that could reach it was revoked.
    Unhold { now_ms: u64, keys: Vec<Key> },
    /// Cold objects in HBM get DRAM on these segments, of the local service holding
    /// their HBM replica, which that service fills with a device-to-host copy (each
    /// unless the object changed or the space is short).
    StageHbmDemotion {
        now_ms: u64,
        items: Vec<(Key, PutId, SegmentId)>,
    },
    /// Local service `service` filled these objects' DRAM: it becomes their replica in
    /// place of the HBM one, whose range is freed.
    HbmDemoted {
        now_ms: u64,
        service: LocalServiceId,
        items: Vec<(Key, PutId)>,
        /// See [`Command::Remove::holds`].
        holds: Vec<(Key, u64)>,
    },
}

impl Command {
    /// The command's time, where it has one, and its holds (taken out).
    fn fence(&mut self) -> (Option<u64>, Vec<(Key, u64)>) {
        match self {
            Command::Alloc { now_ms, holds, .. }
            | Command::Remove { now_ms, holds, .. }
            | Command::Abort { now_ms, holds, .. }
            | Command::Promote { now_ms, holds, .. }
            | Command::Demote { now_ms, holds, .. }
            | Command::HbmDemoted { now_ms, holds, .. }
            | Command::Put { now_ms, holds, .. }
            | Command::Commit { now_ms, holds, .. } => (Some(*now_ms), std::mem::take(holds)),
            Command::Stored { now_ms, .. }
            | Command::StageHbmDemotion { now_ms, .. }
            | Command::RegisterService { now_ms, .. }
            | Command::Unhold { now_ms, .. } => (Some(*now_ms), Vec::new()),
            Command::RemoveService { .. } | Command::Promoted { .. } => (None, Vec::new()),
        }
    }
}

/// What applying a command produced, one result per item where the command has items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The segment ids, and for each recovered object whether it was taken.
    Registered(Result<(Vec<SegmentId>, Vec<bool>)>),
    ServiceRemoved {
        dropped_objects: usize,
    },
    Allocated {
        dropped: usize,
        results: Vec<Result<Allocation>>,
    },
    /// The put's replicas, for its writer to fill.
    Put(Result<Replicas>),
    Committed(Vec<Result<()>>),
    Aborted(Vec<Result<()>>),
    Removed(Vec<Result<()>>),
    Stored(Vec<Result<()>>),
    /// The memory each promoted object is to be copied into.
    Promoting(Vec<Result<Blob>>),
    Promoted(Vec<Result<()>>),
    Demoted(Vec<Result<()>>),
    /// The DRAM each object leaving HBM is to be copied into.
    HbmStaged(Vec<Result<Blob>>),
    HbmDemoted(Vec<Result<()>>),
}

/// Counters that only move forward, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counters {
    pub committed: u64,
    pub evicted: u64,
    pub aborted: u64,
    pub removed: u64,
    /// Evictions from memory that kept the object on SSD.
    #[serde(default)]
    pub demoted: u64,
    /// Objects that got an SSD replica.
    #[serde(default)]
    pub stored: u64,
    /// Objects copied back into memory from SSD.
    #[serde(default)]
    pub promoted: u64,
    /// Objects moved out of HBM into DRAM.
    #[serde(default)]
    pub hbm_demoted: u64,
}

/// The object directory. Objects are boxed: a hash table keeps up to twice its
/// entries' room free, so an `Object` inline would cost its size twice over; boxed,
/// the table's slots are 24 bytes.
pub(crate) type Directory = FxHashMap<Key, Box<Object>>;

pub struct StateMachine {
    policy_kind: PolicyKind,
    objects: Directory,
    /// Puts in flight that replace the committed object of their key at commit
    /// (`AllocItem::replace`); the old object stays readable until then.
    replacements: Directory,
    segments: BTreeMap<SegmentId, Segment>,
    services: BTreeMap<LocalServiceId, ServiceInfo>,
    /// In-flight puts by lease deadline, for rollback.
    pending: BTreeSet<(u64, PutId, Key)>,
    /// Objects with a TTL by expiry time, for lazy freeing.
    expiring: BTreeSet<(u64, Key)>,
    /// Committed objects in memory, in eviction order. Reads reorder it on the leader
    /// only: it is advice for choosing victims, never an input of `apply`.
    policy: Box<dyn EvictionPolicy>,
    /// Derived from `objects` (rebuilt, never imaged): objects in memory that a local
    /// service with an SSD segment should store, `(service, commit time, key)`, and
    /// objects on SSD in eviction (commit) order, `(segment, commit time, key)`.
    unstored: BTreeSet<(LocalServiceId, u64, Key)>,
    ssd_order: BTreeSet<(SegmentId, u64, Key)>,
    next_segment: SegmentId,
    next_put: PutId,
    counters: Counters,
    /// Memory ranges freed while a data-plane capability for them may still be valid,
    /// `(until ms, segment, offset, len)`: handed back to their allocator by the first
    /// command whose time reaches `until`, so no late writer or reader of the old
    /// object reaches a new one. Replicated state.
    quarantine: BTreeSet<(u64, SegmentId, u64, u64, Key)>,
    /// While a command applies: its holds and its time (see [`Command::fence`]).
    holding: FxHashMap<Key, u64>,
    applying_ms: u64,
    /// `Alloc` commands applied by this replica since it was built: how a leader that
    /// pipelines allocations tells which of its own are applied. Not replicated state.
    allocs_applied: u64,
}

impl StateMachine {
    pub fn new(policy: PolicyKind) -> Self {
        StateMachine {
            policy_kind: policy,
            objects: FxHashMap::default(),
            replacements: FxHashMap::default(),
            segments: BTreeMap::new(),
            services: BTreeMap::new(),
            pending: BTreeSet::new(),
            expiring: BTreeSet::new(),
            policy: policy.build(),
            unstored: BTreeSet::new(),
            ssd_order: BTreeSet::new(),
            next_segment: 1,
            next_put: 1,
            counters: Counters::default(),
            quarantine: BTreeSet::new(),
            holding: FxHashMap::default(),
            applying_ms: 0,
            allocs_applied: 0,
        }
    }

    /// Everything `apply` depends on, for a snapshot. The eviction order is not in it:
    /// it is advice, rebuilt from commit times on restore.
    pub fn image(&self) -> Image {
        let sorted = |directory: &Directory| {
            let mut objects: Vec<(Key, Object)> = directory
                .iter()
                .map(|(k, o)| (k.clone(), Object::clone(o)))
                .collect();
            objects.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            objects
        };
        Image {
            policy: self.policy_kind,
            objects: sorted(&self.objects),
            replacements: sorted(&self.replacements),
            segments: self.segments.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
            pending: self.pending.iter().cloned().collect(),
            expiring: self.expiring.iter().cloned().collect(),
            next_segment: self.next_segment,
            next_put: self.next_put,
            counters: self.counters,
            quarantine: self.quarantine.iter().cloned().collect(),
        }
    }

    /// The state a snapshot describes.
    pub fn from_image(image: Image) -> Self {
        let mut sm = StateMachine::new(image.policy);
        let mut committed: Vec<(u64, Key)> = Vec::new();
        for (k, o) in image.objects {
            if o.is_committed() && o.in_memory() {
                committed.push((o.created_ms, k.clone()));
            }
            sm.objects.insert(k, Box::new(o));
        }
        committed.sort_unstable();
        for (_, k) in &committed {
            sm.policy.insert(k);
        }
        sm.replacements = image
            .replacements
            .into_iter()
            .map(|(k, o)| (k, Box::new(o)))
            .collect();
        sm.segments = image.segments.into_iter().map(|s| (s.id, s)).collect();
        sm.services = image.services.into_iter().map(|s| (s.id, s)).collect();
        sm.pending = image.pending.into_iter().collect();
        sm.expiring = image.expiring.into_iter().collect();
        sm.next_segment = image.next_segment;
        sm.next_put = image.next_put;
        sm.counters = image.counters;
        sm.quarantine = image.quarantine.into_iter().collect();
        sm.rebuild_tiers();
        sm
    }

    /// Starts segment ids at `first`. A meta service that starts empty picks a base
    /// from the clock, so ids it hands out never repeat ones an earlier instance gave:
    /// clients may still have those mapped.
    pub fn with_first_segment_id(mut self, first: SegmentId) -> Self {
        self.next_segment = first.max(1);
        self
    }

    pub fn apply(&mut self, mut cmd: Command) -> Applied {
        let (now_ms, holds) = cmd.fence();
        if let Some(now_ms) = now_ms {
            self.release_quarantine(now_ms);
        }
        self.applying_ms = now_ms.unwrap_or(0);
        self.holding = holds.into_iter().collect();
        let applied = self.apply_command(cmd);
        self.holding = FxHashMap::default();
        applied
    }

    /// Hands quarantined ranges whose hold ended by `now_ms` back to their allocator
    /// (those of a segment that left are just forgotten).
    fn release_quarantine(&mut self, now_ms: u64) {
        while let Some(&(until, segment, offset, len, _)) = self.quarantine.first() {
            if until > now_ms {
                break;
            }
            self.quarantine.pop_first();
            if let Some(seg) = self.segments.get_mut(&segment) {
                seg.alloc.free(offset, len);
            }
        }
    }

    /// Bytes the memory media (DRAM, HBM) hold, quarantined ranges included.
    pub fn memory_used(&self) -> u64 {
        self.segments
            .values()
            .filter(|s| s.spec.medium != Medium::Ssd)
            .map(Segment::used)
            .sum()
    }

    /// Quarantined ranges, `(until ms, segment, offset, len, key of the object that
    /// had them)`, soonest first.
    pub fn quarantined(&self) -> impl Iterator<Item = &(u64, SegmentId, u64, u64, Key)> {
        self.quarantine.iter()
    }

    /// Hands back the quarantined ranges of `keys`' former objects.
    fn unhold(&mut self, keys: &[Key]) {
        let keys: rustc_hash::FxHashSet<&Key> = keys.iter().collect();
        let gone: Vec<_> = self
            .quarantine
            .iter()
            .filter(|q| keys.contains(&q.4))
            .cloned()
            .collect();
        for q in gone {
            if let Some(seg) = self.segments.get_mut(&q.1) {
                seg.alloc.free(q.2, q.3);
            }
            self.quarantine.remove(&q);
        }
    }

    fn apply_command(&mut self, cmd: Command) -> Applied {
        match cmd {
            Command::RegisterService {
                service,
                device_id,
                segments,
                first_segment,
                attachment,
                now_ms,
                recovered,
            } => Applied::Registered(
                self.register(service, device_id, segments, first_segment, attachment)
                    .map(|ids| {
                        let taken = self.recover(service, now_ms, recovered);
                        (ids, taken)
                    }),
            ),
            Command::RemoveService { service } => Applied::ServiceRemoved {
                dropped_objects: self.remove_service(service),
            },
            Command::Alloc {
                now_ms,
                lease_ms,
                items,
                drop_after,
                holds: _,
            } => {
                self.allocs_applied += 1;
                let deadline_ms = now_ms.saturating_add(lease_ms);
                let mut dropped = 0;
                let mut results = Vec::with_capacity(items.len());
                for mut item in items {
                    let victims = std::mem::take(&mut item.drop_first);
                    dropped += self.evict_from_memory(&victims, now_ms);
                    let deadline_ms = item
                        .lease_ms
                        .map_or(deadline_ms, |l| now_ms.saturating_add(l));
                    results.push(self.alloc_one(item, now_ms, deadline_ms));
                }
                dropped += self.evict_from_memory(&drop_after, now_ms);
                Applied::Allocated { dropped, results }
            }
            Command::Put {
                now_ms,
                key,
                size,
                segments,
                ttl_ms,
                replace,
                holds: _,
            } => Applied::Put(self.put_one(key, size, &segments, ttl_ms, replace, now_ms)),
            Command::Commit { now_ms, items, .. } => Applied::Committed(
                items
                    .into_iter()
                    .map(|(key, id)| self.commit_one(key, id, now_ms))
                    .collect(),
            ),
            Command::Abort { items, .. } => Applied::Aborted(
                items
                    .into_iter()
                    .map(|(key, id)| match self.objects.get(&key) {
                        Some(o) if o.put_id == id && !o.is_committed() => {
                            self.remove_object(&key);
                            self.counters.aborted += 1;
                            Ok(())
                        }
                        _ if self.replacements.get(&key).is_some_and(|r| r.put_id == id) => {
                            self.drop_replacement(&key);
                            self.counters.aborted += 1;
                            Ok(())
                        }
                        _ => Err(Error::ObjectNotFound),
                    })
                    .collect(),
            ),
            Command::Remove { now_ms, keys, .. } => Applied::Removed(
                keys.into_iter()
                    .map(|key| match self.objects.get(&key) {
                        Some(o) if o.is_committed() => {
                            let visible = !o.expired(now_ms);
                            self.remove_object(&key);
                            if visible {
                                self.counters.removed += 1;
                                Ok(())
                            } else {
                                Err(Error::ObjectNotFound)
                            }
                        }
                        _ => Err(Error::ObjectNotFound),
                    })
                    .collect(),
            ),
            Command::Stored {
                now_ms,
                segment,
                trash_done,
                drop_first,
                items,
            } => {
                if let Some(seg) = self.segments.get_mut(&segment) {
                    while seg.trash_base < trash_done && seg.trash.pop_front().is_some() {
                        seg.trash_base += 1;
                    }
                }
                for key in &drop_first {
                    self.drop_from_ssd(key, segment);
                }
                Applied::Stored(
                    items
                        .into_iter()
                        .map(|(key, put, record)| self.store_one(key, put, segment, record, now_ms))
                        .collect(),
                )
            }
            Command::Promote {
                now_ms,
                drop_first,
                items,
                ..
            } => {
                self.evict_from_memory(&drop_first, now_ms);
                Applied::Promoting(
                    items
                        .into_iter()
                        .map(|(key, put, segment)| self.stage(&key, put, segment, now_ms))
                        .collect(),
                )
            }
            Command::Promoted { items } => Applied::Promoted(
                items
                    .into_iter()
                    .map(|(key, put)| self.promoted(&key, put))
                    .collect(),
            ),
            Command::Unhold { keys, .. } => {
                self.unhold(&keys);
                Applied::Removed(Vec::new())
            }
            Command::Demote { now_ms, keys, .. } => {
                Applied::Demoted(keys.iter().map(|key| self.demote(key, now_ms)).collect())
            }
            Command::StageHbmDemotion { now_ms, items } => Applied::HbmStaged(
                items
                    .into_iter()
                    .map(|(key, put, segment)| self.stage_demotion(&key, put, segment, now_ms))
                    .collect(),
            ),
            Command::HbmDemoted { service, items, .. } => Applied::HbmDemoted(
                items
                    .into_iter()
                    .map(|(key, put)| self.hbm_demoted(&key, put, service))
                    .collect(),
            ),
        }
    }

    fn register(
        &mut self,
        service: LocalServiceId,
        device_id: u32,
        specs: Vec<SegmentSpec>,
        first_segment: SegmentId,
        attachment: Vec<u8>,
    ) -> Result<Vec<SegmentId>> {
        if self.services.contains_key(&service) {
            return Err(Error::RepeatCall(format!(
                "local service {service} is already registered"
            )));
        }
        self.next_segment = self.next_segment.max(first_segment);
        let mut ids = Vec::with_capacity(specs.len());
        for spec in specs {
            let id = self.next_segment;
            self.next_segment += 1;
            let alloc = PageAllocator::new(spec.capacity);
            self.segments.insert(
                id,
                Segment {
                    id,
                    service,
                    spec,
                    alloc,
                    ssd_used: 0,
                    trash: VecDeque::new(),
                    trash_base: 0,
                },
            );
            ids.push(id);
        }
        self.services.insert(
            service,
            ServiceInfo {
                id: service,
                device_id,
                segments: ids.clone(),
                attachment,
            },
        );
        Ok(ids)
    }

    fn remove_service(&mut self, service: LocalServiceId) -> usize {
        let Some(info) = self.services.remove(&service) else {
            return 0;
        };
        for seg in &info.segments {
            self.segments.remove(seg);
        }
        // Sorted, so every replica drops replicas and objects in the same order.
        let on_service = |directory: &Directory| {
            let mut keys: Vec<Key> = directory
                .iter()
                .filter(|(_, o)| o.blobs.iter().any(|b| b.service == service))
                .map(|(k, _)| k.clone())
                .collect();
            keys.sort_unstable();
            keys
        };
        let affected = on_service(&self.objects);
        for key in on_service(&self.replacements) {
            self.drop_replacement(&key);
        }
        let mut dropped = 0;
        for key in affected {
            let obj = self.objects.get_mut(&key).expect("listed above");
            obj.blobs.retain(|b| b.service != service);
            if obj.staging().is_some_and(|b| b.service == service) {
                obj.set_staging(None);
            }
            let keep = !obj.blobs.is_empty() && obj.is_committed();
            if !keep {
                self.remove_object(&key);
                dropped += 1;
            } else if !obj.in_memory() {
                self.policy.remove(&key);
            }
        }
        self.rebuild_tiers();
        dropped
    }

    fn alloc_one(&mut self, item: AllocItem, now_ms: u64, deadline_ms: u64) -> Result<Allocation> {
        let replacing = match self.objects.get(&item.key) {
            None => false,
            Some(o) if item.replace && o.is_committed() => {
                if self.replacements.contains_key(&item.key) {
                    return Err(Error::DuplicatedObject);
                }
                true
            }
            Some(_) => return Err(Error::DuplicatedObject),
        };
        let blobs = self.reserve(&item.key, item.size, &item.segments)?;
        let put_id = self.next_put;
        self.next_put += 1;
        self.pending.insert((deadline_ms, put_id, item.key.clone()));
        let directory = match replacing {
            true => &mut self.replacements,
            false => &mut self.objects,
        };
        directory.insert(
            item.key,
            Box::new(Object::pending(
                item.size,
                put_id,
                now_ms,
                blobs.clone(),
                Pending {
                    deadline_ms,
                    writer: item.writer,
                    ttl_ms: item.ttl_ms,
                },
            )),
        );
        Ok(Allocation {
            put_id,
            blobs: blobs.into_vec(),
            lease_ms: deadline_ms.saturating_sub(now_ms),
            deadline_ms,
            tags: Vec::new(),
        })
    }

    /// `size` bytes on each of `segments`, or nothing.
    fn reserve(&mut self, key: &Key, size: u64, segments: &[SegmentId]) -> Result<Replicas> {
        let mut blobs = Replicas::with_capacity(segments.len());
        for seg_id in segments {
            let placed = self.segments.get_mut(seg_id).and_then(|seg| {
                let offset = seg.alloc.alloc(size)?;
                Some(Blob {
                    service: seg.service,
                    medium: seg.spec.medium,
                    segment: seg.id,
                    offset,
                    len: size,
                })
            });
            match placed {
                Some(b) => blobs.push(b),
                None => {
                    self.free_blobs(key, &blobs);
                    return Err(Error::OutOfMemory(format!(
                        "segment {seg_id} cannot hold {size} bytes"
                    )));
                }
            }
        }
        Ok(blobs)
    }

    /// See [`Command::Put`].
    fn put_one(
        &mut self,
        key: Key,
        size: u64,
        segments: &[SegmentId],
        ttl_ms: Option<u64>,
        replace: bool,
        now_ms: u64,
    ) -> Result<Replicas> {
        let admitted = match self.objects.get(&key) {
            None => true,
            Some(o) => replace && o.is_committed(),
        };
        if !admitted || self.replacements.contains_key(&key) {
            return Err(Error::DuplicatedObject);
        }
        // Where it would take folding an allocator's cache, the general path puts it
        // (its plan decides on the fold); refused, it changes nothing.
        let fits = |id: &SegmentId| {
            self.segments
                .get(id)
                .is_some_and(|s| s.alloc.fits_unfolded(size))
        };
        if !segments.iter().all(fits) {
            return Err(Error::OutOfMemory(format!(
                "no free range of {size} bytes at once"
            )));
        }
        let blobs = self.reserve(&key, size, segments)?;
        let put_id = self.next_put;
        self.next_put += 1;
        let expires_ms = ttl_ms.map(|t| now_ms.saturating_add(t));
        let new = Object::committed(size, put_id, now_ms, blobs.clone(), expires_ms);
        // The old object's entry (and box) takes the new one, so the key the directory
        // and the eviction policy share stays the same allocation.
        let replaced_ranked = match self.objects.get_mut(&key) {
            Some(slot) => {
                let old = std::mem::replace(&mut **slot, new);
                self.retire(&key, old)
            }
            None => {
                self.objects.insert(key.clone(), Box::new(new));
                false
            }
        };
        self.index_committed(key, replaced_ranked);
        Ok(blobs)
    }

    fn commit_one(&mut self, key: Key, id: PutId, now_ms: u64) -> Result<()> {
        let current = self.objects.get(&key).is_some_and(|o| o.put_id == id);
        let mut replaced_ranked = false;
        if !current && self.replacements.get(&key).is_some_and(|r| r.put_id == id) {
            // The replaced object goes (its memory held as long as readers may still
            // reach it) and the new one takes its key, in this one step.
            let new = self.replacements.remove(&key).expect("found above");
            replaced_ranked = self.take_object(&key);
            self.objects.insert(key.clone(), new);
        }
        let Some(obj) = self.objects.get_mut(&key) else {
            return Err(Error::Timeout(
                "the put's lease ended before its commit".into(),
            ));
        };
        if obj.put_id != id {
            return Err(Error::Timeout(
                "the put's lease ended before its commit".into(),
            ));
        }
        let Some(Pending { deadline_ms, .. }) = obj.commit(now_ms) else {
            return Ok(()); // a repeated commit of the same put
        };
        self.pending.remove(&(deadline_ms, id, key.clone()));
        self.index_committed(key, replaced_ranked);
        Ok(())
    }

    /// Enters `key`'s object, just committed, in the indexes: the eviction order (in
    /// the place of the object it replaced, where that one was ranked), the expiry
    /// order and the SSD tier's backlog.
    fn index_committed(&mut self, key: Key, replaced_ranked: bool) {
        let obj = &self.objects[&key];
        let (expires, created, target) = (obj.expires_ms(), obj.created_ms, self.store_target(obj));
        if replaced_ranked {
            self.policy.replace(&key);
        } else {
            self.policy.insert(&key);
        }
        if let Some(t) = expires {
            self.expiring.insert((t, key.clone()));
        }
        if let Some(t) = target {
            self.unstored.insert((t, created, key));
        }
        self.counters.committed += 1;
    }

    /// Whether put `id` is one replacing `key`'s committed object.
    pub fn replacing(&self, key: &Key, id: PutId) -> bool {
        self.replacements.get(key).is_some_and(|r| r.put_id == id)
    }

    /// Rolls back the replacing put of `key`.
    fn drop_replacement(&mut self, key: &Key) {
        let Some(r) = self.replacements.remove(key) else {
            return;
        };
        self.free_blobs(key, &r.blobs);
        if let Some(p) = r.put_in_progress() {
            self.pending.remove(&(p.deadline_ms, r.put_id, key.clone()));
        }
    }

    fn remove_object(&mut self, key: &Key) {
        if self.take_object(key) {
            self.policy.remove(key);
        }
    }

    /// [`Self::remove_object`] but for the eviction policy: whether the policy ranks
    /// `key` still (its object was committed), for the caller to tell it.
    fn take_object(&mut self, key: &Key) -> bool {
        match self.objects.remove(key) {
            Some(obj) => self.retire(key, *obj),
            None => false,
        }
    }

    /// Frees what `key`'s object `obj`, out of the directory now, held, and drops it
    /// from the indexes; whether the eviction policy ranks the key still (as
    /// [`Self::take_object`]).
    fn retire(&mut self, key: &Key, obj: Object) -> bool {
        if let Some(t) = self.store_target(&obj) {
            self.unstored.remove(&(t, obj.created_ms, key.clone()));
        }
        for b in obj.blobs.iter().filter(|b| b.medium == Medium::Ssd) {
            self.ssd_order
                .remove(&(b.segment, obj.created_ms, key.clone()));
        }
        self.free_blobs(key, &obj.blobs);
        self.free_blobs(key, obj.staging().as_slice());
        match obj.put_in_progress() {
            Some(p) => {
                self.pending
                    .remove(&(p.deadline_ms, obj.put_id, key.clone()));
                false
            }
            None => {
                if let Some(t) = obj.expires_ms() {
                    self.expiring.remove(&(t, key.clone()));
                }
                true
            }
        }
    }

    /// Frees `key`'s blobs; its SSD records go to their segment's trash, for the owner
    /// to erase.
    fn free_blobs(&mut self, key: &Key, blobs: &[Blob]) {
        for b in blobs {
            // A blob whose segment already left has nothing to free.
            let Some(seg) = self.segments.get_mut(&b.segment) else {
                continue;
            };
            if seg.spec.medium == Medium::Ssd {
                seg.ssd_used = seg.ssd_used.saturating_sub(pages_for(b.len) * PAGE_SIZE);
                seg.trash.push_back((b.offset, key.clone()));
            } else {
                match self.holding.get(key) {
                    // A capability may still reach the range: not reused before then.
                    Some(&until) if until > self.applying_ms => {
                        let q = (until, b.segment, b.offset, b.len, key.clone());
                        self.quarantine.insert(q);
                    }
                    _ => seg.alloc.free(b.offset, b.len),
                }
            }
        }
    }

    // ---- queries (no change to the state) ----

    pub fn object(&self, key: &(impl AsRef<[u8]> + ?Sized)) -> Option<&Object> {
        self.objects.get(key.as_ref()).map(|o| &**o)
    }

    /// The object and the directory's own copy of its key.
    pub fn entry(&self, key: &[u8]) -> Option<(&Key, &Object)> {
        self.objects.get_key_value(key).map(|(k, o)| (k, &**o))
    }

    /// The object if a reader may see it at `now_ms`.
    pub fn visible(&self, key: &(impl AsRef<[u8]> + ?Sized), now_ms: u64) -> Result<&Object> {
        match self.objects.get(key.as_ref()) {
            Some(o) if o.visible(now_ms) => Ok(o),
            _ => Err(Error::ObjectNotFound),
        }
    }

    pub fn segments(&self) -> impl Iterator<Item = &Segment> + Clone {
        self.segments.values()
    }

    pub fn segment(&self, id: SegmentId) -> Option<&Segment> {
        self.segments.get(&id)
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceInfo> {
        self.services.values()
    }

    pub fn service(&self, id: LocalServiceId) -> Option<&ServiceInfo> {
        self.services.get(&id)
    }

    pub fn objects(&self) -> impl Iterator<Item = (&Key, &Object)> {
        self.objects.iter().map(|(k, o)| (k, &**o))
    }

    /// The first `limit` keys, in byte order, of those readable at `now_ms` that start
    /// with `prefix`, in no order: the caller sorts them (see [`in_order`]) after letting
    /// go of the state, whose lock writers need. Only those keys are cloned.
    pub fn keys_with_prefix(&self, prefix: &[u8], now_ms: u64, limit: usize) -> Vec<Key> {
        let matching = self
            .objects
            .iter()
            .filter(|(k, o)| k.as_bytes().starts_with(prefix) && o.visible(now_ms))
            .map(|(k, _)| k);
        if limit >= self.objects.len() {
            return matching.cloned().collect();
        }
        // The `limit` smallest, the largest of them on top.
        let mut first = std::collections::BinaryHeap::with_capacity(limit + 1);
        for k in matching {
            first.push(k);
            if first.len() > limit {
                first.pop();
            }
        }
        first.into_iter().cloned().collect()
    }

    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// (used, capacity) bytes of all segments of `medium`.
    pub fn usage(&self, medium: Medium) -> (u64, u64) {
        self.segments
            .values()
            .filter(|s| s.spec.medium == medium)
            .fold((0u64, 0u64), |(u, c), s| {
                (u.saturating_add(s.used()), c.saturating_add(s.capacity()))
            })
    }

    /// In-flight puts whose lease ended at `now_ms`, oldest first.
    pub fn overdue_puts(&self, now_ms: u64) -> impl Iterator<Item = (&Key, PutId)> {
        // Ordered by deadline first: no range bound (and its key) to build, on every put.
        self.pending
            .iter()
            .take_while(move |p| p.0 <= now_ms)
            .map(|(_, id, k)| (k, *id))
    }

    /// Committed objects whose TTL ended at `now_ms`, oldest first.
    pub fn expired(&self, now_ms: u64) -> impl Iterator<Item = &Key> {
        expired_in(&self.expiring, now_ms)
    }

    pub fn policy(&self) -> &dyn EvictionPolicy {
        self.policy.as_ref()
    }

    /// Read access to everything and write access to the allocators only, for the
    /// leader to try a plan on them (inside allocator trials) before proposing it.
    pub(crate) fn plan_view(&mut self) -> PlanView<'_> {
        PlanView {
            objects: &self.objects,
            replacements: &self.replacements,
            services: &self.services,
            segments: &mut self.segments,
            expiring: &self.expiring,
            policy: self.policy.as_ref(),
            quarantine: &self.quarantine,
        }
    }

    /// `Alloc` commands this replica has applied since it was built.
    pub fn allocs_applied(&self) -> u64 {
        self.allocs_applied
    }

    /// Records a read for the eviction order (leader only; not part of `apply`).
    pub fn touch(&mut self, key: &[u8]) {
        // The directory's own key: the policy's lists hold the same allocation, which
        // compares equal without reading the bytes again.
        if let Some((key, o)) = self.objects.get_key_value(key) {
            if o.in_memory() {
                self.policy.touch(key);
            }
        }
    }

    /// A digest of everything `apply` decides, for checking that replicas agree.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for directory in [&self.objects, &self.replacements] {
            let mut objects: Vec<_> = directory.iter().collect();
            objects.sort_unstable_by(|a, b| a.0.cmp(b.0));
            objects.hash(&mut h);
        }
        for s in self.segments.values() {
            (s.id, s.service, s.used(), &s.trash, s.trash_base).hash(&mut h);
        }
        self.services.hash(&mut h);
        (self.next_segment, self.next_put, self.counters).hash(&mut h);
        self.quarantine.hash(&mut h);
        h.finish()
    }
}

/// A serializable copy of a [`StateMachine`] (see [`StateMachine::image`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    policy: PolicyKind,
    objects: Vec<(Key, Object)>,
    #[serde(default)]
    replacements: Vec<(Key, Object)>,
    segments: Vec<Segment>,
    services: Vec<ServiceInfo>,
    pending: Vec<(u64, PutId, Key)>,
    expiring: Vec<(u64, Key)>,
    next_segment: SegmentId,
    next_put: PutId,
    counters: Counters,
    #[serde(default)]
    quarantine: Vec<(u64, SegmentId, u64, u64, Key)>,
}

pub(crate) struct PlanView<'a> {
    pub objects: &'a Directory,
    pub replacements: &'a Directory,
    pub services: &'a BTreeMap<LocalServiceId, ServiceInfo>,
    pub segments: &'a mut BTreeMap<SegmentId, Segment>,
    pub expiring: &'a BTreeSet<(u64, Key)>,
    pub policy: &'a dyn EvictionPolicy,
    pub quarantine: &'a BTreeSet<(u64, SegmentId, u64, u64, Key)>,
}

/// Committed objects whose TTL ended at `now_ms`, oldest first.
pub(crate) fn expired_in(
    expiring: &BTreeSet<(u64, Key)>,
    now_ms: u64,
) -> impl Iterator<Item = &Key> {
    // Ordered by expiry first: no range bound (and its key) to build, on every put.
    expiring
        .iter()
        .take_while(move |e| e.0 <= now_ms)
        .map(|(_, k)| k)
}

/// The smallest key, used as the lower end of range bounds.
fn min_key() -> Key {
    Key::new([0u8]).expect("one byte is a valid key")
}

/// `keys` in byte order (for [`StateMachine::keys_with_prefix`]).
pub fn in_order(mut keys: Vec<Key>) -> Vec<Key> {
    keys.sort_unstable();
    keys
}

#[cfg(test)]
mod object_tests {
    use super::*;

    fn blob(offset: u64) -> Blob {
        Blob {
            service: 1,
            medium: Medium::Dram,
            segment: 1,
            offset,
            len: 64,
        }
    }

    #[test]
    fn a_committed_object_without_ttl_holds_nothing_out_of_line() {
        assert!(std::mem::size_of::<Object>() <= 72);
        let pending = Pending {
            deadline_ms: 50,
            writer: 7,
            ttl_ms: None,
        };
        let mut o = Object::pending(64, 3, 10, Replicas::from_buf([blob(0)]), pending);
        assert!(!o.is_committed() && !o.visible(10));
        assert_eq!(o.put_in_progress(), Some(&pending));
        assert_eq!(o.commit(20), Some(pending));
        assert!(o.rare.is_none() && o.visible(20) && o.created_ms == 20);
        assert_eq!(o.commit(30), None, "a repeated commit changes nothing");
        assert_eq!(o.created_ms, 20);

        o.set_staging(Some(blob(64)));
        assert_eq!(o.staging(), Some(blob(64)));
        o.set_staging(None);
        assert!(o.rare.is_none());
    }

    #[test]
    fn a_ttl_starts_at_the_commit_and_survives_an_image() {
        let pending = Pending {
            deadline_ms: 50,
            writer: 0,
            ttl_ms: Some(100),
        };
        let mut o = Object::pending(64, 3, 10, Replicas::from_buf([blob(0)]), pending);
        assert_eq!(o.expires_ms(), None);
        o.commit(20);
        assert_eq!(o.expires_ms(), Some(120));
        assert!(o.visible(119) && !o.visible(120));
        let bytes = bincode::serialize(&o).unwrap();
        assert_eq!(bincode::deserialize::<Object>(&bytes).unwrap(), o);
    }
}
