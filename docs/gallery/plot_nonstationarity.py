"""The non-stationarity theorem: the deterministic flow does not keep rho* fixed.

Started at the Gibbs law rho* of the eight Gaussians, the continuity flow moves at
once, ``d_t rho = rho* h / T`` with the residual ``h = T lap U - |grad U|^2``
(positive at the minima, negative further out), and
``KL(rho_t || rho*) = (t^2 / 2) E_rho*[(h/T)^2] + O(t^3)``; Fokker-Planck keeps rho*
stationary.  Left: ``d_t rho = rho* h / T`` on the grid.  Right: the KL from forward characteristics of
rho* (exact up to quadrature) against the quadratic prediction.

Run: ``python docs/gallery/plot_nonstationarity.py [output.png]``
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fokkerplanck import Grid, energies, forward_lagrangian
from fokkerplanck.densities import GridDensity
from fokkerplanck.theory.theorem import nonstationarity_check

T = 1.0
U = energies.GaussianMixture.ring(8, radius=4.0, sigma=0.5)
grid = Grid([(-8, 8), (-8, 8)], 96)

res = nonstationarity_check(U, grid, T)
print(f"R_0 at rho*            = {res.ratio_at_target:.6f}  (Stein: 1)")
print(f"E[(h/T)^2] / 2         = {res.coefficient_exact:.4f}")
print(f"fitted, Lagrangian     = {res.coefficient_lagrangian:.4f}")
print(f"fitted, finite volumes = {res.coefficient_finite_volume:.4f}")
print(f"Fokker-Planck drift of rho* (L1, t = 10) = {res.fokker_planck_drift:.1e}")

pi = grid.gibbs(U, T)
h = U.residual(grid.points, T).reshape(grid.shape)
t_max = 2 * 0.1 / np.sqrt(2 * res.coefficient_exact)
times = np.linspace(0.0, t_max, 21)
lag = forward_lagrangian(U, GridDensity(grid, pi, normalise="silent"), times, temperature=T,
                         log_partition=grid.log_partition(U, T))

fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2))
rate = pi * h / T  # d_t rho at t = 0
lim = np.abs(rate).max()
(x0, x1), (y0, y1) = grid.bounds
im = ax.imshow(rate.T, origin="lower", extent=(x0, x1, y0, y1), cmap="RdBu_r", vmin=-lim, vmax=lim)
fig.colorbar(im, ax=ax, label="rho* h / T,  h = T lap U - |grad U|^2")
ax.set_title("d_t rho at t = 0 (red: mass arrives)")
bx.plot(times, lag.kl, "o", ms=4, label="KL along the deterministic flow from rho*")
bx.plot(times, res.coefficient_exact * times ** 2, "k-", lw=1, label="(t^2/2) E[(h/T)^2]")
bx.set_xlabel("t")
bx.set_ylabel("KL(rho_t || rho*)")
bx.legend(fontsize=8)
bx.set_title("the theorem: quadratic start")
fig.tight_layout()
fig.savefig(sys.argv[1] if len(sys.argv) > 1 else "nonstationarity.png", dpi=110)
