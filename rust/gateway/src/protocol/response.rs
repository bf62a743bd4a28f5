//! Reply writers. Each appends one reply to `out`, so the replies to a pipelined burst
//! can go out in one write.

use std::fmt::Display;
use std::io::Write;

use super::error::ErrorReply;
use super::MetaFlags;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The fixed one-line replies of the text protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Touched,
    Ok,
    /// Ends a retrieval or `stats` reply.
    End,
    /// `stats reset`.
    Reset,
}

impl Reply {
    pub fn as_str(self) -> &'static str {
        match self {
            Reply::Stored => "STORED",
            Reply::NotStored => "NOT_STORED",
            Reply::Exists => "EXISTS",
            Reply::NotFound => "NOT_FOUND",
            Reply::Deleted => "DELETED",
            Reply::Touched => "TOUCHED",
            Reply::Ok => "OK",
            Reply::End => "END",
            Reply::Reset => "RESET",
        }
    }
}

pub fn write_reply(out: &mut Vec<u8>, reply: Reply) {
    line(out, reply.as_str().as_bytes());
}

/// One item of a `get`/`gets`/`gat`/`gats` reply; `cas` for the `s` forms. The reply
/// ends with [`Reply::End`] after the last item.
pub fn write_value(out: &mut Vec<u8>, key: &[u8], flags: u32, data: &[u8], cas: Option<u64>) {
    value_line(&mut *out, key, flags, data.len(), cas).expect("writing to a Vec cannot fail");
    line(out, data);
}

/// The `VALUE` line before an item's `len` bytes of data (see [`write_value`]); fails
/// only where `w` has no room left.
pub fn value_line(
    mut w: impl Write,
    key: &[u8],
    flags: u32,
    len: usize,
    cas: Option<u64>,
) -> std::io::Result<()> {
    // itoa rather than `write!`: this line goes before every value a get returns.
    let mut n = itoa::Buffer::new();
    w.write_all(b"VALUE ")?;
    w.write_all(key)?;
    w.write_all(b" ")?;
    w.write_all(n.format(flags).as_bytes())?;
    w.write_all(b" ")?;
    w.write_all(n.format(len).as_bytes())?;
    if let Some(cas) = cas {
        w.write_all(b" ")?;
        w.write_all(n.format(cas).as_bytes())?;
    }
    w.write_all(b"\r\n")
}

/// The new value after `incr`/`decr`.
pub fn write_number(out: &mut Vec<u8>, value: u64) {
    push(out, format_args!("{value}\r\n"));
}

pub fn write_version(out: &mut Vec<u8>, version: &str) {
    push(out, format_args!("VERSION {version}\r\n"));
}

/// One `STAT <name> <value>` line; the reply ends with [`Reply::End`].
pub fn write_stat(out: &mut Vec<u8>, name: &str, value: impl Display) {
    push(out, format_args!("STAT {name} {value}\r\n"));
}

pub fn write_error(out: &mut Vec<u8>, reply: &ErrorReply) {
    push(out, format_args!("{reply}\r\n"));
}

/// The status codes of meta replies (`VA` is [`meta_value_line`], `MN`
/// [`write_meta_noop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaStatus {
    /// Success without a value.
    Hd,
    /// Not found (`md`, `ma`).
    Nf,
    /// Not stored (`ms`).
    Ns,
    /// CAS mismatch.
    Ex,
    /// Miss (`mg`).
    En,
}

impl MetaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MetaStatus::Hd => "HD",
            MetaStatus::Nf => "NF",
            MetaStatus::Ns => "NS",
            MetaStatus::Ex => "EX",
            MetaStatus::En => "EN",
        }
    }
}

/// Starts a meta reply line; add the return flags in the order they were asked for,
/// then [`MetaLine::finish`].
pub fn meta_line(out: &mut Vec<u8>, status: MetaStatus) -> MetaLine<'_> {
    out.extend_from_slice(status.as_str().as_bytes());
    MetaLine { out, data: None }
}

