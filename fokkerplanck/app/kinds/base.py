"""The one object an experiment kind of ``fpk run`` is: :class:`Kind`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping


def _nothing(spec) -> None:
    return None


@dataclass(frozen=True)
class Kind:
    """Everything ``fpk`` knows of one experiment kind (``kind = NAME`` in a config).

    ``required``: the tables a config of this kind must have; ``top_keys``: every
    top-level key it may have; ``tables``: the keys of the tables this kind owns
    (``None``: checked by the kind itself), over the shared ones of
    :data:`fokkerplanck.app.config.TABLE_KEYS`; ``check(spec)``: the kind's own
    config checks, run once before anything runs, returning the values it parsed
    (they reach ``run`` as ``spec.extra``); ``run(spec, f, *, progress, log)``:
    the experiment, written into the open HDF5 file ``f``; ``plot(path, r, steps)``:
    its figure from the :func:`~fokkerplanck.app.runner.read_run` summary ``r``;
    ``info(r)``: its lines of ``fpk info``; ``attrs``: the JSON root attributes
    it writes, with their types, and ``scalars`` its scalar root attributes, for
    :func:`~fokkerplanck.app.runner.read_run`."""

    name: str
    required: tuple[str, ...]
    top_keys: frozenset[str]
    run: Callable
    plot: Callable
    info: Callable
    check: Callable = _nothing
    tables: Mapping[str, frozenset | None] = field(default_factory=dict)
    attrs: Mapping[str, type] = field(default_factory=dict)
    scalars: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Kind({self.name!r})"
