"""Checks of the particle integrators and estimators, and of score-matching training."""
from __future__ import annotations

import numba
import numpy as np

import particles
from fokkerplanck import densities, energies as E
from fokkerplanck.app.kinds.barrier import bump, disc, plot as plot_barrier
from fokkerplanck.app.plots import _plt, plot_kl
from fokkerplanck.app.verify.closed_forms import (
    gaussian_kl,
    richardson,
    rotated,
)
from fokkerplanck.app.verify.framework import Check, Report, at_least, at_most, near, register
from fokkerplanck.flows.continuity import forward_lagrangian
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.grid import Grid
from fokkerplanck.theory import score_matching as SM
from fokkerplanck.theory.barrier import smallest_lambda, unsafe_mass
from fokkerplanck.theory.stopping import kl_argmin, tau_det
from fokkerplanck.theory.thermo import ti_log_z
from particles import estimators as est
from particles.thermo import thermodynamic_integration


# A user's kernels for |x|^2 / 2 in 2D, written as users write them: grad and hess return
# ``out``, lap an integer.  The toolkit calls kernels by address with fixed signatures,
# through thin wrappers; they must give what the built-in Quadratic gives.
@numba.njit(cache=True)
def _user_value(x, p):
    return 0.5 * (x[0] * x[0] + x[1] * x[1])


@numba.njit(cache=True)
def _user_grad(x, p, out):
    out[0] = x[0]
    out[1] = x[1]
    return out


@numba.njit(cache=True)
def _user_lap(x, p):
    return x.shape[0]


@numba.njit(cache=True)
def _user_hess(x, p, out):
    out[0, 0], out[0, 1], out[1, 0], out[1, 1] = 1.0, 0.0, 0.0, 1.0
    return out


@register
def check_user_kernels(quick: bool = True, report: Report | None = None) -> list[Check]:
    """A user's kernels (Custom) against the built-in Quadratic of the same energy: values,
    gradients, Laplacians on points; MALA (which uses the values) and the Euler flow with its
    log-density (the Hessians) from the same start and seed."""
    V = E.Custom(2, _user_value, _user_grad, _user_lap, _user_hess)
    Q = E.Quadratic(np.eye(2))
    X = densities.Gaussian([0.5, -1.0], 2.0).sample(2000, seed=7)
    exact = {"value": 0.5 * (X ** 2).sum(1), "grad": X, "lap": np.full(len(X), 2.0),
             "hess": np.broadcast_to(np.eye(2), (len(X), 2, 2))}
    out = []
    for name, U in (("user kernels", V), ("Quadratic", Q)):
        k = U.eval_kernels(X)
        err = max(float(np.abs(k[key] - exact[key]).max() / max(1.0, np.abs(exact[key]).max())) for key in exact)
        out.append(at_most(f"{name} vs |x|^2 / 2: max relative |value, gradient, Laplacian, Hessian error| on "
                           "2000 points", err, 1e-14, "closed forms computed here in NumPy"))
    rv = particles.langevin(V, X, 0.05, 20, seed=8, method="mala", summaries=False)
    rq = particles.langevin(Q, X, 0.05, 20, seed=8, method="mala", summaries=False)
    out.append(at_most("user kernels vs Quadratic: MALA, 2000 particles, 20 steps, same seed: max |position "
                       "difference|", float(np.abs(rv.positions[-1] - rq.positions[-1]).max()), 1e-12,
                       f"acceptance {rv.acceptance.mean():.3f} and {rq.acceptance.mean():.3f}; one decision "
                       "taken differently would move a particle by ~0.3"))
    fv = particles.gradient_flow(V, X, 0.05, 10, method="euler", track_logdensity=True)
    fq = particles.gradient_flow(Q, X, 0.05, 10, method="euler", track_logdensity=True)
    out.append(at_most("user kernels vs Quadratic: Euler flow, 10 steps: max |log-density difference|",
                       float(np.abs(fv.logdensity[-1] - fq.logdensity[-1]).max()), 1e-12,
                       f"exact value 20 log(1 / 0.95) = {-20 * np.log(0.95):.6f} for both"))
    return out


