//! Huawei Ascend through ACL, `libascendcl.so` loaded at run time (`MMC_ASCEND_LIB`
//! names another path; else the loader's search path, then the CANN toolkit's default).
//! Copies go through `aclrtMemcpyAsync` on a few streams per device. Pinning
//! (`aclrtHostRegister`), pointer queries (`aclrtPointerGetAttributes`) and IPC
//! (`aclrtIpcMemGetExportKey` / `aclrtIpcMemImportByKey`) are used where the installed
//! ACL has them, and answer a clear error where it does not.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Mutex;

use libloading::{Library, Symbol};
use memcache_core::{Error, Result};

use crate::{stream_of_each, CopyKind, DeviceCopy, DeviceRuntime, PtrKind, STREAMS};

type AclError = c_int;
type Stream = *mut c_void;

// ACL's aclrtMemcpyKind.
const ACL_MEMCPY_HOST_TO_DEVICE: c_int = 1;
const ACL_MEMCPY_DEVICE_TO_HOST: c_int = 2;
const ACL_MEMCPY_DEVICE_TO_DEVICE: c_int = 3;
// aclrtMemMallocPolicy: huge pages first, normal pages when none are left.
const ACL_MEM_MALLOC_HUGE_FIRST: c_int = 0;

const DEFAULT_PATHS: [&str; 2] = [
    "libascendcl.so",
    "/usr/local/Ascend/ascend-toolkit/latest/lib64/libascendcl.so",
];

pub struct Ascend {
    lib: Library,
    /// Streams of each device, made on first use.
    streams: Mutex<HashMap<i32, Vec<usize>>>,
    imports: crate::OpenImports,
}

// SAFETY: ACL's runtime calls are thread-safe; the library handle is only read, and
// the stream handles are opaque values guarded by the mutex.
unsafe impl Send for Ascend {}
// SAFETY: as above.
unsafe impl Sync for Ascend {}

fn check(what: &str, rc: AclError) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Failed(format!("{what}: ACL error {rc}")))
    }
}

impl Ascend {
    pub fn load() -> Result<Ascend> {
        let paths: Vec<String> = match std::env::var("MMC_ASCEND_LIB") {
            Ok(p) => vec![p],
            Err(_) => DEFAULT_PATHS.iter().map(|s| s.to_string()).collect(),
        };
        Self::load_from(&paths)
    }

    /// The first of `paths` that loads and answers.
    fn load_from(paths: &[String]) -> Result<Ascend> {
        let mut last = String::new();
        for path in paths {
            // SAFETY: loading ACL runs its initialisers, which only set up its own state.
            match unsafe { Library::new(path) } {
                Ok(lib) => {
                    let a = Ascend {
                        lib,
                        streams: Mutex::new(HashMap::new()),
                        imports: Default::default(),
                    };
                    // A library that cannot even report the current device is not one.
                    a.current()?;
                    return Ok(a);
                }
                Err(e) => last = format!("{path}: {e}"),
            }
        }
        Err(Error::invalid(format!(
            "libascendcl.so not loaded ({last})"
        )))
    }

    /// The symbol `name` of ACL, or why not.
    fn sym<T>(&self, name: &str) -> Result<Symbol<'_, T>> {
        // SAFETY: each caller names the symbol with its C signature from ACL's headers.
        unsafe { self.lib.get(name.as_bytes()) }
            .map_err(|e| Error::invalid(format!("this ACL has no {name} ({e})")))
    }

    fn current(&self) -> Result<i32> {
        let f = self.sym::<unsafe extern "C" fn(*mut i32) -> AclError>("aclrtGetDevice")?;
        let mut d = 0i32;
        // SAFETY: ACL writes one int32.
        check("aclrtGetDevice", unsafe { f(&mut d) })?;
        Ok(d)
    }

    /// The streams of the current device.
    fn device_streams(&self) -> Result<Vec<usize>> {
        let device = self.current()?;
        let mut all = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.get(&device) {
            return Ok(s.clone());
        }
        let create =
            self.sym::<unsafe extern "C" fn(*mut Stream) -> AclError>("aclrtCreateStream")?;
        let mut made = Vec::with_capacity(STREAMS);
        for _ in 0..STREAMS {
            let mut s: Stream = std::ptr::null_mut();
            // SAFETY: ACL writes one stream handle.
            check("aclrtCreateStream", unsafe { create(&mut s) })?;
            made.push(s as usize);
        }
        all.insert(device, made.clone());
        Ok(made)
    }
}

