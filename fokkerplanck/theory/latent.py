"""Latent-variable energy-based models, exact on a grid: the ground truth of their two
Langevin pools, their likelihood, ELBO and parameter gradient.

A latent-variable EBM puts one energy on pairs of an observed ``x`` (``dx`` coordinates)
and a latent ``z`` (``dz``), linear in its parameters::

    E_theta(x, z) = sum_k theta_k phi_k(x, z),     p_theta(x, z) = exp(-E_theta(x, z)) / Z(theta)

(temperature 1).  Maximum likelihood is a saddle problem over two laws: the *joint pool*
follows Langevin on ``E_theta`` and relaxes to ``p_theta(x, z)``; the *conditional pool* of
each data point ``x_i`` follows Langevin on ``z -> E_theta(x_i, z)``
(:class:`~fokkerplanck.energies.Conditional`) and relaxes to the posterior
``p_theta(z | x_i)``.  With ``phi`` the features,

    log p(x) = log int exp(-E(x, z)) dz - log Z,
    d log p(x) / d theta = E_{p(x, z)}[phi] - E_{p(z | x)}[phi],

so the parameters ascend with the difference of the two pools' feature means.  For any
law ``q`` of ``z``, ``ELBO(q) = E_q[-E(x, z)] + H(q) - log Z = log p(x) - KL(q || p(z | x))``:
the exact posterior closes the gap, and the best Gaussian ``q`` (:meth:`LatentEBM.gaussian_elbo`)
leaves a gap that is a number.

On a grid of the joint space (its first ``dx`` axes are ``x``, the others ``z``; at most
three in all) every one of these is exact up to the midpoint rule's quadrature error, which
is spectrally small for smooth, decaying integrands: ``log Z`` on the joint grid, the
conditional log-partitions on the ``z`` grid, the posterior, the feature means, the flows of
both pools (:class:`~fokkerplanck.flows.fokker_planck.FokkerPlanck`, exact in time) and
their decay against ``exp(-2 kappa t)`` (KL) and ``exp(-kappa t)`` (W2) where the energy is
``kappa``-convex (:func:`decay`).  The particle side (:meth:`LatentEBM.joint_pool`,
:meth:`LatentEBM.conditional_pools`, :meth:`LatentEBM.gradient_estimate`, :func:`train`) uses
the toolkit's Langevin integrators with their counter-based random streams; its estimates
carry standard errors to hold against the grid.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import roots_hermite

import particles
from fokkerplanck._core.validate import finite_array, positive_float, positive_int
from fokkerplanck.energies import Conditional, Energy, Polynomial, Stacked, Sum
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.grid import Grid
from fokkerplanck.theory.stopping import LSConstant, bakry_emery
from particles.estimators import Estimate, kl_knn
from particles.options import check_seed, derived_seed

__all__ = ["ELBO", "MAX_WALL_MASS", "Decay", "GaussianELBO", "LatentEBM", "ParticleELBO", "Training", "decay",
           "exact_mle", "train"]

MAX_WALL_MASS = 1e-6   # a law with more mass within two cells of the walls is not held by the box
STOP_WALL_MASS = 1e-2  # training stops at an iterate with this much: its pools sample a law the box truncates


@dataclass(frozen=True)
class ELBO:
    """``elbo = log p(x) - gap`` of one posterior ``q`` at one data point."""

    elbo: float
    log_marginal: float
    gap: float        # KL(q || p(z | x))


@dataclass(frozen=True)
class GaussianELBO:
    """The best ELBO over Gaussian ``q = N(mean, cov)`` and its gap ``log p(x) - elbo``.

    ``grid_gap`` is the gap of the same Gaussian computed on the ``z`` grid (an independent
    quadrature, on the box); ``reliable`` is False when the optimiser did not converge or the
    two gaps differ by more than ``1e-6 + 1e-3 gap`` (the Gauss-Hermite rule does not resolve
    the energy, or the Gaussian's tails beyond the box carry KL): ``note`` says which."""

    elbo: float
    log_marginal: float
    gap: float
    mean: np.ndarray
    cov: np.ndarray
    grid_gap: float = math.nan
    reliable: bool = True
    note: str = ""


def _modes(density: np.ndarray) -> list[int]:
    """Flat indices of the local maxima of a grid density (no neighbour along an axis is
    larger), the largest first."""
    d = np.asarray(density, dtype=float)
    peak = d > 0
    for ax in range(d.ndim):
        pad = [(0, 0)] * d.ndim
        pad[ax] = (1, 1)
        e = np.pad(d, pad, constant_values=-np.inf)
        lo = [slice(None)] * d.ndim
        hi = [slice(None)] * d.ndim
        lo[ax], hi[ax] = slice(0, -2), slice(2, None)
        peak &= (d >= e[tuple(lo)]) & (d >= e[tuple(hi)])
    flat = np.flatnonzero(peak)
    return [int(i) for i in flat[np.argsort(-d.ravel()[flat])]]


@dataclass(frozen=True)
class ParticleELBO:
    """The ELBO of the law of samples: ``gap`` is the k-NN estimate of ``KL(q || p(z | x))``
    (an :class:`~particles.estimators.Estimate`: when ``gap.below_resolution`` the samples do
    not resolve the gap from 0, and ``elbo`` is not known to be below ``log p(x)``)."""

    elbo: float
    log_marginal: float
    gap: Estimate


def _mask(trainable, k: int) -> np.ndarray:
    """The trainable coordinates: ``k`` booleans (default all), at least one of them."""
    if trainable is None:
        return np.ones(k, dtype=bool)
    m = np.asarray(trainable)
    if m.shape != (k,) or m.dtype != bool:
        raise ValueError(f"trainable must be {k} booleans (one per parameter), got {trainable!r}")
    if not m.any():
        raise ValueError("trainable holds no True: there is nothing to train")
    return m


class LatentEBM:
    """``E_theta(x, z) = sum_k theta_k phi_k(x, z)`` on the joint ``grid`` (its first
    ``x_dim`` axes are ``x``).

    features : energies ``phi_k`` on the joint space, each with a Hessian (the Laplacian in
        ``z`` of a conditional is the trace of the ``z`` block); or build a polynomial model
        with :meth:`polynomial` (``phi_k`` monomials, one compiled kernel).
    theta : the parameters (K,).
    """

    def __init__(self, features, theta, grid: Grid, x_dim: int = 1):
        feats = tuple(features)
        if not feats or not all(isinstance(f, Energy) for f in feats):
            raise ValueError("features must be a non-empty list of Energy objects")
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a Grid, got {type(grid).__name__}")
        if any(grid.periodic):
            raise ValueError("a latent-variable model lives on a box with walls: the grid must not be periodic")
        if any(f.dim != grid.ndim for f in feats):
            raise ValueError(f"every feature must live on the joint grid's {grid.ndim} dimensions, got "
                             f"{[f.dim for f in feats]}")
        self.x_dim = positive_int(x_dim, "x_dim")
        if self.x_dim >= grid.ndim:
            raise ValueError(f"x_dim must leave at least one latent coordinate on the {grid.ndim}-D grid, got {x_dim}")
        self.features, self.grid = feats, grid
        self.theta = finite_array(theta, "theta", shape=(len(feats),))
        self.theta.setflags(write=False)
        self.z_dim = grid.ndim - self.x_dim
        self.z_grid = Grid(grid.bounds[self.x_dim:], grid.cells[self.x_dim:])
        self.x_grid = Grid(grid.bounds[:self.x_dim], grid.cells[:self.x_dim])
        powers = [f.powers[0] for f in feats if isinstance(f, Polynomial) and len(f.coefficients) == 1]
        self._powers = np.array(powers) if len(powers) == len(feats) else None
        if self._powers is not None:
            scale = np.array([f.coefficients[0] for f in feats])
            self.energy: Energy = Polynomial(self.theta * scale, self._powers)
            self._monomials, self._scale = Polynomial(scale, self._powers), scale
        else:
            self.energy = Sum(self.theta, feats)
        self._cache: dict = {}

    @classmethod
    def polynomial(cls, powers, theta, grid: Grid, x_dim: int = 1, scale=None) -> LatentEBM:
        """``E = sum_k theta_k scale_k prod_j y_j^{n_kj}`` for ``powers`` (K, dx + dz) and ``y = (x, z)``."""
        try:
            n = np.asarray(powers, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"powers must be a (K, dx + dz) table of integers, got {powers!r}") from None
        if n.ndim != 2:
            raise ValueError(f"powers must be a (K, dx + dz) table of integers, got shape {n.shape}")
        s = np.ones(len(n)) if scale is None else finite_array(scale, "scale", shape=(len(n),))
        return cls([Polynomial([c], [row]) for c, row in zip(s, n)], theta, grid, x_dim)

    def with_theta(self, theta) -> LatentEBM:
        """The same model at other parameters."""
        return LatentEBM(self.features, theta, self.grid, self.x_dim)

    def __repr__(self):
        return f"LatentEBM({self.energy!r}, x_dim={self.x_dim}, z_dim={self.z_dim})"

    # -- features ----------------------------------------------------------------------------
    def feature_values(self, y) -> np.ndarray:
        """``phi_k(x, z)`` at joint points (N, dx + dz): shape (N, K) (``d E / d theta``)."""
        if self._powers is not None:
            return self._monomials.monomials(y) * self._scale
        return np.stack([f.value(np.atleast_2d(y)) for f in self.features], axis=1)

    def _point(self, x) -> np.ndarray:
        """One data point (dx,) or (1, dx)."""
        X = self._data(x)
        if X.shape[0] != 1:
            raise ValueError(f"one data point is expected here, got {X.shape[0]}; loop over the points")
        return X[0]

    def _data(self, X) -> np.ndarray:
        X = finite_array(X, "data")
        if X.ndim <= 1:
            if X.size % self.x_dim:
                raise ValueError(f"data must be points of shape (B, {self.x_dim}), got {np.shape(X)}")
            X = X.reshape(-1, self.x_dim)
        if X.ndim != 2 or X.shape[1] != self.x_dim or X.shape[0] == 0:
            raise ValueError(f"data must be points of shape (B >= 1, {self.x_dim}), got {np.shape(X)}")
        lo = np.array([b[0] for b in self.grid.bounds[:self.x_dim]])
        hi = np.array([b[1] for b in self.grid.bounds[:self.x_dim]])
        if np.any(X < lo) or np.any(X > hi):
            raise ValueError(f"data must lie inside the grid's x range {self.grid.bounds[:self.x_dim]}")
        return X

    def _joint_points(self, x) -> np.ndarray:
        Z = self.z_grid.points
        return np.concatenate([np.broadcast_to(x, (Z.shape[0], self.x_dim)), Z], axis=1)

    # -- exact quantities on the grid -------------------------------------------------------------
    def wall_mass(self, X=None) -> float:
        """The largest mass within two cells of the walls: of the joint law, and of the
        posteriors at the data points ``X`` if given.  Above :data:`MAX_WALL_MASS` the box
        does not hold the model (or it is not normalisable) and its grid numbers are not
        those of the model: :meth:`valid` is False."""
        if "wall" not in self._cache:
            self._cache["wall"] = float(self.grid.mass_near_wall(self.joint(), 2))
        m = self._cache["wall"]
        if X is not None:
            m = max([m] + [float(self.z_grid.mass_near_wall(self.posterior(x), 2)) for x in self._data(X)])
        return m if np.isfinite(m) else math.inf

    def valid(self, X=None) -> bool:
        """The box holds the joint law (and the posteriors at ``X``): :meth:`wall_mass`."""
        return self.wall_mass(X) <= MAX_WALL_MASS

    def conditional(self, x) -> Conditional:
        """The energy ``z -> E(x, z)`` of the posterior at one data point."""
        return Conditional(self.energy, x)

    def log_partition(self) -> float:
        """``log Z = log int int exp(-E)`` on the joint grid (midpoint rule)."""
        if "log_z" not in self._cache:
            self._cache["log_z"] = self.grid.log_partition(self.energy)
        return self._cache["log_z"]

    def conditional_log_partition(self, X) -> np.ndarray:
        """``log int exp(-E(x_i, z)) dz`` on the ``z`` grid, per data point: (B,)."""
        X = self._data(X)
        return np.array([self.z_grid.log_partition(self.conditional(x)) for x in X])

    def log_marginal(self, X) -> np.ndarray:
        """``log p(x_i)``, exact on the grid: (B,)."""
        return self.conditional_log_partition(X) - self.log_partition()

    def log_likelihood(self, X) -> float:
        """The mean ``log p(x_i)`` over the data."""
        return float(np.mean(self.log_marginal(X)))

    def posterior(self, x) -> np.ndarray:
        """``p(z | x)`` on the ``z`` grid (a density there)."""
        return self.z_grid.gibbs(self.conditional(x))

    def joint(self) -> np.ndarray:
        """``p(x, z)`` on the joint grid."""
        return self.grid.gibbs(self.energy)

    def feature_means(self, X=None) -> np.ndarray:
        """``E_{p(x, z)}[phi]`` (``X`` None) or ``E_{p(z | x_i)}[phi]`` per data point (B, K)."""
        if X is None:
            rho = self.joint().ravel()
            return self.feature_values(self.grid.points).T @ rho * self.grid.cell_volume
        X = self._data(X)
        vol = self.z_grid.cell_volume
        return np.array([self.feature_values(self._joint_points(x)).T @ self.posterior(x).ravel() * vol for x in X])

    def grad_log_likelihood(self, X) -> np.ndarray:
        """``d/d theta`` of the mean ``log p(x_i)``: ``E_{p(x, z)}[phi] - mean_i E_{p(z | x_i)}[phi]``."""
        return self.feature_means() - self.feature_means(X).mean(axis=0)

    def elbo(self, x, q) -> ELBO:
        """The ELBO of a density ``q`` on the ``z`` grid at one data point, and its gap
        ``KL(q || p(z | x))`` (computed directly, so ``elbo + gap = log p(x)`` is a check)."""
        x = self._point(x)
        q = self.z_grid.check_density(q, "q")
        vol = self.z_grid.cell_volume
        E = self.conditional(x).value(self.z_grid.points).reshape(q.shape)
        pos = q > 0
        entropy = -float(np.sum(q[pos] * np.log(q[pos])) * vol)
        elbo = -float(np.sum(q * E) * vol) + entropy - self.log_partition()
        log_post = -E - self.conditional_log_partition(x[None])[0]     # in logs: no underflow in the tails
        gap = float(np.sum(q[pos] * (np.log(q[pos]) - log_post[pos])) * vol)
        return ELBO(elbo, float(self.log_marginal(x[None])[0]), gap)

    def elbo_particles(self, x, Z, *, k: int = 1) -> ParticleELBO:
        """The ELBO of the law of samples ``Z`` (n, dz) at one data point, from the k-NN
        estimate of ``KL(q || p(z | x))`` with the exact conditional log-partition
        (:func:`particles.estimators.kl_knn`, below resolution when within two standard
        errors of 0)."""
        x = self._point(x)
        logc = float(self.conditional_log_partition(x[None])[0])
        est = kl_knn(Z, self.conditional(x), k=k, log_partition=logc)
        log_p = logc - self.log_partition()
        return ParticleELBO(log_p - est.value, log_p, est)

    def gaussian_elbo(self, x, *, nodes: int = 40) -> GaussianELBO:
        """The best ELBO over Gaussian posteriors ``N(m, L L^T)`` at one data point:
        ``E_q[-E(x, z)]`` by tensor Gauss-Hermite quadrature (``nodes`` per latent axis;
        exact for polynomial energies of degree below ``2 nodes``), maximised by L-BFGS with
        the reparametrised gradient, started from the posterior's mean and covariance."""
        x = self._point(x)
        dz, U = self.z_dim, self.conditional(x)
        t, w = roots_hermite(positive_int(nodes, "nodes"))
        grids = np.meshgrid(*([t] * dz), indexing="ij")
        eps = np.sqrt(2.0) * np.stack([g.ravel() for g in grids], axis=1)          # (n^dz, dz)
        weights = np.prod(np.meshgrid(*([w] * dz), indexing="ij"), axis=0).ravel() / math.pi ** (dz / 2)
        tril = np.tril_indices(dz)
        diag = np.arange(dz)

        def unpack(v):
            L = np.zeros((dz, dz))
            L[tril] = v[dz:]
            L[diag, diag] = np.exp(L[diag, diag])
            return v[:dz], L

        def negative(v):
            m, L = unpack(v)
            Zq = m + eps @ L.T
            e = U.value(Zq)
            g = U.grad(Zq)
            value = weights @ e - np.sum(np.log(np.diag(L)))
            gm = weights @ g
            gL = np.einsum("n,na,nb->ab", weights, g, eps)
            gL[diag, diag] = gL[diag, diag] * np.diag(L) - 1.0
            return value, np.concatenate([gm, gL[tril]])

        def packed(m, C):
            L = np.linalg.cholesky(C)
            L[diag, diag] = np.log(L[diag, diag])
            return np.concatenate([m, L[tril]])

        # starts: the posterior's mean and covariance, and each of its modes (local maxima on the
        # grid, the largest first) with the covariance of the cells around it: a bimodal
        # posterior has a broad Gaussian between its modes that is a saddle or a local optimum
        post = self.posterior(x)
        p = post.ravel() * self.z_grid.cell_volume
        Zg = self.z_grid.points
        m0 = p @ Zg
        C0 = (Zg - m0).T @ ((Zg - m0) * p[:, None]) + np.diag(np.array(self.z_grid.spacing) ** 2 / 12)
        starts = [packed(m0, C0)]
        h2 = np.diag(np.array(self.z_grid.spacing) ** 2)
        radius2 = np.trace(C0) / 4
        for flat in _modes(post)[:4]:
            mode = Zg[flat]
            near = p * (np.sum((Zg - mode) ** 2, axis=1) <= radius2)
            Cm = (Zg - mode).T @ ((Zg - mode) * (near / near.sum())[:, None]) + h2
            starts.append(packed(mode, Cm))
        best = None
        for v0 in starts:
            res = minimize(negative, v0, jac=True, method="L-BFGS-B",
                           options={"maxiter": 1000, "gtol": 1e-12, "ftol": 1e-15})
            if best is None or res.fun < best.fun:
                best = res
        m, L = unpack(best.x)
        entropy_const = 0.5 * dz * math.log(2 * math.pi * math.e)
        elbo = -float(best.fun) + entropy_const - self.log_partition()
        log_p = float(self.log_marginal(x[None])[0])
        cov = L @ L.T
        from fokkerplanck.densities import Gaussian

        notes = []
        try:
            # the Gaussian at the cell centres (cell averages would add an O(h^2) of their own)
            grid_gap = self.elbo(x, self.z_grid.density_from_logpdf(Gaussian(m, cov).logpdf)).gap
        except ValueError as exc:            # the Gaussian does not fit in the box
            grid_gap, notes = math.nan, [f"its grid check failed: {exc}"]
        gap = log_p - elbo
        if not np.isfinite(best.fun) or (not best.success and np.max(np.abs(best.jac)) > 1e-6):
            notes.append(f"the optimiser did not converge ({best.message})")
        if np.isfinite(grid_gap) and abs(grid_gap - gap) > 1e-6 + 1e-3 * abs(gap):
            notes.append(f"the Gauss-Hermite gap {gap:.6g} (over all of R^dz) and the grid's {grid_gap:.6g} differ: "
                         "the Gaussian has mass or KL beyond the grid's z range (enlarge it), or the energy is not "
                         "resolved by the quadrature (raise nodes)")
        return GaussianELBO(elbo, log_p, gap, m, cov, float(grid_gap), not notes, "; ".join(notes))

    # -- flows on the grid ---------------------------------------------------------------------
    def joint_flow(self, rho0, times, **kw):
        """The joint pool's law: Fokker-Planck of ``E`` on the joint grid from ``rho0``."""
        return FokkerPlanck(self.energy, self.grid).solve(rho0, times, **kw)

    def conditional_flows(self, X, q0, times, **kw) -> list:
        """The conditional pools' laws: one Fokker-Planck flow in ``z`` per data point,
        from ``q0`` (a density object or a density on the ``z`` grid)."""
        return [FokkerPlanck(self.conditional(x), self.z_grid).solve(q0, times, **kw) for x in self._data(X)]

    # -- particles -------------------------------------------------------------------------------
    def joint_pool(self, y0, dt: float, n_steps: int, *, seed=0, **kw):
        """Langevin on ``E`` for the joint pool ``y0`` (N, dx + dz): :func:`particles.langevin`."""
        return particles.langevin(self.energy, y0, dt, n_steps, seed=seed, **kw)

    def stacked(self, X) -> Stacked:
        """The conditional energies of all data points on one space ``R^{B dz}``:
        ``sum_i E(x_i, z_i)``, whose Gibbs law is the product of the posteriors."""
        return Stacked([self.conditional(x) for x in self._data(X)])

    def conditional_pools(self, X, z0, dt: float, n_steps: int, *, seed=0, **kw):
        """Langevin on ``z -> E(x_i, z)`` for every data point at once: one run of
        :func:`particles.langevin` on :meth:`stacked` (so the pools are independent, and
        with ``method="mala"`` one accept/reject covers all of a particle's ``B`` blocks).
        ``z0``: (n, dz), the same start for every point, or (B, n, dz).  Read the pools of a
        saved step with :meth:`per_point`."""
        X = self._data(X)
        z0 = np.asarray(z0, dtype=float)
        if z0.ndim == 2:
            z0 = np.broadcast_to(z0, (len(X),) + z0.shape)
        if z0.ndim != 3 or z0.shape[0] != len(X) or z0.shape[2] != self.z_dim:
            raise ValueError(f"z0 must be (n, {self.z_dim}) or ({len(X)}, n, {self.z_dim}), got {z0.shape}")
        start = np.ascontiguousarray(np.transpose(z0, (1, 0, 2)).reshape(z0.shape[1], -1))
        return particles.langevin(self.stacked(X), start, dt, n_steps, seed=seed, **kw)

    def per_point(self, positions) -> np.ndarray:
        """Stacked positions (n, B dz) as pools (B, n, dz)."""
        P = np.asarray(positions, dtype=float)
        if P.ndim != 2 or P.shape[1] % self.z_dim:
            raise ValueError(f"stacked positions are (n, B * {self.z_dim}), got shape {P.shape}")
        return np.transpose(P.reshape(P.shape[0], -1, self.z_dim), (1, 0, 2))

    def gradient_stderr(self, X, n_joint: int, n_conditional: int) -> np.ndarray:
        """The standard error :meth:`gradient_estimate` should report for independent exact
        samples: from the exact variances of the features under the joint law and the
        posteriors, ``sqrt(Var_joint / n_joint + sum_i Var_post_i / (B^2 n_conditional))``."""
        X = self._data(X)
        F = self.feature_values(self.grid.points)
        p = self.joint().ravel() * self.grid.cell_volume
        var = (p @ F**2 - (p @ F) ** 2) / positive_int(n_joint, "n_joint")
        for x in X:
            Fz = self.feature_values(self._joint_points(x))
            pz = self.posterior(x).ravel() * self.z_grid.cell_volume
            var = var + (pz @ Fz**2 - (pz @ Fz) ** 2) / positive_int(n_conditional, "n_conditional") / len(X) ** 2
        return np.sqrt(var)

    def gradient_estimate(self, X, joint_samples, conditional_samples) -> tuple[np.ndarray, np.ndarray]:
        """The particle estimate of :meth:`grad_log_likelihood` and its standard error: the
        joint pool's feature mean minus the mean over data points of their pools' feature
        means (pools independent: the variances add)."""
        X = self._data(X)
        Y = np.asarray(joint_samples, dtype=float)
        if Y.ndim != 2 or Y.shape[1] != self.grid.ndim or len(Y) < 2:
            raise ValueError(f"joint_samples must be (n >= 2, {self.grid.ndim}), got {Y.shape}")
        if len(conditional_samples) != len(X):
            raise ValueError(f"one pool per data point: {len(X)} points, {len(conditional_samples)} pools")
        fj = self.feature_values(Y)
        mean = fj.mean(axis=0)
        var = fj.var(axis=0, ddof=1) / len(fj)
        B = len(X)
        for x, Z in zip(X, conditional_samples):
            Z = np.asarray(Z, dtype=float)
            if Z.ndim != 2 or Z.shape[1] != self.z_dim or len(Z) < 2:
                raise ValueError(f"a conditional pool must be (n >= 2, {self.z_dim}), got {Z.shape}")
            fc = self.feature_values(np.concatenate([np.broadcast_to(x, (len(Z), self.x_dim)), Z], axis=1))
            mean = mean - fc.mean(axis=0) / B
            var = var + fc.var(axis=0, ddof=1) / len(fc) / B ** 2
        return mean, np.sqrt(var)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decay:
    """KL and W2 to the Gibbs law along one flow, and the bounds ``KL_0 exp(-2 kappa t)``,
    ``W2_0 exp(-kappa t)`` where the energy is ``kappa``-convex on the box (``constant``
    None otherwise).  ``gap`` is the discrete generator's spectral gap (a measured rate, not a
    bound)."""

    times: np.ndarray
    kl: np.ndarray
    w2: np.ndarray | None
    constant: LSConstant | None
    gap: float
    valid: np.ndarray | None = None   # per save: the grid resolves the law (Trajectory.valid)

    @property
    def bounded(self) -> bool:
        """A bound exists: the energy is convex on the box and the first save is valid."""
        return self.constant is not None and (self.valid is None or bool(self.valid[0]))

    @property
    def kl_bound(self) -> np.ndarray | None:
        return self.kl[0] * np.exp(-2 * self.constant.value * self.times) if self.bounded else None

    @property
    def w2_bound(self) -> np.ndarray | None:
        if not self.bounded or self.w2 is None:
            return None
        return self.w2[0] * np.exp(-self.constant.value * self.times)

    def holds(self, rtol: float = 1e-6) -> bool | None:
        """Both curves at or below their bounds at every valid save (relative slack ``rtol``);
        None without a bound."""
        if not self.bounded:
            return None
        ok = np.ones(self.times.shape, dtype=bool) if self.valid is None else self.valid
        good = np.all((self.kl <= self.kl_bound * (1 + rtol) + 1e-14)[ok])
        if self.w2 is not None:
            good = good and np.all((self.w2 <= self.w2_bound * (1 + rtol) + 1e-14)[ok])
        return bool(good)


def decay(traj, *, w2: bool | None = None) -> Decay:
    """:class:`Decay` of a grid :class:`~fokkerplanck.results.Trajectory` of a static energy
    at temperature 1.  ``kappa`` is :func:`~fokkerplanck.theory.stopping.bakry_emery` on the
    trajectory's grid (certified where the Hessian is constant, otherwise the minimum over the
    cell centres: labelled estimated).  W2 by quantiles on 1D grids (``w2`` None: 1D only).
    Saves the grid does not resolve (``traj.valid()``) are carried as ``valid`` False: no bound
    is drawn from an invalid first save, and ``holds`` looks at the valid saves only."""
    if traj.temperature != 1.0:
        raise ValueError("the decay bounds here are stated at temperature 1")
    g = traj.grid
    try:
        const = bakry_emery(traj.energy, g)
    except ValueError:  # not strongly convex on the box: no Bakry-Emery bound
        const = None
    want_w2 = (g.ndim == 1) if w2 is None else w2
    return Decay(np.asarray(traj.times), traj.kl(), traj.w2() if want_w2 else None, const,
                 FokkerPlanck(traj.energy, g).spectral_gap(), np.asarray(traj.valid(), dtype=bool))


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Training:
    """A two-loop particle training run: ``theta`` (steps + 1, K), the exact mean
    log-likelihood of the data at every iterate, and the particle gradients with their
    standard errors (steps, K)."""

    theta: np.ndarray
    log_likelihood: np.ndarray
    gradient: np.ndarray
    stderr: np.ndarray
    valid: np.ndarray          # per iterate: the box holds its joint law and the data's posteriors
    acceptance: np.ndarray     # per step: the mean MALA acceptance of the joint and the conditional pools (NaN: ULA)


def train(model: LatentEBM, X, *, lr: float, steps: int, inner: int, n_joint: int, n_conditional: int,
          dt: float, trainable=None, seed=0, method: str = "mala", progress=None) -> Training:
    """Maximum likelihood by the two pools: persistent joint and conditional particles, each
    moved ``inner`` Langevin steps per outer step at the current ``theta``, then
    ``theta += lr * gradient_estimate`` on the ``trainable`` coordinates (a boolean mask;
    default all).  The exact log-likelihood of every iterate is computed on the grid, to hold
    the curve against :func:`exact_mle`; an iterate whose joint law or posteriors the box does
    not hold (:meth:`LatentEBM.valid`) is marked not valid (``Training.valid``, with a warning),
    and training stops at one that puts more than :data:`STOP_WALL_MASS` at the walls.  With ``method="mala"``, one
    accept/reject covers all of a conditional particle's ``B`` blocks: the acceptance is
    recorded per step (it falls with ``B``; lower ``dt`` when it does)."""
    X = model._data(X)
    lr, dt = positive_float(lr, "lr"), positive_float(dt, "dt")
    steps, inner = positive_int(steps, "steps"), positive_int(inner, "inner")
    n_joint, n_conditional = positive_int(n_joint, "n_joint"), positive_int(n_conditional, "n_conditional")
    if min(n_joint, n_conditional) < 2:
        raise ValueError("the pools need at least two particles each (their standard errors)")
    mask = _mask(trainable, len(model.theta))
    seed = check_seed(seed)
    if not model.valid(X):
        raise ValueError(f"the box does not hold the model at the start (mass {model.wall_mass(X):.3g} within two "
                         "cells of the walls): enlarge the grid")
    Y = model.grid.sample(model.joint(), n_joint, seed=derived_seed(seed, 0))
    Zs = np.stack([model.z_grid.sample(model.posterior(x), n_conditional, seed=derived_seed(seed, 1, i))
                   for i, x in enumerate(X)])
    thetas, lls, valid, grads, ses, acc = [model.theta.copy()], [model.log_likelihood(X)], [True], [], [], []
    m = model
    for step in range(steps):
        ej = m.joint_pool(Y, dt, inner, seed=derived_seed(seed, 2, step), method=method, summaries=False)
        ec = m.conditional_pools(X, Zs, dt, inner, seed=derived_seed(seed, 3, step), method=method, summaries=False)
        Y, Zs = ej.positions[-1], m.per_point(ec.positions[-1])
        acc.append([math.nan if e.acceptance is None else float(np.mean(e.acceptance)) for e in (ej, ec)])
        g, se = m.gradient_estimate(X, Y, Zs)
        theta = m.theta + lr * np.where(mask, g, 0.0)
        m = m.with_theta(theta)
        wall = m.wall_mass(X)
        ll = m.log_likelihood(X)
        thetas.append(theta)
        lls.append(ll)
        valid.append(wall <= MAX_WALL_MASS)
        grads.append(g)
        ses.append(se)
        if progress is not None:
            progress(step + 1, steps, ll)
        if wall > STOP_WALL_MASS or not np.isfinite(ll):
            warnings.warn(f"training step {step + 1}: theta = {np.round(theta, 4).tolist()} puts mass {wall:.3g} "
                          "within two cells of the walls (or is not normalisable): stopped there; lower lr or "
                          "enlarge the grid", RuntimeWarning, stacklevel=2)
            break
    if not all(valid):
        warnings.warn(f"training: {len(valid) - sum(valid)} of {len(valid)} iterates put more than {MAX_WALL_MASS:g} "
                      "of their mass within two cells of the walls: their log-likelihoods are marked not valid "
                      "(Training.valid)", RuntimeWarning, stacklevel=2)
    return Training(np.array(thetas), np.array(lls), np.array(grads), np.array(ses), np.array(valid),
                    np.array(acc).reshape(-1, 2))


def exact_mle(model: LatentEBM, X, *, trainable=None) -> tuple[np.ndarray, float]:
    """The maximum-likelihood ``theta`` on the grid (L-BFGS with the exact gradient, from
    the model's ``theta``; other coordinates held) and its mean log-likelihood."""
    X = model._data(X)
    mask = _mask(trainable, len(model.theta))
    base = model.theta.copy()

    def f(v):
        th = base.copy()
        th[mask] = v
        m = model.with_theta(th)
        return -m.log_likelihood(X), -m.grad_log_likelihood(X)[mask]

    res = minimize(f, base[mask], jac=True, method="L-BFGS-B", options={"gtol": 1e-9, "maxiter": 500})
    th = base.copy()
    th[mask] = res.x
    best = model.with_theta(th)
    if not best.valid(X):
        raise ValueError(f"the likelihood's maximum on the grid lies where the box does not hold the model (theta = "
                         f"{np.round(th, 4).tolist()}, wall mass {best.wall_mass(X):.3g}): the parameters are not "
                         "identified or the model runs off; fix some of them (trainable) or enlarge the grid")
    if not res.success and np.max(np.abs(res.jac)) > 1e-6:
        raise ValueError(f"the maximum likelihood search did not converge: {res.message}")
    return th, -float(res.fun)
