//! 1.3.0's configuration files across processes: `mmc meta` serves where the file named
//! by `MMC_META_CONFIG_PATH` says, and a client configured by a `mmc-local.conf` joins it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::procs::*;

use memcache_client::{BlockingObjectStore, ClientConfig, TransportKind};

fn dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mmc-seed-conf-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn mmc_meta_serves_where_the_1_3_0_meta_file_says_and_a_local_file_joins_it() {
    let ports = free_ports(3);
    let url = format!("tcp://127.0.0.1:{}", ports[0]);
    let meta_file = dir().join("mmc-meta.conf");
    // As the peers' scripts write it.
    std::fs::write(
        &meta_file,
        format!(
            "ock.mmc.meta_service_url = {url}\n\
             ock.mmc.meta_service.config_store_url = tcp://127.0.0.1:{}\n\
             ock.mmc.meta_service.metrics_url = http://127.0.0.1:{}\n\
             ock.mmc.log_level = error\n\
             ock.mmc.log_path = /tmp/logs\n\
             ock.mmc.tls.enable = false\n\
             ock.mmc.config_store.tls.enable = false\n\
             ock.mmc.metrics.tls.enable = false\n",
            ports[1], ports[2]
        ),
    )
    .unwrap();
    let mut child = Command::new(mmc_bin())
        .arg("meta")
        .env("MMC_META_CONFIG_PATH", &meta_file)
        .env_remove("MMC_META_CONFIG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let _meta = Proc(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.trim().ends_with(&url), "{line}");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(
        line.trim().ends_with(&format!("127.0.0.1:{}", ports[2])),
        "{line}"
    );

    let local_file = dir().join("mmc-local.conf");
    std::fs::write(
        &local_file,
        format!(
            "ock.mmc.meta_service_url = {url}\n\
             ock.mmc.local_service.world_size = 256\n\
             ock.mmc.local_service.protocol = host_tcp\n\
             ock.mmc.local_service.dram.size = 32MB\n\
             ock.mmc.local_service.hbm.size = 0\n"
        ),
    )
    .unwrap();
    let config = ClientConfig::from_seed_file(&local_file).unwrap();
    assert_eq!(config.transport, Some(TransportKind::Tcp));
    let store = BlockingObjectStore::new(config).unwrap();
    store.init(0, true).unwrap();
    store.put("seed-config", b"from a 1.3.0 file").unwrap();
    assert_eq!(store.get("seed-config").unwrap(), b"from a 1.3.0 file");
    store.tear_down().unwrap();
}

#[test]
fn mmc_meta_refuses_what_it_cannot_honour_and_says_why() {
    let meta_file = dir().join("mmc-meta-ha.conf");
    std::fs::write(
        &meta_file,
        "ock.mmc.meta_service_url = tcp://127.0.0.1:0\nock.mmc.meta.ha.enable = true\n",
    )
    .unwrap();
    let out = Command::new(mmc_bin())
        .arg("meta")
        .env("MMC_META_CONFIG_PATH", &meta_file)
        .env_remove("MMC_META_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ock.mmc.meta.ha.enable") && err.contains("mmc-meta-ha.conf"),
        "{err}"
    );
}
