"""The experiment kinds of ``fpk run``, one module each, and their registry.

Each module defines one :class:`~fokkerplanck.app.kinds.base.Kind`, ``KIND``, that owns
its required tables and top-level keys, its config checks, its run (into the open
HDF5 file), its figure and its ``fpk info`` lines.  :data:`REGISTRY` maps the
``kind = NAME`` of a config to that object; it is built from the explicit imports
below, never from a name in a config.  A new kind is one new module here and one
line in :data:`REGISTRY`.
"""
from __future__ import annotations

from fokkerplanck.app.kinds import barrier, composition, flows, ising, lvebm, ood, theorem, vpfb
from fokkerplanck.app.kinds.base import Kind

__all__ = ["DEFAULT", "REGISTRY", "Kind"]

REGISTRY: dict[str, Kind] = {
    "flows": flows.KIND,
    "composition": composition.KIND,
    "theorem": theorem.KIND,
    "ising": ising.KIND,
    "ood": ood.KIND,
    "barrier": barrier.KIND,
    "vpfb": vpfb.KIND,
    "lvebm": lvebm.KIND,
}
DEFAULT = "flows"   # the kind of a config without ``kind = ...``