impl DeviceRuntime for Ascend {
    fn name(&self) -> &'static str {
        "ascend"
    }

    fn device_count(&self) -> Result<u32> {
        let f = self.sym::<unsafe extern "C" fn(*mut u32) -> AclError>("aclrtGetDeviceCount")?;
        let mut n = 0u32;
        // SAFETY: ACL writes one uint32.
        check("aclrtGetDeviceCount", unsafe { f(&mut n) })?;
        Ok(n)
    }

    fn set_device(&self, device: u32) -> Result<()> {
        let id = i32::try_from(device).map_err(|_| Error::invalid("device id"))?;
        let f = self.sym::<unsafe extern "C" fn(i32) -> AclError>("aclrtSetDevice")?;
        // SAFETY: a plain value argument.
        check("aclrtSetDevice", unsafe { f(id) })
    }

    fn alloc(&self, len: usize) -> Result<u64> {
        let f = self.sym::<unsafe extern "C" fn(*mut *mut c_void, usize, c_int) -> AclError>(
            "aclrtMalloc",
        )?;
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: ACL writes one pointer.
        check("aclrtMalloc", unsafe {
            f(&mut p, len, ACL_MEM_MALLOC_HUGE_FIRST)
        })?;
        Ok(p as u64)
    }

    unsafe fn free(&self, ptr: u64) -> Result<()> {
        let f = self.sym::<unsafe extern "C" fn(*mut c_void) -> AclError>("aclrtFree")?;
        // SAFETY: the caller's promise: `ptr` came from aclrtMalloc.
        check("aclrtFree", unsafe { f(ptr as *mut c_void) })
    }

    unsafe fn copy_batch(&self, copies: &[DeviceCopy]) -> Result<()> {
        if copies.is_empty() {
            return Ok(());
        }
        type MemcpyAsync = unsafe extern "C" fn(
            *mut c_void,
            usize,
            *const c_void,
            usize,
            c_int,
            Stream,
        ) -> AclError;
        let memcpy = self.sym::<MemcpyAsync>("aclrtMemcpyAsync")?;
        let sync =
            self.sym::<unsafe extern "C" fn(Stream) -> AclError>("aclrtSynchronizeStream")?;
        let streams = self.device_streams()?;
        let of = stream_of_each(copies);
        let mut issued = Ok(());
        for (c, s) in copies.iter().zip(of) {
            let kind = match c.kind {
                CopyKind::HostToDevice => ACL_MEMCPY_HOST_TO_DEVICE,
                CopyKind::DeviceToHost => ACL_MEMCPY_DEVICE_TO_HOST,
                CopyKind::DeviceToDevice => ACL_MEMCPY_DEVICE_TO_DEVICE,
            };
            // SAFETY: the caller's promise on every range; the stream is ours.
            let rc = unsafe {
                memcpy(
                    c.dst as *mut c_void,
                    c.len,
                    c.src as *const c_void,
                    c.len,
                    kind,
                    streams[s] as Stream,
                )
            };
            issued = check("aclrtMemcpyAsync", rc);
            if issued.is_err() {
                break;
            }
        }
        // Every stream is waited for, even after a failure: nothing may still be
        // writing the caller's memory when this returns.
        let mut waited = Ok(());
        for s in &streams {
            // SAFETY: our stream.
            let r = check("aclrtSynchronizeStream", unsafe { sync(*s as Stream) });
            waited = waited.and(r);
        }
        issued.and(waited)
    }

    fn pointer_kind(&self, ptr: u64) -> Result<PtrKind> {
        // aclrtPtrAttributes: { aclrtMemLocation { uint32 id; uint32 type }, uint64 pageSize }
        // with location type 0 = host, 1 = device.
        #[repr(C)]
        #[derive(Default)]
        struct Attributes {
            id: u32,
            kind: u32,
            page_size: u64,
        }
        let f = self.sym::<unsafe extern "C" fn(*const c_void, *mut Attributes) -> AclError>(
            "aclrtPointerGetAttributes",
        )?;
        let mut a = Attributes::default();
        // SAFETY: ACL fills the struct.
        check("aclrtPointerGetAttributes", unsafe {
            f(ptr as *const c_void, &mut a)
        })?;
        Ok(if a.kind == 1 {
            PtrKind::Device(a.id)
        } else {
            PtrKind::Host
        })
    }

    unsafe fn pin(&self, ptr: u64, len: usize) -> Result<()> {
        type Register = unsafe extern "C" fn(*mut c_void, u64, c_int, *mut *mut c_void) -> AclError;
        let f = self.sym::<Register>("aclrtHostRegister")?;
        let mut mapped: *mut c_void = std::ptr::null_mut();
        // SAFETY: the caller's promise on the range; ACL writes one pointer.
        check("aclrtHostRegister", unsafe {
            f(ptr as *mut c_void, len as u64, 0, &mut mapped)
        })
    }

    unsafe fn unpin(&self, ptr: u64) -> Result<()> {
        let f = self.sym::<unsafe extern "C" fn(*mut c_void) -> AclError>("aclrtHostUnregister")?;
        // SAFETY: the caller's promise.
        check("aclrtHostUnregister", unsafe { f(ptr as *mut c_void) })
    }

    fn export(&self, ptr: u64, len: usize) -> Result<Vec<u8>> {
        type Export = unsafe extern "C" fn(*mut c_void, usize, *mut c_char, usize, u64) -> AclError;
        let f = self.sym::<Export>("aclrtIpcMemGetExportKey")?;
        let mut key = [0 as c_char; IPC_KEY_LEN + 1];
        // SAFETY: ACL writes a NUL-terminated key of at most IPC_KEY_LEN bytes into the
        // zeroed buffer, one byte longer than it is told.
        check("aclrtIpcMemGetExportKey", unsafe {
            f(
                ptr as *mut c_void,
                len,
                key.as_mut_ptr(),
                IPC_KEY_LEN,
                IPC_EXPORT_NO_PID_CHECK,
            )
        })?;
        // SAFETY: NUL-terminated within the buffer (its last byte is never written).
        Ok(unsafe { CStr::from_ptr(key.as_ptr()) }.to_bytes().to_vec())
    }

    fn import(&self, handle: &[u8]) -> Result<u64> {
        self.imports.open(handle, || self.open_key(handle))
    }

    unsafe fn close_import(&self, ptr: u64, handle: &[u8]) -> Result<()> {
        self.imports.close(ptr, handle, || self.close_key(handle))
    }

    fn unexport(&self, handle: &[u8]) -> Result<()> {
        self.close_key(handle)
    }
}

