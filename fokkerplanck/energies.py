"""Energies ``U : R^d -> R``: value, gradient, Laplacian, Hessian.

Each energy gives its derivatives two ways, tested equal:

* vectorised NumPy methods on an array of points of shape ``(N, d)``
  (:meth:`Energy.value`, :meth:`Energy.grad`, :meth:`Energy.laplacian`,
  :meth:`Energy.hessian`), used on grids;
* numba kernels on one point, :attr:`Energy.kernels`, a :class:`Kernels` tuple
  ``(value, grad, lap, hess)`` with the signatures::

      value(x, p) -> float        grad(x, p, out) -> None   # out[:] = grad U(x)
      lap(x, p) -> float          hess(x, p, out) -> None   # out[:, :] = hess U(x)

  where ``x`` is a float64 vector of length ``d`` and ``p`` is the energy's flat
  float64 parameter vector :attr:`Energy.params`.  Parameters are data, not
  compile-time constants, so one compiled kernel serves every mixture, every
  coefficient of a sum, every matrix ``A``.  Particle integrators call these
  inside their compiled loops: no Python callbacks.

Algebra: ``a * U1 + b * U2`` (conjunction; a negative coefficient is a
negation) and :func:`softmin` (disjunction ``-log(e^{-U1} + e^{-U2})``) are
energies again with kernels of their own.  :func:`check_confining` tells
whether the Gibbs law ``exp(-U/T)`` of a (composed) energy is normalisable and
fits in a box.

User-defined energies: write numba kernels with the signatures above (module
level, ``@numba.njit``) and wrap them in :class:`Custom`::

    @numba.njit
    def value(x, p): return p[0] * (x[0] ** 4 + x[1] ** 4)
    ...
    U = Custom(2, value, grad, lap, hess=None, params=[1.0])

Every energy round-trips through a plain dict: ``from_spec(U.to_spec())``.
"""
from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
from numba import prange
from scipy.special import logsumexp

from ._numba import closure_jit, jit
from ._validate import finite_array, point_set, points, positive_float, positive_int, sample_count, spd_matrix

MAX_COMPONENTS = 1_000_000

__all__ = [
    "Kernels", "Energy", "Quadratic", "DoubleWell", "GaussianMixture", "Sum", "SoftMin",
    "Custom", "softmin", "from_spec", "from_config", "check_confining", "ConfinementReport",
    "ENERGY_TYPES", "CONSTRUCTORS", "register", "UnresolvedEnergyError", "custom_modules",
    "NoKernelsError", "spec_of", "CallableEnergy", "from_callable", "from_torch", "from_jax", "KDE",
]


COMPILED_MIN_POINTS = 4096  # from this many points, GaussianMixture value and grad run compiled kernels


class NoKernelsError(NotImplementedError):
    """The energy (or a term of it) is given by Python callables and has no numba kernels."""


class Kernels(NamedTuple):
    """numba kernels of an energy on one point; see the module docstring."""

    value: Callable
    grad: Callable
    lap: Callable
    hess: Callable


def _frozen(a) -> np.ndarray:
    """A read-only float64 copy: what numba kernels read must not change behind them."""
    arr = np.array(a, dtype=np.float64)
    arr.setflags(write=False)
    return arr


class Energy:
    """Base class.  Subclasses set :attr:`dim`, :attr:`params` and implement the
    ``_value/_grad/_lap/_hess`` NumPy methods on validated ``(N, d)`` arrays,
    ``_build_kernels`` and ``to_spec``.

    :attr:`params` is a read-only copy, fixed at construction: the particle
    kernels index it, so changing it in place (which would make particles and
    grid disagree, or index out of bounds) raises.  Build a new energy instead.
    """

    dim: int

    @property
    def params(self) -> np.ndarray:
        return self._params

    @params.setter
    def params(self, value):
        if getattr(self, "_params", None) is not None:
            raise AttributeError(f"{type(self).__name__}.params is fixed at construction; build a new energy")
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 1 or np.any(np.isnan(arr)):
            raise ValueError(f"params must be a 1-D array without NaN, got shape {arr.shape}")
        self._params = _frozen(arr)

    def __setstate__(self, state):  # pickles (Dask) come back read-only too
        self.__dict__.update(state)
        for k, v in state.items():
            if isinstance(v, np.ndarray):
                v.setflags(write=False)

    # -- vectorised evaluation -------------------------------------------------
    def value(self, x) -> np.ndarray | float:
        """``U(x)`` for points of shape (N, d) (returns (N,)) or one point (returns float)."""
        X, single = points(x, self.dim)
        v = self._value(X)
        return float(v[0]) if single else v

    def grad(self, x) -> np.ndarray:
        """``grad U(x)``: shape (N, d), or (d,) for one point."""
        X, single = points(x, self.dim)
        g = self._grad(X)
        return g[0] if single else g

    def laplacian(self, x) -> np.ndarray | float:
        """``lap U(x)``: shape (N,), or a float for one point."""
        X, single = points(x, self.dim)
        v = self._lap(X)
        return float(v[0]) if single else v

    def hessian(self, x) -> np.ndarray:
        """``hess U(x)``: shape (N, d, d), or (d, d) for one point."""
        X, single = points(x, self.dim)
        H = self._hess(X)
        return H[0] if single else H

    def residual(self, x, temperature: float = 1.0):
        """``h(x) = T lap U(x) - |grad U(x)|^2`` (DESIGN.md section 1)."""
        X, single = points(x, self.dim)
        T = positive_float(temperature, "temperature")
        h = T * self._lap(X) - np.sum(self._grad(X) ** 2, axis=1)
        return float(h[0]) if single else h

    def log_partition(self, temperature: float = 1.0) -> float:
        """``log Z = log int exp(-U/T)`` in closed form; raises NotImplementedError
        where there is none (use :meth:`fokkerplanck.Grid.log_partition`)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form log-partition function at "
            f"temperature {temperature}; use Grid.log_partition(energy, temperature)")

    # -- kernels ---------------------------------------------------------------
    @property
    def kernels(self) -> Kernels:
        """The numba kernels (compiled on first use, shared between instances)."""
        if not self.has_kernels:
            bad = [t for t in getattr(self, "terms", ()) if not t.has_kernels]
            raise NoKernelsError(f"{self!r} has no numba kernels: its terms {bad!r} are given by Python "
                                 "callables (particles step it by the vectorised path)")
        return self._build_kernels()

    @property
    def has_kernels(self) -> bool:
        """False when the energy, or a term of it, is given by Python callables
        (:mod:`fokkerplanck.callables`): particles then take the vectorised path."""
        return all(t.has_kernels for t in getattr(self, "terms", ()))

    def _build_kernels(self) -> Kernels:
        raise NotImplementedError

    def eval_kernels(self, x) -> dict:
        """Evaluate all four numba kernels on points (N, d) in a compiled loop;
        returns a dict with ``value, grad, lap, hess``.  Mainly for tests and for
        :class:`Custom` energies, whose vectorised methods are this loop."""
        X, _ = points(x, self.dim)
        v, g, lap, h = _kernel_loop(self.kernels, self.has_hessian)(X, self.params)
        return {"value": v, "grad": g, "lap": lap, "hess": h if self.has_hessian else None}

    def lap_and_grad2(self, x):
        """``(lap U, |grad U|^2)`` at points (N, d) by the compiled kernels, in parallel:
        the particle summaries' hot path (R_t at every save)."""
        X, _ = points(x, self.dim)
        if not self.has_kernels:  # Python callables: rows where they fail come back NaN (masked by summaries)
            from .callables import lenient

            return lenient(self._lap, X), np.sum(lenient(self._grad, X) ** 2, axis=1)
        return _lap_grad2_loop(self.kernels)(np.ascontiguousarray(X), self.params)

    @property
    def has_hessian(self) -> bool:
        """False when a user-defined part gave no Hessian kernel."""
        return all(t.has_hessian for t in getattr(self, "terms", ()))

    # -- algebra -----------------------------------------------------------------
    def __add__(self, other):
        if not isinstance(other, Energy):
            return NotImplemented
        return Sum([1.0, 1.0], [self, other])

    def __sub__(self, other):
        if not isinstance(other, Energy):
            return NotImplemented
        return Sum([1.0, -1.0], [self, other])

    def __mul__(self, a):
        if isinstance(a, Energy) or not np.isscalar(a):
            return NotImplemented
        return Sum([float(a)], [self])

    __rmul__ = __mul__

    def __neg__(self):
        return Sum([-1.0], [self])

    def is_confining(self, grid, temperature: float = 1.0, *, tol: float = 1e-6) -> bool:
        """True when ``exp(-U/T)`` is normalisable and its mass within two cells of
        the walls of ``grid`` is below ``tol``; warns with the reason otherwise."""
        rep = check_confining(self, grid, temperature, tol=tol)
        if not rep.ok:
            warnings.warn(rep.message, RuntimeWarning, stacklevel=2)
        return rep.ok

    # -- spec ------------------------------------------------------------------
    def to_spec(self) -> dict:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim})"


