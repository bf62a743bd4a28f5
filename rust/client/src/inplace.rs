//! The in-place API of 1.3.0, the zero-staging path of layer-wise engines: a writer
//! gets a pool address per object (`batch_alloc`), fills it with any number of copies
//! from any thread (`batch_copy`), then commits or rolls back (`batch_write_finish`);
//! a reader leases objects (`batch_add_lease`), copies out of the addresses their key
//! info lists, and lets go (`batch_remove_lease`).
//!
//! A pool address (1.3.0's "gva") names bytes of a segment: a number this client gives
//! each segment it meets, and the offset in it. What makes an address usable is a
//! grant this client holds: its own allocation of the object, or a read lease on it. Every copy
//! is checked against the grants before a byte moves, so an address works only for
//! its object and only until its allocation is finished or has expired, or its lease
//! is released or has run out.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rustc_hash::FxHashMap;

use memcache_core::{
    Blob, BlobLocation, Error, Key, KeyInfo, LocalServiceId, Medium, ReplicateConfig, Result,
    SegmentId,
};
use memcache_local::{check_part, part_of};
use memcache_proto::{LeaseId, PutId, Tag};

use crate::device::{stage_in, total, DeviceBuf};
use crate::session::Session;
use crate::store::{all, check_batch, parse_keys, ObjectStore, CHUNK};

/// What an address range of the grant table gives access to.
#[derive(Clone)]
enum Access {
    /// An allocation of this client: copies go to every replica.
    Write,
    /// One replica of a leased object.
    Read { blob: Blob, tag: Tag },
}

#[derive(Clone)]
struct Range {
    key: Key,
    len: u64,
    access: Access,
}

/// An allocation not yet finished.
struct Pending {
    put_id: PutId,
    blobs: Vec<Blob>,
    tags: Vec<Tag>,
    gva: u64,
    until: Instant,
}

/// The read leases this client holds on one object.
struct Held {
    /// Each lease and its end, in the order they were taken: every `batch_add_lease`
    /// adds one and every `batch_remove_lease` ends one, so two readers in one process
    /// can lease and release the same object independently.
    leases: Vec<(LeaseId, Instant)>,
    gvas: Vec<u64>,
    /// The end of the longest lease.
    until: Instant,
    /// The object's size and replicas as the latest lease found them: while a lease
    /// lasts the object stays where it is.
    size: u64,
    blobs: Vec<Blob>,
}

#[derive(Default)]
struct Table {
    /// Start address → range, for every address this client may use.
    ranges: BTreeMap<u64, Range>,
    pending: FxHashMap<Key, Pending>,
    held: FxHashMap<Key, Held>,
    /// The number of each segment in this client's addresses, from 1 on.
    segments: FxHashMap<SegmentId, u64>,
    /// Grants after the last sweep of ended ones (see [`Table::sweep`]).
    swept: usize,
    /// The device of each local service, as key info reported it.
    devices: FxHashMap<LocalServiceId, u32>,
}

/// Bits of a pool address that hold the offset in its segment: segments of up to
/// 1 TiB, and 2^23 of them, so every address is positive as an `i64`.
const OFFSET_BITS: u32 = 40;

impl Table {
    /// The pool address of `offset` in `segment`: the same for as long as this client
    /// lives; 0 (never an address) when it does not fit.
    fn gva(&mut self, segment: SegmentId, offset: u64) -> u64 {
        let next = self.segments.len() as u64 + 1;
        let number = *self.segments.entry(segment).or_insert(next);
        if number >= 1 << (63 - OFFSET_BITS) || offset >= 1 << OFFSET_BITS {
            return 0;
        }
        number << OFFSET_BITS | offset
    }

