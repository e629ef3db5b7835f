"""Density homotopies and time-dependent energies ``U(x, t)``.

:class:`VPFBHomotopy` is the density homotopy of Variational Potential Flow Bayes: a
Gaussian prior ``q = N(0, w^2 I)``, a Gaussian likelihood ``N(xbar; x, v^2 I)``, and
the conditional log-homotopy ``rho(x | xbar, t) ~ q(x) N(xbar; x, v^2 I)^t``,
``t in [0, 1]``.  Completing the square, the conditional law is Gaussian,

    rho(x | xbar, t) = N(x; mu(t) xbar, sigma(t)^2 I),
    mu(t) = t w^2 / (v^2 + t w^2),   sigma(t)^2 = w^2 v^2 / (v^2 + t w^2),

so the prior at ``t = 0`` and the posterior at ``t = 1``.  For data ``xbar_1..xbar_M``
the marginal homotopy ``rho_bar(x, t) = (1/M) sum_j N(x; mu(t) xbar_j, sigma(t)^2 I)``
is a Gaussian mixture with moving means and a shrinking common variance; its time
derivative is exact (:meth:`VPFBHomotopy.dt_density`).  For one data point the potential
``Phi`` of the homotopy-matching flow ``dx/dt = grad Phi`` is affine-quadratic in closed form
(:meth:`VPFBHomotopy.gaussian_velocity`).

:class:`LinearHomotopy` is ``U_s = (1 - s) U0 + s U1``; both are :class:`EnergyPath`:
``path.at(t)`` is the (static) energy at time ``t``, with numba kernels when the parts
have them, so particle integrators and grid solvers take it piecewise in time.
:func:`schedule` checks an annealing schedule (times in [0, 1], increasing).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from ._validate import finite_array, point_set, points, positive_float
from .energies import Energy, GaussianMixture, Sum

__all__ = ["EnergyPath", "VPFBHomotopy", "LinearHomotopy", "schedule", "check_time"]


def check_time(t, name: str = "t") -> float:
    """A homotopy time: a finite number in [0, 1]."""
    if isinstance(t, (str, bytes, bool)):
        raise ValueError(f"{name} must be a number in [0, 1], got {t!r}")
    v = float(t)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} = {t!r} is outside the homotopy's [0, 1]")
    return v


def schedule(ts, name: str = "schedule") -> np.ndarray:
    """An annealing schedule: times in [0, 1], strictly increasing (non-monotone schedules
    would run the homotopy backwards: an error naming the first offending pair)."""
    s = finite_array(ts, name, ndim=1)
    if s.size < 1:
        raise ValueError(f"{name} is empty")
    if s.min() < 0 or s.max() > 1:
        raise ValueError(f"{name} leaves [0, 1]: min {s.min():g}, max {s.max():g}")
    bad = np.flatnonzero(np.diff(s) <= 0)
    if bad.size:
        i = bad[0]
        raise ValueError(f"{name} is not increasing: entry {i + 1} ({s[i + 1]:g}) follows {s[i]:g}")
    return s


class EnergyPath:
    """A time-dependent energy ``U(x, t)``, ``t in [0, 1]``: :meth:`at` gives the energy at ``t``."""

    dim: int

    def at(self, t) -> Energy:
        raise NotImplementedError

    def value(self, x, t):
        return self.at(t).value(x)

    def grad(self, x, t):
        return self.at(t).grad(x)


class LinearHomotopy(EnergyPath):
    """``U_s = (1 - s) U0 + s U1`` (kernels shared across ``s``: only the coefficients change)."""

    def __init__(self, U0: Energy, U1: Energy):
        if U0.dim != U1.dim:
            raise ValueError(f"U0 has dimension {U0.dim} but U1 has {U1.dim}")
        self.U0, self.U1, self.dim = U0, U1, U0.dim

    def at(self, t) -> Energy:
        s = check_time(t)
        return Sum([1.0 - s, s], [self.U0, self.U1])

    def __repr__(self):
        return f"LinearHomotopy({self.U0!r} -> {self.U1!r})"


class VPFBHomotopy(EnergyPath):
    """The marginal VPFB homotopy of ``data`` (M, d) with prior std ``w`` and likelihood std
    ``v`` (module docstring)."""

    def __init__(self, data, prior_std: float = 1.0, likelihood_std: float = 0.5):
        X = point_set(data, "data", "M")
        self.data, self.dim = X, X.shape[1]
        self.w2 = positive_float(prior_std, "prior_std") ** 2
        self.v2 = positive_float(likelihood_std, "likelihood_std") ** 2

    def mu(self, t):
        t = check_time(t)
        return t * self.w2 / (self.v2 + t * self.w2)

    def sigma2(self, t):
        t = check_time(t)
        return self.w2 * self.v2 / (self.v2 + t * self.w2)

    def dmu(self, t):
        t = check_time(t)
        return self.w2 * self.v2 / (self.v2 + t * self.w2) ** 2

    def dsigma2(self, t):
        t = check_time(t)
        return -self.w2 ** 2 * self.v2 / (self.v2 + t * self.w2) ** 2

    def at(self, t) -> GaussianMixture:
        """``U_t = -log rho_bar(., t)`` (normalised: ``log Z = 0``)."""
        return GaussianMixture(self.mu(t) * self.data, math.sqrt(self.sigma2(t)))

    def _parts(self, X, t):
        m, s2 = self.mu(t), self.sigma2(t)
        D = X[:, None, :] - m * self.data[None]          # (N, M, d)
        r2 = np.sum(D * D, axis=2)
        L = -0.5 * r2 / s2 - 0.5 * self.dim * math.log(2 * math.pi * s2) - math.log(self.data.shape[0])
        return D, r2, L, m, s2

    def logpdf(self, x, t) -> np.ndarray:
        """``log rho_bar(x, t)``."""
        X, _ = points(x, self.dim)
        return logsumexp(self._parts(X, t)[2], axis=1)

    def dt_logpdf(self, x, t) -> np.ndarray:
        """``d_t log rho_bar(x, t)`` (exact): each component contributes
        ``(x - m_j) . m_j' / s^2 + (|x - m_j|^2 / s^2 - d) s'/(2 s^2) * ...`` weighted by its
        responsibility."""
        X, _ = points(x, self.dim)
        D, r2, L, m, s2 = self._parts(X, t)
        w = np.exp(L - logsumexp(L, axis=1)[:, None])
        dm, ds2 = self.dmu(t), self.dsigma2(t)
        comp = np.einsum("nmd,md->nm", D, dm * self.data) / s2 + 0.5 * ds2 * (r2 / s2 ** 2 - self.dim / s2)
        return np.sum(w * comp, axis=1)

    def dt_density(self, x, t) -> np.ndarray:
        """``d_t rho_bar(x, t)`` (exact)."""
        return np.exp(self.logpdf(x, t)) * self.dt_logpdf(x, t)

    def gaussian_velocity(self, x, t) -> np.ndarray:
        """For ONE data point: ``grad Phi(x, t) = mu' xbar + (s'/s) (x - mu xbar)``, the gradient
        field transporting ``N(mu xbar, s^2 I)`` along ``t`` (it solves
        ``div(rho_bar grad Phi) = -d_t rho_bar`` exactly); ``Phi`` is affine-quadratic."""
        if self.data.shape[0] != 1:
            raise ValueError("the closed-form potential exists for one data point (M = 1); "
                             f"this homotopy has M = {self.data.shape[0]}: use the grid Poisson solve")
        X, _ = points(x, self.dim)
        m, s2 = self.mu(t), self.sigma2(t)
        xbar = self.data[0]
        return self.dmu(t) * xbar + 0.5 * self.dsigma2(t) / s2 * (X - m * xbar)

    def gaussian_potential(self, x, t) -> np.ndarray:
        """``Phi(x, t) = mu' xbar . x + (s'/(2 s)) |x - mu xbar|^2`` (M = 1; up to a constant)."""
        self.gaussian_velocity(np.zeros((1, self.dim)), t)  # refuses M > 1
        X, _ = points(x, self.dim)
        m, s2 = self.mu(t), self.sigma2(t)
        xbar = self.data[0]
        return X @ (self.dmu(t) * xbar) + 0.25 * self.dsigma2(t) / s2 * np.sum((X - m * xbar) ** 2, axis=1)

    def gaussian_boltzmann_residual(self, t) -> float:
        """For ONE data point, the weighted relative residual of the best fit
        ``Phi = a log rho_bar + b`` (:func:`fokkerplanck.potential_flow.boltzmann_residual`) in
        closed form: ``Phi``'s linear part ``mu' xbar . (x - mu xbar)`` is orthogonal to every
        function of ``|x - mu xbar|``, so the residual is ``sqrt(V_lin / (V_lin + V_quad))``
        with ``V_lin = mu'^2 |xbar|^2 s^2`` and ``V_quad = (s^2)'^2 d / 8``: zero only for
        ``xbar = 0``.  The potential is a Boltzmann energy of the homotopy only then."""
        self.gaussian_velocity(np.zeros((1, self.dim)), t)  # refuses M > 1
        v_lin = self.dmu(t) ** 2 * float(self.data[0] @ self.data[0]) * self.sigma2(t)
        v_quad = self.dsigma2(t) ** 2 * self.dim / 8.0
        return math.sqrt(v_lin / (v_lin + v_quad))

    def sample(self, n: int, t, seed=None) -> np.ndarray:
        """``n`` exact samples of ``rho_bar(., t)``."""
        rng = np.random.default_rng(seed)
        j = rng.integers(0, self.data.shape[0], size=int(n))
        return self.mu(t) * self.data[j] + math.sqrt(self.sigma2(t)) * rng.standard_normal((int(n), self.dim))

    def __repr__(self):
        return (f"VPFBHomotopy(M={self.data.shape[0]}, d={self.dim}, w={math.sqrt(self.w2):g}, "
                f"v={math.sqrt(self.v2):g})")
