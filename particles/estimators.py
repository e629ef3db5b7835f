"""Estimators from particles, each with an error bar.

``KL(rho || rho*) = -H(rho) - E_rho[log rho*]`` with ``log rho* = -U/T - log Z``:

* :func:`kl_knn`: Kozachenko-Leonenko k-NN entropy (``scipy.spatial.cKDTree``)
  plus the exact cross term; the only nearly unbiased one for narrow modes.
* :func:`kl_kde`: FFT-binned Gaussian KDE plug-in (over-smooths: biased).
* :func:`kl_histogram`: histogram plug-in (biased the same way).
* :func:`kl_tracked`: from log-densities carried along a deterministic
  ensemble: unbiased, no density estimation.

Error bars are CLT standard errors of the per-particle terms (the k-NN terms
are only weakly dependent); :func:`bootstrap` gives a resampling one for any
estimator.  ``log Z`` comes from the energy's closed form, or pass
``log_partition`` (for example ``Grid.log_partition(energy, T)``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln

from fokkerplanck._core.validate import points, positive_int

__all__ = ["Estimate", "knn_entropy", "kl_knn", "kl_kde", "kl_histogram", "kl_binned", "kl_tracked", "ratio", "moments",
           "bootstrap"]


@dataclass(frozen=True)
class Estimate:
    """A value with its standard error and the method that produced it."""

    value: float
    stderr: float
    method: str

    def __iter__(self):
        yield self.value
        yield self.stderr

    def __repr__(self):
        return f"{self.value:.6g} +- {self.stderr:.2g} ({self.method})"


def _se(terms) -> float:
    return float(np.std(terms, ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else np.inf


def _log_z(energy, T, log_partition):
    if log_partition is not None:
        return float(log_partition)
    try:
        return energy.log_partition(T)
    except NotImplementedError as exc:
        raise ValueError(f"KL needs log Z: {exc}; pass log_partition=...") from None


def _knn_log_dist(X, k: int, workers: int = -1):
    from scipy.spatial import cKDTree  # 0.3 s to import: only where a k-NN estimate is asked for

    tree = cKDTree(X, leafsize=16, balanced_tree=False, compact_nodes=False)
    dist, _ = tree.query(X, k=[k + 1], workers=workers)
    dist = dist[:, 0]
    if np.any(dist == 0):
        raise ValueError(f"{int(np.sum(dist == 0))} points have a duplicate at distance 0: "
                         "the k-NN entropy estimator needs distinct points")
    return np.log(dist)


def _kl_entropy_terms(X, k: int) -> np.ndarray:
    """Per-point Kozachenko-Leonenko terms ``psi(N) - psi(k) + log V_d + d log eps_k(x_i)``;
    their mean is the entropy estimate."""
    n, d = X.shape
    k = positive_int(k, "k")
    if k >= n:
        raise ValueError(f"the k-NN estimator needs more than k = {k} points, got {n}")
    log_vd = 0.5 * d * math.log(math.pi) - gammaln(0.5 * d + 1)
    return digamma(n) - digamma(k) + log_vd + d * _knn_log_dist(X, k)


def knn_entropy(x, k: int = 1) -> Estimate:
    """Kozachenko-Leonenko: ``H = psi(N) - psi(k) + log V_d + d mean(log eps_k)``."""
    X, _ = points(x, None)
    terms = _kl_entropy_terms(X, k)
    return Estimate(float(terms.mean()), _se(terms), f"kNN(k={k})")


def _cross(X, energy, T, log_partition):
    return -energy.value(X) / T - _log_z(energy, T, log_partition)  # log rho*(x)


def kl_knn(x, energy, temperature: float = 1.0, *, k: int = 1, log_partition=None, max_points: int | None = None,
           seed=0) -> Estimate:
    """``KL(rho || rho*)`` from samples of ``rho``: k-NN entropy + exact cross term.
    ``max_points``: use a uniform random subsample of that many points (without
    replacement) when there are more; the method label says so, and the standard
    error is the subsample's."""
    X, _ = points(x, energy.dim)
    label = f"kNN(k={k}) + exact cross term"
    if max_points is not None and X.shape[0] > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(X.shape[0], int(max_points), replace=False))
        label += f", on a subsample of {int(max_points)} of {X.shape[0]} points"
        X = X[idx]
    # per-point terms: log rho_hat(x_i) - log rho*(x_i)
    terms = -_kl_entropy_terms(X, k) - _cross(X, energy, temperature, log_partition)
    return Estimate(float(terms.mean()), _se(terms), label)


