"""Checks of the stopping rules, energy composition and Wasserstein distances."""
from __future__ import annotations

import math

import numpy as np

from fokkerplanck import densities, energies as E
from fokkerplanck.app.plots import _plt, plot_kl
from fokkerplanck.app.runner import plot_run, read_run, run
from fokkerplanck.app.verify.closed_forms import (
    gaussian_kl,
    gaussian_law,
    richardson,
)
from fokkerplanck.app.verify.framework import Check, Report, at_least, at_most, near, register
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.grid import Grid
from fokkerplanck.theory.composition import composition_experiment, counts_agree
from fokkerplanck.theory.stopping import bakry_emery, tau_lang
from fokkerplanck.theory.theorem import composed_energies, composition_check
from fokkerplanck.wasserstein import gaussian_w2, gaussian_w2_nd, w2_grid, w2_linearised


@register(one_thread=True)
def check_stopping(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Langevin stopping: grid KL at tau_Lang(eps) is below eps for a certified C_LS, at T = 1
    and T = 0.5; and equal to the closed form there (a solver that relaxes too fast or too
    slowly fails)."""
    A = np.array([[1.5, 0.5], [0.5, 0.8]])
    U = E.Quadratic(A)
    m0, S0 = np.array([2.0, -1.0]), np.array([[0.3, 0.0], [0.0, 0.5]])
    rho0 = densities.Gaussian(m0, S0)
    cells = (48, 96) if quick else (96, 192)
    out, shown = [], None
    # the grid's O(h^2) error of the decay rate accumulates over tau ~ 10 (48^2 alone is 10-50% off at
    # tau_Lang(1e-4)); the Richardson remainder measured 1e-3 and 4e-3 (T = 1), 6e-3 and 2e-2 (T = 0.5)
    for T, tol in ((1.0, 0.015), (0.5, 0.06)):
        fps = [FokkerPlanck(U, Grid([(-8, 8)] * 2, n), T) for n in cells]
        fp = fps[1]
        c = bakry_emery(U, fp.grid)
        kl0 = fp.solve(rho0, [0.0]).kl()[0]
        for eps in (1e-2, 1e-4):
            tau = tau_lang(eps, kl0, c).time
            k = [f.solve(rho0, [tau]).kl()[0] for f in fps]
            # the closed form at the closed-form stopping time log(KL_0 / eps) / (2 kappa), kappa = min eig A
            t_cf = math.log(gaussian_kl(m0, S0, A, T) / eps) / (2 * np.linalg.eigvalsh(A)[0])
            exact = gaussian_kl(*gaussian_law(A, m0, S0, T, t_cf), A, T) / eps
            out.append(at_most(f"OU, T = {T:g}: KL(tau_Lang(eps={eps:g})) / eps, {c.source}, {cells[1]}^2", k[1] / eps,
                               1.0))
            out.append(near(f"OU, T = {T:g}: KL(tau_Lang(eps={eps:g})) / eps, Richardson {cells[0]}^2 -> {cells[1]}^2, "
                            "vs the closed form at log(KL_0 / eps) / (2 min eig A)", richardson(*k) / eps, exact,
                            tol * exact, f"tau_Lang = {tau:.6g}, closed form {t_cf:.6g}; tolerance {tol:g} relative"))
        shown = (fp, c, kl0) if T == 1.0 else shown
    fp, c, kl0 = shown  # the figure: T = 1
    if report is not None:
        tr = fp.solve(rho0, np.linspace(0, 1.1 * tau_lang(1e-4, kl0, c).time, 60))
        fig, ax = _plt().subplots(figsize=(7, 4.5), layout="constrained")
        plot_kl(ax, tr.times, tr.kl(), label="grid Fokker-Planck", flow="OU")
        ax.plot(tr.times, kl0 * np.exp(-2 * c.value * tr.times), "k:", label="KL_0 exp(-2 C_LS t)")
        for eps, col in ((1e-2, "C2"), (1e-4, "C3")):
            ax.axhline(eps, color=col, lw=0.8, ls=":")
            ax.axvline(tau_lang(eps, kl0, c).time, color=col, ls="--", label=f"tau_Lang(eps={eps:g}), {c!r}")
        ax.legend(fontsize="x-small")
        report.figure("ou_tau_lang", fig)
    return out


@register(one_thread=True)
def check_composition(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Composition keeps a Gibbs invariant law: conjunction, disjunction, negation of
    the paper's experts A and B are confining and exp(-U)/Z is the stationary law;
    5000 Langevin samples of each land near the A and B centres as often as the grid
    Fokker-Planck law at the same time predicts."""
    out = []
    grid = Grid([(-9, 9)] * 2, 96 if quick else 192)
    if report is not None:
        laws = composed_energies()
        fig, axes = _plt().subplots(1, len(laws), figsize=(3.2 * len(laws), 3.6), layout="constrained")
        for ax, (name, U) in zip(axes, laws.items()):
            ax.imshow(grid.gibbs(U).T, origin="lower", extent=(-9, 9, -9, 9), cmap="viridis")
            ax.set_title(f"exp(-U)/Z: {name}", fontsize="small")
            ax.set_xlabel("x_1")
            ax.set_ylabel("x_2")
        report.figure("composition_gibbs_laws", fig)
    for name, r in composition_check(grid).items():
        out += [at_least(f"{name}: confining on [-9, 9]^2 (1 = yes)", float(r.confining), 1.0),
                at_most(f"{name}: ||L rho*|| / (||L|| ||rho*||)", r.residual, 1e-14),
                at_most(f"{name}: stationary law vs exp(-U)/Z (L1)", r.forward_error, r.forward_tolerance,
                        f"tolerance 1e-12 + 1e-14 / gap, gap = {r.spectral_gap:.3g}")]
    # Langevin samples near the A and B centres against the grid law at the same time
    cfg = {"kind": "composition", "grid": {"bounds": [[-9, 9], [-9, 9]], "cells": 64 if quick else 128},
           "initial": {"type": "Gaussian", "mean": [0.0, 0.0], "cov": 9.0},
           "composition": {"n": 5000, "dt": 2e-3, "time": 1.0 if quick else 2.0, "seed": 1}}
    if report is not None:
        path = report._add("composition.h5")
        run(cfg, path, progress=False, log=lambda *a: None)
        report.figure("composition_samples", plot_run(path))
        res = read_run(path)
    else:
        res = composition_experiment(Grid(*cfg["grid"].values()), densities.Gaussian([0, 0], 9.0),
                                     log=lambda *a: None, **cfg["composition"])

    for name in ("A", "B", "conjunction", "disjunction", "negation"):
        for key in ("A", "B"):
            z, allowed = counts_agree(res[name], key, 5000)
            out.append(at_most(f"{name}: Langevin count near {key} centres vs Fokker-Planck, in sd", z, allowed,
                               f"{res[name][f'count_{key}']} vs {res[name][f'expected_{key}']:.1f}"
                               f" (Gibbs {res[name][f'expected_{key}_gibbs']:.1f}); 4 sd + 1% + 2"))
    return out


@register(one_thread=True)
def check_wasserstein(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Exact 1D W2 (quantile functions): two Gaussians against the closed form
    (second order in the cell size), two uniform laws on a coarse grid (exact), and W2(rho_t, rho*) along the OU Fokker-Planck flow
    against the Gaussian closed form of its moments."""
    out = []
    exact = gaussian_w2(0.3, 0.7, -1.1, 1.3)
    errs = []
    for n in (200, 400):
        g = Grid([(-12, 12)], n)
        errs.append(abs(w2_grid(g, densities.Gaussian([0.3], 0.49).on_grid(g),
                                densities.Gaussian([-1.1], 1.69).on_grid(g)) - exact))
    order = float(np.log2(errs[0] / errs[1]))
    out.append(near("W2 of two Gaussians on 200 -> 400 cells: observed order", order, 2.0, 0.2,
                    f"errors {errs[0]:.2e}, {errs[1]:.2e}", strict=True))
    # exact for the laws it is given, not only convergent: U[0, 1] and U[1, 3] on 6 cells have the
    # quantiles u and 1 + 2u, W2^2 = int (1 + u)^2 du = 7/3 (round-off: measured 0 .. 2e-16)
    g = Grid([(0, 3)], 6)
    out.append(near("W2 of U[0, 1] and U[1, 3] on 6 cells vs the closed form sqrt(7/3) (a coarse grid is exact)",
                    w2_grid(g, np.array([1.0, 1, 0, 0, 0, 0]), np.full(6, 0.5) * (np.arange(6) >= 2)),
                    math.sqrt(7 / 3), 1e-14))
    a, T = 2.0, 0.7
    g = Grid([(-6, 6)], 1200)
    times = np.linspace(0, 1.5, 7)
    tr = FokkerPlanck(E.Quadratic([[a]]), g, T).solve(densities.Gaussian([1.0], 0.25), times)
    w = tr.w2()
    laws = [gaussian_law([[a]], [1.0], [[0.25]], T, t) for t in times]
    ref = [gaussian_w2(m[0], np.sqrt(S[0, 0]), 0.0, np.sqrt(T / a)) for m, S in laws]
    out.append(at_most("OU Fokker-Planck, 1200 cells: max |W2(rho_t, rho*) - closed form|",
                       float(np.max(np.abs(w - ref))), 2e-4))
    S = np.array([[1.0, 0.3], [0.3, 0.6]])
    exact = gaussian_w2_nd([0, 0], S, [0, 0], 1.02 * S)
    errs = []
    for n in (64, 128):
        g = Grid([(-6, 6)] * 2, n)
        errs.append(abs(w2_linearised(g, densities.Gaussian([0, 0], S).on_grid(g),
                                      densities.Gaussian([0, 0], 1.02 * S).on_grid(g)) - exact) / exact)
    order = float(np.log2(errs[0] / errs[1]))
    out.append(near("2D linearised W2 of nearby Gaussians (W2 = 0.0126), 64 -> 128 cells: observed order", order, 2.0,
                    0.2, strict=True, detail=f"relative errors {errs[0]:.2e}, {errs[1]:.2e} (lattice transport of "
                     "the cell masses is ~sqrt(W2 h) here)"))
    return out


