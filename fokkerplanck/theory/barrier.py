"""Barrier functionals ``B(rho) = beta - rho(unsafe)`` along flows of composed energies.

``U_safe(lambda) = U_plus - lambda U_minus``: ``U_plus`` is the energy of the wanted law,
``U_minus`` one that is low on the unsafe set, so subtracting it raises the energy
there.  Along a flow (Fokker-Planck or continuity) started from ``rho_0``,
``B(rho_t) >= 0`` for all saved ``t`` is the safety certificate; :func:`smallest_lambda`
finds the smallest ``lambda`` giving it, by bisection over exact grid flows.

The unsafe set is given by an indicator on points (N, d) -> bool.  On a grid its mass
is the sum over cells of ``rho`` times the fraction of the cell inside the set,
measured on ``sub^d`` points per cell (``sub = 8``: a cell cut by a smooth boundary
contributes an error of at most ``1/sub`` of its mass, and such cells are a thin layer,
so the set's mass error is O(h / sub)).  From particles it is the fraction inside,
with the binomial standard error.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from fokkerplanck._core.validate import finite_array, positive_float
from fokkerplanck.energies import Sum
from fokkerplanck.flows.continuity import Continuity
from fokkerplanck.flows.fokker_planck import FokkerPlanck

__all__ = ["cell_fractions", "unsafe_mass", "particle_unsafe_mass", "BarrierResult", "smallest_lambda", "FLOWS"]


def cell_fractions(grid, unsafe, sub: int = 8) -> np.ndarray:
    """Fraction of each cell of ``grid`` inside the set ``unsafe`` (an indicator callable
    on (N, d) points), from ``sub^d`` evenly spaced points per cell."""
    d = grid.ndim
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    sub_pts = np.stack(np.meshgrid(*[offs] * d, indexing="ij"), axis=-1).reshape(-1, d) * np.asarray(grid.spacing)
    frac = np.zeros(grid.size)
    P = grid.points
    for o in sub_pts:
        inside = np.asarray(unsafe(P + o))
        if inside.shape != (grid.size,):
            raise ValueError(f"the unsafe-set indicator returned shape {inside.shape}, expected ({grid.size},)")
        frac += inside.astype(bool)
    return (frac / len(sub_pts)).reshape(grid.shape)


def unsafe_mass(trajectory, unsafe, sub: int = 8) -> np.ndarray:
    """``rho_t(unsafe)`` at every time of a grid :class:`~fokkerplanck.results.Trajectory`."""
    F = cell_fractions(trajectory.grid, unsafe, sub)
    vol = trajectory.grid.cell_volume
    return np.array([float(np.sum(r * F) * vol) for r in trajectory.densities])


def particle_unsafe_mass(ensemble, unsafe) -> tuple[np.ndarray, np.ndarray]:
    """Per save, the fraction of live particles in ``unsafe`` and its binomial standard error."""
    if ensemble.positions is None:
        raise ValueError("the ensemble kept no positions (run with store='memory')")
    p, se = [], []
    for X in ensemble.positions:
        ok = np.all(np.isfinite(X), axis=1)
        inside = np.asarray(unsafe(X[ok])).astype(bool)
        q = float(inside.mean())
        p.append(q)
        se.append(math.sqrt(max(q * (1 - q), 1.0 / ok.sum()) / ok.sum()))  # floor: no zero error bar
    return np.array(p), np.array(se)


def _fokker_planck(U, grid, rho0, times, T):
    return FokkerPlanck(U, grid, T).solve(rho0, times)


def _continuity(U, grid, rho0, times, T):
    return Continuity(U, grid, temperature=T).solve(rho0, times)


FLOWS = {"fokker_planck": _fokker_planck, "continuity": _continuity}


@dataclass
class BarrierResult:
    """``lam`` the smallest safe lambda (within ``tol``); ``history`` the bisection's
    ``(lambda, max_t rho_t(unsafe))`` pairs; ``mass`` ``rho_t(unsafe)`` at ``lam``."""

    lam: float
    tol: float
    beta: float
    flow: str
    times: np.ndarray
    mass: np.ndarray
    history: list

    def __repr__(self):
        return f"BarrierResult(lambda*={self.lam:.6g} +- {self.tol:.1g}, {self.flow}, beta={self.beta:g})"


def smallest_lambda(U_plus, U_minus, grid, rho0, times, unsafe, beta: float, *, flow: str = "fokker_planck",
                    temperature: float = 1.0, lam_max: float = 1.0, tol: float = 1e-3, sub: int = 8) -> BarrierResult:
    """The smallest ``lambda`` in ``[0, lam_max]`` with ``beta - rho_t(unsafe) >= 0`` at every
    time of ``times``, along the exact grid flow ``flow`` (a name in :data:`FLOWS`) of
    ``U_plus - lambda U_minus`` from ``rho0``; to within ``tol`` (bisection).

    Bisection assumes the unsafe mass falls as ``lambda`` grows; the ends are checked (0 if
    already safe, an error if ``lam_max`` is not) and every evaluation is kept in ``history``,
    so a non-monotone case shows there."""
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {sorted(FLOWS)}, got {flow!r}")
    beta = float(beta)
    if not 0 < beta < 1:
        raise ValueError(f"beta must lie in (0, 1), got {beta!r}")
    T = positive_float(temperature, "temperature")
    lam_max, tol = positive_float(lam_max, "lam_max"), positive_float(tol, "tol")
    times = finite_array(times, "times", ndim=1)
    F = cell_fractions(grid, unsafe, sub)
    history = []

    def worst(lam):
        U = Sum([1.0, -lam], [U_plus, U_minus])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # wall mass of intermediate lambdas
            tr = FLOWS[flow](U, grid, rho0, times, T)
        m = np.array([float(np.sum(r * F) * grid.cell_volume) for r in tr.densities])
        history.append((float(lam), float(m.max())))
        return m

    m0 = worst(0.0)
    if m0.max() <= beta:
        return BarrierResult(0.0, tol, beta, flow, times, m0, history)
    mhi = worst(lam_max)
    if mhi.max() > beta:
        raise ValueError(f"even lambda = lam_max = {lam_max:g} leaves max_t rho_t(unsafe) = {mhi.max():.4g} > "
                         f"beta = {beta:g}: raise lam_max")
    lo, hi, mass = 0.0, lam_max, mhi
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        m = worst(mid)
        if m.max() <= beta:
            hi, mass = mid, m
        else:
            lo = mid
    return BarrierResult(hi, hi - lo, beta, flow, times, mass, history)
