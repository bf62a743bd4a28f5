//! The faults, one at a time and in a fixed order: each is injected, held, healed;
//! then the probe measures how long the pool took to serve again, and the group must
//! converge (every node back, following one leader, caught up) before the next.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::net::Net;
use crate::pool::{Converge, Pool};
use crate::workload::{until_served, Caller, Rng, Shared};

/// Files in a meta node's data directory whose name starts with this are the segments
/// of its Raft log; the truncation fault cuts the newest, where a crash tears a write.
pub const LOG_FILE_PREFIX: &str = memcache_raft::disk::LOG_SEGMENT_PREFIX;
/// The truncation point lies this far (at most) before a log file's end.
const TRUNCATE_TAIL: u64 = 64 << 10;
/// The pool must serve again this soon after a fault heals.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(2);
/// The meta nodes' election timeout is 150 ms, randomised up to 300 ms.
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(300);
/// How long partitions last, ms (a range to draw from).
const PARTITION_MS: (u64, u64) = (1500, 4000);
/// The leader is cut off for longer than the meta nodes' heartbeat timeout (3 s): the
/// local services must find the new leader before it declares them dead.
const ISOLATE_LEADER_MS: (u64, u64) = (4000, 5000);
/// A paused node stays stopped for a few election timeouts, ms.
const PAUSE_MS: (u64, u64) = (
    3 * ELECTION_TIMEOUT_MAX.as_millis() as u64,
    3 * ELECTION_TIMEOUT_MAX.as_millis() as u64 + 1000,
);
const DOWN_MS: (u64, u64) = (500, 1500);
const DISK_FULL_MS: (u64, u64) = (1500, 2500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    PartitionMinority,
    IsolateLeader,
    SplitClientsFromLeader,
    PauseNode,
    KillRestart,
    DiskFull,
    TruncateLog,
}

pub const ORDER: [Fault; 7] = [
    Fault::PartitionMinority,
    Fault::IsolateLeader,
    Fault::SplitClientsFromLeader,
    Fault::PauseNode,
    Fault::KillRestart,
    Fault::DiskFull,
    Fault::TruncateLog,
];

impl Fault {
    pub fn named(name: &str) -> Option<Fault> {
        ORDER.into_iter().find(|f| f.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::PartitionMinority => "partition-minority",
            Fault::IsolateLeader => "isolate-leader",
            Fault::SplitClientsFromLeader => "split-clients-from-leader",
            Fault::PauseNode => "pause-node",
            Fault::KillRestart => "kill-restart",
            Fault::DiskFull => "disk-full",
            Fault::TruncateLog => "truncate-log",
        }
    }
}

/// The run's log: stderr and a file, each line with the time since the start.
pub struct Log {
    start: Instant,
    file: Mutex<Option<File>>,
}

impl Log {
    pub fn new(path: &Path) -> Log {
        Log {
            start: Instant::now(),
            file: Mutex::new(File::create(path).ok()),
        }
    }

    pub fn since_start(&self) -> Duration {
        self.start.elapsed()
    }

    /// Each line starts with the time since the start and the UTC time of day (as the
    /// processes' logs have it).
    pub fn say(&self, msg: impl AsRef<str>) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 86_400_000);
        let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
        let line = format!(
            "[chaos +{:7.3}s {h:02}:{m:02}:{:06.3}] {}",
            self.start.elapsed().as_secs_f64(),
            s as f64 / 1000.0,
            msg.as_ref()
        );
        eprintln!("{line}");
        if let Some(f) = self.file.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// What one fault did and how the pool took it.
pub struct Record {
    pub n: usize,
    pub fault: Fault,
    /// When it was injected, since the run started.
    pub at: Duration,
    pub what: String,
    pub held: Duration,
    /// From the heal to the probe's first success.
    pub recovery: Duration,
    /// From the heal until the group converged.
    pub converged: Duration,
    pub notes: Vec<String>,
    /// The history time of the heal (to find when each client was served again).
    pub healed_at: u64,
}

