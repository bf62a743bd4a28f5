//! Round trips through every data call of the API: layered and batch puts and gets,
//! the convenience calls, key info, existence, removal and the local service id.

mod common;

use common::*;
use memcache_client::{CopyDirection, Medium, ReplicateConfig};

const H2G: CopyDirection = CopyDirection::H2G;
const G2H: CopyDirection = CopyDirection::G2H;

/// A KV-cache-like object: 61 layers of 128 KiB (K) then 61 of 16 KiB (V), every
/// layer with its own bytes.
fn kv_layers(seed: u64) -> Vec<Vec<u8>> {
    (0..61)
        .map(|i| pattern(seed * 1000 + i, 128 * KIB))
        .chain((0..61).map(|i| pattern(seed * 1000 + 500 + i, 16 * KIB)))
        .collect()
}

fn refs(layers: &[Vec<u8>]) -> Vec<&[u8]> {
    layers.iter().map(Vec::as_slice).collect()
}

fn zeroed_like(layers: &[Vec<u8>]) -> Vec<Vec<u8>> {
    layers.iter().map(|l| vec![0u8; l.len()]).collect()
}

#[test]
fn put_from_layers_and_get_into_layers_round_trip_122_layers() {
    let (pool, store) = started(64 * MIB);
    let layers = kv_layers(1);
    let total: usize = layers.iter().map(Vec::len).sum();
    assert_eq!(total, 61 * 144 * KIB);

    store
        .put_from_layers("kv", &refs(&layers), H2G, &ReplicateConfig::default())
        .unwrap();
    assert_eq!(dram_usage(&pool).0, pages_bytes(total));

    let mut out = zeroed_like(&layers);
    let mut out_refs: Vec<&mut [u8]> = out.iter_mut().map(Vec::as_mut_slice).collect();
    assert_eq!(
        store.get_into_layers("kv", &mut out_refs, G2H),
        Ok(total as u64)
    );
    for (i, (got, want)) in out.iter().zip(&layers).enumerate() {
        assert!(got == want, "layer {i} differs");
    }

    // The object is the layers concatenated, whatever split reads it.
    let flat: Vec<u8> = layers.concat();
    assert!(store.get("kv").unwrap() == flat);
    let mut one = vec![0u8; total];
    assert_eq!(store.get_into("kv", &mut one, G2H), Ok(total as u64));
    assert!(one == flat);
    let (mut a, mut b, mut c) = (vec![0u8; 1], vec![0u8; total / 2], vec![0u8; total]);
    assert_eq!(
        store.get_into_layers("kv", &mut [&mut a, &mut b, &mut c], G2H),
        Ok(total as u64)
    );
    let rest = total - 1 - total / 2;
    assert_eq!(a[0], flat[0]);
    assert!(b[..] == flat[1..1 + total / 2]);
    assert!(c[..rest] == flat[1 + total / 2..]);
    assert!(c[rest..].iter().all(|&x| x == 0));

    let info = store.get_key_info("kv").unwrap();
    assert_eq!(info.size, total as u64);
}

