"""``fpk run`` experiments of trained and data-defined energies: ``kind = "ood"`` and
``kind = "barrier"`` (dispatched by :mod:`fokkerplanck.app.runner`; configs are data, every
name maps through the explicit tables below).

``kind = "ood"``: the energy of a data set (``[data]``: a :class:`~fokkerplanck.energies.KDE`
of ``n`` samples of ``[energy]``'s law with ``bandwidth``; without ``[data]`` the energy
itself) scores in-distribution samples against out-of-distribution sets (``[ood] sets``:
names in :data:`OOD_SETS`) by S1-S3 (:mod:`fokkerplanck.theory.ood`); AUROC with DeLong errors.
The grid gives the data energy's KL to the true law and its ``log Z`` (0 for a KDE).

``kind = "barrier"``: ``U_safe = U_plus - lambda U_minus`` with ``U_plus`` the ``[energy]``
and ``U_minus = -exp(-|x - c|^2 / (2 s^2))`` a bump at the unsafe disc ``[unsafe]``
(centre c, radius, sigma s); the smallest lambda keeping ``rho_t(unsafe) <= beta`` along
each flow of ``[barrier] flows`` (exact grid flows, bisection), then Langevin particles at
the Fokker-Planck lambda* with binomial error bars against the grid.
"""
from __future__ import annotations

import json

import numpy as np

from fokkerplanck import densities as Dn
from fokkerplanck import energies as E

__all__ = ["run_ood", "run_barrier", "OOD_SETS", "bump", "disc", "check_ood", "check_barrier"]


def _uniform(grid, X_in, rng, cfg):
    lo, hi = np.array(grid.bounds).T
    return rng.uniform(lo, hi, size=X_in.shape)


def _shifted(grid, X_in, rng, cfg):
    shift = np.asarray(cfg.get("shift", [2.0] + [0.0] * (X_in.shape[1] - 1)), dtype=float)
    if shift.shape != (X_in.shape[1],):
        raise ValueError(f"[ood] shift must have {X_in.shape[1]} entries, got {shift.tolist()}")
    return X_in[rng.permutation(X_in.shape[0])] + shift


def _scaled(grid, X_in, rng, cfg):
    return X_in[rng.permutation(X_in.shape[0])] * float(cfg.get("scale", 1.5))


OOD_SETS = {"uniform": _uniform, "shifted": _shifted, "scaled": _scaled}
OOD_KEYS = {"n", "seed", "dt", "tau", "sets", "shift", "scale"}
DATA_KEYS = {"n", "bandwidth", "seed"}
UNSAFE_KEYS = {"centre", "radius", "sigma"}
BARRIER_KEYS = {"beta", "lam_max", "tol", "flows"}
PARTICLE_KEYS = {"n", "dt", "seed"}


def bump(centre, sigma: float):
    """``U_minus(x) = -exp(-|x - c|^2 / (2 s^2))``: lowest at ``c``, bounded, so ``U_plus -
    lambda U_minus`` stays confining for every lambda (a callable energy, exact derivatives)."""
    c = np.asarray(centre, dtype=float)
    s2 = float(sigma) ** 2
    d = c.size

    def value(X):
        return -np.exp(-np.sum((X - c) ** 2, axis=1) / (2 * s2))

    def grad(X):
        return -value(X)[:, None] * (X - c) / s2

    def lap(X):
        return -value(X) * (d / s2 - np.sum((X - c) ** 2, axis=1) / s2 ** 2)
    return E.from_callable(value, grad, lap, dim=d, name=f"bump(c={c.tolist()}, s={sigma:g})")


def disc(centre, radius: float):
    """Indicator of the open disc (ball) ``|x - c| < radius`` on points (N, d)."""
    c = np.asarray(centre, dtype=float)
    r = float(radius)
    return lambda X: np.linalg.norm(X - c, axis=1) < r


def _get(cfg, table, keys):
    from fokkerplanck._core.validate import check_keys

    t = cfg.get(table, {})
    check_keys(t, keys, f"[{table}]")
    return t


