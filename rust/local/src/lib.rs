//! The memory a local service contributes to the pool, and the data plane that moves
//! bytes between callers' buffers and that memory without staging copies; `ssd` is the
//! store of the SSD tier, `tier` keeps it in step with the pool, and `hbm` moves cold
//! objects out of device memory.

mod copy;
mod device_segment;
mod fdpass;
mod hbm;
mod metrics;
mod running;
mod segment;
mod service;
pub mod ssd;
mod tcp;
mod tier;
mod transport;

pub use copy::{
    calibrate as calibrate_copies, calibrate_and_wait as calibrate_copies_and_wait,
    copy_slice_with, kernels as copy_kernels, CopyPool, Kernel, Kernels, Piece,
};
pub use device_segment::{DeviceHandle, DeviceSegment};
pub use fdpass::{fetch_segment, SegmentServer, Served};
pub use hbm::{remote_hbm_sync, Demoter, HbmSyncFn};
pub use metrics::LocalMetrics;
pub use running::RunningLocalService;
pub use segment::{Segment, SegmentTable, ShmSegment};
pub use service::{LocalService, LocalServiceConfig};
pub use tcp::{TcpPeer, TcpTransport, IDLE_TIMEOUT, MAX_IDLE_PER_PEER};
pub use tier::{remote_sync, Rounds, SsdTier, SyncFn, Syncer, TierLoop};
/// The unit tests measure what inputs make this crate allocate (see `tcp`'s).
#[cfg(test)]
#[global_allocator]
static ALLOC_PROBE: memcache_core::alloc_probe::AllocProbe = memcache_core::alloc_probe::AllocProbe;

pub use transport::{check_part, check_room, check_whole, part_of, ShmTransport, Transport};
