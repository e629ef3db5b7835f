"""One call studies any energy: the same run file, figure and fpk info as a built-in
experiment, with methods that suit the energy."""
import numpy as np

from fokkerplanck import energies as E
from fokkerplanck.app import cli
from fokkerplanck.app.runner import read_run
from fokkerplanck.app.study import study


def _stops(res):
    return {(s["name"], s["source"].split(" (")[0]): s for s in res["stopping"]}


def test_study_of_an_energy_with_kernels_and_of_a_numpy_callable(tmp_path, capsys):
    """The double well with numba kernels: the deterministic tau_det from forward
    characteristics agrees with the tracked particles' within 4 standard errors; the
    same energy as a NumPy callable runs the finite volumes and the particles instead,
    and its particle tau_det agrees with the exact one of the kernel run."""
    kw = dict(stop=0.3, num=16, particles=1500, progress=False, log=lambda *a: None)
    a = study(E.DoubleWell(1, barrier=1.0), [(-4, 4)], cells=400, out=str(tmp_path / "k.h5"), **kw)
    s = _stops(a)
    exact, part = s[("tau_det", "exact R_t")], s[("tau_det", "particle R_t")]
    assert abs(exact["time"] - part["time"]) < 4 * part["stderr"] + 1e-3
    assert "continuity-exact" in read_run(a["file"])["groups"] and a["figure"].endswith(".png")
    U = E.from_callable(lambda X: (X[:, 0] ** 2 - 1) ** 2, dim=1)
    b = study(U, [(-4, 4)], cells=400, out=str(tmp_path / "c.h5"), **kw)
    r = read_run(b["file"])
    assert "continuity-exact" not in r["groups"] and r["config"]["continuity"]["method"] == "finite-volume"
    pb = _stops(b)[("tau_det", "particle R_t")]
    assert abs(pb["time"] - exact["time"]) < 4 * pb["stderr"] + 1e-3
    assert cli.main(["info", b["file"]]) == 0 and "tau_det" in capsys.readouterr().out
