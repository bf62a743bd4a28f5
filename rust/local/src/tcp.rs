//! The TCP data plane, for clients on other hosts (or forced by configuration).
//!
//! Each request is an 80-byte header, little-endian:
//!
//! | bytes  | field                                                        |
//! |--------|--------------------------------------------------------------|
//! | 0..4   | magic `MMCD`                                                 |
//! | 4      | op (1 write, 2 read); 5..8 zero                              |
//! | 8..32  | the blob: segment, offset, length                            |
//! | 32..40 | the put id (write) or read lease id (read) of the capability |
//! | 40..48 | the capability's expiry, wall-clock unix ms                  |
//! | 48..64 | its MAC: SipHash-2-4-128 over all of the above but magic     |
//! | 64..80 | the part of the blob to move: offset within it, length       |
//!
//! followed, for a write, by the bytes. Each answer is a 16-byte header — status (0 or
//! an error code) and length — followed, for a read, by the bytes. The server honours a
//! capability only before its expiry on its own clock, and only until the meta service
//! revoked it (a put committed or aborted, a lease released: see [`Revoked`]). The client gathers layers with vectored writes
//! and scatters reads into its slices; the server moves bytes between the socket and
//! its segments through one bounded buffer per connection, copying in and out of the
//! shared memory (never holding a Rust reference into memory other processes write).

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use memcache_tls::Stream;
use rustc_hash::FxHashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use memcache_core::{Blob, Error, Result};
use memcache_proto::{tag_grants, LeaseId, PutId, Tag, TagKey};

use crate::metrics::LocalMetrics;
use crate::segment::{find_segment, SegmentTable};
use crate::tier::SsdTier;

/// The key capabilities are checked with; replaced when the service registers again.
pub type SharedKey = Arc<RwLock<TagKey>>;

const MAGIC: u32 = 0x4D4D_4344; // "MMCD"
const OP_WRITE: u8 = 1;
const OP_READ: u8 = 2;
const REQUEST_LEN: usize = 80;
const ANSWER_LEN: usize = 16;
/// Bytes a server moves between the socket and a segment at a time: its one buffer
/// per connection (allocated by the first request that moves bytes).
const CHUNK: usize = 256 << 10;

/// A request for `len` bytes at `at` within `blob`, whose capability is `tag`.
fn request(op: u8, blob: &Blob, tag: &Tag, at: u64, len: u64) -> [u8; REQUEST_LEN] {
    let mut h = [0u8; REQUEST_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4] = op;
    h[8..16].copy_from_slice(&blob.segment.to_le_bytes());
    h[16..24].copy_from_slice(&blob.offset.to_le_bytes());
    h[24..32].copy_from_slice(&blob.len.to_le_bytes());
    h[32..40].copy_from_slice(&tag.id.to_le_bytes());
    h[40..48].copy_from_slice(&tag.expires_ms.to_le_bytes());
    h[48..64].copy_from_slice(&tag.mac.to_le_bytes());
    h[64..72].copy_from_slice(&at.to_le_bytes());
    h[72..80].copy_from_slice(&len.to_le_bytes());
    h
}

/// The capability a request header carries.
fn header_tag(h: &[u8; REQUEST_LEN]) -> Tag {
    Tag {
        id: word(&h[32..40]),
        expires_ms: word(&h[40..48]),
        mac: u128::from_le_bytes(h[48..64].try_into().expect("16 bytes")),
    }
}

/// Wall-clock unix ms, the clock capabilities expire by.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Capabilities the meta service revoked before their expiry: puts committed or
/// aborted (their writes are refused) and read leases released (their reads are
/// refused), each kept until that expiry.
#[derive(Clone, Default)]
pub struct Revoked(Arc<Mutex<[HashMap<u64, u64>; 2]>>);

impl Revoked {
    /// Adds revoked `puts` and released `leases` (id, expiry); forgets those expired
    /// by `now_ms`.
    pub fn add(&self, puts: &[(PutId, u64)], leases: &[(LeaseId, u64)], now_ms: u64) {
        let mut sets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (set, new) in sets.iter_mut().zip([puts, leases]) {
            set.retain(|_, until| *until > now_ms);
            for &(id, until) in new {
                if until > now_ms {
                    set.insert(id, until);
                }
            }
        }
    }

    /// Whether the put (`write`) or read lease `id` was revoked.
    pub fn contains(&self, write: bool, id: u64) -> bool {
        let sets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sets[!write as usize].contains_key(&id)
    }

    /// Forgets everything: ids start again under a new key.
    pub fn clear(&self) {
        let mut sets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sets.iter_mut().for_each(HashMap::clear);
    }
}

