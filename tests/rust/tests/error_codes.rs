//! Every error code the client API can return, asserted as numbers, together with what
//! the failed call must leave unchanged.

mod common;

use std::time::Duration;

use common::*;
use memcache_client::{
    CopyDirection, CopyWay, Key, Medium, MetaConfig, Piece, ReplicateConfig, MAX_BATCH_OP_COUNT,
    MAX_KEY_LEN,
};

const H2G: CopyDirection = CopyDirection::H2G;
const G2H: CopyDirection = CopyDirection::G2H;

fn default_config() -> ReplicateConfig {
    ReplicateConfig::default()
}

#[test]
fn key_of_256_bytes_is_invalid_and_stores_nothing() {
    let (pool, store) = started(4 * MIB);
    // The spec's limit, written out: keys are shorter than 256 bytes.
    assert_eq!(MAX_KEY_LEN, 255);
    let long = vec![b'k'; 256];
    let prefix = &long[..255];
    let data = pattern(1, 5000);

    assert_eq!(code(&store.put(&long, &data)), -3000);
    assert_eq!(
        code(&store.put_from(&long, &data, H2G, &default_config())),
        -3000
    );
    assert_eq!(
        code(&store.put_from_layers(&long, &[&data[..10], &data[10..]], H2G, &default_config())),
        -3000
    );
    assert_eq!(
        codes(&store.batch_put_from(&[&long], &[&data], H2G, &default_config())),
        [-3000]
    );
    assert_eq!(object_count(&pool), 0);
    assert_eq!(dram_usage(&pool).0, 0);

    // Nothing under the truncated key either.
    assert_eq!(store.is_exist(prefix), Ok(false));
    assert_eq!(code(&store.get(prefix)), -3007);

    // Every other call refuses the long key too.
    assert_eq!(code(&store.get(&long)), -3000);
    let mut buf = vec![0u8; 5000];
    assert_eq!(code(&store.get_into(&long, &mut buf, G2H)), -3000);
    assert_eq!(code(&store.is_exist(&long)), -3000);
    assert_eq!(code(&store.get_key_info(&long)), -3000);
    assert_eq!(code(&store.remove(&long)), -3000);

    // 255 bytes is the longest key, and it works.
    store.put(prefix, &data).unwrap();
    assert_eq!(store.is_exist(prefix), Ok(true));
    assert_eq!(store.get(prefix).unwrap(), data);
    assert_eq!(store.get_key_info(prefix).unwrap().key, prefix);
    assert_eq!(object_count(&pool), 1);
    // And the long key still is not there.
    assert_eq!(code(&store.is_exist(&long)), -3000);
}

#[test]
fn empty_key_is_invalid_everywhere() {
    let (pool, store) = started(4 * MIB);
    let data = [7u8; 100];
    assert_eq!(code(&store.put("", &data)), -3000);
    assert_eq!(
        code(&store.put_from("", &data, H2G, &default_config())),
        -3000
    );
    assert_eq!(
        code(&store.put_from_layers("", &[&data], H2G, &default_config())),
        -3000
    );
    assert_eq!(code(&store.get("")), -3000);
    let mut buf = [0u8; 100];
    assert_eq!(code(&store.get_into("", &mut buf, G2H)), -3000);
    assert_eq!(
        code(&store.get_into_layers("", &mut [&mut buf], G2H)),
        -3000
    );
    assert_eq!(code(&store.is_exist("")), -3000);
    assert_eq!(code(&store.get_key_info("")), -3000);
    assert_eq!(code(&store.remove("")), -3000);
    assert_eq!(codes(&store.batch_is_exist(&[""])), [-3000]);
    assert_eq!(codes(&store.batch_remove(&[""])), [-3000]);
    assert_eq!(codes(&store.batch_get_key_info(&[""])), [-3000]);
    assert_eq!(object_count(&pool), 0);
    assert_eq!(buf, [0u8; 100]);
}

#[test]
fn zero_byte_object_is_invalid() {
    let (pool, store) = started(4 * MIB);
    assert_eq!(code(&store.put("k", &[])), -3000);
    assert_eq!(
        code(&store.put_from_layers("k", &[&[], &[]], H2G, &default_config())),
        -3000
    );
    assert_eq!(
        code(&store.put_from_layers("k", &[], H2G, &default_config())),
        -3000
    );
    assert_eq!(store.is_exist("k"), Ok(false));
    assert_eq!(object_count(&pool), 0);
}

