"""Results that carry their own reliability: per-time validity of grid densities, the
exact deterministic diagnostics of a run, and figures that never draw an invalid value
as a line."""
import warnings

import h5py
import numpy as np
import pytest

from fokkerplanck import Continuity, FokkerPlanck, Grid, Trajectory, densities as Dn, energies as E
from fokkerplanck.app import cli
from fokkerplanck.app.plots import drawn_values
from fokkerplanck.app.runner import plot_run, read_run
from fokkerplanck.flows.continuity import forward_lagrangian

U = E.DoubleWell(1, barrier=2.0)
G = Grid([(-3, 3)], 120)
RHO0 = Dn.Gaussian([0.3], 0.5)
TIMES = np.linspace(0, 4, 21)


@pytest.fixture(scope="module")
def flows():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the mass warnings are what validity records
        fp = FokkerPlanck(U, G).solve(RHO0, TIMES)
        fv = Continuity(U, G).solve(RHO0, TIMES)
        lag = Continuity(U, G, method="lagrangian").solve(RHO0, TIMES)
    exact = forward_lagrangian(U, RHO0, TIMES, log_partition=G.log_partition(U, 1.0), rule="midpoint", nodes=4000)
    return fp, fv, lag, exact


def test_validity_flags_what_is_not_a_resolved_probability_law(flows):
    """Fokker-Planck (resolved, mass kept) is valid at every save; the deterministic flow's
    finite volumes lose the collapsing density from the second save on, and the flags are
    earned: where valid the grid KL is the exact one (forward characteristics, 4000
    nodes) to 1.5 %, where first invalid it is 25 % off.  The Lagrangian point values
    lose mass: ``mass_ok`` says so."""
    fp, fv, lag, exact = flows
    assert fp.valid().all()
    v = fv.validity()
    assert v["valid"][0] and not v["valid"][1:].any() and v["mass_ok"].all()
    assert abs(fv.kl()[0] - exact.kl[0]) < 0.015 * exact.kl[0]
    assert abs(fv.kl()[1] - exact.kl[1]) > 0.25 * exact.kl[1]
    assert v["coarse_kl_loss"][1] > 0.1 * fv.kl()[1]
    lv = lag.validity()
    assert not lv["mass_ok"][-1] and not lv["valid"][-1] and abs(lag.mass()[-1] - 1) > 0.5


def test_validity_is_stored_with_the_trajectory(flows, tmp_path):
    fv = flows[1]
    fv.save(tmp_path / "fv.h5")
    with h5py.File(tmp_path / "fv.h5") as f:
        np.testing.assert_array_equal(f["diagnostics/valid"][()], fv.valid())
        assert "resolved" in f["diagnostics/resolved"].attrs["description"]
    back = Trajectory.load(tmp_path / "fv.h5")
    np.testing.assert_array_equal(back.valid(), fv.valid())


def test_a_curve_draws_only_kl_values():
    kl = np.array([1.0, 0.5, 0.2, 0.01, -0.003, np.nan, 0.4])
    se = np.array([0.01, 0.01, 0.01, 0.01, 0.004, 0.01, 0.01])
    valid = np.array([True, True, True, True, True, True, False])
    line, upper = drawn_values(kl, valid=valid, stderr=se)
    np.testing.assert_array_equal(np.isfinite(line), [True, True, True, False, False, False, False])
    # below resolution (KL - 2 se <= 0): the estimators' upper bound, never the value itself
    from particles.estimators import Estimate

    np.testing.assert_allclose(upper[[3, 4]], [Estimate(0.01, 0.01, "knn").upper_bound, Estimate(-0.003, 0.004, "knn").upper_bound])
    np.testing.assert_allclose(upper[[3, 4]], [0.03, 0.008])
    assert np.isnan(upper[[0, 1, 2, 5, 6]]).all()


SMALL_1D = """
temperature = 1.0
[energy]
type = "DoubleWell"
dim = 1
barrier = 2.0
[grid]
bounds = [[-4.0, 4.0]]
cells = 160
[initial]
type = "Gaussian"
mean = [0.3]
cov = 0.5
[times]
stop = 1.0
num = 21
[fokker_planck]
method = "exact"
[continuity]
method = "finite-volume"
[deterministic_particles]
n = 4000
dt = 0.01
seed = 2
"""


