"""Every gallery script of the documentation runs and draws its figure (slow tier)."""
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPTS = sorted((pathlib.Path(__file__).parents[1] / "docs" / "gallery").glob("plot_*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_gallery_script(script, tmp_path):
    png = tmp_path / (script.stem + ".png")
    subprocess.run([sys.executable, str(script), str(png)], check=True, timeout=300,
                   env={**os.environ, "MPLBACKEND": "Agg"})
    assert png.stat().st_size > 10_000
