//! `mmc bench device`: the `layers` workload between device memory and the pool (L2G
//! puts, G2L gets) through the embedded pool, against the device runtime's own copies of
//! the same layers between the same device buffers and a pinned host arena, in the same
//! run; then the same between device memory and HBM another process contributes (a
//! local service), against a device-to-device copy. Needs a build with a device runtime
//! (`--features cuda` or `ascend`) and a device; elsewhere it says why and fails.

use std::time::Instant;

use serde_json::{json, Value};

use memcache_client::{
    BlockingObjectStore, ClientConfig, DeviceBuf, Medium, ReplicateConfig, TransportKind,
};
use memcache_device::{CopyKind, DeviceCopy, DeviceRuntime};

use crate::bench::{kv_block_layout, median, pattern_fill};
use crate::children::{announced_url, spawn_ready};

/// A device arena of `keys` objects of `layout`, back to back.
struct DeviceArena<'a> {
    rt: &'a dyn DeviceRuntime,
    base: u64,
    object: usize,
    layout: &'a [usize],
}

impl<'a> DeviceArena<'a> {
    fn new(rt: &'a dyn DeviceRuntime, layout: &'a [usize], keys: usize) -> Result<Self, String> {
        let object: usize = layout.iter().sum();
        let base = rt
            .alloc(object * keys)
            .map_err(|e| format!("device memory: {e}"))?;
        Ok(DeviceArena {
            rt,
            base,
            object,
            layout,
        })
    }

    /// Key `k`'s layers.
    fn layers(&self, k: usize) -> Vec<DeviceBuf> {
        let mut at = self.base + (k * self.object) as u64;
        self.layout
            .iter()
            .map(|&len| {
                let b = DeviceBuf { ptr: at, len };
                at += len as u64;
                b
            })
            .collect()
    }

    /// The copies of every layer between this arena and the host arena at `host`.
    fn copies(&self, keys: usize, host: u64, to_device: bool) -> Vec<DeviceCopy> {
        (0..keys)
            .flat_map(|k| self.layers(k))
            .map(|b| {
                let h = host + (b.ptr - self.base);
                match to_device {
                    true => DeviceCopy {
                        dst: b.ptr,
                        src: h,
                        len: b.len,
                        kind: CopyKind::HostToDevice,
                    },
                    false => DeviceCopy {
                        dst: h,
                        src: b.ptr,
                        len: b.len,
                        kind: CopyKind::DeviceToHost,
                    },
                }
            })
            .collect()
    }
}

impl Drop for DeviceArena<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated in `new`, no copy in flight once the bench is done.
        let _ = unsafe { self.rt.free(self.base) };
    }
}

fn secs(f: impl FnOnce() -> Result<(), String>) -> Result<f64, String> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

pub fn run(keys: usize, rounds: usize, dram_size: u64) -> Result<Value, String> {
    let rt = memcache_device::runtime().map_err(|e| e.to_string())?;
    rt.set_device(0).map_err(|e| e.to_string())?;
    let layout = kv_block_layout();
    let src = DeviceArena::new(rt, &layout, keys)?;
    let dst = DeviceArena::new(rt, &layout, keys)?;
    let bytes = src.object * keys;
    // The host side of the reference copies: pinned, as the pool's segments are.
    let mut host: Vec<u8> = Vec::with_capacity(bytes);
    for k in 0..keys {
        for (l, &len) in layout.iter().enumerate() {
            host.extend(pattern_fill(len, k, l));
        }
    }
    let h = host.as_mut_ptr() as u64;
    // SAFETY: `host` lives until the end of this function, where it is unpinned. A
    // runtime that cannot pin still copies; the report says so.
    let pinned = unsafe { rt.pin(h, bytes) }.is_ok();
    let copy = |c: &[DeviceCopy]| {
        // SAFETY: every range lies in `host` or in a device arena.
        unsafe { rt.copy_batch(c) }.map_err(|e| e.to_string())
    };
    copy(&src.copies(keys, h, true))?;

    let config = ClientConfig::with_dram(dram_size.max(2 * bytes as u64));
    let store = BlockingObjectStore::new(config).map_err(|e| e.to_string())?;
    store.init(0, true).map_err(|e| e.to_string())?;
    let names: Vec<String> = (0..keys).map(|k| format!("bench/device/{k}")).collect();
    let (mut put, mut get, mut d2h, mut h2d) = (vec![], vec![], vec![], vec![]);
    for round in 0..=rounds {
        // The runtime's fastest way: layer by layer as the pool copies, or one copy of
        // the whole arena.
        let whole = |to_device: bool| DeviceCopy {
            dst: if to_device { src.base } else { h },
            src: if to_device { h } else { src.base },
            len: bytes,
            kind: if to_device {
                CopyKind::HostToDevice
            } else {
                CopyKind::DeviceToHost
            },
        };
        let down = src.copies(keys, h, false);
        let t_d2h = secs(|| copy(&down))?.min(secs(|| copy(&[whole(false)]))?);
        let up = src.copies(keys, h, true);
        let t_h2d = secs(|| copy(&up))?.min(secs(|| copy(&[whole(true)]))?);
        let t_put = secs(|| put_all(&store, &names, &src, &ReplicateConfig::default()))?;
        let t_get = secs(|| get_all(&store, &names, &dst))?;
        check_and_remove(&store, &names, &dst, &host).map_err(|e| format!("round {round}: {e}"))?;
        if round > 0 {
            // Round 0 warms up (first touches, pinning).
            put.push(t_put);
            get.push(t_get);
            d2h.push(t_d2h);
            h2d.push(t_h2d);
        }
    }
    let _ = store.tear_down();
    let hbm = hbm_pass(&src, &dst, keys, rounds, &host);
    if pinned {
        // SAFETY: pinned above; no copy in flight.
        let _ = unsafe { rt.unpin(h) };
    }
    let hbm = hbm?;
    let gbps = |s: f64| bytes as f64 / s / 1e9;
    let (put, get) = (gbps(median(&mut put)), gbps(median(&mut get)));
    let (d2h, h2d) = (gbps(median(&mut d2h)), gbps(median(&mut h2d)));
    let (hbm_put, hbm_get) = (gbps(hbm.put), gbps(hbm.get));
    let (near_put, near_get) = (gbps(hbm.near_put), gbps(hbm.near_get));
    let d2d = gbps(hbm.d2d);
    Ok(json!({
        "workload": "device",
        "runtime": rt.name(),
        "keys": keys,
        "bytes": bytes,
        "rounds": rounds,
        "l2g_put_gbps": put,
        "g2l_get_gbps": get,
        "runtime_d2h_gbps": d2h,
        "runtime_h2d_gbps": h2d,
        "reference_pinned": pinned,
        "l2g_ratio": put / d2h,
        "g2l_ratio": get / h2d,
        "hbm_put_gbps": hbm_put,
        "hbm_get_gbps": hbm_get,
        "runtime_d2d_gbps": d2d,
        "hbm_put_ratio": hbm_put / d2d,
        "hbm_get_ratio": hbm_get / d2d,
        "hbm_near_put_gbps": near_put,
        "hbm_near_get_gbps": near_get,
        "hbm_near_put_ratio": near_put / d2d,
        "hbm_near_get_ratio": near_get / d2d,
        "hbm_near_imported": hbm.near_imported,
        "verified": true,
    }))
}

