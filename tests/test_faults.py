"""Fault tests: ``fpk run`` and ``fpk sweep`` killed with SIGKILL (no chance to clean
up), then rerun.  Nothing under a final name may be partial, nothing stale may be
reused, and the temporary and lock files the killed process left must be gone after
the rerun."""
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
