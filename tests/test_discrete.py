"""Finite state spaces: closed forms of the Ising chain, detailed balance, the Lyapunov
identity d/dt KL = -Dirichlet form, exact propagation paths against each other, and the
jump-process particles against the exact laws within their error bars."""
import math
import warnings

import numpy as np
import pytest

from fokkerplanck.discrete import finite as Dz
from particles import estimators as est, jumps


@pytest.mark.parametrize("J,h,T", [(1.0, 0.0, 1.0), (1.0, 0.3, 0.7), (-0.8, 0.5, 1.3)])
def test_ising_chain_partition_function_is_the_transfer_matrix(J, h, T):
    n = 10
    space = Dz.FiniteSpace(Dz.ising(n, J, h), T)
    assert space.size == 2 ** n
    assert abs(space.log_z - Dz.ising_chain_log_partition(n, J, h, T)) < 1e-12 * abs(space.log_z)
    if h == 0:
        assert abs(space.mean(space.E) - Dz.ising_chain_mean_energy(n, J, T)) < 1e-12 * n
    # the magnetisation is d log Z / d(h / T), by a central difference of the closed form: its
    # error is the O(dh^2) truncation (1.4e-10 at dh = 1e-5, measured from dh = 1e-3, 1e-4:
    # ratio 100) plus the round-off eps |log Z| / dh ~ 1e-10; measured <= 1.7e-10 in all
    # (was < 1e-6, 6000x that)
    dh = 1e-5
    m = T * (Dz.ising_chain_log_partition(n, J, h + dh, T) - Dz.ising_chain_log_partition(n, J, h - dh, T)) / (2 * dh)
    assert abs(space.mean(space.magnetisation()) - m) < 5e-11 * n


@pytest.mark.parametrize("n", [6, 9])
def test_glauber_chain_spectral_gap_is_one_minus_tanh_2_beta_J(n):
    """Glauber (1963): on the ring at h = 0 the slowest mode (the magnetisation) decays at
    1 - tanh(2 J / T)."""
    for J, T in ((1.0, 1.0), (0.5, 2.0), (1.0, 3.0)):
        me = Dz.MasterEquation(Dz.FiniteSpace(Dz.ising(n, J, 0.0), T), "glauber")
        assert abs(me.spectral_gap() - (1 - math.tanh(2 * J / T))) < 1e-10


@pytest.mark.parametrize("dyn", ["glauber", "metropolis"])
@pytest.mark.parametrize("model", ["ising3x3", "potts2x3"])
def test_generators_have_detailed_balance_and_pi_is_stationary(dyn, model):
    energy = Dz.ising((3, 3), 1.0, 0.2) if model == "ising3x3" else Dz.potts((2, 3), 3, 0.8)
    space = Dz.FiniteSpace(energy, 1.5)
    me = Dz.MasterEquation(space, dyn)
    me.check_generator()
    assert np.abs(me.L @ space.pi).max() < 1e-14 * np.abs(me.L.diagonal()).max()
    S = me.symmetric
    assert abs(S - S.T).max() < 1e-15
    # every row of a generator column sums to zero, off-diagonals are rates
    assert np.abs(np.asarray(me.L.sum(axis=0))).max() < 1e-13


@pytest.mark.parametrize("dyn", ["glauber", "metropolis"])
def test_kl_derivative_is_minus_the_dirichlet_form(dyn):
    space = Dz.FiniteSpace(Dz.potts((2, 3), 3, 1.0), 0.9)
    me = Dz.MasterEquation(space, dyn)
    p0 = space.point_mass([0, 1, 2, 0, 1, 2])
    times = np.array([0.05, 0.3, 1.0, 3.0])
    P = me.solve(p0, times)
    D = me.dirichlet(P)
    assert np.all(D > 0)
    # the identity itself, at any law: <L p, log(p / pi)> = -D(p), to round-off (measured
    # 7e-16; was rtol 1e-11)
    np.testing.assert_allclose(me.kl_rate(P), -D, rtol=1e-13)
    # and the propagated laws follow it: central differences converge at second order
    errs = []
    for dlt in (2e-2, 1e-2):
        kl = me.kl(me.solve(p0, np.sort(np.concatenate([times - dlt, times + dlt]))))
        errs.append(np.abs((kl[1::2] - kl[0::2]) / (2 * dlt) + D) / D)
    ratio = errs[0] / errs[1]   # measured 4.0001 .. 4.15 (the largest at t = 0.05, near the start)
    assert np.all((ratio > 3.98) & (ratio < 4.2)), ratio
    # KL decreases (Lyapunov), mass is kept, and p >= 0 up to the round-off of the spectral
    # phase (entries of size 1e-16 relative; the uniformisation phase is positive exactly)
    kl = me.kl(P)
    assert np.all(np.diff(kl) < 0) and np.abs(P.sum(1) - 1).max() < 1e-13 and P.min() > -1e-15


