"""Ensembles sharded over a Dask cluster, bit-identical to one process.

``particles.langevin(..., shards=Shards(client))`` and ``particles.gradient_flow(...,
shards=Shards(client))`` (or the older ``client=client``) land here.  The ensemble is cut into shards of consecutive
global particle indices (a multiple of :data:`particles.summaries.BLOCK`);
each shard is one Dask task that rebuilds the energy from its spec and runs
the in-process runner of :mod:`particles.ensemble` with ``index_offset`` = the
shard's first index.
Counter-based noise (Philox keyed by seed, global index, step) makes every
particle's path the same bits wherever it runs, and the per-save summaries are
merged from block statistics in block order (:mod:`particles.summaries`), so
positions *and* summaries equal the single-process run's bit for bit.

Fault tolerance is Dask's: a task whose worker dies is rerun elsewhere; being
a pure function of (seed, indices, x0 shard), the rerun computes the same bits.

Initial positions: an array (scattered to the workers shard by shard) or an
initial law with ``sample_range(start, stop)`` such as :class:`GaussianInit`,
drawn on the workers (nothing of size N crosses the network).

Per-cell counts (``histogram=grid``) are integers and add exactly;
:func:`particles.estimators.kl_binned` turns them into a binned KL.

What crosses the network per shard: its x0 (unless drawn on the worker), its
block statistics per save (``ceil(shard / BLOCK) * (1 + q + q^2 + 2 d^2)``
doubles, ``q = d + 3``), its final status, and its positions only when
``store="memory"``.  Estimators that need all points (k-NN KL) run on the
client after gathering ``store="memory"`` results; for ensembles too large for
the client's memory, keep ``store="summaries"`` with a histogram, or gather and
pass ``max_points=`` to :func:`particles.estimators.kl_knn`, which then runs on
a uniform subsample and says so in its method label.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numba
import numpy as np

import fokkerplanck.energies as E
from fokkerplanck._core.rng import STREAM_INIT, normals
from fokkerplanck.densities import Gaussian
from particles import summaries as sm
from particles.ensemble import (
    Ensemble,
    check_particles,
    run_gradient_flow,
    run_langevin,
    summary_arrays,
    warn_lost,
    warn_overflow,
)
from particles.options import Save, Shards

__all__ = ["GaussianInit", "shard_ranges", "run_sharded"]


@dataclass(frozen=True)
class GaussianInit:
    """``N(mean, cov)`` initial positions drawn per global particle index from the
    Philox stream ``STREAM_INIT`` (step 0): any shard draws the same bits as the
    whole.  ``sample_range(start, stop)`` returns particles ``start .. stop - 1``."""

    mean: tuple
    cov: tuple
    seed: int
    n: int

    def __post_init__(self):
        m = np.atleast_1d(np.asarray(self.mean, dtype=float))
        c = np.asarray(self.cov, dtype=float)
        c = np.eye(m.size) * c if c.ndim == 0 else c
        np.linalg.cholesky(c)  # raises on a non-SPD cov
        object.__setattr__(self, "mean", tuple(m.tolist()))
        object.__setattr__(self, "cov", tuple(map(tuple, c.tolist())))

    @property
    def shape(self):
        return (self.n, len(self.mean))

    def sample_range(self, start: int, stop: int) -> np.ndarray:
        z = normals(self.seed, stop - start, 0, len(self.mean), STREAM_INIT, start=start)
        return np.asarray(self.mean) + z @ np.linalg.cholesky(np.asarray(self.cov)).T

    def logpdf(self, x) -> np.ndarray:
        return Gaussian(self.mean, self.cov).logpdf(x)


def shard_ranges(n: int, shard_size: int | None, n_workers: int = 1, block: int = sm.BLOCK) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)``; sizes a multiple of ``block``
    (rounded up), default about four shards per worker."""
    if shard_size is None:
        shard_size = math.ceil(n / max(4 * n_workers, 1))
    if int(shard_size) != shard_size or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if int(block) != block or block < 1:
        raise ValueError(f"summary_block must be a positive integer, got {block!r}")
    size = int(block) * max(1, math.ceil(int(shard_size) / int(block)))
    return [(a, min(n, a + size)) for a in range(0, n, size)]


def set_threads(threads: int | None) -> None:
    """Numba threads of the calling thread (a Dask task's): ``None`` keeps numba's default.
    Set per task at run time, not through NUMBA_NUM_THREADS, which numba fixes at import."""
    if threads is not None:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


def _shard_task(kind, spec, x0, start, stop, logrho0, save, kwargs, threads=None, allow_modules=()):
    """One shard, in a worker: rebuild the energy, run in-process, return the mergeable parts.
    ``allow_modules``: the kernel modules of the client's own energy, listed by the client
    (never read off the spec that travels with the task)."""
    set_threads(threads)
    energy = E.from_spec(spec, allow_modules=allow_modules)
    X = x0.sample_range(start, stop) if hasattr(x0, "sample_range") else x0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if kind == "langevin":
            ens = run_langevin(energy, X, index_offset=start, save=save, **kwargs)
        else:
            lr = logrho0.logpdf(X) if hasattr(logrho0, "logpdf") else logrho0
            ens = run_gradient_flow(energy, X, logrho0=lr, save=save, **kwargs)
    return {"positions": ens.positions, "logdensity": ens.logdensity, "stats": ens.block_stats,
            "alive": ens.alive, "status": ens.status, "acceptance": ens.acceptance, "times": ens.times,
            "steps": ens.steps, "meta": ens.meta, "histograms": ens.histograms,
            "warnings": [str(w.message) for w in caught]}


