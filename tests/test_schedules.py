"""Every schedule of the VPFB log-homotopy ``alpha(t) log q(x) + beta(t) log p(xbar | x)``:
the kernel moments against closed forms and against an independent quadrature of the
homotopy, exact time derivatives, compiled kernels, and the stationary tail."""
import math

import numpy as np
import pytest

import particles
from fokkerplanck.energies.base import NoKernelsError
from fokkerplanck.energies.paths import VPFBHomotopy, VPFBSchedule
from fokkerplanck.wasserstein import gaussian_w2_nd

W, V = 1.3, 0.6          # prior and likelihood std, w != v
SCHEDULES = {
    "linear": VPFBSchedule.linear(),
    "ot-fm": VPFBSchedule.ot_fm(),
    "geometric": VPFBSchedule.geometric(30.0),
    "geometric-fast": VPFBSchedule.geometric(0.05),
}


def _custom_ot_fm():
    w2, v2 = W * W, V * V
    return VPFBSchedule.custom(lambda t: w2 / (1 - t), lambda t: v2 * t / (1 - t) ** 2,
                               lambda t: w2 / (1 - t) ** 2, lambda t: v2 * (1 + t) / (1 - t) ** 3, name="my-ot-fm")


@pytest.mark.parametrize("t", [0.0, 0.1, 0.45, 0.8, 0.97])
def test_ot_fm_moments_velocity_and_w2_match_closed_forms(t):
    """mu = t, sigma = 1 - t whatever w and v; the one-point velocity (xbar - x) / (1 - t);
    W2 to t = 0 is t sqrt(|xbar|^2 + d)."""
    xbar = np.array([[1.5, -0.7]])
    H = VPFBHomotopy(xbar, W, V, schedule="ot-fm", t_max=0.99)
    assert abs(H.mu(t) - t) <= 1e-12 and abs(math.sqrt(H.sigma2(t)) - (1 - t)) <= 1e-12
    assert abs(H.dmu(t) - 1.0) <= 1e-10 and abs(H.dsigma2(t) + 2 * (1 - t)) <= 1e-10
    X = np.random.default_rng(0).normal(size=(40, 2)) * 2
    np.testing.assert_allclose(H.gaussian_velocity(X, t), (xbar - X) / (1 - t), rtol=1e-10, atol=1e-10)
    m0, m1 = H.mu(0) * xbar[0], H.mu(t) * xbar[0]
    w2 = gaussian_w2_nd(m1, H.sigma2(t) * np.eye(2), m0, H.sigma2(0) * np.eye(2))
    assert abs(w2 - t * math.sqrt(xbar[0] @ xbar[0] + 2)) <= 1e-10


@pytest.mark.parametrize("name", list(SCHEDULES) + ["custom"])
@pytest.mark.parametrize("t", [0.05, 0.5, 0.9])
def test_moments_equal_the_completed_square_of_the_homotopy(name, t):
    """The kernel N(mu xbar, sigma^2) against the normalised exp(alpha log q + beta log p) by
    quadrature on a fine line (1D, one data point): mean and variance to 1e-9."""
    sch = _custom_ot_fm() if name == "custom" else SCHEDULES[name]
    xbar = 1.7
    H = VPFBHomotopy([[xbar]], W, V, schedule=sch, t_max=0.99)
    a, b, _, _ = sch.weights(t, W * W, V * V)
    x = np.linspace(-12, 12, 400_001)
    h = a * (-0.5 * x ** 2 / W ** 2) + b * (-0.5 * (xbar - x) ** 2 / V ** 2)
    p = np.exp(h - h.max())
    p /= np.trapezoid(p, x)
    mean = np.trapezoid(x * p, x)
    var = np.trapezoid((x - mean) ** 2 * p, x)
    assert abs(mean - H.mu(t) * xbar) <= 1e-9 and abs(var - H.sigma2(t)) <= 1e-9
    # mu = sigmoid(log(beta w^2 / (alpha v^2))), sigma^2 = v^2 mu / beta, as written in the theory
    if b > 0:
        assert abs(H.mu(t) - 1 / (1 + a * V ** 2 / (b * W ** 2))) <= 1e-14
        assert abs(H.sigma2(t) - V ** 2 * H.mu(t) / b) <= 1e-12


