"""Counter-based normal random numbers (Philox4x32-10, Salmon et al. 2011).

A draw is a pure function of ``(key, counter)``: ``key`` comes from the seed,
the counter from ``(particle index, step, stream, block)``.  So a given seed
gives the same bits for every particle and step whatever the thread count,
the chunking of the steps or the split of the particles over processes.
Normals by Box-Muller: one Philox call gives four 32-bit words, i.e. two
53-bit uniforms, i.e. two normals.
"""
from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

from fokkerplanck._core.jit import jit
from fokkerplanck._core.vmath import vlog, vsincos2pi

__all__ = ["philox4x32", "seed_key", "normals", "uniform", "fill_normals", "block_normals", "block_uniforms",
           "draw_from_logits"]

_M32 = np.uint64(0xFFFFFFFF)
_MUL0 = np.uint64(0xD2511F53)
_MUL1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)

STREAM_NOISE = 0
STREAM_ACCEPT = 1
STREAM_INIT = 2  # initial positions drawn per particle (particles.distributed.GaussianInit)
STREAM_JUMP = 3  # one block per event of particles.jumps: waiting time, site, letter, acceptance
STREAM_LABEL = 6  # the label draw of particles.mixed (4 and 5 are free)
# every stream of the project is listed here, so that no two users draw the same numbers


