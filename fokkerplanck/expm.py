"""Action of ``exp(t S)`` on a vector for a symmetric negative semi-definite ``S``.

Chebyshev expansion on the spectral interval ``[-lam_max, 0]``:
``exp(t x) = e^{-z} (I_0(z) + 2 sum_k I_k(z) T_k(y))`` with ``z = t lam_max / 2``
and ``y = 2 x / lam_max + 1 in [-1, 1]``.  The Chebyshev vectors ``T_k(Y) v``
do not depend on ``t``, so one sweep of ``K`` matrix-vector products serves
every output time at once; ``K ~ sqrt(2 z log(1/tol))``, the square root of
what a Taylor series (``expm_multiply``) needs.  The coefficients are bounded
by 1 and ``|T_k(y)| <= 1``, so the truncation error is at most the sum of the
dropped coefficients times ``||v||``, and the three-term recurrence on
``||Y|| <= 1`` does not amplify round-off.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ive

__all__ = ["gershgorin_bound", "chebyshev_expm_multiply", "n_terms"]


def gershgorin_bound(S) -> float:
    """An upper bound of the spectral radius of a sparse matrix (max absolute row sum)."""
    return float(abs(S).sum(axis=1).max())


def _coefficients(z: float, tol: float, kmax: int = 100_000) -> np.ndarray:
    """``c_0 = ive(0, z), c_k = 2 ive(k, z)`` up to the first k whose tail is below tol."""
    # tail bound: for k > z the ratio c_{k+1}/c_k < z / (k + 1 + sqrt(...)) < 1; stop
    # once c_k < tol * (1 - ratio) which bounds the geometric tail
    out = []
    k = 0
    block = 64
    while k < kmax:
        ks = np.arange(k, k + block)
        c = 2.0 * ive(ks, z)
        if k == 0:
            c[0] *= 0.5
        out.append(c)
        k += block
        last = c[-1]
        if ks[-1] > z:
            ratio = z / (ks[-1] + 1 + np.sqrt((ks[-1] + 1) ** 2 + z * z))  # Amos bound I_{k+1}/I_k
            if last / (1 - ratio) < tol:
                break
    c = np.concatenate(out)
    # trim: smallest K such that sum_{k >= K} c_k < tol (tail estimated from the computed ones)
    tail = np.cumsum(c[::-1])[::-1]
    K = int(np.argmax(tail < tol)) if np.any(tail < tol) else c.size
    return c[:max(K, 1)]


def n_terms(t: float, lam_max: float, tol: float) -> int:
    """Number of Chebyshev terms (matrix-vector products) for one time."""
    return _coefficients(0.5 * t * lam_max, tol).size


def chebyshev_expm_multiply(matvec, v: np.ndarray, times, lam_max: float, *, tol: float = 1e-15,
                            block: int = 32, callback=None) -> np.ndarray:
    """``[exp(t S) v for t in times]`` as an array (len(times), v.size).

    ``matvec(x)`` computes ``S x``; ``lam_max`` bounds the spectrum of ``-S``
    from above; ``tol`` bounds the 2-norm truncation error relative to
    ``||v||_2``.  ``callback(k, K)`` is called every block of products (progress).
    """
    times = np.asarray(times, dtype=float)
    if np.any(times < 0):
        raise ValueError("times must be non-negative")
    lam = max(float(lam_max), 1e-300)
    coefs = [_coefficients(0.5 * t * lam, tol) for t in times]
    K = max(c.size for c in coefs)
    C = np.zeros((times.size, K))
    for j, c in enumerate(coefs):
        C[j, :c.size] = c
    out = np.zeros((times.size, v.size))
    # Y = (2/lam) S + I ; T_0 v = v, T_1 v = Y v, T_{k+1} = 2 Y T_k - T_{k-1}
    Vb = np.empty((min(block, K), v.size))
    t_prev = np.asarray(v, dtype=float).copy()
    t_cur = None
    start = 0
    for k in range(K):
        if k == 0:
            tk = t_prev
        elif k == 1:
            t_cur = (2.0 / lam) * matvec(t_prev) + t_prev
            tk = t_cur
        else:
            t_next = (4.0 / lam) * matvec(t_cur) + 2.0 * t_cur - t_prev
            t_prev, t_cur = t_cur, t_next
            tk = t_cur
        Vb[k - start] = tk
        if k - start + 1 == Vb.shape[0] or k == K - 1:
            n = k - start + 1
            out += C[:, start:start + n] @ Vb[:n]
            start = k + 1
            if callback is not None:
                callback(start, K)
    return out


def uniformization_multiply(matvec, v: np.ndarray, times, rate: float, *, tol: float = 1e-15) -> tuple[np.ndarray, int]:
    """``[exp(t L) v for t in times]`` for a generator ``L`` of a Markov jump process
    (off-diagonal >= 0, columns summing to zero), by uniformisation:
    ``exp(tL) = sum_k Poisson(k; rate t) Y^k`` with ``Y = I + L / rate`` (entrywise
    non-negative when ``rate >= max |L_jj|``).  Every term is non-negative and
    ``Y`` preserves the L1 norm of non-negative vectors, so the result is
    positive and its L1 truncation error is below ``tol * ||v||_1``, whatever
    the shape of ``v``; the cost is ``~ rate * t`` products.  Returns
    ``(out, number of products)``."""
    from scipy.stats import poisson

    times = np.asarray(times, dtype=float)
    mu = rate * times
    K = int(max(poisson.isf(tol, m) if m > 0 else 0 for m in mu)) + 2
    ks = np.arange(K)
    W = np.stack([poisson.pmf(ks, m) if m > 0 else (ks == 0).astype(float) for m in mu])
    out = np.zeros((times.size, v.size))
    y = np.asarray(v, dtype=float).copy()
    for k in range(K):
        out += np.outer(W[:, k], y)
        if k < K - 1:
            y = y + matvec(y) / rate
    return out, K - 1
