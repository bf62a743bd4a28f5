//! 1.3.0's meta configuration (`mmc-meta.conf`, `MMC_META_CONFIG_PATH`, Python's
//! `MetaConfig`) mapped onto a [`MetaServiceConfig`]. The format and the keys are
//! [`memcache_core::seed_config`]'s; this module decides what each key means here. A
//! value we cannot honour is an error (-3000) that says why, never ignored; keys we do
//! not act on are accepted and kept (see the README's "1.3.0 configuration").

use std::path::Path;
use std::time::Duration;

use memcache_core::seed_config::{SeedConfig, SeedRole};
use memcache_core::{Error, Result};
use memcache_meta::PolicyKind;

use crate::MetaServiceConfig;

impl MetaServiceConfig {
    /// The configuration a 1.3.0 meta configuration describes (keys it leaves out take
    /// 1.3.0's defaults).
    pub fn from_seed(seed: &SeedConfig) -> Result<Self> {
        if seed.role() != SeedRole::Meta {
            return Err(Error::invalid("a local configuration is not a meta one"));
        }
        let mut c = MetaServiceConfig {
            discovery_url: seed.get("ock.mmc.meta_service_url").to_string(),
            ..MetaServiceConfig::default()
        };
        let metrics = seed.get("ock.mmc.meta_service.metrics_url");
        c.http_url = match metrics.strip_prefix("http://") {
            Some(addr) => addr.trim_end_matches('/').to_string(),
            None if metrics.is_empty() => String::new(),
            None => {
                return Err(Error::invalid(format!(
                    "ock.mmc.meta_service.metrics_url = {metrics:?}: expected http://HOST:PORT"
                )))
            }
        };
        if seed.bool("ock.mmc.meta.ha.enable")? {
            return Err(Error::invalid(
                "ock.mmc.meta.ha.enable = true: 1.3.0's master-standby HA (Kubernetes leader election) is not supported; run a Raft group instead (`peers`, MMC_META_PEERS)",
            ));
        }
        let percent = |key: &str| -> Result<u16> {
            let v = seed.uint(key)?;
            u16::try_from(v)
                .ok()
                .filter(|v| *v <= 100)
                .ok_or_else(|| Error::invalid(format!("{key} = {v}: expected a percentage")))
        };
        c.meta.evict_threshold_high = percent("ock.mmc.evict_threshold_high")?;
        c.meta.evict_threshold_low = percent("ock.mmc.evict_threshold_low")?;
        percent("ock.mmc.defrag_evict_threshold")?;
        c.meta.read_lease = Duration::from_millis(seed.uint("ock.mmc.meta.lease_ttl_ms")?);
        c.meta.eviction_policy = match seed.get("ock.mmc.meta_service.lru_type") {
            // A sharded LRU is an implementation of the same policy.
            "lru" | "sharded_lru" | "0" | "1" => PolicyKind::Lru,
            v => {
                return Err(Error::invalid(format!(
                    "ock.mmc.meta_service.lru_type = {v:?}: expected lru or sharded_lru"
                )))
            }
        };
        let shards = seed.uint("ock.mmc.meta_service.lru_shard_count")?;
        if !(1..=1024).contains(&shards) || !shards.is_power_of_two() {
            return Err(Error::invalid(format!(
                "ock.mmc.meta_service.lru_shard_count = {shards}: expected a power of two in [1, 1024]"
            )));
        }
        c.meta.validate()?;
        if seed.bool("ock.mmc.kv_events.enable")? {
            return Err(Error::invalid(
                "ock.mmc.kv_events.enable = true: no KV event publisher here yet",
            ));
        }
        c.tls = memcache_tls::seed::from_seed(seed)?;
        seed.check_log_level()?;
        match seed.get("ock.mmc.log_output_target") {
            "screen" | "file" | "both" => {}
            v => {
                return Err(Error::invalid(format!(
                    "ock.mmc.log_output_target = {v:?}: expected screen, file or both"
                )))
            }
        }
        for key in [
            "ock.mmc.log_rotation_file_size",
            "ock.mmc.log_rotation_file_count",
            "ock.mmc.evict_check_interval_seconds",
            "ock.mmc.evict_yield_interval",
            "ock.mmc.evict_yield_duration_us",
        ] {
            seed.uint(key)?;
        }
        for key in ["ock.mmc.kv_events.hash_as_int", "ock.mmc.zmq.enable_curve"] {
            seed.bool(key)?;
        }
        Ok(c)
    }

