//! The copy routines of the shared-memory data plane: the kernel of each copy, chosen
//! per size class by measurement, and a small pool of threads that spreads a batch's
//! copies over several cores.
//!
//! Three kernels compete for copies of [`STREAMING_MIN`] bytes and more:
//! - glibc's `memcpy` (regular stores; it picks its own strategy by size);
//! - 16-byte loads with non-temporal (streaming) stores: a KV block written to the pool,
//!   or read out of it for a device upload, is not read again from the CPU cache soon,
//!   and streaming it past the cache saves the read-for-ownership of the destination;
//! - `rep movsb`, fast on CPUs with ERMSB/FSRM, but slow when source and destination
//!   alias modulo a page (measured here: 14 GB/s against 4.4 GB/s 16 bytes apart).
//!
//! Which wins depends on the CPU and its memory, so [`calibrate`] times each over a
//! stretch larger than the last-level cache (as a batch of KV blocks is), at aligned
//! and aliasing offsets, once per process; until it has, streaming stores are used.

use std::marker::PhantomData;
use std::sync::{Once, OnceLock};
use std::time::Instant;

/// Copies shorter than this use `memcpy`: they fit in the cache, where regular stores
/// win and the measured kernels' setup costs more than it saves.
pub const STREAMING_MIN: usize = 16 << 10;

/// The two size classes measured: `[STREAMING_MIN, LARGE_MIN)` and `LARGE_MIN` up.
pub const LARGE_MIN: usize = 256 << 10;

/// Each thread of a parallel batch copies at least this much: below it, waking a thread
/// costs more than its share of the copy saves.
pub const SHARE_MIN: usize = 1 << 20;

/// A batch this large has the kernels chosen by measurement (once per process): a process
/// that only ever copies small batches never pays for the measurement.
const CALIBRATE_AT: usize = 16 << 20;

/// A way of copying bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Memcpy,
    Stream,
    RepMovsb,
}

impl Kernel {
    /// The kernels this target has, the default first.
    pub fn available() -> &'static [Kernel] {
        if cfg!(target_arch = "x86_64") {
            &[Kernel::Stream, Kernel::Memcpy, Kernel::RepMovsb]
        } else {
            &[Kernel::Memcpy]
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Memcpy => "memcpy",
            Kernel::Stream => "stream",
            Kernel::RepMovsb => "movsb",
        }
    }

    fn parse(s: &str) -> Option<Kernel> {
        Kernel::available()
            .iter()
            .copied()
            .find(|k| k.name() == s.trim())
    }
}

/// The kernel of each size class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    /// Copies of `STREAMING_MIN` up to `LARGE_MIN` bytes.
    pub medium: Kernel,
    /// Copies of `LARGE_MIN` bytes and more.
    pub large: Kernel,
    /// Whether this is a measurement (or the `MMC_COPY_KERNEL` override), not the default.
    pub measured: bool,
}

/// Streaming stores where the target has them: right for copies past the cache.
const DEFAULT_KERNEL: Kernel = if cfg!(target_arch = "x86_64") {
    Kernel::Stream
} else {
    Kernel::Memcpy
};

const DEFAULT_KERNELS: Kernels = Kernels {
    medium: DEFAULT_KERNEL,
    large: DEFAULT_KERNEL,
    measured: false,
};

static CHOSEN: OnceLock<Kernels> = OnceLock::new();

/// The kernels in use now.
pub fn kernels() -> Kernels {
    CHOSEN.get().copied().unwrap_or(DEFAULT_KERNELS)
}

