"""Numba kernels with t (issue 12): the path kernel contract, user-written kernel paths, the
Lagrangian characteristics along a path (grid densities and particles) against closed forms."""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.stats import multivariate_normal as mvn

from fokkerplanck import Grid, densities, energies as E
from fokkerplanck.energies import NoKernelsError
from fokkerplanck.energies.paths import CallablePath, ConstantPath, KernelPath, LinearHomotopy, VPFBHomotopy
from fokkerplanck.flows.lagrangian import integrate_characteristics
from fokkerplanck.flows.paths import solve_path_continuity
from particles.annealed import annealed_langevin, path_flow


# -- a user-written U(x, t) = k(t)/2 |x - c(t)|^2, k = q0 (1 + t), c = q1 (cos 2 pi t, sin 2 pi t, 0...)
@numba.njit
def _k_c(t, q, a):
    k = q[0] * (1.0 + t)
    c = 0.0
    if a == 0:
        c = q[1] * math.cos(2 * math.pi * t)
    elif a == 1:
        c = q[1] * math.sin(2 * math.pi * t)
    return k, c


@numba.njit
def rot_value(x, t, q):
    v = 0.0
    for a in range(x.shape[0]):
        k, c = _k_c(t, q, a)
        v += 0.5 * k * (x[a] - c) ** 2
    return v


@numba.njit
def rot_grad(x, t, q, out):
    for a in range(x.shape[0]):
        k, c = _k_c(t, q, a)
        out[a] = k * (x[a] - c)


@numba.njit
def rot_lap(x, t, q):
    return x.shape[0] * q[0] * (1.0 + t)


def _rot_moments(q, d, D, m0, s0):
    """Noiseless flow of the rotating quadratic: m' = -k (m - c), s^2' = -2 k s^2 (isotropic)."""
    def rhs(s, y):
        u = s / D
        k = q[0] * (1 + u)
        c = np.zeros(max(d, 2))
        c[0], c[1] = q[1] * math.cos(2 * math.pi * u), q[1] * math.sin(2 * math.pi * u)
        c = c[:d]
        return np.concatenate([-k * (y[:d] - c), [-2 * k * y[d]]])
    return lambda ts: solve_ivp(rhs, [0, D], np.append(m0, s0), rtol=1e-12, atol=1e-14, t_eval=ts).y


A0, M0 = np.array([[1.0, 0.0], [0.0, 0.5]]), np.zeros(2)
A1, M1 = np.array([[3.0, 0.8], [0.8, 2.0]]), np.array([1.5, -1.0])


def _check_equal(P, X):
    assert P.has_kernels
    for t in (0.0, 0.37, 1.0):
        k, U = P.eval_path_kernels(X, t), P.at(t)
        scale = 1.0 + np.abs(U.value(X)).max()
        assert np.abs(k["value"] - U.value(X)).max() < 1e-12 * scale, (P, t)
        assert np.abs(k["grad"] - U.grad(X)).max() < 1e-12 * scale, (P, t)
        assert np.abs(k["lap"] - U.laplacian(X)).max() < 1e-12 * scale, (P, t)
        if P.has_hessian:
            assert np.abs(k["hess"] - U.hessian(X)).max() < 1e-11 * scale, (P, t)


def test_path_kernels_equal_the_frozen_energies(rng):
    """value, grad, lap and Hessian of the kernels with t equal those of ``at(t)``: VPFB written
    out, a user KernelPath (whose at(t) is a Custom energy with t as its last parameter)."""
    X = rng.normal(size=(60, 2)) * 2
    K = KernelPath(2, rot_value, rot_grad, rot_lap, params=[1.5, 2.0])
    for P in (VPFBHomotopy(rng.normal(size=(5, 2)) * 2, 1.0, 0.5), K):
        _check_equal(P, X)
    x = np.array([[0.3, -0.2]])
    assert K.at(0.25).value(x)[0] == pytest.approx(0.5 * 1.5 * 1.25 * (0.3 ** 2 + (-0.2 - 2.0) ** 2), rel=1e-14)