/// Median seconds of the HBM pass's figures: over TCP, and through a same-host
/// client (HBM imported, where the runtime shares it).
struct HbmTimes {
    put: f64,
    get: f64,
    near_put: f64,
    near_get: f64,
    /// Whether the same-host client imported the HBM (else it went through TCP too).
    near_imported: bool,
    d2d: f64,
}

/// The same layers between this process's device memory and HBM that another process
/// (an `mmc local --hbm-size` beside an `mmc meta`) contributes: put and got by a
/// client that reaches it over TCP, as one on another host does, then by a same-host
/// client, which imports it by the runtime's handle where it can; against the
/// runtime's device-to-device copy of the same bytes between the two arenas. Every
/// byte is checked, and so is that the objects live in HBM.
fn hbm_pass(
    src: &DeviceArena,
    dst: &DeviceArena,
    keys: usize,
    rounds: usize,
    host: &[u8],
) -> Result<HbmTimes, String> {
    let bytes = src.object * keys;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let within = std::time::Duration::from_secs(30);
    let meta_args = ["meta", "--discovery", "tcp://127.0.0.1:0", "--http", ""];
    let (_meta, line) = spawn_ready(&exe, &meta_args, within)?;
    let url = announced_url(&line)?;
    let socket = std::env::temp_dir().join(format!("mmc-bench-hbm-{}.sock", std::process::id()));
    let hbm_size = format!("{}MiB", (2 * bytes).div_ceil(1 << 20) + 16);
    let local_args = [
        "local",
        "--discovery",
        &url,
        "--dram-size",
        "16MiB",
        "--hbm-size",
        &hbm_size,
        "--shm-socket",
        socket.to_str().ok_or("a temp dir in UTF-8")?,
        "--http",
        "",
    ];
    let (_local, _) = spawn_ready(&exe, &local_args, within)
        .map_err(|e| format!("a local service with HBM: {e}"))?;
    let client = |transport| {
        let config = ClientConfig {
            transport,
            ..ClientConfig::remote(&url, 0)
        };
        let store = BlockingObjectStore::new(config).map_err(|e| e.to_string())?;
        store.init(0, false).map_err(|e| e.to_string())?;
        Ok::<_, String>(store)
    };
    let far = client(Some(TransportKind::Tcp))?;
    let (put, get, mut d2d) = hbm_rounds(&far, src, dst, keys, rounds, host)?;
    let _ = far.tear_down();
    let near = client(None)?;
    let (near_put, near_get, more) = hbm_rounds(&near, src, dst, keys, rounds, host)?;
    let near_imported = near.inner().data_plane_held().is_ok_and(|h| h.imported > 0);
    let _ = near.tear_down();
    d2d.extend(more);
    Ok(HbmTimes {
        put,
        get,
        near_put,
        near_get,
        near_imported,
        d2d: median(&mut d2d),
    })
}

