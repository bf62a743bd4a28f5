//! Pool-wide operations of 1.3.0 decided by the leader: `remove_all`, and the explicit
//! tier moves `evict` (DRAM → SSD) and `prefetch` (SSD → DRAM).
//!
//! - `remove_all` is one decision: every committed object no reader holds, removed by
//!   `Remove` commands (one per [`REMOVE_ALL_CHUNK`] keys, so a huge pool never makes a
//!   log entry too large to replicate). Leased objects stay, as `remove` leaves them
//!   (-3104 there); puts still in flight are not objects yet and stay too, and so do
//!   objects their SSD tier is copying back into memory (it writes that memory until
//!   it reports the copy, so it must not be freed and handed to a new put meanwhile).
//! - `evict` makes sure each object has an SSD replica (its SSD tier is asked to store
//!   it first), then drops its DRAM replicas with a `Demote` command. Until then a key
//!   answers [`TierMove::Waiting`]: the caller asks again (it is idempotent).
//! - `prefetch` queues SSD-only objects for their SSD tier to copy back into DRAM
//!   (`Promote` / `Promoted`, colder objects making room), answering `Waiting` until
//!   a DRAM replica is readable.

use memcache_core::{Error, Key, Medium, Result, MAX_BATCH_OP_COUNT};
use memcache_proto::{check_evict_media, check_prefetch_media, TierMove};

use super::{check_batch, unit_results, Leader, Plan};
use crate::state::{Applied, Command, StateMachine};

/// Most keys of one `Remove` command of a `remove_all`.
pub const REMOVE_ALL_CHUNK: usize = 1 << 16;

/// Most keys queued at once for a service's SSD tier to store first (for `evict`).
const MAX_STORE_FIRST: usize = MAX_BATCH_OP_COUNT;

fn demoted(a: Applied) -> Vec<Result<TierMove>> {
    match a {
        Applied::Demoted(r) => r.into_iter().map(|r| r.map(|()| TierMove::Done)).collect(),
        other => unreachable!("demote gave {other:?}"),
    }
}

fn no_ssd_tier(key: &Key) -> Error {
    Error::OutOfCapacity(format!(
        "no SSD tier on the local service(s) holding {key}: evict needs one"
    ))
}

impl Leader {
    /// The commands removing every committed object no reader holds and no SSD tier
    /// is copying into memory (and expired ones, which count as not found), decided at
    /// once: their keys are doomed together.
    /// [`Applied::Removed`] answers Ok for each object removed.
    pub fn plan_remove_all(&mut self, sm: &StateMachine, now_ms: u64) -> Vec<Plan<()>> {
        let mut keys: Vec<Key> = sm
            .objects()
            .filter(|(k, o)| {
                o.is_committed() && o.staging().is_none() && !self.leases.held(k, now_ms)
            })
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_unstable();
        let held = sm.object_count() - keys.len();
        if held > 0 {
            tracing::debug!(
                held,
                "remove_all leaves objects readers hold or puts in flight"
            );
        }
        keys.chunks(REMOVE_ALL_CHUNK)
            .map(|chunk| {
                let mut plan = Plan::new(chunk.len(), unit_results);
                plan.slots = (0..chunk.len()).collect();
                plan.command = Some(Command::Remove {
                    now_ms,
                    keys: chunk.to_vec(),
                    holds: self.holds(chunk, now_ms),
                });
                plan.doomed = chunk.to_vec();
                self.doom(&plan.doomed);
                plan
            })
            .collect()
    }

