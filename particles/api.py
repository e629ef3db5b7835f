"""The public entry points of the continuous integrators: :func:`langevin` and
:func:`gradient_flow` run in this process (:mod:`particles.ensemble`) or in shards on a
Dask cluster (:mod:`particles.distributed`), with the same result bit for bit.

Layers: :mod:`particles.options` (Save, Shards) < :mod:`particles.ensemble` (the
in-process runner and the result) < :mod:`particles.distributed` (shards of it) < this
module (which of the two).
"""
from __future__ import annotations

import numpy as np

from particles.distributed import run_sharded
from particles.ensemble import Ensemble, check_flow_options, check_langevin_options, run_gradient_flow, run_langevin
from particles.options import Save, Shards, check_seed, save_from_keywords, shards_from_keywords

__all__ = ["langevin", "gradient_flow"]


def fresh_seed() -> int:
    """A seed from fresh entropy, drawn once per run (so that every shard shares it)."""
    return int(np.random.SeedSequence().entropy % (1 << 63))


def langevin(energy, x0, dt: float, n_steps: int, *, method: str = "euler-maruyama", temperature: float = 1.0,
             seed=None, box=None, log_partition=None, index_offset: int = 0, progress: bool = False,
             precision: str = "float64", save: Save | None = None, shards: Shards | None = None,
             save_every: int | None = None, store=None, summaries: bool | None = None, histogram=None,
             summary_block: int | None = None, client=None, shard_size: int | None = None,
             shard_threads: int | None = None) -> Ensemble:
    """Overdamped Langevin ``dX = -grad U(X) dt + sqrt(2T) dW`` for the particles ``x0`` (N, d).

    method : ``"euler-maruyama"`` (ULA), ``"leimkuhler-matthews"``, ``"mala"``.
    seed : any integer; the same seed gives the same bits whatever the thread
        count, chunking or sharding (counter-based Philox keyed by particle and step).
    box : optional ``[(lo, hi)] * d``: particles leaving it are frozen and counted.
    index_offset : global index of the first particle (a shard of a larger
        ensemble computes exactly the bits of those particles in the whole).
    precision : ``"float64"`` or ``"float32"``: the arithmetic and the noise of the
        integrator (float32 puts twice as many particles in a SIMD instruction; its noise
        uses 24-bit uniforms, so its bits differ from float64's).  Positions are returned
        and stored as float64 arrays (holding float32 values), summaries are computed in
        float64 either way.
    save : a :class:`particles.Save`: when to save (``every`` steps or at ``times``; default
        the start and the end), where (``store``: ``"memory"``, ``"summaries"`` or an HDF5
        path), and what besides (``summaries``, ``histogram``, ``summary_block``).
    shards : a :class:`particles.Shards`: run in shards on a Dask cluster, bit-identical to
        the in-process run (:mod:`particles.distributed`).  ``x0`` may then also be an
        initial law drawn on the workers (:class:`particles.distributed.GaussianInit`).
    save_every, store, summaries, histogram, summary_block : the fields of ``save`` as
        keywords (``save_every`` is ``Save.every``); not together with ``save=``.
    client, shard_size, shard_threads : the fields of ``shards`` as keywords; not together
        with ``shards=``.
    """
    save = save_from_keywords(save, "langevin", save_every=save_every, store=store, summaries=summaries,
                              histogram=histogram, summary_block=summary_block)
    shards = shards_from_keywords(shards, "langevin", client=client, shard_size=shard_size,
                                  shard_threads=shard_threads)
    check_langevin_options(method, precision)
    seed = fresh_seed() if seed is None else check_seed(seed)
    kw = dict(dt=dt, n_steps=n_steps, method=method, temperature=temperature, seed=seed, box=box,
              log_partition=log_partition, index_offset=index_offset, precision=precision)
    if shards is not None:
        return run_sharded("langevin", energy, x0, shards=shards, save=save, progress=progress, **kw)
    return run_langevin(energy, x0, save=save, progress=progress, **kw)


def gradient_flow(energy, x0, dt: float, n_steps: int, *, method: str = "euler", track_logdensity: bool = False,
                  logrho0=None, temperature: float = 1.0, log_partition=None, box=None, progress: bool = False,
                  save: Save | None = None, shards: Shards | None = None, save_every: int | None = None,
                  store=None, summaries: bool | None = None, histogram=None, summary_block: int | None = None,
                  client=None, shard_size: int | None = None, shard_threads: int | None = None) -> Ensemble:
    """Deterministic flow ``dX/dt = -grad U(X)`` for the particles ``x0`` (N, d).

    method : ``"euler"``, ``"heun"``, ``"rk4"``.
    track_logdensity : carry ``log rho_t(X_t)``; ``logrho0`` (N,) gives ``log rho_0(x0)``
        (default 0: then the tracked values are the log-density increments).
        Euler uses the exact change ``-log|det(I - dt hess U)|`` of its map,
        Heun and RK4 integrate ``lap U`` by their own rule.
    temperature, log_partition : the reference ``rho* ~ exp(-U/T)`` of the tracked KL
        summary (``log Z`` from the energy's closed form when not given; without
        either, no KL summary).
    save, shards : as for :func:`langevin`; with shards, ``logrho0`` may be an array or an
        object with ``logpdf`` (evaluated on each shard's particles).
    save_every, store, summaries, histogram, summary_block, client, shard_size, shard_threads :
        the fields of ``save`` / ``shards`` as keywords, as for :func:`langevin`.
    """
    save = save_from_keywords(save, "gradient_flow", save_every=save_every, store=store, summaries=summaries,
                              histogram=histogram, summary_block=summary_block)
    shards = shards_from_keywords(shards, "gradient_flow", client=client, shard_size=shard_size,
                                  shard_threads=shard_threads)
    check_flow_options(method)
    kw = dict(dt=dt, n_steps=n_steps, method=method, track_logdensity=track_logdensity, temperature=temperature,
              log_partition=log_partition, box=box)
    if shards is not None:
        return run_sharded("gradient", energy, x0, shards=shards, save=save, logrho0=logrho0, progress=progress,
                           **kw)
    return run_gradient_flow(energy, x0, save=save, logrho0=logrho0, progress=progress, **kw)
