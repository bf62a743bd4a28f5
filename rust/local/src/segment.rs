//! The segments a local service serves: DRAM backed by a shared-memory file (memfd), so
//! other processes on the host can map the same pages from its file descriptor, or
//! device memory (HBM, [`DeviceSegment`]).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use memmap2::{MmapOptions, MmapRaw};

use std::sync::{Arc, RwLock};

use memcache_core::{Error, Medium, Result, SegmentId};

use crate::copy::Piece;
use crate::transport::{laid_out, spread};
use crate::DeviceSegment;

/// A segment a local service serves, of either medium.
#[derive(Clone)]
pub enum Segment {
    Shm(Arc<ShmSegment>),
    Device(Arc<DeviceSegment>),
}

impl Segment {
    pub fn medium(&self) -> Medium {
        match self {
            Segment::Shm(_) => Medium::Dram,
            Segment::Device(_) => Medium::Hbm,
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Segment::Shm(s) => s.len(),
            Segment::Device(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the segment starts in this process (the mapping, or the device address),
    /// as registered and reported by the admin view.
    pub fn base(&self) -> u64 {
        match self {
            Segment::Shm(s) => s.base(),
            Segment::Device(d) => d.base(),
        }
    }

    /// The shared-memory segment, which same-host processes map by its descriptor.
    pub fn shm(&self) -> Option<&Arc<ShmSegment>> {
        match self {
            Segment::Shm(s) => Some(s),
            Segment::Device(_) => None,
        }
    }

    /// Checks that `offset..offset + len` lies inside the segment.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match self {
            Segment::Shm(s) => s.check_range(offset, len),
            Segment::Device(d) => d.check_range(offset, len),
        }
    }

    /// As [`ShmSegment::write_at`].
    pub fn write_at(&self, offset: u64, limit: u64, srcs: &[&[u8]]) -> Result<()> {
        match self {
            Segment::Shm(s) => s.write_at(offset, limit, srcs),
            Segment::Device(d) => d.write_at(offset, limit, srcs),
        }
    }

    /// As [`ShmSegment::read_at`].
    pub fn read_at(&self, offset: u64, len: u64, dsts: &mut [&mut [u8]]) -> Result<()> {
        match self {
            Segment::Shm(s) => s.read_at(offset, len, dsts),
            Segment::Device(d) => d.read_at(offset, len, dsts),
        }
    }
}

/// The segments a local service serves, by id. Shared by its descriptor and TCP
/// servers, and replaced as a whole when the service registers again.
pub type SegmentTable = Arc<RwLock<Vec<(SegmentId, Segment)>>>;

/// `offset` when `len` bytes from it end by `limit` (the blob's end) and inside a
/// segment of `size` bytes.
pub(crate) fn check_span(offset: u64, len: u64, limit: u64, size: u64) -> Result<u64> {
    match offset.checked_add(len) {
        Some(end) if end <= limit.min(size) => Ok(offset),
        _ => Err(Error::invalid(format!(
            "range {offset}+{len} is outside the blob or the segment"
        ))),
    }
}

/// The segment `id` of `table`, if served.
pub fn find_segment(table: &SegmentTable, id: SegmentId) -> Option<Segment> {
    let t = table.read().unwrap_or_else(|e| e.into_inner());
    t.iter().find(|(s, _)| *s == id).map(|(_, seg)| seg.clone())
}

/// The copies of one read or write: a few slices at most, kept off the heap.
type Pieces<'a> = smallvec::SmallVec<[Piece<'a>; 4]>;

/// A mapped shared-memory segment. Copies in and out are bounds-checked; which ranges
/// may be written or read at a time is decided by the meta service (each blob has one
/// writer before its commit and only leased readers after).
pub struct ShmSegment {
    map: MmapRaw,
    file: File,
}

/// The seals of a segment's memfd: its size is fixed for good.
fn sealed() -> rustix::fs::SealFlags {
    use rustix::fs::SealFlags;
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
}

