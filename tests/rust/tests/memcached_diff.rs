//! A differential fuzzer: seeded sessions of valid, malformed and boundary command lines
//! (text and meta protocol) go to a fresh real memcached and to `mmc memcached`, and
//! every reply must match byte for byte.
//!
//! `MMC_MEMCACHED_FUZZ_LINES` (default 20 000) sets how many lines to generate,
//! `MMC_MEMCACHED_FUZZ_SEED` the seed (default 1; printed, so a failure can be
//! replayed). Debugging: `MMC_MEMCACHED_FUZZ_TRACE=1` prints every session and
//! memcached's replies, `MMC_MEMCACHED_FUZZ_PROBE` adds a request after each session.
//!
//! Each session is sent as a pipelined burst, cut into random TCP writes, followed by
//! a sentinel (`mg __end__ Oend`, answered `EN Oend`): both servers are read up to it,
//! so no timing guesswork. Replies are compared after [`normalize`], which blanks only
//! what two correct servers may differ in:
//! - `stats` values and the `version` text (each server's own);
//! - CAS uniques (`gets`, `mg c`, `me cas=`): numbers each server hands out; the
//!   fuzzer instead sends each server the unique *it* last returned for a key, so
//!   their meaning is still compared (a `cas` with it must win on both);
//! - seconds left or elapsed (`mg t`, `me exp=`/`la=`): a second boundary may fall
//!   between the two servers' answers;
//! - `me`'s `fetch=`: the pool keeps no access history (nor `mg h`/`l`, not sent).
//!
//! Not generated, on purpose (documented differences, see the protocol module): keys
//! with control characters, lines over 2048 bytes (memcached's answer depends on how
//! its reads split them), lengths near the item limit (memcached counts its item
//! header), `mg`'s `h`/`l` (the pool keeps no access history), `mg`'s `N`/`R` and
//! the `I` of `md`/`ms` (the gateway has no stale items, no recache wins, and does
//! not create items on a miss).
//!
//! Arranged so that memcached's own answer is determined (else it depends on how its
//! reads cut the stream, on its clock or on its memory): an `mn` (which makes it send
//! its replies) before a get with a too-long key, before `incr`/`decr`/`ma` and before
//! `watch`; no 1-second exptimes; no counters of 2^62 or more and no values of only
//! whitespace (its `incr` then reads past the value); made-up CAS uniques that no
//! server hands out; memcached runs without its LRU crawler and maintainer threads.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::procs::*;

/// A small seeded generator (splitmix64): the same seed gives the same sessions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True `pct` percent of the time.
    fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T: ?Sized>(&mut self, from: &[&'a T]) -> &'a T {
        from[self.below(from.len())]
    }
}

/// Part of a session: bytes, or the CAS unique the server last returned for a key
/// (plus `delta`, to send a stale one), filled in per server.
enum Piece {
    Bytes(Vec<u8>),
    Cas { key: Vec<u8>, delta: u64 },
}

struct Session {
    pieces: Vec<Piece>,
    lines: usize,
    ends_connection: bool,
}

impl Session {
    fn push(&mut self, bytes: impl AsRef<[u8]>) {
        match self.pieces.last_mut() {
            Some(Piece::Bytes(b)) => b.extend_from_slice(bytes.as_ref()),
            _ => self.pieces.push(Piece::Bytes(bytes.as_ref().to_vec())),
        }
    }

    fn render(&self, cas: &HashMap<Vec<u8>, u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.pieces {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Cas { key, delta } => {
                    // Unknown keys get the same made-up unique on both.
                    let c = cas.get(key).copied().unwrap_or(987_654_321);
                    out.extend_from_slice(c.wrapping_add(*delta).to_string().as_bytes());
                }
            }
        }
        out
    }
}

const LONG_KEY: usize = 250;

fn key(r: &mut Rng) -> Vec<u8> {
    match r.below(20) {
        0 => vec![b'k'; LONG_KEY],
        1 => vec![b'k'; LONG_KEY + 1],
        2 => "clé".as_bytes().to_vec(),
        3 => b"noreply".to_vec(),
        _ => r.pick(&["a", "b", "c", "n", "n2"]).as_bytes().to_vec(),
    }
}

/// A number token: mostly valid, sometimes negative, overflowing or not a number.
/// Never a small positive exptime: when it runs out would be timing.
fn number(r: &mut Rng, valid: &[&str]) -> String {
    if r.chance(80) {
        r.pick(valid).to_string()
    } else {
        r.pick(&[
            "-1",
            "-0",
            "+1000",
            "x",
            "1x",
            "1.5",
            "0x10",
            "2147483648",
            "4294967296",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
        ])
        .to_string()
    }
}

