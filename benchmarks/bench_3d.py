"""Exact 3D Fokker-Planck at 128^3 and 256^3: seconds, peak memory, operator products,
and the memory-bandwidth roofline of those products, all measured in the same run.

    python benchmarks/bench_3d.py                     # 128^3 and 256^3
    python benchmarks/bench_3d.py --sizes 128         # one size
    python benchmarks/bench_3d.py --baseline-rev REV  # also the code of commit REV (up to 128^3)

The problem: eight Gaussians (sigma 0.8) at the corners (+-3, +-3, +-3) of a cube, T = 1,
on [-8, 8]^3, from N(0, 4 I), exact (default tolerance 1e-14) to t = 1 at 11 output times.
Each case runs in its own process, so that its peak resident memory (``ru_maxrss``: what
the process really held, interpreter and compiled kernels included) is its own; kernels are
compiled by a first 32^3 solve in that process, outside the timing.

Roofline: every operator product must at least stream the stencil's arrays once (the
symmetric stencil: the vector, its diagonal and three face weights, a second vector read and
one written; the generator of the positive phase: three more weights).  A parallel sweep
doing only that is timed in the same process at the same size; the note gives products x
bytes / that bandwidth, and its fraction of the measured time.  No grid peer solves 3D at
these sizes in reasonable time (PEERS.md), so the roofline is the reference.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

from _results import write_table

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = textwrap.dedent("""
    import itertools, json, resource, sys, time, warnings
    import numba, numpy as np
    from fokkerplanck import FokkerPlanck, Grid, densities, energies as E

    n = int(sys.argv[1])
    U = E.GaussianMixture(np.array(list(itertools.product([-3.0, 3.0], repeat=3))), 0.8)
    rho0, times = densities.Gaussian([0.0, 0.0, 0.0], 4.0), np.linspace(0.0, 1.0, 11)

    def solve(cells):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # N(0, 4 I) keeps 3e-4 of its mass near the walls
            return FokkerPlanck(U, Grid([(-8.0, 8.0)] * 3, cells)).solve(rho0, times, progress=False)

    solve(32)  # compile
    t0 = time.perf_counter()
    tr = solve(n)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    info = tr.info
    mass = float(np.abs(tr.mass() - 1.0).max())
    kl = [float(k) for k in tr.kl()]
    del tr

    @numba.njit(parallel=True)
    def sweep(y, a, b, c, d, e, f):
        for i in numba.prange(y.size):
            y[i] = a[i] + b[i] + c[i] + d[i] + e[i] + f[i]

    arrs = [np.full(n**3, 1.0 + i) for i in range(7)]
    sweep(*arrs)
    best = 1e300
    for _ in range(5):
        t1 = time.perf_counter()
        sweep(*arrs)
        best = min(best, time.perf_counter() - t1)
    bandwidth = 7 * 8 * n**3 / best
    print(json.dumps(dict(n=n, seconds=seconds, peak=peak, mass_error=mass, kl=kl, bandwidth=bandwidth,
                          uniformisation=int(info.get("uniformisation_matvecs", 0)),
                          chebyshev=int(info.get("chebyshev_matvecs", 0)),
                          until=float(info.get("uniformisation_until", 0.0)))))
""")


def run(n: int, path: str) -> dict:
    env = dict(os.environ, PYTHONPATH=path)
    res = subprocess.run([sys.executable, "-c", CHILD, str(n)], env=env, capture_output=True, text=True, cwd=path)
    if res.returncode != 0:
        raise RuntimeError(f"{n}^3 at {path} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def roofline(r: dict) -> float:
    """Seconds the products take at the measured bandwidth: 11 arrays of n^3 doubles per
    uniformisation product (7 weights, the vector read and written, one accumulator row
    read and written, on average), 8 per Chebyshev product (4 weights, two vectors read,
    one written, and the block product's read of it)."""
    cells = r["n"] ** 3
    return (r["uniformisation"] * 11 + r["chebyshev"] * 8) * 8 * cells / r["bandwidth"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--baseline-rev", help="also run the code of this commit (git archive), same problem")
    ap.add_argument("--baseline-max", type=int, default=128,
                    help="the baseline only up to this many cells per axis (default %(default)s: older code "
                         "held about 15 GB at 256^3)")
    args = ap.parse_args(argv)
    trees = [("this tree", ROOT)]
    tmp = None
    if args.baseline_rev:
        tmp = tempfile.TemporaryDirectory()
        archive = subprocess.run(["git", "archive", args.baseline_rev, "fokkerplanck"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp.name], input=archive, check=True)
        trees.append((f"commit {args.baseline_rev}", tmp.name))
    lines = ["# Exact 3D Fokker-Planck: eight Gaussians at the corners of a cube", "",
             "`python benchmarks/bench_3d.py" + (f" --sizes {' '.join(map(str, args.sizes))}" if args.sizes != [128, 256]
                                                  else "") + (f" --baseline-rev {args.baseline_rev}" if args.baseline_rev
                                                              else "") + "`", "",
             "sigma 0.8 at (+-3, +-3, +-3), T = 1, [-8, 8]^3, from N(0, 4 I), exact (tol 1e-14) to t = 1 at 11 "
             "times. One process per row: peak resident memory is the whole process's. Roofline: the products "
             "at the bandwidth of a 7-array parallel sweep measured in the same process.", "",
             "| cells | code | seconds | peak memory (GiB) | products (uniformisation + Chebyshev) | roofline (s) "
             "| fraction of roofline | max mass error | KL(t = 1) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n in args.sizes:
        for name, path in trees:
            if path != ROOT and n > args.baseline_max:
                continue
            r = run(n, path)
            roof = roofline(r)
            lines.append(f"| {n}^3 | {name} | {r['seconds']:.1f} | {r['peak'] / 2**30:.2f} | "
                         f"{r['uniformisation']} + {r['chebyshev']} | {roof:.1f} | {roof / r['seconds']:.2f} | "
                         f"{r['mass_error']:.1e} | {r['kl'][-1]:.6f} |")
            print(lines[-1], file=sys.stderr)
    write_table("threed", lines, False)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
