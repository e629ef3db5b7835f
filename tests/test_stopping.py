"""Stopping rules: tau_det and argmin on closed forms; tau_Lang with certified and
estimated log-Sobolev constants."""
import numpy as np
import pytest
from scipy.optimize import brentq

from fokkerplanck import FokkerPlanck, Grid, densities, diagnostics as D, energies as E
from fokkerplanck.theory.stopping import (
    LSConstant,
    bakry_emery,
    holley_stroock,
    kl_argmin,
    kl_reaches,
    observed_rate,
    spectral_gap_estimate,
    tau_det,
    tau_lang,
)


def test_tau_det_interpolation_and_argmin_refinement():
    t = np.linspace(0, 2, 21)
    R = 0.3 + 0.5 * t            # crosses 1 at t = 1.4
    st = tau_det(t, R)
    assert st.time == pytest.approx(1.4, abs=1e-12) and st.index == 14 and st.step(0.01) == 140
    assert tau_det(t, R - 5).time == np.inf and tau_det(t, R + 1).time == 0.0
    kl = (t - 0.737) ** 2 + 1     # parabola: the vertex is recovered exactly
    assert kl_argmin(t, kl).time == pytest.approx(0.737, abs=1e-12)
    late = np.where(t > 1.5, kl - 2.0, kl)   # a later, lower dip (an unresolved grid)
    # one meaning for the API and the CLI: the first local minimum by default
    assert kl_argmin(t, late, first_local=False).time > 1.5
    assert kl_argmin(t, late).time == pytest.approx(0.737, abs=1e-12)
    # invalid saves end the search: the global minimum is then the one before them
    valid = t <= 1.5
    assert kl_argmin(t, late, first_local=False, valid=valid).time == pytest.approx(0.737, abs=1e-12)
    assert kl_argmin(t, kl, valid=t <= 0.5).note.startswith("KL is still falling at the last valid save t = 0.5")
    with pytest.raises(ValueError, match="equal length"):
        tau_det(t, R[:-1])


def test_tau_det_stderr_delta_method_matches_monte_carlo():
    """se(tau) = se(R) / |dR/dt|: the spread of tau_det over noisy copies of a linear
    R_t (independent N(0, se^2) noise per save) agrees with the reported stderr."""
    t = np.linspace(0, 2, 201)
    R = 0.3 + 0.5 * t
    se = 2e-3
    st = tau_det(t, R, stderr=np.full_like(t, se))
    assert st.stderr == pytest.approx(se / 0.5, rel=1e-12)
    rng = np.random.default_rng(0)
    taus = [tau_det(t, R + rng.normal(0, se, t.size)).time for _ in range(4000)]
    # linear interpolation of independent noise: the spread is between sqrt(1/2) and 1 of se/slope
    assert 0.7 * st.stderr < np.std(taus) < 1.05 * st.stderr
    assert abs(np.mean(taus) - 1.4) < 4 * np.std(taus) / np.sqrt(4000) + 1e-4


def rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def test_tau_det_and_kl_argmin_interpolation_errors_are_the_predicted_ones():
    """The deterministic OU flow (T = 0.6, rotated anisotropic A) from a Gaussian: R_t and KL
    in closed form, tau (R_tau = 1, where KL is minimal) by a root solve.  Sampled at spacing
    dt, ``tau_det``'s linear interpolation errs by ``R''/(2 R') (tau - t_k-1)(tau - t_k)`` and
    ``kl_argmin``'s parabola vertex by ``-(KL'''/(6 KL'')) (dt^2 - 3 c^2)``, ``c = tau - t_k``
    (Taylor expansions; derivatives by central differences of the closed forms).  Measured:
    the actual errors (4e-4 .. 1.3e-3 at dt = 0.05, 1.7e-4 .. 2.4e-4 at 0.025) are these
    predictions to 0.5 .. 2.3 % (the next order, O(dt)); the window is 5 %."""
    A = rotation(0.4) @ np.diag([2.0, 0.7]) @ rotation(0.4).T
    T, m0, S0 = 0.6, np.array([1.5, -1.0]), np.array([[2.0, 0.3], [0.3, 1.2]])

    def moments(t):
        return D.ou_moments(A, [0, 0], m0, S0, T, t, flow="continuity")

    def R(t):
        return D.gaussian_ratio(*moments(t), A, [0, 0], T)[2]

    def KL(t):
        return D.gaussian_kl(*moments(t), [0, 0], T * np.linalg.inv(A))

    tau = brentq(lambda t: R(t) - 1, 0, 5, xtol=1e-15)
    e, e3 = 1e-4, 1e-3
    R1, R2 = (R(tau + e) - R(tau - e)) / (2 * e), (R(tau + e) - 2 * R(tau) + R(tau - e)) / e**2
    K2 = (KL(tau + e) - 2 * KL(tau) + KL(tau - e)) / e**2
    K3 = (KL(tau + 2 * e3) - 2 * KL(tau + e3) + 2 * KL(tau - e3) - KL(tau - 2 * e3)) / (2 * e3**3)
    for dt in (0.05, 0.025):
        t = np.arange(0, 3, dt)
        st = tau_det(t, [R(x) for x in t])
        t0, t1 = st.bracket
        assert t0 < tau < t1
        predicted = R2 / (2 * R1) * (tau - t0) * (tau - t1)
        assert abs((st.time - tau) / predicted - 1) < 0.05, (dt, st.time - tau, predicted)
        am = kl_argmin(t, [KL(x) for x in t])
        c = tau - t[am.index]
        predicted = -(K3 / (6 * K2)) * (dt**2 - 3 * c**2)
        assert abs((am.time - tau) / predicted - 1) < 0.05, (dt, am.time - tau, predicted)