#[test]
fn batch_layer_calls_with_8_keys() {
    let (pool, store) = started(64 * MIB);
    let keys: Vec<String> = (0..8).map(|i| format!("layered-{i}")).collect();
    // Each key: 4 layers of different sizes, some not page multiples.
    let objects: Vec<Vec<Vec<u8>>> = (0..8u64)
        .map(|k| {
            [4096 * (k as usize + 1) + 1, 7000, 100, 64 * KIB]
                .iter()
                .enumerate()
                .map(|(l, &n)| pattern(k * 10 + l as u64, n))
                .collect()
        })
        .collect();
    let layer_refs: Vec<Vec<&[u8]>> = objects.iter().map(|o| refs(o)).collect();
    let per_key: Vec<&[&[u8]]> = layer_refs.iter().map(Vec::as_slice).collect();
    let put = store.batch_put_from_layers(&keys, &per_key, H2G, &ReplicateConfig::default());
    assert_eq!(codes(&put), [0; 8]);
    assert_eq!(object_count(&pool), 8);

    let mut outs: Vec<Vec<Vec<u8>>> = objects.iter().map(|o| zeroed_like(o)).collect();
    let mut out_layers: Vec<Vec<&mut [u8]>> = outs
        .iter_mut()
        .map(|o| o.iter_mut().map(Vec::as_mut_slice).collect())
        .collect();
    let mut out_refs: Vec<&mut [&mut [u8]]> =
        out_layers.iter_mut().map(Vec::as_mut_slice).collect();
    let got = store.batch_get_into_layers(&keys, &mut out_refs, G2H);
    let sizes: Vec<u64> = objects
        .iter()
        .map(|o| o.iter().map(|l| l.len() as u64).sum())
        .collect();
    assert_eq!(got, sizes.iter().map(|&s| Ok(s)).collect::<Vec<_>>());
    assert_eq!(outs, objects);

    // The batch layered put did not store anything twice, and a repeat is -3006.
    let again = store.batch_put_from_layers(&keys, &per_key, H2G, &ReplicateConfig::default());
    assert_eq!(codes(&again), [-3006; 8]);
    let infos = store.batch_get_key_info(&keys);
    for (info, &size) in infos.iter().zip(&sizes) {
        assert_eq!(info.as_ref().unwrap().size, size);
    }
}

#[test]
fn batch_put_from_and_batch_get_into() {
    let (_pool, store) = started(16 * MIB);
    let keys: Vec<String> = (0..8).map(|i| format!("blk-{i}")).collect();
    let data: Vec<Vec<u8>> = (0..8)
        .map(|i| pattern(100 + i, 1 + 9000 * i as usize))
        .collect();
    let put = store.batch_put_from(&keys, &refs(&data), H2G, &ReplicateConfig::default());
    assert_eq!(codes(&put), [0; 8]);

    let mut outs: Vec<Vec<u8>> = data.iter().map(|d| vec![0u8; d.len()]).collect();
    let mut out_refs: Vec<&mut [u8]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
    let got = store.batch_get_into(&keys, &mut out_refs, G2H);
    assert_eq!(
        got,
        data.iter().map(|d| Ok(d.len() as u64)).collect::<Vec<_>>()
    );
    assert_eq!(outs, data);

    // The same key twice in one get batch reads it twice.
    let (mut x, mut y) = (vec![0u8; data[3].len()], vec![0u8; data[3].len()]);
    let twice = store.batch_get_into(&[&keys[3], &keys[3]], &mut [&mut x, &mut y], G2H);
    assert_eq!(codes(&twice), [0, 0]);
    assert_eq!((&x, &y), (&data[3], &data[3]));
    // Both reads released their leases.
    store.remove(&keys[3]).unwrap();
}

#[test]
fn put_and_get_convenience() {
    let (_pool, store) = started(16 * MIB);
    for (i, len) in [1usize, 4095, 4096, 4097, MIB].into_iter().enumerate() {
        let key = format!("conv-{len}");
        let data = pattern(i as u64, len);
        store.put(&key, &data).unwrap();
        assert_eq!(store.get(&key).unwrap(), data, "{len} bytes");
    }
    // Binary keys are keys.
    store.put([0u8, 255, 1], b"binary").unwrap();
    assert_eq!(store.get([0u8, 255, 1]).unwrap(), b"binary");
    assert_eq!(code(&store.get([0u8, 255])), -3007);
}

#[test]
fn key_info_reports_size_locations_and_status() {
    let pool = pool();
    let store = started_on(&pool, 8 * MIB, 3);
    let me = store.get_local_service_id().unwrap();
    store.put("info", &pattern(1, 12_345)).unwrap();

    let info = store.get_key_info("info").unwrap();
    assert_eq!(info.key, b"info");
    assert_eq!(info.size, 12_345);
    assert_eq!(info.status, 0);
    assert_eq!(info.device_id, 3);
    assert_eq!(info.locations.len(), 1);
    assert_eq!(info.locations[0].service, me);
    assert_eq!(info.locations[0].device_id, 3);
    assert_eq!(info.locations[0].medium, Medium::Dram);

    store.put("other", &[1u8; 10]).unwrap();
    let infos = store.batch_get_key_info(&["other", "missing", "info"]);
    assert_eq!(codes(&infos), [0, -3007, 0]);
    assert_eq!(infos[0].as_ref().unwrap().size, 10);
    assert_eq!(infos[0].as_ref().unwrap().key, b"other");
    assert_eq!(infos[2].as_ref().unwrap(), &info);
}

