//! A meta group of three `mmc meta` processes on 127.0.0.1, with local services and
//! clients: the leader is killed with SIGKILL, a new one must serve quickly, nothing
//! acknowledged may be lost, a concurrent history must stay linearizable, and the old
//! leader must rejoin as a follower.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pattern;
use common::procs::*;

use memcache_client::BlockingObjectStore;
use memcache_proto::{ask_role, MetaLink, RoleInfo};
use memcache_tests::linearizability::{History, Op, Ret};

/// Three meta processes forming one group.
struct MetaGroup {
    nodes: BTreeMap<u64, Proc>,
    addrs: BTreeMap<u64, String>,
    https: BTreeMap<u64, String>,
    peers: String,
    url: String,
    extra: Vec<String>,
}

impl MetaGroup {
    fn start() -> MetaGroup {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> MetaGroup {
        let addrs: BTreeMap<u64, String> = free_ports(3)
            .into_iter()
            .zip(1..)
            .map(|(p, id)| (id, format!("127.0.0.1:{p}")))
            .collect();
        let peers = addrs
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let url = addrs
            .values()
            .map(|a| format!("tcp://{a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut group = MetaGroup {
            nodes: BTreeMap::new(),
            addrs,
            https: BTreeMap::new(),
            peers,
            url,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for id in 1..=3 {
            group.start_node(id);
        }
        group.leader();
        group
    }

    fn start_node(&mut self, id: u64) {
        let id_arg = id.to_string();
        let mut args = vec!["meta", "--id", &id_arg, "--peers", &self.peers];
        args.extend(self.extra.iter().map(String::as_str));
        let (p, lines) = spawn_mmc_lines(&args, 2);
        let http = http_of(&lines[1]);
        self.nodes.insert(id, p);
        self.https.insert(id, http);
    }

    fn role(&self, id: u64) -> Option<RoleInfo> {
        let addr = self.addrs[&id].parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(ask_role(addr, Duration::from_millis(300))).ok()
    }

    /// The node that leads, once one does (bounded).
    fn leader(&self) -> u64 {
        let mut found = None;
        eventually("the group has a leader", || {
            found = self
                .nodes
                .keys()
                .find(|id| self.role(**id).is_some_and(|r| r.role == "leader"))
                .copied();
            found.is_some()
        });
        found.unwrap()
    }

    fn kill(&mut self, id: u64) {
        drop(self.nodes.remove(&id).expect("a running node"));
    }
}

fn start_locals(url: &str, n: usize) -> Vec<Proc> {
    let locals = (0..n).map(|_| start_local(url, "64MiB").0).collect();
    wait_for_services(url, n as u64);
    locals
}

#[test]
fn failover_keeps_every_acknowledged_object_and_the_old_leader_rejoins() {
    let mut group = MetaGroup::start();
    let _locals = start_locals(&group.url, 2);
    let client = pure_client(&group.url);
    const N: usize = 200;
    let value = |i: usize| pattern(i as u64, 1000 + i * 37);
    for i in 0..N {
        client.put(format!("ha/{i}"), &value(i)).unwrap();
    }

    let old = group.leader();
    let followers_http: Vec<String> = group
        .https
        .iter()
        .filter(|(id, _)| **id != old)
        .map(|(_, h)| h.clone())
        .collect();
    group.kill(old);
    let killed = Instant::now();
    // The first write after the kill: the client finds the new leader by itself.
    client.put("ha/after", b"after the failover").unwrap();
    let failover = killed.elapsed();
    eprintln!("failover: the first put after the kill returned in {failover:?}");
    assert!(
        failover <= Duration::from_millis(1500),
        "a new leader served only after {failover:?}"
    );
    let new = group.leader();
    assert_ne!(new, old);
    for h in &followers_http {
        let (status, body) = http_get(h, "/leader");
        assert_eq!(status, 200, "{body}");
        let leader: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(leader["id"], new, "{body}");
    }

    for i in 0..N {
        assert_eq!(client.get(format!("ha/{i}")).unwrap(), value(i), "ha/{i}");
    }
    assert_eq!(client.get("ha/after").unwrap(), b"after the failover");

    // The old leader comes back empty (its log was in memory) and catches up as a
    // follower of the new one.
    group.start_node(old);
    let http = group.https[&old].clone();
    eventually("the old leader rejoins as a follower", || {
        let r = group.role(old);
        r.is_some_and(|r| r.role == "follower" && r.leader == Some(new))
    });
    eventually("the old leader holds every object again", || {
        let (_, body) = http_get(&http, "/get_all_keys");
        body.lines().count() == N + 1
    });
    assert_eq!(http_get(&http, "/role").1.trim(), "follower");
    // And it could lead: with the new leader gone, the group still has a quorum.
    group.kill(new);
    client.put("ha/third", b"third term").unwrap();
    for i in (0..N).step_by(17) {
        assert_eq!(client.get(format!("ha/{i}")).unwrap(), value(i), "ha/{i}");
    }
}

/// Writers racing into a pool three times too small, through a group of three: every
/// put is acknowledged and the newest objects read back. Allocations are planned while
/// earlier batches are still in the log; a plan that did not count their room would
/// send the log commands that fail as out of memory.
#[test]
fn racing_writers_fill_a_small_pool_through_the_group_without_a_refusal() {
    let group = MetaGroup::start();
    let _locals = start_locals(&group.url, 2);
    const WRITERS: usize = 8;
    const PUTS: usize = 12;
    // Eight writers' puts in flight are more than the room above the eviction
    // watermark (a tenth of the pool).
    let size = |w: usize, i: usize| (4 << 20) - 4096 * ((w + i) % 7);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let url = group.url.clone();
            s.spawn(move || {
                let client = pure_client(&url);
                for i in 0..PUTS {
                    let v = pattern((w * PUTS + i) as u64, size(w, i));
                    client.put(format!("full/{w}/{i}"), &v).unwrap_or_else(|e| {
                        panic!("writer {w}, put {i}: {e} ({})", e.code());
                    });
                }
                let last = PUTS - 1;
                let want = pattern((w * PUTS + last) as u64, size(w, last));
                assert_eq!(client.get(format!("full/{w}/{last}")).unwrap(), want);
            });
        }
    });
}

