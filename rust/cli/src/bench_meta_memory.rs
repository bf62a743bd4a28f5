//! `mmc bench meta-memory --objects N`: the meta service's memory per stored object.
//!
//! One state machine (the replicated part of the meta service, which holds every
//! object) is built in this process, driven through the same commands a leader logs:
//! a local service registers one DRAM segment, then objects are allocated and committed
//! in batches. The cost is measured as the growth of the C heap in use (glibc's
//! `mallinfo2`: bytes malloc handed out, chunk headers and rounding included, over all
//! arenas), which counts exactly what the structures hold. The growth of RSS over the
//! same build is reported beside it; it can only be higher (pages malloc keeps after
//! the batches' temporary vectors are freed). The goal is 250 bytes per object plus
//! the key.

use serde_json::{json, Value};

use memcache_client::{Key, Medium};
use memcache_meta::{AllocItem, Applied, Command, PolicyKind, StateMachine};
use memcache_proto::SegmentSpec;

use crate::procmem::{heap_in_use, rss_bytes};

/// Bytes per object the meta service should need beyond the key's own bytes.
pub const GOAL_BYTES: f64 = 250.0;

const BATCH: usize = 1024;
const OBJECT_BYTES: u64 = 4096;

/// A key as KV-cache engines make them: a prefix, a block hash, a layer range.
fn key(i: usize) -> Key {
    Key::new(format!(
        "kv/llama-70b/{:016x}/0-79",
        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    ))
    .expect("a short key")
}

/// A state machine holding `n` committed objects of one replica each.
fn build(kind: PolicyKind, n: usize) -> Result<StateMachine, String> {
    let mut sm = StateMachine::new(kind);
    let capacity = (n as u64 + 1) * OBJECT_BYTES;
    let registered = sm.apply(Command::RegisterService {
        service: 1,
        device_id: 0,
        segments: vec![SegmentSpec {
            medium: Medium::Dram,
            capacity,
            base: 0,
        }],
        first_segment: 1,
        attachment: Vec::new(),
        now_ms: 0,
        recovered: Vec::new(),
    });
    let segment = match registered {
        Applied::Registered(Ok((ids, _))) => ids[0],
        other => return Err(format!("registering: {other:?}")),
    };
    for (b, first) in (0..n).step_by(BATCH).enumerate() {
        let now_ms = b as u64;
        let keys: Vec<Key> = (first..(first + BATCH).min(n)).map(key).collect();
        let items = keys
            .iter()
            .map(|k| AllocItem {
                key: k.clone(),
                size: OBJECT_BYTES,
                segments: vec![segment],
                ttl_ms: None,
                writer: 0,
                lease_ms: None,
                drop_first: Vec::new(),
                replace: false,
            })
            .collect();
        let allocated = sm.apply(Command::Alloc {
            now_ms,
            lease_ms: 10_000,
            items,
            drop_after: Vec::new(),
            holds: Vec::new(),
        });
        let Applied::Allocated { results, .. } = allocated else {
            return Err(format!("alloc gave {allocated:?}"));
        };
        let mut commits = Vec::with_capacity(keys.len());
        for (k, r) in keys.into_iter().zip(results) {
            let a = r.map_err(|e| format!("alloc of {k}: {e}"))?;
            commits.push((k, a.put_id));
        }
        match sm.apply(Command::Commit {
            now_ms,
            items: commits,
            holds: Vec::new(),
        }) {
            Applied::Committed(r) if r.iter().all(Result::is_ok) => {}
            other => return Err(format!("commit gave {other:?}")),
        }
    }
    if sm.object_count() != n {
        return Err(format!("{} objects stored, not {n}", sm.object_count()));
    }
    Ok(sm)
}

/// Heap and RSS growth per object of a state machine of `n` objects under `kind`.
fn measure(kind: PolicyKind, n: usize) -> Result<Value, String> {
    let me = std::process::id();
    let (heap0, rss0) = (heap_in_use(), rss_bytes(me).unwrap_or(0));
    let sm = build(kind, n)?;
    let (heap1, rss1) = (heap_in_use(), rss_bytes(me).unwrap_or(0));
    let heap = heap1.saturating_sub(heap0) as f64 / n as f64;
    let rss = rss1.saturating_sub(rss0) as f64 / n as f64;
    let key_len = key(0).as_bytes().len() as f64;
    drop(sm);
    Ok(json!({
        "policy": format!("{kind:?}").to_lowercase(),
        "bytes_per_object": heap,
        "bytes_per_object_minus_key": heap - key_len,
        "rss_bytes_per_object": rss,
        "goal_ratio": (heap - key_len) / GOAL_BYTES,
    }))
}

pub fn run(objects: usize) -> Result<Value, String> {
    let n = objects.max(1);
    // The default policy first; it is the headline.
    let kinds = PolicyKind::ALL;
    let per_policy = kinds
        .iter()
        .map(|&k| measure(k, n))
        .collect::<Result<Vec<_>, _>>()?;
    let head = &per_policy[0];
    Ok(json!({
        "workload": "meta-memory",
        "objects": n,
        "key_bytes": key(0).as_bytes().len(),
        "measured_by": "mallinfo2 heap in use",
        "bytes_per_object": head["bytes_per_object"],
        "bytes_per_object_minus_key": head["bytes_per_object_minus_key"],
        "rss_bytes_per_object": head["rss_bytes_per_object"],
        "goal_bytes_plus_key": GOAL_BYTES,
        "goal_ratio": head["goal_ratio"],
        "policies": per_policy,
        "object_struct_bytes": std::mem::size_of::<memcache_meta::Object>(),
    }))
}
