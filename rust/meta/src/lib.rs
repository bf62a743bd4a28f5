//! Metadata of the pool: where every object lives and who may touch it.
//!
//! [`StateMachine`] is the replicated, deterministic part (objects, segments, one
//! allocator per segment); [`MetaStore`] is the leader around it that chooses
//! placements and victims and tracks read leases. Neither performs I/O or reads a
//! clock: callers pass the time in.

mod alloc;
mod policy;
mod state;
mod store;

pub use alloc::{pages_for, PageAllocator, Savepoint};
pub use policy::{EvictionPolicy, PolicyKind};
pub use state::{
    AllocItem, Allocation, Applied, Command, Counters, Image, Object, ObjectState, PutId,
    Recovered, Segment, SegmentSpec, ServiceInfo, StateMachine,
};
pub use store::{check_evict_media, check_prefetch_media, TierMove, REMOVE_ALL_CHUNK};
pub use store::{
    promotions, AllocRequest, Joining, Leader, LeaseId, Located, MetaConfig, MetaStore, Plan,
    SsdAnswer, SsdReport, SsdWork, ToPromote, ToStore, MAX_OBJECT_BYTES,
};
