//! Hands segment file descriptors to same-host processes over a unix socket, so a
//! client maps a segment once and then copies with plain memcpy.
//!
//! Protocol: the client sends a segment id (8 bytes, little endian); the service
//! answers one status byte (0 found, 1 unknown) and, when found, the segment's
//! descriptor as `SCM_RIGHTS`.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use memcache_core::{Error, Result, SegmentId};

use crate::segment::{find_segment, SegmentTable, ShmSegment};

const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves descriptors of the segments in a table until dropped.
pub struct SegmentServer {
    path: PathBuf,
    /// Bound but not yet serving: requests wait in the backlog.
    listener: Option<UnixListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SegmentServer {
    /// Binds the socket. Requests queue until `serve` is called, so the socket can be
    /// announced before the segment ids are known.
    pub fn bind(path: PathBuf) -> Result<Self> {
        // A socket file left by a dead process of the same name would block the bind.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| Error::Failed(format!("binding {}: {e}", path.display())))?;
        Ok(SegmentServer {
            path,
            listener: Some(listener),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        })
    }

    /// Starts answering requests for `segments`.
    pub fn serve(&mut self, segments: SegmentTable) -> Result<()> {
        self.serve_counted(segments, None)
    }

    /// As `serve`, counting the descriptors handed out.
    pub fn serve_counted(
        &mut self,
        segments: SegmentTable,
        handouts: Option<prometheus::IntCounter>,
    ) -> Result<()> {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| Error::RepeatCall("the descriptor server already serves".into()))?;
        let stopping = self.stop.clone();
        let thread = std::thread::Builder::new()
            .name("memcache-fd-server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        match answer(conn, &segments) {
                            Ok(true) => {
                                if let Some(c) = &handouts {
                                    c.inc();
                                }
                            }
                            Ok(false) => {}
                            Err(e) => tracing::debug!(error = %e, "segment descriptor request"),
                        }
                    }
                }
            })
            .map_err(|e| Error::Failed(format!("starting the descriptor server: {e}")))?;
        self.thread = Some(thread);
        Ok(())
    }

    pub fn start(path: PathBuf, segments: SegmentTable) -> Result<Self> {
        let mut server = Self::bind(path)?;
        server.serve(segments)?;
        Ok(server)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SegmentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one request; true when a descriptor went out.
fn answer(mut conn: UnixStream, segments: &SegmentTable) -> std::io::Result<bool> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut id = [0u8; 8];
    conn.read_exact(&mut id)?;
    let id = u64::from_le_bytes(id);
    let Some(seg) = find_segment(segments, id) else {
        return conn.write_all(&[1]).map(|()| false);
    };
    let fds = [seg.fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        conn.as_fd(),
        &[IoSlice::new(&[0])],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(true)
}

/// Maps segment `id` of the local service listening on `path`.
pub fn fetch_segment(path: &Path, id: SegmentId) -> Result<ShmSegment> {
    let unreachable = |e: std::io::Error| {
        tracing::debug!(path = %path.display(), error = %e, "segment descriptor");
        Error::NotConnectedToLocal
    };
    let mut conn = UnixStream::connect(path).map_err(unreachable)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(unreachable)?;
    conn.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(unreachable)?;
    conn.write_all(&id.to_le_bytes()).map_err(unreachable)?;
    let mut status = [0xFFu8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        conn.as_fd(),
        &mut [IoSliceMut::new(&mut status)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| unreachable(e.into()))?;
    if got.bytes != 1 || status[0] != 0 {
        return Err(Error::invalid(format!(
            "segment {id} is not served at {}",
            path.display()
        )));
    }
    let fd = control
        .drain()
        .find_map(|m| match m {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
        .ok_or(Error::NotConnectedToLocal)?;
    let file = File::from(fd);
    let len = file
        .metadata()
        .map_err(|e| Error::Failed(format!("segment {id}: {e}")))?
        .len();
    ShmSegment::open(file, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_segment_shares_the_pages() {
        let dir = std::env::temp_dir().join(format!("mmc-fdpass-{}", std::process::id()));
        let seg = Arc::new(ShmSegment::create("test", 1 << 16).unwrap());
        seg.write_at(100, 105, &[b"hello"]).unwrap();
        let table = Arc::new(std::sync::RwLock::new(vec![(7, seg.clone())]));
        let server = SegmentServer::start(dir.clone(), table).unwrap();
        let mapped = fetch_segment(server.path(), 7).unwrap();
        assert_eq!(mapped.len(), 1 << 16);
        let mut out = [0u8; 5];
        mapped.read_at(100, 5, &mut [&mut out]).unwrap();
        assert_eq!(&out, b"hello");
        // Writes through either mapping are seen by the other.
        mapped.write_at(0, 3, &[b"abc"]).unwrap();
        let mut back = [0u8; 3];
        seg.read_at(0, 3, &mut [&mut back]).unwrap();
        assert_eq!(&back, b"abc");
        assert_eq!(fetch_segment(server.path(), 8).err().unwrap().code(), -3000);
        drop(server);
        assert!(!dir.exists());
        assert_eq!(fetch_segment(&dir, 7).err().unwrap().code(), -3018);
    }
}