/// Chooses the kernels once per process, in a thread of its own so that no caller waits
/// for it: from `MMC_COPY_KERNEL` (`memcpy`, `stream` or `movsb`) where set, else by
/// [`measure`]. Later calls do nothing.
pub fn calibrate() {
    static START: Once = Once::new();
    START.call_once(|| {
        if let Some(k) = from_env() {
            let _ = CHOSEN.set(k);
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("mmc-copy-calibrate".into())
            .spawn(|| {
                let k = measure();
                tracing::debug!(?k, "copy kernels measured");
                let _ = CHOSEN.set(k);
            });
        if let Err(e) = spawned {
            tracing::warn!("copy kernels not measured ({e}): streaming stores for all");
        }
    });
}

/// As [`calibrate`], and waits until the kernels are chosen (benchmarks, so that no
/// timed pass runs beside the measurement).
pub fn calibrate_and_wait() -> Kernels {
    calibrate();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while CHOSEN.get().is_none() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    kernels()
}

fn from_env() -> Option<Kernels> {
    let v = std::env::var("MMC_COPY_KERNEL").ok()?;
    match Kernel::parse(&v) {
        Some(k) => Some(Kernels {
            medium: k,
            large: k,
            measured: true,
        }),
        None => {
            tracing::warn!(
                "MMC_COPY_KERNEL={v:?} is not one of {:?}: measuring instead",
                Kernel::available()
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
            );
            None
        }
    }
}

/// The last-level cache of this host, from sysfs; 32 MiB where it does not say.
fn last_level_cache() -> usize {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let sizes = (0..8).filter_map(|i| {
        let s = std::fs::read_to_string(dir.join(format!("index{i}/size"))).ok()?;
        let s = s.trim();
        let (n, shift) = match s.strip_suffix('K') {
            Some(n) => (n, 10),
            None => match s.strip_suffix('M') {
                Some(n) => (n, 20),
                None => (s, 0),
            },
        };
        n.parse::<usize>().ok().map(|n| n << shift)
    });
    sizes.max().unwrap_or(32 << 20)
}

/// Times every kernel over a stretch twice the last-level cache (16 to 128 MiB), in
/// pieces of each size class, with source and destination page-aligned and with them 16
/// bytes apart modulo a page. A class keeps the default unless another kernel is at
/// least 5 % faster over both placements: on a noisy machine a near tie is noise.
pub fn measure() -> Kernels {
    let span = (2 * last_level_cache()).clamp(16 << 20, 128 << 20);
    const PAGE: usize = 4096;
    let src = vec![1u8; span + 2 * PAGE];
    let mut dst = vec![2u8; span + 2 * PAGE];
    let s0 = src.as_ptr().align_offset(PAGE);
    let d0 = dst.as_mut_ptr().align_offset(PAGE);
    let mut pick = |piece: usize| {
        let mut best = (DEFAULT_KERNEL, f64::INFINITY);
        let mut default_secs = f64::INFINITY;
        for &k in Kernel::available() {
            let mut secs = 0.0;
            for apart in [0, 16] {
                let s = &src[s0..s0 + span];
                let d = &mut dst[d0 + apart..d0 + apart + span];
                let one = |d: &mut [u8]| {
                    let t = Instant::now();
                    for (dc, sc) in d.chunks_mut(piece).zip(s.chunks(piece)) {
                        // SAFETY: two distinct vectors, and each chunk pair has one length.
                        unsafe { copy_with(k, sc.as_ptr(), dc.as_mut_ptr(), dc.len()) };
                    }
                    t.elapsed().as_secs_f64()
                };
                one(d); // warm: the first touch of a page is not the kernel's cost
                secs += one(d).min(one(d));
            }
            if k == DEFAULT_KERNEL {
                default_secs = secs;
            }
            if secs < best.1 {
                best = (k, secs);
            }
        }
        if best.1 * 1.05 < default_secs {
            best.0
        } else {
            DEFAULT_KERNEL
        }
    };
    Kernels {
        medium: pick(64 << 10),
        large: pick(1 << 20),
        measured: true,
    }
}

/// Copies `src` into `dst`, of the same length, with `kernel` (benchmarks' references).
pub fn copy_slice_with(kernel: Kernel, src: &[u8], dst: &mut [u8]) {
    assert_eq!(
        src.len(),
        dst.len(),
        "copy between slices of different lengths"
    );
    // SAFETY: a shared and an exclusive slice never overlap, and both hold `len` bytes.
    unsafe { copy_with(kernel, src.as_ptr(), dst.as_mut_ptr(), dst.len()) }
}

/// Copies `len` bytes from `src` to `dst` with the kernel of its size class.
///
/// # Safety
/// `src` must be readable and `dst` writable for `len` bytes. The ranges may overlap
/// (the copy then behaves like `memmove`).
pub unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    let (s, d) = (src as usize, dst as usize);
    let disjoint = s.saturating_add(len) <= d || d.saturating_add(len) <= s;
    if len < STREAMING_MIN || !disjoint {
        // SAFETY: the caller's promise; `copy` allows overlap.
        unsafe { std::ptr::copy(src, dst, len) };
        return;
    }
    let k = kernels();
    let kernel = if len >= LARGE_MIN { k.large } else { k.medium };
    // SAFETY: the caller's promise, and the ranges are disjoint (checked).
    unsafe { copy_with(kernel, src, dst, len) }
}

