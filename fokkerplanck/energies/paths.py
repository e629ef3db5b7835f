"""Density homotopies and time-dependent energies ``U(x, t)``.

:class:`VPFBHomotopy` is the density homotopy of Variational Potential Flow Bayes: a
Gaussian prior ``q = N(0, w^2 I)``, a Gaussian likelihood ``N(xbar; x, v^2 I)``, and
the conditional log-homotopy ``rho(x | xbar, t) ~ q(x) N(xbar; x, v^2 I)^t``,
``t in [0, 1]``.  Completing the square, the conditional law is Gaussian,

    rho(x | xbar, t) = N(x; mu(t) xbar, sigma(t)^2 I),
    mu(t) = t w^2 / (v^2 + t w^2),   sigma(t)^2 = w^2 v^2 / (v^2 + t w^2),

so the prior at ``t = 0`` and the posterior at ``t = 1``.  That is the linear schedule of
the general log-homotopy ``alpha(t) log q(x) + beta(t) log p(xbar | x)``
(:class:`VPFBSchedule`), whose kernel is ``N(mu xbar, sigma^2 I)`` with

    mu(t) = beta w^2 / (alpha v^2 + beta w^2) = sigmoid(log(beta w^2 / (alpha v^2))),
    sigma(t)^2 = w^2 v^2 / (alpha v^2 + beta w^2) = v^2 mu / beta;

optimal-transport flow matching (``alpha = w^2 / (1 - t)``, ``beta = v^2 t / (1 - t)^2``)
gives ``mu = t``, ``sigma = 1 - t``.  Every quantity below is exact for every schedule, and
from ``t_max`` on the homotopy is frozen: its law is the Boltzmann equilibrium of the steady
energy :meth:`VPFBHomotopy.tail_energy`.  For data ``xbar_1..xbar_M``
the marginal homotopy ``rho_bar(x, t) = (1/M) sum_j N(x; mu(t) xbar_j, sigma(t)^2 I)``
is a Gaussian mixture with moving means and a shrinking common variance; its time
derivative is exact (:meth:`VPFBHomotopy.dt_density`).  For one data point the potential
``Phi`` of the homotopy-matching flow ``dx/dt = grad Phi`` is affine-quadratic in closed form
(:meth:`VPFBHomotopy.gaussian_velocity`).

:class:`LinearHomotopy` is ``U_s = (1 - s) U0 + s U1``; both are :class:`EnergyPath`:
``path.at(t)`` is the (static) energy at time ``t``, with numba kernels when the parts
have them, so particle integrators and grid solvers take it piecewise in time.
:func:`schedule` checks an annealing schedule (times in [0, 1], increasing).

Kernels with ``t``.  A path with numba kernels also gives :attr:`EnergyPath.path_kernels`,
the static kernel contract of :mod:`fokkerplanck.energies` plus the time::

    value(x, t, q) -> float        grad(x, t, q, out) -> None
    lap(x, t, q) -> float          hess(x, t, q, out) -> None

with the flat parameters ``q = path.path_params``; solvers that need the energy between
steps (the Lagrangian characteristics of :mod:`fokkerplanck.flows.lagrangian`, at every Runge-Kutta
stage time) call these.  They are written out for :class:`VPFBHomotopy`, composed for
:class:`LinearHomotopy`, :class:`ConstantPath` and sums of paths (``path1 + path2``,
``a * path``, ``path + U``), and user-written for :class:`KernelPath` (numba kernels with
``t``; its ``at(t)`` is a static energy whose last parameter is ``t``, so every static
solver and particle kernel runs it unchanged).  :class:`CallablePath` takes vectorised
NumPy callables ``f(X, t)`` (no kernels: particles take the vectorised path).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from scipy.special import logsumexp

from fokkerplanck._core.jit import closure_jit, jit
from fokkerplanck._core.validate import finite_array, point_set, points, positive_float
from fokkerplanck.energies.base import _ZERO_KERNELS, Energy, NoKernelsError, Sum
from fokkerplanck.energies.callables import from_callable
from fokkerplanck.energies.custom import Custom
from fokkerplanck.energies.families import GaussianMixture

__all__ = ["EnergyPath", "VPFBHomotopy", "VPFBSchedule", "LinearHomotopy", "ConstantPath", "SumPath", "KernelPath", "CallablePath",
           "ScheduledPath", "PathKernels", "schedule", "check_time"]


class PathKernels(NamedTuple):
    """numba kernels of a path on one point at time ``t`` (module docstring)."""

    value: Callable
    grad: Callable
    lap: Callable
    hess: Callable


def check_time(t, name: str = "t") -> float:
    """A homotopy time: a finite number in [0, 1]."""
    if isinstance(t, (str, bytes, bool)):
        raise ValueError(f"{name} must be a number in [0, 1], got {t!r}")
    v = float(t)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} = {t!r} is outside the homotopy's [0, 1]")
    return v


def schedule(ts, name: str = "schedule") -> np.ndarray:
    """An annealing schedule: times in [0, 1], strictly increasing (non-monotone schedules
    would run the homotopy backwards: an error naming the first offending pair)."""
    s = finite_array(ts, name, ndim=1)
    if s.size < 1:
        raise ValueError(f"{name} is empty")
    if s.min() < 0 or s.max() > 1:
        raise ValueError(f"{name} leaves [0, 1]: min {s.min():g}, max {s.max():g}")
    bad = np.flatnonzero(np.diff(s) <= 0)
    if bad.size:
        i = bad[0]
        raise ValueError(f"{name} is not increasing: entry {i + 1} ({s[i + 1]:g}) follows {s[i]:g}")
    return s


class EnergyPath:
    """A time-dependent energy ``U(x, t)``, ``t in [0, 1]``: :meth:`at` gives the energy at ``t``.

    Subclasses with numba kernels implement :meth:`_build_path_kernels` and set
    :attr:`path_params`; paths add (``path1 + path2``, ``path + U`` with a static energy)
    and scale (``a * path``) like energies."""

    dim: int
    path_params: np.ndarray = np.zeros(0)

    def at(self, t) -> Energy:
        raise NotImplementedError

    def value(self, x, t):
        return self.at(t).value(x)

    def grad(self, x, t):
        return self.at(t).grad(x)

    def laplacian(self, x, t):
        return self.at(t).laplacian(x)

    def param_rows(self, ts) -> np.ndarray | None:
        """``at(t).params`` for every ``t`` of ``ts`` as rows, computed without building the
        energies, or None where a path has no such shortcut (the annealed Langevin then builds
        ``at(t)`` step by step)."""
        return None

    # -- kernels with t --------------------------------------------------------
    _components: tuple = ()   # what a composed path is made of (energies or paths); () for a path of its own

    @property
    def has_kernels(self) -> bool:
        """True when every part has numba kernels (a path of its own says so itself)."""
        return bool(self._components) and all(p.has_kernels for p in self._components)

    @property
    def path_kernels(self) -> PathKernels:
        """The kernels ``f(x, t, q, ...)`` (module docstring); :class:`NoKernelsError` for a path of
        Python callables."""
        if not self.has_kernels:
            raise NoKernelsError(f"{self!r} has no numba kernels with t (a path of Python callables); "
                                 "step it piecewise in time through path.at(t)")
        return self._build_path_kernels()

    def _build_path_kernels(self) -> PathKernels:
        raise NotImplementedError

    def eval_path_kernels(self, x, t) -> dict:
        """The four path kernels at points (N, d) and time ``t`` in a compiled loop (for tests:
        they must equal ``at(t)``'s methods)."""
        X, _ = points(x, self.dim)
        v, g, lp, h = _path_loop(self.path_kernels, self.has_hessian)(X, check_time(t), self.path_params)
        return {"value": v, "grad": g, "lap": lp, "hess": h if self.has_hessian else None}

    @property
    def has_hessian(self) -> bool:
        """False when a user-written part gave no Hessian kernel."""
        return all(p.has_hessian for p in self._components)

    # -- algebra -----------------------------------------------------------------
    def __add__(self, other):
        if isinstance(other, (Energy, EnergyPath)):
            return SumPath([1.0, 1.0], [self, other])
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, (Energy, EnergyPath)):
            return SumPath([1.0, -1.0], [self, other])
        return NotImplemented

    def __mul__(self, a):
        if isinstance(a, (Energy, EnergyPath)) or not np.isscalar(a):
            return NotImplemented
        return SumPath([float(a)], [self])

    __rmul__ = __mul__


