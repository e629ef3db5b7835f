"""All numba settings of the project, in one place.

Every compiled kernel in :mod:`fokkerplanck` and :mod:`particles` goes through
:func:`jit` so that the choices below are made once, deliberately:

* ``fastmath``: only the flags that keep the meaning of NaN and inf
  (``contract`` allows fused multiply-add, ``arcp``/``reassoc`` are left out so
  that reductions are reproducible whatever the thread count).
* ``cache``: leaf kernels that live at module level are cached on disk
  (``cache=True``); their cache files are keyed by source file, so several
  processes reading them is safe.  Closures built at run time (composed
  energies) go through :func:`closure_jit`, which writes each as a generated
  module in :func:`kernel_cache_dir` and caches that too: a second process loads
  every kernel it has seen before instead of compiling it (first Langevin step
  of the eight Gaussians 0.2 s instead of 3.3 s).
* One compiled integrator for every energy: the integrators and loops over
  points take an energy's kernels as arguments, by address (:func:`call_with`),
  instead of compiling a new closure around each energy's kernels: a first
  ``fpk verify --quick`` compiles 66 s of kernels instead of 153 s (one process).
* ``parallel``: only where a kernel loops over independent particles or grid
  cells (:func:`pjit`).
* ``OMP_WAIT_POLICY=PASSIVE`` unless the environment says otherwise: numba's OpenMP
  threads then sleep between parallel regions instead of spinning.  A spinning team
  holds its cores after every region; when anything else runs beside it (a second
  pytest worker, another solve, a background job) the next region waits for cores
  that are spinning elsewhere: 256^2 Fokker-Planck sweeps measured 0.3 s passive
  against 0.65-5.2 s spinning beside one other process (see benchmarks/README.md).
  libgomp reads the variable when it loads, which numba does at the first parallel
  kernel, after this import.
"""
from __future__ import annotations

import functools
import os
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402  (after the OpenMP setting above)

FASTMATH = frozenset({"contract"})


def jit(fn=None, *, cache: bool = False, parallel: bool = False, inline: str = "never"):
    """Compile ``fn`` in nopython mode with the project's settings (``inline="always"``
    inlines it at numba's IR level, e.g. for small functions called in vectorised loops)."""
    def wrap(f):
        return numba.njit(f, fastmath=set(FASTMATH), cache=cache, parallel=parallel,
                          error_model="numpy", inline=inline)
    return wrap if fn is None else wrap(fn)