#[test]
fn is_exist_and_batch_is_exist() {
    let (_pool, store) = started(4 * MIB);
    store.put("here", &[1]).unwrap();
    assert_eq!(store.is_exist("here"), Ok(true));
    assert_eq!(store.is_exist("gone"), Ok(false));
    assert_eq!(
        store.batch_is_exist(&["gone", "here", "here", "also-gone"]),
        [Ok(false), Ok(true), Ok(true), Ok(false)]
    );
    assert_eq!(store.batch_is_exist::<&str>(&[]), []);
    store.remove("here").unwrap();
    assert_eq!(store.batch_is_exist(&["here"]), [Ok(false)]);
}

#[test]
fn remove_and_batch_remove_free_the_space() {
    let (pool, store) = started(8 * MIB);
    let keys: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        store.put(k, &pattern(i as u64, 100_000)).unwrap();
    }
    assert_eq!(dram_usage(&pool).0, 6 * pages_bytes(100_000));

    store.remove(&keys[0]).unwrap();
    assert_eq!(dram_usage(&pool).0, 5 * pages_bytes(100_000));
    let r = store.batch_remove(&[&keys[1], &keys[0], &keys[2], &keys[2]]);
    assert_eq!(codes(&r), [0, -3007, 0, -3007]);
    assert_eq!(object_count(&pool), 3);
    let r = store.batch_remove(&keys[3..]);
    assert_eq!(codes(&r), [0, 0, 0]);
    assert_eq!(object_count(&pool), 0);
    assert_eq!(dram_usage(&pool).0, 0);
    assert_eq!(pool.meta().state().counters().removed, 6);
    assert_eq!(pool.meta().state().counters().evicted, 0);

    // A removed key can be put again, with new content.
    store.put(&keys[0], b"again").unwrap();
    assert_eq!(store.get(&keys[0]).unwrap(), b"again");
}

#[test]
fn local_service_ids() {
    let pool = pool();
    let first = started_on(&pool, 4 * MIB, 0);
    let second = started_on(&pool, 4 * MIB, 1);
    // The smallest free ids, in order of joining.
    assert_eq!(first.get_local_service_id(), Ok(0));
    assert_eq!(second.get_local_service_id(), Ok(1));

    let pure = client(&pool, 4 * MIB);
    pure.init(0, false).unwrap();
    assert_eq!(code(&pure.get_local_service_id()), -3018);

    // An id freed by a tear_down is handed out again.
    first.tear_down().unwrap();
    let third = started_on(&pool, 4 * MIB, 2);
    assert_eq!(third.get_local_service_id(), Ok(0));

    // What a pure client puts lands on a local service of the pool.
    pure.put("from-pure", &[1, 2, 3]).unwrap();
    let info = pure.get_key_info("from-pure").unwrap();
    assert_eq!(info.locations.len(), 1);
    assert!([0, 1].contains(&info.locations[0].service));
    assert_eq!(second.get("from-pure").unwrap(), [1, 2, 3]);
}

#[test]
fn pure_client_on_a_pool_without_local_services_has_no_space() {
    let pool = pool();
    let pure = client(&pool, 4 * MIB);
    pure.init(0, false).unwrap();
    assert_eq!(code(&pure.put("k", &[1])), -3016);
    assert_eq!(object_count(&pool), 0);
}

