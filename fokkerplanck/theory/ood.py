"""Out-of-distribution scores of an energy, and their AUROC with DeLong standard errors.

Scores (higher = more out of distribution), for points ``x`` (N, d):

* ``S1 = U(x)``;
* ``S2 = |grad U(x)|``;
* ``S3 = |x - Phi_dt^(tau)(x)|``: how far ``tau`` Euler steps of the deterministic flow
  ``x <- x - dt grad U(x)`` carry the point (in distribution, points sit near
  minima and move little; far away, the flow moves them a lot).

:func:`auroc` is the Mann-Whitney estimate ``P(S_out > S_in) + P(S_out = S_in) / 2``;
its standard error is DeLong's (placement values; DeLong, DeLong & Clarke-Pearson 1988).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from fokkerplanck._core.validate import finite_array, points, positive_float, positive_int

__all__ = ["SCORES", "scores", "auroc", "AUROC", "flow_displacement"]


def flow_displacement(energy, x, dt: float, tau: int) -> np.ndarray:
    """``|x - Phi(x)|`` after ``tau`` Euler steps of ``dx/dt = -grad U`` (vectorised)."""
    X, _ = points(x, energy.dim)
    dt = positive_float(dt, "dt")
    tau = positive_int(tau, "tau")
    Y = X.copy()
    for _ in range(tau):
        Y = Y - dt * energy.grad(Y)
    return np.linalg.norm(Y - X, axis=1)


SCORES = {
    "S1": lambda U, X, dt, tau: U.value(X),
    "S2": lambda U, X, dt, tau: np.linalg.norm(U.grad(X), axis=1),
    "S3": flow_displacement,
}


def scores(energy, x, *, dt: float = 0.01, tau: int = 10, which=("S1", "S2", "S3")) -> dict:
    """The named scores at points ``x``: ``{name: (N,) array}``."""
    X, _ = points(x, energy.dim)
    out = {}
    for name in which:
        if name not in SCORES:
            raise ValueError(f"unknown score {name!r}; known: {sorted(SCORES)}")
        out[name] = np.asarray(SCORES[name](energy, X, dt, tau), dtype=float)
    return out


@dataclass(frozen=True)
class AUROC:
    value: float
    se: float

    def __repr__(self):
        return f"AUROC({self.value:.4f} +- {self.se:.4f})"


def auroc(score_in, score_out) -> AUROC:
    """AUROC of separating ``score_out`` (positives) from ``score_in`` by thresholds, with
    DeLong's standard error.  Ties count a half."""
    a = finite_array(score_in, "score_in", ndim=1)
    b = finite_array(score_out, "score_out", ndim=1)
    m, n = a.size, b.size
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 scores on each side, got {m} and {n}")
    r_all = rankdata(np.concatenate([a, b]))
    r_a, r_b = rankdata(a), rankdata(b)
    # placement values: V10[j] = P(S_in < b_j) (+ ties / 2), V01[i] = P(S_out > a_i) (+ ties / 2)
    v10 = (r_all[m:] - r_b) / m
    v01 = 1.0 - (r_all[:m] - r_a) / n
    auc = float(v10.mean())
    var = v10.var(ddof=1) / n + v01.var(ddof=1) / m
    return AUROC(auc, math.sqrt(max(var, 0.0)))
