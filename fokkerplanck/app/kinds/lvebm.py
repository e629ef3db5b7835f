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

import numpy as np

from fokkerplanck import densities as Dn
from fokkerplanck._core.validate import positive_float, positive_int
from fokkerplanck.app.kinds.base import Kind
from fokkerplanck.app.plots import _plt, plot_kl
from fokkerplanck.theory import latent as L
from particles.estimators import RESOLUTION_SIGMAS, kl_knn

__all__ = ["KIND"]

TABLES = {"model": frozenset({"powers", "scale", "theta", "x_dim"}),
          "data": frozenset({"theta", "n", "seed"}),
          "particles": frozenset({"n_joint", "n_conditional", "dt", "method", "seed", "points"}),
          "training": frozenset({"lr", "steps", "inner", "n_joint", "n_conditional", "dt", "trainable", "seed",
                                 "method"})}
METHODS = ("euler-maruyama", "mala", "leimkuhler-matthews")
MAX_DATA = 4096


def _method(value, where: str) -> str:
    if value not in METHODS:
        raise ValueError(f"{where} must be one of {list(METHODS)}, got {value!r}")
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
    X = truth.x_grid.sample(px, n, seed=int(dc.get("seed", 0)))
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
    positive_int(p.get("n_joint", 4000), "[particles] n_joint")
    positive_int(p.get("n_conditional", 2000), "[particles] n_conditional")
    dt = positive_float(p.get("dt", 0.005), "[particles] dt")
    _method(p.get("method", "euler-maruyama"), "[particles] method")
    per_save = (spec.times[1] - spec.times[0]) / dt
    if abs(per_save - round(per_save)) > 1e-9 * per_save:
        raise ValueError(f"[particles] dt = {dt:g} must divide the save spacing {spec.times[1] - spec.times[0]:g}")
    points = positive_int(p.get("points", 4), "[particles] points")
    t = cfg.get("training", {})
    for key, default in (("lr", 0.05), ("dt", 0.05)):
        positive_float(t.get(key, default), f"[training] {key}")
    for key, default in (("steps", 150), ("inner", 10), ("n_joint", 2000), ("n_conditional", 200)):
        positive_int(t.get(key, default), f"[training] {key}")
    _method(t.get("method", "mala"), "[training] method")
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
    gel["pool_gap"] = gc["particles_kl"][:, -1]
    gel["pool_gap_se"] = gc["particles_kl_se"][:, -1]
    gel["pool_gap_below_resolution"] = gc["particles_kl_below_resolution"][:, -1]
    log("  ELBO gap, best Gaussian posterior: " + ", ".join(f"{g.gap:.3g}" for g in ge)
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
    gt.attrs.update(log_likelihood_mle=ll_mle)
    z0g = (tr.gradient[0] - gt["gradient_exact_start"][()]) / np.where(tr.stderr[0] > 0, tr.stderr[0], np.inf)
    log(f"  first particle gradient vs exact: z-scores {np.round(z0g[mask], 2).tolist()}; "
        f"log-likelihood {tr.log_likelihood[0]:.5g} -> {tr.log_likelihood[-1]:.5g} (maximum {ll_mle:.5g})")


def _gap(value, se, below) -> str:
    """A particle KL in words: the value with its error, or the upper bound it supports."""
    if below:
        return f"< {max(value, 0.0) + RESOLUTION_SIGMAS * se:.2g} (below resolution)"
    return f"{value:.2g} +- {se:.1g}"


def _label(d) -> str:
    if d.constant is None:
        return "not convex on the box: no bound"
    return "certified" if d.constant.certified else "estimated: min over the grid's cells"


def _write_decay(g, d, many=None):
    ds = many if many is not None else [d]
    g["kappa"] = [np.nan if x.constant is None else x.constant.value for x in ds]
    g["certified"] = [bool(x.constant is not None and x.constant.certified) for x in ds]
    g["spectral_gap"] = [x.gap for x in ds]
    g["bound_holds"] = [x.holds() is True for x in ds]
    g["has_bound"] = [x.constant is not None for x in ds]


def _progress(total):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc="training", leave=False)


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
    if j["has_bound"][0]:
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
        ax.semilogy(c["times"], c["w2"][0], "C3-", label="its W2 (grid)")
        if c["has_bound"][0]:
            ax.plot(c["times"], c["w2"][0][0] * np.exp(-c["kappa"][0] * c["times"]), "C3:", label="W2_0 exp(-kappa t)")
    ax.set_title("the pools relax: KL and W2 against the bounds")
    ax.legend(fontsize="xx-small")

    ax = axes[2]
    e = r["elbo"]
    for i in range(len(e["x"])):
        (line,) = ax.plot(c["times"], c["kl"][i], label=f"x = {e['x'][i, 0]:.2f}: exact posterior flow")
        ax.axhline(e["gaussian_gap"][i], color=line.get_color(), ls="--", lw=1)
        plot_kl(ax, c["times"], c["particles_kl"][i], stderr=c["particles_kl_se"][i], label=f"x = {e['x'][i, 0]:.2f}: pool",
                color=line.get_color())
    ax.set_title("ELBO gap KL(q_t || p(z | x)); dashed: best Gaussian")
    ax.legend(fontsize="xx-small")

    ax = axes[3]
    tr = r["training"]
    ax.plot(np.arange(len(tr["log_likelihood"])), tr["log_likelihood"], "C0-", label="two-loop particle training")
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
            return "not convex on the box: no bound"
        kind = "certified" if g["certified"][i] else "estimated (min over the grid's cells)"
        return f"kappa = {g['kappa'][i]:.4g} ({kind}), bound holds: {bool(g['bound_holds'][i])}"

    below = j["particles_kl"][-1] <= RESOLUTION_SIGMAS * j["particles_kl_se"][-1]
    lines.append(f"  joint pool: KL {j['kl'][0]:.3g} -> {j['kl'][-1]:.3g} (particles "
                 f"{_gap(j['particles_kl'][-1], j['particles_kl_se'][-1], below)}); {bound(j)}; "
                 f"spectral gap {j['spectral_gap'][0]:.4g}")
    for i in range(len(c["x"])):
        w2 = f"W2 {c['w2'][i, 0]:.3g} -> {c['w2'][i, -1]:.3g}; " if "w2" in c else ""
        lines.append(f"  conditional pool at x = {c['x'][i, 0]:.3g}: KL {c['kl'][i, 0]:.3g} -> {c['kl'][i, -1]:.3g}, "
                     f"{w2}{bound(c, i)}")
    for i in range(len(e["x"])):
        lines.append(f"  ELBO at x = {e['x'][i, 0]:.3g}: log p(x) = {e['log_px'][i]:.5g}; gap of the best Gaussian "
                     f"{e['gaussian_gap'][i]:.3g}, of the conditional pool "
                     f"{_gap(e['pool_gap'][i], e['pool_gap_se'][i], e['pool_gap_below_resolution'][i])}")
    lines.append(f"  training: log-likelihood {t['log_likelihood'][0]:.5g} -> {t['log_likelihood'][-1]:.5g}; exact "
                 f"maximum {t['log_likelihood_mle']:.5g} at theta = {np.round(t['theta_mle'], 4).tolist()}")
    return lines


KIND = Kind(
    name="lvebm",
    required=("model", "grid", "times", "initial"),
    top_keys=frozenset({"kind", "model", "data", "grid", "times", "initial", "particles", "training"}),
    tables=TABLES, check=check, run=run, plot=plot, info=info,
)