def test_a_run_reports_the_exact_deterministic_flow_and_marks_the_grid(tmp_path, capsys):
    """The run file holds the deterministic KL from forward characteristics (it agrees
    with the tracked particles within their error bars), the grid trajectory's validity,
    stopping times from exact data with their brackets; ``fpk info`` says NOT VALID, and
    the figure draws the grid's deterministic KL only at valid saves."""
    cfg = tmp_path / "dw.toml"
    cfg.write_text(SMALL_1D)
    out = tmp_path / "dw.h5"
    assert cli.main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    r = read_run(out)
    ex, det = r["continuity-exact"], r["deterministic-particles"]
    kl_p, se_p = det["summaries/kl"], det["summaries/kl_se"]
    assert np.all(np.abs(ex["kl"] - kl_p) < 4 * se_p + 0.02)  # + the O(dt^4) RK4 and the grid sampling of rho0
    valid = r["validity"]["continuity"]["valid"]
    assert valid[0] and not valid.all()
    stops = {(s["name"], s["source"].split(" (")[0]): s for s in r["stopping"]}
    td = stops[("tau_det", "exact R_t")]
    assert td["bracket"][0] <= td["time"] <= td["bracket"][1] and "stderr" not in td
    assert cli.main(["info", str(out)]) == 0
    assert "NOT VALID" in capsys.readouterr().out
    fig = plot_run(out)
    ax_kl = fig.axes[-2]
    grid_lines = [ln for ln in ax_kl.get_lines() if ln.get_label().startswith("deterministic, grid")]
    assert grid_lines, [ln.get_label() for ln in ax_kl.get_lines()]
    for ln in grid_lines:
        x, y = ln.get_xdata(), np.asarray(ln.get_ydata(), dtype=float)
        drawn = np.isfinite(y)
        assert drawn.any()
        times = r["validity"]["continuity"]["times"]
        assert set(np.round(x[drawn], 9)) <= set(np.round(times[valid], 9))


