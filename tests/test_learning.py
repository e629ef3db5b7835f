"""Thermodynamic integration, OOD scores and barrier functionals against closed forms and
exact grid flows."""
import numpy as np
import pytest
from scipy.stats import norm

import particles
from fokkerplanck import FokkerPlanck, Grid, densities, energies as E
from fokkerplanck.barrier import cell_fractions, particle_unsafe_mass, smallest_lambda, unsafe_mass
from fokkerplanck.ood import auroc, flow_displacement, scores
from fokkerplanck.thermo import ti_integrand, ti_log_z
from particles.thermo import thermodynamic_integration

RING = E.GaussianMixture.ring(8, 4.0, 0.5)


def test_ti_quadrature_converges_and_particles_agree_with_the_grid():
    """Grid: the Gauss-Legendre error of the exact integrand falls fast (measured 1.8e-3 at
    8 nodes, 2.7e-6 at 16).  Particles (MALA, auto step): log Z within 4 standard errors
    of the grid's, and the integrand at each node within 4.5 standard errors."""
    U1 = RING + E.Quadratic(0.05 * np.eye(2))
    U0 = E.Quadratic(np.eye(2) / 9.0)
    g = Grid([(-16, 16)] * 2, 320)
    exact = g.log_partition(U1)
    errs = [abs(ti_log_z(U1, U0, g, n) - exact) for n in (4, 8, 16)]
    assert errs[0] > 10 * errs[1] > 100 * errs[2] and errs[2] < 1e-5
    x0 = np.random.default_rng(0).normal(size=(3000, 2)) * 3
    r = thermodynamic_integration(U1, U0, x0, nodes=16, n_steps=100, seed=1)
    assert abs(r.log_z - exact) < 4 * r.se + errs[2] and r.se < 0.03
    z = (r.means - ti_integrand(U1, U0, g, r.s)) / r.ses
    assert np.abs(z).max() < 4.5
    assert np.all((r.acceptance > 0.4) & (r.acceptance < 0.95))


def test_ti_bad_input():
    with pytest.raises(ValueError, match="dimension"):
        thermodynamic_integration(RING, E.Quadratic(np.eye(3)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="'auto'"):
        thermodynamic_integration(RING, E.Quadratic(np.eye(2)), np.zeros((10, 2)), dt="fast")


def test_auroc_closed_form_and_delong_coverage():
    """Scores N(0,1) in, N(mu,1) out: AUROC = Phi(mu / sqrt 2); DeLong's error bars cover it
    (z-scores over 200 replicas: mean ~0, sd ~1)."""
    rng = np.random.default_rng(3)
    mu = 1.0
    z = []
    for _ in range(200):
        r = auroc(rng.normal(size=300), rng.normal(size=200) + mu)
        z.append((r.value - norm.cdf(mu / np.sqrt(2))) / r.se)
    z = np.array(z)
    assert abs(z.mean()) < 0.25 and 0.85 < z.std() < 1.2
    assert auroc([0, 0, 1, 1], [1, 1, 2, 2]).value == 0.875  # ties count a half
    with pytest.raises(ValueError, match="at least 2"):
        auroc([1.0], [2.0, 3.0])


def test_ood_scores():
    """S3 for a quadratic energy has a closed form: tau Euler steps multiply x by (1 - dt)^tau.
    On the ring, all three scores separate uniform noise from samples."""
    Q = E.Quadratic(np.eye(2))
    X = np.random.default_rng(1).normal(size=(50, 2))
    np.testing.assert_allclose(flow_displacement(Q, X, 0.1, 7), (1 - 0.9 ** 7) * np.linalg.norm(X, axis=1),
                               rtol=1e-13)
    rng = np.random.default_rng(2)
    s_in = scores(RING, RING.sample(2000, seed=4))
    s_out = scores(RING, rng.uniform(-6, 6, size=(2000, 2)))
    for k in ("S1", "S2", "S3"):
        assert auroc(s_in[k], s_out[k]).value > 0.75
    with pytest.raises(ValueError, match="unknown score"):
        scores(RING, X, which=("S9",))


def test_unsafe_mass_and_the_smallest_lambda():
    """Cell fractions of a disc give its area to O(h/sub); the bisection's lambda* is safe and
    lambda* - tol is not; particles at lambda* agree with the grid within their error bars."""
    c = np.array([4.0, 0.0])

    def unsafe(X):
        return np.linalg.norm(X - c, axis=1) < 1.0
    g = Grid([(-8, 8)] * 2, 64)
    area = cell_fractions(g, unsafe).sum() * g.cell_volume
    assert abs(area - np.pi) < 0.02
    Um = E.from_callable(lambda X: -np.exp(-((X - c) ** 2).sum(1) / 2), dim=2, name="bump")
    rho0 = densities.Gaussian(np.zeros(2), 2.0 * np.eye(2))
    times = np.linspace(0, 3, 13)
    r = smallest_lambda(RING, Um, g, rho0, times, unsafe, beta=0.05, lam_max=20.0, tol=1e-2)
    assert r.mass.max() <= 0.05
    tr = FokkerPlanck(RING - (r.lam - r.tol) * Um, g).solve(rho0, times)
    assert unsafe_mass(tr, unsafe).max() > 0.05
    lams = np.array([h[0] for h in r.history])
    worst = np.array([h[1] for h in r.history])
    order = np.argsort(lams)
    assert np.all(np.diff(worst[order]) <= 1e-12)  # monotone here, as bisection assumes
    ens = particles.langevin(RING - r.lam * Um, rho0.sample(10000, seed=1), 0.01, 300, save_every=50, seed=2)
    p, se = particle_unsafe_mass(ens, unsafe)
    grid_mass = unsafe_mass(FokkerPlanck(RING - r.lam * Um, g).solve(rho0, ens.times), unsafe)
    assert np.all(np.abs(p - grid_mass) < 4 * se + 3e-3)  # + the grid's O(h^2) and ULA's O(dt) biases
    with pytest.raises(ValueError, match="raise lam_max"):
        smallest_lambda(RING, Um, g, rho0, times, unsafe, beta=0.05, lam_max=0.5)
    with pytest.raises(ValueError, match="beta"):
        smallest_lambda(RING, Um, g, rho0, times, unsafe, beta=1.5)
