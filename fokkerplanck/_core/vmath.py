"""Elementary functions that LLVM can vectorise: ``vexp``, ``vlog``, ``vsincos2pi``.

numba turns ``math.exp`` into a call to libm, and a loop with a call in it is
not vectorised unless llvmlite carries Intel's SVML patch (conda's does; the
PyPI wheel does not: ``numba -s`` says "SVML Operational: False" here even with
``intel-cmplr-lib-rt`` installed).  These functions are plain arithmetic (a
range reduction by bit manipulation and a polynomial), so a loop over particles
that calls them compiles to AVX2/AVX-512 code on any llvmlite.  They are
written once for float64 and once for float32 and picked by the argument's
type (``@overload``), so one kernel source serves both precisions.

Accuracy (checked in ``tests/test_vmath.py`` against numpy over their whole
ranges): float64 within 2 ulp, float32 within 2 ulp.  Conventions:

* ``vexp(x)``: ``exp(-inf) = 0``, overflow gives ``inf``, NaN stays NaN; results
  in the subnormal range are rounded once more (gradual underflow).
* ``vlog(x)``: ``x > 0`` (subnormals included); ``vlog(0) = -inf``,
  ``vlog(inf) = inf``, negative or NaN gives NaN.
* ``vsincos2pi(u)``: ``(cos 2 pi u, sin 2 pi u)`` for ``|u| < 2**52`` (the
  reduction ``u - round(u)`` is exact there); what Box-Muller needs, without a
  multiplication by ``2 pi`` before the reduction.
* ``cast_like(x, v)``: the constant ``v`` in ``x``'s precision, so kernels can
  keep float32 arithmetic float32 (a Python float literal would promote it).
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from fokkerplanck._core.jit import jit

__all__ = ["vexp", "vlog", "vsincos2pi", "cast_like", "pow2", "f64_bits", "bits_f64", "f32_bits", "bits_f32"]


# -- bit casts (one LLVM instruction each) --------------------------------------------
def _bitcast(src, dst, ir_dst, doc):
    """An intrinsic reinterpreting the bits of a ``src`` value as ``dst``; integer sources
    of another width are truncated or zero-extended to ``dst``'s width first."""
    width = ir_dst.width if isinstance(ir_dst, ir.IntType) else (64 if isinstance(ir_dst, ir.DoubleType) else 32)

    def typer(typingctx, x):
        ok = x == src or (isinstance(src, types.Integer) and isinstance(x, types.Integer))
        if not ok:
            return None

        def codegen(context, builder, sig, args):
            v = args[0]
            if isinstance(x, types.Integer) and x.bitwidth != width:
                v = (builder.trunc if x.bitwidth > width else builder.zext)(v, ir.IntType(width))
            return builder.bitcast(v, ir_dst)
        return dst(x), codegen

    typer.__doc__ = doc
    return intrinsic(typer)


f64_bits = _bitcast(types.float64, types.int64, ir.IntType(64), "The int64 holding the bits of a float64.")
bits_f64 = _bitcast(types.int64, types.float64, ir.DoubleType(), "The float64 whose bits are the integer.")
f32_bits = _bitcast(types.float32, types.int32, ir.IntType(32), "The int32 holding the bits of a float32.")
bits_f32 = _bitcast(types.int32, types.float32, ir.FloatType(),
                    "The float32 whose bits are the low 32 bits of the integer.")


@intrinsic
def pow2(typingctx, k):
    """``2**k`` for an integer-valued float ``k`` in the normal exponent range, by building
    the exponent field (in the integer width of ``k``'s float type: 32-bit lanes for
    float32, so SIMD loops keep 16 lanes per AVX-512 vector)."""
    if k not in (types.float32, types.float64):
        return None
    wide = k == types.float64
    ity = ir.IntType(64 if wide else 32)
    fty = ir.DoubleType() if wide else ir.FloatType()
    bias, shift = (1023, 52) if wide else (127, 23)

    def codegen(context, builder, sig, args):
        i = builder.fptosi(args[0], ity)
        i = builder.shl(builder.add(i, ir.Constant(ity, bias)), ir.Constant(ity, shift))
        return builder.bitcast(i, fty)
    return k(k), codegen


@jit(cache=True, inline="always")
def _quarter_turns(q, cs, sn):
    """``(cos, sin)`` of ``theta + q pi/2`` from those of ``theta``: odd q swaps them; the
    cosine is negative for q = 1, 2 (mod 4), the sine for q = 2, 3 (selects, no branches)."""
    odd = (q & 1) != 0
    c = sn if odd else cs
    s = cs if odd else sn
    c = -c if ((q + 1) & 2) != 0 else c
    s = -s if (q & 2) != 0 else s
    return c, s


