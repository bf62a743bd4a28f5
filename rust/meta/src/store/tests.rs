use super::*;
use crate::alloc::pages_for;
use memcache_core::{Blob, Medium, MAX_REPLICAS};

const MIB: u64 = 1 << 20;

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

fn dram(capacity: u64) -> SegmentSpec {
    SegmentSpec {
        medium: Medium::Dram,
        capacity,
        base: 0,
    }
}

/// A store with `services` local services of one DRAM segment each.
fn store(services: usize, capacity: u64, config: MetaConfig) -> MetaStore {
    let mut m = MetaStore::new(config).unwrap();
    m.record_journal();
    for _ in 0..services {
        m.register_service(None, 0, vec![dram(capacity)]).unwrap();
    }
    m
}

/// Allocates and commits one object; returns its blobs.
fn put(
    m: &mut MetaStore,
    k: &str,
    size: u64,
    cfg: &ReplicateConfig,
    now: u64,
) -> Result<Vec<Blob>> {
    let a = m.alloc(vec![(key(k), size)], cfg, now).pop().unwrap()?;
    m.commit(vec![(key(k), a.put_id)], now).pop().unwrap()?;
    Ok(a.blobs)
}

fn used_pct(m: &MetaStore) -> u64 {
    let (used, cap) = m.state().usage(Medium::Dram);
    used * 100 / cap
}

#[test]
fn put_is_invisible_until_commit_and_duplicates_are_refused() {
    let mut m = store(1, 64 * MIB, MetaConfig::default());
    let cfg = ReplicateConfig::default();
    let a = m
        .alloc(vec![(key("k"), 1000)], &cfg, 1)
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(m.exists(&[key("k")], 1), vec![Ok(false)]);
    assert_eq!(m.lookup(&[key("k")], 1)[0], Err(Error::ObjectNotFound));
    // A second writer of the same key while the first is in flight.
    assert_eq!(
        m.alloc(vec![(key("k"), 1000)], &cfg, 1)[0]
            .as_ref()
            .unwrap_err()
            .code(),
        -3006
    );
    m.commit(vec![(key("k"), a.put_id)], 2)[0].clone().unwrap();
    assert_eq!(m.exists(&[key("k")], 2), vec![Ok(true)]);
    assert_eq!(
        m.alloc(vec![(key("k"), 1000)], &cfg, 3)[0]
            .as_ref()
            .unwrap_err()
            .code(),
        -3006
    );
    // Both halves of a batch with the same key: the second is the duplicate.
    let r = m.alloc(vec![(key("d"), 10), (key("d"), 10)], &cfg, 3);
    assert!(r[0].is_ok());
    assert_eq!(r[1].as_ref().unwrap_err().code(), -3006);
}

#[test]
fn uncommitted_put_is_rolled_back_when_its_lease_ends() {
    let config = MetaConfig {
        put_lease: Duration::from_millis(100),
        ..Default::default()
    };
    let mut m = store(1, 64 * MIB, config);
    let a = m
        .alloc(vec![(key("k"), 8 * MIB)], &ReplicateConfig::default(), 1000)
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(m.state().usage(Medium::Dram).0, 8 * MIB);
    assert_eq!(m.reclaim(1099), 0, "lease still running");
    assert_eq!(m.reclaim(1100), 1);
    assert_eq!(m.state().usage(Medium::Dram).0, 0);
    assert!(m.state().object(b"k").is_none());
    // The writer's late commit is refused with a timeout and changes nothing.
    assert_eq!(
        m.commit(vec![(key("k"), a.put_id)], 1200)[0]
            .as_ref()
            .unwrap_err()
            .code(),
        -3004
    );
    assert_eq!(m.exists(&[key("k")], 1200), vec![Ok(false)]);
}

#[test]
fn replicas_go_to_distinct_services_and_preferences_are_honoured() {
    let mut m = store(4, 64 * MIB, MetaConfig::default());
    for n in 1..=4u32 {
        let blobs = put(
            &mut m,
            &format!("k{n}"),
            4096,
            &ReplicateConfig::with_replicas(n),
            1,
        )
        .unwrap();
        assert_eq!(blobs.len(), n as usize);
        let mut services: Vec<_> = blobs.iter().map(|b| b.service).collect();
        let mut segments: Vec<_> = blobs.iter().map(|b| b.segment).collect();
        services.sort();
        services.dedup();
        segments.sort();
        segments.dedup();
        assert_eq!(services.len(), n as usize);
        assert_eq!(segments.len(), n as usize);
    }
    let cfg = ReplicateConfig {
        replica_num: 2,
        preferred_local_service_ids: vec![3],
        ttl: None,
        replace: false,
        medium: None,
    };
    for i in 0..10 {
        let blobs = put(&mut m, &format!("p{i}"), 4096, &cfg, 1).unwrap();
        assert_eq!(blobs[0].service, 3);
        assert_ne!(blobs[1].service, 3);
    }
    // More replicas than services: refused without evicting anything.
    let before = m.state().object_count();
    let err = put(&mut m, "five", 4096, &ReplicateConfig::with_replicas(5), 1).unwrap_err();
    assert_eq!(err.code(), -3016);
    assert_eq!(m.state().object_count(), before);
    let err = put(
        &mut m,
        "nine",
        4096,
        &ReplicateConfig::with_replicas(MAX_REPLICAS as u32 + 1),
        1,
    )
    .unwrap_err();
    assert_eq!(err.code(), -3000);
}

#[test]
fn eviction_keeps_usage_between_the_watermarks() {
    let config = MetaConfig {
        evict_threshold_high: 70,
        evict_threshold_low: 50,
        ..Default::default()
    };
    let mut m = store(1, 100 * MIB, config);
    let cfg = ReplicateConfig::default();
    let mut seen_eviction = false;
    for i in 0..500 {
        let before = m.state().counters().evicted;
        put(&mut m, &format!("k{i}"), MIB, &cfg, i).unwrap();
        let pct = used_pct(&m);
        assert!(
            pct <= 70,
            "usage {pct}% above the high watermark after put {i}"
        );
        if m.state().counters().evicted > before {
            seen_eviction = true;
            assert!(
                pct <= 51,
                "eviction stopped at {pct}%, above the low watermark"
            );
        }
    }
    assert!(seen_eviction);
    // LRU: the most recent keys survive.
    assert_eq!(m.exists(&[key("k499")], 500), vec![Ok(true)]);
    assert_eq!(m.exists(&[key("k0")], 500), vec![Ok(false)]);
}

#[test]
fn a_memory_limit_holds_usage_under_it_and_is_refused_below_what_is_held() {
    let mut m = store(1, 100 * MIB, MetaConfig::default());
    let cfg = ReplicateConfig::default();
    for i in 0..30 {
        put(&mut m, &format!("a{i}"), MIB, &cfg, i).unwrap();
    }
    let used = m.state().memory_used();
    assert!(used >= 30 * MIB);
    // Below what is held: refused, and nothing changes.
    assert_eq!(m.set_memory_limit(10 * MIB).unwrap_err().code(), -3016);
    assert_eq!(m.memory_limit(), None);
    m.set_memory_limit(40 * MIB).unwrap();
    let mut seen_eviction = false;
    for i in 0..100 {
        let before = m.state().counters().evicted;
        put(&mut m, &format!("b{i}"), MIB, &cfg, 100 + i).unwrap();
        let used = m.state().memory_used();
        // The watermarks (90 % high, 80 % low) now count against the limit.
        assert!(used <= 40 * MIB * 9 / 10, "{used} bytes held after put {i}");
        seen_eviction |= m.state().counters().evicted > before;
    }
    assert!(seen_eviction);
    // LRU under the limit: the latest keys stay, the first ones went.
    assert_eq!(m.exists(&[key("b99")], 300), vec![Ok(true)]);
    assert_eq!(m.exists(&[key("a0")], 300), vec![Ok(false)]);
    // An object larger than the limit cannot be placed, whatever is evicted.
    let big = m
        .alloc(vec![(key("big"), 41 * MIB)], &cfg, 300)
        .pop()
        .unwrap();
    assert_eq!(big.unwrap_err().code(), -3016);
}

