//! The SSD store's recovery scan under random damage of its data file: bit flips,
//! overwritten runs, a cut-off end and garbage appended, alone or together. Opening
//! never fails or panics; every record it serves holds exactly the bytes written under
//! its id (records are checksummed); every record that lies wholly before the first
//! damaged byte is still there; and records appended after the damage survive the next
//! reopen. Case counts keep each test to a few seconds on a slow CI machine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use memcache_core::Key;
use memcache_local::ssd::{NewRecord, SsdStore};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// The data file's name in the store's directory, and a record's fixed header (see
/// the format in `ssd.rs`).
const FILE: &str = "objects.log";
const HEAD: u64 = 30;

/// Keys far apart: a record's key damaged in a byte or a few is no other record's key.
fn key(i: usize) -> Key {
    Key::new(vec![b'a' + i as u8; 12]).unwrap()
}

const KEYS: usize = 6;

#[derive(Debug, Clone)]
struct Put {
    key: usize,
    value: Vec<u8>,
    expires_ms: Option<u64>,
}

#[derive(Debug, Clone)]
enum Op {
    /// One append (one sync) of these records.
    Append(Vec<Put>),
    /// Erase these of the records written so far.
    Erase(Vec<Index>),
}

#[derive(Debug, Clone)]
enum Damage {
    Flip { at: Index, mask: u8 },
    Overwrite { at: Index, bytes: Vec<u8> },
    Truncate(Index),
    Garbage(Vec<u8>),
}

fn put() -> impl Strategy<Value = Put> {
    (
        0..KEYS,
        prop_oneof![3 => vec(any::<u8>(), 0..64), 1 => vec(any::<u8>(), 0..4096)],
        proptest::option::of(1u64..u64::MAX),
    )
        .prop_map(|(key, value, expires_ms)| Put {
            key,
            value,
            expires_ms,
        })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    vec(
        prop_oneof![
            3 => vec(put(), 1..5).prop_map(Op::Append),
            1 => vec(any::<Index>(), 1..3).prop_map(Op::Erase),
        ],
        1..8,
    )
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        1 => (any::<Index>(), vec(any::<u8>(), 1..40))
            .prop_map(|(at, bytes)| Damage::Overwrite { at, bytes }),
        1 => any::<Index>().prop_map(Damage::Truncate),
        1 => prop_oneof![
            vec(any::<u8>(), 1..100),
            // A tail that starts like a record: the magic number, then noise.
            vec(any::<u8>(), 0..100).prop_map(|rest| [&b"SSMM"[..], &rest].concat()),
        ]
        .prop_map(Damage::Garbage),
    ]
}

/// What was written: each record's key, bytes and where it ends in the file, and where
/// each erased record's tombstone ends.
#[derive(Default)]
struct Model {
    records: HashMap<u64, (Put, u64)>,
    /// Record ids in the order written.
    order: Vec<u64>,
    tombstones: HashMap<u64, u64>,
    end: u64,
}

