"""Orbit-lumped master equations (fokkerplanck.discrete.orbits) against the full ones.

Truth comes from outside the module: the full FiniteSpace / MasterEquation where it fits
(3x3, 4x4 Ising, 3x3 Potts q = 3, an open 3x3 lattice), the group and the orbits
recomputed here by moving whole configurations with np.roll / flips / transposes
(Burnside's count by brute force over all states), transfer matrices for log Z of the
5x5 Ising and 4x4 Potts lattices and a 25-site ring (past 2^22 states), the Lyapunov
identity by finite differences."""
import math

import numpy as np
import pytest
import scipy.sparse as sp

from fokkerplanck._core.jit import one_blas_thread
from fokkerplanck.discrete import finite as Dz, orbits as O

TC = 2 / math.log(1 + math.sqrt(2))   # critical temperature of the square Ising lattice (J = 1)


# ------------------------------------------------------------------------------- independent truth
def _point_maps(shape, periodic):
    """The symmetries as functions on configurations (N, *shape), written on the grid:
    rolls (periodic), flips and the transpose of a square; |G| elements, each once for
    sides >= 3."""
    if len(shape) == 1:
        pts = [lambda Y: Y, lambda Y: Y[:, ::-1]]
        shifts = [(a,) for a in range(shape[0])] if periodic else [(0,)]
        axes = (1,)
    else:
        pts = [lambda Y: Y, lambda Y: Y[:, ::-1, :], lambda Y: Y[:, :, ::-1], lambda Y: Y[:, ::-1, ::-1]]
        if shape[0] == shape[1]:
            pts += [lambda Y, f=f: f(Y).transpose(0, 2, 1) for f in list(pts)]
        shifts = [(a, b) for a in range(shape[0]) for b in range(shape[1])] if periodic else [(0, 0)]
        axes = (1, 2)
    return [lambda C, f=f, s=s: np.roll(f(C.reshape((C.shape[0],) + shape)), s, axis=axes).reshape(C.shape[0], -1)
            for f in pts for s in shifts]


def _index(codes, q):
    return codes.astype(np.int64) @ (q ** np.arange(codes.shape[1] - 1, -1, -1, dtype=np.int64))


def _transfer_log_z(energy, T):
    """log Z of a periodic L0 x L1 PairEnergy (L1 >= 3) by the row-to-row transfer matrix."""
    L0, L1 = energy.lattice.shape
    q, P, F = energy.q, energy.pair, energy.field
    rows = np.array(np.unravel_index(np.arange(q ** L1), (q,) * L1)).T        # (q^L1, L1)
    e_row = P[rows, np.roll(rows, -1, axis=1)].sum(1) + F[rows].sum(1)
    e_between = P[rows[:, None, :], rows[None, :, :]].sum(2)
    M = np.exp(-(0.5 * e_row[:, None] + 0.5 * e_row[None, :] + e_between) / T)
    lam = np.linalg.eigvalsh(M)
    top = lam[-1]
    return L0 * math.log(top) + math.log(np.sum((lam / top) ** L0))


