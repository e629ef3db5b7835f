"""Polynomial energies ``U(x) = sum_k c_k prod_j x_j^{n_kj}``, conditional energies
``z -> U(x, z)`` with the leading coordinates held fixed, and stacks of independent blocks.

:class:`Polynomial` gives quartic double wells in any direction, couplings ``x z``,
``x^2 z^2``, ... with exact derivatives of every order, and the coefficients as data: one
compiled kernel serves every polynomial, and a model linear in its parameters,
``E_theta = sum_k theta_k x^{n_k}``, has ``d E / d theta_k = x^{n_k}``
(:meth:`Polynomial.monomials`).

:class:`Conditional` is any energy on ``R^{dx + dz}`` seen as a function of its last ``dz``
coordinates: its Gibbs law is the conditional law ``p(z | x)`` of the joint Gibbs law.  Its
kernels call the joint energy's kernels (value and gradient), and its Laplacian is the trace
of the ``z`` block of the joint Hessian, so a conditional of an energy without a Hessian
has no Laplacian and is refused.

:class:`Stacked` puts ``B`` energies of one kind (the same kernels, parameter vectors of one
length: the conditionals of one joint energy at ``B`` data points) on ``B`` blocks of
coordinates, ``U(z_1, ..., z_B) = sum_b U_b(z_b)``: its Gibbs law is the product of theirs,
so one particle run of ``n`` points in ``R^{B dz}`` is ``B`` independent runs of ``n`` points.
"""
from __future__ import annotations

import numpy as np

from fokkerplanck._core.jit import closure_jit, jit
from fokkerplanck._core.validate import check_keys, finite_array, points
from fokkerplanck.energies.base import Energy, Kernels, _frozen, from_spec, register

MAX_TERMS = 10_000
MAX_DEGREE = 64


# ---------------------------------------------------------------------------
# Polynomial.  params = [K, d, c_1..c_K, n_11..n_1d, ..., n_K1..n_Kd]
@jit(cache=True)
def _monomial(x, p, k, a, b):
    """``d_a d_b x^{n_k}`` (``a, b = -1``: no derivative) at the point ``x``."""
    K, d = int(p[0]), int(p[1])
    base = 2 + K + k * d
    v = 1.0
    for j in range(d):
        n = int(p[base + j])
        m = (1 if j == a else 0) + (1 if j == b else 0)
        if n < m:
            return 0.0
        f = 1.0
        for r in range(m):
            f *= n - r
        v *= f * x[j] ** (n - m)
    return v


@jit(cache=True)
def _poly_value(x, p):
    K = int(p[0])
    v = 0.0
    for k in range(K):
        v += p[2 + k] * _monomial(x, p, k, -1, -1)
    return v


@jit(cache=True)
def _poly_grad(x, p, out):
    K = int(p[0])
    for i in range(x.shape[0]):
        s = 0.0
        for k in range(K):
            s += p[2 + k] * _monomial(x, p, k, i, -1)
        out[i] = s


@jit(cache=True)
def _poly_lap(x, p):
    K = int(p[0])
    s = 0.0
    for i in range(x.shape[0]):
        for k in range(K):
            s += p[2 + k] * _monomial(x, p, k, i, i)
    return s


@jit(cache=True)
def _poly_hess(x, p, out):
    K = int(p[0])
    d = x.shape[0]
    for i in range(d):
        for j in range(i, d):
            s = 0.0
            for k in range(K):
                s += p[2 + k] * _monomial(x, p, k, i, j)
            out[i, j] = s
            out[j, i] = s


_POLY_KERNELS = Kernels(_poly_value, _poly_grad, _poly_lap, _poly_hess)


def _falling(n: np.ndarray, m: int) -> np.ndarray:
    """``n (n - 1) ... (n - m + 1)`` elementwise (0 where ``n < m``)."""
    f = np.ones_like(n, dtype=float)
    for r in range(m):
        f = f * np.maximum(n - r, 0)
    return f


