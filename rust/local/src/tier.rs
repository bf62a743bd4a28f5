//! The SSD tier of a local service: an [`SsdStore`] offered to the pool as one SSD
//! segment, and the loop that keeps it in step with the meta service.
//!
//! Each round reports what the tier did and gets its next work ([`SsdReport`],
//! [`SsdAnswer`]). Objects go to SSD in three steps, one per round, so a record never
//! holds bytes of a replaced object: copy the object out of this service's memory,
//! have the meta service confirm the object was not replaced meanwhile, then write
//! and sync the record and report it. Only then does the object get its SSD replica,
//! and eviction from memory keeps it there. Records of objects that went are erased
//! as the meta service lists them. Objects read often while only on SSD are copied
//! back into memory the meta service sets aside, and readable there once reported.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use memcache_core::{Error, Key, LocalServiceId, Medium, Result, SegmentId};
use memcache_proto::MetaLink;
use memcache_proto::{PutId, Recovered, SegmentSpec, ToPromote, ToStore};
use memcache_proto::{SsdAnswer, SsdReport};

use crate::metrics::LocalMetrics;
use crate::segment::{find_segment, SegmentTable};
use crate::ssd::{NewRecord, Recovery, SsdStore};

/// Most objects and bytes handed out per round.
const ROUND_OBJECTS: u32 = 512;
const ROUND_BYTES: u64 = 64 << 20;

pub struct SsdTier {
    store: SsdStore,
    capacity: u64,
    /// The SSD segment's id in the pool (0 until registered).
    segment: AtomicU64,
    recovery: Recovery,
}

fn io(e: std::io::Error) -> Error {
    Error::Failed(format!("SSD tier: {e}"))
}

impl SsdTier {
    /// Opens the store in `dir`; what it recovered is offered when the service joins.
    pub fn open(dir: &Path, capacity: u64) -> Result<SsdTier> {
        let (store, recovery) = SsdStore::open(dir).map_err(io)?;
        if recovery.damaged > 0 || recovery.torn_tail > 0 {
            tracing::warn!(
                dir = %dir.display(),
                damaged = recovery.damaged,
                torn_tail_bytes = recovery.torn_tail,
                "the SSD tier skipped damaged records"
            );
        }
        tracing::info!(dir = %dir.display(), objects = recovery.objects, "SSD tier opened");
        Ok(SsdTier {
            store,
            capacity,
            segment: AtomicU64::new(0),
            recovery,
        })
    }

    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn spec(&self) -> SegmentSpec {
        SegmentSpec {
            medium: Medium::Ssd,
            capacity: self.capacity,
            base: 0,
        }
    }

    /// The objects to register: every live record, newest first (for a key held by
    /// several records, the pool takes the newest).
    pub fn recovered(&self) -> Vec<Recovered> {
        self.store
            .entries()
            .into_iter()
            .map(|e| Recovered {
                key: e.key,
                size: e.len,
                record: e.id,
                expires_ms: e.expires_ms,
            })
            .collect()
    }

    /// Takes the segment id the pool gave, and erases the offered records it did not
    /// take (stale versions, expired, or no room).
    pub fn bind(&self, segment: SegmentId, offered: &[Recovered], taken: &[bool]) {
        self.segment.store(segment, Ordering::Relaxed);
        let refused: Vec<u64> = offered
            .iter()
            .zip(taken.iter().copied().chain(std::iter::repeat(false)))
            .filter(|(_, t)| !t)
            .map(|(r, _)| r.record)
            .collect();
        tracing::info!(
            segment,
            offered = offered.len(),
            refused = refused.len(),
            "SSD tier joined the pool"
        );
        if let Err(e) = self.store.erase(&refused) {
            tracing::warn!(error = %e, "erasing records the pool did not take");
        }
    }

    pub fn segment(&self) -> SegmentId {
        self.segment.load(Ordering::Relaxed)
    }

    /// The value of record `record`, which must be `len` bytes.
    pub fn read(&self, record: u64, len: u64) -> Result<Vec<u8>> {
        match self.store.get(record).map_err(io)? {
            Some(v) if v.len() as u64 == len => Ok(v),
            Some(_) => Err(Error::invalid(format!(
                "SSD record {record} has another length"
            ))),
            None => Err(Error::ObjectNotFound),
        }
    }
}

/// One round trip to the meta service: a report out, an answer back.
pub type SyncFn =
    Arc<dyn Fn(SsdReport) -> BoxFuture<'static, Result<SsdAnswer>> + Send + Sync + 'static>;

/// A round trip to a remote meta service (group), as local service `service`.
pub fn remote_sync(link: Arc<MetaLink>, service: LocalServiceId) -> SyncFn {
    Arc::new(move |report| {
        let link = link.clone();
        Box::pin(async move {
            link.call(|rpc, ctx| {
                let report = report.clone();
                async move { rpc.ssd_sync(ctx, service, report).await }
            })
            .await?
        })
    })
}