_PATH_LOOPS: dict = {}
_COMPOSED: dict = {}


def _path_loop(k: PathKernels, with_hess: bool):
    key = (tuple(id(f) for f in k), with_hess)
    if key not in _PATH_LOOPS:
        value, grad, lap, hess = k

        @closure_jit
        def loop(X, t, q):
            n, d = X.shape
            v, g, lp, h = np.empty(n), np.empty((n, d)), np.empty(n), np.zeros((n, d, d))
            for i in range(n):
                v[i] = value(X[i], t, q)
                grad(X[i], t, q, g[i])
                lp[i] = lap(X[i], t, q)
                if with_hess:
                    hess(X[i], t, q, h[i])
            return v, g, lp, h

        _PATH_LOOPS[key] = (k, loop)
    return _PATH_LOOPS[key][1]


def _memo(tag, parts, build):
    key = (tag, *(tuple(id(f) for f in k) for k in parts))
    if key not in _COMPOSED:
        _COMPOSED[key] = (parts, build(*parts))  # keep the parts alive: ids stay unique
    return _COMPOSED[key][1]


def _static_path_kernels(k) -> PathKernels:
    """A static energy's kernels as path kernels (``t`` ignored)."""
    v0, g0, l0, h0 = k

    @closure_jit
    def value(x, t, q):
        return v0(x, q)

    @closure_jit
    def grad(x, t, q, out):
        g0(x, q, out)

    @closure_jit
    def lap(x, t, q):
        return l0(x, q)

    @closure_jit
    def hess(x, t, q, out):
        h0(x, q, out)

    return PathKernels(value, grad, lap, hess)


def _sum_path_kernels(k1: PathKernels, k2: PathKernels) -> PathKernels:
    """``q = [n1, a1, b1, a2, b2, q1..., q2...]``: ``c1(t) U1(x, t) + c2(t) U2(x, t)`` with
    affine coefficients ``c_i = a_i + b_i t`` (constant in sums of paths; ``1 - t`` and ``t`` in
    the linear homotopy)."""
    v1, g1, l1, h1 = k1
    v2, g2, l2, h2 = k2

    @closure_jit
    def value(x, t, q):
        n1 = int(q[0])
        return (q[1] + q[2] * t) * v1(x, t, q[5:5 + n1]) + (q[3] + q[4] * t) * v2(x, t, q[5 + n1:])

    @closure_jit
    def grad(x, t, q, out):
        n1 = int(q[0])
        tmp = np.empty_like(out)
        g1(x, t, q[5:5 + n1], out)
        g2(x, t, q[5 + n1:], tmp)
        c1, c2 = q[1] + q[2] * t, q[3] + q[4] * t
        for i in range(out.shape[0]):
            out[i] = c1 * out[i] + c2 * tmp[i]

    @closure_jit
    def lap(x, t, q):
        n1 = int(q[0])
        return (q[1] + q[2] * t) * l1(x, t, q[5:5 + n1]) + (q[3] + q[4] * t) * l2(x, t, q[5 + n1:])

    @closure_jit
    def hess(x, t, q, out):
        n1 = int(q[0])
        tmp = np.empty_like(out)
        h1(x, t, q[5:5 + n1], out)
        h2(x, t, q[5 + n1:], tmp)
        c1, c2 = q[1] + q[2] * t, q[3] + q[4] * t
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j] = c1 * out[i, j] + c2 * tmp[i, j]

    return PathKernels(value, grad, lap, hess)


