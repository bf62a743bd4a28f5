//! Puts from and gets into accelerator memory: one DMA copy between the caller's device
//! buffers and a pool segment this process maps (pinned once per segment), or through a
//! page-locked host staging buffer, reused across calls, for replicas reached over TCP.
//! The device runtime is `memcache_device`'s; without one every device call answers its
//! reason (-3000).

use std::sync::{Arc, Mutex};

use memcache_core::{Blob, Error, Result, SegmentId};
use memcache_device::{CopyKind, DeviceCopy, DeviceRuntime};
use memcache_local::{DeviceSegment, ShmSegment};

use crate::session::Session;

/// One device buffer of the caller: `len` bytes at device address `ptr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceBuf {
    pub ptr: u64,
    pub len: usize,
}

/// The source of one put: host slices, or device buffers.
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    Host(&'a [&'a [u8]]),
    Device(&'a [DeviceBuf]),
}

impl Src<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Src::Host(l) => l.iter().map(|s| s.len() as u64).sum(),
            Src::Device(l) => total(l),
        }
    }
}

/// The destination of one get: host slices, or device buffers.
pub(crate) enum Dst<'a, 'b> {
    Host(&'a mut [&'b mut [u8]]),
    Device(&'a [DeviceBuf]),
}

pub(crate) fn total(bufs: &[DeviceBuf]) -> u64 {
    bufs.iter().map(|b| b.len as u64).sum()
}

pub(crate) fn runtime() -> Result<&'static dyn DeviceRuntime> {
    memcache_device::runtime()
}

/// Where the pool's side of a copy lies.
#[derive(Clone, Copy)]
enum PoolSide {
    Host,
    Device,
}

/// The copies between `bufs`, in order, and the pool's range at `pool` of `len` bytes:
/// into the pool's range when `put`.
fn copies(
    bufs: &[DeviceBuf],
    pool: (u64, PoolSide),
    len: u64,
    put: bool,
    out: &mut Vec<DeviceCopy>,
) {
    let (mut at, side) = pool;
    let kind = match (side, put) {
        (PoolSide::Device, _) => CopyKind::DeviceToDevice,
        (PoolSide::Host, true) => CopyKind::DeviceToHost,
        (PoolSide::Host, false) => CopyKind::HostToDevice,
    };
    let mut left = len;
    for b in bufs {
        if left == 0 {
            break;
        }
        let n = (b.len as u64).min(left);
        let (dst, src) = if put { (at, b.ptr) } else { (b.ptr, at) };
        out.push(DeviceCopy {
            dst,
            src,
            len: n as usize,
            kind,
        });
        at += n;
        left -= n;
    }
}

/// -3000 unless `bufs` fit an object of `len` bytes: exactly for a put, at least for a
/// get.
pub(crate) fn check_fit(bufs: &[DeviceBuf], len: u64, put: bool) -> Result<()> {
    let room = total(bufs);
    if (put && room != len) || (!put && room < len) {
        return Err(Error::invalid(format!(
            "device buffers hold {room} bytes, the object has {len}"
        )));
    }
    Ok(())
}

impl Session {
    /// Copies each `(blob, bufs)` this process [`reaches_from_device`]: the device
    /// buffers into the blob when `put`, the blob into them otherwise. All copies of
    /// the batch go to the device runtime at once; one result per blob.
    ///
    /// [`reaches_from_device`]: Session::reaches_from_device
    pub fn device_mapped_batch(&self, jobs: &[(Blob, &[DeviceBuf])], put: bool) -> Vec<Result<()>> {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return vec![Err(e); jobs.len()],
        };
        let mut held: Vec<Arc<ShmSegment>> = Vec::with_capacity(jobs.len());
        let mut held_hbm: Vec<Arc<DeviceSegment>> = Vec::new();
        let mut batch = Vec::new();
        let mut results: Vec<Result<()>> = jobs
            .iter()
            .map(|(blob, bufs)| {
                check_fit(bufs, blob.len, put)?;
                let pool = match self.imported(blob) {
                    Some(hbm) => {
                        let at = hbm.address(blob.offset, blob.len)?;
                        held_hbm.push(hbm);
                        (at, PoolSide::Device)
                    }
                    None => {
                        let segment = self.transport.segment_of(blob.segment)?;
                        let at = segment.address(blob.offset, blob.len)?;
                        self.pin_for_device(rt, blob.segment, &segment);
                        held.push(segment);
                        (at, PoolSide::Host)
                    }
                };
                copies(bufs, pool, blob.len, put, &mut batch);
                Ok(())
            })
            .collect();
        // SAFETY: every pool range lies inside a mapped segment or an imported device
        // one (checked by `address`) that `held` or `held_hbm` keeps; the meta service
        // gives a blob being written one writer, and a leased one only readers; the
        // device ranges are the caller's.
        if let Err(e) = unsafe { rt.copy_batch(&batch) } {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
        drop((held, held_hbm));
        results
    }

    /// Page-locks a mapped segment for the device's DMA, once per segment; a host that
    /// refuses still copies (through the driver's own staging), so that is logged only.
    fn pin_for_device(&self, rt: &dyn DeviceRuntime, id: SegmentId, segment: &Arc<ShmSegment>) {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if pinned.iter().any(|(s, _)| *s == id) {
            return;
        }
        // SAFETY: the whole mapping, kept mapped by the Arc held in `pinned` until it is
        // unpinned (`unpin_all`).
        match unsafe { rt.pin(segment.base(), segment.len() as usize) } {
            Ok(()) => pinned.push((id, segment.clone())),
            Err(e) => tracing::debug!(segment = id, error = %e, "segment not pinned for DMA"),
        }
    }