# -- float64 ------------------------------------------------------------------------------
_LOG2E = 1.4426950408889634
_LN2HI = 6.93147180369123816490e-01   # 32 trailing zero bits: k * _LN2HI is exact
_LN2LO = 1.90821492927058770002e-10
_SQRT2 = 1.4142135623730951


@jit(cache=True)
def _exp64(x):
    xc = min(max(x, -746.0), 710.0)   # also maps -inf/inf; NaN is handled below
    kf = np.floor(xc * _LOG2E + 0.5)
    r = (xc - kf * _LN2HI) - kf * _LN2LO     # |r| <= ln2/2 + round-off
    # exp(r), Taylor to r^13: truncation < 5e-18 on |r| <= 0.347
    y = 1.0 / 6227020800.0
    y = y * r + 1.0 / 479001600.0
    y = y * r + 1.0 / 39916800.0
    y = y * r + 1.0 / 3628800.0
    y = y * r + 1.0 / 362880.0
    y = y * r + 1.0 / 40320.0
    y = y * r + 1.0 / 5040.0
    y = y * r + 1.0 / 720.0
    y = y * r + 1.0 / 120.0
    y = y * r + 1.0 / 24.0
    y = y * r + 1.0 / 6.0
    y = y * r + 0.5
    y = y * r * r + r + 1.0
    k1 = np.floor(kf * 0.5)      # 2^k as two normal factors: covers k in [-1077, 1024]
    y = y * pow2(k1) * pow2(kf - k1)
    return x if x != x else y


@jit(cache=True)
def _log64(x):
    sub = x < 2.2250738585072014e-308
    xs = x * 18014398509481984.0 if sub else x     # 2^54: subnormals become normal
    bits = f64_bits(xs)
    e = (bits >> 52) - 1023 - (54 if sub else 0)
    m = bits_f64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)   # [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    f = m - 1.0                   # exact; |f| <= sqrt2 - 1
    s = f / (2.0 + f)             # log(1+f) = 2 atanh(s), |s| <= 0.1716
    z = s * s
    # R = 2 z/3 + 2 z^2/5 + ... + 2 z^11/23 (truncation < 1e-18)
    R = 2.0 / 23.0
    R = R * z + 2.0 / 21.0
    R = R * z + 2.0 / 19.0
    R = R * z + 2.0 / 17.0
    R = R * z + 2.0 / 15.0
    R = R * z + 2.0 / 13.0
    R = R * z + 2.0 / 11.0
    R = R * z + 2.0 / 9.0
    R = R * z + 2.0 / 7.0
    R = R * z + 2.0 / 5.0
    R = R * z + 2.0 / 3.0
    R = R * z
    hfsq = 0.5 * f * f
    ef = np.float64(e)
    y = ef * _LN2HI + (f - (hfsq - (s * (hfsq + R) + ef * _LN2LO)))
    y = -np.inf if x == 0.0 else y
    y = np.inf if x == np.inf else y
    return np.nan if (x < 0.0 or x != x) else y


@jit(cache=True)
def _sincos2pi64(u):
    v = u - np.floor(u + 0.5)          # exact, in [-1/2, 1/2]
    t = 4.0 * v                          # exact
    qf = np.floor(t + 0.5)
    th = (t - qf) * (0.5 * math.pi)      # [-pi/4, pi/4]
    z = th * th
    # sin to th^17, cos to th^18: truncation < 2e-17 on |th| <= pi/4
    sn = -1.0 / 355687428096000.0
    sn = sn * z + 1.0 / 1307674368000.0
    sn = sn * z - 1.0 / 6227020800.0
    sn = sn * z + 1.0 / 39916800.0
    sn = sn * z - 1.0 / 362880.0
    sn = sn * z + 1.0 / 5040.0
    sn = sn * z - 1.0 / 120.0
    sn = sn * z + 1.0 / 6.0
    sn = th - th * z * sn
    cs = 1.0 / 6402373705728000.0
    cs = cs * z - 1.0 / 20922789888000.0
    cs = cs * z + 1.0 / 87178291200.0
    cs = cs * z - 1.0 / 479001600.0
    cs = cs * z + 1.0 / 3628800.0
    cs = cs * z - 1.0 / 40320.0
    cs = cs * z + 1.0 / 720.0
    cs = cs * z - 1.0 / 24.0
    cs = cs * z + 0.5
    cs = 1.0 - z * cs
    return _quarter_turns(np.int64(qf), cs, sn)


