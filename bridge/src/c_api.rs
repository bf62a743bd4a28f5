//! The C API of `cpp/include/memcache/mmc.h`: services, the process's client, data
//! calls (synchronous or in the background with `mmcc_wait`), and logging. Structs are
//! laid out as the header declares them; every entry catches panics.

#![allow(non_camel_case_types)] // the C names, so the two sides read alike

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use memcache_client::{
    catch_panic, code_of, BlockingObjectStore, ClientConfig, Error, KeyInfo, Medium,
    ReplicateConfig, TransportKind, MAX_REPLICAS,
};
use memcache_core::put_code;
use memcache_local::{LocalServiceConfig, RunningLocalService};
use memcache_meta_service::{MetaService, MetaServiceConfig};

use crate::logging;
use crate::setup::{self, mmc_local_config_t};

/// The most keys or items one C call takes. The client splits batches above the wire
/// limit (`MAX_BATCH_OP_COUNT`) itself; a count above this one is taken for garbage.
const MAX_C_BATCH: usize = 1 << 24;

const URL: usize = 1024;
const PATH: usize = 1024;
const TLS_PATH: usize = 256;
const PROTOCOL: usize = 64;
const POOL_MODE: usize = 64;

pub type LogFunc = Option<unsafe extern "C" fn(c_int, *const c_char)>;

#[repr(C)]
pub struct mmc_tls_config {
    pub tls_enable: bool,
    /// `caPath`, `crlPath`, `certPath`, `keyPath`, `keyPassPath`, `packagePath`,
    /// `decrypterLibPath`.
    pub paths: [[c_char; TLS_PATH]; 7],
}

impl mmc_tls_config {
    /// The TLS settings, if enabled.
    pub(crate) fn config(&self) -> Option<memcache_tls::TlsConfig> {
        if !self.tls_enable {
            return None;
        }
        let p = |i: usize| std::path::PathBuf::from(fixed(&self.paths[i]));
        Some(memcache_tls::TlsConfig {
            enable: true,
            ca_path: p(0),
            crl_path: p(1),
            cert_path: p(2),
            key_path: p(3),
            key_pass_path: p(4),
            package_path: p(5),
            decrypter_lib_path: p(6),
        })
    }
}

/// The first enabled of `groups`: a process has one TLS identity.
pub(crate) fn first_tls(groups: &[&mmc_tls_config]) -> Option<memcache_tls::TlsConfig> {
    groups.iter().find_map(|g| g.config())
}

#[repr(C)]
pub struct mmc_meta_service_config_t {
    pub discovery_url: [c_char; URL],
    pub config_store_url: [c_char; URL],
    pub http_url: [c_char; URL],
    pub ha_enable: bool,
    pub log_level: i32,
    pub log_path: [c_char; PATH],
    pub log_rotation_file_size: i32,
    pub log_rotation_file_count: i32,
    pub evict_threshold_high: u16,
    pub evict_threshold_low: u16,
    pub acc_tls_config: mmc_tls_config,
    pub config_store_tls_config: mmc_tls_config,
    pub ubs_io_enable: bool,
}

#[repr(C)]
pub struct mmc_local_service_config_t {
    pub discovery_url: [c_char; URL],
    pub device_id: u32,
    pub rank_id: u32,
    pub world_size: u32,
    pub bm_ip_port: [c_char; URL],
    pub bm_hcom_url: [c_char; URL],
    pub create_id: u32,
    pub data_op_type: [c_char; PROTOCOL],
    pub local_dram_size: u64,
    pub local_max_dram_size: u64,
    pub local_hbm_size: u64,
    pub local_max_hbm_size: u64,
    pub memory_pool_mode: [c_char; POOL_MODE],
    pub flags: u32,
    pub acc_tls_config: mmc_tls_config,
    pub log_level: i32,
    pub log_func: LogFunc,
    pub hcom_tls_config: mmc_tls_config,
    pub config_store_tls_config: mmc_tls_config,
    pub ubs_io_enable: bool,
}