def as_path(U) -> "EnergyPath":
    """``U`` itself if a path, a :class:`ConstantPath` if a static energy."""
    if isinstance(U, EnergyPath):
        return U
    if isinstance(U, Energy):
        return ConstantPath(U)
    raise TypeError(f"expected an Energy or an EnergyPath, got {type(U).__name__}")


class ConstantPath(EnergyPath):
    """A static energy as a path: ``U(x, t) = U(x)``."""

    def __init__(self, U: Energy):
        if not isinstance(U, Energy):
            raise TypeError(f"ConstantPath needs an Energy, got {type(U).__name__}")
        self.U, self.dim, self.path_params = U, U.dim, U.params
        self._components = (U,)

    def at(self, t) -> Energy:
        check_time(t)
        return self.U

    def _build_path_kernels(self):
        return _memo("static", (self.U.kernels,), _static_path_kernels)

    def __repr__(self):
        return f"ConstantPath({self.U!r})"


class SumPath(EnergyPath):
    """``sum_i c_i U_i(x, t)`` (static energies enter as :class:`ConstantPath`)."""

    def __init__(self, coefs, terms):
        terms = [as_path(t) for t in terms]
        coefs = finite_array(coefs, "coefs", shape=(len(terms),))
        if not terms:
            raise ValueError("SumPath needs at least one term")
        dims = {t.dim for t in terms}
        if len(dims) != 1:
            raise ValueError(f"cannot combine paths of different dimensions {sorted(dims)}")
        self.coefs, self.terms, self.dim = coefs, terms, dims.pop()
        self._components = tuple(terms)
        q = np.concatenate([[len(terms[0].path_params), coefs[0], 0.0, 0.0, 0.0], terms[0].path_params])
        for c, t in zip(coefs[1:], terms[1:]):
            q = np.concatenate([[len(q), 1.0, 0.0, c, 0.0], q, t.path_params])
        self.path_params = q

    def at(self, t) -> Energy:
        return Sum(self.coefs, [p.at(t) for p in self.terms])

    def _build_path_kernels(self):
        zero = _memo("static", (_ZERO_KERNELS,), _static_path_kernels)  # the fold's empty slot (weight 0)
        k = _memo("sum", (self.terms[0].path_kernels, zero), _sum_path_kernels)
        for p in self.terms[1:]:
            k = _memo("sum", (k, p.path_kernels), _sum_path_kernels)
        return k

    def __repr__(self):
        return " + ".join(f"{c:g}*{t!r}" for c, t in zip(self.coefs, self.terms))


@jit(cache=True)
def _interp(t, q, nk):
    """The piecewise-linear schedule ``s(t)`` through the knots ``q[1:1+nk]`` (times) and
    ``q[1+nk:1+2nk]`` (values)."""
    if t <= q[1]:
        return q[1 + nk]
    for i in range(1, nk):
        if t <= q[1 + i]:
            w = (t - q[i]) / (q[1 + i] - q[i])
            return (1.0 - w) * q[nk + i] + w * q[1 + nk + i]
    return q[2 * nk]


def _scheduled_kernels(k: PathKernels) -> PathKernels:
    """``q = [nk, knot times..., knot values..., q_path...]``: ``U(x, s(t))``."""
    v0, g0, l0, h0 = k

    @closure_jit
    def value(x, t, q):
        nk = int(q[0])
        return v0(x, _interp(t, q, nk), q[1 + 2 * nk:])

    @closure_jit
    def grad(x, t, q, out):
        nk = int(q[0])
        g0(x, _interp(t, q, nk), q[1 + 2 * nk:], out)

    @closure_jit
    def lap(x, t, q):
        nk = int(q[0])
        return l0(x, _interp(t, q, nk), q[1 + 2 * nk:])

    @closure_jit
    def hess(x, t, q, out):
        nk = int(q[0])
        h0(x, _interp(t, q, nk), q[1 + 2 * nk:], out)

    return PathKernels(value, grad, lap, hess)


