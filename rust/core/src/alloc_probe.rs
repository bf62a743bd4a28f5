//! A test allocator: the system's, noting per thread the largest allocation and the
//! most bytes held at once, so a test can show that no input makes a parser allocate
//! by the lengths it claims. A test binary installs it with
//! `#[global_allocator] static A: AllocProbe = AllocProbe;` and runs the code under
//! test on its own thread (tests run in parallel, each on a thread of its own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, measuring (see the module).
pub struct AllocProbe;

thread_local! {
    // Const initializers and no destructors: using them never allocates, so the
    // allocator may.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// Bytes this thread allocated less those it freed (may go below 0 when it frees
    /// what another thread allocated).
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// `HELD` at the last `start`.
    static BASE: Cell<isize> = const { Cell::new(0) };
}

fn grew(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    let _ = HELD.try_with(|h| {
        h.set(h.get().saturating_add_unsigned(size));
        let _ = PEAK.try_with(|p| p.set(p.get().max(h.get())));
    });
}

fn shrank(size: usize) {
    let _ = HELD.try_with(|h| h.set(h.get().saturating_sub_unsigned(size)));
}

// SAFETY: every call goes to the system allocator unchanged; the bookkeeping uses
// thread-locals that never allocate.
unsafe impl GlobalAlloc for AllocProbe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's promise, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's promise, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        shrank(layout.size());
        grew(new_size);
        // SAFETY: the caller's promise, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: the caller's promise, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What this thread allocated since the last [`start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// The largest single allocation.
    pub largest: usize,
    /// The most bytes held at once beyond what was held at the start.
    pub peak: usize,
}

/// Starts measuring this thread's allocations afresh.
pub fn start() {
    LARGEST.with(|l| l.set(0));
    let held = HELD.with(Cell::get);
    BASE.with(|b| b.set(held));
    PEAK.with(|p| p.set(held));
}

/// What this thread allocated since [`start`] (meaningful only where the test binary
/// installed [`AllocProbe`]).
pub fn measured() -> Measured {
    Measured {
        largest: LARGEST.with(Cell::get),
        peak: PEAK
            .with(Cell::get)
            .saturating_sub(BASE.with(Cell::get))
            .max(0) as usize,
    }
}
