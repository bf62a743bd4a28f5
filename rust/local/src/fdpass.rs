//! Hands segment file descriptors to same-host processes over a unix socket, so a
//! client maps a segment once and then copies with plain memcpy.
//!
//! Protocol: the client sends a segment id (8 bytes, little endian); the service
//! answers one status byte (0 found, 1 unknown, 2 refused, 3 device) and, when found,
//! the segment's descriptor as `SCM_RIGHTS`. A device (HBM) segment has no descriptor:
//! its status is followed by the device (u32), the length (u64), the handle's length
//! (u16) and the device runtime's inter-process handle, little endian.
//!
//! A descriptor or a handle maps a segment read-write, so only processes of the
//! service's own user get one: the socket file is the owner's alone (mode 0600) and
//! every peer's uid is checked (`SO_PEERCRED`) in case the file's mode was widened.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use memcache_core::{Error, Result, SegmentId};

use crate::segment::{find_segment, Segment, SegmentTable, ShmSegment};
use crate::DeviceHandle;

const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests answered at once; one more is closed unanswered (its client retries).
/// Each has its own thread, so a slow peer holds up nobody but itself.
const MAX_IN_FLIGHT: usize = 64;

const FOUND: u8 = 0;
const UNKNOWN: u8 = 1;
const REFUSED: u8 = 2;
const DEVICE: u8 = 3;
/// The longest device handle accepted (CUDA's are 64 bytes, ACL's keys 65 at most).
const MAX_HANDLE: usize = 256;

/// Serves descriptors of the segments in a table until dropped.
pub struct SegmentServer {
    path: PathBuf,
    /// Bound but not yet serving: requests wait in the backlog.
    listener: Option<UnixListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SegmentServer {
    /// Binds the socket, readable and writable by this user only. Requests queue until
    /// `serve` is called, so the socket can be announced before the segment ids are
    /// known. A live service already on `path` is an error; a socket file a dead
    /// process left there is replaced.
    pub fn bind(path: PathBuf) -> Result<Self> {
        let failed = |e: std::io::Error| Error::Failed(format!("binding {}: {e}", path.display()));
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(Error::Failed(format!(
                    "{} is in use by a running local service",
                    path.display()
                )));
            }
            std::fs::remove_file(&path).map_err(failed)?;
        }
        // Made under a name of its own and renamed once its mode is 0600: no process
        // can reach it at the final path while others may still connect.
        let staging = path.with_extension(format!("bind-{}", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging).map_err(failed)?;
        let private = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&staging, &path));
        if let Err(e) = private {
            let _ = std::fs::remove_file(&staging);
            return Err(failed(e));
        }
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
        let in_flight = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("memcache-fd-server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    let conn = match conn {
                        Ok(c) => c,
                        // Out of descriptors, most likely: give the ones in use time
                        // to close instead of spinning on the error.
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                        continue;
                    }
                    let (segments, handouts, done) =
                        (segments.clone(), handouts.clone(), in_flight.clone());
                    let spawned = std::thread::Builder::new()
                        .name("memcache-fd-answer".into())
                        .spawn(move || {
                            match answer(conn, &segments) {
                                Ok(true) => {
                                    if let Some(c) = &handouts {
                                        c.inc();
                                    }
                                }
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::debug!(error = %e, "segment descriptor request")
                                }
                            }
                            done.fetch_sub(1, Ordering::AcqRel);
                        });
                    if spawned.is_err() {
                        in_flight.fetch_sub(1, Ordering::AcqRel);
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
    // The request is read first, so every peer that sends one gets an answer.
    let mut id = [0u8; 8];
    conn.read_exact(&mut id)?;
    let id = u64::from_le_bytes(id);
    let peer = rustix::net::sockopt::socket_peercred(&conn)?;
    let me = rustix::process::geteuid();
    if peer.uid != me {
        tracing::warn!(
            uid = peer.uid.as_raw(),
            pid = peer.pid.as_raw_nonzero().get(),
            "refused a segment descriptor to a process of another user"
        );
        return conn.write_all(&[REFUSED]).map(|()| false);
    }
    let seg = match find_segment(segments, id) {
        Some(Segment::Shm(seg)) => seg,
        Some(Segment::Device(d)) => {
            return match d.export() {
                Ok(shared) => conn.write_all(&device_answer(&shared)).map(|()| true),
                // Where the runtime shares nothing, the segment is reached over TCP.
                Err(e) => {
                    tracing::debug!(segment = id, error = %e, "no handle for an HBM segment");
                    conn.write_all(&[UNKNOWN]).map(|()| false)
                }
            };
        }
        None => return conn.write_all(&[UNKNOWN]).map(|()| false),
    };
    let fds = [seg.fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        conn.as_fd(),
        &[IoSlice::new(&[FOUND])],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(true)
}

fn device_answer(shared: &DeviceHandle) -> Vec<u8> {
    let mut out = vec![DEVICE];
    out.extend(shared.device.to_le_bytes());
    out.extend(shared.len.to_le_bytes());
    out.extend((shared.handle.len() as u16).to_le_bytes());
    out.extend(&shared.handle);
    out
}

/// What a local service hands a same-host process for one of its segments.
pub enum Served {
    /// A DRAM segment, mapped here.
    Shm(ShmSegment),
    /// An HBM segment, for the device runtime to import.
    Device(DeviceHandle),
}

/// The rest of a device answer, after its status byte; a handle longer than any
/// runtime's is refused before it is read.
fn read_device_answer(conn: &mut impl Read) -> std::io::Result<DeviceHandle> {
    let mut head = [0u8; 14];
    conn.read_exact(&mut head)?;
    let device = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[4..12]);
    let n = u16::from_le_bytes([head[12], head[13]]) as usize;
    if n == 0 || n > MAX_HANDLE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a device handle of {n} bytes"),
        ));
    }
    let mut handle = vec![0u8; n];
    conn.read_exact(&mut handle)?;
    Ok(DeviceHandle {
        device,
        len: u64::from_le_bytes(len),
        handle,
    })
}

