"""Grid truth for thermodynamic integration (:mod:`particles.thermo`): the exact integrand
``E_{rho_s}[(U1 - U0) / T]`` along ``U_s = (1 - s) U0 + s U1`` and its quadrature."""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from fokkerplanck._core.validate import finite_array, positive_float
from particles.thermo import gauss_legendre_01

__all__ = ["ti_integrand", "ti_log_z"]


def ti_integrand(U1, U0, grid, s, temperature: float = 1.0) -> np.ndarray:
    """``E_{rho_s}[(U1 - U0) / T]`` at each ``s`` (array), ``rho_s ~ exp(-U_s/T)`` on the grid's cells."""
    T = positive_float(temperature, "temperature")
    s = finite_array(np.atleast_1d(s), "s", ndim=1)
    if np.any((s < 0) | (s > 1)):
        i = int(np.argmax((s < 0) | (s > 1)))
        raise ValueError(f"s must lie in [0, 1] (U_s = (1 - s) U0 + s U1 interpolates between them), "
                         f"got s[{i}] = {s[i]:g}")
    u0, u1 = grid.evaluate(U0).ravel() / T, grid.evaluate(U1).ravel() / T
    out = []
    for si in s:
        L = -((1.0 - si) * u0 + si * u1)
        w = np.exp(L - logsumexp(L))
        out.append(float(np.sum(w * (u1 - u0))))
    return np.array(out)


def ti_log_z(U1, U0, grid, nodes: int, temperature: float = 1.0) -> float:
    """``log Z_0 - sum_i w_i E_{s_i}[(U1 - U0)/T]`` with the grid's ``log Z_0`` and the
    ``nodes``-point Gauss-Legendre rule: the same quadrature as the particles, exact
    expectations, so ``ti_log_z - grid.log_partition(U1)`` is the quadrature error alone."""

    s, w = gauss_legendre_01(nodes)
    return grid.log_partition(U0, temperature) - float(np.sum(w * ti_integrand(U1, U0, grid, s, temperature)))
