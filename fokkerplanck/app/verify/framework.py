"""The framework of ``fpk verify``: checks, their comparisons, the registry of groups, the report
folder, the tables and the summary."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import platform
import textwrap
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fokkerplanck import __version__

__all__ = ["CHECKS", "COMPARISONS", "ONE_THREAD", "Check", "Report", "at_least", "at_most", "format_table", "near",
           "register", "run_checks", "run_group", "tally", "write_summary"]

# How a check compares its measured value x with its tolerance (and target): the only
# ways a check can pass.  ``checks.json`` stores the key; the tables show ``Check.criterion``.
COMPARISONS: dict[str, Callable[[float, float, float | None], bool]] = {
    "<=": lambda x, tol, target: x <= tol,
    "<": lambda x, tol, target: x < tol,
    ">=": lambda x, tol, target: x >= tol,
    ">": lambda x, tol, target: x > tol,
    "|x - target| <=": lambda x, tol, target: abs(x - target) <= tol,
    "|x - target| <": lambda x, tol, target: abs(x - target) < tol,
}


@dataclass(frozen=True)
class Check:
    """One comparison of a measured ``value`` with a ``tolerance`` (and, two-sided, a
    ``target``); ``passed`` follows from them, never from a separate test.  Build one with
    :func:`at_most`, :func:`at_least` or :func:`near`.  ``warnings`` are those raised
    while the check's group ran (:func:`run_checks`)."""
    name: str
    value: float
    comparison: str
    tolerance: float
    target: float | None = None
    detail: str = ""
    group: str = ""
    warnings: tuple[str, ...] = ()

    def __post_init__(self):
        if self.comparison not in COMPARISONS:
            raise ValueError(f"check {self.name!r}: comparison {self.comparison!r} is not one of {list(COMPARISONS)}")
        if (self.target is not None) != self.comparison.startswith("|x - target|"):
            raise ValueError(f"check {self.name!r}: a target goes with a two-sided comparison, and only with it")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "tolerance", float(self.tolerance))
        if self.target is not None:
            object.__setattr__(self, "target", float(self.target))
        object.__setattr__(self, "warnings", tuple(self.warnings))

    @property
    def passed(self) -> bool:
        """The comparison holds (a NaN or infinite value never passes)."""
        return bool(np.isfinite(self.value) and COMPARISONS[self.comparison](self.value, self.tolerance, self.target))

    @property
    def criterion(self) -> str:
        """The comparison as the tables show it: ``<= 1e-10``, ``> 0``, ``= 2 +- 0.2``
        (``|x - 2| <= 0.2``), ``|x - 2| < 0.2`` (strict two-sided)."""
        if self.target is None:
            return f"{self.comparison} {self.tolerance:.3g}"
        if self.comparison == "|x - target| <=":
            return f"= {self.target:.4g} +- {self.tolerance:.3g}"
        return f"|x - {self.target:.4g}| < {self.tolerance:.3g}"

    @property
    def result(self) -> str:
        """PASS or FAIL, with a * when a warning was raised while its group ran."""
        return ("PASS" if self.passed else "FAIL") + ("*" if self.warnings else "")


def at_most(name, value, tol, detail="", *, strict=False) -> Check:
    """Passes when ``value <= tol`` (``value < tol`` when strict)."""
    return Check(name, value, "<" if strict else "<=", tol, None, detail)


def at_least(name, value, tol, detail="", *, strict=False) -> Check:
    """Passes when ``value >= tol`` (``value > tol`` when strict)."""
    return Check(name, value, ">" if strict else ">=", tol, None, detail)


def near(name, value, target, tol, detail="", *, strict=False) -> Check:
    """Passes when ``|value - target| <= tol`` (``< tol`` when strict)."""
    return Check(name, value, "|x - target| <" if strict else "|x - target| <=", tol, target, detail)


CHECKS: dict[str, Callable[..., list[Check]]] = {}


class Report:
    """A report folder: checks save their artefacts here as they go, so a crash
    loses only the check that was running."""
    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, list[str]] = {}
        self._check = "?"

    def _add(self, name) -> str:
        self.files.setdefault(self._check, []).append(name)
        return str(self.path / name)

    def trajectory(self, name: str, tr) -> None:
        tr.save(self._add(f"{name}.h5"))

    def figure(self, name: str, fig) -> None:
        import matplotlib.pyplot as plt  # local: matplotlib costs ~0.5 s of every fpk start-up

        fig.savefig(self._add(f"{name}.png"), dpi=100)
        plt.close(fig)


