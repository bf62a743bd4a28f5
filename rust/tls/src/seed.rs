//! 1.3.0's TLS keys (`ock.mmc.tls.*`, `ock.mmc.config_store.tls.*`,
//! `ock.mmc.local_service.hcom.tls.*`, `ock.mmc.metrics.tls.*`) mapped onto a
//! [`TlsConfig`]. A process has one identity here: one certificate for every listener
//! and connection, taken from the first group that is enabled.

use std::path::PathBuf;

use memcache_core::seed_config::{SeedConfig, SeedRole};
use memcache_core::Result;

use crate::TlsConfig;

/// The settings of one group, e.g. `ock.mmc.tls`.
pub fn group(seed: &SeedConfig, group: &str) -> Result<TlsConfig> {
    let path = |leaf: &str| PathBuf::from(seed.get(&format!("{group}.{leaf}")));
    Ok(TlsConfig {
        enable: seed.bool(&format!("{group}.enable"))?,
        ca_path: path("ca.path"),
        crl_path: path("ca.crl.path"),
        cert_path: path("cert.path"),
        key_path: path("key.path"),
        key_pass_path: path("key.pass.path"),
        decrypter_lib_path: path("decrypter.path"),
        package_path: path("package.path"),
    })
}

/// The groups a file of `role` may enable, in the order they are preferred.
pub fn groups(role: SeedRole) -> &'static [&'static str] {
    match role {
        SeedRole::Meta => &[
            "ock.mmc.tls",
            "ock.mmc.config_store.tls",
            "ock.mmc.metrics.tls",
        ],
        SeedRole::Local => &[
            "ock.mmc.tls",
            "ock.mmc.local_service.hcom.tls",
            "ock.mmc.config_store.tls",
        ],
    }
}

/// The first enabled group of the file, if any (each group's `enable` is checked to be
/// a boolean; an enabled group must name its CA, certificate and key).
pub fn from_seed(seed: &SeedConfig) -> Result<Option<TlsConfig>> {
    let mut chosen = None;
    for g in groups(seed.role()) {
        let c = group(seed, g)?;
        // Caught here, with the key to fix, rather than at the first connection.
        if let Some(leaf) = c.missing().filter(|_| c.enable) {
            return Err(memcache_core::Error::invalid(format!(
                "{g}.enable = true needs {g}.{leaf}"
            )));
        }
        if c.enable && chosen.is_none() {
            chosen = Some(c);
        }
    }
    Ok(chosen)
}
