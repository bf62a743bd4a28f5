//! `mmc bench <workload> [--json]`: the benchmark contract every issue reports against.
//!
//! Each workload measures the fastest one-thread copy of the same bytes between the same
//! buffers in the same run (glibc's memcpy of the whole arena at once, and of each
//! layer; the faster of the two), and reports our throughput as a ratio of it: these
//! machines are shared and noisy, so absolute numbers mean little and ratios travel.
//! The same copy split over every core is reported too, as the machine's limit.
//! Every buffer is touched before timing and a warm-up pass runs first, so figures are
//! steady state, not first-touch page faults.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

use memcache_client::{
    BlockingObjectStore, ClientConfig, CopyDirection, CopyWay, Medium, Piece, ReplicateConfig,
    TransportKind,
};
use memcache_local::{copy_slice_with, Kernel};
use memcache_meta::PageAllocator;

#[derive(Clone, Copy, ValueEnum)]
enum Workload {
    /// 8784 KiB KV blocks of 61 × 128 KiB + 61 × 16 KiB layers, batches of 8 keys.
    Layers,
    /// 4 KiB objects in batches of 64: put, exists, get.
    Small,
    /// The segment allocator alone: alloc + free pairs under KV-cache churn.
    Alloc,
    /// Committed 4 KiB puts per second through a 3-node meta group against a 1-node
    /// group (`mmc meta` processes), and the failover time after SIGKILL to the leader.
    Raft,
    /// Our memcached gateway against a real memcached (same memory and threads), 90 %
    /// get / 10 % set of 100 B to 4 KiB values, one request in flight per connection.
    Memcached,
    /// The meta service's memory per stored object (`--objects`, 1 M by default): a
    /// state machine built in this process, measured by the growth of the heap in use.
    MetaMemory,
    /// The layers workload between device memory and the pool (L2G puts, G2L gets)
    /// against the device runtime's own copies of the same bytes to and from a pinned
    /// host arena; needs a build with `--features cuda` or `ascend` and a device.
    Device,
    /// `--minutes` of mixed KV and memcached traffic with churn on a pool of `mmc`
    /// processes; fails if any process's RSS ends over 10 % above its value at minute 2.
    Soak,
}

#[derive(Args, Clone)]
pub struct BenchArgs {
    #[arg(value_enum)]
    workload: Workload,
    /// Print one JSON object per workload instead of a sentence.
    #[arg(long)]
    json: bool,
    /// DRAM the embedded local service contributes.
    #[arg(long, default_value = "1GiB", value_parser = crate::parse_size)]
    dram_size: u64,
    /// Keys per pass (default: 64 for layers, 16384 for small).
    #[arg(long)]
    keys: Option<usize>,
    /// Timed rounds; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Run against the pool of this meta service (`tcp://HOST:PORT`) as a pure client.
    #[arg(long, env = "MMC_DISCOVERY_URL")]
    discovery: Option<String>,
    /// Force the data plane (with `--discovery`): `tcp` also measures a raw loopback
    /// TCP stream of the same bytes and reports `put_ratio_tcp` / `get_ratio_tcp`.
    #[arg(long, value_enum)]
    transport: Option<TransportArg>,
    /// Concurrent writers (raft), connections (memcached).
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// memcached: run our gateway with an SSD tier in this directory (emptied first).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// layers, small: print `{"ready":true}` after the warm-up, then run each timed round
    /// when a line arrives on standard input and print its figures as a JSON line. Lets
    /// another front end's benchmark alternate its rounds with ours in one run, so both
    /// see the same machine (`python/bench/bench_layers.py`, `tests/cpp/bench_layers.cpp`).
    /// End of input ends the rounds.
    #[arg(long)]
    stepped: bool,
    /// layers, small: map the source and destination arenas from the files `src` and `dst`
    /// in this directory (a tmpfs such as /dev/shm; created and sized as needed), so that
    /// another process's benchmark copies between the very same pages. Two processes'
    /// private memory can differ in copy speed by 20 % on a VM, which would swamp the
    /// difference between two front ends.
    #[arg(long)]
    arena_dir: Option<std::path::PathBuf>,
    /// meta-memory: objects to store.
    #[arg(long, default_value_t = 1_000_000)]
    objects: usize,
    /// soak: how long to run (fractions allowed, e.g. 0.5).
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// layers: run an in-process pool (a meta service and a local service on loopback),
    /// plaintext and mutual TLS 1.3 (certificates made here) in turn, three times each,
    /// as a pure client over the TCP data plane, and report `tls_put_ratio` /
    /// `tls_get_ratio` (TLS over plaintext). Named `--tls-bench` because `--tls` turns
    /// TLS on for any command.
    #[arg(long = "tls-bench")]
    tls_bench: bool,
    /// layers, small: threads that copy one batch (the client's `write_threads` and
    /// `read_threads`; default: the configuration's, capped at the cores).
    #[arg(long)]
    copy_threads: Option<u32>,
    /// memcached: percent of requests that are gets (the rest are sets).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    get_percent: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    Shm,
    Tcp,
}

impl BenchArgs {
    fn tcp(&self) -> bool {
        self.transport == Some(TransportArg::Tcp)
    }
}

pub fn run(args: BenchArgs) -> Result<(), String> {
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if let Workload::Soak = args.workload {
        // It prints as it goes (a soak is long) and fails on growth.
        return crate::bench_soak::run(args.minutes, args.json);
    }
    let report = match args.workload {
        Workload::Layers if args.tls_bench => bench_layers_tls(&args)?,
        Workload::Layers => bench_layers(&args)?,
        Workload::Small => bench_small(&args)?,
        Workload::Alloc => bench_alloc(&args),
        Workload::Raft => crate::bench_raft::run(args.rounds, args.writers)?,
        Workload::Memcached => crate::bench_memcached::run(
            args.rounds,
            args.writers,
            args.get_percent,
            args.data_dir.as_deref(),
        )?,
        Workload::MetaMemory => crate::bench_meta_memory::run(args.objects)?,
        Workload::Device => {
            crate::bench_device::run(args.keys.unwrap_or(64).max(1), args.rounds, args.dram_size)?
        }
        Workload::Soak => unreachable!("run above"),
    };
    if args.json {
        println!("{report}");
    } else {
        print_human(&report);
    }
    Ok(())
}

