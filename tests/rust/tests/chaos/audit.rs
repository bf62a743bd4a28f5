//! What the history must satisfy, with eviction taken into account.
//!
//! Eviction drops objects nobody removed, so a get that finds nothing after an
//! acknowledged put may be right. To keep "no acknowledged write is lost" checkable,
//! the meta nodes evict oldest-committed first (`eviction_policy = fifo`: the order is
//! replicated, so every leader evicts in the same order) and an object can be evicted
//! only once the pool took enough newer bytes: evicting X means that, with every older
//! unleased object gone, usage was still above the low watermark; usage then counts X,
//! objects committed after X and allocations in flight, which all come from puts
//! invoked before that moment and not finished before X's put began. So from the moment
//! those puts add up to `threshold` bytes (pages × replicas), X may be gone: the
//! history gets a remove of unknown outcome there (the pool's, "client" [`EVICTOR`]);
//! before it, X must be there.

use std::collections::{BTreeMap, HashMap};

use memcache_tests::linearizability::{Event, Op, Ret};

/// The client number of the pool's own (possible) evictions.
pub const EVICTOR: usize = usize::MAX;
const PAGE: u64 = 4096;

/// For every put that may have taken effect, a possible eviction of its key from the
/// first moment it may have been evicted.
pub fn evictions(
    events: &[Event],
    sizes: &HashMap<u64, usize>,
    replicas: u64,
    threshold: u64,
) -> Vec<Event> {
    let bytes = |e: &Event| match e.op {
        Op::Put(id) => {
            sizes
                .get(&id)
                .map_or(0, |&n| (n as u64).div_ceil(PAGE) * PAGE)
                * replicas
        }
        _ => 0,
    };
    let end = |e: &Event| {
        if e.ret == Ret::Unknown {
            u64::MAX
        } else {
            e.returned
        }
    };
    let mut puts: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.op, Op::Put(_)) && matches!(e.ret, Ret::Ok | Ret::Unknown))
        .collect();
    puts.sort_by_key(|e| e.invoked);
    // prefix[i]: bytes of the puts invoked before puts[i].
    let mut prefix = vec![0u64];
    for p in &puts {
        prefix.push(prefix.last().unwrap() + bytes(p));
    }
    // Bytes of puts in flight at each put's invocation (invoked before it, not ended).
    let mut in_flight: BTreeMap<u64, u64> = BTreeMap::new(); // end time -> bytes
    let mut flying = 0u64;
    let mut out = Vec::new();
    let mut i = 0;
    while i < puts.len() {
        // Puts invoked at the same instant are all "at or after" one another.
        let t = puts[i].invoked;
        let group_end = i + puts[i..].iter().take_while(|p| p.invoked == t).count();
        let ended: Vec<u64> = in_flight.range(..=t).map(|(k, _)| *k).collect();
        for k in ended {
            flying -= in_flight.remove(&k).unwrap_or(0);
        }
        for p in &puts[i..group_end] {
            // From t on: what was in flight, plus every put invoked since.
            let need = threshold.saturating_sub(flying);
            let start = prefix[i];
            // First j >= i with prefix[j + 1] - start >= need.
            let j = prefix[i + 1..].partition_point(|&s| s - start < need);
            if let Some(q) = puts.get(i + j) {
                out.push(Event::new(
                    EVICTOR,
                    &p.key,
                    Op::Remove,
                    Ret::Unknown,
                    q.invoked.max(p.invoked),
                    u64::MAX,
                ));
            }
        }
        for p in &puts[i..group_end] {
            *in_flight.entry(end(p)).or_default() += bytes(p);
            flying += bytes(p);
        }
        i = group_end;
    }
    out
}