/// A value of nothing but whitespace gets an `x`: memcached's incr would read on past
/// it, into whatever its memory holds next.
fn no_blank_counter(v: &mut [u8]) {
    if !v.is_empty() && v.iter().all(u8::is_ascii_whitespace) {
        let end = v.len() - 1;
        v[end] = b'x';
    }
}

/// `len` bytes of `b` with a "\r\n" every 1000.
fn lines_of(b: u8, len: usize) -> Vec<u8> {
    let line: Vec<u8> = [vec![b; 998], b"\r\n".to_vec()].concat();
    line.into_iter().cycle().take(len).collect()
}

/// A number for what `incr`/`ma` count with, never making a counter of 2^63 or more:
/// memcached reads such a value as negative and then looks for a "-" in the C string,
/// which runs on past the value into whatever its memory holds next.
fn counter_number(r: &mut Rng, valid: &[&str]) -> String {
    let n = number(r, valid);
    match n.parse::<u64>() {
        Ok(big) if big >= 1 << 62 => "18446744073709551616".to_string(),
        _ => n,
    }
}

/// A made-up CAS unique: never one either server may have handed out (each counts
/// from 1), or a `cas` would win on one and lose on the other by chance.
fn cas_number(r: &mut Rng) -> String {
    let n = number(r, &["0", "99999999999"]);
    match n.parse::<u64>() {
        Ok(small) if (1..1 << 32).contains(&small) => "99999999999".to_string(),
        _ => n,
    }
}

fn value(r: &mut Rng) -> Vec<u8> {
    match r.below(12) {
        0 => {
            // Binary: bytes that, read as a command line when the storage line is
            // refused, can only be unknown commands (no letters but x y z).
            let alphabet = b"\x00\x01\x7f\x80\xff\r\n \t0123456789xyz-";
            let mut v: Vec<u8> = (0..r.below(40))
                .map(|_| alphabet[r.below(alphabet.len())])
                .collect();
            // All whitespace: memcached's incr would read on past the value, into
            // whatever its memory holds next.
            if v.iter().all(u8::is_ascii_whitespace) {
                v.push(b'x');
            }
            v
        }
        // Long, in lines short enough to be unknown commands where the storage line
        // is refused (a line over 2048 bytes would end the connection).
        1 => lines_of(b'x', r.below(3000)),
        _ => r
            .pick(&[
                "hello",
                "",
                "0",
                "10",
                "99",
                "-1",
                "12ab",
                " 5",
                "5 x",
                "+7",
                "18446744073709551616",
                "0000000000000000000000001",
                "x y",
            ])
            .as_bytes()
            .to_vec(),
    }
}

fn maybe_noreply(r: &mut Rng, line: &mut String, pct: usize) {
    if r.chance(pct) {
        line.push_str(" noreply");
    }
}

/// A storage command (`set`..`cas`), its data block framed so that either server, if it
/// accepts the line, reads exactly the bytes sent.
fn storage(r: &mut Rng, s: &mut Session) {
    let cmd = r.pick(&["set", "add", "replace", "append", "prepend", "cas"]);
    let k = key(r);
    let mut data = value(r);
    if r.chance(1) {
        // Over the item limit: both refuse and swallow the block.
        data = lines_of(b'o', (1 << 20) + 1 + r.below(1000));
    }
    let flags = number(r, &["0", "1", "42", "4294967295"]);
    let exptime = number(r, &["0", "0", "1000", "-1", "4000000000"]);
    let len_ok = r.chance(85);
    let len = if len_ok {
        data.len().to_string()
    } else {
        number(r, &["1", "3", "0"])
    };
    s.push(format!("{cmd} "));
    s.push(&k);
    s.push(format!(" {flags} {exptime} {len}"));
    if cmd == "cas" && r.chance(95) {
        s.push(" ");
        if r.chance(70) {
            let delta = if r.chance(70) { 0 } else { 1 };
            s.pieces.push(Piece::Cas {
                key: k.clone(),
                delta,
            });
        } else {
            s.push(cas_number(r));
        }
    }
    let mut tail = String::new();
    maybe_noreply(r, &mut tail, 25);
    if r.chance(5) {
        tail.push_str(r.pick(&[" extra", " noreply", " 0"]));
    }
    s.push(tail);
    s.push("\r\n");
    // A line with a length that parses gets exactly that many bytes and two more:
    // the right "\r\n", or (sometimes) two others for "bad data chunk" and a line end
    // (an empty command to a server that took the block, the end of an unknown one
    // to a server that refused the line).
    let announced: Option<usize> = len.parse().ok().filter(|&n: &usize| n < (2 << 20));
    match announced {
        Some(n) => {
            let mut block = data.clone();
            block.resize(n, b'z');
            no_blank_counter(&mut block);
            s.push(&block);
            s.push(if r.chance(5) { "zz\r\n" } else { "\r\n" });
        }
        None => {
            // Read as a command by both; unknown.
            s.push(b"zzz\r\n");
        }
    }
    s.lines += 1;
}

