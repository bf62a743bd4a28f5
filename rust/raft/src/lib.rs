//! The meta state machine replicated with openraft.
//!
//! Log entries carry [`Command`]s — the leader's decisions as values — and every
//! member applies them to its own [`StateMachine`], so all reach the same state. This
//! crate holds the storage openraft needs: the vote, the log, the applied state and
//! snapshots (a [`StateMachine::image`]). The log lives in memory, and optionally in a
//! data directory that survives restarts; compaction keeps it short.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogState, RaftLogReader, RaftSnapshotBuilder, RaftStorage, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use memcache_meta::{Applied, Command, PolicyKind, StateMachine};

mod disk;

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

#[derive(Serialize, Deserialize)]
struct SnapshotImage {
    state: memcache_meta::Image,
}

struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

struct Inner {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    sm: StateMachine,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<StoredSnapshot>,
    snapshots_built: u64,
    disk: Option<disk::Disk>,
}

/// Vote, log, state machine and snapshots of one member. Cloning shares them.
#[derive(Clone)]
pub struct RaftStore {
    inner: Arc<Mutex<Inner>>,
}

impl RaftStore {
    pub fn new(policy: PolicyKind) -> RaftStore {
        RaftStore {
            inner: Arc::new(Mutex::new(Inner {
                vote: None,
                committed: None,
                log: BTreeMap::new(),
                last_purged: None,
                sm: StateMachine::new(policy),
                last_applied: None,
                membership: StoredMembership::default(),
                snapshot: None,
                snapshots_built: 0,
                disk: None,
            })),
        }
    }

    /// A store kept in `dir` as well: everything openraft is told is saved has been
    /// fsync'ed there, and reopening the directory brings it back (openraft then
    /// re-applies the committed log after the snapshot).
    pub fn open(dir: &std::path::Path, policy: PolicyKind) -> std::io::Result<RaftStore> {
        let (disk, r) = disk::Disk::open(dir)?;
        let store = RaftStore::new(policy);
        {
            let mut inner = store.lock();
            inner.vote = r.vote;
            inner.committed = r.committed;
            inner.log = r.log;
            inner.last_purged = r.last_purged;
            if let Some(s) = r.snapshot {
                let image: SnapshotImage =
                    serde_json::from_slice(&s.data).map_err(std::io::Error::other)?;
                inner.sm = StateMachine::from_image(image.state);
                inner.last_applied = s.meta.last_log_id;
                inner.membership = s.meta.last_membership.clone();
                inner.snapshot = Some(StoredSnapshot {
                    meta: s.meta,
                    data: s.data,
                });
            }
            inner.disk = Some(disk);
        }
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the applied state machine (for queries and the leader's planning).
    pub fn with_state<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        f(&self.lock().sm)
    }

    /// Mutable access for the leader's soft work (planning trials, read recency).
    pub fn with_state_mut<R>(&self, f: impl FnOnce(&mut StateMachine) -> R) -> R {
        f(&mut self.lock().sm)
    }
}

fn io_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, &e).into()
}

