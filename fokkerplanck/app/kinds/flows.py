"""``kind = "flows"`` (the default): both density flows of one energy from one initial
law, on the grid and with particles.

Groups: one per grid flow (``fokker-planck``, ``continuity``) in the Trajectory
layout; ``particles`` and ``deterministic-particles`` with ``times``, ``steps``,
``snapshots`` (at most ``keep`` particles per save, default 2000), the summaries and,
for Langevin, ``kl_knn``/``kl_knn_se``; ``closed-form`` (quadratic energy, Gaussian
start); ``wasserstein`` (1D, or a ``[wasserstein]`` table); the root attr ``stopping``
(JSON list of stopping times with their sources).
"""
from __future__ import annotations

import json
import warnings

import numpy as np

import particles
from fokkerplanck import densities as Dn, diagnostics as D, energies as E
from fokkerplanck._core.validate import check_memory, positive_float, positive_int
from fokkerplanck.app.kinds.base import Kind
from fokkerplanck.app.plots import _plt, load_trajectories, plot_kl
from fokkerplanck.flows.continuity import Continuity, forward_lagrangian
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.theory.stopping import (bakry_emery, kl_argmin, kl_reaches, observed_rate, spectral_gap_estimate,
                                          tau_det, tau_lang)
from fokkerplanck.wasserstein import clean_density, pooled, w2_grids, w2_linearised, w2_samples_grid, w2_samples_grid_nd
from particles import estimators as est

__all__ = ["KIND", "stopping_summary"]

TABLES = {
    "fokker_planck": frozenset({"method", "tol", "dt", "normalise", "refine"}),
    "continuity": frozenset({"method", "reconstruction", "dt", "cfl", "rtol", "atol", "normalise", "refine"}),
    "particles": frozenset({"n", "dt", "seed", "method", "keep", "precision"}),
    "deterministic_particles": frozenset({"n", "dt", "seed", "method", "keep"}),
    "stopping": frozenset({"eps"}),
    "wasserstein": frozenset({"exact_cells", "particles"}),
}


def save_schedule(times, dt):
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


def check(spec) -> None:
    cfg, grid, times = spec.cfg, spec.grid, spec.times
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
            _, n_steps = save_schedule(times, dt)
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
    for table in ("fokker_planck", "continuity"):
        if table in cfg:
            check_memory(8.0 * grid.size * (times.size + 8), f"[{table}]: {times.size} densities on {grid.size} cells")


def _write_ensemble(g, ens, keep: int):
    g.attrs["meta"] = json.dumps(ens.meta, default=str)
    g["times"], g["steps"], g["alive"] = ens.times, ens.steps, ens.alive
    n = ens.positions.shape[1]
    idx = np.linspace(0, n - 1, min(n, keep)).astype(int)
    g["snapshots"] = ens.positions[:, idx]
    for k, v in ens.summaries.items():
        g[f"summaries/{k}"] = v


