//! 1.3.0's local configuration (`mmc-local.conf`, `MMC_LOCAL_CONFIG_PATH`, Python's
//! `LocalConfig`) mapped onto a [`ClientConfig`]. The format and the keys are
//! [`memcache_core::seed_config`]'s; this module decides what each key means here. A
//! value we cannot honour is an error (-3000) that says why, never ignored; keys we do
//! not act on are accepted and kept (see the README's "1.3.0 configuration").

use std::path::Path;

use memcache_core::seed_config::{SeedConfig, SeedRole};
use memcache_core::{Error, Result};

use crate::{ClientConfig, TransportKind};

/// 1.3.0 aligns a host DRAM size up to 2 MiB.
const DRAM_ALIGN: u64 = 2 << 20;

impl ClientConfig {
    /// The configuration a 1.3.0 local configuration describes (keys it leaves out
    /// take 1.3.0's defaults).
    pub fn from_seed(seed: &SeedConfig) -> Result<Self> {
        if seed.role() != SeedRole::Local {
            return Err(Error::invalid("a meta configuration is not a local one"));
        }
        let transport = match seed.get("ock.mmc.local_service.protocol") {
            "host_shm" => TransportKind::Shm,
            "host_tcp" => TransportKind::Tcp,
            p @ ("host_rdma" | "host_urma" | "device_rdma" | "device_urma" | "device_uboe"
            | "device_sdma") => {
                return Err(Error::invalid(format!(
                    "ock.mmc.local_service.protocol = {p}: not supported here (no RDMA, URMA or device data plane yet); use host_shm or host_tcp"
                )))
            }
            p => {
                return Err(Error::invalid(format!(
                    "ock.mmc.local_service.protocol = {p:?}: unknown protocol"
                )))
            }
        };
        let mut c = ClientConfig {
            discovery_url: Some(seed.get("ock.mmc.meta_service_url").to_string()),
            transport: Some(transport),
            ..ClientConfig::default()
        };
        let dram = seed.size("ock.mmc.local_service.dram.size")?;
        let max_dram = seed.size("ock.mmc.local_service.max.dram.size")?;
        if dram > max_dram {
            return Err(Error::invalid(format!(
                "ock.mmc.local_service.dram.size ({dram} bytes) is above ock.mmc.local_service.max.dram.size ({max_dram} bytes)"
            )));
        }
        c.local.dram_size = dram.div_ceil(DRAM_ALIGN) * DRAM_ALIGN;
        // Device memory this process contributes: it needs a device runtime and a meta
        // service (the embedded pool has no HBM yet); `init` says so (-3000) otherwise.
        let hbm = seed.size("ock.mmc.local_service.hbm.size")?;
        let max_hbm = seed.size("ock.mmc.local_service.max.hbm.size")?;
        if max_hbm > 0 && hbm > max_hbm {
            return Err(Error::invalid(format!(
                "ock.mmc.local_service.hbm.size ({hbm} bytes) is above ock.mmc.local_service.max.hbm.size ({max_hbm} bytes)"
            )));
        }
        c.local.hbm_size = hbm;
        let timeout = seed.uint("ock.mmc.client.timeout.seconds")?;
        if timeout == 0 {
            return Err(Error::invalid(
                "ock.mmc.client.timeout.seconds must be above 0",
            ));
        }
        c.timeout_ms = timeout.saturating_mul(1000);
        if seed.bool("ock.mmc.local_service.storage.enabled")? {
            return Err(Error::invalid(
                "ock.mmc.local_service.storage.enabled = true: no UBS IO here; our SSD tier is `local.ssd_dir` (MMC_CLIENT_LOCAL__SSD_DIR)",
            ));
        }
        if !seed.get("ock.mmc.local_service.tag_op_info").is_empty() {
            return Err(Error::invalid(
                "ock.mmc.local_service.tag_op_info: per-tag protocols are not supported; set ock.mmc.local_service.protocol",
            ));
        }
        c.local.tls = memcache_tls::seed::from_seed(seed)?;
        for (key, threads) in [
            ("ock.mmc.client.read_thread_pool.size", &mut c.read_threads),
            (
                "ock.mmc.client.write_thread_pool.size",
                &mut c.write_threads,
            ),
        ] {
            *threads = u32::try_from(seed.uint(key)?).unwrap_or(u32::MAX);
        }
        seed.check_log_level()?;
        for key in [
            "ock.mmc.local_service.world_size",
            "ock.mmc.client.retry_milliseconds",
            "ock.mmc.client.aggregate.num",
            "ock.mmc.dynamic_config.interval",
        ] {
            seed.uint(key)?;
        }
        for key in [
            "ock.mmc.client.aggregate.io",
            "ock.mmc.dynamic_config.enable",
            "ock.mmc.local_service.dram.best_effort.enabled",
        ] {
            seed.bool(key)?;
        }
        Ok(c)
    }

    /// Reads a 1.3.0 `mmc-local.conf` (see [`Self::from_seed`]).
    pub fn from_seed_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        SeedConfig::parse(SeedRole::Local, &text)
            .and_then(|s| Self::from_seed(&s))
            .map_err(|e| Error::invalid(format!("{}: {}", path.display(), message(e))))
    }
}

