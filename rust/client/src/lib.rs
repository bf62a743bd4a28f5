//! The MemCache Hybrid client: what Rust users call, and what the C, C++ and Python
//! front ends forward to.
//!
//! [`ObjectStore`] is the async API; [`BlockingObjectStore`] wraps it for threads that
//! are not async; [`raw`] turns the C API's pointers into slices in one place. With no
//! cluster configured, the store runs on an [`EmbeddedPool`] in this process.
//!
//! ```
//! use memcache_client::{BlockingObjectStore, ClientConfig, CopyDirection, ReplicateConfig};
//!
//! let store = BlockingObjectStore::new(ClientConfig::with_dram(64 << 20))?;
//! store.init(/* device_id */ 0, /* init_bm: contribute memory */ true)?;
//!
//! store.put("k", b"value")?;
//! assert_eq!(store.get("k")?, b"value");
//!
//! // A KV block as layers: stored as one object, scattered back with the same sizes.
//! let (k_cache, v_cache) = (vec![1u8; 128 << 10], vec![2u8; 16 << 10]);
//! let layers: [&[u8]; 2] = [&k_cache, &v_cache];
//! store.put_from_layers("block-7", &layers, CopyDirection::H2G, &ReplicateConfig::default())?;
//! let (mut k_out, mut v_out) = (vec![0u8; 128 << 10], vec![0u8; 16 << 10]);
//! let size = store.get_into_layers("block-7", &mut [&mut k_out, &mut v_out], CopyDirection::G2H)?;
//! assert_eq!((size, k_out, v_out), ((144 << 10) as u64, k_cache, v_cache));
//!
//! assert_eq!(store.remove("missing").unwrap_err().code(), -3007);
//! store.tear_down()?;
//! # Ok::<(), memcache_client::Error>(())
//! ```

mod blocking;
mod config;
mod device;
mod embedded;
mod inplace;
pub mod layered;
mod meta_client;
pub mod raw;
pub mod seed_config;
mod session;
mod store;

pub use blocking::BlockingObjectStore;
pub use config::{ClientConfig, TransportKind};
pub use device::DeviceBuf;
pub use embedded::EmbeddedPool;
pub use inplace::{CopyWay, Piece};
pub use session::DataPlaneHeld;
pub use store::ObjectStore;

pub use embedded::{MetaConfig, PolicyKind};
pub use memcache_core::{
    catch_panic, code_of, Clock, CopyDirection, Error, Key, KeyInfo, LocalServiceId, Medium,
    ReplicateConfig, Result, MAX_BATCH_OP_COUNT, MAX_KEY_LEN, MAX_REPLICAS,
};
pub use memcache_local::LocalServiceConfig;
