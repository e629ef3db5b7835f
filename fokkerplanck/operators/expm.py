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

import functools

import numpy as np
from scipy.linalg.blas import dgemm
from scipy.special import ive

__all__ = ["gershgorin_bound", "chebyshev_expm_multiply", "n_terms", "max_segment", "ChebyshevBudgetError",
           "KMAX"]

KMAX = 20_000  # terms (matrix-vector products) of one sweep; longer times go in segments
BLOCK_BYTES = 256 * 2**20  # the Chebyshev vectors kept for one block product (at most 64 of them)


class ChebyshevBudgetError(RuntimeError):
    """The expansion would need more than ``kmax`` terms for the requested time: never
    truncated silently (split the time into segments, see :func:`max_segment`)."""


def gershgorin_bound(S) -> float:
    """An upper bound of the spectral radius of a sparse matrix (max absolute row sum)."""
    return float(abs(S).sum(axis=1).max())


def _coefficients(z: float, tol: float, kmax: int = KMAX) -> np.ndarray:
    """``c_0 = ive(0, z), c_k = 2 ive(k, z)`` up to the first k whose tail is below tol;
    :class:`ChebyshevBudgetError` when that takes more than ``kmax`` terms."""
    if not np.isfinite(z) or z < 0:
        raise ValueError(f"Chebyshev argument z = t lam_max / 2 must be finite and >= 0, got {z!r}")
    # tail bound: I_{k+1}(z)/I_k(z) < z / (k + 1/2 + sqrt((k + 1/2)^2 + z^2)) =: q_k < 1 for
    # every k >= 0 (Amos 1974), decreasing in k, so sum_{j > k} c_j < c_k q_k / (1 - q_k)
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
        nu = ks[-1] + 0.5
        q = z / (nu + np.sqrt(nu * nu + z * z))
        if c[-1] * q / (1.0 - q) < tol:
            break
    else:
        raise ChebyshevBudgetError(f"the Chebyshev expansion at z = t lam_max / 2 = {z:.4g} needs more than "
                                   f"{kmax} terms for tolerance {tol:g}")
    c = np.concatenate(out)
    # trim: smallest K such that sum_{k >= K} c_k < tol (tail estimated from the computed ones)
    tail = np.cumsum(c[::-1])[::-1]
    K = int(np.argmax(tail < tol)) if np.any(tail < tol) else c.size
    return c[:max(K, 1)]


def max_segment(lam_max: float, tol: float, kmax: int = KMAX) -> float:
    """The longest time one sweep of at most ``kmax`` terms reaches at tolerance ``tol``."""
    return 2.0 * _max_z(float(tol), int(kmax)) / max(float(lam_max), 1e-300)


@functools.lru_cache(maxsize=64)
def _max_z(tol: float, kmax: int) -> float:
    """The largest ``z`` (of a geometric search) whose expansion fits in ``kmax`` terms; it does
    not depend on ``lam_max``, and finding it evaluates thousands of Bessel functions (2 ms a
    call: a third of the time-dependent solver's steps before it was cached)."""
    z = 0.9 * kmax**2 / (2.0 * max(np.log(1.0 / tol), 1.0))  # I_k(z) e^-z ~ exp(-k^2 / 2z)
    while True:
        try:
            _coefficients(z, tol, kmax)
            return z
        except ChebyshevBudgetError:
            z *= 0.7


def n_terms(t: float, lam_max: float, tol: float) -> int:
    """Number of Chebyshev terms (matrix-vector products) for one time."""
    return _coefficients(0.5 * t * lam_max, tol).size


