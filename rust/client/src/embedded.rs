//! The embedded pool: meta service and data plane in this process, so one binary runs
//! the whole job with no cluster. Clients of one process share one pool.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use memcache_core::{Clock, Result};
use memcache_local::ShmTransport;
use memcache_meta::MetaStore;

// The only place the client links the state machine: the embedded pool runs it in
// this process. Its settings and a local service's registration come with it.
pub use memcache_meta::{Joining, MetaConfig, PolicyKind};

pub struct EmbeddedPool {
    meta: Mutex<MetaStore>,
    clock: Clock,
    transport: Arc<ShmTransport>,
}

impl EmbeddedPool {
    pub fn new(config: MetaConfig, clock: Clock) -> Result<Arc<Self>> {
        Ok(Arc::new(EmbeddedPool {
            meta: Mutex::new(MetaStore::new(config)?),
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
    pub fn meta(&self) -> MutexGuard<'_, MetaStore> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn transport(&self) -> &Arc<ShmTransport> {
        &self.transport
    }
}
