"""``fpk sweep``: one ``fpk run`` experiment over a grid of parameters, resumable,
in-process or on a Dask cluster.

``--param NAME=v1,v2,...`` names a config entry by its dotted path
(``grid.cells``, ``particles.dt``, ``continuity.method``, ``temperature``) or
by a short alias (:data:`ALIASES`: ``dt`` sets the step of every particle
table present, ``cells`` the grid, ``n`` the particle counts).  The sweep is
the Cartesian product of the values.

Each point writes ``OUTDIR/<name>.h5`` atomically (the name spells the
values), so a finished point is exactly a file under its final name, and the
file records the SHA-256 of the point's full resolved config: a rerun skips
the files of exactly this config and recomputes the missing, damaged or stale
ones (an interrupted or partly failed sweep resumes; an edited base config,
or another config pointed at the same folder, never reuses old results).  Then ``summary.csv`` and ``summary.h5`` hold one row
per point: its values, wall time, tau_det (grid and particles, with the error
bar and k*), the step of minimal KL, the last KL of each flow, and errors
against the reference: the closed forms where the run has them (OU), else the
point with the most cells and the smallest step.
"""
from __future__ import annotations

import copy
import csv
import itertools
import json
import os
import time

import h5py
import numpy as np

from fokkerplanck._core.files import PathLock, atomic_h5
from fokkerplanck._core.validate import nearest
from fokkerplanck.app.config import check_config, config_hash, table_keys
from fokkerplanck.app.kinds import DEFAULT, REGISTRY
from fokkerplanck.app.runner import FORMAT, read_run, run
from fokkerplanck.results import Trajectory
from particles.distributed import set_threads

__all__ = ["ALIASES", "apply", "check_params", "parse_params", "point_name", "points", "sweep", "targets"]

ALIASES = {"dt": ["particles.dt", "deterministic_particles.dt", "composition.dt"],
           "cells": ["grid.cells"], "n": ["particles.n", "deterministic_particles.n", "composition.n"],
           "method": ["particles.method"], "scheme": ["deterministic_particles.method"]}


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_params(specs: list[str]) -> dict[str, list]:
    """``["dt=0.001,0.002", "cells=64"]`` -> ``{"dt": [0.001, 0.002], "cells": [64]}``; checked by
    :func:`check_params` (a parameter given twice is an error naming it)."""
    out = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name or not values:
            raise ValueError(f"--param wants NAME=v1,v2,..., got {spec!r}")
        if name in out:
            raise ValueError(f"--param {name} is given twice ({name}={','.join(map(str, out[name]))} and {spec!r}): "
                             "give all its values in one --param")
        out[name] = [_value(v.strip()) for v in values.split(",") if v.strip()]
    return check_params(out)


def targets(name: str) -> list[str]:
    """The config entries a parameter sets: an alias's paths, or the dotted path itself."""
    return list(ALIASES[name]) if name in ALIASES else [name]


def check_params(params: dict[str, list]) -> dict[str, list]:
    """Refuse a parameter without values, a value given twice (``16`` and ``16.0`` are one
    point, run twice under two names), and two parameters that set the same config entry
    (``dt`` and ``particles.dt``: the file name would spell a value the run does not hold)."""
    for name, values in params.items():
        if not values:
            raise ValueError(f"--param {name}: no values (want {name}=v1,v2,...)")
        seen = []
        for v in values:
            same = [u for u in seen if type(u) is type(v) and u == v or
                    isinstance(u, (int, float)) and isinstance(v, (int, float)) and u == v]
            if same:
                raise ValueError(f"--param {name}: the value {v!r} repeats {same[0]!r} (one configuration run twice)")
            seen.append(v)
    owner: dict[str, str] = {}
    for name in params:
        for path in targets(name):
            if path in owner:
                raise ValueError(f"--param {name} and --param {owner[path]} both set {path}: give one of them")
            owner[path] = name
    return params


