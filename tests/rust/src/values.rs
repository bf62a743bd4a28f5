//! Values that name their writer: a put of id `id` stores `encode(id, len)`, and a read
//! that gives back anything else (torn, mixed, another object's bytes) decodes to None.

/// Bytes before the pattern: the id and the length.
pub const HEADER: usize = 12;

/// `len` bytes (at least [`HEADER`]) that only the put of `id` writes.
pub fn encode(id: u64, len: usize) -> Vec<u8> {
    let len = len.max(HEADER);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    fill(id, len, &mut v);
    v
}

/// The id of the put that wrote `bytes`, or None if no put wrote exactly them.
pub fn decode(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < HEADER {
        return None;
    }
    let id = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    (len == bytes.len() && encode(id, len) == bytes).then_some(id)
}

/// xorshift64* from `id`, a word at a time, up to `len` bytes in all.
fn fill(id: u64, len: usize, v: &mut Vec<u8>) {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let n = (len - v.len()).min(8);
        v.extend_from_slice(&word[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        for len in [0, 12, 13, 100, 65_537] {
            let v = encode(7, len);
            assert_eq!(v.len(), len.max(HEADER));
            assert_eq!(decode(&v), Some(7));
        }
        let mut v = encode(9, 4096);
        v[2000] ^= 1;
        assert_eq!(decode(&v), None);
        assert_eq!(decode(&encode(9, 4096)[..4000]), None);
        assert_ne!(encode(1, 64), encode(2, 64));
    }
}