# ---------------------------------------------------------------------------
# A compiled loop over points for any kernel set (memoised per kernel set)
_LOOPS: dict = {}


def _kernel_loop(k: Kernels, with_hess: bool = True):
    key = (tuple(id(f) for f in k), with_hess)
    if key not in _LOOPS:
        value, grad, lap, hess = k

        @closure_jit(parallel=True)
        def loop(X, p):
            n, d = X.shape
            v = np.empty(n)
            g = np.empty((n, d))
            lp = np.empty(n)
            h = np.zeros((n, d, d))
            for i in prange(n):
                x = X[i]
                v[i] = value(x, p)
                grad(x, p, g[i])
                lp[i] = lap(x, p)
                if with_hess:
                    hess(x, p, h[i])
            return v, g, lp, h

        _LOOPS[key] = (k, loop)  # keep k alive so ids stay unique
    return _LOOPS[key][1]


def _value_loop(k: Kernels):
    """``U`` at points (N, d) by the compiled one-point kernel, in parallel."""
    key = (tuple(id(f) for f in k), "value")
    if key not in _LOOPS:
        value = k.value

        @closure_jit(parallel=True)
        def loop(X, p):
            v = np.empty(X.shape[0])
            for i in prange(X.shape[0]):
                v[i] = value(X[i], p)
            return v

        _LOOPS[key] = (k, loop)
    return _LOOPS[key][1]


def _grad_loop(k: Kernels):
    """``grad U`` at points (N, d) by the compiled one-point kernel, in parallel."""
    key = (tuple(id(f) for f in k), "grad")
    if key not in _LOOPS:
        grad = k.grad

        @closure_jit(parallel=True)
        def loop(X, p):
            g = np.empty(X.shape)
            for i in prange(X.shape[0]):
                grad(X[i], p, g[i])
            return g

        _LOOPS[key] = (k, loop)
    return _LOOPS[key][1]


def _lap_grad2_loop(k: Kernels):
    key = (tuple(id(f) for f in k), "lap_grad2")
    if key not in _LOOPS:
        _, grad, lap, _ = k

        @closure_jit(parallel=True)
        def loop(X, p):
            n, d = X.shape
            lp = np.empty(n)
            g2 = np.empty(n)
            for i in prange(n):
                g = np.empty(d)
                grad(X[i], p, g)
                lp[i] = lap(X[i], p)
                s = 0.0
                for j in range(d):
                    s += g[j] * g[j]
                g2[i] = s
            return lp, g2

        _LOOPS[key] = (k, loop)
    return _LOOPS[key][1]


# ---------------------------------------------------------------------------
# Quadratic
@jit(cache=True)
def _quad_value(x, p):
    d = x.shape[0]
    s = 0.0
    for i in range(d):
        yi = x[i] - p[i]
        for j in range(d):
            s += yi * p[d + i * d + j] * (x[j] - p[j])
    return 0.5 * s


@jit(cache=True)
def _quad_grad(x, p, out):
    d = x.shape[0]
    for i in range(d):
        s = 0.0
        for j in range(d):
            s += p[d + i * d + j] * (x[j] - p[j])
        out[i] = s


@jit(cache=True)
def _quad_lap(x, p):
    d = x.shape[0]
    s = 0.0
    for i in range(d):
        s += p[d + i * d + i]
    return s


@jit(cache=True)
def _quad_hess(x, p, out):
    d = x.shape[0]
    for i in range(d):
        for j in range(d):
            out[i, j] = p[d + i * d + j]


_QUAD_KERNELS = Kernels(_quad_value, _quad_grad, _quad_lap, _quad_hess)


class Quadratic(Energy):
    """``U(x) = (x - mean)^T A (x - mean) / 2`` for a symmetric positive-definite ``A``.

    Its Gibbs law is ``N(mean, T A^{-1})``, with
    ``log Z = d/2 log(2 pi T) - 1/2 log det A``.
    """

    def __init__(self, A, mean=None):
        self.A = _frozen(spd_matrix(A, "A"))
        self.dim = self.A.shape[0]
        self.mean = _frozen(np.zeros(self.dim) if mean is None else finite_array(mean, "mean", shape=(self.dim,)))
        self.params = np.concatenate([self.mean, self.A.ravel()])

    def _value(self, X):
        Y = X - self.mean
        return 0.5 * np.einsum("ni,ij,nj->n", Y, self.A, Y)

    def _grad(self, X):
        return (X - self.mean) @ self.A

    def _lap(self, X):
        return np.full(X.shape[0], np.trace(self.A))

    def _hess(self, X):
        return np.broadcast_to(self.A, (X.shape[0], self.dim, self.dim)).copy()

    def log_partition(self, temperature: float = 1.0) -> float:
        T = positive_float(temperature, "temperature")
        return 0.5 * self.dim * math.log(2 * math.pi * T) - 0.5 * np.linalg.slogdet(self.A)[1]

    def _build_kernels(self):
        return _QUAD_KERNELS

    def to_spec(self):
        return {"type": "Quadratic", "A": self.A.tolist(), "mean": self.mean.tolist()}


