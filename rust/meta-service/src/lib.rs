//! The meta service: a member of the meta group (openraft over the same tarpc port
//! clients use), serving requests while it leads and redirecting them otherwise, plus
//! the housekeeping only a running leader does: declaring local services dead when
//! their heartbeats stop, and rolling back puts and freeing expired objects on time.
//! A single meta service is a group of one.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use openraft::{BasicNode, Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tarpc::server::{BaseChannel, Channel};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use memcache_core::{Blob, Clock, Error, Key, LocalServiceId, Medium, Result};
use memcache_meta::{AllocRequest, Cap, Leader, MetaConfig};
use memcache_proto::{
    blob_tag, Allocation, Beat, DataEndpoint, LeaseId, Located, MetaRpc, PutId, Redirect, Tag,
    TagKey,
};
use memcache_raft::NodeId;
use memcache_tls::Peer;

mod fences;
mod group;
mod http;
mod metrics;
mod ptracer;
mod raft_net;
mod rpc;
pub mod seed_config;

use group::Group;
use metrics::Metrics;
use ptracer::{Tp, Tracer};
use rpc::{Outcome, Server};

/// The spec's tracepoint table, for any rows (e.g. fetched over RPC).
pub use ptracer::table as tracepoint_table;

/// Runtime threads of a meta service unless told: one on a host of two cores or fewer,
/// which it shares with clients and local services, and where a second thread mostly
/// adds cross-thread wake-ups (`mmc bench raft`: a third less CPU per put); two
/// otherwise, so that heartbeats go on while a request's work holds one thread.
pub fn default_threads() -> usize {
    match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        0..=2 => 1,
        _ => 2,
    }
}

/// A runtime for a meta service served inside `block_on`: with one thread, everything
/// runs on the caller's.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    }
    .enable_all()
    .build()
}

/// Settings of `mmc meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetaServiceConfig {
    /// Where to listen: `tcp://HOST:PORT`.
    #[serde(alias = "discoveryURL")]
    pub discovery_url: String,
    #[serde(flatten)]
    pub meta: MetaConfig,
    /// A local service silent this long is declared dead.
    #[serde(alias = "heartbeatTimeoutMs")]
    pub heartbeat_timeout_ms: u64,
    /// The admin HTTP server: `HOST:PORT`, or a port on loopback; empty turns it off.
    #[serde(alias = "httpURL")]
    pub http_url: String,
    /// Tracepoints on every call (`/metrics/ptracer`); off only to measure their cost.
    pub ptracer: bool,
    /// How often overdue puts, expired objects and dead services are looked for.
    #[serde(alias = "housekeepingIntervalMs")]
    pub housekeeping_interval_ms: u64,
    /// This node's id in the meta group.
    pub id: NodeId,
    /// The meta group, `ID=HOST:PORT` separated by commas (the addresses clients use);
    /// empty for a group of one. The node binds its own entry's address.
    pub peers: String,
    /// Keeps the Raft log, vote and snapshots here (fsync'ed); in memory without it.
    #[serde(alias = "dataDir")]
    pub data_dir: Option<PathBuf>,
    /// Leader heartbeat period (ms).
    pub raft_heartbeat_ms: u64,
    /// Election timeout (ms): each node draws its own between this and 1.5 times it. A
    /// follower campaigns once it has heard no leader for 1.5 times this (openraft's
    /// leader lease, during which it refuses other candidates too) plus its own timeout.
    pub raft_election_timeout_ms: u64,
    /// A snapshot is taken after this many log entries, and the log before it dropped.
    pub raft_snapshot_every: u64,
    /// Mutual TLS on the RPC port (clients, local services and the other meta nodes)
    /// and on the admin HTTP server; plaintext where off or absent.
    pub tls: Option<memcache_tls::TlsConfig>,
    /// Connections the RPC port and the admin HTTP server each keep open at most.
    pub max_connections: usize,
}