impl Ascend {
    fn open_key(&self, handle: &[u8]) -> Result<u64> {
        let key = ipc_key(handle)?;
        type Import = unsafe extern "C" fn(*mut *mut c_void, *const c_char, u64) -> AclError;
        let f = self.sym::<Import>("aclrtIpcMemImportByKey")?;
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: a NUL-terminated key; ACL writes one pointer.
        check("aclrtIpcMemImportByKey", unsafe {
            f(&mut p, key.as_ptr(), IPC_IMPORT_PEER_ACCESS)
        })?;
        Ok(p as u64)
    }

    /// `aclrtIpcMemClose`, which ends both an import and an export.
    fn close_key(&self, handle: &[u8]) -> Result<()> {
        let key = ipc_key(handle)?;
        type Close = unsafe extern "C" fn(*const c_char) -> AclError;
        let f = self.sym::<Close>("aclrtIpcMemClose")?;
        // SAFETY: a NUL-terminated key.
        check("aclrtIpcMemClose", unsafe { f(key.as_ptr()) })
    }
}

/// ACL's IPC keys are C strings of at most this many bytes.
const IPC_KEY_LEN: usize = 65;
/// `ACL_RT_IPC_MEM_EXPORT_FLAG_DISABLE_PID_VALIDATION`: the key reaches only processes
/// of the service's own user (the descriptor socket checks), so no pid list is kept;
/// pids inside containers are not the ones the driver sees anyway.
const IPC_EXPORT_NO_PID_CHECK: u64 = 1;
/// `ACL_RT_IPC_MEM_IMPORT_FLAG_ENABLE_PEER_ACCESS`: an importer on another device of
/// the host copies to and from the memory directly.
const IPC_IMPORT_PEER_ACCESS: u64 = 1;