    /// Adds a range, first dropping any it overlaps: those belong to grants that ended
    /// (the pool gave their bytes to this one), whose expiry was not yet noticed.
    fn insert(&mut self, gva: u64, range: Range) {
        let end = gva.saturating_add(range.len);
        let stale: Vec<u64> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|(&s, r)| s.saturating_add(r.len) > gva)
            .map(|(&s, _)| s)
            .collect();
        for s in stale {
            self.ranges.remove(&s);
        }
        self.ranges.insert(gva, range);
    }

    /// Forgets grants that ended unnoticed (a writer that never finished, a reader that
    /// never let go), once the table has doubled since the last sweep: amortised O(1),
    /// and a client that abandons grants holds at most twice the live ones.
    fn sweep(&mut self, now: Instant) {
        let grants = self.pending.len() + self.held.len();
        if grants < 2 * self.swept + 64 {
            return;
        }
        fn ended<T>(
            grants: &FxHashMap<Key, T>,
            until: fn(&T) -> Instant,
            now: Instant,
        ) -> Vec<Key> {
            let ended = grants.iter().filter(|(_, g)| now >= until(g));
            ended.map(|(k, _)| k.clone()).collect()
        }
        for k in ended(&self.pending, |p| p.until, now) {
            self.drop_pending(&k);
        }
        for k in ended(&self.held, |h| h.until, now) {
            self.drop_held(&k);
        }
        self.swept = self.pending.len() + self.held.len();
    }

    fn drop_pending(&mut self, key: &Key) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        self.ranges.remove(&p.gva);
        Some(p)
    }

    /// Ends the oldest lease on `key`, which the caller checked it holds; the key's
    /// addresses go with its last one.
    fn end_lease(&mut self, key: &Key) -> LeaseId {
        let h = self.held.get_mut(key).expect("a lease checked to be held");
        let (lease, _) = h.leases.remove(0);
        match h.leases.iter().map(|(_, end)| *end).max() {
            Some(end) => h.until = end,
            None => {
                self.drop_held(key);
            }
        }
        lease
    }

    fn drop_held(&mut self, key: &Key) -> Option<Held> {
        let h = self.held.remove(key)?;
        for g in &h.gvas {
            if self.ranges.get(g).is_some_and(|r| &r.key == key) {
                self.ranges.remove(g);
            }
        }
        Some(h)
    }

    /// What `len` bytes at `gva` may be used for now.
    fn resolve(&self, gva: u64, len: u64, now: Instant) -> Result<Target> {
        // 1.3.0's answer to an address it does not know.
        let unknown = || Error::UnmatchedKey;
        let (&start, range) = self.ranges.range(..=gva).next_back().ok_or_else(unknown)?;
        let at = gva - start;
        match at.checked_add(len) {
            Some(end) if end <= range.len => {}
            _ => return Err(unknown()),
        }
        let live = |until: Instant, grant: &str| match now < until {
            true => Ok(()),
            false => Err(Error::LeaseExpired(format!(
                "{grant} {:?} ended",
                range.key
            ))),
        };
        match &range.access {
            Access::Write => {
                let p = self.pending.get(&range.key).ok_or_else(unknown)?;
                live(p.until, "the allocation of")?;
                Ok(Target::Write {
                    blobs: p.blobs.clone(),
                    tags: p.tags.clone(),
                    at,
                })
            }
            Access::Read { blob, tag } => {
                let h = self.held.get(&range.key).ok_or_else(unknown)?;
                live(h.until, "the read lease on")?;
                Ok(Target::Read {
                    blob: *blob,
                    tag: *tag,
                    at,
                })
            }
        }
    }
}

/// Where one copy goes, as the grant table resolved it.
enum Target {
    Write {
        blobs: Vec<Blob>,
        tags: Vec<Tag>,
        at: u64,
    },
    Read {
        blob: Blob,
        tag: Tag,
        at: u64,
    },
}

impl Target {
    fn writes(&self) -> bool {
        matches!(self, Target::Write { .. })
    }
}

/// The allocations and read leases of one session.
#[derive(Default)]
pub(crate) struct Grants(Mutex<Table>);

impl Grants {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills in the pool address of each replica of `info` (its `gva_list`).
    pub fn address(&self, info: &mut KeyInfo) {
        let mut table = self.table();
        for l in &mut info.locations {
            l.gva = table.gva(l.segment, l.offset);
            table.devices.insert(l.service, l.device_id);
        }
    }