def check_ood(cfg, U, grid) -> None:
    from fokkerplanck._core.validate import positive_float, positive_int

    o, d = _get(cfg, "ood", OOD_KEYS), _get(cfg, "data", DATA_KEYS)
    positive_int(o.get("n", 4000), "[ood] n")
    positive_int(o.get("tau", 10), "[ood] tau")
    positive_float(o.get("dt", 0.01), "[ood] dt")
    sets = o.get("sets", ["uniform", "shifted"])
    if not isinstance(sets, list) or not sets or any(s not in OOD_SETS for s in sets):
        raise ValueError(f"[ood] sets must be a non-empty list of {sorted(OOD_SETS)}, got {sets!r}")
    if not hasattr(U, "sample"):
        raise ValueError(f"[energy] {U!r} cannot be sampled exactly: the ood experiment needs in-distribution samples")
    if "data" in cfg:
        positive_int(d.get("n", 2000), "[data] n")
        positive_float(d.get("bandwidth", 0.2), "[data] bandwidth")


def check_barrier(cfg, U, grid) -> None:
    from fokkerplanck._core.validate import finite_array, positive_float, positive_int

    u, b = _get(cfg, "unsafe", UNSAFE_KEYS), _get(cfg, "barrier", BARRIER_KEYS)
    _get(cfg, "particles", PARTICLE_KEYS)
    finite_array(u.get("centre"), "[unsafe] centre", shape=(grid.ndim,))
    positive_float(u.get("radius"), "[unsafe] radius")
    positive_float(u.get("sigma", 1.0), "[unsafe] sigma")
    beta = b.get("beta", 0.05)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < 1:
        raise ValueError(f"[barrier] beta must lie in (0, 1), got {beta!r}")
    positive_float(b.get("lam_max", 20.0), "[barrier] lam_max")
    positive_float(b.get("tol", 1e-2), "[barrier] tol")
    from fokkerplanck.theory.barrier import FLOWS

    flows = b.get("flows", ["fokker_planck"])
    if not isinstance(flows, list) or not flows or any(f not in FLOWS for f in flows):
        raise ValueError(f"[barrier] flows must be a non-empty list of {sorted(FLOWS)}, got {flows!r}")
    if "particles" in cfg:
        p = cfg["particles"]
        positive_int(p.get("n", 10000), "[particles] n")
        positive_float(p.get("dt", 0.01), "[particles] dt")


def run_ood(cfg, f, *, progress=True, log=print, build_energy, grid, times=None):
    from fokkerplanck.theory.ood import auroc, scores

    T = float(cfg.get("temperature", 1.0))
    U = build_energy(cfg["energy"])
    o = cfg.get("ood", {})
    n, seed = int(o.get("n", 4000)), int(o.get("seed", 1))
    rng = np.random.default_rng(seed)
    model = U
    if "data" in cfg:
        dcfg = cfg["data"]
        data = U.sample(int(dcfg.get("n", 2000)), seed=int(dcfg.get("seed", 0)))
        model = E.KDE(data, float(dcfg.get("bandwidth", 0.2)))
        g = f.create_group("data")
        g["points"] = data
        g.attrs["bandwidth"] = model.bandwidth
        rho = grid.gibbs(model, T)
        truth = grid.gibbs(U, T)
        vol = grid.cell_volume
        with np.errstate(divide="ignore", invalid="ignore"):
            g.attrs["kl_model_to_truth"] = float(np.sum(np.where(rho > 0, rho * np.log(rho / truth), 0.0)) * vol)
        g.attrs["log_z_grid"] = grid.log_partition(model, T)
        log(f"data energy: KDE of {data.shape[0]} points, h = {model.bandwidth:g}; "
            f"KL(model || truth) = {g.attrs['kl_model_to_truth']:.4g}, grid log Z = {g.attrs['log_z_grid']:.3g}")
    dt, tau = float(o.get("dt", 0.01)), int(o.get("tau", 10))
    X_in = U.sample(n, seed=seed + 1)
    s_in = scores(model, X_in, dt=dt, tau=tau)
    table = {}
    g = f.create_group("ood")
    g.attrs.update(dt=dt, tau=tau)
    g["in"] = X_in
    for k, v in s_in.items():
        g[f"in_{k}"] = v
    for name in o.get("sets", ["uniform", "shifted"]):
        X_out = OOD_SETS[name](grid, X_in, rng, o)
        s_out = scores(model, X_out, dt=dt, tau=tau)
        g[f"{name}"] = X_out
        table[name] = {}
        for k, v in s_out.items():
            g[f"{name}_{k}"] = v
            a = auroc(s_in[k], v)
            table[name][k] = {"auroc": a.value, "se": a.se}
        log(f"  {name:<10} " + "  ".join(f"{k} {t['auroc']:.4f} +- {t['se']:.4f}" for k, t in table[name].items()))
    g.attrs["table"] = json.dumps(table)
    return table