fn answer(status: i32, len: u64) -> [u8; ANSWER_LEN] {
    let mut h = [0u8; ANSWER_LEN];
    h[0..4].copy_from_slice(&status.to_le_bytes());
    h[8..16].copy_from_slice(&len.to_le_bytes());
    h
}

fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// What one local service serves: its memory segments, its SSD tier (read only),
/// and the key its capabilities are checked with.
#[derive(Clone)]
pub struct Served {
    pub segments: SegmentTable,
    pub tier: Option<Arc<SsdTier>>,
    pub key: SharedKey,
    pub revoked: Revoked,
    pub metrics: Arc<LocalMetrics>,
}

/// Serves the segments of one local service until the listener's task is dropped.
/// Every request must carry the capability the meta service issued for exactly that
/// range with `key`, still live, so no client reaches past the blobs it was given, nor
/// reaches them after its put or read lease ended. Under `tls` every connection
/// presents a certificate of the pool's CA first.
pub async fn serve(
    listener: TcpListener,
    served: Served,
    tls: Option<Arc<memcache_tls::TlsServer>>,
    limits: memcache_tls::Limits,
) {
    memcache_tls::listen::serve(
        listener,
        tls,
        limits,
        "data plane",
        {
            let metrics = served.metrics.clone();
            move || metrics.tls_refused.inc()
        },
        move |conn, _, peer| {
            let served = served.clone();
            async move {
                let mut conn = memcache_tls::Idle::new(conn, limits.idle);
                let served_conn = serve_conn(&mut conn, &served).await;
                // An answer may still sit in the TLS buffer when the connection ends.
                let _ = conn.flush().await;
                if let Err(e) = served_conn {
                    tracing::debug!(%peer, error = %e, "data connection closed");
                }
            }
        },
    )
    .await
}

/// A data-plane connection as the server holds it.
type ServerConn = memcache_tls::Idle<memcache_tls::Stream>;

/// Reads an SSD blob (its offset is the record id) off the tier, checksum checked.
async fn read_ssd(tier: &Arc<SsdTier>, record: u64, len: u64) -> Result<Vec<u8>> {
    let tier = tier.clone();
    tokio::task::spawn_blocking(move || tier.read(record, len))
        .await
        .map_err(|e| Error::Failed(format!("SSD read: {e}")))?
}

async fn serve_conn(conn: &mut ServerConn, served: &Served) -> std::io::Result<()> {
    let Served {
        segments,
        tier,
        key,
        revoked,
        metrics,
    } = served;
    let count = |op: &str, ok: bool| {
        let result = if ok { "ok" } else { "refused" };
        metrics.tcp_requests.with_label_values(&[op, result]).inc();
    };
    let mut h = [0u8; REQUEST_LEN];
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Answers sit in the TLS buffer until flushed (a no-op on plain TCP).
        conn.flush().await?;
        conn.read_exact(&mut h).await?;
        let magic = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
        let (op, segment, offset, blob_len) =
            (h[4], word(&h[8..16]), word(&h[16..24]), word(&h[24..32]));
        let (at, len) = (word(&h[64..72]), word(&h[72..80]));
        let inside = at.checked_add(len).is_some_and(|end| end <= blob_len);
        if magic != MAGIC || (op != OP_WRITE && op != OP_READ) || !inside {
            // A stream out of step cannot be trusted any further.
            let bad = Error::invalid("malformed data-plane request");
            conn.write_all(&answer(bad.code(), 0)).await?;
            return Err(std::io::Error::other("malformed request"));
        }
        let write = op == OP_WRITE;
        let tag = header_tag(&h);
        let blob = (segment, offset, blob_len);
        // Checked again before each chunk: a transfer stops when its capability ends.
        let granted = || {
            let key = key.read().unwrap_or_else(|e| e.into_inner());
            let live = tag_grants(&key, blob, write, &tag, now_ms());
            match live && revoked.contains(write, tag.id) {
                true => Err(Error::Timeout("the capability was revoked".into())),
                false if live => Ok(()),
                false => Err(refusal(&key, blob, write, &tag)),
            }
        };
        let on_ssd = tier
            .as_ref()
            .filter(|t| t.segment() == segment && segment != 0);
        if let (Some(tier), false) = (on_ssd, write) {
            let read = match granted() {
                Ok(()) => read_ssd(tier, offset, blob_len).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(bytes) => {
                    let part = &bytes[at as usize..(at + len) as usize];
                    conn.write_all(&answer(0, len)).await?;
                    conn.write_all(part).await?;
                    metrics.tcp_bytes.with_label_values(&["out"]).inc_by(len);
                    metrics.ssd_reads.inc();
                    count("read", true);
                }
                Err(e) => {
                    if matches!(e, Error::Failed(_)) {
                        metrics.ssd_damaged.inc();
                        tracing::warn!(record = offset, error = %e, "refused a damaged SSD record");
                    }
                    count("read", false);
                    conn.write_all(&answer(e.code(), 0)).await?
                }
            }
            continue;
        }
        // Inside the blob, checked above; the sum is checked too, as a header without
        // a capability may carry any offset (it is refused just below).
        let start = offset.saturating_add(at);
        let seg = granted().and_then(|()| {
            let s = find_segment(segments, segment)
                .ok_or_else(|| Error::invalid(format!("segment {segment} is not served here")))?;
            s.check_range(start, len)?;
            Ok(s)
        });
        let seg = match seg {
            Ok(s) => s,
            Err(e) => {
                count(if write { "write" } else { "read" }, false);
                conn.write_all(&answer(e.code(), 0)).await?;
                if write {
                    // The payload that follows has nowhere to go: hang up rather than
                    // read an unbounded amount to stay in step.
                    return Err(std::io::Error::other(e.to_string()));
                }
                continue;
            }
        };
        if buf.is_empty() && len > 0 {
            buf = vec![0u8; CHUNK];
        }
        let ended = |e: Error| std::io::Error::other(format!("transfer cut short: {e}"));
        if write {
            let mut to = start;
            let landed = conn.get_mut().read_to(len, &mut buf, |piece| {
                // Nothing lands once the capability ended, even mid-transfer: the
                // writer is cut off instead (it cannot be answered in step).
                granted().map_err(ended)?;
                let end = to + piece.len() as u64;
                seg.write_at(to, end, &[piece]).map_err(ended)?;
                to = end;
                Ok(())
            });
            landed.await?;
            conn.write_all(&answer(0, 0)).await?;
            metrics.tcp_bytes.with_label_values(&["in"]).inc_by(len);
            count("write", true);
        } else {
            conn.write_all(&answer(0, len)).await?;
            let sent = conn.get_mut().write_from(len, &mut buf, |at, piece| {
                // Nothing more leaves once the lease ended: the reader is cut off.
                granted().map_err(ended)?;
                seg.read_at(start + at, piece.len() as u64, &mut [piece])
                    .map_err(ended)
            });
            sent.await?;
            metrics.tcp_bytes.with_label_values(&["out"]).inc_by(len);
            count("read", true);
        }
    }
}