#[repr(C)]
pub struct mmc_client_config_t {
    pub discovery_url: [c_char; URL],
    pub rank_id: u32,
    pub rpc_retry_time_out: u32,
    pub time_out: u32,
    pub read_thread_pool_num: u32,
    pub write_thread_pool_num: u32,
    pub aggregate_io: bool,
    pub aggregate_num: i32,
    pub log_level: i32,
    pub log_func: LogFunc,
    pub tls_config: mmc_tls_config,
    pub ubs_io_enable: bool,
    pub data_op_type: [c_char; PROTOCOL],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mmc_buffer {
    pub addr: u64,
    pub r#type: u32,
    pub offset: u64,
    pub len: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mmc_put_options {
    pub media_type: u16,
    pub policy: c_int,
    pub replica_num: u16,
    pub preferred_local_service_ids: [i32; MAX_REPLICAS],
}

#[repr(C)]
pub struct mmc_data_info {
    pub size: u64,
    pub prot: u16,
    pub num_blobs: u8,
    pub valid: bool,
    pub ranks: [u32; MAX_REPLICAS],
    pub types: [u16; MAX_REPLICAS],
    pub gvas: [u64; MAX_REPLICAS],
}

#[repr(C)]
pub struct mmc_location_t {
    pub status: i32,
    pub rank: u32,
    pub r#type: u16,
    pub size: u64,
}

/// A NUL-terminated string inside a fixed array, never read past the array.
pub(crate) fn fixed(s: &[c_char]) -> String {
    let bytes: Vec<u8> = s
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The key a C caller passed.
///
/// # Safety
/// `key` is null or a NUL-terminated string.
unsafe fn key<'a>(key: *const c_char) -> Result<&'a [u8], Error> {
    if key.is_null() {
        return Err(Error::invalid("null key"));
    }
    // SAFETY: non-null and NUL-terminated (the caller's promise).
    Ok(unsafe { CStr::from_ptr(key) }.to_bytes())
}

/// The `n` items a C caller passed at `p`: empty for `n == 0` whatever `p` is (a slice
/// is never made from a null pointer, not even an empty one), -3000 for a null `p`
/// with `n > 0` or for `n` above [`MAX_C_BATCH`]. Every C array of this file is read
/// through here or [`c_slice_mut`].
///
/// # Safety
/// `p` is null or points to `n` readable items that nothing writes for `'a`.
unsafe fn c_slice<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], Error> {
    check_c_array(p.is_null(), n, what)?;
    if n == 0 {
        return Ok(&[]);
    }
    // SAFETY: non-null, `n` items of `T` (the caller's promise); `n` is at most
    // MAX_C_BATCH, so the slice spans far less than isize::MAX bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// As [`c_slice`], for `n` items the call writes.
///
/// # Safety
/// `p` is null or points to `n` writable items that nothing else uses for `'a`.
unsafe fn c_slice_mut<'a, T>(p: *mut T, n: usize, what: &str) -> Result<&'a mut [T], Error> {
    check_c_array(p.is_null(), n, what)?;
    if n == 0 {
        return Ok(&mut []);
    }
    // SAFETY: as in `c_slice`, and the items are the caller's to give us.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

fn check_c_array(null: bool, n: usize, what: &str) -> Result<(), Error> {
    if n > MAX_C_BATCH {
        return Err(Error::invalid(format!(
            "{n} {what} items is above the limit of {MAX_C_BATCH}"
        )));
    }
    if null && n > 0 {
        return Err(Error::invalid(format!("null {what} array")));
    }
    Ok(())
}

/// # Safety
/// `keys` is null or holds `n` key pointers as in [`key`].
unsafe fn keys<'a>(keys: *const *const c_char, n: usize) -> Result<Vec<&'a [u8]>, Error> {
    // SAFETY: the caller's promise.
    let ptrs = unsafe { c_slice(keys, n, "key") }?;
    // SAFETY: each is a key pointer (the caller's promise).
    ptrs.iter().map(|&k| unsafe { key(k) }).collect()
}

fn replicate(o: &mmc_put_options) -> ReplicateConfig {
    let n = (o.replica_num as usize).clamp(1, MAX_REPLICAS);
    ReplicateConfig {
        replica_num: o.replica_num as u32,
        preferred_local_service_ids: o.preferred_local_service_ids[..n]
            .iter()
            .filter(|&&p| p >= 0)
            .map(|&p| p as u32)
            .collect(),
        ttl: None,
        replace: false,
        medium: None,
    }
}

/// A buffer's bytes: address, length, and whether they are device memory (`type` 1,
/// moved with L2G / G2L; 0 is host memory); refused before anything is read otherwise.
#[derive(Clone, Copy)]
struct Region {
    addr: usize,
    len: usize,
    device: bool,
}

impl Region {
    /// The `direct` of a put (`put`) or a get of this region.
    fn direct(&self, put: bool) -> i32 {
        direct_of(self.device, put)
    }
}

/// L2G 0 / G2L 1 for device memory, H2G 3 / G2H 2 for host memory.
fn direct_of(device: bool, put: bool) -> i32 {
    match (device, put) {
        (true, true) => 0,
        (true, false) => 1,
        (false, true) => 3,
        (false, false) => 2,
    }
}

fn region(b: &mmc_buffer) -> Result<Region, Error> {
    if b.r#type > 1 {
        return Err(Error::invalid(format!(
            "buffer type {}: 0 (host) or 1 (device)",
            b.r#type
        )));
    }
    let addr = b
        .addr
        .checked_add(b.offset)
        .ok_or_else(|| Error::invalid("address overflow"))?;
    Ok(Region {
        addr: addr as usize,
        len: b.len as usize,
        device: b.r#type == 1,
    })
}

/// The `direct` of a batch of regions, which must all be host or all device memory.
fn batch_direct(regions: &[Region], put: bool) -> Result<i32, Error> {
    let device = regions.first().is_some_and(|r| r.device);
    if regions.iter().any(|r| r.device != device) {
        return Err(Error::invalid("a batch mixes host and device buffers"));
    }
    Ok(direct_of(device, put))
}

/// The key and the region of a single-object call, checked in that order.
///
/// # Safety
/// As [`key`] for `key_ptr`; `buf` is null or points to a readable `mmc_buffer`.
unsafe fn key_and_region(
    key_ptr: *const c_char,
    buf: *const mmc_buffer,
) -> Result<(Vec<u8>, Region), Error> {
    // SAFETY: the caller's promise.
    let k = unsafe { key(key_ptr) }?.to_vec();
    // SAFETY: the caller's promise.
    let b = unsafe { buf.as_ref() }.ok_or_else(|| Error::invalid("null buffer"))?;
    Ok((k, region(b)?))
}

// ---- services ----

struct MetaHandle {
    runtime: tokio::runtime::Runtime,
    service: Option<MetaService>,
}

/// # Safety
/// `config` is null or points to a valid `mmc_meta_service_config_t`.
#[no_mangle]
pub unsafe extern "C" fn mmcs_meta_service_start(
    config: *mut mmc_meta_service_config_t,
) -> *mut c_void {
    catch_panic(std::ptr::null_mut(), || {
        // SAFETY: the caller's promise.
        let Some(c) = (unsafe { config.as_ref() }) else {
            return std::ptr::null_mut();
        };
        logging::init(c.log_level, None);
        let mut cfg = MetaServiceConfig {
            discovery_url: fixed(&c.discovery_url),
            tls: first_tls(&[&c.acc_tls_config, &c.config_store_tls_config]),
            ..Default::default()
        };
        if c.evict_threshold_high != 0 {
            cfg.meta.evict_threshold_high = c.evict_threshold_high;
            cfg.meta.evict_threshold_low = c.evict_threshold_low;
        }
        let Ok(runtime) = tokio::runtime::Runtime::new() else {
            return std::ptr::null_mut();
        };
        match runtime.block_on(MetaService::start(cfg)) {
            Ok(service) => Box::into_raw(Box::new(MetaHandle {
                runtime,
                service: Some(service),
            }))
            .cast(),
            Err(e) => {
                tracing::error!(error = %e, "mmcs_meta_service_start");
                std::ptr::null_mut()
            }
        }
    })
}

/// # Safety
/// `handle` is null or came from `mmcs_meta_service_start` and was not stopped yet.
#[no_mangle]
pub unsafe extern "C" fn mmcs_meta_service_stop(handle: *mut c_void) {
    catch_panic((), || {
        if handle.is_null() {
            return;
        }
        // SAFETY: the caller's promise: a live handle of ours, given back once.
        let mut h = unsafe { Box::from_raw(handle.cast::<MetaHandle>()) };
        if let Some(s) = h.service.take() {
            h.runtime.block_on(s.stop());
        }
    })
}

enum LocalHandle {
    /// Joined to a remote meta service.
    Remote(tokio::runtime::Runtime, RunningLocalService),
    /// Contributing to this process's embedded pool.
    Embedded(BlockingObjectStore),
}

/// # Safety
/// `config` is null or points to a valid `mmc_local_service_config_t`.
#[no_mangle]
pub unsafe extern "C" fn mmcs_local_service_start(
    config: *mut mmc_local_service_config_t,
) -> *mut c_void {
    catch_panic(std::ptr::null_mut(), || {
        // SAFETY: the caller's promise.
        let Some(c) = (unsafe { config.as_ref() }) else {
            return std::ptr::null_mut();
        };
        logging::init(c.log_level, c.log_func);
        let local = LocalServiceConfig {
            dram_size: c.local_dram_size,
            device_id: c.device_id,
            service_id: Some(c.rank_id),
            data_addr: fixed(&c.bm_ip_port).parse().ok(),
            tls: first_tls(&[
                &c.acc_tls_config,
                &c.hcom_tls_config,
                &c.config_store_tls_config,
            ]),
            ..Default::default()
        };
        let url = fixed(&c.discovery_url);
        let started = if url.is_empty() {
            let config = ClientConfig {
                local,
                ..Default::default()
            };
            BlockingObjectStore::new(config).and_then(|s| {
                s.init(c.device_id, true)?;
                Ok(LocalHandle::Embedded(s))
            })
        } else {
            start_remote_local(&url, local)
        };
        match started {
            Ok(h) => Box::into_raw(Box::new(h)).cast(),
            Err(e) => {
                tracing::error!(error = %e, "mmcs_local_service_start");
                std::ptr::null_mut()
            }
        }
    })
}

fn start_remote_local(url: &str, local: LocalServiceConfig) -> Result<LocalHandle, Error> {
    let addrs = memcache_proto::parse_discovery(url)?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| Error::Failed(format!("runtime: {e}")))?;
    let socket = std::env::temp_dir().join(format!(
        "mmc-local-{}-{}.sock",
        std::process::id(),
        local.service_id.unwrap_or_default()
    ));
    let timeout = Duration::from_secs(5);
    let service = runtime.block_on(RunningLocalService::start(&local, &addrs, timeout, socket))?;
    Ok(LocalHandle::Remote(runtime, service))
}

/// # Safety
/// `handle` is null or came from `mmcs_local_service_start` and was not stopped yet.
#[no_mangle]
pub unsafe extern "C" fn mmcs_local_service_stop(handle: *mut c_void) {
    catch_panic((), || {
        if handle.is_null() {
            return;
        }
        // SAFETY: the caller's promise: a live handle of ours, given back once.
        let h = unsafe { Box::from_raw(handle.cast::<LocalHandle>()) };
        match *h {
            LocalHandle::Remote(runtime, service) => {
                let _ = runtime.block_on(service.stop());
                drop(service);
            }
            LocalHandle::Embedded(store) => {
                let _ = store.tear_down();
            }
        }
    })
}

// ---- the client ----

static CLIENT: Mutex<Option<Arc<BlockingObjectStore>>> = Mutex::new(None);

fn client() -> Result<Arc<BlockingObjectStore>, Error> {
    CLIENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or(Error::ClientNotInitialized)
}

/// # Safety
/// `config` is null or points to a valid `mmc_client_config_t`.
#[no_mangle]
pub unsafe extern "C" fn mmcc_init(config: *mut mmc_client_config_t) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        let Some(c) = (unsafe { config.as_ref() }) else {
            return Error::invalid("null config").code();
        };
        logging::init(c.log_level, c.log_func);
        let mut slot = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Error::RepeatCall(String::new()).code();
        }
        let url = fixed(&c.discovery_url);
        let mut cfg = ClientConfig::default();
        if !url.is_empty() {
            cfg.discovery_url = Some(url);
        }
        cfg.local.tls = c.tls_config.config();
        if c.time_out > 0 {
            cfg.timeout_ms = c.time_out as u64 * 1000;
        }
        cfg.set_thread_pools(c.read_thread_pool_num, c.write_thread_pool_num);
        cfg.transport = match fixed(&c.data_op_type).to_ascii_lowercase().as_str() {
            "tcp" => Some(TransportKind::Tcp),
            "shm" => Some(TransportKind::Shm),
            _ => None,
        };
        let store = match BlockingObjectStore::new(cfg) {
            Ok(s) => s,
            Err(e) => return e.code(),
        };
        if let Err(e) = store.init(c.rank_id, false) {
            return e.code();
        }
        *slot = Some(Arc::new(store));
        0
    })
}

