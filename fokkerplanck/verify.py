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


@register
def check_fokker_planck(quick: bool = True) -> list[Check]:
    """OU closed forms (density, KL) and second-order convergence; Lyapunov decay
    of KL along Fokker-Planck and d/dt KL = -T I; Gibbs law stationary."""
    import warnings

    from . import densities
    from . import diagnostics as D
    from . import energies as E
    from .grid import Grid
    from .solvers import FokkerPlanck

    A = np.array([[1.5, 0.5], [0.5, 0.8]])
    m0, S0, t = np.array([1.0, -0.5]), np.array([[0.5, 0.1], [0.1, 0.3]]), 1.0
    m, S = D.ou_moments(A, [0, 0], m0, S0, 1.0, t)
    errs = []
    ns = (32, 64) if quick else (64, 128, 256)
    for n in ns:
        g = Grid([(-7, 7)] * 2, n)
        tr = FokkerPlanck(E.Quadratic(A), g).solve(densities.Gaussian(m0, S0), [t])
        errs.append(np.abs(tr.densities[-1] - D.ou_density(g, m, S)).sum() * g.cell_volume)
    p = np.log2(errs[-2] / errs[-1])
    out = [below("OU 2D: L1 density error vs closed form", errs[-1], 5e-3 if quick else 5e-4),
           Check("OU 2D: observed order in h", p, 0.2, bool(abs(p - 2) <= 0.2), "tolerance: |p - 2|")]
    g = Grid([(-8, 8)] * 2, 96 if quick else 256)
    fp = FokkerPlanck(E.GaussianMixture.ring(), g)
    times = np.linspace(0, 5, 51)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # N(0, 9 I) touches the walls of [-8, 8]^2 at t = 0
        tr = fp.solve(densities.Gaussian([0, 0], 9.0), times)
    kl = tr.kl()
    out.append(below("ring: max increase of KL between saves (Lyapunov)", max(np.diff(kl).max(), 0.0), 0.0))
    out.append(below("ring: mass error", np.abs(tr.mass() - 1).max(), 1e-12))
    I = fp.solve(densities.Gaussian([0, 0], 9.0), [1.0]).fisher()[0]
    k = fp.solve(densities.Gaussian([0, 0], 9.0), [1 - 2e-3, 1 - 1e-3, 1 + 1e-3, 1 + 2e-3]).kl()
    dkl = (4 * (k[2] - k[1]) / 2e-3 - (k[3] - k[0]) / 4e-3) / 3  # Richardson: O(dt^4)
    out.append(below("ring: |dKL/dt + T I| / T I at t = 1", abs(dkl + I) / I, 1e-7))
    st = fp.solve(fp.gibbs, [10.0]).densities[-1]
    out.append(below("ring: Gibbs law drift in L1 over t = 10", np.abs(st - fp.gibbs).sum() * g.cell_volume, 1e-12))
    return out
