//! Transport security: mutual TLS 1.3 (rustls, ring) for every listener and every
//! connection of the pool, and the roles a peer's certificate grants.
//!
//! Both ends present a certificate signed by the configured CA; a certificate listed in
//! a CRL of `crl_path` is refused. Peers are addressed by IP, so a server certificate
//! carries its IP addresses as SANs and is verified as usual against the address dialed.
//! A certificate grants roles through SAN URIs `urn:memcache:role:<meta|local|client|admin>`
//! (several allowed).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use memcache_core::{Error, Result};

mod decrypter;
pub mod listen;
#[cfg(any(test, feature = "pki"))]
pub mod pki;
pub mod record;
pub mod seed;

pub use listen::{accept, Idle, Limits};
pub use record::{Io, Records};

/// The `mmc_tls_config` of the C API, the `*.tls.*` keys of the seed's configuration
/// files and the `tls_*` keys of its Python dicts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    pub enable: bool,
    /// PEM file of the CA certificates peers' certificates must chain to.
    pub ca_path: PathBuf,
    /// PEM file of certificate revocation lists (optional).
    pub crl_path: PathBuf,
    /// PEM file of this node's certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM file of this node's private key: PKCS#8, SEC1 or PKCS#1, or an encrypted
    /// PKCS#8 key (`ENCRYPTED PRIVATE KEY`) whose passphrase is in `key_pass_path`.
    pub key_path: PathBuf,
    /// File holding the passphrase of an encrypted key (trailing newline dropped).
    pub key_pass_path: PathBuf,
    /// C library exporting `int DecryptPassword(const char *cipher, size_t cipherLen,
    /// char *plain, size_t plainCap)`, applied to the passphrase before use.
    pub decrypter_lib_path: PathBuf,
    /// Accepted for 1.3.0's configurations and not used.
    pub package_path: PathBuf,
}

impl TlsConfig {
    /// The first of the paths TLS cannot do without (CA, certificate, key) left
    /// empty, by its seed name.
    pub fn missing(&self) -> Option<&'static str> {
        [
            ("ca.path", &self.ca_path),
            ("cert.path", &self.cert_path),
            ("key.path", &self.key_path),
        ]
        .into_iter()
        .find(|(_, p)| p.as_os_str().is_empty())
        .map(|(leaf, _)| leaf)
    }
}

/// ring's TLS 1.3 suites with AES-128-GCM first: the cheapest per byte on CPUs with
/// AES instructions, where the data plane's throughput is decided.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// CPU nanoseconds per byte that sealing and then opening full 16 KiB TLS records
/// costs with the first suite offered (AES-128-GCM), measured over about `budget`: the
/// least CPU TLS adds to each byte a connection moves (its sender seals, its receiver
/// opens), copies aside. Benchmarks set TLS throughput against it.
pub fn record_crypto_ns_per_byte(budget: Duration) -> f64 {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7; 16]).expect("16-byte key"));
    let mut record = vec![0x5a_u8; 16 << 10];
    let nonce = |n: u64| {
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&n.to_be_bytes());
        Nonce::assume_unique_for_key(b)
    };
    let (start, mut n) = (std::time::Instant::now(), 0u64);
    while start.elapsed() < budget || n == 0 {
        let tag = key
            .seal_in_place_separate_tag(nonce(n), Aad::empty(), &mut record)
            .expect("sealable");
        let mut sealed = std::mem::take(&mut record);
        sealed.extend_from_slice(tag.as_ref());
        let plain_len = key
            .open_in_place(nonce(n), Aad::empty(), &mut sealed)
            .expect("opens what it sealed")
            .len();
        sealed.truncate(plain_len);
        record = sealed;
        n += 1;
    }
    start.elapsed().as_nanos() as f64 / (n as f64 * record.len() as f64)
}