# Groups whose operators are small (grids up to ~10^5 cells, ensembles up to ~2e4 particles): they
# run on one numba and one BLAS thread.  Measured on 2 cores shared with other jobs, the thread
# pools waiting for busy cores made them 5-100x slower (fokker_planck 34 s -> 1.1 s, gaussian 12 s
# -> 0.7 s, propagator 13 s -> 0.1 s, composition 14 s -> 2.9 s, homotopy 16 s -> 2.7 s, discrete
# 8.8 s -> 1.3 s); on one thread they cost ~12 s in all, idle or loaded.  The other groups keep all
# threads: they run the parallel kernels (particle integrators, the Chebyshev stencil sweeps of the
# theorem's 96^2 grid) as users run them.
ONE_THREAD: set[str] = set()


def register(fn=None, *, one_thread: bool = False):
    """Register a check group (``@register`` or ``@register(one_thread=True)``, see :data:`ONE_THREAD`)."""
    def add(f):
        name = f.__name__.removeprefix("check_")
        CHECKS[name] = f
        if one_thread:
            ONE_THREAD.add(name)
        return f
    return add(fn) if fn is not None else add


@contextlib.contextmanager
def _one_thread():
    """One numba thread and one BLAS thread inside the block, the previous settings after it."""
    import numba

    from fokkerplanck._core.jit import one_blas_thread

    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with one_blas_thread():
            yield
    finally:
        numba.set_num_threads(n)


_ROOT = pathlib.Path(__file__).resolve().parents[3]


def _warning_text(w: warnings.WarningMessage) -> str:
    """``Category: message (file:line)``, the file relative to the package's checkout."""
    where = pathlib.Path(w.filename)
    try:
        where = where.resolve().relative_to(_ROOT)
    except (OSError, ValueError):
        pass
    return f"{w.category.__name__}: {w.message} ({where}:{w.lineno})"


def run_group(name: str, quick: bool = True, report: Report | None = None) -> list[Check]:
    """The checks of one group, each carrying its group's name and every warning raised
    while the group ran (all of them, repeats counted: no warning filter applies here).
    A warning cannot be traced to one check of a group, so each check of the group gets
    them all."""
    if report is not None:
        report._check = name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _one_thread() if name in ONE_THREAD else contextlib.nullcontext():
            res = CHECKS[name](quick, report)
    bad = [type(c).__name__ for c in res if not isinstance(c, Check)]
    if bad:
        raise TypeError(f"check group {name!r} returned {bad}, not Check objects (at_most, at_least, near)")
    counts = Counter(_warning_text(w) for w in caught)
    found = tuple(t if n == 1 else f"{t} [{n} times]" for t, n in counts.items())
    return [dataclasses.replace(c, group=name, warnings=c.warnings + found) for c in res]


def run_checks(names=None, quick: bool = True, progress=None, report: Report | None = None,
               jobs: int = 1) -> list[Check]:
    """The checks of the groups ``names`` (all by default), in that order.  ``jobs > 1``
    runs the groups in that many worker processes, each on its share of the cores: a
    first run on a new machine mostly compiles kernels, one core per process, so two
    processes halve it.  The results and the report are the same."""
    names = list(names or CHECKS)
    if jobs <= 1 or len(names) <= 1:
        out = []
        for name in names:
            t0 = time.perf_counter()
            out += run_group(name, quick, report)
            if progress:
                progress(name, time.perf_counter() - t0)
        return out
    import concurrent.futures as cf
    import multiprocessing as mp
    import os

    # a worker imports the groups afresh: a group registered at run time (not defined in
    # this package) runs here, in this process
    here = [n for n in names if not getattr(CHECKS[n], "__module__", "").startswith(__package__ + ".")]
    results: dict[str, list[Check]] = {}
    for name in here:
        t0 = time.perf_counter()
        results[name] = run_group(name, quick, report)
        if progress:
            progress(name, time.perf_counter() - t0)
    away = [n for n in names if n not in here]
    if not away:
        return [c for name in names for c in results[name]]
    jobs = min(int(jobs), len(away))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # spawn: a fresh interpreter per worker (no fork of a process whose OpenMP or BLAS
    # threads may already run)
    with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                initargs=(threads,)) as pool:
        futures = {pool.submit(_worker_group, name, quick, None if report is None else str(report.path)): name
                   for name in away}
        try:
            for fut in cf.as_completed(futures):
                name = futures[fut]
                checks, files, seconds = fut.result()
                results[name] = checks
                if report is not None and files:
                    report.files[name] = files
                if progress:
                    progress(name, seconds)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if report is not None:  # the report lists the groups' files in the order of the groups
        report.files = {n: report.files[n] for n in names if n in report.files}
    return [c for name in names for c in results[name]]


