//! The classic text commands. Argument counts, checks and their order follow
//! memcached's `process_command_ascii`: a wrong count is `ERROR`, a bad argument a
//! `CLIENT_ERROR`, and a line ending in `noreply` silences its own error.

use std::borrow::Cow;

use super::args::{noreply, number, valid_key};
use super::error::{msg, ParseError};
use super::{Command, DataBlock, Keys, Request, StoreCommand};

type Parsed<'a> = Result<Option<(Request<'a>, usize)>, ParseError>;

pub(super) fn parse<'a>(cmd: &Command<'a>) -> Parsed<'a> {
    let line = |request: Result<Request<'a>, ParseError>| Ok(Some((request?, cmd.line_len)));
    match cmd.tokens[0] {
        b"get" | b"bget" => line(get(cmd, false)),
        b"gets" => line(get(cmd, true)),
        b"gat" => line(get_and_touch(cmd, false)),
        b"gats" => line(get_and_touch(cmd, true)),
        b"set" => store(cmd, Some(StoreCommand::Set)),
        b"add" => store(cmd, Some(StoreCommand::Add)),
        b"replace" => store(cmd, Some(StoreCommand::Replace)),
        b"append" => store(cmd, Some(StoreCommand::Append)),
        b"prepend" => store(cmd, Some(StoreCommand::Prepend)),
        b"cas" => store(cmd, None),
        b"delete" => line(delete(cmd)),
        b"incr" => line(arithmetic(cmd, true)),
        b"decr" => line(arithmetic(cmd, false)),
        b"touch" => line(touch(cmd)),
        b"flush_all" => line(flush_all(cmd)),
        b"verbosity" => line(verbosity(cmd)),
        b"stats" => line(Ok(Request::Stats {
            args: cmd.tokens[1..]
                .iter()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .collect(),
        })),
        b"shutdown" => line(Ok(answer(msg::SHUTDOWN_DISABLED, false))),
        b"cache_memlimit" => line(cache_memlimit(cmd)),
        b"lru_crawler" => line(lru_crawler(cmd)),
        b"watch" => line(watch(cmd)),
        // memcached ignores anything after these two.
        b"version" => line(Ok(Request::Version)),
        b"quit" => line(Ok(Request::Quit)),
        _ => Err(ParseError::unknown_command(cmd.line_len)),
    }
}

/// `ERROR` unless the line has `min..=max` tokens, the command included.
fn want_tokens(cmd: &Command<'_>, min: usize, max: usize) -> Result<(), ParseError> {
    if (min..=max).contains(&cmd.tokens.len()) {
        Ok(())
    } else {
        Err(ParseError::unknown_command(cmd.line_len))
    }
}

fn keys<'a>(cmd: &Command<'a>, tokens: &[&'a [u8]]) -> Result<Keys<'a>, ParseError> {
    tokens
        .iter()
        .map(|&key| {
            if valid_key(key, &cmd.limits) {
                Ok(Cow::Borrowed(key))
            } else {
                Err(ParseError::client(msg::BAD_FORMAT, cmd.line_len, false))
            }
        })
        .collect()
}

/// The key of a keyed command (its second token).
fn key<'a>(cmd: &Command<'a>, noreply: bool) -> Result<Cow<'a, [u8]>, ParseError> {
    let key = cmd.tokens[1];
    if valid_key(key, &cmd.limits) {
        Ok(Cow::Borrowed(key))
    } else {
        Err(ParseError::client(msg::BAD_FORMAT, cmd.line_len, noreply))
    }
}

fn get<'a>(cmd: &Command<'a>, cas: bool) -> Result<Request<'a>, ParseError> {
    want_tokens(cmd, 2, usize::MAX)?;
    Ok(Request::Get {
        keys: keys(cmd, &cmd.tokens[1..])?,
        cas,
    })
}

