"""Grid solvers for the density flows.

``FokkerPlanck(energy, grid, temperature).solve(rho0, times, method=...)``:
cell-centred finite volumes with Scharfetter-Gummel fluxes
(:mod:`fokkerplanck.operators.fluxes`), zero-flux walls or periodic axes, and two time
integrators:

``"exact"`` (default)
    The exact solution ``exp(t L) rho0`` of the semi-discrete system.  Through
    detailed balance ``L = D^{1/2} S D^{-1/2}`` with ``S`` symmetric negative
    semi-definite; up to 2000 cells ``S`` is diagonalised once (any number of
    times then costs one small matrix product each), above that the action
    of ``exp(t S)`` is a Chebyshev expansion (:mod:`fokkerplanck.operators.expm`) whose
    ``K ~ sqrt(t ||S||)`` matrix-vector products are shared by all output
    times.  Truncation error below ``tol`` (default 1e-14) relative to
    ``||rho0 / sqrt(pi)||_2``.  It is the default because it is both the
    reference and the fastest here: 2D eight Gaussians on 256^2 cells to t = 5
    at 51 times costs ~700 products (see benchmarks/).
``"implicit"``
    SDIRK2 (two-stage, L-stable, second order, both stages share the matrix
    ``I - gamma h L``) with a filtered embedded error estimate, steps on a
    power-of-two ladder so that each sparse LU factorisation is reused,
    steps rejected when they would make a density negative.  ``tol`` bounds
    an embedded first-order estimate of the local L1 error per step, which is
    conservative: the global L1 error measured on the 2D eight Gaussians was
    0.12 tol for tol = 1e-6, 1e-8, 1e-10.  ``dt`` fixes the step (no error
    control; a warning if a density turns negative).  Measured against
    ``exact`` on 64^2 cells to t = 5 it is 70x (tol 1e-6) to 500x (1e-8)
    slower: there is no regime here where it wins, it is kept as an
    independent check of ``exact`` and for generators whose exponential
    is out of reach.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from functools import cached_property

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from fokkerplanck._core.jit import one_blas_thread
from fokkerplanck._core.validate import check_times, positive_float
from fokkerplanck.flows.common import WALL_MASS_TOL, check_finite, initial_density, progress_bar, warn_wall_mass
from fokkerplanck.operators.fluxes import Stencil, faces, sg_generator, sg_symmetric
from fokkerplanck.operators.propagator import EIGH_MAX as EIGH_MAX_CELLS, ReversiblePropagator
from fokkerplanck.refine import refine as richardson
from fokkerplanck.energies.paths import EnergyPath
from fokkerplanck.results import PathSolution, Trajectory

__all__ = ["FokkerPlanck", "WALL_MASS_TOL", "check_finite"]



class FokkerPlanck:
    """Fokker-Planck equation ``d_t rho = div(rho grad U) + T lap rho`` on a grid.

    The generator is available as :attr:`generator` (sparse ``L``,
    ``d rho/dt = L rho`` on flattened densities), :attr:`symmetric`
    (``S = D^{-1/2} L D^{1/2}``) and :meth:`spectral_gap`.
    """

    flow = "fokker-planck"

    def __init__(self, energy, grid, temperature: float = 1.0, *, duration: float = 1.0):
        if energy.dim != grid.ndim:
            raise ValueError(f"energy has dimension {energy.dim} but grid has {grid.ndim}")
        self.energy, self.grid = energy, grid
        self.temperature = positive_float(temperature, "temperature")
        self._faces = faces(grid)
        # an energy path U(x, t / duration): solved by exponential midpoint steps, each the
        # exact solver of the frozen energy (:meth:`frozen`); a static energy is solved here
        self.path = energy if isinstance(energy, EnergyPath) else None
        self.duration = positive_float(duration, "duration")
        if self.path is None:
            self._set_values(grid.evaluate(energy))

    def _set_values(self, U):
        self.U = U
        # sqrt of the unnormalised Gibbs weights, scaled to max 1: the similarity transform
        spread = (self.U.max() - self.U.min()) / self.temperature
        if spread > 1400:
            raise ValueError(f"U varies by {spread:.0f} T over the box: exp(-U/2T) under/overflows. "
                             "Shrink the box or raise the temperature")
        self._sqrt_pi = np.exp(-(self.U - self.U.min()).ravel() / (2 * self.temperature))

    def frozen(self, s: float) -> "FokkerPlanck":
        """The solver of the path's energy frozen at path parameter ``s`` in ``[0, 1]``,
        sharing this solver's grid faces (no geometry rebuilt per step)."""
        if self.path is None:
            raise ValueError("frozen() is for a solver of an energy path; this one has a static energy")
        fp = FokkerPlanck.__new__(FokkerPlanck)
        fp.energy, fp.grid, fp.temperature, fp._faces = self.path.at(s), self.grid, self.temperature, self._faces
        fp.path, fp.duration = None, 1.0
        fp._set_values(self.grid.evaluate(fp.energy))
        return fp

    @cached_property
    def generator(self) -> sp.csr_matrix:
        return sg_generator(self.grid, self.U, self.temperature, self._faces)

    @cached_property
    def symmetric(self) -> sp.csr_matrix:
        return sg_symmetric(self.grid, self.U, self.temperature, self._faces)

    @cached_property
    def stencil(self) -> Stencil:
        """:attr:`symmetric` as a matrix-free stencil (the exact solver's Chebyshev sweeps)."""
        return Stencil.symmetric(self.grid, self.U, self.temperature, self._faces)

    @cached_property
    def generator_stencil(self) -> Stencil:
        """:attr:`generator` as a matrix-free stencil (the exact solver's uniformisation)."""
        return Stencil.generator(self.grid, self.U, self.temperature, self._faces)

    @cached_property
    def gibbs(self) -> np.ndarray:
        """Normalised discrete Gibbs density (exactly stationary for the scheme)."""
        return self.grid.density_from_logpdf(-self.U / self.temperature)

    @cached_property
    def lam_max(self) -> float:
        """Gershgorin bound of ``-S`` from the stencil (no sparse assembly)."""
        return self.stencil.gershgorin()

    def spectral_gap(self, k: int = 1) -> float | np.ndarray:
        """Smallest non-zero eigenvalue magnitude ``lambda_1`` of ``-L`` (or the ``k``
        smallest), by shift-invert Lanczos on ``S``.  A Poincare constant of the
        discrete law: an *estimate* (not a certificate) of the log-Sobolev constant."""
        n = self.grid.size
        if n <= EIGH_MAX_CELLS:
            lam = -np.linalg.eigvalsh(self.symmetric.toarray())[::-1]
        else:
            sigma = 1e-9 * self.lam_max
            vals = spla.eigsh(self.symmetric.tocsc(), k=k + 1, sigma=sigma, which="LM",
                              return_eigenvectors=False, tol=1e-12)
            lam = np.sort(-vals)
        out = lam[1:k + 1]
        return float(out[0]) if k == 1 else out

    # ------------------------------------------------------------------------------------------
    def solve(self, rho0, times, *, method: str = "exact", tol: float | None = None, dt: float | None = None,
              normalise: str = "warn", progress: bool = False, refine: bool | int = False,
              h0: float | None = None, max_steps: int = 100_000) -> Trajectory:
        """Densities at ``times`` from ``rho0`` at time 0.

        rho0 : grid density (shape ``grid.shape``) or a density object with
            ``on_grid`` (for example :class:`fokkerplanck.densities.Gaussian`).
            NaN, negative values or the wrong shape raise ValueError; a density
            whose grid mass is not 1 is normalised with a warning
            (``normalise="raise"`` refuses it instead).
        method : ``"exact"`` or ``"implicit"`` (see the module docstring).
        tol : truncation tolerance (exact, default 1e-14) or local L1 error per
            step (implicit, default 1e-9; along a path, default 1e-6).
        dt : implicit only: fixed step, no error control.
        refine : also solve with 2 and 4 times the cell size (or ``refine`` levels
            in all) and attach Richardson error estimates and extrapolations of
            KL, R_t and the densities as ``trajectory.refinement``
            (:mod:`fokkerplanck.refine`).
        h0, max_steps : along an energy path only: the first step and the most steps.

        Along an energy path (``FokkerPlanck(path, grid, T, duration=D)``) the times are
        physical, within ``[0, D]``, and the result is a
        :class:`~fokkerplanck.results.PathSolution` (exponential midpoint steps with
        step-doubling control; :mod:`fokkerplanck.flows.paths`).
        """
        if self.path is not None:
            if method != "exact" or dt is not None or refine:
                raise ValueError("along an energy path the solver is the exponential midpoint rule with "
                                 "step control: method='exact', no dt, no refine")
            return self._solve_path(rho0, times, 1e-6 if tol is None else tol, h0, max_steps, normalise)
        if h0 is not None:
            raise ValueError("h0 is for energy paths; a static energy has no time steps to start")
        if method == "exact" and dt is not None:
            raise ValueError("dt is for method='implicit'; the exact solver has no time step (drop dt, or use "
                             "method='implicit')")
        # the exact solver's parallel sweeps alternate with BLAS calls: BLAS on one thread
        # from the initial density on (see one_blas_thread); eigh (small grids) keeps all cores
        sweeps = method == "exact" and self.grid.size > EIGH_MAX_CELLS
        with one_blas_thread() if sweeps else contextlib.nullcontext():
            return self._solve(rho0, times, method, tol, dt, normalise, progress, refine)

    def _solve_path(self, rho0, times, tol, h0, max_steps, normalise) -> PathSolution:
        """Exponential midpoint ``rho(t + h) = exp(h L(t + h/2)) rho(t)`` with step doubling:
        one step ``h`` against two of ``h/2``; their L1 difference over 3 estimates the
        local error of the half steps (order 2), kept below ``tol``; the half-step result
        is kept (positive; the extrapolation would not be)."""
        tol = positive_float(tol, "tol")
        D = self.duration
        times = check_times(times, stop=D)
        rho = initial_density(self.grid, rho0, normalise)
        vol = self.grid.cell_volume

        def step(r, t, h):
            if 0 > r.min() > -1e-12 * r.max():  # the exact solver's round-off in empty cells (1D, 800 cells: -1e-21)
                r = np.maximum(r, 0.0)
            out, _ = self.frozen(min((t + 0.5 * h) / D, 1.0)).propagator(r, np.array([h]), tol=1e-14)
            return out[-1].reshape(self.grid.shape)

        out = np.empty((times.size, *self.grid.shape))
        t, h = 0.0, (h0 if h0 is not None else max(times[-1], D) / 64)
        steps = rejected = 0
        err_sum = 0.0
        t0 = time.perf_counter()
        with one_blas_thread() if self.grid.size > EIGH_MAX_CELLS else contextlib.nullcontext():
            for j, tout in enumerate(times):
                while tout - t > 1e-12 * max(1.0, tout):
                    hs = min(h, tout - t)
                    coarse = step(rho, t, hs)
                    half = step(rho, t, 0.5 * hs)
                    fine = step(half, t + 0.5 * hs, 0.5 * hs)
                    err = float(np.abs(fine - coarse).sum() * vol) / 3.0
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
        info = {"steps": steps, "rejected": rejected, "error_estimate": err_sum, "wall_time": time.perf_counter() - t0}
        check_finite(out, times, "Fokker-Planck along a path")
        info["max_wall_mass"] = warn_wall_mass(self.grid, times, out)
        return PathSolution(self.grid, times, out, self.path, self.temperature, flow=self.flow,
                            scheme={"method": "exponential-midpoint", "tol": tol,
                                    "space": "finite-volume Scharfetter-Gummel"}, info=info, duration=D)

    def _solve(self, rho0, times, method, tol, dt, normalise, progress, refine):
        given = rho0
        rho0 = initial_density(self.grid, rho0, normalise)
        times = check_times(times)
        t0 = time.perf_counter()
        if method == "exact":
            tol = 1e-14 if tol is None else positive_float(tol, "tol")
            dens, info = self._exact(rho0, times, tol, progress)
            scheme = {"method": "exact", "tol": tol}
        elif method == "implicit":
            tol = 1e-9 if tol is None else positive_float(tol, "tol")
            if dt is not None:
                dt = positive_float(dt, "dt")
            dens, info = self._implicit(rho0, times, tol, dt, progress)
            scheme = {"method": "implicit", "scheme": "SDIRK2", "tol": tol, "dt": dt}
        else:
            raise ValueError(f"method must be 'exact' or 'implicit', got {method!r}")
        info["wall_time"] = time.perf_counter() - t0
        check_finite(dens, times, f"Fokker-Planck ({method})")
        info["min_density"] = float(dens.min())
        info["max_wall_mass"] = warn_wall_mass(self.grid, times, dens)
        scheme.update(space="finite-volume Scharfetter-Gummel")
        tr = Trajectory(self.grid, times, dens, self.energy, self.temperature, flow=self.flow,
                        scheme=scheme, info=info)
        tr.__dict__["energy_values"] = self.U  # the same values (grid.evaluate): not evaluated twice
        if refine:
            tr.refinement = richardson(
                lambda g, r0: FokkerPlanck(self.energy, g, self.temperature).solve(
                    r0, times, method=method, tol=tol, dt=dt, normalise="silent"),
                tr, given if hasattr(given, "on_grid") else rho0, 3 if refine is True else refine)
        return tr

    @cached_property
    def propagator(self) -> ReversiblePropagator:
        """The exact propagator of the semi-discrete generator
        (:class:`~fokkerplanck.operators.propagator.ReversiblePropagator`): uniformisation of
        the stencil while the chi-square to the Gibbs law is large, then eigh (up to
        2000 cells) or Chebyshev sweeps of the symmetric stencil."""
        vol = self.grid.cell_volume
        log_pi = self.grid.log_density_from_logpdf(-self.U / self.temperature).ravel()   # finite where pi underflows
        return ReversiblePropagator(lambda: self.generator_stencil, lambda: self.symmetric, self._sqrt_pi, log_pi,
                                    lam_max=self.lam_max, spectral_gap=self.spectral_gap,
                                    sym_operator=self.stencil, weight=vol, eigh_max=EIGH_MAX_CELLS)

    def _exact(self, rho0, times, tol, progress):
        """The exact solution by :attr:`propagator`."""
        bar = progress_bar(progress, int(times.size), "Fokker-Planck (exact)")
        try:
            out, info = self.propagator(rho0, times, tol=tol, bar=bar)
        finally:
            if bar is not None:
                bar.close()
        return out.reshape(times.size, *self.grid.shape), info

    def _implicit(self, rho0, times, tol, dt, progress):
        L = self.generator.tocsc()
        n = self.grid.size
        Id = sp.identity(n, format="csc")
        gamma = 1.0 - 1.0 / math.sqrt(2.0)
        vol = self.grid.cell_volume
        cache: dict = {}

        def lu(h):
            if h not in cache:
                if len(cache) > 8:
                    cache.pop(next(iter(cache)))
                cache[h] = spla.splu((Id - gamma * h * L).tocsc())
            return cache[h]

        y = rho0.ravel().copy()
        t = 0.0
        out = np.empty((times.size, n))
        spacing = np.diff(np.concatenate([[0.0], times]))
        h = dt if dt is not None else (np.min(spacing[spacing > 0]) / 8 if np.any(spacing > 0) else 1e-3)
        steps = rejected = 0
        bar = progress_bar(progress, int(times.size), "Fokker-Planck (SDIRK2)")
        for j, tout in enumerate(times):
            while tout - t > 1e-12 * max(1.0, tout):
                hs = min(h, tout - t)
                solver = lu(hs)
                Y1 = solver.solve(y)
                rhs = y + (1.0 - gamma) * hs * (L @ Y1)
                Y2 = solver.solve(rhs)
                if dt is None:
                    err = vol * np.abs(solver.solve((Y2 - rhs) - (Y1 - y))).sum()
                    negative = Y2.min() < -1e-14 * Y2.max()
                    if err > tol or negative:
                        rejected += 1
                        h = hs / (4.0 if negative else 2.0 ** max(1, math.ceil(0.5 * math.log2(err / tol))))
                        if h < 1e-14 * max(1.0, tout):
                            raise RuntimeError(f"implicit step size underflow at t = {t:g} (error {err:.3g})")
                        continue
                    if hs == h and err < 0.25 * tol:
                        h = 2.0 * h  # at most double; stays on the ladder, so the LU is reused later
                y = Y2
                t += hs
                steps += 1
            out[j] = y
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        info = {"steps": steps, "rejected": rejected, "factorisations": len(cache)}
        if dt is not None and out.min() < 0:
            warnings.warn(f"fixed step dt = {dt:g} produced negative densities (min {out.min():.3g}); "
                          "SDIRK2 keeps positivity only for small enough steps: reduce dt or let the "
                          "error control choose it (dt=None)", RuntimeWarning, stacklevel=3)
        return out.reshape(times.size, *self.grid.shape), info
