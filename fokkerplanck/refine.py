"""Ground truth with error bars: Richardson extrapolation over grid resolutions.

``FokkerPlanck(U, grid).solve(rho0, times, refine=True)`` (and the same for
:class:`~fokkerplanck.Continuity`) also solves on the grids with 2 and 4 times
the cell size and attaches a :class:`Refinement` to the trajectory.  For a
quantity ``Q`` (KL, ``R_t``, the density) with error ``C h^p``:

* the error estimate of the answer on the user's grid is
  ``(Q_2h - Q_h) / (2^p - 1)`` (``p = 2``: the Scharfetter-Gummel scheme, the
  MUSCL scheme where smooth and the midpoint quadrature of the Lagrangian
  densities are all second order);
* the extrapolated value ``Q_h - (Q_2h - Q_h) / (2^p - 1)`` is accurate to
  ``O(h^{p+1})`` or better;
* the third level gives the observed order ``log2((Q_4h - Q_2h) / (Q_2h - Q_h))``:
  far from ``p`` means the grids are not in the asymptotic regime (the density
  is not resolved), and the estimate is then not to be trusted: a warning says so.

What it does not estimate: the truncation of the box (the walls; that is what
the wall-mass warning reports) and the time integration error (exact here, or
the solver's own tolerance).  Densities are compared on the coarser grid
(``2h``) after averaging the ``2^d`` fine cells of each coarse cell.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from fokkerplanck.grid import Grid

__all__ = ["Refinement", "refine", "coarse_grid", "restrict", "ORDER_TOLERANCE"]

ORDER_TOLERANCE = 0.6  # |observed - assumed order| above which the estimate is flagged


def coarse_grid(grid, factor: int):
    """The grid with ``factor`` times the cell size on the same box."""

    bad = [c for c in grid.cells if c % factor or c // factor < 4]
    if bad:
        raise ValueError(f"refine needs every axis's cells divisible by {factor} with at least 4 coarse cells; "
                         f"the grid has cells {grid.cells}")
    return Grid(grid.bounds, [c // factor for c in grid.cells], grid.periodic)


def restrict(grid, rho, factor: int) -> np.ndarray:
    """Average ``factor^d`` fine cells into each coarse cell (densities of shape
    ``(..., *grid.shape)``): mass is kept exactly."""
    rho = np.asarray(rho, dtype=float)
    lead = rho.shape[:rho.ndim - grid.ndim]
    shape = list(lead)
    for c in grid.cells:
        shape += [c // factor, factor]
    r = rho.reshape(shape)
    axes = tuple(len(lead) + 2 * a + 1 for a in range(grid.ndim))
    return r.mean(axis=axes)


@dataclass
class Refinement:
    """Richardson estimates of a trajectory's space-discretisation error.

    cells : the grids' cells, finest (the trajectory's) first.
    kl, ratio : values on the trajectory's grid; ``*_error`` the estimates of their
        error (value minus the limit h -> 0); ``*_extrapolated`` the limits.
    density_error : per time, the L1 norm of the estimated density error (on the
        ``2h`` grid); ``densities_extrapolated`` on that grid.
    observed_order : per quantity, the median observed order over the saved times
        where it is measurable (NaN otherwise).
    reliable : the observed orders are within ``ORDER_TOLERANCE`` of ``order``.
    """

    cells: list
    order: float
    kl: np.ndarray
    kl_error: np.ndarray
    kl_extrapolated: np.ndarray
    ratio: np.ndarray
    ratio_error: np.ndarray
    ratio_extrapolated: np.ndarray
    density_error: np.ndarray
    densities_extrapolated: np.ndarray
    observed_order: dict
    reliable: bool
    coarse: list = field(default_factory=list, repr=False)  # the coarser trajectories

    def write(self, g) -> None:
        g.attrs.update({"cells": np.array(self.cells), "order": self.order, "reliable": self.reliable})
        for k in ("kl", "kl_error", "kl_extrapolated", "ratio", "ratio_error", "ratio_extrapolated",
                  "density_error"):
            g.create_dataset(k, data=getattr(self, k))
        g.create_dataset("densities_extrapolated", data=self.densities_extrapolated, compression="gzip")
        for k, v in self.observed_order.items():
            g.attrs[f"observed_order_{k}"] = v

    @classmethod
    def read(cls, g) -> "Refinement":
        arrays = {k: g[k][()] for k in ("kl", "kl_error", "kl_extrapolated", "ratio", "ratio_error",
                                        "ratio_extrapolated", "density_error", "densities_extrapolated")}
        orders = {k.removeprefix("observed_order_"): float(v) for k, v in g.attrs.items()
                  if k.startswith("observed_order_")}
        return cls([tuple(int(c) for c in row) for row in np.atleast_2d(g.attrs["cells"])], float(g.attrs["order"]),
                   observed_order=orders, reliable=bool(g.attrs["reliable"]), **arrays)


def _observed(q0, q1, q2) -> float:
    """Median observed order from three levels (finest first), over the saved times
    whose differences are a sizeable part (>= 1e-3) of the largest: where the
    discretisation error is tiny (t = 0, a converged law) other errors decide."""
    d1, d2 = np.abs(np.asarray(q1) - q0), np.abs(np.asarray(q2) - q1)
    ok = (d1 >= 1e-3 * np.max(d1, initial=0.0)) & (d1 > 0) & (d2 > 0)
    if not np.any(ok):
        return float("nan")
    return float(np.median(np.log2(d2[ok] / d1[ok])))


def _quietly(fn):
    with warnings.catch_warnings():  # the finest level has said what there is to say
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn()


def refine(solve, trajectory, rho0, levels: int = 3, order: float = 2.0) -> Refinement:
    """The :class:`Refinement` of ``trajectory`` (computed on the finest grid).
    ``solve(grid, rho0)`` returns the trajectory of the same problem on ``grid``."""
    if int(levels) != levels or levels < 2:
        raise ValueError(f"refine needs at least 2 levels, got {levels!r}")
    grid = trajectory.grid
    grids = [coarse_grid(grid, 2**k) for k in range(1, int(levels))]
    trs = [trajectory]
    for k, g in enumerate(grids, start=1):
        r0 = rho0 if hasattr(rho0, "on_grid") else restrict(grid, rho0, 2**k)
        trs.append(_quietly(lambda: solve(g, r0)))
    f = 2.0**order - 1.0
    kls = [_quietly(t.kl) for t in trs]
    ratios = [t.ratio() for t in trs]
    # Q_h - Q = C h^p and Q_2h - Q = 2^p C h^p, so the error of Q_h is (Q_2h - Q_h) / (2^p - 1)
    kl_err, r_err = (kls[1] - kls[0]) / f, (ratios[1] - ratios[0]) / f
    fine2 = restrict(grid, trajectory.densities, 2)
    d_err = (trs[1].densities - fine2) / f
    vol2 = grids[0].cell_volume
    d_l1 = np.abs(d_err).reshape(len(trajectory), -1).sum(axis=1) * vol2
    observed = {}
    if len(trs) >= 3:
        observed["kl"] = _observed(kls[0], kls[1], kls[2])
        observed["ratio"] = _observed(ratios[0], ratios[1], ratios[2])
        mid = restrict(grids[0], trs[1].densities, 2)
        fine4 = restrict(grid, trajectory.densities, 4)
        n1 = np.abs(mid - fine4).reshape(len(trajectory), -1).sum(axis=1)  # |rho_2h - rho_h| on the 4h grid
        n2 = np.abs(trs[2].densities - mid).reshape(len(trajectory), -1).sum(axis=1)  # |rho_4h - rho_2h|
        observed["density"] = _observed(np.zeros_like(n1), n1, n1 + n2)  # |differences| n1, n2
    finite = [v for v in observed.values() if np.isfinite(v)]
    reliable = bool(finite) and all(abs(v - order) <= ORDER_TOLERANCE for v in finite) if len(trs) >= 3 else True
    if not reliable:
        warnings.warn(f"refine: observed orders {', '.join(f'{k} {v:.2f}' for k, v in observed.items())} are not "
                      f"near {order:g} on the grids {[t.grid.cells for t in trs]}: the density is not resolved "
                      "well enough for the error estimate to be trusted (refine the grid)", RuntimeWarning,
                      stacklevel=3)
    return Refinement([t.grid.cells for t in trs], float(order), kls[0], kl_err, kls[0] - kl_err, ratios[0], r_err,
                      ratios[0] - r_err, d_l1, fine2 - d_err, observed, reliable, coarse=trs[1:])
