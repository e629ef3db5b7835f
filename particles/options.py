"""What a particle run saves (:class:`Save`) and where it runs (:class:`Shards`).

Every integrator of :mod:`particles` takes ``save=Save(...)``; the ones that can run on
a Dask cluster (:func:`particles.langevin`, :func:`particles.gradient_flow`) also take
``shards=Shards(...)``.  The fields mean the same everywhere::

    particles.langevin(U, x0, 1e-3, 5000, seed=2, save=Save(every=100, store="summaries"),
                       shards=Shards(client, size=4_000_000, threads=1))

The older keywords (``save_every=``, ``store=``, ``summaries=``, ``histogram=``,
``summary_block=``; ``client=``, ``shard_size=``, ``shard_threads=``) are translated into
these objects by :func:`save_from_keywords` / :func:`shards_from_keywords`; giving a keyword
together with ``save=`` / ``shards=`` is an error (one way of saying a thing per call).

Both are frozen and validated on construction: a bad field raises ``ValueError`` naming it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fokkerplanck._core.validate import check_times, positive_int
from fokkerplanck.grid import Grid

from particles.summaries import BLOCK

__all__ = ["Save", "Shards", "save_from_keywords", "shards_from_keywords", "check_seed", "derived_seed", "STORES",
           "H5_SUFFIXES"]

STORES = ("memory", "summaries")
H5_SUFFIXES = (".h5", ".hdf5")
STEP_RTOL = 1e-9   # a save time counts as on the step grid within this (relative to max(1, t))

_FIELDS = {"every": "Save.every", "times": "Save.times", "store": "Save.store", "summaries": "Save.summaries",
           "histogram": "Save.histogram", "summary_block": "Save.summary_block"}
_KEYWORDS = {"every": "save_every", "times": "times", "store": "store", "summaries": "summaries",
             "histogram": "histogram", "summary_block": "summary_block"}


def derived_seed(seed, *keys) -> int:
    """A seed of its own for each run ``keys`` (node, phase, data point, ...) of one study
    seeded by ``seed``: no two runs share a Philox stream."""
    return int(np.random.SeedSequence([int(seed) & ((1 << 63) - 1), *keys]).generate_state(1, np.uint64)[0]
               % (1 << 63))


def check_seed(seed, name: str = "seed") -> int:
    """A seed of the counter-based noise: a non-negative integer of any size (``2.0`` is
    accepted; ``1.5``, ``True``, ``"3"`` and negative numbers are refused, never truncated)."""
    if isinstance(seed, (bool, np.bool_)):
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")
    if isinstance(seed, (float, np.floating)) and np.isfinite(seed) and float(seed) == int(seed):
        seed = int(seed)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_save(every, times, store, summaries, histogram, summary_block, names):
    """The one validation of the save fields; ``names`` says how the caller spelt them (the
    fields of :class:`Save`, or the keywords of the integrators).  Returns the normalised
    ``(every, times, store)``."""
    if every is not None and times is not None:
        raise ValueError(f"{names['every']} and {names['times']} are two schedules: give one")
    if every is not None:
        every = positive_int(every, names["every"])
    if times is not None:
        times = tuple(float(t) for t in check_times(times, names["times"]))
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str):
        raise ValueError(f"{names['store']} must be 'memory', 'summaries' or an HDF5 file path (.h5/.hdf5), "
                         f"got {store!r}")
    if store not in STORES and not store.lower().endswith(H5_SUFFIXES):
        raise ValueError(f"{names['store']} must be 'memory', 'summaries' or an HDF5 file path ending in "
                         f"{' or '.join(H5_SUFFIXES)}, got {store!r}")
    if not isinstance(summaries, (bool, np.bool_)):
        raise ValueError(f"{names['summaries']} must be True or False, got {summaries!r}")
    if store == "summaries" and not summaries:
        raise ValueError(f"{names['store']}='summaries' with {names['summaries']}=False would keep nothing")
    if histogram is not None and not isinstance(histogram, Grid):
        raise ValueError(f"{names['histogram']} must be a fokkerplanck.Grid (the cells to count particles in) "
                         f"or None, got {type(histogram).__name__}")
    summary_block = positive_int(summary_block, names["summary_block"])
    return every, times, store, bool(summaries), summary_block


@dataclass(frozen=True)
class Save:
    """What a particle run saves, and when.

    every : steps between saves (saves at 0, every, 2 every, ..., and the last step).
    times : physical save times instead (each a multiple of ``dt`` for the stepping
        integrators, the last one the end of the run; the save times of a jump process).
        Neither: the start and the end.
    store : ``"memory"`` (every saved snapshot), ``"summaries"`` (only the per-save
        summaries) or the path of an HDF5 file (``.h5``/``.hdf5``; snapshots streamed to it).
    summaries : compute the per-save summaries (moments, R_t, KL with error bars).
    histogram : a :class:`fokkerplanck.Grid`: per save, the counts of live particles in its cells.
    summary_block : particles per block of the mergeable summaries (shards are multiples of it).
    """

    every: int | None = None
    times: tuple | None = None
    store: str = "memory"
    summaries: bool = True
    histogram: Grid | None = None
    summary_block: int = BLOCK

    def __post_init__(self):
        every, times, store, summaries, block = _check_save(self.every, self.times, self.store, self.summaries,
                                                            self.histogram, self.summary_block, _FIELDS)
        for name, value in (("every", every), ("times", times), ("store", store), ("summaries", summaries),
                            ("summary_block", block)):
            object.__setattr__(self, name, value)

    @property
    def path(self) -> str | None:
        """The HDF5 path of a file store, else None."""
        return None if self.store in STORES else self.store

    def n_saves(self, n_steps: int) -> int:
        """Number of saves of a run of ``n_steps`` steps (arithmetic only: checked against the
        memory before any schedule is built)."""
        if self.times is not None:
            return len(self.times)
        every = n_steps if self.every is None else self.every
        return -(-n_steps // every) + 1 if n_steps > 0 else 1

    def steps(self, n_steps: int, dt: float) -> np.ndarray:
        """The step indices of the saves of a run of ``n_steps`` steps of ``dt`` (increasing).
        ``every``: 0, every, ..., n_steps.  ``times``: each time on the step grid, distinct,
        the last one ``n_steps * dt``."""
        if self.times is None:
            every = max(n_steps if self.every is None else self.every, 1)
            return np.array(sorted(set(range(0, n_steps, every)) | {n_steps}), dtype=np.int64)
        t = np.array(self.times)
        k = np.rint(t / dt).astype(np.int64)
        off = np.abs(k * dt - t) > STEP_RTOL * np.maximum(1.0, t)
        if off.any():
            i = int(np.argmax(off))
            raise ValueError(f"Save.times[{i}] = {t[i]:g} is not a multiple of dt = {dt:g}")
        if np.any(np.diff(k) == 0):
            i = int(np.argmax(np.diff(k) == 0))
            raise ValueError(f"Save.times[{i}] and [{i + 1}] fall on the same step of dt = {dt:g}")
        if k[-1] != n_steps:
            raise ValueError(f"the last of Save.times, {t[-1]:g}, must be the end of the run n_steps * dt = "
                             f"{n_steps * dt:g} (step {k[-1]} of {n_steps})")
        return k

    def positions_only(self, where: str) -> None:
        """For the integrators that keep snapshots in memory and nothing else (no summaries,
        file or histogram): refuse the fields they would otherwise ignore."""
        if self.store != "memory":
            raise ValueError(f"{where} keeps its saves in memory: Save.store={self.store!r} is not supported")
        if self.histogram is not None:
            raise ValueError(f"{where} records no histogram: Save.histogram is not supported")


@dataclass(frozen=True)
class Shards:
    """Run an ensemble in shards on a Dask cluster, bit-identical to the in-process run.

    client : a ``dask.distributed.Client``.
    size : particles per shard (rounded up to a multiple of ``Save.summary_block``; default
        about four shards per worker).
    threads : numba threads per shard task (default numba's: all cores of the worker's machine).
    """

    client: object
    size: int | None = None
    threads: int | None = None

    def __post_init__(self):
        if self.client is None or not (hasattr(self.client, "submit") and hasattr(self.client, "gather")):
            raise ValueError(f"Shards.client must be a dask.distributed.Client, got {self.client!r}")
        if self.size is not None:
            object.__setattr__(self, "size", positive_int(self.size, "Shards.size"))
        if self.threads is not None:
            object.__setattr__(self, "threads", positive_int(self.threads, "Shards.threads"))


def _object_or_keywords(obj, cls, name: str, given: dict, where: str):
    """``obj`` (checked to be a ``cls``) when given, refusing keywords given beside it."""
    if not isinstance(obj, cls):
        raise ValueError(f"{where}: {name} must be a particles.{cls.__name__}, got {type(obj).__name__}")
    if given:
        raise ValueError(f"{where}: {', '.join(f'{k}=' for k in given)} given together with {name}=; "
                         f"put it in the {cls.__name__}")
    return obj


def save_from_keywords(save, where: str, *, save_every=None, store=None, summaries=None, histogram=None,
                       summary_block=None) -> Save:
    """``save=`` or the older keywords, as one :class:`Save` (``None`` for a keyword: not given).
    A keyword given together with ``save=`` is an error naming it."""
    given = {k: v for k, v in (("save_every", save_every), ("store", store), ("summaries", summaries),
                               ("histogram", histogram), ("summary_block", summary_block)) if v is not None}
    if save is not None:
        return _object_or_keywords(save, Save, "save", given, where)
    fields = dict(every=save_every, times=None, store="memory" if store is None else store,
                  summaries=True if summaries is None else summaries, histogram=histogram,
                  summary_block=BLOCK if summary_block is None else summary_block)
    _check_save(**fields, names=_KEYWORDS)   # errors name the keyword the caller used
    return Save(**fields)


def shards_from_keywords(shards, where: str, *, client=None, shard_size=None, shard_threads=None) -> Shards | None:
    """``shards=`` or ``client=``/``shard_size=``/``shard_threads=``, as a :class:`Shards` or
    None (in process).  A keyword given together with ``shards=`` is an error naming it, as is
    ``shard_size=``/``shard_threads=`` without a client."""
    given = {k: v for k, v in (("client", client), ("shard_size", shard_size), ("shard_threads", shard_threads))
             if v is not None}
    if shards is not None:
        return _object_or_keywords(shards, Shards, "shards", given, where)
    if client is None:
        if given:
            raise ValueError(f"{where}: {', '.join(f'{k}=' for k in given)} without client= (no cluster to shard on)")
        return None
    if shard_size is not None:
        positive_int(shard_size, "shard_size")
    if shard_threads is not None:
        positive_int(shard_threads, "shard_threads")
    return Shards(client, shard_size, shard_threads)