class ScheduledPath(EnergyPath):
    """An annealing schedule on a path: ``U(x, t) = path(x, s(t))`` with ``s`` piecewise linear
    through the knots ``(times[i], values[i])``, both checked by :func:`schedule` (in [0, 1],
    increasing, so the path is never run backwards; ``values`` may start above 0 or stop below
    1).  For example a geometric schedule ``values = (b**times - 1) / (b - 1)`` spends more
    time near the start of the path."""

    def __init__(self, path: EnergyPath, times, values):
        self.path, self.dim = as_path(path), as_path(path).dim
        self._components = (self.path,)
        self.times, self.values = schedule(times, "schedule times"), schedule(values, "schedule values")
        if self.times.shape != self.values.shape or self.times.size < 2:
            raise ValueError(f"a schedule needs as many times as values (at least 2), got {self.times.size} and "
                             f"{self.values.size}")

    def s(self, t) -> float:
        return float(np.interp(check_time(t), self.times, self.values))

    def at(self, t) -> Energy:
        return self.path.at(self.s(t))

    def param_rows(self, ts):
        return self.path.param_rows(np.interp(np.asarray(ts, dtype=float), self.times, self.values))

    @property
    def path_params(self):
        return np.concatenate([[self.times.size], self.times, self.values, self.path.path_params])

    def _build_path_kernels(self):
        return _memo("scheduled", (self.path.path_kernels,), _scheduled_kernels)

    def __repr__(self):
        return f"ScheduledPath({self.path!r}, {self.times.size} knots)"


def _frozen_kernels(k: PathKernels):
    """Static kernels of a :class:`KernelPath` frozen at ``t``: ``p = [q..., t]``."""
    uv, ug, ul, uh = k

    @closure_jit
    def value(x, p):
        n = p.shape[0] - 1
        return uv(x, p[n], p[:n])

    @closure_jit
    def grad(x, p, out):
        n = p.shape[0] - 1
        ug(x, p[n], p[:n], out)

    @closure_jit
    def lap(x, p):
        n = p.shape[0] - 1
        return ul(x, p[n], p[:n])

    @closure_jit
    def hess(x, p, out):
        n = p.shape[0] - 1
        uh(x, p[n], p[:n], out)

    return value, grad, lap, hess


@jit(cache=True)
def _missing_path_hess(x, t, q, out):
    raise ValueError("this KernelPath was given no Hessian kernel")


_FIXED_PATH: dict = {}


def _path_returning_float(f):
    @closure_jit
    def wrapped(x, t, q):
        return float(f(x, t, q))
    return wrapped


def _path_returning_nothing(f):
    @closure_jit
    def wrapped(x, t, q, out):
        f(x, t, q, out)
    return wrapped


def _fixed_path_signatures(k: PathKernels) -> PathKernels:
    """A user's path kernels behind wrappers of fixed signatures (``value``, ``lap`` return a
    float64; ``grad``, ``hess`` nothing), as :func:`~fokkerplanck.energies.custom.fixed_signatures`."""
    key = tuple(id(f) for f in k)
    if key not in _FIXED_PATH:
        wrapped = PathKernels(_path_returning_float(k.value), _path_returning_nothing(k.grad),
                              _path_returning_float(k.lap), _path_returning_nothing(k.hess))
        _FIXED_PATH[key] = (k, wrapped)
    return _FIXED_PATH[key][1]


class KernelPath(EnergyPath):
    """A user-written time-dependent energy: numba kernels ``value(x, t, q)``,
    ``grad(x, t, q, out)``, ``lap(x, t, q)`` and optionally ``hess(x, t, q, out)`` (module
    docstring), with parameters ``q``.  ``at(t)`` is a :class:`~fokkerplanck.energies.Custom`
    energy with parameters ``[q..., t]``."""

    def __init__(self, dim: int, value, grad, lap, hess=None, params=()):
        for name, f in (("value", value), ("grad", grad), ("lap", lap), ("hess", hess)):
            if f is not None and not hasattr(f, "py_func"):
                raise ValueError(f"{name} must be a numba.njit-compiled function f(x, t, q, ...), got {f!r}")
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.path_params = finite_array(np.atleast_1d(np.asarray(params, dtype=float)) if len(params) else np.zeros(0),
                                        "params")
        self._has_hess = hess is not None
        self._value_fn = value
        self._k = _fixed_path_signatures(PathKernels(value, grad, lap,
                                                     hess if hess is not None else _missing_path_hess))

    @property
    def has_kernels(self) -> bool:
        return True

    @property
    def has_hessian(self) -> bool:
        return self._has_hess

    def _build_path_kernels(self):
        return self._k

    def param_rows(self, ts) -> np.ndarray:
        """``at(t).params`` for every ``t`` of ``ts`` as rows: ``[q..., t]``."""
        ts = np.asarray(ts, dtype=float)
        return np.column_stack([np.broadcast_to(self.path_params, (ts.size, self.path_params.size)), ts])

    def at(self, t) -> Custom:
        v, g, lp, h = _memo("frozen", (self._k,), _frozen_kernels)
        return Custom(self.dim, v, g, lp, h if self._has_hess else None,
                      params=np.append(self.path_params, check_time(t)))

    def __repr__(self):
        return f"KernelPath(dim={self.dim}, {self._value_fn.py_func.__qualname__})"


class CallablePath(EnergyPath):
    """A time-dependent energy from vectorised NumPy callables ``value(X, t)``,
    ``grad(X, t)``, ``lap(X, t)`` on points (N, d); missing derivatives by finite differences
    as :func:`~fokkerplanck.energies.from_callable`.  No numba kernels: ``at(t)`` is a
    :class:`~fokkerplanck.energies.callables.CallableEnergy` (particles take the vectorised path)."""

    def __init__(self, value, grad=None, lap=None, *, dim: int, name: str | None = None):
        for nm, f in (("value", value), ("grad", grad), ("lap", lap)):
            if f is not None and not callable(f):
                raise ValueError(f"{nm} must be callable f(X, t), got {f!r}")
        self.dim = int(dim)
        self.name = name or getattr(value, "__qualname__", "U")
        self._f = (value, grad, lap)

    def at(self, t):
        s = check_time(t)
        v, g, lp = self._f

        def bind(f):
            return None if f is None else (lambda X: f(X, s))
        return from_callable(bind(v), bind(g), bind(lp), dim=self.dim, name=f"{self.name}(t={s:g})")

    def __repr__(self):
        return f"CallablePath({self.name}, dim={self.dim})"


