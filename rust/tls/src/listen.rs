//! One accept loop for every listener: a cap on open connections, and a backoff when
//! accepting fails (EMFILE, ENFILE, ...) instead of spinning on the error.

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
    let mut pause = BACKOFF_MIN;
    loop {
        match listener.accept().await {
            Ok((s, peer)) => return (s, peer, permit),
            Err(e) => {
                tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "accept failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// A semaphore of `limits.max_conns` slots.
pub fn slots(limits: &Limits) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(limits.max_conns.max(1)))
}