/// Why `tag` does not grant: expired (its put or lease ended), or no capability.
fn refusal(key: &TagKey, blob: (u64, u64, u64), write: bool, tag: &Tag) -> Error {
    let mac_ok = tag_grants(key, blob, write, tag, 0);
    match (mac_ok, write) {
        (true, true) => Error::Timeout("the put's capability expired".into()),
        (true, false) => Error::Timeout("the read lease's capability expired".into()),
        (false, _) => Error::invalid("no capability for this range"),
    }
}

/// The TCP data plane of one local service, through a shared connection pool.
pub struct TcpPeer<'a> {
    pub pool: &'a TcpTransport,
    pub addr: SocketAddr,
}

impl crate::transport::Transport for TcpPeer<'_> {
    async fn write(&self, blob: &Blob, grant: Tag, srcs: &[&[u8]]) -> Result<()> {
        self.pool.write(self.addr, blob, &grant, srcs).await
    }

    async fn read(&self, blob: &Blob, grant: Tag, dsts: &mut [&mut [u8]]) -> Result<()> {
        self.pool.read(self.addr, blob, &grant, dsts).await
    }
}

/// Idle connections kept per local service; more are closed when handed back.
pub const MAX_IDLE_PER_PEER: usize = 16;
/// An idle connection unused this long is closed (the service may have gone, or the
/// burst that opened it has passed).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Client side: a pool of connections per local service, bounded: at most
/// [`MAX_IDLE_PER_PEER`] idle connections per service, none idle longer than
/// [`IDLE_TIMEOUT`], and none to services the caller says are gone.
#[derive(Default)]
pub struct TcpTransport {
    /// Per service, idle connections with the time each was handed back, oldest first.
    idle: Mutex<FxHashMap<SocketAddr, VecDeque<(Instant, Stream)>>>,
    /// TLS to the services (`Some(None)`: plaintext); the process's client half (see
    /// `memcache_tls::set_client`) where unset.
    #[allow(clippy::option_option)]
    tls: Option<Option<Arc<memcache_tls::TlsClient>>>,
}

impl TcpTransport {
    /// A pool whose connections use `tls` (plaintext where `None`), whatever the
    /// process's client half.
    pub fn with_tls(tls: Option<Arc<memcache_tls::TlsClient>>) -> TcpTransport {
        TcpTransport {
            idle: Mutex::default(),
            tls: Some(tls),
        }
    }