def test_tau_lang_is_sharp_for_the_slowest_mode():
    """Start N(1.5 v, T A^-1), v the eigenvector of the smallest eigenvalue kappa of A, T = 0.6:
    then KL_t = KL_0 exp(-2 kappa t) exactly, so the certified tau_Lang(eps) puts the exact KL
    at eps, not below it.  The grid's KL at tau_Lang is then eps exp(2 (kappa - gap_h) tau)
    (KL_0,h / KL_0), gap_h the discrete spectral gap, O(h^2) below kappa: 1.6 .. 5.9 % *above*
    eps on 96^2 cells (a certificate for the continuum, not for the grid chain); the
    prediction holds to 1.2e-5 (measured), window 1e-4.  The observed rate is gap_h (measured
    to 4e-7)."""
    A = rotation(0.4) @ np.diag([2.0, 0.7]) @ rotation(0.4).T
    T = 0.6
    lam, V = np.linalg.eigh(A)
    kappa, v = lam[0], V[:, 0]
    m0, S0 = 1.5 * v, T * np.linalg.inv(A)
    kl0 = 0.5 * m0 @ A @ m0 / T
    U, g = E.Quadratic(A), Grid([(-7, 7)] * 2, 96)
    c = bakry_emery(U, g)
    assert c.certified and c.value == pytest.approx(kappa, rel=1e-12)
    eps = np.array([1e-1, 1e-2, 1e-4])
    taus = np.array([tau_lang(e, kl0, c).time for e in eps])
    for t, e in zip(taus, eps):   # the exact flow: KL at tau_Lang is eps
        m, S = D.ou_moments(A, [0, 0], m0, S0, T, t)
        assert D.gaussian_kl(m, S, [0, 0], S0) == pytest.approx(e, rel=1e-10)
    fp = FokkerPlanck(U, g, T)
    gap = spectral_gap_estimate(fp).value
    kl = fp.solve(densities.Gaussian(m0, S0), np.concatenate([[0.0], taus])).kl()
    predicted = eps * np.exp(2 * (kappa - gap) * taus) * kl[0] / kl0
    np.testing.assert_allclose(kl[1:], predicted, rtol=1e-4)
    obs = observed_rate(fp.solve(densities.Gaussian(m0, S0), np.linspace(0, 4, 9)))
    assert obs.value == pytest.approx(gap, rel=1e-5)


