//! The TCP data plane, for clients on other hosts (or forced by configuration).
//!
//! Each request is a 56-byte header — magic, op, the blob (segment, offset, length)
//! and its capability, then the part of the blob to move (offset within the blob,
//! length) — followed, for a write, by the bytes. Each answer is a 16-byte header — status (0 or an error
//! code) and length — followed, for a read, by the bytes. Bytes go between the socket
//! and the segment (server) or the caller's buffers (client) with no staging copy: the
//! client gathers layers with vectored writes and scatters reads into its slices.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use memcache_core::{Blob, Error, Result};
use memcache_proto::{blob_tag, TagKey};

use crate::metrics::LocalMetrics;
use crate::segment::{find_segment, SegmentTable};
use crate::tier::SsdTier;

/// The key capabilities are checked with; replaced when the service registers again.
pub type SharedKey = Arc<RwLock<TagKey>>;

const MAGIC: u32 = 0x4D4D_4344; // "MMCD"
const OP_WRITE: u8 = 1;
const OP_READ: u8 = 2;
const REQUEST_LEN: usize = 56;
const ANSWER_LEN: usize = 16;

/// A request for `len` bytes at `at` within `blob`, whose capability is `tag`.
fn request(op: u8, blob: &Blob, tag: u64, at: u64, len: u64) -> [u8; REQUEST_LEN] {
    let mut h = [0u8; REQUEST_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4] = op;
    h[8..16].copy_from_slice(&blob.segment.to_le_bytes());
    h[16..24].copy_from_slice(&blob.offset.to_le_bytes());
    h[24..32].copy_from_slice(&blob.len.to_le_bytes());
    h[32..40].copy_from_slice(&tag.to_le_bytes());
    h[40..48].copy_from_slice(&at.to_le_bytes());
    h[48..56].copy_from_slice(&len.to_le_bytes());
    h
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
    pub metrics: Arc<LocalMetrics>,
}

/// Serves the segments of one local service until the listener's task is dropped.
/// Every request must carry the capability the meta service issued for exactly that
/// range with `key`, so no client reaches past the blobs it was given.
pub async fn serve(listener: TcpListener, served: Served) {
    loop {
        let Ok((conn, peer)) = listener.accept().await else {
            continue;
        };
        let _ = conn.set_nodelay(true);
        let served = served.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_conn(conn, &served).await {
                tracing::debug!(%peer, error = %e, "data connection closed");
            }
        });
    }
}

/// Reads an SSD blob (its offset is the record id) off the tier, checksum checked.
async fn read_ssd(tier: &Arc<SsdTier>, record: u64, len: u64) -> Result<Vec<u8>> {
    let tier = tier.clone();
    tokio::task::spawn_blocking(move || tier.read(record, len))
        .await
        .map_err(|e| Error::Failed(format!("SSD read: {e}")))?
}

