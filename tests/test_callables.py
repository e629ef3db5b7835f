"""Energies from callables (NumPy, PyTorch, JAX): derivatives against closed forms, the
vectorised particle path against the numba path for the same energy, grid solves, and
bad callables named in the errors."""
import warnings

import numpy as np
import pytest

import particles
from fokkerplanck import FokkerPlanck, Grid, densities, energies as E
from fokkerplanck.energies.callables import NonFiniteEnergyError

RING = E.GaussianMixture.ring(8, 4.0, 0.5)


@pytest.fixture
def pts(rng):
    return rng.normal(size=(400, 2)) * 3


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_finite_difference_derivatives_meet_the_stated_errors(pts):
    """The module docstring's table, measured on the ring (bounds 5x the measured errors)."""
    only_value = E.from_callable(RING._value, dim=2)
    with_grad = E.from_callable(RING._value, RING._grad, dim=2)
    assert _rel(only_value.grad(pts), RING.grad(pts)) < 1e-9
    assert _rel(only_value.laplacian(pts), RING.laplacian(pts)) < 5e-7
    assert np.abs(only_value.hessian(pts) - RING.hessian(pts)).max() < 2e-4
    assert _rel(with_grad.laplacian(pts), RING.laplacian(pts)) < 3e-9
    assert _rel(with_grad.hessian(pts), RING.hessian(pts)) < 3e-9
    H = with_grad.hessian(pts)
    np.testing.assert_array_equal(H, H.transpose(0, 2, 1))
    assert with_grad.derivatives["lap"] == "central differences of grad"


def test_bad_callables_are_named(pts):
    with pytest.raises(ValueError, match=r"'badvalue' returned NaN or -inf at \d+ of 400 points; first at x"):
        E.from_callable(lambda X: np.where(X[:, 0] > 1, np.nan, 0.0), dim=2, name="badvalue").value(pts)
    with pytest.raises(ValueError, match=r"returned shape \(400, 1\) .* expected \(400,\)"):
        E.from_callable(lambda X: X[:, :1], dim=2).value(pts)

    def inf_grad(X):
        g = X.copy()
        g[3] = np.inf
        return g
    with pytest.raises(NonFiniteEnergyError, match=r"'q.grad' returned NaN or inf at 1 of 400"):
        E.from_callable(lambda X: (X ** 2).sum(1), inf_grad, dim=2, name="q").grad(pts)
    with pytest.raises(ValueError, match="returned str"):
        E.from_callable(lambda X: "no", dim=2).value(pts)
    with pytest.raises(ValueError, match="must be callable"):
        E.from_callable(lambda X: X[:, 0], grad=3.0, dim=2)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        E.from_callable(lambda X: X[:, 0], dim=0)
    wall = E.from_callable(lambda X: np.where(X[:, 0] > 0, np.inf, 0.0), dim=2)
    assert np.isinf(wall.value(pts)).any()  # +inf, a hard wall, is a value


def test_composition_and_spec():
    U = E.from_callable(RING._value, RING._grad, RING._lap, dim=2)
    S = 0.5 * U + E.Quadratic(np.eye(2))
    assert not S.has_kernels and E.Quadratic(np.eye(2)).has_kernels
    X = np.array([[0.3, -1.2], [2.0, 0.5]])
    np.testing.assert_allclose(S.grad(X), 0.5 * RING.grad(X) + X, rtol=1e-14)
    with pytest.raises(E.NoKernelsError, match="given by Python callables"):
        S.kernels
    with pytest.raises(ValueError, match="no spec"):
        U.to_spec()


