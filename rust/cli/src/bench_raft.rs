//! `mmc bench raft`: committed puts per second through a meta group of three against a
//! group of one, in the same run (rounds alternate between them, so noise hits both),
//! then the failover time: SIGKILL to the three-node group's leader until the next put
//! is acknowledged. Meta nodes are `mmc meta` processes; each group's client runs in
//! this process with its own local service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use memcache_client::{ClientConfig, ObjectStore};
use memcache_proto::ask_role;

use crate::children::{free_addrs, spawn_quiet, Owned};

/// `mmc meta` processes of one group, killed when dropped.
struct Group {
    nodes: BTreeMap<u64, Owned>,
    addrs: BTreeMap<u64, SocketAddr>,
    url: String,
}

impl Group {
    async fn start(size: usize) -> Result<Group, String> {
        let addrs: BTreeMap<u64, SocketAddr> = (1..).zip(free_addrs(size)?).collect();
        let peers = addrs
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut group = Group {
            nodes: BTreeMap::new(),
            url: addrs
                .values()
                .map(|a| format!("tcp://{a}"))
                .collect::<Vec<_>>()
                .join(","),
            addrs,
        };
        for id in group.addrs.keys().copied().collect::<Vec<_>>() {
            let id_arg = id.to_string();
            let args = ["meta", "--id", &id_arg, "--peers", &peers, "--http", ""];
            let child =
                spawn_quiet(&exe, &args).map_err(|e| format!("starting a meta node: {e}"))?;
            group.nodes.insert(id, child);
        }
        group.leader(Duration::from_secs(10)).await?;
        Ok(group)
    }

    /// The node that says it leads, once one does.
    async fn leader(&self, within: Duration) -> Result<u64, String> {
        let give_up = Instant::now() + within;
        let t = Duration::from_millis(200);
        loop {
            for (id, addr) in &self.addrs {
                if !self.nodes.contains_key(id) {
                    continue;
                }
                if ask_role(*addr, t).await.is_ok_and(|r| r.role == "leader") {
                    return Ok(*id);
                }
            }
            if Instant::now() > give_up {
                return Err("the meta group elected no leader".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The leader's last log index.
    async fn log_index(&self) -> Result<u64, String> {
        let leader = self.leader(Duration::from_secs(5)).await?;
        let role = ask_role(self.addrs[&leader], Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?;
        Ok(role.last_log_index.unwrap_or(0))
    }

    /// CPU time the group's processes have used, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let pids = self.nodes.values().map(Owned::pid);
        pids.filter_map(crate::procmem::cpu_seconds).sum()
    }

    fn kill(&mut self, id: u64) {
        self.nodes.remove(&id);
    }
}

const VALUE_BYTES: usize = 4096;

async fn client(url: &str) -> Result<Arc<ObjectStore>, String> {
    let store = ObjectStore::new(ClientConfig::remote(url, 512 << 20));
    store.init(0, true).await.map_err(|e| e.to_string())?;
    Ok(Arc::new(store))
}

/// Committed puts per second with `writers` concurrent writers for `secs`, and how
/// many.
async fn puts_per_s(store: &Arc<ObjectStore>, writers: usize, secs: f64, tag: &str) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let value = Arc::new(vec![0x5Au8; VALUE_BYTES]);
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, done, value) = (store.clone(), done.clone(), value.clone());
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < until {
                    let key = format!("{tag}/{w}/{i}");
                    if store.put(&key, &value).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let done = done.load(Ordering::Relaxed);
    (done as f64 / start.elapsed().as_secs_f64(), done)
}

pub fn run(rounds: usize, writers: usize) -> Result<Value, String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut one = Group::start(1).await?;
        let mut three = Group::start(3).await?;
        let c1 = client(&one.url).await?;
        let c3 = client(&three.url).await?;
        // Warm-up, then alternate.
        puts_per_s(&c1, writers, 0.3, "warm1").await;
        puts_per_s(&c3, writers, 0.3, "warm3").await;
        let (mut r1, mut r3) = (Vec::new(), Vec::new());
        let (mut n1, mut n3) = (0, 0);
        // CPU seconds of the meta processes and of this one (client and local service).
        let (mut cpu1, mut cpu3) = (0.0, 0.0);
        let cpu = |g: &Group| g.cpu_seconds() + crate::bench::cpu_seconds();
        let (i1, i3) = (one.log_index().await?, three.log_index().await?);
        for round in 0..rounds {
            let before = cpu(&one);
            let (rate, n) = puts_per_s(&c1, writers, 1.0, &format!("one{round}")).await;
            cpu1 += cpu(&one) - before;
            r1.push(rate);
            n1 += n;
            let before = cpu(&three);
            let (rate, n) = puts_per_s(&c3, writers, 1.0, &format!("three{round}")).await;
            cpu3 += cpu(&three) - before;
            r3.push(rate);
            n3 += n;
        }
        let (p1, p3) = (crate::bench::median(&mut r1), crate::bench::median(&mut r3));
        // Three replicas of the state machine share this machine's cores with the
        // client: at full use of every core the group of three can commit at most
        // cores / (its CPU per put) puts a second, which bounds the ratio here.
        let us_per_put = |cpu: f64, puts: u64| cpu * 1e6 / puts.max(1) as f64;
        let (u1, u3) = (us_per_put(cpu1, n1), us_per_put(cpu3, n3));
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
        let ceiling = (cores * 1e6 / u3 / p1).min(1.0);
        // Log entries per put: how well puts share entries (each put is an alloc and a
        // commit; heartbeats and housekeeping add a few entries).
        let per_put = |entries: u64, puts: u64| entries as f64 / puts.max(1) as f64;
        let e1 = per_put(one.log_index().await? - i1, n1);
        let e3 = per_put(three.log_index().await? - i3, n3);

        let leader = three.leader(Duration::from_secs(5)).await?;
        three.kill(leader);
        let killed = Instant::now();
        let value = vec![0xA5u8; VALUE_BYTES];
        let mut attempt = 0;
        loop {
            attempt += 1;
            if c3.put(&format!("failover/{attempt}"), &value).await.is_ok() {
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                return Err("no put succeeded within 30 s of the leader's kill".into());
            }
        }
        let failover_ms = killed.elapsed().as_secs_f64() * 1e3;
        drop((c1, c3));
        one.kill(1);
        Ok(json!({
            "workload": "raft",
            "value_bytes": VALUE_BYTES,
            "writers": writers,
            "rounds": rounds,
            "puts_per_s_1node": p1.round(),
            "puts_per_s_3node": p3.round(),
            "ratio": p3 / p1,
            "log_entries_per_put_1node": e1,
            "log_entries_per_put_3node": e3,
            "cpu_us_per_put_1node": u1,
            "cpu_us_per_put_3node": u3,
            "cpu_bound_ceiling": ceiling,
            "failover_ms": failover_ms.round(),
        }))
    })
}
