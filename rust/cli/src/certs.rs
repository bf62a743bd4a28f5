//! `mmc certs --dir DIR [--host H]...`: a private CA and a certificate for each role,
//! to try mutual TLS with (a production pool takes its certificates from the
//! operator's own CA, with the same role URIs).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;

use memcache_tls::pki::{Leaf, Pki};

#[derive(Args)]
pub struct CertsArgs {
    /// Directory to write `ca.pem` and `ROLE.crt` / `ROLE.key` into (made if missing).
    #[arg(long)]
    dir: PathBuf,
    /// More addresses or names the certificates are valid for, besides loopback
    /// (repeatable).
    #[arg(long = "host")]
    hosts: Vec<String>,
}

/// The certificates written: a file name and the roles it grants. A client usually
/// runs a local service in its own process too, and an operator's tool is a client.
const LEAVES: &[(&str, &[&str])] = &[
    ("meta", &["meta"]),
    ("local", &["local"]),
    ("client", &["client", "local"]),
    ("admin", &["admin", "client"]),
];

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

pub fn run(args: CertsArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("making {}: {e}", args.dir.display()))?;
    let ca = Pki::new("mmc private CA");
    write(&args.dir.join("ca.pem"), &ca.ca_pem(), 0o644)?;
    for (serial, (name, roles)) in (1..).zip(LEAVES) {
        let leaf = Leaf {
            name,
            serial,
            roles,
            expired: false,
        };
        let issued = ca.issue_for(&leaf, &args.hosts);
        write(
            &args.dir.join(format!("{name}.crt")),
            &issued.cert_pem,
            0o644,
        )?;
        write(
            &args.dir.join(format!("{name}.key")),
            &issued.key_pem,
            0o600,
        )?;
        crate::say(format_args!(
            "{name}: {}/{name}.crt and {name}.key, roles {}",
            args.dir.display(),
            roles.join(", ")
        ));
    }
    Ok(())
}
