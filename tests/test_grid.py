"""Grid geometry, quadrature, densities, sampling, interpolation, bad input."""
import math

import numpy as np
import pytest
from scipy import stats

from fokkerplanck import Grid, densities, energies as E


def test_geometry():
    g = Grid([(-1, 3), (0, 1)], (8, 4))
    assert g.ndim == 2 and g.shape == (8, 4) and g.size == 32
    assert g.spacing == (0.5, 0.25) and g.cell_volume == 0.125
    np.testing.assert_allclose(g.axes[0], -1 + 0.5 * (np.arange(8) + 0.5))
    np.testing.assert_allclose(g.faces[1], np.linspace(0, 1, 5))
    assert g.points.shape == (32, 2)
    np.testing.assert_array_equal(g.points[1], [g.axes[0][0], g.axes[1][1]])  # C order
    assert Grid.from_spec(g.to_spec()) == g
    assert Grid((0, 1), 5).ndim == 1


@pytest.mark.parametrize("n", [32, 64, 128])
def test_midpoint_quadrature_second_order(n):
    # int_{[0,1]^2} sin(pi x) sin(pi y) = 4/pi^2; midpoint error ~ (pi h)^2/24 * 2 relative
    g = Grid([(0, 1), (0, 1)], n)
    val = g.integrate(g.evaluate(lambda X: np.sin(np.pi * X[:, 0]) * np.sin(np.pi * X[:, 1])))
    exact = 4 / np.pi**2
    h = 1 / n
    # the midpoint sum itself in closed form: h sum_i sin(pi (i + 1/2) h) = h / sin(pi h / 2)
    assert val == pytest.approx((h / np.sin(np.pi * h / 2)) ** 2, rel=1e-13)
    # its error: the leading term to O(h^4) (measured 4.8e-4 relative at n = 32; was rel 0.01)
    assert abs(val / exact - 1) == pytest.approx(2 * (np.pi * h) ** 2 / 24, rel=1e-3)


def test_gaussian_density_and_grid():
    G = densities.Gaussian([0.5, -1.0], [[2.0, 0.5], [0.5, 1.0]])
    x = np.array([[0.1, 0.2], [1.0, -2.0]])
    ref = stats.multivariate_normal([0.5, -1.0], [[2.0, 0.5], [0.5, 1.0]]).logpdf(x)
    np.testing.assert_allclose(G.logpdf(x), ref, rtol=1e-13)
    g = Grid([(-9, 10), (-8, 6)], (190, 140))
    rho = G.on_grid(g)
    assert g.integrate(rho) == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(rho.ravel(), np.exp(G.logpdf(g.points)), rtol=1e-9)
    assert densities.from_spec(G.to_spec()).logpdf(x[0]) == pytest.approx(ref[0])


def test_sampling_from_grid_density_is_exact():
    g = Grid([(-6, 6)], 240)
    rho = densities.Gaussian([1.0], 1.5).on_grid(g)
    s = g.sample(rho, 200_000, seed=1)
    # the piecewise-constant law has the same mean and variance + h^2/12 (to O(h^2))
    mean = g.integrate(rho * g.axes[0])
    var = g.integrate(rho * (g.axes[0] - mean) ** 2) + g.spacing[0] ** 2 / 12
    se = math.sqrt(var / s.shape[0])
    assert abs(s.mean() - mean) < 4 * se
    assert abs(s.var() - var) < 4 * var * math.sqrt(2 / s.shape[0])
    # KS test against the piecewise-linear CDF of the grid law
    cdf_knots = np.concatenate([[0], np.cumsum(rho) * g.spacing[0]])
    cdf = lambda x: np.interp(x, g.faces[0], cdf_knots)
    assert stats.kstest(s[:, 0], cdf).pvalue > 1e-3
    assert np.array_equal(g.sample(rho, 10, seed=3), g.sample(rho, 10, seed=3))


def test_interpolation():
    g = Grid([(0, 2), (0, 1)], (20, 10))
    f = g.evaluate(lambda X: 3 * X[:, 0] - 2 * X[:, 1] + 1)  # linear: reproduced exactly inside
    pts = np.array([[0.33, 0.41], [1.2, 0.77]])
    np.testing.assert_allclose(g.interpolate(f, pts), 3 * pts[:, 0] - 2 * pts[:, 1] + 1, rtol=1e-13)
    assert g.interpolate(f, np.array([[3.0, 0.5]]))[0] == 0.0
    gd = densities.GridDensity(g, np.ones(g.shape) / 2.0)
    assert gd.pdf(np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_gibbs_and_wall_mass():
    g = Grid([(-3, 3)], 60)
    U = E.Quadratic([[1.0]])
    rho = g.gibbs(U)
    assert g.integrate(rho) == pytest.approx(1.0, abs=1e-14)
    # the mass of the two cells at each wall: the discrete sum exactly, the continuum to O(h^2)
    # (measured -3.1e-3, -8.0e-4 at h = 0.1, 0.05; was rel 0.05)
    w = np.exp(-0.5 * g.axes[0] ** 2)
    assert g.mass_near_wall(rho, 2) == pytest.approx((w[:2].sum() + w[-2:].sum()) / w.sum(), rel=1e-13)
    tail = 2 * (stats.norm.cdf(3) - stats.norm.cdf(3 - 2 * g.spacing[0])) / (1 - 2 * stats.norm.sf(3))
    assert g.mass_near_wall(rho, 2) == pytest.approx(tail, rel=5e-3)
    assert Grid([(-3, 3)], 60, periodic=True).mass_near_wall(rho, 2) == 0.0


@pytest.mark.parametrize("make, match", [
    (lambda: Grid([(1, 0)], 4), "lo < hi"),
    (lambda: Grid([(0, 1)], 1), "cells"),
    (lambda: Grid([(0, 1)], 2.5), "cells"),
    (lambda: Grid([(0, 1)] * 4, 4), "1 to 3"),
    (lambda: Grid([(0, np.nan)], 4), "NaN"),
    (lambda: Grid([(0, 1)], 4).check_density([1, 1, -1, 1]), "negative"),
    (lambda: Grid([(0, 1)], 4).check_density([1, 1, 1]), "shape"),
    (lambda: Grid([(0, 1)], 4).check_density([1, np.nan, 1, 1]), "NaN"),
    (lambda: Grid([(0, 1)], 4).check_density([2, 2, 2, 2], normalise="raise"), "not normalised"),
    (lambda: Grid([(0, 1)], 4).check_density([0, 0, 0, 0]), "zero mass"),
    (lambda: densities.Gaussian([0, 0], [[1, 0], [0, -1]]), "positive definite"),
    (lambda: densities.Gaussian([0, 0], [1, 1, 1]), "shape"),
    (lambda: densities.Gaussian([0, 0]).on_grid(Grid([(0, 1)], 4)), "dimension"),
])
def test_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unnormalised_density_warns_and_normalises():
    g = Grid([(0, 1)], 4)
    with pytest.warns(RuntimeWarning, match="mass 2"):
        rho = g.check_density([2, 2, 2, 2])
    assert g.integrate(rho) == pytest.approx(1.0)
