//! Object lifetimes seen through the API: TTL expiry on the manual clock, eviction by
//! watermark and recency, replicas on distinct local services, and what leaves the
//! pool with a client that tears down.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use memcache_client::{CopyDirection, MetaConfig, PolicyKind, ReplicateConfig};

const H2G: CopyDirection = CopyDirection::H2G;
const G2H: CopyDirection = CopyDirection::G2H;

fn ttl(ms: u64) -> ReplicateConfig {
    ReplicateConfig {
        ttl: Some(Duration::from_millis(ms)),
        ..ReplicateConfig::default()
    }
}

#[test]
fn ttl_expiry_makes_the_object_invisible() {
    let (pool, store) = started(8 * MIB);
    let short = pattern(1, 20_000);
    let forever = pattern(2, 20_000);
    store.put_from("short", &short, H2G, &ttl(10_000)).unwrap();
    store.put("forever", &forever).unwrap();
    let batch = store.batch_put_from(&["b1", "b2"], &[&short, &short], H2G, &ttl(20_000));
    assert_eq!(codes(&batch), [0, 0]);

    pool.clock().advance_ms(9_999);
    assert_eq!(store.get("short").unwrap(), short);
    assert_eq!(store.is_exist("short"), Ok(true));

    pool.clock().advance_ms(1);
    assert_eq!(store.is_exist("short"), Ok(false));
    assert_eq!(code(&store.get("short")), -3007);
    let mut buf = vec![0x42u8; 20_000];
    assert_eq!(code(&store.get_into("short", &mut buf, G2H)), -3007);
    assert!(buf.iter().all(|&b| b == 0x42));
    assert_eq!(code(&store.get_key_info("short")), -3007);
    assert_eq!(code(&store.remove("short")), -3007);
    // The batch objects have their own, later deadline; the one without a TTL stays.
    assert_eq!(store.batch_is_exist(&["b1", "b2"]), [Ok(true), Ok(true)]);
    assert_eq!(store.get("forever").unwrap(), forever);

    pool.clock().advance_ms(10_000);
    assert_eq!(store.batch_is_exist(&["b1", "b2"]), [Ok(false), Ok(false)]);
    pool.clock().advance_ms(1_000_000);
    assert_eq!(store.get("forever").unwrap(), forever);
}

#[test]
fn an_expired_key_can_be_put_again_and_its_space_comes_back() {
    let (pool, store) = started(8 * MIB);
    let old = pattern(1, 100_000);
    let new = pattern(2, 50_000);
    store.put_from("k", &old, H2G, &ttl(1_000)).unwrap();
    store.put_from("other", &old, H2G, &ttl(1_000)).unwrap();
    pool.clock().advance_ms(1_000);
    assert_eq!(store.is_exist("k"), Ok(false));

    store.put("k", &new).unwrap();
    assert_eq!(store.get("k").unwrap(), new);
    assert_eq!(store.get_key_info("k").unwrap().size, 50_000);
    // Both expired objects are gone from the pool (freed by the put), only "k" is left.
    assert_eq!(object_count(&pool), 1);
    assert_eq!(dram_usage(&pool).0, pages_bytes(new.len()));
    // The new "k" has no TTL.
    pool.clock().advance_ms(1_000_000);
    assert_eq!(store.get("k").unwrap(), new);
}

/// Puts `n` 1 MiB objects `hot-0`.. through a 16 MiB pool with watermarks 80/60,
/// reading `hot-0` and `hot-1` after every put; returns the keys still present.
fn eviction_run(policy: PolicyKind) -> (BTreeSet<String>, u64) {
    let config = MetaConfig {
        evict_threshold_high: 80,
        evict_threshold_low: 60,
        eviction_policy: policy,
        ..MetaConfig::default()
    };
    let pool = pool_with(config);
    let store = started_on(&pool, 16 * MIB, 0);
    let key = |i: usize| {
        if i < 2 {
            format!("hot-{i}")
        } else {
            format!("cold-{i:02}")
        }
    };
    let n = 40;
    for i in 0..n {
        store.put(key(i), &pattern(i as u64, MIB)).unwrap();
        let (used, cap) = dram_usage(&pool);
        assert_eq!(cap, 16 * MIB as u64);
        assert!(
            used * 100 <= cap * 80,
            "after put {i}: {used} of {cap} bytes used"
        );
        for hot in 0..2.min(i + 1) {
            // Under LRU the hot keys are always there; under FIFO they may be gone.
            match store.get(key(hot)) {
                Ok(v) => assert_eq!(v, pattern(hot as u64, MIB)),
                Err(e) => assert_eq!(e.code(), -3007),
            }
        }
    }
    let present: BTreeSet<String> = (0..n)
        .map(key)
        .filter(|k| store.is_exist(k) == Ok(true))
        .collect();
    assert_eq!(present.len(), object_count(&pool));
    // Whatever is present reads back intact.
    for i in 0..n {
        if present.contains(&key(i)) {
            assert_eq!(store.get(key(i)).unwrap(), pattern(i as u64, MIB));
        }
    }
    let evicted = pool.meta().state().counters().evicted;
    (present, evicted)
}

