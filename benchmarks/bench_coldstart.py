"""Cold start: seconds from a new process to its first particle step, grid solve and
fpk command, with an empty kernel cache (first process) and with the cache the first
one left (second process).  Each case runs in its own ``python -c`` with
``XDG_CACHE_HOME`` pointed at a fresh folder.

    python benchmarks/bench_coldstart.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap

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


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one repetition of the warm process instead of three")
    args = ap.parse_args(argv)
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