    /// The key info of objects this client holds live read leases on, from the leases:
    /// no call to the meta service, which is what an in-place reader asks right after
    /// `batch_add_lease`. `None` unless every key is leased here and the device of
    /// every replica's service is known (then the meta service answers).
    pub fn leased_info(&self, keys: &[Key]) -> Option<Vec<KeyInfo>> {
        let table = self.table();
        let now = Instant::now();
        keys.iter()
            .map(|key| {
                let h = table.held.get(key).filter(|h| now < h.until)?;
                let locations = h
                    .blobs
                    .iter()
                    .zip(&h.gvas)
                    .map(|(b, &gva)| {
                        Some(BlobLocation {
                            service: b.service,
                            device_id: *table.devices.get(&b.service)?,
                            medium: b.medium,
                            segment: b.segment,
                            offset: b.offset,
                            gva,
                        })
                    })
                    .collect::<Option<Vec<BlobLocation>>>()?;
                Some(KeyInfo {
                    key: key.as_bytes().to_vec(),
                    size: h.size,
                    device_id: locations.first().map_or(0, |l| l.device_id),
                    status: 0,
                    locations,
                })
            })
            .collect()
    }
}

/// Which way a batch copy moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyWay {
    /// Into the pool (`H2G`): the addresses must be this client's allocations.
    ToPool,
    /// Out of the pool (`G2H`): the addresses must be under this client's read leases.
    FromPool,
    /// Each address's grant decides (1.3.0's `AUTO`).
    Auto,
}

/// One copy of a batch: a pool address and the caller's layers, gathered into the
/// pool or scattered out of it; host memory, or device memory (L2G / G2L).
pub enum Piece<'a> {
    From(&'a [&'a [u8]]),
    Into(&'a mut [&'a mut [u8]]),
    FromDevice(&'a [DeviceBuf]),
    IntoDevice(&'a [DeviceBuf]),
}

impl Piece<'_> {
    fn len(&self) -> u64 {
        match self {
            Piece::From(l) => l.iter().map(|s| s.len() as u64).sum(),
            Piece::Into(l) => l.iter().map(|s| s.len() as u64).sum(),
            Piece::FromDevice(l) | Piece::IntoDevice(l) => total(l),
        }
    }

    /// Whether the piece's bytes go into the pool.
    fn writes_pool(&self) -> bool {
        matches!(self, Piece::From(_) | Piece::FromDevice(_))
    }
}

/// A client's deadline for a grant the service gave for `lease_ms` from its decision:
/// counted from before the request left, so it never outlasts the service's.
fn until(asked: Instant, lease_ms: u64) -> Instant {
    asked + Duration::from_millis(lease_ms)
}

impl ObjectStore {
    /// Whether a copy at `gva` goes into the pool (an allocation of this client) or out
    /// of it (a leased object); what `CopyWay::Auto` decides by.
    pub fn writes_to_pool(&self, gva: u64) -> Result<bool> {
        let session = self.session()?;
        let table = session.grants.table();
        Ok(table.resolve(gva, 0, Instant::now())?.writes())
    }

    /// How many allocations and leased objects this client's grant table holds (for
    /// tests of its bounds).
    pub fn grants_held(&self) -> usize {
        self.session().map_or(0, |s| {
            let t = s.grants.table();
            t.pending.len() + t.held.len()
        })
    }

