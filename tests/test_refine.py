"""Ground truth with error bars: the Richardson estimates of ``solve(..., refine=True)``
against the OU closed forms (KL, R_t, densities), their observed orders, the
warning when the grids do not resolve the density, and storage."""
import numpy as np
import pytest

from fokkerplanck import Continuity, FokkerPlanck, Grid, Trajectory, densities as Dn, energies as E
from fokkerplanck import diagnostics as D
from fokkerplanck.refine import coarse_grid, restrict

A = np.array([[1.5, 0.5], [0.5, 0.8]])
M0, S0 = np.array([2.0, -1.0]), np.array([[0.3, 0.0], [0.0, 0.5]])
TIMES = np.array([0.0, 0.1, 0.3, 1.0])


def _closed(flow):
    mom = [D.ou_moments(A, [0, 0], M0, S0, 1.0, t, flow=flow) for t in TIMES]
    kl = np.array([D.gaussian_kl(m, S, np.zeros(2), np.linalg.inv(A)) for m, S in mom])
    R = np.array([D.gaussian_ratio(m, S, A, [0, 0], 1.0)[2] for m, S in mom])
    return mom, kl, R


def test_richardson_estimates_bracket_the_true_error_fokker_planck(tmp_path):
    g = Grid([(-7, 7), (-7, 7)], 64)
    tr = FokkerPlanck(E.Quadratic(A), g).solve(Dn.Gaussian(M0, S0), TIMES, refine=True)
    r = tr.refinement
    assert r.cells == [(64, 64), (32, 32), (16, 16)] and r.reliable
    for k in ("kl", "ratio", "density"):
        assert abs(r.observed_order[k] - 2.0) < 0.3, r.observed_order
    mom, kl_true, R_true = _closed("fokker-planck")
    t = slice(1, None)  # at t = 0 the only error is the box's truncation (2.5e-8), which refine does not see
    err = tr.kl()[t] - kl_true[t]
    # the estimate is the true error to within 10%, and the extrapolation removes >= 95% of it
    np.testing.assert_allclose(r.kl_error[t], err, rtol=0.1)
    assert np.all(np.abs(r.kl_extrapolated[t] - kl_true[t]) < 0.05 * np.abs(err))
    assert abs(tr.kl()[0] - kl_true[0]) < 1e-7
    err_R = tr.ratio()[t] - R_true[t]
    np.testing.assert_allclose(r.ratio_error[t], err_R, rtol=0.1)
    # R_t's higher-order remainder is larger at 64^2: the extrapolation removed 94-97% (measured)
    assert np.all(np.abs(r.ratio_extrapolated[t] - R_true[t]) < 0.1 * np.abs(err_R))
    # densities, on the 32^2 grid: exact cell averages of the Gaussians by a 16x finer midpoint rule
    g2, fine = coarse_grid(g, 2), Grid(g.bounds, 32 * 16)
    exact = np.stack([restrict(fine, D.ou_density(fine, m, S), 16) for m, S in mom])
    l1 = lambda a: np.abs(a).reshape(len(TIMES), -1).sum(axis=1) * g2.cell_volume  # noqa: E731
    true_l1 = l1(restrict(g, tr.densities, 2) - exact)
    assert np.all((r.density_error > 0.5 * true_l1) & (r.density_error < 2.0 * true_l1)), (r.density_error, true_l1)
    assert np.all(l1(r.densities_extrapolated - exact) < 0.1 * true_l1)
    # stored with the trajectory
    tr.save(tmp_path / "t.h5")
    back = Trajectory.load(tmp_path / "t.h5").refinement
    assert back.cells == r.cells and back.reliable
    np.testing.assert_array_equal(back.kl_error, r.kl_error)
    assert back.observed_order == pytest.approx(r.observed_order)
    from fokkerplanck.app.cli import main

    assert main(["info", str(tmp_path / "t.h5")]) == 0


def test_unresolved_deterministic_flow_is_flagged():
    """The deterministic OU flow shrinks the covariance like e^{-2At}: at 32^2 cells the
    finite-volume densities are not resolved by t = 1, and refine says so."""
    g = Grid([(-7, 7), (-7, 7)], 32)
    with pytest.warns(RuntimeWarning, match="not resolved"):
        tr = Continuity(E.Quadratic(A), g).solve(Dn.Gaussian(M0, S0), TIMES, refine=True)
    assert not tr.refinement.reliable
    _, kl_true, _ = _closed("continuity")
    # and the flag is warranted: somewhere the estimate misses the true error by more than 25%
    miss = np.abs(tr.refinement.kl_error[1:] - (tr.kl()[1:] - kl_true[1:])) / np.abs(tr.kl()[1:] - kl_true[1:])
    assert miss.max() > 0.25, miss


def test_refine_inputs():
    U = E.Quadratic([[1.0]])
    with pytest.raises(ValueError, match="divisible by 4"):
        FokkerPlanck(U, Grid([(-5, 5)], 30)).solve(Dn.Gaussian([0.0]), [0.0, 0.1], refine=True)
    with pytest.raises(ValueError, match="at least 2 levels"):
        FokkerPlanck(U, Grid([(-5, 5)], 32)).solve(Dn.Gaussian([0.0]), [0.0, 0.1], refine=1)
    # an array initial law is restricted to the coarse grids, mass kept exactly
    g = Grid([(-5, 5)], 64)
    rho0 = Dn.Gaussian([0.5], 0.5).on_grid(g)
    tr = FokkerPlanck(U, g).solve(rho0, [0.0, 0.2], refine=2)
    assert tr.refinement.cells == [(64,), (32,)]
    np.testing.assert_allclose(tr.refinement.coarse[0].mass(), 1.0, atol=1e-13)