# ---------------------------------------------------------------------------
# Double well (separable)
@jit(cache=True)
def _dw_value(x, p):
    b, s = p[0], p[1]
    v = 0.0
    for i in range(x.shape[0]):
        q = (x[i] / s) ** 2 - 1.0
        v += b * q * q
    return v


@jit(cache=True)
def _dw_grad(x, p, out):
    b, s = p[0], p[1]
    for i in range(x.shape[0]):
        out[i] = 4.0 * b * x[i] * ((x[i] / s) ** 2 - 1.0) / (s * s)


@jit(cache=True)
def _dw_lap(x, p):
    b, s = p[0], p[1]
    v = 0.0
    for i in range(x.shape[0]):
        v += 4.0 * b * (3.0 * (x[i] / s) ** 2 - 1.0) / (s * s)
    return v


@jit(cache=True)
def _dw_hess(x, p, out):
    b, s = p[0], p[1]
    d = x.shape[0]
    for i in range(d):
        for j in range(d):
            out[i, j] = 0.0
        out[i, i] = 4.0 * b * (3.0 * (x[i] / s) ** 2 - 1.0) / (s * s)


_DW_KERNELS = Kernels(_dw_value, _dw_grad, _dw_lap, _dw_hess)


class DoubleWell(Energy):
    """Separable double well ``U(x) = sum_i barrier * ((x_i / scale)^2 - 1)^2``.

    Minima at ``x_i = +-scale`` (value 0), saddle at the origin with height
    ``barrier`` per coordinate.  ``dim=1`` is the classic 1D double well.
    ``log Z`` is ``dim`` times a 1D integral, computed by adaptive quadrature
    to ~1e-13 relative.
    """

    def __init__(self, dim: int = 1, barrier: float = 1.0, scale: float = 1.0):
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.barrier = positive_float(barrier, "barrier")
        self.scale = positive_float(scale, "scale")
        self.params = np.array([self.barrier, self.scale])

    def _q(self, X):
        return (X / self.scale) ** 2 - 1.0

    def _value(self, X):
        return self.barrier * np.sum(self._q(X) ** 2, axis=1)

    def _grad(self, X):
        return 4.0 * self.barrier * X * self._q(X) / self.scale**2

    def _lap(self, X):
        return np.sum(self._hdiag(X), axis=1)

    def _hdiag(self, X):
        return 4.0 * self.barrier * (3.0 * (X / self.scale) ** 2 - 1.0) / self.scale**2

    def _hess(self, X):
        H = np.zeros((X.shape[0], self.dim, self.dim))
        idx = np.arange(self.dim)
        H[:, idx, idx] = self._hdiag(X)
        return H

    def log_partition(self, temperature: float = 1.0) -> float:
        from scipy.integrate import quad

        T = positive_float(temperature, "temperature")
        b, s = self.barrier, self.scale
        # integrand symmetric in x; integrate on [0, inf) split at the minimum
        f = lambda x: math.exp(-b * ((x / s) ** 2 - 1.0) ** 2 / T)  # noqa: E731
        z = quad(f, 0, s, epsabs=0, epsrel=1e-13, limit=200)[0] + quad(f, s, np.inf, epsabs=0, epsrel=1e-13, limit=200)[0]
        return self.dim * math.log(2.0 * z)

    def _build_kernels(self):
        return _DW_KERNELS

    def to_spec(self):
        return {"type": "DoubleWell", "dim": self.dim, "barrier": self.barrier, "scale": self.scale}


# ---------------------------------------------------------------------------
# Gaussian mixture.  Parameter layout: p = [K, then per component k:
#   logc_k = log w_k - 1/2 log det(2 pi S_k), mean_k (d), P_k = S_k^{-1} (d*d)]
@jit(cache=True)
def _gm_ncomp(p, d):
    """The component count ``p[0]``, clipped to what ``p`` holds: never index out of bounds."""
    k = int(p[0])
    kmax = (p.shape[0] - 1) // (1 + d + d * d)
    return min(max(k, 0), kmax)


@jit(cache=True)
def _gm_logits(x, p, ls):
    """Fill ls[k] = log w_k + log N(x; m_k, S_k); return max_k ls[k]."""
    d = x.shape[0]
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    lmax = -np.inf
    for k in range(K):
        off = 1 + k * stride
        ls[k] = p[off] - 0.5 * _gm_quad(x, p, off, d)
        if ls[k] > lmax:
            lmax = ls[k]
    return lmax


@jit(cache=True)
def _gm_resp(x, p, r):
    """Responsibilities r (normalised, stable); returns log sum_k w_k N_k(x)."""
    lmax = _gm_logits(x, p, r)
    tot = 0.0
    for k in range(r.shape[0]):
        r[k] = math.exp(r[k] - lmax)
        tot += r[k]
    for k in range(r.shape[0]):
        r[k] /= tot
    return lmax + math.log(tot)


@jit(cache=True)
def _gm_g(x, p, k, g):
    """g = P_k (x - m_k)."""
    d = x.shape[0]
    off = 1 + k * (1 + d + d * d)
    for i in range(d):
        s = 0.0
        for j in range(d):
            s += p[off + 1 + d + i * d + j] * (x[j] - p[off + 1 + j])
        g[i] = s


@jit(cache=True)
def _gm_quad(x, p, off, d):
    """(x - m_k)^T P_k (x - m_k) for the component at offset ``off``."""
    q = 0.0
    for i in range(d):
        gi = 0.0
        for j in range(d):
            gi += p[off + 1 + d + i * d + j] * (x[j] - p[off + 1 + j])
        q += (x[i] - p[off + 1 + i]) * gi
    return q


@jit(cache=True)
def _gm_value(x, p):
    # one pass, online log-sum-exp, no allocation (this runs inside particle loops)
    d = x.shape[0]
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    m = -np.inf
    s = 0.0
    for k in range(K):
        off = 1 + k * stride
        lk = p[off] - 0.5 * _gm_quad(x, p, off, d)
        if lk > m:
            s = s * math.exp(m - lk) + 1.0
            m = lk
        else:
            s += math.exp(lk - m)
    return -(m + math.log(s))


