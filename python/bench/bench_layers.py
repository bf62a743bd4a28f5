"""The `layers` workload through the Python API, against the Rust API in the same run.

The same workload as `mmc bench layers`: 64 keys of 8784 KiB KV blocks, each 61 × (128 KiB
+ 16 KiB) layers, batches of 8, laid out back to back in page-aligned arenas like an
engine's KV cache. Python puts with batch_put_from_layers and gets with
batch_get_into_layers and checks the content every round. The addresses are built inside
the timed loop as an engine builds them from its block table: one numpy expression for the
pass, a row slice per batch, handed over as a uint64 array (read in one copy; lists of
Python ints cost about 2 % more, most of it building and reading the 976 ints of each
batch while the copy just done has flushed the caches).

Only the front end differs between the two sides:
- Both are clients of one pool this script starts (`mmc meta`, and `mmc local` holding
  1 GiB), and both copy between the same arenas: files in /dev/shm that
  `mmc bench layers --arena-dir` maps too. Two identical Rust processes, each with its own
  pool and arenas, measured 0.75 to 0.86 of each other on this VM.
- Both run in processes of their own that speak one protocol (`mmc bench layers
  --stepped`, and this script with `--worker`): after a warm-up they print
  `{"ready":true}`, then run one timed, verified round (memcpy, put, scramble, get,
  verify, remove) per line read and print its figures. Rounds alternate, who goes first
  alternating, and each pair gives one ratio.
- Even sharing every byte, one pair of processes can sit a few percent off another (page
  tables, scheduling), so the rounds are spread over `--sessions` fresh pairs of
  processes, and the medians are taken over all pairs.

Prints one JSON object: median throughputs, the median of the pairs' `put_ratio` /
`get_ratio` (Python / Rust), each session's ratios, and the memcpy of the same bytes
measured in the rounds (the physical reference).

    python3 python/bench/bench_layers.py [--mmc target/release/mmc] [--sessions 3] [--rounds 11]
"""

import argparse
import contextlib
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

KEYS, BATCH = 64, 8
LAYOUT = [128 << 10, 16 << 10] * 61
OBJECT = sum(LAYOUT)
TOTAL = KEYS * OBJECT
POOL = "1GiB"
# Where each layer of each block starts, from the arena's base: key k's row of addresses
# is base + TABLE[k], and every key has the same layer sizes.
TABLE = (np.arange(KEYS, dtype=np.uint64)[:, None] * np.uint64(OBJECT)
         + np.cumsum([0] + LAYOUT[:-1], dtype=np.uint64))
SIZES = np.array([LAYOUT] * BATCH, dtype=np.uint64)


def shared_arena(path):
    """The arena at `path` (created by `mmc bench --arena-dir`), mapped shared."""
    with open(path, "r+b") as f:
        return np.frombuffer(mmap.mmap(f.fileno(), TOTAL), dtype=np.uint8)


def same(a, b):
    """`a == b`, one object at a time: a whole-arena comparison would allocate and free
    a temporary as large as the arena, and a process handing that much memory back to
    the host slows the next seconds down."""
    return all(np.array_equal(a[i:i + OBJECT], b[i:i + OBJECT]) for i in range(0, len(a), OBJECT))


def gbps(fn):
    t = time.perf_counter()
    fn()
    return TOTAL / (time.perf_counter() - t) / 1e9


def python_round(store, src, dst, tag):
    """One round as the Rust side runs it: memcpy, put, scramble the destination (a get
    that copies nothing cannot pass the check), get, verify, remove."""
    keys = [f"bench/py/{tag}/{k}" for k in range(KEYS)]

    def batches(call, arena):
        addresses = np.uint64(arena.ctypes.data) + TABLE
        for b in range(0, KEYS, BATCH):
            codes = call(keys[b:b + BATCH], addresses[b:b + BATCH], SIZES)
            assert codes == [0] * BATCH, codes

    memcpy = gbps(lambda: np.copyto(dst, src))
    put = gbps(lambda: batches(store.batch_put_from_layers, src))
    dst.fill(0x5A)
    get = gbps(lambda: batches(store.batch_get_into_layers, dst))
    assert same(src, dst), "content read back differs from what was put"
    assert store.remove_batch(keys) == [0] * KEYS
    return {"put_gbps": put, "get_gbps": get, "memcpy_gbps": memcpy}


