"""``kind = "vpfb"``: a density homotopy (``[homotopy]``: data, prior_std,
likelihood_std; :class:`~fokkerplanck.energies.paths.VPFBHomotopy`) and its potential
flow on the grid and with particles; the Boltzmann claim; the flow frozen at t = 1
against Langevin past t = 1 (``[long_run] durations``).  Groups ``grid``,
``particles``, ``boltzmann``, ``long_run``.
"""
from __future__ import annotations

import warnings

import numpy as np

from fokkerplanck._core.validate import finite_array, positive_float, positive_int
from fokkerplanck.app.kinds.base import Kind
from fokkerplanck.app.plots import _plt
from fokkerplanck.energies.paths import VPFBHomotopy
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.flows.potential_flow import (
    boltzmann_residual,
    frozen_flow,
    homotopy_kl,
    potential_flow,
    potential_flow_particles,
)
from fokkerplanck.wasserstein import clean_density, w2_linearised

__all__ = ["KIND"]

TABLES = {"homotopy": frozenset({"data", "prior_std", "likelihood_std"}),
          "particles": frozenset({"n", "dt", "seed"}),
          "long_run": frozenset({"durations"})}


def check(spec) -> dict:
    """The homotopy, checked to fit in the box at both ends, built once (it reaches
    :func:`run` as ``spec.extra["homotopy"]``)."""
    cfg, grid = spec.cfg, spec.grid
    h = cfg.get("homotopy", {})
    X = finite_array(h.get("data"), "[homotopy] data")
    if X.ndim != 2 or X.shape[1] != grid.ndim:
        raise ValueError(f"[homotopy] data must be a list of {grid.ndim}-D points, got shape {X.shape}")
    H = VPFBHomotopy(X, h.get("prior_std", 1.0), h.get("likelihood_std", 1.0))
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
        p = cfg["particles"]
        positive_int(p.get("n", 10000), "[particles] n")
        positive_float(p.get("dt", 0.02), "[particles] dt")
    d = cfg.get("long_run", {}).get("durations", [1.0, 2.0])
    finite_array(d, "[long_run] durations", ndim=1)
    return {"homotopy": H}


def run(spec, f, *, progress=True, log=print):
    cfg, grid, times, H = spec.cfg, spec.grid, spec.times, spec.extra["homotopy"]
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


def plot(path, r, steps):
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


def info(r) -> list[str]:
    g = r["grid"]
    lines = [(f"  homotopy matching, grid potential flow ({g['steps']} steps): KL(rho_Phi(t) || rho_bar(t)), "
              "W2 (linearised)")]
    pk = r.get("particles")
    for j in range(len(g["times"])):
        extra = f"   particles KL {pk['kl'][j]:.3g} +- {pk['kl_se'][j]:.2g}" if pk is not None else ""
        w2 = f" {g['w2'][j]:10.3g}" if "w2" in g else ""
        lines.append(f"    t = {g['times'][j]:<6.3g} {g['kl'][j]:10.3g}{w2}{extra}")
    b, lr = r["boltzmann"], r["long_run"]
    lines.append(f"  Boltzmann claim at t = 1: relative residual of Phi = a log rho_bar + b: "
                 f"{b['relative_residual'][-1]:.3f}")
    lines.append(f"  past t = 1, after {lr['durations'][-1]:g}: ODE KL {lr['kl_ode'][-1]:.3g}, Langevin KL "
                 f"{lr['kl_langevin'][-1]:.1e}")
    if "w2_ode" in lr:
        lines.append(f"    W2 (linearised): ODE {lr['w2_ode'][-1]:.3g}, Langevin {lr['w2_langevin'][-1]:.1e}")
    return lines


KIND = Kind(
    name="vpfb",
    required=("homotopy", "grid", "times"),
    top_keys=frozenset({"kind", "homotopy", "grid", "times", "particles", "long_run"}),
    tables=TABLES, check=check, run=run, plot=plot, info=info,
)