def run_barrier(cfg, f, *, progress=True, log=print, build_energy, grid, times):
    import particles

    from fokkerplanck.theory.barrier import particle_unsafe_mass, smallest_lambda, unsafe_mass
    from fokkerplanck.flows.fokker_planck import FokkerPlanck

    T = float(cfg.get("temperature", 1.0))
    U_plus = build_energy(cfg["energy"])
    u, b = cfg["unsafe"], cfg.get("barrier", {})
    unsafe = disc(u["centre"], u["radius"])
    U_minus = bump(u["centre"], u.get("sigma", 1.0))
    rho0 = Dn.from_spec(cfg["initial"])
    beta = float(b.get("beta", 0.05))
    out = {}
    for flow in b.get("flows", ["fokker_planck"]):
        log(f"bisection over {flow} flows ...")
        r = smallest_lambda(U_plus, U_minus, grid, rho0, times, unsafe, beta, flow=flow, temperature=T,
                            lam_max=float(b.get("lam_max", 20.0)), tol=float(b.get("tol", 1e-2)))
        g = f.create_group(f"barrier_{flow}")
        g.attrs.update(lam=r.lam, tol=r.tol, beta=beta)
        g["times"] = r.times
        g["mass"] = r.mass
        g["history"] = np.array(r.history)
        out[flow] = r
        log(f"  lambda* = {r.lam:.4g} (+- {r.tol:.1g}); max_t rho_t(unsafe) = {r.mass.max():.4g} <= beta = {beta:g}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        free = unsafe_mass(FokkerPlanck(U_plus, grid, T).solve(rho0, times), unsafe)
    g = f.create_group("free")
    g["mass"], g["times"] = free, times
    if "particles" in cfg and "fokker_planck" in out:
        p = cfg["particles"]
        lam = out["fokker_planck"].lam
        dt = float(p.get("dt", 0.01))
        n_steps = int(round(times[-1] / dt))
        every = max(1, int(round((times[1] - times[0]) / dt))) if times.size > 1 else n_steps
        x0 = rho0.sample(int(p.get("n", 10000)), seed=int(p.get("seed", 1)))
        ens = particles.langevin(U_plus - lam * U_minus, x0, dt, n_steps, save_every=every, temperature=T,
                                 seed=int(p.get("seed", 1)) + 1)
        q, se = particle_unsafe_mass(ens, unsafe)
        g = f.create_group("particles")
        g["times"], g["mass"], g["mass_se"] = ens.times, q, se
        g.attrs.update(n=x0.shape[0], dt=dt, lam=lam)
        log(f"  particles at lambda*: max_t fraction in the unsafe set {q.max():.4g} +- {se[np.argmax(q)]:.2g}")
    return out


def plot_ood(path, r, steps):
    from fokkerplanck.app.plots import _plt

    plt = _plt()
    table = json.loads(r["ood"]["table"])
    fig, (ax_b, ax_h) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    names = list(table)
    keys = list(next(iter(table.values())))
    w = 0.8 / len(keys)
    for i, k in enumerate(keys):
        ax_b.bar(np.arange(len(names)) + i * w, [table[n][k]["auroc"] for n in names], w,
                 yerr=[table[n][k]["se"] for n in names], label=k, capsize=3)
    ax_b.set_xticks(np.arange(len(names)) + w * (len(keys) - 1) / 2, names)
    ax_b.set_ylim(0.4, 1.0)
    ax_b.axhline(0.5, color="k", lw=0.5)
    ax_b.set_ylabel("AUROC (DeLong error bars)")
    ax_b.legend(fontsize="x-small")
    g = r["ood"]
    for n, col in zip(["in"] + names, ["k"] + [f"C{i}" for i in range(len(names))]):
        ax_h.hist(g[f"{n}_S1"], bins=60, density=True, histtype="step", color=col, label=n)
    ax_h.legend(fontsize="x-small")
    ax_h.set_xlabel("S1 = U(x)")
    return fig


def plot_barrier(path, r, steps):
    from fokkerplanck.app.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.4), layout="constrained")
    for key in r:
        if key.startswith("barrier_"):
            g = r[key]
            ax.plot(g["times"], g["mass"], "-", label=f"{key[8:]}: lambda* = {g['lam']:.3g}")
            beta = g["beta"]
    ax.plot(r["free"]["times"], r["free"]["mass"], "k--", label="lambda = 0 (Fokker-Planck)")
    if "particles" in r:
        p = r["particles"]
        ax.errorbar(p["times"], p["mass"], yerr=p["mass_se"], fmt="o", ms=3, label=f"{p['n']} particles at lambda*")
    ax.axhline(beta, color="C3", lw=0.8, label="beta")
    ax.set_xlabel("time t")
    ax.set_ylabel("rho_t(unsafe)")
    ax.legend(fontsize="x-small")
    return fig


