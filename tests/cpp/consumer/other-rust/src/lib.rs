//! Stands for any Rust static library a MemCache user already links.

#[no_mangle]
pub extern "C" fn other_rust_sum(n: u64) -> u64 {
    (1..=n).collect::<Vec<_>>().iter().sum()
}
