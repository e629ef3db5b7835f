"""numba kernels: one compiled loop for the Langevin schemes and one for the deterministic
flow, for every energy (its kernels are passed to the loop by address).

Every kernel advances its particles through ``nsteps`` steps on their own
(``prange`` outside, steps inside: no per-step thread barrier, particles do not
interact), and returns to Python only at a save.  The Langevin kernels take the
particles in blocks of :data:`~fokkerplanck.energies.blocks.BLOCK` lanes, struct of
arrays, so that the gradient, the noise and the update are SIMD loops over lanes
(:mod:`fokkerplanck.energies.blocks`, :mod:`fokkerplanck._core.vmath`); the flow kernels go
particle by particle.  Noise is drawn from the counter-based generator keyed by
``(seed, particle, step)`` (:mod:`fokkerplanck._core.rng`), so results do not depend on
threads, chunking or the block a particle falls in.

A particle that becomes non-finite (status 2; frozen at its last finite
state) or leaves the box ``[lo, hi]`` (status 1; frozen where it left) is
counted by the caller; it is never silently carried along as NaN.

Schemes (``ORDER`` = weak order of the invariant-measure bias for Langevin,
strong order for the deterministic flow):

========================  =====================================================
``euler-maruyama`` (ULA)  ``x += -dt grad U + sqrt(2 T dt) xi_k``
``leimkuhler-matthews``   ``x += -dt grad U + sqrt(2 T dt) (xi_k + xi_{k+1}) / 2``
``mala``                  ULA proposal + Metropolis-Hastings: exact invariant law
``euler``                 ``x -= dt grad U``; log-density ``-= log|det(I - dt H)|``
``heun``                  explicit trapezoid, log-density by the same rule on ``lap U``
``rk4``                   classical Runge-Kutta on ``(x, log rho)``
========================  =====================================================
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange, types

from fokkerplanck._core.jit import array_type, call_with, closure_jit, function_type, jit, kernel_input, writable

from fokkerplanck._core.vmath import cast_like, vlog
from fokkerplanck.energies.blocks import BLOCK, work_rows

from fokkerplanck._core.rng import STREAM_ACCEPT, STREAM_NOISE, block_normals, block_uniforms

__all__ = ["LANGEVIN_SCHEMES", "FLOW_SCHEMES", "langevin_kernel", "flow_kernel", "gradient_only_kernel"]

LANGEVIN_SCHEMES = {"euler-maruyama": 0, "leimkuhler-matthews": 1, "mala": 2}
FLOW_SCHEMES = {"euler": 0, "heun": 1, "rk4": 2}
ORDER = {"euler-maruyama": 1, "leimkuhler-matthews": 2, "mala": np.inf, "euler": 1, "heun": 2, "rk4": 4}

_BUILT: dict = {}   # the benchmarks' roofline kernels, by the energy's block gradient


@jit(cache=True)
def _check(x, lo, hi):
    """0 inside the box, 1 outside, 2 non-finite."""
    for a in range(x.shape[0]):
        if not np.isfinite(x[a]):
            return 2
    for a in range(x.shape[0]):
        if x[a] < lo[a] or x[a] > hi[a]:
            return 1
    return 0


@jit(cache=True)
def _logabsdet_i_minus(H, dt):
    """``log|det(I - dt H)|`` by Gaussian elimination with partial pivoting (H is d x d, small)."""
    d = H.shape[0]
    M = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            M[i, j] = -dt * H[i, j]
        M[i, i] += 1.0
    s = 0.0
    for c in range(d):
        piv = c
        for r in range(c + 1, d):
            if abs(M[r, c]) > abs(M[piv, c]):
                piv = r
        if M[piv, c] == 0.0:
            return -np.inf
        if piv != c:
            for j in range(d):
                M[c, j], M[piv, j] = M[piv, j], M[c, j]
        s += math.log(abs(M[c, c]))
        for r in range(c + 1, d):
            f = M[r, c] / M[c, c]
            for j in range(c, d):
                M[r, j] -= f * M[c, j]
    return s


class _Bound:
    """A compiled integrator with an energy's kernels bound to it (passed by address,
    :func:`fokkerplanck._core.jit.call_with`), called with the integrator's own arguments:
    ``bind(*args)`` gives the function types and the arguments as the kernel takes them."""

    def __init__(self, kernel, fns, consts, bind):
        self.kernel, self.fns, self.consts, self.bind = kernel, tuple(fns), tuple(consts), bind

    @property
    def stats(self):
        """numba's cache statistics of the integrator (one compiled kernel for every energy)."""
        return self.kernel.stats

    def __call__(self, *args):
        fntypes, args = self.bind(*args)
        return call_with(self.kernel, self.fns, fntypes, *self.consts, *args)


