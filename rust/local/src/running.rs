//! A local service joined to a remote meta service: its segments, the descriptor
//! server for same-host clients, and the heartbeat that keeps it alive.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use memcache_core::{Error, LocalServiceId, Result, SegmentId};
use memcache_proto::{
    connect_meta, context, host_id, rpc_error, DataEndpoint, MetaRpcClient, Registration,
};

use crate::fdpass::SegmentServer;
use crate::segment::ShmSegment;
use crate::service::{LocalService, LocalServiceConfig};

pub struct RunningLocalService {
    service: LocalService,
    _server: SegmentServer,
    meta: MetaRpcClient,
    timeout: Duration,
    heartbeat: JoinHandle<()>,
    /// The service's own runtime and meta connection: heartbeats go on however the
    /// process that hosts the service schedules (or stops scheduling) its own work.
    runtime: Option<Runtime>,
}

impl RunningLocalService {
    /// Creates the segments, serves their descriptors on `socket`, registers with the
    /// first meta service of `meta` that answers and starts heartbeating.
    pub async fn start(
        config: &LocalServiceConfig,
        meta: &[SocketAddr],
        timeout: Duration,
        socket: PathBuf,
    ) -> Result<Self> {
        let mut service = LocalService::create(config)?;
        let mut reg = Registration {
            requested: config.service_id,
            device_id: config.device_id,
            segments: service.segment_specs(),
            endpoint: DataEndpoint {
                host: host_id(),
                shm_socket: Some(socket.to_string_lossy().into_owned()),
                tcp: None,
            },
        };
        let bind = config
            .data_addr
            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        let data = std::net::TcpListener::bind(bind)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::Failed(format!("binding the data plane to {bind}: {e}")))?;
        reg.endpoint.tcp = Some(
            data.local_addr()
                .map_err(|e| Error::Failed(format!("data plane address: {e}")))?,
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("memcache-local")
            .enable_all()
            .build()
            .map_err(|e| Error::Failed(format!("starting the local service runtime: {e}")))?;
        // Bound before registering: a client may ask as soon as the meta service knows
        // us, and its request waits in the backlog until the ids are known.
        let mut server = SegmentServer::bind(socket)?;
        let addrs = meta.to_vec();
        let joined = runtime.spawn(async move {
            let mut last = Error::NotConnectedToMeta;
            for addr in addrs {
                match connect_meta(addr, timeout).await {
                    Ok(rpc) => {
                        let r = rpc.register_service(context(timeout), reg).await;
                        return r.map_err(rpc_error)?.map(|ids| (rpc, ids));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        });
        let joined = joined
            .await
            .map_err(|e| Error::Failed(format!("registering: {e}")));
        let (meta, (id, ids)) = match joined {
            Ok(Ok(v)) => v,
            Ok(Err(e)) | Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let segments: Vec<_> = ids
            .iter()
            .copied()
            .zip(service.all_segments().to_vec())
            .collect();
        server.serve(segments.clone())?;
        let data = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(data)
                .map_err(|e| Error::Failed(format!("data plane: {e}")))?
        };
        runtime.spawn(crate::tcp::serve(data, Arc::new(segments)));
        service.bind(id, ids)?;
        let every = Duration::from_millis(config.heartbeat_interval_ms.max(1));
        let heartbeat = runtime.spawn(beat(meta.clone(), id, every, timeout));
        Ok(RunningLocalService {
            service,
            _server: server,
            meta,
            timeout,
            heartbeat,
            runtime: Some(runtime),
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
        let (meta, timeout, id) = (self.meta.clone(), self.timeout, self.id());
        let runtime = self.runtime.as_ref().ok_or(Error::NotStarted)?;
        let left =
            runtime.spawn(async move { meta.unregister_service(context(timeout), id).await });
        left.await
            .map_err(|e| Error::Failed(format!("leaving: {e}")))?
            .map_err(rpc_error)?
    }
}

impl Drop for RunningLocalService {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if let Some(rt) = self.runtime.take() {
            // Never blocks, so it is safe inside an async context too.
            rt.shutdown_background();
        }
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
