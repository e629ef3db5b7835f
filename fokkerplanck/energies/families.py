"""The built-in energy families: :class:`Quadratic` (any SPD matrix), :class:`DoubleWell`
(separable) and :class:`GaussianMixture` (rings, square grids, the paper's sets A and
B, arbitrary weights, means and covariances), each with NumPy methods and numba kernels
tested equal.  A new family is one class here (or in a module of its own) that
subclasses :class:`~fokkerplanck.energies.base.Energy` and calls
:func:`~fokkerplanck.energies.base.register`."""
from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from fokkerplanck._core.jit import jit
from fokkerplanck._core.validate import (
    finite_array,
    point_set,
    positive_float,
    positive_int,
    sample_count,
    spd_matrix,
)
from fokkerplanck.energies.base import (
    COMPILED_MIN_POINTS,
    MAX_COMPONENTS,
    Energy,
    Kernels,
    _frozen,
    _grad_loop,
    _value_loop,
    register,
)


# ---------------------------------------------------------------------------
# Quadratic
@jit(cache=True)
def _quad_value(x, p):
    d = x.shape[0]
    s = 0.0
    for i in range(d):
        yi = x[i] - p[i]
        for j in range(d):
            s += yi * p[d + i * d + j] * (x[j] - p[j])
    return 0.5 * s


@jit(cache=True)
def _quad_grad(x, p, out):
    d = x.shape[0]
    for i in range(d):
        s = 0.0
        for j in range(d):
            s += p[d + i * d + j] * (x[j] - p[j])
        out[i] = s


@jit(cache=True)
def _quad_lap(x, p):
    d = x.shape[0]
    s = 0.0
    for i in range(d):
        s += p[d + i * d + i]
    return s


@jit(cache=True)
def _quad_hess(x, p, out):
    d = x.shape[0]
    for i in range(d):
        for j in range(d):
            out[i, j] = p[d + i * d + j]


_QUAD_KERNELS = Kernels(_quad_value, _quad_grad, _quad_lap, _quad_hess)


class Quadratic(Energy):
    """``U(x) = (x - mean)^T A (x - mean) / 2`` for a symmetric positive-definite ``A``.

    Its Gibbs law is ``N(mean, T A^{-1})``, with
    ``log Z = d/2 log(2 pi T) - 1/2 log det A``.
    """

    def __init__(self, A, mean=None):
        self.A = _frozen(spd_matrix(A, "A"))
        self.dim = self.A.shape[0]
        self.mean = _frozen(np.zeros(self.dim) if mean is None else finite_array(mean, "mean", shape=(self.dim,)))
        self.params = np.concatenate([self.mean, self.A.ravel()])

    def _value(self, X):
        Y = X - self.mean
        return 0.5 * np.einsum("ni,ij,nj->n", Y, self.A, Y)

    def _grad(self, X):
        return (X - self.mean) @ self.A

    def _lap(self, X):
        return np.full(X.shape[0], np.trace(self.A))

    def _hess(self, X):
        return np.broadcast_to(self.A, (X.shape[0], self.dim, self.dim)).copy()

    def log_partition(self, temperature: float = 1.0) -> float:
        T = positive_float(temperature, "temperature")
        return 0.5 * self.dim * math.log(2 * math.pi * T) - 0.5 * np.linalg.slogdet(self.A)[1]

    def _build_kernels(self):
        return _QUAD_KERNELS

    def to_spec(self):
        return {"type": "Quadratic", "A": self.A.tolist(), "mean": self.mean.tolist()}


# ---------------------------------------------------------------------------
# Double well (separable)
@jit(cache=True)
def _dw_value(x, p):
    b, s = p[0], p[1]
    v = 0.0
    for i in range(x.shape[0]):
        q = (x[i] / s) ** 2 - 1.0
        v += b * q * q
    return v


