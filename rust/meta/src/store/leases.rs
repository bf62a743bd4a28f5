//! Read leases: soft state of the leader, never replicated. Each grant has its own id,
//! so a reader whose lease already ended cannot, by releasing late, end someone else's.

use rustc_hash::FxHashMap;

use memcache_core::Key;

pub type LeaseId = u64;

#[derive(Default)]
pub(crate) struct Leases {
    by_key: FxHashMap<Key, Vec<(LeaseId, u64)>>,
    next: LeaseId,
}

impl Leases {
    /// Grants a lease on `key` until `until_ms`.
    pub fn grant(&mut self, key: &Key, until_ms: u64, now_ms: u64) -> LeaseId {
        self.next += 1;
        let holders = self.by_key.entry(key.clone()).or_default();
        holders.retain(|&(_, u)| u > now_ms);
        holders.push((self.next, until_ms));
        self.next
    }

    pub fn release(&mut self, key: &Key, id: LeaseId) {
        if let Some(holders) = self.by_key.get_mut(key) {
            holders.retain(|&(i, _)| i != id);
            if holders.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    /// Whether a reader still holds `key` at `now_ms`.
    pub fn held(&self, key: &Key, now_ms: u64) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|h| h.iter().any(|&(_, u)| u > now_ms))
    }

    /// Forgets leases that ended (readers that never released).
    pub fn sweep(&mut self, now_ms: u64) {
        self.by_key.retain(|_, h| {
            h.retain(|&(_, u)| u > now_ms);
            !h.is_empty()
        });
    }
}