@jit(cache=True)
def _gm_pass2(x, p):
    """2D online log-sum-exp pass: ``(m, s, o0, o1)`` with ``sum_k e^{l_k} = e^m s`` and
    ``o / s = sum_k r_k P_k (x - m_k)`` (scalars in registers: ``out`` arrays may alias
    ``p`` as far as LLVM knows, so a generic loop would reload parameters after every store)."""
    K = _gm_ncomp(p, 2)
    m = -np.inf
    s = 0.0
    o0 = 0.0
    o1 = 0.0
    x0 = x[0]
    x1 = x[1]
    for k in range(K):
        off = 1 + 7 * k
        y0 = x0 - p[off + 1]
        y1 = x1 - p[off + 2]
        g0 = p[off + 3] * y0 + p[off + 4] * y1
        g1 = p[off + 5] * y0 + p[off + 6] * y1
        lk = p[off] - 0.5 * (y0 * g0 + y1 * g1)
        if lk > m:
            sc = math.exp(m - lk)
            s *= sc
            o0 *= sc
            o1 *= sc
            m = lk
        w = math.exp(lk - m)
        s += w
        o0 += w * g0
        o1 += w * g1
    return m, s, o0, o1


@jit(cache=True)
def _gm_grad2(x, p, out):
    """2D fast path of :func:`_gm_grad`."""
    _, s, o0, o1 = _gm_pass2(x, p)
    out[0] = o0 / s
    out[1] = o1 / s


@jit(cache=True)
def _gm_grad(x, p, out):
    # grad U = sum_k r_k P_k (x - m_k): one pass, online log-sum-exp, no allocation
    d = x.shape[0]
    if d == 2:
        _gm_grad2(x, p, out)
        return
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    m = -np.inf
    s = 0.0
    for i in range(d):
        out[i] = 0.0
    for k in range(K):
        off = 1 + k * stride
        lk = p[off] - 0.5 * _gm_quad(x, p, off, d)
        if lk > m:
            scale = math.exp(m - lk)
            s *= scale
            for i in range(d):
                out[i] *= scale
            m = lk
        w = math.exp(lk - m)
        s += w
        for i in range(d):
            gi = 0.0
            for j in range(d):
                gi += p[off + 1 + d + i * d + j] * (x[j] - p[off + 1 + j])
            out[i] += w * gi
    for i in range(d):
        out[i] /= s


@jit(cache=True)
def _gm_lap2(x, p):
    """2D fast path of :func:`_gm_lap`, no allocation: the gradient's pass gives the
    log-sum-exp and gbar, a second pass sums r_k (tr P_k - |g_k - gbar|^2)."""
    K = _gm_ncomp(p, 2)
    m, s, b0, b1 = _gm_pass2(x, p)
    b0 /= s
    b1 /= s
    lap = 0.0
    for k in range(K):
        off = 1 + 7 * k
        y0 = x[0] - p[off + 1]
        y1 = x[1] - p[off + 2]
        g0 = p[off + 3] * y0 + p[off + 4] * y1
        g1 = p[off + 5] * y0 + p[off + 6] * y1
        lk = p[off] - 0.5 * (y0 * g0 + y1 * g1)
        lap += math.exp(lk - m) * (p[off + 3] + p[off + 6] - (g0 - b0) ** 2 - (g1 - b1) ** 2)
    return lap / s


@jit(cache=True)
def _gm_lap(x, p):
    # lap U = sum_k r_k tr P_k - sum_k r_k |g_k - gbar|^2   (a variance: no cancellation)
    d = x.shape[0]
    if d == 2:
        return _gm_lap2(x, p)
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    r = np.empty(K)
    g = np.empty(d)
    gbar = np.zeros(d)
    _gm_resp(x, p, r)
    for k in range(K):
        _gm_g(x, p, k, g)
        for i in range(d):
            gbar[i] += r[k] * g[i]
    lap = 0.0
    for k in range(K):
        off = 1 + k * stride
        tr = 0.0
        for i in range(d):
            tr += p[off + 1 + d + i * d + i]
        _gm_g(x, p, k, g)
        v = 0.0
        for i in range(d):
            v += (g[i] - gbar[i]) ** 2
        lap += r[k] * (tr - v)
    return lap


@jit(cache=True)
def _gm_hess(x, p, out):
    d = x.shape[0]
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    r = np.empty(K)
    g = np.empty(d)
    gbar = np.zeros(d)
    _gm_resp(x, p, r)
    for k in range(K):
        _gm_g(x, p, k, g)
        for i in range(d):
            gbar[i] += r[k] * g[i]
    out[:, :] = 0.0
    for k in range(K):
        off = 1 + k * stride
        _gm_g(x, p, k, g)
        for i in range(d):
            for j in range(d):
                out[i, j] += r[k] * (p[off + 1 + d + i * d + j] - (g[i] - gbar[i]) * (g[j] - gbar[j]))


_GM_KERNELS = Kernels(_gm_value, _gm_grad, _gm_lap, _gm_hess)