/// The layer sizes of one KV block of a real engine: 61 × (128 KiB + 16 KiB).
pub fn kv_block_layout() -> Vec<usize> {
    (0..61).flat_map(|_| [128 << 10, 16 << 10]).collect()
}

/// A buffer of `n` bytes whose content depends on (key, layer), to catch misplaced
/// copies.
pub fn pattern_fill(n: usize, key: usize, layer: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    pattern_into(&mut v, key, layer);
    v
}

fn pattern_into(buf: &mut [u8], key: usize, layer: usize) {
    let seed = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (layer as u64) << 32;
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let word = (seed ^ i as u64)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// The source and destination arenas of `keys` objects of `layout`, the source filled
/// with patterns.
fn arenas(layout: &[usize], keys: usize, args: &BenchArgs) -> Result<(Arena, Arena), String> {
    let file = |name| args.arena_dir.as_ref().map(|d| d.join(name));
    let mut src = Arena::new(layout, keys, 0, file("src").as_deref())?;
    src.fill_patterns();
    let dst = Arena::new(layout, keys, 0xA5, file("dst").as_deref())?;
    Ok((src, dst))
}

/// The embedded default (this process contributes `--dram-size`), or a pure client of
/// the pool at `--discovery`.
fn open_store(args: &BenchArgs) -> Result<BlockingObjectStore, String> {
    let (mut config, init_bm) = match &args.discovery {
        None => (ClientConfig::with_dram(args.dram_size), true),
        Some(url) => {
            let mut c = ClientConfig::remote(url, 0);
            c.transport = args.transport.map(|t| match t {
                TransportArg::Shm => TransportKind::Shm,
                TransportArg::Tcp => TransportKind::Tcp,
            });
            (c, false)
        }
    };
    if let Some(n) = args.copy_threads {
        (config.write_threads, config.read_threads) = (n, n);
    }
    let store = BlockingObjectStore::new(config).map_err(|e| format!("creating the store: {e}"))?;
    store.init(0, init_bm).map_err(|e| format!("init: {e}"))?;
    Ok(store)
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `pct` percentile of `sorted` (the default value when it is empty).
pub fn percentile<T: Copy + Default>(sorted: &[T], pct: usize) -> T {
    match sorted.len() {
        0 => T::default(),
        n => sorted[(n * pct / 100).min(n - 1)],
    }
}

fn percentile_us(sorted: &[Duration], pct: usize) -> f64 {
    percentile(sorted, pct).as_secs_f64() * 1e6
}

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

/// CPU time this process (every thread) has used, in seconds.
pub(crate) fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given; an all-zero rusage is valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// One round of the reference copies, in seconds (see [`Passes::memcpy`]).
struct Copies {
    /// glibc's memcpy layer by layer, and of the whole arena.
    layers: f64,
    whole: f64,
    /// The fastest of our own kernels over the whole arena.
    kernels: f64,
    all_cores: f64,
}

/// Times `f`, returning its duration.
fn timed(f: impl FnOnce() -> Result<(), String>) -> Result<f64, String> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

fn all_ok<T>(what: &str, results: Vec<memcache_client::Result<T>>) -> Result<(), String> {
    match results.into_iter().find_map(Result::err) {
        None => Ok(()),
        Some(e) => Err(format!("{what}: {e} (code {})", e.code())),
    }
}

/// Objects back to back in one page-aligned mapping, as an engine lays out its KV
/// cache: layer `l` of object `k` starts at `k * object + starts[l]`. Both the C++
/// benchmark and this one use this layout, so their figures compare.
struct Arena {
    map: memmap2::MmapMut,
    layout: Vec<usize>,
    object: usize,
}

impl Arena {
    /// `keys` objects of `layout`, every page touched: private memory, or the file `file`
    /// (see `--arena-dir`).
    fn new(
        layout: &[usize],
        keys: usize,
        fill: u8,
        file: Option<&std::path::Path>,
    ) -> Result<Arena, String> {
        let object: usize = layout.iter().sum();
        let len = object * keys;
        let mut map = match file {
            None => memmap2::MmapMut::map_anon(len),
            Some(path) => Self::map_file(path, len),
        }
        .map_err(|e| format!("allocating {len} bytes: {e}"))?;
        map.fill(fill);
        Ok(Arena {
            map,
            layout: layout.to_vec(),
            object,
        })
    }

    fn map_file(path: &std::path::Path, len: usize) -> std::io::Result<memmap2::MmapMut> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.set_len(len as u64)?;
        // SAFETY: the file is shared on purpose with one cooperating benchmark process,
        // which touches it only between our rounds (`--stepped`), never while we do, and
        // no one truncates it while mapped.
        unsafe { memmap2::MmapMut::map_mut(&file) }
    }

    fn bytes(&self) -> usize {
        self.map.len()
    }

    /// Layer `l` of object `k` holds `pattern_fill(len, k, l)`.
    fn fill_patterns(&mut self) {
        let (object, layout) = (self.object, self.layout.clone());
        for (k, obj) in self.map.chunks_mut(object).enumerate() {
            let mut rest = obj;
            for (l, &len) in layout.iter().enumerate() {
                let (layer, tail) = rest.split_at_mut(len);
                pattern_into(layer, k, l);
                rest = tail;
            }
        }
    }

    /// The layers of objects `first..first + n`.
    fn layers(&self, first: usize, n: usize) -> Vec<Vec<&[u8]>> {
        let objects = &self.map[first * self.object..(first + n) * self.object];
        objects
            .chunks(self.object)
            .map(|obj| {
                let mut rest = obj;
                self.layout
                    .iter()
                    .map(|&len| {
                        let (layer, tail) = rest.split_at(len);
                        rest = tail;
                        layer
                    })
                    .collect()
            })
            .collect()
    }

    fn layers_mut(&mut self, first: usize, n: usize) -> Vec<Vec<&mut [u8]>> {
        let (object, layout) = (self.object, &self.layout);
        let objects = &mut self.map[first * object..(first + n) * object];
        objects
            .chunks_mut(object)
            .map(|obj| {
                let mut rest = obj;
                layout
                    .iter()
                    .map(|&len| {
                        let (layer, tail) = std::mem::take(&mut rest).split_at_mut(len);
                        rest = tail;
                        layer
                    })
                    .collect()
            })
            .collect()
    }
}

/// Puts, gets and copies of whole objects in batches, shared by `layers` and `small`.
struct Passes<'a> {
    store: &'a BlockingObjectStore,
    keys: Vec<String>,
    batch: usize,
    src: Arena,
    dst: Arena,
    put_lat: Vec<Duration>,
    get_lat: Vec<Duration>,
    exists_lat: Vec<Duration>,
    inplace_put_lat: Vec<Duration>,
    inplace_get_lat: Vec<Duration>,
}

