//! The C++ bridge. `cxx` generates the C++ declarations of the functions below; the
//! shim in `cpp/src/abi.cpp` wraps them in an `extern "C"` ABI that the public
//! header's inline `ObjectStore` calls. Keys cross as byte slices and buffers as
//! addresses and sizes, never as `std::string`, so the library works for consumers
//! built with either libstdc++ string ABI. Every entry catches panics and answers -1.

pub mod c_api;
mod logging;
pub mod setup;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use memcache_client::{
    catch_panic, code_of, BlockingObjectStore, ClientConfig, Error, Medium, ReplicateConfig,
};
use memcache_core::put_code;

#[allow(clippy::too_many_arguments)] // the batch calls take their arrays flat
#[cxx::bridge(namespace = "memcache::ffi")]
mod ffi {
    /// What `GetKeyInfo` reports.
    struct KeyInfoOut {
        size: u64,
        device_id: u32,
        status: i32,
        services: Vec<u32>,
        media: Vec<u16>,
        /// The pool address of each replica (0 where it has none), for `BatchCopy`
        /// under a read lease.
        gvas: Vec<u64>,
    }

    extern "Rust" {
        type Store;

        /// A store configured from `MMC_CLIENT_CONFIG` (a TOML file) and `MMC_CLIENT_*`
        /// variables; null on a configuration error.
        fn store_new() -> Result<Box<Store>>;
        fn init(self: &Store, device_id: u32, init_bm: bool) -> i32;
        fn tear_down(self: &Store) -> i32;
        /// Replaces the configuration of a store that is not initialized with 1.3.0's
        /// local configuration; `config` is the address of an `mmc_local_config_t`.
        unsafe fn setup(self: &Store, config: usize) -> i32;
        fn local_service_id(self: &Store, out: &mut u32) -> i32;
        fn register_buffer(self: &Store, addr: usize, size: usize) -> i32;
        fn unregister_buffer(self: &Store, addr: usize, size: usize) -> i32;

        /// `keys` is every key's bytes back to back, `key_lens` their lengths. Each key
        /// has `counts[i]` layers; `addrs` and `sizes` list all layers in key order.
        /// One code per key goes to `out`.
        unsafe fn put(
            self: &Store,
            keys: &[u8],
            key_lens: &[usize],
            counts: &[usize],
            addrs: &[usize],
            sizes: &[usize],
            direct: i32,
            replica_num: u32,
            preferred: &[i32],
            out: &mut [i32],
        ) -> i32;
        unsafe fn get(
            self: &Store,
            keys: &[u8],
            key_lens: &[usize],
            counts: &[usize],
            addrs: &[usize],
            sizes: &[usize],
            direct: i32,
            out: &mut [i32],
        ) -> i32;
        fn remove(self: &Store, keys: &[u8], key_lens: &[usize], out: &mut [i32]) -> i32;
        /// 1 exists, 0 does not, negative error, per key.
        fn exist(self: &Store, keys: &[u8], key_lens: &[usize], out: &mut [i32]) -> i32;
        fn key_info(self: &Store, keys: &[u8], key_lens: &[usize]) -> Vec<KeyInfoOut>;

        /// 1.3.0's in-place calls. `batch_alloc` writes each key's pool address, or its
        /// negative code, to `out`; `media` in 1.3.0's numbers (1 DRAM).
        fn batch_alloc(
            self: &Store,
            keys: &[u8],
            key_lens: &[usize],
            sizes: &[u64],
            media: u16,
            lease_ttl_ms: u64,
            out: &mut [i64],
        ) -> i32;
        /// `sizes[i]` bytes between the buffer at `bufs[i]` and the pool address
        /// `gvas[i]`; `direct` 3 into the pool, 2 out of it, 9 either.
        unsafe fn batch_copy(
            self: &Store,
            gvas: &[u64],
            bufs: &[usize],
            sizes: &[usize],
            direct: i32,
        ) -> i32;
        fn batch_write_finish(
            self: &Store,
            keys: &[u8],
            key_lens: &[usize],
            results: &[i32],
            out: &mut [i32],
        ) -> i32;
        fn batch_add_lease(
            self: &Store,
            keys: &[u8],
            key_lens: &[usize],
            ttl_ms: u64,
            out: &mut [i32],
        ) -> i32;
        fn batch_remove_lease(self: &Store, keys: &[u8], key_lens: &[usize]) -> i32;
        /// `evict` (`prefetch` false) or `prefetch` between 1.3.0's media numbers: 0, or
        /// the first failing key's code.
        fn tier_move(
            self: &Store,
            keys: &[u8],
            key_lens: &[usize],
            src: u8,
            dst: u8,
            prefetch: bool,
        ) -> i32;
        fn remove_all(self: &Store) -> i32;
    }
}

