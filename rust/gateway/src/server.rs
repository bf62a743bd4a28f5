//! The memcached server: one task per connection, each reading what arrives, answering
//! every complete request in it (a pipelined burst gets its replies in one write), and
//! keeping partial requests for the next read.
//!
//! As memcached's worker threads, each connection lives on one of a few threads
//! (one per core), each with a single-threaded runtime: a connection's wake-ups never
//! cross threads, and a thread serves every connection ready at once before it sleeps.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::items::{ItemError, Items, Outcome};
use crate::meta_commands;
use crate::protocol::{
    parse, write_error, write_meta_noop, write_number, write_reply, write_stat, write_value,
    write_version, ErrorReply, Limits, ParseError, Reply, Request, StoreCommand,
};
use memcache_client::Error;

/// Counters for `stats`, named as memcached names them: one set per worker thread
/// (as memcached's), on cache lines of their own, so that counting a request never
/// contends with another thread; `stats` adds them up.
#[derive(Default)]
#[repr(align(128))]
pub struct Stats {
    curr_connections: AtomicU64,
    total_connections: AtomicU64,
    cmd_get: AtomicU64,
    cmd_set: AtomicU64,
    cmd_touch: AtomicU64,
    cmd_flush: AtomicU64,
    get_hits: AtomicU64,
    get_misses: AtomicU64,
    delete_hits: AtomicU64,
    delete_misses: AtomicU64,
    incr_hits: AtomicU64,
    incr_misses: AtomicU64,
    decr_hits: AtomicU64,
    decr_misses: AtomicU64,
    cas_hits: AtomicU64,
    cas_misses: AtomicU64,
    cas_badval: AtomicU64,
    touch_hits: AtomicU64,
    touch_misses: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    rejected_connections: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running gateway; stops when dropped.
pub struct Gateway {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A connection handed to a worker thread, with its place under the connection cap.
type Handed = (std::net::TcpStream, tokio::sync::OwnedSemaphorePermit);

/// The threads connections are served on; each ends once its sender is dropped and
/// its connections are done.
struct Workers {
    to: Vec<tokio::sync::mpsc::UnboundedSender<Handed>>,
    next: usize,
}

impl Workers {
    fn start(shared: &Arc<Shared>, stop: &watch::Receiver<bool>) -> std::io::Result<Workers> {
        let n = shared.threads;
        let mut to = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Handed>();
            let (shared, mut stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("mc-worker-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        let mut served = tokio::task::JoinSet::new();
                        let serving = async {
                            while let Some((stream, permit)) = rx.recv().await {
                                served.spawn(serve(stream, permit, shared.clone(), i));
                                while served.try_join_next().is_some() {}
                            }
                            while served.join_next().await.is_some() {}
                        };
                        // At the stop, dropping the set ends every connection where
                        // it waits; a connection's own reads do not watch for it.
                        tokio::select! {
                            () = serving => {}
                            _ = stop.wait_for(|s| *s) => {}
                        }
                    })
                })?;
            to.push(tx);
        }
        Ok(Workers { to, next: 0 })
    }

    /// Hands `conn` to the next worker, round robin.
    fn hand(&mut self, conn: Handed) {
        let n = self.to.len();
        self.next = (self.next + 1) % n;
        let _ = self.to[self.next].send(conn);
    }
}