#[test]
fn a_meta_node_joins_from_a_snapshot_and_leaves_again() {
    let mut group = MetaGroup::start_with(&["--set", "raft_snapshot_every=40"]);
    let _locals = start_locals(&group.url, 1);
    let client = pure_client(&group.url);
    const N: usize = 150;
    for i in 0..N {
        client
            .put(format!("snap/{i}"), &pattern(i as u64, 512))
            .unwrap();
    }
    // Snapshots keep the log short.
    let leader = group.leader();
    let r = group.role(leader).unwrap();
    let (last, purged) = (r.last_log_index.unwrap(), r.purged_index.unwrap_or(0));
    assert!(r.snapshot_index.is_some(), "{r:?}");
    assert!(
        last - purged <= 80,
        "the log keeps {} entries: {r:?}",
        last - purged
    );

    // A fourth node starts knowing the group, and is added at run time: the log it
    // missed is gone, so it starts from the leader's snapshot.
    let addr4 = format!("127.0.0.1:{}", free_ports(1)[0]);
    group.peers = format!("{},4={addr4}", group.peers);
    group.addrs.insert(4, addr4.clone());
    group.start_node(4);
    let mmc = |args: &[&str]| {
        let out = std::process::Command::new(mmc_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    mmc(&["members", "--discovery", &group.url, "add", "4", &addr4]);
    eventually("the new node follows", || {
        group
            .role(4)
            .is_some_and(|r| r.role == "follower" && r.snapshot_index.is_some())
    });
    let http4 = group.https[&4].clone();
    eventually("the new node holds every object", || {
        http_get(&http4, "/get_all_keys").1.lines().count() == N
    });
    assert_eq!(group.role(leader).unwrap().members.len(), 4);

    mmc(&["members", "--discovery", &group.url, "remove", "4"]);
    eventually("the group is three again", || {
        group.role(leader).is_some_and(|r| r.members.len() == 3)
    });
    client.put("snap/after", b"three again").unwrap();
    assert_eq!(client.get("snap/7").unwrap(), pattern(7, 512));
}

/// A meta address that swallows connection attempts (a host cut off from the network
/// drops them unanswered) costs a call at most its share of the deadline, once. In the
/// chaos test such an address (the old leader, isolated) stood first in a local
/// service's list, before a follower that redirected to the new leader: every heartbeat
/// spent its whole deadline connecting there, so the new leader declared the live
/// service dead and its objects lost.
#[test]
fn an_address_that_swallows_connections_costs_a_call_its_share_once() {
    let group = MetaGroup::start();
    let leader = group.leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A backlog of 0 queues one connection, which is never accepted; later
        // attempts get no answer at all.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let swallow = socket.listen(0).unwrap();
        let hole = swallow.local_addr().unwrap();
        let _queued = tokio::net::TcpStream::connect(hole).await.unwrap();

        let timeout = Duration::from_secs(1);
        let addrs = vec![
            hole,
            group.addrs[&follower].parse().unwrap(),
            group.addrs[&leader].parse().unwrap(),
        ];
        let link = MetaLink::new(addrs, timeout);
        let key = memcache_core::Key::new("anything").unwrap();
        for i in 0..5 {
            let began = Instant::now();
            let answer = link
                .call(|rpc, ctx| {
                    let keys = vec![key.clone()];
                    async move { rpc.exists(ctx, keys).await }
                })
                .await;
            let took = began.elapsed();
            assert!(
                matches!(answer.as_deref(), Ok([Ok(false)])),
                "call {i}: {answer:?} after {took:?}"
            );
            // The first call tries the hole for its share; later ones go straight to
            // the leader found.
            let bound = if i == 0 { timeout } else { timeout / 4 };
            assert!(took < bound, "call {i} took {took:?}");
        }
    });
}