class GaussianMixture(Energy):
    """``U(x) = -log sum_k w_k N(x; m_k, S_k)``: a normalised mixture, so
    ``log Z = 0`` at ``T = 1`` and ``rho* = sum_k w_k N(m_k, S_k)``.

    ``covs`` is (K, d, d), or (K,) scalar standard deviations ``sigma_k``
    (``S_k = sigma_k^2 I``), or one scalar sigma for all.  ``weights`` are
    normalised; default equal.  Log-sum-exp keeps value, gradient and
    Laplacian finite and accurate far from every centre.
    """

    def __init__(self, means, covs=1.0, weights=None):
        means = point_set(means, "means", "K", maximum=MAX_COMPONENTS, why="every evaluation loops over all of them")
        K, d = means.shape
        covs_in = finite_array(covs, "covs")
        if covs_in.ndim <= 1:
            sig = np.broadcast_to(covs_in, (K,)) if covs_in.ndim == 0 or covs_in.shape == (K,) else None
            if sig is None:
                raise ValueError(f"sigmas must be a scalar or have shape ({K},), got {covs_in.shape}")
            if np.any(sig <= 0):
                raise ValueError(f"sigmas must be positive, got {np.asarray(sig).tolist()}")
            S = np.asarray(sig)[:, None, None] ** 2 * np.eye(d)
        elif covs_in.shape == (K, d, d):
            S = np.stack([spd_matrix(c, f"covs[{k}]") for k, c in enumerate(covs_in)])
        else:
            raise ValueError(f"covs must be a scalar, shape ({K},) or ({K}, {d}, {d}); got {covs_in.shape}")
        if weights is None:
            w = np.full(K, 1.0 / K)
        else:
            w = finite_array(weights, "weights", shape=(K,))
            if np.any(w < 0) or w.sum() <= 0:
                raise ValueError(f"weights must be non-negative with a positive sum, got {w.tolist()}")
            w = w / w.sum()
        self.dim, self.K = d, K
        self.means, self.covs, self.weights = _frozen(means), _frozen(S), _frozen(w)
        self.precisions = _frozen(np.linalg.inv(S))
        logc = np.log(np.where(w > 0, w, 1e-300)) - 0.5 * np.linalg.slogdet(2 * np.pi * S)[1]
        logc[w == 0] = -np.inf
        self._logc = _frozen(logc)
        blocks = [np.concatenate([[self._logc[k]], means[k], self.precisions[k].ravel()]) for k in range(K)]
        self.params = np.concatenate([[float(K)]] + blocks)

    # constructors -------------------------------------------------------------
    @classmethod
    def ring(cls, n: int = 8, radius: float = 4.0, sigma: float = 0.5):
        """``n`` equal Gaussians on a circle (the paper's eight Gaussians: defaults)."""
        n = positive_int(n, "n", maximum=MAX_COMPONENTS)
        ang = 2 * np.pi * np.arange(n) / n
        return cls(radius * np.stack([np.cos(ang), np.sin(ang)], axis=1), sigma)

    @classmethod
    def square_grid(cls, n_side: int = 3, spacing: float = 3.0, sigma: float = 0.5):
        """``n_side**2`` equal Gaussians on a square lattice centred at the origin."""
        n_side = positive_int(n_side, "n_side", maximum=int(MAX_COMPONENTS**0.5))
        c = spacing * (np.arange(n_side) - (n_side - 1) / 2)
        X, Y = np.meshgrid(c, c, indexing="ij")
        return cls(np.stack([X.ravel(), Y.ravel()], axis=1), sigma)

    @classmethod
    def paper_A(cls, sigma: float = 0.5):
        """The paper's expert A: four Gaussians at (+-3, +-3)."""
        return cls([[3, 3], [3, -3], [-3, 3], [-3, -3]], sigma)

    @classmethod
    def paper_B(cls, sigma: float = 0.5):
        """The paper's expert B: four Gaussians at (0, +-4), (+-4, 0)."""
        return cls([[0, 4], [0, -4], [4, 0], [-4, 0]], sigma)

    @classmethod
    def smoothed_data(cls, samples, bandwidth: float):
        """The energy of ``rho_hat * K_h``: the empirical law of ``samples`` (n, d)
        convolved with an isotropic Gaussian kernel of standard deviation ``bandwidth``."""
        samples = finite_array(samples, "samples")
        return cls(samples, positive_float(bandwidth, "bandwidth"))

    # numpy ---------------------------------------------------------------------
    def _logits(self, X):
        Y = X[:, None, :] - self.means[None]  # (N, K, d)
        G = np.einsum("kij,nkj->nki", self.precisions, Y)
        return self._logc[None] - 0.5 * np.einsum("nki,nki->nk", Y, G), G

    def _resp(self, X):
        L, G = self._logits(X)
        lse = logsumexp(L, axis=1)
        return np.exp(L - lse[:, None]), G, lse

    def _value(self, X):
        if X.shape[0] >= COMPILED_MIN_POINTS:  # grids: no (N, K, d) temporaries, all cores
            return _value_loop(self.kernels)(np.ascontiguousarray(X), self.params)
        return -logsumexp(self._logits(X)[0], axis=1)

    def _grad(self, X):
        if X.shape[0] >= COMPILED_MIN_POINTS:  # particles on the vectorised path, grids: all cores
            return _grad_loop(self.kernels)(np.ascontiguousarray(X), self.params)
        r, G, _ = self._resp(X)
        return np.einsum("nk,nki->ni", r, G)

    def _lap(self, X):
        r, G, _ = self._resp(X)
        gbar = np.einsum("nk,nki->ni", r, G)
        tr = np.trace(self.precisions, axis1=1, axis2=2)
        return np.einsum("nk,nk->n", r, tr[None] - np.sum((G - gbar[:, None]) ** 2, axis=2))

    def _hess(self, X):
        r, G, _ = self._resp(X)
        D = G - np.einsum("nk,nki->ni", r, G)[:, None]
        return np.einsum("nk,kij->nij", r, self.precisions) - np.einsum("nk,nki,nkj->nij", r, D, D)

    def log_partition(self, temperature: float = 1.0) -> float:
        if positive_float(temperature, "temperature") == 1.0:
            return 0.0
        return super().log_partition(temperature)

    def sample(self, n: int, seed=None) -> np.ndarray:
        """``n`` exact samples of ``rho* = sum_k w_k N(m_k, S_k)`` (T = 1)."""
        n = sample_count(n, self.dim)
        rng = np.random.default_rng(seed)
        k = rng.choice(self.K, size=n, p=self.weights)
        L = np.linalg.cholesky(self.covs)
        z = rng.standard_normal((n, self.dim))
        return self.means[k] + np.einsum("nij,nj->ni", L[k], z)

    def _build_kernels(self):
        return _GM_KERNELS

    def to_spec(self):
        return {"type": "GaussianMixture", "means": self.means.tolist(), "covs": self.covs.tolist(),
                "weights": self.weights.tolist()}


# ---------------------------------------------------------------------------
# Composition.  Kernels are built by folding binary combinators; parameters of
# a binary node: p = [n1, a, b, p1..., p2...] (Sum) or [n1, p1..., p2...] (SoftMin).
_COMPOSED: dict = {}


def _memo(tag, k1: Kernels, k2: Kernels, build):
    key = (tag, tuple(id(f) for f in k1), tuple(id(f) for f in k2))
    if key not in _COMPOSED:
        _COMPOSED[key] = (k1, k2, build(k1, k2))  # keep children alive
    return _COMPOSED[key][2]


def _sum_kernels(k1: Kernels, k2: Kernels) -> Kernels:
    v1, g1, l1, h1 = k1
    v2, g2, l2, h2 = k2

    @closure_jit
    def value(x, p):
        n1 = int(p[0])
        return p[1] * v1(x, p[3:3 + n1]) + p[2] * v2(x, p[3 + n1:])

    @closure_jit
    def grad(x, p, out):
        n1 = int(p[0])
        tmp = np.empty_like(out)
        g1(x, p[3:3 + n1], out)
        g2(x, p[3 + n1:], tmp)
        for i in range(out.shape[0]):
            out[i] = p[1] * out[i] + p[2] * tmp[i]

    @closure_jit
    def lap(x, p):
        n1 = int(p[0])
        return p[1] * l1(x, p[3:3 + n1]) + p[2] * l2(x, p[3 + n1:])

    @closure_jit
    def hess(x, p, out):
        n1 = int(p[0])
        tmp = np.empty_like(out)
        h1(x, p[3:3 + n1], out)
        h2(x, p[3 + n1:], tmp)
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j] = p[1] * out[i, j] + p[2] * tmp[i, j]

    return Kernels(value, grad, lap, hess)


@jit(cache=True)
def _zero_value(x, p):
    return 0.0


@jit(cache=True)
def _zero_grad(x, p, out):
    out[:] = 0.0


@jit(cache=True)
def _zero_hess(x, p, out):
    out[:, :] = 0.0


_ZERO_KERNELS = Kernels(_zero_value, _zero_grad, _zero_value, _zero_hess)


