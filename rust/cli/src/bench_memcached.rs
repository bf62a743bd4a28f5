//! `mmc bench memcached`: a real memcached and our gateway (`mmc memcached` on the
//! embedded default) with the same memory and threads, driven by the same load
//! generator in the same run: connections that each keep one request in flight, a 90 %
//! get / 10 % set mix (`--get-percent`) over a pre-filled key space, values of 100 B to
//! 4 KiB; throughput and the latency of every request, rounds alternating.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::children::{free_addrs, spawn_quiet, Owned};

const KEYS: usize = 10_000;
const MIN_VALUE: usize = 100;
const MAX_VALUE: usize = 4096;
const MEMORY_MB: u64 = 256;

async fn wait_until_up(addr: &str) -> Result<(), String> {
    let give_up = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > give_up {
            return Err(format!("nothing answers on {addr}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn start_memcached(threads: usize) -> Result<(Owned, String), String> {
    let addr = free_addrs(1)?[0];
    let (port, memory, threads) = (
        addr.port().to_string(),
        MEMORY_MB.to_string(),
        threads.to_string(),
    );
    let args = [
        "-l",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "0",
        "-u",
        "root",
        "-m",
        &memory,
        "-t",
        &threads,
    ];
    let child = spawn_quiet("memcached", &args)
        .map_err(|e| format!("starting memcached (apt-get install memcached): {e}"))?;
    Ok((child, addr.to_string()))
}

fn start_gateway(data_dir: Option<&Path>) -> Result<(Owned, String), String> {
    let addr = free_addrs(1)?[0].to_string();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dram = format!("{MEMORY_MB}MiB");
    let mut args = vec!["memcached", "--bind", &addr, "--dram-size", &dram];
    if let Some(dir) = data_dir {
        let _ = std::fs::remove_dir_all(dir);
        args.extend(["--data-dir", dir.to_str().ok_or("a data dir in UTF-8")?]);
    }
    let child = spawn_quiet(exe, &args).map_err(|e| format!("starting mmc memcached: {e}"))?;
    Ok((child, addr))
}

/// Reads until `buf` ends a reply: `END\r\n` for gets, a line for sets.
async fn read_reply(c: &mut TcpStream, buf: &mut Vec<u8>, get: bool) -> Result<(), String> {
    buf.clear();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let done = if get {
            buf.ends_with(b"END\r\n")
        } else {
            buf.ends_with(b"\r\n")
        };
        if done {
            return Ok(());
        }
        let n = c.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn set_request(key: usize, len: usize) -> Vec<u8> {
    let mut r = format!("set bench:{key} 0 0 {len}\r\n").into_bytes();
    r.extend(std::iter::repeat_n(b'v', len));
    r.extend_from_slice(b"\r\n");
    r
}

async fn fill(addr: &str) -> Result<(), String> {
    let mut c = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut rng = StdRng::seed_from_u64(1);
    let mut buf = Vec::new();
    for key in 0..KEYS {
        let len = rng.random_range(MIN_VALUE..=MAX_VALUE);
        c.write_all(&set_request(key, len))
            .await
            .map_err(|e| e.to_string())?;
        read_reply(&mut c, &mut buf, false).await?;
        if !buf.starts_with(b"STORED") {
            return Err(format!("fill: {}", String::from_utf8_lossy(&buf)));
        }
    }
    Ok(())
}

/// Runs the load on `addr` for `secs`: requests per second, how many, and each
/// request's latency in microseconds.
async fn drive(
    addr: &str,
    conns: usize,
    secs: f64,
    get_percent: u8,
) -> Result<(f64, u64, Vec<u32>), String> {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..conns {
        let (addr, done) = (addr.to_string(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
            let _ = c.set_nodelay(true);
            let mut rng = StdRng::seed_from_u64(100 + t as u64);
            let (mut buf, mut latencies) = (Vec::new(), Vec::new());
            while Instant::now() < until {
                let key = rng.random_range(0..KEYS);
                let get = rng.random_range(0..100) < get_percent;
                let request = if get {
                    format!("get bench:{key}\r\n").into_bytes()
                } else {
                    set_request(key, rng.random_range(MIN_VALUE..=MAX_VALUE))
                };
                let sent = Instant::now();
                c.write_all(&request).await.map_err(|e| e.to_string())?;
                read_reply(&mut c, &mut buf, get).await?;
                latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<Vec<u32>, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|e| e.to_string())??);
    }
    let done = done.load(Ordering::Relaxed);
    Ok((done as f64 / start.elapsed().as_secs_f64(), done, latencies))
}

/// A server's CPU time (user and system, seconds) over the requests it served.
#[derive(Default)]
struct Cpu {
    user: f64,
    system: f64,
    requests: u64,
}

impl Cpu {
    fn of(p: &Owned) -> Cpu {
        let (user, system) = crate::procmem::cpu_split(p.pid()).unwrap_or_default();
        Cpu {
            user,
            system,
            requests: 0,
        }
    }

    /// Counts what was spent between `before` and `after` on `requests` requests.
    fn add(&mut self, before: &Cpu, after: &Cpu, requests: u64) {
        self.user += after.user - before.user;
        self.system += after.system - before.system;
        self.requests += requests;
    }

    fn us_per_op(&self, seconds: f64) -> f64 {
        seconds * 1e6 / self.requests.max(1) as f64
    }
}

pub fn run(
    rounds: usize,
    conns: usize,
    get_percent: u8,
    data_dir: Option<&Path>,
) -> Result<Value, String> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (mc, theirs) = start_memcached(threads)?;
        let (gw, ours) = start_gateway(data_dir)?;
        wait_until_up(&theirs).await?;
        wait_until_up(&ours).await?;
        fill(&theirs).await?;
        fill(&ours).await?;
        drive(&theirs, conns, 0.5, get_percent).await?;
        drive(&ours, conns, 0.5, get_percent).await?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut a_lat, mut b_lat) = (Vec::new(), Vec::new());
        // Each server's CPU time and requests over all rounds: its cost per request,
        // which the generator sharing the cores does not blur as it does throughput.
        let (mut a_cpu, mut b_cpu) = (Cpu::default(), Cpu::default());
        for _ in 0..rounds {
            let before = Cpu::of(&gw);
            let (rate, n, lat) = drive(&ours, conns, 2.0, get_percent).await?;
            a_cpu.add(&before, &Cpu::of(&gw), n);
            a.push(rate);
            a_lat.extend(lat);
            let before = Cpu::of(&mc);
            let (rate, n, lat) = drive(&theirs, conns, 2.0, get_percent).await?;
            b_cpu.add(&before, &Cpu::of(&mc), n);
            b.push(rate);
            b_lat.extend(lat);
        }
        a_lat.sort_unstable();
        b_lat.sort_unstable();
        let (ours_ops, theirs_ops) = (crate::bench::median(&mut a), crate::bench::median(&mut b));
        Ok(json!({
            "workload": "memcached",
            "ssd_tier": data_dir.is_some(),
            "ours_ops_per_s": ours_ops.round(),
            "memcached_ops_per_s": theirs_ops.round(),
            "ratio": ours_ops / theirs_ops,
            "connections": conns,
            "get_percent": get_percent,
            "ours_cpu_us_per_op": a_cpu.us_per_op(a_cpu.user + a_cpu.system),
            "memcached_cpu_us_per_op": b_cpu.us_per_op(b_cpu.user + b_cpu.system),
            "ours_user_us_per_op": a_cpu.us_per_op(a_cpu.user),
            "memcached_user_us_per_op": b_cpu.us_per_op(b_cpu.user),
            "ours_p50_us": crate::bench::percentile(&a_lat, 50),
            "ours_p99_us": crate::bench::percentile(&a_lat, 99),
            "memcached_p50_us": crate::bench::percentile(&b_lat, 50),
            "memcached_p99_us": crate::bench::percentile(&b_lat, 99),
            "value_bytes": [MIN_VALUE, MAX_VALUE],
            "keys": KEYS,
            "memory_mb": MEMORY_MB,
            "memcached_threads": threads,
        }))
    })
}
