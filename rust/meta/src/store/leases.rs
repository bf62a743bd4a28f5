//! Read leases: soft state of the leader, never replicated. Each grant has its own id,
//! so a reader whose lease already ended cannot, by releasing late, end someone else's.
//! Also the fences: until when a data-plane capability issued for a key (a put's or a
//! read lease's) may still be valid, released or not, so that memory freed before then
//! is quarantined rather than reused.

use rustc_hash::FxHashMap;

use memcache_core::Key;
use memcache_proto::{LeaseId, PutId};

/// A data-plane capability: a put's (write) or a read lease's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cap {
    Put(PutId),
    Read(LeaseId),
}

#[derive(Default)]
pub(crate) struct Leases {
    by_key: FxHashMap<Key, Vec<(LeaseId, u64)>>,
    next: LeaseId,
    /// Until then every key counts as held (see [`Leases::hold_all_until`]).
    all_until_ms: u64,
    /// Per key, the capabilities issued for its memory that may still be honoured,
    /// `(capability, expiry)`: a put's until its deadline, a read lease's until its
    /// end, each dropped sooner once every owner revoked it.
    fences: FxHashMap<Key, Vec<(Cap, u64)>>,
    /// Until then every key counts as fenced: a new leader does not know which
    /// capabilities its predecessor issued.
    fenced_all_until_ms: u64,
    /// How far a local service's clock may lag the leader's: a capability is checked
    /// on the local's clock, so its range stays fenced this much past its expiry.
    pub skew_ms: u64,
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

    /// Records that capability `cap` for `key`'s memory was issued until `until_ms`.
    pub fn fence(&mut self, key: &Key, cap: Cap, until_ms: u64) {
        match self.fences.get_mut(key) {
            Some(f) => match f.iter_mut().find(|(c, _)| *c == cap) {
                Some((_, u)) => *u = (*u).max(until_ms),
                None => f.push((cap, until_ms)),
            },
            None => {
                self.fences.insert(key.clone(), vec![(cap, until_ms)]);
            }
        }
    }

    /// Every owner of `key`'s memory refuses `cap` now.
    pub fn unfence(&mut self, key: &Key, cap: Cap) {
        if let Some(f) = self.fences.get_mut(key) {
            f.retain(|(c, _)| *c != cap);
            if f.is_empty() {
                self.fences.remove(key);
            }
        }
    }

    /// Until when (on the leader's clock, skew margin included) a capability issued
    /// for `key` may still be honoured; 0 when none may.
    pub fn fenced_until(&self, key: &Key) -> u64 {
        let issued = self
            .fences
            .get(key)
            .map_or(0, |f| f.iter().map(|&(_, u)| u).max().unwrap_or(0));
        match issued.max(self.fenced_all_until_ms) {
            0 => 0,
            t => t.saturating_add(self.skew_ms),
        }
    }

    /// Treats every key as fenced until `until_ms` (a new term).
    pub fn fence_all_until(&mut self, until_ms: u64) {
        self.fenced_all_until_ms = self.fenced_all_until_ms.max(until_ms);
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

    /// Until when a reader may hold `key` (0: none does now).
    pub fn held_until(&self, key: &Key, now_ms: u64) -> u64 {
        let leased = self
            .by_key
            .get(key)
            .map_or(0, |h| h.iter().map(|&(_, u)| u).max().unwrap_or(0));
        let until = leased.max(self.all_until_ms);
        if until > now_ms {
            until
        } else {
            0
        }
    }

    /// Treats every key as held until `until_ms`: a new leader does not know which
    /// leases its predecessor granted, so for one lease length it frees nothing a
    /// reader might be copying.
    pub fn hold_all_until(&mut self, until_ms: u64) {
        self.all_until_ms = self.all_until_ms.max(until_ms);
    }

    /// Forgets leases that ended (readers that never released), and fences that ended
    /// with their margin.
    pub fn sweep(&mut self, now_ms: u64) {
        let margin_ms = self.skew_ms;
        self.by_key.retain(|_, h| {
            h.retain(|&(_, u)| u > now_ms);
            !h.is_empty()
        });
        self.fences.retain(|_, f| {
            f.retain(|&(_, u)| u.saturating_add(margin_ms) > now_ms);
            !f.is_empty()
        });
    }
}