@register
def check_particles(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Particles against the grid and closed forms: k-NN KL of a Langevin ensemble vs the
    Fokker-Planck KL (Richardson from two grids) while relaxing and near equilibrium;
    tracked-log-density KL of a deterministic ensemble vs the exact flow; tau_det of particles;
    for a rotated anisotropic quadratic at T != 1 the exact laws of the discrete schemes
    themselves: Euler-Maruyama keeps Gaussians Gaussian (mean M m, covariance M S M^T + 2 T dt I,
    M = I - dt A) and the Euler map x -> M x maps N(m0, S0) to N(M^k m0, M^k S0 M^kT)."""
    U = E.GaussianMixture.ring()
    G4 = densities.Gaussian([0, 0], 4.0)
    n = 30_000 if quick else 200_000
    r = particles.langevin(U, G4.sample(n, seed=1), 2e-3, 500, seed=2, save_every=50)
    # N(0, 4 I) in [-11, 11]^2: < 1e-6 of its mass within two cells of the walls
    cells = (88, 176) if quick else (176, 352)
    trs = [FokkerPlanck(U, Grid([(-11, 11)] * 2, c)).solve(G4, r.times) for c in cells]
    kl_grid = richardson(trs[0].kl(), trs[1].kl())
    if report is not None:
        tr = trs[1]
        knn = [est.kl_knn(x, U) for x in r.positions]
        fig, ax = _plt().subplots(figsize=(7, 4.5), layout="constrained")
        plot_kl(ax, tr.times, tr.kl(), label="grid Fokker-Planck", color="C1")
        plot_kl(ax, r.times, [k.value for k in knn], stderr=[k.stderr for k in knn], color="C3",
                label=f"{n} Langevin particles (EM, dt = 2e-3), kNN", flow="eight Gaussians from N(0, 4 I)")
        report.figure("ring_particles_kl", fig)
    # windows of 4 standard errors: the grid's O(h^2) is removed by Richardson (176^2 alone is 0.018 high
    # at t = 0.2), the O(dt) of Euler-Maruyama moves KL(0.2) by < 0.01 (< 1 se) from dt = 4e-3 to 1e-3,
    # and the k-NN estimate of exact samples of rho* at this N is 0.001 +- 0.003
    out = []
    for j in (20, 100):
        e = est.kl_knn(r.positions[j // 10], U)
        out.append(near(f"ring: kNN KL of {n} Langevin particles vs grid KL (Richardson {cells[0]}^2 -> {cells[1]}^2) "
                        f"at t = {r.times[j // 10]:g}", e.value, kl_grid[j // 10], 4 * e.stderr,
                        f"tolerance 4 stderr, stderr {e.stderr:.2g}; {cells[1]}^2 alone: {trs[1].kl()[j // 10]:.4g}",
                        strict=True))
    G = densities.Gaussian([0, 0], 4.0)
    x0 = G.sample(n, seed=3)
    f = particles.gradient_flow(U, x0, 1e-3, 300, method="rk4", track_logdensity=True, logrho0=G.logpdf(x0))
    cells = (64, 128) if quick else (128, 256)
    ref = richardson(*[forward_lagrangian(U, densities.GridDensity(gg, G.on_grid(gg)), [0.3]).kl[0]
                        for gg in (Grid([(-12, 12)] * 2, c) for c in cells)])
    s = f.summaries
    # the midpoint rule's O(h^2) is removed by Richardson (128^2 alone is 2e-3 high)
    out.append(near(f"ring: tracked KL vs Lagrangian KL (Richardson {cells[0]}^2 -> {cells[1]}^2) at t = 0.3", s["kl"][-1],
                    ref, 4 * s["kl_se"][-1], f"tolerance 4 stderr, stderr {s['kl_se'][-1]:.2g}", strict=True))
    # tau_det = argmin KL for particles: along each path d/dt [log rho_t + U/T](X_t) = lap U - |grad U|^2 / T,
    # so the ensemble's tracked KL is stationary exactly where its own R_t crosses 1, whatever N.

    G9 = densities.Gaussian([0, 0], 9.0)
    x0 = G9.sample(n // 3, seed=4)  # the identity holds for any N; N sets only the error bar vs the exact time
    f = particles.gradient_flow(U, x0, 1e-3, 400, method="rk4", save_every=5, track_logdensity=True,
                                logrho0=G9.logpdf(x0))
    s = f.summaries
    td = tau_det(f.times, s["ratio"], stderr=s["ratio_se"])
    am = kl_argmin(f.times, s["kl"])
    out.append(at_most("ring: |tau_det - argmin KL|, particles (RK4, dt = 1e-3)", abs(td.time - am.time), 5e-4,
                       "tolerance: 1/10 of the save spacing"))
    times = np.linspace(0, 0.4, 81)
    R_exact = forward_lagrangian(U, G9, times, nodes=40).ratio
    exact = tau_det(times, R_exact).time
    out.append(near("ring: tau_det particles vs tau_det exact", td.time, exact, 4 * td.stderr + 1e-4,
                    f"tolerance 4 stderr + 1e-4 (the exact time interpolated between saves 0.005 apart); particles "
                    f"{td.time:.5f} +- {td.stderr:.1g} (k* = {td.step(1e-3)}), exact {exact:.5f}", strict=True))
    # the delta method: se(tau_det) = se(R_t) / |dR/dt| at the crossing, here with the slope of the
    # exact flow's R_t (the particles' slope differs by their noise: measured 3 %)
    slope = float(np.interp(td.time, times, np.gradient(R_exact, times)))
    se_r = float(np.interp(td.time, f.times, s["ratio_se"]))
    out.append(near("ring: error of tau_det x |dR/dt of the exact flow| / error of R_t at the crossing (delta method)",
                    td.stderr * abs(slope) / se_r, 1.0, 0.2, f"dR/dt = {slope:.3g}, se(R_t) = {se_r:.2g}"))

    # the discrete schemes' own laws for U = x^T A x / 2 at T = 0.6
    A, T, dt = rotated([2.5, 0.5], 35.0), 0.6, 0.01
    m0, S0 = np.array([1.2, -0.8]), np.array([[0.3, 0.1], [0.1, 0.2]])
    N = 20_000 if quick else 200_000
    x0 = densities.Gaussian(m0, S0).sample(N, seed=5)
    M = np.eye(2) - dt * A
    m, S = m0, S0
    for _ in range(100):
        m, S = M @ m, M @ S @ M.T + 2 * T * dt * np.eye(2)
    em = particles.langevin(E.Quadratic(A), x0, dt, 100, temperature=T, seed=6)
    X = em.positions[-1]
    C = np.cov(X.T)
    z = np.concatenate([(X.mean(axis=0) - m) / np.sqrt(np.diag(S) / N),
                        [(C[i, j] - S[i, j]) / np.sqrt((S[i, i] * S[j, j] + S[i, j] ** 2) / N)
                         for i, j in ((0, 0), (0, 1), (1, 1))]])
    out.append(at_most(f"OU 2D, rotated anisotropic A, T = {T:g}: Euler-Maruyama ({N} particles, dt = {dt:g}, 100 steps) "
                       "vs the exact law of the scheme, max |z| of the mean and covariance",
                       float(np.abs(z).max()), 4.5, "5 statistics: 4.5 standard errors (a false alarm below 1e-4)"))
    # MALA's invariant law is exact: from N(m0, S0), 200 steps of dt = 0.15 (30 relaxation times of
    # the slowest direction) give N independent draws of N(0, T A^-1) -- where Euler-Maruyama at this
    # step is 10 standard errors off in the covariance
    Xm = particles.langevin(E.Quadratic(A), x0, 0.15, 200, method="mala", temperature=T, seed=10).positions[-1]
    Sg, Cm = T * np.linalg.inv(A), np.cov(Xm.T)
    zm = np.concatenate([Xm.mean(axis=0) / np.sqrt(np.diag(Sg) / N),
                         [(Cm[i, j] - Sg[i, j]) / np.sqrt((Sg[i, i] * Sg[j, j] + Sg[i, j] ** 2) / N)
                          for i, j in ((0, 0), (0, 1), (1, 1))]])
    out.append(at_most(f"OU 2D, rotated anisotropic A, T = {T:g}: MALA ({N} chains, dt = 0.15, 200 steps from N(m0, S0)) "
                       "vs the Gibbs law N(0, T A^-1), max |z| of the mean and covariance", float(np.abs(zm).max()), 4.5,
                       "5 statistics: 4.5 standard errors"))
    # the k-NN estimate of 2e4 samples of a 2D Gaussian is biased by ~1e-3 (well below its error bar)
    e = est.kl_knn(X, E.Quadratic(A), T)
    kl = gaussian_kl(m, S, A, T)
    out.append(near(f"OU 2D, T = {T:g}: kNN KL of the Euler-Maruyama ensemble vs the closed form of the scheme's law",
                    e.value, kl, 4 * e.stderr, f"tolerance 4 stderr, stderr {e.stderr:.2g}", strict=True))
    # the k-NN entropy in 1D and 3D (the unit ball's volume matters there, not in 2D): exact samples
    A3, T3 = rotated([2.5, 1.0, 0.5], 30.0, 40.0, 20.0), 0.8
    for name, Ad, md, Sd in (("1D", np.array([[1.7]]), np.array([0.5]), np.array([[0.4]])),
                             ("3D, rotated anisotropic A", A3, np.array([0.3, -0.2, 0.1]), np.diag([0.3, 0.4, 0.25]))):
        e = est.kl_knn(densities.Gaussian(md, Sd).sample(N, seed=8), E.Quadratic(Ad), T3)
        out.append(near(f"{name}, T = {T3:g}: kNN KL of {N} exact samples of a Gaussian vs its closed form", e.value,
                        gaussian_kl(md, Sd, Ad, T3), 4 * e.stderr, f"tolerance 4 stderr, stderr {e.stderr:.2g}",
                        strict=True))
    out += _summary_checks(em, X, r, U, A, T)
    out += _flow_scheme_checks(A, T, x0)

    # exact samples of a grid density: the cell by its mass, then uniform inside the cell, so the
    # sample mean and variance estimate the piecewise-constant law's, sum p_i c_i and
    # sum p_i (c_i^2 + h^2 / 12) - mean^2 per axis
    g = Grid([(-7.0, 7.0), (-6.5, 7.5)], (40, 36))
    rho = densities.Gaussian(m0, 4 * S0).on_grid(g)
    Y = g.sample(rho, N, seed=7)
    p = rho.ravel() / rho.sum()
    mean = p @ g.points
    var = p @ g.points**2 + np.asarray(g.spacing) ** 2 / 12 - mean**2
    zs = np.concatenate([(Y.mean(axis=0) - mean) / np.sqrt(var / N), (Y.var(axis=0) - var) / (var * np.sqrt(2 / N))])
    out.append(at_most(f"grid sampling ({N} samples of a Gaussian on 40x36 cells of 0.35 x 0.39) vs the moments of the "
                       "piecewise-constant law, max |z| of the mean and variance", float(np.abs(zs).max()), 4.5,
                       "4 statistics: 4.5 standard errors (the variance's error bar from its Gaussian value)"))
    G0 = densities.Gaussian(m0, S0)
    f = particles.gradient_flow(E.Quadratic(A), x0, dt, 40, method="euler", track_logdensity=True,
                                logrho0=G0.logpdf(x0), temperature=T)
    Mk = np.linalg.matrix_power(M, 40)
    law = densities.Gaussian(Mk @ m0, Mk @ S0 @ Mk.T)
    # the tracked change -log|det(I - dt A)| per step is exact for this map: measured 5e-14 (round-off)
    out.append(at_most(f"OU 2D, T = {T:g}: Euler flow (dt = {dt:g}, 40 steps), max |tracked log-density - exact "
                       "logpdf of the mapped Gaussian|", float(np.abs(f.logdensity[-1] - law.logpdf(f.positions[-1])).max()),
                       1e-12))
    kl = gaussian_kl(Mk @ m0, Mk @ S0 @ Mk.T, A, T)
    s = f.summaries
    out.append(near(f"OU 2D, T = {T:g}: Euler flow, tracked KL(rho_t || rho*) vs the closed form of the mapped "
                    "Gaussian", s["kl"][-1], kl, 4 * s["kl_se"][-1], f"tolerance 4 stderr, stderr {s['kl_se'][-1]:.2g}",
                    strict=True))
    return out


@register
def check_learning(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Trained and data-defined energies: a callable energy steps as its numba twin;
    the KDE cut-off meets its bound; the heat flow from the data is the wider KDE (second
    order); thermodynamic integration against grid quadrature; AUROC against its closed form;
    score matching recovers a Gaussian; the smallest safe barrier lambda is sharp."""
    # local: scipy.stats (also under fokkerplanck.theory.ood) costs ~0.4 s of every fpk start-up
    from scipy.stats import norm

    from fokkerplanck.theory.ood import auroc

    out = []
    ring = E.GaussianMixture.ring()
    rng = np.random.default_rng(0)
    U = E.from_callable(ring._value, ring._grad, ring._lap, dim=2, name="ring (numpy)")
    x0 = rng.normal(size=(2000, 2)) * 3
    a = particles.langevin(ring, x0, 0.01, 100, seed=3).positions[-1]
    b = particles.langevin(U, x0, 0.01, 100, seed=3).positions[-1]
    # round-off of two summation orders over 100 steps: measured 1.4e-14
    out.append(at_most("callable energy: vectorised ULA path vs numba path, max |dX| (100 steps)",
                       float(np.abs(a - b).max()), 1e-12))

    data = ring.sample(3000, seed=1)
    K, GM = E.KDE(data, 0.2, tol=1e-9), E.GaussianMixture(data, 0.2)
    X = np.concatenate([rng.normal(size=(400, 2)) * 4, [[30.0, 30.0]]])
    out.append(at_most("KDE (3000 points) cut-off: max |U - U_full| (tol 1e-9)",
                       float(np.abs(K.value(X) - GM.value(X)).max()), 1.01e-9))

    src = E.KDE(rng.normal(size=(30, 2)) * 0.8, 0.3)
    zero = E.from_callable(lambda Y: np.zeros(Y.shape[0]), lambda Y: np.zeros_like(Y), dim=2, name="zero")
    errs = []
    for cells in (40, 80):
        g = Grid([(-6, 6)] * 2, cells)
        tr = FokkerPlanck(zero, g, 0.5).solve(g.density_from_logpdf(lambda Y: -src.value(Y)), [0.0, 0.4])
        errs.append(g.integrate(np.abs(tr.densities[-1] - g.density_from_logpdf(lambda Y: -src.smoothed(0.4, 0.5).value(Y)))))
    order = float(np.log2(errs[0] / errs[1]))
    out.append(near("heat flow from the data vs KDE(sqrt(h^2 + 2Tt)), 40 -> 80 cells: observed order", order, 2.0,
                    0.2, f"L1 errors {errs[0]:.2e}, {errs[1]:.2e}", strict=True))

    U1, U0 = ring + E.Quadratic(0.05 * np.eye(2)), E.Quadratic(np.eye(2) / 9.0)
    g = Grid([(-16, 16)] * 2, 320)
    exact = g.log_partition(U1)
    q = abs(ti_log_z(U1, U0, g, 16) - exact)
    out.append(at_most("thermodynamic integration, 16 Gauss-Legendre nodes: grid quadrature error of log Z", q, 1e-5))
    r = thermodynamic_integration(U1, U0, rng.normal(size=(2000 if quick else 10000, 2)) * 3, nodes=16, seed=2)
    out.append(at_most("thermodynamic integration, MALA particles: |log Z - grid| / se", abs(r.log_z - exact) / r.se,
                       4.0, f"log Z = {r.log_z:.5f} +- {r.se:.2g}, grid {exact:.5f}"))

    auc = auroc(rng.normal(size=20000), rng.normal(size=20000) + 1.0)
    out.append(at_most("AUROC of N(0,1) vs N(1,1) scores: |AUROC - Phi(1/sqrt 2)| / DeLong se",
                       abs(auc.value - norm.cdf(1 / np.sqrt(2))) / auc.se, 4.0))

    P = np.array([[2.0, 0.6], [0.6, 1.0]])
    g = Grid([(-7, 7)] * 2, 200)
    th = SM.fit_ism_grid(SM.PolynomialBasis(2, 2), g, g.gibbs(E.Quadratic(P)))
    # measured 4e-9: the midpoint rule of the Gaussian's moments on this box
    out.append(at_most("implicit score matching of a Gaussian (quadratic basis, grid): max |theta - exact|",
                       float(np.abs(th - [0, 0, 0.5 * P[0, 0], P[0, 1], 0.5 * P[1, 1]]).max()), 1e-7))

    c = [4.0, 0.0]
    unsafe, Um = disc(c, 1.0), bump(c, 1.0)
    g = Grid([(-8, 8)] * 2, 48)
    rho0 = densities.Gaussian(np.zeros(2), 2.0 * np.eye(2))
    times = np.linspace(0, 2, 9)
    res = smallest_lambda(ring, Um, g, rho0, times, unsafe, 0.05, lam_max=20.0, tol=0.02)
    below_tol = unsafe_mass(FokkerPlanck(ring - (res.lam - res.tol) * Um, g).solve(rho0, times), unsafe).max()
    out.append(at_most("barrier: lambda* safe (max_t rho_t(unsafe) at lambda*, <= beta)", float(res.mass.max()), 0.05,
                       f"lambda* = {res.lam:.4g}, tol {res.tol:.2g}"))
    out.append(at_least("barrier: lambda* - tol unsafe (max_t rho_t(unsafe) at lambda* - tol, > beta)",
                        float(below_tol), 0.05, f"lambda* = {res.lam:.4g}, tol {res.tol:.2g}", strict=True))
    if report is not None:
        fig = plot_barrier(None, {"barrier_fokker_planck": {"times": times, "mass": res.mass, "lam": res.lam,
                                                             "beta": 0.05},
                                  "free": {"times": times, "mass": unsafe_mass(FokkerPlanck(ring, g).solve(rho0, times),
                                                                               unsafe)}}, None)
        report.figure("barrier", fig)
    return out


def _summary_checks(em, X, ring_run, ring, A, T) -> list[Check]:
    """The ensembles' merged block summaries (blocks of 4096 particles, Chan's update) against
    one pass of numpy over the whole ensemble: mean, covariance and its standard error; R_t and
    its delta-method error, here from the influence values ``T (lap U - R |grad U|^2) / E|grad U|^2``
    (an OU ensemble at T != 1, where lap U = tr A is constant, and the eight Gaussians at T = 1,
    where lap U varies)."""
    s = {k: v[-1] for k, v in em.summaries.items()}
    N = X.shape[0]
    c = X - X.mean(axis=0)
    prod = c[:, :, None] * c[:, None, :]
    cov_se = prod.std(axis=0, ddof=1) / np.sqrt(N)
    # round-off of sums over 2e4 particles: measured 1e-15 (mean, covariance), 2e-15 (errors)
    rel = max(float(np.abs(s["mean"] - X.mean(axis=0)).max() / np.abs(X).max()),
              float(np.abs(s["cov"] - np.cov(X.T)).max() / np.abs(np.cov(X.T)).max()),
              float(np.abs(s["cov_se"] - cov_se).max() / cov_se.max()))
    out = [at_most(f"OU 2D ensemble ({N} particles): merged block summaries vs numpy, max relative error of the mean, "
                   "covariance and the covariance's standard error", rel, 1e-12)]
    for name, ens, lap, grad2, temp in (
            (f"OU 2D, T = {T:g}", em, np.full(N, np.trace(A)), np.sum((X @ A) ** 2, axis=1), T),
            ("ring, T = 1", ring_run, ring.laplacian(ring_run.positions[-1]),
             np.sum(ring.grad(ring_run.positions[-1]) ** 2, axis=1), 1.0)):
        R = temp * lap.mean() / grad2.mean()
        infl = temp * (lap - R / temp * grad2) / grad2.mean()
        se = infl.std(ddof=1) / np.sqrt(infl.size)
        got, got_se = ens.summaries["ratio"][-1], ens.summaries["ratio_se"][-1]
        out.append(at_most(f"{name}: ensemble R_t and its delta-method error vs the influence values, max relative "
                           "error", max(abs(got / R - 1), abs(got_se / se - 1)), 1e-12,
                           f"R_t = {R:.5f} +- {se:.2g}"))
    return out


def _flow_scheme_checks(A, T, x0) -> list[Check]:
    """The deterministic schemes' own maps and orders.  For U = x^T A x / 2 one step of Heun is
    x -> (I - Z + Z^2/2) x and one of RK4 x -> (sum_k (-Z)^k / k!, k <= 4) x, Z = dt A.  For the
    separable double well U = b sum_i ((x_i/s)^2 - 1)^2 the flow is known: y = x_i^2 solves the
    logistic equation y' = k y (1 - y/s^2), k = 8 b / s^2, and along it int_0^t lap U(x_u) du =
    sum_i log(U'(x_i(0)) / U'(x_i(t))); the tracked log-density (lap U varies along the path)
    converges to it at the scheme's order."""
    out = []
    dt, n = 0.1, 40
    Z = dt * A
    for method, coefs in (("heun", (1.0, -1.0, 0.5)), ("rk4", (1.0, -1.0, 0.5, -1 / 6, 1 / 24))):
        step = sum(c * np.linalg.matrix_power(Z, k) for k, c in enumerate(coefs))
        f = particles.gradient_flow(E.Quadratic(A), x0[:2000], dt, n, method=method, temperature=T)
        exact = x0[:2000] @ np.linalg.matrix_power(step, n).T
        # round-off over 40 steps: measured 2e-16 (Heun), 5e-16 (RK4)
        out.append(at_most(f"OU 2D: {method} (dt = {dt:g}, {n} steps) vs its step polynomial of dt A, max |dx|",
                           float(np.abs(f.positions[-1] - exact).max()), 1e-12))
    b, s, t = 1.5, 1.3, 0.3
    U = E.DoubleWell(2, barrier=b, scale=s)
    y0 = np.array([[0.3, -2.0], [1.0, 0.6], [-0.2, 1.6], [-1.9, -0.9]])
    k = 8 * b / s**2
    yt = np.sign(y0) * np.sqrt(s**2 * y0**2 * np.exp(k * t) / (s**2 + y0**2 * np.expm1(k * t)))
    ell = np.sum(np.log(U.grad(y0) / U.grad(yt)), axis=1)
    for method, order, steps in (("heun", 2, (30, 60, 120)), ("rk4", 4, (15, 30, 60))):
        ex, el = [], []
        for m in steps:
            f = particles.gradient_flow(U, y0, t / m, m, method=method, track_logdensity=True, logrho0=np.zeros(4))
            ex.append(np.abs(f.positions[-1] - yt).max())
            el.append(np.abs(f.logdensity[-1] - ell).max())
        px, pl = np.log2(ex[-2] / ex[-1]), np.log2(el[-2] / el[-1])
        # measured (Heun) 2.05 and 2.2, (RK4) 4.02 and 4.1: the leading order plus the next term's share
        out.append(near(f"2D double well (b = {b:g}, s = {s:g}): {method}, observed order in dt of the position and of "
                        f"the tracked log-density vs the closed-form flow at t = {t:g}, {steps[-2]} -> {steps[-1]} "
                        "steps (the value farther from the order)", px if abs(px - order) > abs(pl - order) else pl,
                        order, 0.3, f"positions {px:.3f}, log-density {pl:.3f}; errors {ex[-1]:.2e}, {el[-1]:.2e}"))
    return out
