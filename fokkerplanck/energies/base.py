"""The energy contract: :class:`Energy`, its numba :class:`Kernels`, the compiled loops
over points that every kernel set shares, the registry through which specs name
energy types, and the algebra that makes sums, scalings and soft-minima of energies
energies again.

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
energies again with kernels of their own.
"""
from __future__ import annotations

import inspect
import math
import warnings
from typing import Callable, NamedTuple

import numpy as np
from numba import prange, types
from scipy.special import logsumexp

from fokkerplanck._core.jit import array_type, call_with, closure_jit, function_type, jit, kernel_input
from fokkerplanck._core.validate import (
    check_keys,
    finite_array,
    nearest,
    points,
    positive_float,
    positive_int,
)
from fokkerplanck.energies.confinement import check_confining

MAX_COMPONENTS = 1_000_000

COMPILED_MIN_POINTS = 4096  # from this many points, GaussianMixture value and grad run compiled kernels


class NoKernelsError(NotImplementedError):
    """The energy (or a term of it) is given by Python callables and has no numba kernels."""


class NonFiniteEnergyError(ValueError):
    """A callable returned NaN (or a non-finite gradient) at finite points; ``rows``
    are the offending rows of the evaluated batch."""

    def __init__(self, message, rows):
        super().__init__(message)
        self.rows = np.asarray(rows)


