//! `mmc meta`: the meta service as a process.

use std::path::PathBuf;

use clap::Args;

use memcache_meta_service::{MetaService, MetaServiceConfig};

#[derive(Args)]
pub struct MetaArgs {
    /// TOML file with the meta service's settings (the spec's names are accepted).
    #[arg(long, env = "MMC_META_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve on, `tcp://HOST:PORT` (port 0 picks a free one).
    #[arg(long, env = "MMC_DISCOVERY_URL")]
    discovery: Option<String>,
    /// A local service silent this long (ms) is declared dead.
    #[arg(long, env = "MMC_HEARTBEAT_TIMEOUT_MS")]
    heartbeat_timeout_ms: Option<u64>,
    /// Admin HTTP server: `HOST:PORT` or a port on loopback (empty: off).
    #[arg(long, env = "MMC_META_HTTP")]
    http: Option<String>,
    /// Eviction high watermark, percent.
    #[arg(long, env = "MMC_EVICT_THRESHOLD_HIGH")]
    evict_threshold_high: Option<u16>,
    /// Eviction low watermark, percent.
    #[arg(long, env = "MMC_EVICT_THRESHOLD_LOW")]
    evict_threshold_low: Option<u16>,
    /// Time (ms) a writer has between alloc and commit.
    #[arg(long, env = "MMC_PUT_LEASE_MS")]
    put_lease_ms: Option<u64>,
    /// This node's id in the meta group.
    #[arg(long, env = "MMC_META_ID")]
    id: Option<u64>,
    /// The meta group: `ID=HOST:PORT,…` (the addresses clients use). This node
    /// serves on its own entry's address; the others are its peers. Without it the
    /// node is a group of one.
    #[arg(long, env = "MMC_META_PEERS")]
    peers: Option<String>,
    /// Keep the Raft log, vote and snapshots in this directory (default: in memory).
    #[arg(long, env = "MMC_META_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Runtime threads. Two or more keep heartbeats and elections going while a
    /// request's work holds one thread; 1 runs everything on one thread, with no
    /// cross-thread wake-ups. Default: 1 on a host of two cores or fewer, 2 otherwise.
    #[arg(long, env = "MMC_META_THREADS")]
    threads: Option<usize>,
    /// Any other key, `key=value` (repeatable); `MMC_META_<KEY>` variables work too.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// `--config` (TOML) if given; else 1.3.0's `mmc-meta.conf` named by
/// `MMC_META_CONFIG_PATH`, if set; else the defaults. Then `MMC_META_*` variables and
/// `--set` over either.
fn load_config(args: &MetaArgs) -> memcache_client::Result<MetaServiceConfig> {
    let seed = std::env::var_os("MMC_META_CONFIG_PATH");
    match (&args.config, seed) {
        (None, Some(path)) => memcache_client::layered::overlay(
            MetaServiceConfig::from_seed_file(std::path::Path::new(&path))?,
            "MMC_META_",
            &args.sets,
        ),
        (config, _) => memcache_client::layered::load(config.as_deref(), "MMC_META_", &args.sets),
    }
}

pub fn run(args: MetaArgs) -> Result<(), String> {
    let mut config = load_config(&args).map_err(|e| e.to_string())?;
    if let Some(d) = args.discovery {
        config.discovery_url = d;
    }
    if let Some(id) = args.id {
        config.id = id;
    }
    if let Some(p) = args.peers {
        config.peers = p;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = Some(d);
    }
    if let Some(h) = args.http {
        config.http_url = h;
    }
    if let Some(t) = args.heartbeat_timeout_ms {
        config.heartbeat_timeout_ms = t;
    }
    if let Some(h) = args.evict_threshold_high {
        config.meta.evict_threshold_high = h;
    }
    if let Some(l) = args.evict_threshold_low {
        config.meta.evict_threshold_low = l;
    }
    if let Some(p) = args.put_lease_ms {
        config.meta.put_lease = std::time::Duration::from_millis(p);
    }
    config.tls = crate::tls::choose(config.tls.take())?;
    let tls_on = config.tls.as_ref().is_some_and(|t| t.enable);
    let threads = args
        .threads
        .unwrap_or_else(memcache_meta_service::default_threads);
    let rt = memcache_meta_service::runtime(threads).map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let service = MetaService::start(config)
            .await
            .map_err(|e| e.to_string())?;
        // The first line of stdout says where to connect, the second where the admin
        // HTTP server is (tests read them).
        crate::say(format_args!(
            "meta service (node {}) listening on tcp://{}",
            service.id(),
            service.local_addr()
        ));
        match service.http_addr() {
            Some(a) if tls_on => crate::say(format_args!("meta http on https://{a}")),
            Some(a) => crate::say(format_args!("meta http on http://{a}")),
            None => crate::say(format_args!("meta http off")),
        }
        tokio::select! {
            _ = crate::wait_for_shutdown() => {}
            why = service.fatal() => {
                service.stop().await;
                return Err(format!("the meta group member stopped: {why}"));
            }
        }
        service.stop().await;
        Ok(())
    })
}
