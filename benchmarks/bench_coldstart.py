"""Cold start: seconds from a new process to its first particle step, grid solve and
fpk command, with an empty kernel cache (first process) and with the cache the first
one left (second process).  Each case runs in its own ``python -c`` with
``XDG_CACHE_HOME`` pointed at a fresh folder.

    python benchmarks/bench_coldstart.py [--quick]
    python benchmarks/bench_coldstart.py --verify 2      # the first fpk verify --quick of a fresh tree
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

from _results import write_table

CASES = {
    "Langevin, eight Gaussians (first step)": """
        U = E.GaussianMixture.ring()
        particles.langevin(U, np.zeros((10, 2)), 1e-3, 1, seed=0)""",
    "Langevin + RK4 flow, composed energy (first steps)": """
        U = E.GaussianMixture.paper_A() + E.softmin(E.GaussianMixture.paper_B(), E.Quadratic(np.eye(2)))
        particles.langevin(U, np.zeros((10, 2)), 1e-3, 1, seed=0)
        particles.gradient_flow(U, np.zeros((10, 2)), 1e-3, 1, method="rk4", track_logdensity=True)""",
    "Lagrangian continuity, eight Gaussians (8^2 cells)": """
        Continuity(E.GaussianMixture.ring(), Grid([(-8, 8)] * 2, 8), method="lagrangian").solve(
            Dn.Gaussian([0, 0], 1.0), [0, 0.1])""",
}
PRELUDE = """
import time, warnings
t0 = time.perf_counter()
import numpy as np, particles
from fokkerplanck import energies as E, Grid, Continuity, densities as Dn
warnings.simplefilter("ignore")
t1 = time.perf_counter()
"""


def run(body: str, cache: str) -> tuple[float, float]:
    code = PRELUDE + textwrap.dedent(body) + "\nprint(t1 - t0, time.perf_counter() - t1)\n"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, XDG_CACHE_HOME=cache),
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def verify_row(jobs: int, rev: str = "HEAD", install: bool = False) -> str:
    """``fpk verify --quick`` as a new user first meets it: the tree of commit ``rev`` in a
    fresh folder (no ``__pycache__``, so numba's own caches are empty too), an empty kernel
    cache, ``--jobs`` as given; then the same again with the caches the first run left.
    With ``install`` the first run is the README's whole first command, ``pip install -e .
    && python -m fokkerplanck``, into a new virtual environment that sees this Python's
    packages (the dependencies are present: their download is not timed)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        src, cache = os.path.join(tmp, "src"), os.path.join(tmp, "cache")
        os.makedirs(src)
        os.makedirs(cache, mode=0o700)
        tree = subprocess.run(["git", "archive", rev], cwd=root, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=tree, check=True)
        env = dict(os.environ, XDG_CACHE_HOME=cache, PYTHONPATH=src)
        python, pip_s = sys.executable, 0.0
        if install:
            venv = os.path.join(tmp, "venv")
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
            python = os.path.join(venv, "bin", "python")
            t0 = time.perf_counter()
            subprocess.run([python, "-m", "pip", "install", "-q", "-e", "."], cwd=src, env=env, check=True,
                           capture_output=True)
            pip_s = time.perf_counter() - t0
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            res = subprocess.run([python, "-m", "fokkerplanck", "verify", "--quick", "--no-report",
                                  "--jobs", str(jobs)], cwd=src, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if res.returncode != 0:
                raise RuntimeError(res.stdout[-2000:] + res.stderr[-2000:])
        tally = res.stdout.strip().splitlines()[-1]
    name = "HEAD" if rev == "HEAD" else f"commit {rev}"
    first = f"{pip_s:.0f} + {times[0]:.0f} = **{pip_s + times[0]:.0f}**" if install else f"{times[0]:.0f}"
    return (f"| {name}: fpk verify --quick --jobs {jobs} ({tally}) | {'pip install -e . + ' if install else ''}"
            f"first run | {first} | {times[1]:.0f} |")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one repetition of the warm process instead of three")
    ap.add_argument("--verify", type=int, nargs="*", metavar="JOBS",
                    help="only the first fpk verify --quick of a fresh copy of the tree, with these --jobs "
                         "(results/coldstart_verify.md; minutes)")
    ap.add_argument("--install", action="store_true",
                    help="with --verify: time pip install -e . into a new virtual environment first")
    ap.add_argument("--baseline-rev", metavar="REV",
                    help="with --verify: the same rows for an older commit too, in the same run")
    args = ap.parse_args(argv)
    if args.verify is not None:
        cmd = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
        lines = ["# First fpk verify --quick on a new machine", "",
                 f"`python benchmarks/bench_coldstart.py {cmd}`: the committed tree in a fresh folder (numba's "
                 "__pycache__ empty too) with an empty kernel cache, then again with the caches it left. Seconds of "
                 "wall time, whole command; with --install the first run includes `pip install -e .` into a new "
                 "virtual environment that sees this Python's packages (dependencies present, not downloaded).", "",
                 "| tree and command | first run is | first run (s) | second run (s) |", "|---|---|---|---|"]
        revs = ["HEAD"] + ([args.baseline_rev] if args.baseline_rev else [])
        for jobs in args.verify or [2]:
            for rev in revs:
                lines.append(verify_row(jobs, rev, args.install))
                print(lines[-1], file=sys.stderr)
        write_table("coldstart_verify", lines, False)
        return
    lines = ["# Cold start (seconds after imports; imports separately)", "",
             "`python benchmarks/bench_coldstart.py`: each case in a new process with an empty kernel cache,",
             "then in new processes that find the cache the first one left (best of the repeats).", "",
             "| case | imports | empty cache | cached | ratio |", "|---|---|---|---|---|"]
    for name, body in CASES.items():
        with tempfile.TemporaryDirectory() as cache:
            imp, cold = run(body, cache)
            warm = min(run(body, cache)[1] for _ in range(1 if args.quick else 3))
        lines.append(f"| {name} | {imp:.2f} | {cold:.2f} | {warm:.2f} | {cold / warm:.0f}x |")
    write_table("coldstart", lines, args.quick)


if __name__ == "__main__":
    main()
