//! The meta service: a [`MetaStore`] served over tarpc (bincode over TCP), plus the
//! housekeeping only a running service can do: declaring local services dead when
//! their heartbeats stop, and rolling back puts and freeing expired objects on time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{future, StreamExt};
use serde::{Deserialize, Serialize};
use tarpc::context::Context;
use tarpc::server::incoming::Incoming;
use tarpc::server::BaseChannel;
use tarpc::tokio_serde::formats::Bincode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use memcache_core::{
    Blob, Clock, Error, Key, KeyInfo, LocalServiceId, Medium, ReplicateConfig, Result,
};
use memcache_meta::{Allocation, LeaseId, Located, MetaConfig, MetaStore, PutId};
use memcache_proto::{
    blob_tag, DataEndpoint, MetaRpc, MetaStats, Registered, Registration, SegmentView, TagKey,
    MAX_FRAME,
};

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
    /// How often overdue puts, expired objects and dead services are looked for.
    #[serde(alias = "housekeepingIntervalMs")]
    pub housekeeping_interval_ms: u64,
}

impl Default for MetaServiceConfig {
    fn default() -> Self {
        MetaServiceConfig {
            discovery_url: "tcp://127.0.0.1:5000".into(),
            meta: MetaConfig::default(),
            heartbeat_timeout_ms: 3000,
            housekeeping_interval_ms: 100,
        }
    }
}

struct Live {
    endpoint: DataEndpoint,
    last_beat: Instant,
    key: TagKey,
}

struct Shared {
    store: Mutex<MetaStore>,
    clock: Clock,
    live: Mutex<BTreeMap<LocalServiceId, Live>>,
    rpcs: AtomicU64,
    by_method: Mutex<BTreeMap<&'static str, u64>>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, MetaStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> MutexGuard<'_, BTreeMap<LocalServiceId, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Data-plane capabilities for `blobs`, each with its owner's key.
    fn tags(&self, blobs: &[Blob], write: bool) -> Vec<u64> {
        let live = self.live();
        blobs
            .iter()
            .map(|b| {
                live.get(&b.service)
                    .map_or(0, |l| blob_tag(&l.key, b.segment, b.offset, b.len, write))
            })
            .collect()
    }

    /// Counts a call and returns the time for it.
    fn call(&self, method: &'static str) -> u64 {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        *self
            .by_method
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(method)
            .or_default() += 1;
        self.clock.now_ms()
    }

    fn housekeeping(&self, heartbeat_timeout: Duration) {
        let now = Instant::now();
        let dead: Vec<LocalServiceId> = self
            .live()
            .iter()
            .filter(|(_, l)| now.duration_since(l.last_beat) > heartbeat_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.live().remove(&id);
            match self.store().remove_service(id) {
                Ok(lost) => tracing::warn!(service = id, lost, "local service declared dead"),
                Err(e) => tracing::warn!(service = id, error = %e, "removing a dead service"),
            }
        }
        let now_ms = self.clock.now_ms();
        self.store().reclaim(now_ms);
    }
}

#[derive(Clone)]
struct Server(Arc<Shared>);

impl MetaRpc for Server {
    async fn register_service(self, _: Context, reg: Registration) -> Result<Registered> {
        self.0.call("register_service");
        let (id, segments) =
            self.0
                .store()
                .register_service(reg.requested, reg.device_id, reg.segments)?;
        let key: TagKey = rand::random();
        let live = Live {
            endpoint: reg.endpoint,
            last_beat: Instant::now(),
            key,
        };
        self.0.live().insert(id, live);
        tracing::info!(service = id, ?segments, "local service joined");
        Ok(Registered { id, segments, key })
    }

    async fn heartbeat(self, _: Context, service: LocalServiceId) -> Result<()> {
        self.0.call("heartbeat");
        match self.0.live().get_mut(&service) {
            Some(l) => {
                l.last_beat = Instant::now();
                Ok(())
            }
            None => Err(Error::NotConnectedToLocal),
        }
    }

    async fn unregister_service(self, _: Context, service: LocalServiceId) -> Result<usize> {
        self.0.call("unregister_service");
        self.0.live().remove(&service);
        self.0.store().remove_service(service)
    }

    async fn endpoints(self, _: Context) -> Vec<(LocalServiceId, DataEndpoint)> {
        self.0.call("endpoints");
        let live = self.0.live();
        live.iter()
            .map(|(id, l)| (*id, l.endpoint.clone()))
            .collect()
    }

    async fn alloc(
        self,
        _: Context,
        items: Vec<(Key, u64)>,
        config: ReplicateConfig,
    ) -> Vec<Result<Allocation>> {
        let now = self.0.call("alloc");
        let mut out = self.0.store().alloc(items, &config, now);
        for a in out.iter_mut().flatten() {
            a.tags = self.0.tags(&a.blobs, true);
        }
        out
    }

