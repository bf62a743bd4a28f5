//! The control plane's frame codec: bincode, as tarpc's own, except that decoding a
//! frame can never panic. tarpc turns a request's deadline into an `Instant` unchecked,
//! so a frame claiming a deadline past the clock's range panicked the connection's task;
//! here it is an invalid frame like any other.

use std::io;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;

use bincode::Options;
use serde::{Deserialize, Serialize};
use tarpc::tokio_serde::{Deserializer, Serializer};
use tarpc::tokio_util::bytes::{Buf, BufMut, Bytes, BytesMut};
use tarpc::tokio_util::codec::{Decoder, Encoder, Framed};
use tokio::io::{AsyncRead, AsyncWrite};

/// Bincode with its default options (those of tarpc's `Bincode::default`).
pub struct Codec<Item, SinkItem>(PhantomData<fn() -> (Item, SinkItem)>);

impl<Item, SinkItem> Default for Codec<Item, SinkItem> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<Item: for<'a> Deserialize<'a>, SinkItem> Deserializer<Item> for Codec<Item, SinkItem> {
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> io::Result<Item> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        match catch_unwind(AssertUnwindSafe(|| {
            bincode::DefaultOptions::new().deserialize(src)
        })) {
            Ok(decoded) => decoded.map_err(|e| invalid(e.to_string())),
            Err(_) => Err(invalid("a frame that cannot be decoded".into())),
        }
    }
}

impl<Item, SinkItem: Serialize> Serializer<SinkItem> for Codec<Item, SinkItem> {
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> io::Result<Bytes> {
        bincode::DefaultOptions::new()
            .serialize(item)
            .map(Bytes::from)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Length-prefixed frames (a 4-byte big-endian length, as tarpc's own transport) that
/// hold memory in proportion to the bytes that arrived, never to the length a peer
/// claims: tokio's `LengthDelimitedCodec` reserves the whole claimed frame as soon as
/// it reads the prefix, so a peer could make it reserve `MAX_FRAME` per connection
/// with four bytes. Here the read buffer grows only as bytes come in.
#[derive(Debug, Clone, Copy)]
pub struct Frames {
    max: usize,
}

impl Frames {
    pub fn new(max: usize) -> Self {
        Frames { max }
    }
}

const PREFIX: usize = 4;

impl Decoder for Frames {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let Some(prefix) = src.get(..PREFIX) else {
            return Ok(None);
        };
        let n = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if n > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame of {n} bytes is above the limit of {}", self.max),
            ));
        }
        if src.len() < PREFIX + n {
            return Ok(None);
        }
        src.advance(PREFIX);
        Ok(Some(src.split_to(n)))
    }
}

impl Encoder<Bytes> for Frames {
    type Error = io::Error;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        let n = u32::try_from(frame.len())
            .ok()
            .filter(|n| *n as usize <= self.max)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a message of {} bytes is above the frame limit",
                        frame.len()
                    ),
                )
            })?;
        dst.reserve(PREFIX + frame.len());
        dst.put_u32(n);
        dst.extend_from_slice(&frame);
        Ok(())
    }
}

/// A control-plane transport over `io`: frames of at most [`crate::MAX_FRAME`] bytes,
/// each one message in our codec.
pub type Transport<S, Item, SinkItem> =
    tarpc::tokio_serde::Framed<Framed<S, Frames>, Item, SinkItem, Codec<Item, SinkItem>>;

pub fn transport<S, Item, SinkItem>(io: S) -> Transport<S, Item, SinkItem>
where
    S: AsyncRead + AsyncWrite,
{
    tarpc::tokio_serde::Framed::new(
        Framed::new(io, Frames::new(crate::MAX_FRAME)),
        Codec::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_length_is_not_reserved_and_frames_split_where_they_end() {
        let mut f = Frames::new(1 << 20);
        let mut src = BytesMut::new();
        src.extend_from_slice(&(1u32 << 20).to_be_bytes());
        src.extend_from_slice(b"abc");
        assert!(f.decode(&mut src).unwrap().is_none());
        assert!(src.capacity() < 1 << 10, "reserved {}", src.capacity());

        let mut src = BytesMut::new();
        for m in [&b"one"[..], b"", b"three"] {
            f.encode(Bytes::copy_from_slice(m), &mut src).unwrap();
        }
        let frames: Vec<BytesMut> = std::iter::from_fn(|| f.decode(&mut src).unwrap()).collect();
        assert_eq!(frames, [&b"one"[..], b"", b"three"]);
        assert!(src.is_empty());

        let mut src = BytesMut::from(&((1u32 << 20) + 1).to_be_bytes()[..]);
        assert_eq!(
            f.decode(&mut src).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut dst = BytesMut::new();
        assert!(f
            .encode(Bytes::from(vec![0; (1 << 20) + 1]), &mut dst)
            .is_err());
    }
}
