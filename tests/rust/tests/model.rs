//! Model-based property test: random sequences of API calls against the store and a
//! `HashMap` model; every answer (codes, sizes, bytes, untouched buffers) must agree.

mod common;

use std::collections::HashMap;

use common::*;
use memcache_client::{BlockingObjectStore, CopyDirection, Error, ReplicateConfig, Result};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const H2G: CopyDirection = CopyDirection::H2G;
const G2H: CopyDirection = CopyDirection::G2H;
/// Bytes a destination buffer starts with, to check what a call left untouched.
const SENTINEL: u8 = 0xA5;

/// A key: one of a small valid key space, or (rarely) an invalid one.
#[derive(Debug, Clone, PartialEq)]
enum K {
    Valid(u8),
    Empty,
    TooLong,
}

impl K {
    fn bytes(&self) -> Vec<u8> {
        match self {
            K::Valid(i) => format!("key-{i}").into_bytes(),
            K::Empty => Vec::new(),
            K::TooLong => vec![b'z'; 256],
        }
    }
}

/// Object content: `len` bytes drawn from `seed`.
#[derive(Debug, Clone)]
struct Content {
    len: usize,
    seed: u64,
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        StdRng::seed_from_u64(self.seed).fill(&mut v[..]);
        v
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(K, Content),
    PutLayers(K, Vec<Content>),
    Get(K),
    GetInto(K, usize),
    GetIntoLayers(K, Vec<usize>),
    Remove(K),
    /// `get_appended` after `usize` bytes already in the vector.
    GetAppended(K, usize),
    Exists(K),
    KeyInfo(K),
    BatchPut(Vec<(K, Content)>),
    BatchGet(Vec<(K, usize)>),
    BatchRemove(Vec<K>),
    BatchExists(Vec<K>),
    BatchKeyInfo(Vec<K>),
}

fn key() -> impl Strategy<Value = K> {
    prop_oneof![
        18 => (0u8..6).prop_map(K::Valid),
        1 => Just(K::Empty),
        1 => Just(K::TooLong),
    ]
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        3 => 1usize..=4097,
        6 => 1usize..=64 * KIB,
    ]
}

fn content() -> impl Strategy<Value = Content> {
    (size(), any::<u64>()).prop_map(|(len, seed)| Content { len, seed })
}

fn layer() -> impl Strategy<Value = Content> {
    (0usize..=16 * KIB, any::<u64>()).prop_map(|(len, seed)| Content { len, seed })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), content()).prop_map(|(k, c)| Op::Put(k, c)),
        2 => (key(), prop::collection::vec(layer(), 0..5)).prop_map(|(k, l)| Op::PutLayers(k, l)),
        4 => key().prop_map(Op::Get),
        4 => (key(), size()).prop_map(|(k, n)| Op::GetInto(k, n)),
        3 => (key(), 0usize..=64).prop_map(|(k, n)| Op::GetAppended(k, n)),
        2 => (key(), prop::collection::vec(0usize..=24 * KIB, 0..5))
            .prop_map(|(k, l)| Op::GetIntoLayers(k, l)),
        3 => key().prop_map(Op::Remove),
        2 => key().prop_map(Op::Exists),
        2 => key().prop_map(Op::KeyInfo),
        2 => prop::collection::vec((key(), content()), 0..6).prop_map(Op::BatchPut),
        2 => prop::collection::vec((key(), size()), 0..6).prop_map(Op::BatchGet),
        1 => prop::collection::vec(key(), 0..6).prop_map(Op::BatchRemove),
        1 => prop::collection::vec(key(), 0..6).prop_map(Op::BatchExists),
        1 => prop::collection::vec(key(), 0..6).prop_map(Op::BatchKeyInfo),
    ]
}

const INVALID: i32 = -3000;
const DUPLICATE: i32 = -3006;
const NOT_FOUND: i32 = -3007;

fn code_or<T>(r: &Result<T, Error>) -> std::result::Result<&T, i32> {
    r.as_ref().map_err(Error::code)
}

/// The reference: a map from key bytes to object bytes.
#[derive(Default)]
struct Model {
    objects: HashMap<Vec<u8>, Vec<u8>>,
}

impl Model {
    fn valid(k: &K) -> bool {
        matches!(k, K::Valid(_))
    }

