//! The meta commands (`mg`, `ms`, `md`, `ma`, `mn`, `me`). Flag checks and error
//! wording follow memcached's `_meta_flag_preparse` and the `process_m*_command`s; meta
//! errors are always sent, `q` or not.

use std::borrow::Cow;

use super::args::{number, valid_key};
use super::error::{msg, ParseError};
use super::{Command, DataBlock, MetaFlag, MetaFlags, Request};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

type Parsed<'a> = Result<Option<(Request<'a>, usize)>, ParseError>;

/// memcached refuses lines of this many tokens or more (its count includes a terminator).
const MAX_TOKENS: usize = 20;
/// Longest `O` token, its letter included.
const MAX_OPAQUE_LEN: usize = 32;

pub(super) fn parse<'a>(cmd: &Command<'a>, op: u8) -> Parsed<'a> {
    let request = match op {
        b'n' => Request::MetaNoop,
        b'e' => debug(cmd)?,
        b'g' | b'd' | b'a' => keyed(cmd, op)?,
        b's' => return set(cmd),
        _ => return Err(ParseError::unknown_command(cmd.line_len)),
    };
    Ok(Some((request, cmd.line_len)))
}

/// `mg`, `md` and `ma`: a key and flags, no data.
fn keyed<'a>(cmd: &Command<'a>, op: u8) -> Result<Request<'a>, ParseError> {
    let t = &cmd.tokens;
    let fail = |message| ParseError::client(message, cmd.line_len, false);
    if t.len() < 2 {
        return Err(ParseError::unknown_command(cmd.line_len));
    }
    if t[1].len() > cmd.limits.max_key_len {
        return Err(fail(msg::BAD_FORMAT));
    }
    if t.len() >= MAX_TOKENS {
        return Err(fail(if op == b'g' {
            msg::MG_FLAGS_TOO_LONG
        } else {
            msg::FLAGS_TOO_LONG
        }));
    }
    let (key, flags) = flags(t[1], &t[2..]).map_err(|message| {
        // md and ma don't pass the flag parser's reason on.
        fail(if op == b'g' {
            message
        } else {
            msg::INVALID_OR_DUPLICATE_FLAG
        })
    })?;
    if op == b'a' && !matches!(flags.mode(), None | Some(b'I' | b'+' | b'D' | b'-')) {
        return Err(fail(msg::BAD_MA_MODE));
    }
    // mg and ma check their opaque only as they write the reply, after a `T` (mg) or
    // the arithmetic (ma).
    if op == b'd' {
        check_opaque(&flags).map_err(fail)?;
    }
    check_key(cmd, &key, &flags).map_err(fail)?;
    Ok(match op {
        b'g' => Request::MetaGet { key, flags },
        b'd' => Request::MetaDelete { key, flags },
        _ => Request::MetaArithmetic { key, flags },
    })
}

/// `ms <key> <datalen> <flags>*`. Errors found before the length is known leave the data
/// block to be read as commands, as in memcached; later ones swallow it.
fn set<'a>(cmd: &Command<'a>) -> Parsed<'a> {
    let t = &cmd.tokens;
    let fail = |message| ParseError::client(message, cmd.line_len, false);
    if t.len() < 2 {
        return Err(ParseError::unknown_command(cmd.line_len));
    }
    if t[1].len() > cmd.limits.max_key_len || t.len() == 2 {
        return Err(fail(msg::BAD_FORMAT));
    }
    if t.len() >= MAX_TOKENS {
        return Err(fail(msg::FLAGS_TOO_LONG));
    }
    let len = number::<i32>(t[2])
        .and_then(|len| usize::try_from(len).ok())
        .filter(|&len| len <= i32::MAX as usize - 2)
        .ok_or_else(|| fail(msg::BAD_FORMAT))?;

    let taken = cmd.with_block(len);
    let swallow = |message| ParseError::client(message, taken, false);
    let (key, flags) = flags(t[1], &t[3..]).map_err(swallow)?;
    if !matches!(flags.mode(), None | Some(b'E' | b'A' | b'P' | b'R' | b'S')) {
        return Err(swallow(msg::BAD_MS_MODE));
    }
    check_opaque(&flags).map_err(swallow)?;
    check_key(cmd, &key, &flags).map_err(swallow)?;
    if len > cmd.limits.max_item_size {
        return Err(ParseError::TooLargeSet {
            key: key.into_owned(),
            skip: taken,
            noreply: false,
        });
    }
    match cmd.data_block(len) {
        DataBlock::Incomplete => Ok(None),
        DataBlock::BadEnd => Err(swallow(msg::BAD_DATA_CHUNK)),
        DataBlock::Complete(data) => Ok(Some((
            Request::MetaSet {
                key,
                data: data.into(),
                flags,
            },
            taken,
        ))),
    }
}

