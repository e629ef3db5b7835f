"""Sharded ensembles on a Dask LocalCluster (2 worker processes): bit-identical
positions and summaries to the single-process run, also when a worker is killed
in the middle; sweeps that resume."""
import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("dask.distributed")

pytestmark = pytest.mark.slow  # a two-worker LocalCluster (~50 s in all): CI's second step

import particles  # noqa: E402
from fokkerplanck import energies as E  # noqa: E402
from particles.distributed import GaussianInit, shard_ranges  # noqa: E402
from particles.summaries import BLOCK  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _same(a, b):
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.summaries.keys() == b.summaries.keys()
    for k in a.summaries:
        np.testing.assert_array_equal(a.summaries[k], b.summaries[k], err_msg=k)
    np.testing.assert_array_equal(a.alive, b.alive)


def test_shard_ranges_cover_and_align():
    r = shard_ranges(10 * BLOCK + 5, 3 * BLOCK - 7)
    assert r[0] == (0, 3 * BLOCK) and r[-1][1] == 10 * BLOCK + 5
    assert all(a % BLOCK == 0 for a, _ in r) and all(r[i][1] == r[i + 1][0] for i in range(len(r) - 1))


def test_sharded_langevin_bit_identical(client):
    U = E.GaussianMixture.ring()
    x0 = np.clip(np.random.default_rng(0).normal(size=(5 * BLOCK + 123, 2)) * 3, -8.9, 8.9)
    box = [(-9.0, 9.0)] * 2  # some particles leave: the frozen ones must be masked identically
    one = particles.langevin(U, x0, 2e-2, 60, save_every=20, seed=5, box=box)
    many = particles.langevin(U, x0, 2e-2, 60, save_every=20, seed=5, box=box, client=client, shard_size=BLOCK,
                              shard_threads=1)
    assert many.meta["shards"] == 6 and one.escaped == many.escaped
    _same(one, many)


def test_sharded_gradient_flow_with_initial_law_on_the_workers(client):
    U = E.GaussianMixture.ring()
    init = GaussianInit([0.0, 0.0], 9.0, seed=3, n=3 * BLOCK + 17)
    kw = dict(method="rk4", save_every=25, track_logdensity=True, logrho0=init)
    one = particles.gradient_flow(U, init, 1e-3, 100, **kw)
    many = particles.gradient_flow(U, init, 1e-3, 100, client=client, shard_size=BLOCK, **kw)
    _same(one, many)
    np.testing.assert_array_equal(one.logdensity, many.logdensity)
    assert np.isfinite(many.summaries["kl"]).all()
    # the initial law is the same bits whichever shard draws it
    np.testing.assert_array_equal(init.sample_range(BLOCK, 2 * BLOCK), init.sample_range(0, 2 * BLOCK)[BLOCK:])


def test_worker_killed_mid_ensemble_gives_the_same_bits(client):
    U = E.GaussianMixture.ring()
    x0 = np.random.default_rng(1).normal(size=(4 * BLOCK, 2)) * 3
    ref = particles.langevin(U, x0, 1e-3, 3000, save_every=100, seed=9, store="summaries")
    out = {}

    def run():
        out["ens"] = particles.langevin(U, x0, 1e-3, 3000, save_every=100, seed=9, store="summaries",
                                        client=client, shard_size=BLOCK)

    th = threading.Thread(target=run)
    th.start()
    deadline = time.time() + 60
    while time.time() < deadline and not any(client.processing().values()):
        time.sleep(0.05)
    time.sleep(0.5)  # the shards are running
    busy = [w for w, tasks in client.processing().items() if tasks]
    assert busy, "no task was running"
    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
    os.kill(pid, signal.SIGKILL)
    th.join(timeout=300)
    assert "ens" in out
    for k in ref.summaries:
        np.testing.assert_array_equal(ref.summaries[k], out["ens"].summaries[k], err_msg=k)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


SWEEP_CFG = {
    "temperature": 1.0,
    "energy": {"type": "Quadratic", "A": [[1.5, 0.5], [0.5, 0.8]]},
    "grid": {"bounds": [[-7.0, 7.0], [-7.0, 7.0]], "cells": 32},
    "initial": {"type": "Gaussian", "mean": [2.0, -1.0], "cov": [[0.3, 0.0], [0.0, 0.5]]},
    "times": {"stop": 0.5, "num": 11},
    "fokker_planck": {},
    "deterministic_particles": {"n": 2000, "dt": 5e-3, "method": "rk4", "seed": 2},
}


