#!/usr/bin/env bash
# Ours beside the peers: the KV workloads of the peers' bench_kv.py (layers: 8784 KiB
# KV blocks of 122 layers in batches of 8; small: 4 KiB objects in batches of 64) on
# this checkout's Python package, on memcache-hybrid 1.3.0 and on Mooncake Store, in one
# run with the systems' rounds interleaved; then one table of the medians with our
# ratio to each peer.
#
#   scripts/bench-peers.sh [--setup] [--reinstall] [--rounds N] [--workload layers,small]
#
#   --setup      install the peers first (the peers' setup.sh) when they are missing
#   --reinstall  rebuild this checkout's package into the bench venv
#
# PEERS_SRC names the folder holding bench_kv.py and setup.sh (default ../shared/peers
# beside the checkout); PEERS_DIR where the peers are installed (default
# ~/.cache/memcache-peers). Ours runs from the venv target/bench-venv, made on first use
# with this checkout's package (release build) and numpy. Every figure is a median of
# the rounds; the table's ratios divide ours by the peer, so above 1 means ours is faster.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
peers_src=${PEERS_SRC:-$repo/../shared/peers}
export PEERS_DIR=${PEERS_DIR:-$HOME/.cache/memcache-peers}
setup=0 reinstall=0 rounds=5 workload=layers,small
while [ $# -gt 0 ]; do
    case $1 in
        --setup) setup=1 ;;
        --reinstall) reinstall=1 ;;
        --rounds) rounds=$2; shift ;;
        --workload) workload=$2; shift ;;
        *) echo "bench-peers: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ -f "$peers_src/bench_kv.py" ] || { echo "bench-peers: no bench_kv.py in $peers_src (set PEERS_SRC)" >&2; exit 2; }
if [ ! -d "$PEERS_DIR/venv-seed" ] || [ ! -d "$PEERS_DIR/venv-mooncake" ]; then
    [ $setup = 1 ] || { echo "bench-peers: the peers are not installed in $PEERS_DIR; run with --setup" >&2; exit 2; }
    bash "$peers_src/setup.sh" "$PEERS_DIR"
fi
venv=$repo/target/bench-venv
if [ ! -x "$venv/bin/python" ] || [ $reinstall = 1 ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q numpy "$repo/python"
fi
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
python3 "$peers_src/bench_kv.py" --impl ours,seed,mooncake --python "ours=$venv/bin/python" \
    --rounds "$rounds" --workload "$workload" --json-summary | tee /dev/stderr | tail -n 1 > "$summary"
python3 - "$summary" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
systems, ratios = s["systems"], s["ratios"]
names = [("ours", "ours"), ("seed", "1.3.0"), ("mooncake", "Mooncake")]
rows = []
workloads = s["workloads"]
for wl in workloads.split(",") if isinstance(workloads, str) else workloads:
    keys = sorted({k for v in systems.values() for k in v.get(wl, {})})
    for k in keys:
        vals = [systems.get(n, {}).get(wl, {}).get(k) for n, _ in names]
        rs = [ratios.get(f"ours/{n}", {}).get(wl, {}).get(k) for n in ("seed", "mooncake")]
        rows.append((f"{wl} {k}", vals, rs))
head = ["figure"] + [label for _, label in names] + ["ours/1.3.0", "ours/Mooncake"]
fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}")
table = [head] + [[f] + [fmt(v) for v in vals] + [fmt(r) for r in rs] for f, vals, rs in rows]
width = [max(len(r[i]) for r in table) for i in range(len(head))]
for r in table:
    print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, width))))
if s.get("errors"):
    print("errors:", json.dumps(s["errors"]))
EOF
