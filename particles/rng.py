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

from fokkerplanck._numba import jit

__all__ = ["philox4x32", "seed_key", "normals", "uniform", "fill_normals"]

_M32 = np.uint64(0xFFFFFFFF)
_MUL0 = np.uint64(0xD2511F53)
_MUL1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)

STREAM_NOISE = 0
STREAM_ACCEPT = 1
STREAM_INIT = 2  # initial positions drawn per particle (particles.distributed.GaussianInit)


@jit(cache=True)
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
    words = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint32)
    return np.uint64(words[0]), np.uint64(words[1])


@jit(cache=True)
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
        u1 = _u53(w0, w1)
        u2 = _u53(w2, w3)
        r = math.sqrt(-2.0 * math.log(u1))
        out[i] = r * math.cos(2.0 * math.pi * u2)
        if i + 1 < d:
            out[i + 1] = r * math.sin(2.0 * math.pi * u2)
        i += 2
        block += 1


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
