"""Langevin particles with a time-dependent energy: annealed Langevin along an
:class:`~fokkerplanck.energies.paths.EnergyPath`.

``X_{k+1} = X_k - dt grad U(X_k, t_k) + sqrt(2 T dt) xi_k`` with the path parameter
``t_k / duration`` (or Leimkuhler-Matthews, or MALA): step ``k`` runs the compiled kernel (or the vectorised
path of a kernel-less energy) on the energy frozen at ``t_k``, with the noise of global
step ``k``, so the random stream is the one of :func:`particles.langevin` (same seed, same
particle, same step: same normals).  Kernels are shared along the path (only the
parameters change), so nothing recompiles per step: the stretch between two saves runs in
one compiled call with a table of per-step parameters (each block of particles takes all
its steps in cache, as a static run does).
"""
from __future__ import annotations

import numpy as np

from fokkerplanck._core.validate import finite_array, positive_float, positive_int
from fokkerplanck.energies import Custom
from fokkerplanck.energies.blocks import WRITTEN, block_kernels, block_params

from fokkerplanck._core.rng import seed_key
from fokkerplanck.flows.lagrangian import integrate_characteristics

from particles.ensemble import CHUNK_WORK, Chunks, EnsembleInterrupted, _stability, _vectorised, check_particles, \
    warn_lost
from particles.integrators import LANGEVIN_SCHEMES, flow_kernel, langevin_kernel
from particles.options import Save, check_seed, save_from_keywords

__all__ = ["annealed_langevin", "path_gradient_flow", "path_flow", "AnnealedRun"]

TABLE_BYTES = 32 << 20   # block parameters of one compiled stretch of an annealing run (rows of steps)
STABILITY_TIMES = 5      # path times at which the explicit step is checked against the stability limit
PATH_FLOW_FIRST = 1024   # particles of path_flow's first compiled call (then calls of about CHUNK_SECONDS)


class AnnealedRun:
    """``times`` (physical), ``positions`` (n_saves, N, d), ``status`` per particle;
    ``meta`` the run's counts (``n_saves``, ``n_steps``, ``steps_done``; ``interrupted``
    after Ctrl-C, when the run is :class:`~particles.ensemble.EnsembleInterrupted`'s
    ``partial``)."""

    def __init__(self, times, positions, status, meta=None):
        self.times, self.positions, self.status = times, positions, status
        self.meta = {} if meta is None else meta

    def __repr__(self):
        return f"AnnealedRun({self.positions.shape[1]} particles, {self.times.size} saves to t={self.times[-1]:g})"


def _setup(path, x0, dt, n_steps, duration, box, save, where):
    """The checks shared by the path integrators: the step, the horizon (default ``n_steps * dt``,
    never shorter than the run), the particles and box as :func:`particles.langevin`'s, and the
    save steps of ``save`` (snapshots in memory only)."""
    dt = positive_float(dt, "dt")
    n_steps = positive_int(n_steps, "n_steps", minimum=0)
    duration = n_steps * dt if duration is None else positive_float(duration, "duration")
    if n_steps * dt > duration * (1 + 1e-9):
        raise ValueError(f"n_steps * dt = {n_steps * dt:g} runs past duration = {duration:g}")
    save.positions_only(where)
    X, dt, n_steps, lo, hi = check_particles(path.at(0.0), finite_array(x0, "x0"), dt, n_steps, box)
    return X, dt, n_steps, lo, hi, duration, save.steps(n_steps, dt)


