//! Plain values of the API: identifiers, media, copy directions, replica configuration,
//! blob placements and key information.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Most replicas one object may have (`MAX_BLOB_COPIES`).
pub const MAX_REPLICAS: usize = 8;
/// Most keys one batch call may carry (`MAX_BATCH_OP_COUNT`).
pub const MAX_BATCH_OP_COUNT: usize = 16384;
/// Allocation granularity and alignment of every blob inside a segment.
pub const PAGE_SIZE: u64 = 4096;

/// Identifies a local service (the "rank" of the original API).
pub type LocalServiceId = u32;
/// Identifies one segment; assigned by the meta service, never reused.
pub type SegmentId = u64;

/// Where a segment's bytes live. The numbers follow `mmc_buffer.type` (0 DRAM, 1 HBM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Medium {
    Dram = 0,
    Hbm = 1,
    Ssd = 2,
}

impl Medium {
    pub const ALL: [Medium; 3] = [Medium::Dram, Medium::Hbm, Medium::Ssd];

    pub fn name(self) -> &'static str {
        match self {
            Medium::Dram => "DRAM",
            Medium::Hbm => "HBM",
            Medium::Ssd => "SSD",
        }
    }
}

/// 1.3.0's own media numbers, as its Python and C++ calls take them (`evict`'s
/// `src_media` / `dst_media`, `prefetch`'s, `batch_alloc`'s `media`): `MEDIA_HBM` 0,
/// `MEDIA_DRAM` 1, SSD 2 (evict defaults to 1 → 2, "DRAM->SSD"). They differ from
/// [`Medium`]'s own values, which follow `mmc_buffer.type` (0 DRAM, 1 HBM): front ends
/// convert at their edge with these two functions.
impl Medium {
    /// The medium of a 1.3.0 media number; another number is -3000.
    pub fn from_media_type(v: u32) -> Result<Medium> {
        match v {
            0 => Ok(Medium::Hbm),
            1 => Ok(Medium::Dram),
            2 => Ok(Medium::Ssd),
            _ => Err(Error::invalid(format!(
                "media {v} is not 0 (HBM), 1 (DRAM) or 2 (SSD)"
            ))),
        }
    }

    /// This medium's 1.3.0 media number.
    pub fn media_type(self) -> u32 {
        match self {
            Medium::Hbm => 0,
            Medium::Dram => 1,
            Medium::Ssd => 2,
        }
    }
}

/// The `direct` argument of puts and gets. "H" is the caller's host memory, "L" the
/// caller's device memory, "G" the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(i32)]
pub enum CopyDirection {
    L2G = 0,
    G2L = 1,
    G2H = 2,
    H2G = 3,
}

impl CopyDirection {
    /// Default of every get call.
    pub const GET_DEFAULT: CopyDirection = CopyDirection::G2H;
    /// Default of every put call.
    pub const PUT_DEFAULT: CopyDirection = CopyDirection::H2G;

    /// True for the directions that move bytes into the pool.
    pub fn is_put(self) -> bool {
        matches!(self, CopyDirection::L2G | CopyDirection::H2G)
    }

    /// True when the caller's buffer is device memory.
    pub fn is_device(self) -> bool {
        matches!(self, CopyDirection::L2G | CopyDirection::G2L)
    }
}

impl TryFrom<i32> for CopyDirection {
    type Error = Error;
    fn try_from(v: i32) -> Result<CopyDirection> {
        Ok(match v {
            0 => CopyDirection::L2G,
            1 => CopyDirection::G2L,
            2 => CopyDirection::G2H,
            3 => CopyDirection::H2G,
            _ => return Err(Error::invalid(format!("copy direction {v} is not 0..=3"))),
        })
    }
}

/// Replica policy of a put. `replica_num` 0 is read as 1; more than 8 is -3000.
/// `preferred_local_service_ids` must be unique and at most `replica_num` long; the
/// service places the remaining replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateConfig {
    pub replica_num: u32,
    pub preferred_local_service_ids: Vec<LocalServiceId>,
    /// Rust extension: the object disappears this long after its commit.
    pub ttl: Option<Duration>,
    /// Rust extension (Mooncake's `upsert`): a put of a key that holds an object
    /// replaces it when the put commits, in one step, so readers see the old object
    /// until then and never a miss. Without it such a put is refused (-3006).
    #[serde(default)]
    pub replace: bool,
    /// Rust extension: the memory medium the replicas go to while it has room below
    /// the high watermark (clients ask for HBM when the source is device memory, DRAM
    /// when it is host memory); then the other one. None: the emptiest segment.
    #[serde(default)]
    pub medium: Option<Medium>,
}

