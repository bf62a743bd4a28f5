//! Everyday commands against a running pool — put, get, rm, ls, info — and `status`.
//! Each exits 0 on success, and otherwise prints the error's name and code.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;

use memcache_client::{BlockingObjectStore, ClientConfig, CopyDirection, Error, ReplicateConfig};
use memcache_proto::{ask_role, parse_discovery, MetaLink};

#[derive(Args)]
pub struct Pool {
    /// The pool's meta service, `tcp://HOST:PORT[,…]`.
    #[arg(long, env = "MMC_DISCOVERY_URL")]
    discovery: String,
}

#[derive(Args)]
pub struct PutArgs {
    #[command(flatten)]
    pool: Pool,
    key: String,
    /// File to store, or `-` (the default) for standard input.
    file: Option<PathBuf>,
    /// Replicas on distinct local services.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
}

#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    pool: Pool,
    key: String,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct RmArgs {
    #[command(flatten)]
    pool: Pool,
    #[arg(required = true)]
    keys: Vec<String>,
}

#[derive(Args)]
pub struct LsArgs {
    #[command(flatten)]
    pool: Pool,
    prefix: Option<String>,
    /// Most keys to list.
    #[arg(long, default_value_t = 100_000)]
    limit: u32,
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pool: Pool,
    key: String,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pool: Pool,
    /// Tracepoints to show, the busiest first.
    #[arg(long, default_value_t = 8)]
    top: usize,
}

/// `Name (code): message`, the form every command fails with.
fn failed(e: Error) -> String {
    format!("{} ({}): {e}", e.name(), e.code())
}

fn client(pool: &Pool) -> Result<BlockingObjectStore, String> {
    let store =
        BlockingObjectStore::new(ClientConfig::remote(&pool.discovery, 0)).map_err(failed)?;
    store.init(0, false).map_err(failed)?;
    Ok(store)
}

pub fn put(a: PutArgs) -> Result<(), String> {
    let data = match a.file.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?
        }
        _ => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| e.to_string())?;
            v
        }
    };
    let store = client(&a.pool)?;
    let cfg = ReplicateConfig::with_replicas(a.replicas);
    store
        .put_from(&a.key, &data, CopyDirection::H2G, &cfg)
        .map_err(failed)?;
    store.tear_down().map_err(failed)
}

pub fn get(a: GetArgs) -> Result<(), String> {
    let store = client(&a.pool)?;
    let data = store.get(&a.key).map_err(failed)?;
    match a.out {
        Some(p) => std::fs::write(&p, &data).map_err(|e| format!("{}: {e}", p.display()))?,
        None => std::io::stdout()
            .write_all(&data)
            .map_err(|e| e.to_string())?,
    }
    store.tear_down().map_err(failed)
}

pub fn rm(a: RmArgs) -> Result<(), String> {
    let store = client(&a.pool)?;
    let mut first = None;
    for (key, r) in a.keys.iter().zip(store.batch_remove(&a.keys)) {
        if let Err(e) = r {
            eprintln!("mmc: {key}: {}", failed(e.clone()));
            first.get_or_insert(e);
        }
    }
    store.tear_down().map_err(failed)?;
    match first {
        None => Ok(()),
        Some(e) => Err(failed(e)),
    }
}

pub fn ls(a: LsArgs) -> Result<(), String> {
    let store = client(&a.pool)?;
    let keys = store
        .list_keys(a.prefix.unwrap_or_default(), a.limit)
        .map_err(failed)?;
    let mut out = std::io::stdout().lock();
    for k in keys {
        let _ = writeln!(out, "{k}");
    }
    store.tear_down().map_err(failed)
}

pub fn info(a: InfoArgs) -> Result<(), String> {
    let store = client(&a.pool)?;
    let info = store.get_key_info(&a.key).map_err(failed)?;
    println!("key:      {}", a.key);
    println!("size:     {} bytes", info.size);
    println!("replicas: {}", info.locations.len());
    for l in &info.locations {
        println!(
            "  local service {} (device {}), {}",
            l.service,
            l.device_id,
            l.medium.name()
        );
    }
    store.tear_down().map_err(failed)
}