def annealed_langevin(path, x0, dt: float, n_steps: int, *, duration: float | None = None,
                      temperature: float = 1.0, seed: int = 0, box=None, method: str = "euler-maruyama",
                      save: Save | None = None, save_every: int | None = None) -> AnnealedRun:
    """Langevin along ``path`` over ``[0, duration]`` (default ``n_steps * dt``); ``method`` one of
    :data:`particles.integrators.LANGEVIN_SCHEMES` (MALA: each step's Metropolis test is against
    the energy frozen at that step, so it is exact for the frozen law, not for the moving one;
    ``acceptance`` per particle).  ``save``: a :class:`particles.Save` (``every`` or ``times``;
    snapshots in memory); ``save_every=`` is ``Save(every=...)``.

    Runs in the bounded compiled calls of :class:`particles.ensemble.Chunks`: Ctrl-C raises
    :class:`~particles.ensemble.EnsembleInterrupted` within about a second, its ``partial`` the
    run of the completed saves (``meta["steps_done"]``).  Warns, as :func:`particles.langevin`
    does, when ``dt`` is beyond the explicit stability limit of the path's energies at the initial
    particles, and when particles left the box or became non-finite."""
    if method not in LANGEVIN_SCHEMES:
        raise ValueError(f"method must be one of {sorted(LANGEVIN_SCHEMES)}, got {method!r}")
    save = save_from_keywords(save, "annealed_langevin", save_every=save_every)
    T = positive_float(temperature, "temperature")
    X, dt, n_steps, lo, hi, duration, steps = _setup(path, x0, dt, n_steps, duration, box, save,
                                                              "annealed_langevin")
    k0, k1 = seed_key(check_seed(seed))
    if method != "mala":   # the energies along the stretch run here, as particles.langevin checks its one
        t_end = min(n_steps * dt / duration, 1.0)
        ts = np.linspace(0.0, t_end, STABILITY_TIMES if t_end > 0 else 1)
        _stability([path.at(float(t)) for t in ts], X, dt, along=f" (energies of the path at t/duration in "
                   f"[0, {t_end:g}])", stacklevel=3)
    status = np.zeros(X.shape[0], dtype=np.int8)
    accepted = np.zeros(X.shape[0], dtype=np.int64)
    saves, times = [], []
    chunks = Chunks(CHUNK_WORK // X.shape[0])   # bounded compiled calls: Ctrl-C is seen between them
    meta = {"n_saves": len(steps), "n_steps": n_steps}
    k = 0
    try:
        for stop in steps:   # the next save
            while k < stop:
                U = path.at(min(k * dt / duration, 1.0))
                if U.has_kernels:
                    # a table of block parameters for the stretch, a row per step, as long as the energies
                    # share their kernels (they do along the built-in paths: only parameters move); run in
                    # bounded calls
                    blocks = block_kernels(U)
                    p0 = block_params(U, np.float64)
                    end = min(stop, k + max(1, TABLE_BYTES // (8 * p0.size)))
                    ts = np.minimum(np.arange(k, end) * dt / duration, 1.0)
                    fast = type(U) in WRITTEN or isinstance(U, Custom)   # block parameters = the energy's own
                    rows = path.param_rows(ts) if fast and hasattr(path, "param_rows") else None
                    if rows is None:
                        rows = [p0]
                        for j in range(k + 1, end):
                            Uj = path.at(min(j * dt / duration, 1.0))
                            pj = block_params(Uj, np.float64) if Uj.has_kernels else None
                            if pj is None or pj.size != p0.size or block_kernels(Uj) is not blocks:
                                break
                            rows.append(pj)
                        rows = np.array(rows)
                    kernel = langevin_kernel(blocks, method)

                    def piece(a, b, kernel=kernel, rows=rows, k_rows=k):
                        kernel(X, a, b - a, dt, T, rows[a - k_rows:b - k_rows], k0, k1, lo, hi, status, accepted, 0)
                else:
                    step = _vectorised("langevin", U, X, method, "float64")

                    def piece(a, b, step=step, p=U.params):
                        step(X, a, 1, dt, T, p, k0, k1, lo, hi, status, accepted, 0)
                    rows = [None]
                chunks.run(k, k + len(rows), piece)
                k += len(rows)
            saves.append(X.copy())
            times.append(k * dt)
    except KeyboardInterrupt:
        meta.update(interrupted=True, steps_done=chunks.done)
        m = min(len(times), len(saves))   # Ctrl-C may land between the two appends of a save
        part = AnnealedRun(np.array(times[:m]), np.array(saves[:m]).reshape(m, *X.shape), status, meta)
        raise EnsembleInterrupted(part) from None
    meta["steps_done"] = k
    warn_lost(status)
    run = AnnealedRun(np.array(times), np.array(saves), status, meta)
    run.acceptance = accepted / max(n_steps, 1) if method == "mala" else None
    return run


def path_gradient_flow(path, x0, dt: float, n_steps: int, *, duration: float | None = None, logrho0=None,
                       box=None, save: Save | None = None, save_every: int | None = None) -> AnnealedRun:
    """The deterministic flow ``dX/dt = -grad U(X, t)`` along ``path`` by explicit Euler with the
    energy frozen at ``t_k`` (first order in the step, the time dependence included), carrying
    ``log rho_t(X_t)`` by the exact log-determinant of each Euler map (``logrho0`` (N,) at the start;
    default 0, so the increments).  ``logdensity`` (n_saves, N) on the result.  ``save`` as for
    :func:`annealed_langevin`."""
    save = save_from_keywords(save, "path_gradient_flow", save_every=save_every)
    X, dt, n_steps, lo, hi, duration, steps = _setup(path, x0, dt, n_steps, duration, box, save,
                                                              "path_gradient_flow")
    LOG = np.zeros(X.shape[0]) if logrho0 is None else finite_array(logrho0, "logrho0", shape=(X.shape[0],)).copy()
    status = np.zeros(X.shape[0], dtype=np.int8)
    saves, logs, times = [], [], []
    chunks = Chunks(1)   # one step per call (the energy changes every step): Ctrl-C is seen between them
    meta = {"n_saves": len(steps), "n_steps": n_steps}
    k = 0

    def piece(a, b):
        U = path.at(min(a * dt / duration, 1.0))
        if U.has_kernels:
            flow_kernel(U.kernels, "euler", True)(X, LOG, 1, dt, U.params, lo, hi, status)
        else:
            _vectorised("gradient", U, X, "euler", "float64", True)(X, LOG, 1, dt, U.params, lo, hi, status)

    try:
        for stop in steps:
            while k < stop:
                chunks.run(k, k + 1, piece)
                k += 1
            saves.append(X.copy())
            logs.append(LOG.copy())
            times.append(k * dt)
    except KeyboardInterrupt:
        meta.update(interrupted=True, steps_done=chunks.done)
        m = min(len(times), len(saves), len(logs))   # Ctrl-C may land between the appends of a save
        part = AnnealedRun(np.array(times[:m]), np.array(saves[:m]).reshape(m, *X.shape), status, meta)
        part.logdensity = np.array(logs[:m]).reshape(m, X.shape[0])
        raise EnsembleInterrupted(part) from None
    meta["steps_done"] = k
    warn_lost(status)
    run = AnnealedRun(np.array(times), np.array(saves), status, meta)
    run.logdensity = np.array(logs)
    return run


def path_flow(path, x0, times, *, duration: float = 1.0, logrho0=None, rtol: float = 1e-10,
              atol: float = 1e-12) -> AnnealedRun:
    """The deterministic flow ``dX/dt = -grad U(X, t)`` along a path with numba kernels, to ODE
    tolerance: adaptive Dormand-Prince 5(4) per particle (:mod:`fokkerplanck.flows.lagrangian`),
    the path's kernels evaluated at every stage's own time, carrying
    ``log rho_t(X_t) = log rho_0(X_0) + int_0^t lap U(X_s, s) ds`` (``logrho0`` (N,); default
    0, so the increments).  ``times`` physical, in ``[0, duration]``.  The high-order
    counterpart of :func:`path_gradient_flow` (Euler with frozen steps): no step to choose,
    and its error is the ODE tolerance, not ``O(dt)``.  Particles that fail to converge raise
    :class:`~fokkerplanck.flows.lagrangian.CharacteristicsError`.  The particles go in bounded
    compiled calls (:class:`particles.ensemble.Chunks`): Ctrl-C raises
    :class:`~particles.ensemble.EnsembleInterrupted` with the particles completed (all their
    times) as ``partial``."""
    X = finite_array(x0, "x0")
    if X.ndim != 2 or X.shape[1] != path.dim:
        raise ValueError(f"x0 must have shape (N, {path.dim}), got {X.shape}")
    times = finite_array(times, "times", ndim=1)
    if times.size == 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-empty increasing sequence")
    L0 = np.zeros(X.shape[0]) if logrho0 is None else finite_array(logrho0, "logrho0", shape=(X.shape[0],))
    duration = positive_float(duration, "duration")
    n = X.shape[0]
    parts = []

    def piece(a, b):   # particles a..b-1: each characteristic is independent, so any split gives the same bits
        Z, L, _ = integrate_characteristics(path, X[a:b], times, direction="forward", rtol=rtol, atol=atol,
                                            duration=duration)
        parts.append((Z, L))

    def result(m, meta):
        Z = np.concatenate([p[0] for p in parts], axis=1) if parts else np.empty((times.size, 0, X.shape[1]))
        L = np.concatenate([p[1] for p in parts], axis=1) if parts else np.empty((times.size, 0))
        run = AnnealedRun(times, Z, np.zeros(m, dtype=np.int8), meta)
        run.logdensity = L0[None, :m] + L
        return run

    chunks = Chunks(PATH_FLOW_FIRST)   # particles per compiled call: Ctrl-C is seen between them
    try:
        chunks.run(0, n, piece)
    except KeyboardInterrupt:
        m = sum(p[0].shape[1] for p in parts)
        raise EnsembleInterrupted(result(m, {"n_particles": n, "particles_done": m, "interrupted": True}), m, n,
                                  t=float(times[-1]), unit="particles") from None
    return result(n, {"n_particles": n, "particles_done": n})
