"""Strong and weak scaling of a sharded Langevin ensemble from 1 to 2 Dask workers.

    python benchmarks/bench_distributed.py            # N = 1e7 (strong), 5e6 per worker (weak), 20 steps
    python benchmarks/bench_distributed.py --quick    # N = 1e6, 5e5 per worker

Euler-Maruyama on the eight Gaussians (best of two runs), initial law N(0, 9 I) drawn on the
workers (GaussianInit), ``store="summaries"`` (start and end), one thread per
worker so that 1 -> 2 workers is 1 -> 2 cores.  Times are after a warm-up run
on every worker (JIT compile excluded) and include everything the client
waits for: scheduling, drawing x0, stepping, the block statistics, shipping
them and merging.  Efficiency: strong T(1) / (2 T(2)), weak T(1) / T(2).
Also measured: bytes of block statistics shipped per save, and the peak
resident memory of a worker, for the 100-worker projection in the README.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from _results import write_table

import particles
from fokkerplanck import energies as E
from particles.distributed import GaussianInit

U = E.GaussianMixture.ring()
DT, STEPS = 1e-3, 20


def rss_peak():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes (Linux: ru_maxrss in KiB)


def timed_run(client, n, shard_size):
    init = GaussianInit([0.0, 0.0], 9.0, seed=1, n=n)
    t0 = time.perf_counter()
    ens = particles.langevin(U, init, DT, STEPS, seed=2, save=particles.Save(store="summaries"),
                             shards=particles.Shards(client, size=shard_size, threads=1))
    return time.perf_counter() - t0, ens


def main(argv=None):
    from dask.distributed import Client, LocalCluster

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n_strong = 10**6 if args.quick else 10**7
    n_weak = n_strong // 2
    times, shipped, peaks, results = {}, {}, {}, {}
    for workers in (1, 2):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
        try:
            timed_run(client, 4 * 4096 * workers, 4096)  # warm-up: compile on every worker
            for label, n in (("strong", n_strong), ("weak", n_weak * workers)):
                # the same shard size on 1 and 2 workers (8 shards of the strong run), so that
                # only the number of workers changes; best of two: timings here wander by ~20%
                (t, ens), (t2, _) = (timed_run(client, n, n_strong // 8) for _ in range(2))
                t = min(t, t2)
                times[label, workers] = t
                results[label, workers] = ens
                shipped[label, workers] = sum(s.nbytes for s in ens.block_stats) / len(ens.block_stats)
                print(f"{label} {workers} worker(s), N = {n:.0e}: {t:.2f} s", file=sys.stderr)
            peaks[workers] = max(client.run(rss_peak).values())
        finally:
            client.close()
            cluster.close()
    # the same ensemble on 1 and 2 workers: the same bits
    same = all(np.array_equal(results["strong", 1].summaries[k], results["strong", 2].summaries[k])
               for k in results["strong", 1].summaries)
    rate1 = n_strong * STEPS / times["strong", 1] / 1e6
    lines = [
        f"# Sharded Langevin ensemble on Dask: 1 -> 2 workers ({os.cpu_count()} cores, 1 thread per worker)", "",
        f"`python benchmarks/bench_distributed.py{' --quick' if args.quick else ''}`: Euler-Maruyama on the eight "
        f"Gaussians, {STEPS} steps, x0 drawn on the workers, summaries at the start and the end.", "",
        "| scaling | N (1 worker) | N (2 workers) | T(1) s | T(2) s | efficiency |", "|---|---|---|---|---|---|",
        f"| strong | {n_strong:.0e} | {n_strong:.0e} | {times['strong', 1]:.2f} | {times['strong', 2]:.2f} | "
        f"{times['strong', 1] / (2 * times['strong', 2]):.2f} |",
        f"| weak | {n_weak:.0e} | {2 * n_weak:.0e} | {times['weak', 1]:.2f} | {times['weak', 2]:.2f} | "
        f"{times['weak', 1] / times['weak', 2]:.2f} |", "",
        f"- one worker: {rate1:.2f} M particle-steps/s end to end (one thread).",
        f"- block statistics shipped per save for N = {n_strong:.0e}: {shipped['strong', 2] / 1e6:.2f} MB "
        f"({shipped['strong', 2] / n_strong:.1f} bytes per particle).",
        f"- peak resident memory of a worker: {peaks[1] / 1e9:.2f} GB (1 worker, largest run "
        f"N = {n_strong:.0e}), {peaks[2] / 1e9:.2f} GB (2 workers).",
        f"- summaries on 1 and 2 workers bit-identical: {same}.",
    ]
    write_table("distributed", lines, args.quick)


if __name__ == "__main__":
    main()
