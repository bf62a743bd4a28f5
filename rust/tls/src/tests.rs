use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::pki::{Leaf, Pki};
use crate::*;

fn leaf<'a>(name: &'a str, serial: u64, roles: &'a [&'a str]) -> Leaf<'a> {
    Leaf {
        name,
        serial,
        roles,
        expired: false,
    }
}

/// Serves one echo connection under `server`; answers the roles the peer had, or the
/// handshake's error.
async fn echo_server(
    server: Arc<TlsServer>,
) -> (SocketAddr, tokio::task::JoinHandle<io::Result<Peer>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let (mut s, peer) = server.accept(tcp).await?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await?;
        s.write_all(&buf).await?;
        s.flush().await?;
        Ok(peer)
    });
    (addr, task)
}

async fn round_trip(client: &TlsClient, addr: SocketAddr) -> io::Result<()> {
    let mut s = connect_with(Some(client), addr).await?;
    s.write_all(b"hello").await?;
    s.flush().await?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"hello");
    Ok(())
}

#[tokio::test]
async fn mutual_tls_carries_roles_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("pool CA");
    let server_leaf = pki.issue(&leaf("meta", 1, &["meta"]));
    let good = pki.issue(&leaf("client", 2, &["client", "admin"]));
    let revoked = pki.issue(&leaf("revoked", 3, &["client"]));
    let expired = pki.issue(&Leaf {
        expired: true,
        ..leaf("expired", 4, &["client"])
    });
    let crl = pki.crl_pem(&[3]);
    let server_cfg = pki.write(dir.path(), &server_leaf, "server", Some(&crl));
    let server = server_cfg.server().unwrap();

    // A good certificate: its roles reach the server.
    let (addr, task) = echo_server(server.clone()).await;
    let cfg = pki.write(dir.path(), &good, "good", Some(&crl));
    round_trip(&cfg.client().unwrap(), addr).await.unwrap();
    let peer = task.await.unwrap().unwrap();
    assert_eq!(peer.roles, Roles::CLIENT.union(Roles::ADMIN));
    assert!(peer.cert.is_some());

    // Revoked, expired, another CA's, and no TLS at all: refused by the server.
    let other = Pki::new("another CA");
    let stranger = other.issue(&leaf("stranger", 2, &["client"]));
    let mut refused = Vec::new();
    for (name, issued, ca) in [
        ("revoked", &revoked, &pki),
        ("expired", &expired, &pki),
        ("stranger", &stranger, &other),
    ] {
        let mut cfg = ca.write(dir.path(), issued, name, None);
        // The client trusts the pool's CA, so only the server's check can refuse it.
        cfg.ca_path = server_cfg.ca_path.clone();
        let (addr, task) = echo_server(server.clone()).await;
        let _ = round_trip(&cfg.client().unwrap(), addr).await;
        refused.push((name, task.await.unwrap().is_err()));
    }
    let (addr, task) = echo_server(server.clone()).await;
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = plain.write_all(b"hello").await;
    let _ = plain.shutdown().await;
    refused.push(("plaintext", task.await.unwrap().is_err()));
    assert!(refused.iter().all(|(_, r)| *r), "{refused:?}");

    // A client refuses a server of another CA.
    let rogue = other.write(
        dir.path(),
        &other.issue(&leaf("rogue", 9, &["meta"])),
        "rogue",
        None,
    );
    let (addr, task) = echo_server(rogue.server().unwrap()).await;
    assert!(round_trip(&cfg.client().unwrap(), addr).await.is_err());
    let _ = task.await;
}

#[test]
fn roles_of_a_certificate() {
    let pki = Pki::new("CA");
    let issued = pki.issue(&leaf("x", 1, &["local", "meta", "bogus"]));
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    let roles = Roles::of_certificate(&der);
    assert_eq!(roles, Roles::LOCAL.union(Roles::META));
    assert!(!roles.has(Roles::CLIENT));
    assert_eq!(format!("{roles:?}"), "[meta,local]");
    let none = pki.issue(&leaf("y", 2, &[]));
    let der = CertificateDer::from_pem_slice(none.cert_pem.as_bytes()).unwrap();
    assert_eq!(Roles::of_certificate(&der), Roles::NONE);
}

#[test]
fn an_encrypted_key_opens_with_its_passphrase() {
    use pkcs8::der::pem::LineEnding;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("CA");
    let issued = pki.issue(&leaf("enc", 1, &["client"]));
    let info = pkcs8::PrivateKeyInfo::try_from(issued.key_der.as_slice()).unwrap();
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, b"saltsalt", &[7u8; 16])
            .unwrap();
    let enc = info.encrypt_with_params(params, b"s3cret").unwrap();
    let pem = enc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF).unwrap();
    let mut cfg = pki.write(dir.path(), &issued, "enc", None);
    std::fs::write(&cfg.key_path, pem.as_bytes()).unwrap();
    // No passphrase: refused with a clear error.
    let err = cfg.client().err().unwrap().to_string();
    assert!(err.contains("no key pass path"), "{err}");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "wrong\n").unwrap();
    cfg.key_pass_path = pass.clone();
    assert!(cfg.client().is_err());
    std::fs::write(&pass, "s3cret\n").unwrap();
    cfg.client().unwrap();
    cfg.server().unwrap();
    // A decrypter library that cannot be loaded is an error, not a silent skip.
    cfg.decrypter_lib_path = dir.path().join("missing.so");
    let err = cfg.client().err().unwrap().to_string();
    assert!(err.contains("decrypter"), "{err}");
}

#[test]
fn missing_files_name_themselves() {
    let cfg = TlsConfig {
        enable: true,
        ca_path: "/nonexistent/ca.pem".into(),
        ..TlsConfig::default()
    };
    let err = cfg.server().err().unwrap().to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    assert!(TlsConfig::default().build().unwrap().is_none());
}

