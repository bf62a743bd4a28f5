//! Object keys: byte strings of 1..=255 bytes, validated once at the API edge.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};

/// Longest key the API accepts, in bytes (the spec says "length < 256").
pub const MAX_KEY_LEN: usize = 255;

/// A validated key. Cloning is a reference-count bump, so the directory, the eviction
/// policy and the lease table can all hold the same key without copying its bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Arc<[u8]>);

impl Key {
    /// Validates `bytes` as a key: -3000 when empty or longer than 255 bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Key> {
        let bytes = bytes.as_ref();
        Key::check(bytes)?;
        Ok(Key(Arc::from(bytes)))
    }

    /// What [`Key::new`] checks, without making the key: for a lookup by bytes.
    pub fn check(bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Err(Error::invalid("key is empty"));
        }
        if bytes.len() > MAX_KEY_LEN {
            return Err(Error::invalid(format!(
                "key is {} bytes, the limit is {MAX_KEY_LEN}",
                bytes.len()
            )));
        }
        Ok(())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// On the wire a key is a byte string (one length and the bytes, not one element per
/// byte), validated again when read.
impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Key, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a key of 1 to {MAX_KEY_LEN} bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> std::result::Result<Key, E> {
                Key::new(v).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Key, E> {
                Key::new(v).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Key, A::Error> {
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    if bytes.len() == MAX_KEY_LEN {
                        return Err(de::Error::custom("key longer than 255 bytes"));
                    }
                    bytes.push(b);
                }
                Key::new(bytes).map_err(de::Error::custom)
            }
        }
        d.deserialize_bytes(KeyVisitor)
    }
}

impl TryFrom<Vec<u8>> for Key {
    type Error = Error;
    fn try_from(v: Vec<u8>) -> Result<Key> {
        Key::new(v)
    }
}

impl From<Key> for Vec<u8> {
    fn from(k: Key) -> Vec<u8> {
        k.0.to_vec()
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limits() {
        assert_eq!(Key::new("").unwrap_err().code(), -3000);
        assert!(Key::new([b'k'; 1]).is_ok());
        assert!(Key::new([b'k'; 255]).is_ok());
        assert_eq!(Key::new([b'k'; 256]).unwrap_err().code(), -3000);
    }

    #[test]
    fn binary_keys_are_allowed_and_compare_by_bytes() {
        let a = Key::new([0u8, 255, 7]).unwrap();
        assert_eq!(a.as_bytes(), &[0, 255, 7]);
        let b: &[u8] = a.borrow();
        assert_eq!(b, &[0, 255, 7]);
    }

    #[test]
    fn wire_form_is_validated() {
        let k = Key::new("abc").unwrap();
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<Key>(&json).unwrap(), k);
        assert!(serde_json::from_str::<Key>("[]").is_err());
        let long = serde_json::to_string(&vec![7u8; 256]).unwrap();
        assert!(serde_json::from_str::<Key>(&long).is_err());
    }
}
