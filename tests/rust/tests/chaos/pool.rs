//! The pool's processes, each on its host: three `mmc meta` nodes (data directories on
//! small tmpfs mounts of their own), `mmc local` services, and `chaos_client` processes
//! the workload drives through their standard input. Every process writes its log to
//! a file of the run's directory.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use memcache_proto::{ask_role, RoleInfo};

use crate::common::procs::{http_of, Proc};
use crate::net::Net;

pub const META_PORT: u16 = 7100;
pub const DATA_PORT: u16 = 7200;
pub const LOCAL_HTTP_PORT: u16 = 7201;
/// Each meta node's data directory is a tmpfs of this size (so it can be filled).
pub const DATA_DIR_BYTES: u64 = 64 << 20;
/// What the processes log (to their files), unless `MMC_CHAOS_LOG` says otherwise.
const LOG_FILTER: &str = "info,openraft=error,tarpc=error";

/// A process that printed its first lines; the rest of its output goes to its log.
struct Started {
    proc: Proc,
    lines: Vec<String>,
    stdin: Option<ChildStdin>,
    /// Later stdout lines, when they are wanted (the client processes' answers).
    rest: Option<Receiver<String>>,
}

/// Runs `cmd`, logging to `log`, and waits (bounded) for its first `n` stdout lines.
/// An error when it exits first, with the end of its log.
fn start(mut cmd: Command, log: &Path, n: usize, keep_stdout: bool) -> Result<Started, String> {
    let file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = cmd
        .env(
            "RUST_LOG",
            std::env::var("MMC_CHAOS_LOG").unwrap_or_else(|_| LOG_FILTER.into()),
        )
        .env("NO_COLOR", "1")
        .stdin(if keep_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(file)
        .spawn()
        .map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    let stdin = child.stdin.take();
    let out = BufReader::new(child.stdout.take().expect("piped"));
    let proc = Proc(child);
    let (tx, rx) = channel();
    let mut copy = OpenOptions::new().append(true).open(log).ok();
    std::thread::spawn(move || {
        for (i, line) in out.lines().enumerate() {
            let Ok(line) = line else { break };
            if i >= n && !keep_stdout {
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
            } else if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("{cmd:?} printed nothing for 20 s\n{}", tail(log)))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let mut proc = proc;
                let status = proc.0.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(format!("{cmd:?} exited ({status})\n{}", tail(log)));
            }
        }
    }
    Ok(Started {
        proc,
        lines,
        stdin,
        rest: keep_stdout.then_some(rx),
    })
}

/// What panicked in the meta nodes' logs under `dir`: one line per panic.
pub fn panics(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut logs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.contains("panicked at") {
                let why = lines.next().unwrap_or("");
                let name = log.file_name().unwrap_or_default().to_string_lossy();
                out.push(format!("{name}: {} {why}", line.trim()));
            }
        }
    }
    out
}

/// The last lines of a log, to quote in a failure.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    format!(
        "--- {} (end) ---\n{}",
        log.display(),
        lines[from..].join("\n")
    )
}

pub struct Meta {
    pub id: u64,
    pub host: usize,
    pub addr: SocketAddr,
    pub http: Option<String>,
    pub data_dir: PathBuf,
    proc: Option<Proc>,
    /// How many times it was started (names its log files).
    starts: u32,
    pub paused: bool,
}

