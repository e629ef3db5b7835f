"""Uniform cell-centred boxes in 1, 2 or 3 dimensions.

A grid density is an array of shape ``grid.shape`` holding cell averages
(to second order: the values at the cell centres), with
``grid.integrate(rho) = sum(rho) * cell_volume = 1``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.special import logsumexp

from fokkerplanck._core.validate import check_memory, finite_array, points, positive_float, positive_int, sample_count
from fokkerplanck.energies import Energy

__all__ = ["Grid"]


class Grid:
    """``Grid(bounds, cells, periodic=False)``.

    bounds : ``[(lo_1, hi_1), ..., (lo_d, hi_d)]`` (or one pair in 1D), ``d <= 3``.
    cells : int (same on every axis) or one int per axis, each >= 2.
    periodic : bool or one bool per axis (used by the solvers' boundary conditions).
    """

    def __init__(self, bounds, cells, periodic=False):
        b = finite_array(bounds, "bounds")
        if b.ndim == 1:
            b = b[None, :]
        if b.ndim != 2 or b.shape[1] != 2 or not 1 <= b.shape[0] <= 3:
            raise ValueError(f"bounds must be [(lo, hi)] for 1 to 3 axes, got shape {b.shape}")
        if np.any(b[:, 1] <= b[:, 0]):
            raise ValueError(f"every axis needs lo < hi, got bounds {b.tolist()}")
        d = b.shape[0]
        try:
            c = [positive_int(ci, "cells", minimum=2) for ci in np.broadcast_to(np.asarray(cells, dtype=object), (d,))]
        except ValueError:
            raise ValueError(f"cells must be an integer >= 2 or {d} of them, got {cells!r}") from None
        # one density in float64 (solvers hold several): refuse before any allocation
        check_memory(8.0 * math.prod(c), f"a grid of {' x '.join(map(str, c))} cells (one density)", fraction=0.25)
        per = np.asarray(periodic)
        if per.dtype != bool or per.shape not in ((), (d,)):
            raise ValueError(f"periodic must be a bool or {d} bools, got {periodic!r}")
        per = np.broadcast_to(per, (d,))
        self.ndim = d
        self.bounds = tuple((float(lo), float(hi)) for lo, hi in b)
        self.cells = tuple(int(ci) for ci in c)
        self.periodic = tuple(bool(p) for p in per)
        self.spacing = tuple((hi - lo) / n for (lo, hi), n in zip(self.bounds, self.cells))
        self.cell_volume = float(np.prod(self.spacing))
        self.axes = tuple(lo + h * (np.arange(n) + 0.5) for (lo, _), h, n in zip(self.bounds, self.spacing, self.cells))
        self.faces = tuple(lo + h * np.arange(n + 1) for (lo, _), h, n in zip(self.bounds, self.spacing, self.cells))
        self._points = None

    # -- geometry ------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.cells

    @property
    def size(self) -> int:
        return int(np.prod(self.cells))

    @property
    def points(self) -> np.ndarray:
        """Cell centres as an (N, d) array in C order (last axis fastest)."""
        if self._points is None:
            mesh = np.meshgrid(*self.axes, indexing="ij")
            self._points = np.stack([m.ravel() for m in mesh], axis=1)
            self._points.setflags(write=False)
        return self._points

    def coords(self) -> list[np.ndarray]:
        """``meshgrid(*axes, indexing='ij')``."""
        return np.meshgrid(*self.axes, indexing="ij")

    def __repr__(self):
        return f"Grid(bounds={list(self.bounds)}, cells={self.cells}, periodic={self.periodic})"

    def __eq__(self, other):
        return isinstance(other, Grid) and (self.bounds, self.cells, self.periodic) == (
            other.bounds, other.cells, other.periodic)

    def to_spec(self) -> dict:
        return {"bounds": [list(b) for b in self.bounds], "cells": list(self.cells), "periodic": list(self.periodic)}

    @classmethod
    def from_spec(cls, spec: dict) -> "Grid":
        if not isinstance(spec, dict) or "bounds" not in spec or "cells" not in spec:
            raise ValueError(f"a grid spec is a dict with 'bounds' and 'cells', got {str(spec)[:200]}")
        unknown = set(spec) - {"bounds", "cells", "periodic"}
        if unknown:
            raise ValueError(f"grid: unknown keys {sorted(unknown)}; valid: ['bounds', 'cells', 'periodic']")
        return cls(spec["bounds"], spec["cells"], spec.get("periodic", False))

    # -- fields --------------------------------------------------------------------
    def check_field(self, f, name: str = "field") -> np.ndarray:
        """A finite float array of shape ``grid.shape`` (a flat one of length ``size`` is reshaped)."""
        arr = finite_array(f, name)
        if arr.shape == (self.size,) and self.ndim > 1:
            arr = arr.reshape(self.shape)
        if arr.shape != self.shape:
            raise ValueError(f"{name} must have the grid's shape {self.shape}, got {arr.shape}")
        return arr

    def check_density(self, rho, name: str = "rho0", *, normalise: str = "warn", rtol: float = 1e-10) -> np.ndarray:
        """Validate a grid density: shape, finite, non-negative, positive mass.

        ``normalise``: ``"warn"`` rescales a density whose mass differs from 1
        by more than ``rtol`` and warns with the mass; ``"raise"`` refuses it;
        ``"silent"`` rescales quietly.
        """
        if normalise not in ("warn", "raise", "silent"):
            raise ValueError(f"normalise must be 'warn', 'raise' or 'silent', got {normalise!r}")
        rho = self.check_field(rho, name)
        if np.any(rho < 0):
            i = np.unravel_index(np.argmin(rho), rho.shape)
            raise ValueError(f"{name} has negative values (min {rho[i]:.3g} at cell {tuple(int(j) for j in i)})")
        mass = self.integrate(rho)
        if mass <= 0:
            raise ValueError(f"{name} has zero mass on the grid")
        if abs(mass - 1.0) > rtol:
            if normalise == "raise":
                raise ValueError(f"{name} is not normalised: its mass on the grid is {mass!r}")
            if normalise == "warn":
                warnings.warn(f"{name} had mass {mass:.12g} on the grid; normalised to 1", RuntimeWarning, stacklevel=3)
            rho = rho / mass
        return rho

    def integrate(self, f) -> float:
        """``int f`` by the midpoint rule (exact for cell averages)."""
        return float(np.sum(f) * self.cell_volume)

    def evaluate(self, fn) -> np.ndarray:
        """``fn(points)`` on all cell centres (``fn`` takes (N, d)), shaped like the grid.
        An :class:`~fokkerplanck.energies.Energy` is evaluated by its ``value``."""

        f = fn.value if isinstance(fn, Energy) else fn
        out = np.asarray(f(self.points), dtype=float)
        if out.shape != (self.size,):
            raise ValueError(f"function returned shape {out.shape}, expected ({self.size},)")
        return out.reshape(self.shape)

    def log_density_from_logpdf(self, logf) -> np.ndarray:
        """``log`` of the normalised grid density ``exp(logf) / int exp(logf)``, finite where
        the density itself underflows (``logf`` a callable on (N, d) points or an array of
        log-values)."""
        L = self.evaluate(logf) if callable(logf) else finite_array(logf, "log-density")
        L = np.asarray(L, dtype=float).reshape(self.shape)
        if np.any(np.isnan(L)) or np.any(L == np.inf):
            raise ValueError("log-density contains NaN or +inf")
        lz = logsumexp(L) + math.log(self.cell_volume)
        if not np.isfinite(lz):
            raise ValueError("density is zero on every cell")
        return L - lz

    def density_from_logpdf(self, logf) -> np.ndarray:
        """Normalised grid density ``exp(logf) / int exp(logf)`` (``logf`` a callable
        on (N, d) points or an array of log-values); stable for large magnitudes."""
        return np.exp(self.log_density_from_logpdf(logf))

    def density_from_function(self, f) -> np.ndarray:
        """Normalised grid density from a non-negative function (or array of values)."""
        v = self.evaluate(f) if callable(f) else self.check_field(f, "values")
        return self.check_density(v, "density", normalise="silent")

    def log_partition(self, energy, temperature: float = 1.0) -> float:
        """``log int_box exp(-U/T)`` by the midpoint rule (second order in h)."""
        T = positive_float(temperature, "temperature")
        return float(logsumexp(-self.evaluate(energy) / T) + math.log(self.cell_volume))

    def gibbs(self, energy, temperature: float = 1.0) -> np.ndarray:
        """Discrete Gibbs density ``exp(-U_i/T) / sum_j exp(-U_j/T) vol`` on the cell centres."""
        T = positive_float(temperature, "temperature")
        return self.density_from_logpdf(-self.evaluate(energy) / T)

    def mass_near_wall(self, rho, ncells: int = 2) -> float:
        """Mass within ``ncells`` cells of any non-periodic wall."""
        rho = np.asarray(rho)
        mask = np.zeros(self.shape, dtype=bool)
        for ax in range(self.ndim):
            if self.periodic[ax]:
                continue
            sl = [slice(None)] * self.ndim
            sl[ax] = slice(0, ncells)
            mask[tuple(sl)] = True
            sl[ax] = slice(self.cells[ax] - ncells, None)
            mask[tuple(sl)] = True
        return float(np.sum(rho[mask]) * self.cell_volume)

    # -- sampling and interpolation ----------------------------------------------------
    def sample(self, rho, n: int, seed=None) -> np.ndarray:
        """``n`` exact samples of the piecewise-constant density ``rho`` (cell chosen
        with probability ``rho_i vol``, then uniform inside the cell): shape (n, d)."""
        rho = self.check_density(rho, "rho")
        try:
            n = sample_count(n, self.ndim)
        except ValueError:
            raise ValueError(f"n must be a non-negative integer, got {n!r}") from None
        rng = np.random.default_rng(seed)
        prob = rho.ravel() / rho.sum()
        idx = rng.choice(self.size, size=int(n), p=prob)
        multi = np.unravel_index(idx, self.shape)
        u = rng.random((int(n), self.ndim))
        return np.stack([lo + h * (m + u[:, a]) for a, ((lo, _), h, m) in enumerate(zip(self.bounds, self.spacing, multi))], axis=1)

    def interpolate(self, field, x, *, fill_value: float = 0.0) -> np.ndarray:
        """Multilinear interpolation of a grid field at points (N, d); between the
        outermost cell centres and the wall the boundary value is held constant;
        outside the box ``fill_value``."""
        field = self.check_field(field, "field")
        X, single = points(x, self.ndim)
        # pad each axis with its wall so the interpolant covers the whole box
        axes, f = [], field
        for a in range(self.ndim):
            lo, hi = self.bounds[a]
            axes.append(np.concatenate([[lo], self.axes[a], [hi]]))
            f = np.concatenate([np.take(f, [0], axis=a), f, np.take(f, [-1], axis=a)], axis=a)
        from scipy.interpolate import RegularGridInterpolator  # 0.1 s to import: only when used

        itp = RegularGridInterpolator(axes, f, method="linear", bounds_error=False, fill_value=fill_value)
        out = itp(X)
        return float(out[0]) if single else out