#[test]
fn eviction_never_takes_leased_or_uncommitted_objects() {
    let config = MetaConfig {
        evict_threshold_high: 80,
        evict_threshold_low: 40,
        ..Default::default()
    };
    let mut m = store(1, 10 * MIB, config);
    let cfg = ReplicateConfig::default();
    put(&mut m, "leased", MIB, &cfg, 1).unwrap();
    m.lookup(&[key("leased")], 1)[0].clone().unwrap();
    let pending = m
        .alloc(vec![(key("pending"), MIB)], &cfg, 1)
        .pop()
        .unwrap()
        .unwrap();
    for i in 0..40 {
        put(&mut m, &format!("k{i}"), MIB, &cfg, 2).unwrap();
    }
    assert!(m.state().counters().evicted > 0);
    assert_eq!(m.exists(&[key("leased")], 2), vec![Ok(true)]);
    assert!(m.state().object(b"pending").is_some());
    m.commit(vec![(key("pending"), pending.put_id)], 2)[0]
        .clone()
        .unwrap();
    // Only leased and in-flight objects left, pool full: -3016 and nothing changes.
    let mut m = store(1, 2 * MIB, MetaConfig::default());
    put(&mut m, "a", MIB, &cfg, 1).unwrap();
    let lease = m.lookup(&[key("a")], 1)[0].clone().unwrap().lease;
    m.alloc(vec![(key("b"), MIB)], &cfg, 1)[0].clone().unwrap();
    let fp = m.state().fingerprint();
    assert_eq!(
        m.alloc(vec![(key("c"), MIB)], &cfg, 2)[0]
            .as_ref()
            .unwrap_err()
            .code(),
        -3016
    );
    assert_eq!(m.state().fingerprint(), fp);
    // Once the reader releases, "a" may go.
    m.release(&[(key("a"), lease)]);
    m.alloc(vec![(key("c"), MIB)], &cfg, 3)[0].clone().unwrap();
    assert_eq!(m.exists(&[key("a")], 3), vec![Ok(false)]);
}

#[test]
fn remove_respects_leases() {
    let mut m = store(1, 16 * MIB, MetaConfig::default());
    let cfg = ReplicateConfig::default();
    put(&mut m, "k", 100, &cfg, 1).unwrap();
    let first = m.lookup(&[key("k")], 1)[0].clone().unwrap().lease;
    let second = m.lookup(&[key("k")], 1)[0].clone().unwrap().lease;
    assert_ne!(first, second);
    assert_eq!(
        m.remove(vec![key("k")], 2),
        vec![Err(Error::LeaseNotExpired)]
    );
    m.release(&[(key("k"), first)]);
    m.release(&[(key("k"), first)]); // twice: must not end the second reader's lease
    assert_eq!(
        m.remove(vec![key("k")], 2),
        vec![Err(Error::LeaseNotExpired)]
    );
    m.release(&[(key("k"), second)]);
    assert_eq!(m.remove(vec![key("k")], 2), vec![Ok(())]);
    assert_eq!(
        m.remove(vec![key("k")], 2),
        vec![Err(Error::ObjectNotFound)]
    );
    // A reader that never releases holds the object only until its lease ends.
    put(&mut m, "k", 100, &cfg, 10).unwrap();
    m.lookup(&[key("k")], 10)[0].clone().unwrap();
    let end = 10 + m.config().read_lease.as_millis() as u64;
    assert_eq!(
        m.remove(vec![key("k")], end - 1),
        vec![Err(Error::LeaseNotExpired)]
    );
    assert_eq!(m.remove(vec![key("k")], end), vec![Ok(())]);
}

#[test]
fn ttl_hides_objects_at_once_and_frees_them_lazily() {
    let mut m = store(1, 16 * MIB, MetaConfig::default());
    let cfg = ReplicateConfig {
        ttl: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    put(&mut m, "t", MIB, &cfg, 100).unwrap();
    assert_eq!(m.exists(&[key("t")], 149), vec![Ok(true)]);
    assert_eq!(m.exists(&[key("t")], 150), vec![Ok(false)]);
    assert_eq!(m.lookup(&[key("t")], 150)[0], Err(Error::ObjectNotFound));
    assert_eq!(m.key_info(&[key("t")], 150)[0].status, -3007);
    assert_eq!(m.state().usage(Medium::Dram).0, MIB, "freed lazily");
    // The key can be put again at once; the expired object is dropped by that put.
    put(&mut m, "t", 2 * MIB, &ReplicateConfig::default(), 151).unwrap();
    assert_eq!(m.state().usage(Medium::Dram).0, 2 * MIB);
    put(&mut m, "u", MIB, &cfg, 200).unwrap();
    assert_eq!(m.reclaim(300), 1);
    assert_eq!(m.state().usage(Medium::Dram).0, 2 * MIB);
}

#[test]
fn service_loss_drops_only_objects_without_a_replica() {
    let mut m = store(3, 16 * MIB, MetaConfig::default());
    let two = ReplicateConfig::with_replicas(2);
    let one = ReplicateConfig {
        replica_num: 1,
        preferred_local_service_ids: vec![1],
        ttl: None,
        replace: false,
        medium: None,
    };
    put(
        &mut m,
        "both",
        4096,
        &ReplicateConfig {
            preferred_local_service_ids: vec![1, 2],
            ..two
        },
        1,
    )
    .unwrap();
    put(&mut m, "only1", 4096, &one, 1).unwrap();
    assert_eq!(m.remove_service(1), Ok(1));
    assert_eq!(
        m.exists(&[key("both"), key("only1")], 2),
        vec![Ok(true), Ok(false)]
    );
    let info = &m.key_info(&[key("both")], 2)[0];
    assert_eq!(info.locations.len(), 1);
    assert_eq!(info.locations[0].service, 2);
    assert_eq!(m.remove_service(1).unwrap_err().code(), -3000);
}

#[test]
fn batch_limit_is_enforced() {
    let mut m = store(1, 16 * MIB, MetaConfig::default());
    let keys: Vec<Key> = (0..=MAX_BATCH_OP_COUNT)
        .map(|i| key(&i.to_string()))
        .collect();
    assert!(m
        .exists(&keys, 1)
        .iter()
        .all(|r| r.as_ref().unwrap_err().code() == -3000));
    let items = keys.into_iter().map(|k| (k, 1)).collect();
    let r = m.alloc(items, &ReplicateConfig::default(), 1);
    assert!(r.iter().all(|r| r.as_ref().unwrap_err().code() == -3000));
    assert_eq!(m.state().object_count(), 0);
}

#[test]
fn bad_config_is_refused() {
    for (hi, lo) in [(0, 0), (101, 50), (50, 60)] {
        let c = MetaConfig {
            evict_threshold_high: hi,
            evict_threshold_low: lo,
            ..Default::default()
        };
        assert_eq!(MetaStore::new(c).err().unwrap().code(), -3000);
    }
    let mut m = store(0, 0, MetaConfig::default());
    assert_eq!(
        m.register_service(None, 0, vec![]).unwrap_err().code(),
        -3000
    );
    assert_eq!(
        m.register_service(None, 0, vec![dram(100)])
            .unwrap_err()
            .code(),
        -3000
    );
    m.register_service(Some(7), 0, vec![dram(MIB)]).unwrap();
    assert_eq!(
        m.register_service(Some(7), 0, vec![dram(MIB)])
            .unwrap_err()
            .code(),
        -3005
    );
}

mod replay {
    //! Replicas that apply the leader's journal reach the leader's exact state.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put {
            k: u8,
            pages: u8,
            replicas: u8,
            ttl: bool,
        },
        Begin {
            k: u8,
            pages: u8,
        },
        /// A put under the store's lock (`MetaStore::put_now`).
        PutNow {
            k: u8,
            pages: u8,
            replace: bool,
            ttl: bool,
            fails: bool,
        },
        Get {
            k: u8,
        },
        Release {
            k: u8,
        },
        Remove {
            k: u8,
        },
        Tick {
            ms: u16,
        },
        KillService {
            s: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..24, 1u8..40, 1u8..4, any::<bool>()).prop_map(|(k, pages, replicas, ttl)| Op::Put { k, pages, replicas, ttl }),
            1 => (0u8..24, 1u8..40).prop_map(|(k, pages)| Op::Begin { k, pages }),
            3 => (0u8..24, 1u8..40, any::<bool>(), any::<bool>(), proptest::bool::weighted(0.1)).prop_map(|(k, pages, replace, ttl, fails)| Op::PutNow { k, pages, replace, ttl, fails }),
            2 => (0u8..24).prop_map(|k| Op::Get { k }),
            1 => (0u8..24).prop_map(|k| Op::Release { k }),
            2 => (0u8..24).prop_map(|k| Op::Remove { k }),
            1 => (0u16..3000).prop_map(|ms| Op::Tick { ms }),
            1 => (0u8..4).prop_map(|s| Op::KillService { s }),
        ]
    }

    proptest! {
        #[test]
        fn followers_replaying_the_journal_agree(ops in proptest::collection::vec(op(), 1..200)) {
            let config = MetaConfig { put_lease: Duration::from_millis(500), read_lease: Duration::from_millis(300), ..Default::default() };
            let mut leader = store(3, 256 * PAGE_SIZE, config);
            let mut now = 1u64;
            let mut held = Vec::new();
            for op in ops {
                match op {
                    Op::Put { k, pages, replicas, ttl } => {
                        let cfg = ReplicateConfig { replica_num: replicas as u32, preferred_local_service_ids: vec![], ttl: ttl.then(|| Duration::from_millis(700)), replace: false, medium: None };
                        // As the meta service does: write capabilities fence the put,
                        // until its owners revoke them (here for even sizes).
                        let k = key(&k.to_string());
                        if let Ok(a) = leader.alloc(vec![(k.clone(), pages as u64 * PAGE_SIZE - 1)], &cfg, now).pop().unwrap() {
                            leader.leader.fence(&k, Cap::Put(a.put_id), a.deadline_ms);
                            let _ = leader.commit(vec![(k.clone(), a.put_id)], now);
                            if pages % 2 == 0 {
                                leader.leader.unfence(&k, Cap::Put(a.put_id));
                            }
                        }
                    }
                    Op::Begin { k, pages } => {
                        let _ = leader.alloc(vec![(key(&k.to_string()), pages as u64 * PAGE_SIZE)], &ReplicateConfig::default(), now);
                    }
                    Op::PutNow { k, pages, replace, ttl, fails } => {
                        let cfg = ReplicateConfig { ttl: ttl.then(|| Duration::from_millis(700)), replace, ..ReplicateConfig::default() };
                        let write = |_: &[Blob]| if fails { Err(Error::Failed("write".into())) } else { Ok(()) };
                        let _ = leader.put_now(k.to_string().as_bytes(), pages as u64 * PAGE_SIZE - 7, &cfg, now, |_| true, write);
                    }
                    Op::Get { k } => {
                        if let Ok(l) = &leader.lookup(&[key(&k.to_string())], now)[0] {
                            leader.leader.fence(&key(&k.to_string()), Cap::Read(l.lease), l.until_ms);
                            held.push((key(&k.to_string()), l.lease));
                        }
                    }
                    Op::Release { k } => {
                        if !held.is_empty() {
                            let l = held.swap_remove(k as usize % held.len());
                            leader.release(&[l]);
                        }
                    }
                    Op::Remove { k } => { let _ = leader.remove(vec![key(&k.to_string())], now); }
                    Op::Tick { ms } => { now += ms as u64; leader.reclaim(now); }
                    Op::KillService { s } => { let _ = leader.remove_service(s as u32); }
                }
                let (used, _) = leader.state().usage(Medium::Dram);
                let blob_bytes: u64 = leader.state().objects().flat_map(|(_, o)| o.blobs.iter()).map(|b| pages_for(b.len) * PAGE_SIZE).sum();
                let sm = leader.state();
                let held_bytes: u64 = sm.quarantined().filter(|q| sm.segment(q.1).is_some()).map(|q| pages_for(q.3) * PAGE_SIZE).sum();
                prop_assert_eq!(used, blob_bytes + held_bytes, "allocators, directory and quarantine disagree");
            }
            check_replay(&mut leader);
        }
    }
}

