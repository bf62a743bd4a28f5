//! `mmc bench soak --minutes N`: does any process's memory grow under long mixed traffic?
//!
//! A pool of real processes — `mmc meta`, three `mmc local` services and an
//! `mmc memcached` gateway joined to the same pool — serves, at the same time, batch
//! KV traffic from this process (a pure client: batch put / get / exists / remove over
//! keys that come and go, objects of 1 KiB to 256 KiB, more than the pool holds, so it
//! evicts all the time) and memcached traffic to the gateway (set / get / delete / incr,
//! values of 10 B to 100 KiB). Two of the local services are restarted in turn every
//! `RESTART_EVERY` (SIGTERM, and every third time SIGKILL, so the meta service has to
//! declare it dead), under new sockets and ids: clients must drop what they held of
//! the old one.
//!
//! The resident set (`VmRSS`) of every process, this one included, is read every second
//! and printed at the start, at minute 2 (the baseline: warm, every segment touched),
//! periodically and at the end, each figure the peak over the 30 s before it (the meta
//! service's Raft log is a saw between snapshots), with the ratio end / baseline. The run fails if any process ended more
//! than 10 % above its baseline. A restarted service is compared by its role (a fresh
//! process in the same place). Runs of 2 minutes or less take their baseline at 40 %
//! of the run.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use memcache_client::{ClientConfig, CopyDirection, ObjectStore, ReplicateConfig};

use crate::children::{announced_url, spawn_ready, Owned};
use crate::procmem::{rss_bytes, segment_mappings};

/// Growth over the baseline that fails the run.
const MAX_GROWTH: f64 = 0.10;
const LOCALS: usize = 3;
/// Local services that are restarted (the others live through the run).
const RESTARTED: std::ops::Range<usize> = 1..3;
const RESTART_EVERY: Duration = Duration::from_secs(20);
const DRAM: &str = "64MiB";
const KV_TASKS: usize = 2;
const KV_BATCH: usize = 16;
const KV_MIN: usize = 1 << 10;
const KV_MAX: usize = 256 << 10;
/// Keys a KV task keeps (and then removes, oldest first): more than the pool holds.
const KV_WINDOW: usize = 1500;
const MC_CONNS: usize = 3;
const MC_KEYS: usize = 5000;
const MC_MIN: usize = 10;
const MC_MAX: usize = 100_000;
const START_WITHIN: Duration = Duration::from_secs(30);
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// A process of the pool, by role; restarted ones keep their role.
struct Role {
    name: String,
    proc: Option<Owned>,
    args: Vec<String>,
    /// Local services: their socket is new at each start (`{}` in `args` takes a count).
    starts: usize,
}

impl Role {
    fn start(exe: &PathBuf, name: &str, args: Vec<String>) -> Result<(Role, String), String> {
        let mut role = Role {
            name: name.to_string(),
            proc: None,
            args,
            starts: 0,
        };
        let line = role.spawn(exe)?;
        Ok((role, line))
    }

    fn spawn(&mut self, exe: &PathBuf) -> Result<String, String> {
        let n = self.starts.to_string();
        let args: Vec<String> = self.args.iter().map(|a| a.replace("{}", &n)).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (proc, line) = spawn_ready(exe, &refs, START_WITHIN)
            .map_err(|e| format!("starting {}: {e}", self.name))?;
        self.proc = Some(proc);
        self.starts += 1;
        Ok(line)
    }

    fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Owned::pid)
    }

    /// Stops it (SIGTERM, or SIGKILL when `kill`) and starts it again.
    fn restart(&mut self, exe: &PathBuf, kill: bool) -> Result<(), String> {
        if let Some(p) = self.proc.take() {
            if kill {
                drop(p);
            } else {
                p.terminate(Duration::from_secs(10));
            }
        }
        self.spawn(exe).map(|_| ())
    }
}

/// What the traffic did, counted as it goes.
#[derive(Default)]
struct Counts {
    kv_batches: AtomicU64,
    kv_keys_ok: AtomicU64,
    kv_misses: AtomicU64,
    mc_ops: AtomicU64,
    mc_errors: AtomicU64,
    /// Error codes of KV items other than not-found: how often, and the first message.
    kv_errors: Mutex<BTreeMap<i32, (u64, String)>>,
    /// The first few memcached replies that were errors.
    mc_error_lines: Mutex<Vec<String>>,
}

