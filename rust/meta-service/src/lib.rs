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
use tarpc::server::incoming::Incoming;
use tarpc::server::BaseChannel;
use tarpc::tokio_serde::formats::Bincode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use memcache_core::{Blob, Clock, Error, LocalServiceId, Result};
use memcache_meta::{MetaConfig, MetaStore};
use memcache_proto::{blob_tag, DataEndpoint, MetaRpc, TagKey, MAX_FRAME};

mod http;
mod metrics;
mod ptracer;
mod rpc;

use metrics::Metrics;
use ptracer::{Tp, Tracer};
use rpc::{Outcome, Server};

/// The spec's tracepoint table, for any rows (e.g. fetched over RPC).
pub use ptracer::table as tracepoint_table;

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
        }
    }
}

pub(crate) struct Live {
    pub endpoint: DataEndpoint,
    pub last_beat: Instant,
    pub key: TagKey,
}

pub(crate) struct Shared {
    store: Mutex<MetaStore>,
    pub clock: Clock,
    live: Mutex<BTreeMap<LocalServiceId, Live>>,
    pub rpcs: AtomicU64,
    pub by_method: Mutex<BTreeMap<&'static str, u64>>,
    pub tracer: Tracer,
    pub metrics: Metrics,
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, MetaStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn live(&self) -> MutexGuard<'_, BTreeMap<LocalServiceId, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Data-plane capabilities for `blobs`, each with its owner's key.
    pub fn tags(&self, blobs: &[Blob], write: bool) -> Vec<u64> {
        let live = self.live();
        blobs
            .iter()
            .map(|b| {
                live.get(&b.service)
                    .map_or(0, |l| blob_tag(&l.key, b.segment, b.offset, b.len, write))
            })
            .collect()
    }

    /// Runs one call: counts it, times it at its tracepoint and in the latency
    /// histogram, and counts the keys it answered with a real error.
    pub fn traced<T: Outcome>(&self, method: &'static str, tp: Tp, f: impl FnOnce(u64) -> T) -> T {
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
        let out = f(self.clock.now_ms());
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
        self.metrics.observe_state(self.store().state());
        self.metrics.local_services.set(self.live().len() as i64);
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

/// A running meta service; stops when `stop` is called or the value is dropped.
pub struct MetaService {
    addr: SocketAddr,
    http: Option<SocketAddr>,
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
            tracer: Tracer::new(config.ptracer),
            metrics: Metrics::new(),
        });
        let (stop, stopped) = watch::channel(false);

        let server = Server(shared.clone());
        let mut tasks = Vec::new();
        let mut http = None;
        if let Some(at) = memcache_proto::parse_http_addr(&config.http_url)? {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| Error::Failed(format!("admin HTTP on {at}: {e}")))?;
            http = listener.local_addr().ok();
            tasks.push(tokio::spawn(http::serve(
                listener,
                server.clone(),
                stopped.clone(),
            )));
        }
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
        tasks.extend([serve, housekeeping]);
        Ok(MetaService {
            addr,
            http,
            stop,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin HTTP server listens, if it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
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
