"""Energies from callables: a small PyTorch MLP energy stepped by particles, against the same
loop written in plain torch; the grid evaluation cost of callable and data energies at 256^2.

    python benchmarks/bench_callables.py            # N = 1e4 and 1e5 particles
    python benchmarks/bench_callables.py --quick    # N = 1e4 only, fewer steps

Particles (M particle-steps/s, best of 3, Euler-Maruyama, 2 threads for both):

* ours: ``particles.langevin(from_torch(net), ...)`` -- the vectorised path: one batched
  forward + backward of the network per step, Philox noise, box and non-finite checks,
  the same random stream as the numba path;
* plain torch: ``x = x - dt * autograd.grad(net(x).sum(), x) + sqrt(2 dt) * randn`` in a
  Python loop (torch's generator, no checks): what a user writes.

Grid (seconds for value, gradient and Laplacian on the 65536 cells of a 256^2 grid, best
of 3): the MLP through ``from_torch`` (exact Laplacian by two backward passes), the
written eight-Gaussian kernels for reference, and :class:`~fokkerplanck.energies.KDE` of
1e4 and 1e5 points (h = 0.1, tol 1e-12) against the full mixture sum (the same data as a
:class:`~fokkerplanck.energies.GaussianMixture`, its compiled kernels in parallel: value,
gradient and Laplacian in one loop), timed on a subset of cells and scaled to 65536.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
from _results import write_table

import particles
from fokkerplanck import Grid, energies as E
from fokkerplanck.energies.base import _kernel_loop


def best(fn, reps=3):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    dtype = torch.float64
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 1)).to(dtype)
    quad = lambda x: 0.5 * (x ** 2).sum(1)  # noqa: E731  (keeps the MLP energy confining)

    def energy_t(x):
        return net(x)[:, 0] * 0.1 + quad(x)

    U = E.from_torch(energy_t, 2, name="mlp")
    dt = 1e-2
    lines = ["# Callable energies: a torch MLP in the particle integrators, and grid evaluation", "",
             "`python benchmarks/bench_callables.py" + (" --quick`" if args.quick else "`"), "",
             "MLP: 2 -> 64 -> 64 -> 1 (tanh), float64, plus |x|^2/2. M particle-steps/s, best of 3, 2 threads.", "",
             "| N | steps | ours (from_torch, vectorised path) | plain torch loop | ours / torch |",
             "|---|---|---|---|---|"]
    for n in ((10_000,) if args.quick else (10_000, 100_000)):
        steps = 50 if args.quick else 100
        x0 = np.random.default_rng(0).normal(size=(n, 2))

        def ours():
            particles.langevin(U, x0, dt, steps, seed=1, summaries=False)

        def plain():
            x = torch.as_tensor(x0, dtype=dtype)
            s = math.sqrt(2 * dt)
            for _ in range(steps):
                x.requires_grad_(True)
                (g,) = torch.autograd.grad(energy_t(x).sum(), x)
                x = (x - dt * g + s * torch.randn_like(x)).detach()
            return x

        ours()
        plain()
        t_o, t_p = best(ours), best(plain)
        r_o, r_p = n * steps / t_o / 1e6, n * steps / t_p / 1e6
        lines.append(f"| {n:.0e} | {steps} | {r_o:.2f} | {r_p:.2f} | {r_o / r_p:.2f} |")
        print(lines[-1], flush=True)

    g = Grid([(-8, 8)] * 2, 256)
    X = g.points
    ring = E.GaussianMixture.ring()
    lines += ["", "Grid evaluation, 256^2 cells: value + gradient + Laplacian, seconds (best of 3).", "",
              "| energy | seconds | note |", "|---|---|---|"]

    def vgl(Uc):
        Uc.value(X), Uc.grad(X), Uc.laplacian(X)

    vgl(U)
    lines.append(f"| torch MLP (from_torch) | {best(lambda: vgl(U)):.3f} | autograd; Laplacian exact (d = 2 backward passes) |")
    vgl(ring)
    lines.append(f"| eight Gaussians (numba / numpy) | {best(lambda: vgl(ring)):.3f} | written kernels, reference |")
    data_sizes = (10_000,) if args.quick else (10_000, 100_000)
    for m in data_sizes:
        data = ring.sample(m, seed=2)
        K = E.KDE(data, 0.1)
        vgl(K)
        t_k = best(lambda: vgl(K), 1 if m > 10_000 else 3)
        sub = X[:: 64] if m > 10_000 else X[:: 8]
        GM = E.GaussianMixture(data, 0.1)
        full = _kernel_loop(GM.kernels, False)  # the mixture's compiled kernels, all cores, every component
        full(sub[:10], GM.params)
        t_full = best(lambda: full(sub, GM.params), 1) * X.shape[0] / sub.shape[0]
        lines.append(f"| KDE of {m:.0e} points, h = 0.1 | {t_k:.3f} | full mixture sum: {t_full:.1f} s "
                     f"(extrapolated from {sub.shape[0]} cells): {t_full / t_k:.1f}x |")
        print(lines[-1], flush=True)
    write_table("callables", lines, args.quick)


if __name__ == "__main__":
    main()
