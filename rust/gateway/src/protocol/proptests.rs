//! Property tests of the request parser, which reads whatever a client sends: arbitrary
//! bytes never panic and frame the same however the stream is split, and well-formed
//! commands of every kind parse back to the request they were written from. Case counts
//! are kept small enough for a slow CI machine (each test takes a few seconds there).

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{subsequence, Index};

use super::tests::{small_limits, Conn, Event};
use super::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

/// `bytes` cut at `cuts` (positions taken modulo its length), in order.
fn split(bytes: &[u8], cuts: &[Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for to in at.into_iter().chain([bytes.len()]) {
        chunks.push(bytes[from..to].to_vec());
        from = to;
    }
    chunks
}

/// Every byte split into a chunk of its own.
fn bytewise(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.iter().map(|&b| vec![b]).collect()
}

// ---- well-formed requests, and how a client writes them ----

/// A key the text protocol accepts: no space or control character, 1 to 250 bytes.
fn key() -> impl Strategy<Value = Cow<'static, [u8]>> {
    let byte = prop_oneof![0x21u8..=0x7e, 0x80u8..=0xff];
    prop_oneof![
        4 => vec(byte.clone(), 1..8),
        1 => vec(byte, 1..=250),
    ]
    .prop_map(Cow::Owned)
}

/// A token of printable characters, no space: what follows a meta flag's letter.
fn token(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(0x21u8..=0x7e, 1..=max)
}

fn number<T: Arbitrary + ToString>() -> impl Strategy<Value = Option<Vec<u8>>> {
    any::<T>().prop_map(|n| Some(n.to_string().into_bytes()))
}

/// Flags that take no argument (a token after the letter is kept as it is).
const PLAIN_FLAGS: &[u8] = b"cfhIklLPqstuv";

/// At most `max` meta flags in the order sent, each letter once, with valid tokens;
/// `modes` are the `M` letters the command takes (none: no `M` flag), `base64` adds `b`.
fn meta_flags(modes: &'static [u8], base64: bool, max: usize) -> BoxedStrategy<MetaFlags> {
    let mut letters: Vec<u8> = b"NTRFCJDO".to_vec();
    letters.extend_from_slice(PLAIN_FLAGS);
    if !modes.is_empty() {
        letters.push(b'M');
    }
    subsequence(letters, 0..=max - usize::from(base64))
        .prop_shuffle()
        .prop_flat_map(move |mut letters| {
            if base64 {
                letters.push(b'b');
            }
            let flags: Vec<BoxedStrategy<MetaFlag>> = letters
                .into_iter()
                .map(|flag| {
                    let token: BoxedStrategy<Option<Vec<u8>>> = match flag {
                        b'N' | b'T' | b'R' => number::<i32>().boxed(),
                        b'F' => number::<u32>().boxed(),
                        b'C' | b'J' | b'D' => number::<u64>().boxed(),
                        b'O' => proptest::option::of(token(31)).boxed(),
                        b'M' => proptest::sample::select(modes)
                            .prop_map(|m| Some(vec![m]))
                            .boxed(),
                        b'b' => Just(None).boxed(),
                        _ => prop_oneof![4 => Just(None), 1 => token(4).prop_map(Some)].boxed(),
                    };
                    token
                        .prop_map(move |token| MetaFlag { flag, token })
                        .boxed()
                })
                .collect();
            flags.prop_map(MetaFlags)
        })
        .boxed()
}

/// A meta key and flags: a text key, or any bytes sent in base64 under `b`.
fn meta_keyed(
    modes: &'static [u8],
    max: usize,
) -> impl Strategy<Value = (Cow<'static, [u8]>, MetaFlags)> {
    prop_oneof![
        (key(), meta_flags(modes, false, max)),
        // 186 bytes are 248 in base64: within the key limit.
        (
            vec(any::<u8>(), 1..=186).prop_map(Cow::Owned),
            meta_flags(modes, true, max)
        ),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..24),
        1 => vec(any::<u8>(), 0..600),
    ]
}

fn store_command() -> impl Strategy<Value = StoreCommand> {
    prop_oneof![
        Just(StoreCommand::Set),
        Just(StoreCommand::Add),
        Just(StoreCommand::Replace),
        Just(StoreCommand::Append),
        Just(StoreCommand::Prepend),
        any::<u64>().prop_map(StoreCommand::Cas),
    ]
}

