//! The client's view of the meta service: one call per batch. Today it reaches the
//! embedded pool's store directly; a remote meta service answers the same calls.

use std::sync::Arc;

use memcache_core::{Key, KeyInfo, LocalServiceId, ReplicateConfig, Result, SegmentId};
use memcache_meta::{Allocation, LeaseId, Located, PutId, SegmentSpec};

use crate::embedded::EmbeddedPool;

#[derive(Clone)]
pub(crate) struct MetaClient {
    pool: Arc<EmbeddedPool>,
}

impl MetaClient {
    pub fn embedded(pool: Arc<EmbeddedPool>) -> Self {
        MetaClient { pool }
    }

    pub fn pool(&self) -> &Arc<EmbeddedPool> {
        &self.pool
    }

    fn now(&self) -> u64 {
        self.pool.clock().now_ms()
    }

    pub async fn register_service(
        &self,
        requested: Option<LocalServiceId>,
        device_id: u32,
        segments: Vec<SegmentSpec>,
    ) -> Result<(LocalServiceId, Vec<SegmentId>)> {
        self.pool
            .meta()
            .register_service(requested, device_id, segments)
    }

    pub async fn remove_service(&self, service: LocalServiceId) -> Result<usize> {
        self.pool.meta().remove_service(service)
    }

    pub async fn alloc(
        &self,
        items: Vec<(Key, u64)>,
        config: &ReplicateConfig,
    ) -> Vec<Result<Allocation>> {
        let now = self.now();
        self.pool.meta().alloc(items, config, now)
    }

    pub async fn commit(&self, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        let now = self.now();
        self.pool.meta().commit(items, now)
    }

    pub async fn abort(&self, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        self.pool.meta().abort(items)
    }

    pub async fn lookup(&self, keys: &[Key]) -> Vec<Result<Located>> {
        let now = self.now();
        self.pool.meta().lookup(keys, now)
    }

    pub async fn release(&self, leases: &[(Key, LeaseId)]) {
        self.pool.meta().release(leases)
    }

    pub async fn remove(&self, keys: Vec<Key>) -> Vec<Result<()>> {
        let now = self.now();
        self.pool.meta().remove(keys, now)
    }

    pub async fn exists(&self, keys: &[Key]) -> Vec<Result<bool>> {
        let now = self.now();
        self.pool.meta().exists(keys, now)
    }

    pub async fn key_info(&self, keys: &[Key]) -> Vec<KeyInfo> {
        let now = self.now();
        self.pool.meta().key_info(keys, now)
    }
}
