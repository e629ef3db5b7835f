"""The joint Gaussian mixture (label x coordinates): detailed balance of the product
generator, the joint Gibbs law, the Lyapunov identity, and particles against the exact
label law."""
import numpy as np
import pytest

from fokkerplanck import Grid, densities
from fokkerplanck.discrete import mixed as Mx
from particles import mixed as Pm


def _model():
    return Mx.JointMixture([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]], [0.5, 0.8, 0.4], [0.5, 0.3, 0.2])


def test_generator_has_detailed_balance_and_keeps_the_joint_law():
    space = Mx.MixedSpace(_model(), Grid([(-6, 6), (-5, 7)], 48))
    me = space.master_equation()           # runs check_generator: detailed balance towards pi(k, c)
    assert np.abs(me.L @ space.pi).max() < 1e-13 * np.abs(me.L.diagonal()).max()
    # the joint law's label marginal is the weights (quadrature error of the cells only)
    np.testing.assert_allclose(space.label_law(space.pi)[0], [0.5, 0.3, 0.2], rtol=2e-3)
    # its x-marginal is the mixture, to the same order
    mix = _model().marginal()
    rho = space.pi.reshape(3, -1).sum(0) / space.grid.cell_volume
    exact = np.exp(-mix.value(space.grid.points))
    assert np.abs(rho - exact).sum() * space.grid.cell_volume < 5e-3


def test_kl_decreases_at_the_rate_of_the_dirichlet_form():
    space = Mx.MixedSpace(_model(), Grid([(-6, 6), (-5, 7)], 32))
    me = space.master_equation()
    p0 = space.product_law([1.0, 0.0, 0.0], densities.Gaussian([0.0, 0.0], 1.0))
    P = me.solve(p0, [0.1, 0.5, 1.5])
    D = me.dirichlet(P)
    np.testing.assert_allclose(me.kl_rate(P), -D, rtol=1e-10)
    assert np.all(np.diff(me.kl(P)) < 0) and np.abs(P.sum(1) - 1).max() < 1e-12


def test_particles_match_the_exact_label_law():
    model = _model()
    space = Mx.MixedSpace(model, Grid([(-6, 6), (-5, 7)], 64))
    me = space.master_equation()
    p0 = space.product_law([1.0, 0.0, 0.0], densities.Gaussian([0.0, 0.0], 0.5))
    times = np.linspace(0.0, 1.0, 5)   # the saves of 500 steps of 2e-3, every 125
    exact = space.label_law(me.solve(p0, times))
    N = 20_000
    x0 = densities.Gaussian([0.0, 0.0], 0.5).sample(N, seed=1)
    t, labs, pos = Pm.simulate(model, np.zeros(N, dtype=int), x0, 2e-3, 500, save_every=125, seed=2)
    np.testing.assert_allclose(t, times)
    for s in range(1, times.size):
        f = np.bincount(labs[s], minlength=3) / N
        se = np.sqrt(f * (1 - f) / N)
        # 4.5 standard errors, plus the O(dt) bias of the time-stepping and the O(h^2) of the grid
        assert np.all(np.abs(f - exact[s]) < 4.5 * se + 5e-3), (s, f, exact[s])


def test_bad_input():
    with pytest.raises(ValueError, match="K >= 2"):
        Mx.JointMixture([[0.0, 0.0]], [1.0])
    with pytest.raises(ValueError, match="dimension"):
        Mx.MixedSpace(_model(), Grid([(-5, 5)], 16))
    with pytest.raises(ValueError, match="labels0"):
        Pm.simulate(_model(), np.full(4, 3), np.zeros((4, 2)), 1e-2, 10)
    space = Mx.MixedSpace(_model(), Grid([(-6, 6), (-5, 7)], 16))
    with pytest.raises(ValueError, match="probability vector"):
        space.product_law([0.5, 0.6, 0.0], densities.Gaussian([0.0, 0.0], 1.0))


def test_particles_same_bits_for_any_split_and_save_schedule():
    model = _model()
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(400, 2))
    k0 = rng.integers(0, 3, 400)
    _, la, pa = Pm.simulate(model, k0, x0, 1e-2, 60, seed=7, save_every=7)
    _, lb, pb = Pm.simulate(model, k0[150:300], x0[150:300], 1e-2, 60, seed=7, index_offset=150)
    np.testing.assert_array_equal(pa[-1][150:300], pb[-1])
    np.testing.assert_array_equal(la[-1][150:300], lb[-1])
    # labels do move: ~45% drew again (1 - e^{-0.6}), about 19% landed on another label
    assert (la[-1] != k0).mean() > 0.1


def test_particles_take_save_with_the_keywords_bits():
    from particles import Save

    model = _model()
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(300, 2))
    k0 = rng.integers(0, 3, 300)
    ta, la, pa = Pm.simulate(model, k0, x0, 1e-2, 30, seed=4, save_every=7)
    tb, lb, pb = Pm.simulate(model, k0, x0, 1e-2, 30, seed=4, save=Save(every=7))
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(pa, pb)
    tc, lc, pc = Pm.simulate(model, k0, x0, 1e-2, 30, seed=4, save=Save(times=[0.14, 0.3]))
    np.testing.assert_array_equal(tc, ta[[2, 5]])
    np.testing.assert_array_equal(lc, la[[2, 5]])
    np.testing.assert_array_equal(pc, pa[[2, 5]])
    with pytest.raises(ValueError, match="save_every= given together with save="):
        Pm.simulate(model, k0, x0, 1e-2, 30, save_every=7, save=Save(every=7))
    with pytest.raises(ValueError, match="Save.store='summaries' is not supported"):
        Pm.simulate(model, k0, x0, 1e-2, 30, save=Save(store="summaries"))
    with pytest.raises(ValueError, match="not a multiple of dt"):
        Pm.simulate(model, k0, x0, 1e-2, 30, save=Save(times=[0.155, 0.3]))
