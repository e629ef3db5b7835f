"""Grid Fokker-Planck against the peers (PEERS.md), same problems, same run.

    python benchmarks/bench_fokkerplanck.py            # full table
    python benchmarks/bench_fokkerplanck.py --quick    # small sizes only

Problems
  ou1d   U = a x^2 / 2 (a = 2, T = 1) on [-6, 6], rho0 = N(1, 0.25), t = 1;
         error: L1 against the closed-form density at the cell centres.
  ring2d the eight Gaussians on [-8, 8]^2, rho0 = N(0, 9 I), KL at 51 times in
         [0, 5]; error: L1 at t = 5 against this toolkit on 512^2 cells,
         cell-averaged onto the coarse grid.
This toolkit's and fplanck's times are the median of 3 runs (operator
assembly + time integration: what a user waits for; one run where it takes over a
minute); py-pde and FiPy, which
take minutes, run once (py-pde's time includes its numba compilation of the
right-hand side, as a user meets it).  Stationarity drift is the L1 change of
each solver's own discrete Gibbs law over [0, 5] (not measured for py-pde and
FiPy: their Gibbs law is not a discrete fixed point, PEERS.md).
Peers that are not installed (the ``bench`` extra) are reported as such.

Roofline (2D rows of this toolkit): every operator product of the exact solver
(uniformisation and Chebyshev terms, counted by the solver) must at least stream
the stencil's seven input arrays and one output; a parallel sweep doing only
that is timed in the same run at the same grid size, and the note gives
products x that time, and its fraction of the measured time.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
import warnings

import numba
import numpy as np

from fokkerplanck import FokkerPlanck, Grid, densities, energies as E
from fokkerplanck import diagnostics as D

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def median_time(fn, repeats=3, once_above=60.0):
    """The median of ``repeats`` runs, or one run when it takes over ``once_above``
    seconds (fplanck at 512^2: 200 s; the run-to-run spread is a few %)."""
    ts, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
        if ts[-1] > once_above:
            break
    return statistics.median(ts), out


def coarsen(rho, factor):
    n = rho.shape[0] // factor
    return rho.reshape(n, factor, n, factor).mean(axis=(1, 3))


# ---------------------------------------------------------------------------- bandwidth bound
@numba.njit(parallel=True, cache=True)
def _sweep(y, a, b, c, d, e, f, g):
    for i in numba.prange(y.size):
        y[i] = a[i] + b[i] + c[i] + d[i] + e[i] + f[i] + g[i]


def sweep_bandwidth(cells: int) -> float:
    """Bytes per second of the best possible stencil sweep at this grid size, measured now:
    read seven arrays of ``cells`` doubles (x, z, the diagonal and four face weights of a
    2D stencil) and write one, on all cores, best of 20 (the working set sits where the
    solver's does: cache for small grids, memory for large)."""
    arrs = [np.random.default_rng(i).random(cells) for i in range(8)]
    _sweep(*arrs)
    best = min(_timed_sweep(arrs) for _ in range(20))
    return 8 * 8 * cells / best


def _timed_sweep(arrs):
    t0 = time.perf_counter()
    _sweep(*arrs)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- ours
def ours(U, grid, rho0, times):
    info = {}

    def run():
        fp = FokkerPlanck(U, grid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # N(0, 9) touches the walls of [-8, 8]^2 (4e-3 mass)
            tr = fp.solve(rho0, times)
        tr.kl()
        info.update(tr.info)
        return tr.densities, fp.gibbs
    t, (dens, gibbs) = median_time(run)

    def drift():
        fp = FokkerPlanck(U, grid)
        return np.abs(fp.solve(fp.gibbs, [0, times[-1]]).densities[-1] - fp.gibbs).sum() * grid.cell_volume
    # the bandwidth bound: every operator product of the run is at least one sweep
    products = int(info.get("uniformisation_matvecs", 0)) + int(info.get("chebyshev_matvecs", 0))
    bound = products * 64.0 * grid.size / sweep_bandwidth(grid.size) if grid.ndim == 2 else np.nan
    return t, dens, drift(), dict(products=products, bound_s=bound)


# ---------------------------------------------------------------------------- fplanck
def fplanck_solver(U, grid, rho0_fn, times):
    import fplanck
    from scipy import constants

    if not hasattr(np, "product"):
        np.product = np.prod  # the released fplanck calls np.product, removed in NumPy 2
    h = grid.spacing[0]
    n = grid.cells[0]
    d = grid.ndim

    def potential(*xs):
        X = np.stack([x.ravel() for x in xs], axis=1)
        return U.value(X).reshape(xs[0].shape) * constants.k / constants.k  # U in units of k_B T, T = 1

    def build():
        return fplanck.fokker_planck(temperature=1 / constants.k, drag=1.0, extent=[(n - 0.5) * h] * d,
                                     resolution=h, potential=potential, boundary=fplanck.boundary.reflecting)

    def run():
        sim = build()
        _, pf = sim.propagate_interval(rho0_fn, times[-1], Nsteps=len(times))
        return pf / h**d, sim

    t, (dens, sim) = median_time(run)
    # its own stationary law: exp(-U) at the nodes
    pst = np.exp(-sim.potential_values)
    pst /= pst.sum()
    from scipy.sparse.linalg import expm_multiply
    drift = np.abs(expm_multiply(sim.master_matrix * times[-1], pst.ravel()) - pst.ravel()).sum()
    return t, dens, drift


# ---------------------------------------------------------------------------- py-pde, FiPy
def pypde_solver(U, grid, rho0, times):
    """py-pde: central differences, RK45 adaptive (its implicit steppers are fixed-point
    iterations); no built-in drift, so ``laplace(c) + divergence(c * V)`` with V = grad U."""
    import pde

    pg = pde.CartesianGrid([list(b) for b in grid.bounds], list(grid.cells))
    V = pde.VectorField(pg, np.moveaxis(U.grad(grid.points).reshape(*grid.shape, 2), -1, 0))
    eq = pde.PDE({"c": "laplace(c) + divergence(c * V)"}, consts={"V": V}, bc={"derivative": 0},
                 bc_ops={"c:divergence": {"value": 0}})

    def run():
        st = pde.MemoryStorage()
        eq.solve(pde.ScalarField(pg, rho0), t_range=float(times[-1]), dt=1e-4, solver="runge-kutta",
                 adaptive=True, tracker=[st.tracker(float(times[1] - times[0]))])
        return np.array([f.data for f in st])

    t0 = time.perf_counter()
    dens = run()  # includes its numba compilation of the right-hand side, as a user sees it
    return time.perf_counter() - t0, dens, np.nan


def fipy_solver(U, grid, rho0, times, dt=0.01):
    """FiPy: Scharfetter-Gummel (ExponentialConvectionTerm), backward Euler at fixed dt,
    re-assembled and re-factorised each step; LU tolerance 1e-15 (PEERS.md)."""
    import fipy

    n = grid.cells[0]
    h = grid.spacing[0]
    mesh = fipy.Grid2D(dx=h, dy=h, nx=n, ny=n) + ((grid.bounds[0][0],), (grid.bounds[1][0],))
    xc = np.stack([np.asarray(mesh.cellCenters[0]), np.asarray(mesh.cellCenters[1])], axis=1)
    Uc = fipy.CellVariable(mesh=mesh, value=U.value(xc))
    # fipy orders cells x-fastest; our grid is C order (x slowest): transpose in and out
    rho = fipy.CellVariable(mesh=mesh, value=rho0.T.ravel())
    eq = fipy.TransientTerm() == fipy.DiffusionTerm(coeff=1.0) + fipy.ExponentialConvectionTerm(
        coeff=Uc.faceGrad * mesh.interiorFaces)
    solver = fipy.LinearLUSolver(tolerance=1e-15)
    every = int(round((times[1] - times[0]) / dt))
    t0 = time.perf_counter()
    out = [rho0]
    for k in range(1, int(round(times[-1] / dt)) + 1):
        eq.solve(var=rho, dt=dt, solver=solver)
        if k % every == 0:
            out.append(np.asarray(rho.value).reshape(n, n).T.copy())
    return time.perf_counter() - t0, np.array(out), np.nan


# ---------------------------------------------------------------------------- problems
def ring2d(ns, ref_n=512, peers_2d=None):
    peers_2d = peers_2d or {}
    U = E.GaussianMixture.ring()
    times = np.linspace(0, 5, 51)
    g_ref = Grid([(-8, 8)] * 2, ref_n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = FokkerPlanck(U, g_ref).solve(densities.Gaussian([0, 0], 9.0), [times[-1]]).densities[-1]
    rows = []
    G = densities.Gaussian([0, 0], 9.0)
    for n in ns:
        g = Grid([(-8, 8)] * 2, n)
        r = coarsen(ref, ref_n // n)
        t, dens, drift, roof = ours(U, g, G, times)
        rows.append(dict(problem="ring2d", solver="fokkerplanck (exact)", n=f"{n}^2", time_s=t,
                         l1_error=np.abs(dens[-1] - r).sum() * g.cell_volume, gibbs_drift=drift,
                         note=f"{roof['products']} products; sweep-bandwidth bound {roof['bound_s']:.3f} s "
                              f"= {roof['bound_s'] / t:.2f} of the time"))
        try:
            tf, dens_f, drift_f = fplanck_solver(
                U, g, lambda x, y: np.exp(G.logpdf(np.stack([x.ravel(), y.ravel()], 1))).reshape(x.shape), times)
            rows.append(dict(problem="ring2d", solver="fplanck", n=f"{n}^2", time_s=tf,
                             l1_error=np.abs(dens_f[-1] - r).sum() * g.cell_volume, gibbs_drift=drift_f))
        except ImportError as exc:
            rows.append(dict(problem="ring2d", solver="fplanck", n=f"{n}^2", note=f"not installed: {exc}"))
        print(rows[-2], rows[-1], file=sys.stderr)
        for name, fn, sizes in (("py-pde (RK45, 1 run)", pypde_solver, peers_2d.get("py-pde", ())),
                                ("FiPy (backward Euler dt=0.01, 1 run)", fipy_solver, peers_2d.get("fipy", ()))):
            if n not in sizes:
                continue
            try:
                tp, dens_p, _ = fn(U, g, G.on_grid(g), times)
                rows.append(dict(problem="ring2d", solver=name, n=f"{n}^2", time_s=tp,
                                 l1_error=np.abs(dens_p[-1] - r).sum() * g.cell_volume, gibbs_drift=np.nan,
                                 note=f"min density {dens_p.min():.2g}"))
            except ImportError as exc:
                rows.append(dict(problem="ring2d", solver=name, n=f"{n}^2", note=f"not installed: {exc}"))
            print(rows[-1], file=sys.stderr)
    return rows


def ou1d(ns):
    a, T, t_end = 2.0, 1.0, 1.0
    U = E.Quadratic([[a]])
    m, S = D.ou_moments([[a]], [0.0], [1.0], [[0.25]], T, t_end)
    G = densities.Gaussian([1.0], 0.25)
    rows = []
    for n in ns:
        g = Grid([(-6, 6)], n)
        exact = D.ou_density(g, m, S)
        t, dens, drift, _ = ours(U, g, G, np.array([0.0, t_end]))
        rows.append(dict(problem="ou1d", solver="fokkerplanck (exact)", n=n, time_s=t,
                         l1_error=np.abs(dens[-1] - exact).sum() * g.cell_volume, gibbs_drift=drift))
        try:
            tf, dens_f, drift_f = fplanck_solver(U, g, lambda x: np.exp(G.logpdf(x.ravel()[:, None])), np.array([0.0, t_end]))
            rows.append(dict(problem="ou1d", solver="fplanck", n=n, time_s=tf,
                             l1_error=np.abs(dens_f[-1] - exact).sum() * g.cell_volume, gibbs_drift=drift_f))
        except ImportError as exc:
            rows.append(dict(problem="ou1d", solver="fplanck", n=n, note=f"not installed: {exc}"))
        print(rows[-2], rows[-1], file=sys.stderr)
    return rows


def write(rows, name, command=None):
    os.makedirs(RESULTS, exist_ok=True)
    keys = ["problem", "solver", "n", "time_s", "l1_error", "gibbs_drift", "note"]
    with open(os.path.join(RESULTS, name + ".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})
    lines = ["| problem | solver | cells | time (s) | L1 error | Gibbs drift | speed-up vs fplanck | note |",
             "|---|---|---|---|---|---|---|---|"]
    peer = {(r["problem"], r["n"]): r["time_s"] for r in rows if r["solver"] == "fplanck" and "time_s" in r}
    for r in rows:
        if "time_s" not in r:
            lines.append(f"| {r['problem']} | {r['solver']} | {r['n']} | | | | | {r.get('note', '')} |")
            continue
        sp = peer.get((r["problem"], r["n"]))
        ratio = f"{sp / r['time_s']:.3g}x" if sp and r["solver"] != "fplanck" else ""
        lines.append(f"| {r['problem']} | {r['solver']} | {r['n']} | {r['time_s']:.3f} | {r['l1_error']:.2e} | "
                     f"{r['gibbs_drift']:.1e} | {ratio} | {r.get('note', '')} |")
    table = "\n".join(lines)
    with open(os.path.join(RESULTS, name + ".md"), "w") as f:
        f.write(f"Command: `{command or 'python benchmarks/bench_fokkerplanck.py' + (' --quick' if name.endswith('quick') else '')}`\n\n")
        f.write(table + "\n")
    print(table)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--ring", type=int, nargs="+", metavar="N",
                   help="only the 2D eight Gaussians at these N^2 against fplanck (results/fokkerplanck_ring.md)")
    p.add_argument("--ref", type=int, default=512, help="with --ring: cells per axis of the reference solution")
    args = p.parse_args(argv)
    if args.ring:
        write(ring2d(args.ring, ref_n=args.ref), "fokkerplanck_ring",
              f"python benchmarks/bench_fokkerplanck.py --ring {' '.join(map(str, args.ring))} --ref {args.ref}")
        return
    elif args.quick:
        rows = ou1d([200, 400]) + ring2d([64], ref_n=256, peers_2d={"py-pde": (64,), "fipy": (64,)})
    else:
        rows = ou1d([200, 400, 800, 1600]) + ring2d([64, 128, 256], peers_2d={"py-pde": (128, 256),
                                                                              "fipy": (64, 128)})
    write(rows, "fokkerplanck_quick" if args.quick else "fokkerplanck")


if __name__ == "__main__":
    main()
