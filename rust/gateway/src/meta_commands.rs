//! memcached's meta commands (`mg`, `ms`, `md`, `ma`, `me`) on the gateway's items.
//! Return flags come back in the order they were asked for; `q` leaves out the
//! nominal reply (`EN` for `mg`, `HD` for the others), never an error.

use crate::items::{unix_now, Item, ItemError, Items, Outcome};
use crate::protocol::{
    meta_line, meta_value_line, write_error, write_meta_debug, ErrorReply, MetaFlags, MetaLine,
    MetaStatus, StoreCommand,
};

/// The flags of a hit, in request order.
/// `before_touch`: the expiry the item had before `T` changed it, which memcached
/// reports for a `t` asked before the `T` (it applies flags in order).
fn returned<'a>(
    mut line: MetaLine<'a>,
    flags: &MetaFlags,
    key: &[u8],
    item: &Item,
    before_touch: Option<u64>,
) -> MetaLine<'a> {
    let mut touched = false;
    for f in flags.iter() {
        touched |= f.flag == b'T';
        line = match f.flag {
            b'f' => line.flag_number(b'f', item.flags),
            b'c' => line.flag_number(b'c', item.cas),
            b's' => line.flag_number(b's', item.value.len()),
            b't' => match before_touch.filter(|_| !touched) {
                Some(expires) => line.flag_number(
                    b't',
                    remaining(&Item {
                        expires,
                        ..item.clone()
                    }),
                ),
                None => line.flag_number(b't', remaining(item)),
            },
            b'k' => line.key(key, flags.base64_key()),
            b'O' => line.flag_token(b'O', f.token.as_deref().unwrap_or_default()),
            _ => line,
        };
    }
    line
}

/// Seconds to expiry; -1 for none.
fn remaining(item: &Item) -> i64 {
    match item.expires {
        0 => -1,
        e => e.saturating_sub(unix_now()) as i64,
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
            returned(line, flags, key, &item, before_touch).finish();
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
    let (outcome, cas) = items
        .store_cas(mode, check, key, client_flags, ttl, data)
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

/// `ma`: incr (`MI`, the default) or decr (`MD`) by `D` (1); with `N<ttl>` a missing
/// item is created with `J` (0) and that value returned.
pub async fn arithmetic(
    items: &Items,
    key: &[u8],
    flags: &MetaFlags,
    out: &mut Vec<u8>,
) -> Result<(), ItemError> {
    let up = !matches!(flags.mode(), Some(b'D' | b'-'));
    let delta = flags.number::<u64>(b'D').unwrap_or(1);
    let mut value = items.add_delta(key, delta, up).await?;
    // The unique of an item created here, which may expire at once (`N-1`).
    let mut created = None;
    if value.is_none() {
        if let Some(ttl) = flags.number::<i32>(b'N').map(i64::from) {
            let initial = flags.number::<u64>(b'J').unwrap_or(0);
            let text = initial.to_string();
            match items
                .store_cas(StoreCommand::Add, None, key, 0, ttl, text.as_bytes())
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
    }
    // memcached checks the opaque only as it writes the reply: after the arithmetic
    // (which stays done), and after a non-numeric value's error.
    if let Err(message) = crate::protocol::check_opaque(flags) {
        write_error(out, &ErrorReply::Client(message));
        return Ok(());
    }
    let Some(n) = value else {
        status(out, MetaStatus::Nf, flags, key);
        return Ok(());
    };
    let item = items.get(key).await?;
    let text = n.to_string();
    let line = if flags.has(b'v') {
        meta_value_line(out, text.as_bytes())
    } else if flags.quiet() {
        return Ok(());
    } else {
        meta_line(out, MetaStatus::Hd)
    };
    match (item, created) {
        (Some(item), _) => returned(line, flags, key, &item, None).finish(),
        // Created and already expired: memcached still reports what it made.
        (None, Some(cas)) => {
            let made = Item {
                flags: 0,
                cas,
                expires: 0,
                value: text.as_bytes().to_vec(),
            };
            returned(line, flags, key, &made, None).finish()
        }
        (None, None) => line.echo(flags, key).finish(),
    }
    Ok(())
}

/// `me`: what memcached's debug line says of an item, as far as the gateway knows it.
pub async fn debug(
    items: &Items,
    key: &[u8],
    base64: bool,
    out: &mut Vec<u8>,
) -> Result<(), ItemError> {
    match items.get(key).await? {
        Some(item) => write_meta_debug(
            out,
            key,
            base64,
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
        };
        assert_eq!(item_size(b"a", &item(0, 5)), 65);
        assert_eq!(item_size(b"a", &item(5, 5)), 69);
        assert_eq!(slab_class(69), 1);
        assert_eq!(slab_class(96), 1);
        assert_eq!(slab_class(97), 2);
        assert_eq!(slab_class(260), 6);
    }
}