def test_grid_solve_of_a_callable_equals_the_written_energy():
    g = Grid([(-7, 7)] * 2, 48)
    rho0 = densities.Gaussian(np.zeros(2), 4.0 * np.eye(2))
    U = E.from_callable(RING._value, RING._grad, RING._lap, dim=2)
    a = FokkerPlanck(RING, g).solve(rho0, [0.0, 0.5, 2.0])
    b = FokkerPlanck(U, g).solve(rho0, [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(a.densities, b.densities)
    np.testing.assert_allclose(b.kl(), a.kl(), rtol=1e-12)
    np.testing.assert_allclose(b.ratio(), a.ratio(), rtol=1e-12)


@pytest.mark.slow  # compiles kernels cold (20-45 s in a clean clone): CI's second step
@pytest.mark.parametrize("method", ["euler-maruyama", "leimkuhler-matthews", "mala"])
def test_vectorised_langevin_equals_the_numba_path(method, rng):
    """Same energy, same seed: the two paths agree to the energy's round-off (NumPy and
    numba evaluate the mixture in different orders; the gap grows by the chain's
    sensitivity, 1e-11 measured after 200 steps), box exits and MALA decisions included."""
    U = E.from_callable(RING._value, RING._grad, RING._lap, dim=2)
    x0 = np.clip(rng.normal(size=(2000, 2)) * 3, -6.9, 6.9)
    kw = dict(method=method, seed=5, save_every=100, box=[(-7, 7)] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a = particles.langevin(RING, x0, 0.01, 200, **kw)
        b = particles.langevin(U, x0, 0.01, 200, **kw)
    assert a.escaped > 0  # the box checks are exercised
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.summaries["ratio"], a.summaries["ratio"], rtol=1e-10)
    if method == "mala":
        np.testing.assert_array_equal(a.acceptance, b.acceptance)


@pytest.mark.slow  # compiles kernels cold (20-45 s in a clean clone): CI's second step
@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_vectorised_flow_equals_the_numba_path(method, rng):
    U = E.from_callable(RING._value, RING._grad, RING._lap, hess=RING._hess, dim=2)
    x0 = rng.normal(size=(1000, 2)) * 3
    rho0 = densities.Gaussian(np.zeros(2), 9.0 * np.eye(2))
    kw = dict(method=method, save_every=50, track_logdensity=True, logrho0=rho0.logpdf(x0), log_partition=0.0)
    a = particles.gradient_flow(RING, x0, 0.01, 100, **kw)
    b = particles.gradient_flow(U, x0, 0.01, 100, **kw)
    np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-12)
    # Euler's log|det(I - dt H)| by LAPACK against the kernels' elimination: 1e-8 (measured 5e-9)
    np.testing.assert_allclose(b.logdensity, a.logdensity, rtol=0, atol=1e-7 if method == "euler" else 1e-11)


def test_particles_where_the_callable_fails_are_frozen_and_counted(rng):
    """A callable returning NaN beyond x > 1: particles walking there freeze (status 2) with a
    warning, as non-finite particles do in the compiled path; a failure at x0 is an error."""
    def value(X):
        return np.where(X[:, 0] > 1.0, np.nan, 0.5 * (X ** 2).sum(1))

    def grad(X):
        return np.where(X[:, :1] > 1.0, np.nan, X)
    U = E.from_callable(value, grad, dim=2, name="halfplane")
    x0 = rng.normal(size=(500, 2)) * 0.2
    with pytest.warns(RuntimeWarning, match="became non-finite"):
        ens = particles.langevin(U, x0, 0.05, 100, seed=1)
    frozen = ens.status == 2
    assert 0 < frozen.sum() < 500
    assert np.all(ens.positions[-1][frozen, 0] > 1.0)  # frozen where the callable failed
    assert np.all(np.isfinite(ens.summaries["ratio"])) and ens.alive[-1] == 500 - frozen.sum()
    with pytest.raises(NonFiniteEnergyError, match="halfplane"):
        particles.langevin(U, x0 + 2.0, 0.05, 10, seed=1)
    with pytest.raises(ValueError, match="steps in float64"):
        particles.langevin(U, x0, 0.05, 10, seed=1, precision="float32")


@pytest.mark.slow  # compiles kernels cold (20-45 s in a clean clone): CI's second step
def test_langevin_of_a_callable_reaches_its_gibbs_law(rng):
    """A user's energy (no closed form anywhere in the toolkit): ULA at small dt against the
    grid's Gibbs moments, within the particles' error bars."""
    U = E.from_callable(lambda X: 0.25 * X[:, 0] ** 4 + 0.5 * (X[:, 1] - 0.5 * X[:, 0]) ** 2, dim=2)
    g = Grid([(-5, 5)] * 2, 100)
    w = g.gibbs(U)
    m2 = g.integrate(w * g.points[:, 0].reshape(g.shape) ** 2)
    ens = particles.langevin(U, rng.normal(size=(20000, 2)), 0.02, 300, method="mala", seed=3)
    x2 = ens.positions[-1][:, 0] ** 2
    assert abs(x2.mean() - m2) < 4 * x2.std() / np.sqrt(x2.size)


# ---------------------------------------------------------------------------
@pytest.mark.extras
def test_torch_energy_autograd_and_particles():
    torch = pytest.importorskip("torch")

    means = torch.tensor(RING.means, dtype=torch.float64)

    def ring_t(x):  # the ring's energy in torch: -log sum_k w_k N(x; m_k, s^2 I)
        s2 = 0.25
        q = -((x[:, None, :] - means[None]) ** 2).sum(-1) / (2 * s2)
        return -(torch.logsumexp(q, 1) - np.log(8) - np.log(2 * np.pi * s2))

    U = E.from_torch(ring_t, 2)
    X = np.random.default_rng(0).normal(size=(300, 2)) * 3
    np.testing.assert_allclose(U.value(X), RING.value(X), rtol=1e-12)
    np.testing.assert_allclose(U.grad(X), RING.grad(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(U.laplacian(X), RING.laplacian(X), rtol=1e-10, atol=1e-12)
    # entries near 0 are differences of entries of ~10: absolute round-off (1.4e-12 measured)
    np.testing.assert_allclose(U.hessian(X), RING.hessian(X), rtol=1e-10, atol=1e-10)
    x0 = np.clip(X, -6.9, 6.9)
    a = particles.langevin(RING, x0, 0.01, 50, seed=2, method="mala")
    b = particles.langevin(U, x0, 0.01, 50, seed=2, method="mala")
    np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-10)


@pytest.mark.extras
def test_torch_hutchinson_error_bars_are_honest():
    """d = 12 > EXACT_LAP_MAX_DIM: U = x'Ax/2 has lap = tr A; Hutchinson's Rademacher estimate
    has variance 2 sum_{i != j} A_ij^2 / k, and its reported standard error must cover it."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    B = rng.normal(size=(12, 12))
    A = B @ B.T / 12 + np.eye(12)
    At = torch.tensor(A)
    U = E.from_torch(lambda x: 0.5 * ((x @ At) * x).sum(1), 12, hutchinson_samples=32, seed=4)
    assert "Hutchinson" in U.derivatives["lap"]
    X = rng.normal(size=(2000, 12))
    lap, se = U.laplacian(X), U.laplacian_se(X)
    sd = np.sqrt(2 * (np.sum(A ** 2) - np.sum(np.diag(A) ** 2)) / 32)
    assert abs(np.mean(se) / sd - 1) < 0.05
    z = (lap - np.trace(A)) / sd
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and abs(z.std() - 1) < 0.05


@pytest.mark.extras
def test_torch_bad_modules_are_named():
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))  # float32
    with pytest.raises(ValueError, match=r"'Sequential' has torch.float32 parameters but dtype torch.float64"):
        E.from_torch(net, 2, dtype=torch.float64)
    U = E.from_torch(net, 2)  # float32 by its parameters
    assert U.value(np.zeros((3, 2))).shape == (3,)
    with pytest.raises(ValueError, match=r"'Sequential' failed on a \(4, 3\)"):
        E.from_torch(net, 3).value(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"returned shape \(5, 2\)"):
        E.from_torch(lambda x: x, 2, name="identity").value(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="not available"):
        E.from_torch(lambda x: x.sum(1), 2, device="meta" if not torch.cuda.is_available() else "xpu")


@pytest.mark.extras
def test_jax_energy():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    prev = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", False)
        with pytest.raises(ValueError, match="jax_enable_x64"):
            E.from_jax(lambda x: jnp.sum(x ** 2), 2)
        jax.config.update("jax_enable_x64", True)
        means = jnp.asarray(RING.means)

        def ring_j(x):
            q = -jnp.sum((x[None] - means) ** 2, 1) / 0.5
            return -(jax.scipy.special.logsumexp(q) - jnp.log(8.0) - jnp.log(2 * jnp.pi * 0.25))
        U = E.from_jax(ring_j, 2)
        X = np.random.default_rng(0).normal(size=(300, 2)) * 3
        np.testing.assert_allclose(U.value(X), RING.value(X), rtol=1e-12)
        np.testing.assert_allclose(U.grad(X), RING.grad(X), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(U.laplacian(X), RING.laplacian(X), rtol=1e-10, atol=1e-12)
        with pytest.raises(ValueError, match="to a scalar"):
            E.from_jax(lambda x: x, 2, name="vec").value(X)
    finally:
        jax.config.update("jax_enable_x64", prev)


def test_files_of_callable_energies(tmp_path):
    """A trajectory of a callable energy saves (its spec is a stand-in: code is never stored)
    and loads; its energy comes back only when passed in; particle metadata says the same."""
    from fokkerplanck import Trajectory

    U = E.from_callable(lambda X: 0.5 * (X ** 2).sum(1), lambda X: X, dim=2, name="half-square")
    g = Grid([(-7, 7)] * 2, 32)
    tr = FokkerPlanck(U, g).solve(densities.Gaussian(np.zeros(2), np.eye(2)), [0.0, 0.5])
    tr.save(tmp_path / "c.h5")
    t2 = Trajectory.load(tmp_path / "c.h5")
    assert "not loaded" in repr(t2.energy) and t2.energy.to_spec()["type"] == "unsaved"
    with pytest.raises(ValueError, match="not stored"):
        t2.energy.grad(np.zeros((1, 2)))
    t3 = Trajectory.load(tmp_path / "c.h5", energy=U)
    np.testing.assert_allclose(t3.kl(), tr.kl(), rtol=1e-14)
    ens = particles.langevin(U, np.zeros((10, 2)), 0.01, 2, seed=1)
    assert ens.meta["energy"]["type"] == "unsaved" and "half-square" in ens.meta["energy"]["repr"]


@pytest.mark.slow  # compiles kernels cold (20-45 s in a clean clone): CI's second step
def test_lagrangian_characteristics_of_a_callable_equal_the_compiled_ones():
    """The batched path (Dormand-Prince 8(5,3), per-point steps, batched energy calls) and the
    compiled one (Dormand-Prince 5(4)) hold the same per-point tolerance (rtol 1e-10): densities
    agree to 5e-8 of their maximum (measured 5e-9) and forward KL to 1e-9 (measured 6e-12)."""
    from fokkerplanck import Continuity, forward_lagrangian

    U = E.from_callable(RING._value, RING._grad, RING._lap, dim=2)
    g = Grid([(-8, 8)] * 2, 24)
    rho0 = densities.Gaussian(np.zeros(2), 4 * np.eye(2))
    times = [0.0, 0.5, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a = Continuity(RING, g, method="lagrangian").solve(rho0, times)
        b = Continuity(U, g, method="lagrangian").solve(rho0, times)
    np.testing.assert_allclose(b.densities, a.densities, rtol=0, atol=5e-8 * a.densities.max())
    fa = forward_lagrangian(RING, rho0, times)
    fb = forward_lagrangian(U, rho0, times, log_partition=0.0)
    np.testing.assert_allclose(fb.kl, fa.kl, rtol=0, atol=1e-9)