fn retrieval(r: &mut Rng, s: &mut Session) {
    let cmd = r.pick(&["get", "gets", "gat", "gats", "bget"]);
    let mut line = cmd.as_bytes().to_vec();
    if cmd.starts_with("gat") && r.chance(95) {
        line.push(b' ');
        line.extend_from_slice(number(r, &["0", "1000", "-1"]).as_bytes());
    }
    let keys: Vec<Vec<u8>> = (0..r.below(5)).map(|_| key(r)).collect();
    for k in &keys {
        line.push(b' ');
        line.extend_from_slice(k);
    }
    if r.chance(5) {
        line.extend_from_slice(b" noreply");
    }
    line.extend_from_slice(b"\r\n");
    get_line(s, &line, &keys);
}

/// A retrieval line. memcached answers a too-long key by dropping every reply it has
/// not sent yet, earlier commands' included, and which those are depends on how its
/// reads split the stream: an `mn` (which makes it send) goes first.
fn get_line(s: &mut Session, line: &[u8], keys: &[Vec<u8>]) {
    if keys.iter().any(|k| k.len() > LONG_KEY) {
        s.push("mn\r\n");
        s.lines += 1;
    }
    s.push(line);
    s.lines += 1;
}

fn simple(r: &mut Rng, s: &mut Session) {
    let k = key(r);
    let mut line: Vec<u8> = Vec::new();
    let mut put = |b: &[u8]| line.extend_from_slice(b);
    match r.below(9) {
        0 => {
            put(b"delete ");
            put(&k);
            if r.chance(30) {
                put(format!(" {}", number(r, &["0", "5"])).as_bytes());
            }
        }
        1 | 2 => {
            put(IN_PLACE);
            put(r.pick(&["incr ", "decr "]).as_bytes());
            put(&k);
            if r.chance(95) {
                put(format!(" {}", counter_number(r, &["1", "0", "7", "4294967296"])).as_bytes());
            }
        }
        3 => {
            put(b"touch ");
            put(&k);
            if r.chance(95) {
                put(format!(" {}", number(r, &["0", "1000", "-1"])).as_bytes());
            }
        }
        4 => {
            // No positive delays: when they fire would be timing.
            put(b"flush_all");
            if r.chance(40) {
                put(format!(" {}", r.pick(&["0", "-1", "x", "-0"])).as_bytes());
            }
        }
        5 => {
            put(b"verbosity");
            if r.chance(90) {
                put(format!(" {}", number(r, &["0", "1"])).as_bytes());
            }
        }
        6 => put(r
            .pick(&["version", "stats", "version x", "mn", "stats items x y"])
            .as_bytes()),
        7 => put(r
            .pick(&[
                "bogus",
                "GET a",
                "",
                " ",
                "g",
                "gets",
                "set",
                "set a 0 0",
                "cas a 0 0 1",
                "incr",
                "touch a",
                "delete",
                "delete a b c d",
                "shutdown",
                "cache_memlimit x",
                "cache_memlimit",
                // After `mn`: memcached refuses a watch behind replies it has not
                // sent, and which those are depends on its reads.
                "mn\r\nwatch bogus",
                "lru_crawler bogus",
                "lru_crawler",
                "mx a",
                "m",
            ])
            .as_bytes()),
        _ => {
            let keys = [k, key(r)];
            let line = [&b"get "[..], &keys[0], b" ", &keys[1], b"\r\n"].concat();
            return get_line(s, &line, &keys);
        }
    }
    let mut tail = String::new();
    maybe_noreply(r, &mut tail, 20);
    if r.chance(4) {
        tail.push_str(" extra");
    }
    line.extend_from_slice(tail.as_bytes());
    line.extend_from_slice(if r.chance(3) { b"\n" } else { b"\r\n" });
    s.push(line);
    s.lines += 1;
}

