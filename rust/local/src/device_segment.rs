//! A segment of device memory (HBM) a local service contributes to the pool. Its bytes
//! are never host-addressable: every copy in or out is one the device runtime makes,
//! and ranges are checked here first, as [`ShmSegment`](crate::ShmSegment) checks its.

use std::sync::Mutex;

use memcache_core::{Error, Result};
use memcache_device::{CopyKind, DeviceCopy, DeviceRuntime};

use crate::segment::check_span;
use crate::transport::{check_room, laid_out, spread};

pub struct DeviceSegment {
    runtime: &'static dyn DeviceRuntime,
    device: u32,
    ptr: u64,
    len: u64,
    origin: Origin,
}

/// Whose memory a segment is, which decides what its end undoes.
enum Origin {
    /// Allocated here; `export`'s handle, once made, is kept for every later asker
    /// (made under the lock, so two first askers at once do not export twice).
    Allocated(Mutex<Option<Vec<u8>>>),
    /// Another process's allocation, mapped here by this handle.
    Imported(Vec<u8>),
}

/// What a same-host process needs to map a device segment: its device, its length and
/// the runtime's inter-process handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHandle {
    pub device: u32,
    pub len: u64,
    pub handle: Vec<u8>,
}

impl DeviceSegment {
    /// `len` bytes of `device`'s memory through the process's device runtime; -3000
    /// with the reason where there is none.
    pub fn create(device: u32, len: u64) -> Result<Self> {
        Self::create_with(memcache_device::runtime()?, device, len)
    }

    /// [`create`](Self::create) through a given runtime.
    pub fn create_with(runtime: &'static dyn DeviceRuntime, device: u32, len: u64) -> Result<Self> {
        let bytes = usize::try_from(len).map_err(|_| Error::invalid("hbm_size too large"))?;
        runtime.set_device(device)?;
        let ptr = runtime.alloc(bytes).map_err(|e| {
            Error::OutOfMemory(format!("allocating {len} bytes on device {device}: {e}"))
        })?;
        Ok(DeviceSegment {
            runtime,
            device,
            ptr,
            len,
            origin: Origin::Allocated(Mutex::new(None)),
        })
    }

    /// Maps the segment another process of this host exported as `shared`.
    pub fn import_with(runtime: &'static dyn DeviceRuntime, shared: &DeviceHandle) -> Result<Self> {
        let ptr = runtime.import(&shared.handle)?;
        Ok(DeviceSegment {
            runtime,
            device: shared.device,
            ptr,
            len: shared.len,
            origin: Origin::Imported(shared.handle.clone()),
        })
    }

