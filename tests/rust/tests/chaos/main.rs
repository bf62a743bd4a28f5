//! Chaos on hosts of their own: three `mmc meta` nodes, two `mmc local` services and
//! five clients, each process in a network namespace of its own with its own address
//! (so no client shares memory with a local service: every byte crosses the TCP data
//! plane). Clients run a mixed batch workload (put / get / exists / remove, two
//! replicas, small DRAM segments under eviction pressure) while a nemesis runs its
//! faults in turn (see [`nemesis::ORDER`]). Then every acknowledged write must still be
//! there, the whole history must be linearizable, and after each fault healed the pool
//! must have served again within [`nemesis::RECOVERY_BOUND`].
//!
//! Needs root (namespaces, veth pairs, a bridge, tmpfs mounts) and iproute2; without
//! them it fails, unless `MMC_CHAOS=skip`. `MMC_CHAOS_SECONDS` (default 30) is how long
//! the nemesis runs, at least one round of every fault; `MMC_CHAOS_FAULTS` (names
//! separated by commas, e.g. `pause-node,truncate-log`) runs only those, in that order;
//! `MMC_CHAOS_SEED` repeats a run's choices; `MMC_CHAOS_LOG` sets the processes' log
//! filter (`RUST_LOG`), and `MMC_CHAOS_KEEP=1` keeps the run's directory even when the
//! test passes. The log (`--nocapture`) says which faults ran, when, and how the pool took
//! them; it is also written to `chaos.log` in the run's directory (kept when the test
//! fails) and copied to `target/tmp/chaos-last.log`.

#[path = "../common/mod.rs"]
mod common;

mod audit;
mod nemesis;
mod net;
mod pool;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcache_tests::linearizability::{check, Event, Ret, ViolationKind};

use common::procs::{http_get, mmc_bin, stats};
use nemesis::{Fault, Log, Nemesis, Record, ORDER, RECOVERY_BOUND};
use net::Net;
use pool::Pool;
use workload::{Caller, Shared};

const WORKERS: usize = 4;
const REPLICAS: u32 = 2;
const DRAM: &str = "32MiB";
const DRAM_BYTES: u64 = 32 << 20;
const LOCALS: usize = 2;
/// The meta nodes' low eviction watermark (the default), percent.
const EVICT_LOW: u64 = 80;
/// Below the low watermark, room for leased older objects and rounding, percent.
const EVICT_MARGIN: u64 = 10;
/// Hosts: metas, locals, workload clients, the nemesis's probe.
const HOSTS: [&str; 10] = [
    "meta1", "meta2", "meta3", "local1", "local2", "c0", "c1", "c2", "c3", "probe",
];

