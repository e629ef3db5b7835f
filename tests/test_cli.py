import pytest

from fokkerplanck.app import cli
from fokkerplanck.app.verify import CHECKS


def test_verify_energies_passes(capsys, tmp_path):
    assert cli.main(["verify", "--quick", "--only", "energies", "--report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out


def test_verify_report_folder(tmp_path, capsys):
    """The report folder holds the table (markdown and JSON) and every figure it links."""
    import json

    import matplotlib.image as mpimg

    rep = tmp_path / "report"
    assert cli.main(["verify", "--quick", "--only", "stopping", "composition", "--report", str(rep)]) == 0
    checks = json.loads((rep / "checks.json").read_text())
    assert {c["group"] for c in checks} == {"stopping", "composition"} and all(c["passed"] for c in checks)
    md = (rep / "summary.md").read_text()
    assert md.startswith("# fpk verify --quick: ") and f"{len(checks)} passed, 0 failed" in md
    for name in ("ou_tau_lang.png", "composition_gibbs_laws.png"):
        assert f"]({name})" in md
        assert mpimg.imread(rep / name).std() > 0.01
    capsys.readouterr()
    assert cli.main(["verify", "--quick", "--only", "energies", "--no-report"]) == 0
    assert "report:" not in capsys.readouterr().out


def test_verify_one_thread_groups(monkeypatch):
    """A group registered with one_thread=True runs on one numba thread, and the thread count
    is restored after it; other groups keep theirs."""
    import numba

    from fokkerplanck.app import verify as V
    from fokkerplanck.app.verify import framework as F

    monkeypatch.setattr(F, "CHECKS", dict(F.CHECKS))
    monkeypatch.setattr(F, "ONE_THREAD", set(F.ONE_THREAD))
    seen = []

    @V.register(one_thread=True)
    def check_threads(quick=True, report=None):
        seen.append(numba.get_num_threads())
        return [V.at_most("threads", seen[-1], 1)]

    @V.register
    def check_threads_default(quick=True, report=None):
        seen.append(numba.get_num_threads())
        return [V.at_least("threads", seen[-1], 1)]

    before = numba.get_num_threads()
    assert "threads" in F.ONE_THREAD and "threads_default" not in F.ONE_THREAD
    assert V.run_group("threads")[0].passed and V.run_group("threads_default")[0].passed
    assert seen == [1, before] and numba.get_num_threads() == before


def test_verify_unknown_check():
    assert cli.main(["verify", "--only", "nope"]) == 2


def test_checks_registered():
    assert "energies" in CHECKS


def _holds(c):
    """The comparison a checks.json entry names, evaluated here, independently of verify.py."""
    import math

    x, tol, target = c["value"], c["tolerance"], c["target"]
    if not math.isfinite(x):
        return False
    return {"<=": lambda: x <= tol, "<": lambda: x < tol, ">=": lambda: x >= tol, ">": lambda: x > tol,
            "|x - target| <=": lambda: abs(x - target) <= tol, "|x - target| <": lambda: abs(x - target) < tol,
            }[c["comparison"]]()


def test_verify_comparisons():
    """at_most / at_least / near state the comparison that decides the check, strict when asked."""
    import pytest

    from fokkerplanck.app.verify import Check, at_least, at_most, near

    assert at_most("a", 0.5, 0.9).passed and not at_most("a", 1.0, 0.9).passed
    assert at_most("a", 0.9, 0.9).passed and not at_most("a", 0.9, 0.9, strict=True).passed
    assert at_least("b", 0.95, 0.9).passed and not at_least("b", 0.5, 0.9).passed
    assert at_least("b", 0.0, 0.0).passed and not at_least("b", 0.0, 0.0, strict=True).passed
    assert near("c", 0.4995, 0.5, 1e-3).passed and near("c", 0.5008, 0.5, 1e-3).passed
    assert not near("c", 0.502, 0.5, 1e-3).passed and not near("c", 0.498, 0.5, 1e-3).passed
    assert not at_most("nan", float("nan"), 1.0).passed and not at_least("inf", float("inf"), 1.0).passed
    assert [at_most("a", 0, 1).comparison, at_most("a", 0, 1, strict=True).comparison, at_least("b", 1, 0).comparison,
            at_least("b", 1, 0, strict=True).comparison, near("c", 0, 0, 1).comparison,
            near("c", 0, 0, 1, strict=True).comparison] == ["<=", "<", ">=", ">", "|x - target| <=", "|x - target| <"]
    assert (at_most("a", 0, 1e-10).criterion, at_least("b", 1, 0.9).criterion, near("c", 0.5, 0.5, 1e-3).criterion,
            near("c", 2, 2, 0.2, strict=True).criterion) == ("<= 1e-10", ">= 0.9", "= 0.5 +- 0.001", "|x - 2| < 0.2")
    with pytest.raises(ValueError, match="comparison"):
        Check("d", 1.0, "==", 1.0)
    with pytest.raises(ValueError, match="target"):
        Check("d", 1.0, "|x - target| <=", 1.0)


def test_verify_report_states_comparisons_and_warnings(tmp_path, capsys, monkeypatch):
    """checks.json states each check's comparison (and target), and a warning raised while a
    group runs is attached to its checks, marked PASS* in the tables and counted; the
    terminal table fits in 100 columns."""
    import json
    import math
    import warnings

    from fokkerplanck.app.verify import at_least, at_most, near

    def check_synthetic(quick=True, report=None):
        """A set-up that warns."""
        warnings.warn("synthetic: the box is too small", RuntimeWarning)
        return [at_most("synthetic upper bound", 0.5, 1.0), at_least("synthetic lower bound", 0.95, 0.9),
                near("synthetic two-sided", 0.5004, 0.5, 1e-3)]

    monkeypatch.setitem(CHECKS, "synthetic", check_synthetic)
    rep = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a user's filter does not hide a check's warning from the report
        assert cli.main(["verify", "--quick", "--only", "energies", "wasserstein", "synthetic",
                         "--report", str(rep)]) == 0
    out = capsys.readouterr().out
    checks = json.loads((rep / "checks.json").read_text())
    assert {c["group"] for c in checks} == {"energies", "wasserstein", "synthetic"}
    for c in checks:
        assert c["comparison"] in ("<=", "<", ">=", ">", "|x - target| <=", "|x - target| <"), c
        assert isinstance(c["value"], float) and isinstance(c["tolerance"], float) and math.isfinite(c["tolerance"])
        if c["comparison"].startswith("|x - target|"):
            assert isinstance(c["target"], float) and math.isfinite(c["target"]), c
        else:
            assert c["target"] is None, c
        assert c["passed"] is _holds(c) is True, c
        assert isinstance(c["warnings"], list)
    syn = {c["name"]: c for c in checks if c["group"] == "synthetic"}
    assert [(c["comparison"], c["tolerance"], c["target"]) for c in syn.values()] == [
        ("<=", 1.0, None), (">=", 0.9, None), ("|x - target| <=", 1e-3, 0.5)]
    for c in syn.values():
        assert len(c["warnings"]) == 1
        assert c["warnings"][0].startswith("RuntimeWarning: synthetic: the box is too small")
    assert all(c["warnings"] == [] for c in checks if c["group"] != "synthetic")
    w2 = next(c for c in checks if c["name"].startswith("W2 of two Gaussians"))
    assert (w2["comparison"], w2["target"], w2["tolerance"]) == ("|x - target| <", 2.0, 0.2)

    md = (rep / "summary.md").read_text()
    assert md.startswith(f"# fpk verify --quick: {len(checks)} passed, 0 failed, 3 with warnings")
    assert md.count("| PASS\\* |") == 3 and "synthetic: the box is too small" in md
    assert "| <= 1e-13 | PASS |" in md and "| >= 0.9 | PASS\\* |" in md and "| = 0.5 +- 0.001 | PASS\\* |" in md
    assert "| \\|x - 2\\| < 0.2 | PASS |" in md
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert sum(line.endswith("PASS*") for line in lines) == 3 and "synthetic: the box is too small" in out
    assert f"{len(checks)} passed, 0 failed, 3 with warnings" in out


def _trajectory(tmp_path, flow):
    import numpy as np

    from fokkerplanck import Continuity, FokkerPlanck, Grid, densities, energies as E

    g = Grid([(-4, 4)], 160)
    U = E.DoubleWell(1)
    solver = FokkerPlanck(U, g) if flow == "fp" else Continuity(U, g, method="lagrangian")
    tr = solver.solve(densities.Gaussian([0.0], 0.5), np.linspace(0, 0.4, 21))
    p = tmp_path / f"{flow}.h5"
    tr.save(p)
    return p, tr


def test_info_and_plot(tmp_path, capsys):
    import matplotlib.image as mpimg

    from fokkerplanck.app.plots import plot_trajectory
    from fokkerplanck.theory.stopping import tau_det

    for flow in ("fp", "det"):
        p, tr = _trajectory(tmp_path, flow)
        assert cli.main(["info", str(p)]) == 0
        out = capsys.readouterr().out
        assert "KL" in out and f"{tr.kl()[-1]:12.6g}".strip() in out
        assert cli.main(["plot", str(p), "-o", str(tmp_path / f"{flow}.png")]) == 0
        img = mpimg.imread(tmp_path / f"{flow}.png")
        assert img.shape[0] > 300 and img.std() > 0.01  # a real picture, not blank
        fig = plot_trajectory(tr)
        ax_kl = fig.subfigs[1].axes[0]
        assert ax_kl.get_xlabel() == "time t" and "KL" in ax_kl.get_ylabel()
        if flow == "det":  # the stopping time is marked where R_t crosses 1
            labels = [t.get_text() for t in ax_kl.get_legend().get_texts()]
            td = tau_det(tr.times, tr.ratio()).time
            assert any(f"tau_det = {td:.4g}" in s for s in labels), labels


def test_info_bad_file(tmp_path, capsys):
    q = tmp_path / "junk.h5"
    q.write_bytes(b"nope")
    assert cli.main(["info", str(q)]) == 2
    assert "not a readable HDF5" in capsys.readouterr().err


SMALL = """
temperature = 1.0
[energy]
type = "GaussianMixture.ring"
n = 4
radius = 2.0
sigma = 0.6
[grid]
bounds = [[-6.0, 6.0], [-6.0, 6.0]]
cells = 48
[initial]
type = "Gaussian"
mean = [0.0, 0.0]
cov = 1.0
[times]
stop = 0.4
num = 5
[fokker_planck]
[continuity]
method = "finite-volume"
[particles]
n = 2000
dt = 0.01
seed = 3
"""


def test_run_config_into_one_file(tmp_path, capsys):
    import h5py
    import numpy as np

    from fokkerplanck import Trajectory

    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    out = tmp_path / "out.h5"
    assert cli.main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    with h5py.File(out) as f:
        assert {"fokker-planck", "continuity", "particles"} <= set(f)
        assert f["particles/kl_knn"].shape == (5,) and np.all(np.isfinite(f["particles/kl_knn"][()]))
    fp, det = Trajectory.load(out), Trajectory.load(out, "continuity")
    assert fp.flow == "fokker-planck" and det.flow == "continuity"
    assert np.all(np.diff(fp.kl()) <= 0)                          # Lyapunov along Fokker-Planck
    assert cli.main(["info", str(out), "--group", "continuity"]) == 0
    assert "continuity" in capsys.readouterr().out
    assert cli.main(["info", str(out), "--group", "nope"]) == 2


def test_run_interrupted_leaves_no_file(tmp_path, monkeypatch):
    from fokkerplanck.flows import fokker_planck as solvers

    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    out = tmp_path / "out.h5"

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(solvers.FokkerPlanck, "solve", boom)
    assert cli.main(["run", str(cfg), "-o", str(out), "-q"]) == 130
    assert list(tmp_path.iterdir()) == [cfg]


def test_run_bad_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[energy]\ntype = 'Quadratic'\n")
    assert cli.main(["run", str(bad), "-o", str(tmp_path / "x.h5")]) == 2
    assert cli.main(["run", "no_such_config", "-o", str(tmp_path / "x.h5")]) == 2
    from fokkerplanck.app.runner import REQUIRED, builtin_configs, load_config
    assert {"eight_gaussians", "double_well", "composition", "ou", "theorem"} <= set(builtin_configs())
    for name in builtin_configs():  # shipped configs parse and name what they need
        cfg = load_config(name)
        assert set(REQUIRED[cfg.get("kind", "flows")]) <= set(cfg)
    bad.write_text("kind = 'nope'\n[energy]\ntype = 'Quadratic'\n")
    assert cli.main(["run", str(bad), "-o", str(tmp_path / "x.h5")]) == 2
    bad.write_text("kind = 'composition'\n[grid]\n[initial]\n[composition]\nsamples = 5\n")  # a typo'd key
    assert cli.main(["run", str(bad), "-o", str(tmp_path / "x.h5")]) == 2


OU = """
temperature = 1.0
[energy]
type = "Quadratic"
A = [[1.5, 0.5], [0.5, 0.8]]
[grid]
bounds = [[-7.0, 7.0], [-7.0, 7.0]]
cells = 64
[initial]
type = "Gaussian"
mean = [2.0, -1.0]
cov = [[0.3, 0.0], [0.0, 0.5]]
[times]
stop = 0.6
num = 31
[fokker_planck]
[continuity]
method = "lagrangian"
[deterministic_particles]
n = 20000
dt = 2e-3
method = "rk4"
seed = 2
[stopping]
eps = [1e-2]
"""


def test_run_ou_against_closed_forms_and_stopping(tmp_path):
    """The OU run holds every flow against its closed form; the particle k* agrees
    with the exact tau_det within its error bar, and with the step of minimal KL."""
    import numpy as np

    from fokkerplanck import Trajectory
    from fokkerplanck.app.runner import load_config, read_run, run

    p = tmp_path / "ou.toml"
    p.write_text(OU)
    out = tmp_path / "ou.h5"
    run(load_config(p), out, progress=False, log=lambda *a: None)
    r = read_run(out)
    cf = r["closed-form"]
    fp, det = Trajectory.load(out, "fokker-planck"), Trajectory.load(out, "continuity")
    assert np.max(np.abs(fp.kl() - cf["kl_fokker_planck"]) / cf["kl_fokker_planck"]) < 2e-2  # O(h^2), h = 0.22
    assert np.max(np.abs(det.kl() - cf["kl_continuity"])) < 1e-6   # Lagrangian point values, resolved Gaussians
    d = r["deterministic-particles"]
    z = np.abs(d["summaries/kl"] - cf["kl_continuity"]) / d["summaries/kl_se"]
    assert z.max() < 4.5  # 31 saves of one ensemble (correlated): 4.5 SE
    stops = {(s["name"], s["source"].split(" (")[0]): s for s in r["stopping"]}
    exact = stops[("tau_det", "grid R_t")]["time"]
    assert abs(exact - stops[("argmin KL", "grid KL")]["time"]) < 0.02 ** 2 * 10  # O(save spacing^2)
    k = stops[("tau_det", "particle R_t")]
    assert abs(k["time"] - exact) < 4 * k["stderr"] + 2e-3
    assert abs(k["step"] - stops[("argmin KL", "particle tracked KL")]["step"]) <= 1 + 4 * k["stderr"] / 2e-3
    lang = [s for s in r["stopping"] if s["name"].startswith("tau_Lang")]
    certified = [s for s in lang if s["certified"]]
    assert len(certified) == 1 and "Bakry-Emery" in certified[0]["source"]
    assert certified[0]["c_ls"] == np.linalg.eigvalsh([[1.5, 0.5], [0.5, 0.8]]).min()
    _check_run_figure(out, tmp_path, [f"predicted k* = {k['step']}", "step of minimal KL"])


def _check_run_figure(out, tmp_path, texts):
    """``fpk plot`` of a run file draws its figure with ``texts`` in it; ``fpk info`` summarises it."""
    import matplotlib.image as mpimg

    from fokkerplanck.app.runner import plot_run

    png = tmp_path / "fig.png"
    assert cli.main(["plot", str(out), "-o", str(png)]) == 0
    img = mpimg.imread(png)
    assert img.shape[0] > 300 and img.std() > 0.01
    fig = plot_run(out)
    drawn = " ".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])
    for t in texts:
        assert t in drawn, (t, drawn)
    assert cli.main(["info", str(out)]) == 0