def points(params: dict[str, list]) -> list[dict]:
    names = list(params)
    return [dict(zip(names, vals)) for vals in itertools.product(*(params[n] for n in names))]


def _check_path(name: str, path: str, cfg: dict) -> None:
    """A parameter path must name a key the config's kind knows (typos name the nearest)."""
    kind = cfg.get("kind", DEFAULT)
    parts = path.split(".")
    top = set(REGISTRY[kind].top_keys) if kind in REGISTRY else set()
    if parts[0] not in top:
        raise ValueError(f"--param {name}: unknown config entry {parts[0]!r}{nearest(parts[0], top | set(ALIASES))}; "
                         f"valid: {sorted(top)} or the aliases {sorted(ALIASES)}")
    if len(parts) == 1:
        if isinstance(cfg.get(parts[0]), dict):
            raise ValueError(f"--param {name}: [{parts[0]}] is a table; name one of its keys ({parts[0]}.KEY)")
        return
    if len(parts) > 2:
        raise ValueError(f"--param {name}: a path is TABLE.KEY, got {path!r}")
    keys = table_keys(kind).get(parts[0]) if kind in REGISTRY else None
    if keys is None:  # energy / initial: their keys depend on the type, checked when the point's config is
        keys = set(cfg.get(parts[0], {}))
    if parts[1] not in keys:
        raise ValueError(f"--param {name}: [{parts[0]}] has no key {parts[1]!r}{nearest(parts[1], keys)}; "
                         f"valid: {sorted(keys)}")


def apply(cfg: dict, point: dict) -> dict:
    """A copy of ``cfg`` with the point's values set (aliases set every path whose table exists)."""
    cfg = copy.deepcopy(cfg)
    for name, value in point.items():
        paths = [p for p in ALIASES.get(name, []) if p.split(".")[0] in cfg] if name in ALIASES else [name]
        if not paths:
            raise ValueError(f"--param {name}: the config has none of {ALIASES[name]}")
        for path in paths:
            _check_path(name, path, cfg)
            *tables, key = path.split(".")
            d = cfg
            for t in tables:
                d = d.setdefault(t, {})
            d[key] = value
    return cfg


def _up_to_date(path: str, cfg: dict) -> bool:
    """True when ``path`` is a complete run file of exactly this config."""
    if not os.path.exists(path):
        return False
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT and f.attrs.get("config_sha256") == config_hash(cfg)
    except OSError:
        return False


def point_name(point: dict) -> str:
    return "_".join(f"{k}={v}" for k, v in point.items()).replace("/", "-") or "base"


def run_point(cfg, path: str, threads: int | None = None) -> str:
    """Run one point (a config dict, or its :class:`~fokkerplanck.app.config.RunSpec`)
    into ``path`` (atomically); the unit of work sent to a worker (``threads``: its numba
    threads, default all cores)."""
    set_threads(threads)
    run(cfg, path, progress=False, log=lambda *a: None)
    return path


