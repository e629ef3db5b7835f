"""Time-dependent 2D Fokker-Planck: the exponential-midpoint solver with step doubling
(:func:`fokkerplanck.flows.paths.solve_path`) against fixed-step implicit Euler, the
scheme a user writes first, and fixed-step Crank-Nicolson (second order, the generator at
the midpoint), at equal error.

    python benchmarks/bench_time_dependent.py            # 128^2 and 256^2
    python benchmarks/bench_time_dependent.py --quick    # 64^2 and 128^2

Problem: the moving OU process, ``U(x, t)`` the linear homotopy of two quadratics over
``[0, 2]``, T = 0.7, from N((-1, 1), 0.5 I) on [-6, 6]^2.  Both schemes use the same
Scharfetter-Gummel generator ``L(t)``; the error is the L1 distance at t = 2 to a
reference on the same grid (``solve_path`` at tol 1e-9), i.e. the time-integration error
alone.  Implicit Euler: ``(I - h L(t_{k+1})) rho_{k+1} = rho_k`` (sparse LU each step, as
the generator changes).  It is first order, so its cost at our error is found from two
step counts (measured) and the first-order rate (the steps needed, extrapolated; the time
per step measured).  Crank-Nicolson ``(I - h/2 L) rho_{k+1} = (I + h/2 L) rho_k`` with
``L = L(t_k + h/2)``: its step count for our error is found from two runs at its observed
order and then RUN (measured, not extrapolated).  py-pde has no Scharfetter-Gummel
operator: comparing it would change the discretisation, not only the time integration.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from _results import write_table

from fokkerplanck import Grid, densities, energies as E
from fokkerplanck.operators.fluxes import sg_generator
from fokkerplanck.energies.paths import LinearHomotopy
from fokkerplanck.flows.paths import solve_path

A0, M0 = np.array([[1.0, 0.0], [0.0, 0.5]]), np.zeros(2)
A1, M1 = np.array([[3.0, 0.8], [0.8, 2.0]]), np.array([1.5, -1.0])
T, D = 0.7, 2.0


def theta_method(path, grid, rho, n, theta):
    """Fixed steps of ``(I - theta h L) rho_{k+1} = (I + (1 - theta) h L) rho_k`` with
    ``L = L(t_k + theta h)``: implicit Euler at theta = 1, Crank-Nicolson (generator at the
    midpoint) at theta = 1/2; sparse LU each step, as the generator changes."""
    h = D / n
    r = rho.ravel().copy()
    I = sp.identity(grid.size, format="csc")
    for k in range(n):
        L = sg_generator(grid, grid.evaluate(path.at((k + theta) * h / D)), T)
        r = spla.splu((I - theta * h * L).tocsc()).solve(r + (1 - theta) * h * (L @ r) if theta < 1 else r)
    return r.reshape(grid.shape)


def implicit_euler(path, grid, rho, n):
    return theta_method(path, grid, rho, n, 1.0)


def crank_nicolson(path, grid, rho, n):
    return theta_method(path, grid, rho, n, 0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    path = LinearHomotopy(E.Quadratic(A0, mean=M0), E.Quadratic(A1, mean=M1))
    lines = ["# Time-dependent Fokker-Planck: exponential midpoint with step doubling vs implicit Euler", "",
             "`python benchmarks/bench_time_dependent.py" + (" --quick`" if args.quick else "`"), "",
             "Moving OU over [0, 2], T = 0.7; L1 error at t = 2 against solve_path(tol=1e-9) on the same grid "
             "(time error alone). Implicit Euler at our error: steps extrapolated at first order from two "
             "measured runs, seconds = steps x measured time per step.", "",
             "| cells | ours: tol | steps (rejected) | L1 error | seconds | implicit Euler: errors at n, 2n "
             "| observed order | steps for our error | seconds (extrapolated) | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    cn_lines = ["", "Crank-Nicolson (generator at the midpoint), fixed steps: order from 40 and 80 steps, then run at "
                "the step count that reaches our error (measured).", "",
                "| cells | errors at 40, 80 | observed order | steps run | L1 error | min density | seconds | "
                "ours: seconds | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    for cells in ((64, 128) if args.quick else (128, 256)):
        g = Grid([(-6, 6)] * 2, cells)
        rho0 = g.check_density(densities.Gaussian([-1.0, 1.0], 0.5 * np.eye(2)).on_grid(g), "rho0", normalise="silent")
        ref = solve_path(path, g, rho0, [0, D], temperature=T, duration=D, tol=1e-9).densities[-1]
        tol = 1e-5
        t0 = time.perf_counter()
        ours = solve_path(path, g, rho0, [0, D], temperature=T, duration=D, tol=tol)
        t_ours = time.perf_counter() - t0
        e_ours = float(np.abs(ours.densities[-1] - ref).sum() * g.cell_volume)
        n = 20
        errs, per_step = [], []
        for m in (n, 2 * n):
            t0 = time.perf_counter()
            r = implicit_euler(path, g, rho0, m)
            per_step.append((time.perf_counter() - t0) / m)
            errs.append(float(np.abs(r - ref).sum() * g.cell_volume))
        order = float(np.log2(errs[0] / errs[1]))
        need = 2 * n * errs[1] / e_ours  # first order: error ~ 1/steps
        t_ie = need * min(per_step)
        lines.append(f"| {cells}^2 | {tol:g} | {ours.steps} ({ours.rejected}) | {e_ours:.2e} | {t_ours:.2f} | "
                     f"{errs[0]:.2e}, {errs[1]:.2e} | {order:.2f} | {need:.0f} | {t_ie:.0f} | {t_ie / t_ours:.0f}x |")
        print(lines[-1], flush=True)
        ecn = [float(np.abs(crank_nicolson(path, g, rho0, m) - ref).sum() * g.cell_volume) for m in (40, 80)]
        p_cn = float(np.log2(ecn[0] / ecn[1]))
        n_cn = int(np.ceil(80 * (ecn[1] / e_ours) ** (1 / max(p_cn, 0.5))))
        t0 = time.perf_counter()
        r = crank_nicolson(path, g, rho0, n_cn)
        t_cn = time.perf_counter() - t0
        e_cn = float(np.abs(r - ref).sum() * g.cell_volume)
        cn_lines.append(f"| {cells}^2 | {ecn[0]:.2e}, {ecn[1]:.2e} | {p_cn:.2f} | {n_cn} | {e_cn:.2e} | {r.min():.1e} | "
                        f"{t_cn:.1f} | {t_ours:.2f} | {t_cn / t_ours:.1f}x |")
        print(cn_lines[-1], flush=True)
    write_table("time_dependent", lines + cn_lines, args.quick)


if __name__ == "__main__":
    main()