#[test]
fn eviction_keeps_usage_under_the_high_watermark_and_drops_the_least_recently_used() {
    let (present, evicted) = eviction_run(PolicyKind::Lru);
    assert!(present.contains("hot-0"), "{present:?}");
    assert!(present.contains("hot-1"), "{present:?}");
    // Everything else present is the newest cold objects: a suffix of the put order.
    let cold: Vec<usize> = present
        .iter()
        .filter_map(|k| k.strip_prefix("cold-"))
        .map(|n| n.parse().unwrap())
        .collect();
    let first = *cold.first().unwrap();
    assert_eq!(cold, (first..40).collect::<Vec<_>>(), "{present:?}");
    // 16 MiB, high 80 % (12.8 objects), low 60 % (9.6 objects): between 9 and 12 stay.
    assert!((9..=12).contains(&present.len()), "{present:?}");
    assert_eq!(evicted as usize, 40 - present.len());
}

#[test]
fn fifo_eviction_ignores_reads() {
    let (present, evicted) = eviction_run(PolicyKind::Fifo);
    assert!(!present.contains("hot-0"), "{present:?}");
    assert!(!present.contains("hot-1"), "{present:?}");
    assert!((9..=12).contains(&present.len()), "{present:?}");
    assert_eq!(evicted as usize, 40 - present.len());
}

/// LFU, S3-FIFO and the hybrid (segmented LRU) keep objects that are read again, like
/// LRU, and stay within the watermarks.
#[test]
fn frequency_aware_policies_keep_the_objects_read_again() {
    for policy in [PolicyKind::Lfu, PolicyKind::S3fifo, PolicyKind::Hybrid] {
        let (present, evicted) = eviction_run(policy);
        assert!(present.contains("hot-0"), "{policy:?}: {present:?}");
        assert!(present.contains("hot-1"), "{policy:?}: {present:?}");
        assert!((9..=12).contains(&present.len()), "{policy:?}: {present:?}");
        assert_eq!(evicted as usize, 40 - present.len(), "{policy:?}");
    }
}

#[test]
fn replicas_live_on_distinct_services_and_survive_one_tear_down() {
    let pool = pool();
    let a = started_on(&pool, 8 * MIB, 0);
    let b = started_on(&pool, 8 * MIB, 1);
    let (ida, idb) = (
        a.get_local_service_id().unwrap(),
        b.get_local_service_id().unwrap(),
    );
    assert_ne!(ida, idb);

    let data = pattern(7, 300_000);
    a.put_from("two", &data, H2G, &ReplicateConfig::with_replicas(2))
        .unwrap();
    let info = a.get_key_info("two").unwrap();
    assert_eq!(info.locations.len(), 2);
    let services: BTreeSet<u32> = info.locations.iter().map(|l| l.service).collect();
    assert_eq!(services, BTreeSet::from([ida, idb]));
    let devices: BTreeSet<u32> = info.locations.iter().map(|l| l.device_id).collect();
    assert_eq!(devices, BTreeSet::from([0, 1]));
    // Each replica takes its own space.
    assert_eq!(dram_usage(&pool).0, 2 * pages_bytes(data.len()));
    assert_eq!(b.get("two").unwrap(), data);

    // Three replicas need three services.
    assert_eq!(
        code(&a.put_from("three", &data, H2G, &ReplicateConfig::with_replicas(3))),
        -3016
    );

    // The writer's own service leaves: the other replica still serves the object.
    a.tear_down().unwrap();
    assert_eq!(object_count(&pool), 1);
    let info = b.get_key_info("two").unwrap();
    assert_eq!(info.locations.len(), 1);
    assert_eq!(info.locations[0].service, idb);
    assert_eq!(b.get("two").unwrap(), data);
    let mut buf = vec![0u8; data.len()];
    assert_eq!(b.get_into("two", &mut buf, G2H), Ok(data.len() as u64));
    assert_eq!(buf, data);
    assert_eq!(dram_usage(&pool).0, pages_bytes(data.len()));
}

#[test]
fn replicas_survive_the_tear_down_of_the_reading_client() {
    let pool = pool();
    let a = started_on(&pool, 8 * MIB, 0);
    let b = started_on(&pool, 8 * MIB, 1);
    let data = pattern(8, 70_000);
    a.put_from("two", &data, H2G, &ReplicateConfig::with_replicas(2))
        .unwrap();
    b.tear_down().unwrap();
    assert_eq!(a.get("two").unwrap(), data);
    assert_eq!(a.get_key_info("two").unwrap().locations.len(), 1);
}

