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
/// Bytes copied at a time: a large object crosses in pieces through one buffer.
const PIECE: u64 = 4 << 20;

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
        src.check_range(from.offset, from.len)?;
        dst.check_range(to.offset, to.len)?;
        let mut buf = vec![0u8; from.len.min(PIECE) as usize];
        let end = to.offset + to.len; // inside the segment: checked above
        let mut done = 0;
        while done < from.len {
            let n = (from.len - done).min(PIECE);
            let piece = &mut buf[..n as usize];
            src.read_at(from.offset + done, n, &mut [&mut *piece])?;
            dst.write_at(to.offset + done, end, &[piece])?;
            done += n;
        }
        Ok(())
    }
}

impl Rounds for Demoter {
    const NAME: &'static str = "HBM demotion";
    type Answer = HbmAnswer;

    fn exchange(&mut self) -> BoxFuture<'static, Result<HbmAnswer>> {
        (self.sync)(HbmReport {
            demoted: self.demoted.clone(),
            want: ROUND_OBJECTS,
        })
    }

    fn absorb(&mut self, answer: HbmAnswer) -> Result<bool> {
        Ok(Demoter::absorb(self, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceSegment, Segment, ShmSegment};
    use memcache_core::Blob;
    use memcache_device::fake::FakeDevice;

    const MIB: u64 = 1 << 20;

    /// A demoter over one 16 MiB HBM segment (id 1) and one 16 MiB DRAM segment (id 2)
    /// of service 0; its meta service never answers.
    fn demoter() -> (Demoter, Arc<DeviceSegment>, Arc<ShmSegment>) {
        let d: &'static FakeDevice = Box::leak(Box::new(FakeDevice::new(1)));
        let hbm = Arc::new(DeviceSegment::create_with(d, 0, 16 * MIB).unwrap());
        let dram = Arc::new(ShmSegment::create("demote-test", 16 * MIB).unwrap());
        let table: SegmentTable = Arc::new(std::sync::RwLock::new(vec![
            (1, Segment::Device(hbm.clone())),
            (2, Segment::Shm(dram.clone())),
        ]));
        let sync: HbmSyncFn =
            Arc::new(|_| Box::pin(async { Err(Error::Failed("no meta service".into())) }));
        let demoter = Demoter::new(sync, table, Arc::new(LocalMetrics::new()));
        (demoter, hbm, dram)
    }

    fn blob(medium: Medium, segment: u64, offset: u64, len: u64) -> Blob {
        Blob {
            service: 0,
            medium,
            segment,
            offset,
            len,
        }
    }

    fn demote(from: Blob, to: Blob) -> ToDemote {
        ToDemote {
            key: Key::new("k").unwrap(),
            put: 1,
            from,
            to,
        }
    }

    #[test]
    fn an_object_larger_than_a_piece_crosses_whole() {
        let (demoter, hbm, dram) = demoter();
        let len = 9 * MIB + 123;
        let value: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        hbm.write_at(MIB, MIB + len, &[&value]).unwrap();
        let d = demote(
            blob(Medium::Hbm, 1, MIB, len),
            blob(Medium::Dram, 2, 4096, len),
        );
        demoter.copy(&d).unwrap();
        let mut back = vec![0u8; len as usize];
        dram.read_at(4096, len, &mut [&mut back[..]]).unwrap();
        assert!(back == value, "the DRAM copy differs");
    }

    #[test]
    fn a_demotion_outside_our_segments_or_of_unequal_sizes_moves_nothing() {
        let (demoter, _hbm, dram) = demoter();
        let hbm = |offset, len| blob(Medium::Hbm, 1, offset, len);
        let ram = |offset, len| blob(Medium::Dram, 2, offset, len);
        for bad in [
            demote(ram(0, 4096), ram(8192, 4096)), // not from HBM
            demote(hbm(0, 4096), blob(Medium::Dram, 1, 0, 4096)), // into HBM
            demote(hbm(0, 4096), blob(Medium::Dram, 9, 0, 4096)), // not our segment
            demote(hbm(0, 4096), ram(0, 8192)),    // sizes differ
            demote(hbm(16 * MIB - 10, 4096), ram(0, 4096)), // past the HBM
            demote(hbm(0, u64::MAX), ram(0, u64::MAX)), // absurd
            demote(hbm(0, 4096), ram(16 * MIB, 4096)), // past the DRAM
        ] {
            assert!(demoter.copy(&bad).is_err(), "{bad:?}");
        }
        let mut first = vec![1u8; 8192];
        dram.read_at(0, 8192, &mut [&mut first[..]]).unwrap();
        assert!(first.iter().all(|b| *b == 0), "DRAM was written");
    }
}
