//! Wire contracts between clients, local services and the meta service: the tarpc
//! interface of the meta service (bincode over TCP) and the values it carries. Payload
//! bytes never travel here: the control plane carries placements only.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use memcache_core::Medium;
use memcache_core::{Error, Key, KeyInfo, LocalServiceId, ReplicateConfig, Result, SegmentId};

mod codec;
mod raft;
mod types;

pub use codec::{transport, Codec, Frames, Transport};
pub use raft::RaftBytes;
pub use tarpc;
pub use types::{
    check_evict_media, check_prefetch_media, Allocation, HbmAnswer, HbmReport, LeaseId, Located,
    PutId, Recovered, SegmentSpec, SsdAnswer, SsdReport, SsdWork, TierMove, ToDemote, ToPromote,
    ToStore,
};

/// Largest control message, either way. A batch of 16384 keys of 255 bytes with eight
/// replicas each stays well below it, and so do Raft's batches of log entries (see
/// the meta service's `max_payload_entries`) and snapshot chunks.
pub const MAX_FRAME: usize = 256 << 20;

/// How to reach a local service's data plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataEndpoint {
    /// Identifies the host: a client on the same host may map the segments.
    pub host: String,
    /// Unix socket where the service hands out its segments' file descriptors.
    pub shm_socket: Option<String>,
    /// TCP address of the service's data plane.
    pub tcp: Option<SocketAddr>,
}

/// What a local service tells the meta service when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub requested: Option<LocalServiceId>,
    pub device_id: u32,
    pub segments: Vec<SegmentSpec>,
    pub endpoint: DataEndpoint,
    /// Objects found on the service's SSD segment, newest record first.
    pub recovered: Vec<Recovered>,
}

/// One segment of the pool, as the meta service sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentView {
    pub id: SegmentId,
    pub service: LocalServiceId,
    pub medium: memcache_core::Medium,
    pub capacity: u64,
    pub used: u64,
}

/// The meta service's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub id: LocalServiceId,
    /// One id per segment of the registration, in order.
    pub segments: Vec<SegmentId>,
    /// Secret the service checks data-plane capabilities with.
    pub key: TagKey,
    /// Whether each recovered object was taken (one not taken is to be erased).
    pub recovered: Vec<bool>,
}

/// The answer to a heartbeat: puts whose write capabilities the service must refuse
/// from now on (they were committed or aborted before their deadline), each with the
/// expiry after which it may forget them, and likewise released read leases. Repeated until acknowledged with `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// Names the meta service process that counts `seq`: an acknowledgement of another
    /// one's answer acknowledges nothing.
    pub epoch: u64,
    pub seq: u64,
    pub revoked: Vec<(PutId, u64)>,
    /// Read leases released before their end, each with its end: their capabilities
    /// read nothing from now on.
    #[serde(default)]
    pub released: Vec<(LeaseId, u64)>,
}

impl Beat {
    /// Whether it carries revocations to apply (and to acknowledge).
    pub fn revokes(&self) -> bool {
        !self.revoked.is_empty() || !self.released.is_empty()
    }
}

/// Key of the capabilities one local service accepts.
pub type TagKey = [u64; 2];

/// A data-plane capability: the right to read (`write = false`) or write exactly one
/// blob's range, for one put or one read lease, until `expires_ms` (wall-clock unix
/// ms: the put's deadline, the read lease's end). The meta service issues it with the
/// blob's owner's key; the owner checks the MAC and its own clock, so a TCP client
/// reaches only the ranges it was given, and only while its put or lease lasts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tag {
    /// The put id (write) or the read lease id (read) the capability belongs to.
    pub id: u64,
    pub expires_ms: u64,
    /// Keyed SipHash-2-4-128 over the blob, the operation, `id` and `expires_ms`.
    pub mac: u128,
}

impl Tag {
    /// Whether the tag still grants at `now_ms` on the checker's clock.
    pub fn live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }
}

