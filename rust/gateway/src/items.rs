//! memcached items on the pool: each item is one pool object under the gateway's key
//! prefix (its namespace, apart from the pool's KV objects), a small header (flags,
//! CAS unique, absolute expiry) followed by the value, with the pool's TTL set to the
//! item's expiry so expired items vanish from the pool by themselves.
//!
//! The pool never overwrites an object, so a replacement is a removal and a new put.
//! Changes to one key are serialised inside this gateway (striped locks), which makes
//! `cas`, `incr` and `append` atomic for the gateway's clients; gateways sharing a pool
//! do not coordinate with each other.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memcache_client::{CopyDirection, Error, ObjectStore, ReplicateConfig};

use crate::protocol::{value_line, write_value, StoreCommand};

type PoolKey = smallvec::SmallVec<[u8; memcache_client::MAX_KEY_LEN]>;

/// memcached reads an exptime above this many seconds as a Unix time.
const RELATIVE_LIMIT_S: i64 = 60 * 60 * 24 * 30;
const HEADER: usize = 24;
const STRIPES: usize = 256;
/// A put that meets a concurrent writer of the same key (another gateway) tries again
/// this many times.
const PUT_TRIES: usize = 8;

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub flags: u32,
    pub cas: u64,
    /// Unix seconds; 0 never.
    pub expires: u64,
    pub value: Vec<u8>,
    /// Stored under a key sent base64-encoded (`ms ... b`): memcached marks such items
    /// and shows their keys encoded (`me`).
    pub binary_key: bool,
}

/// How an `ms` stores, beyond its mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// The unique an `append`/`prepend` must find (`MA`/`MP` with `C`): a different
    /// one is `Exists`, as in memcached.
    pub check: Option<u64>,
    /// The key was sent base64-encoded.
    pub binary_key: bool,
}

/// What a storage or arithmetic command did, in memcached's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

/// Failures that are not a memcached outcome: the pool refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    #[error("cannot increment or decrement non-numeric value")]
    NotNumeric,
    #[error("{0}")]
    Pool(#[from] Error),
}

pub type ItemResult<T> = std::result::Result<T, ItemError>;

pub struct Items {
    store: Arc<ObjectStore>,
    /// Values of at least this many bytes are stored LZ4-compressed when that makes
    /// them smaller; 0 never.
    compress_above: usize,
    /// Prefix of every item's pool key, so that the gateway's items and the KV
    /// objects of the same pool never meet (`flush_all` lists only these).
    namespace: Vec<u8>,
    next_cas: AtomicU64,
    /// Where CAS uniques are reserved ahead of use, so that they never repeat across
    /// restarts (`--data-dir`); `None`: uniques start at 1 each run.
    cas_file: Option<CasFile>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    hasher: std::hash::RandomState,
}

/// A durable high-water mark of CAS uniques: no unique at or above `reserved` is
/// handed out before the file says so.
struct CasFile {
    path: PathBuf,
    block: u64,
    /// First unique not yet reserved.
    reserved: std::sync::Mutex<u64>,
    /// A lock-free copy of `reserved` for the common case.
    limit: AtomicU64,
}

/// The pool key prefix of the gateway's items unless told otherwise.
pub const DEFAULT_NAMESPACE: &[u8] = b"mc:";

/// Uniques reserved per durable write: one write per 2^20 stores.
pub const CAS_BLOCK: u64 = 1 << 20;

impl CasFile {
    /// Reads the mark left by earlier runs (none: 1) and reserves the first block.
    fn open(path: PathBuf, block: u64) -> std::io::Result<(CasFile, u64)> {
        let first = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(e),
        };
        let file = CasFile {
            path,
            block,
            reserved: std::sync::Mutex::new(first),
            limit: AtomicU64::new(first),
        };
        file.reserve_past(first)?;
        Ok((file, first))
    }

    /// Makes sure `cas` is reserved, writing a new mark (durably, before any unique it
    /// covers is used) when it is not yet.
    fn reserve_past(&self, cas: u64) -> std::io::Result<()> {
        if cas < self.limit.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        if cas < *reserved {
            return Ok(());
        }
        let mark = cas.saturating_add(self.block);
        // Write aside, sync, rename over, sync the directory: a crash leaves the old
        // mark or the new one, never a torn one.
        let tmp = self.path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{mark}")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        *reserved = mark;
        self.limit.store(mark, Ordering::Release);
        Ok(())
    }
}

