from fokkerplanck import cli
from fokkerplanck.verify import CHECKS


def test_verify_energies_passes(capsys):
    assert cli.main(["verify", "--quick", "--only", "energies"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out


def test_verify_unknown_check():
    assert cli.main(["verify", "--only", "nope"]) == 2


def test_checks_registered():
    assert "energies" in CHECKS


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

    from fokkerplanck.plots import plot_trajectory
    from fokkerplanck.stopping import tau_det

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
    from fokkerplanck import solvers

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
    from fokkerplanck.runner import builtin_configs, load_config
    for name in builtin_configs():  # shipped configs parse and name what they need
        assert {"energy", "grid", "initial", "times"} <= set(load_config(name))
