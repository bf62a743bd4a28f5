//! 1.3.0's local configuration (`local_config` in C++, `mmc_local_config_t` in C,
//! `LocalConfig` in Python) turned into a [`ClientConfig`], so a C or C++ caller
//! configures a client without files: `mmc_setup` and `ObjectStore::Setup`.
//!
//! The struct lays over the configuration the process already has (`MMC_CLIENT_CONFIG`
//! and `MMC_CLIENT_*`): empty strings and zero numbers keep what is there.

use std::ffi::c_char;

use memcache_client::{ClientConfig, Error, TransportKind};

use crate::c_api::{first_tls, fixed, mmc_tls_config};
use crate::logging;

const URL: usize = 1024;
const PROTOCOL: usize = 64;
const SIZE: usize = 32;
const LOG_LEVEL: usize = 16;

/// Laid out as `mmc_local_config_t` in `mmc.h`.
#[repr(C)]
pub struct mmc_local_config_t {
    pub meta_service_url: [c_char; URL],
    pub config_store_url: [c_char; URL],
    pub protocol: [c_char; PROTOCOL],
    pub dram_size: [c_char; SIZE],
    pub hbm_size: [c_char; SIZE],
    pub max_dram_size: [c_char; SIZE],
    pub max_hbm_size: [c_char; SIZE],
    pub log_level: [c_char; LOG_LEVEL],
    pub world_size: u32,
    pub client_retry_milliseconds: u32,
    pub client_timeout_seconds: u32,
    pub read_thread_pool_size: u32,
    pub write_thread_pool_size: u32,
    pub aggregate_io: bool,
    pub aggregate_num: i32,
    pub tls: mmc_tls_config,
    pub hcom_tls: mmc_tls_config,
    pub config_store_tls: mmc_tls_config,
}

/// A size as 1.3.0 writes them: a number of bytes with an optional unit, `1GB`,
/// `512MB`, `64KB`, `2TB` (binary multiples, as 1.3.0 reads them: 1GB is 2^30 bytes;
/// `GiB` and friends and single letters `G` are accepted too).
pub fn parse_size(s: &str) -> Result<u64, Error> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        Error::invalid(format!(
            "bad size {s:?}: a number of bytes with KB, MB, GB or TB"
        ))
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// 1.3.0's protocol names. Host transports other than TCP and shared memory have no
/// counterpart here and pick the automatic choice (shared memory on this host, TCP to
/// others); the device ones are refused, as device memory is.
fn transport(protocol: &str) -> Result<Option<TransportKind>, Error> {
    match protocol.to_ascii_lowercase().as_str() {
        "" | "host_rdma" | "host_urma" => Ok(None),
        "host_tcp" | "tcp" => Ok(Some(TransportKind::Tcp)),
        "host_shm" | "shm" => Ok(Some(TransportKind::Shm)),
        other => Err(Error::invalid(format!(
            "protocol {other:?}: this build moves host memory only (host_tcp, host_shm, host_rdma)"
        ))),
    }
}

fn log_level(name: &str) -> Result<Option<i32>, Error> {
    Ok(Some(match name.to_ascii_lowercase().as_str() {
        "" => return Ok(None),
        "debug" => 0,
        "info" => 1,
        "warn" | "warning" => 2,
        "error" => 3,
        other => {
            return Err(Error::invalid(format!(
                "log level {other:?}: debug, info, warn or error"
            )))
        }
    }))
}

/// `c` over `base`. Refuses (-3000) what this build cannot honour: TLS enabled without
/// its CA, certificate and key (in `c` or in `base`), device protocols, and malformed
/// sizes or names. Applies the log level only on success.
pub fn apply(base: ClientConfig, c: &mmc_local_config_t) -> Result<ClientConfig, Error> {
    // A process has one identity: the first enabled group's. One enabled without paths
    // keeps the identity of the configuration it lays over (mmc-local.conf's
    // ock.mmc.tls.*), if that has one.
    let base_tls = base.local.tls.clone().filter(|t| t.enable);
    let tls = match first_tls(&[&c.tls, &c.hcom_tls, &c.config_store_tls]) {
        None => base_tls,
        Some(t) => match t.missing() {
            None => Some(t),
            Some(_) if t == enabled_alone() && base_tls.is_some() => base_tls,
            Some(leaf) => {
                return Err(Error::invalid(format!(
                    "TLS is enabled without its {leaf}: set tls_ca_path, tls_cert_path and tls_key_path, or ock.mmc.tls.* in mmc-local.conf"
                )))
            }
        },
    };
    for limit in [&c.max_dram_size, &c.max_hbm_size] {
        let s = fixed(limit);
        if !s.is_empty() {
            parse_size(&s)?;
        }
    }
    let level = log_level(&fixed(&c.log_level))?;
    let mut cfg = base;
    cfg.local.tls = tls;
    let url = fixed(&c.meta_service_url);
    if !url.is_empty() {
        cfg.discovery_url = Some(url);
    }
    let protocol = fixed(&c.protocol);
    if !protocol.is_empty() {
        cfg.transport = transport(&protocol)?;
    }
    let dram = fixed(&c.dram_size);
    if !dram.is_empty() {
        cfg.local.dram_size = parse_size(&dram)?;
    }
    // Device memory the client contributes: `init` refuses it (-3000) without a device
    // runtime or in the embedded pool, which has no HBM yet.
    let hbm = fixed(&c.hbm_size);
    if !hbm.is_empty() {
        cfg.local.hbm_size = parse_size(&hbm)?;
    }
    if c.client_timeout_seconds > 0 {
        cfg.timeout_ms = u64::from(c.client_timeout_seconds) * 1000;
    }
    cfg.set_thread_pools(c.read_thread_pool_size, c.write_thread_pool_size);
    if let Some(level) = level {
        logging::init(level, None);
    }
    Ok(cfg)
}

