"""Particles: RNG known answers and reproducibility, scheme closed forms and orders,
estimators against the grid truth, storage, bad input."""
import warnings

import h5py
import numpy as np
import pytest
from scipy import stats

import particles
from fokkerplanck import FokkerPlanck, Grid, densities, diagnostics as D, energies as E, forward_lagrangian
from fokkerplanck._core.rng import normals, philox4x32
from fokkerplanck.theory.stopping import tau_det
from particles import estimators as est

U64 = np.uint64


@pytest.mark.parametrize("ctr, key, out", [
    ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([0xffffffff] * 4, [0xffffffff] * 2, [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0],
     [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
])
def test_philox_known_answers(ctr, key, out):
    # Random123's published known-answer vectors for Philox4x32-10
    assert [int(v) for v in philox4x32(*map(U64, ctr), *map(U64, key))] == out


def test_normals_are_standard_and_independent():
    z = normals(7, 100_000, step=3, dim=3)
    for a in range(3):
        assert stats.kstest(z[:, a], "norm").pvalue > 1e-3
    c = np.corrcoef(z.T)
    assert np.abs(c - np.eye(3)).max() < 4 / np.sqrt(z.shape[0]) * 1.5
    z2 = normals(7, 100_000, step=4, dim=3)
    assert abs(np.corrcoef(z[:, 0], z2[:, 0])[0, 1]) < 0.015
    np.testing.assert_array_equal(normals(7, 10, 3, 3), z[:10])  # a draw depends on (seed, particle, step) only


def test_same_bits_for_1_and_2_threads_and_any_chunking():
    """Numba's thread count is set at run time (``numba.set_num_threads``, as the shards
    do): 1 and 2 threads split the particles differently and must give the same bits,
    as must different save schedules (chunkings of the steps) and a split ensemble."""
    import numba

    U = E.GaussianMixture.ring()
    x0 = np.random.default_rng(0).normal(size=(3000, 2)) * 3
    methods = ("euler-maruyama", "leimkuhler-matthews", "mala")
    outs = []
    before = numba.get_num_threads()
    try:
        for threads, save_every in ((1, 60), (min(2, numba.config.NUMBA_NUM_THREADS), 7)):
            numba.set_num_threads(threads)
            outs.append(np.stack([particles.langevin(U, x0, 1e-3, 60, method=m, seed=11,
                                                     save_every=save_every).positions[-1] for m in methods]))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])
    # a particle's path does not depend on the others: a split ensemble gives the same bits
    for j, m in enumerate(methods):
        part = particles.langevin(U, x0[1000:2000], 1e-3, 60, method=m, seed=11, save_every=13,
                                  index_offset=1000).positions[-1]
        np.testing.assert_array_equal(part, outs[0][j][1000:2000])


