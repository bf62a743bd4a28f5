//! What an initialized store holds: its way to the meta service, the segments it has
//! mapped, and the local service it contributes (if any).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::{FxHashMap, FxHashSet};

use memcache_core::{Blob, Error, Key, LocalServiceId, Medium, Result, SegmentId};
use memcache_local::{
    check_part, check_whole, fetch_segment, CopyPool, DeviceSegment, LocalMetrics, LocalService,
    LocalServiceConfig, RunningLocalService, SegmentTable, Served, ShmTransport, SyncFn, Syncer,
    TcpTransport, TierLoop,
};
use memcache_proto::{host_id, DataEndpoint, LeaseId, Tag};

use crate::embedded::{EmbeddedPool, Joining};
use crate::inplace::Grants;
use crate::meta_client::MetaClient;

/// The local service a client started with `init_bm = true`.
pub(crate) enum Local {
    /// In the embedded pool: registered directly, nothing to serve.
    Embedded(Box<EmbeddedLocal>),
    /// Joined to a remote meta service: serves its descriptors and heartbeats.
    Remote(Box<RunningLocalService>),
}

/// A local service in the embedded pool, with its SSD tier's loop if it has one.
pub(crate) struct EmbeddedLocal {
    service: LocalService,
    tier: std::sync::Mutex<Option<TierLoop>>,
    ssd_segment: Option<SegmentId>,
}

impl EmbeddedLocal {
    /// Registers with the embedded pool, offering what the SSD tier holds; the tier's
    /// loop talks to the pool directly and its reads go through the pool's transport.
    fn start(pool: &Arc<EmbeddedPool>, config: &LocalServiceConfig) -> Result<EmbeddedLocal> {
        if config.hbm_size > 0 {
            // The embedded pool's clients reach memory only by mapping it; device
            // memory is served by a local service process (`mmc local`) for now.
            return Err(Error::invalid(
                "hbm_size: the embedded pool has no HBM yet; run a local service (mmc local)",
            ));
        }
        let mut service = LocalService::create(config)?;
        let recovered = service.tier().map(|t| t.recovered()).unwrap_or_default();
        let joining = Joining {
            requested: config.service_id,
            device_id: config.device_id,
            segments: service.segment_specs(),
            recovered: recovered.clone(),
        };
        let now = pool.clock().now_ms();
        let (id, mut ids, taken) = pool.meta().join(joining, now)?;
        let (mut tier, mut ssd_segment) = (None, None);
        if let Some(t) = service.tier().cloned() {
            let ssd = ids.pop().ok_or(Error::UnmatchedRetcode)?;
            t.bind(ssd, &recovered, &taken);
            pool.transport().attach_tier(ssd, t.clone());
            let memory = ids.iter().copied().zip(service.memory_segments());
            let table: SegmentTable = Arc::new(std::sync::RwLock::new(memory.collect()));
            let sync: SyncFn = {
                let pool = pool.clone();
                Arc::new(move |report| {
                    let answer = pool.meta().ssd_sync(id, report, pool.clock().now_ms());
                    Box::pin(std::future::ready(answer))
                })
            };
            let syncer = Syncer::new(t, sync, table, Arc::new(LocalMetrics::new()));
            tier = Some(TierLoop::start(syncer, &tokio::runtime::Handle::current()));
            ssd_segment = Some(ssd);
        }
        service.bind(id, ids)?;
        Ok(EmbeddedLocal {
            service,
            tier: std::sync::Mutex::new(tier),
            ssd_segment,
        })
    }
}

impl Local {
    pub async fn start(meta: &MetaClient, config: &LocalServiceConfig) -> Result<Local> {
        match meta {
            MetaClient::Embedded(pool) => Ok(Local::Embedded(Box::new(EmbeddedLocal::start(
                pool, config,
            )?))),
            MetaClient::Remote(link) => {
                let socket = config.shm_socket.clone().unwrap_or_else(default_socket);
                let running =
                    RunningLocalService::start(config, link.addrs(), link.timeout(), socket)
                        .await?;
                Ok(Local::Remote(Box::new(running)))
            }
        }
    }

