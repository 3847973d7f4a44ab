"""Graphviz diagrams, drawn by one renderer on every machine.

The Python ``graphviz`` package runs a ``dot`` executable. We never use whatever ``dot`` happens to be on
PATH: the ``graphviz-pure`` wheel (a static Rust port of Graphviz, installed by pip into the venv's scripts
directory) renders every diagram, so the SVG bytes stored in notebooks are the same everywhere and nbval can
compare them. Importing this module points ``graphviz`` at that binary.

In the browser (the book's live chapters run in Pyodide, where no executable can run) the same DOT text is
laid out by Graphviz compiled to WebAssembly (``viz.js`` from the npm package ``@viz-js/viz``, served next to
Pyodide by the book itself): the Python code that writes the DOT is the same, only the layout program
differs. Loading it is asynchronous; it starts when this module is imported and, where the browser can
(JSPI), the first drawing waits for it.

Never call ``graphviz.version()``: it cannot parse graphviz-pure's version line.

    >>> from nbmodel.viz.dot import Digraph, svg
    >>> g = Digraph()
    >>> g.edge("va", "pa")
    >>> svg(g).startswith("<svg")
    True
"""

from __future__ import annotations

import html
import os
import pathlib
import shutil
import sys
import sysconfig
import threading
from collections import OrderedDict

import graphviz
from graphviz import Digraph, Graph, Source
from graphviz.backend import dot_command

__all__ = ["Diagram", "Digraph", "Graph", "Source", "diagram", "dot_binary", "ensure_dot", "in_browser", "svg",
           "svgs"]

_BINARY_NAME = "graphviz-pure"

#: When set to a list, :func:`svg` appends the DOT text of every diagram it draws (a test compares the DOT
#: written in the browser with the DOT written natively).
trace: list[str] | None = None


def in_browser() -> bool:
    """True under Pyodide (the live chapters), where diagrams are laid out by viz.js instead of graphviz-pure."""
    return sys.platform == "emscripten"


def dot_binary() -> pathlib.Path | None:
    """Where the graphviz-pure executable is: next to this interpreter first, then on PATH."""
    dirs = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    for d in dirs:
        if d:
            candidate = pathlib.Path(d, _BINARY_NAME)
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    found = shutil.which(_BINARY_NAME)
    return pathlib.Path(found) if found else None


def ensure_dot() -> pathlib.Path:
    """Point the ``graphviz`` package at graphviz-pure and return the binary's path.

    Raises RuntimeError (with the fix) when graphviz-pure is not installed.
    """
    exe = dot_binary()
    if exe is None:
        raise RuntimeError(
            "graphviz-pure is not installed in this environment; install the viz extra: "
            "pip install -e '.[viz]' (or run ./run.sh)"
        )
    dot_command.DOT_BINARY = exe
    return exe


# Import-time wiring, so that a plain ``Digraph`` shown in a notebook also renders with graphviz-pure.
# A missing binary is reported by ensure_dot() when a diagram is actually drawn, not at import.
if not in_browser() and dot_binary() is not None:
    ensure_dot()


# -- in the browser: viz.js ----------------------------------------------------------------------------------
_viz = None  # the viz.js instance, once loaded
_viz_task = None


def _viz_url() -> str:
    """viz.js sits beside Pyodide's lock file (scripts/build_lite.sh puts it there)."""
    import js  # Pyodide only
    import pyodide_js

    base = str(pyodide_js.lockfileBaseUrl or "")
    return str(js.URL.new("viz.js", base.rstrip("/") + "/").href)


async def load_viz():
    """Load viz.js (once) and return its instance. Browser only."""
    global _viz
    if _viz is None:
        from pyodide.code import run_js

        module = await run_js("(url) => import(url)")(_viz_url())
        _viz = await module.instance()
    return _viz


def _start_loading_viz() -> None:
    global _viz_task
    if _viz_task is None:
        import asyncio

        _viz_task = asyncio.ensure_future(load_viz())


