//! The TLS 1.3 record layer of the pool's own connections (meta RPC, Raft, data plane).
//!
//! rustls makes the handshake (certificates, CRLs, roles) and hands over the traffic
//! keys; records are then sealed and opened here with ring's AEAD, in place, in one
//! read and one write buffer per connection. rustls's buffered record layer read the
//! socket a few KiB at a time and copied each record's plaintext twice more: on the
//! data plane that cost about as much as the cipher itself.
//!
//! The wire format is TLS 1.3's (RFC 8446 §5), so the other end may be plain rustls.
//! What this layer does not do: a key update (refused as unsupported; neither end of
//! ours sends one) and session tickets (ignored; our servers send none). Instead a
//! connection carries at most [`KEY_BYTES_MAX`] bytes each way under its one key,
//! within AES-GCM's limit, and pools retire it well before ([`Records::worn`]).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ring::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

const HEADER: usize = 5;
const TAG: usize = 16;
/// Most plaintext in one record.
const MAX_PLAIN: usize = 1 << 14;
/// Most ciphertext in one record: plaintext, content type, padding and tag.
const MAX_CIPHERTEXT: usize = MAX_PLAIN + 256;
/// Largest record on the wire.
const MAX_RECORD: usize = HEADER + MAX_CIPHERTEXT;

const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// Socket bytes read at most per call.
const READ_BUFFER: usize = 256 << 10;
/// Sealed bytes buffered before a write waits for the socket.
const WRITE_HIGH: usize = 256 << 10;

/// Bytes one key seals or opens at most: 2^38, under RFC 8446's 2^24.5 full records
/// for AES-GCM. A connection past it fails.
pub const KEY_BYTES_MAX: u64 = 1 << 38;
/// Bytes after which a connection is `worn`: pools no longer reuse it.
pub const KEY_BYTES_WORN: u64 = 1 << 36;

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {what}"))
}

/// The socket under a handshake. It hands rustls whole records only, so that when the
/// handshake ends no record sits half-read inside rustls: what follows the handshake
/// stays here, for the record layer.
pub struct Io {
    tcp: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes of the record being handed out, all of them buffered.
    deliver: usize,
}

