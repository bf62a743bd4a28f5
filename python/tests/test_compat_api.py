"""Ours has the Python surface of memcache-hybrid 1.3.0: for every member of its classes
(DistributedObjectStore, KeyInfo, LocalConfig, MetaConfig, MetaService, ReplicateConfig) and
its module constants, the same name, the same parameter names in the same order, the same
defaults (from 1.3.0's pybind11 signature lines), and a docstring that begins with 1.3.0's.

1.3.0's surface comes from the live seed module when the seed is installed (see
test_compat_seed.py), else from the checked-in `compat/seed_api.json` (`compat/seed_api.py`
writes it). What ours lacks today is listed once, in `[not_yet_implemented]` of
`compat/differences.toml` (strict expected failures: remove a name when it lands); a member
that exists but differs on purpose is listed in `[api_differences]` there, with the reason.
"""

import ast
import inspect
import json
import os
import subprocess

import pytest

import memcache_hybrid
from test_compat_seed import COMPAT, load_table, seed_tools

SEED_API = COMPAT / "seed_api.json"


def live_seed_api():
    """1.3.0's surface read from the installed seed, or None."""
    tools = seed_tools()
    if tools is None:
        return None
    peers, script = tools
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMC_")}
    env["PEERS_DIR"] = str(peers)
    cmd = '. "%s" >/dev/null && exec "$SEED_PYTHON" "%s"' % (script.parent / "seed_env.sh", COMPAT / "seed_api.py")
    p = subprocess.run(["bash", "-c", cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("seed_api.py on the seed failed:\n" + p.stderr[-2000:])
    return json.loads(p.stdout)


STORED = json.loads(SEED_API.read_text())
LIVE = live_seed_api()
API = LIVE or STORED
NYI, _ = load_table()
with open(COMPAT / "differences.toml", "rb") as _f:
    try:
        import tomllib
    except ImportError:
        import tomli as tomllib
    API_DIFFERENCES = tomllib.load(_f).get("api_differences", {})


def split_top(s, sep=","):
    """Splits at `sep` outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([<{":
            depth += 1
        elif ch in ")]>}":
            depth -= 1
        if ch == sep and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [x.strip() for x in out]


def parse_pybind(doc):
    """'name(self: T, a: T = 1) -> R\\n\\ntext' -> ([(name, default text or None)], text)."""
    first, _, text = doc.partition("\n")
    start = first.index("(")
    depth = 0
    for i in range(start, len(first)):
        depth += first[i] in "([<{"
        depth -= first[i] in ")]>}"
        if depth == 0:
            break
    params = []
    for p in split_top(first[start + 1:i]):
        name, _, rest = p.partition(":")
        parts = split_top(rest, "=")
        params.append((name.strip(), parts[1].strip() if len(parts) > 1 else None))
    return params, text


def words(doc):
    return " ".join((doc or "").split())


def default_matches(seed_default, ours):
    if seed_default is None:
        return ours is inspect.Parameter.empty
    if seed_default.startswith("<"):  # an object, e.g. <_pymmc.ReplicateConfig object>
        cls = seed_default[1:].split()[0].rsplit(".", 1)[-1]
        return ours is Ellipsis or type(ours).__name__ == cls
    try:
        want = ast.literal_eval(seed_default)
    except ValueError:
        return repr(ours) == seed_default
    return ours == want and type(ours) is type(want)


def member_problems(cls_name, name, seed):
    """What differs between 1.3.0's member and ours, as a list of sentences."""
    cls = getattr(memcache_hybrid, cls_name)
    if not hasattr(cls, name):
        return ["missing"]
    ours = getattr(cls, name)
    problems = []
    doc = seed["doc"] or ""
    if seed["kind"] == "property":
        text = doc
    else:
        params, text = parse_pybind(doc)
        if params and params[0][0] == "self":
            params = params[1:]
        try:
            sig = inspect.signature(ours)
        except (TypeError, ValueError) as e:
            return problems + ["no signature (%s)" % e]
        mine = [p for p in sig.parameters.values() if p.name not in ("self", "$self")]
        seed_names = [n for n, _ in params]
        if [p.name for p in mine] != seed_names:
            problems.append("parameters %s, 1.3.0 %s" % ([p.name for p in mine], seed_names))
        else:
            for (n, d), p in zip(params, mine):
                if not default_matches(d, p.default):
                    problems.append("default of %s: %r, 1.3.0 %s" % (n, p.default, d))
    want = words(text)
    if want and not words(ours.__doc__).startswith(want):
        problems.append("docstring does not begin with 1.3.0's %r" % want)
    return problems


def members():
    for cls_name, c in sorted(API["classes"].items()):
        for name in sorted(c["members"]):
            yield cls_name, name


def expectation(cls_name, name):
    """A strict expected failure for a member listed as not yet implemented."""
    if "%s.%s" % (cls_name, name) in NYI or "module." + cls_name in NYI:
        return [pytest.mark.xfail(strict=True, reason="not yet implemented")]
    return []


@pytest.mark.parametrize(
    "cls_name,name",
    [pytest.param(c, n, id="%s.%s" % (c, n), marks=expectation(c, n)) for c, n in members()],
)
def test_member(cls_name, name):
    assert hasattr(memcache_hybrid, cls_name), "ours has no class %s" % cls_name
    seed = API["classes"][cls_name]["members"][name]
    problems = member_problems(cls_name, name, seed)
    full = "%s.%s" % (cls_name, name)
    listed = API_DIFFERENCES.get(full)
    if listed is not None:  # differs on purpose: exactly as listed, else the entry is stale
        assert problems == listed["problems"], "%s: [api_differences] lists %s, now %s" % (
            full, listed["problems"], problems)
        return
    assert not problems, "%s: %s" % (full, "; ".join(problems))


@pytest.mark.parametrize(
    "cls_name",
    [pytest.param(c, marks=[pytest.mark.xfail(strict=True, reason="not yet implemented")]
                  if "module." + c in NYI else []) for c in sorted(API["classes"])],
)
def test_class_docstring(cls_name):
    assert hasattr(memcache_hybrid, cls_name), "ours has no class %s" % cls_name
    want = words(API["classes"][cls_name]["doc"])
    problems = []
    if want and not words(getattr(memcache_hybrid, cls_name).__doc__).startswith(want):
        problems.append("docstring does not begin with 1.3.0's %r" % want)
    full = cls_name + ".__doc__"
    listed = API_DIFFERENCES.get(full)
    if listed is not None:
        assert problems == listed["problems"], "%s: [api_differences] lists %s, now %s" % (
            full, listed["problems"], problems)
        return
    assert not problems, "%s: %s" % (full, "; ".join(problems))


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason="not yet implemented")]
                  if "module." + n in NYI else []) for n in sorted(API["constants"])],
)
def test_constant(name):
    assert int(getattr(memcache_hybrid, name)) == API["constants"][name]


def test_stored_surface_is_current():
    """seed_api.json is what the live seed says (regenerate with compat/seed_api.py)."""
    if LIVE is None:
        pytest.skip("the seed is not installed: seed_api.json is the reference")
    assert LIVE == STORED, "compat/seed_api.json is out of date: rerun compat/seed_api.py on the seed"
