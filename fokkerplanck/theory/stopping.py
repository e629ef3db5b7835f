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

__all__ = ["tau_det", "kl_argmin", "kl_reaches", "StoppingTime", "LSConstant", "bakry_emery", "holley_stroock",
           "spectral_gap_estimate", "observed_rate", "tau_lang"]


@dataclass(frozen=True)
class StoppingTime:
    """A stopping time, the index of the first save at or after it, how it was found, and
    how well it is known.

    ``stderr``: the standard error of a time estimated from noisy (particle) data; 0 for
    exact data, where the error is not statistical.  ``bracket``: the saved times that
    surely contain the event on exact data (the save interval in which ``R_t`` crossed 1,
    or the neighbours of the smallest saved KL): the interpolated ``time`` within it is
    second-order accurate, the bracket is the guarantee.  ``note``: what a reader must know
    in words (the event inside the first save interval, at ``t = 0``, or never reached).
    """

    time: float
    index: int
    source: str
    stderr: float = 0.0
    bracket: tuple = (float("nan"), float("nan"))
    note: str = ""

    def step(self, dt: float) -> int:
        """``k*`` for a scheme of step ``dt``: the first step index with ``k dt >= time``."""
        return int(np.ceil(self.time / dt - 1e-9))

    def as_dict(self) -> dict:
        """The fields a run file and ``fpk info`` carry (``bracket`` as a two-element list)."""
        out = {"time": self.time, "source": self.source, "bracket": [float(b) for b in self.bracket]}
        if self.stderr:
            out["stderr"] = self.stderr
        if self.note:
            out["note"] = self.note
        return out


def tau_det(times, ratio, *, stderr=None, source: str = "R_t") -> StoppingTime:
    """First time ``R_t`` reaches 1, linearly interpolated between saved times
    (error O(dt^2)); ``time = inf`` if it never does, ``0`` if ``R_0 >= 1``.

    ``stderr`` (same shape as ``ratio``): standard errors of a particle estimate of
    ``R_t``; the time's standard error is then the delta-method one,
    ``se(R) / |dR/dt|`` at the crossing."""
    t = np.asarray(times, dtype=float)
    R = np.asarray(ratio, dtype=float)
    if t.shape != R.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"times and ratio must be non-empty 1-D arrays of equal length, got {t.shape} and {R.shape}")
    if stderr is not None and np.shape(stderr) != R.shape:
        raise ValueError(f"stderr must have the shape of ratio {R.shape}, got {np.shape(stderr)}")
    above = np.flatnonzero(R >= 1.0)
    if above.size == 0:
        return StoppingTime(np.inf, t.size, source, bracket=(float(t[-1]), np.inf),
                            note=f"R_t stays below 1 up to the last save t = {t[-1]:g}: tau_det is later")
    k = int(above[0])
    if k == 0:
        return StoppingTime(float(t[0]), 0, source, bracket=(float(t[0]), float(t[0])),
                            note="R_0 >= 1: the flow starts at or past its KL minimum (tau_det = 0)")
    s = (1.0 - R[k - 1]) / (R[k] - R[k - 1])
    se = 0.0
    if stderr is not None:
        se_r = np.asarray(stderr, dtype=float)
        slope = (R[k] - R[k - 1]) / (t[k] - t[k - 1])
        se = float(((1 - s) * se_r[k - 1] + s * se_r[k]) / abs(slope))
    note = (f"tau_det lies in the first save interval [{t[0]:g}, {t[1]:g}]: save more often to resolve it"
            if k == 1 else "")
    return StoppingTime(float(t[k - 1] + s * (t[k] - t[k - 1])), k, source, se, (float(t[k - 1]), float(t[k])), note)


