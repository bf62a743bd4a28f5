//! The client's view of the meta service: one call per batch, whether the service runs
//! in this process (the embedded pool) or behind tarpc.

use std::sync::Arc;

use memcache_core::{Key, KeyInfo, LocalServiceId, ReplicateConfig, Result};
use memcache_meta::{Allocation, LeaseId, Located, PutId};
use memcache_proto::{DataEndpoint, MetaLink};

use crate::embedded::EmbeddedPool;

#[derive(Clone)]
pub(crate) enum MetaClient {
    Embedded(Arc<EmbeddedPool>),
    /// Reconnects by itself after the meta service restarts.
    Remote(Arc<MetaLink>),
}

/// One error for every item of a batch whose call failed as a whole.
fn each<T: Clone>(n: usize, r: Result<Vec<Result<T>>>) -> Vec<Result<T>> {
    r.unwrap_or_else(|e| vec![Err(e); n])
}

/// The same call to the embedded store (`$store`, at time `$now`) or over tarpc.
macro_rules! call {
    ($self:ident, $store:ident, $now:ident => $local:expr, $rpc:ident, $ctx:ident => $remote:expr) => {
        match $self {
            MetaClient::Embedded(pool) => {
                let $now = pool.clock().now_ms();
                #[allow(unused_mut)] // only some calls change the store
                let mut $store = pool.meta();
                Ok($local)
            }
            MetaClient::Remote(link) => link.call(|$rpc, $ctx| async move { $remote.await }).await,
        }
    };
}

impl MetaClient {
    /// Data-plane endpoints of the live local services (none in the embedded pool,
    /// whose segments are all in this process).
    pub async fn endpoints(&self) -> Result<Vec<(LocalServiceId, DataEndpoint)>> {
        call!(self, _store, _now => Vec::new(), rpc, ctx => rpc.endpoints(ctx))
    }

    pub async fn remove_service(&self, service: LocalServiceId) -> Result<usize> {
        call!(self, store, _now => store.remove_service(service),
            rpc, ctx => rpc.unregister_service(ctx, service))?
    }

    pub async fn alloc(
        &self,
        items: Vec<(Key, u64)>,
        config: &ReplicateConfig,
    ) -> Vec<Result<Allocation>> {
        let n = items.len();
        let config = config.clone();
        each(
            n,
            call!(self, store, now => store.alloc(items, &config, now),
            rpc, ctx => rpc.alloc(ctx, items, config)),
        )
    }

    pub async fn commit(&self, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        let n = items.len();
        each(
            n,
            call!(self, store, now => store.commit(items, now),
            rpc, ctx => rpc.commit(ctx, items)),
        )
    }

    pub async fn abort(&self, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        let n = items.len();
        each(
            n,
            call!(self, store, _now => store.abort(items), rpc, ctx => rpc.abort(ctx, items)),
        )
    }

    pub async fn lookup(&self, keys: &[Key]) -> Vec<Result<Located>> {
        let n = keys.len();
        let owned = keys.to_vec();
        each(
            n,
            call!(self, store, now => store.lookup(keys, now),
            rpc, ctx => rpc.lookup(ctx, owned)),
        )
    }

    /// Ends read leases. A failed call only means the leases run out by themselves.
    pub async fn release(&self, leases: Vec<(Key, LeaseId)>) {
        let r = call!(self, store, _now => store.release(&leases),
            rpc, ctx => rpc.release(ctx, leases));
        if let Err(e) = r {
            tracing::debug!(error = %e, "releasing read leases");
        }
    }

    pub async fn remove(&self, keys: Vec<Key>) -> Vec<Result<()>> {
        let n = keys.len();
        each(
            n,
            call!(self, store, now => store.remove(keys, now), rpc, ctx => rpc.remove(ctx, keys)),
        )
    }

    pub async fn exists(&self, keys: &[Key]) -> Vec<Result<bool>> {
        let owned = keys.to_vec();
        each(
            keys.len(),
            call!(self, store, now => store.exists(keys, now),
            rpc, ctx => rpc.exists(ctx, owned)),
        )
    }

    /// Up to `limit` stored keys starting with `prefix`, in byte order.
    pub async fn list_keys(&self, prefix: &[u8], limit: u32) -> Result<Vec<Key>> {
        let owned = prefix.to_vec();
        call!(self, store, now => store.state().keys_with_prefix(prefix, now, limit as usize),
            rpc, ctx => rpc.keys(ctx, owned, limit))
    }

    pub async fn key_info(&self, keys: &[Key]) -> Result<Vec<KeyInfo>> {
        let owned = keys.to_vec();
        call!(self, store, now => store.key_info(keys, now), rpc, ctx => rpc.key_info(ctx, owned))
    }
}