fn get_and_touch<'a>(cmd: &Command<'a>, cas: bool) -> Result<Request<'a>, ParseError> {
    want_tokens(cmd, 2, usize::MAX)?;
    let exptime = number::<i32>(cmd.tokens[1])
        .ok_or_else(|| ParseError::client(msg::BAD_EXPTIME, cmd.line_len, false))?;
    let tokens = &cmd.tokens[2..];
    match tokens.iter().position(|k| !valid_key(k, &cmd.limits)) {
        Some(0) => Err(ParseError::client(msg::BAD_FORMAT, cmd.line_len, false)),
        Some(bad) => Ok(Request::TouchThenRefuse {
            exptime: exptime.into(),
            keys: tokens[..bad].iter().map(|&k| Cow::Borrowed(k)).collect(),
        }),
        None => Ok(Request::GetAndTouch {
            exptime: exptime.into(),
            keys: keys(cmd, tokens)?,
            cas,
        }),
    }
}

/// `command` is `None` for `cas`, whose unique comes from the line.
fn store<'a>(cmd: &Command<'a>, command: Option<StoreCommand>) -> Parsed<'a> {
    let args = if command.is_some() { 5 } else { 6 };
    // One more token is allowed; memcached only acts on it when it is "noreply".
    want_tokens(cmd, args, args + 1)?;
    let t = &cmd.tokens;
    let noreply = noreply(t);
    let bad_format = || ParseError::client(msg::BAD_FORMAT, cmd.line_len, noreply);

    let key = key(cmd, noreply)?;
    let (Some(flags), Some(exptime), Some(len)) = (
        number::<u32>(t[2]),
        number::<i32>(t[3]),
        number::<i32>(t[4]),
    ) else {
        return Err(bad_format());
    };
    let command = match command {
        Some(command) => command,
        None => StoreCommand::Cas(number(t[5]).ok_or_else(bad_format)?),
    };
    // memcached adds the "\r\n" to the length in an int.
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= i32::MAX as usize - 2)
        .ok_or_else(bad_format)?;

    let taken = cmd.with_block(len);
    if len > cmd.limits.max_item_size {
        return Err(match command {
            StoreCommand::Set => ParseError::TooLargeSet {
                key: key.into_owned(),
                skip: taken,
                noreply,
            },
            _ => ParseError::server(msg::TOO_LARGE, taken, noreply),
        });
    }
    match cmd.data_block(len) {
        DataBlock::Incomplete => Ok(None),
        DataBlock::BadEnd => Err(ParseError::client(msg::BAD_DATA_CHUNK, taken, noreply)),
        DataBlock::Complete(data) => Ok(Some((
            Request::Store {
                command,
                key,
                flags,
                exptime: exptime.into(),
                data: data.into(),
                noreply,
            },
            taken,
        ))),
    }
}

fn delete<'a>(cmd: &Command<'a>) -> Result<Request<'a>, ParseError> {
    want_tokens(cmd, 2, 4)?;
    let t = &cmd.tokens;
    let noreply = t.len() > 2 && noreply(t);
    if t.len() > 2 {
        // The legacy hold time, accepted only as "0".
        let zero = t[2] == b"0";
        let valid = (t.len() == 3 && (zero || noreply)) || (t.len() == 4 && zero && noreply);
        if !valid {
            return Err(ParseError::client(msg::DELETE_USAGE, cmd.line_len, noreply));
        }
    }
    Ok(Request::Delete {
        key: key(cmd, noreply)?,
        noreply,
    })
}

fn arithmetic<'a>(cmd: &Command<'a>, incr: bool) -> Result<Request<'a>, ParseError> {
    want_tokens(cmd, 3, 4)?;
    let noreply = noreply(&cmd.tokens);
    let key = key(cmd, noreply)?;
    let delta = number::<u64>(cmd.tokens[2])
        .ok_or_else(|| ParseError::client(msg::BAD_DELTA, cmd.line_len, noreply))?;
    Ok(if incr {
        Request::Incr {
            key,
            delta,
            noreply,
        }
    } else {
        Request::Decr {
            key,
            delta,
            noreply,
        }
    })
}

