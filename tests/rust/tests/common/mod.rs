//! Helpers shared by the integration tests: a private pool with a manual clock per
//! test, clients on it, and small conversions for asserting on numeric codes.
#![allow(dead_code)] // each test binary uses a different subset

pub mod procs;

use std::sync::Arc;

use memcache_client::{
    code_of, BlockingObjectStore, ClientConfig, Clock, EmbeddedPool, Medium, MetaConfig, Result,
};

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;
pub const PAGE: u64 = 4096;

/// Where every manual clock starts (ms); far from 0 so no deadline saturates.
pub const T0: u64 = 1_000_000;

/// A fresh pool with its own manual clock.
pub fn pool_with(config: MetaConfig) -> Arc<EmbeddedPool> {
    EmbeddedPool::new(config, Clock::manual(T0)).expect("valid meta config")
}

pub fn pool() -> Arc<EmbeddedPool> {
    pool_with(MetaConfig::default())
}

/// A client of `pool` that contributes `dram` bytes once initialised with `init_bm`.
pub fn client(pool: &Arc<EmbeddedPool>, dram: usize) -> BlockingObjectStore {
    BlockingObjectStore::with_pool(ClientConfig::with_dram(dram as u64), pool.clone())
        .expect("client runtime")
}

/// A client of `pool`, initialised with a local service on `device`.
pub fn started_on(pool: &Arc<EmbeddedPool>, dram: usize, device: u32) -> BlockingObjectStore {
    let store = client(pool, dram);
    store.init(device, true).expect("init");
    store
}

/// A private pool (default meta config) and one started client with `dram` bytes.
pub fn started(dram: usize) -> (Arc<EmbeddedPool>, BlockingObjectStore) {
    let pool = pool();
    let store = started_on(&pool, dram, 0);
    (pool, store)
}

pub fn code<T>(r: &Result<T>) -> i32 {
    code_of(r)
}

pub fn codes<T>(rs: &[Result<T>]) -> Vec<i32> {
    rs.iter().map(code_of).collect()
}

/// `len` bytes that differ from those of any other `seed` (and are not all one value).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

pub fn object_count(pool: &EmbeddedPool) -> usize {
    pool.meta().state().object_count()
}

/// (used, capacity) bytes of DRAM in the pool.
pub fn dram_usage(pool: &EmbeddedPool) -> (u64, u64) {
    pool.meta().state().usage(Medium::Dram)
}

/// Bytes an object of `size` bytes takes in a segment (whole pages).
pub fn pages_bytes(size: usize) -> u64 {
    (size as u64).div_ceil(PAGE).max(1) * PAGE
}
