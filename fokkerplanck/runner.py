"""``fpk run CONFIG.toml -o out.h5``: one experiment from a TOML file into one HDF5 file.

Config (TOML; every table but ``energy``, ``grid``, ``initial``, ``times`` is optional)::

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
    [particles]                   # Langevin particles from the grid's initial law
    n = 10000
    dt = 1e-3
    seed = 1

Layout of the output: root attrs ``format = "fokkerplanck.run"``, ``config`` (JSON);
one group per flow (``fokker-planck``, ``continuity``) in the Trajectory layout;
``particles`` with ``times``, ``positions`` of the last save and the summaries
(plus ``kl_knn``/``kl_knn_se`` per save).  Written atomically: Ctrl-C leaves no file.
"""
from __future__ import annotations

import json
import tomllib
from importlib import resources

import numpy as np

from . import densities as Dn
from . import energies as E
from .grid import Grid
from .trajectory import atomic_h5

__all__ = ["load_config", "run", "build_energy", "builtin_configs"]

FORMAT = "fokkerplanck.run"


def builtin_configs() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("fokkerplanck.configs").iterdir()
                  if p.name.endswith(".toml"))


def load_config(path_or_name) -> dict:
    """A TOML file, or the name of a built-in config (``fpk run eight_gaussians``)."""
    name = str(path_or_name)
    if name in builtin_configs():
        text = resources.files("fokkerplanck.configs").joinpath(name + ".toml").read_text()
    else:
        try:
            with open(name, "rb") as f:
                text = f.read().decode()
        except FileNotFoundError:
            raise ValueError(f"no config file {name!r} and no built-in config of that name "
                             f"(built-in: {builtin_configs()})") from None
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{name}: not valid TOML: {exc}") from None
    missing = [k for k in ("energy", "grid", "initial", "times") if k not in cfg]
    if missing:
        raise ValueError(f"{name}: config lacks the tables {missing}")
    return cfg


def build_energy(spec: dict) -> E.Energy:
    spec = dict(spec)
    kind = spec.get("type", "")
    if "." in kind:
        cls_name, ctor = kind.split(".", 1)
        cls = getattr(E, cls_name, None)
        if cls is None or not hasattr(cls, ctor):
            raise ValueError(f"unknown energy constructor {kind!r}")
        spec.pop("type")
        return getattr(cls, ctor)(**spec)
    return E.from_spec(spec)


def run(cfg: dict, out: str, *, progress: bool = True, log=print) -> None:
    from .continuity import Continuity
    from .solvers import FokkerPlanck

    T = float(cfg.get("temperature", 1.0))
    U = build_energy(cfg["energy"])
    grid = Grid(cfg["grid"]["bounds"], cfg["grid"]["cells"], cfg["grid"].get("periodic", False))
    rho0 = Dn.from_spec(cfg["initial"])
    t = cfg["times"]
    times = np.linspace(float(t.get("start", 0.0)), float(t["stop"]), int(t.get("num", 51)))
    with atomic_h5(out) as f:
        f.attrs["format"] = FORMAT
        f.attrs["config"] = json.dumps(cfg)
        if "fokker_planck" in cfg:
            log("Fokker-Planck on the grid ...")
            tr = FokkerPlanck(U, grid, T).solve(rho0, times, progress=progress, **cfg["fokker_planck"])
            tr.write(f.create_group("fokker-planck"))
        if "continuity" in cfg:
            log("deterministic flow on the grid ...")
            c = dict(cfg["continuity"])
            solver = Continuity(U, grid, method=c.pop("method", "lagrangian"), temperature=T)
            tr = solver.solve(rho0, times, progress=progress, **c)
            tr.write(f.create_group("continuity"))
        if "particles" in cfg:
            import particles
            from particles import estimators as est

            p = cfg["particles"]
            dt = float(p["dt"])
            save_every = max(1, int(round((times[1] - times[0]) / dt))) if times.size > 1 else None
            n_steps = int(round(times[-1] / dt))
            x0 = grid.sample(rho0.on_grid(grid), int(p["n"]), seed=int(p.get("seed", 0)))
            log(f"{int(p['n'])} Langevin particles, {n_steps} steps ...")
            ens = particles.langevin(U, x0, dt, n_steps, method=p.get("method", "euler-maruyama"), temperature=T,
                                     save_every=save_every, seed=int(p.get("seed", 0)), progress=progress)
            g = f.create_group("particles")
            g.attrs["meta"] = json.dumps(ens.meta, default=str)
            g["times"] = ens.times
            g["positions_last"] = ens.positions[-1]
            for k, v in ens.summaries.items():
                g[f"summaries/{k}"] = v
            try:
                kl = [est.kl_knn(x, U, T) for x in ens.positions]
                g["kl_knn"] = [e.value for e in kl]
                g["kl_knn_se"] = [e.stderr for e in kl]
            except ValueError as exc:  # no closed-form log Z: say so in the file
                g.attrs["kl_knn"] = f"not computed: {exc}"
