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

__all__ = [
    "RESOLUTION_SIGMAS",
    "DuplicatePointsError",
    "Estimate",
    "FrequencyErrors",
    "autocorrelation_time",
    "batch_means_se",
    "bootstrap",
    "effective_sample_size",
    "frequency_errors",
    "kl_binned",
    "kl_histogram",
    "kl_kde",
    "kl_knn",
    "kl_tracked",
    "knn_entropy",
    "moments",
    "ratio",
    "split_rhat",
    "wilson_interval",
]

RESOLUTION_SIGMAS = 2.0  # a KL estimate with value - RESOLUTION_SIGMAS * stderr <= 0 is below resolution


@dataclass(frozen=True)
class Estimate:
    """A value with its standard error and the method that produced it.

    ``below_resolution`` (KL estimates that can come out <= 0, :func:`kl_knn`): True when
    ``value - RESOLUTION_SIGMAS * stderr <= 0``, i.e. the estimate does not resolve the
    KL from 0 (a figure should draw :attr:`upper_bound` rather than the value); None where
    the notion does not apply.  The value and the error bar are never altered by it."""

    value: float
    stderr: float
    method: str
    below_resolution: bool | None = None

    def __iter__(self):
        yield self.value
        yield self.stderr

    @property
    def upper_bound(self) -> float:
        """``max(value, 0) + RESOLUTION_SIGMAS * stderr``: what an estimate below resolution supports."""
        return max(self.value, 0.0) + RESOLUTION_SIGMAS * self.stderr

    def __repr__(self):
        flag = f", below resolution: KL < {self.upper_bound:.2g}" if self.below_resolution else ""
        return f"{self.value:.6g} +- {self.stderr:.2g} ({self.method}{flag})"


def _below_resolution(value: float, stderr: float) -> bool:
    """Not resolved from 0: ``value - RESOLUTION_SIGMAS * stderr <= 0`` (NaN counts as unresolved)."""
    return not (value - RESOLUTION_SIGMAS * stderr > 0)


