//! The async `ObjectStore`: every call of the C++ `ObjectStore` API, on slices.

use std::future::Future;

use futures::future::join_all;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use memcache_core::Medium;
use memcache_core::{
    CopyDirection, Error, Key, KeyInfo, LocalServiceId, ReplicateConfig, Result, MAX_BATCH_OP_COUNT,
};
use memcache_local::check_room;
use memcache_proto::{check_evict_media, check_prefetch_media, TierMove};
use memcache_proto::{Located, Tag};

/// Least time `evict` and `prefetch` wait (see [`ObjectStore::tier_move_wait`]).
/// Objects up to this size, in an in-process pool and mapped here, are read under the
/// store's lock instead of under a lease (see `get_with`).
const IN_LOCK_READ_MAX: u64 = 64 << 10;
/// Objects up to this size put to an in-process pool are written under the store's
/// lock, between their allocation and commit: one lock taken instead of two.
const IN_LOCK_WRITE_MAX: u64 = 64 << 10;

const MIN_TIER_MOVE_WAIT: Duration = Duration::from_secs(10);
/// Pause between two asks of a waiting `evict` or `prefetch`.
const TIER_MOVE_POLL: Duration = Duration::from_millis(20);
use memcache_proto::{parse_discovery, MetaLink};

use crate::config::{ClientConfig, TransportKind};
use crate::device::{stage_in, DeviceBuf, Dst, Src};
use crate::embedded::EmbeddedPool;
use crate::meta_client::MetaClient;
use crate::session::{Copies, Local, Session};
use arc_swap::ArcSwapOption;

/// A client of the pool. Create it, `init` it, use it from any number of tasks, and
/// `tear_down` it; calls outside that window answer -3019.
pub struct ObjectStore {
    config: ClientConfig,
    pool: Option<Arc<EmbeddedPool>>,
    /// Loaded on every operation from every thread: an `ArcSwap` reads it without
    /// writing to memory the threads share (a lock or a reference count would).
    session: ArcSwapOption<Session>,
}

pub(crate) fn all<T: Clone>(n: usize, e: Error) -> Vec<Result<T>> {
    vec![Err(e); n]
}

/// `direct` must fit the call: a put or a get, of device buffers (L2G, G2L) or of host
/// ones (H2G, G2H).
fn check_direction(direct: CopyDirection, put: bool, device: bool) -> Result<()> {
    if direct.is_put() != put {
        return Err(Error::invalid(format!(
            "copy direction {direct:?} does not fit a {}",
            if put { "put" } else { "get" }
        )));
    }
    if direct.is_device() != device {
        return Err(Error::invalid(format!(
            "copy direction {direct:?} does not fit {} buffers{}",
            if device { "device" } else { "host" },
            if device {
                ""
            } else {
                " (device buffers go through the *_device calls)"
            }
        )));
    }
    Ok(())
}

/// Validates a batch's shape; `Err` applies to every key. A batch of any size is
/// fine: calls split what is above the wire limit (`MAX_BATCH_OP_COUNT` keys) into
/// chunks of at most that many, run in order.
pub(crate) fn check_batch(keys: usize, buffers: usize) -> Result<()> {
    if keys != buffers {
        return Err(Error::invalid(format!(
            "{keys} keys but {buffers} buffer entries"
        )));
    }
    Ok(())
}

/// The keys one call to the meta service may carry.
pub(crate) const CHUNK: usize = MAX_BATCH_OP_COUNT;

