"""Hostile input: bad values, damaged and malicious files, configs with typos and code,
concurrent writers.  Every case asserts a clear error (its type, and a message that
names the bad value or key) or a documented, correct behaviour.  None may end in a
raw traceback from inside numpy, numba or h5py, run code named by data, or leave a
partial file under a final name.

The fault tests (SIGKILL during ``fpk run`` and ``fpk sweep``) are in
``test_faults.py``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import textwrap
import warnings
import _thread

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import particles
from fokkerplanck import Continuity, FokkerPlanck, Grid, densities as Dn, energies as E
from fokkerplanck._core.files import PathBusyError, PathLock, atomic_h5, stale_temporaries
from fokkerplanck._core.validate import finite_array, positive_float, positive_int, spd_matrix
from fokkerplanck.app.cli import main
from fokkerplanck.diagnostics import kl_grid
from fokkerplanck.operators.expm import ChebyshevBudgetError, chebyshev_expm_multiply
from fokkerplanck.app.runner import check_config, load_config
from fokkerplanck.results import SpecOnlyEnergy, Trajectory
from particles import estimators as est

from conftest import QUADRATIC_KERNELS_1D

Q2 = E.Quadratic(np.eye(2))
G2 = Grid([(-4, 4), (-4, 4)], 16)
G1 = Grid([(-5, 5)], 40)
Q1 = E.Quadratic([[1.0]])


def _cases(*rows):
    return pytest.mark.parametrize("make, exc, match", rows, ids=[r[2][:40] for r in rows])


# ---------------------------------------------------------------------------------------
# Energies: constructors, evaluation, specs (data never names code)
@_cases(
    (lambda: E.Quadratic([[1, 0, 0], [0, 1, 0]]), ValueError, "square"),
    (lambda: E.Quadratic([[1, np.nan], [np.nan, 1]]), ValueError, "NaN"),
    (lambda: E.Quadratic([[1, 2], [0, 1]]), ValueError, "symmetric"),
    (lambda: E.Quadratic([[1, 0], [0, -1]]), ValueError, "positive definite"),
    (lambda: E.Quadratic(np.eye(2), [0, 0, 0]), ValueError, r"shape \(2,\)"),
    (lambda: E.Quadratic("abc"), ValueError, "real numbers"),
    (lambda: E.DoubleWell(0), ValueError, "dim"),
    (lambda: E.DoubleWell(1.5), ValueError, "dim"),
    (lambda: E.DoubleWell(1, barrier=np.nan), ValueError, "barrier"),
    (lambda: E.DoubleWell(1, scale=-1), ValueError, "scale"),
    (lambda: E.GaussianMixture([]), ValueError, "means"),
    (lambda: E.GaussianMixture(np.zeros((2, 2, 2))), ValueError, "means"),
    (lambda: E.GaussianMixture([[0, 0]], -1.0), ValueError, "positive"),
    (lambda: E.GaussianMixture([[0, 0]], 0.0), ValueError, "positive"),
    (lambda: E.GaussianMixture([[0, 0], [1, 1]], 1.0, [1.0, -0.5]), ValueError, "non-negative"),
    (lambda: E.GaussianMixture([[0, 0], [1, 1]], 1.0, [0.0, 0.0]), ValueError, "positive sum"),
    (lambda: E.GaussianMixture([[0, 0], [1, 1]], [[1.0, 0], [0, 1]]), ValueError, "covs"),
    (lambda: E.GaussianMixture([[0, 0]], [[[1.0, 0], [0, -1]]]), ValueError, r"covs\[0\]"),
    (lambda: E.GaussianMixture([[0, np.inf]]), ValueError, "NaN or inf"),
    (lambda: E.GaussianMixture.ring(n=0), ValueError, "n must be an integer"),
    (lambda: E.GaussianMixture.ring(n=10**12), ValueError, "maximum"),
    (lambda: E.GaussianMixture.ring(n=2.5), ValueError, "n must be an integer"),
    (lambda: Q2 + E.Quadratic(np.eye(3)), ValueError, "different dimensions"),
    (lambda: E.Sum([1.0], ["not an energy"]), ValueError, "Energy terms"),
    (lambda: E.softmin(Q2), ValueError, "at least two"),
    (lambda: Q2.value(np.zeros((4, 3))), ValueError, "dimension 3"),
    (lambda: Q2.value(np.array([[np.nan, 0.0]])), ValueError, "NaN or inf"),
    (lambda: Q2.grad(np.array([[np.inf, 0.0]])), ValueError, "NaN or inf"),
    (lambda: Q2.value(np.zeros((2, 2, 2))), ValueError, "shape"),
    (lambda: Q2.residual(np.zeros(2), temperature=-1), ValueError, "temperature"),
    (lambda: Q2.log_partition(0.0), ValueError, "temperature"),
    (lambda: E.Custom(2, lambda x, p: 0.0, None, None), ValueError, "njit"),
    (lambda: E.register(int), TypeError, "Energy subclasses"),
)
def test_energy_inputs(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_params_are_read_only_and_kernels_stay_in_bounds():
    """Issue 11.7: ``ring().params[0] = 1e6`` segfaulted; parameters are fixed copies."""
    U = E.GaussianMixture.ring()
    for arr in (U.params, U.means, U.covs, U.weights, U.precisions, Q2.A, Q2.mean, (Q2 + Q2).coefs):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1e6
    with pytest.raises(AttributeError, match="fixed at construction"):
        U.params = np.zeros(3)
    # the kernels clip the component count to what the parameter vector holds
    p = np.array(U.params)
    p[0] = 1e6
    value, grad, lap, _ = U.kernels
    x = np.array([4.0, 0.1])
    assert value(x, p) == pytest.approx(U.value(x), rel=1e-14)
    assert lap(x, p) == pytest.approx(U.laplacian(x), rel=1e-12)


@_cases(
    (lambda: E.from_spec("Quadratic"), ValueError, "dict with a 'type'"),
    (lambda: E.from_spec({"A": [[1.0]]}), ValueError, "dict with a 'type'"),
    (lambda: E.from_spec({"type": "Quadratik", "A": [[1.0]]}), ValueError, "did you mean 'Quadratic'"),
    (lambda: E.from_spec({"type": "np.savetxt", "fname": "x", "X": [1]}), ValueError, "unknown energy type 'np.savetxt'"),
    (lambda: E.from_spec({"type": "__class__"}), ValueError, "unknown energy type"),
    (lambda: E.from_spec({"type": ["Quadratic"]}), ValueError, "unknown energy type"),
    (lambda: E.from_spec({"type": "Quadratic", "A": [[1.0]], "meen": [0]}), ValueError, "'meen' .*did you mean 'mean'"),
    (lambda: E.from_spec({"type": "Quadratic"}), ValueError, r"missing the keys \['A'\]"),
    (lambda: E.from_spec({"type": "Sum"}), ValueError, "terms"),
    (lambda: E.from_spec({"type": "Sum", "terms": [{"coef": 1.0}]}), ValueError, "malformed"),
    (lambda: E.from_spec({"type": "SoftMin", "energies": "x"}), ValueError, "energy spec is a dict"),
    (lambda: E.from_spec({"type": "Custom", "dim": 1, "value": "os:system", "grad": "os:system", "lap": "os:system"}),
     E.UnresolvedEnergyError, r"modules \['os'\]"),
    (lambda: E.from_spec({"type": "Custom", "dim": 1, "value": "math:sqrt", "grad": "math:sqrt", "lap": "math:sqrt"},
                         allow_modules=["math"]), ValueError, "not a numba.njit function"),
    (lambda: E.from_spec({"type": "Custom", "dim": 1, "value": "math.sqrt", "grad": "m:f()", "lap": "m:f"},
                         allow_modules=["math.sqrt", "m"]), ValueError, "module:function"),
    (lambda: E.from_config({"type": "importlib.import_module", "name": "os"}), ValueError,
     "unknown energy type 'importlib.import_module'"),
    (lambda: E.from_config({"type": "np.savetxt", "fname": "/tmp/x", "X": [1.0]}), ValueError, "unknown energy type"),
    (lambda: E.from_config({"type": "GaussianMixture.ring", "nn": 8}), ValueError, "'nn' .*did you mean 'n'"),
    (lambda: E.from_config({"type": "GaussianMixture.ring", "n": "8"}), ValueError, "n must be an integer"),
    (lambda: E.from_config({"type": "GaussianMixture.__init__", "means": [[0.0]]}), ValueError, "unknown energy type"),
    (lambda: E.from_config({"type": "GaussianMixture.sample", "n": 3}), ValueError, "unknown energy type"),
)
def test_energy_specs(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_no_file_is_written_by_a_spec(tmp_path):
    """Issue 11.1: ``type = "np.savetxt"`` wrote any file."""
    target = tmp_path / "pwned.txt"
    with pytest.raises(ValueError):
        E.from_config({"type": "np.savetxt", "fname": str(target), "X": [1.0], "header": "x"})
    with pytest.raises(ValueError):
        load_config_text(tmp_path, f'[energy]\ntype = "np.savetxt"\nfname = "{target}"\nX = [1.0]\n' + _FLOWS_REST)
    assert not target.exists()


# ---------------------------------------------------------------------------------------
# Grids and densities
@_cases(
    (lambda: Grid([(1, -1)], 8), ValueError, "lo < hi"),
    (lambda: Grid([(0, 1)] * 4, 8), ValueError, "1 to 3 axes"),
    (lambda: Grid([(0, np.nan)], 8), ValueError, "NaN"),
    (lambda: Grid([(0, 1)], 1), ValueError, "integer >= 2"),
    (lambda: Grid([(0, 1)], 2.5), ValueError, "2.5"),
    (lambda: Grid([(0, 1)], "a"), ValueError, "'a'"),
    (lambda: Grid([(0, 1)], True), ValueError, "True"),
    (lambda: Grid([(0, 1), (0, 1)], [4, 4, 4]), ValueError, r"\[4, 4, 4\]"),
    (lambda: Grid([(0, 1)], [10**11]), MemoryError, "GiB"),
    (lambda: Grid([(0, 1)] * 3, 10**5), MemoryError, "100000 x 100000 x 100000"),
    (lambda: Grid([(0, 1), (0, 1)], 4, periodic=[True, False, True]), ValueError, "periodic"),
    (lambda: Grid([(0, 1)], 4, periodic="yes"), ValueError, "periodic"),
    (lambda: Grid.from_spec({"bounds": [[0, 1]], "cells": [10**11]}), MemoryError, "GiB"),
    (lambda: Grid.from_spec({"bounds": [[0, 1]], "cels": 4}), ValueError, "'bounds' and 'cells'"),
    (lambda: Grid.from_spec({"bounds": [[0, 1]], "cells": 4, "periodc": True}), ValueError, "periodc"),
    (lambda: G1.check_density(-np.ones(40)), ValueError, "negative values"),
    (lambda: G1.check_density(np.full(40, np.nan)), ValueError, "NaN"),
    (lambda: G1.check_density(np.zeros(40)), ValueError, "zero mass"),
    (lambda: G1.check_density(np.ones(41)), ValueError, r"shape \(40,\)"),
    (lambda: G1.check_density(np.ones(40), normalise="raise"), ValueError, "not normalised"),
    (lambda: G1.sample(np.ones(40) / 10, -1), ValueError, "non-negative integer"),
    (lambda: G1.sample(np.ones(40) / 10, 2.5), ValueError, "2.5"),
    (lambda: G1.interpolate(np.ones(7), np.zeros((3, 1))), ValueError, "grid's shape"),
    (lambda: Dn.Gaussian([0, 0], [[1, 0], [0, -1]]), ValueError, "positive definite"),
    (lambda: Dn.Gaussian([0, 0], [1, 2, 3]), ValueError, r"shape \(2,\)"),
    (lambda: Dn.Gaussian([0, np.nan]), ValueError, "NaN"),
    (lambda: Dn.from_spec({"type": "Gausian", "mean": [0]}), ValueError, "did you mean 'Gaussian'"),
    (lambda: Dn.from_spec({"type": "Gaussian", "mean": [0], "covv": 1.0}), ValueError, "'covv'.*did you mean 'cov'"),
    (lambda: Dn.from_spec({"type": "Gaussian"}), ValueError, "needs the key 'mean'"),
    (lambda: Dn.Gibbs(Q2, temperature=-1.0), ValueError, "temperature"),
    (lambda: Dn.Gaussian([0.0]).sample(10**12), MemoryError, "10\\*\\*12|1000000000000 samples"),
    (lambda: Dn.Gaussian([0.0]).sample(-3), ValueError, "n must be an integer >= 0"),
    (lambda: E.GaussianMixture.ring().sample(10**12), MemoryError, "1000000000000 samples"),
    (lambda: G1.sample(np.ones(40) / 10, 10**12), MemoryError, "1000000000000 samples"),
)
def test_grid_and_density_inputs(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_unnormalised_density_is_rescaled_with_a_warning():
    with pytest.warns(RuntimeWarning, match="had mass 4"):
        rho = G1.check_density(np.full(40, 0.4))
    assert G1.integrate(rho) == pytest.approx(1.0, abs=1e-14)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10), st.text(max_size=3),
                 st.booleans(), st.none()))
def test_positive_float_accepts_exactly_the_positive_finite_numbers(x):
    ok = not isinstance(x, (str, bool, type(None))) and np.isfinite(float(x)) and float(x) > 0
    if ok:
        assert positive_float(x, "v") == float(x)
    else:
        with pytest.raises(ValueError, match="v must be a positive"):
            positive_float(x, "v")


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**7), st.booleans(), st.text(max_size=2)))
def test_positive_int_accepts_exactly_the_integers_in_range(x):
    ok = (not isinstance(x, (bool, str)) and np.isfinite(x) and float(x) == int(x) and 2 <= int(x) <= 10**6)
    if ok:
        assert positive_int(x, "n", minimum=2, maximum=10**6) == int(x)
    else:
        with pytest.raises(ValueError, match="n "):
            positive_int(x, "n", minimum=2, maximum=10**6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=6))
def test_finite_array_refuses_every_non_finite_entry(vals):
    a = np.array(vals)
    if np.all(np.isfinite(a)):
        np.testing.assert_array_equal(finite_array(vals, "a"), a)
    else:
        first = int(np.flatnonzero(~np.isfinite(a))[0])
        with pytest.raises(ValueError, match=rf"first at index \({first},\)"):
            finite_array(vals, "a")


@settings(max_examples=40, deadline=None)
@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3))
def test_spd_matrix_accepts_exactly_the_positive_definite_symmetric(a, b, c):
    A = np.array([[a, b], [b, c]])
    lam = np.linalg.eigvalsh(A).min()
    if lam > 1e-9 * max(1.0, abs(A).max()):
        np.testing.assert_allclose(spd_matrix(A, "A"), A)
    elif lam < -1e-9:
        with pytest.raises(ValueError, match="positive definite"):
            spd_matrix(A, "A")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.integers(-3, 300), st.floats(-3, 300)), min_size=1, max_size=3))
def test_grid_cells_validated(cells):
    bounds = [(0.0, 1.0)] * len(cells)
    if all(float(c) == int(c) and c >= 2 for c in cells):
        g = Grid(bounds, cells)
        assert g.cells == tuple(int(c) for c in cells)
    else:
        with pytest.raises(ValueError, match="cells must be an integer >= 2"):
            Grid(bounds, cells)


# ---------------------------------------------------------------------------------------
# Solvers
def _gauss1():
    return Dn.Gaussian([0.5], 0.5)


@_cases(
    (lambda: FokkerPlanck(Q2, G1), ValueError, "dimension 2 but grid has 1"),
    (lambda: FokkerPlanck(Q1, G1, temperature=0.0), ValueError, "temperature"),
    (lambda: FokkerPlanck(Q1, G1).solve(_gauss1(), [0.0, 1.0, 0.5]), ValueError, "non-decreasing"),
    (lambda: FokkerPlanck(Q1, G1).solve(_gauss1(), [-1.0, 1.0]), ValueError, "non-negative"),
    (lambda: FokkerPlanck(Q1, G1).solve(_gauss1(), [0.0, np.nan]), ValueError, "NaN"),
    (lambda: FokkerPlanck(Q1, G1).solve(_gauss1(), []), ValueError, "non-empty"),
    (lambda: FokkerPlanck(Q1, G1).solve(_gauss1(), [1.0], method="magic"), ValueError, "'magic'"),
    (lambda: FokkerPlanck(Q1, G1).solve(_gauss1(), [1.0], tol=-1.0), ValueError, "tol"),
    (lambda: FokkerPlanck(Q1, G1).solve(_gauss1(), [1.0], method="implicit", dt=-0.1), ValueError, "dt"),
    (lambda: FokkerPlanck(Q1, G1).solve(-np.ones(40), [1.0]), ValueError, "negative values"),
    (lambda: FokkerPlanck(Q1, G1).solve(np.full(40, np.nan), [1.0]), ValueError, "NaN"),
    (lambda: FokkerPlanck(Q1, Grid([(-60, 60)], 50), temperature=0.1), ValueError, "varies by"),
    (lambda: Continuity(Q1, G1, method="spectral"), ValueError, "'spectral'"),
    (lambda: Continuity(Q1, G1, reconstruction="weno"), ValueError, "'weno'"),
    (lambda: Continuity(Q1, G1, method="lagrangian").solve(np.ones(40) / 10, [0.0, 1.0]), ValueError, "logpdf"),
    (lambda: Continuity(Q1, G1).solve(_gauss1(), [0.0, 1.0], dt=10.0), ValueError, "stable"),
    (lambda: chebyshev_expm_multiply(lambda v: -v, np.ones(3), [1e12], 1.0), ChebyshevBudgetError, "more than"),
)
def test_solver_inputs(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_long_times_reach_the_gibbs_law_instead_of_a_truncated_expansion(monkeypatch):
    """Issue 11.3: at t = 1e7 the Chebyshev expansion stopped at 100000 terms and gave
    NaN (KL shown as 0) or a negative KL.  Now it restarts on segments and jumps to the
    Gibbs law once the spectral gap has decayed the rest.  A small budget of terms
    forces many segments on a grid small enough for the exact eigendecomposition,
    which is the reference at every time."""
    from fokkerplanck.operators import expm
    from fokkerplanck.flows import fokker_planck as solvers

    U = E.DoubleWell(1, barrier=2.0)
    g = Grid([(-3, 3)], 120)
    rho0 = Dn.Gaussian([0.3], 0.2)
    times = [0.0, 0.5, 3.0, 10.0, 40.0, 1e7]
    ref = FokkerPlanck(U, g).solve(rho0, times)  # eigh: exact for any t
    assert ref.info["exact"] == "eigh"
    np.testing.assert_allclose(ref.mass(), 1.0, atol=1e-12)  # its round-off zero eigenvalue drifted mass 4e-6
    monkeypatch.setattr(solvers, "EIGH_MAX_CELLS", 0)
    monkeypatch.setattr(expm, "KMAX", 256)
    fp = FokkerPlanck(U, g)
    tr = fp.solve(rho0, times)
    assert tr.info["exact"] == "chebyshev" and tr.info["segments"] > 5 and tr.info["gibbs_jump_outputs"] >= 1
    # errors add over the segments (about 80 here, each below tol = 1e-14 relative to ||w0||)
    assert np.abs(tr.densities - ref.densities).max() < 1e-11 * ref.densities.max()
    np.testing.assert_allclose(tr.mass(), 1.0, atol=1e-12)
    kl = tr.kl()
    # at rho = pi the sum rho (log rho - log pi) is log(mass) to round-off, ~1e-12 either sign
    assert np.all(np.isfinite(kl)) and kl.min() > -1e-11 and np.all(np.diff(kl) < 1e-11)
    np.testing.assert_allclose(tr.densities[-1], fp.gibbs, atol=1e-12 * fp.gibbs.max())
    with pytest.raises(ChebyshevBudgetError):  # one sweep never truncates: it raises
        chebyshev_expm_multiply(fp.symmetric.dot, np.ones(g.size), [1e7], fp.lam_max)


def test_nan_is_never_a_number_in_kl():
    rho = np.full((2, 40), 0.1)
    rho[1, 3] = np.nan
    kl = kl_grid(G1, rho, np.log(np.full(40, 0.1)))
    assert kl[0] == pytest.approx(0.0, abs=1e-14) and np.isnan(kl[1])


def test_mass_lost_through_the_box_is_reported():
    """Issue 11.9: an outward field on [-2, 2]^2: mass 0.02, KL -0.07, silently."""
    U = -1.0 * E.Quadratic(np.eye(2))
    g = Grid([(-2, 2), (-2, 2)], 24)
    with pytest.warns(RuntimeWarning, match="Lagrangian density has grid mass"):
        tr = Continuity(U, g, method="lagrangian").solve(Dn.Gaussian([0, 0], 0.25), [0.0, 2.0])
    assert tr.mass()[-1] < 0.5
    with pytest.warns(RuntimeWarning, match="not a divergence between probability laws"):
        tr.kl()


def test_wall_mass_is_reported_for_fokker_planck():
    with pytest.warns(RuntimeWarning, match="within two cells of the walls"):
        FokkerPlanck(Q1, Grid([(-1, 1)], 20)).solve(Dn.Gaussian([0.0], 1.0), [0.0, 0.1])


# ---------------------------------------------------------------------------------------
# Particles
X2 = np.zeros((10, 2))


@_cases(
    (lambda: particles.langevin(Q2, np.zeros((10, 3)), 0.01, 5), ValueError, r"shape \(N, 2\)"),
    (lambda: particles.langevin(Q2, np.full((10, 2), np.nan), 0.01, 5), ValueError, "x0 contains NaN"),
    (lambda: particles.langevin(Q2, np.zeros((0, 2)), 0.01, 5), ValueError, "no particles"),
    (lambda: particles.langevin(Q2, X2, 0.0, 5), ValueError, "dt"),
    (lambda: particles.langevin(Q2, X2, np.nan, 5), ValueError, "dt"),
    (lambda: particles.langevin(Q2, X2, 0.01, -5), ValueError, "n_steps"),
    (lambda: particles.langevin(Q2, X2, 0.01, 2.5), ValueError, "n_steps"),
    (lambda: particles.langevin(Q2, X2, 0.01, 5, save_every=0), ValueError, "save_every"),
    (lambda: particles.langevin(Q2, X2, 0.01, 5, method="rk45"), ValueError, "'rk45'"),
    (lambda: particles.langevin(Q2, X2, 0.01, 5, box=[(1, -1)] * 2), ValueError, "box"),
    (lambda: particles.langevin(Q2, X2 + 5, 0.01, 5, box=[(-1, 1)] * 2), ValueError, "outside the box"),
    (lambda: particles.langevin(Q2, X2, 0.01, 5, temperature=-1), ValueError, "temperature"),
    (lambda: particles.langevin(Q2, X2, 0.01, 5, store=5), ValueError, "store"),
    (lambda: particles.langevin(Q2, np.zeros((1000, 2)), 1e-3, 10**9, save_every=1), MemoryError, "store='memory'"),
    (lambda: particles.langevin(Q2, X2, 0.01, 5, summary_block=0), ValueError, "summary_block"),
    (lambda: particles.langevin(Q2, X2, 0.01, 5, index_offset=-1), ValueError, "index_offset"),
    (lambda: particles.gradient_flow(Q2, X2, 0.01, 5, method="rk45"), ValueError, "'rk45'"),
    (lambda: particles.gradient_flow(Q2, X2, 0.01, 5, track_logdensity=True, logrho0=np.zeros(3)), ValueError,
     r"logrho0 must have shape \(10,\)"),
    (lambda: est.kl_knn(np.zeros((5, 3)), Q2), ValueError, "dimension 3"),
    (lambda: est.kl_knn(np.random.default_rng(0).normal(size=(5, 2)), Q2, k=5), ValueError, "more than k = 5"),
    (lambda: est.kl_knn(np.random.default_rng(0).normal(size=(5, 2)), Q2, k=0), ValueError, "k must be"),
    (lambda: est.kl_knn(np.zeros((5, 2)), Q2), ValueError, "duplicate"),
)
def test_particle_inputs(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_unstable_step_warns_and_lost_particles_are_counted():
    X = np.random.default_rng(0).normal(size=(200, 2))
    U = E.Quadratic(50.0 * np.eye(2))
    with pytest.warns(RuntimeWarning) as rec:
        ens = particles.langevin(U, X, 0.1, 600, seed=0)  # |1 - 50 dt|^600 = 4^600 overflows
    msgs = " ".join(str(w.message) for w in rec)
    assert "stability limit" in msgs and "non-finite" in msgs
    assert ens.nonfinite == 200 and ens.alive[-1] == 0
    assert np.isnan(ens.summaries["ratio"][-1]) and np.isnan(ens.summaries["mean"][-1]).all()  # no estimate, never a number


def test_ctrl_c_stops_a_particle_run_at_the_next_bounded_call_and_keeps_the_saves(monkeypatch):
    """Ctrl-C was ignored inside the kernels until the next save.  Event-based (no wall clock):
    the interrupt is pressed when the first bounded compiled call returns, and the run must
    stop there, with the completed saves, instead of running its 100000 steps."""
    X = np.random.default_rng(0).normal(size=(20_000, 2))
    U = E.GaussianMixture.ring()
    calls = []

    def press(chunks):
        calls.append(chunks.done)
        if len(calls) == 1:
            _thread.interrupt_main()

    monkeypatch.setattr(particles.ensemble, "chunk_done", press)
    # interrupt_main does nothing while SIGINT is ignored (a test run started in the
    # background inherits that from the shell): Ctrl-C as in an interactive session
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(particles.ensemble.EnsembleInterrupted) as info:
            particles.langevin(U, X, 1e-3, 100_000, save_every=50_000, seed=0, summaries=False)
    finally:
        signal.signal(signal.SIGINT, old)
    part = info.value.partial
    assert isinstance(info.value, KeyboardInterrupt)
    assert len(calls) == 1 and 0 < calls[0] < 50_000   # stopped at the first call's end, mid-save
    assert part.meta["interrupted"] and part.times.size == 1 and part.positions.shape == (1, 20_000, 2)
    np.testing.assert_array_equal(part.positions[0], X)


# ---------------------------------------------------------------------------------------
# Files: damaged, foreign, malicious
def _write_traj(path, **changes):
    tr = FokkerPlanck(Q1, G1).solve(_gauss1(), [0.0, 0.5])
    tr.save(path)
    with h5py.File(path, "a") as f:
        for k, v in changes.items():
            if v is None:
                del f[k]
            else:
                f.attrs[k] = v
    return tr


@_cases(
    (lambda p: Trajectory.load(p / "missing.h5"), FileNotFoundError, "no such file"),
    (lambda p: Trajectory.load(_text(p / "t.h5", "not hdf5")), ValueError, "not a readable HDF5"),
    (lambda p: Trajectory.load(_write(p, format="something.else")), ValueError, "not a fokkerplanck trajectory"),
    (lambda p: Trajectory.load(_write(p, version=7)), ValueError, "version 7"),
    (lambda p: Trajectory.load(_write(p, version="x")), ValueError, "version 'x'"),
    (lambda p: Trajectory.load(_write(p, densities=None)), ValueError, r"missing datasets \['densities'\]"),
    (lambda p: Trajectory.load(_write(p, energy='{"type": "np.savetxt"}')), ValueError, "unknown energy type"),
    (lambda p: Trajectory.load(_write(p, energy="{not json")), ValueError, "damaged"),
    (lambda p: Trajectory.load(_write(p, energy="[1, 2]")), ValueError, "not a JSON object"),
    (lambda p: Trajectory.load(_write(p, grid='{"bounds": [[0, 1]], "cells": [100000000000]}')), MemoryError, "GiB"),
    (lambda p: Trajectory.load(_write(p, grid='{"bounds": [[0, 1]], "cells": [41]}')), ValueError, "do not match"),
    (lambda p: Trajectory.load(_write(p, temperature="hot")), ValueError, "damaged"),
    (lambda p: Trajectory.load(_write(p), energy=Q2), ValueError, "not the one stored"),
    (lambda p: Trajectory.load(_write(p), group="continuity"), ValueError, "single trajectory"),
)
def test_damaged_files(tmp_path, make, exc, match):
    with pytest.raises(exc, match=match):
        make(tmp_path)


def _text(path, text):
    path.write_text(text)
    return path


def _write(p, **changes):
    path = p / "t.h5"
    _write_traj(path, **changes)
    return path


@pytest.fixture
def trap_module(tmp_path, monkeypatch):
    """A module that, if ever imported, leaves a marker file (and has valid kernels)."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "fpk_trap.py").write_text(f"import numba, pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
                                          + QUADRATIC_KERNELS_1D)
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def test_reading_a_file_never_imports_code(tmp_path, trap_module):
    """Issue 11.2: opening a file imported the modules its ``energy`` attribute names."""
    spec = {"type": "Custom", "dim": 1, "params": [1.0], "value": "fpk_trap:value", "grad": "fpk_trap:grad",
            "lap": "fpk_trap:lap"}
    path = tmp_path / "t.h5"
    ref = _write_traj(path, energy=json.dumps(spec))
    tr = Trajectory.load(path)
    assert not trap_module.exists() and "fpk_trap" not in sys.modules
    assert isinstance(tr.energy, SpecOnlyEnergy) and not tr.energy_loaded
    np.testing.assert_array_equal(tr.kl(), ref.kl())  # the stored diagnostics
    np.testing.assert_array_equal(tr.ratio(), ref.ratio())
    with pytest.raises(ValueError, match="allow_modules"):
        tr.energy.value(np.zeros(1))
    for argv in (["info", str(path)], ["plot", str(path), "-o", str(tmp_path / "p.png")]):
        assert main(argv) == 0
    assert not trap_module.exists()
    # the caller may allow the module explicitly: then it is rebuilt and agrees
    tr2 = Trajectory.load(path, allow_modules=["fpk_trap"])
    assert trap_module.exists() and tr2.energy_loaded
    np.testing.assert_allclose(tr2.kl(), ref.kl(), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Writers: overwrite, protect, concurrency, stale temporaries
def test_atomic_writer_protects_inputs_and_existing_files(tmp_path):
    out = tmp_path / "o.h5"
    with atomic_h5(out) as f:
        f["x"] = 1
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        with atomic_h5(out, overwrite=False):
            pass
    with pytest.raises(ValueError, match="input of this run"):
        with atomic_h5(out, protect=[out]):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_h5(tmp_path / "nope" / "o.h5"):
            pass
    with pytest.raises(IsADirectoryError):
        with atomic_h5(tmp_path):
            pass
    with h5py.File(out) as f:
        assert f["x"][()] == 1
    assert sorted(os.listdir(tmp_path)) == ["o.h5"]  # no lock, no temporary left


def test_two_writers_of_one_path_are_serialised(tmp_path):
    out = tmp_path / "o.h5"
    with atomic_h5(out) as f:
        f["x"] = 1
        with pytest.raises(PathBusyError, match="another process is writing"):
            with atomic_h5(out):
                pass
    with PathLock(out):
        with pytest.raises(PathBusyError):
            PathLock(out).acquire()
    PathLock(out).acquire().release()  # free again


def test_stale_temporaries_are_removed_by_the_next_writer(tmp_path):
    out = tmp_path / "o.h5"
    for name in ("o.h5.abcd1234.tmp", "o.h5.zz_99xyz.tmp"):
        (tmp_path / name).write_text("partial")
    (tmp_path / "other.h5.abcd1234.tmp").write_text("not ours")
    assert len(stale_temporaries(out)) == 2
    with atomic_h5(out) as f:
        f["x"] = 1
    assert sorted(os.listdir(tmp_path)) == ["o.h5", "other.h5.abcd1234.tmp"]


def test_a_failed_save_leaves_nothing(tmp_path):
    out = tmp_path / "o.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_h5(out) as f:
            f["x"] = 1
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------
# Configs
_FLOWS_REST = textwrap.dedent("""
    [grid]
    bounds = [[-5.0, 5.0]]
    cells = 40
    [initial]
    type = "Gaussian"
    mean = [0.5]
    cov = 0.5
    [times]
    stop = 0.2
    num = 3
    [fokker_planck]
    """)
_OK = '[energy]\ntype = "Quadratic"\nA = [[1.0]]\n' + _FLOWS_REST


def load_config_text(tmp_path, text):
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    return load_config(p)


@_cases(
    ("tempreature = 0.25\n" + _OK, ValueError, "'tempreature' .*did you mean 'temperature'"),
    (_OK.replace("cells = 40", "celss = 40"), ValueError, "needs 'bounds' and 'cells'|'celss'"),
    (_OK + "periodc = true\n", ValueError, r"\[fokker_planck\]: unknown key 'periodc'"),
    (_OK.replace("cov = 0.5", "cov = 0.5\ncovv = 1"), ValueError, "'covv'"),
    ('kind = "flow"\n' + _OK, ValueError, "did you mean 'flows'"),
    (_OK.replace("[times]\nstop = 0.2\nnum = 3\n", ""), ValueError, r"lacks the tables \['times'\]"),
    (_OK.replace('"Quadratic"', '"np.savetxt"'), ValueError, "unknown energy type 'np.savetxt'"),
    (_OK.replace('"Quadratic"', '"importlib.import_module"'), ValueError, "unknown energy type"),
    ('[energy]\ntype = "Custom"\ndim = 1\nvalue = "os:system"\ngrad = "os:system"\nlap = "os:system"\n' + _FLOWS_REST,
     ValueError, "never imports code"),
    (_OK + "[particles]\nn = 1e12\ndt = 0.1\n", MemoryError, "n = 1000000000000 particles"),
    (_OK + "[particles]\nn = 2.5\ndt = 0.1\n", ValueError, "n must be an integer"),
    (_OK + "[particles]\nn = 10\ndt = 0.03\n", ValueError, "multiple of dt"),
    (_OK + "[particles]\nn = 10\ndt = -0.1\n", ValueError, "dt must be a positive"),
    (_OK + "[particles]\nn = 10\n", ValueError, "needs 'n' and 'dt'"),
    (_OK + "[particles]\nn = 10\ndt = 0.1\nmethd = 'mala'\n", ValueError, "'methd'.*did you mean 'method'"),
    (_OK.replace("stop = 0.2", "start = 1.0\nstop = 0.2"), ValueError, "0 <= start < stop"),
    (_OK.replace("num = 3", "num = 0"), ValueError, "num must be an integer >= 1"),
    (_OK.replace("num = 3", "num = 1000000000"), ValueError, "maximum"),
    (_OK.replace("stop = 0.2", "stop = nan"), ValueError, "finite number"),
    ('temperature = "hot"\n' + _OK, ValueError, "temperature must be a positive"),
    ("temperature = -1\n" + _OK, ValueError, "temperature must be a positive"),
    (_OK.replace("cells = 40", "cells = 100000000000"), MemoryError, "GiB"),
    (_OK.replace("[grid]", "grid = 3\n[grd]"), ValueError, "grd"),
    (_OK + "[stopping]\neps = [-1.0]\n", ValueError, "eps must be a positive"),
    (_OK + "[stopping]\neps = 0.01\n", ValueError, "list"),
    (_OK.replace('A = [[1.0]]', 'A = [[1.0, 0], [0, 1.0]]'), ValueError, "dimension 2 but \\[grid\\] has 1"),
    (_OK.replace('mean = [0.5]', 'mean = [0.5, 0.5]'), ValueError, "\\[initial\\] has dimension 2"),
    (_OK.replace("[grid]", "[grid]\n[[x]]"), ValueError, "not valid TOML|unknown key"),
    ("this is = not toml = at all", ValueError, "not valid TOML"),
    ('kind = "composition"\n[grid]\nbounds = [[-9, 9], [-9, 9]]\ncells = 32\n[initial]\ntype = "Gaussian"\n'
     'mean = [0, 0]\ncov = 9.0\n[composition]\nn = 10\nnegatoin = 0.3\n', ValueError, "'negatoin'.*did you mean 'negation'"),
)
def test_bad_configs(tmp_path, make, exc, match):
    with pytest.raises(exc, match=match):
        load_config_text(tmp_path, make)


def test_config_errors_come_before_any_work(tmp_path, monkeypatch):
    """Issue 11.10: ``n = 1e12`` failed deep in numpy after the grid solves had run."""
    def no_work(*a, **k):
        raise AssertionError("a solver ran before the config was checked")

    monkeypatch.setattr(FokkerPlanck, "solve", no_work)
    monkeypatch.setattr(Continuity, "solve", no_work)
    with pytest.raises(MemoryError):
        check_config(load_config_text(tmp_path, _OK) | {"particles": {"n": 10**12, "dt": 0.1}})
    with pytest.raises(ValueError, match="no config file"):
        load_config(tmp_path / "missing.toml")


# ---------------------------------------------------------------------------------------
# The command line: one clear line and exit status 2, never a raw traceback
def test_fpk_run_refuses_to_overwrite_its_input_or_an_output(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(_OK)
    before = cfg.read_bytes()
    assert main(["run", str(cfg), "-o", str(cfg), "-q"]) == 2
    assert cfg.read_bytes() == before and "input of this run" in capsys.readouterr().err
    out = tmp_path / "o.h5"
    assert main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    stamp = out.stat().st_mtime_ns
    assert main(["run", str(cfg), "-o", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == stamp
    assert main(["run", str(cfg), "-o", str(out), "-q", "--overwrite"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["cfg.toml", "o.h5"]


@pytest.mark.parametrize("argv, match", [
    (["run", "{tmp}/missing.toml", "-o", "{tmp}/o.h5"], "no config file"),
    (["run", "{tmp}/typo.toml", "-o", "{tmp}/o.h5"], "did you mean 'temperature'"),
    (["run", "{tmp}/cfg.toml", "-o", "{tmp}/nofolder/o.h5"], "does not exist"),
    (["info", "{tmp}/missing.h5"], "no such file"),
    (["info", "{tmp}/cfg.toml"], "not a readable HDF5"),
    (["plot", "{tmp}/cfg.toml"], "not a readable HDF5"),
    (["sweep", "{tmp}/cfg.toml", "--param", "grid.celss=16,24", "-o", "{tmp}/sw"], "did you mean 'cells'"),
    (["sweep", "{tmp}/cfg.toml", "--param", "tempreature=1,2", "-o", "{tmp}/sw"], "did you mean 'temperature'"),
    (["sweep", "{tmp}/cfg.toml", "--param", "cells", "-o", "{tmp}/sw"], "NAME=v1,v2"),
    (["sweep", "{tmp}/cfg.toml", "--param", "cells=1", "-o", "{tmp}/sw"], "integer >= 2"),
    (["sweep", "{tmp}/cfg.toml", "--param", "grid=4", "-o", "{tmp}/sw"], "is a table"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, match):
    (tmp_path / "cfg.toml").write_text(_OK)
    (tmp_path / "typo.toml").write_text("tempreature = 1\n" + _OK)
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(match, err), err


def test_cli_debug_shows_the_traceback(tmp_path):
    (tmp_path / "typo.toml").write_text("tempreature = 1\n" + _OK)
    with pytest.raises(ValueError, match="tempreature"):
        main(["run", str(tmp_path / "typo.toml"), "-o", str(tmp_path / "o.h5"), "--debug"])


def test_cli_unknown_check_and_no_command(capsys):
    assert main(["verify", "--only", "nope", "--no-report"]) == 2
    assert "unknown checks" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Sweeps: nothing stale is reused, one sweep per folder
def test_sweep_recomputes_points_whose_config_changed(tmp_path):
    """Issue 11.4: resume checked file names only."""
    from fokkerplanck.app.sweep import sweep

    cfg = load_config_text(tmp_path, _OK)
    out = tmp_path / "sw"
    logs = []
    rows = sweep(cfg, {"cells": [16, 24]}, out, log=logs.append)
    sweep(cfg, {"cells": [16, 24]}, out, log=logs.append)
    assert "2 already done, 0 to run" in logs[-1]
    edited = json.loads(json.dumps(cfg))
    edited["initial"]["mean"] = [-0.5]
    rows2 = sweep(edited, {"cells": [16, 24]}, out, log=logs.append)
    assert any("recomputed" in m for m in logs) and "0 already done, 2 to run" in " ".join(logs[-4:])
    assert rows2[0]["kl_final_fokker_planck"] != rows[0]["kl_final_fokker_planck"]
    # a damaged point file is recomputed too
    (out / "cells=16.h5").write_text("damaged")
    sweep(edited, {"cells": [16, 24]}, out, log=logs.append)
    assert "1 already done, 1 to run" in " ".join(logs[-3:])
    with PathLock(out / "sweep"):
        with pytest.raises(PathBusyError, match="another process"):
            sweep(edited, {"cells": [16, 24]}, out, log=logs.append)
    assert not [n for n in os.listdir(out) if n.endswith((".tmp", ".lock"))]


@pytest.mark.parametrize("argv", [["info", "x.h5", "--rows", "-1"], ["info", "x.h5", "--rows", "a"],
                                  ["sweep", "c.toml", "-o", "d", "--local", "0"], ["run"], ["nope"]])
def test_cli_argument_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("attr, value, match", [
    ("stopping", "[1, 2]", "stopping entry"),
    ("config", "{oops", "JSONDecodeError"),
    ("config", "[1]", "not a JSON dict"),
    ("kind", "evil", "unknown kind"),
])
def test_damaged_run_files_are_named(tmp_path, capsys, attr, value, match):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(_OK)
    out = tmp_path / "o.h5"
    assert main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    with h5py.File(out, "a") as f:
        f.attrs[attr] = value
    for cmd in ("info", "plot"):
        assert main([cmd, str(out)]) == 2
        err = capsys.readouterr().err
        assert "damaged fpk run file" in err and match in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------
# Hostile probe: Ctrl-C in every long particle loop, silent blow-ups, arguments ignored or
# reinterpreted, unvalidated inputs, sizes checked late.
from particles import annealed as An, jumps as Jp  # noqa: E402
from particles import ensemble as Ens  # noqa: E402
from fokkerplanck import wasserstein as W  # noqa: E402
from fokkerplanck.app import sweep as Sw  # noqa: E402
from fokkerplanck.discrete import finite as Dz, mixed as Mx  # noqa: E402
from particles import mixed as Pm  # noqa: E402
from fokkerplanck.energies.paths import VPFBHomotopy  # noqa: E402
from fokkerplanck.theory import score_matching as Sm  # noqa: E402
from fokkerplanck.theory.thermo import ti_integrand  # noqa: E402

_VPFB = VPFBHomotopy(np.random.default_rng(0).normal(size=(6, 2)), 1.25, 1)
_JM = Mx.JointMixture([[-1.0, 0.0], [1.0, 0.0]], 0.5)


@pytest.fixture
def interrupt_after_first_chunk(monkeypatch):
    """Ctrl-C delivered right after the first bounded compiled call of a run: the event the
    loop is sure to see, whatever the load or the thread running the test (no timer).
    Yields the list of the calls seen (units done when the interrupt came)."""
    calls = []

    def hook(chunks):
        calls.append(chunks.done)
        raise KeyboardInterrupt

    monkeypatch.setattr(Ens, "chunk_done", hook)
    return calls


def test_ctrl_c_stops_annealed_langevin_after_one_bounded_call(interrupt_after_first_chunk):
    """The probe's run: 3e6 steps of 20000 particles kept running 40-60 s after SIGINT."""
    N, n_steps = 20_000, 3_000_000
    with pytest.raises(Ens.EnsembleInterrupted) as info:
        An.annealed_langevin(_VPFB, np.zeros((N, 2)), 1e-7, n_steps, duration=1.0, seed=1)
    assert isinstance(info.value, KeyboardInterrupt)
    part = info.value.partial
    assert interrupt_after_first_chunk == [Ens.CHUNK_WORK // N]   # one call of CHUNK_WORK particle-steps
    assert part.meta["interrupted"] and part.meta["steps_done"] == Ens.CHUNK_WORK // N < n_steps
    assert info.value.done == 1 and info.value.total == 2
    assert part.times.tolist() == [0.0] and part.positions.shape == (1, N, 2) and not part.positions.any()


def test_ctrl_c_stops_the_path_flows(interrupt_after_first_chunk):
    X = np.random.default_rng(1).normal(size=(3000, 2))
    with pytest.raises(Ens.EnsembleInterrupted) as info:
        An.path_flow(_VPFB, X, [0.0, 0.5, 1.0])
    part = info.value.partial
    assert info.value.done == An.PATH_FLOW_FIRST < 3000 and info.value.total == 3000
    assert part.positions.shape == (3, An.PATH_FLOW_FIRST, 2) and part.logdensity.shape == (3, An.PATH_FLOW_FIRST)
    np.testing.assert_array_equal(part.positions[0], X[:An.PATH_FLOW_FIRST])
    with pytest.raises(Ens.EnsembleInterrupted) as info:
        An.path_gradient_flow(_VPFB, X, 1e-3, 500, save_every=100)
    assert info.value.partial.meta["steps_done"] == 1 and info.value.partial.positions.shape == (1, 3000, 2)


def test_ctrl_c_stops_jump_particles(interrupt_after_first_chunk):
    N, energy = 20_000, Dz.ising((10, 10))
    c0 = np.zeros((N, 100), dtype=np.int64)
    with pytest.raises(Ens.EnsembleInterrupted) as info:
        Jp.simulate(energy, c0, [0.0, 5.0, 10.0], seed=2)
    part = info.value.partial
    t_chunk = max(Ens.CHUNK_WORK / (N * 100), 2 * Jp.BIN_EVENTS / 100)   # at least two bins of events
    assert interrupt_after_first_chunk == [pytest.approx(t_chunk)] and t_chunk < 5.0
    assert part.meta["interrupted"] and part.times.tolist() == [0.0] and part.energy.shape == (1, N)
    # the events done: those of the whole bins of the first chunk of physical time (rate 100 per
    # particle), not of t = 5
    assert 0 < part.events.mean() <= 100 * 1.1 * t_chunk < 100 * 5.0


def test_ctrl_c_stops_mixed_particles(interrupt_after_first_chunk):
    N = 20_000
    with pytest.raises(Ens.EnsembleInterrupted) as info:
        Pm.simulate(_JM, np.zeros(N, dtype=int), np.zeros((N, 2)), 1e-3, 1_000_000, seed=3)
    times, labels, positions = info.value.partial
    assert interrupt_after_first_chunk == [Ens.CHUNK_WORK // N]
    assert times.tolist() == [0.0] and labels.shape == (1, N) and positions.shape == (1, N, 2)
    assert info.value.done == 1 and info.value.total == 2


@pytest.mark.slow  # every particle loop twice, one call against many (75 s on 2 loaded cores): CI's second step
def test_chunked_loops_give_the_bits_of_one_call(monkeypatch):
    """Bounded calls stop and resume the compiled loops exactly: tiny chunks, same bits."""
    X = np.random.default_rng(4).normal(size=(300, 2))
    c0 = np.random.default_rng(5).integers(0, 2, size=(300, 16))
    runs = []
    for work in (10**9, 700):   # one call per stretch; then a few steps (or particles, or events) per call
        monkeypatch.setattr(An, "CHUNK_WORK", work)
        monkeypatch.setattr(Jp, "CHUNK_WORK", work)
        monkeypatch.setattr(Ens, "CHUNK_WORK", work)
        monkeypatch.setattr(An, "PATH_FLOW_FIRST", work // 10)
        monkeypatch.setattr(Ens, "CHUNK_SECONDS", 0.4 if work > 700 else 0.0)   # then the smallest calls
        calls = []
        monkeypatch.setattr(Ens, "chunk_done", lambda c, calls=calls: calls.append(c.done))
        runs.append((An.annealed_langevin(_VPFB, X, 1e-3, 400, save_every=150, seed=5).positions,
                     An.annealed_langevin(_VPFB, X, 1e-3, 60, seed=5, method="mala").positions,
                     An.path_flow(_VPFB, X, [0.0, 1.0]).logdensity,
                     Jp.simulate(Dz.ising(16), c0, [0.0, 0.5, 2.0], seed=6).energy,
                     Pm.simulate(_JM, np.zeros(300, dtype=int), X, 1e-2, 200, seed=7, save_every=90)[2],
                     particles.langevin(Q2, X, 1e-2, 200, seed=8, save_every=70).positions, len(calls)))
    (*one, n_one), (*many, n_many) = runs
    assert n_many > 3 * n_one   # the small budget did cut the runs into many calls
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


def test_huge_positions_are_left_out_of_the_summaries_with_a_warning():
    """|x| = 1e200 made every summary NaN without a word (|grad U|^2 overflows)."""
    x0 = np.zeros((10, 2))
    x0[:4] = 1e200
    with pytest.warns(RuntimeWarning, match=r"4 of 10 particles .* too large for the summaries"):
        ens = particles.langevin(Q2, x0, 1e-3, 10, seed=0)
    assert ens.overflowed.tolist() == [4, 4] and ens.meta["overflowed"] == 4 and ens.alive.tolist() == [10, 10]
    np.testing.assert_allclose(ens.summaries["mean"][-1], ens.positions[-1, 4:].mean(axis=0), rtol=1e-12)
    assert np.all(np.isfinite(ens.summaries["cov"][-1]))
    with pytest.warns(RuntimeWarning, match="10 of 10 particles"):
        ens = particles.langevin(Q2, np.full((10, 2), 1e200), 1e-3, 10, seed=0)
    assert ens.overflowed.tolist() == [10, 10] and np.isnan(ens.summaries["mean"][-1]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # nothing to say about an ordinary run
        ens = particles.langevin(Q2, np.random.default_rng(0).normal(size=(50, 2)), 1e-2, 10, seed=0)
    assert ens.overflowed.tolist() == [0, 0]


def test_annealed_langevin_warns_beyond_the_stability_limit():
    """dt = 1e3 ended at |x| ~ 1e30 without a word."""
    with pytest.warns(RuntimeWarning, match="stability limit"):
        run = An.annealed_langevin(_VPFB, np.zeros((100, 2)), 1e3, 10, seed=0)
    assert np.abs(run.positions[-1]).max() > 1e10   # it did blow up: the warning was due
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        An.annealed_langevin(_VPFB, np.zeros((100, 2)), 1e-2, 10, seed=0)


@_cases(
    (lambda: E.KDE(np.zeros((3, 2)), 1e-300), ValueError, r"bandwidth = 1e-300 .*smallest bandwidth is 1.22e-77"),
    (lambda: E.GaussianMixture([[0, 0]], 1e-200), ValueError, r"covs: sigma = 1e-200 .*smallest sigma is 1.49e-154"),
    (lambda: E.GaussianMixture([[0, 0]], [[[1e-320, 0], [0, 1.0]]]), ValueError, r"covs\[0\] is singular"),
    (lambda: Dn.GridDensity(G1, np.ones(40) / 10, normalise="bogus"), ValueError, "normalise must be one of"),
    (lambda: particles.langevin(Q2, X2, 0.01, 5, seed=1.5), ValueError, "seed must be a non-negative integer, got 1.5"),
    (lambda: particles.langevin(Q2, X2, 0.01, 5, seed=True), ValueError, "seed must be .*True"),
    (lambda: particles.langevin(Q2, X2, 0.01, 5, seed=-1), ValueError, "seed must be .*-1"),
    (lambda: An.annealed_langevin(_VPFB, X2, 0.01, 5, seed=1.5), ValueError, "seed must .*1.5"),
    (lambda: An.annealed_langevin(_VPFB, X2, 0.01, 5, save_every=2.7), ValueError, "save_every .*2.7"),
    (lambda: An.annealed_langevin(_VPFB, X2, 0.01, "5"), ValueError, "n_steps"),
    (lambda: Jp.simulate(Dz.ising(4), np.zeros((3, 4), dtype=int), [1.0], seed=1.5), ValueError, "seed must .*1.5"),
    (lambda: Pm.simulate(_JM, np.zeros(3, dtype=int), np.zeros((3, 2)), 0.01, 5, seed=1.5), ValueError,
     "seed must .*1.5"),
    (lambda: Pm.simulate(_JM, np.zeros(3, dtype=int), np.zeros((3, 2)), 0.01, 5, save_every=2.7), ValueError,
     "save_every .*2.7"),
    (lambda: W.gaussian_w2_nd([0, 0], [[1, 0], [0, -1]], [0, 0], np.eye(2)), ValueError,
     "S1 must be positive semi-definite.*-1"),
    (lambda: W.gaussian_w2_nd([0, 0], np.eye(2), [0, 0], [[1, np.nan], [np.nan, 1]]), ValueError, "S2 contains NaN"),
    (lambda: W.gaussian_w2_nd([0, 0], np.eye(3), [0, 0], np.eye(2)), ValueError, "S1 must be a 2x2"),
    (lambda: W.gaussian_w2_nd([0, np.nan], np.eye(2), [0, 0], np.eye(2)), ValueError, "m1 contains NaN"),
    (lambda: ti_integrand(Q1, E.Quadratic([[2.0]]), G1, [0.5, 1.5]), ValueError, r"s must lie in \[0, 1\].*s\[1\] = 1.5"),
    (lambda: ti_integrand(Q1, E.Quadratic([[2.0]]), G1, -0.1), ValueError, r"s\[0\] = -0.1"),
    (lambda: Sm.fit_ism(Sm.RBFBasis([[0.0, 0.0], [1.0, 0.0]], 1.0), np.zeros((0, 2))), ValueError, "no samples"),
    (lambda: Sm.fit_dsm(Sm.RBFBasis([[0.0, 0.0], [1.0, 0.0]], 1.0), np.zeros((0, 2)), 0.1), ValueError,
     "no samples"),
    (lambda: Mx.MixedSpace(Mx.JointMixture(np.linspace(-3, 3, 20_000)[:, None], 1.0), Grid([(-5, 5)], 64)),
     MemoryError, r"20000 labels x 64 cells .*2.56e\+10 of them label jumps"),
)
def test_probe_inputs(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_accepted_neighbours_of_the_refused_inputs():
    """What the new checks must still let through."""
    a = particles.langevin(Q2, X2, 0.01, 5, seed=3)
    np.testing.assert_array_equal(particles.langevin(Q2, X2, 0.01, 5, seed=3.0).positions, a.positions)
    np.testing.assert_array_equal(particles.langevin(Q2, X2, 0.01, 5, seed=np.int64(3)).positions, a.positions)
    particles.langevin(Q2, X2, 0.01, 5, seed=2**80)   # any size
    assert W.gaussian_w2_nd([0, 0], np.zeros((2, 2)), [3, 4], np.zeros((2, 2))) == pytest.approx(5.0)  # point masses
    assert ti_integrand(Q1, Q1, G1, [0.0, 1.0]).tolist() == [0.0, 0.0]
    E.KDE(np.zeros((3, 2)), 1.3e-77)
    E.GaussianMixture([[0, 0]], 1.5e-154)
    assert Dn.GridDensity(G1, np.ones(40) / 10, normalise="raise").values.shape == (40,)


@pytest.mark.parametrize("specs, match", [
    (["cells=16,16.0"], "--param cells: the value 16.0 repeats 16"),
    (["cells=16", "cells=32"], "--param cells is given twice"),
    (["dt=0.001", "particles.dt=0.002"], "--param particles.dt and --param dt both set particles.dt"),
    (["grid.cells=16", "cells=32"], "--param cells and --param grid.cells both set grid.cells"),
    (["cells=,"], "--param cells: no values"),
    (["method=euler-maruyama,mala,mala"], "the value 'mala' repeats 'mala'"),
])
def test_sweep_params_refused(specs, match, tmp_path, capsys):
    """A repeated value ran one configuration twice, a repeated --param dropped the first, dt
    with particles.dt named a file after a value it did not hold, cells=, said min() failed."""
    with pytest.raises(ValueError, match=match):
        Sw.parse_params(specs)
    argv = ["sweep", str(_sweep_cfg(tmp_path)), *[a for p in specs for a in ("--param", p)],
            "-o", str(tmp_path / "sw"), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fpk sweep: --param") and re.search(match, err[0])
    assert not (tmp_path / "sw").exists()   # refused before any work


def test_sweep_api_refuses_an_empty_parameter(tmp_path):
    with pytest.raises(ValueError, match="--param cells: no values"):
        Sw.sweep(load_config(_sweep_cfg(tmp_path)), {"cells": []}, tmp_path / "sw", log=lambda *a: None)


_SWEEP_CFG = textwrap.dedent("""
    temperature = 1.0
    [energy]
    type = "Quadratic"
    A = [[1.0]]
    [grid]
    bounds = [[-6.0, 6.0]]
    cells = 16
    [initial]
    type = "Gaussian"
    mean = [1.0]
    cov = 0.5
    [times]
    stop = 0.1
    num = 2
    [fokker_planck]
    [particles]
    n = 100
    dt = 1e-2
    seed = 1
    """)


def _sweep_cfg(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(_SWEEP_CFG)
    return cfg


@pytest.mark.parametrize("call, match", [
    (lambda: FokkerPlanck(E.Quadratic([[1.0]]), Grid([(-4, 4)], 40)).solve(Dn.Gaussian([0.0], 1.0), [0, 1], dt=0.1),
     "dt is for method='implicit'"),
    (lambda: FokkerPlanck(E.Quadratic([[1.0]]), Grid([(-4, 4)], 40)).solve(Dn.Gaussian([0.0], 1.0), [0, 1],
                                                                          normalise="bogus"), "normalise must be"),
    (lambda: __import__("fokkerplanck._core.rng", fromlist=["seed_key"]).seed_key(1.5), "seed must be"),
    (lambda: __import__("fokkerplanck._core.rng", fromlist=["seed_key"]).seed_key(-3), "seed must be"),
])
def test_arguments_that_would_be_ignored_or_reinterpreted_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_frozen_flow_refuses_negative_and_empty_durations():
    from fokkerplanck.energies.paths import VPFBHomotopy
    from fokkerplanck.flows.potential_flow import frozen_flow

    H = VPFBHomotopy(np.array([[0.5, 0.0], [-0.5, 0.3]]), 1.0, 0.5)
    g = Grid([(-5, 5)] * 2, 16)
    for bad in ([], [-1.0, 0.5], [0.5, 0.1]):
        with pytest.raises(ValueError, match="durations"):
            frozen_flow(H, g, 0.5, bad)


def test_a_spec_nested_thousands_deep_is_refused_by_name():
    spec = {"type": "Quadratic", "A": [[1.0]]}
    for _ in range(5000):
        spec = {"type": "Sum", "terms": [{"coef": 1.0, "energy": spec}]}
    with pytest.raises(ValueError, match="nested deeper than"):
        E.from_spec(spec)


def test_run_file_readers_name_what_they_do_not_read(tmp_path, capsys):
    """An extra top-level dataset, and a dataset redeclared huge, are named, not read
    (fpk info would otherwise allocate 74.5 GiB)."""
    from fokkerplanck.app import cli
    from fokkerplanck.app.runner import read_run

    cfg = tmp_path / "ou.toml"
    cfg.write_text("[energy]\ntype = 'Quadratic'\nA = [[1.0]]\n[grid]\nbounds = [[-5.0, 5.0]]\ncells = 50\n"
                   "[initial]\ntype = 'Gaussian'\nmean = [1.0]\ncov = 0.3\n[times]\nstop = 0.2\nnum = 3\n"
                   "[fokker_planck]\n")
    out = tmp_path / "r.h5"
    assert cli.main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    with h5py.File(out, "a") as f:
        f["extra"] = np.arange(3)
        f.create_group("bulky").create_dataset("huge", shape=(100_000, 100_000), dtype="f8")
    r = read_run(out)
    assert "extra" in r["unknown"] and any("bulky/huge" in u for u in r["unknown"])
    assert cli.main(["info", str(out)]) == 0 and "not read" in capsys.readouterr().out


def test_output_names_modes_and_unwritable_folders(tmp_path):
    """fpk plot v1.2/run.h5 writes v1.2/run.png; a run file gets the mode any new file gets
    (not 0600)."""
    from fokkerplanck.app import cli

    d = tmp_path / "v1.2"
    d.mkdir()
    tr = FokkerPlanck(E.Quadratic([[1.0]]), Grid([(-5, 5)], 50)).solve(Dn.Gaussian([1.0], 0.3), [0.0, 0.1])
    tr.save(d / "run.h5")
    mask = os.umask(0o022)
    os.umask(mask)
    assert (d / "run.h5").stat().st_mode & 0o777 == 0o666 & ~mask
    assert cli.main(["plot", str(d / "run.h5")]) == 0 and (d / "run.png").exists()


def test_an_unwritable_output_folder_is_refused_before_the_run(tmp_path):
    tr = FokkerPlanck(E.Quadratic([[1.0]]), Grid([(-5, 5)], 50)).solve(Dn.Gaussian([1.0], 0.3), [0.0, 0.1])
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK):   # root ignores the mode bits: nothing to check here
            pytest.skip("running as a user who can write any folder")
        with pytest.raises(PermissionError, match="not writable"):
            tr.save(ro / "x.h5")
    finally:
        os.chmod(ro, 0o755)


# --- sizes, raw errors and interrupts on the remaining paths ------------------------------------
def test_vpfb_quantities_work_in_bounded_blocks(monkeypatch):
    """logpdf with 1e7 data points built one (N, M, d) array of 149 GiB: the NumPy quantities
    now run on row blocks of at most CHUNK_ELEMENTS floats, with the same values."""
    import tracemalloc

    from fokkerplanck.energies import paths as Pth

    rng = np.random.default_rng(0)
    data, x = rng.normal(size=(4000, 2)), rng.normal(size=(2000, 2))
    h = VPFBHomotopy(data, 1.3, 0.7)
    small = VPFBHomotopy(data[:7], 1.3, 0.7)
    whole = (small.logpdf(x, 0.4), small.dt_logpdf(x, 0.4))
    monkeypatch.setattr(Pth, "CHUNK_ELEMENTS", 50)   # 3 rows per block, and a ragged last block
    np.testing.assert_array_equal(small.logpdf(x, 0.4), whole[0])
    np.testing.assert_array_equal(small.dt_logpdf(x, 0.4), whole[1])
    monkeypatch.setattr(Pth, "CHUNK_ELEMENTS", 1 << 16)
    tracemalloc.start()
    try:
        h.logpdf(x, 0.4)
        h.dt_logpdf(x, 0.4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak   # the whole (2000, 4000, 2) array would be 128 MiB


@pytest.mark.extras
def test_from_torch_refuses_strings_and_non_differentiable_modules():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="from_torch needs a torch module.*got str"):
        E.from_torch("model.pt", 2)

    class Detached(torch.nn.Module):
        def forward(self, x):
            return (x.detach() ** 2).sum(1)

    U = E.from_torch(Detached(), 2)
    np.testing.assert_allclose(U.value(np.ones((3, 2))), 2.0)   # values need no gradient
    with pytest.raises(ValueError, match="autograd cannot differentiate"):
        U.grad(np.ones((3, 2)))
    with pytest.raises(ValueError, match="autograd cannot differentiate"):
        U.laplacian(np.ones((3, 2)))


@pytest.mark.extras
def test_from_jax_refuses_a_non_callable():
    pytest.importorskip("jax")
    with pytest.raises(TypeError, match="from_jax needs a JAX function.*got int"):
        E.from_jax(3, 2)


def test_characteristics_turn_an_interrupt_in_a_compiled_call_into_keyboard_interrupt(monkeypatch):
    """Ctrl-C during numba's call set-up comes out as a SystemError caused by the
    KeyboardInterrupt; integrate_characteristics called directly raised that SystemError."""
    from fokkerplanck.flows import lagrangian as Lg

    def interrupted_run(*args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError("<numba function> returned a result with an exception set") from exc

    monkeypatch.setattr(Lg, "_build", lambda kernels: interrupted_run)
    with pytest.raises(KeyboardInterrupt):
        Lg.integrate_characteristics(Q2, np.zeros((3, 2)), [0.0, 0.1])

    def broken_run(*args):
        raise SystemError("a real SystemError")

    monkeypatch.setattr(Lg, "_build", lambda kernels: broken_run)
    with pytest.raises(SystemError, match="a real SystemError"):   # other SystemErrors pass through
        Lg.integrate_characteristics(Q2, np.zeros((3, 2)), [0.0, 0.1])