impl Default for ReplicateConfig {
    fn default() -> Self {
        ReplicateConfig {
            replica_num: 1,
            preferred_local_service_ids: Vec::new(),
            ttl: None,
            replace: false,
            medium: None,
        }
    }
}

impl ReplicateConfig {
    pub fn with_replicas(replica_num: u32) -> Self {
        ReplicateConfig {
            replica_num,
            ..Default::default()
        }
    }

    /// The number of replicas to place, after checking every field.
    pub fn validated_replicas(&self) -> Result<usize> {
        let n = match self.replica_num {
            0 => 1,
            n if n as usize > MAX_REPLICAS => {
                return Err(Error::invalid(format!(
                    "replicaNum {n} is above the limit of {MAX_REPLICAS}"
                )))
            }
            n => n as usize,
        };
        let preferred = &self.preferred_local_service_ids;
        if preferred.len() > n {
            return Err(Error::invalid(format!(
                "{} preferred local services for {n} replicas",
                preferred.len()
            )));
        }
        for (i, id) in preferred.iter().enumerate() {
            if preferred[..i].contains(id) {
                return Err(Error::invalid(format!(
                    "preferred local service {id} is listed twice"
                )));
            }
        }
        if self.ttl == Some(Duration::ZERO) {
            return Err(Error::invalid("ttl of zero"));
        }
        Ok(n)
    }
}

/// One replica of an object: a range of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Blob {
    pub service: LocalServiceId,
    pub medium: Medium,
    pub segment: SegmentId,
    pub offset: u64,
    pub len: u64,
}

/// Where one replica lives, as reported to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLocation {
    pub service: LocalServiceId,
    pub device_id: u32,
    pub medium: Medium,
    /// The replica's place in its segment, which the client turns into the pool
    /// address it reports (`gva`; 0 where no client has filled it in).
    pub segment: SegmentId,
    pub offset: u64,
    pub gva: u64,
}

/// What `get_key_info` reports. `status` is 0 or the error's code; the other fields are
/// meaningful only when it is 0.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key: Vec<u8>,
    pub size: u64,
    /// Device of the first replica's local service.
    pub device_id: u32,
    pub status: i32,
    pub locations: Vec<BlobLocation>,
}

impl KeyInfo {
    /// The info reported for a key whose lookup failed.
    pub fn failed(key: &[u8], err: &Error) -> KeyInfo {
        KeyInfo {
            key: key.to_vec(),
            status: err.code(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_numbers_of_1_3_0_map_both_ways() {
        for (v, m) in [(0, Medium::Hbm), (1, Medium::Dram), (2, Medium::Ssd)] {
            assert_eq!(Medium::from_media_type(v).unwrap(), m);
            assert_eq!(m.media_type(), v);
        }
        assert_eq!(Medium::from_media_type(3).unwrap_err().code(), -3000);
    }

    #[test]
    fn directions_have_the_spec_values() {
        for (v, d) in [
            (0, CopyDirection::L2G),
            (1, CopyDirection::G2L),
            (2, CopyDirection::G2H),
            (3, CopyDirection::H2G),
        ] {
            assert_eq!(CopyDirection::try_from(v).unwrap(), d);
            assert_eq!(d as i32, v);
        }
        assert_eq!(CopyDirection::try_from(4).unwrap_err().code(), -3000);
        assert_eq!(CopyDirection::try_from(-1).unwrap_err().code(), -3000);
    }

    #[test]
    fn replicate_config_rules() {
        assert_eq!(
            ReplicateConfig::with_replicas(0).validated_replicas(),
            Ok(1)
        );
        assert_eq!(
            ReplicateConfig::with_replicas(8).validated_replicas(),
            Ok(8)
        );
        assert_eq!(
            ReplicateConfig::with_replicas(9)
                .validated_replicas()
                .unwrap_err()
                .code(),
            -3000
        );
        let too_many = ReplicateConfig {
            replica_num: 1,
            preferred_local_service_ids: vec![1, 2],
            ..Default::default()
        };
        assert_eq!(too_many.validated_replicas().unwrap_err().code(), -3000);
        let twice = ReplicateConfig {
            replica_num: 3,
            preferred_local_service_ids: vec![4, 4],
            ..Default::default()
        };
        assert_eq!(twice.validated_replicas().unwrap_err().code(), -3000);
    }
}