/// Starts a `VA <size>` reply carrying `data`, written by [`MetaLine::finish`].
pub fn meta_value_line<'a>(out: &'a mut Vec<u8>, data: &'a [u8]) -> MetaLine<'a> {
    push(out, format_args!("VA {}", data.len()));
    MetaLine {
        out,
        data: Some(data),
    }
}

pub fn write_meta_noop(out: &mut Vec<u8>) {
    line(out, b"MN");
}

/// The `me` reply: `ME <key> name=value ...`, a binary key base64-encoded. memcached
/// sends `exp`, `la`, `cas`, `fetch`, `cls` and `size`, in that order.
pub fn write_meta_debug(
    out: &mut Vec<u8>,
    key: &[u8],
    base64: bool,
    fields: &[(&str, &dyn Display)],
) {
    out.extend_from_slice(b"ME ");
    if base64 {
        out.extend_from_slice(STANDARD.encode(key).as_bytes());
    } else {
        out.extend_from_slice(key);
    }
    for (name, value) in fields {
        push(out, format_args!(" {name}={value}"));
    }
    out.extend_from_slice(b"\r\n");
}

/// A meta reply line under construction. The builders take and give back the line, so
/// it is finished exactly once.
#[must_use = "a meta reply is only terminated by finish()"]
pub struct MetaLine<'a> {
    out: &'a mut Vec<u8>,
    data: Option<&'a [u8]>,
}

impl MetaLine<'_> {
    /// A flag alone, such as `W`, `X` or `Z`.
    pub fn flag(self, flag: u8) -> Self {
        self.out.extend_from_slice(&[b' ', flag]);
        self
    }

    /// A flag and its token, such as `O` and the opaque.
    pub fn flag_token(self, flag: u8, token: &[u8]) -> Self {
        let line = self.flag(flag);
        line.out.extend_from_slice(token);
        line
    }

    /// A flag and a number, such as `c` and the CAS, or `t` and -1 for no expiry.
    pub fn flag_number(self, flag: u8, value: impl Display) -> Self {
        let line = self.flag(flag);
        push(line.out, format_args!("{value}"));
        line
    }

    /// `k` and the key; a binary key goes back base64-encoded and followed by `b`.
    pub fn key(self, key: &[u8], base64: bool) -> Self {
        let line = self.flag(b'k');
        if base64 {
            line.out.extend_from_slice(STANDARD.encode(key).as_bytes());
            line.flag(b'b')
        } else {
            line.out.extend_from_slice(key);
            line
        }
    }

    /// Echoes the request's `O` and `k` flags, in their order: all a miss, `NF`, `NS`,
    /// `EX` or plain `HD` carries back.
    pub fn echo(self, request: &MetaFlags, key: &[u8]) -> Self {
        request.iter().fold(self, |line, flag| match flag.flag {
            b'O' => line.flag_token(b'O', flag.token.as_deref().unwrap_or_default()),
            b'k' => line.key(key, request.base64_key()),
            _ => line,
        })
    }

    /// Ends the line, then writes the value block of a `VA` reply.
    pub fn finish(self) {
        self.out.extend_from_slice(b"\r\n");
        if let Some(data) = self.data {
            line(self.out, data);
        }
    }
}

