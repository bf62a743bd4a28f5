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
    catch_panic, code_of, BlockingObjectStore, ClientConfig, Error, ReplicateConfig,
};

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
            answer(out, r.iter().map(code_of))
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
                        media: info.locations.iter().map(|l| l.medium as u16).collect(),
                    },
                    Err(e) => failed(e.code()),
                })
                .collect()
        })
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