#[no_mangle]
pub extern "C" fn mmcc_uninit() {
    catch_panic((), || {
        let store = CLIENT.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(s) = store {
            let _ = s.tear_down();
        }
        forget_calls();
    })
}

// ---- 1.3.0's process-level set-up: mmc_setup, mmc_init, mmc_uninit ----

/// What `mmc_setup` recorded for the next `mmc_init`.
static SETUP: Mutex<Option<ClientConfig>> = Mutex::new(None);

/// Laid out as `mmc_init_config_t` in `mmc.h`.
#[repr(C)]
pub struct mmc_init_config_t {
    pub device_id: u32,
    pub init_bm: bool,
}

/// Records the configuration `mmc_init` starts the process's client with: `config`
/// over `MMC_CLIENT_CONFIG` / `MMC_CLIENT_*` (empty fields keep those). A second call
/// replaces the first; while the client runs it answers -3005 and changes nothing.
///
/// # Safety
/// `config` is null or points to a valid `mmc_local_config_t`.
#[no_mangle]
pub unsafe extern "C" fn mmc_setup(config: *const mmc_local_config_t) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        let Some(c) = (unsafe { config.as_ref() }) else {
            return Error::invalid("null config").code();
        };
        let client = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
        if client.is_some() {
            return Error::RepeatCall("the client runs; mmc_uninit first".into()).code();
        }
        let cfg = ClientConfig::from_env().and_then(|base| setup::apply(base, c));
        match cfg {
            Ok(cfg) => {
                *SETUP.lock().unwrap_or_else(|e| e.into_inner()) = Some(cfg);
                0
            }
            Err(e) => e.code(),
        }
    })
}

/// Starts the process's client (the one `mmcc_*` calls use) with what `mmc_setup`
/// recorded, else with `MMC_CLIENT_CONFIG` / `MMC_CLIENT_*`. With `initBm` it also
/// contributes memory from a local service in this process; without, it is a pure
/// client. -3005 when a client already runs (from `mmc_init` or `mmcc_init`).
///
/// # Safety
/// `config` is null or points to a valid `mmc_init_config_t`.
#[no_mangle]
pub unsafe extern "C" fn mmc_init(config: *const mmc_init_config_t) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        let Some(c) = (unsafe { config.as_ref() }) else {
            return Error::invalid("null config").code();
        };
        let mut slot = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Error::RepeatCall("the client already runs".into()).code();
        }
        let recorded = SETUP.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let started = recorded
            .map_or_else(ClientConfig::from_env, Ok)
            .and_then(BlockingObjectStore::new)
            .and_then(|s| s.init(c.device_id, c.init_bm).map(|()| s));
        match started {
            Ok(store) => {
                *slot = Some(Arc::new(store));
                0
            }
            Err(e) => e.code(),
        }
    })
}

