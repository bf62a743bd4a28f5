//! The embedded pool: meta service and data plane in this process, so one binary runs
//! the whole job with no cluster. Clients of one process share one pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use memcache_core::Result;
use memcache_local::ShmTransport;
use memcache_meta::{MetaConfig, MetaStore};

/// Milliseconds for leases and TTLs. Wall-clock time, so that after a meta failover the
/// new leader's deadlines compare with the old one's.
#[derive(Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Moves only when told; for tests of leases and TTLs.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn manual(start_ms: u64) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; a system clock ignores it.
    pub fn advance_ms(&self, ms: u64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(ms, Ordering::Relaxed);
        }
    }
}

pub struct EmbeddedPool {
    meta: Mutex<MetaStore>,
    clock: Clock,
    transport: ShmTransport,
}

impl EmbeddedPool {
    pub fn new(config: MetaConfig, clock: Clock) -> Result<Arc<Self>> {
        Ok(Arc::new(EmbeddedPool {
            meta: Mutex::new(MetaStore::new(config)?),
            clock,
            transport: ShmTransport::default(),
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

    pub fn transport(&self) -> &ShmTransport {
        &self.transport
    }
}