/// Acknowledged writes that a later read (a get or an exists, the final audit's
/// included) did not find although nothing explains their absence: no remove (of a
/// client, or the pool's possible eviction) that could have taken effect between the
/// put and the read. Per key, the first such read.
pub fn lost_writes(events: &[Event]) -> Vec<Lost> {
    let mut by_key: HashMap<&[u8], Vec<&Event>> = HashMap::new();
    for e in events {
        by_key.entry(&e.key).or_default().push(e);
    }
    let mut lost = Vec::new();
    for (key, evs) in by_key {
        let mut reads: Vec<&&Event> = evs
            .iter()
            .filter(|e| matches!(e.op, Op::Get | Op::Exists) && e.ret == Ret::NotFound)
            .collect();
        reads.sort_by_key(|e| e.invoked);
        for read in reads {
            let acked = evs
                .iter()
                .filter(|e| {
                    matches!(e.op, Op::Put(_)) && e.ret == Ret::Ok && e.returned < read.invoked
                })
                .max_by_key(|e| e.returned);
            let Some(put) = acked else { continue };
            let removed = evs.iter().any(|e| {
                e.op == Op::Remove
                    && matches!(e.ret, Ret::Ok | Ret::Unknown)
                    && e.invoked < read.returned
                    && (e.ret == Ret::Unknown || e.returned > put.invoked)
            });
            if !removed {
                lost.push(Lost {
                    key: key.to_vec(),
                    put_at: put.invoked,
                    line: format!(
                        "{}: {put} acknowledged, then {read}",
                        String::from_utf8_lossy(key)
                    ),
                });
                break;
            }
        }
    }
    lost.sort_by_key(|l| l.put_at);
    lost
}

pub struct Lost {
    pub key: Vec<u8>,
    pub put_at: u64,
    pub line: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, id: u64, inv: u64, ret: Ret, end: u64) -> Event {
        Event::new(0, key.as_bytes(), Op::Put(id), ret, inv, end)
    }

    #[test]
    fn evictable_once_enough_newer_bytes_were_put() {
        let sizes: HashMap<u64, usize> = (1..=5).map(|i| (i, 4096)).collect();
        let events = vec![
            put("a", 1, 10, Ret::Ok, 20),
            put("b", 2, 15, Ret::Ok, 30), // in flight when "c" begins
            put("c", 3, 40, Ret::Ok, 50),
            put("d", 4, 60, Ret::Unknown, 0),
            put("e", 5, 70, Ret::Ok, 80),
        ];
        // One put is 8192 bytes with two replicas; three make the threshold.
        let ev = evictions(&events, &sizes, 2, 3 * 8192);
        let at: HashMap<String, u64> = ev
            .iter()
            .map(|e| (String::from_utf8_lossy(&e.key).into_owned(), e.invoked))
            .collect();
        assert_eq!(at["a"], 40); // a, b, c
        assert_eq!(at["b"], 40); // a (still in flight when b began), b, c
        assert_eq!(at["c"], 70); // c, d, e
                                 // "d" never ends, so it weighs on "e" too: but d and e are only two.
        assert!(!at.contains_key("d") && !at.contains_key("e"));
        assert!(ev
            .iter()
            .all(|e| e.client == EVICTOR && e.ret == Ret::Unknown));
    }

    #[test]
    fn a_read_that_misses_an_acknowledged_put_is_a_loss_unless_a_remove_explains_it() {
        let read =
            |key: &str, op, inv| Event::new(1, key.as_bytes(), op, Ret::NotFound, inv, inv + 5);
        let remove =
            |key: &str, ret, inv, end| Event::new(2, key.as_bytes(), Op::Remove, ret, inv, end);
        let events = vec![
            put("lost", 1, 0, Ret::Ok, 10),
            read("lost", Op::Get, 5), // before the put was acknowledged: fine
            read("lost", Op::Exists, 20),
            put("removed", 2, 0, Ret::Ok, 10),
            remove("removed", Ret::Ok, 12, 14),
            read("removed", Op::Get, 20),
            put("maybe", 3, 0, Ret::Ok, 10),
            remove("maybe", Ret::Unknown, 1, 0),
            read("maybe", Op::Get, 20),
            put("again", 4, 30, Ret::Ok, 40),
            remove("again", Ret::Ok, 12, 14), // before this put
            read("again", Op::Get, 50),
        ];
        let lost: Vec<String> = lost_writes(&events)
            .into_iter()
            .map(|l| String::from_utf8(l.key).unwrap())
            .collect();
        assert_eq!(lost, ["lost", "again"]);
    }
}