# ---------------------------------------------------------------------------------------
# kind = "vpfb"
HOMOTOPY_KEYS = {"data", "prior_std", "likelihood_std"}
VPFB_PARTICLE_KEYS = {"n", "dt", "seed"}
LONG_RUN_KEYS = {"durations"}


def check_vpfb(cfg, grid) -> None:
    from fokkerplanck._core.validate import finite_array, positive_float, positive_int
    from fokkerplanck.energies.paths import VPFBHomotopy

    h = _get(cfg, "homotopy", HOMOTOPY_KEYS)
    X = finite_array(h.get("data"), "[homotopy] data")
    if X.ndim != 2 or X.shape[1] != grid.ndim:
        raise ValueError(f"[homotopy] data must be a list of {grid.ndim}-D points, got shape {X.shape}")
    H = VPFBHomotopy(X, h.get("prior_std", 1.0), h.get("likelihood_std", 1.0))
    lo, hi = np.array(grid.bounds).T
    for t in (0.0, 1.0):  # the marginal must fit in the box at both ends
        m = grid.mass_near_wall(grid.density_from_logpdf(lambda Y: H.logpdf(Y, t)), 2)
        if m > 1e-6:
            raise ValueError(f"the homotopy's marginal at t = {t:g} puts mass {m:.3g} within two cells of the walls of "
                             f"{grid.bounds}: enlarge [grid] bounds")
    if any(grid.periodic):
        raise ValueError("the vpfb experiment needs a non-periodic grid (zero-flux walls)")
    times = cfg["times"]
    if float(times.get("stop", 1.0)) > 1.0 or float(times.get("start", 0.0)) < 0.0:
        raise ValueError("[times] of a homotopy lie in [0, 1]")
    if "particles" in cfg:
        p = _get(cfg, "particles", VPFB_PARTICLE_KEYS)
        positive_int(p.get("n", 10000), "[particles] n")
        positive_float(p.get("dt", 0.02), "[particles] dt")
    d = _get(cfg, "long_run", LONG_RUN_KEYS).get("durations", [1.0, 2.0])
    finite_array(d, "[long_run] durations", ndim=1)


