"""``kind = "ising"``: a spin lattice (``[lattice]``: model ising/potts, shape, J, h, q),
its exact master equation (:mod:`fokkerplanck.discrete`) under ``[dynamics] name``
(glauber/metropolis) from ``[spins] initial`` (up, down, random or a list of letters),
against ``[spins] n`` jump-process particles (:mod:`particles.jumps`).  ``[lattice]
symmetry``: ``"none"`` solves on all ``q^n`` states, ``"lattice"`` on the orbits of the
lattice's symmetries (exact for the symmetric starts up and down; 5x5 Ising, 4x4 Potts
q = 3), ``"auto"`` (default) on orbits only when the states are too many to enumerate.

Group ``exact``: KL, Dirichlet form, its identity residual, the magnetisation law and
mean energy at every time, the spectral gap; group ``particles``: the magnetisation
frequencies with standard errors, mean energy with its error, plug-in KL; root attr
``lattice`` (JSON).
"""
from __future__ import annotations

import json
import math

import numpy as np

from fokkerplanck import discrete as Dz
from fokkerplanck._core.validate import check_memory, positive_int
from fokkerplanck.app.kinds.base import Kind
from fokkerplanck.app.plots import _plt
from particles import jumps

__all__ = ["KIND"]

MODELS = ("ising", "potts")
INITIAL_SPINS = ("up", "down", "random")
SYMMETRY = ("auto", "none", "lattice")
TABLES = {"lattice": frozenset({"model", "shape", "periodic", "J", "h", "q", "symmetry"}),
          "dynamics": frozenset({"name"}),
          "spins": frozenset({"initial", "n", "seed"})}


def _number(v, name) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def lattice_energy(cfg):
    """The :class:`~fokkerplanck.discrete.PairEnergy` of ``[lattice]``."""
    lat = cfg["lattice"]
    model = lat.get("model", "ising")
    if model not in MODELS:
        raise ValueError(f"[lattice] model must be one of {list(MODELS)}, got {model!r}")
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