impl Default for MetaServiceConfig {
    fn default() -> Self {
        MetaServiceConfig {
            discovery_url: "tcp://127.0.0.1:5000".into(),
            meta: MetaConfig::default(),
            heartbeat_timeout_ms: 3000,
            http_url: "127.0.0.1:0".into(),
            ptracer: true,
            housekeeping_interval_ms: 100,
            id: 1,
            peers: String::new(),
            data_dir: None,
            raft_heartbeat_ms: 40,
            raft_election_timeout_ms: 150,
            raft_snapshot_every: 20_000,
            tls: None,
            max_connections: memcache_tls::Limits::default().max_conns,
        }
    }
}

impl MetaServiceConfig {
    /// The group's members from `peers`: `ID=HOST:PORT,…`.
    pub fn members(&self) -> Result<BTreeMap<NodeId, SocketAddr>> {
        let mut out = BTreeMap::new();
        for part in self
            .peers
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let bad = |why: String| Error::invalid(format!("peer {part:?}: {why}"));
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| bad("expected ID=HOST:PORT".into()))?;
            let id: NodeId = id.trim().parse().map_err(|e| bad(format!("{e}")))?;
            let addr = memcache_proto::parse_discovery(&format!("tcp://{}", addr.trim()))
                .map_err(|e| bad(e.to_string()))?[0];
            if out.insert(id, addr).is_some() {
                return Err(bad("the id appears twice".into()));
            }
        }
        if !out.is_empty() && !out.contains_key(&self.id) {
            return Err(Error::invalid(format!(
                "this node's id {} is not among the peers {:?}",
                self.id, self.peers
            )));
        }
        Ok(out)
    }

    fn raft_config(&self) -> Result<openraft::Config> {
        openraft::Config {
            cluster_name: "mmc-meta".into(),
            heartbeat_interval: self.raft_heartbeat_ms.max(1),
            election_timeout_min: self.raft_election_timeout_ms,
            // openraft's leader lease is the largest timeout, and a follower waits the
            // lease plus its own timeout: with twice the least, a SIGKILL'ed leader's
            // successor took 450-600 ms of silence to start campaigning.
            election_timeout_max: (self.raft_election_timeout_ms * 3 / 2)
                .max(self.raft_election_timeout_ms + 1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.raft_snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: (self.raft_snapshot_every / 2).min(1000),
            // Entries can be large batches; keep one message well inside MAX_FRAME.
            max_payload_entries: 32,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::invalid(format!("raft settings: {e}")))
    }
}

/// A number no other meta service process is likely to pick (see [`Beat::epoch`]).
fn epoch() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ ((std::process::id() as u64) << 40) | 1
}

/// The services holding memory blobs of `blobs` (those a capability may reach).
fn owners(blobs: &[Blob]) -> Vec<LocalServiceId> {
    let mut owners: Vec<LocalServiceId> = blobs
        .iter()
        .filter(|b| b.medium != Medium::Ssd)
        .map(|b| b.service)
        .collect();
    owners.sort_unstable();
    owners.dedup();
    owners
}

/// What the meta service keeps with each local service in the replicated state.
#[derive(Serialize, Deserialize)]
struct Attachment {
    endpoint: DataEndpoint,
    key: TagKey,
}

pub(crate) struct Live {
    pub endpoint: DataEndpoint,
    pub last_beat: Instant,
    pub key: TagKey,
}

pub(crate) struct Shared {
    pub group: Arc<Group>,
    live: Mutex<BTreeMap<LocalServiceId, Live>>,
    pub rpcs: AtomicU64,
    pub by_method: Mutex<BTreeMap<&'static str, u64>>,
    pub tracer: Tracer,
    pub metrics: Metrics,
    /// The certificate that registered each local service (TLS only): a caller with the
    /// local role acts on its own service alone.
    pub owners: Mutex<BTreeMap<LocalServiceId, memcache_tls::CertId>>,
    fences: Mutex<fences::Fences>,
    /// Woken when owners confirmed revocations: the housekeeping hands quarantined
    /// memory back at once instead of at its next tick.
    pub kick: tokio::sync::Notify,
    /// Woken after each housekeeping round, which may have handed memory back:
    /// allocations waiting for quarantined memory look again.
    pub unheld: tokio::sync::Notify,
}