#[test]
fn seed_groups_map_onto_the_config() {
    use memcache_core::seed_config::{SeedConfig, SeedRole};
    let off = SeedConfig::parse(SeedRole::Local, "").unwrap();
    assert_eq!(seed::from_seed(&off).unwrap(), None);
    let text = "ock.mmc.local_service.hcom.tls.enable = true\n\
                ock.mmc.local_service.hcom.tls.ca.path = /etc/ca.pem\n\
                ock.mmc.local_service.hcom.tls.ca.crl.path = /etc/crl.pem\n\
                ock.mmc.local_service.hcom.tls.cert.path = /etc/cert.pem\n\
                ock.mmc.local_service.hcom.tls.key.path = /etc/key.pem\n\
                ock.mmc.local_service.hcom.tls.key.pass.path = /etc/pass\n\
                ock.mmc.local_service.hcom.tls.decrypter.path = /lib/dec.so\n";
    let seed = SeedConfig::parse(SeedRole::Local, text).unwrap();
    let c = seed::from_seed(&seed).unwrap().unwrap();
    assert!(c.enable);
    assert_eq!(c.ca_path, std::path::Path::new("/etc/ca.pem"));
    assert_eq!(c.crl_path, std::path::Path::new("/etc/crl.pem"));
    assert_eq!(c.cert_path, std::path::Path::new("/etc/cert.pem"));
    assert_eq!(c.key_path, std::path::Path::new("/etc/key.pem"));
    assert_eq!(c.key_pass_path, std::path::Path::new("/etc/pass"));
    assert_eq!(c.decrypter_lib_path, std::path::Path::new("/lib/dec.so"));
    // ock.mmc.tls wins over the others.
    let text = format!(
        "{text}ock.mmc.tls.enable = true\nock.mmc.tls.ca.path = /x/ca.pem\n\
         ock.mmc.tls.cert.path = /x/c.pem\nock.mmc.tls.key.path = /x/k.pem\n"
    );
    let seed = SeedConfig::parse(SeedRole::Local, &text).unwrap();
    let c = seed::from_seed(&seed).unwrap().unwrap();
    assert_eq!(c.ca_path, std::path::Path::new("/x/ca.pem"));
    let bad = SeedConfig::parse(SeedRole::Meta, "ock.mmc.tls.enable = maybe\n");
    assert!(bad.is_err() || seed::from_seed(&bad.unwrap()).is_err());
    // On without certificates: refused, naming the missing key.
    let bare = SeedConfig::parse(SeedRole::Meta, "ock.mmc.tls.enable = true\n").unwrap();
    let e = seed::from_seed(&bare).unwrap_err();
    assert_eq!(e.code(), -3000);
    assert!(e.to_string().contains("ock.mmc.tls.ca.path"), "{e}");
}

#[tokio::test]
async fn a_listener_stops_accepting_at_its_cap() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let slots = listen::slots(&Limits {
        max_conns: 1,
        ..Limits::default()
    });
    let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (_, _, first) = accept(&listener, &slots).await;
    // The second waits in the backlog while the first holds the only slot.
    let second = tokio::time::timeout(Duration::from_millis(200), accept(&listener, &slots)).await;
    assert!(second.is_err());
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(5), accept(&listener, &slots)).await;
    assert!(second.is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_times_out_and_a_busy_one_does_not() {
    let (near, mut far) = tokio::io::duplex(64);
    let mut idle = Idle::new(near, Duration::from_secs(10));
    let mut buf = [0u8; 4];
    // Data every 6 s keeps it open past 10 s.
    for _ in 0..3 {
        let writer = async {
            tokio::time::sleep(Duration::from_secs(6)).await;
            far.write_all(b"ping").await.unwrap();
        };
        let (r, ()) = tokio::join!(idle.read_exact(&mut buf), writer);
        r.unwrap();
    }
    let err = idle.read_exact(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

/// A decrypter library as 1.3.0 loads one: `DecryptPassword` here reverses its input.
#[test]
fn a_decrypter_library_opens_the_passphrase() {
    use pkcs8::der::pem::LineEnding;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("dec.c");
    std::fs::write(
        &src,
        "#include <stddef.h>\n\
         int DecryptPassword(const char *c, size_t n, char *p, size_t cap) {\n\
           if (n + 1 > cap) return 1;\n\
           for (size_t i = 0; i < n; i++) p[i] = c[n - 1 - i];\n\
           p[n] = 0;\n\
           return 0;\n\
         }\n",
    )
    .unwrap();
    let lib = dir.path().join("libdec.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("no C compiler: skipping the decrypter library test");
        return;
    }
    let pki = Pki::new("CA");
    let issued = pki.issue(&leaf("dec", 1, &["client"]));
    let info = pkcs8::PrivateKeyInfo::try_from(issued.key_der.as_slice()).unwrap();
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, b"saltsalt", &[3u8; 16])
            .unwrap();
    let pem = info
        .encrypt_with_params(params, b"s3cret")
        .unwrap()
        .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .unwrap();
    let mut cfg = pki.write(dir.path(), &issued, "dec", None);
    std::fs::write(&cfg.key_path, pem.as_bytes()).unwrap();
    cfg.key_pass_path = dir.path().join("pass");
    // What is stored is the cipher text: the passphrase reversed.
    std::fs::write(&cfg.key_pass_path, "terc3s\n").unwrap();
    assert!(
        cfg.client().is_err(),
        "the stored text is not the passphrase"
    );
    cfg.decrypter_lib_path = lib;
    cfg.client().unwrap();
}
