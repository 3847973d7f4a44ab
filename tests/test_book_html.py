"""The built book (book/_build/html): inline diagrams, saved widget state, served entirely by itself."""

from __future__ import annotations

import html.parser
import json
import pathlib
import re
import subprocess
import sys
import urllib.parse

import pytest
from conftest import BOOK, ROOT, toc_docnames

PIPELINE = "notebooks/00_pipeline"


class _Refs(html.parser.HTMLParser):
    """Collect (tag, attribute, url) for everything a browser would load, plus inline <script> types."""

    LOADED = {("script", "src"), ("link", "href"), ("img", "src"), ("source", "src"), ("iframe", "src")}

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.script_types: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for t, a in self.LOADED:
            if tag == t and attrs.get(a):
                self.refs.append((tag, a, attrs[a]))
        if tag == "script":
            self.script_types.append(attrs.get("type", ""))


def _parse(path: pathlib.Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _html_pages(book_html: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in book_html.rglob("*.html") if "_static" not in p.parts)


def test_every_toc_page_is_built(book_html):
    for doc in toc_docnames():
        assert (book_html / f"{doc}.html").is_file(), f"{doc} is in _toc.yml but was not built"


def test_pipeline_page_has_inline_svg_diagram(book_html):
    page = (book_html / f"{PIPELINE}.html").read_text(encoding="utf-8")
    match = re.search(r'<div class="nbmodel-diagram"[^>]*>\s*<svg\b.*?</svg>', page, re.S)
    assert match, "the graphviz diagram should be inline <svg> inside div.nbmodel-diagram"
    assert "direct map" in match.group(0)


def test_pipeline_page_embeds_widget_state_and_local_embed_js(book_html):
    path = book_html / f"{PIPELINE}.html"
    text = path.read_text(encoding="utf-8")
    refs = _parse(path)
    assert "application/vnd.jupyter.widget-state+json" in refs.script_types
    assert "application/vnd.jupyter.widget-view+json" in refs.script_types
    scripts = [url for tag, _, url in refs.refs if tag == "script"]
    assert any(re.fullmatch(r"(\.\./)*_static/embed\.js(\?.*)?", url) for url in scripts), scripts

    state_json = re.search(
        r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', text, re.S
    ).group(1)
    models = json.loads(state_json)["state"]
    sliders = [m["state"] for m in models.values() if m["model_name"] == "IntSliderModel"]
    assert [s["value"] for s in sliders] == [9], "the saved slider state should be order 9"


def test_no_request_leaves_the_book(book_html):
    """No page loads a script, stylesheet, image or frame from anywhere but the book itself."""
    outside = []
    for path in _html_pages(book_html):
        for tag, attr, url in _parse(path).refs:
            if re.match(r"^(https?:)?//", url, re.I):
                outside.append(f"{path.relative_to(book_html)}: <{tag} {attr}={url}>")
    assert not outside, "external references:\n" + "\n".join(outside)


def test_local_references_exist(book_html):
    missing = []
    for path in _html_pages(book_html):
        for tag, attr, url in _parse(path).refs:
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme or parsed.netloc or not parsed.path or url.startswith("#"):
                continue
            target = (path.parent / urllib.parse.unquote(parsed.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                missing.append(f"{path.relative_to(book_html)}: <{tag} {attr}={url}>")
    assert not missing, "missing local files:\n" + "\n".join(missing)


def test_mathjax_is_vendored(book_html):
    page = (book_html / f"{PIPELINE}.html").read_text(encoding="utf-8")
    assert re.search(r'src="(\.\./)*_static/mathjax/tex-mml-chtml\.js', page)
    assert (book_html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


@pytest.mark.slow
def test_second_build_executes_nothing(book_html):
    """With nothing changed, a rebuild reads no source and so executes no notebook (jupyter-cache)."""
    jb = pathlib.Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jb), "build", "-W", "-n", "--keep-going", str(BOOK)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert result.returncode == 0, log[-4000:]
    executed = [line for line in log.splitlines() if re.search(r"Execut(ing|ed) notebook", line)]
    assert not executed, "a rebuild with no change re-executed:\n" + "\n".join(executed)
