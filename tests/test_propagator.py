"""The exact propagator on every path it can take, held to round-off against the discrete truth.

``ReversiblePropagator`` (fokkerplanck/operators/propagator.py) computes ``exp(t L) p0`` by
uniformisation while ``sqrt(1 + chi^2(p || pi))`` exceeds ``CHI_MAX``, then by a dense
``eigh`` of the symmetrised generator (up to ``EIGH_MAX`` states) or by Chebyshev sweeps in
segments of at most ``KMAX`` terms, replaced by the Gibbs law once the rest has decayed below
``tol``.  Grids of 2000 cells or fewer never leave ``eigh`` by themselves, so each path is
forced here at small sizes by monkeypatching the thresholds, and every output (at t = 0, in
the uniformisation window, in the first segment after it, across segments, after the jump
to the Gibbs law) is compared with a dense ``scipy.linalg.expm`` of the same generator.  For
the grid solver the generator itself is assembled here independently from the
Scharfetter-Gummel face flux of DESIGN.md section 3, so a wrong flux fails as well.

The discretisation error of these grids is 1e-3 to 1e-2; the tolerances below are 1e-12,
the measured agreement 1e-15 to 3e-13 (dense expm's own round-off included).
"""
import numpy as np
import pytest
import scipy.linalg as sl
import scipy.sparse as sp
from scipy.sparse.linalg import expm_multiply
from scipy.special import exprel

import fokkerplanck.flows.fokker_planck as fpmod
from fokkerplanck import FokkerPlanck, Grid, densities, energies as E
from fokkerplanck.discrete import finite as Dz
from fokkerplanck.operators import expm as X, propagator as P

