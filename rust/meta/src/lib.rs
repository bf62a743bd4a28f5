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
    in_order, AllocItem, Applied, Command, Counters, Image, Object, Pending, Replicas, Segment,
    ServiceInfo, StateMachine,
};
pub use store::{
    demotions, promotions, AllocRequest, Joining, Leader, MetaConfig, MetaStore, Plan,
    MAX_OBJECT_BYTES,
};
pub use store::{Cap, REMOVE_ALL_CHUNK};
