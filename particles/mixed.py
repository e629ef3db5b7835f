"""Particles of a label coupled to coordinates (:class:`fokkerplanck.discrete.mixed.JointMixture`):
an Euler-Maruyama step in x under the current label and a heat-bath label resampling with
probability ``1 - e^{-dt}`` per step (first order in ``dt``), compiled, with the
counter-based noise of :mod:`fokkerplanck._core.rng`, in the bounded compiled calls of
:class:`particles.ensemble.Chunks` (Ctrl-C stops a run within about a second, keeping the
completed saves: :class:`particles.ensemble.EnsembleInterrupted`).  The exact law it is
held against is :class:`fokkerplanck.discrete.mixed.MixedSpace`."""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from fokkerplanck._core.jit import pjit
from fokkerplanck._core.rng import (
    STREAM_ACCEPT,
    STREAM_LABEL,
    STREAM_NOISE,
    draw_from_logits,
    fill_normals,
    seed_key,
    uniform,
)
from fokkerplanck._core.validate import check_memory, finite_array, positive_float, positive_int
from fokkerplanck.discrete.mixed import JointMixture
from particles.ensemble import CHUNK_WORK, Chunks, EnsembleInterrupted
from particles.options import check_seed

__all__ = ["simulate"]


@pjit(cache=True)
def _advance(X, lab, step0, nsteps, dt, T, means, precs, offsets, p_jump, k0, k1, offset):
    """Euler-Maruyama in x under the current label, then a heat-bath label draw with
    probability ``p_jump``; noise by the counter-based Philox keyed (particle, step)."""
    n, d = X.shape
    K = means.shape[0]
    s2 = math.sqrt(2.0 * T * dt)
    for i in prange(n):
        gi = offset + i
        x = X[i].copy()
        z = np.empty(d)
        g = np.empty(d)
        lw = np.empty(K)
        k = lab[i]
        for s in range(step0, step0 + nsteps):
            for a in range(d):
                acc = 0.0
                for b in range(d):
                    acc += precs[k, a, b] * (x[b] - means[k, b])
                g[a] = acc
            fill_normals(z, k0, k1, gi, s, STREAM_NOISE)
            for a in range(d):
                x[a] += -dt * g[a] + s2 * z[a]
            if uniform(k0, k1, gi, s, STREAM_ACCEPT) < p_jump:
                for j in range(K):
                    q = 0.0
                    for a in range(d):
                        ya = x[a] - means[j, a]
                        for b in range(d):
                            q += ya * precs[j, a, b] * (x[b] - means[j, b])
                    lw[j] = -(offsets[j] + 0.5 * q) / T
                k = draw_from_logits(lw, uniform(k0, k1, gi, s, STREAM_LABEL))
        X[i] = x
        lab[i] = k


def simulate(model: JointMixture, labels0, x0, dt: float, n_steps: int, *, temperature: float = 1.0,
             save_every: int | None = None, seed=None, index_offset: int = 0, save=None):
    """Particles of the joint dynamics: ``x += -dt grad U_k(x) + sqrt(2 T dt) xi`` and, with
    probability ``1 - e^{-dt}`` per step, the label redrawn from ``pi(. | x)`` (first order
    in ``dt``).  Compiled, with the counter-based Philox keyed by (particle, step): the same
    bits for any thread count, save schedule or split (``index_offset``).  Returns
    ``(times, labels (n_saves, N), positions (n_saves, N, d))``.

    save : a :class:`particles.Save` (``every`` steps or ``times``; snapshots in memory), as
        for every particle integrator; ``save_every=`` is ``Save(every=...)``.

    Ctrl-C raises :class:`particles.ensemble.EnsembleInterrupted` within about a second,
    its ``partial`` the ``(times, labels, positions)`` of the completed saves."""
    X = finite_array(x0, "x0")
    if X.ndim != 2 or X.shape[1] != model.dim:
        raise ValueError(f"x0 must have shape (N, {model.dim}), got {X.shape}")
    k = np.asarray(labels0)
    if k.shape != (X.shape[0],) or not np.issubdtype(k.dtype, np.integer) or k.min() < 0 or k.max() >= model.K:
        raise ValueError(f"labels0 must be N integers in 0..{model.K - 1}")
    dt = positive_float(dt, "dt")
    n_steps = positive_int(n_steps, "n_steps")
    T = positive_float(temperature, "temperature")
    if save is not None:
        if save_every is not None:
            raise ValueError("mixed.simulate: save_every= given together with save=; put it in the Save")
        if not (hasattr(save, "steps") and hasattr(save, "positions_only")):
            raise ValueError(f"save must be a particles.Save, got {type(save).__name__}")
        save.positions_only("mixed.simulate")
        n_saves = save.n_saves(n_steps)
    else:   # the schedule of Save(every=save_every), without importing particles
        every = n_steps if save_every is None else positive_int(save_every, "save_every")
        n_saves = -(-n_steps // every) + 1
    if int(index_offset) != index_offset or index_offset < 0:
        raise ValueError(f"index_offset must be a non-negative integer, got {index_offset!r}")
    seed = int(np.random.SeedSequence().entropy % (1 << 63)) if seed is None else check_seed(seed)
    k0, k1 = seed_key(seed)
    check_memory(8.0 * X.size * (n_saves + 2) + 8.0 * k.size * n_saves, f"{n_saves} saves of {X.shape[0]} particles")
    steps = save.steps(n_steps, dt).tolist() if save is not None else list(range(0, n_steps, every)) + [n_steps]
    X, lab = np.ascontiguousarray(X, dtype=float).copy(), k.astype(np.int64).copy()
    precs = np.ascontiguousarray(np.stack([np.linalg.inv(c) for c in model.covs]))
    p_jump = -math.expm1(-dt)
    times, labs, pos = [], [], []
    done = 0

    def piece(a, b):
        _advance(X, lab, a, b - a, dt, T, model.means, precs, model.offsets, p_jump, k0, k1, int(index_offset))

    def result():
        n, d = X.shape
        m = min(len(times), len(labs), len(pos))   # Ctrl-C may land between the appends of a save
        return (np.array(times[:m]), np.array(labs[:m], dtype=np.int64).reshape(m, n),
                np.array(pos[:m]).reshape(m, n, d))

    chunks = Chunks(CHUNK_WORK // X.shape[0])   # bounded compiled calls: Ctrl-C is seen between them
    try:
        for stop in steps:
            if stop > done:
                chunks.run(done, stop, piece)
                done = stop
            times.append(done * dt)
            labs.append(lab.copy())
            pos.append(X.copy())
    except KeyboardInterrupt:
        part = result()
        raise EnsembleInterrupted(part, part[0].size, n_saves, t=part[0][-1] if part[0].size else 0.0) from None
    return result()