class Polynomial(Energy):
    """``U(x) = sum_k c_k prod_j x_j^{n_kj}``: ``coefficients`` (K,), ``powers`` (K, d) of
    non-negative integers (degree at most 64 in each coordinate).

    ``Polynomial([1, -2], [[4, 0], [2, 0]])`` is ``x^4 - 2 x^2`` on ``R^2`` (flat in the
    second coordinate, so not confining there); whether ``exp(-U/T)`` is normalisable is
    the user's to ensure (:meth:`Energy.is_confining` checks it on a grid).  There is no
    closed-form ``log Z`` (use :meth:`fokkerplanck.Grid.log_partition`)."""

    def __init__(self, coefficients, powers):
        n = np.asarray(powers)
        if n.ndim != 2 or n.shape[0] == 0 or n.shape[1] == 0:
            raise ValueError(f"powers must be a (K, d) table with K, d >= 1, got shape {n.shape}")
        if n.shape[0] > MAX_TERMS:
            raise ValueError(f"at most {MAX_TERMS} terms, got {n.shape[0]}")
        nf = finite_array(n, "powers", shape=n.shape)
        if np.any(nf < 0) or np.any(nf != np.round(nf)) or np.any(nf > MAX_DEGREE):
            raise ValueError(f"powers must be integers in [0, {MAX_DEGREE}], got {n.tolist()}")
        self.powers = _frozen(nf).astype(np.int64)
        self.powers.setflags(write=False)
        K, d = self.powers.shape
        self.coefficients = _frozen(finite_array(coefficients, "coefficients", shape=(K,)))
        self.dim = d
        self.params = np.concatenate([[K, d], self.coefficients, self.powers.ravel().astype(float)])

    def monomials(self, x) -> np.ndarray:
        """The terms ``prod_j x_j^{n_kj}`` without their coefficients: shape (N, K)
        (``d U / d c_k``)."""
        X, _ = points(x, self.dim)
        return self._deriv(X, -1, -1)

    def _deriv(self, X, a: int, b: int) -> np.ndarray:
        """``d_a d_b`` of every monomial at the points: (N, K)."""
        out = np.ones((X.shape[0], self.powers.shape[0]))
        for j in range(self.dim):
            n = self.powers[:, j]
            m = (j == a) + (j == b)
            out *= _falling(n, m)[None, :] * X[:, j, None] ** np.maximum(n - m, 0)[None, :]
        return out

    def _value(self, X):
        return self._deriv(X, -1, -1) @ self.coefficients

    def _grad(self, X):
        return np.stack([self._deriv(X, i, -1) @ self.coefficients for i in range(self.dim)], axis=1)

    def _lap(self, X):
        return sum(self._deriv(X, i, i) @ self.coefficients for i in range(self.dim))

    def _hess(self, X):
        H = np.empty((X.shape[0], self.dim, self.dim))
        for i in range(self.dim):
            for j in range(i, self.dim):
                H[:, i, j] = H[:, j, i] = self._deriv(X, i, j) @ self.coefficients
        return H

    def _build_kernels(self):
        return _POLY_KERNELS

    def to_spec(self):
        return {"type": "Polynomial", "coefficients": self.coefficients.tolist(), "powers": self.powers.tolist()}

    def __repr__(self):
        terms = []
        for c, n in zip(self.coefficients, self.powers):
            mono = " ".join(f"x{j}^{int(e)}" if e > 1 else f"x{j}" for j, e in enumerate(n) if e > 0)
            terms.append(f"{c:g}" + (f" {mono}" if mono else ""))
        return "Polynomial(" + " + ".join(terms) + ")"


# ---------------------------------------------------------------------------
# Kernels built from another energy's kernels, once per (kind, kernel set)
_DERIVED: dict = {}


def _derived(kind: str, k: Kernels, build) -> Kernels:
    key = (kind, tuple(id(f) for f in k))
    if key not in _DERIVED:
        _DERIVED[key] = (k, build(k))  # keep k alive so ids stay unique
    return _DERIVED[key][1]


