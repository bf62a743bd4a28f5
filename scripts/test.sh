#!/usr/bin/env bash
# Installs what the tests need on a Debian machine (with Rust installed) and runs them
# all: formatting and clippy, the Rust tests, the C++ and C tests with the find_package
# consumer builds, then the Python package (built and installed with pip) and its
# tests. What is already installed is kept, so a second run only tests.
#
#   scripts/test.sh
#
# Installs, when missing: the Debian packages gcc, g++, git, cmake, libgtest-dev,
# prometheus (promtool checks our metrics text), memcached (the gateway's conformance
# tests run against it too), iproute2 and procps (the chaos test puts each process in a
# network namespace of its own and signals them), python3 and python3-pip (apt-get
# update runs once, through sudo when not root); the Python modules pymemcache, pytest and numpy; and, when
# ../shared/peers/setup.sh exists beside the checkout, the 1.3.0 oracle (Huawei
# MemCache 1.3.0 under a fake Ascend runtime) into $PEERS_DIR (default
# ~/.cache/memcache-peers), exported for the tests.
#
# The chaos test (tests/rust/tests/chaos) makes network namespaces and tmpfs mounts, so
# it needs root; where the tests cannot run as root, set MMC_CHAOS=skip.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[test.sh] %s\n' "$*"; }

# ------------------------------------------------------------------------- Debian packages
SUDO=
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi
need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
[ -f /usr/include/gtest/gtest.h ] || need_apt+=(libgtest-dev)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v memcached >/dev/null 2>&1 || need_apt+=(memcached)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
type -P kill >/dev/null 2>&1 || need_apt+=(procps)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
    say "apt-get install ${need_apt[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# ------------------------------------------------------------------------- Python modules
# A Debian python refuses plain pip installs into the system (PEP 668) unless told.
pip_flags=()
if python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    pip_flags=(--break-system-packages)
fi
pip_install() { python3 -m pip install -q "${pip_flags[@]}" "$@"; }
# tomli: the TOML reader of python/tests/test_compat_*.py where tomllib is missing (< 3.11).
modules=(pymemcache pytest numpy)
python3 -c "import tomllib" 2>/dev/null || modules+=(tomli)
for module in "${modules[@]}"; do
    if ! python3 -c "import $module" 2>/dev/null; then
        say "pip install $module"
        pip_install "$module"
    fi
done

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

# ------------------------------------------------------------------------- the 1.3.0 oracle
# With the peers' tools beside the checkout, the differential test against 1.3.0
# (python/tests/test_compat_seed.py) runs the live seed, and a seed that cannot run is a
# failure, not a fallback to the checked-in answers.
if [ -f ../shared/peers/setup.sh ]; then
    export PEERS_DIR="${PEERS_DIR:-$HOME/.cache/memcache-peers}"
    say "1.3.0 oracle in $PEERS_DIR (../shared/peers/setup.sh)"
    bash ../shared/peers/setup.sh "$PEERS_DIR"
    export MMC_REQUIRE_SEED=1
fi

# ------------------------------------------------------------------------- lints
# First: they are quick and say more than a test failure.
say "cargo fmt --check, clippy"
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
    # The Python extension is a workspace of its own (it links against Python).
    cargo fmt --manifest-path python/Cargo.toml -- --check
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets -- -D warnings
    # The device runtimes are features: lint every one of them.
    cargo clippy -p memcache-device --all-targets --features cuda,ascend,test-device -- -D warnings
fi

# ------------------------------------------------------------------------- tests
say "cargo test --workspace"
cargo test --workspace
# Device runtimes: each feature alone and together builds without a driver; the ACL
# runtime runs against the peers' fake libascendcl.so where it is set up; the CLI built
# with both starts and runs on this driverless machine.
say "device runtimes: cuda, ascend"
cargo check -p memcache-device --features cuda
cargo check -p memcache-device --features ascend
cargo test -p memcache-device --features cuda,ascend,test-device
cargo build -p memcache-cli --features cuda,ascend
target/debug/mmc bench small --keys 256 --rounds 1 >/dev/null
# The whole device path (L2G puts, G2L gets, verified) through the peers' fake ACL.
stub="${PEERS_DIR:-$HOME/.cache/memcache-peers}/fakeascend/lib64/libascendcl.so"
if [ -f "$stub" ]; then
    MMC_ASCEND_LIB="$stub" target/debug/mmc bench device --keys 8 --rounds 1
fi
say "C++ and C: cmake, ctest"
cmake -S . -B build
cmake --build build -j 2
ctest --test-dir build --output-on-failure
say "Python: pip install ./python, pytest"
pip_install ./python
python3 -m pytest -q python/tests
say "all tests passed"
