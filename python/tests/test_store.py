"""memcache_hybrid on the embedded default and on a real pool: every data call, numpy buffers through the
pointer-based calls with content checks, and error codes for bad input."""

import threading

import numpy as np
import pytest

from memcache_hybrid import DistributedObjectStore, MmcCopyDirect, ReplicateConfig


def test_buffers_and_bytes(store):
    assert store.put("b/bytes", b"hello") == 0
    assert store.put("b/bytearray", bytearray(b"xy")) == 0
    assert store.put("b/numpy", np.arange(10, dtype=np.uint8)) == 0
    assert store.get("b/bytes") == b"hello"
    assert store.get("b/bytearray") == b"xy"
    assert store.get("b/numpy") == bytes(range(10))
    assert store.get("b/missing") == b""
    big = np.random.default_rng(2).integers(0, 256, 3 << 20, dtype=np.uint8)
    assert store.put("b/big", big) == 0
    assert store.get("b/big") == big.tobytes()  # read straight into the bytes object
    assert store.put("b/strided", memoryview(b"abcdef")[::2]) == -3000
    # As in 1.3.0: a put of an existing key answers 0 and the first value stays.
    assert store.put("b/bytes", b"again") == 0
    assert store.get("b/bytes") == b"hello"


def test_pointer_calls_with_numpy(store):
    src = np.random.default_rng(1).integers(0, 255, 1 << 20, dtype=np.uint8)
    dst = np.zeros_like(src)
    assert store.put_from("p/one", src.ctypes.data, src.nbytes) == 0
    # A direction that moves device memory needs a device transport this build lacks.
    assert store.put_from("p/dev", src.ctypes.data, 16, MmcCopyDirect.SMEMB_COPY_L2G) == -3000
    assert store.put_from("p/int", src.ctypes.data, 16, 3) == 0
    assert store.get_into("p/one", dst.ctypes.data, dst.nbytes) == 0
    assert np.array_equal(src, dst)

    layers = [np.full(4096, i, dtype=np.uint8) for i in range(8)]
    ptrs = [a.ctypes.data for a in layers]
    sizes = [a.nbytes for a in layers]
    assert store.put_from_layers("p/layers", ptrs, sizes) == 0
    out = [np.zeros(4096, dtype=np.uint8) for _ in range(8)]
    assert store.get_into_layers("p/layers", [a.ctypes.data for a in out], sizes) == 0
    assert all(np.array_equal(a, b) for a, b in zip(layers, out))

    keys = [f"p/batch{i}" for i in range(4)]
    assert store.batch_put_from(keys, ptrs[:4], sizes[:4]) == [0] * 4
    got = [np.zeros(4096, dtype=np.uint8) for _ in range(4)]
    direct = MmcCopyDirect.SMEMB_COPY_G2H
    assert store.batch_get_into(keys, [a.ctypes.data for a in got], sizes[:4], direct) == [0] * 4
    assert all(np.array_equal(a, b) for a, b in zip(layers, got))

    lkeys = ["p/bl0", "p/bl1"]
    assert store.batch_put_from_layers(lkeys, [ptrs[:2], ptrs[2:4]], [sizes[:2], sizes[2:4]]) == [0, 0]
    back = [[np.zeros(4096, dtype=np.uint8) for _ in range(2)] for _ in range(2)]
    bptrs = [[a.ctypes.data for a in row] for row in back]
    assert store.batch_get_into_layers(lkeys, bptrs, [sizes[:2], sizes[2:4]]) == [0, 0]
    assert np.array_equal(back[1][0], layers[2])


def test_address_arrays(store):
    """Addresses and sizes as numpy arrays of 64-bit integers, as an engine computes them."""
    src = np.random.default_rng(3).integers(0, 256, (4, 3, 1024), dtype=np.uint8)
    dst = np.zeros_like(src)
    keys = [f"arr/{i}" for i in range(4)]
    layer = np.arange(3, dtype=np.uint64) * np.uint64(1024)
    block = np.arange(4, dtype=np.uint64)[:, None] * np.uint64(3 * 1024)
    sizes = np.full((4, 3), 1024, dtype=np.uint64)
    put_ptrs = np.uint64(src.ctypes.data) + block + layer
    assert store.batch_put_from_layers(keys, put_ptrs, sizes) == [0] * 4
    ptrs = (np.uint64(dst.ctypes.data) + block + layer).astype(np.int64)
    assert store.batch_get_into_layers(keys, ptrs, sizes.astype(np.int64)) == [0] * 4
    assert np.array_equal(src, dst)
    # Arrays that are not C-contiguous are read in row order all the same.
    dst[:] = 0
    assert store.batch_get_into_layers(keys, np.asfortranarray(ptrs), sizes) == [0] * 4
    assert np.array_equal(src, dst)
    dst[1] = 0
    assert store.get_into_layers(keys[1], ptrs[1], sizes[:, 0][:3]) == 0  # a strided column
    assert np.array_equal(src[1], dst[1])
    flat = [f"arr/flat{i}" for i in range(4)]
    assert store.batch_put_from(flat, put_ptrs[:, 0], sizes[:, 0] * np.uint64(3)) == [0] * 4
    assert store.get("arr/flat2") == src[2].tobytes()
    assert store.put_from_layers("arr/one", put_ptrs[3], sizes[3]) == 0
    assert store.get("arr/one") == src[3].tobytes()

    # Bad arrays are refused as bad lists are, and write nothing.
    dst[:] = 0
    assert store.batch_get_into_layers(keys[:2], ptrs[:3], sizes[:3]) == [-3000, -3000]
    with pytest.raises(OverflowError):
        store.get_into_layers(keys[0], -ptrs[0], sizes[0])
    with pytest.raises(ValueError):
        store.batch_get_into_layers(keys, ptrs.reshape(4, 3, 1), sizes)
    with pytest.raises(TypeError):
        store.batch_get_into_layers(keys, ptrs.astype(np.float64), sizes)
    assert not dst.any()