impl ShmSegment {
    /// Creates a segment of `len` bytes and faults all of its pages in now, so the first
    /// put does not pay for page faults (a fresh mapping copies ~6× slower).
    pub fn create(name: &str, len: u64) -> Result<Self> {
        if len == 0 {
            return Err(Error::invalid("segment size 0"));
        }
        let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
        let fd = rustix::fs::memfd_create(name, flags)
            .map_err(|e| Error::Failed(format!("memfd_create: {e}")))?;
        let file = File::from(fd);
        let info = rustix::system::sysinfo();
        let ram = info.totalram as u64 * info.mem_unit as u64;
        if len > ram {
            return Err(Error::OutOfMemory(format!(
                "a {len}-byte segment is larger than this host's {ram} bytes of memory"
            )));
        }
        file.set_len(len)
            .map_err(|e| Error::OutOfMemory(format!("sizing a {len}-byte segment: {e}")))?;
        // Reserve every page now: a host short of memory answers ENOMEM/ENOSPC here,
        // instead of the OOM killer striking at the first put that touches the page.
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len)
            .map_err(|e| Error::OutOfMemory(format!("reserving a {len}-byte segment: {e}")))?;
        // Every process that maps it trusts its size: shrunk, a copy into the lost
        // pages would kill the copier with SIGBUS.
        rustix::fs::fcntl_add_seals(&file, sealed())
            .map_err(|e| Error::Failed(format!("sealing a segment: {e}")))?;
        Self::map(file, len)
    }

    /// Maps a segment another process created, from its descriptor.
    pub fn open(file: File, len: u64) -> Result<Self> {
        let actual = file
            .metadata()
            .map_err(|e| Error::Failed(format!("segment fd: {e}")))?
            .len();
        if actual < len {
            return Err(Error::invalid(format!(
                "segment file is {actual} bytes, expected {len}"
            )));
        }
        let seals = rustix::fs::fcntl_get_seals(&file)
            .map_err(|e| Error::invalid(format!("segment fd is not a sealed memfd: {e}")))?;
        if !seals.contains(sealed()) {
            return Err(Error::invalid(
                "segment fd can still shrink or grow: refused to map it",
            ));
        }
        // Populated here too: the first copy into a fresh mapping would otherwise pay a
        // page fault per 4 KiB.
        Self::map(file, len)
    }

    /// Maps the whole file, page tables filled in now (`MAP_POPULATE`).
    fn map(file: File, len: u64) -> Result<Self> {
        let len_usize =
            usize::try_from(len).map_err(|_| Error::invalid(format!("segment of {len} bytes")))?;
        let mut opts = MmapOptions::new();
        opts.len(len_usize).populate();
        let map = opts
            .map_raw(&file)
            .map_err(|e| Error::OutOfMemory(format!("mapping a {len}-byte segment: {e}")))?;
        // Transparent huge pages cut TLB misses on large copies where the host allows
        // them for shared memory; elsewhere this is a no-op.
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(ShmSegment { map, file })
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Address of the mapping in this process (reported by the admin view).
    pub fn base(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    /// The memfd, to hand to same-host clients.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// `offset` as an index when `len` bytes from it end by `limit` and inside the map.
    fn check(&self, offset: u64, len: usize, limit: u64) -> Result<usize> {
        check_span(offset, len as u64, limit, self.len()).map(|o| o as usize)
    }

    /// The address in this process of `offset..offset + len`, checked to lie inside the
    /// segment (for copies a device engine makes, which take addresses).
    pub fn address(&self, offset: u64, len: u64) -> Result<u64> {
        self.check_range(offset, len)?;
        Ok(self.base() + offset)
    }

    /// Checks that `offset..offset + len` lies inside the segment.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let len = usize::try_from(len).map_err(|_| Error::invalid("range too long"))?;
        self.check(offset, len, offset.saturating_add(len as u64))
            .map(|_| ())
    }

    /// Copies `srcs`, concatenated, to `offset`; one copy per slice. `limit` is the end
    /// of the blob being written: nothing is written past it.
    pub fn write_at(&self, offset: u64, limit: u64, srcs: &[&[u8]]) -> Result<()> {
        let mut pieces = Pieces::new();
        self.write_pieces(offset, limit, srcs, &mut pieces)?;
        pieces.iter().for_each(Piece::copy);
        Ok(())
    }

    /// The copies [`write_at`](Self::write_at) makes, checked, appended to `out`
    /// (nothing is appended when the range is refused).
    pub fn write_pieces<'a>(
        &'a self,
        offset: u64,
        limit: u64,
        srcs: &[&'a [u8]],
        out: &mut impl Extend<Piece<'a>>,
    ) -> Result<()> {
        let total: usize = srcs.iter().map(|s| s.len()).sum();
        let at = self.check(offset, total, limit)?;
        for (at, src) in laid_out(at as u64, srcs) {
            // SAFETY: `check` proved [offset, offset + total) lies inside the mapping,
            // which lives as long as `'a`; `src` is a valid slice. Copies stay defined
            // even if a caller passes a slice of another mapping of the same pages,
            // and the meta service gives a blob one writer before its commit.
            let piece = unsafe {
                Piece::new(
                    src.as_ptr(),
                    self.map.as_mut_ptr().add(at as usize),
                    src.len(),
                )
            };
            out.extend([piece]);
        }
        Ok(())
    }

    /// Fills `dsts` in order from `offset`, `len` bytes in all; one copy per slice.
    /// The destinations must hold at least `len` bytes; a trailing remainder is left
    /// untouched.
    pub fn read_at(&self, offset: u64, len: u64, dsts: &mut [&mut [u8]]) -> Result<()> {
        let mut pieces = Pieces::new();
        self.read_pieces(offset, len, dsts, &mut pieces)?;
        pieces.iter().for_each(Piece::copy);
        Ok(())
    }

    /// Appends `len` bytes from `offset` to `out`, copied straight into its spare
    /// capacity: no zeroed room is made first.
    pub fn append_to(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> Result<()> {
        let at = self.check(offset, len as usize, offset.saturating_add(len))?;
        let len = len as usize;
        out.reserve(len);
        let start = out.len();
        // SAFETY: `check` proved [offset, offset + len) lies inside the mapping, and the
        // spare capacity `reserve` made holds `len` bytes past `start`, which nothing else
        // reaches while `out` is borrowed here.
        unsafe {
            let dst = out.as_mut_ptr().add(start);
            Piece::new(self.map.as_ptr().add(at), dst, len).copy();
            // The copy initialised those bytes.
            out.set_len(start + len);
        }
        Ok(())
    }

    /// The copies [`read_at`](Self::read_at) makes, checked, appended to `out`
    /// (nothing is appended when the range is refused).
    pub fn read_pieces<'a>(
        &'a self,
        offset: u64,
        len: u64,
        dsts: &'a mut [&mut [u8]],
        out: &mut impl Extend<Piece<'a>>,
    ) -> Result<()> {
        crate::transport::check_room(dsts, len)?;
        let at = self.check(offset, len as usize, offset.saturating_add(len))?;
        for (from, dst) in spread(at as u64, len, dsts) {
            // SAFETY: `check` proved [offset, offset + len) lies inside the mapping, the
            // pieces stay within it, and each `dst` is a slice the caller lends for `'a`.
            out.extend([unsafe {
                Piece::new(
                    self.map.as_ptr().add(from as usize),
                    dst.as_mut_ptr(),
                    dst.len(),
                )
            }]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_cannot_change_size_and_an_unsealed_one_is_not_mapped() {
        let seg = ShmSegment::create("sealed", 1 << 16).unwrap();
        assert!(seg.file.set_len(4096).is_err(), "shrunk");
        assert!(seg.file.set_len(1 << 20).is_err(), "grown");
        let fd = rustix::fs::memfd_create("unsealed", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let file = File::from(fd);
        file.set_len(1 << 16).unwrap();
        let refused = ShmSegment::open(file, 1 << 16).err().unwrap();
        assert_eq!(refused.code(), -3000);
    }

    #[test]
    fn gather_write_then_scatter_read() {
        let seg = ShmSegment::create("test", 1 << 20).unwrap();
        let a = vec![1u8; 5000];
        let b = vec![2u8; 3000];
        seg.write_at(4096, 4096 + 8000, &[&a, &b]).unwrap();
        let mut x = vec![0u8; 6000];
        let mut y = vec![0u8; 4000];
        seg.read_at(4096, 8000, &mut [&mut x, &mut y]).unwrap();
        assert!(x[..5000].iter().all(|&v| v == 1) && x[5000..].iter().all(|&v| v == 2));
        assert!(y[..2000].iter().all(|&v| v == 2) && y[2000..].iter().all(|&v| v == 0));
    }

    #[test]
    fn out_of_range_is_refused_and_writes_nothing() {
        let seg = ShmSegment::create("test", 8192).unwrap();
        let data = vec![9u8; 100];
        assert_eq!(
            seg.write_at(8100, 8192, &[&data]).unwrap_err().code(),
            -3000
        );
        assert_eq!(seg.write_at(0, 50, &[&data]).unwrap_err().code(), -3000);
        assert_eq!(
            seg.write_at(u64::MAX - 10, u64::MAX, &[&data])
                .unwrap_err()
                .code(),
            -3000
        );
        let mut out = vec![7u8; 100];
        seg.read_at(0, 100, &mut [&mut out]).unwrap();
        assert!(out.iter().all(|&v| v == 0));
        let mut small = vec![7u8; 10];
        assert_eq!(
            seg.read_at(0, 100, &mut [&mut small]).unwrap_err().code(),
            -3000
        );
        assert!(small.iter().all(|&v| v == 7));
    }

    #[test]
    fn a_segment_larger_than_the_host_is_refused_cleanly() {
        let info = rustix::system::sysinfo();
        let ram = info.totalram as u64 * info.mem_unit as u64;
        let err = ShmSegment::create("test", 2 * ram).err().expect("refused");
        assert_eq!(err.code(), -3016);
        assert_eq!(ShmSegment::create("test", 0).err().unwrap().code(), -3000);
    }

    #[test]
    fn a_second_mapping_of_the_fd_sees_the_bytes() {
        let seg = ShmSegment::create("test", 1 << 16).unwrap();
        seg.write_at(0, 5, &[b"hello"]).unwrap();
        let file = File::from(seg.fd().try_clone_to_owned().unwrap());
        let other = ShmSegment::open(file, 1 << 16).unwrap();
        let mut out = [0u8; 5];
        other.read_at(0, 5, &mut [&mut out]).unwrap();
        assert_eq!(&out, b"hello");
    }
}