fn touch<'a>(cmd: &Command<'a>) -> Result<Request<'a>, ParseError> {
    want_tokens(cmd, 3, 4)?;
    let noreply = noreply(&cmd.tokens);
    let key = key(cmd, noreply)?;
    let exptime = number::<i32>(cmd.tokens[2])
        .ok_or_else(|| ParseError::client(msg::BAD_EXPTIME, cmd.line_len, noreply))?;
    Ok(Request::Touch {
        key,
        exptime: exptime.into(),
        noreply,
    })
}

fn flush_all<'a>(cmd: &Command<'a>) -> Result<Request<'a>, ParseError> {
    want_tokens(cmd, 1, 3)?;
    let t = &cmd.tokens;
    let noreply = noreply(t);
    // Like memcached: any line longer than "flush_all [noreply]" has its delay second.
    let delay = if t.len() == if noreply { 2 } else { 1 } {
        0
    } else {
        number::<i32>(t[1])
            .ok_or_else(|| ParseError::client(msg::BAD_EXPTIME, cmd.line_len, noreply))?
    };
    Ok(Request::FlushAll {
        delay: delay.into(),
        noreply,
    })
}

fn answer<'a>(line: &'static str, noreply: bool) -> Request<'a> {
    Request::Answer { line, noreply }
}

/// `cache_memlimit <megabytes> [noreply]`, checked as memcached checks it; a limit
/// it would try to apply goes to the pool.
fn cache_memlimit<'a>(cmd: &Command<'a>) -> Result<Request<'a>, ParseError> {
    want_tokens(cmd, 2, 3)?;
    let noreply = noreply(&cmd.tokens);
    let refused = |line| Ok(answer(line, noreply));
    match number::<u32>(cmd.tokens[1]) {
        None => refused("ERROR"),
        Some(mb) if mb < 8 => refused("MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m"),
        Some(mb) if mb > 1_000_000_000 => {
            refused("MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes")
        }
        Some(megabytes) => Ok(Request::MemLimit { megabytes, noreply }),
    }
}

/// `lru_crawler ...`, answered as a memcached started with `-o no_lru_crawler`: the
/// pool expires items itself, there is no crawler to run or start.
fn lru_crawler<'a>(cmd: &Command<'a>) -> Result<Request<'a>, ParseError> {
    let t = &cmd.tokens;
    let bad = || ParseError::client(msg::BAD_FORMAT, cmd.line_len, false);
    let line = match (t.get(1).copied(), t.len()) {
        (Some(b"crawl" | b"metadump"), 3) => "CLIENT_ERROR lru crawler disabled",
        (Some(b"enable"), 2) => "ERROR failed to start lru crawler thread",
        (Some(b"disable"), 2) => "OK",
        (Some(b"sleep"), 3) => match number::<u32>(t[2]).ok_or_else(bad)? {
            us if us > 1_000_000 => "CLIENT_ERROR sleep must be one second or less",
            _ => "OK",
        },
        (Some(b"tocrawl"), 3) => {
            number::<u32>(t[2]).ok_or_else(bad)?;
            "OK"
        }
        _ => return Err(ParseError::unknown_command(cmd.line_len)),
    };
    Ok(answer(line, false))
}

/// `watch [type...] [noreply]`: the log types memcached 1.6.18 knows.
fn watch<'a>(cmd: &Command<'a>) -> Result<Request<'a>, ParseError> {
    let noreply = noreply(&cmd.tokens);
    let args = &cmd.tokens[1..cmd.tokens.len() - usize::from(noreply)];
    let known = |a: &&[u8]| {
        matches!(
            *a,
            b"rawcmds"
                | b"evictions"
                | b"fetchers"
                | b"mutations"
                | b"sysevents"
                | b"connevents"
                | b"proxyreqs"
                | b"proxyevents"
                | b"proxyuser"
        )
    };
    // The server checks for replies still unsent first, as memcached does.
    Ok(Request::Watch {
        known: args.iter().all(known),
        noreply,
    })
}

