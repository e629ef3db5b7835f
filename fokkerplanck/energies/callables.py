"""Energies from Python callables: plain NumPy functions, PyTorch modules, JAX functions.

:func:`from_callable` wraps vectorised functions on points of shape ``(N, d)``;
:func:`from_torch` and :func:`from_jax` wrap a network or a traced function and
take its derivatives by automatic differentiation.  The result is an
:class:`~fokkerplanck.energies.Energy` without numba kernels
(``has_kernels`` is False):

* grid solvers evaluate it once on the cells, as any energy;
* particle integrators step it by the vectorised path of
  :mod:`particles.vectorised` (same random streams, same results as the numba
  path for the same energy to round-off);
* it composes with every other energy (``a * U1 + b * U2``, :func:`softmin`);
  the composition is then kernel-less too.

Derivatives not given are computed, and the way is recorded in
:attr:`CallableEnergy.derivatives`:

==========================  =========================================  ==========================
missing                     computed by                                error on the 8-Gaussian
                                                                       ring (max over N(0, 9I)
                                                                       points, relative to max)
==========================  =========================================  ==========================
``grad``                    central differences of ``value``,          2e-10
                            ``h = eps^(1/3) max(1, |x_a|)``
``lap``, ``hess``           central differences of ``grad``            5e-10 (``lap``)
(``grad`` given)            (Hessian symmetrised)
``lap`` (no ``grad``)       second differences of ``value``,           1e-7
                            ``h = eps^(1/4) max(1, |x_a|)``
``hess`` (no ``grad``)      second and cross differences of ``value``  3e-5 (absolute, off-diagonal)
==========================  =========================================  ==========================

Give ``grad`` when you can: every other derivative is then two digits better.

Every evaluation checks what the callable returns: the shape, and NaN (any
derivative) or ``-inf``/NaN (the value); the error names the callable and the
first offending point (:class:`NonFiniteEnergyError`).  ``+inf`` values (a hard
wall) are allowed, non-finite gradients are not.
"""
from __future__ import annotations

import math
import types
from typing import Callable

import numpy as np

from fokkerplanck._core.validate import points
from fokkerplanck.energies.base import Energy, NoKernelsError, NonFiniteEnergyError

__all__ = ["CallableEnergy", "NonFiniteEnergyError", "from_callable", "from_torch", "from_jax",
           "HUTCHINSON_SAMPLES", "EXACT_LAP_MAX_DIM"]

EPS = np.finfo(np.float64).eps
H_FIRST = EPS ** (1 / 3)   # central first differences: h^2 truncation = eps / h round-off
H_SECOND = EPS ** (1 / 4)  # second differences of values: h^2 truncation = eps / h^2 round-off
EXACT_LAP_MAX_DIM = 10     # autodiff Laplacians: exact (d backward passes) up to this dimension
HUTCHINSON_SAMPLES = 64    # Rademacher probes of a Hutchinson Laplacian above it
BATCH = 65536              # points per call of a network (bounds its memory)
GRAPH_ROWS = 4096          # rows per autodiff graph of the fused torch gradient + Laplacian
JAX_MIN_ROWS = 256         # fused JAX batches are padded to a power of two rows, at least this many


def _name(fn) -> str:
    owner = getattr(fn, "__self__", None)
    if owner is not None and not isinstance(owner, types.ModuleType):
        return f"{type(owner).__name__}.{getattr(fn, '__name__', '?')}"
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _checked(out, X, shape, what: str, name: str, allow_posinf: bool = False) -> np.ndarray:
    """``out`` as float64 of ``shape``, or an error naming the callable."""
    try:
        arr = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} callable {name!r} returned {type(out).__name__}, not an array of numbers: "
                         f"{exc}") from None
    if arr.shape != shape:
        raise ValueError(f"{what} callable {name!r} returned shape {arr.shape} for points of shape {X.shape}; "
                         f"expected {shape}")
    bad = np.isnan(arr) | (arr == -np.inf) if allow_posinf else ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(arr.shape[0], -1).any(axis=1))
        kind = "NaN or -inf" if allow_posinf else "NaN or inf"
        raise NonFiniteEnergyError(
            f"{what} callable {name!r} returned {kind} at {rows.size} of {X.shape[0]} points; first at "
            f"x = {np.array2string(X[rows[0]], precision=6)}", rows)
    return arr


