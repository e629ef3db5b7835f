"""``kind = "ood"``: the energy of a data set (``[data]``: a
:class:`~fokkerplanck.energies.KDE` of ``n`` samples of ``[energy]``'s law with
``bandwidth``; without ``[data]`` the energy itself) scores in-distribution samples
against out-of-distribution sets (``[ood] sets``: names in :data:`OOD_SETS`, an
explicit table: a config never names code) by S1-S3 (:mod:`fokkerplanck.theory.ood`);
AUROC with DeLong errors.  The grid gives the data energy's KL to the true law and its
``log Z`` (0 for a KDE).  Groups ``data`` and ``ood`` (its attr ``table``: JSON).
"""
from __future__ import annotations

import json

import numpy as np

from fokkerplanck import energies as E
from fokkerplanck._core.validate import positive_float, positive_int
from fokkerplanck.app.kinds.base import Kind
from fokkerplanck.app.plots import _plt

__all__ = ["KIND", "OOD_SETS"]


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
TABLES = {"ood": frozenset({"n", "seed", "dt", "tau", "sets", "shift", "scale"}),
          "data": frozenset({"n", "bandwidth", "seed"})}


def check(spec) -> None:
    cfg, U = spec.cfg, spec.energy
    o, d = cfg.get("ood", {}), cfg.get("data", {})
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


def run(spec, f, *, progress=True, log=print):
    # local: scipy.stats (through fokkerplanck.theory.ood) costs ~0.4 s of every fpk start-up
    from fokkerplanck.theory.ood import auroc, scores

    cfg, T, U, grid = spec.cfg, spec.temperature, spec.energy, spec.grid
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


def plot(path, r, steps):
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


def info(r) -> list[str]:
    lines = []
    if "data" in r:
        lines.append(f"  data energy: KDE of {len(r['data']['points'])} points, h = {r['data']['bandwidth']:g}; "
                     f"KL(model || truth) = {r['data']['kl_model_to_truth']:.4g}")
    for name, row in json.loads(r["ood"]["table"]).items():
        lines.append(f"  AUROC {name:<10} " + "  ".join(f"{k} {v['auroc']:.4f} +- {v['se']:.4f}"
                                                        for k, v in row.items()))
    return lines


KIND = Kind(
    name="ood",
    required=("energy", "grid", "ood"),
    top_keys=frozenset({"kind", "temperature", "energy", "grid", "ood", "data"}),
    tables=TABLES, check=check, run=run, plot=plot, info=info,
)
