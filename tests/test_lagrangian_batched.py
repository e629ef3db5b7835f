"""Backward and forward characteristics of energies given as vectorised callables (NumPy, torch,
JAX): the batched path (all points in one call per stage, per-point error control) against the
closed forms of the Ornstein-Uhlenbeck continuity flow and against the compiled per-point path."""
import copy
import warnings

import numpy as np
import pytest

from fokkerplanck import Continuity, Grid, densities, energies as E, forward_lagrangian
from fokkerplanck.diagnostics import gaussian_kl, ou_density, ou_moments
from fokkerplanck.flows.lagrangian import integrate_characteristics

A1 = np.array([[1.5]])
A2 = np.array([[1.5, 0.4], [0.4, 0.8]])
TIMES = np.linspace(0.0, 1.0, 11)
# max |error| / max density against the closed form at rtol 1e-10, measured: batched 9e-12
# (1D) and 1.4e-11 (2D), the compiled path 3.4e-11 and 3.9e-11
DENSITY_TOL = 2e-10


def quadratic_callable(A, counter=None):
    """``x'Ax/2`` as NumPy callables (gradient and Laplacian given); ``counter`` collects the
    number of points of every gradient call."""
    def grad(X):
        if counter is not None:
            counter.append(X.shape[0])
        return X @ A

    return E.from_callable(lambda X: 0.5 * np.einsum("ni,ij,nj->n", X, A, X), grad,
                           lambda X: np.full(X.shape[0], np.trace(A)), dim=A.shape[0], name="quadratic")


def _setup(A):
    d = A.shape[0]
    g = Grid([(-6, 6)] * d, 64 if d == 1 else 40)
    m0 = np.array([1.0, -0.5][:d])
    S0 = np.diag([1.2, 0.7][:d])
    return g, m0, S0


def _exact(g, A, m0, S0, times):
    return np.array([ou_density(g, *ou_moments(A, np.zeros(len(m0)), m0, S0, 1.0, t, flow="continuity"))
                     for t in times])


def _lagrangian(U, g, rho0, times):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mass at the walls of a small box
        return Continuity(U, g, method="lagrangian").solve(rho0, times).densities


@pytest.mark.parametrize("A", [A1, A2], ids=["1d", "2d"])
def test_backward_characteristics_of_a_callable_meet_the_closed_form(A):
    """The densities of the deterministic OU flow at the cell centres, every output time
    inside the integrator's steps: batched and compiled both within the tolerance of the
    closed form, and of each other."""
    g, m0, S0 = _setup(A)
    rho0 = densities.Gaussian(m0, S0)
    exact = _exact(g, A, m0, S0, TIMES)
    calls = []
    batched = _lagrangian(quadratic_callable(A, calls), g, rho0, TIMES)
    compiled = _lagrangian(E.Quadratic(A), g, rho0, TIMES)
    scale = exact.max()
    assert np.abs(batched - exact).max() < DENSITY_TOL * scale
    assert np.abs(compiled - exact).max() < DENSITY_TOL * scale
    assert np.abs(batched - compiled).max() < DENSITY_TOL * scale
    # all cells together: the gradient is called once per stage with every unfinished cell,
    # not once per cell (at most 15 calls a step: 11 stages, f at the new state, 3 for the
    # interpolant; this flow takes at most 12 steps to t = 1: 172 calls measured in 2D)
    assert max(calls) == g.size and len(calls) <= 2 + 15 * 12


def test_forward_kl_of_a_callable_meets_the_closed_form():
    """forward_lagrangian (forward characteristics, Gauss-Hermite nodes: exact for a quadratic)
    of a callable against the closed-form KL of the deterministic OU flow."""
    A = A2
    m0, S0 = np.array([1.0, -0.5]), np.diag([1.2, 0.7])
    U = quadratic_callable(A)
    logz = E.Quadratic(A).log_partition(1.0)
    res = forward_lagrangian(U, densities.Gaussian(m0, S0), TIMES, log_partition=logz, nodes=12)
    exact = [gaussian_kl(*ou_moments(A, np.zeros(2), m0, S0, 1.0, t, flow="continuity"), np.zeros(2),
                         np.linalg.inv(A)) for t in TIMES]
    np.testing.assert_allclose(res.kl, exact, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.e_lap, np.trace(A), rtol=1e-12)