def chebyshev_expm_multiply(matvec, v: np.ndarray, times, lam_max: float, *, tol: float = 1e-15,
                            block: int | None = None, callback=None, combine=None, out=None) -> np.ndarray:
    """``[exp(t S) v for t in times]`` as an array (len(times), v.size).

    ``matvec(x)`` computes ``S x``; ``lam_max`` bounds the spectrum of ``-S``
    from above; ``tol`` bounds the 2-norm truncation error relative to
    ``||v||_2``.  ``callback(k, K)`` is called every block of products (progress).
    ``combine(x, alpha, beta, z, gamma, out)``, when given, computes
    ``alpha S x + beta x + gamma z`` in one pass (a matrix-free stencil): the
    recurrence then makes no temporaries.
    ``block``: Chebyshev vectors per block product (default: 64, fewer where 64 of them
    would take more than :data:`BLOCK_BYTES`: 4 at 256^3).  ``out``: a C-ordered float64
    array (len(times), v.size) to write the result into.
    Raises :class:`ChebyshevBudgetError` when a time needs more than :data:`KMAX` terms.
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
    sizes = np.array([c.size for c in coefs])
    # the times whose expansions reach term k: a suffix when the times are sorted, so a
    # block of terms updates only those rows (earlier times need fewer terms)
    sorted_sizes = bool(np.all(np.diff(sizes) >= 0))
    if out is None:
        out = np.zeros((times.size, v.size))
    else:
        if out.shape != (times.size, v.size) or out.dtype != np.float64 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-ordered float64 array of shape {(times.size, v.size)}")
        out[...] = 0.0
    if block is None:
        block = int(min(64, max(4, BLOCK_BYTES // (8 * max(v.size, 1)))))
    # Y = (2/lam) S + I ; T_0 v = v, T_1 v = Y v, T_{k+1} = 2 Y T_k - T_{k-1}
    # The recurrence writes each T_k straight into its row of the block (no copy per term);
    # the last two rows of a full block are carried over to the next one.
    B = max(2, min(block, K))
    Vb = np.empty((B, v.size))
    carry = np.empty((2, v.size)) if K > B else None
    t_prev = t_cur = None
    start = 0
    for k in range(K):
        row = Vb[k - start]
        if k == 0:
            row[:] = v
        elif k == 1:
            if combine is not None:
                combine(t_cur, 2.0 / lam, 1.0, out=row)
            else:
                row[:] = (2.0 / lam) * matvec(t_cur) + t_cur
        elif combine is not None:  # T_{k+1} = 2 Y T_k - T_{k-1} in one pass
            combine(t_cur, 4.0 / lam, 2.0, t_prev, -1.0, out=row)
        else:
            row[:] = (4.0 / lam) * matvec(t_cur) + 2.0 * t_cur - t_prev
        t_prev, t_cur = t_cur, row
        if k - start + 1 == B or k == K - 1:
            n = k - start + 1
            r0 = int(np.argmax(sizes > start)) if sorted_sizes else 0
            _accumulate(out[r0:], C[r0:, start:start + n], Vb[:n])
            start = k + 1
            if k < K - 1:  # B >= 2: both are rows of this block, about to be overwritten
                carry[0] = t_prev if t_prev is not None else 0.0
                carry[1] = t_cur
                t_prev, t_cur = carry[0], carry[1]
            if callback is not None:
                callback(start, K)
    return out


def _accumulate(out, C, V):
    """``out += C @ V`` in place: one BLAS call with ``beta = 1`` on the transposed
    (Fortran-ordered) views, no temporary of the size of ``out`` and no second pass over
    it (1.3x at 256^2 with 46 output times, 1.5x at 512^2)."""
    if out.flags.c_contiguous and V.flags.c_contiguous and out.dtype == V.dtype == np.float64:
        res = dgemm(1.0, V.T, np.ascontiguousarray(C).T, beta=1.0, c=out.T, overwrite_c=True)
        if np.shares_memory(res, out):
            return
        out[...] = res.T  # not in place after all (a BLAS that copied): still correct
        return
    out += C @ V


def uniformization_multiply(matvec, v: np.ndarray, times, rate: float, *, tol: float = 1e-15,
                            combine=None) -> tuple[np.ndarray, int]:
    """``[exp(t L) v for t in times]`` for a generator ``L`` of a Markov jump process
    (off-diagonal >= 0, columns summing to zero), by uniformisation:
    ``exp(tL) = sum_k Poisson(k; rate t) Y^k`` with ``Y = I + L / rate`` (entrywise
    non-negative when ``rate >= max |L_jj|``).  Every term is non-negative and
    ``Y`` preserves the L1 norm of non-negative vectors, so the result is
    positive and its L1 truncation error is below ``tol * ||v||_1``, whatever
    the shape of ``v``; the cost is ``~ rate * t`` products.  ``combine`` (a
    :class:`~fokkerplanck.operators.fluxes.Stencil`'s) fuses each term into one pass.  Returns
    ``(out, number of products)``."""
    from scipy.stats import poisson

    times = np.asarray(times, dtype=float)
    mu = rate * times
    K = int(max(poisson.isf(tol, m) if m > 0 else 0 for m in mu)) + 2
    ks = np.arange(K)
    W = np.stack([poisson.pmf(ks, m) if m > 0 else (ks == 0).astype(float) for m in mu])
    out = np.zeros((times.size, v.size))
    y = np.asarray(v, dtype=float).copy()
    if combine is not None:  # one pass per term: out += W[:, k] y and y <- y + L y / rate
        spare = np.empty_like(y)
        for k in range(K):
            spare = combine(y, 1.0 / rate, 1.0, out=spare, acc_w=W[:, k], acc=out)
            y, spare = spare, y
        return out, K - 1
    for k in range(K):
        out += np.outer(W[:, k], y)
        if k < K - 1:
            y = y + matvec(y) / rate
    return out, K - 1
