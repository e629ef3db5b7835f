"""Log-Sobolev constants away from T = 1: the Holley-Stroock factor against its closed form
and against the Poincare constant it must not exceed."""
import numpy as np
import pytest

from fokkerplanck import FokkerPlanck, Grid, energies as E
from fokkerplanck.theory.stopping import holley_stroock


def test_holley_stroock_at_low_temperature_is_below_the_spectral_gap():
    """U = x^2/2 + W, W = a exp(-x^2 / (2 s^2)) a bump of height a = 1.5 (a double well at low T).
    U0 = x^2/2 is 1-convex and osc(W) = a (the grid's middle cell sits at the bump's top, its
    end cells at a e^{-49.7}), so Holley-Stroock certifies C_LS = exp(-a / T): at T = 0.3,
    6.74e-3.  A log-Sobolev constant is at most the Poincare constant, the spectral gap of the
    generator: 0.1025 on this grid (0.1025 on twice as many cells).  The factor without 1/T,
    exp(-a) = 0.223, would exceed it."""
    a, s, T = 1.5, 0.6, 0.3

    def W(X):
        return a * np.exp(-X[:, 0] ** 2 / (2 * s * s))

    U = E.from_callable(lambda X: 0.5 * X[:, 0] ** 2 + W(X),
                        lambda X: X * (1 - a / (s * s) * np.exp(-X[:, 0] ** 2 / (2 * s * s)))[:, None], dim=1)
    g = Grid([(-6, 6)], 401)
    c = holley_stroock(1.0, W, g, temperature=T)
    assert c.certified
    assert c.value == pytest.approx(np.exp(-a / T), rel=1e-12)
    gap = FokkerPlanck(U, g, T).spectral_gap()
    assert 0.1 < gap < 0.105   # the double well's slow mode (fine-grid value 0.1025)
    assert c.value <= gap
