//! Linearizability checker for histories of the object store (put/get/exists/remove by
//! key).
//!
//! Why: while clients run concurrently and the metadata leader is killed, the only sound
//! oracle is "some order of the ops that respects real time is legal for the sequential
//! model". Linearizability is compositional, so each key is checked on its own, with the
//! Wing & Gong / Lowe search (WGL) memoizing (set of linearized ops, model state).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// An operation on one key. A put's value is an opaque id of the bytes written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Put(u64),
    Get,
    Remove,
    /// Whether the key holds a visible object.
    Exists,
}

/// What the client saw. A get that found nothing, and an exists that answered false,
/// are `NotFound`; an exists that answered true is `Present`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    Ok,
    Duplicated,
    NotFound,
    /// A remove refused because a reader holds a lease: needs the key present, changes nothing.
    Busy,
    Value(u64),
    Present,
    /// Timeout, lost connection or lost leader: the op may take effect at any time after its
    /// invocation, or never. Its `returned` time is ignored (treated as infinity).
    Unknown,
}

/// One call. Times are nanoseconds on one clock shared by all clients ([`History::now`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub client: usize,
    pub key: Vec<u8>,
    pub op: Op,
    pub ret: Ret,
    pub invoked: u64,
    pub returned: u64,
}

impl Event {
    pub fn new(client: usize, key: &[u8], op: Op, ret: Ret, invoked: u64, returned: u64) -> Self {
        let key = key.to_vec();
        Self {
            client,
            key,
            op,
            ret,
            invoked,
            returned,
        }
    }

    /// Why: an indeterminate op never bounds when other ops may be ordered.
    fn end(&self) -> u64 {
        if self.ret == Ret::Unknown {
            u64::MAX
        } else {
            self.returned
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, op, ret, inv) = (self.client, self.op, self.ret, self.invoked);
        write!(f, "client {c} {op:?} -> {ret:?} in [{inv}, ")?;
        match ret {
            Ret::Unknown => write!(f, "never]"),
            _ => write!(f, "{}]", self.returned),
        }
    }
}

/// Thread-safe recorder; times are nanoseconds since `new()`.
#[derive(Debug)]
pub struct History {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

/// A call in flight, from [`History::begin`]. End every call that may have reached the
/// server (with `Ret::Unknown` if nothing better is known): a dropped put would make later
/// reads of its value look like reads of a value never written.
#[must_use]
#[derive(Debug)]
pub struct Pending(Event);

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since this history was created.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Call just before sending the request.
    pub fn begin(&self, client: usize, key: &[u8], op: Op) -> Pending {
        let now = self.now();
        Pending(Event::new(client, key, op, Ret::Unknown, now, u64::MAX))
    }

    /// Call just after the reply (or the give-up) arrives.
    pub fn end(&self, p: Pending, ret: Ret) {
        let returned = self.now();
        self.record(Event {
            ret,
            returned,
            ..p.0
        });
    }

    pub fn record(&self, ev: Event) {
        self.lock().push(ev);
    }

    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        // Why: a panicking client thread must not hide the history from the checker.
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn check(&self) -> Result<(), Violation> {
        check(&self.events())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    NotLinearizable,
    /// The search hit its cap on explored states: no verdict.
    TooLarge {
        explored: usize,
    },
}

/// Why a key's history failed. For `NotLinearizable`, `state` and `stuck` describe the
/// deepest partial linearization found (`linearized` of `ops` completed ops): none of the
/// completed ops in `stuck` can legally go next from `state`.
#[derive(Clone, Debug)]
pub struct Violation {
    pub key: Vec<u8>,
    pub kind: ViolationKind,
    pub ops: usize,
    pub linearized: usize,
    pub state: Option<u64>,
    pub stuck: Vec<Event>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, n) = (String::from_utf8_lossy(&self.key), self.ops);
        write!(f, "key {key:?}: ")?;
        if let ViolationKind::TooLarge { explored } = self.kind {
            return write!(f, "too large to check ({n} ops, {explored} states)");
        }
        let (done, state) = (self.linearized, self.state);
        write!(f, "not linearizable: after {done} of {n} completed ops")?;
        write!(f, " the value is {state:?}, and none of these can go next:")?;
        self.stuck.iter().try_for_each(|e| write!(f, "\n  {e}"))
    }
}

