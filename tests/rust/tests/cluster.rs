//! The pool across processes: real `mmc meta`, `mmc local` and `mmc kv` processes on
//! 127.0.0.1, and clients in this process, killed and restarted to see what survives.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::procs::*;

use memcache_client::{BlockingObjectStore, ClientConfig, CopyDirection, ReplicateConfig};
use memcache_proto::{connect_meta, context, parse_discovery, Tag};

#[test]
fn objects_cross_processes_and_survive_a_killed_replica() {
    let (_meta, url) = start_meta(&["--heartbeat-timeout-ms", "600"]);
    let mut locals: Vec<(Proc, u32)> = (0..3).map(|_| start_local(&url, "32MiB")).collect();
    wait_for_services(&url, 3);
    // Client processes: A puts, B gets the same bytes back.
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = std::env::temp_dir().join(format!("mmc-kv-{}", std::process::id()));
    std::fs::write(&file, &blob).unwrap();
    let mmc = |args: &[&str]| {
        let out = Command::new(mmc_bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let f = file.to_str().unwrap();
    mmc(&["put", "--discovery", &url, "proc/a", f, "--replicas", "2"]);
    assert_eq!(mmc(&["get", "--discovery", &url, "proc/a"]), blob);
    std::fs::remove_file(&file).unwrap();

    let a = pure_client(&url);
    let b = pure_client(&url);
    let two = ReplicateConfig::with_replicas(2);
    let values: Vec<Vec<u8>> = (0..40u32)
        .map(|i| i.to_le_bytes().repeat(5000 + i as usize))
        .collect();
    for (i, v) in values.iter().enumerate() {
        a.put_from(format!("obj/{i}"), v, CopyDirection::H2G, &two)
            .unwrap();
    }
    // Client B (its own mappings) reads what A wrote.
    for (i, v) in values.iter().enumerate() {
        assert_eq!(&b.get(format!("obj/{i}")).unwrap(), v);
        let info = b.get_key_info(format!("obj/{i}")).unwrap();
        assert_eq!(info.locations.len(), 2);
        assert_ne!(info.locations[0].service, info.locations[1].service);
    }
    // kill -9 one local service: once it is declared dead, every object is still
    // readable from its other replica, by a client that never mapped the dead one.
    let (mut victim, victim_id) = locals.remove(0);
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    wait_for_services(&url, 2);
    let c = pure_client(&url);
    for (i, v) in values.iter().enumerate() {
        assert_eq!(&c.get(format!("obj/{i}")).unwrap(), v, "obj/{i}");
        let info = c.get_key_info(format!("obj/{i}")).unwrap();
        assert!(info.locations.iter().all(|l| l.service != victim_id));
    }
    assert_eq!(mmc(&["get", "--discovery", &url, "proc/a"]), blob);
}

#[test]
fn put_and_get_through_a_meta_service_process() {
    let (_meta, url) = start_meta(&[]);
    let store = BlockingObjectStore::new(ClientConfig::remote(&url, 64 << 20)).unwrap();
    store.init(0, true).unwrap();
    let id = store.get_local_service_id().unwrap();

    let layers: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 10_000 + i as usize]).collect();
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    store
        .put_from_layers(
            "kv/0",
            &refs,
            CopyDirection::H2G,
            &ReplicateConfig::default(),
        )
        .unwrap();
    let mut out: Vec<Vec<u8>> = layers.iter().map(|l| vec![0xFF; l.len()]).collect();
    let mut outs: Vec<&mut [u8]> = out.iter_mut().map(Vec::as_mut_slice).collect();
    store
        .get_into_layers("kv/0", &mut outs, CopyDirection::G2H)
        .unwrap();
    assert_eq!(out, layers);
    let info = store.get_key_info("kv/0").unwrap();
    assert_eq!(info.locations[0].service, id);
    assert_eq!(store.put("kv/0", b"again").unwrap_err().code(), -3006);
    assert_eq!(store.get("missing").unwrap_err().code(), -3007);
    store.remove("kv/0").unwrap();
    assert_eq!(store.is_exist("kv/0"), Ok(false));
    store.tear_down().unwrap();
}

