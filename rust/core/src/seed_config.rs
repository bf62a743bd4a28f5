//! The configuration format of MemCache Hybrid 1.3.0 (`mmc-local.conf`, `mmc-meta.conf`):
//! `key = value` lines, `#` comments, blank lines. This module knows the format, the keys
//! each file accepts and 1.3.0's defaults for them; what a key means to us is decided by
//! the crate that owns each configuration (`memcache_client::ClientConfig::from_seed`,
//! `memcache_meta_service::MetaServiceConfig::from_seed`). Python's `LocalConfig` and
//! `MetaConfig` are the same keys under field names, and are set through [`SeedConfig::set`].
//!
//! Nothing here reads files: callers hand in the text.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// Which of 1.3.0's two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedRole {
    /// `mmc-local.conf` (`MMC_LOCAL_CONFIG_PATH`): a client and its local service.
    Local,
    /// `mmc-meta.conf` (`MMC_META_CONFIG_PATH`): the meta service.
    Meta,
}

const TLS: &[(&str, &str)] = &[
    ("enable", "false"),
    ("ca.path", ""),
    ("ca.crl.path", ""),
    ("cert.path", ""),
    ("key.path", ""),
    ("key.pass.path", ""),
    ("package.path", ""),
    ("decrypter.path", ""),
];

/// The keys of `mmc-local.conf` with 1.3.0's defaults (TLS groups are added by
/// [`keys`]). Keys whose default 1.3.0 does not show are empty.
const LOCAL_KEYS: &[(&str, &str)] = &[
    ("ock.mmc.meta_service_url", "tcp://127.0.0.1:5000"),
    (
        "ock.mmc.local_service.config_store_url",
        "tcp://127.0.0.1:6000",
    ),
    (
        "ock.mmc.meta_service.config_store_url",
        "tcp://127.0.0.1:6000",
    ),
    ("ock.mmc.local_service.config_store_url_domain", ""),
    ("ock.mmc.local_service.backend_id", ""),
    ("ock.mmc.log_level", "info"),
    ("ock.mmc.local_service.world_size", "256"),
    ("ock.mmc.local_service.protocol", "host_rdma"),
    ("ock.mmc.local_service.tag", ""),
    ("ock.mmc.local_service.tag_op_info", ""),
    ("ock.mmc.local_service.hcom_url", "tcp://127.0.0.1:7000"),
    ("ock.mmc.local_service.dram.size", "1GB"),
    ("ock.mmc.local_service.hbm.size", "0"),
    ("ock.mmc.local_service.max.dram.size", "1TB"),
    ("ock.mmc.local_service.max.hbm.size", "0"),
    ("ock.mmc.local_service.dram.best_effort.enabled", "false"),
    ("ock.mmc.local_service.storage.enabled", "false"),
    ("ock.mmc.client.retry_milliseconds", "0"),
    ("ock.mmc.client.timeout.seconds", "60"),
    ("ock.mmc.client.read_thread_pool.size", "32"),
    ("ock.mmc.client.write_thread_pool.size", "4"),
    ("ock.mmc.client.aggregate.io", "true"),
    ("ock.mmc.client.aggregate.num", "122"),
    ("ock.mmc.client.batch_option.chunk.count", ""),
    ("ock.mmc.client.batch_option.chunk.size", ""),
    ("ock.mmc.dynamic_config.enable", "true"),
    ("ock.mmc.dynamic_config.interval", "5"),
];

