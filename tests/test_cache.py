"""Kernels specialised at run time (closures) are cached on disk through generated
modules: the same bits as an in-memory closure, and a second process loads them."""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np

from fokkerplanck._core import jit as _numba
from fokkerplanck import energies as E

from conftest import QUADRATIC_KERNELS_1D


def _make(k, scale):
    def loop(X, p):
        out = np.empty(X.shape[0])
        for i in range(X.shape[0]):
            out[i] = scale * k(X[i], p)
        return out
    return loop


def test_generated_kernel_equals_the_closure(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    U = E.GaussianMixture.ring() + E.Quadratic(np.eye(2))
    fn = _make(U.kernels.value, 0.5)
    cached = _numba.closure_jit(fn)
    plain = _numba.jit(_make(U.kernels.value, 0.5))
    assert id(cached) in _numba._GENERATED  # a generated module, not the fallback
    src = open(sys.modules[_numba._GENERATED[id(cached)][0]].__file__).read()
    assert "scale = float.fromhex" in src and "import" in src
    X = np.random.default_rng(0).normal(size=(50, 2)) * 4
    np.testing.assert_array_equal(cached(X, U.params), plain(X, U.params))
    np.testing.assert_allclose(cached(X, U.params), 0.5 * U.value(X), rtol=1e-14)  # numpy vs kernel: round-off


def test_unimportable_kernels_fall_back_to_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    @numba.njit
    def local(x, p):  # defined in a function: cannot be imported by a generated module
        return x[0] + p[0]

    k = _numba.closure_jit(_make(local, 2.0))
    assert id(k) not in _numba._GENERATED and not any(tmp_path.rglob("*.py"))
    np.testing.assert_array_equal(k(np.ones((3, 1)), np.array([1.0])), [4.0, 4.0, 4.0])


SCRIPT = textwrap.dedent("""
    import numpy as np, particles
    from fokkerplanck import energies as E
    from fokkerplanck.energies.blocks import block_kernels
    U = E.GaussianMixture.ring() + E.Quadratic(np.eye(2))
    ens = particles.langevin(U, np.ones((64, 2)), 1e-3, 5, seed=3, summaries=False)
    bk = block_kernels(U)   # the sum's block kernels: generated modules in the kernel cache
    print(sum(bk.grad.stats.cache_hits.values()) + sum(bk.value_grad.stats.cache_hits.values()),
          repr(ens.positions[-1].sum()))
    """)


def test_a_second_process_loads_the_kernels_from_disk(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
            .stdout.split() for _ in range(2)]
    assert runs[0][0] == "0" and int(runs[1][0]) >= 1, runs  # compiled, then loaded
    assert runs[0][1] == runs[1][1]  # the same bits


MAIN_SCRIPT = "import numba, numpy as np, particles\nfrom fokkerplanck import energies as E\n" + QUADRATIC_KERNELS_1D + \
    textwrap.dedent("""
    U = E.Custom(1, value, grad, lap, params=[2.0]) + E.Quadratic([[1.0]])
    ens = particles.langevin(U, np.ones((4, 1)), 0.1, 1, seed=0, summaries=False)
    print(ens.meta["energy"]["type"], float(ens.positions[-1, 0, 0]))
    """)


def test_kernels_written_in_a_script_run_uncached(tmp_path):
    """A user's kernels in ``__main__`` (a script, ``python -c``, a notebook) cannot be
    imported by a generated module: they run as in-memory closures, and the run's
    metadata says the energy has no spec instead of failing."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", MAIN_SCRIPT], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "unsaved"
    z = float(out[1])  # one Euler-Maruyama step from x = 1 with grad U = 3 x, dt = 0.1: 1 - 0.3 + noise
    assert abs(z - 0.7) < 6 * np.sqrt(0.2)
    assert not any("__main__" in p.read_text() for p in tmp_path.rglob("_fpk_kernel_*.py"))


# a closure the cache holds, cheap to compile: the kernels of a sum of two energies
SUM_SCRIPT = textwrap.dedent("""
    import numpy as np
    from fokkerplanck import energies as E
    U = E.Quadratic(np.eye(2)) + E.DoubleWell(2)
    k = U.kernels
    print(repr(k.value(np.array([0.3, -1.2]), U.params)))
    """)


def _run(env, script=SUM_SCRIPT):
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)


def test_a_changed_cache_file_is_never_run(tmp_path):
    """Anyone who can write a cached kernel module must not get code run by the next
    process: a file whose content is not the source its SHA-256 name stands for is refused
    (warned, compiled in memory), and the line appended to it never runs."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    first = _run(env)
    files = list(tmp_path.rglob("_fpk_kernel_*.py"))
    assert files
    marker = tmp_path / "ran"
    for p in files:
        with open(p, "a") as f:
            f.write(f"\nopen({str(marker)!r}, 'w').write('x')\n")
    second = _run(env)
    assert not marker.exists()
    assert "does not hold the source" in second.stderr and "KernelCacheWarning" in second.stderr
    assert second.stdout == first.stdout  # the same bits, compiled in memory


def test_a_cache_folder_writable_by_others_is_not_used(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    first = _run(env)
    (folder,) = {p.parent for p in tmp_path.rglob("_fpk_kernel_*.py")}
    os.chmod(folder, 0o777)
    run = _run(env)
    assert "writable by group or others" in run.stderr and run.stdout == first.stdout
    os.chmod(folder, 0o700)
    os.chmod(folder.parent, 0o777)   # whoever can write the folder above can swap the cache
    run = _run(env)
    assert "writable by group or others" in run.stderr and str(folder.parent) in run.stderr


def test_one_compiled_integrator_serves_every_energy():
    """The integrators and the loops over points take an energy's kernels by address: a
    second energy (another family, read-only or writable parameters, another scheme) adds
    no compiled integrator, and the results are those of the energy's own kernels."""
    import particles
    from particles.integrators import _flow, _langevin
    from fokkerplanck.energies.base import _all_at

    X0 = np.random.default_rng(1).normal(size=(300, 2))
    A = E.GaussianMixture.ring()
    B = E.softmin(E.GaussianMixture.paper_B(), E.Quadratic(np.eye(2))) + E.Quadratic(0.5 * np.eye(2))
    particles.langevin(A, X0, 1e-3, 3, seed=0, summaries=False)
    particles.gradient_flow(A, X0, 1e-3, 3, method="rk4", track_logdensity=True)
    A.eval_kernels(X0)
    counts = len(_langevin.overloads), len(_flow.overloads), len(_all_at.overloads)
    assert min(counts) >= 1
    for U in (A, B):
        for method in ("euler-maruyama", "leimkuhler-matthews", "mala"):
            particles.langevin(U, X0, 1e-3, 3, seed=0, method=method, summaries=False)
        for method in ("euler", "heun", "rk4"):
            ens = particles.gradient_flow(U, X0, 1e-3, 1, method=method, track_logdensity=True)
        k = U.eval_kernels(X0)
        assert (len(_langevin.overloads), len(_flow.overloads), len(_all_at.overloads)) == counts
        # one Euler step of the flow is x - dt grad U(x), with log|det(I - dt H)| subtracted
        ens = particles.gradient_flow(U, X0, 1e-3, 1, method="euler", track_logdensity=True)
        np.testing.assert_allclose(ens.positions[-1], X0 - 1e-3 * U.grad(X0), rtol=1e-13, atol=1e-15)
        want = -np.linalg.slogdet(np.eye(2)[None] - 1e-3 * U.hessian(X0))[1]
        np.testing.assert_allclose(ens.logdensity[-1], want, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(k["lap"], U.laplacian(X0), rtol=1e-12, atol=1e-12)


@numba.njit
def _half_sq(x, p):
    return 0.5 * (x[0] * x[0] + x[1] * x[1])


@numba.njit
def _grad_returning_out(x, p, out):   # returns ``out``: a common way to write it
    out[0] = x[0]
    out[1] = x[1]
    return out


@numba.njit
def _lap_int(x, p):                    # an integer: lap |x|^2 / 2 = d
    return x.shape[0]


@numba.njit
def _hess_returning_out(x, p, out):
    out[0, 0], out[0, 1], out[1, 0], out[1, 1] = 1.0, 0.0, 0.0, 1.0
    return out


def test_a_users_kernels_may_return_out_or_an_integer_in_any_order_of_use():
    """The compiled loops take kernels by address with fixed signatures; a user's kernel
    that returns ``out`` (grad, hess) or an integer (lap) works as written, whichever path
    compiles it first (here the characteristics, which call it inside their own loop)."""
    import particles
    from fokkerplanck.flows.lagrangian import integrate_characteristics

    U = E.Custom(2, _half_sq, _grad_returning_out, _lap_int, _hess_returning_out)
    X0 = np.random.default_rng(2).normal(size=(64, 2))
    Z, L, _ = integrate_characteristics(U, X0, [0.0, 0.5], direction="forward")
    np.testing.assert_allclose(Z[-1], X0 * np.exp(-0.5), rtol=1e-9)     # dz/ds = -z
    np.testing.assert_allclose(L[-1], 2 * 0.5, rtol=1e-12)                # int_0^s lap U = 2 s
    k = U.eval_kernels(X0)
    np.testing.assert_array_equal(k["lap"], 2.0)
    np.testing.assert_array_equal(k["grad"], X0)
    np.testing.assert_allclose(k["value"], 0.5 * (X0 ** 2).sum(1), rtol=1e-15)
    ens = particles.gradient_flow(U, X0, 1e-2, 1, method="euler", track_logdensity=True)
    np.testing.assert_allclose(ens.positions[-1], 0.99 * X0, rtol=1e-15)
    np.testing.assert_allclose(ens.logdensity[-1], -2 * np.log(0.99), rtol=1e-14)
    ens = particles.langevin(U, X0, 1e-2, 2, seed=0, method="mala", summaries=False)
    assert np.isfinite(ens.positions).all() and 0 < ens.acceptance.mean() <= 1
