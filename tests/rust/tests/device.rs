//! Puts from and gets into device memory (L2G, G2L, AUTO) through every front of the
//! client: the Rust calls and the raw-pointer layer the C, C++ and Python APIs use.
//! The device is `memcache_device`'s simulation, which refuses any copy whose kind does
//! not match where its addresses lie, and counts the copies: a mapped segment is one
//! DMA copy per buffer, a replica over TCP one host copy of the object more.

mod common;

use std::sync::{Mutex, MutexGuard, OnceLock};

use common::procs::*;
use common::*;
use memcache_client::{BlockingObjectStore, DeviceBuf, Medium, ReplicateConfig};
use memcache_device::fake::FakeDevice;
use memcache_device::{CopyKind, DeviceCopy, DeviceRuntime};

/// The process's simulated device runtime, installed before anything asks for one.
fn fake() -> &'static FakeDevice {
    static FAKE: OnceLock<&'static FakeDevice> = OnceLock::new();
    FAKE.get_or_init(|| {
        let f: &'static FakeDevice = Box::leak(Box::new(FakeDevice::new(2)));
        assert!(memcache_device::install(f), "no runtime chosen before");
        f
    })
}

/// The simulated device, to one test at a time: the tests count its copies and pins.
fn device() -> (MutexGuard<'static, ()>, &'static FakeDevice) {
    static ONE: Mutex<()> = Mutex::new(());
    (ONE.lock().unwrap_or_else(|e| e.into_inner()), fake())
}

/// Device buffers of `sizes` bytes holding `pattern(seed + layer)`.
fn device_layers(seed: u64, sizes: &[usize]) -> Vec<DeviceBuf> {
    let d = fake();
    sizes
        .iter()
        .enumerate()
        .map(|(l, &len)| {
            let ptr = d.alloc(len).unwrap();
            let host = pattern(seed + l as u64, len);
            let up = DeviceCopy {
                dst: ptr,
                src: host.as_ptr() as u64,
                len,
                kind: CopyKind::HostToDevice,
            };
            // SAFETY: `host` is alive; `ptr` was just allocated with `len` bytes.
            unsafe { d.copy_batch(&[up]).unwrap() };
            DeviceBuf { ptr, len }
        })
        .collect()
}

fn blank_device(sizes: &[usize]) -> Vec<DeviceBuf> {
    sizes
        .iter()
        .map(|&len| DeviceBuf {
            ptr: fake().alloc(len).unwrap(),
            len,
        })
        .collect()
}

/// A client of `url` that contributes no memory and moves every byte over TCP, as
/// one on another host does.
fn tcp_client(url: &str) -> BlockingObjectStore {
    let config = memcache_client::ClientConfig {
        transport: Some(memcache_client::TransportKind::Tcp),
        ..memcache_client::ClientConfig::remote(url, 0)
    };
    let store = BlockingObjectStore::new(config).unwrap();
    store.init(0, false).unwrap();
    store
}

/// The medium of `key`'s first replica.
fn medium_of(store: &BlockingObjectStore, key: &str) -> Medium {
    let info = store.batch_get_key_info(&[key]).pop().unwrap().unwrap();
    info.locations[0].medium
}

/// The bytes of device buffers, concatenated.
fn read_device(bufs: &[DeviceBuf]) -> Vec<u8> {
    let total: usize = bufs.iter().map(|b| b.len).sum();
    let mut out = vec![0u8; total];
    let mut at = out.as_mut_ptr() as u64;
    let copies: Vec<DeviceCopy> = bufs
        .iter()
        .map(|b| {
            let c = DeviceCopy {
                dst: at,
                src: b.ptr,
                len: b.len,
                kind: CopyKind::DeviceToHost,
            };
            at += b.len as u64;
            c
        })
        .collect();
    // SAFETY: `out` holds `total` bytes; the device buffers are allocated.
    unsafe { fake().copy_batch(&copies).unwrap() };
    out
}

fn expected(seed: u64, sizes: &[usize]) -> Vec<u8> {
    sizes
        .iter()
        .enumerate()
        .flat_map(|(l, &len)| pattern(seed + l as u64, len))
        .collect()
}

const LAYERS: [usize; 6] = [128 * KIB, 16 * KIB, 128 * KIB, 16 * KIB, 4096, 1];

