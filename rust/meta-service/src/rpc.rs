//! The tarpc face of the meta service: every call counted, timed and traced, served
//! by the leader and redirected by the other members; the Raft messages between
//! members travel on the same service.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tarpc::context::Context;

use memcache_core::{Error, Key, KeyInfo, LocalServiceId, Medium, ReplicateConfig, Result};
use memcache_meta::{AllocRequest, Joining};
use memcache_proto::{Allocation, LeaseId, Located, PutId, TierMove};
use memcache_proto::{
    Beat, DataEndpoint, HbmAnswer, HbmReport, MetaRpc, MetaStats, RaftBytes, Registered,
    Registration, Reply, RoleInfo, SegmentView, SsdAnswer, SsdReport, TagKey, TraceRow,
};

use crate::ptracer::Tp;
use crate::raft_net::{decode, encode};
use crate::{Attachment, Live, Shared};
use memcache_raft::{NodeId, TypeConfig};
use memcache_tls::{Peer, Roles};
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};

/// How many keys of an answer are real failures (not-found and already-exists are
/// answers, not failures).
pub trait Outcome {
    fn item_errors(&self) -> u64;
}

fn failure(e: &Error) -> bool {
    !matches!(e, Error::ObjectNotFound | Error::DuplicatedObject)
}

impl<T> Outcome for Result<T> {
    fn item_errors(&self) -> u64 {
        self.as_ref().err().is_some_and(failure) as u64
    }
}

impl<T> Outcome for Vec<Result<T>> {
    fn item_errors(&self) -> u64 {
        self.iter()
            .filter(|r| r.as_ref().err().is_some_and(failure))
            .count() as u64
    }
}

impl Outcome for Vec<KeyInfo> {
    fn item_errors(&self) -> u64 {
        self.iter()
            .filter(|i| Error::from_code(i.status).is_some_and(|e| failure(&e)))
            .count() as u64
    }
}

macro_rules! no_errors {
    ($($t:ty),*) => { $(impl Outcome for $t { fn item_errors(&self) -> u64 { 0 } })* };
}
no_errors!(
    (),
    MetaStats,
    Vec<SegmentView>,
    Vec<Key>,
    Vec<TraceRow>,
    Vec<(LocalServiceId, DataEndpoint)>
);

impl<T: Outcome> Outcome for Reply<T> {
    fn item_errors(&self) -> u64 {
        self.as_ref().map_or(0, Outcome::item_errors)
    }
}

/// The service as one connection sees it: the shared state, and who is calling (the
/// roles of its certificate; every role on a plaintext port).
#[derive(Clone)]
pub struct Server(pub Arc<Shared>, pub Peer);

/// Which roles may make each call (any one of them suffices).
const META: Roles = Roles::META;
const MEMBERSHIP: Roles = Roles::META.union(Roles::ADMIN);
const LOCAL: Roles = Roles::LOCAL;
const UNREGISTER: Roles = Roles::LOCAL.union(Roles::ADMIN);
const CLIENT: Roles = Roles::CLIENT;
/// Abort: clients, and local services rolling back their own tier moves.
const ABORT: Roles = Roles::CLIENT.union(Roles::LOCAL);
const ENDPOINTS: Roles = Roles::CLIENT.union(Roles::LOCAL).union(Roles::ADMIN);
/// Listing keys, or removing them all.
const ADMIN: Roles = Roles::ADMIN;
const ADMIN_OR_CLIENT: Roles = Roles::ADMIN.union(Roles::CLIENT);
/// Counters of the pool: any role.
const ANY: Roles = Roles::ALL;

