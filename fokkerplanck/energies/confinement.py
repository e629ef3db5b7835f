"""Is the Gibbs law ``exp(-U/T)`` of an energy normalisable, and does a grid hold it?
:func:`check_confining`."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fokkerplanck._core.validate import positive_float


# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfinementReport:
    """Result of :func:`check_confining`."""

    ok: bool
    boundary_mass: float  # Gibbs mass within two cells of the walls of the grid
    grows: bool           # U grows faster than (d+1) T log|x| along every probed ray
    min_growth: float     # smallest U(8R x) - U(4R x) over probed unit directions x
    message: str


def check_confining(energy, grid, temperature: float = 1.0, *, tol: float = 1e-6,
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