/// A C++ `ObjectStore`'s client. `setup` may replace it before `init`, so the calls
/// read it through a lock (uncontended but for `setup`).
pub struct Store {
    client: RwLock<BlockingObjectStore>,
    /// Set by a successful `init`, cleared by `tear_down`: `setup` is refused between.
    initialized: AtomicBool,
}

/// Runs `f`, turning a panic into -1: nothing unwinds into C++.
fn guard(f: impl FnOnce() -> i32) -> i32 {
    catch_panic(-1, f)
}

/// Splits back-to-back keys; `None` when the lengths do not add up.
fn split_keys<'a>(keys: &'a [u8], lens: &[usize]) -> Option<Vec<&'a [u8]>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut at = 0usize;
    for &n in lens {
        let end = at.checked_add(n)?;
        out.push(keys.get(at..end)?);
        at = end;
    }
    (at == keys.len()).then_some(out)
}

/// Cuts the flat layer lists into one list per key; `None` when counts do not add up.
fn per_key<'a, T>(flat: &'a [T], counts: &[usize]) -> Option<Vec<&'a [T]>> {
    let mut out = Vec::with_capacity(counts.len());
    let mut at = 0usize;
    for &n in counts {
        let end = at.checked_add(n)?;
        out.push(flat.get(at..end)?);
        at = end;
    }
    (at == flat.len()).then_some(out)
}

/// Keys, and each key's layer addresses and sizes, when every length pairs up with
/// `n` keys.
type Shape<'a> = (Vec<&'a [u8]>, Vec<&'a [usize]>, Vec<&'a [usize]>);

fn shape<'a>(
    keys: &'a [u8],
    key_lens: &[usize],
    counts: &[usize],
    addrs: &'a [usize],
    sizes: &'a [usize],
    n: usize,
) -> Option<Shape<'a>> {
    if key_lens.len() != n || counts.len() != n {
        return None;
    }
    Some((
        split_keys(keys, key_lens)?,
        per_key(addrs, counts)?,
        per_key(sizes, counts)?,
    ))
}

/// Writes per-key results to `out`, or one code for all when the shape is wrong.
fn answer(out: &mut [i32], codes: impl IntoIterator<Item = i32>) -> i32 {
    for (o, c) in out.iter_mut().zip(codes) {
        *o = c;
    }
    0
}

fn refuse(out: &mut [i32], e: Error) -> i32 {
    let code = e.code();
    out.iter_mut().for_each(|o| *o = code);
    code
}

fn store_new() -> Result<Box<Store>, Error> {
    Ok(Box::new(Store {
        client: RwLock::new(BlockingObjectStore::new(ClientConfig::from_env()?)?),
        initialized: AtomicBool::new(false),
    }))
}

