//! A local service's own metrics and its `/health` + `/metrics` HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use memcache_core::{Error, Result};

use crate::segment::SegmentTable;

pub struct LocalMetrics {
    registry: Registry,
    /// Bytes through the TCP data plane, `direction` = in (writes) | out (reads).
    pub tcp_bytes: IntCounterVec,
    /// TCP requests, `op` = write | read, `result` = ok | refused.
    pub tcp_requests: IntCounterVec,
    /// Segment descriptors handed to same-host clients (each then copies by itself).
    pub shm_handouts: IntCounter,
    pub registrations: IntCounter,
    pub heartbeat_failures: IntCounter,
    /// SSD tier: records written and erased, reads served, reads refused (damaged).
    pub ssd_written: IntCounter,
    pub ssd_erased: IntCounter,
    pub ssd_reads: IntCounter,
    pub ssd_promoted: IntCounter,
    pub ssd_damaged: IntCounter,
    /// Objects moved out of HBM into this service's DRAM.
    pub hbm_demoted: IntCounter,
    /// Connections to the data plane or the HTTP server refused at their TLS handshake.
    pub tls_refused: IntCounter,
    segment_bytes: IntGaugeVec,
}

impl Default for LocalMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalMetrics {
    pub fn new() -> LocalMetrics {
        let registry = Registry::new();
        fn add<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        }
        let counter = |name: &str, help: &str| {
            add(
                &registry,
                IntCounter::new(name, help).expect("valid metric"),
            )
        };
        let tcp_bytes = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "memcache_local_tcp_bytes_total",
                    "Bytes moved by the TCP data plane",
                ),
                &["direction"],
            )
            .expect("valid metric"),
        );
        let tcp_requests = add(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "memcache_local_tcp_requests_total",
                    "Requests to the TCP data plane",
                ),
                &["op", "result"],
            )
            .expect("valid metric"),
        );
        let segment_bytes = add(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "memcache_local_segment_bytes",
                    "Capacity of each served segment",
                ),
                &["segment", "medium"],
            )
            .expect("valid metric"),
        );
        LocalMetrics {
            tcp_bytes,
            tcp_requests,
            tls_refused: counter(
                "memcache_tls_handshakes_refused_total",
                "Connections refused at their TLS handshake (no, unknown, expired or revoked certificate)",
            ),
            shm_handouts: counter(
                "memcache_local_shm_descriptors_total",
                "Segment descriptors and device handles handed to same-host clients",
            ),
            registrations: counter(
                "memcache_local_registrations_total",
                "Registrations with a meta service (more than one after a meta restart)",
            ),
            heartbeat_failures: counter(
                "memcache_local_heartbeat_failures_total",
                "Heartbeats that did not reach the meta service",
            ),
            ssd_written: counter(
                "memcache_local_ssd_records_written_total",
                "Objects written to the SSD tier",
            ),
            ssd_erased: counter(
                "memcache_local_ssd_records_erased_total",
                "SSD records erased because their objects went",
            ),
            ssd_reads: counter(
                "memcache_local_ssd_reads_total",
                "Objects read from the SSD tier",
            ),
            ssd_promoted: counter(
                "memcache_local_ssd_promoted_total",
                "Hot objects copied from the SSD tier back into memory",
            ),
            ssd_damaged: counter(
                "memcache_local_ssd_damaged_total",
                "SSD records skipped at recovery or refused at read for a bad checksum",
            ),
            hbm_demoted: counter(
                "memcache_local_hbm_demoted_total",
                "Cold objects moved from HBM into DRAM",
            ),
            segment_bytes,
            registry,
        }
    }

    fn text(&self, table: &SegmentTable) -> String {
        self.segment_bytes.reset();
        for (id, seg) in table.read().unwrap_or_else(|e| e.into_inner()).iter() {
            self.segment_bytes
                .with_label_values(&[&id.to_string(), seg.medium().name()])
                .set(seg.len() as i64);
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Serves `/health` and `/metrics` on `addr`, on the current runtime, until it stops;
/// returns the bound address.
pub async fn serve_http(
    addr: SocketAddr,
    metrics: Arc<LocalMetrics>,
    table: SegmentTable,
    tls: Option<Arc<memcache_tls::TlsServer>>,
    limits: memcache_tls::Limits,
) -> Result<SocketAddr> {
    let refused = metrics.tls_refused.clone();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Failed(format!("local service HTTP on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Failed(format!("local service HTTP: {e}")))?;
    let app = Router::new()
        .route("/health", get(|| async { "OK" }))
        .route(
            "/metrics",
            get(move || {
                let text = metrics.text(&table);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response()
                }
            }),
        );
    memcache_tls::warn_plaintext("the local service's HTTP server", bound, tls.is_some());
    tokio::spawn(memcache_tls::listen::serve(
        listener,
        tls,
        limits,
        "local HTTP",
        move || refused.inc(),
        move |stream, _, from| {
            let app = hyper_util::service::TowerToHyperService::new(app.clone());
            async move {
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.idle.min(std::time::Duration::from_secs(30)))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), app)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(peer = %from, error = %e, "local HTTP connection");
                }
            }
        },
    ));
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::ShmSegment;
    use std::sync::RwLock;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn scrape(addr: SocketAddr) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).await.unwrap();
        text
    }

    /// A segment's labels leave `/metrics` with the segment (a service that registers
    /// again gets new segment ids, and would otherwise report every old one forever).
    #[tokio::test]
    async fn labels_of_a_replaced_segment_leave_metrics() {
        let seg = Arc::new(ShmSegment::create("metrics-test", 1 << 16).unwrap());
        let table: SegmentTable =
            Arc::new(RwLock::new(vec![(7, crate::Segment::Shm(seg.clone()))]));
        let addr = serve_http(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(LocalMetrics::new()),
            table.clone(),
            None,
            memcache_tls::Limits::default(),
        )
        .await
        .unwrap();
        assert!(scrape(addr).await.contains("segment=\"7\""));
        for id in 8..58 {
            *table.write().unwrap() = vec![(id, crate::Segment::Shm(seg.clone()))];
            assert!(scrape(addr).await.contains(&format!("segment=\"{id}\"")));
        }
        let text = scrape(addr).await;
        let labelled = text
            .lines()
            .filter(|l| l.starts_with("memcache_local_segment_bytes{"))
            .collect::<Vec<_>>();
        assert_eq!(labelled.len(), 1, "{labelled:?}");
        assert!(labelled[0].contains("segment=\"57\""));
    }
}
