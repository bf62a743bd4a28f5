//! A local service joined to a remote meta service: its segments, the descriptor
//! server for same-host clients, and the heartbeat that keeps it alive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use memcache_core::{Error, LocalServiceId, Result, SegmentId};
use memcache_proto::{context, host_id, rpc_error, DataEndpoint, MetaRpcClient, Registration};

use crate::fdpass::SegmentServer;
use crate::segment::ShmSegment;
use crate::service::{LocalService, LocalServiceConfig};

pub struct RunningLocalService {
    service: LocalService,
    _server: SegmentServer,
    meta: MetaRpcClient,
    timeout: Duration,
    heartbeat: JoinHandle<()>,
}

impl RunningLocalService {
    /// Creates the segments, serves their descriptors on `socket`, registers with the
    /// meta service and starts heartbeating. Must run inside a tokio runtime.
    pub async fn start(
        config: &LocalServiceConfig,
        meta: MetaRpcClient,
        timeout: Duration,
        socket: PathBuf,
    ) -> Result<Self> {
        let mut service = LocalService::create(config)?;
        let reg = Registration {
            requested: config.service_id,
            device_id: config.device_id,
            segments: service.segment_specs(),
            endpoint: DataEndpoint {
                host: host_id(),
                shm_socket: Some(socket.to_string_lossy().into_owned()),
                tcp: None,
            },
        };
        // Bound before registering: a client may ask as soon as the meta service knows
        // us, and its request waits in the backlog until the ids are known.
        let mut server = SegmentServer::bind(socket)?;
        let (id, ids) = meta
            .register_service(context(timeout), reg)
            .await
            .map_err(rpc_error)??;
        let segments = service.all_segments().to_vec();
        server.serve(ids.iter().copied().zip(segments).collect())?;
        service.bind(id, ids)?;
        let every = Duration::from_millis(config.heartbeat_interval_ms.max(1));
        let heartbeat = tokio::spawn(beat(meta.clone(), id, every, timeout));
        Ok(RunningLocalService {
            service,
            _server: server,
            meta,
            timeout,
            heartbeat,
        })
    }

    pub fn id(&self) -> LocalServiceId {
        self.service.id().expect("bound at start")
    }

    pub fn segments(&self) -> impl Iterator<Item = (SegmentId, &Arc<ShmSegment>)> {
        self.service.segments()
    }

    /// Leaves the pool: objects whose only replica lived here go with it.
    pub async fn stop(&self) -> Result<usize> {
        self.heartbeat.abort();
        self.meta
            .unregister_service(context(self.timeout), self.id())
            .await
            .map_err(rpc_error)?
    }
}

impl Drop for RunningLocalService {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn beat(meta: MetaRpcClient, service: LocalServiceId, every: Duration, timeout: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match meta.heartbeat(context(timeout), service).await {
            Ok(Ok(())) => {}
            Ok(Err(Error::NotConnectedToLocal)) => {
                tracing::error!(
                    service,
                    "the meta service no longer knows this local service"
                );
            }
            Ok(Err(e)) => tracing::warn!(service, error = %e, "heartbeat refused"),
            Err(e) => tracing::warn!(service, error = %e, "heartbeat failed"),
        }
    }
}
