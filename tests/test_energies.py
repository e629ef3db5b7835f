"""Energies: derivatives against finite differences and closed forms, kernels equal
to the vectorised methods, log-partition functions, specs, algebra, bad input."""
import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fokkerplanck import Grid, energies as E

FD_H = 1e-5


def fd_grad(U, X, h=FD_H):
    G = np.empty_like(X)
    for i in range(X.shape[1]):
        e = np.zeros(X.shape[1]); e[i] = h
        G[:, i] = (U.value(X + e) - U.value(X - e)) / (2 * h)
    return G


def fd_hess(U, X, h=FD_H):
    d = X.shape[1]
    H = np.empty((X.shape[0], d, d))
    for i in range(d):
        e = np.zeros(d); e[i] = h
        H[:, :, i] = (U.grad(X + e) - U.grad(X - e)) / (2 * h)
    return H


def check_derivatives(U, X, rtol=1e-6):
    g, H, lap = U.grad(X), U.hessian(X), U.laplacian(X)
    scale_g = 1 + np.abs(g).max()
    np.testing.assert_allclose(g, fd_grad(U, X), atol=rtol * scale_g * 10)
    scale_h = 1 + np.abs(H).max()
    np.testing.assert_allclose(H, fd_hess(U, X), atol=rtol * scale_h * 10)
    np.testing.assert_allclose(lap, np.trace(H, axis1=1, axis2=2), rtol=1e-12, atol=1e-12 * scale_h)
    np.testing.assert_allclose(H, np.swapaxes(H, 1, 2), atol=1e-12 * scale_h)


