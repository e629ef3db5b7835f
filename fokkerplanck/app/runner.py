"""``fpk run CONFIG.toml -o out.h5``: one experiment from a TOML file into one HDF5 file.

Seven kinds of experiment (``kind = ...`` at the top of the config):

``kind = "flows"`` (the default): both density flows of one energy from one
initial law, on the grid and with particles::

    temperature = 1.0
    [energy]                      # an energy spec (Energy.to_spec()), or a named constructor:
    type = "GaussianMixture.ring" #   "Class.constructor" with its keyword arguments
    n = 8
    [grid]
    bounds = [[-8, 8], [-8, 8]]
    cells = 128
    [initial]                     # a density spec: Gaussian (mean, cov)
    type = "Gaussian"
    mean = [0, 0]
    cov = 9.0
    [times]
    stop = 5.0
    num = 51
    [fokker_planck]               # grid Langevin density: method = "exact" | "implicit"
    [continuity]                  # grid deterministic flow: method = "lagrangian" | "finite-volume"
    [particles]                   # Langevin particles, sampled from the grid's initial law
    n = 10000
    dt = 1e-3
    seed = 1
    method = "euler-maruyama"
    [deterministic_particles]     # dX/dt = -grad U from rho0 itself, tracking log rho_t(X_t)
    n = 10000
    dt = 1e-3
    method = "rk4"
    [stopping]                    # tau_Lang(eps) for these eps (needs [fokker_planck])
    eps = [1e-2, 1e-3]

``kind = "composition"``: the paper's experts A and B and their conjunction,
disjunction and negation; Langevin samples of each, counted near the A and B
centres and held against the grid Fokker-Planck law at the same time and the
Gibbs law (see :mod:`fokkerplanck.app.kinds.composition`).

``kind = "theorem"``: the deterministic flow started at ``rho*`` (see
:mod:`fokkerplanck.app.kinds.theorem`).

``kind = "ood"`` and ``kind = "barrier"``: trained and data-defined energies;
``kind = "vpfb"``: a density homotopy and its potential flow; see
:mod:`fokkerplanck.app.kinds.ood`, :mod:`~fokkerplanck.app.kinds.barrier`,
:mod:`~fokkerplanck.app.kinds.vpfb`.

``kind = "ising"``: a spin lattice (``[lattice]``: model ising/potts, shape, J, h, q),
its exact master equation under ``[dynamics] name`` (glauber/metropolis) from
``[spins] initial`` (up, down, random or a list of letters), against ``[spins] n``
jump-process particles (see :mod:`fokkerplanck.app.kinds.ising`).

Layout of the output: root attrs ``format = "fokkerplanck.run"``, ``kind``,
``config`` (JSON).  Flows: one group per grid flow (``fokker-planck``,
``continuity``) in the Trajectory layout; ``particles`` and
``deterministic-particles`` with ``times``, ``steps``, ``snapshots`` (at most
``keep`` particles per save, default 2000), the summaries and, for Langevin,
``kl_knn``/``kl_knn_se``; ``closed-form`` (quadratic energy, Gaussian start);
the root attr ``stopping`` (JSON list of stopping times with their sources).
Written atomically: Ctrl-C leaves no file.

Each kind is one :class:`~fokkerplanck.app.kinds.Kind` in
:data:`fokkerplanck.app.kinds.REGISTRY` (its tables, checks, run, figure and ``fpk info``
lines); a config is parsed and checked once into a :class:`~fokkerplanck.app.config.RunSpec`
(:mod:`fokkerplanck.app.config`), which the kind's run takes.
"""
from __future__ import annotations

import json
import time

import h5py
import numpy as np

from fokkerplanck import __version__
from fokkerplanck._core.files import atomic_h5, open_h5

# re-exported: the names callers (tests, notebooks, the sweep) import from here
from fokkerplanck.app.config import (  # noqa: F401
    MAX_TIMES,
    TABLE_KEYS,
    RunSpec,
    build_energy,
    builtin_configs,
    check_config,
    config_hash,
    load_config,
    load_spec,
    table_keys,
)
from fokkerplanck.app.kinds import DEFAULT, REGISTRY
from fokkerplanck.app.kinds.flows import stopping_summary  # noqa: F401
from fokkerplanck.theory.composition import composition_experiment, counts_agree  # noqa: F401

__all__ = [
    "FORMAT",
    "KINDS",
    "RunSpec",
    "build_energy",
    "builtin_configs",
    "check_config",
    "load_config",
    "load_spec",
    "plot_run",
    "read_run",
    "run",
]

FORMAT = "fokkerplanck.run"
KINDS = tuple(REGISTRY)                                          # the kind names
REQUIRED = {name: k.required for name, k in REGISTRY.items()}    # views of the registry, for older callers
TOP_KEYS = {name: set(k.top_keys) for name, k in REGISTRY.items()}