def kl_argmin(times, kl, *, first_local: bool = True, valid=None, source: str = "argmin KL") -> StoppingTime:
    """Time of the minimum of a KL trajectory: the smallest saved value refined by the
    vertex of the parabola through it and its neighbours (error O(dt^2) on uniform saves).

    ``first_local`` (default): the first local minimum, which is what the deterministic
    flow's KL has at tau_det; ``False``: the global minimum.  ``valid``: a boolean mask of
    the saves whose KL is a KL value (``Trajectory.valid()``); the search stops at the
    first invalid save, so a grid that lost the collapsing density cannot move the answer.
    NaN values end the search too."""
    t = np.asarray(times, dtype=float)
    K = np.asarray(kl, dtype=float)
    if t.shape != K.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"times and kl must be non-empty 1-D arrays of equal length, got {t.shape} and {K.shape}")
    ok = np.isfinite(K) if valid is None else np.isfinite(K) & np.asarray(valid, dtype=bool)
    n = int(np.argmin(ok)) if not ok.all() else K.size   # the usable prefix
    if n == 0:
        return StoppingTime(np.nan, 0, source, note="no valid KL value at the first save: no minimum to report")
    Kp = K[:n]
    k = int(np.argmin(Kp))
    if first_local:
        rises = np.flatnonzero(np.diff(Kp) > 0)
        k = int(rises[0]) if rises.size else n - 1
    note = ""
    if n < K.size and k == n - 1:
        note = (f"KL is still falling at the last valid save t = {t[n - 1]:g} (later saves are not valid): "
                "the minimum is at or after it")
    elif k == n - 1:
        note = f"KL is still falling at the last save t = {t[-1]:g}: the minimum is at or after it"
    elif k == 0:
        note = "KL rises from the first save: the minimum is at t = 0 or inside the first save interval"
    bracket = (float(t[max(k - 1, 0)]), float(t[min(k + 1, n - 1)]))
    if 0 < k < n - 1:
        t0, t1, t2 = t[k - 1:k + 2]
        k0, k1, k2 = Kp[k - 1:k + 2]
        den = (t0 - t1) * (t0 - t2) * (t1 - t2)
        a = (t2 * (k1 - k0) + t1 * (k0 - k2) + t0 * (k2 - k1)) / den
        b = (t2**2 * (k0 - k1) + t1**2 * (k2 - k0) + t0**2 * (k1 - k2)) / den
        if a > 0:
            return StoppingTime(float(-b / (2 * a)), k, source, bracket=bracket, note=note)
    return StoppingTime(float(t[k]), k, source, bracket=bracket, note=note)


def kl_reaches(times, kl, eps: float, *, valid=None, source: str = "observed") -> StoppingTime:
    """The first saved time at which a (Langevin) KL trajectory is at or below ``eps``,
    linearly interpolated in log KL between the saves around it: what a run observed, to
    set beside ``tau_Lang(eps)`` (a bound when its ``C_LS`` is certified)."""
    t = np.asarray(times, dtype=float)
    K = np.asarray(kl, dtype=float)
    ok = np.isfinite(K) if valid is None else np.isfinite(K) & np.asarray(valid, dtype=bool)
    hit = np.flatnonzero(ok & (K <= eps))
    if hit.size == 0:
        return StoppingTime(np.inf, t.size, source, bracket=(float(t[-1]), np.inf),
                            note=f"KL stays above {eps:g} up to the last save t = {t[-1]:g}")
    k = int(hit[0])
    if k == 0:
        return StoppingTime(float(t[0]), 0, source, bracket=(float(t[0]), float(t[0])),
                            note=f"KL_0 <= {eps:g} already")
    if not ok[k - 1]:   # the save before is not usable: the event lies after the last usable save before k
        prev = np.flatnonzero(ok[:k])
        lo = float(t[prev[-1]]) if prev.size else float(t[0])
        return StoppingTime(float(t[k]), k, source, bracket=(lo, float(t[k])),
                            note=f"the save before t = {t[k]:g} is not valid: KL <= {eps:g} is reached within "
                                 f"[{lo:g}, {t[k]:g}], reported at its end")
    a, b = K[k - 1], K[k]
    s = (np.log(a) - np.log(eps)) / (np.log(a) - np.log(b)) if a > 0 and b > 0 else 1.0
    return StoppingTime(float(t[k - 1] + s * (t[k] - t[k - 1])), k, source, bracket=(float(t[k - 1]), float(t[k])))


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
    minimum over the cell centres stands in for the infimum, which can lie below
    it between centres: labelled so in the source, and not certified."""
    H = energy.hessian(grid.points)
    lam = np.linalg.eigvalsh(H).min()
    if lam <= 0:
        raise ValueError(f"U is not strongly convex on the box (min eig hess U = {lam:.3g}): "
                         "no Bakry-Emery constant; try holley_stroock or an estimate")
    constant = bool(np.all(H == H[0]))
    src = "Bakry-Emery, min eig hess U" + ("" if constant else " over the grid's cells")
    return LSConstant(float(lam), src, constant)


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
    note = ("certified: KL_t <= eps from this time on" if c_ls.certified else
            "estimated: C_LS is not certified, so KL may still exceed eps at this time")
    return StoppingTime(t, -1, f"tau_Lang(eps={eps:g}) with {c_ls!r}", bracket=(t, t), note=note)
