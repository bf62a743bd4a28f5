//! The data directory of a Raft member.
//!
//! The log is a sequence of segment files of checksummed records; every record is one
//! write of the writer (a group of appends, a truncation or a purge) and is fsync'ed
//! before anyone is told it is saved. Vote, commit index and snapshot are files replaced
//! atomically, each checksummed too.
//!
//! Opening tells a torn tail from damage. A crash can tear only the last write, so a bad
//! record followed by nothing valid is cut off; a bad record followed by a valid later
//! record (or a gap in the sequence numbers, or a damaged vote or snapshot) means history
//! the node acknowledged is gone, and opening fails instead of serving a shorter log.
//!
//! Why not an engine: the engines made for this cut at the first bad batch of the last
//! file (raft-engine's `TolerateTailCorruption`) or fall back to the previous commit
//! (redb's two commit slots); both serve a shorter history after a flipped bit, which is
//! what this file exists to prevent.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bincode::Options;
use openraft::{BasicNode, Entry, LogId, SnapshotMeta, Vote};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{NodeId, TypeConfig};

/// Segment files are named this, then the first record's sequence number in hex.
pub const LOG_SEGMENT_PREFIX: &str = "raft-log-";
/// A segment holding more than this is closed and a new one begun.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record: far above one write of `max_payload_entries` large batches, and a
/// length beyond it is damage, not an allocation to attempt.
pub const MAX_RECORD: u32 = 1 << 30;

/// Present while a member whose log lost its tail has not caught up with a leader: it
/// outlives restarts, so a second restart cannot forget that the log may be short.
pub const RECOVERING: &str = "recovering";

const RECORD_MAGIC: u32 = 0x524d_4d43; // "CMMR" little-endian
const HEADER: usize = 20; // magic, length, sequence, crc
const FILE_MAGIC: &[u8; 8] = b"MMCFILE1";
const FILE_HEADER: usize = 8 + 8 + 4; // magic, length, crc

/// One change to the log, as written.
#[derive(Serialize, Deserialize)]
pub enum Op {
    Append(Vec<Entry<TypeConfig>>),
    /// Entries from this index on were removed (a conflict with the leader).
    Truncate(u64),
    /// Entries up to and including this log id were compacted away.
    Purge(LogId<NodeId>),
    /// The group committed entries up to this log id.
    Committed(LogId<NodeId>),
}

#[derive(Serialize, Deserialize)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    pub data: Vec<u8>,
}

/// What a data directory held when it was opened.
#[derive(Default)]
pub struct Recovered {
    pub vote: Option<Vote<NodeId>>,
    pub committed: Option<LogId<NodeId>>,
    pub log: BTreeMap<u64, Entry<TypeConfig>>,
    pub last_purged: Option<LogId<NodeId>>,
    pub snapshot: Option<SnapshotFile>,
    /// A torn tail was cut off: records this node acknowledged may be gone with it.
    pub cut_tail: bool,
}

/// The encoding of records and files: compact integers, and no read past its input.
pub fn codec() -> impl Options {
    bincode::DefaultOptions::new()
}

fn damaged(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, what.to_string())
}

struct Segment {
    path: PathBuf,
    /// Highest entry index appended in it: once purged, the segment can go.
    max_index: Option<u64>,
}

/// The log's files, written by one thread at a time.
pub struct LogFiles {
    dir: PathBuf,
    /// Closed segments, oldest first, then the open one (last).
    segments: Vec<Segment>,
    file: File,
    len: u64,
    next_seq: u64,
    segment_bytes: u64,
}

impl LogFiles {
    /// Opens (or creates) `dir`, reads back what it holds and cuts a torn tail.
    pub fn open(dir: &Path) -> std::io::Result<(LogFiles, Recovered)> {
        Self::open_with_segments_of(dir, SEGMENT_BYTES)
    }

