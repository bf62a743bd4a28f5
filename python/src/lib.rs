//! The Python package `memcache_hybrid`: `DistributedObjectStore` over the blocking
//! Rust client. Work in progress (issue 8): the first calls only.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use memcache_client::{BlockingObjectStore, ClientConfig};

/// A client of the pool: `init`, then put / get / remove, then `close`.
#[pyclass]
struct DistributedObjectStore {
    store: Option<BlockingObjectStore>,
}

fn code(r: memcache_core::Result<()>) -> i32 {
    r.map_or_else(|e| e.code(), |()| 0)
}

#[pymethods]
impl DistributedObjectStore {
    #[new]
    fn new() -> Self {
        DistributedObjectStore { store: None }
    }

    /// Connects to the pool (the embedded default unless configured); 0 or an error code.
    fn init(&mut self, py: Python<'_>, device_id: u32) -> i32 {
        let made = py.allow_threads(|| {
            let store = BlockingObjectStore::new(ClientConfig::default())?;
            store.init(device_id, true)?;
            Ok::<_, memcache_core::Error>(store)
        });
        match made {
            Ok(s) => {
                self.store = Some(s);
                0
            }
            Err(e) => e.code(),
        }
    }

    /// Leaves the pool; 0 or an error code.
    fn close(&mut self, py: Python<'_>) -> i32 {
        match self.store.take() {
            Some(s) => code(py.allow_threads(|| s.tear_down())),
            None => 0,
        }
    }

    /// Stores `buf` (any object with the buffer protocol: bytes, bytearray,
    /// memoryview, a C-contiguous numpy array) under `key`; 0 or an error code.
    fn put(&self, py: Python<'_>, key: &str, buf: PyBuffer<u8>) -> i32 {
        let Some(s) = &self.store else { return -3019 };
        if !buf.is_c_contiguous() {
            return -3000;
        }
        // SAFETY: the buffer stays exported (and so alive and unmoved) while `buf` is
        // held, and its bytes are only read.
        let bytes = unsafe {
            std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes())
        };
        code(py.allow_threads(|| s.put(key, bytes)))
    }

    /// The value under `key`, or `b""` on a miss or an error.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> Bound<'py, PyBytes> {
        let got = match &self.store {
            Some(s) => py.allow_threads(|| s.get(key)).unwrap_or_default(),
            None => Vec::new(),
        };
        PyBytes::new(py, &got)
    }
}

#[pymodule]
fn _pymmc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DistributedObjectStore>()
}