    pub fn id(&self) -> Result<LocalServiceId> {
        match self {
            Local::Embedded(l) => l.service.id(),
            Local::Remote(r) => Ok(r.id()),
        }
    }

    /// Writes what only memory holds to the SSD tier (within `timeout`) and stops the
    /// tier; true when nothing was left, or there is no tier.
    pub async fn flush_to_ssd(&self, timeout: std::time::Duration) -> bool {
        match self {
            Local::Embedded(l) => {
                let tier = l.tier.lock().unwrap_or_else(|e| e.into_inner()).take();
                match tier {
                    Some(t) => t.flush(timeout).await,
                    None => true,
                }
            }
            Local::Remote(r) => r.flush_to_ssd(timeout).await,
        }
    }

    pub fn segments(&self) -> Vec<(SegmentId, Arc<memcache_local::ShmSegment>)> {
        match self {
            Local::Embedded(l) => l.service.segments().map(|(i, s)| (i, s.clone())).collect(),
            Local::Remote(r) => r.segments(),
        }
    }

    /// This service's HBM segment `id`: reached in place, as no runtime imports a
    /// handle into the process that made it.
    fn device_segment(&self, id: SegmentId) -> Option<Arc<DeviceSegment>> {
        match self {
            Local::Embedded(_) => None,
            Local::Remote(r) => r.device_segment(id),
        }
    }
}

/// A socket path unique to this process and store.
fn default_socket() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("mmc-local-{}-{n}.sock", std::process::id()))
}

/// What a client holds of other local services (see `ObjectStore::data_plane_held`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataPlaneHeld {
    /// DRAM segments of other services mapped here.
    pub mapped: usize,
    /// HBM segments imported here by their device handles.
    pub imported: usize,
    /// Services this client has idle TCP connections to.
    pub peers: usize,
    /// Idle TCP connections.
    pub connections: usize,
}

/// How a blob is reached.
enum Route {
    Shm,
    /// HBM of this host, imported here: copied by the device runtime.
    Device(Arc<DeviceSegment>),
    Tcp(SocketAddr),
}

/// An HBM segment this client reaches in place, and where it came from: the owner and
/// the socket that handed out its handle (as for mapped DRAM), or None for the
/// client's own service's.
type Imported = (Arc<DeviceSegment>, Option<(LocalServiceId, String)>);

/// The threads that copy a batch's blobs to and from memory this process maps.
pub(crate) struct Copies {
    pub pool: CopyPool,
    pub write: usize,
    pub read: usize,
}

impl Copies {
    pub fn new(write: u32, read: u32) -> Copies {
        let (write, read) = (write as usize, read as usize);
        Copies {
            pool: CopyPool::new(write.max(read)),
            write,
            read,
        }
    }
}