def check_kernels_match(U, X):
    k = U.eval_kernels(X)
    np.testing.assert_allclose(k["value"], U.value(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k["grad"], U.grad(X), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(k["lap"], U.laplacian(X), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(k["hess"], U.hessian(X), rtol=1e-10, atol=1e-10)


A2 = np.array([[2.0, 0.6], [0.6, 0.5]])

ENERGIES = {
    "quadratic": lambda: E.Quadratic(A2, [0.3, -0.2]),
    "quadratic3d": lambda: E.Quadratic(np.diag([1.0, 2.0, 3.0]) + 0.1, [0, 1, 0]),
    "doublewell1d": lambda: E.DoubleWell(1, barrier=2.0, scale=1.5),
    "doublewell3d": lambda: E.DoubleWell(3, barrier=0.7),
    "ring8": lambda: E.GaussianMixture.ring(),
    "aniso_mix": lambda: E.GaussianMixture([[0, 0], [2, 1]], [[[1, 0.3], [0.3, 0.5]], [[0.4, 0], [0, 2]]], [0.3, 0.7]),
    "conjunction": lambda: E.GaussianMixture.paper_A() + E.GaussianMixture.paper_B(),
    "negation": lambda: E.GaussianMixture.paper_B() - 0.35 * E.GaussianMixture.paper_A(),
    "disjunction": lambda: E.softmin(E.GaussianMixture.paper_A(), E.GaussianMixture.paper_B()),
    "nested": lambda: E.softmin(0.5 * E.Quadratic(A2), E.DoubleWell(2), E.GaussianMixture.ring(4, 2.0, 0.7)) + E.DoubleWell(2),
}


@pytest.mark.parametrize("name", ENERGIES)
def test_derivatives_and_kernels(name, rng):
    U = ENERGIES[name]()
    X = rng.normal(scale=2.5, size=(40, U.dim))
    check_derivatives(U, X)
    check_kernels_match(U, X)
    # single point API returns scalars / vectors
    assert isinstance(U.value(X[0]), float)
    assert U.grad(X[0]).shape == (U.dim,)
    assert U.hessian(X[0]).shape == (U.dim, U.dim)


@pytest.mark.parametrize("name", ENERGIES)
def test_spec_round_trip(name, rng):
    U = ENERGIES[name]()
    V = E.from_spec(U.to_spec())
    X = rng.normal(size=(10, U.dim))
    np.testing.assert_array_equal(V.value(X), U.value(X))
    np.testing.assert_array_equal(V.params, U.params)
    import json
    assert E.from_spec(json.loads(json.dumps(U.to_spec()))).to_spec() == U.to_spec()


def test_quadratic_closed_forms(rng):
    m = np.array([0.3, -0.2])
    U = E.Quadratic(A2, m)
    X = rng.normal(size=(5, 2))
    np.testing.assert_allclose(U.value(X), 0.5 * np.einsum("ni,ij,nj->n", X - m, A2, X - m))
    np.testing.assert_allclose(U.laplacian(X), np.trace(A2))
    for T in (0.5, 1.0, 2.0):
        exact = math.log(2 * math.pi * T) - 0.5 * math.log(np.linalg.det(A2))
        assert U.log_partition(T) == pytest.approx(exact, rel=1e-14)
        g = Grid([(-12, 12), (-12, 12)], 400)
        assert g.log_partition(U, T) == pytest.approx(exact, abs=1e-4)


def test_doublewell_closed_forms():
    U = E.DoubleWell(1, barrier=3.0)
    assert U.value(np.array([1.0])) == 0.0 and U.value(np.array([0.0])) == 3.0
    g1 = Grid([(-4, 4)], 4000)
    for T in (0.3, 1.0):
        assert U.log_partition(T) == pytest.approx(g1.log_partition(U, T), abs=1e-6)
    U2 = E.DoubleWell(2, barrier=1.0)
    g2 = Grid([(-3.5, 3.5)] * 2, 700)
    assert U2.log_partition(1.0) == pytest.approx(g2.log_partition(U2, 1.0), abs=1e-5)


def test_mixture_log_partition_and_normalised():
    g = Grid([(-8, 8), (-8, 8)], 512)
    for U in (E.GaussianMixture.ring(), E.GaussianMixture.paper_A(), ENERGIES["aniso_mix"]()):
        assert U.log_partition() == 0.0
        assert g.log_partition(U) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(NotImplementedError, match="Grid.log_partition"):
        E.GaussianMixture.ring().log_partition(2.0)


def test_mixture_far_field_stable():
    U = E.GaussianMixture.ring()
    for x in ([50.0, 0.0], [0.0, -50.0], [35.355, 35.355], [-50.0, 1e-3]):
        x = np.array(x)
        v, g, lap = U.value(x), U.grad(x), U.laplacian(x)
        k = U.eval_kernels(x[None])
        assert np.isfinite(v) and np.all(np.isfinite(g)) and np.isfinite(lap)
        # far out the nearest component dominates: U ~ |x - m|^2 / (2 s^2) + const
        m = U.means[np.argmin(np.linalg.norm(U.means - x, axis=1))]
        assert np.allclose(g, (x - m) / 0.25, rtol=1e-6)
        assert lap == pytest.approx(2 / 0.25, rel=1e-6)
        np.testing.assert_allclose(k["value"][0], v, rtol=1e-13)
        np.testing.assert_allclose(k["lap"][0], lap, rtol=1e-10)
    # the Laplacian between two centres, where responsibilities are 1/2 each:
    # lap = tr P - Var(g), by hand for two unit-sigma components at -a, +a in 1D
    a = 2.0
    U1 = E.GaussianMixture([[-a], [a]], 1.0)
    assert U1.laplacian(np.array([0.0])) == pytest.approx(1 - a**2, rel=1e-13)


def test_smoothed_data_is_mixture_on_samples(rng):
    s = rng.normal(size=(30, 2))
    U = E.GaussianMixture.smoothed_data(s, 0.3)
    x = rng.normal(size=(7, 2))
    dens = np.mean(np.exp(-np.sum((x[:, None] - s[None]) ** 2, axis=2) / (2 * 0.09)), axis=1) / (2 * np.pi * 0.09)
    np.testing.assert_allclose(U.value(x), -np.log(dens), rtol=1e-12)


def test_composition_identities(rng):
    A, B = E.GaussianMixture.paper_A(), E.GaussianMixture.paper_B()
    X = rng.normal(scale=3, size=(20, 2))
    np.testing.assert_allclose((A + B).value(X), A.value(X) + B.value(X), rtol=1e-14)
    np.testing.assert_allclose((B - 0.35 * A).grad(X), B.grad(X) - 0.35 * A.grad(X), rtol=1e-12, atol=1e-12)
    D = E.softmin(A, B)
    np.testing.assert_allclose(D.value(X), -np.log(np.exp(-A.value(X)) + np.exp(-B.value(X))), rtol=1e-12)
    # the disjunction of two normalised mixtures has Z = 2
    g = Grid([(-9, 9), (-9, 9)], 400)
    assert g.log_partition(D) == pytest.approx(math.log(2.0), abs=1e-5)
    # c * Quadratic: closed-form log Z at rescaled temperature
    Q = E.Quadratic(A2)
    assert (2.0 * Q).log_partition(1.0) == pytest.approx(Q.log_partition(0.5), rel=1e-14)


def test_confinement_check():
    A, B = E.GaussianMixture.paper_A(), E.GaussianMixture.paper_B()
    g = Grid([(-9, 9), (-9, 9)], 64)
    assert (B - 0.35 * A).is_confining(g)
    with pytest.warns(RuntimeWarning, match="not normalisable"):
        assert not (B - 1.5 * A).is_confining(g)
    with pytest.warns(RuntimeWarning, match="enlarge the box"):
        assert not A.is_confining(Grid([(-4, 4), (-4, 4)], 64))
    rep = E.check_confining(A + B, g)
    assert rep.ok and rep.boundary_mass < 1e-6 and rep.min_growth > 0


@settings(max_examples=25, deadline=None, derandomize=True)  # reproducible in CI
@given(K=st.integers(1, 5), d=st.integers(1, 3), seed=st.integers(0, 2**31 - 1),
       coef=st.floats(-0.5, 2.0), compose=st.sampled_from(["none", "sum", "softmin"]))
def test_random_mixtures_and_compositions(K, d, seed, coef, compose):
    r = np.random.default_rng(seed)
    means = r.normal(scale=2, size=(K, d))
    L = r.normal(size=(K, d, d)) * 0.3 + np.eye(d)
    covs = L @ np.swapaxes(L, 1, 2) + 0.1 * np.eye(d)
    U = E.GaussianMixture(means, covs, r.random(K) + 0.1)
    if compose == "sum":
        U = U + coef * E.Quadratic(np.eye(d) * 0.5)
    elif compose == "softmin":
        U = E.softmin(U, E.DoubleWell(d))
    X = r.normal(scale=2, size=(8, d))
    check_derivatives(U, X, rtol=1e-5)
    check_kernels_match(U, X)


# user-defined energy: module-level kernels so the spec round-trips
@numba.njit
def quartic_value(x, p):
    return p[0] * np.sum(x**4)


@numba.njit
def quartic_grad(x, p, out):
    for i in range(x.shape[0]):
        out[i] = 4 * p[0] * x[i] ** 3


@numba.njit
def quartic_lap(x, p):
    return 12 * p[0] * np.sum(x**2)


def test_custom_energy(rng):
    U = E.Custom(2, quartic_value, quartic_grad, quartic_lap, params=[0.5])
    X = rng.normal(size=(6, 2))
    np.testing.assert_allclose(U.value(X), 0.5 * np.sum(X**4, axis=1), rtol=1e-14)
    np.testing.assert_allclose(U.grad(X), fd_grad(U, X), rtol=1e-7)
    with pytest.raises(E.UnresolvedEnergyError, match="allow_modules"):  # a spec never imports by itself
        E.from_spec(U.to_spec())
    V = E.from_spec(U.to_spec(), allow_modules=E.custom_modules(U))
    np.testing.assert_array_equal(V.laplacian(X), U.laplacian(X))
    # composes with library energies, kernels included
    W = U + E.Quadratic(np.eye(2))
    np.testing.assert_allclose(W.eval_kernels(X)["lap"], 6 * np.sum(X**2, axis=1) + 2, rtol=1e-12)
    with pytest.raises(NotImplementedError, match="no Hessian"):
        U.hessian(X)
    with pytest.raises(ValueError, match="njit"):
        E.Custom(2, lambda x, p: 0.0, quartic_grad, quartic_lap)


@pytest.mark.parametrize("make, match", [
    (lambda: E.Quadratic([[1, 0], [0, -1]]), "positive definite"),
    (lambda: E.Quadratic([[1, 2], [0, 1]]), "symmetric"),
    (lambda: E.Quadratic([[1, np.nan], [np.nan, 1]]), "NaN"),
    (lambda: E.Quadratic(np.eye(2), [0, 0, 0]), "shape"),
    (lambda: E.GaussianMixture([[0, 0]], -1.0), "positive"),
    (lambda: E.GaussianMixture([[0, 0], [1, 1]], 1.0, [1.0, -0.5]), "non-negative"),
    (lambda: E.GaussianMixture([[0, 0], [1, 1]], [[1.0, 0], [0, 1]]), "covs"),
    (lambda: E.DoubleWell(0), "dim"),
    (lambda: E.DoubleWell(1, barrier=-1), "barrier"),
    (lambda: E.Quadratic(np.eye(2)) + E.Quadratic(np.eye(3)), "different dimensions"),
    (lambda: E.Quadratic(np.eye(2)).value(np.zeros((4, 3))), "dimension 3"),
    (lambda: E.Quadratic(np.eye(2)).grad(np.array([[np.inf, 0.0]])), "NaN or inf"),
    (lambda: E.from_spec({"type": "Nope"}), "unknown energy"),
])
def test_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("d", [1, 2, 3])
def test_mixture_with_a_zero_weight_component_equals_the_mixture_without_it(d):
    """A component of weight 0 made every compiled kernel NaN (its log-weight -inf started the
    online log-sum-exp at exp(-inf + inf)); the vectorised paths from 4096 points too."""
    rng = np.random.default_rng(3)
    means = rng.normal(size=(3, d))
    U = E.GaussianMixture(means, 0.7, weights=[0.0, 2.0, 1.0])
    V = E.GaussianMixture(means[1:], 0.7, weights=[2.0, 1.0])
    X = rng.normal(size=(5000, d))
    for f in ("value", "grad", "laplacian"):
        np.testing.assert_allclose(getattr(U, f)(X), getattr(V, f)(X), rtol=1e-13, atol=1e-13, err_msg=f)
    ku, kv = U.eval_kernels(X[:7]), V.eval_kernels(X[:7])
    for key in kv:
        np.testing.assert_allclose(ku[key], kv[key], rtol=1e-13, atol=1e-13, err_msg=key)
    assert U.log_partition() == pytest.approx(V.log_partition(), abs=1e-12)


@pytest.mark.parametrize("T", [0.6, 2.5])
def test_residual_is_T_lap_minus_grad_squared_at_any_temperature(T):
    """h = T lap U - |grad U|^2 for U = x^T A x / 2 (shifted): T tr A - |A (x - m)|^2, closed form
    (the theorem's coefficient; a lost T only shows at T != 1)."""
    A = np.array([[1.5, 0.4, 0.0], [0.4, 0.9, -0.2], [0.0, -0.2, 2.0]])
    m = np.array([0.3, -0.5, 1.0])
    U = E.Quadratic(A, m)
    X = np.random.default_rng(5).normal(size=(50, 3))
    want = T * np.trace(A) - np.sum(((X - m) @ A) ** 2, axis=1)
    np.testing.assert_allclose(U.residual(X, T), want, rtol=1e-12, atol=1e-12)
    assert U.residual(X[0], T) == pytest.approx(want[0], rel=1e-12)
