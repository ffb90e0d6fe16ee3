"""Sphinx configuration for the pdlt documentation (build: ``docs/build.sh``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# Build from the checkout's source even when pdlt is not installed (or installed elsewhere).
sys.path.insert(0, str(HERE.parent / "src"))

# The gallery runs on a shared 2-core machine: one thread per process, no progress bars.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("CI", "1")

import pdlt  # noqa: E402

project = "pdlt"
author = "the pdlt developers"
copyright = "2025, the pdlt developers"
release = pdlt.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "pdlt_docs",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "examples/*.rst"]
default_role = "code"
nitpicky = False

# -- autodoc / autosummary / numpydoc ---------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"  # the signature line shows annotations; numpydoc shows the prose
autodoc_member_order = "bysource"

# pdlt's docstrings follow numpydoc sections but write parameters as ``name:`` (no type) and
# group related names (``C_b, C_W:``); render them as written rather than validate them.
numpydoc_validation_checks: set[str] = set()
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True

# -- HTML -------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"pdlt {release}"
html_static_path = ["_static"]
html_css_files = ["pdlt.css"]
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    # one-object API pages and gallery pages need the width more than an "On this page" box
    "secondary_sidebar_items": {
        "index": ["page-toc"],
        "notation": ["page-toc"],
        "chapters": ["page-toc"],
        "guide/*": ["page-toc"],
        "api/*": ["page-toc"],
        "api/generated/**": [],
        "auto_examples/**": [],  # the download links are at the foot of each example
    },
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_context = {"default_mode": "light"}

# No network at build time: intersphinx inventories are not fetched.
intersphinx_mapping: dict = {}

# -- sphinx-gallery ---------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "matplotlib_animations": False,
    "plot_gallery": "True",  # docs/build.sh passes -D plot_gallery=False to skip
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "reset_modules": ("matplotlib", "seaborn"),
    "min_reported_time": 0,
}
