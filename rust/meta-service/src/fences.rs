//! Revocation of the TCP data plane's write capabilities. A put's capabilities expire
//! at its deadline; once it is committed (or aborted) earlier, its blobs' owners are
//! told with their next heartbeat answers to refuse them. Until every owner confirmed
//! (by acknowledging that answer), the leader keeps the put fenced: memory freed
//! meanwhile is quarantined until the deadline (see `memcache_meta::Leader::holds`).
//! Soft state of the leader, like read leases: a new leader fences everything instead.

use std::collections::{BTreeMap, HashMap, VecDeque};

use memcache_core::{Key, LocalServiceId};
use memcache_proto::{Beat, PutId};

#[derive(Default)]
pub(crate) struct Fences {
    /// See [`Beat::epoch`].
    epoch: u64,
    /// Puts with write capabilities out and not yet ended: key, deadline, owners.
    issued: HashMap<PutId, (Key, u64, Vec<LocalServiceId>)>,
    services: BTreeMap<LocalServiceId, Queue>,
    /// Ended puts, with the owners yet to confirm their revocation.
    awaiting: HashMap<PutId, (Key, u64, u32)>,
    next_prune_ms: u64,
}

/// One service's revocations: not yet sent, and sent in answer `seq` but not
/// acknowledged (re-sent with every answer until they are).
#[derive(Default)]
struct Queue {
    queued: Vec<(PutId, u64)>,
    unacked: VecDeque<(u64, Vec<(PutId, u64)>)>,
    seq: u64,
}

impl Fences {
    pub fn new(epoch: u64) -> Self {
        Fences {
            epoch,
            ..Fences::default()
        }
    }

    /// Write capabilities of `put` for `key` on `owners` were issued until `deadline_ms`.
    pub fn issued(&mut self, put: PutId, key: &Key, deadline_ms: u64, owners: Vec<LocalServiceId>) {
        self.issued.insert(put, (key.clone(), deadline_ms, owners));
    }

    /// `put` was committed or aborted: its owners are to refuse its capabilities.
    pub fn ended(&mut self, put: PutId) {
        let Some((key, deadline, owners)) = self.issued.remove(&put) else {
            return;
        };
        for s in &owners {
            self.services
                .entry(*s)
                .or_default()
                .queued
                .push((put, deadline));
        }
        self.awaiting
            .insert(put, (key, deadline, owners.len() as u32));
    }

    /// A heartbeat of `service` that applied answer `acked`: the answer to give, and
    /// the puts every owner has now revoked.
    pub fn beat(
        &mut self,
        service: LocalServiceId,
        acked: (u64, u64),
    ) -> (Beat, Vec<(Key, PutId)>) {
        let q = self.services.entry(service).or_default();
        let acked = if acked.0 == self.epoch { acked.1 } else { 0 };
        let mut confirmed = Vec::new();
        while q.unacked.front().is_some_and(|(seq, _)| *seq <= acked) {
            let (_, puts) = q.unacked.pop_front().expect("checked");
            for (put, _) in puts {
                if let Some(a) = self.awaiting.get_mut(&put) {
                    a.2 -= 1;
                    if a.2 == 0 {
                        let (key, _, _) = self.awaiting.remove(&put).expect("found");
                        confirmed.push((key, put));
                    }
                }
            }
        }
        if !q.queued.is_empty() {
            q.seq += 1;
            q.unacked.push_back((q.seq, std::mem::take(&mut q.queued)));
        }
        let revoked = q
            .unacked
            .iter()
            .flat_map(|(_, p)| p.iter().copied())
            .collect();
        let beat = Beat {
            epoch: self.epoch,
            seq: q.seq,
            revoked,
        };
        (beat, confirmed)
    }

    /// Forgets what expired by `now_ms` less `margin_ms` (capabilities refused by their
    /// expiry anyway); at most once a second.
    pub fn prune(&mut self, now_ms: u64, margin_ms: u64) {
        if now_ms < self.next_prune_ms {
            return;
        }
        self.next_prune_ms = now_ms.saturating_add(1000);
        let live = |deadline: u64| deadline.saturating_add(margin_ms) > now_ms;
        self.issued.retain(|_, e| live(e.1));
        self.awaiting.retain(|_, e| live(e.1));
        for q in self.services.values_mut() {
            q.queued.retain(|e| live(e.1));
            for (_, puts) in q.unacked.iter_mut() {
                puts.retain(|e| live(e.1));
            }
        }
    }

    /// A service left: nothing more to tell it.
    pub fn forget_service(&mut self, service: LocalServiceId) {
        self.services.remove(&service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_is_unfenced_once_every_owner_acknowledged_its_revocation() {
        let mut f = Fences::new(5);
        let k = Key::new("k").unwrap();
        f.issued(7, &k, 1000, vec![1, 2]);
        f.ended(7);
        let (b1, done) = f.beat(1, (5, 0));
        assert_eq!(
            (b1.seq, b1.revoked.clone(), done.len()),
            (1, vec![(7, 1000)], 0)
        );
        // Not acknowledged yet: sent again.
        let (again, _) = f.beat(1, (5, 0));
        // Another process's acknowledgement acknowledges nothing.
        let (again, _) = f.beat(1, (6, again.seq));
        assert_eq!(again.revoked, vec![(7, 1000)]);
        let (_, done) = f.beat(1, (5, b1.seq));
        assert!(done.is_empty(), "service 2 has not confirmed");
        let (b2, _) = f.beat(2, (5, 0));
        let (b2_next, done) = f.beat(2, (5, b2.seq));
        assert_eq!(done, vec![(k, 7)]);
        assert!(b2_next.revoked.is_empty());
        // Expired entries go.
        f.issued(8, &Key::new("j").unwrap(), 1000, vec![1]);
        f.ended(8);
        f.prune(1500, 400);
        assert!(f.beat(1, (5, 0)).0.revoked.is_empty());
    }
}
