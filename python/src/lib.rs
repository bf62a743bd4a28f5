//! The Python package `memcache_hybrid`: `DistributedObjectStore`, `ReplicateConfig`,
//! `KeyInfo`, `MmcCopyDirect` over the blocking Rust client. Every data-moving call
//! releases the GIL; pointer-based calls take integer addresses and go through the
//! client's `raw` layer, the one place where pointers become slices.

use std::ffi::c_void;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use memcache_client::{BlockingObjectStore, ClientConfig};
use memcache_core::{catch_panic, code_of, put_code, Error, Medium, Result};

mod config;
use config::{LocalConfig, MetaConfig};

/// Where a copy goes: host (`H`), device-local (`L`) or global pool (`G`) memory.
#[pyclass(eq, eq_int)]
#[derive(Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
enum MmcCopyDirect {
    SMEMB_COPY_L2G = 0,
    SMEMB_COPY_G2L = 1,
    SMEMB_COPY_G2H = 2,
    SMEMB_COPY_H2G = 3,
}

const G2H: i32 = MmcCopyDirect::SMEMB_COPY_G2H as i32;
const H2G: i32 = MmcCopyDirect::SMEMB_COPY_H2G as i32;
const G2L: i32 = MmcCopyDirect::SMEMB_COPY_G2L as i32;
/// 1.3.0's `direct` value that lets the pool decide the direction.
const AUTO: i32 = memcache_client::raw::AUTO;
/// 1.3.0's media numbers of DRAM and SSD (see `Medium::from_media_type`).
const DRAM: u32 = 1;
const SSD: u32 = 2;

/// A copy direction as callers give it: an `MmcCopyDirect`, or its integer value.
#[derive(Clone, Copy)]
struct Direct(i32);

impl<'py> FromPyObject<'py> for Direct {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        match ob.extract::<MmcCopyDirect>() {
            Ok(d) => Ok(Direct(d as i32)),
            Err(_) => Ok(Direct(ob.extract::<i32>()?)),
        }
    }
}

/// Configuration for replica allocation policy.
#[pyclass(get_all, set_all)]
#[derive(Clone)]
#[allow(non_snake_case)]
struct ReplicateConfig {
    /// Less than or equal to 8. Replicas per object: 1 unless set (0 reads as 1).
    replicaNum: u32,
    /// List of instance IDs for forced storage. The values in the list must be unique,
    /// and the list size must be equal to replicaNum. (Here: at most `replicaNum`; the
    /// pool places the other replicas.)
    preferredLocalServiceIDs: Vec<u32>,
}

#[pymethods]
impl ReplicateConfig {
    #[new]
    fn new() -> Self {
        ReplicateConfig::default()
    }
}

impl Default for ReplicateConfig {
    /// The spec's defaults: one replica, placed where the pool chooses.
    fn default() -> Self {
        let core = memcache_core::ReplicateConfig::default();
        ReplicateConfig {
            replicaNum: core.replica_num,
            preferredLocalServiceIDs: core.preferred_local_service_ids,
        }
    }
}

impl ReplicateConfig {
    fn to_core(&self) -> memcache_core::ReplicateConfig {
        memcache_core::ReplicateConfig {
            replica_num: self.replicaNum,
            preferred_local_service_ids: self.preferredLocalServiceIDs.clone(),
            ttl: None,
            replace: false,
            medium: None,
        }
    }
}

/// Where an object lives: its size, and one location and medium per replica.
#[pyclass]
struct KeyInfo(memcache_core::KeyInfo);

#[pymethods]
impl KeyInfo {
    /// The object's size in bytes.
    fn size(&self) -> u64 {
        self.0.size
    }

    /// The local service of each replica.
    fn loc_list(&self) -> Vec<u32> {
        self.0.locations.iter().map(|l| l.service).collect()
    }

    /// The medium of each replica, numbered as 1.3.0 numbers media: 0 HBM, 1 DRAM, 2 SSD.
    fn type_list(&self) -> Vec<u32> {
        self.0
            .locations
            .iter()
            .map(|l| l.medium.media_type())
            .collect()
    }

    /// The pool address of each replica, for `batch_copy` under a read lease
    /// (`batch_add_lease`); 0 for a replica that has none.
    fn gva_list(&self) -> Vec<u64> {
        self.0.locations.iter().map(|l| l.gva).collect()
    }

    fn __str__(&self) -> String {
        let media: Vec<&str> = self.0.locations.iter().map(|l| l.medium.name()).collect();
        format!(
            "KeyInfo(size={}, status={}, loc_list={:?}, type_list={:?})",
            self.0.size,
            self.0.status,
            self.loc_list(),
            media
        )
    }

    fn __repr__(&self) -> String {
        self.__str__()
    }
}

fn codes<T>(rs: &[Result<T>]) -> Vec<i32> {
    rs.iter().map(code_of).collect()
}

/// Per-key codes of a put, as 1.3.0 answers them (an existing key is 0).
fn put_codes(rs: &[Result<()>]) -> Vec<i32> {
    rs.iter().map(put_code).collect()
}

/// One code for a whole batch: 0, or the first key's error.
fn first_code(codes: impl IntoIterator<Item = i32>) -> i32 {
    codes.into_iter().find(|&c| c != 0).unwrap_or(0)
}

/// A `bytes` object that `get` reads the value straight into, with the GIL released:
/// one copy out of the pool, none through a Rust buffer. Until `get` returns it, nothing
/// else holds a reference to it, so writing its bytes is safe.
struct FreshBytes {
    bytes: Py<PyBytes>,
    start: *mut u8,
    len: usize,
}

