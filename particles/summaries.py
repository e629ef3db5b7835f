"""Mergeable per-save summaries of an ensemble, bit-identical however it is sharded.

Particles are cut into fixed blocks of :data:`BLOCK` consecutive global indices.
For each block a compiled loop computes the count of live particles, the mean
of ``v = (x, lap U, |grad U|^2, ell)`` (``ell`` the tracked KL term), the
centred second moments of ``v`` and, for the covariance's standard error, the
centred sums ``sum c_i^2 c_j`` and ``sum c_i^2 c_j^2`` of ``x``.  A block's
numbers depend only on its particles, so any sharding along block boundaries
(:func:`particles.langevin` with ``client=``) produces the same block arrays;
:func:`merge` combines them in block order (Chan et al.'s update for the
second moments, its fourth-order analogue for the covariance's error), so the
summaries are the same bits in one process or on a cluster.

The merged values equal the one-pass formulas of :mod:`particles.estimators`
(mean, covariance with ``ddof=1``, CLT and delta-method errors) up to rounding.
"""
from __future__ import annotations

import math

import numpy as np

from fokkerplanck._core.jit import jit

__all__ = ["BLOCK", "X_LIMIT", "V_LIMIT", "block_stats", "merge", "summaries"]

BLOCK = 4096
# A live particle enters the summaries only when its values keep every moment finite: the
# fourth centred moments of x (the covariance's error) and the cross moments of x with the
# other values, summed over up to ~1e12 particles, stay below the float64 maximum.  Beyond
# (a blown-up run) it is left out and counted (``Ensemble.overflowed``, with a warning).
X_LIMIT = 1e70    # |x| per coordinate
V_LIMIT = 1e100   # |lap U|, |grad U|^2 and the tracked-KL term


@jit(cache=True)
def _block_stats(V, ok, d, block):
    """V (n, q) values per particle (x first, d columns); ok (n,) live mask.
    Returns (nb, 1 + q + q*q + 2*d*d): count, mean, centred M2, A = sum c_i^2 c_j, Q = sum c_i^2 c_j^2."""
    n, q = V.shape
    nb = (n + block - 1) // block
    width = 1 + q + q * q + 2 * d * d
    out = np.zeros((nb, width))
    mean = np.empty(q)
    c = np.empty(q)
    for b in range(nb):
        lo = b * block
        hi = min(n, lo + block)
        cnt = 0
        for a in range(q):
            mean[a] = 0.0
        for i in range(lo, hi):
            if ok[i]:
                cnt += 1
                for a in range(q):
                    mean[a] += V[i, a]
        if cnt == 0:
            continue
        for a in range(q):
            mean[a] /= cnt
        o = out[b]
        o[0] = cnt
        for a in range(q):
            o[1 + a] = mean[a]
        m2 = 1 + q
        ac = m2 + q * q
        qc = ac + d * d
        for i in range(lo, hi):
            if not ok[i]:
                continue
            for a in range(q):
                c[a] = V[i, a] - mean[a]
            for a in range(q):
                for e in range(q):
                    o[m2 + a * q + e] += c[a] * c[e]
            for a in range(d):
                for e in range(d):
                    o[ac + a * d + e] += c[a] * c[a] * c[e]
                    o[qc + a * d + e] += c[a] * c[a] * c[e] * c[e]
    return out


def block_stats(X, ok, energy, T, ell=None, *, block: int = BLOCK) -> np.ndarray:
    """Block statistics of one save: ``X`` (n, d) positions, ``ok`` (n,) live mask,
    ``ell`` (n,) tracked-KL terms ``log rho_t(X) + U(X)/T + log Z`` or None."""
    X = np.ascontiguousarray(X, dtype=float)
    n, d = X.shape
    lap, g2 = energy.lap_and_grad2(X)
    cols = [X, lap[:, None], g2[:, None]]
    if ell is not None:
        cols.append(np.asarray(ell, dtype=float)[:, None])
    V = np.concatenate(cols, axis=1)
    with np.errstate(invalid="ignore"):
        fits = np.all(np.abs(V[:, :d]) <= X_LIMIT, axis=1) & np.all(np.abs(V[:, d:]) <= V_LIMIT, axis=1)
    ok = np.asarray(ok, dtype=np.bool_) & fits   # NaN and inf fail the comparisons too
    return _block_stats(V, ok, d, block)


