"""The exact propagator ``p_t = exp(t L) p_0`` of a reversible generator.

A generator ``L`` in detailed balance with a law ``pi`` is similar to the symmetric
negative semi-definite ``S = Pi^{-1/2} L Pi^{1/2}``.  One algorithm serves the grid
Fokker-Planck solver, the master equation of a finite space and the mixed space:

1. While ``sqrt(1 + chi^2(p || pi))`` exceeds :func:`chi_max` of the tolerance,
   uniformisation of ``L`` on growing time segments (positive, L1-exact to ``tol``):
   the symmetric form's error, truncation and round-off, is relative to
   ``||p / sqrt(pi)||_2 = sqrt(1 + chi^2)``, so heavy tails drain first.  The truncation
   tolerance is then divided by that factor; the round-off (about :data:`ROUND_OFF`
   of ``||w||``) is what bounds it: ``chi_max(1e-14) = 10``.
2. Then ``exp(t S)`` on ``w = p / sqrt(pi)``: a dense ``eigh`` up to
   :data:`EIGH_MAX` states (cached; any number of output times then costs one small
   product each), above it one Chebyshev sweep shared by all output times within
   :func:`~fokkerplanck.operators.expm.max_segment`, restarted from the last state
   beyond it, and replaced by the Gibbs law itself once the part orthogonal to it has
   decayed below ``tol ||w0||`` by the spectral gap.  Never a silently truncated
   expansion.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from fokkerplanck.operators import expm
from fokkerplanck.operators.expm import chebyshev_expm_multiply, n_terms, uniformization_multiply

__all__ = ["ReversiblePropagator", "EIGH_MAX", "CHI_MAX", "ROUND_OFF", "chi_max", "MAX_SEGMENTS"]

EIGH_MAX = 2000       # dense eigendecomposition up to this many states
CHI_MAX = 1e8         # uniformise while sqrt(1 + chi^2(p || pi)) is larger than this or chi_max(tol)
ROUND_OFF = 1e-15     # round-off of a Chebyshev sweep of the symmetric form, relative to ||w||_2
UNIFORMISE_FIRST = 32.0   # the first uniformisation segment: this many expected jumps per state
UNIFORMISE_GROWTH = 4.0   # each next segment at most this many times longer
MAX_SEGMENTS = 10_000


def chi_max(tol: float) -> float:
    """The largest ``sqrt(1 + chi^2(p || pi))`` at which the symmetric phase may start for a
    tolerance ``tol``: its round-off, :data:`ROUND_OFF` times that factor, stays below
    ``tol`` (at least 2, at most :data:`CHI_MAX`; read at call time)."""
    return min(CHI_MAX, max(2.0, float(tol) / ROUND_OFF))


class ReversiblePropagator:
    """``exp(t L) p0`` at many output times for a generator in detailed balance.

    generator : ``L`` (a sparse matrix or a matrix-free stencil with ``dot``; an optional
        ``combine_parallel`` is used by the uniformisation sums), acting on ``p``.
    symmetric : a function returning ``S`` as a sparse matrix (built only when needed).
    sym_operator : ``S`` as an operator with ``dot`` (default: the sparse ``S``).
    sqrt_pi : ``sqrt(pi)`` up to a constant factor, where ``p = sqrt(pi) w``.
    log_pi : ``log pi`` normalised so that ``sum(pi) * weight = 1``.
    weight : the measure of a state (the cell volume on a grid, 1 on a finite space).
    lam_max : an upper bound of the spectrum of ``-S`` (Gershgorin).
    spectral_gap : a function giving ``lambda_1`` of ``-S`` (only called on long runs).
    """

    def __init__(self, generator, symmetric, sqrt_pi, log_pi, *, lam_max: float, spectral_gap,
                 sym_operator=None, weight: float = 1.0, eigh_max: int = EIGH_MAX):
        self._generator, self._symmetric = generator, symmetric
        self._sym_operator = sym_operator
        self.sqrt_pi, self.log_pi = np.asarray(sqrt_pi, dtype=float), np.asarray(log_pi, dtype=float)
        self.lam_max, self._gap, self.weight, self.eigh_max = float(lam_max), spectral_gap, float(weight), eigh_max
        self.n = self.sqrt_pi.size
        self._eig = None

    @property
    def generator(self):
        """``L`` (built on first use when it was given as a function: with a symmetric
        stencil, uniformisation runs on ``S`` and never needs it)."""
        if callable(self._generator) and not hasattr(self._generator, "dot"):
            self._generator = self._generator()
        return self._generator

    @property
    def rate(self) -> float:
        """The uniformisation rate: the largest exit rate ``max |L_ii|`` (``S`` has the same
        diagonal)."""
        S = self._sym_operator
        if S is not None and hasattr(S, "diag") and not callable(S.diag):
            return float(np.abs(S.diag).max())
        G = self.generator
        diag = G.diag if hasattr(G, "diag") else G.diagonal()
        return float(np.abs(diag).max())

    def log_chi(self, p) -> float:
        """``log sqrt(1 + chi^2(p || pi))``, without overflow or 0/0 where ``pi`` underflows."""
        pos = p > 0
        return 0.5 * (float(logsumexp(2 * np.log(p[pos]) - self.log_pi[pos])) + math.log(self.weight))

    def eigh(self):
        """``(lam, V)`` of ``S``, computed once.  ``S`` is negative semi-definite with the
        Gibbs direction as its kernel: eigh gives that zero as a round-off of ~1e-13
        ``lam_max`` either sign, and ``exp(t lam)`` would then drift the mass for large
        ``t`` (4e-6 at t = 1e7).  Round-off zeros are zeros."""
        if self._eig is None:
            lam, V = np.linalg.eigh(self._symmetric().toarray())
            self._eig = (np.where(lam > -1e-10 * np.abs(lam).max(), 0.0, lam), V)
        return self._eig

    def __call__(self, p0, times, *, tol: float, bar=None):
        """``p_t`` at ``times`` (checked, non-decreasing, >= 0) as an array
        ``(len(times), n)`` and a dict of what was done."""
        out = np.empty((times.size, self.n))
        p = np.array(p0, dtype=float).ravel()
        p, t, j, products, log_chi = self._uniformise(p, times, out, tol, bar)
        while j < times.size and times[j] <= t:
            out[j] = p
            j += 1
        info = {"uniformisation_until": t, "uniformisation_matvecs": products}
        rest = times[j:] - t
        if rest.size:
            w0 = p / self.sqrt_pi
            W = out[j:]  # the symmetric phase writes w in place, then p = sqrt(pi) w
            if self.n <= self.eigh_max:
                lam, V = self.eigh()
                np.matmul(np.exp(np.outer(rest, lam)) * (V.T @ w0), V.T, out=W)
                info.update(exact="eigh", lam_max=float(-lam.min()))
            else:
                def progress(k, K, _bar=bar, _j=j):  # progress through the Chebyshev sweep
                    _bar.n = _j + int((times.size - _j) * k / K)
                    _bar.refresh()
                seg_info = self._chebyshev(w0, rest, tol / self._chi(log_chi), progress if bar is not None else None, W)
                info.update(exact="chebyshev", lam_max=self.lam_max, **seg_info)
            np.multiply(W, self.sqrt_pi, out=W)
            info["negatives_zeroed"] = self._zero_round_off(W, np.linalg.norm(w0), tol)
        return out, info

    @staticmethod
    def _chi(log_chi: float) -> float:
        """``sqrt(1 + chi^2(p || pi))`` from its log (at most :func:`chi_max` where the symmetric
        form takes over), the factor by which its error relative to ``||w||`` exceeds one
        relative to the density: the Chebyshev tolerance is divided by it (a few % more terms)."""
        return max(1.0, math.exp(min(log_chi, 50.0)))

    def _max_log_u(self, p) -> float:
        """``log max (p / pi)`` over the states where ``p > 0`` (``pi`` as ``sqrt_pi^2``)."""
        pos = p > 0
        if not pos.any():
            return -math.inf
        return float(np.max(np.log(p[pos]) - 2.0 * np.log(self.sqrt_pi[pos])))

    def _zero_round_off(self, P, norm_w0: float, tol: float) -> int:
        """Set to 0 the negative values of ``P = sqrt(pi) W`` that lie within the error of the
        symmetric form, ``|W_i - w_i| <= (tol + round-off) ||w0||``, so that the result is a
        density; a negative value beyond that bound is left as it is (it is not round-off).
        Returns how many were set to 0: they sit where ``pi`` is tiny and weigh
        ``~tol ||w0|| sqrt(pi_i)`` each (1e-45 on the eight Gaussians)."""
        neg = P < 0
        if not neg.any():
            return 0
        floor = (tol + 1e-13) * norm_w0 * self.sqrt_pi
        within = neg & (P >= -floor)
        P[within] = 0.0
        return int(within.sum())

    def _uniformise(self, p, times, out, tol, bar):
        """Uniformisation on growing segments while ``sqrt(1 + chi^2) > chi_max(tol)``;
        returns ``(p, t, j, products, log chi of p)``."""
        rate = self.rate
        S = self._sym_operator
        # On w = p / sqrt(pi), with the symmetric stencil, when one is given: the same series
        # (Y = I + S / rate is Y_p's similar, entrywise non-negative matrix), a third fewer
        # arrays per sweep.  u = p / pi obeys a maximum principle (the backward generator is
        # Markov), so w = u sqrt(pi) <= max u0 throughout: safe where max u0 is finite.
        w_space = S is not None and hasattr(S, "combine_parallel") and self._max_log_u(p) < 690.0
        if w_space:
            G, combine = S, S.combine_parallel
        else:
            G = self.generator
            combine = getattr(G, "combine_parallel", None)
        t, j, products = 0.0, 0, 0
        seg = UNIFORMISE_FIRST / max(rate, 1e-300)
        while j < times.size and times[j] <= t:  # outputs at the start (t = 0)
            out[j] = p
            j += 1
        target = math.log(chi_max(tol))
        log_chi = self.log_chi(p)
        while j < times.size and log_chi > target:
            t_next = min(t + seg, times[-1])
            inside = np.flatnonzero((times > t) & (times <= t_next))
            tt = np.concatenate([times[inside] - t, [t_next - t]])
            if w_space:
                res, k = uniformization_multiply(G.dot, p / self.sqrt_pi, tt, rate, tol=tol, combine=combine)
                res *= self.sqrt_pi
            else:
                res, k = uniformization_multiply(G.dot, p, tt, rate, tol=tol, combine=combine)
            products += k
            out[inside] = res[:-1]
            j = max(j, inside[-1] + 1) if inside.size else j
            p, t = res[-1].copy(), t_next  # a copy: res is freed
            del res
            # the next segment: each one costs its Poisson tail (~8 sqrt(rate seg) products at
            # 1e-14) on top of rate * seg, so few long segments; but not much past the time at
            # which chi reaches chi_max, predicted from this segment's decay of log chi (which
            # slows down: the prediction falls short, hence the factor 2)
            previous, log_chi = log_chi, self.log_chi(p)
            slope = (previous - log_chi) / max(tt[-1], 1e-300)
            seg = UNIFORMISE_GROWTH * tt[-1]
            if slope > 0 and log_chi > target:
                seg = min(seg, max(2.0 * (log_chi - target) / slope, UNIFORMISE_FIRST / max(rate, 1e-300)))
            if bar is not None:
                bar.n = j
                bar.refresh()
        return p, t, j, products, log_chi

    def _chebyshev(self, w0, rest, tol, callback, out):
        """``exp(rest S) w0`` into ``out`` (rest.size, n); returns the info dict."""
        S = self._sym_operator if self._sym_operator is not None else self._symmetric()
        combine = getattr(S, "combine_parallel", None)
        lam = self.lam_max
        seg = expm.max_segment(lam, tol, expm.KMAX)  # read at call time: KMAX is a setting
        if rest[-1] <= seg:
            chebyshev_expm_multiply(S.dot, w0, rest, lam, tol=tol, callback=callback, combine=combine, out=out)
            return {"chebyshev_matvecs": n_terms(float(rest.max()), lam, tol), "segments": 1}
        phi = self.sqrt_pi / np.linalg.norm(self.sqrt_pi)
        norm0 = np.linalg.norm(w0)
        gap = None
        base, w, i, segments, matvecs, jumped = 0.0, w0, 0, 0, 0, 0
        while i < rest.size:
            c = float(phi @ w)
            r = float(np.linalg.norm(w - c * phi))
            if r <= tol * norm0:  # already at the Gibbs law to tolerance
                out[i:] = c * phi
                jumped += rest.size - i
                break
            if gap is None:
                gap = self._gap()
            settle = base + math.log(r / (tol * norm0)) / gap if gap > 0 else math.inf
            done = rest[i:] >= settle
            if done.all():
                out[i:] = c * phi
                jumped += rest.size - i
                break
            # the outputs of this segment: a run i:e (rest is sorted, and so is ``done``)
            e = i + int(np.count_nonzero((rest[i:] <= base + seg) & ~done))
            if e > i:
                chebyshev_expm_multiply(S.dot, w, rest[i:e] - base, lam, tol=tol, combine=combine, out=out[i:e])
                matvecs += n_terms(float(rest[e - 1] - base), lam, tol)
                base, w, i = float(rest[e - 1]), out[e - 1], e
            else:  # no output in this segment: advance the state by one whole segment
                w = chebyshev_expm_multiply(S.dot, w, [seg], lam, tol=tol, combine=combine)[0]
                matvecs += n_terms(seg, lam, tol)
                base += seg
            segments += 1
            if segments > MAX_SEGMENTS:
                raise RuntimeError(f"the exact solver would need more than {MAX_SEGMENTS} Chebyshev segments of "
                                   f"length {seg:.3g} to reach t = {rest[-1]:g} (spectral gap {gap:.3g}): use "
                                   "method='implicit' or shorter times")
            if callback is not None:
                callback(i, rest.size)
        info = {"chebyshev_matvecs": matvecs, "segments": segments, "gibbs_jump_outputs": jumped,
                "segment_length": seg}
        if gap is not None:
            info["spectral_gap"] = gap
        return info