def test_queries_and_removal(store, request):
    cfg = ReplicateConfig()
    assert cfg.replicaNum == 1 and cfg.preferredLocalServiceIDs == []  # the spec's defaults
    cfg.replicaNum = 1
    assert store.put("q/a", b"abc", cfg) == 0
    assert store.is_exist("q/a") == 1
    assert store.is_exist("q/none") == 0
    assert store.batch_is_exist(["q/a", "q/none"]) == [1, 0]
    info = store.get_key_info("q/a")
    assert info.size() == 3
    assert info.type_list() == [1]  # DRAM, in 1.3.0's media numbers
    assert "size=3" in str(info)
    both = store.batch_get_key_info(["q/a", "q/none"])
    assert [i.size() for i in both] == [3, 0]
    assert both[0].loc_list() == info.loc_list() and both[1].loc_list() == []
    if request.node.callspec.params["store"] == "pool":
        # A pure client: the bytes live in the `mmc local` process (service 100).
        assert store.get_local_service_id() == -3018
        assert info.loc_list() == [100]
    else:
        assert info.loc_list() == [store.get_local_service_id()]
    assert store.remove("q/a") == 0
    assert store.remove("q/a") == -3007
    assert store.remove_batch(["q/x", "q/y"]) == [-3007, -3007]


def test_bad_input_is_refused(store):
    buf = np.zeros(16, dtype=np.uint8)
    assert store.put("k" * 256, b"x") == -3000
    assert store.put_from("bad/null", 0, 16) == -3000
    assert store.put_from("bad/zero", buf.ctypes.data, 0) == -3000
    assert store.batch_put_from(["a", "b"], [buf.ctypes.data], [16]) == [-3000, -3000]
    cfg = ReplicateConfig()
    cfg.replicaNum = 9
    assert store.put("bad/replicas", b"x", cfg) == -3000
    assert store.put("bad/empty", b"") == -3000
    assert store.init(0) == -3005
    assert store.register_buffer(buf.ctypes.data, buf.nbytes) == 0
    assert store.register_buffer(buf.ctypes.data, buf.nbytes) == -3005
    assert store.register_buffer(buf.ctypes.data + 8, 16) == -3000  # overlaps
    assert store.unregister_buffer(buf.ctypes.data, buf.nbytes) == 0
    assert store.unregister_buffer(buf.ctypes.data, buf.nbytes) == -3000
    missing = store.get_key_info("bad/missing")
    assert missing.size() == 0 and missing.loc_list() == []


def test_bad_destinations_are_refused_and_left_untouched(store):
    src = np.arange(64, dtype=np.uint8)
    assert store.put_from("d/obj", src.ctypes.data, 64) == 0
    dst = np.full(64, 7, dtype=np.uint8)
    assert store.get_into("d/obj", dst.ctypes.data, 32) == -3000  # smaller than the object
    at = dst.ctypes.data
    assert store.get_into_layers("d/obj", [at, at + 16], [32, 32]) == -3000  # overlap
    assert store.get_into_layers("d/obj", [at, at + 32], [32]) == -3000  # lengths differ
    assert np.all(dst == 7)
    assert store.get_into("d/missing", at, 64) == -3007

    # One key's bad layers fail that key alone; lists of different lengths fail them all.
    assert store.put_from("d/other", src.ctypes.data, 64) == 0
    codes = store.batch_get_into_layers(["d/obj", "d/other"], [[0], [at]], [[64], [64]])
    assert codes == [-3000, 0]
    assert np.array_equal(dst, src)
    assert store.batch_put_from_layers(["d/x", "d/y"], [[at]], [[64], [64]]) == [-3000, -3000]
    assert store.batch_is_exist(["d/x", "d/y"]) == [0, 0]


def test_calls_before_init_are_refused():
    s = DistributedObjectStore()
    assert s.put("k", b"x") == -3019
    assert s.get("k") == b""
    assert s.get_local_service_id() == -3019
    assert s.batch_get_into_layers(["k"], [[1]], [[1]]) == [-3019]
    assert s.close() == 0


def test_threads_share_one_store(store):
    """Calls release the GIL, so threads run them at once on one store: each thread's
    values come back intact, and a value all of them read stays intact."""
    shared = np.random.default_rng(5).integers(0, 256, 1 << 20, dtype=np.uint8)
    assert store.put("t/shared", shared) == 0
    failures = []

    def work(t):
        src = np.full(1 << 20, t, dtype=np.uint8)
        dst = np.empty_like(src)
        for r in range(10):
            key = f"t/{t}/{r}"
            codes = [
                store.put_from(key, src.ctypes.data, src.nbytes),
                store.get_into(key, dst.ctypes.data, dst.nbytes),
            ]
            same = np.array_equal(src, dst)
            codes.append(store.get_into("t/shared", dst.ctypes.data, dst.nbytes))
            if codes != [0, 0, 0] or not same or not np.array_equal(dst, shared):
                failures.append((t, r, codes))
            removed = store.remove(key)
            if removed != 0:
                failures.append((t, r, "remove", removed))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
