//! memcached's meta commands (`mg`, `ms`, `md`, `ma`, `me`) on the gateway's items.
//! Return flags come back in the order they were asked for; `q` leaves out the
//! nominal reply (`EN` for `mg`, `HD` for the others), never an error.

use crate::items::{unix_now, Item, ItemError, Items, Outcome};
use crate::protocol::{
    meta_line, meta_value_line, write_meta_debug, MetaFlags, MetaLine, MetaStatus, StoreCommand,
};

/// The flags of a hit, in request order.
fn returned<'a>(
    mut line: MetaLine<'a>,
    flags: &MetaFlags,
    key: &[u8],
    item: &Item,
) -> MetaLine<'a> {
    for f in flags.iter() {
        line = match f.flag {
            b'f' => line.flag_number(b'f', item.flags),
            b'c' => line.flag_number(b'c', item.cas),
            b's' => line.flag_number(b's', item.value.len()),
            b't' => line.flag_number(b't', remaining(item)),
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
    let found = match flags.number::<i64>(b'T') {
        Some(ttl) => items.touch(key, ttl).await?,
        None => items.get(key).await?,
    };
    match found {
        Some(item) => {
            let line = if flags.has(b'v') {
                meta_value_line(out, &item.value)
            } else {
                meta_line(out, MetaStatus::Hd)
            };
            returned(line, flags, key, &item).finish();
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
    let mode = match (flags.number::<u64>(b'C'), flags.mode()) {
        (Some(cas), _) => StoreCommand::Cas(cas),
        (None, Some(b'E')) => StoreCommand::Add,
        (None, Some(b'A')) => StoreCommand::Append,
        (None, Some(b'P')) => StoreCommand::Prepend,
        (None, Some(b'R')) => StoreCommand::Replace,
        _ => StoreCommand::Set,
    };
    let client_flags = flags.number::<u32>(b'F').unwrap_or(0);
    let ttl = flags.number::<i64>(b'T').unwrap_or(0);
    let s = match items.store(mode, key, client_flags, ttl, data).await? {
        Outcome::Stored => MetaStatus::Hd,
        Outcome::NotStored => MetaStatus::Ns,
        Outcome::Exists => MetaStatus::Ex,
        Outcome::NotFound => MetaStatus::Nf,
    };
    status(out, s, flags, key);
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
    if value.is_none() {
        if let Some(ttl) = flags.number::<i64>(b'N') {
            let initial = flags.number::<u64>(b'J').unwrap_or(0);
            let text = initial.to_string();
            match items
                .store(StoreCommand::Add, key, 0, ttl, text.as_bytes())
                .await?
            {
                Outcome::Stored => value = Some(initial),
                // Someone created it meanwhile: count on theirs.
                _ => value = items.add_delta(key, delta, up).await?,
            }
        }
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
    match item {
        Some(item) => returned(line, flags, key, &item).finish(),
        None => line.echo(flags, key).finish(),
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
                ("cls", &1),
                ("size", &item.value.len()),
            ],
        ),
        None => out.extend_from_slice(b"EN\r\n"),
    }
    Ok(())
}
