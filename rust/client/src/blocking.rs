//! The blocking face of [`ObjectStore`], for threads that are not async (the C, C++ and
//! Python front ends, benchmarks). Each call drives the async call to completion on
//! the calling thread, so the bytes are copied in the caller's thread.

use std::sync::Arc;

use tokio::runtime::Runtime;

use memcache_core::{CopyDirection, Error, Key, KeyInfo, LocalServiceId, ReplicateConfig, Result};

use memcache_core::Medium;

use crate::config::ClientConfig;
use crate::device::DeviceBuf;
use crate::embedded::EmbeddedPool;
use crate::store::ObjectStore;

pub struct BlockingObjectStore {
    rt: Runtime,
    inner: ObjectStore,
}

impl BlockingObjectStore {
    pub fn new(config: ClientConfig) -> Result<Self> {
        Self::wrap(ObjectStore::new(config))
    }

    pub fn with_pool(config: ClientConfig, pool: Arc<EmbeddedPool>) -> Result<Self> {
        Self::wrap(ObjectStore::with_pool(config, pool))
    }

    fn wrap(inner: ObjectStore) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Failed(format!("starting the client runtime: {e}")))?;
        Ok(BlockingObjectStore { rt, inner })
    }

    /// The async store underneath.
    pub fn inner(&self) -> &ObjectStore {
        &self.inner
    }

    /// Runs async work on this store's runtime, e.g. several batch calls of
    /// [`Self::inner`] in flight at once.
    pub fn block_on<F: std::future::Future>(&self, work: F) -> F::Output {
        self.rt.block_on(work)
    }

    pub fn init(&self, device_id: u32, init_bm: bool) -> Result<()> {
        self.rt.block_on(self.inner.init(device_id, init_bm))
    }

    pub fn tear_down(&self) -> Result<()> {
        self.rt.block_on(self.inner.tear_down())
    }

    pub fn get_local_service_id(&self) -> Result<LocalServiceId> {
        self.inner.get_local_service_id()
    }

    pub fn register_buffer(&self, buf: &[u8]) -> Result<()> {
        self.inner.register_buffer(buf)
    }

    pub fn unregister_buffer(&self, buf: &[u8]) -> Result<()> {
        self.inner.unregister_buffer(buf)
    }

    pub fn put(&self, key: impl AsRef<[u8]>, data: &[u8]) -> Result<()> {
        self.rt.block_on(self.inner.put(key, data))
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Vec<u8>> {
        self.rt.block_on(self.inner.get(key))
    }

    /// See [`ObjectStore::get_with`].
    pub fn get_with<B: AsMut<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        alloc: impl FnOnce(usize) -> Result<B>,
    ) -> Result<B> {
        self.rt.block_on(self.inner.get_with(key, alloc))
    }

    pub fn put_from(
        &self,
        key: impl AsRef<[u8]>,
        buf: &[u8],
        direct: CopyDirection,
        config: &ReplicateConfig,
    ) -> Result<()> {
        self.rt
            .block_on(self.inner.put_from(key, buf, direct, config))
    }

    pub fn get_into(
        &self,
        key: impl AsRef<[u8]>,
        buf: &mut [u8],
        direct: CopyDirection,
    ) -> Result<u64> {
        self.rt.block_on(self.inner.get_into(key, buf, direct))
    }

    pub fn batch_put_from<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        bufs: &[&[u8]],
        direct: CopyDirection,
        config: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        self.rt
            .block_on(self.inner.batch_put_from(keys, bufs, direct, config))
    }

    pub fn batch_get_into<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        bufs: &mut [&mut [u8]],
        direct: CopyDirection,
    ) -> Vec<Result<u64>> {
        self.rt
            .block_on(self.inner.batch_get_into(keys, bufs, direct))
    }

    pub fn put_from_layers(
        &self,
        key: impl AsRef<[u8]>,
        layers: &[&[u8]],
        direct: CopyDirection,
        config: &ReplicateConfig,
    ) -> Result<()> {
        self.rt
            .block_on(self.inner.put_from_layers(key, layers, direct, config))
    }

    pub fn get_into_layers(
        &self,
        key: impl AsRef<[u8]>,
        layers: &mut [&mut [u8]],
        direct: CopyDirection,
    ) -> Result<u64> {
        self.rt
            .block_on(self.inner.get_into_layers(key, layers, direct))
    }

    pub fn batch_put_from_layers<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        layers: &[&[&[u8]]],
        direct: CopyDirection,
        config: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        self.rt.block_on(
            self.inner
                .batch_put_from_layers(keys, layers, direct, config),
        )
    }

    pub fn batch_get_into_layers<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        layers: &mut [&mut [&mut [u8]]],
        direct: CopyDirection,
    ) -> Vec<Result<u64>> {
        self.rt
            .block_on(self.inner.batch_get_into_layers(keys, layers, direct))
    }

    /// See [`ObjectStore::batch_put_from_device`].
    pub fn batch_put_from_device<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        objects: &[&[DeviceBuf]],
        config: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        self.rt
            .block_on(self.inner.batch_put_from_device(keys, objects, config))
    }

    /// See [`ObjectStore::batch_get_into_device`].
    pub fn batch_get_into_device<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        objects: &[&[DeviceBuf]],
    ) -> Vec<Result<u64>> {
        self.rt
            .block_on(self.inner.batch_get_into_device(keys, objects))
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<()> {
        self.rt.block_on(self.inner.remove(key))
    }

    pub fn batch_remove<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Result<()>> {
        self.rt.block_on(self.inner.batch_remove(keys))
    }

    pub fn is_exist(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.rt.block_on(self.inner.is_exist(key))
    }

    pub fn batch_is_exist<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Result<bool>> {
        self.rt.block_on(self.inner.batch_is_exist(keys))
    }

    pub fn list_keys(&self, prefix: impl AsRef<[u8]>, limit: u32) -> Result<Vec<Key>> {
        self.rt.block_on(self.inner.list_keys(prefix, limit))
    }

    pub fn get_key_info(&self, key: impl AsRef<[u8]>) -> Result<KeyInfo> {
        self.rt.block_on(self.inner.get_key_info(key))
    }

    pub fn batch_get_key_info<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Result<KeyInfo>> {
        self.rt.block_on(self.inner.batch_get_key_info(keys))
    }

    /// See [`ObjectStore::remove_all`].
    pub fn remove_all(&self) -> Result<usize> {
        self.rt.block_on(self.inner.remove_all())
    }

    /// See [`ObjectStore::evict`].
    pub fn evict<K: AsRef<[u8]>>(&self, keys: &[K], src: Medium, dst: Medium) -> Vec<Result<()>> {
        self.rt.block_on(self.inner.evict(keys, src, dst))
    }

    /// See [`ObjectStore::prefetch`].
    pub fn prefetch<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        src: Medium,
        dst: Medium,
    ) -> Vec<Result<()>> {
        self.rt.block_on(self.inner.prefetch(keys, src, dst))
    }
}
