//! The values of the metadata that travel between clients, local services and the meta
//! service. The meta service's state machine decides them; the data plane and the
//! clients only carry and read them, so they live here, below both.

use serde::{Deserialize, Serialize};

use memcache_core::{Blob, Error, Key, Medium, Result, MAX_BATCH_OP_COUNT};

/// Identifies one put attempt, so a late commit cannot complete someone else's object.
pub type PutId = u64;

/// Identifies one read lease, so a reader whose lease already ended cannot, by
/// releasing late, end someone else's.
pub type LeaseId = u64;

/// A segment a local service offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSpec {
    pub medium: Medium,
    pub capacity: u64,
    /// Address of the segment in its owner's address space (for the admin view).
    pub base: u64,
}

/// An object an SSD segment held when its local service started: registered with the
/// service, readable at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    pub key: Key,
    pub size: u64,
    /// The service's record id (the offset of the object's SSD blob).
    pub record: u64,
    pub expires_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub put_id: PutId,
    pub blobs: Vec<Blob>,
    /// How long from its decision the put may write before it is rolled back.
    pub lease_ms: u64,
    /// Wall-clock unix ms at which the put is rolled back unless committed (its
    /// capabilities expire then).
    #[serde(default)]
    pub deadline_ms: u64,
    /// One capability per blob for the TCP data plane, filled in by the meta service
    /// on the way out (empty in the state machine and in-process).
    pub tags: Vec<crate::Tag>,
}

/// Where a readable object lives; the reader holds `lease` on it until it releases it
/// (or the lease ends by itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Located {
    pub size: u64,
    pub blobs: Vec<Blob>,
    pub lease: LeaseId,
    /// How long from the lookup the lease lasts.
    pub lease_ms: u64,
    /// Wall-clock unix ms at which the lease ends (its capabilities expire then).
    #[serde(default)]
    pub until_ms: u64,
    /// One read capability per blob for the TCP data plane (see `Allocation::tags`).
    pub tags: Vec<crate::Tag>,
}

/// Where one key of an `evict` or `prefetch` stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TierMove {
    /// The object is where it was asked to be.
    Done,
    /// Not yet (its SSD tier is copying it, or a reader holds it): ask again. The
    /// error is the answer to give if it is still waiting when the caller gives up.
    Waiting(Error),
}

/// Checks the media of an `evict`: only DRAM → SSD.
pub fn check_evict_media(src: Medium, dst: Medium) -> Result<()> {
    if (src, dst) != (Medium::Dram, Medium::Ssd) {
        return Err(Error::invalid(format!(
            "evict moves DRAM to SSD only, not {} to {}",
            src.name(),
            dst.name()
        )));
    }
    Ok(())
}

/// Checks the media of a `prefetch`: only SSD → DRAM.
pub fn check_prefetch_media(src: Medium, dst: Medium) -> Result<()> {
    if (src, dst) != (Medium::Ssd, Medium::Dram) {
        return Err(Error::invalid(format!(
            "prefetch moves SSD to DRAM only, not {} to {}",
            src.name(),
            dst.name()
        )));
    }
    Ok(())
}

/// One round's report of a local service's SSD tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsdReport {
    /// Records written and synced since the last round: `(key, put, record id)`.
    pub stored: Vec<(Key, PutId, u64)>,
    /// Objects copied out of memory since the last round, to be checked before their
    /// records are written: a copy is whole only if its object was not replaced
    /// meanwhile.
    pub copied: Vec<(Key, PutId)>,
    /// The trash entries numbered below this one are erased.
    pub trash_done: u64,
    /// Promotions done since the last round: the memory is filled.
    pub promoted: Vec<(Key, PutId)>,
    /// Most objects and about the most bytes of work to hand out.
    pub want: u32,
    pub max_bytes: u64,
}

impl SsdReport {
    /// Refuses a report above the batch limit.
    pub fn check(&self) -> Result<()> {
        let longest = self
            .stored
            .len()
            .max(self.copied.len())
            .max(self.promoted.len());
        if longest > MAX_BATCH_OP_COUNT {
            return Err(Error::invalid("an SSD report above the batch limit"));
        }
        Ok(())
    }

    /// Most objects of work to hand out in one answer.
    pub fn limit(&self) -> usize {
        MAX_BATCH_OP_COUNT.min(self.want as usize)
    }
}

/// The meta service's answer to an [`SsdReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsdAnswer {
    /// One per stored record: taken, or to be erased.
    pub stored: Vec<Result<()>>,
    /// One per copied object: still current.
    pub current: Vec<bool>,
    pub work: SsdWork,
    /// Hot objects to copy from SSD back into memory.
    pub promote: Vec<ToPromote>,
}

/// An object for the SSD tier to store: copy `blob` (in the service's own memory)
/// into a record, then report `(key, put)` with the record's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToStore {
    pub key: Key,
    pub put: PutId,
    pub blob: Blob,
    pub expires_ms: Option<u64>,
}

/// An object for the SSD tier to copy back into memory: record `record` into `blob`
/// (in the service's own memory), then report `(key, put)` promoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToPromote {
    pub key: Key,
    pub put: PutId,
    pub record: u64,
    pub blob: Blob,
}

/// The SSD tier's next work, as the meta service's leader hands it out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsdWork {
    /// `(record id, key)` of records whose objects are gone, oldest first, and the
    /// sequence number of the first (report erasing them with `trash_from + len`).
    pub trash_from: u64,
    pub trash: Vec<(u64, Key)>,
    pub store: Vec<ToStore>,
}

/// One round's report of a local service that offers HBM: the demotions it made since
/// the last round, `(key, put)` of objects whose DRAM it filled from their HBM replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HbmReport {
    pub demoted: Vec<(Key, PutId)>,
    /// Most objects of work to hand out.
    pub want: u32,
}

impl HbmReport {
    /// Refuses a report above the batch limit.
    pub fn check(&self) -> Result<()> {
        if self.demoted.len() > MAX_BATCH_OP_COUNT {
            return Err(Error::invalid("an HBM report above the batch limit"));
        }
        Ok(())
    }

    /// Most objects of work to hand out in one answer.
    pub fn limit(&self) -> usize {
        MAX_BATCH_OP_COUNT.min(self.want as usize)
    }
}

/// The meta service's answer to an [`HbmReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HbmAnswer {
    /// One per reported demotion: the DRAM copy is the object's replica now (its HBM
    /// range is freed), or the object changed and the copy was dropped.
    pub demoted: Vec<Result<()>>,
    /// Cold objects to move out of HBM.
    pub demote: Vec<ToDemote>,
}

/// An object for a local service to move out of its HBM: copy `from` (HBM) into `to`
/// (DRAM the meta service set aside on the same service), then report `(key, put)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToDemote {
    pub key: Key,
    pub put: PutId,
    pub from: Blob,
    pub to: Blob,
}