#[test]
fn register_and_unregister_buffers() {
    let (_pool, store) = started(4 * MIB);
    let buf = vec![0u8; 64 * KIB];
    store.register_buffer(&buf).unwrap();
    assert_eq!(store.inner().registered_bytes(), Ok(64 * KIB));
    assert_eq!(code(&store.register_buffer(&buf)), -3005);
    assert_eq!(code(&store.register_buffer(&buf[100..200])), -3000);
    assert_eq!(code(&store.register_buffer(&[])), -3000);
    assert_eq!(code(&store.unregister_buffer(&buf[..100])), -3000);
    store.unregister_buffer(&buf).unwrap();
    assert_eq!(code(&store.unregister_buffer(&buf)), -3000);
    assert_eq!(store.inner().registered_bytes(), Ok(0));

    // Two neighbouring regions are both fine.
    store.register_buffer(&buf[..KIB]).unwrap();
    store.register_buffer(&buf[KIB..2 * KIB]).unwrap();
    assert_eq!(store.inner().registered_bytes(), Ok(2 * KIB));
}

/// A client of `pool` whose batches are copied by `threads` threads (as many as the
/// machine has, at most), contributing `dram` bytes on `device`.
fn threaded_on(
    pool: &std::sync::Arc<memcache_client::EmbeddedPool>,
    dram: usize,
    device: u32,
    threads: u32,
) -> memcache_client::BlockingObjectStore {
    let mut config = memcache_client::ClientConfig::with_dram(dram as u64);
    (config.write_threads, config.read_threads) = (threads, threads);
    let store = memcache_client::BlockingObjectStore::with_pool(config, pool.clone()).unwrap();
    store.init(device, true).unwrap();
    store
}

#[test]
fn batches_copied_by_several_threads_land_byte_exact() {
    let pool = pool();
    let store = threaded_on(&pool, 256 * MIB, 0, 4);
    // A second local service in this process: two replicas, both mapped here, copied
    // in the same batch.
    let _other = threaded_on(&pool, 256 * MIB, 1, 1);
    let keys: Vec<String> = (0..8).map(|i| format!("threaded-{i}")).collect();
    let objects: Vec<Vec<Vec<u8>>> = (0..8).map(|k| kv_layers(200 + k)).collect();
    let layer_refs: Vec<Vec<&[u8]>> = objects.iter().map(|o| refs(o)).collect();
    let slices: Vec<&[&[u8]]> = layer_refs.iter().map(Vec::as_slice).collect();
    let two = ReplicateConfig {
        replica_num: 2,
        ..Default::default()
    };
    for (config, prefix) in [(ReplicateConfig::default(), "one"), (two, "two")] {
        let keys: Vec<String> = keys.iter().map(|k| format!("{prefix}/{k}")).collect();
        let put = store.batch_put_from_layers(&keys, &slices, H2G, &config);
        assert_eq!(codes(&put), [0; 8], "{prefix}");
        let replicas = store.get_key_info(&keys[5]).unwrap().locations.len();
        assert_eq!(replicas, config.replica_num as usize);

        // Every key read back into its own layers; a missing key in the middle and a
        // key whose buffers are one byte short answer for themselves alone.
        let mut asked: Vec<String> = keys.clone();
        asked[2] = format!("{prefix}/absent");
        let mut outs: Vec<Vec<Vec<u8>>> = objects.iter().map(|o| zeroed_like(o)).collect();
        outs[6].last_mut().unwrap().pop();
        let mut out_refs: Vec<Vec<&mut [u8]>> = outs
            .iter_mut()
            .map(|o| o.iter_mut().map(Vec::as_mut_slice).collect())
            .collect();
        let mut out_slices: Vec<&mut [&mut [u8]]> =
            out_refs.iter_mut().map(Vec::as_mut_slice).collect();
        let got = store.batch_get_into_layers(&asked, &mut out_slices, G2H);
        let mut want = vec![0; 8];
        (want[2], want[6]) = (-3007, -3000);
        assert_eq!(codes(&got), want, "{prefix}");
        for k in [0, 1, 3, 4, 5, 7] {
            assert!(outs[k] == objects[k], "{prefix}: key {k} differs");
        }
        assert!(
            outs[2].iter().flatten().all(|&b| b == 0),
            "nothing for a miss"
        );
        assert!(
            outs[6].iter().flatten().all(|&b| b == 0),
            "nothing when short"
        );
        assert_eq!(codes(&store.batch_remove(&keys)), [0; 8]);
    }
}
