"""The live chapters' site (scripts/lite_site.py, scripts/build_lite.sh): the Pyodide lock lists exactly the
wheels the book serves, dependencies are resolved as Pyodide resolves them, and the kernel is pointed at the
book's own Pyodide (never the CDN, never PyPI)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pathlib
import sys
import zipfile

import pytest
from conftest import BOOK_HTML, ROOT

spec = importlib.util.spec_from_file_location("lite_site", ROOT / "scripts" / "lite_site.py")
lite_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lite_site)

CORE = {"info": {"python": "3.14.2", "platform": "emscripten_5_0_3", "arch": "wasm32", "abi_version": "2026_0"}}


def make_wheel(folder, name, version, requires=(), tag="py3-none-any"):
    path = folder / f"{name}-{version}-{tag}.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_depends_follow_pyodide_markers_and_ignore_extras(tmp_path):
    a = make_wheel(tmp_path, "alpha", "1.0", ["beta>=1", 'pexpect>4; sys_platform != "emscripten"',
                                              'pytest; extra == "test"', 'gamma; python_version < "3.12"'])
    b = make_wheel(tmp_path, "beta", "2.0")
    lock = lite_site.build_lock(CORE, [a, b], preload=["alpha"])
    assert lock["info"] == CORE["info"]
    assert lock["packages"]["alpha"]["depends"] == ["beta"]
    assert lock["packages"]["alpha"]["imports"] == ["alpha"]
    assert lock["packages"]["beta"]["sha256"] == hashlib.sha256(b.read_bytes()).hexdigest()
    assert lock["packages"]["beta"]["file_name"] == b.name


def test_a_dependency_not_served_is_an_error(tmp_path):
    a = make_wheel(tmp_path, "alpha", "1.0", ["beta"])
    with pytest.raises(SystemExit, match="alpha needs beta"):
        lite_site.build_lock(CORE, [a], preload=[])


def test_a_preloaded_package_not_served_is_an_error(tmp_path):
    a = make_wheel(tmp_path, "alpha", "1.0")
    with pytest.raises(SystemExit, match="nbmodel"):
        lite_site.build_lock(CORE, [a], preload=["alpha", "nbmodel"])


def test_a_native_wheel_is_refused(tmp_path):
    a = make_wheel(tmp_path, "alpha", "1.0", tag="cp314-cp314-manylinux_2_17_x86_64")
    with pytest.raises(SystemExit, match="not a pure-Python wheel"):
        lite_site.build_lock(CORE, [a], preload=[])


def test_cache_check_wants_the_pinned_hash(tmp_path):
    whl = make_wheel(tmp_path, "alpha", "1.0")
    good = hashlib.sha256(whl.read_bytes()).hexdigest()
    req = tmp_path / "req.txt"
    req.write_text(f"alpha==1.0 \\\n    --hash=sha256:{good}\n")
    assert lite_site.cache_complete(req, tmp_path) == []
    req.write_text(f"alpha==1.0 \\\n    --hash=sha256:{'0' * 64}\n")
    assert lite_site.cache_complete(req, tmp_path) == ["alpha==1.0"]
    req.write_text(f"alpha==1.1 \\\n    --hash=sha256:{good}\n")
    assert lite_site.cache_complete(req, tmp_path) == ["alpha==1.1"]


def test_the_built_site_serves_what_its_lock_lists(book_html):
    pyodide = BOOK_HTML / "lite" / "static" / "pyodide"
    if not (pyodide / "pyodide-lock.json").exists():
        pytest.fail("book/_build/html/lite is missing: scripts/build_book.sh builds it (scripts/build_lite.sh)")
    lock = json.loads((pyodide / "pyodide-lock.json").read_text())
    served = {p.name for p in pyodide.glob("*.whl")}
    assert {e["file_name"] for e in lock["packages"].values()} == served
    for name, entry in lock["packages"].items():
        assert entry["sha256"] == hashlib.sha256((pyodide / entry["file_name"]).read_bytes()).hexdigest(), name
        assert set(entry["depends"]) <= set(lock["packages"]), name
    for needed in ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "viz.js"):
        assert (pyodide / needed).is_file(), needed
    assert any(n.startswith("nbmodel-") for n in served)
    assert any(n.startswith("nbmodel_recordings-") for n in served)
    chapters = json.loads((BOOK_HTML / "lite" / "chapters.json").read_text())
    assert chapters["04_v12_per_folio"]["live"] is True
    # chapter 7 runs live: matplotlib is optional (nbmodel.viz.plots draws SVG without it), and nothing it
    # needs is missing from Pyodide (resource, which Pyodide lacks, is optional too)
    assert chapters["07_cost"] == {"live": True, "missing": [], "without": ["matplotlib", "resource"]}
    assert all(c["live"] for c in chapters.values()), chapters
    assert set(chapters) == {p.stem for p in (BOOK_HTML / "lite" / "files").glob("*.ipynb")}

    checked = 0
    for config in (BOOK_HTML / "lite").rglob("jupyter-lite.json"):
        settings = json.loads(config.read_text())["jupyter-config-data"].get("litePluginSettings", {})
        kernel = settings.get(lite_site.KERNEL_SETTINGS)
        if kernel is None:
            continue
        assert kernel["pyodideUrl"] == "./static/pyodide/pyodide.mjs", config  # not the CDN default
        assert kernel["disablePyPIFallback"] is True, config
        assert set(kernel["loadPyodideOptions"]["packages"]) <= set(lock["packages"]), config
        checked += 1
    assert checked, "no jupyter-lite.json configures the Pyodide kernel"


def make_notebook(path, *cells):
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": c} for c in cells]}))
    return path


def test_a_chapter_is_live_only_when_everything_it_imports_is_served(tmp_path):
    pkg = tmp_path / "src" / "nbmodel"
    (pkg / "viz").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text("import json\nfrom .viz import view\n")
    (pkg / "viz" / "__init__.py").write_text("")
    (pkg / "viz" / "view.py").write_text("def f():\n    import ipywidgets\n")
    (pkg / "viz" / "plots.py").write_text("from __future__ import annotations\n\n"
                                          "def g():\n    import matplotlib.pyplot\n")
    lock = {"packages": {"ipywidgets": {"imports": ["ipywidgets"]}}}
    live = make_notebook(tmp_path / "01_live.ipynb", "%matplotlib inline\nfrom nbmodel import core\n")
    dead = make_notebook(tmp_path / "02_plots.ipynb", "import nbmodel.core\n", "from nbmodel.viz import plots\n")
    shell = make_notebook(tmp_path / "03_shell.ipynb", "!pip list\nimport os, js\n")
    out = lite_site.live_chapters([live, dead, shell], tmp_path / "src", lock)
    assert out["01_live"] == {"live": True, "missing": [], "without": []}
    assert out["02_plots"] == {"live": False, "missing": ["matplotlib"], "without": []}
    assert out["03_shell"]["live"] is True


def make_package(root, files):
    for name, text in files.items():
        path = root / "nbmodel" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_import_under_except_importerror_is_optional(tmp_path):
    src = make_package(tmp_path / "src", {
        "__init__.py": "",
        "plots.py": "try:\n    import matplotlib.pyplot as plt\nexcept ImportError:\n    plt = None\n",
        "strict.py": "try:\n    import numpy\nexcept KeyError:\n    pass\n",       # does not catch ImportError
        "fallback.py": "try:\n    import a\nexcept (ValueError, ModuleNotFoundError):\n    import b\n",
        "both.py": "from . import plots\nimport matplotlib\n",                      # required on another path
    })
    nb = {n: make_notebook(tmp_path / f"{n}.ipynb", f"from nbmodel import {n}\n")
          for n in ("plots", "strict", "fallback", "both")}
    out = lite_site.live_chapters(list(nb.values()), src, {"packages": {}})
    assert out["plots"] == {"live": True, "missing": [], "without": ["matplotlib"]}
    assert out["strict"] == {"live": False, "missing": ["numpy"], "without": []}
    # the handler's own import is required: only the try body is guarded
    assert out["fallback"] == {"live": False, "missing": ["b"], "without": ["a"]}
    assert out["both"] == {"live": False, "missing": ["matplotlib"], "without": []}


def test_a_module_reached_only_through_an_optional_import_is_optional_throughout(tmp_path):
    src = make_package(tmp_path / "src", {
        "__init__.py": "",
        "top.py": "try:\n    from . import extra\nexcept ImportError:\n    extra = None\n",
        "extra.py": "import pandas\n",
    })
    nb = make_notebook(tmp_path / "n.ipynb", "import nbmodel.top\n")
    assert lite_site.live_chapters([nb], src, {"packages": {}})["n"]["without"] == ["pandas"]
    nb2 = make_notebook(tmp_path / "n2.ipynb", "import nbmodel.top\n", "import nbmodel.extra\n")
    assert lite_site.live_chapters([nb2], src, {"packages": {}})["n2"]["missing"] == ["pandas"]


def test_the_standard_library_is_what_pyodide_has_not_what_cpython_has(tmp_path):
    # Pyodide's stdlib lacks resource; a chapter that needs it at import time cannot run there
    src = make_package(tmp_path / "src", {"__init__.py": "", "bench.py": "import json\nimport resource\n"})
    nb = make_notebook(tmp_path / "07.ipynb", "from nbmodel import bench\n")
    assert lite_site.live_chapters([nb], src, {"packages": {}})["07"]["live"] is True  # the host's stdlib
    pyodide_stdlib = set(sys.stdlib_module_names) - {"resource"}
    out = lite_site.live_chapters([nb], src, {"packages": {}}, stdlib=pyodide_stdlib)
    assert out["07"] == {"live": False, "missing": ["resource"], "without": []}


def test_the_recordings_wheel_holds_the_recordings_where_nbmodel_reads_them(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "probes-x.json").write_text('{"a": 1}\n')
    (tmp_path / "benchmarks" / "notes.py").write_text("")
    out = tmp_path / "out"
    out.mkdir()
    whl = lite_site.recordings_wheel(tmp_path, out, "1.2")
    first = whl.read_bytes()
    assert lite_site.recordings_wheel(tmp_path, out, "1.2").read_bytes() == first  # reproducible
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        assert zf.read("benchmarks/probes-x.json") == b'{"a": 1}\n'
        record = zf.read("nbmodel_recordings-1.2.dist-info/RECORD").decode()
    assert "benchmarks/notes.py" not in names
    assert "benchmarks/probes-x.json,sha256=" in record
    entry, _ = lite_site.wheel_entry(whl, lite_site.marker_env("3.14.2"))
    assert (entry["name"], entry["version"]) == ("nbmodel-recordings", "1.2")
    # nbmodel reads its recordings from <site-packages>/benchmarks, where this wheel unpacks them
    from nbmodel import crosscheck, live, realkernel
    for path in (realkernel.RECORDED_PROBES, crosscheck.RECORDED_CROSSCHECK, live.RECORDED):
        assert pathlib.Path(path).parent == ROOT / "benchmarks" and pathlib.Path(path).suffix == ".json"
    with pytest.raises(SystemExit, match="no recordings"):
        lite_site.recordings_wheel(tmp_path / "nowhere", out, "1.2")