def test_many_and_repeated_output_times():
    """101 output times (several inside every step, one repeated, t = 0 twice): every record
    meets the closed form, and a time asked alone gives the same record to the tolerance."""
    A = A2
    g, m0, S0 = _setup(A)
    rho0 = densities.Gaussian(m0, S0)
    lin = np.linspace(0.0, 2.0, 101)
    times = np.sort(np.r_[0.0, lin, lin[37]])
    exact = _exact(g, A, m0, S0, times)
    got = _lagrangian(quadratic_callable(A), g, rho0, times)
    assert np.abs(got - exact).max() < DENSITY_TOL * exact.max()
    alone = _lagrangian(quadratic_callable(A), g, rho0, [0.0, lin[37]])
    k = int(np.flatnonzero(times == lin[37])[0])
    np.testing.assert_array_equal(got[k], got[k + 1])
    assert np.abs(alone[1] - got[k]).max() < DENSITY_TOL * exact.max()


def test_characteristics_of_a_sum_with_a_built_in_energy():
    """``U = U_callable / 2 + Quadratic / 2`` (a kernel-less sum): the flow of ``x'Ax/2``."""
    A = A2
    g, m0, S0 = _setup(A)
    U = 0.5 * quadratic_callable(A) + 0.5 * E.Quadratic(A)
    assert not U.has_kernels
    got = _lagrangian(U, g, densities.Gaussian(m0, S0), TIMES)
    exact = _exact(g, A, m0, S0, TIMES)
    assert np.abs(got - exact).max() < DENSITY_TOL * exact.max()


def test_escaped_points_are_stopped_and_flagged():
    """Backward characteristics of x'x/2, ``z = x0 e^s``, leave the ball of radius 3 at
    ``s = log(3 / |x0|)``: 0.405 from |x0| = 2, 1.79 from 0.5; one starting outside is
    stopped at once.  Records before the escape is seen follow the exact flow."""
    U = quadratic_callable(np.eye(2))
    X0 = np.array([[2.0, 0.0], [0.0, -0.5], [4.0, 0.0]])
    times = np.linspace(0, 1, 11)
    Z, L, esc = integrate_characteristics(U, X0, times, direction="backward", r_escape=3.0)
    assert not esc[:, 1].any()
    np.testing.assert_allclose(Z[:, 1], X0[1] * np.exp(times)[:, None], rtol=1e-9)
    np.testing.assert_allclose(L[:, 1], 2 * times, rtol=1e-9)
    assert not esc[0, 2] and esc[1:, 2].all()         # outside from the start: stopped there
    np.testing.assert_array_equal(Z[1:, 2], np.broadcast_to(X0[2], (10, 2)))
    first = int(np.argmax(esc[:, 0]))  # detected at the end of the step that crossed
    assert 0.4 < times[first] <= 1.0 and esc[first:, 0].all()
    np.testing.assert_allclose(Z[:first, 0], X0[0] * np.exp(times[:first])[:, None], rtol=1e-9)


# ---------------------------------------------------------------------------
# torch and JAX: the fused gradient + Laplacian and the characteristics
@pytest.mark.extras
def test_torch_energy_characteristics_and_fused_derivatives():
    torch = pytest.importorskip("torch")
    A = A2
    At = torch.tensor(A)
    U = E.from_torch(lambda x: 0.5 * ((x @ At) * x).sum(1) + 0.0 * torch.tanh(x[:, 0]), 2)
    X = np.random.default_rng(0).normal(size=(300, 2)) * 2
    G, lap = U._grad_lap(X)
    np.testing.assert_array_equal(G, U.grad(X))
    np.testing.assert_array_equal(lap, U.laplacian(X))
    np.testing.assert_allclose(lap, np.trace(A), rtol=1e-14)
    g, m0, S0 = _setup(A)
    got = _lagrangian(U, g, densities.Gaussian(m0, S0), TIMES)
    exact = _exact(g, A, m0, S0, TIMES)
    assert np.abs(got - exact).max() < DENSITY_TOL * exact.max()