/// Sent before `incr`, `decr` and `ma`: memcached rewrites a number in place (padding
/// a shorter one with spaces) only while no reply it has not sent yet holds the item,
/// so whether an earlier `get` of the same burst still does depends on its reads. An
/// `mn` makes it send them.
const IN_PLACE: &[u8] = b"mn\r\n";

/// A meta flag token for `op`: mostly ones it knows, with good or bad tokens.
fn meta_flag(r: &mut Rng, op: u8) -> String {
    let num = |r: &mut Rng, valid: &[&str]| number(r, valid);
    let f = match op {
        b'g' => r.pick(&["v", "f", "c", "s", "t", "k", "q", "O", "T", "b", "u"]),
        b's' => r.pick(&["T", "F", "C", "q", "O", "k", "b", "M", "c", "s", "f"]),
        b'd' => r.pick(&["q", "O", "k", "C", "T", "x", "b"]),
        _ => r.pick(&["N", "J", "D", "T", "M", "q", "O", "k", "t", "c", "v", "b"]),
    };
    if r.chance(3) {
        return r.pick(&["Y", "5", "vv", "\u{80}", "Z"]).to_string();
    }
    let token = match f {
        "O" => r
            .pick(&["", "1", "abc", "99999999999999999999999999999999"])
            .to_string(),
        "T" | "N" | "R" => num(r, &["0", "1000", "-1"]),
        "F" => num(r, &["0", "7", "4294967295"]),
        "C" | "E" => cas_number(r),
        "J" => counter_number(r, &["0", "10", "4294967296"]),
        "D" => counter_number(r, &["1", "5", "4294967296"]),
        "M" => {
            let modes: &[&str] = if op == b's' {
                &["E", "A", "P", "R", "S", "I", "x", "", "EE"]
            } else {
                &["I", "+", "D", "-", "S", "", "II"]
            };
            r.pick(modes).to_string()
        }
        _ => String::new(),
    };
    format!("{f}{token}")
}

fn meta(r: &mut Rng, s: &mut Session) {
    let op = *r.pick(&[&b'g', &b'g', &b's', &b's', &b'd', &b'a', &b'e', &b'n']);
    let (k, b64) = if r.chance(10) {
        (
            r.pick(&["YQ==", "bg==", "Zm9v", "*bad", "YQ"])
                .as_bytes()
                .to_vec(),
            true,
        )
    } else {
        (key(r), false)
    };
    let mut line = if op == b'a' {
        IN_PLACE.to_vec()
    } else {
        Vec::new()
    };
    line.extend_from_slice(&[b'm', op, b' ']);
    if op == b'n' {
        line.truncate(2);
    } else if !r.chance(2) {
        line.extend_from_slice(&k);
    }
    let mut flags: Vec<String> = (0..r.below(5)).map(|_| meta_flag(r, op)).collect();
    if b64 && r.chance(80) {
        flags.push("b".into());
    }
    if r.chance(2) {
        flags.extend((0..20).map(|_| "v".to_string()));
    }
    // Repeats are mostly accidental here; keep some.
    if !r.chance(10) {
        let mut seen = Vec::new();
        flags.retain(|f| {
            let first = f.as_bytes().first().copied();
            if seen.contains(&first) {
                false
            } else {
                seen.push(first);
                true
            }
        });
    }
    let data = (op == b's').then(|| value(r));
    let len_token = data.as_ref().map(|d| {
        if r.chance(90) {
            d.len().to_string()
        } else {
            number(r, &["1", "0"])
        }
    });
    if let Some(len) = &len_token {
        if !r.chance(2) {
            line.extend_from_slice(format!(" {len}").as_bytes());
        }
    }
    if op == b'e' && r.chance(30) {
        line.extend_from_slice(b" b");
    }
    for f in &flags {
        line.push(b' ');
        line.extend_from_slice(f.as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    s.push(line);
    if let (Some(data), Some(len)) = (data, len_token) {
        match len.parse::<usize>() {
            Ok(n) if n < (2 << 20) => {
                let mut block = data;
                block.resize(n, b'z');
                no_blank_counter(&mut block);
                s.push(&block);
                s.push(if r.chance(5) { "zz\r\n" } else { "\r\n" });
            }
            _ => s.push(b"zzz\r\n"),
        }
    }
    s.lines += 1;
}

fn session(r: &mut Rng) -> Session {
    let mut s = Session {
        pieces: Vec::new(),
        lines: 0,
        ends_connection: false,
    };
    let most = if r.chance(10) { 60 } else { 12 };
    let n = 1 + r.below(most);
    for _ in 0..n {
        match r.below(10) {
            0..=2 => storage(r, &mut s),
            3 | 4 => retrieval(r, &mut s),
            5 | 6 => simple(r, &mut s),
            _ => meta(r, &mut s),
        }
    }
    if r.chance(1) {
        s.push("quit\r\n");
        s.lines += 1;
        s.ends_connection = true;
    }
    s
}

/// One server under test: its connection and the CAS uniques it returned.
struct Server {
    name: &'static str,
    addr: String,
    conn: TcpStream,
    cas: HashMap<Vec<u8>, u64>,
}

fn connect(addr: &str) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.set_nodelay(true).unwrap();
    c
}

impl Server {
    fn new(name: &'static str, addr: String) -> Server {
        Server {
            name,
            conn: connect(&addr),
            addr,
            cas: HashMap::new(),
        }
    }

    /// Sends the session cut at random places, then the sentinel; the raw reply, up to
    /// and including the sentinel's reply (or up to a close).
    fn run(&mut self, s: &Session, cuts: &mut Rng) -> Vec<u8> {
        let mut bytes = s.render(&self.cas);
        bytes.extend_from_slice(SENTINEL);
        let slow = cuts.chance(3);
        let mut at = 0;
        while at < bytes.len() {
            let n = if cuts.chance(50) {
                bytes.len() - at
            } else {
                1 + cuts.below((bytes.len() - at).min(64))
            };
            if self.conn.write_all(&bytes[at..at + n]).is_err() {
                break; // closed by the server; the reply says so
            }
            if slow {
                std::thread::sleep(Duration::from_millis(1));
            }
            at += n;
        }
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let closed = loop {
            if reply_complete(&got) {
                break false;
            }
            match self.conn.read(&mut buf) {
                Ok(0) | Err(_) if s.ends_connection => break true,
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    // Shown in the comparison, with the session.
                    got.extend_from_slice(format!("<{}: {e}>", self.name).as_bytes());
                    break true;
                }
            }
        };
        if closed {
            got.extend_from_slice(b"<closed>");
            self.conn = connect(&self.addr);
        }
        got
    }
}