@jit(cache=True)
def _dw_grad(x, p, out):
    b, s = p[0], p[1]
    for i in range(x.shape[0]):
        out[i] = 4.0 * b * x[i] * ((x[i] / s) ** 2 - 1.0) / (s * s)


@jit(cache=True)
def _dw_lap(x, p):
    b, s = p[0], p[1]
    v = 0.0
    for i in range(x.shape[0]):
        v += 4.0 * b * (3.0 * (x[i] / s) ** 2 - 1.0) / (s * s)
    return v


@jit(cache=True)
def _dw_hess(x, p, out):
    b, s = p[0], p[1]
    d = x.shape[0]
    for i in range(d):
        for j in range(d):
            out[i, j] = 0.0
        out[i, i] = 4.0 * b * (3.0 * (x[i] / s) ** 2 - 1.0) / (s * s)


_DW_KERNELS = Kernels(_dw_value, _dw_grad, _dw_lap, _dw_hess)


class DoubleWell(Energy):
    """Separable double well ``U(x) = sum_i barrier * ((x_i / scale)^2 - 1)^2``.

    Minima at ``x_i = +-scale`` (value 0), saddle at the origin with height
    ``barrier`` per coordinate.  ``dim=1`` is the classic 1D double well.
    ``log Z`` is ``dim`` times a 1D integral, computed by adaptive quadrature
    to ~1e-13 relative.
    """

    def __init__(self, dim: int = 1, barrier: float = 1.0, scale: float = 1.0):
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.barrier = positive_float(barrier, "barrier")
        self.scale = positive_float(scale, "scale")
        self.params = np.array([self.barrier, self.scale])

    def _q(self, X):
        return (X / self.scale) ** 2 - 1.0

    def _value(self, X):
        return self.barrier * np.sum(self._q(X) ** 2, axis=1)

    def _grad(self, X):
        return 4.0 * self.barrier * X * self._q(X) / self.scale**2

    def _lap(self, X):
        return np.sum(self._hdiag(X), axis=1)

    def _hdiag(self, X):
        return 4.0 * self.barrier * (3.0 * (X / self.scale) ** 2 - 1.0) / self.scale**2

    def _hess(self, X):
        H = np.zeros((X.shape[0], self.dim, self.dim))
        idx = np.arange(self.dim)
        H[:, idx, idx] = self._hdiag(X)
        return H

    def log_partition(self, temperature: float = 1.0) -> float:
        from scipy.integrate import quad

        T = positive_float(temperature, "temperature")
        b, s = self.barrier, self.scale
        # integrand symmetric in x; integrate on [0, inf) split at the minimum
        f = lambda x: math.exp(-b * ((x / s) ** 2 - 1.0) ** 2 / T)  # noqa: E731
        z = quad(f, 0, s, epsabs=0, epsrel=1e-13, limit=200)[0] + quad(f, s, np.inf, epsabs=0, epsrel=1e-13, limit=200)[0]
        return self.dim * math.log(2.0 * z)

    def _build_kernels(self):
        return _DW_KERNELS

    def to_spec(self):
        return {"type": "DoubleWell", "dim": self.dim, "barrier": self.barrier, "scale": self.scale}


# ---------------------------------------------------------------------------
# Gaussian mixture.  Parameter layout: p = [K, then per component k:
#   logc_k = log w_k - 1/2 log det(2 pi S_k), mean_k (d), P_k = S_k^{-1} (d*d)]
@jit(cache=True)
def _gm_ncomp(p, d):
    """The component count ``p[0]``, clipped to what ``p`` holds: never index out of bounds."""
    k = int(p[0])
    kmax = (p.shape[0] - 1) // (1 + d + d * d)
    return min(max(k, 0), kmax)


@jit(cache=True)
def _gm_logits(x, p, ls):
    """Fill ls[k] = log w_k + log N(x; m_k, S_k); return max_k ls[k]."""
    d = x.shape[0]
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    lmax = -np.inf
    for k in range(K):
        off = 1 + k * stride
        ls[k] = p[off] - 0.5 * _gm_quad(x, p, off, d)
        if ls[k] > lmax:
            lmax = ls[k]
    return lmax