ROUND_OFF = 1e-12   # measured 1e-15 .. 3e-13 (the dense reference's own error: see the path test)
# the discrete identities hold whatever the box: these small grids cut the laws at their walls
pytestmark = pytest.mark.filterwarnings("ignore:density mass .* within two cells of the walls:RuntimeWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    """These operators are tiny (<= 2112 states): BLAS and numba on one thread each.  On a
    shared loaded machine their thread pools, spinning for cores, made this file 100 s
    instead of 6 s; the results are the same to round-off (the stencil sweeps bit for bit)."""
    import numba

    from fokkerplanck._core.jit import one_blas_thread

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with one_blas_thread():
            yield
    finally:
        numba.set_num_threads(before)


def rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def sg_reference(grid, U, T):
    """Dense ``L`` with ``d rho / dt = L rho`` from the face flux
    ``J = (T/h) [B(delta) rho_i - B(-delta) rho_j]``, ``delta = (U_j - U_i) / T``,
    ``B(z) = z / (e^z - 1) = 1 / exprel(z)``, ``d rho_i / dt = -(J_out - J_in) / h``:
    a loop over cells and axes, sharing no code with fokkerplanck.operators.fluxes."""
    u = np.asarray(U, dtype=float).reshape(grid.shape)
    L = np.zeros((grid.size, grid.size))
    for idx in np.ndindex(*grid.shape):
        i = np.ravel_multi_index(idx, grid.shape)
        for a in range(grid.ndim):
            nb = list(idx)
            nb[a] += 1
            if nb[a] == grid.shape[a]:
                if not grid.periodic[a]:
                    continue  # zero-flux wall
                nb[a] = 0
            j = np.ravel_multi_index(tuple(nb), grid.shape)
            h = grid.spacing[a]
            delta = (u[tuple(nb)] - u[idx]) / T
            fwd, back = T / h**2 / exprel(delta), T / h**2 / exprel(-delta)   # rates i -> j, j -> i
            L[j, i] += fwd
            L[i, i] -= fwd
            L[i, j] += back
            L[j, j] -= back
    return L


def dense_flow(L, p0, times):
    """``[expm(t L) p0 for t in times]`` by dense Pade scaling and squaring."""
    L = L.toarray() if sp.issparse(L) else L
    return np.stack([sl.expm(t * L) @ p0 for t in times])


def rel_err(out, ref):
    """Largest entry error relative to the largest entry, per output time."""
    return np.abs(out - ref).max(axis=1) / np.abs(ref).max(axis=1)


# ------------------------------------------------------------------------------ grid cases
def case_1d():
    # double well (non-quadratic), T = 0.6, an off-centre start: 70 cells
    g = Grid([(-2.3, 2.5)], 70)
    return E.DoubleWell(1, barrier=1.0), g, 0.6, densities.Gaussian([0.9], 0.08)


def case_2d():
    # rotated anisotropic quadratic (non-diagonal A), shifted minimum, T = 1.7: 15 x 13 cells
    A = rotation(0.6) @ np.diag([2.5, 0.6]) @ rotation(0.6).T
    g = Grid([(-4.5, 5.0), (-5.0, 4.5)], (15, 13))
    return E.Quadratic(A, mean=[0.3, -0.2]), g, 1.7, densities.Gaussian([1.5, -1.0], [[0.3, 0.1], [0.1, 0.2]])


def case_3d():
    # non-diagonal 3D quadratic, T = 0.6: 7 x 6 x 5 cells
    A = np.array([[1.6, 0.4, -0.2], [0.4, 1.1, 0.3], [-0.2, 0.3, 0.9]])
    g = Grid([(-3.5, 3.5), (-3.0, 3.6), (-3.2, 3.0)], (7, 6, 5))
    return E.Quadratic(A), g, 0.6, densities.Gaussian([0.8, -0.6, 0.4], [[0.4, 0.1, 0.0], [0.1, 0.3, 0.05],
                                                                        [0.0, 0.05, 0.5]])


CASES = {"1d": case_1d, "2d": case_2d, "3d": case_3d}


@pytest.mark.parametrize("name", sorted(CASES))
def test_grid_generator_is_the_scharfetter_gummel_flux(name):
    """The solver's sparse generator, its matrix-free stencils (the propagator's operators)
    and the symmetrised form equal the generator assembled here from the flux formula, at
    T != 1 (a factor T or a sign in the flux changes entries by O(1))."""
    U, g, T, _ = CASES[name]()
    fp = FokkerPlanck(U, g, T)
    Lref = sg_reference(g, fp.U, T)
    scale = np.abs(Lref).max()
    np.testing.assert_allclose(fp.generator.toarray(), Lref, rtol=0, atol=1e-13 * scale)
    x = np.random.default_rng(3).normal(size=g.size)
    np.testing.assert_allclose(fp.generator_stencil.dot(x), Lref @ x, rtol=0, atol=1e-13 * scale * np.abs(x).max())
    # S = D^{-1/2} L D^{1/2} with D = diag(exp(-U/T)) (up to a constant)
    d = np.exp(-(fp.U.ravel() - fp.U.min()) / (2 * T))
    Sref = Lref * d[None, :] / d[:, None]
    np.testing.assert_allclose(fp.symmetric.toarray(), Sref, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(fp.stencil.dot(x), Sref @ x, rtol=0, atol=1e-13 * scale * np.abs(x).max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_solver_is_the_matrix_exponential_of_the_flux_generator(name):
    """``FokkerPlanck.solve`` (default path) against ``expm(t L_ref) rho0`` with ``L_ref`` from
    :func:`sg_reference`: 1D double well at T = 0.6, 2D rotated anisotropic quadratic at
    T = 1.7, 3D non-diagonal quadratic at T = 0.6.  Measured max error 2.8e-15 .. 1.6e-13 of
    the largest density value; the discretisation error of these grids is 1e-3 .. 1e-1."""
    U, g, T, rho0 = CASES[name]()
    fp = FokkerPlanck(U, g, T)
    times = np.array([0.0, 0.003, 0.05, 0.4, 1.1, 3.0])
    tr = fp.solve(rho0, times)
    p0 = tr.densities[0].ravel()
    np.testing.assert_array_equal(p0, rho0.on_grid(g).ravel())
    ref = dense_flow(sg_reference(g, fp.U, T), p0, times)
    out = tr.densities.reshape(times.size, -1)
    assert rel_err(out, ref).max() < ROUND_OFF, rel_err(out, ref)
    assert np.abs(out.sum(axis=1) * g.cell_volume - 1).max() < 1e-12


def test_exact_solver_against_expm_multiply_on_a_larger_2d_grid():
    """48 x 44 cells (2112: above EIGH_MAX, the Chebyshev path without any patching), rotated
    quadratic at T = 0.8, a start far from the Gibbs law (uniformisation first): against
    scipy's Taylor ``expm_multiply`` of the solver's sparse generator at 9 equally spaced
    times (measured 4e-14)."""
    A = rotation(-0.9) @ np.diag([3.0, 0.8]) @ rotation(-0.9).T
    g = Grid([(-5, 5), (-4.5, 4.5)], (48, 44))
    fp = FokkerPlanck(E.Quadratic(A), g, 0.8)
    times = np.linspace(0, 2.0, 9)
    tr = fp.solve(densities.Gaussian([2.0, 1.5], 0.05), times)
    assert tr.info["uniformisation_until"] > 0 and tr.info["exact"] == "chebyshev"
    ref = expm_multiply(fp.generator, tr.densities[0].ravel(), start=0, stop=2.0, num=9, endpoint=True)
    out = tr.densities.reshape(times.size, -1)
    assert rel_err(out, ref).max() < ROUND_OFF, rel_err(out, ref)


# ------------------------------------------------------------------------------ every path
PATHS = ["eigh", "chebyshev", "segments", "gibbs-jump", "uniformisation", "uniformise-then-eigh",
         "uniformise-then-chebyshev"]
# Chebyshev budgets that cut the runs below into segments: ~10 segments over the outputs of
# "segments", ~8 before the jump to the Gibbs law for "gibbs-jump"
KMAX = {"segments": {"grid": 64, "glauber": 16, "metropolis": 16},
        "gibbs-jump": {"grid": 128, "glauber": 64, "metropolis": 64}}


# spectral gaps of the three generators below (measured: dense eigenvalues of the references)
GAP = {"grid": 1.488, "glauber": 0.2185, "metropolis": 0.3066}


def _force(monkeypatch, path, problem):
    """Module thresholds that force ``path`` at these small sizes."""
    if path in ("chebyshev", "segments", "gibbs-jump", "uniformise-then-chebyshev"):
        monkeypatch.setattr(fpmod, "EIGH_MAX_CELLS", 0)     # read when the grid solver builds its propagator
        monkeypatch.setattr(Dz, "EIGH_MAX_STATES", 0)       # ... and the master equation
    if path in KMAX:
        monkeypatch.setattr(X, "KMAX", KMAX[path][problem])  # read at call time: segment length
    if path == "uniformisation":
        monkeypatch.setattr(P, "CHI_MAX", 0.5)  # sqrt(1 + chi^2) >= 1 > 0.5: uniformise to the end


def _problem(problem, path):
    """``(propagate(times) -> (out, info), p0, L, lam_max, weight)``: ``L`` dense, the reference.

    grid: 1D, 60 cells of [-4.5, 4.5], U = 1.5 (x - 0.25)^2 / 2 at T = 0.7 (gap 1.49); the
    start N(0.7, 0.4) is near the Gibbs law (sqrt(1 + chi^2) = 1.2: straight to the
    symmetric phase), N(2.2, 0.01) far from it (17: uniformisation first).
    glauber / metropolis: Ising 2 x 4 (256 states), J = 1, h = 0.2, T = 3 (gaps 0.22, 0.31);
    a smooth tilt of pi (near) or a point mass (far, sqrt(1 + chi^2) = 69)."""
    far = path.startswith("uniformis")
    if problem == "grid":
        g = Grid([(-4.5, 4.5)], 60)
        fp = FokkerPlanck(E.Quadratic([[1.5]], mean=[0.25]), g, 0.7)
        rho0 = densities.Gaussian([2.2], 0.01) if far else densities.Gaussian([0.7], 0.4)

        def propagate(times):
            tr = FokkerPlanck(fp.energy, g, fp.temperature).solve(rho0, times)   # a fresh solver: the patched module
            return tr.densities.reshape(times.size, -1), tr.info

        return propagate, rho0.on_grid(g).ravel(), sg_reference(g, fp.U, fp.temperature), fp.lam_max, g.cell_volume
    space = Dz.FiniteSpace(Dz.ising((2, 4), 1.0, 0.2), 3.0)
    if far:
        p0 = space.point_mass([0, 1, 0, 1, 1, 0, 0, 0])
    else:
        w = np.exp(0.3 * np.sin(np.arange(space.size)))
        p0 = space.pi * w / (space.pi @ w)
    me = Dz.MasterEquation(space, problem)

    def propagate(times):
        fresh = Dz.MasterEquation(space, problem)
        out, info = fresh.propagator(p0, times, tol=1e-14)
        np.testing.assert_array_equal(fresh.solve(p0, times), out)   # solve is this propagator
        return out, info

    return propagate, p0, me.L.toarray(), me.propagator.lam_max, 1.0


def _times(path, seg, gap, t_u):
    """Output times that probe the path: repeated t = 0; for segments, outputs on and just
    past segment ends and segments with no output; around the jump to the Gibbs law (at
    ~ 32 / gap for tol 1e-14); inside the uniformisation window, at its end and in the first
    symmetric segment after it."""
    if path == "segments":
        return seg * np.array([0.0, 0.0, 1e-4, 0.05, 0.5, 1.0, 1.0 + 1e-9, 1.3, 2.0, 6.5, 6.6, 13.0])
    if path == "gibbs-jump":
        # no output between 1 / gap and 20 / gap: the jump is decided from the state at 1 / gap,
        # where a jump decided too early (the remainder at 20 / gap is e^-20 of it) shows
        return np.concatenate([[0.0, 0.0, 0.01, 0.3, 1.0], np.linspace(20.0, 40.0, 6)]) / gap
    if path.startswith("uniformise-"):
        # two sets: one output exactly at the switch, and one whose last uniformised output
        # is before it (so an output left to the symmetric phase by mistake is seen)
        after = np.concatenate([[t_u * (1 + 1e-9), t_u + 1e-3 / gap, t_u + 0.03 / gap],
                                t_u + np.linspace(1.0, 6.0, 4) / gap])
        return [np.concatenate([[0.0, 0.0, 0.1 * t_u, 0.5 * t_u, t_u], after]),
                np.concatenate([[0.0, 0.1 * t_u, 0.5 * t_u, 0.97 * t_u, t_u * (1 - 1e-9)], after])]
    if path == "uniformisation":   # every output by uniformisation: ~ rate t products, kept short
        return np.concatenate([[0.0, 0.0, 1e-4], np.linspace(0.05, 3.0, 6) / gap])
    return np.concatenate([[0.0, 0.0, 1e-4], np.linspace(0.05, 7.0, 8) / gap])


def _check_path(info, path, times):
    """The solver took the path the test is about (so the comparison is not vacuous)."""
    if path == "eigh":
        assert info["exact"] == "eigh" and info["uniformisation_until"] == 0
    elif path == "chebyshev":
        assert info["exact"] == "chebyshev" and info["segments"] == 1 and info["uniformisation_until"] == 0
    elif path == "segments":
        assert info["exact"] == "chebyshev" and info["segments"] >= 10 and info["gibbs_jump_outputs"] == 0
    elif path == "gibbs-jump":
        assert info["exact"] == "chebyshev" and info["segments"] > 3 and 0 < info["gibbs_jump_outputs"] < 6
    elif path == "uniformisation":
        assert info["uniformisation_until"] == times[-1] and "exact" not in info
    else:
        assert 0 < info["uniformisation_until"] < times[5] and info["exact"] == path.split("-")[-1]


@pytest.mark.parametrize("problem", ["grid", "glauber", "metropolis"])
@pytest.mark.parametrize("path", PATHS)
def test_propagator_paths_against_dense_expm(path, problem, monkeypatch):
    """Each path of the propagator, for the grid Fokker-Planck generator and the Glauber and
    Metropolis master equations, at many outputs against ``expm(t L) p0`` (dense Pade) to
    round-off: measured 1e-15 .. 3.3e-13 of the largest entry; the reference's own error grows
    with ``t lam_max`` (up to 3.5e3 here: dense expm and scipy's expm_multiply then differ by
    up to 5e-13).  Outputs at t = 0 are the start itself, bit for bit;
    the mass is 1 to round-off."""
    _force(monkeypatch, path, problem)
    propagate, p0, L, lam_max, weight = _problem(problem, path)
    gap = GAP[problem]   # the time scale of the outputs, fixed here: a wrong library gap cannot move them
    seg = X.max_segment(lam_max, 1e-14, X.KMAX)
    t_u = propagate(np.array([0.0, 5.0 / gap]))[1]["uniformisation_until"] if path.startswith("uniformise-") else 0
    sets = _times(path, seg, gap, t_u)
    sets = sets if isinstance(sets, list) else [sets]
    unique = np.unique(np.concatenate(sets))
    refs = dict(zip(unique, dense_flow(L, p0, unique)))
    for times in sets:
        out, info = propagate(times)
        _check_path(info, path, times)
        for j in np.flatnonzero(times == 0):
            np.testing.assert_array_equal(out[j], p0)
        ref = np.stack([refs[t] for t in times])
        err = rel_err(out, ref)
        assert err.max() < ROUND_OFF, dict(zip(times.round(4), err))
        assert np.abs(out.sum(axis=1) * weight - 1).max() < 1e-12


# ------------------------------------------------------------------------------ the kernels
def test_chebyshev_kernel_against_dense_expm(rng):
    """``chebyshev_expm_multiply`` on a random symmetric negative semi-definite matrix at many
    times in one sweep (unsorted, repeated, 0): within ``tol ||v||`` of ``expm(t S) v``
    (measured 5.1e-15 at tol 1e-14, against 1e-12; 5.6e-9 at tol 1e-8: the truncation bound
    is honoured, not by orders of magnitude)."""
    n = 60
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = -np.concatenate([[0.0], rng.uniform(0.01, 40.0, n - 1)])
    S = (Q * lam) @ Q.T
    v = rng.normal(size=n)
    times = np.array([0.3, 0.0, 2.0, 0.05, 2.0, 9.0])
    lam_max = X.gershgorin_bound(sp.csr_matrix(S))
    ref = np.stack([(Q * np.exp(t * lam)) @ (Q.T @ v) for t in times])
    for tol in (1e-14, 1e-8):
        out = X.chebyshev_expm_multiply(lambda x: S @ x, v, times, lam_max, tol=tol)
        err = np.linalg.norm(out - ref, axis=1) / np.linalg.norm(v)
        assert err.max() < (ROUND_OFF if tol < 1e-12 else tol), (tol, err)
    with pytest.raises(X.ChebyshevBudgetError):
        X._coefficients(0.5 * 1e6 * lam_max, 1e-14, kmax=X.KMAX)


def test_uniformisation_kernel_against_dense_expm(rng):
    """``uniformization_multiply`` on a random rate matrix (not reversible): positive, mass
    kept, close to ``expm(t L) v`` in L1 (measured 3.0e-14 at tol 1e-14, the mass to 3.0e-14:
    dense expm's and the sum's round-off; window 1e-13)."""
    n = 40
    R = rng.uniform(0, 3, size=(n, n)) * (rng.uniform(size=(n, n)) < 0.3)
    np.fill_diagonal(R, 0)
    L = R - np.diag(R.sum(axis=0))
    v = rng.dirichlet(np.ones(n))
    times = np.array([0.0, 0.01, 0.4, 0.4, 3.0])
    rate = np.abs(np.diag(L)).max()
    out, k = X.uniformization_multiply(lambda x: L @ x, v, times, rate, tol=1e-14)
    ref = dense_flow(L, v, times)
    assert np.abs(out - ref).sum(axis=1).max() < 1e-13
    assert out.min() >= 0 and np.abs(out.sum(axis=1) - 1).max() < 1e-13
    assert k > rate * times[-1]   # the Poisson mean: fewer terms would truncate


def test_a_metastable_mode_is_resolved_on_the_dense_path():
    """A double well at low temperature (barrier 2, T = 0.2, 300 cells): its slowest mode decays
    at gap = 1.6e-4, 2.5e-8 of the fastest rate, far below the fast modes but far above the
    round-off of the dense eigendecomposition (~1e-13 of the fastest rate), which is what may be
    treated as zero.  Started in the left well: at t = 1/gap the law equals the reference
    (the eigendecomposition of the independently assembled generator, its Gibbs eigenvalue set
    to 0; measured 3.8e-11 in L1: the slow eigenvalue's round-off, ~3e-12, times t = 6.4e3), the
    left well holds the two-state mass 1/2 + e^{-1}/2 (measured 7.4e-6 off: the fast modes and
    the slow mode's shape), and at t = 1e7 the law is the Gibbs law (measured 2e-14)."""
    g = Grid([(-2.5, 2.5)], 300)
    U, T = E.DoubleWell(1, barrier=2.0), 0.2
    fp = FokkerPlanck(U, g, T)
    u = fp.U.ravel()
    L = sg_reference(g, u, T)
    d = np.exp(-(u - u.min()) / (2 * T))
    S = L * d[None, :] / d[:, None]       # symmetric by detailed balance
    lam, V = np.linalg.eigh(0.5 * (S + S.T))
    lam[-1] = 0.0                         # the Gibbs direction: an eigenvalue 0, known exactly
    gap = -lam[-2]
    assert 1e-9 < gap / -lam[0] < 1e-7    # the regime this test is about
    p0 = densities.Gaussian([-1.0], 0.01).on_grid(g).ravel()
    p0 /= p0.sum() * g.cell_volume
    tr = fp.solve(p0, [1 / gap, 1e7])
    assert tr.info["exact"] == "eigh"
    ref = d * (V @ (np.exp(lam / gap) * (V.T @ (p0 / d))))
    assert np.abs(tr.densities[0] - ref).sum() * g.cell_volume < 1e-9
    left = tr.densities[0][g.axes[0] < 0].sum() * g.cell_volume
    assert abs(left - (0.5 + 0.5 * np.exp(-1))) < 1e-4
    gibbs = d**2 / (np.sum(d**2) * g.cell_volume)
    assert np.abs(tr.densities[1] - gibbs).sum() * g.cell_volume < 1e-12


def test_a_heavy_tailed_start_meets_the_tolerance_on_the_chebyshev_path():
    """The eight Gaussians at T = 0.8 on 64^2 cells (past ``EIGH_MAX``: uniformisation, then
    one Chebyshev sweep) from N((0.5, 0), 4 I), whose chi-square to the Gibbs law is 1e40:
    the symmetric phase may start only once ``sqrt(1 + chi^2) <= chi_max(tol)``.  Against
    uniformisation all the way at 1e-16 (positive, L1-exact): within ``2 tol`` (each phase's
    own bound) plus round-off in L1, measured 1.4e-13 at 1e-14 (the reference's and the
    sweep's round-off) and 1.2e-10 at 1e-10; a density everywhere (the negatives of size
    ``tol ||w|| sqrt(pi)`` set to 0).  A switch that ignored chi (the Chebyshev error is
    relative to ``||w|| = sqrt(1 + chi^2)``) would be off by orders of magnitude."""
    g = Grid([(-8, 8), (-8, 8)], 64)
    fp = FokkerPlanck(E.GaussianMixture.ring(), g, 0.8)
    with pytest.warns(RuntimeWarning, match="walls"):
        tr0 = fp.solve(densities.Gaussian([0.5, 0], 4.0), [0.0])
    p0 = tr0.densities[0]
    times = np.array([0.0, 0.05, 0.3, 1.0, 1.001, 3.0])
    prop = fp.propagator
    assert prop.log_chi(p0.ravel()) > 40
    ref, _ = X.uniformization_multiply(prop.generator.dot, p0.ravel(), times, prop.rate, tol=1e-16)
    for tol, window in ((1e-14, 5e-13), (1e-10, 2e-10)):
        tr = fp.solve(p0, times, tol=tol)
        assert tr.info["exact"] == "chebyshev" and 0 < tr.info["uniformisation_until"] < 1.0
        err = np.abs(tr.densities.reshape(times.size, -1) - ref).sum(axis=1) * g.cell_volume
        assert err.max() < window, (tol, err)
        assert tr.densities.min() >= 0
    assert P.chi_max(1e-14) == pytest.approx(10) and P.chi_max(1e-20) == 2.0 and P.chi_max(1.0) == P.CHI_MAX


@pytest.mark.parametrize("space", ["w", "p"])
def test_uniformisation_on_the_symmetric_stencil_and_on_the_generator(space, monkeypatch):
    """With a symmetric stencil the positive phase runs on ``w = p / sqrt(pi)`` with ``S``
    (the generator is then never built); where ``max p / pi`` could overflow it runs on
    ``p`` with ``L``.  Both, forced to the end (``CHI_MAX`` below 1), against dense
    ``expm(t L) p0`` of the independently assembled flux generator (2D, rotated anisotropic
    quadratic, T = 1.7): round-off (measured 1e-15 .. 2e-14 of the largest entry), mass 1,
    no negative value."""
    monkeypatch.setattr(P, "CHI_MAX", 0.5)
    if space == "p":
        monkeypatch.setattr(P.ReversiblePropagator, "_max_log_u", lambda self, p: np.inf)
    U, g, T, rho0 = case_2d()
    fp = FokkerPlanck(U, g, T)
    times = np.array([0.0, 0.003, 0.02, 0.1, 0.4])
    tr = fp.solve(rho0, times)
    assert tr.info["uniformisation_until"] == times[-1]
    assert ("generator_stencil" in fp.__dict__) == (space == "p")
    p0 = tr.densities[0].ravel()
    ref = dense_flow(sg_reference(g, g.evaluate(U), T), p0, times)
    out = tr.densities.reshape(times.size, -1)
    assert rel_err(out, ref).max() < ROUND_OFF
    assert out.min() >= 0 and np.abs(out.sum(axis=1) * g.cell_volume - 1).max() < 1e-12
