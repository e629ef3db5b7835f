"""Finite-volume operators on a :class:`~fokkerplanck.Grid`.

Scharfetter-Gummel (exponentially fitted) Fokker-Planck generator.  Between
neighbouring cells ``i, j = i + e_a`` at spacing ``h`` along axis ``a``, with
``delta = (U_j - U_i) / T`` and ``B(z) = z / (e^z - 1)``, the face flux is
``J = (T / h) [B(delta) rho_i - B(-delta) rho_j]`` and
``d rho_i / dt = -(J_{i+1/2} - J_{i-1/2}) / h``.

Since ``B(-z) = e^z B(z)``, ``J = (T/h) B(delta) pi_i (u_i - u_j)`` with
``pi = exp(-U/T)`` and ``u = rho / pi``: the discrete Gibbs vector is exactly
stationary and the generator ``L`` satisfies detailed balance,
``S = D^{-1/2} L D^{1/2}`` (``D = diag(pi)``) is symmetric with off-diagonal
``(T/h^2) W(delta)``, ``W(z) = (z/2) / sinh(z/2) = B(z) e^{z/2}``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import prange

from fokkerplanck._core.jit import jit, pjit

__all__ = ["bernoulli", "FaceSet", "faces", "sg_generator", "sg_symmetric", "Stencil", "sg_fisher"]


def bernoulli(z):
    """``B(z) = z / (e^z - 1)``, ``B(0) = 1``, accurate for all real z."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    _bernoulli_loop(z.ravel(), out.ravel())
    return out


