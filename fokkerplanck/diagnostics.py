"""Diagnostics of densities against the Gibbs law ``rho* ~ exp(-U/T)``.

Grid versions take a grid density or a stack of them ``(n, *grid.shape)``;
closed forms cover Gaussians and the quadratic energy (OU process).
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange
from scipy.linalg import expm

from fokkerplanck._core.jit import pjit
from fokkerplanck.densities import Gaussian

__all__ = [
    "kl_grid", "tv_grid", "expect_grid", "ratio_terms_grid",
    "gaussian_kl", "gaussian_fisher", "gaussian_ratio", "ou_moments", "ou_density",
]


def _stack(grid, rho):
    R = np.asarray(rho, dtype=float)
    single = R.ndim == grid.ndim
    return R.reshape(-1, grid.size), single


def kl_grid(grid, rho, log_pi):
    """``sum vol rho (log rho - log pi)`` with ``0 log 0 = 0``; ``log_pi`` is the log of
    the normalised discrete Gibbs law (logs, so that tails where ``pi`` underflows count).
    A density holding NaN gives NaN (never a number); negative round-off counts as 0."""
    R, single = _stack(grid, rho)
    lp = np.ascontiguousarray(log_pi, dtype=float).ravel()
    if lp.size != R.shape[1]:
        raise ValueError(f"log_pi has {lp.size} values for densities of {R.shape[1]} cells")
    out = np.empty(R.shape[0])
    _kl_rows(np.ascontiguousarray(R), lp, out)
    out *= grid.cell_volume
    return out[0] if single else out


@pjit(cache=True)
def _kl_rows(R, lp, out):
    # one row per density, rows in parallel (no reduction across threads: the same bits
    # for any thread count); each row summed in blocks of 256 terms, then the block sums
    # (round-off ~ (256 + n / 256) eps, near numpy's pairwise sum); NaN anywhere gives NaN
    m, n = R.shape
    for j in prange(m):
        total = 0.0
        nan = False
        for s in range(0, n, 256):
            part = 0.0
            for i in range(s, min(s + 256, n)):
                r = R[j, i]
                if r > 0.0:
                    part += r * (math.log(r) - lp[i])
                elif math.isnan(r):
                    nan = True
            total += part
        out[j] = math.nan if nan else total


def tv_grid(grid, rho, pi):
    R, single = _stack(grid, rho)
    out = 0.5 * np.abs(R - np.asarray(pi).ravel()).sum(axis=1) * grid.cell_volume
    return out[0] if single else out


def expect_grid(grid, rho, f_values):
    """``E_rho[f] = sum vol rho f``; ``f_values`` of shape (size,) gives (n,) (or a
    float for one density), of shape (size, k) gives (n, k)."""
    R, single = _stack(grid, rho)
    F = np.asarray(f_values, dtype=float)
    out = (R @ F) * grid.cell_volume
    return out[0] if single else out


def ratio_terms_grid(grid, rho, energy):
    """``(E[lap U], E[|grad U|^2])`` with the exact derivatives at the cell centres."""
    X = grid.points
    lap = energy.laplacian(X)
    g2 = np.sum(energy.grad(X) ** 2, axis=1)
    return expect_grid(grid, rho, lap), expect_grid(grid, rho, g2)


# ---------------------------------------------------------------------------
# Gaussian closed forms
def gaussian_kl(m1, S1, m2, S2) -> float:
    """``KL(N(m1, S1) || N(m2, S2))``."""
    m1, m2 = np.atleast_1d(m1).astype(float), np.atleast_1d(m2).astype(float)
    S1, S2 = np.atleast_2d(S1).astype(float), np.atleast_2d(S2).astype(float)
    d = m1.size
    P2 = np.linalg.inv(S2)
    dm = m2 - m1
    return 0.5 * (np.trace(P2 @ S1) + dm @ P2 @ dm - d + np.linalg.slogdet(S2)[1] - np.linalg.slogdet(S1)[1])


def gaussian_fisher(m, S, A, mean_U, T) -> float:
    """Relative Fisher information ``I(N(m, S) || N(mean_U, T A^{-1}))``."""
    m, mu = np.atleast_1d(m).astype(float), np.atleast_1d(mean_U).astype(float)
    S, A = np.atleast_2d(S), np.atleast_2d(A)
    P = A / T - np.linalg.inv(S)
    b = A @ (m - mu) / T
    return float(np.trace(P @ S @ P.T) + b @ b)


def gaussian_ratio(m, S, A, mean_U, T):
    """``(E[lap U], E[|grad U|^2], R)`` for ``U = (x-mean_U)^T A (x-mean_U)/2`` under ``N(m, S)``."""
    m, mu = np.atleast_1d(m).astype(float), np.atleast_1d(mean_U).astype(float)
    A, S = np.atleast_2d(A), np.atleast_2d(S)
    elap = float(np.trace(A))
    eg2 = float(np.trace(A @ S @ A) + np.sum((A @ (m - mu)) ** 2))
    return elap, eg2, T * elap / eg2


def ou_moments(A, mean_U, m0, S0, T, t, *, flow: str = "fokker-planck"):
    """Mean and covariance at time ``t`` of the Fokker-Planck (``flow='fokker-planck'``)
    or the deterministic continuity flow (``'continuity'``) of ``U = (x-mu)^T A (x-mu)/2``
    from ``N(m0, S0)``."""
    A = np.atleast_2d(np.asarray(A, dtype=float))
    mu = np.atleast_1d(np.asarray(mean_U, dtype=float))
    E = expm(-A * t)
    m = mu + E @ (np.atleast_1d(m0) - mu)
    S = E @ np.atleast_2d(S0) @ E.T
    if flow == "fokker-planck":
        S = S + T * np.linalg.solve(A, np.eye(A.shape[0]) - E @ E)
    elif flow != "continuity":
        raise ValueError(f"flow must be 'fokker-planck' or 'continuity', got {flow!r}")
    return m, 0.5 * (S + S.T)


def ou_density(grid, m, S) -> np.ndarray:
    """The Gaussian density ``N(m, S)`` at the cell centres (not renormalised)."""

    return np.exp(Gaussian(m, S).logpdf(grid.points)).reshape(grid.shape)
