//! A local service: the segments one host (or device) contributes, under one id.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use memcache_core::{Error, LocalServiceId, Result, SegmentId};
use memcache_proto::SegmentSpec;

use crate::segment::{Segment, ShmSegment};
use crate::tier::SsdTier;
use crate::DeviceSegment;

const GIB: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalServiceConfig {
    /// Bytes of DRAM this service contributes.
    #[serde(alias = "localDRAMSize")]
    pub dram_size: u64,
    /// Bytes of device memory (HBM) of `device_id` this service contributes, through
    /// the process's device runtime (0: none).
    #[serde(alias = "localHBMSize")]
    pub hbm_size: u64,
    /// Device the service is bound to (reported in key info).
    #[serde(alias = "deviceId")]
    pub device_id: u32,
    /// Requested local service id (the original API's rank); the meta service assigns
    /// the smallest free one when unset.
    #[serde(alias = "rankId")]
    pub service_id: Option<LocalServiceId>,
    /// How often the service tells the meta service it is alive.
    #[serde(alias = "heartbeatIntervalMs")]
    pub heartbeat_interval_ms: u64,
    /// Unix socket where same-host clients get the segments' descriptors.
    #[serde(alias = "shmSocket")]
    pub shm_socket: Option<std::path::PathBuf>,
    /// Address of the TCP data plane (`127.0.0.1:0`, a free loopback port, if unset).
    #[serde(alias = "bmIpPort")]
    pub data_addr: Option<std::net::SocketAddr>,
    /// Where to serve `/health` and `/metrics` (off if unset).
    pub http_addr: Option<std::net::SocketAddr>,
    /// Directory of the SSD tier (none if unset): objects are written there in the
    /// background, eviction from DRAM keeps them there, and they survive a restart.
    #[serde(alias = "ssdDir")]
    pub ssd_dir: Option<std::path::PathBuf>,
    /// Bytes of the SSD tier.
    #[serde(alias = "localSSDSize")]
    pub ssd_size: u64,
    /// Mutual TLS on the data plane and the HTTP server, and to the meta service; off
    /// where absent or not enabled.
    pub tls: Option<memcache_tls::TlsConfig>,
    /// Connections the data plane and the HTTP server each keep open at most.
    pub max_connections: usize,
    /// A data-plane connection that sends no request for this long is closed (ms).
    pub idle_timeout_ms: u64,
}

impl Default for LocalServiceConfig {
    fn default() -> Self {
        LocalServiceConfig {
            dram_size: GIB,
            hbm_size: 0,
            device_id: 0,
            service_id: None,
            heartbeat_interval_ms: 500,
            shm_socket: None,
            data_addr: None,
            http_addr: None,
            ssd_dir: None,
            ssd_size: 16 * GIB,
            tls: None,
            max_connections: memcache_tls::Limits::default().max_conns,
            idle_timeout_ms: memcache_tls::Limits::default().idle.as_millis() as u64,
        }
    }
}

/// The segments of one local service. Created first, then registered with the meta
/// service, whose answer (`bind`) gives the service and segment ids.
pub struct LocalService {
    config: LocalServiceConfig,
    segments: Vec<Arc<ShmSegment>>,
    hbm: Option<Arc<DeviceSegment>>,
    tier: Option<Arc<SsdTier>>,
    ids: Option<(LocalServiceId, Vec<SegmentId>)>,
}

impl LocalService {
    /// Creates (and pre-faults) the service's segments.
    pub fn create(config: &LocalServiceConfig) -> Result<Self> {
        if config.dram_size == 0 {
            return Err(Error::invalid("localDRAMSize is 0"));
        }
        let dram = Arc::new(ShmSegment::create("memcache-dram", config.dram_size)?);
        let hbm = match config.hbm_size {
            0 => None,
            n => Some(Arc::new(DeviceSegment::create(config.device_id, n)?)),
        };
        let tier = match &config.ssd_dir {
            Some(dir) => Some(Arc::new(SsdTier::open(dir, config.ssd_size)?)),
            None => None,
        };
        Ok(LocalService {
            config: config.clone(),
            segments: vec![dram],
            hbm,
            tier,
            ids: None,
        })
    }

    /// The SSD tier, when the service has one.
    pub fn tier(&self) -> Option<&Arc<SsdTier>> {
        self.tier.as_ref()
    }

    pub fn config(&self) -> &LocalServiceConfig {
        &self.config
    }

    /// What to register with the meta service, one spec per segment: the memory
    /// segments (DRAM, then HBM), then the SSD tier's.
    pub fn segment_specs(&self) -> Vec<SegmentSpec> {
        let memory = self.memory_segments().map(|s| SegmentSpec {
            medium: s.medium(),
            capacity: s.len(),
            base: s.base(),
        });
        memory.chain(self.tier.iter().map(|t| t.spec())).collect()
    }

    /// Every memory segment, in the order of `segment_specs`.
    pub fn memory_segments(&self) -> impl Iterator<Item = Segment> + use<'_> {
        let dram = self.segments.iter().cloned().map(Segment::Shm);
        dram.chain(self.hbm.iter().cloned().map(Segment::Device))
    }

    /// Records the ids the meta service assigned to the memory segments.
    pub fn bind(&mut self, service: LocalServiceId, segment_ids: Vec<SegmentId>) -> Result<()> {
        if segment_ids.len() != self.segments.len() + self.hbm.iter().len() {
            return Err(Error::UnmatchedRetcode);
        }
        tracing::info!(service, segments = ?segment_ids, "local service registered");
        self.ids = Some((service, segment_ids));
        Ok(())
    }

    /// The service id, once registered.
    pub fn id(&self) -> Result<LocalServiceId> {
        self.ids
            .as_ref()
            .map(|(id, _)| *id)
            .ok_or(Error::NotStarted)
    }

    /// Registered shared-memory segments with their ids.
    pub fn segments(&self) -> impl Iterator<Item = (SegmentId, &Arc<ShmSegment>)> {
        self.ids
            .iter()
            .flat_map(|(_, ids)| ids.iter().copied().zip(&self.segments))
    }
}