@jit(cache=True)
def _gm_resp(x, p, r):
    """Responsibilities r (normalised, stable); returns log sum_k w_k N_k(x)."""
    lmax = _gm_logits(x, p, r)
    tot = 0.0
    for k in range(r.shape[0]):
        r[k] = math.exp(r[k] - lmax)
        tot += r[k]
    for k in range(r.shape[0]):
        r[k] /= tot
    return lmax + math.log(tot)


@jit(cache=True)
def _gm_g(x, p, k, g):
    """g = P_k (x - m_k)."""
    d = x.shape[0]
    off = 1 + k * (1 + d + d * d)
    for i in range(d):
        s = 0.0
        for j in range(d):
            s += p[off + 1 + d + i * d + j] * (x[j] - p[off + 1 + j])
        g[i] = s


@jit(cache=True)
def _gm_quad(x, p, off, d):
    """(x - m_k)^T P_k (x - m_k) for the component at offset ``off``."""
    q = 0.0
    for i in range(d):
        gi = 0.0
        for j in range(d):
            gi += p[off + 1 + d + i * d + j] * (x[j] - p[off + 1 + j])
        q += (x[i] - p[off + 1 + i]) * gi
    return q


@jit(cache=True)
def _gm_value(x, p):
    # one pass, online log-sum-exp, no allocation (this runs inside particle loops)
    d = x.shape[0]
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    m = -np.inf
    s = 0.0
    for k in range(K):
        off = 1 + k * stride
        lk = p[off] - 0.5 * _gm_quad(x, p, off, d)
        if lk > m:
            s = s * math.exp(m - lk) + 1.0
            m = lk
        else:
            s += math.exp(lk - m)
    return -(m + math.log(s))


@jit(cache=True)
def _gm_pass2(x, p):
    """2D online log-sum-exp pass: ``(m, s, o0, o1)`` with ``sum_k e^{l_k} = e^m s`` and
    ``o / s = sum_k r_k P_k (x - m_k)`` (scalars in registers: ``out`` arrays may alias
    ``p`` as far as LLVM knows, so a generic loop would reload parameters after every store)."""
    K = _gm_ncomp(p, 2)
    m = -np.inf
    s = 0.0
    o0 = 0.0
    o1 = 0.0
    x0 = x[0]
    x1 = x[1]
    for k in range(K):
        off = 1 + 7 * k
        y0 = x0 - p[off + 1]
        y1 = x1 - p[off + 2]
        g0 = p[off + 3] * y0 + p[off + 4] * y1
        g1 = p[off + 5] * y0 + p[off + 6] * y1
        lk = p[off] - 0.5 * (y0 * g0 + y1 * g1)
        if lk > m:
            sc = math.exp(m - lk)
            s *= sc
            o0 *= sc
            o1 *= sc
            m = lk
        w = math.exp(lk - m)
        s += w
        o0 += w * g0
        o1 += w * g1
    return m, s, o0, o1


@jit(cache=True)
def _gm_grad2(x, p, out):
    """2D fast path of :func:`_gm_grad`."""
    _, s, o0, o1 = _gm_pass2(x, p)
    out[0] = o0 / s
    out[1] = o1 / s


@jit(cache=True)
def _gm_grad(x, p, out):
    # grad U = sum_k r_k P_k (x - m_k): one pass, online log-sum-exp, no allocation
    d = x.shape[0]
    if d == 2:
        _gm_grad2(x, p, out)
        return
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    m = -np.inf
    s = 0.0
    for i in range(d):
        out[i] = 0.0
    for k in range(K):
        off = 1 + k * stride
        lk = p[off] - 0.5 * _gm_quad(x, p, off, d)
        if lk > m:
            scale = math.exp(m - lk)
            s *= scale
            for i in range(d):
                out[i] *= scale
            m = lk
        w = math.exp(lk - m)
        s += w
        for i in range(d):
            gi = 0.0
            for j in range(d):
                gi += p[off + 1 + d + i * d + j] * (x[j] - p[off + 1 + j])
            out[i] += w * gi
    for i in range(d):
        out[i] /= s


