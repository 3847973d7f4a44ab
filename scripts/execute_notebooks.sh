#!/usr/bin/env bash
# Execute notebooks in place with the project's venv, saving outputs and widget state, as authors should
# before committing a chapter (nbval compares the saved outputs with a fresh run).
#   scripts/execute_notebooks.sh notebooks/03_page_cache.ipynb     # one
#   scripts/execute_notebooks.sh                                     # all of notebooks/*.ipynb
# nbclient (behind nbconvert --execute) stores widget state in the notebook's metadata.widgets by default;
# that is what the static book renders.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/jupyter ]] || { echo "no .venv: run ./run.sh first" >&2; exit 1; }
if [[ $# -eq 0 ]]; then set -- notebooks/*.ipynb; fi
exec .venv/bin/jupyter nbconvert --to notebook --execute --inplace \
    --ExecutePreprocessor.timeout=300 --ExecutePreprocessor.kernel_name=python3 "$@"