/// `me <key> [b]`: only a `b` right after the key counts, as in memcached.
fn debug<'a>(cmd: &Command<'a>) -> Result<Request<'a>, ParseError> {
    let t = &cmd.tokens;
    let bad_format = || ParseError::client(msg::BAD_FORMAT, cmd.line_len, false);
    if t.len() < 2 || t[1].len() > cmd.limits.max_key_len {
        return Err(bad_format());
    }
    let base64 = t.get(2) == Some(&&b"b"[..]);
    let key = if base64 {
        Cow::Owned(STANDARD.decode(t[1]).map_err(|_| bad_format())?)
    } else if valid_key(t[1], &cmd.limits) {
        Cow::Borrowed(t[1])
    } else {
        return Err(bad_format());
    };
    Ok(Request::MetaDebug { key, base64 })
}

/// Parses the flag tokens and, under `b`, decodes the key. Like memcached, a repeated or
/// unknown flag stops at once; any other bad flag is reported after the rest are read,
/// the last reason winning.
fn flags<'a>(key: &'a [u8], tokens: &[&[u8]]) -> Result<(Cow<'a, [u8]>, MetaFlags), &'static str> {
    let mut seen = [false; 128];
    let mut key = Cow::Borrowed(key);
    let mut failed = false;
    let mut reason = None;
    let mut flags = Vec::with_capacity(tokens.len());
    for token in tokens {
        let (flag, arg) = (token[0], &token[1..]);
        if flag >= 127 || seen[usize::from(flag)] {
            return Err(msg::DUPLICATE_FLAG);
        }
        seen[usize::from(flag)] = true;
        let mut check = |ok: bool, why: Option<&'static str>| {
            if !ok {
                failed = true;
                reason = why.or(reason);
            }
        };
        match flag {
            b'b' => match STANDARD.decode(&*key).ok() {
                Some(decoded) => key = Cow::Owned(decoded),
                None => check(false, Some(msg::BAD_KEY_ENCODING)),
            },
            b'N' | b'T' | b'R' => check(number::<i32>(arg).is_some(), Some(msg::BAD_TOKEN)),
            // memcached flags a bad F without saying why.
            b'F' => check(number::<u32>(arg).is_some(), None),
            b'C' => check(number::<u64>(arg).is_some(), Some(msg::BAD_TOKEN)),
            b'M' => check(token.len() == 2, Some(msg::BAD_MODE_LENGTH)),
            b'J' => check(number::<u64>(arg).is_some(), Some(msg::BAD_INITIAL)),
            b'D' => check(number::<u64>(arg).is_some(), Some(msg::BAD_DELTA_VALUE)),
            // memcached 1.6.18 (what the conformance tests run) knows neither `E` nor `x`.
            b'c' | b'f' | b'h' | b'I' | b'k' | b'l' | b'L' | b'O' | b'P' | b'q' | b's' | b't'
            | b'u' | b'v' => {}
            _ => return Err(msg::INVALID_FLAG),
        }
        flags.push(MetaFlag::new(flag, (!arg.is_empty()).then_some(arg)));
    }
    if failed {
        return Err(reason.unwrap_or(msg::BAD_FORMAT));
    }
    Ok((key, MetaFlags(flags)))
}

