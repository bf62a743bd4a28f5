//! Real `mmc` processes on 127.0.0.1 for the multi-process tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use memcache_client::{BlockingObjectStore, ClientConfig};
use std::io::{Read, Write};

use memcache_proto::{parse_discovery, MetaLink, MetaStats};

/// The `mmc` binary of this workspace, built (once, by cargo, in the same profile as
/// this test) if it is missing or stale.
pub fn mmc_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // This test runs from <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target layout");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => "dev",
        };
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "memcache-cli",
                "--bin",
                "mmc",
                "--profile",
                profile,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo to build mmc");
        assert!(status.success(), "building mmc failed");
        profile_dir.join("mmc")
    })
}

/// A child process killed when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `mmc ARGS` and returns it with the first line it prints.
pub fn spawn_mmc(args: &[&str]) -> (Proc, String) {
    let (p, mut lines) = spawn_mmc_lines(args, 1);
    (p, lines.remove(0))
}

/// Runs `mmc ARGS` and returns it with the first `n` lines it prints.
pub fn spawn_mmc_lines(args: &[&str], n: usize) -> (Proc, Vec<String>) {
    let mut child = Command::new(mmc_bin())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning mmc");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let lines = (0..n)
        .map(|_| {
            let mut line = String::new();
            out.read_line(&mut line).expect("reading a status line");
            line
        })
        .collect();
    (Proc(child), lines)
}

/// Starts a local service process with `dram` bytes; returns it and its id.
pub fn start_local(url: &str, dram: &str) -> (Proc, u32) {
    start_local_with(url, dram, &[])
}

/// The same, with more arguments.
pub fn start_local_with(url: &str, dram: &str, extra: &[&str]) -> (Proc, u32) {
    let args = ["local", "--discovery", url, "--dram-size", dram];
    let (p, line) = spawn_mmc(&[&args[..], extra].concat());
    let id = line
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (p, id)
}

/// `n` distinct loopback ports that were free when asked.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The address in a status line that ends with `http://HOST:PORT`.
pub fn http_of(line: &str) -> String {
    line.trim()
        .rsplit("http://")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Starts `mmc meta` on a free port; returns the process and its discovery URL.
pub fn start_meta(extra: &[&str]) -> (Proc, String) {
    start_meta_at("tcp://127.0.0.1:0", extra)
}

pub fn start_meta_at(url: &str, extra: &[&str]) -> (Proc, String) {
    let (child, url, _) = start_meta_with_http(url, extra);
    (child, url)
}

/// Starts `mmc meta`; returns it, its discovery URL and its admin HTTP address.
pub fn start_meta_with_http(url: &str, extra: &[&str]) -> (Proc, String, String) {
    let mut args = vec!["meta", "--discovery", url];
    args.extend_from_slice(extra);
    let (mut child, line) = spawn_mmc_lines(&args, 2);
    let http = http_of(&line[1]);
    let line = line[0].clone();
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("a URL at the end of the line")
        .to_string();
    assert!(url.starts_with("tcp://127.0.0.1:"), "{line}");
    let _ = &mut child;
    (child, url, http)
}

pub fn stats(url: &str) -> MetaStats {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let link = MetaLink::new(parse_discovery(url).unwrap(), Duration::from_secs(5));
        link.call(|rpc, ctx| async move { rpc.stats(ctx).await })
            .await
            .unwrap()
    })
}

/// Waits (bounded) until the meta service counts `n` local services.
pub fn wait_for_services(url: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats(url).services != n {
        assert!(
            Instant::now() < deadline,
            "never reached {n} local services"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pure client of `url` that moves every byte over the TCP data plane, as a client on
/// another host would.
pub fn tcp_client(url: &str) -> BlockingObjectStore {
    let mut config = ClientConfig::remote(url, 0);
    config.transport = Some(memcache_client::TransportKind::Tcp);
    let store = BlockingObjectStore::new(config).unwrap();
    store.init(0, false).unwrap();
    store
}

pub fn pure_client(url: &str) -> BlockingObjectStore {
    let store = BlockingObjectStore::new(ClientConfig::remote(url, 0)).unwrap();
    store.init(0, false).unwrap();
    store
}

/// One HTTP GET on loopback: the status and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut c = std::net::TcpStream::connect(addr).expect("admin HTTP reachable");
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Polls `f` every 50 ms for up to 10 s.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