def run(spec, f, *, progress=True, log=print) -> dict:
    cfg, T, U, grid, rho0, times = spec.cfg, spec.temperature, spec.energy, spec.grid, spec.initial, spec.times
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
    if ("continuity" in cfg or "deterministic_particles" in cfg) and not U.has_kernels:
        log("deterministic flow: the energy has no numba kernels, so no compiled characteristics for its exact "
            "KL; the deterministic particles' tracked KL stands in")
    elif "continuity" in cfg or "deterministic_particles" in cfg:
        log("deterministic flow: exact KL and R_t by forward characteristics of the initial law ...")
        res["continuity-exact"] = _exact_deterministic(U, rho0, grid, times, T, log_z)
        g = f.create_group("continuity-exact")
        ex = res["continuity-exact"]
        g.attrs["description"] = ("KL(rho_t || rho*), E[lap U], E[|grad U|^2] and R_t of the deterministic flow as "
                                  "integrals over the initial law along forward characteristics (exact to the "
                                  "quadrature of rho0 and the ODE tolerance; never needs rho_t on the grid)")
        g.attrs["nodes"] = ex.n_nodes
        g["times"], g["kl"], g["e_lap"], g["e_grad2"], g["ratio"] = times, ex.kl, ex.e_lap, ex.e_grad2, ex.ratio
    if "particles" in cfg:
        p = cfg["particles"]
        dt = float(p["dt"])
        save_every, n_steps = save_schedule(times, dt)
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
        # 1 where the estimate is within two standard errors of 0: below the estimator's resolution
        g["kl_knn_below_resolution"] = [int(e.below_resolution) for e in kl]
        res["particles"] = ens
    if "deterministic_particles" in cfg:
        p = cfg["deterministic_particles"]
        dt = float(p["dt"])
        save_every, n_steps = save_schedule(times, dt)
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
    with warnings.catch_warnings():
        # the saves whose grid mass is off are marked by validity() in the file, the figure and
        # fpk info; the solver has warned once already
        warnings.filterwarnings("ignore", message=".*grid mass is not 1", category=RuntimeWarning)
        stops = stopping_summary(res, U, cfg, T, fokker_planck=fp)
    f.attrs["stopping"] = json.dumps(_finite_json(stops), allow_nan=False)
    for s in stops:
        log(f"  {s['name']}: t = {s['time'] if s['time'] is None else format(s['time'], '.6g')}" + (f" +- {s['stderr']:.2g}" if s.get("stderr") else "")
            + (f", step {s['step']}" if "step" in s else "") + f"  ({s['source']})")
    return res


EXACT_NODES = {1: 4000, 2: 144, 3: 34}   # midpoint nodes per axis of a Gaussian initial law (mean +- 6 sd)


def _exact_deterministic(U, rho0, grid, times, T, log_z):
    """The deterministic flow's KL, E[lap U], E[|grad U|^2] and R_t from the initial law
    (:func:`~fokkerplanck.flows.continuity.forward_lagrangian`): a Gaussian by the midpoint
    rule on its own box (the whole law, not the grid's window), other laws on the run's
    grid.  The eight Gaussians (144^2 nodes): within 0.25 % of a 4x finer rule up to t = 3."""
    if isinstance(rho0, Dn.Gaussian):
        nodes = EXACT_NODES.get(grid.ndim, 20)
        return forward_lagrangian(U, rho0, times, temperature=T, log_partition=log_z, rule="midpoint", nodes=nodes)
    return forward_lagrangian(U, Dn.GridDensity(grid, rho0.on_grid(grid)), times, temperature=T, log_partition=log_z)


def _write_w2(g, res, grid, times) -> None:
    """1D runs: W2 of each grid flow to the Gibbs law (exact, quantile functions), and of
    the Langevin particles to the Fokker-Planck density at the same time (with a bootstrap
    standard error)."""
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