def _se(terms) -> float:
    return float(np.std(terms, ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else np.inf


def _log_z(energy, T, log_partition):
    if log_partition is not None:
        return float(log_partition)
    try:
        return energy.log_partition(T)
    except NotImplementedError as exc:
        raise ValueError(f"KL needs log Z: {exc}; pass log_partition=...") from None


class DuplicatePointsError(ValueError):
    """Points repeated exactly: the k-NN estimators take logs of distances, and need distinct points."""


def _knn_log_dist(X, k: int, workers: int = -1):
    from scipy.spatial import cKDTree  # 0.3 s to import: only where a k-NN estimate is asked for

    tree = cKDTree(X, leafsize=16, balanced_tree=False, compact_nodes=False)
    dist, _ = tree.query(X, k=[k + 1], workers=workers)
    dist = dist[:, 0]
    if np.any(dist == 0):
        raise DuplicatePointsError(f"{int(np.sum(dist == 0))} points have a duplicate at distance 0: "
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
    """Kozachenko-Leonenko: ``H = psi(N) - psi(k) + log V_d + d mean(log eps_k)``; ``x`` of
    shape (N, d), or (N,) for N points on the line (as :func:`kl_knn` takes them for a 1D energy)."""
    X, _ = points(x, 1 if np.ndim(x) == 1 else None)
    terms = _kl_entropy_terms(X, k)
    return Estimate(float(terms.mean()), _se(terms), f"kNN(k={k})")


def _cross(X, energy, T, log_partition):
    return -energy.value(X) / T - _log_z(energy, T, log_partition)  # log rho*(x)


def kl_knn(x, energy, temperature: float = 1.0, *, k: int = 1, log_partition=None, max_points: int | None = None,
           seed=0) -> Estimate:
    """``KL(rho || rho*)`` from samples of ``rho``: k-NN entropy + exact cross term.
    The estimate can be <= 0 (the k-NN entropy is unbiased only asymptotically): the
    result's ``below_resolution`` is True when ``value - 2 stderr <= 0`` (draw
    ``upper_bound``, not the value); value and stderr are the plain estimator's.
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
    value, se = float(terms.mean()), _se(terms)
    return Estimate(value, se, label, _below_resolution(value, se))


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


def bootstrap(estimator, x, *args, n_boot: int = 50, seed=0, resample: str | None = None, **kw) -> Estimate:
    """Resampling standard error of any ``estimator(x, *args, **kw) -> Estimate`` (the value is
    the estimator's on all of ``x``).

    ``resample='replacement'``: the bootstrap, ``n_boot`` resamples of N points drawn with
    replacement; for estimators that are smooth in the empirical law (means, moments, the KDE
    and histogram plug-ins).  ``resample='half'``: half-sampling (the delete-d jackknife with
    d = N - N//2), ``n_boot`` subsets of m = N//2 distinct points, ``se = sd(values)
    sqrt(m / (N - m))``: exactly the standard error of a mean (the finite-population factor),
    and for the k-NN estimators conservative by at most ``sqrt(2)`` (their local noise is
    drawn afresh in each half).  The k-NN estimators need it: a resample with replacement
    repeats points, a repeated point's nearest neighbour is its own copy, and the estimate
    is no longer about the law.  Default: ``'half'`` for :func:`knn_entropy` and
    :func:`kl_knn`, ``'replacement'`` otherwise."""
    if resample is None:
        resample = "half" if estimator in (knn_entropy, kl_knn) else "replacement"
    if resample not in ("replacement", "half"):
        raise ValueError(f"resample must be 'replacement' or 'half', got {resample!r}")
    n_boot = positive_int(n_boot, "n_boot")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2 for a spread, got {n_boot}")
    X = np.asarray(x)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    base = estimator(X, *args, **kw)
    vals = []
    if resample == "half":
        m = n // 2
        if m < 2:
            raise ValueError(f"half-sampling needs at least 4 points, got {n}")
        for _ in range(n_boot):
            vals.append(estimator(X[np.sort(rng.choice(n, m, replace=False))], *args, **kw).value)
        se = float(np.std(vals, ddof=1) * math.sqrt(m / (n - m)))
        label = f", half-sampling({n_boot})"
    else:
        for _ in range(n_boot):
            try:
                vals.append(estimator(X[rng.integers(0, n, n)], *args, **kw).value)
            except DuplicatePointsError as exc:
                raise ValueError(f"{exc}; a resample with replacement repeats points: "
                                 "use bootstrap(..., resample='half')") from None
        se = float(np.std(vals, ddof=1))
        label = f", bootstrap({n_boot})"
    flag = None if base.below_resolution is None else _below_resolution(base.value, se)
    return Estimate(base.value, se, base.method + label, flag)


# --- frequencies of a discrete law: binomial error bars ------------------------------------

@dataclass(frozen=True)
class FrequencyErrors:
    """Per bin: ``counts`` out of ``n``, frequencies ``freq = counts / n``, the standard
    error ``se`` and the Wilson score interval ``[lo, hi]`` at ``sigmas`` standard
    deviations.  With the exact probabilities ``exact``: ``se = sqrt(p (1 - p) / n)`` (the
    exact law's binomial error, what a z-score against the law needs) and
    ``z = (freq - p) / se``; without them, ``se`` is the half-width of the Wilson interval
    (never 0, also for an empty bin) and ``z`` is None.  ``method`` says which."""

    counts: np.ndarray
    n: int
    freq: np.ndarray
    se: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    exact: np.ndarray | None
    z: np.ndarray | None
    sigmas: float
    method: str


def wilson_interval(counts, n, sigmas: float = 1.0):
    """The Wilson score interval ``(lo, hi)`` of a binomial proportion, ``counts`` successes
    out of ``n``, at ``sigmas`` standard deviations: non-degenerate at 0 and n counts
    (``[0, sigmas^2 / (n + sigmas^2)]`` for an empty bin)."""
    c = np.asarray(counts, dtype=float)
    n = float(n)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    z2 = float(sigmas) ** 2
    f = c / n
    centre = (f + z2 / (2 * n)) / (1 + z2 / n)
    half = math.sqrt(z2) / (1 + z2 / n) * np.sqrt(np.maximum(f * (1 - f), 0.0) / n + z2 / (4 * n * n))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def frequency_errors(counts, exact=None, *, sigmas: float = 1.0) -> FrequencyErrors:
    """Error bars of the frequencies of ``counts`` (one count per bin, empty bins kept) of
    ``n = sum(counts)`` independent draws.  ``exact``: the exact probabilities of the bins
    (then the standard errors are the exact law's, ``sqrt(p (1 - p) / n)``, and ``z`` the
    z-scores; not the observed frequency's, which puts a bin with few counts many
    "standard errors" away and an empty one infinitely many).  Wilson intervals otherwise."""
    if not float(sigmas) > 0:
        raise ValueError(f"sigmas must be positive, got {sigmas!r}")
    c = np.asarray(counts)
    if c.ndim != 1 or c.size == 0 or np.any(c < 0) or not np.all(np.isfinite(c)):
        raise ValueError("counts must be a non-empty 1-D array of non-negative counts")
    n = round(float(c.sum()))
    if n < 1:
        raise ValueError("counts sum to 0: no draws")
    c = c.astype(float)
    f = c / n
    lo, hi = wilson_interval(c, n, sigmas)
    if exact is None:
        se = (hi - lo) / (2.0 * float(sigmas))
        return FrequencyErrors(c, n, f, se, lo, hi, None, None, float(sigmas),
                               f"Wilson score interval ({sigmas:g} sigma); se = its half-width / sigmas")
    p = np.asarray(exact, dtype=float)
    if p.shape != c.shape:
        raise ValueError(f"exact must have one probability per bin, shape {c.shape}, got {p.shape}")
    if np.any(p < -1e-12) or np.any(p > 1 + 1e-12) or not np.all(np.isfinite(p)):
        raise ValueError(f"exact probabilities must lie in [0, 1], got values in [{p.min():.6g}, {p.max():.6g}]")
    p = np.clip(p, 0.0, 1.0)   # a law summed from exact probabilities can end 1e-16 past 1
    se = np.sqrt(p * (1 - p) / n)
    d = f - p
    z = np.zeros_like(d)
    pos = se > 0
    z[pos] = d[pos] / se[pos]
    z[~pos & (d != 0)] = np.copysign(np.inf, d[~pos & (d != 0)])  # counts where the law has none
    return FrequencyErrors(c, n, f, se, lo, hi, p, z, float(sigmas),
                           "exact law's binomial error sqrt(p (1 - p) / n); Wilson interval of the counts")


# --- correlated samples (MCMC chains): autocorrelation time, ESS, batch means, split R-hat -------

def _chains(x) -> np.ndarray:
    """``x`` (T,) one chain or (T, m) m chains, as a float (T, m) array."""
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 4:
        raise ValueError(f"a chain needs shape (T,) or (T, chains) with T >= 4, got {np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ValueError("chain values must be finite")
    return a


def _autocorrelation(a: np.ndarray) -> np.ndarray:
    """Autocorrelation ``rho(t)``, t = 0..T-1, of the chains (T, m) about the grand mean,
    averaged over the chains (FFT; biased 1/T normalisation, as Geyer's estimator wants)."""
    T = a.shape[0]
    y = a - a.mean()
    nfft = 1 << (2 * T - 1).bit_length()
    F = np.fft.rfft(y, n=nfft, axis=0)
    acov = np.fft.irfft(F * np.conj(F), n=nfft, axis=0)[:T].mean(axis=1) / T
    if acov[0] <= 0:
        return np.zeros(T)
    return acov / acov[0]


def autocorrelation_time(x) -> float:
    """Integrated autocorrelation time ``tau = 1 + 2 sum_t rho(t)`` (in samples) of one
    chain (T,) or of m chains (T, m) of the same law, by Geyer's initial monotone
    sequence: pair sums ``rho(2k) + rho(2k+1)`` summed while positive and made
    non-increasing.  ``tau = 1`` for independent samples; an AR(1) chain with coefficient
    ``phi`` has ``tau = (1 + phi) / (1 - phi)``.  Chains with different means (not yet
    mixed) keep a positive autocorrelation: tau grows, so the error bars grow with it."""
    a = _chains(x)
    if np.all(a == a[0, 0]):
        return 1.0
    rho = _autocorrelation(a)
    T = rho.size
    pairs = rho[: 2 * (T // 2)].reshape(-1, 2).sum(axis=1)
    total, last = 0.0, np.inf
    for g in pairs:
        if g <= 0:
            break
        last = min(last, g)
        total += last
    return float(max(2.0 * total - 1.0, 1.0 / T))


def effective_sample_size(x) -> float:
    """``T m / tau``: the number of independent draws worth as much as the chains (T, m)."""
    a = _chains(x)
    return float(a.size / autocorrelation_time(a))


def batch_means_se(x, n_batches: int | None = None) -> float:
    """Standard error of the mean of one chain (T,) or m chains (T, m) by batch means:
    each chain is cut into ``n_batches`` consecutive batches (default ``floor(sqrt(T))``
    for one chain, and enough for 30 batches in all for several); the batch means are
    nearly independent once a batch is much longer than the autocorrelation time, and
    ``se = sd(batch means) / sqrt(batches)``."""
    a = _chains(x)
    T, m = a.shape
    if n_batches is None:
        n_batches = int(math.sqrt(T)) if m == 1 else max(1, min(int(math.sqrt(T)), -(-30 // m)))
    b = positive_int(n_batches, "n_batches")
    L = T // b
    if L < 1 or b * m < 2:
        raise ValueError(f"{b} batches of {T} samples in {m} chain(s): need batches of >= 1 sample and >= 2 in all")
    means = a[: b * L].reshape(b, L, m).mean(axis=1).ravel()
    return float(np.std(means, ddof=1) / math.sqrt(means.size))


def split_rhat(x) -> float:
    """Split R-hat (Gelman et al.): each of the m chains (T, m) cut in halves, then
    ``sqrt(((n - 1)/n W + B/n) / W)`` over the 2m half-chains of n samples (W the mean
    within-chain variance, B/n the variance of the half-chain means).  Close to 1 (< 1.01)
    when the chains sample one law; > 1 when they still drift or have not mixed."""
    a = _chains(x)
    n = a.shape[0] // 2
    h = np.concatenate([a[:n], a[a.shape[0] - n:]], axis=1)
    W = float(np.mean(np.var(h, axis=0, ddof=1)))
    B_n = float(np.var(h.mean(axis=0), ddof=1))
    if W <= 0:
        return 1.0 if B_n == 0 else math.inf
    return float(math.sqrt(((n - 1) / n * W + B_n) / W))