#[test]
fn absurd_sizes_are_refused_without_side_effects() {
    let mut m = store(1, 16 * MIB, MetaConfig::default());
    let cfg = ReplicateConfig::default();
    put(&mut m, "keep", MIB, &cfg, 1).unwrap();
    let fp = m.state().fingerprint();
    for size in [u64::MAX, u64::MAX - 1, MAX_OBJECT_BYTES + 1] {
        let r = m.alloc(vec![(key("big"), size)], &cfg, 2);
        assert_eq!(r[0].as_ref().unwrap_err().code(), -3000);
    }
    // Larger than every segment: no eviction can help, so none happens.
    let r = m.alloc(vec![(key("big"), 17 * MIB)], &cfg, 2);
    assert_eq!(r[0].as_ref().unwrap_err().code(), -3016);
    assert_eq!(m.state().fingerprint(), fp);
}

#[test]
fn a_registration_with_absurd_sizes_or_counts_is_refused_without_side_effects() {
    let mut m = store(1, 16 * MIB, MetaConfig::default());
    let fp = m.state().fingerprint();
    let ssd = |capacity| SegmentSpec {
        medium: Medium::Ssd,
        capacity,
        base: 0,
    };
    let found = |size| Recovered {
        key: key("r"),
        size,
        record: 0,
        expires_ms: None,
    };
    let joins = [
        (vec![dram(u64::MAX)], vec![]),
        (vec![dram(MAX_SEGMENT_BYTES + 1)], vec![]),
        (vec![dram(MIB); MAX_SEGMENTS_PER_SERVICE + 1], vec![]),
        (vec![dram(MIB), ssd(MIB)], vec![found(u64::MAX)]),
        (vec![dram(MIB), ssd(MIB)], vec![found(MIB + 1)]),
        (vec![dram(MIB), ssd(MIB)], vec![found(0)]),
        (vec![dram(MIB), ssd(MIB)], vec![found(1); 257]),
        (vec![dram(MIB), ssd(MIB)], vec![found(MIB / 2 + 1); 2]),
    ];
    for (segments, recovered) in joins {
        let what = format!("{segments:?} {recovered:?}");
        let joining = Joining {
            requested: None,
            device_id: 0,
            segments,
            recovered,
        };
        let r = m.join(joining, 1);
        assert_eq!(r.err().map(|e| e.code()), Some(-3000), "{what}");
        assert_eq!(m.state().fingerprint(), fp, "{what}");
    }
    // What fits is taken.
    let joining = Joining {
        requested: None,
        device_id: 0,
        segments: vec![dram(MIB), ssd(MIB)],
        recovered: vec![found(MIB)],
    };
    assert_eq!(m.join(joining, 1).unwrap().2, vec![true]);
}

/// A state machine handed a recovered object of size `u64::MAX` (a command from a
/// leader that did not check it) refuses it instead of overflowing.
#[test]
fn the_state_machine_refuses_a_recovered_size_that_overflows() {
    let mut sm = StateMachine::new(PolicyKind::Lru);
    let applied = sm.apply(Command::RegisterService {
        service: 1,
        device_id: 0,
        segments: vec![
            dram(MIB),
            SegmentSpec {
                medium: Medium::Ssd,
                capacity: MIB,
                base: 0,
            },
        ],
        first_segment: 1,
        attachment: Vec::new(),
        now_ms: 0,
        recovered: vec![Recovered {
            key: key("r"),
            size: u64::MAX,
            record: 0,
            expires_ms: None,
        }],
    });
    let Applied::Registered(Ok((_, taken))) = applied else {
        panic!("{applied:?}");
    };
    assert_eq!(taken, vec![false]);
    assert_eq!(sm.object_count(), 0);
}

/// A store with one local service of a DRAM and an SSD segment.
fn tiered(dram_bytes: u64, ssd_bytes: u64) -> MetaStore {
    let mut m = MetaStore::new(MetaConfig::default()).unwrap();
    m.record_journal();
    let ssd = SegmentSpec {
        medium: Medium::Ssd,
        capacity: ssd_bytes,
        base: 0,
    };
    m.register_service(None, 0, vec![dram(dram_bytes), ssd])
        .unwrap();
    m
}

/// Stores everything the SSD tier is handed, as records numbered from `first`.
fn store_all(m: &mut MetaStore, first: u64, now: u64) -> usize {
    let work = m.ssd_work(0, 100_000);
    let items: Vec<(Key, PutId, u64)> = work
        .store
        .iter()
        .enumerate()
        .map(|(i, t)| (t.key.clone(), t.put, first + i as u64))
        .collect();
    let n = items.len();
    assert!(m.stored(0, items, 0, now).iter().all(|r| r.is_ok()));
    n
}