fn ipc_key(handle: &[u8]) -> Result<std::ffi::CString> {
    if handle.len() > IPC_KEY_LEN {
        return Err(Error::invalid("an IPC key longer than ACL's"));
    }
    std::ffi::CString::new(handle).map_err(|_| Error::invalid("an IPC key with a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fake Ascend runtime the peers install (`../shared/peers/setup.sh`): a real
    /// `libascendcl.so` we did not write, whose device memory is host memory. CI sets it
    /// up; elsewhere `MMC_ASCEND_LIB` or `PEERS_DIR` names it.
    fn stub() -> Option<String> {
        if let Ok(p) = std::env::var("MMC_ASCEND_LIB") {
            return Some(p);
        }
        let dir = std::env::var("PEERS_DIR").ok().or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| format!("{h}/.cache/memcache-peers"))
        })?;
        let p = format!("{dir}/fakeascend/lib64/libascendcl.so");
        std::path::Path::new(&p).exists().then_some(p)
    }

    #[test]
    fn copies_through_acl_round_trip_on_several_streams() {
        let Some(path) = stub() else {
            eprintln!("no libascendcl.so (run ../shared/peers/setup.sh): skipped");
            return;
        };
        let acl = Ascend::load_from(&[path]).unwrap();
        assert_eq!(acl.name(), "ascend");
        acl.set_device(0).unwrap();
        let len = 1 << 20;
        let dev = acl.alloc(len).unwrap();
        let src: Vec<u8> = (0..len as u32).map(|i| (i * 13 % 251) as u8).collect();
        let mut out = vec![0u8; len];
        // Eight pieces each way, so every stream carries some.
        let piece = len / 8;
        let up: Vec<DeviceCopy> = (0..8)
            .map(|i| DeviceCopy {
                dst: dev + (i * piece) as u64,
                src: src.as_ptr() as u64 + (i * piece) as u64,
                len: piece,
                kind: CopyKind::HostToDevice,
            })
            .collect();
        let down: Vec<DeviceCopy> = up
            .iter()
            .map(|c| DeviceCopy {
                dst: out.as_mut_ptr() as u64 + (c.dst - dev),
                src: c.dst,
                len: c.len,
                kind: CopyKind::DeviceToHost,
            })
            .collect();
        // SAFETY: the host ranges lie in `src` and `out`, the device one in `dev`.
        unsafe {
            acl.copy_batch(&up).unwrap();
            acl.copy_batch(&down).unwrap();
            acl.free(dev).unwrap();
        }
        assert!(out == src);
        assert_eq!(acl.streams.lock().unwrap()[&0].len(), STREAMS);
    }

    #[test]
    fn a_missing_library_is_a_clear_minus_3000() {
        let e = Ascend::load_from(&["/nonexistent/libascendcl.so".into()])
            .err()
            .unwrap();
        assert_eq!(e.code(), -3000);
        assert!(e.to_string().contains("libascendcl"), "{e}");
    }
}
