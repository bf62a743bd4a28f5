//! The memcached gateway over a real socket: `mmc memcached` on the embedded default,
//! spoken to byte for byte as a memcached client would. Every test runs against a
//! real memcached too (Debian's `memcached`), so it tests the protocol and not our
//! reading of it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::procs::*;

fn start_gateway() -> (Proc, String) {
    let (p, line) = spawn_mmc(&["memcached", "--bind", "127.0.0.1:0", "--dram-size", "64MiB"]);
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    (p, addr)
}

/// A real memcached on a free loopback port, 64 MiB, 1 MiB items (its defaults).
fn start_memcached() -> (Proc, String) {
    let port = free_ports(1)[0];
    let child = std::process::Command::new("memcached")
        .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
        .args(["-m", "64", "-t", "2", "-u", "root"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("memcached on PATH (Debian: apt-get install memcached); .ci/run installs it");
    let addr = format!("127.0.0.1:{port}");
    let p = Proc(child);
    eventually("memcached accepts connections", || {
        TcpStream::connect(&addr).is_ok()
    });
    (p, addr)
}

/// Runs `check` against our gateway and against a real memcached.
fn both(check: impl Fn(&str)) {
    let (_gw, ours) = start_gateway();
    check(&ours);
    let (_mc, theirs) = start_memcached();
    check(&theirs);
}

/// Sends `request` and reads until the reply ends with `until`.
fn ask(c: &mut TcpStream, request: &[u8], until: &[u8]) -> Vec<u8> {
    c.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !got.ends_with(until) {
        let n = c.read(&mut buf).expect("a reply before the timeout");
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

fn connect(addr: &str) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_text_protocol_over_a_socket() {
    both(text_protocol);
}

fn text_protocol(addr: &str) {
    let mut c = connect(addr);
    let mut say = |req: &[u8], until: &[u8]| text(&ask(&mut c, req, until));

    assert_eq!(say(b"set a 5 0 3\r\nabc\r\n", b"\r\n"), "STORED\r\n");
    assert_eq!(
        say(b"get a\r\n", b"END\r\n"),
        "VALUE a 5 3\r\nabc\r\nEND\r\n"
    );
    assert_eq!(say(b"add a 0 0 1\r\nx\r\n", b"\r\n"), "NOT_STORED\r\n");
    assert_eq!(say(b"replace zz 0 0 1\r\nx\r\n", b"\r\n"), "NOT_STORED\r\n");
    assert_eq!(say(b"append a 0 0 2\r\nde\r\n", b"\r\n"), "STORED\r\n");
    assert_eq!(say(b"prepend a 0 0 1\r\n_\r\n", b"\r\n"), "STORED\r\n");
    let gets = say(b"gets a\r\n", b"END\r\n");
    let cas: u64 = gets.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(gets.ends_with("\r\n_abcde\r\nEND\r\n"), "{gets}");
    let stale = format!("cas a 0 0 1 {}\r\nq\r\n", cas + 1000);
    assert_eq!(say(stale.as_bytes(), b"\r\n"), "EXISTS\r\n");
    let fresh = format!("cas a 0 0 1 {cas}\r\nq\r\n");
    assert_eq!(say(fresh.as_bytes(), b"\r\n"), "STORED\r\n");
    assert_eq!(say(b"cas nope 0 0 1 1\r\nq\r\n", b"\r\n"), "NOT_FOUND\r\n");

    // Binary-safe values, with CR LF inside.
    assert_eq!(
        say(b"set bin 0 0 6\r\n\r\n\0\xff\r\n\r\n", b"STORED\r\n"),
        "STORED\r\n"
    );
    assert_eq!(
        ask(&mut c, b"get bin\r\n", b"END\r\n"),
        b"VALUE bin 0 6\r\n\r\n\0\xff\r\n\r\nEND\r\n"
    );
    let mut say = |req: &[u8], until: &[u8]| text(&ask(&mut c, req, until));

    // Arithmetic.
    assert_eq!(say(b"set n 0 0 2\r\n10\r\n", b"\r\n"), "STORED\r\n");
    assert_eq!(say(b"incr n 5\r\n", b"\r\n"), "15\r\n");
    assert_eq!(say(b"decr n 100\r\n", b"\r\n"), "0\r\n");
    assert_eq!(say(b"incr nope 1\r\n", b"\r\n"), "NOT_FOUND\r\n");
    assert_eq!(
        say(b"incr a 1\r\n", b"\r\n"),
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    );

    // noreply: nothing comes back, so the next reply is the version's.
    let burst =
        b"set q 0 0 1 noreply\r\nx\r\ndelete nope noreply\r\nincr n 1 noreply\r\nversion\r\n";
    assert!(say(burst, b"\r\n").starts_with("VERSION "));
    // The number kept its two bytes ("15" became "0 ", then "1 "), as memcached keeps it.
    assert_eq!(
        say(b"get q n\r\n", b"END\r\n"),
        "VALUE q 0 1\r\nx\r\nVALUE n 0 2\r\n1 \r\nEND\r\n"
    );

    // Touch, delete, expiry.
    assert_eq!(say(b"touch q 100\r\n", b"\r\n"), "TOUCHED\r\n");
    assert_eq!(say(b"touch nope 100\r\n", b"\r\n"), "NOT_FOUND\r\n");
    assert_eq!(
        say(b"gat 0 q\r\n", b"END\r\n"),
        "VALUE q 0 1\r\nx\r\nEND\r\n"
    );
    assert_eq!(say(b"delete q\r\n", b"\r\n"), "DELETED\r\n");
    assert_eq!(say(b"delete q\r\n", b"\r\n"), "NOT_FOUND\r\n");
    assert_eq!(say(b"set gone 0 -1 1\r\nx\r\n", b"\r\n"), "STORED\r\n");
    assert_eq!(say(b"get gone\r\n", b"END\r\n"), "END\r\n");

    // Errors leave the connection usable.
    assert_eq!(say(b"bogus\r\n", b"\r\n"), "ERROR\r\n");
    assert!(say(b"set k 0 0 nope\r\n", b"\r\n").starts_with("CLIENT_ERROR"));
    let long_key = format!("get {}\r\n", "k".repeat(251));
    assert!(say(long_key.as_bytes(), b"\r\n").starts_with("CLIENT_ERROR"));
    // As in memcached: the block is the announced bytes plus two, the trailing CR LF
    // left over is an empty command.
    assert_eq!(
        say(b"set k 0 0 1\r\nxyz\r\n", b"\nERROR\r\n"),
        "CLIENT_ERROR bad data chunk\r\nERROR\r\n"
    );
    let big = format!("set big 0 0 {}\r\n{}\r\n", 2 << 20, "x".repeat(2 << 20));
    assert!(say(big.as_bytes(), b"\r\n").starts_with("SERVER_ERROR object too large"));
    assert_eq!(say(b"get big\r\n", b"END\r\n"), "END\r\n");

    // A pipelined burst: every reply, in order, in one go.
    let mut burst = Vec::new();
    let mut expect = String::new();
    for i in 0..100 {
        burst.extend_from_slice(
            format!("set p{i} {i} 0 {}\r\n{i}\r\n", i.to_string().len()).as_bytes(),
        );
        expect.push_str("STORED\r\n");
    }
    for i in 0..100 {
        burst.extend_from_slice(format!("get p{i}\r\n").as_bytes());
        expect.push_str(&format!(
            "VALUE p{i} {i} {}\r\n{i}\r\nEND\r\n",
            i.to_string().len()
        ));
    }
    assert_eq!(say(&burst, b"VALUE p99 99 2\r\n99\r\nEND\r\n"), expect);

    let stats = say(b"stats\r\n", b"END\r\n");
    assert!(stats.contains("STAT cmd_get "), "{stats}");
    assert!(stats.contains("STAT curr_connections "), "{stats}");
    assert_eq!(say(b"flush_all\r\n", b"\r\n"), "OK\r\n");
    assert_eq!(say(b"get a p1\r\n", b"END\r\n"), "END\r\n");
    assert_eq!(say(b"mn\r\n", b"\r\n"), "MN\r\n");
    c.write_all(b"quit\r\n").unwrap();
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0, "quit closes");
}

#[test]
fn many_connections_share_the_items() {
    both(many_connections);
}

fn many_connections(addr: &str) {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut c = connect(&addr);
                for i in 0..50 {
                    let set = format!("set t{t}-{i} 0 0 4\r\nv{t:03}\r\n");
                    assert_eq!(text(&ask(&mut c, set.as_bytes(), b"\r\n")), "STORED\r\n");
                }
                // All clients count on one key: increments are atomic.
                for _ in 0..50 {
                    let r = text(&ask(&mut c, b"incr shared 1\r\n", b"\r\n"));
                    if r == "NOT_FOUND\r\n" {
                        ask(&mut c, b"add shared 0 0 1\r\n0\r\n", b"\r\n");
                        ask(&mut c, b"incr shared 1\r\n", b"\r\n");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = connect(addr);
    let got = text(&ask(&mut c, b"get shared t7-49\r\n", b"END\r\n"));
    assert_eq!(
        got,
        "VALUE shared 0 3\r\n400\r\nVALUE t7-49 0 4\r\nv007\r\nEND\r\n"
    );
}

/// pymemcache (PyPI) works against the gateway, and the same script against memcached.
#[test]
fn pymemcache_works_against_the_gateway() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../python/pymemcache_client.py"
    );
    both(|addr| {
        let out = std::process::Command::new("python3")
            .args([script, addr])
            .output()
            .expect(
                "python3 on PATH, with pymemcache (pip install pymemcache); .ci/run installs it",
            );
        assert!(
            out.status.success(),
            "pymemcache against {addr}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The integration suite pymemcache ships in its package, run as its authors run it
/// (`pytest --server --port`): it passes against memcached, and against the gateway
/// every test passes but those of [`PYMEMCACHE_KNOWN`].
#[test]
fn pymemcaches_own_integration_suite_passes_against_the_gateway() {
    let failed = |addr: &str| {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let out = std::process::Command::new("python3")
            .args(["-c", PYMEMCACHE_SUITE, host, port])
            .output()
            .expect("python3 on PATH, with pymemcache and pytest; .ci/run installs them");
        let report = text(&out.stdout);
        assert!(
            report.contains(" passed"),
            "pymemcache's suite did not run against {addr}: {report}{}",
            text(&out.stderr)
        );
        let mut failed: Vec<String> = report
            .lines()
            .filter_map(|l| l.strip_prefix("FAILED "))
            .map(|t| t.split([' ', '[']).next().unwrap_or(t).to_string())
            .collect();
        failed.dedup();
        failed
    };
    let (_mc, theirs) = start_memcached();
    assert_eq!(failed(&theirs), Vec::<String>::new(), "against memcached");
    let (_gw, ours) = start_gateway();
    let ours = failed(&ours);
    let known: Vec<String> = PYMEMCACHE_KNOWN.iter().map(|t| t.to_string()).collect();
    assert_eq!(ours, known, "against the gateway");
}

/// Runs the suite of the installed pymemcache against HOST PORT (argv), one line per
/// failed test.
const PYMEMCACHE_SUITE: &str = "import os, sys, pymemcache, pytest
os.chdir(os.path.dirname(pymemcache.__file__))
sys.exit(pytest.main(['-q', '-rf', '-p', 'no:cacheprovider', '-m', 'integration',
    'test/test_integration.py', '--server', sys.argv[1], '--port', sys.argv[2]]))";

/// Tests of pymemcache's suite the gateway fails, each a documented difference (none).
const PYMEMCACHE_KNOWN: [&str; 0] = [];

#[test]
fn the_meta_protocol_over_a_socket() {
    both(meta_protocol);
}

fn meta_protocol(addr: &str) {
    let mut c = connect(addr);
    let mut say = |req: &[u8], until: &[u8]| text(&ask(&mut c, req, until));
    assert_eq!(say(b"ms m1 2 F5 T0\r\nhi\r\n", b"\r\n"), "HD\r\n");
    assert_eq!(
        say(b"mg m1 v f s k Oab\r\n", b"hi\r\n"),
        "VA 2 f5 s2 km1 Oab\r\nhi\r\n"
    );
    let hd = say(b"mg m1 c t\r\n", b"\r\n");
    assert!(hd.starts_with("HD c") && hd.ends_with(" t-1\r\n"), "{hd}");
    assert_eq!(say(b"mg nope v\r\n", b"\r\n"), "EN\r\n");
    // Quiet: the miss says nothing, so the no-op's MN comes first.
    assert_eq!(say(b"mg nope v q\r\nmn\r\n", b"MN\r\n"), "MN\r\n");
    assert_eq!(say(b"ms m1 2 ME\r\nxx\r\n", b"\r\n"), "NS\r\n");
    assert_eq!(say(b"ms m2 1 MR\r\nx\r\n", b"\r\n"), "NS\r\n");
    assert_eq!(say(b"ms m1 1 MA\r\n!\r\n", b"\r\n"), "HD\r\n");
    assert_eq!(say(b"mg m1 v\r\n", b"hi!\r\n"), "VA 3\r\nhi!\r\n");
    let cas: u64 = say(b"mg m1 c\r\n", b"\r\n")
        .trim()
        .strip_prefix("HD c")
        .unwrap()
        .parse()
        .unwrap();
    let stale = format!("ms m1 1 C{}\r\nz\r\n", cas + 1000);
    assert_eq!(say(stale.as_bytes(), b"\r\n"), "EX\r\n");
    let fresh = format!("ms m1 1 C{cas}\r\nz\r\n");
    assert_eq!(say(fresh.as_bytes(), b"\r\n"), "HD\r\n");
    assert_eq!(say(b"md m1 q\r\nmn\r\n", b"MN\r\n"), "MN\r\n");
    assert_eq!(say(b"md m1\r\n", b"\r\n"), "NF\r\n");
    assert_eq!(say(b"ma cnt\r\n", b"\r\n"), "NF\r\n");
    assert_eq!(say(b"ma cnt N0 J10 v\r\n", b"10\r\n"), "VA 2\r\n10\r\n");
    assert_eq!(say(b"ma cnt v\r\n", b"11\r\n"), "VA 2\r\n11\r\n");
    assert_eq!(say(b"ma cnt MD D20 v\r\n", b"0\r\n"), "VA 1\r\n0\r\n");
    assert_eq!(
        say(b"mg cnt k v Oxyz\r\n", b"0 \r\n"),
        "VA 2 kcnt Oxyz\r\n0 \r\n"
    );
    assert_eq!(say(b"ms s 3\r\nabc\r\n", b"\r\n"), "HD\r\n");
    assert_eq!(
        say(b"ma s\r\n", b"\r\n"),
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    );
    let me = say(b"me cnt\r\n", b"\r\n");
    assert!(
        me.starts_with("ME cnt exp=-1 la=") && me.contains(" cas="),
        "{me}"
    );
    assert_eq!(say(b"me nope\r\n", b"\r\n"), "EN\r\n");
    assert_eq!(say(b"ms q1 1 q\r\nx\r\nmn\r\n", b"MN\r\n"), "MN\r\n");
    assert_eq!(say(b"mg q1 v\r\n", b"x\r\n"), "VA 1\r\nx\r\n");
}

/// A real memcached started with extra options.
fn start_memcached_with(extra: &[&str]) -> (Proc, String) {
    let port = free_ports(1)[0];
    let child = std::process::Command::new("memcached")
        .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
        .args(["-m", "64", "-t", "2", "-u", "root"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("memcached on PATH (Debian: apt-get install memcached)");
    let addr = format!("127.0.0.1:{port}");
    let p = Proc(child);
    eventually("memcached accepts connections", || {
        TcpStream::connect(&addr).is_ok()
    });
    (p, addr)
}

/// Sends `request` then `mn`, and returns everything up to the `MN` (excluded).
fn exchange(c: &mut TcpStream, request: &[u8]) -> String {
    let mut got = text(&ask(c, &[request, b"mn\r\n"].concat(), b"MN\r\n"));
    got.truncate(got.len() - 4);
    got
}

/// Cases where the differential fuzzer (memcached_diff.rs) found the gateway answering
/// otherwise than memcached 1.6, minimized; each must get memcached's answer.
#[test]
fn what_the_differential_fuzzer_found() {
    both(fuzzer_cases);
}

fn fuzzer_cases(addr: &str) {
    let mut c = connect(addr);
    let long = "k".repeat(251);
    let opaque = format!("O{}", "9".repeat(32));
    let big = "x".repeat((1 << 20) + 1);
    let cases: Vec<(String, &str)> = vec![
        // Numbers are read with strtol/strtoul and narrowed to memcached's C types:
        // flags 2^32 is 0, exptime 4000000000 a negative (already expired) one.
        (
            "set f 4294967296 0 1\r\nx\r\nget f\r\n".into(),
            "STORED\r\nVALUE f 0 1\r\nx\r\nEND\r\n",
        ),
        (
            "set e 0 4000000000 1\r\nx\r\nget e\r\n".into(),
            "STORED\r\nEND\r\n",
        ),
        ("touch f 4294967296\r\n".into(), "TOUCHED\r\n"),
        ("verbosity 4294967296\r\n".into(), "OK\r\n"),
        // incr reads numbers as strtoull does.
        (
            "set n 0 0 3\r\n5 x\r\nincr n 1\r\nget n\r\n".into(),
            "STORED\r\n6\r\nVALUE n 0 3\r\n6  \r\nEND\r\n",
        ),
        (
            "set n 0 0 2\r\n+7\r\nincr n 1\r\n".into(),
            "STORED\r\n8\r\n",
        ),
        (
            "set n 0 0 0\r\n\r\nincr n 1\r\n".into(),
            "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        // noreply silences that error too.
        ("incr n 1 noreply\r\n".into(), ""),
        // Flags of later memcacheds.
        ("mg f E5\r\n".into(), "CLIENT_ERROR invalid flag\r\n"),
        (
            "md f x\r\n".into(),
            "CLIENT_ERROR invalid or duplicate flag\r\n",
        ),
        // ms returns c on every status; C with append checks, C0 checks nothing.
        ("ms nope 1 c MR k\r\nx\r\n".into(), "NS c0 knope\r\n"),
        ("ms f 1 C99999 MA\r\ny\r\n".into(), "EX\r\n"),
        (
            "ms f 1 C0 MA\r\ny\r\nget f\r\n".into(),
            "HD\r\nVALUE f 0 2\r\nxy\r\nEND\r\n",
        ),
        ("ms nope 1 C1 ME\r\nz\r\n".into(), "HD\r\n"),
        // ms checks its mode before its opaque; ma its opaque after the arithmetic.
        (
            format!("ms f 1 MX {opaque}\r\nz\r\n"),
            "CLIENT_ERROR invalid mode for ms M token\r\n",
        ),
        (
            format!("ma f {opaque}\r\n"),
            "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        // gat touches the keys before a bad one, then answers only the error.
        // (First in its burst: memcached drops the replies before it still unsent.)
        ("set g 0 0 1\r\nx\r\n".into(), "STORED\r\n"),
        (
            format!("gat -1 g {long}\r\nget g\r\n"),
            "CLIENT_ERROR bad command line format\r\nEND\r\n",
        ),
        // A set too large removes what it would have replaced; an add does not.
        (
            format!(
                "set g 0 0 1\r\nx\r\nadd g 0 0 {}\r\n{big}\r\nget g\r\n",
                big.len()
            ),
            "STORED\r\nSERVER_ERROR object too large for cache\r\nVALUE g 0 1\r\nx\r\nEND\r\n",
        ),
        (
            format!("set g 0 0 {} noreply\r\n{big}\r\nget g\r\n", big.len()),
            "END\r\n",
        ),
        // mg t before T reports the expiry before the touch.
        (
            "set t 0 0 1\r\nx\r\nmg t t T100\r\n".into(),
            "STORED\r\nHD t-1\r\n",
        ),
        // ma N: q does not silence the report of what it created.
        ("ma made N0 J5 q v\r\n".into(), "VA 1\r\n5\r\n"),
        // mg k shows the key as the item was stored, ma as the request sent it.
        (
            "set a 0 0 1\r\n7\r\nmg YQ== b k\r\n".into(),
            "STORED\r\nHD ka\r\n",
        ),
        ("ma YQ== b k\r\n".into(), "HD kYQ== b\r\n"),
        // The mark comes with an ms under an encoded key and goes with an append.
        (
            "ms YQ== 1 b\r\nx\r\nmg a k\r\n".into(),
            "HD\r\nHD kYQ== b\r\n",
        ),
        (
            "ms YQ== 1 b MA\r\ny\r\nmg a k\r\n".into(),
            "HD\r\nHD ka\r\n",
        ),
        // Commands of memcached's that the gateway does not run, with its texts.
        ("shutdown\r\n".into(), "ERROR: shutdown not enabled\r\n"),
        (
            "shutdown graceful\r\n".into(),
            "ERROR: shutdown not enabled\r\n",
        ),
        (
            "cache_memlimit 7\r\n".into(),
            "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
        ),
        (
            "cache_memlimit 99999999999\r\n".into(),
            "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n",
        ),
        (
            "cache_memlimit x\r\ncache_memlimit\r\n".into(),
            "ERROR\r\nERROR\r\n",
        ),
        ("cache_memlimit 50\r\n".into(), "OK\r\n"),
        ("cache_memlimit 100 noreply\r\n".into(), ""),
        (
            "lru_crawler bogus\r\nlru_crawler\r\n".into(),
            "ERROR\r\nERROR\r\n",
        ),
        (
            "lru_crawler sleep x\r\nlru_crawler tocrawl -1\r\n".into(),
            "CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n",
        ),
        (
            "lru_crawler sleep 1000001\r\n".into(),
            "CLIENT_ERROR sleep must be one second or less\r\n",
        ),
        ("lru_crawler crawl all noreply\r\n".into(), "ERROR\r\n"),
        ("watch bogus\r\nwatch noreply\r\n".into(), "ERROR\r\n"),
        ("stats bogus\r\n".into(), "ERROR\r\n"),
        ("stats reset\r\n".into(), "RESET\r\n"),
        (
            "stats detail\r\n".into(),
            "CLIENT_ERROR usage: stats detail on|off|dump\r\n",
        ),
        (
            "stats cachedump\r\n".into(),
            "CLIENT_ERROR bad command line\r\n",
        ),
        ("stats settings\r\nstats items\r\n".into(), "END\r\nEND\r\n"),
    ];
    for (request, want) in cases {
        let got = exchange(&mut c, request.as_bytes());
        // `stats` groups list what each server keeps; only their framing is compared.
        let got: String = got
            .split_inclusive("\r\n")
            .filter(|l| !l.starts_with("STAT "))
            .collect();
        assert_eq!(got, want, "{addr}: {:?}", &request[..request.len().min(80)]);
    }

    // A touch keeps the CAS unique.
    let gets = exchange(&mut c, b"set u 0 0 1\r\nx\r\ngets u\r\n");
    let cas: u64 = gets.split_whitespace().nth(5).unwrap().parse().unwrap();
    let after = exchange(
        &mut c,
        format!("touch u 100\r\ncas u 0 0 1 {cas}\r\ny\r\n").as_bytes(),
    );
    assert_eq!(after, "TOUCHED\r\nSTORED\r\n", "{addr}");
    // me reports memcached's item size and slab class.
    let me = exchange(&mut c, b"set m 5 0 5\r\nhello\r\nme m\r\n");
    assert!(
        me.starts_with("STORED\r\nME m exp=-1 la=0 cas=")
            && me.ends_with(" fetch=no cls=1 size=69\r\n"),
        "{addr}: {me}"
    );
}

/// `lru_crawler` as a memcached without its crawler answers it: the gateway has none
/// (the pool expires items itself).
#[test]
fn lru_crawler_as_memcached_without_one() {
    let check = |addr: &str| {
        let mut c = connect(addr);
        for (request, want) in [
            (
                "lru_crawler crawl all\r\n",
                "CLIENT_ERROR lru crawler disabled\r\n",
            ),
            (
                "lru_crawler metadump all\r\n",
                "CLIENT_ERROR lru crawler disabled\r\n",
            ),
            ("lru_crawler disable\r\n", "OK\r\n"),
            ("lru_crawler sleep 100\r\n", "OK\r\n"),
            ("lru_crawler tocrawl 10\r\n", "OK\r\n"),
        ] {
            // One request per write: memcached refuses a metadump behind others.
            assert_eq!(
                text(&ask(&mut c, request.as_bytes(), b"\r\n")),
                want,
                "{addr}: {request}"
            );
        }
    };
    let (_gw, ours) = start_gateway();
    check(&ours);
    let (_mc, theirs) = start_memcached_with(&["-o", "no_lru_crawler"]);
    check(&theirs);
}

/// `watch` turns the connection into a log stream that reads no more commands; the
/// gateway has no log events, so its stream stays empty.
#[test]
fn watch_ends_the_commands_of_a_connection() {
    both(|addr| {
        let mut c = connect(addr);
        assert_eq!(
            text(&ask(&mut c, b"watch fetchers\r\n", b"\r\n")),
            "OK\r\n",
            "{addr}"
        );
        c.write_all(b"mn\r\nversion\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 256];
        match c.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("{addr}: a watcher answered {:?}", text(&buf[..n])),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{addr}: {e}"
            ),
        }
    });
}

/// With `--data-dir`, CAS uniques go on from where the last run reserved them: a
/// client's unique from before a restart (here a crash) never matches a new item.
#[test]
fn cas_uniques_never_repeat_across_restarts() {
    let dir = std::env::temp_dir().join(format!("mmc-gw-cas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().unwrap().to_string();
    let run = || {
        let (p, line) = spawn_mmc(&[
            "memcached",
            "--bind",
            "127.0.0.1:0",
            "--dram-size",
            "64MiB",
            "--data-dir",
            &dir_arg,
            "--ssd-size",
            "64MiB",
        ]);
        let addr = line.trim().rsplit(' ').next().unwrap().to_string();
        let mut c = connect(&addr);
        let gets = exchange(&mut c, b"set k 0 0 1\r\nx\r\ngets k\r\n");
        let cas: u64 = gets.split_whitespace().nth(5).unwrap().parse().unwrap();
        (p, cas)
    };
    let (first, before) = run();
    drop(first); // killed: whatever it had reserved is lost with it
    let (_second, after) = run();
    assert!(
        after > before,
        "unique {after} after a restart, {before} before"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The gateway's items live under their own prefix (`--namespace`, "mc:"): on a pool
/// that also holds KV objects, flush_all removes the items and leaves every object,
/// even one under the same key as an item.
#[test]
fn flush_all_leaves_the_kv_objects_of_the_pool() {
    let (_meta, url) = start_meta(&[]);
    let (_gw, line) = spawn_mmc(&[
        "memcached",
        "--bind",
        "127.0.0.1:0",
        "--discovery",
        &url,
        "--dram-size",
        "64MiB",
    ]);
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    wait_for_services(&url, 1);
    let kv = pure_client(&url);
    let objects = ["model/layer0", "a", "mc"];
    for key in objects {
        kv.put(key, b"kv bytes").unwrap();
    }
    let mut c = connect(&addr);
    let set = exchange(&mut c, b"set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\nget a\r\n");
    assert_eq!(set, "STORED\r\nSTORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n");
    assert_eq!(
        exchange(&mut c, b"flush_all\r\nget a b\r\n"),
        "OK\r\nEND\r\n"
    );
    for key in objects {
        assert_eq!(kv.get(key).unwrap(), b"kv bytes", "{key}");
    }
    // The memory of a meta service's pool is not the gateway's to cap.
    assert_eq!(
        exchange(&mut c, b"cache_memlimit 50\r\n"),
        "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n"
    );
}

/// `cache_memlimit` caps the memory of the gateway's own pool as memcached caps its
/// own: refused below what is held, and once set, sets past it evict the least
/// recently used items.
#[test]
fn cache_memlimit_caps_the_gateways_own_pool() {
    let (_gw, addr) = start_gateway();
    let mut c = connect(&addr);
    // Bytes that do not compress (the gateway compresses values that do): xorshift.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let value: String = (0..512 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(33 + (x >> 58) as u8)
        })
        .collect();
    let set = |c: &mut TcpStream, i: usize| {
        let req = format!("set k{i} 0 0 {}\r\n{value}\r\n", value.len());
        assert_eq!(exchange(c, req.as_bytes()), "STORED\r\n", "set k{i}");
    };
    for i in 0..40 {
        set(&mut c, i);
    }
    let refused = "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n";
    assert_eq!(exchange(&mut c, b"cache_memlimit 8\r\n"), refused);
    assert_eq!(exchange(&mut c, b"flush_all\r\n"), "OK\r\n");
    eventually("the flushed items' memory is free", || {
        exchange(&mut c, b"cache_memlimit 8\r\n") == "OK\r\n"
    });
    for i in 100..140 {
        set(&mut c, i);
    }
    let got = |c: &mut TcpStream, i: usize| exchange(c, format!("get k{i}\r\n").as_bytes());
    assert_eq!(got(&mut c, 100), "END\r\n", "the oldest item was evicted");
    assert!(got(&mut c, 139).starts_with("VALUE k139 0 524288\r\n"));
}

/// Past its `-c` cap a server answers a new connection memcached's error line and
/// closes it; once a connection goes, a new one is served again.
#[test]
fn connections_past_the_cap_are_told_and_closed_as_memcached_does() {
    // memcached sets its file limit from -c: below about 50 it runs out of descriptors
    // before it reaches its own cap.
    let cap = 64;
    let (_gw, line) = spawn_mmc(&[
        "memcached",
        "--bind",
        "127.0.0.1:0",
        "--dram-size",
        "64MiB",
        "-c",
        &cap.to_string(),
    ]);
    let ours = line.trim().rsplit(' ').next().unwrap().to_string();
    let (_mc, theirs) = start_memcached_with(&["-c", &cap.to_string()]);
    for addr in [ours, theirs] {
        // memcached counts some descriptors of its own against the cap: open until
        // refused, well past it.
        let mut open = Vec::new();
        let refused = (0..cap * 4).find_map(|_| {
            let mut c = connect(&addr);
            c.write_all(b"version\r\n").unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while !got.ends_with(b"\r\n") {
                match c.read(&mut buf).unwrap() {
                    0 => break,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
            if got.starts_with(b"VERSION ") {
                open.push(c);
                return None;
            }
            // The error line, then the end of the stream (a reset, as the request
            // was never read).
            let closed = match c.read(&mut buf) {
                Ok(n) => n == 0,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            };
            Some((text(&got), closed))
        });
        let (reply, closed) = refused.unwrap_or_else(|| panic!("{addr}: never refused"));
        assert_eq!(
            (reply.as_str(), closed),
            ("ERROR Too many open connections\r\n", true),
            "{addr}"
        );
        assert!(open.len() <= cap, "{addr}: {} served", open.len());
        drop(open.pop());
        eventually("a freed slot serves again", || {
            let mut c = connect(&addr);
            ask(&mut c, b"version\r\n", b"\r\n").starts_with(b"VERSION ")
        });
    }
}

/// The replies to one read are written as they are made: a `get` of the same 1 MiB item
/// 300 times streams 300 MiB while the gateway's memory stays near one item.
#[test]
fn a_large_multiget_streams_instead_of_buffering() {
    let (gw, addr) = start_gateway();
    let hwm = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", gw.0.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .unwrap()
            .to_string();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            << 10
    };
    let mut c = connect(&addr);
    let value = vec![b'v'; (1 << 20) - 512];
    let set = [
        format!("set k 0 0 {}\r\n", value.len()).as_bytes(),
        &value,
        b"\r\n",
    ]
    .concat();
    assert_eq!(ask(&mut c, &set, b"\r\n"), b"STORED\r\n");
    // A first large reply, so what the process keeps anyway is counted before.
    let line = format!("get{}\r\n", " k".repeat(8));
    let each = format!("VALUE k 0 {}\r\n", value.len()).len() + value.len() + 2;
    let reply = ask(&mut c, line.as_bytes(), b"END\r\n");
    assert_eq!(reply.len(), 8 * each + 5);
    let before = hwm();
    let line = format!("get{}\r\n", " k".repeat(300));
    c.write_all(line.as_bytes()).unwrap();
    let (mut got, mut buf) = (0usize, vec![0u8; 1 << 20]);
    let want = 300 * each + 5;
    while got < want {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got} bytes");
        got += n;
    }
    let grew = hwm().saturating_sub(before);
    assert!(
        grew < 32 << 20,
        "the gateway's peak grew by {grew} bytes for a 300 MiB reply"
    );
}

/// A `set` replaces an item without a moment in which it is missing: one connection
/// sets the same key 1 000 times while two others loop on `get` and never miss.
#[test]
fn readers_never_miss_an_item_while_it_is_set_again_and_again() {
    both(|addr| {
        let mut w = connect(addr);
        assert_eq!(
            ask(&mut w, b"set hot 0 0 5\r\nv0000\r\n", b"\r\n"),
            b"STORED\r\n"
        );
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (addr, done) = (addr.to_string(), done.clone());
                std::thread::spawn(move || {
                    let mut r = connect(&addr);
                    let mut reads = 0u64;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let got = ask(&mut r, b"get hot\r\n", b"END\r\n");
                        assert!(
                            got.starts_with(b"VALUE hot 0 5\r\nv"),
                            "a miss: {}",
                            text(&got)
                        );
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for i in 1..=1000 {
            let set = format!("set hot 0 0 5\r\nv{:04}\r\n", i % 10_000);
            assert_eq!(ask(&mut w, set.as_bytes(), b"\r\n"), b"STORED\r\n");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            assert!(r.join().expect("no reader saw a miss") > 0);
        }
    });
}