impl FreshBytes {
    /// `n` zeroed bytes (the GIL is taken just for the allocation).
    fn new(n: usize) -> Result<Self> {
        Python::with_gil(|py| {
            let mut start = std::ptr::null_mut();
            let bytes = PyBytes::new_with(py, n, |b| {
                start = b.as_mut_ptr();
                Ok(())
            })
            .map_err(|e| Error::OutOfMemory(format!("a {n}-byte bytes object: {e}")))?;
            Ok(FreshBytes {
                bytes: bytes.unbind(),
                start,
                len: n,
            })
        })
    }
}

impl AsMut<[u8]> for FreshBytes {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: `start` addresses the `len` initialized bytes of `self.bytes`, which
        // lives as long as `self` and which no Python code can see yet, so this is the
        // only reference to them.
        unsafe { std::slice::from_raw_parts_mut(self.start, self.len) }
    }
}

/// A client of the pool: `init`, then the data calls, then `close`. Configured like the
/// C and C++ clients: the TOML file named by `MMC_CLIENT_CONFIG`, then `MMC_CLIENT_*`
/// variables, else the embedded default.
///
/// Every call returns 0 or a negative error code (batch calls: one per key), except
/// `get` (bytes), `is_exist` (1, 0 or a negative code) and the key-info calls. Pointer
/// arguments are integer addresses, e.g. `array.ctypes.data` or `tensor.data_ptr()`;
/// the GIL is released while bytes move. A list of addresses or sizes may also be a
/// numpy array of 64-bit integers (2-D, one row per key, for the batched layer calls),
/// which is read in one copy instead of one Python int at a time.
#[pyclass]
struct DistributedObjectStore {
    store: Option<BlockingObjectStore>,
    /// What `setup` recorded; `init` uses it instead of the environment.
    config: Option<ClientConfig>,
}

impl DistributedObjectStore {
    /// Runs `f` on the initialized store. Before `init`, the answer is `refuse(-3019)`;
    /// if `f` panics, `refuse(-1)`: no panic reaches Python.
    fn with_store<T>(
        &self,
        refuse: impl FnOnce(i32) -> T,
        f: impl FnOnce(&BlockingObjectStore) -> T,
    ) -> T {
        match &self.store {
            Some(s) => catch_panic(None, || Some(f(s))).unwrap_or_else(|| refuse(-1)),
            None => refuse(Error::ClientNotInitialized.code()),
        }
    }

    /// `evict` or `prefetch` of `keys` between 1.3.0's media numbers: 0, or the first
    /// failing key's code.
    fn tier_move(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        src: u32,
        dst: u32,
        call: fn(&BlockingObjectStore, &[String], Medium, Medium) -> Vec<Result<()>>,
    ) -> i32 {
        let media =
            Medium::from_media_type(src).and_then(|s| Ok((s, Medium::from_media_type(dst)?)));
        let (src, dst) = match media {
            Ok(m) => m,
            Err(e) => return e.code(),
        };
        self.with_store(
            |c| c,
            |s| first_code(codes(&py.allow_threads(|| call(s, &keys, src, dst)))),
        )
    }

    /// Runs `call` on the store with the GIL released, for the calls that answer one code
    /// per key: before `init` all `n` keys get -3019, after a panic -1.
    fn per_key(
        &self,
        py: Python<'_>,
        n: usize,
        call: impl FnOnce(&BlockingObjectStore) -> Vec<i32> + Send,
    ) -> Vec<i32> {
        self.with_store(|c| vec![c; n], |s| py.allow_threads(|| call(s)))
    }
}

/// Integers per key (addresses or sizes): a list of ints, as the spec gives them, or a
/// 1-D array of 64-bit integers with the buffer protocol (numpy `uint64` / `int64`, a
/// torch tensor's `.numpy()`), read in one copy rather than one Python int at a time.
struct Ints(Vec<usize>);

/// Pool addresses as `batch_copy` takes them: like [`Ints`], except that a negative
/// number (the code a failed `batch_alloc` answered, which 1.3.0 answers as 0) is no
/// address, 0, which the copy refuses with a code (-3102) instead of an `OverflowError`.
struct Gvas(Vec<u64>);

impl<'py> FromPyObject<'py> for Gvas {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(Ints(values)) = ob.extract::<Ints>() {
            return Ok(Gvas(values.into_iter().map(|v| v as u64).collect()));
        }
        let values: Vec<i64> = ob.extract()?;
        Ok(Gvas(
            values
                .into_iter()
                .map(|v| u64::try_from(v).unwrap_or(0))
                .collect(),
        ))
    }
}

/// One [`Ints`] per key: a list of them, or a 2-D array of 64-bit integers (one row per
/// key), the form addresses take when an engine computes them with numpy.
struct IntRows(Vec<Vec<usize>>);

