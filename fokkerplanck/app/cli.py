"""Command line ``fpk``."""
from __future__ import annotations

import argparse
import os
import sys
import time

import h5py
import numpy as np

from fokkerplanck.app.plots import plot_trajectory
from fokkerplanck.app.runner import FORMAT, builtin_configs, info_lines, load_config, load_spec, plot_run, read_run, run
from fokkerplanck.app import sweep as sweep_summary
from fokkerplanck.app.sweep import parse_params, sweep
from fokkerplanck.app.verify import CHECKS, Report, format_table, run_checks, tally, write_summary
from fokkerplanck.results import Trajectory

# Errors that a user's input can cause: printed as one line (exit status 2); --debug
# shows the traceback.  Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, MemoryError, OSError, RuntimeError, FloatingPointError, KeyError)


def _default_jobs() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def _verify(args) -> int:
    names = args.only or list(CHECKS)
    unknown = set(names) - set(CHECKS)
    if unknown:
        print(f"unknown checks {sorted(unknown)}; known: {sorted(CHECKS)}", file=sys.stderr)
        return 2
    report = None if args.no_report else Report(args.report)
    t0 = time.perf_counter()
    checks = run_checks(names, quick=args.quick, report=report, jobs=args.jobs,
                        progress=lambda n, s: print(f"  [{n}] done in {s:.1f} s", file=sys.stderr))
    print("\n".join(format_table(checks, width=100)))
    failed = [c for c in checks if not c.passed]
    print(tally(checks))
    if report is not None:
        print(f"report: {write_summary(report, checks, quick=args.quick, seconds=time.perf_counter() - t0)}")
    return 0 if not failed else 1


def _load(args, cmd: str):
    """The trajectory named on the command line (errors reach :func:`main`, which says
    what is wrong).  Its energy is rebuilt from the registry only: a file never makes
    this command import code."""
    return Trajectory.load(args.file, args.group)


def _run_file(args):
    """The ``fpk run`` summary of ``args.file`` when it is a run file and no group was
    asked for; None otherwise."""
    if args.group:
        return None
    try:
        with h5py.File(args.file, "r") as f:
            if f.attrs.get("format") != FORMAT:
                return None
    except OSError:
        return None
    return read_run(args.file)


def _info_run(path, r) -> int:
    print("\n".join(info_lines(path, r)))
    return 0


def _info(args) -> int:
    if not args.group and sweep_summary.is_summary(args.file):
        print("\n".join(sweep_summary.summary_lines(args.file, sweep_summary.read_summary(args.file))))
        return 0
    r = _run_file(args)
    if r is not None:
        return _info_run(args.file, r)
    tr = _load(args, "info")
    kl, R, mass = tr.kl(), tr.ratio(), tr.mass()
    print(f"{args.file}: {tr!r}")
    print(f"  energy: {tr.energy!r}   temperature: {tr.temperature:g}")
    print(f"  grid: {tr.grid!r}")
    print(f"  scheme: {tr.scheme}")
    ref = tr.refinement
    if ref is not None:
        print(f"  refinement: grids {ref.cells}, observed orders "
              + ", ".join(f"{k} {v:.2f}" for k, v in ref.observed_order.items())
              + ("" if ref.reliable else "  (NOT in the asymptotic regime: error estimates unreliable)"))
    extra = f" {'KL error':>10} {'R_t error':>10}" if ref is not None else ""
    v = tr.validity()
    if not v["valid"].all():
        print(f"  {int((~v['valid']).sum())} of {len(tr)} saved times are NOT VALID (marked *): the density is "
              "unresolved on the grid or its mass is off, so KL and R_t there are not those of probability laws")
    print(f"  {'t':>10} {'KL':>12} {'R_t':>10} {'mass':>14}{extra}")
    for j in np.unique(np.linspace(0, len(tr) - 1, min(len(tr), args.rows)).astype(int)):
        err = f" {ref.kl_error[j]:10.2g} {ref.ratio_error[j]:10.2g}" if ref is not None else ""
        mark = "" if v["valid"][j] else "  * " + ("mass off" if not v["mass_ok"][j] else "unresolved")
        print(f"  {tr.times[j]:10.4g} {kl[j]:12.6g} {R[j]:10.4g} {mass[j]:14.12f}{err}{mark}")
    return 0


def _plot(args) -> int:
    out = args.output or os.path.splitext(str(args.file))[0] + ".png"   # v1.2/run.h5 -> v1.2/run.png
    if not args.group and sweep_summary.is_summary(args.file):
        sweep_summary.plot_summary(args.file, sweep_summary.read_summary(args.file), out)
        print(out)
        return 0
    if _run_file(args) is not None:
        plot_run(args.file, out, steps=args.steps)
        print(out)
        return 0
    tr = _load(args, "plot")
    plot_trajectory(tr, out)
    print(out)
    return 0


