"""Where the first run's compilation goes: numba's compile events during ``fpk verify``,
each with its exclusive time (callees compiled as their own events subtracted), grouped
by the function compiled (a generated closure by the function it was generated from).

    python tools/compile_profile.py [GROUP ...]

For a first run, point it at empty caches and a fresh copy of the tree, e.g.
``git archive HEAD | tar -x -C /tmp/src && cd /tmp/src && XDG_CACHE_HOME=$(mktemp -d)
PYTHONPATH=/tmp/src python tools/compile_profile.py`` (one process; minutes).
"""
from __future__ import annotations

import argparse
import collections
import time

from numba.core import event

ROWS: list = []
_STACK: list = []


class _Listener(event.Listener):
    def on_start(self, ev):
        _STACK.append([time.perf_counter(), 0.0])

    def on_end(self, ev):
        t0, inner = _STACK.pop()
        dt = time.perf_counter() - t0
        if _STACK:
            _STACK[-1][1] += dt
        f = ev.data["dispatcher"].py_func
        ROWS.append((f.__module__, f.__qualname__, f.__code__.co_filename, dt - inner))


def _origin(module: str, qualname: str, filename: str) -> str:
    if module.startswith("_fpk_kernel_"):   # a generated module names its origin on its first line
        with open(filename, encoding="utf-8") as fh:
            return fh.readline().split(" from ")[-1].split(":")[0]
    return "numba internals" if module.startswith("numba") else f"{module}.{qualname}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="*", help="fpk verify groups (default: all)")
    ap.add_argument("--top", type=int, default=30, help="rows to print")
    args = ap.parse_args(argv)
    event.register("numba:compile", _Listener())
    from fokkerplanck.app.verify import framework

    t0 = time.perf_counter()
    checks = framework.run_checks(args.groups or None, quick=True, jobs=1)
    wall = time.perf_counter() - t0
    total = collections.Counter()
    count = collections.Counter()
    for module, qualname, filename, seconds in ROWS:
        key = _origin(module, qualname, filename)
        total[key] += seconds
        count[key] += 1
    print(f"{len(checks)} checks in {wall:.1f} s; {len(ROWS)} compilations, {sum(total.values()):.1f} s in all")
    print("| seconds | compilations | function |\n|---|---|---|")
    for key, seconds in total.most_common(args.top):
        print(f"| {seconds:.1f} | {count[key]} | {key} |")


if __name__ == "__main__":
    main()