/// How many `method` calls the meta service has served.
fn calls(url: &str, method: &str) -> u64 {
    stats(url).by_method.get(method).copied().unwrap_or(0)
}

#[test]
fn a_batch_of_1024_keys_costs_one_control_call_per_phase() {
    let (_meta, url) = start_meta(&[]);
    let (_local, _) = start_local(&url, "64MiB");
    wait_for_services(&url, 1);
    let store = pure_client(&url);
    let keys: Vec<String> = (0..1024).map(|i| format!("batch/{i}")).collect();
    let data: Vec<Vec<u8>> = (0..1024u32).map(|i| i.to_le_bytes().repeat(64)).collect();
    let bufs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();

    let put = store.batch_put_from(
        &keys,
        &bufs,
        CopyDirection::H2G,
        &ReplicateConfig::default(),
    );
    assert!(put.iter().all(Result::is_ok));
    assert_eq!((calls(&url, "alloc"), calls(&url, "commit")), (1, 1));

    assert!(store.batch_is_exist(&keys).iter().all(|r| *r == Ok(true)));
    assert_eq!(calls(&url, "exists"), 1);

    // A get is one call: its leases end with the next one.
    for round in 1..=2 {
        let mut out: Vec<Vec<u8>> = data.iter().map(|d| vec![0; d.len()]).collect();
        let mut outs: Vec<&mut [u8]> = out.iter_mut().map(Vec::as_mut_slice).collect();
        let got = store.batch_get_into(&keys, &mut outs, CopyDirection::G2H);
        assert!(got.iter().all(Result::is_ok));
        assert_eq!(out, data);
        assert_eq!((calls(&url, "lookup"), calls(&url, "release")), (round, 0));
    }

    // A remove ends this client's own leases, which would refuse it, in the same call.
    assert!(store.batch_remove(&keys).iter().all(Result::is_ok));
    assert_eq!((calls(&url, "release"), calls(&url, "remove")), (0, 1));
    // The data moved without a single extra control call.
    let s = stats(&url);
    let data_path: u64 = ["alloc", "commit", "exists", "lookup", "release", "remove"]
        .iter()
        .map(|m| s.by_method.get(*m).copied().unwrap_or(0))
        .sum();
    assert_eq!(data_path, 6);
}

#[test]
fn an_unreachable_meta_service_is_reported() {
    // A port nobody listens on: bind one, then free it.
    let port = free_ports(1)[0];
    let url = format!("tcp://127.0.0.1:{port}");
    let store = BlockingObjectStore::new(ClientConfig::remote(&url, 64 << 20)).unwrap();
    assert_eq!(store.init(0, true).unwrap_err().code(), -3017);
    assert_eq!(store.get("k").unwrap_err().code(), -3019);
    let bad = BlockingObjectStore::new(ClientConfig::remote("http://x", 64 << 20)).unwrap();
    assert_eq!(bad.init(0, false).unwrap_err().code(), -3000);
}

#[test]
fn forced_tcp_moves_layers_and_replicas_without_shared_memory() {
    let (_meta, url) = start_meta(&[]);
    let _locals: Vec<(Proc, u32)> = (0..2).map(|_| start_local(&url, "32MiB")).collect();
    wait_for_services(&url, 2);
    let store = tcp_client(&url);
    let layers: Vec<Vec<u8>> = (0..16u8)
        .map(|i| vec![i ^ 0x5A; 4096 * (i as usize + 1)])
        .collect();
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let keys: Vec<String> = (0..8).map(|i| format!("tcp/{i}")).collect();
    let objects: Vec<&[&[u8]]> = keys.iter().map(|_| refs.as_slice()).collect();
    let put = store.batch_put_from_layers(
        &keys,
        &objects,
        CopyDirection::H2G,
        &ReplicateConfig::with_replicas(2),
    );
    assert!(put.iter().all(Result::is_ok), "{put:?}");
    for key in &keys {
        let mut out: Vec<Vec<u8>> = layers.iter().map(|l| vec![0; l.len()]).collect();
        let mut outs: Vec<&mut [u8]> = out.iter_mut().map(Vec::as_mut_slice).collect();
        store
            .get_into_layers(key, &mut outs, CopyDirection::G2H)
            .unwrap();
        assert_eq!(out, layers);
    }
    // A short buffer is refused before any byte moves.
    let mut small = vec![7u8; 10];
    assert_eq!(
        store
            .get_into("tcp/0", &mut small, CopyDirection::G2H)
            .unwrap_err()
            .code(),
        -3000
    );
    assert!(small.iter().all(|&b| b == 7));
}