class CallableEnergy(Energy):
    """An energy from vectorised callables ``value(X) -> (N,)``, ``grad(X) -> (N, d)``,
    ``lap(X) -> (N,)``, ``hess(X) -> (N, d, d)`` (``X`` float64, shape (N, d));
    see the module docstring for what is computed when a derivative is missing.

    ``log_partition`` is an optional callable ``T -> log Z(T)``.  ``lap_se`` is an
    optional callable giving the standard error of a stochastic ``lap`` (Hutchinson).
    """

    has_kernels = False

    def __init__(self, value: Callable, grad: Callable | None = None, lap: Callable | None = None,
                 hess: Callable | None = None, *, dim: int, name: str | None = None, log_partition=None,
                 lap_se: Callable | None = None):
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        for what, f in (("value", value), ("grad", grad), ("lap", lap), ("hess", hess)):
            if f is not None and not callable(f):
                raise ValueError(f"{what} must be callable, got {f!r}")
        if value is None:
            raise ValueError("from_callable needs at least the value callable")
        self.dim = int(dim)
        self.params = np.zeros(0)
        self.name = name or _name(value)
        self._fns = {"value": value, "grad": grad, "lap": lap, "hess": hess}
        self._logz, self._lap_se = log_partition, lap_se
        self.derivatives = {
            "value": "given",
            "grad": "given" if grad else "central differences of value",
            "lap": "given" if lap else ("central differences of grad" if grad else "second differences of value"),
            "hess": "given" if hess else ("central differences of grad" if grad else "second differences of value"),
        }

    # -- raw calls, checked ------------------------------------------------------
    def _call(self, what, X, shape, allow_posinf=False):
        nm = self.name if what == "value" else f"{self.name}.{what}"
        return _checked(self._fns[what](X), X, shape, what, nm, allow_posinf)

    def _steps(self, X, base):
        return base * np.maximum(1.0, np.abs(X))

    def _value(self, X):
        return self._call("value", X, (X.shape[0],), allow_posinf=True)

    def _grad(self, X):
        n, d = X.shape
        if self._fns["grad"] is not None:
            return self._call("grad", X, (n, d))
        h = self._steps(X, H_FIRST)
        G = np.empty((n, d))
        for a in range(d):
            Xp, Xm = X.copy(), X.copy()
            Xp[:, a] += h[:, a]
            Xm[:, a] -= h[:, a]
            G[:, a] = (self._value(Xp) - self._value(Xm)) / (Xp[:, a] - Xm[:, a])
        return _checked(G, X, (n, d), "grad (central differences of value)", self.name)

    def _lap(self, X):
        n, d = X.shape
        if self._fns["lap"] is not None:
            return self._call("lap", X, (n,))
        return np.trace(self._hess_fd(X, diagonal_only=True), axis1=1, axis2=2)

    def _grad_lap(self, X):
        """``(grad, lap)`` at the points: one call of a fused callable where the backend gives
        one (one autodiff graph of a network for both, as the characteristics want at every
        stage), else the two calls."""
        fused = self._fns.get("grad_lap")
        if fused is None:
            return self._grad(X), self._lap(X)
        n, d = X.shape
        G, L = fused(X)
        return (_checked(G, X, (n, d), "grad", f"{self.name}.grad"),
                _checked(L, X, (n,), "lap", f"{self.name}.lap"))

    def _hess(self, X):
        n, d = X.shape
        if self._fns["hess"] is not None:
            return self._call("hess", X, (n, d, d))
        return self._hess_fd(X)

    def _hess_fd(self, X, diagonal_only: bool = False):
        n, d = X.shape
        H = np.zeros((n, d, d))
        if self._fns["grad"] is not None:
            h = self._steps(X, H_FIRST)
            for a in range(d):
                Xp, Xm = X.copy(), X.copy()
                Xp[:, a] += h[:, a]
                Xm[:, a] -= h[:, a]
                col = (self._grad(Xp) - self._grad(Xm)) / (Xp[:, a] - Xm[:, a])[:, None]
                if diagonal_only:
                    H[:, a, a] = col[:, a]
                else:
                    H[:, :, a] = col
            H = H if diagonal_only else 0.5 * (H + H.transpose(0, 2, 1))
        else:
            h = self._steps(X, H_SECOND)
            u0 = self._value(X)
            for a in range(d):
                for b in (range(a, a + 1) if diagonal_only else range(a, d)):
                    if a == b:
                        Xp, Xm = X.copy(), X.copy()
                        Xp[:, a] += h[:, a]
                        Xm[:, a] -= h[:, a]
                        ha = 0.5 * (Xp[:, a] - Xm[:, a])
                        H[:, a, a] = (self._value(Xp) - 2.0 * u0 + self._value(Xm)) / ha ** 2
                    else:
                        pts = []
                        for sa, sb in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                            Y = X.copy()
                            Y[:, a] += sa * h[:, a]
                            Y[:, b] += sb * h[:, b]
                            pts.append(self._value(Y))
                        H[:, a, b] = H[:, b, a] = (pts[0] - pts[1] - pts[2] + pts[3]) / (4 * h[:, a] * h[:, b])
        return _checked(H, X, (n, d, d), "hess (differences)", self.name)

    # -- what the rest of the toolkit asks ----------------------------------------
    @property
    def kernels(self):
        raise NoKernelsError(f"the energy {self!r} is given by Python callables and has no numba kernels; "
                             "particles step it by the vectorised path (particles.vectorised)")

    @property
    def has_hessian(self) -> bool:
        return True

    def laplacian_se(self, x) -> np.ndarray:
        """Standard error of :meth:`laplacian` at the points (zero unless it is a
        stochastic estimate, e.g. Hutchinson's above :data:`EXACT_LAP_MAX_DIM`)."""

        X, _ = points(x, self.dim)
        if self._lap_se is None:
            return np.zeros(X.shape[0])
        return _checked(self._lap_se(X), X, (X.shape[0],), "lap_se", _name(self._lap_se))

    def log_partition(self, temperature: float = 1.0) -> float:
        if self._logz is not None:
            return float(self._logz(temperature))
        return super().log_partition(temperature)

    def to_spec(self):
        raise ValueError(f"the energy {self!r} is given by Python callables and has no spec (a spec never "
                         "stores code); keep the callables and rebuild it with from_callable")

    def __repr__(self):
        return f"CallableEnergy({self.name!r}, dim={self.dim})"


