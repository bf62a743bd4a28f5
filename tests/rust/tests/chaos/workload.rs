//! The clients' mixed workload, every call recorded for the checker:
//! - `lin/N`: a few small, hot keys, put by one owner each (a put of a key another
//!   writer holds uncommitted answers -3006, which no sequential order explains), read,
//!   tested and removed by everyone;
//! - `bulk/C/N`: larger objects, each put once, in batches (the eviction pressure), then
//!   read, tested and removed in batches by anyone;
//! - `probe/N`: the nemesis's put + get after each fault (see [`probe`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memcache_tests::linearizability::{History, Op, Ret};

use crate::pool::Client;

pub const LIN_KEYS: usize = 32;
pub const LIN_BYTES: (usize, usize) = (1 << 10, 6 << 10);
pub const BULK_BYTES: (usize, usize) = (16 << 10, 96 << 10);
pub const MAX_VALUE: usize = BULK_BYTES.1;
const PROBE_BYTES: usize = 4096;
/// After a put of an owned key ends unknown, the owner waits this long before putting
/// it again, so its first allocation was committed or rolled back (the meta nodes'
/// put lease, plus a margin).
pub const PUT_LEASE: Duration = Duration::from_secs(4);
const TAINT: Duration = Duration::from_secs(6);
/// Pause between one client's calls, so the meta nodes keep some CPU for elections
/// on a small machine.
const THINK: Duration = Duration::from_millis(4);

