//! Read leases: soft state of the leader, never replicated. Each grant has its own id,
//! so a reader whose lease already ended cannot, by releasing late, end someone else's.

use rustc_hash::FxHashMap;

use memcache_core::Key;
use memcache_proto::LeaseId;

#[derive(Default)]
pub(crate) struct Leases {
    by_key: FxHashMap<Key, Vec<(LeaseId, u64)>>,
    next: LeaseId,
    /// Until then every key counts as held (see [`Leases::hold_all_until`]).
    all_until_ms: u64,
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
        now_ms < self.all_until_ms
            || self
                .by_key
                .get(key)
                .is_some_and(|h| h.iter().any(|&(_, u)| u > now_ms))
    }

    /// Treats every key as held until `until_ms`: a new leader does not know which
    /// leases its predecessor granted, so for one lease length it frees nothing a
    /// reader might be copying.
    pub fn hold_all_until(&mut self, until_ms: u64) {
        self.all_until_ms = self.all_until_ms.max(until_ms);
    }

    /// Forgets leases that ended (readers that never released).
    pub fn sweep(&mut self, now_ms: u64) {
        self.by_key.retain(|_, h| {
            h.retain(|&(_, u)| u > now_ms);
            !h.is_empty()
        });
    }
}
