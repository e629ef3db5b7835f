"""``kind = "lvebm"``: a latent-variable energy-based model on a grid of ``(x, z)``
(:class:`~fokkerplanck.theory.latent.LatentEBM`): ``[model]`` the polynomial features
(``powers``, ``scale``), the parameters ``theta`` and ``x_dim``; ``[data]`` points drawn
exactly from the model at ``[data] theta``.

Groups: ``data`` (the points, the exact log-likelihood under both parameter sets, the
x-marginals); ``joint`` and ``conditional`` (the two pools' exact flows at ``[model] theta``
from ``[initial]`` (the conditional ones from its z-marginal), KL and W2 against the decay
bounds, with the convexity constant certified or estimated, and the particle pools' k-NN KL
with standard errors); ``elbo`` (per data point: the exact log p(x), the gap of the best
Gaussian posterior and of the conditional pool at the end); ``training`` (the two-loop
particle run and the exact maximum likelihood).
"""
from __future__ import annotations

import json

import numpy as np

from fokkerplanck import densities as Dn
from fokkerplanck._core.validate import check_memory, positive_float, positive_int
from fokkerplanck.app.kinds.base import Kind
from fokkerplanck.app.plots import _plt, plot_kl
from fokkerplanck.theory import latent as L
from particles.estimators import Estimate, kl_knn
from particles.integrators import LANGEVIN_SCHEMES
from particles.options import check_seed

__all__ = ["KIND"]

TABLES = {"model": frozenset({"powers", "scale", "theta", "x_dim"}),
          "data": frozenset({"theta", "n", "seed"}),
          "particles": frozenset({"n_joint", "n_conditional", "dt", "method", "seed", "points"}),
          "training": frozenset({"lr", "steps", "inner", "n_joint", "n_conditional", "dt", "trainable", "seed",
                                 "method"})}
# the conditional pools of all data points are one stacked run: with MALA one accept/reject
# covers all blocks of a particle, and its acceptance falls with their number (measured 0.5 at
# 32 blocks, 0.16 at 128, 0.013 at 512 at dt = 0.05)
MAX_DATA = 128


def _method(value, where: str) -> str:
    if value not in LANGEVIN_SCHEMES:
        raise ValueError(f"{where} must be one of {sorted(LANGEVIN_SCHEMES)}, got {value!r}")
    return value