/// Every kind of request, as a client may send it.
fn request() -> impl Strategy<Value = Request<'static>> {
    let exptime = any::<i32>().prop_map(i64::from);
    prop_oneof![
        (vec(key(), 1..5), any::<bool>()).prop_map(|(keys, cas)| Request::Get { keys, cas }),
        (exptime.clone(), vec(key(), 0..4), any::<bool>())
            .prop_map(|(exptime, keys, cas)| { Request::GetAndTouch { exptime, keys, cas } }),
        (
            store_command(),
            key(),
            any::<u32>(),
            exptime.clone(),
            data(),
            any::<bool>()
        )
            .prop_map(|(command, key, flags, exptime, data, noreply)| {
                Request::Store {
                    command,
                    key,
                    flags,
                    exptime,
                    data: data.into(),
                    noreply,
                }
            }),
        (key(), any::<bool>()).prop_map(|(key, noreply)| Request::Delete { key, noreply }),
        (key(), any::<u64>(), any::<bool>(), any::<bool>()).prop_map(
            |(key, delta, noreply, incr)| match incr {
                true => Request::Incr {
                    key,
                    delta,
                    noreply,
                },
                false => Request::Decr {
                    key,
                    delta,
                    noreply,
                },
            }
        ),
        (key(), exptime.clone(), any::<bool>()).prop_map(|(key, exptime, noreply)| {
            Request::Touch {
                key,
                exptime,
                noreply,
            }
        }),
        (exptime, any::<bool>()).prop_map(|(delay, noreply)| Request::FlushAll { delay, noreply }),
        vec("[a-z_]{1,8}", 0..3).prop_map(|args| Request::Stats { args }),
        Just(Request::Version),
        (8..=1_000_000_000u32, any::<bool>())
            .prop_map(|(megabytes, noreply)| Request::MemLimit { megabytes, noreply }),
        Just(Request::Quit),
        (any::<u32>(), any::<bool>())
            .prop_map(|(level, noreply)| Request::Verbosity { level, noreply }),
        meta_keyed(b"ES+", 17).prop_map(|(key, flags)| Request::MetaGet { key, flags }),
        (meta_keyed(b"EAPRS", 16), data()).prop_map(|((key, flags), data)| Request::MetaSet {
            key,
            data: data.into(),
            flags
        }),
        meta_keyed(b"x", 17).prop_map(|(key, flags)| Request::MetaDelete { key, flags }),
        meta_keyed(b"I+D-", 17).prop_map(|(key, flags)| Request::MetaArithmetic { key, flags }),
        Just(Request::MetaNoop),
        prop_oneof![
            key().prop_map(|key| Request::MetaDebug { key, base64: false }),
            vec(any::<u8>(), 1..=186).prop_map(|key| Request::MetaDebug {
                key: key.into(),
                base64: true
            }),
        ],
    ]
}

fn push_tokens(out: &mut Vec<u8>, tokens: &[&[u8]]) {
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(t);
    }
}

/// The key as sent: base64 under the `b` flag.
fn sent_key(key: &[u8], base64: bool) -> Vec<u8> {
    match base64 {
        true => STANDARD.encode(key).into_bytes(),
        false => key.to_vec(),
    }
}

fn meta_line(out: &mut Vec<u8>, cmd: &[u8], key: &[u8], len: Option<usize>, flags: &MetaFlags) {
    let key = sent_key(key, flags.base64_key());
    let len = len.map(|l| l.to_string().into_bytes());
    let flags: Vec<Vec<u8>> = flags
        .iter()
        .map(|f| [&[f.flag][..], f.token.as_deref().unwrap_or_default()].concat())
        .collect();
    let mut tokens: Vec<&[u8]> = vec![cmd, &key];
    tokens.extend(len.as_deref());
    tokens.extend(flags.iter().map(Vec::as_slice));
    push_tokens(out, &tokens);
}