def _binned_density(X, bins, bandwidth):
    """FFT-binned (linear binning) Gaussian KDE on a regular grid; returns (edges-based centres, density)."""
    n, d = X.shape
    lo = X.min(axis=0)
    hi = X.max(axis=0)
    sd = X.std(axis=0, ddof=1)
    if bandwidth is None:  # Scott's rule per axis
        bw = sd * n ** (-1.0 / (d + 4))
    else:
        bw = np.broadcast_to(np.asarray(bandwidth, dtype=float), (d,))
    pad = 4 * bw
    lo, hi = lo - pad, hi + pad
    h = (hi - lo) / (bins - 1)
    # linear binning
    pos = (X - lo) / h
    i0 = np.floor(pos).astype(int)
    f = pos - i0
    grid = np.zeros((bins,) * d)
    for corner in range(2 ** d):
        idx, w = [], np.ones(n)
        for a in range(d):
            bit = (corner >> a) & 1
            idx.append(np.clip(i0[:, a] + bit, 0, bins - 1))
            w = w * (f[:, a] if bit else 1 - f[:, a])
        np.add.at(grid, tuple(idx), w)
    grid /= n * np.prod(h)
    # Gaussian kernel by FFT (zero padding to avoid wrap-around)
    from scipy.signal import fftconvolve

    kern = np.ones((1,) * d)
    for a in range(d):
        m = int(np.ceil(4 * bw[a] / h[a]))
        t = np.arange(-m, m + 1) * h[a]
        k1 = np.exp(-0.5 * (t / bw[a]) ** 2)
        k1 /= k1.sum()
        shape = [1] * d
        shape[a] = k1.size
        kern = kern * k1.reshape(shape)
    dens = np.maximum(fftconvolve(grid, kern, mode="same"), 0.0)
    axes = [lo[a] + h[a] * np.arange(bins) for a in range(d)]
    return axes, dens


def kl_kde(x, energy, temperature: float = 1.0, *, bins: int = 256, bandwidth=None, log_partition=None) -> Estimate:
    """FFT-binned Gaussian KDE plug-in: ``mean(log rho_kde(x_i) - log rho*(x_i))``."""
    from scipy.interpolate import RegularGridInterpolator

    X, _ = points(x, energy.dim)
    axes, dens = _binned_density(X, bins, bandwidth)
    rho = RegularGridInterpolator(axes, dens, bounds_error=False, fill_value=0.0)(X)
    with np.errstate(divide="ignore"):
        terms = np.log(rho) - _cross(X, energy, temperature, log_partition)
    return Estimate(float(terms.mean()), _se(terms), f"FFT-binned KDE ({bins}^{X.shape[1]} bins)")


def kl_binned(counts, grid, energy, temperature: float = 1.0) -> Estimate:
    """``KL(p || pi)`` between the binned laws: ``p`` the particle counts per cell of
    ``grid`` (e.g. ``Ensemble.histograms[j]``, mergeable across shards), ``pi`` the
    Gibbs mass of each cell.  A lower bound of the continuous KL up to the
    sampling bias (+ (cells with mass - 1) / (2 N) for a multinomial); its
    standard error is the delta method's, ``sd(log(p/pi)) / sqrt(N)``."""
    c = np.asarray(counts, dtype=float)
    if c.shape != grid.shape:
        raise ValueError(f"counts must have the grid's shape {grid.shape}, got {c.shape}")
    n = c.sum()
    if n < 2:
        return Estimate(float("nan"), float("nan"), "binned: fewer than 2 particles in the grid")
    p = c.ravel() / n
    log_pi = np.log(grid.gibbs(energy, temperature).ravel() * grid.cell_volume)
    m = p > 0
    lr = np.log(p[m]) - log_pi[m]
    val = float(np.sum(p[m] * lr))
    var = float(np.sum(p[m] * lr**2) - val**2)
    return Estimate(val, math.sqrt(max(var, 0.0) / n), f"binned on {grid.shape} cells (mergeable counts)")


