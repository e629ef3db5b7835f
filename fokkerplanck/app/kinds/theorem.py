"""``kind = "theorem"``: the deterministic flow started at ``rho*``.  The theorem's
numbers (:func:`fokkerplanck.theory.theorem.nonstationarity_check`) as the root attr
``theorem`` (JSON), and the trajectories from ``rho*`` of the deterministic flow
(``continuity``: Lagrangian) and of Fokker-Planck (``fokker-planck``).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict

import numpy as np

from fokkerplanck import densities as Dn
from fokkerplanck.app.kinds.base import Kind
from fokkerplanck.app.plots import _plt, load_trajectories
from fokkerplanck.flows.continuity import Continuity
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.theory.theorem import nonstationarity_check

__all__ = ["KIND"]


def run(spec, f, *, progress=True, log=print):
    T, U, grid, times = spec.temperature, spec.energy, spec.grid, spec.times
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


def plot(path, r, steps):
    plt = _plt()
    tr = load_trajectories(path)
    th = r["theorem"]
    det = tr["continuity"]
    fig, (ax_h, ax_kl, ax_r) = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    g = det.grid
    U, T = det.energy, det.temperature
    h = U.residual(g.points, T).reshape(g.shape)
    if g.ndim == 2:
        (x0, x1), (y0, y1) = g.bounds
        im = ax_h.imshow((h * det.gibbs).T, origin="lower", extent=(x0, x1, y0, y1), cmap="RdBu_r", aspect="equal",
                         vmin=-np.abs(h * det.gibbs).max(), vmax=np.abs(h * det.gibbs).max())
        fig.colorbar(im, ax=ax_h, fraction=0.046, label="rho* h / T = d_t rho at t = 0")
        ax_h.set_xlabel("x_1")
        ax_h.set_ylabel("x_2")
    else:
        ax_h.plot(g.axes[0], det.gibbs * h / T, label="rho* h / T = d_t rho at t = 0")
        ax_h.axhline(0, color="k", lw=0.8)
        ax_h.set_xlabel("x")
        ax_h.legend(fontsize="small")
    ax_h.set_title("the flow leaves rho*: red gains mass, blue loses it")
    t = det.times[1:]
    ax_kl.loglog(t, det.kl()[1:], "o-", ms=3, label="KL(rho_t || rho*), Lagrangian")
    ax_kl.loglog(t, th["coefficient_exact"] * t**2, "k--", label="(t^2 / 2) E[(h/T)^2]")
    ax_kl.set_xlabel("time t")
    ax_kl.set_ylabel("KL")
    ax_kl.set_title(f"KL grows like t^2: coefficient off by {th['coefficient_rel_error']:.1e}")
    ax_kl.legend(fontsize="small")
    ax_r.plot(det.times, det.ratio(), label="deterministic flow")
    if "fokker-planck" in tr:
        ax_r.plot(tr["fokker-planck"].times, tr["fokker-planck"].ratio(), ls=":", label="Fokker-Planck (stays 1)")
    ax_r.axhline(1.0, color="k", lw=0.8, ls=":")
    ax_r.set_xlabel("time t")
    ax_r.set_ylabel("R_t")
    ax_r.set_title(f"R_0 - 1 = {th['ratio_at_target'] - 1:.1e}")
    ax_r.legend(fontsize="small")
    return fig


def info(r) -> list[str]:
    return [f"  {k:<28} {v:.6g}" for k, v in r.get("theorem", {}).items()]


KIND = Kind(
    name="theorem",
    required=("energy", "grid", "times"),
    top_keys=frozenset({"kind", "temperature", "energy", "grid", "times"}),
    run=run, plot=plot, info=info, attrs={"theorem": dict},
)