# -- float32 ------------------------------------------------------------------------------
_F = np.float32


@jit(cache=True)
def _exp32(x):
    xc = min(max(x, _F(-104.0)), _F(89.0))
    kf = np.floor(xc * _F(_LOG2E) + _F(0.5))
    r = (xc - kf * _F(0.693145751953125)) - kf * _F(1.428606765330187e-06)
    y = _F(1.0 / 5040.0)
    y = y * r + _F(1.0 / 720.0)
    y = y * r + _F(1.0 / 120.0)
    y = y * r + _F(1.0 / 24.0)
    y = y * r + _F(1.0 / 6.0)
    y = y * r + _F(0.5)
    y = y * r * r + r + _F(1.0)
    k1 = np.floor(kf * _F(0.5))
    y = y * pow2(k1) * pow2(kf - k1)
    return x if x != x else y


@jit(cache=True)
def _log32(x):
    sub = x < _F(1.1754943508222875e-38)
    xs = x * _F(33554432.0) if sub else x          # 2^25
    bits = f32_bits(xs)
    e = (bits >> np.int32(23)) - np.int32(127) - (np.int32(25) if sub else np.int32(0))
    m = bits_f32((bits & np.int32(0x007FFFFF)) | np.int32(0x3F800000))
    big = m > _F(_SQRT2)
    m = m * _F(0.5) if big else m
    e = e + np.int32(1) if big else e
    f = m - _F(1.0)
    s = f / (_F(2.0) + f)
    z = s * s
    R = _F(2.0 / 11.0)
    R = R * z + _F(2.0 / 9.0)
    R = R * z + _F(2.0 / 7.0)
    R = R * z + _F(2.0 / 5.0)
    R = R * z + _F(2.0 / 3.0)
    R = R * z
    hfsq = _F(0.5) * f * f
    ef = _F(e)
    y = ef * _F(0.693145751953125) + (f - (hfsq - (s * (hfsq + R) + ef * _F(1.428606765330187e-06))))
    y = _F(-np.inf) if x == _F(0.0) else y
    y = _F(np.inf) if x == _F(np.inf) else y
    return _F(np.nan) if (x < _F(0.0) or x != x) else y


@jit(cache=True)
def _sincos2pi32(u):
    v = u - np.floor(u + _F(0.5))
    t = _F(4.0) * v
    qf = np.floor(t + _F(0.5))
    th = (t - qf) * _F(0.5 * math.pi)
    z = th * th
    sn = _F(-1.0 / 39916800.0)
    sn = sn * z + _F(1.0 / 362880.0)
    sn = sn * z - _F(1.0 / 5040.0)
    sn = sn * z + _F(1.0 / 120.0)
    sn = sn * z - _F(1.0 / 6.0)
    sn = th + th * z * sn
    cs = _F(1.0 / 479001600.0)
    cs = cs * z - _F(1.0 / 3628800.0)
    cs = cs * z + _F(1.0 / 40320.0)
    cs = cs * z - _F(1.0 / 720.0)
    cs = cs * z + _F(1.0 / 24.0)
    cs = cs * z - _F(0.5)
    cs = _F(1.0) + z * cs
    return _quarter_turns(np.int32(qf), cs, sn)


# -- precision-generic entry points ---------------------------------------------------------
def vexp(x):
    """exp(x), vectorisable; see the module docstring."""
    return math.exp(x)


def vlog(x):
    """log(x), vectorisable; see the module docstring."""
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


def vsincos2pi(u):
    """``(cos 2 pi u, sin 2 pi u)``, vectorisable."""
    return math.cos(2 * math.pi * u), math.sin(2 * math.pi * u)


def cast_like(x, v):
    """``v`` converted to the float type of ``x``."""
    return type(x)(v)


def _pick(f64, f32):
    def impl(x):
        if x == types.float64:
            return lambda x: f64(x)
        if x == types.float32:
            return lambda x: f32(x)
        return None
    return impl


overload(vexp)(_pick(_exp64, _exp32))
overload(vlog)(_pick(_log64, _log32))
overload(vsincos2pi)(_pick(_sincos2pi64, _sincos2pi32))


@overload(cast_like)
def _cast_like(x, v):
    if x == types.float32:
        return lambda x, v: np.float32(v)
    if x == types.float64:
        return lambda x, v: np.float64(v)
    return None