def _softmin_kernels(k1: Kernels, k2: Kernels) -> Kernels:
    v1, g1, l1, h1 = k1
    v2, g2, l2, h2 = k2

    @closure_jit
    def _weights(x, p):
        n1 = int(p[0])
        u1 = v1(x, p[1:1 + n1])
        u2 = v2(x, p[1 + n1:])
        m = min(u1, u2)
        e1 = math.exp(m - u1)
        e2 = math.exp(m - u2)
        return m - math.log(e1 + e2), e1 / (e1 + e2), e2 / (e1 + e2)

    @closure_jit
    def value(x, p):
        return _weights(x, p)[0]

    @closure_jit
    def grad(x, p, out):
        n1 = int(p[0])
        _, s1, s2 = _weights(x, p)
        tmp = np.empty_like(out)
        g1(x, p[1:1 + n1], out)
        g2(x, p[1 + n1:], tmp)
        for i in range(out.shape[0]):
            out[i] = s1 * out[i] + s2 * tmp[i]

    @closure_jit
    def lap(x, p):
        # lap U = s1 lap U1 + s2 lap U2 - s1 s2 |grad U1 - grad U2|^2
        n1 = int(p[0])
        _, s1, s2 = _weights(x, p)
        d = x.shape[0]
        a = np.empty(d)
        b = np.empty(d)
        g1(x, p[1:1 + n1], a)
        g2(x, p[1 + n1:], b)
        v = 0.0
        for i in range(d):
            v += (a[i] - b[i]) ** 2
        return s1 * l1(x, p[1:1 + n1]) + s2 * l2(x, p[1 + n1:]) - s1 * s2 * v

    @closure_jit
    def hess(x, p, out):
        n1 = int(p[0])
        _, s1, s2 = _weights(x, p)
        d = x.shape[0]
        a = np.empty(d)
        b = np.empty(d)
        tmp = np.empty_like(out)
        g1(x, p[1:1 + n1], a)
        g2(x, p[1 + n1:], b)
        h1(x, p[1:1 + n1], out)
        h2(x, p[1 + n1:], tmp)
        for i in range(d):
            for j in range(d):
                out[i, j] = s1 * out[i, j] + s2 * tmp[i, j] - s1 * s2 * (a[i] - b[i]) * (a[j] - b[j])

    return Kernels(value, grad, lap, hess)


def _same_dim(energies):
    dims = {e.dim for e in energies}
    if len(dims) != 1:
        raise ValueError(f"cannot combine energies of different dimensions {sorted(dims)}")
    return dims.pop()


class Sum(Energy):
    """``U = sum_i c_i U_i``: conjunction (product of experts' Gibbs laws at
    ``c_i = 1``), negation with a negative coefficient."""

    def __init__(self, coefs, terms):
        terms = list(terms)
        coefs = finite_array(coefs, "coefs", shape=(len(terms),))
        if not terms or not all(isinstance(t, Energy) for t in terms):
            raise ValueError("Sum needs a non-empty list of Energy terms")
        # flatten nested sums so that a*U1 + b*U2 + c*U3 is one node
        flat_c, flat_t = [], []
        for c, t in zip(coefs, terms):
            if isinstance(t, Sum):
                flat_c += [c * ci for ci in t.coefs]
                flat_t += t.terms
            else:
                flat_c.append(float(c))
                flat_t.append(t)
        self.coefs, self.terms = _frozen(flat_c), tuple(flat_t)
        self.dim = _same_dim(self.terms)
        # fold left: ((c1 U1 + c2 U2) + c3 U3) ...; a single term is c1 U1 + 0
        p = np.concatenate([[len(self.terms[0].params), self.coefs[0], 0.0], self.terms[0].params, []])
        for c, t in zip(self.coefs[1:], self.terms[1:]):
            p = np.concatenate([[len(p), 1.0, c], p, t.params])
        self.params = p

    def _build_kernels(self):
        k = _memo("sum", self.terms[0].kernels, _ZERO_KERNELS, _sum_kernels)
        for t in self.terms[1:]:
            k = _memo("sum", k, t.kernels, _sum_kernels)
        return k

    def _value(self, X):
        return sum(c * t._value(X) for c, t in zip(self.coefs, self.terms))

    def _grad(self, X):
        return sum(c * t._grad(X) for c, t in zip(self.coefs, self.terms))

    def _lap(self, X):
        return sum(c * t._lap(X) for c, t in zip(self.coefs, self.terms))

    def _hess(self, X):
        return sum(c * t._hess(X) for c, t in zip(self.coefs, self.terms))

    def log_partition(self, temperature: float = 1.0) -> float:
        if len(self.terms) == 1 and self.coefs[0] > 0:  # c U: log Z_U(T / c)
            return self.terms[0].log_partition(temperature / self.coefs[0])
        return super().log_partition(temperature)

    def to_spec(self):
        return {"type": "Sum", "terms": [{"coef": float(c), "energy": t.to_spec()}
                                         for c, t in zip(self.coefs, self.terms)]}

    @classmethod
    def _from_spec(cls, spec, allow_modules=()):
        _check_keys(spec, {"type", "terms"}, "Sum spec")
        return cls([t["coef"] for t in spec["terms"]],
                   [from_spec(t["energy"], allow_modules=allow_modules) for t in spec["terms"]])

    def __repr__(self):
        return " + ".join(f"{c:g}*{t!r}" for c, t in zip(self.coefs, self.terms))


class SoftMin(Energy):
    """Disjunction ``U = -log(e^{-U_1} + ... + e^{-U_n})`` (mixture of the experts'
    unnormalised Gibbs laws at ``T = 1``); stable soft-min."""

    def __init__(self, energies):
        energies = list(energies)
        if len(energies) < 2 or not all(isinstance(e, Energy) for e in energies):
            raise ValueError("SoftMin needs at least two Energy objects")
        self.terms = tuple(energies)
        self.dim = _same_dim(energies)
        p = energies[0].params
        for e in energies[1:]:
            p = np.concatenate([[len(p)], p, e.params])
        self.params = p

    def _build_kernels(self):
        k = self.terms[0].kernels
        for t in self.terms[1:]:
            k = _memo("softmin", k, t.kernels, _softmin_kernels)
        return k

    def _all(self, X):
        U = np.stack([t._value(X) for t in self.terms], axis=1)  # (N, n)
        v = -logsumexp(-U, axis=1)
        s = np.exp(v[:, None] - U)
        return v, s

    def _value(self, X):
        return self._all(X)[0]

    def _grad(self, X):
        _, s = self._all(X)
        return sum(s[:, i, None] * t._grad(X) for i, t in enumerate(self.terms))

    def _lap(self, X):
        _, s = self._all(X)
        G = np.stack([t._grad(X) for t in self.terms], axis=1)  # (N, n, d)
        gbar = np.einsum("ni,nid->nd", s, G)
        lap = sum(s[:, i] * t._lap(X) for i, t in enumerate(self.terms))
        return lap - np.einsum("ni,ni->n", s, np.sum((G - gbar[:, None]) ** 2, axis=2))

    def _hess(self, X):
        _, s = self._all(X)
        G = np.stack([t._grad(X) for t in self.terms], axis=1)
        D = G - np.einsum("ni,nid->nd", s, G)[:, None]
        H = sum(s[:, i, None, None] * t._hess(X) for i, t in enumerate(self.terms))
        return H - np.einsum("ni,nia,nib->nab", s, D, D)

    def to_spec(self):
        return {"type": "SoftMin", "energies": [t.to_spec() for t in self.terms]}

    @classmethod
    def _from_spec(cls, spec, allow_modules=()):
        _check_keys(spec, {"type", "energies"}, "SoftMin spec")
        return cls([from_spec(s, allow_modules=allow_modules) for s in spec["energies"]])