def _row(point: dict, path: str) -> dict:
    r = read_run(path)
    with h5py.File(path, "r") as f:
        wall = float(f.attrs.get("wall_time", np.nan))
    row = {**point, "file": os.path.basename(path), "wall_time": wall}
    for s in r.get("stopping", []):
        src = s["source"].split(" (")[0]
        if s["name"] == "tau_det" and src == "exact R_t":
            row["tau_det_exact"] = s["time"]
        elif s["name"] == "tau_det" and src == "grid R_t":
            row["tau_det_grid"] = s["time"]
        elif s["name"] == "tau_det" and src == "particle R_t":
            row.update(tau_det_particles=s["time"], tau_det_particles_se=s["stderr"], k_star=s["step"])
        elif s["name"] == "argmin KL" and src == "particle tracked KL":
            row["step_min_kl"] = s["step"]
        elif s["name"] == "argmin KL" and src == "grid KL":
            row["argmin_kl_grid"] = s["time"]
    trs = {}
    for g in ("fokker-planck", "continuity"):
        if g in r["groups"]:
            trs[g] = Trajectory.load(path, g)
            row[f"kl_final_{g.replace('-', '_')}"] = float(trs[g].kl()[-1])
            # 1 where the value is a KL of a probability law resolved on the grid, 0 where it is not
            row[f"kl_final_{g.replace('-', '_')}_valid"] = int(trs[g].valid()[-1])
    if "continuity-exact" in r:
        row["kl_final_continuity_exact"] = float(r["continuity-exact"]["kl"][-1])
    if "particles" in r and "kl_knn" in r["particles"]:
        p = r["particles"]
        row["kl_final_particles"] = float(p["kl_knn"][-1])
        # the estimate resolves the KL from 0 (kl_knn_below_resolution, written by the run)
        if "kl_knn_below_resolution" in p:
            row["kl_final_particles_resolved"] = int(not p["kl_knn_below_resolution"][-1])
    if "deterministic-particles" in r and "summaries/kl" in r["deterministic-particles"]:
        row["kl_final_deterministic_particles"] = float(r["deterministic-particles"]["summaries/kl"][-1])
    cf = r.get("closed-form")
    if cf is not None:
        for g, key in (("fokker-planck", "kl_fokker_planck"), ("continuity", "kl_continuity")):
            if g in trs:
                row[f"err_{key}"] = float(np.max(np.abs(trs[g].kl() - cf[key])))
        d = r.get("deterministic-particles", {})
        if "summaries/kl" in d:
            row["err_kl_deterministic_particles"] = float(np.max(np.abs(d["summaries/kl"] - cf["kl_continuity"])))
    return row


# swept parameters that only refine the discretisation: points differing in nothing else
# converge to the same answer, so the finest of them is their reference
RESOLUTION_PARAMS = frozenset({"cells", "grid.cells", "dt", "particles.dt", "deterministic_particles.dt",
                               "composition.dt", "n", "particles.n", "deterministic_particles.n", "composition.n"})


def _references(rows: list[dict], params: dict) -> list:
    """Per row, the finest point with the same values of every swept parameter that is not
    a resolution parameter (a temperature sweep has one reference per temperature only if a
    resolution parameter is swept too); None when the row's group has a single point."""
    physical = [k for k in params if k not in RESOLUTION_PARAMS]
    resolution = [k for k in params if k in RESOLUTION_PARAMS]
    if not resolution:
        return [None] * len(rows)
    groups: dict = {}
    for i, r in enumerate(rows):
        groups.setdefault(tuple(str(r.get(k)) for k in physical), []).append(i)
    out = [None] * len(rows)
    for idx in groups.values():
        if len(idx) > 1:
            ref = _reference([rows[i] for i in idx], params)
            for i in idx:
                out[i] = ref
    return out


def _fineness(key: str, value) -> float:
    """Sort key of a resolution parameter's value: finer first (more cells or particles,
    a smaller step)."""
    v = float(np.max(value)) if isinstance(value, (list, tuple)) else float(value)
    return v if key.endswith("dt") or key == "dt" else -v


def _reference(rows: list[dict], params: dict | None = None) -> dict:
    """The finest point: ordered by every swept resolution parameter (``params``; by
    default ``cells`` then ``dt``), each in its own direction."""
    keys = [k for k in (params or {}) if k in RESOLUTION_PARAMS] or ["cells", "dt"]

    def key(r):
        return tuple(_fineness(k, r[k]) if k in r and r[k] is not None else 0.0 for k in keys)
    return min(rows, key=key)


def sweep(cfg: dict, params: dict[str, list], outdir, *, client=None, threads=None, log=print) -> list[dict]:
    """Run the missing points of the sweep (on ``client`` when given), then write the
    summary table; returns its rows.  ``log`` gets one line per point.  One sweep per
    folder at a time (a second one fails at once, naming the folder)."""
    os.makedirs(outdir, exist_ok=True)
    with PathLock(os.path.join(outdir, "sweep")):
        return _sweep(cfg, params, outdir, client=client, threads=threads, log=log)


