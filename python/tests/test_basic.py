"""The first calls of memcache_hybrid on the embedded default (issue 8, in progress)."""

import memcache_hybrid


def test_put_get_round_trip_on_the_embedded_default():
    store = memcache_hybrid.DistributedObjectStore()
    assert store.init(0) == 0
    try:
        assert store.put("py/bytes", b"hello") == 0
        assert store.put("py/bytearray", bytearray(b"xy")) == 0
        assert store.get("py/bytes") == b"hello"
        assert store.get("py/bytearray") == b"xy"
        assert store.get("py/missing") == b""
        # A non-contiguous buffer is refused, not copied wrong.
        assert store.put("py/strided", memoryview(b"abcdef")[::2]) == -3000
    finally:
        assert store.close() == 0
