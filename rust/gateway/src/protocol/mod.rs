//! The memcached wire protocol, classic text and meta commands, as memcached 1.6 speaks
//! it: an incremental request parser and the reply writers.
//!
//! The server appends what it reads to a buffer and calls [`parse`] until it answers
//! `Ok(None)`; replies to a pipelined burst go into one `Vec<u8>` and out in one write.
//!
//! Answers are checked against a real memcached 1.6.18 by a differential fuzzer
//! (tests/rust/tests/memcached_diff.rs). Where this knowingly differs from it:
//! - keys with control characters are refused (memcached checks only their length);
//! - the item limit applies to the data alone (memcached also counts its item header);
//! - any line past `max_line_len` ends the connection, whatever the read sizes, and
//!   `get`/`gets` lines may grow to `max_item_size`;
//! - base64 keys are decoded strictly (memcached skips invalid characters).

mod args;
mod error;
mod meta;
#[cfg(test)]
mod proptests;
mod request;
mod response;
#[cfg(test)]
mod tests;
mod text;

pub use args::CNumber;
pub use error::{ErrorReply, ParseError};
pub(crate) use meta::check_opaque;
pub use request::{Keys, MetaFlag, MetaFlags, Request, StoreCommand};
pub use response::{
    meta_line, meta_value_line, value_line, write_error, write_meta_debug, write_meta_noop,
    write_number, write_reply, write_stat, write_value, write_version, MetaLine, MetaStatus, Reply,
};

/// What a client may make the server accept or buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes (memcached's `KEY_MAX_LENGTH`, 250).
    pub max_key_len: usize,
    /// Largest data block a storage command may carry (memcached's `-I`, 1 MiB).
    pub max_item_size: usize,
    /// Longest command line, its newline excluded. `get` and `gets` lines may grow to
    /// `max_item_size` instead: memcached lets multigets outgrow its line buffer.
    pub max_line_len: usize,
    /// Connections served at once (memcached's `-c`); one more is told so and closed.
    pub max_connections: usize,
    /// Threads connections are served on (memcached's `-t`); 0: one per core.
    pub threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_len: 250,
            max_item_size: 1024 * 1024,
            max_line_len: 2048,
            max_connections: 1024,
            threads: 0,
        }
    }
}

/// Parses the first request in `buf`: `Ok(None)` until the whole request (its line and
/// any data block) has arrived, else the request and how many bytes it took.
///
/// On [`ParseError::Rejected`] the server replies (unless `noreply`) and drops `skip`
/// bytes, which may run past what has arrived; on [`ParseError::LineTooLong`] it closes
/// the connection, as memcached does.
pub fn parse<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(Request<'a>, usize)>, ParseError> {
    let Some((line, line_len)) = next_line(buf, limits)? else {
        return Ok(None);
    };
    let cmd = Command {
        tokens: args::tokenize(line),
        line_len,
        buf,
        limits: *limits,
    };
    match cmd.tokens.first() {
        // No command is shorter than two bytes; meta commands are exactly two.
        Some(name) if name.len() == 2 && name[0] == b'm' => meta::parse(&cmd, name[1]),
        Some(name) if name.len() >= 2 => text::parse(&cmd),
        _ => Err(ParseError::unknown_command(line_len)),
    }
}

/// Finds the first line: its text without the line ending, and its length with it.
fn next_line<'a>(buf: &'a [u8], limits: &Limits) -> Result<Option<(&'a [u8], usize)>, ParseError> {
    let limit = line_limit(buf, limits);
    // Room for `limit` bytes of text plus "\r\n": so the answer never depends on where
    // the stream was split.
    let window = &buf[..buf.len().min(limit.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            // memcached accepts a bare "\n" and strips a "\r" before it.
            let text = match &buf[..nl] {
                [text @ .., b'\r'] if nl > 1 => text,
                text => text,
            };
            if text.len() > limit {
                return Err(ParseError::LineTooLong);
            }
            Ok(Some((text, nl + 1)))
        }
        None if window.len() > limit.saturating_add(1) => Err(ParseError::LineTooLong),
        None => Ok(None),
    }
}

fn line_limit(buf: &[u8], limits: &Limits) -> usize {
    let start = buf.iter().position(|&b| b != b' ').unwrap_or(buf.len());
    let head = &buf[start..];
    // A line whose first word has not all arrived (leading spaces, "g", "ge", ...) may
    // still be a get: it keeps the get's limit until it shows otherwise, so the answer
    // never depends on where the stream was split.
    let may_be = |cmd: &[u8]| head.starts_with(cmd) || cmd.starts_with(head);
    if may_be(b"get ") || may_be(b"gets ") {
        limits.max_line_len.max(limits.max_item_size)
    } else {
        limits.max_line_len
    }
}

/// A complete command line, and the buffer it starts.
struct Command<'a> {
    tokens: args::Tokens<'a>,
    /// Length of the line with its ending: where a data block starts.
    line_len: usize,
    buf: &'a [u8],
    limits: Limits,
}

enum DataBlock<'a> {
    Incomplete,
    Complete(&'a [u8]),
    /// The `len` bytes are not followed by "\r\n".
    BadEnd,
}

impl<'a> Command<'a> {
    /// The `len`-byte data block after the line. memcached reads `len + 2` bytes whatever
    /// they are, then checks the last two.
    fn data_block(&self, len: usize) -> DataBlock<'a> {
        let start = self.line_len;
        let end = start + len;
        match self.buf.get(end..end + 2) {
            None => DataBlock::Incomplete,
            Some(b"\r\n") => DataBlock::Complete(&self.buf[start..end]),
            Some(_) => DataBlock::BadEnd,
        }
    }

    /// Bytes taken by the line and a `len`-byte data block.
    fn with_block(&self, len: usize) -> usize {
        self.line_len + len + 2
    }
}
