//! What an initialized store holds: its way to the meta service, the segments it has
//! mapped, and the local service it contributes (if any).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use memcache_core::{Blob, Error, LocalServiceId, Medium, Result, SegmentId};
use memcache_local::{
    check_whole, fetch_segment, LocalMetrics, LocalService, LocalServiceConfig,
    RunningLocalService, SegmentTable, ShmTransport, SyncFn, Syncer, TcpTransport, TierLoop,
};
use memcache_proto::{host_id, DataEndpoint};

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
            let memory = ids
                .iter()
                .copied()
                .zip(service.all_segments().iter().cloned());
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
}

/// A socket path unique to this process and store.
fn default_socket() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("mmc-local-{}-{n}.sock", std::process::id()))
}

/// How a blob is reached.
enum Route {
    Shm,
    Tcp(SocketAddr),
}

pub(crate) struct Session {
    pub meta: MetaClient,
    pub transport: Arc<ShmTransport>,
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
    resolving: tokio::sync::Mutex<()>,
    host: String,
}

impl Session {
    pub fn new(
        meta: MetaClient,
        transport: Arc<ShmTransport>,
        local: Option<Local>,
        force_tcp: bool,
    ) -> Session {
        if let Some(local) = &local {
            for (id, seg) in local.segments() {
                transport.attach(id, seg);
            }
        }
        Session {
            meta,
            transport,
            tcp: TcpTransport::default(),
            force_tcp,
            local,
            buffers: Mutex::new(BTreeMap::new()),
            grants: Grants::default(),
            endpoints: Mutex::new(FxHashMap::default()),
            resolving: tokio::sync::Mutex::new(()),
            host: host_id(),
        }
    }

    pub fn local_id(&self) -> Option<LocalServiceId> {
        self.local.as_ref().and_then(|l| l.id().ok())
    }

    /// Writes `srcs`, concatenated, as the whole of `blob`; `tag` is the write
    /// capability the meta service issued for it (needed over TCP only).
    pub async fn write(&self, blob: &Blob, tag: u64, srcs: &[&[u8]]) -> Result<()> {
        check_whole(blob, srcs)?;
        self.write_part(blob, tag, 0, srcs).await
    }

    /// Writes `srcs`, concatenated, into `blob` from `at` on (an in-place writer fills
    /// its allocation in pieces).
    pub async fn write_part(&self, blob: &Blob, tag: u64, at: u64, srcs: &[&[u8]]) -> Result<()> {
        for fresh in [false, true] {
            let done = match self.route(blob).await? {
                Route::Shm => return self.transport.write_part(blob, at, srcs),
                Route::Tcp(addr) => self.tcp.write_part(addr, blob, tag, at, srcs).await,
            };
            if fresh || !self.stale(blob, &done) {
                return done;
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Reads the whole of `blob` into `dsts`, with its read capability `tag`.
    pub async fn read(&self, blob: &Blob, tag: u64, dsts: &mut [&mut [u8]]) -> Result<()> {
        self.read_part(blob, tag, 0, blob.len, dsts).await
    }

    /// Reads `len` bytes of `blob` from `at` on into `dsts`.
    pub async fn read_part(
        &self,
        blob: &Blob,
        tag: u64,
        at: u64,
        len: u64,
        dsts: &mut [&mut [u8]],
    ) -> Result<()> {
        for fresh in [false, true] {
            let done = match self.route(blob).await? {
                Route::Shm => return self.transport.read_part(blob, at, len, dsts),
                Route::Tcp(addr) => self.tcp.read_part(addr, blob, tag, at, len, dsts).await,
            };
            if fresh || !self.stale(blob, &done) {
                return done;
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Whether a TCP call failed to reach its service: then the endpoint known for it
    /// is forgotten (a restarted service serves elsewhere), and the call may go again.
    fn stale(&self, blob: &Blob, done: &Result<()>) -> bool {
        let unreachable = matches!(done, Err(Error::NotConnectedToLocal));
        if unreachable {
            let mut known = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
            known.remove(&blob.service);
        }
        unreachable
    }

    /// Shared memory when the segment is (or can be) mapped here: a same-host local
    /// service hands over its descriptor once, and every later copy is a memcpy.
    /// TCP otherwise.
    async fn route(&self, blob: &Blob) -> Result<Route> {
        if !self.force_tcp && self.transport.has(blob.segment) {
            return Ok(Route::Shm);
        }
        // Another process's SSD tier is read through its service, wherever it is.
        let shm = !self.force_tcp && blob.medium != Medium::Ssd;
        // One miss at a time: the many blobs of a batch on one new segment map it once.
        let _resolving = self.resolving.lock().await;
        if shm && self.transport.has(blob.segment) {
            return Ok(Route::Shm);
        }
        let endpoint = match self.endpoint(blob.service) {
            Some(e) => e,
            None => {
                let fresh = self.meta.endpoints().await?;
                let mut known = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
                known.clear();
                known.extend(fresh);
                known
                    .get(&blob.service)
                    .cloned()
                    .ok_or(Error::NotConnectedToLocal)?
            }
        };
        match (&endpoint.shm_socket, endpoint.tcp) {
            (Some(path), _) if endpoint.host == self.host && shm => {
                let (path, segment) = (PathBuf::from(path), blob.segment);
                let mapped = tokio::task::spawn_blocking(move || fetch_segment(&path, segment))
                    .await
                    .map_err(|e| Error::Failed(format!("mapping a segment: {e}")))??;
                self.transport.attach(segment, Arc::new(mapped));
                Ok(Route::Shm)
            }
            (_, Some(addr)) => Ok(Route::Tcp(addr)),
            _ => Err(Error::NotConnectedToLocal),
        }
    }

    /// 0 for this client's own local service, 1 for another on this host (or one
    /// already mapped), 2 for the rest; SSD replicas after every memory one.
    pub fn distance(&self, blob: &Blob) -> u8 {
        if blob.medium == Medium::Ssd {
            3
        } else if Some(blob.service) == self.local_id() {
            0
        } else if self.transport.has(blob.segment)
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