pub struct Nemesis<'a> {
    pub net: &'a mut Net,
    pub pool: &'a mut Pool,
    pub probe: Caller,
    pub shared: &'a Shared,
    pub rng: Rng,
    pub log: &'a Log,
    /// Hosts of the clients (the probe's included).
    pub client_hosts: Vec<usize>,
    probes: u64,
    /// The fault that last filled each meta node's disk (its log may show it).
    filled: std::collections::HashMap<u64, usize>,
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

impl<'a> Nemesis<'a> {
    pub fn new(
        net: &'a mut Net,
        pool: &'a mut Pool,
        probe: Caller,
        shared: &'a Shared,
        seed: u64,
        log: &'a Log,
        client_hosts: Vec<usize>,
    ) -> Self {
        Nemesis {
            net,
            pool,
            probe,
            shared,
            rng: Rng(seed ^ 0x6e65_6d65_7369_7321),
            log,
            client_hosts,
            probes: 0,
            filled: Default::default(),
        }
    }

    /// The probe until it succeeds, measured, with what the failed attempts answered.
    pub fn until_served(&mut self) -> Result<(Duration, Vec<String>), String> {
        until_served(&mut self.probe, &mut self.probes, Duration::from_secs(30))
    }

    fn pick(&mut self, from: &[u64]) -> u64 {
        from[self.rng.below(from.len() as u64) as usize]
    }

    fn hold(&mut self, (lo_ms, hi_ms): (u64, u64)) -> Duration {
        let d = Duration::from_millis(lo_ms + self.rng.below(hi_ms - lo_ms + 1));
        std::thread::sleep(d);
        d
    }

    /// Whom a node fault hits: the leader `leader_percent` % of the time, else a follower.
    fn target(&mut self, leader: u64, leader_percent: u64) -> (u64, &'static str) {
        if self.rng.chance(leader_percent) {
            return (leader, "the leader");
        }
        let followers: Vec<u64> = (1..=self.pool.metas.len() as u64)
            .filter(|&id| id != leader)
            .collect();
        (self.pick(&followers), "a follower")
    }

    /// Logs a remark about fault `n` now, and keeps it for the summary.
    fn note(&self, n: usize, fault: Fault, notes: &mut Vec<String>, note: String) {
        self.log.say(format!("fault {n} {}: {note}", fault.name()));
        notes.push(note);
    }

