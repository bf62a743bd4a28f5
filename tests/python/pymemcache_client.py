"""pymemcache (the PyPI client) against a memcached server: set / get / get_many / cas /
incr / delete. Usage: pymemcache_client.py HOST:PORT; exits non-zero on any mismatch."""

import sys

from pymemcache.client.base import Client


def main(addr: str) -> None:
    host, port = addr.rsplit(":", 1)
    c = Client((host, int(port)), connect_timeout=5, timeout=5)
    assert c.set("py/a", b"alpha", noreply=False)
    assert c.get("py/a") == b"alpha"
    assert c.set("py/b", b"\x00\r\nbeta", expire=100, noreply=False)
    assert c.get_many(["py/a", "py/b", "py/none"]) == {"py/a": b"alpha", "py/b": b"\x00\r\nbeta"}
    value, unique = c.gets("py/a")
    assert value == b"alpha"
    assert c.cas("py/a", b"stale", int(unique) + 1000, noreply=False) is False
    assert c.cas("py/a", b"gamma", unique, noreply=False) is True
    assert c.get("py/a") == b"gamma"
    assert c.cas("py/none", b"x", 1, noreply=False) is None
    assert c.set("py/n", b"41", noreply=False)
    assert c.incr("py/n", 1) == 42
    assert c.decr("py/n", 2) == 40
    assert c.incr("py/none", 1) is None
    assert c.delete("py/a", noreply=False) is True
    assert c.delete("py/a", noreply=False) is False
    assert c.get("py/a") is None
    assert c.add("py/b", b"x", noreply=False) is False
    c.close()
    print("pymemcache: all checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
