//! The MemCache Hybrid client: what Rust users call, and what the C, C++ and Python
//! front ends forward to.
//!
//! [`ObjectStore`] is the async API; [`BlockingObjectStore`] wraps it for threads that
//! are not async; [`raw`] turns the C API's pointers into slices in one place. With no
//! cluster configured, the store runs on an [`EmbeddedPool`] in this process.

mod blocking;
mod config;
mod embedded;
mod meta_client;
pub mod raw;
mod store;

pub use blocking::BlockingObjectStore;
pub use config::ClientConfig;
pub use embedded::{Clock, EmbeddedPool};
pub use store::ObjectStore;

pub use memcache_core::{
    code_of, CopyDirection, Error, Key, KeyInfo, LocalServiceId, Medium, ReplicateConfig, Result,
    MAX_BATCH_OP_COUNT, MAX_KEY_LEN, MAX_REPLICAS,
};
pub use memcache_local::LocalServiceConfig;
pub use memcache_meta::{MetaConfig, PolicyKind};