/// The MAC of a [`Tag`]: 128 bits, so guessing one is out of reach, over every field
/// the checker relies on (any one changed gives another MAC).
pub fn tag_mac(
    key: &TagKey,
    blob: (SegmentId, u64, u64),
    write: bool,
    id: u64,
    expires_ms: u64,
) -> u128 {
    let (segment, offset, len) = blob;
    let mut msg = [0u8; 41];
    msg[0] = write as u8;
    for (i, w) in [segment, offset, len, id, expires_ms]
        .into_iter()
        .enumerate()
    {
        msg[1 + 8 * i..9 + 8 * i].copy_from_slice(&w.to_le_bytes());
    }
    siphasher::sip128::SipHasher24::new_with_keys(key[0], key[1])
        .hash(&msg)
        .as_u128()
}

/// The capability for `blob` (segment, offset, len), issued with its owner's key.
pub fn blob_tag(
    key: &TagKey,
    blob: (SegmentId, u64, u64),
    write: bool,
    id: u64,
    expires_ms: u64,
) -> Tag {
    Tag {
        id,
        expires_ms,
        mac: tag_mac(key, blob, write, id, expires_ms),
    }
}

/// Whether `tag` grants `write` (or read) on `blob` at `now_ms` under `key`: its MAC
/// matches and it has not expired.
pub fn tag_grants(
    key: &TagKey,
    blob: (SegmentId, u64, u64),
    write: bool,
    tag: &Tag,
    now_ms: u64,
) -> bool {
    tag.live(now_ms) && tag_mac(key, blob, write, tag.id, tag.expires_ms) == tag.mac
}

/// One tracepoint of the meta service (see `/metrics/ptracer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRow {
    pub name: String,
    pub begin: u64,
    pub good_end: u64,
    pub bad_end: u64,
    pub on_fly: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub total_ns: u64,
}

/// Counters of the meta service, for tests and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaStats {
    /// Control RPCs served (a batch call counts once).
    pub rpcs: u64,
    /// The same, by method name.
    pub by_method: std::collections::BTreeMap<String, u64>,
    pub objects: u64,
    pub services: u64,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
}

/// A meta node that is not the leader serves no request: it answers with the leader's
/// address (if it knows one), and [`MetaLink`] follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    pub leader: Option<SocketAddr>,
}

/// The answer of a request to a meta node: served by the leader, or redirected.
pub type Reply<T> = std::result::Result<T, Redirect>;

/// A meta node's place in its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleInfo {
    pub id: u64,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<SocketAddr>,
    /// Voters and learners with their addresses.
    pub members: Vec<(u64, String)>,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// The last entry the latest snapshot covers, and the last one dropped from the log.
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

