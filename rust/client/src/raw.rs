//! The one place where the pointers of the C, C++ and Python APIs become slices.
//!
//! Every function checks what can be checked (null, zero size, `isize` overflow,
//! address wrap-around, overlapping destinations, mismatched lengths) and answers
//! -3000 for bad input before anything is read or written. What cannot be checked —
//! that each pointer really addresses `size` readable (or writable) bytes that stay
//! valid for the call — is the caller's promise, hence `unsafe`.

use std::ffi::c_void;

use memcache_core::{CopyDirection, Error, ReplicateConfig, Result};

use crate::inplace::{CopyWay, Piece};

use crate::blocking::BlockingObjectStore;
use crate::device::DeviceBuf;

fn check_region(ptr: *const c_void, len: usize) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::invalid("null buffer"));
    }
    if len == 0 {
        return Err(Error::invalid("buffer of size 0"));
    }
    if len > isize::MAX as usize || (ptr as usize).checked_add(len).is_none() {
        return Err(Error::invalid("buffer size overflows the address space"));
    }
    Ok(())
}

/// # Safety
/// `ptr` must address `len` bytes readable for the lifetime `'a`.
unsafe fn slice<'a>(ptr: *const c_void, len: usize) -> Result<&'a [u8]> {
    check_region(ptr, len)?;
    // SAFETY: non-null, within `isize`, no wrap-around (checked above); readability and
    // lifetime are the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// # Safety
/// Each `(ptrs[i], sizes[i])` must address bytes readable for `'a`.
unsafe fn slices<'a>(ptrs: &[*const c_void], sizes: &[usize]) -> Result<Vec<&'a [u8]>> {
    if ptrs.len() != sizes.len() {
        return Err(Error::invalid(format!(
            "{} buffers but {} sizes",
            ptrs.len(),
            sizes.len()
        )));
    }
    if ptrs.is_empty() {
        return Err(Error::invalid("no buffers"));
    }
    // SAFETY: forwarded caller promise.
    ptrs.iter()
        .zip(sizes)
        .map(|(&p, &n)| unsafe { slice(p, n) })
        .collect()
}

/// Refuses regions of which any two overlap: two `&mut` to one byte would be undefined
/// behaviour, and the result of the copies meaningless anyway.
fn check_disjoint(regions: impl Iterator<Item = (*mut c_void, usize)>) -> Result<()> {
    let mut sorted: Vec<(usize, usize)> = regions.map(|(p, n)| (p as usize, n)).collect();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return Err(Error::invalid("destination buffers overlap"));
    }
    Ok(())
}

/// Checks one key's destination layers.
fn check_layers(bufs: &[*mut c_void], sizes: &[usize]) -> Result<Vec<(*mut c_void, usize)>> {
    check_shape(bufs.len(), bufs.len(), sizes.len())?;
    if bufs.is_empty() {
        return Err(Error::invalid("no buffers"));
    }
    let regions: Vec<_> = bufs.iter().copied().zip(sizes.iter().copied()).collect();
    for &(p, n) in &regions {
        check_region(p, n)?;
    }
    Ok(regions)
}

/// # Safety
/// Each region must have passed `check_region`, be pairwise disjoint (`check_disjoint`),
/// and be writable and used by nothing else for `'a`.
unsafe fn slices_mut<'a>(regions: Vec<(*mut c_void, usize)>) -> Vec<&'a mut [u8]> {
    regions
        .into_iter()
        // SAFETY: non-null, bounded and disjoint per the contract above; writability,
        // lifetime and exclusivity are the caller's promise.
        .map(|(p, n)| unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) })
        .collect()
}

fn check_shape(keys: usize, bufs: usize, sizes: usize) -> Result<()> {
    if keys != bufs || bufs != sizes {
        return Err(Error::invalid(format!(
            "{keys} keys, {bufs} buffers, {sizes} sizes"
        )));
    }
    Ok(())
}

/// What a put's or get's `direct` means for its buffers.
enum Way {
    Host(CopyDirection),
    Device,
}

