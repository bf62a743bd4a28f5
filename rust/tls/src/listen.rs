//! One accept loop for every listener: a cap on open connections, and a backoff when
//! accepting fails (EMFILE, ENFILE, ...) instead of spinning on the error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; the listener stops accepting at the cap.
    pub max_conns: usize,
    /// A connection idle this long (no request read) is closed.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: 4096,
            idle: Duration::from_secs(600),
        }
    }
}

/// First and longest pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Accepts one connection within `slots` (a semaphore of `max_conns` permits): waits for
/// a free slot, then for a connection; on an accept error waits 10 ms, doubling up to
/// 100 ms, and tries again. The permit is to be held as long as the connection.
pub async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, std::net::SocketAddr, OwnedSemaphorePermit) {
    let permit = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the connection semaphore is never closed");
    let (s, peer) = accept_any(listener).await;
    (s, peer, permit)
}

/// Accepts one connection; on an accept error waits 10 ms, doubling up to 100 ms, and
/// tries again.
pub async fn accept_any(listener: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
    let mut pause = BACKOFF_MIN;
    loop {
        match listener.accept().await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "accept failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Serves `listener` for as long as the future runs: each connection (within
/// `limits.max_conns`) gets a task of its own, which completes the TLS handshake where
/// `tls` is set and hands the stream, the peer's roles and its address to `handle`. A
/// failed handshake is logged (as `what`'s) and reported to `refused`.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Arc<crate::TlsServer>>,
    limits: Limits,
    what: &'static str,
    refused: impl Fn() + Clone + Send + 'static,
    handle: H,
) where
    H: Fn(crate::Stream, crate::Peer, std::net::SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = slots(&limits);
    loop {
        let (tcp, from, permit) = accept(&listener, &slots).await;
        let (tls, refused, handle) = (tls.clone(), refused.clone(), handle.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match crate::accept_stream(tls.as_deref(), tcp).await {
                Ok((stream, peer)) => handle(stream, peer, from).await,
                Err(e) => {
                    tracing::warn!(peer = %from, error = %e, "{what}: refused a connection: TLS handshake failed");
                    refused();
                }
            }
        });
    }
}

/// A semaphore of `limits.max_conns` slots.
pub fn slots(limits: &Limits) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(limits.max_conns.max(1)))
}

/// A stream whose reads fail with `TimedOut` once nothing arrived for `idle`: a
/// server's way to drop connections a peer left open and silent.
pub struct Idle<S> {
    inner: S,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<S> Idle<S> {
    pub fn new(inner: S, idle: Duration) -> Idle<S> {
        Idle {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream itself: reads through it do not restart the idle timer.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Idle<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(r)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