#[test]
fn every_committed_object_is_handed_to_the_ssd_tier_once_until_stored() {
    let mut m = tiered(64 * MIB, 256 * MIB);
    let cfg = ReplicateConfig::default();
    for i in 0..300 {
        put(&mut m, &format!("k{i}"), 1000 + i, &cfg, 10 + i / 7).unwrap();
    }
    let work = m.ssd_work(0, 100_000);
    assert_eq!(work.store.len(), 300);
    assert!(work.trash.is_empty());
    assert_eq!(store_all(&mut m, 1, 100), 300);
    assert!(m.ssd_work(0, 100_000).store.is_empty());
    let located = m.lookup(&[key("k5")], 101).pop().unwrap().unwrap();
    let media: Vec<Medium> = located.blobs.iter().map(|b| b.medium).collect();
    assert_eq!(media, vec![Medium::Dram, Medium::Ssd]);
    // A removed object's record goes to the trash, for the tier to erase.
    m.release(&[(key("k5"), located.lease)]);
    m.remove(vec![key("k5")], 102).pop().unwrap().unwrap();
    let work = m.ssd_work(0, 100_000);
    assert_eq!(work.trash, vec![(located.blobs[1].offset, key("k5"))]);
    // Erasing it is reported by number, and a repeated report changes nothing.
    for _ in 0..2 {
        m.stored(0, vec![], work.trash_from + 1, 103);
        assert!(m.ssd_work(0, 100_000).trash.is_empty());
    }
    check_replay(&mut m);
}

/// Replaying the journal (through the wire format, as a replicated log would carry
/// it), and restoring a snapshot of the result, reach the leader's state.
fn check_replay(m: &mut MetaStore) {
    let mut follower = StateMachine::new(PolicyKind::Lru);
    for cmd in m.take_journal() {
        let wire = serde_json::to_vec(&cmd).unwrap();
        follower.apply(serde_json::from_slice(&wire).unwrap());
    }
    assert_eq!(follower.fingerprint(), m.state().fingerprint());
    let wire = serde_json::to_vec(&follower.image()).unwrap();
    let restored = StateMachine::from_image(serde_json::from_slice(&wire).unwrap());
    assert_eq!(restored.fingerprint(), m.state().fingerprint());
}

#[test]
fn eviction_from_dram_demotes_stored_objects_and_hot_ones_come_back() {
    let mut m = tiered(MIB, 64 * MIB);
    let cfg = ReplicateConfig::default();
    for i in 0..10 {
        put(&mut m, &format!("old{i}"), 64 << 10, &cfg, 10).unwrap();
    }
    assert_eq!(store_all(&mut m, 1, 11), 10);
    // Filling DRAM evicts the old objects; on SSD they stay readable.
    for i in 0..30 {
        put(&mut m, &format!("new{i}"), 64 << 10, &cfg, 20 + i).unwrap();
    }
    assert!(m.state().counters().demoted >= 10);
    let got = m.lookup(&[key("old0")], 60).pop().unwrap().unwrap();
    assert_eq!(got.blobs.len(), 1);
    assert_eq!(got.blobs[0].medium, Medium::Ssd);
    assert!(m.promote(0, 256, 60).is_empty(), "read once: not hot yet");
    // Read again: hot. Eviction made room below the high watermark to copy it into.
    m.release(&[(key("old0"), got.lease)]);
    let again = m.lookup(&[key("old0")], 61).pop().unwrap().unwrap();
    m.release(&[(key("old0"), again.lease)]);
    let todo = m.promote(0, 256, 62);
    assert_eq!(todo.len(), 1);
    assert_eq!((todo[0].key.clone(), todo[0].record), (key("old0"), 1));
    assert_eq!(todo[0].blob.medium, Medium::Dram);
    // Readers see the memory only once it is filled.
    let before = m.lookup(&[key("old0")], 63).pop().unwrap().unwrap();
    assert_eq!(before.blobs.len(), 1);
    m.release(&[(key("old0"), before.lease)]);
    let done = m.promoted(vec![(key("old0"), todo[0].put)]);
    assert_eq!(done, vec![Ok(())]);
    let after = m.lookup(&[key("old0")], 64).pop().unwrap().unwrap();
    let media: Vec<Medium> = after.blobs.iter().map(|b| b.medium).collect();
    assert_eq!(media, vec![Medium::Dram, Medium::Ssd]);
    assert_eq!(m.state().counters().promoted, 1);
    check_replay(&mut m);
}

#[test]
fn a_full_ssd_tier_drops_its_oldest_replicas() {
    // Room on SSD for 8 objects of 64 KiB (90 % of 576 KiB).
    let mut m = tiered(16 * MIB, 9 * (64 << 10));
    let cfg = ReplicateConfig::default();
    for i in 0..12 {
        put(&mut m, &format!("k{i}"), 64 << 10, &cfg, 10 + i).unwrap();
        store_all(&mut m, 100 + i, 30);
    }
    let (used, cap) = m.state().usage(Medium::Ssd);
    assert!(used * 100 <= cap * 90, "SSD at {used} of {cap}");
    // The oldest lost their SSD replica (their records are in the trash) but are
    // still in DRAM.
    let k0 = m.lookup(&[key("k0")], 40).pop().unwrap().unwrap();
    assert!(k0.blobs.iter().all(|b| b.medium == Medium::Dram));
    let trash = m.ssd_work(0, 100).trash;
    assert!(
        trash.iter().any(|(id, k)| (*id, k) == (100, &key("k0"))),
        "{trash:?}"
    );
    check_replay(&mut m);
}

fn media_of(m: &MetaStore, k: &str, now: u64) -> Vec<Medium> {
    let info = m.key_info(&[key(k)], now).pop().unwrap();
    assert_eq!(info.status, 0, "{k}");
    info.locations.iter().map(|l| l.medium).collect()
}

#[test]
fn remove_all_removes_every_unleased_object_in_one_decision() {
    let mut m = store(2, 64 * MIB, MetaConfig::default());
    let cfg = ReplicateConfig::with_replicas(2);
    for i in 0..500 {
        put(&mut m, &format!("k{i}"), 4096, &cfg, 10).unwrap();
    }
    let held = m.lookup(&[key("k7")], 11).pop().unwrap().unwrap();
    let in_flight = m.alloc(vec![(key("pending"), 4096)], &cfg, 11).pop();
    assert!(in_flight.unwrap().is_ok());
    let mut journal = m.take_journal();
    assert_eq!(m.remove_all(12), 499);
    // One command: the leader decided it at once.
    let step = m.take_journal();
    assert_eq!(step.len(), 1);
    assert!(matches!(&step[0], Command::Remove { keys, .. } if keys.len() == 499));
    journal.extend(step);
    // The object a reader holds stays (as `remove` leaves it), and so does the put
    // in flight; everything else is gone and its space free.
    assert_eq!(
        m.exists(&[key("k7"), key("k8")], 13),
        vec![Ok(true), Ok(false)]
    );
    assert_eq!(m.state().object_count(), 2);
    assert_eq!(m.state().counters().removed, 499);
    m.release(&[(key("k7"), held.lease)]);
    assert_eq!(m.remove_all(14), 1);
    assert_eq!(m.remove_all(15), 0);
    let (used, _) = m.state().usage(Medium::Dram);
    assert_eq!(used, 2 * 4096, "only the put in flight holds space");
    journal.extend(m.take_journal());
    let mut follower = StateMachine::new(PolicyKind::Lru);
    for cmd in journal {
        follower.apply(cmd);
    }
    assert_eq!(follower.fingerprint(), m.state().fingerprint());
}

#[test]
fn remove_all_splits_a_huge_pool_into_bounded_commands() {
    let mut m = store(1, 2048 * MIB, MetaConfig::default());
    let cfg = ReplicateConfig::default();
    let n = REMOVE_ALL_CHUNK + 10;
    let items: Vec<(Key, u64)> = (0..n).map(|i| (key(&format!("k{i}")), 4096)).collect();
    let mut done = Vec::new();
    for chunk in items.chunks(MAX_BATCH_OP_COUNT) {
        for (a, (k, _)) in m.alloc(chunk.to_vec(), &cfg, 1).into_iter().zip(chunk) {
            done.push((k.clone(), a.unwrap().put_id));
        }
    }
    for chunk in done.chunks(MAX_BATCH_OP_COUNT) {
        assert!(m.commit(chunk.to_vec(), 2).iter().all(|r| r.is_ok()));
    }
    m.take_journal();
    assert_eq!(m.remove_all(3), n);
    assert_eq!(m.take_journal().len(), 2);
    assert_eq!(m.state().object_count(), 0);
}