def lenient(fn, X) -> np.ndarray:
    """``fn(X)`` with NaN in the rows a callable refuses (:class:`NonFiniteEnergyError`):
    for summaries over particles, some of which were frozen where the callable fails."""
    live = np.ones(X.shape[0], dtype=bool)
    while True:
        idx = np.flatnonzero(live)
        try:
            part = fn(X[idx]) if idx.size else None
            break
        except NonFiniteEnergyError as exc:
            live[idx[exc.rows]] = False
    if part is None:
        return np.full(X.shape[0], np.nan)
    out = np.full((X.shape[0],) + np.shape(part)[1:], np.nan)
    out[idx] = part
    return out


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

    def max_curvature(self, x) -> float:
        """The largest eigenvalue of ``hess U`` over the points (N, d): what limits an explicit
        step (``dt * max_curvature < 2``).  Energies with a block structure override it to
        avoid the dense (N, d, d) Hessian."""
        X, _ = points(x, self.dim)
        return float(np.linalg.eigvalsh(self._hess(X)).max())

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
        (:mod:`fokkerplanck.energies.callables`): particles then take the vectorised path."""
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
            return lenient(self._lap, X), np.sum(lenient(self._grad, X) ** 2, axis=1)
        return _lap_grad2_loop(self.kernels)(np.ascontiguousarray(X), self.params)

    @property
    def has_hessian(self) -> bool:
        """False when a user-defined part gave no Hessian kernel."""
        return all(t.has_hessian for t in getattr(self, "terms", ()))

    # -- algebra -----------------------------------------------------------------
    # ``U + V``, ``U - V``, ``a * U``, ``-U`` and ``U + c`` (a constant shifts U, not
    # its Gibbs law) are energies again: one flattened :class:`Sum` node.
    def _term(self, other):
        if isinstance(other, Energy):
            return other
        if isinstance(other, (int, float, np.integer, np.floating)) and not isinstance(other, bool):
            return Constant(self.dim, float(other))
        return None

    def __add__(self, other):
        t = self._term(other)
        return NotImplemented if t is None else Sum([1.0, 1.0], [self, t])

    __radd__ = __add__

    def __sub__(self, other):
        t = self._term(other)
        return NotImplemented if t is None else Sum([1.0, -1.0], [self, t])

    def __rsub__(self, other):
        t = self._term(other)
        return NotImplemented if t is None else Sum([-1.0, 1.0], [self, t])

    def __mul__(self, a):
        if isinstance(a, Energy) or not np.isscalar(a) or isinstance(a, (str, bytes, bool)):
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
# Compiled loops over points for any kernel set: one compiled loop each, the energy's
# kernels passed to it by address (fokkerplanck._core.jit.call_with)
_X1 = array_type(np.float64, 1)
_VALUE = function_type(types.float64, _X1, _X1)          # value(x, p), lap(x, p)
_GRAD = function_type(types.void, _X1, _X1, _X1)         # grad(x, p, out)
_HESS = function_type(types.void, _X1, _X1, array_type(np.float64, 2))  # hess(x, p, out)


@jit(cache=True, parallel=True)
def _all_at(value, grad, lap, hess, with_hess, X, p):
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


@jit(cache=True, parallel=True)
def _value_at(value, X, p):
    v = np.empty(X.shape[0])
    for i in prange(X.shape[0]):
        v[i] = value(X[i], p)
    return v


@jit(cache=True, parallel=True)
def _grad_at(grad, X, p):
    g = np.empty(X.shape)
    for i in prange(X.shape[0]):
        grad(X[i], p, g[i])
    return g


@jit(cache=True, parallel=True)
def _lap_grad2_at(grad, lap, X, p):
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


def _points(loop, fns, fntypes, *consts):
    """``run(X, p)``: the compiled ``loop`` over the rows of ``X`` with the kernels ``fns``."""
    def run(X, p):
        return call_with(loop, fns, fntypes, *consts, kernel_input(np.asarray(X, dtype=np.float64)),
                         kernel_input(np.asarray(p, dtype=np.float64)))
    return run


def _kernel_loop(k: Kernels, with_hess: bool = True):
    """Value, gradient, Laplacian and (``with_hess``) Hessian at points (N, d), in parallel."""
    return _points(_all_at, tuple(k), (_VALUE, _GRAD, _VALUE, _HESS), bool(with_hess))


def _value_loop(k: Kernels):
    """``U`` at points (N, d) by the compiled one-point kernel, in parallel."""
    return _points(_value_at, (k.value,), (_VALUE,))


def _grad_loop(k: Kernels):
    """``grad U`` at points (N, d) by the compiled one-point kernel, in parallel."""
    return _points(_grad_at, (k.grad,), (_GRAD,))


def _lap_grad2_loop(k: Kernels):
    """``lap U`` and ``|grad U|^2`` at points (N, d), in parallel."""
    return _points(_lap_grad2_at, (k.grad, k.lap), (_GRAD, _VALUE))


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


def _call_checked(fn: Callable, kwargs: dict, where: str):
    """``fn(**kwargs)`` after checking the keywords against ``fn``'s signature, so a
    typo is an error naming the key instead of a TypeError from deep inside."""
    sig = inspect.signature(fn)
    names = [n for n, prm in sig.parameters.items() if prm.kind in (prm.POSITIONAL_OR_KEYWORD, prm.KEYWORD_ONLY)]
    check_keys(kwargs, names, where)
    missing = [n for n, prm in sig.parameters.items() if n in names and prm.default is prm.empty and n not in kwargs]
    if missing:
        raise ValueError(f"{where}: missing the keys {missing}")
    try:
        return fn(**kwargs)
    except TypeError as exc:  # a value of the wrong kind (a table where a number belongs, ...)
        raise ValueError(f"{where}: {exc}") from None


def _from_spec(spec: dict, *, allow_modules=()) -> Energy:
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
        raise ValueError(f"unknown energy type {kind!r}{nearest(kind, ENERGY_TYPES)}; known: {sorted(ENERGY_TYPES)}")
    cls = ENERGY_TYPES[kind]
    if hasattr(cls, "_from_spec"):
        try:
            return cls._from_spec(spec, allow_modules)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{kind} spec is malformed: {type(exc).__name__} {exc}") from None
    return _call_checked(cls, {k: v for k, v in spec.items() if k != "type"}, f"{kind} energy")

MAX_SPEC_DEPTH = 200


def _depth(v, limit: int) -> int:
    """Nesting depth of dicts and lists, counted without recursion (stops past ``limit``)."""
    stack, deepest = [(v, 1)], 0
    while stack:
        x, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            break
        if isinstance(x, dict):
            stack.extend((y, d + 1) for y in x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend((y, d + 1) for y in x)
    return deepest


def from_spec(spec: dict, *, allow_modules=()) -> Energy:
    """Rebuild an energy from :meth:`Energy.to_spec` output (a dict, as read from a
    file or a config).  Types come from :data:`ENERGY_TYPES` only.  A :class:`Custom`
    energy's kernels are imported only from modules listed in ``allow_modules``;
    otherwise :class:`UnresolvedEnergyError` says which modules it would need.  A spec
    nested deeper than :data:`MAX_SPEC_DEPTH` is refused before anything is built."""
    if _depth(spec, MAX_SPEC_DEPTH) > MAX_SPEC_DEPTH:
        raise ValueError(f"an energy spec nested deeper than {MAX_SPEC_DEPTH} levels is refused")
    return _from_spec(spec, allow_modules=allow_modules)



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


@jit(cache=True)
def _const_value(x, p):
    return p[0]


_CONST_KERNELS = Kernels(_const_value, _zero_grad, _zero_value, _zero_hess)


class Constant(Energy):
    """``U(x) = c`` on ``R^d``: what ``U + c`` adds to an energy.  It shifts ``U``
    and leaves every Gibbs law, flow and KL unchanged (``log Z`` moves by ``-c/T``)."""

    def __init__(self, dim: int, c: float = 0.0):
        self.dim = positive_int(dim, "dim")
        self.params = [finite_array(c, "c", shape=()).item()]

    @property
    def c(self) -> float:
        return float(self.params[0])

    def _build_kernels(self):
        return _CONST_KERNELS

    def _value(self, X):
        return np.full(X.shape[0], self.c)

    def _grad(self, X):
        return np.zeros_like(X)

    def _lap(self, X):
        return np.zeros(X.shape[0])

    def _hess(self, X):
        return np.zeros((X.shape[0], self.dim, self.dim))

    def to_spec(self):
        return {"type": "Constant", "dim": self.dim, "c": self.c}

    def __repr__(self):
        return f"{self.c:g}"


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
        shift = sum(c * t.c for c, t in zip(self.coefs, self.terms) if isinstance(t, Constant))
        rest = [(c, t) for c, t in zip(self.coefs, self.terms) if not isinstance(t, Constant)]
        if len(rest) == 1 and rest[0][0] > 0:  # c U + k: log Z_U(T / c) - k / T
            T = positive_float(temperature, "temperature")
            return rest[0][1].log_partition(T / rest[0][0]) - shift / T
        return super().log_partition(temperature)

    def to_spec(self):
        return {"type": "Sum", "terms": [{"coef": float(c), "energy": t.to_spec()}
                                         for c, t in zip(self.coefs, self.terms)]}

    @classmethod
    def _from_spec(cls, spec, allow_modules=()):
        check_keys(spec, {"type", "terms"}, "Sum spec")
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
        check_keys(spec, {"type", "energies"}, "SoftMin spec")
        return cls([from_spec(s, allow_modules=allow_modules) for s in spec["energies"]])


def softmin(*energies) -> SoftMin:
    """Disjunction ``-log(sum_i e^{-U_i})`` of two or more energies."""
    return SoftMin(energies)


register(Sum)
register(SoftMin)
register(Constant)
