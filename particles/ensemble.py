"""Ensembles in this process: the result (:class:`Ensemble`), the save loop, the
in-process runners.

``run_langevin`` and ``run_gradient_flow`` run a whole ensemble, or one shard of a
sharded one (:mod:`particles.distributed` calls them on its workers); the public
:func:`particles.langevin` / :func:`particles.gradient_flow` (:mod:`particles.api`)
choose between them and the sharded run.  They call the compiled kernels of
:mod:`particles.integrators` between saves; Python work scales with the number of
saves, not steps.

What is saved is a :class:`particles.Save`.  Storage (``Save.store``): ``"memory"``
keeps every saved snapshot (n_saves, N, d); ``"summaries"`` keeps only per-save
summaries (moments, ``E[lap U]``, ``E[|grad U|^2]``, ``R_t``, tracked KL); an HDF5
path streams the snapshots to the file one save at a time (atomically: the file
appears under its name only when the run has finished) and keeps the summaries in
memory.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from fokkerplanck import energies as E
from fokkerplanck._core.files import atomic_h5
from fokkerplanck._core.jit import call_compiled
from fokkerplanck._core.rng import seed_key
from fokkerplanck._core.validate import check_memory, finite_array, positive_float
from fokkerplanck.energies.base import lenient
from fokkerplanck.energies.blocks import block_kernels, block_params
from particles import summaries as sm
from particles.integrators import FLOW_SCHEMES, LANGEVIN_SCHEMES, flow_kernel, langevin_kernel
from particles.options import Save, check_seed
from particles.vectorised import flow_stepper, langevin_stepper

__all__ = ["Ensemble", "EnsembleInterrupted", "Chunks", "run_langevin", "run_gradient_flow", "check_particles",
           "summary_arrays", "warn_lost", "warn_overflow", "CHUNK_WORK"]

FORMAT = "particles.ensemble"
VERSION = 1
CHUNK_WORK = 1_000_000  # particle-steps of the first compiled call; then calls of about CHUNK_SECONDS
CHUNK_SECONDS = 0.4     # Ctrl-C acts within that; longer calls would save only the thread barrier (< 1%)
CHUNK_FLOOR = 1e-3      # a chunk of continuous work (physical time) never shrinks below this part of the first


class EnsembleInterrupted(KeyboardInterrupt):
    """Ctrl-C during a particle run.  ``partial`` is the result of the saves completed
    before it: an :class:`Ensemble` (``meta["interrupted"]`` is True; nothing is written to
    a file store, whose temporary file is removed), or the partial result of the other
    long particle loops (:func:`particles.annealed.annealed_langevin`,
    :func:`particles.jumps.simulate`, :func:`particles.mixed.simulate`,
    :func:`particles.annealed.path_flow`), which all run through :class:`Chunks`.
    ``done`` / ``total`` count what was completed of what was asked (saves, or particles
    for ``path_flow``) and ``unit`` names it."""

    def __init__(self, partial, done: int | None = None, total: int | None = None, *, t: float | None = None,
                 unit: str = "saves"):
        if done is None:
            done = int(partial.times.size)
        if total is None:
            total = int(partial.meta["n_saves"])
        if t is None:
            t = float(partial.times[-1]) if getattr(partial, "times", None) is not None and partial.times.size else 0.0
        super().__init__(f"interrupted after {done} of {total} {unit} (t = {t:g}); the completed {unit} "
                         "are in .partial")
        self.partial, self.done, self.total = partial, int(done), int(total)


def chunk_done(chunks: Chunks) -> None:
    """Called after every bounded compiled call of :class:`Chunks` (does nothing).  A test
    replaces it to deliver an interrupt at a known point of a run, whatever the load."""


class Chunks:
    """The bounded compiled calls of every long particle loop: Ctrl-C is seen between them
    (a compiled call cannot be interrupted), so each call is kept short.

    ``first`` units of work in the first call (steps, particles, or physical time for a
    jump process; sized by the caller to about :data:`CHUNK_WORK` particle-steps), then
    calls of about :data:`CHUNK_SECONDS` (at most 4 times the previous one; never less than
    one unit, or for a continuous unit :data:`CHUNK_FLOOR` of the first call, so that a
    call's fixed cost cannot shrink the chunks towards nothing).
    :meth:`run` covers ``[start, stop)`` by consecutive pieces ``advance(a, b)``; ``done``
    counts the units completed over all its calls."""

    def __init__(self, first, *, integer: bool = True):
        self.integer = bool(integer)
        self.size = max(1, int(first)) if self.integer else float(first)
        if not (self.size > 0):
            raise ValueError(f"a chunk must do some work, got {first!r}")
        self.floor = 1 if self.integer else self.size * CHUNK_FLOOR
        self.calls = 0
        self.done = 0

    def run(self, start, stop, advance) -> None:
        a = start
        while a < stop:
            m = min(self.size, stop - a)
            b = stop if m == stop - a else a + m   # the last piece ends exactly at stop
            tc = time.perf_counter()
            call_compiled(advance, a, b)
            el = time.perf_counter() - tc
            if m == self.size and el > 0:  # aim at CHUNK_SECONDS per call (the thread barrier then costs < 1%)
                new = min(4 * m, m * CHUNK_SECONDS / el)
                self.size = max(self.floor, int(new) if self.integer else new)
            self.done += b - a
            self.calls += 1
            a = b
            chunk_done(self)


@dataclass
class Ensemble:
    """Result of a particle run.

    times, steps : (n_saves,) save times and step indices.
    positions : (n_saves, N, d) or None (``store="summaries"`` or a file).
    logdensity : (n_saves, N) tracked ``log rho_t(X_t)`` (deterministic flows) or None.
    histograms : (n_saves, *grid.shape) integer counts per cell (``histogram=grid``).
    summaries : dict of (n_saves, ...) arrays: ``mean, mean_se, cov, e_lap, e_lap_se,
        e_grad2, e_grad2_se, ratio, ratio_se`` and, with a log-density, ``kl, kl_se``.
    alive : (n_saves,) number of particles still in the box and finite.
    escaped, nonfinite : counts at the end.
    acceptance : MALA acceptance rate per particle, or None.
    meta : the run's settings (energy spec, scheme, dt, seed, ...).
    """

    times: np.ndarray
    steps: np.ndarray
    positions: np.ndarray | None
    logdensity: np.ndarray | None
    summaries: dict
    alive: np.ndarray
    escaped: int
    nonfinite: int
    acceptance: np.ndarray | None
    meta: dict = field(default_factory=dict)
    path: str | None = None
    block_stats: list | None = None   # per save, the mergeable statistics behind ``summaries``
    status: np.ndarray | None = None  # per particle: 0 alive, 1 left the box, 2 non-finite
    histograms: np.ndarray | None = None  # (n_saves, *grid.shape) counts when histogram= was given
    overflowed: np.ndarray | None = None  # (n_saves,) live particles left out of the summaries (values overflow)

    def __repr__(self):
        return (f"Ensemble({self.meta.get('scheme')}, N={self.meta.get('n_particles')}, "
                f"{self.times.size} saves to t={self.times[-1]:g}, escaped={self.escaped}, nonfinite={self.nonfinite})")


def _save_stats(X, ok, energy, T, logrho, log_z, block):
    """Block statistics of one save (:mod:`particles.summaries`)."""
    ell = None
    if logrho is not None and log_z is not None:
        with np.errstate(invalid="ignore", over="ignore"):  # frozen non-finite particles are masked out
            u = energy.value(X) if energy.has_kernels else lenient(energy._value, X)
            ell = logrho + np.asarray(u) / T + log_z
    return sm.block_stats(X, ok, energy, T, ell, block=block)


PRECISIONS = {"float64": np.float64, "float32": np.float32}


def check_particles(energy, x0, dt, n_steps, box):
    """The checks shared by the stepping integrators: ``(X, dt, n_steps, lo, hi)`` with ``X``
    a contiguous copy of the particles (N, d) and the box bounds (infinite without a box)."""
    X = finite_array(x0, "x0")
    if X.ndim == 1 and energy.dim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[1] != energy.dim:
        raise ValueError(f"x0 must have shape (N, {energy.dim}), got {X.shape}")
    if X.shape[0] < 1:
        raise ValueError("x0 holds no particles")
    dt = positive_float(dt, "dt")
    if int(n_steps) != n_steps or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    n_steps = int(n_steps)
    if box is None:
        lo, hi = np.full(energy.dim, -np.inf), np.full(energy.dim, np.inf)
    else:
        b = finite_array(box, "box")
        if b.shape in ((2,), (1, 2)):  # one (lo, hi) for every axis
            b = np.broadcast_to(b.reshape(1, 2), (energy.dim, 2))
        if b.shape != (energy.dim, 2) or np.any(b[:, 0] >= b[:, 1]):
            raise ValueError(f"box must be [(lo, hi)] * {energy.dim} with lo < hi, got {b.tolist()}")
        lo, hi = b[:, 0].copy(), b[:, 1].copy()
        outside = np.any((X < lo) | (X > hi), axis=1)
        if outside.any():
            raise ValueError(f"{int(outside.sum())} particles of x0 lie outside the box")
    return np.ascontiguousarray(X.copy()), dt, n_steps, lo, hi


def _stability(energy, X, dt, T=None, *, along: str = "", stacklevel: int = 4):
    """Warn when the explicit step is beyond the stability limit ``dt * max eig(hess U) < 2``
    at the initial particles (a sample of them).  ``energy`` may be a list (the energies of a
    path at a few times: ``along`` says which)."""
    energies = energy if isinstance(energy, (list, tuple)) else [energy]
    idx = np.linspace(0, X.shape[0] - 1, min(X.shape[0], 2000)).astype(int)
    lam = -np.inf
    for U in energies:
        if not getattr(U, "has_hessian", True):
            continue
        with np.errstate(invalid="ignore"):
            try:
                top = U.max_curvature(X[idx]) if hasattr(U, "max_curvature") else \
                    float(np.linalg.eigvalsh(np.asarray(U.hessian(X[idx]))).max())
            except np.linalg.LinAlgError:   # a non-finite Hessian somewhere: no bound from it
                continue
        if np.isfinite(top):
            lam = max(lam, top)
    if dt * lam >= 2.0:
        warnings.warn(f"dt = {dt:g} is beyond the explicit stability limit 2/max eig(hess U) = {2 / lam:.3g} "
                      f"at the initial particles{along}: the scheme will likely blow up", RuntimeWarning,
                      stacklevel=stacklevel)


def _first_call(energy, X):
    """A kernel-less energy (Python callables) is checked on the initial particles before
    the run: a callable that returns the wrong shape or NaN there fails now, naming itself
    (later, a particle where it fails is frozen as non-finite, as in the compiled path)."""
    sample = X[np.linspace(0, X.shape[0] - 1, min(X.shape[0], 1024)).astype(int)]
    energy.value(sample)
    energy.grad(sample)


def _vectorised(flow, energy, X, method, precision, track=False):
    """The stepper of :mod:`particles.vectorised` for an energy without numba kernels."""
    if precision != "float64":
        raise ValueError(f"precision={precision!r} needs the energy's numba kernels; {energy!r} is given by "
                         "Python callables and steps in float64")
    return langevin_stepper(energy, method) if flow == "langevin" else flow_stepper(energy, method, track)


def _histogram(X, ok, grid) -> np.ndarray:
    """Counts of the live particles in the cells of ``grid`` (outside: not counted)."""
    edges = [lo + h * np.arange(c + 1) for (lo, _), h, c in zip(grid.bounds, grid.spacing, grid.cells)]
    H, _ = np.histogramdd(X[ok], bins=edges)
    return H.astype(np.int64)


def _run(energy, X, dt, n_steps, save: Save, advance, *, T, logrho, log_z, meta, progress):
    """The save loop of the stepping integrators: ``advance(step0, k, status)`` moves the
    particles ``k`` steps in bounded compiled calls; at each save of ``save`` the positions,
    summaries and histogram are recorded as it asks."""
    store, summaries, histogram, summary_block = save.store, save.summaries, save.histogram, save.summary_block
    n, d = X.shape
    ns = save.n_saves(n_steps)
    per_save = 8.0 * (n * (d + 1) if store == "memory" else 0) + 8.0 * 32 * (-(-n // int(summary_block)))
    check_memory(ns * (per_save + 64), f"{ns} saves of {n} particles" + (
        " with store='memory' (use store='summaries' or a file path, or save less often)" if store == "memory" else ""))
    save_steps = save.steps(n_steps, dt).tolist()
    keep = store == "memory"
    path = save.path

    positions = np.empty((ns, n, d)) if keep else None
    logs = np.empty((ns, n)) if (logrho is not None and keep) else None
    stats: list[np.ndarray] = []
    hists: list[np.ndarray] = []
    alive = np.empty(ns, dtype=np.int64)
    status = np.zeros(n, dtype=np.int8)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=meta["scheme"], unit="step", leave=False)

    def record(j, f):
        ok = status == 0
        alive[j] = int(ok.sum())
        if keep:
            positions[j] = X
            if logs is not None:
                logs[j] = logrho
        if f is not None:
            f["positions"][j] = X
            if logrho is not None:
                f["logdensity"][j] = logrho
        X64 = X if X.dtype == np.float64 else X.astype(np.float64)  # summaries in float64 always
        if summaries:
            stats.append(_save_stats(X64, ok, energy, T, logrho, log_z, summary_block))
        if histogram is not None:
            hists.append(_histogram(X64, ok, histogram))

    chunks = Chunks(CHUNK_WORK // max(n, 1))  # steps per compiled call, adapted to CHUNK_SECONDS
    done = [0]  # saves recorded

    def piece(a, b):
        advance(a, b - a, status)
        if bar is not None:
            bar.update(b - a)

    def loop(f):
        for j in range(ns):
            chunks.run(save_steps[j - 1] if j else 0, save_steps[j], piece)  # Ctrl-C is seen between calls
            record(j, f)
            done[0] = j + 1

    def result(m, file_path, summ_arrays=None):
        if summ_arrays is None:
            summ_arrays = summary_arrays(stats[:m], d, T)
        escaped, nonfinite = warn_lost(status)
        st = np.array(save_steps[:m])
        over = None
        if summaries:
            over = alive[:m] - np.array([int(np.sum(S[:, 0])) for S in stats[:m]], dtype=np.int64)
            warn_overflow(over, st * dt, n)
            meta["overflowed"] = int(over.max()) if over.size else 0
        return Ensemble(st * dt, st, None if positions is None else positions[:m],
                        None if logs is None else logs[:m], summ_arrays, alive[:m], escaped, nonfinite, None, meta,
                        file_path, stats[:m] if summaries else None, status,
                        np.array(hists[:m]) if histogram is not None else None, over)

    meta["n_saves"] = ns
    t0 = time.perf_counter()
    summ_arrays = None  # computed once: written to the file store and returned
    try:
        if path is None:
            loop(None)
        else:
            with atomic_h5(path) as f:
                f.attrs.update({"format": FORMAT, "version": VERSION, "meta": json.dumps(meta, default=str)})
                f.create_dataset("positions", shape=(ns, n, d), dtype="f8", chunks=(1, min(n, 1 << 16), d))
                if logrho is not None:
                    f.create_dataset("logdensity", shape=(ns, n), dtype="f8", chunks=(1, min(n, 1 << 16)))
                f["times"] = np.array(save_steps) * dt
                f["steps"] = np.array(save_steps)
                loop(f)
                f["alive"] = alive
                summ_arrays = summary_arrays(stats, d, T)
                g = f.create_group("summaries")
                for key, v in summ_arrays.items():
                    g[key] = v
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        meta.update(interrupted=True, wall_time=time.perf_counter() - t0)
        raise EnsembleInterrupted(result(done[0], None)) from None
    if bar is not None:
        bar.close()
    meta["wall_time"] = time.perf_counter() - t0
    return result(ns, path, summ_arrays)


def warn_lost(status) -> tuple[int, int]:
    """Counts of particles that left the box / became non-finite, each warned about
    (at the caller of ``langevin`` / ``gradient_flow``)."""
    n = status.size
    escaped, nonfinite = int(np.sum(status == 1)), int(np.sum(status == 2))
    if nonfinite:
        warnings.warn(f"{nonfinite} of {n} particles became non-finite (frozen and excluded from the summaries): "
                      "the step is likely too large", RuntimeWarning, stacklevel=4)
    if escaped:
        warnings.warn(f"{escaped} of {n} particles left the box (frozen and excluded from the summaries)",
                      RuntimeWarning, stacklevel=4)
    return escaped, nonfinite


def warn_overflow(overflowed, times, n: int) -> None:
    """Warn when live particles were left out of the summaries because their values overflow
    them (:data:`particles.summaries.X_LIMIT`, :data:`~particles.summaries.V_LIMIT`):
    ``overflowed`` (n_saves,) counts per save."""
    over = np.asarray(overflowed)
    if over.size and over.max() > 0:
        j = int(np.argmax(over))
        warnings.warn(f"{int(over[j])} of {n} particles (at t = {float(times[j]):g}; {int(np.sum(over > 0))} saves "
                      f"affected) are finite but too large for the summaries (|x| > {sm.X_LIMIT:g}, or lap U or "
                      f"|grad U|^2 beyond {sm.V_LIMIT:g} or not finite): they are left out of the summaries, which "
                      "are NaN when no particle remains (Ensemble.overflowed counts them per save); the run has "
                      "likely blown up", RuntimeWarning, stacklevel=4)


def summary_arrays(stats, d, T) -> dict:
    summ = [sm.summaries(S, d, T) for S in stats]
    return {key: np.array([s[key] for s in summ]) for key in (summ[0] if summ else ())}


def check_langevin_options(method, precision) -> None:
    if method not in LANGEVIN_SCHEMES:
        raise ValueError(f"method must be one of {sorted(LANGEVIN_SCHEMES)}, got {method!r}")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")


def check_flow_options(method) -> None:
    if method not in FLOW_SCHEMES:
        raise ValueError(f"method must be one of {sorted(FLOW_SCHEMES)}, got {method!r}")


def run_langevin(energy, x0, dt: float, n_steps: int, *, save: Save, method: str = "euler-maruyama",
                 temperature: float = 1.0, seed: int, box=None, log_partition=None, index_offset: int = 0,
                 progress: bool = False, precision: str = "float64") -> Ensemble:
    """Langevin in this process (a whole ensemble, or one shard of it: ``index_offset`` is the
    global index of its first particle).  The arguments as :func:`particles.langevin`'s, checked
    there; ``save`` a :class:`particles.Save`."""
    check_langevin_options(method, precision)
    if hasattr(x0, "sample_range"):
        x0 = x0.sample_range(0, x0.shape[0])
    X, dt, n_steps, lo, hi = check_particles(energy, x0, dt, n_steps, box)
    T = positive_float(temperature, "temperature")
    seed = check_seed(seed)
    k0, k1 = seed_key(seed)
    if not energy.has_kernels:
        _first_call(energy, X)
    if method != "mala":
        _stability(energy, X, dt)
    if energy.has_kernels:
        kernel = langevin_kernel(block_kernels(energy), method)
    else:
        kernel = _vectorised("langevin", energy, X, method, precision)
    if int(index_offset) != index_offset or index_offset < 0:
        raise ValueError(f"index_offset must be a non-negative integer, got {index_offset!r}")
    offset = int(index_offset)
    accepted = np.zeros(X.shape[0], dtype=np.int64)
    ft = PRECISIONS[precision]
    p = block_params(energy, ft)[None, :] if energy.has_kernels else energy.params   # one row: static
    X, lo, hi = X.astype(ft), lo.astype(ft), hi.astype(ft)

    def advance(step0, k, status):
        kernel(X, step0, k, dt, T, p, k0, k1, lo, hi, status, accepted, offset)

    meta = {"flow": "langevin", "scheme": method, "dt": dt, "n_steps": n_steps, "save_every": _every(save, n_steps),
            "temperature": T, "seed": int(seed), "n_particles": X.shape[0], "index_offset": offset,
            "energy": E.spec_of(energy), "precision": precision}
    if save.times is not None:
        meta["save_times"] = list(save.times)
    res = _run(energy, X, dt, n_steps, save, advance, T=T, logrho=None, log_z=None, meta=meta, progress=progress)
    if method == "mala":
        res.acceptance = accepted / max(n_steps, 1)
        meta["acceptance_mean"] = float(res.acceptance.mean())
    return res


def run_gradient_flow(energy, x0, dt: float, n_steps: int, *, save: Save, method: str = "euler",
                      track_logdensity: bool = False, logrho0=None, temperature: float = 1.0, log_partition=None,
                      box=None, progress: bool = False) -> Ensemble:
    """The deterministic flow in this process (a whole ensemble or one shard).  The arguments
    as :func:`particles.gradient_flow`'s; ``logrho0`` an array or an object with ``logpdf``."""
    check_flow_options(method)
    if hasattr(x0, "sample_range"):
        x0 = x0.sample_range(0, x0.shape[0])
    if hasattr(logrho0, "logpdf"):
        logrho0 = logrho0.logpdf(x0)
    X, dt, n_steps, lo, hi = check_particles(energy, x0, dt, n_steps, box)
    T = positive_float(temperature, "temperature")
    if track_logdensity and method == "euler" and not getattr(energy, "has_hessian", True):
        raise ValueError("Euler log-density tracking needs the Hessian kernel, which this energy lacks")
    if not energy.has_kernels:
        _first_call(energy, X)
    _stability(energy, X, dt)
    if track_logdensity:
        LOG = np.zeros(X.shape[0]) if logrho0 is None else finite_array(logrho0, "logrho0", shape=(X.shape[0],)).copy()
    else:
        LOG = np.zeros(X.shape[0])
    log_z = None
    if track_logdensity and logrho0 is not None:
        try:
            log_z = energy.log_partition(T) if log_partition is None else float(log_partition)
        except NotImplementedError:
            log_z = None
    if energy.has_kernels:
        kernel = flow_kernel(energy.kernels, method, bool(track_logdensity))
    else:
        kernel = _vectorised("gradient", energy, X, method, "float64", bool(track_logdensity))
    p = energy.params

    def advance(step0, k, status):
        kernel(X, LOG, k, dt, p, lo, hi, status)

    meta = {"flow": "gradient", "scheme": method, "dt": dt, "n_steps": n_steps, "save_every": _every(save, n_steps),
            "temperature": T, "n_particles": X.shape[0], "track_logdensity": bool(track_logdensity),
            "energy": E.spec_of(energy)}
    if save.times is not None:
        meta["save_times"] = list(save.times)
    return _run(energy, X, dt, n_steps, save, advance, T=T, logrho=LOG if track_logdensity else None, log_z=log_z,
                meta=meta, progress=progress)


def _every(save: Save, n_steps: int):
    """``meta["save_every"]`` as it always was: the steps between saves (None for save times)."""
    if save.times is not None:
        return None
    return max(n_steps if save.every is None else save.every, 1)
