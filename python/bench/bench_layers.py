"""The `layers` workload through the Python API, against the Rust API in the same run.

The same workload as `mmc bench layers`: 64 keys of 8784 KiB KV blocks, each 61 × (128 KiB
+ 16 KiB) layers, batches of 8, laid out back to back in page-aligned arenas like an
engine's KV cache. Python puts with batch_put_from_layers and gets with
batch_get_into_layers, building each batch's address lists inside the timed loop as an
engine does, and checks the content every round.

This machine's throughput drifts by tens of percent from one second to the next, so
Python rounds alternate with the rounds of `mmc bench layers --stepped` (the Rust API in a
process of its own, same sizes, started once: a process that exits and hands gigabytes
back to the host slows the next seconds down), and each pair gives one ratio. Prints
one JSON object:
median throughputs, the median of the pairs' `put_ratio` / `get_ratio` (Python / Rust),
and this process's memcpy of the same bytes as the physical reference.

    python3 python/bench/bench_layers.py [--mmc target/release/mmc] [--rounds 15]
"""

import argparse
import json
import mmap
import statistics
import subprocess
import time

import numpy as np

from memcache_hybrid import DistributedObjectStore

KEYS, BATCH = 64, 8
LAYOUT = [128 << 10, 16 << 10] * 61
OBJECT = sum(LAYOUT)
# Where each layer starts in a block, and each block of a batch in the arena: an
# engine's per-batch address lists are one vectorized sum, not a loop of Python adds.
OFFSETS = np.cumsum([0] + LAYOUT[:-1], dtype=np.uint64)
BLOCKS = np.arange(BATCH, dtype=np.uint64)[:, None] * np.uint64(OBJECT)


def arena(total):
    """`total` bytes of anonymous mapping, every page touched: the Rust benchmark's
    arena (numpy's own allocations would ask for huge pages, which that one does not)."""
    private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS  # as memmap2's map_anon, not shmem
    buf = np.frombuffer(mmap.mmap(-1, total, flags=private), dtype=np.uint8)
    buf.fill(0xA5)
    return buf


def same(a, b):
    """`a == b`, one object at a time: a whole-arena comparison would allocate and free
    a temporary as large as the arena, and a process handing that much memory back to
    the host slows the next seconds down."""
    return all(np.array_equal(a[i:i + OBJECT], b[i:i + OBJECT]) for i in range(0, len(a), OBJECT))


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def python_round(store, src, dst, r):
    """One verified put + get pass over all keys; returns (put s, get s)."""
    keys = [f"bench/py/{r}/{k}" for k in range(KEYS)]
    sizes = [LAYOUT] * BATCH
    src_base, dst_base = src.ctypes.data, dst.ctypes.data

    def addresses(base, first):
        return (np.uint64(base + first * OBJECT) + BLOCKS + OFFSETS).tolist()

    def batches(call, base):
        for b in range(0, KEYS, BATCH):
            codes = call(keys[b:b + BATCH], addresses(base, b), sizes)
            assert codes == [0] * BATCH, codes

    dst.fill(0x5A)
    tp = timed(lambda: batches(store.batch_put_from_layers, src_base))
    dst.fill(0x5A)  # a get that copies nothing cannot pass the check
    tg = timed(lambda: batches(store.batch_get_into_layers, dst_base))
    assert same(src, dst), "content read back differs from what was put"
    assert store.remove_batch(keys) == [0] * KEYS
    return tp, tg


class RustRounds:
    """`mmc bench layers --stepped`: one timed, verified Rust round per `next()`."""

    def __init__(self, mmc, rounds):
        self.proc = subprocess.Popen(
            [mmc, "bench", "layers", "--json", "--stepped", "--rounds", str(rounds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self._line() == {"ready": True}

    def _line(self):
        line = self.proc.stdout.readline()
        assert line, f"mmc bench ended early (exit {self.proc.wait()})"
        return json.loads(line)

    def next(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self):
        """Ends the rounds and checks the Rust run finished cleanly (content verified)."""
        self.proc.stdin.close()
        report = json.loads(self.proc.stdout.read().strip().splitlines()[-1])
        assert self.proc.wait() == 0 and report["verified"], "mmc bench failed"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mmc", default="target/release/mmc")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    total = KEYS * OBJECT
    src, dst = arena(total), arena(total)
    rng = np.random.default_rng(7)
    for i in range(0, total, OBJECT):  # object by object, for the reason `same` gives
        src[i:i + OBJECT] = rng.integers(0, 256, OBJECT, dtype=np.uint8)

    rust = RustRounds(args.mmc, args.rounds)
    store = DistributedObjectStore()
    assert store.init(0) == 0, "init"
    py_put, py_get, rs_put, rs_get, memcpy = [], [], [], [], []
    try:
        python_round(store, src, dst, "warm-up")
        for r in range(args.rounds):
            if r % 2:  # who goes first alternates, so neither always follows the other
                figures = rust.next()
            memcpy.append(total / timed(lambda: np.copyto(dst, src)) / 1e9)
            tp, tg = python_round(store, src, dst, r)
            py_put.append(total / tp / 1e9)
            py_get.append(total / tg / 1e9)
            if r % 2 == 0:
                figures = rust.next()
            rs_put.append(figures["put_gbps"])
            rs_get.append(figures["get_gbps"])
        rust.close()
    finally:
        store.close()
        rust.proc.kill()

    med = statistics.median
    print(json.dumps({
        "workload": "layers-python",
        "rounds": args.rounds,
        "python_put_gbps": med(py_put),
        "python_get_gbps": med(py_get),
        "rust_put_gbps": med(rs_put),
        "rust_get_gbps": med(rs_get),
        "memcpy_gbps": med(memcpy),
        "put_ratio": med(p / r for p, r in zip(py_put, rs_put)),
        "get_ratio": med(p / r for p, r in zip(py_get, rs_get)),
        "verified": True,
    }))


if __name__ == "__main__":
    main()
