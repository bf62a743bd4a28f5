use serde::{Deserialize, Serialize};

use memcache_local::LocalServiceConfig;
use memcache_meta::MetaConfig;

/// Everything a client needs. With no cluster configured the client joins the
/// process's embedded pool, creating it with `meta` on first use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Settings of the embedded meta service.
    pub meta: MetaConfig,
    /// The local service `init(device_id, init_bm = true)` starts in this process.
    pub local: LocalServiceConfig,
}

impl ClientConfig {
    /// The default configuration with `bytes` of DRAM contributed on `init_bm`.
    pub fn with_dram(bytes: u64) -> Self {
        let mut c = ClientConfig::default();
        c.local.dram_size = bytes;
        c
    }
}