fn bar(used: u64, capacity: u64, width: usize) -> String {
    let filled = if capacity == 0 {
        0
    } else {
        ((used as u128 * width as u128 / capacity as u128) as usize).min(width)
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// One line per meta node of the discovery URL: its id, role and term.
async fn print_group(addrs: &[std::net::SocketAddr], timeout: Duration) {
    let mut line = String::from("meta group:");
    for addr in addrs {
        match ask_role(*addr, timeout).await {
            Ok(r) => line.push_str(&format!(" {}={} (term {})", r.id, r.role, r.term)),
            Err(_) => line.push_str(&format!(" {addr}=unreachable")),
        }
    }
    println!("{line}");
}

pub fn status(a: StatusArgs) -> Result<(), String> {
    let addrs = parse_discovery(&a.pool.discovery).map_err(failed)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(5);
    let (stats, segments, endpoints, mut points) = rt
        .block_on(async {
            print_group(&addrs, timeout).await;
            let link = MetaLink::connect(addrs.clone(), timeout).await?;
            Ok::<_, Error>((
                link.call(|rpc, ctx| async move { rpc.stats(ctx).await })
                    .await?,
                link.call(|rpc, ctx| async move { rpc.segments(ctx).await })
                    .await?,
                link.call(|rpc, ctx| async move { rpc.endpoints(ctx).await })
                    .await?,
                link.call(|rpc, ctx| async move { rpc.tracepoints(ctx).await })
                    .await?,
            ))
        })
        .map_err(failed)?;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "pool {}: {} keys, {} live local services, {:.2} / {:.2} GiB used",
        a.pool.discovery,
        stats.objects,
        endpoints.len(),
        gib(stats.used_bytes),
        gib(stats.capacity_bytes)
    );
    println!();
    println!(
        "{:<6} {:<20} {:<6} {:>12} {:>12}  USAGE",
        "RANK", "SEGMENT", "MEDIUM", "USED", "CAPACITY"
    );
    for s in &segments {
        println!(
            "{:<6} {:<20} {:<6} {:>12} {:>12}  {} {:>3}%",
            s.service,
            s.id,
            s.medium.name(),
            s.used,
            s.capacity,
            bar(s.used, s.capacity, 30),
            s.used * 100 / s.capacity.max(1)
        );
    }
    println!();
    points.retain(|p| p.begin > 0);
    points.sort_by_key(|p| std::cmp::Reverse(p.total_ns));
    points.truncate(a.top);
    print!(
        "{}",
        memcache_meta_service::tracepoint_table(&points, SystemTime::now())
    );
    Ok(())
}

#[derive(Args)]
pub struct MembersArgs {
    #[command(flatten)]
    pool: Pool,
    #[command(subcommand)]
    action: Option<MembersAction>,
}

#[derive(clap::Subcommand)]
enum MembersAction {
    /// Each meta node of the discovery URL: id, role, term, leader and log position.
    List,
    /// Adds a meta node (started with `mmc meta --id ID --peers …`) to the group.
    Add { id: u64, addr: std::net::SocketAddr },
    /// Removes a meta node from the group.
    Remove { id: u64 },
}

pub fn members(a: MembersArgs) -> Result<(), String> {
    let addrs = parse_discovery(&a.pool.discovery).map_err(failed)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(10);
    rt.block_on(async {
        let link = || MetaLink::new(addrs.clone(), timeout);
        match a.action.unwrap_or(MembersAction::List) {
            MembersAction::List => {
                for addr in &addrs {
                    match ask_role(*addr, timeout).await {
                        Ok(r) => println!(
                            "{} {addr} {} term {} leader {} log {} applied {} snapshot {} members {:?}",
                            r.id,
                            r.role,
                            r.term,
                            r.leader.map_or("-".into(), |l| l.to_string()),
                            r.last_log_index.unwrap_or(0),
                            r.last_applied_index.unwrap_or(0),
                            r.snapshot_index.map_or("-".into(), |s| s.to_string()),
                            r.members
                        ),
                        Err(e) => println!("? {addr} unreachable ({e})"),
                    }
                }
                Ok(())
            }
            MembersAction::Add { id, addr } => link()
                .call(|rpc, ctx| async move { rpc.add_member(ctx, id, addr).await })
                .await
                .and_then(|r| r)
                .map_err(failed),
            MembersAction::Remove { id } => link()
                .call(|rpc, ctx| async move { rpc.remove_member(ctx, id).await })
                .await
                .and_then(|r| r)
                .map_err(failed),
        }
    })
}