MODELS = {
    "ising3x3": lambda: (Dz.ising((3, 3), 1.0, 0.2), 1.5),
    "ising4x4": lambda: (Dz.ising((4, 4), 1.0, 0.0), TC),
    "potts3x3": lambda: (Dz.potts((3, 3), 3, 1.0), 1.0),
    "ising3x3open": lambda: (Dz.ising((3, 3), 1.0, 0.1, periodic=False), 1.2),
}


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Dense eigh (spaces of up to 2000 states, full or lumped) on one BLAS thread: on a
    loaded 2-core machine OpenBLAS's spinning threads made a 1024-state eigh take 21 s
    instead of 0.3 s (measured); the results do not depend on it."""
    with one_blas_thread():
        yield


@pytest.fixture(scope="module")
def spaces():
    cache = {}

    def get(model):
        if model not in cache:
            energy, T = MODELS[model]()
            cache[model] = (energy, T, Dz.FiniteSpace(energy, T), O.SymmetricSpace(energy, T))
        return cache[model]
    return get


# ------------------------------------------------------------------------------- group and orbits
@pytest.mark.parametrize("shape,periodic,order", [((5, 5), True, 200), ((4, 4), True, 128), ((3, 4), True, 48),
                                                  ((7,), True, 14), ((3, 3), False, 8), ((3, 4), False, 4),
                                                  ((6,), False, 2)])
def test_group_is_the_lattice_symmetries(shape, periodic, order):
    """lattice_symmetries equals the group written here on the grid (the same set of site
    permutations), is closed, and maps edges onto edges."""
    lat = Dz.Lattice(shape, periodic)
    G = O.lattice_symmetries(lat)
    n = lat.n_sites
    assert G.shape == (order, n) and np.array_equal(G[0], np.arange(n))
    # the grid's maps moving the labels 0..n-1: image Y has Y[g(i)] = i, so g = argsort(Y)
    labels = np.arange(n)[None, :]
    mine = {tuple(np.argsort(f(labels)[0])) for f in _point_maps(shape, periodic)}
    assert len(mine) == order and {tuple(g) for g in G} == mine
    S = {tuple(g) for g in G}
    assert all(tuple(g[h]) in S for g in G for h in G[: min(order, 20)])
    E = {tuple(sorted(e)) for e in lat.edges.tolist()}
    assert all({tuple(sorted(e)) for e in g[lat.edges].tolist()} == E for g in G)


@pytest.mark.parametrize("model", ["ising3x3", "ising4x4", "potts3x3", "ising3x3open"])
def test_orbits_are_burnside_and_the_brute_force_orbits(model, spaces):
    """The orbit count equals Burnside's lemma computed by brute force (the states each grid
    map fixes, over all q^n states), the representatives and sizes equal the orbits found by
    taking every state's smallest image, and the sizes sum to q^n."""
    energy, _, full, sym = spaces(model)
    maps = _point_maps(energy.lattice.shape, energy.lattice.periodic)
    codes = full.codes
    images = np.stack([_index(f(codes), energy.q) for f in maps])           # (|G|, q^n)
    fixed = (images == np.arange(full.size)[None, :]).sum(1)
    burnside, rem = divmod(int(fixed.sum()), len(maps))
    assert rem == 0 and sym.size == burnside == O.burnside_count(sym.group, energy.q)
    reps, sizes = np.unique(images.min(0), return_counts=True)
    np.testing.assert_array_equal(sym.reps, reps)
    np.testing.assert_array_equal(sym.orbit_size, sizes)
    assert int(sym.orbit_size.sum()) == energy.q ** energy.n_sites == full.size
    np.testing.assert_array_equal(sym.orbit_index(), np.searchsorted(reps, images.min(0)))
    np.testing.assert_array_equal(sym.codes, full.codes[reps])


@pytest.mark.parametrize("model", ["ising3x3", "ising4x4", "potts3x3", "ising3x3open"])
def test_log_z_and_lumped_gibbs_law(model, spaces):
    _, _, full, sym = spaces(model)
    assert abs(sym.log_z - full.log_z) <= 1e-12 * abs(full.log_z)
    idx = sym.orbit_index()
    np.testing.assert_allclose(sym.pi, np.bincount(idx, weights=full.pi), rtol=1e-12, atol=0)
    np.testing.assert_allclose(sym.log_pi_state[idx], full.log_pi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sym.E[idx], full.E, rtol=0, atol=1e-12)   # the same energy in another summation order