/// Sent after each session: a miss on a key never stored, with an opaque no generated
/// line uses, so its reply can only be the sentinel's.
const SENTINEL: &[u8] = b"mg __end__ Oend\r\n";

fn reply_complete(got: &[u8]) -> bool {
    got.ends_with(b"EN Oend\r\n")
}

/// Blanks what may differ between two correct servers (see the module comment) and
/// notes the CAS uniques returned with `VALUE` lines.
fn normalize(raw: &[u8], cas: &mut HashMap<Vec<u8>, u64>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let Some(nl) = raw[at..].iter().position(|&b| b == b'\n') else {
            out.extend_from_slice(&raw[at..]);
            break;
        };
        let line = &raw[at..at + nl + 1];
        at += nl + 1;
        let text = line.strip_suffix(b"\r\n").unwrap_or(line);
        let tokens: Vec<&[u8]> = text.split(|&b| b == b' ').collect();
        let mut block: Option<usize> = None;
        match tokens[0] {
            b"STAT" => continue,
            b"VERSION" => out.extend_from_slice(b"VERSION <version>\r\n"),
            b"VALUE" if tokens.len() >= 4 => {
                let mut t = tokens.clone();
                if let Some(c) = t
                    .get(4)
                    .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
                {
                    cas.insert(t[1].to_vec(), c);
                    t[4] = b"<cas>";
                }
                out.extend_from_slice(&t.join(&b' '));
                out.extend_from_slice(b"\r\n");
                block = std::str::from_utf8(t[3]).ok().and_then(|l| l.parse().ok());
            }
            b"VA" | b"HD" | b"EN" | b"NF" | b"NS" | b"EX" => {
                let mut t: Vec<Vec<u8>> = tokens.iter().map(|t| t.to_vec()).collect();
                for (i, tok) in t.iter_mut().enumerate().skip(1) {
                    if i == 1 && tokens[0] == b"VA" {
                        block = std::str::from_utf8(tok).ok().and_then(|l| l.parse().ok());
                        continue;
                    }
                    let digits = tok.len() > 1 && tok[1..].iter().all(u8::is_ascii_digit);
                    if digits && tok[0] == b'c' {
                        *tok = b"c<cas>".to_vec();
                    } else if digits && tok[0] == b't' {
                        *tok = b"t<ttl>".to_vec();
                    }
                }
                out.extend_from_slice(&t.join(&b' '));
                out.extend_from_slice(b"\r\n");
            }
            b"ME" => {
                let t: Vec<Vec<u8>> = tokens
                    .iter()
                    .map(|tok| {
                        for name in [&b"exp="[..], b"la=", b"cas=", b"fetch="] {
                            if tok.starts_with(name) {
                                return [name, b"<n>"].concat();
                            }
                        }
                        tok.to_vec()
                    })
                    .collect();
                out.extend_from_slice(&t.join(&b' '));
                out.extend_from_slice(b"\r\n");
            }
            _ => out.extend_from_slice(line),
        }
        if let Some(len) = block {
            let end = (at + len + 2).min(raw.len());
            out.extend_from_slice(&raw[at..end]);
            at = end;
        }
    }
    out
}

