//! The pool-wide operations of 1.3.0 in the Rust core: `remove_all` (one decision of
//! the meta service), `evict` (DRAM → SSD: waits for the SSD copy, then drops the DRAM
//! replica) and `prefetch` (SSD → DRAM), in a pool of processes and in the embedded
//! pool.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::procs::*;
use common::*;
use memcache_client::{BlockingObjectStore, ClientConfig, CopyDirection, Key, Medium};
use memcache_core::ReplicateConfig;
use memcache_proto::{host_id, parse_discovery, MetaLink};

use Medium::{Dram, Hbm, Ssd};

fn data_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmc-pool-ops-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn media(store: &BlockingObjectStore, key: &str) -> Vec<Medium> {
    let info = store.get_key_info(key).unwrap();
    info.locations.iter().map(|l| l.medium).collect()
}

/// Every pair but the supported one answers -3000 for every key, and changes nothing.
fn check_bad_pairs(store: &BlockingObjectStore, key: &str) {
    let before = media(store, key);
    for (src, dst) in [(Ssd, Dram), (Dram, Dram), (Hbm, Ssd), (Dram, Hbm)] {
        let r = store.evict(&[key, "other"], src, dst);
        assert_eq!(codes(&r), vec![-3000, -3000], "evict {src:?} -> {dst:?}");
    }
    for (src, dst) in [(Dram, Ssd), (Ssd, Ssd), (Hbm, Dram), (Ssd, Hbm)] {
        let r = store.prefetch(&[key, "other"], src, dst);
        assert_eq!(codes(&r), vec![-3000, -3000], "prefetch {src:?} -> {dst:?}");
    }
    assert_eq!(media(store, key), before);
}

#[test]
fn remove_all_empties_a_pool_of_processes_except_what_a_reader_holds() {
    const N: usize = 300;
    let (_meta, url) = start_meta(&[]);
    let (_local, _) = start_local(&url, "64MiB");
    wait_for_services(&url, 1);
    let client = pure_client(&url);
    let keys: Vec<String> = (0..N).map(|i| format!("k{i}")).collect();
    let values: Vec<Vec<u8>> = (0..N).map(|i| pattern(i as u64, 4096 + i)).collect();
    let bufs: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
    let put = client.batch_put_from(
        &keys,
        &bufs,
        CopyDirection::H2G,
        &ReplicateConfig::default(),
    );
    assert!(put.iter().all(|r| r.is_ok()));
    assert_eq!(stats(&url).objects, N as u64);

    // A reader holds k7: a lookup leases it until it is released. It maps this host's
    // segments, so it gets no data-plane capability whose range would be held back
    // after the release.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let link = MetaLink::new(parse_discovery(&url).unwrap(), Duration::from_secs(5));
    let k7 = Key::new("k7").unwrap();
    let held = rt
        .block_on(link.call(|rpc, ctx| {
            let k = k7.clone();
            async move {
                rpc.lookup(ctx, vec![k], 0, Some(host_id()), Vec::new())
                    .await
            }
        }))
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();

    assert_eq!(client.remove_all().unwrap(), N - 1);
    // It stays, as `remove` leaves it; everything else is gone.
    assert_eq!(code(&client.remove("k7")), -3104);
    assert_eq!(client.get("k7").unwrap(), values[7]);
    for k in ["k0", "k8", "k299"] {
        assert_eq!(client.is_exist(k), Ok(false), "{k}");
        assert_eq!(code(&client.get(k)), -3007, "{k}");
    }
    assert_eq!(stats(&url).objects, 1);
    // One decision: one call, not a removal per key.
    let calls = |m: &str| stats(&url).by_method.get(m).copied().unwrap_or(0);
    assert_eq!(calls("remove_all"), 1);

    rt.block_on(link.call(|rpc, ctx| {
        let leases = vec![(k7.clone(), held.lease)];
        async move { rpc.release(ctx, leases).await }
    }))
    .unwrap();
    assert_eq!(client.remove_all().unwrap(), 1);
    assert_eq!(client.remove_all().unwrap(), 0);
    let s = stats(&url);
    assert_eq!((s.objects, s.used_bytes), (0, 0));
    // The pool works on as before.
    client.put("after", b"value").unwrap();
    assert_eq!(client.get("after").unwrap(), b"value");
}

