//! Mutual TLS against real `mmc meta` and `mmc local` processes: certificates made here
//! (one CA, a CRL, leaves with roles); strangers refused at the handshake, a client with
//! a good certificate served end to end, and each certificate limited to its roles.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::procs::*;
use memcache_core::Error;
use memcache_proto::{connect_meta_with, context, parse_discovery, RaftBytes};
use memcache_tls::pki::{Leaf, Pki};
use memcache_tls::{TlsClient, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The pool's CA and the certificates of this test file, written once.
struct Certs {
    dir: PathBuf,
    pki: Pki,
    crl: String,
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mmc-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki::new("pool CA");
        // Serial 66 is revoked.
        let crl = pki.crl_pem(&[66]);
        Certs { dir, pki, crl }
    })
}

/// A certificate of the pool's CA with `roles`, written out.
fn issue(name: &str, serial: u64, roles: &[&str], expired: bool) -> TlsConfig {
    let c = certs();
    let issued = c.pki.issue(&Leaf {
        name,
        serial,
        roles,
        expired,
    });
    c.pki.write(&c.dir, &issued, name, Some(&c.crl))
}

fn tls_args(cfg: &TlsConfig) -> Vec<String> {
    let p = |p: &Path| p.to_str().unwrap().to_string();
    vec![
        "--tls-ca".into(),
        p(&cfg.ca_path),
        "--tls-cert".into(),
        p(&cfg.cert_path),
        "--tls-key".into(),
        p(&cfg.key_path),
        "--tls-crl".into(),
        p(&cfg.crl_path),
    ]
}

/// A TLS pool: one meta (meta role) with HTTPS admin, one local service (local role).
struct Pool {
    _meta: Proc,
    _local: Proc,
    url: String,
    addr: SocketAddr,
    https: SocketAddr,
    rank: u32,
}

