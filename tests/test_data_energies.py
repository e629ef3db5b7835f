"""KDE energies: the cut-off against the full mixture (its stated error bound), the heat flow
from the data against its closed form, particles against the exact law."""
import numpy as np
import pytest

import particles
from fokkerplanck import FokkerPlanck, Grid, energies as E

RING = E.GaussianMixture.ring(8, 4.0, 0.5)


@pytest.mark.parametrize("d, n, h", [(1, 3000, 0.2), (2, 4000, 0.15), (3, 2000, 0.4), (4, 500, 0.8)])
def test_kde_cutoff_meets_its_bound(d, n, h, rng):
    """Against the same mixture summed over every point: density relative error <= tol,
    ``h grad U`` and ``h^2 lap U`` too (tol = 1e-9 here so that the cut-off, not round-off,
    is what is measured), at points near the data, between clusters and far away."""
    data = rng.normal(size=(n, d)) * np.where(rng.random((n, 1)) < 0.5, 0.5, 2.0) + 3.0 * (rng.random((n, 1)) < 0.3)
    tol = 1e-9
    K, GM = E.KDE(data, h, tol=tol), E.GaussianMixture(data, h)
    X = np.concatenate([rng.normal(size=(300, d)) * 3, data[:50] + 0.01, np.full((2, d), 40.0)])
    assert np.abs(K.value(X) - GM.value(X)).max() <= 1.01 * tol + 1e-12 * np.abs(GM.value(X)).max()
    scale = np.abs(GM.grad(X)).max() * 1e-12
    assert np.abs(K.grad(X) - GM.grad(X)).max() * h <= tol * (1 + np.linalg.norm(GM.grad(X), axis=1).max() * h) + scale
    assert np.abs(K.laplacian(X) - GM.laplacian(X)).max() * h * h <= 2 * tol * (d + np.abs(GM.laplacian(X)).max() * h * h)
    np.testing.assert_allclose(K.hessian(X[:20]), GM.hessian(X[:20]), rtol=1e-6, atol=1e-6 / h ** 2)
    assert K.log_partition() == 0.0


def test_kde_spec_and_bad_input():
    data = RING.sample(100, seed=0)
    K = E.KDE(data, 0.3)
    K2 = E.from_spec(K.to_spec())
    x = np.array([[0.5, 1.0]])
    assert K2.value(x) == K.value(x)
    for bad, match in (([[np.nan, 0.0]], "NaN"), (np.zeros((0, 2)), "N >= 1")):
        with pytest.raises(ValueError, match=match):
            E.KDE(bad, 0.3)
    with pytest.raises(ValueError, match="bandwidth"):
        E.KDE(data, -1.0)
    with pytest.raises(ValueError, match="non-negative"):
        K.smoothed(-1.0)


@pytest.mark.slow  # compiles kernels cold (20-45 s in a clean clone): CI's second step
def test_heat_flow_from_the_data_is_the_wider_kde():
    """``d_t rho = T lap rho`` (U = 0) from ``rho_data * K_h`` is ``rho_data * K_h'``, h'^2 = h^2 + 2Tt:
    the grid solver with a zero energy (a callable) converges to it at second order."""
    data = np.random.default_rng(2).normal(size=(40, 2)) * 0.8
    K = E.KDE(data, 0.3)
    zero = E.from_callable(lambda X: np.zeros(X.shape[0]), lambda X: np.zeros_like(X), dim=2, name="zero")
    T, t = 0.5, 0.4
    errs = []
    for cells in (40, 80):
        g = Grid([(-6, 6)] * 2, cells)
        rho0 = g.density_from_logpdf(lambda X: -K.value(X))
        tr = FokkerPlanck(zero, g, T).solve(rho0, [0.0, t])
        exact = g.density_from_logpdf(lambda X: -K.smoothed(t, T).value(X))
        errs.append(g.integrate(np.abs(tr.densities[-1] - exact)))
    assert errs[1] < 2e-3 and 3.5 < errs[0] / errs[1] < 4.5  # measured 6.9e-3, 1.7e-3 (ratio 4.09)


@pytest.mark.slow  # compiles kernels cold (20-45 s in a clean clone): CI's second step
def test_langevin_on_a_kde_samples_it(rng):
    """Particles with the compiled KDE kernels (block adapter) against exact KDE samples:
    first and second moments within 4 standard errors after mixing."""
    data = RING.sample(500, seed=3)
    K = E.KDE(data, 0.3)
    ens = particles.langevin(K, K.sample(3000, seed=4), 0.01, 200, method="mala", seed=8)
    X, Y = ens.positions[-1], K.sample(200000, seed=5)
    for f in (lambda Z: Z[:, 0], lambda Z: Z[:, 1] ** 2, lambda Z: Z[:, 0] * Z[:, 1]):
        a, b = f(X), f(Y)
        assert abs(a.mean() - b.mean()) < 4 * np.sqrt(a.var() / a.size + b.var() / b.size)
