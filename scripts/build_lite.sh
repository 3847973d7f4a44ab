#!/usr/bin/env bash
# Build the live chapters: a JupyterLite site at book/_build/html/lite/ where the chapter notebooks run in
# the reader's browser (Pyodide kernel, no server). Called by scripts/build_book.sh after the HTML build; the
# "run this chapter live" button on each chapter page (book/_lite_static/live-chapter.js) opens
# lite/lab/index.html?path=<chapter>.ipynb, for the chapters lite/chapters.json marks live: those whose every
# required import, followed through nbmodel, is in Pyodide (its own module list, asked of Pyodide here) or
# served. Optional imports (under `except ImportError`) do not count: chapter 7 plots with matplotlib, which
# the npm package does not ship (its lock names it, the wheels are not in it) and PyPI has no Pyodide wheel of
# (nor of numpy), so there nbmodel/viz/plots.py draws the same figures as SVG itself.
#
# Everything the site loads is served by the book itself:
#   static/pyodide/   Pyodide 314 core (npm `pyodide`, version + integrity from package-lock.json),
#                     the pure-Python wheels of scripts/lite-requirements.txt (PyPI, --require-hashes),
#                     nbmodel's own wheel (built here from the working tree), a wheel of the kernel
#                     recordings chapter 7 shows (benchmarks/*.json), the kernel's stand-in wheels,
#                     viz.js (npm `@viz-js/viz`: Graphviz in WebAssembly, used by nbmodel/viz/dot.py in the
#                     browser), and a pyodide-lock.json listing exactly those wheels (scripts/lite_site.py).
# Network: only the npm and PyPI registries, and only when .lite-cache/ lacks a file. Skipped when nothing
# that goes into the site changed (stamp in book/_build/html/lite/.lite-inputs.sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

out=book/_build/html/lite
cache=.lite-cache
work=book/_build/lite-work

inputs_hash="$( { find nbmodel notebooks -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' -print0 \
                  | sort -z | xargs -0 -r sha256sum; sha256sum benchmarks/*.json package-lock.json uv.lock pyproject.toml \
                  scripts/lite-requirements.txt scripts/lite_site.py scripts/build_lite.sh; } | sha256sum | cut -d' ' -f1)"
stamp="$out/.lite-inputs.sha256"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs_hash" && -f "$out/lab/index.html" ]]; then
    echo "build_lite: $out is up to date"
    exit 0
fi
start=$SECONDS

# -- npm: pyodide and @viz-js/viz, the versions and sha512 integrity package-lock.json records -------------
command -v npm >/dev/null || { echo "build_lite: npm (Node.js >= 18) is needed to fetch Pyodide" >&2; exit 1; }
npm_fetch() {  # npm_fetch NAME -> prints the folder of the unpacked, integrity-checked package
    local spec integrity dir tgz actual
    read -r spec integrity < <(node -e '
        const p = require(process.argv[1]).packages["node_modules/" + process.argv[2]];
        if (!p || !p.version || !p.integrity) { console.error("not locked: " + process.argv[2]); process.exit(1); }
        console.log(process.argv[2] + "@" + p.version + " " + p.integrity);' "$PWD/package-lock.json" "$1")
    dir="$cache/npm/$(echo "$spec" | tr '/@' '__')"
    if [[ ! -f "$dir/.integrity" || "$(cat "$dir/.integrity")" != "$integrity" ]]; then
        rm -rf "$dir" && mkdir -p "$dir"
        tgz="$(cd "$dir" && npm pack --silent --ignore-scripts "$spec" | tail -n 1)"
        actual="sha512-$(node -e 'process.stdout.write(require("crypto").createHash("sha512")
            .update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$dir/$tgz")"
        if [[ "$actual" != "$integrity" ]]; then
            echo "build_lite: integrity mismatch for $spec: lock has $integrity, got $actual" >&2
            exit 1
        fi
        tar -xzf "$dir/$tgz" -C "$dir" && rm "$dir/$tgz"
        echo "$integrity" > "$dir/.integrity"
        echo "build_lite: fetched $spec (integrity ok)" >&2
    fi
    echo "$dir/package"
}
pyodide_dir="$(npm_fetch pyodide)"
viz_dir="$(npm_fetch @viz-js/viz)"

# -- PyPI: the pure-Python wheels, hash-checked (no network when the cache already holds every pinned file) --
mkdir -p "$cache/wheels"
.venv/bin/python scripts/lite_site.py --check-cache scripts/lite-requirements.txt "$cache/wheels" >/dev/null \
|| python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform any --python-version 3.14 --implementation py --require-hashes \
    -r scripts/lite-requirements.txt -d "$cache/wheels" 2> >(grep -v "is ignored: it is neither" >&2)

# -- nbmodel's wheel, from whatever the working tree holds (built in a copy: no build/ in the checkout) -----
rm -rf "$work" && mkdir -p "$work/src" "$work/wheels"
cp -r pyproject.toml README.md nbmodel "$work/src/"
find "$work/src" -name '__pycache__' -prune -exec rm -rf {} +
# (setuptools, the build backend, comes from uv's cache when it is there, else from PyPI)
UV_PYTHON_DOWNLOADS=never uv build --quiet --offline --wheel --out-dir "$work/wheels" "$work/src" 2>/dev/null \
|| UV_PYTHON_DOWNLOADS=never uv build --quiet --wheel --out-dir "$work/wheels" "$work/src"
# the Pyodide kernel's own stand-ins (ipykernel, pyodide-kernel, piplite, widgetsnbextension 4)
kpypi=.venv/share/jupyter/labextensions/@jupyterlite/pyodide-kernel-extension/static/pypi
cp "$kpypi"/ipykernel-*.whl "$kpypi"/pyodide_kernel-*.whl "$kpypi"/piplite-*.whl \
   "$kpypi"/widgetsnbextension-4.*.whl "$work/wheels/"

# -- what Pyodide itself can import (its standard library lacks some of CPython's, e.g. resource) -----------
node --input-type=module -e '
const dir = process.argv[1];
const { loadPyodide } = await import(dir + "/pyodide.mjs");
const py = await loadPyodide({ indexURL: dir + "/" });
console.log(py.runPython("import json, pkgutil, sys; " +
    "json.dumps(sorted(set(sys.builtin_module_names) | {m.name for m in pkgutil.iter_modules()}))"));
' "$root/$pyodide_dir" > "$work/pyodide-modules.json"

# -- the lite input folder, then the site -------------------------------------------------------------------
.venv/bin/python scripts/lite_site.py "$work/lite" --pyodide "$pyodide_dir" --viz "$viz_dir/dist/viz.js" \
    --wheels "$cache/wheels" "$work/wheels" --chapters notebooks/[0-9][0-9]_*.ipynb --src . \
    --pyodide-modules "$work/pyodide-modules.json"
rm -rf "$out"
(cd "$work/lite" && "$root/.venv/bin/jupyter" lite build --no-sourcemaps --apps lab --apps notebooks \
    --contents files --output-dir "$root/$out") > "$work/build.log" 2>&1 || {
    cat "$work/build.log"; echo "build_lite: jupyter lite build FAILED" >&2; exit 1; }
cp "$work/lite/chapters.json" "$out/chapters.json"   # read by the button (book/_lite_static/live-chapter.js)
echo "$inputs_hash" > "$stamp"
echo "build_lite: wrote $out ($(du -sh "$out" | cut -f1)) in $((SECONDS - start)) s"
