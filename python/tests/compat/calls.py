"""One scripted sequence of calls over the whole Python API of memcache-hybrid 1.3.0, run on
whatever `memcache_hybrid` is importable; writes every call's answer as comparable JSON.

    python calls.py OUT.json

Run it on the seed with `run_on_seed.sh calls.py OUT.json` (the seed prints its log on stdout,
so the answers go to a file), on ours with a pool configured through `MMC_CLIENT_*`
(tests/test_compat_seed.py does both and compares).

OUT.json: {"results": {name: value}, "missing": {name: [api names]}}.
Values: ints and lists of codes as they are; bytes as {"len", "sha1"}; a KeyInfo as its size,
the number of entries of loc_list / gva_list, type_list, and whether the addresses are ints;
addresses (batch_alloc, gva_list) as "addr" (0 and negative codes kept); an exception as
"EXC TypeName". `missing` names, per call, the API names (e.g. "DistributedObjectStore.batch_alloc",
"module.L2G") that raised AttributeError in that call or earlier in the same chain of dependent
calls: what a missing method explains.

Each call is wrapped, so one exception does not stop the rest. Sub-modes `pure` and `setup`
(run as subprocesses of the main run) cover `init(0, init_bm=False)` and `setup(LocalConfig)`.
"""

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

import memcache_hybrid as _mh

TRACE = bool(os.environ.get("COMPAT_TRACE"))
T0 = time.time()
RESULTS = {}
MISSING = {}
_chain = None  # the missing names seen in the current chain of dependent calls
_hits = set()  # the missing names seen in the current call


class Tracked:
    """Forwards attribute reads to an object and notes the ones it lacks."""

    def __init__(self, obj, kind):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_kind", kind)

    def __getattr__(self, name):
        try:
            return getattr(self._obj, name)
        except AttributeError:
            _hits.add("%s.%s" % (self._kind, name))
            raise

    def __setattr__(self, name, value):
        if not hasattr(self._obj, name) and self._kind != "ReplicateConfig":
            _hits.add("%s.%s" % (self._kind, name))
        setattr(self._obj, name, value)


M = Tracked(_mh, "module")


def new(cls_name):
    """An instance of a class of the module, tracked."""
    return Tracked(getattr(M, cls_name)(), cls_name)


def is_keyinfo(v):
    return type(v).__name__ == "KeyInfo"


def addr(x):
    """An address as "addr" (it differs run to run), a code as itself; lists element-wise."""
    if isinstance(x, (list, tuple)):
        return [addr(e) for e in x]
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        return norm(x)
    return "addr" if x > 0 else int(x)


def keyinfo(ki):
    ki = Tracked(ki, "KeyInfo")
    out = {}
    for field in ("size", "loc_list", "type_list", "gva_list"):
        try:
            v = getattr(ki, field)()
        except Exception as e:  # noqa: BLE001
            out[field] = "EXC " + type(e).__name__
            continue
        if field == "size":
            out["size"] = v
        elif field == "type_list":
            out["type_list"] = list(v)
        else:
            out[field + "_len"] = len(v)
            out[field + "_ints"] = all(isinstance(x, int) for x in v)
    return out