#[test]
fn device_layers_round_trip_through_mapped_segments_one_dma_copy_per_layer() {
    let (_one, d) = device();
    let (_pool, store) = started(64 * MIB);
    let keys: Vec<String> = (0..4).map(|k| format!("dev/{k}")).collect();
    let srcs: Vec<Vec<DeviceBuf>> = (0..4).map(|k| device_layers(100 * k, &LAYERS)).collect();
    let objects: Vec<&[DeviceBuf]> = srcs.iter().map(Vec::as_slice).collect();
    let before = d.copies();
    let put = store.batch_put_from_device(&keys, &objects, &ReplicateConfig::default());
    assert_eq!(codes(&put), [0; 4]);
    let after_put = d.copies();
    assert_eq!(
        after_put[1] - before[1],
        4 * LAYERS.len(),
        "one device-to-host copy per layer"
    );
    assert!(d.pinned_bytes() > 0, "the segment is pinned for DMA");

    // Host readers see the same bytes.
    let total: usize = LAYERS.iter().sum();
    assert_eq!(store.get(&keys[2]).unwrap(), expected(200, &LAYERS));

    // Back into fresh device buffers, split differently.
    let halves = [total / 2, total - total / 2];
    let dsts: Vec<Vec<DeviceBuf>> = (0..4).map(|_| blank_device(&halves)).collect();
    let outs: Vec<&[DeviceBuf]> = dsts.iter().map(Vec::as_slice).collect();
    let got = store.batch_get_into_device(&keys, &outs);
    assert_eq!(got, vec![Ok(total as u64); 4]);
    assert_eq!(
        d.copies()[0] - after_put[0],
        4 * 2,
        "one host-to-device copy per buffer"
    );
    for (k, dst) in dsts.iter().enumerate() {
        assert!(
            read_device(dst) == expected(100 * k as u64, &LAYERS),
            "key {k}"
        );
    }

    // Too little device room for one key: that key alone fails, and its buffers keep
    // their bytes.
    let short = blank_device(&[total - 1]);
    let good = blank_device(&[total]);
    let got = store.batch_get_into_device(&[&keys[0], &keys[1]], &[&short, &good]);
    assert_eq!(codes(&got), [-3000, 0]);
    assert!(read_device(&short).iter().all(|&b| b == 0));
    // A put whose device buffers are host memory is refused by the device, not copied.
    let host = pattern(9, 4096);
    let fake_buf = [DeviceBuf {
        ptr: host.as_ptr() as u64,
        len: host.len(),
    }];
    let put = store.batch_put_from_device(&["dev/host"], &[&fake_buf], &ReplicateConfig::default());
    assert_eq!(codes(&put), [-3000]);
    assert_eq!(store.is_exist("dev/host"), Ok(false), "rolled back");
}

#[test]
fn the_pointer_api_takes_l2g_g2l_and_auto() {
    let (_one, _) = device();
    let (_pool, store) = started(32 * MIB);
    let src = device_layers(7, &LAYERS);
    let ptrs: Vec<*const std::ffi::c_void> = src.iter().map(|b| b.ptr as *const _).collect();
    let cfg = ReplicateConfig::default();
    // SAFETY: device addresses, never dereferenced by the host.
    unsafe {
        store
            .put_from_layers_ptr(b"p/l2g", &ptrs, &LAYERS, 0, &cfg)
            .unwrap();
        // AUTO finds the device pointer and takes the device path.
        store
            .put_from_layers_ptr(b"p/auto", &ptrs, &LAYERS, 9, &cfg)
            .unwrap();
    }
    let want = expected(7, &LAYERS);
    assert_eq!(store.get("p/l2g").unwrap(), want);
    assert_eq!(store.get("p/auto").unwrap(), want);
    let dst = blank_device(&LAYERS);
    let dptrs: Vec<*mut std::ffi::c_void> = dst.iter().map(|b| b.ptr as *mut _).collect();
    // SAFETY: as above.
    let n = unsafe { store.get_into_layers_ptr(b"p/auto", &dptrs, &LAYERS, 1) };
    assert_eq!(n, Ok(want.len() as u64));
    assert!(read_device(&dst) == want);
    // AUTO on host memory is an ordinary host get.
    let mut host = vec![0u8; want.len()];
    // SAFETY: `host` is writable and used by nothing else.
    let n = unsafe { store.get_into_ptr(b"p/l2g", host.as_mut_ptr().cast(), host.len(), 9) };
    assert_eq!(n, Ok(want.len() as u64));
    assert_eq!(host, want);
    // Directions of the other kind of call, and host directions on device memory.
    // SAFETY: refused before any byte moves.
    unsafe {
        let e = store.get_into_layers_ptr(b"p/l2g", &dptrs, &LAYERS, 0);
        assert_eq!(code(&e), -3000);
        let e = store.put_from_layers_ptr(b"p/x", &ptrs, &LAYERS, 1, &cfg);
        assert_eq!(code(&e), -3000);
        let e = store.put_from_layers_ptr(b"p/x", &ptrs, &LAYERS, 3, &cfg);
        assert_eq!(code(&e), -3000, "a host copy of device memory is refused");
    }
    assert_eq!(store.is_exist("p/x"), Ok(false));
}