/// Memory freed while a TCP capability to it may still be live waits in quarantine until
/// its owner acknowledged the revocation: a put into a full pool right after a remove
/// waits for that (a round trip), instead of failing for want of room.
#[test]
fn a_full_pool_over_tcp_takes_new_puts_right_after_a_remove() {
    let (_meta, url) = start_meta(&[]);
    let _local = start_local(&url, "32MiB");
    wait_for_services(&url, 1);
    let store = tcp_client(&url);
    let value = |round: usize, i: usize| vec![(round * 16 + i) as u8; 4 << 20];
    let mut out = vec![0u8; 4 << 20];
    for round in 0..4 {
        // Six 4 MiB objects fill 75 % of the segment: no two rounds fit side by side.
        let keys: Vec<String> = (0..6).map(|i| format!("full/{round}/{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            let put = store.put_from(
                key,
                &value(round, i),
                CopyDirection::H2G,
                &Default::default(),
            );
            assert!(put.is_ok(), "round {round}, {key}: {put:?}");
        }
        for (i, key) in keys.iter().enumerate() {
            store.get_into(key, &mut out, CopyDirection::G2H).unwrap();
            assert!(out == value(round, i), "round {round}, {key}");
        }
        for key in &keys {
            store.remove(key).unwrap();
        }
    }
}

