"""The vectorised stepping path: energies without numba kernels (Python callables,
PyTorch, JAX; :mod:`fokkerplanck.energies.callables`).

Each step is one batched call of the energy on the live particles, then NumPy
updates.  The steppers have the call signatures of the compiled kernels of
:mod:`particles.integrators` and follow them operation by operation: the same
noise (:func:`fokkerplanck._core.rng.fill_normals` words keyed by particle and step,
streams ``STREAM_NOISE`` and ``STREAM_ACCEPT``), the same update expressions, the
same freezing of particles that leave the box (status 1, where they left) or
become non-finite (status 2, at their last finite state).  So for the same
energy the two paths agree to the round-off of the energy's own evaluation.

A callable that returns NaN, or a non-finite gradient, at some particles
(:class:`~fokkerplanck.energies.callables.NonFiniteEnergyError`) freezes those particles
with status 2, as the compiled kernels do when a step turns non-finite.
"""
from __future__ import annotations

import math

import numpy as np

from fokkerplanck.energies.callables import NonFiniteEnergyError

from fokkerplanck._core.jit import jit
from fokkerplanck._core.rng import STREAM_ACCEPT, STREAM_NOISE, block_uniforms, fill_normals

__all__ = ["langevin_stepper", "flow_stepper"]


@jit(cache=True)
def _normals_block(out, k0, k1, step, stream, start):
    """The normals of particles ``start, start + 1, ...`` at ``step``: per particle the
    same draws as the compiled kernels (:func:`fokkerplanck._core.rng.fill_normals`)."""
    for i in range(out.shape[0]):
        fill_normals(out[i], k0, k1, start + i, step, stream)


def _eval(fn, X, status, live):
    """``fn(X[live])``; rows the callable rejects as non-finite get status 2 and leave
    ``live`` (in place); returns the values on the remaining live rows and their indices."""
    idx = np.flatnonzero(live)
    while True:
        try:
            return fn(X[idx]), idx
        except NonFiniteEnergyError as exc:
            bad = idx[exc.rows]
            status[bad] = 2
            live[bad] = False
            idx = np.flatnonzero(live)
            if idx.size == 0:
                return None, idx


def _check_moved(Xnew, Xold, idx, lo, hi, status, live):
    """Write the moved live rows ``idx`` back, with the kernels' checks: non-finite rows
    keep their old state (status 2), rows outside the box stop where they are (status 1)."""
    nonfinite = ~np.all(np.isfinite(Xnew), axis=1)
    outside = ~nonfinite & np.any((Xnew < lo) | (Xnew > hi), axis=1)
    Xold[idx[~nonfinite]] = Xnew[~nonfinite]
    if nonfinite.any() or outside.any():
        status[idx[nonfinite]] = 2
        status[idx[outside]] = 1
        live[idx[nonfinite | outside]] = False


def langevin_stepper(energy, scheme: str):
    """``run(X, step0, nsteps, dt, T, p, k0, k1, lo, hi, status, accepted, offset)`` as
    :func:`particles.integrators.langevin_kernel` (``p`` is ignored)."""

    def run(X, step0, nsteps, dt, T, p, k0, k1, lo, hi, status, accepted, offset):
        n, d = X.shape
        live = status == 0
        s2 = math.sqrt(2.0 * T * dt)
        Z = np.empty((n, d))
        if scheme == "leimkuhler-matthews":
            Zc = np.empty((n, d))
            _normals_block(Zc, k0, k1, step0, STREAM_NOISE, offset)
        if scheme == "mala":
            u = np.empty(n)
            ux = np.full(n, np.nan)
            gx = np.full((n, d), np.nan)
            vals, idx = _eval(lambda Y: (energy._value(Y), energy._grad(Y)), X, status, live)
            if vals is not None:
                ux[idx], gx[idx] = vals
        for k in range(nsteps):
            if not live.any():
                break
            step = step0 + k
            if scheme == "euler-maruyama":
                g, idx = _eval(energy._grad, X, status, live)
                if g is None:
                    break
                _normals_block(Z, k0, k1, step, STREAM_NOISE, offset)
                _check_moved(X[idx] - dt * g + s2 * Z[idx], X, idx, lo, hi, status, live)
            elif scheme == "leimkuhler-matthews":
                g, idx = _eval(energy._grad, X, status, live)
                if g is None:
                    break
                _normals_block(Z, k0, k1, step + 1, STREAM_NOISE, offset)
                _check_moved(X[idx] - dt * g + 0.5 * s2 * (Zc[idx] + Z[idx]), X, idx, lo, hi, status, live)
                Zc, Z = Z, Zc
            else:
                idx = np.flatnonzero(live)
                _normals_block(Z, k0, k1, step, STREAM_NOISE, offset)
                Y = X[idx] - dt * gx[idx] + s2 * Z[idx]
                ok = np.all(np.isfinite(Y), axis=1)
                uy = np.full(idx.size, np.inf)
                gy = np.zeros((idx.size, d))
                if ok.any():
                    sub = np.zeros(idx.size, dtype=np.int8)
                    subl = ok.copy()
                    vals, j = _eval(lambda W: (energy._value(W), energy._grad(W)), Y, sub, subl)
                    if vals is not None:
                        uy[j], gy[j] = vals
                    # a proposal the energy rejects as non-finite is refused (the chain stays)
                    ok &= subl
                block_uniforms(u, k0, k1, offset, step, STREAM_ACCEPT)
                with np.errstate(invalid="ignore", over="ignore"):
                    bwd = X[idx] - Y + dt * gy
                    fwd = s2 * Z[idx]
                    la = -(uy - ux[idx]) / T - np.sum(bwd * bwd - fwd * fwd, axis=1) / (4.0 * T * dt)
                acc = ok & (np.log(u[idx]) < la)
                a = idx[acc]
                X[a], gx[a], ux[a] = Y[acc], gy[acc], uy[acc]
                accepted[a] += 1
                _check_moved(X[idx], X, idx, lo, hi, status, live)

    run.vectorised = True
    return run