#[test]
fn device_objects_reach_replicas_over_tcp_through_one_host_copy() {
    let (_one, d) = device();
    let (_meta, url) = start_meta(&[]);
    let _locals: Vec<(Proc, u32)> = (0..2).map(|_| start_local(&url, "32MiB")).collect();
    wait_for_services(&url, 2);
    let store: BlockingObjectStore = tcp_client(&url);
    let src = device_layers(40, &LAYERS);
    let two = ReplicateConfig {
        replica_num: 2,
        ..Default::default()
    };
    let before = d.copies();
    let put = store.batch_put_from_device(&["tcp/dev"], &[&src], &two);
    assert_eq!(codes(&put), [0]);
    assert_eq!(
        d.copies()[1] - before[1],
        LAYERS.len(),
        "the object is staged once for both replicas"
    );
    let want = expected(40, &LAYERS);
    assert_eq!(pure_client(&url).get("tcp/dev").unwrap(), want);
    let dst = blank_device(&LAYERS);
    let got = store.batch_get_into_device(&["tcp/dev", "tcp/absent"], &[&dst, &dst]);
    assert_eq!(codes(&got), [0, -3007]);
    assert!(read_device(&dst) == want);
    // Staged through page-locked buffers, which the session keeps for the next object:
    // another round trip pins nothing more. (The test's own copies, in `read_device`
    // and `device_layers`, come from plain host memory.)
    let (pinned, unpinned) = (d.pinned_bytes(), d.unpinned_host_copies());
    let dst2 = blank_device(&LAYERS);
    let put = store.batch_put_from_device(&["tcp/dev2"], &[&src], &two);
    assert_eq!(codes(&put), [0]);
    let got = store.batch_get_into_device(&["tcp/dev2"], &[&dst2]);
    assert_eq!(codes(&got), [0]);
    assert_eq!(d.pinned_bytes(), pinned, "staging buffers are reused");
    assert_eq!(
        d.unpinned_host_copies(),
        unpinned,
        "every host side was page-locked"
    );
    assert!(read_device(&dst2) == want);
    drop(store);
    assert!(
        d.pinned_bytes() < pinned,
        "a client's end unpins its staging buffers"
    );
}

#[test]
fn in_place_copies_take_device_buffers_both_ways() {
    let (_one, d) = device();
    let (_pool, store) = started(32 * MIB);
    let total: usize = LAYERS.iter().sum();
    let gva = store.batch_alloc(
        &["ip/dev"],
        &[total as u64],
        memcache_client::Medium::Dram,
        0,
    )[0]
    .clone()
    .unwrap();
    // The object's layers from device memory: the first two layers in one piece, the
    // rest through the pointer layer (L2G).
    let src = device_layers(60, &LAYERS);
    let mut first = [memcache_client::Piece::FromDevice(&src[..2])];
    store
        .batch_copy(&[gva], &mut first, memcache_client::CopyWay::ToPool)
        .unwrap();
    let head = (LAYERS[0] + LAYERS[1]) as u64;
    let rest: Vec<*mut std::ffi::c_void> = src[2..].iter().map(|b| b.ptr as *mut _).collect();
    // SAFETY: device addresses, never dereferenced by the host.
    unsafe {
        store
            .batch_copy_layers_ptr(&[gva + head], &[&rest], &[&LAYERS[2..]], 0)
            .unwrap();
    }
    assert_eq!(codes(&store.batch_write_finish(&["ip/dev"], &[0])), [0]);
    let want = expected(60, &LAYERS);
    assert_eq!(store.get("ip/dev").unwrap(), want);

    // Out of a leased object into device memory: G2L through the pointer layer, and
    // AUTO, which finds device memory and the lease's direction by itself.
    assert_eq!(codes(&store.batch_add_lease(&["ip/dev"], 0)), [0]);
    let at = store.get_key_info("ip/dev").unwrap().locations[0].gva;
    let before = d.copies();
    for direct in [1, 9] {
        let dst = blank_device(&[total]);
        let p = [dst[0].ptr as *mut std::ffi::c_void];
        // SAFETY: as above.
        unsafe { store.batch_copy_ptr(&[at], &p, &[total], direct).unwrap() };
        assert!(read_device(&dst) == want, "direct {direct}");
    }
    assert!(d.copies()[0] >= before[0] + 2, "host-to-device copies made");
    // Into the leased object from the device is refused: it is not being written.
    let mut wrong = [memcache_client::Piece::FromDevice(&src[..1])];
    let e = store.batch_copy(&[at], &mut wrong, memcache_client::CopyWay::Auto);
    assert_eq!(code(&e), -3101);
    store.batch_remove_lease(&["ip/dev"]).unwrap();
}

