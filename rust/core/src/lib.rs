//! Types shared by every MemCache Hybrid crate and front end.
//!
//! Nothing here performs I/O: the metadata state machine, the local services, the
//! client and the FFI layers all speak in these values.

#[cfg(feature = "test_utils")]
pub mod alloc_probe;
mod clock;
mod error;
mod key;
pub mod seed_config;
mod types;

pub use clock::Clock;
pub use error::{catch_panic, code_of, put_code, Error, Result};
pub use key::{Key, MAX_KEY_LEN};
pub use types::{
    Blob, BlobLocation, CopyDirection, KeyInfo, LocalServiceId, Medium, ReplicateConfig, SegmentId,
    MAX_BATCH_OP_COUNT, MAX_REPLICAS, PAGE_SIZE,
};