/// The longest an allocation waits for quarantined memory to come back (its
/// capabilities' revocations are acknowledged within a heartbeat round trip).
const ALLOC_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Server {
    /// Whether the caller holds one of `need`; a refusal is logged, counted, and
    /// answered with -3000 (`InvalidParam`, "permission denied").
    fn allowed(&self, method: &'static str, need: Roles) -> Result<()> {
        if self.1.roles.has(need) {
            return Ok(());
        }
        Err(self.refuse(
            method,
            format!(
                "needs the role {need:?}, the caller's certificate grants {:?}",
                self.1.roles
            ),
        ))
    }

    fn refuse(&self, method: &'static str, why: String) -> Error {
        tracing::warn!(method, roles = ?self.1.roles, "refused a call: {why}");
        self.0
            .metrics
            .rpc_refused
            .with_label_values(&[method])
            .inc();
        Error::InvalidParam(format!("permission denied: {method} {why}"))
    }

    /// A caller with only the local role acts on its own service alone: the one its
    /// certificate registered (bound at registration, or at its first call after this
    /// node took over the lead). Without TLS, and for admins, any service.
    fn own_service(&self, method: &'static str, service: LocalServiceId) -> Result<()> {
        let Some(cert) = self.1.cert else {
            return Ok(());
        };
        if self.1.roles.has(Roles::ADMIN) {
            return Ok(());
        }
        let mut owners = self.0.owners.lock().unwrap_or_else(|e| e.into_inner());
        match owners.get(&service) {
            Some(owner) if *owner != cert => Err(self.refuse(
                method,
                format!("on service {service}, which another certificate registered"),
            )),
            Some(_) => Ok(()),
            None => {
                owners.insert(service, cert);
                Ok(())
            }
        }
    }

    /// Each item refused alike.
    fn refuse_all<T, U>(items: &[U], e: Error) -> Vec<Result<T>> {
        items.iter().map(|_| Err(e.clone())).collect()
    }

    pub fn segment_views(&self) -> Vec<SegmentView> {
        self.0.group.read(|_, sm, _| {
            sm.segments()
                .map(|s| SegmentView {
                    id: s.id,
                    service: s.service,
                    medium: s.spec.medium,
                    capacity: s.capacity(),
                    used: s.used(),
                })
                .collect()
        })
    }

    pub fn stats_now(&self) -> MetaStats {
        let rpcs = self.0.rpcs.load(Ordering::Relaxed);
        let by_method = self
            .0
            .by_method
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let (objects, services, used, capacity) = self.0.group.read(|_, state, _| {
            let (used, capacity) = Medium::ALL
                .iter()
                .map(|m| state.usage(*m))
                .fold((0, 0), |(u, c), (mu, mc)| (u + mu, c + mc));
            (
                state.object_count() as u64,
                state.services().count() as u64,
                used,
                capacity,
            )
        });
        MetaStats {
            rpcs,
            by_method,
            objects,
            services,
            used_bytes: used,
            capacity_bytes: capacity,
        }
    }

    /// Sorted once the state's lock is let go (writers need it).
    pub fn keys_with_prefix(&self, prefix: &[u8], limit: usize) -> Vec<Key> {
        let keys = self
            .0
            .group
            .read(|_, sm, now| sm.keys_with_prefix(prefix, now, limit));
        memcache_meta::in_order(keys)
    }
}

