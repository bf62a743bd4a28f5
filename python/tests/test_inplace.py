"""The in-place calls of 1.3.0 and the other calls it added (put_batch, get_batch,
remove_all, key info with a flag, module constants), on the embedded default and on a
real pool whose bytes live in another process."""

import threading
import time

import numpy as np

import memcache_hybrid as mh


def test_module_constants():
    assert (mh.L2G, mh.G2L, mh.G2H, mh.H2G, mh.AUTO) == (0, 1, 2, 3, 9)


def test_write_in_pieces_from_threads_then_read_under_a_lease(store):
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, 1 << 20, dtype=np.uint8)
    keys = ["ip/a", "ip/b"]
    gvas = store.batch_alloc(keys, [data.nbytes, 4096])
    assert all(g > 0 for g in gvas), gvas
    assert store.batch_alloc(keys[:1], [data.nbytes]) == gvas[:1]  # same allocation
    assert store.is_exist("ip/a") == 0
    # Four threads each copy a quarter, as a layer-wise engine does.
    part = data.nbytes // 4

    def copy(i):
        start = data.ctypes.data + i * part
        assert store.batch_copy([gvas[0] + i * part], [start], [part], mh.H2G) == 0

    threads = [threading.Thread(target=copy, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    junk = np.ones(4096, dtype=np.uint8)
    assert store.batch_copy_layers([gvas[1]], [[junk.ctypes.data]], [[4096]], mh.AUTO) == 0
    assert store.batch_write_finish(keys, [0, 1]) == [0, 0]
    assert store.get("ip/a") == data.tobytes()
    assert store.is_exist("ip/b") == 0
    # A finished allocation's address writes nothing more.
    assert store.batch_copy([gvas[0]], [junk.ctypes.data], [16], mh.H2G) == -3102
    assert store.get("ip/a") == data.tobytes()

    # A reader: lease, read two layers out of the middle, release.
    assert store.batch_add_lease(["ip/a", "ip/missing"], 0) == [0, -3007]
    info = store.get_key_info("ip/a", 1)
    assert info.size() == data.nbytes and info.type_list() == [1]
    gva = info.gva_list()[0]
    out = np.zeros(8192, dtype=np.uint8)
    rows = [[out.ctypes.data, out.ctypes.data + 4096]]
    assert store.batch_copy_layers([gva + 100], rows, [[4096, 4096]], mh.G2H) == 0
    assert out.tobytes() == data[100:8292].tobytes()
    assert store.batch_remove_lease(["ip/a"]) == 0
    assert store.batch_copy([gva], [out.ctypes.data], [16], mh.G2H) == -3102
    assert store.batch_remove_lease(["ip/a"]) == -3000


def test_refusals_change_nothing(store):
    data = np.full(8192, 7, dtype=np.uint8)
    gva = store.batch_alloc(["ipr/k"], [8192], 1, 50)[0]
    assert gva > 0
    assert store.batch_copy([gva], [data.ctypes.data], [8192], mh.H2G) == 0
    # Device directions, the default included, need a device runtime.
    assert store.batch_copy([gva], [data.ctypes.data], [8192]) == -3000
    assert store.batch_copy([gva], [data.ctypes.data], [8192], mh.L2G) == -3000
    # Past the allocation's end; lists of different lengths; an address never given.
    assert store.batch_copy([gva + 4096], [data.ctypes.data], [8192], mh.H2G) == -3102
    assert store.batch_copy([gva, gva], [data.ctypes.data], [16], mh.H2G) == -3000
    assert store.batch_copy([12345], [data.ctypes.data], [16], mh.H2G) == -3102
    # After the allocation's lease: refused, and its commit rolls it back.
    time.sleep(0.1)
    assert store.batch_copy([gva], [data.ctypes.data], [8192], mh.H2G) == -3106
    assert store.batch_write_finish(["ipr/k"], [0]) == [-3106]
    assert store.is_exist("ipr/k") == 0
    assert store.batch_write_finish(["ipr/never"], [0]) == [-3000]
    assert store.batch_alloc(["ipr/h", "ipr/z"], [10, 0], 0) == [-3000, -3000]
    assert store.batch_alloc(["ipr/z"], [0]) == [-3000]


def test_answers_1_3_0_callers_rely_on(store):
    """A failed allocation's code passed on to batch_copy is a refused copy, not an
    exception (1.3.0 answers 0 there, which its batch_copy refuses); a finish of a key that
    is stored already (a second writer of the same allocation, or a put) is 0, as in 1.3.0."""
    data = np.full(4096, 3, dtype=np.uint8)
    assert store.put("ipc/stored", b"old") == 0
    gvas = store.batch_alloc(["ipc/stored", "ipc/new"], [4096, 4096])
    assert gvas[0] == -3006 and gvas[1] > 0
    assert store.batch_copy(gvas[:1], [data.ctypes.data], [4096], mh.H2G) == -3102
    assert store.batch_copy(np.array(gvas[:1], dtype=np.int64), [data.ctypes.data], [4096], mh.H2G) == -3102
    assert store.batch_copy_layers(gvas[:1], [[data.ctypes.data]], [[4096]], mh.H2G) == -3102
    assert store.batch_copy(gvas[1:], [data.ctypes.data], [4096], mh.H2G) == 0
    assert store.batch_alloc(["ipc/new"], [4096]) == gvas[1:]  # a second writer
    assert store.batch_write_finish(["ipc/stored", "ipc/new"], [0, 0]) == [0, 0]
    assert store.batch_write_finish(["ipc/new", "ipc/never"], [0, 0]) == [0, -3000]
    assert store.batch_write_finish(["ipc/new"], [1]) == [-3000]  # no rollback of a stored key
    assert store.get("ipc/stored") == b"old"
    assert store.get("ipc/new") == data.tobytes()


def test_put_batch_get_batch_remove_all(store):
    keys = ["pb/%d" % i for i in range(5)]
    values = [bytes([i]) * (100 + i) for i in range(5)]
    assert store.put_batch(keys, values) == 0
    assert store.put_batch(keys[:1], [b"other"]) == 0  # exists: the first value stays
    assert store.get_batch(keys + ["pb/missing"]) == values + [b""]
    assert store.put_batch(keys, values[:2]) == -3000
    assert store.remove_all() == 0
    assert store.batch_is_exist(keys) == [0] * 5


def test_calls_before_init():
    s = mh.DistributedObjectStore()
    assert s.batch_alloc(["k"], [10]) == [-3019]
    assert s.batch_copy([1], [1], [1], mh.H2G) == -3019
    assert s.batch_write_finish(["k"], [0]) == [-3019]
    assert s.batch_add_lease(["k"]) == [-3019]
    assert s.batch_remove_lease(["k"]) == -3019
    assert s.remove_all() == -3019
    assert s.put_batch(["k"], [b"v"]) == -3019
    assert s.get_batch(["k"]) == [b""]
    assert s.evict(["k"]) == -3019