impl Passes<'_> {
    /// Seconds to copy the source arena into the destination: layer by layer, as one
    /// memcpy of the whole, and split over every core.
    fn memcpy(&mut self) -> Copies {
        let n = self.keys.len();
        let layers = {
            let src = self.src.layers(0, n);
            let mut dst = self.dst.layers_mut(0, n);
            let t = Instant::now();
            for (s, d) in src.iter().zip(dst.iter_mut()) {
                for (sl, dl) in s.iter().zip(d.iter_mut()) {
                    dl.copy_from_slice(sl);
                }
            }
            std::hint::black_box(&dst);
            t.elapsed().as_secs_f64()
        };
        let (src, dst) = (&self.src.map[..], &mut self.dst.map[..]);
        let t = Instant::now();
        dst.copy_from_slice(src);
        std::hint::black_box(&dst);
        let whole = t.elapsed().as_secs_f64();
        // Our own kernels (streaming stores, `rep movsb`) of the whole, one thread: the
        // reference is the fastest copy there is, not glibc's alone.
        let kernels = Kernel::available().iter().map(|&k| {
            let t = Instant::now();
            copy_slice_with(k, src, dst);
            std::hint::black_box(&dst);
            t.elapsed().as_secs_f64()
        });
        let kernels = kernels.fold(f64::INFINITY, f64::min);
        // The machine's limit: each kernel split over every core, the fastest.
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let part = src.len().div_ceil(cores).max(1);
        let all_cores = Kernel::available().iter().map(|&k| {
            let t = Instant::now();
            std::thread::scope(|s| {
                for (d, s_) in dst.chunks_mut(part).zip(src.chunks(part)) {
                    s.spawn(move || copy_slice_with(k, s_, d));
                }
            });
            t.elapsed().as_secs_f64()
        });
        let all_cores = all_cores.fold(f64::INFINITY, f64::min);
        Copies {
            layers,
            whole,
            kernels,
            all_cores,
        }
    }

    fn put(&mut self) -> Result<f64, String> {
        let cfg = ReplicateConfig::default();
        timed(|| {
            for (b, keys) in self.keys.chunks(self.batch).enumerate() {
                let layers = self.src.layers(b * self.batch, keys.len());
                let objects: Vec<&[&[u8]]> = layers.iter().map(Vec::as_slice).collect();
                let t = Instant::now();
                let r = self
                    .store
                    .batch_put_from_layers(keys, &objects, CopyDirection::H2G, &cfg);
                self.put_lat.push(t.elapsed());
                all_ok("put", r)?;
            }
            Ok(())
        })
    }

    fn get(&mut self) -> Result<f64, String> {
        timed(|| {
            for (b, keys) in self.keys.chunks(self.batch).enumerate() {
                let mut layers = self.dst.layers_mut(b * self.batch, keys.len());
                let mut objects: Vec<&mut [&mut [u8]]> =
                    layers.iter_mut().map(Vec::as_mut_slice).collect();
                let t = Instant::now();
                let r = self
                    .store
                    .batch_get_into_layers(keys, &mut objects, CopyDirection::G2H);
                self.get_lat.push(t.elapsed());
                all_ok("get", r)?;
            }
            Ok(())
        })
    }

    /// In-place puts: `batch_alloc` → one `batch_copy` of every key's layers into its
    /// pool address → `batch_write_finish`.
    fn inplace_put(&mut self) -> Result<f64, String> {
        let sizes = vec![self.src.object as u64; self.batch];
        let zeros = vec![0i32; self.batch];
        timed(|| {
            for (b, keys) in self.keys.chunks(self.batch).enumerate() {
                let layers = self.src.layers(b * self.batch, keys.len());
                let t = Instant::now();
                let gvas = self
                    .store
                    .batch_alloc(keys, &sizes[..keys.len()], Medium::Dram, 0)
                    .into_iter()
                    .collect::<memcache_client::Result<Vec<u64>>>()
                    .map_err(|e| format!("batch_alloc: {e} (code {})", e.code()))?;
                let mut pieces: Vec<Piece> = layers.iter().map(|l| Piece::From(l)).collect();
                self.store
                    .batch_copy(&gvas, &mut pieces, CopyWay::ToPool)
                    .map_err(|e| format!("batch_copy into the pool: {e} (code {})", e.code()))?;
                let r = self.store.batch_write_finish(keys, &zeros[..keys.len()]);
                self.inplace_put_lat.push(t.elapsed());
                all_ok("batch_write_finish", r)?;
            }
            Ok(())
        })
    }

    /// In-place gets: `batch_add_lease` → `batch_get_key_info` (each key's first
    /// replica's pool address) → one `batch_copy` out of the pool into every key's
    /// layers → `batch_remove_lease`.
    fn inplace_get(&mut self) -> Result<f64, String> {
        timed(|| {
            for (b, keys) in self.keys.chunks(self.batch).enumerate() {
                let mut layers = self.dst.layers_mut(b * self.batch, keys.len());
                let t = Instant::now();
                all_ok("batch_add_lease", self.store.batch_add_lease(keys, 0))?;
                let gvas = self
                    .store
                    .batch_get_key_info(keys)
                    .into_iter()
                    .map(|i| i.map(|i| i.locations.first().map_or(0, |l| l.gva)))
                    .collect::<memcache_client::Result<Vec<u64>>>()
                    .map_err(|e| format!("batch_get_key_info: {e} (code {})", e.code()))?;
                let mut pieces: Vec<Piece> = layers
                    .iter_mut()
                    .map(|l| Piece::Into(l.as_mut_slice()))
                    .collect();
                self.store
                    .batch_copy(&gvas, &mut pieces, CopyWay::FromPool)
                    .map_err(|e| format!("batch_copy out of the pool: {e} (code {})", e.code()))?;
                self.store
                    .batch_remove_lease(keys)
                    .map_err(|e| format!("batch_remove_lease: {e} (code {})", e.code()))?;
                self.inplace_get_lat.push(t.elapsed());
            }
            Ok(())
        })
    }

    /// One timed round of the in-place path: put, get into scrambled destinations,
    /// verify, remove.
    fn inplace_round(&mut self, put: &mut Vec<f64>, get: &mut Vec<f64>) -> Result<(), String> {
        put.push(self.inplace_put()?);
        self.scramble();
        get.push(self.inplace_get()?);
        self.verify()?;
        self.remove_all()
    }

    fn exists(&mut self) -> Result<f64, String> {
        timed(|| {
            for keys in self.keys.chunks(self.batch) {
                let t = Instant::now();
                let r = self.store.batch_is_exist(keys);
                self.exists_lat.push(t.elapsed());
                if let Some(i) = r.iter().position(|r| !matches!(r, Ok(true))) {
                    return Err(format!("exists of {} answered {:?}", keys[i], r[i]));
                }
            }
            Ok(())
        })
    }

    /// Batched exists with `depth` batches in flight at once, as an engine checking
    /// many prefixes does; returns the seconds for all keys.
    fn exists_pipelined(&self, depth: usize) -> Result<f64, String> {
        let store = self.store.inner();
        timed(|| {
            for group in self.keys.chunks(self.batch * depth) {
                let calls = group
                    .chunks(self.batch)
                    .map(|keys| store.batch_is_exist(keys));
                let answers = self.store.block_on(futures::future::join_all(calls));
                if answers.iter().flatten().any(|r| !matches!(r, Ok(true))) {
                    return Err("pipelined exists missed a key".into());
                }
            }
            Ok(())
        })
    }

    fn remove_all(&self) -> Result<(), String> {
        for keys in self.keys.chunks(self.batch) {
            all_ok("remove", self.store.batch_remove(keys))?;
        }
        Ok(())
    }

    /// Streams the same bytes over one loopback TCP connection into buffers of the same
    /// sizes: the physical limit of the TCP data plane on this machine.
    fn loopback_tcp(&mut self) -> Result<f64, String> {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        let io = |e: std::io::Error| format!("loopback TCP: {e}");
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let n = self.keys.len();
        let src = self.src.layers(0, n);
        let mut dst = self.dst.layers_mut(0, n);
        std::thread::scope(|scope| {
            let receiver = scope.spawn(move || -> std::io::Result<Instant> {
                let (mut conn, _) = listener.accept()?;
                for layer in dst.iter_mut().flatten() {
                    conn.read_exact(layer)?;
                }
                Ok(Instant::now())
            });
            let mut conn = TcpStream::connect(addr).map_err(io)?;
            conn.set_nodelay(true).map_err(io)?;
            let start = Instant::now();
            for layer in src.iter().flatten() {
                conn.write_all(layer).map_err(io)?;
            }
            let end = receiver
                .join()
                .map_err(|_| "loopback receiver panicked".to_string())?
                .map_err(io)?;
            Ok(end.duration_since(start).as_secs_f64())
        })
    }

    /// Overwrites the destinations, so a get that copies nothing cannot pass the check.
    fn scramble(&mut self) {
        self.dst.map.fill(0x5A);
    }

    fn verify(&self) -> Result<(), String> {
        if self.dst.map[..] != self.src.map[..] {
            return Err("content read back differs from what was put".into());
        }
        Ok(())
    }

    fn latency_fields(&mut self) -> Value {
        self.put_lat.sort();
        self.get_lat.sort();
        self.exists_lat.sort();
        let mut both: Vec<Duration> = self.put_lat.iter().chain(&self.get_lat).copied().collect();
        both.sort();
        json!({
            "p50_us": percentile_us(&both, 50),
            "p99_us": percentile_us(&both, 99),
            "put_p50_us": percentile_us(&self.put_lat, 50),
            "put_p99_us": percentile_us(&self.put_lat, 99),
            "get_p50_us": percentile_us(&self.get_lat, 50),
            "get_p99_us": percentile_us(&self.get_lat, 99),
        })
    }
}