@jit(cache=True, inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 block: four uint64 holding 32-bit counter words and two key words."""
    for r in range(10):
        if r > 0:
            k0 = (k0 + _W0) & _M32
            k1 = (k1 + _W1) & _M32
        p0 = _MUL0 * c0
        p1 = _MUL1 * c2
        hi0 = p0 >> np.uint64(32)
        lo0 = p0 & _M32
        hi1 = p1 >> np.uint64(32)
        lo1 = p1 & _M32
        c0, c1, c2, c3 = (hi1 ^ c1 ^ k0) & _M32, lo1, (hi0 ^ c3 ^ k1) & _M32, lo0
    return c0, c1, c2, c3


def seed_key(seed) -> tuple[np.uint64, np.uint64]:
    """Two 32-bit key words from an integer seed (any size; None -> fresh entropy)."""
    if seed is None:
        seed = np.random.SeedSequence().entropy
    elif isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer, float, np.floating)) \
            or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")   # 1.5 is not truncated to 1
    words = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint32)
    return np.uint64(words[0]), np.uint64(words[1])


@jit(cache=True, inline="always")
def _u53(a, b):
    """A uniform in (0, 1] from two 32-bit words (53 random bits)."""
    return ((a >> np.uint64(5)) * 67108864.0 + (b >> np.uint64(6)) + 1.0) / 9007199254740992.0


@jit(cache=True)
def fill_normals(out, k0, k1, particle, step, stream):
    """Fill ``out`` (any length) with standard normals for ``(particle, step, stream)``."""
    d = out.shape[0]
    block = 0
    i = 0
    while i < d:
        w0, w1, w2, w3 = philox4x32(np.uint64(particle) & _M32, np.uint64(step) & _M32,
                                    (np.uint64(stream) << np.uint64(16)) | np.uint64(block),
                                    (np.uint64(particle) >> np.uint64(32)) ^ ((np.uint64(step) >> np.uint64(32)) << np.uint64(16)),
                                    k0, k1)
        r, c, s = _box_muller(w0, w1, w2, w3)
        out[i] = r * c
        if i + 1 < d:
            out[i + 1] = r * s
        i += 2
        block += 1


@jit(cache=True, inline="always")
def _box_muller(w0, w1, w2, w3):
    """``(r, cos, sin)``: the normals are ``r cos`` and ``r sin`` (vectorisable functions,
    so the scalar and the blocked generators give the same bits)."""
    r = math.sqrt(-2.0 * vlog(_u53(w0, w1)))
    c, s = vsincos2pi(_u53(w2, w3))
    return r, c, s


def _box_muller_like(x, w0, w1, w2, w3):
    """:func:`_box_muller` in the precision of ``x`` (numba only)."""
    raise NotImplementedError


@overload(_box_muller_like, inline="always")
def _box_muller_like_impl(x, w0, w1, w2, w3):
    if x == types.float64:
        return lambda x, w0, w1, w2, w3: _box_muller(w0, w1, w2, w3)
    if x == types.float32:
        return lambda x, w0, w1, w2, w3: _box_muller32(w0, w2)
    return None


@jit(cache=True, inline="always")
def _box_muller32(w0, w2):
    """float32 Box-Muller from two 24-bit uniforms in (0, 1] (tails cut at 5.8 sigma)."""
    u1 = np.float32(np.int32(w0 >> np.uint64(8)) + np.int32(1)) * np.float32(5.960464477539063e-08)
    u2 = np.float32(np.int32(w2 >> np.uint64(8)) + np.int32(1)) * np.float32(5.960464477539063e-08)
    r = np.sqrt(np.float32(-2.0) * vlog(u1))
    c, s = vsincos2pi(u2)
    return r, c, s


@jit(cache=True)
def block_normals(Z, k0, k1, first, step, stream):
    """``Z[:, b]`` = the normals of particle ``first + b`` at ``step`` (``Z`` is (d, B),
    struct of arrays).  float64: the same numbers as :func:`fill_normals`, a lane per
    particle; float32: the same Philox words, with 24-bit uniforms and float32
    arithmetic (so different, coarser numbers: tails are cut at 5.8 sigma)."""
    d, B = Z.shape
    st = np.uint64(step)
    for j in range((d + 1) // 2):
        c2 = (np.uint64(stream) << np.uint64(16)) | np.uint64(j)
        for b in range(B):
            pid = np.uint64(first + b)
            w0, w1, w2, w3 = philox4x32(pid & _M32, st & _M32, c2,
                                        (pid >> np.uint64(32)) ^ ((st >> np.uint64(32)) << np.uint64(16)),
                                        k0, k1)
            r, c, s = _box_muller_like(Z[0, 0], w0, w1, w2, w3)
            Z[2 * j, b] = r * c
            if 2 * j + 1 < d:
                Z[2 * j + 1, b] = r * s


@jit(cache=True)
def draw_from_logits(lw, u):
    """The index ``j`` with probability ``exp(lw[j]) / sum exp(lw)``, for a uniform ``u`` in
    (0, 1] (inverse CDF, stable: the largest log-weight is subtracted); ``lw`` is overwritten."""
    n = lw.shape[0]
    m = -np.inf
    for j in range(n):
        m = max(m, lw[j])
    tot = 0.0
    for j in range(n):
        lw[j] = math.exp(lw[j] - m)
        tot += lw[j]
    x = u * tot
    j = 0
    acc = lw[0]
    while acc < x and j < n - 1:
        j += 1
        acc += lw[j]
    return j


@jit(cache=True)
def block_uniforms(u, k0, k1, first, step, stream):
    """``u[b]`` = :func:`uniform` of particle ``first + b`` (same bits, a lane per particle)."""
    st = np.uint64(step)
    for b in range(u.shape[0]):
        pid = np.uint64(first + b)
        w0, w1, w2, w3 = philox4x32(pid & _M32, st & _M32, np.uint64(stream) << np.uint64(16),
                                    (pid >> np.uint64(32)) ^ ((st >> np.uint64(32)) << np.uint64(16)),
                                    k0, k1)
        u[b] = _u53(w0, w1)


@jit(cache=True)
def uniform(k0, k1, particle, step, stream):
    """One uniform in (0, 1] for ``(particle, step, stream)``."""
    w0, w1, w2, w3 = philox4x32(np.uint64(particle) & _M32, np.uint64(step) & _M32,
                                np.uint64(stream) << np.uint64(16),
                                (np.uint64(particle) >> np.uint64(32)) ^ ((np.uint64(step) >> np.uint64(32)) << np.uint64(16)),
                                k0, k1)
    return _u53(w0, w1)


def normals(seed, n_particles: int, step: int, dim: int, stream: int = STREAM_NOISE, *, start: int = 0) -> np.ndarray:
    """The (n_particles, dim) normals of particles ``start, start + 1, ...`` at ``step``
    (what the integrators use; also the initial draws of GaussianInit)."""
    k0, k1 = seed_key(seed)
    out = np.empty((n_particles, dim))
    _normals_block(out, k0, k1, step, stream, start)
    return out


@jit(cache=True)
def _normals_block(out, k0, k1, step, stream, start):
    for i in range(out.shape[0]):
        fill_normals(out[i], k0, k1, start + i, step, stream)
