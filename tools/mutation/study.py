"""Mutation study: plant each bug of ``mutants.py`` in a copy of the repository, one at a time,
and record which tests and which ``fpk verify --quick`` checks kill it.

    python tools/mutation/study.py                 # every mutant (about an hour on 2 cores)
    python tools/mutation/study.py --only ID ...   # some of them
    python tools/mutation/study.py --list          # the mutants, without running anything

For each mutant, in a fresh copy of the committed tree (``git archive HEAD``):

1. the test files named by the mutant run first (``-m "not slow"``); a mutant they miss
   then meets the whole default tier (``python -m pytest -q -n 2``): a test failure or a
   collection error kills it, a pass means it survived the default tier;
2. ``fpk verify --quick --only <groups>`` runs the verify groups that cover the mutated
   code (a failed check or an error kills it); a mutant no group covers is "n/a" for verify.

A run that exceeds its time limit is neither: its outcome is "time-out", counted apart from
the kills and the survivors (on a loaded machine a slow run is no evidence against the
mutant).  ``--only ID ... --rerun`` runs such mutants again on a quieter machine.

Results are appended to ``results.jsonl`` as each mutant ends (a study that is cut off
resumes where it stopped; ``--rerun`` runs the named mutants again), and ``results.md``
holds the table and the kill rates.  The unmutated tree is run first as a baseline: the
study refuses to run when the baseline fails, since every mutant would look killed.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from mutants import MUTANTS, Mutant

NAMED_TIMEOUT = 600     # seconds for the mutant's named test files
TEST_TIMEOUT = 900      # seconds for the whole default tier (about 4 minutes on 2 idle cores)
VERIFY_TIMEOUT = 300    # one verify group (each takes under a minute on 2 idle cores)
TIMEOUT = "time-out"    # the outcome of a run cut off at its limit: not a kill, not a survival
FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
CHECK_FAIL = re.compile(r"^\s+(.+?)\s{2,}.*\bFAIL\*?\s*$", re.MULTILINE)


def area(m: Mutant) -> str:
    return m.id.split("-")[0]


def copy_tree(dest: pathlib.Path) -> str:
    """The committed tree at HEAD in ``dest``; returns the commit."""
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return rev


def env_for(tree: pathlib.Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)          # the copy's packages before the installed (editable) ones
    env.pop("FPK_REQUIRE_EXTRAS", None)
    return env


def run(cmd, tree, timeout) -> tuple[str, str]:
    """``(outcome, output)``: outcome "pass", "fail" (a failure, an error, or a collection
    error) or "timeout"."""
    # its own process group, killed whole on a time-out or an interrupt: pytest-xdist workers
    # and the children of fault tests must not outlive the mutant they ran on
    p = subprocess.Popen(cmd, cwd=tree, env=env_for(tree), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except BaseException as exc:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            return "timeout", out
        raise
    return ("pass" if p.returncode == 0 else "fail"), out


def pytest_cmd(files=(), *, full=False):
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-x", "-n", "2"]
    return cmd if full else cmd + list(files)


def killers_of(output: str, pattern=FAILED) -> list[str]:
    return list(dict.fromkeys(pattern.findall(output)))[:3]


def test_mutant(tree: pathlib.Path, m: Mutant, full: bool = True) -> dict:
    """``tests``: "killed", "survived" (the default tier passed), "survived named tests" (only
    the named files ran) or "time-out" (a run hit its limit before any test failed)."""
    t0 = time.perf_counter()
    outcome, out = run(pytest_cmd(m.tests), tree, NAMED_TIMEOUT)
    stage = "named tests"
    if outcome == "pass" and full:
        outcome, out = run(pytest_cmd(full=True), tree, TEST_TIMEOUT)
        stage = "default tier"
    survived = "survived" if stage == "default tier" else "survived named tests"
    status = {"pass": survived, "fail": "killed", "timeout": TIMEOUT}[outcome]
    res = {"tests": status, "tests_stage": stage, "tests_by": killers_of(out) if outcome == "fail" else [],
           "tests_seconds": round(time.perf_counter() - t0, 1)}
    if outcome == "fail" and not res["tests_by"]:
        res["tests_by"] = [_last_line(out)]
    if outcome == "timeout":
        res["tests_note"] = f"{stage} cut off after {NAMED_TIMEOUT if stage == 'named tests' else TEST_TIMEOUT} s"
    return res


def verify_mutant(tree: pathlib.Path, m: Mutant) -> dict:
    """``fpk verify --quick`` on the mutant's groups, one group at a time, stopping at the
    first group with a failed check (or an error): that group killed it.  A group cut off at
    its time limit kills nothing; the next groups still run, and the mutant is "time-out"
    when none of them kills it."""
    if not m.verify:
        return {"verify": "n/a", "verify_by": []}
    t0 = time.perf_counter()
    report = tree / "_verify_report"
    cut_off = []
    for group in m.verify:
        shutil.rmtree(report, ignore_errors=True)
        outcome, out = run([sys.executable, "-m", "fokkerplanck", "verify", "--quick", "--report", str(report),
                            "--only", group], tree, VERIFY_TIMEOUT)
        if outcome == "timeout":
            cut_off.append(group)
        if outcome != "fail":
            continue
        try:   # the failed checks by name (the table may wrap long names)
            checks = json.loads((report / "checks.json").read_text())
            by = [f"{c['group']}: {c['name']}" for c in checks if not c["passed"]][:3]
        except (OSError, ValueError, KeyError):
            by = []
        by = by or killers_of(out, CHECK_FAIL) or [f"{group}: {_last_line(out)}"]
        return {"verify": "killed", "verify_by": by, "verify_seconds": round(time.perf_counter() - t0, 1)}
    res = {"verify": TIMEOUT if cut_off else "survived", "verify_by": [],
           "verify_seconds": round(time.perf_counter() - t0, 1)}
    if cut_off:
        res["verify_note"] = f"cut off after {VERIFY_TIMEOUT} s: {', '.join(cut_off)}"
    return res


def _last_line(out: str) -> str:
    lines = [ln.strip() for ln in out.strip().splitlines() if ln.strip()]
    return lines[-1][:120] if lines else "(no output)"


def apply(tree: pathlib.Path, m: Mutant) -> str:
    """Plant ``m`` in ``tree``; returns the original text to restore."""
    f = tree / m.path
    text = f.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"mutant {m.id}: its text occurs {text.count(m.old)} times in {m.path} (must be once); "
                         "update tools/mutation/mutants.py to the current code")
    f.write_text(text.replace(m.old, m.new))
    return text


def baseline(tree: pathlib.Path, mutants) -> None:
    files = sorted({f for m in mutants for f in m.tests})
    groups = sorted({g for m in mutants for g in m.verify})
    print(f"baseline: {len(files)} test files, verify groups {groups}", flush=True)
    outcome, out = run(pytest_cmd(files), tree, 2 * TEST_TIMEOUT)
    if outcome != "pass":
        raise SystemExit(f"the unmutated tree fails its tests ({outcome}); fix that first:\n{out[-3000:]}")
    if groups:
        outcome, out = run([sys.executable, "-m", "fokkerplanck", "verify", "--quick", "--no-report", "--only",
                            *groups], tree, 2 * VERIFY_TIMEOUT)
        if outcome != "pass":
            raise SystemExit(f"the unmutated tree fails fpk verify ({outcome}); fix that first:\n{out[-3000:]}")


def _normalised(r: dict) -> dict:
    """A row of an earlier study that counted a time-out as a kill (``*_by == ["time-out"]``)
    shown as the time-out it was."""
    r = dict(r)
    for part in ("tests", "verify"):
        if r.get(part) == "killed" and r.get(f"{part}_by") == ["time-out"]:
            r[part], r[f"{part}_by"] = TIMEOUT, []
    return r


def table(rows: list[dict], rev: str) -> str:
    rows = [_normalised(r) for r in rows]
    n = len(rows)
    kt = sum(r["tests"] == "killed" for r in rows)
    tt = sum(r["tests"] == TIMEOUT for r in rows)
    cov = [r for r in rows if r["verify"] in ("killed", "survived", TIMEOUT)]   # not "n/a" (no group) or "skipped"
    kv = sum(r["verify"] == "killed" for r in cov)
    tv = sum(r["verify"] == TIMEOUT for r in cov)
    pct = (lambda a, b: f"{100 * a / b:.0f} %" if b else "-")
    lines = [f"# Mutation study (tree {rev})", "",
             ("Produced by `python tools/mutation/study.py`: each planted bug of `tools/mutation/mutants.py` "
              "in a copy of the committed tree, one at a time.  A run cut off at its time limit is a "
              "time-out: it counts neither as a kill nor as a survival, and stays in the denominators."), "",
             f"- mutants: {n}",
             f"- killed by the default test tier: {kt} of {n} ({pct(kt, n)}); time-outs: {tt}",
             (f"- killed by `fpk verify --quick` (its groups covering the code): {kv} of {len(cov)} covered "
              f"({pct(kv, len(cov))}); time-outs: {tv}; {n - len(cov)} mutants lie in code no verify group covers"),
             "",
             "| mutant | the bug | tests | killed by (first) | verify | killed by (first) |",
             "|---|---|---|---|---|---|"]
    def by(r, part):
        """The first killers (at most two), or for a time-out what was cut off."""
        text = "<br>".join(f"`{x}`" for x in r[f"{part}_by"][:2])
        if not text and r[part] == TIMEOUT:
            text = r.get(f"{part}_note", "")
        return text.replace("|", "\\|")

    for r in sorted(rows, key=lambda r: r["id"]):
        lines.append(f"| `{r['id']}` | {r['what']} | {r['tests']} | {by(r, 'tests')} | {r['verify']} | {by(r, 'verify')} |")
    by_area = {}
    for r in rows:
        a = by_area.setdefault(r["id"].split("-")[0], [0, 0, 0, 0, 0])
        a[0] += 1
        a[1] += r["tests"] == "killed"
        a[2] += r["verify"] in ("killed", "survived", TIMEOUT)
        a[3] += r["verify"] == "killed"
        a[4] += (r["tests"] == TIMEOUT) + (r["verify"] == TIMEOUT)
    lines += ["", "| area | mutants | killed by tests | covered by verify | killed by verify | time-outs |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v[0]} | {v[1]} | {v[2]} | {v[3]} | {v[4]} |" for k, v in sorted(by_area.items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    ap.add_argument("--rerun", action="store_true", help="run mutants again that results.jsonl already holds")
    ap.add_argument("--list", action="store_true", help="list the mutants and stop")
    ap.add_argument("--table", action="store_true", help="write results.md from results.jsonl and stop")
    ap.add_argument("--no-verify", action="store_true", help="skip the fpk verify part")
    ap.add_argument("--named-only", action="store_true",
                    help="run only each mutant's named test files (a first pass; rerun its survivors without it)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run (when it just passed)")
    ap.add_argument("--out", type=pathlib.Path, default=HERE / "results", help="folder for results.jsonl and .md")
    args = ap.parse_args(argv)
    # A study started in the background (nohup, "&") inherits SIGINT ignored, and an ignored signal
    # stays ignored in its children: the tests of Ctrl-C handling would then fail on every mutant,
    # false kills.  With Python's own handler here the test runs start with the default disposition
    # (and Ctrl-C or kill -INT stops the study, cleaning its copy).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ids = [m.id for m in MUTANTS]
    if len(set(ids)) != len(ids):
        raise SystemExit("mutant ids must be unique")
    chosen = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - set(ids))
        if unknown:
            raise SystemExit(f"unknown mutant(s): {unknown}")
        chosen = [m for m in MUTANTS if m.id in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.id:38s} {m.path}: {m.what}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "results.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[r["id"]] = r
    todo = [] if args.table else [m for m in chosen if args.rerun or m.id not in done]
    with tempfile.TemporaryDirectory(prefix="fpk-mutants-") as tmp:
        if not todo:
            return _write_table(args.out, done)
        tree = pathlib.Path(tmp)
        rev = copy_tree(tree)
        # a mutant whose text the committed tree no longer holds once is left out, and said so,
        # before anything runs (not an abort halfway through the study)
        stale = [m for m in todo if (tree / m.path).read_text().count(m.old) != 1]
        if stale:
            print(f"left out ({len(stale)}: their text does not occur exactly once at {rev}; update "
                  f"tools/mutation/mutants.py): {', '.join(m.id for m in stale)}", flush=True)
            todo = [m for m in todo if m not in stale]
            if not todo:
                return _write_table(args.out, done)
        if todo and not args.no_baseline:
            baseline(tree, todo)
        for i, m in enumerate(todo, 1):
            original = apply(tree, m)
            try:
                r = {"id": m.id, "path": m.path, "what": m.what, "rev": rev}
                r.update(test_mutant(tree, m, full=not args.named_only))
                if args.no_verify:   # keep what an earlier run found
                    old = done.get(m.id, {})
                    r.update({k: old[k] for k in ("verify", "verify_by", "verify_seconds") if k in old}
                             or {"verify": "skipped", "verify_by": []})
                else:
                    r.update(verify_mutant(tree, m))
            finally:
                (tree / m.path).write_text(original)
                shutil.rmtree(tree / ".pytest_cache", ignore_errors=True)
            done[m.id] = r
            with log.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"[{i}/{len(todo)}] {m.id}: tests {r['tests']} {r['tests_by'][:1]}, verify {r['verify']} "
                  f"{r['verify_by'][:1]}", flush=True)
    return _write_table(args.out, done)


def _write_table(out: pathlib.Path, done: dict) -> int:
    rows = [done[m.id] for m in MUTANTS if m.id in done]
    revs = sorted({r["rev"] for r in rows})
    (out / "results.md").write_text(table(rows, ", ".join(revs) or "?"))
    print(f"wrote {out / 'results.md'} ({len(rows)} mutants)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
