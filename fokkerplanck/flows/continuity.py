"""The deterministic gradient flow ``d_t rho = div(rho grad U)`` (noise removed).

Three ways to compute it, one the reference of the others:

``Continuity(energy, grid, method="finite-volume")``
    Conservative MUSCL finite volumes: monotonised-central limited slopes,
    upwind face fluxes with the exact face velocity ``-d_a U`` at the face
    centre, zero-flux walls (periodic axes as the grid says), SSP-RK3 in
    time.  Each forward-Euler stage keeps densities non-negative when
    ``dt * sum_a max|v_a| / h_a <= 1/4`` (the reconstructed face values lie
    in ``[0, 2 rho_i]``), so the default CFL number 0.2 is positive by
    construction.  Second order where the solution is smooth; no
    first-order upwinding, whose numerical diffusion ``|v| h / 2`` would act
    as a fake temperature (DESIGN.md section 3; ``reconstruction="upwind"``
    exists only to measure that, see benchmarks/study_upwind.py).
``Continuity(energy, grid, method="lagrangian")``
    The exact density at the cell centres from backward characteristics
    (:mod:`fokkerplanck.flows.lagrangian`) to ODE tolerance; ``rho0`` must have a
    log-pdf.  A characteristic that leaves the box takes ``rho0``'s value
    there when ``rho0`` is analytic, zero for a grid density (the mass
    affected is reported in ``info``).
:func:`forward_lagrangian`
    KL, ``E[lap U]``, ``E[|grad U|^2]`` and ``R_t`` from a quadrature of
    ``rho0`` pushed forward with its log-densities: no density estimation,
    exact up to quadrature and ODE tolerance.  The reference.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fokkerplanck._core.validate import check_times, positive_float, positive_int
from fokkerplanck.densities import Gaussian, GridDensity
from fokkerplanck.energies.paths import EnergyPath
from fokkerplanck.flows.common import check_finite, initial_density, progress_bar, warn_wall_mass
from fokkerplanck.flows.lagrangian import integrate_characteristics
from fokkerplanck.grid import Grid
from fokkerplanck.operators.muscl import POSITIVE_CFL, face_points, face_velocity, fv_rhs, max_stable_dt, ssp_rk3
from fokkerplanck.refine import refine as richardson
from fokkerplanck.results import MASS_TOL, PathSolution, Trajectory

__all__ = ["Continuity", "forward_lagrangian", "LagrangianKL"]

class Continuity:
    """Continuity equation ``d_t rho = div(rho grad U)`` on a grid.

    ``temperature`` only sets the reference law ``rho* ~ exp(-U/T)`` of the
    diagnostics: the flow itself has no noise.
    """

    flow = "continuity"

    def __init__(self, energy, grid, *, method: str = "finite-volume", temperature: float = 1.0,
                 reconstruction: str = "muscl", duration: float = 1.0):
        if energy.dim != grid.ndim:
            raise ValueError(f"energy has dimension {energy.dim} but grid has {grid.ndim}")
        if method not in ("finite-volume", "lagrangian"):
            raise ValueError(f"method must be 'finite-volume' or 'lagrangian', got {method!r}")
        if reconstruction not in ("muscl", "upwind"):
            raise ValueError(f"reconstruction must be 'muscl' or 'upwind' (first order, for comparison), "
                             f"got {reconstruction!r}")
        self.energy, self.grid, self.method, self.reconstruction = energy, grid, method, reconstruction
        self.temperature = positive_float(temperature, "temperature")
        # an energy path U(x, t / duration): the face velocities (finite volumes) or the
        # characteristics (Lagrangian) follow U(., t); a static energy is a constant path
        self.path = energy if isinstance(energy, EnergyPath) else None
        self.duration = positive_float(duration, "duration")

    # -- finite volumes ----------------------------------------------------------------
    @cached_property
    def face_velocity(self) -> list[np.ndarray]:
        """Per axis ``a``: ``v_a = -d_a U`` at the centres of the faces normal to ``a``,
        shaped like the grid with axis ``a`` of length ``n_a - 1`` (walls) or ``n_a``
        (periodic; the last face wraps)."""
        return face_velocity(self.energy.grad, face_points(self.grid))

    @cached_property
    def max_stable_dt(self) -> float:
        """Largest step that keeps SSP-RK3 + MUSCL positive: ``1/4 / sum_a max|v_a|/h_a``."""
        return max_stable_dt(self.grid, self.face_velocity)

    def rhs(self, rho) -> np.ndarray:
        """Semi-discrete ``d rho / dt`` of the finite-volume scheme."""
        return fv_rhs(self.grid, rho, self.face_velocity, self.reconstruction)

    def _finite_volume(self, rho0, times, dt, cfl, progress):
        dt_max = self.max_stable_dt
        if dt is not None:
            dt = positive_float(dt, "dt")
            if dt > dt_max * (1 + 1e-12):
                raise ValueError(f"dt = {dt:g} violates the CFL condition of the positive MUSCL/SSP-RK3 scheme: "
                                 f"the largest stable step is {dt_max:.6g}")
            step = dt
        else:
            cfl = positive_float(cfl, "cfl")
            if cfl > POSITIVE_CFL:
                raise ValueError(f"cfl = {cfl:g} > {POSITIVE_CFL}: positivity is no longer guaranteed")
            step = dt_max * cfl / POSITIVE_CFL
        bar = progress_bar(progress, int(np.ceil(times[-1] / step)) if np.isfinite(step) else 0, "continuity (MUSCL)")
        velocity = (self.face_velocity, dt_max)
        try:
            out, n_steps, _ = ssp_rk3(self.grid, rho0, times, lambda t: velocity, cfl=cfl, dt=step,
                                      reconstruction=self.reconstruction, bar=bar)
        finally:
            if bar is not None:
                bar.close()
        return out, {"steps": n_steps, "dt": step, "dt_max": dt_max}

    # -- Lagrangian ----------------------------------------------------------------------
    def _lagrangian(self, rho0, times, rtol, atol):
        if not hasattr(rho0, "logpdf"):
            raise ValueError("method='lagrangian' needs rho0 as a density with logpdf (for example "
                             "densities.Gaussian, densities.Gibbs, or densities.GridDensity(grid, values))")
        centre, r_esc = escape_ball(self.grid, rho0)
        Z, L, escaped = integrate_characteristics(self.energy, self.grid.points, times, direction="backward",
                                                  rtol=rtol, atol=atol, centre=centre, r_escape=r_esc)
        nt = Z.shape[0]
        dens = pushforward_density(rho0, Z, L, escaped)
        info = {"escaped_points": int(escaped[-1].sum()), "rtol": rtol, "atol": atol}
        if isinstance(rho0, GridDensity):
            lo, hi = np.array(rho0.grid.bounds).T
            outside = np.any((Z < lo) | (Z > hi), axis=2)
            info["outside_points_final"] = int(outside[-1].sum())
            # what the zero-extension loses: the mass the exact flow would carry in from outside
            info["mass_from_outside"] = float(max(0.0, 1.0 - dens[-1].sum() * self.grid.cell_volume))
        return dens.reshape(nt, *self.grid.shape), info

    # -- entry point ---------------------------------------------------------------------
    def solve(self, rho0, times, *, dt: float | None = None, cfl: float = 0.2, rtol: float = 1e-10,
              atol: float = 1e-12, normalise: str = "warn", progress: bool = False,
              refine: bool | int = False) -> Trajectory:
        """Densities at ``times`` from ``rho0`` at time 0.

        finite-volume: ``rho0`` a grid density or a density object (evaluated on
        the grid); ``cfl`` (<= 1/4) or a fixed ``dt`` (ValueError above the
        largest stable step, which the message names).
        lagrangian: ``rho0`` a density object with ``logpdf``; ``rtol``/``atol``
        are the ODE tolerances.  The densities are point values at the cell
        centres (not renormalised: ``Trajectory.mass()`` shows the quadrature
        error, which grows as the flow concentrates mass below the cell size).
        refine : Richardson error estimates over 2 and 4 times the cell size, as
            ``trajectory.refinement`` (:mod:`fokkerplanck.refine`).
        """
        if self.path is not None:
            if dt is not None or refine:
                raise ValueError("along an energy path the step follows the CFL bound of each stage: no dt, no refine")
            return self._solve_path(rho0, times, cfl, rtol, atol, normalise)
        times = check_times(times)
        t0 = time.perf_counter()
        if self.method == "finite-volume":
            r0 = initial_density(self.grid, rho0, normalise)
            dens, info = self._finite_volume(r0, times, dt, cfl, progress)
            space = ("MUSCL (MC limiter), upwind fluxes" if self.reconstruction == "muscl"
                     else "first-order upwind (comparison only)")
            scheme = {"method": "finite-volume", "space": space, "time": "SSP-RK3", "dt": info["dt"]}
        else:
            dens, info = self._lagrangian(rho0, times, rtol, atol)
            scheme = {"method": "lagrangian", "rtol": rtol, "atol": atol}
        info["wall_time"] = time.perf_counter() - t0
        check_finite(dens, times, f"continuity ({self.method})")
        info["min_density"] = float(dens.min())
        info["max_wall_mass"] = warn_wall_mass(self.grid, times, dens)
        if self.method == "lagrangian":  # point values of the flow on R^d: the box is only a window
            mass = dens.reshape(times.size, -1).sum(axis=1) * self.grid.cell_volume
            k = int(np.argmax(np.abs(mass - 1.0)))
            info["max_mass_error"] = float(abs(mass[k] - 1.0))
            if abs(mass[k] - 1.0) > MASS_TOL:
                warnings.warn(f"the Lagrangian density has grid mass {mass[k]:.6g} at t = {times[k]:g}: mass "
                              f"{'left the box' if mass[k] < 1 else 'is over-counted'} or is unresolved on the grid "
                              "(the flow concentrates below the cell size); KL and R_t of these densities are not "
                              "those of probability laws", RuntimeWarning, stacklevel=2)
        tr = Trajectory(self.grid, times, dens, self.energy, self.temperature, flow=self.flow, scheme=scheme,
                        info=info)
        if refine:
            tr.refinement = richardson(
                lambda g, r0: Continuity(self.energy, g, method=self.method, temperature=self.temperature,
                                         reconstruction=self.reconstruction).solve(
                    r0, times, dt=dt, cfl=cfl, rtol=rtol, atol=atol, normalise="silent"),
                tr, rho0, 3 if refine is True else refine)
        return tr

    def _solve_path(self, rho0, times, cfl, rtol, atol, normalise) -> PathSolution:
        """The deterministic flow ``d_t rho = div(rho grad U(., t))`` along the path.

        finite-volume: the positive MUSCL finite volumes with the face velocities of ``U``
        at each SSP-RK3 stage time (``cfl`` from the stage's largest speed); the face
        centres are built once.  lagrangian: the exact density at the cell centres from
        backward characteristics through the path's kernels with ``t`` (point values, not
        renormalised); a characteristic that leaves the ball where ``rho0`` is negligible
        gives 0 (``escaped`` on the result)."""
        grid, D = self.grid, self.duration
        cfl = positive_float(cfl, "cfl")
        if cfl > POSITIVE_CFL:
            raise ValueError(f"cfl = {cfl:g} > {POSITIVE_CFL}: positivity is no longer guaranteed")
        times = check_times(times, stop=D)
        t0 = time.perf_counter()
        escaped = None
        if self.method == "lagrangian":
            if not hasattr(rho0, "logpdf"):
                raise ValueError("method='lagrangian' needs rho0 as a density with logpdf (densities.Gaussian, "
                                 "densities.GridDensity, ...)")
            centre, r_esc = escape_ball(grid, rho0)
            Z, L, esc = integrate_characteristics(self.path, grid.points, times, direction="backward", rtol=rtol,
                                                  atol=atol, centre=centre, r_escape=r_esc, duration=D)
            dens = pushforward_density(rho0, Z, L, esc).reshape(times.size, *grid.shape)
            escaped = esc.reshape(times.size, *grid.shape)
            info, scheme = {"steps": 0}, {"method": "lagrangian", "rtol": rtol, "atol": atol}
        else:
            rho = initial_density(grid, rho0, normalise)
            faces = face_points(grid)   # built once; each stage evaluates only the path's gradient there

            def velocity(t):
                v = face_velocity(self.path.at(min(t / D, 1.0)).grad, faces)
                return v, max_stable_dt(grid, v)

            dens, steps, _ = ssp_rk3(grid, rho, times, velocity, cfl=cfl, reconstruction=self.reconstruction,
                                     what="flow")
            info = {"steps": steps}
            scheme = {"method": "finite-volume", "time": "SSP-RK3", "cfl": cfl}
        info["wall_time"] = time.perf_counter() - t0
        check_finite(dens, times, f"continuity along a path ({self.method})")
        sol = PathSolution(grid, times, dens, self.path, self.temperature, flow=self.flow, scheme=scheme, info=info,
                           duration=D)
        sol.escaped = escaped
        return sol


# ---------------------------------------------------------------------------------------
def pushforward_density(rho0, Z, L, escaped) -> np.ndarray:
    """``rho_t(x) = rho0(z) exp(l)`` from backward characteristics ``Z`` (nt, N, d) with
    their log-determinants ``L`` (nt, N); 0 where a characteristic escaped."""
    nt, n, d = Z.shape
    with np.errstate(divide="ignore", under="ignore", over="ignore"):
        logr = np.asarray(rho0.logpdf(Z.reshape(-1, d))).reshape(nt, n) + L
        return np.where(escaped, 0.0, np.exp(logr))


def escape_ball(grid, rho0):
    """``(centre, radius)`` of a ball outside which ``rho0`` (or what it becomes) is negligible
    (< e^-3000): backward characteristics that leave it are stopped there."""
    lo, hi = np.array(grid.bounds).T
    if isinstance(rho0, Gaussian):
        return rho0.mean, float(np.sqrt(np.linalg.eigvalsh(rho0.cov).max() * 6000.0)) + \
            np.linalg.norm(hi - lo)
    return 0.5 * (lo + hi), 50.0 * float(np.linalg.norm(hi - lo))


@dataclass
class LagrangianKL:
    """Diagnostics along the exact deterministic flow from a quadrature of rho0."""

    times: np.ndarray
    kl: np.ndarray
    e_lap: np.ndarray
    e_grad2: np.ndarray
    temperature: float
    n_nodes: int

    @property
    def ratio(self) -> np.ndarray:
        return self.temperature * self.e_lap / self.e_grad2

    def dkl_dt(self) -> np.ndarray:
        """The identity ``d/dt KL = E[lap U] - E[|grad U|^2] / T`` evaluated exactly."""
        return self.e_lap - self.e_grad2 / self.temperature


def forward_lagrangian(energy, rho0, times, *, temperature: float = 1.0, nodes: int = 40,
                       log_partition: float | None = None, rtol: float = 1e-11, atol: float = 1e-13,
                       rule: str = "gauss-hermite") -> LagrangianKL:
    """KL(rho_t || rho*), E[lap U], E[|grad U|^2] and R_t along the deterministic flow.

    rho0 : :class:`~fokkerplanck.densities.Gaussian` (tensor Gauss-Hermite rule
        with ``nodes`` per axis) or :class:`~fokkerplanck.densities.GridDensity`
        (the cells as nodes, weights ``rho_i vol``: the midpoint rule).
        Gauss-Hermite is exact for quadratic energies (polynomial integrands)
        but converges slowly once the flow map steepens between basins of a
        mixture: for the eight Gaussians from N(0, 4 I) at t = 0.4 it is 0.04
        off in KL with 80 nodes per axis, where the midpoint rule on 256^2
        cells is within 5e-4.  Use a GridDensity for multimodal energies.
        Whatever the rule, ``d/dt KL = E[lap U] - E|grad U|^2 / T`` holds node
        by node, so ``tau_det`` is exactly the argmin of the computed KL.
    log_partition : ``log Z`` of ``exp(-U/T)``; default the energy's closed form.
    rule : for a Gaussian ``rho0``: ``"gauss-hermite"`` (``nodes`` per axis) or
        ``"midpoint"``: the cells of a box of ``mean +- 6 sd`` per axis, ``nodes`` cells per
        axis (the whole law, not a grid's window of it; mass outside 2e-9 per axis).  The
        eight Gaussians from N(0, 9 I): 144^2 nodes give KL within 0.25 % of 576^2 up to
        t = 3 (t = 1: 5.2591 against 5.2568).
    """
    T = positive_float(temperature, "temperature")
    times = check_times(times)
    if rule not in ("gauss-hermite", "midpoint"):
        raise ValueError(f"rule must be 'gauss-hermite' or 'midpoint', got {rule!r}")
    if isinstance(rho0, Gaussian) and rule == "midpoint":
        sd = np.sqrt(np.diag(rho0.cov))
        box = Grid([(m - 6 * s_, m + 6 * s_) for m, s_ in zip(rho0.mean, sd)], positive_int(nodes, "nodes"))
        X = box.points
        logr0 = rho0.logpdf(X)
        W = np.exp(logr0) * box.cell_volume
    elif isinstance(rho0, Gaussian):
        X, W = rho0.quadrature(nodes)
        logr0 = rho0.logpdf(X)
    elif isinstance(rho0, GridDensity):
        v = rho0.values.ravel()
        keep = v > 0
        X, W, logr0 = rho0.grid.points[keep], v[keep] * rho0.grid.cell_volume, np.log(v[keep])
    else:
        raise ValueError(f"forward_lagrangian needs a Gaussian or GridDensity rho0, got {type(rho0).__name__}")
    logz = energy.log_partition(T) if log_partition is None else float(log_partition)
    Z, L, _ = integrate_characteristics(energy, X, times, direction="forward", rtol=rtol, atol=atol)
    kl, el, eg = (np.empty(times.size) for _ in range(3))
    for j in range(times.size):
        z = Z[j]
        kl[j] = np.sum(W * (logr0 + L[j] + energy.value(z) / T + logz))
        el[j] = np.sum(W * energy.laplacian(z))
        eg[j] = np.sum(W * np.sum(energy.grad(z) ** 2, axis=1))
    return LagrangianKL(times, kl, el, eg, T, int(X.shape[0]))