@pytest.mark.slow  # compiles a dozen composed closures cold (about 40 s in a clean clone): CI's second step
def test_composed_path_kernels_equal_the_frozen_energies(rng):
    """Linear homotopies, sums of paths and static energies, constants (softmin), schedules."""
    from fokkerplanck.energies.paths import ScheduledPath

    X = rng.normal(size=(60, 2)) * 2
    H = VPFBHomotopy(rng.normal(size=(5, 2)) * 2, 1.0, 0.5)
    L = LinearHomotopy(E.Quadratic(A0, mean=M0), E.GaussianMixture(rng.normal(size=(3, 2)), 0.7))
    for P in (L, 2.0 * L - H + E.Quadratic(np.eye(2)), ConstantPath(E.softmin(E.Quadratic(A0, mean=M0),
                                                                                  E.Quadratic(A1, mean=M1))),
              ScheduledPath(H, [0.0, 0.5, 1.0], [0.0, 0.2, 1.0])):
        _check_equal(P, X)


def test_callable_paths_have_no_kernels_and_say_so():
    P = CallablePath(lambda X, t: 0.5 * (1 + t) * (X ** 2).sum(1), lambda X, t: (1 + t) * X, dim=2)
    assert not P.has_kernels
    assert P.at(0.5).grad(np.array([[1.0, 2.0]]))[0] == pytest.approx([1.5, 3.0])
    with pytest.raises(NoKernelsError, match="callables"):
        P.path_kernels
    with pytest.raises(NoKernelsError):
        integrate_characteristics(P, np.zeros((2, 2)), [0.0, 0.5], direction="forward", duration=1.0)
    with pytest.raises(ValueError, match="duration"):
        integrate_characteristics(LinearHomotopy(E.Quadratic(A0), E.Quadratic(A1)), np.zeros((2, 2)), [0.0, 0.5])
    with pytest.raises(ValueError, match="numba"):
        KernelPath(2, lambda x, t, q: 0.0, rot_grad, rot_lap)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_lagrangian_along_a_user_kernel_path_is_exact_in_every_dimension(d):
    """Backward characteristics through U(x, t) at every stage time: the grid density is the
    Gaussian of the moment ODE at the cell centres to ODE tolerance (d = 1, 2, 3; no
    discretisation error, whatever the grid)."""
    q, D = np.array([1.0, 1.5]), 1.5
    K = KernelPath(d, rot_value, rot_grad, rot_lap, params=q)
    m0, s0 = np.full(d, 0.5), 1.2
    times = np.array([0.0, 0.4, 1.1, 1.5])
    ref = _rot_moments(q, d, D, m0, s0)(times)
    g = Grid([(-4, 4)] * d, {1: 40, 2: 24, 3: 10}[d])
    sol = solve_path_continuity(K, g, densities.Gaussian(m0, s0 * np.eye(d)), times, duration=D, method="lagrangian")
    for j in range(times.size):
        exact = mvn(ref[:d, j], ref[d, j] * np.eye(d)).pdf(g.points).reshape(g.shape)
        assert np.abs(sol.densities[j] - exact).max() < 1e-8 * exact.max(), (d, times[j])