class LinearHomotopy(EnergyPath):
    """``U_s = (1 - s) U0 + s U1`` (kernels shared across ``s``: only the coefficients change)."""

    def __init__(self, U0: Energy, U1: Energy):
        if U0.dim != U1.dim:
            raise ValueError(f"U0 has dimension {U0.dim} but U1 has {U1.dim}")
        self.U0, self.U1, self.dim = U0, U1, U0.dim
        self._components = (U0, U1)

    def at(self, t) -> Energy:
        s = check_time(t)
        return Sum([1.0 - s, s], [self.U0, self.U1])

    @property
    def path_params(self):
        """The affine sum's layout: ``c0 = 1 - t``, ``c1 = t``."""
        return np.concatenate([[len(self.U0.params), 1.0, -1.0, 0.0, 1.0], self.U0.params, self.U1.params])

    def _build_path_kernels(self):
        k0, k1 = (_memo("static", (U.kernels,), _static_path_kernels) for U in (self.U0, self.U1))
        return _memo("sum", (k0, k1), _sum_path_kernels)

    def __repr__(self):
        return f"LinearHomotopy({self.U0!r} -> {self.U1!r})"


# -- the VPFB marginal homotopy's kernels ------------------------------------------------
# q = [schedule kind, schedule parameter, t_max, w^2, v^2, data (M x d, row-major)]
_VH = 5                     # header length of q
_LINEAR, _OT_FM, _GEOMETRIC = 0, 1, 2   # the schedules with kernels (VPFBSchedule.kind)


@jit(cache=True)
def _vpfb_alpha_beta(kind, r, w2, v2, t):
    """``(alpha, beta, alpha', beta')`` of the closed-form schedules at ``t``."""
    if kind == 1:      # optimal-transport flow matching
        u = 1.0 - t
        return w2 / u, v2 * t / (u * u), w2 / (u * u), v2 * (1.0 + t) / (u * u * u)
    if kind == 2:      # geometric: beta = (r^t - 1) / (r - 1)
        return 1.0, math.expm1(t * math.log(r)) / (r - 1.0), 0.0, math.exp(t * math.log(r)) * math.log(r) / (r - 1.0)
    return 1.0, t, 0.0, 1.0


@jit(cache=True)
def _vpfb_mu_s2(t, q):
    """``(mu, sigma^2)`` at ``t`` (frozen from ``t_max`` on): ``mu = beta w^2 / D``,
    ``sigma^2 = w^2 v^2 / D`` with ``D = alpha v^2 + beta w^2``."""
    w2, v2 = q[3], q[4]
    a, b, _, _ = _vpfb_alpha_beta(int(q[0]), q[1], w2, v2, min(t, q[2]))
    den = a * v2 + b * w2
    return b * w2 / den, w2 * v2 / den


@jit(cache=True)
def _vpfb_pass(x, t, q, ybar):
    """One point: ``(log sum_j exp(l_j), s^2, E_r|y|^2)`` with ``y_j = x - mu xbar_j``,
    ``l_j = -|y_j|^2 / (2 s^2)``, responsibilities ``r_j``; ``ybar = E_r y`` written out."""
    d = x.shape[0]
    M = (q.shape[0] - _VH) // d
    m, s2 = _vpfb_mu_s2(t, q)
    lmax = -np.inf
    for j in range(M):
        r2 = 0.0
        for a in range(d):
            y = x[a] - m * q[_VH + j * d + a]
            r2 += y * y
        lmax = max(lmax, -0.5 * r2 / s2)
    tot = 0.0
    yy = 0.0
    for a in range(d):
        ybar[a] = 0.0
    for j in range(M):
        r2 = 0.0
        for a in range(d):
            y = x[a] - m * q[_VH + j * d + a]
            r2 += y * y
        w = math.exp(-0.5 * r2 / s2 - lmax)
        tot += w
        yy += w * r2
        for a in range(d):
            ybar[a] += w * (x[a] - m * q[_VH + j * d + a])
    for a in range(d):
        ybar[a] /= tot
    return lmax + math.log(tot), s2, yy / tot


@jit(cache=True)
def _vpfb_value(x, t, q):
    d = x.shape[0]
    M = (q.shape[0] - _VH) // d
    lse, s2, _ = _vpfb_pass(x, t, q, np.empty(d))
    return -lse + 0.5 * d * math.log(2.0 * math.pi * s2) + math.log(M)


@jit(cache=True)
def _vpfb_grad(x, t, q, out):
    _, s2, _ = _vpfb_pass(x, t, q, out)
    for a in range(x.shape[0]):
        out[a] /= s2


@jit(cache=True)
def _vpfb_lap(x, t, q):
    d = x.shape[0]
    ybar = np.empty(d)
    _, s2, yy = _vpfb_pass(x, t, q, ybar)
    b2 = 0.0
    for a in range(d):
        b2 += ybar[a] * ybar[a]
    return d / s2 - (yy - b2) / (s2 * s2)


