//! An in-process simulation of device memory, for tests of the logic above the trait on
//! machines without an accelerator. "Device" allocations are host memory the simulation
//! owns; it enforces what a real device would: a device side must lie wholly inside one
//! allocation, a host side wholly outside all of them, pins do not nest, and handles open
//! only where they were made. It counts copies by kind so tests can see the path taken.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use memcache_core::{Error, Result};

use crate::{CopyKind, DeviceCopy, DeviceRuntime, PtrKind};

thread_local! {
    static CURRENT: Cell<u32> = const { Cell::new(0) };
}

/// Simulated device allocations by start address: their memory and device.
type Allocations = BTreeMap<u64, (Box<[u8]>, u32)>;

/// A simulated host with `devices` devices.
pub struct FakeDevice {
    devices: u32,
    memory: Mutex<Allocations>,
    pinned: Mutex<BTreeMap<u64, usize>>,
    /// Imports not yet closed, by address.
    imports: Mutex<BTreeMap<u64, usize>>,
    /// Refuses every handle, as a device whose driver shares no memory does.
    no_sharing: std::sync::atomic::AtomicBool,
    copies: [AtomicUsize; 3],
    unpinned: AtomicUsize,
}

const HANDLE_MAGIC: &[u8; 8] = b"mmcfake1";

impl FakeDevice {
    pub fn new(devices: u32) -> FakeDevice {
        FakeDevice {
            devices,
            memory: Mutex::new(BTreeMap::new()),
            pinned: Mutex::new(BTreeMap::new()),
            imports: Mutex::new(BTreeMap::new()),
            no_sharing: Default::default(),
            copies: Default::default(),
            unpinned: AtomicUsize::new(0),
        }
    }

    /// Copies made so far, by kind: host to device, device to host, device to device.
    pub fn copies(&self) -> [usize; 3] {
        self.copies.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// Copies so far whose host side was not pinned memory (a real driver would have
    /// copied them through its own bounce buffer, or refused them).
    pub fn unpinned_host_copies(&self) -> usize {
        self.unpinned.load(Ordering::Relaxed)
    }

    /// Whether all of `[ptr, ptr + len)` lies in one pinned range.
    fn is_pinned(&self, ptr: u64, len: usize) -> bool {
        let pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        let end = ptr.saturating_add(len as u64);
        pinned
            .range(..=ptr)
            .next_back()
            .is_some_and(|(s, l)| s + *l as u64 >= end)
    }

    /// Makes every later `import` fail (or work again), as on a host whose driver
    /// shares no device memory between processes.
    pub fn refuse_imports(&self, refuse: bool) {
        self.no_sharing.store(refuse, Ordering::Relaxed);
    }

    /// Imports opened and not closed yet.
    pub fn open_imports(&self) -> usize {
        let imports = self.imports.lock().unwrap_or_else(|e| e.into_inner());
        imports.values().sum()
    }

    /// Bytes pinned now.
    pub fn pinned_bytes(&self) -> usize {
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// The device of the allocation holding all of `[ptr, ptr + len)`, if one does.
    fn device_of(&self, ptr: u64, len: usize) -> Option<u32> {
        let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let (start, (bytes, device)) = memory.range(..=ptr).next_back()?;
        let end = start + bytes.len() as u64;
        (ptr.checked_add(len as u64)? <= end && ptr < end.max(start + 1)).then_some(*device)
    }

    /// Whether any byte of `[ptr, ptr + len)` is device memory.
    fn touches_device(&self, ptr: u64, len: usize) -> bool {
        let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let end = ptr.saturating_add(len.max(1) as u64);
        memory
            .range(..end)
            .next_back()
            .is_some_and(|(start, (bytes, _))| start + bytes.len() as u64 > ptr)
    }

    fn check_side(&self, ptr: u64, len: usize, device: bool, what: &str) -> Result<()> {
        let ok = if device {
            self.device_of(ptr, len).is_some()
        } else {
            !self.touches_device(ptr, len)
        };
        if ok {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "fake device: the {what} {ptr:#x}+{len} is not {} memory",
            if device { "device" } else { "host" }
        )))
    }
}

impl DeviceRuntime for FakeDevice {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn device_count(&self) -> Result<u32> {
        Ok(self.devices)
    }

