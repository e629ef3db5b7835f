"""Composed energies against their samples: the paper's experts A and B, their
conjunction, disjunction and negation, each run as Langevin particles and held against
the grid Fokker-Planck law at the same time and against the Gibbs law
(:func:`composition_experiment`), with the binomial test of the counts
(:func:`counts_agree`).  Used by ``fpk run`` (``kind = "composition"``) and ``fpk verify``.
"""
from __future__ import annotations

import warnings

import numpy as np

import particles
from fokkerplanck import energies as E
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.theory.theorem import composed_energies, stationary_law

__all__ = ["composition_experiment", "counts_agree"]


def _disk_fraction(grid, centres, radius, sub: int = 8) -> np.ndarray:
    """Fraction of each cell within ``radius`` of any of ``centres`` (``sub^d`` points per cell)."""
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    frac = np.zeros(grid.size)
    P = grid.points
    for o in np.stack(np.meshgrid(*[offs] * grid.ndim, indexing="ij"), -1).reshape(-1, grid.ndim):
        Y = P + o * np.asarray(grid.spacing)
        d2 = np.min(np.sum((Y[:, None, :] - centres[None]) ** 2, axis=2), axis=1)
        frac += d2 <= radius**2
    return (frac / sub**grid.ndim).reshape(grid.shape)


def composition_experiment(grid, rho0, *, n: int = 5000, dt: float = 2e-3, time: float = 2.0, seed: int = 1,
                           radius: float = 1.5, negation: float = 0.35, sigma: float = 0.5, temperature: float = 1.0,
                           log=print) -> dict:
    """Experts A (Gaussians at (+-3, +-3)) and B ((0, +-4), (+-4, 0)) and their
    conjunction ``U_A + U_B``, disjunction ``-log(e^-U_A + e^-U_B)`` and negation
    ``U_B - negation U_A``.  For each energy: ``n`` Langevin samples (Euler-Maruyama,
    step ``dt``) at ``time`` from ``rho0`` restricted to the grid; the counts within
    ``radius`` of the A and of the B centres; the counts the grid Fokker-Planck law
    at that time predicts (same start, so the slow mixing between modes is in both)
    and those of the Gibbs law; the stationary law of the discrete generator
    against ``exp(-U/T)/Z``.  Returns ``{name: dict}``."""
    T = float(temperature)
    energies = composed_energies(negation, sigma)
    centres = {"A": energies["A"].means, "B": energies["B"].means}
    disks = {k: _disk_fraction(grid, v, radius) for k, v in centres.items()}
    r0 = rho0.on_grid(grid)
    x0 = grid.sample(r0, n, seed=seed)
    n_steps = int(round(time / dt))
    out = {}
    for name, U in energies.items():
        log(f"{name}: Fokker-Planck and {n} Langevin samples ...")
        fp = FokkerPlanck(U, grid, T)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the start touches the walls: reported by the grid runs
            rho_t = fp.solve(r0, [time]).densities[-1]
        X = particles.langevin(U, x0, dt, n_steps, temperature=T, seed=seed + 1, summaries=False).positions[-1]
        r = {"samples": X, "fokker_planck": rho_t, "gibbs": fp.gibbs, "energy": U,
             "stationary_error": float(np.abs(stationary_law(fp) - fp.gibbs).sum() * grid.cell_volume),
             "spectral_gap": fp.spectral_gap(), "confining": bool(E.check_confining(U, grid, T).ok)}
        for k, C in centres.items():
            d2 = np.min(np.sum((X[:, None, :] - C[None]) ** 2, axis=2), axis=1)
            r[f"count_{k}"] = int(np.sum(d2 <= radius**2))
            r[f"expected_{k}"] = float(n * np.sum(rho_t * disks[k]) * grid.cell_volume)
            r[f"expected_{k}_gibbs"] = float(n * np.sum(fp.gibbs * disks[k]) * grid.cell_volume)
        out[name] = r
    out["_meta"] = {"centres": centres, "radius": radius, "n": n}
    return out


def counts_agree(r: dict, key: str, n: int) -> tuple[float, float]:
    """``|count - expected| / sd`` (binomial) for ``key`` in ``"A", "B"`` and the
    allowance it is held to: 4 sd plus 1% of the expected count for the O(dt)
    bias of Euler-Maruyama and the O(h^2) of the grid, plus 2 for tiny counts."""
    e = r[f"expected_{key}"]
    p = min(max(e / n, 0.0), 1.0)
    sd = max(np.sqrt(n * p * (1 - p)), 1e-12)
    return abs(r[f"count_{key}"] - e) / sd, (4 * sd + 0.01 * e + 2) / sd