def test_chebyshev_path_agrees_with_eigh(monkeypatch):
    space = Dz.FiniteSpace(Dz.ising((3, 3), 1.0, 0.1), 2.0)
    me = Dz.MasterEquation(space, "glauber")
    p0 = space.point_mass([1] * 9)
    times = np.array([0.0, 0.1, 0.7, 2.0, 6.0])
    exact = me.solve(p0, times)
    monkeypatch.setattr(Dz, "EIGH_MAX_STATES", 10)
    cheb = Dz.MasterEquation(space, "glauber").solve(p0, times)
    assert np.abs(cheb - exact).sum(1).max() < 1e-12
    # and the gap from eigsh equals the dense one
    assert abs(Dz.MasterEquation(space, "glauber").spectral_gap() - me.spectral_gap()) < 1e-9


@pytest.mark.parametrize("dyn", ["glauber", "metropolis"])
def test_jump_particles_match_the_exact_laws(dyn):
    energy = Dz.ising((3, 3), 1.0, 0.0)
    T = 2.5
    space = Dz.FiniteSpace(energy, T)
    me = Dz.MasterEquation(space, dyn)
    start = np.ones(9, dtype=np.int8)
    times = np.array([0.0, 0.2, 0.6, 2.0])
    P = me.solve(space.point_mass(start), times)
    N = 20_000
    ens = jumps.simulate(energy, np.tile(start, (N, 1)), times, dynamics=dyn, temperature=T, seed=5)
    M = space.magnetisation()
    for s in range(1, times.size):
        _, f, se = ens.histogram("magnetisation", s, support=np.arange(-9, 10, 2))
        _, exact = space.distribution(M, P[s])
        z = np.abs(f - exact) / np.maximum(se, 1 / N)
        assert z.max() < 4.5, (s, z.max())
        # mean energy within 4 standard errors
        e = ens.energy[s]
        assert abs(e.mean() - space.mean(space.E, P[s])) < 4 * e.std() / np.sqrt(N)
        kl_hat, bias = ens.kl_plugin(s, space.log_pi)
        assert abs(kl_hat - bias - me.kl(P[s])[0]) < 0.05


def test_two_letter_heat_bath_table_on_an_open_lattice_with_a_field():
    """The two-letter heat bath reads its threshold from a table indexed by the neighbours'
    letters; on an open 3x3 lattice (corner, edge and centre sites: 2, 3 and 4 neighbours) with
    a field and antisymmetric-free couplings, the magnetisation law of 20000 particles at t = 0.5
    and 2 is the master equation's within 4.5 standard errors, and the table is the conditional
    law of the site."""
    energy = Dz.ising((3, 3), 0.7, 0.4, periodic=False)
    T = 1.3
    nbr = energy.lattice.neighbours()
    assert {int((nbr >= 0).sum(1).min()), int((nbr >= 0).sum(1).max())} == {2, 4}
    thr = jumps._thresholds(nbr, energy.pair, energy.field, 1 / T)
    for m0 in range(5):
        for m1 in range(5 - m0):
            e1 = energy.field[1] + m0 * energy.pair[1, 0] + m1 * energy.pair[1, 1]
            e0 = energy.field[0] + m0 * energy.pair[0, 0] + m1 * energy.pair[0, 1]
            assert thr[m0, m1] == pytest.approx(np.exp(-e1 / T) / (np.exp(-e0 / T) + np.exp(-e1 / T)), rel=1e-14)
    space = Dz.FiniteSpace(energy, T)
    me = Dz.MasterEquation(space, "glauber")
    start = np.zeros(9, dtype=np.int8)
    times = np.array([0.0, 0.5, 2.0])
    P = me.solve(space.point_mass(start), times)
    N = 20_000
    ens = jumps.simulate(energy, np.tile(start, (N, 1)), times, temperature=T, seed=11)
    M = space.magnetisation()
    for s in (1, 2):
        _, f, se = ens.histogram("magnetisation", s, support=np.arange(-9, 10, 2))
        _, exact = space.distribution(M, P[s])
        assert (np.abs(f - exact) / np.maximum(se, 1 / N)).max() < 4.5