#[tarpc::service]
pub trait MetaRpc {
    async fn register_service(reg: Registration) -> Reply<Result<Registered>>;
    /// Keeps a local service alive; -3018 when the meta service no longer knows it.
    /// `acked`: the `(epoch, seq)` of the last [`Beat`] whose revocations the service
    /// applied.
    async fn heartbeat(service: LocalServiceId, acked: (u64, u64)) -> Reply<Result<Beat>>;
    async fn unregister_service(service: LocalServiceId) -> Reply<Result<usize>>;
    /// One round of a local service's SSD tier (see [`SsdReport`]).
    async fn ssd_sync(service: LocalServiceId, report: SsdReport) -> Reply<Result<SsdAnswer>>;
    /// One round of a local service's HBM upkeep: cold objects move to its DRAM (see
    /// [`HbmReport`]).
    async fn hbm_sync(service: LocalServiceId, report: HbmReport) -> Reply<Result<HbmAnswer>>;
    /// Data-plane endpoints of the live local services.
    async fn endpoints() -> Reply<Vec<(LocalServiceId, DataEndpoint)>>;
    /// `writer` is a token of the put attempt (0 for none): an alloc repeated with the
    /// same token, after its first answer was lost, gets the same allocation back.
    /// `lease_ms`: how long the puts may write before they are rolled back (0: the
    /// service's put lease). `maps_host`: the host whose local services' segments the
    /// caller maps (None: it maps none). Blobs in memory there get no capabilities (the
    /// caller copies them itself), so neither do they need fences; the others get them
    /// (see `Allocation::tags`).
    async fn alloc(
        items: Vec<(Key, u64)>,
        config: ReplicateConfig,
        writer: u64,
        lease_ms: u64,
        maps_host: Option<String>,
    ) -> Reply<Vec<Result<Allocation>>>;
    async fn commit(items: Vec<(Key, PutId)>) -> Reply<Vec<Result<()>>>;
    async fn abort(items: Vec<(Key, PutId)>) -> Reply<Vec<Result<()>>>;
    /// Leases each found object for `lease_ms` (0: the service's read lease).
    /// `maps_host`: as for `alloc` (SSD blobs, read through their service, always get
    /// capabilities).
    /// Ends the read leases of `release` (as `release` does), then leases `keys`:
    /// a client's finished gets ride its next lookup.
    async fn lookup(
        keys: Vec<Key>,
        lease_ms: u64,
        maps_host: Option<String>,
        release: Vec<(Key, LeaseId)>,
    ) -> Reply<Vec<Result<Located>>>;
    async fn release(leases: Vec<(Key, LeaseId)>) -> Reply<()>;
    /// Ends the read leases of `release` (as `release` does), then removes `keys`: a
    /// client's finished gets must not refuse its own remove (-3104), and they ride
    /// the call instead of costing one of their own.
    async fn remove(keys: Vec<Key>, release: Vec<(Key, LeaseId)>) -> Reply<Vec<Result<()>>>;
    async fn exists(keys: Vec<Key>) -> Reply<Vec<Result<bool>>>;
    async fn key_info(keys: Vec<Key>) -> Reply<Vec<KeyInfo>>;
    async fn stats() -> Reply<MetaStats>;
    async fn segments() -> Reply<Vec<SegmentView>>;
    /// Up to `limit` stored keys that start with `prefix`, in byte order.
    async fn keys(prefix: Vec<u8>, limit: u32) -> Reply<Vec<Key>>;
    async fn tracepoints() -> Reply<Vec<TraceRow>>;

    // ---- pool-wide operations of 1.3.0 ----
    /// Removes every committed object no reader holds, decided at once by the leader;
    /// how many were removed (leased objects and puts in flight stay).
    async fn remove_all() -> Reply<Result<usize>>;
    /// One step of an evict (`src` DRAM, `dst` SSD): done per key, or still waiting
    /// for its SSD copy or its readers; ask again with the keys still waiting.
    async fn evict(keys: Vec<Key>, src: Medium, dst: Medium) -> Reply<Vec<Result<TierMove>>>;
    /// One step of a prefetch (`src` SSD, `dst` DRAM), like `evict`.
    async fn prefetch(keys: Vec<Key>, src: Medium, dst: Medium) -> Reply<Vec<Result<TierMove>>>;

    // ---- the meta group ----
    /// Answered by every node, leader or not.
    async fn role() -> RoleInfo;
    /// Adds a meta node (as a learner, then a voter) at its RPC address.
    async fn add_member(id: u64, addr: SocketAddr) -> Reply<Result<()>>;
    /// Removes a meta node from the voters and the group.
    async fn remove_member(id: u64) -> Reply<Result<()>>;

    // ---- Raft between meta nodes ----
    // Each request is the consensus library's own, encoded by the meta service, and so
    // is each answer (its result, error included); a request that does not decode is
    // refused with -3000.
    async fn raft_append(req: RaftBytes) -> Result<RaftBytes>;
    async fn raft_snapshot(req: RaftBytes) -> Result<RaftBytes>;
    async fn raft_vote(req: RaftBytes) -> Result<RaftBytes>;
}