def _sweep(cfg, params, outdir, *, client, threads, log):
    pts = points(check_params(params))
    cfgs = [apply(cfg, p) for p in pts]
    specs = []
    for p, c in zip(pts, cfgs):  # every point's config is checked before anything runs
        try:
            specs.append(check_config(c))
        except ValueError as exc:
            raise ValueError(f"point {point_name(p)}: {exc}") from None
    paths = [os.path.join(outdir, point_name(p) + ".h5") for p in pts]
    if len(set(paths)) != len(paths):
        raise ValueError(f"two points of the sweep map to the same file name: {sorted(paths)}")
    todo = [i for i, p in enumerate(paths) if not _up_to_date(p, cfgs[i])]
    stale = [point_name(pts[i]) for i in todo if os.path.exists(paths[i])]
    if stale:
        log(f"{len(stale)} point files hold another config (or are damaged) and are recomputed: {stale}")
    log(f"{len(pts)} points, {len(pts) - len(todo)} already done, {len(todo)} to run"
        + (f" on {len(client.scheduler_info()['workers'])} workers" if client is not None and todo else ""))
    t0 = time.perf_counter()
    if client is None:
        for i in todo:
            run_point(specs[i], paths[i])   # in-process: the checked spec, not parsed again
            log(f"  {point_name(pts[i])}: done ({time.perf_counter() - t0:.1f} s)")
    elif todo:
        from dask.distributed import as_completed  # local: Dask is optional (a client was given: it is there)

        futures = {client.submit(run_point, cfgs[i], paths[i], threads, pure=False, key=f"fpk-sweep-{point_name(pts[i])}-"
                                 f"{os.getpid()}-{time.time_ns()}"): i for i in todo}
        for fut in as_completed(futures):
            fut.result()  # a point that failed (not a lost worker: those are rerun) raises here
            log(f"  {point_name(pts[futures[fut]])}: done ({time.perf_counter() - t0:.1f} s)")
    rows = [_row(p, path) for p, path in zip(pts, paths)]
    refs = _references(rows, params)
    for r, ref in zip(rows, refs):
        if ref is None:
            continue
        r["reference"] = ref["file"]
        for key in ("tau_det_exact", "tau_det_grid", "tau_det_particles", "kl_final_fokker_planck",
                    "kl_final_continuity"):
            if key in r and key in ref:
                r[f"ref_diff_{key}"] = float(r[key] - ref[key])
    ref = _reference(rows, params)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    tmp = os.path.join(outdir, "summary.csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, os.path.join(outdir, "summary.csv"))
    with atomic_h5(os.path.join(outdir, "summary.h5")) as f:
        f.attrs["format"] = "fokkerplanck.app.sweep"
        f.attrs["params"] = json.dumps(params)
        f.attrs["finest"] = ref["file"]   # per row, "reference" names the point it is compared with
        for c in cols:
            vals = [r.get(c, np.nan) for r in rows]
            if all(isinstance(v, (int, float, np.floating, np.integer)) for v in vals):
                f[c] = np.asarray(vals, dtype=float)
            else:
                f[c] = np.asarray([str(v) for v in vals], dtype="S")
    return rows


SUMMARY_FORMAT = "fokkerplanck.app.sweep"


def is_summary(path) -> bool:
    """Whether ``path`` is a sweep's ``summary.h5``."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == SUMMARY_FORMAT
    except OSError:
        return False


def read_summary(path) -> dict:
    """A sweep's ``summary.h5``: ``params`` (the swept values), ``finest`` and the columns
    (numbers as float arrays, text as str arrays); a damaged file is a ValueError."""
    try:
        with h5py.File(path, "r") as f:
            params = json.loads(f.attrs["params"])
            cols = {}
            for k, v in f.items():
                if isinstance(v, h5py.Dataset) and v.ndim == 1 and v.size <= 1_000_000:
                    a = v[()]
                    cols[k] = a.astype(str) if a.dtype.kind == "S" else a
            return {"params": params, "finest": str(f.attrs.get("finest", "")), "columns": cols}
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise ValueError(f"{path} is a damaged sweep summary: {type(exc).__name__}: {exc}") from None


def summary_lines(path, s: dict) -> list[str]:
    """The ``fpk info`` text of a sweep summary: one row per point, the swept parameters and
    the headline numbers, invalid grid values and unresolved particle estimates marked."""
    cols = s["columns"]
    keys = [k for k in s["params"] if k in cols]
    shown = [k for k in ("tau_det_exact", "tau_det_grid", "tau_det_particles", "kl_final_fokker_planck",
                         "kl_final_continuity", "kl_final_continuity_exact", "kl_final_particles", "wall_time")
             if k in cols]
    n = len(next(iter(cols.values()))) if cols else 0
    width = {k: max(12, len(k)) for k in keys + shown}
    lines = [f"{path}: fpk sweep summary, {n} points over {', '.join(keys)}; finest point {s['finest']}",
             "  " + "  ".join(f"{k:>{width[k]}}" for k in keys + shown)]
    for i in range(n):
        vals = []
        for k in keys + shown:
            v = cols[k][i]
            txt = f"{v:{width[k]}.6g}" if isinstance(v, (float, np.floating)) else f"{str(v):>{width[k]}}"
            valid_key = f"{k}_valid" if f"{k}_valid" in cols else f"{k}_resolved" if f"{k}_resolved" in cols else None
            if valid_key is not None and not cols[valid_key][i]:
                txt = txt[1:] + "*"
            vals.append(txt)
        lines.append("  " + "  ".join(vals))
    if any(k.endswith(("_valid", "_resolved")) and not np.all(cols[k]) for k in cols):
        lines.append("  * not valid on the grid, or a particle estimate below its resolution")
    return lines


def plot_summary(path, s: dict, out=None):
    """The sweep's headline numbers against its first swept parameter, one line per value of
    the others; values that are not valid are left out."""
    from fokkerplanck.app.plots import _plt   # local: matplotlib only when a figure is asked for

    plt = _plt()
    cols = s["columns"]
    keys = [k for k in s["params"] if k in cols]
    shown = [k for k in ("tau_det_exact", "tau_det_particles", "kl_final_fokker_planck", "kl_final_continuity_exact",
                         "kl_final_particles") if k in cols]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(4 * max(1, len(shown)), 3.4), layout="constrained",
                             squeeze=False)
    x = np.asarray(cols[keys[0]], dtype=float) if keys else np.arange(len(next(iter(cols.values()))))
    others = [tuple(str(cols[k][i]) for k in keys[1:]) for i in range(x.size)]
    for ax, key in zip(axes[0], shown):
        y = np.asarray(cols[key], dtype=float).copy()
        flag = f"{key}_valid" if f"{key}_valid" in cols else f"{key}_resolved" if f"{key}_resolved" in cols else None
        if flag is not None:
            y[~np.asarray(cols[flag], dtype=bool)] = np.nan
        for group in dict.fromkeys(others):
            sel = np.array([o == group for o in others])
            order = np.argsort(x[sel])
            label = ", ".join(f"{k}={v}" for k, v in zip(keys[1:], group)) or None
            ax.plot(x[sel][order], y[sel][order], "o-", label=label)
        ax.set_xlabel(keys[0] if keys else "point")
        ax.set_title(key.replace("_", " "), fontsize="small")
        if len(dict.fromkeys(others)) > 1:
            ax.legend(fontsize="x-small")
    fig.suptitle(f"sweep over {', '.join(keys)} (values not valid on the grid are left out)", fontsize="small")
    if out is not None:
        fig.savefig(out, dpi=110)
    return fig
