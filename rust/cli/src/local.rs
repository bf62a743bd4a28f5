//! `mmc local`: a local service as a process, contributing DRAM to a remote pool.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use memcache_client::LocalServiceConfig;
use memcache_local::RunningLocalService;
use memcache_proto::{parse_discovery, parse_http_addr};

/// How long a stopping service may spend writing its DRAM to its SSD tier.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
struct LocalProcessConfig {
    #[serde(alias = "discoveryURL")]
    discovery_url: String,
    /// Deadline of each call to the meta service, ms.
    #[serde(alias = "timeOut")]
    timeout_ms: u64,
    #[serde(flatten)]
    local: LocalServiceConfig,
}

impl Default for LocalProcessConfig {
    fn default() -> Self {
        LocalProcessConfig {
            discovery_url: "tcp://127.0.0.1:5000".into(),
            timeout_ms: 5000,
            local: LocalServiceConfig::default(),
        }
    }
}

#[derive(Args)]
pub struct LocalArgs {
    /// TOML file with the local service's settings (the spec's names are accepted).
    #[arg(long, env = "MMC_LOCAL_CONFIG")]
    config: Option<PathBuf>,
    /// The meta service, `tcp://HOST:PORT[,…]`.
    #[arg(long, env = "MMC_DISCOVERY_URL")]
    discovery: Option<String>,
    /// DRAM to contribute, e.g. `4GiB`.
    #[arg(long, env = "MMC_LOCAL_DRAM_SIZE", value_parser = crate::parse_size)]
    dram_size: Option<u64>,
    /// Device memory (HBM) of the configured device (`deviceId`, 0 by default) to
    /// contribute, e.g. `16GiB`
    /// (needs a device runtime: a build with `--features cuda` or `ascend`).
    #[arg(long, env = "MMC_LOCAL_HBM_SIZE", value_parser = crate::parse_size)]
    hbm_size: Option<u64>,
    /// Local service id to ask for (the meta service picks one otherwise).
    #[arg(long, env = "MMC_SERVICE_ID")]
    service_id: Option<u32>,
    /// Unix socket for same-host clients.
    #[arg(long, env = "MMC_SHM_SOCKET")]
    shm_socket: Option<PathBuf>,
    /// Heartbeat period, ms.
    #[arg(long, env = "MMC_HEARTBEAT_INTERVAL_MS")]
    heartbeat_interval_ms: Option<u64>,
    /// Directory of an SSD tier behind the DRAM (none by default).
    #[arg(long, env = "MMC_LOCAL_SSD_DIR")]
    ssd_dir: Option<PathBuf>,
    /// Bytes of the SSD tier, e.g. `100GiB`.
    #[arg(long, env = "MMC_LOCAL_SSD_SIZE", value_parser = crate::parse_size)]
    ssd_size: Option<u64>,
    /// `/health` and `/metrics`: `HOST:PORT` or a port on loopback; empty turns them off.
    #[arg(long, env = "MMC_LOCAL_HTTP", default_value = "127.0.0.1:0")]
    http: String,
    /// Any other key, `key=value` (repeatable); `MMC_LOCAL_<KEY>` variables work too.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

pub fn run(args: LocalArgs) -> Result<(), String> {
    let mut config: LocalProcessConfig =
        memcache_client::layered::load(args.config.as_deref(), "MMC_LOCAL_", &args.sets)
            .map_err(|e| e.to_string())?;
    if let Some(d) = args.discovery {
        config.discovery_url = d;
    }
    if let Some(s) = args.dram_size {
        config.local.dram_size = s;
    }
    if let Some(s) = args.hbm_size {
        config.local.hbm_size = s;
    }
    if args.service_id.is_some() {
        config.local.service_id = args.service_id;
    }
    if let Some(h) = args.heartbeat_interval_ms {
        config.local.heartbeat_interval_ms = h;
    }
    if args.ssd_dir.is_some() {
        config.local.ssd_dir = args.ssd_dir;
    }
    if let Some(s) = args.ssd_size {
        config.local.ssd_size = s;
    }
    let socket = args
        .shm_socket
        .or(config.local.shm_socket.clone())
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("mmc-local-{}.sock", std::process::id()))
        });
    if config.local.http_addr.is_none() {
        config.local.http_addr = parse_http_addr(&args.http).map_err(|e| e.to_string())?;
    }
    config.local.tls = crate::tls::choose(config.local.tls.take())?;
    let timeout = Duration::from_millis(config.timeout_ms.max(1));
    let addrs = parse_discovery(&config.discovery_url).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let service = RunningLocalService::start(&config.local, &addrs, timeout, socket.clone())
            .await
            .map_err(|e| e.to_string())?;
        crate::say(format_args!(
            "local service {} serving {} bytes on {}",
            service.id(),
            config.local.dram_size,
            socket.display()
        ));
        match service.http_addr() {
            Some(a) => crate::say(format_args!("local http on http://{a}")),
            None => crate::say(format_args!("local http off")),
        }
        crate::wait_for_shutdown().await;
        // What only DRAM holds goes to the SSD tier first, so a restart finds it.
        if !service.flush_to_ssd(FLUSH_TIMEOUT).await {
            eprintln!("the SSD tier was not fully written in time");
        }
        let lost = service.stop().await.map_err(|e| e.to_string())?;
        tracing::info!(lost, "local service left the pool");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example configurations in `config/` parse into the real types.
    #[test]
    fn example_configs_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let local: LocalProcessConfig =
            memcache_client::layered::load(Some(&dir.join("local.toml")), "X_UNSET_", &[]).unwrap();
        assert_eq!(local.local.dram_size, 4 << 30);
        assert_eq!(local.discovery_url, "tcp://127.0.0.1:5000");
        let meta: memcache_meta_service::MetaServiceConfig =
            memcache_client::layered::load(Some(&dir.join("meta.toml")), "X_UNSET_", &[]).unwrap();
        assert_eq!(meta.meta.evict_threshold_high, 90);
        assert_eq!(meta.heartbeat_timeout_ms, 3000);
        assert_eq!(meta.raft_election_timeout_ms, 150);
        assert_eq!((meta.id, meta.peers.as_str(), meta.data_dir), (1, "", None));
        let client = memcache_client::ClientConfig::load(Some(&dir.join("client.toml"))).unwrap();
        assert_eq!(
            client.discovery_url.as_deref(),
            Some("tcp://127.0.0.1:5000")
        );
        assert_eq!(client.local.dram_size, 1 << 30);
    }
}
