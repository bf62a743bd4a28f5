use super::*;
use std::fs::OpenOptions;

use memcache_core::{Key, Medium};
use memcache_meta::AllocItem;
use memcache_proto::SegmentSpec;
use openraft::storage::RaftLogStorageExt;
use openraft::testing::StoreBuilder;
use openraft::CommittedLeaderId;

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn remove(i: u64) -> Entry<TypeConfig> {
    let key = Key::new(format!("key-{i}")).unwrap();
    entry(
        i,
        Command::Remove {
            now_ms: i,
            keys: vec![key],
            holds: vec![],
        },
    )
}

pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mmc-raft-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Removes its directory when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Commands applied through the log change the state machine, and a snapshot
/// installed on another member gives it exactly the same state.
#[tokio::test]
async fn commands_apply_and_snapshots_restore() {
    let (_, mut a) = in_memory(PolicyKind::Lru);
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
                replace: false,
            }],
            drop_after: vec![],
            holds: vec![],
        },
        Command::Commit {
            now_ms: 2,
            items: vec![(key.clone(), 1)],
            holds: vec![],
        },
    ];
    let entries: Vec<_> = cmds
        .into_iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    let replies = a.apply(entries).await.unwrap();
    assert_eq!(replies.len(), 3);
    assert!(a.with_state(|s| s.visible(&key, 3).is_ok()));
    let snap = a.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(3));

    let (_, mut b) = in_memory(PolicyKind::Lru);
    b.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(
        b.with_state(|s| s.fingerprint()),
        a.with_state(|s| s.fingerprint())
    );
    assert_eq!(b.applied_state().await.unwrap().0, snap.meta.last_log_id);
    let again = b.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(again.meta, snap.meta);
}

struct InMemory;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for InMemory {
    async fn build(&self) -> StorageResult<((), LogStore, StateMachineStore)> {
        let (log, sm) = in_memory(PolicyKind::Lru);
        Ok(((), log, sm))
    }
}

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for OnDisk {
    async fn build(&self) -> StorageResult<(TempDir, LogStore, StateMachineStore)> {
        let dir = temp_dir("suite");
        let (log, sm) = open(&dir, PolicyKind::Lru).map_err(write_error)?;
        Ok((TempDir(dir), log, sm))
    }
}

/// openraft's storage conformance suite.
#[test]
fn passes_the_openraft_storage_suite() {
    openraft::testing::Suite::test_all(InMemory).expect("storage suite");
}

/// The same suite with every store kept in a data directory.
#[test]
fn a_durable_store_passes_the_storage_suite_too() {
    openraft::testing::Suite::test_all(OnDisk).expect("storage suite");
}

/// What was saved is what a reopened data directory holds.
#[tokio::test]
async fn a_reopened_data_directory_has_everything_saved() {
    let dir = TempDir(temp_dir("reopen"));
    let vote = Vote::new(3, 1);
    let entries: Vec<_> = (1..=5u64).map(remove).collect();
    let (fingerprint, snapshot_meta) = {
        let (mut log, mut sm) = open(&dir.0, PolicyKind::Lru).unwrap();
        log.save_vote(&vote).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        log.truncate(entries[4].log_id).await.unwrap();
        log.save_committed(Some(entries[3].log_id)).await.unwrap();
        sm.apply(entries[..2].to_vec()).await.unwrap();
        let snap = sm.build_snapshot().await.unwrap();
        log.purge(entries[1].log_id).await.unwrap();
        (sm.with_state(|s| s.fingerprint()), snap.meta)
    };
    let (mut log, mut sm) = open(&dir.0, PolicyKind::Lru).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(entries[3].log_id));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(entries[1].log_id));
    assert_eq!(state.last_log_id, Some(entries[3].log_id));
    let got = log.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(
        sm.get_current_snapshot().await.unwrap().unwrap().meta,
        snapshot_meta
    );
    assert_eq!(
        sm.applied_state().await.unwrap().0,
        snapshot_meta.last_log_id
    );
    assert_eq!(sm.with_state(|s| s.fingerprint()), fingerprint);
}

/// The snapshot is binary: a pool's image is far smaller than its JSON was.
#[tokio::test]
async fn snapshots_are_binary() {
    let (_, mut sm) = in_memory(PolicyKind::Lru);
    let cmds: Vec<_> = (1..=200u64).map(remove).collect();
    sm.apply(cmds).await.unwrap();
    let snap = sm.build_snapshot().await.unwrap();
    let image = SnapshotImage {
        state: sm.with_state(|s| s.image()),
    };
    let json = serde_json::to_vec(&image).unwrap();
    let binary = snap.snapshot.into_inner();
    assert!(
        binary.len() <= json.len(),
        "{} vs {}",
        binary.len(),
        json.len()
    );
    assert!(decode_image(&binary).is_ok());
    assert!(decode_image(&binary[..binary.len() / 2]).is_err());
}

