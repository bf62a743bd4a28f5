//! Several threads share one store and race puts, gets and removes on the same keys in
//! a pool small enough that eviction runs all the time. Every successful read must
//! return exactly one complete value that some put wrote: never a torn or recycled
//! blob, whatever the interleaving.

mod common;

use std::sync::Arc;
use std::thread;

use common::*;
use memcache_client::{MetaConfig, PolicyKind};
use rand::{rngs::StdRng, Rng, SeedableRng};

const KEYS: u64 = 64;
const THREADS: u64 = 4;
const ITERATIONS: usize = 1500;

/// A value that names its key and version in its first 16 bytes and whose remaining
/// bytes follow from them.
fn value(key: u64, version: u64, len: usize) -> Vec<u8> {
    let mut v = key.to_le_bytes().to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.extend(pattern(key << 32 | version, len - 16));
    v
}

fn check(key: u64, got: &[u8]) {
    assert!(got.len() >= 16, "value of {} bytes", got.len());
    let k = u64::from_le_bytes(got[..8].try_into().unwrap());
    let version = u64::from_le_bytes(got[8..16].try_into().unwrap());
    assert_eq!(k, key, "read another key's bytes");
    assert!(
        got == value(key, version, got.len()).as_slice(),
        "torn value for key {key} version {version}"
    );
}

#[test]
fn racing_clients_never_read_torn_or_recycled_bytes() {
    // FIFO: a read does not save an object from being the next victim, so eviction
    // keeps aiming at objects that are being read; only their leases protect them.
    let pool = pool_with(MetaConfig {
        eviction_policy: PolicyKind::Fifo,
        ..MetaConfig::default()
    });
    let store = started_on(&pool, MIB, 0);
    let store = Arc::new(store);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(t);
                let mut buf = vec![0u8; 64 * KIB];
                let (mut hits, mut puts) = (0, 0);
                for i in 0..ITERATIONS {
                    let key = rng.random_range(0..KEYS);
                    let name = format!("k{key}");
                    match rng.random_range(0..10) {
                        0..4 => {
                            // One page count for all, so a freed blob is reused at once.
                            let len = 64 * KIB - rng.random_range(0..4000);
                            let version = t << 32 | i as u64;
                            match code(&store.put(&name, &value(key, version, len))) {
                                0 => puts += 1,
                                -3006 | -3016 => {}
                                c => panic!("put answered {c}"),
                            }
                        }
                        4..7 => match store.get(&name) {
                            Ok(v) => {
                                check(key, &v);
                                hits += 1;
                            }
                            Err(e) => assert_eq!(e.code(), -3007),
                        },
                        7..9 => match store.get_into(
                            &name,
                            &mut buf,
                            memcache_client::CopyDirection::G2H,
                        ) {
                            Ok(n) => {
                                check(key, &buf[..n as usize]);
                                hits += 1;
                            }
                            Err(e) => assert_eq!(e.code(), -3007),
                        },
                        _ => {
                            let c = code(&store.remove(&name));
                            assert!([0, -3007, -3104].contains(&c), "remove answered {c}");
                        }
                    }
                }
                (hits, puts)
            })
        })
        .collect();
    let (mut hits, mut puts) = (0, 0);
    for h in handles {
        let (a, b) = h.join().expect("no thread panicked");
        hits += a;
        puts += b;
    }
    // The run really raced: values were stored, read back and evicted.
    assert!(puts > 500 && hits > 500, "puts {puts}, hits {hits}");
    assert!(pool.meta().state().counters().evicted > 0);
    // What is left is consistent: usage equals the blobs of the objects left.
    let (used, _) = dram_usage(&pool);
    let blobs: u64 = pool
        .meta()
        .state()
        .objects()
        .flat_map(|(_, o)| o.blobs.iter().map(|b| pages_bytes(b.len as usize)))
        .sum();
    assert_eq!(used, blobs);
    for key in 0..KEYS {
        if let Ok(v) = store.get(format!("k{key}")) {
            check(key, &v);
        }
    }
}
