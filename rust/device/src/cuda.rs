//! NVIDIA through the CUDA driver API (`cudarc`, which loads `libcuda` at run time).
//! Each device's primary context is retained once and made current where a call needs
//! it; a batch's copies go on a few streams of that context and are waited for together.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use cudarc::driver::{result, sys};
use memcache_core::{Error, Result};

use crate::{stream_of_each, CopyKind, DeviceCopy, DeviceRuntime, PtrKind, STREAMS};

thread_local! {
    static CURRENT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A device's primary context and its streams.
struct Device {
    ctx: usize,
    streams: Vec<usize>,
}

pub struct Cuda {
    devices: Mutex<HashMap<u32, Device>>,
    imports: crate::OpenImports,
}

fn failed(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Failed(format!("{what}: {e:?}"))
}

fn check(what: &str, rc: sys::CUresult) -> Result<()> {
    rc.result().map_err(|e| failed(what, e))
}

impl Cuda {
    pub fn load() -> Result<Cuda> {
        // cudarc panics when the library is missing: look for it first.
        // SAFETY: loading libcuda runs only its own initialisers.
        let found = ["libcuda.so.1", "libcuda.so"]
            .iter()
            .any(|p| unsafe { libloading::Library::new(p) }.is_ok());
        if !found {
            return Err(Error::invalid("libcuda.so.1 not found (no NVIDIA driver)"));
        }
        result::init().map_err(|e| failed("cuInit", e))?;
        let count = result::device::get_count().map_err(|e| failed("cuDeviceGetCount", e))?;
        if count < 1 {
            return Err(Error::invalid("the NVIDIA driver reports no device"));
        }
        Ok(Cuda {
            devices: Mutex::new(HashMap::new()),
            imports: Default::default(),
        })
    }

    /// Makes the calling thread's device current, retaining its context on first use;
    /// its streams.
    fn enter(&self) -> Result<Vec<usize>> {
        let ordinal = CURRENT.with(|c| c.get());
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        if let std::collections::hash_map::Entry::Vacant(slot) = devices.entry(ordinal) {
            let dev = result::device::get(ordinal as i32).map_err(|e| failed("cuDeviceGet", e))?;
            // SAFETY: a device handle from the driver.
            let ctx = unsafe { result::primary_ctx::retain(dev) }
                .map_err(|e| failed("cuDevicePrimaryCtxRetain", e))?;
            // SAFETY: the context just retained.
            unsafe { result::ctx::set_current(ctx) }.map_err(|e| failed("cuCtxSetCurrent", e))?;
            let mut streams = Vec::with_capacity(STREAMS);
            for _ in 0..STREAMS {
                let s = result::stream::create(result::stream::StreamKind::NonBlocking)
                    .map_err(|e| failed("cuStreamCreate", e))?;
                streams.push(s as usize);
            }
            slot.insert(Device {
                ctx: ctx as usize,
                streams,
            });
        }
        let d = &devices[&ordinal];
        // SAFETY: a context retained above and never released while this runtime lives.
        unsafe { result::ctx::set_current(d.ctx as sys::CUcontext) }
            .map_err(|e| failed("cuCtxSetCurrent", e))?;
        Ok(d.streams.clone())
    }
}

impl DeviceRuntime for Cuda {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn device_count(&self) -> Result<u32> {
        let n = result::device::get_count().map_err(|e| failed("cuDeviceGetCount", e))?;
        Ok(n.max(0) as u32)
    }

    fn set_device(&self, device: u32) -> Result<()> {
        if device >= self.device_count()? {
            return Err(Error::invalid(format!("no CUDA device {device}")));
        }
        CURRENT.with(|c| c.set(device));
        self.enter().map(drop)
    }

    fn alloc(&self, len: usize) -> Result<u64> {
        self.enter()?;
        // SAFETY: the device's context is current.
        unsafe { result::malloc_sync(len) }.map_err(|e| failed("cuMemAlloc", e))
    }

    unsafe fn free(&self, ptr: u64) -> Result<()> {
        self.enter()?;
        // SAFETY: the caller's promise: `ptr` came from `alloc`.
        unsafe { result::free_sync(ptr) }.map_err(|e| failed("cuMemFree", e))
    }

    unsafe fn copy_batch(&self, copies: &[DeviceCopy]) -> Result<()> {
        if copies.is_empty() {
            return Ok(());
        }
        let streams = self.enter()?;
        let mut issued = Ok(());
        for (c, s) in copies.iter().zip(stream_of_each(copies)) {
            let stream = streams[s] as sys::CUstream;
            // SAFETY (each call): the caller's promise on the ranges; our stream.
            let rc = unsafe {
                match c.kind {
                    CopyKind::HostToDevice => {
                        sys::cuMemcpyHtoDAsync_v2(c.dst, c.src as *const c_void, c.len, stream)
                    }
                    CopyKind::DeviceToHost => {
                        sys::cuMemcpyDtoHAsync_v2(c.dst as *mut c_void, c.src, c.len, stream)
                    }
                    CopyKind::DeviceToDevice => {
                        sys::cuMemcpyDtoDAsync_v2(c.dst, c.src, c.len, stream)
                    }
                }
            };
            issued = check("cuMemcpyAsync", rc);
            if issued.is_err() {
                break;
            }
        }
        // Every stream is waited for, even after a failure (see the Ascend runtime).
        let mut waited = Ok(());
        for s in &streams {
            // SAFETY: our stream.
            let r = unsafe { result::stream::synchronize(*s as sys::CUstream) }
                .map_err(|e| failed("cuStreamSynchronize", e));
            waited = waited.and(r);
        }
        issued.and(waited)
    }

    fn pointer_kind(&self, ptr: u64) -> Result<PtrKind> {
        self.enter()?;
        let mut kind: u32 = 0;
        // SAFETY: the driver writes one unsigned int for this attribute.
        let rc = unsafe {
            sys::cuPointerGetAttribute(
                &mut kind as *mut u32 as *mut c_void,
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                ptr,
            )
        };
        // Memory the driver never saw (plain malloc) is host memory.
        if rc != sys::CUresult::CUDA_SUCCESS
            || kind != sys::CUmemorytype::CU_MEMORYTYPE_DEVICE as u32
        {
            return Ok(PtrKind::Host);
        }
        let mut ordinal: i32 = 0;
        // SAFETY: one int for this attribute.
        check("cuPointerGetAttribute", unsafe {
            sys::cuPointerGetAttribute(
                &mut ordinal as *mut i32 as *mut c_void,
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                ptr,
            )
        })?;
        Ok(PtrKind::Device(ordinal.max(0) as u32))
    }

    unsafe fn pin(&self, ptr: u64, len: usize) -> Result<()> {
        self.enter()?;
        // SAFETY: the caller's promise on the range. PORTABLE: every context sees it.
        check("cuMemHostRegister", unsafe {
            sys::cuMemHostRegister_v2(ptr as *mut c_void, len, sys::CU_MEMHOSTREGISTER_PORTABLE)
        })
    }

    unsafe fn unpin(&self, ptr: u64) -> Result<()> {
        self.enter()?;
        // SAFETY: the caller's promise.
        check("cuMemHostUnregister", unsafe {
            sys::cuMemHostUnregister(ptr as *mut c_void)
        })
    }

    fn export(&self, ptr: u64, _len: usize) -> Result<Vec<u8>> {
        self.enter()?;
        let mut h = std::mem::MaybeUninit::<sys::CUipcMemHandle>::zeroed();
        // SAFETY: the driver fills the handle.
        check("cuIpcGetMemHandle", unsafe {
            sys::cuIpcGetMemHandle(h.as_mut_ptr(), ptr)
        })?;
        // SAFETY: filled above; a plain byte array.
        let h = unsafe { h.assume_init() };
        Ok(h.reserved.iter().map(|&b| b as u8).collect())
    }

    fn import(&self, handle: &[u8]) -> Result<u64> {
        self.imports.open(handle, || self.open_handle(handle))
    }

    unsafe fn close_import(&self, ptr: u64, handle: &[u8]) -> Result<()> {
        self.imports.close(ptr, handle, || {
            self.enter()?;
            // SAFETY: the caller's promise: `ptr` was opened by `import` and its last
            // user is done with it.
            check("cuIpcCloseMemHandle", unsafe {
                sys::cuIpcCloseMemHandle(ptr)
            })
        })
    }

    fn unexport(&self, _handle: &[u8]) -> Result<()> {
        Ok(())
    }
}

impl Cuda {
    fn open_handle(&self, handle: &[u8]) -> Result<u64> {
        self.enter()?;
        let zeroed = std::mem::MaybeUninit::<sys::CUipcMemHandle>::zeroed();
        // SAFETY: zeroed is a valid handle value (a byte array), overwritten below.
        let mut h = unsafe { zeroed.assume_init() };
        if handle.len() != h.reserved.len() {
            return Err(Error::invalid("not a CUDA IPC handle"));
        }
        for (d, s) in h.reserved.iter_mut().zip(handle) {
            *d = *s as _;
        }
        let mut p: sys::CUdeviceptr = 0;
        // SAFETY: the driver writes one device pointer.
        check("cuIpcOpenMemHandle", unsafe {
            sys::cuIpcOpenMemHandle_v2(
                &mut p,
                h,
                sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32,
            )
        })?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs on a host with an NVIDIA driver; elsewhere it says so and passes, unless
    /// `MMC_REQUIRE_GPU=1` (scripts/gpu-check.sh) makes a missing GPU a failure.
    #[test]
    fn copies_round_trip_through_the_driver_and_pointers_are_told_apart() {
        let cuda = match Cuda::load() {
            Ok(c) => c,
            Err(e) if std::env::var("MMC_REQUIRE_GPU").as_deref() != Ok("1") => {
                eprintln!("no CUDA ({e}): skipped");
                return;
            }
            Err(e) => panic!("MMC_REQUIRE_GPU=1 but {e}"),
        };
        cuda.set_device(0).unwrap();
        let len = 8 << 20;
        let (a, b) = (cuda.alloc(len).unwrap(), cuda.alloc(len).unwrap());
        assert_eq!(cuda.pointer_kind(a + 4096).unwrap(), PtrKind::Device(0));
        let src: Vec<u8> = (0..len as u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut out = vec![0u8; len];
        assert_eq!(
            cuda.pointer_kind(src.as_ptr() as u64).unwrap(),
            PtrKind::Host
        );
        let piece = len / 16;
        let each = |kind, dst: u64, src: u64| -> Vec<DeviceCopy> {
            (0..16u64)
                .map(|i| DeviceCopy {
                    dst: dst + i * piece as u64,
                    src: src + i * piece as u64,
                    len: piece,
                    kind,
                })
                .collect()
        };
        // SAFETY: host ranges are `src` and `out` (pinned meanwhile); device ones allocated.
        unsafe {
            cuda.pin(out.as_ptr() as u64, len).unwrap();
            cuda.copy_batch(&each(CopyKind::HostToDevice, a, src.as_ptr() as u64))
                .unwrap();
            cuda.copy_batch(&each(CopyKind::DeviceToDevice, b, a))
                .unwrap();
            cuda.copy_batch(&each(CopyKind::DeviceToHost, out.as_mut_ptr() as u64, b))
                .unwrap();
            cuda.unpin(out.as_ptr() as u64).unwrap();
            cuda.free(a).unwrap();
            cuda.free(b).unwrap();
        }
        assert!(out == src);
    }
}