/// The tier's side of the conversation, carried from one round to the next.
pub struct Syncer {
    tier: Arc<SsdTier>,
    sync: SyncFn,
    segments: SegmentTable,
    metrics: Arc<LocalMetrics>,
    stored: Vec<(Key, PutId, u64)>,
    copied: Vec<(ToStore, Vec<u8>)>,
    promoted: Vec<(Key, PutId)>,
    trash_done: u64,
    /// The segment the trash numbers belong to (they start again with a new one).
    trash_segment: SegmentId,
}

impl Syncer {
    pub fn new(
        tier: Arc<SsdTier>,
        sync: SyncFn,
        segments: SegmentTable,
        metrics: Arc<LocalMetrics>,
    ) -> Syncer {
        Syncer {
            tier,
            sync,
            segments,
            metrics,
            stored: Vec::new(),
            copied: Vec::new(),
            promoted: Vec::new(),
            trash_done: 0,
            trash_segment: 0,
        }
    }

    /// What this round reports.
    fn report(&mut self) -> SsdReport {
        if self.tier.segment() != self.trash_segment {
            self.trash_segment = self.tier.segment();
            self.trash_done = 0;
        }
        SsdReport {
            stored: self.stored.clone(),
            copied: self
                .copied
                .iter()
                .map(|(t, _)| (t.key.clone(), t.put))
                .collect(),
            trash_done: self.trash_done,
            promoted: self.promoted.clone(),
            want: ROUND_OBJECTS,
            max_bytes: ROUND_BYTES,
        }
    }

    /// Does what the answer asks (file I/O, so off the runtime's threads); whether
    /// there is more to do right away.
    fn absorb(&mut self, answer: SsdAnswer) -> Result<bool> {
        tracing::debug!(
            stored = self.stored.len(),
            copied = self.copied.len(),
            trash = answer.work.trash.len(),
            work = answer.work.store.len(),
            "SSD tier round"
        );
        self.promoted.clear();
        let busy = !self.stored.is_empty()
            || !self.copied.is_empty()
            || !answer.promote.is_empty()
            || !answer.work.trash.is_empty()
            || !answer.work.store.is_empty();

        // 1. Records the pool did not take are erased.
        let refused: Vec<u64> = self
            .stored
            .iter()
            .zip(&answer.stored)
            .filter(|(_, r)| r.is_err())
            .map(|((_, _, id), _)| *id)
            .collect();
        self.stored.clear();
        // 2. Records of objects that went are erased.
        let trash: Vec<u64> = answer.work.trash.iter().map(|(id, _)| *id).collect();
        let erased = [refused, trash].concat();
        self.tier.store.erase(&erased).map_err(io)?;
        self.metrics.ssd_erased.inc_by(erased.len() as u64);
        self.trash_done = answer.work.trash_from + answer.work.trash.len() as u64;
        // 3. Copies still current are written and synced, for the next report.
        let copied = std::mem::take(&mut self.copied);
        let current: Vec<&(ToStore, Vec<u8>)> = copied
            .iter()
            .zip(
                answer
                    .current
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(false)),
            )
            .filter(|(_, ok)| *ok)
            .map(|(c, _)| c)
            .collect();
        let records: Vec<NewRecord<'_>> = current
            .iter()
            .map(|(t, bytes)| NewRecord {
                key: &t.key,
                expires_ms: t.expires_ms,
                value: bytes,
            })
            .collect();
        let ids = self.tier.store.append(&records).map_err(io)?;
        self.metrics.ssd_written.inc_by(ids.len() as u64);
        self.stored = current
            .iter()
            .zip(ids)
            .map(|((t, _), id)| (t.key.clone(), t.put, id))
            .collect();
        // 4. The next objects are copied out of memory (unless already on their way).
        let on_way: std::collections::HashSet<(&Key, PutId)> =
            self.stored.iter().map(|(k, p, _)| (k, *p)).collect();
        let fresh: Vec<ToStore> = answer
            .work
            .store
            .into_iter()
            .filter(|t| !on_way.contains(&(&t.key, t.put)))
            .collect();
        for t in fresh {
            let Some(seg) = find_segment(&self.segments, t.blob.segment) else {
                continue;
            };
            // Copied out, never borrowed: the segment is shared memory other processes
            // map. If the object goes and its space is reused while we copy, the meta
            // service says so before the copy is written (step 3).
            let mut bytes = vec![0u8; t.blob.len as usize];
            seg.read_at(t.blob.offset, t.blob.len, &mut [&mut bytes[..]])?;
            self.copied.push((t, bytes));
        }
        // 5. Hot objects are copied back into the memory the pool gave them.
        for p in answer.promote {
            match self.promote(&p) {
                Ok(()) => self.promoted.push((p.key, p.put)),
                Err(e) => tracing::warn!(key = %p.key, error = %e, "promotion failed"),
            }
        }
        Ok(busy)
    }

    fn promote(&self, p: &ToPromote) -> Result<()> {
        let bytes = self.tier.read(p.record, p.blob.len)?;
        let seg = find_segment(&self.segments, p.blob.segment)
            .ok_or_else(|| Error::invalid(format!("segment {} is not ours", p.blob.segment)))?;
        if bytes.len() as u64 != p.blob.len {
            return Err(Error::Failed(format!(
                "record {} holds {} bytes, not {}",
                p.record,
                bytes.len(),
                p.blob.len
            )));
        }
        // Copied in (the pool gave this memory to this promotion alone, and no reader
        // sees it before the promotion is reported).
        let end = p.blob.offset.saturating_add(p.blob.len);
        seg.write_at(p.blob.offset, end, &[&bytes])?;
        self.metrics.ssd_promoted.inc();
        Ok(())
    }
}

