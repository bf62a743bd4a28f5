//! Puts from and gets into accelerator memory: one DMA copy between the caller's device
//! buffers and a pool segment this process maps (pinned once per segment), or through a
//! host staging buffer for replicas reached over TCP. The device runtime is
//! `memcache_device`'s; without one every device call answers its reason (-3000).

use std::sync::Arc;

use memcache_core::{Blob, Error, Result, SegmentId};
use memcache_device::{CopyKind, DeviceCopy, DeviceRuntime};
use memcache_local::ShmSegment;

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

/// The copies between `bufs`, in order, and the host range at `host` of `len` bytes:
/// into the host range when `to_host`.
fn copies(bufs: &[DeviceBuf], host: u64, len: u64, to_host: bool, out: &mut Vec<DeviceCopy>) {
    let (mut at, mut left) = (host, len);
    for b in bufs {
        if left == 0 {
            break;
        }
        let n = (b.len as u64).min(left);
        out.push(match to_host {
            true => DeviceCopy {
                dst: at,
                src: b.ptr,
                len: n as usize,
                kind: CopyKind::DeviceToHost,
            },
            false => DeviceCopy {
                dst: b.ptr,
                src: at,
                len: n as usize,
                kind: CopyKind::HostToDevice,
            },
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
    /// Copies each `(blob, bufs)` of memory this process maps: the device buffers into
    /// the blob when `put`, the blob into them otherwise. All copies of the batch go to
    /// the device runtime at once; one result per blob.
    pub fn device_mapped_batch(&self, jobs: &[(Blob, &[DeviceBuf])], put: bool) -> Vec<Result<()>> {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return vec![Err(e); jobs.len()],
        };
        let mut held: Vec<Arc<ShmSegment>> = Vec::with_capacity(jobs.len());
        let mut batch = Vec::new();
        let mut results: Vec<Result<()>> = jobs
            .iter()
            .map(|(blob, bufs)| {
                check_fit(bufs, blob.len, put)?;
                let segment = self.transport.segment_of(blob.segment)?;
                let base = segment.address(blob.offset, blob.len)?;
                self.pin_for_device(rt, blob.segment, &segment);
                copies(bufs, base, blob.len, put, &mut batch);
                held.push(segment);
                Ok(())
            })
            .collect();
        // SAFETY: every host range lies inside a mapped segment (checked by `address`)
        // that `held` keeps mapped; the meta service gives a blob being written one
        // writer, and a leased one only readers; the device ranges are the caller's.
        if let Err(e) = unsafe { rt.copy_batch(&batch) } {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
        drop(held);
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

    /// Unpins every segment this session pinned (at its end).
    pub fn unpin_all(&self) {
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

/// The object in `bufs` copied into a new host buffer of `len` bytes (for a replica
/// reached over TCP).
pub(crate) fn stage_out(bufs: &[DeviceBuf], len: u64) -> Result<Vec<u8>> {
    let rt = runtime()?;
    check_fit(bufs, len, true)?;
    let mut staged = vec![0u8; len as usize];
    let mut batch = Vec::new();
    copies(bufs, staged.as_mut_ptr() as u64, len, true, &mut batch);
    // SAFETY: the host range is `staged`, owned here; the device ranges are the caller's.
    unsafe { rt.copy_batch(&batch) }?;
    Ok(staged)
}

/// `staged` copied into `bufs`, in order.
pub(crate) fn stage_in(bufs: &[DeviceBuf], staged: &[u8]) -> Result<()> {
    let rt = runtime()?;
    check_fit(bufs, staged.len() as u64, false)?;
    let mut batch = Vec::new();
    copies(
        bufs,
        staged.as_ptr() as u64,
        staged.len() as u64,
        false,
        &mut batch,
    );
    // SAFETY: the host range is `staged`, only read; the device ranges are the caller's.
    unsafe { rt.copy_batch(&batch) }
}
