#!/usr/bin/env bash
# Shared setup for run.sh and test.sh; idempotent, about 1 s when nothing changed.
#   1. uv (pip install uv if missing), then .venv from uv.lock with every extra (viz, book, test)
#   2. the widget JS and MathJax for the static book (scripts/vendor_widgets.sh, skipped when up to date)
#   3. a venv-local Jupyter config that lets JupyterLab start as root (machines and CI here run as root)
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v uv >/dev/null 2>&1; then
    UV=(uv)
elif python3 -c 'import uv' >/dev/null 2>&1; then
    UV=(python3 -m uv)
else
    echo "setup: installing uv from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check 'uv>=0.5,<1' \
        || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages 'uv>=0.5,<1'
    UV=(python3 -m uv)
fi

# Prefer the python3 on PATH (pyenv's on these machines) when it is new enough; else uv finds one.
# With a suitable Python here, uv needs to download none (and these machines cannot); elsewhere uv's own
# settings decide (the project imposes no python-downloads policy on its users).
if [[ -z "${UV_PYTHON:-}" ]] && python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    UV_PYTHON="$(python3 -c 'import sys; print(sys.executable)')"
    export UV_PYTHON
    export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"
fi

# --locked: fail (instead of silently re-resolving) when pyproject.toml changed without `uv lock`.
"${UV[@]}" sync --locked --all-extras --quiet

bash scripts/vendor_widgets.sh

conf=.venv/etc/jupyter/jupyter_server_config.d/nbmodel-allow-root.json
if [[ ! -f "$conf" ]]; then
    mkdir -p "$(dirname "$conf")"
    echo '{"ServerApp": {"allow_root": true}}' > "$conf"
fi