/// The elements of `ob`, if it is an array of 64-bit integers with `ndim` dimensions, and
/// its shape; `None` if it is not such an array (a list, say).
fn int_array(ob: &Bound<'_, PyAny>, ndim: usize) -> PyResult<Option<(Vec<usize>, Vec<usize>)>> {
    if ob.downcast::<PyList>().is_ok() || ob.downcast::<PyTuple>().is_ok() {
        return Ok(None);
    }
    let py = ob.py();
    let check = |shape: &[usize]| {
        if shape.len() != ndim {
            return Err(PyValueError::new_err(format!(
                "an array of {ndim} dimension(s) expected, got {}",
                shape.len()
            )));
        }
        Ok(shape.to_vec())
    };
    if let Ok(buf) = PyBuffer::<u64>::get(ob) {
        let shape = check(buf.shape())?;
        let values = buf.to_vec(py)?.into_iter().map(|v| v as usize).collect();
        return Ok(Some((values, shape)));
    }
    if let Ok(buf) = PyBuffer::<i64>::get(ob) {
        let shape = check(buf.shape())?;
        let values = buf
            .to_vec(py)?
            .into_iter()
            .map(usize::try_from)
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| PyOverflowError::new_err("negative address or size"))?;
        return Ok(Some((values, shape)));
    }
    Ok(None)
}

impl<'py> FromPyObject<'py> for Ints {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        match int_array(ob, 1)? {
            Some((values, _)) => Ok(Ints(values)),
            None => Ok(Ints(ob.extract()?)),
        }
    }
}

impl<'py> FromPyObject<'py> for IntRows {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        match int_array(ob, 2)? {
            // `chunks(0)` would panic: rows of no columns are empty rows.
            Some((_, shape)) if shape[1] == 0 => Ok(IntRows(vec![vec![]; shape[0]])),
            Some((values, shape)) => Ok(IntRows(
                values.chunks(shape[1]).map(<[usize]>::to_vec).collect(),
            )),
            None => Ok(IntRows(
                ob.extract::<Vec<Ints>>()?
                    .into_iter()
                    .map(|r| r.0)
                    .collect(),
            )),
        }
    }
}

/// Integer addresses as pointers, made after `allow_threads` (pointers are not `Send`);
/// the `raw` layer checks them.
fn pointers<T>(addrs: &[usize], cast: fn(usize) -> T) -> Vec<T> {
    addrs.iter().map(|&a| cast(a)).collect()
}

impl IntRows {
    /// Each key's addresses as pointers, as [`pointers`] makes them.
    fn pointers<T>(&self, cast: fn(usize) -> T) -> Vec<Vec<T>> {
        self.0.iter().map(|row| pointers(row, cast)).collect()
    }
}

fn slices<T>(lists: &[Vec<T>]) -> Vec<&[T]> {
    lists.iter().map(Vec::as_slice).collect()
}

fn key_bytes(keys: &[String]) -> Vec<&[u8]> {
    keys.iter().map(|k| k.as_bytes()).collect()
}

#[pymethods]
impl DistributedObjectStore {
    #[new]
    fn new() -> Self {
        DistributedObjectStore {
            store: None,
            config: None,
        }
    }

    /// Setup local configuration
    ///
    /// The following `init` uses `config` (1.3.0's `LocalConfig`) instead of the
    /// environment. Returns 0, or -3000 for a value this pool cannot honour (a protocol
    /// other than host_shm or host_tcp, TLS without certificates, …; the reason goes to
    /// standard error). An HBM size above 0 is device memory `init` contributes; `init`
    /// answers -3000 without a device runtime or in the embedded pool.
    fn setup(&mut self, config: PyRef<'_, LocalConfig>) -> i32 {
        match config::setup_local(&config) {
            Ok(c) => {
                self.config = Some(c);
                0
            }
            Err(code) => code,
        }
    }

    /// Joins the pool and, with `init_bm`, contributes this host's DRAM to it
    /// (`local.dram_size` bytes). With `init_bm=False`, or a DRAM size of 0, it is a pure
    /// client: it adds no memory and puts and gets through the pool's.
    ///
    /// `device_id`: the accelerator whose device memory a device tier would use (a host-only
    /// pool ignores it). The pool is the one `setup` names, else the one `MMC_CLIENT_CONFIG`
    /// (or 1.3.0's `MMC_LOCAL_CONFIG_PATH`) / `MMC_CLIENT_*` name, else the embedded default
    /// in this process. Returns 0, -3005 when called twice, or another negative error code.
    #[pyo3(signature = (device_id, init_bm = true))]
    fn init(&mut self, py: Python<'_>, device_id: u32, init_bm: bool) -> i32 {
        if self.store.is_some() {
            return Error::RepeatCall(String::new()).code();
        }
        catch_panic(-1, || {
            let setup = self.config.clone();
            let made = py.allow_threads(|| {
                let config = match setup {
                    Some(c) => c,
                    None => ClientConfig::from_env()?,
                };
                let contributes = init_bm && config.local.dram_size > 0;
                let store = BlockingObjectStore::new(config)?;
                store.init(device_id, contributes)?;
                Ok::<_, Error>(store)
            });
            match made {
                Ok(s) => {
                    self.store = Some(s);
                    0
                }
                Err(e) => e.code(),
            }
        })
    }

    /// Leaves the pool and stops what `init` started; 0 or a negative error code. A
    /// client that is not initialized returns 0.
    fn close(&mut self, py: Python<'_>) -> i32 {
        match self.store.take() {
            Some(s) => catch_panic(-1, || code_of(&py.allow_threads(|| s.tear_down()))),
            None => 0,
        }
    }

    /// Get local serviceId: the id of the local service `init` started, or a negative
    /// error code (-3019 before `init`, -3018 on a pure client).
    fn get_local_service_id(&self) -> i64 {
        self.with_store(i64::from, |s| match s.get_local_service_id() {
            Ok(id) => id as i64,
            Err(e) => e.code() as i64,
        })
    }