impl Store {
    fn client(&self) -> RwLockReadGuard<'_, BlockingObjectStore> {
        self.client.read().unwrap_or_else(|e| e.into_inner())
    }

    fn init(&self, device_id: u32, init_bm: bool) -> i32 {
        guard(|| {
            let client = self.client();
            let r = client.init(device_id, init_bm);
            if r.is_ok() {
                self.initialized.store(true, Ordering::SeqCst);
            }
            code_of(&r)
        })
    }

    fn tear_down(&self) -> i32 {
        guard(|| {
            let client = self.client();
            let r = client.tear_down();
            self.initialized.store(false, Ordering::SeqCst);
            code_of(&r)
        })
    }

    /// # Safety
    /// `config` is 0 or the address of a valid `mmc_local_config_t`.
    unsafe fn setup(&self, config: usize) -> i32 {
        guard(|| {
            // SAFETY: the caller's promise.
            let Some(c) = (unsafe { (config as *const setup::mmc_local_config_t).as_ref() }) else {
                return Error::invalid("null config").code();
            };
            // The write lock waits for a running init, so the flag is current.
            let mut client = self.client.write().unwrap_or_else(|e| e.into_inner());
            if self.initialized.load(Ordering::SeqCst) {
                return Error::RepeatCall("Setup after Init; TearDown first".into()).code();
            }
            let fresh = ClientConfig::from_env()
                .and_then(|base| setup::apply(base, c))
                .and_then(BlockingObjectStore::new);
            match fresh {
                Ok(fresh) => {
                    *client = fresh;
                    0
                }
                Err(e) => e.code(),
            }
        })
    }

    fn local_service_id(&self, out: &mut u32) -> i32 {
        guard(|| match self.client().get_local_service_id() {
            Ok(id) => {
                *out = id;
                0
            }
            Err(e) => e.code(),
        })
    }

    fn register_buffer(&self, addr: usize, size: usize) -> i32 {
        guard(|| code_of(&self.client().register_buffer_ptr(addr as *const _, size)))
    }

    fn unregister_buffer(&self, addr: usize, size: usize) -> i32 {
        guard(|| code_of(&self.client().unregister_buffer_ptr(addr as *const _, size)))
    }

    /// # Safety
    /// Every `(addrs[i], sizes[i])` must be readable memory for the call.
    #[allow(clippy::too_many_arguments)]
    unsafe fn put(
        &self,
        keys: &[u8],
        key_lens: &[usize],
        counts: &[usize],
        addrs: &[usize],
        sizes: &[usize],
        direct: i32,
        replica_num: u32,
        preferred: &[i32],
        out: &mut [i32],
    ) -> i32 {
        guard(|| {
            let Some((keys, addrs, sizes)) = shape(keys, key_lens, counts, addrs, sizes, out.len())
            else {
                return refuse(
                    out,
                    Error::invalid("keys, buffers and sizes do not pair up"),
                );
            };
            if preferred.iter().any(|&p| p < 0) {
                return refuse(out, Error::invalid("negative preferred local service id"));
            }
            let config = ReplicateConfig {
                replica_num,
                preferred_local_service_ids: preferred.iter().map(|&p| p as u32).collect(),
                ttl: None,
                replace: false,
                medium: None,
            };
            let ptrs: Vec<Vec<*const std::ffi::c_void>> = addrs
                .iter()
                .map(|a| a.iter().map(|&p| p as *const _).collect())
                .collect();
            let ptrs: Vec<&[*const std::ffi::c_void]> = ptrs.iter().map(Vec::as_slice).collect();
            // SAFETY: forwarded caller promise (the C++ caller's buffers).
            let r = unsafe {
                self.client()
                    .batch_put_from_layers_ptr(&keys, &ptrs, &sizes, direct, &config)
            };
            // As 1.3.0: a key that exists is 0, its first value stays.
            answer(out, r.iter().map(put_code))
        })
    }

    /// # Safety
    /// Every `(addrs[i], sizes[i])` must be writable memory, used by nothing else.
    #[allow(clippy::too_many_arguments)]
    unsafe fn get(
        &self,
        keys: &[u8],
        key_lens: &[usize],
        counts: &[usize],
        addrs: &[usize],
        sizes: &[usize],
        direct: i32,
        out: &mut [i32],
    ) -> i32 {
        guard(|| {
            let Some((keys, addrs, sizes)) = shape(keys, key_lens, counts, addrs, sizes, out.len())
            else {
                return refuse(
                    out,
                    Error::invalid("keys, buffers and sizes do not pair up"),
                );
            };
            let ptrs: Vec<Vec<*mut std::ffi::c_void>> = addrs
                .iter()
                .map(|a| a.iter().map(|&p| p as *mut _).collect())
                .collect();
            let ptrs: Vec<&[*mut std::ffi::c_void]> = ptrs.iter().map(Vec::as_slice).collect();
            // SAFETY: forwarded caller promise (the C++ caller's buffers).
            let r = unsafe {
                self.client()
                    .batch_get_into_layers_ptr(&keys, &ptrs, &sizes, direct)
            };
            answer(out, r.iter().map(code_of))
        })
    }

    fn remove(&self, keys: &[u8], key_lens: &[usize], out: &mut [i32]) -> i32 {
        guard(
            || match split_keys(keys, key_lens).filter(|k| k.len() == out.len()) {
                Some(keys) => answer(out, self.client().batch_remove(&keys).iter().map(code_of)),
                None => refuse(out, Error::invalid("keys do not pair up")),
            },
        )
    }

    fn exist(&self, keys: &[u8], key_lens: &[usize], out: &mut [i32]) -> i32 {
        guard(
            || match split_keys(keys, key_lens).filter(|k| k.len() == out.len()) {
                Some(keys) => answer(
                    out,
                    self.client()
                        .batch_is_exist(&keys)
                        .into_iter()
                        .map(|r| match r {
                            Ok(true) => 1,
                            Ok(false) => 0,
                            Err(e) => e.code(),
                        }),
                ),
                None => refuse(out, Error::invalid("keys do not pair up")),
            },
        )
    }

    fn key_info(&self, keys: &[u8], key_lens: &[usize]) -> Vec<ffi::KeyInfoOut> {
        let failed = |code: i32| ffi::KeyInfoOut {
            size: 0,
            device_id: 0,
            status: code,
            services: Vec::new(),
            media: Vec::new(),
            gvas: Vec::new(),
        };
        let n = key_lens.len();
        let on_panic = (0..n).map(|_| failed(-1)).collect();
        catch_panic(on_panic, || {
            let Some(keys) = split_keys(keys, key_lens) else {
                return (0..n).map(|_| failed(-3000)).collect();
            };
            self.client()
                .batch_get_key_info(&keys)
                .into_iter()
                .map(|r| match r {
                    Ok(info) => ffi::KeyInfoOut {
                        size: info.size,
                        device_id: info.device_id,
                        status: 0,
                        services: info.locations.iter().map(|l| l.service).collect(),
                        media: info
                            .locations
                            .iter()
                            .map(|l| l.medium.media_type() as u16)
                            .collect(),
                        gvas: info.locations.iter().map(|l| l.gva).collect(),
                    },
                    Err(e) => failed(e.code()),
                })
                .collect()
        })
    }

    /// Runs `f` on keys that pair up with `n` results, else answers -3000 for all.
    fn with_keys(
        &self,
        keys: &[u8],
        key_lens: &[usize],
        n: usize,
        f: impl FnOnce(&BlockingObjectStore, Vec<&[u8]>) -> i32,
    ) -> Option<i32> {
        let keys = split_keys(keys, key_lens).filter(|k| k.len() == n)?;
        Some(f(&self.client(), keys))
    }

    #[allow(clippy::too_many_arguments)]
    fn batch_alloc(
        &self,
        keys: &[u8],
        key_lens: &[usize],
        sizes: &[u64],
        media: u16,
        lease_ttl_ms: u64,
        out: &mut [i64],
    ) -> i32 {
        let n = out.len();
        let fail = |out: &mut [i64], code: i32| {
            out.iter_mut().for_each(|o| *o = code as i64);
            code
        };
        let on_panic = -1;
        let mut codes = vec![on_panic as i64; n];
        let rc = guard(|| {
            let media = match Medium::from_media_type(media as u32) {
                Ok(m) => m,
                Err(e) => return fail(&mut codes, e.code()),
            };
            let r = self.with_keys(keys, key_lens, n, |s, keys| {
                let r = s.batch_alloc(&keys, sizes, media, lease_ttl_ms);
                for (o, r) in codes.iter_mut().zip(&r) {
                    *o = r.as_ref().map_or_else(|e| e.code() as i64, |&g| g as i64);
                }
                0
            });
            r.unwrap_or_else(|| fail(&mut codes, Error::invalid("").code()))
        });
        out.copy_from_slice(&codes);
        rc
    }

    /// # Safety
    /// Every `(bufs[i], sizes[i])` must be readable (into the pool) or writable and
    /// used by nothing else (out of it) for the call.
    unsafe fn batch_copy(&self, gvas: &[u64], bufs: &[usize], sizes: &[usize], direct: i32) -> i32 {
        guard(|| {
            // Before Init -3019, whatever the arguments (as Python answers).
            if !self.initialized.load(Ordering::SeqCst) {
                return Error::ClientNotInitialized.code();
            }
            let ptrs: Vec<*mut std::ffi::c_void> = bufs.iter().map(|&p| p as *mut _).collect();
            // SAFETY: forwarded caller promise; the raw layer checks the rest.
            code_of(&unsafe { self.client().batch_copy_ptr(gvas, &ptrs, sizes, direct) })
        })
    }

    fn batch_write_finish(
        &self,
        keys: &[u8],
        key_lens: &[usize],
        results: &[i32],
        out: &mut [i32],
    ) -> i32 {
        self.keyed_codes(keys, key_lens, out, |s, keys| {
            s.batch_write_finish(keys, results)
        })
    }

    fn batch_add_lease(
        &self,
        keys: &[u8],
        key_lens: &[usize],
        ttl_ms: u64,
        out: &mut [i32],
    ) -> i32 {
        self.keyed_codes(keys, key_lens, out, |s, keys| {
            s.batch_add_lease(keys, ttl_ms)
        })
    }

    /// A per-key call on `out.len()` keys, its codes written to `out`: 0, or -3000 in
    /// every slot when the keys do not pair up with `out`.
    fn keyed_codes(
        &self,
        keys: &[u8],
        key_lens: &[usize],
        out: &mut [i32],
        call: impl FnOnce(&BlockingObjectStore, &[&[u8]]) -> Vec<Result<(), Error>>,
    ) -> i32 {
        guard(|| {
            let n = out.len();
            match self.with_keys(keys, key_lens, n, |s, keys| {
                answer(out, call(s, &keys).iter().map(code_of))
            }) {
                Some(rc) => rc,
                None => refuse(out, Error::invalid("keys do not pair up")),
            }
        })
    }

    fn batch_remove_lease(&self, keys: &[u8], key_lens: &[usize]) -> i32 {
        guard(|| {
            let n = key_lens.len();
            self.with_keys(keys, key_lens, n, |s, keys| {
                code_of(&s.batch_remove_lease(&keys))
            })
            .unwrap_or_else(|| Error::invalid("").code())
        })
    }

    fn tier_move(&self, keys: &[u8], key_lens: &[usize], src: u8, dst: u8, prefetch: bool) -> i32 {
        guard(|| {
            let media = Medium::from_media_type(src as u32)
                .and_then(|s| Ok((s, Medium::from_media_type(dst as u32)?)));
            let (src, dst) = match media {
                Ok(m) => m,
                Err(e) => return e.code(),
            };
            let n = key_lens.len();
            self.with_keys(keys, key_lens, n, |s, keys| {
                let r = match prefetch {
                    true => s.prefetch(&keys, src, dst),
                    false => s.evict(&keys, src, dst),
                };
                r.iter().map(code_of).find(|&c| c != 0).unwrap_or(0)
            })
            .unwrap_or_else(|| Error::invalid("").code())
        })
    }

    fn remove_all(&self) -> i32 {
        guard(|| code_of(&self.client().remove_all()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        assert_eq!(
            split_keys(b"abcd", &[1, 3]),
            Some(vec![&b"a"[..], &b"bcd"[..]])
        );
        assert_eq!(split_keys(b"abcd", &[1, 2]), None);
        assert_eq!(split_keys(b"ab", &[usize::MAX, 3]), None);
        assert_eq!(
            per_key(&[1, 2, 3], &[2, 1]),
            Some(vec![&[1, 2][..], &[3][..]])
        );
        assert_eq!(per_key(&[1, 2, 3], &[2, 2]), None);
    }
}