impl Model {
    fn apply(&mut self, store: &SsdStore, op: &Op) {
        match op {
            Op::Append(puts) => {
                let keys: Vec<Key> = puts.iter().map(|p| key(p.key)).collect();
                let records: Vec<NewRecord> = puts
                    .iter()
                    .zip(&keys)
                    .map(|(p, k)| NewRecord {
                        key: k,
                        expires_ms: p.expires_ms,
                        value: &p.value,
                    })
                    .collect();
                let ids = store.append(&records).unwrap();
                for (id, p) in ids.into_iter().zip(puts) {
                    self.end += HEAD + 12 + p.value.len() as u64;
                    self.records.insert(id, (p.clone(), self.end));
                    self.order.push(id);
                }
            }
            Op::Erase(which) => {
                let mut ids: Vec<u64> = Vec::new();
                for w in which {
                    if self.order.is_empty() {
                        return;
                    }
                    let id = self.order[w.index(self.order.len())];
                    if !self.tombstones.contains_key(&id) && !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                assert_eq!(store.erase(&ids).unwrap(), ids.len());
                for id in ids {
                    self.end += HEAD + 12;
                    self.tombstones.insert(id, self.end);
                }
            }
        }
    }

    /// Whether record `id` must still be served when the file is intact before `from`:
    /// it lies before it, was never erased (a tombstone past `from` may be intact or
    /// not), and it is the last record of its key, put or tombstone (a damaged later
    /// one hides it, by design: it may have been a newer version).
    fn must_survive(&self, id: u64, from: u64) -> bool {
        let (put, end) = &self.records[&id];
        let erased = self.tombstones.contains_key(&id);
        let same_key = |other: &u64| self.records[other].0.key == put.key;
        let later_put = self.records.keys().any(|o| *o > id && same_key(o));
        let later_tombstone = self.tombstones.keys().any(|o| *o != id && same_key(o));
        *end <= from && !erased && !later_put && !later_tombstone
    }
}

/// A directory of its own per case, on tmpfs where there is one (syncs are free),
/// removed when the case ends, however it ends.
struct CaseDir(PathBuf);

impl Drop for CaseDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn case_dir() -> CaseDir {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!("mmc-ssd-damage-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    CaseDir(dir)
}

/// Damages the file; the offset of the first byte that differs from what was written
/// (the file's old length when only appended to).
fn damage_file(path: &Path, damages: &[Damage]) -> u64 {
    let mut bytes = std::fs::read(path).unwrap();
    let mut first = bytes.len() as u64;
    for d in damages {
        if bytes.is_empty() && !matches!(d, Damage::Garbage(_)) {
            continue;
        }
        let at = |i: &Index, len: usize| i.index(len);
        match d {
            Damage::Flip { at: i, mask } => {
                let a = at(i, bytes.len());
                bytes[a] ^= mask;
                first = first.min(a as u64);
            }
            Damage::Overwrite { at: i, bytes: new } => {
                let a = at(i, bytes.len());
                let n = new.len().min(bytes.len() - a);
                bytes[a..a + n].copy_from_slice(&new[..n]);
                first = first.min(a as u64);
            }
            Damage::Truncate(i) => {
                let a = at(i, bytes.len());
                bytes.truncate(a);
                first = first.min(a as u64);
            }
            Damage::Garbage(tail) => {
                first = first.min(bytes.len() as u64);
                bytes.extend_from_slice(tail);
            }
        }
    }
    std::fs::write(path, &bytes).unwrap();
    first
}

/// What a store opened on damaged bytes serves: only records written, each with its
/// own bytes; every record that must survive damage from `from` on.
fn check(store: &SsdStore, model: &Model, from: u64) -> Result<(), TestCaseError> {
    let entries = store.entries();
    prop_assert_eq!(entries.len(), store.len());
    for e in &entries {
        let Some((put, _)) = model.records.get(&e.id) else {
            return Err(TestCaseError::fail(format!(
                "record {} was never written",
                e.id
            )));
        };
        prop_assert_eq!(&e.key, &key(put.key));
        prop_assert_eq!(e.len, put.value.len() as u64);
        prop_assert_eq!(e.expires_ms, put.expires_ms);
        let read = store
            .get(e.id)
            .map_err(|err| TestCaseError::fail(format!("record {}: {err}", e.id)))?;
        prop_assert_eq!(read.as_deref(), Some(&put.value[..]), "record {}", e.id);
        let tombstone = model.tombstones.get(&e.id);
        prop_assert!(
            tombstone.is_none_or(|&t| t > from),
            "record {} came back though its tombstone is intact",
            e.id
        );
    }
    for &id in &model.order {
        if model.must_survive(id, from) {
            prop_assert!(
                entries.iter().any(|e| e.id == id),
                "record {} (ending at {}) lies before the damage at {} but is gone",
                id,
                model.records[&id].1,
                from
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn damage_never_serves_wrong_bytes_nor_loses_what_lies_before_it(
        ops in ops(),
        damages in vec(damage(), 1..4),
        after in vec(put(), 1..4),
    ) {
        let case = case_dir();
        let dir = &case.0;
        let mut model = Model::default();
        {
            let (store, _) = SsdStore::open(dir).unwrap();
            for op in &ops {
                model.apply(&store, op);
            }
        }
        prop_assert_eq!(std::fs::metadata(dir.join(FILE)).unwrap().len(), model.end);
        let from = damage_file(&dir.join(FILE), &damages);
        let (store, recovery) = SsdStore::open(dir)
            .map_err(|e| TestCaseError::fail(format!("open after damage: {e}")))?;
        prop_assert_eq!(recovery.objects, store.len());
        check(&store, &model, from)?;

        // New records follow the last whole one and survive the next reopen, beside
        // everything recovered before.
        let keys: Vec<Key> = after.iter().map(|p| key(p.key)).collect();
        let records: Vec<NewRecord> = after
            .iter()
            .zip(&keys)
            .map(|(p, k)| NewRecord { key: k, expires_ms: p.expires_ms, value: &p.value })
            .collect();
        let new_ids = store.append(&records).unwrap();
        drop(store);
        let (store, _) = SsdStore::open(dir)
            .map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?;
        for (id, p) in new_ids.iter().zip(&after) {
            prop_assert_eq!(
                store.get(*id).map_err(|e| TestCaseError::fail(e.to_string()))?,
                Some(p.value.clone()),
                "record {} appended after the damage",
                id
            );
        }
    }
}