    /// One step of an evict from DRAM to SSD: objects with an SSD replica lose their
    /// DRAM replicas (one `Demote` command); the others are handed to their SSD tier
    /// first and answer `Waiting`, as do those a reader holds. Not found: -3007; no
    /// SSD tier on the services holding it: -3013; not in DRAM (but on SSD): done.
    pub fn plan_evict(
        &mut self,
        sm: &StateMachine,
        keys: Vec<Key>,
        src: Medium,
        dst: Medium,
        now_ms: u64,
    ) -> Plan<TierMove> {
        let len = keys.len();
        if let Err(e) = check_batch(len).and(check_evict_media(src, dst)) {
            return Plan::refused(len, e, demoted);
        }
        let mut plan = Plan::new(len, demoted);
        let mut doomed = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let obj = match sm.visible(&key, now_ms) {
                Ok(o) => o,
                Err(e) => {
                    plan.results[i] = Some(Err(e));
                    continue;
                }
            };
            let answer = if !obj.blobs.iter().any(|b| b.medium == Medium::Dram) {
                if obj.on_ssd() {
                    Ok(TierMove::Done)
                } else {
                    Err(Error::invalid(format!(
                        "{key} has no DRAM replica to evict"
                    )))
                }
            } else if obj.on_ssd() {
                if self.leases.held(&key, now_ms) {
                    Ok(TierMove::Waiting(Error::LeaseNotExpired))
                } else {
                    plan.slots.push(i);
                    doomed.push(key);
                    continue;
                }
            } else {
                match sm.store_target_of(&key) {
                    None => Err(no_ssd_tier(&key)),
                    Some(service) => {
                        let too_big = sm
                            .ssd_segment_of(service)
                            .and_then(|s| sm.segment(s))
                            .is_none_or(|s| obj.size > s.capacity());
                        if too_big {
                            Err(Error::OutOfCapacity(format!(
                                "{key} is larger than the SSD tier of local service {service}"
                            )))
                        } else {
                            let queue = self.store_first.entry(service).or_default();
                            if !queue.contains(&key) && queue.len() < MAX_STORE_FIRST {
                                queue.push(key.clone());
                            }
                            Ok(TierMove::Waiting(Error::Timeout(format!(
                                "{key} is not on SSD yet"
                            ))))
                        }
                    }
                }
            };
            plan.results[i] = Some(answer);
        }
        if !doomed.is_empty() {
            self.doom(&doomed);
            plan.command = Some(Command::Demote {
                now_ms,
                keys: doomed.clone(),
                holds: self.holds(&doomed, now_ms),
            });
            plan.doomed = doomed;
        }
        plan
    }

    /// One step of a prefetch from SSD to DRAM: objects only on SSD are queued for
    /// their SSD tier to copy back into DRAM (colder objects make room) and answer
    /// `Waiting` until the copy is readable. Not found: -3007; in DRAM already: done.
    /// Changes nothing replicated by itself: the SSD tier's next round does.
    pub fn plan_prefetch(
        &mut self,
        sm: &StateMachine,
        keys: &[Key],
        src: Medium,
        dst: Medium,
        now_ms: u64,
    ) -> Vec<Result<TierMove>> {
        if let Err(e) = check_batch(keys.len()).and(check_prefetch_media(src, dst)) {
            return vec![Err(e); keys.len()];
        }
        keys.iter()
            .map(|key| {
                let obj = sm.visible(key, now_ms)?;
                if obj.blobs.iter().any(|b| b.medium == Medium::Dram) {
                    return Ok(TierMove::Done);
                }
                if obj.in_memory() {
                    return Err(Error::invalid(format!("{key} is in HBM, not on SSD")));
                }
                let Some(ssd) = obj.blobs.iter().find(|b| b.medium == Medium::Ssd) else {
                    return Err(Error::invalid(format!("{key} has no SSD replica")));
                };
                let waiting =
                    TierMove::Waiting(Error::Timeout(format!("{key} is not back in DRAM yet")));
                if obj.staging().is_some() {
                    return Ok(waiting);
                }
                let queue = self.to_promote.entry(ssd.service).or_default();
                if !queue.contains(key) {
                    queue.push(key.clone());
                }
                Ok(waiting)
            })
            .collect()
    }
}