fn verbosity<'a>(cmd: &Command<'a>) -> Result<Request<'a>, ParseError> {
    want_tokens(cmd, 2, 3)?;
    let noreply = noreply(&cmd.tokens);
    let level = number::<u32>(cmd.tokens[1])
        .ok_or_else(|| ParseError::client(msg::BAD_FORMAT, cmd.line_len, noreply))?;
    Ok(Request::Verbosity { level, noreply })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{client_error, one, parse_default, rejected};
    use super::*;
    use crate::protocol::{parse, ErrorReply, Limits, ParseError};

    fn k(s: &str) -> Cow<'static, [u8]> {
        Cow::Owned(s.as_bytes().to_vec())
    }

    fn error(line: &str) -> ParseError {
        ParseError::Rejected {
            reply: ErrorReply::Error,
            skip: line.len(),
            noreply: false,
        }
    }

    #[test]
    fn retrieval() {
        assert_eq!(
            one("get foo\r\n"),
            Request::Get {
                keys: vec![k("foo")],
                cas: false
            }
        );
        assert_eq!(
            one("gets a bb  ccc\r\n"),
            Request::Get {
                keys: vec![k("a"), k("bb"), k("ccc")],
                cas: true
            }
        );
        assert_eq!(
            one("bget a\r\n"),
            Request::Get {
                keys: vec![k("a")],
                cas: false
            }
        );
        assert_eq!(parse_default("get\r\n"), Err(error("get\r\n")));
        assert_eq!(parse_default("gets \r\n"), Err(error("gets \r\n")));
        assert_eq!(parse_default("getx a\r\n"), Err(error("getx a\r\n")));
    }

    #[test]
    fn multiget_of_many_keys() {
        let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
        let line = format!("get {}\r\n", keys.join(" "));
        assert!(line.len() > Limits::default().max_line_len);
        match one(&line) {
            Request::Get { keys: got, cas } => {
                assert!(!cas);
                assert_eq!(got.len(), 1000);
                assert_eq!(&*got[999], b"key:999");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn get_and_touch() {
        assert_eq!(
            one("gat 100 a b\r\n"),
            Request::GetAndTouch {
                exptime: 100,
                keys: vec![k("a"), k("b")],
                cas: false
            }
        );
        assert_eq!(
            one("gats -1 a\r\n"),
            Request::GetAndTouch {
                exptime: -1,
                keys: vec![k("a")],
                cas: true
            }
        );
        // memcached answers a bare "END" to this.
        assert_eq!(
            one("gat 10\r\n"),
            Request::GetAndTouch {
                exptime: 10,
                keys: vec![],
                cas: false
            }
        );
        for line in [
            "gat x a\r\n",
            "gat 9223372036854775808 a\r\n",
            "gats 1.5 a\r\n",
        ] {
            assert_eq!(
                parse_default(line),
                Err(client_error("invalid exptime argument", line.len(), false)),
                "{line}"
            );
        }
        assert_eq!(parse_default("gat\r\n"), Err(error("gat\r\n")));
    }

    #[test]
    fn bad_keys_fail_the_whole_get() {
        let long = "k".repeat(251);
        for line in [
            format!("get a {long} b\r\n"),
            "get a\tb\r\n".to_string(),
            "gat 1 \x01a\r\n".to_string(),
        ] {
            assert_eq!(
                parse_default(&line),
                Err(client_error("bad command line format", line.len(), false)),
                "{line:?}"
            );
        }
        // gat touches the keys before the bad one, as memcached does.
        assert_eq!(
            one("gats 5 a b \x01\r\n"),
            Request::TouchThenRefuse {
                exptime: 5,
                keys: vec![k("a"), k("b")]
            }
        );
        let longest = format!("get {}\r\n", "k".repeat(250));
        assert!(matches!(one(&longest), Request::Get { .. }));
    }

    #[test]
    fn storage_commands() {
        let cases = [
            ("set", StoreCommand::Set),
            ("add", StoreCommand::Add),
            ("replace", StoreCommand::Replace),
            ("append", StoreCommand::Append),
            ("prepend", StoreCommand::Prepend),
        ];
        for (name, command) in cases {
            for noreply in [false, true] {
                let suffix = if noreply { " noreply" } else { "" };
                let input = format!("{name} key 42 -7 5{suffix}\r\nhello\r\n");
                assert_eq!(
                    parse_default(&input),
                    Ok(Some((
                        Request::Store {
                            command,
                            key: k("key"),
                            flags: 42,
                            exptime: -7,
                            data: k("hello"),
                            noreply
                        },
                        input.len()
                    ))),
                    "{input}"
                );
            }
        }
    }

    #[test]
    fn cas() {
        for (suffix, noreply) in [("", false), (" noreply", true)] {
            let input = format!("cas k 0 0 2 18446744073709551615{suffix}\r\nhi\r\n");
            assert_eq!(
                one(&input),
                Request::Store {
                    command: StoreCommand::Cas(u64::MAX),
                    key: k("k"),
                    flags: 0,
                    exptime: 0,
                    data: k("hi"),
                    noreply
                }
            );
        }
        // The line is refused on its own; the block would be read as the next command.
        assert_eq!(
            parse_default("cas k 0 0 2 -1\r\nhi\r\n"),
            Err(client_error("bad command line format", 16, false))
        );
        assert_eq!(
            parse_default("cas k 0 0 2\r\n"),
            Err(error("cas k 0 0 2\r\n"))
        );
    }

    #[test]
    fn data_blocks_are_binary_safe() {
        let input = b"set k 1 0 8\r\n\r\n\0\xff\r\nab\r\n";
        assert_eq!(
            parse(input, &Limits::default()),
            Ok(Some((
                Request::Store {
                    command: StoreCommand::Set,
                    key: k("k"),
                    flags: 1,
                    exptime: 0,
                    data: b"\r\n\0\xff\r\nab".to_vec().into(),
                    noreply: false
                },
                input.len()
            )))
        );
        let empty = "set k 0 0 0\r\n\r\n";
        assert!(matches!(one(empty), Request::Store { data, .. } if data.is_empty()));
    }

    #[test]
    fn waits_for_the_whole_data_block() {
        let input = "set k 0 0 5\r\nhello\r\n";
        for end in 0..input.len() {
            assert_eq!(parse_default(&input[..end]), Ok(None), "{end}");
        }
        assert!(parse_default(input).unwrap().is_some());
    }

    #[test]
    fn data_block_must_end_in_crlf() {
        // memcached reads len + 2 bytes whatever they are, then checks the last two.
        for (input, taken) in [
            ("set k 0 0 5\r\nhelloXY\r\n", 20),
            ("set k 0 0 5\r\nhello\nget a\r\n", 20),
            ("set k 0 0 3\r\nhello\r\n", 18),
        ] {
            assert_eq!(
                parse_default(input),
                Err(client_error("bad data chunk", taken, false)),
                "{input:?}"
            );
        }
        assert_eq!(
            parse_default("set k 0 0 5 noreply\r\nhelloXY"),
            Err(client_error("bad data chunk", 28, true))
        );
    }

    #[test]
    fn storage_argument_errors() {
        let bad_format = [
            "set k 0 0 -1\r\n",
            "set k 0 0 2147483646\r\n",
            "set k 0 0 2147483648\r\n",
            "set k 0 0 x\r\n",
            "set k -1 0 1\r\n",
            "set k 18446744073709551616 0 1\r\n",
            "set k 0x1 0 1\r\n",
            "set k 0 9223372036854775808 1\r\n",
            "set k 0 1e3 1\r\n",
            "set k\x7f 0 0 1\r\n",
        ];
        for line in bad_format {
            assert_eq!(
                parse_default(line),
                Err(client_error("bad command line format", line.len(), false)),
                "{line:?}"
            );
        }
        let long_key = format!("add {} 0 0 1\r\n", "k".repeat(251));
        assert_eq!(
            parse_default(&long_key),
            Err(client_error(
                "bad command line format",
                long_key.len(),
                false
            ))
        );
        // The line's own error is silenced by noreply; its data block is not swallowed.
        assert_eq!(
            parse_default("set k 0 0 noreply\r\n"),
            Err(client_error("bad command line format", 19, true))
        );
        for line in ["set k 0 0\r\n", "set k 0 0 1 noreply x\r\n", "set\r\n"] {
            assert_eq!(parse_default(line), Err(error(line)), "{line:?}");
        }
    }

    #[test]
    fn extra_storage_token_other_than_noreply_is_ignored() {
        assert_eq!(
            one("set k 1 2 1 bogus\r\nx\r\n"),
            Request::Store {
                command: StoreCommand::Set,
                key: k("k"),
                flags: 1,
                exptime: 2,
                data: k("x"),
                noreply: false
            }
        );
    }

    #[test]
    fn too_large_swallows_the_data_block() {
        let limits = Limits {
            max_item_size: 10,
            ..Limits::default()
        };
        // A set too large removes the item it would replace, as memcached does.
        let line = "set k 0 0 11\r\n";
        let error = ParseError::TooLargeSet {
            key: b"k".to_vec(),
            skip: line.len() + 13,
            noreply: false,
        };
        // Answered at once, before the data arrives.
        assert_eq!(parse(line.as_bytes(), &limits), Err(error.clone()));
        let input = format!("{line}hello world\r\nget k\r\n");
        assert_eq!(parse(input.as_bytes(), &limits), Err(error));
        assert_eq!(
            parse(b"set k 0 0 10\r\n0123456789\r\n", &limits)
                .unwrap()
                .unwrap()
                .1,
            26
        );
        // Other storage commands leave it.
        assert_eq!(
            parse(b"add k 0 0 11 noreply\r\n", &limits),
            Err(ParseError::Rejected {
                reply: ErrorReply::Server("object too large for cache"),
                skip: 22 + 13,
                noreply: true,
            })
        );
        let huge = format!("set k 0 0 {}\r\n", 2 * 1024 * 1024);
        assert!(matches!(
            parse_default(&huge),
            Err(ParseError::TooLargeSet { skip, .. }) if skip == huge.len() + 2 * 1024 * 1024 + 2
        ));
    }

    #[test]
    fn delete() {
        for (line, noreply) in [
            ("delete k\r\n", false),
            ("delete k noreply\r\n", true),
            ("delete k 0\r\n", false),
            ("delete k 0 noreply\r\n", true),
        ] {
            assert_eq!(
                one(line),
                Request::Delete {
                    key: k("k"),
                    noreply
                },
                "{line}"
            );
        }
        // A lone argument is the key, even one spelled "noreply".
        assert_eq!(
            one("delete noreply\r\n"),
            Request::Delete {
                key: k("noreply"),
                noreply: false
            }
        );
        let usage = "bad command line format.  Usage: delete <key> [noreply]";
        assert_eq!(
            parse_default("delete k 5\r\n"),
            Err(client_error(usage, 12, false))
        );
        assert_eq!(
            parse_default("delete k 5 noreply\r\n"),
            Err(client_error(usage, 20, true))
        );
        assert_eq!(
            parse_default("delete k noreply 0\r\n"),
            Err(client_error(usage, 20, false))
        );
        for line in ["delete\r\n", "delete k 0 noreply x\r\n"] {
            assert_eq!(parse_default(line), Err(error(line)), "{line}");
        }
        let long = format!("delete {} noreply\r\n", "k".repeat(251));
        assert_eq!(
            parse_default(&long),
            Err(client_error("bad command line format", long.len(), true))
        );
    }

    #[test]
    fn incr_decr() {
        assert_eq!(
            one("incr n 5\r\n"),
            Request::Incr {
                key: k("n"),
                delta: 5,
                noreply: false
            }
        );
        assert_eq!(
            one("decr n 18446744073709551615 noreply\r\n"),
            Request::Decr {
                key: k("n"),
                delta: u64::MAX,
                noreply: true
            }
        );
        for (line, noreply) in [
            ("incr n -1\r\n", false),
            ("incr n 18446744073709551616\r\n", false),
            ("decr n abc noreply\r\n", true),
            ("incr n noreply\r\n", true),
        ] {
            assert_eq!(
                parse_default(line),
                Err(client_error(
                    "invalid numeric delta argument",
                    line.len(),
                    noreply
                )),
                "{line}"
            );
        }
        for line in ["incr n\r\n", "decr n 1 noreply x\r\n"] {
            assert_eq!(parse_default(line), Err(error(line)), "{line}");
        }
    }

    #[test]
    fn touch() {
        assert_eq!(
            one("touch k 60\r\n"),
            Request::Touch {
                key: k("k"),
                exptime: 60,
                noreply: false
            }
        );
        assert_eq!(
            one("touch k -1 noreply\r\n"),
            Request::Touch {
                key: k("k"),
                exptime: -1,
                noreply: true
            }
        );
        assert_eq!(
            parse_default("touch k soon\r\n"),
            Err(client_error("invalid exptime argument", 14, false))
        );
        assert_eq!(parse_default("touch k\r\n"), Err(error("touch k\r\n")));
    }

    #[test]
    fn flush_all() {
        for (line, delay, noreply) in [
            ("flush_all\r\n", 0, false),
            ("flush_all 10\r\n", 10, false),
            ("flush_all noreply\r\n", 0, true),
            ("flush_all 10 noreply\r\n", 10, true),
            ("flush_all -5\r\n", -5, false),
        ] {
            assert_eq!(one(line), Request::FlushAll { delay, noreply }, "{line}");
        }
        assert_eq!(
            parse_default("flush_all soon\r\n"),
            Err(client_error("invalid exptime argument", 16, false))
        );
        assert_eq!(
            parse_default("flush_all 1 2 3\r\n"),
            Err(error("flush_all 1 2 3\r\n"))
        );
    }

    #[test]
    fn the_rest() {
        assert_eq!(one("stats\r\n"), Request::Stats { args: vec![] });
        assert_eq!(
            one("stats detail dump\r\n"),
            Request::Stats {
                args: vec!["detail".into(), "dump".into()]
            }
        );
        assert_eq!(one("version\r\n"), Request::Version);
        assert_eq!(one("quit\r\n"), Request::Quit);
        assert_eq!(
            one("verbosity 1\r\n"),
            Request::Verbosity {
                level: 1,
                noreply: false
            }
        );
        assert_eq!(
            one("verbosity 2 noreply\r\n"),
            Request::Verbosity {
                level: 2,
                noreply: true
            }
        );
        assert_eq!(
            parse_default("verbosity loud\r\n"),
            Err(client_error("bad command line format", 16, false))
        );
        assert_eq!(parse_default("verbosity\r\n"), Err(error("verbosity\r\n")));
    }

    #[test]
    fn unknown_and_empty_lines() {
        for line in ["bogus\r\n", "GET a\r\n", "\r\n", "\n", "   \r\n", "g\r\n"] {
            assert_eq!(parse_default(line), Err(error(line)), "{line:?}");
        }
        assert_eq!(
            rejected("bogus\r\nversion\r\n"),
            vec![Err(ErrorReply::Error), Ok(Request::Version)]
        );
    }
}
