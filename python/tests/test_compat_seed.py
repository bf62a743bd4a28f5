"""The differential test against memcache-hybrid 1.3.0 (the seed): `compat/calls.py` runs one
scripted sequence of calls over 1.3.0's whole Python API on ours (a real pool: a meta service
from MetaService.main(), the client contributing DRAM, as the seed's run does) and on the seed,
and every answer must be the same or listed in `compat/differences.toml`.

The seed's answers come from a fresh run when the seed is installed (`PEERS_DIR`, default
~/.cache/memcache-peers, set up by /work/shared/peers/setup.sh; the peers' scripts in
/work/shared/peers or ../shared/peers beside the repository), else from the checked-in
`compat/seed_answers.json`. `MMC_REQUIRE_SEED=1` makes a missing seed a failure.
`MMC_COMPAT_OURS_OUT=FILE` keeps ours' answers (compat/draft.py FILE prints the table entries
of the differences not yet listed). `MMC_UPDATE_SEED_ANSWERS=1` rewrites seed_answers.json from the fresh run (it fails otherwise
when they differ), `MMC_UPDATE_COMPAT_README=1` rewrites the README's compatibility table from
differences.toml (it fails otherwise when they differ).
"""

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import warnings

import pytest

from conftest import meta_service

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

HERE = pathlib.Path(__file__).resolve().parent
COMPAT = HERE / "compat"
CALLS = COMPAT / "calls.py"
SEED_ANSWERS = COMPAT / "seed_answers.json"
TABLE = COMPAT / "differences.toml"
ROOT = HERE.parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- compat-table:begin -->", "<!-- compat-table:end -->"


def seed_tools():
    """(peers dir, run_on_seed.sh) when the seed is installed, else None."""
    peers = pathlib.Path(os.environ.get("PEERS_DIR") or pathlib.Path.home() / ".cache" / "memcache-peers")
    if not (peers / "venv-seed" / "bin" / "python").exists():
        return None
    for shared in (pathlib.Path("/work/shared/peers"), ROOT.parent / "shared" / "peers"):
        if (shared / "run_on_seed.sh").exists():
            return peers, shared / "run_on_seed.sh"
    return None


def load_table():
    with open(TABLE, "rb") as f:
        t = tomllib.load(f)
    return set(t.get("not_yet_implemented", {}).get("names", [])), t.get("differences", {})


