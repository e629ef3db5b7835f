"""Figures a reader understands without the code: labelled axes, time units,
stopping times marked, error bands."""
from __future__ import annotations

import numpy as np

from fokkerplanck.theory.stopping import kl_argmin, tau_det

__all__ = ["plot_trajectory", "plot_kl", "plot_snapshots"]


def _plt():
    import matplotlib

    backend = matplotlib.get_backend().lower()
    # a GUI backend with no display to draw on: fall back to Agg (Jupyter's inline backend is kept)
    if backend not in ("agg", "pdf", "svg") and not backend.startswith("module://") and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _has_display() -> bool:
    import os

    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def plot_kl(ax, times, kl, *, label: str, stderr=None, ratio=None, flow: str = "", color=None, logscale=True):
    """KL(rho_t || rho*) against t on ``ax`` (log scale), with a +-2 stderr band and,
    for the deterministic flow, ``tau_det`` (R_t = 1) and the argmin of KL marked."""
    times, kl = np.asarray(times), np.asarray(kl)
    (line,) = ax.plot(times, kl, label=label, color=color)
    if stderr is not None:
        se = np.asarray(stderr)
        ax.fill_between(times, kl - 2 * se, kl + 2 * se, color=line.get_color(), alpha=0.25,
                        lw=0, label=f"{label} +- 2 s.e.")
    if ratio is not None:
        td = tau_det(times, ratio)
        if np.isfinite(td.time):
            ax.axvline(td.time, color=line.get_color(), ls="--", lw=1, label=f"tau_det = {td.time:.4g} (R_t = 1)")
        am = kl_argmin(times, kl, first_local=True)
        ax.plot([am.time], [np.interp(am.time, times, kl)], "o", color=line.get_color(), ms=5,
                label=f"argmin KL = {am.time:.4g}")
    ax.set_xlabel("time t")
    ax.set_ylabel("KL(rho_t || rho*)")
    if logscale and np.all(kl > 0):
        ax.set_yscale("log")
    ax.set_title(f"KL to the Gibbs law{': ' + flow if flow else ''}")
    ax.legend(fontsize="small")
    return ax


def plot_snapshots(fig, trajectory, indices=None):
    """Densities of a 1D or 2D trajectory at a few saved times, one panel each."""
    g = trajectory.grid
    idx = list(indices) if indices is not None else list(np.linspace(0, len(trajectory) - 1, 4).astype(int))
    axes = fig.subplots(1, len(idx), squeeze=False)[0]
    for ax, j in zip(axes, idx):
        rho = trajectory.densities[j]
        if g.ndim == 1:
            ax.plot(g.axes[0], rho, label="rho_t")
            if trajectory.energy_loaded:  # a file's user-code energy is not rebuilt: no rho* then
                ax.plot(g.axes[0], trajectory.gibbs, ls=":", label="rho*")
            ax.set_xlabel("x")
            ax.set_ylabel("density")
            ax.legend(fontsize="small")
        elif g.ndim == 2:
            (x0, x1), (y0, y1) = g.bounds
            im = ax.imshow(rho.T, origin="lower", extent=(x0, x1, y0, y1), cmap="viridis", aspect="equal")
            ax.set_xlabel("x_1")
            ax.set_ylabel("x_2")
            fig.colorbar(im, ax=ax, fraction=0.046, label="density")
        else:
            raise ValueError("snapshots are drawn for 1D and 2D grids only")
        ax.set_title(f"t = {trajectory.times[j]:.3g}")
    fig.suptitle(f"{trajectory.flow} ({trajectory.scheme.get('method')}), T = {trajectory.temperature:g}")
    return axes