#[test]
fn duplicate_put_is_3006_and_keeps_the_first_content() {
    let (pool, store) = started(4 * MIB);
    let first = pattern(1, 3000);
    let second = pattern(2, 3000);
    store.put("dup", &first).unwrap();
    let used = dram_usage(&pool).0;

    assert_eq!(code(&store.put("dup", &second)), -3006);
    assert_eq!(
        code(&store.put_from_layers("dup", &[&second[..1], &second[1..]], H2G, &default_config())),
        -3006
    );
    assert_eq!(
        codes(&store.batch_put_from(&["dup"], &[&second], H2G, &default_config())),
        [-3006]
    );
    // A different size does not matter either.
    assert_eq!(code(&store.put("dup", &[1u8; 10])), -3006);

    assert_eq!(store.get("dup").unwrap(), first);
    assert_eq!(object_count(&pool), 1);
    assert_eq!(dram_usage(&pool).0, used);
}

#[test]
fn duplicate_key_inside_one_batch_keeps_the_first_entry() {
    let (pool, store) = started(4 * MIB);
    let a = pattern(10, 5000);
    let b = pattern(11, 7000);
    let r = store.batch_put_from(&["same", "same"], &[&a, &b], H2G, &default_config());
    assert_eq!(codes(&r), [0, -3006]);
    assert_eq!(store.get("same").unwrap(), a);
    assert_eq!(object_count(&pool), 1);
    assert_eq!(dram_usage(&pool).0, pages_bytes(a.len()));
}

#[test]
fn missing_key_is_3007() {
    let (_pool, store) = started(4 * MIB);
    assert_eq!(code(&store.get("nope")), -3007);
    let mut buf = [0x5Au8; 64];
    assert_eq!(code(&store.get_into("nope", &mut buf, G2H)), -3007);
    assert_eq!(
        code(&store.get_into_layers("nope", &mut [&mut buf[..32]], G2H)),
        -3007
    );
    assert_eq!(buf, [0x5Au8; 64]);
    assert_eq!(code(&store.get_key_info("nope")), -3007);
    assert_eq!(code(&store.remove("nope")), -3007);
    // Existence is an answer, not an error.
    assert_eq!(store.is_exist("nope"), Ok(false));
    assert_eq!(codes(&store.batch_get_key_info(&["nope"])), [-3007]);
    assert_eq!(codes(&store.batch_remove(&["nope"])), [-3007]);

    // Removed objects are missing too.
    store.put("k", &[1, 2, 3]).unwrap();
    store.remove("k").unwrap();
    assert_eq!(code(&store.get("k")), -3007);
    assert_eq!(code(&store.remove("k")), -3007);
}

#[test]
fn object_larger_than_the_pool_is_3016() {
    let (pool, store) = started(4 * MIB);
    let big = vec![3u8; 4 * MIB + 1];
    assert_eq!(code(&store.put("big", &big)), -3016);
    assert_eq!(object_count(&pool), 0);
    assert_eq!(dram_usage(&pool).0, 0);
    assert_eq!(store.is_exist("big"), Ok(false));
    // Exactly the pool fits (watermarks then evict nothing: there is nothing else).
    let full = vec![4u8; 4 * MIB];
    store.put("full", &full).unwrap();
    assert_eq!(store.get("full").unwrap(), full);
}