def run_vpfb(cfg, f, *, progress=True, log=print, build_energy=None, grid, times):
    from fokkerplanck.energies.paths import VPFBHomotopy
    from fokkerplanck.wasserstein import clean_density, w2_linearised
    from fokkerplanck.flows.potential_flow import (boltzmann_residual, frozen_flow, homotopy_kl, potential_flow, potential_flow_particles)
    from fokkerplanck.flows.fokker_planck import FokkerPlanck

    h = cfg["homotopy"]
    H = VPFBHomotopy(np.asarray(h["data"], dtype=float), h.get("prior_std", 1.0), h.get("likelihood_std", 1.0))
    log(f"{H!r}: potential flow on the grid ...")
    dens, info = potential_flow(H, grid, times)
    g = f.create_group("grid")
    bars = [grid.density_from_logpdf(lambda Y, t=t: H.logpdf(Y, t)) for t in times]
    g["times"], g["kl"] = times, homotopy_kl(H, grid, dens, times, bars)
    g["w2"] = [w2_linearised(grid, r, b) for r, b in zip(dens, bars)]     # small: the linearised W2
    g["w2_from_prior"] = [w2_linearised(grid, bars[0], b) for b in bars]  # how far the homotopy travels
    g["mass"] = dens.sum(axis=tuple(range(1, dens.ndim))) * grid.cell_volume
    g["density_final"] = dens[-1]
    g.attrs.update(steps=info["steps"], max_wall_flux=info["max_wall_flux"])
    log(f"  KL(rho_Phi(1) || rho_bar(1)) = {g['kl'][-1]:.3g}, W2 = {g['w2'][-1]:.3g} (the homotopy travels "
        f"W2 = {g['w2_from_prior'][-1]:.3g}; {info['steps']} steps)")
    if "particles" in cfg:
        p = cfg["particles"]
        pf = potential_flow_particles(H, grid, times, int(p.get("n", 10000)), dt=float(p.get("dt", 0.02)),
                                      seed=int(p.get("seed", 1)))
        gp = f.create_group("particles")
        gp["times"], gp["kl"], gp["kl_se"] = times, pf.kl, pf.kl_se
        gp.attrs["n"] = int(p.get("n", 10000))
        log(f"  particles: KL(1) = {pf.kl[-1]:.3g} +- {pf.kl_se[-1]:.2g}")
    res = [boltzmann_residual(H, grid, t)["relative_residual"] for t in times[1:]]
    gb = f.create_group("boltzmann")
    gb["times"], gb["relative_residual"] = times[1:], np.array(res)
    log(f"  Boltzmann claim: Phi(1) vs log rho_bar(1), best affine fit residual {res[-1]:.3f} (0 = Boltzmann)")
    durations = np.asarray(cfg.get("long_run", {}).get("durations", [1.0, 2.0]), dtype=float)
    ode, kl_ode = frozen_flow(H, grid, 1.0, durations)
    rho1 = grid.density_from_logpdf(lambda Y: H.logpdf(Y, 1.0))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lang = FokkerPlanck(H.at(1.0), grid).solve(rho1, np.concatenate([[0.0], durations]))
    kl_lang = lang.kl()[1:]
    gl = f.create_group("long_run")
    gl["durations"], gl["kl_ode"], gl["kl_langevin"] = durations, kl_ode, kl_lang
    gl["w2_ode"] = [w2_linearised(grid, rho1, r) for r in ode]
    gl["w2_langevin"] = [w2_linearised(grid, rho1, clean_density(grid, r)) for r in lang.densities[1:]]
    log(f"  past t = 1: ODE KL {kl_ode[-1]:.3g} (W2 {gl['w2_ode'][-1]:.3g}), Langevin KL {kl_lang[-1]:.1e} "
        f"(W2 {gl['w2_langevin'][-1]:.1e}) after {durations[-1]:g}")


def plot_vpfb(path, r, steps):
    from fokkerplanck.app.plots import _plt

    plt = _plt()
    fig, (ax_k, ax_b, ax_l) = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    g = r["grid"]
    ax_k.semilogy(g["times"][1:], np.maximum(g["kl"][1:], 1e-16), "k-o", ms=3, label="grid potential flow")
    if "particles" in r:
        p = r["particles"]
        ax_k.errorbar(p["times"][1:], p["kl"][1:], yerr=p["kl_se"][1:], fmt="o", ms=3,
                      label=f"{p['n']} particles (tracked log-density)")
    if "w2" in g:
        ax_k.semilogy(g["times"][1:], np.maximum(g["w2"][1:], 1e-16), "k--s", ms=3, label="grid: W2 (linearised)")
    ax_k.set_xlabel("homotopy time t")
    ax_k.set_title("homotopy matching: KL and W2 (rho_Phi(t), rho_bar(t))")
    ax_k.legend(fontsize="x-small")
    b = r["boltzmann"]
    ax_b.plot(b["times"], b["relative_residual"], "C1-o", ms=3)
    ax_b.set_ylim(0, 1.05)
    ax_b.set_xlabel("homotopy time t")
    ax_b.set_title("Phi(t) = a log rho_bar(t) + b ? (relative residual)")
    lr = r["long_run"]
    ax_l.plot(lr["durations"], lr["kl_ode"], "C3-o", ms=3, label="ODE, potential frozen at t = 1")
    ax_l.plot(lr["durations"], np.abs(lr["kl_langevin"]), "C0-o", ms=3, label="Langevin, U = -log rho_bar(1)")
    if "w2_ode" in lr:
        ax_l.plot(lr["durations"], lr["w2_ode"], "C3--s", ms=3, label="ODE: W2 (linearised)")
        ax_l.plot(lr["durations"], lr["w2_langevin"], "C0--s", ms=3, label="Langevin: W2 (linearised)")
    ax_l.set_xlabel("time past t = 1")
    ax_l.set_ylabel("KL or W2 (rho, rho_bar(1))")
    ax_l.legend(fontsize="x-small")
    return fig