    /// Injects fault number `n`, holds it, heals it, and measures the pool's return.
    pub fn run(&mut self, n: usize, fault: Fault) -> Result<Record, String> {
        let leader = self.pool.wait_leader(Duration::from_secs(10))?;
        let at = self.log.since_start();
        let mut notes = Vec::new();
        let all_hosts: Vec<usize> = (0..self.net.hosts.len()).collect();
        // What was hit, for how long, and the meta node a disk fault hit.
        let (what, held, disk_target) = match fault {
            Fault::PartitionMinority => {
                let followers: Vec<u64> = (1..=self.pool.metas.len() as u64)
                    .filter(|&id| id != leader)
                    .collect();
                let f = self.pick(&followers);
                let mut side = vec![self.pool.meta(f).host];
                let mut what = format!("meta {f} (a follower)");
                if self.rng.chance(50) {
                    let workers = &self.client_hosts[..self.client_hosts.len() - 1];
                    let c = workers[self.rng.below(workers.len() as u64) as usize];
                    side.push(c);
                    what += &format!(" with client {}", self.net.hosts[c].name);
                }
                let rest: Vec<usize> = all_hosts
                    .iter()
                    .copied()
                    .filter(|h| !side.contains(h))
                    .collect();
                self.log.say(format!(
                    "fault {n} {}: cut {what} off from every other host",
                    fault.name()
                ));
                self.net.cut(&side, &rest);
                let held = self.hold(PARTITION_MS);
                self.net.heal();
                (what, held, None)
            }
            Fault::IsolateLeader => {
                let host = self.pool.meta(leader).host;
                self.log.say(format!(
                    "fault {n} {}: link of meta {leader} (the leader) down",
                    fault.name()
                ));
                self.net.isolate(host);
                let held = self.hold(ISOLATE_LEADER_MS);
                self.net.heal();
                (format!("meta {leader} (the leader)"), held, None)
            }
            Fault::SplitClientsFromLeader => {
                let host = self.pool.meta(leader).host;
                self.log.say(format!(
                    "fault {n} {}: every client cut off from meta {leader} (the leader) only",
                    fault.name()
                ));
                let clients = self.client_hosts.clone();
                self.net.cut(&[host], &clients);
                let held = self.hold(PARTITION_MS);
                self.net.heal();
                (format!("clients / meta {leader} (the leader)"), held, None)
            }
            Fault::PauseNode => {
                let (id, role) = self.target(leader, 67);
                self.log.say(format!(
                    "fault {n} {}: SIGSTOP to meta {id} ({role})",
                    fault.name()
                ));
                self.pool.signal(id, "STOP");
                let held = self.hold(PAUSE_MS);
                self.pool.signal(id, "CONT");
                (format!("meta {id} ({role})"), held, None)
            }
            Fault::KillRestart => {
                let (id, role) = self.target(leader, 50);
                self.log.say(format!(
                    "fault {n} {}: SIGKILL to meta {id} ({role})",
                    fault.name()
                ));
                self.pool.kill_meta(id);
                let held = self.hold(DOWN_MS);
                self.pool.start_meta(self.net, id).map_err(|e| {
                    let filled = match self.filled.get(&id) {
                        Some(f) => format!(" (its disk was filled in fault {f})"),
                        None => String::new(),
                    };
                    format!("meta {id} did not start again on its own data directory{filled}: {e}")
                })?;
                (format!("meta {id} ({role})"), held, None)
            }
            Fault::DiskFull => {
                let (id, role) = self.target(leader, 50);
                let dir = self.pool.meta(id).data_dir.clone();
                let filled = fill(&dir.join("fill"))?;
                self.filled.insert(id, n);
                self.log.say(format!(
                    "fault {n} {}: data disk of meta {id} ({role}) filled ({} MiB written)",
                    fault.name(),
                    filled >> 20
                ));
                let held = self.hold(DISK_FULL_MS);
                std::fs::remove_file(dir.join("fill")).map_err(|e| e.to_string())?;
                (format!("meta {id} ({role})"), held, Some(id))
            }
            Fault::TruncateLog => {
                let (id, role) = self.target(leader, 50);
                self.log.say(format!(
                    "fault {n} {}: SIGKILL to meta {id} ({role}), then its log's tail cut",
                    fault.name()
                ));
                let started = Instant::now();
                self.pool.kill_meta(id);
                let dir = self.pool.meta(id).data_dir.clone();
                let cut = truncate_log(&dir, &mut self.rng)?;
                self.note(n, fault, &mut notes, format!("cut {cut}"));
                std::thread::sleep(Duration::from_millis(300));
                if let Err(e) = self.pool.start_meta(self.net, id) {
                    let first = e.lines().find(|l| l.contains("mmc:")).unwrap_or("");
                    let note = format!(
                        "meta {id} refused to start on its damaged log ({}); wiped its data directory, it rejoins empty",
                        first.trim()
                    );
                    self.note(n, fault, &mut notes, note);
                    wipe(&dir)?;
                    self.pool.start_meta(self.net, id)?;
                }
                (format!("meta {id} ({role})"), started.elapsed(), Some(id))
            }
        };
        let healed = Instant::now();
        let healed_at = self.shared.history.now();
        self.log.say(format!(
            "fault {n} {}: healed after {}",
            fault.name(),
            secs(held)
        ));
        let (recovery, failed) = self.until_served()?;
        let attempts = if failed.is_empty() {
            String::new()
        } else {
            format!(" (failed probes: {})", failed.join("; "))
        };
        self.log.say(format!(
            "fault {n} {}: the pool served again {} after the heal{attempts}",
            fault.name(),
            secs(recovery)
        ));
        self.converge(n, fault, disk_target, &mut notes)?;
        let converged = healed.elapsed();
        self.log.say(format!(
            "fault {n} {}: the group converged {} after the heal",
            fault.name(),
            secs(converged)
        ));
        Ok(Record {
            n,
            fault,
            at,
            what,
            held,
            recovery,
            converged,
            notes,
            healed_at,
        })
    }

