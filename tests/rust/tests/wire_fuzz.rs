//! The control plane's messages read from arbitrary bytes, as the meta service and its
//! clients read them: a 4-byte big-endian length, a frame of at most `MAX_FRAME` bytes,
//! decoded with our codec (`memcache_proto::Codec`, bincode's default options) into
//! tarpc's messages of the `MetaRpc` service. Arbitrary frames and mutations of real
//! messages never panic the reader, and
//! decoding holds memory in proportion to a frame's bytes, never to the lengths the
//! bytes claim. Case counts keep each test to a few seconds on a slow CI machine.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use bincode::Options;
use futures::StreamExt;
use memcache_core::alloc_probe::{self, AllocProbe, Measured};
use memcache_core::{Error, Key, ReplicateConfig};
use memcache_proto::tarpc::tokio_serde::Deserializer;
use memcache_proto::tarpc::tokio_util::bytes::BytesMut;
use memcache_proto::tarpc::{self, ClientMessage, Response};
use memcache_proto::{
    Codec, HbmReport, MetaRpcRequest, MetaRpcResponse, MetaStats, RoleInfo, MAX_FRAME,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

#[global_allocator]
static PROBE: AllocProbe = AllocProbe;

/// What the meta service reads, and what its clients read.
type ServerReads = ClientMessage<MetaRpcRequest>;
type ClientReads = Response<MetaRpcResponse>;

/// Bytes held while decoding a frame of `n` bytes: a fixed allowance (serde
/// preallocates at most 1 MiB per sequence whatever length it claims, and sequences
/// nest a few deep), plus a multiple of the frame for what its bytes really hold. The
/// densest messages measured: a 2-byte key is about 40 bytes in memory, a 2-byte `Err` of a
/// lookup's reply 84 (about 42 times the frame). So a frame of `MAX_FRAME` bytes may
/// hold some 10 GiB: the frame limit, not the decoder, is the cap.
fn decode_allowance(n: usize) -> usize {
    (4 << 20) + 64 * n
}

#[derive(Debug, PartialEq)]
enum Decoded {
    Ok,
    Refused,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Decodes `frame` into `T` as the transport does, on this thread, measuring what it
/// allocates. A panic fails the test.
fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<(Decoded, Measured), TestCaseError> {
    alloc_probe::start();
    let bytes = BytesMut::from(frame);
    let r = catch_unwind(AssertUnwindSafe(|| {
        std::pin::Pin::new(&mut Codec::<T, ()>::default())
            .deserialize(&bytes)
            .map(drop)
    }));
    let measured = alloc_probe::measured();
    let decoded = match r {
        Ok(Ok(())) => Decoded::Ok,
        Ok(Err(_)) => Decoded::Refused,
        Err(p) => {
            let message = panic_message(&*p);
            return Err(TestCaseError::fail(format!("decoding panicked: {message}")));
        }
    };
    Ok((decoded, measured))
}

fn encode(value: &impl Serialize) -> Vec<u8> {
    bincode::DefaultOptions::new().serialize(value).unwrap()
}

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

fn request(message: MetaRpcRequest) -> Vec<u8> {
    encode(&ServerReads::Request(tarpc::Request {
        context: tarpc::context::current(),
        id: 7,
        message,
    }))
}

fn response(message: MetaRpcResponse) -> Vec<u8> {
    encode(&ClientReads {
        request_id: 7,
        message: Ok(message),
    })
}

/// Real messages of either side, to mutate: most bytes of a mutant still parse, so the
/// decoder goes deep before it meets the damage.
fn seeds() -> Vec<(bool, Vec<u8>)> {
    let keys = vec![key("a"), key("kv/1"), key(&"k".repeat(255))];
    let server = [
        request(MetaRpcRequest::Lookup {
            keys: keys.clone(),
            lease_ms: 5,
            maps_host: Some("host".into()),
            release: vec![(keys[0].clone(), 7)],
        }),
        request(MetaRpcRequest::Alloc {
            items: keys.iter().map(|k| (k.clone(), 4096)).collect(),
            config: ReplicateConfig {
                replica_num: 2,
                preferred_local_service_ids: vec![1, 2],
                ttl: Some(Duration::from_secs(60)),
                replace: false,
                medium: None,
            },
            writer: 99,
            lease_ms: 0,
            maps_host: None,
        }),
        request(MetaRpcRequest::Remove {
            keys: keys.clone(),
            release: vec![(keys[1].clone(), 9)],
        }),
        request(MetaRpcRequest::Keys {
            prefix: b"kv/".to_vec(),
            limit: 10,
        }),
        request(MetaRpcRequest::Heartbeat {
            service: 3,
            acked: (0, 0),
        }),
        request(MetaRpcRequest::HbmSync {
            service: 3,
            report: HbmReport {
                demoted: vec![(keys[0].clone(), 5)],
                want: 64,
            },
        }),
        request(MetaRpcRequest::Role {}),
        encode(&ServerReads::Cancel {
            trace_context: Default::default(),
            request_id: 7,
        }),
    ];
    let client = [
        response(MetaRpcResponse::Exists(Ok(vec![
            Ok(true),
            Err(Error::ObjectNotFound),
        ]))),
        response(MetaRpcResponse::Keys(Ok(keys))),
        response(MetaRpcResponse::Stats(Ok(MetaStats {
            rpcs: 3,
            by_method: [("lookup".to_string(), 3)].into_iter().collect(),
            ..MetaStats::default()
        }))),
        response(MetaRpcResponse::Role(RoleInfo {
            id: 1,
            role: "leader".into(),
            term: 4,
            leader: Some(1),
            leader_addr: Some("127.0.0.1:5000".parse().unwrap()),
            members: vec![(1, "127.0.0.1:5000".into())],
            last_log_index: Some(9),
            last_applied_index: Some(9),
            snapshot_index: None,
            purged_index: None,
        })),
        response(MetaRpcResponse::Heartbeat(Ok(Err(
            Error::NotConnectedToLocal,
        )))),
    ];
    let server = server.into_iter().map(|s| (true, s));
    server
        .chain(client.into_iter().map(|c| (false, c)))
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    /// Bytes written over the frame; varint prefixes (0xfb..=0xff) among them claim
    /// huge lengths and numbers.
    Overwrite(Index, Vec<u8>),
    Insert(Index, Vec<u8>),
    Truncate(Index),
}

fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![3 => any::<u8>(), 1 => 0xfbu8..=0xff, 1 => 0u8..4],
        1..12,
    )
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<Index>(), wire_bytes()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        1 => (any::<Index>(), wire_bytes()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(frame: &mut Vec<u8>, m: &Mutation) {
    if frame.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, mask) => {
            let at = i.index(frame.len());
            frame[at] ^= mask;
        }
        Mutation::Overwrite(i, bytes) => {
            let at = i.index(frame.len());
            let n = bytes.len().min(frame.len() - at);
            frame[at..at + n].copy_from_slice(&bytes[..n]);
        }
        Mutation::Insert(i, bytes) => {
            let at = i.index(frame.len() + 1);
            frame.splice(at..at, bytes.iter().copied());
        }
        Mutation::Truncate(i) => frame.truncate(i.index(frame.len())),
    }
}

