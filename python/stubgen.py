"""Writes memcache_hybrid/_pymmc.pyi from the installed extension: every class, member,
parameter and docstring as the module has them, with the types below.

    python3 -m pip install --break-system-packages ./python && python3 python/stubgen.py

tests/test_stubs.py checks that the stub and the module agree.
"""

import inspect
import pathlib
import sys
import textwrap

# The installed package, not the sources next to this script.
sys.path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != pathlib.Path(__file__).parent]
from memcache_hybrid import _pymmc  # noqa: E402

HEADER = '''"""Type stubs of the compiled extension, with its own docstrings (tests/test_stubs.py keeps
them equal; python/stubgen.py writes this file)."""

from enum import IntEnum
from typing import List, Sequence, Union

from typing_extensions import Buffer

# Addresses or sizes: ints, or an array of 64-bit integers (numpy uint64 / int64).
Ints = Union[Sequence[int], Buffer]
IntRows = Union[Sequence[Ints], Buffer]

__version__: str
'''

# The type of each parameter by name; where a name means different things, by method.
PARAM_TYPES = {
    "key": "str",
    "arg0": "str",
    "keys": "List[str]",
    "values": "List[Buffer]",
    "buf": "Buffer",
    "buffer_ptr": "int",
    "size": "int",
    "device_id": "int",
    "init_bm": "bool",
    "direct": "int",
    "flag": "int",
    "flags": "int",
    "media": "int",
    "src_media": "int",
    "dst_media": "int",
    "leaseTtlMs": "int",
    "res": "List[int]",
    "gva_ptrs": "Ints",
    "replicateConfig": "ReplicateConfig",
}
# `setup`'s argument, by class.
CONFIG_TYPES = {"DistributedObjectStore": "LocalConfig", "MetaService": "MetaConfig"}
LAYERED = {"batch_put_from_layers", "batch_get_into_layers", "batch_copy_layers"}
PER_KEY = {"put_from_layers", "get_into_layers", "batch_put_from", "batch_get_into", "batch_copy"}
RETURNS = {
    "get": "bytes",
    "get_batch": "List[bytes]",
    "get_key_info": "KeyInfo",
    "batch_get_key_info": "List[KeyInfo]",
    "loc_list": "List[int]",
    "type_list": "List[int]",
    "gva_list": "List[int]",
    "str": "str",
    "__str__": "str",
}
LIST_OF_CODES = {
    "batch_put_from", "batch_get_into", "batch_put_from_layers", "batch_get_into_layers",
    "remove_batch", "batch_is_exist", "batch_alloc", "batch_write_finish", "batch_add_lease",
}
MULTI_WORD_ARG0 = {"remove_batch", "get_batch"}


def param_type(cls, method, name):
    if name == "config":
        return CONFIG_TYPES.get(cls.__name__, "object")
    if name in ("buffer_ptrs", "sizes"):
        if method in LAYERED:
            return "IntRows"
        return "Ints"
    if name == "arg0" and method in MULTI_WORD_ARG0:
        return "List[str]"
    return PARAM_TYPES.get(name, "object")


def docstring(doc, indent):
    doc = inspect.cleandoc(doc or "")
    if "\n" not in doc:
        return indent + '"""%s"""\n' % doc
    return indent + '"""' + textwrap.indent(doc, indent).lstrip() + "\n" + indent + '"""\n'


def render_default(value):
    if value is Ellipsis or not isinstance(value, (int, bool, str, float, type(None))):
        return "..."
    return repr(value)


def method_stub(cls, name, member, static):
    sig = inspect.signature(member)
    params = [] if static else ["self"]
    for p in sig.parameters.values():
        if p.name in ("self", "$self"):
            continue
        text = "%s: %s" % (p.name, param_type(cls, name, p.name))
        if p.default is not inspect.Parameter.empty:
            text += " = " + render_default(p.default)
        params.append(text)
    ret = RETURNS.get(name, "List[int]" if name in LIST_OF_CODES else "int")
    if name == "__init__":
        ret = "None"
    head = "    def %s(%s) -> %s:" % (name, ", ".join(params), ret)
    if len(head) > 96:
        inner = "".join("        %s,\n" % p for p in params)
        head = "    def %s(\n%s    ) -> %s:" % (name, inner, ret)
    out = "    @staticmethod\n" if static else ""
    if name == "__init__":
        return out + head + " ...\n"
    return out + head + "\n" + docstring(member.__doc__, "        ")


def class_stub(name):
    cls = getattr(_pymmc, name)
    values = {a: v for a, v in vars(cls).items() if isinstance(v, cls)}
    lines = ["class %s%s:\n" % (name, "(IntEnum)" if values else ""), docstring(cls.__doc__, "    ")]
    if values:  # an enum: its members and their numbers
        lines.append("\n")
        for attr, value in sorted(values.items(), key=lambda kv: int(kv[1])):
            lines.append("    %s = %d\n" % (attr, int(value)))
        return "".join(lines)
    lines.append("\n")
    try:
        sample = cls()
    except TypeError:  # no constructor: a value the module hands out
        sample = None
    # Sorted: the order of a pyclass's attributes is not stable from build to build.
    for attr, raw in sorted(vars(cls).items()):
        if not attr.startswith("_") and inspect.isdatadescriptor(raw):
            value = getattr(sample, attr, None)
            kind = {int: "int", bool: "bool", str: "str", list: "List[int]"}.get(type(value), "object")
            lines.append("    %s: %s\n" % (attr, kind))
            lines.append(docstring(raw.__doc__, "    "))
    if sample is not None:
        lines.append("    def __init__(self) -> None: ...\n")
    for attr, raw in vars(cls).items():
        if attr.startswith("_") or inspect.isdatadescriptor(raw):
            continue
        member = getattr(cls, attr)
        if callable(member):
            lines.append(method_stub(cls, attr, member, isinstance(raw, staticmethod)))
    return "".join(lines)


def main():
    import memcache_hybrid

    classes = [n for n in memcache_hybrid.__all__ if inspect.isclass(getattr(_pymmc, n))]
    constants = [n for n in memcache_hybrid.__all__ if n not in classes]
    parts = [HEADER]
    parts.append("\n" + "".join("%s: int\n" % c for c in constants))
    for name in classes:
        parts.append("\n" + class_stub(name))
    path = pathlib.Path(__file__).with_name("memcache_hybrid") / "_pymmc.pyi"
    path.write_text("".join(parts))
    print("wrote", path)


if __name__ == "__main__":
    main()