def check(spec) -> dict:
    """The model at both parameter sets, the data drawn, the initial laws: all built (and
    refused) before anything runs."""
    cfg, grid = spec.cfg, spec.grid
    mc = cfg["model"]
    if "powers" not in mc or "theta" not in mc:
        raise ValueError("[model] needs 'powers' and 'theta'")
    if grid.ndim < 2 or any(grid.periodic):
        raise ValueError("an lvebm grid has at least two dimensions (x then z) and zero-flux walls")
    if mc.get("x_dim", 1) != 1:
        raise ValueError("the lvebm experiment observes one coordinate ([model] x_dim = 1); "
                         "fokkerplanck.theory.latent.LatentEBM takes more")
    model = L.LatentEBM.polynomial(mc["powers"], mc["theta"], grid, 1, mc.get("scale"))
    dc = cfg.get("data", {})
    truth = model.with_theta(dc.get("theta", mc["theta"]))
    for name, m in (("[model] theta", model), ("[data] theta", truth)):
        wall = grid.mass_near_wall(m.joint(), 2)
        if not np.isfinite(wall) or wall > 1e-6:
            raise ValueError(f"the joint law at {name} puts mass {wall:.3g} within two cells of the walls of "
                             f"{grid.bounds} (or is not normalisable): enlarge [grid] bounds or change theta")
    n = positive_int(dc.get("n", 32), "[data] n", maximum=MAX_DATA)
    px = np.exp(truth.log_marginal(truth.x_grid.points)).reshape(truth.x_grid.shape)
    X = truth.x_grid.sample(px, n, seed=check_seed(dc.get("seed", 0), "[data] seed"))
    for name, m in (("[model] theta", model), ("[data] theta", truth)):
        wall = m.wall_mass(X)
        if wall > L.MAX_WALL_MASS:
            raise ValueError(f"the posteriors of the data at {name} put mass {wall:.3g} within two cells of the walls "
                             f"of the z range {model.z_grid.bounds}: enlarge it")
    if spec.initial is None:
        raise ValueError("an lvebm config needs [initial]: the joint pool's initial law (a Gaussian)")
    if not isinstance(spec.initial, Dn.Gaussian):  # a config error: ValueError, as every other
        raise ValueError(  # noqa: TRY004
            "[initial] of an lvebm config is a Gaussian (its z-marginal starts the conditional pools)")
    dx = model.x_dim
    z0 = Dn.Gaussian(spec.initial.mean[dx:], spec.initial.cov[dx:, dx:])
    for name, g, law in (("[initial]", grid, spec.initial), ("its z-marginal", model.z_grid, z0)):
        if g.mass_near_wall(law.on_grid(g), 2) > 1e-6:
            raise ValueError(f"{name} puts mass within two cells of the walls of {g.bounds}: enlarge [grid] bounds")
    p = cfg.get("particles", {})
    nj = positive_int(p.get("n_joint", 4000), "[particles] n_joint")
    nc = positive_int(p.get("n_conditional", 2000), "[particles] n_conditional")
    dt = positive_float(p.get("dt", 0.005), "[particles] dt")
    _method(p.get("method", "euler-maruyama"), "[particles] method")
    check_seed(p.get("seed", 1), "[particles] seed")
    points = positive_int(p.get("points", 4), "[particles] points")
    # positions at every save: the joint pool and the stacked conditional pools
    check_memory(8.0 * len(spec.times) * (2 * nj + min(points, n) * model.z_dim * nc) * 2,
                 f"[particles] n_joint = {nj}, n_conditional = {nc} at {len(spec.times)} saves")
    per_save = (spec.times[1] - spec.times[0]) / dt
    if abs(per_save - round(per_save)) > 1e-9 * per_save:
        raise ValueError(f"[particles] dt = {dt:g} must divide the save spacing {spec.times[1] - spec.times[0]:g}")
    t = cfg.get("training", {})
    for key, default in (("lr", 0.05), ("dt", 0.05)):
        positive_float(t.get(key, default), f"[training] {key}")
    sizes = {key: positive_int(t.get(key, default), f"[training] {key}")
             for key, default in (("steps", 150), ("inner", 10), ("n_joint", 2000), ("n_conditional", 200))}
    if min(sizes["n_joint"], sizes["n_conditional"]) < 2:
        raise ValueError("[training] n_joint and n_conditional must be at least 2 (the gradient's standard error)")
    check_memory(8.0 * 4 * (2 * sizes["n_joint"] + n * model.z_dim * sizes["n_conditional"]),
                 f"[training] n_joint = {sizes['n_joint']}, n_conditional = {sizes['n_conditional']}")
    _method(t.get("method", "mala"), "[training] method")
    check_seed(t.get("seed", 5), "[training] seed")
    mask = np.asarray(t.get("trainable", [True] * len(model.theta)))
    if mask.shape != model.theta.shape or mask.dtype != bool:
        raise ValueError(f"[training] trainable must be {len(model.theta)} booleans, got {t.get('trainable')!r}")
    return {"model": model, "truth": truth, "data": X, "z0": z0, "points": min(points, n), "trainable": mask}