fn write_error(e: std::io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl Inner {
    fn persist_snapshot(&self) -> std::io::Result<()> {
        if let (Some(disk), Some(s)) = (&self.disk, &self.snapshot) {
            let file = disk::SnapshotFile {
                meta: s.meta.clone(),
                data: s.data.clone(),
            };
            disk.save_snapshot(&file)?;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for RaftStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(self
            .lock()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for RaftStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // The image is copied under the lock; encoding it (the slow part for a big
        // pool) runs off the runtime's threads, so heartbeats and requests go on.
        let (image, last, membership) = {
            let inner = self.lock();
            let image = SnapshotImage {
                state: inner.sm.image(),
            };
            (image, inner.last_applied, inner.membership.clone())
        };
        let encode = move || serde_json::to_vec(&image);
        let data = match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(encode)
                .await
                .map_err(|e| io_error(std::io::Error::other(e)))?,
            Err(_) => encode(),
        }
        .map_err(io_error)?;
        let mut inner = self.lock();
        inner.snapshots_built += 1;
        let snapshot_id = match last {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshots_built),
            None => format!("none-{}", inner.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id,
        };
        inner.snapshot = Some(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        });
        inner.persist_snapshot().map_err(write_error)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStorage<TypeConfig> for RaftStore {
    type LogReader = Self;
    type SnapshotBuilder = Self;

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut inner = self.lock();
        if let Some(d) = &inner.disk {
            d.save_vote(vote).map_err(write_error)?;
        }
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut inner = self.lock();
        if let Some(d) = &inner.disk {
            d.save_committed(&committed).map_err(write_error)?;
        }
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.lock().committed)
    }

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.lock();
        let last = inner
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn append_to_log<I>(&mut self, entries: I) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let mut inner = self.lock();
        if let Some(d) = &mut inner.disk {
            d.append(&entries).map_err(write_error)?;
        }
        for e in entries {
            inner.log.insert(e.log_id.index, e);
        }
        Ok(())
    }

    async fn delete_conflict_logs_since(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.lock();
        if let Some(d) = &mut inner.disk {
            d.truncate(log_id.index).map_err(write_error)?;
        }
        inner.log.split_off(&log_id.index);
        Ok(())
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.lock();
        inner.last_purged = Some(log_id);
        let keep = inner.log.split_off(&(log_id.index + 1));
        inner.log = keep;
        let Inner { disk, log, .. } = &mut *inner;
        if let Some(d) = disk {
            d.purge(log_id, log).map_err(write_error)?;
        }
        Ok(())
    }

    async fn last_applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply_to_state_machine(
        &mut self,
        entries: &[Entry<TypeConfig>],
    ) -> StorageResult<Vec<Response>> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            inner.last_applied = Some(e.log_id);
            out.push(match &e.payload {
                EntryPayload::Blank => Response::Nothing,
                EntryPayload::Normal(cmd) => Response::Applied(inner.sm.apply(cmd.clone())),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(e.log_id), m.clone());
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
        let image: SnapshotImage = serde_json::from_slice(&data).map_err(io_error)?;
        let mut inner = self.lock();
        inner.sm = StateMachine::from_image(image.state);
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        inner.persist_snapshot().map_err(write_error)
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.lock().snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use memcache_core::{Key, Medium};
    use memcache_meta::{AllocItem, SegmentSpec};
    use openraft::CommittedLeaderId;

    fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    /// Commands applied through the log change the state machine, and a snapshot
    /// installed on another member gives it exactly the same state.
    #[tokio::test]
    async fn commands_apply_and_snapshots_restore() {
        let mut a = RaftStore::new(PolicyKind::Lru);
        let key = Key::new("k").unwrap();
        let cmds = [
            Command::RegisterService {
                service: 0,
                device_id: 0,
                segments: vec![SegmentSpec {
                    medium: Medium::Dram,
                    capacity: 1 << 20,
                    base: 0,
                }],
                first_segment: 0,
                attachment: vec![],
                now_ms: 0,
                recovered: vec![],
            },
            Command::Alloc {
                now_ms: 1,
                lease_ms: 1000,
                items: vec![AllocItem {
                    key: key.clone(),
                    size: 5000,
                    segments: vec![1],
                    ttl_ms: None,
                    writer: 0,
                    lease_ms: None,
                    drop_first: vec![],
                }],
                drop_after: vec![],
            },
            Command::Commit {
                now_ms: 2,
                items: vec![(key.clone(), 1)],
            },
        ];
        let entries: Vec<_> = cmds
            .into_iter()
            .enumerate()
            .map(|(i, c)| entry(i as u64 + 1, c))
            .collect();
        let replies = a.apply_to_state_machine(&entries).await.unwrap();
        assert_eq!(replies.len(), 3);
        assert!(a.with_state(|s| s.visible(&key, 3).is_ok()));
        let snap = a.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(3));

        let mut b = RaftStore::new(PolicyKind::Lru);
        b.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        assert_eq!(
            b.with_state(|s| s.fingerprint()),
            a.with_state(|s| s.fingerprint())
        );
        assert_eq!(
            b.last_applied_state().await.unwrap().0,
            snap.meta.last_log_id
        );
        let again = b.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(again.meta, snap.meta);
    }

    /// openraft's storage conformance suite.
    #[test]
    fn passes_the_openraft_storage_suite() {
        openraft::testing::Suite::test_all(|| async { RaftStore::new(PolicyKind::Lru) })
            .expect("storage suite");
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mmc-raft-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// The same suite with every store kept in a data directory.
    #[test]
    fn a_durable_store_passes_the_storage_suite_too() {
        let made = std::sync::Mutex::new(Vec::new());
        openraft::testing::Suite::test_all(|| {
            let dir = temp_dir("suite");
            made.lock().unwrap().push(dir.clone());
            async move { RaftStore::open(&dir, PolicyKind::Lru).unwrap() }
        })
        .expect("storage suite");
        for d in made.into_inner().unwrap() {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    /// What was saved is what a reopened directory holds.
    #[tokio::test]
    async fn a_reopened_data_directory_has_everything_saved() {
        let dir = temp_dir("reopen");
        let vote = Vote::new(3, 1);
        let key = memcache_core::Key::new("k").unwrap();
        let entries: Vec<_> = (1..=5u64)
            .map(|i| {
                entry(
                    i,
                    Command::Remove {
                        now_ms: i,
                        keys: vec![key.clone()],
                    },
                )
            })
            .collect();
        let (fingerprint, snapshot_meta) = {
            let mut s = RaftStore::open(&dir, PolicyKind::Lru).unwrap();
            s.save_vote(&vote).await.unwrap();
            s.append_to_log(entries.clone()).await.unwrap();
            s.delete_conflict_logs_since(entries[4].log_id)
                .await
                .unwrap();
            s.save_committed(Some(entries[3].log_id)).await.unwrap();
            s.apply_to_state_machine(&entries[..2]).await.unwrap();
            let snap = s.build_snapshot().await.unwrap();
            s.purge_logs_upto(entries[1].log_id).await.unwrap();
            (s.with_state(|sm| sm.fingerprint()), snap.meta)
        };
        let mut s = RaftStore::open(&dir, PolicyKind::Lru).unwrap();
        assert_eq!(s.read_vote().await.unwrap(), Some(vote));
        assert_eq!(s.read_committed().await.unwrap(), Some(entries[3].log_id));
        let state = s.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(entries[1].log_id));
        assert_eq!(state.last_log_id, Some(entries[3].log_id));
        let log = s.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(
            log.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(
            s.get_current_snapshot().await.unwrap().unwrap().meta,
            snapshot_meta
        );
        assert_eq!(
            s.last_applied_state().await.unwrap().0,
            snapshot_meta.last_log_id
        );
        assert_eq!(s.with_state(|sm| sm.fingerprint()), fingerprint);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