    /// [`open`](Self::open), closing segments once they hold `segment_bytes`.
    pub fn open_with_segments_of(
        dir: &Path,
        segment_bytes: u64,
    ) -> std::io::Result<(LogFiles, Recovered)> {
        std::fs::create_dir_all(dir)?;
        if dir.join("log.jsonl").exists() {
            return Err(damaged(format!(
                "{} holds a log of an older format; remove the directory to rejoin the \
                 group as a new member",
                dir.display()
            )));
        }
        let mut r = Recovered {
            vote: read_checked(&dir.join("vote"))?,
            snapshot: read_checked(&dir.join("snapshot"))?,
            ..Default::default()
        };
        let names = segment_files(dir)?;
        let mut segments = Vec::new();
        let mut next_seq = names.first().map(|(s, _)| *s).unwrap_or(1);
        let count = names.len();
        let mut open_len = 0;
        for (i, (first, path)) in names.into_iter().enumerate() {
            if first != next_seq {
                return Err(damaged(format!(
                    "{}: expected record {next_seq} next, the segment starts at {first} \
                     (a segment is missing or damaged)",
                    path.display()
                )));
            }
            let last = i + 1 == count;
            let bytes = std::fs::read(&path)?;
            let scan = scan(&bytes, first);
            if let (Some(bad), Some(why)) = (scan.bad_at, &scan.undecodable) {
                // Its checksum holds, so no crash tore it: written by another version
                // of this program, or by a bug. Cutting it would drop an acknowledged
                // write.
                return Err(damaged(format!(
                    "{}: record at byte {bad} is intact but does not decode ({why}); \
                     refusing to start (was the data directory written by another \
                     version?)",
                    path.display()
                )));
            }
            let mut max_index = None;
            for ops in scan.records {
                apply(&mut r, &mut max_index, ops);
            }
            if let Some(bad) = scan.bad_at {
                if !last || scan.valid_after {
                    return Err(damaged(format!(
                        "{}: record at byte {bad} is damaged and acknowledged records follow \
                         it; refusing to start on a shorter history (remove the data \
                         directory to rejoin the group as a new member)",
                        path.display()
                    )));
                }
                tracing::warn!(
                    file = %path.display(),
                    at = bad,
                    dropped = bytes.len() as u64 - bad,
                    "cutting the torn tail of the Raft log (a write a crash interrupted)"
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(bad)?;
                f.sync_all()?;
                r.cut_tail = true;
            }
            open_len = scan.bad_at.unwrap_or(bytes.len() as u64);
            next_seq = scan.next_seq;
            segments.push(Segment { path, max_index });
        }
        check_consecutive(dir, &r)?;
        if r.cut_tail {
            File::create(dir.join(RECOVERING))?.sync_all()?;
            sync_dir(dir)?;
            // A leader that restarts resumes leading at once (openraft) unless its
            // vote is uncommitted: with a short log it would overwrite its followers'.
            if let Some(v) = r.vote.as_mut().filter(|v| v.committed) {
                v.committed = false;
                write_checked(dir, "vote", v)?;
            }
        }
        r.cut_tail |= dir.join(RECOVERING).exists();
        let mut files = match segments.last() {
            Some(s) => LogFiles {
                dir: dir.to_path_buf(),
                file: OpenOptions::new().append(true).open(&s.path)?,
                segments,
                len: open_len,
                next_seq,
                segment_bytes,
            },
            None => {
                let (file, path) = new_segment(dir, next_seq)?;
                LogFiles {
                    dir: dir.to_path_buf(),
                    segments: vec![Segment {
                        path,
                        max_index: None,
                    }],
                    file,
                    len: 0,
                    next_seq,
                    segment_bytes,
                }
            }
        };
        files.drop_purged(r.last_purged.map(|l| l.index))?;
        Ok((files, r))
    }

    /// Writes `ops` as one record and fsyncs it. A full disk is waited out (the record
    /// is rewritten once space returns); any other failure is returned.
    pub fn write(&mut self, ops: &[Op]) -> std::io::Result<()> {
        let payload = codec().serialize(ops).map_err(std::io::Error::other)?;
        if payload.len() as u64 > MAX_RECORD as u64 {
            return Err(std::io::Error::other("a log write above the record limit"));
        }
        if self.len >= self.segment_bytes {
            self.roll()?;
        }
        let record = frame(self.next_seq, &payload);
        let start = self.len;
        retry_while_full(|| {
            let written = self
                .file
                .write_all(&record)
                .and_then(|()| self.file.sync_data());
            if written.is_err() {
                // Whatever part of the record reached the file is cut before a retry.
                let _ = self.file.set_len(start);
            }
            written
        })?;
        self.len += record.len() as u64;
        self.next_seq += 1;
        let open = self.segments.last_mut().expect("one open segment");
        for op in ops {
            if let Op::Append(entries) = op {
                if let Some(e) = entries.last() {
                    open.max_index = open.max_index.max(Some(e.log_id.index));
                }
            }
        }
        if let Some(Op::Purge(upto)) = ops.iter().rev().find(|o| matches!(o, Op::Purge(_))) {
            self.drop_purged(Some(upto.index))?;
        }
        Ok(())
    }

    fn roll(&mut self) -> std::io::Result<()> {
        let (file, path) = new_segment(&self.dir, self.next_seq)?;
        self.file = file;
        self.len = 0;
        self.segments.push(Segment {
            path,
            max_index: None,
        });
        Ok(())
    }

    /// Deletes the closed segments whose every entry is purged (oldest first, so what is
    /// left still begins with a segment's first record).
    fn drop_purged(&mut self, purged: Option<u64>) -> std::io::Result<()> {
        let Some(purged) = purged else { return Ok(()) };
        let mut gone = 0;
        while gone + 1 < self.segments.len()
            && self.segments[gone].max_index.is_none_or(|m| m <= purged)
        {
            std::fs::remove_file(&self.segments[gone].path)?;
            gone += 1;
        }
        if gone > 0 {
            self.segments.drain(..gone);
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    pub fn save_vote(&self, vote: &Vote<NodeId>) -> std::io::Result<()> {
        write_checked(&self.dir, "vote", vote)
    }
}

/// The log segments in `dir`, oldest first, each with its first record's number.
pub fn segment_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix(LOG_SEGMENT_PREFIX))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        names.push((seq, e.path()));
    }
    names.sort();
    Ok(names)
}

