//! The operations plane against a real meta service: every admin HTTP endpoint after a
//! known sequence of operations, Prometheus text checked by `promtool`, and the
//! everyday commands (`mmc put/get/rm/ls/info/status`).

mod common;

use std::io::Write;
use std::process::Command;

use common::procs::*;
use memcache_client::CopyDirection;

/// GET `path` from `host:port`; returns (status, body).
/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[test]
fn admin_endpoints_report_exactly_what_was_done() {
    let (_meta, url, http) = start_meta_with_http("tcp://127.0.0.1:0", &["--http", "127.0.0.1:0"]);
    let (_local, rank) = start_local(&url, "32MiB");
    wait_for_services(&url, 1);
    let store = pure_client(&url);
    for (k, n) in [("a/1", 1000usize), ("a/2", 5000), ("b/1", 10)] {
        store.put(k, &vec![7u8; n]).unwrap();
    }
    assert_eq!(store.get("a/1").unwrap().len(), 1000);
    let mut buf = vec![0u8; 5000];
    store.get_into("a/2", &mut buf, CopyDirection::G2H).unwrap();
    assert_eq!(store.get("missing").unwrap_err().code(), -3007);
    store.remove("b/1").unwrap();

    assert_eq!(http_get(&http, "/health"), (200, "OK".to_string()));
    assert_eq!(
        http_get(&http, "/get_all_keys"),
        (200, "a/1\na/2\n".to_string())
    );

    let (code, body) = http_get(&http, "/query_key?key=a/2");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["key"], "a/2");
    assert_eq!(v["size"], 5000);
    assert_eq!(v["numBlobs"], 1);
    assert_eq!(v["valid"], true);
    assert_eq!(v["prot"], 0);
    assert_eq!(v["blobs"][0]["medium"], "DRAM");
    assert_eq!(v["blobs"][0]["rank"], rank);
    assert_eq!(http_get(&http, "/query_key?key=b/1").0, 404);
    assert_eq!(http_get(&http, "/query_key").0, 400);
    assert_eq!(http_get(&http, "/no/such/path").0, 404);

    let (code, body) = http_get(&http, "/get_all_segments");
    assert_eq!(code, 200);
    let segs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(segs.as_array().unwrap().len(), 1);
    assert_eq!(segs[0]["rank"], rank);
    assert_eq!(segs[0]["medium"], "DRAM");
    assert_eq!(segs[0]["capacity"], 32 << 20);
    assert_eq!(
        segs[0]["allocatedSize"],
        4096 + 8192,
        "a/1 and a/2 in whole pages"
    );
    assert!(segs[0]["bmAddr"].as_u64().unwrap() > 0);

    let (code, text) = http_get(&http, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(metric(&text, "memcache_alloc_operations_total"), 3.0);
    assert_eq!(metric(&text, "memcache_get_operations_total"), 3.0);
    assert_eq!(metric(&text, "memcache_get_hits_total"), 2.0);
    assert_eq!(metric(&text, "memcache_get_misses_total"), 1.0);
    assert_eq!(metric(&text, "memcache_remove_operations_total"), 1.0);
    assert_eq!(metric(&text, "memcache_evict_operations_total"), 0.0);
    assert_eq!(metric(&text, "memcache_stored_keys"), 2.0);
    assert_eq!(metric(&text, "memcache_local_services"), 1.0);
    assert!(
        text.contains("memcache_used_bytes{medium=\"DRAM\"} 12288"),
        "{text}"
    );
    assert!(text.contains("memcache_rpc_duration_seconds_count{method=\"alloc\"} 3"));

    // promtool accepts the exposition as it is.
    promtool_accepts(&text);

    let (_, summary) = http_get(&http, "/metrics/summary");
    assert!(summary.starts_with("=== MemCache Metrics Summary ===\n"));
    assert!(summary.contains("Allocation Operations: 3\n"));
    assert!(summary.contains("Remove Operations: 1\n"));
    assert!(summary.contains("Get Operations: 3\n"));

    let (_, table) = http_get(&http, "/metrics/ptracer");
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("TIME") && header.contains("TOTAL(us)"));
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{table}"))
            .split_whitespace()
            .skip(3)
            .take(4)
            .map(|n| n.parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(row("TP_MMC_META_PUT"), [3, 3, 0, 0]);
    assert_eq!(row("TP_MMC_META_GET"), [3, 3, 0, 0]);
    assert_eq!(row("TP_MMC_META_REMOVE"), [1, 1, 0, 0]);
}

/// `promtool check metrics` finds nothing wrong with `text`.
fn promtool_accepts(text: &str) {
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .output_with_stdin(text.as_bytes())
        .expect("promtool (Debian package prometheus) is installed");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// `Command::output` with bytes on standard input.
trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::io::Result<std::process::Output>;
}

impl OutputWithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::io::Result<std::process::Output> {
        let mut child = self
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(input)?;
        child.wait_with_output()
    }
}