def norm(v):
    if isinstance(v, (bytes, bytearray)):
        return {"len": len(v), "sha1": hashlib.sha1(bytes(v)).hexdigest()[:16]}
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    if is_keyinfo(v):
        return keyinfo(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def rec(name, fn, conv=norm):
    """Calls fn(), records its answer under `name`, returns the raw answer (None on an
    exception)."""
    global _hits
    assert name not in RESULTS, name
    _hits = set()
    raw = None
    try:
        raw = fn()
        v = conv(raw)
    except Exception as e:  # noqa: BLE001
        v = "EXC " + type(e).__name__
    hits = set(_hits)
    if _chain is not None:
        _chain.update(hits)
        hits = set(_chain)
    if hits:
        MISSING[name] = sorted(hits)
    RESULTS[name] = v
    if TRACE:
        print("%8.3f %s => %s" % (time.time() - T0, name, json.dumps(v)), file=sys.stderr, flush=True)
    return raw


@contextlib.contextmanager
def chain(_name):
    """Calls that depend on the ones before them: a method missing early explains the
    differences of every later call of the chain."""
    global _chain
    _chain = set()
    try:
        yield
    finally:
        _chain = None


def sha(a):
    return hashlib.sha1(a.tobytes()).hexdigest()[:16]


def write(path):
    with open(path, "w") as f:
        json.dump({"results": RESULTS, "missing": MISSING}, f, indent=1, sort_keys=True)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
N = 1 << 22
src = np.frombuffer(np.random.default_rng(1).bytes(N), dtype=np.uint8).copy()
dst = np.zeros(N, dtype=np.uint8)
sp, dp = src.ctypes.data, dst.ctypes.data


def sub_pure(out):
    """A second process: init(0, init_bm=False) (a pure client) next to the main one."""
    s = new("DistributedObjectStore")
    rec("pure/init(0, init_bm=False)", lambda: s.init(0, init_bm=False))
    rec("pure/is_exist key of main", lambda: s.is_exist("shared"))
    rec("pure/get key of main", lambda: s.get("shared"))
    rec("pure/put", lambda: s.put("pure-put", b"pure"))
    rec("pure/is_exist own put", lambda: s.is_exist("pure-put"))
    rec("pure/close", lambda: s.close())
    write(out)


def sub_setup(out):
    """A second process: LocalConfig + setup(cfg) + init(0) instead of the environment."""
    os.environ.pop("MMC_LOCAL_CONFIG_PATH", None)
    meta = os.environ.get("SEED_META_URL") or os.environ.get("MMC_CLIENT_DISCOVERY_URL", "")
    store_url = os.environ.get("SEED_CONFIG_STORE_URL") or meta
    with chain("setup"):
        cfg = rec("setup/LocalConfig()", lambda: new("LocalConfig"), conv=lambda c: type(c._obj).__name__)

        def configure():
            cfg.meta_service_url = meta
            cfg.config_store_url = store_url
            cfg.protocol = "host_shm"
            cfg.dram_size = "64MB"
            # 1.3.0 wants the same maximum on every rank (its config file sets it to the DRAM size)
            cfg.max_dram_size = os.environ.get("SEED_DRAM_SIZE", "2GB")
            cfg.hbm_size = "0"
            cfg.log_level = "error"
            return [cfg.protocol, cfg.dram_size, cfg.hbm_size, cfg.max_dram_size]

        rec("setup/LocalConfig fields", configure)
        s = new("DistributedObjectStore")
        rec("setup/setup(cfg)", lambda: s.setup(cfg._obj))
        rec("setup/init(0)", lambda: s.init(0))
        rec("setup/get key of main", lambda: s.get("shared"))
        rec("setup/put+get", lambda: (s.put("setup-put", b"setup"), s.get("setup-put")))
        rec("setup/close", lambda: s.close())
    write(out)


def subprocess_answers(mode):
    """Runs this script in `mode` in a child process and merges its answers."""
    tmp = "%s.%s.json" % (OUT, mode)
    log = open(os.environ["COMPAT_SUBLOG"] + "." + mode, "w") if os.environ.get("COMPAT_SUBLOG") else subprocess.DEVNULL
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), mode, tmp],
                           stdout=log, stderr=subprocess.STDOUT, timeout=90)
        RESULTS["%s/exit status" % mode] = p.returncode
        if os.path.exists(tmp):
            with open(tmp) as f:
                d = json.load(f)
            RESULTS.update(d["results"])
            MISSING.update(d["missing"])
    except subprocess.TimeoutExpired:
        RESULTS["%s/exit status" % mode] = "timeout"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if log is not subprocess.DEVNULL:
            log.close()


