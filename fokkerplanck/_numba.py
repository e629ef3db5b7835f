"""All numba settings of the project, in one place.

Every compiled kernel in :mod:`fokkerplanck` and :mod:`particles` goes through
:func:`jit` so that the choices below are made once, deliberately:

* ``fastmath``: only the flags that keep the meaning of NaN and inf
  (``contract`` allows fused multiply-add, ``arcp``/``reassoc`` are left out so
  that reductions are reproducible whatever the thread count).
* ``cache``: leaf kernels that live at module level are cached on disk
  (``cache=True``): they cost most of the compile time of a command-line run
  and their cache files are keyed by source file, so several processes reading
  them is safe.  Closures built at run time (composed energies, integrators
  specialised to an energy) cannot be cached by numba and are compiled once per
  process and memoised in memory by their builders.
* ``parallel``: only where a kernel loops over independent particles or grid
  cells (:func:`pjit`).
"""
from __future__ import annotations

import numba

FASTMATH = frozenset({"contract"})


def jit(fn=None, *, cache: bool = False, parallel: bool = False):
    """Compile ``fn`` in nopython mode with the project's settings."""
    def wrap(f):
        return numba.njit(f, fastmath=set(FASTMATH), cache=cache, parallel=parallel,
                          error_model="numpy")
    return wrap if fn is None else wrap(fn)


def pjit(fn=None, *, cache: bool = False):
    """:func:`jit` with ``parallel=True`` (use ``numba.prange`` inside)."""
    return jit(fn, cache=cache, parallel=True)
