//! Hosts of their own: one network namespace per process, each with one veth pair
//! plugged into a bridge this test makes, with an address on a /24 of its own. The
//! test process itself (the root namespace) has an address on the bridge too, so it can
//! watch every node. Everything is named after the test's pid, removed on drop (a panic
//! included), and what an earlier run that died left behind is removed first.
//!
//! Faults, with iproute2 alone (neither iptables nor nft is needed):
//! - [`Net::isolate`] takes a host's link down: nothing reaches it, not even the test;
//! - [`Net::cut`] makes chosen pairs of hosts unreachable to each other only: each
//!   side's neighbour entry for the other points to a MAC address nobody has, so their
//!   packets are silently lost on the bridge (a real partition: calls time out, they do
//!   not fail at once).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

/// Namespaces are `mmc-chaos-<pid>-<host>`; links start with `mcx<pid>`.
pub const NS_PREFIX: &str = "mmc-chaos-";
const LINK_PREFIX: &str = "mcx";
/// Where a cut host's packets go: a locally administered address no interface has.
const NOWHERE_MAC: &str = "02:00:5e:c4:a0:55";

pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The veth end on the bridge, in the root namespace.
    veth: String,
}

pub struct Net {
    bridge: String,
    pub hosts: Vec<Host>,
    /// The test's own address on the bridge.
    pub observer: Ipv4Addr,
    cuts: BTreeSet<(usize, usize)>,
    down: BTreeSet<usize>,
}

/// Runs `ip ARGS`; the error says what failed and why.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running `ip {}`: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

impl Net {
    /// Makes the bridge and one namespace per name, each with its own address.
    pub fn new(names: &[&str]) -> Result<Net, String> {
        remove_leftovers();
        let pid = std::process::id();
        let tag = format!("{LINK_PREFIX}{pid}");
        let base = free_subnet(pid)?;
        let addr = |last: u8| Ipv4Addr::new(base[0], base[1], base[2], last);
        let mut net = Net {
            bridge: format!("{tag}br"),
            hosts: Vec::new(),
            observer: addr(254),
            cuts: BTreeSet::new(),
            down: BTreeSet::new(),
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.observer),
            "dev",
            &net.bridge,
        ])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for (i, name) in names.iter().enumerate() {
            let host = Host {
                name: name.to_string(),
                ns: format!("{NS_PREFIX}{pid}-{name}"),
                ip: addr(i as u8 + 1),
                veth: format!("{tag}v{i}"),
            };
            // Registered before it exists, so a failure half-way is cleaned up too.
            net.hosts.push(host);
            let host = net.hosts.last().expect("just pushed");
            let ns = host.ns.as_str();
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "link", "add", &host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            ip(&["link", "set", &host.veth, "master", &net.bridge, "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", host.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// `program` run inside host `i`'s namespace.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i].ns]).arg(program);
        c
    }

    /// Takes host `i`'s link down: it reaches nobody and nobody reaches it.
    pub fn isolate(&mut self, i: usize) {
        must(&["link", "set", &self.hosts[i].veth, "down"]);
        self.down.insert(i);
    }

    /// Every host of `a` and every host of `b` stop reaching each other (both ways);
    /// each keeps reaching everyone else.
    pub fn cut(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                if x == y || !self.cuts.insert((x.min(y), x.max(y))) {
                    continue;
                }
                for (from, to) in [(x, y), (y, x)] {
                    let to_ip = self.hosts[to].ip.to_string();
                    must(&[
                        "-n",
                        &self.hosts[from].ns,
                        "neigh",
                        "replace",
                        &to_ip,
                        "lladdr",
                        NOWHERE_MAC,
                        "dev",
                        "eth0",
                        "nud",
                        "permanent",
                    ]);
                }
            }
        }
    }

    /// Ends every cut and brings every link up again.
    pub fn heal(&mut self) {
        for (x, y) in std::mem::take(&mut self.cuts) {
            for (from, to) in [(x, y), (y, x)] {
                let to_ip = self.hosts[to].ip.to_string();
                must(&[
                    "-n",
                    &self.hosts[from].ns,
                    "neigh",
                    "del",
                    &to_ip,
                    "dev",
                    "eth0",
                ]);
            }
        }
        for i in std::mem::take(&mut self.down) {
            must(&["link", "set", &self.hosts[i].veth, "up"]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the pair, and with it the other end;
        // the kernel does that lazily, so the ends on the bridge are deleted here too.
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
            let _ = ip(&["link", "del", &h.veth]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A /24 of 10.0.0.0/8 that no address or route of this host uses, picked from the pid
/// (so parallel runs start apart).
fn free_subnet(pid: u32) -> Result<[u8; 3], String> {
    let used = format!(
        "{}\n{}",
        ip(&["-4", "-o", "addr", "show"])?,
        ip(&["-4", "route", "show", "table", "all"])?
    );
    let start = pid as usize % (50 * 256);
    for k in 0..50 * 256 {
        let n = (start + k) % (50 * 256);
        let (a, b) = (200 + (n / 256) as u8, (n % 256) as u8);
        if !used.contains(&format!("10.{a}.{b}.")) {
            return Ok([10, a, b]);
        }
    }
    Err("no free 10.x.y.0/24 for the test network".into())
}

/// Whether `pid` is a live chaos test (the test binary is `chaos-<hash>`).
fn chaos_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with("chaos"))
}

/// The pid in a name `PREFIX<pid>…`, if the rest starts with digits.
fn pid_in(name: &str, prefix: &str) -> Option<u32> {
    let digits: String = name
        .strip_prefix(prefix)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Removes what runs that died without cleaning up left: their processes (found by
/// namespace), namespaces, links and tmpfs mounts, and their directories after a day.
pub fn remove_leftovers() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = pid_in(ns, NS_PREFIX) else {
            continue;
        };
        if chaos_alive(pid) {
            continue;
        }
        eprintln!("[chaos] removing namespace {ns} left by an earlier run");
        if let Ok(pids) = ip(&["netns", "pids", ns]) {
            for p in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", p]).status();
            }
        }
        let _ = ip(&["netns", "del", ns]);
    }
    if let Ok(links) = ip(&["-o", "link", "show"]) {
        for line in links.lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or("");
            if pid_in(name, LINK_PREFIX).is_some_and(|p| !chaos_alive(p)) {
                eprintln!("[chaos] removing link {name} left by an earlier run");
                let _ = ip(&["link", "del", name]);
            }
        }
    }
    let tmp = std::env::temp_dir();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for point in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let Some(rest) = Path::new(point).strip_prefix(&tmp).ok() else {
            continue;
        };
        let first = rest.iter().next().and_then(|s| s.to_str()).unwrap_or("");
        if pid_in(first, NS_PREFIX).is_some_and(|p| !chaos_alive(p)) {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
    // A failed run's directory (its logs) stays for a day.
    let day = std::time::Duration::from_secs(24 * 3600);
    if let Ok(dir) = std::fs::read_dir(&tmp) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > day);
            if old && pid_in(&name, NS_PREFIX).is_some_and(|p| !chaos_alive(p)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