def test_sweep_resumes_after_an_interruption(tmp_path, monkeypatch):
    """An interrupted sweep leaves only finished points under final names; the rerun
    computes only the missing points; the summary has one row per point with the
    errors against the OU closed form falling with the grid."""
    import csv

    from fokkerplanck.app import sweep as S

    params = S.parse_params(["cells=24,48", "dt=0.005,0.01"])
    calls = []
    real = S.run_point

    def flaky(cfg, path):
        calls.append(os.path.basename(path))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(cfg, path)

    monkeypatch.setattr(S, "run_point", flaky)
    with pytest.raises(KeyboardInterrupt):
        S.sweep(SWEEP_CFG, params, tmp_path, log=lambda *a: None)
    done = sorted(p.name for p in tmp_path.iterdir())
    assert done == sorted(calls[:2])            # two finished files, nothing else (no temp, no summary)
    calls.clear()
    rows = S.sweep(SWEEP_CFG, params, tmp_path, log=lambda *a: None)
    assert len(calls) == 2 and not set(calls) & set(done)
    with open(tmp_path / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == 4
    err = {(int(r["cells"]), float(r["dt"])): float(r["err_kl_fokker_planck"]) for r in table}
    assert err[(48, 0.005)] < err[(24, 0.005)] / 3   # second order in h: 4x expected
    calls.clear()
    S.sweep(SWEEP_CFG, params, tmp_path, log=lambda *a: None)
    assert calls == []                                 # all done: nothing recomputed


def test_sweep_on_dask_survives_a_killed_worker(client, tmp_path):
    """Points run on the cluster; a worker killed mid-sweep has its point rerun
    elsewhere; every file is complete and the tau_det column equals the in-process one."""
    import h5py

    from fokkerplanck.app import sweep as S

    cfg = dict(SWEEP_CFG, deterministic_particles={"n": 20000, "dt": 1e-3, "method": "rk4", "seed": 2})
    params = S.parse_params(["cells=24,32,40,48"])
    out = {}
    th = threading.Thread(target=lambda: out.update(rows=S.sweep(cfg, params, tmp_path / "dask", client=client,
                                                                 log=lambda *a: None)))
    th.start()
    deadline = time.time() + 120
    while time.time() < deadline and not any(client.processing().values()):
        time.sleep(0.05)
    time.sleep(1.0)
    busy = [w for w, tasks in client.processing().items() if tasks]
    assert busy, "no point was running"
    os.kill(client.run(os.getpid, workers=[busy[0]])[busy[0]], signal.SIGKILL)
    th.join(timeout=600)
    assert "rows" in out
    assert sorted(p.name for p in (tmp_path / "dask").iterdir() if p.suffix == ".h5" and p.stem.startswith("cells")) \
        == [f"cells={c}.h5" for c in (24, 32, 40, 48)]
    for p in (tmp_path / "dask").glob("cells=*.h5"):
        with h5py.File(p) as f:
            assert "deterministic-particles" in f and "wall_time" in f.attrs   # complete files only
    local = S.sweep(cfg, S.parse_params(["cells=24"]), tmp_path / "local", log=lambda *a: None)
    assert local[0]["tau_det_particles"] == out["rows"][0]["tau_det_particles"]
    client.wait_for_workers(2, timeout=60)


def test_sharded_histograms_add_exactly_and_binned_kl(client):
    """Per-cell counts are integers: the shards' sum is the single-process histogram;
    the binned KL from them matches the grid Fokker-Planck law's binned KL."""
    from fokkerplanck import FokkerPlanck, Grid, densities
    from particles import estimators as est

    U = E.GaussianMixture.ring()
    g = Grid([(-8, 8)] * 2, 32)
    rho0 = densities.Gaussian([0, 0], 4.0).on_grid(Grid([(-8, 8)] * 2, 128))
    x0 = Grid([(-8, 8)] * 2, 128).sample(rho0, 6 * BLOCK, seed=1)
    kw = dict(save_every=250, seed=3, histogram=g, store="summaries")
    one = particles.langevin(U, x0, 2e-3, 500, **kw)
    many = particles.langevin(U, x0, 2e-3, 500, client=client, shard_size=BLOCK, **kw)
    np.testing.assert_array_equal(one.histograms, many.histograms)
    assert one.histograms.shape == (3, 32, 32) and one.histograms[0].sum() == x0.shape[0]
    e = est.kl_binned(many.histograms[-1], g, U)
    # reference: the Fokker-Planck law at t = 1 (fine grid), binned to the same 32^2 cells
    fine = FokkerPlanck(U, Grid([(-8, 8)] * 2, 128)).solve(rho0, [1.0]).densities[-1]
    p = fine.reshape(32, 4, 32, 4).sum(axis=(1, 3)) * (16 / 128) ** 2
    pi = g.gibbs(U) * g.cell_volume
    ref = float(np.sum(p[p > 0] * np.log(p[p > 0] / pi[p > 0])))
    bias = (np.count_nonzero(p > 1e-6) - 1) / (2 * x0.shape[0])   # multinomial plug-in bias
    assert abs(e.value - bias - ref) < 4 * e.stderr + 0.01, (e, ref, bias)


def test_summary_block_changes_only_rounding_and_stays_shard_exact(client):
    U = E.GaussianMixture.ring()
    x0 = np.random.default_rng(2).normal(size=(20_000, 2)) * 3
    kw = dict(save_every=50, seed=4, store="summaries")
    ref = particles.langevin(U, x0, 1e-3, 100, **kw)
    one = particles.langevin(U, x0, 1e-3, 100, summary_block=3000, **kw)
    many = particles.langevin(U, x0, 1e-3, 100, summary_block=3000, client=client, shard_size=5000, **kw)
    assert many.meta["shards"] == 4 and many.block_stats[0].shape[0] == 7       # shards of 6000, blocks of 3000
    for k in ref.summaries:
        np.testing.assert_array_equal(one.summaries[k], many.summaries[k], err_msg=k)
        np.testing.assert_allclose(one.summaries[k], ref.summaries[k], rtol=1e-11, atol=1e-15, err_msg=k)
    with pytest.raises(ValueError, match="summary_block"):
        particles.langevin(U, x0, 1e-3, 1, summary_block=0)


def test_shards_object_is_the_keywords_bit_for_bit(client):
    """``shards=Shards(...)`` and ``save=Save(...)`` give the in-process run's bits, and those of
    the ``client=``/``save_every=`` keywords."""
    U = E.GaussianMixture.ring()
    x0 = np.random.default_rng(2).normal(size=(3 * BLOCK + 50, 2)) * 2
    save = particles.Save(every=15, summary_block=BLOCK // 4)
    one = particles.langevin(U, x0, 2e-2, 45, seed=8, method="mala", save=save)
    many = particles.langevin(U, x0, 2e-2, 45, seed=8, method="mala", save=save,
                              shards=particles.Shards(client, size=BLOCK, threads=1))
    old = particles.langevin(U, x0, 2e-2, 45, seed=8, method="mala", save_every=15, summary_block=BLOCK // 4,
                             client=client, shard_size=BLOCK, shard_threads=1)
    assert many.meta["shards"] == 4
    for other in (many, old):
        _same(one, other)
        np.testing.assert_array_equal(one.acceptance, other.acceptance)
    # save times on the workers: the same saves
    at = particles.langevin(U, x0, 2e-2, 45, seed=8, method="mala", shards=particles.Shards(client, size=BLOCK),
                            save=particles.Save(times=[0.3, 0.9], summary_block=BLOCK // 4))
    np.testing.assert_array_equal(at.positions, one.positions[[1, 3]])
    for k in at.summaries:
        np.testing.assert_array_equal(at.summaries[k], one.summaries[k][[1, 3]], err_msg=k)


def test_bad_shards_fields_name_the_field(client, tmp_path):
    with pytest.raises(ValueError, match="Shards.size"):
        particles.Shards(client, size=0)
    with pytest.raises(ValueError, match="Shards.threads"):
        particles.Shards(client, threads=1.5)
    with pytest.raises(ValueError, match="Shards.client"):
        particles.Shards("tcp://127.0.0.1:8786")
    U = E.GaussianMixture.ring()
    x0 = np.zeros((10, 2))
    with pytest.raises(ValueError, match="client= given together with shards="):
        particles.langevin(U, x0, 1e-2, 5, seed=1, shards=particles.Shards(client), client=client)
    with pytest.raises(ValueError, match="Save.store must be 'memory' or 'summaries'"):
        particles.gradient_flow(U, x0, 1e-2, 5, shards=particles.Shards(client),
                                save=particles.Save(store=tmp_path / "x.h5"))


def test_sharded_run_counts_overflowed_particles_as_in_process(client):
    """Summaries leave out particles whose values overflow and count them per save; a sharded
    run counted none (Ensemble.overflowed was empty)."""
    U = E.Quadratic(np.eye(2))
    x0 = np.random.default_rng(1).normal(size=(3 * BLOCK, 2))
    x0[BLOCK + 5: BLOCK + 9] = 1e200      # in the second shard
    with pytest.warns(RuntimeWarning, match="4 of"):
        one = particles.langevin(U, x0, 1e-3, 10, seed=0)
    with pytest.warns(RuntimeWarning, match="4 of"):
        many = particles.langevin(U, x0, 1e-3, 10, seed=0, client=client, shard_size=BLOCK, shard_threads=1)
    assert one.overflowed.tolist() == [4, 4]
    np.testing.assert_array_equal(many.overflowed, one.overflowed)
    assert many.meta["overflowed"] == 4
    _same(one, many)