/// The absolute expiry (Unix seconds, 0 never) of a memcached exptime; `None` when it
/// has already passed (negative, or an absolute time in the past).
pub fn expiry(exptime: i64, now: u64) -> Option<u64> {
    match exptime {
        0 => Some(0),
        e if e < 0 => None,
        e if e <= RELATIVE_LIMIT_S => Some(now + e as u64),
        e if (e as u64) <= now => None,
        e => Some(e as u64),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The number `incr`/`decr` read in a value, as memcached reads it: `safe_strtoull`
/// over the value and its "\r\n". So leading whitespace and a sign are fine, the digits
/// may be followed by whitespace (or a NUL) and anything; a "-" is refused when it
/// makes the number negative as a signed one.
pub fn counter(value: &[u8]) -> Option<u64> {
    let text: Vec<u8> = [value, b"\r\n"].concat();
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let mut at = text.iter().take_while(|&&b| space(b)).count();
    let sign = text.get(at).copied();
    let negative = sign == Some(b'-');
    if matches!(sign, Some(b'-' | b'+')) {
        at += 1;
    }
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &text[at..at + digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    let end = text[at + digits];
    if !(space(end) || end == 0) {
        return None;
    }
    let n = if negative { n.wrapping_neg() } else { n };
    // strchr(value, '-'): the C string ends at the first NUL.
    let c_string = text.split(|&b| b == 0).next().unwrap_or_default();
    if (n as i64) < 0 && c_string.contains(&b'-') {
        return None;
    }
    Some(n)
}

/// Byte 0 of an item: how its value is stored.
const RAW: u8 = 0;
const LZ4: u8 = 1;

/// Byte 1 of an item: bit 0 set when its key was sent base64-encoded.
const BINARY_KEY: u8 = 1;

/// An item as the pool stores it: its header, then its value (LZ4-compressed where
/// that shrinks it), put as two pieces so that the value is not copied on the way.
struct Encoded<'v> {
    header: [u8; HEADER],
    packed: Option<Vec<u8>>,
    value: &'v [u8],
}

impl Encoded<'_> {
    fn pieces(&self) -> [&[u8]; 2] {
        [&self.header, self.packed.as_deref().unwrap_or(self.value)]
    }
}

fn encode<'v>(header: &Item, value: &'v [u8], compress_above: usize) -> Encoded<'v> {
    let Item {
        flags,
        cas,
        expires,
        binary_key,
        ..
    } = *header;
    let packed = (compress_above > 0 && value.len() >= compress_above)
        .then(|| lz4_flex::compress_prepend_size(value))
        .filter(|p| p.len() < value.len());
    let encoding = if packed.is_some() { LZ4 } else { RAW };
    let mut head = [0u8; HEADER];
    head[0] = encoding;
    head[1] = if binary_key { BINARY_KEY } else { 0 };
    head[4..8].copy_from_slice(&flags.to_le_bytes());
    head[8..16].copy_from_slice(&cas.to_le_bytes());
    head[16..24].copy_from_slice(&expires.to_le_bytes());
    Encoded {
        header: head,
        packed,
        value,
    }
}

/// An item's header as stored: all of it but the value.
struct Head {
    flags: u32,
    cas: u64,
    expires: u64,
    packed: bool,
    binary_key: bool,
}

impl Head {
    fn read(raw: &[u8]) -> ItemResult<Head> {
        if raw.len() < HEADER || raw[0] > LZ4 {
            return Err(not_an_item("not a gateway item"));
        }
        let word = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
        Ok(Head {
            flags: u32::from_le_bytes(raw[4..8].try_into().expect("4 bytes")),
            cas: word(8),
            expires: word(16),
            packed: raw[0] == LZ4,
            binary_key: raw[1] & BINARY_KEY != 0,
        })
    }
}

/// Whether an item expiring at `expires` (Unix seconds, 0 never) is still there.
fn live(expires: u64) -> bool {
    expires == 0 || expires > unix_now()
}

fn not_an_item(why: &str) -> ItemError {
    ItemError::Pool(Error::UnmatchedState(why.into()))
}