impl Shared {
    pub fn live(&self) -> MutexGuard<'_, BTreeMap<LocalServiceId, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ok while this node leads (see [`Group::lead`]); a new leader first learns the
    /// local services from the replicated state, each with a full heartbeat timeout.
    pub async fn lead(&self) -> std::result::Result<(), Redirect> {
        self.group
            .lead(|| {
                let now = Instant::now();
                let live = self.group.read(|_, sm, _| {
                    sm.services()
                        .filter_map(|s| {
                            let a: Attachment = serde_json::from_slice(&s.attachment).ok()?;
                            let live = Live {
                                endpoint: a.endpoint,
                                last_beat: now,
                                key: a.key,
                            };
                            Some((s.id, live))
                        })
                        .collect()
                });
                *self.live() = live;
            })
            .await
    }

    /// Data-plane capabilities for `blobs`, each with its owner's key, for put or
    /// read lease `id` until `expires_ms`, and whether one reaches memory (to fence).
    /// A caller that maps the segments of `maps_host` gets none for DRAM there; SSD
    /// blobs always get one, unfenced (record ids are not reused).
    fn tags(
        &self,
        blobs: &[Blob],
        write: bool,
        (id, expires_ms): (u64, u64),
        maps_host: Option<&str>,
    ) -> (Vec<Tag>, bool) {
        let live = self.live();
        let mut memory = false;
        let tags = blobs
            .iter()
            .map(|b| {
                let Some(l) = live.get(&b.service) else {
                    return Tag::default();
                };
                // Only DRAM goes without: device memory is imported by same-host
                // clients that can, and reached through its service by the rest, so
                // it always gets a capability, and its fence keeps the range from
                // new objects while an importer may still copy.
                let mapped = b.medium == Medium::Dram
                    && l.endpoint.shm_socket.is_some()
                    && maps_host.is_some_and(|h| h == l.endpoint.host);
                if b.medium != Medium::Ssd {
                    if mapped {
                        return Tag::default();
                    }
                    memory = true;
                }
                blob_tag(&l.key, (b.segment, b.offset, b.len), write, id, expires_ms)
            })
            .collect();
        (tags, memory)
    }

    fn fences(&self) -> MutexGuard<'_, fences::Fences> {
        self.fences.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write capabilities for each allocation of `keys` (in order), and the fences
    /// that keep their memory from other objects while they may be honoured.
    pub fn grant_puts(
        &self,
        keys: &[Key],
        out: &mut [Result<Allocation>],
        maps_host: Option<&str>,
    ) {
        for (key, a) in keys.iter().zip(out.iter_mut()) {
            let Ok(a) = a else { continue };
            let (tags, memory) = self.tags(&a.blobs, true, (a.put_id, a.deadline_ms), maps_host);
            a.tags = tags;
            if !memory {
                continue;
            }
            let cap = Cap::Put(a.put_id);
            self.fences()
                .issued(cap, key, a.deadline_ms, owners(&a.blobs));
            self.group.fencing(|l, _| l.fence(key, cap, a.deadline_ms));
        }
    }

    /// Read capabilities for each object found of `keys` (in order), fenced likewise.
    pub fn grant_reads(&self, keys: &[Key], out: &mut [Result<Located>], maps_host: Option<&str>) {
        for (key, l) in keys.iter().zip(out.iter_mut()) {
            let Ok(l) = l else { continue };
            let (tags, memory) = self.tags(&l.blobs, false, (l.lease, l.until_ms), maps_host);
            l.tags = tags;
            if memory {
                let cap = Cap::Read(l.lease);
                self.fences().issued(cap, key, l.until_ms, owners(&l.blobs));
                self.group
                    .fencing(|leader, _| leader.fence(key, cap, l.until_ms));
            }
        }
    }

    /// Puts committed or aborted (`results` Ok): their owners are to revoke their
    /// write capabilities.
    pub fn end_puts(&self, items: &[(Key, PutId)], results: &[Result<()>]) {
        let mut f = self.fences();
        for ((_, put), r) in items.iter().zip(results) {
            if r.is_ok() {
                f.ended(Cap::Put(*put));
            }
        }
    }