fn apply(r: &mut Recovered, max_index: &mut Option<u64>, ops: Vec<Op>) {
    for op in ops {
        match op {
            Op::Append(entries) => {
                for e in entries {
                    *max_index = (*max_index).max(Some(e.log_id.index));
                    r.log.insert(e.log_id.index, e);
                }
            }
            Op::Truncate(i) => {
                r.log.split_off(&i);
            }
            Op::Purge(id) => {
                r.log = r.log.split_off(&(id.index + 1));
                r.last_purged = r.last_purged.max(Some(id));
            }
            Op::Committed(id) => r.committed = r.committed.max(Some(id)),
        }
    }
}

/// Raft examines only the ends of a log: a hole in it is damage.
fn check_consecutive(dir: &Path, r: &Recovered) -> std::io::Result<()> {
    let mut expect = r.last_purged.map(|l| l.index + 1);
    for &i in r.log.keys() {
        if expect.is_some_and(|e| e != i) {
            return Err(damaged(format!(
                "the Raft log in {} lacks entry {} (next present: {i})",
                dir.display(),
                expect.unwrap_or_default()
            )));
        }
        expect = Some(i + 1);
    }
    Ok(())
}

fn new_segment(dir: &Path, first_seq: u64) -> std::io::Result<(File, PathBuf)> {
    let path = dir.join(format!("{LOG_SEGMENT_PREFIX}{first_seq:016x}"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    sync_dir(dir)?;
    Ok((file, path))
}

fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&record_crc(payload.len() as u32, seq, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn record_crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The record starting at `at`, if one is there intact: (sequence number, payload).
fn record_at(bytes: &[u8], at: usize) -> Option<(u64, &[u8])> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    if u32_at(header, 0) != RECORD_MAGIC {
        return None;
    }
    let len = u32_at(header, 4);
    if len > MAX_RECORD {
        return None;
    }
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let payload = bytes.get(at + HEADER..(at + HEADER).checked_add(len as usize)?)?;
    (record_crc(len, seq, payload) == u32_at(header, 16)).then_some((seq, payload))
}

struct Scan {
    records: Vec<Vec<Op>>,
    next_seq: u64,
    /// Where the first record that is not intact begins.
    bad_at: Option<u64>,
    /// Whether an intact record of a later sequence number lies beyond it.
    valid_after: bool,
    /// Why the record at `bad_at`, intact by its checksum, did not decode.
    undecodable: Option<String>,
}

fn scan(bytes: &[u8], first_seq: u64) -> Scan {
    let mut s = Scan {
        records: Vec::new(),
        next_seq: first_seq,
        bad_at: None,
        valid_after: false,
        undecodable: None,
    };
    let mut at = 0;
    while at < bytes.len() {
        let ops = match record_at(bytes, at) {
            Some((seq, payload)) if seq == s.next_seq => codec().deserialize::<Vec<Op>>(payload),
            _ => break,
        };
        let ops = match ops {
            Ok(ops) => ops,
            Err(e) => {
                s.undecodable = Some(e.to_string());
                break;
            }
        };
        s.records.push(ops);
        s.next_seq += 1;
        at += HEADER + u32_at(bytes, at + 4) as usize;
    }
    if at < bytes.len() {
        s.bad_at = Some(at as u64);
        let last_good = s.next_seq - 1;
        s.valid_after = (at + 1..bytes.len())
            .any(|p| record_at(bytes, p).is_some_and(|(seq, _)| seq > last_good));
    }
    s
}

/// Reruns `f` while it fails for want of space, logging now and then.
fn retry_while_full(mut f: impl FnMut() -> std::io::Result<()>) -> std::io::Result<()> {
    let mut wait = Duration::from_millis(20);
    let mut logged = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        match f() {
            Err(e) if is_full(&e) => {
                if logged.elapsed() > Duration::from_secs(10) {
                    tracing::error!(error = %e, "the Raft data disk is full; waiting for space");
                    logged = std::time::Instant::now();
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

fn is_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// Reads a file [`write_checked`] wrote; `None` when there is none, an error when it
/// is damaged.
pub fn read_checked<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |why: &str| damaged(format!("{} is damaged ({why})", path.display()));
    if bytes.len() < FILE_HEADER || &bytes[..8] != FILE_MAGIC {
        return Err(bad("no header"));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let body = &bytes[FILE_HEADER..];
    if body.len() as u64 != len {
        return Err(bad("wrong length"));
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[8..16]);
    h.update(body);
    if h.finalize() != u32_at(&bytes, 16) {
        return Err(bad("checksum"));
    }
    codec()
        .deserialize(body)
        .map(Some)
        .map_err(|e| bad(&e.to_string()))
}

/// Replaces `dir/name` atomically: a crash leaves the old file or the new one.
pub fn write_checked<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let body = codec().serialize(value).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(FILE_HEADER + body.len());
    out.extend_from_slice(FILE_MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&(body.len() as u64).to_le_bytes());
    h.update(&body);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&body);
    let tmp = dir.join(format!("{name}.tmp"));
    retry_while_full(|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()
    })?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    /// A record whose checksum holds but whose payload does not decode was not torn
    /// by a crash: it is reported, never taken for a torn tail to cut.
    #[test]
    fn an_intact_record_that_does_not_decode_is_reported() {
        let good = codec().serialize(&Vec::<Op>::new()).unwrap();
        let mut bytes = frame(7, &good);
        let end_of_good = bytes.len() as u64;
        bytes.extend(frame(8, &[0xff; 40]));
        let s = scan(&bytes, 7);
        assert_eq!((s.records.len(), s.next_seq), (1, 8));
        assert_eq!(s.bad_at, Some(end_of_good));
        assert!(s.undecodable.is_some());
        // A torn one (its checksum fails) is just damaged.
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        let s = scan(&bytes, 7);
        assert_eq!((s.bad_at, s.undecodable), (Some(end_of_good), None));
    }
}
