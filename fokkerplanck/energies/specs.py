"""Energies as data: every energy round-trips through a plain dict,
``from_spec(U.to_spec())``.  Names in specs and configs map through the explicit
registry :data:`~fokkerplanck.energies.base.ENERGY_TYPES`, never through attribute
lookups; a :class:`~fokkerplanck.energies.custom.Custom` energy's kernels are imported
only from modules the caller allows."""
from __future__ import annotations

from fokkerplanck._core.validate import nearest
from fokkerplanck.energies.base import CONSTRUCTORS, ENERGY_TYPES, Energy, _call_checked, from_spec


def spec_of(energy) -> dict:
    """``energy.to_spec()``, or for an energy that has none (Python callables, kernels in
    ``__main__``) a stand-in ``{"type": "unsaved", "repr", "dim", "reason"}``: files of
    such runs are still written, and reading them back asks for the energy itself."""
    to_spec = getattr(energy, "to_spec", None)
    if to_spec is None:
        return {"type": "unsaved", "repr": repr(energy), "dim": int(energy.dim),
                "reason": f"{type(energy).__name__} has no spec"}
    try:
        return to_spec()
    except ValueError as exc:
        return {"type": "unsaved", "repr": repr(energy), "dim": int(energy.dim), "reason": str(exc)}


def from_config(spec: dict) -> Energy:
    """An energy from a config table: a spec (:func:`from_spec`, no Custom energies)
    or a named constructor from :data:`CONSTRUCTORS` (``type = "GaussianMixture.ring"``)
    with its keyword arguments, checked against its signature."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"[energy] needs a 'type' key, got {str(spec)[:200]}")
    kind = spec["type"]
    if isinstance(kind, str) and kind in CONSTRUCTORS:
        return _call_checked(CONSTRUCTORS[kind], {k: v for k, v in spec.items() if k != "type"}, f"energy {kind}")
    if isinstance(kind, str) and kind not in ENERGY_TYPES:
        valid = sorted(ENERGY_TYPES) + sorted(CONSTRUCTORS)
        raise ValueError(f"unknown energy type {kind!r}{nearest(kind, valid)}; known: {valid}")
    return from_spec(spec)


def custom_modules(spec) -> list[str]:
    """The modules whose kernels a spec (or an energy) names through :class:`Custom` parts:
    what a program that built the energy itself may pass on as ``allow_modules``."""
    if isinstance(spec, Energy):
        spec = spec.to_spec()
    found = set()

    def walk(s):
        if isinstance(s, dict):
            if s.get("type") == "Custom":
                found.update(str(s[k]).partition(":")[0] for k in ("value", "grad", "lap", "hess") if k in s)
            for v in s.values():
                walk(v)
        elif isinstance(s, list):
            for v in s:
                walk(v)
    walk(spec)
    return sorted(found)
