"""Assemble the JupyterLite input folder for the live chapters (called by scripts/build_lite.sh).

    python scripts/lite_site.py LITE_DIR --pyodide DIR --viz FILE --wheels DIR [DIR ...] --pyodide-modules FILE \
        --chapters NOTEBOOK ... --src CHECKOUT
    python scripts/lite_site.py --check-cache REQUIREMENTS DIR   (exit 0 when DIR holds every pinned wheel)

writes LITE_DIR/static/pyodide/ (the Pyodide core from npm, every wheel, a wheel of the kernel recordings the
chapters show (benchmarks/*.json), viz.js and a pyodide-lock.json that lists exactly the wheels written beside
it) and LITE_DIR/jupyter-lite.json (the kernel loads Pyodide from there, preloads the packages the chapters
import, never falls back to PyPI). ``jupyter lite build`` then copies static/pyodide into the site and points
the kernel's pyodideUrl at it (instead of its default CDN URL). LITE_DIR/chapters.json says which chapters are
offered live: those whose required imports Pyodide has (--pyodide-modules: the list Pyodide itself gives) or
the site serves; a module imported under ``except ImportError`` is optional and does not count.
"""

from __future__ import annotations

import argparse
import ast
import base64
import email.parser
import hashlib
import json
import pathlib
import shutil
import sys
import zipfile

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# The files of the npm `pyodide` package that a browser loads (the rest are types, docs and a console page).
PYODIDE_FILES = ["pyodide.mjs", "pyodide.js", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip"]

# Installed before the kernel starts: what the Pyodide kernel would otherwise fetch one by one with piplite
# (micropip, piplite, ipykernel, comm, pyodide-kernel, jedi, ipython) and what the chapters import.
PRELOAD = ["micropip", "piplite", "ipykernel", "comm", "pyodide-kernel", "jedi", "ipython",
           "ipywidgets", "graphviz", "tqdm", "nbmodel", "nbmodel-recordings"]

KERNEL_SETTINGS = "@jupyterlite/pyodide-kernel-extension:kernel"
LITE_KERNELSPEC = {"name": "python", "display_name": "Python (Pyodide)", "language": "python"}


def marker_env(python: str) -> dict[str, str]:
    """PEP 508 marker values inside Pyodide (CPython ``python`` on emscripten/wasm32)."""
    major_minor = ".".join(python.split(".")[:2])
    return {"python_version": major_minor, "python_full_version": python, "sys_platform": "emscripten",
            "platform_system": "Emscripten", "platform_machine": "wasm32", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "implementation_version": python, "platform_release": "", "platform_version": "", "extra": ""}


def wheel_entry(path: pathlib.Path, env: dict[str, str]) -> tuple[dict, list[str]]:
    """The pyodide-lock.json entry of one pure-Python wheel, and its runtime requirements (names)."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        meta_name = next(n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode("utf-8"))
        top_level = next((n for n in names if n.endswith(".dist-info/top_level.txt")), None)
        if top_level:
            imports = [m for m in zf.read(top_level).decode().split() if m and not m.startswith("_")]
        else:
            imports = sorted({n.split("/")[0].removesuffix(".py") for n in names
                              if not n.split("/")[0].endswith((".dist-info", ".data"))
                              and (n.count("/") == 0 and n.endswith(".py") or n.endswith("/__init__.py"))
                              and not n.startswith("_")})
    depends = []
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or Marker(str(req.marker)).evaluate(env):
            depends.append(canonicalize_name(req.name))
    name = canonicalize_name(meta["Name"])
    entry = {
        "name": name,
        "version": meta["Version"],
        "file_name": path.name,
        "install_dir": "site",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "package_type": "package",
        "imports": imports,
        "depends": sorted(set(depends)),
        "unvendored_tests": False,
    }
    return entry, entry["depends"]


def build_lock(core_lock: dict, wheels: list[pathlib.Path], preload: list[str] = PRELOAD) -> dict:
    """A lock with the core's ``info`` and one entry per served wheel; every dependency (and every package
    in ``preload``) must be served too."""
    env = marker_env(core_lock["info"]["python"])
    packages: dict[str, dict] = {}
    for whl in wheels:
        if not whl.name.endswith("-none-any.whl"):
            raise SystemExit(f"lite_site: {whl.name} is not a pure-Python wheel; Pyodide cannot load it")
        entry, _ = wheel_entry(whl, env)
        if entry["name"] in packages:
            raise SystemExit(f"lite_site: two wheels for {entry['name']}: "
                             f"{packages[entry['name']]['file_name']} and {whl.name}")
        packages[entry["name"]] = entry
    missing = sorted({f"{p['name']} needs {d}" for p in packages.values() for d in p["depends"]
                      if d not in packages})
    if missing:
        raise SystemExit("lite_site: dependencies not served (add them to scripts/lite-requirements.txt): "
                         + "; ".join(missing))
    absent = [name for name in preload if name not in packages]
    if absent:
        raise SystemExit(f"lite_site: preloaded packages not served: {absent}")
    return {"info": core_lock["info"], "packages": dict(sorted(packages.items()))}


def cache_complete(requirements: pathlib.Path, folder: pathlib.Path) -> list[str]:
    """The pinned requirements (``name==version`` + ``--hash`` lines) that ``folder`` lacks a wheel for, a wheel
    whose sha256 is one of the listed hashes. Empty: the build needs no network for these wheels."""
    pins: dict[str, set[str]] = {}
    current = None
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line:
            continue
        if line.startswith("--hash=sha256:"):
            pins[current].add(line.removeprefix("--hash=sha256:"))
        else:
            current = line
            pins[current] = set()
    have: dict[str, set[str]] = {}
    for whl in folder.glob("*.whl") if folder.is_dir() else []:
        name, version = whl.name.split("-")[:2]
        have.setdefault(f"{canonicalize_name(name)}=={version}", set()).add(
            hashlib.sha256(whl.read_bytes()).hexdigest())
    missing = []
    for pin, hashes in pins.items():
        name, _, version = pin.partition("==")
        if not have.get(f"{canonicalize_name(name)}=={version}", set()) & hashes:
            missing.append(pin)
    return missing


# Modules Pyodide itself provides (besides the standard library and the served wheels).
PYODIDE_MODULES = {"js", "pyodide", "pyodide_js", "_pyodide"}


# An import inside ``try:`` whose handler catches one of these is optional: the code runs without the module.
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        caught = handler.type
        names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
        if caught is None or any(isinstance(n, ast.Name) and n.id in IMPORT_ERRORS for n in names):
            return True
    return False


def _imports(tree: ast.AST, package: str) -> dict[str, bool]:
    """Every module a piece of code imports (at any depth: a function's import counts), dotted, absolute, and
    whether the import is optional (in the body of a ``try`` that catches ImportError)."""
    out: dict[str, bool] = {}

    def add(name: str, optional: bool) -> None:
        out[name] = out.get(name, True) and optional

    def visit(node: ast.AST, optional: bool) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, optional)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            add(base, optional)
            for a in node.names:
                add(f"{base}.{a.name}", optional)
        if isinstance(node, ast.Try) and _catches_import_error(node):
            for child in node.body:
                visit(child, True)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, optional)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child, optional)

    visit(tree, False)
    return out


def _module_file(src_root: pathlib.Path, name: str) -> pathlib.Path | None:
    path = src_root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def chapter_needs(notebook: pathlib.Path, src_root: pathlib.Path, local: str = "nbmodel") -> dict[str, bool]:
    """The top-level names of the modules outside ``local`` that a notebook imports, each with whether it is
    only optional (every path to it passes an import guarded by ``except ImportError``): what its code cells
    import, followed through every ``local`` module they reach (IPython magics and shell lines are skipped)."""
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    todo = sorted(_imports(ast.parse(code), "").items())
    seen: dict[str, bool] = {}   # module -> reached only optionally
    outside: dict[str, bool] = {}
    while todo:
        name, optional = todo.pop()
        if not name or (name in seen and (optional or not seen[name])):
            continue  # already followed, at least as required as now
        seen[name] = optional
        top = name.split(".")[0]
        if top != local:
            outside[top] = outside.get(top, True) and optional
            continue
        # a.b.c: a, a.b and a.b.c all run when it is imported
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            path = _module_file(src_root, ".".join(parts[:i]))
            if path is not None:
                package = ".".join(parts[:i]) if path.name == "__init__.py" else ".".join(parts[: i - 1])
                todo.extend((n, optional or opt) for n, opt in _imports(ast.parse(path.read_text()), package).items())
    return outside


def live_chapters(notebooks: list[pathlib.Path], src_root: pathlib.Path, lock: dict,
                  stdlib: set[str] | None = None) -> dict[str, dict]:
    """Which chapters can run in the browser: those whose every required import is in Pyodide's standard
    library (``stdlib``: what Pyodide itself lists, which lacks some of CPython's, e.g. ``resource``), Pyodide's
    own modules or a served wheel. An optional import that is not served does not stop a chapter: it runs
    without it. ``{stem: {"live": bool, "missing": [required, not served], "without": [optional, not served]}}``."""
    available = (set(sys.stdlib_module_names) if stdlib is None else set(stdlib)) | PYODIDE_MODULES
    for entry in lock["packages"].values():
        available.update(entry["imports"])
    out = {}
    for nb in notebooks:
        needs = chapter_needs(nb, src_root)
        missing = sorted(m for m, optional in needs.items() if not optional and m not in available)
        without = sorted(m for m, optional in needs.items() if optional and m not in available)
        out[nb.stem] = {"live": not missing, "missing": missing, "without": without}
    return out


def recordings_wheel(src_root: pathlib.Path, folder: pathlib.Path, version: str) -> pathlib.Path:
    """A wheel of the kernel recordings nbmodel shows instead of probing (``benchmarks/*.json``, read from
    ``<site-packages>/benchmarks/`` as from the checkout's ``benchmarks/``: ``realkernel.RECORDED_PROBES``,
    ``crosscheck.RECORDED_CROSSCHECK``, ``live.RECORDED``). Byte-for-byte reproducible (fixed timestamps)."""
    name = "nbmodel_recordings"
    files = {f"benchmarks/{p.name}": p.read_bytes() for p in sorted((src_root / "benchmarks").glob("*.json"))}
    if not files:
        raise SystemExit(f"lite_site: no recordings in {src_root / 'benchmarks'}")
    info = f"{name}-{version}.dist-info"
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: nbmodel-recordings\nVersion: {version}\n"
                                 "Summary: the kernel recordings nbmodel's book shows (benchmarks/*.json)\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: nbmodel lite_site\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n")
    record = "".join(f"{n},sha256={_b64sha(data)},{len(data)}\n" for n, data in files.items()) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in files.items():
            zf.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return path


def _b64sha(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--check-cache"]:
        missing = cache_complete(pathlib.Path(argv[1]), pathlib.Path(argv[2]))
        if missing:
            print(f"lite_site: not in {argv[2]}: {', '.join(missing)}")
        return 1 if missing else 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lite_dir", type=pathlib.Path)
    ap.add_argument("--pyodide", type=pathlib.Path, required=True, help="the unpacked npm pyodide package")
    ap.add_argument("--viz", type=pathlib.Path, required=True, help="viz.js of the npm @viz-js/viz package")
    ap.add_argument("--wheels", type=pathlib.Path, nargs="+", required=True, help="folders of .whl files")
    ap.add_argument("--chapters", type=pathlib.Path, nargs="*", default=[], help="the chapter notebooks")
    ap.add_argument("--src", type=pathlib.Path, default=pathlib.Path("."), help="where nbmodel/ is")
    ap.add_argument("--pyodide-modules", type=pathlib.Path, required=True,
                    help="JSON list of the modules Pyodide itself can import (its stdlib and builtins)")
    args = ap.parse_args(argv)

    wheels = sorted((w for d in args.wheels for w in d.glob("*.whl")), key=lambda p: p.name)
    nbmodel_wheel = next((w for w in wheels if w.name.startswith("nbmodel-")), None)
    if nbmodel_wheel is None:
        raise SystemExit("lite_site: no nbmodel wheel among --wheels")
    extra = args.lite_dir.parent / "recordings-wheel"
    shutil.rmtree(extra, ignore_errors=True)
    extra.mkdir(parents=True)
    wheels = sorted([*wheels, recordings_wheel(args.src, extra, nbmodel_wheel.name.split("-")[1])],
                    key=lambda p: p.name)
    core_lock = json.loads((args.pyodide / "pyodide-lock.json").read_text())
    lock = build_lock(core_lock, wheels)

    out = args.lite_dir / "static" / "pyodide"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in PYODIDE_FILES:
        shutil.copy2(args.pyodide / name, out / name)
    for whl in wheels:
        shutil.copy2(whl, out / whl.name)
    shutil.copy2(args.viz, out / "viz.js")
    (out / "pyodide-lock.json").write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")

    config = {
        "jupyter-lite-schema-version": 0,
        "jupyter-config-data": {
            "appName": "nbmodel live chapters",
            # jupyterlab-myst (installed for JupyterLab) is not built for this JupyterLite: activated here it
            # throws on load, so the live site leaves it off and MyST roles show as text.
            "disabledExtensions": ["jupyterlab-myst"],
            "litePluginSettings": {
                KERNEL_SETTINGS: {
                    "pyodideUrl": "./static/pyodide/pyodide.mjs",
                    "disablePyPIFallback": True,
                    "loadPyodideOptions": {"packages": PRELOAD},
                },
            },
        },
    }
    (args.lite_dir / "jupyter-lite.json").write_text(json.dumps(config, indent=2) + "\n")

    # files/: the chapters (the lite contents); chapters.json: which of them the book offers to run live
    files = args.lite_dir / "files"
    if files.exists():
        shutil.rmtree(files)
    files.mkdir()
    for nb in args.chapters:
        # The copy names the Pyodide kernel ("python"): with the notebooks' own "python3" JupyterLite has to
        # guess, and asks the reader when its kernel list is not loaded yet.
        content = json.loads(nb.read_text())
        content.setdefault("metadata", {})["kernelspec"] = LITE_KERNELSPEC
        (files / nb.name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")
    chapters = live_chapters(args.chapters, args.src, lock, set(json.loads(args.pyodide_modules.read_text())))
    (args.lite_dir / "chapters.json").write_text(json.dumps(chapters, indent=1, sort_keys=True) + "\n")
    for stem, info in sorted(chapters.items()):
        if not info["live"]:
            print(f"lite_site: {stem} is not offered live: it needs {', '.join(info['missing'])}, not served")
        elif info["without"]:
            print(f"lite_site: {stem} runs live without {', '.join(info['without'])} (imported optionally)")
    print(f"lite_site: {len(wheels)} wheels, lock of {len(lock['packages'])} packages, Pyodide "
          f"{core_lock['info']['python']} ({core_lock['info']['platform']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
