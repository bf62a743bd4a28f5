//! The SSD tier's store: records kept in an append-only data file in a directory, so
//! they survive a restart of their local service. Each record is checksummed; on open
//! the file is scanned, and a torn or corrupt record is skipped and counted, never
//! served. Records are addressed by an id the store gives them (an SSD blob's offset
//! in the pool); erasing one appends a tombstone. When most of the file is dead, it is
//! rewritten with the live records only.
//!
//! Record: magic (u32) · kind (u8) · key length (u8) · value length (u32) · id (u64) ·
//! expiry in Unix ms, 0 for none (u64) · CRC32 of everything after the magic and
//! before the CRC, then of key and value (u32) · key · value. All little-endian.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use memcache_core::Key;

const MAGIC: u32 = 0x4D4D_5353; // "MMSS"
const HEAD: usize = 30;
const PUT: u8 = 1;
const ERASE: u8 = 2;
const FILE_NAME: &str = "objects.log";
/// Rewrite the file once dead bytes pass this and outweigh the live ones.
const COMPACT_ABOVE: u64 = 64 << 20;

/// What opening a directory found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Objects readable after the scan.
    pub objects: usize,
    /// Records skipped because their checksum, header or length was wrong.
    pub damaged: usize,
    /// Bytes at the end that did not form a whole record (a write cut short).
    pub torn_tail: u64,
}

/// One live record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub key: Key,
    pub len: u64,
    pub expires_ms: Option<u64>,
    /// Where the record starts in the file.
    at: u64,
}

/// A record to append.
pub struct NewRecord<'a> {
    pub key: &'a Key,
    pub expires_ms: Option<u64>,
    pub value: &'a [u8],
}

struct Inner {
    /// Shared with readers, who read without holding the lock (compaction swaps it).
    file: Arc<File>,
    index: HashMap<u64, Entry>,
    end: u64,
    next_id: u64,
    live_bytes: u64,
}

/// Safe to share: reads go on beside writes; writes take turns.
pub struct SsdStore {
    path: PathBuf,
    inner: Mutex<Inner>,
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

fn encode(kind: u8, id: u64, key: &[u8], expires_ms: Option<u64>, value: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(kind);
    out.push(key.len() as u8);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&expires_ms.unwrap_or(0).to_le_bytes());
    let sum = crc(&[&out[start + 4..start + 26], key, value]);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

fn record_len(key_len: usize, value_len: u64) -> u64 {
    (HEAD + key_len) as u64 + value_len
}

/// A whole record whose header is readable at the start of `buf`: kind, id, key,
/// expiry, value, and whether its checksum holds.
struct Parsed<'a> {
    kind: u8,
    id: u64,
    key: &'a [u8],
    expires_ms: Option<u64>,
    value: &'a [u8],
    intact: bool,
}

fn parse(buf: &[u8]) -> Option<Parsed<'_>> {
    if buf.len() < HEAD || buf[0..4] != MAGIC.to_le_bytes() {
        return None;
    }
    let kind = buf[4];
    let key_len = buf[5] as usize;
    let value_len = u32::from_le_bytes(buf[6..10].try_into().ok()?) as usize;
    let id = u64::from_le_bytes(buf[10..18].try_into().ok()?);
    let expires = u64::from_le_bytes(buf[18..26].try_into().ok()?);
    let sum = u32::from_le_bytes(buf[26..30].try_into().ok()?);
    let total = HEAD + key_len + value_len;
    if buf.len() < total || !(kind == PUT || kind == ERASE) || key_len == 0 {
        return None;
    }
    let (key, value) = buf[HEAD..total].split_at(key_len);
    Some(Parsed {
        kind,
        id,
        key,
        expires_ms: (expires != 0).then_some(expires),
        value,
        intact: crc(&[&buf[4..26], key, value]) == sum,
    })
}