/// Segment `id` of the local service listening on `path`: a DRAM segment mapped here,
/// or the handle of an HBM one.
pub fn fetch_segment(path: &Path, id: SegmentId) -> Result<Served> {
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
    match (got.bytes, status[0]) {
        (1, FOUND) => {}
        (1, DEVICE) => {
            return read_device_answer(&mut conn)
                .map(Served::Device)
                .map_err(|e| Error::invalid(format!("segment {id} at {}: {e}", path.display())))
        }
        (1, REFUSED) => {
            return Err(Error::invalid(format!(
                "{} serves segments to its own user only",
                path.display()
            )))
        }
        _ => {
            return Err(Error::invalid(format!(
                "segment {id} is not served at {}",
                path.display()
            )))
        }
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
    ShmSegment::open(file, len).map(Served::Shm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_segment_shares_the_pages() {
        let dir = std::env::temp_dir().join(format!("mmc-fdpass-{}", std::process::id()));
        let seg = Arc::new(ShmSegment::create("test", 1 << 16).unwrap());
        seg.write_at(100, 105, &[b"hello"]).unwrap();
        let table = Arc::new(std::sync::RwLock::new(vec![(
            7,
            crate::Segment::Shm(seg.clone()),
        )]));
        let server = SegmentServer::start(dir.clone(), table).unwrap();
        let Served::Shm(mapped) = fetch_segment(server.path(), 7).unwrap() else {
            panic!("a DRAM segment comes as a descriptor");
        };
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

    fn served(name: &str) -> (PathBuf, SegmentServer) {
        let path = std::env::temp_dir().join(format!("mmc-{name}-{}.sock", std::process::id()));
        let seg = Arc::new(ShmSegment::create("test", 1 << 16).unwrap());
        let table = Arc::new(std::sync::RwLock::new(vec![(7, crate::Segment::Shm(seg))]));
        (path.clone(), SegmentServer::start(path, table).unwrap())
    }

    #[test]
    fn the_socket_is_its_owners_and_a_live_one_is_not_taken_over() {
        let (path, server) = served("owner");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SegmentServer::bind(path.clone());
        assert!(again.is_err(), "a second service took over a live socket");
        assert!(
            fetch_segment(&path, 7).is_ok(),
            "the first one still serves"
        );
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_socket_file_is_replaced() {
        let path = std::env::temp_dir().join(format!("mmc-stale-{}.sock", std::process::id()));
        drop(UnixListener::bind(&path).unwrap()); // bound, then closed: the file stays
        assert!(path.exists());
        let seg = Arc::new(ShmSegment::create("test", 1 << 16).unwrap());
        let table = Arc::new(std::sync::RwLock::new(vec![(7, crate::Segment::Shm(seg))]));
        let server = SegmentServer::start(path.clone(), table).unwrap();
        assert!(fetch_segment(server.path(), 7).is_ok());
    }

    #[test]
    fn a_device_segment_is_handed_out_as_its_handle() {
        let d: &'static memcache_device::fake::FakeDevice =
            Box::leak(Box::new(memcache_device::fake::FakeDevice::new(2)));
        let seg = Arc::new(crate::DeviceSegment::create_with(d, 1, 1 << 16).unwrap());
        let table = Arc::new(std::sync::RwLock::new(vec![(
            9,
            crate::Segment::Device(seg.clone()),
        )]));
        let path = std::env::temp_dir().join(format!("mmc-hbm-{}.sock", std::process::id()));
        let server = SegmentServer::start(path, table).unwrap();
        let Served::Device(shared) = fetch_segment(server.path(), 9).unwrap() else {
            panic!("an HBM segment comes as a handle");
        };
        assert_eq!(shared, seg.export().unwrap());
        let there = crate::DeviceSegment::import_with(d, &shared).unwrap();
        assert_eq!(there.base(), seg.base(), "the simulation maps in place");
    }

    /// A peer posing as the service: its answer is read within bounds, never trusted.
    fn answered_by(name: &str, answer: Vec<u8>) -> Result<Served> {
        let path = std::env::temp_dir().join(format!("mmc-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let peer = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut id = [0u8; 8];
            conn.read_exact(&mut id).unwrap();
            let _ = conn.write_all(&answer);
        });
        let got = fetch_segment(&path, 1);
        peer.join().unwrap();
        let _ = std::fs::remove_file(&path);
        got
    }

    #[test]
    fn a_bad_device_answer_is_an_error() {
        let good = device_answer(&DeviceHandle {
            device: 0,
            len: 4096,
            handle: vec![1; 64],
        });
        assert!(matches!(
            answered_by("good", good.clone()),
            Ok(Served::Device(_))
        ));
        for (name, bad) in [
            ("cut", good[..good.len() - 1].to_vec()),
            ("short", good[..5].to_vec()),
            ("huge", {
                let mut b = good.clone();
                b[13..15].copy_from_slice(&u16::MAX.to_le_bytes());
                b
            }),
            ("empty", {
                let mut b = good[..15].to_vec();
                b[13..15].copy_from_slice(&0u16.to_le_bytes());
                b
            }),
            ("status", vec![200]),
            ("fd-less", vec![FOUND]),
        ] {
            let e = answered_by(name, bad).err().expect(name);
            assert!(matches!(e.code(), -3000 | -3018), "{name}: {e}");
        }
    }

    /// What a process of user `uid` gets when it asks for segment 7 at `path`.
    fn ask_as(uid: u32, path: &Path) -> String {
        use std::os::unix::process::CommandExt;
        const ASK: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("no access"); sys.exit(0)
s.sendall(struct.pack("<Q", 7))
msg, anc, _, _ = s.recvmsg(1, socket.CMSG_SPACE(4))
fds = [c for c in anc if c[1] == socket.SCM_RIGHTS]
print("status %d, %d descriptors" % (msg[0] if msg else -1, len(fds)))
"#;
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", ASK])
            .arg(path)
            .uid(uid)
            .gid(uid)
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn a_process_of_another_user_gets_no_descriptor() {
        let me = rustix::process::geteuid().as_raw();
        if me != 0 || !Path::new("/usr/bin/python3").exists() {
            eprintln!("skipped: needs root (to run a process as another user) and python3");
            return;
        }
        let (path, _server) = served("uid");
        assert_eq!(ask_as(me, &path), "status 0, 1 descriptors");
        let nobody = 65534;
        assert_eq!(ask_as(nobody, &path), "no access");
        // Opened up by hand: the uid check still refuses.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(ask_as(nobody, &path), "status 2, 0 descriptors");
        assert_eq!(ask_as(me, &path), "status 0, 1 descriptors");
    }
}
