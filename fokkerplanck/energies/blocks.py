"""Energy kernels on a block of points laid out as struct of arrays.

The Langevin integrators of :mod:`particles` advance particles in blocks of
:data:`BLOCK` lanes, one particle per lane, coordinates as rows: ``X[a, b]`` is
coordinate ``a`` of lane ``b``.  Every loop over lanes is then a loop of
independent, identical arithmetic that LLVM compiles to SIMD instructions
(AVX2/AVX-512 where the CPU has them), with :mod:`fokkerplanck._core.vmath` in place
of libm.  Contract (``X``, ``G``: (d, B); ``V``: (B,); ``W``: scratch of
``work_rows(d)`` rows and B columns; all C-contiguous)::

    grad(X, p, G, W)              G[:, b] = grad U(X[:, b])
    value_grad(X, p, V, G, W)     V[b] = U(X[:, b]), G as above

Arithmetic stays in the precision of ``X`` (float64 or float32; pass ``p`` as
:func:`block_params` gives it).  A lane's result depends on that lane only, whatever the other
lanes hold (NaN included), so particles do not influence each other.

:func:`block_kernels` gives an energy's block kernels: written out for
:class:`~fokkerplanck.energies.GaussianMixture` and
:class:`~fokkerplanck.energies.Quadratic` (an explicit registry, :data:`WRITTEN`),
and for every other energy (composed, custom, ...) an adapter that calls its
one-point kernels lane by lane: same results, no SIMD in the energy itself.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from fokkerplanck._core.jit import closure_jit, jit
from fokkerplanck._core.vmath import cast_like, vexp, vlog
from fokkerplanck.energies.base import Energy, Kernels
from fokkerplanck.energies.families import GaussianMixture, Quadratic, _gm_ncomp

__all__ = ["BLOCK", "BlockKernels", "block_kernels", "block_params", "work_rows", "WRITTEN"]

BLOCK = 256   # lanes per block: 32 AVX-512 vectors of float64; long enough to amortise the per-component set-up


@jit(cache=True)
def work_rows(d):
    """Rows of the scratch array ``W`` the block kernels of a d-dimensional energy need."""
    return 2 * d + 4


class BlockKernels(NamedTuple):
    """An energy's kernels on blocks of points; see the module docstring."""

    grad: Callable
    value_grad: Callable


# -- Gaussian mixture (parameter layout of energies._gm_*: p = [K, per component: logc, mean, P])
@jit(cache=True)
def _gm_block(X, p, V, G, W, want_value):
    d, B = X.shape
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    half = cast_like(X[0, 0], 0.5)
    zero = cast_like(X[0, 0], 0.0)
    m = W[0]
    s = W[1]
    for b in range(B):
        m[b] = -np.inf
        s[b] = zero
    if d == 2:
        # two passes (max logit, then weights), everything in registers per lane
        for b in range(B):
            G[0, b] = zero
            G[1, b] = zero
        for sweep in range(2):
            for k in range(K):
                off = 1 + k * stride
                lc, m0, m1 = p[off], p[off + 1], p[off + 2]
                a00, a01, a10, a11 = p[off + 3], p[off + 4], p[off + 5], p[off + 6]
                if sweep == 0:
                    for b in range(B):
                        y0 = X[0, b] - m0
                        y1 = X[1, b] - m1
                        m[b] = max(m[b], lc - half * (y0 * (a00 * y0 + a01 * y1) + y1 * (a10 * y0 + a11 * y1)))
                else:
                    for b in range(B):
                        y0 = X[0, b] - m0
                        y1 = X[1, b] - m1
                        g0 = a00 * y0 + a01 * y1
                        g1 = a10 * y0 + a11 * y1
                        w = vexp(lc - half * (y0 * g0 + y1 * g1) - m[b])
                        s[b] += w
                        G[0, b] += w * g0
                        G[1, b] += w * g1
    else:
        Y = W[4:4 + d]
        Gk = W[4 + d:4 + 2 * d]
        lk = W[2]
        for sweep in range(2):
            if sweep == 1:
                for a in range(d):
                    for b in range(B):
                        G[a, b] = zero
            for k in range(K):
                off = 1 + k * stride
                for a in range(d):
                    mu = p[off + 1 + a]
                    for b in range(B):
                        Y[a, b] = X[a, b] - mu
                for b in range(B):
                    lk[b] = zero
                for i in range(d):
                    for b in range(B):
                        Gk[i, b] = zero
                    for j in range(d):
                        c = p[off + 1 + d + i * d + j]
                        for b in range(B):
                            Gk[i, b] += c * Y[j, b]
                    for b in range(B):
                        lk[b] += Y[i, b] * Gk[i, b]
                lc = p[off]
                if sweep == 0:
                    for b in range(B):
                        m[b] = max(m[b], lc - half * lk[b])
                else:
                    for b in range(B):
                        w = vexp(lc - half * lk[b] - m[b])
                        s[b] += w
                        lk[b] = w
                    for i in range(d):
                        for b in range(B):
                            G[i, b] += lk[b] * Gk[i, b]
    for a in range(d):
        for b in range(B):
            G[a, b] /= s[b]
    if want_value:
        for b in range(B):
            V[b] = -(m[b] + vlog(s[b]))