/// The value a put wrote: its id in the first 8 bytes and a pattern of it after, so a
/// torn or mixed read is caught as a value nobody wrote.
fn encode(id: u64) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    v.extend(pattern(id, 2048));
    v
}

fn decode(bytes: &[u8]) -> u64 {
    let id = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    if bytes[8..] == pattern(id, 2048)[..] {
        id
    } else {
        u64::MAX
    }
}

fn code_ret(code: i32) -> Ret {
    match code {
        -3006 => Ret::Duplicated,
        -3007 => Ret::NotFound,
        -3104 => Ret::Busy,
        _ => Ret::Unknown,
    }
}

/// One client's random operations until `stop`; every call is recorded.
fn run_client(c: usize, store: BlockingObjectStore, history: &History, stop: &AtomicBool) {
    const KEYS: usize = 8;
    const CLIENTS: usize = 4;
    let mut rng = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = (next() % KEYS as u64) as usize;
        let key = format!("lin/{k}");
        let roll = next() % 100;
        // Each key has one writer: a put of a key another put holds (uncommitted)
        // answers -3006, which no sequential order explains.
        if k % CLIENTS == c && roll < 40 {
            seq += 1;
            let id = (c as u64) << 32 | seq;
            let p = history.begin(c, key.as_bytes(), Op::Put(id));
            let r = store.put(&key, &encode(id));
            history.end(p, r.map_or_else(|e| code_ret(e.code()), |()| Ret::Ok));
        } else if roll < 80 {
            let p = history.begin(c, key.as_bytes(), Op::Get);
            let r = store.get(&key);
            let ret = match r {
                Ok(bytes) => Ret::Value(decode(&bytes)),
                Err(e) => code_ret(e.code()),
            };
            history.end(p, ret);
        } else {
            let p = history.begin(c, key.as_bytes(), Op::Remove);
            let r = store.remove(&key);
            history.end(p, r.map_or_else(|e| code_ret(e.code()), |()| Ret::Ok));
        }
    }
}

#[test]
fn a_history_across_a_leader_kill_is_linearizable() {
    let mut group = MetaGroup::start();
    let _locals = start_locals(&group.url, 2);
    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let store = pure_client(&group.url);
            let (history, stop) = (history.clone(), stop.clone());
            std::thread::spawn(move || run_client(c, store, &history, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let leader = group.leader();
    let killed_at = history.now();
    group.kill(leader);
    std::thread::sleep(Duration::from_millis(3000));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let events = history.events();
    let done_after = events
        .iter()
        .filter(|e| e.invoked > killed_at && e.ret != Ret::Unknown)
        .count();
    let unknown = events.iter().filter(|e| e.ret == Ret::Unknown).count();
    eprintln!(
        "{} operations, {unknown} with unknown outcome, {done_after} answered after the kill",
        events.len()
    );
    assert!(events.len() > 200, "too few operations to mean anything");
    assert!(
        done_after > 50,
        "the clients did not carry on after the kill"
    );
    if let Err(v) = history.check() {
        panic!("not linearizable: {v}");
    }
}
