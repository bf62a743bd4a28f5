//! The HBM side of a local service's tiers: cold objects move from its device memory
//! to its DRAM, where the meta service sets room aside for them.
//!
//! Each round reports the demotions made since the last one ([`HbmReport`]) and gets
//! the next ([`HbmAnswer`]). A demotion copies the object's HBM replica into the DRAM
//! the meta service staged for it; once reported, the DRAM is the replica and the HBM
//! range is freed. Until then readers keep using the HBM replica, so the copy needs no
//! pause of theirs: a committed object's bytes no longer change.

use std::sync::Arc;

use futures::future::BoxFuture;
use memcache_core::{Error, Key, LocalServiceId, Medium, Result};
use memcache_proto::{HbmAnswer, HbmReport, MetaLink, PutId, ToDemote};

use crate::metrics::LocalMetrics;
use crate::segment::{find_segment, SegmentTable};
use crate::tier::Rounds;

/// Most objects handed out per round.
const ROUND_OBJECTS: u32 = 256;

/// One round trip to the meta service: a report out, an answer back.
pub type HbmSyncFn =
    Arc<dyn Fn(HbmReport) -> BoxFuture<'static, Result<HbmAnswer>> + Send + Sync + 'static>;

/// A round trip to a remote meta service (group), as local service `service`.
pub fn remote_hbm_sync(link: Arc<MetaLink>, service: LocalServiceId) -> HbmSyncFn {
    Arc::new(move |report| {
        let link = link.clone();
        Box::pin(async move {
            link.call(|rpc, ctx| {
                let report = report.clone();
                async move { rpc.hbm_sync(ctx, service, report).await }
            })
            .await?
        })
    })
}

/// The demotions' side of the conversation, carried from one round to the next.
pub struct Demoter {
    sync: HbmSyncFn,
    segments: SegmentTable,
    metrics: Arc<LocalMetrics>,
    /// Copies made since the last report.
    demoted: Vec<(Key, PutId)>,
}

impl Demoter {
    pub fn new(sync: HbmSyncFn, segments: SegmentTable, metrics: Arc<LocalMetrics>) -> Demoter {
        Demoter {
            sync,
            segments,
            metrics,
            demoted: Vec::new(),
        }
    }

    /// Makes the copies the answer asks for (device copies, so off the runtime's
    /// threads); whether there is more to do right away.
    fn absorb(&mut self, answer: HbmAnswer) -> bool {
        let taken = answer.demoted.iter().filter(|r| r.is_ok()).count();
        self.metrics.hbm_demoted.inc_by(taken as u64);
        let busy = !self.demoted.is_empty() || !answer.demote.is_empty();
        self.demoted.clear();
        for d in answer.demote {
            match self.copy(&d) {
                Ok(()) => self.demoted.push((d.key, d.put)),
                Err(e) => tracing::warn!(key = %d.key, error = %e, "demotion from HBM failed"),
            }
        }
        busy
    }

    /// Copies `d.from` (this service's HBM) into `d.to` (its DRAM), through a host
    /// buffer: the DRAM is shared memory other processes map, written only by copies.
    fn copy(&self, d: &ToDemote) -> Result<()> {
        let (from, to) = (&d.from, &d.to);
        let segment = |id, medium| {
            find_segment(&self.segments, id)
                .filter(|s| s.medium() == medium)
                .ok_or_else(|| Error::invalid(format!("segment {id} is no {medium:?} of ours")))
        };
        let (src, dst) = (
            segment(from.segment, Medium::Hbm)?,
            segment(to.segment, Medium::Dram)?,
        );
        if from.len != to.len {
            return Err(Error::invalid(format!(
                "a demotion of {} bytes into {}",
                from.len, to.len
            )));
        }
        // Both ranges are checked before the buffer is sized by them.
        src.check_range(from.offset, from.len)?;
        dst.check_range(to.offset, to.len)?;
        let mut bytes = vec![0u8; from.len as usize];
        src.read_at(from.offset, from.len, &mut [&mut bytes[..]])?;
        let end = to.offset.saturating_add(to.len);
        dst.write_at(to.offset, end, &[&bytes])?;
        Ok(())
    }

    /// One round: report, then copy what the answer asks for.
    async fn one_round(mut self) -> (Option<Self>, Result<bool>) {
        let report = HbmReport {
            demoted: self.demoted.clone(),
            want: ROUND_OBJECTS,
        };
        let answer = match (self.sync)(report).await {
            Ok(a) => a,
            Err(e) => return (Some(self), Err(e)),
        };
        let absorbed = tokio::task::spawn_blocking(move || {
            let busy = self.absorb(answer);
            (self, busy)
        });
        match absorbed.await {
            Ok((this, busy)) => (Some(this), Ok(busy)),
            Err(e) => (None, Err(Error::Failed(format!("HBM round: {e}")))),
        }
    }
}

impl Rounds for Demoter {
    const NAME: &'static str = "HBM demotion";

    async fn round(self) -> (Option<Self>, Result<bool>) {
        self.one_round().await
    }
}
