"""The layers benchmark still runs end to end: one session of one round against the
debug `mmc`, both sides' content verified (the figures of a debug build mean nothing)."""

import json
import os
import subprocess
import sys

from conftest import mmc

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "bench_layers.py")


def test_the_layers_benchmark_runs_and_verifies():
    args = [sys.executable, BENCH, "--mmc", mmc(), "--sessions", "1", "--rounds", "1"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["verified"] and report["rounds"] == 1
    assert report["python_put_gbps"] > 0 and report["rust_get_gbps"] > 0
    assert report["put_ratio"] > 0 and report["get_ratio"] > 0