impl Counts {
    fn note_mc_error(&self, line: String) {
        let mut lines = self
            .mc_error_lines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if lines.len() < 3 {
            lines.push(line);
        }
    }

    fn kv<T>(&self, results: &[memcache_client::Result<T>]) {
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(_) => {
                    self.kv_keys_ok.fetch_add(1, Relaxed);
                }
                Err(memcache_client::Error::ObjectNotFound) => {
                    self.kv_misses.fetch_add(1, Relaxed);
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            let mut map = self.kv_errors.lock().unwrap_or_else(|e| e.into_inner());
            for e in errors {
                map.entry(e.code()).or_insert((0, e.to_string())).0 += 1;
            }
        }
    }
}

/// A size from `lo` to `hi`, uniform in its logarithm (many small, some large).
fn log_size(rng: &mut StdRng, lo: usize, hi: usize) -> usize {
    let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
    (rng.random_range(a..b).exp() as usize).clamp(lo, hi)
}

async fn kv_task(store: Arc<ObjectStore>, task: usize, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    let mut rng = StdRng::seed_from_u64(task as u64);
    let payload: Vec<u8> = (0..KV_MAX).map(|i| (i * 31 + task) as u8).collect();
    let mut scratch = vec![vec![0u8; KV_MAX]; KV_BATCH];
    let mut window: VecDeque<String> = VecDeque::new();
    let mut next = 0u64;
    let cfg = ReplicateConfig::default();
    while !stop.load(Relaxed) {
        let keys: Vec<String> = (0..KV_BATCH)
            .map(|_| {
                next += 1;
                format!("soak/{task}/{next}")
            })
            .collect();
        let bufs: Vec<&[u8]> = (0..KV_BATCH)
            .map(|_| &payload[..log_size(&mut rng, KV_MIN, KV_MAX)])
            .collect();
        let put = store
            .batch_put_from(&keys, &bufs, CopyDirection::H2G, &cfg)
            .await;
        c.kv(&put);
        window.extend(keys);
        let pick = |rng: &mut StdRng, n: usize| -> Vec<String> {
            (0..n)
                .map(|_| window[rng.random_range(0..window.len())].clone())
                .collect()
        };
        let got = pick(&mut rng, KV_BATCH);
        let mut dsts: Vec<&mut [u8]> = scratch.iter_mut().map(Vec::as_mut_slice).collect();
        c.kv(&store
            .batch_get_into(&got, &mut dsts, CopyDirection::G2H)
            .await);
        let mut asked = pick(&mut rng, 2 * KV_BATCH);
        asked.push(format!("soak/{task}/never"));
        c.kv(&store.batch_is_exist(&asked).await);
        if window.len() > KV_WINDOW {
            let old: Vec<String> = window.drain(..KV_BATCH).collect();
            c.kv(&store.batch_remove(&old).await);
        }
        c.kv_batches.fetch_add(4, Relaxed);
    }
}