def softmin(*energies) -> SoftMin:
    """Disjunction ``-log(sum_i e^{-U_i})`` of two or more energies."""
    return SoftMin(energies)


# ---------------------------------------------------------------------------
class Custom(Energy):
    """A user-defined energy from numba kernels with the module's signatures.

    ``value(x, p)``, ``grad(x, p, out)``, ``lap(x, p)`` and optionally
    ``hess(x, p, out)`` must be ``numba.njit`` functions.  Without ``hess`` the
    Hessian kernel raises (schemes that need it, such as the exact log-density
    change of the Euler map, then refuse the energy).  For :meth:`to_spec` the
    kernels must be importable module-level functions.
    """

    def __init__(self, dim: int, value, grad, lap, hess=None, params=(), log_partition=None):
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        for name, f in (("value", value), ("grad", grad), ("lap", lap), ("hess", hess)):
            if f is not None and not hasattr(f, "py_func"):
                raise ValueError(f"{name} must be a numba.njit-compiled function, got {f!r}")
        self.dim = int(dim)
        self.params = finite_array(np.atleast_1d(np.asarray(params, dtype=float)) if len(params) else np.zeros(0), "params")
        self._fns = (value, grad, lap, hess)
        self._logz = log_partition
        self._kernels = Kernels(value, grad, lap, hess if hess is not None else _missing_hess)

    def _build_kernels(self):
        return self._kernels

    def _value(self, X):
        return self.eval_kernels(X)["value"]

    def _grad(self, X):
        return self.eval_kernels(X)["grad"]

    def _lap(self, X):
        return self.eval_kernels(X)["lap"]

    def _hess(self, X):
        if self._fns[3] is None:
            raise NotImplementedError("this Custom energy was given no Hessian kernel")
        return self.eval_kernels(X)["hess"]

    @property
    def has_hessian(self) -> bool:
        return self._fns[3] is not None

    def log_partition(self, temperature: float = 1.0) -> float:
        if self._logz is not None:
            return float(self._logz(temperature))
        return super().log_partition(temperature)

    def to_spec(self):
        names = {}
        for key, f in zip(("value", "grad", "lap", "hess"), self._fns):
            if f is None:
                continue
            py = f.py_func
            if "<locals>" in py.__qualname__ or py.__module__ == "__main__":
                raise ValueError(f"Custom energy kernel {key}={py.__qualname__} is not importable "
                                 "(define it at module level in an importable module to save its spec)")
            names[key] = f"{py.__module__}:{py.__qualname__}"
        return {"type": "Custom", "dim": self.dim, "params": self.params.tolist(), **names}

    @classmethod
    def _from_spec(cls, spec, allow_modules=()):
        """Kernels are named ``"module:function"``; a module is imported only when
        the caller lists it in ``allow_modules`` (data never runs code by itself)."""
        refs = {k: spec.get(k) for k in ("value", "grad", "lap", "hess")}
        mods = sorted({str(r).partition(":")[0] for r in refs.values() if r is not None})
        refused = [m for m in mods if m not in set(allow_modules)]
        if refused:
            raise UnresolvedEnergyError(
                f"this Custom energy names kernels in the modules {refused}; a spec read from a file or a "
                "config never imports code by itself: pass the energy (energy=...) or allow those modules "
                f"explicitly (allow_modules={refused})", spec)

        def load(key):
            ref = refs[key]
            if ref is None:
                if key == "hess":
                    return None
                raise ValueError(f"Custom energy spec lacks the kernel {key!r}")
            mod, sep, name = str(ref).partition(":")
            if not sep or not name.isidentifier():
                raise ValueError(f"Custom kernel {key} must be 'module:function', got {ref!r}")
            f = getattr(importlib.import_module(mod), name, None)
            if not hasattr(f, "py_func"):
                raise ValueError(f"Custom kernel {ref!r} is not a numba.njit function in module {mod!r}")
            return f
        _check_keys(spec, {"type", "dim", "params", "value", "grad", "lap", "hess"}, "Custom energy spec")
        return cls(spec.get("dim", 0), load("value"), load("grad"), load("lap"), load("hess"),
                   params=spec.get("params", ()))


@jit(cache=True)
def _missing_hess(x, p, out):
    raise ValueError("this Custom energy was given no Hessian kernel")


# ---------------------------------------------------------------------------
# Specs and configs are data: names map through these explicit registries,
# never through attribute lookups or imports.
ENERGY_TYPES: dict[str, type] = {}
CONSTRUCTORS: dict[str, Callable] = {}


def register(cls: type, constructors: tuple[str, ...] = ()) -> type:
    """Make an Energy subclass (and its named classmethod constructors) reachable
    from specs and configs by name: ``"Name"`` and ``"Name.constructor"``."""
    if not (isinstance(cls, type) and issubclass(cls, Energy)):
        raise TypeError(f"only Energy subclasses can be registered, got {cls!r}")
    ENERGY_TYPES[cls.__name__] = cls
    for c in constructors:
        CONSTRUCTORS[f"{cls.__name__}.{c}"] = getattr(cls, c)
    return cls


class UnresolvedEnergyError(ValueError):
    """A spec that names user code (a :class:`Custom` energy) which was not allowed to load."""

    def __init__(self, message, spec=None):
        super().__init__(message)
        self.spec = spec


def _nearest(key, valid) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(d: dict, valid, where: str) -> None:
    """Unknown keys are an error that names each and the nearest valid one."""
    unknown = [k for k in d if k not in valid]
    if unknown:
        k = unknown[0]
        raise ValueError(f"{where}: unknown key {k!r}{_nearest(k, valid)}; valid keys: {sorted(valid)}")


def _call_checked(fn: Callable, kwargs: dict, where: str):
    """``fn(**kwargs)`` after checking the keywords against ``fn``'s signature, so a
    typo is an error naming the key instead of a TypeError from deep inside."""
    import inspect

    sig = inspect.signature(fn)
    names = [n for n, prm in sig.parameters.items() if prm.kind in (prm.POSITIONAL_OR_KEYWORD, prm.KEYWORD_ONLY)]
    _check_keys(kwargs, names, where)
    missing = [n for n, prm in sig.parameters.items() if n in names and prm.default is prm.empty and n not in kwargs]
    if missing:
        raise ValueError(f"{where}: missing the keys {missing}")
    try:
        return fn(**kwargs)
    except TypeError as exc:  # a value of the wrong kind (a table where a number belongs, ...)
        raise ValueError(f"{where}: {exc}") from None