/// One small object from host memory into an in-process pool whose replicas this
/// process maps: allocated, written and committed while the store stays locked.
/// `None` where the general path must put it (another pool, a large object, a
/// replica not mapped here).
fn put_in_lock(
    session: &Session,
    key: &[u8],
    srcs: &[&[u8]],
    config: &ReplicateConfig,
) -> Option<Result<()>> {
    let MetaClient::Embedded(pool) = &session.meta else {
        return None;
    };
    let len: u64 = srcs.iter().map(|s| s.len() as u64).sum();
    if len == 0 || len > IN_LOCK_WRITE_MAX {
        return None;
    }
    if let Err(e) = Key::check(key) {
        return Some(Err(e));
    }
    let now = pool.clock().now_ms();
    let mut meta = pool.meta();
    let write = |blobs: &[memcache_core::Blob]| {
        blobs
            .iter()
            .try_for_each(|b| session.transport.write_blob(b, srcs))
    };
    if let Some(done) = meta.put_now(key, len, config, now, |s| session.maps_segment(s), write) {
        return Some(done);
    }
    let key = match Key::new(key) {
        Ok(k) => k,
        Err(e) => return Some(Err(e)),
    };
    let a = match meta
        .alloc_leased(vec![(key.clone(), len)], config, 0, now)
        .pop()?
    {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    let mapped = a.blobs.iter().all(|b| session.maps(b));
    let written = mapped.then(|| write(&a.blobs));
    match written {
        Some(Ok(())) => Some(
            meta.commit(vec![(key, a.put_id)], now)
                .pop()
                .unwrap_or(Err(Error::UnmatchedRetcode)),
        ),
        other => {
            meta.abort(vec![(key, a.put_id)], now);
            other
        }
    }
}

/// A small object of an in-process pool whose memory this process maps, read under the
/// store's read lock: that costs less than a lease taken and released, and lets readers
/// copy in parallel. `read(size, blob)` reads one replica, or answers `None` for the
/// next; the object is looked up by its bytes (no key is made) and marked as read for
/// the eviction policy. `None` where the general path must read it.
fn read_now<R>(
    session: &Session,
    key: &[u8],
    mut read: impl FnMut(u64, &memcache_core::Blob) -> Option<Result<R>>,
) -> Option<Result<R>> {
    let MetaClient::Embedded(pool) = &session.meta else {
        return None;
    };
    let now = pool.clock().now_ms();
    let done = pool.meta_read().read_now(key, now, |size, blobs| {
        if size > IN_LOCK_READ_MAX {
            return None;
        }
        blobs.iter().find_map(|b| read(size, b))
    });
    match done {
        Some(Ok(Some(done))) => {
            if let Some(mut meta) = pool.try_meta() {
                meta.touch(key);
            }
            Some(done)
        }
        Some(Err(e)) => Some(Err(e)),
        _ => None,
    }
}

/// Parses the keys; invalid ones get their error in `results` and are left out.
pub(crate) fn parse_keys<K: AsRef<[u8]>, T>(
    keys: &[K],
    results: &mut [Result<T>],
) -> Vec<(usize, Key)> {
    let mut valid = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        match Key::new(k) {
            Ok(key) => valid.push((i, key)),
            Err(e) => results[i] = Err(e),
        }
    }
    valid
}

impl ObjectStore {
    /// A store that joins this process's embedded pool at `init`.
    pub fn new(config: ClientConfig) -> Self {
        ObjectStore {
            config,
            pool: None,
            session: ArcSwapOption::empty(),
        }
    }

    /// A store on a given embedded pool (tests use it for a private pool and clock).
    pub fn with_pool(config: ClientConfig, pool: Arc<EmbeddedPool>) -> Self {
        ObjectStore {
            config,
            pool: Some(pool),
            session: ArcSwapOption::empty(),
        }
    }

    pub(crate) fn session(&self) -> Result<SessionRef> {
        let session = self.session.load();
        match *session {
            Some(_) => Ok(SessionRef(session)),
            None => Err(Error::ClientNotInitialized),
        }
    }

    /// Connects to the pool. With `init_bm` this client also starts a local service that
    /// contributes `config.local.dram_size` bytes of DRAM; without, it is a pure client.
    pub async fn init(&self, device_id: u32, init_bm: bool) -> Result<()> {
        if self.session.load().is_some() {
            return Err(Error::RepeatCall("init on an initialized store".into()));
        }
        let (meta, transport) = match (&self.pool, &self.config.discovery_url) {
            (Some(pool), _) => (MetaClient::Embedded(pool.clone()), pool.transport().clone()),
            (None, None) => {
                let pool = EmbeddedPool::shared(&self.config.meta)?;
                let transport = pool.transport().clone();
                (MetaClient::Embedded(pool), transport)
            }
            (None, Some(url)) => (self.connect(url).await?, Arc::default()),
        };
        let local = if init_bm {
            let mut config = self.config.local.clone();
            config.device_id = device_id;
            Some(Local::start(&meta, &config).await?)
        } else {
            None
        };
        let force_tcp = self.config.transport == Some(TransportKind::Tcp);
        let copies = Copies::new(self.config.write_threads, self.config.read_threads);
        let session = Arc::new(Session::new(meta, transport, local, force_tcp, copies));
        let raced = self
            .session
            .compare_and_swap(&None::<Arc<Session>>, Some(session.clone()))
            .is_some();
        if raced {
            Self::leave(&session).await;
            return Err(Error::RepeatCall("init raced with another init".into()));
        }
        Ok(())
    }

    /// A link to the meta service(s) of the discovery URL, connected once to report an
    /// unreachable service at `init`.
    async fn connect(&self, url: &str) -> Result<MetaClient> {
        let timeout = Duration::from_millis(self.config.timeout_ms.max(1));
        if let Some(tls) = self.config.local.tls.as_ref().filter(|t| t.enable) {
            // One identity per process: the first one set stays.
            if memcache_tls::client().is_none() {
                memcache_tls::set_client(Some(tls.client()?));
            }
        }
        let link = MetaLink::connect(parse_discovery(url)?, timeout).await?;
        Ok(MetaClient::Remote(Arc::new(link)))
    }

    /// Disconnects. A local service this client started leaves the pool, and objects
    /// that had their only replica there go with it.
    pub async fn tear_down(&self) -> Result<()> {
        let session = self.session.swap(None).ok_or(Error::ClientNotInitialized)?;
        session.release_finished().await;
        Self::leave(&session).await;
        Ok(())
    }

