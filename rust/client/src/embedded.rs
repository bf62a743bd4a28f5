//! The embedded pool: meta service and data plane in this process, so one binary runs
//! the whole job with no cluster. Clients of one process share one pool.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use memcache_core::{Clock, Result};
use memcache_local::ShmTransport;
use memcache_meta::MetaStore;

// The only place the client links the state machine: the embedded pool runs it in
// this process. Its settings and a local service's registration come with it.
pub use memcache_meta::{Joining, MetaConfig, PolicyKind};

pub struct EmbeddedPool {
    /// Readers of committed objects share it (gets copy in parallel); every change
    /// takes it alone.
    meta: RwLock<MetaStore>,
    clock: Clock,
    transport: Arc<ShmTransport>,
}

impl EmbeddedPool {
    pub fn new(config: MetaConfig, clock: Clock) -> Result<Arc<Self>> {
        Ok(Arc::new(EmbeddedPool {
            meta: RwLock::new(MetaStore::new(config)?),
            clock,
            transport: Arc::default(),
        }))
    }

    /// The process's shared pool, created with `config` if no client holds it now.
    pub fn shared(config: &MetaConfig) -> Result<Arc<Self>> {
        static SHARED: Mutex<Weak<EmbeddedPool>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = slot.upgrade() {
            return Ok(pool);
        }
        let pool = EmbeddedPool::new(config.clone(), Clock::System)?;
        *slot = Arc::downgrade(&pool);
        Ok(pool)
    }

    /// The meta store, locked. A panic while it was held leaves the state as it was
    /// after the last completed command, so the lock is taken back rather than poisoned.
    pub fn meta(&self) -> RwLockWriteGuard<'_, MetaStore> {
        self.meta.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The meta store, shared with other readers (see [`EmbeddedPool::meta`]).
    pub fn meta_read(&self) -> RwLockReadGuard<'_, MetaStore> {
        self.meta.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The meta store alone if no one holds it now: for work worth skipping rather than
    /// waiting for, as marking a read for the eviction policy (memcached, too, skips
    /// an item's LRU bump when its lock is busy).
    pub fn try_meta(&self) -> Option<RwLockWriteGuard<'_, MetaStore>> {
        match self.meta.try_write() {
            Ok(m) => Some(m),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn transport(&self) -> &Arc<ShmTransport> {
        &self.transport
    }
}