def test_run_composition_counts_match_fokker_planck(tmp_path):
    """Langevin samples of each composed energy land near the A and B centres as
    often as the grid Fokker-Planck law at the same time predicts (binomial error),
    and the stationary law of each generator is exp(-U)/Z."""

    from fokkerplanck.app.runner import counts_agree, read_run, run

    cfg = {"kind": "composition", "grid": {"bounds": [[-9, 9], [-9, 9]], "cells": 72},
           "initial": {"type": "Gaussian", "mean": [0.0, 0.0], "cov": 9.0},
           "composition": {"n": 3000, "dt": 2e-3, "time": 1.0, "seed": 4}}
    out = tmp_path / "comp.h5"
    run(cfg, out, progress=False, log=lambda *a: None)
    r = read_run(out)
    for name in ("A", "B", "conjunction", "disjunction", "negation"):
        g = r[name]
        assert g["confining"] and g["stationary_error"] < 1e-12 + 1e-14 / g["spectral_gap"]
        for c in ("A", "B"):
            z, allowed = counts_agree(g, c, 3000)  # 4 sd + 1% (O(dt) and O(h^2) bias) + 2
            assert z < allowed, (name, c, g)
    assert r["negation"]["count_A"] < 5 and r["A"]["count_A"] > 0.9 * 3000
    _check_run_figure(out, tmp_path, [f"near A: {r['conjunction']['count_A']}"])