def worker(url, arenas):
    """The Python side: `mmc bench layers --stepped`'s protocol on standard I/O."""
    from memcache_hybrid import DistributedObjectStore

    src = shared_arena(os.path.join(arenas, "src"))
    dst = shared_arena(os.path.join(arenas, "dst"))
    os.environ.update(MMC_CLIENT_DISCOVERY_URL=url, MMC_CLIENT_LOCAL__DRAM_SIZE="0")
    store = DistributedObjectStore()
    assert store.init(0) == 0, "init"
    try:
        python_round(store, src, dst, "warm-up")
        print('{"ready":true}', flush=True)
        for r, _ in enumerate(sys.stdin):
            print(json.dumps(python_round(store, src, dst, r)), flush=True)
    finally:
        store.close()


def started(args, ready, stdin=None):
    """`args` running, once its first line of output contains `ready`; (process, line).
    A process that says anything else is killed."""
    proc = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if ready not in line:
        proc.kill()
        raise AssertionError(f"{args[:3]}: {line!r} (exit {proc.wait()})")
    return proc, line


class Side:
    """A process speaking the stepped protocol: one round per `next()`."""

    def __init__(self, args):
        self.proc, _ = started(args, '"ready":true', stdin=subprocess.PIPE)

    def next(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"a benchmark process ended early (exit {self.proc.wait()})"
        return json.loads(line)

    def finish(self):
        """Ends the rounds; the process must exit cleanly (every round was verified)."""
        self.proc.stdin.close()
        self.proc.stdout.read()
        assert self.proc.wait() == 0, "a benchmark process failed"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def pool(mmc):
    """A meta service and a local service holding POOL bytes; the meta service's URL."""
    procs = []
    try:
        def start(args, ready):
            proc, line = started(args, ready)
            procs.append(proc)
            return line

        url = start([mmc, "meta", "--discovery", "tcp://127.0.0.1:0", "--http", ""],
                    "listening on").split()[-1]
        start([mmc, "local", "--discovery", url, "--dram-size", POOL, "--http", ""],
              "local service")
        yield url
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()


def session(mmc, url, arenas, rounds):
    """A fresh Rust and Python process pair; their alternating rounds' figures."""
    rust = python = None
    try:
        rust = Side([mmc, "bench", "layers", "--json", "--stepped", "--rounds", str(rounds),
                     "--discovery", url, "--arena-dir", arenas])
        python = Side([sys.executable, os.path.abspath(__file__), "--worker", url, arenas])
        pairs = []
        for r in range(rounds):
            first, second = (python, rust) if r % 2 == 0 else (rust, python)
            a, b = first.next(), second.next()
            pairs.append((a, b) if first is python else (b, a))
        rust.finish()
        python.finish()
        return pairs
    finally:
        for side in (rust, python):
            if side:
                side.kill()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mmc", default="target/release/mmc")
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=11, help="rounds per session")
    parser.add_argument("--worker", nargs=2, metavar=("URL", "ARENAS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)

    pairs, per_session = [], []
    with pool(args.mmc) as url, tempfile.TemporaryDirectory(dir="/dev/shm") as arenas:
        for _ in range(args.sessions):
            got = session(args.mmc, url, arenas, args.rounds)
            pairs += got
            per_session.append([round(statistics.median(p[k] / r[k] for p, r in got), 3)
                                for k in ("put_gbps", "get_gbps")])

    med = statistics.median

    def median_of(side, key):
        return med(pair[side][key] for pair in pairs)

    print(json.dumps({
        "workload": "layers-python",
        "sessions": args.sessions,
        "rounds": len(pairs),
        "python_put_gbps": median_of(0, "put_gbps"),
        "python_get_gbps": median_of(0, "get_gbps"),
        "rust_put_gbps": median_of(1, "put_gbps"),
        "rust_get_gbps": median_of(1, "get_gbps"),
        # The fastest one-thread copy of the pair's round: numpy's, or the Rust side's
        # (the fastest of glibc's and our copy kernels).
        "memcpy_gbps": med(max(p["memcpy_gbps"], r["memcpy_gbps"]) for p, r in pairs),
        "python_put_vs_memcpy": med(p["put_gbps"] / max(p["memcpy_gbps"], r["memcpy_gbps"])
                                    for p, r in pairs),
        "python_get_vs_memcpy": med(p["get_gbps"] / max(p["memcpy_gbps"], r["memcpy_gbps"])
                                    for p, r in pairs),
        "put_ratio": med(p["put_gbps"] / r["put_gbps"] for p, r in pairs),
        "get_ratio": med(p["get_gbps"] / r["get_gbps"] for p, r in pairs),
        "session_put_get_ratios": per_session,
        "verified": True,
    }))


if __name__ == "__main__":
    main()