def test_log_z_past_the_full_enumeration_against_transfer_matrices():
    """5x5 Ising (2^25 states) at T_c in a field h = 0.3 (h = 0: the slow test), and a 25-site ring: log Z
    of the orbit sums against transfer matrices (and the ring's mean energy against the
    closed form).  The ring by canonical look-up (no orbit table)."""
    energy = Dz.ising((5, 5), 1.0, 0.3)
    sym = O.SymmetricSpace(energy, TC, lookup="canonical")
    assert sym.n_states == 2 ** 25 and int(sym.orbit_size.sum()) == 2 ** 25
    assert abs(sym.log_z - _transfer_log_z(energy, TC)) <= 1e-12 * sym.log_z
    n, J, T = 25, 1.0, 1.3
    ring = O.SymmetricSpace(Dz.ising(n, J, 0.0), T, lookup="canonical")
    assert ring.size == O.burnside_count(ring.group, 2) and len(ring.group) == 2 * n
    assert abs(ring.log_z - Dz.ising_chain_log_partition(n, J, 0.0, T)) <= 1e-12 * ring.log_z
    assert abs(ring.mean(ring.E) - Dz.ising_chain_mean_energy(n, J, T)) <= 1e-12 * n


# ------------------------------------------------------------------------------- the generator
@pytest.mark.parametrize("dyn", ["glauber", "metropolis"])
@pytest.mark.parametrize("model", ["ising3x3", "ising4x4", "potts3x3", "ising3x3open"])
def test_lumped_generator_is_the_sum_over_the_target_orbit(model, dyn, spaces):
    """Lt[B, A] = sum_{j in B} L[j, i] from the full generator, the same for every i in A
    (lumpability), by both look-ups (orbit table, canonical form); detailed balance
    pit_A Lt[B, A] = pit_B Lt[A, B], columns summing to zero, pit stationary."""
    energy, T, full, sym = spaces(model)
    L = Dz.DYNAMICS[dyn](full).tocsc()
    idx = sym.orbit_index()
    # lump every column onto orbits: R[B, i] = sum_{j in B} L[j, i] (sparse: 4x4 is 805 x 65536)
    R = (sp.csr_matrix((np.ones(full.size), (idx, np.arange(full.size))), shape=(sym.size, full.size)) @ L).tocsc()
    expected = R[:, sym.reps].toarray()
    scale = np.abs(expected).max()
    C = R.tocoo()   # any i in A gives the same column: entry by entry, and the same number of entries
    assert np.abs(C.data - expected[C.row, idx[C.col]]).max() <= 1e-13 * scale
    np.testing.assert_array_equal(np.diff(R.indptr), (expected != 0).sum(0)[idx])
    for lookup in ("table", "canonical"):
        s = sym if lookup == sym.lookup else O.SymmetricSpace(energy, T, lookup=lookup)
        Lt = O.LUMPED_DYNAMICS[dyn](s).toarray()
        assert np.abs(Lt - expected).max() <= 1e-13 * scale, lookup
    me = O.SymmetricMasterEquation(sym, dyn)
    Lt = me.L.toarray()
    flow = Lt * sym.pi[None, :]                                          # pit_A Lt[B, A]
    off = ~np.eye(sym.size, dtype=bool)
    assert np.abs(flow - flow.T)[off].max() <= 1e-14 * np.abs(flow).max()
    assert np.abs(Lt.sum(0)).max() <= 1e-13 * scale and Lt[off].min() >= 0
    assert np.abs(Lt @ sym.pi).max() <= 1e-14 * scale


# ------------------------------------------------------------------------------- the exact flow
def _starts(energy, T, full, sym, rng):
    """(name, full law, law on orbits): all up (one colour), the symmetrised point mass of a
    random configuration (averaged over the grid maps here), a smooth symmetric law."""
    q, n = energy.q, energy.n_sites
    up = np.full(n, 1 if q == 2 else 0)
    c = rng.integers(0, q, size=n)
    maps = _point_maps(energy.lattice.shape, energy.lattice.periodic)
    p_orbit = np.zeros(full.size)
    for f in maps:
        p_orbit[_index(f(c[None, :]), q)[0]] += 1.0 / len(maps)
    colour0 = (full.codes == 0).sum(1)
    w = np.exp(-full.E / (2 * T) + 0.4 * colour0)
    w_orb = np.exp(-sym.E / (2 * T) + 0.4 * sym.colour_counts()[:, 0])
    return [("up", full.point_mass(up), sym.point_mass(up)),
            ("orbit", p_orbit, sym.point_mass(c)),
            ("smooth", w / w.sum(), sym.from_state_weights(w_orb))]