def interrupted(exc: BaseException) -> bool:
    """True when ``exc`` was caused by a KeyboardInterrupt: Ctrl-C that lands while a compiled
    function calls back into Python (numba unpickling a closure's constants at the start of a
    call) comes out of the call as a SystemError caused by the KeyboardInterrupt."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def call_compiled(fn, *args):
    """``fn(*args)`` for a compiled ``fn``, a Ctrl-C during the call raised as the
    KeyboardInterrupt it is (not numba's SystemError)."""
    try:
        return fn(*args)
    except SystemError as exc:
        if interrupted(exc):
            raise KeyboardInterrupt from None
        raise


# ---------------------------------------------------------------------------------------
# Compiled functions as arguments.  An integrator that inlines an energy's kernels is a new
# function for every energy: seconds of compilation each, at the first run of every energy
# and again for every array flag it meets.  ``call_with`` passes the kernels instead by
# address (numba's first-class function type): the integrator is a module-level kernel
# compiled once per argument types and cached with the package, whatever the energy; each
# energy's own small kernels compile for the one signature the integrator calls.  The call
# through a pointer costs nothing measurable where the callee works on a block of points.

_ENTRIES: dict = {}


def function_type(restype, *argtypes):
    """numba's first-class function type ``restype(*argtypes)``."""
    return numba.types.FunctionType(restype(*argtypes))


def array_type(dtype, ndim: int):
    """numba's type of a writable C-contiguous array (as :func:`kernel_input` gives)."""
    return numba.types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C")


def kernel_input(a) -> np.ndarray:
    """``a`` as the compiled loops take every array: C-contiguous and writable (a copy only
    when ``a`` is read-only, as an energy's parameters and a grid's points are, or not
    contiguous).  One kind of array everywhere gives each energy kernel one signature: the
    read-only and writable flavours had compiled each kernel two or three times (25 of the
    69 s a first ``fpk verify --quick`` spent compiling)."""
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()


def writable(a, name: str) -> np.ndarray:
    """``a`` itself, refused when a kernel could not write its results into it."""
    if not (isinstance(a, np.ndarray) and a.flags.writeable and a.flags.c_contiguous):
        raise ValueError(f"{name} must be a writable C-contiguous array (the kernel writes its results into it)")
    return a


def call_with(kernel, fns, fntypes, *args):
    """``kernel(*fns, *args)`` with the compiled functions ``fns`` passed by address as
    ``fntypes`` (:func:`function_type`), compiling ``kernel`` once per argument types
    (pass inputs through :func:`kernel_input`); a Ctrl-C during the call is raised as the
    KeyboardInterrupt it is.  The energy's kernels are compiled for exactly ``fntypes``
    (wrap a user's kernels so that they return exactly that type: see
    :func:`fokkerplanck.energies.custom.fixed_signatures`)."""
    key = (kernel, *fntypes, *(numba.typeof(a) for a in args))
    entry = _ENTRIES.get(key)
    if entry is None:
        entry = _ENTRIES[key] = kernel.compile(key[1:])
    return call_compiled(entry, *fns, *args)


def one_blas_thread():
    """A context in which BLAS (OpenBLAS, MKL) runs on one thread.  Loops that alternate
    numba ``prange`` sweeps with BLAS calls (the Chebyshev sweep and its block products)
    run there: OpenBLAS's threads keep spinning after a call and take the cores from the
    next parallel sweep (measured 2-3x slower), while one BLAS thread costs the block
    products less than the parallel sweeps gain (256^2 eight Gaussians: 0.35 -> 0.26 s)."""
    return _blas_controller().limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """One scan of the loaded BLAS libraries (threadpoolctl reads /proc/self/maps at every
    ``threadpool_limits`` call: 2 ms, a tenth of a time-dependent solver's step at 128^2)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def pjit(fn=None, *, cache: bool = False):
    """:func:`jit` with ``parallel=True`` (use ``numba.prange`` inside)."""
    return jit(fn, cache=cache, parallel=True)


# ---------------------------------------------------------------------------------------
# Closures cached on disk.  Kernels specialised to an energy (an integrator calling this
# energy's gradient, a sum of two energies' kernels) are closures, which numba compiles
# again in every process (seconds at each start).  ``closure_jit`` writes such a closure
# as a module-level function of a generated module (its free variables become imports
# of importable kernels, or literals), keyed by the SHA-256 of that source and of the
# source files it depends on, and compiles it with cache=True: a second process loads
# the machine code instead of compiling.  Anything it cannot express that way (a kernel
# defined in __main__ or in a function) falls back to the in-memory closure.
import hashlib
import importlib.util
import inspect
import os
import sys
import textwrap

import numpy as np

_GENERATED: dict = {}   # id(dispatcher) -> (module name, function name, dispatcher)
_FILE_HASH: dict = {}


def kernel_cache_dir() -> str:
    """Where generated kernel modules (and numba's cache of them) live; a cache, safe to delete."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fokkerplanck", f"kernels-numba{numba.__version__}")


def _file_hash(module_name: str) -> str:
    if module_name not in _FILE_HASH:
        mod = sys.modules.get(module_name)
        path = getattr(mod, "__file__", None)
        with open(path, "rb") as f:
            _FILE_HASH[module_name] = hashlib.sha256(f.read()).hexdigest()[:16]
    return _FILE_HASH[module_name]


def _ref(name, value, deps):
    """Source line binding ``name`` to ``value`` in a generated module, or None."""
    if isinstance(value, (bool, np.bool_)):
        return f"{name} = {bool(value)!r}"
    if isinstance(value, (int, np.integer)):
        return f"{name} = {int(value)!r}"
    if isinstance(value, (float, np.floating)):
        return f"{name} = float.fromhex({float(value).hex()!r})"
    if isinstance(value, np.ndarray) and value.dtype == np.float64 and value.size <= 4096:
        vals = ", ".join(f"float.fromhex({v.hex()!r})" for v in value.ravel().tolist())
        return f"{name} = np.array([{vals}]).reshape({value.shape!r})"
    if id(value) in _GENERATED:
        mod, fname, _ = _GENERATED[id(value)]
        deps.add(mod)
        return f"from {mod} import {fname} as {name}"
    py = getattr(value, "py_func", None)
    mod = sys.modules.get(getattr(py, "__module__", None) or "")
    if py is not None and "<" not in py.__qualname__ and py.__module__ != "__main__" \
            and getattr(mod, "__file__", None) and getattr(mod, py.__qualname__, None) is value:
        deps.add(py.__module__)
        return f"from {py.__module__} import {py.__qualname__} as {name}"
    return None


def _source(fn, parallel: bool):
    """The generated module's source for the closure ``fn``, or None."""
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    lines = src.splitlines()
    while lines and not lines[0].lstrip().startswith("def "):
        lines.pop(0)  # the decorator
    if not lines:
        return None
    if fn.__module__ == "__main__":
        return None
    deps = {fn.__module__}
    free = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ())))
    binds = []
    for name, value in free.items():
        line = _ref(name, value, deps)
        if line is None:
            return None
        binds.append(line)
    names = set(fn.__code__.co_names)
    for const in fn.__code__.co_consts:  # names used in nested code (generator expressions)
        if inspect.iscode(const):
            names |= set(const.co_names)
    glob = sorted(n for n in names if n in fn.__globals__ and n not in free)
    for n in list(glob):
        value = fn.__globals__[n]
        if isinstance(value, (bool, int, float, np.integer, np.floating)):
            # a number (BLOCK, a stream id): its value goes into the source, so the key
            # changes with it even when it is defined in another module
            binds.append(_ref(n, value, deps))
            glob.remove(n)
            continue
        py = getattr(value, "py_func", None)
        if py is not None:  # compiled helpers imported into fn's module (the RNG, ...) are dependencies too
            deps.add(py.__module__)
    try:
        stamps = [f"{m}@{_file_hash(m) if not m.startswith('_fpk_') else 'gen'}" for m in sorted(deps)]
    except (OSError, TypeError):  # a module without a readable source file: no stable key
        return None
    head = [f"# generated by fokkerplanck._core.jit.closure_jit from {fn.__module__}.{fn.__qualname__}: "
            "a cache, safe to delete",
            "# depends on: " + ", ".join(stamps),
            "import numpy as np",
            "from fokkerplanck._core.jit import jit as _fpk_jit"]
    if glob:
        head.append(f"from {fn.__module__} import {', '.join(glob)}")
    deco = f"@_fpk_jit(cache=True, parallel={bool(parallel)})"
    return "\n".join(head + binds + ["", "", deco] + lines) + "\n"


