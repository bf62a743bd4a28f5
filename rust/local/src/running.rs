//! A local service joined to a remote meta service: its segments, the descriptor and
//! TCP servers that expose them, and the heartbeat that keeps it in the pool. When the
//! connection drops it reconnects; when the meta service no longer knows it (it
//! restarted empty) it registers again under the same id.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use memcache_core::{Error, LocalServiceId, Result, SegmentId};
use memcache_proto::{host_id, DataEndpoint, MetaLink, Registered, Registration};

use crate::hbm::{remote_hbm_sync, Demoter};
use crate::tcp::{Revoked, SharedKey};
use crate::tier::{remote_sync, SsdTier, Syncer, TierLoop};

use crate::fdpass::SegmentServer;
use crate::metrics::LocalMetrics;
use crate::segment::{Segment, SegmentTable, ShmSegment};
use crate::service::{LocalService, LocalServiceConfig};
use crate::DeviceSegment;

pub struct RunningLocalService {
    id: LocalServiceId,
    http: Option<SocketAddr>,
    _service: LocalService,
    segments: SegmentTable,
    _server: SegmentServer,
    link: Arc<MetaLink>,
    heartbeat: JoinHandle<()>,
    ssd: std::sync::Mutex<Option<TierLoop>>,
    /// Moves cold objects out of HBM, where the service has some.
    _hbm: Option<TierLoop>,
    /// The service's own runtime: heartbeats go on however the process that hosts the
    /// service schedules (or stops scheduling) its own work.
    runtime: OwnRuntime,
}

/// A runtime shut down in the background when dropped: dropping a runtime blocks,
/// which panics inside an async context (where `start` and its error paths run).
struct OwnRuntime(Option<Runtime>);

