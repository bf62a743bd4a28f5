//! `mmc memcached`: the memcached-compatible gateway as a process, on the embedded
//! default (this process is the whole pool) or as a client of a running pool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use memcache_client::{ClientConfig, ObjectStore};
use memcache_gateway::items::Items;
use memcache_gateway::protocol::Limits;
use memcache_gateway::Gateway;

#[derive(Args)]
pub struct MemcachedArgs {
    /// Where to serve the memcached protocol (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:11211")]
    bind: SocketAddr,
    /// Join this pool (`tcp://HOST:PORT[,…]`) instead of running the embedded one.
    #[arg(long, env = "MMC_DISCOVERY_URL")]
    discovery: Option<String>,
    /// DRAM this process contributes (the embedded pool, or its local service).
    #[arg(long, default_value = "1GiB", value_parser = crate::parse_size)]
    dram_size: u64,
    /// Values of at least this size are stored LZ4-compressed when that shrinks them
    /// (0: never).
    #[arg(long, default_value = "8KiB", value_parser = crate::parse_size)]
    compress_above: u64,
    /// Largest value a client may store (memcached's -I).
    #[arg(long, default_value = "1MiB", value_parser = crate::parse_size)]
    max_item_size: u64,
    /// Keep an SSD tier (L2) in this directory: items are written there behind the
    /// DRAM tier, stay there when DRAM evicts them, and survive a restart.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Prefix of the items' keys in the pool, so that they and the pool's KV objects
    /// never meet: flush_all removes only these (at most 5 bytes, for 250-byte keys).
    #[arg(long, default_value = "mc:")]
    namespace: String,
    /// Bytes of the SSD tier.
    #[arg(long, default_value = "16GiB", value_parser = crate::parse_size)]
    ssd_size: u64,
    /// Connections served at once (memcached's -c); one more gets memcached's
    /// "ERROR Too many open connections" and is closed.
    #[arg(short = 'c', long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Threads connections are served on, each connection on one (memcached's -t);
    /// 0: one per core.
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

/// How long a stopping gateway may spend writing its DRAM tier to SSD.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(args: MemcachedArgs) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut config = match &args.discovery {
            Some(url) => ClientConfig::remote(url, args.dram_size),
            None => ClientConfig::with_dram(args.dram_size),
        };
        config.local.ssd_dir = args.data_dir.clone();
        config.local.ssd_size = args.ssd_size;
        let store = Arc::new(ObjectStore::new(config));
        store.init(0, true).await.map_err(|e| e.to_string())?;
        let compress_above = args.compress_above as usize;
        let items = Arc::new(
            match &args.data_dir {
                // CAS uniques are reserved in the data directory ahead of use, so that a
                // restart on it never hands out one a client may still hold.
                Some(dir) => {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    Items::with_cas_file(store.clone(), compress_above, dir.join("memcached.cas"))
                        .map_err(|e| format!("reserving CAS uniques in {}: {e}", dir.display()))?
                }
                None => Items::new(store.clone(), compress_above),
            }
            .in_namespace(args.namespace.as_bytes())?,
        );
        let limits = Limits {
            max_item_size: args.max_item_size as usize,
            max_connections: args.max_connections as usize,
            threads: args.threads,
            ..Limits::default()
        };
        let gateway = Gateway::start(args.bind, items, limits)
            .await
            .map_err(|e| format!("serving on {}: {e}", args.bind))?;
        crate::say(format_args!(
            "memcached gateway listening on {}",
            gateway.local_addr()
        ));
        crate::wait_for_shutdown().await;
        drop(gateway);
        if args.data_dir.is_some() {
            match store.flush_to_ssd(FLUSH_TIMEOUT).await {
                Ok(true) => crate::say(format_args!("SSD tier written")),
                Ok(false) => eprintln!("the SSD tier was not fully written in time"),
                Err(e) => eprintln!("writing the SSD tier: {e}"),
            }
        }
        let _ = store.tear_down().await;
        Ok(())
    })
}
