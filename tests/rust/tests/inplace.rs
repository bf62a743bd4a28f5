//! The in-place API (1.3.0's `batch_alloc` / `batch_copy` / `batch_write_finish`,
//! `batch_add_lease` / `batch_remove_lease`): writers fill their allocations in pieces
//! from several threads, readers copy out of leased addresses, and an address is
//! refused — with nothing moved — outside its object, after its allocation ended, or
//! without a lease. On the embedded pool, and across processes over TCP.

mod common;

use std::ffi::c_void;
use std::time::Duration;

use common::procs::*;
use common::*;
use memcache_client::{BlockingObjectStore, CopyWay, Medium, Piece};
use memcache_core::Blob;

const H2G: i32 = 3;
const G2H: i32 = 2;
const AUTO: i32 = 9;

/// Writes `data` into the allocation at `gva` in `pieces` equal parts, each from its
/// own thread, as a layer-wise engine does.
fn fill_in_pieces(store: &BlockingObjectStore, gva: u64, data: &[u8], pieces: usize) {
    let part = data.len() / pieces;
    std::thread::scope(|s| {
        for (i, chunk) in data.chunks(part).enumerate() {
            s.spawn(move || {
                let at = gva + (i * part) as u64;
                let mut p = [Piece::From(&[chunk])];
                store.batch_copy(&[at], &mut p, CopyWay::ToPool).unwrap();
            });
        }
    });
}

fn read_at(store: &BlockingObjectStore, gva: u64, len: usize) -> memcache_core::Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    let mut layers = [out.as_mut_slice()];
    let mut p = [Piece::Into(&mut layers)];
    store.batch_copy(&[gva], &mut p, CopyWay::FromPool)?;
    Ok(out)
}

/// Writes, commits and reads back through the in-place calls on `store`.
fn round_trip(store: &BlockingObjectStore, prefix: &str) {
    let (a, b) = (format!("{prefix}/a"), format!("{prefix}/b"));
    let data = pattern(7, 256 * KIB);
    let sizes = [data.len() as u64, 8192];
    let gvas = store.batch_alloc(&[&a, &b], &sizes, Medium::Dram, 0);
    let gvas: Vec<u64> = gvas.into_iter().map(Result::unwrap).collect();
    assert!(
        gvas.iter().all(|&g| g > 0 && g <= i64::MAX as u64),
        "{gvas:x?}"
    );
    // Asking again while writing gives the same address.
    assert_eq!(
        store.batch_alloc(&[&a], &sizes[..1], Medium::Dram, 0)[0],
        Ok(gvas[0])
    );
    // Not readable, not visible before the commit.
    assert_eq!(code(&read_at(store, gvas[0], 16)), -3101);
    assert_eq!(store.is_exist(&a), Ok(false));
    fill_in_pieces(store, gvas[0], &data, 4);
    let junk = pattern(8, 8192);
    fill_in_pieces(store, gvas[1], &junk, 2);
    // Commit one, roll back the other.
    let done = store.batch_write_finish(&[&a, &b], &[0, -1]);
    assert_eq!(codes(&done), [0, 0]);
    assert_eq!(store.get(&a).unwrap(), data);
    assert_eq!(store.is_exist(&b), Ok(false));
    // A finished allocation's address writes nothing any more.
    let mut p = [Piece::From(&[&junk[..16]])];
    assert_eq!(
        code(&store.batch_copy(&[gvas[0]], &mut p, CopyWay::ToPool)),
        -3102
    );
    assert_eq!(store.get(&a).unwrap(), data);

    // A reader: lease, copy pieces out of the key info's addresses, let go.
    let unleased = store.get_key_info(&a).unwrap();
    assert_eq!(codes(&store.batch_add_lease(&[&a], 0)), [0]);
    let info = store.get_key_info(&a).unwrap();
    // Under a lease the info comes from the lease, and says the same.
    assert_eq!(info, unleased);
    let gva = info.locations[0].gva;
    assert!(gva > 0);
    let tail = read_at(store, gva + 1000, 5000).unwrap();
    assert_eq!(tail, &data[1000..6000]);
    // Past the object's end, or into the leased object, is refused.
    assert_eq!(
        code(&read_at(store, gva + data.len() as u64 - 8, 16)),
        -3102
    );
    let mut p = [Piece::From(&[&junk[..16]])];
    assert_eq!(
        code(&store.batch_copy(&[gva], &mut p, CopyWay::ToPool)),
        -3101
    );
    store.batch_remove_lease(&[&a]).unwrap();
    assert_eq!(code(&read_at(store, gva, 16)), -3102);
    assert_eq!(code(&store.batch_remove_lease(&[&a])), -3000);
}

#[test]
fn in_place_writes_and_reads_on_the_embedded_pool() {
    let (_pool, store) = started(8 * MIB);
    round_trip(&store, "emb");
}

#[test]
fn in_place_writes_and_reads_over_tcp_between_processes() {
    let (_meta, url) = start_meta(&[]);
    let _locals: Vec<(Proc, u32)> = (0..2).map(|_| start_local(&url, "32MiB")).collect();
    wait_for_services(&url, 2);
    let store = tcp_client(&url);
    round_trip(&store, "tcp");
    // Another client (shared memory) reads what the TCP writer wrote.
    let other = pure_client(&url);
    assert_eq!(other.get("tcp/a").unwrap(), pattern(7, 256 * KIB));
}

