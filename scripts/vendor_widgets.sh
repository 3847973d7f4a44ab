#!/usr/bin/env bash
# Copy the browser assets that the static book serves itself into book/_widgets_static (gitignored):
#   embed.js (+ its icon fonts)  from @jupyter-widgets/html-manager  -> renders saved ipywidgets state
#   mathjax/ (es5 subset)        from mathjax                        -> renders $math$ without a CDN
# Versions and sha512 integrity come from package-lock.json. We `npm pack` just those two tarballs (about 1 s,
# no dependency tree; `npm ci` would pull 128 MB of node_modules that the book does not need), check each
# against the lock, and unpack. Skipped when the stamp says the lock and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=book/_widgets_static
stamp_file="$dest/.vendor-stamp"
stamp="$(cat package-lock.json scripts/vendor_widgets.sh | sha256sum | cut -d' ' -f1)"

if [[ "${1:-}" != "--force" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" \
      && -f "$dest/embed.js" && -f "$dest/mathjax/tex-mml-chtml.js" ]]; then
    echo "vendor_widgets: $dest is up to date"
    exit 0
fi

command -v npm >/dev/null || { echo "vendor_widgets: npm (Node.js >= 18) is needed to fetch the widget JS" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# name@version and integrity of a top-level dependency, as package-lock.json records them
locked() {
    node -e '
        const lock = require(process.argv[1]);
        const p = lock.packages["node_modules/" + process.argv[2]];
        if (!p || !p.version || !p.integrity) { console.error("not locked: " + process.argv[2]); process.exit(1); }
        console.log(process.argv[2] + "@" + p.version + " " + p.integrity);
    ' "$PWD/package-lock.json" "$1"
}

fetch() {  # fetch NAME DIR: npm pack the locked version, verify its integrity, unpack into DIR/package
    local spec integrity tgz actual
    read -r spec integrity < <(locked "$1")
    mkdir -p "$2"
    tgz="$(cd "$2" && npm pack --silent --ignore-scripts "$spec" | tail -n 1)"
    actual="sha512-$(node -e 'process.stdout.write(require("crypto").createHash("sha512")
        .update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$2/$tgz")"
    if [[ "$actual" != "$integrity" ]]; then
        echo "vendor_widgets: integrity mismatch for $spec: lock has $integrity, got $actual" >&2
        exit 1
    fi
    tar -xzf "$2/$tgz" -C "$2"
    echo "vendor_widgets: $spec (integrity ok)"
}

fetch @jupyter-widgets/html-manager "$tmp/hm"
fetch mathjax "$tmp/mj"

rm -rf "$dest"
mkdir -p "$dest/mathjax/output"
# embed.js is the non-AMD bundle: it needs no require.js for the built-in controls. The icon fonts are
# requested next to it.
hm="$tmp/hm/package/dist"
cp "$hm/embed.js" "$hm/embed.js.LICENSE.txt" "$dest/"
cp "$hm"/*.woff2 "$hm"/*.woff "$hm"/*.ttf "$hm"/*.eot "$hm"/*.svg "$dest/"
cp "$tmp/hm/package/LICENSE" "$dest/LICENSE.html-manager" 2>/dev/null || true
# MathJax 3: the combined TeX/MathML -> CHTML component, plus what it loads lazily (TeX extensions, fonts,
# the menu and accessibility modules). Sphinx's mathjax_path points at mathjax/tex-mml-chtml.js.
mj="$tmp/mj/package/es5"
cp "$mj/tex-mml-chtml.js" "$dest/mathjax/"
cp -r "$mj/input" "$mj/a11y" "$mj/ui" "$mj/adaptors" "$dest/mathjax/"
cp -r "$mj/output/chtml" "$mj/output/chtml.js" "$dest/mathjax/output/" 2>/dev/null \
    || cp -r "$mj/output/chtml" "$dest/mathjax/output/"
cp "$tmp/mj/package/LICENSE" "$dest/mathjax/LICENSE"

echo "$stamp" > "$stamp_file"
echo "vendor_widgets: wrote $dest ($(du -sh "$dest" | cut -f1))"