def _langevin_bind(X, step0, nsteps, dt, T, P, k0, k1, lo, hi, status, accepted, offset):
    """The block kernels' function types (blocks of ``X``'s dtype, parameter rows of ``P``'s)
    and the arguments: inputs as :func:`~fokkerplanck._core.jit.kernel_input`, outputs checked
    writable."""
    Xb, V, p = array_type(X.dtype, 2), array_type(X.dtype, 1), array_type(P.dtype, 1)
    fntypes = function_type(types.void, Xb, p, Xb, Xb), function_type(types.void, Xb, p, V, Xb, Xb)
    return fntypes, (writable(X, "X"), step0, nsteps, dt, T, kernel_input(P), k0, k1, kernel_input(lo),
                     kernel_input(hi), writable(status, "status"), writable(accepted, "accepted"), offset)


def langevin_kernel(blocks, scheme: str):
    """``run(X, step0, nsteps, dt, T, P, k0, k1, lo, hi, status, accepted, offset)``: advance
    in place; particle ``i`` draws the noise of global index ``offset + i``.

    ``P`` holds the energy's block parameters as rows: one row for a static energy; for a
    time-dependent one (:func:`particles.annealed.annealed_langevin`) row ``k`` is the energy
    frozen at the call's step ``k`` (the last row serves beyond), so a whole stretch of an
    annealing path runs in one call, block by block, as a static run does (MALA then
    re-evaluates the current state's energy with each step's row).

    ``blocks`` are the energy's :class:`~fokkerplanck.energies.blocks.BlockKernels`, passed to
    one compiled kernel for every energy and scheme (:func:`_langevin`).  The particles go in
    blocks of ``BLOCK`` lanes (struct of arrays; ``prange`` over blocks, steps inside), so every
    loop over lanes is SIMD code.  A lane's arithmetic does not depend on its block or position
    (no cross-lane operations, a tail block is padded), hence the same bits whatever the thread
    count, chunking or split of the particles.  ``X`` may be float64 or float32 (then ``p``,
    ``lo``, ``hi`` too): the arithmetic, and the noise
    (:func:`fokkerplanck._core.rng.block_normals`), follow its precision."""
    return _Bound(_langevin, (blocks.grad, blocks.value_grad), (LANGEVIN_SCHEMES[scheme],), _langevin_bind)


def _flow_bind(X, LOG, nsteps, dt, p, lo, hi, status):
    """The one-point kernels' function types (points of ``X``'s dtype) and the arguments:
    inputs as :func:`~fokkerplanck._core.jit.kernel_input`, outputs checked writable."""
    x, q, H = array_type(X.dtype, 1), array_type(p.dtype, 1), array_type(X.dtype, 2)   # q: a copy per particle
    fntypes = (function_type(types.void, x, q, x), function_type(types.float64, x, q),
               function_type(types.void, x, q, H))
    return fntypes, (writable(X, "X"), writable(LOG, "LOG"), nsteps, dt, kernel_input(p), kernel_input(lo),
                     kernel_input(hi), writable(status, "status"))


def flow_kernel(kernels, scheme: str, track: bool):
    """``run(X, LOG, nsteps, dt, p, lo, hi, status)``: deterministic flow in place; with
    ``track`` the log-density ``LOG`` follows the particles.  The energy's one-point
    ``kernels`` are passed to one compiled kernel for every energy and scheme (:func:`_flow`)."""
    return _Bound(_flow, (kernels.grad, kernels.lap, kernels.hess), (FLOW_SCHEMES[scheme], bool(track)), _flow_bind)


