"""Closed forms shared by the check groups: rotations, Gaussian laws under OU, their KL, Fisher
information and ratio, Richardson extrapolation."""
from __future__ import annotations

import numpy as np


# Gaussian closed forms (DESIGN.md, section 1), written out here from the formulas rather than
# taken from fokkerplanck.diagnostics: a check shares no code with what it checks.
def rotation(*degrees) -> np.ndarray:
    """A rotation of R^2 by one angle, or of R^3 by three angles (about z, then y, then x)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    if len(degrees) == 1:
        return np.array([[c[0], -s[0]], [s[0], c[0]]])
    Rz = np.array([[c[0], -s[0], 0.0], [s[0], c[0], 0.0], [0.0, 0.0, 1.0]])
    Ry = np.array([[c[1], 0.0, s[1]], [0.0, 1.0, 0.0], [-s[1], 0.0, c[1]]])
    Rx = np.array([[1.0, 0.0, 0.0], [0.0, c[2], -s[2]], [0.0, s[2], c[2]]])
    return Rz @ Ry @ Rx


def rotated(eigenvalues, *degrees) -> np.ndarray:
    """``R diag(eigenvalues) R^T``: an anisotropic SPD matrix whose axes are rotated."""
    R = rotation(*degrees) if len(eigenvalues) > 1 else np.eye(1)
    return R @ np.diag(np.asarray(eigenvalues, dtype=float)) @ R.T


def gaussian_law(A, m0, S0, T, t, *, noise: bool = True):
    """Mean and covariance at time ``t`` of the law started at ``N(m0, S0)`` under the
    Fokker-Planck flow (``noise``) or the continuity flow of ``U = x^T A x / 2``:
    ``m = e^{-At} m0``, ``S = e^{-At} S0 e^{-At} (+ T A^{-1} (I - e^{-2At}))``."""
    lam, Q = np.linalg.eigh(np.atleast_2d(A))
    P = (Q * np.exp(-lam * t)) @ Q.T
    S = P @ np.atleast_2d(S0) @ P
    if noise:
        S = S + T * (Q * (-np.expm1(-2 * lam * t) / lam)) @ Q.T
    return P @ np.atleast_1d(m0), 0.5 * (S + S.T)


def gaussian_kl(m, S, A, T) -> float:
    """``KL(N(m, S) || N(0, T A^{-1}))``, the Gibbs law of ``U = x^T A x / 2``."""
    AS = np.atleast_2d(A) @ S / T
    return float(0.5 * (np.trace(AS) + m @ np.atleast_2d(A) @ m / T - m.size - np.linalg.slogdet(AS)[1]))


def gaussian_fisher(m, S, A, T) -> float:
    """``I(N(m, S) || N(0, T A^{-1})) = E|grad log rho - grad log rho*|^2 = tr(P S P) + |A m / T|^2``,
    ``P = A / T - S^{-1}``."""
    A = np.atleast_2d(A)
    P = A / T - np.linalg.inv(S)
    return float(np.trace(P @ S @ P) + np.sum((A @ m / T) ** 2))


def gaussian_ratio(m, S, A, T) -> float:
    """``R = T E[lap U] / E[|grad U|^2] = T tr(A) / (tr(A S A) + |A m|^2)`` under ``N(m, S)``."""
    A = np.atleast_2d(A)
    return float(T * np.trace(A) / (np.trace(A @ S @ A) + np.sum((A @ m) ** 2)))


def richardson(coarse, fine):
    """The second-order Richardson extrapolation from cell sizes ``h`` and ``h / 2``."""
    return (4 * np.asarray(fine) - np.asarray(coarse)) / 3