# -- quadratic: p = [mean (d), A (d*d)]
@jit(cache=True)
def _quad_block(X, p, V, G, W, want_value):
    d, B = X.shape
    half = cast_like(X[0, 0], 0.5)
    zero = cast_like(X[0, 0], 0.0)
    Y = W[4:4 + d]
    for a in range(d):
        mu = p[a]
        for b in range(B):
            Y[a, b] = X[a, b] - mu
    for i in range(d):
        for b in range(B):
            G[i, b] = zero
        for j in range(d):
            c = p[d + i * d + j]
            for b in range(B):
                G[i, b] += c * Y[j, b]
    if want_value:
        for b in range(B):
            V[b] = zero
        for i in range(d):
            for b in range(B):
                V[b] += half * Y[i, b] * G[i, b]


def _entry_points(core) -> BlockKernels:
    """The contract's two kernels from one ``core(X, p, V, G, W, want_value)``."""
    @closure_jit
    def grad(X, p, G, W):
        core(X, p, W[3], G, W, False)

    @closure_jit
    def value_grad(X, p, V, G, W):
        core(X, p, V, G, W, True)

    return BlockKernels(grad, value_grad)


WRITTEN = {
    GaussianMixture: _entry_points(_gm_block),
    Quadratic: _entry_points(_quad_block),
}

_ADAPTERS: dict = {}


def _adapter(kernels: Kernels) -> BlockKernels:
    """Block kernels that call one-point kernels lane by lane."""
    key = (id(kernels.value), id(kernels.grad))
    if key in _ADAPTERS:
        return _ADAPTERS[key][1]
    value, grad = kernels.value, kernels.grad

    @closure_jit
    def lanes(X, p, V, G, W, want_value):
        # the one-point kernels always see float64 points and parameters (a user's kernel
        # need not compile for float32); a float32 block is converted lane by lane
        d, B = X.shape
        x = np.empty(d)
        g = np.empty(d)
        for b in range(B):
            for a in range(d):
                x[a] = X[a, b]
            if want_value:
                V[b] = value(x, p)
            grad(x, p, g)
            for a in range(d):
                G[a, b] = g[a]

    out = _entry_points(lanes)
    _ADAPTERS[key] = (kernels, out)   # keep the kernels alive: their ids are the key
    return out


def block_params(energy: Energy, dtype) -> np.ndarray:
    """The parameter vector the block kernels of ``energy`` take for blocks of ``dtype``:
    in that dtype for the kernels written out here, float64 for the adapter (whose
    one-point kernels compute in float64)."""
    return energy.params.astype(dtype) if type(energy) in WRITTEN else energy.params


def block_kernels(energy: Energy) -> BlockKernels:
    """The block kernels of ``energy``: written out for the types in :data:`WRITTEN`
    (exact type: a subclass may change the kernels), else the lane-by-lane adapter."""
    written = WRITTEN.get(type(energy))
    return written if written is not None else _adapter(energy.kernels)
