//! `--tls-*`: mutual TLS for every command, as a service (its listeners) and as a
//! client (its connections to the meta and local services).

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Args;

use memcache_tls::TlsConfig;

#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Turn mutual TLS 1.3 on (implied by --tls-cert).
    #[arg(long, global = true, env = "MMC_TLS")]
    tls: bool,
    /// PEM file of the CA certificates a peer's certificate must chain to.
    #[arg(long, global = true, env = "MMC_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// PEM file of this process's certificate chain, leaf first.
    #[arg(long, global = true, env = "MMC_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// PEM file of this process's private key (PKCS#8, SEC1, PKCS#1, or an encrypted
    /// PKCS#8 key with --tls-key-pass).
    #[arg(long, global = true, env = "MMC_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// File holding the passphrase of an encrypted key.
    #[arg(long, global = true, env = "MMC_TLS_KEY_PASS", value_name = "FILE")]
    tls_key_pass: Option<PathBuf>,
    /// PEM file of certificate revocation lists.
    #[arg(long, global = true, env = "MMC_TLS_CRL", value_name = "PEM")]
    tls_crl: Option<PathBuf>,
    /// C library exporting 1.3.0's `DecryptPassword`, applied to the key's passphrase.
    #[arg(long, global = true, env = "MMC_TLS_DECRYPTER", value_name = "SO")]
    tls_decrypter: Option<PathBuf>,
}

impl TlsArgs {
    /// The settings the flags give, if any flag is set.
    pub fn config(&self) -> Option<TlsConfig> {
        if !self.tls && self.tls_cert.is_none() {
            return None;
        }
        let path = |p: &Option<PathBuf>| p.clone().unwrap_or_default();
        Some(TlsConfig {
            enable: true,
            ca_path: path(&self.tls_ca),
            crl_path: path(&self.tls_crl),
            cert_path: path(&self.tls_cert),
            key_path: path(&self.tls_key),
            key_pass_path: path(&self.tls_key_pass),
            decrypter_lib_path: path(&self.tls_decrypter),
            package_path: PathBuf::new(),
        })
    }
}

static FLAGS: OnceLock<Option<TlsConfig>> = OnceLock::new();

/// Records the flags and, where they turn TLS on, sets the process's client half.
pub fn init(args: &TlsArgs) -> Result<(), String> {
    let config = args.config();
    if let Some(c) = &config {
        memcache_tls::set_client(Some(c.client().map_err(|e| e.to_string())?));
    }
    let _ = FLAGS.set(config);
    Ok(())
}

/// The settings of the flags, which win over a configuration file's.
pub fn flags() -> Option<TlsConfig> {
    FLAGS.get().cloned().flatten()
}

/// The flags' settings, else `from_file`'s; the process's client half follows it.
pub fn choose(from_file: Option<TlsConfig>) -> Result<Option<TlsConfig>, String> {
    if let Some(f) = flags() {
        return Ok(Some(f));
    }
    match from_file {
        Some(c) if c.enable => {
            memcache_tls::set_client(Some(c.client().map_err(|e| e.to_string())?));
            Ok(Some(c))
        }
        other => Ok(other),
    }
}
