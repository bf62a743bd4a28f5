//! The client's view of the meta service: one call per batch, whether the service runs
//! in this process (the embedded pool) or behind tarpc. Over tarpc, calls that are safe
//! to repeat are asked again when the meta group loses its leader mid-call (-3017):
//! reads, commits (a repeated commit is a no-op) and allocations (each put attempt
//! carries a writer token, so a repeated one gets its first allocation back).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcache_core::Medium;
use memcache_core::{Error, Key, KeyInfo, LocalServiceId, ReplicateConfig, Result, SegmentId};
use memcache_proto::tarpc::client::RpcError;
use memcache_proto::tarpc::context::Context;
use memcache_proto::{Allocation, LeaseId, Located, PutId, TierMove};
use memcache_proto::{DataEndpoint, MetaLink, MetaRpcClient, Reply};

use crate::embedded::EmbeddedPool;

#[derive(Clone)]
pub(crate) enum MetaClient {
    Embedded(Arc<EmbeddedPool>),
    /// Reconnects by itself, and follows the leader of a meta group.
    Remote(Arc<MetaLink>),
}

/// One error for every item of a batch whose call failed as a whole.
fn each<T: Clone>(n: usize, r: Result<Vec<Result<T>>>) -> Vec<Result<T>> {
    r.unwrap_or_else(|e| vec![Err(e); n])
}

/// The meta group lost its leader, or the connection dropped: the answer is unknown.
fn unknown<T>(r: &Result<T>) -> bool {
    matches!(r, Err(Error::NotConnectedToMeta))
}