fn unpack(packed: &[u8]) -> ItemResult<Vec<u8>> {
    lz4_flex::decompress_size_prepended(packed)
        .map_err(|_| not_an_item("a compressed item does not decompress"))
}

fn decode(mut raw: Vec<u8>) -> ItemResult<Item> {
    let head = Head::read(&raw)?;
    let value = if head.packed {
        unpack(&raw[HEADER..])?
    } else {
        raw.drain(..HEADER);
        raw
    };
    Ok(Item {
        flags: head.flags,
        cas: head.cas,
        expires: head.expires,
        value,
        binary_key: head.binary_key,
    })
}

impl Items {
    pub fn new(store: Arc<ObjectStore>, compress_above: usize) -> Items {
        Items {
            store,
            compress_above,
            namespace: DEFAULT_NAMESPACE.to_vec(),
            next_cas: AtomicU64::new(1),
            cas_file: None,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Items whose CAS uniques never repeat across restarts: they are reserved in
    /// blocks of [`CAS_BLOCK`] in `path` before use, and a restart goes on from the
    /// reserved mark (skipping what the last run reserved but did not use).
    pub fn with_cas_file(
        store: Arc<ObjectStore>,
        compress_above: usize,
        path: PathBuf,
    ) -> std::io::Result<Items> {
        Self::with_cas_block(store, compress_above, path, CAS_BLOCK)
    }

    fn with_cas_block(
        store: Arc<ObjectStore>,
        compress_above: usize,
        path: PathBuf,
        block: u64,
    ) -> std::io::Result<Items> {
        let (file, first) = CasFile::open(path, block)?;
        Ok(Items {
            next_cas: AtomicU64::new(first),
            cas_file: Some(file),
            ..Items::new(store, compress_above)
        })
    }

    /// A new CAS unique, reserved durably first when there is a CAS file.
    fn new_cas(&self) -> ItemResult<u64> {
        let cas = self.next_cas.fetch_add(1, Ordering::Relaxed);
        if let Some(file) = &self.cas_file {
            file.reserve_past(cas).map_err(|e| {
                ItemError::Pool(Error::UnmatchedState(format!("reserving CAS uniques: {e}")))
            })?;
        }
        Ok(cas)
    }

    /// The same items under another key prefix (see [`DEFAULT_NAMESPACE`]); `Err` when
    /// a memcached key (250 bytes) would no longer fit the pool's key limit.
    pub fn in_namespace(mut self, namespace: &[u8]) -> Result<Items, String> {
        let room = memcache_client::MAX_KEY_LEN - crate::protocol::Limits::default().max_key_len;
        if namespace.len() > room {
            return Err(format!(
                "a namespace of {} bytes leaves no room for 250-byte memcached keys \
                 (the pool's keys are at most {} bytes): at most {room}",
                namespace.len(),
                memcache_client::MAX_KEY_LEN
            ));
        }
        self.namespace = namespace.to_vec();
        Ok(self)
    }

    /// `key` under the namespace, made on the stack: pool keys are at most 255 bytes.
    fn pool_key(&self, key: &[u8]) -> PoolKey {
        let mut k = PoolKey::new();
        k.extend_from_slice(&self.namespace);
        k.extend_from_slice(key);
        k
    }

    fn stripe(&self, key: &[u8]) -> &tokio::sync::Mutex<()> {
        &self.stripes[self.hasher.hash_one(key) as usize % STRIPES]
    }

    /// The item under `key`, if it is there and not expired.
    pub async fn get(&self, key: &[u8]) -> ItemResult<Option<Item>> {
        match self.store.get(self.pool_key(key)).await {
            Ok(raw) => {
                let item = decode(raw)?;
                Ok(live(item.expires).then_some(item))
            }
            Err(Error::ObjectNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `get`/`gets` of `key` straight into a reply: appends the item's `VALUE` line
    /// and data to `out` (with its CAS unique when `cas`) and answers true when it is
    /// there and not expired; appends nothing otherwise. The object is read into
    /// `out` itself, so its bytes are copied once on the way, not into an item first.
    pub async fn write_hit(&self, key: &[u8], cas: bool, out: &mut Vec<u8>) -> ItemResult<bool> {
        let start = out.len();
        let read = self
            .store
            .get_appended(self.pool_key(key), out)
            .await
            .map(|_| ());
        let head = read
            .map_err(ItemError::from)
            .and_then(|()| Head::read(&out[start..]));
        let head = match head {
            Ok(head) if live(head.expires) => head,
            Ok(_) | Err(ItemError::Pool(Error::ObjectNotFound)) => {
                out.truncate(start);
                return Ok(false);
            }
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        };
        let unique = cas.then_some(head.cas);
        let value_len = out.len() - start - HEADER;
        const LINE_MAX: usize = 400;
        let mut line = [0u8; LINE_MAX];
        let mut room = &mut line[..];
        let fits = value_line(&mut room, key, head.flags, value_len, unique).is_ok();
        let line_len = LINE_MAX - room.len();
        if head.packed || !fits {
            let value = if head.packed {
                unpack(&out[start + HEADER..])
            } else {
                Ok(out[start + HEADER..].to_vec())
            };
            out.truncate(start);
            write_value(out, key, head.flags, &value?, unique);
            return Ok(true);
        }
        // The line takes the place of the item's header: the value moves (once) to
        // follow it.
        let line = &line[..line_len];
        let end = start + line.len() + value_len;
        if end > out.len() {
            out.resize(end, 0);
        }
        out.copy_within(
            start + HEADER..start + HEADER + value_len,
            start + line.len(),
        );
        out.truncate(end);
        out[start..start + line.len()].copy_from_slice(line);
        out.extend_from_slice(b"\r\n");
        Ok(true)
    }

    /// Stores `value` as the storage command `mode` asks; `exptime` as memcached
    /// reads it.
    pub async fn store(
        &self,
        mode: StoreCommand,
        key: &[u8],
        flags: u32,
        exptime: i64,
        value: &[u8],
    ) -> ItemResult<Outcome> {
        Ok(self
            .store_cas(mode, StoreOptions::default(), key, flags, exptime, value)
            .await?
            .0)
    }

    /// [`Items::store`] for `ms`, with the new item's CAS unique when stored
    /// (`ms ... c`).
    pub async fn store_cas(
        &self,
        mode: StoreCommand,
        options: StoreOptions,
        key: &[u8],
        flags: u32,
        exptime: i64,
        value: &[u8],
    ) -> ItemResult<(Outcome, u64)> {
        let _one = self.stripe(key).lock().await;
        let current = match mode {
            StoreCommand::Set => None,
            _ => self.get(key).await?,
        };
        // An append or prepend makes a new item that memcached does not mark as
        // binary-keyed, whatever the old one and the request.
        let binary_key = match mode {
            StoreCommand::Append | StoreCommand::Prepend => false,
            _ => options.binary_key,
        };
        let (flags, expires, value) = match (mode, &current) {
            (StoreCommand::Add, Some(_)) => return Ok((Outcome::NotStored, 0)),
            (StoreCommand::Replace | StoreCommand::Append | StoreCommand::Prepend, None) => {
                return Ok((Outcome::NotStored, 0))
            }
            (StoreCommand::Cas(_), None) => return Ok((Outcome::NotFound, 0)),
            (StoreCommand::Cas(unique), Some(item)) if item.cas != unique => {
                return Ok((Outcome::Exists, 0))
            }
            (StoreCommand::Append | StoreCommand::Prepend, Some(item))
                if options.check.is_some_and(|unique| unique != item.cas) =>
            {
                return Ok((Outcome::Exists, 0))
            }
            // Appending keeps the item's flags and expiry, as memcached does.
            (StoreCommand::Append, Some(item)) => (
                item.flags,
                Some(item.expires),
                Cow::Owned([&item.value[..], value].concat()),
            ),
            (StoreCommand::Prepend, Some(item)) => (
                item.flags,
                Some(item.expires),
                Cow::Owned([value, &item.value[..]].concat()),
            ),
            _ => (flags, expiry(exptime, unix_now()), Cow::Borrowed(value)),
        };
        let cas = self
            .replace(key, flags, expires, &value, binary_key)
            .await?;
        Ok((Outcome::Stored, cas))
    }

    /// Puts a new version of `key` in place of the old (if any). `expires: None` only
    /// removes: the item would be expired at once.
    async fn replace(
        &self,
        key: &[u8],
        flags: u32,
        expires: Option<u64>,
        value: &[u8],
        binary_key: bool,
    ) -> ItemResult<u64> {
        let cas = self.new_cas()?;
        let header = Item {
            flags,
            cas,
            expires: expires.unwrap_or(0),
            value: Vec::new(),
            binary_key,
        };
        self.replace_keeping(key, &header, expires.is_some(), value)
            .await
    }

    /// [`Items::replace`] with a given CAS unique: a touch keeps the item's, as in
    /// memcached. `header` holds all but the value; `live: false` only removes.
    async fn replace_keeping(
        &self,
        key: &[u8],
        header: &Item,
        live: bool,
        value: &[u8],
    ) -> ItemResult<u64> {
        let (cas, expires) = (header.cas, header.expires);
        if !live {
            self.remove_any(key).await?;
            return Ok(cas);
        }
        let item = encode(header, value, self.compress_above);
        // The new item replaces the old when its put commits, in one step: readers see
        // one or the other, never neither.
        let config = ReplicateConfig {
            ttl: (expires > 0)
                .then(|| Duration::from_secs(expires.saturating_sub(unix_now()).max(1))),
            replace: true,
            ..ReplicateConfig::default()
        };
        for _ in 0..PUT_TRIES {
            match self
                .store
                .put_from_layers(
                    self.pool_key(key),
                    &item.pieces(),
                    CopyDirection::PUT_DEFAULT,
                    &config,
                )
                .await
            {
                Ok(()) => return Ok(cas),
                // Another gateway's put of the key is in flight: let it land first.
                Err(Error::DuplicatedObject) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::DuplicatedObject.into())
    }

    /// Removes `key` whether or not it is there; waits out readers' leases.
    async fn remove_any(&self, key: &[u8]) -> ItemResult<bool> {
        for _ in 0..200 {
            match self.store.remove(self.pool_key(key)).await {
                Ok(()) => return Ok(true),
                Err(Error::ObjectNotFound) => return Ok(false),
                Err(Error::LeaseNotExpired) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::LeaseNotExpired.into())
    }

    /// Caps the pool's memory (see `ObjectStore::set_memory_limit`).
    pub fn set_memory_limit(&self, bytes: u64) -> memcache_client::Result<()> {
        self.store.set_memory_limit(bytes)
    }

    /// `delete`: whether there was an item.
    pub async fn delete(&self, key: &[u8]) -> ItemResult<bool> {
        let _one = self.stripe(key).lock().await;
        // An expired item still in the pool is not "there".
        let live = self.get(key).await?.is_some();
        let removed = self.remove_any(key).await?;
        Ok(live && removed)
    }

    /// `incr` / `decr`: the new value, or `None` when there is no item. Increments
    /// wrap at 2^64, decrements stop at 0, as in memcached.
    pub async fn add_delta(&self, key: &[u8], delta: u64, up: bool) -> ItemResult<Option<u64>> {
        let _one = self.stripe(key).lock().await;
        let Some(item) = self.get(key).await? else {
            return Ok(None);
        };
        let n = counter(&item.value).ok_or(ItemError::NotNumeric)?;
        let n = if up {
            n.wrapping_add(delta)
        } else {
            n.saturating_sub(delta)
        };
        // A shorter number keeps the value's length, padded with spaces: memcached
        // rewrites the digits in place.
        let mut value = n.to_string();
        // A longer one is a new item, which memcached does not mark binary-keyed.
        let in_place = value.len() <= item.value.len();
        while value.len() < item.value.len() {
            value.push(' ');
        }
        self.replace(
            key,
            item.flags,
            Some(item.expires),
            value.as_bytes(),
            item.binary_key && in_place,
        )
        .await?;
        Ok(Some(n))
    }

    /// `touch` / `gat`: sets a new expiry; the item as it is now, if there is one.
    pub async fn touch(&self, key: &[u8], exptime: i64) -> ItemResult<Option<Item>> {
        let _one = self.stripe(key).lock().await;
        let Some(mut item) = self.get(key).await? else {
            return Ok(None);
        };
        let expires = expiry(exptime, unix_now());
        let header = Item {
            expires: expires.unwrap_or(0),
            value: Vec::new(),
            ..item.clone()
        };
        self.replace_keeping(key, &header, expires.is_some(), &item.value)
            .await?;
        // Expired by the touch: memcached's clock puts it a second in the past.
        item.expires = expires.unwrap_or_else(|| unix_now() - 1);
        Ok(Some(item))
    }

    /// `flush_all`: removes every item (the namespace's objects only: KV objects of
    /// the same pool stay); how many.
    pub async fn flush(&self) -> ItemResult<usize> {
        let mut removed = 0;
        loop {
            let keys = self.store.list_keys(&self.namespace, 4096).await?;
            if keys.is_empty() {
                return Ok(removed);
            }
            for key in keys {
                let key = &key.as_bytes()[self.namespace.len()..];
                if self.delete(key).await? {
                    removed += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use memcache_client::{ClientConfig, Clock, EmbeddedPool, MetaConfig};

    async fn items() -> Items {
        let pool = EmbeddedPool::new(MetaConfig::default(), Clock::System).unwrap();
        let store = ObjectStore::with_pool(ClientConfig::with_dram(16 << 20), pool);
        store.init(0, true).await.unwrap();
        Items::new(Arc::new(store), 1024)
    }

    #[test]
    fn exptimes_read_as_memcached_reads_them() {
        let now = 1_700_000_000;
        assert_eq!(expiry(0, now), Some(0));
        assert_eq!(expiry(10, now), Some(now + 10));
        assert_eq!(
            expiry(RELATIVE_LIMIT_S, now),
            Some(now + RELATIVE_LIMIT_S as u64)
        );
        assert_eq!(expiry(-1, now), None);
        assert_eq!(expiry(now as i64 + 5, now), Some(now + 5));
        assert_eq!(expiry(now as i64 - 5, now), None);
    }

    #[tokio::test]
    async fn a_hit_is_written_as_the_item_would_be() {
        let it = items().await;
        let long_key = vec![b'k'; 250];
        let cases: [(&[u8], u32, Vec<u8>, i64); 5] = [
            // A line shorter than the item's header, and longer (the value moves
            // down, then up).
            (b"a", 0, b"1".to_vec(), 0),
            (&long_key, u32::MAX, vec![b'v'; 3000], 0),
            // Compressed (items() compresses from 1 KiB).
            (b"packed", 7, vec![b'z'; 5000], 0),
            // Empty, and expiring later.
            (b"empty", 3, Vec::new(), 0),
            (b"later", 1, b"soon".to_vec(), 100),
        ];
        for (key, flags, value, exptime) in &cases {
            it.store(StoreCommand::Set, key, *flags, *exptime, value)
                .await
                .unwrap();
            for cas in [false, true] {
                let item = it.get(key).await.unwrap().unwrap();
                let mut want = b"before".to_vec();
                write_value(
                    &mut want,
                    key,
                    item.flags,
                    &item.value,
                    cas.then_some(item.cas),
                );
                let mut out = b"before".to_vec();
                assert!(it.write_hit(key, cas, &mut out).await.unwrap());
                assert_eq!(out, want, "{}", String::from_utf8_lossy(key));
            }
        }
        // A miss, and a key whose set expired it at once, write nothing.
        it.store(StoreCommand::Set, b"gone", 0, -1, b"x")
            .await
            .unwrap();
        for key in [&b"missing"[..], b"gone"] {
            let mut out = b"before".to_vec();
            assert!(!it.write_hit(key, true, &mut out).await.unwrap());
            assert_eq!(out, b"before");
        }
    }

    #[tokio::test]
    async fn storage_commands_follow_memcached() {
        let it = items().await;
        use Outcome::*;
        use StoreCommand::{Add, Append, Cas, Prepend, Replace, Set};
        assert_eq!(
            it.store(Replace, b"k", 1, 0, b"x").await.unwrap(),
            NotStored
        );
        assert_eq!(it.store(Append, b"k", 1, 0, b"x").await.unwrap(), NotStored);
        assert_eq!(it.store(Cas(1), b"k", 1, 0, b"x").await.unwrap(), NotFound);
        assert_eq!(it.store(Add, b"k", 7, 0, b"one").await.unwrap(), Stored);
        assert_eq!(it.store(Add, b"k", 7, 0, b"two").await.unwrap(), NotStored);
        let first = it.get(b"k").await.unwrap().unwrap();
        assert_eq!((first.flags, first.value.as_slice()), (7, &b"one"[..]));
        assert_eq!(it.store(Set, b"k", 8, 0, b"two").await.unwrap(), Stored);
        let second = it.get(b"k").await.unwrap().unwrap();
        assert_eq!((second.flags, second.value.as_slice()), (8, &b"two"[..]));
        assert_ne!(second.cas, first.cas);
        // A CAS with a stale unique loses; with the current one it wins.
        let stale = Cas(first.cas);
        assert_eq!(it.store(stale, b"k", 9, 0, b"x").await.unwrap(), Exists);
        let fresh = Cas(second.cas);
        assert_eq!(it.store(fresh, b"k", 9, 0, b"three").await.unwrap(), Stored);
        // Append and prepend keep the flags.
        assert_eq!(it.store(Append, b"k", 1, 0, b"!").await.unwrap(), Stored);
        assert_eq!(it.store(Prepend, b"k", 1, 0, b"<").await.unwrap(), Stored);
        let now = it.get(b"k").await.unwrap().unwrap();
        assert_eq!((now.flags, now.value.as_slice()), (9, &b"<three!"[..]));
        assert!(it.delete(b"k").await.unwrap());
        assert!(!it.delete(b"k").await.unwrap());
        assert_eq!(it.get(b"k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn large_values_are_stored_compressed_and_read_back_whole() {
        let it = items().await;
        let text: Vec<u8> = b"the same words again and again, ".repeat(200);
        it.store(StoreCommand::Set, b"z", 3, 0, &text)
            .await
            .unwrap();
        let stored = it.store.get(b"mc:z").await.unwrap();
        assert_eq!(stored[0], LZ4);
        assert!(
            stored.len() < text.len() / 4,
            "{} bytes stored",
            stored.len()
        );
        assert_eq!(it.get(b"z").await.unwrap().unwrap().value, text);
        // Appending works on the plain value.
        it.store(StoreCommand::Append, b"z", 0, 0, b"end")
            .await
            .unwrap();
        assert!(it
            .get(b"z")
            .await
            .unwrap()
            .unwrap()
            .value
            .ends_with(b"again, end"));
        // Small values, and ones that do not shrink, are stored as they are.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        it.store(StoreCommand::Set, b"r", 0, 0, &noise)
            .await
            .unwrap();
        assert_eq!(it.store.get(b"mc:r").await.unwrap()[0], RAW);
        assert_eq!(it.get(b"r").await.unwrap().unwrap().value, noise);
        // A damaged compressed item is an error, never wrong bytes.
        let header = Item {
            flags: 0,
            cas: 1,
            expires: 0,
            value: Vec::new(),
            binary_key: false,
        };
        let mut broken = encode(&header, &text, 1024).pieces().concat();
        broken.truncate(HEADER + 10);
        assert!(decode(broken).is_err());
    }

    #[tokio::test]
    async fn flush_all_leaves_the_kv_objects_of_the_pool() {
        let it = items().await;
        let kv = [&b"model/layer0"[..], b"a", b"mc"];
        for key in kv {
            it.store
                .put_from(
                    key,
                    b"kv bytes",
                    CopyDirection::PUT_DEFAULT,
                    &ReplicateConfig::default(),
                )
                .await
                .unwrap();
        }
        // A gateway item under a key a KV object also has: two objects.
        for key in [&b"a"[..], b"b", b"c"] {
            it.store(StoreCommand::Set, key, 0, 0, b"v").await.unwrap();
        }
        assert_eq!(it.get(b"a").await.unwrap().unwrap().value, b"v");
        assert_eq!(it.flush().await.unwrap(), 3);
        assert_eq!(it.get(b"a").await.unwrap(), None);
        for key in kv {
            assert_eq!(it.store.get(key).await.unwrap(), b"kv bytes");
        }
        // Another namespace is another set of items.
        let other = Items::new(it.store.clone(), 0).in_namespace(b"t:").unwrap();
        other
            .store(StoreCommand::Set, b"a", 0, 0, b"w")
            .await
            .unwrap();
        assert_eq!(it.get(b"a").await.unwrap(), None);
        assert!(Items::new(it.store.clone(), 0)
            .in_namespace(b"toolong")
            .is_err());
    }

    #[tokio::test]
    async fn cas_uniques_never_repeat_across_restarts() {
        let dir = std::env::temp_dir().join(format!("mmc-cas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memcached.cas");
        let _ = std::fs::remove_file(&path);
        let store = items().await.store;
        let mut seen = std::collections::HashSet::new();
        // Small blocks, so runs cross them; each run ends as a crash would, with
        // reserved uniques unused.
        for run in 0..4 {
            let it = Items::with_cas_block(store.clone(), 0, path.clone(), 8).unwrap();
            for i in 0..(5 + run * 7) {
                let key = format!("k{i}");
                it.store(StoreCommand::Set, key.as_bytes(), 0, 0, b"v")
                    .await
                    .unwrap();
                let cas = it.get(key.as_bytes()).await.unwrap().unwrap().cas;
                assert!(seen.insert(cas), "run {run}: unique {cas} repeated");
            }
            let mark: u64 = std::fs::read_to_string(&path)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(seen.iter().all(|&c| c < mark), "a unique past the mark");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn counters_read_as_memcached_reads_them() {
        for (value, n) in [
            (&b"10"[..], Some(10)),
            (b" 5", Some(5)),
            (b"5 x", Some(5)),
            (b"+7", Some(7)),
            (b"7\0junk", Some(7)),
            (b"", None),
            (b" ", None),
            (b" x", None),
            (b"5-", None),
            (b"0000000000000000000000001", Some(1)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"-1", None),
            (b"-0", Some(0)),
            (b"12ab", None),
            (b"abc", None),
            (b"-", None),
        ] {
            assert_eq!(counter(value), n, "{:?}", value.escape_ascii().to_string());
        }
    }

    #[tokio::test]
    async fn arithmetic_wraps_up_and_stops_at_zero_down() {
        let it = items().await;
        assert_eq!(it.add_delta(b"n", 1, true).await.unwrap(), None);
        it.store(StoreCommand::Set, b"n", 0, 0, b"18446744073709551615")
            .await
            .unwrap();
        assert_eq!(it.add_delta(b"n", 2, true).await.unwrap(), Some(1));
        assert_eq!(it.add_delta(b"n", 5, false).await.unwrap(), Some(0));
        // Twenty digits became one, padded as memcached pads it.
        let padded = format!("{:<20}", 0);
        assert_eq!(
            it.get(b"n").await.unwrap().unwrap().value,
            padded.as_bytes()
        );
        it.store(StoreCommand::Set, b"s", 0, 0, b"abc")
            .await
            .unwrap();
        assert!(matches!(
            it.add_delta(b"s", 1, true).await,
            Err(ItemError::NotNumeric)
        ));
    }

    #[tokio::test]
    async fn expiry_touch_and_flush() {
        let it = items().await;
        // An exptime in the past stores nothing (and drops what was there).
        it.store(StoreCommand::Set, b"e", 0, 0, b"v").await.unwrap();
        assert_eq!(
            it.store(StoreCommand::Set, b"e", 0, -1, b"v")
                .await
                .unwrap(),
            Outcome::Stored
        );
        assert_eq!(it.get(b"e").await.unwrap(), None);
        it.store(StoreCommand::Set, b"t", 3, 100, b"v")
            .await
            .unwrap();
        let before = it.get(b"t").await.unwrap().unwrap();
        assert!(before.expires >= unix_now() + 99);
        let touched = it.touch(b"t", 0).await.unwrap().unwrap();
        assert_eq!((touched.expires, touched.flags), (0, 3));
        assert_eq!(it.get(b"t").await.unwrap().unwrap().expires, 0);
        assert_eq!(it.touch(b"missing", 0).await.unwrap(), None);
        assert_eq!(
            it.touch(b"t", -1).await.unwrap().map(|i| i.value),
            Some(b"v".to_vec())
        );
        assert_eq!(it.get(b"t").await.unwrap(), None);
        for k in [&b"a"[..], b"b", b"c"] {
            it.store(StoreCommand::Set, k, 0, 0, b"v").await.unwrap();
        }
        assert_eq!(it.flush().await.unwrap(), 3);
        assert_eq!(it.get(b"a").await.unwrap(), None);
    }
}