/// Stops the process's client, as `mmcc_uninit`; what `mmc_setup` recorded stays for
/// the next `mmc_init`.
#[no_mangle]
pub extern "C" fn mmc_uninit() {
    mmcc_uninit()
}

/// Records a region of the caller's memory for transfers with the process's client.
#[no_mangle]
pub extern "C" fn mmcc_register_buffer(addr: u64, size: u64) -> i32 {
    catch_panic(-1, || {
        let r = client()
            .and_then(|s| s.register_buffer_ptr(addr as usize as *const c_void, size as usize));
        code_of(&r)
    })
}

#[no_mangle]
pub extern "C" fn mmcc_unregister_buffer(addr: u64, size: u64) -> i32 {
    catch_panic(-1, || {
        let r = client()
            .and_then(|s| s.unregister_buffer_ptr(addr as usize as *const c_void, size as usize));
        code_of(&r)
    })
}

/// The id of the local service the process's client started (`mmc_init` with
/// `initBm`); -3018 for a pure client.
///
/// # Safety
/// `local_service_id` is null or points to a writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn mmcc_local_service_id(local_service_id: *mut u32) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        let Some(out) = (unsafe { local_service_id.as_mut() }) else {
            return Error::invalid("null localServiceId").code();
        };
        match client().and_then(|s| s.get_local_service_id()) {
            Ok(id) => {
                *out = id;
                0
            }
            Err(e) => e.code(),
        }
    })
}

/// Runs `op` now, or with `MMC_FLAG_ASYNC` on a background thread whose result
/// `mmcc_wait` collects; returns the code, or the positive handle.
fn run(flags: u32, op: impl FnOnce(&BlockingObjectStore) -> i32 + Send + 'static) -> i32 {
    let store = match client() {
        Ok(s) => s,
        Err(e) => return e.code(),
    };
    if flags & MMC_FLAG_ASYNC == 0 {
        return op(&store);
    }
    start_call(move || op(&store))
}

// ---- calls in the background (MMC_FLAG_ASYNC) and mmcc_wait ----

/// The flag of the data calls that runs them in the background.
const MMC_FLAG_ASYNC: u32 = 1;

/// What `mmcc_wait` answers for a call still running (`MMC_WAIT_TIMEOUT` in mmc.h).
const WAIT_TIMEOUT: i32 = 1;
/// What it answers for a call that failed with -1, the code without a number of its
/// own (`MMC_WAIT_FAILED`): negated, it would read as a timeout.
const WAIT_FAILED: i32 = 2;

/// One call in the background: its code once it ended.
#[derive(Default)]
struct Call {
    code: Mutex<Option<i32>>,
    ended: Condvar,
}

/// The calls `mmcc_wait` may still collect, by handle. A call leaves when its result
/// is collected, or with every other at `mmcc_uninit`: a result nobody waits for
/// lives no longer than the client that made it.
struct Calls {
    next: i32,
    by_handle: BTreeMap<i32, Arc<Call>>,
}

static CALLS: Mutex<Calls> = Mutex::new(Calls {
    next: 1,
    by_handle: BTreeMap::new(),
});

fn calls() -> MutexGuard<'static, Calls> {
    CALLS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts `op` on a thread of its own; the handle (> 0) to wait for, or the code of
/// a thread that could not start.
fn start_call(op: impl FnOnce() -> i32 + Send + 'static) -> i32 {
    let call = Arc::<Call>::default();
    let handle = {
        let mut calls = calls();
        // Positive and not in use: after i32::MAX handles, numbering starts over.
        let handle = loop {
            let h = calls.next;
            calls.next = h.checked_add(1).unwrap_or(1);
            if !calls.by_handle.contains_key(&h) {
                break h;
            }
        };
        calls.by_handle.insert(handle, call.clone());
        handle
    };
    let started = std::thread::Builder::new()
        .name("mmcc-async".into())
        .spawn(move || {
            let code = catch_panic(-1, op);
            *call.code.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
            call.ended.notify_all();
        });
    match started {
        Ok(_) => handle,
        Err(e) => {
            calls().by_handle.remove(&handle);
            Error::Failed(format!("starting a background call: {e}")).code()
        }
    }
}

/// What `mmcc_wait` answers for an ended call's code: 0, or a positive value other
/// than [`WAIT_TIMEOUT`]: the spec's code negated (3000 and above), or [`WAIT_FAILED`]
/// for -1 (and any code outside the spec's table).
fn wait_answer(code: i32) -> i32 {
    match code {
        0 => 0,
        c if c <= -3000 => c.saturating_neg(),
        _ => WAIT_FAILED,
    }
}

/// Forgets every call's result (`mmcc_uninit`). Calls still running finish on their
/// own and their results are dropped.
fn forget_calls() {
    calls().by_handle.clear();
}

/// Waits up to `timeout_sec` seconds (0 or less: only looks) for the call behind
/// `wait_handle`: 0 it succeeded, [`WAIT_TIMEOUT`] it still runs (the handle stays),
/// else as [`wait_answer`] and the handle is done with; -3015 for a handle that is not
/// (or no longer) known.
#[no_mangle]
pub extern "C" fn mmcc_wait(wait_handle: i32, timeout_sec: i32) -> i32 {
    catch_panic(-1, || {
        let Some(call) = calls().by_handle.get(&wait_handle).cloned() else {
            return Error::NetReqHandleNotFound.code();
        };
        let timeout = Duration::from_secs(timeout_sec.max(0) as u64);
        let code = call.code.lock().unwrap_or_else(|e| e.into_inner());
        let (code, _) = call
            .ended
            .wait_timeout_while(code, timeout, |c| c.is_none())
            .unwrap_or_else(|e| e.into_inner());
        let Some(code) = *code else {
            return WAIT_TIMEOUT;
        };
        let mut calls = calls();
        if calls
            .by_handle
            .get(&wait_handle)
            .is_some_and(|c| Arc::ptr_eq(c, &call))
        {
            calls.by_handle.remove(&wait_handle);
        }
        wait_answer(code)
    })
}