def run(spec, f, *, progress=True, log=print):
    cfg, times, ex = spec.cfg, spec.times, spec.extra
    model, truth, X, z0 = ex["model"], ex["truth"], ex["data"], ex["z0"]
    log(f"{model!r}; data: {len(X)} points drawn from theta = {truth.theta.tolist()}")
    gd = f.create_group("data")
    gd["x"], gd["x_grid"] = X, model.x_grid.points
    gd["px_truth"] = np.exp(truth.log_marginal(model.x_grid.points))
    gd["px_model"] = np.exp(model.log_marginal(model.x_grid.points))
    gd.attrs.update(log_likelihood_truth=truth.log_likelihood(X), log_likelihood_model=model.log_likelihood(X))

    # the two pools' exact flows and their decay
    log("  joint and conditional flows on the grid ...")
    sel = X[:ex["points"]]
    joint = model.joint_flow(spec.initial, times)
    cond = model.conditional_flows(sel, z0, times)
    dj = L.decay(joint)
    dcs = [L.decay(c) for c in cond]
    gj = f.create_group("joint")
    gj["times"], gj["kl"], gj["valid"] = times, dj.kl, joint.valid()
    _write_decay(gj, dj)
    gc = f.create_group("conditional")
    gc["times"], gc["x"] = times, sel
    gc["kl"] = np.array([d.kl for d in dcs])
    if dcs[0].w2 is not None:   # W2 by quantiles: one latent coordinate
        gc["w2"] = np.array([d.w2 for d in dcs])
    gc["valid"] = np.array([c.valid() for c in cond])
    _write_decay(gc, dcs[0], many=dcs)
    log(f"  joint: kappa = {dj.constant.value if dj.constant else float('nan'):.4g} "
        f"({_label(dj)}), spectral gap {dj.gap:.4g}; bound holds: {dj.holds()}")

    # the particle pools against them
    p = cfg.get("particles", {})
    dt, method, seed = float(p.get("dt", 0.005)), p.get("method", "euler-maruyama"), int(p.get("seed", 1))
    every = round((times[1] - times[0]) / dt)
    n_steps = every * (len(times) - 1)
    log(f"  particle pools: {method}, dt = {dt:g}, {n_steps} steps ...")
    y0 = model.grid.sample(spec.initial.on_grid(model.grid), int(p.get("n_joint", 4000)), seed=seed)
    ens = model.joint_pool(y0, dt, n_steps, seed=seed + 1, method=method, save_every=every, summaries=False)
    logz = model.log_partition()
    kj = [kl_knn(Y, model.energy, log_partition=logz) for Y in ens.positions]
    gj["particles_kl"], gj["particles_kl_se"] = [k.value for k in kj], [k.stderr for k in kj]
    gj["particles_kl_below_resolution"] = [bool(k.below_resolution) for k in kj]
    zstart = model.z_grid.sample(z0.on_grid(model.z_grid), int(p.get("n_conditional", 2000)), seed=seed + 2)
    pools = model.conditional_pools(sel, zstart, dt, n_steps, seed=seed + 3, method=method, save_every=every,
                                    summaries=False)
    logc = model.conditional_log_partition(sel)
    per = [model.per_point(P) for P in pools.positions]                      # per save: (B, n, dz)
    kc = [[kl_knn(per[j][i], model.conditional(x), log_partition=logc[i]) for j in range(len(times))]
          for i, x in enumerate(sel)]
    gc["particles_kl"] = [[k.value for k in row] for row in kc]
    gc["particles_kl_se"] = [[k.stderr for k in row] for row in kc]
    gc["particles_kl_below_resolution"] = [[bool(k.below_resolution) for k in row] for row in kc]
    gj.attrs.update(n_particles=len(y0), dt=dt, method=method)

    # ELBO: the exact posterior against the best Gaussian
    ge = [model.gaussian_elbo(x) for x in sel]
    gel = f.create_group("elbo")
    gel["x"], gel["log_px"] = sel, model.log_marginal(sel)
    gel["gaussian_gap"] = [g.gap for g in ge]
    gel["gaussian_mean"] = np.array([g.mean for g in ge])
    gel["gaussian_cov"] = np.array([g.cov for g in ge])
    gel["gaussian_grid_gap"] = [g.grid_gap for g in ge]        # the same Gaussian's gap on the box
    gel["gaussian_reliable"] = [g.reliable for g in ge]
    gel.attrs["gaussian_notes"] = json.dumps([g.note for g in ge])
    gel["pool_gap"] = gc["particles_kl"][:, -1]
    gel["pool_gap_se"] = gc["particles_kl_se"][:, -1]
    gel["pool_gap_below_resolution"] = gc["particles_kl_below_resolution"][:, -1]
    log("  ELBO gap, best Gaussian posterior: " + ", ".join(f"{g.gap:.3g}" + ("" if g.reliable else " (NOT reliable)")
                                                          for g in ge)
        + f"; conditional pools at t = {times[-1]:g}: "
        + ", ".join(_gap(v, s, b) for v, s, b in zip(gel["pool_gap"][()], gel["pool_gap_se"][()],
                                                      gel["pool_gap_below_resolution"][()])))

    # training: the two pools against exact maximum likelihood
    t = cfg.get("training", {})
    mask = ex["trainable"]
    theta_mle, ll_mle = L.exact_mle(model, X, trainable=mask)
    steps = int(t.get("steps", 150))
    log(f"  two-loop training, {steps} steps (exact maximum log-likelihood {ll_mle:.5g}) ...")
    bar = _progress(steps) if progress else None
    try:
        tr = L.train(model, X, lr=float(t.get("lr", 0.05)), steps=steps, inner=int(t.get("inner", 10)),
                     n_joint=int(t.get("n_joint", 2000)), n_conditional=int(t.get("n_conditional", 200)),
                     dt=float(t.get("dt", 0.05)), trainable=mask, seed=int(t.get("seed", 5)),
                     method=t.get("method", "mala"), progress=None if bar is None else (lambda *a: bar.update()))
    finally:
        if bar is not None:
            bar.close()
    gt = f.create_group("training")
    gt["theta"], gt["log_likelihood"] = tr.theta, tr.log_likelihood
    gt["gradient"], gt["gradient_se"] = tr.gradient, tr.stderr
    gt["gradient_exact_start"] = model.grad_log_likelihood(X)
    gt["theta_mle"] = theta_mle
    gt["valid"], gt["acceptance"] = tr.valid, tr.acceptance
    gt.attrs.update(log_likelihood_mle=ll_mle)
    z0g = (tr.gradient[0] - gt["gradient_exact_start"][()]) / np.where(tr.stderr[0] > 0, tr.stderr[0], np.inf)
    last = np.flatnonzero(tr.valid)[-1]
    log(f"  first particle gradient vs exact: z-scores {np.round(z0g[mask], 2).tolist()}; "
        f"log-likelihood {tr.log_likelihood[0]:.5g} -> {tr.log_likelihood[last]:.5g} at step {last} (maximum "
        f"{ll_mle:.5g}); {int((~tr.valid).sum())} iterates not valid (mass at the walls)")