# ---------------------------------------------------------------------------
# Conditional.  params = [dx, x_1..x_dx, joint params...]
def _conditional_kernels(k: Kernels) -> Kernels:
    v, g, _, h = k

    @closure_jit
    def joint_point(z, p):
        dx = int(p[0])
        y = np.empty(dx + z.shape[0])
        y[:dx] = p[1:1 + dx]
        y[dx:] = z
        return y

    @closure_jit
    def value(z, p):
        dx = int(p[0])
        return v(joint_point(z, p), p[1 + dx:])

    @closure_jit
    def grad(z, p, out):
        dx = int(p[0])
        y = joint_point(z, p)
        full = np.empty(y.shape[0])
        g(y, p[1 + dx:], full)
        out[:] = full[dx:]

    @closure_jit
    def lap(z, p):
        dx = int(p[0])
        y = joint_point(z, p)
        H = np.empty((y.shape[0], y.shape[0]))
        h(y, p[1 + dx:], H)
        s = 0.0
        for i in range(dx, y.shape[0]):
            s += H[i, i]
        return s

    @closure_jit
    def hess(z, p, out):
        dx = int(p[0])
        y = joint_point(z, p)
        H = np.empty((y.shape[0], y.shape[0]))
        h(y, p[1 + dx:], H)
        out[:, :] = H[dx:, dx:]

    return Kernels(value, grad, lap, hess)


class Conditional(Energy):
    """``z -> U(x, z)``: the energy ``joint`` on ``R^{dx + dz}`` with its first ``dx``
    coordinates held at ``x``.  Its Gibbs law is the conditional law ``p(z | x)`` of the
    joint Gibbs law; its ``log Z`` is ``log int exp(-U(x, z) / T) dz`` (no closed form in
    general: :meth:`fokkerplanck.Grid.log_partition` on a grid in ``z``)."""

    def __init__(self, joint: Energy, x):
        if not isinstance(joint, Energy):
            raise TypeError(f"joint must be an Energy, got {type(joint).__name__}")
        x = finite_array(np.atleast_1d(np.asarray(x, dtype=float)), "x")
        if x.ndim != 1 or not 1 <= x.size < joint.dim:
            raise ValueError(f"x must hold between 1 and {joint.dim - 1} coordinates of the joint energy "
                             f"(dim {joint.dim}), got shape {np.shape(x)}")
        if not joint.has_hessian:
            raise ValueError(f"{joint!r} has no Hessian: the Laplacian in z (the trace of the z block of the "
                             "Hessian) is not available; give the energy a Hessian")
        self.joint, self.x = joint, _frozen(x)
        self.terms = (joint,)
        self.dim = joint.dim - x.size
        self.params = np.concatenate([[x.size], self.x, joint.params])

    def _joint(self, Z):
        return np.concatenate([np.broadcast_to(self.x, (Z.shape[0], self.x.size)), Z], axis=1)

    def _value(self, Z):
        return self.joint._value(self._joint(Z))

    def _grad(self, Z):
        return self.joint._grad(self._joint(Z))[:, self.x.size:]

    def _hess(self, Z):
        return self.joint._hess(self._joint(Z))[:, self.x.size:, self.x.size:]

    def _lap(self, Z):
        return np.trace(self._hess(Z), axis1=1, axis2=2)

    def _build_kernels(self):
        return _derived("conditional", self.joint.kernels, _conditional_kernels)

    def to_spec(self):
        return {"type": "Conditional", "joint": self.joint.to_spec(), "x": self.x.tolist()}

    @classmethod
    def _from_spec(cls, spec, allow_modules=()):
        check_keys(spec, {"type", "joint", "x"}, "Conditional spec")
        return cls(from_spec(spec["joint"], allow_modules=allow_modules), spec["x"])

    def __repr__(self):
        return f"Conditional({self.joint!r}, x={self.x.tolist()})"