#[test]
fn full_pool_with_every_object_leased_is_3016_until_the_leases_end() {
    // Watermarks at 100 %: the pool may fill completely without eviction.
    let config = MetaConfig {
        evict_threshold_high: 100,
        evict_threshold_low: 100,
        ..MetaConfig::default()
    };
    let read_lease_ms = config.read_lease.as_millis() as u64;
    let pool = pool_with(config);
    let store = started_on(&pool, 4 * MIB, 0);
    let names: Vec<String> = (0..4).map(|i| format!("k{i}")).collect();
    for (i, k) in names.iter().enumerate() {
        store.put(k, &pattern(i as u64, MIB)).unwrap();
    }
    assert_eq!(dram_usage(&pool), (4 * MIB as u64, 4 * MIB as u64));

    // A reader leases every object (as a get in flight would).
    let keys: Vec<Key> = names.iter().map(|k| Key::new(k).unwrap()).collect();
    let now = pool.clock().now_ms();
    let leased = pool.meta().lookup(&keys, now);
    assert!(leased.iter().all(|r| r.is_ok()));

    let extra = pattern(99, MIB);
    assert_eq!(code(&store.put("extra", &extra)), -3016);
    assert_eq!(
        codes(&store.batch_put_from(&["extra"], &[&extra], H2G, &default_config())),
        [-3016]
    );
    assert_eq!(store.is_exist("extra"), Ok(false));
    assert_eq!(object_count(&pool), 4);
    for (i, k) in names.iter().enumerate() {
        assert_eq!(store.get(k).unwrap(), pattern(i as u64, MIB), "{k}");
    }

    // The reader never releases; once its lease has run out, eviction may proceed.
    pool.clock().advance_ms(read_lease_ms);
    store.put("extra", &extra).unwrap();
    assert_eq!(store.get("extra").unwrap(), extra);
    assert_eq!(object_count(&pool), 4);
    assert_eq!(pool.meta().state().counters().evicted, 1);
}

#[test]
fn get_into_a_short_buffer_is_3000_and_leaves_it_untouched() {
    let (_pool, store) = started(4 * MIB);
    let data = pattern(5, 10_000);
    store.put("obj", &data).unwrap();

    let mut short = vec![0xABu8; 9_999];
    assert_eq!(code(&store.get_into("obj", &mut short, G2H)), -3000);
    assert!(short.iter().all(|&b| b == 0xAB));

    let mut a = vec![0xCDu8; 5_000];
    let mut b = vec![0xCDu8; 4_999];
    assert_eq!(
        code(&store.get_into_layers("obj", &mut [&mut a, &mut b], G2H)),
        -3000
    );
    assert!(a.iter().chain(&b).all(|&x| x == 0xCD));

    // A larger buffer gets the object and keeps its tail.
    let mut large = vec![0xEFu8; 12_000];
    assert_eq!(store.get_into("obj", &mut large, G2H), Ok(10_000));
    assert_eq!(&large[..10_000], &data[..]);
    assert!(large[10_000..].iter().all(|&b| b == 0xEF));

    // The object is still there and unchanged, and not left leased.
    assert_eq!(store.get("obj").unwrap(), data);
    store.remove("obj").unwrap();
}

#[test]
fn calls_before_init_and_after_tear_down_are_3019() {
    let pool = pool();
    let store = client(&pool, 4 * MIB);
    let check = |store: &memcache_client::BlockingObjectStore| {
        let mut buf = [0u8; 16];
        let cfg = default_config();
        assert_eq!(code(&store.put("k", &[1])), -3019);
        assert_eq!(code(&store.put_from("k", &[1], H2G, &cfg)), -3019);
        assert_eq!(code(&store.put_from_layers("k", &[&[1]], H2G, &cfg)), -3019);
        assert_eq!(code(&store.get("k")), -3019);
        assert_eq!(code(&store.get_into("k", &mut buf, G2H)), -3019);
        assert_eq!(
            code(&store.get_into_layers("k", &mut [&mut buf], G2H)),
            -3019
        );
        assert_eq!(code(&store.remove("k")), -3019);
        assert_eq!(code(&store.is_exist("k")), -3019);
        assert_eq!(code(&store.get_key_info("k")), -3019);
        assert_eq!(code(&store.get_local_service_id()), -3019);
        assert_eq!(code(&store.register_buffer(&buf)), -3019);
        assert_eq!(code(&store.unregister_buffer(&buf)), -3019);
        assert_eq!(
            codes(&store.batch_put_from(&["a", "b"], &[&[1], &[2]], H2G, &cfg)),
            [-3019, -3019]
        );
        let (mut x, mut y) = ([0u8; 1], [0u8; 1]);
        assert_eq!(
            codes(&store.batch_get_into(&["a", "b"], &mut [&mut x, &mut y], G2H)),
            [-3019, -3019]
        );
        assert_eq!(
            codes(&store.batch_put_from_layers(&["a"], &[&[&[1u8][..]]], H2G, &cfg)),
            [-3019]
        );
        assert_eq!(
            codes(&store.batch_get_into_layers(&["a"], &mut [&mut [&mut x[..]]], G2H)),
            [-3019]
        );
        assert_eq!(codes(&store.batch_remove(&["a", "b"])), [-3019, -3019]);
        assert_eq!(codes(&store.batch_is_exist(&["a", "b"])), [-3019, -3019]);
        assert_eq!(
            codes(&store.batch_get_key_info(&["a", "b"])),
            [-3019, -3019]
        );
        assert_eq!(code(&store.tear_down()), -3019);
    };

    check(&store);
    assert_eq!(pool.meta().state().services().count(), 0);

    store.init(0, true).unwrap();
    store.put("k", &[1]).unwrap();
    store.tear_down().unwrap();
    check(&store);
    assert_eq!(pool.meta().state().services().count(), 0);
}

