"""Wasserstein-2 distances in one dimension, exactly, through quantile functions.

In 1D, ``W2(a, b)^2 = int_0^1 (F_a^{-1}(u) - F_b^{-1}(u))^2 du``.  A grid density
(constant on each cell) has a piecewise-linear CDF, hence a piecewise-linear quantile
function; an empirical law has a piecewise-constant one.  On the union of their
breakpoints both are linear in ``u``, and the square of a linear function integrates
exactly (``(u1 - u0)(f0^2 + f0 f1 + f1^2) / 3``), so the distances below are exact
for the laws they are given (no quadrature, no binning of samples):

* :func:`w2_grid` between two densities on one 1D grid;
* :func:`w2_samples_grid` between samples and a grid density, with a bootstrap
  standard error over the samples;
* :func:`w2_samples` between two equal-size samples (sorted pairing).

Closed form used by the tests: ``W2(N(m1, s1^2), N(m2, s2^2))^2 = (m1 - m2)^2 + (s1 - s2)^2``.

In 2D and more there is no quantile shortcut: :func:`w2_discrete` solves the exact
optimal-transport linear program between two weighted point sets with POT
(``ot.emd2``, network simplex; the optional extra ``ot``), which serves grid histograms
(cell masses at cell centres; :func:`w2_grids`), samples against a grid
(:func:`w2_samples_grid_nd`, with a bootstrap error) and samples against samples.  The
cost matrix has (size a) x (size b) entries, so these are for a few thousand points a
side (refused beyond :data:`MAX_OT_ENTRIES`).  Closed form in any dimension:
``W2^2 = |m1 - m2|^2 + tr(S1 + S2 - 2 (S2^1/2 S1 S2^1/2)^1/2)`` (:func:`gaussian_w2_nd`).

Cell masses at cell centres are lattice measures: moving mass by less than a cell is not
possible there, so :func:`w2_grids` is accurate (error O(h^2), measured 32 -> 64 cells:
1.4e-2 -> 3.6e-3 at W2 = 1.19) only while W2 is large against the cell size.  For nearby
laws it is dominated by the lattice, ``~ sqrt(W2 h)`` (Gaussians 0.05 apart: 0.185, 0.131,
0.093 on 16, 32, 64 cells, converging at order 1/2).  Small distances -- the homotopy
matching error, a solver against its reference -- take :func:`w2_linearised` instead: the
linearisation of W2 at the midpoint law, ``W2(a, b) ~ ||b - a||_{H^-1(rho)}``,
``rho = (a + b)/2``, i.e. ``sqrt(int rho |grad phi|^2)`` with ``-div(rho grad phi) = b - a``
solved on the grid (the weighted Poisson solve of :mod:`fokkerplanck.flows.potential_flow`,
second order in h).  Its error relative to W2 is second order in the distance (exact for
translations to that order); it is reported with :func:`w2_grids` where both apply.
"""
from __future__ import annotations

import numpy as np

from fokkerplanck._core.validate import finite_array, positive_int
from fokkerplanck.grid import Grid
from fokkerplanck.operators.fluxes import faces
from fokkerplanck.operators.poisson import solve_pinned, weighted_laplacian

__all__ = ["w2_grid", "w2_samples_grid", "w2_samples", "gaussian_w2", "clean_density", "gaussian_w2_nd", "w2_discrete", "w2_grids",
           "w2_samples_grid_nd", "w2_linearised", "pooled", "MAX_OT_ENTRIES"]

MAX_OT_ENTRIES = 25_000_000   # cost-matrix entries (200 MB) of one exact transport problem


def clean_density(grid, rho) -> np.ndarray:
    """``rho`` normalised to mass 1, with round-off negatives (above -1e-12 of its maximum,
    what the exact solvers' spectral phase leaves) set to 0; larger negatives are kept, so
    that the W2 functions refuse them."""
    r = np.asarray(rho, dtype=float)
    if 0 > r.min() > -1e-12 * r.max():
        r = np.maximum(r, 0.0)
    return r / (r.sum() * grid.cell_volume)


def gaussian_w2(m1: float, s1: float, m2: float, s2: float) -> float:
    """W2 between N(m1, s1^2) and N(m2, s2^2) in 1D."""
    return float(np.hypot(m1 - m2, s1 - s2))


