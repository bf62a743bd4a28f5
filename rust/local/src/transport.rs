//! The data plane: moving an object's bytes between the caller's buffers and a blob.

use std::future::Future;
use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;

use memcache_core::{Blob, Error, Result, SegmentId};
use memcache_proto::Tag;

use crate::copy::CopyPool;
use crate::segment::ShmSegment;
use crate::tier::SsdTier;

/// -3000 unless `dsts` can hold `len` bytes: checked before any byte moves, so a
/// refused read leaves the caller's buffers untouched.
pub fn check_room(dsts: &[&mut [u8]], len: u64) -> Result<()> {
    let room: u64 = dsts.iter().map(|d| d.len() as u64).sum();
    if room < len {
        return Err(Error::invalid(format!(
            "buffers hold {room} bytes, the object has {len}"
        )));
    }
    Ok(())
}

/// `len` bytes from offset `at` spread over `dsts` in order: each destination used, cut
/// to what it takes, with the offset its bytes come from. Room left in the
/// destinations after `len` bytes is not handed out (see [`check_room`]).
pub fn spread<'d, 'b: 'd>(
    mut at: u64,
    len: u64,
    dsts: &'d mut [&'b mut [u8]],
) -> impl Iterator<Item = (u64, &'d mut [u8])> + use<'d, 'b> {
    let mut left = len;
    dsts.iter_mut().map_while(move |dst| {
        if left == 0 {
            return None;
        }
        let n = (dst.len() as u64).min(left);
        let piece = (at, &mut dst[..n as usize]);
        at += n;
        left -= n;
        Some(piece)
    })
}

/// Each of `srcs` with the offset it lands at, written one after another from `at`
/// (the writing twin of [`spread`]).
pub fn laid_out<'r, 'a: 'r>(
    at: u64,
    srcs: &'r [&'a [u8]],
) -> impl Iterator<Item = (u64, &'a [u8])> + use<'r, 'a> {
    srcs.iter().scan(at, |next, src| {
        let here = *next;
        *next += src.len() as u64;
        Some((here, *src))
    })
}

/// -3000 unless `srcs` hold exactly the blob's length (a whole-blob write).
pub fn check_whole(blob: &Blob, srcs: &[&[u8]]) -> Result<()> {
    let total: u64 = srcs.iter().map(|s| s.len() as u64).sum();
    if total != blob.len {
        return Err(Error::invalid(format!(
            "writing {total} bytes into a blob of {}",
            blob.len
        )));
    }
    Ok(())
}

/// The total of `lens`, if that many bytes from `at` on lie inside `blob`; -3000 if not.
pub fn check_part(blob: &Blob, at: u64, lens: impl IntoIterator<Item = usize>) -> Result<u64> {
    let total: u64 = lens.into_iter().map(|n| n as u64).sum();
    match at.checked_add(total) {
        Some(end) if end <= blob.len => Ok(total),
        _ => Err(Error::invalid(format!(
            "{total} bytes at {at} do not fit a blob of {}",
            blob.len
        ))),
    }
}

/// The bytes `[at, at + len)` of `blob` as a blob of their own; the caller has checked
/// they lie inside it ([`check_part`]).
pub fn part_of(blob: &Blob, at: u64, len: u64) -> Blob {
    Blob {
        offset: blob.offset + at,
        len,
        ..*blob
    }
}

/// One way of reaching segments. Writes gather the caller's slices into a blob; reads
/// scatter a blob into the caller's slices; neither stages bytes in between. `grant` is
/// the capability the meta service issued for the blob; transports that cross a
/// trust boundary present it, shared memory does not need it.
pub trait Transport: Send + Sync {
    /// Writes `srcs`, concatenated, as the whole content of `blob`.
    fn write(
        &self,
        blob: &Blob,
        grant: Tag,
        srcs: &[&[u8]],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Reads the whole of `blob` into `dsts` in order; they must hold `blob.len` bytes.
    fn read(
        &self,
        blob: &Blob,
        grant: Tag,
        dsts: &mut [&mut [u8]],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Segments mapped into this process: one memcpy per slice, in the caller's thread.
/// SSD tiers of this process's local services are read here too (the embedded pool).
#[derive(Default)]
pub struct ShmTransport {
    segments: RwLock<FxHashMap<SegmentId, Arc<ShmSegment>>>,
    tiers: RwLock<FxHashMap<SegmentId, Arc<SsdTier>>>,
}

impl ShmTransport {
    pub fn attach(&self, id: SegmentId, segment: Arc<ShmSegment>) {
        self.segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, segment);
    }

    /// An SSD tier in this process, as SSD segment `id`.
    pub fn attach_tier(&self, id: SegmentId, tier: Arc<SsdTier>) {
        self.tiers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tier);
    }

    fn tier(&self, id: SegmentId) -> Option<Arc<SsdTier>> {
        let tiers = self.tiers.read().unwrap_or_else(|e| e.into_inner());
        tiers.get(&id).cloned()
    }

    pub fn has(&self, id: SegmentId) -> bool {
        let mapped = self
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id);
        mapped || self.tier(id).is_some()
    }