def _w_sym(z):
    """``W(z) = (z/2) / sinh(z/2)``, ``W(0) = 1``; underflows to 0 for huge |z|."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    _w_sym_loop(z.ravel(), out.ravel())
    return out


@pjit(cache=True)
def _bernoulli_loop(z, out):
    # one pass on all cores (the masked numpy form copied the face arrays three times:
    # 0.9 s of a 128^3 solve); expm1 overflows to inf for z > 709, and z / inf = 0
    for i in prange(z.size):
        zi = z[i]
        out[i] = zi / math.expm1(zi) if abs(zi) > 1e-300 else 1.0


@pjit(cache=True)
def _w_sym_loop(z, out):
    for i in prange(z.size):
        h = 0.5 * z[i]
        out[i] = h / math.sinh(h) if abs(h) > 1e-300 else 1.0


@dataclass(frozen=True)
class FaceSet:
    """All interior (and periodic) faces of a grid as flat cell-index pairs.

    ``left[f]``, ``right[f]``: the cells on either side (``right = left + e_a``,
    wrapped on periodic axes); ``inv_h2[f] = 1 / h_a^2``.
    """

    left: np.ndarray
    right: np.ndarray
    inv_h2: np.ndarray


def faces(grid) -> FaceSet:
    # int32 cell indices where they fit: the face set is held by every solver (3 d n
    # indices each side; 0.8 GB at 256^3 in int64)
    idx = np.arange(grid.size, dtype=np.int32 if grid.size < 2**31 else np.int64).reshape(grid.shape)
    L, R, W = [], [], []
    for a in range(grid.ndim):
        if grid.periodic[a]:
            left, right = idx, np.roll(idx, -1, axis=a)
        else:
            sl_l = [slice(None)] * grid.ndim
            sl_r = [slice(None)] * grid.ndim
            sl_l[a], sl_r[a] = slice(0, -1), slice(1, None)
            left, right = idx[tuple(sl_l)], idx[tuple(sl_r)]
        L.append(left.ravel())
        R.append(right.ravel())
        W.append(np.full(left.size, 1.0 / grid.spacing[a] ** 2))
    return FaceSet(np.concatenate(L), np.concatenate(R), np.concatenate(W))


def sg_generator(grid, U, temperature: float, fs: FaceSet | None = None) -> sp.csr_matrix:
    """Sparse generator ``L`` with ``d rho / dt = L rho`` (rho flattened in C order).
    Columns sum to zero (mass conservation); ``L pi = 0`` for ``pi = exp(-U/T)``."""
    fs = fs or faces(grid)
    u = np.asarray(U, dtype=float).ravel()
    T = float(temperature)
    delta = (u[fs.right] - u[fs.left]) / T
    a = T * fs.inv_h2 * bernoulli(delta)    # rate left -> right
    b = T * fs.inv_h2 * bernoulli(-delta)   # rate right -> left
    n = grid.size
    rows = np.concatenate([fs.right, fs.left, fs.left, fs.right])
    cols = np.concatenate([fs.left, fs.right, fs.left, fs.right])
    vals = np.concatenate([a, b, -a, -b])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def _sg_symmetric_entries(grid, U, temperature, fs):
    """Face weights ``(T/h^2) W(delta)`` (in FaceSet order) and the diagonal of ``S``."""
    u = np.asarray(U, dtype=float).ravel()
    T = float(temperature)
    delta = (u[fs.right] - u[fs.left]) / T
    c = T * fs.inv_h2
    off = c * _w_sym(delta)
    diag = np.zeros(grid.size)
    np.add.at(diag, fs.left, -c * bernoulli(delta))
    np.add.at(diag, fs.right, -c * bernoulli(-delta))
    return off, diag


def sg_symmetric(grid, U, temperature: float, fs: FaceSet | None = None) -> sp.csr_matrix:
    """The symmetrised generator ``S = D^{-1/2} L D^{1/2}``, assembled directly from
    ``W(delta)`` (no exponentials of U, so no overflow for large energy ranges).
    Negative semi-definite with ``S sqrt(pi) = 0``."""
    fs = fs or faces(grid)
    off, diag = _sg_symmetric_entries(grid, U, temperature, fs)
    n = grid.size
    rows = np.concatenate([fs.left, fs.right, np.arange(n)])
    cols = np.concatenate([fs.right, fs.left, np.arange(n)])
    return sp.csr_matrix((np.concatenate([off, off, diag]), (rows, cols)), shape=(n, n))


class Stencil:
    """A Scharfetter-Gummel operator as a matrix-free stencil on a 3D view of the grid
    (missing axes of length 1): the diagonal and, per axis, the weights coupling each
    cell to its ``+e_a`` neighbour (``fwd``: the entry ``M[i, i+e_a]``) and the
    neighbour back to it (``bwd``: ``M[i+e_a, i]``), zero at a wall.
    :meth:`symmetric` is ``S`` of :func:`sg_symmetric`, :meth:`generator` is ``L`` of
    :func:`sg_generator`; both are tested equal to the sparse matrices.

    :meth:`combine` computes ``alpha M x + beta x + gamma z`` in one pass (the Chebyshev
    recurrence, or a uniformisation step ``x + M x / rate``, without temporaries) and
    can add ``w_r x`` to rows ``r`` of an accumulator in the same pass."""

    def __init__(self, grid, diag, fwd, bwd):
        shape3 = (1,) * (3 - grid.ndim) + tuple(grid.cells)
        self.shape3, self.size = shape3, grid.size
        self.diag = np.ascontiguousarray(diag).reshape(shape3)
        self.fwd = self._per_axis(grid, fwd)
        # a symmetric operator's two weights are one array: held once
        self.bwd = self.fwd if bwd is fwd else self._per_axis(grid, bwd)
        self._none_w = np.zeros(0)
        self._none_acc = np.zeros((0,) + shape3)

    def _per_axis(self, grid, vals):
        """Face values in FaceSet order (axis by axis) as one 3D array per axis."""
        out, start = [], 0
        for a3 in range(3):
            wa = np.zeros(self.shape3)
            a = a3 - (3 - grid.ndim)
            if a >= 0:
                cells = list(grid.cells)
                if not grid.periodic[a]:
                    cells[a] -= 1
                n_faces = int(np.prod(cells))
                sl = [slice(None)] * 3
                sl[a3] = slice(0, cells[a])
                wa[tuple(sl)] = vals[start:start + n_faces].reshape((1,) * (3 - grid.ndim) + tuple(cells))
                start += n_faces
            out.append(wa)
        return tuple(out)

    def gershgorin(self) -> float:
        """The largest absolute row sum (an upper bound of the spectral radius), from the
        stencil itself: equal to :func:`~fokkerplanck.operators.expm.gershgorin_bound` of the
        assembled matrix, without assembling it.  Row ``i`` holds ``M[i, i+e_a] = fwd_a[i]``
        and ``M[i, i-e_a] = bwd_a[i-e_a]`` (zero at a wall; periodic axes wrap)."""
        rows = np.abs(self.diag).copy()
        for a3 in range(3):
            rows += np.abs(self.fwd[a3]) + np.roll(np.abs(self.bwd[a3]), 1, axis=a3)
        return float(rows.max())

    @classmethod
    def symmetric(cls, grid, U, temperature: float, fs: FaceSet | None = None) -> "Stencil":
        fs = fs or faces(grid)
        off, diag = _sg_symmetric_entries(grid, U, temperature, fs)
        return cls(grid, diag, off, off)

    @classmethod
    def generator(cls, grid, U, temperature: float, fs: FaceSet | None = None) -> "Stencil":
        fs = fs or faces(grid)
        u = np.asarray(U, dtype=float).ravel()
        T = float(temperature)
        delta = (u[fs.right] - u[fs.left]) / T
        a = T * fs.inv_h2 * bernoulli(delta)    # rate left -> right: L[right, left]
        b = T * fs.inv_h2 * bernoulli(-delta)   # rate right -> left: L[left, right]
        diag = np.zeros(grid.size)
        np.add.at(diag, fs.left, -a)
        np.add.at(diag, fs.right, -b)
        return cls(grid, diag, b, a)

    def combine(self, x, alpha: float, beta: float = 0.0, z=None, gamma: float = 0.0, *, out=None,
                acc_w=None, acc=None, parallel: bool = False):
        """``alpha M x + beta x + gamma z`` for flat vectors (a new array, or ``out``);
        with ``acc`` (m, size) and ``acc_w`` (m,): also ``acc[r] += acc_w[r] x``.
        ``parallel``: on all cores (same bits); between BLAS calls only inside
        :func:`~fokkerplanck._core.jit.one_blas_thread`."""
        y = np.empty(self.size) if out is None else out
        zz = x if z is None else z
        accw = self._none_w if acc_w is None else np.ascontiguousarray(acc_w, dtype=float)
        acc3 = self._none_acc if acc is None else acc.reshape((acc.shape[0],) + self.shape3)
        f, b = self.fwd, self.bwd
        (_stencil_combine_par if parallel else _stencil_combine)(self.diag, f[0], b[0], f[1], b[1], f[2], b[2], x.reshape(self.shape3),
                         zz.reshape(self.shape3), float(alpha), float(beta), float(gamma if z is not None else 0.0),
                         y.reshape(self.shape3), accw, acc3)
        return y

    def combine_parallel(self, x, alpha: float, beta: float = 0.0, z=None, gamma: float = 0.0, *, out=None,
                         acc_w=None, acc=None):
        """:meth:`combine` on all cores."""
        return self.combine(x, alpha, beta, z, gamma, out=out, acc_w=acc_w, acc=acc, parallel=True)

    def dot(self, x):
        return self.combine(np.ascontiguousarray(x, dtype=float), 1.0)


@jit(cache=True)
def _stencil_line(i, j, diag, f0, b0, f1, b1, f2, b2, x, z, alpha, beta, gamma, y, acc_w, acc):
    # One line (i, j, :) of the sweep.  Branch-free: the weight arrays are zero at the
    # walls (and on missing axes), so a missing neighbour is any valid cell times a zero
    # weight; the neighbour indices are then the periodic ones on every axis, and the
    # interior of the last axis is a plain loop that LLVM vectorises.
    n0, n1, n2 = x.shape
    ip = i + 1 if i < n0 - 1 else 0
    im = i - 1 if i > 0 else n0 - 1
    jp = j + 1 if j < n1 - 1 else 0
    jm = j - 1 if j > 0 else n1 - 1
    for k in range(n2):
        kp = k + 1 if k < n2 - 1 else 0
        km = k - 1 if k > 0 else n2 - 1
        s = (diag[i, j, k] * x[i, j, k]
             + f1[i, j, k] * x[i, jp, k] + b1[i, jm, k] * x[i, jm, k]
             + f2[i, j, k] * x[i, j, kp] + b2[i, j, km] * x[i, j, km])
        if n0 > 1:  # 3D (a 1D or 2D grid has a leading axis of length 1: no such terms)
            s += f0[i, j, k] * x[ip, j, k] + b0[im, j, k] * x[im, j, k]
        y[i, j, k] = alpha * s + beta * x[i, j, k] + gamma * z[i, j, k]
    for r in range(acc_w.shape[0]):
        w = acc_w[r]
        for k in range(n2):
            acc[r, i, j, k] += w * x[i, j, k]


@jit(cache=True)
def _stencil_combine(diag, f0, b0, f1, b1, f2, b2, x, z, alpha, beta, gamma, y, acc_w, acc):
    # Serial (the solvers use the parallel one below inside ``one_blas_thread``: with
    # OpenBLAS's threads spinning between block products a parallel sweep is 2-3x slower).
    n0, n1, _ = x.shape
    for i in range(n0):
        for j in range(n1):
            _stencil_line(i, j, diag, f0, b0, f1, b1, f2, b2, x, z, alpha, beta, gamma, y, acc_w, acc)


@pjit(cache=True)
def _stencil_combine_par(diag, f0, b0, f1, b1, f2, b2, x, z, alpha, beta, gamma, y, acc_w, acc):
    # The same sweep over lines in parallel (the same bits: no reductions across cells).
    n0, n1, _ = x.shape
    for ij in prange(n0 * n1):
        _stencil_line(ij // n1, ij % n1, diag, f0, b0, f1, b1, f2, b2, x, z, alpha, beta, gamma, y, acc_w, acc)


def sg_fisher(grid, U, temperature: float, rho, fs: FaceSet | None = None) -> np.ndarray:
    """Discrete relative Fisher information consistent with the SG scheme:
    ``I = sum_faces vol/h^2 B(delta) pi_i (u_j - u_i)(log u_j - log u_i)``, with
    ``u = rho / pi``, so that the semi-discrete flow has exactly
    ``d/dt KL = -T I``.  Written without ``pi`` (which underflows where U/T is
    large): ``B(delta) pi_i (u_j - u_i) = B(-delta) rho_j - B(delta) rho_i`` and
    ``log u_j - log u_i = log rho_j - log rho_i + delta``.

    ``rho`` may be one density (grid shape) or a stack (n, *grid shape)."""
    fs = fs or faces(grid)
    u_e = np.asarray(U, dtype=float).ravel()
    delta = (u_e[fs.right] - u_e[fs.left]) / float(temperature)
    bp, bm = bernoulli(delta), bernoulli(-delta)
    # round-off negatives (~1e-34 from the spectral phase) and exact zeros: floored at the
    # smallest normal double, so each such face adds ~1e-300 instead of nan
    R = np.maximum(np.asarray(rho, dtype=float).reshape(-1, grid.size), np.finfo(float).tiny)
    rl, rr = R[:, fs.left], R[:, fs.right]
    flux = bm * rr - bp * rl
    with np.errstate(divide="ignore", invalid="ignore"):
        dlog = np.log(rr) - np.log(rl) + delta
        term = np.where(flux == 0, 0.0, flux * dlog)
    out = term @ (grid.cell_volume * fs.inv_h2)
    return out if np.ndim(rho) > grid.ndim else out[0]