/// What the clients share: the history, what each put wrote, the bulk keys that
/// exist, and when each client was last served.
pub struct Shared {
    pub history: History,
    pub stop: AtomicBool,
    /// Bytes of each put's value, by value id.
    pub sizes: Mutex<HashMap<u64, usize>>,
    known: Mutex<VecDeque<String>>,
    /// History times at which each client's calls were answered (all keys known).
    pub served: Mutex<Vec<Vec<u64>>>,
    /// Every key ever written, for the final audit.
    pub keys: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(clients: usize) -> Arc<Shared> {
        Arc::new(Shared {
            history: History::new(),
            stop: AtomicBool::new(false),
            sizes: Mutex::new(HashMap::new()),
            known: Mutex::new(VecDeque::new()),
            served: Mutex::new(vec![Vec::new(); clients]),
            keys: Mutex::new((0..LIN_KEYS).map(|k| format!("lin/{k}")).collect()),
        })
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first time client `c` was served at or after history time `t`.
    pub fn served_after(&self, c: usize, t: u64) -> Option<u64> {
        Self::lock(&self.served)[c]
            .iter()
            .find(|&&s| s >= t)
            .copied()
    }
}

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn range(&mut self, (lo, hi): (usize, usize)) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One client's calls through its process, recorded.
pub struct Caller {
    pub c: usize,
    pub client: Client,
    shared: Arc<Shared>,
    next_id: u64,
    /// The words of the last answer, as the client process gave them.
    last_answer: Vec<String>,
}

impl Caller {
    pub fn new(c: usize, client: Client, shared: Arc<Shared>) -> Caller {
        Caller {
            c,
            client,
            shared,
            next_id: 0,
            last_answer: Vec::new(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        (self.c as u64 + 1) << 40 | self.next_id
    }

    /// One batch call: `op` on each key; returns what each key answered.
    fn call(&mut self, verb: &str, keys: &[String], ops: &[Op], words: &str) -> Vec<Ret> {
        let h = &self.shared.history;
        let pending: Vec<_> = keys
            .iter()
            .zip(ops)
            .map(|(k, op)| h.begin(self.c, k.as_bytes(), *op))
            .collect();
        let answer = self.client.call(&format!("{verb} {words}"));
        assert_eq!(answer.len(), keys.len(), "{verb} {words}: {answer:?}");
        let rets: Vec<Ret> = answer.iter().map(|a| ret(verb, a)).collect();
        for (p, r) in pending.into_iter().zip(&rets) {
            h.end(p, *r);
        }
        self.last_answer = answer;
        if rets.iter().all(|r| *r != Ret::Unknown) {
            let now = h.now();
            Shared::lock(&self.shared.served)[self.c].push(now);
        }
        rets
    }

    /// Puts fresh values; each key's answer and the id of the value it was given.
    pub fn put(&mut self, keys: &[String], sizes: &[usize]) -> Vec<(Ret, u64)> {
        let ids: Vec<u64> = keys.iter().map(|_| self.id()).collect();
        {
            let mut s = Shared::lock(&self.shared.sizes);
            for (id, size) in ids.iter().zip(sizes) {
                s.insert(*id, *size);
            }
        }
        let words: Vec<String> = keys
            .iter()
            .zip(&ids)
            .zip(sizes)
            .map(|((k, id), n)| format!("{k} {id} {n}"))
            .collect();
        let ops: Vec<Op> = ids.iter().map(|id| Op::Put(*id)).collect();
        let rets = self.call("put", keys, &ops, &words.join(" "));
        rets.into_iter().zip(ids).collect()
    }

    pub fn read(&mut self, verb: &str, keys: &[String]) -> Vec<Ret> {
        let op = match verb {
            "get" => Op::Get,
            "has" => Op::Exists,
            "rm" => Op::Remove,
            other => panic!("unknown verb {other}"),
        };
        self.call(verb, keys, &vec![op; keys.len()], &keys.join(" "))
    }
}

/// The checker's view of one key's answer.
fn ret(verb: &str, word: &str) -> Ret {
    match (verb, word) {
        ("put" | "rm", "0") => Ret::Ok,
        ("put", "-3006") => Ret::Duplicated,
        ("rm", "-3104") => Ret::Busy,
        ("get" | "rm", "-3007") | ("has", "0") => Ret::NotFound,
        ("has", "1") => Ret::Present,
        // Bytes no put wrote: a value id nobody uses, which the checker rejects.
        ("get", "x") => Ret::Value(u64::MAX),
        ("get", v) if v.starts_with('v') => Ret::Value(v[1..].parse().expect("a value id")),
        _ => Ret::Unknown,
    }
}

/// Client `c`'s calls until `stop`. `clients` run in all; `seed` makes it repeatable
/// (as far as timing lets it).
pub fn run(mut me: Caller, clients: usize, seed: u64) {
    let c = me.c;
    let shared = me.shared.clone();
    let mut rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut tainted: HashMap<usize, Instant> = HashMap::new();
    let mut seq = 0u64;
    let lin = |k: usize| format!("lin/{k}");
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(THINK);
        let roll = rng.below(100);
        if rng.chance(55) {
            // A hot key.
            let k = rng.below(LIN_KEYS as u64) as usize;
            let owned = k % clients == c;
            if owned && roll < 35 && tainted.get(&k).is_none_or(|t| t.elapsed() > TAINT) {
                let r = me.put(&[lin(k)], &[rng.range(LIN_BYTES)]);
                if r[0].0 == Ret::Unknown {
                    tainted.insert(k, Instant::now());
                }
                continue;
            }
            let n = 1 + rng.below(3) as usize;
            let keys: Vec<String> = (0..n)
                .map(|_| lin(rng.below(LIN_KEYS as u64) as usize))
                .collect();
            let mut keys = keys;
            keys.dedup();
            let verb = match roll {
                0..=59 => "get",
                60..=79 => "has",
                _ => "rm",
            };
            me.read(verb, &keys);
        } else if roll < 40 {
            let n = 4 + rng.below(5) as usize;
            let keys: Vec<String> = (0..n)
                .map(|_| {
                    seq += 1;
                    format!("bulk/{c}/{seq}")
                })
                .collect();
            let sizes: Vec<usize> = keys.iter().map(|_| rng.range(BULK_BYTES)).collect();
            Shared::lock(&shared.keys).extend(keys.iter().cloned());
            let rets = me.put(&keys, &sizes);
            let mut known = Shared::lock(&shared.known);
            for (k, (r, _)) in keys.into_iter().zip(rets) {
                if r == Ret::Ok {
                    known.push_back(k);
                }
            }
            while known.len() > 400 {
                known.pop_front();
            }
        } else {
            let n = 2 + rng.below(5) as usize;
            let keys: Vec<String> = {
                let known = Shared::lock(&shared.known);
                if known.is_empty() {
                    continue;
                }
                let mut ks: Vec<String> = (0..n)
                    .map(|_| known[rng.below(known.len() as u64) as usize].clone())
                    .collect();
                ks.sort();
                ks.dedup();
                ks
            };
            let verb = match roll {
                40..=74 => "get",
                75..=89 => "has",
                _ => "rm",
            };
            me.read(verb, &keys);
        }
    }
}

/// The nemesis's check that the pool serves: a put of a fresh key and a get of it,
/// both answered correctly. Recorded like any other call. Err says what went wrong.
pub fn probe(me: &mut Caller, n: u64) -> Result<(), String> {
    let key = format!("probe/{n}");
    Shared::lock(&me.shared.keys).push(key.clone());
    let started = Instant::now();
    let put = me.put(std::slice::from_ref(&key), &[PROBE_BYTES]);
    let took = |what: &str, me: &Caller| {
        let answer = me.last_answer.join(" ");
        format!(
            "{what} answered {answer} in {:.3} s",
            started.elapsed().as_secs_f64()
        )
    };
    let (Ret::Ok, id) = put[0] else {
        return Err(took("put", me));
    };
    if me.read("get", &[key]) == [Ret::Value(id)] {
        Ok(())
    } else {
        Err(took("get", me))
    }
}

/// The end: every key ever written, read once more (in batches), recorded.
pub fn audit(me: &mut Caller) -> usize {
    let keys = Shared::lock(&me.shared.keys).clone();
    for chunk in keys.chunks(32) {
        me.read("get", chunk);
    }
    keys.len()
}

/// Waits until the probe succeeds: how long it took, and what the failed attempts
/// (up to 10) answered. Err after `give_up`.
pub fn until_served(
    me: &mut Caller,
    n: &mut u64,
    give_up: Duration,
) -> Result<(Duration, Vec<String>), String> {
    let start = Instant::now();
    let mut failed = Vec::new();
    loop {
        *n += 1;
        match probe(me, *n) {
            Ok(()) => return Ok((start.elapsed(), failed)),
            Err(e) if failed.len() < 10 => failed.push(e),
            Err(_) => {}
        }
        if start.elapsed() > give_up {
            return Err(format!(
                "the pool did not serve within {give_up:?}: {}",
                failed.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