@pytest.mark.slow  # compiles the linear homotopy's Lagrangian integrator cold (10 s): CI's second step
def test_particles_along_a_path_carry_the_exact_log_density_to_ode_tolerance():
    """path_flow (Dormand-Prince per particle, kernels with t) maps the Gaussian to the moment
    ODE's Gaussian; its log-densities equal that logpdf at the particles to 1e-7, where the
    frozen-step Euler of path_gradient_flow is off by 0.18 at dt = 0.01."""
    D = 1.0
    path = LinearHomotopy(E.Quadratic(A0, mean=M0), E.Quadratic(A1, mean=M1))

    def rhs(s, y):
        A, b = (1 - s) * A0 + s * A1, s * A1 @ M1
        S = y[2:].reshape(2, 2)
        return np.concatenate([-A @ y[:2] + b, (-A @ S - S @ A.T).ravel()])
    times = np.array([0.0, 0.3, 1.0])
    ref = solve_ivp(rhs, [0, D], np.concatenate([[-1.0, 1.0], (0.8 * np.eye(2)).ravel()]), rtol=1e-12,
                    atol=1e-14, t_eval=times).y
    x0 = np.random.default_rng(0).multivariate_normal([-1, 1], 0.8 * np.eye(2), size=2000)
    r = path_flow(path, x0, times, duration=D, logrho0=mvn([-1, 1], 0.8 * np.eye(2)).logpdf(x0))
    for j in range(times.size):
        exact = mvn(ref[:2, j], ref[2:, j].reshape(2, 2)).logpdf(r.positions[j])
        assert np.abs(r.logdensity[j] - exact).max() < 1e-7
    # the particles' mean and covariance: the moment ODE to Monte Carlo error
    assert np.abs(r.positions[-1].mean(0) - ref[:2, -1]).max() < 4 * np.sqrt(ref[2, -1] / 2000)


@pytest.mark.slow  # compiles Langevin around the user's kernels cold (9 s): CI's second step
def test_annealed_langevin_runs_a_user_kernel_path_compiled():
    """A KernelPath's snapshots are Custom energies with t as their last parameter: the compiled
    Langevin kernels run them, and the ensemble follows the rotating OU law's moment ODE
    (m' = -k (m - c), s^2' = -2 k s^2 + 2 T) within Monte Carlo and O(dt) error."""
    q, D, T = np.array([2.0, 1.0]), 1.0, 0.5
    K = KernelPath(2, rot_value, rot_grad, rot_lap, params=q)
    assert K.at(0.3).has_kernels

    def rhs(s, y):
        k = q[0] * (1 + s)
        c = q[1] * np.array([math.cos(2 * math.pi * s), math.sin(2 * math.pi * s)])
        return np.concatenate([-k * (y[:2] - c), [-2 * k * y[2] + 2 * T]])
    ref = solve_ivp(rhs, [0, D], [0.0, 0.0, 0.5], rtol=1e-12, atol=1e-14).y[:, -1]
    x0 = np.random.default_rng(1).normal(size=(20000, 2)) * math.sqrt(0.5)
    run = annealed_langevin(K, x0, 1e-3, 1000, duration=D, temperature=T, seed=3, method="leimkuhler-matthews")
    X = run.positions[-1]
    se = math.sqrt(ref[2] / X.shape[0])
    assert np.abs(X.mean(0) - ref[:2]).max() < 4 * se + 5e-3   # + the O(dt) lag of the moving centre
    assert abs(X.var(0).mean() - ref[2]) < 0.01


@pytest.mark.slow  # compiles the scheduled linear homotopy's kernels cold: CI's second step
def test_scheduled_paths_follow_their_schedule(rng):
    """A geometric annealing schedule on a linear homotopy: at(t) is the path at s(t), and the
    kernels with t interpolate the schedule inside the compiled code (equal to at(t))."""
    from fokkerplanck.energies.paths import ScheduledPath

    L = LinearHomotopy(E.Quadratic(A0, mean=M0), E.GaussianMixture(rng.normal(size=(3, 2)), 0.7))
    ts = np.linspace(0, 1, 9)
    S = ScheduledPath(L, ts, (10.0 ** ts - 1) / 9)
    X = rng.normal(size=(40, 2))
    for t in (0.0, 0.3, 0.55, 1.0):
        s = float(np.interp(t, ts, (10.0 ** ts - 1) / 9))
        assert S.s(t) == pytest.approx(s, rel=1e-15)
        assert np.allclose(S.at(t).grad(X), L.at(s).grad(X), rtol=1e-14, atol=1e-14)
        k = S.eval_path_kernels(X, t)
        assert np.abs(k["grad"] - L.at(s).grad(X)).max() < 1e-12 and np.abs(k["lap"] - L.at(s).laplacian(X)).max() < 1e-12
    with pytest.raises(ValueError, match="not increasing"):
        ScheduledPath(L, ts, ts[::-1])
    with pytest.raises(ValueError, match="as many"):
        ScheduledPath(L, ts, ts[:-1])