def kl_histogram(x, energy, temperature: float = 1.0, *, bins: int = 64, log_partition=None) -> Estimate:
    """Histogram plug-in: ``mean(log hist(x_i) - log rho*(x_i))``."""
    X, _ = points(x, energy.dim)
    H, edges = np.histogramdd(X, bins=bins, density=True)
    idx = tuple(np.clip(np.searchsorted(e, X[:, a], side="right") - 1, 0, len(e) - 2) for a, e in enumerate(edges))
    terms = np.log(H[idx]) - _cross(X, energy, temperature, log_partition)
    return Estimate(float(terms.mean()), _se(terms), f"histogram ({bins} bins per axis)")


def kl_tracked(x, logrho, energy, temperature: float = 1.0, *, log_partition=None) -> Estimate:
    """Unbiased KL from a deterministic ensemble carrying ``log rho_t(X_t)``."""
    X, _ = points(x, energy.dim)
    lr = np.asarray(logrho, dtype=float)
    if lr.shape != (X.shape[0],):
        raise ValueError(f"logrho must have shape ({X.shape[0]},), got {lr.shape}")
    terms = lr - _cross(X, energy, temperature, log_partition)
    return Estimate(float(terms.mean()), _se(terms), "tracked log-density")


def ratio(x, energy, temperature: float = 1.0) -> dict:
    """``E[lap U]``, ``E[|grad U|^2]`` and ``R = T E[lap U] / E[|grad U|^2]`` with CLT errors
    (delta method for the ratio)."""
    X, _ = points(x, energy.dim)
    a, b = energy.lap_and_grad2(X)
    n = X.shape[0]
    ma, mb = a.mean(), b.mean()
    if mb == 0:  # every particle at a critical point: R undefined
        nan = Estimate(np.nan, np.nan, "ratio undefined: E|grad U|^2 = 0")
        return {"e_lap": Estimate(float(ma), _se(a), "mean"), "e_grad2": Estimate(0.0, 0.0, "mean"), "ratio": nan}
    R = temperature * ma / mb
    C = np.cov(np.stack([a, b])) / n
    var_R = temperature**2 * (C[0, 0] / mb**2 - 2 * ma * C[0, 1] / mb**3 + ma**2 * C[1, 1] / mb**4)
    return {"e_lap": Estimate(float(ma), _se(a), "mean"), "e_grad2": Estimate(float(mb), _se(b), "mean"),
            "ratio": Estimate(float(R), float(math.sqrt(max(var_R, 0.0))), "ratio of means (delta method)")}


def moments(x) -> dict:
    """Mean and covariance with standard errors (the covariance's from the fourth moments)."""
    X, _ = points(x, None)
    n = X.shape[0]
    m = X.mean(axis=0)
    Y = X - m
    C = Y.T @ Y / (n - 1)
    P = np.einsum("ni,nj->nij", Y, Y)
    se_c = P.std(axis=0, ddof=1) / math.sqrt(n)
    return {"mean": m, "mean_se": Y.std(axis=0, ddof=1) / math.sqrt(n), "cov": C, "cov_se": se_c}


def bootstrap(estimator, x, *args, n_boot: int = 50, seed=0, **kw) -> Estimate:
    """Bootstrap standard error of any ``estimator(x, *args, **kw) -> Estimate``."""
    X = np.asarray(x)
    rng = np.random.default_rng(seed)
    base = estimator(X, *args, **kw)
    vals = []
    for _ in range(n_boot):
        Xb = X[rng.integers(0, X.shape[0], X.shape[0])]
        Xb = Xb + 1e-12 * rng.standard_normal(Xb.shape)  # break exact duplicates for k-NN
        vals.append(estimator(Xb, *args, **kw).value)
    return Estimate(base.value, float(np.std(vals, ddof=1)), base.method + f", bootstrap({n_boot})")