impl TlsConfig {
    /// Server half: the node's certificate, and a client certificate required of every
    /// peer.
    pub fn server(&self) -> Result<Arc<TlsServer>> {
        let provider = provider();
        let roots = Arc::new(self.roots()?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .with_crls(self.crls()?)
            .build()
            .map_err(|e| bad(format!("TLS client verifier: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad(format!("TLS: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs()?, self.key()?)
            .map_err(|e| bad(format!("TLS certificate and key: {e}")))?;
        // The record layer takes the keys over after the handshake, and cannot follow
        // a handshake message sent after it (tickets would be).
        config.enable_secret_extraction = true;
        config.send_tls13_tickets = 0;
        Ok(Arc::new(TlsServer {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            records: true,
        }))
    }

    /// The server half for HTTPS: standard rustls throughout, for browsers and other
    /// clients that may send what our record layer does not follow.
    pub fn https(&self) -> Result<Arc<TlsServer>> {
        let own = self.server()?;
        Ok(Arc::new(TlsServer {
            acceptor: own.acceptor.clone(),
            records: false,
        }))
    }

    /// Client half: verifies the server's certificate against the CA (and CRLs) and the
    /// address dialed, and presents this node's certificate.
    pub fn client(&self) -> Result<Arc<TlsClient>> {
        let provider = provider();
        let roots = Arc::new(self.roots()?);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .with_crls(self.crls()?)
            .build()
            .map_err(|e| bad(format!("TLS server verifier: {e}")))?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad(format!("TLS: {e}")))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.certs()?, self.key()?)
            .map_err(|e| bad(format!("TLS certificate and key: {e}")))?;
        config.enable_secret_extraction = true;
        Ok(Arc::new(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }))
    }

    /// Both halves, or none when TLS is off.
    pub fn build(&self) -> Result<Option<Tls>> {
        if !self.enable {
            return Ok(None);
        }
        Ok(Some(Tls {
            server: self.server()?,
            https: self.https()?,
            client: self.client()?,
        }))
    }

    /// As `build`, and the client half becomes the process's identity for outgoing
    /// connections where none is set yet (one identity per process: the first stays).
    pub fn build_for_process(&self) -> Result<Option<Tls>> {
        let tls = self.build()?;
        if let Some(t) = &tls {
            let mut current = CLIENT.write().unwrap_or_else(|e| e.into_inner());
            current.get_or_insert_with(|| t.client.clone());
        }
        Ok(tls)
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&self.ca_path, "CA")? {
            roots
                .add(cert)
                .map_err(|e| bad(format!("CA {}: {e}", self.ca_path.display())))?;
        }
        Ok(roots)
    }

    fn crls(&self) -> Result<Vec<CertificateRevocationListDer<'static>>> {
        if self.crl_path.as_os_str().is_empty() {
            return Ok(Vec::new());
        }
        let text = read(&self.crl_path, "CRL")?;
        CertificateRevocationListDer::pem_slice_iter(&text)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("CRL {}: {e}", self.crl_path.display())))
    }

    fn certs(&self) -> Result<Vec<CertificateDer<'static>>> {
        read_certs(&self.cert_path, "certificate")
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>> {
        let text = read(&self.key_path, "key")?;
        let path = self.key_path.display();
        if String::from_utf8_lossy(&text).contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            let pass = self.passphrase()?;
            let (_, doc) = pkcs8::Document::from_pem(
                std::str::from_utf8(&text).map_err(|e| bad(format!("key {path}: {e}")))?,
            )
            .map_err(|e| bad(format!("key {path}: {e}")))?;
            let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
                .map_err(|e| bad(format!("key {path}: {e}")))?;
            let plain = info
                .decrypt(pass.as_bytes())
                .map_err(|e| bad(format!("key {path}: cannot decrypt: {e}")))?;
            return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                plain.as_bytes().to_vec(),
            )));
        }
        PrivateKeyDer::from_pem_slice(&text).map_err(|e| bad(format!("key {path}: {e}")))
    }

    /// The key's passphrase: the file's text, through the decrypter library if named.
    fn passphrase(&self) -> Result<String> {
        if self.key_pass_path.as_os_str().is_empty() {
            return Err(bad(format!(
                "key {} is encrypted and no key pass path is set",
                self.key_path.display()
            )));
        }
        let raw = read(&self.key_pass_path, "key pass")?;
        let stored = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        if self.decrypter_lib_path.as_os_str().is_empty() {
            return Ok(stored);
        }
        decrypter::decrypt(&self.decrypter_lib_path, stored.as_bytes())
    }
}

