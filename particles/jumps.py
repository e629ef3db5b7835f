"""Continuous-time jump processes on spin lattices: particles of the master equations of
:mod:`fokkerplanck.discrete`.

Every site carries a rate-1 clock, so a particle's events come at rate ``n`` (its
number of sites); at an event a uniformly chosen site is updated by the dynamics:

* ``"glauber"`` (heat bath): the site's letter is redrawn from its conditional law;
* ``"metropolis"``: one of the other ``q - 1`` letters is proposed uniformly and
  accepted with ``min(1, exp(-dE / T))``.

This is exactly the generator of :func:`fokkerplanck.discrete.glauber` /
:func:`~fokkerplanck.discrete.metropolis` (uniformised at rate ``n``).  Randomness is
the counter-based Philox of :mod:`fokkerplanck._core.rng`, keyed by ``(particle, event)``: a
particle's path does not depend on the thread count, the save times or the split of
the particles.  Waiting times are carried across saves (a pending event is never
redrawn), which is what makes the path independent of the save schedule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import prange

from fokkerplanck._core.jit import jit, pjit
from fokkerplanck._core.validate import check_memory, check_times, positive_float
from fokkerplanck.discrete.finite import MAX_STATES, PairEnergy

from fokkerplanck._core.rng import STREAM_JUMP, draw_from_logits, philox4x32, seed_key

from particles.options import Save

_M32 = np.uint64(0xFFFFFFFF)


@jit(cache=True, inline="always")
def _u53(a, b):
    """A uniform in (0, 1] from two 32-bit words (53 random bits; as the Philox uniforms of
    :mod:`fokkerplanck._core.rng`)."""
    return ((a >> np.uint64(5)) * 67108864.0 + (b >> np.uint64(6)) + 1.0) / 9007199254740992.0

__all__ = ["JumpEnsemble", "simulate", "JUMP_DYNAMICS"]

JUMP_DYNAMICS = {"glauber": 0, "metropolis": 1}


@jit(cache=True)
def _words(k0, k1, particle, event, stream):
    pid = np.uint64(particle)
    ev = np.uint64(event)
    return philox4x32(pid & _M32, ev & _M32, np.uint64(stream) << np.uint64(16),
                      (pid >> np.uint64(32)) ^ ((ev >> np.uint64(32)) << np.uint64(16)), k0, k1)


@jit(cache=True)
def _wait(k0, k1, particle, event, rate):
    """The waiting time before event ``event`` (its words 0 and 1)."""
    w0, w1, _, _ = _words(k0, k1, particle, event, STREAM_JUMP)
    return -math.log(_u53(w0, w1)) / rate


@jit(cache=True)
def _local(c, i, a, nbr, P, F):
    """Energy terms of site ``i`` holding letter ``a`` (its field and its edges)."""
    e = F[a]
    for k in range(nbr.shape[1]):
        j = nbr[i, k]
        if j >= 0:
            e += P[a, c[j]]
    return e


@jit(cache=True)
def _energy(c, edges, P, F):
    e = 0.0
    for k in range(edges.shape[0]):
        e += P[c[edges[k, 0]], c[edges[k, 1]]]
    for i in range(c.shape[0]):
        e += F[c[i]]
    return e


@pjit(cache=True)
def _run(C, tev, nev, t_stop, nbr, edges, P, F, beta, dyn, k0, k1, offset, energy, magnet, index, q):
    """Advance every particle to ``t_stop``; record its energy, magnetisation (sum of
    ``2 c - 1``, meaningful for q = 2) and state index (if ``index`` has a column)."""
    n_part, n = C.shape
    rate = float(n)
    for p in prange(n_part):
        gp = offset + p
        c = C[p]
        lw = np.empty(q)
        t = tev[p]
        e = nev[p]
        # one Philox block per event: words 0-1 give its waiting time (t is already its
        # time), word 2 the site (high half of w2 * n) and a letter uniform (its low half),
        # word 3 the acceptance / heat-bath uniform
        _, _, w2, w3 = _words(k0, k1, gp, e, STREAM_JUMP)
        while t <= t_stop:
            prod = w2 * np.uint64(n)
            i = int(prod >> np.uint64(32))
            u = (np.float64(w3) + 0.5) * 2.3283064365386963e-10
            if dyn == 0 and q == 2:  # heat bath, two letters: one exponential
                d = _local(c, i, 1, nbr, P, F) - _local(c, i, 0, nbr, P, F)
                c[i] = 1 if u * (1.0 + math.exp(beta * d)) < 1.0 else 0
            elif dyn == 0:  # heat bath: redraw the letter from its conditional law
                for a in range(q):
                    lw[a] = -beta * _local(c, i, a, nbr, P, F)
                c[i] = draw_from_logits(lw, u)
            else:  # Metropolis: propose another letter uniformly, accept with min(1, e^{-beta dE})
                v = (np.float64(prod & _M32) + 0.5) * 2.3283064365386963e-10
                a = (c[i] + 1 + min(int(v * (q - 1)), q - 2)) % q
                dE = _local(c, i, a, nbr, P, F) - _local(c, i, c[i], nbr, P, F)
                if dE <= 0.0 or u < math.exp(-beta * dE):
                    c[i] = a
            e += 1
            w0, w1, w2, w3 = _words(k0, k1, gp, e, STREAM_JUMP)
            t += -math.log(_u53(w0, w1)) / rate
        tev[p] = t
        nev[p] = e
        energy[p] = _energy(c, edges, P, F)
        m = 0
        for i in range(n):
            m += 2 * c[i] - 1
        magnet[p] = m
        if index.shape[0] == n_part:
            s = 0
            for i in range(n):
                s = s * q + c[i]
            index[p] = s


@dataclass
class JumpEnsemble:
    """Saved observables of a jump-process ensemble: ``energy`` and ``magnetisation``
    (n_saves, N), ``index`` (n_saves, N; the state number, when the space is small
    enough to enumerate), the final ``codes`` (N, n) and the run's settings."""

    times: np.ndarray
    energy: np.ndarray
    magnetisation: np.ndarray
    index: np.ndarray | None
    codes: np.ndarray
    events: np.ndarray
    meta: dict

    def histogram(self, values_name: str, save: int, support=None):
        """``(support, frequencies, standard errors)`` of an observable at a save; the
        standard error of a frequency ``f`` from N independent particles is
        ``sqrt(f (1 - f) / N)``."""
        v = getattr(self, values_name)[save]
        sup = np.unique(v) if support is None else np.asarray(support)
        N = v.size
        f = np.array([(v == s).sum() for s in sup], dtype=float) / N
        return sup, f, np.sqrt(f * (1 - f) / N)

    def state_frequencies(self, save: int, size: int) -> np.ndarray:
        if self.index is None:
            raise ValueError("state indices were not recorded (the space is too large to enumerate)")
        return np.bincount(self.index[save], minlength=size) / self.index.shape[1]

    def kl_plugin(self, save: int, log_pi) -> tuple[float, float]:
        """Plug-in ``KL(p_hat || pi)`` from the state counts at a save, and its leading
        positive bias ``(K - 1) / (2 N)`` (K = states seen; the Miller-Madow term)."""
        f = self.state_frequencies(save, log_pi.size)
        pos = f > 0
        val = float(np.sum(f[pos] * (np.log(f[pos]) - log_pi[pos])))
        return val, (pos.sum() - 1) / (2.0 * self.index.shape[1])


