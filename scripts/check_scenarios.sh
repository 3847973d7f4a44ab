#!/usr/bin/env bash
# Run every litmus-style scenario and check the expected outcome each file carries (like tools/memory-model's
# checkalllitmus.sh). Exit 0: all hold; 1: an expectation failed; 2: a bad file (FILE:LINE: on stderr).
# Usage: scripts/check_scenarios.sh [nbmodel run options, e.g. --design filemap]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" -m nbmodel run -q scenarios/ "$@"