/// Pause between attempts while a new leader takes over.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Runs `call` until no item's answer is unknown, or the retry time (twice the call
/// timeout, at least 3 s: an election and a catch-up) is spent.
async fn repeatable<T, F, Fut>(link: &MetaLink, call: F) -> Vec<Result<T>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Vec<Result<T>>>,
{
    let give_up = Instant::now() + (link.timeout() * 2).max(Duration::from_secs(3));
    loop {
        let out = call().await;
        if !out.iter().any(unknown) || Instant::now() >= give_up {
            return out;
        }
        tracing::debug!("meta call met a leader change; asking again");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// A per-item call over tarpc, asked again while an item's answer is unknown.
async fn repeated_each<T, F, Fut>(link: &MetaLink, n: usize, call: F) -> Vec<Result<T>>
where
    T: Clone,
    F: Fn(MetaRpcClient, Context) -> Fut,
    Fut: Future<Output = std::result::Result<Reply<Vec<Result<T>>>, RpcError>>,
{
    repeatable(link, || async { each(n, link.call(&call).await) }).await
}

impl MetaClient {
    /// Data-plane endpoints of the live local services (none in the embedded pool,
    /// whose segments are all in this process).
    pub async fn endpoints(&self) -> Result<Vec<(LocalServiceId, DataEndpoint)>> {
        match self {
            MetaClient::Embedded(_) => Ok(Vec::new()),
            MetaClient::Remote(link) => {
                link.call(|rpc, ctx| async move { rpc.endpoints(ctx).await })
                    .await
            }
        }
    }

    /// Ids of the pool's segments, where they can be mapped from elsewhere (a remote
    /// pool; `None` for the embedded one).
    pub async fn segment_ids(&self) -> Result<Option<Vec<SegmentId>>> {
        match self {
            MetaClient::Embedded(_) => Ok(None),
            MetaClient::Remote(link) => link
                .call(|rpc, ctx| async move { rpc.segments(ctx).await })
                .await
                .map(|v| Some(v.into_iter().map(|s| s.id).collect())),
        }
    }

    pub async fn remove_service(&self, service: LocalServiceId) -> Result<usize> {
        match self {
            MetaClient::Embedded(pool) => pool.meta().remove_service(service),
            MetaClient::Remote(link) => {
                link.call(|rpc, ctx| async move { rpc.unregister_service(ctx, service).await })
                    .await?
            }
        }
    }

    /// `lease_ms`: how long the puts may write before they are rolled back (0: the
    /// service's put lease). `maps_host`: see [`MetaRpc::alloc`](memcache_proto::MetaRpc).
    pub async fn alloc(
        &self,
        items: Vec<(Key, u64)>,
        config: &ReplicateConfig,
        lease_ms: u64,
        maps_host: Option<String>,
    ) -> Vec<Result<Allocation>> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                pool.meta().alloc_leased(items, config, lease_ms, now)
            }
            MetaClient::Remote(link) => {
                let writer = rand::random::<u64>() | 1;
                repeated_each(link, items.len(), |rpc, ctx| {
                    let (items, config, maps_host) =
                        (items.clone(), config.clone(), maps_host.clone());
                    async move {
                        rpc.alloc(ctx, items, config, writer, lease_ms, maps_host)
                            .await
                    }
                })
                .await
            }
        }
    }

    pub async fn commit(&self, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                pool.meta().commit(items, now)
            }
            MetaClient::Remote(link) => {
                repeated_each(link, items.len(), |rpc, ctx| {
                    let items = items.clone();
                    async move { rpc.commit(ctx, items).await }
                })
                .await
            }
        }
    }

    pub async fn abort(&self, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                pool.meta().abort(items, now)
            }
            MetaClient::Remote(link) => {
                let n = items.len();
                let r = link
                    .call(|rpc, ctx| {
                        let items = items.clone();
                        async move { rpc.abort(ctx, items).await }
                    })
                    .await;
                each(n, r)
            }
        }
    }

    /// Ends the read leases of `release`, then locates `keys` and leases each found
    /// one for `lease_ms` (0: the service's read lease); one call to a remote pool.
    pub async fn lookup(
        &self,
        keys: &[Key],
        lease_ms: u64,
        maps_host: Option<String>,
        release: Vec<(Key, LeaseId)>,
    ) -> Vec<Result<Located>> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                let mut meta = pool.meta();
                meta.release(&release);
                meta.lookup_leased(keys, lease_ms, now)
            }
            MetaClient::Remote(link) => {
                repeated_each(link, keys.len(), |rpc, ctx| {
                    let (keys, maps_host) = (keys.to_vec(), maps_host.clone());
                    let release = release.clone();
                    async move { rpc.lookup(ctx, keys, lease_ms, maps_host, release).await }
                })
                .await
            }
        }
    }

    /// Ends read leases. A failed call only means the leases run out by themselves.
    pub async fn release(&self, leases: Vec<(Key, LeaseId)>) {
        let r = match self {
            MetaClient::Embedded(pool) => {
                pool.meta().release(&leases);
                Ok(())
            }
            MetaClient::Remote(link) => {
                link.call(|rpc, ctx| {
                    let leases = leases.clone();
                    async move { rpc.release(ctx, leases).await }
                })
                .await
            }
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "releasing read leases");
        }
    }

    /// Ends the read leases of `release`, then removes `keys`; one call to a remote
    /// pool. Not repeated when its answer is unknown: a repeat could report -3007 for
    /// a removal that happened.
    pub async fn remove(&self, keys: Vec<Key>, release: Vec<(Key, LeaseId)>) -> Vec<Result<()>> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                let mut meta = pool.meta();
                meta.release(&release);
                meta.remove(keys, now)
            }
            MetaClient::Remote(link) => {
                let n = keys.len();
                let r = link
                    .call(|rpc, ctx| {
                        let (keys, release) = (keys.clone(), release.clone());
                        async move { rpc.remove(ctx, keys, release).await }
                    })
                    .await;
                each(n, r)
            }
        }
    }

    pub async fn exists(&self, keys: &[Key]) -> Vec<Result<bool>> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                pool.meta_read().exists(keys, now)
            }
            MetaClient::Remote(link) => {
                repeated_each(link, keys.len(), |rpc, ctx| {
                    let keys = keys.to_vec();
                    async move { rpc.exists(ctx, keys).await }
                })
                .await
            }
        }
    }

    /// Up to `limit` stored keys starting with `prefix`, in byte order.
    pub async fn list_keys(&self, prefix: &[u8], limit: u32) -> Result<Vec<Key>> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                let keys = pool
                    .meta_read()
                    .state()
                    .keys_with_prefix(prefix, now, limit as usize);
                Ok(memcache_meta::in_order(keys))
            }
            MetaClient::Remote(link) => {
                link.call(|rpc, ctx| {
                    let prefix = prefix.to_vec();
                    async move { rpc.keys(ctx, prefix, limit).await }
                })
                .await
            }
        }
    }

    /// Removes every committed object no reader holds; how many. Not repeated when
    /// its answer is unknown (like `remove`).
    pub async fn remove_all(&self) -> Result<usize> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                Ok(pool.meta().remove_all(now))
            }
            MetaClient::Remote(link) => {
                link.call(|rpc, ctx| async move { rpc.remove_all(ctx).await })
                    .await?
            }
        }
    }

    /// One step of an evict (repeatable: a key done stays done).
    pub async fn evict(&self, keys: &[Key], src: Medium, dst: Medium) -> Vec<Result<TierMove>> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                pool.meta().evict(keys.to_vec(), src, dst, now)
            }
            MetaClient::Remote(link) => {
                repeated_each(link, keys.len(), |rpc, ctx| {
                    let keys = keys.to_vec();
                    async move { rpc.evict(ctx, keys, src, dst).await }
                })
                .await
            }
        }
    }

    /// One step of a prefetch (repeatable).
    pub async fn prefetch(&self, keys: &[Key], src: Medium, dst: Medium) -> Vec<Result<TierMove>> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                pool.meta().prefetch(keys, src, dst, now)
            }
            MetaClient::Remote(link) => {
                repeated_each(link, keys.len(), |rpc, ctx| {
                    let keys = keys.to_vec();
                    async move { rpc.prefetch(ctx, keys, src, dst).await }
                })
                .await
            }
        }
    }

    pub async fn key_info(&self, keys: &[Key]) -> Result<Vec<KeyInfo>> {
        match self {
            MetaClient::Embedded(pool) => {
                let now = pool.clock().now_ms();
                Ok(pool.meta_read().key_info(keys, now))
            }
            MetaClient::Remote(link) => {
                let once = || async {
                    let r = link
                        .call(|rpc, ctx| {
                            let keys = keys.to_vec();
                            async move { rpc.key_info(ctx, keys).await }
                        })
                        .await;
                    vec![r]
                };
                repeatable(link, once).await.remove(0)
            }
        }
    }
}