    /// A page-locked host buffer of `len` bytes for one object on its way between
    /// device buffers and a replica over TCP; it goes back to the session's staging
    /// buffers when dropped.
    pub(crate) fn staged(&self, len: u64) -> Result<Staged<'_>> {
        let rt = runtime()?;
        let len = usize::try_from(len).map_err(|_| Error::invalid("object too large"))?;
        let buf = self
            .staging
            .take(len)
            .unwrap_or_else(|| StagingBuf::new(rt, len));
        Ok(Staged {
            buf: Some(buf),
            len,
            staging: &self.staging,
        })
    }

    /// The object in `bufs` copied into a staging buffer of `len` bytes.
    pub(crate) fn stage_out(&self, bufs: &[DeviceBuf], len: u64) -> Result<Staged<'_>> {
        check_fit(bufs, len, true)?;
        let mut staged = self.staged(len)?;
        let mut batch = Vec::new();
        let host = staged.as_mut_slice().as_mut_ptr() as u64;
        copies(bufs, (host, PoolSide::Host), len, true, &mut batch);
        // SAFETY: the host range is the staging buffer, held here; the device ranges
        // are the caller's.
        unsafe { runtime()?.copy_batch(&batch) }?;
        Ok(staged)
    }

    /// Unpins every segment and staging buffer this session pinned (at its end).
    pub fn unpin_all(&self) {
        self.staging.clear();
        let pinned = std::mem::take(&mut *self.pinned.lock().unwrap_or_else(|e| e.into_inner()));
        if let (Ok(rt), false) = (runtime(), pinned.is_empty()) {
            for (id, segment) in pinned {
                // SAFETY: pinned by `pin_for_device`; the session's copies are over.
                if let Err(e) = unsafe { rt.unpin(segment.base()) } {
                    tracing::debug!(segment = id, error = %e, "unpinning a segment");
                }
            }
        }
    }
}

/// `staged` copied into `bufs`, in order.
pub(crate) fn stage_in(bufs: &[DeviceBuf], staged: &[u8]) -> Result<()> {
    let rt = runtime()?;
    check_fit(bufs, staged.len() as u64, false)?;
    let mut batch = Vec::new();
    let host = (staged.as_ptr() as u64, PoolSide::Host);
    copies(bufs, host, staged.len() as u64, false, &mut batch);
    // SAFETY: the host range is `staged`, only read; the device ranges are the caller's.
    unsafe { rt.copy_batch(&batch) }
}

/// Staging buffers kept for reuse, at most this many bytes of them: page-locking memory
/// costs far more than copying it, and a device copy from memory that is not locked
/// goes through the driver's own bounce buffer.
const STAGING_KEEP_BYTES: usize = 64 << 20;
/// The smallest staging buffer, so that small objects share a few buffers.
const STAGING_MIN_BYTES: usize = 1 << 20;

/// One page-locked host buffer (`pinned` false where the driver refused to lock it:
/// copies still work, through its bounce buffer).
pub(crate) struct StagingBuf {
    bytes: Box<[u8]>,
    pinned: bool,
}

impl StagingBuf {
    fn new(rt: &dyn DeviceRuntime, len: usize) -> StagingBuf {
        let size = len.max(STAGING_MIN_BYTES).next_power_of_two();
        let bytes = vec![0u8; size].into_boxed_slice();
        // SAFETY: `bytes` stays allocated, at this address, until dropped, which
        // unpins it first.
        let pinned = match unsafe { rt.pin(bytes.as_ptr() as u64, bytes.len()) } {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "staging buffer not pinned for DMA");
                false
            }
        };
        StagingBuf { bytes, pinned }
    }
}

impl Drop for StagingBuf {
    fn drop(&mut self) {
        if let (true, Ok(rt)) = (self.pinned, runtime()) {
            // SAFETY: pinned by `new`, and unpinned before it is freed; its copies are
            // over (every copy through a `Staged` is waited for).
            if let Err(e) = unsafe { rt.unpin(self.bytes.as_ptr() as u64) } {
                tracing::debug!(error = %e, "unpinning a staging buffer");
            }
        }
    }
}

/// A session's staging buffers not in use.
#[derive(Default)]
pub(crate) struct Staging {
    free: Mutex<Vec<StagingBuf>>,
}

impl Staging {
    /// The smallest free buffer of at least `len` bytes.
    fn take(&self, len: usize) -> Option<StagingBuf> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let best = (0..free.len())
            .filter(|&i| free[i].bytes.len() >= len)
            .min_by_key(|&i| free[i].bytes.len())?;
        Some(free.swap_remove(best))
    }

    /// Keeps `buf` for the next object, unless that would keep too many bytes.
    fn give_back(&self, buf: StagingBuf) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = free.iter().map(|b| b.bytes.len()).sum();
        if kept + buf.bytes.len() <= STAGING_KEEP_BYTES {
            free.push(buf);
        }
    }

    /// Unpins and frees the buffers not in use.
    fn clear(&self) {
        drop(std::mem::take(
            &mut *self.free.lock().unwrap_or_else(|e| e.into_inner()),
        ));
    }
}

/// A staging buffer in use: its first `len` bytes hold (or will hold) one object.
pub(crate) struct Staged<'a> {
    buf: Option<StagingBuf>,
    len: usize,
    staging: &'a Staging,
}

impl Staged<'_> {
    pub fn as_slice(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| &b.bytes[..self.len])
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        self.buf.as_mut().map_or(&mut [], |b| &mut b.bytes[..len])
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.staging.give_back(buf);
        }
    }
}
