"""User-defined energies from numba kernels: :class:`Custom`.

Write numba kernels with the contract's signatures (module level, ``@numba.njit``)
and wrap them::

    @numba.njit
    def value(x, p): return p[0] * (x[0] ** 4 + x[1] ** 4)
    ...
    U = Custom(2, value, grad, lap, hess=None, params=[1.0])
"""
from __future__ import annotations

import importlib

import numpy as np

from fokkerplanck._core.jit import closure_jit, jit
from fokkerplanck._core.validate import check_keys, finite_array
from fokkerplanck.energies.base import Energy, Kernels, UnresolvedEnergyError, register


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
        self._kernels = fixed_signatures(Kernels(value, grad, lap, hess if hess is not None else _missing_hess))

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
        check_keys(spec, {"type", "dim", "params", "value", "grad", "lap", "hess"}, "Custom energy spec")
        return cls(spec.get("dim", 0), load("value"), load("grad"), load("lap"), load("hess"),
                   params=spec.get("params", ()))


@jit(cache=True)
def _missing_hess(x, p, out):
    raise ValueError("this Custom energy was given no Hessian kernel")


_FIXED: dict = {}


def _returning_float(f):
    @closure_jit
    def wrapped(x, p):
        return float(f(x, p))
    return wrapped


def _returning_nothing(f):
    @closure_jit
    def wrapped(x, p, out):
        f(x, p, out)
    return wrapped


def fixed_signatures(k: Kernels) -> Kernels:
    """A user's one-point kernels behind thin wrappers of fixed signatures: ``value`` and
    ``lap`` return a float64, ``grad`` and ``hess`` nothing.  The toolkit's compiled loops take
    kernels by address with exactly these signatures, so a kernel that returns ``out``, an
    integer or a float32 works as written (the call inside the wrapper converts)."""
    key = tuple(id(f) for f in k)
    if key not in _FIXED:
        wrapped = Kernels(_returning_float(k.value), _returning_nothing(k.grad), _returning_float(k.lap),
                          _returning_nothing(k.hess))
        _FIXED[key] = (k, wrapped)   # keep k alive: its ids are the key
    return _FIXED[key][1]


register(Custom)