    /// Waits for the group to converge. The node a disk fault hit (`target`) may need
    /// help: if it died, or stays out of the group, it is started again (on a wiped
    /// directory if its log was cut), and the fact noted. Any other node that does not
    /// converge is an error.
    fn converge(
        &mut self,
        n: usize,
        fault: Fault,
        target: Option<u64>,
        notes: &mut Vec<String>,
    ) -> Result<(), String> {
        for _attempt in 0..3 {
            // A node hit by a disk fault that is not back within a few seconds stays out.
            let within = Duration::from_secs(if target.is_some() { 5 } else { 10 });
            let (id, why) = match self.pool.converge(within) {
                Ok(()) => return Ok(()),
                Err(Converge::Exited(id, status)) if Some(id) == target => {
                    (id, format!("exited ({status})"))
                }
                Err(Converge::Stuck(_)) if target.is_some() => {
                    let id = target.expect("checked");
                    let role = self.pool.role(id).map_or("no answer".into(), |r| r.role);
                    (id, format!("stayed out of the group (its role: {role})"))
                }
                Err(Converge::Exited(id, status)) => {
                    let log = self.pool.meta(id).log();
                    return Err(format!(
                        "meta {id} exited ({status}) after {}\n{}",
                        fault.name(),
                        crate::pool::tail(&log)
                    ));
                }
                Err(Converge::Stuck(roles)) => {
                    return Err(format!("the group did not converge: {roles}"))
                }
            };
            // A node that panicked is not helped by restarting another one.
            let panics = crate::pool::panics(&self.pool.dir);
            if !panics.is_empty() {
                return Err(format!(
                    "the group did not converge: a meta node panicked:\n  {}",
                    panics.join("\n  ")
                ));
            }
            let log = self.pool.meta(id).log();
            let last = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            self.pool.kill_meta(id);
            let note = if fault == Fault::TruncateLog {
                wipe(&self.pool.meta(id).data_dir.clone())?;
                format!(
                    "meta {id} {why} on its damaged log (its last log line: {last:.300}); wiped its data directory, it rejoins empty"
                )
            } else {
                format!(
                    "meta {id} did not come back by itself once its disk had room again: it {why} (its last log line: {last:.300}); started it again"
                )
            };
            self.note(n, fault, notes, note);
            self.pool.start_meta(self.net, id)?;
        }
        Err("the group did not converge after restarts".into())
    }
}

/// Writes zeros to `path` until the disk is full; the bytes written.
fn fill(path: &Path) -> Result<u64, String> {
    let mut f = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut written = 0u64;
    for chunk in [1 << 20, 4096] {
        let zeros = vec![0u8; chunk];
        while f.write_all(&zeros).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

/// Removes everything inside `dir` (a mount point, kept).
pub fn wipe(dir: &Path) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let p = entry.map_err(|e| e.to_string())?.path();
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// Cuts the newest log segment of `dir` at a random offset within its last
/// [`TRUNCATE_TAIL`] bytes; says what it cut.
fn truncate_log(dir: &Path, rng: &mut Rng) -> Result<String, String> {
    let segments = memcache_raft::disk::segment_files(dir).map_err(|e| e.to_string())?;
    let Some((_, f)) = segments.last() else {
        return Err(format!(
            "no file named {LOG_FILE_PREFIX}* in {} to truncate",
            dir.display()
        ));
    };
    let len = std::fs::metadata(f).map_err(|e| e.to_string())?.len();
    let tail = len.min(TRUNCATE_TAIL);
    let at = len - tail + rng.below(tail.max(1));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(f)
        .map_err(|e| e.to_string())?;
    file.set_len(at).map_err(|e| e.to_string())?;
    let name = f.strip_prefix(dir).unwrap_or(f).display().to_string();
    Ok(format!("{name} from {len} to {at} bytes"))
}
