"""Fixtures: a real pool (a meta service started with MetaService.main() in its own
process, an `mmc local` process, and clients that contribute local services), and a
client of either the embedded default or that pool."""

import contextlib
import os
import signal
import socket
import subprocess
import sys

import pytest

from memcache_hybrid import DistributedObjectStore


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def meta_service():
    """A meta service from MetaService.main(), in a process of its own; its URL."""
    url = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, MMC_META_DISCOVERY_URL=url, MMC_META_HTTP_URL="")
    code = "from memcache_hybrid import MetaService; raise SystemExit(MetaService.main())"
    meta = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in meta.stdout.readline()
        yield url
    finally:
        meta.send_signal(signal.SIGTERM)
        assert meta.wait(timeout=20) == 0


def mmc():
    """The `mmc` binary `cargo test --workspace` built (the README's test command runs it
    first)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "target", "debug", "mmc")
    assert os.path.exists(path), f"{path}: run cargo build first"
    return path


@contextlib.contextmanager
def local_service(url, service_id, dram="64MiB"):
    """An `mmc local` process contributing `dram` to the pool at `url`."""
    args = [mmc(), "local", "--discovery", url, "--dram-size", dram, "--service-id", str(service_id)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert "local service" in proc.stdout.readline()
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def meta_url():
    """The session's pool: a meta service, and one `mmc local` process with 256 MiB."""
    with meta_service() as url, local_service(url, 100, "256MiB"):
        yield url


@pytest.fixture()
def pool(meta_url, monkeypatch):
    """Clients made during the test join the real pool, each with 64 MiB of DRAM."""
    monkeypatch.setenv("MMC_CLIENT_DISCOVERY_URL", meta_url)
    monkeypatch.setenv("MMC_CLIENT_LOCAL__DRAM_SIZE", str(64 << 20))
    return meta_url


@pytest.fixture(params=["embedded", "pool"])
def store(request, monkeypatch):
    """A client on the embedded default, or a pure client of the real pool (its bytes go
    to and from the `mmc local` process)."""
    if request.param == "pool":
        request.getfixturevalue("pool")
        monkeypatch.setenv("MMC_CLIENT_LOCAL__DRAM_SIZE", "0")
    else:
        monkeypatch.delenv("MMC_CLIENT_DISCOVERY_URL", raising=False)
    s = DistributedObjectStore()
    assert s.init(0) == 0
    yield s
    assert s.close() == 0