pub(crate) struct Session {
    pub meta: MetaClient,
    pub transport: Arc<ShmTransport>,
    copies: Copies,
    tcp: TcpTransport,
    /// Every blob over TCP, even on this host (`dataOpType = "tcp"`).
    force_tcp: bool,
    pub local: Option<Local>,
    /// Registered user regions: start address → length.
    pub buffers: Mutex<BTreeMap<usize, usize>>,
    /// In-place allocations and read leases (see `inplace`).
    pub grants: Grants,
    /// Data-plane endpoints of the pool's local services, refreshed on a miss.
    endpoints: Mutex<FxHashMap<LocalServiceId, DataEndpoint>>,
    /// Segments of other local services this client mapped, with their owner and the
    /// socket that handed them out. A mapping keeps its segment's memory alive after
    /// the owner died, so each refresh of the endpoints drops those of services that
    /// are gone or serve from another socket now (restarted).
    mapped: Mutex<FxHashMap<SegmentId, (LocalServiceId, String)>>,
    /// HBM segments of this host's services, imported by their handles.
    hbm: Mutex<FxHashMap<SegmentId, Imported>>,
    /// HBM segments of this host that did not import (the runtime shares nothing, or
    /// refuses the handle): reached through their service until they leave the pool.
    hbm_refused: Mutex<FxHashSet<SegmentId>>,
    resolving: tokio::sync::Mutex<()>,
    host: String,
    /// Read leases of finished gets, not yet released (remote pools): they ride the
    /// next lookup, or go before the next call that may need them gone.
    finished: Mutex<Vec<(Key, LeaseId)>>,
    /// Held across a release call, so that a call waiting for the releases before it
    /// also waits for one a task has in flight.
    releasing: tokio::sync::Mutex<()>,
    /// Segments page-locked for device copies, kept mapped until unpinned.
    pub(crate) pinned: Mutex<Vec<(SegmentId, Arc<memcache_local::ShmSegment>)>>,
    /// Page-locked host buffers for device copies to and from replicas over TCP.
    pub(crate) staging: crate::device::Staging,
}

impl Session {
    pub fn new(
        meta: MetaClient,
        transport: Arc<ShmTransport>,
        local: Option<Local>,
        force_tcp: bool,
        copies: Copies,
    ) -> Session {
        if let Some(local) = &local {
            for (id, seg) in local.segments() {
                transport.attach(id, seg);
            }
        }
        Session {
            meta,
            transport,
            copies,
            tcp: TcpTransport::default(),
            force_tcp,
            local,
            buffers: Mutex::new(BTreeMap::new()),
            grants: Grants::default(),
            endpoints: Mutex::new(FxHashMap::default()),
            mapped: Mutex::new(FxHashMap::default()),
            hbm: Mutex::new(FxHashMap::default()),
            hbm_refused: Mutex::new(FxHashSet::default()),
            resolving: tokio::sync::Mutex::new(()),
            host: host_id(),
            finished: Mutex::new(Vec::new()),
            releasing: tokio::sync::Mutex::new(()),
            pinned: Mutex::new(Vec::new()),
            staging: Default::default(),
        }
    }