# closure_jit, not jit(cache=True): the generated module is keyed by the sources of the
# random numbers and block helpers it inlines too (numba's own cache only by this file)
@closure_jit(parallel=True)
def _langevin(vgrad, vvalue_grad, code, X, step0, nsteps, dt, T, P, k0, k1, lo, hi, status, accepted,
              offset):
    """The Langevin schemes (``code``: :data:`LANGEVIN_SCHEMES`) with an energy's block kernels
    ``vgrad``, ``vvalue_grad``; see :func:`langevin_kernel`."""
    n, d = X.shape
    nblocks = (n + BLOCK - 1) // BLOCK
    ft = X.dtype
    nrow = P.shape[0]
    for blk in prange(nblocks):
        i0 = blk * BLOCK
        x = np.empty((d, BLOCK), ft)
        g = np.empty((d, BLOCK), ft)
        z = np.empty((d, BLOCK), ft)
        xp = np.empty((d, BLOCK), ft)
        W = np.empty((work_rows(d), BLOCK), ft)
        live = np.zeros(BLOCK, np.bool_)
        flag = np.zeros(BLOCK, np.int8)
        nlive = 0
        for b in range(BLOCK):
            i = min(i0 + b, n - 1)          # a tail block's spare lanes repeat the last particle
            for a in range(d):
                x[a, b] = X[i, a]
            if i0 + b < n and status[i0 + b] == 0:
                live[b] = True
                nlive += 1
        if nlive == 0:
            continue
        dtc = cast_like(x[0, 0], dt)
        s2 = cast_like(x[0, 0], math.sqrt(2.0 * T * dt))
        first = offset + i0
        # the other schemes' arrays are empty: one compiled kernel serves all three
        znext = np.empty((d, BLOCK if code == 1 else 0), ft)   # Leimkuhler-Matthews carries xi_k between steps
        nm = BLOCK if code == 2 else 0                          # MALA: proposal, energies, uniforms
        y = np.empty((d, nm), ft)
        gy = np.empty((d, nm), ft)
        ux = np.empty(nm, ft)
        uy = np.empty(nm, ft)
        u = np.empty(nm, ft)
        acc = np.zeros(nm, np.int64)
        c4 = cast_like(x[0, 0], 1.0 / (4.0 * T * dt))
        invT = cast_like(x[0, 0], 1.0 / T)
        if code == 1:
            block_normals(z, k0, k1, first, step0, STREAM_NOISE)
        if code == 2:
            vvalue_grad(x, P[0], ux, g, W)
        for k in range(nsteps):
            step = step0 + k
            p = P[min(k, nrow - 1)]
            for a in range(d):
                for b in range(BLOCK):
                    xp[a, b] = x[a, b]
            if code == 0:
                vgrad(x, p, g, W)
                block_normals(z, k0, k1, first, step, STREAM_NOISE)
                for a in range(d):
                    for b in range(BLOCK):
                        x[a, b] = x[a, b] - dtc * g[a, b] + s2 * z[a, b] if live[b] else x[a, b]
            elif code == 1:
                vgrad(x, p, g, W)
                block_normals(znext, k0, k1, first, step + 1, STREAM_NOISE)
                for a in range(d):
                    for b in range(BLOCK):
                        xn = x[a, b] - dtc * g[a, b] + cast_like(x[0, 0], 0.5) * s2 * (z[a, b] + znext[a, b])
                        x[a, b] = xn if live[b] else x[a, b]
                        z[a, b] = znext[a, b]
            else:
                if nrow > 1 and k > 0:   # the energy changed: the current state's value and gradient
                    vvalue_grad(x, p, ux, g, W)
                block_normals(z, k0, k1, first, step, STREAM_NOISE)
                for a in range(d):
                    for b in range(BLOCK):
                        y[a, b] = x[a, b] - dtc * g[a, b] + s2 * z[a, b]
                vvalue_grad(y, p, uy, gy, W)
                block_uniforms(u, k0, k1, first, step, STREAM_ACCEPT)
                for b in range(BLOCK):   # log alpha = -(U(y) - U(x))/T - (|bwd|^2 - |fwd|^2)/(4 T dt)
                    W[0, b] = -(uy[b] - ux[b]) * invT
                    W[1, b] = cast_like(x[0, 0], 0.0)
                for a in range(d):
                    for b in range(BLOCK):
                        bwd = x[a, b] - y[a, b] + dtc * gy[a, b]
                        fwd = s2 * z[a, b]
                        W[1, b] += bwd * bwd - fwd * fwd
                for b in range(BLOCK):
                    ok = live[b] and vlog(u[b]) < W[0, b] - W[1, b] * c4
                    W[2, b] = cast_like(x[0, 0], 1.0) if ok else cast_like(x[0, 0], 0.0)
                    ux[b] = uy[b] if ok else ux[b]
                    acc[b] += 1 if ok else 0
                for a in range(d):
                    for b in range(BLOCK):
                        ok = W[2, b] != 0
                        x[a, b] = y[a, b] if ok else x[a, b]
                        g[a, b] = gy[a, b] if ok else g[a, b]
            # lane checks, branch-free: 2 = non-finite, 1 = outside the box
            for b in range(BLOCK):
                flag[b] = 0
            for a in range(d):
                la = lo[a]
                ha = hi[a]
                for b in range(BLOCK):
                    v = x[a, b]
                    c = np.int8(2) if not np.isfinite(v) else (np.int8(1) if (v < la or v > ha) else np.int8(0))
                    flag[b] = max(flag[b], c)
            bad = 0
            for b in range(BLOCK):
                bad += flag[b] if live[b] else 0
            if bad == 0:
                continue
            for b in range(BLOCK):
                if live[b] and flag[b] != 0:
                    status[i0 + b] = flag[b]
                    live[b] = False
                    nlive -= 1
                    if flag[b] == 2:  # keep the last finite position
                        for a in range(d):
                            x[a, b] = xp[a, b]
            if nlive == 0:
                break
        for b in range(min(BLOCK, n - i0)):
            for a in range(d):
                X[i0 + b, a] = x[a, b]
        if code == 2:
            for b in range(min(BLOCK, n - i0)):
                accepted[i0 + b] += acc[b]