    /// A local service's heartbeat: the revocations to send it, and the puts every
    /// owner has now revoked, which need no fence any more.
    pub fn beat(&self, service: LocalServiceId, acked: (u64, u64)) -> Beat {
        let (beat, confirmed) = self.group.fencing(|leader, now| {
            let skew = leader.config().clock_skew.as_millis() as u64;
            let mut f = self.fences();
            f.prune(now, skew);
            f.beat(service, acked)
        });
        if !confirmed.is_empty() {
            self.group.fencing(|leader, _| {
                for (key, cap) in &confirmed {
                    leader.unfence(key, *cap);
                }
            });
            self.kick.notify_one();
        }
        beat
    }

    /// Allocates `request`'s items; those refused for want of room while freed memory
    /// sits in quarantine (its capabilities' revocations not yet acknowledged by their
    /// owners) are tried again as it comes back, until `until`.
    pub async fn alloc_waiting(
        &self,
        request: AllocRequest,
        until: Instant,
    ) -> Vec<Result<Allocation>> {
        let mut out = self.group.alloc(request.clone()).await;
        loop {
            let short: Vec<usize> = (0..out.len())
                .filter(|&i| matches!(out[i], Err(Error::OutOfMemory(_))))
                .collect();
            let quarantined = || {
                self.group
                    .read(|_, sm, _| sm.quarantined().next().is_some())
            };
            if short.is_empty() || Instant::now() >= until || !quarantined() {
                return out;
            }
            let unheld = self.unheld.notified();
            let _ = tokio::time::timeout_at(until.into(), unheld).await;
            let again = AllocRequest {
                items: short.iter().map(|&i| request.items[i].clone()).collect(),
                ..request.clone()
            };
            for (i, r) in short.into_iter().zip(self.group.alloc(again).await) {
                out[i] = r;
            }
        }
    }

    /// Ends read leases; their owners are to refuse their read capabilities.
    pub fn release_reads(&self, leases: &[(Key, LeaseId)]) {
        if leases.is_empty() {
            return;
        }
        self.group.release(leases);
        let mut f = self.fences();
        for (_, lease) in leases {
            f.ended(Cap::Read(*lease));
        }
    }

    /// A local service left.
    pub fn forget_service(&self, service: LocalServiceId) {
        self.fences().forget_service(service);
    }

    /// Runs one call: counts it, times it at its tracepoint and in the latency
    /// histogram, and counts the keys it answered with a real error.
    pub async fn traced<T: Outcome, F: std::future::Future<Output = T>>(
        &self,
        method: &'static str,
        tp: Tp,
        f: impl FnOnce() -> F,
    ) -> T {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        *self
            .by_method
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(method)
            .or_default() += 1;
        let span = self.tracer.begin(tp);
        let timer = self
            .metrics
            .rpc_seconds
            .with_label_values(&[method])
            .start_timer();
        let out = f().await;
        timer.observe_duration();
        let errors = out.item_errors();
        if errors > 0 {
            self.metrics
                .rpc_item_errors
                .with_label_values(&[method])
                .inc_by(errors);
        }
        span.end(errors == 0);
        out
    }

    /// Brings the state-derived metrics up to date (for a scrape or a status call).
    pub fn observe(&self) {
        self.group.read(|_, sm, _| self.metrics.observe_state(sm));
        self.metrics.observe_group(&self.group.role());
        self.metrics.local_services.set(self.live().len() as i64);
    }

    async fn housekeeping(&self, heartbeat_timeout: Duration) {
        // Followers (answered at once, from the metrics) have nothing to keep.
        if self.lead().await.is_err() {
            return;
        }
        let now = Instant::now();
        let dead: Vec<LocalServiceId> = self
            .live()
            .iter()
            .filter(|(_, l)| now.duration_since(l.last_beat) > heartbeat_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.live().remove(&id);
            match self.group.remove_service(id).await {
                Ok(lost) => tracing::warn!(service = id, lost, "local service declared dead"),
                Err(e) => tracing::warn!(service = id, error = %e, "removing a dead service"),
            }
        }
        self.group.reclaim().await;
        self.unheld.notify_waiters();
    }
}