/// A tier's conversation with the meta service, one round at a time: report what
/// was done, get the next work, do it.
pub trait Rounds: Sized + Send + 'static {
    /// What the loop's warnings call it.
    const NAME: &'static str;
    type Answer: Send + 'static;

    /// Sends this round's report; the meta service's answer.
    fn exchange(&mut self) -> BoxFuture<'static, Result<Self::Answer>>;

    /// Does what the answer asks (blocking work: it runs off the runtime's threads);
    /// whether there is more to do right away.
    fn absorb(&mut self, answer: Self::Answer) -> Result<bool>;
}

impl Rounds for Syncer {
    const NAME: &'static str = "SSD tier";
    type Answer = SsdAnswer;

    fn exchange(&mut self) -> BoxFuture<'static, Result<SsdAnswer>> {
        let report = self.report();
        (self.sync)(report)
    }

    fn absorb(&mut self, answer: SsdAnswer) -> Result<bool> {
        Syncer::absorb(self, answer)
    }
}

/// A running tier loop, and the switch that tells it to finish its work and stop.
pub struct TierLoop {
    task: tokio::task::JoinHandle<()>,
    drain: tokio::sync::watch::Sender<bool>,
}

/// How often an idle tier asks the meta service for work.
const IDLE: Duration = Duration::from_millis(50);

impl TierLoop {
    /// Runs `rounds` on `runtime`.
    pub fn start<R: Rounds>(rounds: R, runtime: &tokio::runtime::Handle) -> TierLoop {
        let (drain, drained) = tokio::sync::watch::channel(false);
        TierLoop {
            task: runtime.spawn(run(rounds, IDLE, drained)),
            drain,
        }
    }

    /// Lets the loop write what is left (within `timeout`) and stop; true when
    /// nothing was left.
    pub async fn flush(mut self, timeout: Duration) -> bool {
        let _ = self.drain.send(true);
        match tokio::time::timeout(timeout, &mut self.task).await {
            Ok(_) => true,
            Err(_) => {
                tracing::warn!("the SSD tier did not finish writing in time");
                false
            }
        }
    }
}

impl Drop for TierLoop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One round: report, then do what the answer asks. On failure everything is kept
/// and reported again (each part of a report is idempotent). Gives the state back
/// (None when it was lost) and whether there is more to do right away.
async fn round<R: Rounds>(mut rounds: R) -> (Option<R>, Result<bool>) {
    let answer = match rounds.exchange().await {
        Ok(a) => a,
        Err(e) => return (Some(rounds), Err(e)),
    };
    let absorbed = tokio::task::spawn_blocking(move || {
        let busy = rounds.absorb(answer);
        (rounds, busy)
    });
    match absorbed.await {
        Ok((rounds, busy)) => (Some(rounds), busy),
        Err(e) => (None, Err(Error::Failed(format!("{} round: {e}", R::NAME)))),
    }
}

/// Runs rounds until `drain` turns true, then until nothing is left to do (or the
/// meta service stops answering).
async fn run<R: Rounds>(rounds: R, idle: Duration, mut drain: tokio::sync::watch::Receiver<bool>) {
    let mut next = Some(rounds);
    while let Some(rounds) = next.take() {
        let (kept, outcome) = round(rounds).await;
        next = kept;
        let busy = match outcome {
            Ok(busy) => busy,
            Err(e) => {
                tracing::warn!(error = %e, "{} round failed", R::NAME);
                if *drain.borrow() {
                    return;
                }
                false
            }
        };
        if busy {
            continue;
        }
        if *drain.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(idle) => {}
            _ = drain.changed() => {}
        }
    }
}