/// Reads one reply: a get's `VALUE … END` (or `END`, or an error line), else a line.
async fn mc_reply(conn: &mut TcpStream, buf: &mut Vec<u8>, get: bool) -> std::io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 64 << 10];
    loop {
        if let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
            let first = &buf[..eol];
            if !get || !first.starts_with(b"VALUE ") {
                return Ok(());
            }
            let len: usize = std::str::from_utf8(first)
                .ok()
                .and_then(|l| l.split(' ').nth(3))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad VALUE line"))?;
            if buf.len() >= eol + 2 + len + 2 + 5 {
                return Ok(());
            }
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn mc_op(
    conn: &mut TcpStream,
    rng: &mut StdRng,
    id: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let key = format!("mc:{id}:{}", rng.random_range(0..MC_KEYS));
    let (request, get) = match rng.random_range(0..100) {
        0..50 => (format!("get {key}\r\n").into_bytes(), true),
        50..75 => {
            let len = log_size(rng, MC_MIN, MC_MAX);
            let mut r = format!("set {key} 0 0 {len}\r\n").into_bytes();
            r.extend(std::iter::repeat_n(b'v', len));
            r.extend_from_slice(b"\r\n");
            (r, false)
        }
        75..85 => (format!("delete {key}\r\n").into_bytes(), false),
        _ => {
            let counter = format!("ctr:{id}:{}", rng.random_range(0..100));
            conn.write_all(format!("incr {counter} 1\r\n").as_bytes())
                .await?;
            mc_reply(conn, buf, false).await?;
            if buf.starts_with(b"NOT_FOUND") {
                (format!("set {counter} 0 0 1\r\n0\r\n").into_bytes(), false)
            } else {
                return Ok(());
            }
        }
    };
    conn.write_all(&request).await?;
    mc_reply(conn, buf, get).await
}

async fn mc_task(addr: String, id: usize, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    let mut rng = StdRng::seed_from_u64(1000 + id as u64);
    let mut buf = Vec::new();
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Relaxed) {
        let ok = match conn.as_mut() {
            Some(s) => matches!(
                tokio::time::timeout(OP_TIMEOUT, mc_op(s, &mut rng, id, &mut buf)).await,
                Ok(Ok(()))
            ),
            None => match TcpStream::connect(&addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                    continue;
                }
                Err(_) => false,
            },
        };
        if ok && !buf.starts_with(b"SERVER_ERROR") && !buf.starts_with(b"ERROR") {
            c.mc_ops.fetch_add(1, Relaxed);
        } else {
            c.mc_errors.fetch_add(1, Relaxed);
            c.note_mc_error(if ok {
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
                    .trim_end()
                    .to_string()
            } else {
                "no answer (connection lost or timed out)".to_string()
            });
            if !ok {
                conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// One reading of every process's RSS, in role order.
#[derive(Clone)]
struct Sample {
    minute: f64,
    rss: Vec<Option<u64>>,
    /// Shared-memory segments each maps (its own and other services').
    maps: Vec<Option<usize>>,
}

/// The peak of each process's RSS over `readings` (the latest segment counts), as of
/// the last reading.
fn peak(readings: &VecDeque<Sample>) -> Sample {
    let last = readings.back().expect("at least one reading").clone();
    let rss = (0..last.rss.len())
        .map(|i| readings.iter().filter_map(|s| s.rss[i]).max())
        .collect();
    Sample { rss, ..last }
}

pub fn run(minutes: f64, as_json: bool) -> Result<(), String> {
    if minutes.is_nan() || minutes <= 0.0 {
        return Err("--minutes must be more than 0".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let tag = std::process::id();
    let tmp = std::env::temp_dir();
    let (meta, line) = Role::start(
        &exe,
        "meta",
        [
            "meta",
            "--discovery",
            "tcp://127.0.0.1:0",
            "--http",
            "",
            "--heartbeat-timeout-ms",
            "2000",
        ]
        .map(String::from)
        .to_vec(),
    )?;
    let url = announced_url(&line)?;
    let mut roles = vec![meta];
    let mut sockets = Vec::new();
    for i in 0..LOCALS {
        let socket = tmp.join(format!("mmc-soak-{tag}-{i}-{{}}.sock"));
        sockets.push(socket.clone());
        let args = [
            "local",
            "--discovery",
            &url,
            "--dram-size",
            DRAM,
            "--shm-socket",
            socket.to_str().ok_or("a temp dir in UTF-8")?,
            "--heartbeat-interval-ms",
            "300",
            "--http",
            "",
        ];
        let kind = if RESTARTED.contains(&i) {
            "restarted"
        } else {
            "stays"
        };
        let (role, _) = Role::start(
            &exe,
            &format!("local-{i} ({kind})"),
            args.map(String::from).to_vec(),
        )?;
        roles.push(role);
    }
    let (gateway, line) = Role::start(
        &exe,
        "memcached gateway",
        [
            "memcached",
            "--discovery",
            &url,
            "--bind",
            "127.0.0.1:0",
            "--dram-size",
            DRAM,
        ]
        .map(String::from)
        .to_vec(),
    )?;
    let gw_addr = line
        .rsplit(' ')
        .next()
        .ok_or_else(|| format!("the gateway said {line:?}"))?
        .to_string();
    roles.push(gateway);
    let names: Vec<String> = roles
        .iter()
        .map(|r| r.name.clone())
        .chain(["bench client (this)".to_string()])
        .collect();
    let me = std::process::id();
    let read_all = |roles: &[Role], minute: f64| {
        let pids: Vec<Option<u32>> = roles.iter().map(Role::pid).chain([Some(me)]).collect();
        Sample {
            minute,
            rss: pids.iter().map(|p| p.and_then(rss_bytes)).collect(),
            maps: pids.iter().map(|p| p.and_then(segment_mappings)).collect(),
        }
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let store = Arc::new(ObjectStore::new(ClientConfig::remote(&url, 0)));
    rt.block_on(store.init(0, false))
        .map_err(|e| format!("the bench client joining: {e}"))?;
    let start_sample = read_all(&roles, 0.0);
    let (stop, counts) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Counts::default()),
    );
    let mut tasks = Vec::new();
    for t in 0..KV_TASKS {
        tasks.push(rt.spawn(kv_task(store.clone(), t, stop.clone(), counts.clone())));
    }
    for id in 0..MC_CONNS {
        tasks.push(rt.spawn(mc_task(gw_addr.clone(), id, stop.clone(), counts.clone())));
    }

    let base_at = if minutes > 2.0 { 2.0 } else { minutes * 0.4 };
    let every = if minutes >= 6.0 { 1.0 } else { minutes / 6.0 };
    // RSS is read every second, and each figure reported is the peak over the window
    // before it: the meta service's Raft log grows and is cut at each snapshot, every
    // few seconds, so single readings land anywhere on that saw; its peaks are what
    // must stay flat.
    let window = (minutes * 0.2).min(0.5);
    let began = Instant::now();
    let elapsed = || began.elapsed().as_secs_f64() / 60.0;
    let mut recent: VecDeque<Sample> = VecDeque::from([start_sample.clone()]);
    let mut next_reading = Duration::from_secs(1);
    let mut samples = vec![start_sample];
    let mut base: Option<Sample> = None;
    let mut next_sample = every;
    let mut restarts = 0usize;
    let mut next_restart = RESTART_EVERY;
    if !as_json {
        println!(
            "soak: {minutes} min; baseline at {base_at:.2} min; RSS figures are peaks over the {:.0} s before them; pool: meta, {LOCALS} local services ({} restarted in turn every {}s), memcached gateway at {gw_addr}",
            window * 60.0,
            RESTARTED.len(),
            RESTART_EVERY.as_secs()
        );
    }
    let progress = |s: &Sample, restarts: usize, what: &str| {
        let parts: Vec<String> = names
            .iter()
            .zip(s.rss.iter().zip(&s.maps))
            .map(|(n, (r, m))| {
                format!(
                    "{} {:.1} ({})",
                    n.split(' ').next().unwrap_or(n),
                    r.map_or(f64::NAN, mib),
                    m.unwrap_or(0)
                )
            })
            .collect();
        println!(
            "soak: {:5.2} min{what}  RSS MiB (segments mapped): {}  | kv {} batches, memcached {} ops, {restarts} restarts",
            s.minute,
            parts.join(", "),
            counts.kv_batches.load(Relaxed),
            counts.mc_ops.load(Relaxed),
        );
    };
    if !as_json {
        progress(&samples[0], 0, "");
    }
    let mut failure = None;
    while elapsed() < minutes {
        std::thread::sleep(Duration::from_millis(200));
        if began.elapsed() >= next_restart {
            next_restart += RESTART_EVERY;
            let slot = 1 + RESTARTED.start + restarts % RESTARTED.len();
            let kill = restarts % 3 == 2;
            if let Err(e) = roles[slot].restart(&exe, kill) {
                failure = Some(e);
                break;
            }
            restarts += 1;
        }
        if began.elapsed() < next_reading {
            continue;
        }
        next_reading += Duration::from_secs(1);
        let now = elapsed();
        recent.push_back(read_all(&roles, now));
        while recent.front().is_some_and(|s| s.minute < now - window) {
            recent.pop_front();
        }
        if base.is_none() && now >= base_at {
            let s = peak(&recent);
            if !as_json {
                progress(&s, restarts, " (baseline)");
            }
            base = Some(s);
        } else if now >= next_sample {
            next_sample += every;
            let s = peak(&recent);
            if !as_json {
                progress(&s, restarts, "");
            }
            samples.push(s);
        }
    }
    recent.push_back(read_all(&roles, elapsed()));
    let end = peak(&recent);
    if !as_json {
        progress(&end, restarts, " (end)");
    }
    stop.store(true, Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(OP_TIMEOUT, t).await;
        }
        let _ = store.tear_down().await;
    });
    drop(roles);
    for s in &sockets {
        for n in 0..=restarts {
            let _ =
                std::fs::remove_file(s.to_str().unwrap_or_default().replace("{}", &n.to_string()));
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let base = base.ok_or("the run ended before its baseline")?;

    let mut rows = Vec::new();
    let mut grew = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (s0, b, e) = (samples[0].rss[i], base.rss[i], end.rss[i]);
        let ratio = match (b, e) {
            (Some(b), Some(e)) if b > 0 => Some(e as f64 / b as f64),
            _ => None,
        };
        if ratio.is_none_or(|r| r > 1.0 + MAX_GROWTH) {
            grew.push(format!(
                "{name} ({})",
                ratio.map_or("gone".into(), |r| format!("{r:.2}×"))
            ));
        }
        rows.push(json!({
            "process": name,
            "segments_mapped_at_end": end.maps[i],
            "start_mib": s0.map(mib),
            "baseline_mib": b.map(mib),
            "end_mib": e.map(mib),
            "end_over_baseline": ratio,
        }));
    }
    let kv_errors = counts
        .kv_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let report = json!({
        "workload": "soak",
        "minutes": minutes,
        "baseline_minute": base.minute,
        "end_minute": end.minute,
        "restarts": restarts,
        "kv_batches": counts.kv_batches.load(Relaxed),
        "kv_keys_ok": counts.kv_keys_ok.load(Relaxed),
        "kv_misses": counts.kv_misses.load(Relaxed),
        "kv_errors_by_code": kv_errors.iter().map(|(c, (n, first))| (c.to_string(), json!({"count": n, "first": first}))).collect::<serde_json::Map<_, _>>(),
        "memcached_first_errors": *counts.mc_error_lines.lock().unwrap_or_else(|e| e.into_inner()),
        "memcached_ops": counts.mc_ops.load(Relaxed),
        "memcached_errors": counts.mc_errors.load(Relaxed),
        "processes": rows,
        "max_growth": MAX_GROWTH,
        "grew": grew,
        "periodic": samples.iter().map(|s| json!({
            "minute": s.minute,
            "rss_mib": s.rss.iter().map(|r| r.map(mib)).collect::<Vec<_>>(),
            "segments_mapped": s.maps,
        })).collect::<Vec<_>>(),
    });
    if as_json {
        println!("{report}");
    } else {
        print_table(&report, &kv_errors);
    }
    if counts.kv_keys_ok.load(Relaxed) == 0 || counts.mc_ops.load(Relaxed) == 0 {
        return Err("the traffic did not get through: the soak measured an idle pool".into());
    }
    if !grew.is_empty() {
        return Err(format!(
            "grew more than {:.0} % beyond the baseline: {}",
            MAX_GROWTH * 100.0,
            grew.join(", ")
        ));
    }
    Ok(())
}

fn print_table(r: &Value, kv_errors: &BTreeMap<i32, (u64, String)>) {
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    println!(
        "soak: {:.2} min, {} local restarts; kv: {} batch calls, {} keys ok, {} not found, errors by code {:?}; memcached: {} ops, {} errors",
        r["end_minute"].as_f64().unwrap_or(0.0),
        r["restarts"],
        r["kv_batches"],
        r["kv_keys_ok"],
        r["kv_misses"],
        kv_errors.iter().map(|(c, (n, _))| (c, n)).collect::<BTreeMap<_, _>>(),
        r["memcached_ops"],
        r["memcached_errors"],
    );
    for (code, (_, first)) in kv_errors {
        println!("soak: kv error {code}, first seen: {first}");
    }
    for line in r["memcached_first_errors"].as_array().into_iter().flatten() {
        println!(
            "soak: memcached error reply: {}",
            line.as_str().unwrap_or("?")
        );
    }
    println!(
        "{:<26} {:>10} {:>16} {:>10} {:>10} {:>14}",
        "process (RSS, MiB)",
        "start",
        format!("at {:.2} min", r["baseline_minute"].as_f64().unwrap_or(0.0)),
        "end",
        "end/base",
        "segments (end)"
    );
    for p in r["processes"].as_array().into_iter().flatten() {
        println!(
            "{:<26} {:>10} {:>16} {:>10} {:>10} {:>14}",
            p["process"].as_str().unwrap_or("?"),
            f(&p["start_mib"]),
            f(&p["baseline_mib"]),
            f(&p["end_mib"]),
            p["end_over_baseline"]
                .as_f64()
                .map_or("-".to_string(), |x| format!("{x:.3}")),
            p["segments_mapped_at_end"],
        );
    }
}