#[test]
fn init_twice_is_3005_and_init_after_tear_down_works() {
    let pool = pool();
    let store = client(&pool, 4 * MIB);
    store.init(0, true).unwrap();
    assert_eq!(code(&store.init(0, true)), -3005);
    assert_eq!(code(&store.init(1, false)), -3005);
    // The failed init did not register a second local service.
    assert_eq!(pool.meta().state().services().count(), 1);
    store.put("k", &[1, 2, 3]).unwrap();

    store.tear_down().unwrap();
    store.init(0, true).unwrap();
    assert_eq!(pool.meta().state().services().count(), 1);
    // The object had its only replica on the service that left.
    assert_eq!(store.is_exist("k"), Ok(false));
    store.put("k", &[4]).unwrap();
    assert_eq!(store.get("k").unwrap(), [4]);

    // A pure client cannot init twice either.
    let pure = client(&pool, 4 * MIB);
    pure.init(0, false).unwrap();
    assert_eq!(code(&pure.init(0, false)), -3005);
    assert_eq!(code(&pure.get_local_service_id()), -3018);
}

#[test]
fn replicate_config_out_of_range_is_3000() {
    let (pool, store) = started(4 * MIB);
    let data = [9u8; 100];
    let nine = ReplicateConfig::with_replicas(9);
    assert_eq!(code(&store.put_from("r", &data, H2G, &nine)), -3000);
    assert_eq!(
        codes(&store.batch_put_from(&["r", "s"], &[&data, &data], H2G, &nine)),
        [-3000, -3000]
    );
    let twice = ReplicateConfig {
        replica_num: 2,
        preferred_local_service_ids: vec![0, 0],
        ttl: None,
        replace: false,
        medium: None,
    };
    assert_eq!(code(&store.put_from("r", &data, H2G, &twice)), -3000);
    let too_many_preferred = ReplicateConfig {
        replica_num: 1,
        preferred_local_service_ids: vec![0, 1],
        ttl: None,
        replace: false,
        medium: None,
    };
    assert_eq!(
        code(&store.put_from("r", &data, H2G, &too_many_preferred)),
        -3000
    );
    let zero_ttl = ReplicateConfig {
        ttl: Some(Duration::ZERO),
        ..ReplicateConfig::default()
    };
    assert_eq!(code(&store.put_from("r", &data, H2G, &zero_ttl)), -3000);
    assert_eq!(object_count(&pool), 0);

    // Two replicas need two local services; there is one.
    assert_eq!(
        code(&store.put_from("r", &data, H2G, &ReplicateConfig::with_replicas(2))),
        -3016
    );
    assert_eq!(object_count(&pool), 0);

    // replicaNum 0 is read as 1.
    store
        .put_from("r", &data, H2G, &ReplicateConfig::with_replicas(0))
        .unwrap();
    assert_eq!(store.get_key_info("r").unwrap().locations.len(), 1);
}