def _grid_cdf(grid, rho, name):
    if grid.ndim != 1:
        raise ValueError(f"exact W2 here is one-dimensional; the grid has {grid.ndim} dimensions")
    r = finite_array(rho, name, shape=grid.shape)
    if r.min() < 0:
        raise ValueError(f"{name} has negative values (min {r.min():.3g})")
    mass = r * grid.cell_volume
    tot = mass.sum()
    if not tot > 0:
        raise ValueError(f"{name} has no mass")
    if abs(tot - 1) > 1e-6:
        raise ValueError(f"{name} has mass {tot:.9g}, not 1 (normalise it first)")
    edges = np.linspace(grid.bounds[0][0], grid.bounds[0][1], grid.cells[0] + 1)
    c = np.cumsum(mass)
    cdf = np.concatenate([[0.0], c / c[-1]])   # ends at 1 exactly and stays monotone (rounding is)
    return edges, cdf


def _quantile_ends(edges, cdf, u):
    """The quantile function at both ends of every interval ``[u_j, u_{j+1}]``, where ``u``
    contains every breakpoint of ``cdf``: each interval lies in one cell of positive mass,
    on which the quantile is linear (a zero-mass cell is a jump of the quantile, between
    intervals, so it is never evaluated across)."""
    # the cell of each interval from its left end (a midpoint can round onto the right end)
    i = np.clip(np.searchsorted(cdf, u[:-1], side="right") - 1, 0, edges.size - 2)
    width = cdf[i + 1] - cdf[i]   # > 0: cdf[i] <= u_j < u_{j+1} <= cdf[i + 1]
    h = edges[i + 1] - edges[i]
    return edges[i] + (u[:-1] - cdf[i]) / width * h, edges[i] + (u[1:] - cdf[i]) / width * h


def _integrate_sq(u, d0, d1):
    """``int f^2 du`` for f linear on each interval of ``u`` with end values d0, d1."""
    return float(np.sum(np.diff(u) * (d0 * d0 + d0 * d1 + d1 * d1) / 3.0))


def w2_grid(grid, rho_a, rho_b) -> float:
    """Exact W2 between two densities on the same 1D grid (constant on cells)."""
    ea, ca = _grid_cdf(grid, rho_a, "rho_a")
    eb, cb = _grid_cdf(grid, rho_b, "rho_b")
    u = np.union1d(ca, cb)
    a0, a1 = _quantile_ends(ea, ca, u)
    b0, b1 = _quantile_ends(eb, cb, u)
    return float(np.sqrt(max(_integrate_sq(u, a0 - b0, a1 - b1), 0.0)))


def _w2_sorted_grid(xs, edges, cdf):
    n = xs.size
    u = np.union1d(np.arange(n + 1) / n, cdf)
    # the empirical quantile is xs[i] on [i/n, (i+1)/n): constant on every interval of u
    idx = np.minimum(np.searchsorted(np.arange(n + 1) / n, u[:-1], side="right") - 1, n - 1)
    q0, q1 = _quantile_ends(edges, cdf, u)
    return float(np.sqrt(max(_integrate_sq(u, xs[idx] - q0, xs[idx] - q1), 0.0)))


def w2_samples_grid(samples, grid, rho, *, n_boot: int = 100, seed=0) -> tuple[float, float]:
    """``(W2, standard error)`` between the empirical law of 1D ``samples`` and a grid
    density; the error is the bootstrap standard deviation over ``n_boot`` resamples (the
    estimate itself is biased upwards by O(n^-1/2) sampling noise, which the error
    describes, it does not remove it)."""
    x = finite_array(samples, "samples").ravel()
    if x.size < 2:
        raise ValueError("need at least 2 samples")
    edges, cdf = _grid_cdf(grid, rho, "rho")
    w = _w2_sorted_grid(np.sort(x), edges, cdf)
    n_boot = positive_int(n_boot, "n_boot")
    rng = np.random.default_rng(seed)
    boots = [_w2_sorted_grid(np.sort(rng.choice(x, x.size)), edges, cdf) for _ in range(n_boot)]
    return w, float(np.std(boots, ddof=1))