/// # Safety
/// `src` readable and `dst` writable for `len` bytes, the two ranges disjoint.
unsafe fn copy_with(kernel: Kernel, src: *const u8, dst: *mut u8, len: usize) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's promise.
        Kernel::Stream => unsafe { stream(src, dst, len) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's promise.
        Kernel::RepMovsb => unsafe { rep_movsb(src, dst, len) },
        // SAFETY: the caller's promise.
        _ => unsafe { std::ptr::copy_nonoverlapping(src, dst, len) },
    }
}

/// # Safety
/// As `copy_with`.
#[cfg(target_arch = "x86_64")]
unsafe fn rep_movsb(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: `rep movsb` copies rcx bytes from [rsi] to [rdi] upwards (the direction
    // flag is clear at every call boundary by the ABI), within the ranges the caller
    // guarantees valid; it touches no stack and no flags.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            options(nostack, preserves_flags)
        );
    }
}

/// # Safety
/// As `copy_with`.
#[cfg(target_arch = "x86_64")]
unsafe fn stream(src: *const u8, dst: *mut u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    // Streaming stores need a 16-byte aligned destination: copy the head normally.
    let head = dst.align_offset(16).min(len);
    // SAFETY (whole body): every pointer stays within [src, src + len) or
    // [dst, dst + len), which the caller guarantees valid and disjoint; SSE2 is part
    // of the x86-64 baseline; the stores go to 16-byte aligned addresses.
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, head);
        let (mut s, mut d, mut n) = (src.add(head), dst.add(head), len - head);
        while n >= 64 {
            let a = _mm_loadu_si128(s as *const __m128i);
            let b = _mm_loadu_si128(s.add(16) as *const __m128i);
            let c = _mm_loadu_si128(s.add(32) as *const __m128i);
            let e = _mm_loadu_si128(s.add(48) as *const __m128i);
            _mm_stream_si128(d as *mut __m128i, a);
            _mm_stream_si128(d.add(16) as *mut __m128i, b);
            _mm_stream_si128(d.add(32) as *mut __m128i, c);
            _mm_stream_si128(d.add(48) as *mut __m128i, e);
            s = s.add(64);
            d = d.add(64);
            n -= 64;
        }
        // Streaming stores are weakly ordered: make them visible before anything that
        // follows (the commit that publishes the object, or the caller's own reads).
        _mm_sfence();
        std::ptr::copy_nonoverlapping(s, d, n);
    }
}

/// One checked copy of a batch: `len` bytes from `src` to `dst`, both valid for `'a`.
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a> {
    src: *const u8,
    dst: *mut u8,
    len: usize,
    _borrow: PhantomData<&'a mut [u8]>,
}

// SAFETY: a piece is a pair of ranges the creator vouched for (see `Piece::new`); the
// batch that holds it copies each piece once, from whichever thread.
unsafe impl Send for Piece<'_> {}
// SAFETY: as above; sharing a piece only lets threads read its three fields.
unsafe impl Sync for Piece<'_> {}

