"""Weighted Poisson problems on a grid: ``-div(w grad phi) = b`` with zero-flux walls,
assembled on the faces of :func:`fokkerplanck.operators.fluxes.faces` and solved with
the constant pinned.  The potential flow of a homotopy and the linearised W2 both
solve here."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from fokkerplanck.operators.fluxes import faces

__all__ = ["FLOOR", "weighted_laplacian", "solve_pinned"]

FLOOR = 1e-12


def weighted_laplacian(grid, face_weights):
    """``A = sum_f w_f / h_a^2 (e_R - e_L)(e_R - e_L)'`` over the interior faces of ``grid``
    (:func:`fokkerplanck.operators.fluxes.faces` order; zero-flux walls), the weights floored at
    :data:`FLOOR` times their maximum: ``A phi`` is ``-div(w grad phi)`` in the cells."""
    fs = faces(grid)
    wf = np.asarray(face_weights, dtype=float)
    wf = np.maximum(wf, FLOOR * wf.max()) * fs.inv_h2
    n = grid.size
    return sp.csr_matrix((np.concatenate([-wf, -wf, wf, wf]),
                          (np.concatenate([fs.left, fs.right, fs.left, fs.right]),
                           np.concatenate([fs.right, fs.left, fs.left, fs.right]))), shape=(n, n))


def solve_pinned(A, b, ndim: int = 2) -> np.ndarray:
    """``A phi = b`` for a weighted Laplacian (singular: constants) and a compatible ``b``
    (cell sum zero), returned with mean zero.  Up to 2D: cell 0 pinned to 0 and the SPD rest
    by sparse LU.  3D: LU fill-in grows as n^(4/3) (24^3 cells: 1.0 s a solve, 32^3: 5.4 s),
    so Jacobi-preconditioned conjugate gradients on the singular compatible system instead
    (0.03 / 0.04 s; the weighted energy norm of the difference from LU 6e-10 / 3e-9),
    falling back to LU if CG does not converge."""
    if ndim >= 3:
        x, info = spla.cg(A, b, rtol=1e-12, maxiter=20 * A.shape[0], M=sp.diags(1.0 / A.diagonal()))
        if info == 0:
            return x - x.mean()
    phi = np.zeros(A.shape[0])
    phi[1:] = spla.spsolve(A[1:, 1:].tocsc(), b[1:])
    return phi - phi.mean()