/// # Safety
/// `key` is a NUL-terminated string; `buf` points to an `mmc_buffer` whose bytes are
/// readable until the call (or its `mmcc_wait`) completes.
#[no_mangle]
pub unsafe extern "C" fn mmcc_put(
    key_ptr: *const c_char,
    buf: *mut mmc_buffer,
    options: mmc_put_options,
    flags: u32,
) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        let (k, r) = match unsafe { key_and_region(key_ptr, buf) } {
            Ok(r) => r,
            Err(e) => return e.code(),
        };
        let cfg = replicate(&options);
        run(flags, move |s| {
            let (addr, direct) = (r.addr as *const c_void, r.direct(true));
            // SAFETY: the caller's promise on the buffer.
            put_code(&unsafe { s.put_from_ptr(&k, addr, r.len, direct, &cfg) })
        })
    })
}

/// # Safety
/// `key` is a NUL-terminated string; `buf` points to an `mmc_buffer` whose bytes are
/// writable and otherwise unused until the call (or its `mmcc_wait`) completes.
#[no_mangle]
pub unsafe extern "C" fn mmcc_get(key_ptr: *const c_char, buf: *mut mmc_buffer, flags: u32) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        let (k, r) = match unsafe { key_and_region(key_ptr, buf) } {
            Ok(r) => r,
            Err(e) => return e.code(),
        };
        run(flags, move |s| {
            let (addr, direct) = (r.addr as *mut c_void, r.direct(false));
            // SAFETY: the caller's promise on the buffer.
            code_of(&unsafe { s.get_into_ptr(&k, addr, r.len, direct) })
        })
    })
}

fn fill_info(info: &mut mmc_data_info, r: &Result<KeyInfo, Error>) -> i32 {
    *info = mmc_data_info {
        size: 0,
        prot: 0,
        num_blobs: 0,
        valid: false,
        ranks: [0; MAX_REPLICAS],
        types: [0; MAX_REPLICAS],
        gvas: [0; MAX_REPLICAS],
    };
    match r {
        Ok(k) => {
            info.size = k.size;
            info.valid = true;
            info.num_blobs = k.locations.len().min(MAX_REPLICAS) as u8;
            for (i, l) in k.locations.iter().take(MAX_REPLICAS).enumerate() {
                info.ranks[i] = l.service;
                info.types[i] = l.medium.media_type() as u16;
                info.gvas[i] = l.gva;
            }
            0
        }
        Err(e) => e.code(),
    }
}

/// # Safety
/// `key` is a NUL-terminated string; `info` points to writable `mmc_data_info`.
#[no_mangle]
pub unsafe extern "C" fn mmcc_query(
    key_ptr: *const c_char,
    info: *mut mmc_data_info,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        let (k, info) = match (unsafe { key(key_ptr) }, unsafe { info.as_mut() }) {
            (Ok(k), Some(i)) => (k, i),
            (Err(e), _) => return e.code(),
            (_, None) => return Error::invalid("null info").code(),
        };
        let r = client().and_then(|s| s.get_key_info(k));
        fill_info(info, &r)
    })
}

/// # Safety
/// `key` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mmcc_remove(key_ptr: *const c_char, flags: u32) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        match unsafe { key(key_ptr) } {
            Ok(k) => {
                let k = k.to_vec();
                run(flags, move |s| code_of(&s.remove(&k)))
            }
            Err(e) => e.code(),
        }
    })
}

fn exist_code(r: Result<bool, Error>) -> i32 {
    match r {
        Ok(true) => 0,
        Ok(false) => Error::ObjectNotFound.code(),
        Err(e) => e.code(),
    }
}

/// # Safety
/// `key` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mmcc_exist(key_ptr: *const c_char, _flags: u32) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        match unsafe { key(key_ptr) } {
            Ok(k) => exist_code(client().and_then(|s| s.is_exist(k))),
            Err(e) => e.code(),
        }
    })
}

/// # Safety
/// `key` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mmcc_get_location(key_ptr: *const c_char, _flags: u32) -> mmc_location_t {
    let failed = |code: i32| mmc_location_t {
        status: code,
        rank: 0,
        r#type: 0,
        size: 0,
    };
    catch_panic(failed(-1), || {
        // SAFETY: the caller's promise.
        let r = unsafe { key(key_ptr) }.and_then(|k| client()?.get_key_info(k));
        match r {
            Ok(info) => match info.locations.first() {
                Some(l) => mmc_location_t {
                    status: 0,
                    rank: l.service,
                    r#type: l.medium.media_type() as u16,
                    size: info.size,
                },
                None => failed(Error::ObjectNotFound.code()),
            },
            Err(e) => failed(e.code()),
        }
    })
}

/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings; `info` has room for as many.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_query(
    keys_ptr: *const *const c_char,
    keys_count: usize,
    info: *mut mmc_data_info,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        let ks = match unsafe { keys(keys_ptr, keys_count) } {
            Ok(k) => k,
            Err(e) => return e.code(),
        };
        // SAFETY: room for `keys_count` entries (the caller's promise).
        let out = match unsafe { c_slice_mut(info, keys_count, "info") } {
            Ok(o) => o,
            Err(e) => return e.code(),
        };
        let store = match client() {
            Ok(s) => s,
            Err(e) => return e.code(),
        };
        let results = store.batch_get_key_info(&ks);
        let mut first = 0;
        for (o, r) in out.iter_mut().zip(&results) {
            let code = fill_info(o, r);
            if first == 0 {
                first = code;
            }
        }
        first
    })
}

/// Writes per-key codes and answers how many failed.
fn write_results(out: &mut [i32], codes: &[i32]) -> i32 {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = c;
    }
    codes.iter().filter(|&&c| c != 0).count() as i32
}

/// The shared half of the batch calls that answer one code per key: checks the keys
/// and the result array, runs `codes` on the client and writes what it returns.
/// Answers how many keys got a non-zero code, or the call's own error code.
///
/// # Safety
/// `keys_ptr` holds `keys_count` NUL-terminated strings; `out` has room for as many
/// codes.
unsafe fn per_key_codes(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    out: *mut i32,
    codes: impl FnOnce(&BlockingObjectStore, &[&[u8]]) -> Vec<i32>,
) -> i32 {
    // SAFETY: the caller's promise.
    let ks = match unsafe { keys(keys_ptr, keys_count as usize) } {
        Ok(k) => k,
        Err(e) => return e.code(),
    };
    // SAFETY: room for `keys_count` codes (the caller's promise).
    let out = match unsafe { c_slice_mut(out, keys_count as usize, "result") } {
        Ok(o) => o,
        Err(e) => return e.code(),
    };
    match client() {
        Ok(s) => write_results(out, &codes(&s, &ks)),
        Err(e) => e.code(),
    }
}

