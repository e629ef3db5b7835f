"""Sphinx configuration for the fokkerplanck documentation.

Build (warnings are errors)::

    pip install -e .[docs]
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from fokkerplanck import __version__  # noqa: E402

project = "fokkerplanck"
author = "the fokkerplanck developers"
copyright = "the fokkerplanck developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

DOCSTYLE = os.environ.get("FPK_DOCSTYLE", "sphinx.ext.napoleon")
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    DOCSTYLE,
    "myst_parser",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "gallery/*.py"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
numpydoc_show_class_members = False

autosummary_context = {"reexporting": ["fokkerplanck.energies", "fokkerplanck.discrete", "particles"]}

html_theme = "furo"
html_title = f"fokkerplanck {release}"

napoleon_google_docstring = False
napoleon_numpy_docstring = True

sys.path.insert(0, os.path.dirname(__file__))
import _docstrings  # noqa: E402

# The gallery: each docs/gallery/plot_*.py is run before the build (when its figure is
# missing or older than the script) and writes docs/_build/gallery/<name>.png; its
# printed output goes to <name>.txt and its run time to <name>.time.  The pages include
# the script, the output and the figure.  Set FPK_DOCS_GALLERY=0 to skip running them
# (then figures that were never made are missing and the -W build fails: on purpose).
GALLERY = os.path.join(os.path.dirname(__file__), "gallery")
GALLERY_OUT = os.path.join(os.path.dirname(__file__), "_build", "gallery")


def run_gallery(app):
    import subprocess
    import time

    if os.environ.get("FPK_DOCS_GALLERY", "1") == "0":
        return
    os.makedirs(GALLERY_OUT, exist_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg")
    for script in sorted(f for f in os.listdir(GALLERY) if f.startswith("plot_") and f.endswith(".py")):
        name = script[:-3]
        src, png = os.path.join(GALLERY, script), os.path.join(GALLERY_OUT, name + ".png")
        if os.path.exists(png) and os.path.getmtime(png) >= os.path.getmtime(src):
            continue
        start = time.perf_counter()
        done = subprocess.run([sys.executable, src, png], capture_output=True, text=True, env=env,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"gallery script {script} failed:\n{done.stderr}")
        with open(os.path.join(GALLERY_OUT, name + ".txt"), "w") as f:
            f.write(done.stdout)
        with open(os.path.join(GALLERY_OUT, name + ".time"), "w") as f:
            f.write(f"{elapsed:.1f}\n")
        print(f"gallery: {script} ran in {elapsed:.1f} s")


def setup(app):
    app.connect("autodoc-process-docstring", _docstrings.process)
    app.connect("builder-inited", run_gallery)
