"""Ornstein-Uhlenbeck: the grid solvers against the closed forms.

For a quadratic energy ``U = x^T A x / 2`` both flows keep a Gaussian Gaussian, so
KL(rho_t || rho*) is known exactly along the Fokker-Planck flow and along the
deterministic flow.  This script solves both on a 2D grid (exact Fokker-Planck,
Lagrangian continuity) and draws the grid KL on top of the closed forms.

Run: ``python docs/gallery/plot_ou_closed_form.py [output.png]``
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fokkerplanck import Continuity, FokkerPlanck, Grid, densities, energies
from fokkerplanck.diagnostics import gaussian_kl, ou_moments

A = np.array([[1.5, 0.5], [0.5, 0.8]])
m0, S0 = np.array([2.0, -1.0]), np.diag([0.3, 0.5])
T = 1.0
U = energies.Quadratic(A)
grid = Grid([(-7, 7), (-7, 7)], 96)
rho0 = densities.Gaussian(m0, S0)
times = np.linspace(0.0, 1.0, 21)

fp = FokkerPlanck(U, grid, T).solve(rho0, times)
det = Continuity(U, grid, temperature=T, method="lagrangian").solve(rho0, times)

# closed forms: N(m_t, S_t) against rho* = N(0, T A^{-1})
target_cov = T * np.linalg.inv(A)
exact = {}
for flow in ("fokker-planck", "continuity"):
    exact[flow] = []
    for t in times:
        m, S = ou_moments(A, np.zeros(2), m0, S0, T, t, flow=flow)
        exact[flow].append(gaussian_kl(m, S, np.zeros(2), target_cov))
    exact[flow] = np.array(exact[flow])

for name, tr, flow in (("Fokker-Planck", fp, "fokker-planck"), ("continuity", det, "continuity")):
    err = np.max(np.abs(tr.kl() - exact[flow]))
    print(f"{name:14s} max |KL_grid - KL_exact| = {err:.2e}")

fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(times, exact["fokker-planck"], "k-", lw=1, label="Fokker-Planck, closed form")
ax.plot(times, fp.kl(), "o", ms=4, label="Fokker-Planck, grid (exact in time)")
ax.plot(times, exact["continuity"], "k--", lw=1, label="deterministic, closed form")
ax.plot(times, det.kl(), "s", ms=4, label="deterministic, grid (Lagrangian)")
ax.set_yscale("log")
ax.set_xlabel("t")
ax.set_ylabel("KL(rho_t || rho*)")
ax.set_title("OU: grid solvers against closed forms (96^2 cells)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[1] if len(sys.argv) > 1 else "ou_closed_form.png", dpi=110)
