"""Stopping rules (DESIGN.md section 2).

Deterministic flow: ``tau_det = inf{t >= 0 : R_t >= 1}``, which along the exact
flow is where KL is minimal (``d/dt KL = -(E|grad U|^2 / T)(1 - R_t)``).
Langevin: ``tau_Lang(eps) = log(KL_0 / eps) / (2 C_LS)``, with ``C_LS`` from a
labelled source: certified (Bakry-Emery, Holley-Stroock) or estimated
(spectral gap, observed rate).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["tau_det", "kl_argmin", "StoppingTime", "LSConstant", "bakry_emery", "holley_stroock",
           "spectral_gap_estimate", "observed_rate", "tau_lang"]


@dataclass(frozen=True)
class StoppingTime:
    """A stopping time, the step index ``k*`` of the first save at or after it, how it
    was found, and its standard error when it was estimated from noisy data."""

    time: float
    index: int
    source: str
    stderr: float = 0.0

    def step(self, dt: float) -> int:
        """``k*`` for a scheme of step ``dt``: the first step index with ``k dt >= time``."""
        return int(np.ceil(self.time / dt - 1e-9))


def tau_det(times, ratio, *, stderr=None, source: str = "R_t") -> StoppingTime:
    """First time ``R_t`` reaches 1, linearly interpolated between saved times
    (error O(dt^2)); ``time = inf`` if it never does, ``0`` if ``R_0 >= 1``.

    ``stderr`` (same shape as ``ratio``): standard errors of a particle estimate of
    ``R_t``; the time's standard error is then the delta-method one,
    ``se(R) / |dR/dt|`` at the crossing."""
    t = np.asarray(times, dtype=float)
    R = np.asarray(ratio, dtype=float)
    if t.shape != R.shape or t.ndim != 1:
        raise ValueError(f"times and ratio must be 1-D arrays of equal length, got {t.shape} and {R.shape}")
    if stderr is not None and np.shape(stderr) != R.shape:
        raise ValueError(f"stderr must have the shape of ratio {R.shape}, got {np.shape(stderr)}")
    above = np.flatnonzero(R >= 1.0)
    if above.size == 0:
        return StoppingTime(np.inf, t.size, source)
    k = int(above[0])
    if k == 0:
        return StoppingTime(float(t[0]), 0, source)
    s = (1.0 - R[k - 1]) / (R[k] - R[k - 1])
    se = 0.0
    if stderr is not None:
        se_r = np.asarray(stderr, dtype=float)
        slope = (R[k] - R[k - 1]) / (t[k] - t[k - 1])
        se = float(((1 - s) * se_r[k - 1] + s * se_r[k]) / abs(slope))
    return StoppingTime(float(t[k - 1] + s * (t[k] - t[k - 1])), k, source, se)


def kl_argmin(times, kl, *, first_local: bool = False, source: str = "argmin KL") -> StoppingTime:
    """Time of the minimum of a KL trajectory: the smallest saved value refined by
    the vertex of the parabola through it and its neighbours (error O(dt^2) on
    uniform saves).  ``first_local``: the first local minimum instead of the global
    one (the deterministic flow's KL falls until tau_det; a later, lower dip on a
    grid is the grid failing to resolve the collapsing density)."""
    t = np.asarray(times, dtype=float)
    K = np.asarray(kl, dtype=float)
    k = int(np.argmin(K))
    if first_local:
        rises = np.flatnonzero(np.diff(K) > 0)
        k = int(rises[0]) if rises.size else K.size - 1
    if 0 < k < t.size - 1:
        t0, t1, t2 = t[k - 1:k + 2]
        k0, k1, k2 = K[k - 1:k + 2]
        den = (t0 - t1) * (t0 - t2) * (t1 - t2)
        a = (t2 * (k1 - k0) + t1 * (k0 - k2) + t0 * (k2 - k1)) / den
        b = (t2**2 * (k0 - k1) + t1**2 * (k2 - k0) + t0**2 * (k1 - k2)) / den
        if a > 0:
            return StoppingTime(float(-b / (2 * a)), k, source)
    return StoppingTime(float(t[k]), k, source)


# ---------------------------------------------------------------------------------------
# Langevin: tau_Lang(eps) = log(KL_0 / eps) / (2 C_LS)
@dataclass(frozen=True)
class LSConstant:
    """A log-Sobolev rate ``C_LS`` (``KL_t <= exp(-2 C_LS t) KL_0``) and where it came from."""

    value: float
    source: str
    certified: bool

    def __repr__(self):
        return f"C_LS = {self.value:.6g} ({'certified' if self.certified else 'estimated'}: {self.source})"


def bakry_emery(energy, grid) -> LSConstant:
    """``kappa = min eig(hess U)`` over the grid's cell centres; ``C_LS = kappa`` when > 0.

    Certified for the law on the box when the Hessian bound holds everywhere
    on it: exact for quadratics (constant Hessian); for other energies the
    minimum over the cell centres stands in for the infimum (labelled so)."""
    H = energy.hessian(grid.points)
    lam = np.linalg.eigvalsh(H).min()
    if lam <= 0:
        raise ValueError(f"U is not strongly convex on the box (min eig hess U = {lam:.3g}): "
                         "no Bakry-Emery constant; try holley_stroock or an estimate")
    constant = bool(np.all(H == H[0]))
    src = "Bakry-Emery, min eig hess U" + ("" if constant else " over the grid's cells")
    return LSConstant(float(lam), src, True)


def holley_stroock(kappa: float, W, grid, temperature: float = 1.0) -> LSConstant:
    """``U = U0 + W`` with ``U0`` ``kappa``-convex and ``W`` bounded:
    ``C_LS = kappa exp(-osc(W) / T)``; ``osc(W)`` = max - min of ``W`` on the grid."""
    vals = grid.evaluate(W)
    osc = float(vals.max() - vals.min())
    return LSConstant(float(kappa) * float(np.exp(-osc / temperature)), f"Holley-Stroock, osc(W) = {osc:.4g}", True)


def spectral_gap_estimate(fokker_planck) -> LSConstant:
    """``lambda_1`` of the discrete generator: a Poincare constant, >= C_LS, so the
    time it gives is *not* a certificate."""
    return LSConstant(fokker_planck.spectral_gap(), "spectral gap of the discrete generator (Poincare >= C_LS)",
                      False)


def observed_rate(trajectory, *, kl_floor: float = 1e-10) -> LSConstant:
    """``min_t T I(t) / (2 KL(t))`` along a computed trajectory (where KL > kl_floor).

    Over a short window this can exceed the true C_LS, so the time it gives can be too
    short: OU with the certified 0.540 gave 0.725 on t in [0, 1]
    (``fpk run ou; fpk info``); labelled estimated for that reason."""
    kl, I = trajectory.kl(), trajectory.fisher()
    ok = kl > kl_floor
    if not ok.any():
        raise ValueError("KL is below the floor at every saved time: no rate to observe")
    return LSConstant(float(np.min(trajectory.temperature * I[ok] / (2 * kl[ok]))),
                      "observed rate min T I / (2 KL) along the trajectory", False)


def tau_lang(eps: float, kl0: float, c_ls: LSConstant) -> StoppingTime:
    """``tau_Lang(eps) = log(KL_0 / eps) / (2 C_LS)`` (0 when KL_0 <= eps)."""
    if not (eps > 0 and kl0 >= 0 and c_ls.value > 0):  # also rejects NaN
        raise ValueError(f"need eps > 0, KL_0 >= 0 and C_LS > 0; got {eps}, {kl0}, {c_ls.value}")
    t = max(0.0, float(np.log(kl0 / eps)) / (2 * c_ls.value)) if kl0 > 0 else 0.0
    return StoppingTime(t, -1, f"tau_Lang(eps={eps:g}) with {c_ls!r}")
