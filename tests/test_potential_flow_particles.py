"""Particles of the grid potential flow against the closed-form transport of one data point."""
import numpy as np

from fokkerplanck import Grid
from fokkerplanck.energies.paths import VPFBHomotopy
from fokkerplanck.flows.potential_flow import potential_flow_particles


def test_potential_flow_particles_follow_the_gaussian_transport_map_at_second_order():
    """One data point xbar, prior std w = 1.3 != likelihood std v = 0.8: rho_bar(., t) is
    N(mu(t) xbar, sigma^2(t) I) and the potential flow is the affine map
    x -> mu(t) xbar + (sigma(t) / sigma(0)) (x - mu(0) xbar).  The particles (Heun, dt = 0.03,
    velocity of the grid Poisson solve) end at t = 0.6 near the map's image, and their tracked
    log-density near log rho_bar there; both errors are the grid's O(h^2).  Measured (2000
    particles, seeds 4..6): mean |position error| 3.8e-3 .. 4.0e-3 on 32^2, 1.05e-3 .. 1.10e-3
    on 64^2 (ratio 3.6 .. 3.7); mean |log-density error| 1.2e-2 .. 1.3e-2, 3.2e-3 .. 3.4e-3
    (ratio 3.8).  Windows: 1.6e-3 and 5e-3 on 64^2, ratios in (3, 5) (first order gives 2)."""
    xbar = np.array([1.0, 0.5])
    H = VPFBHomotopy(xbar[None], 1.3, 0.8)
    times = np.array([0.0, 0.3, 0.6])
    t = times[-1]
    pos, logd = [], []
    for cells in (32, 64):
        pf = potential_flow_particles(H, Grid([(-6, 6)] * 2, cells), times, 2000, dt=0.03, seed=4)
        X0, X = pf.positions[0], pf.positions[-1]
        exact = H.mu(t) * xbar + np.sqrt(H.sigma2(t) / H.sigma2(0)) * (X0 - H.mu(0) * xbar)
        pos.append(np.abs(X - exact).mean())
        logd.append(np.abs(pf.logdensity[-1] - H.logpdf(X, t)).mean())
        np.testing.assert_array_equal(pf.logdensity[0], H.logpdf(X0, 0.0))
    assert pos[1] < 1.6e-3 and 3 < pos[0] / pos[1] < 5, pos
    assert logd[1] < 5e-3 and 3 < logd[0] / logd[1] < 5, logd
