"""Stopping rules (DESIGN.md section 2).

Deterministic flow: ``tau_det = inf{t >= 0 : R_t >= 1}``, which along the exact
flow is where KL is minimal (``d/dt KL = -(E|grad U|^2 / T)(1 - R_t)``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["tau_det", "kl_argmin", "StoppingTime"]


@dataclass(frozen=True)
class StoppingTime:
    """A stopping time, the step index ``k*`` of the first save at or after it, and how it was found."""

    time: float
    index: int
    source: str

    def step(self, dt: float) -> int:
        """``k*`` for a scheme of step ``dt``: the first step index with ``k dt >= time``."""
        return int(np.ceil(self.time / dt - 1e-9))


def tau_det(times, ratio, *, source: str = "R_t") -> StoppingTime:
    """First time ``R_t`` reaches 1, linearly interpolated between saved times
    (error O(dt^2)); ``time = inf`` if it never does, ``0`` if ``R_0 >= 1``."""
    t = np.asarray(times, dtype=float)
    R = np.asarray(ratio, dtype=float)
    if t.shape != R.shape or t.ndim != 1:
        raise ValueError(f"times and ratio must be 1-D arrays of equal length, got {t.shape} and {R.shape}")
    above = np.flatnonzero(R >= 1.0)
    if above.size == 0:
        return StoppingTime(np.inf, t.size, source)
    k = int(above[0])
    if k == 0:
        return StoppingTime(float(t[0]), 0, source)
    s = (1.0 - R[k - 1]) / (R[k] - R[k - 1])
    return StoppingTime(float(t[k - 1] + s * (t[k] - t[k - 1])), k, source)


def kl_argmin(times, kl, *, source: str = "argmin KL") -> StoppingTime:
    """Time of the minimum of a KL trajectory: the smallest saved value refined by
    the vertex of the parabola through it and its neighbours (error O(dt^2) on
    uniform saves)."""
    t = np.asarray(times, dtype=float)
    K = np.asarray(kl, dtype=float)
    k = int(np.argmin(K))
    if 0 < k < t.size - 1:
        t0, t1, t2 = t[k - 1:k + 2]
        k0, k1, k2 = K[k - 1:k + 2]
        den = (t0 - t1) * (t0 - t2) * (t1 - t2)
        a = (t2 * (k1 - k0) + t1 * (k0 - k2) + t0 * (k2 - k1)) / den
        b = (t2**2 * (k0 - k1) + t1**2 * (k2 - k0) + t0**2 * (k1 - k2)) / den
        if a > 0:
            return StoppingTime(float(-b / (2 * a)), k, source)
    return StoppingTime(float(t[k]), k, source)
