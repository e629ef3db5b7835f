"""Conservative finite volumes for ``d_t rho = -div(rho v)``: MUSCL reconstruction with
the monotonised-central limiter, upwind face fluxes, zero-flux walls (or periodic
axes), and the SSP-RK3 time stepper that keeps the scheme positive for
``dt <= POSITIVE_CFL / sum_a max|v_a| / h_a``.  The static and the time-dependent
continuity solvers both step through :func:`ssp_rk3`."""
from __future__ import annotations

import numpy as np

__all__ = ["POSITIVE_CFL", "face_points", "face_velocity", "max_stable_dt", "fv_rhs", "ssp_rk3"]

POSITIVE_CFL = 0.25


def face_points(grid) -> list[tuple[np.ndarray, tuple]]:
    """Per axis ``a``: the centres of the faces normal to ``a`` where a flux is computed
    (interior faces on a walled axis, every face but the first on a periodic one, the last
    wrapping), as points ``(M, d)`` and the shape they fill."""
    out = []
    for a in range(grid.ndim):
        fa = grid.faces[a][1:] if grid.periodic[a] else grid.faces[a][1:-1]
        axes = list(grid.axes)
        axes[a] = fa
        mesh = np.meshgrid(*axes, indexing="ij")
        out.append((np.stack([m.ravel() for m in mesh], axis=1), mesh[0].shape))
    return out


def face_velocity(grad, faces) -> list[np.ndarray]:
    """``v_a = -d_a U`` at the :func:`face_points` ``faces``, given ``grad`` on points (M, d)."""
    return [-grad(P)[:, a].reshape(shape) for a, (P, shape) in enumerate(faces)]


def max_stable_dt(grid, velocity) -> float:
    """Largest step that keeps SSP-RK3 + MUSCL positive: ``1/4 / sum_a max|v_a|/h_a``."""
    rate = sum(np.abs(v).max() / h for v, h in zip(velocity, grid.spacing))
    return POSITIVE_CFL / rate if rate > 0 else np.inf


def _mc_slopes(r):
    """Monotonised-central limited slopes along axis 0 of a padded array (interior cells)."""
    dm = r[1:-1] - r[:-2]
    dp = r[2:] - r[1:-1]
    s = np.minimum(np.minimum(2 * np.abs(dm), 2 * np.abs(dp)), 0.5 * np.abs(dm + dp))
    return np.where(dm * dp > 0, np.sign(dm) * s, 0.0)


def fv_rhs(g, rho, face_velocity, reconstruction: str = "muscl") -> np.ndarray:
    """``d rho / dt = -div(rho v)`` by conservative finite volumes: MUSCL (or first-order
    upwind) face values, upwind fluxes with the face velocities ``face_velocity[a]`` (shaped
    as :func:`face_velocity` returns them), zero-flux walls."""
    out = np.zeros_like(rho)
    for a in range(g.ndim):
        r = np.moveaxis(rho, a, 0)
        v = np.moveaxis(face_velocity[a], a, 0)
        if g.periodic[a]:
            pad = np.concatenate([r[-2:], r, r[:2]])
        else:  # mirror ghosts: zero slope in the boundary cells
            pad = np.concatenate([r[:1], r[:1], r, r[-1:], r[-1:]])
        s = _mc_slopes(pad)[1:-1] if reconstruction == "muscl" else np.zeros_like(r)
        if g.periodic[a]:
            left = r + 0.5 * s                              # face i+1/2 seen from cell i
            right = np.roll(r - 0.5 * s, -1, axis=0)        # ... from cell i+1
            F = np.maximum(v, 0) * left + np.minimum(v, 0) * right
            div = F - np.roll(F, 1, axis=0)
        else:
            left = (r + 0.5 * s)[:-1]
            right = (r - 0.5 * s)[1:]
            F = np.maximum(v, 0) * left + np.minimum(v, 0) * right
            div = np.concatenate([F[:1], F[1:] - F[:-1], -F[-1:]])
        np.moveaxis(out, a, 0)[...] -= div / g.spacing[a]
    return out


def ssp_rk3(grid, rho0, times, velocity, *, cfl: float, dt: float | None = None, reconstruction: str = "muscl",
            bar=None, what: str = "finite-volume solution"):
    """Densities at ``times`` from ``rho0`` at time 0 by SSP-RK3 (Shu-Osher) on :func:`fv_rhs`.

    ``velocity(t)`` gives the face velocities at time ``t`` and their largest positive
    step (:func:`max_stable_dt`); stages are evaluated at ``t``, ``t + h`` and
    ``t + h/2``.  Each step is ``dt`` when given (the caller has checked it), else
    ``cfl / POSITIVE_CFL`` times the largest stable step at its start; steps end on the
    output times.  Returns ``(densities, steps, last step)``."""
    u = np.array(rho0, dtype=float, copy=True)
    out = np.empty((times.size, *u.shape))
    t, steps, h = 0.0, 0, float("nan")
    for j, tout in enumerate(times):
        while tout - t > 1e-12 * max(1.0, tout):
            v0, dmax = velocity(t)
            h = min(dt if dt is not None else dmax * cfl / POSITIVE_CFL, tout - t)
            u1 = u + h * fv_rhs(grid, u, v0, reconstruction)
            u2 = 0.75 * u + 0.25 * (u1 + h * fv_rhs(grid, u1, velocity(t + h)[0], reconstruction))
            u = (u + 2.0 * (u2 + h * fv_rhs(grid, u2, velocity(t + 0.5 * h)[0], reconstruction))) / 3.0
            t += h
            steps += 1
            if bar is not None:
                bar.update(1)
        if not np.all(np.isfinite(u)):
            raise FloatingPointError(f"the {what} became non-finite before t = {tout:g}")
        out[j] = u
    return out, steps, h