fn pool() -> Pool {
    let meta_cfg = issue("meta", 10, &["meta"], false);
    let mut args: Vec<String> = [
        "meta",
        "--discovery",
        "tcp://127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(tls_args(&meta_cfg));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (meta, lines) = spawn_mmc_lines(&args, 2);
    let url = lines[0].trim().rsplit(' ').next().unwrap().to_string();
    let https: SocketAddr = lines[1]
        .trim()
        .rsplit("https://")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no https address in {:?}", lines[1]));
    let local_cfg = issue("local", 11, &["local"], false);
    let extra = tls_args(&local_cfg);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (local, rank) = start_local_with(&url, "32MiB", &extra);
    let addr = parse_discovery(&url).unwrap()[0];
    Pool {
        _meta: meta,
        _local: local,
        url,
        addr,
        https,
        rank,
    }
}

fn client_of(cfg: &TlsConfig) -> Arc<TlsClient> {
    cfg.client().unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `role()` answered under `tls` (None: plaintext)?
fn answered(pool: &Pool, tls: Option<&TlsClient>) -> bool {
    rt().block_on(async {
        let Ok(rpc) = connect_meta_with(tls, pool.addr, TIMEOUT).await else {
            return false;
        };
        rpc.role(context(TIMEOUT)).await.is_ok()
    })
}

/// One HTTPS GET: (status, body).
fn https_get(tls: &TlsClient, addr: SocketAddr, path: &str) -> (u16, String) {
    rt().block_on(async {
        let mut s = memcache_tls::connect_with(Some(tls), addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        let raw = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    })
}

fn permission_denied(e: &Error) -> bool {
    e.code() == -3000 && e.to_string().contains("permission denied")
}

#[test]
fn strangers_are_refused_and_a_good_client_is_served_end_to_end() {
    let pool = pool();
    // No TLS, another CA's certificate, an expired one and a revoked one: refused.
    assert!(!answered(&pool, None), "a plaintext client was served");
    let other = Pki::new("another CA");
    let stranger = other.issue(&Leaf {
        name: "stranger",
        serial: 12,
        roles: &["client", "admin", "meta"],
        expired: false,
    });
    let mut stranger_cfg = other.write(&certs().dir, &stranger, "stranger", None);
    stranger_cfg.ca_path = issue("ca-holder", 13, &[], false).ca_path;
    assert!(
        !answered(&pool, Some(&client_of(&stranger_cfg))),
        "another CA's client was served"
    );
    let expired = issue("expired", 14, &["client"], true);
    assert!(
        !answered(&pool, Some(&client_of(&expired))),
        "an expired certificate was served"
    );
    let revoked = issue("revoked", 66, &["client"], false);
    assert!(
        !answered(&pool, Some(&client_of(&revoked))),
        "a revoked certificate was served"
    );

    // A good client certificate: put and get over the TLS control and data planes,
    // from this process and from `mmc put/get`.
    let good = issue("client", 15, &["client"], false);
    assert!(answered(&pool, Some(&client_of(&good))));
    memcache_tls::set_client(Some(client_of(&good)));
    let store = tcp_client(&pool.url);
    let value: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    store.put("tls/a", &value).unwrap();
    assert_eq!(store.get("tls/a").unwrap(), value);
    let file = certs().dir.join("value");
    std::fs::write(&file, &value[..1000]).unwrap();
    let url = pool.url.as_str();
    let file = file.to_str().unwrap();
    let put = run_mmc(&["put", "--discovery", url, "tls/b", file], Some(&good));
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert_eq!(store.get("tls/b").unwrap(), &value[..1000]);
    let get = run_mmc(&["get", "--discovery", url, "tls/a"], Some(&good));
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(get.stdout, value);
    // The same command without a certificate is refused.
    let refused = run_mmc(&["get", "--discovery", url, "tls/a"], None);
    assert!(!refused.status.success());
}

/// Runs `mmc ARGS`, under `tls`'s certificate where given, to its end.
fn run_mmc(args: &[&str], tls: Option<&TlsConfig>) -> std::process::Output {
    std::process::Command::new(mmc_bin())
        .args(args)
        .args(tls.map(tls_args).unwrap_or_default())
        .output()
        .unwrap()
}

#[test]
fn each_certificate_is_held_to_its_roles() {
    let pool = pool();
    let local = client_of(&issue("local-2", 20, &["local"], false));
    let client = client_of(&issue("client-2", 21, &["client"], false));
    let admin = client_of(&issue("admin", 22, &["admin"], false));
    rt().block_on(async {
        // A local service's certificate sends no Raft message and adds no member.
        let rpc = connect_meta_with(Some(&local), pool.addr, TIMEOUT)
            .await
            .unwrap();
        let vote = rpc
            .raft_vote(context(TIMEOUT), RaftBytes(vec![0; 8]))
            .await
            .unwrap();
        assert!(matches!(&vote, Err(e) if permission_denied(e)), "{vote:?}");
        let add = rpc
            .add_member(context(TIMEOUT), 7, "127.0.0.1:1".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(&add, Err(e) if permission_denied(e)), "{add:?}");
        // Nor does it act on a service another certificate registered.
        let beat = rpc
            .heartbeat(context(TIMEOUT), pool.rank, (0, 0))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(&beat, Err(e) if permission_denied(e)), "{beat:?}");
        let gone = rpc
            .unregister_service(context(TIMEOUT), pool.rank)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(&gone, Err(e) if permission_denied(e)), "{gone:?}");

        // A client's certificate neither registers nor unregisters a service.
        let rpc = connect_meta_with(Some(&client), pool.addr, TIMEOUT)
            .await
            .unwrap();
        let reg = memcache_proto::Registration {
            requested: None,
            device_id: 0,
            segments: Vec::new(),
            endpoint: memcache_proto::DataEndpoint {
                host: "fake".into(),
                shm_socket: None,
                tcp: Some("127.0.0.1:1".parse().unwrap()),
            },
            recovered: Vec::new(),
        };
        let registered = rpc
            .register_service(context(TIMEOUT), reg)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(&registered, Err(e) if permission_denied(e)),
            "{registered:?}"
        );
        let gone = rpc
            .unregister_service(context(TIMEOUT), pool.rank)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(&gone, Err(e) if permission_denied(e)), "{gone:?}");
        let vote = rpc
            .raft_vote(context(TIMEOUT), RaftBytes(vec![0; 8]))
            .await
            .unwrap();
        assert!(matches!(&vote, Err(e) if permission_denied(e)), "{vote:?}");
        // The real local service is still there.
        let stats = rpc.stats(context(TIMEOUT)).await.unwrap().unwrap();
        assert_eq!(stats.services, 1);
    });
    // Admin pages: the key list needs the admin role; refusals are counted by method.
    let (status, _) = https_get(&client, pool.https, "/get_all_keys");
    assert_eq!(status, 403);
    let (status, _) = https_get(&admin, pool.https, "/get_all_keys");
    assert_eq!(status, 200);
    let (status, metrics) = https_get(&admin, pool.https, "/metrics");
    assert_eq!(status, 200);
    for method in [
        "raft_vote",
        "add_member",
        "register_service",
        "unregister_service",
    ] {
        let line = format!("memcache_rpc_refused_total{{method=\"{method}\"}}");
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
    assert!(metrics.contains("memcache_tls_handshakes_refused_total"));
}