/// The meta service addresses in a `discoveryURL`: `tcp://HOST:PORT`, several
/// separated by commas.
pub fn parse_discovery(url: &str) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for part in url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let hostport = part.strip_prefix("tcp://").ok_or_else(|| {
            Error::invalid(format!(
                "discovery address {part:?} does not start with tcp://"
            ))
        })?;
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| Error::invalid(format!("discovery address {part:?}: {e}")))?
            .next()
            .ok_or_else(|| {
                Error::invalid(format!("discovery address {part:?} resolves to nothing"))
            })?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err(Error::invalid(format!(
            "no address in discovery URL {url:?}"
        )));
    }
    Ok(out)
}

/// Connects to a meta service within `timeout`, through TLS where the process's
/// client half is set (see `memcache_tls::set_client`).
pub async fn connect_meta(addr: SocketAddr, timeout: Duration) -> Result<MetaRpcClient> {
    connect_meta_with(memcache_tls::client().as_deref(), addr, timeout).await
}

/// Connects to a meta service within `timeout`, through TLS where `tls` is set.
pub async fn connect_meta_with(
    tls: Option<&memcache_tls::TlsClient>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<MetaRpcClient> {
    let stream = tokio::time::timeout(timeout, memcache_tls::connect_with(tls, addr))
        .await
        .map_err(|_| Error::NotConnectedToMeta)?
        .map_err(|e| {
            tracing::debug!(%addr, error = %e, "connecting to a meta service");
            Error::NotConnectedToMeta
        })?;
    Ok(MetaRpcClient::new(tarpc::client::Config::default(), transport(stream)).spawn())
}

/// One meta node's place in its group (any node answers), within `timeout`.
pub async fn ask_role(addr: SocketAddr, timeout: Duration) -> Result<RoleInfo> {
    let rpc = connect_meta(addr, timeout).await?;
    rpc.role(context(timeout)).await.map_err(rpc_error)
}

/// A call context whose deadline is `timeout` from now (instead of tarpc's 10 s).
pub fn context(timeout: Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + timeout;
    ctx
}

/// Maps a failed call (unreachable, deadline passed, connection lost) to our codes.
pub fn rpc_error(e: tarpc::client::RpcError) -> Error {
    match e {
        tarpc::client::RpcError::DeadlineExceeded => Error::Timeout("meta service call".into()),
        _ => Error::NotConnectedToMeta,
    }
}

/// How long a call waits before asking again while a meta group has no leader.
const NO_LEADER_PAUSE: Duration = Duration::from_millis(25);

/// How long the meta service keeps an RPC connection on which nothing arrives (so
/// silent connections cannot use up its connection cap).
pub const RPC_IDLE: Duration = Duration::from_secs(600);

/// A [`MetaLink`] unused this long connects anew before its next call, so that call
/// never meets a connection the meta service is closing for idleness.
const RECONNECT_AFTER: Duration = Duration::from_secs(300);

/// The least time a connection attempt to one meta node gets, however many addresses
/// share a call's deadline.
const MIN_CONNECT: Duration = Duration::from_millis(100);

/// A connection to the meta service that reconnects on demand and follows the leader
/// of a meta group: a node that is not the leader redirects the call to it, and a
/// call meets no leader (an election) it asks the other addresses of the discovery URL
/// again until its deadline.
///
/// An address may swallow connection attempts (a host cut off drops them unanswered),
/// so no attempt gets more than its share of the call's deadline, and connections
/// start at the address that answered last: one dead address costs a call one share,
/// never every call its whole deadline.
pub struct MetaLink {
    addrs: Vec<SocketAddr>,
    timeout: Duration,
    /// The connection and when it was last used.
    rpc: tokio::sync::Mutex<Option<(MetaRpcClient, std::time::Instant)>>,
    /// Where the next connection attempt starts in `addrs`: the address of the last
    /// connection made, moved on past addresses given up on.
    start: std::sync::atomic::AtomicUsize,
}

impl MetaLink {
    pub fn new(addrs: Vec<SocketAddr>, timeout: Duration) -> MetaLink {
        MetaLink {
            addrs,
            timeout,
            rpc: tokio::sync::Mutex::new(None),
            start: Default::default(),
        }
    }

    /// Connects now (the first call would otherwise) and asks for an answer, to report
    /// early an address where nothing listens or where this process is refused (a TLS
    /// 1.3 client learns that its certificate was refused only when it reads).
    pub async fn connect(addrs: Vec<SocketAddr>, timeout: Duration) -> Result<MetaLink> {
        let link = MetaLink::new(addrs, timeout);
        let mut last = Error::NotConnectedToMeta;
        for _ in 0..link.addrs.len() {
            let deadline = std::time::Instant::now() + timeout;
            let rpc = link.client(None, deadline).await?;
            match rpc.role(context(timeout)).await {
                Ok(_) => return Ok(link),
                Err(e) => last = rpc_error(e),
            }
            link.forget(1).await;
        }
        Err(last)
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long one connection attempt may take: its share of a call's deadline.
    fn connect_share(&self) -> Duration {
        (self.timeout / self.addrs.len().max(1) as u32).max(MIN_CONNECT)
    }

    /// The current connection, or a new one before `deadline`: to `hint` if given and
    /// reachable, else to the first address that answers, starting where the last
    /// connection was made (or after the last one given up on).
    async fn client(
        &self,
        hint: Option<SocketAddr>,
        deadline: std::time::Instant,
    ) -> Result<MetaRpcClient> {
        use std::sync::atomic::Ordering;
        let mut slot = self.rpc.lock().await;
        let now = std::time::Instant::now();
        if let Some((rpc, used)) = slot.as_mut() {
            if now.duration_since(*used) < RECONNECT_AFTER {
                *used = now;
                return Ok(rpc.clone());
            }
        }
        let first = self.start.load(Ordering::Relaxed);
        let n = self.addrs.len();
        let order = (0..n).map(|i| (first + i) % n);
        let tries = hint
            .map(|a| (a, self.addrs.iter().position(|x| *x == a)))
            .into_iter()
            .chain(order.map(|i| (self.addrs[i], Some(i))));
        let mut last = Error::NotConnectedToMeta;
        for (addr, at) in tries {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match connect_meta(addr, left.min(self.connect_share())).await {
                Ok(rpc) => {
                    tracing::debug!(%addr, "connected to a meta node");
                    if let Some(i) = at {
                        self.start.store(i, Ordering::Relaxed);
                    }
                    *slot = Some((rpc.clone(), now));
                    return Ok(rpc);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "no connection to a meta node");
                    last = e
                }
            }
        }
        Err(last)
    }

    /// Drops the connection; the next call connects again, `skip` addresses later.
    async fn forget(&self, skip: usize) {
        *self.rpc.lock().await = None;
        self.start
            .fetch_add(skip, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs one call with the configured deadline, following redirects and waiting
    /// out elections within it (a redirected call was not served, so repeating it is
    /// safe). A call that fails, its deadline passing included, drops the connection,
    /// so the next one reconnects, beginning with the next address: a leader cut off
    /// from its group holds a connection open but answers nothing. The failed call
    /// itself is not repeated (it may have taken effect).
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(MetaRpcClient, tarpc::context::Context) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Reply<T>, tarpc::client::RpcError>>,
    {
        let deadline = std::time::Instant::now() + self.timeout;
        let mut hint = None;
        let mut redirects = 0u32;
        loop {
            let rpc = match self.client(hint.take(), deadline).await {
                Ok(rpc) => rpc,
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    tokio::time::sleep(NO_LEADER_PAUSE).await;
                    continue;
                }
            };
            let mut ctx = tarpc::context::current();
            ctx.deadline = deadline;
            match f(rpc, ctx).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(Redirect { leader })) => {
                    tracing::debug!(?leader, "a meta node redirected the call");
                    self.forget(leader.is_none() as usize).await;
                    if std::time::Instant::now() >= deadline {
                        return Err(Error::NotConnectedToMeta);
                    }
                    redirects += 1;
                    // One redirect reaches the leader; another means the group's
                    // news is stale (a follower still names a leader that died):
                    // wait a little, not spin between the follower and a dead address.
                    if leader.is_none() || redirects > 1 {
                        tokio::time::sleep(NO_LEADER_PAUSE).await;
                    }
                    hint = leader;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a meta call failed");
                    self.forget(1).await;
                    return Err(rpc_error(e));
                }
            }
        }
    }
}

