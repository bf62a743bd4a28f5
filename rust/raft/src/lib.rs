//! The meta state machine replicated with openraft.
//!
//! Log entries carry [`Command`]s — the leader's decisions as values — and every
//! member applies them to its own [`StateMachine`], so all reach the same state. This
//! crate holds the storage openraft needs, in two parts with locks of their own: the
//! [`LogStore`] (vote and log) and the [`StateMachineStore`] (applied state and
//! snapshots, a [`StateMachine::image`]). Both live in memory, and optionally in a data
//! directory that survives restarts (see [`disk`]); compaction keeps the log short.
//!
//! Disk writes never run on the runtime's threads: one writer thread fsyncs the log
//! (several appends that queue up share one fsync) and tells openraft when each is
//! durable, and snapshots are encoded and saved on blocking threads. A slow disk slows
//! what waits for it, never heartbeats or reads.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use bincode::Options;
use openraft::storage::{
    LogFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
    Snapshot,
};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use memcache_meta::{Applied, Command, PolicyKind, StateMachine};

pub mod disk;

use disk::{LogFiles, Op};

pub type NodeId = u64;

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Applied(Applied),
    /// Blank and membership entries change no object.
    Nothing,
}

openraft::declare_raft_types!(
    /// The types of the meta service's Raft group.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
);

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, &e).into()
}

fn write_error(e: std::io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

/// Opens the vote, log and state of a member kept in `dir`: everything openraft is
/// told is saved has been fsync'ed there, and reopening brings it back (openraft then
/// re-applies the committed log after the snapshot). A damaged directory is an error,
/// never a shorter history.
pub fn open(dir: &Path, policy: PolicyKind) -> std::io::Result<(LogStore, StateMachineStore)> {
    let (files, r) = LogFiles::open(dir)?;
    let sm = StateMachineStore::new(policy, Some(dir.to_path_buf()));
    if let Some(s) = r.snapshot {
        let image = decode_image(&s.data).map_err(std::io::Error::other)?;
        let stored = Arc::new(StoredSnapshot {
            meta: s.meta,
            data: s.data,
        });
        lock(&sm.inner).restore(StateMachine::from_image(image.state), stored);
    }
    let log = LogStore {
        mem: Arc::new(Mutex::new(LogMem {
            vote: r.vote,
            committed: r.committed,
            log: r.log,
            last_purged: r.last_purged,
        })),
        writer: Some(Writer::start(files)?),
        cut_tail: r.cut_tail,
        dir: Some(Arc::new(dir.to_path_buf())),
    };
    Ok((log, sm))
}

/// A member kept in memory only.
pub fn in_memory(policy: PolicyKind) -> (LogStore, StateMachineStore) {
    let log = LogStore {
        mem: Arc::new(Mutex::new(LogMem::default())),
        writer: None,
        cut_tail: false,
        dir: None,
    };
    (log, StateMachineStore::new(policy, None))
}

// ------------------------------------------------------------------------------ the log

#[derive(Default)]
struct LogMem {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
}

/// The vote and the log of one member. Cloning shares them.
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<LogMem>>,
    writer: Option<Writer>,
    cut_tail: bool,
    dir: Option<Arc<PathBuf>>,
}

impl LogStore {
    /// Whether opening cut a torn tail off the log. The cut records may have been
    /// acknowledged (a crash tears only an unacknowledged write, but a damaged disk
    /// can lose more), so such a member must not vote or campaign until it has caught
    /// up with a leader: its vote could elect a member that lacks committed entries.
    pub fn cut_tail(&self) -> bool {
        self.cut_tail
    }

