//! `mmc`: run MemCache Hybrid from the command line.

mod bench;
mod bench_device;
mod bench_memcached;
mod bench_meta_memory;
mod bench_raft;
mod bench_soak;
mod certs;
mod children;
mod demo;
mod local;
mod memcached;
mod meta;
mod ops;
mod procmem;
mod tls;

use bytesize::ByteSize;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mmc",
    version,
    about = "MemCache Hybrid: a shared memory pool for KV cache"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    tls: tls::TlsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Start an in-process pool (meta + one local service) and run a short KV-cache job.
    Demo(demo::DemoArgs),
    /// Measure a workload against the pool, beside memcpy of the same bytes.
    Bench(bench::BenchArgs),
    /// Run the meta service until SIGINT or SIGTERM.
    Meta(meta::MetaArgs),
    /// Serve the memcached protocol on the embedded default or a running pool.
    Memcached(memcached::MemcachedArgs),
    /// Run a local service that contributes DRAM, until SIGINT or SIGTERM.
    Local(local::LocalArgs),
    /// Store a file (or standard input) under a key.
    Put(ops::PutArgs),
    /// Write an object's bytes to standard output (or a file).
    Get(ops::GetArgs),
    /// Remove objects.
    Rm(ops::RmArgs),
    /// List keys, optionally those starting with a prefix.
    Ls(ops::LsArgs),
    /// Show where an object lives.
    Info(ops::InfoArgs),
    /// Segments, keys, live services and the busiest tracepoints of a pool.
    Status(ops::StatusArgs),
    /// List, add or remove the meta nodes of a meta group.
    Members(ops::MembersArgs),
    /// Write a private CA and a certificate for each role, to try mutual TLS with.
    Certs(certs::CertsArgs),
}

/// Prints a status line for whoever started the process. A reader that went away
/// (a closed pipe) must not take the service down with it.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Parses sizes such as `1GiB`, `512MiB` or `1073741824`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("bad size {s:?}: {e}"))
}

/// Warnings and errors by default. openraft reports an unreachable peer again on every
/// replication attempt and every confirmed read, so its core and replication logs
/// are off unless `RUST_LOG` asks for them; the group's state is in `mmc members`,
/// `/role`, `/leader` and the `memcache_meta_raft_*` metrics.
const DEFAULT_LOG: &str = "warn,openraft::core=off,openraft::replication=off";

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = tls::init(&cli.tls) {
        eprintln!("mmc: TLS: {e}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Meta(args) => meta::run(args),
        Command::Local(args) => local::run(args),
        Command::Memcached(args) => memcached::run(args),
        Command::Put(a) => ops::put(a),
        Command::Get(a) => ops::get(a),
        Command::Rm(a) => ops::rm(a),
        Command::Ls(a) => ops::ls(a),
        Command::Info(a) => ops::info(a),
        Command::Status(a) => ops::status(a),
        Command::Members(a) => ops::members(a),
        Command::Certs(a) => certs::run(a),
    };
    if let Err(e) = result {
        eprintln!("mmc: {e}");
        std::process::exit(1);
    }
}
