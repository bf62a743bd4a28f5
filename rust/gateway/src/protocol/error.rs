//! Why a request was refused, and what memcached answers for it.

use std::fmt;

/// Messages memcached sends after `CLIENT_ERROR ` / `SERVER_ERROR `.
pub(super) mod msg {
    pub const BAD_FORMAT: &str = "bad command line format";
    pub const BAD_DATA_CHUNK: &str = "bad data chunk";
    pub const TOO_LARGE: &str = "object too large for cache";
    pub const BAD_EXPTIME: &str = "invalid exptime argument";
    pub const BAD_DELTA: &str = "invalid numeric delta argument";
    pub const DELETE_USAGE: &str = "bad command line format.  Usage: delete <key> [noreply]";
    pub const FLAGS_TOO_LONG: &str = "options flags too long";
    /// `mg`'s own wording of [`FLAGS_TOO_LONG`].
    pub const MG_FLAGS_TOO_LONG: &str = "options flags are too long";
    pub const DUPLICATE_FLAG: &str = "duplicate flag";
    pub const INVALID_FLAG: &str = "invalid flag";
    /// What `md` and `ma` say for any flag that fails to parse.
    pub const INVALID_OR_DUPLICATE_FLAG: &str = "invalid or duplicate flag";
    pub const BAD_TOKEN: &str = "bad token in command line format";
    pub const BAD_KEY_ENCODING: &str = "error decoding key";
    pub const BAD_MODE_LENGTH: &str = "incorrect length for M token";
    pub const BAD_INITIAL: &str = "invalid numeric initial value";
    pub const BAD_DELTA_VALUE: &str = "invalid numeric delta value";
    pub const OPAQUE_TOO_LONG: &str = "opaque token too long";
    pub const BAD_MS_MODE: &str = "invalid mode for ms M token";
    pub const BAD_MA_MODE: &str = "invalid mode for ma M token";
    /// A whole reply line: memcached runs without `-A` by default.
    pub const SHUTDOWN_DISABLED: &str = "ERROR: shutdown not enabled";
}

/// An error line, without its "\r\n".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReply {
    /// `ERROR`: an unknown command, or a known one with the wrong number of arguments.
    Error,
    /// `CLIENT_ERROR <message>`.
    Client(&'static str),
    /// `SERVER_ERROR <message>`.
    Server(&'static str),
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorReply::Error => f.write_str("ERROR"),
            ErrorReply::Client(m) => write!(f, "CLIENT_ERROR {m}"),
            ErrorReply::Server(m) => write!(f, "SERVER_ERROR {m}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No newline within the line limit. memcached closes the connection without a
    /// reply: the rest of the stream can't be framed.
    #[error("request line too long")]
    LineTooLong,
    /// A `set` or `ms` whose value is over the item limit: refused like
    /// [`ParseError::Rejected`] with `SERVER_ERROR object too large for cache`, and,
    /// as memcached does so that no stale value outlives a failed set, the item under
    /// `key` is removed.
    #[error("SERVER_ERROR object too large for cache")]
    TooLargeSet {
        key: Vec<u8>,
        skip: usize,
        noreply: bool,
    },
    /// The request is refused with `reply`; the connection stays usable.
    #[error("{reply}")]
    Rejected {
        reply: ErrorReply,
        /// Bytes to drop from the start of the buffer: the line, plus the data block when
        /// memcached swallows it. May run past what has arrived; the server drops the
        /// rest as it comes.
        skip: usize,
        /// The line ended in `noreply`, so memcached sends nothing (text commands only;
        /// meta commands always report errors).
        noreply: bool,
    },
}

impl ParseError {
    pub(super) fn unknown_command(skip: usize) -> Self {
        ParseError::Rejected {
            reply: ErrorReply::Error,
            skip,
            noreply: false,
        }
    }

    pub(super) fn client(message: &'static str, skip: usize, noreply: bool) -> Self {
        ParseError::Rejected {
            reply: ErrorReply::Client(message),
            skip,
            noreply,
        }
    }

    pub(super) fn server(message: &'static str, skip: usize, noreply: bool) -> Self {
        ParseError::Rejected {
            reply: ErrorReply::Server(message),
            skip,
            noreply,
        }
    }
}