@jit(cache=True, parallel=True)
def _flow(grad, lap, hess, code, track, X, LOG, nsteps, dt, p_in, lo, hi, status):
    """The flow schemes (``code``: :data:`FLOW_SCHEMES`) with an energy's one-point kernels; see
    :func:`flow_kernel`."""
    n, d = X.shape
    for i in prange(n):
        if status[i] != 0:
            continue
        x = X[i].copy()
        p = p_in.copy()   # this particle's own parameters: the calls by address count references to it
        ell = LOG[i]
        g = np.empty(d)
        H = np.empty((d, d))
        k1 = np.empty(d)
        k2 = np.empty(d)
        k3 = np.empty(d)
        k4 = np.empty(d)
        y = np.empty(d)
        xp = np.empty(d)
        for _ in range(nsteps):
            for a in range(d):
                xp[a] = x[a]
            ellp = ell
            if code == 0:
                grad(x, p, g)
                if track:
                    hess(x, p, H)
                    ell -= _logabsdet_i_minus(H, dt)
                for a in range(d):
                    x[a] -= dt * g[a]
            elif code == 1:
                grad(x, p, k1)
                for a in range(d):
                    y[a] = x[a] - dt * k1[a]
                grad(y, p, k2)
                if track:
                    ell += 0.5 * dt * (lap(x, p) + lap(y, p))
                for a in range(d):
                    x[a] -= 0.5 * dt * (k1[a] + k2[a])
            else:
                grad(x, p, k1)
                l1 = lap(x, p) if track else 0.0
                for a in range(d):
                    y[a] = x[a] - 0.5 * dt * k1[a]
                grad(y, p, k2)
                l2 = lap(y, p) if track else 0.0
                for a in range(d):
                    y[a] = x[a] - 0.5 * dt * k2[a]
                grad(y, p, k3)
                l3 = lap(y, p) if track else 0.0
                for a in range(d):
                    y[a] = x[a] - dt * k3[a]
                grad(y, p, k4)
                l4 = lap(y, p) if track else 0.0
                for a in range(d):
                    x[a] -= dt / 6.0 * (k1[a] + 2.0 * k2[a] + 2.0 * k3[a] + k4[a])
                ell += dt / 6.0 * (l1 + 2.0 * l2 + 2.0 * l3 + l4)
            st = _check(x, lo, hi)
            if st == 0 and not np.isfinite(ell):
                st = 2
            if st != 0:
                status[i] = st
                if st == 2:  # keep the last finite state
                    for a in range(d):
                        x[a] = xp[a]
                    ell = ellp
                break
        X[i] = x
        LOG[i] = ell


def gradient_only_kernel(blocks):
    """The roofline of the benchmarks: the Euler-Maruyama kernel without noise and checks,
    i.e. the vectorised block gradient at every particle and step, added in (so nothing
    is optimised away); ``blocks`` are the energy's block kernels."""
    key = id(blocks.grad)
    if key in _BUILT:
        return _BUILT[key][1]
    vgrad = blocks.grad

    @closure_jit(parallel=True)
    def run(X, nsteps, dt, p):
        n, d = X.shape
        ft = X.dtype
        for blk in prange((n + BLOCK - 1) // BLOCK):
            i0 = blk * BLOCK
            x = np.empty((d, BLOCK), ft)
            g = np.empty((d, BLOCK), ft)
            W = np.empty((work_rows(d), BLOCK), ft)
            for b in range(BLOCK):
                for a in range(d):
                    x[a, b] = X[min(i0 + b, n - 1), a]
            dtc = cast_like(x[0, 0], dt)
            for _ in range(nsteps):
                vgrad(x, p, g, W)
                for a in range(d):
                    for b in range(BLOCK):
                        x[a, b] -= dtc * g[a, b]
            for b in range(min(BLOCK, n - i0)):
                for a in range(d):
                    X[i0 + b, a] = x[a, b]

    _BUILT[key] = (blocks, run)
    return run
