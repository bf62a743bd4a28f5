//! A pure client of a pool as a process of its own, for tests that put each client on
//! a host (network namespace) of its own: `ip netns exec NS chaos_client URL REPLICAS
//! MAX_VALUE`. Every byte moves over the TCP data plane. It prints `ready` once
//! initialised, then answers one line per request line on standard input:
//!
//! ```text
//! put KEY ID LEN [KEY ID LEN …]   -> one code per key (0 or the error code)
//! get KEY [KEY …]                 -> per key: vID (the put that wrote it), x (bytes no
//!                                    put wrote), or the error code
//! has KEY [KEY …]                 -> per key: 1, 0, or the error code
//! rm KEY [KEY …]                  -> one code per key
//! ```
//!
//! Values are [`memcache_tests::values::encode`]d, so a read names the put it saw.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use memcache_client::{BlockingObjectStore, ClientConfig, CopyDirection, ReplicateConfig};
use memcache_tests::values::{decode, encode};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: chaos_client DISCOVERY_URL REPLICAS MAX_VALUE_BYTES");
        std::process::exit(2);
    }
    // Standard output carries the answers; the log goes to standard error.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let replicas: u32 = args[2].parse().expect("REPLICAS is a number");
    let max_value: usize = args[3].parse().expect("MAX_VALUE_BYTES is a number");
    let mut config = ClientConfig::remote(&args[1], 0);
    config.transport = Some(memcache_client::TransportKind::Tcp);
    let store = BlockingObjectStore::new(config).expect("client runtime");
    // The group may still be electing its first leader.
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = store.init(0, false) {
        assert!(Instant::now() < deadline, "init: {e}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let replicate = ReplicateConfig::with_replicas(replicas);
    let mut bufs = Vec::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let mut words = line.split_whitespace();
        let op = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        let answer: Vec<String> = match op {
            "put" => put(&store, &rest, &replicate),
            "get" => get(&store, &rest, &mut bufs, max_value),
            "has" => store
                .batch_is_exist(&rest)
                .into_iter()
                .map(|r| match r {
                    Ok(true) => "1".to_string(),
                    Ok(false) => "0".to_string(),
                    Err(e) => e.code().to_string(),
                })
                .collect(),
            "rm" => store
                .batch_remove(&rest)
                .into_iter()
                .map(|r| r.map_or_else(|e| e.code(), |()| 0).to_string())
                .collect(),
            other => panic!("unknown request {other:?}"),
        };
        writeln!(out, "{}", answer.join(" "))
            .and_then(|()| out.flush())
            .expect("stdout");
    }
}

fn put(store: &BlockingObjectStore, words: &[&str], config: &ReplicateConfig) -> Vec<String> {
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for item in words.chunks(3) {
        let [key, id, len] = item else {
            panic!("put wants KEY ID LEN triples: {words:?}");
        };
        keys.push(*key);
        values.push(encode(id.parse().expect("ID"), len.parse().expect("LEN")));
    }
    let bufs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    store
        .batch_put_from(&keys, &bufs, CopyDirection::PUT_DEFAULT, config)
        .into_iter()
        .map(|r| r.map_or_else(|e| e.code(), |()| 0).to_string())
        .collect()
}

fn get(
    store: &BlockingObjectStore,
    keys: &[&str],
    bufs: &mut Vec<Vec<u8>>,
    max_value: usize,
) -> Vec<String> {
    if bufs.len() < keys.len() {
        bufs.resize_with(keys.len(), || vec![0; max_value]);
    }
    let mut slices: Vec<&mut [u8]> = bufs[..keys.len()]
        .iter_mut()
        .map(Vec::as_mut_slice)
        .collect();
    let results = store.batch_get_into(keys, &mut slices, CopyDirection::GET_DEFAULT);
    results
        .into_iter()
        .zip(slices)
        .map(|(r, buf)| match r {
            Ok(n) => match decode(&buf[..n as usize]) {
                Some(id) => format!("v{id}"),
                None => "x".to_string(),
            },
            Err(e) => e.code().to_string(),
        })
        .collect()
}