    /// Allocates each object of `sizes[i]` bytes under `keys[i]` for an in-place
    /// write and returns its pool address, or the key's error. The allocation lasts
    /// `lease_ttl_ms` (0: the service's put lease); `batch_write_finish` must come
    /// before. Asking again for a key this client is still writing returns the same
    /// address. Only DRAM can be allocated this way.
    pub async fn batch_alloc<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        sizes: &[u64],
        media: Medium,
        lease_ttl_ms: u64,
    ) -> Vec<Result<u64>> {
        let n = keys.len();
        let session = match self.session() {
            Ok(s) => s,
            Err(e) => return all(n, e),
        };
        if let Err(e) = check_batch(n, sizes.len()) {
            return all(n, e);
        }
        if media != Medium::Dram {
            let e = Error::invalid(format!(
                "in-place allocation on {} is not supported; DRAM only",
                media.name()
            ));
            return all(n, e);
        }
        let mut results = Vec::with_capacity(n);
        for (ks, ss) in keys.chunks(CHUNK).zip(sizes.chunks(CHUNK)) {
            results.extend(self.alloc_chunk(&session, ks, ss, lease_ttl_ms).await);
        }
        results
    }

    /// `batch_alloc` of at most `CHUNK` keys: one meta call.
    async fn alloc_chunk<K: AsRef<[u8]>>(
        &self,
        session: &Session,
        keys: &[K],
        sizes: &[u64],
        lease_ttl_ms: u64,
    ) -> Vec<Result<u64>> {
        let n = keys.len();
        let mut results: Vec<Result<u64>> = vec![Ok(0); n];
        let mut wanted = parse_keys(keys, &mut results);
        let now = Instant::now();
        {
            let table = session.grants.table();
            wanted.retain(|(i, key)| {
                if sizes[*i] == 0 {
                    results[*i] = Err(Error::invalid("object of 0 bytes"));
                    return false;
                }
                match table.pending.get(key) {
                    Some(p) if now < p.until && p.blobs[0].len == sizes[*i] => {
                        results[*i] = Ok(p.gva);
                        false
                    }
                    _ => true,
                }
            });
        }
        let items = wanted.iter().map(|(i, k)| (k.clone(), sizes[*i])).collect();
        let asked = Instant::now();
        session.release_finished().await;
        let allocations = session
            .meta
            .alloc(
                items,
                // Written in place by the caller: memory it maps, never HBM.
                &ReplicateConfig {
                    medium: Some(Medium::Dram),
                    ..Default::default()
                },
                lease_ttl_ms,
                session.maps_host(),
            )
            .await;
        let mut table = session.grants.table();
        table.sweep(Instant::now());
        for ((i, key), a) in wanted.into_iter().zip(allocations) {
            results[i] = a.and_then(|a| {
                let gva = a
                    .blobs
                    .first()
                    .map_or(0, |b| table.gva(b.segment, b.offset));
                if gva == 0 {
                    return Err(Error::Failed(
                        "the pool placed no addressable replica".into(),
                    ));
                }
                let len = a.blobs[0].len;
                table.drop_pending(&key);
                table.insert(
                    gva,
                    Range {
                        key: key.clone(),
                        len,
                        access: Access::Write,
                    },
                );
                table.pending.insert(
                    key,
                    Pending {
                        put_id: a.put_id,
                        blobs: a.blobs,
                        tags: a.tags,
                        gva,
                        until: until(asked, a.lease_ms),
                    },
                );
                Ok(gva)
            });
        }
        results
    }

    /// Copies each piece to or from its pool address: `gvas[i]` is where piece `i`
    /// starts, anywhere inside an allocation or a leased replica of this client. Every
    /// copy is checked before any byte moves; the first refusal is the answer and
    /// nothing is copied. Copies of one batch run at once.
    pub async fn batch_copy(
        &self,
        gvas: &[u64],
        pieces: &mut [Piece<'_>],
        way: CopyWay,
    ) -> Result<()> {
        let session = self.session()?;
        check_batch(gvas.len(), pieces.len())?;
        let now = Instant::now();
        let targets = {
            let table = session.grants.table();
            gvas.iter()
                .zip(pieces.iter())
                .map(|(&gva, piece)| {
                    let t = table.resolve(gva, piece.len(), now)?;
                    let fits = match (way, piece.writes_pool()) {
                        (CopyWay::ToPool, true) | (CopyWay::Auto, true) => t.writes(),
                        (CopyWay::FromPool, false) | (CopyWay::Auto, false) => !t.writes(),
                        _ => return Err(Error::invalid("buffers do not fit the copy direction")),
                    };
                    if !fits {
                        return Err(Error::UnmatchedState(format!(
                            "pool address {gva:#x} is {} here",
                            if t.writes() {
                                "an allocation being written: it cannot be read"
                            } else {
                                "a leased object: it cannot be written"
                            }
                        )));
                    }
                    Ok(t)
                })
                .collect::<Result<Vec<Target>>>()?
        };
        // Pieces whose memory this process maps (every replica, for a write): one batch
        // of copies each way over the copy threads. The rest through `copy_one`, all in
        // flight at once.
        let mut done = vec![false; targets.len()];
        let mut first_error = Ok(());
        {
            let (mut writes, mut reads) = (Vec::new(), Vec::new());
            let (mut device_writes, mut device_reads) = (Vec::new(), Vec::new());
            // Mapped, and the range inside the blob (else `copy_one` says why not).
            let mapped = |b: &Blob, at: u64, len: u64| {
                let inside = check_part(b, at, [len as usize]).is_ok();
                (inside && session.maps(b)).then(|| part_of(b, at, len))
            };
            for (k, (t, piece)) in targets.iter().zip(pieces.iter_mut()).enumerate() {
                let len = piece.len();
                match (t, piece) {
                    (Target::Write { blobs, at, .. }, piece) => {
                        let parts: Option<Vec<Blob>> =
                            blobs.iter().map(|b| mapped(b, *at, len)).collect();
                        let Some(parts) = parts else { continue };
                        match piece {
                            Piece::From(srcs) => {
                                writes.extend(parts.into_iter().map(|p| (p, &**srcs)))
                            }
                            Piece::FromDevice(bufs) => {
                                device_writes.extend(parts.into_iter().map(|p| (p, *bufs)))
                            }
                            _ => continue,
                        }
                    }
                    (Target::Read { blob, at, .. }, piece) => {
                        let Some(part) = mapped(blob, *at, len) else {
                            continue;
                        };
                        match piece {
                            Piece::Into(dsts) => reads.push((part, &mut **dsts)),
                            Piece::IntoDevice(bufs) => device_reads.push((part, *bufs)),
                            _ => continue,
                        }
                    }
                }
                done[k] = true;
            }
            let answers = session.write_mapped_batch(&writes);
            let answers = answers
                .into_iter()
                .chain(session.read_mapped_batch(&mut reads))
                .chain(session.device_mapped_batch(&device_writes, true))
                .chain(session.device_mapped_batch(&device_reads, false));
            for r in answers {
                first_error = first_error.and(r);
            }
        }
        let copies = targets
            .into_iter()
            .zip(pieces.iter_mut())
            .zip(done)
            .filter(|(_, done)| !done)
            .map(|((t, piece), _)| {
                let session = &session;
                async move { copy_one(session, t, piece).await }
            });
        let rest: Result<()> = join_all(copies).await.into_iter().collect();
        first_error.and(rest)
    }

    /// Ends in-place writes: a key whose `results[i]` is 0 is committed (visible to
    /// every reader from now on), any other is rolled back. One answer per key: the
    /// commit's or the rollback's; for a key this client is not writing, 0 when the
    /// result is 0 and the key is stored (another writer finished it first), else -3000;
    /// -3106 (and a rollback) for an allocation whose lease has ended.
    pub async fn batch_write_finish<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        results: &[i32],
    ) -> Vec<Result<()>> {
        let n = keys.len();
        let session = match self.session() {
            Ok(s) => s,
            Err(e) => return all(n, e),
        };
        if let Err(e) = check_batch(n, results.len()) {
            return all(n, e);
        }
        let mut out = Vec::with_capacity(n);
        for (ks, rs) in keys.chunks(CHUNK).zip(results.chunks(CHUNK)) {
            out.extend(self.finish_chunk(&session, ks, rs).await);
        }
        out
    }

    /// `batch_write_finish` of at most `CHUNK` keys: a commit and a rollback call.
    async fn finish_chunk<K: AsRef<[u8]>>(
        &self,
        session: &Session,
        keys: &[K],
        results: &[i32],
    ) -> Vec<Result<()>> {
        let n = keys.len();
        let mut out: Vec<Result<()>> = vec![Ok(()); n];
        let valid = parse_keys(keys, &mut out);
        let now = Instant::now();
        let (mut commits, mut commit_slots, mut aborts, mut abort_slots) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut unknown, mut unknown_slots) = (Vec::new(), Vec::new());
        {
            let mut table = session.grants.table();
            for (i, key) in valid {
                let Some(p) = table.drop_pending(&key) else {
                    out[i] = Err(Error::invalid(format!(
                        "{key:?} is not being written by this client"
                    )));
                    if results[i] == 0 {
                        unknown.push(key);
                        unknown_slots.push(i);
                    }
                    continue;
                };
                if results[i] == 0 && now < p.until {
                    commits.push((key, p.put_id));
                    commit_slots.push(i);
                } else {
                    if results[i] == 0 {
                        out[i] = Err(Error::LeaseExpired(format!(
                            "the allocation of {key:?} ended before its commit; rolled back"
                        )));
                    }
                    aborts.push((key, p.put_id));
                    abort_slots.push(i);
                }
            }
        }
        // A commit of a key this client is not writing is done if the key is stored
        // (another writer of the same block finished first, or a put stored it), as 1.3.0
        // answers: the engine's block is in the pool either way.
        let (committed, stored, aborted) = futures::join!(
            async {
                match commits.is_empty() {
                    true => Vec::new(),
                    false => session.meta.commit(commits).await,
                }
            },
            async {
                match unknown.is_empty() {
                    true => Vec::new(),
                    false => session.meta.exists(&unknown).await,
                }
            },
            async {
                match aborts.is_empty() {
                    true => Vec::new(),
                    false => session.meta.abort(aborts).await,
                }
            }
        );
        for (i, r) in commit_slots.into_iter().zip(committed) {
            out[i] = r;
        }
        for (i, r) in unknown_slots.into_iter().zip(stored) {
            if r == Ok(true) {
                out[i] = Ok(());
            }
        }
        for (i, r) in abort_slots.into_iter().zip(aborted) {
            // A rollback the service no longer needed (the lease had run out) is done.
            if out[i].is_ok() {
                out[i] = r.or_else(|e| match e {
                    Error::Timeout(_) => Ok(()),
                    e => Err(e),
                });
            }
        }
        out
    }

    /// Leases each object for reading in place for `ttl_ms` (0: the service's read
    /// lease): until `batch_remove_lease` or the end of the lease, the object stays, and
    /// the addresses its key info lists (`gva_list`) can be read with `batch_copy`.
    pub async fn batch_add_lease<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        ttl_ms: u64,
    ) -> Vec<Result<()>> {
        self.keyed(keys, |s, ks| async move {
            let asked = Instant::now();
            let found = s
                .meta
                .lookup(&ks, ttl_ms, s.maps_host(), s.take_finished())
                .await;
            let mut table = s.grants.table();
            table.sweep(Instant::now());
            ks.into_iter()
                .zip(found)
                .map(|(key, f)| {
                    let loc = f?;
                    let tags = loc
                        .tags
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(Tag::default()));
                    let mut gvas = Vec::with_capacity(loc.blobs.len());
                    for (blob, tag) in loc.blobs.iter().zip(tags) {
                        let gva = table.gva(blob.segment, blob.offset);
                        let access = Access::Read { blob: *blob, tag };
                        let range = Range {
                            key: key.clone(),
                            len: loc.size,
                            access,
                        };
                        table.insert(gva, range);
                        gvas.push(gva);
                    }
                    let held = table.held.entry(key).or_insert_with(|| Held {
                        leases: Vec::new(),
                        gvas: Vec::new(),
                        until: asked,
                        size: 0,
                        blobs: Vec::new(),
                    });
                    let end = until(asked, loc.lease_ms);
                    held.leases.push((loc.lease, end));
                    held.gvas = gvas;
                    held.size = loc.size;
                    held.blobs = loc.blobs;
                    held.until = held.until.max(end);
                    Ok(())
                })
                .collect()
        })
        .await
    }

    /// Ends one read lease this client holds on each key (the oldest; a key listed twice
    /// ends two); once a key's last lease has ended, its addresses read nothing any
    /// more. -3000, and nothing released, when a key holds fewer leases here than listed.
    pub async fn batch_remove_lease<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<()> {
        let session = self.session()?;
        check_batch(keys.len(), keys.len())?;
        let keys = keys.iter().map(Key::new).collect::<Result<Vec<Key>>>()?;
        let released: Vec<(Key, LeaseId)> = {
            let mut table = session.grants.table();
            let mut wanted: FxHashMap<&Key, usize> = FxHashMap::default();
            for k in &keys {
                *wanted.entry(k).or_default() += 1;
            }
            if let Some((k, _)) = wanted
                .iter()
                .find(|(k, n)| table.held.get(**k).map_or(0, |h| h.leases.len()) < **n)
            {
                return Err(Error::invalid(format!("no read lease on {k:?} left here")));
            }
            keys.iter()
                .map(|k| (k.clone(), table.end_lease(k)))
                .collect()
        };
        for chunk in released.chunks(CHUNK) {
            session.meta.release(chunk.to_vec()).await;
        }
        Ok(())
    }
}

