#!/usr/bin/env bash
# Build the documentation site into docs/_build/html, warnings as errors.
# The gallery (docs/examples) is executed during the build; it is sized to take well under a
# minute on 2 CPU cores. Usage: docs/build.sh [extra sphinx-build options]
#   PYTHON=path/to/python   the interpreter whose environment has the "docs" extra
#                           (default: .venv/bin/python, else python3)
#   PDLT_DOCS_PLOT_GALLERY=False   skip running the gallery (a quick check of the text)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export MPLBACKEND=Agg
rm -rf docs/_build/html docs/api/generated docs/auto_examples docs/sg_execution_times.rst
"$PYTHON" -m sphinx -W --keep-going -b html \
    -D plot_gallery="${PDLT_DOCS_PLOT_GALLERY:-True}" "$@" docs docs/_build/html
echo "docs: open docs/_build/html/index.html"
