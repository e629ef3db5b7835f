"""Probability densities used as initial laws: log-pdf, pdf, sampling, and
their representation on a grid."""
from __future__ import annotations

import math

import numpy as np

from fokkerplanck._core.validate import (
    check_keys,
    finite_array,
    nearest,
    points,
    positive_float,
    sample_count,
    spd_matrix,
)
from fokkerplanck.energies import from_spec as energy_from_spec
from fokkerplanck.grid import Grid

__all__ = ["Density", "Gaussian", "GridDensity", "Gibbs", "from_spec"]

NORMALISE = ("warn", "raise", "silent")   # what Grid.check_density does with a density whose mass is not 1


class Density:
    """Base class: ``dim``, ``logpdf(x)``, ``sample(n, seed)``, ``to_spec()``."""

    dim: int

    def logpdf(self, x):
        raise NotImplementedError

    def pdf(self, x):
        return np.exp(self.logpdf(x))

    def sample(self, n: int, seed=None) -> np.ndarray:
        raise NotImplementedError

    def on_grid(self, grid: Grid) -> np.ndarray:
        """The density on ``grid``: centre values, normalised to unit grid mass."""
        if grid.ndim != self.dim:
            raise ValueError(f"density has dimension {self.dim} but grid has {grid.ndim}")
        return grid.density_from_logpdf(self.logpdf)


class Gaussian(Density):
    """``N(mean, cov)``; ``cov`` a scalar variance, a vector of variances or a matrix."""

    def __init__(self, mean, cov=1.0):
        self.mean = finite_array(np.atleast_1d(mean), "mean", ndim=1)
        d = self.mean.shape[0]
        c = finite_array(cov, "cov")
        if c.ndim == 0:
            c = c * np.eye(d)
        elif c.ndim == 1:
            if c.shape != (d,):
                raise ValueError(f"cov as a vector of variances must have shape ({d},), got {c.shape}")
            c = np.diag(c)
        self.cov = spd_matrix(c, "cov", d)
        self.dim = d
        self._chol = np.linalg.cholesky(self.cov)
        self._logdet = 2 * np.sum(np.log(np.diag(self._chol)))

    def logpdf(self, x):
        X, single = points(x, self.dim)
        from scipy.linalg import solve_triangular

        z = solve_triangular(self._chol, (X - self.mean).T, lower=True)
        v = -0.5 * np.sum(z**2, axis=0) - 0.5 * (self.dim * math.log(2 * math.pi) + self._logdet)
        return float(v[0]) if single else v

    def sample(self, n: int, seed=None) -> np.ndarray:
        n = sample_count(n, self.dim)
        rng = np.random.default_rng(seed)
        return self.mean + rng.standard_normal((n, self.dim)) @ self._chol.T

    def quadrature(self, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Tensor Gauss-Hermite rule with ``n`` nodes per axis: ``(nodes (n^d, d),
        weights (n^d,))`` with ``sum w f(x) ~ E[f]``, exact for polynomials of degree
        ``< 2n`` in each coordinate."""
        xi, w = np.polynomial.hermite_e.hermegauss(int(n))  # weight exp(-x^2/2)
        w = w / w.sum()
        grids = np.meshgrid(*[xi] * self.dim, indexing="ij")
        Xi = np.stack([g.ravel() for g in grids], axis=1)
        W = np.prod(np.stack(np.meshgrid(*[w] * self.dim, indexing="ij")).reshape(self.dim, -1), axis=0)
        return self.mean + Xi @ self._chol.T, W

    def to_spec(self):
        return {"type": "Gaussian", "mean": self.mean.tolist(), "cov": self.cov.tolist()}


class Gibbs(Density):
    """The Gibbs law ``exp(-U/T) / Z`` of an energy; ``log_partition`` defaults to
    the energy's closed form (pass a grid quadrature value where there is none)."""

    def __init__(self, energy, temperature: float = 1.0, log_partition: float | None = None):
        self.energy, self.temperature, self.dim = energy, positive_float(temperature, "temperature"), energy.dim
        self.log_z = energy.log_partition(temperature) if log_partition is None else float(log_partition)

    def logpdf(self, x):
        return -np.asarray(self.energy.value(x)) / self.temperature - self.log_z

    def sample(self, n: int, seed=None) -> np.ndarray:
        if hasattr(self.energy, "sample") and self.temperature == 1.0:
            return self.energy.sample(n, seed)
        raise NotImplementedError("exact sampling of this Gibbs law: sample it from a grid (Grid.sample)")

    def to_spec(self):
        return {"type": "Gibbs", "energy": self.energy.to_spec(), "temperature": self.temperature,
                "log_partition": self.log_z}


class GridDensity(Density):
    """A density given by its values on a :class:`Grid`: piecewise constant for
    sampling (exact), multilinear for :meth:`logpdf`, zero outside the box."""

    def __init__(self, grid: Grid, values, *, normalise: str = "warn"):
        if not isinstance(normalise, str) or normalise not in NORMALISE:
            raise ValueError(f"normalise must be one of {list(NORMALISE)}, got {normalise!r}"
                             + (nearest(normalise, NORMALISE) if isinstance(normalise, str) else ""))
        self.grid = grid
        self.values = grid.check_density(values, "values", normalise=normalise)
        self.dim = grid.ndim

    def logpdf(self, x):
        with np.errstate(divide="ignore"):
            return np.log(self.grid.interpolate(self.values, x))

    def sample(self, n: int, seed=None) -> np.ndarray:
        return self.grid.sample(self.values, n, seed)

    def on_grid(self, grid: Grid) -> np.ndarray:
        if grid == self.grid:
            return self.values.copy()
        return grid.density_from_function(lambda X: self.grid.interpolate(self.values, X))

    def to_spec(self):
        return {"type": "GridDensity", "grid": self.grid.to_spec(), "values": self.values.tolist()}


DENSITY_KEYS = {"Gaussian": {"type", "mean", "cov"}, "GridDensity": {"type", "grid", "values"},
                "Gibbs": {"type", "energy", "temperature", "log_partition"}}


def from_spec(spec: dict, *, allow_modules=()) -> Density:
    """Rebuild a density from its ``to_spec()`` dict (as read from a file or a config):
    types from :data:`DENSITY_KEYS` only, unknown keys an error naming the nearest."""

    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in DENSITY_KEYS:
        raise ValueError(f"unknown density type {kind!r}{nearest(kind, DENSITY_KEYS)}; known: {sorted(DENSITY_KEYS)}"
                         if isinstance(spec, dict) else f"a density spec is a table with a 'type', got {spec!r}")
    check_keys(spec, DENSITY_KEYS[kind], f"{kind} density")
    try:
        if kind == "Gaussian":
            return Gaussian(spec["mean"], spec.get("cov", 1.0))
        if kind == "GridDensity":
            return GridDensity(Grid.from_spec(spec["grid"]), np.asarray(spec["values"], dtype=float))
        return Gibbs(energy_from_spec(spec["energy"], allow_modules=allow_modules), spec.get("temperature", 1.0),
                     spec.get("log_partition"))
    except KeyError as exc:
        raise ValueError(f"{kind} density needs the key {exc}") from None
    except TypeError as exc:
        raise ValueError(f"{kind} density: {exc}") from None
