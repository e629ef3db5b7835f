"""What every grid solver does around its scheme: take the initial density, show
progress, refuse non-finite results, and say when mass reaches the walls."""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["WALL_MASS_TOL", "progress_bar", "initial_density", "check_finite", "warn_wall_mass"]

WALL_MASS_TOL = 1e-6


def progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar over ``total`` steps when ``enabled``, else None (silent by default)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm  # only when asked for: keeps solver import light

    return tqdm(total=total, desc=desc, leave=False)


def initial_density(grid, rho0, normalise: str) -> np.ndarray:
    """``rho0`` on the cells of ``grid``: a density object (``logpdf`` and ``on_grid``)
    is evaluated there, an array is checked by :meth:`Grid.check_density`."""
    if normalise not in ("warn", "raise", "silent"):
        raise ValueError(f"normalise must be 'warn', 'raise' or 'silent', got {normalise!r}")
    if hasattr(rho0, "logpdf") and hasattr(rho0, "on_grid"):
        return rho0.on_grid(grid)
    return grid.check_density(rho0, "rho0", normalise=normalise)


def check_finite(dens, times, what: str) -> None:
    """A solver result holding NaN or inf is an error, never a trajectory."""
    bad = ~np.isfinite(dens.reshape(dens.shape[0], -1)).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise FloatingPointError(f"{what} produced non-finite densities from t = {times[k]:g} on "
                                 f"({int(bad.sum())} of {bad.size} saved times)")


def warn_wall_mass(grid, times, dens, tol: float = WALL_MASS_TOL) -> float:
    """Warn when any saved density has more than ``tol`` mass within two cells of a wall."""
    masses = np.array([grid.mass_near_wall(r, 2) for r in dens])
    k = int(np.argmax(masses))
    if masses[k] > tol:
        warnings.warn(f"density mass {masses[k]:.3g} lies within two cells of the walls at t = {times[k]:g} "
                      f"(tolerance {tol:g}): the box is too small for the answer to mean anything",
                      RuntimeWarning, stacklevel=3)
    return float(masses[k])