def from_callable(value: Callable, grad: Callable | None = None, lap: Callable | None = None, *, dim: int,
                  hess: Callable | None = None, name: str | None = None, log_partition=None) -> CallableEnergy:
    """An energy from vectorised NumPy callables on points ``X`` of shape (N, d)::

        U = from_callable(lambda X: 0.5 * (X ** 2).sum(1), lambda X: X, dim=2)

    Missing derivatives are computed by finite differences (module docstring: steps and
    errors).  The callables must accept any N (the toolkit calls them on grids of
    cells and on ensembles of particles)."""
    return CallableEnergy(value, grad, lap, hess, dim=dim, name=name, log_partition=log_partition)


def _assemble(nm, d, value, grad, hess, hutchinson, exact: bool, batch, derivatives, how_exact, how_hutchinson,
              grad_lap=None):
    """The :class:`CallableEnergy` of an autodiff backend: the Laplacian as the trace of the
    exact Hessian, or Hutchinson's estimate (``hutchinson(Y) -> (mean, se)``) with its error.
    ``grad_lap(Y) -> (grad, lap)`` from one graph, used with the exact Laplacian."""
    if exact:
        def lap(X):
            return np.trace(hess(X), axis1=1, axis2=2)
        lap_se = None
    else:
        def lap(X):
            return _batched(lambda Y: hutchinson(Y)[0], X, batch)

        def lap_se(X):
            return _batched(lambda Y: hutchinson(Y)[1], X, batch)
    for f, suffix in ((value, ""), (grad, ".grad"), (lap, ".lap"), (hess, ".hess")):
        f.__qualname__ = nm + suffix
    E = CallableEnergy(value, grad, lap, hess, dim=d, name=nm, lap_se=lap_se)
    E.derivatives = {**derivatives, "lap": how_exact if exact else how_hutchinson}
    if exact and grad_lap is not None:
        def fused(X):
            if X.shape[0] <= batch:
                return grad_lap(X)
            parts = [grad_lap(X[i:i + batch]) for i in range(0, X.shape[0], batch)]
            return np.concatenate([g for g, _ in parts]), np.concatenate([lap for _, lap in parts])
        fused.__qualname__ = nm + ".grad_lap"
        E._fns["grad_lap"] = fused
    return E