    /// Stores `buf` under `key`: any C-contiguous object with the buffer protocol (bytes,
    /// bytearray, memoryview, numpy array), copied once into the pool.
    ///
    /// Returns 0 (also when the key exists: the first value stays, as in 1.3.0), -3000 for
    /// bad input (a key of 256 bytes or more, an empty or non-contiguous buffer), or another
    /// negative error code.
    #[pyo3(signature = (key, buf, replicateConfig = ReplicateConfig::default()))]
    #[allow(non_snake_case)]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        buf: PyBuffer<u8>,
        replicateConfig: ReplicateConfig,
    ) -> i32 {
        self.with_store(
            |c| c,
            |s| {
                if !buf.is_c_contiguous() {
                    return Error::invalid("").code();
                }
                let (addr, len) = (buf.buf_ptr() as usize, buf.len_bytes());
                let config = replicateConfig.to_core();
                // SAFETY: the exported buffer stays alive and unmoved while `buf` is held,
                // and is only read.
                put_code(&py.allow_threads(|| unsafe {
                    s.put_from_ptr(key.as_bytes(), addr as *const c_void, len, H2G, &config)
                }))
            },
        )
    }

    /// The value under the key `arg0` as bytes, or `b""` when it is missing or the call
    /// fails.
    fn get<'py>(&self, py: Python<'py>, arg0: &str) -> Bound<'py, PyBytes> {
        let got = self.with_store(
            |_| None,
            |s| {
                py.allow_threads(|| s.get_with(arg0, FreshBytes::new).map(|b| b.bytes))
                    .ok()
            },
        );
        match got {
            Some(bytes) => bytes.into_bound(py),
            None => PyBytes::new(py, b""),
        }
    }

    /// Put object data directly from a pre-allocated buffer: `size` bytes at the
    /// integer address `buffer_ptr` (`array.ctypes.data`, `tensor.data_ptr()`), copied
    /// straight into the pool.
    ///
    /// `direct`: `SMEMB_COPY_H2G` (host memory, the default), `SMEMB_COPY_L2G` (device
    /// memory, in a build with a device runtime; -3000 and the reason without one) or
    /// `AUTO` (the device runtime tells which). Returns 0 (also when the key exists: the first value
    /// stays), -3000 for a null address or size 0, or another negative error code.
    #[pyo3(
        signature = (key, buffer_ptr, size, direct = Direct(H2G), replicateConfig = ReplicateConfig::default()),
        text_signature = "($self, key, buffer_ptr, size, direct=3, replicateConfig=...)"
    )]
    #[allow(non_snake_case)]
    fn put_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: usize,
        size: usize,
        direct: Direct,
        replicateConfig: ReplicateConfig,
    ) -> i32 {
        self.put_from_layers(
            py,
            key,
            Ints(vec![buffer_ptr]),
            Ints(vec![size]),
            direct,
            replicateConfig,
        )
    }

    /// Get object data directly into a pre-allocated buffer: the object under `key`
    /// is copied straight into `size` bytes at `buffer_ptr`, which must hold all of it.
    ///
    /// `direct`: `SMEMB_COPY_G2H` (the default), `SMEMB_COPY_G2L` (device memory) or
    /// `AUTO`, as for `put_from`. Returns 0, -3007 when the key is missing,
    /// -3000 for a null address or a buffer smaller than the object, or another negative code.
    #[pyo3(
        signature = (key, buffer_ptr, size, direct = Direct(G2H)),
        text_signature = "($self, key, buffer_ptr, size, direct=2)"
    )]
    fn get_into(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: usize,
        size: usize,
        direct: Direct,
    ) -> i32 {
        self.get_into_layers(py, key, Ints(vec![buffer_ptr]), Ints(vec![size]), direct)
    }

    /// Stores one object made of layers (one KV block's per-layer buffers): the
    /// `sizes[i]` bytes at each `buffer_ptrs[i]`, in order, gathered straight into the pool.
    ///
    /// Returns 0 (also when the key exists: the first value stays), -3000 when the lists
    /// differ in length or hold a null address or size 0, or another negative error code.
    #[pyo3(
        signature = (key, buffer_ptrs, sizes, direct = Direct(H2G), replicateConfig = ReplicateConfig::default()),
        text_signature = "($self, key, buffer_ptrs, sizes, direct=3, replicateConfig=...)"
    )]
    #[allow(non_snake_case)]
    fn put_from_layers(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: Direct,
        replicateConfig: ReplicateConfig,
    ) -> i32 {
        self.batch_put_from_layers(
            py,
            vec![key.to_string()],
            IntRows(vec![buffer_ptrs.0]),
            IntRows(vec![sizes.0]),
            direct,
            replicateConfig,
        )[0]
    }

    /// Scatters the object under `key` over layers, in order: `sizes[i]` bytes at each
    /// `buffer_ptrs[i]` (normally the layout it was put with), straight from the pool.
    ///
    /// Returns 0, -3007 when the key is missing, -3000 when the lists differ in length, the
    /// layers overlap or hold less than the object, or another negative error code.
    #[pyo3(
        signature = (key, buffer_ptrs, sizes, direct = Direct(G2H)),
        text_signature = "($self, key, buffer_ptrs, sizes, direct=2)"
    )]
    fn get_into_layers(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: Direct,
    ) -> i32 {
        self.batch_get_into_layers(
            py,
            vec![key.to_string()],
            IntRows(vec![buffer_ptrs.0]),
            IntRows(vec![sizes.0]),
            direct,
        )[0]
    }

    /// Put object data directly from pre-allocated buffers for multiple keys: key `i`
    /// gets `sizes[i]` bytes at `buffer_ptrs[i]`. All copies are in flight at once.
    ///
    /// Returns one code per key as `put_from` does; lists of different lengths give -3000
    /// for every key.
    #[pyo3(
        signature = (keys, buffer_ptrs, sizes, direct = Direct(H2G), replicateConfig = ReplicateConfig::default()),
        text_signature = "($self, keys, buffer_ptrs, sizes, direct=3, replicateConfig=...)"
    )]
    #[allow(non_snake_case)]
    fn batch_put_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: Direct,
        replicateConfig: ReplicateConfig,
    ) -> Vec<i32> {
        let config = replicateConfig.to_core();
        self.per_key(py, keys.len(), |s| {
            let bufs = pointers(&buffer_ptrs.0, |a| a as *const c_void);
            // SAFETY: the caller promises each address holds its size in readable bytes for
            // the call; the raw layer checks what can be checked.
            put_codes(&unsafe {
                s.batch_put_from_ptr(&key_bytes(&keys), &bufs, &sizes.0, direct.0, &config)
            })
        })
    }

    /// Get object data directly into pre-allocated buffers for multiple keys: key `i`
    /// into `sizes[i]` bytes at `buffer_ptrs[i]`. All copies are in flight at once.
    ///
    /// Returns one code per key as `get_into` does; lists of different lengths give -3000
    /// for every key.
    #[pyo3(
        signature = (keys, buffer_ptrs, sizes, direct = Direct(G2H)),
        text_signature = "($self, keys, buffer_ptrs, sizes, direct=2)"
    )]
    fn batch_get_into(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: Direct,
    ) -> Vec<i32> {
        self.per_key(py, keys.len(), |s| {
            let bufs = pointers(&buffer_ptrs.0, |a| a as *mut c_void);
            // SAFETY: the caller promises each address holds its size in writable bytes for
            // the call; the raw layer checks what can be checked (overlaps included).
            codes(&unsafe { s.batch_get_into_ptr(&key_bytes(&keys), &bufs, &sizes.0, direct.0) })
        })
    }

    /// Stores one layered object per key: key `i` from the layers
    /// `buffer_ptrs[i][j]` / `sizes[i][j]`, as `put_from_layers` does, with every copy in
    /// flight at once.
    ///
    /// Returns one code per key: lists of different lengths give -3000 for every key; a
    /// key whose own layers are bad gets -3000 and the others go on.
    #[pyo3(
        signature = (keys, buffer_ptrs, sizes, direct = Direct(H2G), replicateConfig = ReplicateConfig::default()),
        text_signature = "($self, keys, buffer_ptrs, sizes, direct=3, replicateConfig=...)"
    )]
    #[allow(non_snake_case)]
    fn batch_put_from_layers(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: IntRows,
        sizes: IntRows,
        direct: Direct,
        replicateConfig: ReplicateConfig,
    ) -> Vec<i32> {
        let config = replicateConfig.to_core();
        self.per_key(py, keys.len(), |s| {
            let bufs = buffer_ptrs.pointers(|a| a as *const c_void);
            let (keys, bufs, sizes) = (key_bytes(&keys), slices(&bufs), slices(&sizes.0));
            // SAFETY: the caller promises each address holds its size in readable bytes for
            // the call; the raw layer checks what can be checked.
            put_codes(&unsafe {
                s.batch_put_from_layers_ptr(&keys, &bufs, &sizes, direct.0, &config)
            })
        })
    }

    /// Gets one layered object per key: key `i` scattered over the layers
    /// `buffer_ptrs[i][j]` / `sizes[i][j]`, as `get_into_layers` does, with every copy in flight
    /// at once.
    ///
    /// Returns one code per key: lists of different lengths give -3000 for every key; a
    /// key whose own layers are bad gets -3000 and the others go on.
    #[pyo3(
        signature = (keys, buffer_ptrs, sizes, direct = Direct(G2H)),
        text_signature = "($self, keys, buffer_ptrs, sizes, direct=2)"
    )]
    fn batch_get_into_layers(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: IntRows,
        sizes: IntRows,
        direct: Direct,
    ) -> Vec<i32> {
        self.per_key(py, keys.len(), |s| {
            let bufs = buffer_ptrs.pointers(|a| a as *mut c_void);
            let (keys, bufs, sizes) = (key_bytes(&keys), slices(&bufs), slices(&sizes.0));
            // SAFETY: the caller promises each address holds its size in writable bytes for
            // the call; the raw layer checks what can be checked (overlaps included).
            codes(&unsafe { s.batch_get_into_layers_ptr(&keys, &bufs, &sizes, direct.0) })
        })
    }

    /// Removes the object under the key `arg0`; 0, -3007 when it is missing, -3104 while a
    /// reader holds it, or another negative error code.
    fn remove(&self, py: Python<'_>, arg0: &str) -> i32 {
        self.with_store(|c| c, |s| code_of(&py.allow_threads(|| s.remove(arg0))))
    }

    /// Removes the objects under the keys `arg0`; one code per key, as `remove` gives.
    fn remove_batch(&self, py: Python<'_>, arg0: Vec<String>) -> Vec<i32> {
        self.per_key(py, arg0.len(), |s| codes(&s.batch_remove(&arg0)))
    }

    /// Removes every object of the pool that no reader holds and no writer is still
    /// writing; 0 or a negative error code.
    fn remove_all(&self, py: Python<'_>) -> i32 {
        self.with_store(|c| c, |s| code_of(&py.allow_threads(|| s.remove_all())))
    }

    /// 1 if the object under the key `arg0` exists, 0 if not, a negative error code on
    /// failure.
    fn is_exist(&self, py: Python<'_>, arg0: &str) -> i32 {
        self.batch_is_exist(py, vec![arg0.to_string()])[0]
    }

    /// Check if multiple objects exist. Returns list of results: 1 if exists, 0 if not
    /// exists, -1 if error (here: the error's negative code).
    fn batch_is_exist(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        self.per_key(py, keys.len(), |s| {
            s.batch_is_exist(&keys)
                .iter()
                .map(|r| r.as_ref().map_or_else(|e| e.code(), |b| *b as i32))
                .collect()
        })
    }

    /// Where the object under `key` lives: a `KeyInfo` with its size and the local
    /// service, medium and pool address of each replica (size 0 and no replicas when it
    /// is missing). `flag` is accepted for 1.3.0's callers; every value answers the same.
    #[pyo3(signature = (key, flag = 1))]
    fn get_key_info(&self, py: Python<'_>, key: &str, flag: u32) -> KeyInfo {
        self.batch_get_key_info(py, vec![key.to_string()], flag)
            .pop()
            .expect("one key, one answer")
    }

    /// One `KeyInfo` per key, as `get_key_info` gives.
    #[pyo3(signature = (keys, flag = 1))]
    fn batch_get_key_info(&self, py: Python<'_>, keys: Vec<String>, flag: u32) -> Vec<KeyInfo> {
        let _ = flag;
        let infos = self.with_store(
            |c| vec![Err(Error::from_code(c).unwrap_or(Error::Failed(String::new()))); keys.len()],
            |s| py.allow_threads(|| s.batch_get_key_info(&keys)),
        );
        infos
            .into_iter()
            .zip(&keys)
            .map(|(r, k)| {
                KeyInfo(r.unwrap_or_else(|e| memcache_core::KeyInfo::failed(k.as_bytes(), &e)))
            })
            .collect()
    }

    /// Stores each of `values` (objects with the buffer protocol) under the key of the same
    /// index, all in one batch. Returns 0 when every key is stored (a key that exists
    /// keeps its first value), else the first failing key's negative code; -3000 when the
    /// lists differ in length or a value is not a C-contiguous buffer.
    #[pyo3(
        signature = (keys, values, replicateConfig = ReplicateConfig::default()),
        text_signature = "($self, keys, values, replicateConfig=...)"
    )]
    #[allow(non_snake_case)]
    fn put_batch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        values: Vec<PyBuffer<u8>>,
        replicateConfig: ReplicateConfig,
    ) -> i32 {
        if keys.len() != values.len() || values.iter().any(|b| !b.is_c_contiguous()) {
            return Error::invalid("").code();
        }
        let addrs: Vec<usize> = values.iter().map(|b| b.buf_ptr() as usize).collect();
        let sizes: Vec<usize> = values.iter().map(|b| b.len_bytes()).collect();
        let config = replicateConfig.to_core();
        self.with_store(
            |c| c,
            |s| {
                py.allow_threads(|| {
                    let bufs = pointers(&addrs, |a| a as *const c_void);
                    // SAFETY: the exported buffers stay alive and unmoved while `values`
                    // holds them, and are only read.
                    let done = unsafe {
                        s.batch_put_from_ptr(&key_bytes(&keys), &bufs, &sizes, H2G, &config)
                    };
                    first_code(put_codes(&done))
                })
            },
        )
    }

    /// The values under the keys `arg0`, as `get` gives each (`b""` for a missing key).
    fn get_batch<'py>(&self, py: Python<'py>, arg0: Vec<String>) -> Vec<Bound<'py, PyBytes>> {
        let got: Vec<Option<Py<PyBytes>>> = self.with_store(
            |_| arg0.iter().map(|_| None).collect(),
            |s| {
                py.allow_threads(|| {
                    arg0.iter()
                        .map(|k| s.get_with(k, FreshBytes::new).map(|b| b.bytes).ok())
                        .collect()
                })
            },
        );
        got.into_iter()
            .map(|b| match b {
                Some(bytes) => bytes.into_bound(py),
                None => PyBytes::new(py, b""),
            })
            .collect()
    }

    /// Evict keys from src_media to dst_media. Only DRAM->SSD supported. Returns 0 on
    /// success.
    ///
    /// Media as 1.3.0 numbers them: 1 DRAM, 2 SSD. Each object is written to its local
    /// service's SSD tier (if it is not there yet), then its DRAM replicas are dropped;
    /// gets read it from SSD afterwards. Otherwise the first failing key's code: -3007
    /// missing, -3013 no SSD tier, -3104 held by a reader, -3000 another media pair.
    /// `flags` is accepted for 1.3.0's callers.
    #[pyo3(
        signature = (keys, src_media = DRAM, dst_media = SSD, flags = 0),
        text_signature = "($self, keys, src_media=1, dst_media=2, flags=0)"
    )]
    fn evict(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        src_media: u32,
        dst_media: u32,
        flags: u32,
    ) -> i32 {
        let _ = flags;
        self.tier_move(py, keys, src_media, dst_media, BlockingObjectStore::evict)
    }

    /// Prefetch keys from src_media to dst_media. Only SSD->DRAM supported. Returns 0 on
    /// success.
    ///
    /// Media as 1.3.0 numbers them: 2 SSD, 1 DRAM. Each object only on SSD is copied back
    /// into DRAM (colder objects make room); one already in DRAM is done. Otherwise the
    /// first failing key's code: -3007 missing, -3004 not back in time, -3000 another
    /// media pair. `flags` is accepted for 1.3.0's callers.
    #[pyo3(
        signature = (keys, src_media = SSD, dst_media = DRAM, flags = 0),
        text_signature = "($self, keys, src_media=2, dst_media=1, flags=0)"
    )]
    fn prefetch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        src_media: u32,
        dst_media: u32,
        flags: u32,
    ) -> i32 {
        let _ = flags;
        self.tier_move(
            py,
            keys,
            src_media,
            dst_media,
            BlockingObjectStore::prefetch,
        )
    }

    // ---- the in-place API ----

    /// Allocates an object of `sizes[i]` bytes under each key for writing in place and
    /// returns its pool address (a positive integer), or the key's negative error code.
    ///
    /// Fill the addresses with `batch_copy` (any number of pieces, from any thread), then
    /// end with `batch_write_finish`. `media`: 1 (DRAM; other media answer -3000).
    /// `leaseTtlMs`: how long the allocation lasts (0: the pool's put lease); after it,
    /// copies into it are refused (-3106) and it is rolled back. Asking again for a key
    /// this client is still writing returns the same address; a key that exists answers
    /// -3006.
    #[pyo3(
        signature = (keys, sizes, media = DRAM, leaseTtlMs = 0),
        text_signature = "($self, keys, sizes, media=1, leaseTtlMs=0)"
    )]
    #[allow(non_snake_case)]
    fn batch_alloc(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        sizes: Ints,
        media: u32,
        leaseTtlMs: u64,
    ) -> Vec<i64> {
        let n = keys.len();
        let media = match Medium::from_media_type(media) {
            Ok(m) => m,
            Err(e) => return vec![e.code() as i64; n],
        };
        let sizes: Vec<u64> = sizes.0.iter().map(|&s| s as u64).collect();
        self.with_store(
            |c| vec![c as i64; n],
            |s| {
                py.allow_threads(|| s.batch_alloc(&keys, &sizes, media, leaseTtlMs))
                    .iter()
                    .map(|r| r.as_ref().map_or_else(|e| e.code() as i64, |&g| g as i64))
                    .collect()
            },
        )
    }

    /// Copies `sizes[i]` bytes between the buffer at `buffer_ptrs[i]` and the pool address
    /// `gva_ptrs[i]`: into the pool with `direct` 3 (H2G), out of it with 2 (G2H), either
    /// with 9 (AUTO: as the address's grant says). Returns 0 or a negative error code.
    ///
    /// An address must lie, with its size, inside an allocation of this client
    /// (`batch_alloc`, until `batch_write_finish`) for writing, or inside a replica this
    /// client holds a read lease on (`batch_add_lease`, addresses from `gva_list()`) for
    /// reading. Every copy is checked before any byte moves: -3102 outside them, -3101 the
    /// wrong way, -3106 after the allocation or lease ended, -3000 for bad buffers or
    /// lists of different lengths. Device directions (0 L2G, 1 G2L, the default) answer
    /// -3000: this build has no device runtime. `flag` is accepted for 1.3.0's callers.
    #[pyo3(
        signature = (gva_ptrs, buffer_ptrs, sizes, direct = G2L, flag = 0),
        text_signature = "($self, gva_ptrs, buffer_ptrs, sizes, direct=1, flag=0)"
    )]
    fn batch_copy(
        &self,
        py: Python<'_>,
        gva_ptrs: Gvas,
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: i32,
        flag: u32,
    ) -> i32 {
        // One layer per piece; a length mismatch stays one for the raw layer to refuse.
        let rows = |v: Ints| IntRows(v.0.into_iter().map(|x| vec![x]).collect());
        let (bufs, sizes) = (rows(buffer_ptrs), rows(sizes));
        self.batch_copy_layers(py, gva_ptrs, bufs, sizes, direct, flag)
    }

    /// `batch_copy` of layers: piece `i` is the layers `buffer_ptrs[i][j]` /
    /// `sizes[i][j]`, gathered into the pool from the address `gva_ptrs[i]` on, or
    /// scattered out of it. Returns 0 or a negative error code, as `batch_copy`.
    #[pyo3(
        signature = (gva_ptrs, buffer_ptrs, sizes, direct = G2L, flag = 0),
        text_signature = "($self, gva_ptrs, buffer_ptrs, sizes, direct=1, flag=0)"
    )]
    fn batch_copy_layers(
        &self,
        py: Python<'_>,
        gva_ptrs: Gvas,
        buffer_ptrs: IntRows,
        sizes: IntRows,
        direct: i32,
        flag: u32,
    ) -> i32 {
        let _ = flag;
        let gvas = gva_ptrs.0;
        self.with_store(
            |c| c,
            |s| {
                py.allow_threads(|| {
                    let bufs = buffer_ptrs.pointers(|a| a as *mut c_void);
                    let (bufs, sizes) = (slices(&bufs), slices(&sizes.0));
                    // SAFETY: as in `batch_copy`, for every layer.
                    code_of(&unsafe { s.batch_copy_layers_ptr(&gvas, &bufs, &sizes, direct) })
                })
            },
        )
    }

    /// Notify meta service that the writes for the given keys are finished. res is per-key
    /// write result (0=OK, non-zero=FAIL). Returns per-key meta service update result.
    ///
    /// A key whose result is 0 becomes visible to every reader; any other is rolled back
    /// (answer 0 once done). A result of 0 for a key this client is not writing answers 0
    /// when the key is stored (finished already, e.g. by a second writer of the same
    /// allocation, or stored by a put: its value stays, as in 1.3.0), else -3000 (also for
    /// every key when the lists differ in length); -3106, and a rollback, for an
    /// allocation whose lease has ended.
    fn batch_write_finish(&self, py: Python<'_>, keys: Vec<String>, res: Vec<i32>) -> Vec<i32> {
        self.per_key(py, keys.len(), |s| {
            codes(&s.batch_write_finish(&keys, &res))
        })
    }

    /// Leases each object for reading in place: until `batch_remove_lease` or the end of
    /// the lease (`leaseTtlMs`, 0: the pool's read lease), it cannot be removed or
    /// evicted, and the addresses of its `get_key_info(key).gva_list()` can be read with
    /// `batch_copy`. One code per key: 0, -3007 when missing.
    #[pyo3(signature = (keys, leaseTtlMs = 0))]
    #[allow(non_snake_case)]
    fn batch_add_lease(&self, py: Python<'_>, keys: Vec<String>, leaseTtlMs: u64) -> Vec<i32> {
        self.per_key(py, keys.len(), |s| {
            codes(&s.batch_add_lease(&keys, leaseTtlMs))
        })
    }

    /// Ends one read lease this client holds on each key (`batch_add_lease` twice, release
    /// twice); with a key's last lease, its addresses read nothing any more. 0, or -3000
    /// (and nothing released) when a key holds no lease here.
    fn batch_remove_lease(&self, py: Python<'_>, keys: Vec<String>) -> i32 {
        self.with_store(
            |c| c,
            |s| code_of(&py.allow_threads(|| s.batch_remove_lease(&keys))),
        )
    }

    /// Register a memory buffer for direct access operations: `size` bytes at
    /// `buffer_ptr` that later pointer calls will use. Optional on host memory (every call
    /// works without it). Returns 0, -3005 when the region is registered already, or
    /// -3000 for a null address, size 0, or an overlap with another registered region.
    fn register_buffer(&self, buffer_ptr: usize, size: usize) -> i32 {
        self.with_store(
            |c| c,
            |s| code_of(&s.register_buffer_ptr(buffer_ptr as *const c_void, size)),
        )
    }

    /// UnRegister a memory buffer for direct access operations: forgets a buffer
    /// `register_buffer` registered; 0, or -3000 when no region of that address and size is
    /// registered.
    fn unregister_buffer(&self, buffer_ptr: usize, size: usize) -> i32 {
        self.with_store(
            |c| c,
            |s| code_of(&s.unregister_buffer_ptr(buffer_ptr as *const c_void, size)),
        )
    }
}