def n_values(width: int, d: int) -> int:
    """``q``, the values per particle behind block statistics of ``width`` columns
    (``d + 2``, or ``d + 3`` with the tracked-KL term)."""
    return int(round((-1 + math.sqrt(1 + 4 * (width - 1 - 2 * d * d))) / 2))


def merge(S: np.ndarray, d: int):
    """``(n, mean, M2, S4)`` of all particles from block statistics ``S`` (nb, width):
    count, mean of v, centred second-moment matrix of v, and
    ``sum ((x_i - m_i)(x_j - m_j))^2`` (d, d).  Blocks are combined in order."""
    S = np.asarray(S, dtype=float)
    q = n_values(S.shape[1], d)
    cnt = S[:, 0]
    n = float(cnt.sum())
    if n == 0:
        return 0.0, np.full(q, np.nan), np.full((q, q), np.nan), np.full((d, d), np.nan)
    means = S[:, 1:1 + q]
    M2b = S[:, 1 + q:1 + q + q * q].reshape(-1, q, q)
    A = S[:, 1 + q + q * q:1 + q + q * q + d * d].reshape(-1, d, d)
    Q = S[:, 1 + q + q * q + d * d:].reshape(-1, d, d)
    mean = (cnt[:, None] * means).sum(axis=0) / n
    dl = means - mean                                          # (nb, q): block mean - global mean
    M2 = (M2b + cnt[:, None, None] * dl[:, :, None] * dl[:, None, :]).sum(axis=0)
    dx = dl[:, :d]
    C2 = M2b[:, :d, :d]
    diag = np.diagonal(C2, axis1=1, axis2=2)                   # (nb, d): sum c_i^2
    S4 = (Q + 2 * dx[:, None, :] * A + 2 * dx[:, :, None] * np.swapaxes(A, 1, 2)
          + dx[:, None, :] ** 2 * diag[:, :, None] + dx[:, :, None] ** 2 * diag[:, None, :]
          + 4 * dx[:, :, None] * dx[:, None, :] * C2
          + cnt[:, None, None] * dx[:, :, None] ** 2 * dx[:, None, :] ** 2).sum(axis=0)
    return n, mean, M2, S4


def summaries(S: np.ndarray, d: int, T: float) -> dict:
    """The per-save summary dict of :class:`particles.Ensemble` from block statistics
    (with ``kl, kl_se`` when they carry the tracked-KL term)."""
    has_kl = n_values(np.shape(S)[1], d) == d + 3
    nan = float("nan")
    n = float(np.sum(np.asarray(S)[:, 0])) if np.size(S) else 0.0
    if n >= 2:
        n, mean, M2, S4 = merge(S, d)
    if n < 2:  # fewer than two live particles: no estimate (NaN, never a number)
        out = {"mean": np.full(d, nan), "mean_se": np.full(d, nan), "cov": np.full((d, d), nan),
               "cov_se": np.full((d, d), nan)}
        out.update({k: nan for k in ("e_lap", "e_lap_se", "e_grad2", "e_grad2_se", "ratio", "ratio_se")})
        if has_kl:
            out["kl"] = out["kl_se"] = nan
        return out
    var = np.diag(M2) / (n - 1)
    C = M2[:d, :d] / (n - 1)
    var_p = np.maximum(S4 - M2[:d, :d] ** 2 / n, 0.0) / (n - 1)   # variance of (x_i - m_i)(x_j - m_j)
    out = {"mean": mean[:d].copy(), "mean_se": np.sqrt(var[:d] / n), "cov": C, "cov_se": np.sqrt(var_p / n)}
    ma, mb = mean[d], mean[d + 1]
    out.update(e_lap=float(ma), e_lap_se=float(math.sqrt(var[d] / n)), e_grad2=float(mb),
               e_grad2_se=float(math.sqrt(var[d + 1] / n)))
    if mb == 0:
        out["ratio"] = out["ratio_se"] = nan
    else:
        ca, cab, cb = var[d] / n, M2[d, d + 1] / (n - 1) / n, var[d + 1] / n
        r = ma / mb   # in powers of r = ma / mb: no mb**4 to overflow or underflow
        var_r = T**2 * (ca - 2 * r * cab + r * r * cb) / mb**2
        out["ratio"], out["ratio_se"] = float(T * ma / mb), float(math.sqrt(max(var_r, 0.0)))
    if has_kl:
        out["kl"], out["kl_se"] = float(mean[d + 2]), float(math.sqrt(var[d + 2] / n))
    return out