impl std::error::Error for Violation {}

/// Default cap on memoized states per key (each about 100 bytes for a few hundred ops);
/// past it the key is reported `TooLarge` instead of searching on.
pub const MAX_STATES: usize = 1_000_000;

/// Checks every key independently; reports the first failing key in key order.
pub fn check(events: &[Event]) -> Result<(), Violation> {
    check_with_limit(events, MAX_STATES)
}

pub fn check_with_limit(events: &[Event], max_states: usize) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&[u8], Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_key.entry(&e.key).or_default().push(e);
    }
    by_key
        .into_iter()
        .try_for_each(|(k, ops)| check_key(k, ops, max_states))
}

/// The sequential model of one key: the state after `op` answered `ret`, or None if that
/// answer is impossible from `state`. `Unknown` takes whatever effect the model gives.
fn step(state: Option<u64>, op: Op, ret: Ret) -> Option<Option<u64>> {
    use Ret::*;
    match (op, ret, state) {
        (Op::Put(v), Ok | Unknown, None) => Some(Some(v)),
        (Op::Put(_), Duplicated | Unknown, Some(_)) => Some(state),
        (Op::Get, Value(v), Some(c)) if v == c => Some(state),
        (Op::Get, NotFound, None) | (Op::Get, Unknown, _) => Some(state),
        (Op::Exists, Present, Some(_)) | (Op::Exists, NotFound, None) => Some(state),
        (Op::Exists, Unknown, _) => Some(state),
        (Op::Remove, Ok | Unknown, Some(_)) => Some(None),
        (Op::Remove, Busy, Some(_)) | (Op::Remove, NotFound | Unknown, None) => Some(state),
        _ => None,
    }
}