def _worker_init(threads: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    import fokkerplanck.app.verify  # noqa: F401  (fills CHECKS with every group)


def _worker_group(name: str, quick: bool, report_path: str | None):
    """One group in a worker process: its checks, its report files and its seconds."""
    t0 = time.perf_counter()
    report = None if report_path is None else Report(report_path)
    checks = run_group(name, quick, report)
    return checks, ([] if report is None else report.files.get(name, [])), time.perf_counter() - t0


def _warned(checks: list[Check]) -> dict[str, list[str]]:
    """The warnings of each group, in order, each once."""
    out: dict[str, list[str]] = {}
    for c in checks:
        ws = out.setdefault(c.group, [])
        ws += [w for w in c.warnings if w not in ws]
    return out


def tally(checks: list[Check]) -> str:
    """``84 passed, 0 failed, 3 with warnings``."""
    failed = sum(not c.passed for c in checks)
    return f"{len(checks) - failed} passed, {failed} failed, {sum(bool(c.warnings) for c in checks)} with warnings"


def format_table(checks: list[Check], width: int = 100) -> list[str]:
    """The terminal table, no line wider than ``width``: the checks under their group,
    long names wrapped, the comparison in the tolerance column, PASS*/FAIL* and the
    warnings of each group below the table."""
    mw, rw = 10, len("result")
    cw = max([len("tolerance")] + [len(c.criterion) for c in checks])
    nw = max(width - (mw + cw + rw + 6), 20)
    lines = [f"{'check':<{nw}}  {'measured':>{mw}}  {'tolerance':<{cw}}  result"[:width]]
    for group in dict.fromkeys(c.group for c in checks):
        lines.append(f"[{group}]")
        for c in checks:
            if c.group != group:
                continue
            name = textwrap.wrap(c.name, nw - 2, subsequent_indent="  ") or [""]
            lines += [f"  {n}" for n in name[:-1]]
            lines.append(f"  {name[-1]:<{nw - 2}}  {c.value:>{mw}.4g}  {c.criterion:<{cw}}  {c.result}")
    for group, ws in _warned(checks).items():
        if ws:
            lines.append(f"* warnings raised while [{group}] ran (attached to each of its checks):")
            for w in ws:
                lines += textwrap.wrap(w, width, initial_indent="  - ", subsequent_indent="    ")
    return lines


def write_summary(report: Report, checks: list[Check], *, quick: bool, seconds: float) -> str:
    """``summary.md`` and ``checks.json`` in the report folder; returns the summary's path."""
    def esc(text):  # a | or * inside a markdown table cell
        return text.replace("|", "\\|").replace("*", "\\*")

    warned = _warned(checks)
    lines = [f"# fpk verify{' --quick' if quick else ''}: {tally(checks)}",
             "", (f"fokkerplanck {__version__}, Python {platform.python_version()}, numpy {np.__version__}, "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {seconds:.0f} s."), "",
             ("The tolerance column is the comparison that decides each check: `<= b` (x <= b), `< b`, `>= b`, "
              "`> b`, `= a +- b` (|x - a| <= b), `|x - a| < b`. A result marked * ran with a warning, listed below "
              "its table."),
             ""]
    for group in dict.fromkeys(c.group for c in checks):
        doc = (CHECKS[group].__doc__ or "").strip().replace("\n    ", " ") if group in CHECKS else ""
        lines += [f"## {group}", "", doc, "", "| check | measured | tolerance | result | note |",
                  "|---|---|---|---|---|"]
        lines += [f"| {esc(c.name)} | {c.value:.4g} | {esc(c.criterion)} | "
                  f"{esc(c.result) if c.passed else '**' + esc(c.result) + '**'} | {esc(c.detail)} |"
                  for c in checks if c.group == group]
        if warned.get(group):
            lines += ["", f"\\* Warnings raised while `{group}` ran (attached to each of its checks):", ""]
            lines += [f"- `` {w} ``" for w in warned[group]]
        for f in report.files.get(group, []):
            lines += ["", f"![{f}]({f})" if f.endswith(".png") else f"Data: [`{f}`]({f}) (`fpk info {f}`)"]
        lines.append("")
    (report.path / "checks.json").write_text(json.dumps(
        [{"group": c.group, "name": c.name, "value": c.value, "comparison": c.comparison, "target": c.target,
          "tolerance": c.tolerance, "passed": c.passed, "detail": c.detail, "warnings": list(c.warnings)}
         for c in checks], indent=1))
    out = report.path / "summary.md"
    out.write_text("\n".join(lines))
    return str(out)