    async fn conn(&self, addr: SocketAddr) -> Result<Stream> {
        let pooled = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let conns = idle.get_mut(&addr);
            // The most recently used first: it is the least likely to have been closed.
            let c = conns.and_then(|q| q.pop_back()).map(|(_, c)| c);
            if idle.get(&addr).is_some_and(VecDeque::is_empty) {
                idle.remove(&addr);
            }
            c
        };
        match pooled {
            Some(c) => Ok(c),
            None => {
                let tls = match &self.tls {
                    Some(t) => t.clone(),
                    None => memcache_tls::client(),
                };
                memcache_tls::connect_with(tls.as_deref(), addr)
                    .await
                    .map_err(|e| {
                        tracing::debug!(%addr, error = %e, "connecting to a local service");
                        Error::NotConnectedToLocal
                    })
            }
        }
    }

    fn give_back(&self, addr: SocketAddr, conn: Stream) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.entry(addr).or_default();
        while conns
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > IDLE_TIMEOUT)
        {
            conns.pop_front();
        }
        // A connection that moved a great deal under its TLS key is closed, not kept.
        if conns.len() < MAX_IDLE_PER_PEER && !conn.worn() {
            conns.push_back((now, conn));
        }
    }

    /// Closes the idle connections to services not in `live` (gone, or serving
    /// elsewhere since a restart) and those idle too long.
    pub fn retain_peers(&self, live: impl Fn(&SocketAddr) -> bool) {
        self.sweep(Instant::now(), live);
    }

    fn sweep(&self, now: Instant, live: impl Fn(&SocketAddr) -> bool) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|addr, conns| {
            conns.retain(|(at, _)| now.duration_since(*at) <= IDLE_TIMEOUT);
            live(addr) && !conns.is_empty()
        });
    }

    /// Closes the idle connections to `addr` (it did not answer).
    pub fn forget(&self, addr: SocketAddr) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.remove(&addr);
    }

    /// (services, idle connections) in the pool.
    pub fn idle_counts(&self) -> (usize, usize) {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        (idle.len(), idle.values().map(VecDeque::len).sum())
    }

    /// Writes `srcs`, concatenated, as the whole of `blob` on the service at `addr`,
    /// with the write capability `tag`.
    pub async fn write(
        &self,
        addr: SocketAddr,
        blob: &Blob,
        tag: &Tag,
        srcs: &[&[u8]],
    ) -> Result<()> {
        crate::transport::check_whole(blob, srcs)?;
        self.write_part(addr, blob, tag, 0, srcs).await
    }

    /// Writes `srcs`, concatenated, into `blob` from `at` on.
    pub async fn write_part(
        &self,
        addr: SocketAddr,
        blob: &Blob,
        tag: &Tag,
        at: u64,
        srcs: &[&[u8]],
    ) -> Result<()> {
        let total = crate::transport::check_part(blob, at, srcs.iter().map(|s| s.len()))?;
        let mut conn = self.conn(addr).await?;
        let head = request(OP_WRITE, blob, tag, at, total);
        let mut bufs: Vec<IoSlice<'_>> = Vec::with_capacity(srcs.len() + 1);
        bufs.push(IoSlice::new(&head));
        bufs.extend(srcs.iter().map(|s| IoSlice::new(s)));
        let lost = |_| Error::NotConnectedToLocal;
        write_all_vectored(&mut conn, &mut bufs)
            .await
            .map_err(lost)?;
        conn.flush().await.map_err(lost)?;
        let mut a = [0u8; ANSWER_LEN];
        conn.read_exact(&mut a).await.map_err(lost)?;
        let answered = status(&a);
        // A refused write is hung up on (its payload had nowhere to go).
        if answered.is_ok() {
            self.give_back(addr, conn);
        }
        answered
    }

    /// Reads the whole of `blob` into `dsts`, in order, with the read capability `tag`.
    pub async fn read(
        &self,
        addr: SocketAddr,
        blob: &Blob,
        tag: &Tag,
        dsts: &mut [&mut [u8]],
    ) -> Result<()> {
        crate::transport::check_room(dsts, blob.len)?;
        self.read_part(addr, blob, tag, 0, blob.len, dsts).await
    }

    /// Reads `len` bytes of `blob` from `at` on into `dsts`, in order.
    pub async fn read_part(
        &self,
        addr: SocketAddr,
        blob: &Blob,
        tag: &Tag,
        at: u64,
        len: u64,
        dsts: &mut [&mut [u8]],
    ) -> Result<()> {
        crate::transport::check_room(dsts, len)?;
        crate::transport::check_part(blob, at, [len as usize])?;
        let mut conn = self.conn(addr).await?;
        let lost = |_| Error::NotConnectedToLocal;
        conn.write_all(&request(OP_READ, blob, tag, at, len))
            .await
            .map_err(lost)?;
        conn.flush().await.map_err(lost)?;
        let mut a = [0u8; ANSWER_LEN];
        conn.read_exact(&mut a).await.map_err(lost)?;
        status(&a)?;
        if word(&a[8..16]) != len {
            return Err(Error::UnmatchedRetcode);
        }
        let mut left = len as usize;
        for d in dsts.iter_mut() {
            if left == 0 {
                break;
            }
            let n = d.len().min(left);
            conn.read_exact(&mut d[..n]).await.map_err(lost)?;
            left -= n;
        }
        self.give_back(addr, conn);
        Ok(())
    }
}