class SeedRun:
    """calls.py on the seed, started in the background (its MetaService takes a host-wide lock
    and its init takes seconds, so it runs while ours does)."""

    def __init__(self, tools, out):
        peers, script = tools
        self.out = out
        self.shm_before = set(shm_segments())
        self.log = open(str(out) + ".log", "w")
        self.tmp = out.parent / "tmp"  # the run's folder goes there (seed_meta_start: $TMPDIR)
        self.tmp.mkdir()
        env = dict(os.environ, PEERS_DIR=str(peers), TMPDIR=str(self.tmp))
        for k in list(env):
            if k.startswith("MMC_"):  # ours' configuration; the script sets the seed's own
                del env[k]
        self.proc = subprocess.Popen(["bash", str(script), str(CALLS), str(out)], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def answers(self, timeout=120):
        """The seed's answers, or None when another seed MetaService held the host-wide lock
        all along (unless MMC_REQUIRE_SEED=1)."""
        rc = self.proc.wait(timeout=timeout)
        self.log.close()
        if rc != 0 or not self.out.exists():
            log = pathlib.Path(str(self.out) + ".log").read_text(errors="replace")
            if "lock file is locked" in log and os.environ.get("MMC_REQUIRE_SEED") != "1":
                warnings.warn("another seed MetaService held /tmp/mmc_meta_service.lock: "
                              "compared with the checked-in answers")
                return None
            pytest.fail("calls.py on the seed exited with %s:\n%s" % (rc, log[-3000:]))
        return json.loads(self.out.read_text())

    def stop(self):
        """Ends an unfinished run and cleans up after it as run_on_seed.sh would: the seed's
        processes ignore SIGTERM, so its process group is killed, then the shm segments the run
        made and its run folder are removed."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            for name in set(shm_segments()) - self.shm_before:
                with contextlib.suppress(OSError):
                    os.unlink("/dev/shm/" + name)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if not self.log.closed:
            self.log.close()


def shm_segments():
    return [n for n in os.listdir("/dev/shm") if n.startswith("memfabric_hybrid_")] if os.path.isdir("/dev/shm") else []


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    tools = seed_tools()
    if tools is None:
        if os.environ.get("MMC_REQUIRE_SEED") == "1":
            pytest.fail("MMC_REQUIRE_SEED=1 but the seed is not installed (PEERS_DIR / "
                        "~/.cache/memcache-peers and /work/shared/peers or ../shared/peers)")
        yield None
        return
    run = SeedRun(tools, tmp_path_factory.mktemp("seed") / "answers.json")
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="module")
def answers(seed_run, tmp_path_factory):
    """(ours, theirs, whether theirs is a fresh run)."""
    out = tmp_path_factory.mktemp("ours") / "answers.json"
    with meta_service() as url:
        env = dict(os.environ, MMC_CLIENT_DISCOVERY_URL=url, MMC_CLIENT_LOCAL__DRAM_SIZE=str(256 << 20))
        env.pop("MMC_CLIENT_CONFIG", None)
        p = subprocess.Popen([sys.executable, str(CALLS), str(out)], env=env, cwd=str(out.parent),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            log, _ = p.communicate(timeout=120)
        finally:  # calls.py and the clients it starts
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert p.returncode == 0 and out.exists(), "calls.py on ours exited with %s:\n%s" % (p.returncode, log[-3000:])
    ours = json.loads(out.read_text())
    if os.environ.get("MMC_COMPAT_OURS_OUT"):  # for writing differences.toml entries
        pathlib.Path(os.environ["MMC_COMPAT_OURS_OUT"]).write_text(out.read_text())
    theirs = seed_run.answers() if seed_run is not None else None
    if theirs is None:
        return ours, json.loads(SEED_ANSWERS.read_text()), False
    return ours, theirs, True


def test_seed_answers_file_is_current(answers):
    """The checked-in answers are the seed's answers to today's calls.py."""
    _, theirs, fresh = answers
    if not fresh:
        pytest.skip("the seed is not installed: the checked-in answers are the reference")
    stored = json.loads(SEED_ANSWERS.read_text())
    if stored == theirs:
        return
    if os.environ.get("MMC_UPDATE_SEED_ANSWERS") == "1":
        SEED_ANSWERS.write_text(json.dumps(theirs, indent=1, sort_keys=True) + "\n")
        return
    changed = sorted(k for k in set(stored["results"]) | set(theirs["results"])
                     if stored["results"].get(k, "<absent>") != theirs["results"].get(k, "<absent>"))
    pytest.fail("compat/seed_answers.json is out of date (%d calls: %s); rerun with "
                "MMC_UPDATE_SEED_ANSWERS=1" % (len(changed), ", ".join(changed[:20])))


def api_exists(name):
    """Whether ours has the API name `module.X` or `Class.member`."""
    import memcache_hybrid

    owner, _, member = name.partition(".")
    if owner == "module":
        return hasattr(memcache_hybrid, member)
    cls = getattr(memcache_hybrid, owner, None)
    return cls is not None and hasattr(cls, member)


def compare(ours, theirs, nyi, table):
    """The problems: differences not in the table, table entries that are no longer true."""
    problems = []
    o_res, t_res, o_missing = ours["results"], theirs["results"], ours["missing"]
    for name in sorted(set(o_res) | set(t_res)):
        o, t = o_res.get(name, "<absent>"), t_res.get(name, "<absent>")
        entry = table.get(name)
        if o == t:
            if entry is not None:
                problems.append("%r: no longer differs (both %s): remove it from differences.toml"
                                % (name, json.dumps(o)))
            continue
        missing = set(o_missing.get(name, []))
        if missing:
            unlisted = sorted(missing - nyi)
            if unlisted:
                problems.append("%r: ours lacks %s: add to [not_yet_implemented] or implement"
                                % (name, ", ".join(unlisted)))
            continue  # explained by a method not yet implemented
        if entry is None:
            problems.append("%r: ours %s, 1.3.0 %s: not in differences.toml"
                            % (name, json.dumps(o), json.dumps(t)))
        elif entry.get("ours") != o or entry.get("theirs") != t:
            problems.append("%r: differences.toml says ours %s / 1.3.0 %s, now ours %s / 1.3.0 %s"
                            % (name, json.dumps(entry.get("ours")), json.dumps(entry.get("theirs")),
                               json.dumps(o), json.dumps(t)))
    for name in sorted(set(table) - set(o_res) - set(t_res)):
        problems.append("%r: in differences.toml but no call has that name" % name)
    return problems


def test_same_answers_as_seed(answers):
    ours, theirs, _ = answers
    nyi, table = load_table()
    problems = compare(ours, theirs, nyi, table)
    assert not problems, "%d problems:\n" % len(problems) + "\n".join(problems)


def test_not_yet_implemented_is_true():
    """Every name listed as not yet implemented is still missing on ours: remove it from the
    list when it lands."""
    nyi, _ = load_table()
    landed = sorted(n for n in nyi if api_exists(n))
    assert not landed, "now implemented, remove from [not_yet_implemented] in differences.toml: " + ", ".join(landed)


def readme_table():
    """The README's mirror of differences.toml: the differences, then the signature differences
    and the names not yet implemented."""
    with open(TABLE, "rb") as f:
        t = tomllib.load(f)

    def cell(text):
        return text.replace("|", "\\|").replace("\n", " ")

    def code(v):
        return "`%s`" % cell(json.dumps(v))

    lines = [BEGIN, "| Call (`python/tests/compat/calls.py`) | Ours | 1.3.0 | Why |", "|---|---|---|---|"]
    for name, e in sorted(t.get("differences", {}).items()):
        lines.append("| %s | %s | %s | %s |" % (cell(name), code(e["ours"]), code(e["theirs"]), cell(e["why"])))
    api = t.get("api_differences", {})
    if api:
        lines += ["", "| Signature or docstring (`python/tests/test_compat_api.py`) | Differs | Why |", "|---|---|---|"]
        for name, e in sorted(api.items()):
            lines.append("| `%s` | %s | %s |" % (name, cell("; ".join(e["problems"])), cell(e["why"])))
    nyi = t.get("not_yet_implemented", {}).get("names", [])
    if nyi:
        lines += ["", "Not yet implemented (calls that reach them differ): " + ", ".join("`%s`" % n for n in sorted(nyi)) + "."]
    lines.append(END)
    return "\n".join(lines)


def test_readme_mirrors_differences():
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lacks the compatibility table markers"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    want = head + readme_table() + tail
    if want == text:
        return
    if os.environ.get("MMC_UPDATE_COMPAT_README") == "1":
        README.write_text(want)
        return
    pytest.fail("README.md's compatibility table differs from compat/differences.toml; rerun "
                "with MMC_UPDATE_COMPAT_README=1")