/// L2G / G2L take device buffers; AUTO (9) asks the device runtime about `first` (host
/// memory where there is no runtime); H2G / G2H take host buffers. A direction of the
/// other kind of call is -3000.
fn way(direct: i32, put: bool, first: *const c_void) -> Result<Way> {
    if direct == AUTO {
        return Ok(match on_device(first) {
            true => Way::Device,
            false if put => Way::Host(CopyDirection::H2G),
            false => Way::Host(CopyDirection::G2H),
        });
    }
    let d = CopyDirection::try_from(direct)?;
    if d.is_put() != put {
        return Err(Error::invalid(format!(
            "copy direction {d:?} does not fit a {}",
            if put { "put" } else { "get" }
        )));
    }
    Ok(if d.is_device() {
        Way::Device
    } else {
        Way::Host(d)
    })
}

/// A caller's buffer address, read or written.
trait Addr: Copy {
    fn addr(self) -> *const c_void;
}

impl Addr for *const c_void {
    fn addr(self) -> *const c_void {
        self
    }
}

impl Addr for *mut c_void {
    fn addr(self) -> *const c_void {
        self.cast_const()
    }
}

/// One key's device buffers: addresses the host never dereferences, checked as far as
/// they can be (non-null, non-empty, no wrap-around).
fn device_bufs<P: Addr>(ptrs: &[P], sizes: &[usize]) -> Result<Vec<DeviceBuf>> {
    check_shape(ptrs.len(), ptrs.len(), sizes.len())?;
    if ptrs.is_empty() {
        return Err(Error::invalid("no buffers"));
    }
    ptrs.iter()
        .zip(sizes)
        .map(|(&p, &len)| {
            let p = p.addr();
            check_region(p, len)?;
            Ok(DeviceBuf { ptr: p as u64, len })
        })
        .collect()
}

/// AUTO's question: whether the device runtime (loaded now if need be) says `first` is
/// device memory; false without a runtime.
fn on_device(first: *const c_void) -> bool {
    let kind = memcache_device::runtime().and_then(|rt| rt.pointer_kind(first as u64));
    matches!(kind, Ok(memcache_device::PtrKind::Device(_)))
}

/// -3000 when a device runtime is loaded and says `first` is device memory: a host
/// direction would have the host dereference it. Without a loaded runtime there is no
/// device memory in this process to mistake.
fn host_only(first: *const c_void) -> Result<()> {
    let Some(rt) = memcache_device::loaded() else {
        return Ok(());
    };
    match rt.pointer_kind(first as u64) {
        Ok(memcache_device::PtrKind::Device(d)) => Err(Error::invalid(format!(
            "buffer {first:p} is memory of device {d}: copy it with L2G / G2L (or AUTO)"
        ))),
        _ => Ok(()),
    }
}

/// The first buffer of a batch, for AUTO's question (null where there is none).
fn first_of<P: Addr>(bufs: &[&[P]]) -> *const c_void {
    bufs.first()
        .and_then(|b| b.first())
        .map_or(std::ptr::null(), |&p| p.addr())
}

/// Device buffers of a batch, converted per key (a key with bad addresses fails alone),
/// handed to `run`.
fn per_key_device<P: Addr, T: Clone>(
    keys: &[&[u8]],
    bufs: &[&[P]],
    sizes: &[&[usize]],
    run: impl FnOnce(&[&&[u8]], &[&[DeviceBuf]]) -> Vec<Result<T>>,
) -> Vec<Result<T>> {
    let converted = bufs
        .iter()
        .zip(sizes)
        .map(|(b, s)| device_bufs(b, s))
        .collect();
    per_key(keys, converted, |ks, objects| {
        let objects: Vec<&[DeviceBuf]> = objects.iter().map(Vec::as_slice).collect();
        run(ks, &objects)
    })
}

