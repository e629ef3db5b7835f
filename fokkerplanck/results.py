"""Trajectories of grid densities, their diagnostics, and HDF5 storage.

HDF5 layout (version 1)::

    /                      attrs: format = "fokkerplanck.results", version = 1,
                                  flow, temperature, energy (JSON spec), grid (JSON spec),
                                  scheme (JSON: method and options), package_version
    /                      plain attrs too: grid_bounds, grid_cells, method, energy_type
    /times                 (n,) float64, a dimension scale ("time")
    /x_<a>                 cell centres of axis a, a dimension scale ("x_<a>")
    /densities             (n, *grid.shape) float64, chunked one time per chunk, gzip;
                           dimensions time, x_0, ...
    /axes/axis_<a>         cell centres of axis a (as /x_<a>)
    /diagnostics/<name>    (n,) float64: kl, fisher, tv, mass, ratio, e_lap, e_grad2;
                           valid, mass_ok, resolved (bool), coarse_kl_loss
                           (Trajectory.validity); every dataset has a description attr
    /diagnostics/mean      (n, d), /diagnostics/cov (n, d, d)
    /refinement/           optional (solve(..., refine=True)): kl, kl_error, kl_extrapolated,
                           ratio*, density_error, densities_extrapolated; attrs cells, order,
                           reliable, observed_order_<quantity>

Files are written atomically: to a temporary name in the same folder, then
renamed, so a crash never leaves a half-written file under the final name
(:mod:`fokkerplanck._core.files`).

Reading a file never imports or runs code: an energy spec that names user
kernels (:class:`~fokkerplanck.energies.Custom`) is rebuilt only when the
caller passes the energy or allows its modules; otherwise the trajectory
loads with :class:`SpecOnlyEnergy` and answers its diagnostics from the
values stored in the file.
"""
from __future__ import annotations

import json
import os
import warnings
from functools import cached_property

import h5py
import numpy as np

from fokkerplanck import diagnostics as D, energies as E
from fokkerplanck._core.files import atomic_h5, open_h5
from fokkerplanck._core.validate import check_memory
from fokkerplanck._core.version import __version__
from fokkerplanck.grid import Grid
from fokkerplanck.operators.fluxes import faces, sg_fisher
from fokkerplanck.refine import Refinement

__all__ = ["PathSolution", "Trajectory", "atomic_h5", "SpecOnlyEnergy", "MASS_TOL", "RESOLUTION_TOL", "SUBSAMPLE_TOL"]

DIAGNOSTIC_DESCRIPTIONS = {
    "kl": "KL(rho_t || rho*) against the discrete Gibbs law on the same grid",
    "fisher": "relative Fisher information, discrete (Scharfetter-Gummel): d/dt KL = -T I for the Fokker-Planck flow",
    "tv": "total variation distance to the discrete Gibbs law",
    "mass": "grid mass of rho_t (1 for a probability law held by the box)",
    "ratio": "R_t = T E[lap U] / E[|grad U|^2]",
    "e_lap": "E_rho_t[lap U], exact derivatives at the cell centres",
    "e_grad2": "E_rho_t[|grad U|^2], exact derivatives at the cell centres",
    "mean": "mean of rho_t, shape (times, d)",
    "cov": "covariance of rho_t, shape (times, d, d)",
}
VALIDITY_DESCRIPTIONS = {
    "mass_ok": "grid mass within MASS_TOL of 1 at this time",
    "resolved": ("density resolved on the grid: KL lost by pooling cells in pairs <= RESOLUTION_TOL of KL (cell "
                 "averages), or the midpoint rule at 2h within SUBSAMPLE_TOL of KL and mass (point values)"),
    "valid": "mass_ok and resolved: the diagnostics at this time are those of a probability law on the grid",
    "coarse_kl_loss": ("cell averages: KL minus the KL of the cells pooled in pairs along every axis; point values: "
                       "the largest deviation of the KL of a sub-grid of every other cell (midpoint rule at 2h)"),
}
RESOLUTION_TOL = 0.03   # relative KL lost under 2x pooling above which a density is unresolved
SUBSAMPLE_TOL = 0.1     # point values: relative deviation of the 2h midpoint rule above which unresolved
MASS_TOL = 1e-3  # |mass - 1| above which a diagnostic of probability laws warns

