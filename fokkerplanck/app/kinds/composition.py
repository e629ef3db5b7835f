"""``kind = "composition"``: the paper's experts A and B and their conjunction,
disjunction and negation; Langevin samples of each, counted near the A and B centres
and held against the grid Fokker-Planck law at the same time and the Gibbs law
(:func:`fokkerplanck.theory.composition.composition_experiment` with the config table
``[composition]``: ``n``, ``dt``, ``time``, ``seed``, ``radius``, ``negation``,
``sigma``, from ``[initial]`` on ``[grid]``).  One group per energy; root attrs
``grid``, ``centres`` (JSON), ``radius``, ``n``.
"""
from __future__ import annotations

import json

import numpy as np

from fokkerplanck._core.validate import check_memory, positive_float, positive_int
from fokkerplanck.app.kinds.base import Kind
from fokkerplanck.app.plots import _plt
from fokkerplanck.grid import Grid
from fokkerplanck.theory.composition import composition_experiment

__all__ = ["KIND"]

NAMES = ("A", "B", "conjunction", "disjunction", "negation")


def check(spec) -> None:
    c = spec.cfg["composition"]
    n = positive_int(c.get("n", 5000), "[composition] n")
    for k in ("dt", "time", "radius", "sigma"):
        if k in c:
            positive_float(c[k], f"[composition] {k}")
    check_memory(8.0 * n * 2 * 4, f"[composition] n = {n} particles")


def run(spec, f, *, progress=True, log=print) -> dict:
    grid = spec.grid
    out = composition_experiment(grid, spec.initial, temperature=spec.temperature, log=log, **spec.cfg["composition"])
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


def plot(path, r, steps):
    plt = _plt()
    names = [k for k in NAMES if k in r]
    grid = Grid.from_spec(r["grid"])
    (x0, x1), (y0, y1) = grid.bounds
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 4.2), layout="constrained", squeeze=False)
    C = {k: np.asarray(v) for k, v in r["centres"].items()}
    for ax, name in zip(axes[0], names):
        g = r[name]
        ax.imshow(g["gibbs"].T, origin="lower", extent=(x0, x1, y0, y1), cmap="Greys", aspect="equal")
        X = g["samples"]
        ax.scatter(X[:, 0], X[:, 1], s=1, alpha=0.4, color="C0")
        for key, marker, color in (("A", "x", "C3"), ("B", "+", "C2")):
            ax.scatter(C[key][:, 0], C[key][:, 1], marker=marker, s=60, color=color, label=f"{key} centres")
        ax.set_title(f"{name}\nnear A: {g['count_A']} (FP {g['expected_A']:.0f}, Gibbs {g['expected_A_gibbs']:.0f})"
                     f"\nnear B: {g['count_B']} (FP {g['expected_B']:.0f}, Gibbs {g['expected_B_gibbs']:.0f})",
                     fontsize="small")
        ax.set_xlabel("x_1")
        ax.set_ylabel("x_2")
    axes[0][0].legend(fontsize="x-small", loc="lower left")
    fig.suptitle(f"{r['n']} Langevin samples per energy (dots) over exp(-U)/Z (grey); counts within "
                 f"{r['radius']:g} of the centres")
    return fig


def info(r) -> list[str]:
    lines = []
    for name in NAMES:
        if name in r:
            g = r[name]
            lines.append(f"  {name:<12} near A: {g['count_A']:>5} (Fokker-Planck {g['expected_A']:8.1f}, Gibbs "
                         f"{g['expected_A_gibbs']:8.1f})   near B: {g['count_B']:>5} (Fokker-Planck "
                         f"{g['expected_B']:8.1f}, Gibbs {g['expected_B_gibbs']:8.1f})")
    return lines


KIND = Kind(
    name="composition",
    required=("grid", "initial", "composition"),
    top_keys=frozenset({"kind", "temperature", "grid", "initial", "composition"}),
    tables={"composition": frozenset({"n", "dt", "time", "seed", "radius", "negation", "sigma"})},
    check=check, run=run, plot=plot, info=info,
    attrs={"centres": dict, "grid": dict}, scalars=("radius", "n"),
)