/// A running meta service; stops when `stop` is called or the value is dropped.
pub struct MetaService {
    addr: SocketAddr,
    http: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    group: Arc<Group>,
}

/// Forms the group if nobody has: a pristine node with the smallest id asks the other
/// peers, and initializes the group only when none of them belongs to one already (so
/// a node that restarts without its data joins the running group instead). A group of
/// one leads at once; other nodes wait for the leader to reach them.
async fn bootstrap(group: &Group, members: BTreeMap<NodeId, SocketAddr>) -> Result<()> {
    let raft = &group.raft;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| Error::Failed(format!("meta group: {e}")))?;
    if initialized || members.keys().next() != Some(&group.id) {
        return Ok(());
    }
    for (id, addr) in &members {
        if *id == group.id {
            continue;
        }
        if let Ok(role) = memcache_proto::ask_role(*addr, Duration::from_millis(300)).await {
            if !role.members.is_empty() {
                tracing::info!(peer = id, "joining the running meta group");
                return Ok(());
            }
        }
    }
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|(id, a)| (*id, BasicNode::new(a.to_string())))
        .collect();
    raft.initialize(nodes)
        .await
        .map_err(|e| Error::Failed(format!("forming the meta group: {e}")))?;
    if members.len() == 1 {
        raft.wait(Some(Duration::from_secs(10)))
            .current_leader(group.id, "a group of one leads at once")
            .await
            .map_err(|e| Error::Failed(format!("meta group: {e}")))?;
    }
    Ok(())
}

