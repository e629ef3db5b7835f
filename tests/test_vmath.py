"""The SIMD building blocks: vectorisable elementary functions, block (struct-of-arrays)
energy kernels and block normals, each against an independent reference."""
import numba
import numpy as np
import pytest

import particles
from fokkerplanck import energies as E
from fokkerplanck._core.vmath import vexp, vlog, vsincos2pi
from fokkerplanck.energies.blocks import BLOCK, block_kernels, block_params, work_rows
from fokkerplanck._core.rng import block_normals, block_uniforms, normals, seed_key, uniform

PI = np.longdouble("3.14159265358979323846264338327950288")


@numba.njit
def _apply(x):
    e, lg, c, s = np.empty_like(x), np.empty_like(x), np.empty_like(x), np.empty_like(x)
    for i in range(x.shape[0]):
        e[i] = vexp(x[i])
        lg[i] = vlog(x[i])
        c[i], s[i] = vsincos2pi(x[i])
    return e, lg, c, s


def _ulps(got, ref, dtype):
    """|got - ref| in units of the spacing of ``ref`` rounded to ``dtype`` (ref in long double)."""
    r = ref.astype(dtype)
    ok = np.isfinite(r) & (r != 0) & (np.abs(r) >= np.finfo(dtype).tiny)
    return (np.abs(got[ok].astype(np.longdouble) - ref[ok]) / np.spacing(np.abs(r[ok])).astype(np.longdouble)).max()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_log_sincos_within_two_ulp(dtype):
    rng = np.random.default_rng(0)
    top = np.log(np.finfo(dtype).max) * 0.999
    low = np.log(np.finfo(dtype).tiny) * 0.999
    x = np.concatenate([rng.uniform(low, top, 200_000), rng.uniform(-1, 1, 100_000)]).astype(dtype)
    assert _ulps(_apply(x)[0], np.exp(x.astype(np.longdouble)), dtype) <= 2.0
    y = np.concatenate([np.exp(rng.uniform(low, top, 200_000)), rng.uniform(0.5, 2, 100_000),
                        1 + rng.uniform(-1e-3, 1e-3, 10_000)]).astype(dtype)
    assert _ulps(_apply(y)[1], np.log(y.astype(np.longdouble)), dtype) <= 2.0
    u = rng.uniform(-3, 3, 200_000).astype(dtype)
    _, _, c, s = _apply(u)
    ang = 2 * PI * u.astype(np.longdouble)
    eps = np.finfo(dtype).eps  # absolute: sin and cos of 2 pi u have zeros, where relative error means nothing
    assert np.abs(c - np.cos(ang)).max() <= 2 * eps and np.abs(s - np.sin(ang)).max() <= 2 * eps


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_special_values(dtype):
    tiny = np.finfo(dtype).tiny
    x = np.array([0.0, -np.inf, np.inf, np.nan, -1.0, tiny / 8, 1e6, -1e6], dtype=dtype)
    e, lg, c, s = _apply(x)
    np.testing.assert_array_equal(e[[0, 1, 2, 6, 7]], np.array([1, 0, np.inf, np.inf, 0], dtype=dtype))
    assert np.isnan(e[3])
    np.testing.assert_array_equal(lg[[0, 2]], [-np.inf, np.inf])
    assert np.isnan(lg[3]) and np.isnan(lg[4]) and np.isnan(lg[7])
    assert abs(lg[5] - np.log(np.longdouble(x[5]))) < 4 * np.finfo(dtype).eps * abs(lg[5])  # subnormal argument
    assert c[0] == 1 and s[0] == 0


@pytest.mark.parametrize("d", [1, 2, 3])
def test_block_normals_are_the_scalar_normals(d):
    """float64 block normals are the per-particle normals of ``normals`` bit for bit, at any
    block start (a lane computes the same thing whatever its position)."""
    k0, k1 = seed_key(11)
    for first in (0, 37, 2**33 + 5):
        Z = np.empty((d, BLOCK))
        block_normals(Z, k0, k1, first, 9, 0)
        np.testing.assert_array_equal(Z.T, normals(11, BLOCK, 9, d, start=first))
    u = np.empty(BLOCK)
    block_uniforms(u, k0, k1, 5, 3, 1)
    assert np.array_equal(u, [uniform(k0, k1, 5 + b, 3, 1) for b in range(BLOCK)])


def test_float32_block_normals_are_standard():
    k0, k1 = seed_key(2)
    Z = np.empty((3, BLOCK), np.float32)
    out = []
    for step in range(3000):
        block_normals(Z, k0, k1, 0, step, 0)
        out.append(Z.copy())
    z = np.concatenate(out, axis=1).astype(np.float64)
    n = z.shape[1]
    assert np.all(np.abs(z.mean(1)) < 4 / np.sqrt(n))
    assert np.all(np.abs(z.var(1) - 1) < 4 * np.sqrt(2 / n))
    assert np.all(np.abs(np.corrcoef(z)[np.triu_indices(3, 1)]) < 4 / np.sqrt(n))
    assert np.all(np.abs((z ** 4).mean(1) - 3) < 4 * np.sqrt(96 / n))


def _energies():
    rng = np.random.default_rng(4)
    out = {}
    for d in (1, 2, 3):
        K = 5
        A = rng.normal(size=(K, d, d))
        covs = A @ A.transpose(0, 2, 1) + 0.3 * np.eye(d)
        out[f"mixture{d}d"] = E.GaussianMixture(rng.normal(size=(K, d)) * 2, covs, rng.uniform(0.5, 2, K))
    out["quadratic3d"] = E.Quadratic([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]], [0.1, -0.2, 0.3])
    out["sum (adapter)"] = E.GaussianMixture.ring() + E.Quadratic(np.eye(2) * 0.1)
    out["double well (adapter)"] = E.DoubleWell(2)
    return out


