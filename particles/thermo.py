"""``log Z`` by thermodynamic integration along ``U_s = (1 - s) U0 + s U1``.

``d/ds log Z_s = -E_{rho_s}[(U1 - U0) / T]``, so

    log Z_1 = log Z_0 - int_0^1 E_{rho_s}[(U1 - U0) / T] ds,

with ``rho_s ~ exp(-U_s / T)``.  The integral is taken by Gauss-Legendre nodes on
[0, 1]; at each node one ensemble of independent particles is brought to
``rho_s`` by MALA (annealed: the ensemble of node ``i`` starts where node ``i - 1``
ended, the first from exact samples of ``rho_0``).  Because particle ``j`` carries
its own quadrature sum ``sum_i w_i f_i(X_j^(i))``, the standard error across the
independent particles covers the correlation between nodes.  What it does not cover
is the quadrature error and any MALA bias from unmixed chains:
:func:`fokkerplanck.theory.thermo.ti_integrand` gives the exact integrand on a grid to
measure the first, and more steps per node shrink the second.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fokkerplanck._core.validate import finite_array, positive_float, positive_int
from fokkerplanck.energies import Sum

from particles.api import langevin

__all__ = ["ThermoResult", "thermodynamic_integration", "gauss_legendre_01"]

ACCEPT = (0.5, 0.8)  # MALA acceptance aimed at by dt="auto" (0.574 is the asymptotic optimum)
PILOT_STEPS = 20
PILOTS = 10


def gauss_legendre_01(n: int):
    """Nodes and weights of the ``n``-point Gauss-Legendre rule on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(positive_int(n, "nodes"))
    return 0.5 * (x + 1.0), 0.5 * w


@dataclass
class ThermoResult:
    """``log_z`` and its standard error ``se`` (particles); per node ``s``, the weights,
    the integrand means ``E_s[(U1 - U0) / T]`` and their standard errors, MALA acceptance and step."""

    log_z: float
    se: float
    s: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    ses: np.ndarray
    acceptance: np.ndarray
    dt: np.ndarray

    def __repr__(self):
        return f"ThermoResult(log_z={self.log_z:.6g} +- {self.se:.2g}, {self.s.size} nodes)"


def thermodynamic_integration(U1, U0, x0, *, log_z0: float | None = None, temperature: float = 1.0,
                              nodes: int = 8, dt="auto", n_steps: int = 200, seed: int = 0,
                              box=None, progress: bool = False) -> ThermoResult:
    """``log Z_1`` of ``U1`` at ``temperature`` from a reference ``U0`` with known ``log Z_0``
    (``U0.log_partition(T)`` when not given) and exact samples ``x0`` (N, d) of its Gibbs law.

    nodes : Gauss-Legendre nodes; n_steps : MALA steps at each node.
    dt : the MALA step, or ``"auto"``: at each node, pilot runs of ``PILOT_STEPS`` steps
        halve or double it (from the previous node's) until the acceptance is in ``ACCEPT``;
        broad laws then take long steps and relax in few of them."""
    if U1.dim != U0.dim:
        raise ValueError(f"U1 has dimension {U1.dim} but U0 has {U0.dim}")
    T = positive_float(temperature, "temperature")
    X = finite_array(x0, "x0")
    if X.ndim != 2 or X.shape[1] != U0.dim or X.shape[0] < 2:
        raise ValueError(f"x0 must hold at least 2 points of shape (N, {U0.dim}), got {X.shape}")
    lz0 = U0.log_partition(T) if log_z0 is None else float(log_z0)
    if not math.isfinite(lz0):
        raise ValueError(f"log_z0 must be finite, got {lz0}")
    s, w = gauss_legendre_01(nodes)
    per_particle = np.zeros(X.shape[0])
    alive = np.ones(X.shape[0], dtype=bool)
    means, ses, acc, steps = np.empty(s.size), np.empty(s.size), np.empty(s.size), np.empty(s.size)
    auto = isinstance(dt, str)
    if auto and dt != "auto":
        raise ValueError(f"dt must be a positive number or 'auto', got {dt!r}")
    step = 0.01 if auto else positive_float(dt, "dt")
    for i, si in enumerate(s):
        Us = Sum([1.0 - si, si], [U0, U1])
        if auto:  # pilot runs (valid MALA chains, moving the ensemble on) tune the step
            for k in range(PILOTS):
                ens = langevin(Us, X, step, PILOT_STEPS, method="mala", temperature=T, box=box,
                               seed=int(seed) * 1009 + 100 * i + k + 1, summaries=False)
                X, a = ens.positions[-1], float(ens.acceptance.mean())
                if ACCEPT[0] <= a <= ACCEPT[1]:
                    break
                step *= 2.0 if a > ACCEPT[1] else 0.5
        steps[i] = step
        ens = langevin(Us, X, step, n_steps, method="mala", temperature=T, seed=int(seed) * 1009 + i,
                       box=box, summaries=False, progress=progress)
        X = ens.positions[-1]
        alive &= ens.status == 0
        f = (U1.value(X) - U0.value(X)) / T
        means[i], ses[i] = f[alive].mean(), f[alive].std(ddof=1) / math.sqrt(alive.sum())
        acc[i] = float(ens.acceptance.mean())
        per_particle += w[i] * f
    if alive.sum() < 2:
        raise RuntimeError("fewer than 2 particles stayed in the box: no estimate")
    q = per_particle[alive]
    return ThermoResult(lz0 - float(q.mean()), float(q.std(ddof=1) / math.sqrt(q.size)), s, w, means, ses, acc,
                        steps)