@jit(cache=True)
def _gm_lap2(x, p):
    """2D fast path of :func:`_gm_lap`, no allocation: the gradient's pass gives the
    log-sum-exp and gbar, a second pass sums r_k (tr P_k - |g_k - gbar|^2)."""
    K = _gm_ncomp(p, 2)
    m, s, b0, b1 = _gm_pass2(x, p)
    b0 /= s
    b1 /= s
    lap = 0.0
    for k in range(K):
        off = 1 + 7 * k
        y0 = x[0] - p[off + 1]
        y1 = x[1] - p[off + 2]
        g0 = p[off + 3] * y0 + p[off + 4] * y1
        g1 = p[off + 5] * y0 + p[off + 6] * y1
        lk = p[off] - 0.5 * (y0 * g0 + y1 * g1)
        lap += math.exp(lk - m) * (p[off + 3] + p[off + 6] - (g0 - b0) ** 2 - (g1 - b1) ** 2)
    return lap / s


@jit(cache=True)
def _gm_lap(x, p):
    # lap U = sum_k r_k tr P_k - sum_k r_k |g_k - gbar|^2   (a variance: no cancellation)
    d = x.shape[0]
    if d == 2:
        return _gm_lap2(x, p)
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    r = np.empty(K)
    g = np.empty(d)
    gbar = np.zeros(d)
    _gm_resp(x, p, r)
    for k in range(K):
        _gm_g(x, p, k, g)
        for i in range(d):
            gbar[i] += r[k] * g[i]
    lap = 0.0
    for k in range(K):
        off = 1 + k * stride
        tr = 0.0
        for i in range(d):
            tr += p[off + 1 + d + i * d + i]
        _gm_g(x, p, k, g)
        v = 0.0
        for i in range(d):
            v += (g[i] - gbar[i]) ** 2
        lap += r[k] * (tr - v)
    return lap


@jit(cache=True)
def _gm_hess(x, p, out):
    d = x.shape[0]
    K = _gm_ncomp(p, d)
    stride = 1 + d + d * d
    r = np.empty(K)
    g = np.empty(d)
    gbar = np.zeros(d)
    _gm_resp(x, p, r)
    for k in range(K):
        _gm_g(x, p, k, g)
        for i in range(d):
            gbar[i] += r[k] * g[i]
    out[:, :] = 0.0
    for k in range(K):
        off = 1 + k * stride
        _gm_g(x, p, k, g)
        for i in range(d):
            for j in range(d):
                out[i, j] += r[k] * (p[off + 1 + d + i * d + j] - (g[i] - gbar[i]) * (g[j] - gbar[j]))


_GM_KERNELS = Kernels(_gm_value, _gm_grad, _gm_lap, _gm_hess)


MIN_SIGMA = math.sqrt(np.finfo(float).tiny)   # 1.49e-154: a smaller sigma's square (the variance) underflows


def _precisions(S) -> np.ndarray:
    """The inverses of the covariances (K, d, d), or a ValueError naming the first whose
    inverse or log-determinant is not finite in float64 (positive definite, yet numerically
    singular: e.g. entries below 1e-300)."""
    out = np.empty_like(S)
    for k, c in enumerate(S):
        with np.errstate(all="ignore"):
            try:
                P = np.linalg.inv(c)
            except np.linalg.LinAlgError:
                P = np.full_like(c, np.nan)
            logdet = np.linalg.slogdet(2 * np.pi * c)[1]
        if not (np.all(np.isfinite(P)) and np.isfinite(logdet)):
            ev = np.linalg.eigvalsh(c)
            raise ValueError(f"covs[{k}] is singular in float64 (eigenvalues {ev.min():.3g} .. {ev.max():.3g}): "
                             "its inverse or log-determinant is not finite; use a larger covariance")
        out[k] = P
    return out