@pytest.mark.parametrize("name", list(_energies()))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_kernels_match_the_point_kernels(name, dtype):
    U = _energies()[name]
    d = U.dim
    X = np.random.default_rng(1).normal(size=(BLOCK, d)) * 2.5
    X[3] = 40.0  # far out: weights underflow, the log-sum-exp must hold
    bk = block_kernels(U)
    Xb = np.ascontiguousarray(X.T.astype(dtype))
    p = block_params(U, dtype)
    W = np.empty((work_rows(d), BLOCK), dtype)
    V, G, G2 = np.empty(BLOCK, dtype), np.empty((d, BLOCK), dtype), np.empty((d, BLOCK), dtype)
    bk.value_grad(Xb, p, V, G, W)
    bk.grad(Xb, p, G2, W)
    Xr = Xb.T.astype(np.float64)
    v_ref, g_ref = U.value(Xr), U.grad(Xr)
    tol = 1e-13 if dtype == np.float64 else 2e-5
    scale_v = np.maximum(np.abs(v_ref), 1.0)
    scale_g = np.maximum(np.abs(g_ref).max(1, keepdims=True), 1.0)
    assert np.all(np.abs(V - v_ref) <= tol * scale_v * (1 if dtype == np.float64 else 10))
    assert np.all(np.abs(G.T - g_ref) <= tol * scale_g * (1 if dtype == np.float64 else 10))
    np.testing.assert_array_equal(G, G2)


def test_a_lane_does_not_see_the_others():
    U = E.GaussianMixture.ring()
    bk = block_kernels(U)
    X = np.random.default_rng(2).normal(size=(2, BLOCK))
    W = np.empty((work_rows(2), BLOCK))
    G1, G2, V1, V2 = np.empty((2, BLOCK)), np.empty((2, BLOCK)), np.empty(BLOCK), np.empty(BLOCK)
    bk.value_grad(X, U.params, V1, G1, W)
    Y = X.copy()
    Y[:, ::2] = np.nan
    Y[:, 1::4] = 1e300
    bk.value_grad(Y, U.params, V2, G2, W)
    keep = np.ones(BLOCK, bool)
    keep[::2] = keep[1::4] = False
    np.testing.assert_array_equal(G1[:, keep], G2[:, keep])
    np.testing.assert_array_equal(V1[keep], V2[keep])
    assert np.isnan(V2[::2]).all()


@pytest.mark.parametrize("method", ["euler-maruyama", "mala"])
def test_float32_runs_are_split_invariant(method):
    """float32 keeps the contract of float64: a particle's path does not depend on the block,
    thread or shard it runs in."""
    U = E.GaussianMixture.ring()
    x0 = np.random.default_rng(0).normal(size=(700, 2)) * 3
    whole = particles.langevin(U, x0, 1e-2, 30, method=method, seed=4, precision="float32", summaries=False)
    part = particles.langevin(U, x0[101:650], 1e-2, 30, method=method, seed=4, precision="float32",
                              summaries=False, index_offset=101, save_every=7)
    np.testing.assert_array_equal(part.positions[-1], whole.positions[-1][101:650])
    assert np.all(part.positions[-1] == part.positions[-1].astype(np.float32))  # float32 values
    f64 = particles.langevin(U, x0, 1e-2, 30, method=method, seed=4, summaries=False)
    # same Philox words, coarser uniforms: close to the float64 path but not equal
    diff = np.abs(f64.positions[-1] - whole.positions[-1])
    assert 0 < np.median(diff) < 1e-3


def test_bad_precision():
    with pytest.raises(ValueError, match="precision must be one of"):
        particles.langevin(E.Quadratic([[1.0]]), np.zeros((4, 1)), 0.1, 1, precision="float16")
    with pytest.raises(ValueError, match="precision must be one of"):
        particles.langevin(E.Quadratic([[1.0]]), np.zeros((4, 1)), 0.1, 1, precision=["float32"])


def test_config_precision():
    import copy

    from fokkerplanck.app.runner import check_config, load_config

    cfg = copy.deepcopy(load_config("ou"))
    cfg["particles"]["precision"] = "float32"
    check_config(cfg)
    cfg["particles"]["precision"] = "float16"
    with pytest.raises(ValueError, match="precision must be"):
        check_config(cfg)


def test_float32_runs_with_custom_kernels_written_for_float64():
    """A user's one-point kernels see float64 points and parameters in a float32 run."""
    import numba

    @numba.njit
    def value(x, p):
        return 0.5 * p[0] * x[0] * x[0]

    @numba.njit
    def grad(x, p, out):
        tmp = np.empty(1)          # float64 scratch: would not mix with float32 inputs in every kernel
        tmp[0] = p[0] * x[0]
        out[0] = tmp[0]

    @numba.njit
    def lap(x, p):
        return p[0]

    U = E.Custom(1, value, grad, lap, params=[2.0])
    x0 = np.zeros((20_000, 1))
    r32 = particles.langevin(U, x0, 0.05, 60, temperature=0.5, seed=3, store="summaries", precision="float32")
    v, se = r32.summaries["cov"][-1][0, 0], r32.summaries["cov_se"][-1][0, 0]
    exact = 0.5 / (2.0 * (1 - 2.0 * 0.05 / 2))   # the Euler-Maruyama chain's stationary variance
    assert abs(v - exact) < 4 * se