impl Gateway {
    /// Serves on `bind` (port 0 picks one).
    pub async fn start(
        bind: SocketAddr,
        items: Arc<Items>,
        limits: Limits,
    ) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let threads = match limits.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shared = Arc::new(Shared {
            items,
            limits,
            stats: (0..threads).map(|_| Stats::default()).collect(),
            started: Instant::now(),
            threads,
        });
        let workers = Workers::start(&shared, &stopped)?;
        let task = tokio::spawn(accept(listener, shared, workers, stopped));
        Ok(Gateway { addr, stop, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

struct Shared {
    items: Arc<Items>,
    limits: Limits,
    /// Each worker thread's counters.
    stats: Vec<Stats>,
    started: Instant,
    /// Worker threads serving connections.
    threads: usize,
}

/// Replies waiting to be written are sent once they reach this many bytes, so a burst
/// of reads (or one `get` of many large items) never holds more than this and one item.
const OUT_HIGH: usize = 256 << 10;

/// What memcached tells a connection beyond its `-c` cap before closing it.
const TOO_MANY: &[u8] = b"ERROR Too many open connections\r\n";

async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut workers: Workers,
    mut stop: watch::Receiver<bool>,
) {
    let slots = memcache_tls::listen::slots(&memcache_tls::Limits {
        max_conns: shared.limits.max_connections,
        ..Default::default()
    });
    loop {
        // A failed accept (EMFILE, ...) backs off instead of spinning (the shared helper).
        let (stream, _) = tokio::select! {
            c = memcache_tls::listen::accept_any(&listener) => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        // At the cap, as memcached (maxconns_fast): an error line, then the door.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            bump(&shared.stats[0].rejected_connections);
            let _ = stream.try_write(TOO_MANY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        match stream.into_std() {
            Ok(stream) => workers.hand((stream, permit)),
            Err(e) => tracing::debug!(error = %e, "a memcached connection lost on accept"),
        }
    }
}

/// One connection, on the worker thread it was handed to.
async fn serve(
    stream: std::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
    shared: Arc<Shared>,
    worker: usize,
) {
    let stats = &shared.stats[worker];
    bump(&stats.total_connections);
    stats.curr_connections.fetch_add(1, Ordering::Relaxed);
    let served = match TcpStream::from_std(stream) {
        Ok(stream) => connection(stream, &shared, stats).await,
        Err(e) => Err(e),
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "memcached connection ended");
    }
    stats.curr_connections.fetch_sub(1, Ordering::Relaxed);
}

/// What to do with the connection after a request.
enum Next {
    Go,
    Close,
    /// `watch`: send what is written, then read no more commands.
    Watch,
    /// Send what is written now.
    Flush,
}

async fn connection(mut stream: TcpStream, shared: &Shared, stats: &Stats) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut out: Vec<u8> = Vec::with_capacity(16 << 10);
    // Bytes of a refused request's data block still to drop as they arrive.
    let mut skip = 0usize;
    // After `watch`, input is read and dropped, as memcached's log watchers do.
    let mut watching = false;
    loop {
        let read = stream.read_buf(&mut buf).await?;
        if read == 0 {
            return Ok(());
        }
        stats.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        if watching {
            buf.clear();
            continue;
        }
        let mut at = 0;
        let mut close = false;
        while at < buf.len() {
            if skip > 0 {
                let n = skip.min(buf.len() - at);
                (skip, at) = (skip - n, at + n);
                continue;
            }
            match parse(&buf[at..], &shared.limits) {
                Ok(Some((request, used))) => {
                    at += used;
                    let next = handle(request, shared, stats, &mut out, &mut stream).await;
                    if out.len() >= OUT_HIGH {
                        send(&mut stream, stats, &mut out).await?;
                    }
                    match next {
                        Next::Go => {}
                        Next::Close => {
                            close = true;
                            break;
                        }
                        Next::Watch => {
                            watching = true;
                            at = buf.len();
                            break;
                        }
                        Next::Flush => send(&mut stream, stats, &mut out).await?,
                    }
                }
                Ok(None) => break,
                Err(ParseError::Rejected {
                    reply,
                    skip: n,
                    noreply,
                }) => {
                    if !noreply {
                        write_error(&mut out, &reply);
                    }
                    skip = n;
                }
                Err(ParseError::TooLargeSet {
                    key,
                    skip: n,
                    noreply,
                }) => {
                    if !noreply {
                        write_error(&mut out, &ErrorReply::Server("object too large for cache"));
                    }
                    if let Err(e) = shared.items.delete(&key).await {
                        server_error(&mut out, &e);
                    }
                    skip = n;
                }
                Err(ParseError::LineTooLong) => {
                    close = true;
                    break;
                }
            }
        }
        buf.drain(..at.min(buf.len()));
        send(&mut stream, stats, &mut out).await?;
        if close {
            return Ok(());
        }
    }
}

/// Writes out and empties `out`.
async fn send(stream: &mut TcpStream, stats: &Stats, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        stats
            .bytes_written
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out.clear();
    }
    Ok(())
}

fn server_error(out: &mut Vec<u8>, e: &ItemError) {
    let reply = match e {
        ItemError::NotNumeric => {
            ErrorReply::Client("cannot increment or decrement non-numeric value")
        }
        // memcached's texts: its own for a full cache, and the one its clients map to
        // a temporary error for a pool that cannot answer now.
        ItemError::Pool(Error::OutOfMemory(_)) => {
            ErrorReply::Server("out of memory storing object")
        }
        ItemError::Pool(
            Error::Timeout(_)
            | Error::NotConnectedToMeta
            | Error::NotConnectedToLocal
            | Error::Failed(_),
        ) => ErrorReply::Server("temporary failure"),
        ItemError::Pool(_) => ErrorReply::Server("internal"),
    };
    tracing::debug!(error = %e, "memcached request failed");
    write_error(out, &reply);
}

/// Sends `out` once it holds `OUT_HIGH` bytes; false when the peer is gone.
async fn spill(stream: &mut TcpStream, stats: &Stats, out: &mut Vec<u8>) -> bool {
    out.len() < OUT_HIGH || send(stream, stats, out).await.is_ok()
}

async fn handle(
    request: Request<'_>,
    shared: &Shared,
    stats: &Stats,
    out: &mut Vec<u8>,
    stream: &mut TcpStream,
) -> Next {
    let items = &shared.items;
    match request {
        Request::Get { keys, cas } => {
            for key in keys {
                bump(&stats.cmd_get);
                match items.write_hit(&key, cas, out).await {
                    Ok(true) => bump(&stats.get_hits),
                    Ok(false) => bump(&stats.get_misses),
                    Err(e) => return failed(out, &e),
                }
                if !spill(stream, stats, out).await {
                    return Next::Close;
                }
            }
            write_reply(out, Reply::End);
        }
        Request::GetAndTouch { exptime, keys, cas } => {
            for key in keys {
                bump(&stats.cmd_touch);
                bump(&stats.cmd_get);
                match items.touch(&key, exptime).await {
                    Ok(Some(item)) => {
                        bump(&stats.get_hits);
                        bump(&stats.touch_hits);
                        write_value(out, &key, item.flags, &item.value, cas.then_some(item.cas));
                    }
                    Ok(None) => {
                        bump(&stats.get_misses);
                        bump(&stats.touch_misses);
                    }
                    Err(e) => return failed(out, &e),
                }
                if !spill(stream, stats, out).await {
                    return Next::Close;
                }
            }
            write_reply(out, Reply::End);
        }
        Request::TouchThenRefuse { exptime, keys } => {
            for key in keys {
                bump(&stats.cmd_touch);
                if let Err(e) = items.touch(&key, exptime).await {
                    return failed(out, &e);
                }
            }
            write_error(out, &ErrorReply::Client("bad command line format"));
        }
        Request::Store {
            command,
            key,
            flags,
            exptime,
            data,
            noreply,
        } => {
            bump(&stats.cmd_set);
            let outcome = items.store(command, &key, flags, exptime, &data).await;
            if let StoreCommand::Cas(_) = command {
                match &outcome {
                    Ok(Outcome::Stored) => bump(&stats.cas_hits),
                    Ok(Outcome::Exists) => bump(&stats.cas_badval),
                    Ok(Outcome::NotFound) => bump(&stats.cas_misses),
                    _ => {}
                }
            }
            let reply = match outcome {
                Ok(Outcome::Stored) => Reply::Stored,
                Ok(Outcome::NotStored) => Reply::NotStored,
                Ok(Outcome::Exists) => Reply::Exists,
                Ok(Outcome::NotFound) => Reply::NotFound,
                Err(e) => return failed(out, &e),
            };
            if !noreply {
                write_reply(out, reply);
            }
        }
        Request::Delete { key, noreply } => {
            let reply = match items.delete(&key).await {
                Ok(true) => {
                    bump(&stats.delete_hits);
                    Reply::Deleted
                }
                Ok(false) => {
                    bump(&stats.delete_misses);
                    Reply::NotFound
                }
                Err(e) => return failed(out, &e),
            };
            if !noreply {
                write_reply(out, reply);
            }
        }
        Request::Incr {
            key,
            delta,
            noreply,
        } => arithmetic(shared, stats, out, &key, delta, true, noreply).await,
        Request::Decr {
            key,
            delta,
            noreply,
        } => arithmetic(shared, stats, out, &key, delta, false, noreply).await,
        Request::Touch {
            key,
            exptime,
            noreply,
        } => {
            bump(&stats.cmd_touch);
            let reply = match items.touch(&key, exptime).await {
                Ok(Some(_)) => {
                    bump(&stats.touch_hits);
                    Reply::Touched
                }
                Ok(None) => {
                    bump(&stats.touch_misses);
                    Reply::NotFound
                }
                Err(e) => return failed(out, &e),
            };
            if !noreply {
                write_reply(out, reply);
            }
        }
        Request::FlushAll { delay, noreply } => {
            bump(&stats.cmd_flush);
            if delay > 0 {
                let items = items.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(delay as u64)).await;
                    let _ = items.flush().await;
                });
            } else if let Err(e) = items.flush().await {
                return failed(out, &e);
            }
            if !noreply {
                write_reply(out, Reply::Ok);
            }
        }
        Request::Stats { args } => write_stats_group(shared, &args, out),
        Request::MemLimit { megabytes, noreply } => {
            // memcached refuses a limit below the memory it has taken, and any where
            // its memory was set at start (-L): here, a pool of the meta service's.
            let line = match items.set_memory_limit(u64::from(megabytes) << 20) {
                Ok(()) => "OK",
                Err(_) => "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust",
            };
            write_line(out, line, noreply);
        }
        Request::Answer { line, noreply } => write_line(out, line, noreply),
        Request::Watch { known, noreply } => {
            // memcached refuses to turn a connection with replies still to send into
            // a log stream.
            let refusal = if !out.is_empty() {
                Some("ERROR cannot pipeline other commands before watch")
            } else if !known {
                Some("ERROR")
            } else {
                None
            };
            write_line(out, refusal.unwrap_or("OK"), noreply);
            if refusal.is_none() {
                return Next::Watch;
            }
        }
        Request::Version => write_version(out, env!("CARGO_PKG_VERSION")),
        Request::Verbosity { noreply, .. } => {
            if !noreply {
                write_reply(out, Reply::Ok);
            }
        }
        Request::Quit => return Next::Close,
        Request::MetaNoop => {
            // memcached sends its replies at `mn`, which matters to `watch`.
            write_meta_noop(out);
            return Next::Flush;
        }
        Request::MetaGet { key, flags } => {
            bump(&stats.cmd_get);
            if let Err(e) = meta_commands::get(items, &key, &flags, out).await {
                return failed(out, &e);
            }
        }
        Request::MetaSet { key, data, flags } => {
            bump(&stats.cmd_set);
            if let Err(e) = meta_commands::set(items, &key, &data, &flags, out).await {
                return failed(out, &e);
            }
        }
        Request::MetaDelete { key, flags } => {
            if let Err(e) = meta_commands::delete(items, &key, &flags, out).await {
                return failed(out, &e);
            }
        }
        Request::MetaArithmetic { key, flags } => {
            if let Err(e) = meta_commands::arithmetic(items, &key, &flags, out).await {
                return failed(out, &e);
            }
        }
        Request::MetaDebug { key, base64 } => {
            if let Err(e) = meta_commands::debug(items, &key, base64, out).await {
                return failed(out, &e);
            }
        }
    }
    Next::Go
}

