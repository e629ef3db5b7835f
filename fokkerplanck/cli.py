"""Command line ``fpk``."""
from __future__ import annotations

import argparse
import sys


def _verify(args) -> int:
    from .verify import CHECKS, run_checks

    names = args.only or list(CHECKS)
    unknown = set(names) - set(CHECKS)
    if unknown:
        print(f"unknown checks {sorted(unknown)}; known: {sorted(CHECKS)}", file=sys.stderr)
        return 2
    checks = run_checks(names, quick=args.quick,
                        progress=lambda n, s: print(f"  [{n}] done in {s:.1f} s", file=sys.stderr))
    w = max(len(c.name) for c in checks)
    print(f"{'check':<{w}}  {'measured':>12}  {'tolerance':>10}  result")
    for c in checks:
        print(f"{c.name:<{w}}  {c.value:12.4g}  {c.tolerance:10.3g}  {'PASS' if c.passed else 'FAIL'}")
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 0 if not failed else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fpk", description="Fokker-Planck / gradient-flow toolkit")
    sub = p.add_subparsers(dest="cmd")
    v = sub.add_parser("verify", help="run the battery of theory checks and print a table")
    v.add_argument("--quick", action="store_true", help="small settings (a few minutes on 2 cores)")
    v.add_argument("--only", nargs="*", help="run only these checks")
    v.set_defaults(func=_verify)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # the built-in default job
        argv = ["verify", "--quick"]
    args = build_parser().parse_args(argv)
    return args.func(args)