def ou_em_moments(A, m0, S0, T, dt, k):
    """Exact law of the Euler-Maruyama chain for OU: a linear Gaussian recursion."""
    M = np.eye(A.shape[0]) - dt * A
    m, S = m0.copy(), S0.copy()
    for _ in range(k):
        m, S = M @ m, M @ S @ M.T + 2 * T * dt * np.eye(A.shape[0])
    return m, S


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_ou_euler_maruyama_closed_forms(precision):
    A = np.array([[1.5, 0.5], [0.5, 0.8]])
    T, dt, k, N = 0.7, 0.05, 40, 200_000
    m0, S0 = np.array([1.0, -0.5]), np.array([[0.5, 0.1], [0.1, 0.3]])
    x0 = densities.Gaussian(m0, S0).sample(N, seed=5)
    if precision == "float32":  # the chain starts from the float32-rounded particles
        x0 = x0.astype(np.float32).astype(np.float64)
    r = particles.langevin(E.Quadratic(A), x0, dt, k, temperature=T, seed=6, store="summaries", precision=precision)
    m, S = ou_em_moments(A, x0.mean(0), np.cov(x0.T), T, dt, k)
    s = r.summaries
    assert np.all(np.abs(s["mean"][-1] - m) < 4 * s["mean_se"][-1])
    assert np.all(np.abs(s["cov"][-1] - S) < 4 * s["cov_se"][-1])
    # against the continuous closed form the difference is the known O(dt) bias
    _mc, Sc = D.ou_moments(A, [0, 0], x0.mean(0), np.cov(x0.T), T, k * dt)
    assert np.all(np.diag(np.abs(S - Sc)) > 4 * np.diag(s["cov_se"][-1]))


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_stationary_variances_em_lm_mala(precision):
    a, T, N = 2.0, 0.5, 200_000
    x0 = np.zeros((N, 1))
    U = E.Quadratic([[a]])
    res = {m: particles.langevin(U, x0, 0.2, 60, method=m, temperature=T, seed=3, store="summaries",
                                 precision=precision)
           for m in ("euler-maruyama", "leimkuhler-matthews", "mala")}
    for m, exact in (("euler-maruyama", T / (a * (1 - a * 0.2 / 2))), ("leimkuhler-matthews", T / a),
                     ("mala", T / a)):
        v = res[m].summaries["cov"][-1][0, 0]
        se = res[m].summaries["cov_se"][-1][0, 0]
        assert abs(v - exact) < 4 * se, (m, v, exact, se)
    acc = res["mala"].acceptance
    assert acc.shape == (N,) and 0.5 < acc.mean() < 1.0


def test_mala_from_far_reaches_the_closed_form_stationary_law():
    """MALA's invariant law is exact: started 3.6 stationary sd's away from the target,
    from a law 20x narrower (so an integrator that does nothing, or only drifts, or only
    diffuses, fails), the anisotropic, rotated Gaussian N(mu, T A^{-1}) at T = 0.6 is
    reached in mean and covariance within 4 of their se.  Mixing: the slowest rate of
    the flow is lambda_min(A) = 0.54, so by t = 20 the start is forgotten to e^{-10.8}
    (8e-5 of a 3.6 offset, against an se of 4e-3; MALA's rejections slow this by its
    acceptance, measured above 0.9).  Halfway (t = 2) the mean still remembers the start
    by e^{-1.1} * 3.6 ~ 1 (>> se): the law moves, it does not sit at the target."""
    A = np.array([[1.5, 0.5], [0.5, 0.8]])
    mu, T, N = np.array([0.5, -0.3]), 0.6, 20_000
    x0 = densities.Gaussian([3.0, -2.0], 0.0025 * np.eye(2)).sample(N, seed=12)
    r = particles.langevin(E.Quadratic(A, mu), x0, 0.1, 200, method="mala", temperature=T, seed=13,
                           save=particles.Save(times=[2.0, 20.0], store="summaries"))
    s = r.summaries
    S = T * np.linalg.inv(A)
    assert np.all(np.abs(s["mean"][-1] - mu) < 4 * s["mean_se"][-1]), (s["mean"][-1], mu)
    assert np.all(np.abs(s["cov"][-1] - S) < 4 * s["cov_se"][-1]), (s["cov"][-1], S)
    assert np.linalg.norm(s["mean"][0] - mu) > 0.3 and r.acceptance.mean() > 0.9, (s["mean"][0], r.acceptance.mean())


def test_leimkuhler_matthews_second_order_bias():
    # non-Gaussian target: EM's invariant-law bias is O(dt), LM's O(dt^2) (below the noise here)
    U = E.DoubleWell(1, barrier=0.25) + E.Quadratic([[2.0]])
    g = Grid([(-6, 6)], 4000)
    rho = g.gibbs(U)
    m2 = g.integrate(rho * g.axes[0] ** 2)
    x0 = g.sample(rho, 200_000, seed=1)
    bias = {}
    for m in ("euler-maruyama", "leimkuhler-matthews"):
        for dt in (0.1, 0.05):
            s = particles.langevin(U, x0, dt, round(3 / dt), method=m, seed=2, store="summaries").summaries
            bias[m, dt] = (s["cov"][-1][0, 0] + s["mean"][-1][0] ** 2 - m2, s["cov_se"][-1][0, 0])
    (b1, se1), (b2, _) = bias["euler-maruyama", 0.1], bias["euler-maruyama", 0.05]
    assert b1 > 10 * se1 and 1.5 < b1 / b2 < 3.0, bias         # first order
    for dt in (0.1, 0.05):
        # LM's O(dt^2) bias is below the noise (4 standard errors ~ 5e-3) at both steps,
        # where EM's is 10 and 24 standard errors
        b, se = bias["leimkuhler-matthews", dt]
        assert abs(b) < 4 * se, bias