def test_run_theorem_double_well(tmp_path):
    import numpy as np

    from fokkerplanck import Trajectory
    from fokkerplanck.app.runner import read_run, run

    cfg = {"kind": "theorem", "energy": {"type": "DoubleWell", "dim": 1, "barrier": 1.0},
           "grid": {"bounds": [[-3, 3]], "cells": 400}, "times": {"stop": 0.2, "num": 11}}
    out = tmp_path / "th.h5"
    run(cfg, out, progress=False, log=lambda *a: None)
    th = read_run(out)["theorem"]
    assert abs(th["ratio_at_target"] - 1) < 1e-10 and th["coefficient_rel_error"] < 1e-2
    det, fp = Trajectory.load(out, "continuity"), Trajectory.load(out, "fokker-planck")
    assert det.kl()[0] < 1e-12 and np.all(np.diff(det.kl()) > 0)   # leaves rho* at once
    assert np.abs(fp.densities - fp.densities[0]).max() < 1e-12 * fp.densities.max()
    _check_run_figure(out, tmp_path, ["R_0 - 1 ="])


def test_sweep_command_line(tmp_path, capsys):
    """fpk sweep on a small OU config: files per point, the summary, resume; bad params."""
    import csv

    cfg = tmp_path / "ou.toml"
    cfg.write_text(OU.replace("cells = 64", "cells = 24").replace("n = 20000", "n = 2000"))
    out = tmp_path / "sweep"
    assert cli.main(["sweep", str(cfg), "--param", "cells=32,64", "-o", str(out), "-q"]) == 0
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["cells"] for r in rows] == ["32", "64"]
    err = [float(r["err_kl_continuity"]) for r in rows]   # Lagrangian point values: resolved at 64 cells
    assert err[1] < 1e-6 < err[0]
    assert (out / "summary.h5").exists()
    assert cli.main(["sweep", str(cfg), "--param", "nope.table=1", "-o", str(out)]) == 2
    assert "unknown config entry 'nope'" in capsys.readouterr().err
    assert cli.main(["sweep", str(cfg), "--param", "dt=0.003", "-o", str(out)]) == 2  # does not divide the saves