def test_tau_lang_certified_ou_kl_below_eps():
    """The OU start of the CLI example (T = 1).  Exact KL at tau_Lang: 0.316 .. 0.318 eps
    (the certificate).  The grid's is that times exp(2 (kappa - gap_h) tau), the slower
    discrete decay, to O(h^2): measured 1.1 % on 48^2, 0.28 % on 96^2 cells, window 0.45 %.
    The discrete gap is kappa (1 + C h^2): measured -1.74 %, -0.44 % on 48^2, 96^2 (ratio
    3.97), Richardson -4e-5.  The observed rate (the late-time decay rate of the slowest
    mode) is the closed form's min T I / (2 KL) times gap_h / kappa (measured to 3.7e-5).
    Was: one-sided checks (KL <= eps, gap and rate >= 0.99 kappa)."""
    A = np.array([[1.5, 0.5], [0.5, 0.8]])
    U = E.Quadratic(A)
    g = Grid([(-8, 8)] * 2, 96)
    c = bakry_emery(U, g)
    assert c.certified and c.value == pytest.approx(np.linalg.eigvalsh(A).min(), rel=1e-12)
    assert "over the grid" not in c.source  # constant Hessian: exact
    fp = FokkerPlanck(U, g)
    m0, S0 = np.array([2.0, -1.0]), np.array([[0.3, 0.0], [0.0, 0.5]])
    rho0 = densities.Gaussian(m0, S0)
    kl0 = fp.solve(rho0, [0.0]).kl()[0]
    gap = spectral_gap_estimate(fp)
    eps = np.array([1e-1, 1e-2, 1e-4])
    taus = np.array([tau_lang(e, kl0, c).time for e in eps])
    kl = fp.solve(rho0, taus).kl()
    exact = np.array([D.gaussian_kl(*D.ou_moments(A, [0, 0], m0, S0, 1.0, t), [0, 0], np.linalg.inv(A))
                      for t in taus])
    assert np.all(kl <= eps) and np.all(exact <= eps)
    np.testing.assert_allclose(kl / (exact * np.exp(2 * (c.value - gap.value) * taus)), 1, rtol=0, atol=4.5e-3)
    # the estimates: the spectral gap is a Poincare constant >= C_LS; for OU they are equal in
    # the continuum, the discrete gap is C h^2 below
    assert not gap.certified
    coarse = FokkerPlanck(U, Grid([(-8, 8)] * 2, 48)).spectral_gap() / c.value - 1
    fine = gap.value / c.value - 1
    assert 3.9 < coarse / fine < 4.1 and abs(4 * fine - coarse) / 3 < 1e-4, (coarse, fine)
    times = np.linspace(0, 4, 41)
    obs = observed_rate(fp.solve(rho0, times))
    rates = []
    for t in times:
        m, S = D.ou_moments(A, [0, 0], m0, S0, 1.0, t)
        rates.append(D.gaussian_fisher(m, S, A, [0, 0], 1.0) / (2 * D.gaussian_kl(m, S, [0, 0], np.linalg.inv(A))))
    assert not obs.certified
    assert obs.value == pytest.approx(min(rates) * gap.value / c.value, rel=1e-4)


def test_holley_stroock_bounded_perturbation():
    # U = |x|^2/2 + W with W = 0.5 cos(3 x1) bounded: C_LS >= exp(-osc W) = e^{-1}
    W = E.Sum([0.5], [E.GaussianMixture([[0.0, 0.0]], 0.7)])
    U0 = E.Quadratic(np.eye(2))
    g = Grid([(-6, 6)] * 2, 64)
    c = holley_stroock(1.0, -W, g)       # W' = -0.5 * log N: bounded on the box
    osc = g.evaluate(-W).max() - g.evaluate(-W).min()
    assert c.value == pytest.approx(np.exp(-osc)) and c.certified
    fp = FokkerPlanck(U0 - W, g)
    assert spectral_gap_estimate(fp).value >= c.value
    with pytest.raises(ValueError, match="not strongly convex"):
        bakry_emery(E.DoubleWell(2), g)


def test_stopping_times_say_how_well_they_are_known():
    """Exact data: no statistical error, a bracket of saved times that contains the event,
    and the cases a reader must be told in words."""
    t = np.linspace(0, 2, 21)
    st = tau_det(t, 0.32 + 0.5 * t)   # crosses 1 at t = 1.36
    assert st.stderr == 0.0 and st.bracket == (pytest.approx(1.3), pytest.approx(1.4)) and st.note == ""
    assert st.bracket[0] <= st.time <= st.bracket[1]
    assert "first save interval [0, 0.1]" in tau_det(t, 0.95 + t).note
    assert tau_det(t, 1.2 + t).note.startswith("R_0 >= 1")
    assert "stays below 1" in tau_det(t, 0.1 * t).note
    d = tau_det(t, 0.95 + t).as_dict()
    assert d["bracket"] == [0.0, pytest.approx(0.1)] and "stderr" not in d and "note" in d
    kl = 2.0 * np.exp(-3.0 * t)        # reaches eps = 0.01 at log(200) / 3 = 1.766
    obs = kl_reaches(t, kl, 0.01)
    assert obs.time == pytest.approx(np.log(200) / 3, rel=1e-12) and obs.bracket == (pytest.approx(1.7), pytest.approx(1.8))
    assert kl_reaches(t, kl, 1e-9).time == np.inf
    cert = tau_lang(0.01, 2.0, LSConstant(1.5, "test", True))
    est_ = tau_lang(0.01, 2.0, LSConstant(1.5, "test", False))
    assert cert.time == est_.time == pytest.approx(np.log(200) / 3)
    assert cert.note.startswith("certified") and est_.note.startswith("estimated")


def test_kl_reaches_never_interpolates_from_an_invalid_save():
    t = np.linspace(0, 2, 21)
    kl = 2.0 * np.exp(-3.0 * t)
    valid = np.ones(t.size, bool)
    k = int(np.argmax(kl <= 0.01))
    valid[k - 1] = False
    kl_bad = kl.copy()
    kl_bad[k - 1] = 1e-9          # an invalid value that would pull the interpolation anywhere
    st = kl_reaches(t, kl_bad, 0.01, valid=valid)
    assert st.time == pytest.approx(t[k]) and st.bracket == (pytest.approx(t[k - 2]), pytest.approx(t[k]))
    assert "not valid" in st.note