/// The keys of `mmc-meta.conf` with 1.3.0's defaults.
const META_KEYS: &[(&str, &str)] = &[
    ("ock.mmc.meta_service_url", "tcp://127.0.0.1:5000"),
    (
        "ock.mmc.meta_service.config_store_url",
        "tcp://127.0.0.1:6000",
    ),
    ("ock.mmc.meta_service.metrics_url", "http://127.0.0.1:8000"),
    ("ock.mmc.meta.ha.enable", "false"),
    ("ock.mmc.log_level", "info"),
    ("ock.mmc.log_path", "/var/log/memcache_hybrid"),
    ("ock.mmc.log_rotation_file_size", "20"),
    ("ock.mmc.log_rotation_file_count", "50"),
    ("ock.mmc.log_output_target", "file"),
    ("ock.mmc.evict_threshold_high", "90"),
    ("ock.mmc.evict_threshold_low", "80"),
    ("ock.mmc.defrag_evict_threshold", "70"),
    ("ock.mmc.evict_check_interval_seconds", "5"),
    ("ock.mmc.evict_yield_interval", "0"),
    ("ock.mmc.evict_yield_duration_us", "100"),
    ("ock.mmc.meta.lease_ttl_ms", "10000"),
    ("ock.mmc.meta_service.lru_type", "sharded_lru"),
    ("ock.mmc.meta_service.lru_shard_count", "16"),
    ("ock.mmc.meta_service.metrics_report_interval_seconds", ""),
    ("ock.mmc.meta_service.alloc.max_value_mode.enabled", "false"),
    ("ock.mmc.meta_service.storage.metadata_mode", "aggregated"),
    ("ock.mmc.kv_events.enable", "false"),
    ("ock.mmc.kv_events.transport", "0"),
    ("ock.mmc.kv_events.endpoint", ""),
    ("ock.mmc.kv_events.hash_as_int", "true"),
    ("ock.mmc.kv_events.block_size", "0"),
    ("ock.mmc.kv_events.model_name", ""),
    ("ock.mmc.kv_events.queue_capacity", "65536"),
    ("ock.mmc.kv_events.tenant_id", "default"),
    ("ock.mmc.zmq.enable_curve", "false"),
    ("ock.mmc.zmq.public_key", ""),
    ("ock.mmc.zmq.private_key", ""),
    ("ock.mmc.storage.async_flush.batch_limit", ""),
    ("ock.mmc.storage.async_flush.interval_ms", ""),
    ("ock.mmc.storage.pending_wait.timeout", ""),
    ("ock.mmc.storage.prefetch.enabled", ""),
    ("ock.mmc.dynamic_config.enable", "true"),
    ("ock.mmc.dynamic_config.interval", "5"),
];

/// Every key a file of `role` accepts, with 1.3.0's default. Keys under `ubsio.` (the
/// SSD backend's own settings) are accepted too, without a default.
pub fn keys(role: SeedRole) -> Vec<(String, &'static str)> {
    let (plain, tls_groups): (&[(&str, &str)], &[&str]) = match role {
        SeedRole::Local => (
            LOCAL_KEYS,
            &[
                "ock.mmc.tls",
                "ock.mmc.config_store.tls",
                "ock.mmc.local_service.hcom.tls",
            ],
        ),
        SeedRole::Meta => (
            META_KEYS,
            &[
                "ock.mmc.tls",
                "ock.mmc.config_store.tls",
                "ock.mmc.metrics.tls",
            ],
        ),
    };
    let mut out: Vec<(String, &'static str)> =
        plain.iter().map(|(k, d)| (k.to_string(), *d)).collect();
    for group in tls_groups {
        for (leaf, default) in TLS {
            // 1.3.0's HCOM TLS has no package path.
            if group.ends_with("hcom.tls") && *leaf == "package.path" {
                continue;
            }
            out.push((format!("{group}.{leaf}"), default));
        }
    }
    out
}

/// The settings of one 1.3.0 file: every key it accepts, with the file's value or
/// 1.3.0's default, plus the `ubsio.*` keys it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedConfig {
    role: SeedRole,
    values: BTreeMap<String, String>,
    /// The keys set explicitly (by the file or [`Self::set`]), in order.
    set: Vec<String>,
}

impl SeedConfig {
    /// 1.3.0's defaults for `role`.
    pub fn new(role: SeedRole) -> Self {
        SeedConfig {
            role,
            values: keys(role)
                .into_iter()
                .map(|(k, d)| (k, d.to_string()))
                .collect(),
            set: Vec::new(),
        }
    }