/// Rounds of puts into HBM and gets back through `store` (round 0 warms up): the
/// median seconds of each, and every round's device-to-device reference copy.
fn hbm_rounds(
    store: &BlockingObjectStore,
    src: &DeviceArena,
    dst: &DeviceArena,
    keys: usize,
    rounds: usize,
    host: &[u8],
) -> Result<(f64, f64, Vec<f64>), String> {
    let rt = src.rt;
    let bytes = src.object * keys;
    let in_hbm = ReplicateConfig {
        medium: Some(Medium::Hbm),
        ..Default::default()
    };
    let names: Vec<String> = (0..keys).map(|k| format!("bench/hbm/{k}")).collect();
    let copy = |c: &[DeviceCopy]| {
        // SAFETY: every range lies in `zeros` or in one of the two device arenas.
        unsafe { rt.copy_batch(c) }.map_err(|e| e.to_string())
    };
    let zeros = vec![0u8; bytes];
    // The runtime's fastest device-to-device copy: layer by layer, or whole.
    let layers: Vec<DeviceCopy> = (0..keys)
        .flat_map(|k| src.layers(k).into_iter().zip(dst.layers(k)))
        .map(|(s, d)| DeviceCopy {
            dst: d.ptr,
            src: s.ptr,
            len: s.len,
            kind: CopyKind::DeviceToDevice,
        })
        .collect();
    let whole = DeviceCopy {
        dst: dst.base,
        src: src.base,
        len: bytes,
        kind: CopyKind::DeviceToDevice,
    };
    let blank = dst.copies(keys, zeros.as_ptr() as u64, true);
    let (mut put, mut get, mut d2d) = (vec![], vec![], vec![]);
    for round in 0..=rounds {
        let t_put = secs(|| put_all(store, &names, src, &in_hbm))?;
        let info = store.get_key_info(&names[0]).map_err(|e| e.to_string())?;
        if info.locations.first().map(|l| l.medium) != Some(Medium::Hbm) {
            return Err(format!("{} is not in HBM: {info:?}", names[0]));
        }
        let t_d2d = secs(|| copy(&layers))?.min(secs(|| copy(&[whole]))?);
        // Blank again, so that only the get can bring the bytes back.
        copy(&blank)?;
        let t_get = secs(|| get_all(store, &names, dst))?;
        check_and_remove(store, &names, dst, host)
            .map_err(|e| format!("HBM round {round}: {e}"))?;
        if round > 0 {
            put.push(t_put);
            get.push(t_get);
            d2d.push(t_d2d);
        }
    }
    Ok((median(&mut put), median(&mut get), d2d))
}

/// Keys per batch of the device benches, as the layers workload.
const BATCH: usize = 8;

/// Puts each key's layers from `arena` (key `k` from its `k`th object), in batches.
fn put_all(
    store: &BlockingObjectStore,
    names: &[String],
    arena: &DeviceArena,
    config: &ReplicateConfig,
) -> Result<(), String> {
    in_batches(names, arena, "put", |ks, objects| {
        let r = store.batch_put_from_device(ks, objects, config);
        r.into_iter().find_map(Result::err)
    })
}

/// Gets each key into its object of `arena`, in batches.
fn get_all(
    store: &BlockingObjectStore,
    names: &[String],
    arena: &DeviceArena,
) -> Result<(), String> {
    in_batches(names, arena, "get", |ks, objects| {
        let r = store.batch_get_into_device(ks, objects);
        r.into_iter().find_map(Result::err)
    })
}

/// `call` on each batch of keys with their objects of `arena`; its first error, as
/// `what` failed.
fn in_batches(
    names: &[String],
    arena: &DeviceArena,
    what: &str,
    call: impl Fn(&[String], &[&[DeviceBuf]]) -> Option<memcache_client::Error>,
) -> Result<(), String> {
    for (b, ks) in names.chunks(BATCH).enumerate() {
        let layers: Vec<Vec<DeviceBuf>> =
            (0..ks.len()).map(|i| arena.layers(b * BATCH + i)).collect();
        let objects: Vec<&[DeviceBuf]> = layers.iter().map(Vec::as_slice).collect();
        if let Some(e) = call(ks, &objects) {
            return Err(format!("{what}: {e}"));
        }
    }
    Ok(())
}

/// Checks that `arena` holds `host` byte for byte (what came back into the device is
/// what went in), then removes the keys.
fn check_and_remove(
    store: &BlockingObjectStore,
    names: &[String],
    arena: &DeviceArena,
    host: &[u8],
) -> Result<(), String> {
    let mut check = vec![0u8; host.len()];
    let copies = arena.copies(names.len(), check.as_mut_ptr() as u64, false);
    // SAFETY: every range lies in `check` or in the device arena.
    unsafe { arena.rt.copy_batch(&copies) }.map_err(|e| e.to_string())?;
    if check != host {
        return Err("the device bytes read back differ".into());
    }
    let removed = store.batch_remove(names);
    if let Some(e) = removed.into_iter().find_map(Result::err) {
        return Err(format!("remove: {e}"));
    }
    Ok(())
}
