//! The optional data directory of a Raft member: vote, commit index and snapshot as
//! files replaced atomically, and the log as an append-only file of records, each
//! write fsync'ed before openraft is told it is done.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use openraft::{BasicNode, Entry, LogId, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};

use crate::{NodeId, TypeConfig};

#[derive(Serialize, Deserialize)]
enum Record {
    Append(Entry<TypeConfig>),
    /// Entries from this index on were removed (a conflict with the leader).
    Truncate(u64),
    /// Entries up to and including this log id were compacted away.
    Purge(LogId<NodeId>),
}

#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotFile {
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    pub data: Vec<u8>,
}

/// What a data directory held when it was opened.
#[derive(Default)]
pub(crate) struct Recovered {
    pub vote: Option<Vote<NodeId>>,
    pub committed: Option<LogId<NodeId>>,
    pub log: BTreeMap<u64, Entry<TypeConfig>>,
    pub last_purged: Option<LogId<NodeId>>,
    pub snapshot: Option<SnapshotFile>,
}

pub(crate) struct Disk {
    dir: PathBuf,
    log: File,
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Disk {
    /// Opens (or creates) `dir` and reads back what it holds.
    pub fn open(dir: &Path) -> std::io::Result<(Disk, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let mut r = Recovered {
            vote: read_json(&dir.join("vote.json"))?,
            committed: read_json(&dir.join("committed.json"))?,
            snapshot: read_json(&dir.join("snapshot.json"))?,
            ..Default::default()
        };
        let path = dir.join("log.jsonl");
        if path.exists() {
            for line in BufReader::new(File::open(&path)?).lines() {
                let line = line?;
                // A torn last line (a crash mid-write) was never acknowledged.
                let Ok(record) = serde_json::from_str::<Record>(&line) else {
                    break;
                };
                match record {
                    Record::Append(e) => {
                        r.log.insert(e.log_id.index, e);
                    }
                    Record::Truncate(i) => {
                        r.log.split_off(&i);
                    }
                    Record::Purge(id) => {
                        r.log = r.log.split_off(&(id.index + 1));
                        r.last_purged = Some(id);
                    }
                }
            }
        }
        let log = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok((
            Disk {
                dir: dir.to_path_buf(),
                log,
            },
            r,
        ))
    }

    fn append_records(&mut self, records: &[Record]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(io)?;
            buf.push(b'\n');
        }
        self.log.write_all(&buf)?;
        self.log.sync_data()
    }

    pub fn append(&mut self, entries: &[Entry<TypeConfig>]) -> std::io::Result<()> {
        let records: Vec<Record> = entries.iter().cloned().map(Record::Append).collect();
        self.append_records(&records)
    }

    pub fn truncate(&mut self, from: u64) -> std::io::Result<()> {
        self.append_records(&[Record::Truncate(from)])
    }

    /// Records the purge, and rewrites the log file with only what is left.
    pub fn purge(
        &mut self,
        upto: LogId<NodeId>,
        remaining: &BTreeMap<u64, Entry<TypeConfig>>,
    ) -> std::io::Result<()> {
        let tmp = self.dir.join("log.jsonl.tmp");
        {
            let mut f = File::create(&tmp)?;
            let mut buf = Vec::new();
            serde_json::to_writer(&mut buf, &Record::Purge(upto)).map_err(io)?;
            buf.push(b'\n');
            for e in remaining.values() {
                serde_json::to_writer(&mut buf, &Record::Append(e.clone())).map_err(io)?;
                buf.push(b'\n');
            }
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        let path = self.dir.join("log.jsonl");
        std::fs::rename(&tmp, &path)?;
        self.log = OpenOptions::new().append(true).open(&path)?;
        sync_dir(&self.dir)
    }

    pub fn save_vote(&self, vote: &Vote<NodeId>) -> std::io::Result<()> {
        write_json(&self.dir, "vote.json", vote)
    }

    pub fn save_committed(&self, committed: &Option<LogId<NodeId>>) -> std::io::Result<()> {
        write_json(&self.dir, "committed.json", committed)
    }

    pub fn save_snapshot(&self, snapshot: &SnapshotFile) -> std::io::Result<()> {
        write_json(&self.dir, "snapshot.json", snapshot)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(io),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `dir/name` atomically: a crash leaves the old file or the new one.
fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        serde_json::to_writer(&mut f, value).map_err(io)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
