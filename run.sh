#!/usr/bin/env bash
# Set up the environment (.venv from uv.lock, the book's widget JS), install nbmodel, build the book.
# Idempotent: a second run with nothing changed takes a few seconds and re-executes no notebook.
set -euo pipefail
cd "$(dirname "$0")"
start=$SECONDS

bash scripts/setup_env.sh
bash scripts/build_book.sh

cat <<MSG

Done in $((SECONDS - start)) s.

The book:      $PWD/book/_build/html/index.html
  open it:     xdg-open book/_build/html/index.html   (or file://$PWD/book/_build/html/index.html)
  or serve it: .venv/bin/python -m http.server -d book/_build/html 8000   -> http://127.0.0.1:8000/
Live chapters: served as above, press "Run this chapter live" on a chapter (JupyterLite, Python in the
               browser; book/_build/html/lite/; needs http://, not file://)
The notebooks: .venv/bin/jupyter lab notebooks/
The model:     .venv/bin/nbmodel --help     (or: source .venv/bin/activate)
The tests:     ./test.sh
MSG
