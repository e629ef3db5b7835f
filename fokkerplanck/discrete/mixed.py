"""A discrete label coupled to continuous coordinates: the joint Gaussian mixture.

The state is ``(k, x)``: a label ``k in {0..K-1}`` and coordinates ``x in R^d``, with
the joint energy ``E(k, x) = U_k(x) = -log w_k + 1/2 log det(2 pi S_k)
+ 1/2 (x - m_k)^T S_k^{-1} (x - m_k)``, so that at ``T = 1`` the joint law is
``pi(k, x) = w_k N(x; m_k, S_k)``: its x-marginal is the Gaussian mixture and its label
law given x the responsibilities.

Dynamics (both with detailed balance towards ``pi(k, x) ~ exp(-U_k(x) / T)``):

* given the label, x follows Langevin in ``U_k`` at temperature ``T``;
* the label jumps at rate 1 to a label drawn from ``pi(. | x)`` (heat bath).

Exact ground truth on a grid times the label set (:class:`MixedSpace`): the generator
is ``blockdiag(L_k) + J``, with ``L_k`` the Scharfetter-Gummel generator of ``U_k``
(exactly stationary at ``exp(-U_k / T)`` on the cells) and ``J`` the heat-bath label
jumps within each cell at the cell-centre conditional law.  Both parts have detailed
balance towards the discrete joint law ``pi(k, c) ~ exp(-U_k(x_c) / T)``, so the sum
does too, and :class:`fokkerplanck.discrete.MasterEquation` propagates it exactly
(checked: ``check_generator`` runs on it).  The particles of the same dynamics are
:func:`particles.mixed.simulate`.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

from fokkerplanck import energies as E
from fokkerplanck._core.validate import check_memory, finite_array, positive_float, spd_matrix
from fokkerplanck.discrete.finite import MasterEquation
from fokkerplanck.grid import Grid
from fokkerplanck.operators.fluxes import sg_generator

__all__ = ["JointMixture", "MixedSpace"]


class JointMixture:
    """Labels with Gaussian coordinates: ``pi(k, x) = w_k N(x; m_k, S_k)`` at T = 1."""

    def __init__(self, means, covs, weights=None):
        self.means = finite_array(means, "means")
        if self.means.ndim != 2:
            raise ValueError(f"means must be (K, d), got shape {self.means.shape}")
        K, d = self.means.shape
        if K < 2:
            raise ValueError("a label needs at least two values (K >= 2)")
        covs = np.asarray(covs, dtype=float)
        if covs.ndim == 0:                      # one variance for every label
            covs = np.full(K, float(covs))
        if covs.shape == (K,):                  # a variance per label
            covs = covs[:, None, None] * np.eye(d)
        if covs.shape != (K, d, d):
            raise ValueError(f"covs must be (K, d, d), (K,) or a number, got shape {covs.shape}")
        self.covs = np.stack([spd_matrix(c, f"covs[{k}]") for k, c in enumerate(covs)])
        w = np.full(K, 1.0 / K) if weights is None else finite_array(weights, "weights", shape=(K,))
        if np.any(w <= 0):
            raise ValueError("weights must be positive")
        self.weights = w / w.sum()
        self.K, self.dim = K, d
        self.offsets = np.array([-math.log(self.weights[k]) + 0.5 * np.linalg.slogdet(2 * math.pi * self.covs[k])[1]
                                 for k in range(K)])
        self.label_energies = [E.Quadratic(np.linalg.inv(self.covs[k]), self.means[k]) for k in range(K)]

    def energy(self, k: int, X) -> np.ndarray:
        """``U_k`` at points (N, d)."""
        return self.label_energies[k].value(X) + self.offsets[k]

    def marginal(self) -> E.GaussianMixture:
        """The x-marginal at T = 1."""
        return E.GaussianMixture(self.means, self.covs, self.weights)


class MixedSpace:
    """The states ``(label, cell)`` of a grid, numbered ``k * n_cells + c``, with the
    discrete joint Gibbs law and the exact generator of the module docstring."""

    def __init__(self, model: JointMixture, grid: Grid, temperature: float = 1.0):
        if model.dim != grid.ndim:
            raise ValueError(f"the model has dimension {model.dim} but the grid has {grid.ndim}")
        self.model, self.grid = model, grid
        self.temperature = positive_float(temperature, "temperature")
        self.n_cells = grid.size
        self.size = model.K * grid.size
        check_memory(self.memory_bytes(model.K, grid.size, grid.ndim),
                     f"a mixed space of {model.K} labels x {grid.size} cells = {self.size} states (its generator "
                     f"holds {self.generator_entries(model.K, grid.size, grid.ndim):.4g} entries, "
                     f"{model.K * (model.K - 1) * grid.size:.4g} of them label jumps: every pair of labels in every "
                     "cell)")
        pts = grid.points
        self.U = np.stack([model.energy(k, pts) for k in range(model.K)])   # (K, cells)
        lw = -self.U.ravel() / self.temperature
        self.log_pi = lw - logsumexp(lw)
        self.pi = np.exp(self.log_pi)

    @staticmethod
    def generator_entries(K: int, n_cells: int, ndim: int) -> float:
        """Non-zeros of the generator: ``2 ndim + 1`` per state in the drift blocks, and the
        heat-bath jumps between every pair of labels in every cell, ``K (K - 1) n_cells``."""
        return float(K) * n_cells * (2 * ndim + 1) + float(K) * (K - 1) * n_cells

    @classmethod
    def memory_bytes(cls, K: int, n_cells: int, ndim: int) -> float:
        """Peak bytes of the space and of :meth:`generator`: the per-state arrays, and 64 bytes
        per non-zero for the triplets (``rows``, ``cols``, ``vals``), the COO and CSR matrices
        and their sums (measured peak: 49 bytes per non-zero at K = 150)."""
        return 8.0 * K * n_cells * (4 * ndim + 8) + 64.0 * cls.generator_entries(K, n_cells, ndim)

    def generator(self) -> sp.csr_matrix:
        K, n, T = self.model.K, self.n_cells, self.temperature
        blocks = sp.block_diag([sg_generator(self.grid, self.U[k].reshape(self.grid.shape), T) for k in range(K)],
                               format="csr")
        # heat-bath label jumps at rate 1 within each cell: k -> k' at pi(k' | cell)
        lcond = -self.U / T
        lcond = lcond - logsumexp(lcond, axis=0)
        cells = np.arange(n)
        rows, cols, vals = [], [], []
        for k in range(K):          # K^2 pairs of labels, each a vector over the cells
            for k2 in range(K):
                if k2 != k:
                    rows.append(k2 * n + cells)
                    cols.append(k * n + cells)
                    vals.append(np.exp(lcond[k2]))
        rows, cols, vals = map(np.concatenate, (rows, cols, vals))
        J = sp.csr_matrix((vals, (rows, cols)), shape=(self.size, self.size))
        J = J - sp.diags(np.asarray(J.sum(axis=0)).ravel())
        return (blocks + J).tocsr()

    def master_equation(self) -> MasterEquation:
        """Exact propagation; the generator is checked for detailed balance on the way."""
        return MasterEquation(self, self.generator())

    # what MasterEquation needs of a space ----------------------------------------------
    def check_law(self, p, name: str = "p") -> np.ndarray:
        p = finite_array(p, name, shape=(self.size,))
        if p.min() < 0:
            raise ValueError(f"{name} has negative entries (min {p.min():.3g})")
        if abs(p.sum() - 1.0) > 1e-9:
            raise ValueError(f"{name} sums to {p.sum():.12g}, not 1")
        return p

    def product_law(self, label_probs, rho0) -> np.ndarray:
        """``p(k, c) = label_probs[k] * rho0(c) vol`` for a grid density ``rho0`` (or a
        density object with ``on_grid``)."""
        lp = finite_array(label_probs, "label_probs", shape=(self.model.K,))
        if np.any(lp < 0) or abs(lp.sum() - 1) > 1e-12:
            raise ValueError("label_probs must be a probability vector")
        r = rho0.on_grid(self.grid) if hasattr(rho0, "on_grid") else finite_array(rho0, "rho0", shape=self.grid.shape)
        m = r.ravel() * self.grid.cell_volume
        return np.outer(lp, m / m.sum()).ravel()

    def label_law(self, P) -> np.ndarray:
        """Marginal law of the label, (n_times, K)."""
        return np.atleast_2d(P).reshape(-1, self.model.K, self.n_cells).sum(axis=2)

    def coordinate_mean(self, P) -> np.ndarray:
        """Mean of x, (n_times, d)."""
        m = np.atleast_2d(P).reshape(-1, self.model.K, self.n_cells).sum(axis=1)
        return m @ self.grid.points