    /// Ends the read leases of a finished get without a call of their own: an
    /// in-process pool's at once; a remote pool's with this client's next lookup, or
    /// before its next alloc, remove or tier move (`release_finished`). On a runtime
    /// with worker threads they also go at once, in a task of their own. Leases never
    /// released run out by themselves.
    pub fn release_after(self: &Arc<Self>, leases: Vec<(Key, LeaseId)>) {
        if leases.is_empty() {
            return;
        }
        if let MetaClient::Embedded(pool) = &self.meta {
            pool.meta().release(&leases);
            return;
        }
        self.finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(leases);
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            let this = self.clone();
            tokio::spawn(async move { this.release_finished().await });
        }
    }

    /// The finished gets' leases, for the lookup about to be sent.
    pub fn take_finished(&self) -> Vec<(Key, LeaseId)> {
        std::mem::take(&mut *self.finished.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The finished gets' leases, for the call about to be sent, once a release a
    /// task has in flight is answered: a call that must not meet a lease of this
    /// client's own (a remove) ends them itself.
    pub async fn settled_finished(&self) -> Vec<(Key, LeaseId)> {
        let _one_at_a_time = self.releasing.lock().await;
        self.take_finished()
    }

    /// Releases the finished gets' leases now, and waits for the answer: before a call
    /// that a lease of this client's own could refuse or slow (an eviction).
    pub async fn release_finished(&self) {
        let _one_at_a_time = self.releasing.lock().await;
        let leases = self.take_finished();
        if !leases.is_empty() {
            self.meta.release(leases).await;
        }
    }

    pub fn local_id(&self) -> Option<LocalServiceId> {
        self.local.as_ref().and_then(|l| l.id().ok())
    }

    /// Writes `srcs`, concatenated, as the whole of `blob`; `tag` is the write
    /// capability the meta service issued for it (needed over TCP only).
    pub async fn write(&self, blob: &Blob, tag: Tag, srcs: &[&[u8]]) -> Result<()> {
        check_whole(blob, srcs)?;
        self.write_part(blob, tag, 0, srcs).await
    }

    /// Writes `srcs`, concatenated, into `blob` from `at` on (an in-place writer fills
    /// its allocation in pieces).
    pub async fn write_part(&self, blob: &Blob, tag: Tag, at: u64, srcs: &[&[u8]]) -> Result<()> {
        for fresh in [false, true] {
            let (addr, done) = match self.route(blob).await? {
                Route::Shm => return self.transport.write_part(blob, at, srcs),
                Route::Device(hbm) => {
                    let len = check_part(blob, at, srcs.iter().map(|s| s.len()))?;
                    return hbm.write_at(blob.offset + at, blob.offset + at + len, srcs);
                }
                Route::Tcp(addr) => (addr, self.tcp.write_part(addr, blob, &tag, at, srcs).await),
            };
            if fresh || !self.stale(blob, addr, &done) {
                return done;
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Whether this process maps `blob`'s memory (and TCP is not forced).
    pub fn maps(&self, blob: &Blob) -> bool {
        blob.medium != Medium::Ssd && self.maps_segment(blob.segment)
    }

    /// Whether copies to and from memory segment `segment` are memcpys here.
    pub fn maps_segment(&self, segment: SegmentId) -> bool {
        !self.force_tcp && self.transport.has(segment)
    }

    /// The HBM segment of `blob`, where this process imported it (and TCP is not
    /// forced).
    pub fn imported(&self, blob: &Blob) -> Option<Arc<DeviceSegment>> {
        if self.force_tcp || blob.medium != Medium::Hbm {
            return None;
        }
        let hbm = self.hbm.lock().unwrap_or_else(|e| e.into_inner());
        hbm.get(&blob.segment).map(|(d, _)| d.clone())
    }

    /// Whether the device runtime copies between `blob` and device buffers here with
    /// no host copy in between: DRAM this process maps, or HBM it imported.
    pub fn reaches_from_device(&self, blob: &Blob) -> bool {
        self.maps(blob) || self.imported(blob).is_some()
    }

    /// Whether puts from device memory should ask for HBM: a client over TCP reaches
    /// it through its service as cheaply as DRAM, and one on the host imports it,
    /// unless an import here already failed (then a mapped DRAM replica is the one
    /// DMA copy).
    pub fn device_puts_prefer_hbm(&self) -> bool {
        self.force_tcp || self.hbm_refused().is_empty()
    }

    /// Reads the whole of `blob` into `dsts` at once where this process
    /// [`maps`](Self::maps) it; `None` otherwise.
    pub fn read_mapped(&self, blob: &Blob, dsts: &mut [&mut [u8]]) -> Option<Result<()>> {
        self.maps(blob)
            .then(|| self.transport.read_part(blob, 0, blob.len, dsts))
    }

    /// [`read_mapped`](Self::read_mapped), appending to `out`.
    pub fn append_mapped(&self, blob: &Blob, out: &mut Vec<u8>) -> Option<Result<()>> {
        self.maps(blob)
            .then(|| self.transport.append_blob(blob, out))
    }

    /// Writes each `(blob, srcs)` whose memory this process [`maps`](Self::maps), the
    /// copies of the whole batch spread over the write threads; one result per blob.
    pub fn write_mapped_batch(&self, jobs: &[(Blob, &[&[u8]])]) -> Vec<Result<()>> {
        let c = &self.copies;
        self.transport.write_blobs(jobs, &c.pool, c.write)
    }

    /// Reads each whole `(blob, dsts)` this process maps, over the read threads.
    pub fn read_mapped_batch(&self, jobs: &mut [(Blob, &mut [&mut [u8]])]) -> Vec<Result<()>> {
        let c = &self.copies;
        self.transport.read_blobs(jobs, &c.pool, c.read)
    }

    /// Reads the whole of `blob` into `dsts`, with its read capability `tag`.
    pub async fn read(&self, blob: &Blob, tag: Tag, dsts: &mut [&mut [u8]]) -> Result<()> {
        self.read_part(blob, tag, 0, blob.len, dsts).await
    }

    /// Reads `len` bytes of `blob` from `at` on into `dsts`.
    pub async fn read_part(
        &self,
        blob: &Blob,
        tag: Tag,
        at: u64,
        len: u64,
        dsts: &mut [&mut [u8]],
    ) -> Result<()> {
        for fresh in [false, true] {
            let (addr, done) = match self.route(blob).await? {
                Route::Shm => return self.transport.read_part(blob, at, len, dsts),
                Route::Device(hbm) => {
                    check_part(blob, at, [len as usize])?;
                    return hbm.read_at(blob.offset + at, len, dsts);
                }
                Route::Tcp(addr) => (
                    addr,
                    self.tcp.read_part(addr, blob, &tag, at, len, dsts).await,
                ),
            };
            if fresh || !self.stale(blob, addr, &done) {
                return done;
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Whether a TCP call failed to reach its service: then the endpoint known for it
    /// and the idle connections to it are forgotten (a restarted service serves
    /// elsewhere), and the call may go again.
    fn stale(&self, blob: &Blob, addr: SocketAddr, done: &Result<()>) -> bool {
        let unreachable = matches!(done, Err(Error::NotConnectedToLocal));
        if unreachable {
            self.forget_endpoint(blob.service);
            self.tcp.forget(addr);
        }
        unreachable
    }

    fn forget_endpoint(&self, service: LocalServiceId) {
        let mut known = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        known.remove(&service);
    }

    /// Asks the meta service for the live services' endpoints, and lets go of what
    /// the pool no longer has: the mappings of segments it dropped (their service died,
    /// restarted, or registered again with new segments) and the idle connections to
    /// services that are gone. So a client keeps at most the segments that left the
    /// pool since its last miss, whatever the number of restarts it lives through.
    async fn refresh_endpoints(&self) -> Result<()> {
        let fresh: FxHashMap<LocalServiceId, DataEndpoint> =
            self.meta.endpoints().await?.into_iter().collect();
        let in_pool: Option<FxHashSet<SegmentId>> = match self.meta.segment_ids().await {
            Ok(ids) => ids.map(|v| v.into_iter().collect()),
            // Not fatal: the endpoints alone still tell which services are gone.
            Err(_) => None,
        };
        let in_pool =
            |segment: &SegmentId| in_pool.as_ref().is_none_or(|ids| ids.contains(segment));
        let served = |owner: &LocalServiceId, socket: &str| {
            fresh
                .get(owner)
                .is_some_and(|e| e.shm_socket.as_deref() == Some(socket))
        };
        self.mapped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|segment, (owner, socket)| {
                let live = served(owner, socket) && in_pool(segment);
                if !live {
                    self.transport.detach(*segment);
                }
                live
            });
        // Dropping an import closes it.
        self.hbm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|segment, (_, from)| {
                in_pool(segment) && from.as_ref().is_none_or(|(o, socket)| served(o, socket))
            });
        self.hbm_refused().retain(|segment| in_pool(segment));
        self.tcp
            .retain_peers(|a| fresh.values().any(|e| e.tcp == Some(*a)));
        *self.endpoints.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// What this client holds of the pool's local services.
    pub fn held(&self) -> DataPlaneHeld {
        let (peers, connections) = self.tcp.idle_counts();
        DataPlaneHeld {
            mapped: self.mapped.lock().unwrap_or_else(|e| e.into_inner()).len(),
            imported: self.hbm.lock().unwrap_or_else(|e| e.into_inner()).len(),
            peers,
            connections,
        }
    }

    /// The host whose local services' segments this client maps (None when TCP is
    /// forced): the meta service issues capabilities for the other blobs only.
    pub fn maps_host(&self) -> Option<String> {
        (!self.force_tcp).then(|| self.host.clone())
    }

    /// Shared memory when the segment is (or can be) mapped here: a same-host local
    /// service hands over its descriptor once, and every later copy is a memcpy. HBM
    /// of this host is imported by its handle where this process runs a device
    /// runtime already, and copied by the runtime. TCP otherwise.
    async fn route(&self, blob: &Blob) -> Result<Route> {
        if !self.force_tcp && self.transport.has(blob.segment) {
            return Ok(Route::Shm);
        }
        if let Some(hbm) = self.imported(blob) {
            return Ok(Route::Device(hbm));
        }
        // Another process's SSD tier is reached through its service, wherever it is.
        let shm = !self.force_tcp && blob.medium == Medium::Dram;
        // A process that never touched a device does not start a runtime (and its
        // memory on the device) to read one object.
        let hbm = !self.force_tcp
            && blob.medium == Medium::Hbm
            && memcache_device::loaded().is_some()
            && !self.hbm_refused().contains(&blob.segment);
        // One miss at a time: the many blobs of a batch on one new segment map it once.
        let _resolving = self.resolving.lock().await;
        if shm && self.transport.has(blob.segment) {
            return Ok(Route::Shm);
        }
        if let Some(hbm) = self.imported(blob) {
            return Ok(Route::Device(hbm));
        }
        // This client's own service registered again (new segment ids, same memory):
        // its segments are here already, not to be mapped a second time.
        let own = self.local.as_ref().map(Local::segments).unwrap_or_default();
        if let Some((id, seg)) = own.into_iter().find(|(id, _)| shm && *id == blob.segment) {
            self.transport.attach(id, seg);
            return Ok(Route::Shm);
        }
        let own_hbm = self.local.as_ref().filter(|_| hbm);
        if let Some(seg) = own_hbm.and_then(|l| l.device_segment(blob.segment)) {
            let mut imported = self.hbm.lock().unwrap_or_else(|e| e.into_inner());
            imported.insert(blob.segment, (seg.clone(), None));
            return Ok(Route::Device(seg));
        }
        let mut refreshed = false;
        loop {
            let endpoint = match self.endpoint(blob.service) {
                Some(e) => e,
                None if !refreshed => {
                    self.refresh_endpoints().await?;
                    refreshed = true;
                    continue;
                }
                None => return Err(Error::NotConnectedToLocal),
            };
            let near = endpoint.host == self.host && (shm || hbm);
            return match (&endpoint.shm_socket, endpoint.tcp) {
                // Mapping a segment is rare (once per segment), so the endpoints are
                // refreshed first: that also drops what the pool no longer has.
                (Some(_), _) if near && !refreshed => {
                    self.refresh_endpoints().await?;
                    refreshed = true;
                    continue;
                }
                (Some(path), _) if near && shm => {
                    let served = self.served(path, blob.segment).await?;
                    let Served::Shm(mapped) = served else {
                        return Err(Error::invalid("a DRAM segment served as device memory"));
                    };
                    self.transport.attach(blob.segment, Arc::new(mapped));
                    let mut mine = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
                    mine.insert(blob.segment, (blob.service, path.clone()));
                    Ok(Route::Shm)
                }
                (Some(path), tcp) if near => match self.import(path, blob).await {
                    Ok(seg) => Ok(Route::Device(seg)),
                    Err(e) => {
                        tracing::info!(segment = blob.segment, error = %e,
                            "HBM of this host not imported: reached through its service");
                        self.hbm_refused().insert(blob.segment);
                        tcp.map(Route::Tcp).ok_or(Error::NotConnectedToLocal)
                    }
                },
                (_, Some(addr)) => Ok(Route::Tcp(addr)),
                _ => Err(Error::NotConnectedToLocal),
            };
        }
    }

    fn hbm_refused(&self) -> std::sync::MutexGuard<'_, FxHashSet<SegmentId>> {
        self.hbm_refused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the service at `socket` hands out for `segment`.
    async fn served(&self, socket: &str, segment: SegmentId) -> Result<Served> {
        let socket = PathBuf::from(socket);
        tokio::task::spawn_blocking(move || fetch_segment(&socket, segment))
            .await
            .map_err(|e| Error::Failed(format!("mapping a segment: {e}")))?
    }

    /// `blob`'s HBM segment, imported from the service at `socket` by its handle.
    async fn import(&self, socket: &str, blob: &Blob) -> Result<Arc<DeviceSegment>> {
        let Served::Device(shared) = self.served(socket, blob.segment).await? else {
            return Err(Error::invalid("an HBM segment served as shared memory"));
        };
        let runtime = memcache_device::runtime()?;
        let seg = tokio::task::spawn_blocking(move || DeviceSegment::import_with(runtime, &shared))
            .await
            .map_err(|e| Error::Failed(format!("importing a segment: {e}")))??;
        let seg = Arc::new(seg);
        let mut imported = self.hbm.lock().unwrap_or_else(|e| e.into_inner());
        let from = Some((blob.service, socket.to_string()));
        imported.insert(blob.segment, (seg.clone(), from));
        Ok(seg)
    }

    /// 0 for this client's own local service, 1 for another on this host (or one
    /// already mapped), 2 for the rest; SSD replicas after every memory one.
    pub fn distance(&self, blob: &Blob) -> u8 {
        if blob.medium == Medium::Ssd {
            3
        } else if Some(blob.service) == self.local_id() {
            0
        } else if self.transport.has(blob.segment)
            || self.imported(blob).is_some()
            || self
                .endpoint(blob.service)
                .is_some_and(|e| e.host == self.host)
        {
            1
        } else {
            2
        }
    }

    fn endpoint(&self, service: LocalServiceId) -> Option<DataEndpoint> {
        let known = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        known.get(&service).cloned()
    }

    /// Takes this client's local service out of the pool.
    pub async fn leave(&self) {
        self.unpin_all();
        let Some(local) = &self.local else { return };
        let left = match local {
            Local::Embedded(l) => {
                l.tier.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(ssd) = l.ssd_segment {
                    self.transport.detach(ssd);
                }
                match l.service.id() {
                    Ok(id) => self.meta.remove_service(id).await,
                    Err(e) => Err(e),
                }
            }
            Local::Remote(r) => r.stop().await,
        };
        if let Err(e) = left {
            tracing::warn!(error = %e, "leaving the pool");
        }
        for (id, _) in local.segments() {
            self.transport.detach(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use memcache_meta_service::{MetaService, MetaServiceConfig};

    use crate::{ClientConfig, ObjectStore, TransportKind};

    use super::*;

    const RESTARTS: usize = 50;

    /// A meta service on a free loopback port, without its admin HTTP server.
    async fn loopback_meta() -> MetaService {
        MetaService::start(MetaServiceConfig {
            discovery_url: "tcp://127.0.0.1:0".into(),
            http_url: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
    }

    /// A pure client reads from one local service after another, each stopped before
    /// the next starts (a new socket and data port, as after a restart; a new id or the
    /// one just freed);
    /// returns the most it held at once, as `Session::held` counts.
    async fn most_held_over_restarts(transport: TransportKind) -> (usize, usize, usize) {
        let meta = loopback_meta().await;
        let addrs = vec![meta.local_addr()];
        let mut config = ClientConfig::remote(&format!("tcp://{}", meta.local_addr()), 0);
        config.transport = Some(transport);
        let client = ObjectStore::new(config);
        client.init(0, false).await.unwrap();
        // A data port of its own for each service: the kernel would otherwise hand a
        // restarted one the port its predecessor just closed.
        let mut used = std::collections::HashSet::new();
        let mut most = (0, 0, 0);
        for i in 0..RESTARTS {
            let socket = std::env::temp_dir().join(format!(
                "mmc-restarts-{}-{transport:?}-{i}.sock",
                std::process::id()
            ));
            // A port seen free may be taken before the service binds it (the tests
            // beside this one open connections): then another one.
            let mut tries = 0;
            let service = loop {
                let port = loop {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let port = l.local_addr().unwrap();
                    if used.insert(port.port()) {
                        break port;
                    }
                };
                let local = LocalServiceConfig {
                    dram_size: 4 << 20,
                    data_addr: Some(port),
                    // Every other service asks for an id never used before; the others
                    // get the one their predecessor left free, so its old endpoint is
                    // stale.
                    service_id: (i % 2 == 1).then_some(1000 + i as LocalServiceId),
                    ..Default::default()
                };
                let started = RunningLocalService::start(
                    &local,
                    &addrs,
                    Duration::from_secs(5),
                    socket.clone(),
                )
                .await;
                match started {
                    Ok(service) => break service,
                    Err(e) if tries < 10 && e.to_string().contains("Address already in use") => {
                        tries += 1;
                    }
                    Err(e) => panic!("starting local service {i}: {e}"),
                }
            };
            let (key, value) = (format!("k{i}"), vec![i as u8; 8192]);
            client.put(&key, &value).await.unwrap();
            assert_eq!(client.get(&key).await.unwrap(), value);
            let held = client.data_plane_held().unwrap();
            most = (
                most.0.max(held.mapped),
                most.1.max(held.peers),
                most.2.max(held.connections),
            );
            service.stop().await.unwrap();
        }
        client.tear_down().await.unwrap();
        meta.stop().await;
        most
    }

    /// A service the meta service forgot (declared dead while alive) registers again
    /// under its id, from the same socket, with new segment ids: the client maps the
    /// same memory under the new ids and lets go of the old ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_drops_the_old_segments_of_a_service_that_registered_again() {
        let meta = loopback_meta().await;
        let client = ObjectStore::new(ClientConfig::remote(
            &format!("tcp://{}", meta.local_addr()),
            0,
        ));
        client.init(0, false).await.unwrap();
        let local = LocalServiceConfig {
            dram_size: 4 << 20,
            heartbeat_interval_ms: 20,
            ..Default::default()
        };
        let socket = std::env::temp_dir().join(format!("mmc-again-{}.sock", std::process::id()));
        let service = RunningLocalService::start(
            &local,
            &[meta.local_addr()],
            Duration::from_secs(5),
            socket,
        )
        .await
        .unwrap();
        let mut most = 0;
        for round in 0..10u8 {
            let (key, value) = (format!("again{round}"), vec![round; 8192]);
            client.put(&key, &value).await.unwrap();
            assert_eq!(client.get(&key).await.unwrap(), value);
            most = most.max(client.data_plane_held().unwrap().mapped);
            let before = service.segments()[0].0;
            let session = client.session().unwrap();
            session.meta.remove_service(service.id()).await.unwrap();
            let give_up = std::time::Instant::now() + Duration::from_secs(10);
            while service.segments()[0].0 == before {
                assert!(std::time::Instant::now() < give_up, "no new registration");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert!(most <= 2, "{most} segments mapped after 10 registrations");
        service.stop().await.unwrap();
        client.tear_down().await.unwrap();
        meta.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_keeps_no_mapping_of_a_service_that_restarted() {
        let (mapped, _, _) = most_held_over_restarts(TransportKind::Shm).await;
        // The live service's segment, and the one of the service just stopped.
        assert!(
            mapped <= 2,
            "{mapped} segments mapped after {RESTARTS} restarts"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_keeps_no_connection_to_a_service_that_restarted() {
        let (mapped, peers, conns) = most_held_over_restarts(TransportKind::Tcp).await;
        assert_eq!(mapped, 0);
        assert!(peers <= 2, "idle connections to {peers} services");
        assert!(conns <= 2 * memcache_local::MAX_IDLE_PER_PEER);
    }
}
