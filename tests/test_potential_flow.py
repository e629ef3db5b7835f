"""The potential flow of a homotopy: its particles against the closed-form transport of one data
point, its SSP-RK3 time stepping against an independent integrator."""
import numpy as np

from fokkerplanck import Grid
from fokkerplanck.energies.paths import VPFBHomotopy
from fokkerplanck.flows.potential_flow import potential_flow, potential_flow_particles, weighted_poisson
from fokkerplanck.operators.muscl import fv_rhs


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


def test_potential_flow_time_stepping_matches_classical_rk4_on_the_same_grid():
    """The grid flow d_t rho = -div(rho grad Phi(., t)) (MUSCL fluxes, a Poisson solve at every
    stage time; w = 0.9, v = 0.6) stepped by the solver's SSP-RK3 at CFL 0.1 (55 steps) and by
    the classical RK4 written here (100 steps of 0.006, stage times t, t + h/2, t + h): the same
    semi-discrete ODE, so the difference is the time error alone.  Measured: L1 2.7e-6 at
    t = 0.6 (1.4e-5 at CFL 0.2; RK4's own error, 100 -> 200 steps, 4e-7); window 2e-5.  A stage
    at the wrong time makes the stepping first order: 5.8e-3."""
    H = VPFBHomotopy(np.array([[1.0, 0.5]]), 0.9, 0.6)
    g = Grid([(-6, 6)] * 2, 24)

    def f(t, u):
        return fv_rhs(g, u, weighted_poisson(H, g, t).face_velocity)

    u = g.density_from_logpdf(lambda X: H.logpdf(X, 0.0))
    n, T = 100, 0.6
    h = T / n
    for k in range(n):
        t = k * h
        k1 = f(t, u)
        k2 = f(t + h / 2, u + h / 2 * k1)
        k3 = f(t + h / 2, u + h / 2 * k2)
        k4 = f(t + h, u + h * k3)
        u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    dens, info = potential_flow(H, g, [0.0, T], cfl=0.1)
    err = float(np.abs(dens[-1] - u).sum() * g.cell_volume)
    assert info["steps"] < 60 and err < 2e-5, (err, info)