# ---------------------------------------------------------------------------
# Stacked.  params = [B, d_block, n_params, p_1..., p_B...]
def _stacked_kernels(k: Kernels) -> Kernels:
    v, g, lap1, h = k

    @closure_jit
    def value(x, p):
        B, d, n = int(p[0]), int(p[1]), int(p[2])
        s = 0.0
        for b in range(B):
            s += v(x[b * d:(b + 1) * d], p[3 + b * n:3 + (b + 1) * n])
        return s

    @closure_jit
    def grad(x, p, out):
        B, d, n = int(p[0]), int(p[1]), int(p[2])
        for b in range(B):
            g(x[b * d:(b + 1) * d], p[3 + b * n:3 + (b + 1) * n], out[b * d:(b + 1) * d])

    @closure_jit
    def lap(x, p):
        B, d, n = int(p[0]), int(p[1]), int(p[2])
        s = 0.0
        for b in range(B):
            s += lap1(x[b * d:(b + 1) * d], p[3 + b * n:3 + (b + 1) * n])
        return s

    @closure_jit
    def hess(x, p, out):
        B, d, n = int(p[0]), int(p[1]), int(p[2])
        out[:, :] = 0.0
        block = np.empty((d, d))
        for b in range(B):
            h(x[b * d:(b + 1) * d], p[3 + b * n:3 + (b + 1) * n], block)
            out[b * d:(b + 1) * d, b * d:(b + 1) * d] = block

    return Kernels(value, grad, lap, hess)


class Stacked(Energy):
    """``U(z_1, ..., z_B) = sum_b U_b(z_b)`` for energies ``U_b`` of one kind and dimension
    (one type, parameter vectors of one length), each on its own block of coordinates.  Its
    Gibbs law is the product of theirs; ``log Z`` is the sum of theirs."""

    def __init__(self, energies):
        es = tuple(energies)
        if not es or not all(isinstance(e, Energy) for e in es):
            raise ValueError("Stacked needs a non-empty list of Energy objects")
        kinds = {(type(e), e.dim, len(e.params)) for e in es}
        if len(kinds) != 1:
            raise ValueError("Stacked needs energies of one type, dimension and parameter length, got "
                             f"{sorted((k[0].__name__, k[1], k[2]) for k in kinds)}")
        self.blocks, self.terms = es, es
        self.block_dim = es[0].dim
        self.dim = len(es) * self.block_dim
        self.params = np.concatenate([[len(es), self.block_dim, len(es[0].params)], *[e.params for e in es]])

    def _slices(self, X):
        d = self.block_dim
        return [(e, X[:, b * d:(b + 1) * d]) for b, e in enumerate(self.blocks)]

    def _value(self, X):
        return sum(e._value(Z) for e, Z in self._slices(X))

    def _grad(self, X):
        return np.concatenate([e._grad(Z) for e, Z in self._slices(X)], axis=1)

    def _lap(self, X):
        return sum(e._lap(Z) for e, Z in self._slices(X))

    def _hess(self, X):
        H = np.zeros((X.shape[0], self.dim, self.dim))
        d = self.block_dim
        for b, (e, Z) in enumerate(self._slices(X)):
            H[:, b * d:(b + 1) * d, b * d:(b + 1) * d] = e._hess(Z)
        return H

    def max_curvature(self, x) -> float:
        """The largest eigenvalue of the block-diagonal Hessian: the largest of the blocks'."""
        X, _ = points(x, self.dim)
        return max(e.max_curvature(Z) for e, Z in self._slices(X))

    def log_partition(self, temperature: float = 1.0) -> float:
        return float(sum(e.log_partition(temperature) for e in self.blocks))

    def _build_kernels(self):
        if len({tuple(id(f) for f in e.kernels) for e in self.blocks}) != 1:
            raise ValueError("the stacked energies compile to different kernels; stack energies of one kind")
        return _derived("stacked", self.blocks[0].kernels, _stacked_kernels)

    def to_spec(self):
        return {"type": "Stacked", "energies": [e.to_spec() for e in self.blocks]}

    @classmethod
    def _from_spec(cls, spec, allow_modules=()):
        check_keys(spec, {"type", "energies"}, "Stacked spec")
        return cls([from_spec(e, allow_modules=allow_modules) for e in spec["energies"]])

    def __repr__(self):
        return f"Stacked({len(self.blocks)} x {self.blocks[0]!r})"


register(Polynomial)
register(Conditional)
register(Stacked)