fn check_decode(frame: &[u8], server: bool) -> Result<Decoded, TestCaseError> {
    let (decoded, m) = match server {
        true => decode::<ServerReads>(frame)?,
        false => decode::<ClientReads>(frame)?,
    };
    prop_assert!(
        m.peak <= decode_allowance(frame.len()),
        "a {}-byte frame held {} bytes",
        frame.len(),
        m.peak
    );
    Ok(decoded)
}

/// Feeds `bytes` to a transport built as the meta service builds its own (frames of at
/// most `MAX_FRAME` bytes, bincode), until it ends or fails; what it allocated.
fn through_transport(bytes: &[u8]) -> Result<Measured, TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut peer, io) = tokio::io::duplex(64 << 10);
        let mut transport = memcache_proto::transport::<_, ServerReads, ClientReads>(io);
        peer.write_all(bytes).await.unwrap();
        drop(peer);
        alloc_probe::start();
        let read = AssertUnwindSafe(async {
            while let Some(item) = transport.next().await {
                if item.is_err() {
                    break;
                }
            }
        });
        let r = futures::FutureExt::catch_unwind(read).await;
        let measured = alloc_probe::measured();
        if let Err(p) = r {
            let message = panic_message(&*p);
            prop_assert!(false, "panicked: {}", message);
        }
        Ok(measured)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary frames: refused (or read) without a panic or an allocation by a
    /// claimed length, on either side.
    #[test]
    fn arbitrary_frames_are_refused_not_trusted(
        frame in prop_oneof![vec(any::<u8>(), 0..64), vec(any::<u8>(), 0..2048), wire_bytes()],
    ) {
        check_decode(&frame, true)?;
        check_decode(&frame, false)?;
    }

    /// Real messages, damaged: most of each parses, so the reader meets the damage deep
    /// inside (in a key, a sequence's length, an enum's tag).
    #[test]
    fn damaged_messages_are_refused_not_trusted(
        seed in any::<Index>(),
        mutations in vec(mutation(), 1..4),
    ) {
        let seeds = seeds();
        let (server, mut frame) = seeds[seed.index(seeds.len())].clone();
        for m in &mutations {
            mutate(&mut frame, m);
        }
        check_decode(&frame, server)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The whole reader of the meta service: any bytes on a connection end in an error
    /// or the end of the stream, and the frame codec reserves at most `MAX_FRAME` bytes
    /// (what a 4-byte length may claim; the pages are not touched until bytes come).
    #[test]
    fn a_connection_of_arbitrary_bytes_ends_in_an_error(
        length in prop_oneof![
            Just(None),
            (0u32..64).prop_map(Some),
            any::<u32>().prop_map(Some),
        ],
        body in vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = length.map(|l| l.to_be_bytes().to_vec()).unwrap_or_default();
        bytes.extend_from_slice(&body);
        let m = through_transport(&bytes)?;
        prop_assert!(m.largest <= MAX_FRAME + (64 << 10), "allocated {} bytes", m.largest);
    }
}

