//! Raft messages between meta nodes travel here as bytes: only the meta service knows
//! (and encodes) the consensus library's types, so this crate, the data plane and the
//! clients do not link it.

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One encoded Raft request or answer. Its bytes are written as one block (a plain
/// `Vec<u8>` would go through serde one byte at a time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftBytes(pub Vec<u8>);

impl Serialize for RaftBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for RaftBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(BytesVisitor).map(RaftBytes)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    /// Formats without a bytes type write a sequence.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_as_one_block() {
        let msg = RaftBytes((0..=255).collect());
        let enc = bincode::serialize(&msg).unwrap();
        // A length, then the bytes themselves.
        assert_eq!(enc.len(), 8 + 256);
        assert_eq!(bincode::deserialize::<RaftBytes>(&enc).unwrap(), msg);
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(serde_json::from_str::<RaftBytes>(&json).unwrap(), msg);
        assert!(bincode::deserialize::<RaftBytes>(&enc[..100]).is_err());
    }
}