/// One listener of the meta service: each connection its own task (its TLS handshake,
/// then `handle`, with the roles of the peer's certificate), every one of them ended at
/// `stop`; a failed handshake counts as a refusal.
pub(crate) async fn serve_until_stopped<H, F>(
    listener: tokio::net::TcpListener,
    (tls, limits): (Option<Arc<memcache_tls::TlsServer>>, memcache_tls::Limits),
    what: &'static str,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(Arc<Shared>, memcache_tls::Stream, Peer, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let refused = {
        let shared = shared.clone();
        move || shared.metrics.tls_refused.inc()
    };
    let each = stop.clone();
    let serving = memcache_tls::listen::serve(
        listener,
        tls,
        limits,
        what,
        refused,
        move |s, peer, from| {
            let (served, mut stop) = (handle(shared.clone(), s, peer, from), each.clone());
            async move {
                tokio::select! {
                    _ = served => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
        },
    );
    tokio::select! {
        _ = serving => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// The RPC port's calls on one connection, closed once silent for
/// [`memcache_proto::RPC_IDLE`] (a `MetaLink` reconnects well before that).
fn serve_calls(
    shared: Arc<Shared>,
    stream: memcache_tls::Stream,
    peer: Peer,
    _: SocketAddr,
) -> impl Future<Output = ()> {
    let stream = memcache_tls::Idle::new(stream, memcache_proto::RPC_IDLE);
    BaseChannel::with_defaults(memcache_proto::transport(stream))
        .execute(Server(shared, peer).serve())
        .for_each(|response| async {
            tokio::spawn(response);
        })
}

impl MetaService {
    /// Binds the address of `config.discovery_url` (port 0 picks a free one) and serves.
    pub async fn start(config: MetaServiceConfig) -> Result<MetaService> {
        Self::start_with_clock(config, Clock::System).await
    }

    pub async fn start_with_clock(config: MetaServiceConfig, clock: Clock) -> Result<MetaService> {
        let mut members = config.members()?;
        let addr = match members.get(&config.id) {
            Some(a) => *a,
            None => *memcache_proto::parse_discovery(&config.discovery_url)?
                .first()
                .expect("parse_discovery returns at least one address"),
        };
        let leader = Leader::new(config.meta.clone())?;
        let raft_config = Arc::new(config.raft_config()?);
        let (log, store) = match &config.data_dir {
            Some(dir) => memcache_raft::open(dir, config.meta.eviction_policy).map_err(|e| {
                Error::Failed(format!("meta data directory {}: {e}", dir.display()))
            })?,
            None => memcache_raft::in_memory(config.meta.eviction_policy),
        };
        // The process's outgoing connections use this identity too.
        let tls = match &config.tls {
            Some(t) => t.build_for_process()?,
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Failed(format!("listening on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Failed(format!("listening on {addr}: {e}")))?;
        memcache_tls::warn_plaintext("the meta service", addr, tls.is_some());
        members.entry(config.id).or_insert(addr);
        let raft = Raft::new(
            config.id,
            raft_config,
            raft_net::Network::new(tls.as_ref().map(|t| t.client.clone())),
            log.clone(),
            store.clone(),
        )
        .await
        .map_err(|e| Error::Failed(format!("starting the meta group member: {e}")))?;
        let group = Arc::new(Group::new(
            config.id,
            raft,
            (log, store),
            leader,
            clock,
            members.len(),
        ));
        let shared = Arc::new(Shared {
            group: group.clone(),
            live: Mutex::new(BTreeMap::new()),
            rpcs: AtomicU64::new(0),
            by_method: Mutex::new(BTreeMap::new()),
            tracer: Tracer::new(config.ptracer),
            metrics: Metrics::new(),
            owners: Mutex::new(BTreeMap::new()),
            fences: Mutex::new(fences::Fences::new(epoch())),
            kick: tokio::sync::Notify::new(),
            unheld: tokio::sync::Notify::new(),
        });
        let (stop, stopped) = watch::channel(false);

        let limits = memcache_tls::Limits {
            max_conns: config.max_connections,
            ..memcache_tls::Limits::default()
        };
        let mut tasks = Vec::new();
        let mut http = None;
        if let Some(at) = memcache_proto::parse_http_addr(&config.http_url)? {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| Error::Failed(format!("admin HTTP on {at}: {e}")))?;
            http = listener.local_addr().ok();
            if let Some(at) = http {
                memcache_tls::warn_plaintext("the meta admin HTTP server", at, tls.is_some());
            }
            tasks.push(tokio::spawn(serve_until_stopped(
                listener,
                (tls.as_ref().map(|t| t.https.clone()), limits),
                "admin HTTP",
                shared.clone(),
                stopped.clone(),
                http::serve_connection(limits),
            )));
        }
        let serve = tokio::spawn(serve_until_stopped(
            listener,
            (tls.map(|t| t.server), limits),
            "meta RPC",
            shared.clone(),
            stopped.clone(),
            serve_calls,
        ));

        let timeout = Duration::from_millis(config.heartbeat_timeout_ms);
        let interval = Duration::from_millis(config.housekeeping_interval_ms.max(1));
        let mut stop_rx = stopped;
        let housekeeping = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = shared.kick.notified() => false,
                    _ = stop_rx.wait_for(|s| *s) => true,
                };
                if stopping {
                    break;
                }
                shared.housekeeping(timeout).await;
            }
        });
        tracing::info!(%addr, id = config.id, "meta service listening");
        tasks.extend([serve, housekeeping]);
        bootstrap(&group, members).await?;
        Ok(MetaService {
            addr,
            http,
            stop,
            tasks,
            group,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin HTTP server listens, if it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Resolves when this member's Raft core stopped for good (its storage failed, say),
    /// with the reason: a member that cannot persist must not linger half alive, so the
    /// process exits and its supervisor restarts it. Checked on a timer, not on every
    /// metrics change: the core publishes metrics after each batch, and waking a waiter
    /// for each costs a thread wake-up per batch.
    pub async fn fatal(&self) -> String {
        let metrics = self.group.raft.metrics();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = &metrics.borrow().running_state {
                return e.to_string();
            }
            if metrics.has_changed().is_err() {
                return "the Raft core stopped".into();
            }
        }
    }

    /// This node's id in the meta group.
    pub fn id(&self) -> NodeId {
        self.group.id
    }

    /// Whether this node leads its group now.
    pub fn is_leader(&self) -> bool {
        self.group.is_leader()
    }

    /// Stops accepting calls, housekeeping and the group member.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Err(e) = self.group.raft.shutdown().await {
            tracing::debug!(error = %e, "stopping the meta group member");
        }
    }
}

impl Drop for MetaService {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        let raft = self.group.raft.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { raft.shutdown().await });
        }
    }
}