#[test]
fn wrong_copy_direction_is_3000() {
    let (pool, store) = started(4 * MIB);
    let data = [1u8; 100];
    let cfg = default_config();
    for direct in [CopyDirection::G2H, CopyDirection::G2L, CopyDirection::L2G] {
        assert_eq!(
            code(&store.put_from("k", &data, direct, &cfg)),
            -3000,
            "{direct:?}"
        );
        assert_eq!(
            code(&store.put_from_layers("k", &[&data], direct, &cfg)),
            -3000,
            "{direct:?}"
        );
        assert_eq!(
            codes(&store.batch_put_from(&["k", "l"], &[&data, &data], direct, &cfg)),
            [-3000, -3000],
            "{direct:?}"
        );
    }
    assert_eq!(object_count(&pool), 0);

    store.put("k", &data).unwrap();
    let mut buf = [0x77u8; 100];
    for direct in [CopyDirection::H2G, CopyDirection::L2G, CopyDirection::G2L] {
        assert_eq!(
            code(&store.get_into("k", &mut buf, direct)),
            -3000,
            "{direct:?}"
        );
        assert_eq!(
            code(&store.get_into_layers("k", &mut [&mut buf], direct)),
            -3000,
            "{direct:?}"
        );
        assert_eq!(
            codes(&store.batch_get_into(&["k"], &mut [&mut buf], direct)),
            [-3000],
            "{direct:?}"
        );
    }
    assert_eq!(buf, [0x77u8; 100]);
    // Nothing left leased by the refused gets: remove works.
    store.remove("k").unwrap();
}

#[test]
fn batch_with_mismatched_lengths_fails_every_entry_with_3000() {
    let (pool, store) = started(4 * MIB);
    let cfg = default_config();
    let (a, b) = ([1u8; 10], [2u8; 10]);
    assert_eq!(
        codes(&store.batch_put_from(&["a", "b", "c"], &[&a, &b], H2G, &cfg)),
        [-3000, -3000, -3000]
    );
    assert_eq!(
        codes(&store.batch_put_from(&["a"], &[&a, &b], H2G, &cfg)),
        [-3000]
    );
    assert_eq!(
        codes(&store.batch_put_from_layers(&["a", "b"], &[&[&a[..], &b[..]]], H2G, &cfg)),
        [-3000, -3000]
    );
    assert_eq!(object_count(&pool), 0);

    store.put("a", &a).unwrap();
    store.put("b", &b).unwrap();
    let (mut x, mut y) = ([0u8; 10], [0u8; 10]);
    assert_eq!(
        codes(&store.batch_get_into(&["a", "b", "c"], &mut [&mut x, &mut y], G2H)),
        [-3000, -3000, -3000]
    );
    assert_eq!(
        codes(&store.batch_get_into(&["a"], &mut [&mut x, &mut y], G2H)),
        [-3000]
    );
    assert_eq!(
        codes(&store.batch_get_into_layers(&["a", "b"], &mut [&mut [&mut x[..]]], G2H)),
        [-3000, -3000]
    );
    assert_eq!((x, y), ([0u8; 10], [0u8; 10]));
}

#[test]
fn batches_above_16384_keys_are_split_not_refused() {
    // 40 000 one-page objects take 160 MiB; room for them below the high watermark.
    const N: usize = 40_000;
    const _: () = assert!(N > 2 * MAX_BATCH_OP_COUNT, "three chunks");
    let (pool, store) = started(256 * MIB);
    let cfg = default_config();
    let keys: Vec<String> = (0..N).map(|i| format!("k{i}")).collect();
    let values: Vec<[u8; 4]> = (0..N as u32).map(|i| i.to_le_bytes()).collect();
    let all_ok = |cs: Vec<i32>| {
        assert_eq!(cs.len(), N);
        let bad = cs.iter().position(|&c| c != 0);
        assert!(bad.is_none(), "key {bad:?}: {}", bad.map_or(0, |i| cs[i]));
    };

    let bufs: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
    all_ok(codes(&store.batch_put_from(&keys, &bufs, H2G, &cfg)));
    assert_eq!(object_count(&pool), N);

    let exists = store.batch_is_exist(&keys);
    assert_eq!(exists.len(), N);
    assert!(exists.iter().all(|r| *r == Ok(true)));
    let infos = store.batch_get_key_info(&keys);
    assert!(infos.iter().all(|r| r.as_ref().is_ok_and(|i| i.size == 4)));

    let mut outs: Vec<[u8; 4]> = vec![[0; 4]; N];
    let mut out_refs: Vec<&mut [u8]> = outs.iter_mut().map(|o| &mut o[..]).collect();
    let got = store.batch_get_into(&keys, &mut out_refs, G2H);
    assert!(got.iter().all(|r| *r == Ok(4)));
    assert_eq!(outs, values, "every key read back its own bytes, in order");

    all_ok(codes(&store.batch_remove(&keys)));
    assert_eq!(object_count(&pool), 0);
    assert!(store.batch_is_exist(&keys).iter().all(|r| *r == Ok(false)));

    // The in-place calls too.
    let sizes = vec![4u64; N];
    let gvas: Vec<u64> = store
        .batch_alloc(&keys, &sizes, Medium::Dram, 0)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let layers: Vec<[&[u8]; 1]> = bufs.iter().map(|b| [*b]).collect();
    let mut pieces: Vec<Piece> = layers.iter().map(|l| Piece::From(&l[..])).collect();
    store
        .batch_copy(&gvas, &mut pieces, CopyWay::ToPool)
        .unwrap();
    all_ok(codes(&store.batch_write_finish(&keys, &vec![0; N])));
    all_ok(codes(&store.batch_add_lease(&keys, 0)));
    store.batch_remove_lease(&keys).unwrap();
    assert_eq!(store.get(&keys[N - 1]).unwrap(), values[N - 1]);
    assert_eq!(object_count(&pool), N);
}