def _finite_json(v):
    """Plain JSON: a non-finite number (a time never reached, an open bracket) becomes null."""
    if isinstance(v, dict):
        return {k: _finite_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_json(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def stopping_summary(res: dict, U, cfg, T, *, fokker_planck=None) -> list[dict]:
    """The stopping times of a flows run, each with its source: ``tau_det`` and
    ``argmin KL`` of every deterministic result (grid and particles, with the
    step index ``k*`` for the particles' dt and the step of minimal tracked KL),
    and ``tau_Lang(eps)`` from the Fokker-Planck result (spectral gap and observed
    rate: estimated; Bakry-Emery when U is convex on the box: certified)."""
    out = []
    if "continuity-exact" in res:
        ex = res["continuity-exact"]
        for st in (tau_det(ex.times, ex.ratio, source="exact R_t"),
                   kl_argmin(ex.times, ex.kl, source="exact KL")):
            out.append({"name": "tau_det" if "R_t" in st.source else "argmin KL", **st.as_dict(),
                        "source": f"{st.source} (forward characteristics of rho0, {ex.n_nodes} nodes)"})
    if "continuity" in res:
        tr = res["continuity"]
        valid = tr.valid()
        n = int(np.argmin(valid)) if not valid.all() else valid.size   # the valid prefix of the saves
        sts = [tau_det(tr.times[:n], tr.ratio()[:n], source="grid R_t")] if n else []
        sts.append(kl_argmin(tr.times, tr.kl(), valid=valid, source="grid KL"))
        # an event inside the valid prefix of the saves: a crossing of R_t = 1 within its last
        # interval counts (index < n); a KL "still falling at the last valid save" is no minimum
        def inside(st):
            return np.isfinite(st.time) and st.index < (n if "R_t" in st.source else n - 1)

        reported = [st for st in sts if inside(st)]
        for st in reported:
            out.append({"name": "tau_det" if "R_t" in st.source else "argmin KL", **st.as_dict(),
                        "source": f"{st.source} ({tr.scheme['method']}, valid saves only)"})
        if len(reported) < 2:
            why = (f"the grid densities are not valid (unresolved or mass off) from t = {tr.times[n]:.4g} on, "
                   "before the event" if n < valid.size else
                   f"the event is not within the saves (up to t = {tr.times[-1]:.4g})")
            out.append({"name": "grid tau_det/argmin", "time": None, "source": f"grid ({tr.scheme['method']})",
                        "note": f"not reported: {why}"})
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
                            "c_ls": c.value, "note": st.note, "source": repr(c)})
            seen = kl_reaches(tr.times, tr.kl(), float(eps), valid=tr.valid(), source="grid KL")
            out.append({"name": f"KL <= {float(eps):g} observed", **seen.as_dict(),
                        "source": "grid Fokker-Planck KL (first save at or below eps, log-interpolated)"})
    return out


# ---------------------------------------------------------------------------------------
# the figure and the fpk info lines
def _snapshot_row(fig, axes, trajectory, ens, cols, label):
    """Particles of ``ens`` at save indices ``cols`` over the grid density at the same time."""
    for ax, j in zip(axes, cols):
        t = ens["times"][j]
        X = ens["snapshots"][j]
        if trajectory is not None:
            k = int(np.argmin(np.abs(trajectory.times - t)))
            g = trajectory.grid
            if g.ndim == 2:
                d = trajectory.densities[k]
                # levels relative to the peak: round-off in the far field is never contoured
                ax.contour(*g.axes, d.T, levels=np.nanmax(d) * np.linspace(0.05, 0.9, 6), colors="k", linewidths=0.7)
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


def _setting(cfg: dict) -> str:
    """The figure's title: the energy, the initial law, the grid and the temperature."""
    e, i, g = cfg.get("energy", {}), cfg.get("initial", {}), cfg.get("grid", {})
    init = i.get("type", "?")
    if init == "Gaussian":
        init = f"N({i.get('mean')}, {i.get('cov')})"
    cells = g.get("cells")
    return (f"{e.get('type', 'energy')} from {init}; grid {cells} cells on {g.get('bounds')}; "
            f"T = {cfg.get('temperature', 1.0):g}")


def plot(path, r, steps):
    with warnings.catch_warnings():  # invalid saves are left out of the figure and counted in its legend
        warnings.filterwarnings("ignore", message=".*grid mass is not 1", category=RuntimeWarning)
        return _plot(path, r, steps)


