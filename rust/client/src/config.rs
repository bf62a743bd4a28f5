use serde::{Deserialize, Serialize};

use memcache_local::LocalServiceConfig;

use crate::embedded::MetaConfig;

/// Everything a client needs. With no cluster configured the client joins the
/// process's embedded pool, creating it with `meta` on first use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Meta service(s) to join, `tcp://HOST:PORT[,…]`; none means the embedded pool.
    #[serde(alias = "discoveryURL")]
    pub discovery_url: Option<String>,
    /// Force a data plane: `tcp` moves every blob over TCP, even on this host (so one
    /// machine can test it); unset picks shared memory on the same host, TCP elsewhere.
    #[serde(alias = "dataOpType")]
    pub transport: Option<TransportKind>,
    /// Deadline of each call to the meta service, in milliseconds.
    #[serde(alias = "timeOut")]
    pub timeout_ms: u64,
    /// Threads that copy one batch of puts into memory this process maps, the caller's
    /// own among them (1.3.0's `write_thread_pool_size`); capped at the cores the
    /// process may use, 0 and 1 copy in the caller's thread.
    #[serde(alias = "write_thread_pool_size")]
    pub write_threads: u32,
    /// The same for the copies of one batch of gets (`read_thread_pool_size`).
    #[serde(alias = "read_thread_pool_size")]
    pub read_threads: u32,
    /// Settings of the embedded meta service.
    pub meta: MetaConfig,
    /// The local service `init(device_id, init_bm = true)` starts in this process.
    pub local: LocalServiceConfig,
}

/// 1.3.0's defaults: a batch's copies use up to this many cores.
pub const DEFAULT_WRITE_THREADS: u32 = 4;
pub const DEFAULT_READ_THREADS: u32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Shm,
    Tcp,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            discovery_url: None,
            transport: None,
            timeout_ms: 5000,
            write_threads: DEFAULT_WRITE_THREADS,
            read_threads: DEFAULT_READ_THREADS,
            meta: MetaConfig::default(),
            local: LocalServiceConfig::default(),
        }
    }
}

impl ClientConfig {
    /// The default configuration with `bytes` of DRAM contributed on `init_bm`.
    pub fn with_dram(bytes: u64) -> Self {
        let mut c = ClientConfig::default();
        c.local.dram_size = bytes;
        c
    }

    /// Defaults, then the TOML file at `path`, then `MMC_CLIENT_*` environment
    /// variables (see [`crate::layered::load`]).
    pub fn load(path: Option<&std::path::Path>) -> memcache_core::Result<Self> {
        crate::layered::load(path, "MMC_CLIENT_", &[])
    }

    /// What the C, C++ and Python clients use: the TOML file named by
    /// `MMC_CLIENT_CONFIG`; if that is unset, 1.3.0's `mmc-local.conf` named by
    /// `MMC_LOCAL_CONFIG_PATH` (see [`Self::from_seed`]); then, over either,
    /// `MMC_CLIENT_*` variables (see [`Self::load`]).
    pub fn from_env() -> memcache_core::Result<Self> {
        if let Some(path) = std::env::var_os("MMC_CLIENT_CONFIG") {
            return Self::load(Some(std::path::Path::new(&path)));
        }
        match std::env::var_os("MMC_LOCAL_CONFIG_PATH") {
            Some(path) => crate::layered::overlay(
                Self::from_seed_file(std::path::Path::new(&path))?,
                "MMC_CLIENT_",
                &[],
            ),
            None => Self::load(None),
        }
    }

    /// 1.3.0's `read_thread_pool_size` and `write_thread_pool_size` as its C and C++
    /// structs carry them: 0 keeps what is configured.
    pub fn set_thread_pools(&mut self, read: u32, write: u32) {
        if read > 0 {
            self.read_threads = read;
        }
        if write > 0 {
            self.write_threads = write;
        }
    }

    /// The configuration of a client of the meta service(s) at `url`.
    pub fn remote(url: &str, dram: u64) -> Self {
        let mut c = ClientConfig::with_dram(dram);
        c.discovery_url = Some(url.to_string());
        c
    }
}
