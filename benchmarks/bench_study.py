"""The one-call study of a trained energy: a PyTorch MLP (2-64-64-1, tanh, float64, plus a
confining |x|^2 / 2) through ``fokkerplanck.app.study.study`` at 64^2 cells and 1e4
particles of each kind -- both flows on the grid (the deterministic one by finite volumes:
an energy given by a network has no compiled characteristics), Langevin particles and
deterministic particles with tracked log-density (a Laplacian by autodiff per RK4 stage),
the stopping rules, the figure and the run file.  The same study of the mixture written
as numba kernels is the roofline row.

    python benchmarks/bench_study.py            # needs the torch extra
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np
from _results import write_table

from fokkerplanck import energies as E
from fokkerplanck.app.study import study


def _torch_energy():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 1)).double()

    class Energy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x).squeeze(-1) + 0.5 * (x ** 2).sum(-1)
    return E.from_torch(Energy(), dim=2)


def _time(U, cells, n, out):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study(U, [(-6, 6), (-6, 6)], cells=cells, particles=n, out=out, progress=False, log=lambda *a: None)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cells, n = (32, 2000) if args.quick else (64, 10_000)
    lines = ["# One-call study of a trained energy", "",
             "`python benchmarks/bench_study.py" + (" --quick`" if args.quick else "`"), "",
             f"`study(U, [(-6, 6), (-6, 6)], cells={cells}, particles={n})`: Fokker-Planck and finite volumes on the "
             "grid, Langevin and deterministic particles (tracked log-density), stopping rules, figure, run file. "
             "Seconds, one run each, kernels and torch warmed by a first small study.", "",
             "| energy | seconds |", "|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        rows = [("numba kernels: the eight Gaussians (roofline)", E.GaussianMixture.ring(8, radius=3.0, sigma=0.7))]
        try:
            rows.append(("PyTorch MLP 2-64-64-1 (autodiff)", _torch_energy()))
        except ImportError:
            lines.append("| PyTorch MLP | torch not installed (`pip install -e .[torch]`) |")
        for name, U in rows:
            _time(U, 16, 200, f"{d}/warm.h5")
            lines.append(f"| {name} | {_time(U, cells, n, f'{d}/s.h5'):.1f} |")
            print(lines[-1], flush=True)
    write_table("study", lines, args.quick)


if __name__ == "__main__":
    main()