#[test]
fn one_bad_key_does_not_hide_the_others() {
    let (pool, store) = started(4 * MIB);
    let cfg = default_config();
    let long = "x".repeat(256);
    let keys = ["a", "", "c", long.as_str(), "e", "f"];
    let data: Vec<Vec<u8>> = (0..6)
        .map(|i| pattern(i, 1000 + 100 * i as usize))
        .collect();
    let mut bufs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    bufs[5] = &[]; // "f" has no bytes
    let put = store.batch_put_from(&keys, &bufs, H2G, &cfg);
    assert_eq!(codes(&put), [0, -3000, 0, -3000, 0, -3000]);
    assert_eq!(object_count(&pool), 3);

    // Gets: invalid keys, a missing key and a short buffer each fail alone.
    let get_keys = ["a", "", "missing", "c", long.as_str(), "e"];
    let mut outs: Vec<Vec<u8>> = vec![
        vec![0; 1000],
        vec![0; 10],
        vec![0; 10],
        vec![0; 1200],
        vec![0; 10],
        vec![0x11; 1399], // "e" has 1400 bytes
    ];
    let mut out_refs: Vec<&mut [u8]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
    let got = store.batch_get_into(&get_keys, &mut out_refs, G2H);
    assert_eq!(codes(&got), [0, -3000, -3007, 0, -3000, -3000]);
    assert_eq!(got[0], Ok(1000));
    assert_eq!(got[3], Ok(1200));
    assert_eq!(outs[0], data[0]);
    assert_eq!(outs[3], data[2]);
    assert!(outs[5].iter().all(|&b| b == 0x11));

    assert_eq!(
        store
            .batch_is_exist(&get_keys)
            .iter()
            .map(|r| r.clone().map_err(|e| e.code()))
            .collect::<Vec<_>>(),
        [
            Ok(true),
            Err(-3000),
            Ok(false),
            Ok(true),
            Err(-3000),
            Ok(true)
        ]
    );
    let infos = store.batch_get_key_info(&get_keys);
    assert_eq!(codes(&infos), [0, -3000, -3007, 0, -3000, 0]);
    assert_eq!(infos[0].as_ref().unwrap().size, 1000);
    assert_eq!(infos[3].as_ref().unwrap().size, 1200);
    assert_eq!(infos[5].as_ref().unwrap().size, 1400);
    assert_eq!(infos[5].as_ref().unwrap().key, b"e");

    let removed = store.batch_remove(&get_keys);
    assert_eq!(codes(&removed), [0, -3000, -3007, 0, -3000, 0]);
    assert_eq!(object_count(&pool), 0);
    assert_eq!(dram_usage(&pool).0, 0);
}

