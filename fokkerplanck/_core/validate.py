"""Input checks shared by the whole toolkit: fail early, name the argument and the value."""
from __future__ import annotations

import difflib

import numpy as np


def finite_array(a, name: str, *, ndim: int | None = None, shape: tuple | None = None) -> np.ndarray:
    """Return ``a`` as a float64 array, refusing NaN/inf and the wrong shape."""
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of real numbers, got {type(a).__name__}: {exc}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} contains NaN or inf ({int(bad.sum())} entries; first at index {idx})")
    return arr


def point_set(a, name: str, rows: str = "N", *, maximum: int | None = None, why: str = "") -> np.ndarray:
    """A non-empty finite set of points as a float64 array (n, d); a 1-D array is n points in 1D."""
    X = finite_array(a, name)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"{name} must have shape ({rows}, d) with {rows} >= 1, got {X.shape}")
    if maximum is not None and X.shape[0] > maximum:
        raise ValueError(f"{name} holds {X.shape[0]} points, more than the maximum {maximum}" + (f" ({why})" if why else ""))
    return X


def positive_float(x, name: str) -> float:
    """A positive finite number (a string or a bool is not one)."""
    if isinstance(x, (str, bytes, bool)):
        raise ValueError(f"{name} must be a positive number, got {x!r}")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {x!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {x!r}")
    return v


def points(X, dim: int | None, name: str = "x") -> tuple[np.ndarray, bool]:
    """Return ``(X2, single)`` with ``X2`` of shape (N, dim).

    A single point of shape (dim,) is accepted; ``single`` then tells the
    caller to return a scalar (or a (dim,) vector) rather than an array.
    """
    arr = finite_array(X, name)
    single = False
    if arr.ndim == 1 and dim is not None and arr.shape[0] == dim:
        arr, single = arr[None, :], True
    elif arr.ndim == 1 and dim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, {dim if dim else 'd'}) or ({dim},), got {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has points of dimension {arr.shape[1]}, but the energy/density has dimension {dim}")
    return np.ascontiguousarray(arr), single


def spd_matrix(A, name: str, dim: int | None = None) -> np.ndarray:
    """A symmetric positive-definite matrix, or a ValueError saying why not."""
    A = finite_array(A, name)
    if A.ndim == 0:
        A = A.reshape(1, 1)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {A.shape}")
    if dim is not None and A.shape[0] != dim:
        raise ValueError(f"{name} must be {dim}x{dim}, got {A.shape}")
    scale = max(np.abs(A).max(), 1e-300)
    if np.abs(A - A.T).max() > 1e-12 * scale:
        raise ValueError(f"{name} must be symmetric; max |A - A^T| = {np.abs(A - A.T).max():.3g}")
    A = 0.5 * (A + A.T)
    try:
        np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        lam = np.linalg.eigvalsh(A).min()
        raise ValueError(f"{name} must be positive definite; its smallest eigenvalue is {lam:.3g}") from None
    return A


def positive_int(x, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer ``>= minimum`` (``2.0`` is accepted, ``2.5``, ``True`` and ``"2"`` are not)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    if not np.isfinite(x) or float(x) != int(x) or int(x) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    if maximum is not None and int(x) > maximum:
        raise ValueError(f"{name} = {int(x)} is larger than the maximum {maximum}")
    return int(x)


def available_memory() -> int:
    """Bytes of memory available to this process now (MemAvailable; the cgroup limit
    when one is set and lower); 2**63 when neither can be read."""
    avail = 2**63
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
            if text.isdigit():
                avail = min(avail, int(text))
        except OSError:
            pass
    return avail


def check_memory(nbytes: float, what: str, *, fraction: float = 0.8) -> None:
    """Refuse, before allocating, what would not fit in ``fraction`` of the available memory."""
    avail = available_memory()
    if nbytes > fraction * avail:
        raise MemoryError(f"{what} needs {nbytes / 2**30:.3g} GiB, more than {fraction:.0%} of the "
                          f"{avail / 2**30:.3g} GiB of memory available: reduce the size")


def sample_count(n, dim: int, name: str = "n") -> int:
    """A number of samples to draw: a non-negative integer whose (n, dim) draws fit in memory."""
    n = positive_int(n, name, minimum=0)
    check_memory(8.0 * n * (dim + 3), f"{n} samples in dimension {dim}")
    return n


def nearest(key, valid) -> str:
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(d: dict, valid, where: str) -> None:
    """Unknown keys are an error that names each and the nearest valid one."""
    unknown = [k for k in d if k not in valid]
    if unknown:
        k = unknown[0]
        raise ValueError(f"{where}: unknown key {k!r}{nearest(k, valid)}; valid keys: {sorted(valid)}")


def check_times(times, name: str = "times", *, stop: float | None = None) -> np.ndarray:
    """Output times: a non-empty, non-decreasing float64 array of finite non-negative
    numbers (within ``[0, stop]`` when ``stop`` is given).  Every solver takes its
    times through here."""
    t = finite_array(np.atleast_1d(times), name, ndim=1)
    if t.size == 0 or t[0] < 0 or np.any(np.diff(t) < 0):
        raise ValueError(f"{name} must be a non-empty non-decreasing sequence of non-negative numbers, "
                         f"got {t[:5].tolist()}{' ...' if t.size > 5 else ''}")
    if stop is not None and t[-1] > stop * (1 + 1e-12):
        raise ValueError(f"{name} must lie within [0, {stop:g}], got {t[-1]:g}")
    return t