def initial_codes(cfg, energy) -> np.ndarray:
    init = cfg.get("spins", {}).get("initial", "up")
    n = energy.n_sites
    if isinstance(init, str):
        if init not in INITIAL_SPINS:
            raise ValueError(f"[spins] initial must be one of {list(INITIAL_SPINS)} or a list of {n} letters, "
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


def check(spec) -> dict:
    """The lattice energy, dynamics, initial configuration and particle count, checked
    and parsed once (they reach :func:`run` as ``spec.extra``)."""
    cfg, times = spec.cfg, spec.times
    energy = lattice_energy(cfg)
    sym = cfg["lattice"].get("symmetry", "auto")
    if sym not in SYMMETRY:
        raise ValueError(f"[lattice] symmetry must be one of {list(SYMMETRY)}, got {sym!r}")
    q, n_sites = energy.q, energy.n_sites
    orbits = sym == "lattice" or (sym == "auto" and q ** n_sites > Dz.MAX_STATES)
    dyn = cfg.get("dynamics", {}).get("name", "glauber")
    if dyn not in Dz.DYNAMICS:
        raise ValueError(f"[dynamics] name must be one of {sorted(Dz.DYNAMICS)}, got {dyn!r}")
    c0 = initial_codes(cfg, energy)
    spins = cfg.get("spins", {})
    n = positive_int(spins.get("n", 20000), "[spins] n")
    seed = positive_int(spins.get("seed", 0), "[spins] seed", minimum=0)
    if orbits:
        if np.any(c0 != c0[0]):
            raise ValueError(f"[lattice] symmetry: the orbit reduction is exact for a symmetric start ([spins] "
                             f"initial = 'up' or 'down'); {spins.get('initial')!r} is not one"
                             + ("" if sym == "lattice" else f" and {q}^{n_sites} states are too many to enumerate"))
        group = Dz.lattice_symmetries(energy.lattice, "lattice")
        size = Dz.burnside_count(group, q)
        if size > Dz.MAX_ORBITS:
            Dz.SymmetricSpace(energy, spec.temperature)   # refuses, naming the sizes in and out of reach
        check_memory(Dz.orbit_memory(q, n_sites, size, False) + 8.0 * size * (times.size + 8)
                     + 24.0 * n * times.size, f"the exact laws of {size} orbits at {times.size} times")
    else:
        Dz.n_states(q, n_sites)   # refuses spaces too large to enumerate, with the size
        check_memory(8.0 * q ** n_sites * (times.size + 8) + 24.0 * n * times.size,
                     f"the exact laws of {q ** n_sites} states at {times.size} times")
    return {"lattice": energy, "dynamics": dyn, "initial": c0, "n": n, "seed": seed, "orbits": orbits}


def run(spec, f, *, progress=True, log=print) -> dict:
    T, times, x = spec.temperature, spec.times, spec.extra
    energy, dyn, c0, n, seed = x["lattice"], x["dynamics"], x["initial"], int(x["n"]), int(x["seed"])
    n_states = energy.q ** energy.n_sites
    if x.get("orbits"):
        space = Dz.SymmetricSpace(energy, T)
        me = Dz.SymmetricMasterEquation(space, dyn)
        log(f"{energy.name} {energy.lattice.shape}, {n_states} states in {space.size} orbits of "
            f"{len(space.group)} symmetries, {dyn}: exact master equation on the orbits ...")
    else:
        log(f"{energy.name} {energy.lattice.shape}, {n_states} states, {dyn}: exact master equation ...")
        space = Dz.FiniteSpace(energy, T)
        me = Dz.MasterEquation(space, dyn)
    P = me.solve(space.point_mass(c0), times)
    kl, D, rate = me.kl(P), me.dirichlet(P), me.kl_rate(P)
    M = space.magnetisation() if energy.q == 2 else np.zeros(space.size, dtype=np.int64)
    if x.get("orbits"):
        support, laws = me.law(M, P)
    else:
        support = np.unique(M)
        laws = np.array([space.distribution(M, p)[1] for p in P])
    gap = me.spectral_gap()
    g = f.create_group("exact")
    for k, v in {"times": times, "kl": kl, "dirichlet": D, "kl_rate": rate, "magnetisation_support": support,
                 "magnetisation_law": laws, "mean_energy": P @ space.E}.items():
        g.create_dataset(k, data=v)
    g.attrs.update(spectral_gap=gap, log_z=space.log_z, states=n_states, dynamics=dyn,
                   identity_residual=_identity_residual(rate, D),
                   # the orbits the exact chain ran on (= states without the reduction); the spectral
                   # gap is then that of the symmetric sector
                   orbits=space.size, symmetries=len(space.group) if x.get("orbits") else 1)
    log(f"{n} jump particles ...")
    ens = jumps.simulate(energy, np.tile(c0, (n, 1)), times, dynamics=dyn, temperature=T, seed=seed)
    # frequencies with the exact law's binomial errors (empty bins kept), and z-scores
    hists = [ens.histogram("magnetisation", s, support=support, exact=laws[s]) for s in range(times.size)]
    freq = np.array([h.freq for h in hists])
    pg = f.create_group("particles")
    data = {"times": times, "magnetisation_freq": freq, "magnetisation_se": np.array([h[2] for h in hists]),
            "magnetisation_z": np.array([h.z for h in hists]),
            "mean_energy": ens.energy.mean(1), "mean_energy_se": ens.energy.std(1) / np.sqrt(n)}
    if not x.get("orbits"):   # the plug-in KL counts visits of every state: only where the states are enumerated
        plug = [ens.kl_plugin(s, space.log_pi) for s in range(times.size)]
        data.update({"kl_plugin": np.array([p[0] for p in plug]), "kl_plugin_bias": np.array([p[1] for p in plug]),
                     # 1 where the plug-in estimate is dominated by states no particle visited
                     "kl_plugin_undersampled": np.array([int(p.undersampled) for p in plug])})
    for k, v in data.items():
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


def plot(path, r, steps):
    """Exact master equation against jump particles: KL and the Dirichlet form, the
    magnetisation law at three times, the mean energy."""
    plt = _plt()
    ex, pa = r["exact"], r["particles"]
    t = ex["times"]
    fig, (ax_kl, ax_m, ax_e) = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    ax_kl.semilogy(t, ex["kl"], "k-", label="KL(p_t || pi), exact")
    ax_kl.semilogy(t, ex["dirichlet"], "C3--", label="Dirichlet form D(p_t) = -dKL/dt")
    if "kl_plugin" in pa:
        kl_p = pa["kl_plugin"] - pa["kl_plugin_bias"]
        trusted = kl_p > 0
        if "kl_plugin_undersampled" in pa:
            trusted &= pa["kl_plugin_undersampled"] == 0
        ax_kl.semilogy(t, np.where(trusted, kl_p, np.nan), "C0o", ms=3,
                       label=f"particles: plug-in KL - (K-1)/2N ({int((~trusted).sum())} of {t.size} "
                             "undersampled or <= 0: omitted)")
    ax_kl.set_xlabel("time t")
    sector = " (symmetric sector)" if ex.get("symmetries", 1) > 1 else ""
    ax_kl.set_title(f"spectral gap{sector} {ex['spectral_gap']:.4g}\n|dKL/dt + D| / D <= {ex['identity_residual']:.1e}",
                    fontsize="medium")
    ax_kl.legend(fontsize="x-small")
    sup = ex["magnetisation_support"]
    for j, col in zip(np.unique(np.linspace(1, t.size - 1, 3).astype(int)), ("C0", "C1", "C2")):
        ax_m.plot(sup, ex["magnetisation_law"][j], "-", color=col, lw=1, label=f"exact t={t[j]:.3g}")
        ax_m.errorbar(sup, pa["magnetisation_freq"][j], yerr=pa["magnetisation_se"][j], fmt="o", color=col, ms=3,
                      label=f"{pa['n']} particles")
    ax_m.set_xlabel("magnetisation")
    ax_m.set_ylabel("probability (log scale: the error bars of rare values stay visible)")
    ax_m.set_yscale("log")
    ax_m.legend(fontsize="x-small")
    ax_e.plot(t, ex["mean_energy"], "k-", label="exact")
    ax_e.errorbar(t, pa["mean_energy"], yerr=pa["mean_energy_se"], fmt="o", ms=3, label="particles")
    ax_e.set_xlabel("time t")
    ax_e.set_ylabel("mean energy")
    ax_e.legend(fontsize="x-small")
    return fig


def info(r) -> list[str]:
    ex, pa = r["exact"], r["particles"]
    sym = ex.get("symmetries", 1)
    where = (f"{ex['states']} states in {ex['orbits']} orbits of {sym} symmetries (exact on the orbits)"
             if sym > 1 else f"{ex['states']} states")
    lines = [(f"  {r['lattice']['model']} {r['lattice']['shape']}: {where}, {ex['dynamics']}, "
              f"spectral gap{' (symmetric sector)' if sym > 1 else ''} {ex['spectral_gap']:.6g}, "
              f"|dKL/dt + D| / D <= {ex['identity_residual']:.2g}"),
             f"  {'t':>8} {'KL exact':>12} {'Dirichlet':>12} {'E exact':>10} {'E particles':>20}"]
    for j in np.unique(np.linspace(0, ex["times"].size - 1, min(ex["times"].size, 11)).astype(int)):
        lines.append(f"  {ex['times'][j]:8.4g} {ex['kl'][j]:12.6g} {ex['dirichlet'][j]:12.6g} "
                     f"{ex['mean_energy'][j]:10.5g} {pa['mean_energy'][j]:10.5g} +- {pa['mean_energy_se'][j]:.2g}")
    return lines


KIND = Kind(
    name="ising",
    required=("lattice", "times"),
    top_keys=frozenset({"kind", "temperature", "lattice", "dynamics", "spins", "times"}),
    tables=TABLES, check=check, run=run, plot=plot, info=info, attrs={"lattice": dict},
)
