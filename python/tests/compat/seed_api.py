"""The Python surface of memcache-hybrid 1.3.0 as JSON, read from the live module: run with the
seed's python (see tests/test_compat_api.py), e.g.

    . /work/shared/peers/seed_env.sh; "$SEED_PYTHON" python/tests/compat/seed_api.py > python/tests/compat/seed_api.json

{"classes": {cls: {"doc": str|None, "members": {name: {"kind": "method"|"static"|"property",
"doc": the full __doc__ (pybind11: signature line, blank line, text)}}}}, "constants": {name: int}}
"""
import json
import re
import sys

import memcache_hybrid as m

CLASSES = ["DistributedObjectStore", "KeyInfo", "LocalConfig", "MetaConfig", "MetaService", "ReplicateConfig"]
CONSTANTS = ["L2G", "G2L", "G2H", "H2G", "AUTO"]


def describe(cls):
    members = {}
    for name, raw in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(raw, property):
            kind = "property"
        elif isinstance(raw, staticmethod):
            kind = "static"
        elif callable(raw):
            kind = "method"
        else:
            continue
        doc = getattr(cls, name).__doc__
        if doc:  # default objects print as <_pymmc.ReplicateConfig object at 0x7ff8...>
            doc = re.sub(r" object at 0x[0-9a-fA-F]+>", " object>", doc)
        members[name] = {"kind": kind, "doc": doc}
    return {"doc": cls.__doc__, "members": members}


def surface(mod):
    return {
        "classes": {c: describe(getattr(mod, c)) for c in CLASSES},
        "constants": {c: int(getattr(mod, c)) for c in CONSTANTS},
    }


if __name__ == "__main__":
    json.dump(surface(m), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
