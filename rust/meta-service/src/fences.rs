//! Revocation of the TCP data plane's capabilities. A put's capabilities expire at its
//! deadline and a read lease's at its end; once the put is committed (or aborted) or
//! the lease released earlier, the blobs' owners are told with their next heartbeat
//! answers to refuse them. Until every owner confirmed (by acknowledging that answer)
//! the leader keeps the capability fenced: memory freed meanwhile is quarantined (see
//! `memcache_meta::Leader::holds`), and handed back once the fence is gone. Soft state
//! of the leader, like read leases: a new leader fences everything for a while instead.

use std::collections::{BTreeMap, HashMap, VecDeque};

use memcache_core::{Key, LocalServiceId};
use memcache_meta::Cap;
use memcache_proto::Beat;

#[derive(Default)]
pub(crate) struct Fences {
    /// See [`Beat::epoch`].
    epoch: u64,
    /// Capabilities out and not yet ended: key, expiry, owners.
    issued: HashMap<Cap, (Key, u64, Vec<LocalServiceId>)>,
    services: BTreeMap<LocalServiceId, Queue>,
    /// Ended capabilities, with how many owners are yet to confirm their revocation.
    awaiting: HashMap<Cap, (Key, u64, u32)>,
    next_prune_ms: u64,
}

/// One service's revocations: not yet sent, and sent in answer `seq` but not
/// acknowledged (re-sent with every answer until they are).
#[derive(Default)]
struct Queue {
    queued: Vec<(Cap, u64)>,
    unacked: VecDeque<(u64, Vec<(Cap, u64)>)>,
    seq: u64,
}

impl Fences {
    pub fn new(epoch: u64) -> Self {
        Fences {
            epoch,
            ..Fences::default()
        }
    }

    /// `cap` for `key` on `owners` was issued until `expires_ms`.
    pub fn issued(&mut self, cap: Cap, key: &Key, expires_ms: u64, owners: Vec<LocalServiceId>) {
        self.issued.insert(cap, (key.clone(), expires_ms, owners));
    }

    /// `cap` ended (the put was committed or aborted, the lease released): its owners
    /// are to refuse it.
    pub fn ended(&mut self, cap: Cap) {
        let Some((key, expires, owners)) = self.issued.remove(&cap) else {
            return;
        };
        for s in &owners {
            self.services
                .entry(*s)
                .or_default()
                .queued
                .push((cap, expires));
        }
        self.awaiting
            .insert(cap, (key, expires, owners.len() as u32));
    }

    /// A heartbeat of `service` that applied answer `acked`: the answer to give, and
    /// the capabilities every owner has now revoked.
    pub fn beat(&mut self, service: LocalServiceId, acked: (u64, u64)) -> (Beat, Vec<(Key, Cap)>) {
        let q = self.services.entry(service).or_default();
        let acked = if acked.0 == self.epoch { acked.1 } else { 0 };
        let mut confirmed = Vec::new();
        while q.unacked.front().is_some_and(|(seq, _)| *seq <= acked) {
            let (_, caps) = q.unacked.pop_front().expect("checked");
            for (cap, _) in caps {
                if let Some(a) = self.awaiting.get_mut(&cap) {
                    a.2 -= 1;
                    if a.2 == 0 {
                        let (key, _, _) = self.awaiting.remove(&cap).expect("found");
                        confirmed.push((key, cap));
                    }
                }
            }
        }
        if !q.queued.is_empty() {
            q.seq += 1;
            q.unacked.push_back((q.seq, std::mem::take(&mut q.queued)));
        }
        let mut beat = Beat {
            epoch: self.epoch,
            seq: q.seq,
            ..Beat::default()
        };
        for &(cap, expires) in q.unacked.iter().flat_map(|(_, c)| c.iter()) {
            match cap {
                Cap::Put(put) => beat.revoked.push((put, expires)),
                Cap::Read(lease) => beat.released.push((lease, expires)),
            }
        }
        (beat, confirmed)
    }

    /// Forgets what expired by `now_ms` less `margin_ms` (capabilities refused by their
    /// expiry anyway); at most once a second.
    pub fn prune(&mut self, now_ms: u64, margin_ms: u64) {
        if now_ms < self.next_prune_ms {
            return;
        }
        self.next_prune_ms = now_ms.saturating_add(1000);
        let live = |expires: u64| expires.saturating_add(margin_ms) > now_ms;
        self.issued.retain(|_, e| live(e.1));
        self.awaiting.retain(|_, e| live(e.1));
        for q in self.services.values_mut() {
            q.queued.retain(|e| live(e.1));
            for (_, caps) in q.unacked.iter_mut() {
                caps.retain(|e| live(e.1));
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
    fn a_capability_is_unfenced_once_every_owner_acknowledged_its_revocation() {
        let mut f = Fences::new(5);
        let k = Key::new("k").unwrap();
        f.issued(Cap::Put(7), &k, 1000, vec![1, 2]);
        f.issued(Cap::Read(3), &k, 900, vec![1]);
        f.ended(Cap::Put(7));
        f.ended(Cap::Read(3));
        let (b1, done) = f.beat(1, (5, 0));
        assert_eq!((b1.seq, done.len()), (1, 0));
        assert_eq!(
            (b1.revoked.clone(), b1.released.clone()),
            (vec![(7, 1000)], vec![(3, 900)])
        );
        // Not acknowledged yet: sent again; another process's acknowledgement
        // acknowledges nothing.
        let (again, _) = f.beat(1, (5, 0));
        assert_eq!(again.revoked, vec![(7, 1000)]);
        let (again, _) = f.beat(1, (6, again.seq));
        assert_eq!(again.revoked, vec![(7, 1000)]);
        let (_, done) = f.beat(1, (5, b1.seq));
        assert_eq!(
            done,
            vec![(k.clone(), Cap::Read(3))],
            "service 2 has not confirmed the put"
        );
        let (b2, _) = f.beat(2, (5, 0));
        let (b2_next, done) = f.beat(2, (5, b2.seq));
        assert_eq!(done, vec![(k, Cap::Put(7))]);
        assert!(b2_next.revoked.is_empty());
        // Expired entries go.
        f.issued(Cap::Put(8), &Key::new("j").unwrap(), 1000, vec![1]);
        f.ended(Cap::Put(8));
        f.prune(1500, 400);
        assert!(f.beat(1, (5, 0)).0.revoked.is_empty());
    }
}