/// A TLS group enabled with no path at all.
fn enabled_alone() -> memcache_tls::TlsConfig {
    memcache_tls::TlsConfig {
        enable: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dst: &mut [c_char], s: &str) {
        dst.iter_mut().for_each(|c| *c = 0);
        for (d, b) in dst.iter_mut().zip(s.bytes()) {
            *d = b as c_char;
        }
    }

    fn zeroed() -> mmc_local_config_t {
        // SAFETY: every field is an integer, a bool or an array of them; all-zero is valid.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_size(" 64 KiB ").unwrap(), 64 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1TB").unwrap(), 1 << 40);
        assert_eq!(parse_size("0").unwrap(), 0);
        for bad in ["", "GB", "1PB", "-1GB", "1.5GB", "99999999999999TB"] {
            assert_eq!(parse_size(bad).unwrap_err().code(), -3000, "{bad}");
        }
    }

    #[test]
    fn zeroed_config_keeps_the_base() {
        let base = ClientConfig::with_dram(12345);
        let cfg = apply(base.clone(), &zeroed()).unwrap();
        assert_eq!(cfg, base);
    }

    #[test]
    fn fields_apply() {
        let mut c = zeroed();
        set(&mut c.meta_service_url, "tcp://127.0.0.1:5000");
        set(&mut c.protocol, "host_tcp");
        set(&mut c.dram_size, "2GB");
        set(&mut c.hbm_size, "1GB");
        set(&mut c.max_dram_size, "1TB");
        c.client_timeout_seconds = 7;
        c.write_thread_pool_size = 3;
        let cfg = apply(ClientConfig::default(), &c).unwrap();
        assert_eq!(cfg.discovery_url.as_deref(), Some("tcp://127.0.0.1:5000"));
        assert_eq!(cfg.transport, Some(TransportKind::Tcp));
        assert_eq!(cfg.local.dram_size, 2 << 30);
        assert_eq!(cfg.local.hbm_size, 1 << 30);
        assert_eq!(cfg.timeout_ms, 7000);
        // 0 keeps the default, as in 1.3.0's zeroed structs.
        assert_eq!((cfg.write_threads, cfg.read_threads), (3, 32));
    }

    #[test]
    fn tls_paths_give_the_client_its_identity() {
        let mut c = zeroed();
        c.hcom_tls.tls_enable = true;
        for (i, p) in ["/pki/ca.pem", "", "/pki/client.crt", "/pki/client.key"]
            .iter()
            .enumerate()
        {
            set(&mut c.hcom_tls.paths[i], p);
        }
        let tls = apply(ClientConfig::default(), &c)
            .unwrap()
            .local
            .tls
            .unwrap();
        assert!(tls.enable);
        assert_eq!(tls.key_path, std::path::Path::new("/pki/client.key"));
        // Enabled alone, over a configuration that has an identity: that one.
        let mut base = ClientConfig::default();
        base.local.tls = Some(tls.clone());
        let mut alone = zeroed();
        alone.tls.tls_enable = true;
        assert_eq!(apply(base, &alone).unwrap().local.tls, Some(tls));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        let refused = |f: &dyn Fn(&mut mmc_local_config_t)| {
            let mut c = zeroed();
            f(&mut c);
            apply(ClientConfig::default(), &c).unwrap_err().code()
        };
        assert_eq!(refused(&|c| c.tls.tls_enable = true), -3000);
        assert_eq!(
            refused(&|c| {
                c.hcom_tls.tls_enable = true;
                set(&mut c.hcom_tls.paths[0], "/pki/ca.pem");
            }),
            -3000,
            "no certificate or key"
        );
        assert_eq!(refused(&|c| set(&mut c.hbm_size, "1.5GB")), -3000);
        assert_eq!(refused(&|c| set(&mut c.protocol, "device_rdma")), -3000);
        assert_eq!(refused(&|c| set(&mut c.dram_size, "lots")), -3000);
        assert_eq!(refused(&|c| set(&mut c.log_level, "loud")), -3000);
    }
}
