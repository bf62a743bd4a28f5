//! memcached's meta commands (`mg`, `ms`, `md`, `ma`, `me`) on the gateway's items.
//! Return flags come back in the order they were asked for; `q` leaves out the
//! nominal reply (`EN` for `mg`, `HD` for the others), never an error.

use crate::items::{expiry, unix_now, Item, ItemError, Items, Outcome, StoreOptions};
use crate::protocol::{
    meta_line, meta_value_line, write_error, write_meta_debug, ErrorReply, MetaFlags, MetaLine,
    MetaStatus, StoreCommand,
};

/// The flags of a hit, in request order.
/// `expires_at(i)`: the expiry to report for a `t` at flag `i`, where it is not the
/// item's: memcached applies `T` (and `ma`'s `N`) in flag order, so a `t` before them
/// reports the expiry before.
fn returned<'a>(
    mut line: MetaLine<'a>,
    flags: &MetaFlags,
    key: &[u8],
    item: &Item,
    expires_at: impl Fn(usize) -> Option<u64>,
) -> MetaLine<'a> {
    for (i, f) in flags.iter().enumerate() {
        line = match f.flag {
            b'f' => line.flag_number(b'f', item.flags),
            b'c' => line.flag_number(b'c', item.cas),
            b's' => line.flag_number(b's', item.value.len()),
            b't' => {
                let expires = expires_at(i).unwrap_or(item.expires);
                line.flag_number(
                    b't',
                    remaining(&Item {
                        expires,
                        ..item.clone()
                    }),
                )
            }
            // Encoded when the item was stored under an encoded key, whatever this
            // request sent (memcached marks the item).
            b'k' => line.key(key, item.binary_key),
            b'O' => line.flag_token(b'O', f.token.as_deref().unwrap_or_default()),
            _ => line,
        };
    }
    line
}

/// Seconds to expiry; -1 for none. Past expiries (an item a `T` just expired) wrap
/// as memcached's unsigned 32-bit arithmetic wraps them.
fn remaining(item: &Item) -> i64 {
    match item.expires {
        0 => -1,
        e => i64::from((e as i64 - unix_now() as i64) as u32),
    }
}

/// A reply without a value: the status, then `O` and `k` echoed.
fn status(out: &mut Vec<u8>, s: MetaStatus, flags: &MetaFlags, key: &[u8]) {
    let nominal = matches!(s, MetaStatus::Hd);
    if !(nominal && flags.quiet()) {
        meta_line(out, s).echo(flags, key).finish();
    }
}

pub async fn get(
    items: &Items,
    key: &[u8],
    flags: &MetaFlags,
    out: &mut Vec<u8>,
) -> Result<(), ItemError> {
    let order = |flag| flags.iter().position(|f| f.flag == flag);
    if let Err(message) = crate::protocol::check_opaque(flags) {
        // memcached has applied a `T` met before the opaque.
        if let (Some(ttl), true) = (flags.number::<i32>(b'T'), order(b'T') < order(b'O')) {
            items.touch(key, ttl.into()).await?;
        }
        write_error(out, &ErrorReply::Client(message));
        return Ok(());
    }
    let mut before_touch = None;
    let found = match flags.number::<i32>(b'T').map(i64::from) {
        Some(ttl) => {
            if order(b't') < order(b'T') {
                before_touch = items.get(key).await?.map(|item| item.expires);
            }
            items.touch(key, ttl).await?
        }
        None => items.get(key).await?,
    };
    match found {
        Some(item) => {
            let line = if flags.has(b'v') {
                meta_value_line(out, &item.value)
            } else {
                meta_line(out, MetaStatus::Hd)
            };
            let touch_at = flags.iter().position(|f| f.flag == b'T');
            let expires_at = |i| before_touch.filter(|_| touch_at.is_some_and(|t| i < t));
            returned(line, flags, key, &item, expires_at).finish();
        }
        None if flags.quiet() => {}
        None => meta_line(out, MetaStatus::En).echo(flags, key).finish(),
    }
    Ok(())
}

