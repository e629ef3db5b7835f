"""The battery of theory checks behind ``fpk verify``.

Each check is a function ``check(quick: bool) -> list[Check]`` registered with
:func:`register`; every :class:`Check` carries the measured value, the
tolerance and whether it passed.  Tests call the same functions.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Check", "register", "run_checks", "CHECKS"]


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    tolerance: float
    passed: bool
    detail: str = ""


CHECKS: dict[str, Callable[[bool], list[Check]]] = {}


def register(fn):
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


def below(name, value, tol, detail=""):
    return Check(name, float(value), float(tol), bool(np.isfinite(value) and value <= tol), detail)


@register
def check_energies(quick: bool = True) -> list[Check]:
    """Closed-form log-partition functions against grid quadrature; numba kernels
    against the vectorised methods far from every centre."""
    from . import energies as E
    from .grid import Grid

    n = 256 if quick else 1024
    g = Grid([(-8, 8), (-8, 8)], n)
    ring = E.GaussianMixture.ring()
    Q = E.Quadratic([[2.0, 0.6], [0.6, 0.5]])
    gq = Grid([(-12, 12), (-12, 12)], n)
    x = np.array([[50.0, 0.0], [0.0, -50.0], [1.0, 2.0]])
    k = ring.eval_kernels(x)
    return [
        below("ring log Z: quadrature vs closed form", abs(g.log_partition(ring) - ring.log_partition()), 1e-3),
        below("quadratic log Z: quadrature vs closed form", abs(gq.log_partition(Q) - Q.log_partition()), 1e-3),
        below("ring kernels vs numpy at |x|=50 (rel lap)",
              np.max(np.abs(k["lap"] - ring.laplacian(x)) / np.abs(ring.laplacian(x))), 1e-10),
    ]


def run_checks(names=None, quick: bool = True, progress=None) -> list[Check]:
    out = []
    for name in names or list(CHECKS):
        t0 = time.perf_counter()
        res = CHECKS[name](quick)
        if progress:
            progress(name, time.perf_counter() - t0)
        out += res
    return out
