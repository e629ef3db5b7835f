"""Characteristics of the deterministic gradient flow, with their log-densities.

Along the forward flow ``dX/dt = -grad U(X)`` the continuity equation gives
``d/dt log rho_t(X_t) = lap U(X_t)``.  Hence

* forward: ``log rho_t(X_t) = log rho_0(X_0) + int_0^t lap U(X_s) ds``;
* backward: the density at a point ``x`` is ``log rho_t(x) = log rho_0(z_t) +
  int_0^t lap U(z_s) ds`` with ``dz/ds = +grad U(z)``, ``z_0 = x``.

:func:`integrate_characteristics` integrates the augmented ODE
``(z, l)' = (sign * grad U(z), lap U(z))`` for many points at once with an
adaptive Dormand-Prince 5(4) pair, compiled by numba around the energy's
kernels and parallel over points, recording ``(z, l)`` at every requested
time (steps are clipped to hit them).  A point whose step size underflows is
an error naming the point and the time.

Time-dependent energies (:class:`~fokkerplanck.energies.paths.EnergyPath` with kernels): the same
integration with ``grad U(z, u)``, ``lap U(z, u)`` at every stage's own path time
``u = a + b s`` (``duration`` maps physical time to the path's ``[0, 1]``).  Forward, one
integration gives every output time; backward, the density at time ``t`` needs the
characteristic run from ``t`` down to 0 through the energies of that interval, so each
output time has its own integration (``u = (t - s) / duration``).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from fokkerplanck._core.jit import call_compiled, closure_jit
from fokkerplanck.energies.paths import ConstantPath, EnergyPath

__all__ = ["integrate_characteristics", "CharacteristicsError"]

_BUILT: dict = {}

# Dormand-Prince 5(4) tableau
_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
_A = np.array([
    [0, 0, 0, 0, 0, 0],
    [1 / 5, 0, 0, 0, 0, 0],
    [3 / 40, 9 / 40, 0, 0, 0, 0],
    [44 / 45, -56 / 15, 32 / 9, 0, 0, 0],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
])
_B = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
_E = _B - np.array([5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])

STATUS_OK, STATUS_ESCAPED, STATUS_FAILED = 0, 1, 2


class CharacteristicsError(RuntimeError):
    """A characteristic could not be integrated to the requested tolerance."""


def _build(kernels):
    """The compiled integration around path kernels ``grad(x, u, q, out)``, ``lap(x, u, q)``
    (:class:`~fokkerplanck.energies.paths.PathKernels`; a static energy's through
    :class:`~fokkerplanck.energies.paths.ConstantPath`)."""
    key = (id(kernels.grad), id(kernels.lap))
    if key in _BUILT:
        return _BUILT[key][1]
    grad, lap = kernels.grad, kernels.lap
    A, Ecoef, C = _A, _E, _C

    @closure_jit(parallel=True)
    def run(X0, times, sign, p, rtol, atol, centre, r_escape, h0, ua, ub):
        n, d = X0.shape
        nt = times.shape[0]
        Z = np.empty((nt, n, d))
        Lg = np.empty((nt, n))
        status = np.zeros(n, dtype=np.int64)
        fail_t = np.zeros(n)
        first_escaped = np.full(n, nt, dtype=np.int64)
        for i in prange(n):
            y = np.empty(d + 1)
            y[:d] = X0[i]
            y[d] = 0.0
            K = np.empty((7, d + 1))
            ytmp = np.empty(d + 1)
            ynew = np.empty(d + 1)
            g = np.empty(d)
            t = 0.0
            h = h0
            j = 0
            # outputs at t = 0
            while j < nt and times[j] <= 0.0:
                Z[j, i] = y[:d]
                Lg[j, i] = 0.0
                j += 1
            # first stage
            u = min(1.0, max(0.0, ua))
            grad(y[:d], u, p, g)
            for a in range(d):
                K[0, a] = sign * g[a]
            K[0, d] = lap(y[:d], u, p)
            while j < nt:
                # escape: beyond r_escape from the centre the caller knows the answer
                r2 = 0.0
                for a in range(d):
                    r2 += (y[a] - centre[a]) ** 2
                if r2 > r_escape * r_escape:
                    status[i] = 1
                    first_escaped[i] = j
                    for jj in range(j, nt):
                        Z[jj, i] = y[:d]
                        Lg[jj, i] = y[d]
                    break
                hs = min(h, times[j] - t)
                for s in range(1, 7):
                    for a in range(d + 1):
                        acc = y[a]
                        for q in range(s):
                            acc += hs * A[s, q] * K[q, a]
                        ytmp[a] = acc
                    u = min(1.0, max(0.0, ua + ub * (t + C[s] * hs)))
                    grad(ytmp[:d], u, p, g)
                    for a in range(d):
                        K[s, a] = sign * g[a]
                    K[s, d] = lap(ytmp[:d], u, p)
                # ytmp now holds the 5th-order solution (FSAL: K[6] is f(ytmp))
                err = 0.0
                finite = True
                for a in range(d + 1):
                    ynew[a] = ytmp[a]
                    e = 0.0
                    for q in range(7):
                        e += hs * Ecoef[q] * K[q, a]
                    sc = atol + rtol * max(abs(y[a]), abs(ynew[a]))
                    err = max(err, abs(e) / sc)
                    if not np.isfinite(ynew[a]):
                        finite = False
                if not finite:
                    err = 1e10
                if err <= 1.0:
                    t += hs
                    for a in range(d + 1):
                        y[a] = ynew[a]
                        K[0, a] = K[6, a]
                    while j < nt and times[j] - t <= 1e-13 * max(1.0, times[j]):
                        Z[j, i] = y[:d]
                        Lg[j, i] = y[d]
                        j += 1
                    fac = 5.0 if err == 0.0 else min(5.0, 0.9 * err ** -0.2)
                    if hs == h:
                        h = h * fac
                    else:
                        h = max(h, hs * fac)
                else:
                    h = hs * max(0.1, 0.9 * err ** -0.2)
                    if h < 1e-13 * max(1.0, t):
                        status[i] = 2
                        fail_t[i] = t
                        for jj in range(j, nt):
                            Z[jj, i] = np.nan
                            Lg[jj, i] = np.nan
                        break
        return Z, Lg, status, fail_t, first_escaped

    _BUILT[key] = (kernels, run)
    return run


def integrate_characteristics(energy, X0, times, *, direction: str = "backward", rtol: float = 1e-10,
                              atol: float = 1e-12, centre=None, r_escape: float = np.inf,
                              duration: float | None = None):
    """Integrate ``dz/ds = sign grad U(z)``, ``dl/ds = lap U(z)`` from every row of
    ``X0`` (N, d); ``sign = +1`` for ``direction="backward"`` (characteristics of
    the density at fixed points), ``-1`` for ``"forward"`` (the flow map).

    Returns ``Z`` (nt, N, d), ``L`` (nt, N) at ``times`` and ``escaped`` (nt, N)
    bool: True from the first record at which the point had left the ball
    ``|z - centre| > r_escape`` (it is stopped there; those records hold the
    escape state).  Raises
    :class:`CharacteristicsError` naming the first point whose step size
    underflowed, never returns a silent NaN.

    ``energy`` may be an :class:`~fokkerplanck.energies.paths.EnergyPath` with kernels over the
    physical times ``[0, duration]`` (module docstring); ``times`` must then lie there.
    """

    X0 = np.ascontiguousarray(np.asarray(X0, dtype=float))
    times = np.asarray(times, dtype=float)
    sign = {"backward": 1.0, "forward": -1.0}.get(direction)
    if sign is None:
        raise ValueError(f"direction must be 'backward' or 'forward', got {direction!r}")
    centre = np.zeros(X0.shape[1]) if centre is None else np.asarray(centre, dtype=float)
    h0 = 1e-3 if times.size == 0 or times.max() == 0 else min(1e-3, 1e-2 * times.max())
    opts = (float(rtol), float(atol), centre, float(r_escape), h0)
    if isinstance(energy, EnergyPath):
        if duration is None:
            raise ValueError("a time-dependent energy needs duration= (the physical time of the whole path)")
        duration = float(duration)
        if not (duration > 0 and np.isfinite(duration)):
            raise ValueError(f"duration must be a positive number, got {duration!r}")
        if times.size and (times.min() < 0 or times.max() > duration * (1 + 1e-12)):
            raise ValueError(f"times must lie in [0, duration = {duration:g}]")
        run = _build(energy.path_kernels)  # NoKernelsError for a path of callables, with the reason
        q = energy.path_params
        if direction == "forward":
            Z, L, status, fail_t, first_escaped = call_compiled(run, X0, times, sign, q, *opts, 0.0, 1.0 / duration)
            escaped = np.arange(times.size)[:, None] >= first_escaped[None, :]
        else:  # one integration per output time, from t down to 0
            parts = [call_compiled(run, X0, np.array([tj]), sign, q, *opts, tj / duration, -1.0 / duration)
                     for tj in times]
            n = X0.shape[0]
            Z = np.concatenate([o[0] for o in parts]) if parts else np.empty((0, n, X0.shape[1]))
            L = np.concatenate([o[1] for o in parts]) if parts else np.empty((0, n))
            status = np.max([o[2] for o in parts], axis=0) if parts else np.zeros(n, dtype=np.int64)
            fail_t = np.max([o[3] for o in parts], axis=0) if parts else np.zeros(n)
            escaped = np.array([o[2] == STATUS_ESCAPED for o in parts]).reshape(times.size, n)
    else:
        if energy.has_kernels:
            run = _build(ConstantPath(energy).path_kernels)
            extra = (0.0, 0.0)
        else:
            run, extra = _vectorised(energy), ()
        Z, L, status, fail_t, first_escaped = call_compiled(run, X0, times, sign, energy.params, *opts, *extra)
        escaped = np.arange(times.size)[:, None] >= first_escaped[None, :]
    bad = np.flatnonzero(status == STATUS_FAILED)
    if bad.size:
        i = bad[0]
        raise CharacteristicsError(
            f"{bad.size} characteristic(s) failed to converge (step size underflow); first: start point "
            f"{X0[i].tolist()} at s = {fail_t[i]:.6g} ({direction}, rtol={rtol:g}, atol={atol:g})")
    return Z, L, escaped


def _vectorised(energy):
    """The same Dormand-Prince integration for an energy without numba kernels (Python
    callables): every point keeps its own time, step size and next output, as in the
    compiled path; each round attempts one step of every unfinished point with one batched
    call of the energy per stage (so the number of rounds is the largest step count)."""

    def f(Y, sign):
        return np.concatenate([sign * energy._grad(Y[:, :-1]), energy._lap(Y[:, :-1])[:, None]], axis=1)

    def run(X0, times, sign, p, rtol, atol, centre, r_escape, h0):
        n, d = X0.shape
        nt = times.shape[0]
        Z, Lg = np.empty((nt, n, d)), np.empty((nt, n))
        status, fail_t = np.zeros(n, dtype=np.int64), np.zeros(n)
        first_escaped = np.full(n, nt, dtype=np.int64)
        Y = np.concatenate([X0, np.zeros((n, 1))], axis=1)
        t, h = np.zeros(n), np.full(n, float(h0))
        j0 = int(np.sum(times <= 0.0))
        Z[:j0], Lg[:j0] = X0, 0.0
        j = np.full(n, j0)
        live = j < nt
        while live.any():
            out = live & (np.sum((Y[:, :d] - centre) ** 2, axis=1) > r_escape ** 2)
            for i in np.flatnonzero(out):
                status[i], first_escaped[i] = 1, j[i]
                Z[j[i]:, i], Lg[j[i]:, i] = Y[i, :d], Y[i, d]
            live &= ~out
            idx = np.flatnonzero(live)
            if idx.size == 0:
                break
            y = Y[idx]
            hs = np.minimum(h[idx], times[j[idx]] - t[idx])[:, None]
            K = [f(y, sign)]
            for s_ in range(1, 7):
                K.append(f(y + hs * sum(_A[s_, q] * K[q] for q in range(s_)), sign))
            ynew = y + hs * sum(_B[q] * K[q] for q in range(7) if _B[q] != 0.0)
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                e = hs * sum(_E[q] * K[q] for q in range(7))
                ratio = np.abs(e) / (atol + rtol * np.maximum(np.abs(y), np.abs(ynew)))
                err = np.where(np.all(np.isfinite(ynew), axis=1), ratio.max(axis=1), 1e10)
                fac_ok = np.where(err == 0.0, 5.0, np.minimum(5.0, 0.9 * err ** -0.2))
                fac_bad = np.maximum(0.1, 0.9 * err ** -0.2)
            hs = hs[:, 0]
            ok = err <= 1.0
            a, r = idx[ok], idx[~ok]
            t[a] += hs[ok]
            Y[a] = ynew[ok]
            h[a] = np.where(hs[ok] == h[a], h[a] * fac_ok[ok], np.maximum(h[a], hs[ok] * fac_ok[ok]))
            for i in a:  # record the outputs reached
                while j[i] < nt and times[j[i]] - t[i] <= 1e-13 * max(1.0, times[j[i]]):
                    Z[j[i], i], Lg[j[i], i] = Y[i, :d], Y[i, d]
                    j[i] += 1
            h[r] = hs[~ok] * fac_bad[~ok]
            under = r[h[r] < 1e-13 * np.maximum(1.0, t[r])]
            for i in under:
                status[i], fail_t[i] = 2, t[i]
                Z[j[i]:, i], Lg[j[i]:, i] = np.nan, np.nan
                j[i] = nt
            live &= j < nt
        return Z, Lg, status, fail_t, first_escaped

    return run
