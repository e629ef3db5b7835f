"""Thermodynamic integration, OOD scores and barrier functionals against closed forms and
exact grid flows."""
import numpy as np
import pytest
from scipy.stats import norm

import particles
from fokkerplanck import FokkerPlanck, Grid, densities, energies as E
from fokkerplanck.theory.barrier import cell_fractions, particle_unsafe_mass, smallest_lambda, unsafe_mass
from fokkerplanck.theory.ood import auroc, flow_displacement, scores
from fokkerplanck.theory.thermo import ti_integrand, ti_log_z
from particles.thermo import gauss_legendre_01, thermodynamic_integration

RING = E.GaussianMixture.ring(8, 4.0, 0.5)


@pytest.mark.slow  # compiles kernels cold (20-45 s in a clean clone): CI's second step
def test_ti_quadrature_converges_and_particles_agree_with_the_grid():
    """Grid: the Gauss-Legendre error of the exact integrand falls fast (measured 1.8e-3 at
    8 nodes, 2.7e-6 at 16).  Particles (MALA, auto step): log Z within 4 standard errors
    of the grid's, and the integrand at each node within 4.5 standard errors."""
    U1 = RING + E.Quadratic(0.05 * np.eye(2))
    U0 = E.Quadratic(np.eye(2) / 9.0)
    g = Grid([(-16, 16)] * 2, 320)
    exact = g.log_partition(U1)
    errs = [abs(ti_log_z(U1, U0, g, n) - exact) for n in (4, 8, 16)]
    assert errs[0] > 10 * errs[1] > 100 * errs[2] and errs[2] < 1e-5
    x0 = np.random.default_rng(0).normal(size=(3000, 2)) * 3
    r = thermodynamic_integration(U1, U0, x0, nodes=16, n_steps=100, seed=1)
    assert abs(r.log_z - exact) < 4 * r.se + errs[2] and r.se < 0.03
    z = (r.means - ti_integrand(U1, U0, g, r.s)) / r.ses
    assert np.abs(z).max() < 4.5
    assert np.all((r.acceptance > 0.4) & (r.acceptance < 0.95))


@pytest.mark.slow  # 10 runs of 8 nodes x 2000 chains (~1-2 min on 2 cores, after compiling)
def test_ti_quadratic_to_double_well_within_two_standard_errors():
    """log Z1/Z0 from N(0, 1) to the double well 3 ((x / 1.5)^2 - 1)^2: the chains are
    carried from node to node, the step is the one that decorrelates the integrand
    fastest, the burn-in lasts until the integrand stops drifting, and the error bar is by
    batch means over the chains.  Within 2 se of the exact value of the same 8-node
    quadrature (grid expectations) in at least 9 of 10 seeds, and no bias (mean z within
    +-1).  Measured: 9 of 10, mean z +0.31; over seeds 0-29, 29 of 30 with mean z -0.25
    and sd(z) 1.02 (30 of 30 at 1000 chains).
    Before (one snapshot per chain, the step tuned by acceptance alone: chains stuck in
    the tails): 7 of 10, mean z -1.63, every z negative.  Every node is diagnosed
    converged (split R-hat < 1.05)."""
    U0, U1 = E.Quadratic(np.eye(1)), E.DoubleWell(1, 3.0, 1.5)
    g = Grid([(-7, 7)], 2000)
    exact = ti_log_z(U1, U0, g, 8) - g.log_partition(U0)
    closed = U1.log_partition() - U0.log_partition()
    ex_int = ti_integrand(U1, U0, g, gauss_legendre_01(8)[0])
    z = []
    for seed in range(10):
        x0 = np.random.default_rng(seed).normal(size=(2000, 1))
        r = thermodynamic_integration(U1, U0, x0, nodes=8, n_steps=200, seed=seed)
        assert abs(exact - closed) < 0.1 * r.se   # the quadrature error is negligible here
        z.append((r.log_z - U0.log_partition() - exact) / r.se)
        assert r.n_chains == 2000 and np.all(r.converged) and np.all(r.rhat < 1.05)
        assert np.all(r.burn_in >= 200) and np.all(r.ess > 2000) and np.all(r.tau >= 1)
        assert np.abs((r.means - ex_int) / r.ses).max() < 4.5
    z = np.array(z)
    assert np.sum(np.abs(z) < 2) >= 9 and abs(z.mean()) < 1, z