    fn set_device(&self, device: u32) -> Result<()> {
        if device >= self.devices {
            return Err(Error::invalid(format!(
                "fake device: no device {device} of {}",
                self.devices
            )));
        }
        CURRENT.with(|c| c.set(device));
        Ok(())
    }

    fn alloc(&self, len: usize) -> Result<u64> {
        if len == 0 {
            return Err(Error::invalid("fake device: an allocation of 0 bytes"));
        }
        let bytes = vec![0u8; len].into_boxed_slice();
        let at = bytes.as_ptr() as u64;
        let device = CURRENT.with(Cell::get);
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.insert(at, (bytes, device));
        Ok(at)
    }

    unsafe fn free(&self, ptr: u64) -> Result<()> {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        match memory.remove(&ptr) {
            Some(_) => Ok(()),
            None => Err(Error::invalid(format!(
                "fake device: {ptr:#x} is not an allocation"
            ))),
        }
    }

    unsafe fn copy_batch(&self, copies: &[DeviceCopy]) -> Result<()> {
        for c in copies {
            let (src_dev, dst_dev) = match c.kind {
                CopyKind::HostToDevice => (false, true),
                CopyKind::DeviceToHost => (true, false),
                CopyKind::DeviceToDevice => (true, true),
            };
            self.check_side(c.src, c.len, src_dev, "source")?;
            self.check_side(c.dst, c.len, dst_dev, "destination")?;
            let host = match c.kind {
                CopyKind::HostToDevice => Some(c.src),
                CopyKind::DeviceToHost => Some(c.dst),
                CopyKind::DeviceToDevice => None,
            };
            if host.is_some_and(|h| !self.is_pinned(h, c.len)) {
                self.unpinned.fetch_add(1, Ordering::Relaxed);
            }
        }
        for c in copies {
            // SAFETY: device sides lie inside allocations this simulation owns (checked);
            // host sides are the caller's promise; `copy` tolerates overlap.
            unsafe { std::ptr::copy(c.src as *const u8, c.dst as *mut u8, c.len) };
            let i = c.kind as usize;
            self.copies[i].fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn pointer_kind(&self, ptr: u64) -> Result<PtrKind> {
        Ok(match self.device_of(ptr, 1) {
            Some(d) => PtrKind::Device(d),
            None => PtrKind::Host,
        })
    }

    unsafe fn pin(&self, ptr: u64, len: usize) -> Result<()> {
        self.check_side(ptr, len, false, "range to pin")?;
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        let end = ptr.saturating_add(len as u64);
        let overlaps = pinned
            .range(..end)
            .next_back()
            .is_some_and(|(s, l)| s + *l as u64 > ptr);
        if overlaps {
            return Err(Error::invalid(format!(
                "fake device: {ptr:#x}+{len} overlaps a pinned range"
            )));
        }
        pinned.insert(ptr, len);
        Ok(())
    }

    unsafe fn unpin(&self, ptr: u64) -> Result<()> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        pinned
            .remove(&ptr)
            .map(drop)
            .ok_or_else(|| Error::invalid(format!("fake device: {ptr:#x} is not pinned")))
    }

    fn export(&self, ptr: u64, len: usize) -> Result<Vec<u8>> {
        self.check_side(ptr, len, true, "range to export")?;
        let mut h = HANDLE_MAGIC.to_vec();
        h.extend(std::process::id().to_le_bytes());
        h.extend(ptr.to_le_bytes());
        h.extend((len as u64).to_le_bytes());
        Ok(h)
    }

    fn import(&self, handle: &[u8]) -> Result<u64> {
        let bad = || Error::invalid("fake device: not a handle of this device");
        let rest = handle.strip_prefix(HANDLE_MAGIC).ok_or_else(bad)?;
        if rest.len() != 20 {
            return Err(bad());
        }
        let pid = u32::from_le_bytes(rest[..4].try_into().map_err(|_| bad())?);
        let ptr = u64::from_le_bytes(rest[4..12].try_into().map_err(|_| bad())?);
        let len = u64::from_le_bytes(rest[12..].try_into().map_err(|_| bad())?);
        if self.no_sharing.load(Ordering::Relaxed) {
            return Err(Error::invalid(
                "fake device: this host shares no device memory",
            ));
        }
        if pid != std::process::id() {
            return Err(Error::invalid(
                "fake device: a handle opens only in the process that made it",
            ));
        }
        self.check_side(ptr, len as usize, true, "imported range")?;
        let mut imports = self.imports.lock().unwrap_or_else(|e| e.into_inner());
        *imports.entry(ptr).or_default() += 1;
        Ok(ptr)
    }

    unsafe fn close_import(&self, ptr: u64, _handle: &[u8]) -> Result<()> {
        let mut imports = self.imports.lock().unwrap_or_else(|e| e.into_inner());
        match imports.get_mut(&ptr) {
            Some(1) => {
                imports.remove(&ptr);
                Ok(())
            }
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Err(Error::invalid(format!(
                "fake device: {ptr:#x} is not an import"
            ))),
        }
    }

    fn unexport(&self, _handle: &[u8]) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(dst: u64, src: u64, len: usize, kind: CopyKind) -> DeviceCopy {
        DeviceCopy {
            dst,
            src,
            len,
            kind,
        }
    }

    #[test]
    fn copies_round_trip_and_wrong_kinds_are_refused_before_any_byte_moves() {
        let d = FakeDevice::new(2);
        d.set_device(1).unwrap();
        let dev = d.alloc(4096).unwrap();
        assert_eq!(d.pointer_kind(dev + 100).unwrap(), PtrKind::Device(1));
        let src: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let mut out = vec![0u8; 4096];
        let (s, o) = (src.as_ptr() as u64, out.as_mut_ptr() as u64);
        assert_eq!(d.pointer_kind(s).unwrap(), PtrKind::Host);
        // SAFETY: the host ranges are the two vectors, the device one is allocated.
        unsafe {
            d.copy_batch(&[copy(dev, s, 4096, CopyKind::HostToDevice)])
                .unwrap();
            d.copy_batch(&[copy(o, dev, 4096, CopyKind::DeviceToHost)])
                .unwrap();
        }
        assert_eq!(out, src);
        out.fill(0);
        for bad in [
            copy(o, dev, 4096, CopyKind::HostToDevice),
            copy(dev, s, 4096, CopyKind::DeviceToHost),
            copy(o, dev + 1, 4096, CopyKind::DeviceToHost),
            copy(dev, s, 4096, CopyKind::DeviceToDevice),
        ] {
            // A good copy first: a refused batch moves nothing at all.
            let batch = [copy(o, dev, 16, CopyKind::DeviceToHost), bad];
            // SAFETY: as above; the refused copies never run.
            let r = unsafe { d.copy_batch(&batch) };
            assert_eq!(r.unwrap_err().code(), -3000, "{bad:?}");
            assert!(out.iter().all(|&b| b == 0));
        }
        assert_eq!(d.copies(), [1, 1, 0]);
        // SAFETY: allocated above, not used after.
        unsafe { d.free(dev).unwrap() };
        assert_eq!(d.pointer_kind(dev).unwrap(), PtrKind::Host);
        assert!(d.set_device(2).is_err());
    }

    #[test]
    fn pins_do_not_nest_and_handles_open_only_where_made() {
        let d = FakeDevice::new(1);
        let host = vec![0u8; 8192];
        let h = host.as_ptr() as u64;
        // SAFETY: `host` outlives the pins.
        unsafe {
            d.pin(h, 8192).unwrap();
            assert!(d.pin(h + 4096, 10).is_err());
            assert_eq!(d.pinned_bytes(), 8192);
            d.unpin(h).unwrap();
            assert!(d.unpin(h).is_err());
        }
        let dev = d.alloc(100).unwrap();
        // SAFETY: device memory cannot be pinned; refused.
        assert!(unsafe { d.pin(dev, 100) }.is_err());
        let handle = d.export(dev, 100).unwrap();
        assert_eq!(d.import(&handle).unwrap(), dev);
        assert_eq!(d.open_imports(), 1);
        // SAFETY: imported above, not used after.
        unsafe {
            d.close_import(dev, &handle).unwrap();
            assert!(d.close_import(dev, &handle).is_err());
        }
        assert_eq!(d.open_imports(), 0);
        let mut other = handle.clone();
        other[8] ^= 1; // another process id
        assert!(d.import(&other).is_err());
        assert!(d.import(&handle[..10]).is_err());
        assert!(d.export(h, 10).is_err());
    }
}
