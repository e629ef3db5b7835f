"""Euler-Maruyama Langevin on the eight Gaussians: particle-steps per second,
against the gradient-only roofline and the peers, all in the same run.

    python benchmarks/bench_particles.py            # N = 1e4, 1e5, 1e6; 1000 steps
    python benchmarks/bench_particles.py --quick    # N = 1e4, 1e5; 200 steps

Rates are particle-steps per second in float64 after compilation (JIT compile
time is reported separately).  "ours" is ``particles.langevin`` end to end
(validation, stability check, start and end snapshots kept, no summaries).  Peers slower than 10 s per configuration run
fewer steps (their per-step cost is constant, the table says how many).
Peers that are not installed are listed as such.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _results import write_table

import particles
from fokkerplanck import energies as E
from particles.integrators import gradient_only_kernel
from particles import estimators as est

U = E.GaussianMixture.ring()
DT = 1e-3


def x0(n):
    return np.random.default_rng(0).normal(size=(n, 2)) * 3


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def ours(n, steps):
    X = x0(n)
    t, _ = timed(lambda: particles.langevin(U, X, DT, steps, seed=1, summaries=False))
    return n * steps / t, steps


def roofline(n, steps):
    k = gradient_only_kernel(U.kernels)
    X = x0(n)
    t, _ = timed(lambda: k(X, steps, DT, U.params))
    return n * steps / t, steps


def numpy_em(n, steps):
    X = x0(n)
    rng = np.random.default_rng(1)
    t, _ = timed(lambda: _numpy_loop(X, steps, rng))
    return n * steps / t, steps


def _numpy_loop(X, steps, rng):
    s = np.sqrt(2 * DT)
    for _ in range(steps):
        X = X - DT * U.grad(X) + s * rng.standard_normal(X.shape)
    return X


def jax_em(n, steps):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    means, logc = jnp.asarray(U.means), jnp.asarray(U._logc)
    P = jnp.asarray(U.precisions)

    def grad(x):
        y = x[:, None, :] - means[None]
        g = jnp.einsum("kij,nkj->nki", P, y)
        l = logc[None] - 0.5 * jnp.einsum("nki,nki->nk", y, g)
        r = jax.nn.softmax(l, axis=1)
        return jnp.einsum("nk,nki->ni", r, g)

    @jax.jit
    def run(X, key):
        def body(carry, _):
            X, key = carry
            key, sub = jax.random.split(key)
            X = X - DT * grad(X) + jnp.sqrt(2 * DT) * jax.random.normal(sub, X.shape)
            return (X, key), None
        (X, _), _ = jax.lax.scan(body, (X, key), None, length=steps)
        return X

    X = jnp.asarray(x0(n))
    key = jax.random.PRNGKey(0)
    run(X, key).block_until_ready()  # compile
    t, _ = timed(lambda: run(X, key).block_until_ready())
    return n * steps / t, steps


def _jax_grad_single():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    means, logc, P = jnp.asarray(U.means), jnp.asarray(U._logc), jnp.asarray(U.precisions)

    def grad(x):  # one particle, (2,)
        y = x[None, :] - means
        g = jnp.einsum("kij,kj->ki", P, y)
        r = jax.nn.softmax(logc - 0.5 * jnp.einsum("ki,ki->k", y, g))
        return r @ g
    return grad


def blackjax_ula(n, steps):
    """blackjax's SGLD kernel with the exact gradient (= ULA), vmapped over particles."""
    import blackjax
    import jax
    import jax.numpy as jnp

    grad = _jax_grad_single()
    sgld = blackjax.sgld(lambda x, _batch: -grad(x))

    @jax.jit
    def run(X, key):
        def body(carry, _):
            X, key = carry
            key, sub = jax.random.split(key)
            keys = jax.random.split(sub, X.shape[0])
            X = jax.vmap(lambda k, x: sgld.step(k, x, None, DT))(keys, X)
            return (X, key), None
        (X, _), _ = jax.lax.scan(body, (X, key), None, length=steps)
        return X

    X = jnp.asarray(x0(n))
    key = jax.random.PRNGKey(0)
    run(X, key).block_until_ready()
    t, _ = timed(lambda: run(X, key).block_until_ready())
    return n * steps / t, steps


PEERS = {"numpy": numpy_em, "jax lax.scan": jax_em, "blackjax ULA (vmap)": blackjax_ula}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    ns = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    steps = 200 if args.quick else 1000
    # compile times (first call)
    t_c, _ = timed(lambda: particles.langevin(U, x0(10), DT, 2, seed=1, store="summaries"))
    t_r, _ = timed(lambda: gradient_only_kernel(U.kernels)(x0(10), 2, DT, U.params))
    rows = []
    for n in ns:
        r_roof, _ = roofline(n, steps)
        r_ours, _ = ours(n, steps)
        row = {"N": n, "roofline": r_roof, "ours": r_ours}
        for name, fn in PEERS.items():
            st = steps
            if name == "numpy" and n >= 100_000:
                st = max(20, steps // (n // 10_000))
            try:
                row[name], row[name + "_steps"] = fn(n, st)
            except ImportError as exc:
                row[name] = f"not installed ({exc.name})"
        rows.append(row)
        print(row, file=sys.stderr)
    # estimator cost
    xs = U.sample(100_000, seed=3)
    est.kl_knn(xs[:100], U)
    t_knn = min(timed(lambda: est.kl_knn(xs, U))[0] for _ in range(3))
    lines = [f"Command: `python benchmarks/bench_particles.py{' --quick' if args.quick else ''}`, "
             f"{steps} steps, float64, 2 threads.", "",
             f"JIT compile: Euler-Maruyama kernel for the mixture {t_c:.1f} s (first call, includes the energy's "
             f"cached kernels), gradient-only roofline {t_r:.1f} s. k-NN KL on 1e5 2D points: {t_knn:.2f} s.", "",
             "| N | roofline (M steps/s) | ours (M/s) | ours / roofline | " + " | ".join(
                 f"{p} (M/s) | ours / {p}" for p in PEERS) + " |",
             "|---|---|---|---|" + "---|---|" * len(PEERS)]
    for r in rows:
        cells = [f"{r['N']:.0e}", f"{r['roofline'] / 1e6:.2f}", f"{r['ours'] / 1e6:.2f}",
                 f"{r['ours'] / r['roofline']:.2f}"]
        for p in PEERS:
            v = r[p]
            if isinstance(v, str):
                cells += [v, ""]
            else:
                note = f" ({r[p + '_steps']} steps)" if r[p + "_steps"] != steps else ""
                cells += [f"{v / 1e6:.3f}{note}", f"{r['ours'] / v:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    write_table("particles", lines, args.quick)


if __name__ == "__main__":
    main()