class GaussianMixture(Energy):
    """``U(x) = -log sum_k w_k N(x; m_k, S_k)``: a normalised mixture, so
    ``log Z = 0`` at ``T = 1`` and ``rho* = sum_k w_k N(m_k, S_k)``.

    ``covs`` is (K, d, d), or (K,) scalar standard deviations ``sigma_k``
    (``S_k = sigma_k^2 I``), or one scalar sigma for all.  ``weights`` are
    normalised; default equal.  Log-sum-exp keeps value, gradient and
    Laplacian finite and accurate far from every centre.
    """

    def __init__(self, means, covs=1.0, weights=None):
        means = point_set(means, "means", "K", maximum=MAX_COMPONENTS, why="every evaluation loops over all of them")
        K, d = means.shape
        covs_in = finite_array(covs, "covs")
        if covs_in.ndim <= 1:
            sig = np.broadcast_to(covs_in, (K,)) if covs_in.ndim == 0 or covs_in.shape == (K,) else None
            if sig is None:
                raise ValueError(f"sigmas must be a scalar or have shape ({K},), got {covs_in.shape}")
            if np.any(sig <= 0):
                raise ValueError(f"sigmas must be positive, got {np.asarray(sig).tolist()}")
            if np.any(sig < MIN_SIGMA):
                k = int(np.argmin(sig))
                raise ValueError(f"covs: sigma = {float(sig[k]):g} (component {k}) is too small: the covariance "
                                 f"sigma^2 I underflows in float64 (its inverse would not be finite); the smallest "
                                 f"sigma is {MIN_SIGMA:.3g}")
            S = np.asarray(sig)[:, None, None] ** 2 * np.eye(d)
        elif covs_in.shape == (K, d, d):
            S = np.stack([spd_matrix(c, f"covs[{k}]") for k, c in enumerate(covs_in)])
        else:
            raise ValueError(f"covs must be a scalar, shape ({K},) or ({K}, {d}, {d}); got {covs_in.shape}")
        if weights is None:
            w = np.full(K, 1.0 / K)
        else:
            w = finite_array(weights, "weights", shape=(K,))
            if np.any(w < 0) or w.sum() <= 0:
                raise ValueError(f"weights must be non-negative with a positive sum, got {w.tolist()}")
            w = w / w.sum()
        self.dim, self.K = d, K
        self.means, self.covs, self.weights = _frozen(means), _frozen(S), _frozen(w)
        self.precisions = _frozen(_precisions(S))
        logc = np.log(np.where(w > 0, w, 1e-300)) - 0.5 * np.linalg.slogdet(2 * np.pi * S)[1]
        logc[w == 0] = -np.inf
        self._logc = _frozen(logc)
        # the compiled kernels see the components of positive weight only: a log-weight of
        # -inf would start their online log-sum-exp at exp(-inf - (-inf)) = NaN
        live = np.flatnonzero(w > 0)
        blocks = [np.concatenate([[self._logc[k]], means[k], self.precisions[k].ravel()]) for k in live]
        self.params = np.concatenate([[float(live.size)]] + blocks)

    # constructors -------------------------------------------------------------
    @classmethod
    def ring(cls, n: int = 8, radius: float = 4.0, sigma: float = 0.5):
        """``n`` equal Gaussians on a circle (the paper's eight Gaussians: defaults)."""
        n = positive_int(n, "n", maximum=MAX_COMPONENTS)
        ang = 2 * np.pi * np.arange(n) / n
        return cls(radius * np.stack([np.cos(ang), np.sin(ang)], axis=1), sigma)

    @classmethod
    def square_grid(cls, n_side: int = 3, spacing: float = 3.0, sigma: float = 0.5):
        """``n_side**2`` equal Gaussians on a square lattice centred at the origin."""
        n_side = positive_int(n_side, "n_side", maximum=int(MAX_COMPONENTS**0.5))
        c = spacing * (np.arange(n_side) - (n_side - 1) / 2)
        X, Y = np.meshgrid(c, c, indexing="ij")
        return cls(np.stack([X.ravel(), Y.ravel()], axis=1), sigma)

    @classmethod
    def paper_A(cls, sigma: float = 0.5):
        """The paper's expert A: four Gaussians at (+-3, +-3)."""
        return cls([[3, 3], [3, -3], [-3, 3], [-3, -3]], sigma)

    @classmethod
    def paper_B(cls, sigma: float = 0.5):
        """The paper's expert B: four Gaussians at (0, +-4), (+-4, 0)."""
        return cls([[0, 4], [0, -4], [4, 0], [-4, 0]], sigma)

    @classmethod
    def smoothed_data(cls, samples, bandwidth: float):
        """The energy of ``rho_hat * K_h``: the empirical law of ``samples`` (n, d)
        convolved with an isotropic Gaussian kernel of standard deviation ``bandwidth``."""
        samples = finite_array(samples, "samples")
        return cls(samples, positive_float(bandwidth, "bandwidth"))

    # numpy ---------------------------------------------------------------------
    def _logits(self, X):
        Y = X[:, None, :] - self.means[None]  # (N, K, d)
        G = np.einsum("kij,nkj->nki", self.precisions, Y)
        return self._logc[None] - 0.5 * np.einsum("nki,nki->nk", Y, G), G

    def _resp(self, X):
        L, G = self._logits(X)
        lse = logsumexp(L, axis=1)
        return np.exp(L - lse[:, None]), G, lse

    def _value(self, X):
        if X.shape[0] >= COMPILED_MIN_POINTS:  # grids: no (N, K, d) temporaries, all cores
            return _value_loop(self.kernels)(np.ascontiguousarray(X), self.params)
        return -logsumexp(self._logits(X)[0], axis=1)

    def _grad(self, X):
        if X.shape[0] >= COMPILED_MIN_POINTS:  # particles on the vectorised path, grids: all cores
            return _grad_loop(self.kernels)(np.ascontiguousarray(X), self.params)
        r, G, _ = self._resp(X)
        return np.einsum("nk,nki->ni", r, G)

    def _lap(self, X):
        r, G, _ = self._resp(X)
        gbar = np.einsum("nk,nki->ni", r, G)
        tr = np.trace(self.precisions, axis1=1, axis2=2)
        return np.einsum("nk,nk->n", r, tr[None] - np.sum((G - gbar[:, None]) ** 2, axis=2))

    def _hess(self, X):
        r, G, _ = self._resp(X)
        D = G - np.einsum("nk,nki->ni", r, G)[:, None]
        return np.einsum("nk,kij->nij", r, self.precisions) - np.einsum("nk,nki,nkj->nij", r, D, D)

    def log_partition(self, temperature: float = 1.0) -> float:
        if positive_float(temperature, "temperature") == 1.0:
            return 0.0
        return super().log_partition(temperature)

    def sample(self, n: int, seed=None) -> np.ndarray:
        """``n`` exact samples of ``rho* = sum_k w_k N(m_k, S_k)`` (T = 1)."""
        n = sample_count(n, self.dim)
        rng = np.random.default_rng(seed)
        k = rng.choice(self.K, size=n, p=self.weights)
        L = np.linalg.cholesky(self.covs)
        z = rng.standard_normal((n, self.dim))
        return self.means[k] + np.einsum("nij,nj->ni", L[k], z)

    def _build_kernels(self):
        return _GM_KERNELS

    def to_spec(self):
        return {"type": "GaussianMixture", "means": self.means.tolist(), "covs": self.covs.tolist(),
                "weights": self.weights.tolist()}


register(Quadratic)
register(DoubleWell)
register(GaussianMixture, ("ring", "square_grid", "paper_A", "paper_B"))