def from_spec(spec: dict, *, allow_modules=()) -> Energy:
    """Rebuild an energy from :meth:`Energy.to_spec` output (a dict, as read from a
    file or a config).  Types come from :data:`ENERGY_TYPES` only.  A :class:`Custom`
    energy's kernels are imported only from modules listed in ``allow_modules``;
    otherwise :class:`UnresolvedEnergyError` says which modules it would need."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"an energy spec is a dict with a 'type' key, got {str(spec)[:200]}")
    kind = spec["type"]
    if kind == "unsaved":
        raise UnresolvedEnergyError(f"the energy {spec.get('repr', '?')} was not stored ({spec.get('reason', '')}); "
                                    "pass the energy itself to rebuild what needs it", spec)
    if not isinstance(kind, str) or kind not in ENERGY_TYPES:
        raise ValueError(f"unknown energy type {kind!r}{_nearest(kind, ENERGY_TYPES)}; known: {sorted(ENERGY_TYPES)}")
    cls = ENERGY_TYPES[kind]
    if hasattr(cls, "_from_spec"):
        try:
            return cls._from_spec(spec, allow_modules)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{kind} spec is malformed: {type(exc).__name__} {exc}") from None
    return _call_checked(cls, {k: v for k, v in spec.items() if k != "type"}, f"{kind} energy")


def spec_of(energy) -> dict:
    """``energy.to_spec()``, or for an energy that has none (Python callables, kernels in
    ``__main__``) a stand-in ``{"type": "unsaved", "repr", "dim", "reason"}``: files of
    such runs are still written, and reading them back asks for the energy itself."""
    try:
        return energy.to_spec()
    except ValueError as exc:
        return {"type": "unsaved", "repr": repr(energy), "dim": int(energy.dim), "reason": str(exc)}


def from_config(spec: dict) -> Energy:
    """An energy from a config table: a spec (:func:`from_spec`, no Custom energies)
    or a named constructor from :data:`CONSTRUCTORS` (``type = "GaussianMixture.ring"``)
    with its keyword arguments, checked against its signature."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"[energy] needs a 'type' key, got {str(spec)[:200]}")
    kind = spec["type"]
    if isinstance(kind, str) and kind in CONSTRUCTORS:
        return _call_checked(CONSTRUCTORS[kind], {k: v for k, v in spec.items() if k != "type"}, f"energy {kind}")
    if isinstance(kind, str) and kind not in ENERGY_TYPES:
        valid = sorted(ENERGY_TYPES) + sorted(CONSTRUCTORS)
        raise ValueError(f"unknown energy type {kind!r}{_nearest(kind, valid)}; known: {valid}")
    return from_spec(spec)


def custom_modules(spec) -> list[str]:
    """The modules whose kernels a spec (or an energy) names through :class:`Custom` parts:
    what a program that built the energy itself may pass on as ``allow_modules``."""
    if isinstance(spec, Energy):
        spec = spec.to_spec()
    found = set()

    def walk(s):
        if isinstance(s, dict):
            if s.get("type") == "Custom":
                found.update(str(s[k]).partition(":")[0] for k in ("value", "grad", "lap", "hess") if k in s)
            for v in s.values():
                walk(v)
        elif isinstance(s, list):
            for v in s:
                walk(v)
    walk(spec)
    return sorted(found)


register(Quadratic)
register(DoubleWell)
register(GaussianMixture, ("ring", "square_grid", "paper_A", "paper_B"))
register(Sum)
register(SoftMin)
register(Custom)


# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfinementReport:
    """Result of :func:`check_confining`."""

    ok: bool
    boundary_mass: float  # Gibbs mass within two cells of the walls of the grid
    grows: bool           # U grows faster than (d+1) T log|x| along every probed ray
    min_growth: float     # smallest U(8R x) - U(4R x) over probed unit directions x
    message: str


def check_confining(energy: Energy, grid, temperature: float = 1.0, *, tol: float = 1e-6,
                    n_directions: int = 64) -> ConfinementReport:
    """Is ``exp(-U/T)`` normalisable, and does ``grid`` hold it?

    Two checks.  On the box: the discrete Gibbs mass within two cells of the
    walls must be below ``tol`` (otherwise the walls, not ``U``, shape the
    answer).  On ``R^d`` (a heuristic, since no finite probe proves
    integrability): along the coordinate axes, the diagonals and random
    directions, ``U(8R u) - U(4R u)`` must exceed ``(d + 1) T log 2`` with ``R``
    the box's half-diagonal, i.e. ``U`` grows faster than ``(d+1) T log|x|``.
    """
    T = positive_float(temperature, "temperature")
    d = energy.dim
    if d != grid.ndim:
        raise ValueError(f"energy has dimension {d} but grid has {grid.ndim}")
    rho = grid.gibbs(energy, T)
    bmass = grid.mass_near_wall(rho, 2)
    rng = np.random.default_rng(0)
    dirs = [np.eye(d), -np.eye(d), rng.standard_normal((n_directions, d))]
    if d > 1:
        dirs.append(np.array(np.meshgrid(*[[-1.0, 1.0]] * d)).reshape(d, -1).T)
    u = np.concatenate(dirs)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    lo, hi = np.array(grid.bounds).T
    R = 0.5 * np.linalg.norm(hi - lo) + np.linalg.norm(0.5 * (hi + lo))
    with np.errstate(over="ignore", invalid="ignore"):
        growth = energy.value(8 * R * u) - energy.value(4 * R * u)
    min_growth = float(np.min(growth))
    grows = bool(np.all(np.isfinite(growth))) and min_growth > (d + 1) * T * math.log(2)
    msgs = []
    if not grows:
        msgs.append(f"U does not grow fast enough at infinity (min U(8Ru)-U(4Ru) = {min_growth:.3g} "
                    f"<= (d+1) T log 2 = {(d + 1) * T * math.log(2):.3g}): exp(-U/T) is likely not "
                    "normalisable on R^d, and only the box makes it a probability law")
    if bmass > tol:
        msgs.append(f"the Gibbs law puts mass {bmass:.3g} > {tol:g} within two cells of the walls of "
                    f"the box {grid.bounds}: enlarge the box")
    ok = grows and bmass <= tol
    return ConfinementReport(ok, bmass, grows, min_growth, "; ".join(msgs) if msgs else "confining")


from .callables import CallableEnergy, from_callable, from_jax, from_torch  # noqa: E402  (it subclasses Energy)
from .data_energies import KDE  # noqa: E402  (registered with the energies)