#[allow(clippy::too_many_arguments)]
async fn arithmetic(
    shared: &Shared,
    s: &Stats,
    out: &mut Vec<u8>,
    key: &[u8],
    delta: u64,
    up: bool,
    noreply: bool,
) {
    let (hits, misses) = if up {
        (&s.incr_hits, &s.incr_misses)
    } else {
        (&s.decr_hits, &s.decr_misses)
    };
    match shared.items.add_delta(key, delta, up).await {
        Ok(Some(n)) => {
            bump(hits);
            if !noreply {
                write_number(out, n);
            }
        }
        Ok(None) => {
            bump(misses);
            if !noreply {
                write_reply(out, Reply::NotFound);
            }
        }
        // memcached's noreply silences these errors too.
        Err(e) if !noreply => server_error(out, &e),
        Err(e) => tracing::debug!(error = %e, "memcached request failed"),
    }
}

fn failed(out: &mut Vec<u8>, e: &ItemError) -> Next {
    server_error(out, e);
    Next::Go
}

/// `stats [group ...]`, with memcached's answers for its groups; the gateway keeps
/// only the general counters, so the other groups list nothing.
/// One fixed answer line, unless the request said `noreply`.
fn write_line(out: &mut Vec<u8>, line: &str, noreply: bool) {
    if !noreply {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn write_stats_group(shared: &Shared, args: &[String], out: &mut Vec<u8>) {
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        None => {
            write_stats(shared, out);
            write_reply(out, Reply::End);
        }
        Some("reset") => write_reply(out, Reply::Reset),
        Some("detail") => match arg(1) {
            Some("on" | "off") => write_reply(out, Reply::Ok),
            Some("dump") => write_reply(out, Reply::End),
            _ => write_error(out, &ErrorReply::Client("usage: stats detail on|off|dump")),
        },
        Some("cachedump") if args.len() < 3 => {
            write_error(out, &ErrorReply::Client("bad command line"))
        }
        Some("settings" | "items" | "slabs" | "sizes" | "conns" | "extstore" | "cachedump") => {
            write_reply(out, Reply::End)
        }
        Some(_) => write_error(out, &ErrorReply::Error),
    }
}

fn write_stats(shared: &Shared, out: &mut Vec<u8>) {
    let now = crate::items::unix_now();
    let uptime = shared.started.elapsed().as_secs();
    write_stat(out, "pid", std::process::id());
    write_stat(out, "uptime", uptime);
    write_stat(out, "time", now);
    write_stat(out, "version", env!("CARGO_PKG_VERSION"));
    write_stat(out, "pointer_size", usize::BITS);
    write_stat(out, "threads", shared.threads);
    for (i, name) in Stats::NAMES.iter().enumerate() {
        let total: u64 = shared
            .stats
            .iter()
            .map(|s| s.counters()[i].load(Ordering::Relaxed))
            .sum();
        write_stat(out, name, total);
    }
}

impl Stats {
    const NAMES: [&'static str; 22] = [
        "curr_connections",
        "total_connections",
        "cmd_get",
        "cmd_set",
        "cmd_flush",
        "cmd_touch",
        "get_hits",
        "get_misses",
        "delete_misses",
        "delete_hits",
        "incr_misses",
        "incr_hits",
        "decr_misses",
        "decr_hits",
        "cas_misses",
        "cas_hits",
        "cas_badval",
        "touch_hits",
        "touch_misses",
        "bytes_read",
        "bytes_written",
        "rejected_connections",
    ];

    /// The counters in the order of [`Stats::NAMES`].
    fn counters(&self) -> [&AtomicU64; 22] {
        [
            &self.curr_connections,
            &self.total_connections,
            &self.cmd_get,
            &self.cmd_set,
            &self.cmd_flush,
            &self.cmd_touch,
            &self.get_hits,
            &self.get_misses,
            &self.delete_misses,
            &self.delete_hits,
            &self.incr_misses,
            &self.incr_hits,
            &self.decr_misses,
            &self.decr_hits,
            &self.cas_misses,
            &self.cas_hits,
            &self.cas_badval,
            &self.touch_hits,
            &self.touch_misses,
            &self.bytes_read,
            &self.bytes_written,
            &self.rejected_connections,
        ]
    }
}