@jit(cache=True)
def _vpfb_hess(x, t, q, out):
    """``I / s^2 - Cov_r(y) / s^4``."""
    d = x.shape[0]
    M = (q.shape[0] - _VH) // d
    ybar = np.empty(d)
    lse, s2, _ = _vpfb_pass(x, t, q, ybar)
    m, _ = _vpfb_mu_s2(t, q)
    for a in range(d):
        for b in range(d):
            out[a, b] = -ybar[a] * ybar[b]
    for j in range(M):
        r2 = 0.0
        for a in range(d):
            y = x[a] - m * q[_VH + j * d + a]
            r2 += y * y
        r = math.exp(-0.5 * r2 / s2 - lse)
        for a in range(d):
            ya = x[a] - m * q[_VH + j * d + a]
            for b in range(d):
                out[a, b] += r * ya * (x[b] - m * q[_VH + j * d + b])
    for a in range(d):
        for b in range(d):
            out[a, b] = (1.0 if a == b else 0.0) / s2 - out[a, b] / (s2 * s2)


_VPFB_KERNELS = PathKernels(_vpfb_value, _vpfb_grad, _vpfb_lap, _vpfb_hess)

# The NumPy quantities of VPFBHomotopy work on (rows, M, d) blocks of at most this many
# floats (128 MiB), so any number of points and data points fits in memory.
CHUNK_ELEMENTS = 1 << 24


class VPFBSchedule:
    """The weights ``alpha(t)``, ``beta(t)`` (monotone, ``alpha > 0``, ``beta >= 0``) of the
    log-homotopy ``h(x | xbar, t) = alpha(t) log q(x) + beta(t) log p(xbar | x)``, with their
    derivatives.  Build one with :meth:`linear`, :meth:`ot_fm`, :meth:`geometric` (closed
    forms, with compiled kernels) or :meth:`custom` (your callables; no compiled path
    kernels).  ``alpha`` and ``beta`` may depend on the prior and likelihood variances
    ``w2``, ``v2`` (the flow-matching schedule does)."""

    def __init__(self, name: str, kind: int, param: float = 0.0, functions=None, t_end: float = 1.0):
        self.name, self.kind, self.param, self._f, self.t_end = name, kind, float(param), functions, t_end

    @classmethod
    def linear(cls) -> "VPFBSchedule":
        """``alpha = 1``, ``beta = t``: ``rho(x | xbar, t) ~ q(x) p(xbar | x)^t``."""
        return cls("linear", _LINEAR)

    @classmethod
    def ot_fm(cls) -> "VPFBSchedule":
        """Optimal-transport flow matching: ``alpha = w^2 / (1 - t)``, ``beta = v^2 t / (1 - t)^2``,
        so ``mu(t) = t`` and ``sigma(t) = 1 - t`` (``t < 1``: the kernel is a point mass at 1)."""
        return cls("ot-fm", _OT_FM, t_end=1.0 - 1e-12)

    @classmethod
    def geometric(cls, ratio: float = 100.0) -> "VPFBSchedule":
        """``alpha = 1``, ``beta = (r^t - 1) / (r - 1)``: the likelihood weight grows
        geometrically from 0 to 1 (``r > 1``: slowly at first; ``r < 1``: fast at first)."""
        r = positive_float(ratio, "ratio")
        if abs(r - 1.0) < 1e-8:
            raise ValueError(f"a geometric schedule needs ratio != 1 (ratio 1 is the linear one), got {ratio!r}")
        return cls(f"geometric({r:g})", _GEOMETRIC, r)

    @classmethod
    def custom(cls, alpha, beta, dalpha, dbeta, name: str = "custom") -> "VPFBSchedule":
        """Your schedule: callables ``alpha(t)``, ``beta(t)`` and their derivatives (floats of a
        float).  Every NumPy quantity of the homotopy is exact for it; the compiled path kernels
        (Lagrangian characteristics along the path) need a closed-form schedule."""
        for f, nm in ((alpha, "alpha"), (beta, "beta"), (dalpha, "dalpha"), (dbeta, "dbeta")):
            if not callable(f):
                raise TypeError(f"custom schedule: {nm} must be a callable of t, got {type(f).__name__}")
        return cls(str(name), -1, functions=(alpha, beta, dalpha, dbeta))

    @classmethod
    def named(cls, name: str) -> "VPFBSchedule":
        """A closed-form schedule by name (configs): ``linear``, ``ot-fm`` or ``geometric``."""
        table = {"linear": cls.linear, "ot-fm": cls.ot_fm, "geometric": cls.geometric}
        if name not in table:
            raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(table)}")
        return table[name]()

    def weights(self, t: float, w2: float, v2: float) -> tuple[float, float, float, float]:
        """``(alpha, beta, alpha', beta')`` at ``t``."""
        if self._f is None:
            return tuple(float(v) for v in _vpfb_alpha_beta(self.kind, self.param, w2, v2, float(t)))
        try:
            a, b, da, db = (float(f(float(t))) for f in self._f)
        except ArithmeticError as exc:
            raise ValueError(f"schedule {self.name!r} fails at t = {t:g}: {exc}") from exc
        if not all(math.isfinite(v) for v in (a, b, da, db)) or a <= 0 or b < 0:
            raise ValueError(f"schedule {self.name!r} at t = {t:g} gives alpha = {a!r}, beta = {b!r}, alpha' = {da!r}, "
                             f"beta' = {db!r}: alpha must be positive, beta non-negative, all finite")
        return a, b, da, db

    def __repr__(self):
        return f"VPFBSchedule.{self.name}"