    /// Reads a 1.3.0 `mmc-meta.conf` (see [`Self::from_seed`]).
    pub fn from_seed_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        SeedConfig::parse(SeedRole::Meta, &text)
            .and_then(|s| Self::from_seed(&s))
            .map_err(|e| match e {
                Error::InvalidParam(m) => Error::invalid(format!("{}: {m}", path.display())),
                e => e,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../config/seed/mmc-meta.conf");

    fn parse(text: &str) -> Result<MetaServiceConfig> {
        MetaServiceConfig::from_seed(&SeedConfig::parse(SeedRole::Meta, text)?)
    }

    #[test]
    fn the_shipped_file_maps() {
        let c = parse(SHIPPED).unwrap();
        assert_eq!(c.discovery_url, "tcp://127.0.0.1:5000");
        assert_eq!(c.http_url, "127.0.0.1:8000");
        assert_eq!(c.meta.evict_threshold_high, 90);
        assert_eq!(c.meta.evict_threshold_low, 80);
        assert_eq!(c.meta.read_lease, Duration::from_millis(10_000));
        assert_eq!(c.meta.eviction_policy, PolicyKind::Lru);
        // Uncommenting its optional lines keeps it valid.
        let all = SHIPPED.replace("# ock.mmc.", "ock.mmc.");
        let seed = SeedConfig::parse(SeedRole::Meta, &all).unwrap();
        assert_eq!(seed.get("ock.mmc.log_output_target"), "file");
        MetaServiceConfig::from_seed(&seed).unwrap();
    }

    #[test]
    fn the_file_the_peers_write_maps() {
        let text = "ock.mmc.meta_service_url = tcp://127.0.0.1:41001\n\
            ock.mmc.meta_service.config_store_url = tcp://127.0.0.1:41002\n\
            ock.mmc.meta_service.metrics_url = http://127.0.0.1:41003\n\
            ock.mmc.log_level = error\n\
            ock.mmc.log_path = /tmp/run/logs\n\
            ock.mmc.tls.enable = false\n\
            ock.mmc.config_store.tls.enable = false\n\
            ock.mmc.metrics.tls.enable = false\n\
            ock.mmc.evict_threshold_high = 70\n\
            ock.mmc.evict_threshold_low = 60\n\
            ock.mmc.meta.lease_ttl_ms = 2500\n";
        let c = parse(text).unwrap();
        assert_eq!(c.discovery_url, "tcp://127.0.0.1:41001");
        assert_eq!(c.http_url, "127.0.0.1:41003");
        assert_eq!(
            (c.meta.evict_threshold_high, c.meta.evict_threshold_low),
            (70, 60)
        );
        assert_eq!(c.meta.read_lease, Duration::from_millis(2500));
    }

    #[test]
    fn tls_keys_give_the_service_tls() {
        let c = parse(
            "ock.mmc.tls.enable = true\n\
             ock.mmc.tls.ca.path = /pki/ca.pem\n\
             ock.mmc.tls.ca.crl.path = /pki/crl.pem\n\
             ock.mmc.tls.cert.path = /pki/meta.pem\n\
             ock.mmc.tls.key.path = /pki/meta.key\n",
        )
        .unwrap();
        let tls = c.tls.unwrap();
        assert!(tls.enable);
        assert_eq!(tls.crl_path, std::path::Path::new("/pki/crl.pem"));
        assert_eq!(parse("").unwrap().tls, None);
    }

    #[test]
    fn values_we_cannot_honour_are_refused_with_a_reason() {
        for (line, why) in [
            ("ock.mmc.meta.ha.enable = true", "Raft group"),
            (
                "ock.mmc.metrics.tls.enable = yes",
                "ock.mmc.metrics.tls.enable",
            ),
            ("ock.mmc.kv_events.enable = true", "KV event"),
            ("ock.mmc.meta_service.lru_shard_count = 3", "power of two"),
            ("ock.mmc.evict_threshold_high = 120", "percentage"),
            ("ock.mmc.evict_threshold_low = 95", "watermarks"),
            ("ock.mmc.meta.lease_ttl_ms = soon", "integer"),
            ("ock.mmc.meta_service.metrics_url = https://h:1", "http://"),
            ("ock.mmc.log_output_target = printer", "screen"),
        ] {
            let e = parse(&format!("{line}\n")).unwrap_err();
            assert_eq!(e.code(), -3000, "{line}");
            assert!(e.to_string().contains(why), "{line}: {e}");
        }
        let e = parse("ock.mmc.local_service.dram.size = 1GB\n").unwrap_err();
        assert!(e.to_string().contains("Invalid key"), "{e}");
    }
}