fn message(e: Error) -> String {
    match e {
        Error::InvalidParam(m) => m,
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../config/seed/mmc-local.conf");

    fn parse(text: &str) -> Result<ClientConfig> {
        ClientConfig::from_seed(&SeedConfig::parse(SeedRole::Local, text)?)
    }

    #[test]
    fn the_shipped_file_parses_and_its_rdma_is_refused() {
        let seed = SeedConfig::parse(SeedRole::Local, SHIPPED).unwrap();
        assert_eq!(seed.get("ock.mmc.local_service.world_size"), "256");
        let e = ClientConfig::from_seed(&seed).unwrap_err();
        assert_eq!(e.code(), -3000);
        assert!(e.to_string().contains("host_rdma"), "{e}");
    }

    #[test]
    fn the_shipped_file_with_host_shm_or_tcp_maps() {
        let shm = SHIPPED.replace("protocol = host_rdma", "protocol = host_shm");
        let c = parse(&shm).unwrap();
        assert_eq!(c.discovery_url.as_deref(), Some("tcp://127.0.0.1:5000"));
        assert_eq!(c.transport, Some(TransportKind::Shm));
        assert_eq!(c.local.dram_size, 1 << 30);
        assert_eq!(c.timeout_ms, 60_000);
        let tcp = SHIPPED.replace("protocol = host_rdma", "protocol = host_tcp");
        assert_eq!(parse(&tcp).unwrap().transport, Some(TransportKind::Tcp));
    }

    #[test]
    fn the_file_the_peers_write_maps() {
        let text = "ock.mmc.meta_service_url = tcp://127.0.0.1:41001\n\
            ock.mmc.local_service.config_store_url = tcp://127.0.0.1:41002\n\
            ock.mmc.log_level = error\n\
            ock.mmc.local_service.world_size = 256\n\
            ock.mmc.local_service.protocol = host_shm\n\
            ock.mmc.local_service.dram.size = 3MB\n\
            ock.mmc.local_service.hbm.size = 0\n\
            ock.mmc.tls.enable = false\n\
            ock.mmc.config_store.tls.enable = false\n\
            ock.mmc.local_service.hcom.tls.enable = false\n\
            ock.mmc.client.timeout.seconds = 7\n\
            ock.mmc.client.write_thread_pool.size = 2\n";
        let c = parse(text).unwrap();
        assert_eq!(c.discovery_url.as_deref(), Some("tcp://127.0.0.1:41001"));
        assert_eq!(c.local.dram_size, 4 << 20, "aligned up to 2 MiB");
        assert_eq!(c.timeout_ms, 7000);
        assert_eq!(
            (c.write_threads, c.read_threads),
            (2, 32),
            "1.3.0's default read"
        );
    }

    #[test]
    fn values_we_cannot_honour_are_refused_with_a_reason() {
        let base = "ock.mmc.local_service.protocol = host_shm\n";
        for (line, why) in [
            (
                "ock.mmc.local_service.protocol = device_rdma",
                "device_rdma",
            ),
            (
                "ock.mmc.local_service.protocol = carrier_pigeon",
                "unknown protocol",
            ),
            ("ock.mmc.tls.enable = yes", "ock.mmc.tls.enable"),
            ("ock.mmc.tls.enable = true", "ock.mmc.tls.ca.path"),
            (
                "ock.mmc.local_service.hbm.size = 2GB\nock.mmc.local_service.max.hbm.size = 1GB",
                "max.hbm.size",
            ),
            ("ock.mmc.local_service.dram.size = 2TB", "size"),
            ("ock.mmc.local_service.dram.size = lots", "size"),
            ("ock.mmc.local_service.storage.enabled = true", "UBS IO"),
            (
                "ock.mmc.local_service.tag_op_info = a:HOST_TCP:b",
                "per-tag",
            ),
            ("ock.mmc.log_level = loud", "log_level"),
            ("ock.mmc.client.timeout.seconds = 0", "timeout"),
        ] {
            let e = parse(&format!("{base}{line}\n")).unwrap_err();
            assert_eq!(e.code(), -3000, "{line}");
            assert!(e.to_string().contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn tls_keys_give_the_services_tls() {
        let c = parse(
            "ock.mmc.local_service.protocol = host_tcp\n\
             ock.mmc.local_service.hcom.tls.enable = true\n\
             ock.mmc.local_service.hcom.tls.ca.path = /pki/ca.pem\n\
             ock.mmc.local_service.hcom.tls.cert.path = /pki/local.pem\n\
             ock.mmc.local_service.hcom.tls.key.path = /pki/local.key\n",
        )
        .unwrap();
        let tls = c.local.tls.unwrap();
        assert!(tls.enable);
        assert_eq!(tls.cert_path, std::path::Path::new("/pki/local.pem"));
        let c = parse("ock.mmc.local_service.protocol = host_tcp\n").unwrap();
        assert_eq!(c.local.tls, None);
    }

    #[test]
    fn accepted_keys_without_effect_are_kept() {
        let text = "ock.mmc.local_service.protocol = host_tcp\n\
            ock.mmc.client.aggregate.io = false\n\
            ock.mmc.local_service.hcom_url = tcp://10.0.0.1:7000\n\
            ock.mmc.tls.ca.path = /etc/ca.pem\n\
            ubsio.mem.size_in_gb = 10\n";
        let seed = SeedConfig::parse(SeedRole::Local, text).unwrap();
        assert_eq!(seed.get("ock.mmc.tls.ca.path"), "/etc/ca.pem");
        assert_eq!(seed.get("ubsio.mem.size_in_gb"), "10");
        ClientConfig::from_seed(&seed).unwrap();
    }

    #[test]
    fn files_name_themselves_in_errors() {
        let dir = std::env::temp_dir().join(format!("mmc-seed-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mmc-local.conf");
        std::fs::write(
            &path,
            "ock.mmc.local_service.protocol = host_shm\nbad line\n",
        )
        .unwrap();
        let e = ClientConfig::from_seed_file(&path).unwrap_err();
        assert_eq!(e.code(), -3000);
        let m = e.to_string();
        assert!(m.contains("mmc-local.conf") && m.contains("line 2"), "{m}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