/// `ReplicateConfig::replace` (an upsert) through a pool of processes: a writer
/// replaces one key 200 times while a reader loops on it and never misses, and each
/// value it reads is whole.
#[test]
fn replacing_puts_never_leave_a_reader_without_the_key() {
    let (_meta, url) = start_meta(&[]);
    let _local = start_local(&url, "32MiB");
    wait_for_services(&url, 1);
    let writer = pure_client(&url);
    let upsert = ReplicateConfig {
        replace: true,
        ..ReplicateConfig::default()
    };
    let value = |i: u32| vec![(i % 251) as u8; 20_000 + i as usize];
    writer
        .put_from("hot", &value(0), CopyDirection::H2G, &upsert)
        .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (url, done) = (url.clone(), done.clone());
        std::thread::spawn(move || {
            let reader = pure_client(&url);
            let mut reads = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let got = reader.get("hot").expect("the key is always there");
                let i = (got.len() - 20_000) as u32;
                assert!(got == value(i), "a torn or foreign value");
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=200 {
        writer
            .put_from("hot", &value(i), CopyDirection::H2G, &upsert)
            .unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(writer.get("hot").unwrap(), value(200));
    // Without `replace` a put of a held key is still refused.
    let plain = writer.put_from(
        "hot",
        &value(1),
        CopyDirection::H2G,
        &ReplicateConfig::default(),
    );
    assert_eq!(plain.unwrap_err().code(), -3006);
}

/// A data-plane request header (see `rust/local/src/tcp.rs`): the blob (segment, offset,
/// length) and its capability (put or lease id, expiry, MAC), then the part to move.
fn frame_part(op: u8, segment: u64, offset: u64, len: u64, tag: Tag, at: u64, n: u64) -> Vec<u8> {
    let mut h = vec![0u8; 80];
    h[0..4].copy_from_slice(&0x4D4D_4344u32.to_le_bytes());
    h[4] = op;
    h[8..16].copy_from_slice(&segment.to_le_bytes());
    h[16..24].copy_from_slice(&offset.to_le_bytes());
    h[24..32].copy_from_slice(&len.to_le_bytes());
    h[32..40].copy_from_slice(&tag.id.to_le_bytes());
    h[40..48].copy_from_slice(&tag.expires_ms.to_le_bytes());
    h[48..64].copy_from_slice(&tag.mac.to_le_bytes());
    h[64..72].copy_from_slice(&at.to_le_bytes());
    h[72..80].copy_from_slice(&n.to_le_bytes());
    h
}

#[test]
fn garbage_on_the_wire_is_refused_and_the_services_keep_serving() {
    use std::io::{Read, Write};
    let (_meta, url) = start_meta(&[]);
    let (_local, _) = start_local(&url, "32MiB");
    wait_for_services(&url, 1);
    let store = pure_client(&url);
    store.put("keep", b"precious").unwrap();

    // Garbage and a truncated frame at the meta service's port.
    let meta_addr = parse_discovery(&url).unwrap()[0];
    for junk in [
        &b"\x00\x00\x00\x05hello"[..],
        &[0xFF; 64][..],
        &[0, 0, 0, 200, 1, 2][..],
    ] {
        let mut c = std::net::TcpStream::connect(meta_addr).unwrap();
        let _ = c.write_all(junk);
    }
    // Requests that name an unknown segment, or reach past a segment's end, at the
    // local service's data port.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = rt.block_on(async {
        let rpc = connect_meta(meta_addr, Duration::from_secs(5))
            .await
            .unwrap();
        let eps = rpc
            .endpoints(context(Duration::from_secs(5)))
            .await
            .unwrap()
            .unwrap();
        eps[0].1.tcp.unwrap()
    });
    let frame_op =
        |op, segment, offset, len, tag| frame_part(op, segment, offset, len, tag, 0, len);
    let frame = |segment, offset, len| frame_op(2, segment, offset, len, Tag::default());
    let mut c = std::net::TcpStream::connect(data).unwrap();
    for req in [
        frame(999, 0, 8),
        frame(1, 32 << 20, 8),
        frame(1, u64::MAX - 3, 8),
    ] {
        c.write_all(&req).unwrap();
        let mut answer = [0u8; 16];
        c.read_exact(&mut answer).unwrap();
        assert_eq!(i32::from_le_bytes(answer[0..4].try_into().unwrap()), -3000);
    }
    let mut bad = std::net::TcpStream::connect(data).unwrap();
    bad.write_all(&[0xAB; 80]).unwrap();
    let mut answer = [0u8; 16];
    bad.read_exact(&mut answer).unwrap();
    assert_eq!(i32::from_le_bytes(answer[0..4].try_into().unwrap()), -3000);

    // A writer granted one blob cannot write past its end: the capability names the
    // exact range, so a longer write is refused before a byte lands.
    let granted = rt.block_on(async {
        let rpc = connect_meta(meta_addr, Duration::from_secs(5))
            .await
            .unwrap();
        let key = memcache_core::Key::new("granted").unwrap();
        let cfg = ReplicateConfig::default();
        rpc.alloc(
            context(Duration::from_secs(5)),
            vec![(key, 4096)],
            cfg,
            0,
            0,
            None,
        )
        .await
        .unwrap()
        .unwrap()
        .remove(0)
        .unwrap()
    });
    let (b, tag) = (granted.blobs[0], granted.tags[0]);
    let mut w = std::net::TcpStream::connect(data).unwrap();
    w.write_all(&frame_op(1, b.segment, b.offset, b.len + 4096, tag))
        .unwrap();
    let mut answer = [0u8; 16];
    w.read_exact(&mut answer).unwrap();
    assert_eq!(i32::from_le_bytes(answer[0..4].try_into().unwrap()), -3000);
    // Nor with a part that starts inside the blob and ends past it, or wraps around.
    for (at, n) in [(4000, 200), (1, u64::MAX)] {
        let mut w = std::net::TcpStream::connect(data).unwrap();
        w.write_all(&frame_part(1, b.segment, b.offset, b.len, tag, at, n))
            .unwrap();
        w.read_exact(&mut answer).unwrap();
        assert_eq!(i32::from_le_bytes(answer[0..4].try_into().unwrap()), -3000);
    }
    let mut w = std::net::TcpStream::connect(data).unwrap();
    w.write_all(&frame_op(1, b.segment, b.offset, b.len, tag))
        .unwrap();
    w.write_all(&[0x42; 4096]).unwrap();
    w.read_exact(&mut answer).unwrap();
    assert_eq!(i32::from_le_bytes(answer[0..4].try_into().unwrap()), 0);

    // Both services still serve, and nothing was corrupted.
    assert_eq!(store.get("keep").unwrap(), b"precious");
    store.put("after", b"fine").unwrap();
    assert_eq!(pure_client(&url).get("after").unwrap(), b"fine");
}

#[test]
fn a_client_killed_mid_put_leaves_nothing_once_its_lease_ends() {
    let (_meta, url) = start_meta(&["--put-lease-ms", "400"]);
    let (_local, _) = start_local(&url, "256MiB");
    wait_for_services(&url, 1);
    let mut bench = Proc(
        Command::new(mmc_bin())
            .args([
                "bench",
                "layers",
                "--discovery",
                &url,
                "--keys",
                "16",
                "--rounds",
                "1000",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("the writer has space in use", || stats(&url).used_bytes > 0);
    bench.0.kill().unwrap();
    bench.0.wait().unwrap();
    // Committed objects of the dead writer are ordinary objects: remove them. What is
    // left are its uncommitted puts, which the meta service rolls back after the lease.
    let cleaner = pure_client(&url);
    let keys: Vec<String> = (0..16).map(|i| format!("bench/layers/{i}")).collect();
    eventually("the dead writer's space is free", || {
        let _ = cleaner.batch_remove(&keys);
        let s = stats(&url);
        s.used_bytes == 0 && s.objects == 0
    });
    // And the space is usable again.
    cleaner.put("after", &vec![1u8; 1 << 20]).unwrap();
}

#[test]
fn clients_and_local_services_reconnect_to_a_restarted_meta_service() {
    let (meta, url) = start_meta(&["--heartbeat-timeout-ms", "2000"]);
    let (_local, _) = start_local(&url, "32MiB");
    wait_for_services(&url, 1);
    let store = pure_client(&url);
    store.put("before", b"old").unwrap();

    drop(meta); // kill -9
    let (_meta, same) = start_meta_at(&url, &[]);
    assert_eq!(same, url);
    // The local service notices, registers again with the empty meta service, and the
    // client's next calls go to the new instance.
    wait_for_services(&url, 1);
    eventually("the client is reconnected", || {
        store.is_exist("before").is_ok()
    });
    assert_eq!(
        store.is_exist("before"),
        Ok(false),
        "a restarted meta service starts empty"
    );
    store.put("after", b"new").unwrap();
    assert_eq!(store.get("after").unwrap(), b"new");
    assert_eq!(pure_client(&url).get("after").unwrap(), b"new");
}

#[test]
fn a_stopped_local_service_leaves_no_socket_behind_and_a_killed_ones_is_reused() {
    let (_meta, url) = start_meta(&[]);
    let socket = std::env::temp_dir().join(format!("mmc-stop-{}.sock", std::process::id()));
    let path = socket.to_str().unwrap();
    let (mut local, _) = start_local_with(&url, "16MiB", &["--shm-socket", path]);
    assert!(socket.exists());
    // A second service may not take over the socket of a live one.
    let out = Command::new(mmc_bin())
        .args(["local", "--discovery", &url, "--dram-size", "16MiB"])
        .args(["--shm-socket", path])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));

    let term = Command::new("kill")
        .args(["-TERM", &local.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(local.0.wait().unwrap().success());
    assert!(!socket.exists(), "SIGTERM left {} behind", socket.display());

    // SIGKILL leaves the file; the next service on the same path replaces it.
    let (mut local, _) = start_local_with(&url, "16MiB", &["--shm-socket", path]);
    local.0.kill().unwrap();
    local.0.wait().unwrap();
    assert!(socket.exists());
    let (_local, _) = start_local_with(&url, "16MiB", &["--shm-socket", path]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

/// Sends one raw data-plane request (and, for a write, its payload); the answer's
/// status, and for a read that was served, the bytes.
fn raw_request(data: std::net::SocketAddr, head: &[u8], payload: &[u8]) -> (i32, Vec<u8>) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(data).unwrap();
    c.write_all(head).unwrap();
    // A refused write is answered and hung up on, maybe before its payload is read.
    let _ = c.write_all(payload);
    let mut answer = [0u8; 16];
    c.read_exact(&mut answer).unwrap();
    let status = i32::from_le_bytes(answer[0..4].try_into().unwrap());
    let len = u64::from_le_bytes(answer[8..16].try_into().unwrap());
    let mut bytes = vec![0u8; if status == 0 { len as usize } else { 0 }];
    c.read_exact(&mut bytes).unwrap();
    (status, bytes)
}

/// Capabilities are fenced in time. A writer whose put was rolled back at its deadline,
/// one whose put was committed, and a reader whose lease ended each come back with the
/// capability they captured, raw on the data plane, after the range went to another
/// object: the local service refuses them, and that object is byte-identical.
#[test]
fn late_writers_and_readers_are_refused_and_the_range_keeps_its_new_object() {
    let (_meta, url) = start_meta(&[
        "--put-lease-ms",
        "500",
        "--set",
        "read_lease=500",
        "--set",
        "clock_skew=200",
    ]);
    let (_local, _) = start_local_with(&url, "32MiB", &["--heartbeat-interval-ms", "50"]);
    wait_for_services(&url, 1);
    let store = pure_client(&url);
    let meta_addr = parse_discovery(&url).unwrap()[0];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rpc = rt
        .block_on(connect_meta(meta_addr, Duration::from_secs(5)))
        .unwrap();
    let ctx = || context(Duration::from_secs(5));
    let data = rt.block_on(rpc.endpoints(ctx())).unwrap().unwrap()[0]
        .1
        .tcp
        .unwrap();
    // Objects of this size (3 pages) are the only ones: a freed range is the next one's.
    const SIZE: u64 = 3 * 4096;
    let alloc = |key: &str, lease_ms: u64| {
        let key = memcache_core::Key::new(key).unwrap();
        let cfg = ReplicateConfig::default();
        let mut out = rt
            .block_on(rpc.alloc(ctx(), vec![(key, SIZE)], cfg, 0, lease_ms, None))
            .unwrap()
            .unwrap();
        out.remove(0).unwrap()
    };
    let range_of = |key: &str| {
        let info = store.get_key_info(key).unwrap();
        (info.locations[0].segment, info.locations[0].offset)
    };
    let sleep_past = |unix_ms: u64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        std::thread::sleep(Duration::from_millis(unix_ms.saturating_sub(now) + 300));
    };
    let value = |seed: u8| -> Vec<u8> { (0..SIZE).map(|i| (i as u8).wrapping_mul(seed)).collect() };

    // 1. A put rolled back at its deadline; its range goes to "next" once the deadline
    // and the skew margin passed.
    let a = alloc("rolled-back", 0);
    let (b, tag) = (a.blobs[0], a.tags[0]);
    assert_eq!((tag.id, tag.expires_ms), (a.put_id, a.deadline_ms));
    sleep_past(a.deadline_ms + 200);
    store.put("next", &value(3)).unwrap();
    assert_eq!(
        range_of("next"),
        (b.segment, b.offset),
        "the range was not reused"
    );
    let late = frame_part(1, b.segment, b.offset, b.len, tag, 0, b.len);
    assert_eq!(raw_request(data, &late, &[0xEE; SIZE as usize]).0, -3004);
    assert!(
        store.get("next").unwrap() == value(3),
        "the late write landed"
    );

    // 2. A put committed early (a long lease): once its owner heard of the commit, its
    // capability writes nothing, though it has not expired.
    let c = alloc("committed", 60_000);
    let (cb, ctag) = (c.blobs[0], c.tags[0]);
    let write = frame_part(1, cb.segment, cb.offset, cb.len, ctag, 0, cb.len);
    assert_eq!(raw_request(data, &write, &value(5)).0, 0);
    let key = memcache_core::Key::new("committed").unwrap();
    let done = rt
        .block_on(rpc.commit(ctx(), vec![(key, c.put_id)]))
        .unwrap()
        .unwrap();
    assert_eq!(done, vec![Ok(())]);
    // Until the owner hears of the commit (its next heartbeat answer) the writer may
    // still write its own object: the probe writes the same bytes.
    eventually("the commit revokes the put's capability", || {
        raw_request(data, &write, &value(5)).0 == -3004
    });
    assert_eq!(raw_request(data, &write, &[0xEE; SIZE as usize]).0, -3004);
    assert!(store.get("committed").unwrap() == value(5));

    // 3. A reader whose lease ended, after its object was removed and the range went
    // to another: it reads nothing.
    store.put("read", &value(7)).unwrap();
    let key = memcache_core::Key::new("read").unwrap();
    let found = rt
        .block_on(rpc.lookup(ctx(), vec![key.clone()], 300, None, Vec::new()))
        .unwrap()
        .unwrap()
        .remove(0)
        .unwrap();
    let (rb, rtag) = (found.blobs[0], found.tags[0]);
    let read = frame_part(2, rb.segment, rb.offset, rb.len, rtag, 0, rb.len);
    assert!(raw_request(data, &read, &[]) == (0, value(7)));
    rt.block_on(rpc.release(ctx(), vec![(key, found.lease)]))
        .unwrap()
        .unwrap();
    store.remove("read").unwrap();
    sleep_past(found.until_ms + 200);
    store.put("after-read", &value(9)).unwrap();
    assert_eq!(range_of("after-read"), (rb.segment, rb.offset));
    let (status, bytes) = raw_request(data, &read, &[]);
    assert_eq!((status, bytes.len()), (-3004, 0));
    assert!(store.get("after-read").unwrap() == value(9));

    // 4. A reader that released a long lease: once its owner heard of the release, the
    // capability reads nothing, and the range goes to another object well before the
    // lease would have ended.
    let key = memcache_core::Key::new("after-read").unwrap();
    let found = rt
        .block_on(rpc.lookup(ctx(), vec![key.clone()], 60_000, None, Vec::new()))
        .unwrap()
        .unwrap()
        .remove(0)
        .unwrap();
    let (lb, ltag) = (found.blobs[0], found.tags[0]);
    let read = frame_part(2, lb.segment, lb.offset, lb.len, ltag, 0, lb.len);
    assert!(raw_request(data, &read, &[]) == (0, value(9)));
    rt.block_on(rpc.release(ctx(), vec![(key, found.lease)]))
        .unwrap()
        .unwrap();
    eventually("the release revokes the lease's capability", || {
        raw_request(data, &read, &[]).0 == -3004
    });
    store.remove("after-read").unwrap();
    let mut n = 0;
    eventually("the range is handed back before the lease's end", || {
        n += 1;
        store.put(format!("again{n}"), &value(11)).unwrap();
        range_of(&format!("again{n}")) == (lb.segment, lb.offset)
    });
    let (status, bytes) = raw_request(data, &read, &[]);
    assert_eq!((status, bytes.len()), (-3004, 0));
    assert!(store.get(format!("again{n}")).unwrap() == value(11));
}