def _run(args) -> int:
    spec = load_spec(args.config)   # parsed and checked once; run() takes it as it is
    inputs = [args.config] if args.config not in builtin_configs() or os.path.exists(args.config) else []
    try:
        run(spec, args.output, progress=not args.quiet, log=(lambda *a: None) if args.quiet else
            (lambda *a: print(*a, file=sys.stderr)), overwrite=args.overwrite, protect=inputs)
    except KeyboardInterrupt:
        print(f"fpk run: interrupted; {args.output} was not written", file=sys.stderr)
        return 130
    print(args.output)
    return 0


def _sweep(args) -> int:
    cfg = load_config(args.config)
    params = parse_params(args.param or [])
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    client = cluster = threads = None
    try:
        if args.scheduler or args.local:
            try:  # local: Dask is an optional dependency, and slow to import
                from dask.distributed import Client, LocalCluster
            except ImportError:
                print("fpk sweep: --scheduler/--local need Dask: pip install -e .[distributed]", file=sys.stderr)
                return 2
            if args.scheduler:
                client = Client(args.scheduler)
            else:
                threads = max(1, (os.cpu_count() or 1) // args.local)
                cluster = LocalCluster(n_workers=args.local, threads_per_worker=1, dashboard_address=None)
                client = Client(cluster)
        rows = sweep(cfg, params, args.output, client=client, log=log,
                     threads=threads if args.local else None)
    except KeyboardInterrupt:
        print(f"fpk sweep: interrupted; finished points are kept in {args.output}, rerun to resume", file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    print(f"{len(rows)} points: {args.output}/summary.csv")
    return 0


def _count(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p = argparse.ArgumentParser(prog="fpk", description="Fokker-Planck / gradient-flow toolkit")
    sub = p.add_subparsers(dest="cmd")
    _add = sub.add_parser

    def add_parser(*a, **kw):
        return _add(*a, parents=[common], **kw)
    sub.add_parser = add_parser
    v = sub.add_parser("verify", help="run the battery of theory checks and print a table")
    v.add_argument("--quick", action="store_true", help="small settings (a few minutes on 2 cores)")
    v.add_argument("--only", nargs="*", help="run only these checks")
    v.add_argument("--report", default="fpk-verify-report", metavar="DIR",
                   help="folder for the report: summary.md, checks.json, figures, HDF5 files (default: %(default)s)")
    v.add_argument("--no-report", action="store_true", help="print the table only")
    v.add_argument("--jobs", type=_count, default=_default_jobs(), metavar="N",
                   help="groups run in N processes, the cores shared among them (default: %(default)s, the cores "
                        "this process may use, at most 2; a first run compiles kernels on one core per process)")
    v.set_defaults(func=_verify)
    r = sub.add_parser("run", help="an experiment from a TOML config (or a built-in name) into one HDF5 file")
    r.add_argument("config", help="CONFIG.toml or a built-in name: " + ", ".join(builtin_configs()))
    r.add_argument("-o", "--output", required=True, help="output HDF5 file (written atomically)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    r.set_defaults(func=_run)
    sw = sub.add_parser("sweep", help="an fpk run experiment over a grid of parameters (resumable; Dask optional)")
    sw.add_argument("config", help="CONFIG.toml or a built-in name")
    sw.add_argument("--param", action="append", metavar="NAME=v1,v2,...",
                    help="a config entry (dotted path, e.g. grid.cells) or alias (dt, cells, n, method, scheme)")
    sw.add_argument("-o", "--output", required=True, help="folder for one HDF5 file per point and summary.csv/.h5")
    where = sw.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (tcp://host:8786)")
    where.add_argument("--local", type=_count, metavar="N", help="a local Dask cluster of N worker processes")
    sw.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sw.set_defaults(func=_sweep)
    i = sub.add_parser("info", help="summary of a trajectory file (HDF5)")
    i.add_argument("file")
    i.add_argument("--rows", type=_count, default=11, help="how many saved times to list")
    i.add_argument("--group", help="one flow of an fpk run file: fokker-planck or continuity "
                   "(default: the run's summary)")
    i.set_defaults(func=_info)
    pl = sub.add_parser("plot", help="figure of a trajectory file: snapshots, KL and R_t with stopping times")
    pl.add_argument("file")
    pl.add_argument("-o", "--output", help="image path (default: the file name with .png)")
    pl.add_argument("--group", help="one flow of an fpk run file: fokker-planck or continuity "
                    "(default: the run's own figure)")
    pl.add_argument("--steps", type=int, nargs="*", help="particle steps of the snapshots (fpk run files)")
    pl.set_defaults(func=_plot)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # the built-in default job
        argv = ["verify", "--quick"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"fpk {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (fpk info FILE | head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"fpk {args.cmd}: {exc}", file=sys.stderr)
        return 2