def run_sharded(kind: str, energy, x0, *, shards: Shards, save: Save, logrho0=None, progress=False,
                **kwargs) -> Ensemble:
    """Run ``kind`` (``"langevin"`` or ``"gradient"``) in shards on ``shards.client``; returns
    the :class:`Ensemble` of the in-process run, bit for bit.  ``shards.threads``: numba threads
    per shard task (default numba's: all cores of the worker's machine; set it to cores /
    tasks-per-machine when several workers share a machine).  ``kwargs``: the integrator's own."""
    if save.store not in ("memory", "summaries"):
        raise ValueError("with shards (client=), Save.store must be 'memory' or 'summaries' (a file path would "
                         "need every position on the client; gather store='memory' and save it, or keep summaries)")
    if not save.summaries:
        raise ValueError("with shards (client=), summaries are the merged result: Save.summaries=False is not "
                         "supported")
    if kind == "langevin" and kwargs.get("index_offset", 0):
        raise ValueError("index_offset is set by the shards; run without shards to run one shard yourself")
    kwargs.pop("index_offset", None)
    if not hasattr(x0, "sample_range"):  # bad input fails here, not in a worker
        x0 = check_particles(energy, x0, kwargs["dt"], kwargs["n_steps"], kwargs.get("box"))[0]
    save.steps(int(kwargs["n_steps"]), float(kwargs["dt"]))  # a bad schedule fails here too
    n = x0.shape[0]
    client = shards.client
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    ranges = shard_ranges(n, shards.size, n_workers, save.summary_block)
    if not energy.has_kernels:
        raise ValueError(f"a Dask run ships the energy to its workers as a spec (data, never code); {energy!r} is "
                         "given by Python callables: run it in process (no shards)")
    spec = energy.to_spec()
    allow = tuple(E.custom_modules(energy))   # from the energy object in this process, not from data
    t0 = time.perf_counter()
    futures = []
    # Array shards travel inside their task, not scattered: a task whose worker dies is rerun
    # from its definition, whereas scattered data dies with the worker that held it.
    for a, b in ranges:
        xs = x0 if hasattr(x0, "sample_range") else np.ascontiguousarray(x0[a:b])
        lr = logrho0 if (logrho0 is None or hasattr(logrho0, "logpdf")) else np.ascontiguousarray(logrho0[a:b])
        futures.append(client.submit(_shard_task, kind, spec, xs, a, b, lr, save, kwargs, shards.threads, allow,
                                     pure=False))
    if progress:
        from dask.distributed import progress as dask_progress

        dask_progress(futures)
    parts = client.gather(futures)
    first = parts[0]
    stats = None
    if first["stats"] is not None:
        stats = [np.concatenate([p["stats"][j] for p in parts], axis=0) for j in range(len(first["times"]))]
    d = energy.dim
    T = first["meta"]["temperature"]
    summ = summary_arrays(stats, d, T) if stats is not None else {}
    status = np.concatenate([p["status"] for p in parts])
    positions = np.concatenate([p["positions"] for p in parts], axis=1) if first["positions"] is not None else None
    logs = np.concatenate([p["logdensity"] for p in parts], axis=1) if first["logdensity"] is not None else None
    acc = np.concatenate([p["acceptance"] for p in parts]) if first["acceptance"] is not None else None
    meta = dict(first["meta"])
    meta.update(n_particles=n, shards=len(ranges), shard_size=ranges[0][1] - ranges[0][0],
                wall_time=time.perf_counter() - t0, workers=n_workers)
    meta.pop("index_offset", None)
    if acc is not None:
        meta["acceptance_mean"] = float(acc.mean())
    for msg in dict.fromkeys(m for p in parts for m in p["warnings"]):
        if "particles" not in msg:  # counts are re-reported below for the whole ensemble
            warnings.warn(f"(from a shard) {msg}", RuntimeWarning, stacklevel=3)
    escaped, nonfinite = warn_lost(status)
    alive = np.sum([p["alive"] for p in parts], axis=0)
    hist = np.sum([p["histograms"] for p in parts], axis=0) if first["histograms"] is not None else None
    over = None
    if stats is not None:  # live particles the summaries left out (values overflow), as in process
        over = alive - np.array([int(np.sum(S[:, 0])) for S in stats], dtype=np.int64)
        warn_overflow(over, np.asarray(first["times"]), n)
        meta["overflowed"] = int(over.max()) if over.size else 0
    return Ensemble(first["times"], first["steps"], positions, logs, summ, alive, escaped, nonfinite, acc, meta, None,
                    stats, status, hist, over)