    /// Segments mapped here (the SSD tiers not counted).
    pub fn mapped(&self) -> usize {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn detach(&self, id: SegmentId) {
        self.segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.tiers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// The mapped segment `id` (not an SSD tier).
    pub fn segment_of(&self, id: SegmentId) -> Result<Arc<ShmSegment>> {
        self.segment(id)
    }

    fn segment(&self, id: SegmentId) -> Result<Arc<ShmSegment>> {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .ok_or(Error::NotConnectedToLocal)
    }

    pub fn write_blob(&self, blob: &Blob, srcs: &[&[u8]]) -> Result<()> {
        check_whole(blob, srcs)?;
        let end = blob.offset.saturating_add(blob.len);
        self.segment(blob.segment)?.write_at(blob.offset, end, srcs)
    }

    /// Writes `srcs`, concatenated, into `blob` from `at` on.
    pub fn write_part(&self, blob: &Blob, at: u64, srcs: &[&[u8]]) -> Result<()> {
        let len = check_part(blob, at, srcs.iter().map(|s| s.len()))?;
        self.write_blob(&part_of(blob, at, len), srcs)
    }

    pub fn read_blob(&self, blob: &Blob, dsts: &mut [&mut [u8]]) -> Result<()> {
        self.read_part(blob, 0, blob.len, dsts)
    }

    /// Appends the whole of `blob` to `out` (see [`ShmSegment::append_to`]).
    pub fn append_blob(&self, blob: &Blob, out: &mut Vec<u8>) -> Result<()> {
        if let Some(tier) = self.tier(blob.segment) {
            out.extend_from_slice(&tier.read(blob.offset, blob.len)?);
            return Ok(());
        }
        self.segment(blob.segment)?
            .append_to(blob.offset, blob.len, out)
    }

    /// Reads `len` bytes of `blob` from `at` on into `dsts`, in order.
    pub fn read_part(&self, blob: &Blob, at: u64, len: u64, dsts: &mut [&mut [u8]]) -> Result<()> {
        check_room(dsts, len)?;
        check_part(blob, at, [len as usize])?;
        if let Some(tier) = self.tier(blob.segment) {
            // An SSD record is read and checked whole (its offset is the record id).
            let bytes = tier.read(blob.offset, blob.len)?;
            let mut rest = &bytes[at as usize..(at + len) as usize];
            for d in dsts.iter_mut() {
                let n = d.len().min(rest.len());
                d[..n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            return Ok(());
        }
        self.segment(blob.segment)?
            .read_at(blob.offset + at, len, dsts)
    }
}

impl ShmTransport {
    /// Writes each `(blob, srcs)` as [`write_blob`](Self::write_blob) does, the copies of
    /// all of them spread over up to `threads` threads of `pool`; one result per blob.
    pub fn write_blobs(
        &self,
        jobs: &[(Blob, &[&[u8]])],
        pool: &CopyPool,
        threads: usize,
    ) -> Vec<Result<()>> {
        let segments: Vec<Result<Arc<ShmSegment>>> = jobs
            .iter()
            .map(|(blob, srcs)| check_whole(blob, srcs).and_then(|()| self.segment(blob.segment)))
            .collect();
        let mut pieces = Vec::with_capacity(jobs.iter().map(|(_, s)| s.len()).sum());
        let done = jobs
            .iter()
            .zip(&segments)
            .map(|((blob, srcs), segment)| {
                let end = blob.offset.saturating_add(blob.len);
                segment.as_ref().map_err(Clone::clone)?.write_pieces(
                    blob.offset,
                    end,
                    srcs,
                    &mut pieces,
                )
            })
            .collect();
        pool.run(&pieces, threads);
        done
    }

    /// Reads each whole `(blob, dsts)` as [`read_blob`](Self::read_blob) does, the
    /// copies of all of them spread over up to `threads` threads of `pool`; one result
    /// per blob. SSD records are read one by one.
    pub fn read_blobs(
        &self,
        jobs: &mut [(Blob, &mut [&mut [u8]])],
        pool: &CopyPool,
        threads: usize,
    ) -> Vec<Result<()>> {
        let segments: Vec<Option<Arc<ShmSegment>>> = jobs
            .iter()
            .map(|(blob, _)| self.segment(blob.segment).ok())
            .collect();
        let mut pieces = Vec::with_capacity(jobs.iter().map(|(_, d)| d.len()).sum());
        let done = jobs
            .iter_mut()
            .zip(&segments)
            .map(|((blob, dsts), segment)| match segment {
                Some(segment) => segment.read_pieces(blob.offset, blob.len, dsts, &mut pieces),
                None => self.read_blob(blob, dsts),
            })
            .collect();
        pool.run(&pieces, threads);
        done
    }
}

impl Transport for ShmTransport {
    async fn write(&self, blob: &Blob, _grant: Tag, srcs: &[&[u8]]) -> Result<()> {
        self.write_blob(blob, srcs)
    }

    async fn read(&self, blob: &Blob, _grant: Tag, dsts: &mut [&mut [u8]]) -> Result<()> {
        self.read_blob(blob, dsts)
    }
}