@pytest.mark.parametrize("dyn", ["glauber", "metropolis"])
@pytest.mark.parametrize("model", ["ising3x3", "ising4x4", "potts3x3", "ising3x3open"])
def test_reduced_flow_is_the_full_flow(model, dyn, spaces, rng):
    """From three symmetric starts, at t = 0 and later: the orbit solution lifted to all
    states equals the full solution (and the full one lumped equals the orbit one) to
    1e-12 in L1; KL, Dirichlet form, magnetisation and energy laws equal the full ones."""
    energy, T, full, sym = spaces(model)
    me_full = Dz.MasterEquation(full, dyn)
    me = O.SymmetricMasterEquation(sym, dyn)
    times = np.array([0.0, 0.1, 0.5, 2.0, 6.0])
    for name, p_full, p_sym in _starts(energy, T, full, sym, rng):
        np.testing.assert_allclose(sym.lump(p_full), p_sym, rtol=0, atol=1e-14)
        Pf = me_full.solve(p_full, times)
        Ps = me.solve(p_sym, times)
        assert np.abs(sym.lift(Ps) - Pf).sum(1).max() <= 1e-12, name
        assert np.abs(sym.lump(Pf, rtol=1e-9) - Ps).sum(1).max() <= 1e-12, name
        np.testing.assert_allclose(me.kl(Ps), me_full.kl(Pf), rtol=0, atol=1e-12, err_msg=name)
        Dfull, Dsym = me_full.dirichlet(Pf[1:]), me.dirichlet(Ps[1:])
        np.testing.assert_allclose(Dsym, Dfull, rtol=1e-10, atol=0, err_msg=name)
        # the compiled form is finite.dirichlet_form on the lumped chain
        # (inf at t = 0 from a point mass on an orbit: the flow fills its zeros)
        np.testing.assert_allclose(me.dirichlet(Ps), [Dz.dirichlet_form(me.L, p, sym.log_pi) for p in Ps], rtol=1e-12)
        assert (name != "smooth") == (me.dirichlet(Ps[0])[0] == np.inf)
        # the identity itself on the orbits, at every law
        np.testing.assert_allclose(me.kl_rate(Ps[1:]), -Dsym, rtol=1e-10, err_msg=name)
        observables = [("energy", full.E, *me.energy_law(Ps))]
        if energy.q == 2:
            observables.append(("magnetisation", full.magnetisation(), *me.magnetisation_law(Ps)))
        for what, values, support, laws in observables:
            for k in range(times.size):
                # the full law, values grouped to 1e-9 (FiniteSpace.distribution splits
                # energies that differ by round-off in the field's sum)
                sup_f, inv = np.unique(np.round(values, 9), return_inverse=True)
                law_f = np.bincount(inv, weights=Pf[k], minlength=sup_f.size)
                np.testing.assert_allclose(support, sup_f, rtol=0, atol=1e-12, err_msg=what)
                np.testing.assert_allclose(laws[k], law_f, rtol=0, atol=1e-12, err_msg=f"{name} {what} t={times[k]}")