def test_autocorrelation_time_ess_and_batch_means_on_ar1():
    """AR(1) x_t = phi x_{t-1} + e_t, phi = 0.8: tau = (1 + phi) / (1 - phi) = 9 and the
    mean of T samples has variance ~ tau / ((1 - phi^2) T).  The estimated tau is within
    10%, the ESS and batch-means errors match the spread of 400 replicate means (their
    z-scores have variance ~1; the i.i.d. formula's has ~9), and split R-hat tells
    stationary chains (< 1.01) from chains that do not share a mean (> 1.1)."""
    from scipy.signal import lfilter

    from particles.estimators import autocorrelation_time, batch_means_se, effective_sample_size, split_rhat

    phi = 0.8

    def ar1(T, m, seed):
        e = np.random.default_rng(seed).normal(size=(T, m))
        e[0] /= np.sqrt(1 - phi**2)   # stationary start
        return lfilter([1.0], [1.0, -phi], e, axis=0)

    x = ar1(20_000, 8, 0)
    tau = (1 + phi) / (1 - phi)
    assert abs(autocorrelation_time(x) / tau - 1) < 0.1, autocorrelation_time(x)
    assert abs(autocorrelation_time(x[:, 0]) / tau - 1) < 0.15
    assert effective_sample_size(x) == pytest.approx(x.size / autocorrelation_time(x))
    assert abs(autocorrelation_time(np.random.default_rng(1).normal(size=5000)) - 1) < 0.15
    T, reps = 2000, 400
    R = ar1(T, reps, 2)
    var_mean = (tau - 2 * phi * (1 - phi**T) / (T * (1 - phi) ** 2)) / ((1 - phi**2) * T)   # exact, finite T
    means = R.mean(axis=0)
    se_ess = np.array([R[:, j].std(ddof=1) / np.sqrt(effective_sample_size(R[:, j])) for j in range(reps)])
    se_bm = np.array([batch_means_se(R[:, j]) for j in range(reps)])
    se_iid = R.std(axis=0, ddof=1) / np.sqrt(T)
    for se in (se_ess, se_bm):
        assert abs(np.mean(se) / np.sqrt(var_mean) - 1) < 0.1, (np.mean(se), np.sqrt(var_mean))
        assert 0.8 < np.var(means / se) < 1.25, np.var(means / se)
    assert np.var(means / se_iid) > 6          # the i.i.d. error ignores tau = 9
    assert split_rhat(x) < 1.01
    assert split_rhat(x + 0.5 * np.arange(8)) > 1.1
    assert split_rhat(x + np.linspace(0, 4, x.shape[0])[:, None]) > 1.1   # a drift within the chains