    async fn leave(session: &Session) {
        session.leave().await
    }

    /// Leaves the pool when the store is dropped without `tear_down`, so a forgotten
    /// store does not keep its segment in a pool other clients still use.
    fn leave_now(session: &Session) {
        let mut leaving = std::pin::pin!(Self::leave(session));
        let mut cx = Context::from_waker(Waker::noop());
        // The embedded pool answers at once; a pool that would make this wait notices
        // the service's silence instead.
        if leaving.as_mut().poll(&mut cx).is_pending() {
            tracing::warn!("dropped without tear_down; the pool will notice the silence");
        }
    }

    /// Writes what the local service this client started holds in memory to its SSD
    /// tier, within `timeout`, and stops the tier (call it on the way out, so a restart
    /// finds everything). True when nothing was left; also true without a tier.
    pub async fn flush_to_ssd(&self, timeout: Duration) -> Result<bool> {
        match &self.session()?.local {
            Some(local) => Ok(local.flush_to_ssd(timeout).await),
            None => Ok(true),
        }
    }

    /// The id of the local service this client started (`init_bm = true`).
    pub fn get_local_service_id(&self) -> Result<LocalServiceId> {
        match &self.session()?.local {
            Some(local) => local.id(),
            None => Err(Error::NotConnectedToLocal),
        }
    }

    /// Caps the bytes the pool's memory holds (memcached's `cache_memlimit`): puts past
    /// the cap evict first. Only a pool of this process's own can be capped; the
    /// memory of a meta service's pool is its operators'. Refused below what the pool
    /// holds now.
    pub fn set_memory_limit(&self, bytes: u64) -> Result<()> {
        match &self.session()?.meta {
            MetaClient::Embedded(pool) => pool.meta().set_memory_limit(bytes),
            MetaClient::Remote(_) => Err(Error::invalid(
                "the memory of a pool with a meta service is not set by its clients",
            )),
        }
    }

    /// Records a user region for zero-copy transfers. The shared-memory data plane
    /// copies from any buffer; registration is where pinning transports pin.
    pub fn register_buffer(&self, buf: &[u8]) -> Result<()> {
        self.register_range(buf.as_ptr() as usize, buf.len())
    }

    pub fn unregister_buffer(&self, buf: &[u8]) -> Result<()> {
        self.unregister_range(buf.as_ptr() as usize, buf.len())
    }

    pub(crate) fn register_range(&self, addr: usize, len: usize) -> Result<()> {
        let session = self.session()?;
        if addr == 0 || len == 0 {
            return Err(Error::invalid(
                "register_buffer needs a non-null, non-empty region",
            ));
        }
        let end = addr
            .checked_add(len)
            .ok_or_else(|| Error::invalid("region wraps around the address space"))?;
        let mut buffers = session.buffers.lock().unwrap_or_else(|e| e.into_inner());
        if buffers.get(&addr) == Some(&len) {
            return Err(Error::RepeatCall("region is already registered".into()));
        }
        let before = buffers.range(..end).next_back();
        if before.is_some_and(|(&a, &l)| a + l > addr) {
            return Err(Error::invalid("region overlaps a registered one"));
        }
        buffers.insert(addr, len);
        Ok(())
    }

    pub(crate) fn unregister_range(&self, addr: usize, len: usize) -> Result<()> {
        let session = self.session()?;
        let mut buffers = session.buffers.lock().unwrap_or_else(|e| e.into_inner());
        match buffers.get(&addr) {
            Some(&l) if l == len => {
                buffers.remove(&addr);
                Ok(())
            }
            _ => Err(Error::invalid("region was not registered with this size")),
        }
    }

    /// Bytes in registered regions.
    pub fn registered_bytes(&self) -> Result<usize> {
        let session = self.session()?;
        let buffers = session.buffers.lock().unwrap_or_else(|e| e.into_inner());
        Ok(buffers.values().sum())
    }

    /// What this client holds of other local services: segments mapped or imported,
    /// idle TCP connections. All bounded: mappings, imports and connections of
    /// services that are gone are dropped at the next refresh of the endpoints, idle
    /// connections per service are capped and time out.
    pub fn data_plane_held(&self) -> Result<crate::DataPlaneHeld> {
        Ok(self.session()?.held())
    }

    // ---- puts ----

    pub async fn put(&self, key: impl AsRef<[u8]>, data: &[u8]) -> Result<()> {
        self.put_from(
            key,
            data,
            CopyDirection::PUT_DEFAULT,
            &ReplicateConfig::default(),
        )
        .await
    }

    pub async fn put_from(
        &self,
        key: impl AsRef<[u8]>,
        buf: &[u8],
        direct: CopyDirection,
        config: &ReplicateConfig,
    ) -> Result<()> {
        self.put_from_layers(key, &[buf], direct, config).await
    }

    pub async fn put_from_layers(
        &self,
        key: impl AsRef<[u8]>,
        layers: &[&[u8]],
        direct: CopyDirection,
        config: &ReplicateConfig,
    ) -> Result<()> {
        let mut r = self
            .put_batch(&[key], &[Src::Host(layers)], direct, config)
            .await;
        r.pop().expect("one result per key")
    }