def _gap(value, se, below) -> str:
    """A particle KL in words: the value with its error, or the upper bound it supports."""
    if below:
        return f"< {Estimate(value, se, '', True).upper_bound:.2g} (below resolution)"
    return f"{value:.2g} +- {se:.1g}"


def _label(d) -> str:
    if not d.bounded:
        return "no bound: not convex on the box, or the first save is not valid"
    return "certified" if d.constant.certified else "estimated: min over the grid's cells"


def _write_decay(g, d, many=None):
    """The bound of each flow: ``has_bound`` (convex on the box and a valid first save),
    ``kappa`` (NaN without), ``certified``, ``bound_holds`` (at the valid saves)."""
    ds = many if many is not None else [d]
    g["kappa"] = [x.constant.value if x.bounded else np.nan for x in ds]
    g["certified"] = [bool(x.bounded and x.constant.certified) for x in ds]
    g["spectral_gap"] = [x.gap for x in ds]
    g["bound_holds"] = [x.holds() is True for x in ds]
    g["has_bound"] = [x.bounded for x in ds]


def _progress(total):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc="training", leave=False)


def _kl_word(kl, valid) -> str:
    """A grid KL in words: the value, or that the save is not valid."""
    return f"{kl:.3g}" if valid else "NOT VALID (unresolved on the grid)"