#[test]
fn evict_waits_for_the_ssd_copy_then_drops_the_dram_replica() {
    let mut m = tiered(64 * MIB, 256 * MIB);
    let cfg = ReplicateConfig::default();
    for i in 0..50 {
        put(&mut m, &format!("old{i}"), 8192, &cfg, 10).unwrap();
    }
    put(&mut m, "k", 10_000, &cfg, 11).unwrap();
    let (dram, ssd) = (Medium::Dram, Medium::Ssd);
    // Not on SSD yet: the SSD tier gets it before its older backlog.
    let r = m.evict(vec![key("k")], dram, ssd, 12);
    assert!(
        matches!(&r[0], Ok(TierMove::Waiting(Error::Timeout(_)))),
        "{r:?}"
    );
    assert_eq!(m.ssd_work(0, 1).store[0].key, key("k"));
    assert_eq!(media_of(&m, "k", 12), vec![dram]);
    store_all(&mut m, 1, 13);
    // On SSD: its DRAM replica goes, and reads find it on SSD.
    assert_eq!(
        m.evict(vec![key("k")], dram, ssd, 14),
        vec![Ok(TierMove::Done)]
    );
    assert_eq!(media_of(&m, "k", 14), vec![ssd]);
    let got = m.lookup(&[key("k")], 15).pop().unwrap().unwrap();
    assert_eq!(got.blobs.len(), 1);
    assert_eq!(got.blobs[0].medium, ssd);
    assert_eq!(m.state().counters().demoted, 1);
    // Again: nothing left to do.
    assert_eq!(
        m.evict(vec![key("k")], dram, ssd, 16),
        vec![Ok(TierMove::Done)]
    );
    // A leased object waits for its reader; a missing key is not found.
    let held = m.lookup(&[key("old3")], 17).pop().unwrap().unwrap();
    let r = m.evict(vec![key("old3"), key("nope")], dram, ssd, 18);
    assert_eq!(r[0], Ok(TierMove::Waiting(Error::LeaseNotExpired)));
    assert_eq!(r[1], Err(Error::ObjectNotFound));
    m.release(&[(key("old3"), held.lease)]);
    assert_eq!(
        m.evict(vec![key("old3")], dram, ssd, 19),
        vec![Ok(TierMove::Done)]
    );
    assert_eq!(media_of(&m, "old3", 19), vec![ssd]);
    // Only DRAM → SSD.
    for (src, dst) in [(ssd, dram), (dram, dram), (Medium::Hbm, ssd)] {
        let r = m.evict(vec![key("old4")], src, dst, 20);
        assert_eq!(
            r[0].as_ref().unwrap_err().code(),
            -3000,
            "{src:?} -> {dst:?}"
        );
    }
    check_replay(&mut m);
}

#[test]
fn evict_without_an_ssd_tier_is_refused() {
    let mut m = store(1, 64 * MIB, MetaConfig::default());
    put(&mut m, "k", 4096, &ReplicateConfig::default(), 1).unwrap();
    let r = m.evict(vec![key("k")], Medium::Dram, Medium::Ssd, 2);
    assert_eq!(r[0].as_ref().unwrap_err().code(), -3013);
    assert_eq!(media_of(&m, "k", 2), vec![Medium::Dram]);
}

#[test]
fn a_demote_that_meets_no_ssd_replica_changes_nothing() {
    let mut sm = StateMachine::new(PolicyKind::Lru);
    let mut m = tiered(64 * MIB, 256 * MIB);
    put(&mut m, "k", 4096, &ReplicateConfig::default(), 1).unwrap();
    for cmd in m.take_journal() {
        sm.apply(cmd);
    }
    let fp = sm.fingerprint();
    let cmd = Command::Demote {
        now_ms: 2,
        keys: vec![key("k"), key("nope")],
        holds: vec![],
    };
    let Applied::Demoted(r) = sm.apply(cmd) else {
        panic!("not a demotion")
    };
    assert_eq!(r[0].as_ref().unwrap_err().code(), -3101);
    assert_eq!(r[1], Err(Error::ObjectNotFound));
    assert_eq!(sm.fingerprint(), fp);
}

#[test]
fn prefetch_copies_an_ssd_only_object_back_into_dram() {
    let mut m = tiered(MIB, 64 * MIB);
    let cfg = ReplicateConfig::default();
    let (dram, ssd) = (Medium::Dram, Medium::Ssd);
    put(&mut m, "k", 64 << 10, &cfg, 10).unwrap();
    store_all(&mut m, 1, 11);
    assert_eq!(
        m.evict(vec![key("k")], dram, ssd, 12),
        vec![Ok(TierMove::Done)]
    );
    // Fill DRAM past the high watermark: colder objects make room for it.
    for i in 0..16 {
        put(&mut m, &format!("fill{i}"), 64 << 10, &cfg, 13).unwrap();
    }
    let r = m.prefetch(&[key("k"), key("nope")], ssd, dram, 14);
    assert!(matches!(&r[0], Ok(TierMove::Waiting(_))), "{r:?}");
    assert_eq!(r[1], Err(Error::ObjectNotFound));
    // Asked twice before the tier's round: queued once.
    m.prefetch(&[key("k")], ssd, dram, 14);
    let todo = m.promote(0, 256, 15);
    assert_eq!(todo.len(), 1);
    assert_eq!((todo[0].key.clone(), todo[0].blob.medium), (key("k"), dram));
    // Copying: still waiting, and not queued again.
    let r = m.prefetch(&[key("k")], ssd, dram, 16);
    assert!(matches!(&r[0], Ok(TierMove::Waiting(_))), "{r:?}");
    assert!(m.promote(0, 256, 16).is_empty());
    assert_eq!(m.promoted(vec![(key("k"), todo[0].put)]), vec![Ok(())]);
    assert_eq!(
        m.prefetch(&[key("k")], ssd, dram, 17),
        vec![Ok(TierMove::Done)]
    );
    assert_eq!(media_of(&m, "k", 17), vec![dram, ssd]);
    let bad = m.prefetch(&[key("k")], dram, ssd, 18);
    assert_eq!(bad[0].as_ref().unwrap_err().code(), -3000);
    check_replay(&mut m);
}

#[test]
fn remove_all_leaves_an_object_its_ssd_tier_is_copying_back() {
    let mut m = tiered(16 * MIB, 64 * MIB);
    let cfg = ReplicateConfig::default();
    let (dram, ssd) = (Medium::Dram, Medium::Ssd);
    put(&mut m, "k", 8192, &cfg, 10).unwrap();
    put(&mut m, "x", 8192, &cfg, 10).unwrap();
    store_all(&mut m, 1, 11);
    assert_eq!(
        m.evict(vec![key("k")], dram, ssd, 12),
        vec![Ok(TierMove::Done)]
    );
    m.prefetch(&[key("k")], ssd, dram, 13);
    let todo = m.promote(0, 256, 14);
    assert_eq!(todo.len(), 1);
    // The tier writes the staged memory until it reports: nothing frees it meanwhile.
    assert_eq!(m.remove_all(15), 1);
    assert_eq!(
        m.exists(&[key("k"), key("x")], 15),
        vec![Ok(true), Ok(false)]
    );
    assert_eq!(m.promoted(vec![(key("k"), todo[0].put)]), vec![Ok(())]);
    assert_eq!(m.remove_all(16), 1);
    assert_eq!(m.state().object_count(), 0);
    assert_eq!(m.state().usage(dram).0, 0);
    check_replay(&mut m);
}