/// Splits a per-key pointer conversion: keys whose buffers are bad get that error,
/// the rest go to `run`, and the answers are merged back in key order.
fn per_key<K, S, T: Clone>(
    keys: &[K],
    converted: Vec<Result<S>>,
    run: impl FnOnce(&[&K], Vec<S>) -> Vec<Result<T>>,
) -> Vec<Result<T>> {
    let mut results: Vec<Option<Result<T>>> = vec![None; keys.len()];
    let mut good_keys = Vec::with_capacity(keys.len());
    let mut good = Vec::with_capacity(keys.len());
    let mut slots = Vec::with_capacity(keys.len());
    for (i, c) in converted.into_iter().enumerate() {
        match c {
            Ok(s) => {
                good_keys.push(&keys[i]);
                good.push(s);
                slots.push(i);
            }
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    if !good.is_empty() {
        for (i, r) in slots.into_iter().zip(run(&good_keys, good)) {
            results[i] = Some(r);
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every key answered"))
        .collect()
}

impl BlockingObjectStore {
    pub fn register_buffer_ptr(&self, ptr: *const c_void, size: usize) -> Result<()> {
        check_region(ptr, size)?;
        self.inner().register_range(ptr as usize, size)
    }

    pub fn unregister_buffer_ptr(&self, ptr: *const c_void, size: usize) -> Result<()> {
        check_region(ptr, size)?;
        self.inner().unregister_range(ptr as usize, size)
    }

    /// # Safety
    /// `buf` must address `size` readable bytes for the duration of the call (device
    /// memory for L2G).
    pub unsafe fn put_from_ptr(
        &self,
        key: &[u8],
        buf: *const c_void,
        size: usize,
        direct: i32,
        config: &ReplicateConfig,
    ) -> Result<()> {
        // SAFETY: forwarded caller promise.
        unsafe { self.put_from_layers_ptr(key, &[buf], &[size], direct, config) }
    }

    /// # Safety
    /// `buf` must address `size` writable bytes, used by nothing else during the call
    /// (device memory for G2L).
    pub unsafe fn get_into_ptr(
        &self,
        key: &[u8],
        buf: *mut c_void,
        size: usize,
        direct: i32,
    ) -> Result<u64> {
        // SAFETY: forwarded caller promise.
        unsafe { self.get_into_layers_ptr(key, &[buf], &[size], direct) }
    }

    /// # Safety
    /// Every `(bufs[i], sizes[i])` must address readable bytes for the call.
    pub unsafe fn put_from_layers_ptr(
        &self,
        key: &[u8],
        bufs: &[*const c_void],
        sizes: &[usize],
        direct: i32,
        config: &ReplicateConfig,
    ) -> Result<()> {
        // SAFETY: forwarded caller promise.
        let mut r =
            unsafe { self.batch_put_from_layers_ptr(&[key], &[bufs], &[sizes], direct, config) };
        r.pop().expect("one result per key")
    }

    /// # Safety
    /// Every `(bufs[i], sizes[i])` must address writable bytes, used by nothing else.
    pub unsafe fn get_into_layers_ptr(
        &self,
        key: &[u8],
        bufs: &[*mut c_void],
        sizes: &[usize],
        direct: i32,
    ) -> Result<u64> {
        // SAFETY: forwarded caller promise.
        let mut r = unsafe { self.batch_get_into_layers_ptr(&[key], &[bufs], &[sizes], direct) };
        r.pop().expect("one result per key")
    }

    /// # Safety
    /// As [`Self::put_from_ptr`], for every key.
    pub unsafe fn batch_put_from_ptr(
        &self,
        keys: &[&[u8]],
        bufs: &[*const c_void],
        sizes: &[usize],
        direct: i32,
        config: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        let layers: Vec<&[*const c_void]> = bufs.iter().map(std::slice::from_ref).collect();
        let sizes: Vec<&[usize]> = sizes.iter().map(std::slice::from_ref).collect();
        // SAFETY: forwarded caller promise.
        unsafe { self.batch_put_from_layers_ptr(keys, &layers, &sizes, direct, config) }
    }

    /// # Safety
    /// As [`Self::get_into_ptr`], for every key; where buffers of two keys overlap,
    /// the later key's bytes win.
    pub unsafe fn batch_get_into_ptr(
        &self,
        keys: &[&[u8]],
        bufs: &[*mut c_void],
        sizes: &[usize],
        direct: i32,
    ) -> Vec<Result<u64>> {
        let layers: Vec<&[*mut c_void]> = bufs.iter().map(std::slice::from_ref).collect();
        let sizes: Vec<&[usize]> = sizes.iter().map(std::slice::from_ref).collect();
        // SAFETY: forwarded caller promise.
        unsafe { self.batch_get_into_layers_ptr(keys, &layers, &sizes, direct) }
    }

    /// # Safety
    /// As [`Self::put_from_layers_ptr`], for every key.
    pub unsafe fn batch_put_from_layers_ptr(
        &self,
        keys: &[&[u8]],
        bufs: &[&[*const c_void]],
        sizes: &[&[usize]],
        direct: i32,
        config: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        let n = keys.len();
        let way = check_shape(keys.len(), bufs.len(), sizes.len())
            .and_then(|()| way(direct, true, first_of(bufs)));
        let direct = match way {
            Ok(Way::Host(d)) => d,
            Ok(Way::Device) => {
                return per_key_device(keys, bufs, sizes, |ks, objects| {
                    self.batch_put_from_device(ks, objects, config)
                });
            }
            Err(e) => return vec![Err(e); n],
        };
        let converted = bufs
            .iter()
            .zip(sizes)
            .map(|(b, s)| {
                host_only(first_of(&[*b]))?;
                // SAFETY: forwarded caller promise.
                unsafe { slices(b, s) }
            })
            .collect();
        per_key(keys, converted, |ks, objects| {
            let objects: Vec<&[&[u8]]> = objects.iter().map(Vec::as_slice).collect();
            self.batch_put_from_layers(ks, &objects, direct, config)
        })
    }

    /// # Safety
    /// As [`Self::get_into_layers_ptr`], for every key. The layers of one key may not
    /// overlap (-3000 for that key); those of different keys may: then keys are read
    /// in order, and where destinations overlap the last key's bytes win (as 1.3.0).
    pub unsafe fn batch_get_into_layers_ptr(
        &self,
        keys: &[&[u8]],
        bufs: &[&[*mut c_void]],
        sizes: &[&[usize]],
        direct: i32,
    ) -> Vec<Result<u64>> {
        let n = keys.len();
        let way = check_shape(keys.len(), bufs.len(), sizes.len())
            .and_then(|()| way(direct, false, first_of(bufs)));
        let direct = match way {
            Ok(Way::Host(d)) => d,
            Ok(Way::Device) => {
                return per_key_device(keys, bufs, sizes, |ks, objects| {
                    self.batch_get_into_device(ks, objects)
                });
            }
            Err(e) => return vec![Err(e); n],
        };
        // A key with bad buffers, or layers that overlap each other, fails alone.
        let checked: Vec<Result<Vec<(*mut c_void, usize)>>> = bufs
            .iter()
            .zip(sizes)
            .map(|(b, s)| {
                host_only(first_of(&[*b]))?;
                let regions = check_layers(b, s)?;
                check_disjoint(regions.iter().copied())?;
                Ok(regions)
            })
            .collect();
        let mut results: Vec<Option<Result<u64>>> = vec![None; n];
        let mut run = Vec::with_capacity(n);
        let mut taken = Taken::default();
        for (i, c) in checked.into_iter().enumerate() {
            match c {
                Err(e) => results[i] = Some(Err(e)),
                Ok(regions) => {
                    if taken.overlaps(&regions) {
                        // SAFETY: forwarded caller promise; the run's regions are
                        // pairwise disjoint.
                        unsafe {
                            self.get_run(keys, std::mem::take(&mut run), direct, &mut results)
                        };
                        taken = Taken::default();
                    }
                    taken.add(&regions);
                    run.push((i, regions));
                }
            }
        }
        if !run.is_empty() {
            // SAFETY: as above.
            unsafe { self.get_run(keys, run, direct, &mut results) };
        }
        results
            .into_iter()
            .map(|r| r.expect("every key answered"))
            .collect()
    }

    /// Gets one run of keys whose destinations are pairwise disjoint: their `&mut`
    /// slices live only for this call.
    ///
    /// # Safety
    /// Every region passed `check_region`, no two overlap, and each is writable and
    /// used by nothing else for the call.
    unsafe fn get_run(
        &self,
        keys: &[&[u8]],
        run: Vec<(usize, Vec<(*mut c_void, usize)>)>,
        direct: CopyDirection,
        results: &mut [Option<Result<u64>>],
    ) {
        let (slots, regions): (Vec<usize>, Vec<_>) = run.into_iter().unzip();
        let run_keys: Vec<&[u8]> = slots.iter().map(|&i| keys[i]).collect();
        // SAFETY: the caller's contract.
        let mut layers: Vec<Vec<&mut [u8]>> = regions
            .into_iter()
            .map(|r| unsafe { slices_mut(r) })
            .collect();
        let mut objects: Vec<&mut [&mut [u8]]> = layers.iter_mut().map(Vec::as_mut_slice).collect();
        let answers = self.batch_get_into_layers(&run_keys, &mut objects, direct);
        for (i, r) in slots.into_iter().zip(answers) {
            results[i] = Some(r);
        }
    }
}

/// The destination regions of a run of keys, pairwise disjoint: start → end.
#[derive(Default)]
struct Taken(std::collections::BTreeMap<usize, usize>);

impl Taken {
    fn overlaps(&self, regions: &[(*mut c_void, usize)]) -> bool {
        regions.iter().any(|&(p, n)| {
            let (start, end) = (p as usize, p as usize + n);
            self.0
                .range(..end)
                .next_back()
                .is_some_and(|(_, &e)| e > start)
        })
    }

    fn add(&mut self, regions: &[(*mut c_void, usize)]) {
        for &(p, n) in regions {
            self.0.insert(p as usize, p as usize + n);
        }
    }
}

/// The way of a 1.3.0 `direct` argument of `batch_copy`, and whether its buffers are
/// device memory: H2G / L2G into the pool, G2H / G2L out of it, AUTO (9) as each
/// address's grant says, on the memory the device runtime says `first` is.
fn copy_way(direct: i32, first: *const c_void) -> Result<(CopyWay, bool)> {
    Ok(match direct {
        AUTO => (CopyWay::Auto, on_device(first)),
        d => match CopyDirection::try_from(d)? {
            CopyDirection::H2G => (CopyWay::ToPool, false),
            CopyDirection::G2H => (CopyWay::FromPool, false),
            CopyDirection::L2G => (CopyWay::ToPool, true),
            CopyDirection::G2L => (CopyWay::FromPool, true),
        },
    })
}

/// 1.3.0's `direct` value that lets the pool pick the direction.
pub const AUTO: i32 = 9;

/// Refuses regions of which two overlap where one of them is written: a written byte
/// may not be reachable through another slice of the same call.
fn check_unaliased(regions: &[(usize, usize, bool)]) -> Result<()> {
    let mut sorted: Vec<(usize, usize, bool)> = regions.to_vec();
    sorted.sort_unstable();
    // The furthest end so far of a written region, and of any region.
    let (mut written_end, mut any_end) = (0usize, 0usize);
    for &(start, len, writes) in &sorted {
        if start < written_end || (writes && start < any_end) {
            return Err(Error::invalid("buffers of one copy overlap"));
        }
        any_end = any_end.max(start + len);
        if writes {
            written_end = written_end.max(start + len);
        }
    }
    Ok(())
}

impl BlockingObjectStore {
    /// 1.3.0's `batch_copy`: `sizes[i]` bytes between `bufs[i]` and the pool address
    /// `gvas[i]`, in the direction `direct` (3 H2G into the pool, 2 G2H out of it, 9
    /// either, as the address's grant says).
    ///
    /// # Safety
    /// Every `(bufs[i], sizes[i])` must address bytes readable (into the pool) or
    /// writable and used by nothing else (out of it) for the duration of the call.
    pub unsafe fn batch_copy_ptr(
        &self,
        gvas: &[u64],
        bufs: &[*mut c_void],
        sizes: &[usize],
        direct: i32,
    ) -> Result<()> {
        check_shape(gvas.len(), bufs.len(), sizes.len())?;
        let bufs: Vec<&[*mut c_void]> = bufs.iter().map(std::slice::from_ref).collect();
        let sizes: Vec<&[usize]> = sizes.iter().map(std::slice::from_ref).collect();
        // SAFETY: forwarded caller promise.
        unsafe { self.batch_copy_layers_ptr(gvas, &bufs, &sizes, direct) }
    }

    /// 1.3.0's `batch_copy_layers`: piece `i` is the layers `bufs[i][j]` / `sizes[i][j]`,
    /// gathered into the pool from `gvas[i]` on, or scattered out of it.
    ///
    /// # Safety
    /// As [`Self::batch_copy_ptr`], for every layer.
    pub unsafe fn batch_copy_layers_ptr(
        &self,
        gvas: &[u64],
        bufs: &[&[*mut c_void]],
        sizes: &[&[usize]],
        direct: i32,
    ) -> Result<()> {
        let (way, device) = copy_way(direct, first_of(bufs))?;
        check_shape(gvas.len(), bufs.len(), sizes.len())?;
        let into_pool = |gva: u64| match way {
            CopyWay::ToPool => Ok(true),
            CopyWay::FromPool => Ok(false),
            CopyWay::Auto => self.inner().writes_to_pool(gva),
        };
        if device {
            // Without a runtime the answer is -3000, whatever the objects' states.
            crate::device::runtime()?;
            let mut ways = Vec::with_capacity(gvas.len());
            let mut layers = Vec::with_capacity(gvas.len());
            for ((&gva, b), s) in gvas.iter().zip(bufs).zip(sizes) {
                layers.push(device_bufs(b, s)?);
                ways.push(into_pool(gva)?);
            }
            let mut pieces: Vec<Piece<'_>> = layers
                .iter()
                .zip(ways)
                .map(|(l, into)| match into {
                    true => Piece::FromDevice(l),
                    false => Piece::IntoDevice(l),
                })
                .collect();
            return self.batch_copy(gvas, &mut pieces, way);
        }
        host_only(first_of(bufs))?;
        let mut checked = Vec::with_capacity(gvas.len());
        let mut regions = Vec::new();
        for ((&gva, b), s) in gvas.iter().zip(bufs).zip(sizes) {
            let layers = check_layers(b, s)?;
            let writes_pool = into_pool(gva)?;
            regions.extend(layers.iter().map(|&(p, n)| (p as usize, n, !writes_pool)));
            checked.push((writes_pool, layers));
        }
        check_unaliased(&regions)?;
        let ways: Vec<bool> = checked.iter().map(|(w, _)| *w).collect();
        let mut sources: Vec<Vec<&[u8]>> = Vec::new();
        let mut dests: Vec<Vec<&mut [u8]>> = Vec::new();
        for (writes_pool, layers) in checked {
            if writes_pool {
                // SAFETY: checked non-null and bounded; no written region overlaps it;
                // readability is the caller's promise.
                let srcs = layers.iter().map(|&(p, n)| unsafe { slice(p, n) });
                sources.push(srcs.collect::<Result<_>>()?);
            } else {
                // SAFETY: checked and disjoint from every other region of the call.
                dests.push(unsafe { slices_mut(layers) });
            }
        }
        let (mut sources, mut dests) = (sources.iter(), dests.iter_mut());
        let mut pieces: Vec<Piece<'_>> = ways
            .into_iter()
            .map(|writes_pool| match writes_pool {
                true => Piece::From(sources.next().expect("one per piece")),
                false => Piece::Into(dests.next().expect("one per piece")),
            })
            .collect();
        self.batch_copy(gvas, &mut pieces, way)
    }
}