def plot(path, r, steps):
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4), layout="constrained")
    d = r["data"]
    ax = axes[0]
    xs = d["x_grid"][:, 0]
    ax.plot(xs, d["px_truth"], "k-", label="p(x), data law")
    ax.plot(xs, d["px_model"], "C0--", label="p(x), model at the start")
    ax.hist(d["x"][:, 0], bins=20, density=True, color="0.8", label=f"{len(d['x'])} data points")
    ax.set_xlabel("x")
    ax.set_title("data and the model's x-marginal")
    ax.legend(fontsize="x-small")

    ax = axes[1]
    j, c = r["joint"], r["conditional"]
    plot_kl(ax, j["times"], j["kl"], label="joint pool, grid", valid=j["valid"], color="C0")
    plot_kl(ax, j["times"], j["particles_kl"], stderr=j["particles_kl_se"], label="joint pool, particles", color="C2")
    if j["has_bound"][0]:     # a bound only from a valid first save (and where the energy is convex)
        kind = "certified" if j["certified"][0] else "estimated"
        ax.plot(j["times"], j["kl"][0] * np.exp(-2 * j["kappa"][0] * j["times"]), "C0:",
                label=f"KL_0 exp(-2 kappa t), kappa = {j['kappa'][0]:.3g} ({kind})")
    plot_kl(ax, c["times"], c["kl"][0], label=f"conditional pool at x = {c['x'][0, 0]:.2f}, grid",
            valid=c["valid"][0], color="C1")
    if c["has_bound"][0]:
        kind = "certified" if c["certified"][0] else "estimated"
        ax.plot(c["times"], c["kl"][0][0] * np.exp(-2 * c["kappa"][0] * c["times"]), "C1:",
                label=f"its bound, kappa = {c['kappa'][0]:.3g} ({kind})")
    if "w2" in c:
        ok = c["valid"][0]
        ax.semilogy(c["times"], np.where(ok, c["w2"][0], np.nan), "C3-",
                    label="its W2 (grid)" + ("" if ok.all() else f" ({int((~ok).sum())} saves not valid: omitted)"))
        if c["has_bound"][0]:
            ax.plot(c["times"], c["w2"][0][0] * np.exp(-c["kappa"][0] * c["times"]), "C3:", label="W2_0 exp(-kappa t)")
    ax.set_ylabel("KL or W2 to the pool's law")
    ax.set_title("the pools relax: KL and W2 against the bounds")
    ax.legend(fontsize="xx-small")

    ax = axes[2]
    e = r["elbo"]
    for i in range(len(e["x"])):
        color = f"C{i}"
        plot_kl(ax, c["times"], c["kl"][i], valid=c["valid"][i], color=color,
                label=f"x = {e['x'][i, 0]:.2f}: exact posterior flow")
        if e["gaussian_reliable"][i]:
            ax.axhline(e["gaussian_gap"][i], color=color, ls="--", lw=1)
        plot_kl(ax, c["times"], c["particles_kl"][i], stderr=c["particles_kl_se"][i], label=f"x = {e['x'][i, 0]:.2f}: pool",
                color=color)
    bad = int(np.sum(~e["gaussian_reliable"].astype(bool)))
    ax.set_title("ELBO gap KL(q_t || p(z | x)); dashed: best Gaussian"
                 + (f" ({bad} not reliable: not drawn)" if bad else ""), fontsize="small")
    ax.legend(fontsize="xx-small")

    ax = axes[3]
    tr = r["training"]
    ok = tr["valid"].astype(bool)
    steps_ = np.arange(len(tr["log_likelihood"]))
    ax.plot(steps_, np.where(ok, tr["log_likelihood"], np.nan), "C0-",
            label="two-loop particle training" + ("" if ok.all() else
                                                  f" ({int((~ok).sum())} iterates at the walls: omitted)"))
    ax.axhline(tr["log_likelihood_mle"], color="k", ls="--", label="exact maximum likelihood (grid)")
    ax.axhline(d["log_likelihood_truth"], color="0.5", ls=":", label="the data law's parameters")
    ax.set_xlabel("outer step")
    ax.set_ylabel("mean log p(x_i), exact on the grid")
    ax.set_title("training against exact maximum likelihood")
    ax.legend(fontsize="x-small")
    return fig