impl Meta {
    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.0.id())
    }

    pub fn log(&self) -> PathBuf {
        let dir = self.data_dir.parent().expect("in the run directory");
        dir.join(format!("meta{}.{}.log", self.id, self.starts))
    }

    /// Whether the process ended by itself (it was started and is gone).
    pub fn exited(&mut self) -> Option<String> {
        let p = self.proc.as_mut()?;
        match p.0.try_wait() {
            Ok(Some(status)) => {
                self.proc = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }
}

pub struct Local {
    pub id: u32,
    pub http: String,
    _proc: Proc,
}

/// A client process; requests are lines, answers are lines.
pub struct Client {
    pub name: String,
    stdin: ChildStdin,
    answers: Receiver<String>,
    log: PathBuf,
    _proc: Proc,
}

impl Client {
    /// One request and its answer: one word per key.
    pub fn call(&mut self, request: &str) -> Vec<String> {
        writeln!(self.stdin, "{request}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("client {} is gone ({e})\n{}", self.name, tail(&self.log)));
        // A call ends within the client's deadlines; far longer means it hangs.
        match self.answers.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line.split_whitespace().map(str::to_string).collect(),
            Err(e) => panic!(
                "client {} gave no answer to {:.80}… ({e:?})\n{}",
                self.name,
                request,
                tail(&self.log)
            ),
        }
    }
}

/// Everything that runs, in the order it is stopped; the mounts go after the processes.
pub struct Pool {
    pub metas: Vec<Meta>,
    pub locals: Vec<Local>,
    pub url: String,
    peers: String,
    meta_args: Vec<String>,
    mmc: PathBuf,
    pub dir: PathBuf,
    mounts: Vec<PathBuf>,
    rt: tokio::runtime::Runtime,
}

impl Pool {
    /// Mounts a tmpfs for each meta node's data and starts the nodes on `hosts`.
    pub fn start_metas(
        net: &Net,
        hosts: &[usize],
        mmc: &Path,
        dir: &Path,
        meta_args: &[&str],
    ) -> Result<Pool, String> {
        let addrs: Vec<SocketAddr> = hosts
            .iter()
            .map(|&h| SocketAddr::from((net.hosts[h].ip, META_PORT)))
            .collect();
        let peers = addrs
            .iter()
            .zip(1..)
            .map(|(a, id)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let url = addrs
            .iter()
            .map(|a| format!("tcp://{a}"))
            .collect::<Vec<_>>()
            .join(",");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut pool = Pool {
            metas: Vec::new(),
            locals: Vec::new(),
            url,
            peers,
            meta_args: meta_args.iter().map(|s| s.to_string()).collect(),
            mmc: mmc.to_path_buf(),
            dir: dir.to_path_buf(),
            mounts: Vec::new(),
            rt,
        };
        for (i, (&host, addr)) in hosts.iter().zip(addrs).enumerate() {
            let id = i as u64 + 1;
            let data_dir = dir.join(format!("meta{id}-data"));
            std::fs::create_dir_all(&data_dir).map_err(|e| e.to_string())?;
            let size = format!("size={DATA_DIR_BYTES}");
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
                .arg(&data_dir)
                .status()
                .map_err(|e| format!("mount: {e}"))?;
            if !status.success() {
                return Err(format!("mounting a tmpfs on {} failed", data_dir.display()));
            }
            pool.mounts.push(data_dir.clone());
            pool.metas.push(Meta {
                id,
                host,
                addr,
                http: None,
                data_dir,
                proc: None,
                starts: 0,
                paused: false,
            });
        }
        for id in 1..=hosts.len() as u64 {
            pool.start_meta(net, id)?;
        }
        Ok(pool)
    }

    pub fn meta(&mut self, id: u64) -> &mut Meta {
        &mut self.metas[id as usize - 1]
    }

    /// Starts node `id` on its data directory; an error (with its log) if it exits
    /// before it says it serves.
    pub fn start_meta(&mut self, net: &Net, id: u64) -> Result<(), String> {
        let (mmc, peers, args) = (self.mmc.clone(), self.peers.clone(), self.meta_args.clone());
        let m = self.meta(id);
        assert!(m.proc.is_none(), "meta {id} runs already");
        m.starts += 1;
        let mut cmd = net.command(m.host, &mmc);
        cmd.args(["meta", "--id", &id.to_string(), "--peers", &peers])
            .arg("--http")
            .arg(format!("{}:0", net.hosts[m.host].ip))
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(&args);
        let started = start(cmd, &m.log(), 2, false)?;
        m.http = Some(http_of(&started.lines[1]));
        m.proc = Some(started.proc);
        m.paused = false;
        Ok(())
    }

    /// SIGKILL to node `id` (a stopped one too).
    pub fn kill_meta(&mut self, id: u64) {
        if let Some(p) = self.meta(id).proc.take() {
            drop(p);
        }
    }

    pub fn signal(&mut self, id: u64, signal: &str) {
        let pid = self.meta(id).pid().expect("a running node");
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid}");
        self.meta(id).paused = signal == "STOP";
    }

    pub fn start_local(&mut self, net: &Net, host: usize, dram: &str) -> Result<(), String> {
        let ip = net.hosts[host].ip;
        let mut cmd = net.command(host, &self.mmc);
        let n = self.locals.len() + 1;
        cmd.args(["local", "--discovery", &self.url, "--dram-size", dram])
            .arg("--http")
            .arg(format!("{ip}:{LOCAL_HTTP_PORT}"))
            .arg("--shm-socket")
            .arg(self.dir.join(format!("local{n}.sock")))
            .arg("--set")
            .arg(format!("data_addr={ip}:{DATA_PORT}"));
        let log = self.dir.join(format!("local{n}.log"));
        let started = start(cmd, &log, 2, false)?;
        let id = started.lines[0]
            .split_whitespace()
            .nth(2)
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| format!("unexpected first line {:?}", started.lines[0]))?;
        self.locals.push(Local {
            id,
            http: http_of(&started.lines[1]),
            _proc: started.proc,
        });
        Ok(())
    }

    /// Starts a client process on `host`.
    pub fn client(
        &self,
        net: &Net,
        host: usize,
        bin: &Path,
        replicas: u32,
        max_value: usize,
    ) -> Result<Client, String> {
        let mut cmd = net.command(host, bin);
        cmd.args([&self.url, &replicas.to_string(), &max_value.to_string()]);
        let name = net.hosts[host].name.clone();
        let log = self.dir.join(format!("{name}.log"));
        let started = start(cmd, &log, 1, true)?;
        Ok(Client {
            name,
            stdin: started.stdin.expect("piped"),
            answers: started.rest.expect("kept"),
            log,
            _proc: started.proc,
        })
    }

    /// Node `id`'s own account of its place in the group, if it answers at once.
    pub fn role(&self, id: u64) -> Option<RoleInfo> {
        let m = &self.metas[id as usize - 1];
        if !m.running() || m.paused {
            return None;
        }
        self.rt
            .block_on(ask_role(m.addr, Duration::from_millis(300)))
            .ok()
    }

    pub fn roles(&self) -> Vec<(u64, Option<RoleInfo>)> {
        self.metas.iter().map(|m| (m.id, self.role(m.id))).collect()
    }

    /// The node a majority of the group follows (and that says it leads), if any.
    pub fn leader(&self) -> Option<u64> {
        let roles = self.roles();
        let majority = self.metas.len() / 2 + 1;
        roles.iter().find_map(|(id, r)| {
            let leads = r.as_ref().is_some_and(|r| r.role == "leader");
            let followers = roles
                .iter()
                .filter(|(_, r)| r.as_ref().is_some_and(|r| r.leader == Some(*id)))
                .count();
            (leads && followers >= majority).then_some(*id)
        })
    }

    pub fn wait_leader(&self, within: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(format!("no leader within {within:?}: {:?}", self.roles()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every node answers, follows one leader, and holds the log the
    /// leader had when the wait began. Err names what did not happen; a node whose
    /// process ended is named with `exited`.
    pub fn converge(&mut self, within: Duration) -> Result<(), Converge> {
        let deadline = Instant::now() + within;
        let mut target = None;
        loop {
            for m in &mut self.metas {
                if let Some(status) = m.exited() {
                    return Err(Converge::Exited(m.id, status));
                }
            }
            let roles = self.roles();
            if let Some(l) = self.leader() {
                let leader_log = roles[l as usize - 1]
                    .1
                    .as_ref()
                    .and_then(|r| r.last_log_index);
                let target = *target.get_or_insert(leader_log);
                let done = roles.iter().all(|(_, r)| {
                    r.as_ref()
                        .is_some_and(|r| r.leader == Some(l) && r.last_log_index >= target)
                });
                if done {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Converge::Stuck(format!("{roles:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[derive(Debug)]
pub enum Converge {
    /// Node id, exit status.
    Exited(u64, String),
    Stuck(String),
}

impl Drop for Pool {
    fn drop(&mut self) {
        for m in &mut self.metas {
            m.proc.take();
        }
        self.locals.clear();
        for point in &self.mounts {
            // A failed run keeps what the nodes had on disk.
            if std::thread::panicking() {
                let kept = point.with_extension("kept");
                let _ = Command::new("cp").arg("-a").arg(point).arg(&kept).status();
            }
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
    }
}
