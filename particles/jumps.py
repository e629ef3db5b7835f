"""Continuous-time jump processes on spin lattices: particles of the master equations of
:mod:`fokkerplanck.discrete`.

Every site carries a rate-1 clock, so a particle's events come at rate ``n`` (its
number of sites); at an event a uniformly chosen site is updated by the dynamics:

* ``"glauber"`` (heat bath): the site's letter is redrawn from its conditional law;
* ``"metropolis"``: one of the other ``q - 1`` letters is proposed uniformly and
  accepted with ``min(1, exp(-dE / T))``.

This is exactly the generator of :func:`fokkerplanck.discrete.glauber` /
:func:`~fokkerplanck.discrete.metropolis` (uniformised at rate ``n``).

Events in bins.  Time is cut into bins of length ``BIN_EVENTS / n``; a particle's number of
events in bin ``k`` is Poisson with mean :data:`BIN_EVENTS`, and its ``j``-th event there has
a mark (the site and a uniform) and a time offset, uniform in the bin.  The events of a bin
are the Poisson process of rate ``n`` on it (given their number, the times are i.i.d.
uniform, and the marks i.i.d. and independent of the times), applied in the order of ``j``:
as the marks are i.i.d. and independent of the times, applying the ``j``-th mark at the
``j``-th smallest time is the same process.  A save at time ``t`` inside a bin applies the
events whose offsets fall before it (their count, not their order, is what the save needs),
so no waiting time is drawn per event: one Philox block serves two events, with no
logarithm, and the two-letter heat bath reads its acceptance threshold from a table
indexed by the neighbours' letters (no exponential).

Randomness is the counter-based Philox of :mod:`fokkerplanck._core.rng`, keyed by
``(particle, bin, what, index)``: a particle's path does not depend on the thread count,
the save times, the chunks of the run or the split of the particles.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numba import prange

from fokkerplanck._core.jit import jit, pjit
from fokkerplanck._core.rng import _MUL0, _MUL1, _W0, _W1, STREAM_JUMP, draw_from_logits, philox4x32, seed_key
from fokkerplanck._core.validate import check_memory, check_times, positive_float
from fokkerplanck.discrete.finite import MAX_STATES, PairEnergy
from particles.ensemble import CHUNK_WORK, Chunks, EnsembleInterrupted
from particles.estimators import frequency_errors
from particles.options import Save, check_seed

_M32 = np.uint64(0xFFFFFFFF)


@jit(cache=True, inline="always")
def _u53(a, b):
    """A uniform in (0, 1] from two 32-bit words (53 random bits; as the Philox uniforms of
    :mod:`fokkerplanck._core.rng`)."""
    return ((a >> np.uint64(5)) * 67108864.0 + (b >> np.uint64(6)) + 1.0) / 9007199254740992.0

__all__ = ["JUMP_DYNAMICS", "Histogram", "JumpEnsemble", "PluginKL", "simulate"]

JUMP_DYNAMICS = {"glauber": 0, "metropolis": 1}

MAX_MISSING_MASS = 0.03   # kl_plugin: Good-Turing missing mass above which the estimate is flagged
MAX_SEEN_FRACTION = 0.1   # kl_plugin: distinct states seen per particle above which it is flagged


BIN_EVENTS = 64        # mean number of events of a particle per bin (a bin is BIN_EVENTS / n long)
_TAG_COUNT, _TAG_MARK, _TAG_TIME = 0, 1, 2   # what a Philox block of a bin draws


def _poisson_cdf(mean: float) -> np.ndarray:
    """The CDF of Poisson(``mean``), from 0 to far past where it reaches 1 in float64 (the
    probabilities summed exactly rounded)."""
    k = np.arange(int(mean + 40 * math.sqrt(mean) + 40))
    pmf = [math.exp(-mean + j * math.log(mean) - math.lgamma(j + 1)) for j in k]
    total = math.fsum(pmf)
    return np.array([math.fsum(pmf[:j + 1]) / total for j in k])


_CDF = _poisson_cdf(BIN_EVENTS)


@jit(cache=True)
def _block(k0, k1, particle, b, tag, sub):
    """The Philox block ``sub`` of kind ``tag`` of bin ``b`` of ``particle``."""
    pid = np.uint64(particle)
    return philox4x32(pid & _M32, np.uint64(b) & _M32, (np.uint64(STREAM_JUMP) << np.uint64(16)) | np.uint64(tag),
                      (np.uint64(sub) & np.uint64(0xFFFF)) | ((pid >> np.uint64(32)) << np.uint64(16)), k0, k1)


@jit(cache=True)
def _marks(k0, k1, particle, b, h0, nblk, out):
    """Blocks ``h0 .. h0 + nblk - 1`` of the marks of bin ``b`` into ``out[:, :nblk]``: the Philox
    rounds of :func:`~fokkerplanck._core.rng.philox4x32` lane by lane over the blocks (the
    compiler vectorises them: about 3.5x the block-at-a-time rate; the same bits)."""
    pid = np.uint64(particle)
    c2v = (np.uint64(STREAM_JUMP) << np.uint64(16)) | np.uint64(_TAG_MARK)
    hi = (pid >> np.uint64(32)) << np.uint64(16)
    for h in range(nblk):
        out[0, h] = pid & _M32
        out[1, h] = np.uint64(b) & _M32
        out[2, h] = c2v
        out[3, h] = (np.uint64(h0 + h) & np.uint64(0xFFFF)) | hi
    a0, a1 = k0, k1
    for r in range(10):
        if r > 0:
            a0 = (a0 + _W0) & _M32
            a1 = (a1 + _W1) & _M32
        for h in range(nblk):
            p0 = _MUL0 * out[0, h]
            p1 = _MUL1 * out[2, h]
            n0 = ((p1 >> np.uint64(32)) ^ out[1, h] ^ a0) & _M32
            n2 = ((p0 >> np.uint64(32)) ^ out[3, h] ^ a1) & _M32
            out[1, h] = p1 & _M32
            out[3, h] = p0 & _M32
            out[0, h] = n0
            out[2, h] = n2


@jit(cache=True)
def _count(k0, k1, particle, b, cdf):
    """The number of events of bin ``b``: Poisson(BIN_EVENTS) by inversion of its CDF."""
    w0, w1, _, _ = _block(k0, k1, particle, b, _TAG_COUNT, 0)
    u = 1.0 - _u53(w0, w1)          # in [0, 1)
    lo, hi = 0, cdf.shape[0] - 1
    while lo < hi:                  # the smallest k with cdf[k] > u
        mid = (lo + hi) // 2
        if cdf[mid] > u:
            hi = mid
        else:
            lo = mid + 1
    return lo


@jit(cache=True)
def _before(k0, k1, particle, b, n_events, f):
    """How many of the bin's ``n_events`` time offsets (32-bit uniforms) lie below ``f``."""
    m = 0
    for j4 in range((n_events + 3) // 4):
        w = _block(k0, k1, particle, b, _TAG_TIME, j4)
        for r in range(4):
            if 4 * j4 + r < n_events and (np.float64(w[r]) + 0.5) * 2.3283064365386963e-10 < f:
                m += 1
    return m


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


@jit(cache=True, inline="always")
def _apply(c, ws, wu, n, nbr, P, F, beta, dyn, q, lw, thr):
    """One event with the site word ``ws`` and the uniform word ``wu``."""
    prod = ws * np.uint64(n)
    i = int(prod >> np.uint64(32))
    u = (np.float64(wu) + 0.5) * 2.3283064365386963e-10
    if dyn == 0 and q == 2:  # heat bath, two letters: the threshold by the neighbours' letters
        m = 0                # neighbours, and those of letter 1 (no branch on the letters: at T_c
        m1 = 0               # they are coin flips a branch predictor cannot learn)
        for k in range(nbr.shape[1]):
            j = nbr[i, k]
            if j >= 0:
                m += 1
                m1 += c[j]
        c[i] = np.int64(u < thr[m - m1, m1])
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


@pjit(cache=True)
def _run(C, kbin, nbin, jbin, nev, t_stop, at_save, width, cdf, nbr, edges, P, F, beta, dyn, thr, k0, k1, offset,
         energy, magnet, index, q):
    """Advance every particle to ``t_stop`` (a save time when ``at_save``: the events of its
    bin before it are applied; otherwise whole bins only, the rest waits for the next call)
    and record its energy, magnetisation (sum of ``2 c - 1``, meaningful for q = 2) and state
    index (if ``index`` has a column).  ``kbin, nbin, jbin``: the particle's bin, its number
    of events (-1: not drawn yet) and the next event's index in it."""
    n_part, n = C.shape
    for p in prange(n_part):
        gp = offset + p
        c = C[p]
        lw = np.empty(q)
        buf = np.empty((4, cdf.shape[0] // 2 + 1), dtype=np.uint64)
        b, nb, j = kbin[p], nbin[p], jbin[p]
        events = 0
        while True:
            if nb < 0:
                nb = _count(k0, k1, gp, b, cdf)
                j = 0
            end = (b + 1) * width
            if t_stop >= end:
                last = nb
            elif at_save:
                last = max(j, _before(k0, k1, gp, b, nb, (t_stop - b * width) / width))
            else:
                last = j
            events += last - j
            if last > j:           # block h serves events 2h and 2h + 1
                h0 = j >> 1
                _marks(k0, k1, gp, b, h0, ((last - 1) >> 1) - h0 + 1, buf)
                while j < last:
                    r = 2 * (j & 1)
                    _apply(c, buf[r, (j >> 1) - h0], buf[r + 1, (j >> 1) - h0], n, nbr, P, F, beta, dyn, q, lw, thr)
                    j += 1
            if t_stop >= end:
                b += 1
                nb = -1
                continue
            break
        kbin[p], nbin[p], jbin[p] = b, nb, j
        nev[p] += events
        if not at_save:       # the observables of a save only (each costs a pass over the lattice)
            continue
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


def _thresholds(nbr, P, F, beta) -> np.ndarray:
    """``thr[m0, m1] = 1 / (1 + exp(beta d))``, ``d = E(site = 1) - E(site = 0)`` with ``m0``
    neighbours of letter 0 and ``m1`` of letter 1: the two-letter heat bath's threshold."""
    deg = nbr.shape[1]
    m0, m1 = np.meshgrid(np.arange(deg + 1), np.arange(deg + 1), indexing="ij")
    d = F[1] - F[0] + m0 * (P[1, 0] - P[0, 0]) + m1 * (P[1, 1] - P[0, 1])
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(beta * d))


@dataclass
class JumpEnsemble:
    """Saved observables of a jump-process ensemble: ``energy`` and ``magnetisation``
    (n_saves, N), ``index`` (n_saves, N; the state number, when the space is small
    enough to enumerate), the final ``codes`` (N, n) and the run's settings.  After Ctrl-C
    (the ``partial`` of :class:`~particles.ensemble.EnsembleInterrupted`) the saves are the
    completed ones, ``codes`` and ``events`` those at the interrupt, and ``meta["interrupted"]``
    is True."""

    times: np.ndarray
    energy: np.ndarray
    magnetisation: np.ndarray
    index: np.ndarray | None
    codes: np.ndarray
    events: np.ndarray
    meta: dict

    def histogram(self, values_name: str, save: int, support=None, exact=None, *, sigmas: float = 1.0) -> Histogram:
        """``(support, frequencies, standard errors)`` of an observable at a save, every bin of
        the support kept (empty ones with count 0).  The result also carries ``counts``,
        ``n``, the Wilson interval ``lo``, ``hi`` (``sigmas`` standard deviations) and,
        with ``exact``, the exact probabilities and the z-scores ``z``.

        support : the values to count (default: the magnetisation's ``-n, -n + 2, ..., n``
            for q = 2, every state number for ``index``, else the values seen).
        exact : the exact probabilities of the support's values (e.g. from the master
            equation): then the standard error of a frequency is the exact law's binomial
            ``sqrt(p (1 - p) / N)``; without it, the half-width of the Wilson score interval
            (never 0, also for an empty bin), not the plug-in ``sqrt(f (1 - f) / N)``,
            which is 0 for an empty bin and too small for a bin with few counts."""
        v = getattr(self, values_name)[save]
        if support is None:
            n, q = int(self.meta["n_sites"]), int(self.meta["q"])
            if values_name == "magnetisation" and q == 2:
                support = np.arange(-n, n + 1, 2)
            elif values_name == "index":
                support = np.arange(q ** n)
            elif exact is not None:
                raise ValueError("histogram: exact probabilities need the support they belong to (support=...)")
            else:
                support = np.unique(v)
        sup = np.asarray(support)
        if sup.ndim != 1 or sup.size == 0:
            raise ValueError(f"support must be a non-empty 1-D array, got shape {sup.shape}")
        order = np.argsort(sup, kind="stable")
        pos = np.searchsorted(sup[order], v)
        pos = np.minimum(pos, sup.size - 1)
        hit = sup[order][pos] == v
        counts = np.zeros(sup.size, dtype=np.int64)
        np.add.at(counts, order[pos[hit]], 1)
        N = v.size
        if exact is not None:
            exact = np.asarray(exact, dtype=float)
            if exact.shape != sup.shape:
                raise ValueError(f"exact must hold one probability per support value, shape {sup.shape}, "
                                 f"got {exact.shape}")
            exact = np.append(exact, 0.0)
        # one more bin for the values outside the support: frequencies stay relative to all N
        e = frequency_errors(np.append(counts, N - counts.sum()), exact, sigmas=sigmas)
        k = sup.size
        return Histogram(sup, e.freq[:k], e.se[:k], counts=counts, n=N, lo=e.lo[:k], hi=e.hi[:k],
                         exact=None if e.exact is None else e.exact[:k], z=None if e.z is None else e.z[:k],
                         outside=int(N - counts.sum()), method=e.method)

    def state_frequencies(self, save: int, size: int) -> np.ndarray:
        if self.index is None:
            raise ValueError("state indices were not recorded (the space is too large to enumerate)")
        return np.bincount(self.index[save], minlength=size) / self.index.shape[1]

    def kl_plugin(self, save: int, log_pi, *, max_missing: float = MAX_MISSING_MASS,
                  max_seen: float = MAX_SEEN_FRACTION) -> PluginKL:
        """Plug-in ``KL(p_hat || pi)`` from the state counts at a save, and its leading
        positive bias ``(K - 1) / (2 N)`` (K = states seen; the Miller-Madow term): the
        result unpacks as ``(value, bias)`` and carries the sampling diagnostics.

        The bias term holds only when every state that matters has been seen many times.
        With far more states than particles the estimate is dominated by unseen states
        (the plug-in entropy cannot exceed log N) and over-estimates KL by far more than
        the bias term: then ``undersampled`` is True, ``status`` is ``"undersampled"``,
        ``message`` says why, and a RuntimeWarning is raised.  The criterion: the
        Good-Turing missing mass (states seen once / N) above ``max_missing``, or the
        states seen above ``max_seen * N``."""
        lp = np.asarray(log_pi, dtype=float)
        if self.index is None:
            raise ValueError("state indices were not recorded (the space is too large to enumerate)")
        N = self.index.shape[1]
        c = np.bincount(self.index[save], minlength=lp.size)
        if c.size != lp.size:
            raise ValueError(f"log_pi has {lp.size} states but the particles visit state {c.size - 1}")
        pos = c > 0
        f = c[pos] / N
        val = float(np.sum(f * (np.log(f) - lp[pos])))
        seen, single = int(pos.sum()), int(np.sum(c == 1))
        missing = single / N
        under = missing > max_missing or seen > max_seen * N
        msg = ""
        if under:
            msg = (f"plug-in KL at save {save} (t = {self.times[save]:g}) is dominated by unseen states: "
                   f"{seen} states seen of {lp.size} by {N} particles ({seen / N:.2f} per particle, "
                   f"limit {max_seen:g}), "
                   f"{single} seen once (Good-Turing missing mass {missing:.3f}, limit {max_missing:g}); "
                   f"the value {val:.4g} and its bias term {(seen - 1) / (2.0 * N):.2g} are not reliable: "
                   "use more particles or a coarser observable")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return PluginKL(val, (seen - 1) / (2.0 * N), n=N, states=int(lp.size), seen=seen, singletons=single,
                        missing_mass=missing, undersampled=under, message=msg)


class PluginKL(tuple):
    """``(value, bias)`` of :meth:`JumpEnsemble.kl_plugin` (it unpacks as a pair), with the
    sampling diagnostics as attributes: ``n`` particles, ``states`` in the space, ``seen``
    distinct states seen, ``singletons`` seen once, ``missing_mass`` (Good-Turing,
    singletons / n), ``undersampled`` (the estimate is dominated by unseen states),
    ``status`` (``"ok"`` or ``"undersampled"``) and ``message``."""

    def __new__(cls, value, bias, **diag):
        self = super().__new__(cls, (float(value), float(bias)))
        self.__dict__.update(diag)
        return self

    value = property(lambda self: self[0])
    bias = property(lambda self: self[1])
    status = property(lambda self: "undersampled" if self.undersampled else "ok")

    def __repr__(self):
        return (f"PluginKL(value={self[0]:.6g}, bias={self[1]:.2g}, status={self.status!r}, seen={self.seen}/"
                f"{self.n} particles, missing_mass={self.missing_mass:.3g})")


class Histogram(tuple):
    """``(support, freq, se)`` of :meth:`JumpEnsemble.histogram` (it unpacks as a triple),
    with ``counts``, ``n``, the Wilson interval ``lo``/``hi``, ``exact`` and ``z`` (None
    without exact probabilities), ``outside`` (particles whose value is not in the
    support) and ``method`` (which standard error) as attributes."""

    def __new__(cls, support, freq, se, **extra):
        self = super().__new__(cls, (support, freq, se))
        self.__dict__.update(extra)
        return self

    support = property(lambda self: self[0])
    freq = property(lambda self: self[1])
    se = property(lambda self: self[2])


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
    if energy.q > 127:
        raise ValueError(f"jump particles hold a site's letter in one byte: at most 127 letters, got q = {energy.q}")
    if not np.issubdtype(C.dtype, np.integer) or C.min() < 0 or C.max() >= energy.q:
        raise ValueError(f"c0 holds letters 0..{energy.q - 1} as integers")
    # never the caller's array: it is advanced in place.  One byte a site: a particle's row stays in
    # cache between the compiled calls (at 8 bytes a site, reloading the rows of 20000 particles of
    # 1024 sites cost a third of the run)
    C = np.array(C, dtype=np.int8, order="C", copy=True)
    times = _save_times(times, save)
    T = positive_float(temperature, "temperature")
    if int(index_offset) != index_offset or index_offset < 0:
        raise ValueError(f"index_offset must be a non-negative integer, got {index_offset!r}")
    N = C.shape[0]
    check_memory(N * times.size * 24.0 + C.nbytes * 2, f"{times.size} saves of {N} particles")
    seed = int(np.random.SeedSequence().entropy % (1 << 63)) if seed is None else check_seed(seed)
    k0, k1 = seed_key(seed)
    offset = int(index_offset)
    enumerable = energy.q ** n <= MAX_STATES
    nbr = energy.lattice.neighbours()
    edges = np.ascontiguousarray(energy.lattice.edges, dtype=np.int64)
    P = np.ascontiguousarray(energy.pair)
    F = np.ascontiguousarray(energy.field)
    rate = float(n)
    width = BIN_EVENTS / rate
    if times[-1] / width >= 2.0**32:
        raise ValueError(f"times up to {times[-1]:g} span more than 2^32 event bins of {n} sites: save earlier")
    kbin, nbin, jbin = np.zeros(N, dtype=np.int64), np.full(N, -1, dtype=np.int64), np.zeros(N, dtype=np.int64)
    thr = _thresholds(nbr, P, F, 1.0 / T) if energy.q == 2 else np.zeros((1, 1))
    nev = np.zeros(N, dtype=np.int64)
    En = np.empty((times.size, N))
    Mg = np.empty((times.size, N), dtype=np.int64)
    Ix = np.empty((times.size, N), dtype=np.int64) if enumerable else None
    none_ix = np.empty(0, dtype=np.int64)
    meta = {"dynamics": dynamics, "temperature": T, "seed": int(seed), "index_offset": offset,
            "n_particles": N, "n_sites": n, "q": energy.q, "energy": energy.name, "n_saves": int(times.size)}
    # bounded compiled calls, in physical time (about CHUNK_WORK events first: N n events per unit
    # time), so that Ctrl-C is seen between them; a call that does not end at a save applies whole
    # bins only, so the chunk boundaries change no bit.  The last call of a save, at the save time,
    # records the observables.
    chunks = Chunks(max(CHUNK_WORK / (N * rate), 2 * width), integer=False)   # a call does at least a bin
    done, t_prev = 0, 0.0
    try:
        for s, t in enumerate(times):
            def piece(a, b, s=s, t=t):
                _run(C, kbin, nbin, jbin, nev, b, b == t, width, _CDF, nbr, edges, P, F, 1.0 / T,
                     JUMP_DYNAMICS[dynamics], thr, k0, k1, offset, En[s], Mg[s], Ix[s] if enumerable else none_ix,
                     energy.q)
            if t > t_prev:
                chunks.run(t_prev, float(t), piece)
            else:   # the same time again (or 0): only the record
                piece(t, t)
            t_prev, done = max(t_prev, float(t)), s + 1
    except KeyboardInterrupt:
        meta["interrupted"] = True
        part = JumpEnsemble(times[:done], En[:done], Mg[:done], None if Ix is None else Ix[:done],
                            C, nev, meta)
        raise EnsembleInterrupted(part) from None
    return JumpEnsemble(times, En, Mg, Ix, C, nev, meta)


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
