//! `mmc demo`: the whole job in one process on the embedded default.

use std::time::Instant;

use clap::Args;

use memcache_client::{BlockingObjectStore, ClientConfig, CopyDirection, ReplicateConfig};

use crate::bench::{kv_block_layout, pattern_fill};

#[derive(Args)]
pub struct DemoArgs {
    /// DRAM the embedded local service contributes.
    #[arg(long, default_value = "1GiB", value_parser = crate::parse_size)]
    dram_size: u64,
    /// KV blocks to store (each 61 × 128 KiB + 61 × 16 KiB layers).
    #[arg(long, default_value_t = 16)]
    blocks: usize,
}

pub fn run(args: DemoArgs) -> Result<(), String> {
    let fail = |what: &str, e: memcache_client::Error| format!("{what}: {e} (code {})", e.code());
    let store = BlockingObjectStore::new(ClientConfig::with_dram(args.dram_size))
        .map_err(|e| fail("creating the store", e))?;
    store.init(0, true).map_err(|e| fail("init", e))?;
    let service = store
        .get_local_service_id()
        .map_err(|e| fail("local service", e))?;
    println!(
        "pool up: embedded meta service + local service {service} with {} of DRAM",
        bytesize::ByteSize(args.dram_size)
    );

    let layout = kv_block_layout();
    let block_bytes: usize = layout.iter().sum();
    let keys: Vec<String> = (0..args.blocks)
        .map(|i| format!("request-42/layer-block-{i}"))
        .collect();
    let sources: Vec<Vec<Vec<u8>>> = (0..args.blocks)
        .map(|k| {
            layout
                .iter()
                .enumerate()
                .map(|(l, &n)| pattern_fill(n, k, l))
                .collect()
        })
        .collect();

    let t = Instant::now();
    for (chunk_keys, chunk_src) in keys.chunks(8).zip(sources.chunks(8)) {
        let layers: Vec<Vec<&[u8]>> = chunk_src
            .iter()
            .map(|k| k.iter().map(Vec::as_slice).collect())
            .collect();
        let objects: Vec<&[&[u8]]> = layers.iter().map(Vec::as_slice).collect();
        for (key, r) in chunk_keys.iter().zip(store.batch_put_from_layers(
            chunk_keys,
            &objects,
            CopyDirection::H2G,
            &ReplicateConfig::default(),
        )) {
            r.map_err(|e| fail(&format!("put {key}"), e))?;
        }
    }
    let put_s = t.elapsed().as_secs_f64();
    let stored = (block_bytes * args.blocks) as f64;
    println!(
        "stored {} KV blocks of {} layers ({} each) in {:.1} ms, {:.2} GB/s",
        args.blocks,
        layout.len(),
        bytesize::ByteSize(block_bytes as u64),
        put_s * 1e3,
        stored / put_s / 1e9
    );
    let info = store
        .get_key_info(&keys[0])
        .map_err(|e| fail("key info", e))?;
    println!(
        "  {}: {} bytes on local service {} ({})",
        keys[0],
        info.size,
        info.locations[0].service,
        info.locations[0].medium.name()
    );

    let mut dests: Vec<Vec<Vec<u8>>> = layout_buffers(&layout, args.blocks);
    let t = Instant::now();
    for (chunk_keys, chunk_dst) in keys.chunks(8).zip(dests.chunks_mut(8)) {
        let mut layers: Vec<Vec<&mut [u8]>> = chunk_dst
            .iter_mut()
            .map(|k| k.iter_mut().map(Vec::as_mut_slice).collect())
            .collect();
        let mut objects: Vec<&mut [&mut [u8]]> = layers.iter_mut().map(Vec::as_mut_slice).collect();
        for (key, r) in chunk_keys.iter().zip(store.batch_get_into_layers(
            chunk_keys,
            &mut objects,
            CopyDirection::G2H,
        )) {
            r.map_err(|e| fail(&format!("get {key}"), e))?;
        }
    }
    let get_s = t.elapsed().as_secs_f64();
    if dests != sources {
        return Err("read-back content differs from what was stored".into());
    }
    println!(
        "read back {} KV blocks in {:.1} ms, {:.2} GB/s: every byte matches",
        args.blocks,
        get_s * 1e3,
        stored / get_s / 1e9
    );

    let evicted: Vec<&String> = keys.iter().step_by(2).collect();
    let removed = store.batch_remove(&evicted);
    let exist = store.batch_is_exist(&keys);
    let present = exist.iter().filter(|r| matches!(r, Ok(true))).count();
    println!(
        "removed {} blocks; {present} of {} keys still present",
        removed.iter().filter(|r| r.is_ok()).count(),
        keys.len()
    );
    match store.get("request-42/missing") {
        Err(e) => println!("get of a missing key: {e} (code {})", e.code()),
        Ok(_) => return Err("a missing key was found".into()),
    }
    store.tear_down().map_err(|e| fail("tear down", e))?;
    println!("pool down");
    Ok(())
}

/// Zero-filled, already-touched destination layers for `keys` blocks.
pub fn layout_buffers(layout: &[usize], keys: usize) -> Vec<Vec<Vec<u8>>> {
    (0..keys)
        .map(|_| layout.iter().map(|&n| vec![0xA5u8; n]).collect())
        .collect()
}