pub(crate) fn check_opaque(flags: &MetaFlags) -> Result<(), &'static str> {
    match flags.opaque() {
        Some(opaque) if 1 + opaque.len() > MAX_OPAQUE_LEN => Err(msg::OPAQUE_TOO_LONG),
        _ => Ok(()),
    }
}

/// A binary (base64) key may hold any byte; a plain one follows the text rules.
fn check_key(cmd: &Command<'_>, key: &[u8], flags: &MetaFlags) -> Result<(), &'static str> {
    if flags.base64_key() || valid_key(key, &cmd.limits) {
        Ok(())
    } else {
        Err(msg::BAD_FORMAT)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{client_error, one, parse_default};
    use super::*;
    use crate::protocol::{parse, ErrorReply, Limits};

    fn flags(spec: &[(u8, Option<&str>)]) -> MetaFlags {
        spec.iter()
            .map(|&(f, t)| MetaFlag::new(f, t.map(str::as_bytes)))
            .collect()
    }

    fn k(s: &str) -> Cow<'static, [u8]> {
        Cow::Owned(s.as_bytes().to_vec())
    }

    #[test]
    fn meta_get() {
        // Flags of later memcacheds that 1.6.18 refuses.
        for line in ["mg foo E5\r\n", "md foo x\r\n"] {
            let message = if line.starts_with("mg") {
                "invalid flag"
            } else {
                "invalid or duplicate flag"
            };
            assert_eq!(
                parse_default(line),
                Err(client_error(message, line.len(), false)),
                "{line}"
            );
        }
        assert_eq!(
            one("mg foo\r\n"),
            Request::MetaGet {
                key: k("foo"),
                flags: MetaFlags::default()
            }
        );
        assert_eq!(
            one("mg foo v c f k q Oabc T-1 N30 R10 s t h l u\r\n"),
            Request::MetaGet {
                key: k("foo"),
                flags: flags(&[
                    (b'v', None),
                    (b'c', None),
                    (b'f', None),
                    (b'k', None),
                    (b'q', None),
                    (b'O', Some("abc")),
                    (b'T', Some("-1")),
                    (b'N', Some("30")),
                    (b'R', Some("10")),
                    (b's', None),
                    (b't', None),
                    (b'h', None),
                    (b'l', None),
                    (b'u', None),
                ])
            }
        );
        assert_eq!(parse_default("mg\r\n"), Err(error("mg\r\n")));
        assert_eq!(parse_default("mx foo\r\n"), Err(error("mx foo\r\n")));
    }

    #[test]
    fn base64_keys_are_decoded() {
        // "Zm9vAGJhcg==" is "foo\0bar": binary keys may hold any byte.
        assert_eq!(
            one("mg Zm9vAGJhcg== b v\r\n"),
            Request::MetaGet {
                key: Cow::Borrowed(b"foo\0bar"),
                flags: flags(&[(b'b', None), (b'v', None)])
            }
        );
        assert_eq!(
            parse_default("mg Zm9v* b\r\n"),
            Err(client_error("error decoding key", 12, false))
        );
        assert_eq!(
            parse_default("md Zm9v* b\r\n"),
            Err(client_error("invalid or duplicate flag", 12, false))
        );
    }

    #[test]
    fn flag_errors() {
        for (line, message) in [
            ("mg k v v\r\n", "duplicate flag"),
            ("mg k v \u{80}\r\n", "duplicate flag"),
            ("mg k v Y\r\n", "invalid flag"),
            ("mg k 5\r\n", "invalid flag"),
            ("mg k Tsoon\r\n", "bad token in command line format"),
            (
                "mg k T9223372036854775808\r\n",
                "bad token in command line format",
            ),
            ("mg k N\r\n", "bad token in command line format"),
            ("mg k C-1\r\n", "bad token in command line format"),
            ("mg k Fx\r\n", "bad command line format"),
            ("mg k MEE\r\n", "incorrect length for M token"),
            ("mg k Jx\r\n", "invalid numeric initial value"),
            ("mg k Dx\r\n", "invalid numeric delta value"),
            // The last reason wins, but an unknown flag stops at once.
            ("mg k Tx Dx\r\n", "invalid numeric delta value"),
            ("mg k Tx Y Dx\r\n", "invalid flag"),
            ("md k Tx\r\n", "invalid or duplicate flag"),
            ("ma k v v\r\n", "invalid or duplicate flag"),
        ] {
            assert_eq!(
                parse_default(line),
                Err(client_error(message, line.len(), false)),
                "{line:?}"
            );
        }
    }

    #[test]
    fn opaque_and_token_limits() {
        let longest = format!("mg k O{}\r\n", "9".repeat(31));
        assert!(matches!(one(&longest), Request::MetaGet { .. }));
        // md refuses a long opaque at once; mg and ma once they have acted.
        let too_long = format!("md k O{}\r\n", "9".repeat(32));
        assert_eq!(
            parse_default(&too_long),
            Err(client_error("opaque token too long", too_long.len(), false))
        );
        let later = format!("mg k O{}\r\n", "9".repeat(32));
        assert!(matches!(one(&later), Request::MetaGet { .. }));
        let many = "mg k a b c d e f g h i j k l m n o p q r\r\n";
        assert_eq!(
            parse_default(many),
            Err(client_error(
                "options flags are too long",
                many.len(),
                false
            ))
        );
        let many = "md k a b c d e f g h i j k l m n o p q r\r\n";
        assert_eq!(
            parse_default(many),
            Err(client_error("options flags too long", many.len(), false))
        );
        // 19 tokens: one under memcached's limit, which counts a terminator too.
        let at_limit = "mg k c f h k l q s t u v I R1 L P O1 T1 N1\r\n";
        assert!(matches!(one(at_limit), Request::MetaGet { .. }));
    }

    #[test]
    fn meta_keys() {
        let long = format!("mg {} v\r\n", "k".repeat(251));
        assert_eq!(
            parse_default(&long),
            Err(client_error("bad command line format", long.len(), false))
        );
        assert_eq!(
            parse_default("mg a\x01b v\r\n"),
            Err(client_error("bad command line format", 10, false))
        );
    }

    #[test]
    fn meta_set() {
        let input = "ms key 5 T60 F7 c O1 q MR C12 I\r\nhe\r\no\r\n";
        assert_eq!(
            parse_default(input),
            Ok(Some((
                Request::MetaSet {
                    key: k("key"),
                    data: k("he\r\no"),
                    flags: flags(&[
                        (b'T', Some("60")),
                        (b'F', Some("7")),
                        (b'c', None),
                        (b'O', Some("1")),
                        (b'q', None),
                        (b'M', Some("R")),
                        (b'C', Some("12")),
                        (b'I', None),
                    ])
                },
                input.len()
            )))
        );
        assert_eq!(
            one("ms k 0\r\n\r\n"),
            Request::MetaSet {
                key: k("k"),
                data: vec![].into(),
                flags: MetaFlags::default()
            }
        );
        for end in 0..input.len() {
            assert_eq!(parse_default(&input[..end]), Ok(None), "{end}");
        }
    }

    #[test]
    fn meta_set_errors_before_the_length_leave_the_data() {
        for (line, message) in [
            ("ms k\r\n", "bad command line format"),
            ("ms k x\r\n", "bad command line format"),
            ("ms k -1\r\n", "bad command line format"),
            ("ms k 2147483646\r\n", "bad command line format"),
            (
                "ms k a b c d e f g h i j k l m n o p q r\r\n",
                "options flags too long",
            ),
        ] {
            assert_eq!(
                parse_default(line),
                Err(client_error(message, line.len(), false)),
                "{line:?}"
            );
        }
        let long = format!("ms {} 1\r\n", "k".repeat(251));
        assert_eq!(
            parse_default(&long),
            Err(client_error("bad command line format", long.len(), false))
        );
        assert_eq!(parse_default("ms\r\n"), Err(error("ms\r\n")));
    }

    #[test]
    fn meta_set_errors_after_the_length_swallow_the_data() {
        for (line, message) in [
            ("ms k 3 v v\r\n", "duplicate flag"),
            ("ms k 3 Y\r\n", "invalid flag"),
            ("ms k 3 Fx\r\n", "bad command line format"),
            ("ms k 3 MX\r\n", "invalid mode for ms M token"),
            ("ms k 3 MI\r\n", "invalid mode for ms M token"),
            ("ms a\tb 3\r\n", "bad command line format"),
            ("ms k 3 q Tx\r\n", "bad token in command line format"),
        ] {
            assert_eq!(
                parse_default(line),
                Err(client_error(message, line.len() + 5, false)),
                "{line:?}"
            );
        }
        let opaque = format!("ms k 3 O{}\r\n", "1".repeat(32));
        assert_eq!(
            parse_default(&opaque),
            Err(client_error(
                "opaque token too long",
                opaque.len() + 5,
                false
            ))
        );
        // Even under q, meta errors are sent.
        assert_eq!(
            parse_default("ms k 3 q\r\nabcde"),
            Err(client_error("bad data chunk", 15, false))
        );
        let limits = Limits {
            max_item_size: 2,
            ..Limits::default()
        };
        // Too large: the item under the key goes too, as in memcached.
        assert_eq!(
            parse(b"ms k 3 q\r\n", &limits),
            Err(ParseError::TooLargeSet {
                key: b"k".to_vec(),
                skip: 15,
                noreply: false
            })
        );
    }

    #[test]
    fn meta_set_modes() {
        for mode in ["E", "A", "P", "R", "S"] {
            let input = format!("ms k 1 M{mode}\r\nx\r\n");
            match one(&input) {
                Request::MetaSet { flags, .. } => {
                    assert_eq!(flags.mode(), Some(mode.as_bytes()[0]))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn meta_delete() {
        assert_eq!(
            one("md k q C5 I T30 Oq k\r\n"),
            Request::MetaDelete {
                key: k("k"),
                flags: flags(&[
                    (b'q', None),
                    (b'C', Some("5")),
                    (b'I', None),
                    (b'T', Some("30")),
                    (b'O', Some("q")),
                    (b'k', None),
                ])
            }
        );
        assert_eq!(parse_default("md\r\n"), Err(error("md\r\n")));
    }

    #[test]
    fn meta_arithmetic() {
        assert_eq!(
            one("ma n D5 J10 N0 MD v t c\r\n"),
            Request::MetaArithmetic {
                key: k("n"),
                flags: flags(&[
                    (b'D', Some("5")),
                    (b'J', Some("10")),
                    (b'N', Some("0")),
                    (b'M', Some("D")),
                    (b'v', None),
                    (b't', None),
                    (b'c', None),
                ])
            }
        );
        for mode in ["I", "+", "D", "-"] {
            let line = format!("ma n M{mode}\r\n");
            assert!(
                matches!(one(&line), Request::MetaArithmetic { .. }),
                "{line}"
            );
        }
        assert_eq!(
            parse_default("ma n MS\r\n"),
            Err(client_error("invalid mode for ma M token", 9, false))
        );
        assert_eq!(
            parse_default("ma n D-1\r\n"),
            Err(client_error("invalid or duplicate flag", 10, false))
        );
    }

    #[test]
    fn noop_and_debug() {
        assert_eq!(one("mn\r\n"), Request::MetaNoop);
        assert_eq!(
            one("me foo\r\n"),
            Request::MetaDebug {
                key: k("foo"),
                base64: false
            }
        );
        assert_eq!(
            one("me Zm9v b\r\n"),
            Request::MetaDebug {
                key: k("foo"),
                base64: true
            }
        );
        // Only a lone "b" right after the key means base64.
        assert_eq!(
            one("me Zm9v v b\r\n"),
            Request::MetaDebug {
                key: k("Zm9v"),
                base64: false
            }
        );
        for line in ["me\r\n", "me Zm9v* b\r\n"] {
            assert_eq!(
                parse_default(line),
                Err(client_error("bad command line format", line.len(), false)),
                "{line:?}"
            );
        }
    }

    fn error(line: &str) -> ParseError {
        ParseError::Rejected {
            reply: ErrorReply::Error,
            skip: line.len(),
            noreply: false,
        }
    }
}