/// A range freed while a capability may still reach it (here: a committed put's write
/// capability not yet revoked, then a released read lease's) is not handed to another
/// object until the hold passes; revoked or never-issued capabilities hold nothing.
#[test]
fn a_range_freed_early_is_quarantined_until_its_capabilities_expire() {
    let config = MetaConfig {
        put_lease: Duration::from_millis(10_000),
        clock_skew: Duration::from_millis(1_000),
        ..MetaConfig::default()
    };
    let mut m = store(1, 64 * PAGE_SIZE, config);
    let cfg = ReplicateConfig::default();
    let alloc = |m: &mut MetaStore, k: &str, now: u64| {
        let a = m
            .alloc(vec![(key(k), 4096)], &cfg, now)
            .pop()
            .unwrap()
            .unwrap();
        m.commit(vec![(key(k), a.put_id)], now)
            .pop()
            .unwrap()
            .unwrap();
        a
    };
    // Written through the data plane: its put's capability lasts until its deadline.
    let a = alloc(&mut m, "a", 100);
    assert_eq!(a.deadline_ms, 10_100);
    m.leader.fence(&key("a"), Cap::Put(a.put_id), a.deadline_ms);
    m.remove(vec![key("a")], 200).pop().unwrap().unwrap();
    let held: Vec<_> = m.state().quarantined().cloned().collect();
    assert_eq!(
        held,
        vec![(
            11_100,
            a.blobs[0].segment,
            a.blobs[0].offset,
            4096,
            key("a")
        )]
    );
    // Not reused before the hold passes, whatever is put meanwhile …
    for (i, now) in [300, 5_000, 11_099].into_iter().enumerate() {
        let b = alloc(&mut m, &format!("b{i}"), now);
        assert_ne!(b.blobs[0].offset, a.blobs[0].offset, "reused at {now}");
        m.remove(vec![key(&format!("b{i}"))], now)
            .pop()
            .unwrap()
            .unwrap();
    }
    assert_eq!(m.state().quarantined().count(), 1);
    // … and back with the first command at or after it.
    let c = alloc(&mut m, "c", 11_100);
    assert_eq!(m.state().quarantined().count(), 0);
    assert_eq!(c.blobs[0].offset, a.blobs[0].offset);
    // Revoked by its owner (after the commit): nothing to hold.
    m.leader.fence(&key("c"), Cap::Put(c.put_id), c.deadline_ms);
    m.leader.unfence(&key("c"), Cap::Put(c.put_id));
    m.remove(vec![key("c")], 11_200).pop().unwrap().unwrap();
    assert_eq!(m.state().quarantined().count(), 0);
    // A released read lease still fences its range until its end (plus the margin).
    let d = alloc(&mut m, "d", 12_000);
    let l = m.lookup(&[key("d")], 12_000).pop().unwrap().unwrap();
    m.leader.fence(&key("d"), Cap::Read(l.lease), l.until_ms);
    m.release(&[(key("d"), l.lease)]);
    m.remove(vec![key("d")], 12_001).pop().unwrap().unwrap();
    let until = l.until_ms + 1_000;
    let held: Vec<_> = m.state().quarantined().cloned().collect();
    assert_eq!(
        held,
        vec![(until, d.blobs[0].segment, d.blobs[0].offset, 4096, key("d"))]
    );
    // A snapshot carries the quarantine.
    let wire = serde_json::to_vec(&m.state().image()).unwrap();
    let restored = StateMachine::from_image(serde_json::from_slice(&wire).unwrap());
    assert_eq!(restored.fingerprint(), m.state().fingerprint());
    assert!(restored.quarantined().eq(m.state().quarantined()));
    // Once its owners revoked the lease (it was released), the range goes back before
    // the hold ends, by the leader's next housekeeping.
    m.leader.unfence(&key("d"), Cap::Read(l.lease));
    m.reclaim(12_002);
    assert_eq!(m.state().quarantined().count(), 0);
    let e = alloc(&mut m, "reuse", 12_003);
    assert_eq!(e.blobs[0].offset, d.blobs[0].offset);
    // The quarantine is replicated state: replay and snapshot agree on it.
    check_replay(&mut m);
    // A rollback at the deadline holds only for the skew margin.
    let mut fresh = store(
        1,
        64 * PAGE_SIZE,
        MetaConfig {
            clock_skew: Duration::from_millis(1_000),
            ..MetaConfig::default()
        },
    );
    let e = fresh
        .alloc(vec![(key("e"), 4096)], &cfg, 0)
        .pop()
        .unwrap()
        .unwrap();
    fresh
        .leader
        .fence(&key("e"), Cap::Put(e.put_id), e.deadline_ms);
    fresh.reclaim(e.deadline_ms);
    let held: Vec<_> = fresh.state().quarantined().map(|q| q.0).collect();
    assert_eq!(held, vec![e.deadline_ms + 1_000]);
    fresh.reclaim(e.deadline_ms + 1_000);
    assert_eq!(fresh.state().quarantined().count(), 0);
    check_replay(&mut fresh);
}

/// The planner counts a fenced victim's memory as no room (it goes to quarantine), so
/// it evicts others, and the plan and `apply` agree.
#[test]
fn eviction_looks_past_fenced_victims() {
    let config = MetaConfig {
        evict_threshold_high: 100,
        evict_threshold_low: 100,
        ..MetaConfig::default()
    };
    let mut m = store(1, 4 * PAGE_SIZE, config);
    let cfg = ReplicateConfig::default();
    for (i, now) in [(0, 1), (1, 2), (2, 3), (3, 4)] {
        put(&mut m, &format!("k{i}"), PAGE_SIZE, &cfg, now).unwrap();
    }
    // The coldest is still fenced: the next coldest goes.
    m.leader.fence(&key("k0"), Cap::Read(1), 100_000);
    put(&mut m, "new", PAGE_SIZE, &cfg, 10).unwrap();
    assert_eq!(
        m.exists(&[key("k0"), key("k1")], 10),
        vec![Ok(true), Ok(false)]
    );
    check_replay(&mut m);
}

/// A lease-less read sees what a lookup sees: a committed object's blobs, nothing for
/// a put in flight or a removed key; and it takes no lease, so a remove right after
/// it goes through.
#[test]
fn a_read_under_the_store_sees_what_a_lookup_sees_and_holds_nothing() {
    let mut m = store(1, 64 * MIB, MetaConfig::default());
    let cfg = ReplicateConfig::default();
    let blobs = put(&mut m, "k", 5000, &cfg, 1).unwrap();
    let seen = m.read_now(key("k").as_bytes(), 2, |size, b| (size, b.to_vec()));
    assert_eq!(seen, Some(Ok((5000, blobs))));
    m.alloc(vec![(key("j"), 100)], &cfg, 2)
        .pop()
        .unwrap()
        .unwrap();
    let unseen = m.read_now(key("j").as_bytes(), 2, |_, _| unreachable!("in flight"));
    assert_eq!(unseen, Some(Err(Error::ObjectNotFound)));
    assert_eq!(m.remove(vec![key("k")], 3), vec![Ok(())]);
    let gone = m.read_now(key("k").as_bytes(), 3, |_, _| unreachable!("removed"));
    assert_eq!(gone, Some(Err(Error::ObjectNotFound)));
}

fn replacing() -> ReplicateConfig {
    ReplicateConfig {
        replace: true,
        ..ReplicateConfig::default()
    }
}

/// A store holding "k" (5000 bytes): its blobs and the memory in use.
fn holding_k() -> (MetaStore, Vec<Blob>, u64) {
    let mut m = store(1, 64 * MIB, MetaConfig::default());
    let old = put(&mut m, "k", 5000, &ReplicateConfig::default(), 1).unwrap();
    let used = m.state().usage(Medium::Dram).0;
    (m, old, used)
}

/// Allocates a replacing put of `k`.
fn alloc_replacing(m: &mut MetaStore, k: &str, size: u64, now: u64) -> Allocation {
    m.alloc(vec![(key(k), size)], &replacing(), now)
        .pop()
        .unwrap()
        .unwrap()
}

/// A replacing put leaves the old object readable until it commits, then the new one
/// takes the key in the same step and the old one's memory goes back; a second
/// replacing put of the key meanwhile is refused, as is a plain put.
#[test]
fn a_replacing_put_swaps_objects_at_its_commit() {
    let (mut m, old, used_one) = holding_k();
    let a = alloc_replacing(&mut m, "k", 9000, 2);
    assert_ne!(a.blobs, old);
    for other in [replacing(), ReplicateConfig::default()] {
        let again = m.alloc(vec![(key("k"), 10)], &other, 2).pop().unwrap();
        assert_eq!(again.unwrap_err().code(), -3006);
    }
    let seen = m.lookup(&[key("k")], 3).pop().unwrap().unwrap();
    assert_eq!((seen.size, seen.blobs.clone()), (5000, old.clone()));
    m.release(&[(key("k"), seen.lease)]);
    m.commit(vec![(key("k"), a.put_id)], 4)
        .pop()
        .unwrap()
        .unwrap();
    let seen = m.lookup(&[key("k")], 5).pop().unwrap().unwrap();
    assert_eq!((seen.size, seen.blobs.clone()), (9000, a.blobs.clone()));
    m.release(&[(key("k"), seen.lease)]);
    assert_eq!(m.state().object_count(), 1);
    assert_eq!(m.state().usage(Medium::Dram).0, used_one - 8192 + 12288);
    // Replacing a key nobody holds is a plain put.
    let fresh = alloc_replacing(&mut m, "new", 100, 6);
    m.commit(vec![(key("new"), fresh.put_id)], 6)
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(m.exists(&[key("new")], 7), vec![Ok(true)]);
    check_replay(&mut m);
}

