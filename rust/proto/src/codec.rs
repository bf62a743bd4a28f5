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
use tarpc::tokio_util::bytes::{Bytes, BytesMut};

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