    pub async fn batch_put_from<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        bufs: &[&[u8]],
        direct: CopyDirection,
        config: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        let objects: Vec<Src> = bufs
            .iter()
            .map(|b| Src::Host(std::slice::from_ref(b)))
            .collect();
        self.put_batch(keys, &objects, direct, config).await
    }

    /// Stores each key's layers, concatenated, as one object.
    pub async fn batch_put_from_layers<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        layers: &[&[&[u8]]],
        direct: CopyDirection,
        config: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        let objects: Vec<Src> = layers.iter().map(|l| Src::Host(l)).collect();
        self.put_batch(keys, &objects, direct, config).await
    }

    /// Stores each key's device buffers, concatenated, as one object (L2G): one DMA
    /// copy per buffer into memory this process maps, or through a host buffer for a
    /// replica reached over TCP. Without a device runtime: -3000, with the reason.
    pub async fn batch_put_from_device<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        objects: &[&[DeviceBuf]],
        config: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        if let Err(e) = crate::device::runtime() {
            return all(keys.len(), e);
        }
        let objects: Vec<Src> = objects.iter().map(|o| Src::Device(o)).collect();
        self.put_batch(keys, &objects, CopyDirection::L2G, config)
            .await
    }

    /// Chunks of at most `CHUNK` keys, one after another, each a whole put.
    async fn put_batch<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        objects: &[Src<'_>],
        direct: CopyDirection,
        config: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        let n = keys.len();
        let session = match self.session() {
            Ok(s) => s,
            Err(e) => return all(n, e),
        };
        let device = matches!(objects.first(), Some(Src::Device(_)));
        if let Err(e) = check_batch(n, objects.len())
            .and(check_direction(direct, true, device))
            .and(config.validated_replicas().map(drop))
        {
            return all(n, e);
        }
        // The replicas go to the medium of the source while it has room: device
        // memory to HBM, host memory to DRAM.
        let source = if device && session.device_puts_prefer_hbm() {
            Medium::Hbm
        } else {
            Medium::Dram
        };
        let config = &ReplicateConfig {
            medium: config.medium.or(Some(source)),
            ..config.clone()
        };
        if let ([key], [Src::Host(srcs)]) = (keys, objects) {
            if let Some(done) = put_in_lock(&session, key.as_ref(), srcs, config) {
                return vec![done];
            }
        }
        let mut results = Vec::with_capacity(n);
        for (ks, objs) in keys.chunks(CHUNK).zip(objects.chunks(CHUNK)) {
            results.extend(self.put_chunk(&session, ks, objs, config).await);
        }
        results
    }

    /// alloc (one meta call) → write every replica → commit (one meta call).
    async fn put_chunk<K: AsRef<[u8]>>(
        &self,
        session: &Arc<Session>,
        keys: &[K],
        objects: &[Src<'_>],
        config: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        let n = keys.len();
        let mut results: Vec<Result<()>> = vec![Ok(()); n];
        let mut wanted = parse_keys(keys, &mut results);
        wanted.retain(|&(i, _)| {
            let empty = objects[i].len() == 0;
            if empty {
                results[i] = Err(Error::invalid("object of 0 bytes"));
            }
            !empty
        });
        let items = wanted
            .iter()
            .map(|(i, k)| (k.clone(), objects[*i].len()))
            .collect();
        // A pool short of room evicts: this client's finished gets should not hold it.
        session.release_finished().await;
        let allocations = session
            .meta
            .alloc(items, config, 0, session.maps_host())
            .await;
        let mut placed = Vec::with_capacity(wanted.len());
        for ((i, key), allocation) in wanted.into_iter().zip(allocations) {
            match allocation {
                Ok(a) => placed.push((i, key, a)),
                Err(e) => results[i] = Err(e),
            }
        }
        // Replicas in memory this process maps: one batch of copies over the write
        // threads. The rest over TCP, every one in flight at once so that the round
        // trips overlap.
        let maps: Vec<Vec<bool>> = placed
            .iter()
            .map(|(i, _, a)| {
                let device = matches!(objects[*i], Src::Device(_));
                let direct = |b| match device {
                    true => session.reaches_from_device(b),
                    false => session.maps(b),
                };
                a.blobs.iter().map(direct).collect()
            })
            .collect();
        let (mut mapped, mut owner) = (Vec::new(), Vec::new());
        let (mut from_device, mut device_owner) = (Vec::new(), Vec::new());
        for (p, ((i, _, a), m)) in placed.iter().zip(&maps).enumerate() {
            for (b, _) in a.blobs.iter().zip(m).filter(|(_, m)| **m) {
                match objects[*i] {
                    Src::Host(srcs) => {
                        mapped.push((*b, srcs));
                        owner.push(p);
                    }
                    Src::Device(bufs) => {
                        from_device.push((*b, bufs));
                        device_owner.push(p);
                    }
                }
            }
        }
        let mut written: Vec<Result<()>> = vec![Ok(()); placed.len()];
        let host = owner.into_iter().zip(session.write_mapped_batch(&mapped));
        let device = device_owner
            .into_iter()
            .zip(session.device_mapped_batch(&from_device, true));
        for (p, r) in host.chain(device) {
            if r.is_err() {
                written[p] = r;
            }
        }
        // Only objects with a replica over TCP need a future: a batch whose replicas
        // are all mapped here costs no task per object.
        let writes = placed
            .iter()
            .zip(&maps)
            .enumerate()
            .filter(|(_, (_, m))| m.iter().any(|m| !m))
            .map(|(p, ((i, _, a), m))| {
                // A device object reaches TCP replicas through one host copy of it.
                let staged = match objects[*i] {
                    Src::Device(bufs) => session.stage_out(bufs, a.blobs[0].len).map(Some),
                    Src::Host(_) => Ok(None),
                };
                async move {
                    let write = async {
                        let staged = staged?;
                        let one: [&[u8]; 1];
                        let srcs: &[&[u8]] = match (&staged, objects[*i]) {
                            (Some(s), _) => {
                                one = [s.as_slice()];
                                &one
                            }
                            (None, Src::Host(srcs)) => srcs,
                            (None, Src::Device(_)) => &[],
                        };
                        let mut remote = Vec::new();
                        for (j, (b, mapped)) in a.blobs.iter().zip(m).enumerate() {
                            if !mapped {
                                let tag = a.tags.get(j).copied().unwrap_or_default();
                                remote.push(session.write(b, tag, srcs));
                            }
                        }
                        join_all(remote).await.into_iter().collect::<Result<()>>()
                    };
                    (p, write.await)
                }
            });
        for (p, r) in join_all(writes).await {
            if written[p].is_ok() {
                written[p] = r;
            }
        }
        let mut commits = Vec::with_capacity(placed.len());
        let mut committed_slots = Vec::with_capacity(placed.len());
        let mut aborts = Vec::new();
        for ((i, key, a), w) in placed.into_iter().zip(written) {
            match w {
                Ok(()) => {
                    commits.push((key, a.put_id));
                    committed_slots.push(i);
                }
                Err(e) => {
                    aborts.push((key, a.put_id));
                    results[i] = Err(e);
                }
            }
        }
        if !aborts.is_empty() {
            session.meta.abort(aborts).await;
        }
        if !commits.is_empty() {
            let done = session.meta.commit(commits).await;
            for (i, r) in committed_slots.into_iter().zip(done) {
                results[i] = r;
            }
        }
        results
    }

    // ---- gets ----

    /// Reads the whole object into `buf`, which must be at least as large; returns the
    /// object's size. On any error `buf` is untouched.
    pub async fn get_into(
        &self,
        key: impl AsRef<[u8]>,
        buf: &mut [u8],
        direct: CopyDirection,
    ) -> Result<u64> {
        self.get_into_layers(key, &mut [buf], direct).await
    }

    /// Scatters the object over `layers` in order (normally the sizes it was put with).
    pub async fn get_into_layers(
        &self,
        key: impl AsRef<[u8]>,
        layers: &mut [&mut [u8]],
        direct: CopyDirection,
    ) -> Result<u64> {
        let mut r = self
            .get_batch(&[key], &mut [Dst::Host(layers)], direct)
            .await;
        r.pop().expect("one result per key")
    }

    pub async fn batch_get_into<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        bufs: &mut [&mut [u8]],
        direct: CopyDirection,
    ) -> Vec<Result<u64>> {
        let mut objects: Vec<Dst> = bufs
            .iter_mut()
            .map(|b| Dst::Host(std::slice::from_mut(b)))
            .collect();
        self.get_batch(keys, &mut objects, direct).await
    }

    pub async fn batch_get_into_layers<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        layers: &mut [&mut [&mut [u8]]],
        direct: CopyDirection,
    ) -> Vec<Result<u64>> {
        let mut objects: Vec<Dst> = layers.iter_mut().map(|l| Dst::Host(l)).collect();
        self.get_batch(keys, &mut objects, direct).await
    }

    /// Scatters each key's object over its device buffers in order (G2L): one DMA copy
    /// per buffer out of memory this process maps, or through a host buffer for a
    /// replica reached over TCP. Without a device runtime: -3000, with the reason.
    pub async fn batch_get_into_device<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        objects: &[&[DeviceBuf]],
    ) -> Vec<Result<u64>> {
        if let Err(e) = crate::device::runtime() {
            return all(keys.len(), e);
        }
        let mut objects: Vec<Dst> = objects.iter().map(|o| Dst::Device(o)).collect();
        self.get_batch(keys, &mut objects, CopyDirection::G2L).await
    }

    /// The object's bytes in a new vector.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Vec<u8>> {
        self.get_with(key, |n| Ok(vec![0u8; n])).await
    }

    /// The object's bytes in a buffer `alloc` makes once the size is known, so a front
    /// end can read straight into its own object (a Python `bytes`) with no second copy.
    /// `alloc(n)` returns a buffer of `n` bytes.
    pub async fn get_with<B: AsMut<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        alloc: impl FnOnce(usize) -> Result<B>,
    ) -> Result<B> {
        let session = self.session()?;
        let key = key.as_ref();
        Key::check(key)?;
        let mut alloc = Some(alloc);
        let read = read_now(&session, key, |size, b| {
            let alloc = alloc.take_if(|_| session.maps(b))?;
            Some(alloc(size as usize).and_then(|mut out| {
                let read = session.read_mapped(b, &mut [out.as_mut()]);
                read.expect("mapped").map(|()| out)
            }))
        });
        if let Some(done) = read {
            return done;
        }
        let alloc = alloc.expect("not taken by a read that answered");
        let keys = [Key::new(key)?];
        let tcp = session.maps_host();
        let located = session
            .meta
            .lookup(&keys, 0, tcp, session.take_finished())
            .await
            .pop()
            .expect("one result")?;
        let r = match alloc(located.size as usize) {
            Ok(mut out) => {
                let read = self
                    .read_object(&session, &located, &mut [out.as_mut()])
                    .await;
                read.map(|()| out)
            }
            Err(e) => Err(e),
        };
        let [key] = keys;
        session.release_after(vec![(key, located.lease)]);
        r
    }

    /// The object's bytes appended to `out`; their length. A small object of an
    /// in-process pool is copied straight into `out`'s spare room, with no zeroed room
    /// made for it first (the gateway's replies).
    pub async fn get_appended(&self, key: impl AsRef<[u8]>, out: &mut Vec<u8>) -> Result<usize> {
        let session = self.session()?;
        let key = key.as_ref();
        Key::check(key)?;
        let start = out.len();
        let read = read_now(&session, key, |_, b| session.append_mapped(b, out));
        match read {
            Some(done) => done.map(|()| out.len() - start),
            None => self
                .get_with(key, |n| {
                    out.resize(start + n, 0);
                    Ok(&mut out[start..])
                })
                .await
                .map(|b| b.len()),
        }
    }

    /// Chunks of at most `CHUNK` keys, one after another (so where destinations of
    /// two chunks overlap, the later key's bytes win), each a whole get.
    async fn get_batch<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        objects: &mut [Dst<'_, '_>],
        direct: CopyDirection,
    ) -> Vec<Result<u64>> {
        let n = keys.len();
        let session = match self.session() {
            Ok(s) => s,
            Err(e) => return all(n, e),
        };
        let device = matches!(objects.first(), Some(Dst::Device(_)));
        if let Err(e) = check_batch(n, objects.len()).and(check_direction(direct, false, device)) {
            return all(n, e);
        }
        let mut results = Vec::with_capacity(n);
        for (ks, objs) in keys.chunks(CHUNK).zip(objects.chunks_mut(CHUNK)) {
            results.extend(self.get_chunk(&session, ks, objs).await);
        }
        results
    }

    /// lookup (one meta call, leases the objects; the leases of the gets before it
    /// end there too) → read.
    async fn get_chunk<K: AsRef<[u8]>>(
        &self,
        session: &Arc<Session>,
        keys: &[K],
        objects: &mut [Dst<'_, '_>],
    ) -> Vec<Result<u64>> {
        let n = keys.len();
        let mut results: Vec<Result<u64>> = vec![Ok(0); n];
        let wanted = parse_keys(keys, &mut results);
        let lookup_keys: Vec<Key> = wanted.iter().map(|(_, k)| k.clone()).collect();
        let located = session
            .meta
            .lookup(
                &lookup_keys,
                0,
                session.maps_host(),
                session.take_finished(),
            )
            .await;
        let mut leased = Vec::with_capacity(wanted.len());
        let mut found = Vec::with_capacity(wanted.len());
        for ((i, key), f) in wanted.into_iter().zip(located) {
            match f {
                Ok(loc) => {
                    leased.push((key, loc.lease));
                    found.push((i, loc));
                }
                Err(e) => results[i] = Err(e),
            }
        }
        // Objects whose nearest replica this process maps: one batch of copies over the
        // read threads. The rest, and any such read that failed, through `read_object`,
        // all in flight at once. `found` is in index order, so one pass over `objects`
        // hands each read its own destination slices.
        let mut done = vec![false; objects.len()];
        {
            let (mut jobs, mut slots) = (Vec::new(), Vec::new());
            let (mut to_device, mut device_slots) = (Vec::new(), Vec::new());
            let mut next = found.iter().peekable();
            for (i, dst) in objects.iter_mut().enumerate() {
                if let Some((_, loc)) = next.next_if(|(j, _)| *j == i) {
                    let first = loc.blobs.iter().min_by_key(|b| session.distance(b));
                    let direct = |b: &&memcache_core::Blob| match dst {
                        Dst::Device(_) => session.reaches_from_device(b),
                        Dst::Host(_) => session.maps(b),
                    };
                    if let Some(blob) = first.filter(direct) {
                        match dst {
                            Dst::Host(dst) => {
                                jobs.push((*blob, &mut **dst));
                                slots.push((i, loc.size));
                            }
                            Dst::Device(bufs) => {
                                to_device.push((*blob, *bufs));
                                device_slots.push((i, loc.size));
                            }
                        }
                    }
                }
            }
            let host = slots.into_iter().zip(session.read_mapped_batch(&mut jobs));
            let device = device_slots
                .into_iter()
                .zip(session.device_mapped_batch(&to_device, false));
            for ((i, size), r) in host.chain(device) {
                if r.is_ok() {
                    done[i] = true;
                    results[i] = Ok(size);
                }
            }
        }
        let mut next = found.iter().peekable();
        let mut reads = Vec::with_capacity(found.len());
        for (i, dst) in objects.iter_mut().enumerate() {
            let Some((_, loc)) = next.next_if(|(j, _)| *j == i) else {
                continue;
            };
            if !done[i] {
                reads.push(async move {
                    let r = match dst {
                        Dst::Host(dst) => self.read_object(session, loc, dst).await,
                        // A device destination fed from a replica over TCP: through
                        // one host copy of the object.
                        Dst::Device(bufs) => {
                            let staged = crate::device::check_fit(bufs, loc.size, false)
                                .and_then(|()| session.staged(loc.size));
                            match staged {
                                Ok(mut staged) => {
                                    let mut dst = [staged.as_mut_slice()];
                                    self.read_object(session, loc, &mut dst)
                                        .await
                                        .and_then(|()| stage_in(bufs, staged.as_slice()))
                                }
                                Err(e) => Err(e),
                            }
                        }
                    };
                    (i, r.map(|()| loc.size))
                });
            }
        }
        for (i, r) in join_all(reads).await {
            results[i] = r;
        }
        session.release_after(leased);
        results
    }

    /// Reads from the nearest replica that answers: this client's own local service,
    /// then others on this host, then the rest.
    async fn read_object(
        &self,
        session: &Session,
        loc: &Located,
        dsts: &mut [&mut [u8]],
    ) -> Result<()> {
        check_room(dsts, loc.size)?;
        let tags = loc
            .tags
            .iter()
            .copied()
            .chain(std::iter::repeat(Tag::default()));
        let mut order: Vec<_> = loc.blobs.iter().zip(tags).collect();
        order.sort_by_key(|(b, _)| session.distance(b));
        let mut last = Error::ObjectNotFound;
        for (blob, tag) in order {
            match session.read(blob, tag, dsts).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(?blob, error = %e, "replica unreadable, trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }

    // ---- removal and queries ----

    pub async fn remove(&self, key: impl AsRef<[u8]>) -> Result<()> {
        self.batch_remove(&[key]).await.pop().expect("one result")
    }

    pub async fn batch_remove<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Result<()>> {
        // A lease of this client's own must not refuse its remove (-3104): the
        // finished gets' leases ride the call.
        self.keyed(keys, |s, ks| async move {
            let release = s.settled_finished().await;
            s.meta.remove(ks, release).await
        })
        .await
    }

    pub async fn is_exist(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.batch_is_exist(&[key]).await.pop().expect("one result")
    }

    pub async fn batch_is_exist<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Result<bool>> {
        self.keyed(keys, |s, ks| async move { s.meta.exists(&ks).await })
            .await
    }

    /// Up to `limit` stored keys starting with `prefix`, in byte order (for operators;
    /// engines address objects by key).
    pub async fn list_keys(&self, prefix: impl AsRef<[u8]>, limit: u32) -> Result<Vec<Key>> {
        self.session()?.meta.list_keys(prefix.as_ref(), limit).await
    }

    pub async fn get_key_info(&self, key: impl AsRef<[u8]>) -> Result<KeyInfo> {
        self.batch_get_key_info(&[key])
            .await
            .pop()
            .expect("one result")
    }

    pub async fn batch_get_key_info<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Result<KeyInfo>> {
        self.keyed(keys, |s, ks| async move {
            // Objects this client leased for reading in place: their leases know.
            if let Some(infos) = s.grants.leased_info(&ks) {
                return infos.into_iter().map(Ok).collect();
            }
            match s.meta.key_info(&ks).await {
                Ok(infos) => infos
                    .into_iter()
                    .map(|mut info| match Error::from_code(info.status) {
                        None => {
                            s.grants.address(&mut info);
                            Ok(info)
                        }
                        Some(e) => Err(e),
                    })
                    .collect(),
                Err(e) => vec![Err(e); ks.len()],
            }
        })
        .await
    }

    // ---- pool-wide operations of 1.3.0 ----

    /// Removes every object of the pool (1.3.0 `remove_all`) in one decision of the
    /// meta service; returns how many it removed. An object a reader holds at that
    /// moment stays, as `remove` leaves it (-3104 there), and so do puts not yet
    /// committed and objects being copied back from SSD into DRAM. -3017 when the meta group lost its leader meanwhile (the outcome is
    /// unknown; the call is not repeated).
    pub async fn remove_all(&self) -> Result<usize> {
        let session = self.session()?;
        session.release_finished().await;
        session.meta.remove_all().await
    }

    /// Moves each object from DRAM to SSD (1.3.0 `evict`; only `src` DRAM, `dst` SSD,
    /// otherwise every key gets -3000): waits until its SSD tier has written it (it is
    /// handed to the tier before the tier's backlog) and no reader holds it, then
    /// drops its DRAM replicas; afterwards it is on SSD only and gets read it from
    /// there. One result per key: -3007 not found, -3013 when no local service that
    /// holds it has an SSD tier, -3104 still held by a reader, -3004 not on SSD in time
    /// (see [`Self::tier_move_wait`]). An object only on SSD already is Ok.
    pub async fn evict<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        src: Medium,
        dst: Medium,
    ) -> Vec<Result<()>> {
        if let Err(e) = check_evict_media(src, dst) {
            return all(keys.len(), e);
        }
        self.tier_move(keys, src, dst, true).await
    }

    /// Copies each object from SSD back into DRAM (1.3.0 `prefetch`; only `src` SSD,
    /// `dst` DRAM, otherwise -3000), colder objects making room; waits until the DRAM
    /// replica is readable. One result per key: -3007 not found, -3004 not back in
    /// time. An object in DRAM already is Ok.
    pub async fn prefetch<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        src: Medium,
        dst: Medium,
    ) -> Vec<Result<()>> {
        if let Err(e) = check_prefetch_media(src, dst) {
            return all(keys.len(), e);
        }
        self.tier_move(keys, src, dst, false).await
    }

    /// How long `evict` and `prefetch` wait for the SSD tier and for readers: the
    /// client's `timeout_ms`, at least 10 s (a reader's lease lasts up to 5 s).
    pub fn tier_move_wait(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms).max(MIN_TIER_MOVE_WAIT)
    }

    /// Asks the meta service again, with the keys still waiting, until every key is
    /// answered or the wait is over.
    async fn tier_move<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        src: Medium,
        dst: Medium,
        evict: bool,
    ) -> Vec<Result<()>> {
        let give_up = tokio::time::Instant::now() + self.tier_move_wait();
        self.keyed(keys, |s, ks| async move {
            let mut out: Vec<Result<()>> = vec![Ok(()); ks.len()];
            let mut waiting: Vec<usize> = (0..ks.len()).collect();
            while !waiting.is_empty() {
                let ask: Vec<Key> = waiting.iter().map(|&i| ks[i].clone()).collect();
                s.release_finished().await;
                let answers = if evict {
                    s.meta.evict(&ask, src, dst).await
                } else {
                    s.meta.prefetch(&ask, src, dst).await
                };
                let mut still = Vec::new();
                for (i, a) in waiting.into_iter().zip(answers) {
                    out[i] = match a {
                        Ok(TierMove::Done) => Ok(()),
                        Ok(TierMove::Waiting(e)) => {
                            still.push(i);
                            Err(e)
                        }
                        Err(e) => Err(e),
                    };
                }
                waiting = still;
                if waiting.is_empty() || tokio::time::Instant::now() >= give_up {
                    break;
                }
                tokio::time::sleep(TIER_MOVE_POLL).await;
            }
            out
        })
        .await
    }

    /// Runs a per-key meta call on the valid keys, in chunks of at most `CHUNK` keys one
    /// after another, and merges the answers back in order.
    pub(crate) async fn keyed<K, T, F, Fut>(&self, keys: &[K], call: F) -> Vec<Result<T>>
    where
        K: AsRef<[u8]>,
        T: Clone,
        F: Fn(Arc<Session>, Vec<Key>) -> Fut,
        Fut: std::future::Future<Output = Vec<Result<T>>>,
    {
        let n = keys.len();
        let session = match self.session() {
            Ok(s) => s,
            Err(e) => return all(n, e),
        };
        if let Err(e) = check_batch(n, n) {
            return all(n, e);
        }
        let mut results: Vec<Result<T>> = all(n, Error::ObjectNotFound);
        let valid = parse_keys(keys, &mut results);
        for chunk in valid.chunks(CHUNK) {
            let (slots, ks): (Vec<usize>, Vec<Key>) = chunk.iter().cloned().unzip();
            for (i, r) in slots.into_iter().zip(call(session.clone(), ks).await) {
                results[i] = r;
            }
        }
        results
    }
}

/// The session an operation works in, held without a reference count of its own.
pub(crate) struct SessionRef(arc_swap::Guard<Option<Arc<Session>>>);

impl std::ops::Deref for SessionRef {
    type Target = Arc<Session>;

    fn deref(&self) -> &Arc<Session> {
        self.0
            .as_ref()
            .expect("a session is checked for before a ref is made")
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        if let Some(session) = self.session.swap(None) {
            Self::leave_now(&session);
        }
    }
}
