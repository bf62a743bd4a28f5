use std::net::SocketAddr;

use rustls::crypto::cipher::{AeadKey, Iv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::pki::{Leaf, Pki};
use crate::{Stream, TlsConfig};

/// A server and a client configuration under one CA, in `dir`.
fn configs(dir: &std::path::Path) -> (TlsConfig, TlsConfig) {
    let pki = Pki::new("CA");
    let leaf = |name, serial, roles| Leaf {
        name,
        serial,
        roles,
        expired: false,
    };
    let server = pki.issue(&leaf("meta", 1, &["meta"]));
    let client = pki.issue(&leaf("client", 2, &["client"]));
    (
        pki.write(dir, &server, "server", None),
        pki.write(dir, &client, "client", None),
    )
}

/// Bytes no two offsets of which repeat within a short span.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect()
}

/// Writes of every size a record boundary can split: one byte, just under and over a
/// record, several records, and vectored ones spanning slices.
async fn send_all(mut w: impl AsyncWrite + Unpin, data: &[u8]) -> io::Result<()> {
    let sizes = [1, 17, MAX_PLAIN - 1, MAX_PLAIN, MAX_PLAIN + 1, 300_001, 5];
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - at);
        if i % 3 == 2 && n > 2 {
            let (a, b) = data[at..at + n].split_at(n / 3);
            let parts = [
                io::IoSlice::new(&[]),
                io::IoSlice::new(a),
                io::IoSlice::new(b),
            ];
            let sent = w.write_vectored(&parts).await?;
            at += sent;
        } else {
            w.write_all(&data[at..at + n]).await?;
            at += n;
        }
        i += 1;
    }
    w.flush().await?;
    w.shutdown().await
}

/// Sends `len` bytes through `client`, which the server echoes; checks the echo and a
/// clean end on both sides.
async fn echo_through(
    client: impl AsyncRead + AsyncWrite + Send + 'static,
    server: tokio::task::JoinHandle<io::Result<u64>>,
    len: usize,
) {
    let data = pattern(len);
    let (mut r, w) = tokio::io::split(client);
    let sender = tokio::spawn({
        let data = data.clone();
        async move { send_all(w, &data).await }
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    sender.await.unwrap().unwrap();
    assert_eq!(server.await.unwrap().unwrap(), len as u64);
    assert!(back == data, "the echo differs from what was sent");
}

/// Echoes one connection until its peer's close_notify, then closes it the same way.
async fn echo(s: impl AsyncRead + AsyncWrite + Unpin) -> io::Result<u64> {
    let (mut r, mut w) = tokio::io::split(s);
    let n = tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await?;
    Ok(n)
}

/// Echoes the one connection `l` accepts under `server`, in our record layer or
/// rustls's as the server half says.
fn serve_echo(
    server: std::sync::Arc<crate::TlsServer>,
    l: TcpListener,
) -> tokio::task::JoinHandle<io::Result<u64>> {
    tokio::spawn(async move {
        let (s, _) = server.accept(l.accept().await?.0).await?;
        assert_eq!(matches!(s, Stream::Records(_)), server.records);
        echo(s).await
    })
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

#[tokio::test]
async fn records_interoperate_with_rustls_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (server_cfg, client_cfg) = configs(dir.path());
    let len = 3 << 20;

    // Ours to ours.
    let (l, addr) = listener().await;
    let task = serve_echo(server_cfg.server().unwrap(), l);
    let client = crate::connect_with(Some(&client_cfg.client().unwrap()), addr)
        .await
        .unwrap();
    assert!(matches!(client, Stream::Records(_)));
    echo_through(client, task, len).await;

    // Ours to rustls's (the HTTPS half).
    let (l, addr) = listener().await;
    let task = serve_echo(server_cfg.https().unwrap(), l);
    let client = crate::connect_with(Some(&client_cfg.client().unwrap()), addr)
        .await
        .unwrap();
    echo_through(client, task, len).await;

    // rustls's to ours.
    let (l, addr) = listener().await;
    let task = serve_echo(server_cfg.server().unwrap(), l);
    echo_through(rustls_client(&client_cfg, addr).await, task, len).await;
}

/// A connection to `addr` in rustls's own record layer.
async fn rustls_client(
    cfg: &TlsConfig,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    cfg.client()
        .unwrap()
        .connector
        .connect(
            rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
            TcpStream::connect(addr).await.unwrap(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_update_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (server_cfg, client_cfg) = configs(dir.path());
    let (l, addr) = listener().await;
    let server = server_cfg.server().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = server.accept(l.accept().await?.0).await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        s.read_exact(&mut buf).await
    });
    let mut tls = rustls_client(&client_cfg, addr).await;
    tls.write_all(b"ping").await.unwrap();
    tls.get_mut().1.refresh_traffic_keys().unwrap();
    tls.write_all(b"pong").await.unwrap();
    tls.flush().await.unwrap();
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("key update"), "{err}");
}

/// Two record layers over loopback with the same made-up keys, and a raw socket in the
/// middle that the test may damage.
struct Wire {
    sender: Records,
    /// Where the sender's records arrive, raw.
    tap: TcpStream,
    /// What the receiver reads from, raw.
    inject: TcpStream,
    receiver: Records,
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let (l, addr) = listener().await;
    let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
    (a.unwrap(), b.unwrap().0)
}

fn secrets(send: u8, receive: u8) -> ExtractedSecrets {
    let keys = |k: u8| {
        (
            0,
            ConnectionTrafficSecrets::Aes256Gcm {
                key: AeadKey::from([k; 32]),
                iv: Iv::from([k; 12]),
            },
        )
    };
    ExtractedSecrets {
        tx: keys(send),
        rx: keys(receive),
    }
}

async fn wire() -> Wire {
    let (a, tap) = tcp_pair().await;
    let (inject, b) = tcp_pair().await;
    Wire {
        sender: Records::new(Io::new(a), secrets(1, 2), Vec::new()).unwrap(),
        tap,
        inject,
        receiver: Records::new(Io::new(b), secrets(2, 1), Vec::new()).unwrap(),
    }
}

impl Wire {
    /// The sealed form of `data`, as the sender puts it on the wire.
    async fn seal(&mut self, data: &[u8]) -> Vec<u8> {
        self.sender.write_all(data).await.unwrap();
        self.sender.flush().await.unwrap();
        let records = data.len().div_ceil(MAX_PLAIN);
        let mut raw = vec![0u8; data.len() + records * (HEADER + 1 + TAG)];
        self.tap.read_exact(&mut raw).await.unwrap();
        raw
    }

    async fn receive(&mut self, raw: &[u8], len: usize) -> io::Result<Vec<u8>> {
        self.inject.write_all(raw).await.unwrap();
        let mut got = vec![0u8; len];
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.receiver.read_exact(&mut got),
        )
        .await
        .expect("the receiver answers");
        read.map(|_| got)
    }
}