/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings; `remove_results` has room for as
/// many codes.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_remove(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    remove_results: *mut i32,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        // SAFETY: forwarded caller promise.
        unsafe {
            per_key_codes(keys_ptr, keys_count, remove_results, |s, ks| {
                s.batch_remove(ks).iter().map(code_of).collect()
            })
        }
    })
}

/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings; `exist_results` has room for as
/// many codes.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_exist(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    exist_results: *mut i32,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        // SAFETY: forwarded caller promise.
        let r = unsafe {
            per_key_codes(keys_ptr, keys_count, exist_results, |s, ks| {
                s.batch_is_exist(ks).into_iter().map(exist_code).collect()
            })
        };
        // A missing key is an answer here, not a failure: only call errors count.
        r.min(0)
    })
}

/// The buffers of a batch as regions; an error names the first bad one.
///
/// # Safety
/// `bufs` holds `n` buffers.
unsafe fn regions(bufs: *const mmc_buffer, n: usize) -> Result<Vec<Region>, Error> {
    // SAFETY: the caller's promise.
    unsafe { c_slice(bufs, n, "buffer") }?
        .iter()
        .map(region)
        .collect()
}

fn first_failure(codes: impl IntoIterator<Item = i32>) -> i32 {
    codes.into_iter().find(|&c| c != 0).unwrap_or(0)
}

/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings and `bufs` as many buffers whose
/// bytes are readable until the call (or its `mmcc_wait`) completes.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_put(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    bufs: *const mmc_buffer,
    options: *const mmc_put_options,
    flags: u32,
) -> i32 {
    catch_panic(-1, || {
        let n = keys_count as usize;
        // SAFETY: the caller's promise.
        let (ks, rs) = match (unsafe { keys(keys_ptr, n) }, unsafe { regions(bufs, n) }) {
            (Ok(k), Ok(r)) => (k.iter().map(|k| k.to_vec()).collect::<Vec<_>>(), r),
            (Err(e), _) | (_, Err(e)) => return e.code(),
        };
        // SAFETY: the caller's promise (a reference in C++, a pointer in C).
        let Some(options) = (unsafe { options.as_ref() }) else {
            return Error::invalid("null options").code();
        };
        let cfg = replicate(options);
        let direct = match batch_direct(&rs, true) {
            Ok(d) => d,
            Err(e) => return e.code(),
        };
        run(flags, move |s| {
            let ptrs: Vec<*const c_void> = rs.iter().map(|r| r.addr as *const c_void).collect();
            let sizes: Vec<usize> = rs.iter().map(|r| r.len).collect();
            let keys: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
            // SAFETY: the caller's promise on the buffers.
            let r = unsafe { s.batch_put_from_ptr(&keys, &ptrs, &sizes, direct, &cfg) };
            first_failure(r.iter().map(put_code))
        })
    })
}

/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings and `bufs` as many buffers whose
/// bytes are writable and otherwise unused until the call (or its `mmcc_wait`) completes.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_get(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    bufs: *mut mmc_buffer,
    flags: u32,
) -> i32 {
    catch_panic(-1, || {
        let n = keys_count as usize;
        // SAFETY: the caller's promise.
        let (ks, rs) = match (unsafe { keys(keys_ptr, n) }, unsafe { regions(bufs, n) }) {
            (Ok(k), Ok(r)) => (k.iter().map(|k| k.to_vec()).collect::<Vec<_>>(), r),
            (Err(e), _) | (_, Err(e)) => return e.code(),
        };
        let direct = match batch_direct(&rs, false) {
            Ok(d) => d,
            Err(e) => return e.code(),
        };
        run(flags, move |s| {
            let ptrs: Vec<*mut c_void> = rs.iter().map(|r| r.addr as *mut c_void).collect();
            let sizes: Vec<usize> = rs.iter().map(|r| r.len).collect();
            let keys: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
            // SAFETY: the caller's promise on the buffers.
            let r = unsafe { s.batch_get_into_ptr(&keys, &ptrs, &sizes, direct) };
            first_failure(r.iter().map(code_of))
        })
    })
}

// ---- 1.3.0's in-place calls and media moves ----

/// Allocates `sizes[i]` bytes under each key for an in-place write (media in 1.3.0's
/// numbers: 1 DRAM only). `gvas[i]`: the pool address, 0 on failure; `results[i]`: 0
/// or the key's code. Answers how many keys failed, or the call's own code.
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings; `sizes`, `gvas` and `results`
/// hold `keys_count` items each.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn mmcc_batch_malloc(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    sizes: *const u64,
    media: u16,
    lease_ttl_ms: u64,
    gvas: *mut u64,
    results: *mut i32,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        let n = keys_count as usize;
        // SAFETY: the caller's promise.
        let sizes = match unsafe { c_slice(sizes, n, "size") } {
            Ok(s) => s,
            Err(e) => return e.code(),
        };
        // SAFETY: room for `n` addresses (the caller's promise).
        let gvas = match unsafe { c_slice_mut(gvas, n, "gva") } {
            Ok(g) => g,
            Err(e) => return e.code(),
        };
        let media = match Medium::from_media_type(media as u32) {
            Ok(m) => m,
            Err(e) => return e.code(),
        };
        let mut addrs = vec![0u64; n];
        // SAFETY: forwarded caller promise.
        let failed = unsafe {
            per_key_codes(keys_ptr, keys_count, results, |s, ks| {
                let r = s.batch_alloc(ks, sizes, media, lease_ttl_ms);
                for (a, r) in addrs.iter_mut().zip(&r) {
                    *a = *r.as_ref().unwrap_or(&0);
                }
                r.iter().map(code_of).collect()
            })
        };
        if failed >= 0 {
            gvas.copy_from_slice(&addrs);
        }
        failed
    })
}

/// Copies `sizes[i]` bytes between `bufs[i]` and the pool address `gvas[i]`:
/// `direct` 3 (H2G) into an allocation of this client, 2 (G2H) out of a leased replica,
/// 9 (AUTO) as each address's grant says. 0 or the first refusal (nothing copied then).
///
/// # Safety
/// `gvas`, `bufs` and `sizes` hold `count` items; each buffer is readable (into the
/// pool) or writable and used by nothing else (out of it) for the call.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_copy(
    gvas: *const u64,
    bufs: *const *mut c_void,
    sizes: *const u64,
    count: u32,
    direct: i32,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        let n = count as usize;
        // SAFETY: the caller's promise.
        let arrays = unsafe {
            (
                c_slice(gvas, n, "gva"),
                c_slice(bufs, n, "buffer"),
                c_slice(sizes, n, "size"),
            )
        };
        let (gvas, bufs, sizes) = match arrays {
            (Ok(g), Ok(b), Ok(s)) => (g, b, s),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e.code(),
        };
        let store = match client() {
            Ok(s) => s,
            Err(e) => return e.code(),
        };
        let sizes: Vec<usize> = sizes.iter().map(|&s| s as usize).collect();
        // SAFETY: forwarded caller promise; the raw layer checks the rest.
        code_of(&unsafe { store.batch_copy_ptr(gvas, bufs, &sizes, direct) })
    })
}