// ------------------------------------------------------------------ damage to the log

/// Writes `n` records of one entry each (sizes vary) into a fresh directory with small
/// segments, and says where each record ends in its segment file.
fn write_records(dir: &Path, n: u64, segment_bytes: u64) -> Vec<(PathBuf, u64)> {
    let (mut files, _) = LogFiles::open_with_segments_of(dir, segment_bytes).unwrap();
    let mut ends = Vec::new();
    for i in 1..=n {
        let mut e = remove(i);
        if let EntryPayload::Normal(Command::Remove { keys, .. }) = &mut e.payload {
            for k in 0..(i % 7) {
                keys.push(Key::new(format!("extra-{i}-{k}")).unwrap());
            }
        }
        files.write(&[Op::Append(vec![e])]).unwrap();
        let seg = newest_segment(dir);
        ends.push((seg.clone(), std::fs::metadata(&seg).unwrap().len()));
    }
    ends
}

fn newest_segment(dir: &Path) -> PathBuf {
    disk::segment_files(dir).unwrap().pop().unwrap().1
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The indexes a reopened directory holds, or None when it refuses to open.
fn reopened(dir: &Path) -> Option<Vec<u64>> {
    match LogFiles::open(dir) {
        Ok((_, r)) => Some(r.log.keys().copied().collect()),
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            None
        }
    }
}

/// Which record (0-based) byte `at` of `file` lies in.
fn record_of(ends: &[(PathBuf, u64)], file: &Path, at: u64) -> usize {
    let mut start = 0;
    for (i, (f, end)) in ends.iter().enumerate() {
        if f != file {
            continue;
        }
        if at >= start && at < *end {
            return i;
        }
        start = *end;
    }
    panic!("byte {at} of {} is in no record", file.display())
}

/// A log cut anywhere (a crash mid-write) opens with every record before the cut, and
/// keeps working: what is appended next is read back after the next reopen.
#[test]
fn a_torn_tail_is_cut_and_everything_before_it_stays() {
    let base = TempDir(temp_dir("torn"));
    let ends = write_records(&base.0, 12, 1 << 20);
    let (last, len) = ends.last().unwrap().clone();
    let work = TempDir(temp_dir("torn-work"));
    let mut cuts: Vec<u64> = ends.iter().map(|(_, e)| *e).collect();
    cuts.extend((ends[ends.len() - 3].1..len).step_by(3));
    cuts.push(0);
    let copy_cut_at = |cut: u64| {
        copy_dir(&base.0, &work.0);
        let f = OpenOptions::new()
            .write(true)
            .open(work.0.join(last.file_name().unwrap()))
            .unwrap();
        f.set_len(cut).unwrap();
    };
    for cut in cuts {
        copy_cut_at(cut);
        // Whether the open cut anything is told: that member waits before voting.
        let torn = !ends.iter().any(|(_, e)| *e == cut) && cut != 0;
        assert_eq!(
            LogFiles::open(&work.0).unwrap().1.cut_tail,
            torn,
            "cut at {cut}"
        );
        copy_cut_at(cut);
        let whole = ends.iter().filter(|(_, e)| *e <= cut).count() as u64;
        let got = reopened(&work.0).expect("a torn tail never refuses");
        assert_eq!(got, (1..=whole).collect::<Vec<_>>(), "cut at {cut}");
        // The cut file takes new records and gives them back.
        let (mut files, _) = LogFiles::open(&work.0).unwrap();
        files.write(&[Op::Append(vec![remove(whole + 1)])]).unwrap();
        drop(files);
        assert_eq!(
            reopened(&work.0).unwrap(),
            (1..=whole + 1).collect::<Vec<_>>()
        );
    }
}