/// The run's directory: removed when the test passes, kept (and named) when it fails.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var("MMC_CHAOS_KEEP").as_deref() == Ok("1") {
            eprintln!("[chaos] logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Stops the workload however the test ends, before the pool goes.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// What could not be set up: a failure, unless the machine is marked unable.
fn unable(what: String) {
    if std::env::var("MMC_CHAOS").as_deref() == Ok("skip") {
        eprintln!("[chaos] skipped (MMC_CHAOS=skip): {what}");
        return;
    }
    panic!(
        "the chaos test gives each process a network namespace of its own (veth pairs, a \
         bridge, tmpfs data directories): that needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) \
         and iproute2, and here it failed: {what}\n\
         Run it as root, or set MMC_CHAOS=skip to skip it on a machine that cannot."
    );
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// The events of `key` around the history times `near`, for a failure message.
fn excerpt(events: &[Event], key: &[u8], near: &[u64]) -> String {
    let mut evs: Vec<&Event> = events.iter().filter(|e| e.key == key).collect();
    evs.sort_by_key(|e| e.invoked);
    let lo = near.iter().min().copied().unwrap_or(0);
    let at = evs.partition_point(|e| e.invoked < lo);
    let from = at.saturating_sub(25);
    let to = (at + 15).min(evs.len());
    let mut out = format!(
        "history of {:?} (events {from}..{to} of {}; times in ns since the start; client {} is the pool's possible eviction):",
        String::from_utf8_lossy(key),
        evs.len(),
        audit::EVICTOR
    );
    for e in &evs[from..to] {
        out += &format!("\n  {e}");
    }
    out
}

#[test]
fn chaos_on_hosts_of_their_own() {
    let seconds = env_u64("MMC_CHAOS_SECONDS").unwrap_or(30);
    let seed = env_u64("MMC_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let faults: Vec<Fault> = match std::env::var("MMC_CHAOS_FAULTS") {
        Ok(list) => list
            .split(',')
            .map(|name| {
                Fault::named(name.trim()).unwrap_or_else(|| {
                    let names: Vec<&str> = ORDER.iter().map(|f| f.name()).collect();
                    panic!("MMC_CHAOS_FAULTS: no fault {name:?}; there are {names:?}")
                })
            })
            .collect(),
        Err(_) => ORDER.to_vec(),
    };
    let mut net = match Net::new(&HOSTS) {
        Ok(n) => n,
        Err(e) => return unable(e),
    };
    let dir =
        RunDir(std::env::temp_dir().join(format!("{}{}", net::NS_PREFIX, std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("run directory");
    let log = Log::new(&dir.0.join("chaos.log"));
    log.say(format!(
        "seed {seed} (MMC_CHAOS_SEED), nemesis for {seconds} s (MMC_CHAOS_SECONDS), faults {} (MMC_CHAOS_FAULTS); hosts {} on a bridge with the test at {}; run directory {}",
        faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
        net.hosts
            .iter()
            .map(|h| format!("{}={}", h.name, h.ip))
            .collect::<Vec<_>>()
            .join(" "),
        net.observer,
        dir.0.display()
    ));
    let put_lease = workload::PUT_LEASE.as_millis().to_string();
    let meta_args = [
        "--put-lease-ms",
        &put_lease,
        "--set",
        "eviction_policy=fifo",
        "--set",
        "raft_snapshot_every=3000",
        // A new leader keeps every object from eviction for one read lease (it cannot
        // know what its predecessor leased); the default 5 s would keep a full pool
        // refusing puts longer than the 2 s the pool has to serve again.
        "--set",
        "read_lease=1000",
    ];
    let mut pool = match Pool::start_metas(&net, &[0, 1, 2], mmc_bin(), &dir.0, &meta_args) {
        Ok(p) => p,
        Err(e) if e.contains("mount") => return unable(e),
        Err(e) => panic!("{e}"),
    };
    let leader = pool.wait_leader(Duration::from_secs(20)).unwrap();
    log.say(format!("meta group up, meta {leader} leads; {}", pool.url));
    for h in 3..3 + LOCALS {
        pool.start_local(&net, h, DRAM).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats(&pool.url).services != LOCALS as u64 {
        assert!(Instant::now() < deadline, "the local services never joined");
        std::thread::sleep(Duration::from_millis(50));
    }
    let capacity = stats(&pool.url).capacity_bytes;
    assert_eq!(capacity, LOCALS as u64 * DRAM_BYTES, "DRAM of the pool");
    log.say(format!(
        "{LOCALS} local services with {DRAM} of DRAM each joined"
    ));

    let shared = Shared::new(WORKERS + 1);
    let _stop = StopOnDrop(shared.clone());
    let client_hosts: Vec<usize> = (5..5 + WORKERS + 1).collect();
    let mut clients: Vec<Caller> = client_hosts
        .iter()
        .enumerate()
        .map(|(c, &h)| {
            let client = pool
                .client(&net, h, bin_chaos_client(), REPLICAS, workload::MAX_VALUE)
                .unwrap();
            Caller::new(c, client, shared.clone())
        })
        .collect();
    let mut probe = clients.pop().expect("the probe");

    // Fill the pool to 75 %, outside the history: the workload's first puts evict.
    let fill_bytes = 48 << 10;
    let pages = (fill_bytes as u64).div_ceil(4096) * 4096 * REPLICAS as u64;
    let objects = capacity * 3 / 4 / pages;
    for batch in 0..objects.div_ceil(16) {
        let words: Vec<String> = (0..16)
            .map(|i| {
                let n = batch * 16 + i;
                format!("fill/{n} {} {fill_bytes}", (1u64 << 60) + n)
            })
            .collect();
        let answer = probe.client.call(&format!("put {}", words.join(" ")));
        assert!(answer.iter().all(|a| a == "0"), "filling: {answer:?}");
    }
    log.say(format!(
        "filled the pool with {} objects of {} KiB ({} % of its DRAM)",
        objects.div_ceil(16) * 16,
        fill_bytes >> 10,
        stats(&pool.url).used_bytes * 100 / capacity
    ));

    let workers: Vec<_> = clients
        .into_iter()
        .map(|caller| std::thread::spawn(move || workload::run(caller, WORKERS, seed)))
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    let mut nemesis = Nemesis::new(
        &mut net,
        &mut pool,
        probe,
        &shared,
        seed,
        &log,
        client_hosts.clone(),
    );
    let started = Instant::now();
    let mut records: Vec<Record> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (n, fault) in faults.iter().cycle().enumerate() {
        if n >= faults.len() && started.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
        match nemesis.run(n + 1, *fault) {
            Ok(r) => records.push(r),
            Err(e) => {
                failures.push(format!("fault {} {}: {e}", n + 1, fault.name()));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(800));
    }
    log.say(format!(
        "nemesis done after {} faults in {}",
        records.len(),
        secs(started.elapsed())
    ));

    std::thread::sleep(Duration::from_secs(1));
    shared.stop.store(true, Ordering::Relaxed);
    if !failures.is_empty() {
        // The pool may serve no more: neither wait for the clients nor read it back.
        return finish(&log, &dir.0, seed, &records, failures);
    }
    for w in workers {
        if w.join().is_err() {
            failures.push("a workload client panicked (see above)".into());
        }
    }
    if let Err(e) = nemesis.pool.converge(Duration::from_secs(20)) {
        failures.push(format!("the group did not converge at the end: {e:?}"));
        return finish(&log, &dir.0, seed, &records, failures);
    }
    let audited = workload::audit(&mut nemesis.probe);
    log.say(format!("audit: read all {audited} keys ever written"));
    let leader = nemesis.pool.leader();

    // Per client, when it was served again after each heal.
    for r in &records {
        let again: Vec<String> = (0..WORKERS)
            .map(|c| match shared.served_after(c, r.healed_at) {
                Some(t) => format!("c{c} {}", secs(Duration::from_nanos(t - r.healed_at))),
                None => format!("c{c} never"),
            })
            .collect();
        log.say(format!(
            "fault {} {}: each client was served again after the heal: {}",
            r.n,
            r.fault.name(),
            again.join(", ")
        ));
    }

    // ---- what must hold ----
    let mut events = shared.history.events();
    let threshold = capacity * (EVICT_LOW - EVICT_MARGIN) / 100;
    let sizes = shared.sizes.lock().unwrap().clone();
    let possible = audit::evictions(&events, &sizes, REPLICAS as u64, threshold);
    let unknown = events.iter().filter(|e| e.ret == Ret::Unknown).count();
    log.say(format!(
        "history: {} calls on {} keys, {unknown} of unknown outcome; {} puts could have been evicted by the end ({} MiB of newer puts)",
        events.len(),
        audited,
        possible.len(),
        threshold >> 20
    ));
    if events.len() < 1000 {
        failures.push(format!(
            "only {} calls: too few to mean anything",
            events.len()
        ));
    }
    events.extend(possible);
    let lost = audit::lost_writes(&events);
    if let Some(first) = lost.first() {
        let lines: Vec<&str> = lost.iter().take(20).map(|l| l.line.as_str()).collect();
        failures.push(format!(
            "{} acknowledged writes lost (the first 20, oldest put first):\n  {}\n{}",
            lost.len(),
            lines.join("\n  "),
            excerpt(&events, &first.key, &[first.put_at])
        ));
    }
    let checked = Instant::now();
    match check(&events) {
        Ok(()) => log.say(format!(
            "the history is linearizable (checked in {})",
            secs(checked.elapsed())
        )),
        Err(v) => {
            let near: Vec<u64> = v.stuck.iter().map(|e| e.invoked).collect();
            let what = match v.kind {
                ViolationKind::NotLinearizable => "not linearizable",
                ViolationKind::TooLarge { .. } => "too large to check",
            };
            failures.push(format!(
                "history {what}: {v}\n{}",
                excerpt(&events, &v.key, &near)
            ));
        }
    }
    let slow: Vec<String> = records
        .iter()
        .filter(|r| r.recovery > RECOVERY_BOUND)
        .map(|r| {
            format!(
                "fault {} {} ({}): {}",
                r.n,
                r.fault.name(),
                r.what,
                secs(r.recovery)
            )
        })
        .collect();
    if !slow.is_empty() {
        failures.push(format!(
            "the pool served again later than {} after a heal:\n  {}",
            secs(RECOVERY_BOUND),
            slow.join("\n  ")
        ));
    }
    // Every byte over TCP: every local service took writes over TCP (each object has a
    // replica on each), reads went out over TCP, and no client was handed a segment.
    let mut read_out = 0.0;
    for l in &nemesis.pool.locals {
        let (_, body) = http_get(&l.http, "/metrics");
        let tcp_in = metric(&body, "memcache_local_tcp_bytes_total{direction=\"in\"}");
        let tcp_out = metric(&body, "memcache_local_tcp_bytes_total{direction=\"out\"}");
        let shm = metric(&body, "memcache_local_shm_descriptors_total");
        read_out += tcp_out.unwrap_or(0.0);
        log.say(format!(
            "local service {}: TCP in {} MiB, out {} MiB; segments handed out for shared memory: {}",
            l.id,
            tcp_in.unwrap_or(0.0) as u64 >> 20,
            tcp_out.unwrap_or(0.0) as u64 >> 20,
            shm.map_or("?".into(), |s| s.to_string())
        ));
        if tcp_in.unwrap_or(0.0) <= 0.0 || shm != Some(0.0) {
            failures.push(format!(
                "local service {}: the clients did not write over TCP alone (TCP in {tcp_in:?}, shm {shm:?})",
                l.id
            ));
        }
    }
    if read_out <= 0.0 {
        failures.push("no read went over TCP".into());
    }
    match leader.and_then(|l| nemesis.pool.meta(l).http.clone()) {
        Some(h) => {
            let (_, body) = http_get(&h, "/metrics");
            let evicted = metric(&body, "memcache_evict_operations_total").unwrap_or(0.0);
            log.say(format!("the pool evicted {evicted} objects"));
            if evicted <= 0.0 {
                failures.push("nothing was evicted: no eviction pressure".into());
            }
        }
        None => failures.push("no leader at the end".into()),
    }

    finish(&log, &dir.0, seed, &records, failures);
}

/// Logs the summary, keeps a copy of the log, and fails with `failures` (if any).
fn finish(log: &Log, dir: &Path, seed: u64, records: &[Record], mut failures: Vec<String>) {
    let mut summary = String::from("faults, in order:");
    for r in records {
        summary += &format!(
            "\n  {:>2}. +{:>7.3}s {:<26} {:<34} held {}, served again after {}, converged after {}",
            r.n,
            r.at.as_secs_f64(),
            r.fault.name(),
            r.what,
            secs(r.held),
            secs(r.recovery),
            secs(r.converged)
        );
        for note in &r.notes {
            summary += &format!("\n      {note}");
        }
    }
    if let Some(worst) = records.iter().map(|r| r.recovery).max() {
        summary += &format!(
            "\n  slowest return to service after a heal: {}",
            secs(worst)
        );
    }
    log.say(summary);
    if !failures.is_empty() {
        let panics = pool::panics(dir);
        if !panics.is_empty() && !failures.iter().any(|f| f.contains("panicked at")) {
            failures.push(format!(
                "panics in the processes' logs:\n  {}",
                panics.join("\n  ")
            ));
        }
        log.say(format!("FAILED:\n{}", failures.join("\n")));
    }
    let _ = std::fs::copy(
        dir.join("chaos.log"),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos-last.log"),
    );
    if !failures.is_empty() {
        panic!(
            "chaos (seed {seed}, MMC_CHAOS_SEED={seed} repeats its choices):\n{}",
            failures.join("\n")
        );
    }
}

fn bin_chaos_client() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_chaos_client"))
}
