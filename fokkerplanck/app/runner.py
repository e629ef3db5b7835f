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
Gibbs law (see :func:`run_composition`).

``kind = "theorem"``: the deterministic flow started at ``rho*`` (see
:func:`run_theorem`).

``kind = "ood"`` and ``kind = "barrier"``: trained and data-defined energies;
``kind = "vpfb"``: a density homotopy and its potential flow; see :mod:`fokkerplanck.app.experiments`.

``kind = "ising"``: a spin lattice (``[lattice]``: model ising/potts, shape, J, h, q),
its exact master equation under ``[dynamics] name`` (glauber/metropolis) from
``[spins] initial`` (up, down, random or a list of letters), against ``[spins] n``
jump-process particles (see :func:`run_ising`).

Layout of the output: root attrs ``format = "fokkerplanck.run"``, ``kind``,
``config`` (JSON).  Flows: one group per grid flow (``fokker-planck``,
``continuity``) in the Trajectory layout; ``particles`` and
``deterministic-particles`` with ``times``, ``steps``, ``snapshots`` (at most
``keep`` particles per save, default 2000), the summaries and, for Langevin,
``kl_knn``/``kl_knn_se``; ``closed-form`` (quadratic energy, Gaussian start);
the root attr ``stopping`` (JSON list of stopping times with their sources).
Written atomically: Ctrl-C leaves no file.
"""
from __future__ import annotations

import json
import math
import tomllib
import warnings
from importlib import resources

import numpy as np

from fokkerplanck import densities as Dn
from fokkerplanck import energies as E
from fokkerplanck.grid import Grid
from fokkerplanck._core.validate import check_keys, nearest
from fokkerplanck._core.files import atomic_h5, open_h5

__all__ = ["load_config", "run", "build_energy", "builtin_configs", "read_run", "KINDS"]

FORMAT = "fokkerplanck.run"
REQUIRED = {"flows": ("energy", "grid", "initial", "times"), "composition": ("grid", "initial", "composition"),
            "theorem": ("energy", "grid", "times"), "ising": ("lattice", "times"),
            "ood": ("energy", "grid", "ood"), "barrier": ("energy", "grid", "initial", "times", "unsafe"),
            "vpfb": ("homotopy", "grid", "times")}
KINDS = tuple(REQUIRED)


def builtin_configs() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("fokkerplanck.app.configs").iterdir()
                  if p.name.endswith(".toml"))


def load_config(path_or_name) -> dict:
    """A TOML file, or the name of a built-in config (``fpk run eight_gaussians``)."""
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
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{name}: not valid TOML: {exc}") from None
    try:
        check_config(cfg)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return cfg


# The keys each table of a config may hold (the energy and initial tables are checked
# against the signature of the type they name).  Unknown keys are errors naming the
# nearest valid one: a typo never falls back to a default silently.
TABLE_KEYS = {
    "grid": {"bounds", "cells", "periodic"},
    "times": {"start", "stop", "num"},
    "fokker_planck": {"method", "tol", "dt", "normalise", "refine"},
    "continuity": {"method", "reconstruction", "dt", "cfl", "rtol", "atol", "normalise", "refine"},
    "particles": {"n", "dt", "seed", "method", "keep", "precision"},
    "deterministic_particles": {"n", "dt", "seed", "method", "keep"},
    "stopping": {"eps"},
    "composition": {"n", "dt", "time", "seed", "radius", "negation", "sigma"},
    "energy": None,
    "initial": None,
    "lattice": {"model", "shape", "periodic", "J", "h", "q"},
    "dynamics": {"name"},
    "spins": {"initial", "n", "seed"},
    "wasserstein": {"exact_cells", "particles"},
}
TOP_KEYS = {
    "flows": {"kind", "temperature", "energy", "grid", "initial", "times", "fokker_planck", "continuity",
              "particles", "deterministic_particles", "stopping", "wasserstein"},
    "composition": {"kind", "temperature", "grid", "initial", "composition"},
    "theorem": {"kind", "temperature", "energy", "grid", "times"},
    "ising": {"kind", "temperature", "lattice", "dynamics", "spins", "times"},
    "ood": {"kind", "temperature", "energy", "grid", "ood", "data"},
    "barrier": {"kind", "temperature", "energy", "grid", "initial", "times", "unsafe", "barrier", "particles"},
    "vpfb": {"kind", "homotopy", "grid", "times", "particles", "long_run"},
}
MAX_TIMES = 100_000


def config_hash(cfg: dict) -> str:
    """SHA-256 of the resolved config (canonical JSON): a run file records it, so a
    sweep recomputes a point whose config changed instead of reusing it."""
    import hashlib

    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def check_config(cfg: dict) -> None:
    """Every error a run could meet in its config, raised before anything runs: an unknown
    kind, missing tables, unknown keys (named with the nearest valid one), values of the
    wrong kind or range, energies, grids and initial laws that cannot be built, particle
    steps that do not divide the save spacing, sizes that do not fit in memory."""
    from fokkerplanck._core.validate import check_memory, positive_float, positive_int

    if not isinstance(cfg, dict):
        raise ValueError(f"a config is a table of tables, got {type(cfg).__name__}")
    kind = cfg.get("kind", "flows")
    if kind not in REQUIRED:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}{nearest(kind, KINDS)}")
    check_keys(cfg, TOP_KEYS[kind], f"a {kind!r} config")
    missing = [k for k in REQUIRED[kind] if k not in cfg]
    if missing:
        raise ValueError(f"a {kind!r} config lacks the tables {missing}")
    for table, keys in TABLE_KEYS.items():
        if table in cfg:
            if not isinstance(cfg[table], dict):
                raise ValueError(f"[{table}] must be a table, got {cfg[table]!r}")
            if keys is not None:
                check_keys(cfg[table], keys, f"[{table}]")
    positive_float(cfg.get("temperature", 1.0), "temperature")
    if kind == "ising":
        _check_ising(cfg)
        return
    grid = _grid(cfg)
    if "energy" in cfg:
        U = build_energy(cfg["energy"])
        if U.dim != grid.ndim:
            raise ValueError(f"[energy] has dimension {U.dim} but [grid] has {grid.ndim}")
    if "initial" in cfg:
        rho0 = Dn.from_spec(cfg["initial"])
        if rho0.dim != grid.ndim:
            raise ValueError(f"[initial] has dimension {rho0.dim} but [grid] has {grid.ndim}")
    times = _times(cfg) if "times" in cfg else None
    if kind in ("ood", "barrier"):
        from fokkerplanck.app import experiments as X

        (X.check_ood if kind == "ood" else X.check_barrier)(cfg, U, grid)
        return
    if kind == "vpfb":
        from fokkerplanck.app import experiments as X

        X.check_vpfb(cfg, grid)
        return
    for table in ("particles", "deterministic_particles"):
        if table in cfg:
            p = cfg[table]
            if "dt" not in p or "n" not in p:
                raise ValueError(f"[{table}] needs 'n' and 'dt'")
            n = positive_int(p["n"], f"[{table}] n")
            dt = positive_float(p["dt"], f"[{table}] dt")
            positive_int(p.get("keep", 2000), f"[{table}] keep")
            positive_int(p.get("seed", 0), f"[{table}] seed", minimum=0)
            if table == "particles" and p.get("precision", "float64") not in ("float64", "float32"):
                raise ValueError(f"[particles] precision must be 'float64' or 'float32', got {p['precision']!r}")
            every, n_steps = _save_schedule(times, dt)
            if n_steps < 1:
                raise ValueError(f"[{table}] dt = {dt:g} is longer than the run (stop = {times[-1]:g})")
            # positions of every save in memory, plus the working arrays
            check_memory(8.0 * n * grid.ndim * (times.size + 4), f"[{table}] n = {n} particles x {times.size} saves")
    if "wasserstein" in cfg:
        w = cfg["wasserstein"]
        positive_int(w.get("exact_cells", 32), "[wasserstein] exact_cells", minimum=2)
        positive_int(w.get("particles", 0), "[wasserstein] particles", minimum=0)
        if any(grid.periodic):
            raise ValueError("[wasserstein] needs a non-periodic grid (the transport costs are Euclidean)")
    if "stopping" in cfg:
        eps = cfg["stopping"].get("eps", [1e-2])
        if not isinstance(eps, list) or not eps:
            raise ValueError(f"[stopping] eps must be a list of positive numbers, got {eps!r}")
        for e in eps:
            positive_float(e, "[stopping] eps")
    if kind == "composition":
        c = cfg["composition"]
        n = positive_int(c.get("n", 5000), "[composition] n")
        for k in ("dt", "time", "radius", "sigma"):
            if k in c:
                positive_float(c[k], f"[composition] {k}")
        check_memory(8.0 * n * 2 * 4, f"[composition] n = {n} particles")
    for table in ("fokker_planck", "continuity"):
        if table in cfg:
            check_memory(8.0 * grid.size * (times.size + 8), f"[{table}]: {times.size} densities on {grid.size} cells")


_LATTICE_MODELS = ("ising", "potts")
_INITIAL_SPINS = ("up", "down", "random")


def _lattice_energy(cfg):
    """The :class:`~fokkerplanck.discrete.PairEnergy` of ``[lattice]``."""
    from fokkerplanck import discrete as Dz
    from fokkerplanck._core.validate import positive_int

    lat = cfg["lattice"]
    model = lat.get("model", "ising")
    if model not in _LATTICE_MODELS:
        raise ValueError(f"[lattice] model must be one of {list(_LATTICE_MODELS)}, got {model!r}")
    shape = lat.get("shape")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 2:
        raise ValueError(f"[lattice] shape must be [L] or [L0, L1], got {shape!r}")
    shape = tuple(positive_int(v, "[lattice] shape") for v in shape)
    periodic = lat.get("periodic", True)
    if not isinstance(periodic, bool):
        raise ValueError(f"[lattice] periodic must be true or false, got {periodic!r}")
    if model == "ising":
        if "q" in lat and lat["q"] != 2:
            raise ValueError("[lattice] an Ising model has q = 2")
        return Dz.ising(shape, _number(lat.get("J", 1.0), "[lattice] J"), _number(lat.get("h", 0.0), "[lattice] h"),
                        periodic)
    if "h" in lat:
        raise ValueError("[lattice] a Potts model here has no field h")
    return Dz.potts(shape, positive_int(lat.get("q", 3), "[lattice] q"), _number(lat.get("J", 1.0), "[lattice] J"),
                    periodic)


def _number(v, name) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _initial_codes(cfg, energy) -> np.ndarray:
    init = cfg.get("spins", {}).get("initial", "up")
    n = energy.n_sites
    if isinstance(init, str):
        if init not in _INITIAL_SPINS:
            raise ValueError(f"[spins] initial must be one of {list(_INITIAL_SPINS)} or a list of {n} letters, "
                             f"got {init!r}")
        if init == "random":
            seed = cfg.get("spins", {}).get("seed", 0)
            return np.random.default_rng(seed + 1).integers(0, energy.q, size=n).astype(np.int8)
        return np.full(n, energy.q - 1 if init == "up" else 0, dtype=np.int8)
    if (not isinstance(init, list) or len(init) != n
            or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < energy.q for v in init)):
        raise ValueError(f"[spins] initial must be 'up', 'down', 'random' or a list of {n} letters in "
                         f"0..{energy.q - 1}")
    return np.array(init, dtype=np.int8)


def _check_ising(cfg) -> None:
    from fokkerplanck import discrete as Dz
    from fokkerplanck._core.validate import check_memory, positive_int

    energy = _lattice_energy(cfg)
    Dz._n_states(energy.q, energy.n_sites)   # refuses spaces too large to enumerate, with the size
    dyn = cfg.get("dynamics", {}).get("name", "glauber")
    if dyn not in Dz.DYNAMICS:
        raise ValueError(f"[dynamics] name must be one of {sorted(Dz.DYNAMICS)}, got {dyn!r}")
    _initial_codes(cfg, energy)
    times = _times(cfg)
    spins = cfg.get("spins", {})
    n = positive_int(spins.get("n", 20000), "[spins] n")
    positive_int(spins.get("seed", 0), "[spins] seed", minimum=0)
    check_memory(8.0 * energy.q ** energy.n_sites * (times.size + 8) + 24.0 * n * times.size,
                 f"the exact laws of {energy.q ** energy.n_sites} states at {times.size} times")


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
    from fokkerplanck._core.validate import positive_int

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


def run(cfg: dict, out: str, *, progress: bool = True, log=print, overwrite: bool = True, protect=()) -> None:
    """Run the experiment ``cfg`` (a dict as :func:`load_config` returns) into ``out``
    (atomically, one writer at a time; ``overwrite=False`` refuses an existing file,
    ``protect`` lists paths that must not be written, such as the config itself)."""
    check_config(cfg)
    kind = cfg.get("kind", "flows")
    import time

    from fokkerplanck import __version__

    t0 = time.perf_counter()
    with atomic_h5(out, overwrite=overwrite, protect=protect) as f:
        f.attrs["format"] = FORMAT
        f.attrs["kind"] = kind
        f.attrs["config"] = json.dumps(cfg)
        f.attrs["config_sha256"] = config_hash(cfg)
        f.attrs["package_version"] = __version__
        if kind in ("ood", "barrier", "vpfb"):
            from fokkerplanck.app import experiments as X

            {"ood": X.run_ood, "barrier": X.run_barrier, "vpfb": X.run_vpfb}[kind](
                cfg, f, progress=progress, log=log, build_energy=build_energy, grid=_grid(cfg),
                times=_times(cfg) if "times" in cfg else None)
        else:
            {"flows": run_flows, "composition": run_composition, "theorem": run_theorem, "ising": run_ising}[kind](
                cfg, f, progress=progress, log=log)
        f.attrs["wall_time"] = time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# kind = "flows"
def _save_schedule(times, dt):
    """``save_every`` and ``n_steps`` so that the particle saves fall on ``times``."""
    n_steps = int(round(times[-1] / dt))
    if abs(n_steps * dt - times[-1]) > 1e-9 * max(1.0, times[-1]):
        raise ValueError(f"the stop time {times[-1]:g} must be a multiple of dt = {dt:g}")
    if times.size > 1:
        every = (times[1] - times[0]) / dt
        if abs(every - round(every)) > 1e-6 or abs(times[0]) > 1e-12:
            raise ValueError(f"the save spacing {times[1] - times[0]:g} (from t = 0) must be a multiple of dt = {dt:g}")
        return max(1, int(round(every))), n_steps
    return None, n_steps


def _write_ensemble(g, ens, keep: int):
    g.attrs["meta"] = json.dumps(ens.meta, default=str)
    g["times"], g["steps"], g["alive"] = ens.times, ens.steps, ens.alive
    n = ens.positions.shape[1]
    idx = np.linspace(0, n - 1, min(n, keep)).astype(int)
    g["snapshots"] = ens.positions[:, idx]
    for k, v in ens.summaries.items():
        g[f"summaries/{k}"] = v


def run_flows(cfg, f, *, progress=True, log=print) -> dict:
    from fokkerplanck.flows.continuity import Continuity
    from fokkerplanck.flows.fokker_planck import FokkerPlanck

    T = float(cfg.get("temperature", 1.0))
    U = build_energy(cfg["energy"])
    grid = _grid(cfg)
    rho0 = Dn.from_spec(cfg["initial"])
    times = _times(cfg)
    try:  # the reference log Z of the particle KL estimates: closed form, else the grid's quadrature
        log_z = U.log_partition(T)
    except NotImplementedError:
        log_z = grid.log_partition(U, T)
    res, fp = {}, None
    if "fokker_planck" in cfg:
        log("Fokker-Planck on the grid ...")
        fp = FokkerPlanck(U, grid, T)
        res["fokker-planck"] = fp.solve(rho0, times, progress=progress, **cfg["fokker_planck"])
        res["fokker-planck"].write(f.create_group("fokker-planck"))
    if "continuity" in cfg:
        log("deterministic flow on the grid ...")
        c = dict(cfg["continuity"])
        solver = Continuity(U, grid, method=c.pop("method", "lagrangian"), temperature=T)
        res["continuity"] = solver.solve(rho0, times, progress=progress, **c)
        res["continuity"].write(f.create_group("continuity"))
    if "particles" in cfg:
        import particles
        from particles import estimators as est

        p = cfg["particles"]
        dt = float(p["dt"])
        save_every, n_steps = _save_schedule(times, dt)
        seed = int(p.get("seed", 0))
        x0 = grid.sample(rho0.on_grid(grid), int(p["n"]), seed=seed)
        log(f"{int(p['n'])} Langevin particles, {n_steps} steps ...")
        ens = particles.langevin(U, x0, dt, n_steps, method=p.get("method", "euler-maruyama"), temperature=T,
                                 precision=p.get("precision", "float64"),
                                 save_every=save_every, seed=seed, progress=progress)
        g = f.create_group("particles")
        _write_ensemble(g, ens, int(p.get("keep", 2000)))
        kl = [est.kl_knn(x, U, T, log_partition=log_z) for x in ens.positions]
        g["kl_knn"] = [e.value for e in kl]
        g["kl_knn_se"] = [e.stderr for e in kl]
        res["particles"] = ens
    if "deterministic_particles" in cfg:
        import particles

        p = cfg["deterministic_particles"]
        dt = float(p["dt"])
        save_every, n_steps = _save_schedule(times, dt)
        x0 = rho0.sample(int(p["n"]), seed=int(p.get("seed", 0)))
        log(f"{int(p['n'])} deterministic particles, {n_steps} steps ...")
        ens = particles.gradient_flow(U, x0, dt, n_steps, method=p.get("method", "rk4"), save_every=save_every,
                                      track_logdensity=True, logrho0=rho0.logpdf(x0), temperature=T,
                                      log_partition=log_z, progress=progress)
        _write_ensemble(f.create_group("deterministic-particles"), ens, int(p.get("keep", 2000)))
        res["deterministic-particles"] = ens
    if grid.ndim == 1:
        _write_w2(f.create_group("wasserstein"), res, grid, times)
    elif "wasserstein" in cfg:
        log("W2 along the flows ...")
        _write_w2_nd(f.create_group("wasserstein"), res, grid, times, cfg["wasserstein"], log)
    if isinstance(U, E.Quadratic) and isinstance(rho0, Dn.Gaussian):
        res["closed-form"] = _closed_form(U, rho0, T, times)
        g = f.create_group("closed-form")
        g["times"] = times
        for k, v in res["closed-form"].items():
            g[k] = v
    stops = stopping_summary(res, U, cfg, T, fokker_planck=fp)
    f.attrs["stopping"] = json.dumps(stops)
    for s in stops:
        log(f"  {s['name']}: t = {s['time']:.6g}" + (f" +- {s['stderr']:.2g}" if s.get("stderr") else "")
            + (f", step {s['step']}" if "step" in s else "") + f"  ({s['source']})")
    return res


def _write_w2(g, res, grid, times) -> None:
    """1D runs: W2 of each grid flow to the Gibbs law (exact, quantile functions), and of
    the Langevin particles to the Fokker-Planck density at the same time (with a bootstrap
    standard error)."""
    from fokkerplanck.wasserstein import clean_density, w2_samples_grid

    g["times"] = times
    for name in ("fokker-planck", "continuity"):
        if name in res:
            g[f"{name}_to_gibbs"] = res[name].w2()
    if "particles" in res and "fokker-planck" in res:
        fp = res["fokker-planck"]
        pairs = [w2_samples_grid(x[:, 0], grid, clean_density(grid, r), n_boot=20)
                 for x, r in zip(res["particles"].positions, fp.densities)]
        g["particles_to_fokker-planck"] = [w for w, _ in pairs]
        g["particles_to_fokker-planck_se"] = [e for _, e in pairs]


def _write_w2_nd(g, res, grid, times, opts, log) -> None:
    """2D/3D runs with a ``[wasserstein]`` table: W2 of each grid flow to the Gibbs law two
    ways, each exact in its own regime (:mod:`fokkerplanck.wasserstein`): linearised at the
    midpoint law on the full grid (second order in h, its own error O(W2^2): for late times,
    near the Gibbs law), and the exact transport of the cell masses pooled to at most
    ``exact_cells`` per axis (POT; O(H^2) while W2 is large against the pooled cell ``H``: for
    early times).  ``particles = n`` adds W2 of n Langevin particles to the pooled
    Fokker-Planck density, with a bootstrap standard error (biased upwards by the empirical
    law's own O(n^-1/d) distance)."""
    from fokkerplanck.wasserstein import clean_density, pooled, w2_grids, w2_linearised, w2_samples_grid_nd

    g["times"] = times
    cells = int(opts.get("exact_cells", 32))
    g.attrs["exact_cells"] = cells
    for name in ("fokker-planck", "continuity"):
        if name in res:
            tr = res[name]
            gibbs = tr.gibbs
            dens = [clean_density(grid, r) for r in tr.densities]
            g[f"{name}_to_gibbs_linearised"] = [w2_linearised(grid, r, gibbs) for r in dens]
            try:
                cg, cgibbs = pooled(grid, gibbs, cells)
                g[f"{name}_to_gibbs_exact_pooled"] = [w2_grids(cg, pooled(grid, r, cells)[1], cgibbs) for r in dens]
            except ImportError as e:
                log(f"  no exact transport: {e}")
    n = int(opts.get("particles", 0))
    if n and "particles" in res and "fokker-planck" in res:
        cg = pooled(grid, res["fokker-planck"].densities[0], cells)[0]
        pairs = [w2_samples_grid_nd(x[:n], cg, pooled(grid, clean_density(grid, r), cells)[1], n_boot=10)
                 for x, r in zip(res["particles"].positions, res["fokker-planck"].densities)]
        g["particles_to_fokker-planck"] = [w for w, _ in pairs]
        g["particles_to_fokker-planck_se"] = [e for _, e in pairs]


def _closed_form(U, rho0, T, times) -> dict:
    from fokkerplanck import diagnostics as D

    A = U.A
    mstar, Sstar = U.mean, T * np.linalg.inv(A)
    out = {}
    for flow, key in (("fokker-planck", "kl_fokker_planck"), ("continuity", "kl_continuity")):
        kl = []
        for t in times:
            m, S = D.ou_moments(A, U.mean, rho0.mean, rho0.cov, T, t, flow=flow)
            kl.append(D.gaussian_kl(m, S, mstar, Sstar))
        out[key] = np.array(kl)
    return out


def stopping_summary(res: dict, U, cfg, T, *, fokker_planck=None) -> list[dict]:
    """The stopping times of a flows run, each with its source: ``tau_det`` and
    ``argmin KL`` of every deterministic result (grid and particles, with the
    step index ``k*`` for the particles' dt and the step of minimal tracked KL),
    and ``tau_Lang(eps)`` from the Fokker-Planck result (spectral gap and observed
    rate: estimated; Bakry-Emery when U is convex on the box: certified)."""
    from fokkerplanck.theory.stopping import (bakry_emery, kl_argmin, observed_rate, spectral_gap_estimate, tau_det, tau_lang)

    out = []
    if "continuity" in res:
        tr = res["continuity"]
        for st in (tau_det(tr.times, tr.ratio(), source="grid R_t"),
                   kl_argmin(tr.times, tr.kl(), first_local=True, source="grid KL")):
            out.append({"name": "tau_det" if "R_t" in st.source else "argmin KL", "time": st.time,
                        "source": f"{st.source} ({tr.scheme['method']})"})
    if "deterministic-particles" in res:
        ens = res["deterministic-particles"]
        s, dt = ens.summaries, ens.meta["dt"]
        st = tau_det(ens.times, s["ratio"], stderr=s["ratio_se"], source="particle R_t")
        out.append({"name": "tau_det", "time": st.time, "stderr": st.stderr, "step": st.step(dt) if np.isfinite(st.time)
                    else -1, "source": f"particle R_t ({ens.meta['scheme']}, dt = {dt:g}): predicted k*"})
        if "kl" in s:
            am = kl_argmin(ens.times, s["kl"], first_local=True, source="particle tracked KL")
            out.append({"name": "argmin KL", "time": am.time, "step": int(round(am.time / dt)),
                        "source": f"particle tracked KL ({ens.meta['scheme']}, dt = {dt:g}): step of minimal KL"})
    if "fokker-planck" in res:
        tr = res["fokker-planck"]
        from fokkerplanck.flows.fokker_planck import FokkerPlanck

        kl0 = float(tr.kl()[0])
        fp = fokker_planck if fokker_planck is not None else FokkerPlanck(U, tr.grid, T)
        constants = [spectral_gap_estimate(fp), observed_rate(tr)]
        try:
            constants.insert(0, bakry_emery(U, tr.grid))
        except ValueError:
            pass  # not convex on the box: no certified constant of this kind
        for eps in cfg.get("stopping", {}).get("eps", [1e-2]):
            for c in constants:
                st = tau_lang(float(eps), kl0, c)
                out.append({"name": f"tau_Lang(eps={float(eps):g})", "time": st.time, "certified": c.certified,
                            "c_ls": c.value, "source": repr(c)})
    return out


# ---------------------------------------------------------------------------------------
# kind = "composition"
def _disk_fraction(grid, centres, radius, sub: int = 8) -> np.ndarray:
    """Fraction of each cell within ``radius`` of any of ``centres`` (``sub^d`` points per cell)."""
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    frac = np.zeros(grid.size)
    P = grid.points
    for o in np.stack(np.meshgrid(*[offs] * grid.ndim, indexing="ij"), -1).reshape(-1, grid.ndim):
        Y = P + o * np.asarray(grid.spacing)
        d2 = np.min(np.sum((Y[:, None, :] - centres[None]) ** 2, axis=2), axis=1)
        frac += d2 <= radius**2
    return (frac / sub**grid.ndim).reshape(grid.shape)


def composition_experiment(grid, rho0, *, n: int = 5000, dt: float = 2e-3, time: float = 2.0, seed: int = 1,
                           radius: float = 1.5, negation: float = 0.35, sigma: float = 0.5, temperature: float = 1.0,
                           log=print) -> dict:
    """Experts A (Gaussians at (+-3, +-3)) and B ((0, +-4), (+-4, 0)) and their
    conjunction ``U_A + U_B``, disjunction ``-log(e^-U_A + e^-U_B)`` and negation
    ``U_B - negation U_A``.  For each energy: ``n`` Langevin samples (Euler-Maruyama,
    step ``dt``) at ``time`` from ``rho0`` restricted to the grid; the counts within
    ``radius`` of the A and of the B centres; the counts the grid Fokker-Planck law
    at that time predicts (same start, so the slow mixing between modes is in both)
    and those of the Gibbs law; the stationary law of the discrete generator
    against ``exp(-U/T)/Z``.  Returns ``{name: dict}``."""
    import particles

    from fokkerplanck.flows.fokker_planck import FokkerPlanck
    from fokkerplanck.theory.theorem import composed_energies, stationary_law

    T = float(temperature)
    energies = composed_energies(negation, sigma)
    centres = {"A": energies["A"].means, "B": energies["B"].means}
    disks = {k: _disk_fraction(grid, v, radius) for k, v in centres.items()}
    r0 = rho0.on_grid(grid)
    x0 = grid.sample(r0, n, seed=seed)
    n_steps = int(round(time / dt))
    out = {}
    for name, U in energies.items():
        log(f"{name}: Fokker-Planck and {n} Langevin samples ...")
        fp = FokkerPlanck(U, grid, T)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the start touches the walls: reported by the grid runs
            rho_t = fp.solve(r0, [time]).densities[-1]
        X = particles.langevin(U, x0, dt, n_steps, temperature=T, seed=seed + 1, summaries=False).positions[-1]
        r = {"samples": X, "fokker_planck": rho_t, "gibbs": fp.gibbs, "energy": U,
             "stationary_error": float(np.abs(stationary_law(fp) - fp.gibbs).sum() * grid.cell_volume),
             "spectral_gap": fp.spectral_gap(), "confining": bool(E.check_confining(U, grid, T).ok)}
        for k, C in centres.items():
            d2 = np.min(np.sum((X[:, None, :] - C[None]) ** 2, axis=2), axis=1)
            r[f"count_{k}"] = int(np.sum(d2 <= radius**2))
            r[f"expected_{k}"] = float(n * np.sum(rho_t * disks[k]) * grid.cell_volume)
            r[f"expected_{k}_gibbs"] = float(n * np.sum(fp.gibbs * disks[k]) * grid.cell_volume)
        out[name] = r
    out["_meta"] = {"centres": centres, "radius": radius, "n": n}
    return out


def counts_agree(r: dict, key: str, n: int) -> tuple[float, float]:
    """``|count - expected| / sd`` (binomial) for ``key`` in ``"A", "B"`` and the
    allowance it is held to: 4 sd plus 1% of the expected count for the O(dt)
    bias of Euler-Maruyama and the O(h^2) of the grid, plus 2 for tiny counts."""
    e = r[f"expected_{key}"]
    p = min(max(e / n, 0.0), 1.0)
    sd = max(np.sqrt(n * p * (1 - p)), 1e-12)
    return abs(r[f"count_{key}"] - e) / sd, (4 * sd + 0.01 * e + 2) / sd


def run_composition(cfg, f, *, progress=True, log=print) -> dict:
    """``kind = "composition"``: :func:`composition_experiment` with the config table
    ``[composition]`` (``n``, ``dt``, ``time``, ``seed``, ``radius``, ``negation``,
    ``sigma``) from ``[initial]`` on ``[grid]``; one group per energy."""
    c = {k: v for k, v in cfg["composition"].items()}
    grid = _grid(cfg)
    out = composition_experiment(grid, Dn.from_spec(cfg["initial"]), temperature=float(cfg.get("temperature", 1.0)),
                                 log=log, **c)
    meta = out["_meta"]
    for name, r in out.items():
        if name == "_meta":
            continue
        g = f.create_group(name)
        g.attrs["energy"] = json.dumps(r["energy"].to_spec())
        for k, v in r.items():
            if isinstance(v, np.ndarray):
                g.create_dataset(k, data=v, compression="gzip")
            elif k != "energy":
                g.attrs[k] = v
    f.attrs["grid"] = json.dumps(grid.to_spec())
    f.attrs["centres"] = json.dumps({k: v.tolist() for k, v in meta["centres"].items()})
    f.attrs["radius"] = meta["radius"]
    f.attrs["n"] = meta["n"]
    return out


# ---------------------------------------------------------------------------------------
# kind = "theorem"
def run_theorem(cfg, f, *, progress=True, log=print):
    """The deterministic flow started at ``rho*``: the theorem's numbers
    (:func:`fokkerplanck.theory.theorem.nonstationarity_check`) as the root attr
    ``theorem`` (JSON), and the trajectories from ``rho*`` of the deterministic
    flow (``continuity``: Lagrangian) and of Fokker-Planck (``fokker-planck``)."""
    from dataclasses import asdict

    from fokkerplanck.flows.continuity import Continuity
    from fokkerplanck.flows.fokker_planck import FokkerPlanck
    from fokkerplanck.theory.theorem import nonstationarity_check

    T = float(cfg.get("temperature", 1.0))
    U = build_energy(cfg["energy"])
    grid = _grid(cfg)
    times = _times(cfg)
    log("non-stationarity theorem ...")
    r = nonstationarity_check(U, grid, T)
    f.attrs["theorem"] = json.dumps({**asdict(r), "coefficient_rel_error": r.coefficient_rel_error})
    pi = grid.gibbs(U, T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Gibbs law's own wall mass: checked by nonstationarity_check
        # the exact Gibbs log-density along the characteristics (a piecewise-constant
        # start would put its O(h) interpolation error into KL at small t)
        tr = Continuity(U, grid, method="lagrangian", temperature=T).solve(
            Dn.Gibbs(U, T, grid.log_partition(U, T)), times, progress=progress)
        tr.write(f.create_group("continuity"))
        FokkerPlanck(U, grid, T).solve(pi, times).write(f.create_group("fokker-planck"))
    return r


# ---------------------------------------------------------------------------------------
# kind = "ising"
def run_ising(cfg, f, *, progress=True, log=print) -> dict:
    """A spin lattice's exact master equation (:mod:`fokkerplanck.discrete`) from one
    configuration, against jump-process particles (:mod:`particles.jumps`): group
    ``exact`` (KL, Dirichlet form, its identity residual, the magnetisation law and mean
    energy at every time, the spectral gap) and group ``particles`` (the magnetisation
    frequencies with standard errors, mean energy with its error, plug-in KL)."""
    from particles import jumps

    from fokkerplanck import discrete as Dz

    T = float(cfg.get("temperature", 1.0))
    energy = _lattice_energy(cfg)
    dyn = cfg.get("dynamics", {}).get("name", "glauber")
    times = _times(cfg)
    c0 = _initial_codes(cfg, energy)
    spins = cfg.get("spins", {})
    n, seed = int(spins.get("n", 20000)), int(spins.get("seed", 0))
    log(f"{energy.name} {energy.lattice.shape}, {energy.q ** energy.n_sites} states, {dyn}: exact master equation ...")
    space = Dz.FiniteSpace(energy, T)
    me = Dz.MasterEquation(space, dyn)
    P = me.solve(space.point_mass(c0), times)
    kl, D, rate = me.kl(P), me.dirichlet(P), me.kl_rate(P)
    M = space.magnetisation() if energy.q == 2 else np.zeros(space.size, dtype=np.int64)
    support = np.unique(M)
    laws = np.array([space.distribution(M, p)[1] for p in P])
    gap = me.spectral_gap()
    g = f.create_group("exact")
    for k, v in {"times": times, "kl": kl, "dirichlet": D, "kl_rate": rate, "magnetisation_support": support,
                 "magnetisation_law": laws, "mean_energy": P @ space.E}.items():
        g.create_dataset(k, data=v)
    g.attrs.update(spectral_gap=gap, log_z=space.log_z, states=space.size, dynamics=dyn,
                   identity_residual=_identity_residual(rate, D))
    log(f"{n} jump particles ...")
    ens = jumps.simulate(energy, np.tile(c0, (n, 1)), times, dynamics=dyn, temperature=T, seed=seed)
    freq = np.array([ens.histogram("magnetisation", s, support=support)[1] for s in range(times.size)])
    pg = f.create_group("particles")
    kl_pi = np.array([ens.kl_plugin(s, space.log_pi) for s in range(times.size)])
    for k, v in {"times": times, "magnetisation_freq": freq, "magnetisation_se": np.sqrt(freq * (1 - freq) / n),
                 "mean_energy": ens.energy.mean(1), "mean_energy_se": ens.energy.std(1) / np.sqrt(n),
                 "kl_plugin": kl_pi[:, 0], "kl_plugin_bias": kl_pi[:, 1]}.items():
        pg.create_dataset(k, data=v)
    pg.attrs.update(n=n, seed=seed)
    f.attrs["lattice"] = json.dumps({"model": energy.name, "shape": list(energy.lattice.shape), "q": energy.q})
    return {"gap": gap}


def _identity_residual(rate, D) -> float:
    """max |dKL/dt + D| / D over the times where both are finite (at a point mass both are
    infinite: the identity holds as -inf = -inf)."""
    fin = np.isfinite(rate) & np.isfinite(D) & (D > 0)
    both_inf = np.isinf(rate) & np.isinf(D) & (rate < 0)
    if not np.all(fin | both_inf):
        return math.inf
    return float(np.max(np.abs(rate[fin] + D[fin]) / D[fin])) if fin.any() else 0.0


def read_run(path) -> dict:
    """The scalars and small arrays of an ``fpk run`` file, for ``fpk info`` and plots:
    ``kind``, ``config``, ``stopping`` and per-group datasets (not the grid trajectories)."""
    with open_h5(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not an fpk run file (format attribute {f.attrs.get('format')!r})")
        try:
            out = _read_run(f)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ValueError(f"{path} is a damaged fpk run file: {type(exc).__name__}: {exc}") from None
    return out


_ATTR_TYPES = {"config": dict, "stopping": list, "theorem": dict, "centres": dict, "grid": dict, "lattice": dict}
_STOP_KEYS = {"name": str, "time": (int, float), "source": str}


def _read_run(f) -> dict:
    out = {"kind": str(f.attrs.get("kind", "flows")), "groups": list(f)}
    if out["kind"] not in KINDS:
        raise ValueError(f"unknown kind {out['kind']!r}")
    for key, typ in _ATTR_TYPES.items():
        if key in f.attrs or key == "config":
            raw = f.attrs[key]
            v = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            if not isinstance(v, typ):
                raise TypeError(f"attribute {key!r} is not a JSON {typ.__name__}")
            out[key] = v
    for s in out.get("stopping", []):
        if not isinstance(s, dict) or any(not isinstance(s.get(k), t) for k, t in _STOP_KEYS.items()):
            raise TypeError(f"a stopping entry is not {{name, time, source}}: {str(s)[:100]}")
    for key in ("radius", "n"):
        if key in f.attrs:
            out[key] = f.attrs[key].item()
    for name in f:
        g = f[name]
        if g.attrs.get("format") == "fokkerplanck.results":
            continue
        d = {k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in g.attrs.items()}

        def visit(key, obj):
            if hasattr(obj, "shape"):
                d[key] = obj[()]
        g.visititems(visit)
        out[name] = d
    return out