def run(cfg, out: str, *, progress: bool = True, log=print, overwrite: bool = True, protect=()) -> None:
    """Run the experiment ``cfg`` (a dict as :func:`load_config` returns, or the
    :class:`RunSpec` of :func:`load_spec`, then not checked again) into ``out``
    (atomically, one writer at a time; ``overwrite=False`` refuses an existing file,
    ``protect`` lists paths that must not be written, such as the config itself)."""
    spec = cfg if isinstance(cfg, RunSpec) else RunSpec.from_config(cfg)
    t0 = time.perf_counter()
    with atomic_h5(out, overwrite=overwrite, protect=protect) as f:
        f.attrs["format"] = FORMAT
        f.attrs["kind"] = spec.name
        f.attrs["config"] = json.dumps(spec.cfg)
        f.attrs["config_sha256"] = config_hash(spec.cfg)
        f.attrs["package_version"] = __version__
        spec.kind.run(spec, f, progress=progress, log=log)
        f.attrs["wall_time"] = time.perf_counter() - t0


def read_run(path) -> dict:
    """The scalars and small arrays of an ``fpk run`` file, for ``fpk info`` and plots:
    ``kind``, ``config``, the kind's root attributes and per-group datasets (not the
    grid trajectories)."""
    with open_h5(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not an fpk run file (format attribute {f.attrs.get('format')!r})")
        try:
            out = _read_run(f)
        except (KeyError, TypeError, ValueError, OSError, RecursionError) as exc:
            raise ValueError(f"{path} is a damaged fpk run file: {type(exc).__name__}: {exc}") from None
    return out


MAX_READ_BYTES = 1 << 28   # 256 MiB: the small arrays fpk info and the figures read
_STOP_KEYS = {"name": str, "time": (int, float, type(None)), "source": str}  # None: not reached or not reported


def _read_run(f) -> dict:
    out = {"kind": str(f.attrs.get("kind", DEFAULT)), "groups": list(f)}
    if out["kind"] not in REGISTRY:
        raise ValueError(f"unknown kind {out['kind']!r}")
    kind = REGISTRY[out["kind"]]
    for key, typ in {"config": dict, **kind.attrs}.items():
        if key in f.attrs or key == "config":
            raw = f.attrs[key]
            v = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            if not isinstance(v, typ):
                raise TypeError(f"attribute {key!r} is not a JSON {typ.__name__}")
            out[key] = v
    for s in out.get("stopping", []):
        if not isinstance(s, dict) or any(not isinstance(s.get(k), t) for k, t in _STOP_KEYS.items()):
            raise TypeError(f"a stopping entry is not {{name, time, source}}: {str(s)[:100]}")
    for key in kind.scalars:
        if key in f.attrs:
            out[key] = f.attrs[key].item()
    for name in f:
        g = f[name]
        if not isinstance(g, h5py.Group):  # a member the toolkit did not write: named, not read
            out.setdefault("unknown", []).append(name)
            continue
        if g.attrs.get("format") == "fokkerplanck.results":
            # a trajectory (read whole by Trajectory.load); here only where its values are valid
            dg = g.get("diagnostics")
            if isinstance(dg, h5py.Group) and isinstance(dg.get("valid"), h5py.Dataset) and "times" in g:
                out.setdefault("validity", {})[name] = {"times": g["times"][()], "valid": dg["valid"][()].astype(bool)}
            continue
        d = {k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in g.attrs.items()}

        def visit(key, obj, name=name):
            if hasattr(obj, "shape"):
                size = obj.size * obj.dtype.itemsize if obj.dtype.kind in "biufc" else obj.size * 64
                if size > MAX_READ_BYTES:   # a run file's own datasets here are small: this one is not ours
                    out.setdefault("unknown", []).append(f"{name}/{key} ({size / 2**30:.3g} GiB, not read)")
                    return
                d[key] = obj[()]
        g.visititems(visit)
        out[name] = d
    return out


def plot_run(path, out=None, *, steps=None):
    """The figure of an ``fpk run`` file, drawn by its kind (flows: the Figure-1 panel;
    ``steps``: particle step indices of its snapshots, default the start, the predicted
    k* and two more).  Saved to ``out`` when given; returns the figure."""
    r = read_run(path)
    fig = REGISTRY[r["kind"]].plot(path, r, steps)
    if out is not None:
        fig.savefig(out, dpi=110)
    return fig


def info_lines(path, r) -> list[str]:
    """The ``fpk info`` summary of a run file (``r``: its :func:`read_run`)."""
    lines = [f"{path}: fpk run, kind {r['kind']!r}, groups {r['groups']}"]
    if r.get("unknown"):
        lines.append(f"  (members this toolkit did not write, not read: {r['unknown']})")
    for name, v in r.get("validity", {}).items():
        bad = ~v["valid"]
        if bad.any():
            lines.append(f"  {name}: {int(bad.sum())} of {bad.size} saved times NOT VALID (unresolved on the grid or "
                         f"mass off), from t = {v['times'][np.argmax(bad)]:.4g}: their KL and R_t are not those of "
                         "probability laws")
    return lines + REGISTRY[r["kind"]].info(r)