@pytest.mark.parametrize("dyn", ["glauber", "metropolis"])
def test_kl_derivative_is_minus_the_dirichlet_form_on_orbits(dyn):
    """Central differences of the orbit KL converge to -D at second order (4x4 Potts would
    be 3^16 states: 3x4 q = 3 here, 531441 states in 12769 orbits)."""
    sym = O.SymmetricSpace(Dz.potts((3, 4), 3, 1.0), 0.9)
    me = O.SymmetricMasterEquation(sym, dyn)
    p0 = sym.point_mass([0] * 12)
    times = np.array([0.05, 0.3, 1.0, 3.0])
    D = me.dirichlet(me.solve(p0, times))
    assert np.all(D > 0)
    errs = []
    for dlt in (2e-2, 1e-2):
        kl = me.kl(me.solve(p0, np.sort(np.concatenate([times - dlt, times + dlt]))))
        errs.append(np.abs((kl[1::2] - kl[0::2]) / (2 * dlt) + D) / D)
    ratio = errs[0] / errs[1]
    assert np.all((ratio > 3.5) & (ratio < 4.5)), ratio
    kl = me.kl(me.solve(p0, times))
    assert np.all(np.diff(kl) < 0)


def test_no_symmetry_is_the_full_space():
    energy = Dz.potts((2, 3), 3, 0.7)
    sym = O.SymmetricSpace(energy, 1.1, symmetries="none")
    full = Dz.FiniteSpace(energy, 1.1)
    assert sym.size == full.size and np.all(sym.orbit_size == 1)
    for dyn in ("glauber", "metropolis"):
        L = Dz.DYNAMICS[dyn](full)
        assert abs(O.LUMPED_DYNAMICS[dyn](sym) - L).max() <= 1e-15 * abs(L).max() * full.n_sites


def _burnside_by_cycles(shape, q):
    """(1/|G|) sum_g q^cycles(g) over the grid maps, the cycles counted on moved labels."""
    n = int(np.prod(shape))
    total = 0
    maps = _point_maps(shape, True)
    for f in maps:
        g = np.argsort(f(np.arange(n)[None, :])[0])
        seen, cycles = set(), 0
        for i in range(n):
            if i not in seen:
                cycles += 1
                while i not in seen:
                    seen.add(i)
                    i = int(g[i])
        total += q ** cycles
    return total // len(maps)


