"""Figures a reader understands without the code: labelled axes, time units,
stopping times marked, error bands."""
from __future__ import annotations

import os

import numpy as np

from fokkerplanck.results import Trajectory
from fokkerplanck.theory.stopping import kl_argmin, tau_det
from particles.estimators import RESOLUTION_SIGMAS

__all__ = ["drawn_values", "load_trajectories", "plot_kl", "plot_snapshots", "plot_trajectory", "snapshot_indices"]


def _plt():
    """matplotlib.pyplot, on a backend that can draw here."""
    # local: matplotlib costs ~0.5 s of every fpk start-up; only the figures need it
    import matplotlib

    backend = matplotlib.get_backend().lower()
    # a GUI backend with no display to draw on: fall back to Agg (Jupyter's inline backend is kept)
    if backend not in ("agg", "pdf", "svg") and not backend.startswith("module://") and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def drawn_values(kl, *, valid=None, stderr=None):
    """What a KL curve may draw: ``(line, upper)``.  ``line`` holds the values that are KL
    values (NaN elsewhere, so the line breaks instead of joining across them): finite, valid
    (``valid`` mask, e.g. ``Trajectory.valid()``) and, for an estimate with ``stderr``, above
    its resolution (``KL - 2 s.e. > 0``).  ``upper`` holds ``max(KL, 0) + 2 s.e.`` where an
    estimate is below its resolution (an upper bound, NaN elsewhere), as
    :attr:`particles.estimators.Estimate.upper_bound`."""
    kl = np.asarray(kl, dtype=float)
    ok = np.isfinite(kl)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    upper = np.full(kl.shape, np.nan)
    if stderr is not None:  # the estimators' rule and bound (particles.estimators.Estimate)
        se = np.asarray(stderr, dtype=float)
        below = ok & (kl - RESOLUTION_SIGMAS * se <= 0)
        upper[below] = (np.maximum(kl, 0.0) + RESOLUTION_SIGMAS * se)[below]
        ok &= ~below
    return np.where(ok, kl, np.nan), upper


def plot_kl(ax, times, kl, *, label: str, stderr=None, ratio=None, flow: str = "", color=None, logscale=True,
            valid=None):
    """KL(rho_t || rho*) against t on ``ax`` (log scale), with a +-2 stderr band and,
    for the deterministic flow, ``tau_det`` (R_t = 1) and the argmin of KL marked.

    Only KL values are drawn as a line (:func:`drawn_values`): saves that are not valid
    (``valid``) are left out and counted in the legend; a particle estimate below its
    resolution is drawn as an upper-bound marker, never as a plunge."""
    times, kl = np.asarray(times, dtype=float), np.asarray(kl, dtype=float)
    line_y, upper = drawn_values(kl, valid=valid, stderr=stderr)
    dropped = int(np.sum(~np.isfinite(line_y) & ~np.isfinite(upper)))
    text = label + (f" ({dropped} of {kl.size} saves not valid: omitted)" if dropped else "")
    (line,) = ax.plot(times, line_y, label=text, color=color)
    if stderr is not None:
        se = np.asarray(stderr, dtype=float)
        band = np.isfinite(line_y)
        ax.fill_between(times, np.where(band, kl - 2 * se, np.nan), np.where(band, kl + 2 * se, np.nan),
                        color=line.get_color(), alpha=0.25, lw=0, label=f"{label} +- 2 s.e.")
    if np.isfinite(upper).any():
        ax.plot(times, upper, "v", color=line.get_color(), ms=4, ls="none",
                label=f"{label}: below resolution, upper bound max(KL, 0) + 2 s.e.")
    if ratio is not None and np.isfinite(line_y).any():
        ok = np.isfinite(line_y)
        td = tau_det(times[ok], np.asarray(ratio, dtype=float)[ok])
        if np.isfinite(td.time):
            ax.axvline(td.time, color=line.get_color(), ls="--", lw=1, label=f"tau_det = {td.time:.4g} (R_t = 1)")
        am = kl_argmin(times, kl, valid=ok)
        if np.isfinite(am.time):
            ax.plot([am.time], [np.interp(am.time, times[ok], kl[ok])], "o", color=line.get_color(), ms=5,
                    label=f"argmin KL = {am.time:.4g}")
    ax.set_xlabel("time t")
    ax.set_ylabel("KL(rho_t || rho*)")
    shown = np.concatenate([line_y[np.isfinite(line_y)], upper[np.isfinite(upper)]])
    if logscale and shown.size and np.all(shown > 0):
        ax.set_yscale("log")
    ax.set_title(f"KL to the Gibbs law{': ' + flow if flow else ''}")
    ax.legend(fontsize="small")
    return ax


def snapshot_indices(times, n: int = 4) -> list[int]:
    """Saves to draw: the start, the end, and between them times spaced geometrically (where
    the flows change fastest, early on), each the nearest save; evenly spaced when the
    saves do not start at 0 or are too few."""
    t = np.asarray(times, dtype=float)
    if t.size <= n or t[0] != 0 or t[-1] <= 0 or t[1] <= 0:
        return sorted({int(i) for i in np.linspace(0, t.size - 1, min(n, t.size)).astype(int)})
    want = np.geomspace(t[1], t[-1], n - 1)
    return sorted({0, *(int(np.argmin(np.abs(t - w))) for w in want)})


def plot_snapshots(fig, trajectory, indices=None):
    """Densities of a 1D or 2D trajectory at a few saved times, one panel each."""
    g = trajectory.grid
    idx = list(indices) if indices is not None else snapshot_indices(trajectory.times)
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
    fig.suptitle(f"{trajectory.flow} ({trajectory.scheme.get('method')}), T = {trajectory.temperature:g}, "
                 f"grid {' x '.join(map(str, g.cells))} on {[tuple(b) for b in g.bounds]}")
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
    valid = trajectory.valid()
    plot_kl(ax_kl, trajectory.times, trajectory.kl(), label="grid", ratio=R if det else None, flow=trajectory.flow,
            valid=valid)
    ax_r.plot(trajectory.times, np.where(valid, R, np.nan))
    ax_r.axhline(1.0, color="k", lw=0.8, ls=":")
    ax_r.set_xlabel("time t")
    ax_r.set_ylabel("R_t = T E[lap U] / E[|grad U|^2]")
    ax_r.set_title("R_t (deterministic flow: KL falls while R_t < 1)" if det else
                   "R_t = T E[lap U] / E[|grad U|^2] along the Langevin flow")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# ---------------------------------------------------------------------------------------
# figures of ``fpk run`` files: each kind draws its own (fokkerplanck.app.kinds)
def load_trajectories(path) -> dict:
    """The grid trajectories (``fokker-planck``, ``continuity``) of an ``fpk run`` file."""
    out = {}
    for g in ("fokker-planck", "continuity"):
        try:
            out[g] = Trajectory.load(path, g)
        except ValueError:
            pass
    return out
