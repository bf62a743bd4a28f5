"""memcache_hybrid against a real pool: a meta service started with MetaService.main() in
its own process, clients that each contribute a local service, and `mmc local`
processes."""

import os

import numpy as np

from conftest import local_service, meta_service
from memcache_hybrid import DistributedObjectStore, ReplicateConfig


def joined(service_id=None):
    """A client that contributes a local service (with this id, if given)."""
    if service_id is None:
        os.environ.pop("MMC_CLIENT_LOCAL__SERVICE_ID", None)
    else:
        os.environ["MMC_CLIENT_LOCAL__SERVICE_ID"] = str(service_id)
    store = DistributedObjectStore()
    assert store.init(0) == 0
    os.environ.pop("MMC_CLIENT_LOCAL__SERVICE_ID", None)
    return store


def test_one_client_puts_another_gets(pool):
    writer, reader = joined(), joined()
    try:
        assert writer.get_local_service_id() != reader.get_local_service_id()
        src = np.arange(1 << 20, dtype=np.uint32)
        on_writer = ReplicateConfig()
        on_writer.preferredLocalServiceIDs = [writer.get_local_service_id()]
        assert writer.put_from("pool/a", src.ctypes.data, src.nbytes, replicateConfig=on_writer) == 0
        dst = np.zeros_like(src)
        assert reader.get_into("pool/a", dst.ctypes.data, dst.nbytes) == 0
        assert np.array_equal(src, dst)
        assert reader.get_key_info("pool/a").loc_list() == [writer.get_local_service_id()]
        assert reader.remove("pool/a") == 0
        assert writer.is_exist("pool/a") == 0
    finally:
        assert writer.close() == 0
        assert reader.close() == 0


def test_the_specs_usage_example_runs_verbatim(pool):
    holders = [joined(i) for i in (101, 102, 103)]
    try:
        store = DistributedObjectStore()
        store.init(device_id=0)
        replica_cfg = ReplicateConfig()
        replica_cfg.replicaNum = 3
        replica_cfg.preferredLocalServiceIDs = [101, 102, 103]
        buffer = bytearray(b"example_data")
        store.put("key1", buffer, replica_cfg)
        data = store.get("key1")
        store.close()
        assert data == b"example_data"
    finally:
        for h in holders:
            h.close()


def test_replicas_on_local_service_processes_survive_a_kill(monkeypatch):
    # A pool of its own: the killed service stays placed-on until the pool notices.
    with meta_service() as url:
        monkeypatch.setenv("MMC_CLIENT_DISCOVERY_URL", url)
        monkeypatch.setenv("MMC_CLIENT_LOCAL__DRAM_SIZE", str(64 << 20))
        replicas_survive_a_kill(url)


def replicas_survive_a_kill(pool):
    with local_service(pool, 201) as first, local_service(pool, 202):
        client = joined()
        try:
            cfg = ReplicateConfig()
            cfg.replicaNum = 2
            cfg.preferredLocalServiceIDs = [201, 202]
            value = np.random.default_rng(3).integers(0, 255, 1 << 16, dtype=np.uint8)
            assert client.put("procs/a", value, cfg) == 0
            assert sorted(client.get_key_info("procs/a").loc_list()) == [201, 202]
            first.kill()
            first.wait()
            assert client.get("procs/a") == value.tobytes()
        finally:
            assert client.close() == 0