async fn serve_conn(mut conn: TcpStream, served: &Served) -> std::io::Result<()> {
    let Served {
        segments,
        tier,
        key,
        metrics,
    } = served;
    let count = |op: &str, ok: bool| {
        let result = if ok { "ok" } else { "refused" };
        metrics.tcp_requests.with_label_values(&[op, result]).inc();
    };
    let mut h = [0u8; REQUEST_LEN];
    loop {
        conn.read_exact(&mut h).await?;
        let magic = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
        let (op, segment, offset, blob_len) =
            (h[4], word(&h[8..16]), word(&h[16..24]), word(&h[24..32]));
        let (at, len) = (word(&h[40..48]), word(&h[48..56]));
        let inside = at.checked_add(len).is_some_and(|end| end <= blob_len);
        if magic != MAGIC || (op != OP_WRITE && op != OP_READ) || !inside {
            // A stream out of step cannot be trusted any further.
            let bad = Error::invalid("malformed data-plane request");
            conn.write_all(&answer(bad.code(), 0)).await?;
            return Err(std::io::Error::other("malformed request"));
        }
        let tag = word(&h[32..40]);
        let granted = {
            let key = key.read().unwrap_or_else(|e| e.into_inner());
            blob_tag(&key, segment, offset, blob_len, op == OP_WRITE) == tag
        };
        let on_ssd = tier
            .as_ref()
            .filter(|t| t.segment() == segment && segment != 0);
        if let (Some(tier), true) = (on_ssd, op == OP_READ) {
            let read = match granted {
                true => read_ssd(tier, offset, blob_len).await,
                false => Err(Error::invalid("no capability for this range")),
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
        let seg = match find_segment(segments, segment) {
            _ if !granted => Err(Error::invalid("no capability for this range")),
            Some(s) => Ok(s),
            None => Err(Error::invalid(format!(
                "segment {segment} is not served here"
            ))),
        };
        // Inside the blob, checked above.
        let offset = offset + at;
        if op == OP_WRITE {
            // SAFETY: the meta service gave this range to this writer alone.
            match seg
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|s| unsafe { s.range_mut(offset, len) })
            {
                Ok(dst) => {
                    conn.read_exact(dst).await?;
                    conn.write_all(&answer(0, 0)).await?;
                    metrics.tcp_bytes.with_label_values(&["in"]).inc_by(len);
                    count("write", true);
                }
                Err(e) => {
                    count("write", false);
                    // The payload that follows has nowhere to go: answer and hang up
                    // rather than read an unbounded amount to stay in step.
                    conn.write_all(&answer(e.code(), 0)).await?;
                    return Err(std::io::Error::other(e.to_string()));
                }
            }
        } else {
            // SAFETY: the reader holds a lease on the blob, so nobody writes it.
            match seg
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|s| unsafe { s.range(offset, len) })
            {
                Ok(src) => {
                    conn.write_all(&answer(0, len)).await?;
                    conn.write_all(src).await?;
                    metrics.tcp_bytes.with_label_values(&["out"]).inc_by(len);
                    count("read", true);
                }
                Err(e) => {
                    count("read", false);
                    conn.write_all(&answer(e.code(), 0)).await?
                }
            }
        }
    }
}

/// The TCP data plane of one local service, through a shared connection pool.
pub struct TcpPeer<'a> {
    pub pool: &'a TcpTransport,
    pub addr: SocketAddr,
}

impl crate::transport::Transport for TcpPeer<'_> {
    async fn write(&self, blob: &Blob, grant: u64, srcs: &[&[u8]]) -> Result<()> {
        self.pool.write(self.addr, blob, grant, srcs).await
    }

    async fn read(&self, blob: &Blob, grant: u64, dsts: &mut [&mut [u8]]) -> Result<()> {
        self.pool.read(self.addr, blob, grant, dsts).await
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
    idle: Mutex<FxHashMap<SocketAddr, VecDeque<(Instant, TcpStream)>>>,
}

impl TcpTransport {
    async fn conn(&self, addr: SocketAddr) -> Result<TcpStream> {
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
                let c = TcpStream::connect(addr)
                    .await
                    .map_err(|_| Error::NotConnectedToLocal)?;
                let _ = c.set_nodelay(true);
                Ok(c)
            }
        }
    }

    fn give_back(&self, addr: SocketAddr, conn: TcpStream) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.entry(addr).or_default();
        while conns
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > IDLE_TIMEOUT)
        {
            conns.pop_front();
        }
        if conns.len() < MAX_IDLE_PER_PEER {
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
        tag: u64,
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
        tag: u64,
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
        let mut a = [0u8; ANSWER_LEN];
        conn.read_exact(&mut a).await.map_err(lost)?;
        self.give_back(addr, conn);
        status(&a)
    }

    /// Reads the whole of `blob` into `dsts`, in order, with the read capability `tag`.
    pub async fn read(
        &self,
        addr: SocketAddr,
        blob: &Blob,
        tag: u64,
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
        tag: u64,
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
    conn: &mut TcpStream,
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
    use super::*;

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
