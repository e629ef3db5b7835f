"""Every notebook runs top to bottom on small settings (FPK_NOTEBOOK_SMALL=1);
the notebooks assert their own numbers (k* = step of minimal KL, counts within
binomial error of Fokker-Planck, tracked KL against the OU closed form, R_0 = 1)."""
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_every_experiment_has_a_notebook():
    assert {p.stem for p in NOTEBOOKS} >= {"eight_gaussians", "composition", "double_well", "ou", "theorem", "ising",
                                             "ood", "barrier", "trained_energies", "vpfb", "lvebm"}


@pytest.mark.slow  # ~20 s each, mostly JIT compilation in a fresh kernel: CI's second step
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FPK_NOTEBOOK_SMALL", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    assert (tmp_path / f"{path.stem}.h5").exists()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, "the notebook drew no figure"
