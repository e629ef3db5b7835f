"""Trajectories of grid densities, their diagnostics, and HDF5 storage.

HDF5 layout (version 1)::

    /                      attrs: format = "fokkerplanck.trajectory", version = 1,
                                  flow, temperature, energy (JSON spec), grid (JSON spec),
                                  scheme (JSON: method and options), package_version
    /times                 (n,) float64
    /densities             (n, *grid.shape) float64, chunked one time per chunk, gzip
    /axes/axis_<a>         cell centres of axis a
    /diagnostics/<name>    (n,) float64: kl, fisher, tv, mass, ratio, e_lap, e_grad2
    /diagnostics/mean      (n, d), /diagnostics/cov (n, d, d)

Files are written atomically: to a temporary name in the same folder, then
renamed, so a crash never leaves a half-written file under the final name.
"""
from __future__ import annotations

import json
import os
import tempfile
from functools import cached_property

import h5py
import numpy as np
from scipy.special import logsumexp

from . import diagnostics as D
from . import energies as E
from .fluxes import faces, sg_fisher
from .grid import Grid

__all__ = ["Trajectory", "atomic_h5"]

FORMAT = "fokkerplanck.trajectory"
VERSION = 1


class atomic_h5:
    """Context manager: an ``h5py.File`` open for writing under a temporary name,
    renamed to ``path`` on success and removed on any exception (Ctrl-C included)."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def __enter__(self) -> h5py.File:
        d = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".", suffix=".tmp", dir=d)
        os.close(fd)
        self.f = h5py.File(self.tmp, "w")
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)
        return False


class Trajectory:
    """Grid densities at saved times, with diagnostics against ``rho* ~ exp(-U/T)``.

    Attributes: ``times`` (n,), ``densities`` (n, *grid.shape), ``grid``,
    ``energy``, ``temperature``, ``flow`` (``"fokker-planck"`` or
    ``"continuity"``), ``scheme`` (dict: method and options), ``info`` (dict of
    run statistics).
    """

    def __init__(self, grid: Grid, times, densities, energy, temperature: float, *, flow: str,
                 scheme: dict, info: dict | None = None):
        self.grid = grid
        self.times = np.asarray(times, dtype=float)
        self.densities = np.asarray(densities, dtype=float)
        if self.densities.shape != (self.times.size, *grid.shape):
            raise ValueError(f"densities must have shape {(self.times.size, *grid.shape)}, got {self.densities.shape}")
        self.energy = energy
        self.temperature = float(temperature)
        self.flow = flow
        self.scheme = dict(scheme)
        self.info = dict(info or {})

    def __len__(self):
        return self.times.size

    def __repr__(self):
        return (f"Trajectory(flow={self.flow!r}, method={self.scheme.get('method')!r}, {len(self)} times in "
                f"[{self.times[0]:g}, {self.times[-1]:g}], grid={self.grid.cells})")

    # -- the reference law --------------------------------------------------------
    @cached_property
    def energy_values(self) -> np.ndarray:
        return self.grid.evaluate(self.energy)

    @cached_property
    def log_gibbs(self) -> np.ndarray:
        """Log of the normalised discrete Gibbs density (finite where it underflows)."""
        L = -self.energy_values / self.temperature
        return L - (logsumexp(L) + np.log(self.grid.cell_volume))

    @cached_property
    def gibbs(self) -> np.ndarray:
        """Normalised discrete Gibbs density on the grid."""
        return np.exp(self.log_gibbs)

    # -- diagnostics -------------------------------------------------------------------
    def mass(self) -> np.ndarray:
        return self.densities.reshape(len(self), -1).sum(axis=1) * self.grid.cell_volume

    def kl(self) -> np.ndarray:
        """``KL(rho_t || rho*)`` against the discrete Gibbs law on the same grid."""
        return D.kl_grid(self.grid, self.densities, self.log_gibbs)

    def fisher(self) -> np.ndarray:
        """Discrete relative Fisher information consistent with the Scharfetter-Gummel
        scheme: ``d/dt KL = -T I`` holds exactly for the semi-discrete Fokker-Planck flow."""
        return sg_fisher(self.grid, self.energy_values, self.temperature, self.densities, self._faces)

    @cached_property
    def _faces(self):
        return faces(self.grid)

    def tv(self) -> np.ndarray:
        return D.tv_grid(self.grid, self.densities, self.gibbs)

    def expect(self, f) -> np.ndarray:
        """``E_{rho_t}[f]`` for ``f`` a callable on (N, d) points or an array of cell
        values (grid shape, or (size,) / (size, k) flat): shape (n,) or (n, k)."""
        vals = f(self.grid.points) if callable(f) else np.asarray(f, dtype=float)
        vals = np.asarray(vals, dtype=float)
        flat = vals.reshape(self.grid.size) if vals.size == self.grid.size else vals.reshape(self.grid.size, -1)
        return D.expect_grid(self.grid, self.densities, flat)

    def mean(self) -> np.ndarray:
        return D.expect_grid(self.grid, self.densities, self.grid.points).reshape(len(self), -1)

    def cov(self) -> np.ndarray:
        X = self.grid.points
        m = self.mean()
        second = D.expect_grid(self.grid, self.densities, np.einsum("ni,nj->nij", X, X).reshape(self.grid.size, -1))
        d = self.grid.ndim
        return second.reshape(len(self), d, d) - np.einsum("ti,tj->tij", m, m)

    @cached_property
    def _ratio_terms(self):
        return D.ratio_terms_grid(self.grid, self.densities, self.energy)

    def e_lap(self) -> np.ndarray:
        return self._ratio_terms[0]

    def e_grad2(self) -> np.ndarray:
        return self._ratio_terms[1]

    def ratio(self) -> np.ndarray:
        """``R_t = T E[lap U] / E[|grad U|^2]``."""
        elap, eg2 = self._ratio_terms
        return self.temperature * elap / eg2

    # -- storage --------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the trajectory and its diagnostics to HDF5 (atomically)."""
        with atomic_h5(path) as f:
            self.write(f)

    def write(self, g: h5py.Group) -> None:
        from . import __version__

        g.attrs.update({
            "format": FORMAT, "version": VERSION, "flow": self.flow, "temperature": self.temperature,
            "energy": json.dumps(self.energy.to_spec()), "grid": json.dumps(self.grid.to_spec()),
            "scheme": json.dumps(self.scheme), "info": json.dumps(self.info, default=float),
            "package_version": __version__,
        })
        g.create_dataset("times", data=self.times)
        chunks = (1, *self.grid.shape)
        g.create_dataset("densities", data=self.densities, chunks=chunks, compression="gzip", compression_opts=4,
                         shuffle=True)
        ax = g.create_group("axes")
        for a, c in enumerate(self.grid.axes):
            ax.create_dataset(f"axis_{a}", data=c)
        dg = g.create_group("diagnostics")
        for name in ("kl", "fisher", "tv", "mass", "ratio", "e_lap", "e_grad2", "mean", "cov"):
            dg.create_dataset(name, data=getattr(self, name)())

    @classmethod
    def load(cls, path, group: str | None = None) -> "Trajectory":
        """Read a file written by :meth:`save`, or one flow's group of an ``fpk run``
        file (``group``: ``"fokker-planck"`` or ``"continuity"``, default the first
        present); a foreign or damaged file raises a ValueError that says what is wrong."""
        try:
            f = h5py.File(path, "r")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise ValueError(f"{path} is not a readable HDF5 file ({exc})") from None
        with f:
            if f.attrs.get("format") == "fokkerplanck.run":
                names = [k for k in ("fokker-planck", "continuity") if k in f]
                g = group or (names[0] if names else None)
                if g not in names:
                    raise ValueError(f"{path} has no trajectory group {g!r}; available: {names}")
                return cls.read(f[g], f"{path}:{g}")
            return cls.read(f, str(path))

    @classmethod
    def read(cls, g: h5py.Group, where: str = "group") -> "Trajectory":
        fmt = g.attrs.get("format")
        if fmt != FORMAT:
            raise ValueError(f"{where} is not a fokkerplanck trajectory (format attribute {fmt!r})")
        ver = int(g.attrs.get("version", -1))
        if ver != VERSION:
            raise ValueError(f"{where} has trajectory layout version {ver}; this toolkit reads version {VERSION}")
        missing = [k for k in ("times", "densities") if k not in g]
        if missing:
            raise ValueError(f"{where} is damaged: missing datasets {missing}")
        try:
            grid = Grid.from_spec(json.loads(g.attrs["grid"]))
            energy = E.from_spec(json.loads(g.attrs["energy"]))
            return cls(grid, g["times"][()], g["densities"][()], energy, float(g.attrs["temperature"]),
                       flow=str(g.attrs["flow"]), scheme=json.loads(g.attrs["scheme"]),
                       info=json.loads(g.attrs.get("info", "{}")))
        except (KeyError, json.JSONDecodeError, OSError) as exc:
            raise ValueError(f"{where} is damaged: {exc}") from None