@pytest.mark.parametrize("energy, dyn", [(Dz.potts((2, 3), 3, 1.0), "glauber"), (Dz.ising((2, 3)), "glauber"),
                                         (Dz.ising((2, 3)), "metropolis")], ids=["potts", "ising", "metropolis"])
def test_jump_particles_same_bits_for_any_split_and_save_schedule(energy, dyn):
    """Saves inside event bins (0.5 and 1.0 are not bin ends), a split of the particles, any
    thread count: the same bits."""
    c0 = np.random.default_rng(0).integers(0, energy.q, size=(500, 6))
    before = c0.copy()
    a = jumps.simulate(energy, c0, [0.5, 1.0, 1.5], seed=3, dynamics=dyn)
    np.testing.assert_array_equal(c0, before)  # the caller's array is never advanced in place
    b = jumps.simulate(energy, c0[100:300], [1.5], seed=3, index_offset=100, dynamics=dyn)
    np.testing.assert_array_equal(a.codes[100:300], b.codes)
    np.testing.assert_array_equal(a.energy[-1, 100:300], b.energy[-1])
    np.testing.assert_array_equal(a.events[100:300], b.events)


def test_bad_input():
    with pytest.raises(Dz.TooManyStatesError, match="2\\^30"):
        Dz.FiniteSpace(Dz.ising((5, 6)))
    with pytest.raises(ValueError, match="q >= 2"):
        Dz.potts(4, 1)
    with pytest.raises(ValueError, match="symmetric"):
        Dz.PairEnergy(Dz.Lattice((4,)), [[0, 1], [0, 0]], [0, 0])
    with pytest.raises(ValueError, match="returned shape"):
        Dz.TableEnergy(2, 3, lambda c: np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        Dz.TableEnergy(2, 3, lambda c: np.full(c.shape[0], np.nan))
    space = Dz.FiniteSpace(Dz.ising(4), 1.0)
    with pytest.raises(ValueError, match="configuration"):
        space.point_mass([0, 1, 2, 0])
    with pytest.raises(ValueError, match="sums to"):
        Dz.MasterEquation(space).solve(np.full(16, 0.1), [1.0])
    bad = Dz.glauber(space).tolil()
    bad[1, 0] += 0.5  # breaks detailed balance (and the column sum)
    bad[0, 0] -= 0.5
    with pytest.raises(ValueError, match="detailed balance"):
        Dz.MasterEquation(space, bad.tocsr())
    with pytest.raises(ValueError, match="dynamics"):
        Dz.MasterEquation(space, "kawasaki")
    with pytest.raises(ValueError, match="c0 must have shape"):
        jumps.simulate(Dz.ising(4), np.zeros((3, 5), dtype=int), [1.0])
    with pytest.raises(ValueError, match="letters"):
        jumps.simulate(Dz.ising(4), np.full((3, 4), 2), [1.0])


def test_a_point_mass_has_infinite_dirichlet_form():
    """At a law with zeros that the flow fills, p log p has an infinite slope: the identity
    reads -inf = -inf, never a finite number made up by flooring log 0."""
    space = Dz.FiniteSpace(Dz.ising(5, 1.0, 0.0), 1.0)
    me = Dz.MasterEquation(space)
    p = space.point_mass([1, 1, 1, 1, 1])
    assert me.dirichlet(p)[0] == np.inf and me.kl_rate(p)[0] == -np.inf
    # zeros the flow does not fill (an absorbing-free chain fills all: use pi itself) are finite
    assert me.dirichlet(space.pi)[0] == pytest.approx(0, abs=1e-15)


@pytest.mark.parametrize("edit,match", [
    (lambda c: c["lattice"].update(shape=[6, 6]), "2\\^36"),
    (lambda c: c["lattice"].update(model="heisenberg"), "model must be one of"),
    (lambda c: c["lattice"].update(shpe=[4, 4]), "did you mean 'shape'"),
    (lambda c: c["lattice"].update(J="1"), "J must be a finite number"),
    (lambda c: c["spins"].update(initial=[1, 0]), "list of 16 letters"),
    (lambda c: c["spins"].update(initial="sideways"), "initial must be one of"),
    (lambda c: c["dynamics"].update(name="kawasaki"), "name must be one of"),
    (lambda c: c["spins"].update(n=0), "n"),
])
def test_ising_config_errors(edit, match):
    import copy

    from fokkerplanck.app.runner import check_config, load_config

    cfg = copy.deepcopy(load_config("ising"))
    edit(cfg)
    with pytest.raises(ValueError, match=match):
        check_config(cfg)


def test_fpk_run_ising_small(tmp_path):
    import copy

    from fokkerplanck.app.runner import load_config, read_run, run

    cfg = copy.deepcopy(load_config("ising"))
    cfg["lattice"]["shape"] = [3, 3]
    cfg["spins"]["n"] = 4000
    cfg["times"].update(stop=1.0, num=5)
    run(cfg, str(tmp_path / "i.h5"), progress=False, log=lambda *a: None)
    r = read_run(tmp_path / "i.h5")
    ex, pa = r["exact"], r["particles"]
    assert ex["states"] == 512 and ex["identity_residual"] < 1e-10 and np.all(np.diff(ex["kl"]) < 0)
    z = np.abs(pa["magnetisation_freq"][1:] - ex["magnetisation_law"][1:]) / np.maximum(pa["magnetisation_se"][1:], 1 / 4000)
    assert z.max() < 5


def _sampled_ensemble(space, N, seed):
    """A JumpEnsemble holding N exact draws of the Gibbs law of ``space`` (one save)."""
    idx = np.random.default_rng(seed).choice(space.size, size=N, p=space.pi)
    M = space.magnetisation()
    n = space.energy.n_sites
    return jumps.JumpEnsemble(np.zeros(1), space.E[idx][None], M[idx][None], idx[None],
                              np.zeros((N, n), dtype=np.int8), np.zeros(N, dtype=np.int64),
                              {"n_sites": n, "q": space.energy.q})


def test_kl_plugin_flags_an_estimate_dominated_by_unseen_states():
    """4x4 Ising (65536 states), 500 particles at t = 3: the plug-in KL minus its
    Miller-Madow term is 1.29 against the exact 0.76 (measured): flagged, with a warning
    naming the numbers.  3x3 with 20000 particles: not flagged, and within 0.01 of exact."""
    energy = Dz.ising((4, 4), 1.0, 0.0)
    space = Dz.FiniteSpace(energy, 2.5)
    me = Dz.MasterEquation(space, "glauber")
    start = np.ones(16, dtype=np.int8)
    exact = me.kl(me.solve(space.point_mass(start), [3.0]))[0]
    N = 500
    ens = jumps.simulate(energy, np.tile(start, (N, 1)), [3.0], temperature=2.5, seed=5)
    with pytest.warns(RuntimeWarning, match=r"unseen states: \d+ states seen of 65536 by 500 particles") as rec:
        r = ens.kl_plugin(0, space.log_pi)
    assert "Good-Turing missing mass" in str(rec[0].message)
    value, bias = r                       # still unpacks as (value, bias)
    assert value - bias - exact > 0.3     # what the flag is for: the error is far beyond the bias term
    assert r.undersampled and r.status == "undersampled" and "unseen states" in r.message
    counts = np.bincount(ens.index[0], minlength=space.size)
    assert r.seen == np.count_nonzero(counts) and r.singletons == np.sum(counts == 1) and r.n == N
    assert r.missing_mass == pytest.approx(np.sum(counts == 1) / N) and r.missing_mass > jumps.MAX_MISSING_MASS
    assert bias == pytest.approx((r.seen - 1) / (2 * N))
    # well sampled: no warning, status ok, and the corrected estimate is the exact KL
    space3 = Dz.FiniteSpace(Dz.ising((3, 3), 1.0, 0.0), 2.5)
    me3 = Dz.MasterEquation(space3, "glauber")
    s3 = np.ones(9, dtype=np.int8)
    exact3 = me3.kl(me3.solve(space3.point_mass(s3), [1.0]))[0]
    ens3 = jumps.simulate(space3.energy, np.tile(s3, (20_000, 1)), [1.0], temperature=2.5, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r3 = ens3.kl_plugin(0, space3.log_pi)
    assert r3.status == "ok" and not r3.undersampled and r3.message == ""
    assert abs(r3.value - r3.bias - exact3) < 0.01, (r3, exact3)


def test_frequency_error_bars_from_the_exact_law_give_standard_normal_z_scores():
    """Exact draws of the 4x4 Ising magnetisation law at T = 2 (17 bins, N p from 1.2 to
    132 at N = 300), 50 seeds: the z-scores with the exact law's binomial error
    sqrt(p (1 - p) / N) are N(0, 1) (pooled mean and variance; measured 0.015 and 1.02),
    all finite, empty bins included; the observed-frequency error gave 120 infinite ones
    and a variance of 1.2-1.5."""
    space = Dz.FiniteSpace(Dz.ising((4, 4), 1.0, 0.0), 2.0)
    _, law = space.distribution(space.magnetisation(), space.pi)
    N = 300
    zs, empty = [], []
    for seed in range(50):
        h = _sampled_ensemble(space, N, seed).histogram("magnetisation", 0, exact=law)
        assert np.array_equal(h.support, np.arange(-16, 17, 2))   # every bin, empty or not
        np.testing.assert_allclose(h.se, np.sqrt(law * (1 - law) / N), rtol=1e-12)
        np.testing.assert_allclose(h.z, (h.counts / N - law) / np.sqrt(law * (1 - law) / N), rtol=1e-12)
        zs.append(h.z)
        empty += [(h, j) for j in np.flatnonzero(h.counts == 0)]
    z = np.concatenate(zs)
    assert np.all(np.isfinite(z))
    assert abs(z.mean()) < 0.15 and 0.85 < z.var() < 1.2, (z.mean(), z.var())
    # an empty bin is kept: count 0, and a Wilson interval [0, 1/(N+1)] (non-degenerate)
    assert empty, "no empty bin in 50 seeds"
    h, j = empty[0]
    assert h.counts[j] == 0 and h.freq[j] == 0 and h.lo[j] == 0
    assert h.hi[j] == pytest.approx(1 / (N + 1)) and np.isfinite(h.z[j]) and h.z[j] < 0
    # the user's bin: 3 counts where the exact law expects 11.3 of N = 1000 -> z = -2.47
    # (the observed frequency's error said -4.8)
    p = 11.3 / 1000
    e = est.frequency_errors([3, 997], [p, 1 - p])
    assert e.z[0] == pytest.approx((3 - 11.3) / np.sqrt(11.3 * (1 - p)), rel=1e-12) and -2.6 < e.z[0] < -2.4
    # without the exact law: Wilson half-widths (never 0), the interval contains the frequency
    w = _sampled_ensemble(space, N, 0).histogram("magnetisation", 0)
    assert w.z is None and np.all(w.se > 0) and np.all((w.lo <= w.freq) & (w.freq <= w.hi))
    lo, hi = est.wilson_interval(0, N)
    assert lo == 0 and hi == pytest.approx(1 / (N + 1)) and np.all(w.se[w.counts == 0] == pytest.approx(0.5 / (N + 1)))


def test_spectral_gap_by_eigsh_equals_the_dense_one(monkeypatch):
    """Spaces past EIGH_MAX_STATES take the gap from eigsh on the shifted operator; forced
    here on a 2^9-state space it must equal the dense gap (and the ring's closed form)."""
    from fokkerplanck.discrete import finite as F

    n, T = 9, 1.7
    sp_ = Dz.FiniteSpace(Dz.ising((n,), 1.0, 0.0), T)
    me = Dz.MasterEquation(sp_, "glauber")
    dense = me.spectral_gap()
    monkeypatch.setattr(F, "EIGH_MAX_STATES", 100)
    me2 = Dz.MasterEquation(sp_, "glauber")
    assert me2.spectral_gap() == pytest.approx(dense, rel=1e-9)
    assert dense == pytest.approx(1 - np.tanh(2 / T), rel=1e-12)   # Glauber ring: 1 - tanh(2 J / T)