@pytest.mark.parametrize("name", list(SCHEDULES) + ["custom"])
def test_time_derivatives_are_exact(name):
    """d_t log rho_bar and the moment derivatives against central differences (error ~ e^2)."""
    sch = _custom_ot_fm() if name == "custom" else SCHEDULES[name]
    rng = np.random.default_rng(1)
    H = VPFBHomotopy(rng.normal(size=(4, 3)), W, V, schedule=sch, t_max=0.99)
    X = rng.normal(size=(30, 3))
    e = 1e-5
    for t in (0.2, 0.6):
        fd = (H.logpdf(X, t + e) - H.logpdf(X, t - e)) / (2 * e)
        np.testing.assert_allclose(H.dt_logpdf(X, t), fd, rtol=1e-6, atol=1e-6)
        assert abs(H.dmu(t) - (H.mu(t + e) - H.mu(t - e)) / (2 * e)) <= 1e-7
        assert abs(H.dsigma2(t) - (H.sigma2(t + e) - H.sigma2(t - e)) / (2 * e)) <= 1e-7


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_path_kernels_equal_the_mixture_at_every_time(name):
    rng = np.random.default_rng(2)
    H = VPFBHomotopy(rng.normal(size=(5, 2)), W, V, schedule=SCHEDULES[name], t_max=0.8)
    X = rng.normal(size=(25, 2)) * 1.5
    for t in (0.0, 0.3, 0.8, 0.95):     # 0.95 lies on the tail: the kernels freeze at t_max
        k, U = H.eval_path_kernels(X, t), H.at(t)
        np.testing.assert_allclose(k["value"], U.value(X), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(k["grad"], U.grad(X), rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(k["lap"], U.laplacian(X), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(H.param_rows([0.3, 0.95]), [H.at(0.3).params, H.at(0.8).params], rtol=1e-14)


def test_custom_schedule_equals_the_closed_form_and_has_no_kernels():
    data = np.random.default_rng(3).normal(size=(3, 2))
    A = VPFBHomotopy(data, W, V, schedule=_custom_ot_fm(), t_max=0.999)
    B = VPFBHomotopy(data, W, V, schedule="ot-fm", t_max=0.999)
    X = np.random.default_rng(4).normal(size=(20, 2))
    for t in (0.0, 0.4, 0.9):
        np.testing.assert_allclose(A.logpdf(X, t), B.logpdf(X, t), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(A.dt_logpdf(X, t), B.dt_logpdf(X, t), rtol=1e-11, atol=1e-11)
    with pytest.raises(NoKernelsError, match="closed-form schedule"):
        _ = A.path_kernels


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="point mass at t = 1"):
        VPFBHomotopy([[1.0]], W, V, schedule="ot-fm")       # t_max = 1 is sigma = 0
    with pytest.raises(ValueError, match="fails at t = 1"):
        VPFBHomotopy([[1.0]], W, V, schedule=_custom_ot_fm())   # 1 / (1 - t) at t_max = 1
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        VPFBHomotopy([[1.0]], W, V, schedule="cosine")
    with pytest.raises(ValueError, match="ratio != 1"):
        VPFBSchedule.geometric(1.0)
    with pytest.raises(TypeError, match="beta must be a callable"):
        VPFBSchedule.custom(lambda t: 1.0, "t", lambda t: 0.0, lambda t: 1.0)
    bad = VPFBSchedule.custom(lambda t: 1.0 - 2 * t, lambda t: t, lambda t: -2.0, lambda t: 1.0)
    with pytest.raises(ValueError, match="alpha must be positive"):
        VPFBHomotopy([[1.0]], W, V, schedule=bad, t_max=0.9)   # alpha < 0 at t_max: refused up front


def test_stationary_tail_is_a_boltzmann_equilibrium():
    """From t_max on the law is frozen (d_t = 0) and is exp(-U_tail): Langevin on the tail
    energy started from exact samples keeps its moments (4 standard errors)."""
    xbar = np.array([[2.0, -1.0]])
    H = VPFBHomotopy(xbar, W, V, schedule="ot-fm", t_max=0.7)
    X = np.random.default_rng(5).normal(size=(10, 2))
    np.testing.assert_array_equal(H.logpdf(X, 0.9), H.logpdf(X, 0.7))
    assert np.all(H.dt_logpdf(X, 0.9) == 0.0) and H.dmu(0.9) == 0.0 and H.dsigma2(0.9) == 0.0
    U = H.tail_energy()
    np.testing.assert_allclose(U.value(X), -H.logpdf(X, 0.7), rtol=1e-13)
    n = 20000
    ens = particles.langevin(U, H.sample(n, 0.7, seed=6), 1e-3, 400, seed=7)
    m, s2 = H.mu(0.7) * xbar[0], H.sigma2(0.7)
    se = math.sqrt(s2 / n)
    # Euler-Maruyama's stationary variance is s2 / (1 - dt / (2 s2)): a bias of 1.8e-4 relative here
    assert np.all(np.abs(ens.summaries["mean"][-1] - m) <= 4 * se)
    assert np.all(np.abs(np.diag(ens.summaries["cov"][-1]) - s2) <= 4 * s2 * math.sqrt(2 / n) + 2e-3 * s2)


def test_tail_w2_to_the_data_law():
    """One data point: W2(N(mu xbar, s^2 I), delta_xbar) = sqrt((1 - mu)^2 |xbar|^2 + d s^2),
    exact; several (1D): an upper bound of the exact W2 from the quantile functions."""
    H = VPFBHomotopy([[2.0, -1.0]], W, V, schedule="ot-fm", t_max=0.7)
    val, exact = H.tail_w2_to_data()
    assert exact and abs(val - math.sqrt(0.3 ** 2 * 5 + 2 * 0.3 ** 2)) <= 1e-12
    data = np.array([[-2.0], [0.5], [3.0]])
    H = VPFBHomotopy(data, W, V, schedule="linear", t_max=0.6)
    val, exact = H.tail_w2_to_data()
    u = (np.arange(200_000) + 0.5) / 200_000
    x = np.linspace(-10, 10, 400_001)
    cdf = np.cumsum(np.exp(H.logpdf(x[:, None], 0.6))) * (x[1] - x[0])
    q_mix = np.interp(u, cdf / cdf[-1], x)
    q_data = np.sort(data[:, 0])[np.minimum((u * 3).astype(int), 2)]
    w2_exact = math.sqrt(np.mean((q_mix - q_data) ** 2))
    assert not exact and w2_exact <= val and val - w2_exact < 0.5