/// 1.3.0's files turn TLS on: `mmc-meta.conf` with `ock.mmc.tls.*` for the meta
/// service, `mmc-local.conf` with `ock.mmc.local_service.hcom.tls.*` for a client.
#[test]
fn seed_files_turn_tls_on() {
    let c = certs();
    let meta_cfg = issue("seed-meta", 30, &["meta"], false);
    let ports = free_ports(2);
    let group = |prefix: &str, cfg: &TlsConfig| {
        format!(
            "{prefix}.enable = true\n{prefix}.ca.path = {}\n{prefix}.ca.crl.path = {}\n\
             {prefix}.cert.path = {}\n{prefix}.key.path = {}\n",
            cfg.ca_path.display(),
            cfg.crl_path.display(),
            cfg.cert_path.display(),
            cfg.key_path.display()
        )
    };
    let meta_conf = c.dir.join("mmc-meta.conf");
    std::fs::write(
        &meta_conf,
        format!(
            "ock.mmc.meta_service_url = tcp://127.0.0.1:{}\n\
             ock.mmc.meta_service.metrics_url = http://127.0.0.1:{}\n{}",
            ports[0],
            ports[1],
            group("ock.mmc.tls", &meta_cfg)
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(mmc_bin())
        .arg("meta")
        .env("MMC_META_CONFIG_PATH", &meta_conf)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    let _meta = Proc(child);
    let url = format!("tcp://127.0.0.1:{}", ports[0]);
    assert!(first.contains(&url), "{first}");
    let local_cfg = issue("seed-local", 31, &["local"], false);
    let extra = tls_args(&local_cfg);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (_local, _) = start_local_with(&url, "32MiB", &extra);
    // A plaintext client is refused; one configured by mmc-local.conf is served.
    let pool_addr: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let plain = rt().block_on(async {
        match connect_meta_with(None, pool_addr, TIMEOUT).await {
            Ok(rpc) => rpc.role(context(TIMEOUT)).await.is_ok(),
            Err(_) => false,
        }
    });
    assert!(!plain);
    let client_cfg = issue("seed-client", 32, &["client"], false);
    let local_conf = c.dir.join("mmc-local.conf");
    std::fs::write(
        &local_conf,
        format!(
            "ock.mmc.meta_service_url = {url}\n\
             ock.mmc.local_service.protocol = host_tcp\n\
             ock.mmc.local_service.dram.size = 0\n{}",
            group("ock.mmc.local_service.hcom.tls", &client_cfg)
        ),
    )
    .unwrap();
    let config = memcache_client::ClientConfig::from_seed_file(&local_conf).unwrap();
    assert!(config.local.tls.as_ref().is_some_and(|t| t.enable));
    let store = memcache_client::BlockingObjectStore::new(config).unwrap();
    store.init(0, false).unwrap();
    store.put("seed/tls", b"over tls").unwrap();
    assert_eq!(store.get("seed/tls").unwrap(), b"over tls");
}

/// Three meta nodes with meta certificates form a group: Raft's messages and
/// membership travel over TLS, and a put is replicated before it is acknowledged.
#[test]
fn a_meta_group_replicates_over_tls() {
    let addrs: Vec<String> = free_ports(3)
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let url = addrs
        .iter()
        .map(|a| format!("tcp://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let cfg = issue(&format!("group-meta-{id}"), 40 + id, &["meta"], false);
        let mut args: Vec<String> = ["meta", "--id", &id.to_string(), "--peers", &peers]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(tls_args(&cfg));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(spawn_mmc_lines(&args, 2).0);
    }
    let client = client_of(&issue("group-client", 50, &["client"], false));
    memcache_tls::set_client(Some(client.clone()));
    let leader = || {
        rt().block_on(async {
            for a in &addrs {
                let Ok(rpc) = connect_meta_with(Some(&client), a.parse().unwrap(), TIMEOUT).await
                else {
                    continue;
                };
                if let Ok(r) = rpc.role(context(TIMEOUT)).await {
                    if r.role == "leader" {
                        return true;
                    }
                }
            }
            false
        })
    };
    eventually("the TLS group elects a leader", leader);
    let local_cfg = issue("group-local", 51, &["local"], false);
    let extra = tls_args(&local_cfg);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (_local, _) = start_local_with(&url, "32MiB", &extra);
    let store = tcp_client(&url);
    store.put("group/a", b"replicated").unwrap();
    assert_eq!(store.get("group/a").unwrap(), b"replicated");
    drop(nodes);
}
