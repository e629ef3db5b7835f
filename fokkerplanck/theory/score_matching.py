"""Closed-form score matching for energies linear in their parameters, and the training
Lyapunov quantities measured on a grid.

``U_theta(x) = theta . phi(x)`` for a basis ``phi`` (:class:`RBFBasis`,
:class:`PolynomialBasis`).  With the model score ``-grad U_theta`` (T = 1):

* implicit score matching (Hyvarinen 2005): ``J(theta) = E[|grad U_theta|^2 / 2 - lap U_theta]``
  is the quadratic ``theta' A theta / 2 - theta' b`` with ``A = E[sum_a d_a phi d_a phi']``,
  ``b = E[lap phi]``; its minimiser solves ``A theta = b`` (:func:`fit_ism`, expectations
  over samples, or over a grid density with :func:`fit_ism_grid`: the population optimum);
* denoising score matching (Vincent 2011) at noise ``sigma``:
  ``E_{x, eps}|grad U_theta(x + sigma eps) - eps / sigma|^2`` gives ``A' theta = b'`` with
  ``A' = E[sum_a d_a phi(x~) d_a phi(x~)']`` and ``b' = E[sum_a d_a phi(x~) eps_a / sigma]``
  (:func:`fit_dsm`); its population optimum is the implicit one of the smoothed law
  ``rho * N(0, sigma^2 I)``.

:func:`training_report` gives, from a grid, the training Lyapunov function
``V(theta) = KL(rho_theta || rho*)`` (``rho_theta ~ exp(-U_theta)`` on the grid) and the
Fisher divergence ``E_rho*|grad U_theta - grad U*|^2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np
from scipy.special import logsumexp

from fokkerplanck._core.validate import finite_array, point_set, points, positive_float, positive_int
from fokkerplanck.energies.callables import from_callable

__all__ = ["RBFBasis", "PolynomialBasis", "linear_energy", "fit_ism", "fit_ism_grid", "fit_dsm",
           "training_report", "TrainingReport", "MAX_COND"]

MAX_COND = 1e13  # beyond it the solve of A theta = b keeps < 3 digits: refused


class RBFBasis:
    """``phi_k(x) = exp(-|x - c_k|^2 / (2 w^2))`` for centres ``c_k`` (K, d)."""

    def __init__(self, centres, width: float):
        C = point_set(centres, "centres", "K")
        self.centres, self.width = C, positive_float(width, "width")
        self.dim, self.size = C.shape[1], C.shape[0]

    def __call__(self, X):
        """``(phi (N, K), grad phi (N, K, d), lap phi (N, K))``."""
        D = X[:, None, :] - self.centres[None]
        w2 = self.width ** 2
        r2 = np.sum(D * D, axis=2)
        phi = np.exp(-r2 / (2 * w2))
        return phi, -phi[:, :, None] * D / w2, phi * (r2 / w2 ** 2 - self.dim / w2)

    def __repr__(self):
        return f"RBFBasis(K={self.size}, w={self.width:g})"


class PolynomialBasis:
    """All monomials of degree 1..``degree`` in ``dim`` variables (no constant: it has no score)."""

    def __init__(self, dim: int, degree: int):
        self.dim, self.degree = positive_int(dim, "dim"), positive_int(degree, "degree", maximum=8)
        self.terms = [t for k in range(1, self.degree + 1) for t in combinations_with_replacement(range(self.dim), k)]
        self.powers = np.array([[t.count(a) for a in range(self.dim)] for t in self.terms])
        self.size = len(self.terms)

    def __call__(self, X):
        n, d = X.shape
        P = self.powers
        phi = np.prod(X[:, None, :] ** P[None], axis=2)
        G = np.zeros((n, self.size, d))
        L = np.zeros((n, self.size))
        for a in range(d):
            Pa = P.copy()
            Pa[:, a] = np.maximum(P[:, a] - 1, 0)
            G[:, :, a] = P[None, :, a] * np.prod(X[:, None, :] ** Pa[None], axis=2)
            Pb = P.copy()
            Pb[:, a] = np.maximum(P[:, a] - 2, 0)
            L += (P[None, :, a] * (P[None, :, a] - 1)) * np.prod(X[:, None, :] ** Pb[None], axis=2)
        return phi, G, L

    def __repr__(self):
        return f"PolynomialBasis(d={self.dim}, degree={self.degree}, K={self.size})"


def linear_energy(basis, theta, name: str | None = None):
    """``U_theta = theta . phi`` as an energy (a :class:`~fokkerplanck.energies.callables.CallableEnergy`
    with exact gradient and Laplacian)."""
    th = finite_array(theta, "theta", shape=(basis.size,))
    return from_callable(lambda X: basis(X)[0] @ th, lambda X: np.einsum("nkd,k->nd", basis(X)[1], th),
                         lambda X: basis(X)[2] @ th, dim=basis.dim, name=name or f"linear({basis!r})")


def _solve(A, b, ridge):
    A = A + ridge * np.eye(A.shape[0]) if ridge else A
    cond = np.linalg.cond(A)
    if not cond < MAX_COND:
        raise ValueError(f"the score-matching matrix is singular (condition number {cond:.3g}): the basis is "
                         "degenerate on the data (pass ridge > 0)")
    return np.linalg.solve(A, b)


def _samples(X, dim: int) -> np.ndarray:
    """The samples of a fit: points (N, dim) with N >= 1 (no data, no fit)."""
    X, _ = points(X, dim, "X")
    if X.shape[0] < 1:
        raise ValueError(f"X holds no samples (shape {X.shape}): score matching needs data")
    return X


def fit_ism(basis, X, *, ridge: float = 0.0, weights=None) -> np.ndarray:
    """Implicit score matching on samples ``X`` (N, d) (or weighted points): ``A theta = b``."""
    X = _samples(X, basis.dim)
    if weights is not None:
        weights = finite_array(weights, "weights", shape=(X.shape[0],))
        if np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
    _, G, L = basis(X)
    w = np.full(X.shape[0], 1.0 / X.shape[0]) if weights is None else weights
    A = np.einsum("n,nkd,nld->kl", w, G, G)
    b = w @ L
    return _solve(A, b, ridge)


def fit_ism_grid(basis, grid, rho, *, ridge: float = 0.0) -> np.ndarray:
    """The population optimum: :func:`fit_ism` with the expectations of the grid density ``rho``."""
    rho = grid.check_density(rho, "rho", normalise="silent")
    return fit_ism(basis, grid.points, ridge=ridge, weights=rho.ravel() * grid.cell_volume)


def fit_dsm(basis, X, sigma: float, *, n_noise: int = 1, seed=None, ridge: float = 0.0) -> np.ndarray:
    """Denoising score matching at noise ``sigma``, ``n_noise`` draws per sample."""
    X = _samples(X, basis.dim)
    sigma = positive_float(sigma, "sigma")
    rng = np.random.default_rng(seed)
    A = np.zeros((basis.size, basis.size))
    b = np.zeros(basis.size)
    for _ in range(positive_int(n_noise, "n_noise")):
        eps = rng.standard_normal(X.shape)
        _, G, _ = basis(X + sigma * eps)
        A += np.einsum("nkd,nld->kl", G, G)
        b += np.einsum("nkd,nd->k", G, eps) / sigma
    m = X.shape[0] * n_noise
    return _solve(A / m, b / m, ridge)


@dataclass(frozen=True)
class TrainingReport:
    kl: float                 # V(theta) = KL(rho_theta || rho*) on the grid
    fisher: float             # E_rho*|grad U_theta - grad U*|^2 / T^2
    ism_objective: float      # E_rho*[|grad U_theta|^2 / 2 - lap U_theta] (T = 1 units)


def training_report(U_theta, U_star, grid, temperature: float = 1.0) -> TrainingReport:
    """``V(theta)``, the Fisher divergence and the implicit score-matching objective of a model
    energy against the target ``U_star``, by grid quadrature (``rho_theta`` normalised on the grid)."""
    T = positive_float(temperature, "temperature")
    X = grid.points
    ut, us = grid.evaluate(U_theta).ravel() / T, grid.evaluate(U_star).ravel() / T
    lt, ls = -ut - logsumexp(-ut), -us - logsumexp(-us)  # log cell masses
    pt, ps = np.exp(lt), np.exp(ls)
    kl = float(np.sum(pt * (lt - ls)))
    gt, gs = U_theta.grad(X), U_star.grad(X)
    fisher = float(np.sum(ps * np.sum((gt - gs) ** 2, axis=1)) / T ** 2)
    ism = float(np.sum(ps * (0.5 * np.sum(gt ** 2, axis=1) - U_theta.laplacian(X))))
    if not math.isfinite(kl):
        raise ValueError("KL(rho_theta || rho*) is not finite on this grid")
    return TrainingReport(kl, fisher, ism)