fn bad(msg: String) -> Error {
    Error::invalid(msg)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    if path.as_os_str().is_empty() {
        return Err(bad(format!("TLS is on and no {what} path is set")));
    }
    std::fs::read(path).map_err(|e| bad(format!("{what} {}: {e}", path.display())))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let text = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(format!("{what} {}: no certificate", path.display())));
    }
    Ok(certs)
}

/// Roles a peer holds: from its certificate's SAN URIs under TLS, all of them without.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    pub const NONE: Roles = Roles(0);
    /// A meta node: Raft messages and membership changes.
    pub const META: Roles = Roles(1);
    /// A local service: registers, heartbeats, reports and unregisters its own service.
    pub const LOCAL: Roles = Roles(2);
    /// A client: alloc, commit, lookup, leases, remove and the other data calls.
    pub const CLIENT: Roles = Roles(4);
    /// An operator: the admin HTTP pages that list keys, and the admin calls.
    pub const ADMIN: Roles = Roles(8);
    pub const ALL: Roles = Roles(15);

    pub const fn union(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }

    /// Whether `self` holds any of the roles of `any`.
    pub const fn has(self, any: Roles) -> bool {
        self.0 & any.0 != 0
    }

    /// The roles of a certificate (DER): each SAN URI `urn:memcache:role:NAME`.
    pub fn of_certificate(der: &[u8]) -> Roles {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Roles::NONE;
        };
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return Roles::NONE;
        };
        let mut roles = Roles::NONE;
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                if let Some(role) = uri.strip_prefix(ROLE_URI) {
                    roles = roles.union(Roles::named(role));
                }
            }
        }
        roles
    }

    fn named(name: &str) -> Roles {
        match name {
            "meta" => Roles::META,
            "local" => Roles::LOCAL,
            "client" => Roles::CLIENT,
            "admin" => Roles::ADMIN,
            _ => Roles::NONE,
        }
    }
}

/// Prefix of the SAN URIs that grant roles.
pub const ROLE_URI: &str = "urn:memcache:role:";

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (Roles::META, "meta"),
            (Roles::LOCAL, "local"),
            (Roles::CLIENT, "client"),
            (Roles::ADMIN, "admin"),
        ]
        .iter()
        .filter(|(r, _)| self.has(*r))
        .map(|(_, n)| *n)
        .collect();
        write!(f, "[{}]", names.join(","))
    }
}

/// A node's TLS halves.
#[derive(Clone)]
pub struct Tls {
    /// For the pool's own ports (RPC, Raft, data plane).
    pub server: Arc<TlsServer>,
    /// For the admin HTTP pages.
    pub https: Arc<TlsServer>,
    pub client: Arc<TlsClient>,
}

/// Accepts TLS connections.
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
    /// Whether connections go on in our own record layer after the handshake.
    records: bool,
}

/// How long a peer may take over its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsServer {
    /// The handshake of an accepted connection; the peer's roles come from its
    /// certificate.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<(Stream, Peer)> {
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(Io::new(tcp)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let peer = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            Some(cert) => Peer {
                roles: Roles::of_certificate(cert),
                cert: Some(cert_id(cert)),
            },
            None => Peer {
                roles: Roles::NONE,
                cert: None,
            },
        };
        let stream = match self.records {
            true => Stream::Records(Box::new(Records::server(tls)?)),
            false => Stream::Server(Box::new(tls)),
        };
        Ok((stream, peer))
    }
}