#[test]
fn everyday_commands_work_and_fail_with_the_error_name() {
    let (_meta, url) = start_meta(&[]);
    let (_local, _) = start_local(&url, "32MiB");
    wait_for_services(&url, 1);
    let mmc = |args: &[&str], input: &[u8]| {
        let mut cmd = Command::new(mmc_bin());
        cmd.args(args).stderr(std::process::Stdio::piped());
        cmd.output_with_stdin(input).unwrap()
    };
    let ok = |args: &[&str], input: &[u8]| {
        let out = mmc(args, input);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    ok(
        &["put", "--discovery", &url, "cli/one", "-"],
        b"first value",
    );
    let file = std::env::temp_dir().join(format!("mmc-cli-{}", std::process::id()));
    std::fs::write(&file, b"second value").unwrap();
    let f = file.to_str().unwrap();
    ok(&["put", "--discovery", &url, "cli/two", f], b"");
    assert_eq!(
        ok(&["get", "--discovery", &url, "cli/one"], b""),
        b"first value"
    );
    let out_file = file.with_extension("out");
    ok(
        &[
            "get",
            "--discovery",
            &url,
            "cli/two",
            "-o",
            out_file.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(std::fs::read(&out_file).unwrap(), b"second value");
    assert_eq!(ok(&["ls", "--discovery", &url], b""), b"cli/one\ncli/two\n");
    assert_eq!(ok(&["ls", "--discovery", &url, "cli/t"], b""), b"cli/two\n");
    let info = String::from_utf8(ok(&["info", "--discovery", &url, "cli/two"], b"")).unwrap();
    assert!(info.contains("size:     12 bytes"), "{info}");
    let status = String::from_utf8(ok(&["status", "--discovery", &url], b"")).unwrap();
    assert!(status.contains("2 keys, 1 live local services"), "{status}");
    assert!(
        status.contains("DRAM") && status.contains("TP_MMC_META_PUT"),
        "{status}"
    );
    ok(&["rm", "--discovery", &url, "cli/one", "cli/two"], b"");

    let missing = mmc(&["get", "--discovery", &url, "cli/one"], b"");
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("ObjectNotFound (-3007)"), "{err}");
    let rm = mmc(&["rm", "--discovery", &url, "cli/one"], b"");
    assert!(!rm.status.success());
    let dup = mmc(&["put", "--discovery", &url, "cli/x", "-"], b"v");
    assert!(dup.status.success());
    let dup = mmc(&["put", "--discovery", &url, "cli/x", "-"], b"v");
    assert!(String::from_utf8_lossy(&dup.stderr).contains("DuplicatedObject (-3006)"));
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_file(&out_file).unwrap();
}

#[test]
fn local_services_report_their_own_health_and_traffic() {
    let (_meta, url) = start_meta(&[]);
    let (_local, lines) =
        spawn_mmc_lines(&["local", "--discovery", &url, "--dram-size", "32MiB"], 2);
    let http = http_of(&lines[1]);
    wait_for_services(&url, 1);
    assert_eq!(http_get(&http, "/health"), (200, "OK".to_string()));

    // Same-host client: one descriptor handed out, then memcpy.
    let shm = pure_client(&url);
    shm.put("l/shm", &[1u8; 3000]).unwrap();
    // Forced TCP: the bytes cross the local service's data port.
    let mut config = memcache_client::ClientConfig::remote(&url, 0);
    config.transport = Some(memcache_client::TransportKind::Tcp);
    let tcp = memcache_client::BlockingObjectStore::new(config).unwrap();
    tcp.init(0, false).unwrap();
    tcp.put("l/tcp", &[2u8; 5000]).unwrap();
    assert_eq!(tcp.get("l/tcp").unwrap(), vec![2u8; 5000]);

    let (code, text) = http_get(&http, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(metric(&text, "memcache_local_shm_descriptors_total"), 1.0);
    assert_eq!(metric(&text, "memcache_local_registrations_total"), 1.0);
    assert!(
        text.contains("memcache_local_tcp_bytes_total{direction=\"in\"} 5000"),
        "{text}"
    );
    assert!(
        text.contains("memcache_local_tcp_bytes_total{direction=\"out\"} 5000"),
        "{text}"
    );
    assert!(text.contains("memcache_local_tcp_requests_total{op=\"write\",result=\"ok\"} 1"));
    assert!(text.contains("memcache_local_segment_bytes{medium=\"DRAM\",segment="));
    promtool_accepts(&text);
}

/// `mmc bench --arena-dir`: the arenas are the files `src` and `dst` there, so another
/// process can map the very pages the benchmark copies between; after a verified round,
/// `dst` holds what `src` does.
#[test]
fn a_benchmark_maps_its_arenas_from_files_when_asked() {
    let dir = std::env::temp_dir().join(format!("mmc-arenas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(mmc_bin())
        .args(["bench", "small", "--json", "--keys", "64", "--rounds", "1"])
        .args(["--dram-size", "64MiB", "--arena-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let (src, dst) = (
        std::fs::read(dir.join("src")),
        std::fs::read(dir.join("dst")),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (src, dst) = (src.unwrap(), dst.unwrap());
    assert_eq!(src.len(), 64 * 4096);
    assert!(src == dst && src.iter().any(|&b| b != 0));
}

/// `mmc bench --stepped`: a round per input line, each reported as it ends, and end of
/// input ends the rounds early with the usual verified report of the rounds that ran.
#[test]
fn a_stepped_benchmark_runs_one_round_per_input_line() {
    let out = Command::new(mmc_bin())
        .args(["bench", "small", "--json", "--stepped", "--keys", "256"])
        .args(["--rounds", "5", "--dram-size", "64MiB"])
        .stderr(std::process::Stdio::piped())
        .output_with_stdin(b"\n\n")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], serde_json::json!({ "ready": true }));
    for (i, round) in lines[1..3].iter().enumerate() {
        assert_eq!(round["round"], i);
        assert!(round["put_gbps"].as_f64().unwrap() > 0.0, "{round}");
    }
    assert_eq!(lines[3]["rounds"], 2);
    assert_eq!(lines[3]["verified"], true);
}