class KernelCacheWarning(RuntimeWarning):
    """A kernel cache folder or file was refused (its kernels compile in memory instead)."""


_REFUSED: set = set()


def _unsafe(folder: str) -> str | None:
    """Why ``folder`` must not hold code this process runs, or None: it, the folder above
    it (which could rename it), numba's ``__pycache__`` in it (pickled indexes, loaded at
    the first call) or a ``NUMBA_CACHE_DIR`` that numba would use instead is owned by
    another user or writable by group or others."""
    places = [os.path.dirname(folder), folder, os.path.join(folder, "__pycache__")]
    if getattr(numba.config, "CACHE_DIR", ""):
        places.append(numba.config.CACHE_DIR)
    for d in places:
        try:
            st = os.stat(d)
        except FileNotFoundError:
            continue
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return f"{d} is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
        if st.st_mode & 0o022:
            return f"{d} is writable by group or others (mode {oct(st.st_mode & 0o777)})"
    return None


def _refuse(key: str, message: str) -> None:
    if key not in _REFUSED:
        _REFUSED.add(key)
        warnings.warn(f"{message}: its kernels are compiled in memory instead", KernelCacheWarning, stacklevel=4)


def closure_jit(fn=None, *, parallel: bool = False):
    """:func:`jit` for a closure built at run time, cached on disk across processes
    (see the comment above); same compiled code and results as ``jit(fn)``.

    Code is never run from the cache on trust: the module is executed from the source
    generated in this process (the file on disk must hold exactly that source, whose
    SHA-256 names it), and a folder owned by another user or writable by others is not
    used at all; either refusal is a :class:`KernelCacheWarning` naming the file or folder."""
    def wrap(f):
        src = _source(f, parallel)
        if src is None:
            return jit(f, parallel=parallel)
        digest = hashlib.sha256(src.encode()).hexdigest()[:24]
        modname = f"_fpk_kernel_{digest}"
        if modname not in sys.modules:
            folder = kernel_cache_dir()
            path = os.path.join(folder, modname + ".py")
            try:
                os.makedirs(folder, mode=0o700, exist_ok=True)
                reason = _unsafe(folder)
                if reason is not None:
                    _refuse(folder, f"the kernel cache folder is not safe to run code from: {reason}")
                    return jit(f, parallel=parallel)
                if not os.path.exists(path):
                    tmp = f"{path}.{os.getpid()}.tmp"
                    with open(tmp, "w") as fh:
                        fh.write(src)
                    try:  # create once, never rewrite: numba's cache index is stamped with the file's mtime
                        os.link(tmp, path)
                    except FileExistsError:
                        pass
                    finally:
                        os.unlink(tmp)
                with open(path, encoding="utf-8", errors="replace") as fh:
                    on_disk = fh.read()
                if on_disk != src:
                    _refuse(path, f"the cached kernel {path} does not hold the source its name (SHA-256 "
                                  f"{digest}) stands for (changed on disk)")
                    return jit(f, parallel=parallel)
                # run the source generated here, not the file: the file only gives numba a path
                # (and mtime) to key its cache of the compiled code by
                spec = importlib.util.spec_from_loader(modname, loader=None, origin=path)
                mod = importlib.util.module_from_spec(spec)
                mod.__file__ = path
                sys.modules[modname] = mod
                exec(compile(src, path, "exec"), mod.__dict__)
            except OSError:  # no writable cache folder: compile in memory
                sys.modules.pop(modname, None)
                return jit(f, parallel=parallel)
        disp = getattr(sys.modules[modname], f.__name__)
        _GENERATED[id(disp)] = (modname, f.__name__, disp)
        return disp
    return wrap if fn is None else wrap(fn)
