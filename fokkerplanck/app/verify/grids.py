"""Checks of the grid solvers: energies, the Fokker-Planck propagator, Gaussian closed forms, refinement, the
deterministic flow."""
from __future__ import annotations

import contextlib
import copy
import math

import numpy as np

from fokkerplanck import densities, diagnostics as D, energies as E
from fokkerplanck.app.plots import plot_trajectory
from fokkerplanck.app.verify.closed_forms import (
    gaussian_fisher,
    gaussian_kl,
    gaussian_law,
    gaussian_ratio,
    richardson,
    rotated,
)
from fokkerplanck.app.verify.framework import Check, Report, at_least, at_most, near, register
from fokkerplanck.flows.continuity import Continuity, forward_lagrangian
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.grid import Grid
from fokkerplanck.theory.stopping import kl_argmin, tau_det
from fokkerplanck.theory.theorem import nonstationarity_check


@register
def check_energies(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Closed-form log-partition functions against grid quadrature (the eight Gaussians at
    T = 1; a rotated 3D quadratic with its minimum off the origin at T = 0.8, against
    d/2 log(2 pi T) - 1/2 log det A); numba kernels (value, gradient, Laplacian, Hessian)
    against the vectorised methods, near and far (|x| = 50) from every centre."""
    n = 256 if quick else 1024
    g = Grid([(-8, 8), (-8, 8)], n)
    ring = E.GaussianMixture.ring()
    A3, T = rotated([2.5, 1.0, 0.5], 30.0, 40.0, 20.0), 0.8   # det A = 1.25: a sign error on log det shows
    Q3 = E.Quadratic(A3, mean=[0.3, -0.2, 0.1])
    g3 = Grid([(-9.0, 9.0), (-8.5, 9.0), (-9.0, 8.8)], 48 if quick else 96)
    log_z = 1.5 * math.log(2 * math.pi * T) - 0.5 * math.log(np.linalg.det(A3))
    x = np.array([[50.0, 0.0], [0.0, -50.0], [30.0, 40.0], [1.0, 2.0], [-2.9, 0.1]])
    k = ring.eval_kernels(x)
    rel = max(float(np.max(np.abs(k["value"] - ring.value(x)) / np.abs(ring.value(x)))),
              float(np.max(np.linalg.norm(k["grad"] - ring.grad(x), axis=1) / np.linalg.norm(ring.grad(x), axis=1))),
              float(np.max(np.abs(k["lap"] - ring.laplacian(x)) / np.abs(ring.laplacian(x)))),
              float(np.max(np.abs(k["hess"] - ring.hessian(x)).max(axis=(1, 2))
                           / np.abs(ring.hessian(x)).max(axis=(1, 2)))))
    # the midpoint rule converges exponentially for these smooth laws well inside their boxes:
    # measured 9e-16, 4e-16 and 7e-16 (round-off)
    return [
        at_most("eight Gaussians log Z, T = 1: |quadrature - closed form|", abs(g.log_partition(ring) - ring.log_partition()),
                1e-13),
        at_most(f"3D quadratic log Z (rotated A, mean != 0), T = {T:g}: max |quadrature or closed form - "
                "(d/2 log(2 pi T) - 1/2 log det A)|",
                max(abs(g3.log_partition(Q3, T) - log_z), abs(Q3.log_partition(T) - log_z)), 1e-13),
        at_most("eight Gaussians: kernels vs vectorised methods, max relative error (value, |grad|, lap, hess)", rel,
                1e-13, "at |x| = 50 and near the centres"),
    ]


@register(one_thread=True)
def check_fokker_planck(quick: bool = True, report: Report | None = None) -> list[Check]:
    """OU closed forms (density, KL) and second-order convergence; Lyapunov decay
    of KL along Fokker-Planck and d/dt KL = -T I; Gibbs law stationary."""
    A = np.array([[1.5, 0.5], [0.5, 0.8]])
    m0, S0, t, T = np.array([1.0, -0.5]), np.array([[0.5, 0.1], [0.1, 0.3]]), 1.0, 1.5
    exact = densities.Gaussian(*gaussian_law(A, m0, S0, T, t))
    errs = []
    ns = (40, 80) if quick else (80, 160, 320)
    for n in ns:
        g = Grid([(-9, 9)] * 2, n)
        tr = FokkerPlanck(E.Quadratic(A), g, T).solve(densities.Gaussian(m0, S0), [t])
        errs.append(np.abs(tr.densities[-1] - np.exp(exact.logpdf(g.points)).reshape(g.shape)).sum() * g.cell_volume)
    p = np.log2(errs[-2] / errs[-1])
    # measured 2.6e-3 (80^2) and 1.6e-4 (320^2): second order, the constant of this law
    out = [at_most(f"OU 2D, T = {T:g}: L1 density error vs closed form at t = 1, {ns[-1]}^2", errs[-1],
                   4e-3 if quick else 2.5e-4),
           near(f"OU 2D, T = {T:g}: observed order in h, {ns[-2]}^2 -> {ns[-1]}^2", p, 2.0, 0.2)]
    # [-16, 16]^2: N(0, 9 I) puts < 1e-6 of its mass within two cells of the walls (5 sd)
    g = Grid([(-16, 16)] * 2, 192 if quick else 512)
    fp = FokkerPlanck(E.GaussianMixture.ring(), g)
    times = np.linspace(0, 5, 51)
    tr = fp.solve(densities.Gaussian([0, 0], 9.0), times)
    kl = tr.kl()
    if report is not None:
        report.trajectory("ring_fokker_planck", tr)
        report.figure("ring_fokker_planck", plot_trajectory(tr))
    out.append(at_most("ring: max increase of KL between saves (Lyapunov)", max(np.diff(kl).max(), 0.0), 0.0))
    out.append(at_most("ring: mass error", np.abs(tr.mass() - 1).max(), 1e-12))
    I = fp.solve(densities.Gaussian([0, 0], 9.0), [1.0]).fisher()[0]
    k = fp.solve(densities.Gaussian([0, 0], 9.0), [1 - 2e-3, 1 - 1e-3, 1 + 1e-3, 1 + 2e-3]).kl()
    dkl = (4 * (k[2] - k[1]) / 2e-3 - (k[3] - k[0]) / 4e-3) / 3  # Richardson: O(dt^4)
    out.append(at_most("ring: |dKL/dt + T I| / T I at t = 1", abs(dkl + I) / I, 1e-7))
    st = fp.solve(fp.gibbs, [10.0]).densities[-1]
    out.append(at_most("ring: Gibbs law drift in L1 over t = 10", np.abs(st - fp.gibbs).sum() * g.cell_volume, 1e-12))
    return out


@register(one_thread=True)
def check_gaussian(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Closed forms of the quadratic energy U = x^T A x / 2 with A anisotropic and rotated
    (non-diagonal) at temperatures T != 1: from a Gaussian initial law both flows stay Gaussian,
    so KL(rho_t || rho*), the relative Fisher information I and R_t are known at every time.
    Fokker-Planck grid values (Richardson from h and h/2, boxes and cells different along each
    axis) against them in 1D, 2D and 3D, with the observed order in h, and d/dt KL = -T I at
    T != 1; the continuity flow's KL, R_t and tau_det (where R_t = 1, at the KL minimum)
    against theirs."""
    from scipy.optimize import brentq  # local: ~0.1 s of every fpk start-up, for this check only

    out = []
    A2 = rotated([2.5, 0.5], 35.0)   # det A = 1.25 (not 1): a sign error on a log det shows
    A3 = rotated([2.5, 1.0, 0.5], 30.0, 40.0, 20.0)
    k = 1 if quick else 2
    # (name, A, T, m0, S0, box, coarse cells, times, tolerance of the relative Richardson errors);
    # the boxes leave < 1e-6 of the mass within two cells of the walls at every time.  Measured
    # (quick): 1D 1.3e-6, 2D 7.2e-4 (KL), 3.1e-4 (I), 3.4e-4 (R_t), 3D 6.7e-4; the remainder is
    # O(h^4) on the coarse grid, where the initial law spans two to three cells
    cases = (("1D", [[1.7]], 2.5, [2.0], [[0.1]], [(-7.0, 7.5)], (150 * k,), [0.05, 0.2, 0.5, 1.0], 1e-5),
             ("2D", A2, 0.6, [1.2, -0.8], [[0.3, 0.1], [0.1, 0.2]], [(-7.0, 7.0), (-6.5, 7.5)], (40 * k, 36 * k),
              [0.1, 0.25, 0.5, 1.0, 2.0], 2e-3),
             ("3D", A3, 0.8, [0.8, -0.5, 0.4], np.diag([0.3, 0.4, 0.25]), [(-7.0, 7.0), (-6.4, 6.4), (-6.8, 7.0)],
              (24 * k, 21 * k, 22 * k), [0.2, 0.6], 2e-3))
    for name, A, T, m0, S0, box, cells, times, tol in cases:
        A, m0, S0 = np.atleast_2d(A), np.asarray(m0, dtype=float), np.atleast_2d(S0)
        grids = [Grid(box, [c * r for c in cells]) for r in (1, 2)]
        trs = [FokkerPlanck(E.Quadratic(A), g, T).solve(densities.Gaussian(m0, S0), times) for g in grids]
        laws = [gaussian_law(A, m0, S0, T, t) for t in times]
        kl = np.array([gaussian_kl(m, S, A, T) for m, S in laws])
        size = " -> ".join("x".join(map(str, g.cells)) for g in grids)
        what = f"OU {name}{', rotated anisotropic A' if len(m0) > 1 else ''}, T = {T:g}, Fokker-Planck"
        err = [np.abs(tr.kl() - kl) for tr in trs]
        rich = richardson(trs[0].kl(), trs[1].kl())
        out.append(at_most(f"{what}: max_t |KL(rho_t||rho*) - closed form| / KL, Richardson {size}",
                           float(np.max(np.abs(rich - kl) / kl)), tol,
                           f"t = {', '.join(f'{t:g}' for t in times)}; closed form {', '.join(f'{v:.4g}' for v in kl)}"))
        out.append(near(f"{what}: observed order in h of the KL error, {size}",
                        float(np.log2(err[0].sum() / err[1].sum())), 2.0, 0.2,
                        f"sum_t |KL error| {err[0].sum():.2e}, {err[1].sum():.2e}"))
        if name != "2D":
            continue
        fisher = np.array([gaussian_fisher(m, S, A, T) for m, S in laws])
        ratio = np.array([gaussian_ratio(m, S, A, T) for m, S in laws])
        out.append(at_most(f"{what}: max_t |I(rho_t||rho*) - closed form| / I, Richardson {size}",
                           float(np.max(np.abs(richardson(trs[0].fisher(), trs[1].fisher()) - fisher) / fisher)), tol))
        out.append(at_most(f"{what}: max_t |R_t - closed form|, Richardson {size}",
                           float(np.max(np.abs(richardson(trs[0].ratio(), trs[1].ratio()) - ratio))), tol))
        fp = FokkerPlanck(E.Quadratic(A), grids[1], T)
        kk = fp.solve(densities.Gaussian(m0, S0), [0.5 - 2e-3, 0.5 - 1e-3, 0.5 + 1e-3, 0.5 + 2e-3]).kl()
        dkl = (4 * (kk[2] - kk[1]) / 2e-3 - (kk[3] - kk[0]) / 4e-3) / 3  # Richardson: O(dt^4)
        TI = T * trs[1].fisher()[times.index(0.5)]
        # measured 1e-11: the time differences' O(dt^4) and round-off
        out.append(at_most(f"{what}: |dKL/dt + T I| / T I at t = 0.5, {size.split(' -> ')[1]} (the identity of "
                           "the semi-discrete flow)", abs(dkl + TI) / TI, 1e-9))

    # the continuity flow: the Lagrangian grid solver (characteristics to ODE tolerance, then the
    # midpoint rule, exponentially accurate for a Gaussian well inside the box) in 2D
    T, m0, S0 = 0.6, np.array([1.2, -0.8]), np.array([[1.3, 0.4], [0.4, 0.9]])
    times = np.linspace(0.0, 0.5, 21)
    g = Grid([(-9.0, 9.0), (-8.5, 9.0)], (58, 48))
    tr = Continuity(E.Quadratic(A2), g, method="lagrangian", temperature=T).solve(densities.Gaussian(m0, S0), times)
    laws = [gaussian_law(A2, m0, S0, T, t, noise=False) for t in times]
    kl = np.array([gaussian_kl(m, S, A2, T) for m, S in laws])
    ratio = np.array([gaussian_ratio(m, S, A2, T) for m, S in laws])
    what = f"OU 2D, rotated anisotropic A, T = {T:g}, continuity (Lagrangian 58x48)"
    # measured 1.4e-10 and 2.5e-11: the ODE tolerance (rtol 1e-10)
    out.append(at_most(f"{what}: max_t |KL(rho_t||rho*) - closed form| / KL", float(np.max(np.abs(tr.kl() - kl) / kl)),
                       1e-8, f"KL from {kl[0]:.4g} to {kl.min():.4g} (minimum) to {kl[-1]:.4g}"))
    out.append(at_most(f"{what}: max_t |R_t - closed form|", float(np.max(np.abs(tr.ratio() - ratio))), 1e-9,
                       f"R_t from {ratio[0]:.3g} to {ratio[-1]:.3g}"))
    exact = brentq(lambda t: gaussian_ratio(*gaussian_law(A2, m0, S0, T, t, noise=False), A2, T) - 1.0, 0.0, 0.5,
                   xtol=1e-14)
    td, am = tau_det(times, tr.ratio()).time, kl_argmin(times, tr.kl()).time
    # both interpolate between saves 0.025 apart (error O(dt^2): measured -2e-4 and +4e-4)
    out.append(near(f"{what}: tau_det (R_t = 1, linear between saves 0.025 apart) vs the closed-form root", td, exact,
                    1e-3, f"closed form {exact:.6f}"))
    out.append(near(f"{what}: argmin KL (parabola through the saves) vs the closed-form root of R_t = 1", am, exact,
                    1e-3, f"closed form {exact:.6f}"))
    # the continuity flow by finite volumes (MUSCL, SSP Runge-Kutta) in 1D: second order
    a, T, m0, S0 = 1.7, 2.5, np.array([2.0]), np.array([[0.8]])
    times = [0.1, 0.3, 0.5]
    kl = np.array([gaussian_kl(*gaussian_law([[a]], m0, S0, T, t, noise=False), np.array([[a]]), T) for t in times])
    cells = (200 * k, 400 * k)
    kls = [Continuity(E.Quadratic([[a]]), Grid([(-7.0, 7.5)], n), temperature=T).solve(
        densities.Gaussian(m0, S0), times).kl() for n in cells]
    what = f"OU 1D, T = {T:g}, continuity (finite volumes)"
    # measured 3e-5 (quick): the O(h^4) remainder
    out.append(at_most(f"{what}: max_t |KL(rho_t||rho*) - closed form| / KL, Richardson {cells[0]} -> {cells[1]}",
                       float(np.max(np.abs(richardson(*kls) - kl) / kl)), 1e-4,
                       f"t = {', '.join(f'{t:g}' for t in times)}; closed form {', '.join(f'{v:.4g}' for v in kl)}"))
    err = [np.abs(v - kl).sum() for v in kls]
    out.append(near(f"{what}: observed order in h of the KL error, {cells[0]} -> {cells[1]}",
                    float(np.log2(err[0] / err[1])), 2.0, 0.2, f"sum_t |KL error| {err[0]:.2e}, {err[1]:.2e}"))
    return out


@register(one_thread=True)
def check_refine(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Ground truth with error bars: the Richardson estimates of ``solve(refine=True)``
    against the OU closed form (KL at t = 0.3); the exact solver at t = 1e7 (restarted
    Chebyshev segments, then the Gibbs law by the spectral gap) conserves mass."""
    A = np.array([[1.5, 0.5], [0.5, 0.8]])
    m0, S0, times = np.array([2.0, -1.0]), np.array([[0.3, 0.0], [0.0, 0.5]]), np.array([0.0, 0.3])
    g = Grid([(-7, 7)] * 2, 64 if quick else 128)
    tr = FokkerPlanck(E.Quadratic(A), g).solve(densities.Gaussian(m0, S0), times, refine=True)
    r = tr.refinement
    m, S = D.ou_moments(A, [0, 0], m0, S0, 1.0, times[-1])
    true = tr.kl()[-1] - D.gaussian_kl(m, S, np.zeros(2), np.linalg.inv(A))
    true_R = tr.ratio()[-1] - D.gaussian_ratio(m, S, A, [0, 0], 1.0)[2]
    U = E.DoubleWell(1, barrier=2.0)
    long = FokkerPlanck(U, Grid([(-3, 3)], 4000)).solve(densities.Gaussian([0.3], 0.2), [0.0, 1.0, 1e7])
    # the true errors above come from the closed forms of fokkerplanck.diagnostics, at T = 1 there;
    # against the ones written in closed_forms (shared with nothing), at T = 0.6 and a rotated A with
    # det A != 1, for both flows: the moments, KL, Fisher information and R_t (measured 4e-16, round-off)
    A2, T2, t2 = rotated([2.5, 0.5], 35.0), 0.6, 0.4
    cross = 0.0
    for flow, noise in (("fokker-planck", True), ("continuity", False)):
        m, S = D.ou_moments(A2, [0, 0], m0, S0, T2, t2, flow=flow)
        mr, Sr = gaussian_law(A2, m0, S0, T2, t2, noise=noise)
        cross = max(cross, float(np.abs(m - mr).max()), float(np.abs(S - Sr).max()),
                    abs(D.gaussian_kl(mr, Sr, np.zeros(2), T2 * np.linalg.inv(A2)) / gaussian_kl(mr, Sr, A2, T2) - 1),
                    abs(D.gaussian_fisher(mr, Sr, A2, [0, 0], T2) / gaussian_fisher(mr, Sr, A2, T2) - 1),
                    abs(D.gaussian_ratio(mr, Sr, A2, [0, 0], T2)[2] / gaussian_ratio(mr, Sr, A2, T2) - 1))
    return [
        at_most(f"OU closed forms of the diagnostics (moments of both flows, KL, Fisher, R_t) at T = {T2:g}, rotated "
                "A: max deviation from those written here", cross, 1e-13),
        at_most(f"OU {g.cells[0]}^2: |KL error estimate / true error - 1| at t = 0.3",
                abs(r.kl_error[-1] / true - 1), 0.1),
        at_most(f"OU {g.cells[0]}^2: |R_t error estimate / true error - 1| at t = 0.3",
                abs(r.ratio_error[-1] / true_R - 1), 0.1),
        near("OU: observed order of KL over 3 grids", r.observed_order["kl"], 2.0, 0.3),
        # round-off of the Chebyshev segments before the jump: measured 7e-13
        at_most("double well 4000 cells: mass error at t = 1e7 (exact solver)", abs(long.mass()[-1] - 1), 1e-11),
    ]


@contextlib.contextmanager
def _setting(module, name: str, value):
    """``module.name = value`` inside the block, the old value restored after it (also on error)."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _sg_generator(U, spacing, T) -> np.ndarray:
    """Dense ``L`` (``d rho / dt = L rho`` on C-ordered cells) of the Scharfetter-Gummel scheme
    with zero-flux walls, from the face flux ``J = (T/h) [B(delta) rho_i - B(-delta) rho_j]``,
    ``delta = (U_j - U_i) / T``, ``B(z) = z / (e^z - 1)``, ``d rho_i / dt = -(J_out - J_in) / h``
    (DESIGN.md, section 3)."""
    from scipy.special import exprel  # local: scipy.special loads with the solvers anyway

    U = np.asarray(U, dtype=float)
    idx = np.arange(U.size).reshape(U.shape)
    L = np.zeros((U.size, U.size))
    for a, h in enumerate(spacing):
        i = np.take(idx, np.arange(U.shape[a] - 1), axis=a).ravel()
        j = np.take(idx, np.arange(1, U.shape[a]), axis=a).ravel()
        delta = (U.ravel()[j] - U.ravel()[i]) / T
        forward, back = T / h**2 / exprel(delta), T / h**2 / exprel(-delta)   # rates i -> j and j -> i
        np.add.at(L, (j, i), forward)
        np.add.at(L, (i, i), -forward)
        np.add.at(L, (i, j), back)
        np.add.at(L, (j, j), -back)
    return L


@register(one_thread=True)
def check_propagator(quick: bool = True, report: Report | None = None) -> list[Check]:
    """The exact Fokker-Planck propagator exp(t L) rho0 along each of its paths, forced on a
    small grid (eight Gaussians, T = 0.7, 20 x 18 cells) and compared with exp(t L) rho0 for
    the Scharfetter-Gummel generator assembled here from the flux formula (a truncated Taylor
    series, then an eigendecomposition once the law is near the Gibbs law): the
    generator itself; uniformisation (while the law is far from the Gibbs law in chi^2); the
    dense eigendecomposition (grids up to 2000 cells); one Chebyshev sweep (larger grids);
    Chebyshev sweeps restarted in segments, then the Gibbs law once the rest has decayed by
    the spectral gap (long times)."""
    import scipy.sparse  # local: ~0.1 s of every fpk start-up, for this check only
    from scipy.sparse.linalg import expm_multiply

    from fokkerplanck.operators import expm as X

    T = 0.7
    g = Grid([(-7.0, 7.0), (-6.5, 7.5)], (20, 18))
    fp = FokkerPlanck(E.GaussianMixture.ring(), g, T)
    U = g.evaluate(fp.energy).reshape(g.shape)
    L = _sg_generator(U, g.spacing, T)
    out = [at_most(f"Fokker-Planck generator, 20x18 cells, T = {T:g}: max |L - flux formula| / max |L|",
                   float(np.abs(fp.generator.toarray() - L).max() / np.abs(L).max()), 1e-13)]
    vol = g.cell_volume
    p0 = densities.Gaussian([0.0, 0.0], 0.05).on_grid(g).ravel()  # at the centre of the ring, where rho* is small
    p0 = p0 / (p0.sum() * vol)
    times = np.array([0.01, 0.05, 0.3, 2.0, 10.0, 60.0])
    # the reference: a truncated Taylor series (scipy's expm_multiply) up to t = 2, where the law
    # is near the Gibbs law in chi^2, then the eigendecomposition of D^{-1/2} L D^{1/2}, D = diag(e^{-U/T})
    # (symmetric by detailed balance), from there; the Gibbs law (the null vector of L) at t = 2e4
    short = times <= 2.0
    ref = np.array([expm_multiply(t * scipy.sparse.csr_matrix(L), p0) for t in times[short]])
    d = np.exp(-(U.ravel() - U.min()) / (2 * T))
    S = L * d[None, :] / d[:, None]
    lam, V = np.linalg.eigh(0.5 * (S + S.T))
    w = V.T @ (ref[-1] / d)
    # the long-time path jumps to the Gibbs law once the rest has decayed below tol in L2, at
    # log(r / tol) / gap ~ 7.4e3 after t = 60 (gap 0.0043, tol 1e-14, r <= 1); at t = 4e3 the law is
    # still 6e-9 from the Gibbs law in L1: a jump there (a rule that settles twice as fast would take
    # it, by t = 3.8e3) fails the check
    mid = 4e3
    ref = np.vstack([ref, (np.exp(np.outer(np.append(times[~short], mid) - times[short][-1], lam)) * w) @ V.T * d,
                     d**2 / (np.sum(d**2) * vol)])
    long = np.append(times, [mid, 2e4])  # 2e4: 86 e-foldings of the slowest mode, the Gibbs law

    def err(res, n):
        return float(np.max(np.abs(res[:n] - ref[:n]).sum(axis=1) * vol)) if n else math.nan

    # the spectral gap sets when the long-time path jumps to the Gibbs law: checked first, and that
    # path (which with a wrong gap could run without end) taken only when the gap is right
    gap_ref = float(np.sort(-lam)[1])
    gap_err = abs(fp.spectral_gap() / gap_ref - 1)
    # measured 1.7e-12: round-off of the two eigendecompositions (lam_max / gap ~ 1e4)
    out.append(at_most(f"spectral gap of the generator vs the eigenvalues of the flux formula's D^-1/2 L D^1/2 "
                       f"({gap_ref:.3g}), rel. error", gap_err, 1e-10))
    res, info = fp.propagator(p0, times, tol=1e-14)
    n_unif = int(np.sum(times < info["uniformisation_until"]))
    forced = copy.copy(fp.propagator)  # the same operators, the dense path switched off
    forced.eigh_max = 0
    res_c, info_c = forced(p0, times, tol=1e-14)
    res_s, info_s = None, {}
    if gap_err <= 1e-10:
        with _setting(X, "KMAX", 128):  # segments of at most 128 Chebyshev terms
            res_s, info_s = forced(p0, long, tol=1e-14)
    # measured 3e-15 (uniformisation, against the Taylor series) and 1e-13 .. 4e-13 (the others, where the
    # reference's own eigendecomposition round-off is included)
    for what, value, taken, tol, note in (
            ("uniformisation (outputs while sqrt(1 + chi^2) > 10)", err(res, n_unif), n_unif > 0, 1e-13,
             (f"{n_unif} outputs before t = {info['uniformisation_until']:.3g}, "
              f"{info['uniformisation_matvecs']} products")),
            ("dense eigendecomposition", err(res, times.size), info["exact"] == "eigh", 2e-12, ""),
            ("one Chebyshev sweep", err(res_c, times.size),
             info_c["exact"] == "chebyshev" and info_c.get("segments") == 1, 2e-12,
             f"{info_c.get('chebyshev_matvecs')} products"),
            ("Chebyshev segments of 128 terms", err(res_s, times.size) if res_s is not None else math.nan,
             info_s.get("exact") == "chebyshev" and info_s.get("segments", 0) > 1 and info_s.get("gibbs_jump_outputs", 0) > 0,
             2e-12,
             f"{info_s.get('segments')} segments, {info_s.get('gibbs_jump_outputs')} output(s) set to the Gibbs law")):
        out.append(at_most(f"exact propagator by {what}: max_t L1 error vs exp(t L) rho0", value if taken else math.inf,
                           tol, note if taken else "this path was not taken"))
    out += _metastable_check()
    # measured 3e-12 (one thread) to 1.4e-11 (two) at t = 4e3, where the round-off of 357 segments adds up
    late = (float(np.abs(res_s[times.size:] - ref[times.size:]).sum(axis=1).max() * vol)
            if res_s is not None and info_s.get("gibbs_jump_outputs") == 1 else math.inf)
    out.append(at_most(f"exact propagator by Chebyshev segments to t = {mid:g} (still 6e-9 from the Gibbs law), then "
                       "the Gibbs law at t = 2e4 (and there only): max L1 error vs exp(t L) rho0", late, 1e-10,
                       f"{info_s.get('segments')} segments" if res_s is not None else "this path was not taken"))
    return out


def _metastable_check() -> list[Check]:
    """A metastable double well on the dense path (barrier 2, T = 0.2, 300 cells): the slowest
    mode decays at gap = 1.6e-4, 2.5e-8 of the fastest rate -- far above the round-off of the
    eigendecomposition (~1e-13 of the fastest rate), so it must not be taken for the Gibbs
    direction.  From the left well: the law at t = 1/gap against exp(t L) rho0 by the
    eigendecomposition of the generator assembled here from the flux formula (its Gibbs
    eigenvalue set to 0), and the left well's mass against the two-state value 1/2 + e^{-1}/2."""
    g = Grid([(-2.5, 2.5)], 300)
    T = 0.2
    fp = FokkerPlanck(E.DoubleWell(1, barrier=2.0), g, T)
    u = g.evaluate(fp.energy)
    d = np.exp(-(u - u.min()) / (2 * T))
    S = _sg_generator(u, g.spacing, T) * d[None, :] / d[:, None]
    lam, V = np.linalg.eigh(0.5 * (S + S.T))
    lam[-1] = 0.0   # the Gibbs direction: an eigenvalue 0, known exactly
    gap = -lam[-2]
    p0 = densities.Gaussian([-1.0], 0.01).on_grid(g).ravel()
    p0 = p0 / (p0.sum() * g.cell_volume)
    tr = fp.solve(p0, [1 / gap])
    ref = d * (V @ (np.exp(lam / gap) * (V.T @ (p0 / d))))
    left = float(tr.densities[0][g.axes[0] < 0].sum() * g.cell_volume)
    what = f"metastable double well (T = {T:g}, 300 cells, gap {gap:.2g} = {gap / -lam[0]:.1g} of the fastest rate)"
    # measured 3.8e-11: the slow eigenvalue's round-off (~3e-12) times t = 1/gap = 6.4e3; and 7.4e-6,
    # the two-state reduction's own error (the fast modes and the slow mode's shape)
    return [at_most(f"{what}, dense eigendecomposition path: L1 error at t = 1/gap vs exp(t L) rho0",
                    float(np.abs(tr.densities[0] - ref).sum() * g.cell_volume) if tr.info.get("exact") == "eigh"
                    else math.inf, 1e-9),
            near(f"{what}: left-well mass at t = 1/gap vs the two-state value 1/2 + e^-1/2", left,
                 0.5 + 0.5 * math.exp(-1), 1e-4)]


@register
def check_deterministic(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Deterministic flow: OU closed forms at T != 1 (forward Lagrangian), tau_det = argmin KL
    (exact flow, grid Lagrangian, finite volumes), the non-stationarity theorem (for a rotated
    anisotropic quadratic at T != 1 its coefficient E[(h/T)^2]/2 is tr(A^2) in closed form)."""
    A, T = rotated([2.5, 0.5], 35.0), 0.6
    m0, S0 = np.array([1.0, -0.5]), np.array([[2.0, 0.3], [0.3, 1.5]])
    t = 0.7
    fl = forward_lagrangian(E.Quadratic(A), densities.Gaussian(m0, S0), [t], nodes=4, temperature=T)
    # Gauss-Hermite with 4 nodes is exact for this quadratic: measured 2e-12, the ODE tolerance
    out = [at_most(f"OU continuity, rotated anisotropic A, T = {T:g}: forward Lagrangian KL at t = {t:g}, rel. error",
                   abs(fl.kl[0] / gaussian_kl(*gaussian_law(A, m0, S0, T, t, noise=False), A, T) - 1), 1e-10)]
    U, rho0 = E.GaussianMixture.ring(), densities.Gaussian([0, 0], 9.0)
    # tau_det = 0.28; past t = 0.36 the flow concentrates mass below the cell size of the grids
    # below (the Lagrangian grid mass drifts from 1 by more than 1e-3): the saves stop before
    times = np.linspace(0, 0.35, 36)
    fl = forward_lagrangian(U, rho0, times, nodes=40)
    tau = tau_det(times, fl.ratio).time
    # tau_det interpolates R_t linearly and argmin KL by a parabola between saves 0.01 apart: O(1e-4)
    out.append(at_most("ring: |tau_det - argmin KL|, exact flow", abs(tau - kl_argmin(times, fl.kl).time), 1e-3))
    g = Grid([(-16, 16)] * 2, 256 if quick else 512)  # N(0, 9 I) inside, as in check_fokker_planck
    for method in ("lagrangian", "finite-volume"):
        tr = Continuity(U, g, method=method).solve(rho0, times)
        if report is not None:
            report.trajectory(f"ring_continuity_{method}", tr)
            report.figure(f"ring_continuity_{method}", plot_trajectory(tr))
        # the finite volumes' limiter diffuses the collapsing density (measured 7e-3 on 256^2): the save
        # spacing; the Lagrangian solver is exact at the cell centres (measured 2e-4), as for the exact flow
        out.append(at_most(f"ring: |tau_det - argmin KL|, {method} {g.cells[0]}^2",
                           abs(tau_det(times, tr.ratio()).time - kl_argmin(times, tr.kl()).time),
                           1e-3 if method == "lagrangian" else times[1],
                           "tolerance: interpolation between saves" if method == "lagrangian" else
                           "tolerance: the save spacing"))
    # the finite volumes' step in 2D: SSP-RK3 + MUSCL stays positive for dt <= 1/4 / sum_a max|v_a| / h_a
    # (the rates of the axes add); for U = x^T A x / 2 the face velocity -(A x)_a is linear, so its
    # largest size is at a corner of the face centres' box
    A2, T2 = rotated([2.5, 0.5], 35.0), 0.6
    g = Grid([(-7.0, 7.0), (-6.5, 7.5)], (40, 36))
    tr = Continuity(E.Quadratic(A2), g, temperature=T2).solve(densities.Gaussian([1.2, -0.8], [[0.3, 0.1], [0.1, 0.2]]),
                                                            [0.1, 0.5])
    rate = 0.0
    for a, h in enumerate(g.spacing):
        box = [(lo + hb / 2, hi - hb / 2) if b != a else (lo + hb, hi - hb)   # centres; interior faces on a
               for b, ((lo, hi), hb) in enumerate(zip(g.bounds, g.spacing))]
        rate += max(abs(A2[a] @ np.array(c)) for c in np.array(np.meshgrid(*box)).reshape(2, -1).T) / h
    # measured 0 (round-off)
    out.append(at_most(f"finite volumes, 2D rotated quadratic, 40x36 cells: largest positive step vs "
                       f"1/4 / sum_a max|v_a|/h_a = {0.25 / rate:.4g} (rel)", abs(tr.info["dt_max"] * rate / 0.25 - 1),
                       1e-12))
    out.append(at_least("finite volumes, 2D rotated quadratic: smallest density (positivity)", tr.info["min_density"],
                        0.0))
    # the fit of KL/t^2 at five small times carries the O(t) terms: measured 8e-8 (ring), 3e-4 (double
    # well), 6e-6 (quadratic); R_0 - 1 and the drift are round-off (measured <= 1e-13)
    for name, energy, grid, T, coef, tol in (
            ("ring", U, Grid([(-8, 8)] * 2, 96 if quick else 192), 1.0, None, 1e-6),
            ("double well", E.DoubleWell(1), Grid([(-3, 3)], 600), 1.0, None, 3e-3),
            ("quadratic, rotated anisotropic A, T = 0.6", E.Quadratic(A), Grid([(-9.0, 9.0), (-8.5, 9.0)], 48), 0.6,
             float(np.trace(A @ A)), 1e-4)):
        r = nonstationarity_check(energy, grid, T)
        exact = r.coefficient_exact if coef is None else coef
        if coef is not None:
            # E[(h/T)^2]/2 by the midpoint rule of the residual h = T lap U - |grad U|^2 against rho*
            # on the grid: exponentially accurate for this Gaussian (measured 0, round-off)
            out.append(at_most(f"theorem {name}: E[(h/T)^2]/2 by quadrature of the residual h vs tr(A^2) (rel)",
                               abs(r.coefficient_exact / coef - 1), 1e-11))
        out += [at_most(f"theorem {name}: |R_0 - 1| at rho*", abs(r.ratio_at_target - 1), 1e-12),
                at_least(f"theorem {name}: h(min) > 0 > h(far): min(h(min), -h(far))", min(r.h_at_minimum, -r.h_min),
                         0.0, strict=True),
                at_most(f"theorem {name}: KL/t^2 vs E[(h/T)^2]/2" + (" = tr(A^2)" if coef is not None else "") + " (rel)",
                        abs(r.coefficient_lagrangian / exact - 1), tol),
                at_most(f"theorem {name}: Fokker-Planck drift from rho*", r.fokker_planck_drift, 1e-12)]
    return out