/// `r` as a client writes it; `crlf` picks the command line's ending ("\r\n" or "\n").
fn encode(r: &Request, crlf: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let n = |v: &dyn ToString| v.to_string().into_bytes();
    let noreply = |on: bool| -> &'static [u8] {
        match on {
            true => b"noreply",
            false => b"",
        }
    };
    let mut block = None;
    let mut line = |tokens: &[&[u8]]| {
        let tokens: Vec<&[u8]> = tokens.iter().copied().filter(|t| !t.is_empty()).collect();
        push_tokens(&mut out, &tokens);
    };
    match r {
        Request::Get { keys, cas } => {
            let mut t: Vec<&[u8]> = vec![if *cas { b"gets" } else { b"get" }];
            t.extend(keys.iter().map(|k| &**k));
            line(&t);
        }
        Request::GetAndTouch { exptime, keys, cas } => {
            let e = n(exptime);
            let mut t: Vec<&[u8]> = vec![if *cas { b"gats" } else { b"gat" }, &e];
            t.extend(keys.iter().map(|k| &**k));
            line(&t);
        }
        Request::Store {
            command,
            key,
            flags,
            exptime,
            data,
            noreply: nr,
        } => {
            let (f, e, l) = (n(flags), n(exptime), n(&data.len()));
            let (name, unique): (&[u8], Vec<u8>) = match command {
                StoreCommand::Set => (b"set", vec![]),
                StoreCommand::Add => (b"add", vec![]),
                StoreCommand::Replace => (b"replace", vec![]),
                StoreCommand::Append => (b"append", vec![]),
                StoreCommand::Prepend => (b"prepend", vec![]),
                StoreCommand::Cas(u) => (b"cas", n(u)),
            };
            line(&[name, key, &f, &e, &l, &unique, noreply(*nr)]);
            block = Some(data.clone());
        }
        Request::Delete { key, noreply: nr } => line(&[b"delete", key, noreply(*nr)]),
        Request::Incr {
            key,
            delta,
            noreply: nr,
        } => line(&[b"incr", key, &n(delta), noreply(*nr)]),
        Request::Decr {
            key,
            delta,
            noreply: nr,
        } => line(&[b"decr", key, &n(delta), noreply(*nr)]),
        Request::Touch {
            key,
            exptime,
            noreply: nr,
        } => line(&[b"touch", key, &n(exptime), noreply(*nr)]),
        Request::FlushAll { delay, noreply: nr } => line(&[b"flush_all", &n(delay), noreply(*nr)]),
        Request::Stats { args } => {
            let mut t: Vec<&[u8]> = vec![b"stats"];
            t.extend(args.iter().map(String::as_bytes));
            line(&t);
        }
        Request::Version => line(&[b"version"]),
        Request::MemLimit {
            megabytes,
            noreply: nr,
        } => line(&[b"cache_memlimit", &n(megabytes), noreply(*nr)]),
        // Not generated: their lines are fixed texts, tested by example.
        Request::Answer { .. } => line(&[b"shutdown"]),
        Request::TouchThenRefuse { .. } => line(&[b"gat", b"0", &[b'k'; 251]]),
        Request::Watch { noreply: nr, .. } => line(&[b"watch", noreply(*nr)]),
        Request::Quit => line(&[b"quit"]),
        Request::Verbosity { level, noreply: nr } => line(&[b"verbosity", &n(level), noreply(*nr)]),
        Request::MetaGet { key, flags } => meta_line(&mut out, b"mg", key, None, flags),
        Request::MetaSet { key, data, flags } => {
            meta_line(&mut out, b"ms", key, Some(data.len()), flags);
            block = Some(data.clone());
        }
        Request::MetaDelete { key, flags } => meta_line(&mut out, b"md", key, None, flags),
        Request::MetaArithmetic { key, flags } => meta_line(&mut out, b"ma", key, None, flags),
        Request::MetaNoop => line(&[b"mn"]),
        Request::MetaDebug { key, base64 } => {
            let b: &[u8] = if *base64 { b"b" } else { b"" };
            line(&[b"me", &sent_key(key, *base64), b]);
        }
    }
    out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
    if let Some(data) = block {
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
    }
    out
}

// ---- arbitrary input ----

/// Bytes that look like the protocol often enough to reach past the first check:
/// command names, numbers, flags, line endings and stray bytes, run together.
fn protocolish() -> impl Strategy<Value = Vec<u8>> {
    const WORDS: &[&str] = &[
        "get ",
        "gets ",
        "gat ",
        "set ",
        "add ",
        "cas ",
        "append ",
        "incr ",
        "decr ",
        "delete ",
        "touch ",
        "flush_all ",
        "verbosity ",
        "stats ",
        "version",
        "quit",
        "ms ",
        "mg ",
        "md ",
        "ma ",
        "me ",
        "mn",
        "noreply",
        " ",
        "  ",
        "\r\n",
        "\n",
        "\r",
        "0 ",
        "1 ",
        "5 ",
        "-1 ",
        "16 ",
        "17 ",
        "2147483647 ",
        "4294967296 ",
        "k ",
        "key ",
        "b ",
        "v ",
        "q ",
        "T10 ",
        "N5 ",
        "O123 ",
        "MS ",
        "ME ",
        "MI ",
        "Mx ",
        "C5 ",
        "D3 ",
        "J7 ",
        "Zm9v ",
        "====",
        "\x00",
        "\x7f",
        "\t",
        "hello",
        "                                 ",
    ];
    vec(
        prop_oneof![
            4 => proptest::sample::select(WORDS).prop_map(|w| w.as_bytes().to_vec()),
            1 => vec(any::<u8>(), 1..4),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..300), protocolish()]
}