def info(r) -> list[str]:
    d, j, c, e, t = r["data"], r["joint"], r["conditional"], r["elbo"], r["training"]
    lines = [(f"  data: {len(d['x'])} points; exact mean log-likelihood: data law {d['log_likelihood_truth']:.5g}, "
              f"model at the start {d['log_likelihood_model']:.5g}")]

    def bound(g, i=0):
        if not g["has_bound"][i]:
            return "no bound (not convex on the box, or the first save is not valid)"
        kind = "certified" if g["certified"][i] else "estimated (min over the grid's cells)"
        return f"kappa = {g['kappa'][i]:.4g} ({kind}), bound holds at the valid saves: {bool(g['bound_holds'][i])}"

    jv = j["valid"].astype(bool)
    lines.append(f"  joint pool: KL {_kl_word(j['kl'][0], jv[0])} -> {_kl_word(j['kl'][-1], jv[-1])} (particles "
                 f"{_gap(j['particles_kl'][-1], j['particles_kl_se'][-1], j['particles_kl_below_resolution'][-1])}); "
                 f"{bound(j)}; spectral gap {j['spectral_gap'][0]:.4g}")
    for i in range(len(c["x"])):
        cv = c["valid"][i].astype(bool)
        w2 = (f"W2 {_kl_word(c['w2'][i, 0], cv[0])} -> {_kl_word(c['w2'][i, -1], cv[-1])}; " if "w2" in c else "")
        lines.append(f"  conditional pool at x = {c['x'][i, 0]:.3g}: KL {_kl_word(c['kl'][i, 0], cv[0])} -> "
                     f"{_kl_word(c['kl'][i, -1], cv[-1])}, {w2}{bound(c, i)}")
    notes = json.loads(e.get("gaussian_notes", "[]"))
    for i in range(len(e["x"])):
        gauss = (f"{e['gaussian_gap'][i]:.3g}" if e["gaussian_reliable"][i]
                 else f"{e['gaussian_gap'][i]:.3g} NOT reliable ({notes[i] if i < len(notes) else ''})")
        lines.append(f"  ELBO at x = {e['x'][i, 0]:.3g}: log p(x) = {e['log_px'][i]:.5g}; gap of the best Gaussian "
                     f"{gauss}, of the conditional pool "
                     f"{_gap(e['pool_gap'][i], e['pool_gap_se'][i], e['pool_gap_below_resolution'][i])}")
    ok = t["valid"].astype(bool)
    last = int(np.flatnonzero(ok)[-1])
    lines.append(f"  training: log-likelihood {t['log_likelihood'][0]:.5g} -> {t['log_likelihood'][last]:.5g} at step "
                 f"{last}; exact maximum {t['log_likelihood_mle']:.5g} at theta = "
                 f"{np.round(t['theta_mle'], 4).tolist()}; MALA acceptance (joint, conditional) "
                 f"{np.round(np.nanmean(t['acceptance'], axis=0), 2).tolist()}"
                 + (f"; {int((~ok).sum())} iterates NOT VALID (mass at the walls)" if not ok.all() else ""))
    return lines


KIND = Kind(
    name="lvebm",
    required=("model", "grid", "times", "initial"),
    top_keys=frozenset({"kind", "model", "data", "grid", "times", "initial", "particles", "training"}),
    tables=TABLES, check=check, run=run, plot=plot, info=info,
)
