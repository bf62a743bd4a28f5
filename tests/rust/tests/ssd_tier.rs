//! The SSD tier through the memcached gateway: `mmc memcached --data-dir` keeps its
//! items on SSD behind DRAM, reads what DRAM evicted back from SSD, and finds its
//! items again after a restart, except those whose records were damaged, which are
//! missing rather than wrong.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::procs::*;
use memcache_core::Medium;

fn data_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmc-ssd-tier-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn start_gateway(dir: &Path, dram: &str) -> (Proc, String) {
    let dir = dir.to_str().unwrap();
    let args = ["memcached", "--bind", "127.0.0.1:0", "--dram-size", dram];
    let (p, line) = spawn_mmc(&[&args[..], &["--data-dir", dir, "--ssd-size", "1GiB"]].concat());
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    (p, addr)
}

/// Stops the gateway as an operator would (SIGTERM) and waits until it has exited.
fn stop(mut p: Proc) {
    let pid = p.0.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            assert!(status.success(), "the gateway exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "the gateway did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Conn(TcpStream);

impl Conn {
    fn open(addr: &str) -> Conn {
        let c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn(c)
    }

    fn ask(&mut self, request: &[u8], until: &[u8]) -> Vec<u8> {
        self.0.write_all(request).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !got.ends_with(until) {
            let n = self.0.read(&mut buf).expect("a reply before the timeout");
            assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    fn set(&mut self, key: &str, flags: u32, value: &[u8]) {
        let mut req = format!("set {key} {flags} 0 {}\r\n", value.len()).into_bytes();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
        assert_eq!(self.ask(&req, b"\r\n"), b"STORED\r\n", "set {key}");
    }

    /// The value and flags under `key`, or None.
    fn get(&mut self, key: &str) -> Option<(u32, Vec<u8>)> {
        let reply = self.ask(format!("get {key}\r\n").as_bytes(), b"END\r\n");
        if reply == b"END\r\n" {
            return None;
        }
        let line_end = reply.windows(2).position(|w| w == b"\r\n").unwrap();
        let head = String::from_utf8_lossy(&reply[..line_end]).into_owned();
        let parts: Vec<&str> = head.split(' ').collect();
        assert_eq!(parts[..2], ["VALUE", key], "{head}");
        let flags = parts[2].parse().unwrap();
        let len: usize = parts[3].parse().unwrap();
        let value = reply[line_end + 2..line_end + 2 + len].to_vec();
        assert_eq!(&reply[line_end + 2 + len..], b"\r\nEND\r\n");
        Some((flags, value))
    }
}

/// A value only item `i` has, `len` bytes long.
fn value(i: usize, len: usize) -> Vec<u8> {
    let tag = format!("item-{i}:");
    tag.bytes().cycle().take(len).collect()
}

#[test]
fn items_survive_a_restart_and_damaged_records_are_missing_not_wrong() {
    const N: usize = 200;
    let dir = data_dir("restart");
    let (gw, addr) = start_gateway(&dir, "64MiB");
    let mut c = Conn::open(&addr);
    for i in 0..N {
        c.set(&format!("key{i}"), i as u32, &value(i, 100 + i * 37));
    }
    c.set("gone", 0, b"deleted before the restart");
    assert_eq!(c.ask(b"delete gone\r\n", b"\r\n"), b"DELETED\r\n");
    drop(c);
    stop(gw);

    let (gw, addr) = start_gateway(&dir, "64MiB");
    let mut c = Conn::open(&addr);
    for i in 0..N {
        let got = c.get(&format!("key{i}"));
        assert_eq!(got, Some((i as u32, value(i, 100 + i * 37))), "key{i}");
    }
    assert_eq!(c.get("gone"), None, "a deleted item stays deleted");
    // New writes after a restart are kept too.
    c.set("after", 7, b"written after the restart");
    drop(c);
    stop(gw);

    // Flip one byte in the middle of a few items' records (the layout is the SSD
    // store's: a 30-byte header with the key length at 5 and the value length at 6).
    let damaged = [3usize, 50, 121, 199];
    let path = dir.join("objects.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let mut at = 0;
    let mut flipped = 0;
    while at + 30 <= bytes.len() {
        let key_len = bytes[at + 5] as usize;
        let value_len = u32::from_le_bytes(bytes[at + 6..at + 10].try_into().unwrap()) as usize;
        let key = String::from_utf8_lossy(&bytes[at + 30..at + 30 + key_len]).into_owned();
        // Items are stored under the gateway's namespace (`mc:` by default).
        if damaged.iter().any(|i| key == format!("mc:key{i}")) && bytes[at + 4] == 1 {
            bytes[at + 30 + key_len + value_len / 2] ^= 0x5A;
            flipped += 1;
        }
        at += 30 + key_len + value_len;
    }
    assert!(flipped >= damaged.len(), "a record for each damaged item");
    std::fs::write(&path, &bytes).unwrap();

    let (_gw, addr) = start_gateway(&dir, "64MiB");
    let mut c = Conn::open(&addr);
    for i in 0..N {
        let got = c.get(&format!("key{i}"));
        if damaged.contains(&i) {
            assert_eq!(
                got, None,
                "key{i}'s record is damaged: missing, never wrong"
            );
        } else {
            assert_eq!(got, Some((i as u32, value(i, 100 + i * 37))), "key{i}");
        }
    }
    assert_eq!(
        c.get("after"),
        Some((7, b"written after the restart".to_vec()))
    );
    drop(_gw);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_dram_evicts_is_read_back_from_ssd() {
    // 24 MiB of items through 8 MiB of DRAM, written at a pace the tier keeps up
    // with: without the SSD tier at most about a third could be read back.
    const N: usize = 384;
    const LEN: usize = 64 << 10;
    let dir = data_dir("demote");
    let (_gw, addr) = start_gateway(&dir, "8MiB");
    let mut c = Conn::open(&addr);
    for i in 0..N {
        c.set(&format!("big{i}"), 0, &value(i, LEN));
        if i % 16 == 15 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    let mut found = 0;
    for i in 0..N {
        if let Some((_, v)) = c.get(&format!("big{i}")) {
            assert_eq!(v, value(i, LEN), "big{i} read back wrong");
            found += 1;
        }
    }
    eprintln!("{found} of {N} items read back");
    assert!(
        found * LEN > 20 << 20,
        "only {found} of {N} items read back: DRAM holds 8 MiB"
    );
    drop(_gw);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn media(store: &memcache_client::BlockingObjectStore, key: &str) -> Vec<Medium> {
    let info = store.get_key_info(key).unwrap();
    info.locations.iter().map(|l| l.medium).collect()
}

#[test]
fn a_local_service_demotes_promotes_and_recovers_after_a_crash() {
    const OBJ: usize = 256 << 10;
    let (_meta, url) = start_meta(&[]);
    let dir = data_dir("local");
    let ssd = format!("ssd_dir={}", dir.display());
    let extra = ["--set", &ssd, "--set", "ssd_size=268435456"];
    let (local, _) = start_local_with(&url, "4MiB", &extra);
    wait_for_services(&url, 1);
    let client = pure_client(&url);
    let put = |i: usize| client.put(format!("obj{i}"), &value(i, OBJ)).unwrap();

    for i in 0..8 {
        put(i);
    }
    eventually("the first objects are on SSD", || {
        (0..8).all(|i| media(&client, &format!("obj{i}")).contains(&Medium::Ssd))
    });
    // 6 MiB more through 4 MiB of DRAM: the first objects leave DRAM but stay on SSD.
    for i in 8..32 {
        put(i);
        if i % 4 == 3 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(media(&client, "obj0"), vec![Medium::Ssd]);
    // Read from SSD, twice: hot, so it is copied back into DRAM.
    for _ in 0..2 {
        assert_eq!(client.get("obj0").unwrap(), value(0, OBJ));
    }
    eventually("obj0 is promoted back into DRAM", || {
        media(&client, "obj0") == vec![Medium::Dram, Medium::Ssd]
    });
    assert_eq!(client.get("obj0").unwrap(), value(0, OBJ));

    // A crash loses what DRAM alone held, never what reached SSD.
    let on_ssd: Vec<usize> = (0..32)
        .filter(|i| media(&client, &format!("obj{i}")).contains(&Medium::Ssd))
        .collect();
    assert!(on_ssd.len() >= 8, "only {on_ssd:?} on SSD");
    drop(local); // SIGKILL
    eventually("the pool notices the service is gone", || {
        stats(&url).services == 0
    });
    let (_local, _) = start_local_with(&url, "4MiB", &extra);
    wait_for_services(&url, 1);
    for i in on_ssd {
        assert_eq!(
            client.get(format!("obj{i}")).unwrap(),
            value(i, OBJ),
            "obj{i}"
        );
    }
    drop(_local);
    std::fs::remove_dir_all(&dir).unwrap();
}