/// Ends in-place writes: `write_results[i]` 0 commits key i, any other value rolls it
/// back. `finish_results[i]`: 0, -3000 not being written here, -3106 the allocation
/// ended (rolled back). Answers how many keys failed, or the call's own code.
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings; `write_results` and
/// `finish_results` hold `keys_count` items.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_write_finish(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    write_results: *const i32,
    finish_results: *mut i32,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        let res = match unsafe { c_slice(write_results, keys_count as usize, "result") } {
            Ok(r) => r,
            Err(e) => return e.code(),
        };
        // SAFETY: forwarded caller promise.
        unsafe {
            per_key_codes(keys_ptr, keys_count, finish_results, |s, ks| {
                s.batch_write_finish(ks, res).iter().map(code_of).collect()
            })
        }
    })
}

/// Read leases for `lease_ttl_ms` (0: the pool's read lease); `mmcc_query`'s
/// `gvas` can then be read with `mmcc_batch_copy`. `lease_results[i]`: 0, -3007
/// missing. Answers how many keys failed, or the call's own code.
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings; `lease_results` as many codes.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_add_lease(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    lease_ttl_ms: u64,
    lease_results: *mut i32,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        // SAFETY: forwarded caller promise.
        unsafe {
            per_key_codes(keys_ptr, keys_count, lease_results, |s, ks| {
                s.batch_add_lease(ks, lease_ttl_ms)
                    .iter()
                    .map(code_of)
                    .collect()
            })
        }
    })
}

/// Releases this client's read leases on the keys: 0, or -3000 (nothing released) when
/// a key holds none here.
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn mmcc_batch_remove_lease(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        // SAFETY: the caller's promise.
        let ks = match unsafe { keys(keys_ptr, keys_count as usize) } {
            Ok(k) => k,
            Err(e) => return e.code(),
        };
        code_of(&client().and_then(|s| s.batch_remove_lease(&ks)))
    })
}

/// `BlockingObjectStore::evict` or `prefetch`.
type TierMove = fn(&BlockingObjectStore, &[&[u8]], Medium, Medium) -> Vec<Result<(), Error>>;

/// `evict` / `prefetch` of the keys between 1.3.0's media numbers: 0, or the first
/// failing key's code.
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings.
unsafe fn tier_move(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    src: u16,
    dst: u16,
    call: TierMove,
) -> i32 {
    // SAFETY: the caller's promise.
    let ks = match unsafe { keys(keys_ptr, keys_count as usize) } {
        Ok(k) => k,
        Err(e) => return e.code(),
    };
    let media = Medium::from_media_type(src as u32)
        .and_then(|s| Ok((s, Medium::from_media_type(dst as u32)?)));
    let (src, dst) = match media {
        Ok(m) => m,
        Err(e) => return e.code(),
    };
    match client() {
        Ok(s) => first_failure(call(&s, &ks, src, dst).iter().map(code_of)),
        Err(e) => e.code(),
    }
}

/// Moves the objects from DRAM (1) to SSD (2), the only pair: 0, or the first failing
/// key's code (-3007 missing, -3013 no SSD tier, -3104 held by a reader, -3000 another
/// pair).
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn mmcc_evict_keys(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    src_media: u16,
    dst_media: u16,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        // SAFETY: forwarded caller promise.
        unsafe {
            tier_move(keys_ptr, keys_count, src_media, dst_media, |s, k, a, b| {
                s.evict(k, a, b)
            })
        }
    })
}

/// Copies the objects from SSD (2) back into DRAM (1), the only pair: 0, or the first
/// failing key's code (-3007 missing, -3004 not back in time, -3000 another pair).
///
/// # Safety
/// `keys` holds `keys_count` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn mmcc_prefetch_keys(
    keys_ptr: *const *const c_char,
    keys_count: u32,
    src_media: u16,
    dst_media: u16,
    _flags: u32,
) -> i32 {
    catch_panic(-1, || {
        // SAFETY: forwarded caller promise.
        unsafe {
            tier_move(keys_ptr, keys_count, src_media, dst_media, |s, k, a, b| {
                s.prefetch(k, a, b)
            })
        }
    })
}

/// # Safety
/// `func` is null or a function safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn mmc_set_extern_logger(func: LogFunc) -> i32 {
    catch_panic(-1, || {
        logging::set_logger(func);
        0
    })
}

#[no_mangle]
pub extern "C" fn mmc_set_log_level(level: c_int) -> i32 {
    catch_panic(-1, || match logging::set_level(level) {
        Ok(()) => 0,
        Err(e) => e.code(),
    })
}

#[cfg(test)]
mod tests {
    use std::ptr::{null, null_mut};
    use std::sync::mpsc;

    use super::*;