    /// Parses the text of a file: `key = value` lines (whitespace around both is
    /// trimmed, the value may be empty), `#` comment lines and blank lines. An unknown
    /// key or a line without `=` is an error (-3000) naming the line.
    pub fn parse(role: SeedRole, text: &str) -> Result<Self> {
        let mut c = SeedConfig::new(role);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(Error::invalid(format!(
                    "line {}: expected `key = value`, got {line:?}",
                    n + 1
                )));
            };
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(Error::invalid(format!(
                    "line {}: expected `key = value`, got {line:?}",
                    n + 1
                )));
            }
            c.set(key, value.trim())
                .map_err(|e| Error::invalid(format!("line {}: {}", n + 1, message(&e))))?;
        }
        Ok(c)
    }

    pub fn role(&self) -> SeedRole {
        self.role
    }

    /// Sets `key`; an unknown key is an error, as 1.3.0's "Invalid key".
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let known = self.values.contains_key(key) || key.starts_with("ubsio.");
        if !known {
            let file = match self.role {
                SeedRole::Local => "local",
                SeedRole::Meta => "meta",
            };
            return Err(Error::invalid(format!(
                "Invalid key <{key}>: not a key of 1.3.0's {file} configuration"
            )));
        }
        self.values.insert(key.to_string(), value.to_string());
        self.set.retain(|k| k != key);
        self.set.push(key.to_string());
        Ok(())
    }

    /// The value of `key` (1.3.0's default unless set); empty for an unknown key.
    pub fn get(&self, key: &str) -> &str {
        self.values.get(key).map(String::as_str).unwrap_or("")
    }

    /// Every key with its value, sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether `key` was set by the file or [`Self::set`] rather than defaulted.
    pub fn is_set(&self, key: &str) -> bool {
        self.set.iter().any(|k| k == key)
    }

    /// `key` as a boolean: `true`/`false` (any case), `1`/`0`.
    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.get(key).to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            v => Err(Error::invalid(format!(
                "{key} = {v:?}: expected true or false"
            ))),
        }
    }

    /// `key` as a non-negative integer.
    pub fn uint(&self, key: &str) -> Result<u64> {
        let v = self.get(key);
        v.parse()
            .map_err(|_| Error::invalid(format!("{key} = {v:?}: expected a non-negative integer")))
    }

    /// An error unless `ock.mmc.log_level` is one of 1.3.0's levels.
    pub fn check_log_level(&self) -> Result<()> {
        match self.get("ock.mmc.log_level") {
            "debug" | "info" | "warn" | "error" => Ok(()),
            v => Err(Error::invalid(format!(
                "ock.mmc.log_level = {v:?}: expected debug, info, warn or error"
            ))),
        }
    }

    /// `key` as a size in bytes (see [`parse_size`]).
    pub fn size(&self, key: &str) -> Result<u64> {
        parse_size(self.get(key)).map_err(|e| Error::invalid(format!("{key}: {}", message(&e))))
    }
}

/// The largest size 1.3.0 accepts.
pub const MAX_SEED_SIZE: u64 = 1 << 40;

/// A size as 1.3.0 writes it: `134217728`, `2048KB`/`2048K`, `200MB`/`200mb`/`200m`,
/// `2.5GB`, `1TB`, `0`; units are powers of 1024, case-insensitive; at most 1 TB.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(format!(
            "size {text:?} is invalid: expected a number with an optional unit K/KB, M/MB, G/GB, T/TB (at most 1TB)"
        ))
    };
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 10),
        Some((i, 'm')) => (&t[..i], 20),
        Some((i, 'g')) => (&t[..i], 30),
        Some((i, 't')) => (&t[..i], 40),
        _ => (t, 0),
    };
    let num = num.trim();
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let bytes = if num.contains('.') {
        let f: f64 = num.parse().map_err(|_| bad())?;
        (f * (1u64 << shift) as f64).ceil() as u64
    } else {
        let n: u64 = num.parse().map_err(|_| bad())?;
        n.checked_mul(1 << shift).ok_or_else(bad)?
    };
    if bytes > MAX_SEED_SIZE {
        return Err(bad());
    }
    Ok(bytes)
}