impl Io {
    pub(crate) fn new(tcp: TcpStream) -> Io {
        Io {
            tcp,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            deliver: 0,
        }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Makes room for at least one more record after `end`.
    fn make_room(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.buf.len() - self.end < MAX_RECORD {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
    }

    /// Reads what the socket has into the buffer: `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.make_room();
        let mut into = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut into))?;
        let n = into.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.deliver > 0 {
                let n = this.deliver.min(out.remaining());
                out.put_slice(&this.buf[this.start..this.start + n]);
                this.start += n;
                this.deliver -= n;
                return Poll::Ready(Ok(()));
            }
            let have = this.end - this.start;
            if have >= HEADER {
                let len = u16::from_be_bytes([this.buf[this.start + 3], this.buf[this.start + 4]]);
                let whole = HEADER + len as usize;
                // An oversized record is handed on as it is, for rustls to refuse.
                if have >= whole || whole > MAX_RECORD {
                    this.deliver = whole.min(have);
                    continue;
                }
            }
            if ready!(this.poll_fill(cx))? == 0 {
                if this.end == this.start {
                    return Poll::Ready(Ok(()));
                }
                this.deliver = this.end - this.start;
            }
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// One direction's key: the record nonce is the IV xor the record's sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
    bytes: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> io::Result<Keys> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return Err(invalid("a cipher suite the record layer does not know")),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| invalid("bad traffic key"))?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv: iv.as_ref().try_into().map_err(|_| invalid("bad IV"))?,
            seq,
            bytes: 0,
        })
    }

    /// The next record's nonce, for `len` more bytes under this key.
    fn next(&mut self, len: usize) -> io::Result<Nonce> {
        self.bytes += len as u64;
        if self.bytes > KEY_BYTES_MAX {
            return Err(invalid("the connection's key is used up; reconnect"));
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| invalid("the record sequence is used up; reconnect"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

fn header(len: usize) -> [u8; HEADER] {
    let [hi, lo] = (len as u16).to_be_bytes();
    [APPLICATION_DATA, 3, 3, hi, lo]
}

/// A TLS 1.3 connection past its handshake, sealing and opening its own records.
pub struct Records {
    io: Io,
    tx: Keys,
    rx: Keys,
    /// Application data opened and not yet read: `io.buf[plain.0..plain.1]`.
    plain: (usize, usize),
    /// Application data rustls had opened before handing over, and how much was read.
    early: (Vec<u8>, usize),
    /// Sealed records not yet written: `sealed[written..]`.
    sealed: Vec<u8>,
    written: usize,
    peer_closed: bool,
    closing: bool,
    /// An error reading met: every later read answers it again.
    broken: Option<(io::ErrorKind, String)>,
}

impl Records {
    fn new(io: Io, secrets: ExtractedSecrets, early: Vec<u8>) -> io::Result<Records> {
        Ok(Records {
            io,
            tx: Keys::new(secrets.tx)?,
            rx: Keys::new(secrets.rx)?,
            plain: (0, 0),
            early: (early, 0),
            sealed: Vec::new(),
            written: 0,
            peer_closed: false,
            closing: false,
            broken: None,
        })
    }

    /// Takes over a server connection whose handshake is done.
    pub(crate) fn server(tls: tokio_rustls::server::TlsStream<Io>) -> io::Result<Records> {
        let (io, conn) = tls.into_inner();
        Records::take_over(io, conn.into())
    }

    /// Takes over a client connection whose handshake is done.
    pub(crate) fn client(tls: tokio_rustls::client::TlsStream<Io>) -> io::Result<Records> {
        let (io, conn) = tls.into_inner();
        Records::take_over(io, conn.into())
    }

    fn take_over(io: Io, mut conn: rustls::Connection) -> io::Result<Records> {
        let early = drain_plaintext(&mut conn.reader())?;
        let secrets = conn
            .dangerous_extract_secrets()
            .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
        Records::new(io, secrets, early)
    }

    pub fn tcp(&self) -> &TcpStream {
        self.io.tcp()
    }

    /// Whether the connection has moved so much under its key that it should not be
    /// reused.
    pub fn worn(&self) -> bool {
        self.tx.bytes.max(self.rx.bytes) > KEY_BYTES_WORN
    }

    /// Opens the next record if it is all in the buffer: `Ok(false)` when it is not.
    fn open_next(&mut self) -> io::Result<bool> {
        let io = &mut self.io;
        let have = io.end - io.start;
        if have < HEADER {
            return Ok(false);
        }
        let head: [u8; HEADER] = io.buf[io.start..io.start + HEADER]
            .try_into()
            .expect("five bytes");
        let len = u16::from_be_bytes([head[3], head[4]]) as usize;
        if head[0] != APPLICATION_DATA || !(TAG + 1..=MAX_CIPHERTEXT).contains(&len) {
            return Err(invalid("malformed record"));
        }
        if have < HEADER + len {
            return Ok(false);
        }
        let body = io.start + HEADER;
        let nonce = self.rx.next(len)?;
        let opened = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(head), &mut io.buf[body..body + len])
            .map_err(|_| invalid("a record failed authentication"))?
            .len();
        io.start = body + len;
        let inner = &io.buf[body..body + opened];
        let at = inner
            .iter()
            .rposition(|&b| b != 0)
            .ok_or_else(|| invalid("a record without content type"))?;
        match inner[at] {
            APPLICATION_DATA => self.plain = (body, body + at),
            ALERT => match inner[..at] {
                [_, 0] => self.peer_closed = true,
                // user_canceled: a warning, followed by close_notify.
                [_, 90] => {}
                [_, code] => return Err(invalid(&format!("the peer sent alert {code}"))),
                _ => return Err(invalid("malformed alert")),
            },
            HANDSHAKE => post_handshake(&inner[..at])?,
            _ => return Err(invalid("unexpected content type")),
        }
        Ok(true)
    }

    /// Opened application data not yet read.
    fn available(&self) -> &[u8] {
        let (early, at) = &self.early;
        match *at < early.len() {
            true => &early[*at..],
            false => &self.io.buf[self.plain.0..self.plain.1],
        }
    }

    fn consume(&mut self, n: usize) {
        let (early, at) = &mut self.early;
        match *at < early.len() {
            true => *at += n,
            false => self.plain.0 += n,
        }
    }

    fn poll_read_records(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut gave = false;
        loop {
            if out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let available = self.available();
            if !available.is_empty() {
                let n = available.len().min(out.remaining());
                out.put_slice(&available[..n]);
                self.consume(n);
                gave = true;
                continue;
            }
            if self.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if self.open_next()? {
                continue;
            }
            if gave {
                return Poll::Ready(Ok(()));
            }
            if ready!(self.io.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(cut_short()));
            }
        }
    }

    /// Waits until opened application data is available; its end is an error.
    fn poll_available(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.available().is_empty() {
                return Poll::Ready(Ok(()));
            }
            if self.peer_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if !self.open_next()? && ready!(self.io.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(cut_short()));
            }
        }
    }

    /// Reads exactly `len` bytes, handing each record's plaintext to `sink` where it
    /// was opened: no copy in between.
    pub async fn read_to(
        &mut self,
        len: u64,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut left = len;
        while left > 0 {
            std::future::poll_fn(|cx| self.sticky(|r| r.poll_available(cx))).await?;
            let available = self.available();
            let n = (available.len() as u64).min(left) as usize;
            sink(&available[..n])?;
            self.consume(n);
            left -= n as u64;
        }
        Ok(())
    }

    /// Writes `len` bytes that `fill` puts straight into the records to seal, given
    /// each piece's offset in the whole: no copy in between.
    pub async fn write_from(
        &mut self,
        len: u64,
        mut fill: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            std::future::poll_fn(|cx| self.poll_room(cx)).await?;
            let batch = (len - done).min(WRITE_HIGH as u64);
            let end = done + batch;
            while done < end {
                let n = (end - done).min(MAX_PLAIN as u64) as usize;
                self.seal(APPLICATION_DATA, |to| {
                    let at = to.len();
                    to.resize(at + n, 0);
                    fill(done, &mut to[at..])
                })?;
                done += n as u64;
            }
            if let Poll::Ready(Err(e)) =
                std::future::poll_fn(|cx| Poll::Ready(self.poll_drain(cx))).await
            {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs a read step, keeping its error: every later read answers it again.
    fn sticky<T>(
        &mut self,
        step: impl FnOnce(&mut Self) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Some((kind, msg)) = &self.broken {
            return Poll::Ready(Err(io::Error::new(*kind, msg.clone())));
        }
        let done = step(self);
        if let Poll::Ready(Err(e)) = &done {
            self.broken = Some((e.kind(), e.to_string()));
        }
        done
    }

    /// Seals one record of content type `ty` whose plaintext `fill` appends.
    fn seal(
        &mut self,
        ty: u8,
        fill: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let at = self.sealed.len();
        self.sealed.extend_from_slice(&[0; HEADER]);
        if let Err(e) = fill(&mut self.sealed) {
            self.sealed.truncate(at);
            return Err(e);
        }
        self.sealed.push(ty);
        let len = self.sealed.len() - at - HEADER + TAG;
        let head = header(len);
        self.sealed[at..at + HEADER].copy_from_slice(&head);
        let nonce = self.tx.next(len)?;
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(head), &mut self.sealed[at + HEADER..])
            .map_err(|_| invalid("cannot seal"))?;
        self.sealed.extend_from_slice(tag.as_ref());
        Ok(())
    }

    fn pending(&self) -> usize {
        self.sealed.len() - self.written
    }

    /// Writes sealed records until none is left or the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.sealed.len() {
            let n =
                ready!(Pin::new(&mut self.io.tcp).poll_write(cx, &self.sealed[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.sealed.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Waits until there is room to seal more: fewer than `WRITE_HIGH` bytes wait
    /// for the socket.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if self.pending() >= WRITE_HIGH {
            let drained = self.poll_drain(cx)?;
            if drained.is_pending() && self.pending() >= WRITE_HIGH {
                return Poll::Pending;
            }
        }
        if self.written > self.sealed.len() / 2 {
            self.sealed.drain(..self.written);
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_records(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let take = total.min((WRITE_HIGH - self.pending().min(WRITE_HIGH)).max(MAX_PLAIN));
        let (mut slice, mut offset, mut left) = (0, 0, take);
        while left > 0 {
            let n = left.min(MAX_PLAIN);
            self.seal(APPLICATION_DATA, |to| {
                let mut need = n;
                while need > 0 {
                    let from = &bufs[slice][offset..];
                    let k = from.len().min(need);
                    to.extend_from_slice(&from[..k]);
                    (offset, need) = (offset + k, need - k);
                    if offset == bufs[slice].len() {
                        (slice, offset) = (slice + 1, 0);
                    }
                }
                Ok(())
            })?;
            left -= n;
        }
        // Sending starts now; what the socket cannot take yet waits for the next call.
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "TLS: the peer closed the connection without close_notify",
    )
}

/// Application data rustls opened before the record layer took over.
fn drain_plaintext(reader: &mut rustls::Reader<'_>) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut early = Vec::new();
    match reader.read_to_end(&mut early) {
        Ok(_) => Ok(early),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(early),
        Err(e) => Err(e),
    }
}

/// Handshake messages after the handshake: session tickets are ignored, anything else
/// (a key update above all) ends the connection.
fn post_handshake(mut msgs: &[u8]) -> io::Result<()> {
    const NEW_SESSION_TICKET: u8 = 4;
    const KEY_UPDATE: u8 = 24;
    while !msgs.is_empty() {
        let [ty, a, b, c, ..] = *msgs else {
            return Err(invalid("malformed handshake message"));
        };
        let len = u32::from_be_bytes([0, a, b, c]) as usize;
        if msgs.len() < 4 + len {
            return Err(invalid("a handshake message split across records"));
        }
        match ty {
            NEW_SESSION_TICKET => {}
            KEY_UPDATE => return Err(invalid("key updates are not supported")),
            _ => return Err(invalid("unexpected handshake message")),
        }
        msgs = &msgs[4 + len..];
    }
    Ok(())
}

impl AsyncRead for Records {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().sticky(|r| r.poll_read_records(cx, out))
    }
}

impl AsyncWrite for Records {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_records(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_records(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            // close_notify: a warning-level alert 0.
            this.seal(ALERT, |to| {
                to.extend_from_slice(&[1, 0]);
                Ok(())
            })?;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
