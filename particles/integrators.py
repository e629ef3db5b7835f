"""numba kernels: one compiled loop per scheme, specialised to an energy's kernels.

Every kernel advances each particle through ``nsteps`` steps on its own
(``prange`` over particles outside, steps inside: no per-step thread barrier,
particles do not interact), and returns to Python only at a save.  Noise is
drawn from the counter-based generator keyed by ``(seed, particle, step)``
(:mod:`particles.rng`), so results do not depend on threads or chunking.

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
from numba import prange

from fokkerplanck._numba import closure_jit, jit

from .rng import STREAM_ACCEPT, STREAM_NOISE, fill_normals, uniform

__all__ = ["LANGEVIN_SCHEMES", "FLOW_SCHEMES", "langevin_kernel", "flow_kernel", "gradient_only_kernel"]

LANGEVIN_SCHEMES = {"euler-maruyama": 0, "leimkuhler-matthews": 1, "mala": 2}
FLOW_SCHEMES = {"euler": 0, "heun": 1, "rk4": 2}
ORDER = {"euler-maruyama": 1, "leimkuhler-matthews": 2, "mala": np.inf, "euler": 1, "heun": 2, "rk4": 4}

_BUILT: dict = {}


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


def _key(kind, kernels, scheme, extra=()):
    return (kind, tuple(id(f) for f in kernels), scheme, extra)


def langevin_kernel(kernels, scheme: str):
    """``run(X, step0, nsteps, dt, T, p, k0, k1, lo, hi, status, accepted, offset)``: advance
    in place; particle ``i`` draws the noise of global index ``offset + i``."""
    code = LANGEVIN_SCHEMES[scheme]
    key = _key("langevin", kernels, code)
    if key in _BUILT:
        return _BUILT[key][1]
    value, grad = kernels.value, kernels.grad

    @closure_jit(parallel=True)
    def run(X, step0, nsteps, dt, T, p, k0, k1, lo, hi, status, accepted, offset):
        n, d = X.shape
        s2 = math.sqrt(2.0 * T * dt)
        for i in prange(n):
            gi = offset + i
            if status[i] != 0:
                continue
            x = X[i].copy()
            xp = np.empty(d)
            g = np.empty(d)
            z = np.empty(d)
            if code == 1:  # Leimkuhler-Matthews carries xi_k between steps
                znext = np.empty(d)
                fill_normals(z, k0, k1, gi, step0, STREAM_NOISE)
            if code == 2:
                y = np.empty(d)
                gy = np.empty(d)
                ux = value(x, p)
                grad(x, p, g)
            for k in range(nsteps):
                step = step0 + k
                for a in range(d):
                    xp[a] = x[a]
                if code == 0:
                    grad(x, p, g)
                    fill_normals(z, k0, k1, gi, step, STREAM_NOISE)
                    for a in range(d):
                        x[a] += -dt * g[a] + s2 * z[a]
                elif code == 1:
                    grad(x, p, g)
                    fill_normals(znext, k0, k1, gi, step + 1, STREAM_NOISE)
                    for a in range(d):
                        x[a] += -dt * g[a] + 0.5 * s2 * (z[a] + znext[a])
                        z[a] = znext[a]
                else:
                    fill_normals(z, k0, k1, gi, step, STREAM_NOISE)
                    for a in range(d):
                        y[a] = x[a] - dt * g[a] + s2 * z[a]
                    uy = value(y, p)
                    grad(y, p, gy)
                    fwd = 0.0
                    bwd = 0.0
                    for a in range(d):
                        fwd += (s2 * z[a]) ** 2
                        bwd += (x[a] - y[a] + dt * gy[a]) ** 2
                    log_alpha = -(uy - ux) / T - (bwd - fwd) / (4.0 * T * dt)
                    if math.log(uniform(k0, k1, gi, step, STREAM_ACCEPT)) < log_alpha:
                        for a in range(d):
                            x[a] = y[a]
                            g[a] = gy[a]
                        ux = uy
                        accepted[i] += 1
                st = _check(x, lo, hi)
                if st != 0:
                    status[i] = st
                    if st == 2:  # keep the last finite position
                        for a in range(d):
                            x[a] = xp[a]
                    break
            X[i] = x

    _BUILT[key] = (kernels, run)
    return run


def flow_kernel(kernels, scheme: str, track: bool):
    """``run(X, LOG, nsteps, dt, p, lo, hi, status)``: deterministic flow in place;
    with ``track`` the log-density ``LOG`` follows the particles."""
    code = FLOW_SCHEMES[scheme]
    key = _key("flow", kernels, code, (bool(track),))
    if key in _BUILT:
        return _BUILT[key][1]
    grad, lap, hess = kernels.grad, kernels.lap, kernels.hess

    @closure_jit(parallel=True)
    def run(X, LOG, nsteps, dt, p, lo, hi, status):
        n, d = X.shape
        for i in prange(n):
            if status[i] != 0:
                continue
            x = X[i].copy()
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

    _BUILT[key] = (kernels, run)
    return run


def gradient_only_kernel(kernels):
    """The roofline of the benchmarks: evaluate ``grad U`` at every particle and step
    and add it in (so nothing is optimised away); no noise, no checks."""
    key = _key("roofline", kernels, 0)
    if key in _BUILT:
        return _BUILT[key][1]
    grad = kernels.grad

    @closure_jit(parallel=True)
    def run(X, nsteps, dt, p):
        n, d = X.shape
        for i in prange(n):
            x = X[i].copy()
            g = np.empty(d)
            for _ in range(nsteps):
                grad(x, p, g)
                for a in range(d):
                    x[a] -= dt * g[a]
            X[i] = x

    _BUILT[key] = (kernels, run)
    return run
