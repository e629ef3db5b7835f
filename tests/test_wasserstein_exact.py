"""1D W2 is exact for the laws it is given (piecewise-constant densities, empirical laws), not
only convergent: closed forms on coarse grids, and an independent quadrature."""
import numpy as np
import pytest
from scipy.integrate import quad

from fokkerplanck import Grid, wasserstein as W


def test_uniform_laws_on_coarse_grids_give_the_closed_form():
    """U[0, 1] against U[1, 3]: quantiles u and 1 + 2u, W2^2 = int_0^1 (1 + u)^2 du = 7/3; U[0, 1]
    against U[0, 2]: W2^2 = 1/3.  On 6 and 4 cells the quantile difference is linear on every
    interval of length 1/6 or 1/4, where the rule (f0^2 + f0 f1 + f1^2)/3 is exact."""
    g = Grid([(0, 3)], 6)
    a = np.array([1.0, 1.0, 0, 0, 0, 0])
    b = np.array([0, 0, 0.5, 0.5, 0.5, 0.5])
    assert W.w2_grid(g, a, b) == pytest.approx(np.sqrt(7 / 3), rel=1e-14)
    g = Grid([(0, 2)], 4)
    assert W.w2_grid(g, np.array([1.0, 1.0, 0, 0]), np.full(4, 0.5)) == pytest.approx(np.sqrt(1 / 3), rel=1e-14)


def test_two_samples_against_a_uniform_grid_density_give_the_closed_form():
    """Samples {0.2, 0.7} against U[0, 1] on 4 cells: the empirical quantile is 0.2 on [0, 1/2)
    and 0.7 on [1/2, 1), so W2^2 = int_0^1/2 (u - 0.2)^2 + int_1/2^1 (u - 0.7)^2 = 0.07 / 3."""
    g = Grid([(0, 1)], 4)
    w, _ = W.w2_samples_grid([0.7, 0.2], g, np.ones(4), n_boot=2)
    assert w == pytest.approx(np.sqrt(0.07 / 3), rel=1e-14)


def test_w2_grid_of_random_cell_densities_matches_an_independent_quadrature():
    """Random piecewise-constant densities on 7 cells (one of them empty): W2^2 as the integral
    of (F_a^-1 - F_b^-1)^2 over u, the quantile functions by np.interp of the cell-edge CDFs
    and the integral by adaptive Gauss-Kronrod (scipy's quad, told where the CDFs break; the
    integrand is quadratic between breaks).  Measured: at most 1.3e-15 apart (24 pairs); window 1e-12."""
    rng = np.random.default_rng(5)
    g = Grid([(-1, 2.5)], 7)
    edges = np.linspace(-1, 2.5, 8)
    for _ in range(3):
        a, b = rng.uniform(0.1, 1.0, 7), rng.uniform(0.1, 1.0, 7)
        a[3] = 0.0
        a, b = a / (a.sum() * g.cell_volume), b / (b.sum() * g.cell_volume)
        ca = np.concatenate([[0], np.cumsum(a) * g.cell_volume])
        cb = np.concatenate([[0], np.cumsum(b) * g.cell_volume])
        ref, _ = quad(lambda u: (np.interp(u, ca, edges) - np.interp(u, cb, edges)) ** 2, 0, 1,
                      points=np.union1d(ca, cb)[1:-1], limit=200, epsabs=1e-14, epsrel=1e-13)
        assert W.w2_grid(g, a, b) == pytest.approx(np.sqrt(ref), rel=1e-12)