def w2_samples(a, b) -> float:
    """W2 between the empirical laws of two equal-size 1D samples (sorted pairing)."""
    x = np.sort(finite_array(a, "a").ravel())
    y = np.sort(finite_array(b, "b").ravel())
    if x.size != y.size or x.size == 0:
        raise ValueError(f"the samples must have the same, non-zero size, got {x.size} and {y.size}")
    return float(np.sqrt(np.mean((x - y) ** 2)))


# -- any dimension: exact optimal transport by POT ------------------------------------------
COV_RTOL = 1e-12   # a covariance's eigenvalues down to -COV_RTOL * max|S| count as 0 (rounding)


def _covariance(S, name: str, d: int) -> np.ndarray:
    """A covariance matrix (d, d): finite, symmetric, positive semi-definite (a degenerate
    Gaussian is a law; an indefinite matrix is not a covariance)."""
    S = finite_array(S, name)
    if S.ndim == 0:
        S = S.reshape(1, 1)
    if S.shape != (d, d):
        raise ValueError(f"{name} must be a {d}x{d} covariance (the means have dimension {d}), got shape {S.shape}")
    scale = float(np.abs(S).max()) if S.size else 0.0
    if np.abs(S - S.T).max() > COV_RTOL * max(scale, 1e-300):
        raise ValueError(f"{name} must be symmetric; max |S - S^T| = {np.abs(S - S.T).max():.3g}")
    S = 0.5 * (S + S.T)
    lam = float(np.linalg.eigvalsh(S).min())
    if lam < -COV_RTOL * scale:
        raise ValueError(f"{name} must be positive semi-definite (a covariance); its smallest eigenvalue is {lam:.3g}")
    return S


def gaussian_w2_nd(m1, S1, m2, S2) -> float:
    """W2 between N(m1, S1) and N(m2, S2) (Bures-Wasserstein closed form)."""
    from scipy.linalg import sqrtm

    m1, m2 = finite_array(np.atleast_1d(m1), "m1", ndim=1), finite_array(np.atleast_1d(m2), "m2", ndim=1)
    if m1.shape != m2.shape:
        raise ValueError(f"m1 and m2 must have the same dimension, got {m1.shape[0]} and {m2.shape[0]}")
    S1, S2 = _covariance(S1, "S1", m1.shape[0]), _covariance(S2, "S2", m1.shape[0])
    r2 = np.real(sqrtm(S2))
    cross = np.real(sqrtm(r2 @ S1 @ r2))
    return float(np.sqrt(max(np.sum((m1 - m2) ** 2) + np.trace(S1 + S2 - 2 * cross), 0.0)))


def _ot():
    try:
        import ot
    except ImportError:
        raise ImportError("W2 beyond 1D needs POT: pip install 'fokkerplanck[ot]' (or pip install pot)") from None
    return ot


def w2_discrete(xa, wa, xb, wb) -> float:
    """Exact W2 between the discrete laws ``sum wa_i delta(xa_i)`` and ``sum wb_j delta(xb_j)``
    (points (n, d), non-negative weights summing to 1 each)."""
    ot = _ot()
    xa, xb = np.atleast_2d(finite_array(xa, "xa")), np.atleast_2d(finite_array(xb, "xb"))
    wa, wb = finite_array(wa, "wa", shape=(xa.shape[0],)), finite_array(wb, "wb", shape=(xb.shape[0],))
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"the point sets have dimensions {xa.shape[1]} and {xb.shape[1]}")
    for w, name in ((wa, "wa"), (wb, "wb")):
        if w.min() < 0 or abs(w.sum() - 1) > 1e-9:
            raise ValueError(f"{name} must be non-negative weights summing to 1 (sum {w.sum():.12g})")
    if xa.shape[0] * xb.shape[0] > MAX_OT_ENTRIES:
        raise ValueError(f"an exact transport between {xa.shape[0]} and {xb.shape[0]} points needs a "
                         f"{xa.shape[0] * xb.shape[0]:.3g}-entry cost matrix (limit {MAX_OT_ENTRIES:.3g}): "
                         "coarsen the grid or subsample")
    keep_a, keep_b = wa > 0, wb > 0    # empty cells carry no mass and only cost time
    M = ot.dist(xa[keep_a], xb[keep_b], metric="sqeuclidean")
    a, b = wa[keep_a] / wa[keep_a].sum(), wb[keep_b] / wb[keep_b].sum()
    val = ot.emd2(a, b, M, numItermax=10_000_000)
    return float(np.sqrt(max(val, 0.0)))