    async fn commit(self, _: Context, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        let now = self.0.call("commit");
        self.0.store().commit(items, now)
    }

    async fn abort(self, _: Context, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        self.0.call("abort");
        self.0.store().abort(items)
    }

    async fn lookup(self, _: Context, keys: Vec<Key>) -> Vec<Result<Located>> {
        let now = self.0.call("lookup");
        let mut out = self.0.store().lookup(&keys, now);
        for l in out.iter_mut().flatten() {
            l.tags = self.0.tags(&l.blobs, false);
        }
        out
    }

    async fn release(self, _: Context, leases: Vec<(Key, LeaseId)>) {
        self.0.call("release");
        self.0.store().release(&leases)
    }

    async fn remove(self, _: Context, keys: Vec<Key>) -> Vec<Result<()>> {
        let now = self.0.call("remove");
        self.0.store().remove(keys, now)
    }

    async fn exists(self, _: Context, keys: Vec<Key>) -> Vec<Result<bool>> {
        let now = self.0.call("exists");
        self.0.store().exists(&keys, now)
    }

    async fn key_info(self, _: Context, keys: Vec<Key>) -> Vec<KeyInfo> {
        let now = self.0.call("key_info");
        self.0.store().key_info(&keys, now)
    }

    async fn segments(self, _: Context) -> Vec<SegmentView> {
        self.0.call("segments");
        self.segment_views()
    }

    async fn stats(self, _: Context) -> MetaStats {
        self.0.call("stats");
        let rpcs = self.0.rpcs.load(Ordering::Relaxed);
        let by_method = self
            .0
            .by_method
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let store = self.0.store();
        let state = store.state();
        let (used, capacity) = Medium::ALL
            .iter()
            .map(|m| state.usage(*m))
            .fold((0, 0), |(u, c), (mu, mc)| (u + mu, c + mc));
        MetaStats {
            rpcs,
            by_method,
            objects: state.object_count() as u64,
            services: state.services().count() as u64,
            used_bytes: used,
            capacity_bytes: capacity,
        }
    }
}

impl Server {
    fn segment_views(&self) -> Vec<SegmentView> {
        let store = self.0.store();
        store
            .state()
            .segments()
            .map(|s| SegmentView {
                id: s.id,
                service: s.service,
                medium: s.spec.medium,
                capacity: s.capacity(),
                used: s.used(),
            })
            .collect()
    }
}

/// A running meta service; stops when `stop` is called or the value is dropped.
pub struct MetaService {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl MetaService {
    /// Binds the address of `config.discovery_url` (port 0 picks a free one) and serves.
    pub async fn start(config: MetaServiceConfig) -> Result<MetaService> {
        Self::start_with_clock(config, Clock::System).await
    }

    pub async fn start_with_clock(config: MetaServiceConfig, clock: Clock) -> Result<MetaService> {
        let addr = *memcache_proto::parse_discovery(&config.discovery_url)?
            .first()
            .expect("parse_discovery returns at least one address");
        // Segment ids of this instance start above any an earlier instance gave out.
        let first_segment = clock.now_ms().max(1) << 20;
        let store = MetaStore::with_first_segment_id(config.meta.clone(), first_segment)?;
        let mut incoming = tarpc::serde_transport::tcp::listen(addr, Bincode::default)
            .await
            .map_err(|e| Error::Failed(format!("listening on {addr}: {e}")))?;
        incoming.config_mut().max_frame_length(MAX_FRAME);
        let addr = incoming.local_addr();
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            clock,
            live: Mutex::new(BTreeMap::new()),
            rpcs: AtomicU64::new(0),
            by_method: Mutex::new(BTreeMap::new()),
        });
        let (stop, stopped) = watch::channel(false);

        let server = Server(shared.clone());
        let mut stop_rx = stopped.clone();
        let serve = tokio::spawn(async move {
            let serving = incoming
                .filter_map(|r| future::ready(r.ok()))
                .map(|transport| {
                    // Small calls must not wait for Nagle's algorithm.
                    let _ = transport.get_ref().set_nodelay(true);
                    BaseChannel::with_defaults(transport)
                })
                .execute(server.serve())
                .for_each(|channel| async {
                    tokio::spawn(channel.for_each(|response| async {
                        tokio::spawn(response);
                    }));
                });
            tokio::select! {
                _ = serving => {}
                _ = stop_rx.wait_for(|s| *s) => {}
            }
        });

        let timeout = Duration::from_millis(config.heartbeat_timeout_ms);
        let interval = Duration::from_millis(config.housekeeping_interval_ms.max(1));
        let mut stop_rx = stopped;
        let housekeeping = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => shared.housekeeping(timeout),
                    _ = stop_rx.wait_for(|s| *s) => break,
                }
            }
        });
        tracing::info!(%addr, "meta service listening");
        Ok(MetaService {
            addr,
            stop,
            tasks: vec![serve, housekeeping],
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting calls and housekeeping.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for MetaService {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}
