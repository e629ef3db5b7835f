"""Potential flows along a density homotopy: the density-weighted Poisson equation
``div(rho_bar grad Phi) = -d_t rho_bar`` on a grid, the flow ``dx/dt = grad Phi`` it drives,
and the homotopy-matching check ``KL(rho_Phi(t) || rho_bar(t))``.

Discretisation (the face structure of the flux schemes, :func:`fokkerplanck.operators.fluxes.faces`):
the flux through the face ``f`` between cells ``L`` and ``R`` along axis ``a`` is
``rho_f (Phi_R - Phi_L) / h_a`` with ``rho_f`` the exact ``rho_bar`` at the face centre, so

    A Phi = d_t rho_bar,   A = sum_f rho_f / h_a^2 (e_R - e_L)(e_R - e_L)'

(conservative: the columns of ``A`` sum to zero; zero-flux walls).  ``A`` is singular
(constants); the right-hand side is made compatible by removing its cell mean (the
mass ``rho_bar`` loses through the walls, reported as ``wall_flux``), ``Phi`` is pinned
to mean zero, and the system is solved by sparse LU (scipy; 1D and 2D) or
Jacobi-preconditioned conjugate gradients (3D, where LU fill-in costs 30-140x more:
:func:`solve_pinned`).  The compatibility correction is taken in proportion to ``rho_bar`` (a uniform
one would put a source into empty cells, where the floored weights turn it into huge
velocities that only shorten the time steps).  Face weights are floored at ``FLOOR`` times their maximum: where ``rho_bar``
vanishes ``Phi`` is otherwise undetermined (and carries no mass).

The face velocities ``u_f = (Phi_R - Phi_L) / h_a`` drive the positive MUSCL finite
volumes of :func:`fokkerplanck.flows.continuity.fv_rhs` (SSP-RK3, a Poisson solve at every
stage time) -- :func:`potential_flow` -- and particles with tracked log-densities
(:func:`potential_flow_particles`): each particle moves with the face velocities of its
cell interpolated linearly along each axis, whose divergence is the cell's discrete
divergence, so ``d/dt log rho(X_t) = -div_h u`` is consistent with the grid scheme.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from fokkerplanck._core.validate import finite_array, positive_float
from fokkerplanck.energies.paths import check_time, schedule
from fokkerplanck.operators.muscl import POSITIVE_CFL, fv_rhs
from fokkerplanck.operators.poisson import FLOOR, solve_pinned, weighted_laplacian

__all__ = ["PoissonSolution", "weighted_poisson", "potential_flow", "PotentialFlow", "potential_flow_particles",
           "homotopy_kl", "boltzmann_residual", "frozen_flow", "gaussian_velocity_error", "FLOOR"]



def _face_points(grid, a):
    """Centres of the interior faces normal to axis ``a`` (walls excluded), in FaceSet order."""
    axes = list(grid.axes)
    axes[a] = grid.faces[a][1:-1]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1), mesh[0].shape


@dataclass
class PoissonSolution:
    """``phi`` (grid shape, mean zero), ``face_velocity`` per axis (``Continuity`` layout),
    ``wall_flux`` (the cell sum of ``d_t rho_bar`` times the cell volume removed for
    compatibility, in proportion to rho_bar) and the relative residual of the solve."""

    phi: np.ndarray
    face_velocity: list
    wall_flux: float
    residual: float


def weighted_poisson(homotopy, grid, t) -> PoissonSolution:
    """Solve ``-div(rho_bar grad Phi) = d_t rho_bar`` at time ``t`` on ``grid`` (module docstring)."""
    if any(grid.periodic):
        raise ValueError("the weighted Poisson solve has zero-flux walls: use a non-periodic grid")
    if homotopy.dim != grid.ndim:
        raise ValueError(f"the homotopy has dimension {homotopy.dim} but the grid has {grid.ndim}")
    t = check_time(t)
    w = []
    for a in range(grid.ndim):
        P, _ = _face_points(grid, a)
        w.append(np.exp(homotopy.logpdf(P, t)))
    A = weighted_laplacian(grid, np.concatenate(w))
    rho = np.exp(homotopy.logpdf(grid.points, t))
    b = rho * homotopy.dt_logpdf(grid.points, t)
    wall = float(b.sum() * grid.cell_volume)
    b = b - b.sum() * rho / rho.sum()  # the wall loss taken where the mass is, not spread over empty cells
    phi = solve_pinned(A, b, grid.ndim)
    res = float(np.abs(A @ phi - b).max() / max(np.abs(b).max(), 1e-300))
    Phi = phi.reshape(grid.shape)
    vel = []
    for a in range(grid.ndim):
        d = np.diff(Phi, axis=a) / grid.spacing[a]
        vel.append(d)
    return PoissonSolution(Phi, vel, wall, res)


class PotentialFlow:
    """Cached Poisson solves of one homotopy on one grid (keyed by time)."""

    def __init__(self, homotopy, grid):
        self.homotopy, self.grid = homotopy, grid
        self._cache: dict = {}

    def solve(self, t) -> PoissonSolution:
        key = float(t)
        if key not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = weighted_poisson(self.homotopy, self.grid, key)
        return self._cache[key]

    def max_speed(self, t) -> float:
        return sum(np.abs(v).max() / h for v, h in zip(self.solve(t).face_velocity, self.grid.spacing))


def potential_flow(homotopy, grid, times, *, cfl: float = 0.2, rho0=None):
    """``d_t rho = -div(rho grad Phi)`` from ``rho0`` (default: ``rho_bar(., 0)`` on the grid's
    cells) to each time of ``times`` (in [0, 1], increasing), by SSP-RK3 with a Poisson solve
    at every stage time.  Returns ``(densities (nt, *grid.shape), info)``."""

    times = schedule(times, "times")
    cfl = positive_float(cfl, "cfl")
    if cfl > POSITIVE_CFL:
        raise ValueError(f"cfl = {cfl:g} > {POSITIVE_CFL}: positivity is no longer guaranteed")
    pf = PotentialFlow(homotopy, grid)
    for t_end in (times[0], times[-1]):   # the marginal must fit in the box at both ends
        m = grid.mass_near_wall(grid.density_from_logpdf(lambda X, t=t_end: homotopy.logpdf(X, t)), 2)
        if m > 1e-6:
            warnings.warn(f"the homotopy's marginal at t = {t_end:g} puts mass {m:.3g} within two cells of the walls "
                          f"of {grid.bounds}: the box is too small, the zero-flux walls distort the flow",
                          RuntimeWarning, stacklevel=2)
    u = grid.density_from_logpdf(lambda X: homotopy.logpdf(X, times[0])) if rho0 is None else \
        grid.check_density(rho0, "rho0")
    out = np.empty((times.size, *grid.shape))
    t, steps, wall = float(times[0]), 0, 0.0
    for j, tout in enumerate(times):
        while tout - t > 1e-12:
            h = min(cfl / max(pf.max_speed(t), 1e-300), tout - t)
            v0 = pf.solve(t).face_velocity
            u1 = u + h * fv_rhs(grid, u, v0)
            u2 = 0.75 * u + 0.25 * (u1 + h * fv_rhs(grid, u1, pf.solve(t + h).face_velocity))
            u = (u + 2.0 * (u2 + h * fv_rhs(grid, u2, pf.solve(t + 0.5 * h).face_velocity))) / 3.0
            wall = max(wall, abs(pf.solve(t).wall_flux))
            t += h
            steps += 1
        if not np.all(np.isfinite(u)):
            raise FloatingPointError(f"the potential flow became non-finite before t = {tout:g}")
        out[j] = u
    return out, {"steps": steps, "max_wall_flux": wall, "poisson_solves": len(pf._cache)}


def homotopy_kl(homotopy, grid, densities, times, references=None) -> np.ndarray:
    """``KL(rho_t || rho_bar(t))`` of grid densities against the homotopy's cell values
    (``references``: those cell values, when the caller has them already)."""
    if references is None:
        references = [grid.density_from_logpdf(lambda X, t=t: homotopy.logpdf(X, t)) for t in times]
    out = []
    for r, q in zip(densities, references):
        m = r > 0
        out.append(float(np.sum(r[m] * np.log(r[m] / q[m])) * grid.cell_volume))
    return np.array(out)


def gaussian_velocity_error(homotopy, grid, t) -> float:
    """One data point: the ``rho_bar``-weighted L1 distance between the grid's face velocities
    and the closed-form ``grad Phi`` at the face centres (the Poisson solve's accuracy)."""
    sol = weighted_poisson(homotopy, grid, t)
    num = den = 0.0
    for a in range(grid.ndim):
        P, shp = _face_points(grid, a)
        w = np.exp(homotopy.logpdf(P, t)).reshape(shp)
        num += np.sum(w * np.abs(sol.face_velocity[a] - homotopy.gaussian_velocity(P, t)[:, a].reshape(shp)))
        den += np.sum(w)
    return float(num / den)


def _cell_velocity(grid, sol, X):
    """Velocity at points ``X`` from the face velocities of their cells (linear along each
    axis between the cell's two faces, 0 on the walls) and the cell's discrete divergence."""
    n, d = X.shape
    V = np.empty((n, d))
    div = np.zeros(n)
    idx = []
    for a in range(d):
        lo, h, c = grid.bounds[a][0], grid.spacing[a], grid.cells[a]
        i = np.clip(((X[:, a] - lo) / h).astype(np.int64), 0, c - 1)
        idx.append(i)
    for a in range(d):
        u = sol.face_velocity[a]                     # axis a has c - 1 interior faces
        pad = [(0, 0)] * d
        pad[a] = (1, 1)
        up = np.pad(u, pad)                          # walls: zero velocity
        lo_idx = list(idx)
        hi_idx = list(idx)
        hi_idx[a] = idx[a] + 1
        ul, ur = up[tuple(lo_idx)], up[tuple(hi_idx)]
        s = (X[:, a] - (grid.bounds[a][0] + idx[a] * grid.spacing[a])) / grid.spacing[a]
        V[:, a] = (1 - s) * ul + s * ur
        div += (ur - ul) / grid.spacing[a]
    return V, div


@dataclass
class ParticleFlow:
    times: np.ndarray
    positions: np.ndarray   # (nt, N, d)
    logdensity: np.ndarray  # (nt, N) tracked log rho_Phi(X_t)
    kl: np.ndarray          # KL(rho_Phi(t) || rho_bar(t)) estimates
    kl_se: np.ndarray


def potential_flow_particles(homotopy, grid, times, n: int, *, dt: float = 0.01, seed=None) -> ParticleFlow:
    """Particles from exact samples of ``rho_bar(., times[0])`` moved by ``dx/dt = grad Phi`` (Heun,
    grid ``Phi`` from :func:`weighted_poisson`) with ``d/dt log rho = -div_h grad Phi``; the KL to
    ``rho_bar`` by Monte Carlo with its standard error."""

    times = schedule(times, "times")
    dt = positive_float(dt, "dt")
    pf = PotentialFlow(homotopy, grid)
    X = homotopy.sample(int(n), times[0], seed=seed)
    ell = homotopy.logpdf(X, times[0])
    P, L = [], []
    t = float(times[0])
    for tout in times:
        while tout - t > 1e-12:
            h = min(dt, tout - t)
            V1, D1 = _cell_velocity(grid, pf.solve(t), X)
            Y = X + h * V1
            V2, D2 = _cell_velocity(grid, pf.solve(t + h), Y)
            X = X + 0.5 * h * (V1 + V2)
            ell = ell - 0.5 * h * (D1 + D2)
            t += h
        P.append(X.copy())
        L.append(ell.copy())
    P, L = np.array(P), np.array(L)
    kl, se = [], []
    for j, tj in enumerate(times):
        f = L[j] - homotopy.logpdf(P[j], tj)
        kl.append(float(f.mean()))
        se.append(float(f.std(ddof=1) / math.sqrt(f.size)))
    return ParticleFlow(times, P, L, np.array(kl), np.array(se))


def boltzmann_residual(homotopy, grid, t, phi=None) -> dict:
    """Is ``Phi(., t)`` a Boltzmann energy of ``rho_bar(., t)``, i.e. ``Phi = a log rho_bar + b``?
    The best ``(a, b)`` by least squares weighted by ``rho_bar(., t)``, and the weighted relative
    residual ``||Phi - a log rho_bar - b|| / ||Phi - mean Phi||`` (0 for a Boltzmann potential).
    ``phi`` defaults to the grid Poisson solution."""
    Phi = (weighted_poisson(homotopy, grid, t).phi if phi is None else np.asarray(phi, dtype=float)).ravel()
    L = homotopy.logpdf(grid.points, t)
    w = np.exp(L)
    w = w / w.sum()
    M = np.stack([L, np.ones_like(L)], axis=1)
    sw = np.sqrt(w)
    (a, b), *_ = np.linalg.lstsq(M * sw[:, None], Phi * sw, rcond=None)
    r = Phi - a * L - b
    centred = Phi - np.sum(w * Phi)
    return {"a": float(a), "b": float(b), "relative_residual": float(np.sqrt(np.sum(w * r ** 2) / np.sum(w * centred ** 2)))}


def frozen_flow(homotopy, grid, t_freeze, durations, *, cfl: float = 0.2):
    """Run on the ODE past the homotopy: ``d_t rho = -div(rho grad Phi(., t_freeze))`` (the potential
    frozen at ``t_freeze``) from ``rho_bar(., t_freeze)`` for the extra ``durations``; returns the
    densities and ``KL(rho_s || rho_bar(., t_freeze))``.  The Langevin flow of
    ``U = -log rho_bar(., t_freeze)`` keeps that law (its Gibbs law); this one need not."""
    t_freeze = check_time(t_freeze)
    durations = finite_array(durations, "durations", ndim=1)
    if durations.size == 0 or durations[0] < 0 or np.any(np.diff(durations) < 0):
        raise ValueError(f"durations must be a non-empty non-decreasing sequence of numbers >= 0, got "
                         f"{durations[:5].tolist()}")
    v = weighted_poisson(homotopy, grid, t_freeze).face_velocity
    rate = sum(np.abs(x).max() / h for x, h in zip(v, grid.spacing))
    step = positive_float(cfl, "cfl") / max(rate, 1e-300)
    u = grid.density_from_logpdf(lambda X: homotopy.logpdf(X, t_freeze))
    ref = u.copy()
    out, s = [], 0.0
    for tout in durations:
        while tout - s > 1e-12:
            h = min(step, tout - s)
            u1 = u + h * fv_rhs(grid, u, v)
            u2 = 0.75 * u + 0.25 * (u1 + h * fv_rhs(grid, u1, v))
            u = (u + 2.0 * (u2 + h * fv_rhs(grid, u2, v))) / 3.0
            s += h
        out.append(u.copy())
    out = np.array(out)
    return out, homotopy_kl(homotopy, grid, out, durations, [ref] * len(out))