#[test]
fn a_writer_past_its_lease_is_refused_and_changes_nothing() {
    let (pool, store) = started(8 * MIB);
    let first = pattern(1, 64 * KIB);
    let gva = store.batch_alloc(&["late"], &[first.len() as u64], Medium::Dram, 60)[0]
        .clone()
        .unwrap();
    fill_in_pieces(&store, gva, &first, 1);
    std::thread::sleep(Duration::from_millis(120));
    let second = pattern(2, 64 * KIB);
    let mut p = [Piece::From(&[&second[..]])];
    assert_eq!(
        code(&store.batch_copy(&[gva], &mut p, CopyWay::ToPool)),
        -3106
    );
    // The pool's bytes are still the first writer's.
    store.put("probe", b"p").unwrap();
    let segment = store.get_key_info("probe").unwrap().locations[0].segment;
    let blob = Blob {
        service: 0,
        medium: Medium::Dram,
        segment,
        offset: gva & ((1 << 40) - 1),
        len: first.len() as u64,
    };
    let mut seen = vec![0u8; first.len()];
    pool.transport()
        .read_blob(&blob, &mut [seen.as_mut_slice()])
        .unwrap();
    assert_eq!(seen, first);
    // Its commit is refused too, and the allocation rolled back.
    assert_eq!(codes(&store.batch_write_finish(&["late"], &[0])), [-3106]);
    assert_eq!(store.is_exist("late"), Ok(false));
    assert!(store.put("late", b"next").is_ok());
}