    fn put(&mut self, k: &K, data: Vec<u8>) -> std::result::Result<(), i32> {
        if !Self::valid(k) || data.is_empty() {
            return Err(INVALID);
        }
        if self.objects.contains_key(&k.bytes()) {
            return Err(DUPLICATE);
        }
        self.objects.insert(k.bytes(), data);
        Ok(())
    }

    fn get(&self, k: &K) -> std::result::Result<&Vec<u8>, i32> {
        if !Self::valid(k) {
            return Err(INVALID);
        }
        self.objects.get(&k.bytes()).ok_or(NOT_FOUND)
    }

    /// Fills `bufs` like `get_into_layers` should: all or nothing.
    fn get_into(&self, k: &K, bufs: &mut [Vec<u8>]) -> std::result::Result<u64, i32> {
        let data = self.get(k)?;
        let room: usize = bufs.iter().map(Vec::len).sum();
        if room < data.len() {
            return Err(INVALID);
        }
        let mut rest = &data[..];
        for b in bufs.iter_mut() {
            let n = b.len().min(rest.len());
            b[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(data.len() as u64)
    }

    fn remove(&mut self, k: &K) -> std::result::Result<(), i32> {
        if !Self::valid(k) {
            return Err(INVALID);
        }
        self.objects.remove(&k.bytes()).map(drop).ok_or(NOT_FOUND)
    }

    fn exists(&self, k: &K) -> std::result::Result<bool, i32> {
        if !Self::valid(k) {
            return Err(INVALID);
        }
        Ok(self.objects.contains_key(&k.bytes()))
    }

    fn size(&self, k: &K) -> std::result::Result<u64, i32> {
        self.get(k).map(|d| d.len() as u64)
    }
}

fn sentinel_bufs(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes.iter().map(|&n| vec![SENTINEL; n]).collect()
}

fn run(ops: &[Op]) -> std::result::Result<(), TestCaseError> {
    let (pool, store) = started(16 * MIB);
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        check_op(&store, &mut model, op)
            .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: {e}")))?;
    }
    // The pool holds exactly the model's objects, nothing was evicted, and every byte
    // in use belongs to one of them.
    prop_assert_eq!(object_count(&pool), model.objects.len());
    let counters = pool.meta().state().counters();
    prop_assert_eq!(counters.evicted, 0);
    let expected_used: u64 = model.objects.values().map(|d| pages_bytes(d.len())).sum();
    prop_assert_eq!(dram_usage(&pool).0, expected_used);
    for (k, v) in &model.objects {
        prop_assert!(store.get(k).as_ref() == Ok(v), "final content of {:?}", k);
    }
    Ok(())
}

fn check_op(
    store: &BlockingObjectStore,
    model: &mut Model,
    op: &Op,
) -> std::result::Result<(), String> {
    let cfg = ReplicateConfig::default();
    macro_rules! same {
        ($got:expr, $want:expr) => {{
            let (got, want) = ($got, $want);
            if got != want {
                return Err(format!("store answered {:?}, model {:?}", got, want));
            }
        }};
    }
    match op {
        Op::Put(k, c) => {
            let data = c.bytes();
            same!(
                code_or(&store.put(k.bytes(), &data)).copied(),
                model.put(k, data)
            );
        }
        Op::PutLayers(k, layers) => {
            let bytes: Vec<Vec<u8>> = layers.iter().map(Content::bytes).collect();
            let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
            let got = store.put_from_layers(k.bytes(), &refs, H2G, &cfg);
            same!(code_or(&got).copied(), model.put(k, bytes.concat()));
        }
        Op::Get(k) => {
            let got = store.get(k.bytes());
            let want = model.get(k);
            if code_or(&got) != want {
                return Err(format!(
                    "store answered {:?}, model {:?}",
                    code_or(&got).map(|v| v.len()),
                    want.map(|v| v.len())
                ));
            }
        }
        Op::GetAppended(k, n) => {
            let mut out = vec![SENTINEL; *n];
            let got = store.block_on(store.inner().get_appended(k.bytes(), &mut out));
            let want = model.get(k);
            same!(code_or(&got).copied(), want.map(|v| v.len()));
            let mut want_out = vec![SENTINEL; *n];
            if let Ok(v) = want {
                want_out.extend_from_slice(v);
            }
            if out != want_out {
                return Err("appended bytes differ".into());
            }
        }
        Op::GetInto(k, n) => {
            let mut got_buf = vec![SENTINEL; *n];
            let got = store.get_into(k.bytes(), &mut got_buf, G2H);
            let mut want_bufs = sentinel_bufs(&[*n]);
            let want = model.get_into(k, &mut want_bufs);
            same!(code_or(&got).copied(), want);
            if got_buf != want_bufs[0] {
                return Err("buffer content differs".into());
            }
        }
        Op::GetIntoLayers(k, sizes) => {
            let mut got_bufs = sentinel_bufs(sizes);
            let mut refs: Vec<&mut [u8]> = got_bufs.iter_mut().map(Vec::as_mut_slice).collect();
            let got = store.get_into_layers(k.bytes(), &mut refs, G2H);
            let mut want_bufs = sentinel_bufs(sizes);
            let want = model.get_into(k, &mut want_bufs);
            same!(code_or(&got).copied(), want);
            if got_bufs != want_bufs {
                return Err("layer contents differ".into());
            }
        }
        Op::Remove(k) => {
            same!(code_or(&store.remove(k.bytes())).copied(), model.remove(k));
        }
        Op::Exists(k) => {
            same!(
                code_or(&store.is_exist(k.bytes())).copied(),
                model.exists(k)
            );
        }
        Op::KeyInfo(k) => {
            let got = store.get_key_info(k.bytes());
            same!(code_or(&got).map(|i| i.size), model.size(k));
            if let Ok(info) = &got {
                same!(
                    (info.status, info.locations.len(), &info.key),
                    (0, 1, &k.bytes())
                );
            }
        }
        Op::BatchPut(entries) => {
            let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.bytes()).collect();
            let datas: Vec<Vec<u8>> = entries.iter().map(|(_, c)| c.bytes()).collect();
            let refs: Vec<&[u8]> = datas.iter().map(Vec::as_slice).collect();
            let got: Vec<_> = store
                .batch_put_from(&keys, &refs, H2G, &cfg)
                .iter()
                .map(|r| code_or(r).copied())
                .collect();
            let want: Vec<_> = entries
                .iter()
                .zip(datas)
                .map(|((k, _), d)| model.put(k, d))
                .collect();
            same!(got, want);
        }
        Op::BatchGet(entries) => {
            let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.bytes()).collect();
            let sizes: Vec<usize> = entries.iter().map(|&(_, n)| n).collect();
            let mut got_bufs = sentinel_bufs(&sizes);
            let mut refs: Vec<&mut [u8]> = got_bufs.iter_mut().map(Vec::as_mut_slice).collect();
            let got: Vec<_> = store
                .batch_get_into(&keys, &mut refs, G2H)
                .iter()
                .map(|r| code_or(r).copied())
                .collect();
            let mut want_bufs = sentinel_bufs(&sizes);
            let want: Vec<_> = entries
                .iter()
                .zip(want_bufs.iter_mut())
                .map(|((k, _), b)| model.get_into(k, std::slice::from_mut(b)))
                .collect();
            same!(got, want);
            if got_bufs != want_bufs {
                return Err("batch buffer contents differ".into());
            }
        }
        Op::BatchRemove(ks) => {
            let keys: Vec<Vec<u8>> = ks.iter().map(K::bytes).collect();
            let got: Vec<_> = store
                .batch_remove(&keys)
                .iter()
                .map(|r| code_or(r).copied())
                .collect();
            let want: Vec<_> = ks.iter().map(|k| model.remove(k)).collect();
            same!(got, want);
        }
        Op::BatchExists(ks) => {
            let keys: Vec<Vec<u8>> = ks.iter().map(K::bytes).collect();
            let got: Vec<_> = store
                .batch_is_exist(&keys)
                .iter()
                .map(|r| code_or(r).copied())
                .collect();
            let want: Vec<_> = ks.iter().map(|k| model.exists(k)).collect();
            same!(got, want);
        }
        Op::BatchKeyInfo(ks) => {
            let keys: Vec<Vec<u8>> = ks.iter().map(K::bytes).collect();
            let got: Vec<_> = store
                .batch_get_key_info(&keys)
                .iter()
                .map(|r| code_or(r).map(|i| (i.size, i.key.clone(), i.status)))
                .collect();
            let want: Vec<_> = ks
                .iter()
                .map(|k| model.size(k).map(|s| (s, k.bytes(), 0)))
                .collect();
            same!(got, want);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_agrees_with_a_hashmap_model(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}