fn status(a: &[u8; ANSWER_LEN]) -> Result<()> {
    match i32::from_le_bytes(a[0..4].try_into().expect("4 bytes")) {
        0 => Ok(()),
        code => Err(Error::from_code(code).unwrap_or(Error::UnmatchedRetcode)),
    }
}

async fn write_all_vectored(
    conn: &mut Stream,
    mut bufs: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !bufs.is_empty() {
        let n = conn.write_vectored(bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The data plane's frames under arbitrary input: a server fed any header (with or
    //! without a valid capability, any ranges) answers it with a status, stays in step
    //! or hangs up, and keeps serving; a client fed any answer returns an error or the
    //! bytes asked for. Neither allocates by the numbers a frame carries.

    use std::sync::Arc;

    use proptest::collection::vec;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::segment::ShmSegment;
    use crate::ssd::{NewRecord, SsdStore};
    use memcache_core::alloc_probe;
    use memcache_proto::blob_tag;

    const SEGMENT: u64 = 7;
    const SEGMENT_LEN: u64 = 64 << 10;
    const SSD: u64 = 9;
    const KEY: TagKey = [0x1234_5678, 0x9abc_def0];
    /// No frame may make either side allocate this much: requests and answers are
    /// fixed-size, and bytes move between the socket and memory that already exists
    /// (the server's one buffer of `CHUNK` bytes per connection).
    const ALLOC_CAP: usize = CHUNK + (64 << 10);
    /// Capabilities of the generated requests expire then (far ahead).
    const EXPIRES: u64 = u64::MAX / 2;

    fn runtime() -> tokio::runtime::Runtime {
        // One thread: the allocation probe watches the server and the client at once.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A served DRAM segment of known bytes and an SSD tier holding one record.
    struct Server {
        addr: SocketAddr,
        /// The SSD record's id and bytes.
        record: (u64, Vec<u8>),
        _dir: TempDir,
    }

    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn blob(segment: u64, offset: u64, len: u64) -> Blob {
        Blob {
            service: 1,
            medium: memcache_core::Medium::Dram,
            segment,
            offset,
            len,
        }
    }

    fn pattern(at: u64) -> u8 {
        (at * 7 + 3) as u8
    }

    async fn start_server() -> Server {
        let seg = ShmSegment::create("tcp-fuzz", SEGMENT_LEN).unwrap();
        let all: Vec<u8> = (0..SEGMENT_LEN).map(pattern).collect();
        seg.write_at(0, SEGMENT_LEN, &[&all]).unwrap();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mmc-tcp-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let value: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let id = {
            let (store, _) = SsdStore::open(&dir).unwrap();
            let key = memcache_core::Key::new("ssd/1").unwrap();
            let record = NewRecord {
                key: &key,
                expires_ms: None,
                value: &value,
            };
            store.append(&[record]).unwrap()[0]
        };
        let tier = SsdTier::open(&dir, 1 << 20).unwrap();
        tier.bind(SSD, &[], &[]);
        let served = Served {
            segments: Arc::new(RwLock::new(vec![(
                SEGMENT,
                crate::Segment::Shm(Arc::new(seg)),
            )])),
            tier: Some(Arc::new(tier)),
            key: Arc::new(RwLock::new(KEY)),
            revoked: Revoked::default(),
            metrics: Arc::new(LocalMetrics::new()),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            served,
            None,
            memcache_tls::Limits::default(),
        ));
        Server {
            addr,
            record: (id, value),
            _dir: TempDir(dir),
        }
    }

    /// One request header, as generated: fields of any value, a capability that is
    /// right or not.
    #[derive(Debug, Clone)]
    struct Header {
        magic: u32,
        op: u8,
        segment: u64,
        offset: u64,
        blob_len: u64,
        at: u64,
        len: u64,
        /// Sign the blob with the server's key (else `tag` as generated).
        granted: bool,
        tag: Tag,
    }

    impl Header {
        fn tag(&self) -> Tag {
            match self.granted {
                true => blob_tag(
                    &KEY,
                    (self.segment, self.offset, self.blob_len),
                    self.op == OP_WRITE,
                    1,
                    EXPIRES,
                ),
                false => self.tag,
            }
        }

        fn bytes(&self) -> [u8; REQUEST_LEN] {
            let blob = blob(self.segment, self.offset, self.blob_len);
            let mut h = request(self.op, &blob, &self.tag(), self.at, self.len);
            h[0..4].copy_from_slice(&self.magic.to_le_bytes());
            h
        }

        fn well_formed(&self) -> bool {
            let inside = self
                .at
                .checked_add(self.len)
                .is_some_and(|end| end <= self.blob_len);
            self.magic == MAGIC && (self.op == OP_WRITE || self.op == OP_READ) && inside
        }

        /// The range a granted request moves, when it lies in the DRAM segment.
        fn in_segment(&self) -> Option<(u64, u64)> {
            let start = self.offset.checked_add(self.at)?;
            let end = start.checked_add(self.len)?;
            (self.segment == SEGMENT && end <= SEGMENT_LEN).then_some((start, self.len))
        }
    }

    /// Numbers that sit on the edges of every check, and any others.
    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            2 => 0u64..16,
            1 => Just(SEGMENT_LEN),
            1 => (SEGMENT_LEN - 64)..=(SEGMENT_LEN + 64),
            1 => Just(u64::MAX),
            1 => (u64::MAX - 16)..=u64::MAX,
            1 => 1u64 << 40..1u64 << 62,
            2 => 0u64..SEGMENT_LEN,
            1 => any::<u64>(),
        ]
    }

    fn header() -> impl Strategy<Value = Header> {
        (
            prop_oneof![4 => Just(MAGIC), 1 => any::<u32>()],
            prop_oneof![
                Just(OP_WRITE),
                Just(OP_READ),
                Just(0u8),
                Just(3),
                any::<u8>()
            ],
            prop_oneof![Just(SEGMENT), Just(SSD), Just(0u64), any::<u64>()],
            (number(), number(), number(), number()),
            any::<bool>(),
            (any::<u64>(), any::<u64>(), any::<u128>()).prop_map(|(id, expires_ms, mac)| Tag {
                id,
                expires_ms,
                mac,
            }),
        )
            .prop_map(
                |(magic, op, segment, (offset, blob_len, at, len), granted, tag)| Header {
                    magic,
                    op,
                    segment,
                    offset,
                    blob_len,
                    at,
                    len,
                    granted,
                    tag,
                },
            )
    }

    fn status_and_len(a: &[u8; ANSWER_LEN]) -> (i32, u64) {
        (
            i32::from_le_bytes(a[0..4].try_into().unwrap()),
            word(&a[8..16]),
        )
    }

    /// A read of 16 known bytes of the segment over `conn`: the server is in step.
    async fn known_read(conn: &mut TcpStream) -> std::io::Result<()> {
        let blob = blob(SEGMENT, 4096, 16);
        let tag = blob_tag(&KEY, (SEGMENT, 4096, 16), false, 1, EXPIRES);
        conn.write_all(&request(OP_READ, &blob, &tag, 0, 16))
            .await?;
        let mut a = [0u8; ANSWER_LEN];
        conn.read_exact(&mut a).await?;
        assert_eq!(status_and_len(&a), (0, 16));
        let mut got = [0u8; 16];
        conn.read_exact(&mut got).await?;
        let want: Vec<u8> = (4096..4112).map(pattern).collect();
        assert_eq!(&got[..], &want[..]);
        Ok(())
    }

    /// Sends `h` (and, for a write the server takes, its payload) and checks the answer.
    async fn one_request(server: &Server, h: &Header) -> Result<(), TestCaseError> {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        conn.write_all(&h.bytes()).await.unwrap();
        let ssd_read = h.segment == SSD && h.op == OP_READ;
        let (record, value) = &server.record;
        let served = h.well_formed()
            && h.granted
            && match ssd_read {
                true => h.offset == *record && h.blob_len == value.len() as u64,
                false => h.in_segment().is_some(),
            };
        if served && h.op == OP_WRITE {
            // Back what the segment held: other cases read it.
            let (start, len) = h.in_segment().unwrap();
            let same: Vec<u8> = (start..start + len).map(pattern).collect();
            conn.write_all(&same).await.unwrap();
        }
        let mut a = [0u8; ANSWER_LEN];
        conn.read_exact(&mut a)
            .await
            .map_err(|e| TestCaseError::fail(format!("no answer to {h:?}: {e}")))?;
        let (status, len) = status_and_len(&a);
        if !served {
            prop_assert!(status < 0, "{:?} answered {}", h, status);
            prop_assert_eq!(len, 0);
            // A stream still in step serves on; one out of step was hung up.
            let in_step = h.well_formed() && h.op == OP_READ;
            match known_read(&mut conn).await {
                Ok(()) => prop_assert!(in_step, "{:?}: served on out of step", h),
                Err(_) => prop_assert!(!in_step, "{:?}: hung up in step", h),
            }
            return Ok(());
        }
        prop_assert_eq!((status, len), (0, if h.op == OP_READ { h.len } else { 0 }));
        if h.op == OP_READ {
            let mut got = vec![0u8; h.len as usize];
            conn.read_exact(&mut got).await.unwrap();
            let want: Vec<u8> = match ssd_read {
                true => value[h.at as usize..(h.at + h.len) as usize].to_vec(),
                false => {
                    let (start, len) = h.in_segment().unwrap();
                    (start..start + len).map(pattern).collect()
                }
            };
            prop_assert_eq!(got, want);
        }
        known_read(&mut conn).await.unwrap();
        Ok(())
    }

    /// Runs `cases` cases of `test` against one server, all on this thread; panics with
    /// the smallest failing input.
    fn against_one_server<S: Strategy>(
        cases: u32,
        strategy: S,
        test: impl AsyncFn(&Server, S::Value) -> Result<(), TestCaseError>,
    ) {
        let rt = runtime();
        let server = rt.block_on(start_server());
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases,
            ..ProptestConfig::default()
        });
        let result = runner.run(&strategy, |input| {
            rt.block_on(async {
                alloc_probe::start();
                test(&server, input).await?;
                // And anyone else is still served.
                let mut fresh = TcpStream::connect(server.addr).await.unwrap();
                known_read(&mut fresh).await.unwrap();
                let largest = alloc_probe::measured().largest;
                prop_assert!(largest < ALLOC_CAP, "allocated {} bytes", largest);
                Ok(())
            })
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    #[test]
    fn any_request_header_is_answered_and_the_server_serves_on() {
        against_one_server(400, vec(header(), 1..6), async |server, headers| {
            for h in &headers {
                one_request(server, h).await?;
            }
            Ok(())
        });
    }

    #[test]
    fn garbage_bytes_are_refused_and_the_server_serves_on() {
        against_one_server(256, vec(any::<u8>(), 1..200), async |server, garbage| {
            let mut conn = TcpStream::connect(server.addr).await.unwrap();
            let _ = conn.write_all(&garbage).await;
            let _ = conn.shutdown().await;
            let mut answers = Vec::new();
            let _ = conn.read_to_end(&mut answers).await;
            prop_assert_eq!(answers.len() % ANSWER_LEN, 0);
            Ok(())
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// A client fed any answer (status, length, then some bytes or none) returns
        /// an error, or the bytes asked for when the answer is right.
        #[test]
        fn any_answer_is_an_error_or_the_bytes_asked_for(
            status in prop_oneof![Just(0i32), Just(-3000), any::<i32>()],
            len in prop_oneof![Just(64u64), 0u64..128, Just(u64::MAX), any::<u64>()],
            body in vec(any::<u8>(), 0..100),
            write in any::<bool>(),
        ) {
            let rt = runtime();
            rt.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let reply = [&answer(status, len)[..], &body].concat();
                let fake = tokio::spawn(async move {
                    let (mut conn, _) = listener.accept().await.unwrap();
                    let mut request = [0u8; REQUEST_LEN];
                    conn.read_exact(&mut request).await.unwrap();
                    if request[4] == OP_WRITE {
                        let mut payload = [0u8; 64];
                        conn.read_exact(&mut payload).await.unwrap();
                    }
                    let _ = conn.write_all(&reply).await;
                });
                alloc_probe::start();
                let pool = TcpTransport::default();
                let blob = blob(SEGMENT, 0, 64);
                let tag = Tag::default();
                let r = if write {
                    pool.write(addr, &blob, &tag, &[&[5u8; 64]]).await
                } else {
                    let mut out = [0u8; 64];
                    let r = pool.read(addr, &blob, &tag, &mut [&mut out[..]]).await;
                    if r.is_ok() {
                        prop_assert_eq!(&out[..], &body[..64]);
                    }
                    r
                };
                fake.await.unwrap();
                let largest = alloc_probe::measured().largest;
                prop_assert!(largest < ALLOC_CAP, "allocated {} bytes", largest);
                let right = status == 0 && (write || (len == 64 && body.len() >= 64));
                prop_assert_eq!(r.is_ok(), right, "{:?}", r);
                if let Err(e) = r {
                    prop_assert!(e.code() < 0);
                }
                Ok(())
            })?;
        }
    }

    /// A capability whose put or lease ended, one revoked, and one of another put
    /// are refused, and the bytes in the range stay as they were.
    #[test]
    fn expired_revoked_and_foreign_capabilities_move_nothing() {
        let rt = runtime();
        rt.block_on(async {
            let seg = Arc::new(ShmSegment::create("tcp-fence", SEGMENT_LEN).unwrap());
            let all: Vec<u8> = (0..SEGMENT_LEN).map(pattern).collect();
            seg.write_at(0, SEGMENT_LEN, &[&all]).unwrap();
            let revoked = Revoked::default();
            let served = Served {
                segments: Arc::new(RwLock::new(vec![(
                    SEGMENT,
                    crate::Segment::Shm(seg.clone()),
                )])),
                tier: None,
                key: Arc::new(RwLock::new(KEY)),
                revoked: revoked.clone(),
                metrics: Arc::new(LocalMetrics::new()),
            };
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve(listener, served, None, Default::default()));
            let pool = TcpTransport::default();
            let b = blob(SEGMENT, 8192, 4096);
            let range = (SEGMENT, 8192, 4096);
            let now = now_ms();
            let before: Vec<u8> = (8192..8192 + 4096).map(pattern).collect();
            let tag = |write, id, expires| blob_tag(&KEY, range, write, id, expires);
            let refused_writes = [
                (tag(true, 5, now - 1), -3004),
                (tag(true, 6, now + 60_000), -3004),
                (
                    Tag {
                        id: 7,
                        ..tag(true, 5, now + 60_000)
                    },
                    -3000,
                ),
                (
                    Tag {
                        expires_ms: now + 120_000,
                        ..tag(true, 5, now + 60_000)
                    },
                    -3000,
                ),
                (tag(false, 5, now + 60_000), -3000),
            ];
            revoked.add(&[(6, now + 60_000)], &[(10, now + 60_000)], now);
            for (t, code) in refused_writes {
                let e = pool
                    .write(addr, &b, &t, &[&[0xEE; 4096]])
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), code, "{t:?}: {e}");
            }
            let mut out = vec![0u8; 4096];
            for ended in [tag(false, 9, now - 1), tag(false, 10, now + 60_000)] {
                let e = pool
                    .read(addr, &b, &ended, &mut [&mut out[..]])
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), -3004, "{e}");
                assert!(out.iter().all(|&x| x == 0), "an ended lease read bytes");
            }
            // The range is as it was; a live capability still reads and writes.
            let live = tag(false, 9, now + 60_000);
            pool.read(addr, &b, &live, &mut [&mut out[..]])
                .await
                .unwrap();
            assert_eq!(out, before);
            pool.write(addr, &b, &tag(true, 5, now + 60_000), &[&[1; 4096]])
                .await
                .unwrap();
            pool.read(addr, &b, &live, &mut [&mut out[..]])
                .await
                .unwrap();
            assert_eq!(out, vec![1; 4096]);
        });
    }

    /// Many connections handed back at once keep at most `MAX_IDLE_PER_PEER` open; idle
    /// ones close after `IDLE_TIMEOUT`, and those of a service that went at once.
    #[tokio::test]
    async fn the_client_pool_is_bounded() {
        let listeners = bind_loopback(2).await;
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let pool = TcpTransport::default();
        for &addr in &addrs {
            let mut open = Vec::new();
            for _ in 0..3 * MAX_IDLE_PER_PEER {
                open.push(pool.conn(addr).await.unwrap());
            }
            for c in open {
                pool.give_back(addr, c);
            }
        }
        assert_eq!(pool.idle_counts(), (2, 2 * MAX_IDLE_PER_PEER));
        // A pooled connection is reused, not opened anew.
        let c = pool.conn(addrs[0]).await.unwrap();
        assert_eq!(pool.idle_counts().1, 2 * MAX_IDLE_PER_PEER - 1);
        pool.give_back(addrs[0], c);
        pool.retain_peers(|a| *a != addrs[1]);
        assert_eq!(pool.idle_counts(), (1, MAX_IDLE_PER_PEER));
        pool.sweep(
            Instant::now() + IDLE_TIMEOUT + Duration::from_secs(1),
            |_| true,
        );
        assert_eq!(pool.idle_counts(), (0, 0));
        pool.give_back(addrs[0], pool.conn(addrs[0]).await.unwrap());
        pool.forget(addrs[0]);
        assert_eq!(pool.idle_counts(), (0, 0));
    }

    async fn bind_loopback(n: usize) -> Vec<TcpListener> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        v
    }
}