/// Class for memcache meta service process. (Here: the meta service runs in this process.)
#[pyclass]
struct MetaService;

#[pymethods]
impl MetaService {
    /// Start the meta service process directly. This is a blocking call. It serves until
    /// SIGINT or SIGTERM, then returns 0 (or an error code if it could not start).
    /// Configured by `setup`, else like `mmc meta`: the TOML file named by
    /// `MMC_META_CONFIG`, else 1.3.0's file named by `MMC_META_CONFIG_PATH`, then
    /// `MMC_META_*` variables (`MMC_META_DISCOVERY_URL=tcp://127.0.0.1:5000`).
    #[staticmethod]
    fn main(py: Python<'_>) -> i32 {
        catch_panic(-1, || code_of(&py.allow_threads(serve_meta)))
    }

    /// Set meta service startup config.
    ///
    /// The following `main()` serves with `config` (1.3.0's `MetaConfig`) instead of the
    /// environment. Returns 0, or -3000 for a value this service cannot honour (`ha_enable`,
    /// TLS, KV events, …; the reason goes to standard error).
    #[staticmethod]
    fn setup(config: PyRef<'_, MetaConfig>) -> i32 {
        catch_panic(-1, || config::setup_meta(&config))
    }
}

fn serve_meta() -> Result<()> {
    let config = config::meta_service_config()?;
    let rt = memcache_meta_service::runtime(memcache_meta_service::default_threads())
        .map_err(|e| Error::Failed(format!("starting a runtime: {e}")))?;
    rt.block_on(async move {
        let service = memcache_meta_service::MetaService::start(config).await?;
        println!("meta service listening on tcp://{}", service.local_addr());
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| Error::Failed(format!("waiting for SIGTERM: {e}")))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        service.stop().await;
        Ok(())
    })
}

#[pymodule]
fn _pymmc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DistributedObjectStore>()?;
    m.add_class::<MetaService>()?;
    m.add_class::<ReplicateConfig>()?;
    m.add_class::<KeyInfo>()?;
    m.add_class::<MmcCopyDirect>()?;
    m.add("L2G", MmcCopyDirect::SMEMB_COPY_L2G as i32)?;
    m.add("G2L", G2L)?;
    m.add("G2H", G2H)?;
    m.add("H2G", H2G)?;
    m.add("AUTO", AUTO)?;
    m.add_class::<LocalConfig>()?;
    m.add_class::<MetaConfig>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