fn start_memcached() -> (Proc, String) {
    let port = free_ports(1)[0];
    let child = std::process::Command::new("memcached")
        .args([
            "-m",
            "64",
            "-U",
            "0",
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["-t", "2", "-u", "root"])
        // No background threads holding items: one that does when an incr runs makes
        // memcached write a new item instead of rewriting the number in place.
        .args(["-o", "no_lru_crawler,no_lru_maintainer"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect(
            "memcached on PATH (Debian: apt-get install memcached); scripts/test.sh installs it",
        );
    let addr = format!("127.0.0.1:{port}");
    let p = Proc(child);
    eventually("memcached accepts connections", || {
        TcpStream::connect(&addr).is_ok()
    });
    (p, addr)
}

fn start_gateway() -> (Proc, String) {
    let (p, line) = spawn_mmc(&["memcached", "--bind", "127.0.0.1:0", "--dram-size", "64MiB"]);
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    (p, addr)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Escaped, one line of the session or reply per line of output.
fn escaped(b: &[u8]) -> String {
    b.escape_ascii().to_string().replace("\\n", "\\n\n    ")
}

#[test]
fn gateway_answers_every_line_as_memcached_does() {
    let lines = env_u64("MMC_MEMCACHED_FUZZ_LINES").unwrap_or(20_000) as usize;
    // A fixed default keeps CI deterministic; other seeds explore (and some still
    // find differences: see the module comment).
    let seed = env_u64("MMC_MEMCACHED_FUZZ_SEED").unwrap_or(1);
    println!("memcached differential fuzz: MMC_MEMCACHED_FUZZ_SEED={seed}, {lines} lines");
    let (_mc, mc_addr) = start_memcached();
    let (_gw, gw_addr) = start_gateway();
    let mut theirs = Server::new("memcached", mc_addr);
    let mut ours = Server::new("gateway", gw_addr);
    // Debugging: a request sent after every session (say "gets n\r\n") finds the
    // session where state the replies did not show yet parted.
    let probe = std::env::var("MMC_MEMCACHED_FUZZ_PROBE").unwrap_or_default();
    let probe = probe.replace("\\r\\n", "\r\n");
    let mut r = Rng(seed);
    let mut cuts = Rng(seed ^ 0x5555);
    let (mut sent, mut sessions) = (0, 0);
    let started = Instant::now();
    while sent < lines {
        let mut s = session(&mut r);
        if !s.ends_connection {
            s.push(&probe);
        }
        let want = normalize(&theirs.run(&s, &mut cuts), &mut theirs.cas);
        let got = normalize(&ours.run(&s, &mut cuts), &mut ours.cas);
        if std::env::var_os("MMC_MEMCACHED_FUZZ_TRACE").is_some() {
            eprintln!(
                "session {sessions}:\n    {}\n=>  {}",
                escaped(&s.render(&theirs.cas)),
                escaped(&want)
            );
        }
        if want != got {
            let first = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
            let from = want[..first]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            eprintln!(
                "first difference:\nmemcached: {}\ngateway:   {}",
                escaped(&want[from..want.len().min(first + 200)]),
                escaped(&got[from..got.len().min(first + 200)])
            );
            panic!(
                "session {sessions} (seed {seed}) differs\nsent (as to memcached):\n    {}\nmemcached:\n    {}\ngateway:\n    {}",
                escaped(&s.render(&theirs.cas)),
                escaped(&want),
                escaped(&got)
            );
        }
        sent += s.lines;
        sessions += 1;
    }
    println!(
        "{sent} lines in {sessions} sessions matched in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
