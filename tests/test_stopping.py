"""Stopping rules: tau_det and argmin on closed forms; tau_Lang with certified and
estimated log-Sobolev constants."""
import numpy as np
import pytest

from fokkerplanck import FokkerPlanck, Grid, densities, energies as E
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


def test_tau_lang_certified_ou_kl_below_eps():
    A = np.array([[1.5, 0.5], [0.5, 0.8]])
    U = E.Quadratic(A)
    g = Grid([(-8, 8)] * 2, 96)
    c = bakry_emery(U, g)
    assert c.certified and c.value == pytest.approx(np.linalg.eigvalsh(A).min(), rel=1e-12)
    assert "over the grid" not in c.source  # constant Hessian: exact
    fp = FokkerPlanck(U, g)
    rho0 = densities.Gaussian([2.0, -1.0], [[0.3, 0.0], [0.0, 0.5]])
    kl0 = fp.solve(rho0, [0.0]).kl()[0]
    for eps in (1e-1, 1e-2, 1e-4):
        tau = tau_lang(eps, kl0, c)
        assert fp.solve(rho0, [tau.time]).kl()[0] <= eps
    # the estimates: the spectral gap is a Poincare constant >= C_LS; the observed rate too
    gap = spectral_gap_estimate(fp)
    # for OU they are equal in the continuum; the discrete gap is O(h^2) below (0.44% at h = 1/6)
    assert not gap.certified and gap.value >= c.value * (1 - 1e-2)
    tr = fp.solve(rho0, np.linspace(0, 4, 41))
    obs = observed_rate(tr)
    assert not obs.certified and obs.value >= c.value * (1 - 1e-2)


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