impl<'a> Piece<'a> {
    /// # Safety
    /// `src` must stay readable and `dst` writable for `len` bytes during `'a`, and no
    /// one else may write `dst`'s range while the piece may be copied (the pool's
    /// ownership rules: one writer per blob before its commit, the caller's own buffer
    /// after a read).
    pub unsafe fn new(src: *const u8, dst: *mut u8, len: usize) -> Piece<'a> {
        Piece {
            src,
            dst,
            len,
            _borrow: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn copy(&self) {
        // SAFETY: `Piece::new`'s contract.
        unsafe { copy_bytes(self.src, self.dst, self.len) }
    }

    /// The first `at` bytes and the rest.
    fn split(self, at: usize) -> (Piece<'a>, Piece<'a>) {
        let at = at.min(self.len);
        // SAFETY: both halves lie inside this piece's ranges.
        unsafe {
            (
                Piece::new(self.src, self.dst, at),
                Piece::new(self.src.add(at), self.dst.add(at), self.len - at),
            )
        }
    }
}

/// Threads that copy a batch's pieces side by side: the caller's own and up to
/// `threads - 1` more, capped at the cores this process may use. The threads start with
/// the first batch large enough to share.
pub struct CopyPool {
    threads: usize,
    pool: OnceLock<Option<rayon::ThreadPool>>,
}

impl CopyPool {
    /// A pool for batches copied by up to `threads` threads (the caller's included), at
    /// most as many as this process has cores; 0 and 1 copy in the caller's thread.
    pub fn new(threads: usize) -> CopyPool {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        CopyPool {
            threads: threads.clamp(1, cores),
            pool: OnceLock::new(),
        }
    }

    /// How many threads copy a large batch.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn pool(&self) -> Option<&rayon::ThreadPool> {
        let built = self.pool.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(self.threads - 1)
                .thread_name(|i| format!("mmc-copy-{i}"))
                .build()
                .map_err(|e| tracing::warn!("no copy threads ({e}): copying in the caller's"))
                .ok()
        });
        built.as_ref()
    }

    /// Copies every piece, spread over up to `threads` threads (never more than the
    /// pool's, and each with at least [`SHARE_MIN`] bytes); returns when all are done
    /// (and every streaming store is visible).
    pub fn run(&self, pieces: &[Piece<'_>], threads: usize) {
        let total: usize = pieces.iter().map(Piece::len).sum();
        if total >= CALIBRATE_AT {
            calibrate();
        }
        let n = threads.min(self.threads).min(total / SHARE_MIN).max(1);
        let pool = match n {
            1 => None,
            _ => self.pool(),
        };
        let Some(pool) = pool else {
            return pieces.iter().for_each(Piece::copy);
        };
        let shares = split(pieces, total.div_ceil(n));
        let (mine, theirs) = shares.split_first().expect("at least one share");
        pool.in_place_scope(|s| {
            for share in theirs {
                s.spawn(move |_| share.iter().for_each(Piece::copy));
            }
            mine.iter().for_each(Piece::copy);
        });
    }
}