def test_verify_in_worker_processes_gives_the_same_checks(tmp_path, monkeypatch):
    """``--jobs 2`` runs the groups in two spawned processes: the same checks, values and
    report as one process, in the order of the groups; a group registered at run time (a
    worker would not know it) runs in this process; --jobs 0 is refused by name."""
    import json

    from fokkerplanck.app.verify import at_most

    monkeypatch.setitem(CHECKS, "local", lambda quick=True, report=None: [at_most("local check", 0.25, 1.0)])
    groups = ["stopping", "local", "refine"]
    runs = {}
    for jobs in (1, 2):
        rep = tmp_path / f"r{jobs}"
        assert cli.main(["verify", "--quick", "--only", *groups, "--jobs", str(jobs), "--report", str(rep)]) == 0
        runs[jobs] = json.loads((rep / "checks.json").read_text())
    assert [c["group"] for c in runs[2]] == [c["group"] for c in runs[1]]
    assert list(dict.fromkeys(c["group"] for c in runs[2])) == groups
    assert [(c["name"], c["value"], c["passed"]) for c in runs[2]] == [(c["name"], c["value"], c["passed"])
                                                                         for c in runs[1]]
    with pytest.raises(SystemExit):
        cli.main(["verify", "--only", "stopping", "--jobs", "0"])
