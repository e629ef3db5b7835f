"""Data-defined energies: the smoothed data law ``rho* = rho_data * K_h`` as an exact energy.

:class:`KDE` is ``U(x) = -log (1/N) sum_j N(x; x_j, h^2 I)`` for N data points
(normalised: ``log Z = 0`` at ``T = 1``).  It is a Gaussian mixture, but with up to
``1e5``-``1e6`` components no evaluation may loop over all of them.  Points are
binned in a cell list (cells of side ``h``, d <= 3; one cell above) and each
evaluation visits rings of cells around ``x``, nearest first, until the points not
yet visited cannot matter:

    stop when  log N_rest - delta^2 / (2 h^2) + 2 log max(1, delta / h) + log(d + 1)
               <= log(tol) + log sum_visited exp(-|x - x_j|^2 / (2 h^2))

with ``delta`` a lower bound of the distance from ``x`` to any unvisited point
(``delta^2 >= |x - P x|^2 + (k s)^2`` after ring ``k``, ``P`` the projection on the
cells' box).  Every dropped term is below ``exp(-delta^2 / (2 h^2))`` (its
``|x - x_j| / h`` and ``|x - x_j|^2 / h^2`` factors are bounded by the ``delta``
terms beyond ``h``), so the density, and ``h`` times the gradient and ``h^2`` times the
Laplacian of ``U``, carry relative errors below ``tol`` (default ``1e-12``).

:meth:`KDE.smoothed` is the heat flow from the data: ``rho_data * K_h`` diffused
for time ``t`` at temperature ``T`` (``d_t rho = T lap rho``) is ``rho_data * K_{h'}``
with ``h'^2 = h^2 + 2 T t``, the closed form the grid solvers are checked against.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from fokkerplanck._core.jit import jit
from fokkerplanck._core.validate import point_set, points, positive_float
from fokkerplanck.energies.base import Energy, Kernels, _kernel_loop, _value_loop, register

__all__ = ["KDE", "MAX_DATA", "DEFAULT_TOL"]

MAX_DATA = 10_000_000
DEFAULT_TOL = 1e-12
MAX_CELLS_PER_POINT = 4   # cells of side h, coarsened until there are at most 4 per data point
MIN_BANDWIDTH = np.finfo(float).tiny ** 0.25   # 1.22e-77: below, h^4 (Laplacian, Hessian) and then h^2 underflow

# params layout: [d, N, h, log tol, s, n_0..n_{d-1}, lo_0..lo_{d-1}, start_0..start_ncells, x (N*d, cell order)]


@jit(cache=True)
def _layout(p):
    d = int(p[0])
    n = int(p[1])
    ncell = 1
    for a in range(d):
        ncell *= int(p[5 + a])
    o_start = 5 + 2 * d
    o_x = o_start + ncell + 1
    return d, n, ncell, o_start, o_x


@jit(cache=True)
def _kde_core(x, p, mu, S, mode):
    """Ring search; returns ``(m, S0)`` with ``log sum_j exp(l_j) = m + log S0``, and fills
    ``mu = sum w_j (x - x_j)`` and (mode >= 2) ``S = sum w_j (x - x_j)(x - x_j)^T``
    (mode 2: only the trace in ``S[0, 0]``), weights ``w_j = exp(l_j - m) / S0``."""
    d, n, ncell, o_start, o_x = _layout(p)
    h = p[2]
    logtol = p[3]
    s = p[4]
    inv2h2 = 0.5 / (h * h)
    c0 = np.empty(d, np.int64)
    nax = np.empty(d, np.int64)
    off = np.empty(d, np.int64)
    dproj2 = 0.0
    kmax = 0
    for a in range(d):
        nax[a] = int(p[5 + a])
        lo = p[5 + d + a]
        hi = lo + nax[a] * s
        xa = min(max(x[a], lo), hi)
        dproj2 += (x[a] - xa) ** 2
        c = int((xa - lo) / s)
        c0[a] = min(max(c, 0), nax[a] - 1)
        kmax = max(kmax, max(c0[a], nax[a] - 1 - c0[a]))
    for a in range(d):
        mu[a] = 0.0
    if mode >= 2:
        for a in range(d):
            for b in range(d):
                S[a, b] = 0.0
    m = -np.inf
    S0 = 0.0
    visited = 0
    diff = np.empty(d)
    for k in range(kmax + 1):
        # the cells of Chebyshev distance exactly k from c0: an odometer over the cube
        for a in range(d):
            off[a] = -k
        while True:
            ring = False
            inside = True
            lin = 0
            for a in range(d):
                if off[a] == k or off[a] == -k:
                    ring = True
                c = c0[a] + off[a]
                if c < 0 or c >= nax[a]:
                    inside = False
                lin = lin * nax[a] + c
            if ring and inside:
                j0 = int(p[o_start + lin])
                j1 = int(p[o_start + lin + 1])
                for j in range(j0, j1):
                    r2 = 0.0
                    for a in range(d):
                        diff[a] = x[a] - p[o_x + j * d + a]
                        r2 += diff[a] * diff[a]
                    lj = -r2 * inv2h2
                    if lj > m:  # rescale what is accumulated to the new maximum
                        f = math.exp(m - lj) if S0 > 0.0 else 0.0
                        S0 *= f
                        for a in range(d):
                            mu[a] *= f
                        if mode == 2:
                            S[0, 0] *= f
                        elif mode == 3:
                            for a in range(d):
                                for b in range(d):
                                    S[a, b] *= f
                        m = lj
                    e = math.exp(lj - m)
                    S0 += e
                    for a in range(d):
                        mu[a] += e * diff[a]
                    if mode == 2:
                        S[0, 0] += e * r2
                    elif mode == 3:
                        for a in range(d):
                            for b in range(d):
                                S[a, b] += e * diff[a] * diff[b]
                visited += j1 - j0
            # next cell of the ring: an odometer over the cube whose last axis jumps from -k
            # to +k while no other axis is at +-k (so a ring costs O(k^(d-1)), not O(k^d))
            a = d - 1
            while a >= 0:
                if a == d - 1 and k > 0 and off[a] == -k:
                    edge = False
                    for e in range(d - 1):
                        if off[e] == k or off[e] == -k:
                            edge = True
                    off[a] = -k + 1 if edge else k
                else:
                    off[a] += 1
                if off[a] <= k:
                    break
                off[a] = -k
                a -= 1
            if a < 0:
                break
        rest = n - visited
        if rest == 0:
            break
        if S0 > 0.0:
            delta2 = dproj2 + (k * s) ** 2
            dh = math.sqrt(delta2) / h
            bound = math.log(rest) - delta2 * inv2h2 + 2.0 * math.log(max(1.0, dh)) + math.log(d + 1.0)
            if bound <= logtol + m + math.log(S0):
                break
    for a in range(d):
        mu[a] /= S0
    if mode == 2:
        S[0, 0] /= S0
    elif mode == 3:
        for a in range(d):
            for b in range(d):
                S[a, b] /= S0
    return m, S0


@jit(cache=True)
def _kde_value(x, p):
    d = x.shape[0]
    mu = np.empty(d)
    S = np.empty((1, 1))
    m, S0 = _kde_core(x, p, mu, S, 0)
    h = p[2]
    return -(m + math.log(S0)) + math.log(p[1]) + 0.5 * d * math.log(2.0 * math.pi * h * h)


@jit(cache=True)
def _kde_grad(x, p, out):
    d = x.shape[0]
    S = np.empty((1, 1))
    _kde_core(x, p, out, S, 1)
    h2 = p[2] * p[2]
    for a in range(d):
        out[a] /= h2


@jit(cache=True)
def _kde_lap(x, p):
    d = x.shape[0]
    mu = np.empty(d)
    S = np.empty((1, 1))
    _kde_core(x, p, mu, S, 2)
    h2 = p[2] * p[2]
    m2 = 0.0
    for a in range(d):
        m2 += mu[a] * mu[a]
    return d / h2 - (S[0, 0] - m2) / (h2 * h2)


@jit(cache=True)
def _kde_hess(x, p, out):
    d = x.shape[0]
    mu = np.empty(d)
    _kde_core(x, p, mu, out, 3)
    h2 = p[2] * p[2]
    for a in range(d):
        for b in range(d):
            out[a, b] = ((1.0 / h2) if a == b else 0.0) - (out[a, b] - mu[a] * mu[b]) / (h2 * h2)


_KDE_KERNELS = Kernels(_kde_value, _kde_grad, _kde_lap, _kde_hess)


@jit(cache=True, parallel=True)
def _kde_all(X, p):
    """``(U, grad U, lap U)`` at points (N, d) from ONE ring search per point, in parallel."""
    n, d = X.shape
    v = np.empty(n)
    g = np.empty((n, d))
    lp = np.empty(n)
    h2 = p[2] * p[2]
    c = math.log(p[1]) + 0.5 * d * math.log(2.0 * math.pi * h2)
    for i in prange(n):
        S = np.empty((1, 1))
        mu = np.empty(d)
        m, S0 = _kde_core(X[i], p, mu, S, 2)
        v[i] = -(m + math.log(S0)) + c
        m2 = 0.0
        for a in range(d):
            g[i, a] = mu[a] / h2
            m2 += mu[a] * mu[a]
        lp[i] = d / h2 - (S[0, 0] - m2) / (h2 * h2)
    return v, g, lp


class KDE(Energy):
    """``U(x) = -log (1/N) sum_j N(x; x_j, h^2 I)``: the data law smoothed by a Gaussian
    kernel of standard deviation ``bandwidth`` (module docstring: the cut-off and its error).

    data : (N, d) points, N <= :data:`MAX_DATA`.
    tol : relative error bound of the density (and of ``h grad U``, ``h^2 lap U``).
    """

    def __init__(self, data, bandwidth: float, *, tol: float = DEFAULT_TOL):
        X = point_set(data, "data", "N", maximum=MAX_DATA)
        n, d = X.shape
        h = positive_float(bandwidth, "bandwidth")
        if h < MIN_BANDWIDTH:
            raise ValueError(f"bandwidth = {h:g} is too small: h^4 underflows in float64 (the Laplacian and Hessian "
                             f"divide by it, and below 1.5e-154 h^2 too: value and gradient) and they would be NaN; "
                             f"the smallest bandwidth is {MIN_BANDWIDTH:.3g}")
        tol = positive_float(tol, "tol")
        if tol >= 1:
            raise ValueError(f"tol must be below 1, got {tol}")
        lo, hi = X.min(axis=0), X.max(axis=0)
        s = h
        if d <= 3:
            while np.prod(np.ceil((hi - lo) / s + 1e-9) + 1) > MAX_CELLS_PER_POINT * n + 1:
                s *= 2.0
            nax = np.maximum(1, np.ceil((hi - lo) / s + 1e-9)).astype(np.int64)
        else:  # rings of cells do not pay in higher dimensions: one cell, every point visited
            nax = np.ones(d, dtype=np.int64)
            s = float(np.max(hi - lo)) + h
        idx = np.minimum(((X - lo) / s).astype(np.int64), nax - 1)
        lin = np.ravel_multi_index(idx.T, nax)
        order = np.argsort(lin, kind="stable")
        start = np.searchsorted(lin[order], np.arange(nax.prod() + 1))
        self.dim, self.n, self.bandwidth, self.tol, self.cell = d, n, h, tol, s
        self.data = X.copy()
        self.data.setflags(write=False)
        self.params = np.concatenate([[d, n, h, math.log(tol), s], nax.astype(float), lo, start.astype(float),
                                      X[order].ravel()])

    def _build_kernels(self):
        return _KDE_KERNELS

    def _value(self, X):
        return _value_loop(self.kernels)(np.ascontiguousarray(X), self.params)

    def _grad(self, X):
        return _kde_all(np.ascontiguousarray(X), self.params)[1]

    def _lap(self, X):
        return _kde_all(np.ascontiguousarray(X), self.params)[2]

    def _hess(self, X):
        return _kernel_loop(self.kernels, True)(np.ascontiguousarray(X), self.params)[3]

    def lap_and_grad2(self, x):
        X, _ = points(x, self.dim)
        _, g, lap = _kde_all(X, self.params)
        return lap, np.sum(g * g, axis=1)

    def log_partition(self, temperature: float = 1.0) -> float:
        if positive_float(temperature, "temperature") == 1.0:
            return 0.0
        return super().log_partition(temperature)

    def sample(self, n: int, seed=None) -> np.ndarray:
        """``n`` exact samples of ``rho_data * K_h``: a data point plus ``h`` times a normal."""
        rng = np.random.default_rng(seed)
        return self.data[rng.integers(0, self.n, size=int(n))] + self.bandwidth * rng.standard_normal((int(n), self.dim))

    def smoothed(self, t: float, temperature: float = 1.0) -> "KDE":
        """The heat flow from the data at time ``t``: ``d_t rho = T lap rho`` from this law gives
        ``rho_data * K_{h'}``, ``h'^2 = h^2 + 2 T t`` (exact)."""
        t = float(t)
        if not np.isfinite(t) or t < 0:
            raise ValueError(f"t must be a non-negative number, got {t!r}")
        T = positive_float(temperature, "temperature")
        return KDE(self.data, math.sqrt(self.bandwidth ** 2 + 2.0 * T * t), tol=self.tol)

    def to_spec(self):
        return {"type": "KDE", "data": self.data.tolist(), "bandwidth": self.bandwidth, "tol": self.tol}

    def __repr__(self):
        return f"KDE(N={self.n}, d={self.dim}, h={self.bandwidth:g})"


register(KDE)