#[test]
fn a_reader_without_a_lease_is_refused() {
    let (_pool, store) = started(8 * MIB);
    let data = pattern(3, 32 * KIB);
    store.put("r", &data).unwrap();
    let gva = store.get_key_info("r").unwrap().locations[0].gva;
    // Never leased.
    assert_eq!(code(&read_at(&store, gva, 16)), -3102);
    // Leased for a moment, then expired.
    assert_eq!(
        codes(&store.batch_add_lease(&["r", "missing"], 50)),
        [0, -3007]
    );
    assert_eq!(read_at(&store, gva, 16).unwrap(), &data[..16]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(code(&read_at(&store, gva, 16)), -3106);
}

#[test]
fn the_pointer_layer_checks_directions_shapes_and_aliasing() {
    let (_pool, store) = started(8 * MIB);
    let data = pattern(4, 8192);
    let gva = store.batch_alloc(&["p"], &[8192], Medium::Dram, 0)[0]
        .clone()
        .unwrap();
    let src = data.as_ptr() as *mut c_void;
    // SAFETY: every pointer addresses the stated number of live bytes.
    unsafe {
        // Device directions need a device runtime; lists must agree in length.
        assert_eq!(
            code(&store.batch_copy_ptr(&[gva], &[src], &[8192], 0)),
            -3000
        );
        assert_eq!(
            code(&store.batch_copy_ptr(&[gva], &[src], &[8192], 1)),
            -3000
        );
        assert_eq!(
            code(&store.batch_copy_ptr(&[gva, gva], &[src], &[8192], H2G)),
            -3000
        );
        // AUTO writes into an allocation, in two layers.
        let half = data.as_ptr().wrapping_add(4096) as *mut c_void;
        let (bufs, sizes) = ([src, half], [4096usize, 4096]);
        store
            .batch_copy_layers_ptr(&[gva], &[&bufs], &[&sizes], AUTO)
            .unwrap();
    }
    assert_eq!(codes(&store.batch_write_finish(&["p"], &[0])), [0]);
    assert_eq!(store.get("p").unwrap(), data);
    store.batch_add_lease(&["p"], 0);
    let mut out = vec![0u8; 8192];
    let dst = out.as_mut_ptr() as *mut c_void;
    // SAFETY: as above.
    unsafe {
        // Two pieces read into overlapping destinations: refused, nothing moved.
        let overlapping = out.as_mut_ptr().wrapping_add(100) as *mut c_void;
        assert_eq!(
            code(&store.batch_copy_ptr(&[gva, gva], &[dst, overlapping], &[4096, 4096], G2H)),
            -3000
        );
        store.batch_copy_ptr(&[gva], &[dst], &[8192], AUTO).unwrap();
    }
    assert_eq!(out, data);
    // Media other than DRAM, zero sizes, bad keys.
    assert_eq!(
        codes(&store.batch_alloc(&["h"], &[10], Medium::Hbm, 0)),
        [-3000]
    );
    assert_eq!(
        codes(&store.batch_alloc(&["z", ""], &[0, 10], Medium::Dram, 0)),
        [-3000, -3000]
    );
    assert_eq!(
        codes(&store.batch_alloc(&["p"], &[10], Medium::Dram, 0)),
        [-3006]
    );
    assert_eq!(codes(&store.batch_write_finish(&["never"], &[0])), [-3000]);
}

#[test]
fn abandoned_grants_do_not_pile_up() {
    let (_pool, store) = started(64 * MIB);
    // Allocations never finished, leases never released: all end after 20 ms.
    for round in 0..20 {
        let keys: Vec<String> = (0..50).map(|i| format!("ab/{round}/{i}")).collect();
        let sizes = vec![4096u64; keys.len()];
        let gvas = store.batch_alloc(&keys, &sizes, Medium::Dram, 20);
        assert!(gvas.iter().all(Result::is_ok));
        std::thread::sleep(Duration::from_millis(25));
    }
    // The next allocation sweeps what ended: the table holds about the live grants.
    store.batch_alloc(&["ab/fresh"], &[4096], Medium::Dram, 0)[0]
        .clone()
        .unwrap();
    let held = store.inner().grants_held();
    assert!(held <= 2 * 50 + 64, "{held} grants held");
}

#[test]
fn leases_are_counted_and_a_second_finish_of_a_stored_key_is_done() {
    let (_pool, store) = started(8 * MIB);
    let data = pattern(9, 16 * KIB);
    store.put("two", &data).unwrap();
    // Two readers of one process lease the same object; the first lets go.
    assert_eq!(codes(&store.batch_add_lease(&["two"], 0)), [0]);
    assert_eq!(codes(&store.batch_add_lease(&["two"], 0)), [0]);
    let gva = store.get_key_info("two").unwrap().locations[0].gva;
    store.batch_remove_lease(&["two"]).unwrap();
    assert_eq!(read_at(&store, gva, 64).unwrap(), &data[..64]);
    store.batch_remove_lease(&["two"]).unwrap();
    assert_eq!(code(&read_at(&store, gva, 64)), -3102);
    assert_eq!(code(&store.batch_remove_lease(&["two"])), -3000);
    // Releasing more leases than held releases none.
    assert_eq!(codes(&store.batch_add_lease(&["two"], 0)), [0]);
    assert_eq!(code(&store.batch_remove_lease(&["two", "two"])), -3000);
    assert_eq!(read_at(&store, gva, 64).unwrap(), &data[..64]);
    // A commit of a stored key this client is not writing is done; of a missing one, not.
    assert_eq!(
        codes(&store.batch_write_finish(&["two", "none"], &[0, 0])),
        [0, -3000]
    );
    assert_eq!(store.get("two").unwrap(), data);
}

#[test]
fn one_batch_copy_of_many_pieces_is_shared_by_the_copy_threads_byte_exact() {
    let pool = pool();
    let mut config = memcache_client::ClientConfig::with_dram(64 << 20);
    (config.write_threads, config.read_threads) = (4, 4);
    let store = BlockingObjectStore::with_pool(config, pool.clone()).unwrap();
    store.init(0, true).unwrap();
    let keys = ["big/a", "big/b"];
    let data = [pattern(31, 6 * MIB + 5), pattern(32, 6 * MIB - 7)];
    let sizes = data.clone().map(|d| d.len() as u64);
    let gvas: Vec<u64> = store
        .batch_alloc(&keys, &sizes, Medium::Dram, 0)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // Each object in four pieces of uneven length, all eight in one call.
    let mut at = Vec::new();
    let mut srcs: Vec<[&[u8]; 1]> = Vec::new();
    for (d, gva) in data.iter().zip(&gvas) {
        for (lo, hi) in [(0, 1), (1, MIB), (MIB, 4 * MIB + 3), (4 * MIB + 3, d.len())] {
            at.push(gva + lo as u64);
            srcs.push([&d[lo..hi]]);
        }
    }
    let mut pieces: Vec<Piece> = srcs.iter().map(|s| Piece::From(s)).collect();
    store.batch_copy(&at, &mut pieces, CopyWay::ToPool).unwrap();
    assert_eq!(codes(&store.batch_write_finish(&keys, &[0, 0])), [0, 0]);
    assert_eq!(store.get(keys[0]).unwrap(), data[0]);
    assert_eq!(store.get(keys[1]).unwrap(), data[1]);

    // Read back under a lease: both objects in one call, each in two pieces.
    assert_eq!(codes(&store.batch_add_lease(&keys, 0)), [0, 0]);
    let infos: Vec<u64> = keys
        .iter()
        .map(|k| store.get_key_info(k).unwrap().locations[0].gva)
        .collect();
    let mut outs: Vec<Vec<u8>> = data.iter().map(|d| vec![0u8; d.len()]).collect();
    let mut at = Vec::new();
    let mut halves: Vec<[&mut [u8]; 1]> = Vec::new();
    for (out, gva) in outs.iter_mut().zip(&infos) {
        let (lo, hi) = out.split_at_mut(3 * MIB + 1);
        at.extend([*gva, gva + lo.len() as u64]);
        halves.extend([[lo], [hi]]);
    }
    let mut pieces: Vec<Piece> = halves.iter_mut().map(|h| Piece::Into(h)).collect();
    store
        .batch_copy(&at, &mut pieces, CopyWay::FromPool)
        .unwrap();
    drop(pieces);
    assert!(outs[0] == data[0] && outs[1] == data[1]);
    store.batch_remove_lease(&keys).unwrap();
}
