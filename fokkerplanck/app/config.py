"""Configs of ``fpk run``: TOML files (or built-in names) parsed and checked once into a
:class:`RunSpec`.

Every error a run could meet in its config is raised before anything runs: an unknown
kind, missing tables, unknown keys (named with the nearest valid one: a typo never
falls back to a default silently), values of the wrong kind or range, energies, grids
and initial laws that cannot be built, particle steps that do not divide the save
spacing, sizes that do not fit in memory.  The kind's own checks are its
:class:`~fokkerplanck.app.kinds.Kind` ``check``.
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources

import numpy as np

from fokkerplanck import densities as Dn, energies as E
from fokkerplanck._core.validate import check_keys, nearest, positive_float, positive_int
from fokkerplanck.app.kinds import DEFAULT, REGISTRY, Kind
from fokkerplanck.grid import Grid

__all__ = [
    "MAX_TIMES",
    "TABLE_KEYS",
    "RunSpec",
    "build_energy",
    "builtin_configs",
    "check_config",
    "config_hash",
    "load_config",
    "load_spec",
    "table_keys",
]

# The keys of the tables every kind may share (the energy and initial tables are checked
# against the signature of the type they name); each kind adds the keys of its own tables
# (Kind.tables).
TABLE_KEYS = {
    "grid": frozenset({"bounds", "cells", "periodic"}),
    "times": frozenset({"start", "stop", "num"}),
    "energy": None,
    "initial": None,
}
MAX_TIMES = 100_000


def table_keys(kind: str) -> dict:
    """The keys each table of a ``kind`` config may hold (None: checked by the type it names)."""
    return {**TABLE_KEYS, **REGISTRY[kind].tables}


def builtin_configs() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("fokkerplanck.app.configs").iterdir()
                  if p.name.endswith(".toml"))


def _read_toml(path_or_name) -> tuple[str, dict]:
    name = str(path_or_name)
    if name in builtin_configs():
        text = resources.files("fokkerplanck.app.configs").joinpath(name + ".toml").read_text()
    else:
        try:
            with open(name, "rb") as f:
                text = f.read().decode()
        except FileNotFoundError:
            raise ValueError(f"no config file {name!r} and no built-in config of that name "
                             f"(built-in: {builtin_configs()})") from None
    try:
        return name, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{name}: not valid TOML: {exc}") from None


def load_spec(path_or_name) -> RunSpec:
    """A TOML file, or the name of a built-in config, parsed and checked once."""
    name, cfg = _read_toml(path_or_name)
    try:
        return RunSpec.from_config(cfg)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def load_config(path_or_name) -> dict:
    """A TOML file, or the name of a built-in config (``fpk run eight_gaussians``), checked."""
    return load_spec(path_or_name).cfg


def check_config(cfg: dict) -> RunSpec:
    """Every error ``cfg`` could meet, raised before anything runs (see the module);
    returns the :class:`RunSpec` it parses into."""
    return RunSpec.from_config(cfg)


def config_hash(cfg: dict) -> str:
    """SHA-256 of the resolved config (canonical JSON): a run file records it, so a
    sweep recomputes a point whose config changed instead of reusing it."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def build_energy(spec: dict) -> E.Energy:
    """The ``[energy]`` table: names map through :data:`fokkerplanck.energies.CONSTRUCTORS`
    and :data:`~fokkerplanck.energies.ENERGY_TYPES` only (never an attribute lookup)."""
    return E.from_config(spec)


def _grid(cfg) -> Grid:
    g = cfg["grid"]
    if "bounds" not in g or "cells" not in g:
        raise ValueError("[grid] needs 'bounds' and 'cells'")
    return Grid(g["bounds"], g["cells"], g.get("periodic", False))


def _times(cfg) -> np.ndarray:
    t = cfg["times"]
    if "stop" not in t:
        raise ValueError("[times] needs 'stop'")
    start, stop = t.get("start", 0.0), t["stop"]
    for name, v in (("start", start), ("stop", stop)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise ValueError(f"[times] {name} must be a finite number, got {v!r}")
    num = positive_int(t.get("num", 51), "[times] num", maximum=MAX_TIMES)
    if start < 0 or stop < start or (num > 1 and stop == start):
        raise ValueError(f"[times] needs 0 <= start < stop, got start = {start!r}, stop = {stop!r}")
    return np.linspace(float(start), float(stop), num)


@dataclass(frozen=True)
class RunSpec:
    """One ``fpk run`` experiment, parsed and checked once (:meth:`from_config`): the
    config as given (``cfg``: written into the run file), its :class:`Kind`, the
    temperature and, where the config has them, the grid, the energy, the initial law
    and the save times; ``extra``: what the kind's own check parsed (a lattice energy,
    a homotopy, ...).  A kind's ``run`` takes it and builds none of these again."""

    cfg: dict
    kind: Kind
    temperature: float = 1.0
    grid: Grid | None = None
    energy: object = None
    initial: object = None
    times: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: dict) -> RunSpec:
        if not isinstance(cfg, dict):
            raise ValueError(f"a config is a table of tables, got {type(cfg).__name__}")
        name = cfg.get("kind", DEFAULT)
        if name not in REGISTRY:
            raise ValueError(f"kind must be one of {list(REGISTRY)}, got {name!r}{nearest(name, REGISTRY)}")
        kind = REGISTRY[name]
        check_keys(cfg, kind.top_keys, f"a {name!r} config")
        missing = [k for k in kind.required if k not in cfg]
        if missing:
            raise ValueError(f"a {name!r} config lacks the tables {missing}")
        for table, keys in table_keys(name).items():
            if table in cfg:
                if not isinstance(cfg[table], dict):
                    raise ValueError(f"[{table}] must be a table, got {cfg[table]!r}")
                if keys is not None:
                    check_keys(cfg[table], keys, f"[{table}]")
        T = positive_float(cfg.get("temperature", 1.0), "temperature")
        grid = _grid(cfg) if "grid" in cfg else None
        energy = initial = times = None
        if "energy" in cfg:
            energy = build_energy(cfg["energy"])
            if grid is not None and energy.dim != grid.ndim:
                raise ValueError(f"[energy] has dimension {energy.dim} but [grid] has {grid.ndim}")
        if "initial" in cfg:
            initial = Dn.from_spec(cfg["initial"])
            if grid is not None and initial.dim != grid.ndim:
                raise ValueError(f"[initial] has dimension {initial.dim} but [grid] has {grid.ndim}")
        if "times" in cfg:
            times = _times(cfg)
        spec = cls(cfg, kind, float(T), grid, energy, initial, times)
        extra = kind.check(spec)
        return replace(spec, extra=dict(extra)) if extra else spec

    @property
    def name(self) -> str:
        """The kind's name (``kind = ...`` of the config)."""
        return self.kind.name