def plot_trajectory(trajectory, path=None):
    """Two-row summary figure of a trajectory: snapshots, then KL and R_t against time.
    Saved to ``path`` when given; returns the figure."""
    plt = _plt()
    fig = plt.figure(figsize=(12, 7), layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    if trajectory.grid.ndim <= 2:
        plot_snapshots(top, trajectory)
    ax_kl, ax_r = bottom.subplots(1, 2)
    det = trajectory.flow == "continuity"
    R = trajectory.ratio()
    plot_kl(ax_kl, trajectory.times, trajectory.kl(), label="grid", ratio=R if det else None, flow=trajectory.flow)
    ax_r.plot(trajectory.times, R)
    ax_r.axhline(1.0, color="k", lw=0.8, ls=":")
    ax_r.set_xlabel("time t")
    ax_r.set_ylabel("R_t = T E[lap U] / E[|grad U|^2]")
    ax_r.set_title("R_t (deterministic flow: KL falls while R_t < 1)")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# ---------------------------------------------------------------------------------------
# figures of ``fpk run`` files
def plot_run(path, out=None, *, steps=None):
    """The figure of an ``fpk run`` file, by its kind: flows (the Figure-1 panel),
    composition, theorem.  ``steps``: particle step indices of the snapshots
    (flows; default the start, the predicted k* and two more).  Saved to ``out``
    when given; returns the figure."""
    from fokkerplanck.app.runner import read_run

    r = read_run(path)
    from fokkerplanck.app.experiments import plot_barrier, plot_ood, plot_vpfb

    fig = {"flows": _plot_flows, "composition": _plot_composition, "theorem": _plot_theorem,
           "ising": _plot_ising, "ood": plot_ood, "barrier": plot_barrier,
           "vpfb": plot_vpfb}[r["kind"]](
        path, r, steps)
    if out is not None:
        fig.savefig(out, dpi=110)
    return fig


def _load_trajectories(path):
    from fokkerplanck.results import Trajectory

    out = {}
    for g in ("fokker-planck", "continuity"):
        try:
            out[g] = Trajectory.load(path, g)
        except ValueError:
            pass
    return out


def _snapshot_row(fig, axes, trajectory, ens, cols, label):
    """Particles of ``ens`` at save indices ``cols`` over the grid density at the same time."""
    for ax, j in zip(axes, cols):
        t = ens["times"][j]
        X = ens["snapshots"][j]
        if trajectory is not None:
            k = int(np.argmin(np.abs(trajectory.times - t)))
            g = trajectory.grid
            if g.ndim == 2:
                ax.contour(*g.axes, trajectory.densities[k].T, levels=6, colors="k", linewidths=0.7)
                ax.set_aspect("equal")
            else:
                ax.plot(g.axes[0], trajectory.densities[k], color="k", lw=1, label="grid density")
        if X.shape[1] == 2:
            ax.scatter(X[:, 0], X[:, 1], s=1, alpha=0.5, color="C1" if "Langevin" in label else "C0")
            ax.set_xlabel("x_1")
            ax.set_ylabel("x_2")
        else:
            ax.hist(X[:, 0], bins=60, density=True, alpha=0.5, color="C1" if "Langevin" in label else "C0",
                    label="particles")
            ax.set_xlabel("x")
            ax.set_ylabel("density")
        ax.set_title(f"{label}: step {int(ens['steps'][j])}, t = {t:.3g}", fontsize="small")


def _plot_flows(path, r, steps):
    plt = _plt()
    tr = _load_trajectories(path)
    det, lang = r.get("deterministic-particles"), r.get("particles")
    stops = r.get("stopping", [])
    kstar = next((s for s in stops if s["name"] == "tau_det" and "step" in s), None)
    kmin = next((s for s in stops if s["name"] == "argmin KL" and "step" in s), None)
    rows = int(det is not None) + int(lang is not None)
    fig = plt.figure(figsize=(13, 3.4 * rows + 4), layout="constrained")
    subs = fig.subfigures(rows + 1, 1, height_ratios=[3.4] * rows + [4])
    subs = np.atleast_1d(subs)
    ref = det if det is not None else lang
    if ref is not None:
        all_steps = np.asarray(ref["steps"])
        want = steps if steps is not None else [0, kstar["step"] if kstar else all_steps[-1] // 3,
                                                 all_steps[-1] // 2, all_steps[-1]]
        cols = sorted({int(np.argmin(np.abs(all_steps - s))) for s in want})
    row = 0
    for ens, label, g in ((det, "deterministic", "continuity"), (lang, "Langevin", "fokker-planck")):
        if ens is None:
            continue
        axes = subs[row].subplots(1, len(cols), squeeze=False)[0]
        _snapshot_row(subs[row], axes, tr.get(g), ens, cols, label)
        row += 1
    ax_kl, ax_r = subs[-1].subplots(1, 2)
    cf = r.get("closed-form", {})
    if "fokker-planck" in tr:
        t = tr["fokker-planck"]
        plot_kl(ax_kl, t.times, t.kl(), label="Langevin, grid", color="C1", logscale=False)
    if "continuity" in tr:
        t = tr["continuity"]
        plot_kl(ax_kl, t.times, t.kl(), label="deterministic, grid", ratio=t.ratio(), color="C0", logscale=False)
        ax_r.plot(t.times, t.ratio(), color="C0", label="deterministic, grid")
    if lang is not None and "kl_knn" in lang:
        plot_kl(ax_kl, lang["times"], lang["kl_knn"], stderr=lang["kl_knn_se"], label="Langevin, particles (kNN)",
                color="C3", logscale=False)
    if det is not None:
        s = {k.split("/", 1)[1]: v for k, v in det.items() if k.startswith("summaries/")}
        if "kl" in s:
            plot_kl(ax_kl, det["times"], s["kl"], stderr=s["kl_se"], label="deterministic, particles (tracked)",
                    color="C2", logscale=False)
        ax_r.plot(det["times"], s["ratio"], color="C2", label="deterministic, particles")
        ax_r.fill_between(det["times"], s["ratio"] - 2 * s["ratio_se"], s["ratio"] + 2 * s["ratio_se"], color="C2",
                          alpha=0.25, lw=0, label="+- 2 s.e.")
    for key, style in (("kl_fokker_planck", "C1"), ("kl_continuity", "C0")):
        if key in cf:
            ax_kl.plot(cf["times"], cf[key], ls=":", color=style, lw=2, label=f"closed form ({key[3:]})")
    for s in stops:
        if s["name"].startswith("tau_Lang") and s.get("certified") and s["time"] <= ax_kl.get_xlim()[1]:
            ax_kl.axvline(s["time"], color="C1", ls="-.", lw=1, label=f"{s['name']} = {s['time']:.3g} (certified)")
    grid_kl = np.concatenate([t.kl() for t in tr.values()] + [np.ravel(v) for k, v in cf.items() if k != "times"] or [np.ones(1)])
    if np.all(grid_kl[np.isfinite(grid_kl)] > 0):  # log scale set by the exact curves; noisy estimates near 0 drop out
        ax_kl.set_yscale("log")
        ax_kl.set_ylim(0.5 * grid_kl.min(), 2 * grid_kl.max())
    ax_kl.set_title("KL(rho_t || rho*): grid (lines), particles (+- 2 s.e. bands)")
    ax_kl.legend(fontsize="x-small")
    ax_r.axhline(1.0, color="k", lw=0.8, ls=":")
    ax_r.set_ylim(0, 3)  # what matters is the crossing of 1; R_t grows without bound as the flow concentrates
    if kstar is not None:
        ax_r.axvspan(kstar["time"] - 2 * kstar["stderr"], kstar["time"] + 2 * kstar["stderr"], color="C2", alpha=0.15)
        ax_r.axvline(kstar["time"], color="C2", ls="--", lw=1)
        text = f"predicted k* = {kstar['step']} (tau_det = {kstar['time']:.4g} +- {kstar['stderr']:.2g})"
        if kmin is not None:
            text += f"\nstep of minimal KL = {kmin['step']}"
        ax_r.text(0.02, 0.97, text, transform=ax_r.transAxes, va="top", fontsize="small",
                  bbox=dict(facecolor="white", alpha=0.8, lw=0))
    ax_r.set_xlabel("time t")
    ax_r.set_ylabel("R_t = T E[lap U] / E[|grad U|^2]")
    ax_r.set_title("R_t of the deterministic flow (tau_det: R_t = 1)")
    ax_r.legend(fontsize="x-small", loc="lower right")
    return fig


def _plot_composition(path, r, steps):
    from fokkerplanck.grid import Grid

    plt = _plt()
    names = [k for k in ("A", "B", "conjunction", "disjunction", "negation") if k in r]
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


def _plot_ising(path, r, steps):
    """Exact master equation against jump particles: KL and the Dirichlet form, the
    magnetisation law at three times, the mean energy."""
    plt = _plt()
    ex, pa = r["exact"], r["particles"]
    t = ex["times"]
    fig, (ax_kl, ax_m, ax_e) = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    ax_kl.semilogy(t, ex["kl"], "k-", label="KL(p_t || pi), exact")
    ax_kl.semilogy(t, ex["dirichlet"], "C3--", label="Dirichlet form D(p_t) = -dKL/dt")
    kl_p = pa["kl_plugin"] - pa["kl_plugin_bias"]
    ax_kl.semilogy(t, np.where(kl_p > 0, kl_p, np.nan), "C0o", ms=3, label="particles: plug-in KL - (K-1)/2N")
    ax_kl.set_xlabel("time t")
    ax_kl.set_title(f"spectral gap {ex['spectral_gap']:.4g}; identity residual {ex['identity_residual']:.1e}")
    ax_kl.legend(fontsize="x-small")
    sup = ex["magnetisation_support"]
    for j, col in zip(np.unique(np.linspace(1, t.size - 1, 3).astype(int)), ("C0", "C1", "C2")):
        ax_m.plot(sup, ex["magnetisation_law"][j], "-", color=col, lw=1, label=f"exact t={t[j]:.3g}")
        ax_m.errorbar(sup, pa["magnetisation_freq"][j], yerr=pa["magnetisation_se"][j], fmt="o", color=col, ms=3,
                      label=f"{pa['n']} particles")
    ax_m.set_xlabel("magnetisation")
    ax_m.set_ylabel("probability")
    ax_m.legend(fontsize="x-small")
    ax_e.plot(t, ex["mean_energy"], "k-", label="exact")
    ax_e.errorbar(t, pa["mean_energy"], yerr=pa["mean_energy_se"], fmt="o", ms=3, label="particles")
    ax_e.set_xlabel("time t")
    ax_e.set_ylabel("mean energy")
    ax_e.legend(fontsize="x-small")
    return fig


def _plot_theorem(path, r, steps):
    plt = _plt()
    tr = _load_trajectories(path)
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