/// Moves one piece's bytes: into every replica of an allocation, or out of one leased
/// replica. Device memory goes through one host copy of the piece.
async fn copy_one(session: &Session, target: Target, piece: &mut Piece<'_>) -> Result<()> {
    match (target, piece) {
        (Target::Write { blobs, tags, at }, piece) if piece.writes_pool() => {
            let staged;
            let one: [&[u8]; 1];
            let srcs: &[&[u8]] = match piece {
                Piece::From(srcs) => srcs,
                Piece::FromDevice(bufs) => {
                    staged = session.stage_out(bufs, total(bufs))?;
                    one = [staged.as_slice()];
                    &one
                }
                _ => unreachable!("a piece into the pool"),
            };
            let tags = tags
                .iter()
                .copied()
                .chain(std::iter::repeat(Tag::default()));
            let writes = blobs
                .iter()
                .zip(tags)
                .map(|(b, t)| session.write_part(b, t, at, srcs));
            join_all(writes).await.into_iter().collect()
        }
        (Target::Read { blob, tag, at }, Piece::Into(dsts)) => {
            let len = dsts.iter().map(|d| d.len() as u64).sum();
            session.read_part(&blob, tag, at, len, dsts).await
        }
        (Target::Read { blob, tag, at }, Piece::IntoDevice(bufs)) => {
            let len = total(bufs);
            let mut staged = session.staged(len)?;
            session
                .read_part(&blob, tag, at, len, &mut [staged.as_mut_slice()])
                .await?;
            stage_in(bufs, staged.as_slice())
        }
        _ => Err(Error::invalid("buffers do not fit the copy direction")),
    }
}

impl crate::BlockingObjectStore {
    pub fn batch_alloc<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        sizes: &[u64],
        media: Medium,
        lease_ttl_ms: u64,
    ) -> Vec<Result<u64>> {
        let inner = self.inner();
        self.block_on(inner.batch_alloc(keys, sizes, media, lease_ttl_ms))
    }

    pub fn batch_copy(&self, gvas: &[u64], pieces: &mut [Piece<'_>], way: CopyWay) -> Result<()> {
        self.block_on(self.inner().batch_copy(gvas, pieces, way))
    }

    pub fn batch_write_finish<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        results: &[i32],
    ) -> Vec<Result<()>> {
        self.block_on(self.inner().batch_write_finish(keys, results))
    }

    pub fn batch_add_lease<K: AsRef<[u8]>>(&self, keys: &[K], ttl_ms: u64) -> Vec<Result<()>> {
        self.block_on(self.inner().batch_add_lease(keys, ttl_ms))
    }

    pub fn batch_remove_lease<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<()> {
        self.block_on(self.inner().batch_remove_lease(keys))
    }
}