def flow_stepper(energy, scheme: str, track: bool):
    """``run(X, LOG, nsteps, dt, p, lo, hi, status)`` as
    :func:`particles.integrators.flow_kernel` (``p`` is ignored)."""

    def run(X, LOG, nsteps, dt, p, lo, hi, status):
        live = status == 0

        def lap_part(Y):
            return energy._lap(Y) if track else np.zeros(Y.shape[0])

        for _ in range(nsteps):
            idx = np.flatnonzero(live)
            if idx.size == 0:
                break
            x = X[idx]
            try:
                if scheme == "euler":
                    g = energy._grad(x)
                    dl = 0.0
                    if track:
                        sign, logdet = np.linalg.slogdet(np.eye(x.shape[1]) - dt * energy._hess(x))
                        dl = -np.where(sign == 0, np.inf, logdet)
                    xn = x - dt * g
                elif scheme == "heun":
                    k1 = energy._grad(x)
                    y = x - dt * k1
                    k2 = energy._grad(y)
                    dl = 0.5 * dt * (lap_part(x) + lap_part(y)) if track else 0.0
                    xn = x - 0.5 * dt * (k1 + k2)
                else:
                    k1 = energy._grad(x)
                    l1 = lap_part(x)
                    y = x - 0.5 * dt * k1
                    k2 = energy._grad(y)
                    l2 = lap_part(y)
                    y = x - 0.5 * dt * k2
                    k3 = energy._grad(y)
                    l3 = lap_part(y)
                    y = x - dt * k3
                    k4 = energy._grad(y)
                    l4 = lap_part(y)
                    xn = x - dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
                    dl = dt / 6.0 * (l1 + 2.0 * l2 + 2.0 * l3 + l4)
            except NonFiniteEnergyError:
                _step_one_by_one(energy, scheme, track, X, LOG, idx, dt, lo, hi, status, live)
                continue
            ell = LOG[idx] + dl
            nonfinite = ~np.all(np.isfinite(xn), axis=1) | ~np.isfinite(ell)
            outside = ~nonfinite & np.any((xn < lo) | (xn > hi), axis=1)
            good = ~nonfinite
            X[idx[good]] = xn[good]
            LOG[idx[good]] = ell[good]
            status[idx[nonfinite]] = 2
            status[idx[outside]] = 1
            live[idx[nonfinite | outside]] = False

    run.vectorised = True
    return run


def _step_one_by_one(energy, scheme, track, X, LOG, idx, dt, lo, hi, status, live):
    """One step of the rows ``idx`` one at a time (after a callable refused some of them):
    the refused rows get status 2 and keep their state."""
    one = flow_stepper(energy, scheme, track)
    for i in idx:
        st = status[i:i + 1].copy()
        x, ell = X[i:i + 1].copy(), LOG[i:i + 1].copy()
        try:
            one(x, ell, 1, dt, None, lo, hi, st)
        except NonFiniteEnergyError:
            st[0] = 2
        if st[0] != 2:
            X[i], LOG[i] = x[0], ell[0]
        if st[0] != 0:
            status[i] = st[0]
            live[i] = False
