"""Density flows of a time-dependent energy ``U(x, t)`` on a grid.

``FokkerPlanck(path, grid, T, duration=D).solve(rho0, times)`` and
``Continuity(path, grid, duration=D).solve(rho0, times)`` solve along an
:class:`~fokkerplanck.energies.paths.EnergyPath` (the path parameter is ``t / D``); the
functions here are the same calls written as one function each.  Both return a
:class:`~fokkerplanck.results.PathSolution`, a :class:`~fokkerplanck.results.Trajectory`
whose diagnostics are taken against the Gibbs law of ``U(., t)`` at each saved time.

Fokker-Planck ``d_t rho = div(rho grad U(., t)) + T lap rho`` over ``[0, D]``: the
exponential midpoint rule (the second-order commutator-free Magnus integrator),
``rho(t + h) = exp(h L(t + h/2)) rho(t)`` with ``L(s)`` the Scharfetter-Gummel generator
of ``U(., s)``; each exponential is the exact propagator of the frozen energy
(:meth:`FokkerPlanck.frozen`, which shares the grid's faces).  Every step is an exact
Markov semigroup of a frozen generator, so densities stay non-negative and mass is kept
to round-off, whatever the step.  Step control by step doubling: one step ``h`` against
two steps ``h/2``; their L1 difference over 3 estimates the local error of the two half
steps (order 2), which must stay below ``tol``; the half-step result is kept (it is
positive; the extrapolation would not be).

The deterministic flow: positive MUSCL finite volumes with the face velocities of each
SSP-RK3 stage time, or the exact Lagrangian density from backward characteristics.
"""
from __future__ import annotations

from fokkerplanck.flows.continuity import Continuity
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.results import PathSolution

__all__ = ["solve_path", "solve_path_continuity"]


def solve_path(path, grid, rho0, times, *, temperature: float = 1.0, duration: float = 1.0, tol: float = 1e-6,
               h0: float | None = None, max_steps: int = 100_000) -> PathSolution:
    """``FokkerPlanck(path, grid, temperature, duration=duration).solve(rho0, times, tol=tol, ...)``:
    densities at ``times`` (physical, in ``[0, duration]``) of the Fokker-Planck flow along
    ``path``; ``tol`` the L1 local error per step."""
    if path.dim != grid.ndim:
        raise ValueError(f"the energy path has dimension {path.dim} but the grid has {grid.ndim}")
    return FokkerPlanck(path, grid, temperature, duration=duration).solve(rho0, times, tol=tol, h0=h0,
                                                                          max_steps=max_steps)


def solve_path_continuity(path, grid, rho0, times, *, duration: float = 1.0, cfl: float = 0.2,
                          method: str = "finite-volume", rtol: float = 1e-10, atol: float = 1e-12) -> PathSolution:
    """``Continuity(path, grid, method=method, duration=duration).solve(rho0, times, ...)``: the
    deterministic flow ``d_t rho = div(rho grad U(., t))`` along ``path``."""
    if path.dim != grid.ndim:
        raise ValueError(f"the energy path has dimension {path.dim} but the grid has {grid.ndim}")
    return Continuity(path, grid, method=method, duration=duration).solve(rho0, times, cfl=cfl, rtol=rtol, atol=atol)