@pytest.mark.parametrize("method, order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_flow_strong_order(method, order):
    A = np.array([[1.5, 0.5], [0.5, 0.8]])
    x0 = np.array([[1.0, -2.0], [0.5, 0.5]])
    from scipy.linalg import expm
    exact = x0 @ expm(-A * 1.0).T
    errs = []
    for n in (20, 40, 80):
        r = particles.gradient_flow(E.Quadratic(A), x0, 1.0 / n, n, method=method)
        errs.append(np.abs(r.positions[-1] - exact).max())
    p = np.log2(errs[0] / errs[1]), np.log2(errs[1] / errs[2])
    assert all(abs(q - order) < 0.25 for q in p), (errs, p)


def test_euler_tracked_logdensity_is_exact_for_quadratic():
    A = np.array([[1.5, 0.5], [0.5, 0.8]])
    G = densities.Gaussian([1.0, -0.5], [[2.0, 0.3], [0.3, 1.5]])
    x0 = G.sample(1000, seed=2)
    dt, k = 0.1, 15
    r = particles.gradient_flow(E.Quadratic(A), x0, dt, k, track_logdensity=True, logrho0=G.logpdf(x0))
    M = np.linalg.matrix_power(np.eye(2) - dt * A, k)
    pushed = densities.Gaussian(M @ G.mean, M @ G.cov @ M.T)
    np.testing.assert_allclose(r.logdensity[-1], pushed.logpdf(r.positions[-1]), rtol=1e-11, atol=1e-11)


@pytest.fixture(scope="module")
def ring_reference():
    U = E.GaussianMixture.ring()
    g = Grid([(-10, 10)] * 2, 240)
    rho0 = densities.Gaussian([0, 0], 4.0).on_grid(g)
    times = np.array([0.0, 0.5, 1.0])
    tr = FokkerPlanck(U, g).solve(rho0, times)
    return U, g, rho0, times, tr


def test_knn_kl_matches_grid_fokker_planck(ring_reference):
    U, g, rho0, times, tr = ring_reference
    x0 = g.sample(rho0, 100_000, seed=4)
    r = particles.langevin(U, x0, 2e-3, 500, seed=5, save_every=250)
    kl_grid = tr.kl()
    # beyond the CLT error bar, bounded biases (none a free slack): the grid's O(h^2) at
    # h = 1/12 (240 -> 360 cells moves KL by 8.5e-4, so the 240-cell error is 1.5e-3),
    # Euler-Maruyama's O(dt) (below 5e-3 here: halving dt moves KL by less than its
    # noise), the 2D k-NN bias (test_estimators: 0.6 (k/n)^{1/2}, per mode n = N/8 here)
    bias = 1.5e-3 + 5e-3 + 0.6 * np.sqrt(8 / x0.shape[0])
    for j in range(times.size):
        e = est.kl_knn(r.positions[j], U)
        assert abs(e.value - kl_grid[j]) < 4 * e.stderr + bias, (j, e, kl_grid[j])
    # the error bar shrinks as N^{-1/2}
    ses = [est.kl_knn(r.positions[-1][:n], U).stderr for n in (1000, 10_000, 100_000)]
    ratios = np.array(ses[:-1]) / np.array(ses[1:])
    assert np.all((ratios > 2.5) & (ratios < 3.8)), ses


def _elog1p_binomial(p, n):
    """``E[log(1 + Binomial(n, p))]`` by Frullani's integral over the generating function
    (as in test_estimators)."""
    u = np.linspace(-40.0, np.log(60.0), 1501)
    s = np.exp(u)
    f = np.exp(-s) * -np.expm1(n * np.log1p(p[:, None] * np.expm1(-s)))
    return np.trapezoid(f, u, axis=1)


def test_kl_estimators_on_exact_samples():
    """Exact draws of the ring's rho* (KL = 0; eight modes of sd 0.5).  k-NN: within 4 se
    plus the 2D bias bound of test_estimators per mode.  The plug-ins are biased, by
    amounts known here: the KDE's mean is rho* convolved with its kernel, a mixture of the
    same modes with covariance 0.25 + bw^2 + h^2/3 (the binning), so its estimate is the
    sample mean of log(rho* * K) - log rho* (-0.12: the over-smoothing) up to the kernel's
    own point (mean K(0) / (N rho* * K), 4e-4); the histogram's expectation given its
    cells is exact (test_estimators), with the cell probabilities of the mixture.  The
    bootstrap of the k-NN KL (half-sampling) is the CLT se to its 10-resample noise."""
    from scipy.special import logsumexp, ndtr

    U = E.GaussianMixture.ring()
    x = U.sample(100_000, seed=9)   # exact samples of rho*: KL = 0
    n = x.shape[0]
    e = est.kl_knn(x, U)
    assert abs(e.value) < 4 * e.stderr + 0.6 * np.sqrt(U.K / n), e
    log_rho = -U.value(x) - U.log_partition()

    def log_mixture(var):
        d2 = np.sum((x[:, None, :] - U.means[None]) ** 2 / var, axis=-1)
        return logsumexp(-0.5 * d2 + np.log(U.weights), axis=1) - 0.5 * np.log((2 * np.pi) ** 2 * np.prod(var))

    np.testing.assert_allclose(log_mixture(np.full(2, 0.25)), log_rho, atol=1e-12)  # the modes' covariance
    bins = 256
    bw = x.std(axis=0, ddof=1) * n ** (-1 / 6)                        # Scott's rule in 2D
    h = (x.max(axis=0) - x.min(axis=0) + 8 * bw) / (bins - 1)
    H = bw**2 + h**2 / 3
    log_smooth = log_mixture(0.25 + H)
    self_term = np.mean(np.exp(-log_smooth)) / (2 * np.pi * np.sqrt(np.prod(H)) * n)
    k = est.kl_kde(x, U, bins=bins)
    pred = np.mean(log_smooth - log_rho)
    assert pred < -20 * k.stderr and abs(k.value - pred) < 4 * k.stderr + self_term, (k, pred, self_term)
    hist = est.kl_histogram(x, U, bins=64)
    edges = [np.linspace(x[:, a].min(), x[:, a].max(), 65) for a in range(2)]
    p = sum(w * np.outer(*(np.diff(ndtr((edges[a] - mu[a]) / 0.5)) for a in range(2)))
            for w, mu in zip(U.weights, U.means)).ravel()
    p = p[p > 0]
    expect = (np.sum(p * _elog1p_binomial(p, n - 1)) - np.log(n)
              - sum(np.log(ed[1] - ed[0]) for ed in edges) - np.mean(log_rho))
    assert abs(hist.value - expect) < 4 * hist.stderr + 4 * np.log(n) / n, (hist, expect)
    b = est.bootstrap(est.kl_knn, x[:5000], U, n_boot=10)
    assert "half-sampling(10)" in b.method
    assert 0.5 < b.stderr / est.kl_knn(x[:5000], U).stderr < 2.5, b


def test_tracked_kl_and_ratio_match_lagrangian():
    U = E.GaussianMixture.ring()
    G = densities.Gaussian([0, 0], 4.0)
    x0 = G.sample(20_000, seed=3)
    times = np.linspace(0, 0.4, 9)
    r = particles.gradient_flow(U, x0, 1e-3, 400, method="rk4", save_every=50, track_logdensity=True,
                                logrho0=G.logpdf(x0))
    # reference: the exact flow on a midpoint rule of rho0 (converged to ~5e-4 at 256^2; a
    # Gauss-Hermite rule is not: the flow map steepens between the basins, 0.04 off at 80^2 nodes)
    g = Grid([(-12, 12)] * 2, 256)
    ref = forward_lagrangian(U, densities.GridDensity(g, G.on_grid(g)), times)
    s = r.summaries
    np.testing.assert_allclose(r.times, times)
    assert np.all(np.abs(s["kl"] - ref.kl) < 4 * s["kl_se"] + 2e-3), (s["kl"], ref.kl, s["kl_se"])
    assert np.all(np.abs(s["ratio"] - ref.ratio) < 4 * s["ratio_se"]), (s["ratio"], ref.ratio)
    # R_t from particles crosses 1 where the reference does, within its error bar
    tp = tau_det(times, s["ratio"]).time
    lo = tau_det(times, s["ratio"] + 2 * s["ratio_se"]).time
    hi = tau_det(times, s["ratio"] - 2 * s["ratio_se"]).time
    tref = tau_det(times, ref.ratio).time
    assert lo - 0.05 <= tref <= hi + 0.05 and abs(tp - tref) < 0.05, (lo, tp, hi, tref)


def test_storage_modes(tmp_path):
    U = E.GaussianMixture.ring()
    x0 = np.random.default_rng(1).normal(size=(500, 2)) * 3
    mem = particles.langevin(U, x0, 1e-3, 30, seed=2, save_every=10)
    path = tmp_path / "ens.h5"
    f = particles.langevin(U, x0, 1e-3, 30, seed=2, save_every=10, store=path)
    assert f.positions is None and f.path == str(path)
    with h5py.File(path) as h:
        np.testing.assert_array_equal(h["positions"][()], mem.positions)
        np.testing.assert_array_equal(h["summaries/ratio"][()], mem.summaries["ratio"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ens.h5"]
    s = particles.langevin(U, x0, 1e-3, 30, seed=2, save_every=10, store="summaries")
    assert s.positions is None
    np.testing.assert_array_equal(s.summaries["mean"], mem.summaries["mean"])
    assert mem.positions.shape == (4, 500, 2) and list(mem.steps) == [0, 10, 20, 30]


def test_escaped_and_nonfinite_particles_are_counted():
    U = E.Quadratic([[1.0]])
    x0 = np.linspace(-1, 1, 100)[:, None]
    with pytest.warns(RuntimeWarning, match="left the box"):
        r = particles.langevin(U, x0, 0.01, 200, seed=1, box=[(-1.2, 1.2)])
    assert r.escaped > 0 and r.alive[-1] == 100 - r.escaped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            r = particles.gradient_flow(E.DoubleWell(1), np.array([[3.0], [0.5]]), 0.5, 50)
    assert r.nonfinite == 1
    assert np.all(np.isfinite(r.positions[-1]))  # frozen at its last finite position


@pytest.mark.parametrize("call, match", [
    (lambda: particles.langevin(E.Quadratic(np.eye(2)), np.zeros((5, 3)), 0.1, 10), "shape"),
    (lambda: particles.langevin(E.Quadratic(np.eye(2)), np.full((5, 2), np.nan), 0.1, 10), "NaN"),
    (lambda: particles.langevin(E.Quadratic(np.eye(2)), np.zeros((5, 2)), -0.1, 10), "dt"),
    (lambda: particles.langevin(E.Quadratic(np.eye(2)), np.zeros((5, 2)), 0.1, 10, method="rk9"), "method"),
    (lambda: particles.gradient_flow(E.Quadratic(np.eye(2)), np.zeros((5, 2)), 0.1, 2.5), "n_steps"),
    (lambda: particles.langevin(E.Quadratic(np.eye(2)), np.full((5, 2), 3.0), 0.1, 1, box=[(-1, 1)]), "outside"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unstable_step_warns():
    with pytest.warns(RuntimeWarning, match="stability limit"):
        particles.gradient_flow(E.Quadratic([[10.0]]), np.ones((4, 1)), 0.3, 1)


# ---------------------------------------------------------------------------------------
# Save: one object for what to save, the keywords a translation into it
def _same_ensemble(a, b):
    for name in ("times", "steps", "alive", "status"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("positions", "logdensity", "histograms", "acceptance"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.summaries.keys() == b.summaries.keys()
    for k in a.summaries:
        np.testing.assert_array_equal(a.summaries[k], b.summaries[k], err_msg=k)


@pytest.mark.parametrize("method", ["euler-maruyama", "mala"])
def test_langevin_save_object_is_the_keywords_bit_for_bit(method):
    U = E.GaussianMixture.ring()
    x0 = np.random.default_rng(4).normal(size=(700, 2)) * 2
    grid = Grid([(-6, 6), (-6, 6)], 12)
    kw = {"method": method, "seed": 11, "box": [(-9.0, 9.0)] * 2}
    old = particles.langevin(U, x0, 2e-2, 45, save_every=10, histogram=grid, summary_block=256, **kw)
    new = particles.langevin(U, x0, 2e-2, 45, save=particles.Save(every=10, histogram=grid, summary_block=256),
                             **kw)
    _same_ensemble(old, new)
    assert list(new.steps) == [0, 10, 20, 30, 40, 45] and new.meta["save_every"] == 10
    # the same saves by their times: the same bits (the schedule never changes a particle's path)
    at = particles.langevin(U, x0, 2e-2, 45, save=particles.Save(times=new.times.tolist(), histogram=grid,
                                                                 summary_block=256), **kw)
    _same_ensemble(new, at)
    # a subset of the times: those saves of the full run, bit for bit
    few = particles.langevin(U, x0, 2e-2, 45, save=particles.Save(times=[0.2, 0.9], summary_block=256), **kw)
    np.testing.assert_array_equal(few.steps, [10, 45])
    np.testing.assert_array_equal(few.positions, new.positions[[1, 5]])
    for k in few.summaries:
        np.testing.assert_array_equal(few.summaries[k], new.summaries[k][[1, 5]], err_msg=k)


def test_save_store_modes_and_gradient_flow_through_save(tmp_path):
    U = E.GaussianMixture.ring()
    x0 = np.random.default_rng(1).normal(size=(300, 2)) * 3
    S = particles.Save
    mem = particles.langevin(U, x0, 1e-3, 30, seed=2, save=S(every=10))
    summ = particles.langevin(U, x0, 1e-3, 30, seed=2, save=S(every=10, store="summaries"))
    assert summ.positions is None
    _same_ensemble(particles.langevin(U, x0, 1e-3, 30, seed=2, save_every=10, store="summaries"), summ)
    f = particles.langevin(U, x0, 1e-3, 30, seed=2, save=S(every=10, store=tmp_path / "e.hdf5"))
    with h5py.File(f.path) as h:
        np.testing.assert_array_equal(h["positions"][()], mem.positions)
    kw = {"method": "rk4", "track_logdensity": True, "logrho0": densities.Gaussian([0.0, 0.0], 9.0).logpdf(x0)}
    a = particles.gradient_flow(U, x0, 1e-3, 30, save_every=10, store="summaries", **kw)
    b = particles.gradient_flow(U, x0, 1e-3, 30, save=S(every=10, store="summaries"), **kw)
    _same_ensemble(a, b)
    assert np.isfinite(b.summaries["kl"]).all()


@pytest.mark.parametrize("fields, match", [
    ({"every": 0}, "Save.every"),
    ({"every": 2.5}, "Save.every"),
    ({"every": True}, "Save.every"),
    ({"every": 2, "times": [0.0, 1.0]}, "Save.every and Save.times"),
    ({"times": [1.0, 0.5]}, "Save.times"),
    ({"times": []}, "Save.times"),
    ({"times": [-1.0]}, "Save.times"),
    ({"times": [0.0, np.nan]}, "Save.times"),
    ({"store": "memroy"}, "Save.store"),
    ({"store": "run.npz"}, "Save.store"),
    ({"store": 5}, "Save.store"),
    ({"store": "summaries", "summaries": False}, "Save.store='summaries' with Save.summaries=False"),
    ({"summaries": "yes"}, "Save.summaries"),
    ({"histogram": [(0, 1)]}, "Save.histogram"),
    ({"summary_block": 0}, "Save.summary_block"),
])
def test_bad_save_fields_name_the_field(fields, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace("[", r"\[")):
        particles.Save(**fields)


def test_save_times_off_the_step_grid_and_keyword_conflicts_raise():
    U = E.Quadratic([[1.0, 0.0], [0.0, 1.0]])
    X = np.zeros((10, 2))
    S = particles.Save
    with pytest.raises(ValueError, match=r"Save.times\[1\] = 0.015 is not a multiple of dt"):
        particles.langevin(U, X, 0.01, 5, seed=0, save=S(times=[0.0, 0.015, 0.05]))
    with pytest.raises(ValueError, match="must be the end of the run"):
        particles.langevin(U, X, 0.01, 5, seed=0, save=S(times=[0.0, 0.03]))
    with pytest.raises(ValueError, match="same step"):
        particles.langevin(U, X, 0.01, 5, seed=0, save=S(times=[0.0, 1e-12, 0.05]))
    with pytest.raises(ValueError, match="save_every= given together with save="):
        particles.langevin(U, X, 0.01, 5, seed=0, save=S(every=1), save_every=1)
    with pytest.raises(ValueError, match="store= given together with save="):
        particles.gradient_flow(U, X, 0.01, 5, save=S(), store="memory")
    with pytest.raises(ValueError, match="save must be a particles.Save"):
        particles.langevin(U, X, 0.01, 5, seed=0, save={"every": 1})
    with pytest.raises(ValueError, match="shard_size= without client="):
        particles.langevin(U, X, 0.01, 5, seed=0, shard_size=4096)
    with pytest.raises(ValueError, match="Shards.client"):
        particles.Shards(None)


def test_annealed_and_path_flow_take_save():
    from fokkerplanck.energies.paths import ConstantPath
    from particles.annealed import annealed_langevin, path_gradient_flow

    path = ConstantPath(E.GaussianMixture.ring())
    x0 = np.random.default_rng(2).normal(size=(300, 2))
    a = annealed_langevin(path, x0, 1e-2, 20, seed=3, save_every=5)
    b = annealed_langevin(path, x0, 1e-2, 20, seed=3, save=particles.Save(every=5))
    c = annealed_langevin(path, x0, 1e-2, 20, seed=3, save=particles.Save(times=[0.1, 0.2]))
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(c.positions, a.positions[[2, 4]])
    # the static path is the static energy: the same bits as particles.langevin
    s = particles.langevin(E.GaussianMixture.ring(), x0, 1e-2, 20, seed=3, save=particles.Save(every=5))
    np.testing.assert_array_equal(s.positions, b.positions)
    f = path_gradient_flow(path, x0, 1e-2, 20, save_every=5)
    g = path_gradient_flow(path, x0, 1e-2, 20, save=particles.Save(every=5))
    np.testing.assert_array_equal(f.positions, g.positions)
    np.testing.assert_array_equal(f.logdensity, g.logdensity)
    with pytest.raises(ValueError, match="Save.store='summaries' is not supported"):
        annealed_langevin(path, x0, 1e-2, 20, save=particles.Save(store="summaries"))
    with pytest.raises(ValueError, match="save_every= given together with save="):
        path_gradient_flow(path, x0, 1e-2, 20, save_every=5, save=particles.Save(every=5))


def test_jumps_take_save_times():
    from fokkerplanck.discrete import finite as Dz
    from particles import jumps

    energy = Dz.ising(6)
    c0 = np.random.default_rng(0).integers(0, 2, size=(300, 6))
    a = jumps.simulate(energy, c0, [0.5, 1.0], seed=3)
    b = jumps.simulate(energy, c0, save=particles.Save(times=[0.5, 1.0]), seed=3)
    for name in ("times", "energy", "magnetisation", "index", "codes", "events"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    with pytest.raises(ValueError, match="Save.every"):
        jumps.simulate(energy, c0, save=particles.Save(every=3))
    with pytest.raises(ValueError, match="times given together with save="):
        jumps.simulate(energy, c0, [1.0], save=particles.Save(times=[1.0]))
    with pytest.raises(ValueError, match="needs save times"):
        jumps.simulate(energy, c0)


def test_knn_kl_below_resolution_is_flagged_not_altered():
    """Exact draws of N(0, I) (KL = 0, 20 seeds, N = 2000): the k-NN estimate scatters
    around 0 (some <= 0) and is flagged below resolution whenever value - 2 se <= 0, its
    upper bound covering the true 0; draws of N((1, 0), I) (KL = 1/2) are resolved and
    within 4 se.  The numbers are the estimator's own: -H_kNN + E[U] + log Z."""
    U = E.Quadratic(np.eye(2))
    flags, values = [], []
    for seed in range(20):
        x = np.random.default_rng(seed).normal(size=(2000, 2))
        e = est.kl_knn(x, U)
        h = est.knn_entropy(x)
        assert e.value == pytest.approx(-h.value + np.mean(U.value(x)) + U.log_partition(), abs=1e-12)
        assert e.below_resolution == (e.value - 2 * e.stderr <= 0)
        assert e.upper_bound == pytest.approx(max(e.value, 0) + 2 * e.stderr)
        flags.append(e.below_resolution)
        values.append(e.value)
    values = np.array(values)
    assert np.any(values <= 0) and all(f for f, v in zip(flags, values) if v <= 0)
    assert np.mean(flags) >= 0.9, (flags, values)
    x = np.random.default_rng(0).normal(size=(2000, 2)) + [1.0, 0.0]
    e = est.kl_knn(x, U)
    assert e.below_resolution is False and abs(e.value - 0.5) < 4 * e.stderr, e
    assert "below resolution" not in repr(e) and "below resolution" in repr(est.kl_knn(x - [1.0, 0.0], U))
    # the bootstrap re-judges with its own error bar; the entropy is no KL (no flag)
    b = est.bootstrap(est.kl_knn, x[:500], U, n_boot=10)
    assert b.below_resolution == (b.value - 2 * b.stderr <= 0)
    assert est.knn_entropy(x).below_resolution is None


def test_block_summaries_equal_the_whole_sample_statistics():
    """Summaries are merged from blocks of 4096 particles (Chan's formula): with blocks whose
    means differ (particles sorted along x_0), the merged mean and covariance equal numpy's
    on the whole sample, and R_t with its delta-method error equals the estimator's."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3 * 4096 + 17, 2)) @ np.array([[1.0, 0.4], [0.0, 0.7]]) + [0.5, -1.0]
    X = X[np.argsort(X[:, 0])]
    U = E.GaussianMixture([[0.0, 0.0], [1.5, -1.0]], 0.8)   # lap U varies: the delta method's covariance term counts
    ens = particles.langevin(U, X, 1e-9, 1, seed=0, temperature=0.6)
    s = ens.summaries
    np.testing.assert_allclose(s["mean"][0], X.mean(axis=0), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(s["cov"][0], np.cov(X.T, ddof=1), rtol=1e-11, atol=1e-13)
    r = est.ratio(X, U, 0.6)["ratio"]
    assert s["ratio"][0] == pytest.approx(r.value, rel=1e-12)
    assert s["ratio_se"][0] == pytest.approx(r.stderr, rel=1e-9)