/// Damage anywhere (a flipped bit, a zeroed range, a truncated older segment) opens with
/// every record before it, or refuses; never a log missing an acknowledged record that
/// lies before the damage, and never a silently shorter log when records follow it.
#[test]
fn damage_is_refused_or_only_the_damaged_tail_is_lost() {
    let base = TempDir(temp_dir("damage"));
    // Small segments: the damage lands in closed segments as well as the open one.
    let ends = write_records(&base.0, 30, 600);
    let work = TempDir(temp_dir("damage-work"));
    let files: Vec<PathBuf> = {
        let mut f: Vec<_> = ends.iter().map(|(f, _)| f.clone()).collect();
        f.dedup();
        f
    };
    assert!(files.len() >= 3, "the test wants several segments");
    let newest = files.last().unwrap().clone();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut refusals = 0;
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len();
        let mut offsets: Vec<u64> = (0..len).step_by(5).collect();
        offsets.extend((0..20).map(|_| next() % len));
        for at in offsets {
            copy_dir(&base.0, &work.0);
            let path = work.0.join(file.file_name().unwrap());
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[at as usize] ^= 1 << (next() % 8);
            std::fs::write(&path, &bytes).unwrap();
            let hit = record_of(&ends, file, at);
            let is_last = hit + 1 == ends.len();
            match reopened(&work.0) {
                None => {
                    assert!(!is_last, "damage in the last record is a torn tail");
                    refusals += 1;
                }
                Some(got) => {
                    assert!(
                        *file == newest && is_last,
                        "damage at {at} of {} (record {}) opened as {got:?}",
                        file.display(),
                        hit + 1
                    );
                    assert_eq!(got, (1..=hit as u64).collect::<Vec<_>>());
                }
            }
        }
    }
    assert!(refusals > 0);
    // Losing an older segment, or a piece of it, is refused too.
    copy_dir(&base.0, &work.0);
    std::fs::remove_file(work.0.join(files[1].file_name().unwrap())).unwrap();
    assert_eq!(reopened(&work.0), None);
    copy_dir(&base.0, &work.0);
    let f = OpenOptions::new()
        .write(true)
        .open(work.0.join(files[0].file_name().unwrap()))
        .unwrap();
    f.set_len(ends[0].1).unwrap();
    assert_eq!(reopened(&work.0), None);
    // So are damaged vote and snapshot files.
    copy_dir(&base.0, &work.0);
    disk::write_checked(&work.0, "vote", &Vote::<NodeId>::new(2, 1)).unwrap();
    let vote = work.0.join("vote");
    let mut bytes = std::fs::read(&vote).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x40;
    std::fs::write(&vote, bytes).unwrap();
    assert!(LogFiles::open(&work.0).is_err());
}

/// Purged segments are deleted, and what is left reopens with the purge applied.
#[test]
fn purging_deletes_whole_segments_only() {
    let dir = TempDir(temp_dir("purge"));
    let ends = write_records(&dir.0, 40, 500);
    let before = std::fs::read_dir(&dir.0).unwrap().count();
    let (mut files, _) = LogFiles::open_with_segments_of(&dir.0, 500).unwrap();
    files.write(&[Op::Purge(remove(25).log_id)]).unwrap();
    let after = std::fs::read_dir(&dir.0).unwrap().count();
    assert!(after < before, "{before} -> {after} files");
    drop(files);
    let (_, r) = LogFiles::open(&dir.0).unwrap();
    assert_eq!(r.last_purged.map(|l| l.index), Some(25));
    assert_eq!(
        r.log.keys().copied().collect::<Vec<_>>(),
        (26..=ends.len() as u64).collect::<Vec<_>>()
    );
}

/// Appends that queue up while the writer is busy share one fsync, in order, and every
/// one of them is reported durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_appends_are_written_in_order() {
    let dir = TempDir(temp_dir("order"));
    {
        let (log, _) = open(&dir.0, PolicyKind::Lru).unwrap();
        let mut tasks = Vec::new();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // One appender keeps the order, the others race it with votes.
        let mut appender = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 1..=200 {
                appender.blocking_append([remove(i)]).await.unwrap();
                tx.send(i).unwrap();
            }
        }));
        for t in 0..4u64 {
            let mut voter = log.clone();
            tasks.push(tokio::spawn(async move {
                for term in 1..=20 {
                    voter.save_vote(&Vote::new(term, t)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        drop(rx);
    }
    let got = reopened(&dir.0).unwrap();
    assert_eq!(got, (1..=200).collect::<Vec<_>>());
}

mod arbitrary_files {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever the files hold, opening answers (a log, or damage), never panics.
        #[test]
        fn opening_arbitrary_files_never_panics(
            segment in proptest::collection::vec(any::<u8>(), 0..2048),
            keep in 0usize..2048,
            vote in proptest::collection::vec(any::<u8>(), 0..64),
            snapshot in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let dir = TempDir(temp_dir("arbitrary"));
            // A valid log followed by arbitrary bytes, and arbitrary bytes alone.
            let ends = write_records(&dir.0, 3, 1 << 20);
            let seg = ends[0].0.clone();
            let mut bytes = std::fs::read(&seg).unwrap();
            bytes.truncate(keep.min(bytes.len()));
            bytes.extend_from_slice(&segment);
            std::fs::write(&seg, &bytes).unwrap();
            let _ = LogFiles::open(&dir.0);
            std::fs::write(&seg, &segment).unwrap();
            let _ = LogFiles::open(&dir.0);
            std::fs::write(dir.0.join("vote"), &vote).unwrap();
            prop_assert!(LogFiles::open(&dir.0).is_err() || vote.is_empty());
            std::fs::remove_file(dir.0.join("vote")).unwrap();
            std::fs::write(dir.0.join("snapshot"), &snapshot).unwrap();
            let _ = open(&dir.0, PolicyKind::Lru);
            prop_assert!(decode_image(&snapshot).is_err() || snapshot.is_empty());
        }
    }
}