impl MetaRpc for Server {
    async fn register_service(self, _: Context, reg: Registration) -> Reply<Result<Registered>> {
        if let Err(e) = self.allowed("register_service", LOCAL) {
            return Ok(Err(e));
        }
        if let Some(id) = reg.requested {
            if let Err(e) = self.own_service("register_service", id) {
                return Ok(Err(e));
            }
        }
        self.0.lead().await?;
        let s = &self.0;
        Ok(s.traced("register_service", Tp::BmRegister, || async {
            let key: TagKey = rand::random();
            let attachment = serde_json::to_vec(&Attachment {
                endpoint: reg.endpoint.clone(),
                key,
            })
            .map_err(|e| Error::Failed(format!("encoding a registration: {e}")))?;
            let joining = Joining {
                requested: reg.requested,
                device_id: reg.device_id,
                segments: reg.segments,
                recovered: reg.recovered,
            };
            let (id, segments, recovered) = s.group.register(joining, attachment).await?;
            let live = Live {
                endpoint: reg.endpoint,
                last_beat: Instant::now(),
                key,
            };
            s.live().insert(id, live);
            if let Some(cert) = self.1.cert {
                s.owners
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, cert);
            }
            tracing::info!(service = id, ?segments, "local service joined");
            Ok(Registered {
                id,
                segments,
                key,
                recovered,
            })
        })
        .await)
    }

    async fn ssd_sync(
        self,
        _: Context,
        service: LocalServiceId,
        report: SsdReport,
    ) -> Reply<Result<SsdAnswer>> {
        if let Err(e) = self
            .allowed("ssd_sync", LOCAL)
            .and_then(|_| self.own_service("ssd_sync", service))
        {
            return Ok(Err(e));
        }
        self.0.lead().await?;
        let s = &self.0;
        // The service's upkeep, like its heartbeat.
        Ok(s.traced("ssd_sync", Tp::Heartbeat, || {
            s.group.ssd_sync(service, report)
        })
        .await)
    }

    async fn hbm_sync(
        self,
        _: Context,
        service: LocalServiceId,
        report: HbmReport,
    ) -> Reply<Result<HbmAnswer>> {
        if let Err(e) = self
            .allowed("hbm_sync", LOCAL)
            .and_then(|_| self.own_service("hbm_sync", service))
        {
            return Ok(Err(e));
        }
        self.0.lead().await?;
        let s = &self.0;
        Ok(s.traced("hbm_sync", Tp::Heartbeat, || {
            s.group.hbm_sync(service, report)
        })
        .await)
    }

    async fn heartbeat(
        self,
        _: Context,
        service: LocalServiceId,
        acked: (u64, u64),
    ) -> Reply<Result<Beat>> {
        if let Err(e) = self
            .allowed("heartbeat", LOCAL)
            .and_then(|_| self.own_service("heartbeat", service))
        {
            return Ok(Err(e));
        }
        self.0.lead().await?;
        Ok(self
            .0
            .traced("heartbeat", Tp::Heartbeat, || async {
                match self.0.live().get_mut(&service) {
                    Some(l) => l.last_beat = Instant::now(),
                    None => return Err(Error::NotConnectedToLocal),
                }
                Ok(self.0.beat(service, acked))
            })
            .await)
    }

    async fn unregister_service(self, _: Context, service: LocalServiceId) -> Reply<Result<usize>> {
        if let Err(e) = self
            .allowed("unregister_service", UNREGISTER)
            .and_then(|_| self.own_service("unregister_service", service))
        {
            return Ok(Err(e));
        }
        self.0.lead().await?;
        Ok(self
            .0
            .traced("unregister_service", Tp::BmUnregister, || async {
                self.0.live().remove(&service);
                self.0.forget_service(service);
                self.0.group.remove_service(service).await
            })
            .await)
    }

    async fn endpoints(self, _: Context) -> Reply<Vec<(LocalServiceId, DataEndpoint)>> {
        if self.allowed("endpoints", ENDPOINTS).is_err() {
            return Ok(Vec::new());
        }
        self.0.lead().await?;
        Ok(self
            .0
            .traced("endpoints", Tp::Query, || async {
                let live = self.0.live();
                live.iter()
                    .map(|(id, l)| (*id, l.endpoint.clone()))
                    .collect()
            })
            .await)
    }

    async fn alloc(
        self,
        ctx: Context,
        items: Vec<(Key, u64)>,
        config: ReplicateConfig,
        writer: u64,
        lease_ms: u64,
        maps_host: Option<String>,
    ) -> Reply<Vec<Result<Allocation>>> {
        if let Err(e) = self.allowed("alloc", CLIENT) {
            return Ok(Self::refuse_all(&items, e));
        }
        self.0.lead().await?;
        let tp = Tp::sized(Tp::Put, Tp::BatchPut, items.len());
        let s = &self.0;
        Ok(s.traced("alloc", tp, || async {
            let keys: Vec<Key> = items.iter().map(|(k, _)| k.clone()).collect();
            let request = AllocRequest {
                items,
                config,
                writer,
                lease_ms,
            };
            let until = ctx.deadline.min(Instant::now() + ALLOC_WAIT);
            let mut out = s.alloc_waiting(request, until).await;
            s.grant_puts(&keys, &mut out, maps_host.as_deref());
            let done = out.iter().filter(|r| r.is_ok()).count();
            s.metrics.alloc_ops.inc_by(done as u64);
            out
        })
        .await)
    }

    async fn commit(self, _: Context, items: Vec<(Key, PutId)>) -> Reply<Vec<Result<()>>> {
        if let Err(e) = self.allowed("commit", CLIENT) {
            return Ok(Self::refuse_all(&items, e));
        }
        self.0.lead().await?;
        let tp = Tp::sized(Tp::Update, Tp::BatchUpdate, items.len());
        Ok(self
            .0
            .traced("commit", tp, || async {
                let out = self.0.group.commit(items.clone()).await;
                self.0.end_puts(&items, &out);
                out
            })
            .await)
    }

    async fn abort(self, _: Context, items: Vec<(Key, PutId)>) -> Reply<Vec<Result<()>>> {
        if let Err(e) = self.allowed("abort", ABORT) {
            return Ok(Self::refuse_all(&items, e));
        }
        self.0.lead().await?;
        Ok(self
            .0
            .traced("abort", Tp::Abort, || async {
                let out = self.0.group.abort(items.clone()).await;
                self.0.end_puts(&items, &out);
                out
            })
            .await)
    }

    async fn lookup(
        self,
        _: Context,
        keys: Vec<Key>,
        lease_ms: u64,
        maps_host: Option<String>,
        release: Vec<(Key, LeaseId)>,
    ) -> Reply<Vec<Result<Located>>> {
        if let Err(e) = self.allowed("lookup", CLIENT) {
            return Ok(Self::refuse_all(&keys, e));
        }
        self.0.lead().await?;
        self.0.release_reads(&release);
        let tp = Tp::sized(Tp::Get, Tp::BatchGet, keys.len());
        let s = &self.0;
        s.traced("lookup", tp, || async {
            let mut out = s.group.lookup(&keys, lease_ms).await?;
            let hits = out.iter().filter(|r| r.is_ok()).count() as u64;
            let m = &s.metrics;
            m.get_ops.inc_by(keys.len() as u64);
            m.get_hits.inc_by(hits);
            m.get_misses.inc_by(keys.len() as u64 - hits);
            s.grant_reads(&keys, &mut out, maps_host.as_deref());
            Ok(out)
        })
        .await
    }

    async fn release(self, _: Context, leases: Vec<(Key, LeaseId)>) -> Reply<()> {
        if self.allowed("release", CLIENT).is_err() {
            return Ok(());
        }
        self.0.lead().await?;
        self.0
            .traced("release", Tp::Release, || async {
                self.0.release_reads(&leases)
            })
            .await;
        Ok(())
    }

    async fn remove(
        self,
        _: Context,
        keys: Vec<Key>,
        release: Vec<(Key, LeaseId)>,
    ) -> Reply<Vec<Result<()>>> {
        if let Err(e) = self.allowed("remove", CLIENT) {
            return Ok(Self::refuse_all(&keys, e));
        }
        self.0.lead().await?;
        self.0.release_reads(&release);
        let tp = Tp::sized(Tp::Remove, Tp::BatchRemove, keys.len());
        Ok(self
            .0
            .traced("remove", tp, || async {
                let out = self.0.group.remove(keys).await;
                let done = out.iter().filter(|r| r.is_ok()).count();
                self.0.metrics.remove_ops.inc_by(done as u64);
                out
            })
            .await)
    }

    async fn exists(self, _: Context, keys: Vec<Key>) -> Reply<Vec<Result<bool>>> {
        if let Err(e) = self.allowed("exists", CLIENT) {
            return Ok(Self::refuse_all(&keys, e));
        }
        self.0.lead().await?;
        self.0
            .traced("exists", Tp::Exist, || self.0.group.exists(&keys))
            .await
    }

    async fn key_info(self, _: Context, keys: Vec<Key>) -> Reply<Vec<KeyInfo>> {
        if let Err(e) = self.allowed("key_info", CLIENT) {
            return Ok(keys
                .iter()
                .map(|k| KeyInfo::failed(k.as_bytes(), &e))
                .collect());
        }
        self.0.lead().await?;
        self.0
            .traced("key_info", Tp::Query, || self.0.group.key_info(&keys))
            .await
    }

    async fn stats(self, _: Context) -> Reply<MetaStats> {
        if self.allowed("stats", ANY).is_err() {
            return Ok(MetaStats::default());
        }
        self.0.lead().await?;
        self.0.traced("stats", Tp::Query, || async {}).await;
        Ok(self.stats_now())
    }

    async fn segments(self, _: Context) -> Reply<Vec<SegmentView>> {
        if self.allowed("segments", ANY).is_err() {
            return Ok(Vec::new());
        }
        self.0.lead().await?;
        Ok(self
            .0
            .traced("segments", Tp::Query, || async { self.segment_views() })
            .await)
    }

    async fn keys(self, _: Context, prefix: Vec<u8>, limit: u32) -> Reply<Vec<Key>> {
        if self.allowed("keys", ADMIN).is_err() {
            return Ok(Vec::new());
        }
        self.0.lead().await?;
        Ok(self
            .0
            .traced("keys", Tp::Query, || async {
                self.keys_with_prefix(&prefix, limit as usize)
            })
            .await)
    }

    async fn tracepoints(self, _: Context) -> Reply<Vec<TraceRow>> {
        if self.allowed("tracepoints", ANY).is_err() {
            return Ok(Vec::new());
        }
        self.0.lead().await?;
        Ok(self
            .0
            .traced("tracepoints", Tp::Query, || async { self.0.tracer.rows() })
            .await)
    }

    async fn remove_all(self, _: Context) -> Reply<Result<usize>> {
        if let Err(e) = self.allowed("remove_all", ADMIN_OR_CLIENT) {
            return Ok(Err(e));
        }
        self.0.lead().await?;
        Ok(self
            .0
            .traced("remove_all", Tp::BatchRemove, || async {
                let out = self.0.group.remove_all().await;
                if let Ok(n) = out {
                    self.0.metrics.remove_ops.inc_by(n as u64);
                }
                out
            })
            .await)
    }

    async fn evict(
        self,
        _: Context,
        keys: Vec<Key>,
        src: Medium,
        dst: Medium,
    ) -> Reply<Vec<Result<TierMove>>> {
        if let Err(e) = self.allowed("evict", CLIENT) {
            return Ok(Self::refuse_all(&keys, e));
        }
        self.0.lead().await?;
        Ok(self
            .0
            .traced("evict", Tp::BatchUpdate, || {
                self.0.group.evict(keys, src, dst)
            })
            .await)
    }

    async fn prefetch(
        self,
        _: Context,
        keys: Vec<Key>,
        src: Medium,
        dst: Medium,
    ) -> Reply<Vec<Result<TierMove>>> {
        if let Err(e) = self.allowed("prefetch", CLIENT) {
            return Ok(Self::refuse_all(&keys, e));
        }
        self.0.lead().await?;
        self.0
            .traced("prefetch", Tp::BatchUpdate, || {
                self.0.group.prefetch(&keys, src, dst)
            })
            .await
    }

    async fn role(self, _: Context) -> RoleInfo {
        self.0.group.role()
    }

    async fn add_member(self, _: Context, id: u64, addr: SocketAddr) -> Reply<Result<()>> {
        if let Err(e) = self.allowed("add_member", MEMBERSHIP) {
            return Ok(Err(e));
        }
        self.0.lead().await?;
        Ok(self.0.group.add_member(id, addr).await)
    }

    async fn remove_member(self, _: Context, id: u64) -> Reply<Result<()>> {
        if let Err(e) = self.allowed("remove_member", MEMBERSHIP) {
            return Ok(Err(e));
        }
        self.0.lead().await?;
        Ok(self.0.group.remove_member(id).await)
    }

    async fn raft_append(self, _: Context, req: RaftBytes) -> Result<RaftBytes> {
        self.allowed("raft_append", META)?;
        let req: AppendEntriesRequest<TypeConfig> = decode(&req)?;
        let commit = req.leader_commit;
        // Where this log agrees with the leader's once the append succeeds (entries
        // past it may still be stale ones).
        let matched = req.entries.last().map(|e| e.log_id).or(req.prev_log_id);
        let answer = self.0.group.raft.append_entries(req).await;
        if matches!(answer, Ok(AppendEntriesResponse::Success)) {
            self.0.group.appended(matched, commit);
        }
        encode(&answer)
    }

    async fn raft_snapshot(self, _: Context, req: RaftBytes) -> Result<RaftBytes> {
        self.allowed("raft_snapshot", META)?;
        encode(&self.0.group.raft.install_snapshot(decode(&req)?).await)
    }

    async fn raft_vote(self, _: Context, req: RaftBytes) -> Result<RaftBytes> {
        self.allowed("raft_vote", META)?;
        let req: VoteRequest<NodeId> = decode(&req)?;
        if let Some(refused) = self.0.group.refusal_while_recovering() {
            return encode(&Ok::<_, RaftError<NodeId>>(refused));
        }
        encode(&self.0.group.raft.vote(req).await)
    }
}