@pytest.mark.extras
def test_torch_mlp_characteristics_equal_the_numpy_callable():
    """A small tanh MLP in torch and the same network written in NumPy (derivatives by hand):
    the two batched integrations agree to the tolerance."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    W1, b1, w2 = rng.normal(size=(2, 16)), rng.normal(size=16), rng.normal(size=16) * 0.1
    T1, Tb, T2 = (torch.tensor(v) for v in (W1, b1, w2))
    U_t = E.from_torch(lambda x: torch.tanh(x @ T1 + Tb) @ T2 + 0.5 * (x ** 2).sum(1), 2)

    def grad(X):
        s = 1 - np.tanh(X @ W1 + b1) ** 2
        return (s * w2) @ W1.T + X

    def lap(X):
        th = np.tanh(X @ W1 + b1)
        return (-2 * th * (1 - th ** 2) * w2) @ (W1 ** 2).sum(0) + 2.0

    U_n = E.from_callable(lambda X: np.tanh(X @ W1 + b1) @ w2 + 0.5 * (X ** 2).sum(1), grad, lap, dim=2)
    X = rng.normal(size=(200, 2)) * 3
    G, L = U_t._grad_lap(X)
    np.testing.assert_allclose(G, grad(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(L, lap(X), rtol=1e-12, atol=1e-12)
    g = Grid([(-5, 5)] * 2, 32)
    rho0 = densities.Gaussian([0.5, 0.0], np.eye(2) * 1.5)
    a, b = _lagrangian(U_t, g, rho0, TIMES), _lagrangian(U_n, g, rho0, TIMES)
    assert np.abs(a - b).max() < DENSITY_TOL * b.max()


@pytest.mark.extras
def test_jax_energy_characteristics_and_padded_batches():
    jax = pytest.importorskip("jax")
    prev = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", True)
        A = A2
        Aj = jax.numpy.asarray(A)
        U = E.from_jax(lambda x: 0.5 * x @ Aj @ x, 2)
        for n in (1, 3, 300):  # the fused call pads to 256 and 512 rows inside, cut back to n
            X = np.random.default_rng(n).normal(size=(n, 2))
            G, lap = U._grad_lap(X)
            np.testing.assert_allclose(G, X @ A, rtol=1e-13, atol=1e-14)
            np.testing.assert_allclose(lap, np.trace(A), rtol=1e-13)
            assert U.value(X).shape == (n,)
        g, m0, S0 = _setup(A)
        got = _lagrangian(U, g, densities.Gaussian(m0, S0), TIMES)
        exact = _exact(g, A, m0, S0, TIMES)
        assert np.abs(got - exact).max() < DENSITY_TOL * exact.max()
    finally:
        jax.config.update("jax_enable_x64", prev)


@pytest.mark.extras
def test_float32_torch_module_gets_a_tolerance_it_can_meet():
    """A float32 network cannot resolve rtol 1e-10 (its error estimates are rounding noise and
    the steps would shrink without end): the tolerances are raised to 100 eps with a warning,
    and the densities stay within 1e-4 of the float64 network's."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    class Confined(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return 0.1 * self.net(x)[:, 0] + 0.5 * (x ** 2).sum(1)

    U32 = E.from_torch(Confined(net), 2)
    U64 = E.from_torch(Confined(copy.deepcopy(net)).double(), 2)
    g = Grid([(-5, 5)] * 2, 16)
    rho0 = densities.Gaussian([0.5, 0.0], np.eye(2))
    with pytest.warns(RuntimeWarning, match=r"precision 1.2e-07 .* raised to rtol=1.2e-05"):
        a = Continuity(U32, g, method="lagrangian").solve(rho0, TIMES).densities
    b = _lagrangian(U64, g, rho0, TIMES)
    assert np.abs(a - b).max() < 1e-4 * b.max()