/// Batches of exists in flight at once in the pipelined measurement.
const EXISTS_DEPTH: usize = 4;

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Waits for the go-ahead of a `--stepped` round; false at end of input.
fn next_step() -> Result<bool, String> {
    let mut line = String::new();
    let n = std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading standard input: {e}"))?;
    Ok(n > 0)
}

/// A warm-up pass (the first pays for cold caches and the allocator's first carving),
/// then `--rounds` timed rounds of memcpy, put, exists (if asked), get, each verified;
/// returns the report fields every object workload shares.
fn measure(
    mut p: Passes,
    workload: &str,
    args: &BenchArgs,
    with_exists: bool,
    with_inplace: bool,
) -> Result<Value, String> {
    let with_tcp = args.tcp();
    // Chosen now, so that no timed pass runs beside the measurement.
    let kernels = memcache_local::calibrate_copies_and_wait();
    let defaults = ClientConfig::default();
    let threads = |configured: u32| {
        let n = args.copy_threads.unwrap_or(configured);
        memcache_local::CopyPool::new(n as usize).threads()
    };
    let cold_put = p.put()?;
    if with_exists {
        p.exists()?;
    }
    let cold_get = p.get()?;
    p.remove_all()?;
    if with_inplace {
        p.inplace_put()?;
        p.scramble();
        p.inplace_get()?;
        p.verify()?;
        p.remove_all()?;
    }
    p.put_lat.clear();
    p.get_lat.clear();
    p.exists_lat.clear();
    p.inplace_put_lat.clear();
    p.inplace_get_lat.clear();
    let (mut put, mut exists, mut get) = (vec![], vec![], vec![]);
    let (mut copy_layers, mut copy_whole, mut copy_all) = (vec![], vec![], vec![]);
    let mut copy_kernels = vec![];
    let (mut tcp, mut exists_pipelined) = (vec![], vec![]);
    let (mut inplace_put, mut inplace_get) = (vec![], vec![]);
    // CPU seconds of each timed put and get pass, every thread of the process counted.
    let (mut put_cpu, mut get_cpu) = (vec![], vec![]);
    if args.stepped {
        println!("{}", json!({ "ready": true }));
    }
    for round in 0..args.rounds {
        if args.stepped && !next_step()? {
            break;
        }
        let c = p.memcpy();
        copy_layers.push(c.layers);
        copy_whole.push(c.whole);
        copy_kernels.push(c.kernels);
        copy_all.push(c.all_cores);
        if with_tcp {
            tcp.push(p.loopback_tcp()?);
        }
        // The in-place path goes first in odd rounds, so drift in the machine's speed
        // within a round favours neither path.
        let inplace_first = with_inplace && round % 2 == 1;
        if inplace_first {
            p.inplace_round(&mut inplace_put, &mut inplace_get)?;
        }
        let cpu = cpu_seconds();
        put.push(p.put()?);
        put_cpu.push(cpu_seconds() - cpu);
        if with_exists {
            exists.push(p.exists()?);
            exists_pipelined.push(p.exists_pipelined(EXISTS_DEPTH)?);
        }
        p.scramble();
        let cpu = cpu_seconds();
        get.push(p.get()?);
        get_cpu.push(cpu_seconds() - cpu);
        p.verify()?;
        p.remove_all()?;
        if with_inplace && !inplace_first {
            p.inplace_round(&mut inplace_put, &mut inplace_get)?;
        }
        if args.stepped {
            let bytes = p.src.bytes();
            let mut line = json!({
                "round": round,
                "put_gbps": gbps(bytes, put[round]),
                "get_gbps": gbps(bytes, get[round]),
                "memcpy_gbps": gbps(bytes, copy_layers[round].min(copy_whole[round]).min(copy_kernels[round])),
            });
            if with_inplace {
                line = merge(
                    line,
                    json!({
                        "inplace_put_gbps": gbps(bytes, inplace_put[round]),
                        "inplace_get_gbps": gbps(bytes, inplace_get[round]),
                    }),
                );
            }
            println!("{line}");
        }
    }
    if put.is_empty() {
        return Err("no timed round ran".into());
    }
    let rounds = put.len();
    let n = p.keys.len();
    let bytes = p.src.bytes();
    let seconds: f64 = put
        .iter()
        .chain(&get)
        .chain(&exists)
        .chain(&inplace_put)
        .chain(&inplace_get)
        .sum();
    let memcpy_layers_gbps = gbps(bytes, median(&mut copy_layers));
    let memcpy_whole_gbps = gbps(bytes, median(&mut copy_whole));
    let kernels_whole_gbps = gbps(bytes, median(&mut copy_kernels));
    let memcpy_gbps = memcpy_layers_gbps
        .max(memcpy_whole_gbps)
        .max(kernels_whole_gbps);
    let all_cores_gbps = gbps(bytes, median(&mut copy_all));
    let (put_rounds, get_rounds) = (put.clone(), get.clone());
    let (put_s, get_s) = (median(&mut put), median(&mut get));
    let (put_gbps, get_gbps) = (gbps(bytes, put_s), gbps(bytes, get_s));
    let mut report = json!({
        "workload": workload,
        "ops": (2 + with_exists as usize + 2 * with_inplace as usize) * n * rounds,
        "bytes": bytes,
        "seconds": seconds,
        "keys": n,
        "batch": p.batch,
        "object_bytes": bytes / n,
        "rounds": rounds,
        "put_gbps": put_gbps,
        "get_gbps": get_gbps,
        "memcpy_gbps": memcpy_gbps,
        "memcpy_whole_gbps": memcpy_whole_gbps,
        "memcpy_layers_gbps": memcpy_layers_gbps,
        "kernels_whole_gbps": kernels_whole_gbps,
        "memcpy_all_cores_gbps": all_cores_gbps,
        "put_ratio": put_gbps / memcpy_gbps,
        "get_ratio": get_gbps / memcpy_gbps,
        "put_ratio_all_cores": put_gbps / all_cores_gbps,
        "get_ratio_all_cores": get_gbps / all_cores_gbps,
        "put_keys_per_s": n as f64 / put_s,
        "get_keys_per_s": n as f64 / get_s,
        "cold_put_gbps": gbps(bytes, cold_put),
        "cold_get_gbps": gbps(bytes, cold_get),
        "put_cpu_ns_per_byte": median(&mut put_cpu) * 1e9 / bytes as f64,
        "get_cpu_ns_per_byte": median(&mut get_cpu) * 1e9 / bytes as f64,
        "verified": true,
        "write_threads": threads(defaults.write_threads),
        "read_threads": threads(defaults.read_threads),
        "copy_kernel_medium": kernels.medium.name(),
        "copy_kernel_large": kernels.large.name(),
    });
    if with_tcp {
        let tcp_gbps = gbps(bytes, median(&mut tcp));
        report = merge(
            report,
            json!({
                "tcp_gbps": tcp_gbps,
                "put_ratio_tcp": put_gbps / tcp_gbps,
                "get_ratio_tcp": get_gbps / tcp_gbps,
            }),
        );
    }
    if with_inplace {
        // Paired: the two paths of a round run back to back, and the path that goes
        // second is slowed by what the first left (freed pool pages, dirty caches), so
        // each ratio is of two consecutive rounds, one in each order; the median of
        // those cancels both the drift between rounds and the order.
        let paired = |layers: &[f64], inplace: &[f64]| {
            let pair = if layers.len() > 1 { 2 } else { 1 };
            let mut r: Vec<f64> = layers
                .chunks_exact(pair)
                .zip(inplace.chunks_exact(pair))
                .map(|(l, i)| l.iter().sum::<f64>() / i.iter().sum::<f64>())
                .collect();
            median(&mut r)
        };
        let put_vs = paired(&put_rounds, &inplace_put);
        let get_vs = paired(&get_rounds, &inplace_get);
        let ip_put_gbps = gbps(bytes, median(&mut inplace_put));
        let ip_get_gbps = gbps(bytes, median(&mut inplace_get));
        p.inplace_put_lat.sort();
        p.inplace_get_lat.sort();
        report = merge(
            report,
            json!({
                "inplace_put_gbps": ip_put_gbps,
                "inplace_get_gbps": ip_get_gbps,
                "inplace_put_ratio": ip_put_gbps / memcpy_gbps,
                "inplace_get_ratio": ip_get_gbps / memcpy_gbps,
                "inplace_put_vs_layers": put_vs,
                "inplace_get_vs_layers": get_vs,
                "inplace_put_p50_us": percentile_us(&p.inplace_put_lat, 50),
                "inplace_put_p99_us": percentile_us(&p.inplace_put_lat, 99),
                "inplace_get_p50_us": percentile_us(&p.inplace_get_lat, 50),
                "inplace_get_p99_us": percentile_us(&p.inplace_get_lat, 99),
            }),
        );
    }
    if with_exists {
        p.exists_lat.sort();
        report = merge(
            report,
            json!({
                "exists_keys_per_s": n as f64 / median(&mut exists_pipelined),
                "exists_in_flight": EXISTS_DEPTH,
                "exists_sequential_keys_per_s": n as f64 / median(&mut exists),
                "exists_p50_us": percentile_us(&p.exists_lat, 50),
            }),
        );
    }
    Ok(merge(report, p.latency_fields()))
}