def test_validity_pools_every_axis():
    """2D: the Gibbs law itself is resolved (its KL to itself is 0, so is the loss), a
    narrow Gaussian on a coarse grid is not, whichever axis is narrow."""
    g = Grid([(-4, 4), (-4, 4)], (40, 40))
    V = E.Quadratic(np.eye(2))
    for cov in ([[0.02, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 0.02]]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tr = Continuity(V, g).solve(Dn.Gaussian([0.5, -0.5], cov), [0.0])
        assert not tr.validity()["resolved"][0], cov
    wide = Continuity(V, g).solve(Dn.Gaussian([0.5, -0.5], [[1.0, 0.2], [0.2, 0.8]]), [0.0])
    assert wide.valid()[0]


def test_a_gibbs_law_that_underflows_at_the_walls_is_still_resolved():
    """On [-6, 6] the double well's exp(-U) underflows to 0 near the walls while the
    Fokker-Planck density there is tiny but positive: pooling must work in logs."""
    tr = FokkerPlanck(E.DoubleWell(1, barrier=1.0), Grid([(-6, 6)], 600)).solve(Dn.Gaussian([0.0], 1.0), [0.0, 0.1])
    assert (tr.gibbs == 0).any() and tr.valid().all()


def test_sweep_references_compare_only_points_that_differ_in_resolution():
    """A sweep over temperature and cells compares each point with the finest grid at its own
    temperature; a sweep over temperature alone has no reference at all."""
    from fokkerplanck.app.sweep import _references

    rows = [{"temperature": T, "cells": c, "file": f"T{T}_c{c}"} for T in (0.5, 1.0) for c in (32, 64, 128)]
    refs = _references(rows, {"temperature": [0.5, 1.0], "cells": [32, 64, 128]})
    assert [r["file"] for r in refs] == ["T0.5_c128"] * 3 + ["T1.0_c128"] * 3
    assert _references(rows[:2], {"temperature": [0.5, 1.0]}) == [None, None]
    # more particles and a smaller step are finer too
    rows = [{"n": n, "dt": dt, "file": f"n{n}_dt{dt}"} for n in (100, 10000, 1000) for dt in (0.01, 0.001)]
    refs = _references(rows, {"n": [100, 10000, 1000], "dt": [0.01, 0.001]})
    assert {r["file"] for r in refs} == {"n10000_dt0.001"}


def test_dirichlet_form_is_infinite_only_for_a_real_inflow_into_empty_states():
    """A point mass at t = 0 has D = inf (d/dt KL = -inf).  At t > 0 exact zeros are the
    propagator's truncation (probabilities below ~1e-15): D stays finite and equal, to
    1e-7, to D of the law before those entries were zeroed."""
    from fokkerplanck.discrete import finite as Dz

    space = Dz.FiniteSpace(Dz.ising((3, 3), J=1.0), temperature=2.27)
    me = Dz.MasterEquation(space)
    P = me.solve(space.point_mass(np.ones(9, dtype=int)), [0.0, 0.02])
    assert me.dirichlet(P[:1])[0] == np.inf
    q = P[1].copy()
    q[q < 1e-15] = 0.0
    assert (q == 0).sum() > 50
    D, Dq = me.dirichlet(P[1:])[0], me.dirichlet(q[None])[0]
    assert np.isfinite(Dq) and abs(Dq - D) < 1e-7 * D
    # the identity d/dt KL = -D holds on such a law too: both sides sum the same live pairs
    r = P[1].copy()
    r[r < 1e-11] = 0.0
    assert abs(me.dirichlet(r[None])[0] + me.kl_rate(r[None])[0]) < 1e-6 * D


def test_trajectory_files_describe_themselves(flows, tmp_path):
    """Every dataset says what it holds, times and cell centres are dimension scales, and
    xarray (optional extra) opens the file with coordinates, or takes to_xarray()."""
    fv = flows[1]
    fv.save(tmp_path / "fv.h5")
    with h5py.File(tmp_path / "fv.h5") as f:
        for name in ("times", "x_0", "densities", "diagnostics/kl", "diagnostics/valid"):
            assert f[name].attrs["description"], name
        assert f["densities"].dims[0][0] == f["times"] and f["densities"].dims[1][0] == f["x_0"]
        assert list(f.attrs["grid_cells"]) == [120] and f.attrs["method"] == "finite-volume"
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    ds = xr.open_dataset(tmp_path / "fv.h5", engine="h5netcdf")
    assert set(ds["densities"].dims) == {"times", "x_0"}
    np.testing.assert_array_equal(ds["x_0"].values, G.axes[0])
    x = fv.to_xarray()
    np.testing.assert_array_equal(x["valid"].values, fv.valid())
    np.testing.assert_allclose(x["kl"].sel(time=TIMES[4]).item(), fv.kl()[4])


def test_a_curve_with_no_valid_save_draws_nothing_and_marks_no_stopping_time():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fokkerplanck.app.plots import plot_kl

    fig, ax = plt.subplots()
    t = np.linspace(0, 1, 5)
    plot_kl(ax, t, [1.0, 0.5, 0.4, 0.6, 0.9], label="grid", ratio=[0.2, 0.6, 1.1, 1.5, 2.0], valid=np.zeros(5, bool))
    assert all(not np.isfinite(np.asarray(ln.get_ydata(), dtype=float)).any() for ln in ax.get_lines())
    plt.close(fig)


def test_fpk_info_and_plot_read_a_sweep_summary(tmp_path, capsys):
    from fokkerplanck.app import sweep as Sw
    from fokkerplanck.app.runner import load_config

    cfg = tmp_path / "q.toml"
    cfg.write_text("[energy]\ntype = 'Quadratic'\nA = [[1.0]]\n[grid]\nbounds = [[-5.0, 5.0]]\ncells = 40\n"
                   "[initial]\ntype = 'Gaussian'\nmean = [1.0]\ncov = 0.3\n[times]\nstop = 0.2\nnum = 3\n"
                   "[fokker_planck]\n[continuity]\nmethod = 'finite-volume'\n")
    Sw.sweep(load_config(cfg), {"cells": [20, 40]}, tmp_path / "sw", log=lambda *a: None)
    summary = tmp_path / "sw" / "summary.h5"
    assert cli.main(["info", str(summary)]) == 0
    text = capsys.readouterr().out
    assert "fpk sweep summary, 2 points over cells" in text and "finest point cells=40" in text
    assert cli.main(["plot", str(summary), "-o", str(tmp_path / "sw.png")]) == 0 and (tmp_path / "sw.png").exists()


def test_a_trajectory_states_its_status_in_words(flows):
    fp, fv, lag, _ = flows
    assert fp.status == "valid" and fp.message == ""
    assert fv.status == "partially valid" and fv.message.startswith("20 of 21 saved times are not valid")
    assert "unresolved on the grid" in fv.message and "t = 0.2" in fv.message