impl SsdStore {
    /// Opens (or creates) the store in `dir` and recovers what it holds.
    pub fn open(dir: &Path) -> std::io::Result<(SsdStore, Recovery)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let len = file.metadata()?.len();
        let scanned = scan(&file, len)?;
        if scanned.end < len {
            // Drop the torn tail, so new records follow the last whole one.
            file.set_len(scanned.end)?;
            file.sync_all()?;
        }
        let live_bytes = scanned
            .index
            .values()
            .map(|e| record_len(e.key.as_bytes().len(), e.len))
            .sum();
        let recovery = scanned.recovery;
        let store = SsdStore {
            path,
            inner: Mutex::new(Inner {
                file: Arc::new(file),
                index: scanned.index,
                end: scanned.end,
                next_id: scanned.max_id + 1,
                live_bytes,
            }),
        };
        Ok((store, recovery))
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.inner().index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live record, newest first.
    pub fn entries(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = self.inner().index.values().cloned().collect();
        all.sort_unstable_by_key(|e| std::cmp::Reverse(e.id));
        all
    }

    /// Appends the records and syncs them to disk, all at once; their ids, in order.
    pub fn append(&self, records: &[NewRecord<'_>]) -> std::io::Result<Vec<u64>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut inner = self.inner();
        let mut buf = Vec::new();
        let mut entries = Vec::with_capacity(records.len());
        for r in records {
            let len = r.value.len() as u64;
            if len > u32::MAX as u64 {
                return Err(std::io::Error::other("an SSD record holds at most 4 GiB"));
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let at = inner.end + buf.len() as u64;
            encode(PUT, id, r.key.as_bytes(), r.expires_ms, r.value, &mut buf);
            entries.push(Entry {
                id,
                key: r.key.clone(),
                len,
                expires_ms: r.expires_ms,
                at,
            });
        }
        let end = inner.end;
        inner.file.write_all_at(&buf, end)?;
        inner.file.sync_data()?;
        inner.end += buf.len() as u64;
        inner.live_bytes += buf.len() as u64;
        let ids = entries.iter().map(|e| e.id).collect();
        for e in entries {
            inner.index.insert(e.id, e);
        }
        Ok(ids)
    }

    /// The value of record `id`, checked against its checksum and its expected key
    /// and length; `None` if there is no such record.
    pub fn get(&self, id: u64) -> std::io::Result<Option<Vec<u8>>> {
        let (entry, file) = {
            let inner = self.inner();
            let Some(e) = inner.index.get(&id) else {
                return Ok(None);
            };
            (e.clone(), inner.file.clone())
        };
        let mut record = vec![0u8; record_len(entry.key.as_bytes().len(), entry.len) as usize];
        file.read_exact_at(&mut record, entry.at)?;
        match parse(&record) {
            Some(p) if p.intact && p.kind == PUT && p.id == id && p.key == entry.key.as_bytes() => {
                let head = HEAD + p.key.len();
                record.drain(..head);
                Ok(Some(record))
            }
            _ => Err(std::io::Error::other(format!(
                "the SSD record {id} of {} is damaged",
                entry.key
            ))),
        }
    }

    /// Erases records (unknown ids are ignored) and syncs; how many there were.
    pub fn erase(&self, ids: &[u64]) -> std::io::Result<usize> {
        let mut inner = self.inner();
        let mut buf = Vec::new();
        let mut gone = Vec::new();
        for id in ids {
            if gone.contains(id) {
                continue;
            }
            if let Some(e) = inner.index.get(id) {
                encode(ERASE, *id, e.key.as_bytes(), None, &[], &mut buf);
                gone.push(*id);
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        let end = inner.end;
        inner.file.write_all_at(&buf, end)?;
        inner.file.sync_data()?;
        inner.end += buf.len() as u64;
        for id in &gone {
            if let Some(e) = inner.index.remove(id) {
                inner.live_bytes -= record_len(e.key.as_bytes().len(), e.len);
            }
        }
        let dead = inner.end - inner.live_bytes;
        if dead > COMPACT_ABOVE && dead > inner.live_bytes {
            compact(&self.path, &mut inner)?;
        }
        Ok(gone.len())
    }
}

/// Rewrites the file with the live records only (into a new file, synced, then renamed
/// over the old one, so a crash leaves one or the other).
fn compact(path: &Path, inner: &mut Inner) -> std::io::Result<()> {
    let tmp = path.with_extension("compacting");
    let out = File::create(&tmp)?;
    let mut ids: Vec<u64> = inner.index.keys().copied().collect();
    ids.sort_unstable();
    let mut at = 0u64;
    let mut moved = Vec::with_capacity(ids.len());
    for id in ids {
        let e = &inner.index[&id];
        let mut record = vec![0u8; record_len(e.key.as_bytes().len(), e.len) as usize];
        inner.file.read_exact_at(&mut record, e.at)?;
        out.write_all_at(&record, at)?;
        moved.push((id, at));
        at += record.len() as u64;
    }
    out.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    for (id, new_at) in moved {
        if let Some(e) = inner.index.get_mut(&id) {
            e.at = new_at;
        }
    }
    inner.file = Arc::new(OpenOptions::new().read(true).write(true).open(path)?);
    inner.end = at;
    inner.live_bytes = at;
    Ok(())
}

struct Scanned {
    index: HashMap<u64, Entry>,
    end: u64,
    max_id: u64,
    recovery: Recovery,
}

/// How much of the file a scan holds in memory at a time (more for a larger record).
const SCAN_CHUNK: usize = 8 << 20;

/// A sliding view of the file, so a scan holds a chunk of it, not all of it.
struct Window<'a> {
    file: &'a File,
    len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    /// The file's bytes from `at` on: at least `want` of them where the file has them.
    fn at(&mut self, at: u64, want: usize) -> std::io::Result<&[u8]> {
        let have = self.start + self.buf.len() as u64;
        let short = at + want as u64 > have && have < self.len;
        if at < self.start || at > have || short {
            let n = (want.max(SCAN_CHUNK) as u64).min(self.len - at) as usize;
            self.buf.resize(n, 0);
            self.file.read_exact_at(&mut self.buf, at)?;
            self.start = at;
        }
        Ok(&self.buf[(at - self.start) as usize..])
    }
}

/// The length of the record whose header starts `head`, if the header looks whole.
fn record_total(head: &[u8]) -> Option<usize> {
    if head.len() < HEAD || head[0..4] != MAGIC.to_le_bytes() {
        return None;
    }
    let value_len = u32::from_le_bytes(head[6..10].try_into().ok()?) as usize;
    Some(HEAD + head[5] as usize + value_len)
}

/// Reads every record in order. A record whose frame holds but whose checksum fails
/// is skipped and counted; so is anything else up to the next magic number. Bytes
/// after the last whole record are a torn tail. A damaged record (unless erased
/// later) hides its key's older records: their object was replaced, so they are stale.
/// Older is before it in the file and not above its id: a record appended after it may
/// have been given its id (ids of damaged records are not counted when the next is
/// chosen), and is newer.
/// Several live records of one key are all kept: the pool takes the newest it can.
fn scan(file: &File, len: u64) -> std::io::Result<Scanned> {
    let mut w = Window {
        file,
        len,
        start: 0,
        buf: Vec::new(),
    };
    let mut index: HashMap<u64, Entry> = HashMap::new();
    // Key, id and place of each damaged record whose frame held.
    let mut damaged: Vec<(Key, u64, u64)> = Vec::new();
    let mut erased: std::collections::HashSet<u64> = Default::default();
    let mut recovery = Recovery::default();
    let (mut at, mut end, mut max_id) = (0u64, 0u64, 0u64);
    while at < len {
        let total = record_total(w.at(at, HEAD)?).filter(|t| at + *t as u64 <= len);
        let framed = match total {
            Some(t) => {
                // The record and the next one's magic, to tell a damaged record whose
                // frame holds from bytes that only look like a header.
                let bytes = w.at(at, t + 4)?;
                parse(bytes).filter(|p| {
                    let rest = &bytes[t..];
                    p.intact || rest.is_empty() || rest.starts_with(&MAGIC.to_le_bytes())
                })
            }
            None => None,
        };
        let Some(p) = framed else {
            let mut from = at + 1;
            let next = loop {
                let chunk = w.at(from, SCAN_CHUNK)?;
                if let Some(n) = chunk.windows(4).position(|x| x == MAGIC.to_le_bytes()) {
                    break Some(from + n as u64);
                }
                if from + chunk.len() as u64 >= len || chunk.len() < 4 {
                    break None;
                }
                // Overlap, for a magic number cut by the chunk's end.
                from += chunk.len() as u64 - 3;
            };
            match next {
                Some(n) => {
                    recovery.damaged += 1;
                    at = n;
                    continue;
                }
                None => break,
            }
        };
        let total = (HEAD + p.key.len() + p.value.len()) as u64;
        let key = Key::new(p.key).ok();
        if !p.intact {
            recovery.damaged += 1;
            if let Some(key) = key {
                damaged.push((key, p.id, at));
            }
        } else if let Some(key) = key {
            max_id = max_id.max(p.id);
            if p.kind == PUT {
                index.insert(
                    p.id,
                    Entry {
                        id: p.id,
                        key,
                        len: p.value.len() as u64,
                        expires_ms: p.expires_ms,
                        at,
                    },
                );
            } else {
                index.remove(&p.id);
                erased.insert(p.id);
            }
        }
        at += total;
        end = at;
    }
    for (key, id, place) in damaged.iter().filter(|(_, id, _)| !erased.contains(id)) {
        index.retain(|_, e| e.key != *key || e.id > *id || e.at > *place);
    }
    recovery.torn_tail = len - end;
    recovery.objects = index.len();
    Ok(Scanned {
        index,
        end,
        max_id,
        recovery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmc-ssd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn key(i: usize) -> Key {
        Key::new(format!("obj/{i}")).unwrap()
    }

    fn value(i: usize) -> Vec<u8> {
        (0..100 + i * 7).map(|j| (i * 31 + j) as u8).collect()
    }

    fn put(s: &SsdStore, k: &Key, v: &[u8]) -> u64 {
        let r = NewRecord {
            key: k,
            expires_ms: None,
            value: v,
        };
        s.append(&[r]).unwrap()[0]
    }

    /// The value each key's newest live record holds.
    fn by_key(s: &SsdStore) -> HashMap<Key, Vec<u8>> {
        s.entries()
            .into_iter()
            .map(|e| (e.key.clone(), s.get(e.id).unwrap().unwrap()))
            .collect()
    }

    #[test]
    fn records_survive_a_reopen_and_erased_ones_stay_gone() {
        let d = dir("reopen");
        let (ids, replaced) = {
            let (s, r) = SsdStore::open(&d).unwrap();
            assert_eq!(r, Recovery::default());
            let keys: Vec<Key> = (0..50).map(key).collect();
            let values: Vec<Vec<u8>> = (0..50).map(value).collect();
            let batch: Vec<NewRecord> = (0..50)
                .map(|i| NewRecord {
                    key: &keys[i],
                    expires_ms: (i == 7).then_some(123_456),
                    value: &values[i],
                })
                .collect();
            let ids = s.append(&batch).unwrap();
            let replaced = put(&s, &key(3), b"replaced");
            assert_eq!(s.erase(&[ids[4], ids[4], 999_999]).unwrap(), 1);
            (ids, replaced)
        };
        let (s, r) = SsdStore::open(&d).unwrap();
        // Key 3 has two live records (the pool takes the newer); 4 was erased.
        assert_eq!((r.objects, r.damaged, r.torn_tail), (50, 0, 0));
        assert_eq!(s.get(replaced).unwrap().unwrap(), b"replaced");
        assert_eq!(s.get(ids[4]).unwrap(), None);
        let e7 = s.entries().into_iter().find(|e| e.id == ids[7]).unwrap();
        assert_eq!(e7.expires_ms, Some(123_456));
        assert_eq!(s.entries()[0].id, replaced, "newest first");
        for i in (0..50).filter(|i| *i != 4) {
            assert_eq!(s.get(ids[i]).unwrap().unwrap(), value(i));
        }
        // Ids never repeat across a reopen.
        assert!(put(&s, &key(60), b"new") > replaced);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_records_are_skipped_and_counted_and_a_torn_tail_is_cut() {
        let d = dir("damage");
        {
            let (s, _) = SsdStore::open(&d).unwrap();
            put(&s, &key(12), b"first version of 12");
            for i in 0..20 {
                put(&s, &key(i), &value(i));
            }
        }
        let path = d.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte inside the values of objects 5 and 12 (12 is a second version:
        // its first must not come back).
        for i in [5, 12] {
            let (k, v) = (key(i), value(i));
            let needle = [k.as_bytes(), &v[..8]].concat();
            let at = bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap();
            bytes[at + k.as_bytes().len() + 10] ^= 0xFF;
        }
        // And a write cut short at the end.
        let mut torn = Vec::new();
        encode(PUT, 77, b"obj/x", None, &[7u8; 1000], &mut torn);
        bytes.extend_from_slice(&torn[..HEAD + 20]);
        std::fs::write(&path, &bytes).unwrap();

        let (s, r) = SsdStore::open(&d).unwrap();
        assert_eq!(r.objects, 18);
        assert_eq!(r.damaged, 2);
        assert!(r.torn_tail > 0);
        let found = by_key(&s);
        for i in 0..20 {
            if i == 5 || i == 12 {
                assert!(
                    !found.contains_key(&key(i)),
                    "a damaged record is never served"
                );
            } else {
                assert_eq!(found[&key(i)], value(i), "object {i}");
            }
        }
        // New records follow the last whole one and survive another reopen.
        let after = put(&s, &key(99), b"after");
        drop(s);
        let (s, r) = SsdStore::open(&d).unwrap();
        assert_eq!((r.objects, r.torn_tail), (19, 0));
        assert_eq!(s.get(after).unwrap().unwrap(), b"after");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_larger_than_the_scan_window_is_recovered_record_by_record() {
        let d = dir("large");
        let big = |i: usize| vec![i as u8; 200 << 10];
        let ids: Vec<u64> = {
            let (s, _) = SsdStore::open(&d).unwrap();
            (0..80).map(|i| put(&s, &key(i), &big(i))).collect()
        };
        let path = d.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > SCAN_CHUNK + SCAN_CHUNK / 2);
        // Damage a record that straddles the first window's end, and the magic number
        // of another (record 50: keys 0-9 are one byte shorter), so the scan has to
        // look for the next record.
        bytes[SCAN_CHUNK - 100] ^= 0xFF;
        let record_50 = 10 * (HEAD + 5 + (200 << 10)) + 40 * (HEAD + 6 + (200 << 10));
        assert_eq!(bytes[record_50..record_50 + 4], MAGIC.to_le_bytes());
        bytes[record_50] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let (s, r) = SsdStore::open(&d).unwrap();
        assert_eq!((r.objects, r.damaged, r.torn_tail), (78, 2, 0));
        let good = (0..80)
            .filter(|i| s.get(ids[*i]).unwrap() == Some(big(*i)))
            .count();
        assert_eq!(good, 78);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_record_appended_after_a_damaged_one_of_its_key_survives_a_reopen() {
        let d = dir("after-damage");
        {
            let (s, _) = SsdStore::open(&d).unwrap();
            put(&s, &key(1), &value(1));
        }
        // The last record's value damaged: its frame holds, so it stays in the file,
        // and its id is given again (only whole records count).
        let path = d.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (s, r) = SsdStore::open(&d).unwrap();
        assert_eq!((r.objects, r.damaged), (0, 1));
        let again = put(&s, &key(1), b"again");
        drop(s);
        // The damaged record hides older records of its key, not this newer one.
        let (s, r) = SsdStore::open(&d).unwrap();
        assert_eq!((r.objects, r.damaged), (1, 1));
        assert_eq!(s.get(again).unwrap().unwrap(), b"again");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_record_damaged_after_opening_is_an_error_not_bytes() {
        let d = dir("late-damage");
        let (s, _) = SsdStore::open(&d).unwrap();
        let id = put(&s, &key(1), &value(1));
        let path = d.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(s.get(id).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_mostly_dead_file_is_compacted_and_keeps_its_records() {
        let d = dir("compact");
        let (s, _) = SsdStore::open(&d).unwrap();
        let big = vec![0xABu8; 1 << 20];
        let keep = put(&s, &key(0), b"kept");
        let dead: Vec<u64> = (1..80).map(|i| put(&s, &key(i), &big)).collect();
        s.erase(&dead).unwrap();
        let size = std::fs::metadata(d.join(FILE_NAME)).unwrap().len();
        assert!(size < 1 << 20, "compacted to {size} bytes");
        assert_eq!(s.get(keep).unwrap().unwrap(), b"kept");
        let later = put(&s, &key(200), b"later");
        drop(s);
        let (s, r) = SsdStore::open(&d).unwrap();
        assert_eq!((r.objects, r.damaged), (2, 0));
        assert_eq!(s.get(keep).unwrap().unwrap(), b"kept");
        assert_eq!(s.get(later).unwrap().unwrap(), b"later");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