def _grid_masses(grid, rho, name):
    r = finite_array(rho, name, shape=grid.shape)
    if r.min() < 0:
        raise ValueError(f"{name} has negative values (min {r.min():.3g})")
    m = r.ravel() * grid.cell_volume
    if abs(m.sum() - 1) > 1e-6:
        raise ValueError(f"{name} has mass {m.sum():.9g}, not 1 (normalise it first)")
    return m / m.sum()


def w2_grids(grid, rho_a, rho_b) -> float:
    """Exact W2 between the cell masses of two grid densities placed at the cell centres
    (a discretisation of the continuous W2 with error O(h^2) for smooth laws whose distance
    is large against the cell size; for nearby laws the lattice dominates, ``~ sqrt(W2 h)``:
    use :func:`w2_linearised` there, module docstring)."""
    pts = grid.points
    return w2_discrete(pts, _grid_masses(grid, rho_a, "rho_a"), pts, _grid_masses(grid, rho_b, "rho_b"))


def w2_samples_grid_nd(samples, grid, rho, *, n_boot: int = 20, seed=0) -> tuple[float, float]:
    """``(W2, bootstrap standard error)`` between the empirical law of ``samples`` (n, d)
    and the cell masses of a grid density at the cell centres."""
    X = np.atleast_2d(finite_array(samples, "samples"))
    pts = grid.points
    m = _grid_masses(grid, rho, "rho")
    n = X.shape[0]
    w = w2_discrete(X, np.full(n, 1.0 / n), pts, m)
    rng = np.random.default_rng(seed)
    boots = [w2_discrete(X[rng.integers(0, n, n)], np.full(n, 1.0 / n), pts, m)
             for _ in range(positive_int(n_boot, "n_boot"))]
    return w, float(np.std(boots, ddof=1))


def w2_linearised(grid, rho_a, rho_b) -> float:
    """W2 between two nearby grid densities, linearised at their midpoint (module docstring):
    ``sqrt(vol * phi . b)`` with ``A phi = b``, ``b = rho_b - rho_a`` in the cells, ``A`` the
    Laplacian weighted by the midpoint density at the faces (mean of the two cells).  Any
    dimension, no POT; for W2 small against the scale of the laws."""

    if any(grid.periodic):
        raise ValueError("w2_linearised has zero-flux walls: use a non-periodic grid")
    a = _grid_masses(grid, rho_a, "rho_a") / grid.cell_volume
    b = _grid_masses(grid, rho_b, "rho_b") / grid.cell_volume
    mid = 0.5 * (a + b)
    fs = faces(grid)
    A = weighted_laplacian(grid, 0.5 * (mid[fs.left] + mid[fs.right]))
    diff = b - a
    phi = solve_pinned(A, diff, grid.ndim)
    return float(np.sqrt(max(float(phi @ diff) * grid.cell_volume, 0.0)))


def pooled(grid, rho, max_cells: int):
    """``(coarse grid, coarse density)``: the cell masses of ``rho`` summed over blocks of
    ``f`` cells per axis, ``f`` the smallest divisor of the axis' cell count leaving at most
    ``max_cells`` (so that exact transport of cell masses fits; its error is then O(H^2) in the
    coarse spacing ``H`` for laws far apart against ``H``, module docstring)."""

    r = np.asarray(rho, dtype=float)
    max_cells = positive_int(max_cells, "max_cells", minimum=2)
    factors = []
    for n in grid.cells:
        f = next((f for f in range(1, n + 1) if n % f == 0 and n // f <= max_cells), n)
        if n // f < 2:
            raise ValueError(f"an axis of {n} cells has no divisor leaving between 2 and {max_cells} cells: "
                             "choose a cell count with small factors (e.g. a power of two)")
        factors.append(f)
    coarse = Grid(grid.bounds, [n // f for n, f in zip(grid.cells, factors)], grid.periodic)
    shape = [x for n, f in zip(grid.cells, factors) for x in (n // f, f)]
    mass = (r * grid.cell_volume).reshape(shape).sum(axis=tuple(range(1, 2 * grid.ndim, 2)))
    return coarse, mass / coarse.cell_volume