pub async fn set(
    items: &Items,
    key: &[u8],
    data: &[u8],
    flags: &MetaFlags,
    out: &mut Vec<u8>,
) -> Result<(), ItemError> {
    // As memcached 1.6.18 combines a mode with `C`: add ignores it, append and prepend
    // need it to match, set and replace become a `cas`.
    let check = flags.number::<u64>(b'C');
    let mode = match (check, flags.mode()) {
        (_, Some(b'E')) => StoreCommand::Add,
        (_, Some(b'A')) => StoreCommand::Append,
        (_, Some(b'P')) => StoreCommand::Prepend,
        (Some(cas), _) => StoreCommand::Cas(cas),
        (None, Some(b'R')) => StoreCommand::Replace,
        _ => StoreCommand::Set,
    };
    let client_flags = flags.number::<u32>(b'F').unwrap_or(0);
    let ttl = flags.number::<i32>(b'T').map(i64::from).unwrap_or(0);
    let options = StoreOptions {
        // An append or prepend with C0 checks nothing.
        check: check.filter(|&unique| unique != 0),
        binary_key: flags.base64_key(),
    };
    let (outcome, cas) = items
        .store_cas(mode, options, key, client_flags, ttl, data)
        .await?;
    let s = match outcome {
        Outcome::Stored => MetaStatus::Hd,
        Outcome::NotStored => MetaStatus::Ns,
        Outcome::Exists => MetaStatus::Ex,
        Outcome::NotFound => MetaStatus::Nf,
    };
    if flags.has(b'c') && !(s == MetaStatus::Hd && flags.quiet()) {
        // memcached's ms returns the new item's CAS under `c` (0 when it stored
        // nothing), among `O` and `k`.
        let line = flags
            .iter()
            .fold(meta_line(out, s), |line, f| match f.flag {
                b'O' => line.flag_token(b'O', f.token.as_deref().unwrap_or_default()),
                b'k' => line.key(key, flags.base64_key()),
                b'c' => line.flag_number(b'c', cas),
                _ => line,
            });
        line.finish();
    } else {
        status(out, s, flags, key);
    }
    Ok(())
}

pub async fn delete(
    items: &Items,
    key: &[u8],
    flags: &MetaFlags,
    out: &mut Vec<u8>,
) -> Result<(), ItemError> {
    let s = match flags.number::<u64>(b'C') {
        Some(cas) => match items.get(key).await? {
            None => MetaStatus::Nf,
            Some(item) if item.cas != cas => MetaStatus::Ex,
            Some(_) => deleted(items.delete(key).await?),
        },
        None => deleted(items.delete(key).await?),
    };
    status(out, s, flags, key);
    Ok(())
}

fn deleted(was_there: bool) -> MetaStatus {
    if was_there {
        MetaStatus::Hd
    } else {
        MetaStatus::Nf
    }
}

/// `ma`: incr (`MI`, the default) or decr (`MD`) by `D` (1); with `N` a missing item
/// is created with `J` (0) and that value returned.
pub async fn arithmetic(
    items: &Items,
    key: &[u8],
    flags: &MetaFlags,
    out: &mut Vec<u8>,
) -> Result<(), ItemError> {
    let up = !matches!(flags.mode(), Some(b'D' | b'-'));
    let delta = flags.number::<u64>(b'D').unwrap_or(1);
    let ttl = |flag| flags.number::<i32>(flag).map(i64::from);
    // memcached 1.6.18 sets the expiry of `N` (an item it created) or `T` as it meets
    // them among the flags: the last one wins, and a `t` before them reports the
    // expiry before.
    // memcached applies a `T` to the item it counted on, which only lasts when the
    // number was rewritten in place (no longer than the value it replaced).
    let old_len = match flags.has(b'T') {
        true => items.get(key).await?.map(|item| item.value.len()),
        false => None,
    };
    let mut value = items.add_delta(key, delta, up).await?;
    // The unique of an item created here, which may expire at once (`N-1`).
    let mut created = None;
    if value.is_none() && flags.has(b'N') {
        let initial = flags.number::<u64>(b'J').unwrap_or(0);
        let text = initial.to_string();
        // memcached 1.6.18 does not mark an item ma creates as stored under a
        // binary key, whatever the request sent.
        let options = StoreOptions::default();
        // The last `N` or `T`, unless a too-long opaque stops the flags before it:
        // then the item stays as made, without expiry.
        let stop = match crate::protocol::check_opaque(flags) {
            Err(_) => flags.iter().position(|f| f.flag == b'O').unwrap_or(0),
            Ok(()) => flags.0.len(),
        };
        let exptime = flags.0[..stop]
            .iter()
            .rev()
            .find(|f| matches!(f.flag, b'N' | b'T'))
            .and_then(|f| ttl(f.flag))
            .unwrap_or(0);
        match items
            .store_cas(StoreCommand::Add, options, key, 0, exptime, text.as_bytes())
            .await?
        {
            (Outcome::Stored, cas) => {
                value = Some(initial);
                created = Some(cas);
            }
            // Someone created it meanwhile: count on theirs.
            _ => value = items.add_delta(key, delta, up).await?,
        }
    }
    // memcached checks the opaque only as it writes the reply: after the arithmetic
    // (which stays done), and after a non-numeric value's error.
    let opaque = crate::protocol::check_opaque(flags);
    let Some(n) = value else {
        if let Err(message) = opaque {
            write_error(out, &ErrorReply::Client(message));
        } else {
            status(out, MetaStatus::Nf, flags, key);
        }
        return Ok(());
    };
    let text = n.to_string();
    // The item as counted, before any `T`: what `t`s before it report.
    let counted = items.get(key).await?;
    // A `T` met before a too-long opaque has been applied.
    let at = |flag| flags.iter().position(|f| f.flag == flag);
    let in_place = old_len.is_some_and(|len| text.len() <= len);
    let touch_applies = opaque.is_ok() || at(b'T') < at(b'O');
    if let (None, true, true, Some(exptime)) = (created, in_place, touch_applies, ttl(b'T')) {
        items.touch(key, exptime).await?;
    }
    if let Err(message) = opaque {
        write_error(out, &ErrorReply::Client(message));
        return Ok(());
    }
    let now = unix_now();
    let at_once = |exptime| expiry(exptime, now).unwrap_or(now - 1);
    let mut item = match counted {
        Some(item) => item,
        // Created and already expired: memcached still reports what it made.
        None => Item {
            flags: 0,
            cas: created.unwrap_or(0),
            expires: at_once(-1),
            value: text.as_bytes().to_vec(),
            binary_key: false,
        },
    };
    // The expiry a `t` at each flag reports.
    let mut expires = if created.is_some() { 0 } else { item.expires };
    let mut expires_at = Vec::with_capacity(flags.0.len());
    for f in flags.iter() {
        if f.flag == b'T' || (f.flag == b'N' && created.is_some()) {
            expires = ttl(f.flag).map_or(expires, at_once);
        }
        expires_at.push(expires);
    }
    // q silences a count, value or not, but not the report of an item `N` created
    // (memcached 1.6.18).
    if flags.quiet() && created.is_none() {
        return Ok(());
    }
    let line = if flags.has(b'v') {
        meta_value_line(out, text.as_bytes())
    } else {
        meta_line(out, MetaStatus::Hd)
    };
    // ma shows the key as this request sent it, unlike mg.
    item.binary_key = flags.base64_key();
    returned(line, flags, key, &item, |i| Some(expires_at[i])).finish();
    Ok(())
}