/// A meta service process, and a local service in this process contributing `dram`
/// bytes of DRAM and `hbm` bytes of the simulated device's memory to it.
struct HbmPool {
    url: String,
    http: String,
    service_http: String,
    /// Dropped (fields drop in order) before the meta service it would keep calling.
    _service: memcache_local::RunningLocalService,
    _rt: tokio::runtime::Runtime,
    _meta: Proc,
}

impl HbmPool {
    fn start(dram: u64, hbm: u64) -> HbmPool {
        let (meta_proc, url, http) = start_meta_with_http("tcp://127.0.0.1:0", &[]);
        let config = memcache_local::LocalServiceConfig {
            dram_size: dram,
            hbm_size: hbm,
            device_id: 1,
            http_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        let meta = memcache_proto::parse_discovery(&url).unwrap();
        let dir = std::env::temp_dir().join(format!("mmc-hbm-{}", std::process::id()));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let service = rt
            .block_on(memcache_local::RunningLocalService::start(
                &config,
                &meta,
                std::time::Duration::from_secs(5),
                dir,
            ))
            .unwrap();
        wait_for_services(&url, 1);
        let service_http = service.http_addr().expect("serves /metrics").to_string();
        HbmPool {
            url,
            http,
            service_http,
            _service: service,
            _rt: rt,
            _meta: meta_proc,
        }
    }
}

impl HbmPool {
    /// Bytes the service's TCP data plane moved so far, both ways.
    fn tcp_bytes(&self) -> f64 {
        let (_, body) = http_get(&self.service_http, "/metrics");
        body.lines()
            .filter(|l| l.starts_with("memcache_local_tcp_bytes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A local service contributing device memory (HBM) through the device runtime: the
/// pool places objects there, says so in their key info and the admin view, and every
/// byte crosses into and out of it as a device copy the service makes for its clients.
#[test]
fn hbm_segments_hold_objects_that_clients_reach_through_their_service() {
    let (_one, d) = device();
    let pool = HbmPool::start(8 << 20, 64 << 20);
    let (url, http) = (pool.url.clone(), pool.http.clone());
    let (_, body) = http_get(&http, "/get_all_segments");
    assert!(body.contains("HBM"), "{body}");
    let store = tcp_client(&url);
    let medium = |k: &str| medium_of(&store, k);
    let before = d.copies();
    let value = pattern(7, 300 * KIB);
    // A host buffer's object goes to DRAM, a device buffer's to HBM, for a client that
    // reaches both through the service.
    store.put("dram/a", &value).unwrap();
    assert_eq!(medium("dram/a"), Medium::Dram);
    let src = device_layers(7, &[300 * KIB]);
    let put = store.batch_put_from_device(&["hbm/a"], &[&src], &ReplicateConfig::default());
    assert_eq!(put, vec![Ok(())]);
    assert_eq!(medium("hbm/a"), Medium::Hbm);
    assert_eq!(store.get("hbm/a").unwrap(), value);
    let after = d.copies();
    assert!(after[0] > before[0], "written with host-to-device copies");
    assert!(after[1] > before[1], "read with device-to-host copies");
    store.remove("hbm/a").unwrap();
    drop(store);
    drop(pool);
}

/// HBM full of device puts: the service moves the coldest objects to its DRAM, down
/// to the low watermark, and they read back byte for byte from there.
#[test]
fn cold_objects_move_from_hbm_to_dram_and_read_back_whole() {
    let (_one, _d) = device();
    let pool = HbmPool::start(16 << 20, 4 << 20);
    let url = pool.url.clone();
    let store = tcp_client(&url);
    let medium = |k: &str| medium_of(&store, k);
    // 60 objects of 64 KiB: HBM takes them up to its high watermark (90 % of 4 MiB),
    // DRAM the rest, while the service's demotions make room in HBM again.
    let keys: Vec<String> = (0..60).map(|i| format!("kv/{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let src = device_layers(100 + i as u64, &[64 * KIB]);
        let put = store.batch_put_from_device(&[k], &[&src], &ReplicateConfig::default());
        assert_eq!(put, vec![Ok(())]);
    }
    // The demotions bring HBM down to its low watermark (80 %, 51 objects), coldest
    // first.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let in_hbm = || keys.iter().filter(|k| medium(k) == Medium::Hbm).count();
    while medium("kv/0") != Medium::Dram || in_hbm() > 51 {
        assert!(
            std::time::Instant::now() < give_up,
            "no demotion: {} in HBM",
            in_hbm()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        in_hbm() > 40,
        "only the coldest left HBM: {} are there",
        in_hbm()
    );
    for (i, k) in keys.iter().enumerate() {
        let dst = blank_device(&[64 * KIB]);
        let got = store.batch_get_into_device(&[k], &[&dst]);
        assert_eq!(got, vec![Ok(64 * KIB as u64)], "{k}");
        assert_eq!(read_device(&dst), pattern(100 + i as u64, 64 * KIB), "{k}");
    }
    drop(store);
    drop(pool);
}

/// A client on the service's host imports its HBM by the device runtime's handle:
/// device buffers and HBM trade bytes device to device, host buffers with one copy
/// each way, and not a byte crosses the service's TCP data plane. The import closes
/// with the client.
#[test]
fn same_host_clients_import_hbm_and_copy_device_to_device() {
    let (_one, d) = device();
    let pool = HbmPool::start(8 << 20, 64 << 20);
    let store = pure_client(&pool.url);
    let cfg = ReplicateConfig::default();
    // The first object meets the segment, and imports it.
    let warm = device_layers(1, &[4096]);
    assert_eq!(
        store.batch_put_from_device(&["warm"], &[&warm], &cfg),
        vec![Ok(())]
    );
    assert_eq!(medium_of(&store, "warm"), Medium::Hbm);
    assert_eq!(d.open_imports(), 1);
    let tcp = pool.tcp_bytes();

    let keys: Vec<String> = (0..4).map(|k| format!("near/{k}")).collect();
    let srcs: Vec<Vec<DeviceBuf>> = (0..4).map(|k| device_layers(300 + k, &LAYERS)).collect();
    let objects: Vec<&[DeviceBuf]> = srcs.iter().map(Vec::as_slice).collect();
    let before = d.copies();
    assert_eq!(
        codes(&store.batch_put_from_device(&keys, &objects, &cfg)),
        [0; 4]
    );
    let after_put = d.copies();
    assert_eq!(
        [0, 1, 2].map(|k| after_put[k] - before[k]),
        [0, 0, 4 * LAYERS.len()],
        "one device-to-device copy per layer, none through the host"
    );
    assert!(keys.iter().all(|k| medium_of(&store, k) == Medium::Hbm));

    let total: usize = LAYERS.iter().sum();
    let halves = [total / 2, total - total / 2];
    let dsts: Vec<Vec<DeviceBuf>> = (0..4).map(|_| blank_device(&halves)).collect();
    let outs: Vec<&[DeviceBuf]> = dsts.iter().map(Vec::as_slice).collect();
    assert_eq!(
        store.batch_get_into_device(&keys, &outs),
        vec![Ok(total as u64); 4]
    );
    let after_get = d.copies();
    assert_eq!(
        [0, 1, 2].map(|k| after_get[k] - after_put[k]),
        [0, 0, 4 * 2],
        "one device-to-device copy per buffer"
    );
    for (k, dst) in dsts.iter().enumerate() {
        assert!(
            read_device(dst) == expected(300 + k as u64, &LAYERS),
            "key {k}"
        );
    }

    // Host buffers: one device-to-host copy for a get, one host-to-device for a put
    // asked into HBM.
    let before = d.copies();
    assert_eq!(store.get(&keys[1]).unwrap(), expected(301, &LAYERS));
    let value = pattern(5, 100 * KIB);
    let in_hbm = ReplicateConfig {
        medium: Some(Medium::Hbm),
        ..Default::default()
    };
    store
        .put_from(
            "host/in-hbm",
            &value,
            memcache_client::CopyDirection::H2G,
            &in_hbm,
        )
        .unwrap();
    assert_eq!(medium_of(&store, "host/in-hbm"), Medium::Hbm);
    assert_eq!(store.get("host/in-hbm").unwrap(), value);
    let after_host = d.copies();
    assert_eq!(
        [0, 1, 2].map(|k| after_host[k] - before[k]),
        [1, 2, 0],
        "host buffers cross once each way"
    );
    assert_eq!(
        pool.tcp_bytes(),
        tcp,
        "no byte crossed the service's TCP data plane"
    );
    assert_eq!(d.open_imports(), 1, "the segment is imported once");
    drop(store);
    assert_eq!(d.open_imports(), 0, "a client's end closes its imports");
    drop(pool);
}

/// Where the driver shares no device memory between processes, a same-host client
/// reaches HBM through its service over TCP, and its later device puts go to the
/// DRAM it maps (one DMA copy) instead.
#[test]
fn hbm_that_does_not_import_is_reached_through_its_service() {
    let (_one, d) = device();
    let pool = HbmPool::start(8 << 20, 64 << 20);
    let store = pure_client(&pool.url);
    let cfg = ReplicateConfig::default();
    d.refuse_imports(true);
    let src = device_layers(9, &LAYERS);
    let tcp = pool.tcp_bytes();
    assert_eq!(
        store.batch_put_from_device(&["far/a"], &[&src], &cfg),
        vec![Ok(())]
    );
    assert_eq!(medium_of(&store, "far/a"), Medium::Hbm);
    assert!(pool.tcp_bytes() > tcp, "written through the service");
    let dst = blank_device(&LAYERS);
    assert_eq!(
        codes(&store.batch_get_into_device(&["far/a"], &[&dst])),
        [0]
    );
    assert!(read_device(&dst) == expected(9, &LAYERS));
    assert_eq!(d.open_imports(), 0);
    // Later device puts go to mapped DRAM.
    assert_eq!(
        store.batch_put_from_device(&["far/b"], &[&src], &cfg),
        vec![Ok(())]
    );
    assert_eq!(medium_of(&store, "far/b"), Medium::Dram);
    d.refuse_imports(false);
    drop(store);
    drop(pool);
}

/// A client that contributes HBM itself (`init` with a local service, `hbm_size`)
/// reaches its own segment in place: no runtime imports a handle into the process
/// that made it, and none is needed.
#[test]
fn a_client_reaches_its_own_hbm_in_place() {
    let (_one, d) = device();
    let (_meta, url) = start_meta(&[]);
    let mut config = memcache_client::ClientConfig::remote(&url, 4 << 20);
    config.local.hbm_size = 16 << 20;
    let store = BlockingObjectStore::new(config).unwrap();
    store.init(0, true).unwrap();
    let src = device_layers(21, &LAYERS);
    let cfg = ReplicateConfig::default();
    assert_eq!(
        store.batch_put_from_device(&["own/a"], &[&src], &cfg),
        vec![Ok(())]
    );
    assert_eq!(medium_of(&store, "own/a"), Medium::Hbm);
    let before = d.copies();
    assert_eq!(
        store.batch_put_from_device(&["own/b"], &[&src], &cfg),
        vec![Ok(())]
    );
    let dst = blank_device(&LAYERS);
    assert_eq!(
        codes(&store.batch_get_into_device(&["own/b"], &[&dst])),
        [0]
    );
    let after = d.copies();
    assert_eq!(
        [0, 1, 2].map(|k| after[k] - before[k]),
        [0, 0, 2 * LAYERS.len()],
        "device to device both ways"
    );
    assert!(read_device(&dst) == expected(21, &LAYERS));
    assert_eq!(d.open_imports(), 0, "its own segment is not imported");
    assert_eq!(store.inner().data_plane_held().unwrap().imported, 1);
    store.tear_down().unwrap();
}