/// `HOST:PORT`, `http://HOST:PORT`, or just a port (on loopback); empty means off.
pub fn parse_http_addr(s: &str) -> Result<Option<SocketAddr>> {
    let s = s.trim().trim_start_matches("http://").trim_end_matches('/');
    if s.is_empty() {
        return Ok(None);
    }
    let s = s.strip_prefix(':').unwrap_or(s);
    if let Ok(port) = s.parse::<u16>() {
        return Ok(Some(([127, 0, 0, 1], port).into()));
    }
    s.parse()
        .map(Some)
        .map_err(|e| Error::invalid(format!("http address {s:?}: {e}")))
}

/// This host's identity: the kernel's boot id, which also changes across reboots.
pub fn host_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addresses() {
        assert_eq!(parse_http_addr("").unwrap(), None);
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(parse_http_addr("8080").unwrap(), Some(lo));
        assert_eq!(parse_http_addr(":8080").unwrap(), Some(lo));
        assert_eq!(
            parse_http_addr("http://0.0.0.0:9/").unwrap(),
            Some("0.0.0.0:9".parse().unwrap())
        );
        assert_eq!(parse_http_addr("nonsense").unwrap_err().code(), -3000);
    }

    #[test]
    fn discovery_urls() {
        let a = parse_discovery("tcp://127.0.0.1:5000").unwrap();
        assert_eq!(a, vec!["127.0.0.1:5000".parse().unwrap()]);
        let b = parse_discovery("tcp://127.0.0.1:1, tcp://127.0.0.1:2").unwrap();
        assert_eq!(b.len(), 2);
        for bad in [
            "",
            "127.0.0.1:1",
            "http://127.0.0.1:1",
            "tcp://nohost",
            "tcp://",
        ] {
            assert_eq!(parse_discovery(bad).unwrap_err().code(), -3000, "{bad}");
        }
    }

    #[test]
    fn a_tag_grants_only_its_blob_operation_id_and_time() {
        const KEY: TagKey = [7, 11];
        let blob = (3, 4096, 512);
        let t = blob_tag(&KEY, blob, true, 42, 10_000);
        assert!(tag_grants(&KEY, blob, true, &t, 9_999));
        // Expired at its expiry and after.
        assert!(!tag_grants(&KEY, blob, true, &t, 10_000));
        assert!(!tag_grants(&KEY, blob, true, &t, u64::MAX));
        // Any field changed is refused.
        assert!(!tag_grants(&KEY, (4, 4096, 512), true, &t, 0));
        assert!(!tag_grants(&KEY, (3, 0, 512), true, &t, 0));
        assert!(!tag_grants(&KEY, (3, 4096, 511), true, &t, 0));
        assert!(!tag_grants(&KEY, blob, false, &t, 0));
        assert!(!tag_grants(&[7, 12], blob, true, &t, 0));
        let other_put = Tag { id: 43, ..t };
        assert!(!tag_grants(&KEY, blob, true, &other_put, 0));
        let later = Tag {
            expires_ms: 20_000,
            ..t
        };
        assert!(!tag_grants(&KEY, blob, true, &later, 0));
        for bit in [0, 63, 64, 127] {
            let flipped = Tag {
                mac: t.mac ^ (1u128 << bit),
                ..t
            };
            assert!(!tag_grants(&KEY, blob, true, &flipped, 0));
        }
        // A read tag of the same put id does not write, and the other way round.
        let r = blob_tag(&KEY, blob, false, 42, 10_000);
        assert_ne!(r.mac, t.mac);
        assert!(tag_grants(&KEY, blob, false, &r, 0));
    }
}
