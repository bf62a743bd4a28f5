//! The SSD tier's store: objects kept in an append-only data file in a directory, so
//! they survive a restart of their local service. Each record is checksummed; on open
//! the file is scanned, and a torn or corrupt record is skipped and counted, never
//! served. Removals are records too, so the last word on a key wins.
//!
//! Record: magic (u32) · kind (u8) · key length (u8) · value length (u32) · CRC32 of
//! everything after the CRC (u32) · key · value. All little-endian.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memcache_core::Key;

const MAGIC: u32 = 0x4D4D_5353; // "MMSS"
const HEAD: usize = 14;
const PUT: u8 = 1;
const REMOVE: u8 = 2;
const FILE_NAME: &str = "objects.log";

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

pub struct SsdStore {
    path: PathBuf,
    file: File,
    /// Where each object's value lies in the file.
    index: HashMap<Key, (u64, u32)>,
    end: u64,
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

fn header(kind: u8, key: &[u8], value_len: u32, sum: u32) -> [u8; HEAD] {
    let mut h = [0u8; HEAD];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4] = kind;
    h[5] = key.len() as u8;
    h[6..10].copy_from_slice(&value_len.to_le_bytes());
    h[10..14].copy_from_slice(&sum.to_le_bytes());
    h
}

impl SsdStore {
    /// Opens (or creates) the store in `dir` and recovers what it holds.
    pub fn open(dir: &Path) -> std::io::Result<(SsdStore, Recovery)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let (index, end, recovery) = scan(&file)?;
        if end < file.metadata()?.len() {
            // Drop the torn tail, so new records follow the last whole one.
            file.set_len(end)?;
        }
        Ok((
            SsdStore {
                path,
                file,
                index,
                end,
            },
            recovery,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.index.keys()
    }

    /// Stores `value` under `key` (replacing what was there) and syncs it to disk.
    pub fn put(&mut self, key: &Key, value: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(value.len())
            .map_err(|_| std::io::Error::other("an SSD record holds at most 4 GiB"))?;
        let sum = crc(&[
            &[PUT, key.as_bytes().len() as u8],
            &len.to_le_bytes(),
            key.as_bytes(),
            value,
        ]);
        let head = header(PUT, key.as_bytes(), len, sum);
        self.append(&[&head, key.as_bytes(), value])?;
        let at = self.end - value.len() as u64;
        self.index.insert(key.clone(), (at, len));
        Ok(())
    }

    /// The value under `key`, checked against its record's checksum.
    pub fn get(&self, key: &Key) -> std::io::Result<Option<Vec<u8>>> {
        let Some(&(at, len)) = self.index.get(key) else {
            return Ok(None);
        };
        let start = at - (HEAD + key.as_bytes().len()) as u64;
        let mut record = vec![0u8; HEAD + key.as_bytes().len() + len as usize];
        self.file.read_exact_at(&mut record, start)?;
        match parse(&record) {
            Some((PUT, k, v)) if k == key.as_bytes() => Ok(Some(v.to_vec())),
            _ => Err(std::io::Error::other(format!(
                "the SSD record of {key} is damaged"
            ))),
        }
    }

    /// Forgets `key`; whether it was there.
    pub fn remove(&mut self, key: &Key) -> std::io::Result<bool> {
        if !self.index.contains_key(key) {
            return Ok(false);
        }
        let sum = crc(&[
            &[REMOVE, key.as_bytes().len() as u8],
            &0u32.to_le_bytes(),
            key.as_bytes(),
        ]);
        let head = header(REMOVE, key.as_bytes(), 0, sum);
        self.append(&[&head, key.as_bytes()])?;
        self.index.remove(key);
        Ok(true)
    }

    fn append(&mut self, parts: &[&[u8]]) -> std::io::Result<()> {
        let record: Vec<u8> = parts.concat();
        self.file.write_all(&record)?;
        self.file.sync_data()?;
        self.end += record.len() as u64;
        Ok(())
    }
}

/// A whole, intact record at the start of `buf`: its kind, key and value.
fn parse(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    if buf.len() < HEAD || buf[0..4] != MAGIC.to_le_bytes() {
        return None;
    }
    let kind = buf[4];
    let key_len = buf[5] as usize;
    let value_len = u32::from_le_bytes(buf[6..10].try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(buf[10..14].try_into().ok()?);
    let total = HEAD + key_len + value_len;
    if buf.len() < total || !(kind == PUT || kind == REMOVE) || key_len == 0 {
        return None;
    }
    let (key, value) = buf[HEAD..total].split_at(key_len);
    let ok = crc(&[&buf[4..6], &buf[6..10], key, value]) == sum;
    ok.then_some((kind, key, value))
}

/// A record at `at` whose header looks whole and whose end meets the next record (or
/// the end of the data): its key and length, even if its checksum fails.
fn framed(data: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let buf = &data[at..];
    if buf.len() < HEAD || buf[0..4] != MAGIC.to_le_bytes() || !matches!(buf[4], PUT | REMOVE) {
        return None;
    }
    let key_len = buf[5] as usize;
    let value_len = u32::from_le_bytes(buf[6..10].try_into().ok()?) as usize;
    let total = HEAD + key_len + value_len;
    let rest = buf.get(total..)?;
    let meets = rest.is_empty() || rest.starts_with(&MAGIC.to_le_bytes());
    (key_len > 0 && meets).then(|| (&buf[HEAD..HEAD + key_len], total))
}

type Scanned = (HashMap<Key, (u64, u32)>, u64, Recovery);

/// Reads every record in order. A record that fails its checks is skipped by looking
/// for the next magic number after it; bytes after the last whole record are a torn
/// tail.
fn scan(file: &File) -> std::io::Result<Scanned> {
    let mut data = Vec::new();
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(0))?;
    reader.read_to_end(&mut data)?;
    let mut index = HashMap::new();
    let mut recovery = Recovery::default();
    let (mut at, mut end) = (0usize, 0usize);
    while at < data.len() {
        match parse(&data[at..]) {
            Some((kind, key, value)) => {
                let total = HEAD + key.len() + value.len();
                if let Ok(key) = Key::new(key) {
                    if kind == PUT {
                        let value_at = (at + HEAD + key.as_bytes().len()) as u64;
                        index.insert(key, (value_at, value.len() as u32));
                    } else {
                        index.remove(&key);
                    }
                }
                at += total;
                end = at;
            }
            None => {
                if let Some((key, total)) = framed(&data, at) {
                    // The frame holds but the checksum does not: the object's newest
                    // version is lost, so no older one may stand in for it.
                    recovery.damaged += 1;
                    if let Ok(key) = Key::new(key) {
                        index.remove(&key);
                    }
                    at += total;
                    end = at;
                    continue;
                }
                let next = data[at + 1..]
                    .windows(4)
                    .position(|w| w == MAGIC.to_le_bytes())
                    .map(|p| at + 1 + p);
                match next {
                    Some(n) => {
                        recovery.damaged += 1;
                        at = n;
                    }
                    None => break,
                }
            }
        }
    }
    recovery.torn_tail = (data.len() - end) as u64;
    recovery.objects = index.len();
    Ok((index, end as u64, recovery))
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

    #[test]
    fn objects_survive_a_reopen_and_the_last_word_wins() {
        let d = dir("reopen");
        {
            let (mut s, r) = SsdStore::open(&d).unwrap();
            assert_eq!(r, Recovery::default());
            for i in 0..50 {
                s.put(&key(i), &value(i)).unwrap();
            }
            s.put(&key(3), b"replaced").unwrap();
            assert!(s.remove(&key(4)).unwrap());
            assert!(!s.remove(&key(4)).unwrap());
        }
        let (s, r) = SsdStore::open(&d).unwrap();
        assert_eq!((r.objects, r.damaged, r.torn_tail), (49, 0, 0));
        assert_eq!(s.get(&key(3)).unwrap().unwrap(), b"replaced");
        assert_eq!(s.get(&key(4)).unwrap(), None);
        for i in (0..50).filter(|i| ![3, 4].contains(i)) {
            assert_eq!(s.get(&key(i)).unwrap().unwrap(), value(i));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_records_are_skipped_and_counted_and_a_torn_tail_is_cut() {
        let d = dir("damage");
        {
            let (mut s, _) = SsdStore::open(&d).unwrap();
            s.put(&key(12), b"first version of 12").unwrap();
            for i in 0..20 {
                s.put(&key(i), &value(i)).unwrap();
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
        bytes.extend_from_slice(&header(PUT, b"obj/x", 1000, 0));
        bytes.extend_from_slice(b"obj/x partial");
        std::fs::write(&path, &bytes).unwrap();

        let (mut s, r) = SsdStore::open(&d).unwrap();
        assert_eq!(r.objects, 18);
        assert_eq!(r.damaged, 2);
        assert!(r.torn_tail > 0);
        for i in 0..20 {
            let got = s.get(&key(i)).unwrap();
            if i == 5 || i == 12 {
                assert_eq!(got, None, "a damaged record is never served");
            } else {
                assert_eq!(got, Some(value(i)), "object {i}");
            }
        }
        // New records follow the last whole one and survive another reopen.
        s.put(&key(99), b"after").unwrap();
        drop(s);
        let (s, r) = SsdStore::open(&d).unwrap();
        assert_eq!((r.objects, r.torn_tail), (19, 0));
        assert_eq!(s.get(&key(99)).unwrap().unwrap(), b"after");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
