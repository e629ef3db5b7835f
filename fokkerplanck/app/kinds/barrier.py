"""``kind = "barrier"``: ``U_safe = U_plus - lambda U_minus`` with ``U_plus`` the
``[energy]`` and ``U_minus = -exp(-|x - c|^2 / (2 s^2))`` a bump at the unsafe disc
``[unsafe]`` (centre c, radius, sigma s); the smallest lambda keeping
``rho_t(unsafe) <= beta`` along each flow of ``[barrier] flows`` (exact grid flows,
bisection), then Langevin particles at the Fokker-Planck lambda* with binomial error
bars against the grid.  Groups ``barrier_<flow>``, ``free`` (lambda = 0) and
``particles``.
"""
from __future__ import annotations

import warnings

import numpy as np

import particles
from fokkerplanck import energies as E
from fokkerplanck._core.validate import finite_array, positive_float, positive_int
from fokkerplanck.app.kinds.base import Kind
from fokkerplanck.app.plots import _plt
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.theory.barrier import FLOWS, particle_unsafe_mass, smallest_lambda, unsafe_mass

__all__ = ["KIND", "bump", "disc"]

TABLES = {"unsafe": frozenset({"centre", "radius", "sigma"}),
          "barrier": frozenset({"beta", "lam_max", "tol", "flows"}),
          "particles": frozenset({"n", "dt", "seed"})}


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


def check(spec) -> None:
    cfg, grid = spec.cfg, spec.grid
    u, b = cfg.get("unsafe", {}), cfg.get("barrier", {})
    finite_array(u.get("centre"), "[unsafe] centre", shape=(grid.ndim,))
    positive_float(u.get("radius"), "[unsafe] radius")
    positive_float(u.get("sigma", 1.0), "[unsafe] sigma")
    beta = b.get("beta", 0.05)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < 1:
        raise ValueError(f"[barrier] beta must lie in (0, 1), got {beta!r}")
    positive_float(b.get("lam_max", 20.0), "[barrier] lam_max")
    positive_float(b.get("tol", 1e-2), "[barrier] tol")
    flows = b.get("flows", ["fokker_planck"])
    if not isinstance(flows, list) or not flows or any(f not in FLOWS for f in flows):
        raise ValueError(f"[barrier] flows must be a non-empty list of {sorted(FLOWS)}, got {flows!r}")
    if "particles" in cfg:
        p = cfg["particles"]
        positive_int(p.get("n", 10000), "[particles] n")
        positive_float(p.get("dt", 0.01), "[particles] dt")


def run(spec, f, *, progress=True, log=print):
    cfg, T, U_plus, grid, rho0, times = spec.cfg, spec.temperature, spec.energy, spec.grid, spec.initial, spec.times
    u, b = cfg["unsafe"], cfg.get("barrier", {})
    unsafe = disc(u["centre"], u["radius"])
    U_minus = bump(u["centre"], u.get("sigma", 1.0))
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


def plot(path, r, steps):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.4), layout="constrained")
    for key in r:
        if key.startswith("barrier_"):
            g = r[key]
            flow = {"fokker_planck": "Fokker-Planck", "continuity": "deterministic flow"}.get(key[8:], key[8:])
            ax.plot(g["times"], g["mass"], "-", label=f"{flow} with the barrier, lambda* = {g['lam']:.3g}")
            beta = g["beta"]
    ax.plot(r["free"]["times"], r["free"]["mass"], "k--", label="lambda = 0 (Fokker-Planck)")
    if "particles" in r:
        p = r["particles"]
        ax.errorbar(p["times"], p["mass"], yerr=p["mass_se"], fmt="o", ms=3, label=f"{p['n']} particles at lambda*")
    ax.axhline(beta, color="C3", lw=0.8, label=f"beta = {beta:g} (the allowed mass)")
    ax.set_xlabel("time t")
    ax.set_ylabel("rho_t(unsafe)")
    ax.set_title("mass in the unsafe set: the smallest barrier weight lambda* that keeps it below beta",
                 fontsize="small")
    ax.legend(fontsize="x-small", loc="best")
    return fig


def info(r) -> list[str]:
    lines = []
    for key in (k for k in r if k.startswith("barrier_")):
        g = r[key]
        lines.append(f"  {key[8:]:<14} lambda* = {g['lam']:.5g} (+- {g['tol']:.1g}): max_t rho_t(unsafe) = "
                     f"{np.max(g['mass']):.4g} <= beta = {g['beta']:g}   (lambda = 0: {np.max(r['free']['mass']):.4g})")
    if "particles" in r:
        p = r["particles"]
        j = int(np.argmax(p["mass"]))
        lines.append(f"  particles at lambda* = {p['lam']:.5g}: max_t fraction {p['mass'][j]:.4g} +- "
                     f"{p['mass_se'][j]:.2g}")
    return lines


KIND = Kind(
    name="barrier",
    required=("energy", "grid", "initial", "times", "unsafe"),
    top_keys=frozenset({"kind", "temperature", "energy", "grid", "initial", "times", "unsafe", "barrier",
                        "particles"}),
    tables=TABLES, check=check, run=run, plot=plot, info=info,
)