impl std::ops::Deref for OwnRuntime {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl RunningLocalService {
    /// Creates the segments, serves them (descriptors on `socket`, bytes on TCP),
    /// registers with the first meta service of `meta` that answers and heartbeats.
    pub async fn start(
        config: &LocalServiceConfig,
        meta: &[SocketAddr],
        timeout: Duration,
        socket: PathBuf,
    ) -> Result<Self> {
        let service = LocalService::create(config)?;
        // The process's outgoing connections use this identity too.
        let tls = match &config.tls {
            Some(t) => t.build_for_process()?,
            None => None,
        };
        let limits = memcache_tls::Limits {
            max_conns: config.max_connections,
            idle: Duration::from_millis(config.idle_timeout_ms.max(1)),
        };
        let bind = config
            .data_addr
            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        let data = std::net::TcpListener::bind(bind)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::Failed(format!("binding the data plane to {bind}: {e}")))?;
        let mut reg = Registration {
            recovered: Vec::new(),
            requested: config.service_id,
            device_id: config.device_id,
            segments: service.segment_specs(),
            endpoint: DataEndpoint {
                host: host_id(),
                shm_socket: Some(socket.to_string_lossy().into_owned()),
                tcp: Some(
                    data.local_addr()
                        .map_err(|e| Error::Failed(format!("data plane address: {e}")))?,
                ),
            },
        };
        let runtime = OwnRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("memcache-local")
                .enable_all()
                .build()
                .map_err(|e| Error::Failed(format!("starting the local service runtime: {e}")))?,
        ));
        // Bound before registering: a client may ask as soon as the meta service knows
        // us, and its request waits in the backlog until the table is filled.
        let segments: SegmentTable = Arc::new(RwLock::new(Vec::new()));
        let metrics = Arc::new(LocalMetrics::new());
        let mut server = SegmentServer::bind(socket)?;
        server.serve_counted(segments.clone(), Some(metrics.shm_handouts.clone()))?;
        let data = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(data)
                .map_err(|e| Error::Failed(format!("data plane: {e}")))?
        };
        let tier = service.tier().cloned();
        if let Some(t) = &tier {
            metrics.ssd_damaged.inc_by(t.recovery().damaged as u64);
        }
        let exposed = Arc::new(Exposed {
            table: segments.clone(),
            key: SharedKey::default(),
            revoked: Revoked::default(),
            mapped: service.memory_segments().collect(),
            tier: tier.clone(),
            metrics: metrics.clone(),
        });
        if let Ok(at) = data.local_addr() {
            memcache_tls::warn_plaintext("the local service's data plane", at, tls.is_some());
        }
        runtime.spawn(crate::tcp::serve(
            data,
            crate::tcp::Served {
                segments: segments.clone(),
                tier: tier.clone(),
                key: exposed.key.clone(),
                revoked: exposed.revoked.clone(),
                metrics: metrics.clone(),
            },
            tls.as_ref().map(|t| t.server.clone()),
            limits,
        ));
        let http = match config.http_addr {
            Some(addr) => Some(
                runtime
                    .spawn(crate::metrics::serve_http(
                        addr,
                        metrics.clone(),
                        segments.clone(),
                        tls.as_ref().map(|t| t.https.clone()),
                        limits,
                    ))
                    .await
                    .map_err(|e| Error::Failed(format!("local service HTTP: {e}")))??,
            ),
            None => None,
        };

        let link = Arc::new(MetaLink::new(meta.to_vec(), timeout));
        let joined = runtime.spawn({
            let (link, reg, tier) = (link.clone(), reg.clone(), tier.clone());
            async move { register(&link, reg, tier.as_deref()).await }
        });
        let registered = joined
            .await
            .map_err(|e| Error::Failed(format!("registering: {e}")))
            .and_then(|r| r);
        let registered = registered?;
        let id = registered.id;
        exposed.install(registered);
        reg.requested = Some(id);
        let every = Duration::from_millis(config.heartbeat_interval_ms.max(1));
        // A heartbeat waits two intervals at most, far below the meta service's timeout:
        // one that hangs on a leader cut off from its group must give up in time to
        // reach the new leader before it declares this service dead.
        let patience = (every * 2).clamp(Duration::from_millis(200), timeout);
        let beats = MetaLink::new(meta.to_vec(), patience);
        let heartbeat = runtime.spawn(beat(beats, link.clone(), reg, exposed, every));
        let hbm = (config.hbm_size > 0).then(|| {
            let sync = remote_hbm_sync(link.clone(), id);
            let demoter = Demoter::new(sync, segments.clone(), metrics.clone());
            TierLoop::start(demoter, runtime.handle())
        });
        let ssd = tier.map(|tier| {
            let sync = remote_sync(link.clone(), id);
            let syncer = Syncer::new(tier, sync, segments.clone(), metrics);
            TierLoop::start(syncer, runtime.handle())
        });
        Ok(RunningLocalService {
            id,
            http,
            _service: service,
            segments,
            _server: server,
            link,
            heartbeat,
            ssd: std::sync::Mutex::new(ssd),
            _hbm: hbm,
            runtime,
        })
    }

    pub fn id(&self) -> LocalServiceId {
        self.id
    }

    fn ssd_loop(&self) -> std::sync::MutexGuard<'_, Option<TierLoop>> {
        self.ssd.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where `/health` and `/metrics` are served, if they are.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The shared-memory segments (which same-host clients map) with the ids the meta
    /// service gave them (they change when the service registers again with a
    /// restarted meta service).
    pub fn segments(&self) -> Vec<(SegmentId, Arc<ShmSegment>)> {
        let table = self.segments.read().unwrap_or_else(|e| e.into_inner());
        table
            .iter()
            .filter_map(|(id, s)| Some((*id, s.shm()?.clone())))
            .collect()
    }

    /// The device (HBM) segment `id` of this service, if it has one by that id.
    pub fn device_segment(&self, id: SegmentId) -> Option<Arc<DeviceSegment>> {
        match crate::segment::find_segment(&self.segments, id)? {
            Segment::Device(d) => Some(d),
            Segment::Shm(_) => None,
        }
    }

    /// Writes every object this service holds in memory to its SSD tier (within
    /// `timeout`), so a restart finds them; true when nothing was left to write.
    /// The tier's loop stops: call it on the way out.
    pub async fn flush_to_ssd(&self, timeout: Duration) -> bool {
        let tier = self.ssd_loop().take();
        match tier {
            Some(tier) => tier.flush(timeout).await,
            None => true,
        }
    }

    /// Leaves the pool: objects whose only replica lived here go with it.
    pub async fn stop(&self) -> Result<usize> {
        self.heartbeat.abort();
        self.ssd_loop().take();
        let (link, id) = (self.link.clone(), self.id);
        self.runtime
            .spawn(async move {
                link.call(|rpc, ctx| async move { rpc.unregister_service(ctx, id).await })
                    .await?
            })
            .await
            .map_err(|e| Error::Failed(format!("leaving: {e}")))?
    }
}