FORMAT = "fokkerplanck.results"
VERSION = 1


class SpecOnlyEnergy:
    """Stands in for an energy that a file names but that was not allowed to load
    (user code): it has the spec and the dimension, and raises on evaluation."""

    def __init__(self, spec: dict, reason: str):
        self.spec, self.reason = spec, reason
        self.dim = int(spec.get("dim", 0)) if isinstance(spec.get("dim", 0), int) else 0

    def to_spec(self) -> dict:
        return self.spec

    def _refuse(self, *args, **kwargs):
        raise ValueError(f"the energy of this file was not rebuilt: {self.reason}")

    value = grad = laplacian = hessian = residual = log_partition = lap_and_grad2 = at = _refuse

    @property
    def kernels(self):
        self._refuse()

    def __repr__(self):
        return f"SpecOnlyEnergy({self.spec.get('type')!r}: not loaded)"


class Trajectory:
    """Grid densities at saved times, with diagnostics against ``rho* ~ exp(-U/T)``.

    Attributes: ``times`` (n,), ``densities`` (n, *grid.shape), ``grid``,
    ``energy``, ``temperature``, ``flow`` (``"fokker-planck"`` or
    ``"continuity"``), ``scheme`` (dict: method and options), ``info`` (dict of
    run statistics).
    """

    def __init__(self, grid: Grid, times, densities, energy, temperature: float, *, flow: str,
                 scheme: dict, info: dict | None = None, duration: float | None = None):
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
        self.stored: dict = {}  # diagnostics read from a file (used when the energy is not loaded)
        self.refinement = None  # Richardson error estimates (solve(..., refine=True))
        # along an energy path U(x, t / duration) the reference law moves with time
        self.duration = None if duration is None else float(duration)
        self.escaped = None     # Lagrangian solutions: characteristics that left the support of rho0

    def __len__(self):
        return self.times.size

    def __repr__(self):
        return (f"Trajectory(flow={self.flow!r}, method={self.scheme.get('method')!r}, {len(self)} times in "
                f"[{self.times[0]:g}, {self.times[-1]:g}], grid={self.grid.cells})")

    # -- the reference law --------------------------------------------------------
    @property
    def is_path(self) -> bool:
        """True for a solution along an energy path ``U(x, t / duration)``: then every
        diagnostic is taken against the Gibbs law of ``U(., t)`` at its own time."""
        return self.duration is not None

    def reference_energy(self, j: int):
        """The energy whose Gibbs law is the reference at saved time ``j``."""
        if not self.is_path:
            return self.energy
        return self.energy.at(min(self.times[j] / self.duration, 1.0))

    @cached_property
    def energy_values(self) -> np.ndarray:
        """``U`` at the cell centres (grid shape); along a path one per saved time."""
        if self.is_path:
            return np.stack([self.grid.evaluate(self.reference_energy(j)) for j in range(len(self))])
        return self.grid.evaluate(self.energy)

    @cached_property
    def log_gibbs(self) -> np.ndarray:
        """Log of the normalised discrete Gibbs density (finite where it underflows)."""
        L = -self.energy_values / self.temperature
        if self.is_path:
            return np.stack([self.grid.log_density_from_logpdf(x) for x in L])
        return self.grid.log_density_from_logpdf(L)

    @cached_property
    def gibbs(self) -> np.ndarray:
        """Normalised discrete Gibbs density on the grid (one per saved time along a path)."""
        return np.exp(self.log_gibbs)

    # -- run statistics ----------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Accepted time steps (0 where a method has no global steps)."""
        return int(self.info.get("steps", 0))

    @property
    def rejected(self) -> int:
        return int(self.info.get("rejected", 0))

    @property
    def error_estimate(self) -> float:
        """Sum of the accepted local error estimates (L1); NaN without step control."""
        return float(self.info.get("error_estimate", float("nan")))

    # -- diagnostics -------------------------------------------------------------------
    def mass(self) -> np.ndarray:
        return self.densities.reshape(len(self), -1).sum(axis=1) * self.grid.cell_volume

    @property
    def energy_loaded(self) -> bool:
        return not isinstance(self.energy, SpecOnlyEnergy)

    def _stored(self, name: str):
        """A diagnostic from the file, when the energy that computes it was not loaded."""
        if self.energy_loaded:
            return None
        if name not in self.stored:
            raise ValueError(f"{name}: the file stores no such diagnostic and its energy was not rebuilt "
                             f"({self.energy.reason})")
        return self.stored[name]

    def _warn_mass(self, what: str) -> None:
        """A diagnostic of probability laws on a density that lost (or gained) mass says so."""
        m = self.mass()
        bad = np.abs(m - 1.0) > MASS_TOL
        if bad.any():
            k = int(np.argmax(np.abs(m - 1.0)))
            warnings.warn(f"{what} of densities whose grid mass is not 1 (mass {m[k]:.6g} at t = {self.times[k]:g}; "
                          f"{int(bad.sum())} of {len(self)} times off by more than {MASS_TOL:g}): mass left the box "
                          "or is unresolved on the grid, so this is not a divergence between probability laws",
                          RuntimeWarning, stacklevel=3)

    def validity(self) -> dict:
        """Where the grid densities are what their diagnostics assume, per saved time:

        ``mass_ok``: the grid mass is 1 within :data:`MASS_TOL` (mass neither left the box nor
        is over-counted by point values of a collapsing flow);
        ``resolved``: the density is resolved on the grid.  Cell averages (finite volumes,
        Fokker-Planck): pooling the cells in pairs along every axis (density and Gibbs law
        alike) lowers the KL by at most :data:`RESOLUTION_TOL` of it (plus 1e-6); the loss is
        second order in the cell size for a resolved density (Fokker-Planck on the eight
        Gaussians at 128^2: 1-3 %) and grows as a deterministic flow concentrates below the
        cell size (finite volumes: 4 % at t = 0.2, 29 % at t = 1, where the grid KL is 40 %
        below the exact one).  Point values (the Lagrangian method): the midpoint rule on
        every sub-grid of twice the spacing gives the KL and the mass within
        :data:`SUBSAMPLE_TOL` (relative) of the full sum.  The rule's error falls like
        ``exp(-c / h^2)``, so a 10 % error at ``2h`` means about 1e-4 at ``h``; a density
        concentrated in a few cells is off by far more;
        ``valid``: both; ``coarse_kl_loss``: the measured loss.
        Read from the file when the energy was not rebuilt."""
        if not self.energy_loaded:
            if "valid" not in self.stored:
                n = len(self)
                return {"mass_ok": np.abs(self.mass() - 1.0) <= MASS_TOL, "resolved": np.ones(n, bool),
                        "valid": np.abs(self.mass() - 1.0) <= MASS_TOL, "coarse_kl_loss": np.full(n, np.nan)}
            return {k: self.stored[k] for k in ("mass_ok", "resolved", "valid", "coarse_kl_loss")}
        m = self.mass()
        mass_ok = np.isfinite(m) & (np.abs(m - 1.0) <= MASS_TOL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            kl = self.kl()
        if self.scheme.get("method") == "lagrangian":   # point values: the midpoint rule at 2h must agree
            sub_kl, sub_mass = self._subsampled()
            loss = np.max(np.abs(sub_kl - kl[:, None]), axis=1)
            resolved = (np.isfinite(loss) & (loss <= SUBSAMPLE_TOL * np.abs(kl) + 1e-6)
                        & np.all(np.abs(sub_mass - m[:, None]) <= SUBSAMPLE_TOL * np.abs(m[:, None]), axis=1))
        else:   # cell averages: pooling pairs of cells may lose only a little of the KL
            loss = kl - self._coarse_kl()
            resolved = np.isfinite(loss) & (loss <= RESOLUTION_TOL * np.abs(kl) + 1e-6)
        return {"mass_ok": mass_ok, "resolved": resolved, "valid": mass_ok & resolved, "coarse_kl_loss": loss}

    def _subsampled(self):
        """KL and mass of the point values on each of the ``2^d`` sub-grids of every other
        cell (weights ``2^d vol``): the midpoint rule at twice the spacing.  For a density
        resolved on the grid it is spectrally close to the full sum (a Gaussian of standard
        deviation s: error ~ exp(-pi^2 s^2 / (2 h^2)))."""
        d, vol = self.grid.ndim, self.grid.cell_volume
        R = self.densities
        LG = np.broadcast_to(self.log_gibbs, R.shape)
        kls, masses = [], []
        for offs in np.ndindex(*(2,) * d):
            sl = (slice(None),) + tuple(slice(o, None, 2) for o in offs)
            r, lg = R[sl].reshape(len(self), -1), LG[sl].reshape(len(self), -1)
            w = vol * 2 ** d
            with np.errstate(divide="ignore", invalid="ignore"):
                kls.append(np.where(r > 0, r * (np.log(r) - lg), 0.0).sum(axis=1) * w)
            masses.append(r.sum(axis=1) * w)
        return np.stack(kls, axis=1), np.stack(masses, axis=1)

    @property
    def status(self) -> str:
        """``"valid"`` when every saved time is valid (:meth:`validity`), else
        ``"partially valid"`` or ``"not valid"``; :attr:`message` says where."""
        v = self.valid()
        return "valid" if v.all() else "not valid" if not v.any() else "partially valid"

    @property
    def message(self) -> str:
        """In words, which saved times are not valid and why (empty when all are)."""
        v = self.validity()
        bad = ~v["valid"]
        if not bad.any():
            return ""
        k = int(np.argmax(bad))
        why = [w for w, m in (("mass off", ~v["mass_ok"]), ("unresolved on the grid", ~v["resolved"])) if m.any()]
        return (f"{int(bad.sum())} of {len(self)} saved times are not valid ({', '.join(why)}), the first at "
                f"t = {self.times[k]:g}: KL, R_t and the other diagnostics there are not those of probability "
                "laws resolved on the grid")

    def valid(self) -> np.ndarray:
        """Per saved time: True where the diagnostics are those of a probability law
        resolved on the grid (:meth:`validity`)."""
        return self.validity()["valid"]

    def _coarse_kl(self) -> np.ndarray:
        """KL of the cell masses pooled in pairs along every axis (an odd last cell alone);
        the Gibbs law pooled in logs, so cells where it underflows still count."""
        vol = self.grid.cell_volume

        def pool(a, lead, op):
            for ax in range(lead, a.ndim):
                a = op.reduceat(a, np.arange(0, a.shape[ax], 2), axis=ax)
            return a

        P = pool(self.densities * vol, 1, np.add).reshape(len(self), -1)
        LG = self.log_gibbs + np.log(vol)
        if self.is_path:
            LQ = pool(LG, 1, np.logaddexp).reshape(len(self), -1)
        else:
            LQ = np.broadcast_to(pool(LG, 0, np.logaddexp).ravel(), P.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(P > 0, P * (np.log(P) - LQ), 0.0)
        out = term.sum(axis=1)
        out[np.isnan(P).any(axis=1)] = np.nan
        return out

    def kl(self) -> np.ndarray:
        """``KL(rho_t || rho*)`` against the discrete Gibbs law on the same grid
        (warns when a density's mass is not 1; NaN stays NaN)."""
        if (v := self._stored("kl")) is not None:
            return v
        self._warn_mass("KL")
        if self.is_path:
            return np.array([D.kl_grid(self.grid, r, lg) for r, lg in zip(self.densities, self.log_gibbs)])
        return D.kl_grid(self.grid, self.densities, self.log_gibbs)

    def w2(self, reference=None, *, method: str = "exact") -> np.ndarray:
        """``W2(rho_t, reference_t)`` at every time (:mod:`fokkerplanck.wasserstein`).
        ``reference``: one density on the grid, one per time (``densities``' shape), or by
        default the discrete Gibbs law (of ``U(., t)`` along a path).  ``method="exact"``:
        quantile functions on 1D grids, exact transport of the cell masses on 2D/3D (POT, the
        extra ``ot``; a few thousand cells at most); ``"linearised"``: the weighted-Poisson
        linearisation, for nearby laws.  Densities are renormalised to mass 1 (with the mass
        warning)."""
        # local: the transport machinery (sparse solvers, POT) loads only when W2 is asked for
        from fokkerplanck.wasserstein import clean_density, w2_grid, w2_grids, w2_linearised

        g = self.grid
        if method == "linearised":
            fn = w2_linearised
        elif method == "exact":
            fn = w2_grid if g.ndim == 1 else w2_grids
        else:
            raise ValueError(f"method must be 'exact' or 'linearised', got {method!r}")
        self._warn_mass("W2")
        ref = np.asarray(self.gibbs if reference is None else reference, dtype=float)
        if ref.shape not in (self.densities.shape, tuple(g.shape)):
            raise ValueError(f"reference must be one density on the grid {tuple(g.shape)} or one per time "
                             f"{self.densities.shape}, got shape {ref.shape}")
        refs = ref if ref.shape == self.densities.shape else np.broadcast_to(ref, self.densities.shape)
        return np.array([fn(g, clean_density(g, r), clean_density(g, q)) for r, q in zip(self.densities, refs)])

    def fisher(self) -> np.ndarray:
        """Discrete relative Fisher information consistent with the Scharfetter-Gummel
        scheme: ``d/dt KL = -T I`` holds exactly for the semi-discrete Fokker-Planck flow."""
        if (v := self._stored("fisher")) is not None:
            return v
        if self.is_path:
            return np.array([float(np.ravel(sg_fisher(self.grid, u, self.temperature, r, self._faces))[0])
                             for u, r in zip(self.energy_values, self.densities)])
        return sg_fisher(self.grid, self.energy_values, self.temperature, self.densities, self._faces)

    @cached_property
    def _faces(self):
        return faces(self.grid)

    def tv(self) -> np.ndarray:
        if (v := self._stored("tv")) is not None:
            return v
        if self.is_path:
            return np.array([D.tv_grid(self.grid, r, q) for r, q in zip(self.densities, self.gibbs)])
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
        if (v := self._stored("e_lap")) is not None:
            return v, self._stored("e_grad2")
        if self.is_path:
            terms = [D.ratio_terms_grid(self.grid, self.densities[j], self.reference_energy(j)) for j in range(len(self))]
            return np.array([float(a) for a, _ in terms]), np.array([float(b) for _, b in terms])
        return D.ratio_terms_grid(self.grid, self.densities, self.energy)

    def e_lap(self) -> np.ndarray:
        return self._ratio_terms[0]

    def e_grad2(self) -> np.ndarray:
        return self._ratio_terms[1]

    def ratio(self) -> np.ndarray:
        """``R_t = T E[lap U] / E[|grad U|^2]``."""
        if (v := self._stored("ratio")) is not None:
            return v
        elap, eg2 = self._ratio_terms
        return self.temperature * elap / eg2

    def to_xarray(self):
        """The trajectory as an ``xarray.Dataset`` (the optional extra ``xarray``): the
        densities on coordinates ``time`` and ``x_0, x_1, ...``, every diagnostic and the
        validity on ``time``, descriptions as attributes."""
        import xarray as xr   # local: an optional extra

        xs = [f"x_{a}" for a in range(self.grid.ndim)]
        coords = {"time": self.times, **{x: c for x, c in zip(xs, self.grid.axes)}}
        data = {"density": (("time", *xs), self.densities, {"description": "rho_t on the cells"})}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for name in ("kl", "fisher", "tv", "mass", "ratio", "e_lap", "e_grad2"):
                data[name] = ("time", getattr(self, name)(), {"description": DIAGNOSTIC_DESCRIPTIONS[name]})
            for name, v in self.validity().items():
                data[name] = ("time", v, {"description": VALIDITY_DESCRIPTIONS[name]})
        return xr.Dataset(data, coords=coords, attrs={"flow": self.flow, "temperature": self.temperature,
                                                      "method": str(self.scheme.get("method", ""))})

    # -- storage --------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the trajectory and its diagnostics to HDF5 (atomically)."""
        with atomic_h5(path) as f:
            self.write(f)

    def write(self, g: h5py.Group) -> None:
        g.attrs.update({
            "format": FORMAT, "version": VERSION, "flow": self.flow, "temperature": self.temperature,
            "energy": json.dumps(E.spec_of(self.energy)), "grid": json.dumps(self.grid.to_spec()),
            "scheme": json.dumps(self.scheme), "info": json.dumps(self.info, default=float),
            "package_version": __version__,
        })
        if self.is_path:
            g.attrs["duration"] = self.duration
        if self.escaped is not None:
            g.create_dataset("escaped", data=self.escaped)
        # self-describing: every dataset says what it holds, and the times and the cell
        # centres are dimension scales, so readers such as xarray (h5netcdf) see coordinates
        tds = g.create_dataset("times", data=self.times)
        tds.attrs.update(description="saved times t", units="model time (dX = -grad U dt + sqrt(2T) dW)")
        tds.make_scale("time")
        names = [f"x_{a}" for a in range(self.grid.ndim)]
        scales = []
        for a, c in enumerate(self.grid.axes):
            xs = g.create_dataset(names[a], data=c)
            xs.attrs.update(description=f"cell centres along axis {a}", units="length (the energy's coordinates)")
            xs.make_scale(names[a])
            scales.append(xs)
        chunks = (1, *self.grid.shape)
        dens = g.create_dataset("densities", data=self.densities, chunks=chunks, compression="gzip",
                                compression_opts=4, shuffle=True)
        dens.attrs.update(description=(f"rho_t on the cells ({'point values' if self.scheme.get('method') == 'lagrangian' else 'cell averages'}); "
                                       "diagnostics/valid says at which times it is a probability law "
                                       "resolved on the grid"), units="1 / volume")
        dens.dims[0].attach_scale(tds)
        for a, xs in enumerate(scales):
            dens.dims[a + 1].attach_scale(xs)
        ax = g.create_group("axes")   # the cell centres again, where version-1 readers look
        for a, c in enumerate(self.grid.axes):
            ax.create_dataset(f"axis_{a}", data=c)
        dg = g.create_group("diagnostics")
        with warnings.catch_warnings():  # the caller has seen the mass warning of kl() already, if any
            warnings.simplefilter("ignore", RuntimeWarning)
            for name in ("kl", "fisher", "tv", "mass", "ratio", "e_lap", "e_grad2", "mean", "cov"):
                d = dg.create_dataset(name, data=getattr(self, name)())
                d.attrs["description"] = DIAGNOSTIC_DESCRIPTIONS[name]
                d.dims[0].attach_scale(tds)
            for name, v in self.validity().items():
                d = dg.create_dataset(name, data=v)
                d.attrs["description"] = VALIDITY_DESCRIPTIONS[name]
                d.dims[0].attach_scale(tds)
        # plain attributes beside the JSON specs: readable without parsing JSON
        g.attrs.update(grid_bounds=np.asarray(self.grid.bounds, dtype=float), grid_cells=np.asarray(self.grid.cells),
                       method=str(self.scheme.get("method", "")), energy_type=str(E.spec_of(self.energy).get("type")))
        if self.refinement is not None:
            self.refinement.write(g.create_group("refinement"))

    @classmethod
    def load(cls, path, group: str | None = None, *, energy=None, allow_modules=()) -> "Trajectory":
        """Read a file written by :meth:`save`, or one flow's group of an ``fpk run``
        file (``group``: ``"fokker-planck"`` or ``"continuity"``, default the first
        present); a foreign or damaged file raises a ValueError that says what is wrong.

        Reading never imports code.  The energy is rebuilt from the file's spec
        through the registry of energy types; a :class:`~fokkerplanck.energies.Custom`
        energy only when ``energy`` is given (it must have the stored spec) or its
        modules are listed in ``allow_modules``.  Otherwise the trajectory holds a
        :class:`SpecOnlyEnergy` and its diagnostics come from the file."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        with open_h5(path) as f:
            if f.attrs.get("format") == "fokkerplanck.run":
                names = [k for k in ("fokker-planck", "continuity") if k in f]
                g = group or (names[0] if names else None)
                if g not in names:
                    raise ValueError(f"{path} has no trajectory group {g!r}; available: {names}")
                return cls.read(f[g], f"{path}:{g}", energy=energy, allow_modules=allow_modules)
            if group is not None:
                raise ValueError(f"{path} is a single trajectory, not an fpk run file: it has no group {group!r}")
            return cls.read(f, str(path), energy=energy, allow_modules=allow_modules)

    @classmethod
    def read(cls, g: h5py.Group, where: str = "group", *, energy=None, allow_modules=()) -> "Trajectory":
        fmt = g.attrs.get("format")
        if fmt != FORMAT:
            raise ValueError(f"{where} is not a fokkerplanck trajectory (format attribute {fmt!r})")
        try:
            ver = int(g.attrs.get("version", -1))
        except (TypeError, ValueError):
            ver = -1
        if ver != VERSION:
            raise ValueError(f"{where} has trajectory layout version {_plain(g.attrs.get('version'))!r}; "
                             f"this toolkit reads version {VERSION}")
        missing = [k for k in ("times", "densities") if k not in g or not isinstance(g[k], h5py.Dataset)]
        if missing:
            raise ValueError(f"{where} is damaged: missing datasets {missing}")
        try:
            grid = Grid.from_spec(_json_attr(g, "grid"))
            spec = _json_attr(g, "energy")
            temperature = float(g.attrs["temperature"])
            if energy is not None:
                if E.spec_of(energy) != spec:
                    raise ValueError(f"{where}: the energy passed ({energy!r}) is not the one stored in the file")
            else:
                try:
                    energy = E.from_spec(spec, allow_modules=allow_modules)
                except E.UnresolvedEnergyError as exc:
                    energy = SpecOnlyEnergy(spec, str(exc))
            dset = g["densities"]
            want = (g["times"].shape[0] if g["times"].ndim == 1 else -1, *grid.shape)
            if dset.shape != want or dset.dtype.kind != "f":
                raise ValueError(f"{where} is damaged: densities of shape {dset.shape} ({dset.dtype}) do not "
                                 f"match {want} (times x grid)")

            check_memory(8.0 * np.prod(dset.shape), f"{where}: the densities")
            times = g["times"][()]
            duration = float(g.attrs["duration"]) if "duration" in g.attrs else None
            tr = cls(grid, times, dset[()], energy, temperature,
                     flow=str(g.attrs["flow"]), scheme=json.loads(g.attrs["scheme"]),
                     info=json.loads(g.attrs.get("info", "{}")), duration=duration)
            if "escaped" in g and isinstance(g["escaped"], h5py.Dataset):
                esc = g["escaped"]
                if esc.shape != dset.shape:
                    raise ValueError(f"{where} is damaged: escaped of shape {esc.shape} does not match {dset.shape}")
                tr.escaped = esc[()].astype(bool)
            if "diagnostics" in g:
                tr.stored = {k: v[()] for k, v in g["diagnostics"].items() if isinstance(v, h5py.Dataset)}
            if "refinement" in g:
                tr.refinement = Refinement.read(g["refinement"])
            return tr
        except (KeyError, json.JSONDecodeError, OSError, TypeError, RecursionError) as exc:
            raise ValueError(f"{where} is damaged: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            if str(exc).startswith(where):
                raise
            raise ValueError(f"{where}: {exc}") from None


def _plain(v):
    """An HDF5 attribute as a plain Python value (for messages)."""
    return v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v


def _json_attr(g, key):
    """A JSON attribute as a dict (a damaged one is a ValueError naming it)."""
    raw = g.attrs[key]
    if isinstance(raw, bytes):
        raw = raw.decode()
    if not isinstance(raw, str):
        raise ValueError(f"attribute {key!r} is not JSON text")
    out = json.loads(raw)
    if not isinstance(out, dict):
        raise ValueError(f"attribute {key!r} is not a JSON object")
    return out


class PathSolution(Trajectory):
    """A :class:`Trajectory` along an energy path ``U(x, t / duration)``
    (``FokkerPlanck(path, grid).solve`` or ``Continuity(path, grid).solve``): the same
    diagnostics, each against the Gibbs law of ``U(., t)`` at its own time, plus the step
    statistics ``steps``, ``rejected``, ``error_estimate`` and, for the Lagrangian method,
    ``escaped``."""

    @classmethod
    def load(cls, path, group: str | None = None, *, energy=None, allow_modules=()) -> "PathSolution":
        """Read a path solution written by :meth:`save`; any other file is a ValueError."""
        with open_h5(path) as f:
            if f.attrs.get("format") != FORMAT or "duration" not in f.attrs:
                raise ValueError(f"{path} is not a path solution (format {_plain(f.attrs.get('format'))!r})")
            return cls.read(f, str(path), energy=energy, allow_modules=allow_modules)