/// `pieces` in order, cut into shares of about `share` bytes each (a piece cut where a
/// share ends, at a page boundary of its own offset).
fn split<'a>(pieces: &[Piece<'a>], share: usize) -> Vec<Vec<Piece<'a>>> {
    const PAGE: usize = 4096;
    let mut shares = vec![Vec::new()];
    let mut room = share;
    for &p in pieces {
        let mut p = p;
        while p.len() > room {
            let cut = room / PAGE * PAGE;
            if cut > 0 {
                let (head, tail) = p.split(cut);
                shares.last_mut().expect("one share").push(head);
                p = tail;
            }
            shares.push(Vec::new());
            room = share;
        }
        room -= p.len();
        shares.last_mut().expect("one share").push(p);
    }
    shares.retain(|s| !s.is_empty());
    if shares.is_empty() {
        shares.push(Vec::new());
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n as u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn every_kernel_length_and_alignment_copies_exactly() {
        let src = pattern(600_000);
        for &k in Kernel::available() {
            for len in [
                0,
                1,
                15,
                63,
                64,
                65,
                STREAMING_MIN - 1,
                STREAMING_MIN,
                STREAMING_MIN + 77,
                150_001,
                LARGE_MIN + 3,
            ] {
                for (so, d_off) in [(0, 0), (1, 0), (0, 3), (16, 0), (5, 11)] {
                    let mut dst = vec![0xEEu8; len + 64];
                    // SAFETY: both ranges are inside their vectors, which are distinct.
                    unsafe { copy_with(k, src.as_ptr().add(so), dst.as_mut_ptr().add(d_off), len) };
                    assert_eq!(&dst[d_off..d_off + len], &src[so..so + len], "{k:?} {len}");
                    assert!(dst[..d_off].iter().all(|&b| b == 0xEE));
                    assert!(dst[d_off + len..].iter().all(|&b| b == 0xEE));
                }
            }
        }
    }

    #[test]
    fn overlapping_ranges_move_like_memmove() {
        let mut v: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let expect: Vec<u8> = v[..60_000].to_vec();
        // SAFETY: both ranges are inside `v`.
        unsafe { copy_bytes(v.as_ptr(), v.as_mut_ptr().add(30_000), 60_000) };
        assert_eq!(&v[30_000..90_000], &expect[..]);
    }

    #[test]
    fn a_measurement_picks_an_available_kernel_for_each_class() {
        let k = measure();
        assert!(k.measured);
        assert!(Kernel::available().contains(&k.medium));
        assert!(Kernel::available().contains(&k.large));
        for &k in Kernel::available() {
            assert_eq!(Kernel::parse(k.name()), Some(k));
        }
        assert_eq!(Kernel::parse("memmove"), None);
    }

    fn pieces<'a>(src: &'a [u8], dst: &'a mut [u8], lens: &[usize]) -> Vec<Piece<'a>> {
        let mut at = 0;
        lens.iter()
            .map(|&n| {
                assert!(at + n <= src.len() && at + n <= dst.len());
                // SAFETY: inside both slices, which outlive the pieces.
                let p = unsafe { Piece::new(src.as_ptr().add(at), dst.as_mut_ptr().add(at), n) };
                at += n;
                p
            })
            .collect()
    }

    #[test]
    fn shares_cover_every_byte_once_in_order() {
        let src = pattern(10 << 20);
        let mut dst = vec![0u8; 10 << 20];
        let lens = [3 << 20, 4096, 1, 5 << 20, 77_777, 0, 1 << 20];
        let ps = pieces(&src, &mut dst, &lens);
        let total: usize = lens.iter().sum();
        for share in [4096, 1 << 20, 3 << 20, total, total * 2] {
            let shares = split(&ps, share);
            let flat: Vec<Piece> = shares.iter().flatten().copied().collect();
            assert_eq!(flat.iter().map(Piece::len).sum::<usize>(), total);
            let mut next = src.as_ptr();
            for p in flat.iter().filter(|p| !p.is_empty()) {
                assert_eq!(p.src, next, "contiguous, in order");
                next = p.src.wrapping_add(p.len());
            }
            for s in &shares {
                assert!(s.iter().map(Piece::len).sum::<usize>() <= share.max(4096));
            }
        }
    }

    #[test]
    fn a_pool_copies_a_batch_exactly_with_any_thread_count() {
        let src = pattern(12 << 20);
        for threads in [0, 1, 2, 3, 8] {
            let pool = CopyPool::new(threads);
            assert!(pool.threads() >= 1);
            for lens in [
                [128 << 10, 16 << 10].repeat(40),
                vec![5 << 20, 7 << 20],
                vec![100],
            ] {
                let mut dst = vec![0u8; 12 << 20];
                let total: usize = lens.iter().sum();
                let ps = pieces(&src, &mut dst, &lens);
                pool.run(&ps, threads);
                drop(ps);
                assert_eq!(&dst[..total], &src[..total], "threads {threads}");
                assert!(dst[total..].iter().all(|&b| b == 0));
            }
        }
    }
}
