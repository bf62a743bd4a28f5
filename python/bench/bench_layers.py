"""The `layers` workload through the Python API, against the Rust API in the same run.

64 keys of 122 layers of 72 KiB each (8784 KiB KV blocks), batches of 8, laid out back to
back in page-aligned arenas like an engine's KV cache; put with batch_put_from_layers and
get with batch_get_into_layers, median of 5 rounds, content verified. Then runs
`mmc bench layers --json` (the Rust API, same sizes) and prints one JSON object with both
throughputs and `put_ratio` / `get_ratio` = Python / Rust.

    python3 python/bench/bench_layers.py [--mmc target/release/mmc]
"""

import argparse
import json
import statistics
import subprocess
import time

import numpy as np

from memcache_hybrid import DistributedObjectStore

KEYS, LAYERS, LAYER_BYTES, BATCH, ROUNDS = 64, 122, 72 << 10, 8, 5
PAGE = 4096


def arena(total):
    """A page-aligned, zeroed-then-touched byte array of `total` bytes."""
    raw = np.zeros(total + PAGE, dtype=np.uint8)
    start = (-raw.ctypes.data) % PAGE
    return raw[start:start + total]


def layer_ptrs(buf, key):
    base = buf.ctypes.data + key * LAYERS * LAYER_BYTES
    return [base + i * LAYER_BYTES for i in range(LAYERS)]


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mmc", default="target/release/mmc")
    args = parser.parse_args()

    total = KEYS * LAYERS * LAYER_BYTES
    src = arena(total)
    src[:] = np.random.default_rng(7).integers(0, 255, total, dtype=np.uint8)
    dst = arena(total)
    sizes = [[LAYER_BYTES] * LAYERS for _ in range(BATCH)]

    store = DistributedObjectStore()
    assert store.init(0) == 0, "init"
    puts, gets = [], []
    try:
        for r in range(ROUNDS + 1):
            keys = [f"bench/{r}/{k}" for k in range(KEYS)]

            def put():
                for b in range(0, KEYS, BATCH):
                    ptrs = [layer_ptrs(src, k) for k in range(b, b + BATCH)]
                    codes = store.batch_put_from_layers(keys[b:b + BATCH], ptrs, sizes)
                    assert codes == [0] * BATCH, codes

            def get():
                for b in range(0, KEYS, BATCH):
                    ptrs = [layer_ptrs(dst, k) for k in range(b, b + BATCH)]
                    codes = store.batch_get_into_layers(keys[b:b + BATCH], ptrs, sizes)
                    assert codes == [0] * BATCH, codes

            tp, tg = timed(put), timed(get)
            assert np.array_equal(src, dst), "content"
            dst[:] = 0
            if r > 0:  # the first round warms up
                puts.append(total / tp / 1e9)
                gets.append(total / tg / 1e9)
            assert store.remove_batch(keys) == [0] * KEYS
    finally:
        store.close()

    rust = json.loads(
        subprocess.run(
            [args.mmc, "bench", "layers", "--json"], capture_output=True, text=True, check=True
        ).stdout.strip().splitlines()[-1]
    )
    put_gbps, get_gbps = statistics.median(puts), statistics.median(gets)
    print(json.dumps({
        "workload": "layers-python",
        "python_put_gbps": put_gbps,
        "python_get_gbps": get_gbps,
        "rust_put_gbps": rust["put_gbps"],
        "rust_get_gbps": rust["get_gbps"],
        "put_ratio": put_gbps / rust["put_gbps"],
        "get_ratio": get_gbps / rust["get_gbps"],
        "verified": True,
    }))


if __name__ == "__main__":
    main()
