"""Spin lattices: jump-process particles against the samplers a user would write, and the
exact master equation at 2^16 and 2^20 states.

    python benchmarks/bench_discrete.py            # 32x32 Ising particles; exact 4x4 and 4x5
    python benchmarks/bench_discrete.py --quick    # smaller

Particles: Glauber (heat-bath) single-site updates of the 2D Ising model at T_c,
counted as spin-flip attempts (site updates) per second, after compilation:

* ours: ``particles.jumps.simulate`` (continuous time, counter-based Philox, all cores);
* numpy: every particle updates one random site per sweep step, vectorised over
  particles (``numpy.random``), the loop a user writes first;
* numba: the same discrete-time heat bath as a plain ``@njit(parallel=True)`` loop with
  ``np.random`` inside (numba's per-thread generators), written as a user would.

Exact: ``MasterEquation(space, "glauber").solve`` from all spins up at 11 times to
t = 2 (generator assembly included), 4x4 = 2^16 and 4x5 = 2^20 states.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numba
import numpy as np
from _results import write_table

from fokkerplanck.discrete import finite as Dz
from particles import jumps

TC = 2 / math.log(1 + math.sqrt(2))


def _numpy_heat_bath(S, nbr, beta, attempts, rng):
    n_part, n = S.shape
    rows = np.arange(n_part)
    for _ in range(attempts):
        i = rng.integers(0, n, n_part)
        h = S[rows[:, None], nbr[i]].sum(1)          # neighbour field at the chosen site
        p_up = 1.0 / (1.0 + np.exp(-2.0 * beta * h))
        S[rows, i] = np.where(rng.random(n_part) < p_up, 1, -1)
    return S


@numba.njit(parallel=True, cache=True)
def _numba_heat_bath(S, nbr, beta, attempts, seed):
    n_part, n = S.shape
    for p in numba.prange(n_part):
        np.random.seed(seed + p)
        for _ in range(attempts):
            i = np.random.randint(0, n)
            h = 0
            for k in range(nbr.shape[1]):
                h += S[p, nbr[i, k]]
            if np.random.random() < 1.0 / (1.0 + math.exp(-2.0 * beta * h)):
                S[p, i] = 1
            else:
                S[p, i] = -1
    return S


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def particles_row(L, n_part, sweeps, threads, repeats=3):
    """Ours against the numba loop at ``threads`` threads, interleaved ``repeats`` times (the
    medians; the ratio is the median of the per-repeat ratios)."""
    energy = Dz.ising((L, L), 1.0, 0.0)
    n = L * L
    nbr = energy.lattice.neighbours()
    c0 = np.ones((n_part, n), dtype=np.int8)
    t_end = float(sweeps)                      # rate n per particle: sweeps x n attempts each
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        jumps.simulate(energy, c0[:8], [0.01], temperature=TC, seed=1)  # compile / load
        S = np.ones((n_part, n), dtype=np.int64)
        _numba_heat_bath(S[:2].copy(), nbr, 1 / TC, 10, 0)
        att = sweeps * n
        ours, nb = [], []
        for _ in range(repeats):
            t_ours, ens = timed(lambda: jumps.simulate(energy, c0, [t_end], temperature=TC, seed=1))
            ours.append(float(ens.events.sum()) / t_ours)
            t_nb, _ = timed(lambda: _numba_heat_bath(S.copy(), nbr, 1 / TC, att, 0))
            nb.append(n_part * att / t_nb)
        np_att = max(50, att // 50)
        t_np, _ = timed(lambda: _numpy_heat_bath(S.copy(), nbr, 1 / TC, np_att, np.random.default_rng(0)))
    finally:
        numba.set_num_threads(before)
    return {"L": L, "N": n_part, "threads": threads, "ours": float(np.median(ours)), "numba": float(np.median(nb)),
            "ratio": float(np.median(np.array(ours) / np.array(nb))), "numpy": n_part * np_att / t_np,
            "numpy_attempts": np_att}


def exact_row(shape):
    energy = Dz.ising(shape, 1.0, 0.0)
    times = np.linspace(0, 2, 11)
    t0 = time.perf_counter()
    space = Dz.FiniteSpace(energy, TC)
    me = Dz.MasterEquation(space, "glauber")
    t_build = time.perf_counter() - t0
    t_solve, P = timed(lambda: me.solve(space.point_mass(np.ones(space.n_sites, dtype=np.int8)), times))
    return {"shape": "x".join(map(str, shape)), "states": space.size, "nnz": me.L.nnz, "build": t_build,
            "solve": t_solve, "mass_error": float(np.abs(P.sum(1) - 1).max()), "kl_end": float(me.kl(P[-1])[0])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rows = [particles_row(16 if args.quick else 32, 2000 if args.quick else 20000, 5 if args.quick else 20, t)
            for t in sorted({numba.get_num_threads(), 1}, reverse=True)]
    erows = [exact_row((4, 4))] + ([] if args.quick else [exact_row((4, 5))])
    load = os.getloadavg()[0]
    prow = rows[0]
    lines = [(f"Command: `python benchmarks/bench_discrete.py{' --quick' if args.quick else ''}` "
             f"(load average {load:.1f} at the end of the particle rows)."), "",
             (f"Glauber heat bath, {prow['L']}x{prow['L']} Ising at T_c, {prow['N']} particles from all up; "
             "million spin-flip attempts per second, medians of 3 interleaved runs (numpy ran "
             f"{prow['numpy_attempts']} attempts per particle; its cost per attempt is constant):"), "",
             ("| threads | ours (jumps.simulate) | numba (user loop, np.random) | numpy (vectorised over particles) | "
             "ours / numba | ours / numpy |"), "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['threads']} | {r['ours'] / 1e6:.1f} | {r['numba'] / 1e6:.1f} | {r['numpy'] / 1e6:.2f} | "
                     f"{r['ratio']:.2f}x | {r['ours'] / r['numpy']:.0f}x |")
    lines += ["",
             "Exact master equation from all up, 11 times to t = 2:", "",
             "| lattice | states | generator entries | build (s) | solve (s) | mass error | KL(t=2) |",
             "|---|---|---|---|---|---|---|"]
    for r in erows:
        lines.append(f"| {r['shape']} | {r['states']} | {r['nnz']} | {r['build']:.2f} | {r['solve']:.2f} | "
                     f"{r['mass_error']:.1e} | {r['kl_end']:.4f} |")
    write_table("discrete", lines, args.quick)


if __name__ == "__main__":
    main()
