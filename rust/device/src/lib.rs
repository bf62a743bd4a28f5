//! Accelerator memory behind one small trait, so that the data plane moves KV blocks
//! straight between an engine's device buffers and the pool.
//!
//! Each real runtime is a cargo feature and loads its driver library at run time, so one
//! binary runs on hosts with and without it:
//! - `cuda`: NVIDIA, through the CUDA driver API (`libcuda.so.1`, via `cudarc`);
//! - `ascend`: Huawei Ascend, through ACL (`libascendcl.so`).
//!
//! [`runtime`] answers the runtime of this process, or the reason there is none; every
//! call that moves device memory answers that reason as -3000 (`InvalidParam`), never -1.
//! The `test-device` feature adds [`fake::FakeDevice`], an in-process simulation that
//! keeps the rules a real device enforces (device and host addresses are disjoint and a
//! copy's kind must match them); it cannot be built into a release binary.

use std::sync::OnceLock;

use memcache_core::{Error, Result};

#[cfg(feature = "ascend")]
mod ascend;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(any(test, feature = "test-device"))]
pub mod fake;

#[cfg(all(feature = "test-device", not(debug_assertions)))]
compile_error!(
    "the test-device feature simulates device memory for tests; it is not for release builds"
);

/// Where an address points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtrKind {
    /// Host memory (pageable or pinned).
    Host,
    /// Memory of the device with this ordinal.
    Device(u32),
}

/// The way of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    HostToDevice,
    DeviceToHost,
    DeviceToDevice,
}

/// One copy of a batch: `len` bytes from `src` to `dst`, addresses in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCopy {
    pub dst: u64,
    pub src: u64,
    pub len: usize,
    pub kind: CopyKind,
}

/// What the data plane needs of an accelerator runtime. Addresses are plain integers:
/// device memory is not dereferenceable from the host, so it never becomes a slice.
///
/// The calls that take addresses are `unsafe`: the runtime cannot check that host ranges
/// are valid, nor that nobody else writes them meanwhile.
pub trait DeviceRuntime: Send + Sync {
    /// `cuda`, `ascend`, `fake`.
    fn name(&self) -> &'static str;
    /// Devices this host has.
    fn device_count(&self) -> Result<u32>;
    /// Makes `device` current for the calling thread.
    fn set_device(&self, device: u32) -> Result<()>;
    /// `len` bytes of memory on the current device.
    fn alloc(&self, len: usize) -> Result<u64>;
    /// Frees what [`alloc`](Self::alloc) returned.
    ///
    /// # Safety
    /// `ptr` came from `alloc` of this runtime and is not used afterwards.
    unsafe fn free(&self, ptr: u64) -> Result<()>;
    /// Issues every copy (spread over a few streams of the current device) and returns
    /// once all are complete; the first failure is the answer.
    ///
    /// # Safety
    /// Every range is valid for its copy (host ranges readable or writable in this
    /// process, device ranges allocated) and no one else writes a destination meanwhile.
    unsafe fn copy_batch(&self, copies: &[DeviceCopy]) -> Result<()>;
    /// Where `ptr` points; an error where the runtime cannot tell.
    fn pointer_kind(&self, ptr: u64) -> Result<PtrKind>;
    /// Page-locks host memory so that copies to and from it run as DMA.
    ///
    /// # Safety
    /// `[ptr, ptr + len)` is mapped host memory that stays mapped until `unpin`.
    unsafe fn pin(&self, ptr: u64, len: usize) -> Result<()>;
    /// Undoes [`pin`](Self::pin).
    ///
    /// # Safety
    /// `ptr` was pinned by this runtime, and no copy from or to it is in flight.
    unsafe fn unpin(&self, ptr: u64) -> Result<()>;
    /// A handle another process of this host can [`import`](Self::import) to map the
    /// device allocation at `ptr`.
    fn export(&self, ptr: u64, len: usize) -> Result<Vec<u8>>;
    /// Maps another process's exported allocation here.
    fn import(&self, handle: &[u8]) -> Result<u64>;
    /// Unmaps what [`import`](Self::import) mapped from `handle` at `ptr`.
    ///
    /// # Safety
    /// `ptr` came from `import(handle)` of this runtime and is not used afterwards.
    unsafe fn close_import(&self, ptr: u64, handle: &[u8]) -> Result<()>;
    /// Ends the sharing [`export`](Self::export) began, before the allocation is freed
    /// (ACL wants it; CUDA has nothing to end).
    fn unexport(&self, handle: &[u8]) -> Result<()>;
}

/// Why there is no device runtime in this process.
#[derive(Debug, Clone)]
struct Missing(String);

/// The process's runtime, chosen once and kept for its life.
static RUNTIME: OnceLock<std::result::Result<&'static dyn DeviceRuntime, Missing>> =
    OnceLock::new();

/// The device runtime of this process, loaded on first use: the first of the built-in
/// runtimes whose driver library loads and answers (CUDA, then Ascend). Without one,
/// the reason, as -3000.
pub fn runtime() -> Result<&'static dyn DeviceRuntime> {
    let loaded = RUNTIME.get_or_init(|| load().map(|r| &*Box::leak(r)));
    match loaded {
        Ok(r) => Ok(*r),
        Err(Missing(why)) => Err(Error::invalid(why.clone())),
    }
}

/// The device runtime, if one is loaded already; never loads one (a host call must not
/// start a driver it does not need).
pub fn loaded() -> Option<&'static dyn DeviceRuntime> {
    RUNTIME.get().and_then(|r| r.as_ref().ok().copied())
}