/// A replacing put that is aborted, or whose lease runs out, leaves the old object as
/// it was and gives its own memory back; one in flight survives a snapshot.
#[test]
fn a_replacing_put_that_fails_leaves_the_old_object() {
    let (mut m, old, used_one) = holding_k();
    let a = alloc_replacing(&mut m, "k", 9000, 2);
    m.abort(vec![(key("k"), a.put_id)], 3)
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(m.state().usage(Medium::Dram).0, used_one);
    let b = alloc_replacing(&mut m, "k", 9000, 4);
    // In flight across a snapshot and its restore.
    let image = serde_json::to_vec(&m.state().image()).unwrap();
    let restored = StateMachine::from_image(serde_json::from_slice(&image).unwrap());
    assert_eq!(restored.fingerprint(), m.state().fingerprint());
    m.reclaim(b.deadline_ms + 1);
    assert_eq!(m.state().usage(Medium::Dram).0, used_one);
    let seen = m
        .lookup(&[key("k")], b.deadline_ms + 2)
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(seen.blobs, old);
    check_replay(&mut m);
}

/// The object a replacing put retires may still be read by a reader holding a lease:
/// its memory stays out of the allocator until that lease ends.
#[test]
fn a_retired_object_read_under_a_lease_keeps_its_memory_until_the_lease_ends() {
    let (mut m, old, _) = holding_k();
    let reader = m.lookup(&[key("k")], 2).pop().unwrap().unwrap();
    let a = alloc_replacing(&mut m, "k", 5000, 3);
    m.commit(vec![(key("k"), a.put_id)], 4)
        .pop()
        .unwrap()
        .unwrap();
    let held: Vec<_> = m.state().quarantined().map(|q| (q.1, q.2)).collect();
    assert_eq!(held, vec![(old[0].segment, old[0].offset)]);
    // Nothing new lands on the range the reader may still be copying from.
    let b = m
        .alloc(vec![(key("j"), 5000)], &ReplicateConfig::default(), 5)
        .pop()
        .unwrap()
        .unwrap();
    assert_ne!(b.blobs[0].offset, old[0].offset);
    m.release(&[(key("k"), reader.lease)]);
    m.reclaim(6);
    assert_eq!(m.state().quarantined().count(), 0);
    check_replay(&mut m);
}

/// A put under the store's lock leaves the state a put through alloc and commit
/// leaves (offsets, ids, quarantine, counters and eviction order), whichever path it
/// takes: most take the one-command path, the rest (evictions, expired keys, plain
/// puts of a held key) the general one.
#[test]
fn a_put_under_the_lock_leaves_what_alloc_and_commit_leave() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut general = store(1, 96 * PAGE_SIZE, MetaConfig::default());
    let mut locked = store(1, 96 * PAGE_SIZE, MetaConfig::default());
    let mut rng = StdRng::seed_from_u64(11);
    let (mut at_once, mut leases) = (0, Vec::new());
    for step in 0..4000u64 {
        let now = 1 + step / 4;
        let k = key(&format!("k{}", rng.random_range(0..40)));
        if rng.random_bool(0.05) {
            // A reader holds a lease on both sides: a replaced object's memory waits.
            let a = general.lookup(std::slice::from_ref(&k), now).pop().unwrap();
            let b = locked.lookup(std::slice::from_ref(&k), now).pop().unwrap();
            assert_eq!(a.is_ok(), b.is_ok());
            if let (Ok(a), Ok(b)) = (a, b) {
                leases.push((k.clone(), a.lease, b.lease));
            }
        }
        if rng.random_bool(0.04) && !leases.is_empty() {
            let (k, a, b) = leases.swap_remove(0);
            general.release(&[(k.clone(), a)]);
            locked.release(&[(k, b)]);
        }
        let size = rng.random_range(1..6 * PAGE_SIZE);
        let cfg = ReplicateConfig {
            ttl: rng.random_bool(0.2).then(|| Duration::from_millis(40)),
            replace: rng.random_bool(0.8),
            ..ReplicateConfig::default()
        };
        let through_commit = |m: &mut MetaStore| {
            let a = m.alloc(vec![(k.clone(), size)], &cfg, now).pop().unwrap()?;
            m.commit(vec![(k.clone(), a.put_id)], now).pop().unwrap()
        };
        let expected = through_commit(&mut general);
        let got = match locked.put_now(k.as_bytes(), size, &cfg, now, |_| true, |_| Ok(())) {
            Some(r) => {
                at_once += 1;
                r
            }
            None => through_commit(&mut locked),
        };
        assert_eq!(got, expected, "step {step}");
        let (a, b) = (general.state(), locked.state());
        assert_eq!(a.fingerprint(), b.fingerprint(), "step {step}");
        assert!(a.policy().coldest().eq(b.policy().coldest()), "step {step}");
    }
    assert!(at_once > 2000, "{at_once} of 4000 puts took one command");
    check_replay(&mut locked);
}

/// A put under the lock whose write fails leaves no object under its key, and its
/// memory free; one to a segment the writer does not map is left to the general path.
#[test]
fn a_put_under_the_lock_whose_write_fails_leaves_nothing() {
    let (mut m, _, used_one) = holding_k();
    let failed = m.put_now(
        b"k",
        9000,
        &replacing(),
        2,
        |_| true,
        |blobs| {
            assert_eq!(blobs.len(), 1);
            Err(Error::Failed("the copy failed".into()))
        },
    );
    assert_eq!(failed, Some(Err(Error::Failed("the copy failed".into()))));
    assert_eq!(m.exists(&[key("k")], 3), vec![Ok(false)]);
    assert!(m.state().usage(Medium::Dram).0 < used_one);
    let unmapped = m.put_now(b"j", 10, &replacing(), 3, |_| false, |_| unreachable!());
    assert_eq!(unmapped, None);
    assert_eq!(m.state().object_count(), 0);
    check_replay(&mut m);
}

fn hbm(capacity: u64) -> SegmentSpec {
    SegmentSpec {
        medium: Medium::Hbm,
        capacity,
        base: 0,
    }
}

fn on(medium: Medium) -> ReplicateConfig {
    ReplicateConfig {
        medium: Some(medium),
        ..Default::default()
    }
}

/// A store with one local service of 4 MiB of HBM and 16 MiB of DRAM.
fn with_hbm() -> MetaStore {
    let mut m = MetaStore::new(MetaConfig::default()).unwrap();
    m.record_journal();
    m.register_service(None, 0, vec![hbm(4 * MIB), dram(16 * MIB)])
        .unwrap();
    m
}

/// Objects of 64 KiB: 57 of them take HBM to 89 %, just below the high watermark.
const BLOCK: u64 = 64 << 10;

#[test]
fn puts_go_to_the_medium_of_their_source_while_it_has_room() {
    let mut m = with_hbm();
    // Device memory goes to HBM, host memory to DRAM, whichever is emptier.
    assert_eq!(
        put(&mut m, "dev", BLOCK, &on(Medium::Hbm), 1).unwrap()[0].medium,
        Medium::Hbm
    );
    assert_eq!(
        put(&mut m, "host", BLOCK, &on(Medium::Dram), 1).unwrap()[0].medium,
        Medium::Dram
    );
    // HBM takes replicas up to the high watermark, then DRAM does.
    let media: Vec<Medium> = (1..64)
        .map(|i| put(&mut m, &format!("d{i}"), BLOCK, &on(Medium::Hbm), 2).unwrap()[0].medium)
        .collect();
    assert_eq!(media.iter().filter(|m| **m == Medium::Hbm).count(), 56);
    assert!(media[56..].iter().all(|m| *m == Medium::Dram), "{media:?}");
    let (used, cap) = m.state().usage(Medium::Hbm);
    assert!(used * 100 <= cap * 90, "HBM at {used} of {cap}");
    check_replay(&mut m);
}