impl Drop for RunningLocalService {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.ssd_loop().take();
    }
}

/// Registers the service, offering what its SSD tier holds now; the tier erases the
/// records the pool did not take.
async fn register(
    link: &MetaLink,
    mut reg: Registration,
    tier: Option<&SsdTier>,
) -> Result<Registered> {
    reg.recovered = tier.map(SsdTier::recovered).unwrap_or_default();
    let registered = link
        .call(|rpc, ctx| {
            let reg = reg.clone();
            async move { rpc.register_service(ctx, reg).await }
        })
        .await??;
    if let (Some(tier), Some(ssd)) = (tier, registered.segments.get(reg.segments.len() - 1)) {
        tier.bind(*ssd, &reg.recovered, &registered.recovered);
    }
    Ok(registered)
}

/// What the service's servers expose, replaced as a whole on each registration.
struct Exposed {
    table: SegmentTable,
    key: SharedKey,
    /// Puts whose write capabilities the meta service revoked (heartbeat answers).
    revoked: Revoked,
    /// The memory segments in registration order (the SSD tier's comes last).
    mapped: Vec<Segment>,
    tier: Option<Arc<SsdTier>>,
    metrics: Arc<LocalMetrics>,
}

impl Exposed {
    fn install(&self, reg: Registered) {
        self.metrics.registrations.inc();
        tracing::info!(service = reg.id, segments = ?reg.segments, "local service registered");
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = reg.key;
        // Put ids of the old key's capabilities mean nothing under the new one.
        self.revoked.clear();
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = reg
            .segments
            .into_iter()
            .zip(self.mapped.iter().cloned())
            .collect();
    }
}

async fn beat(
    beats: MetaLink,
    link: Arc<MetaLink>,
    reg: Registration,
    exposed: Arc<Exposed>,
    every: Duration,
) {
    let id = reg.requested.expect("registered before heartbeating");
    // The next beat goes at once when an answer carried revocations (acknowledging
    // them), and otherwise an interval after the last one began. (Beats that the meta
    // service held open until it had revocations were tried: in the chaos test they
    // left services without a heartbeat to a new leader past its timeout.)
    // The last answer whose revocations are applied: acknowledged with the next beat.
    let mut acked = (0, 0);
    loop {
        let began = tokio::time::Instant::now();
        let beat = beats
            .call(|rpc, ctx| async move { rpc.heartbeat(ctx, id, acked).await })
            .await;
        let mut again = began + every;
        match beat.and_then(|r| r) {
            Ok(b) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                exposed.revoked.add(&b.revoked, &b.released, now);
                acked = (b.epoch, b.seq);
                if b.revokes() {
                    again = began;
                }
            }
            Err(Error::NotConnectedToLocal) => {
                match register(&link, reg.clone(), exposed.tier.as_deref()).await {
                    // The meta service restarted empty: the same memory joins again under the
                    // same id, with the segment ids and key it assigns now.
                    Ok(again) => exposed.install(again),
                    Err(e) => tracing::warn!(service = id, error = %e, "registering again"),
                }
            }
            Err(e) => {
                exposed.metrics.heartbeat_failures.inc();
                tracing::warn!(service = id, error = %e, "heartbeat failed")
            }
        }
        tokio::time::sleep_until(again).await;
    }
}