# ---------------------------------------------------------------------------
# PyTorch
def _batched(fn, X, batch=BATCH):
    if X.shape[0] <= batch:
        return fn(X)
    return np.concatenate([fn(X[i:i + batch]) for i in range(0, X.shape[0], batch)])


def _rademacher(n, d, k, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(k, n, d)).astype(np.float64) * 2.0 - 1.0


def _need_callable(f, where: str, what: str) -> None:
    if not callable(f):
        raise TypeError(f"{where} needs {what}, got {type(f).__name__} {f!r:.60}")


def from_torch(module, dim: int, *, dtype=None, device=None, exact_lap_max_dim: int = EXACT_LAP_MAX_DIM,
               hutchinson_samples: int = HUTCHINSON_SAMPLES, seed: int = 0, name: str | None = None,
               batch: int = BATCH) -> CallableEnergy:
    """An energy from a PyTorch module (or function) mapping a (N, d) tensor to (N,) or (N, 1).

    Gradients by autograd; the Laplacian exactly (d backward passes) for
    ``d <= exact_lap_max_dim``, above by Hutchinson's estimator with
    ``hutchinson_samples`` Rademacher probes (its standard error from
    :meth:`CallableEnergy.laplacian_se`).  ``dtype``/``device`` default to those of the
    module's parameters (float64 and CPU without parameters); a module whose parameters
    disagree with them is refused with the fix named.  Evaluated in batches of ``batch``
    points."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError("from_torch needs PyTorch: pip install 'fokkerplanck[torch]'") from exc
    _need_callable(module, "from_torch", "a torch module or a function of a (N, d) tensor")
    nm = name or (type(module).__name__ if isinstance(module, torch.nn.Module) else _name(module))
    params = list(module.parameters()) if isinstance(module, torch.nn.Module) else []
    p_dtype = params[0].dtype if params else None
    p_device = params[0].device if params else None
    dtype = dtype if dtype is not None else (p_dtype or torch.float64)
    if isinstance(dtype, str):
        dtype = {"float64": torch.float64, "float32": torch.float32}.get(dtype)
        if dtype is None:
            raise ValueError("dtype must be 'float64', 'float32' or a torch dtype")
    device = torch.device(device) if device is not None else (p_device or torch.device("cpu"))
    if p_dtype is not None and p_dtype != dtype:
        raise ValueError(f"torch module {nm!r} has {p_dtype} parameters but dtype {dtype} was asked; "
                         f"convert the module (module.to({dtype})) or pass dtype={p_dtype}")
    if p_device is not None and p_device != device:
        raise ValueError(f"torch module {nm!r} lives on {p_device} but device {device} was asked; "
                         f"move it (module.to('{device}')) or pass device='{p_device}'")
    if device.type != "cpu" and not (device.type == "cuda" and torch.cuda.is_available()):
        raise ValueError(f"device {device} is not available here")
    d = int(dim)

    def tensor(X, grad=False):
        t = torch.as_tensor(np.ascontiguousarray(X), dtype=dtype, device=device)
        return t.requires_grad_(True) if grad else t

    def forward(x):
        try:
            u = module(x)
        except RuntimeError as exc:
            raise ValueError(f"torch module {nm!r} failed on a ({x.shape[0]}, {d}) {dtype} batch on {device}: "
                             f"{exc}") from exc
        if not isinstance(u, torch.Tensor):
            raise ValueError(f"torch module {nm!r} returned {type(u).__name__}, not a tensor")
        if u.ndim == 2 and u.shape[1] == 1:
            u = u[:, 0]
        if tuple(u.shape) != (x.shape[0],):
            raise ValueError(f"torch module {nm!r} returned shape {tuple(u.shape)} for a batch of shape "
                             f"{tuple(x.shape)}; expected ({x.shape[0]},) or ({x.shape[0]}, 1)")
        return u

    def out(t):
        return t.detach().to("cpu", torch.float64).numpy()

    def value(X):
        with torch.no_grad():
            return _batched(lambda Y: out(forward(tensor(Y))), X, batch)

    def differentiable(x):
        u = forward(x)
        if not u.requires_grad:
            raise ValueError(f"torch module {nm!r} returned a value that autograd cannot differentiate with "
                             "respect to its input (computed under torch.no_grad, detached, or through NumPy); "
                             "its gradient and Laplacian need a differentiable module")
        return u

    def grad(X):
        def one(Y):
            x = tensor(Y, True)
            (g,) = torch.autograd.grad(differentiable(x).sum(), x)
            return out(g)
        return _batched(one, X, batch)

    def hess_rows(Y):
        x = tensor(Y, True)
        (g,) = torch.autograd.grad(differentiable(x).sum(), x, create_graph=True)
        rows = []
        for a in range(d):
            (ha,) = torch.autograd.grad(g[:, a].sum(), x, retain_graph=a < d - 1, allow_unused=True)
            rows.append(torch.zeros_like(x) if ha is None else ha)
        return out(torch.stack(rows, dim=1))

    def hess(X):
        return _batched(hess_rows, X, batch)

    def grad_lap(X):  # in blocks of GRAPH_ROWS rows: the graph's tensors stay in cache (1.3x)
        if X.shape[0] <= GRAPH_ROWS:
            return grad_lap_rows(X)
        parts = [grad_lap_rows(X[i:i + GRAPH_ROWS]) for i in range(0, X.shape[0], GRAPH_ROWS)]
        return np.concatenate([g for g, _ in parts]), np.concatenate([lap for _, lap in parts])

    def grad_lap_rows(Y):  # the Hessian's diagonal from the gradient's graph: one forward pass for both
        x = tensor(Y, True)
        (g,) = torch.autograd.grad(differentiable(x).sum(), x, create_graph=True)
        lap = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for a in range(d):
            (ha,) = torch.autograd.grad(g[:, a].sum(), x, retain_graph=a < d - 1, allow_unused=True)
            if ha is not None:
                lap = lap + ha[:, a]
        return out(g), out(lap)

    def hutchinson(Y):
        V = _rademacher(Y.shape[0], d, hutchinson_samples, seed)
        x = tensor(Y, True)
        (g,) = torch.autograd.grad(differentiable(x).sum(), x, create_graph=True)
        est = []
        for k in range(hutchinson_samples):
            v = tensor(V[k])
            (hv,) = torch.autograd.grad((g * v).sum(), x, retain_graph=k < hutchinson_samples - 1,
                                        allow_unused=True)
            est.append(np.zeros(Y.shape[0]) if hv is None else out((hv * v).sum(1)))
        E = np.array(est)
        return E.mean(0), E.std(0, ddof=1) / math.sqrt(hutchinson_samples)

    E = _assemble(nm, d, value, grad, hess, hutchinson, d <= exact_lap_max_dim, batch,
                  {"value": "torch", "grad": "autograd", "hess": "autograd, exact"}, "autograd, exact",
                  f"autograd, Hutchinson ({hutchinson_samples} Rademacher probes, seed {seed})", grad_lap)
    E.module = module
    E.precision_eps = float(torch.finfo(dtype).eps)  # what the network computes in (float32: 1.2e-7)
    return E


# ---------------------------------------------------------------------------
# JAX
def from_jax(fn, dim: int, *, exact_lap_max_dim: int = EXACT_LAP_MAX_DIM,
             hutchinson_samples: int = HUTCHINSON_SAMPLES, seed: int = 0, name: str | None = None,
             batch: int = BATCH) -> CallableEnergy:
    """An energy from a JAX function of ONE point, ``fn(x) -> scalar`` for ``x`` of shape (d,)
    (vectorised with ``jax.vmap`` and compiled with ``jax.jit``).

    Gradients by ``jax.grad``; the Laplacian as the trace of ``jax.hessian`` for
    ``d <= exact_lap_max_dim``, above by Hutchinson (Rademacher probes, ``jax.jvp`` of the
    gradient).  Computes in float64: JAX must run with ``jax_enable_x64`` (refused
    otherwise, rather than silently rounding every energy to float32)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError("from_jax needs JAX: pip install 'fokkerplanck[jax]'") from exc
    _need_callable(fn, "from_jax", "a JAX function of one point")
    nm = name or _name(fn)
    if not jax.config.jax_enable_x64:
        raise ValueError(f"from_jax({nm!r}) computes in float64, but JAX runs in float32: call "
                         "jax.config.update('jax_enable_x64', True) first")
    d = int(dim)

    def one(x):
        u = fn(x)
        if jnp.shape(u) != ():
            raise ValueError(f"JAX function {nm!r} must map a point of shape ({d},) to a scalar, "
                             f"got shape {jnp.shape(u)}")
        return u

    v_value = jax.jit(jax.vmap(one))
    v_grad = jax.jit(jax.vmap(jax.grad(one)))
    v_hess = jax.jit(jax.vmap(jax.hessian(one)))

    def call(f, X, pad=False):
        # jax.jit compiles once per input shape: with pad, the rows go up to a power of two (at
        # least JAX_MIN_ROWS, repeating the last point) so that batches of every size, such as
        # the shrinking sets of unfinished characteristics, share a few compiled shapes
        n = X.shape[0]
        rows = max(JAX_MIN_ROWS, 1 << max(0, n - 1).bit_length()) if pad else n
        Xp = X if rows == n or n == 0 else np.concatenate([X, np.broadcast_to(X[-1:], (rows - n, X.shape[1]))])
        try:
            res = f(jnp.asarray(Xp))
        except TypeError as exc:
            raise ValueError(f"JAX function {nm!r} failed on points of shape {X.shape}: {exc}") from exc
        if isinstance(res, tuple):
            return tuple(np.asarray(r, dtype=np.float64)[:n] for r in res)
        return np.asarray(res, dtype=np.float64)[:n]

    def value(X):
        return _batched(lambda Y: call(v_value, Y), X, batch)

    def grad(X):
        return _batched(lambda Y: call(v_grad, Y), X, batch)

    def hess(X):
        return _batched(lambda Y: call(v_hess, Y), X, batch)

    g1 = jax.grad(one)

    def grad_lap_one(x):  # the gradient and the Hessian's diagonal, forward over reverse
        g, hvp = jax.linearize(g1, x)
        return g, jnp.trace(jax.vmap(hvp)(jnp.eye(d, dtype=x.dtype)))

    v_grad_lap = jax.jit(jax.vmap(grad_lap_one))

    def grad_lap(Y):
        return call(v_grad_lap, Y, pad=True)

    def hv_one(x, v):
        return jnp.dot(jax.jvp(g1, (x,), (v,))[1], v)

    v_hv = jax.jit(jax.vmap(hv_one))

    def hutchinson(Y):
        V = _rademacher(Y.shape[0], d, hutchinson_samples, seed)
        E = np.array([np.asarray(v_hv(jnp.asarray(Y), jnp.asarray(V[k]))) for k in range(hutchinson_samples)])
        return E.mean(0), E.std(0, ddof=1) / math.sqrt(hutchinson_samples)

    return _assemble(nm, d, value, grad, hess, hutchinson, d <= exact_lap_max_dim, batch,
                     {"value": "jax", "grad": "jax.grad", "hess": "jax.hessian, exact"}, "jax.hessian trace, exact",
                     f"Hutchinson ({hutchinson_samples} Rademacher probes, seed {seed})", grad_lap)