#[test]
fn a_client_that_tears_down_takes_its_single_replica_objects_away() {
    let pool = pool();
    let a = started_on(&pool, 8 * MIB, 0);
    let b = started_on(&pool, 8 * MIB, 1);
    let (ida, idb) = (
        a.get_local_service_id().unwrap(),
        b.get_local_service_id().unwrap(),
    );
    let on = |id: u32| ReplicateConfig {
        replica_num: 1,
        preferred_local_service_ids: vec![id],
        ttl: None,
        replace: false,
        medium: None,
    };
    let (da, db, both) = (pattern(1, 5000), pattern(2, 6000), pattern(3, 7000));
    b.put_from("on-a", &da, H2G, &on(ida)).unwrap();
    a.put_from("on-b", &db, H2G, &on(idb)).unwrap();
    a.put_from("both", &both, H2G, &ReplicateConfig::with_replicas(2))
        .unwrap();
    assert_eq!(a.get_key_info("on-a").unwrap().locations[0].service, ida);
    assert_eq!(a.get_key_info("on-b").unwrap().locations[0].service, idb);
    assert_eq!(object_count(&pool), 3);

    b.tear_down().unwrap();
    assert_eq!(a.is_exist("on-b"), Ok(false));
    assert_eq!(code(&a.get("on-b")), -3007);
    assert_eq!(code(&a.get_key_info("on-b")), -3007);
    assert_eq!(a.get("on-a").unwrap(), da);
    assert_eq!(a.get("both").unwrap(), both);
    assert_eq!(object_count(&pool), 2);
    assert_eq!(
        dram_usage(&pool),
        (pages_bytes(5000) + pages_bytes(7000), 8 * MIB as u64)
    );

    // The key is free again.
    a.put("on-b", &da).unwrap();
    assert_eq!(a.get("on-b").unwrap(), da);
}

#[test]
fn a_pure_client_reads_what_a_service_client_wrote_and_back() {
    let pool = pool();
    let server = started_on(&pool, 8 * MIB, 0);
    let pure = client(&pool, 8 * MIB);
    pure.init(0, false).unwrap();
    let data = pattern(9, 123_456);
    server.put("s", &data).unwrap();
    assert_eq!(pure.get("s").unwrap(), data);
    pure.put("p", &data[..1000]).unwrap();
    assert_eq!(server.get("p").unwrap(), &data[..1000]);
    // A pure client's tear_down takes nothing with it.
    pure.tear_down().unwrap();
    assert_eq!(object_count(&pool), 2);
    assert_eq!(server.batch_is_exist(&["s", "p"]), [Ok(true), Ok(true)]);
}

/// Free space can be fragmented: half the pool free, but in holes smaller than the new
/// object. The put must still succeed by evicting (nothing is leased), and must not
/// answer -3016 "no room and nothing left to evict" while evictable objects remain.
#[test]
fn eviction_makes_room_when_free_space_is_fragmented() {
    let config = MetaConfig {
        evict_threshold_high: 100,
        evict_threshold_low: 100,
        ..MetaConfig::default()
    };
    let pool = pool_with(config);
    let store = started_on(&pool, 4 * MIB, 0);
    let piece = 256 * KIB;
    for i in 0..16 {
        store.put(format!("p{i:02}"), &pattern(i, piece)).unwrap();
    }
    // Every other object leaves: 2 MiB free, in eight 256 KiB holes.
    for i in (1..16).step_by(2) {
        store.remove(format!("p{i:02}")).unwrap();
    }
    assert_eq!(dram_usage(&pool).0, 2 * MIB as u64);

    let big = pattern(100, 2 * MIB + 4096);
    let put = store.put("big", &big);
    let evicted = pool.meta().state().counters().evicted;
    assert_eq!(
        code(&put),
        0,
        "{put:?}; {evicted} object(s) evicted, {} left",
        object_count(&pool)
    );
    assert_eq!(store.get("big").unwrap(), big);
    // Whatever survived is intact.
    for i in (0..16).step_by(2) {
        let k = format!("p{i:02}");
        if store.is_exist(&k) == Ok(true) {
            assert_eq!(store.get(&k).unwrap(), pattern(i, piece), "{k}");
        }
    }
}

#[test]
fn a_store_dropped_without_tear_down_leaves_the_pool() {
    let pool = pool();
    let stays = started_on(&pool, 4 * MIB, 0);
    let forgotten = started_on(&pool, 4 * MIB, 1);
    let id = forgotten.get_local_service_id().unwrap();
    forgotten
        .put_from(
            "lost",
            &pattern(1, 1000),
            H2G,
            &ReplicateConfig {
                replica_num: 1,
                preferred_local_service_ids: vec![id],
                ttl: None,
                replace: false,
                medium: None,
            },
        )
        .unwrap();
    assert_eq!(pool.meta().state().services().count(), 2);
    drop(forgotten);
    assert_eq!(pool.meta().state().services().count(), 1);
    assert_eq!(stays.is_exist("lost"), Ok(false));
    assert_eq!(dram_usage(&pool), (0, 4 * MIB as u64));
}