def test_refusals():
    """Too many orbits (the count named, from Burnside's lemma computed here); energies
    without a lattice; permutations that are not symmetries; a law that is not symmetric."""
    for shape, q, model in (((6, 6), 2, Dz.ising((6, 6))), ((4, 4), 4, Dz.potts((4, 4), 4))):
        count = _burnside_by_cycles(shape, q)
        n = shape[0] * shape[1]
        with pytest.raises(Dz.TooManyStatesError,
                           match=rf"{shape[0]}x{shape[1]} .*{q}\^{n} = .* states in {count:.4g} orbits".replace("+", r"\+")):
            O.SymmetricSpace(model)
    with pytest.raises(TypeError, match="PairEnergy"):
        O.SymmetricSpace(Dz.TableEnergy(2, 3, np.zeros(8)))
    with pytest.raises(ValueError, match="does not map the edges"):
        O.SymmetricSpace(Dz.ising((3, 3)), symmetries=[[1, 0, 2, 3, 4, 5, 6, 7, 8]])
    with pytest.raises(ValueError, match="no translations"):
        O.SymmetricSpace(Dz.ising((3, 3), periodic=False), symmetries="translations")
    sym = O.SymmetricSpace(Dz.ising((3, 3), 1.0, 0.0), 2.0)
    full = Dz.FiniteSpace(Dz.ising((3, 3), 1.0, 0.0), 2.0)
    with pytest.raises(ValueError, match="not constant on the orbits"):
        sym.lump(full.point_mass([1, 0, 0, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="lump it"):
        O.SymmetricMasterEquation(sym).solve(full.pi, [1.0])
    with pytest.raises(ValueError, match="dynamics"):
        O.SymmetricMasterEquation(sym, "kawasaki")
    with pytest.raises(ValueError, match="configuration"):
        sym.point_mass([2] * 9)
    big = O.SymmetricSpace(Dz.ising(23), 1.0, lookup="canonical")       # 2^23 states, 182 thousand orbits
    with pytest.raises(Dz.TooManyStatesError, match="orbits"):
        big.lift(big.point_mass([1] * 23))


# ------------------------------------------------------------------------------- the large lattices
@pytest.mark.slow
@pytest.mark.parametrize("model", ["ising5x5", "potts4x4"])
def test_large_lattice_kl_curve_from_the_ordered_state(model):
    """5x5 Ising at T_c (2^25 states) and 4x4 Potts q = 3 at its T_c (3^16), Glauber from
    all up / one colour: log Z against the transfer matrix, KL(0) = -log pi(start) =
    E_start / T + log Z, KL strictly decreasing, d/dt KL = -D (exact rate and central
    differences), the magnetisation / energy laws normalised and a point mass at t = 0."""
    if model == "ising5x5":
        energy, T, start = Dz.ising((5, 5), 1.0, 0.0), TC, [1] * 25
    else:
        energy, T, start = Dz.potts((4, 4), 3, 1.0), 1 / math.log(1 + math.sqrt(3)), [0] * 16
    sym = O.SymmetricSpace(energy, T)
    assert abs(sym.log_z - _transfer_log_z(energy, T)) <= 1e-12 * sym.log_z
    me = O.SymmetricMasterEquation(sym, "glauber")
    times = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    P = me.solve(sym.point_mass(start), times)
    kl = me.kl(P)
    e_start = float(energy.energy(np.array([start]))[0])
    assert abs(kl[0] - (e_start / T + sym.log_z)) <= 1e-12 * kl[0]
    assert np.all(np.diff(kl) < 0) and np.abs(P.sum(1) - 1).max() < 1e-12
    D = me.dirichlet(P[1:])
    np.testing.assert_allclose(me.kl_rate(P[1:]), -D, rtol=1e-10)
    dlt = 1e-2
    kk = me.kl(me.solve(sym.point_mass(start), np.sort(np.concatenate([times[1:] - dlt, times[1:] + dlt]))))
    fd = (kk[1::2] - kk[0::2]) / (2 * dlt)
    assert np.all(np.abs(fd + D) <= 1e-3 * D), np.abs(fd + D) / D
    support, laws = me.energy_law(P)
    assert np.abs(laws.sum(1) - 1).max() < 1e-12 and laws[0, np.argmin(support)] == pytest.approx(1, abs=1e-15)


@pytest.mark.parametrize("energy", [Dz.ising((2, 2), 1.0, 0.3), Dz.ising((2,), 1.0, 0.1), Dz.ising((1,), 1.0, 0.2),
                                    Dz.ising((2, 5), 0.7, 0.1), Dz.ising((1, 4), 1.0, 0.0), Dz.potts((2, 3), 4, 1.0),
                                    Dz.potts((3,), 5, 1.0), Dz.potts((2, 2), 7, 1.0), Dz.potts((3,), 17, 0.5),
                                    Dz.potts((3, 2), 3, -0.8, periodic=False)],
                         ids=lambda e: f"{e.name}{e.lattice.shape}q{e.q}{'' if e.lattice.periodic else 'open'}")
def test_small_and_odd_lattices(energy):
    """Sides of 1 and 2 (a 2-site periodic axis has one edge; some symmetries coincide),
    alphabets of 4 to 17 letters (chunks of 4, 3, 2, 1 digits), an antiferromagnetic open
    Potts lattice: orbit sizes sum to q^n, and the lifted Glauber/Metropolis flow from one
    letter everywhere is the full flow, by both look-ups."""
    full = Dz.FiniteSpace(energy, 1.1)
    start = np.ones(energy.n_sites, dtype=int)
    for lookup in ("table", "canonical"):
        sym = O.SymmetricSpace(energy, 1.1, lookup=lookup)
        assert int(sym.orbit_size.sum()) == full.size and sym.size == O.burnside_count(sym.group, energy.q)
        for dyn in ("glauber", "metropolis"):
            P = O.SymmetricMasterEquation(sym, dyn).solve(sym.point_mass(start), [0.0, 0.5, 2.0])
            Pf = Dz.MasterEquation(full, dyn).solve(full.point_mass(start), [0.0, 0.5, 2.0])
            assert np.abs(sym.lift(P) - Pf).sum(1).max() <= 1e-12


# --- the built-in experiment: fpk run with [lattice] symmetry ---------------------------------
_ISING_CFG = """kind = "ising"
temperature = 2.269185314213022
[lattice]
model = "{model}"
shape = {shape}
{extra}
symmetry = "{sym}"
[dynamics]
name = "{dyn}"
[spins]
initial = "{init}"
n = 500
seed = 1
[times]
stop = 1.5
num = 6
"""


def _run_ising(tmp_path, name, **kw):
    from fokkerplanck.app import cli
    from fokkerplanck.app.runner import read_run

    opts = dict(model="ising", shape="[3, 3]", extra="", sym="none", dyn="glauber", init="up") | kw
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(_ISING_CFG.format(**opts))
    out = tmp_path / f"{name}.h5"
    assert cli.main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    return read_run(out)


@pytest.mark.filterwarnings("ignore:plug-in KL")   # 500 particles on 3^9 states: flagged, as it should be
@pytest.mark.parametrize("model,extra,dyn", [("ising", "", "glauber"), ("potts", "q = 3", "metropolis")])
def test_run_on_orbits_equals_the_run_on_all_states(tmp_path, model, extra, dyn):
    """The ising experiment on the orbits gives the full chain's exact datasets to round-off."""
    full = _run_ising(tmp_path, "full", model=model, extra=extra, dyn=dyn)
    red = _run_ising(tmp_path, "orbits", model=model, extra=extra, dyn=dyn, sym="lattice")
    a, b = full["exact"], red["exact"]
    assert b["orbits"] < a["orbits"] == b["states"] and b["symmetries"] == 72 and a["symmetries"] == 1
    for key in ("kl", "mean_energy", "magnetisation_law"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-12, atol=1e-13, err_msg=key)
    fin = np.isfinite(a["dirichlet"])
    np.testing.assert_allclose(b["dirichlet"][fin], a["dirichlet"][fin], rtol=1e-10)
    np.testing.assert_array_equal(b["magnetisation_support"], a["magnetisation_support"])
    assert b["spectral_gap"] >= a["spectral_gap"] * (1 - 1e-10)   # the symmetric sector's gap: never smaller
    assert "kl_plugin" in full["particles"] and "kl_plugin" not in red["particles"]


def test_run_refuses_an_asymmetric_start_on_orbits(tmp_path):
    from fokkerplanck.app import cli

    cfg = tmp_path / "bad.toml"
    cfg.write_text(_ISING_CFG.format(model="ising", shape="[5, 5]", extra="", sym="auto", dyn="glauber",
                                     init="random"))
    with pytest.raises(ValueError, match="symmetric start.*too many to enumerate"):
        cli.main(["run", str(cfg), "-o", str(tmp_path / "bad.h5"), "-q", "--debug"])


def test_laws_are_refused_when_not_probability_vectors():
    """Both spaces share one check: negative entries and mass != 1 are refused by name."""
    e = Dz.ising((2, 2))
    for space in (Dz.FiniteSpace(e, 1.0), O.SymmetricSpace(e, 1.0)):
        p = np.full(space.size, 1.0 / space.size)
        np.testing.assert_array_equal(space.check_law(p), p)
        bad = p.copy()
        bad[0], bad[1] = -1e-3, bad[1] + 1e-3
        with pytest.raises(ValueError, match="negative entries"):
            space.check_law(bad)
        with pytest.raises(ValueError, match="sums to"):
            space.check_law(1.01 * p)
