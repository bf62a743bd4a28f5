//! Test helpers, and the tests of framing: line endings, line limits, and pipelined
//! bursts split anywhere.

use super::*;

pub(super) fn parse_default(input: &str) -> Result<Option<(Request<'_>, usize)>, ParseError> {
    parse(input.as_bytes(), &Limits::default())
}

/// The one request `input` holds, which must take all of it.
pub(super) fn one(input: &str) -> Request<'_> {
    let (request, taken) = parse_default(input)
        .unwrap_or_else(|e| panic!("{input:?}: {e:?}"))
        .unwrap_or_else(|| panic!("{input:?} is incomplete"));
    assert_eq!(taken, input.len(), "{input:?}");
    request
}

pub(super) fn client_error(message: &'static str, skip: usize, noreply: bool) -> ParseError {
    ParseError::Rejected {
        reply: ErrorReply::Client(message),
        skip,
        noreply,
    }
}

/// Requests and error replies from a whole stream, in order.
pub(super) fn rejected(input: &str) -> Vec<Result<Request<'static>, ErrorReply>> {
    let mut conn = Conn::new(Limits::default());
    conn.feed(input.as_bytes());
    conn.events
        .into_iter()
        .map(|e| match e {
            Event::Request(r) => Ok(r),
            Event::Reply { reply, .. } => Err(reply),
            Event::Closed => panic!("connection closed"),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Event {
    Request(Request<'static>),
    Reply { reply: ErrorReply, noreply: bool },
    Closed,
}

/// What the server will do with a connection: buffer, parse, drop what errors skip.
pub(super) struct Conn {
    limits: Limits,
    buf: Vec<u8>,
    /// Bytes still to drop for an error whose skip ran past the buffer.
    skip: usize,
    closed: bool,
    pub(super) events: Vec<Event>,
}

impl Conn {
    pub(super) fn new(limits: Limits) -> Self {
        Conn {
            limits,
            buf: Vec::new(),
            skip: 0,
            closed: false,
            events: Vec::new(),
        }
    }

    /// Whether the next byte starts a request: nothing buffered or still to drop.
    pub(super) fn in_step(&self) -> bool {
        self.buf.is_empty() && self.skip == 0 && !self.closed
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        let dropped = self.skip.min(bytes.len());
        self.skip -= dropped;
        self.buf.extend_from_slice(&bytes[dropped..]);
        loop {
            match parse(&self.buf, &self.limits) {
                Ok(None) => break,
                Ok(Some((request, taken))) => {
                    assert!(taken > 0 && taken <= self.buf.len());
                    let request = request.into_owned();
                    self.buf.drain(..taken);
                    self.events.push(Event::Request(request));
                }
                Err(e @ (ParseError::Rejected { .. } | ParseError::TooLargeSet { .. })) => {
                    let (reply, skip, noreply) = match e {
                        ParseError::Rejected {
                            reply,
                            skip,
                            noreply,
                        } => (reply, skip, noreply),
                        ParseError::TooLargeSet { skip, noreply, .. } => (
                            ErrorReply::Server("object too large for cache"),
                            skip,
                            noreply,
                        ),
                        ParseError::LineTooLong => unreachable!(),
                    };
                    assert!(skip > 0);
                    let now = skip.min(self.buf.len());
                    self.buf.drain(..now);
                    self.skip = skip - now;
                    self.events.push(Event::Reply { reply, noreply });
                }
                Err(ParseError::LineTooLong) => {
                    self.closed = true;
                    self.events.push(Event::Closed);
                    break;
                }
            }
        }
    }

    pub(super) fn run(limits: Limits, chunks: impl IntoIterator<Item = Vec<u8>>) -> Vec<Event> {
        let mut conn = Conn::new(limits);
        for chunk in chunks {
            conn.feed(&chunk);
        }
        conn.events
    }
}

pub(super) fn small_limits() -> Limits {
    Limits {
        max_key_len: 250,
        max_item_size: 16,
        max_line_len: 64,
        ..Limits::default()
    }
}

fn burst() -> (Vec<u8>, Vec<Event>) {
    let k = |s: &str| std::borrow::Cow::Owned(s.as_bytes().to_vec());
    let mut input = Vec::new();
    let mut expect = Vec::new();
    let mut add = |bytes: &[u8], event: Event| {
        input.extend_from_slice(bytes);
        expect.push(event);
    };
    add(
        b"set a 1 0 5\r\nab\r\nc\r\n",
        Event::Request(Request::Store {
            command: StoreCommand::Set,
            key: k("a"),
            flags: 1,
            exptime: 0,
            data: k("ab\r\nc"),
            noreply: false,
        }),
    );
    add(
        b"get a b\r\n",
        Event::Request(Request::Get {
            keys: vec![k("a"), k("b")],
            cas: false,
        }),
    );
    add(
        b"gets a\n",
        Event::Request(Request::Get {
            keys: vec![k("a")],
            cas: true,
        }),
    );
    add(
        b"ms m 3 T10 O9\r\n\r\n\n\r\n",
        Event::Request(Request::MetaSet {
            key: k("m"),
            data: k("\r\n\n"),
            flags: MetaFlags(vec![
                MetaFlag::new(b'T', Some(b"10")),
                MetaFlag::new(b'O', Some(b"9")),
            ]),
        }),
    );
    add(
        b"bogus\r\n",
        Event::Reply {
            reply: ErrorReply::Error,
            noreply: false,
        },
    );
    // Too large for small_limits(): its 20 bytes and "\r\n" are swallowed.
    add(
        b"set big 0 0 20 noreply\r\nget x\r\nget y\r\nget zz\r\n",
        Event::Reply {
            reply: ErrorReply::Server("object too large for cache"),
            noreply: true,
        },
    );
    add(
        b"incr n 1 noreply\r\n",
        Event::Request(Request::Incr {
            key: k("n"),
            delta: 1,
            noreply: true,
        }),
    );
    // memcached takes "ab" and "c\r" as the block and its (bad) end; the "\n" left over
    // is an empty command line.
    add(
        b"set b 0 0 2\r\nabc\r",
        Event::Reply {
            reply: ErrorReply::Client("bad data chunk"),
            noreply: false,
        },
    );
    add(
        b"\n",
        Event::Reply {
            reply: ErrorReply::Error,
            noreply: false,
        },
    );
    add(
        b"mg a v k Oxyz\r\n",
        Event::Request(Request::MetaGet {
            key: k("a"),
            flags: MetaFlags(vec![
                MetaFlag::new(b'v', None),
                MetaFlag::new(b'k', None),
                MetaFlag::new(b'O', Some(b"xyz")),
            ]),
        }),
    );
    add(
        b"delete a 0 noreply\r\n",
        Event::Request(Request::Delete {
            key: k("a"),
            noreply: true,
        }),
    );
    add(b"mn\r\n", Event::Request(Request::MetaNoop));
    add(
        b"ms big 17 q\r\n0123456789abcdefg\r\n",
        Event::Reply {
            reply: ErrorReply::Server("object too large for cache"),
            noreply: false,
        },
    );
    add(b"quit\r\n", Event::Request(Request::Quit));
    (input, expect)
}

#[test]
fn pipelined_burst_in_one_read() {
    let (input, expect) = burst();
    assert_eq!(Conn::run(small_limits(), [input]), expect);
}

#[test]
fn pipelined_burst_one_byte_at_a_time() {
    let (input, expect) = burst();
    let bytes = input.iter().map(|&b| vec![b]);
    assert_eq!(Conn::run(small_limits(), bytes), expect);
}

#[test]
fn pipelined_burst_split_at_every_point() {
    let (input, expect) = burst();
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(
            Conn::run(small_limits(), [a.to_vec(), b.to_vec()]),
            expect,
            "split at {at}"
        );
    }
}

#[test]
fn pipelined_burst_in_random_chunks() {
    let (input, expect) = burst();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..200 {
        let mut chunks = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            // xorshift64: reproducible without a dependency.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 12) as usize + 1;
            let (chunk, tail) = rest.split_at(len.min(rest.len()));
            chunks.push(chunk.to_vec());
            rest = tail;
        }
        assert_eq!(Conn::run(small_limits(), chunks), expect, "round {round}");
    }
}

#[test]
fn empty_buffer_needs_more() {
    assert_eq!(parse(b"", &Limits::default()), Ok(None));
    assert_eq!(parse(b"get a", &Limits::default()), Ok(None));
    assert_eq!(parse(b"get a\r", &Limits::default()), Ok(None));
}

#[test]
fn line_endings() {
    assert_eq!(one("version\n"), Request::Version);
    assert_eq!(one("version\r\n"), Request::Version);
    // Only the "\r" right before the "\n" is part of the ending.
    assert_eq!(
        parse_default("get a\r\r\n"),
        Err(client_error("bad command line format", 8, false))
    );
    assert_eq!(
        one("  get   a  \r\n"),
        Request::Get {
            keys: vec![std::borrow::Cow::Borrowed(&b"a"[..])],
            cas: false
        }
    );
}

#[test]
fn line_limit() {
    let limits = Limits {
        max_line_len: 10,
        ..Limits::default()
    };
    let at = |input: &'static str| parse(input.as_bytes(), &limits);
    // Ten bytes of text: accepted with either ending.
    assert!(matches!(at("touch k 10\r\n"), Ok(Some(_))));
    assert!(matches!(at("touch k 10\n"), Ok(Some(_))));
    // Waiting is fine while the line could still end within the limit.
    assert_eq!(at("touch k 10"), Ok(None));
    assert_eq!(at("touch k 10\r"), Ok(None));
    // Eleven bytes of text, or twelve without a newline, can't be a valid line.
    assert_eq!(at("touch k 100\r\n"), Err(ParseError::LineTooLong));
    assert_eq!(at("touch k 100\n"), Err(ParseError::LineTooLong));
    assert_eq!(at("touch k 1000"), Err(ParseError::LineTooLong));
    assert_eq!(at("touch k 10xy"), Err(ParseError::LineTooLong));
}

#[test]
fn endless_line_closes_at_the_same_point_however_split() {
    let limits = Limits {
        max_line_len: 100,
        ..Limits::default()
    };
    let input = vec![b'x'; 500];
    let whole = Conn::run(limits, [input.clone()]);
    assert_eq!(whole, vec![Event::Closed]);
    let mut conn = Conn::new(limits);
    for (i, &b) in input.iter().enumerate() {
        conn.feed(&[b]);
        assert_eq!(conn.closed, i >= 101, "after {} bytes", i + 1);
    }
}

#[test]
fn multigets_may_outgrow_the_line_limit() {
    let limits = Limits {
        max_line_len: 16,
        max_item_size: 64,
        ..Limits::default()
    };
    let keys = "k1 k2 k3 k4 k5 k6 k7 k8 k9";
    for cmd in ["get", "gets", "  get"] {
        let line = format!("{cmd} {keys}\r\n");
        let parsed = parse(line.as_bytes(), &limits);
        assert!(
            matches!(&parsed, Ok(Some((Request::Get { keys, .. }, _))) if keys.len() == 9),
            "{line}: {parsed:?}"
        );
    }
    let gat = format!("gat 0 {keys}\r\n");
    assert_eq!(parse(gat.as_bytes(), &limits), Err(ParseError::LineTooLong));
    let endless = format!("get {}", "k ".repeat(40));
    assert_eq!(
        parse(endless.as_bytes(), &limits),
        Err(ParseError::LineTooLong)
    );
}
