"""Fault tests: ``fpk run`` and ``fpk sweep`` killed with SIGKILL (no chance to clean
up), then rerun.  Nothing under a final name may be partial, nothing stale may be
reused, and the temporary and lock files the killed process left must be gone after
the rerun.  And SIGINT (Ctrl-C) delivered to a process inside each long particle loop:
it stops there and keeps what it had done."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from fokkerplanck.app.cli import main
from fokkerplanck.app.runner import config_hash, load_config

CFG = textwrap.dedent("""
    temperature = 1.0
    [energy]
    type = "Quadratic"
    A = [[1.0]]
    [grid]
    bounds = [[-6.0, 6.0]]
    cells = 48
    [initial]
    type = "Gaussian"
    mean = [1.0]
    cov = 0.5
    [times]
    stop = 0.5
    num = 6
    [fokker_planck]
    [particles]
    n = 40000
    dt = 1e-3
    seed = 1
    """)


def _spawn(args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.Popen([sys.executable, "-m", "fokkerplanck", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(cond, proc, timeout=120.0):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (status {proc.returncode}) before the moment to kill it")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("timed out waiting for the moment to kill the process")
        time.sleep(0.05)


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith((".tmp", ".lock")))


def test_sigkill_during_fpk_run_then_rerun(tmp_path):
    cfg = tmp_path / "cfg.toml"
    # 2e8 particle-steps (~2 s on 2 cores since the SIMD kernels): the kill lands inside the run
    cfg.write_text(CFG.replace("dt = 1e-3", "dt = 1e-4"))
    out = tmp_path / "out.h5"
    proc = _spawn(["run", str(cfg), "-o", str(out), "-q"], tmp_path)
    _wait_for(lambda: any(n.endswith(".tmp") for n in os.listdir(tmp_path)), proc)
    time.sleep(1.0)  # well inside the run: writing, solving or compiling
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run left a file under the final name"
    assert any(n.endswith(".tmp") for n in _leftovers(tmp_path))  # what SIGKILL leaves
    # the rerun is not blocked by the dead writer's lock and cleans its temporary file
    assert main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    assert _leftovers(tmp_path) == []
    with h5py.File(out) as f:
        assert f.attrs["config_sha256"] == config_hash(load_config(cfg))
        kl = f["fokker-planck/diagnostics/kl"][()]
        assert f["particles/kl_knn"].shape == (6,)
    assert np.all(np.isfinite(kl)) and np.all(np.diff(kl) <= 1e-15)  # Lyapunov along the exact flow


def test_sigkill_during_fpk_sweep_then_rerun(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CFG)
    out = tmp_path / "sw"
    args = ["sweep", str(cfg), "--param", "cells=16,24,32", "-o", str(out), "-q"]
    proc = _spawn(args, tmp_path)
    _wait_for(lambda: out.is_dir() and any(n.endswith(".h5") for n in os.listdir(out)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(n for n in os.listdir(out) if n.endswith(".h5"))
    assert 1 <= len(finished) < 3 and "summary.h5" not in finished
    for name in finished:  # complete files only, each of its own point's config
        with h5py.File(out / name) as f:
            assert json.loads(f.attrs["config"])["grid"]["cells"] == int(name.split("=")[1][:-3])
            assert "fokker-planck/diagnostics/kl" in f and "particles/kl_knn" in f
    stamps = {n: os.stat(out / n).st_mtime_ns for n in finished}
    assert main(args) == 0
    assert _leftovers(out) == []
    assert {n: os.stat(out / n).st_mtime_ns for n in finished} == stamps  # finished points were reused
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 4 and [r.split(",")[0] for r in rows[1:]] == ["16", "24", "32"]


_CTRL_C_CHILD = textwrap.dedent("""
    import json, os, signal, sys
    # Ctrl-C raises KeyboardInterrupt, as in an interactive session, even when this test
    # runs in the background (where the shell starts it with SIGINT ignored, inherited here)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np
    import particles.ensemble as Ens
    from particles import annealed as An, jumps as Jp
    from fokkerplanck.discrete import finite as Dz, mixed as Mx
    from particles import mixed as Pm
    from fokkerplanck.energies.paths import VPFBHomotopy

    folder = sys.argv[1]
    state = {"name": None}

    def hook(chunks):  # the moment to press Ctrl-C: the loop is running its bounded calls
        if state["name"] is not None:
            open(os.path.join(folder, state["name"] + ".ready"), "w").close()
            state["name"] = None

    Ens.chunk_done = hook
    P = VPFBHomotopy(np.random.default_rng(0).normal(size=(6, 2)), 1.25, 1)
    N = 20000
    runs = {
        "annealed_langevin": lambda: An.annealed_langevin(P, np.zeros((N, 2)), 1e-7, 3_000_000, duration=1.0),
        "jumps": lambda: Jp.simulate(Dz.ising((10, 10)), np.zeros((N, 100), dtype=np.int64), [0.0, 1e4]),
        "mixed": lambda: Pm.simulate(Mx.JointMixture([[-1.0, 0.0], [1.0, 0.0]], 0.5), np.zeros(N, dtype=int),
                                     np.zeros((N, 2)), 1e-3, 10**8),
        "path_flow": lambda: An.path_flow(P, np.random.default_rng(1).normal(size=(2_000_000, 2)), [0.0, 1.0]),
    }
    out = {}
    for name, run in runs.items():
        state["name"] = name
        try:
            run()
            out[name] = "finished"
        except Ens.EnsembleInterrupted as exc:
            out[name] = [exc.done, exc.total]
    print(json.dumps(out))
    """)


def test_sigint_stops_every_long_particle_loop_and_keeps_the_partial_result(tmp_path):
    """A real SIGINT to a process inside each loop (sent once the loop has made its first
    bounded compiled call, never on a timer): each one raises EnsembleInterrupted with what
    it had completed, and the process goes on (the probe: 40-60 s of work after Ctrl-C)."""
    script = tmp_path / "child.py"
    script.write_text(_CTRL_C_CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    names = ["annealed_langevin", "jumps", "mixed", "path_flow"]
    for name in names:
        _wait_for(lambda name=name: (tmp_path / f"{name}.ready").exists(), proc, timeout=300.0)
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert set(res) == set(names)
    for name in names:
        assert res[name] != "finished", f"{name} ran to its end: the interrupt was not seen"
        done, total = res[name]
        assert done < total, (name, done, total)
    assert res["annealed_langevin"] == [1, 2] and res["jumps"] == [1, 2] and res["mixed"] == [1, 2]
    assert res["path_flow"][1] == 2_000_000