/// Accepts a connection: its TLS handshake where `tls` is set, else the plain stream
/// with every role (no TLS, no roles to check).
pub async fn accept_stream(tls: Option<&TlsServer>, tcp: TcpStream) -> io::Result<(Stream, Peer)> {
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(t) => t.accept(tcp).await,
        None => Ok((Stream::Plain(tcp), Peer::PLAINTEXT)),
    }
}

/// SHA-256 of a certificate (DER): what binds a local service to the certificate that
/// registered it.
pub type CertId = [u8; 32];

fn cert_id(der: &[u8]) -> CertId {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Who is at the other end of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub roles: Roles,
    /// The certificate it presented (none without TLS).
    pub cert: Option<CertId>,
}

impl Peer {
    /// A peer of a plaintext listener: every role, as before TLS.
    pub const PLAINTEXT: Peer = Peer {
        roles: Roles::ALL,
        cert: None,
    };
}

/// Opens TLS connections.
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
}

impl TlsClient {
    pub async fn connect(&self, addr: SocketAddr, tcp: TcpStream) -> io::Result<Stream> {
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.connector.connect(name, Io::new(tcp)),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(Stream::Records(Box::new(Records::client(tls)?)))
    }
}

static CLIENT: RwLock<Option<Arc<TlsClient>>> = RwLock::new(None);

/// Sets the client half every outgoing connection of this process uses (`None`:
/// plaintext). A process has one identity: the CLI sets it once at start.
pub fn set_client(client: Option<Arc<TlsClient>>) {
    *CLIENT.write().unwrap_or_else(|e| e.into_inner()) = client;
}

/// The process's client half, if TLS is on.
pub fn client() -> Option<Arc<TlsClient>> {
    CLIENT.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Connects to `addr`, through TLS where the process's client half is set.
pub async fn connect(addr: SocketAddr) -> io::Result<Stream> {
    connect_with(client().as_deref(), addr).await
}

/// Connects to `addr`, through TLS where `tls` is set.
pub async fn connect_with(tls: Option<&TlsClient>, addr: SocketAddr) -> io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(t) => t.connect(addr, tcp).await,
        None => Ok(Stream::Plain(tcp)),
    }
}

/// Warns when a listener on a non-loopback address goes without TLS.
pub fn warn_plaintext(what: &str, addr: SocketAddr, tls: bool) {
    if !tls && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "{what} listens on a non-loopback address without TLS: anyone reaching it may use it"
        );
    }
}

/// A TCP stream, plain or under TLS.
pub enum Stream {
    Plain(TcpStream),
    /// Our own record layer (connections between the pool's processes).
    Records(Box<Records>),
    /// rustls's (HTTPS).
    Server(Box<tokio_rustls::server::TlsStream<Io>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Records(s) => s.tcp(),
            Stream::Server(s) => s.get_ref().0.tcp(),
        }
    }

    /// Whether the connection should not be reused: it moved so much under one key.
    pub fn worn(&self) -> bool {
        matches!(self, Stream::Records(r) if r.worn())
    }

    /// Reads exactly `len` bytes into `sink`, piece by piece: under our record layer
    /// each record's plaintext where it was opened, otherwise through `scratch` (its
    /// length is the piece size).
    pub async fn read_to(
        &mut self,
        len: u64,
        scratch: &mut [u8],
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        use tokio::io::AsyncReadExt;
        if let Stream::Records(r) = self {
            return r.read_to(len, sink).await;
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(scratch.len() as u64) as usize;
            self.read_exact(&mut scratch[..n]).await?;
            sink(&scratch[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Writes `len` bytes that `fill` produces, given each piece's offset: under our
    /// record layer straight into the records to seal, otherwise through `scratch`.
    pub async fn write_from(
        &mut self,
        len: u64,
        scratch: &mut [u8],
        mut fill: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if let Stream::Records(r) = self {
            return r.write_from(len, fill).await;
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(scratch.len() as u64) as usize;
            fill(done, &mut scratch[..n])?;
            self.write_all(&scratch[..n]).await?;
            done += n as u64;
        }
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Server($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Stream::Records($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Server(s) => s.is_write_vectored(),
            Stream::Records(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests;