    /// The handle other processes of this host map the segment by; made on first use.
    pub fn export(&self) -> Result<DeviceHandle> {
        let Origin::Allocated(exported) = &self.origin else {
            return Err(Error::invalid("an imported segment is not exported again"));
        };
        let mut exported = exported.lock().unwrap_or_else(|e| e.into_inner());
        let handle = match &*exported {
            Some(h) => h.clone(),
            None => {
                self.runtime.set_device(self.device)?;
                let made = self.runtime.export(self.ptr, self.len as usize)?;
                exported.insert(made).clone()
            }
        };
        Ok(DeviceHandle {
            device: self.device,
            len: self.len,
            handle,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address of the segment's start.
    pub fn base(&self) -> u64 {
        self.ptr
    }

    pub fn device(&self) -> u32 {
        self.device
    }

    /// The device address of `offset` when `len` bytes from it end by `limit` and
    /// inside the segment.
    fn check(&self, offset: u64, len: u64, limit: u64) -> Result<u64> {
        check_span(offset, len, limit, self.len).map(|o| self.ptr + o)
    }

    /// Checks that `offset..offset + len` lies inside the segment.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        self.address(offset, len).map(drop)
    }

    /// The device address of `offset`, when `len` bytes from it lie inside the segment.
    pub fn address(&self, offset: u64, len: u64) -> Result<u64> {
        self.check(offset, len, offset.saturating_add(len))
    }

    /// Copies `srcs`, concatenated, to `offset` (one host-to-device copy per slice,
    /// waited for together); nothing is written past `limit`, the end of the blob.
    pub fn write_at(&self, offset: u64, limit: u64, srcs: &[&[u8]]) -> Result<()> {
        let total: u64 = srcs.iter().map(|s| s.len() as u64).sum();
        let at = self.check(offset, total, limit)?;
        let copies: Vec<DeviceCopy> = laid_out(at, srcs)
            .map(|(dst, src)| DeviceCopy {
                dst,
                src: src.as_ptr() as u64,
                len: src.len(),
                kind: CopyKind::HostToDevice,
            })
            .collect();
        self.copy(&copies)
    }

    /// Fills `dsts` in order from `offset`, `len` bytes in all (one device-to-host copy
    /// per slice); a trailing remainder of the destinations is left untouched.
    pub fn read_at(&self, offset: u64, len: u64, dsts: &mut [&mut [u8]]) -> Result<()> {
        check_room(dsts, len)?;
        let at = self.check(offset, len, offset.saturating_add(len))?;
        let copies: Vec<DeviceCopy> = spread(at, len, dsts)
            .map(|(src, dst)| DeviceCopy {
                dst: dst.as_mut_ptr() as u64,
                src,
                len: dst.len(),
                kind: CopyKind::DeviceToHost,
            })
            .collect();
        self.copy(&copies)
    }

    fn copy(&self, copies: &[DeviceCopy]) -> Result<()> {
        // An import is reached from the device current here: the owner's ordinal
        // numbers another process's devices.
        if let Origin::Allocated(_) = self.origin {
            self.runtime.set_device(self.device)?;
        }
        // SAFETY: every device range was checked to lie inside this segment's
        // allocation, which lives as long as `self`; every host range is a slice the
        // caller lends for the call (read from, or written to through `&mut`), and the
        // meta service gives a blob one writer before its commit.
        unsafe { self.runtime.copy_batch(copies) }
    }
}

impl Drop for DeviceSegment {
    fn drop(&mut self) {
        let done = match &mut self.origin {
            // SAFETY: `ptr` came from this runtime's `import` of `handle`, and no copy
            // outlives a call.
            Origin::Imported(handle) => unsafe { self.runtime.close_import(self.ptr, handle) },
            Origin::Allocated(exported) => {
                let exported = exported.get_mut().unwrap_or_else(|e| e.into_inner());
                if let Some(h) = exported {
                    if let Err(e) = self.runtime.unexport(h) {
                        tracing::debug!(device = self.device, error = %e, "unexporting");
                    }
                }
                // SAFETY: `ptr` came from this runtime's `alloc` and no copy outlives a
                // call.
                unsafe { self.runtime.free(self.ptr) }
            }
        };
        if let Err(e) = done {
            tracing::warn!(device = self.device, error = %e, "releasing an HBM segment");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memcache_device::fake::FakeDevice;

    fn fake() -> &'static FakeDevice {
        Box::leak(Box::new(FakeDevice::new(2)))
    }

    #[test]
    fn bytes_round_trip_through_device_copies_only() {
        let d = fake();
        let seg = DeviceSegment::create_with(d, 1, 1 << 20).unwrap();
        let (a, b) = (vec![1u8; 3000], vec![2u8; 5000]);
        seg.write_at(4096, 4096 + 8000, &[&a, &b]).unwrap();
        let (mut x, mut y) = (vec![0u8; 4000], vec![0u8; 4000]);
        seg.read_at(4096, 8000, &mut [&mut x, &mut y]).unwrap();
        assert_eq!([&x[..], &y[..]].concat(), [a, b].concat());
        // Two copies in, two out, none between host addresses.
        assert_eq!(d.copies(), [2, 2, 0]);
    }

    #[test]
    fn ranges_outside_the_blob_or_the_segment_move_nothing() {
        let d = fake();
        let seg = DeviceSegment::create_with(d, 0, 8192).unwrap();
        let src = vec![7u8; 100];
        assert!(seg.write_at(8150, u64::MAX, &[&src]).is_err());
        assert!(seg.write_at(0, 50, &[&src]).is_err());
        assert!(seg.write_at(u64::MAX - 10, u64::MAX, &[&src]).is_err());
        let mut dst = vec![0u8; 100];
        assert!(seg.read_at(8100, 100, &mut [&mut dst]).is_err());
        assert!(seg.read_at(0, 200, &mut [&mut dst]).is_err());
        assert!(seg.check_range(8000, 193).is_err());
        assert!(seg.check_range(8000, 192).is_ok());
        assert_eq!(d.copies(), [0, 0, 0]);
    }

    #[test]
    fn the_memory_is_freed_with_the_segment() {
        let d = fake();
        let seg = DeviceSegment::create_with(d, 0, 4096).unwrap();
        let ptr = seg.base();
        drop(seg);
        // SAFETY: a double free is what is being checked; the fake refuses it.
        assert!(unsafe { d.free(ptr) }.is_err());
    }

    #[test]
    fn an_imported_segment_reaches_the_same_memory_and_is_closed_not_freed() {
        let d = fake();
        let seg = DeviceSegment::create_with(d, 1, 1 << 16).unwrap();
        let shared = seg.export().unwrap();
        assert_eq!((shared.device, shared.len), (1, 1 << 16));
        assert_eq!(seg.export().unwrap(), shared, "exported once");
        let there = DeviceSegment::import_with(d, &shared).unwrap();
        assert!(there.export().is_err());
        there.write_at(10, 15, &[b"hello"]).unwrap();
        let mut out = [0u8; 5];
        seg.read_at(10, 5, &mut [&mut out]).unwrap();
        assert_eq!(&out, b"hello");
        assert!(there.address(1 << 16, 1).is_err());
        assert_eq!(d.open_imports(), 1);
        drop(there);
        assert_eq!(d.open_imports(), 0);
        // The owner's memory is still there.
        seg.read_at(10, 5, &mut [&mut out]).unwrap();
        let mut bad = shared.clone();
        bad.handle.truncate(4);
        assert!(DeviceSegment::import_with(d, &bad).is_err());
    }

    #[test]
    fn a_device_the_host_lacks_is_refused() {
        assert!(DeviceSegment::create_with(fake(), 5, 4096).is_err());
    }
}