def test_ti_bad_input():
    with pytest.raises(ValueError, match="dimension"):
        thermodynamic_integration(RING, E.Quadratic(np.eye(3)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="'auto'"):
        thermodynamic_integration(RING, E.Quadratic(np.eye(2)), np.zeros((10, 2)), dt="fast")
    with pytest.raises(ValueError, match="burn_in"):
        thermodynamic_integration(RING, E.Quadratic(np.eye(2)), np.zeros((10, 2)), burn_in="long")
    with pytest.raises(ValueError, match="burn_in"):
        thermodynamic_integration(RING, E.Quadratic(np.eye(2)), np.zeros((10, 2)), burn_in=-5)


def test_auroc_closed_form_and_delong_coverage():
    """Scores N(0,1) in, N(mu,1) out: AUROC = Phi(mu / sqrt 2); DeLong's error bars cover it
    (z-scores over 200 replicas: mean ~0, sd ~1)."""
    rng = np.random.default_rng(3)
    mu = 1.0
    z = []
    for _ in range(200):
        r = auroc(rng.normal(size=300), rng.normal(size=200) + mu)
        z.append((r.value - norm.cdf(mu / np.sqrt(2))) / r.se)
    z = np.array(z)
    assert abs(z.mean()) < 0.25 and 0.85 < z.std() < 1.2
    assert auroc([0, 0, 1, 1], [1, 1, 2, 2]).value == 0.875  # ties count a half
    with pytest.raises(ValueError, match="at least 2"):
        auroc([1.0], [2.0, 3.0])


def test_ood_scores():
    """S3 for a quadratic energy has a closed form: tau Euler steps multiply x by (1 - dt)^tau.
    On the ring, all three scores separate uniform noise from samples."""
    Q = E.Quadratic(np.eye(2))
    X = np.random.default_rng(1).normal(size=(50, 2))
    np.testing.assert_allclose(flow_displacement(Q, X, 0.1, 7), (1 - 0.9 ** 7) * np.linalg.norm(X, axis=1),
                               rtol=1e-13)
    rng = np.random.default_rng(2)
    s_in = scores(RING, RING.sample(2000, seed=4))
    s_out = scores(RING, rng.uniform(-6, 6, size=(2000, 2)))
    for k in ("S1", "S2", "S3"):
        assert auroc(s_in[k], s_out[k]).value > 0.75
    with pytest.raises(ValueError, match="unknown score"):
        scores(RING, X, which=("S9",))


@pytest.mark.slow  # compiles kernels cold (20-45 s in a clean clone): CI's second step
def test_unsafe_mass_and_the_smallest_lambda():
    """Cell fractions of a disc give its area to O(h/sub); the bisection's lambda* is safe and
    lambda* - tol is not; particles at lambda* agree with the grid within their error bars."""
    c = np.array([4.0, 0.0])

    def unsafe(X):
        return np.linalg.norm(X - c, axis=1) < 1.0
    g = Grid([(-8, 8)] * 2, 64)
    area = cell_fractions(g, unsafe).sum() * g.cell_volume
    assert abs(area - np.pi) < 0.02
    Um = E.from_callable(lambda X: -np.exp(-((X - c) ** 2).sum(1) / 2), dim=2, name="bump")
    rho0 = densities.Gaussian(np.zeros(2), 2.0 * np.eye(2))
    times = np.linspace(0, 3, 13)
    r = smallest_lambda(RING, Um, g, rho0, times, unsafe, beta=0.05, lam_max=20.0, tol=1e-2)
    assert r.mass.max() <= 0.05
    tr = FokkerPlanck(RING - (r.lam - r.tol) * Um, g).solve(rho0, times)
    assert unsafe_mass(tr, unsafe).max() > 0.05
    lams = np.array([h[0] for h in r.history])
    worst = np.array([h[1] for h in r.history])
    order = np.argsort(lams)
    assert np.all(np.diff(worst[order]) <= 1e-12)  # monotone here, as bisection assumes
    ens = particles.langevin(RING - r.lam * Um, rho0.sample(10000, seed=1), 0.01, 300, save_every=50, seed=2)
    p, se = particle_unsafe_mass(ens, unsafe)
    grid_mass = unsafe_mass(FokkerPlanck(RING - r.lam * Um, g).solve(rho0, ens.times), unsafe)
    assert np.all(np.abs(p - grid_mass) < 4 * se + 3e-3)  # + the grid's O(h^2) and ULA's O(dt) biases
    with pytest.raises(ValueError, match="raise lam_max"):
        smallest_lambda(RING, Um, g, rho0, times, unsafe, beta=0.05, lam_max=0.5)
    with pytest.raises(ValueError, match="beta"):
        smallest_lambda(RING, Um, g, rho0, times, unsafe, beta=1.5)


# ---------------------------------------------------------------------------
def test_score_matching_closed_forms():
    """Gaussian target, quadratic polynomial basis: the population ISM optimum (grid) is the
    target's energy up to a constant (to the grid's quadrature, 1e-6), with V = KL = 0,
    Fisher divergence 0 and J* = -E|grad U*|^2 / 2 = -tr(P) / 2; samples converge to it at
    the Monte Carlo rate; DSM recovers the smoothed law's precision 1/(s^2 + sigma^2)."""
    from fokkerplanck.theory import score_matching as S

    P, mu = np.array([[2.0, 0.6], [0.6, 1.0]]), np.array([0.5, -0.3])
    target = E.Quadratic(P, mean=mu)
    g = Grid([(-7, 7)] * 2, 200)
    B = S.PolynomialBasis(2, 2)
    assert B.terms == [(0,), (1,), (0, 0), (0, 1), (1, 1)]
    exact = np.concatenate([-P @ mu, [0.5 * P[0, 0], P[0, 1], 0.5 * P[1, 1]]])
    th = S.fit_ism_grid(B, g, g.gibbs(target))
    np.testing.assert_allclose(th, exact, atol=1e-6)
    rep = S.training_report(S.linear_energy(B, th), target, g)
    assert abs(rep.kl) < 1e-10 and rep.fisher < 1e-10 and abs(rep.ism_objective + 0.5 * np.trace(P)) < 1e-6
    rng = np.random.default_rng(0)
    th_n = S.fit_ism(B, rng.multivariate_normal(mu, np.linalg.inv(P), size=20000))
    assert np.abs(th_n - exact).max() < 0.05  # measured 0.012 (Monte Carlo, N = 2e4)
    s, sig = 0.8, 0.5
    th_d = S.fit_dsm(B, rng.normal(size=(50000, 2)) * s, sig, n_noise=4, seed=1)
    np.testing.assert_allclose(th_d[[2, 4]], 0.5 / (s ** 2 + sig ** 2), rtol=0.02)  # measured 0.3%
    assert np.abs(th_d[[0, 1, 3]]).max() < 0.01
    with pytest.raises(ValueError, match="singular"):
        S.fit_ism(S.RBFBasis([[0.0, 0.0], [0.0, 0.0]], 1.0), rng.normal(size=(100, 2)))


def test_training_lyapunov_along_gradient_descent():
    """Gradient descent on the population ISM objective J (a convex quadratic) from theta = 0 +
    a confining start: J decreases at every step, and the Fisher divergence and V(theta) =
    KL(rho_theta || rho*) fall to ~0 (the target is in the model class)."""
    from fokkerplanck.theory import score_matching as S

    P = np.array([[1.5, 0.3], [0.3, 0.8]])
    target = E.Quadratic(P)
    g = Grid([(-8, 8)] * 2, 100)
    B = S.PolynomialBasis(2, 2)
    w = g.gibbs(target).ravel() * g.cell_volume
    _, G, L = B(g.points)
    A, b = np.einsum("n,nkd,nld->kl", w, G, G), w @ L
    th = np.array([0.0, 0.0, 0.2, 0.0, 0.2])
    reps = []
    for _ in range(60):
        reps.append(S.training_report(S.linear_energy(B, th), target, g))
        th = th - 0.3 * (A @ th - b)
    J = np.array([r.ism_objective for r in reps])
    assert np.all(np.diff(J)[:20] < 0) and np.all(np.diff(J) < 1e-12)  # then converged to round-off
    assert reps[-1].fisher < 1e-3 * reps[0].fisher and reps[-1].kl < 1e-3 * reps[0].kl


# ---------------------------------------------------------------------------
def _quiet(*a):
    pass


@pytest.mark.slow  # compiles kernels cold (20-45 s in a clean clone): CI's second step
def test_run_ood_and_barrier_experiments(tmp_path):
    """The two built-in experiments on small grids: files written, numbers held against the
    grid, figures and info drawn; config errors named before anything runs."""
    from fokkerplanck.app import cli
    from fokkerplanck.app.runner import check_config, load_config, read_run, run

    ring = {"type": "GaussianMixture.ring", "n": 8, "radius": 4.0, "sigma": 0.5}
    cfg = {"kind": "ood", "energy": ring, "grid": {"bounds": [[-8, 8], [-8, 8]], "cells": 48},
           "data": {"n": 500, "bandwidth": 0.3}, "ood": {"n": 1000, "sets": ["uniform", "shifted"]}}
    run(cfg, tmp_path / "o.h5", progress=False, log=_quiet)
    r = read_run(tmp_path / "o.h5")
    import json
    table = json.loads(r["ood"]["table"])
    assert table["uniform"]["S1"]["auroc"] > 0.85 and 0 < table["uniform"]["S1"]["se"] < 0.02
    assert 0 < r["data"]["kl_model_to_truth"] < 0.5
    for sub in ("o.png",):
        assert cli.main(["plot", str(tmp_path / "o.h5"), "-o", str(tmp_path / sub)]) == 0
    assert cli.main(["info", str(tmp_path / "o.h5")]) == 0

    cfg = {"kind": "barrier", "energy": ring, "grid": {"bounds": [[-8, 8], [-8, 8]], "cells": 32},
           "initial": {"type": "Gaussian", "mean": [0.0, 0.0], "cov": 2.0}, "times": {"stop": 2.0, "num": 9},
           "unsafe": {"centre": [4.0, 0.0], "radius": 1.0, "sigma": 1.0},
           "barrier": {"beta": 0.05, "lam_max": 20.0, "tol": 0.05, "flows": ["fokker_planck", "continuity"]},
           "particles": {"n": 6000, "dt": 0.01, "seed": 1}}
    run(cfg, tmp_path / "b.h5", progress=False, log=_quiet)
    r = read_run(tmp_path / "b.h5")
    for flow in ("fokker_planck", "continuity"):
        g = r[f"barrier_{flow}"]
        assert np.max(g["mass"]) <= 0.05 < np.max(r["free"]["mass"]) and g["lam"] > 0
    p = r["particles"]
    grid_mass = r["barrier_fokker_planck"]["mass"]
    assert np.all(np.abs(p["mass"] - grid_mass) < 4 * p["mass_se"] + 5e-3)  # + O(h^2) on 32^2 and ULA's O(dt)
    assert cli.main(["plot", str(tmp_path / "b.h5"), "-o", str(tmp_path / "b.png")]) == 0
    assert cli.main(["info", str(tmp_path / "b.h5")]) == 0

    for name in ("ood", "barrier"):
        check_config(load_config(name))
    for bad, match in (({**cfg, "barrier": {"beta": 1.5}}, "beta"),
                       ({k: v for k, v in cfg.items() if k != "unsafe"}, "lacks the tables"),
                       ({**cfg, "unsafe": {"centre": [1.0], "radius": 1.0}}, "centre"),
                       ({**cfg, "barrier": {"flows": ["exact"]}}, "flows"),
                       ({"kind": "ood", "energy": ring, "grid": cfg["grid"], "ood": {"sets": ["noise"]}}, "sets"),
                       ({"kind": "ood", "energy": ring, "grid": cfg["grid"], "ood": {"nn": 3}}, "nn")):
        with pytest.raises(ValueError, match=match):
            check_config(bad)