fn bench_layers(args: &BenchArgs) -> Result<Value, String> {
    let layout = kv_block_layout();
    let n = args.keys.unwrap_or(64).max(1);
    let store = open_store(args)?;
    let (src, dst) = arenas(&layout, n, args)?;
    let p = Passes {
        store: &store,
        keys: (0..n).map(|i| format!("bench/layers/{i}")).collect(),
        batch: 8,
        src,
        dst,
        put_lat: Vec::new(),
        get_lat: Vec::new(),
        exists_lat: Vec::new(),
        inplace_put_lat: Vec::new(),
        inplace_get_lat: Vec::new(),
    };
    let report = measure(p, "layers", args, false, true)?;
    Ok(merge(report, json!({ "layers_per_key": layout.len() })))
}

/// `layers --tls-bench`: the same passes against an in-process pool over TCP, without
/// then with mutual TLS, in one run.
fn bench_layers_tls(args: &BenchArgs) -> Result<Value, String> {
    use memcache_tls::pki::{Leaf, Pki};
    let dir = std::env::temp_dir().join(format!("mmc-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let pki = Pki::new("bench CA");
    // One process, so one identity (see memcache_tls::set_client) for the meta
    // service, the local service and the client alike.
    let issued = pki.issue(&Leaf {
        name: "bench",
        serial: 1,
        roles: &["meta", "local", "client"],
        expired: false,
    });
    let identity = pki.write(&dir, &issued, "bench", None);
    let (meta_tls, local_tls, client_tls) = (&identity, &identity, &identity);
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    // Plaintext and TLS pools alternate, so that the machine's drift weighs on both
    // alike; each figure is the median over the pairs.
    const PAIRS: usize = 3;
    let mut reports: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    for tls in (0..PAIRS).flat_map(|_| [false, true]) {
        let pick = |c: &memcache_tls::TlsConfig| tls.then(|| c.clone());
        let client = match pick(client_tls) {
            Some(c) => Some(c.client().map_err(|e| e.to_string())?),
            None => None,
        };
        memcache_tls::set_client(client);
        let meta = rt
            .block_on(memcache_meta_service::MetaService::start(
                memcache_meta_service::MetaServiceConfig {
                    discovery_url: "tcp://127.0.0.1:0".into(),
                    http_url: String::new(),
                    tls: pick(meta_tls),
                    ..Default::default()
                },
            ))
            .map_err(|e| format!("meta service: {e}"))?;
        let addr = meta.local_addr();
        let socket = dir.join(format!("local-{tls}.sock"));
        let local_config = memcache_local::LocalServiceConfig {
            dram_size: args.dram_size,
            tls: pick(local_tls),
            ..Default::default()
        };
        let local = rt
            .block_on(memcache_local::RunningLocalService::start(
                &local_config,
                &[addr],
                Duration::from_secs(5),
                socket,
            ))
            .map_err(|e| format!("local service: {e}"))?;
        let mut sub = args.clone();
        sub.discovery = Some(format!("tcp://{addr}"));
        sub.transport = Some(TransportArg::Tcp);
        let report = bench_layers(&sub);
        let _ = rt.block_on(local.stop());
        drop(local);
        rt.block_on(meta.stop());
        reports[tls as usize].push(report?);
    }
    memcache_tls::set_client(None);
    let _ = std::fs::remove_dir_all(&dir);
    let medians = |runs: &[Value]| {
        let mut m = runs[0].clone();
        for k in [
            "put_gbps",
            "get_gbps",
            "put_cpu_ns_per_byte",
            "get_cpu_ns_per_byte",
        ] {
            let mut v: Vec<f64> = runs.iter().map(|r| r[k].as_f64().unwrap_or(0.0)).collect();
            m[k] = json!(median(&mut v));
        }
        m
    };
    let (plain, tls) = (&medians(&reports[0]), &medians(&reports[1]));
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    // Client and services share this machine's cores: TLS needs at least the
    // plaintext's CPU per byte plus sealing and opening each byte once, so its
    // throughput is at most every core's time over that.
    let crypto = memcache_tls::record_crypto_ns_per_byte(Duration::from_millis(300));
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let ceiling = |op: &str| {
        let (cpu, gbps) = (
            f(plain, &format!("{op}_cpu_ns_per_byte")),
            f(plain, &format!("{op}_gbps")),
        );
        (cores / ((cpu + crypto) * gbps)).min(1.0)
    };
    Ok(json!({
        "workload": "layers-tls",
        "keys": plain["keys"],
        "rounds": plain["rounds"],
        "pairs": PAIRS,
        "plain_put_gbps": f(plain, "put_gbps"),
        "plain_get_gbps": f(plain, "get_gbps"),
        "tls_put_gbps": f(tls, "put_gbps"),
        "tls_get_gbps": f(tls, "get_gbps"),
        "tls_put_ratio": f(tls, "put_gbps") / f(plain, "put_gbps"),
        "tls_get_ratio": f(tls, "get_gbps") / f(plain, "get_gbps"),
        "plain_put_cpu_ns_per_byte": f(plain, "put_cpu_ns_per_byte"),
        "plain_get_cpu_ns_per_byte": f(plain, "get_cpu_ns_per_byte"),
        "tls_put_cpu_ns_per_byte": f(tls, "put_cpu_ns_per_byte"),
        "tls_get_cpu_ns_per_byte": f(tls, "get_cpu_ns_per_byte"),
        "crypto_ns_per_byte": crypto,
        "cpu_bound_put_ceiling": ceiling("put"),
        "cpu_bound_get_ceiling": ceiling("get"),
        "verified": true,
    }))
}

fn bench_small(args: &BenchArgs) -> Result<Value, String> {
    const SIZE: usize = 4096;
    let n = args.keys.unwrap_or(16384).max(1);
    let store = open_store(args)?;
    let (src, dst) = arenas(&[SIZE], n, args)?;
    let p = Passes {
        store: &store,
        keys: (0..n).map(|i| format!("bench/small/{i}")).collect(),
        batch: 64,
        src,
        dst,
        put_lat: Vec::new(),
        get_lat: Vec::new(),
        exists_lat: Vec::new(),
        inplace_put_lat: Vec::new(),
        inplace_get_lat: Vec::new(),
    };
    measure(p, "small", args, true, false)
}

/// Alloc + free pairs on one segment's allocator, 80 % full, with the sizes a KV cache
/// sees: mostly whole KV blocks, some 1 MiB and 4 KiB objects, a few odd sizes.
fn bench_alloc(args: &BenchArgs) -> Value {
    const CAPACITY: u64 = 64 << 30;
    const PAIRS: usize = 2_000_000;
    let mut rng = StdRng::seed_from_u64(42);
    let size = |rng: &mut StdRng| -> u64 {
        match rng.random_range(0..100) {
            0..70 => 8784 << 10,
            70..85 => 1 << 20,
            85..95 => 4 << 10,
            _ => rng.random_range(4096..(16u64 << 20)),
        }
    };
    let mut run = |mixed: bool| -> (f64, usize) {
        let mut a = PageAllocator::new(CAPACITY);
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut used = 0u64;
        while used < CAPACITY / 10 * 8 {
            let s = if mixed { size(&mut rng) } else { 8784 << 10 };
            let off = a.alloc(s).expect("filling to 80 % fits");
            live.push((off, s));
            used += s;
        }
        // Decide victims and sizes up front so the timed loop is the allocator alone.
        let plan: Vec<(usize, u64)> = (0..PAIRS)
            .map(|_| {
                let s = if mixed { size(&mut rng) } else { 8784 << 10 };
                (rng.random_range(0..live.len()), s)
            })
            .collect();
        let mut failures = 0;
        let t = Instant::now();
        for &(victim, s) in &plan {
            let (off, len) = live[victim];
            a.free(off, len);
            match a.alloc(s) {
                Some(o) => live[victim] = (o, s),
                None => {
                    // Fragmented or over-full: keep the old block and count it.
                    live[victim] = (a.alloc(len).expect("its own space is free"), len);
                    failures += 1;
                }
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / PAIRS as f64;
        std::hint::black_box(&live);
        (ns, failures)
    };
    let rounds = args.rounds;
    let (mut fixed, mut mixed, mut fails) = (vec![], vec![], 0);
    for _ in 0..rounds {
        fixed.push(run(false).0);
        let (ns, f) = run(true);
        mixed.push(ns);
        fails += f;
    }
    let (fixed_ns, mixed_ns) = (median(&mut fixed), median(&mut mixed));
    json!({
        "workload": "alloc",
        "ops": 2 * PAIRS * rounds,
        "bytes": 0,
        "seconds": (fixed.iter().sum::<f64>() + mixed.iter().sum::<f64>()) * PAIRS as f64 / 1e9,
        "rounds": rounds,
        "segment_bytes": CAPACITY,
        "fill_percent": 80,
        "ns_per_op": mixed_ns,
        "ns_per_op_mixed": mixed_ns,
        "ns_per_op_fixed": fixed_ns,
        "alloc_failures_mixed": fails,
    })
}

fn print_human(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    match r["workload"].as_str() {
        Some("layers-tls") => {
            println!(
                "layers over TCP, plaintext: put {:.2} GB/s, get {:.2} GB/s; mutual TLS 1.3: put {:.2} GB/s, get {:.2} GB/s; TLS/plain ratio put {:.2}, get {:.2} (goal >= 0.8)",
                f("plain_put_gbps"),
                f("plain_get_gbps"),
                f("tls_put_gbps"),
                f("tls_get_gbps"),
                f("tls_put_ratio"),
                f("tls_get_ratio")
            );
            println!(
                "CPU per byte, every thread: plaintext put {:.2} ns, get {:.2} ns; TLS put {:.2} ns, get {:.2} ns; sealing + opening {:.2} ns; CPU-bound ceiling of the ratio put {:.2}, get {:.2}",
                f("plain_put_cpu_ns_per_byte"),
                f("plain_get_cpu_ns_per_byte"),
                f("tls_put_cpu_ns_per_byte"),
                f("tls_get_cpu_ns_per_byte"),
                f("crypto_ns_per_byte"),
                f("cpu_bound_put_ceiling"),
                f("cpu_bound_get_ceiling")
            );
        }
        Some("device") => println!(
            "device ({}): L2G put {:.2} GB/s ({:.2} of the runtime's device-to-host copy, {:.2} GB/s), G2L get {:.2} GB/s ({:.2} of its host-to-device copy, {:.2} GB/s); HBM of another process over TCP: put {:.2} GB/s, get {:.2} GB/s ({:.2} / {:.2} of a device-to-device copy, {:.2} GB/s); the same from this host ({}): put {:.2} GB/s, get {:.2} GB/s ({:.2} / {:.2}); content verified",
            r["runtime"].as_str().unwrap_or("?"),
            f("l2g_put_gbps"),
            f("l2g_ratio"),
            f("runtime_d2h_gbps"),
            f("g2l_get_gbps"),
            f("g2l_ratio"),
            f("runtime_h2d_gbps"),
            f("hbm_put_gbps"),
            f("hbm_get_gbps"),
            f("hbm_put_ratio"),
            f("hbm_get_ratio"),
            f("runtime_d2d_gbps"),
            match r["hbm_near_imported"].as_bool() {
                Some(true) => "imported by its handle",
                _ => "not imported: over TCP",
            },
            f("hbm_near_put_gbps"),
            f("hbm_near_get_gbps"),
            f("hbm_near_put_ratio"),
            f("hbm_near_get_ratio")
        ),
        Some("alloc") => println!(
            "alloc: {:.0} ns per alloc+free pair under mixed KV churn ({:.0} ns with equal blocks), {} failures",
            f("ns_per_op"),
            f("ns_per_op_fixed"),
            r["alloc_failures_mixed"]
        ),
        Some("memcached") => println!(
            "memcached: ours {:.0} ops/s (p50 {} µs, p99 {} µs, {:.1} µs CPU/op, {:.1} of it user), memcached {:.0} ops/s (p50 {} µs, p99 {} µs, {:.1} µs CPU/op, {:.1} user), ratio {:.2} ({} connections, {} % get)",
            f("ours_ops_per_s"),
            r["ours_p50_us"],
            r["ours_p99_us"],
            f("ours_cpu_us_per_op"),
            f("ours_user_us_per_op"),
            f("memcached_ops_per_s"),
            r["memcached_p50_us"],
            r["memcached_p99_us"],
            f("memcached_cpu_us_per_op"),
            f("memcached_user_us_per_op"),
            f("ratio"),
            r["connections"],
            r["get_percent"]
        ),
        Some("meta-memory") => {
            println!(
                "meta-memory: {:.0} bytes per object ({:.0} beyond its {}-byte key; goal {:.0}, ratio {:.2}) with {} objects, policy lru; RSS grew {:.0} bytes per object",
                f("bytes_per_object"),
                f("bytes_per_object_minus_key"),
                r["key_bytes"],
                f("goal_bytes_plus_key"),
                f("goal_ratio"),
                r["objects"],
                f("rss_bytes_per_object")
            );
            for p in r["policies"].as_array().into_iter().flatten().skip(1) {
                println!(
                    "meta-memory: policy {}: {:.0} bytes per object ({:.0} beyond the key)",
                    p["policy"].as_str().unwrap_or("?"),
                    p["bytes_per_object"].as_f64().unwrap_or(f64::NAN),
                    p["bytes_per_object_minus_key"].as_f64().unwrap_or(f64::NAN)
                );
            }
        }
        Some("raft") => println!(
            "raft: {:.0} committed puts/s with 3 meta nodes, {:.0} with 1 (ratio {:.2}, {} writers); failover {:.0} ms; log entries per put {:.2} (3 nodes), {:.2} (1)",
            f("puts_per_s_3node"),
            f("puts_per_s_1node"),
            f("ratio"),
            r["writers"],
            f("failover_ms"),
            f("log_entries_per_put_3node"),
            f("log_entries_per_put_1node")
        ),
        Some(w) => {
            println!(
                "{w}: put {:.2} GB/s ({:.2} of memcpy), get {:.2} GB/s ({:.2} of memcpy), memcpy {:.2} GB/s (the fastest one-thread copy: glibc's of the whole, {:.2}, and per layer, {:.2}; our kernels' of the whole, {:.2}); batch p50 {:.0} µs, p99 {:.0} µs; content verified",
                f("put_gbps"),
                f("put_ratio"),
                f("get_gbps"),
                f("get_ratio"),
                f("memcpy_gbps"),
                f("memcpy_whole_gbps"),
                f("memcpy_layers_gbps"),
                f("kernels_whole_gbps"),
                f("p50_us"),
                f("p99_us")
            );
            println!(
                "{w}: the same copy on all cores {:.2} GB/s; put {:.2}, get {:.2} of it; a batch copied by {} threads (put), {} (get); kernels {} below 256 KiB, {} above (measured here)",
                f("memcpy_all_cores_gbps"),
                f("put_ratio_all_cores"),
                f("get_ratio_all_cores"),
                r["write_threads"],
                r["read_threads"],
                r["copy_kernel_medium"].as_str().unwrap_or("?"),
                r["copy_kernel_large"].as_str().unwrap_or("?")
            );
            if let Some(x) = r["inplace_put_gbps"].as_f64() {
                println!(
                    "{w}: in place put {x:.2} GB/s ({:.2} of batch_put_from_layers), get {:.2} GB/s ({:.2} of batch_get_into_layers)",
                    f("inplace_put_vs_layers"),
                    f("inplace_get_gbps"),
                    f("inplace_get_vs_layers")
                );
            }
            if let Some(x) = r["tcp_gbps"].as_f64() {
                println!(
                    "{w}: loopback TCP {x:.2} GB/s; put {:.2}, get {:.2} of it",
                    f("put_ratio_tcp"),
                    f("get_ratio_tcp")
                );
            }
            if let Some(x) = r["exists_keys_per_s"].as_f64() {
                println!(
                    "{w}: batched exists {x:.0} keys/s ({} batches in flight), {:.0} keys/s one batch at a time",
                    r["exists_in_flight"],
                    f("exists_sequential_keys_per_s")
                );
            }
        }
        None => println!("{r}"),
    }
}