def simulate(energy: PairEnergy, c0, times=None, *, dynamics: str = "glauber", temperature: float = 1.0,
             seed=None, index_offset: int = 0, save: Save | None = None) -> JumpEnsemble:
    """Run ``N`` independent jump processes from the configurations ``c0`` (N, n) of
    letters (or one configuration, repeated by passing ``np.tile``) and save their
    observables at ``times`` (sorted, >= 0), or at ``save=Save(times=...)`` (the same:
    continuous time has no steps, so ``Save.every`` is refused, and the observables are
    kept in memory)."""
    if not isinstance(energy, PairEnergy):
        raise TypeError("jump particles take a PairEnergy (ising(...), potts(...), or a PairEnergy)")
    if not isinstance(dynamics, str) or dynamics not in JUMP_DYNAMICS:
        raise ValueError(f"dynamics must be one of {sorted(JUMP_DYNAMICS)}, got {dynamics!r}")
    C = np.asarray(c0)
    n = energy.n_sites
    if C.ndim != 2 or C.shape[1] != n or C.shape[0] < 1:
        raise ValueError(f"c0 must have shape (N, {n}) (one row of letters per particle), got {C.shape}")
    if not np.issubdtype(C.dtype, np.integer) or C.min() < 0 or C.max() >= energy.q:
        raise ValueError(f"c0 holds letters 0..{energy.q - 1} as integers")
    C = np.array(C, dtype=np.int64, order="C", copy=True)  # never the caller's array: it is advanced in place
    times = _save_times(times, save)
    T = positive_float(temperature, "temperature")
    if int(index_offset) != index_offset or index_offset < 0:
        raise ValueError(f"index_offset must be a non-negative integer, got {index_offset!r}")
    N = C.shape[0]
    check_memory(N * times.size * 24.0 + C.nbytes * 2, f"{times.size} saves of {N} particles")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (1 << 63))
    k0, k1 = seed_key(seed)
    offset = int(index_offset)
    enumerable = energy.q ** n <= MAX_STATES
    nbr = energy.lattice.neighbours()
    edges = np.ascontiguousarray(energy.lattice.edges, dtype=np.int64)
    P = np.ascontiguousarray(energy.pair)
    F = np.ascontiguousarray(energy.field)
    rate = float(n)
    tev = _first_waits(k0, k1, offset, N, rate)
    nev = np.zeros(N, dtype=np.int64)
    En = np.empty((times.size, N))
    Mg = np.empty((times.size, N), dtype=np.int64)
    Ix = np.empty((times.size, N), dtype=np.int64) if enumerable else None
    none_ix = np.empty(0, dtype=np.int64)
    for s, t in enumerate(times):
        _run(C, tev, nev, t, nbr, edges, P, F, 1.0 / T, JUMP_DYNAMICS[dynamics], k0, k1, offset,
             En[s], Mg[s], Ix[s] if enumerable else none_ix, energy.q)
    meta = {"dynamics": dynamics, "temperature": T, "seed": int(seed), "index_offset": offset,
            "n_particles": N, "n_sites": n, "q": energy.q, "energy": energy.name}
    return JumpEnsemble(times, En, Mg, Ix, C.astype(np.int8), nev, meta)


def _save_times(times, save) -> np.ndarray:
    """The save times of ``times=`` or ``save=Save(times=...)`` (one of them)."""
    if save is None:
        if times is None:
            raise ValueError("jumps.simulate needs save times: times= or save=Save(times=...)")
        save = Save(times=check_times(times, "times"))
    elif not isinstance(save, Save):
        raise ValueError(f"save must be a particles.Save, got {type(save).__name__}")
    elif times is not None:
        raise ValueError("jumps.simulate: times given together with save=; put them in Save(times=...)")
    if save.every is not None:
        raise ValueError("jumps.simulate runs in continuous time: Save.every (steps) has no meaning; give Save.times")
    if save.times is None:
        raise ValueError("jumps.simulate needs save times: Save(times=...) or times=")
    save.positions_only("jumps.simulate")
    return np.array(save.times)


@pjit(cache=True)
def _first_waits_kernel(k0, k1, offset, rate, out):
    for p in prange(out.shape[0]):
        out[p] = _wait(k0, k1, offset + p, 0, rate)


def _first_waits(k0, k1, offset, N, rate):
    out = np.empty(N)
    _first_waits_kernel(k0, k1, offset, rate, out)
    return out