#[test]
fn real_messages_decode() {
    for (server, frame) in seeds() {
        let decoded = check_decode(&frame, server).unwrap();
        assert_eq!(decoded, Decoded::Ok);
    }
}

/// Sequences that claim far more elements than the frame holds: refused, holding no
/// more than serde's preallocation.
#[test]
fn claimed_lengths_are_not_allocated() {
    // A lookup of 2^60 keys, in a frame of a few bytes: the varint 0xff is a u128,
    // 0xfd a u64.
    let mut frame = request(MetaRpcRequest::Lookup {
        keys: vec![],
        lease_ms: 0,
        maps_host: None,
        release: vec![],
    });
    // The key count (0), then lease_ms (0), maps_host (None) and the release count (0).
    let at = frame.len() - 4;
    frame.splice(at..at + 1, [0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    assert_eq!(check_decode(&frame, true).unwrap(), Decoded::Refused);
    // A frame whose length is past MAX_FRAME is refused before its bytes are read.
    let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0; 64]);
    let m = through_transport(&bytes).unwrap();
    assert!(m.largest < 1 << 20, "allocated {} bytes", m.largest);
    // A length inside the limit is not reserved either: memory follows the bytes that
    // arrive (tokio's own length-delimited codec reserves the claimed frame at once).
    let mut bytes = (MAX_FRAME as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0; 64]);
    let m = through_transport(&bytes).unwrap();
    assert!(m.largest < 1 << 20, "allocated {} bytes", m.largest);
    // So is a 1 GiB header.
    let mut bytes = (1u32 << 30).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0; 64]);
    let m = through_transport(&bytes).unwrap();
    assert!(m.largest < 1 << 20, "allocated {} bytes", m.largest);
}

/// Messages of many small elements, the most memory per byte of frame: inside the
/// allowance.
#[test]
fn dense_messages_stay_inside_the_allowance() {
    let keys: Vec<Key> = (0..50_000).map(|i| key(&format!("{}", i % 10))).collect();
    let frames = [
        request(MetaRpcRequest::Lookup {
            keys: keys.clone(),
            lease_ms: 1,
            maps_host: None,
            release: Vec::new(),
        }),
        request(MetaRpcRequest::Exists { keys: keys.clone() }),
        response(MetaRpcResponse::Exists(Ok(vec![Ok(true); 200_000]))),
        response(MetaRpcResponse::Remove(Ok(vec![
            Err(Error::ObjectNotFound);
            200_000
        ]))),
        // Two bytes on the wire for a large value in memory: the densest reply.
        response(MetaRpcResponse::Lookup(Ok(vec![
            Err(Error::ObjectNotFound);
            200_000
        ]))),
        response(MetaRpcResponse::Alloc(Ok(vec![
            Err(Error::ObjectNotFound);
            200_000
        ]))),
    ];
    for (i, frame) in frames.iter().enumerate() {
        let server = i < 2;
        assert_eq!(
            check_decode(frame, server).unwrap(),
            Decoded::Ok,
            "frame {i}"
        );
    }
}

/// tarpc turns a request's deadline (a duration on the wire) into an `Instant`
/// unchecked: a deadline 2^63 seconds away panicked the reading task. Our codec
/// refuses the frame instead.
#[test]
fn a_deadline_past_the_clocks_range_is_refused_not_a_panic() {
    let mut frame = request(MetaRpcRequest::Role {});
    // Variant 0 (Request), then the deadline's seconds as a varint u64.
    assert_eq!(frame[0], 0);
    frame.splice(1..2, [0xfd, 0, 0, 0, 0, 0, 0, 0, 0x80]);
    let (decoded, _) = decode::<ServerReads>(&frame).unwrap();
    assert_eq!(decoded, Decoded::Refused);
}
