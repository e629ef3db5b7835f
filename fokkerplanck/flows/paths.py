"""Fokker-Planck with a time-dependent energy ``U(x, t)`` on a grid.

``d_t rho = div(rho grad U(., t)) + T lap rho`` over the physical time ``[0, duration]``;
the path parameter is ``t / duration`` (:class:`~fokkerplanck.energies.paths.EnergyPath`).

Scheme: the exponential midpoint rule (the second-order commutator-free Magnus
integrator), ``rho(t + h) = exp(h L(t + h/2)) rho(t)`` with ``L(s)`` the Scharfetter-Gummel
generator of ``U(., s)``; each exponential is the exact solver of
:class:`~fokkerplanck.flows.fokker_planck.FokkerPlanck`.  Every step is an exact Markov semigroup of a
frozen generator, so densities stay non-negative and mass is kept to round-off,
whatever the step.  Step control by step doubling: one step ``h`` against two steps
``h/2``; their L1 difference over 3 estimates the local error of the two half steps
(order 2), which must stay below ``tol``; the half-step result is kept (it is
positive; the extrapolation would not be).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from fokkerplanck._core.files import atomic_h5, open_h5
from fokkerplanck._core.validate import check_times, positive_float
from fokkerplanck.flows.common import initial_density
from fokkerplanck.flows.continuity import escape_ball, pushforward_density
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.flows.lagrangian import integrate_characteristics
from fokkerplanck.grid import Grid
from fokkerplanck.operators.muscl import POSITIVE_CFL, face_points, face_velocity, max_stable_dt, ssp_rk3
from fokkerplanck.wasserstein import clean_density, w2_grid, w2_grids, w2_linearised

__all__ = ["solve_path", "solve_path_continuity", "PathSolution", "PATH_FORMAT"]

PATH_FORMAT = "fokkerplanck.path_solution"


@dataclass
class PathSolution:
    times: np.ndarray        # physical times
    densities: np.ndarray    # (nt, *grid.shape)
    steps: int               # accepted time steps (0 for the Lagrangian method: per-point steps)
    rejected: int
    error_estimate: float    # sum of the accepted local error estimates (L1); NaN without step control
    grid: object = None

    def w2(self, reference, *, method: str = "exact") -> np.ndarray:
        """``W2(rho_t, reference_t)`` at every time: ``reference`` a density on the grid (one
        law for all times) or an array of them (one per time).  ``method="exact"``: quantile
        functions in 1D, exact transport of the cell masses (POT) beyond; ``"linearised"``:
        :func:`~fokkerplanck.wasserstein.w2_linearised`, for nearby laws (module docstring of
        :mod:`fokkerplanck.wasserstein`).  Densities are renormalised to mass 1."""

        g = self.grid
        if method == "linearised":
            fn = w2_linearised
        elif method == "exact":
            fn = w2_grid if g.ndim == 1 else w2_grids
        else:
            raise ValueError(f"method must be 'exact' or 'linearised', got {method!r}")
        ref = np.asarray(reference, dtype=float)
        if ref.shape not in (self.densities.shape, tuple(g.shape)):
            raise ValueError(f"reference must be one density on the grid {tuple(g.shape)} or one per time "
                             f"{self.densities.shape}, got shape {ref.shape}")
        refs = ref if ref.shape == self.densities.shape else np.broadcast_to(ref, self.densities.shape)
        return np.array([fn(g, clean_density(g, r), clean_density(g, q)) for r, q in zip(self.densities, refs)])

    def save(self, path) -> None:
        """Write to HDF5 atomically (a crash leaves no partial file under ``path``)."""
        import json


        with atomic_h5(path) as f:
            f.attrs.update({"format": PATH_FORMAT, "grid": json.dumps(self.grid.to_spec()), "steps": int(self.steps),
                            "rejected": int(self.rejected), "error_estimate": float(self.error_estimate)})
            f.create_dataset("times", data=self.times)
            f.create_dataset("densities", data=self.densities, chunks=(1, *self.grid.shape), compression="gzip",
                             compression_opts=4, shuffle=True)
            if getattr(self, "escaped", None) is not None:
                f.create_dataset("escaped", data=self.escaped)

    @classmethod
    def load(cls, path) -> "PathSolution":
        """Read a file written by :meth:`save`; a foreign or damaged file is a ValueError saying so."""
        import json


        with open_h5(path) as f:
            if f.attrs.get("format") != PATH_FORMAT:
                raise ValueError(f"{path} is not a path solution (format {f.attrs.get('format')!r})")
            try:
                grid = Grid.from_spec(json.loads(f.attrs["grid"]))
                times, dens = f["times"][()], f["densities"][()]
                steps, rejected, err = int(f.attrs["steps"]), int(f.attrs["rejected"]), float(f.attrs["error_estimate"])
                escaped = f["escaped"][()] if "escaped" in f else None
            except (KeyError, TypeError, ValueError, OSError) as exc:
                raise ValueError(f"{path} is a damaged path solution: {type(exc).__name__}: {exc}") from None
        if times.ndim != 1 or dens.shape != (times.size, *grid.shape):
            raise ValueError(f"{path}: densities of shape {dens.shape} do not match {times.size} times on "
                             f"the grid {grid.shape}")
        sol = cls(times, dens, steps, rejected, err, grid)
        if escaped is not None:
            sol.escaped = escaped
        return sol


def solve_path(path, grid, rho0, times, *, temperature: float = 1.0, duration: float = 1.0, tol: float = 1e-6,
               h0: float | None = None, max_steps: int = 100_000) -> PathSolution:
    """Densities at ``times`` (physical, in ``[0, duration]``, increasing) of the Fokker-Planck
    flow of ``path`` from ``rho0`` (module docstring).  ``tol``: L1 local error per step."""
    if path.dim != grid.ndim:
        raise ValueError(f"the energy path has dimension {path.dim} but the grid has {grid.ndim}")
    T = positive_float(temperature, "temperature")
    duration = positive_float(duration, "duration")
    tol = positive_float(tol, "tol")
    times = check_times(times, stop=duration)
    rho = initial_density(grid, rho0, "warn")

    def step(r, t, h):
        U = path.at(min((t + 0.5 * h) / duration, 1.0))
        if 0 > r.min() > -1e-12 * r.max():  # the exact solver's round-off in empty cells (1D, 800 cells: -1e-21)
            r = np.maximum(r, 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # wall mass: checked once at the end
            return FokkerPlanck(U, grid, T).solve(r, [0.0, h], normalise="silent").densities[-1]

    out = np.empty((times.size, *grid.shape))
    t = 0.0
    h = h0 if h0 is not None else max(times[-1], duration) / 64
    steps = rejected = 0
    err_sum = 0.0
    for j, tout in enumerate(times):
        while tout - t > 1e-12 * max(1.0, tout):
            hs = min(h, tout - t)
            coarse = step(rho, t, hs)
            half = step(rho, t, 0.5 * hs)
            fine = step(half, t + 0.5 * hs, 0.5 * hs)
            err = float(np.abs(fine - coarse).sum() * grid.cell_volume) / 3.0
            if err <= tol:
                rho, t = fine, t + hs
                steps += 1
                err_sum += err
            else:
                rejected += 1
            h = hs * min(2.0, max(0.2, 0.9 * (tol / max(err, 1e-300)) ** (1 / 3)))
            if steps + rejected > max_steps:
                raise RuntimeError(f"more than {max_steps} steps before t = {tout:g}: tol = {tol:g} too small?")
        out[j] = rho
    mass = grid.mass_near_wall(out[-1], 2)
    if mass > 1e-6:
        warnings.warn(f"density mass {mass:.3g} lies within two cells of the walls at t = {times[-1]:g}: the box is "
                      "too small for the answer to mean anything", RuntimeWarning, stacklevel=2)
    return PathSolution(times, out, steps, rejected, err_sum, grid)


def solve_path_continuity(path, grid, rho0, times, *, duration: float = 1.0, cfl: float = 0.2,
                          method: str = "finite-volume", rtol: float = 1e-10, atol: float = 1e-12) -> PathSolution:
    """The deterministic flow ``d_t rho = div(rho grad U(., t))`` along ``path``.

    ``method="finite-volume"``: the positive MUSCL finite volumes of
    :class:`~fokkerplanck.flows.continuity.Continuity` with the face velocities of ``U`` at each
    SSP-RK3 stage time (``cfl`` as there, from the stage's largest speed).
    ``method="lagrangian"``: the exact density at the cell centres from backward
    characteristics through the path's kernels with ``t`` (:mod:`fokkerplanck.flows.lagrangian`;
    ``rtol``/``atol`` the ODE tolerances; ``rho0`` a density with ``logpdf``): point values,
    not renormalised, the reference of the finite volumes.  A characteristic that leaves
    the ball where ``rho0`` is negligible gives 0 (``escaped`` on the result)."""
    if path.dim != grid.ndim:
        raise ValueError(f"the energy path has dimension {path.dim} but the grid has {grid.ndim}")
    if method not in ("finite-volume", "lagrangian"):
        raise ValueError(f"method must be 'finite-volume' or 'lagrangian', got {method!r}")
    duration = positive_float(duration, "duration")
    cfl = positive_float(cfl, "cfl")
    if cfl > POSITIVE_CFL:
        raise ValueError(f"cfl = {cfl:g} > {POSITIVE_CFL}: positivity is no longer guaranteed")
    times = check_times(times, stop=duration)
    if method == "lagrangian":
        if not hasattr(rho0, "logpdf"):
            raise ValueError("method='lagrangian' needs rho0 as a density with logpdf (densities.Gaussian, "
                             "densities.GridDensity, ...)")
        centre, r_esc = escape_ball(grid, rho0)
        Z, L, escaped = integrate_characteristics(path, grid.points, times, direction="backward", rtol=rtol,
                                                  atol=atol, centre=centre, r_escape=r_esc, duration=duration)
        dens = pushforward_density(rho0, Z, L, escaped)
        sol = PathSolution(times, dens.reshape(times.size, *grid.shape), 0, 0, float("nan"), grid)
        sol.escaped = escaped.reshape(times.size, *grid.shape)
        return sol
    rho = initial_density(grid, rho0, "warn")
    faces = face_points(grid)   # built once; each stage evaluates only the path's gradient there

    def velocity(t):
        v = face_velocity(path.at(min(t / duration, 1.0)).grad, faces)
        return v, max_stable_dt(grid, v)

    out, steps, _ = ssp_rk3(grid, rho, times, velocity, cfl=cfl, what="flow")
    return PathSolution(times, out, steps, 0, float("nan"), grid)