/// Whether a device runtime is loaded (loading it if not yet).
pub fn available() -> bool {
    runtime().is_ok()
}

/// Installs `runtime` as this process's device runtime, before anything asked for one
/// (tests of the logic above the trait); false if one was already chosen.
pub fn install(runtime: &'static dyn DeviceRuntime) -> bool {
    RUNTIME.set(Ok(runtime)).is_ok()
}

fn load() -> std::result::Result<Box<dyn DeviceRuntime>, Missing> {
    #[allow(unused_mut)]
    let mut tried: Vec<String> = Vec::new();
    #[cfg(feature = "cuda")]
    match cuda::Cuda::load() {
        Ok(r) => return Ok(Box::new(r)),
        Err(e) => tried.push(format!("cuda: {e}")),
    }
    #[cfg(feature = "ascend")]
    match ascend::Ascend::load() {
        Ok(r) => return Ok(Box::new(r)),
        Err(e) => tried.push(format!("ascend: {e}")),
    }
    let why = if tried.is_empty() {
        "device memory: this build has no device runtime (build with --features cuda or ascend)"
            .to_string()
    } else {
        format!(
            "device memory: no device runtime loaded ({})",
            tried.join("; ")
        )
    };
    tracing::debug!("{why}");
    Err(Missing(why))
}

/// The imports a runtime has open, each counted: CUDA opens a handle only once per
/// context (a second open answers "already mapped"), so every importer of a handle in
/// this process shares one mapping, closed with its last user.
#[cfg(any(feature = "cuda", feature = "ascend", test))]
#[derive(Default)]
pub(crate) struct OpenImports(std::sync::Mutex<std::collections::HashMap<Vec<u8>, (u64, usize)>>);

#[cfg(any(feature = "cuda", feature = "ascend", test))]
impl OpenImports {
    /// The mapping of `handle`: the open one, or what `open` makes.
    pub fn open(&self, handle: &[u8], open: impl FnOnce() -> Result<u64>) -> Result<u64> {
        let mut opened = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((ptr, users)) = opened.get_mut(handle) {
            *users += 1;
            return Ok(*ptr);
        }
        let ptr = open()?;
        opened.insert(handle.to_vec(), (ptr, 1));
        Ok(ptr)
    }

    /// One user of `handle`'s mapping at `ptr` less; `close` runs for the last one.
    pub fn close(&self, ptr: u64, handle: &[u8], close: impl FnOnce() -> Result<()>) -> Result<()> {
        let mut opened = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match opened.get_mut(handle) {
            Some((p, users)) if *p == ptr => {
                *users -= 1;
                if *users == 0 {
                    opened.remove(handle);
                    return close();
                }
                Ok(())
            }
            _ => Err(Error::invalid(format!(
                "{ptr:#x} is no open import of this handle"
            ))),
        }
    }
}

/// How many streams a batch's copies are spread over: enough to keep a device's copy
/// engines busy, few enough that each carries a useful share.
pub const STREAMS: usize = 4;

/// The copies of `copies` in `STREAMS` groups of about equal bytes, in order; a group
/// index per copy.
pub fn stream_of_each(copies: &[DeviceCopy]) -> Vec<usize> {
    let total: usize = copies.iter().map(|c| c.len).sum();
    let share = total.div_ceil(STREAMS).max(1);
    let mut at = 0usize;
    copies
        .iter()
        .map(|c| {
            let s = (at / share).min(STREAMS - 1);
            at += c.len;
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_device_calls_answer_minus_3000_with_the_reason() {
        // No real runtime loads on a test host without drivers (a CI machine).
        if cfg!(any(feature = "cuda", feature = "ascend")) && available() {
            return;
        }
        let e = runtime().err().expect("no runtime");
        assert_eq!(e.code(), -3000);
        assert!(e.to_string().contains("device"), "{e}");
    }

    #[test]
    fn an_import_is_opened_once_and_closed_with_its_last_user() {
        let imports = OpenImports::default();
        let (opens, closes) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        let open = || {
            opens.set(opens.get() + 1);
            Ok(0x1000)
        };
        assert_eq!(imports.open(b"h", open).unwrap(), 0x1000);
        assert_eq!(imports.open(b"h", open).unwrap(), 0x1000);
        assert_eq!(opens.get(), 1);
        let close = || {
            closes.set(closes.get() + 1);
            Ok(())
        };
        assert!(imports.close(0x2000, b"h", close).is_err());
        imports.close(0x1000, b"h", close).unwrap();
        assert_eq!(closes.get(), 0);
        imports.close(0x1000, b"h", close).unwrap();
        assert_eq!(closes.get(), 1);
        assert!(imports.close(0x1000, b"h", close).is_err());
        // A failed open leaves nothing behind.
        assert!(imports.open(b"x", || Err(Error::invalid("no"))).is_err());
        assert_eq!(imports.open(b"x", open).unwrap(), 0x1000);
    }

    #[test]
    fn streams_share_the_bytes_in_order() {
        let c = |len| DeviceCopy {
            dst: 0,
            src: 0,
            len,
            kind: CopyKind::HostToDevice,
        };
        let copies: Vec<DeviceCopy> = [100, 100, 100, 100, 100, 100, 100, 100]
            .into_iter()
            .map(c)
            .collect();
        assert_eq!(stream_of_each(&copies), [0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(stream_of_each(&[c(5)]), [0]);
        assert!(stream_of_each(&[]).is_empty());
        let skewed = stream_of_each(&[c(1000), c(1), c(1), c(1)]);
        assert!(skewed.windows(2).all(|w| w[0] <= w[1]));
    }
}