fn check_key(key: &[u8], mut ops: Vec<&Event>, max_states: usize) -> Result<(), Violation> {
    // An unknown read changes nothing and constrains nothing.
    ops.retain(|e| !(matches!(e.op, Op::Get | Op::Exists) && e.ret == Ret::Unknown));
    ops.sort_by_key(|e| (e.invoked, e.end()));
    let ops = &ops[..];
    // Values no get ever returned are indistinguishable: merging them into one value lets
    // the memo and the symmetry rule below treat such puts alike.
    let mut seen = HashSet::new();
    for e in ops {
        if let Ret::Value(v) = e.ret {
            seen.insert(v);
        }
    }
    let other = (0..u64::MAX)
        .find(|v| !seen.contains(v))
        .unwrap_or(u64::MAX);
    let canon = |i: usize| match ops[i].op {
        Op::Put(v) if !seen.contains(&v) => Op::Put(other),
        op => op,
    };
    let (n, known) = (ops.len(), |i: usize| ops[i].ret != Ret::Unknown);
    let goal = (0..n).filter(|&i| known(i)).count();
    let bit = |d: &[u64], i: usize| d[i / 64] >> (i % 64) & 1 == 1;
    // Real time: an op may go next only if no pending op returned before it was invoked.
    // Ops are sorted by invocation, so those candidates are a prefix of the pending ones.
    let candidates = |d: &[u64]| {
        let pending = (0..n).filter(|&i| !bit(d, i));
        let min_end = pending.clone().map(|i| ops[i].end()).min();
        let cands = pending.take_while(|&i| Some(ops[i].invoked) <= min_end);
        cands.collect::<Vec<_>>()
    };
    let fail = |kind, (linearized, state), stuck| {
        let (key, ops) = (key.to_vec(), goal);
        Err(Violation {
            key,
            kind,
            ops,
            linearized,
            state,
            stuck,
        })
    };
    let start = (vec![0u64; n.div_ceil(64)], None);
    let mut visited = HashSet::from([start.clone()]);
    let mut stack = vec![(start.clone(), 0)];
    let mut best = (start, 0);
    while let Some(((done, state), count)) = stack.pop() {
        if count == goal {
            return Ok(());
        }
        if count > best.1 {
            best = ((done.clone(), state), count);
        }
        let (mut next, mut unknown_seen) = (Vec::new(), Vec::new());
        for i in candidates(&done) {
            let (op, ret) = (canon(i), ops[i].ret);
            if ret == Ret::Unknown {
                // Unknown ops with the same op are interchangeable: try only the earliest
                // invoked one, as it may go wherever a later one could.
                if unknown_seen.contains(&op) {
                    continue;
                }
                unknown_seen.push(op);
            }
            let Some(s) = step(state, op, ret) else {
                continue;
            };
            if ret == Ret::Unknown && s == state {
                continue; // without effect, it is the same as never happening
            }
            if ret != Ret::Unknown && s == state {
                // A legal completed op that keeps the state can always go first: moving it to
                // the front of any valid continuation keeps that continuation valid.
                next = vec![(i, s)];
                break;
            }
            next.push((i, s));
        }
        for (i, s) in next.into_iter().rev() {
            let mut d = done.clone();
            d[i / 64] |= 1 << (i % 64);
            if visited.insert((d.clone(), s)) {
                if visited.len() > max_states {
                    let explored = visited.len();
                    return fail(ViolationKind::TooLarge { explored }, (best.1, None), vec![]);
                }
                stack.push(((d, s), count + usize::from(known(i))));
            }
        }
    }
    let ((done, state), linearized) = best;
    let stuck = candidates(&done)
        .into_iter()
        .filter(|&i| known(i))
        .map(|i| ops[i].clone())
        .collect();
    fail(ViolationKind::NotLinearizable, (linearized, state), stuck)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Op::{Exists, Get, Put, Remove};
    use Ret::*;

    /// Parses "OP RET INVOKED RETURNED; ..." on key "k", client = position. OP: pN, g, r,
    /// e (exists); RET: ok, dup, nf, busy, yes (present), vN, ? (unknown).
    fn hist(s: &str) -> Vec<Event> {
        let num = |t: &str| t[1..].parse().unwrap();
        let parse = |(client, e): (usize, &str)| {
            let w: Vec<&str> = e.split_whitespace().collect();
            let op = match w[0] {
                "g" => Get,
                "r" => Remove,
                "e" => Exists,
                p => Put(num(p)),
            };
            let ret = match w[1] {
                "ok" => Ok,
                "dup" => Duplicated,
                "nf" => NotFound,
                "busy" => Busy,
                "yes" => Present,
                "?" => Unknown,
                v => Value(num(v)),
            };
            let (invoked, returned) = (w[2].parse().unwrap(), w[3].parse().unwrap());
            Event::new(client, b"k", op, ret, invoked, returned)
        };
        s.split(';').enumerate().map(parse).collect()
    }
    fn ok(s: &str) -> bool {
        check(&hist(s)).is_ok()
    }

    #[test]
    fn sequential_and_concurrent_legal_histories_pass() {
        assert!(ok(
            "g nf 0 1; p1 ok 2 3; p2 dup 4 5; g v1 6 7; r ok 8 9; r nf 10 11; p3 ok 12 13"
        ));
        // Reads during a long put may see it from any one switch-over point on.
        assert!(ok("p1 ok 0 100; g nf 10 20; g v1 30 40; g v1 50 60"));
        // Overlapping ops may be ordered against their invocation order.
        assert!(ok("g v1 0 10; p1 ok 5 8"));
        assert!(ok("p1 ok 0 1; r busy 2 3; g v1 4 5"));
        assert!(ok("p1 ok 0 10; r ok 0 30; p2 ok 5 40"));
        assert!(ok(
            "e nf 0 1; p1 ok 2 3; e yes 4 5; r ok 6 7; e nf 8 9; e ? 10 11"
        ));
        assert!(ok("p1 ok 0 100; e yes 10 20; g v1 30 40"));
    }

    #[test]
    fn stale_lost_invented_and_double_writes_fail() {
        let err = check(&hist("p1 ok 0 10; g nf 20 30")).unwrap_err();
        assert_eq!(err.kind, ViolationKind::NotLinearizable);
        let msg = err.to_string();
        assert!(
            msg.contains("key \"k\"") && msg.contains("client 1 Get -> NotFound"),
            "{msg}"
        );
        assert!(!ok("p1 ok 0 1; r ok 2 3; p2 ok 4 5; g v1 6 7"));
        assert!(!ok("p1 ok 0 1; g v2 2 3"));
        assert!(!ok("g v9 0 1"));
        // Once a concurrent put is seen, it cannot be unseen.
        assert!(!ok("p1 ok 0 100; g v1 10 20; g nf 30 40"));
        assert!(!ok("r busy 0 1"));
        assert!(!ok("p1 ok 0 1; e nf 2 3"));
        assert!(!ok("e yes 0 1"));
        assert!(!ok("p1 ok 0 100; e yes 10 20; g nf 30 40"));
        assert!(!ok("p1 ok 0 10; p2 ok 20 30"));
        assert!(!ok("p1 ok 0 10; p2 ok 5 15"));
    }

    #[test]
    fn unknown_ops_may_land_late_or_never_but_not_early() {
        assert!(ok("p1 ? 0 5; g nf 100 110; g v1 200 210"));
        assert!(ok("p1 ? 0 5; g nf 100 110"));
        assert!(!ok("g v1 0 10; p1 ? 50 60"));
        assert!(!ok("p1 ? 0 5; g v1 10 20; g nf 30 40"));
        assert!(ok("p1 ok 0 1; r ? 2 3; g v1 4 5; g nf 6 7; p2 ok 8 9"));
        assert!(ok("g ? 0 1; g v1 4 5; p1 ? 3 4"));
        // Two unknown removes may take effect at different times.
        assert!(ok(
            "p1 ok 0 1; r ? 2 3; r ? 2 3; g nf 4 5; p1 ok 6 7; g nf 8 9; p2 ok 9 10"
        ));
        assert!(!ok("p1 ok 0 1; r ? 2 3; g nf 4 5; p1 ok 6 7; g nf 8 9"));
    }

    #[test]
    fn keys_are_checked_independently_and_cap_is_reported() {
        let mut h = hist("p1 ok 0 10; g v1 20 30");
        let other = |e: &Event| Event {
            key: b"other".to_vec(),
            ..e.clone()
        };
        h.push(other(&hist("g nf 40 50")[0]));
        assert!(check(&h).is_ok());
        h.push(other(&hist("g v1 60 70")[0]));
        assert_eq!(check(&h).unwrap_err().key, b"other");
        // Many concurrent unknown puts, each read, and an impossible read: the state space
        // explodes (any subset of the puts may have happened).
        let big = (0..40).map(|i| format!("p{i} ? 0 0; r ? 0 0; g v{i} 10 20"));
        let mut big: Vec<String> = big.collect();
        big.push("g v1000 10 20".into());
        let err = check_with_limit(&hist(&big.join(";")), 1000).unwrap_err();
        assert!(err.to_string().contains("too large to check"), "{err}");
    }

    /// splitmix64: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        }
    }

    /// Independent model for the generator and the oracle: the answer and the next state.
    fn model(state: Option<u64>, op: Op) -> (Ret, Option<u64>) {
        match (op, state) {
            (Put(v), None) => (Ok, Some(v)),
            (Put(_), Some(_)) => (Duplicated, state),
            (Get, Some(v)) => (Value(v), state),
            (Exists, Some(_)) => (Present, state),
            (Get, None) | (Remove, None) | (Exists, None) => (NotFound, None),
            (Remove, Some(_)) => (Ok, None),
        }
    }

    /// A random history, linearizable by construction: op i takes effect at 10*i + 5, inside
    /// its interval. Some ops end Unknown, having taken effect or not; some removes are Busy.
    fn linearizable(rng: &mut Rng, ops: usize, keys: u64, max_spread: u64) -> Vec<Event> {
        let spread = 1 + rng.below(max_spread);
        let mut states = vec![None; keys as usize];
        let mut h = Vec::new();
        for i in 0..ops {
            let (k, t) = (rng.below(keys), 10 * i as u64 + 5);
            let op = [Put(rng.below(3)), Get, Remove, Exists][rng.below(4) as usize];
            let st = &mut states[k as usize];
            let (mut ret, next) = model(*st, op);
            if !matches!(op, Get | Exists) && rng.below(12) == 0 {
                ret = Unknown; // never took effect
            } else if op == Remove && ret == Ok && rng.below(6) == 0 {
                ret = Busy;
            } else {
                *st = next;
                if !matches!(op, Get | Exists) && rng.below(8) == 0 {
                    ret = Unknown;
                }
            }
            let (invoked, returned) = (t.saturating_sub(rng.below(spread)), t + rng.below(spread));
            let key = [b'a' + k as u8];
            h.push(Event::new(i % 7, &key, op, ret, invoked, returned));
        }
        h
    }

    /// Brute force: every order of all completed ops plus any unknown ones, with real time
    /// checked pair by pair.
    fn oracle(h: &[Event], seq: &mut Vec<usize>, state: Option<u64>) -> bool {
        let goal = h.iter().filter(|e| e.ret != Unknown).count();
        if seq.iter().filter(|&&i| h[i].ret != Unknown).count() == goal {
            return true;
        }
        for (i, e) in h.iter().enumerate() {
            if seq.contains(&i) || seq.iter().any(|&j| e.end() < h[j].invoked) {
                continue;
            }
            let (r, s) = model(state, e.op);
            let s = match e.ret {
                Busy if e.op == Remove && state.is_some() => state,
                r2 if r2 == r || r2 == Unknown => s,
                _ => continue,
            };
            seq.push(i);
            let found = oracle(h, seq, s);
            seq.pop();
            if found {
                return true;
            }
        }
        false
    }

    fn mutate(rng: &mut Rng, h: &mut [Event]) {
        let i = rng.below(h.len() as u64) as usize;
        let rets = [
            Ok,
            Duplicated,
            NotFound,
            Busy,
            Value(rng.below(3)),
            Present,
            Unknown,
        ];
        h[i].ret = rets[rng.below(7) as usize];
    }

    #[test]
    fn random_small_histories_agree_with_brute_force() {
        let mut rng = Rng(7);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..4000 {
            let n = 1 + rng.below(8) as usize;
            let mut h = linearizable(&mut rng, n, 1, 40);
            if rng.below(2) == 0 {
                mutate(&mut rng, &mut h);
            }
            let expect = oracle(&h, &mut Vec::new(), None);
            assert_eq!(check(&h).is_ok(), expect, "{h:#?}");
            *(if expect { &mut yes } else { &mut no }) += 1;
        }
        assert!(yes > 1000 && no > 500, "{yes} accepted, {no} rejected");
    }

    #[test]
    fn random_large_histories_pass_and_mutations_do_not_panic() {
        let mut rng = Rng(42);
        for _ in 0..20 {
            let mut h = linearizable(&mut rng, 600, 3, 60);
            check(&h).unwrap_or_else(|v| panic!("{v}"));
            mutate(&mut rng, &mut h);
            let _ = check_with_limit(&h, 50_000).map_err(|v| v.to_string());
        }
    }
}