#[test]
fn remove_of_a_leased_object_is_3104_until_the_lease_ends() {
    let (pool, store) = started(4 * MIB);
    let data = pattern(3, 4096);
    store.put("leased", &data).unwrap();
    store.put("free", &data).unwrap();
    let key = Key::new("leased").unwrap();
    let read_lease_ms = pool.meta().config().read_lease.as_millis() as u64;

    // A reader holds a lease (as a get in flight does).
    let now = pool.clock().now_ms();
    let lease = pool.meta().lookup(std::slice::from_ref(&key), now)[0]
        .as_ref()
        .unwrap()
        .lease;
    assert_eq!(code(&store.remove("leased")), -3104);
    assert_eq!(codes(&store.batch_remove(&["free", "leased"])), [0, -3104]);
    assert_eq!(store.get("leased").unwrap(), data);
    assert_eq!(object_count(&pool), 1);

    // Released: removable.
    pool.meta().release(&[(key.clone(), lease)]);
    store.remove("leased").unwrap();
    assert_eq!(store.is_exist("leased"), Ok(false));

    // A reader that never releases: removable once its lease has run out.
    store.put("leased", &data).unwrap();
    let now = pool.clock().now_ms();
    assert!(pool.meta().lookup(std::slice::from_ref(&key), now)[0].is_ok());
    pool.clock().advance_ms(read_lease_ms - 1);
    assert_eq!(code(&store.remove("leased")), -3104);
    pool.clock().advance_ms(1);
    store.remove("leased").unwrap();
    assert_eq!(object_count(&pool), 0);
}

/// Reader A's lease runs out mid-read (a slow read); reader B then leases the object;
/// A's release arrives late. B still holds a live lease, so removal must answer -3104
/// until B releases or B's lease ends; otherwise the blob can be freed and reused
/// while B is still copying out of it.
#[test]
fn a_late_release_does_not_end_another_readers_lease() {
    let (pool, store) = started(4 * MIB);
    let data = pattern(4, 8192);
    store.put("shared", &data).unwrap();
    let key = [Key::new("shared").unwrap()];
    let read_lease_ms = pool.meta().config().read_lease.as_millis() as u64;

    let t_a = pool.clock().now_ms();
    let a = pool.meta().lookup(&key, t_a)[0].as_ref().unwrap().lease; // reader A
    pool.clock().advance_ms(read_lease_ms); // A's lease has ended, A is still reading
    let t_b = pool.clock().now_ms();
    let b = pool.meta().lookup(&key, t_b)[0].as_ref().unwrap().lease; // reader B
    pool.meta().release(&[(key[0].clone(), a)]); // A finishes, late

    // B's lease runs until t_b + read_lease and B has not released.
    assert_eq!(code(&store.remove("shared")), -3104);
    pool.meta().release(&[(key[0].clone(), b)]); // B finishes
    store.remove("shared").unwrap();
}

#[test]
fn init_with_an_unusable_dram_size_is_3000_and_leaves_the_store_uninitialised() {
    let pool = pool();
    for dram in [0, 100, 4095] {
        let store = client(&pool, dram);
        assert_eq!(code(&store.init(0, true)), -3000, "{dram} bytes");
        assert_eq!(code(&store.put("k", &[1])), -3019);
        assert_eq!(code(&store.tear_down()), -3019);
    }
    assert_eq!(pool.meta().state().services().count(), 0);
    // One page is enough.
    let store = client(&pool, 4096);
    store.init(0, true).unwrap();
    store.put("k", &[1]).unwrap();
    assert_eq!(store.get("k").unwrap(), [1]);
    // A second page-sized object evicts the first.
    store.put("l", &[2]).unwrap();
    assert_eq!(store.batch_is_exist(&["k", "l"]), [Ok(false), Ok(true)]);
}

/// Listing gives the first keys of a prefix in byte order, however few are asked for.
#[test]
fn listed_keys_are_the_first_of_the_prefix_in_order() {
    let (_pool, store) = common::started(4 << 20);
    let mut keys: Vec<String> = (0..50).map(|i| format!("list/{}", (i * 37) % 50)).collect();
    for k in keys
        .iter()
        .chain([&"other".to_string(), &"lis".to_string()])
    {
        store.put(k, b"x").unwrap();
    }
    keys.sort();
    let names = |v: Vec<memcache_core::Key>| v.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    assert_eq!(names(store.list_keys("list/", 10).unwrap()), keys[..10]);
    assert_eq!(names(store.list_keys("list/", 1000).unwrap()), keys);
    assert_eq!(store.list_keys("list/", 0).unwrap(), vec![]);
}