#[test]
fn evict_moves_objects_to_ssd_and_prefetch_brings_them_back() {
    const OBJ: usize = 256 << 10;
    let (_meta, url) = start_meta(&[]);
    let dir = data_dir("procs");
    let ssd = format!("ssd_dir={}", dir.display());
    let extra = ["--set", &ssd, "--set", "ssd_size=268435456"];
    let (local, _) = start_local_with(&url, "16MiB", &extra);
    wait_for_services(&url, 1);
    let client = pure_client(&url);
    let keys: Vec<String> = (0..8).map(|i| format!("obj{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        client.put(k, &pattern(i as u64, OBJ)).unwrap();
    }

    // At once after the puts: evict waits until the SSD tier has written them.
    let mut asked = keys.clone();
    asked.push("missing".into());
    let r = client.evict(&asked, Dram, Ssd);
    assert_eq!(codes(&r), [vec![0; 8], vec![-3007]].concat());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(media(&client, k), vec![Ssd], "{k}");
        assert_eq!(client.get(k).unwrap(), pattern(i as u64, OBJ), "{k}");
    }
    // Done already: nothing to do.
    assert_eq!(codes(&client.evict(&keys[..2], Dram, Ssd)), vec![0, 0]);
    check_bad_pairs(&client, &keys[0]);

    let r = client.prefetch(&["obj0", "obj1", "obj2", "missing"], Ssd, Dram);
    assert_eq!(codes(&r), vec![0, 0, 0, -3007]);
    for (i, k) in keys.iter().enumerate().take(3) {
        assert_eq!(media(&client, k), vec![Dram, Ssd], "{k}");
        assert_eq!(client.get(k).unwrap(), pattern(i as u64, OBJ), "{k}");
    }
    assert_eq!(media(&client, "obj5"), vec![Ssd]);
    assert_eq!(codes(&client.prefetch(&["obj0"], Ssd, Dram)), vec![0]);
    drop(local);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn evict_without_an_ssd_tier_is_refused_in_a_pool_of_processes() {
    let (_meta, url) = start_meta(&[]);
    let (_local, _) = start_local(&url, "16MiB");
    wait_for_services(&url, 1);
    let client = pure_client(&url);
    client.put("k", b"value").unwrap();
    let r = client.evict(&["k", "nope"], Dram, Ssd);
    assert_eq!(codes(&r), vec![-3013, -3007]);
    assert_eq!(media(&client, "k"), vec![Dram]);
    check_bad_pairs(&client, "k");
    assert_eq!(client.remove_all().unwrap(), 1);
}

#[test]
fn the_embedded_pool_without_an_ssd_tier() {
    let (pool, store) = started(16 * MIB);
    for i in 0..50 {
        store.put(format!("k{i}"), &pattern(i, 5000)).unwrap();
    }
    let r = store.evict(&["k1", "nope"], Dram, Ssd);
    assert_eq!(codes(&r), vec![-3013, -3007]);
    assert_eq!(media(&store, "k1"), vec![Dram]);
    // In DRAM already: nothing to prefetch.
    assert_eq!(
        codes(&store.prefetch(&["k1", "nope"], Ssd, Dram)),
        vec![0, -3007]
    );
    check_bad_pairs(&store, "k1");
    assert_eq!(store.remove_all().unwrap(), 50);
    assert_eq!(object_count(&pool), 0);
    assert_eq!(dram_usage(&pool).0, 0);
    assert_eq!(store.remove_all().unwrap(), 0);
    // Before init: -3019.
    let idle = client(&pool, 0);
    assert_eq!(code(&idle.remove_all()), -3019);
    assert_eq!(codes(&idle.evict(&["k1"], Dram, Ssd)), vec![-3019]);
}

#[test]
fn the_embedded_pool_with_an_ssd_tier() {
    const OBJ: usize = 64 << 10;
    let dir = data_dir("embedded");
    let pool = pool();
    let mut config = ClientConfig::with_dram(16 * MIB as u64);
    config.local.ssd_dir = Some(dir.clone());
    config.local.ssd_size = 64 * MIB as u64;
    let store = BlockingObjectStore::with_pool(config, pool.clone()).unwrap();
    store.init(0, true).unwrap();
    for i in 0..4 {
        store.put(format!("k{i}"), &pattern(i, OBJ)).unwrap();
    }
    let keys = ["k0", "k1", "k2", "k3"];
    assert_eq!(codes(&store.evict(&keys, Dram, Ssd)), vec![0; 4]);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(media(&store, k), vec![Ssd], "{k}");
        assert_eq!(store.get(k).unwrap(), pattern(i as u64, OBJ), "{k}");
    }
    assert_eq!(codes(&store.prefetch(&keys[..2], Ssd, Dram)), vec![0; 2]);
    assert_eq!(media(&store, "k0"), vec![Dram, Ssd]);
    assert_eq!(media(&store, "k3"), vec![Ssd]);
    assert_eq!(store.get("k0").unwrap(), pattern(0, OBJ));
    assert_eq!(store.remove_all().unwrap(), 4);
    assert_eq!(object_count(&pool), 0);
    store.tear_down().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Three `mmc meta` processes forming one group.
struct Group {
    /// The processes by node id.
    nodes: Vec<(u64, Proc)>,
    /// The nodes' addresses by id.
    addrs: Vec<(u64, String)>,
    url: String,
}

fn start_group() -> Group {
    let addrs: Vec<(u64, String)> = free_ports(3)
        .into_iter()
        .zip(1..)
        .map(|(p, id)| (id, format!("127.0.0.1:{p}")))
        .collect();
    let peers: Vec<String> = addrs.iter().map(|(id, a)| format!("{id}={a}")).collect();
    let peers = peers.join(",");
    let url: Vec<String> = addrs.iter().map(|(_, a)| format!("tcp://{a}")).collect();
    let nodes = addrs
        .iter()
        .map(|(id, _)| {
            let id_arg = id.to_string();
            let args = ["meta", "--id", &id_arg, "--peers", &peers];
            (*id, spawn_mmc_lines(&args, 2).0)
        })
        .collect();
    Group {
        nodes,
        addrs,
        url: url.join(","),
    }
}

/// The id of the node that leads, once one does.
fn leader_of(addrs: &[(u64, String)]) -> u64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut found = None;
    eventually("the group has a leader", || {
        found = addrs.iter().find_map(|(id, a)| {
            let role = rt.block_on(memcache_proto::ask_role(
                a.parse().unwrap(),
                Duration::from_millis(300),
            ));
            role.ok().filter(|r| r.role == "leader").map(|_| *id)
        });
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn remove_all_and_evict_go_through_the_log_and_survive_a_leader_change() {
    const OBJ: usize = 128 << 10;
    let Group {
        mut nodes,
        addrs,
        url,
    } = start_group();
    leader_of(&addrs);
    let dir = data_dir("group");
    let ssd = format!("ssd_dir={}", dir.display());
    let extra = ["--set", &ssd, "--set", "ssd_size=268435456"];
    let (local, _) = start_local_with(&url, "16MiB", &extra);
    wait_for_services(&url, 1);
    let client = pure_client(&url);
    for i in 0..40 {
        client.put(format!("gone{i}"), &pattern(i, 1000)).unwrap();
    }
    assert_eq!(client.remove_all().unwrap(), 40);
    let keys = ["keep0", "keep1", "keep2"];
    for (i, k) in keys.iter().enumerate() {
        client.put(k, &pattern(100 + i as u64, OBJ)).unwrap();
    }
    assert_eq!(codes(&client.evict(&keys, Dram, Ssd)), vec![0; 3]);

    // The leader goes; its successor applied the same log.
    let old = leader_of(&addrs);
    nodes.retain(|(id, _)| *id != old);
    let rest: Vec<(u64, String)> = addrs.into_iter().filter(|(id, _)| *id != old).collect();
    assert_ne!(leader_of(&rest), old);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(client.get(k).unwrap(), pattern(100 + i as u64, OBJ), "{k}");
        assert_eq!(media(&client, k), vec![Ssd], "{k}");
    }
    for i in [0, 17, 39] {
        assert_eq!(client.is_exist(format!("gone{i}")), Ok(false));
    }
    assert_eq!(stats(&url).objects, 3);
    drop(local);
    drop(nodes);
    std::fs::remove_dir_all(&dir).unwrap();
}