def main():
    # -- module constants --
    for c in ("L2G", "G2L", "G2H", "H2G", "AUTO"):
        rec("module/%s" % c, lambda c=c: int(getattr(M, c)))

    s = new("DistributedObjectStore")

    # -- every call before init --
    one = [4096]
    rec("pre/put", lambda: s.put("pre", b"x"))
    rec("pre/get", lambda: s.get("pre"))
    rec("pre/put_from", lambda: s.put_from("pre", sp, 4096, 3))
    rec("pre/get_into", lambda: s.get_into("pre", dp, 4096, 2))
    rec("pre/put_from_layers", lambda: s.put_from_layers("pre", [sp], one, 3))
    rec("pre/get_into_layers", lambda: s.get_into_layers("pre", [dp], one, 2))
    rec("pre/batch_put_from", lambda: s.batch_put_from(["pre"], [sp], one, 3))
    rec("pre/batch_get_into", lambda: s.batch_get_into(["pre"], [dp], one, 2))
    rec("pre/batch_put_from_layers", lambda: s.batch_put_from_layers(["pre"], [[sp]], [one], 3))
    rec("pre/batch_get_into_layers", lambda: s.batch_get_into_layers(["pre"], [[dp]], [one], 2))
    rec("pre/put_batch", lambda: s.put_batch(["pre"], [b"x"]))
    rec("pre/get_batch", lambda: s.get_batch(["pre"]))
    rec("pre/is_exist", lambda: s.is_exist("pre"))
    rec("pre/batch_is_exist", lambda: s.batch_is_exist(["pre"]))
    rec("pre/remove", lambda: s.remove("pre"))
    rec("pre/remove_batch", lambda: s.remove_batch(["pre"]))
    rec("pre/remove_all", lambda: s.remove_all())
    rec("pre/get_key_info", lambda: s.get_key_info("pre"))
    rec("pre/batch_get_key_info", lambda: s.batch_get_key_info(["pre"]))
    rec("pre/get_local_service_id", lambda: s.get_local_service_id())
    rec("pre/register_buffer", lambda: s.register_buffer(sp, N))
    rec("pre/unregister_buffer", lambda: s.unregister_buffer(sp, N))
    rec("pre/evict", lambda: s.evict(["pre"]))
    rec("pre/prefetch", lambda: s.prefetch(["pre"]))
    rec("pre/batch_alloc", lambda: s.batch_alloc(["pre"], one), conv=addr)
    rec("pre/batch_copy", lambda: s.batch_copy([sp], [dp], one, 3))
    rec("pre/batch_copy_layers", lambda: s.batch_copy_layers([sp], [[dp]], [one], 3))
    rec("pre/batch_write_finish", lambda: s.batch_write_finish(["pre"], [0]))
    rec("pre/batch_add_lease", lambda: s.batch_add_lease(["pre"], 1000))
    rec("pre/batch_remove_lease", lambda: s.batch_remove_lease(["pre"]))
    rec("pre/close", lambda: s.close())

    # -- init --
    rec("init/init(0)", lambda: s.init(0))
    rec("init/init(0) again", lambda: s.init(0))
    rec("init/init(0, init_bm=False) after init", lambda: s.init(0, init_bm=False))
    rec("init/get_local_service_id", lambda: s.get_local_service_id())
    rec("init/register_buffer src", lambda: s.register_buffer(sp, N))
    rec("init/register_buffer dst", lambda: s.register_buffer(dp, N))

    # -- put / get --
    rec("kv/put k1", lambda: s.put("k1", b"hello world"))
    rec("kv/get k1", lambda: s.get("k1"))
    rec("kv/put k1 again (existing)", lambda: s.put("k1", b"HELLO WORLD"))
    rec("kv/get k1 after re-put", lambda: s.get("k1"))
    rec("kv/put bytearray", lambda: s.put("k-ba", bytearray(b"abc")))
    rec("kv/put memoryview", lambda: s.put("k-mv", memoryview(b"abcd")))
    rec("kv/put numpy", lambda: s.put("k-np", src[:1000]))
    rec("kv/get numpy", lambda: s.get("k-np") == src[:1000].tobytes())
    rec("kv/put str", lambda: s.put("k-str", "text"))
    rec("kv/put None", lambda: s.put("k-none", None))
    rec("kv/get missing", lambda: s.get("missing-key"))
    rec("kv/is_exist k1", lambda: s.is_exist("k1"))
    rec("kv/is_exist missing", lambda: s.is_exist("missing-key"))
    rec("kv/put key len 255", lambda: s.put("a" * 255, b"x"))
    rec("kv/put key len 256", lambda: s.put("b" * 256, b"x"))
    rec("kv/put key len 257", lambda: s.put("c" * 257, b"x"))
    rec("kv/is_exist key len 256", lambda: s.is_exist("b" * 256))
    rec("kv/put empty key", lambda: s.put("", b"x"))
    rec("kv/put b''", lambda: s.put("zero", b""))
    rec("kv/is_exist zero", lambda: s.is_exist("zero"))
    rc9 = new("ReplicateConfig")
    rc9.replicaNum = 9
    rec("kv/put replicaNum=9", lambda: s.put("r9", b"x", rc9._obj))
    rc2 = new("ReplicateConfig")
    rc2.replicaNum = 2
    rec("kv/put replicaNum=2 (one local service)", lambda: s.put("r2", b"x", rc2._obj))
    rc1 = new("ReplicateConfig")
    rc1.replicaNum = 1
    rec("kv/put replicaNum=1", lambda: s.put("r1", b"x", rc1._obj))
    rec("kv/ReplicateConfig() defaults", lambda: [new("ReplicateConfig").replicaNum,
                                                 list(new("ReplicateConfig").preferredLocalServiceIDs)])
    rec("kv/put keyword replicateConfig", lambda: s.put("kw", b"x", replicateConfig=rc1._obj))
    rec("kv/put_from 64KiB H2G", lambda: s.put_from("pf1", sp, 65536, 3))
    rec("kv/put_from again (existing)", lambda: s.put_from("pf1", sp + 1, 65536, 3))
    dst[:] = 0
    rec("kv/get_into 64KiB G2H", lambda: s.get_into("pf1", dp, 65536, 2))
    rec("kv/get_into bytes", lambda: sha(dst[:65536]) == sha(src[:65536]))
    rec("kv/get_into default direct", lambda: s.get_into("pf1", dp, 65536))
    rec("kv/get_into missing", lambda: s.get_into("missing-key", dp, 4096, 2))
    rec("kv/get_into smaller buffer", lambda: s.get_into("pf1", dp, 4096, 2))
    rec("kv/get_into bigger buffer", lambda: s.get_into("pf1", dp, 131072, 2))
    rec("kv/put_from size 0", lambda: s.put_from("zero2", sp, 0, 3))
    for d in (0, 1, 9):
        rec("kv/put_from direct=%d" % d, lambda d=d: s.put_from("d%d" % d, sp, 4096, d))
        rec("kv/is_exist after put_from direct=%d" % d, lambda d=d: s.is_exist("d%d" % d))
    for d in (1, 0, 9, 3):
        rec("kv/get_into direct=%d" % d, lambda d=d: s.get_into("pf1", dp, 65536, d))
    rec("kv/remove missing", lambda: s.remove("missing-key"))
    rec("kv/remove k1", lambda: s.remove("k1"))
    rec("kv/remove k1 again", lambda: s.remove("k1"))
    rec("kv/get k1 after remove", lambda: s.get("k1"))
    rec("kv/remove_batch [pf1, missing]", lambda: s.remove_batch(["pf1", "missing-key"]))
    rec("kv/remove_batch []", lambda: s.remove_batch([]))

    # -- put_batch / get_batch / batch_put_from / batch_get_into --
    with chain("put_batch"):
        rec("batch/put_batch", lambda: s.put_batch(["pb0", "pb1"], [b"aa", b"bbb"]))
        rec("batch/get_batch", lambda: s.get_batch(["pb0", "pb1", "missing-key"]))
        rec("batch/put_batch existing+new", lambda: s.put_batch(["pb0", "pb2"], [b"XX", b"cc"]))
        rec("batch/get_batch after", lambda: s.get_batch(["pb0", "pb2"]))
        rec("batch/put_batch mismatched", lambda: s.put_batch(["pb3", "pb4"], [b"x"]))
        rec("batch/is_exist pb3", lambda: s.batch_is_exist(["pb3", "pb4"]))
        rec("batch/put_batch duplicate keys", lambda: s.put_batch(["pbd", "pbd"], [b"first", b"second"]))
        rec("batch/get duplicate key", lambda: s.get("pbd"))
        rec("batch/put_batch []", lambda: s.put_batch([], []))
        rec("batch/get_batch []", lambda: s.get_batch([]))
    rec("batch/batch_put_from 2 keys", lambda: s.batch_put_from(["B0", "B1"], [sp, sp + 4096], [4096, 4096], 3))
    rec("batch/batch_put_from existing+new", lambda: s.batch_put_from(["B0", "B2"], [sp + 8192, sp + 8192], [4096, 4096], 3))
    rec("batch/batch_put_from mismatched", lambda: s.batch_put_from(["B3", "B4"], [sp], [4096, 4096], 3))
    rec("batch/batch_put_from duplicate keys", lambda: s.batch_put_from(["BD", "BD"], [sp, sp + 4096], [4096, 4096], 3))
    rec("batch/batch_put_from default direct", lambda: s.batch_put_from(["B5"], [sp], [4096]))
    dst[:] = 0
    rec("batch/batch_get_into 2 keys", lambda: s.batch_get_into(["B0", "B1"], [dp, dp + 4096], [4096, 4096], 2))
    rec("batch/batch_get_into bytes", lambda: sha(dst[:8192]) == sha(src[:8192]))
    rec("batch/batch_get_into missing+existing", lambda: s.batch_get_into(["B0", "missing-key"], [dp, dp + 4096], [4096, 4096], 2))
    rec("batch/batch_get_into mismatched", lambda: s.batch_get_into(["B0", "B1"], [dp], [4096, 4096], 2))
    rec("batch/batch_get_into smaller buffer", lambda: s.batch_get_into(["B0"], [dp], [1024], 2))
    dst[:] = 0
    rec("batch/batch_get_into overlapping destinations", lambda: s.batch_get_into(["B0", "B1", "B2"], [dp, dp + 2048, dp + 1024], [4096, 4096, 4096], 2))
    rec("batch/overlapping destinations bytes", lambda: sha(dst[:8192]))
    rec("batch/overlapping destinations one of the keys",
        lambda: [sha(dst[o:o + 4096]) == sha(src[k:k + 4096]) for o, k in ((0, 0), (2048, 4096), (1024, 8192))])
    rec("batch/batch_get_into same key twice", lambda: s.batch_get_into(["B1", "B1"], [dp, dp + 4096], [4096, 4096], 2))
    rec("batch/batch_is_exist mixed", lambda: s.batch_is_exist(["B0", "missing-key", "B1"]))
    rec("batch/batch_is_exist []", lambda: s.batch_is_exist([]))

    # -- layers --
    layer_sizes = [131072] * 3 + [16384] * 3
    blk = sum(layer_sizes)

    def ptrs(base, i, sizes=layer_sizes):
        off, out = base + i * blk, []
        for sz in sizes:
            out.append(off)
            off += sz
        return out

    keys = ["L%d" % i for i in range(4)]
    rec("layers/batch_put_from_layers 4x6", lambda: s.batch_put_from_layers(keys, [ptrs(sp, i) for i in range(4)], [layer_sizes] * 4, 3))
    rec("layers/batch_put_from_layers again (existing)", lambda: s.batch_put_from_layers(keys, [ptrs(sp, i) for i in range(4)], [layer_sizes] * 4, 3))
    rec("layers/batch_is_exist", lambda: s.batch_is_exist(keys + ["missing-key"]))
    dst[:] = 0
    rec("layers/batch_get_into_layers", lambda: s.batch_get_into_layers(keys, [ptrs(dp, i) for i in range(4)], [layer_sizes] * 4, 2))
    rec("layers/bytes", lambda: sha(dst[:4 * blk]) == sha(src[:4 * blk]))
    rec("layers/get_key_info L0 size", lambda: s.get_key_info("L0").size())
    rec("layers/get L0", lambda: s.get("L0") == src[:blk].tobytes())
    rec("layers/get_into L0 whole", lambda: s.get_into("L0", dp, blk, 2))
    rec("layers/batch_get_into_layers missing key", lambda: s.batch_get_into_layers(["L0", "missing-key"], [ptrs(dp, 0), ptrs(dp, 1)], [layer_sizes] * 2, 2))
    rec("layers/batch_get_into_layers fewer layers", lambda: s.batch_get_into_layers(["L0"], [ptrs(dp, 0)[:3]], [layer_sizes[:3]], 2))
    rec("layers/batch_get_into_layers one big layer", lambda: s.batch_get_into_layers(["L0"], [[dp]], [[blk]], 2))
    rec("layers/batch_put_from_layers mismatched keys/ptrs", lambda: s.batch_put_from_layers(["M0", "M1"], [ptrs(sp, 0)], [layer_sizes], 3))
    rec("layers/batch_put_from_layers inner mismatch", lambda: s.batch_put_from_layers(["M2"], [ptrs(sp, 0)], [layer_sizes[:3]], 3))
    rec("layers/batch_get_into_layers inner mismatch", lambda: s.batch_get_into_layers(["L0"], [ptrs(dp, 0)], [layer_sizes[:3]], 2))
    dst[:] = 0
    rec("layers/batch_get_into_layers overlapping destinations", lambda: s.batch_get_into_layers(["L0", "L1"], [ptrs(dp, 0), ptrs(dp + 65536, 0)], [layer_sizes] * 2, 2))
    rec("layers/overlapping destinations bytes", lambda: sha(dst[:blk + 65536]))
    rec("layers/put_from_layers", lambda: s.put_from_layers("S0", ptrs(sp, 0), layer_sizes, 3))
    rec("layers/put_from_layers existing", lambda: s.put_from_layers("S0", ptrs(sp, 1), layer_sizes, 3))
    rec("layers/put_from_layers mismatch", lambda: s.put_from_layers("S1", ptrs(sp, 0), layer_sizes[:2], 3))
    dst[:] = 0
    rec("layers/get_into_layers", lambda: s.get_into_layers("S0", ptrs(dp, 0), layer_sizes, 2))
    rec("layers/get_into_layers bytes", lambda: sha(dst[:blk]) == sha(src[:blk]))
    rec("layers/get_into_layers missing", lambda: s.get_into_layers("missing-key", ptrs(dp, 0), layer_sizes, 2))
    rec("layers/get_into_layers fewer layers", lambda: s.get_into_layers("S0", ptrs(dp, 0)[:3], layer_sizes[:3], 2))

    # -- key info --
    rec("keyinfo/put ki", lambda: s.put("ki", b"k" * 1000))
    rec("keyinfo/get_key_info", lambda: s.get_key_info("ki"))
    for f in (0, 1, 2, 7):
        rec("keyinfo/get_key_info flag=%d" % f, lambda f=f: s.get_key_info("ki", f))
    rec("keyinfo/get_key_info missing", lambda: s.get_key_info("missing-key"))
    rec("keyinfo/batch_get_key_info", lambda: s.batch_get_key_info(["ki", "missing-key", "L1"]))
    rec("keyinfo/batch_get_key_info flag=0", lambda: s.batch_get_key_info(["ki", "missing-key"], 0))
    rec("keyinfo/batch_get_key_info []", lambda: s.batch_get_key_info([]))
    rec("keyinfo/KeyInfo str", lambda: type(str(s.get_key_info("ki"))).__name__)

    # -- in place: batch_alloc, batch_copy, batch_write_finish, leases --
    ip = ["A0", "A1", "A2"]
    with chain("inplace"):
        a = rec("inplace/batch_alloc", lambda: s.batch_alloc(ip, [4096, 8192, 100]), conv=addr)
        a = a or [0, 0, 0]
        rec("inplace/batch_alloc distinct", lambda: len(set(a)) == 3)
        rec("inplace/get_key_info pending", lambda: s.get_key_info("A0"))
        rec("inplace/is_exist pending", lambda: s.is_exist("A0"))
        rec("inplace/get pending", lambda: s.get("A0"))
        rec("inplace/batch_alloc pending key again", lambda: s.batch_alloc(["A0"], [4096]), conv=addr)
        rec("inplace/batch_alloc pending key again same address", lambda: s.batch_alloc(["A0"], [4096])[0] == a[0])
        rec("inplace/batch_alloc size 0", lambda: s.batch_alloc(["Z0"], [0]), conv=addr)
        rec("inplace/batch_alloc mismatched", lambda: s.batch_alloc(["Z1", "Z2"], [10]), conv=addr)
        rec("inplace/batch_alloc empty key", lambda: s.batch_alloc([""], [10]), conv=addr)
        rec("inplace/batch_alloc []", lambda: s.batch_alloc([], []), conv=addr)
        for media in (0, 2, 5):
            rec("inplace/batch_alloc media=%d" % media, lambda m=media: s.batch_alloc(["Med%d" % m], [10], m), conv=addr)
        for d in (0, 1, 9, 2):
            rec("inplace/batch_copy to pending direct=%d" % d, lambda d=d: s.batch_copy([a[0]], [sp], [4096], d))
        rec("inplace/batch_copy H2G A0", lambda: s.batch_copy([a[0]], [sp], [4096], 3))
        rec("inplace/batch_copy_layers H2G A1 (2 layers)", lambda: s.batch_copy_layers([a[1]], [[sp + 4096, sp + 8192]], [[4096, 4096]], 3))
        rec("inplace/batch_copy past the allocation", lambda: s.batch_copy([a[2]], [sp], [4096], 3))
        rec("inplace/batch_copy into the middle", lambda: s.batch_copy([a[1] + 4096], [sp + 8192], [4096], 3))
        rec("inplace/batch_copy not an address", lambda: s.batch_copy([12345], [sp], [100], 3))
        rec("inplace/batch_copy mismatched", lambda: s.batch_copy([a[2]], [sp + 100, sp], [100], 3))
        rec("inplace/batch_copy []", lambda: s.batch_copy([], [], [], 3))
        rec("inplace/batch_copy H2G A2 flag=1", lambda: s.batch_copy([a[2]], [sp + 100], [100], 3, 1))
        rec("inplace/batch_write_finish", lambda: s.batch_write_finish(ip + ["unknown-key"], [0, 0, 5, 0]))
        rec("inplace/batch_write_finish again", lambda: s.batch_write_finish(["A0"], [0]))
        rec("inplace/batch_write_finish mismatched", lambda: s.batch_write_finish(["A0", "A1"], [0]))
        rec("inplace/get A0", lambda: s.get("A0"))
        rec("inplace/get A0 bytes", lambda: s.get("A0") == src[:4096].tobytes())
        rec("inplace/get A1 bytes", lambda: s.get("A1") == src[4096:12288].tobytes())
        rec("inplace/get A2 (finished with 5)", lambda: s.get("A2"))
        rec("inplace/batch_is_exist", lambda: s.batch_is_exist(ip))
        ki = rec("inplace/get_key_info A0", lambda: s.get_key_info("A0"))
        g = rec("inplace/gva_list A0 == batch_alloc address", lambda: ki.gva_list(),
                conv=lambda v: list(v) == [a[0]]) or [0]
        rec("inplace/get_key_info A1 flag=0", lambda: s.get_key_info("A1", 0))
        rec("inplace/batch_get_key_info", lambda: s.batch_get_key_info(ip, 1))
        rec("inplace/batch_add_lease", lambda: s.batch_add_lease(["A0", "A1"], 1000))
        rec("inplace/batch_add_lease missing and failed", lambda: s.batch_add_lease(["missing-key", "A2"], 1000))
        rec("inplace/batch_add_lease mismatched ttl 0", lambda: s.batch_add_lease(["A0"], 0))
        dst[:] = 0
        rec("inplace/batch_copy G2H from gva_list", lambda: s.batch_copy([g[0]], [dp], [4096], 2))
        rec("inplace/batch_copy G2H bytes", lambda: sha(dst[:4096]) == sha(src[:4096]))
        rec("inplace/batch_copy G2H part", lambda: s.batch_copy([g[0] + 1024], [dp], [1024], 2))
        rec("inplace/batch_copy G2H past the object", lambda: s.batch_copy([g[0]], [dp], [8192], 2))
        dst[:4096] = 7
        for d in (1, 9):
            rec("inplace/batch_copy from committed direct=%d" % d, lambda d=d: s.batch_copy([g[0]], [dp], [4096], d))
            rec("inplace/batch_copy from committed direct=%d dst changed" % d, lambda: bool((dst[:4096] != 7).any()))
        for d in (0, 3):
            rec("inplace/batch_copy to committed direct=%d" % d, lambda d=d: s.batch_copy([g[0]], [dp], [4096], d))
            rec("inplace/get A0 after direct=%d to committed" % d, lambda: s.get("A0") == src[:4096].tobytes())
        dst[:] = 0
        rec("inplace/batch_copy_layers G2H A1", lambda: s.batch_copy_layers([a[1]], [[dp, dp + 4096]], [[4096, 4096]], 2))
        rec("inplace/batch_copy_layers G2H bytes", lambda: sha(dst[:8192]) == sha(src[4096:12288]))
        rec("inplace/batch_copy_layers mismatched", lambda: s.batch_copy_layers([a[1]], [[dp, dp + 4096]], [[4096]], 2))
        rec("inplace/batch_copy_layers default direct", lambda: s.batch_copy_layers([a[1]], [[dp]], [[4096]]))
        rec("inplace/batch_remove_lease", lambda: s.batch_remove_lease(["A0", "A1"]))
        rec("inplace/batch_remove_lease again", lambda: s.batch_remove_lease(["A0"]))
        rec("inplace/batch_remove_lease missing", lambda: s.batch_remove_lease(["A0", "missing-key"]))
        rec("inplace/batch_remove_lease []", lambda: s.batch_remove_lease([]))
        rec("inplace/batch_add_lease then remove", lambda: (s.batch_add_lease(["A1"], 60000), s.remove("A1")))
        rec("inplace/is_exist A1 after remove under lease", lambda: s.is_exist("A1"))
        rec("inplace/remove A0", lambda: s.remove("A0"))
        rec("inplace/batch_copy G2H after remove", lambda: s.batch_copy([g[0]], [dp], [4096], 2))
        # alloc of a committed key, and a write_finish after it
        rec("inplace/put C0", lambda: s.put("C0", b"old" * 100))
        c = rec("inplace/batch_alloc committed key", lambda: s.batch_alloc(["C0"], [300]), conv=addr) or [0]
        rec("inplace/batch_alloc committed key == its gva_list", lambda: list(s.get_key_info("C0").gva_list()) == c)
        rec("inplace/batch_copy into alloc of committed key", lambda: s.batch_copy([c[0]], [sp], [300], 3))
        rec("inplace/batch_write_finish committed key", lambda: s.batch_write_finish(["C0"], [0]))
        rec("inplace/get C0 after: old, new", lambda: [s.get("C0") == b"old" * 100, s.get("C0") == src[:300].tobytes()])
        # alloc with a lease, and remove of a pending key
        rec("inplace/batch_alloc leaseTtlMs", lambda: s.batch_alloc(["T0"], [64], 1, 60000), conv=addr)
        rec("inplace/batch_alloc keywords", lambda: s.batch_alloc(keys=["T1"], sizes=[64], media=1, leaseTtlMs=0), conv=addr)
        rec("inplace/remove pending", lambda: s.remove("T1"))
        rec("inplace/batch_write_finish after remove pending", lambda: s.batch_write_finish(["T1", "T0"], [0, 0]))
        rec("inplace/remove leased T0", lambda: s.remove("T0"))
        rec("inplace/batch_remove_lease T0", lambda: s.batch_remove_lease(["T0"]))

    # -- tiers: evict / prefetch (no SSD configured) --
    with chain("tier"):
        rec("tier/put E0", lambda: s.put("E0", b"evict me"))
        rec("tier/evict", lambda: s.evict(["E0"]))

        def settled(key, seconds=1.0):
            """is_exist once it reads 0, or after `seconds` (1.3.0 drops an evicted object with no
            SSD to take it within milliseconds, asynchronously)."""
            end = time.time() + seconds
            while True:
                r = s.is_exist(key)
                if r != 1 or time.time() > end:
                    return r
                time.sleep(0.01)

        rec("tier/is_exist after evict (settled)", lambda: settled("E0"))
        rec("tier/get after evict", lambda: s.get("E0"))
        rec("tier/evict missing", lambda: s.evict(["missing-key"]))
        rec("tier/evict []", lambda: s.evict([]))
        rec("tier/evict src=2 dst=1", lambda: s.evict(["E0"], 2, 1))
        rec("tier/prefetch", lambda: s.prefetch(["E0"]))
        rec("tier/prefetch missing", lambda: s.prefetch(["missing-key"]))
        rec("tier/prefetch src=1 dst=2", lambda: s.prefetch(["E0"], 1, 2))
        rec("tier/get after prefetch", lambda: s.get("E0"))

    # -- buffers --
    extra = np.zeros(1 << 16, dtype=np.uint8)
    rec("buffer/register_buffer again", lambda: s.register_buffer(sp, N))
    rec("buffer/register_buffer new", lambda: s.register_buffer(extra.ctypes.data, extra.nbytes))
    rec("buffer/unregister_buffer", lambda: s.unregister_buffer(extra.ctypes.data, extra.nbytes))
    rec("buffer/unregister_buffer again", lambda: s.unregister_buffer(extra.ctypes.data, extra.nbytes))
    rec("buffer/unregister_buffer never registered", lambda: s.unregister_buffer(dp + 4096, 4096))
    rec("buffer/register_buffer size 0", lambda: s.register_buffer(extra.ctypes.data, 0))
    rec("buffer/register_buffer null", lambda: s.register_buffer(0, 4096))

    # -- other processes: a pure client, and setup(LocalConfig) --
    rec("multi/put shared", lambda: s.put("shared", b"shared value"))
    subprocess_answers("pure")
    subprocess_answers("setup")

    # -- remove_all, close --
    with chain("end"):
        rec("end/remove_all", lambda: s.remove_all())
        rec("end/is_exist after remove_all", lambda: s.batch_is_exist(["L0", "B0", "shared"]))
        rec("end/remove_all again", lambda: s.remove_all())
        rec("end/close", lambda: s.close())
        rec("end/put after close", lambda: s.put("late", b"x"))
        rec("end/get after close", lambda: s.get("late"))
        rec("end/close again", lambda: s.close())
    write(OUT)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("pure", "setup"):
        {"pure": sub_pure, "setup": sub_setup}[sys.argv[1]](sys.argv[2])
    else:
        OUT = sys.argv[1] if len(sys.argv) > 1 else "answers.json"
        main()