fn line(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn push(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    out.write_fmt(args).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MetaFlag, ParseError};

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_replies() {
        let all = [
            (Reply::Stored, "STORED\r\n"),
            (Reply::NotStored, "NOT_STORED\r\n"),
            (Reply::Exists, "EXISTS\r\n"),
            (Reply::NotFound, "NOT_FOUND\r\n"),
            (Reply::Deleted, "DELETED\r\n"),
            (Reply::Touched, "TOUCHED\r\n"),
            (Reply::Ok, "OK\r\n"),
            (Reply::End, "END\r\n"),
            (Reply::Reset, "RESET\r\n"),
        ];
        for (reply, text) in all {
            assert_eq!(written(|out| write_reply(out, reply)), text);
        }
        assert_eq!(
            written(|out| write_number(out, u64::MAX)),
            "18446744073709551615\r\n"
        );
        assert_eq!(
            written(|out| write_version(out, "1.6.21")),
            "VERSION 1.6.21\r\n"
        );
        assert_eq!(
            written(|out| write_stat(out, "curr_items", 42)),
            "STAT curr_items 42\r\n"
        );
    }

    #[test]
    fn values_batch_into_one_buffer() {
        let mut out = Vec::new();
        write_value(&mut out, b"a", 5, b"x\r\ny", None);
        write_value(&mut out, b"b", u32::MAX, b"", Some(7));
        write_reply(&mut out, Reply::End);
        assert_eq!(
            out,
            b"VALUE a 5 4\r\nx\r\ny\r\nVALUE b 4294967295 0 7\r\n\r\nEND\r\n"
        );
    }

    #[test]
    fn error_replies() {
        assert_eq!(
            written(|out| write_error(out, &ErrorReply::Error)),
            "ERROR\r\n"
        );
        assert_eq!(
            written(|out| write_error(out, &ErrorReply::Client("bad data chunk"))),
            "CLIENT_ERROR bad data chunk\r\n"
        );
        assert_eq!(
            written(|out| write_error(out, &ErrorReply::Server("object too large for cache"))),
            "SERVER_ERROR object too large for cache\r\n"
        );
        let error = ParseError::Rejected {
            reply: ErrorReply::Client("bad command line format"),
            skip: 3,
            noreply: false,
        };
        assert_eq!(error.to_string(), "CLIENT_ERROR bad command line format");
    }

    #[test]
    fn meta_replies() {
        let request: MetaFlags = [
            MetaFlag::new(b'v', None),
            MetaFlag::new(b'k', None),
            MetaFlag::new(b'q', None),
            MetaFlag::new(b'O', Some(b"77")),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            written(|out| meta_line(out, MetaStatus::En)
                .echo(&request, b"foo")
                .finish()),
            "EN kfoo O77\r\n"
        );
        assert_eq!(
            written(|out| meta_value_line(out, b"hi\r\n")
                .flag_number(b'c', 12u64)
                .flag_number(b't', -1)
                .flag_token(b'O', b"77")
                .flag(b'W')
                .finish()),
            "VA 4 c12 t-1 O77 W\r\nhi\r\n\r\n"
        );
        for (status, text) in [
            (MetaStatus::Hd, "HD\r\n"),
            (MetaStatus::Nf, "NF\r\n"),
            (MetaStatus::Ns, "NS\r\n"),
            (MetaStatus::Ex, "EX\r\n"),
            (MetaStatus::En, "EN\r\n"),
        ] {
            assert_eq!(written(|out| meta_line(out, status).finish()), text);
        }
        assert_eq!(written(write_meta_noop), "MN\r\n");
    }

    #[test]
    fn binary_keys_go_back_encoded() {
        let request: MetaFlags = [MetaFlag::new(b'b', None), MetaFlag::new(b'k', None)]
            .into_iter()
            .collect();
        assert_eq!(
            written(|out| meta_line(out, MetaStatus::Hd)
                .echo(&request, b"foo\0bar")
                .flag(b'X')
                .finish()),
            "HD kZm9vAGJhcg== b X\r\n"
        );
        assert_eq!(
            written(|out| write_meta_debug(
                out,
                b"foo\0bar",
                true,
                &[("exp", &-1), ("la", &3), ("fetch", &"no")]
            )),
            "ME Zm9vAGJhcg== exp=-1 la=3 fetch=no\r\n"
        );
        assert_eq!(
            written(|out| write_meta_debug(out, b"foo", false, &[("cas", &9u64)])),
            "ME foo cas=9\r\n"
        );
    }
}