class VPFBHomotopy(EnergyPath):
    """The marginal VPFB homotopy of ``data`` (M, d) with prior std ``w``, likelihood std
    ``v`` and a :class:`VPFBSchedule` (module docstring; the linear one by default), frozen
    from ``t_max`` on: for ``t >= t_max`` the law is the Boltzmann equilibrium
    ``rho_bar(., t_max) = exp(-U_tail)`` of :meth:`tail_energy` (``d_t`` of everything is 0)."""

    def __init__(self, data, prior_std: float = 1.0, likelihood_std: float = 0.5, schedule=None,
                 t_max: float = 1.0):
        X = point_set(data, "data", "M")
        self.data, self.dim = X, X.shape[1]
        self.w2 = positive_float(prior_std, "prior_std") ** 2
        self.v2 = positive_float(likelihood_std, "likelihood_std") ** 2
        sch = VPFBSchedule.linear() if schedule is None else schedule
        if isinstance(sch, str):
            sch = VPFBSchedule.named(sch)
        if not isinstance(sch, VPFBSchedule):
            raise TypeError(f"schedule must be a VPFBSchedule or one of 'linear', 'ot-fm', 'geometric'; got {sch!r}")
        self.schedule = sch
        self.t_max = check_time(t_max, "t_max")
        if self.t_max > sch.t_end:
            raise ValueError(f"the {sch.name} schedule reaches a point mass at t = 1: give t_max < 1 "
                             f"(the stationary tail starts there), got t_max = {t_max!r}")
        if self.t_max == 0.0:
            raise ValueError("t_max must be positive (the homotopy would never leave the prior)")
        for tt in (0.0, self.t_max):   # a custom schedule fails here, not inside a solver
            self._moments(tt)

    def _moments(self, t) -> tuple[float, float, float, float]:
        """``(mu, sigma^2, mu', (sigma^2)')`` at ``t``; the derivatives vanish on the tail."""
        t = check_time(t)
        a, b, da, db = self.schedule.weights(min(t, self.t_max), self.w2, self.v2)
        w2, v2 = self.w2, self.v2
        den = a * v2 + b * w2
        if not den > 0:
            raise ValueError(f"schedule {self.schedule.name!r} gives alpha v^2 + beta w^2 = {den!r} at t = {t:g}")
        if t > self.t_max:   # the stationary tail
            return b * w2 / den, w2 * v2 / den, 0.0, 0.0
        dden = da * v2 + db * w2
        return b * w2 / den, w2 * v2 / den, w2 * (db * den - b * dden) / den ** 2, -w2 * v2 * dden / den ** 2

    def mu(self, t):
        return self._moments(t)[0]

    def sigma2(self, t):
        return self._moments(t)[1]

    def dmu(self, t):
        return self._moments(t)[2]

    def dsigma2(self, t):
        return self._moments(t)[3]

    def at(self, t) -> GaussianMixture:
        """``U_t = -log rho_bar(., t)`` (normalised: ``log Z = 0``)."""
        m, s2, _, _ = self._moments(t)
        return GaussianMixture(m * self.data, math.sqrt(s2))

    def tail_energy(self) -> GaussianMixture:
        """The steady energy of the tail, ``U_tail = -log rho_bar(., t_max)``: Langevin on it at
        ``T = 1`` (e.g. ``particles.langevin(H.tail_energy(), X, dt, n)``) keeps the homotopy's
        end law as its Boltzmann equilibrium."""
        return self.at(self.t_max)

    def tail_w2_to_data(self) -> tuple[float, bool]:
        """``W2`` between the tail's equilibrium ``rho_bar(., t_max)`` and the data law
        ``(1/M) sum_j delta_{xbar_j}``: ``(value, exact)``.  Coupling component ``j`` with
        ``xbar_j`` gives ``W2^2 <= (1/M) sum_j ((1 - mu)^2 |xbar_j|^2 + d sigma^2)``, equal to
        ``W2^2`` for one data point (``exact`` True) and an upper bound otherwise."""
        m, s2, _, _ = self._moments(self.t_max)
        w2sq = float(np.mean((1.0 - m) ** 2 * np.sum(self.data ** 2, axis=1)) + self.dim * s2)
        return math.sqrt(w2sq), self.data.shape[0] == 1

    @property
    def has_kernels(self) -> bool:
        return True

    def _build_path_kernels(self):
        if self.schedule.kind < 0:
            raise NoKernelsError(f"the path kernels of VPFBHomotopy take a closed-form schedule (linear, ot-fm, "
                                 f"geometric); {self.schedule.name!r} is given by Python callables")
        return _VPFB_KERNELS

    def param_rows(self, ts) -> np.ndarray:
        """``at(t).params`` for every ``t`` of ``ts`` as rows, without building the mixtures
        (a mixture per step was the annealed Langevin's Python cost: 0.1 ms a step)."""
        ts = np.asarray(ts, dtype=float)
        M, d = self.data.shape
        m, s2 = np.array([self._moments(t)[:2] for t in ts]).reshape(ts.size, 2).T
        rows = np.empty((ts.size, 1 + M * (1 + d + d * d)))
        rows[:, 0] = M
        comp = rows[:, 1:].reshape(ts.size, M, 1 + d + d * d)
        comp[:, :, 0] = (math.log(1.0 / M) - 0.5 * d * np.log(2 * np.pi * s2))[:, None]
        comp[:, :, 1:1 + d] = m[:, None, None] * self.data[None]
        comp[:, :, 1 + d:] = (np.eye(d).ravel()[None, :] / s2[:, None])[:, None, :]
        return rows

    @property
    def path_params(self):
        """``[schedule kind, schedule parameter, t_max, w^2, v^2, data...]``."""
        return np.concatenate([[float(self.schedule.kind), self.schedule.param, self.t_max, self.w2, self.v2],
                               self.data.ravel()])

    def _parts(self, X, t):
        m, s2, _, _ = self._moments(t)
        D = X[:, None, :] - m * self.data[None]          # (N, M, d)
        r2 = np.sum(D * D, axis=2)
        L = -0.5 * r2 / s2 - 0.5 * self.dim * math.log(2 * math.pi * s2) - math.log(self.data.shape[0])
        return D, r2, L, m, s2

    def _by_rows(self, X, fn) -> np.ndarray:
        """``fn`` on row blocks of ``X`` whose (rows, M, d) intermediates stay within
        ``CHUNK_ELEMENTS`` (one row at least): the result does not depend on the split."""
        M, d = self.data.shape
        rows = max(1, CHUNK_ELEMENTS // (M * d))
        if X.shape[0] <= rows:
            return fn(X)
        return np.concatenate([fn(X[i:i + rows]) for i in range(0, X.shape[0], rows)])

    def logpdf(self, x, t) -> np.ndarray:
        """``log rho_bar(x, t)``."""
        X, _ = points(x, self.dim)
        return self._by_rows(X, lambda Xb: logsumexp(self._parts(Xb, t)[2], axis=1))

    def dt_logpdf(self, x, t) -> np.ndarray:
        """``d_t log rho_bar(x, t)`` (exact): each component contributes
        ``(x - m_j) . m_j' / s^2 + (|x - m_j|^2 / s^2 - d) s'/(2 s^2) * ...`` weighted by its
        responsibility."""
        X, _ = points(x, self.dim)
        dm, ds2 = self.dmu(t), self.dsigma2(t)

        def block(Xb):
            D, r2, L, m, s2 = self._parts(Xb, t)
            w = np.exp(L - logsumexp(L, axis=1)[:, None])
            comp = np.einsum("nmd,md->nm", D, dm * self.data) / s2 + 0.5 * ds2 * (r2 / s2 ** 2 - self.dim / s2)
            return np.sum(w * comp, axis=1)
        return self._by_rows(X, block)

    def dt_density(self, x, t) -> np.ndarray:
        """``d_t rho_bar(x, t)`` (exact)."""
        return np.exp(self.logpdf(x, t)) * self.dt_logpdf(x, t)

    def gaussian_velocity(self, x, t) -> np.ndarray:
        """For ONE data point: ``grad Phi(x, t) = mu' xbar + (s'/s) (x - mu xbar)``, the gradient
        field transporting ``N(mu xbar, s^2 I)`` along ``t`` (it solves
        ``div(rho_bar grad Phi) = -d_t rho_bar`` exactly); ``Phi`` is affine-quadratic."""
        if self.data.shape[0] != 1:
            raise ValueError("the closed-form potential exists for one data point (M = 1); "
                             f"this homotopy has M = {self.data.shape[0]}: use the grid Poisson solve")
        X, _ = points(x, self.dim)
        m, s2 = self.mu(t), self.sigma2(t)
        xbar = self.data[0]
        return self.dmu(t) * xbar + 0.5 * self.dsigma2(t) / s2 * (X - m * xbar)

    def gaussian_potential(self, x, t) -> np.ndarray:
        """``Phi(x, t) = mu' xbar . x + (s'/(2 s)) |x - mu xbar|^2`` (M = 1; up to a constant)."""
        self.gaussian_velocity(np.zeros((1, self.dim)), t)  # refuses M > 1
        X, _ = points(x, self.dim)
        m, s2 = self.mu(t), self.sigma2(t)
        xbar = self.data[0]
        return X @ (self.dmu(t) * xbar) + 0.25 * self.dsigma2(t) / s2 * np.sum((X - m * xbar) ** 2, axis=1)

    def gaussian_boltzmann_residual(self, t) -> float:
        """For ONE data point, the weighted relative residual of the best fit
        ``Phi = a log rho_bar + b`` (:func:`fokkerplanck.flows.potential_flow.boltzmann_residual`) in
        closed form: ``Phi``'s linear part ``mu' xbar . (x - mu xbar)`` is orthogonal to every
        function of ``|x - mu xbar|``, so the residual is ``sqrt(V_lin / (V_lin + V_quad))``
        with ``V_lin = mu'^2 |xbar|^2 s^2`` and ``V_quad = (s^2)'^2 d / 8``: zero only for
        ``xbar = 0``.  The potential is a Boltzmann energy of the homotopy only then."""
        self.gaussian_velocity(np.zeros((1, self.dim)), t)  # refuses M > 1
        v_lin = self.dmu(t) ** 2 * float(self.data[0] @ self.data[0]) * self.sigma2(t)
        v_quad = self.dsigma2(t) ** 2 * self.dim / 8.0
        return math.sqrt(v_lin / (v_lin + v_quad))

    def sample(self, n: int, t, seed=None) -> np.ndarray:
        """``n`` exact samples of ``rho_bar(., t)``."""
        rng = np.random.default_rng(seed)
        j = rng.integers(0, self.data.shape[0], size=int(n))
        return self.mu(t) * self.data[j] + math.sqrt(self.sigma2(t)) * rng.standard_normal((int(n), self.dim))

    def __repr__(self):
        extra = "" if self.schedule.kind == _LINEAR else f", schedule={self.schedule.name}"
        extra += "" if self.t_max == 1.0 else f", t_max={self.t_max:g}"
        return (f"VPFBHomotopy(M={self.data.shape[0]}, d={self.dim}, w={math.sqrt(self.w2):g}, "
                f"v={math.sqrt(self.v2):g}{extra})")
