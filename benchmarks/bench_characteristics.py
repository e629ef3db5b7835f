"""Backward characteristics of a torch MLP energy (``Continuity(U, grid, method="lagrangian")``):
the batched path against the per-point loop that callable energies took before, and the
finite volumes on the same energy for reference.

    python benchmarks/bench_characteristics.py                     # 128^2, both paths at 128^2
    python benchmarks/bench_characteristics.py --previous-size 64  # the slow path at 64^2 only
    python benchmarks/bench_characteristics.py --quick             # 64^2
    python benchmarks/bench_characteristics.py --threads 1         # torch on one thread

Problem: ``U = 0.1 MLP(x) + |x|^2 / 2``, the MLP 2 -> 64 -> 64 -> 1 (tanh, float64) of
bench_callables.py through ``energies.from_torch``, on [-8, 8]^2 from N(0, 4 I), densities at
11 times to t = 1 at the default tolerances (rtol 1e-10, atol 1e-12); torch on 2 threads
(``--threads``).
Seconds are medians of 3 runs, the three solvers interleaved.  The error is ``max |rho - rho_ref| / max rho_ref`` over the
cells and times, ``rho_ref`` the batched path at rtol 1e-12, atol 1e-14.  Forward passes:
calls of the network per cell (its rows / cells).

* batched: Dormand-Prince 8(5,3), per-cell steps, the outputs from its interpolant, one
  fused gradient + Laplacian autodiff graph per stage for all unfinished cells;
* previous: Dormand-Prince 5(4) per cell with the steps clipped at every output time, the
  gradient and the Laplacian from two graphs, the first stage recomputed every round, the
  bookkeeping a Python loop over the accepted cells (kept below as ``previous_path``);
* finite volumes: MUSCL + SSP-RK3 (``method="finite-volume"``), cell averages: its
  difference from the Lagrangian densities is its discretisation error, not a tolerance.

The previous path's cost is proportional to the cells (every cell takes every round on this
energy); with ``--previous-size`` smaller than the grid, its time at the full grid is that
measured at the smaller one times the ratio of cells, and the table says so.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings

import numpy as np
from _results import write_table

import fokkerplanck.flows.lagrangian as LG
from fokkerplanck import Continuity, Grid, densities, energies as E

TIMES = np.linspace(0.0, 1.0, 11)


def previous_path(energy):
    """The per-point Dormand-Prince 5(4) loop that callable energies took before: steps
    clipped at every output time, separate gradient and Laplacian calls (two autodiff graphs
    per stage, the first stage recomputed each round), the bookkeeping a Python loop over
    the accepted points.  Same signature as the run of integrate_characteristics."""
    def f(Y, sign):
        return np.concatenate([sign * energy._grad(Y[:, :-1]), energy._lap(Y[:, :-1])[:, None]], axis=1)

    def run(X0, times, sign, p, rtol, atol, centre, r_escape, h0):
        n, d = X0.shape
        nt = times.shape[0]
        Z, Lg = np.empty((nt, n, d)), np.empty((nt, n))
        status, fail_t = np.zeros(n, dtype=np.int64), np.zeros(n)
        first_escaped = np.full(n, nt, dtype=np.int64)
        Y = np.concatenate([X0, np.zeros((n, 1))], axis=1)
        t, h = np.zeros(n), np.full(n, float(h0))
        j0 = int(np.sum(times <= 0.0))
        Z[:j0], Lg[:j0] = X0, 0.0
        j = np.full(n, j0)
        live = j < nt
        while live.any():
            out = live & (np.sum((Y[:, :d] - centre) ** 2, axis=1) > r_escape ** 2)
            for i in np.flatnonzero(out):
                status[i], first_escaped[i] = 1, j[i]
                Z[j[i]:, i], Lg[j[i]:, i] = Y[i, :d], Y[i, d]
            live &= ~out
            idx = np.flatnonzero(live)
            if idx.size == 0:
                break
            y = Y[idx]
            hs = np.minimum(h[idx], times[j[idx]] - t[idx])[:, None]
            K = [f(y, sign)]
            for s_ in range(1, 7):
                K.append(f(y + hs * sum(LG._A[s_, q] * K[q] for q in range(s_)), sign))
            ynew = y + hs * sum(LG._B[q] * K[q] for q in range(7) if LG._B[q] != 0.0)
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                e = hs * sum(LG._E[q] * K[q] for q in range(7))
                ratio = np.abs(e) / (atol + rtol * np.maximum(np.abs(y), np.abs(ynew)))
                err = np.where(np.all(np.isfinite(ynew), axis=1), ratio.max(axis=1), 1e10)
                fac_ok = np.where(err == 0.0, 5.0, np.minimum(5.0, 0.9 * err ** -0.2))
                fac_bad = np.maximum(0.1, 0.9 * err ** -0.2)
            hs = hs[:, 0]
            ok = err <= 1.0
            a, r = idx[ok], idx[~ok]
            t[a] += hs[ok]
            Y[a] = ynew[ok]
            h[a] = np.where(hs[ok] == h[a], h[a] * fac_ok[ok], np.maximum(h[a], hs[ok] * fac_ok[ok]))
            for i in a:  # record the outputs reached
                while j[i] < nt and times[j[i]] - t[i] <= 1e-13 * max(1.0, times[j[i]]):
                    Z[j[i], i], Lg[j[i], i] = Y[i, :d], Y[i, d]
                    j[i] += 1
            h[r] = hs[~ok] * fac_bad[~ok]
            under = r[h[r] < 1e-13 * np.maximum(1.0, t[r])]
            for i in under:
                status[i], fail_t[i] = 2, t[i]
                Z[j[i]:, i], Lg[j[i]:, i] = np.nan, np.nan
                j[i] = nt
            live &= j < nt
        return Z, Lg, status, fail_t, first_escaped

    return run


@contextlib.contextmanager
def previous():
    """Continuity's Lagrangian solver with the previous integration of callable energies."""
    saved = LG._vectorised
    LG._vectorised = previous_path
    try:
        yield
    finally:
        LG._vectorised = saved


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def median_run(runs):
    """The run of median time (of three): its seconds and its output."""
    return sorted(runs, key=lambda r: r[0])[len(runs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=None, help="cells per axis (default 128, 64 with --quick)")
    ap.add_argument("--previous-size", type=int, default=None, help="cells per axis of the previous path")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 1)).to(torch.float64)
    rows = []

    def energy_t(x):
        rows.append(x.shape[0])
        return net(x)[:, 0] * 0.1 + 0.5 * (x ** 2).sum(1)

    U = E.from_torch(energy_t, 2, name="mlp")
    rho0 = densities.Gaussian(np.zeros(2), 4 * np.eye(2))
    n = args.size or (64 if args.quick else 128)
    n_prev = args.previous_size or n

    def solve(m, method="lagrangian", **kw):
        g = Grid([(-8, 8)] * 2, m)
        rows.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            d = Continuity(U, g, method=method).solve(rho0, TIMES, **kw).densities
        return d, sum(rows) / g.size

    load = os.getloadavg()[0]
    ref, _ = solve(n, rtol=1e-12, atol=1e-14)
    # the three interleaved, three times: a shared machine's load falls on all of them alike
    runs = {"batched": [], "fv": [], "previous": []}
    for rep in range(3):
        runs["batched"].append(timed(lambda: solve(n)))
        runs["fv"].append(timed(lambda: solve(n, "finite-volume")))
        with previous():
            runs["previous"].append(timed(lambda: solve(n_prev)))
        print(f"run {rep + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f} s" for k, v in runs.items()), flush=True)
    (t_new, (d_new, f_new)), (t_fv, (d_fv, _)), (t_old, (d_old, f_old)) = (
        median_run(runs[k]) for k in ("batched", "fv", "previous"))
    scale = ref.max()
    err_new = np.abs(d_new - ref).max() / scale
    err_fv = np.abs(d_fv - ref).max() / scale
    if n_prev == n:
        err_old = f"{np.abs(d_old - ref).max() / scale:.1e}"
        t_old_n, note = t_old, "measured"
        t_new_p = t_new
    else:
        ref_p, _ = solve(n_prev, rtol=1e-12, atol=1e-14)
        err_old = f"{np.abs(d_old - ref_p).max() / ref_p.max():.1e} (at {n_prev}^2)"
        t_old_n = t_old * (n / n_prev) ** 2
        note = f"{t_old:.1f} s measured at {n_prev}^2, times {(n / n_prev) ** 2:g} (cells)"
        t_new_p = median_run([timed(lambda: solve(n_prev)) for _ in range(3)])[0]
    lines = ["# Characteristics of a callable energy: a torch MLP on the grid", "",
             "`python benchmarks/bench_characteristics.py" + (" --quick" if args.quick else "")
             + (f" --previous-size {n_prev}" if n_prev != n else "")
             + (f" --threads {args.threads}" if args.threads != 2 else "") + "`", "",
             (f"U = 0.1 MLP(x) + |x|^2/2 (MLP 2 -> 64 -> 64 -> 1, tanh, float64, from_torch), [-8, 8]^2, "
             f"rho0 = N(0, 4 I), 11 output times to t = 1, rtol 1e-10, atol 1e-12; torch on {args.threads} thread(s); "
             f"medians of 3 runs; load average {load:.1f} when the run started (2 cores)."), "",
             "| path | cells | seconds | forward passes / cell | max error / max density | speed-up |",
             "|---|---|---|---|---|---|",
             (f"| previous: DOPRI5 per cell, outputs on steps, grad and Laplacian apart | {n}^2 | {t_old_n:.1f} "
             f"({note}) | {f_old:.0f} | {err_old} | 1 |"),
             (f"| batched: DOP853 per cell, interpolated outputs, fused grad + Laplacian | {n}^2 | {t_new:.2f} | "
             f"{f_new:.0f} | {err_new:.1e} | {t_old_n / t_new:.1f}x |"),
             (f"| finite volumes (MUSCL, SSP-RK3), for reference | {n}^2 | {t_fv:.2f} | - | "
             f"{err_fv:.1e} (discretisation) | {t_old_n / t_fv:.1f}x |")]
    if n_prev != n:
        lines += ["", (f"At {n_prev}^2, both measured: previous {t_old:.2f} s, batched {t_new_p:.2f} s "
                  f"({t_old / t_new_p:.1f}x).")]
    write_table("characteristics" + (f"_threads{args.threads}" if args.threads != 2 else ""), lines, args.quick)


if __name__ == "__main__":
    main()