#[tokio::test]
async fn damaged_replayed_and_malformed_records_are_refused() {
    let data = pattern(40_000);
    // Intact: the receiver reads what was sent.
    let mut w = wire().await;
    let raw = w.seal(&data).await;
    assert_eq!(w.receive(&raw, data.len()).await.unwrap(), data);
    // A record seen twice: its nonce no longer matches.
    let err = w
        .receive(&raw[..HEADER + MAX_PLAIN + 1 + TAG], 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authentication"), "{err}");

    type Damage = fn(&mut Vec<u8>);
    let damaged: [(&str, Damage); 5] = [
        ("one flipped bit", |r| r[HEADER + 100] ^= 4),
        ("a flipped tag", |r| {
            let at = HEADER + MAX_PLAIN;
            r[at] ^= 1
        }),
        ("a handshake record type", |r| r[0] = HANDSHAKE),
        ("a record too long", |r| {
            r[3..5].copy_from_slice(&u16::MAX.to_be_bytes())
        }),
        ("a record too short to hold a tag", |r| {
            r[3..5].copy_from_slice(&3u16.to_be_bytes())
        }),
    ];
    for (what, damage) in damaged {
        let mut w = wire().await;
        let mut raw = w.seal(&data).await;
        damage(&mut raw);
        let err = w.receive(&raw, data.len()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        // The connection stays refused.
        let again = w.receiver.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::InvalidData, "{what}");
    }

    // Cut short without close_notify: an unexpected end, not a clean one.
    let mut w = wire().await;
    let raw = w.seal(&data).await;
    w.inject.write_all(&raw[..raw.len() - 7]).await.unwrap();
    w.inject.shutdown().await.unwrap();
    let mut got = Vec::new();
    let err = w.receiver.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(got, data[..2 * MAX_PLAIN]);
}

#[test]
fn a_key_is_used_up_and_a_connection_worn_before() {
    let mut keys = Keys::new(secrets(1, 2).tx).unwrap();
    keys.next(10).unwrap();
    keys.bytes = KEY_BYTES_WORN;
    keys.next(10).unwrap();
    keys.bytes = KEY_BYTES_MAX - 10;
    keys.next(10).unwrap();
    assert!(keys.next(1).is_err());
    // A sequence number is never used twice, even where the count would wrap.
    let mut last = Keys::new((u64::MAX, secrets(1, 2).tx.1)).unwrap();
    assert!(last.next(1).is_err());
}

/// Throughput of one connection, ours against rustls's record layer both ends:
/// `cargo test --release -p memcache-tls -- --ignored --nocapture record_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn record_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let (server_cfg, client_cfg) = configs(dir.path());
    let total: usize = 4 << 30;
    let chunk = 256 << 10;
    let modes: Vec<bool> = match std::env::var("RECORD_BENCH_OURS_ONLY") {
        Ok(_) => vec![true, true, true],
        Err(_) => vec![true, false, true, false],
    };
    for ours in modes {
        let (l, addr) = listener().await;
        let server = match ours {
            true => server_cfg.server().unwrap(),
            false => server_cfg.https().unwrap(),
        };
        let reader = tokio::spawn(async move {
            let (mut s, _) = server.accept(l.accept().await?.0).await?;
            let mut buf = vec![0u8; chunk];
            let mut got = 0;
            while got < total {
                s.read_exact(&mut buf).await?;
                got += chunk;
            }
            io::Result::Ok(())
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let client = client_cfg.client().unwrap();
        let data = pattern(chunk);
        let start = std::time::Instant::now();
        let cpu0 = cpu_ns();
        if ours {
            let mut s = client.connect(addr, tcp).await.unwrap();
            for _ in 0..total / chunk {
                s.write_all(&data).await.unwrap();
            }
            s.flush().await.unwrap();
        } else {
            let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
            let mut s = client.connector.connect(name, Io::new(tcp)).await.unwrap();
            for _ in 0..total / chunk {
                s.write_all(&data).await.unwrap();
            }
            s.flush().await.unwrap();
        }
        reader.await.unwrap().unwrap();
        let secs = start.elapsed().as_secs_f64();
        let cpu = (cpu_ns() - cpu0) as f64 / total as f64;
        eprintln!(
            "{}: {:.2} GB/s, {cpu:.2} CPU ns/byte",
            if ours { "ours  " } else { "rustls" },
            total as f64 / secs / 1e9
        );
    }
}

/// The process's CPU time (user and system), from `/proc/self/stat` in 10 ms ticks.
fn cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 10_000_000
}

#[tokio::test]
async fn pieces_move_without_a_copy_in_between_both_ways() {
    let (a, b) = tcp_pair().await;
    let mut sender = Records::new(Io::new(a), secrets(1, 2), Vec::new()).unwrap();
    let mut receiver = Records::new(Io::new(b), secrets(2, 1), Vec::new()).unwrap();
    let len = 1_000_003u64;
    let data = pattern(len as usize);
    let send = async {
        // A plain write first, so the pieces start mid-record on the other side.
        sender.write_all(&data[..100]).await?;
        let rest = &data[100..];
        sender
            .write_from(rest.len() as u64, |at, piece| {
                let at = at as usize;
                piece.copy_from_slice(&rest[at..at + piece.len()]);
                Ok(())
            })
            .await?;
        sender.flush().await?;
        // A failing producer stops the write with its error.
        let failed = sender
            .write_from(10, |_, _| Err(io::Error::other("gone")))
            .await;
        assert_eq!(failed.unwrap_err().to_string(), "gone");
        sender.shutdown().await
    };
    let receive = async {
        let mut head = [0u8; 7];
        receiver.read_exact(&mut head).await?;
        let mut got = head.to_vec();
        receiver
            .read_to(len - 7, |piece| {
                assert!(piece.len() <= MAX_PLAIN);
                got.extend_from_slice(piece);
                Ok(())
            })
            .await?;
        // Nothing more than close_notify follows: the end is clean.
        let mut rest = Vec::new();
        receiver.read_to_end(&mut rest).await?;
        assert!(rest.is_empty());
        io::Result::Ok(got)
    };
    let (sent, got) = tokio::join!(send, receive);
    sent.unwrap();
    assert!(got.unwrap() == data);
}