/// `me`: what memcached's debug line says of an item, as far as the gateway knows it.
/// The key shows base64-encoded when the item was stored so, whatever `me` was sent.
pub async fn debug(
    items: &Items,
    key: &[u8],
    _base64: bool,
    out: &mut Vec<u8>,
) -> Result<(), ItemError> {
    match items.get(key).await? {
        Some(item) => write_meta_debug(
            out,
            key,
            item.binary_key,
            &[
                ("exp", &remaining(&item)),
                ("la", &0),
                ("cas", &item.cas),
                ("fetch", &"no"),
                ("cls", &slab_class(item_size(key, &item))),
                ("size", &item_size(key, &item)),
            ],
        ),
        None => out.extend_from_slice(b"EN\r\n"),
    }
    Ok(())
}

/// What memcached (64-bit, CAS on) counts as an item's size: its 48-byte header, the
/// key and a NUL, the value and "\r\n", the CAS, and client flags when not 0.
fn item_size(key: &[u8], item: &Item) -> usize {
    let flags = if item.flags == 0 { 0 } else { 4 };
    48 + key.len() + 1 + item.value.len() + 2 + 8 + flags
}

/// The slab class memcached's default slabs (`-n 48 -f 1.25`, 512 KiB largest chunk)
/// would keep an item of `size` bytes in, as `me` reports it.
fn slab_class(size: usize) -> usize {
    const LARGEST: f64 = 512.0 * 1024.0;
    let mut chunk: u32 = 96;
    let mut class = 1;
    // As memcached's slabs_init: stop before a class would pass largest / factor; the
    // last class is the largest chunk.
    while class < 63 && f64::from(chunk) < LARGEST / 1.25 {
        chunk = chunk.next_multiple_of(8);
        if size <= chunk as usize {
            return class;
        }
        chunk = (f64::from(chunk) * 1.25) as u32;
        class += 1;
    }
    class
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_classes_as_memcached_reports_them() {
        let item = |flags, len| Item {
            flags,
            cas: 1,
            expires: 0,
            value: vec![b'x'; len],
            binary_key: false,
        };
        assert_eq!(item_size(b"a", &item(0, 5)), 65);
        assert_eq!(item_size(b"a", &item(5, 5)), 69);
        assert_eq!(slab_class(69), 1);
        assert_eq!(slab_class(96), 1);
        assert_eq!(slab_class(97), 2);
        assert_eq!(slab_class(260), 6);
    }
}