def test_vpfb_parameter_rows_give_the_frozen_mixtures_run():
    """VPFBHomotopy.param_rows builds the per-step mixture parameters without the mixtures; the
    annealed run with them equals the run through at(t) step by step (round-off: the two
    compute log(2 pi s^2) differently)."""
    from fokkerplanck.energies.paths import EnergyPath

    H = VPFBHomotopy(np.random.default_rng(0).normal(size=(6, 2)) * 2, 1.25, 1.0)
    ts = np.linspace(0, 1, 5)
    R = H.param_rows(ts)
    assert max(np.abs(R[i] - H.at(t).params).max() for i, t in enumerate(ts)) < 1e-14

    class Plain(EnergyPath):   # the same path without param_rows: rows from at(t)
        dim = 2

        def at(self, t):
            return H.at(t)

    x0 = np.random.default_rng(1).normal(size=(500, 2))
    for method in ("euler-maruyama", "mala"):
        a = annealed_langevin(H, x0, 2e-3, 200, temperature=1.0, seed=4, method=method, save_every=50)
        b = annealed_langevin(Plain(), x0, 2e-3, 200, temperature=1.0, seed=4, method=method, save_every=50)
        assert np.abs(a.positions - b.positions).max() < 1e-10
        if method == "mala":
            assert np.array_equal(a.acceptance, b.acceptance)


def test_kernel_and_scheduled_paths_give_parameter_rows():
    from fokkerplanck.energies.paths import ScheduledPath

    K = KernelPath(2, rot_value, rot_grad, rot_lap, params=[1.0, 1.5])
    ts = np.array([0.0, 0.3, 1.0])
    assert np.array_equal(K.param_rows(ts), np.array([K.at(t).params for t in ts]))
    S = ScheduledPath(VPFBHomotopy(np.ones((3, 2)), 1.0, 0.5), [0.0, 0.5, 1.0], [0.0, 0.2, 1.0])
    assert np.abs(S.param_rows(ts) - np.array([S.at(t).params for t in ts])).max() < 1e-14
    assert ScheduledPath(LinearHomotopy(E.Quadratic(A0), E.Quadratic(A1)), [0, 1], [0, 1]).param_rows(ts) is None


def test_linear_homotopy_kernels_at_intermediate_times():
    """The composed kernels of (1 - t) U0 + t U1 for two quadratics in closed form at t
    strictly inside (0, 1), where each term's own coefficient matters: value, gradient,
    Laplacian (1 - t) tr A0 + t tr A1 and Hessian.  (The other compositions are checked
    in the slow tier.)"""
    L = LinearHomotopy(E.Quadratic(A0, mean=M0), E.Quadratic(A1, mean=M1))
    X = np.random.default_rng(8).normal(size=(20, 2)) * 2
    for t in (0.3, 0.8):
        k = L.eval_path_kernels(X, t)
        val = 0.5 * (1 - t) * np.einsum("ni,ij,nj->n", X - M0, A0, X - M0) \
            + 0.5 * t * np.einsum("ni,ij,nj->n", X - M1, A1, X - M1)
        np.testing.assert_allclose(k["value"], val, rtol=1e-13)
        np.testing.assert_allclose(k["grad"], (1 - t) * (X - M0) @ A0 + t * (X - M1) @ A1, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(k["lap"], (1 - t) * np.trace(A0) + t * np.trace(A1), rtol=1e-13)
        np.testing.assert_allclose(k["hess"], np.broadcast_to((1 - t) * A0 + t * A1, (20, 2, 2)), rtol=1e-13)
