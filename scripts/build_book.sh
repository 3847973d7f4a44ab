#!/usr/bin/env bash
# Build the book: book/_build/html. Notebooks are executed by Jupyter Book with a cache keyed on each
# notebook's code, so an unchanged notebook is not re-executed. That cache cannot see a change to the model
# itself, so when nbmodel/, scenarios/ or the lock change we drop the whole build and re-execute everything.
set -euo pipefail
cd "$(dirname "$0")/.."

inputs_hash="$( { find nbmodel scenarios -type f \( -name '*.py' -o -name '*.toml' \) -print0 2>/dev/null \
                  | sort -z | xargs -0 -r sha256sum; sha256sum uv.lock; } | sha256sum | cut -d' ' -f1)"
stamp=book/_build/.model-inputs.sha256
if [[ -d book/_build && "$(cat "$stamp" 2>/dev/null || true)" != "$inputs_hash" ]]; then
    echo "build_book: the model or its inputs changed since the last build: rebuilding from scratch"
    rm -rf book/_build
fi
mkdir -p book/_build
echo "$inputs_hash" > "$stamp"

# -W: warnings are errors; -n: nitpicky (broken references); --keep-going: report all of them.
if ! .venv/bin/jupyter-book build -W -n --keep-going book/ > book/_build/build.log 2>&1; then
    cat book/_build/build.log
    rm -f "$stamp"   # force a clean rebuild next time
    echo "build_book: FAILED (log above, also in book/_build/build.log)" >&2
    exit 1
fi
grep -E 'Executing notebook|Executed notebook|Using cached notebook|build succeeded' book/_build/build.log \
    | sed 's/\x1b\[[0-9;]*m//g' || true

# The live chapters: a JupyterLite site in book/_build/html/lite (the chapters' "run this chapter live" button).
# Sphinx skips copying static files when no page is out of date, so a changed button script is copied here.
cp book/_lite_static/*.js book/_build/html/_static/
bash scripts/build_lite.sh
