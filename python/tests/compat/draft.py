"""Prints differences.toml entries (why = "TODO") for the differences between ours' answers and
1.3.0's that the table does not list yet, and the missing API names not yet listed.

    MMC_COMPAT_OURS_OUT=/tmp/ours.json python3 -m pytest -q python/tests/test_compat_seed.py
    python3 python/tests/compat/draft.py /tmp/ours.json [THEIRS.json]
"""
import json
import pathlib
import sys

try:
    import tomllib
except ImportError:
    import tomli as tomllib

HERE = pathlib.Path(__file__).resolve().parent


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (json.dumps(k), toml_value(x)) for k, x in v.items()) + " }"
    raise TypeError(v)


def main():
    ours = json.loads(pathlib.Path(sys.argv[1]).read_text())
    theirs = json.loads(pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else HERE / "seed_answers.json").read_text())
    with open(HERE / "differences.toml", "rb") as f:
        t = tomllib.load(f)
    nyi = set(t.get("not_yet_implemented", {}).get("names", []))
    table = t.get("differences", {})
    new_missing = set()
    for name in sorted(set(ours["results"]) | set(theirs["results"])):
        o, th = ours["results"].get(name, "<absent>"), theirs["results"].get(name, "<absent>")
        if o == th:
            continue
        missing = set(ours["missing"].get(name, []))
        if missing:
            new_missing |= missing - nyi
            continue
        if name in table and table[name].get("ours") == o and table[name].get("theirs") == th:
            continue
        print("[differences.%s]\nours = %s\ntheirs = %s\nwhy = \"TODO\"\n" % (json.dumps(name), toml_value(o), toml_value(th)))
    if new_missing:
        print("# not yet implemented, not listed:\n" + "\n".join('  "%s",' % n for n in sorted(new_missing)))


if __name__ == "__main__":
    main()