#[test]
fn cold_objects_leave_hbm_for_the_dram_of_their_service() {
    let mut m = with_hbm();
    for i in 0..57 {
        let at = put(&mut m, &format!("k{i}"), BLOCK, &on(Medium::Hbm), 10 + i).unwrap();
        assert_eq!(at[0].medium, Medium::Hbm);
    }
    let dram_before = m.state().usage(Medium::Dram).0;
    let round = |m: &mut MetaStore, demoted: Vec<(Key, PutId)>, now| {
        let report = HbmReport { demoted, want: 256 };
        m.hbm_sync(0, report, now).unwrap()
    };
    // HBM is above the low watermark (80 %): the coldest objects get DRAM to move to.
    let answer = round(&mut m, vec![], 100);
    let keys: Vec<Key> = answer.demote.iter().map(|d| d.key.clone()).collect();
    assert_eq!(
        keys,
        (0..6).map(|i| key(&format!("k{i}"))).collect::<Vec<_>>()
    );
    for d in &answer.demote {
        assert_eq!((d.from.medium, d.to.medium), (Medium::Hbm, Medium::Dram));
        assert_eq!((d.from.service, d.to.service, d.from.len), (0, 0, BLOCK));
    }
    // Until the copies are reported, readers use HBM, and no more work is handed out.
    assert_eq!(media_of(&m, "k0", 101), vec![Medium::Hbm]);
    assert!(round(&mut m, vec![], 101).demote.is_empty());
    // k5 goes meanwhile: its staged DRAM goes with it, and its report is refused.
    m.remove(vec![key("k5")], 102).pop().unwrap().unwrap();
    let reported: Vec<(Key, PutId)> = answer
        .demote
        .iter()
        .map(|d| (d.key.clone(), d.put))
        .collect();
    // A report in another service's name changes nothing.
    let foreign = m
        .hbm_sync(
            7,
            HbmReport {
                demoted: reported.clone(),
                want: 0,
            },
            103,
        )
        .unwrap();
    assert!(foreign.demoted.iter().all(|r| r.is_err()));
    let done = round(&mut m, reported, 104).demoted;
    assert_eq!(done.iter().filter(|r| r.is_ok()).count(), 5);
    assert_eq!(done[5], Err(Error::ObjectNotFound));
    for i in 0..5 {
        assert_eq!(media_of(&m, &format!("k{i}"), 105), vec![Medium::Dram]);
    }
    assert_eq!(media_of(&m, "k6", 105), vec![Medium::Hbm]);
    assert_eq!(m.state().counters().hbm_demoted, 5);
    let (used, cap) = m.state().usage(Medium::Hbm);
    assert!(used * 100 <= cap * 80, "HBM at {used} of {cap}");
    assert_eq!(m.state().usage(Medium::Dram).0, dram_before + 5 * BLOCK);
    // Down to the low watermark: nothing more to do.
    assert!(round(&mut m, vec![], 106).demote.is_empty());
    check_replay(&mut m);
}

#[test]
fn hbm_without_dram_beside_it_is_evicted_at_the_watermarks() {
    let mut m = MetaStore::new(MetaConfig::default()).unwrap();
    m.register_service(None, 0, vec![hbm(4 * MIB)]).unwrap();
    for i in 0..70 {
        put(&mut m, &format!("k{i}"), BLOCK, &on(Medium::Hbm), 10 + i).unwrap();
    }
    let (used, cap) = m.state().usage(Medium::Hbm);
    assert!(used * 100 <= cap * 90, "HBM at {used} of {cap}");
    assert!(m.state().counters().evicted > 0);
    assert!(m
        .hbm_sync(0, HbmReport::default(), 100)
        .unwrap()
        .demote
        .is_empty());
}

/// With allocations pipelined, a plan made while earlier `Alloc` commands are still
/// in the log replays them: it evicts for the room they take too, never hands out
/// their keys again, and every command, applied afterwards in order, does what its
/// plan said. Planned against the applied state alone, the later batches would find
/// the room the earlier ones take and fail at `apply` as out of memory.
#[test]
fn pipelined_allocs_are_planned_after_those_still_in_the_log() {
    let mut m = store(1, 16 * MIB, MetaConfig::default());
    m.leader.pipeline_allocs();
    let cfg = ReplicateConfig::default();
    for i in 0..12 {
        put(&mut m, &format!("old{i}"), MIB, &cfg, 1).unwrap();
    }
    let request = |keys: &[&str]| AllocRequest {
        items: keys.iter().map(|k| (key(k), MIB)).collect(),
        config: cfg.clone(),
        writer: 0,
        lease_ms: 0,
    };
    let batches: [&[&str]; 4] = [
        &["a0", "a1", "a2"],
        &["b0", "b1", "b2"],
        &["c0", "c1", "a1"],
        &["d0", "d1", "d2"],
    ];
    let mut plans: Vec<_> = batches
        .iter()
        .map(|b| m.leader.plan_alloc(&mut m.sm, vec![request(b)], 2))
        .collect();
    // A batch planned after the first two are applied, the others still in flight.
    let mut results = Vec::new();
    for mut plan in plans.drain(..2) {
        let applied = m.sm.apply(plan.take_command().unwrap());
        results.push(plan.finish(&mut m.leader, Some(Ok(applied))));
    }
    plans.push(
        m.leader
            .plan_alloc(&mut m.sm, vec![request(&["e0", "c0"])], 3),
    );
    for mut plan in plans {
        let applied = m.sm.apply(plan.take_command().unwrap());
        results.push(plan.finish(&mut m.leader, Some(Ok(applied))));
    }
    let codes: Vec<Vec<i32>> = results
        .iter()
        .map(|r| {
            r.iter()
                .map(|r| r.as_ref().map_or_else(Error::code, |_| 0))
                .collect()
        })
        .collect();
    // a1 and c0 are taken by batches still in flight when they are asked again.
    assert_eq!(
        codes,
        [
            vec![0, 0, 0],
            vec![0, 0, 0],
            vec![0, 0, -3006],
            vec![0, 0, 0],
            vec![0, -3006]
        ]
    );
    let mut ranges: Vec<(u64, u64)> = results
        .iter()
        .flatten()
        .flatten()
        .flat_map(|a| a.blobs.iter().map(|b| (b.offset, b.len)))
        .collect();
    ranges.sort_unstable();
    assert!(ranges.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
    assert!(m.state().usage(Medium::Dram).0 <= 16 * MIB);
    // The old objects made the room, coldest first.
    assert!(m.state().object(b"old0").is_none());
    assert!(m.state().object(b"old11").is_some());
}

/// A proposal that failed leaves the order of what is in flight unknown: later plans
/// stop replaying it.
#[test]
fn a_failed_alloc_proposal_is_no_longer_replayed() {
    let mut m = store(1, 16 * MIB, MetaConfig::default());
    m.leader.pipeline_allocs();
    let request = |k: &str| AllocRequest {
        items: vec![(key(k), MIB)],
        config: ReplicateConfig::default(),
        writer: 0,
        lease_ms: 0,
    };
    let mut lost = m.leader.plan_alloc(&mut m.sm, vec![request("k")], 1);
    let _ = lost.take_command();
    lost.finish(&mut m.leader, Some(Err(Error::NotConnectedToMeta)));
    m.leader.alloc_unknown();
    let mut again = m.leader.plan_alloc(&mut m.sm, vec![request("k")], 2);
    let applied = m.sm.apply(again.take_command().expect("k is free again"));
    assert!(again.finish(&mut m.leader, Some(Ok(applied)))[0].is_ok());
}

/// Under every policy, a key whose object a replacing put swaps ranks as if the old
/// object had been removed and the new one put: the policies' `replace` shortcut
/// changes nothing of the order.
#[test]
fn a_replaced_key_ranks_as_one_removed_and_put_again() {
    let plain = ReplicateConfig::default();
    for kind in PolicyKind::ALL {
        let config = MetaConfig {
            eviction_policy: kind,
            ..MetaConfig::default()
        };
        let [mut swapped, mut again] = [0, 1].map(|_| store(1, 64 * MIB, config.clone()));
        for m in [&mut swapped, &mut again] {
            for (t, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
                put(m, k, 100, &plain, t as u64).unwrap();
            }
            // Reads, for the policies that count them.
            for k in ["c", "a", "c"] {
                let r = m.lookup(&[key(k)], 5).pop().unwrap().unwrap();
                m.release(&[(key(k), r.lease)]);
            }
        }
        put(&mut swapped, "a", 200, &replacing(), 6).unwrap();
        again.remove(vec![key("a")], 6).pop().unwrap().unwrap();
        put(&mut again, "a", 200, &plain, 6).unwrap();
        let order = |m: &MetaStore| -> Vec<Key> { m.state().policy().coldest().cloned().collect() };
        assert_eq!(order(&swapped), order(&again), "{kind:?}");
        assert_eq!(order(&swapped).len(), 4, "{kind:?}");
        check_replay(&mut swapped);
    }
}
