//! 1.3.0's `LocalConfig` and `MetaConfig`: the keys of `mmc-local.conf` and
//! `mmc-meta.conf` as Python fields, with the same names, docs and defaults. Each field
//! names its `ock.mmc.*` key; `setup` turns a config into its keys and maps them with the
//! same code as the files (`ClientConfig::from_seed`, `MetaServiceConfig::from_seed`).

use std::sync::Mutex;

use pyo3::prelude::*;

use memcache_client::ClientConfig;
use memcache_core::seed_config::{SeedConfig, SeedRole};
use memcache_core::{Error, Result};
use memcache_meta_service::MetaServiceConfig;

/// A field's value as 1.3.0's files write it.
trait SeedValue {
    fn seed(&self) -> String;
}

impl SeedValue for bool {
    fn seed(&self) -> String {
        self.to_string()
    }
}

impl SeedValue for i64 {
    fn seed(&self) -> String {
        self.to_string()
    }
}

impl SeedValue for String {
    fn seed(&self) -> String {
        self.clone()
    }
}

/// A Python class of 1.3.0's configuration: its fields, their defaults, and the key
/// each one sets.
macro_rules! seed_class {
    (
        $(#[$cattr:meta])* $name:ident, $role:expr,
        { $( $(#[$attr:meta])* $field:ident : $ty:ty = $default:expr => $key:literal, )* }
    ) => {
        $(#[$cattr])*
        #[pyclass]
        #[derive(Clone)]
        pub struct $name {
            $( $(#[$attr])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default.into(), )* }
            }
        }

        impl $name {
            /// Every field: its name, its key and its value as a file writes it.
            fn fields(&self) -> Vec<(&'static str, &'static str, String)> {
                vec![ $( (stringify!($field), $key, self.$field.seed()), )* ]
            }

            /// The keys this config sets, as a file would.
            pub fn seed(&self) -> Result<SeedConfig> {
                let mut c = SeedConfig::new($role);
                for (_, key, value) in self.fields() {
                    c.set(key, &value)?;
                }
                Ok(c)
            }
        }
    };
}

seed_class! {
    /// Local configuration for memcache client.
    LocalConfig, SeedRole::Local, {
        /// Meta service start-up url.
        #[pyo3(get, set)]
        meta_service_url: String = "tcp://127.0.0.1:5000" => "ock.mmc.meta_service_url",
        /// Config store url.
        #[pyo3(get, set)]
        config_store_url: String = "tcp://127.0.0.1:6000" => "ock.mmc.local_service.config_store_url",
        /// Backend identity for kv_event, e.g. pod IP.
        #[pyo3(get, set)]
        backend_id: String = "" => "ock.mmc.local_service.backend_id",
        /// Log level: debug, info, warn, error.
        #[pyo3(get, set)]
        log_level: String = "info" => "ock.mmc.log_level",
        /// The maximum supported rank count.
        #[pyo3(get, set)]
        world_size: i64 = 256 => "ock.mmc.local_service.world_size",
        #[doc = "Data transfer protocol: host_rdma, host_urma, host_tcp, host_shm, device_rdma, device_urma,\ndevice_uboe, device_sdma."]
        #[pyo3(get, set)]
        protocol: String = "host_rdma" => "ock.mmc.local_service.protocol",
        #[doc = "Tag of this rank in MemFabric Big Memory, used with tag_op_info to control the\ndata op type (protocol) between tag pairs, e.g. tag1."]
        #[pyo3(get, set)]
        tag: String = "" => "ock.mmc.local_service.tag",
        #[doc = "Data op type between tags, separated by commas, e.g. \"tag1:HOST_TCP:tag2,tag2:DEVICE_RDMA:tag3\".\nOp type whitelist: DEVICE_SDMA, DEVICE_RDMA, DEVICE_URMA, DEVICE_UBOE, HOST_RDMA,\nHOST_TCP, HOST_URMA, HOST_SHM, AIV_SDMA, DEVICE_MTE."]
        #[pyo3(get, set)]
        tag_op_info: String = "" => "ock.mmc.local_service.tag_op_info",
        /// HCOM URL for RDMA network.
        #[pyo3(get, set)]
        hcom_url: String = "tcp://127.0.0.1:7000" => "ock.mmc.local_service.hcom_url",
        /// DRAM space usage, supports formats like 1GB, 2MB, etc.
        #[pyo3(get, set)]
        dram_size: String = "1GB" => "ock.mmc.local_service.dram.size",
        /// HBM space usage.
        #[pyo3(get, set)]
        hbm_size: String = "0" => "ock.mmc.local_service.hbm.size",
        /// The MAX size of dram_size in all local processes.
        #[pyo3(get, set)]
        max_dram_size: String = "1TB" => "ock.mmc.local_service.max.dram.size",
        /// The MAX size of hbm_size in all local processes.
        #[pyo3(get, set)]
        max_hbm_size: String = "0" => "ock.mmc.local_service.max.hbm.size",
        /// The total retry duration when client requests meta service.
        #[pyo3(get, set)]
        client_retry_milliseconds: i64 = 0 => "ock.mmc.client.retry_milliseconds",
        /// Client request timeout in seconds.
        #[pyo3(get, set)]
        client_timeout_seconds: i64 = 60 => "ock.mmc.client.timeout.seconds",
        /// Read thread pool size.
        #[pyo3(get, set)]
        read_thread_pool_size: i64 = 32 => "ock.mmc.client.read_thread_pool.size",
        /// Write thread pool size.
        #[pyo3(get, set)]
        write_thread_pool_size: i64 = 4 => "ock.mmc.client.write_thread_pool.size",
        /// Enable read/write aggregate.
        #[pyo3(get, set)]
        aggregate_io: bool = true => "ock.mmc.client.aggregate.io",
        /// Aggregate number.
        #[pyo3(get, set)]
        aggregate_num: i64 = 122 => "ock.mmc.client.aggregate.num",
        /// Enable TLS for metaservice.
        #[pyo3(get, set)]
        tls_enable: bool = false => "ock.mmc.tls.enable",
        /// TLS CA certificate path.
        #[pyo3(get, set)]
        tls_ca_path: String = "" => "ock.mmc.tls.ca.path",
        /// TLS CA CRL path.
        #[pyo3(get, set)]
        tls_ca_crl_path: String = "" => "ock.mmc.tls.ca.crl.path",
        /// TLS certificate path.
        #[pyo3(get, set)]
        tls_cert_path: String = "" => "ock.mmc.tls.cert.path",
        /// TLS key path.
        #[pyo3(get, set)]
        tls_key_path: String = "" => "ock.mmc.tls.key.path",
        /// TLS key passphrase path.
        #[pyo3(get, set)]
        tls_key_pass_path: String = "" => "ock.mmc.tls.key.pass.path",
        /// TLS package path.
        #[pyo3(get, set)]
        tls_package_path: String = "" => "ock.mmc.tls.package.path",
        /// TLS decrypter library path.
        #[pyo3(get, set)]
        tls_decrypter_path: String = "" => "ock.mmc.tls.decrypter.path",
        /// Enable TLS for config_store.
        #[pyo3(get, set)]
        config_store_tls_enable: bool = false => "ock.mmc.config_store.tls.enable",
        /// Config store TLS CA certificate path.
        #[pyo3(get, set)]
        config_store_tls_ca_path: String = "" => "ock.mmc.config_store.tls.ca.path",
        /// Config store TLS CA CRL path.
        #[pyo3(get, set)]
        config_store_tls_ca_crl_path: String = "" => "ock.mmc.config_store.tls.ca.crl.path",
        /// Config store TLS certificate path.
        #[pyo3(get, set)]
        config_store_tls_cert_path: String = "" => "ock.mmc.config_store.tls.cert.path",
        /// Config store TLS key path.
        #[pyo3(get, set)]
        config_store_tls_key_path: String = "" => "ock.mmc.config_store.tls.key.path",
        /// Config store TLS key passphrase path.
        #[pyo3(get, set)]
        config_store_tls_key_pass_path: String = "" => "ock.mmc.config_store.tls.key.pass.path",
        /// Config store TLS package path.
        #[pyo3(get, set)]
        config_store_tls_package_path: String = "" => "ock.mmc.config_store.tls.package.path",
        /// Config store TLS decrypter library path.
        #[pyo3(get, set)]
        config_store_tls_decrypter_path: String = "" => "ock.mmc.config_store.tls.decrypter.path",
        /// Enable TLS for HCOM.
        #[pyo3(get, set)]
        hcom_tls_enable: bool = false => "ock.mmc.local_service.hcom.tls.enable",
        /// HCOM TLS CA certificate path.
        #[pyo3(get, set)]
        hcom_tls_ca_path: String = "" => "ock.mmc.local_service.hcom.tls.ca.path",
        /// HCOM TLS CA CRL path.
        #[pyo3(get, set)]
        hcom_tls_ca_crl_path: String = "" => "ock.mmc.local_service.hcom.tls.ca.crl.path",
        /// HCOM TLS certificate path.
        #[pyo3(get, set)]
        hcom_tls_cert_path: String = "" => "ock.mmc.local_service.hcom.tls.cert.path",
        /// HCOM TLS key path.
        #[pyo3(get, set)]
        hcom_tls_key_path: String = "" => "ock.mmc.local_service.hcom.tls.key.path",
        /// HCOM TLS key passphrase path.
        #[pyo3(get, set)]
        hcom_tls_key_pass_path: String = "" => "ock.mmc.local_service.hcom.tls.key.pass.path",
        /// HCOM TLS decrypter library path.
        #[pyo3(get, set)]
        hcom_tls_decrypter_path: String = "" => "ock.mmc.local_service.hcom.tls.decrypter.path",
    }
}

#[pymethods]
impl LocalConfig {
    /// Default constructor. Initializes with default values.
    #[new]
    fn new() -> Self {
        LocalConfig::default()
    }

    /// Returns a string representation of all member variables.
    fn str(&self) -> String {
        let mut out = String::from("LocalConfig {\n");
        for (name, _, value) in self.fields() {
            out += &format!("  {name}: {value}\n");
        }
        // Two settings 1.3.0 shows but does not offer as fields.
        out += "  dynamic_config_enable: true\n  dynamic_config_interval: 5\n}";
        out
    }
}

impl LocalConfig {
    /// The client configuration this describes, or -3000 with the reason.
    pub fn client_config(&self) -> Result<ClientConfig> {
        ClientConfig::from_seed(&self.seed()?)
    }
}

seed_class! {
    /// Meta service configuration.
    MetaConfig, SeedRole::Meta, {
        /// Meta service start-up url.
        #[pyo3(get, set)]
        meta_service_url: String = "tcp://127.0.0.1:5000" => "ock.mmc.meta_service_url",
        /// Config store url.
        #[pyo3(get, set)]
        config_store_url: String = "tcp://127.0.0.1:6000" => "ock.mmc.meta_service.config_store_url",
        /// The metrics HTTP service url.
        #[pyo3(get, set)]
        metrics_url: String = "http://127.0.0.1:8000" => "ock.mmc.meta_service.metrics_url",
        /// Enable or disable high availability deployment.
        #[pyo3(get, set)]
        ha_enable: bool = false => "ock.mmc.meta.ha.enable",
        /// Log level: debug, info, warn, error.
        #[pyo3(get, set)]
        log_level: String = "info" => "ock.mmc.log_level",
        /// Log directory path.
        #[pyo3(get, set)]
        log_path: String = "/var/log/memcache_hybrid" => "ock.mmc.log_path",
        /// Log rotation file size in MB.
        #[pyo3(get, set)]
        log_rotation_file_size: i64 = 20 => "ock.mmc.log_rotation_file_size",
        /// Log rotation file count.
        #[pyo3(get, set)]
        log_rotation_file_count: i64 = 50 => "ock.mmc.log_rotation_file_count",
        /// Log output target: screen (stdout only), file (rotating file only), both (stdout + file).
        #[pyo3(get, set)]
        log_output_target: String = "file" => "ock.mmc.log_output_target",
        /// Eviction high threshold in percentage.
        #[pyo3(get, set)]
        evict_threshold_high: i64 = 90 => "ock.mmc.evict_threshold_high",
        /// Eviction low threshold in percentage.
        #[pyo3(get, set)]
        evict_threshold_low: i64 = 80 => "ock.mmc.evict_threshold_low",
        /// Defrag eviction threshold in percentage.
        #[pyo3(get, set)]
        defrag_evict_threshold: i64 = 70 => "ock.mmc.defrag_evict_threshold",
        /// Periodic eviction check interval in seconds. Set to 0 to disable.
        #[pyo3(get, set)]
        evict_check_interval_seconds: i64 = 5 => "ock.mmc.evict_check_interval_seconds",
        /// Meta LRU type: 0=lru, 1=sharded_lru (default).
        #[pyo3(get, set)]
        lru_type: i64 = 1 => "ock.mmc.meta_service.lru_type",
        #[doc = "Meta LRU shard count. Must be a power of two in the range [1, 1024].\nTakes effect only when lru_type is sharded_lru."]
        #[pyo3(get, set)]
        lru_shard_count: i64 = 16 => "ock.mmc.meta_service.lru_shard_count",
        /// Enable KV cache event publisher (default false).
        #[pyo3(get, set)]
        kv_events_enable: bool = false => "ock.mmc.kv_events.enable",
        /// Transport plugin type for KV events (KV_EVENT_TRANSPORT enum, see mmc_types.h).
        #[pyo3(get, set)]
        kv_events_transport_type: i64 = 0 => "ock.mmc.kv_events.transport",
        /// ZMQ PUB bind endpoint for KV events, e.g. tcp://0.0.0.0:5557.
        #[pyo3(get, set)]
        kv_events_endpoint: String = "" => "ock.mmc.kv_events.endpoint",
        #[doc = "Emit seq/block hash as low-64-bit int (true, default; aligns vLLM\nVLLM_KV_EVENTS_USE_INT_BLOCK_HASHES) or full hex string (false)."]
        #[pyo3(get, set)]
        kv_events_hash_as_int: bool = true => "ock.mmc.kv_events.hash_as_int",
        /// block_size for published KV events (0 = omit).
        #[pyo3(get, set)]
        kv_events_block_size: i64 = 0 => "ock.mmc.kv_events.block_size",
        /// Model name tag for published KV events.
        #[pyo3(get, set)]
        kv_events_model_name: String = "" => "ock.mmc.kv_events.model_name",
        /// Bounded queue capacity for async KV event publishing.
        #[pyo3(get, set)]
        kv_events_queue_capacity: i64 = 65536 => "ock.mmc.kv_events.queue_capacity",
        /// tenant_id for published KV events.
        #[pyo3(get, set)]
        kv_events_tenant_id: String = "default" => "ock.mmc.kv_events.tenant_id",
        /// Enable ZMQ CURVE encryption for the zmq transport (default false).
        #[pyo3(get, set)]
        zmq_enable_curve: bool = false => "ock.mmc.zmq.enable_curve",
        /// ZMQ CURVE server public key (Z85, 40 chars). Subscribers use it to decrypt.
        #[pyo3(get, set)]
        zmq_public_key: String = "" => "ock.mmc.zmq.public_key",
        /// ZMQ CURVE server secret key (Z85, 40 chars). Write-only: the
        /// getter returns "***" to avoid leaking the private key material.
        // (The property's docstring comes from this setter, pyo3 taking the first one it
        // meets; the getter is in the #[pymethods] below.)
        #[pyo3(set)]
        zmq_private_key: String = "" => "ock.mmc.zmq.private_key",
        /// Default read lease TTL in milliseconds.
        #[pyo3(get, set)]
        lease_ttl_ms: i64 = 10000 => "ock.mmc.meta.lease_ttl_ms",
        /// Number of evicted objects between yields. 0 means yield disabled.
        #[pyo3(get, set)]
        evict_yield_interval: i64 = 0 => "ock.mmc.evict_yield_interval",
        /// Sleep duration in microseconds during each yield. Default 100us.
        #[pyo3(get, set)]
        evict_yield_duration_us: i64 = 100 => "ock.mmc.evict_yield_duration_us",
        /// Enable TLS for metaservice.
        #[pyo3(get, set)]
        tls_enable: bool = false => "ock.mmc.tls.enable",
        /// TLS CA certificate path.
        #[pyo3(get, set)]
        tls_ca_path: String = "" => "ock.mmc.tls.ca.path",
        /// TLS CA CRL path.
        #[pyo3(get, set)]
        tls_ca_crl_path: String = "" => "ock.mmc.tls.ca.crl.path",
        /// TLS certificate path.
        #[pyo3(get, set)]
        tls_cert_path: String = "" => "ock.mmc.tls.cert.path",
        /// TLS key path.
        #[pyo3(get, set)]
        tls_key_path: String = "" => "ock.mmc.tls.key.path",
        /// TLS key passphrase path.
        #[pyo3(get, set)]
        tls_key_pass_path: String = "" => "ock.mmc.tls.key.pass.path",
        /// TLS package path.
        #[pyo3(get, set)]
        tls_package_path: String = "" => "ock.mmc.tls.package.path",
        /// TLS decrypter library path.
        #[pyo3(get, set)]
        tls_decrypter_path: String = "" => "ock.mmc.tls.decrypter.path",
        /// Enable TLS for config store.
        #[pyo3(get, set)]
        config_store_tls_enable: bool = false => "ock.mmc.config_store.tls.enable",
        /// Config store TLS CA certificate path.
        #[pyo3(get, set)]
        config_store_tls_ca_path: String = "" => "ock.mmc.config_store.tls.ca.path",
        /// Config store TLS CA CRL path.
        #[pyo3(get, set)]
        config_store_tls_ca_crl_path: String = "" => "ock.mmc.config_store.tls.ca.crl.path",
        /// Config store TLS certificate path.
        #[pyo3(get, set)]
        config_store_tls_cert_path: String = "" => "ock.mmc.config_store.tls.cert.path",
        /// Config store TLS key path.
        #[pyo3(get, set)]
        config_store_tls_key_path: String = "" => "ock.mmc.config_store.tls.key.path",
        /// Config store TLS key passphrase path.
        #[pyo3(get, set)]
        config_store_tls_key_pass_path: String = "" => "ock.mmc.config_store.tls.key.pass.path",
        /// Config store TLS package path.
        #[pyo3(get, set)]
        config_store_tls_package_path: String = "" => "ock.mmc.config_store.tls.package.path",
        /// Config store TLS decrypter library path.
        #[pyo3(get, set)]
        config_store_tls_decrypter_path: String = "" => "ock.mmc.config_store.tls.decrypter.path",
    }
}

#[pymethods]
impl MetaConfig {
    /// Default constructor. Initializes with default values.
    #[new]
    fn new() -> Self {
        MetaConfig::default()
    }

    #[doc = "ZMQ CURVE server secret key (Z85, 40 chars). Write-only: the\ngetter returns \"***\" to avoid leaking the private key material."]
    #[getter]
    fn get_zmq_private_key(&self) -> &'static str {
        "***"
    }

    /// Returns a string representation of all member variables.
    fn str(&self) -> String {
        // 1.3.0's order and spellings: levels and targets as numbers, the rotation size
        // in bytes, no KV event details beyond the endpoint, no private key.
        let level = match self.log_level.as_str() {
            "debug" => "0".to_string(),
            "info" => "1".to_string(),
            "warn" => "2".to_string(),
            "error" => "3".to_string(),
            other => other.to_string(),
        };
        let target = match self.log_output_target.as_str() {
            "screen" => "0".to_string(),
            "file" => "1".to_string(),
            "both" => "2".to_string(),
            other => other.to_string(),
        };
        let lru = match self.lru_type {
            0 => "lru".to_string(),
            1 => "sharded_lru".to_string(),
            n => n.to_string(),
        };
        let lines: Vec<(&str, String)> = vec![
            ("meta_service_url", self.meta_service_url.clone()),
            ("config_store_url", self.config_store_url.clone()),
            ("metrics_url", self.metrics_url.clone()),
            ("ha_enable", self.ha_enable.seed()),
            ("log_level", level),
            ("log_path", self.log_path.clone()),
            (
                "log_rotation_file_size",
                self.log_rotation_file_size
                    .saturating_mul(1 << 20)
                    .to_string(),
            ),
            (
                "log_rotation_file_count",
                self.log_rotation_file_count.seed(),
            ),
            ("log_output_target", target),
            ("evict_threshold_high", self.evict_threshold_high.seed()),
            ("evict_threshold_low", self.evict_threshold_low.seed()),
            ("defrag_evict_threshold", self.defrag_evict_threshold.seed()),
            (
                "evict_check_interval_seconds",
                self.evict_check_interval_seconds.seed(),
            ),
            ("lru_type", lru),
            ("lru_shard_count", self.lru_shard_count.seed()),
            ("kv_events_enable", self.kv_events_enable.seed()),
            (
                "kv_events_transport_type",
                self.kv_events_transport_type.seed(),
            ),
            ("kv_events_endpoint", self.kv_events_endpoint.clone()),
            ("kv_events_hash_as_int", self.kv_events_hash_as_int.seed()),
            ("zmq_curve_enable", self.zmq_enable_curve.seed()),
            ("zmq_public_key", self.zmq_public_key.clone()),
            ("lease_ttl_ms", self.lease_ttl_ms.seed()),
            ("evict_yield_interval", self.evict_yield_interval.seed()),
            (
                "evict_yield_duration_us",
                self.evict_yield_duration_us.seed(),
            ),
        ];
        let mut out = String::from("MetaConfig {\n");
        for (name, value) in lines {
            out += &format!("  {name}: {value}\n");
        }
        for (name, _, value) in self.fields() {
            if name.starts_with("tls_") || name.starts_with("config_store_tls_") {
                out += &format!("  {name}: {value}\n");
            }
        }
        out.push('}');
        out
    }
}

/// The configuration `MetaService.setup` recorded for `MetaService.main()`.
static META_SETUP: Mutex<Option<MetaServiceConfig>> = Mutex::new(None);

/// Maps `config` and records it for [`meta_service_config`]; 0 or -3000 (the reason on
/// standard error).
pub fn setup_meta(config: &MetaConfig) -> i32 {
    match config.seed().and_then(|s| MetaServiceConfig::from_seed(&s)) {
        Ok(c) => {
            *META_SETUP.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
            0
        }
        Err(e) => refuse("MetaService.setup", e),
    }
}

/// Maps a `LocalConfig` for `DistributedObjectStore.setup`.
pub fn setup_local(config: &LocalConfig) -> std::result::Result<ClientConfig, i32> {
    config
        .client_config()
        .map_err(|e| refuse("DistributedObjectStore.setup", e))
}

/// The error's code, after telling the caller why (1.3.0 also says why on its log).
fn refuse(call: &str, e: Error) -> i32 {
    eprintln!("memcache_hybrid: {call}: {e}");
    e.code()
}

/// What `MetaService.main()` serves with: the config `MetaService.setup` recorded;
/// else the TOML file named by `MMC_META_CONFIG`; else 1.3.0's `mmc-meta.conf` named by
/// `MMC_META_CONFIG_PATH`; else the defaults. `MMC_META_*` variables apply over the two
/// files and the defaults, not over `setup`.
pub fn meta_service_config() -> Result<MetaServiceConfig> {
    let made = meta_service_config_from_setup_or_env();
    if let Err(e) = &made {
        eprintln!("memcache_hybrid: MetaService.main: {e}");
    }
    made
}

fn meta_service_config_from_setup_or_env() -> Result<MetaServiceConfig> {
    if let Some(c) = META_SETUP.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Ok(c);
    }
    if let Some(path) = std::env::var_os("MMC_META_CONFIG") {
        return memcache_client::layered::load(Some(std::path::Path::new(&path)), "MMC_META_", &[]);
    }
    match std::env::var_os("MMC_META_CONFIG_PATH") {
        Some(path) => memcache_client::layered::overlay(
            MetaServiceConfig::from_seed_file(std::path::Path::new(&path))?,
            "MMC_META_",
            &[],
        ),
        None => memcache_client::layered::load(None, "MMC_META_", &[]),
    }
}