    /// Ends what [`cut_tail`](Self::cut_tail) began: the log has caught up with a
    /// leader's commit index.
    pub fn caught_up(&self) -> std::io::Result<()> {
        match &self.dir {
            Some(dir) => match std::fs::remove_file(dir.join(disk::RECOVERING)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// The id of the last entry in the log (or the last purged one).
    pub fn last_log_id(&self) -> Option<LogId<NodeId>> {
        let mem = lock(&self.mem);
        mem.log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(mem.last_purged)
    }
}

type Reply = tokio::sync::oneshot::Sender<std::io::Result<()>>;

enum Done {
    Flushed(LogFlushed<TypeConfig>),
    Reply(Reply),
}

enum Job {
    Log(Vec<Op>, Done),
    Vote(Vote<NodeId>, Reply),
    /// Rides along with the next write: it is worth no fsync of its own.
    Committed(LogId<NodeId>),
}

/// The thread that owns the data directory's log files and does every write, in the
/// order asked, so a vote and the appends around it reach the disk in that order.
#[derive(Clone)]
struct Writer(mpsc::Sender<Job>);

impl Writer {
    fn start(mut files: LogFiles) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || {
                let mut committed = None;
                let mut next = rx.recv().ok();
                while let Some(job) = next.take() {
                    match job {
                        Job::Vote(vote, reply) => {
                            let _ = reply.send(files.save_vote(&vote));
                        }
                        Job::Committed(c) => committed = committed.max(Some(c)),
                        Job::Log(mut ops, done) => {
                            // Writes that queued up meanwhile share this one's fsync.
                            let mut dones = vec![done];
                            while let Ok(job) = rx.try_recv() {
                                match job {
                                    Job::Log(more, done) if ops.len() < 4096 => {
                                        ops.extend(more);
                                        dones.push(done);
                                    }
                                    Job::Committed(c) => committed = committed.max(Some(c)),
                                    other => {
                                        next = Some(other);
                                        break;
                                    }
                                }
                            }
                            ops.extend(committed.take().map(Op::Committed));
                            let result = files.write(&ops);
                            for done in dones {
                                let r = match &result {
                                    Ok(()) => Ok(()),
                                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                                };
                                match done {
                                    Done::Flushed(cb) => cb.log_io_completed(r),
                                    Done::Reply(tx) => {
                                        let _ = tx.send(r);
                                    }
                                }
                            }
                        }
                    }
                    if next.is_none() {
                        next = rx.recv().ok();
                    }
                }
            })?;
        Ok(Writer(tx))
    }

    fn send(&self, job: Job) -> std::io::Result<()> {
        self.0
            .send(job)
            .map_err(|_| std::io::Error::other("the Raft log writer stopped"))
    }

    /// Writes `ops` and waits until they are durable.
    async fn write(&self, ops: Vec<Op>) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Log(ops, Done::Reply(tx)))?;
        rx.await
            .map_err(|_| std::io::Error::other("the Raft log writer stopped"))?
    }

    async fn save_vote(&self, vote: Vote<NodeId>) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Vote(vote, tx))?;
        rx.await
            .map_err(|_| std::io::Error::other("the Raft log writer stopped"))?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(lock(&self.mem)
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = lock(&self.mem).last_purged;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        if let Some(w) = &self.writer {
            w.save_vote(*vote).await.map_err(write_error)?;
        }
        lock(&self.mem).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(lock(&self.mem).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Written with the next write, unwaited: a commit index that is behind after a
        // crash only means re-applying less at start; openraft learns the rest.
        lock(&self.mem).committed = committed;
        if let (Some(w), Some(c)) = (&self.writer, committed) {
            w.send(Job::Committed(c)).map_err(write_error)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(lock(&self.mem).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let Some(w) = &self.writer else {
            // In memory only: the entries move into the log, no copy made.
            let mut mem = lock(&self.mem);
            for e in entries {
                mem.log.insert(e.log_id.index, e);
            }
            drop(mem);
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let entries: Vec<_> = entries.into_iter().collect();
        {
            let mut mem = lock(&self.mem);
            for e in &entries {
                mem.log.insert(e.log_id.index, e.clone());
            }
        }
        w.send(Job::Log(vec![Op::Append(entries)], Done::Flushed(callback)))
            .map_err(write_error)?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        lock(&self.mem).log.split_off(&log_id.index);
        if let Some(w) = &self.writer {
            w.write(vec![Op::Truncate(log_id.index)])
                .await
                .map_err(write_error)?;
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        {
            let mut mem = lock(&self.mem);
            mem.last_purged = mem.last_purged.max(Some(log_id));
            let keep = mem.log.split_off(&(log_id.index + 1));
            mem.log = keep;
        }
        if let Some(w) = &self.writer {
            w.write(vec![Op::Purge(log_id)])
                .await
                .map_err(write_error)?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ the state machine

#[derive(Serialize, Deserialize)]
struct SnapshotImage {
    state: memcache_meta::Image,
}

fn decode_image(data: &[u8]) -> bincode::Result<SnapshotImage> {
    // The input bounds what is read; bincode reserves no more than it has seen.
    disk::codec()
        .with_limit(data.len() as u64)
        .deserialize(data)
}

struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

struct SmInner {
    sm: StateMachine,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<Arc<StoredSnapshot>>,
    snapshots_built: u64,
}

impl SmInner {
    /// Takes `sm`, the state `snapshot` holds, as the applied state.
    fn restore(&mut self, sm: StateMachine, snapshot: Arc<StoredSnapshot>) {
        self.sm = sm;
        self.last_applied = snapshot.meta.last_log_id;
        self.membership = snapshot.meta.last_membership.clone();
        self.snapshot = Some(snapshot);
    }
}

/// The applied state and the snapshots of one member. Cloning shares them.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<SmInner>>,
    /// Where snapshots are saved, if anywhere.
    dir: Option<Arc<PathBuf>>,
}

impl StateMachineStore {
    fn new(policy: PolicyKind, dir: Option<PathBuf>) -> StateMachineStore {
        StateMachineStore {
            inner: Arc::new(Mutex::new(SmInner {
                sm: StateMachine::new(policy),
                last_applied: None,
                membership: StoredMembership::default(),
                snapshot: None,
                snapshots_built: 0,
            })),
            dir: dir.map(Arc::new),
        }
    }

    /// Reads the applied state machine (for queries and the leader's planning).
    pub fn with_state<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        f(&lock(&self.inner).sm)
    }

    /// Mutable access for the leader's soft work (planning trials, read recency).
    pub fn with_state_mut<R>(&self, f: impl FnOnce(&mut StateMachine) -> R) -> R {
        f(&mut lock(&self.inner).sm)
    }

    /// Saves a snapshot in the data directory (if any), off the runtime's threads.
    async fn persist(&self, snapshot: Arc<StoredSnapshot>) -> StorageResult<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let save = move || {
            let file = disk::SnapshotFile {
                meta: snapshot.meta.clone(),
                data: snapshot.data.clone(),
            };
            disk::write_checked(&dir, "snapshot", &file)
        };
        off_runtime(save).await.map_err(write_error)
    }
}

/// Runs blocking work on the runtime's blocking threads (inline when there is no
/// runtime, as in openraft's test suite).
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt.spawn_blocking(f).await.map_err(std::io::Error::other)?,
        Err(_) => f(),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // The image is copied under the lock; encoding and saving it (the slow part
        // for a big pool) run on blocking threads, so applying and reading go on.
        let (image, last, membership, n) = {
            let mut inner = lock(&self.inner);
            inner.snapshots_built += 1;
            let image = SnapshotImage {
                state: inner.sm.image(),
            };
            (
                image,
                inner.last_applied,
                inner.membership.clone(),
                inner.snapshots_built,
            )
        };
        let data = off_runtime(move || {
            disk::codec()
                .serialize(&image)
                .map_err(std::io::Error::other)
        })
        .await
        .map_err(read_error)?;
        let snapshot_id = match last {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("none-{n}"),
        };
        let stored = Arc::new(StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: last,
                last_membership: membership,
                snapshot_id,
            },
            data,
        });
        self.persist(stored.clone()).await?;
        let mut inner = lock(&self.inner);
        // A snapshot installed meanwhile may be newer than this one.
        if inner
            .snapshot
            .as_ref()
            .is_none_or(|s| s.meta.last_log_id <= stored.meta.last_log_id)
        {
            inner.snapshot = Some(stored.clone());
        }
        Ok(Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = lock(&self.inner);
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = lock(&self.inner);
        let mut out = Vec::new();
        for e in entries {
            inner.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => Response::Nothing,
                EntryPayload::Normal(cmd) => Response::Applied(inner.sm.apply(cmd)),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(e.log_id), m);
                    Response::Nothing
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let stored = Arc::new(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        let decoding = stored.clone();
        let image =
            off_runtime(move || decode_image(&decoding.data).map_err(std::io::Error::other))
                .await
                .map_err(read_error)?;
        self.persist(stored.clone()).await?;
        let sm = StateMachine::from_image(image.state);
        lock(&self.inner).restore(sm, stored);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(lock(&self.inner).snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests;