def _browser_svg(dot_source: str, engine: str) -> str:
    if _viz is None:
        try:
            from pyodide.ffi import run_sync

            run_sync(load_viz())
        except Exception as exc:  # no JSPI, or not inside an awaitable call: cannot wait here
            _start_loading_viz()
            raise RuntimeError(
                "the in-browser Graphviz (viz.js) is still loading; run this cell again in a moment"
            ) from exc
    import js
    from pyodide.ffi import to_js

    options = to_js({"format": "svg", "engine": engine}, dict_converter=js.Object.fromEntries)
    return str(_viz.renderString(dot_source, options))


if in_browser():
    _start_loading_viz()
    # A graphviz object shown as a cell's value is drawn by ``_repr_image_svg_xml``, which would run ``dot``.
    from graphviz import jupyter_integration as _ji

    _ji.JupyterIntegration._repr_image_svg_xml = lambda self: svg(self)


#: The last :data:`CACHE_SIZE` layouts, by (DOT text, engine): a stepper going back, or a filmstrip drawing a
#: state a stepper drew, gets the same SVG without running the layout again (the output is a function of the
#: DOT text, so the bytes are the same).
CACHE_SIZE = 128
_cache: OrderedDict[tuple[str, str | None], str] = OrderedDict()
_cache_lock = threading.Lock()


def _as_source(source):
    if isinstance(source, str):
        return Source(source)
    if not isinstance(source, (graphviz.Graph, graphviz.Digraph, graphviz.Source)):
        raise TypeError(f"expected DOT source text or a graphviz object, not {type(source).__name__}")
    return source


def _render(source, engine: str | None) -> str:
    key = (source.source, engine or source.engine)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    if in_browser():
        text = _browser_svg(source.source, engine or source.engine)
    else:
        ensure_dot()
        kwargs = {"engine": engine} if engine else {}
        text = source.pipe(format="svg", encoding="utf-8", **kwargs)
    start = text.find("<svg")
    if start < 0:
        raise RuntimeError("the renderer returned no <svg> element")
    out = text[start:].strip() + "\n"
    with _cache_lock:
        _cache[key] = out
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return out


def svg(source: str | graphviz.Graph | graphviz.Digraph | graphviz.Source, engine: str | None = None) -> str:
    """Render DOT source (a string) or a graphviz object to SVG text for inline use in HTML.

    The XML prolog, DOCTYPE and generator comment are dropped, so the result starts with ``<svg`` and is the
    same bytes on every machine for the same input.
    """
    source = _as_source(source)
    if trace is not None:
        trace.append(source.source)
    return _render(source, engine)


def svgs(sources, engine: str | None = None) -> list[str]:
    """:func:`svg` of several diagrams, in order. Outside the browser the layouts run at the same time (one
    graphviz-pure process each, from threads that wait on them), so a row of diagrams costs about one."""
    sources = [_as_source(s) for s in sources]
    if trace is not None:
        trace.extend(s.source for s in sources)
    if len(sources) < 2 or in_browser():
        return [_render(s, engine) for s in sources]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        return list(pool.map(lambda s: _render(s, engine), sources))


class Diagram:
    """A rendered diagram that notebooks display as inline SVG (``text/html``).

    Jupyter Book writes ``image/svg+xml`` outputs to separate files shown through ``<img>``; an HTML output
    keeps the ``<svg>`` inline in the page, where text in it can be searched and styled.
    """

    def __init__(self, source: str | graphviz.Graph | graphviz.Digraph | graphviz.Source, title: str = ""):
        self.svg = svg(source)
        self.title = title

    def _repr_html_(self) -> str:
        label = f' aria-label="{html.escape(self.title, quote=True)}"' if self.title else ""
        return f'<div class="nbmodel-diagram" role="img"{label}>\n{self.svg}</div>'

    def __repr__(self) -> str:
        return f"Diagram({self.title!r})" if self.title else "Diagram()"


def diagram(source: str | graphviz.Graph | graphviz.Digraph | graphviz.Source, title: str = "") -> Diagram:
    """Shorthand for :class:`Diagram`: the last expression of a cell shows it inline."""
    return Diagram(source, title=title)