def _plot(path, r, steps):
    """The Figure-1 panel: particle snapshots over the grid densities, then KL and R_t
    with the stopping times (``steps``: particle step indices of the snapshots; default
    the start, the predicted k* and two more)."""
    plt = _plt()
    tr = load_trajectories(path)
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
    ex = r.get("continuity-exact")
    if "fokker-planck" in tr:
        t = tr["fokker-planck"]
        plot_kl(ax_kl, t.times, t.kl(), label="Langevin, grid", color="C1", logscale=False, valid=t.valid())
    if ex is not None:
        plot_kl(ax_kl, ex["times"], ex["kl"], label="deterministic, exact (characteristics)", ratio=ex["ratio"],
                color="C0", logscale=False)
        ax_r.plot(ex["times"], ex["ratio"], color="C0", label="deterministic, exact")
    if "continuity" in tr:
        t = tr["continuity"]
        valid = t.valid()
        plot_kl(ax_kl, t.times, t.kl(), label="deterministic, grid", ratio=None if ex is not None else t.ratio(),
                color="C9", logscale=False, valid=valid)
        ax_r.plot(t.times, np.where(valid, t.ratio(), np.nan), color="C9", ls="--", label="deterministic, grid (valid)")
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
    exact_curves = ([t.kl()[t.valid()] for t in tr.values()] + [np.ravel(v) for k, v in cf.items() if k != "times"]
                    + ([np.asarray(ex["kl"])] if ex is not None else []))
    grid_kl = np.concatenate(exact_curves or [np.ones(1)])
    if grid_kl.size and np.all(grid_kl[np.isfinite(grid_kl)] > 0):  # log scale set by the exact curves
        ax_kl.set_yscale("log")
        ax_kl.set_ylim(0.5 * grid_kl.min(), 2 * grid_kl.max())
    ax_kl.set_title("KL(rho_t || rho*): exact and valid grid values (lines), particles (+- 2 s.e.)")
    ax_kl.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)  # off the data
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
    fig.suptitle(_setting(r.get("config", {})), fontsize="small")
    ax_r.legend(fontsize="x-small", loc="lower right")
    return fig


def info(r) -> list[str]:
    lines = []
    for s in r.get("stopping", []):
        extra = "".join(f", {k} {s[k]:.3g}" if isinstance(s[k], float) else f", {k} {s[k]}"
                        for k in ("stderr", "step") if k in s)
        br = s.get("bracket")
        if br and "stderr" not in s and None not in br and np.all(np.isfinite(br)) and br[0] < br[1]:
            extra += f", within [{s['bracket'][0]:.4g}, {s['bracket'][1]:.4g}]"
        t = "-" if s["time"] is None else format(s["time"], ".6g")
        lines.append(f"  {s['name']:<22} {'t = ' + t + extra:<40} [{s['source']}]")
        if s.get("note"):
            lines.append(f"  {'':<22} note: {s['note']}")
    ex = r.get("continuity-exact")
    if ex is not None:
        lines.append("  deterministic flow, exact (forward characteristics of rho0):")
        lines.append(f"  {'t':>10} {'KL':>12} {'R_t':>10}")
        for j in np.unique(np.linspace(0, ex["times"].size - 1, min(ex["times"].size, 6)).astype(int)):
            lines.append(f"  {ex['times'][j]:10.4g} {ex['kl'][j]:12.6g} {ex['ratio'][j]:10.4g}")
    if "wasserstein" in r:
        w = r["wasserstein"]
        cols = [k for k in w if k != "times" and not k.endswith("_se") and np.ndim(w[k]) == 1]
        lines.append("  W2 (exact in 1D; 2D/3D: linearised, and exact transport of pooled cells): " + ", ".join(cols))
        for j in np.unique(np.linspace(0, w["times"].size - 1, min(w["times"].size, 6)).astype(int)):
            vals = "  ".join(f"{w[k][j]:10.5g}" + (f" +- {w[k + '_se'][j]:.2g}" if k + "_se" in w else "") for k in cols)
            lines.append(f"  t = {w['times'][j]:<8.4g} {vals}")
        if "exact_cells" in w:
            lines.append(f"  (exact transport of the cell masses pooled to <= {w['exact_cells']} cells per axis; "
                         "linearised at the midpoint law on the full grid: each exact in its own regime, see "
                         "fokkerplanck.wasserstein)")
    lines.append("  (fpk info FILE --group fokker-planck|continuity for a trajectory's table)")
    return lines


KIND = Kind(
    name="flows",
    required=("energy", "grid", "initial", "times"),
    top_keys=frozenset({"kind", "temperature", "energy", "grid", "initial", "times", "fokker_planck", "continuity",
                        "particles", "deterministic_particles", "stopping", "wasserstein"}),
    tables=TABLES, check=check, run=run, plot=plot, info=info, attrs={"stopping": list},
)
