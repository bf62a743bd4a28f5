//! A meta service with `--data-dir`, killed with SIGKILL while clients write, loses no
//! acknowledged object; and one whose log was damaged while it was down either starts
//! with everything it acknowledged or refuses to start, saying why.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::procs::*;
use common::*;

fn data_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmc-durability-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Writers put keys until the meta service is killed; every put that was answered 0
/// is found, with its bytes, once the service is back from its data directory.
#[test]
fn a_meta_service_killed_mid_write_keeps_every_acknowledged_object() {
    let dir = data_dir("kill");
    let dir_arg = dir.to_str().unwrap();
    let port = free_ports(1)[0];
    let at = format!("tcp://127.0.0.1:{port}");
    let meta_args = ["--data-dir", dir_arg, "--heartbeat-timeout-ms", "5000"];
    let (mut meta, url) = start_meta_at(&at, &meta_args);
    let (_local, _) = start_local(&url, "64MiB");
    wait_for_services(&url, 1);
    let acked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    for round in 0..3u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let (url, stop, acked) = (url.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let store = pure_client(&url);
                    for i in 0..100_000u64 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("r{round}-w{w}-{i}");
                        let seed = round << 40 | w << 32 | i;
                        if store.put(&key, &pattern(seed, 700)).is_ok() {
                            acked.lock().unwrap().push((key, seed));
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 250 * round));
        drop(meta); // SIGKILL, with writes in flight
        std::thread::sleep(Duration::from_millis(100));
        // Back while the writers still write: their retries land on the new instance.
        let (back, same) = start_meta_at(&url, &meta_args);
        assert_eq!(same, url);
        meta = back;
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        let store = pure_client(&url);
        let acked = acked.lock().unwrap();
        assert!(!acked.is_empty());
        for (key, seed) in acked.iter() {
            let mut got = store.get(key);
            for _ in 0..100 {
                if got.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
                got = store.get(key);
            }
            assert_eq!(
                got.as_deref().ok(),
                Some(&pattern(*seed, 700)[..]),
                "round {round}: {key} was acknowledged"
            );
        }
        eprintln!(
            "round {round}: {} acknowledged objects survived",
            acked.len()
        );
    }
    drop(meta);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stopped meta service's log: cut at the end, it starts and keeps what it had before
/// the cut; damaged in the middle, it refuses to start and names the damage.
#[test]
fn a_damaged_log_is_refused_and_a_torn_tail_is_cut() {
    let dir = data_dir("damage");
    let dir_arg = dir.to_str().unwrap();
    let meta_args = ["--data-dir", dir_arg];
    let (meta, url) = start_meta(&meta_args);
    let (local, _) = start_local(&url, "16MiB");
    wait_for_services(&url, 1);
    let store = pure_client(&url);
    for i in 0..50u64 {
        store.put(format!("k{i}"), &pattern(i, 100)).unwrap();
    }
    drop(store);
    drop(local);
    drop(meta);
    let (_, log) = memcache_raft::disk::segment_files(&dir)
        .unwrap()
        .pop()
        .expect("a log segment");
    let bytes = std::fs::read(&log).unwrap();

    // A torn tail: the last few bytes never reached the disk.
    std::fs::write(&log, &bytes[..bytes.len() - 3]).unwrap();
    let (meta, url2) = start_meta(&meta_args);
    let store = pure_client(&url2);
    // The last record was the newest commit index or a put's commit; earlier puts stay.
    for i in 0..45u64 {
        assert_eq!(store.is_exist(format!("k{i}")), Ok(true), "k{i}");
    }
    drop(store);
    drop(meta);

    // Damage in the middle: a flipped bit with acknowledged records after it.
    let mut bytes = std::fs::read(&log).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    let out = Command::new(mmc_bin())
        .args(["meta", "--discovery", "tcp://127.0.0.1:0"])
        .args(meta_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged"), "{err}");
    assert!(
        err.contains(&log.file_name().unwrap().to_string_lossy().to_string()),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
