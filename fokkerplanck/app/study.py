"""The standard study of one energy in one call: both density flows on a grid, the
deterministic flow's exact KL and R_t, Langevin and deterministic particles held against
them, the stopping rules, the figure and the run file that ``fpk info`` and ``fpk plot``
read -- for any energy: built-in, numba kernels (``energies.Custom``), NumPy, PyTorch or
JAX callables (``energies.from_callable`` / ``from_torch`` / ``from_jax``)::

    from fokkerplanck import energies
    from fokkerplanck.app.study import study

    U = energies.from_callable(lambda X: (X[:, 0] ** 2 - 1) ** 2 + 0.5 * X[:, 1] ** 2, dim=2)
    res = study(U, [(-3, 3), (-3, 3)])
    res["stopping"], res["file"], res["figure"]

Methods follow the energy: with numba kernels the deterministic flow on the grid is the
exact Lagrangian one and its KL comes from forward characteristics; an energy given by
Python callables has no compiled characteristics, so the grid flow is the MUSCL finite
volumes (each cell's value marked where it is not valid) and the deterministic particles,
which track their log-density, give its KL.
"""
from __future__ import annotations

import math
import os

import numpy as np

from fokkerplanck import densities as Dn
from fokkerplanck._core.validate import positive_float, positive_int
from fokkerplanck.app.config import RunSpec
from fokkerplanck.app.kinds import REGISTRY
from fokkerplanck.app.runner import info_lines, plot_run, read_run, run
from fokkerplanck.energies import spec_of
from fokkerplanck.grid import Grid

__all__ = ["study", "DEFAULT_CELLS"]

DEFAULT_CELLS = {1: 800, 2: 128, 3: 40}


def study(energy, bounds, *, initial=None, cells=None, stop: float = 1.0, num: int = 51, temperature: float = 1.0,
          particles: int = 10_000, dt: float | None = None, seed: int = 0, out: str = "study.h5",
          figure: bool = True, overwrite: bool = True, progress: bool = True, log=print) -> dict:
    """Run the standard study of ``energy`` on the box ``bounds`` and write ``out``.

    initial : the initial law (a :mod:`fokkerplanck.densities` object); default the
        Gaussian at the box's centre with standard deviation a twelfth of each side, so
        that the box holds it (+- 6 sd).
    cells : cells per axis (default 800 / 128 / 40 in 1D / 2D / 3D).
    stop, num : the save times ``linspace(0, stop, num)``.
    particles : Langevin and deterministic particles (each); 0 for none.
    dt : the Langevin particles' step (default: the save spacing over
        ``ceil(spacing / 1e-3)``, so that saves fall on steps); the deterministic particles
        (RK4) step by about 1e-2 on the same saves.

    Returns a dict: ``file``, ``figure`` (or None), ``stopping`` (the run's stopping
    times, each with its source, bracket and note), ``info`` (the ``fpk info`` lines).
    """
    T = positive_float(temperature, "temperature")
    grid = Grid(bounds, cells if cells is not None else DEFAULT_CELLS.get(len(bounds), 32))
    if energy.dim != grid.ndim:
        raise ValueError(f"energy has dimension {energy.dim} but the box has {grid.ndim}")
    if initial is None:
        lo, hi = np.array(grid.bounds, dtype=float).T
        initial = Dn.Gaussian((lo + hi) / 2, np.diag(((hi - lo) / 12) ** 2))
    if initial.dim != grid.ndim:
        raise ValueError(f"initial has dimension {initial.dim} but the box has {grid.ndim}")
    stop = positive_float(stop, "stop")
    num = positive_int(num, "num", minimum=2)
    times = np.linspace(0.0, stop, num)
    n = positive_int(particles, "particles", minimum=0)
    spacing = stop / (num - 1)
    if dt is None:   # Euler-Maruyama's bias is O(dt): steps of about 1e-3 that fall on the saves
        dt = spacing / math.ceil(spacing / 1e-3 - 1e-9)
    dt = positive_float(dt, "dt")
    # RK4 on the deterministic flow errs by O(dt^4): steps of about 1e-2 (a tracked log-density
    # costs a Laplacian per stage, which for an autodiff energy is d backward passes per point)
    dt_det = spacing / math.ceil(spacing / 1e-2 - 1e-9)
    cfg = {"kind": "flows", "temperature": T, "energy": spec_of(energy), "grid": grid.to_spec(),
           "initial": initial.to_spec(), "times": {"start": 0.0, "stop": stop, "num": num},
           "fokker_planck": {"method": "exact"},
           "continuity": {"method": "lagrangian" if energy.has_kernels else "finite-volume"}}
    if n:
        cfg["particles"] = {"n": n, "dt": dt, "seed": positive_int(seed, "seed", minimum=0)}
        cfg["deterministic_particles"] = {"n": n, "dt": dt_det, "seed": seed + 1,
                                          "method": "rk4"}
    kind = REGISTRY["flows"]
    spec = RunSpec(cfg, kind, T, grid, energy, initial, times)
    kind.check(spec)   # particle steps against the saves, memory: before anything runs
    run(spec, out, progress=progress, log=log, overwrite=overwrite)
    png = None
    if figure:
        png = os.path.splitext(str(out))[0] + ".png"
        plot_run(out, png)
    r = read_run(out)
    lines = info_lines(out, r)
    log("\n".join(lines))
    return {"file": str(out), "figure": png, "stopping": r.get("stopping", []), "info": lines}