/// Events of `input` under `limits` must not depend on how it arrives.
fn same_however_split(limits: Limits, input: &[u8], cuts: &[Index]) -> Result<(), TestCaseError> {
    let whole = Conn::run(limits, [input.to_vec()]);
    let chunked = Conn::run(limits, split(input, cuts));
    prop_assert_eq!(&chunked, &whole, "split at {:?}", cuts);
    let bytewise = Conn::run(limits, bytewise(input));
    prop_assert_eq!(&bytewise, &whole, "byte by byte");
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// Well-formed requests parse back to themselves, whole or split anywhere.
    #[test]
    fn well_formed_requests_round_trip(
        requests in vec((request(), any::<bool>()), 1..8),
        cuts in vec(any::<Index>(), 0..6),
    ) {
        let input: Vec<u8> = requests.iter().flat_map(|(r, crlf)| encode(r, *crlf)).collect();
        let expect: Vec<Event> = requests
            .iter()
            .map(|(r, _)| Event::Request(r.clone()))
            .collect();
        let limits = Limits::default();
        prop_assert_eq!(&Conn::run(limits, [input.clone()]), &expect);
        prop_assert_eq!(&Conn::run(limits, split(&input, &cuts)), &expect);
    }

    /// A request parses alone exactly as it does in the middle of a pipelined burst.
    #[test]
    fn one_request_takes_its_own_bytes_only(request in request(), crlf in any::<bool>()) {
        let bytes = encode(&request, crlf);
        let (parsed, taken) = parse(&bytes, &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?
            .ok_or_else(|| TestCaseError::fail("incomplete"))?;
        prop_assert_eq!(parsed, request);
        prop_assert_eq!(taken, bytes.len());
        // Any proper prefix is incomplete, never an error or another request.
        let cut = bytes.len() / 2;
        prop_assert_eq!(parse(&bytes[..cut], &Limits::default()), Ok(None));
    }

    /// Arbitrary bytes never panic, and what they frame to (requests, error replies,
    /// a closed connection) is the same whole, in chunks, or byte by byte.
    #[test]
    fn arbitrary_bytes_frame_the_same_however_split(
        input in any_input(),
        cuts in vec(any::<Index>(), 0..6),
    ) {
        same_however_split(small_limits(), &input, &cuts)?;
        same_however_split(Limits::default(), &input, &cuts)?;
    }

    /// Well-formed requests after garbage: once the garbage has been answered and the
    /// stream is back in step, the requests that follow come out as sent, whole or in
    /// chunks.
    #[test]
    fn requests_after_garbage_come_out_whole(
        garbage in protocolish(),
        requests in vec((request(), any::<bool>()), 1..4),
        cuts in vec(any::<Index>(), 0..4),
    ) {
        let mut conn = Conn::new(Limits::default());
        conn.feed(&garbage);
        // A line end closes whatever line the garbage left open.
        conn.feed(b"\r\n");
        if conn.in_step() {
            let answered = conn.events.len();
            let tail: Vec<u8> = requests.iter().flat_map(|(r, crlf)| encode(r, *crlf)).collect();
            for chunk in split(&tail, &cuts) {
                conn.feed(&chunk);
            }
            let expect: Vec<Event> =
                requests.iter().map(|(r, _)| Event::Request(r.clone())).collect();
            prop_assert_eq!(&conn.events[answered..], &expect[..]);
        }
    }
}

/// A `get` line led by more spaces than the line limit: whole, it is a multiget (whose
/// lines may reach the item size); split after the spaces, or inside the word, it must
/// not be taken for an over-long line of another command.
#[test]
fn leading_spaces_before_a_get_do_not_depend_on_the_split() {
    let limits = Limits {
        max_line_len: 16,
        max_item_size: 256,
        ..Limits::default()
    };
    let spaces = limits.max_line_len + 8;
    let mut input = vec![b' '; spaces];
    input.extend_from_slice(b"get a\r\n");
    let whole = Conn::run(limits, [input.clone()]);
    let get = Request::Get {
        keys: vec![Cow::Borrowed(&b"a"[..])],
        cas: false,
    };
    assert_eq!(whole, vec![Event::Request(get)]);
    for cut in spaces - 2..spaces + 6 {
        let (a, b) = input.split_at(cut);
        assert_eq!(Conn::run(limits, [a.to_vec(), b.to_vec()]), whole, "{cut}");
    }
    // Another word after the spaces is over the line limit, however it arrives.
    let mut other = vec![b' '; spaces];
    other.extend_from_slice(b"gat 1 a\r\n");
    assert_eq!(Conn::run(limits, [other.clone()]), vec![Event::Closed]);
    for cut in spaces - 2..spaces + 6 {
        let (a, b) = other.split_at(cut);
        assert_eq!(
            Conn::run(limits, [a.to_vec(), b.to_vec()]),
            vec![Event::Closed],
            "{cut}"
        );
    }
}
