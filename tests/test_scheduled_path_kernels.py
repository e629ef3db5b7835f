"""The compiled kernels of a scheduled path against closed forms, in every interval of the
schedule (the first one included)."""
import numpy as np

from fokkerplanck import energies as E
from fokkerplanck.energies.paths import LinearHomotopy, ScheduledPath


def test_scheduled_quadratic_homotopy_kernels_in_every_knot_interval():
    """U(x, t) = (1 - s) U0 + s U1 for two quadratics, s(t) piecewise linear through four
    knots: value, gradient and Laplacian of the compiled kernels equal the closed forms at
    s(t) = np.interp(t, knots, values), at a time inside each of the three intervals and at
    the ends."""
    A0, A1 = np.array([[1.0, 0.0], [0.0, 0.5]]), np.array([[3.0, 0.8], [0.8, 2.0]])
    M0, M1 = np.array([0.5, 0.0]), np.array([1.5, -1.0])
    knots, values = np.array([0.0, 0.3, 0.6, 1.0]), np.array([0.0, 0.05, 0.3, 1.0])
    S = ScheduledPath(LinearHomotopy(E.Quadratic(A0, mean=M0), E.Quadratic(A1, mean=M1)), knots, values)
    X = np.random.default_rng(3).normal(size=(20, 2)) * 2
    for t in (0.0, 0.1, 0.45, 0.8, 1.0):
        s = float(np.interp(t, knots, values))
        k = S.eval_path_kernels(X, t)
        val = 0.5 * (1 - s) * np.einsum("ni,ij,nj->n", X - M0, A0, X - M0) \
            + 0.5 * s * np.einsum("ni,ij,nj->n", X - M1, A1, X - M1)
        np.testing.assert_allclose(k["value"], val, rtol=1e-13, err_msg=f"t = {t}")
        np.testing.assert_allclose(k["grad"], (1 - s) * (X - M0) @ A0 + s * (X - M1) @ A1, rtol=1e-13, atol=1e-13,
                                   err_msg=f"t = {t}")
        np.testing.assert_allclose(k["lap"], (1 - s) * np.trace(A0) + s * np.trace(A1), rtol=1e-13,
                                   err_msg=f"t = {t}")