fn message(e: &Error) -> String {
    match e {
        Error::InvalidParam(m) => m.clone(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_1_3_0_writes_them() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("134217728").unwrap(), 134217728);
        assert_eq!(parse_size("2048KB").unwrap(), 2 << 20);
        assert_eq!(parse_size("2048K").unwrap(), 2 << 20);
        assert_eq!(parse_size("200MB").unwrap(), 200 << 20);
        assert_eq!(parse_size("200mb").unwrap(), 200 << 20);
        assert_eq!(parse_size("200m").unwrap(), 200 << 20);
        assert_eq!(parse_size("2.5GB").unwrap(), 5 << 29);
        assert_eq!(parse_size("1TB").unwrap(), 1 << 40);
        assert_eq!(parse_size("1gb").unwrap(), 1 << 30);
        for bad in ["", "GB", "1.5XB", "-1", "2TB", "1 2", "x"] {
            assert_eq!(parse_size(bad).unwrap_err().code(), -3000, "{bad}");
        }
    }

    #[test]
    fn parses_comments_blanks_and_whitespace() {
        let text = "# comment\n\n  ## another\nock.mmc.log_level=debug\n  ock.mmc.meta_service_url   =   tcp://1.2.3.4:5  \nubsio.disk.path =\n";
        let c = SeedConfig::parse(SeedRole::Local, text).unwrap();
        assert_eq!(c.get("ock.mmc.log_level"), "debug");
        assert_eq!(c.get("ock.mmc.meta_service_url"), "tcp://1.2.3.4:5");
        assert_eq!(c.get("ubsio.disk.path"), "");
        assert!(c.is_set("ubsio.disk.path"));
        assert_eq!(c.get("ock.mmc.local_service.dram.size"), "1GB");
        assert!(!c.is_set("ock.mmc.local_service.dram.size"));
    }

    #[test]
    fn unknown_keys_and_bad_lines_name_themselves() {
        let e = SeedConfig::parse(SeedRole::Local, "# x\nock.mmc.bogus = 1\n").unwrap_err();
        assert_eq!(e.code(), -3000);
        let m = e.to_string();
        assert!(
            m.contains("Invalid key <ock.mmc.bogus>") && m.contains("line 2"),
            "{m}"
        );
        // A meta-only key is unknown to the local file, as in 1.3.0.
        let e = SeedConfig::parse(SeedRole::Local, "ock.mmc.log_path = /x").unwrap_err();
        assert!(e.to_string().contains("ock.mmc.log_path"), "{e}");
        let e = SeedConfig::parse(SeedRole::Meta, "ock.mmc.local_service.tag = a").unwrap_err();
        assert!(e.to_string().contains("ock.mmc.local_service.tag"), "{e}");
        for bad in [
            "a\nock.mmc.meta_service_url\n",
            "a\n = 3\n",
            "a\nock mmc = 3\n",
        ] {
            let e = SeedConfig::parse(SeedRole::Meta, &bad[2..]).unwrap_err();
            assert_eq!(e.code(), -3000);
            assert!(e.to_string().contains("line 1"), "{e}");
        }
    }

    #[test]
    fn typed_reads() {
        let mut c = SeedConfig::new(SeedRole::Meta);
        assert!(!c.bool("ock.mmc.meta.ha.enable").unwrap());
        assert_eq!(c.uint("ock.mmc.meta.lease_ttl_ms").unwrap(), 10000);
        c.set("ock.mmc.meta.ha.enable", "yes").unwrap();
        assert_eq!(c.bool("ock.mmc.meta.ha.enable").unwrap_err().code(), -3000);
        c.set("ock.mmc.evict_threshold_high", "-5").unwrap();
        assert!(c
            .uint("ock.mmc.evict_threshold_high")
            .unwrap_err()
            .to_string()
            .contains("ock.mmc.evict_threshold_high"));
        let tls = keys(SeedRole::Local);
        assert!(tls
            .iter()
            .any(|(k, _)| k == "ock.mmc.local_service.hcom.tls.key.path"));
        assert!(!tls
            .iter()
            .any(|(k, _)| k == "ock.mmc.local_service.hcom.tls.package.path"));
    }
}