    /// The tests that use the process's client or its background calls, one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn c_keys(keys: &[&std::ffi::CStr]) -> Vec<*const c_char> {
        keys.iter().map(|k| k.as_ptr()).collect()
    }

    #[test]
    fn c_arrays_are_empty_for_count_0_and_refused_when_null() {
        // SAFETY: null pointers, and a live array of 3 items.
        unsafe {
            assert_eq!(c_slice::<u64>(null(), 0, "t").unwrap(), &[] as &[u64]);
            assert!(c_slice_mut::<i32>(null_mut(), 0, "t").unwrap().is_empty());
            assert_eq!(c_slice::<u64>(null(), 1, "t").unwrap_err().code(), -3000);
            assert_eq!(
                c_slice_mut::<i32>(null_mut(), 2, "t").unwrap_err().code(),
                -3000
            );
            let three = [1u64, 2, 3];
            assert_eq!(c_slice(three.as_ptr(), 3, "t").unwrap(), &three);
            // A count past any batch is refused before the pointer is read.
            let over = MAX_C_BATCH + 1;
            assert_eq!(
                c_slice(three.as_ptr(), over, "t").unwrap_err().code(),
                -3000
            );
            assert_eq!(keys(null(), 0).unwrap().len(), 0);
            assert_eq!(keys(null(), 1).unwrap_err().code(), -3000);
        }
    }

    #[test]
    fn a_call_that_failed_is_never_reported_as_a_timeout() {
        let _serial = serial();
        assert_eq!(mmcc_wait(start_call(|| 0), 10), 0);
        // -1 negated is 1, the timeout: it has a value of its own.
        assert_eq!(mmcc_wait(start_call(|| -1), 10), WAIT_FAILED);
        assert_eq!(
            mmcc_wait(start_call(|| panic!("in the background")), 10),
            WAIT_FAILED
        );
        assert_eq!(mmcc_wait(start_call(|| -3007), 10), 3007);
        assert_eq!(mmcc_wait(start_call(|| -3106), 10), 3106);
        // A result is answered once.
        let once = start_call(|| -3000);
        assert_eq!(mmcc_wait(once, 10), 3000);
        assert_eq!(mmcc_wait(once, 0), -3015);
        assert_eq!(mmcc_wait(0, 0), -3015);
        assert_eq!(mmcc_wait(-5, 0), -3015);

        // Still running: a timeout, and the handle stays for the next wait.
        let (go, gate) = mpsc::channel::<()>();
        let slow = start_call(move || {
            let _ = gate.recv();
            -1
        });
        assert_eq!(mmcc_wait(slow, 0), WAIT_TIMEOUT);
        assert_eq!(mmcc_wait(slow, -3), WAIT_TIMEOUT);
        go.send(()).unwrap();
        assert_eq!(mmcc_wait(slow, 10), WAIT_FAILED);
    }

    #[test]
    fn results_nobody_waits_for_are_freed_by_uninit() {
        let _serial = serial();
        let before = calls().by_handle.len();
        let (go, gate) = mpsc::channel::<()>();
        let running = start_call(move || {
            let _ = gate.recv();
            0
        });
        let ended: Vec<i32> = (0..100).map(|_| start_call(|| -3007)).collect();
        assert_eq!(calls().by_handle.len(), before + 101);
        mmcc_uninit();
        assert!(calls().by_handle.is_empty());
        assert_eq!(mmcc_wait(running, 0), -3015);
        assert!(ended.iter().all(|&h| mmcc_wait(h, 0) == -3015));
        // The call still running ends on its own, its result dropped.
        go.send(()).unwrap();
        // Handles are not given twice while in use, even when numbering wraps.
        calls().next = i32::MAX;
        let (a, b) = (start_call(|| 0), start_call(|| 0));
        assert_eq!((a, b), (i32::MAX, 1));
        let c = start_call(|| 0);
        assert!(c > 1);
        for h in [a, b, c] {
            assert_eq!(mmcc_wait(h, 10), 0);
        }
    }

    #[test]
    fn batch_calls_take_null_arrays_of_count_0() {
        let _serial = serial();
        // SAFETY: all-zero is a valid value of these C structs (None for the logger).
        let (mut lc, mut cc): (mmc_local_service_config_t, mmc_client_config_t) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        lc.local_dram_size = 16 << 20;
        // SAFETY: valid configurations; every pointer below is null or live.
        unsafe {
            let local = mmcs_local_service_start(&mut lc);
            assert!(!local.is_null());
            assert_eq!(mmcc_init(&mut cc), 0);
            let options = mmc_put_options {
                media_type: 0,
                policy: 0,
                replica_num: 1,
                preferred_local_service_ids: [-1; MAX_REPLICAS],
            };
            let none = null::<*const c_char>();
            assert_eq!(mmcc_batch_query(none, 0, null_mut(), 0), 0);
            assert_eq!(mmcc_batch_remove(none, 0, null_mut(), 0), 0);
            assert_eq!(mmcc_batch_exist(none, 0, null_mut(), 0), 0);
            assert_eq!(mmcc_batch_put(none, 0, null(), &options, 0), 0);
            assert_eq!(mmcc_batch_get(none, 0, null_mut(), 0), 0);
            assert_eq!(
                mmcc_batch_malloc(none, 0, null(), 1, 0, null_mut(), null_mut(), 0),
                0
            );
            assert_eq!(mmcc_batch_copy(null(), null(), null(), 0, 3, 0), 0);
            assert_eq!(mmcc_batch_write_finish(none, 0, null(), null_mut(), 0), 0);
            assert_eq!(mmcc_batch_add_lease(none, 0, 0, null_mut(), 0), 0);
            assert_eq!(mmcc_batch_remove_lease(none, 0, 0), 0);
            assert_eq!(mmcc_evict_keys(none, 0, 1, 2, 0), 0);
            assert_eq!(mmcc_prefetch_keys(none, 0, 2, 1, 0), 0);
            let handle = mmcc_batch_put(none, 0, null(), &options, MMC_FLAG_ASYNC);
            assert!(handle > 0);
            assert_eq!(mmcc_wait(handle, 10), 0);

            // A null array of a non-empty batch is refused.
            let ks = c_keys(&[c"n/1"]);
            assert_eq!(mmcc_batch_query(ks.as_ptr(), 1, null_mut(), 0), -3000);
            assert_eq!(mmcc_batch_exist(ks.as_ptr(), 1, null_mut(), 0), -3000);
            assert_eq!(mmcc_batch_get(ks.as_ptr(), 1, null_mut(), 0), -3000);
            let mut gva = 0u64;
            assert_eq!(
                mmcc_batch_malloc(ks.as_ptr(), 1, &8, 1, 0, &mut gva, null_mut(), 0),
                -3000
            );

            // A background call that fails is a failure, not a timeout.
            let mut bytes = [0u8; 8];
            let mut buf = mmc_buffer {
                addr: bytes.as_mut_ptr() as u64,
                r#type: 0,
                offset: 0,
                len: 8,
            };
            let missing = mmcc_get(c"n/missing".as_ptr(), &mut buf, MMC_FLAG_ASYNC);
            assert!(missing > 0);
            assert_eq!(mmcc_wait(missing, 10), 3007);
            let missing = mmcc_batch_get(ks.as_ptr(), 1, &mut buf, MMC_FLAG_ASYNC);
            assert_eq!(mmcc_wait(missing, 10), 3007);

            // One never waited for goes with the client.
            let forgotten = mmcc_remove(c"n/missing".as_ptr(), MMC_FLAG_ASYNC);
            assert!(forgotten > 0);
            mmcc_uninit();
            assert_eq!(mmcc_wait(forgotten, 10), -3015);
            mmcs_local_service_stop(local);
        }
    }
}
