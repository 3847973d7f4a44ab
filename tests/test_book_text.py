"""The book as a reviewer reads it: no citation of files outside the repository, no link to a bare file name,
every chapter with learning goals, a summary, exercises with hidden runnable solutions and followable references,
and reading paths that link to their chapters."""

from __future__ import annotations

import json
import re

import pytest
from conftest import BOOK, BOOK_HTML, ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BOOK_MD = sorted(BOOK.glob("*.md"))
MODEL_TEXT = [ROOT / "nbmodel" / "costmodel.py", ROOT / "nbmodel" / "population.py"]

#: Citations of files that are not in the repository, or of the issue tracker nobody outside can read.
INTERNAL = re.compile(r"anchors\.md|kernel-facts|\b[Ii]ssue #\d+")
#: A link to a bare file name (linkify turns "anchors.md" or "bench.py" into http://anchors.md).
BARE_FILE_LINK = re.compile(r"""href=["']https?://[\w-]+\.(?:md|py|sh|c|h|toml|txt|json|ipynb|yml|yaml|rst|html?)/?["']""")


def internal_citations(text: str) -> list[str]:
    return INTERNAL.findall(text)


def bare_file_links(html: str) -> list[str]:
    return BARE_FILE_LINK.findall(html)


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell) -> str:
    return "".join(cell["source"])


def _notebook_text(path) -> str:
    """Sources and text outputs: what the page shows."""
    parts = []
    for c in _cells(path):
        parts.append(_text(c))
        for o in c.get("outputs", []):
            parts.append("".join(o.get("text", "")))
            for mime in ("text/plain", "text/markdown", "text/html"):
                parts.append("".join(o.get("data", {}).get(mime, "")))
    return "\n".join(parts)


# -- the checkers catch what they are for (planted) ------------------------------------------------------------

def test_checkers_catch_planted_citations_and_bare_links():
    assert internal_citations("the 5x figure (anchors.md P1)") == ["anchors.md"]
    assert internal_citations("see kernel-facts.md 7.2") and internal_citations("Issue #7 sets three targets")
    assert not internal_citations("commit 41d88484c71c; lore Message-ID 20251114151828.98165-1-kalyazin@amazon.com")
    assert bare_file_links('<a class="reference external" href="http://anchors.md">anchors.md</a>')
    assert bare_file_links('<a href="http://bench.py">bench.py</a>')
    assert not bare_file_links('<a href="https://lore.kernel.org/linux-mm/213b4567@linux.intel.com/">x</a>')
    assert not bare_file_links('<a href="https://lwn.net/Articles/931406/">x</a>')


# -- sources ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS + BOOK_MD + MODEL_TEXT, ids=lambda p: p.name)
def test_sources_cite_nothing_outside_the_repository(path):
    text = _notebook_text(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    assert not internal_citations(text), f"{path.name}: {internal_citations(text)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_opens_with_learning_goals(path):
    first = _text(_cells(path)[0])
    assert first.startswith("# ")
    box = first.split("You will learn", 1)
    assert len(box) == 2, "the first cell must hold the 'You will learn' box"
    items = [line for line in box[1].split(":::", 1)[0].splitlines() if line.startswith("- ")]
    assert 3 <= len(items) <= 5, items


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_closes_with_summary_exercises_and_references(path):
    cells = _cells(path)
    heads = [_text(c).splitlines()[0] for c in cells if c["cell_type"] == "markdown" and _text(c)]
    assert heads.index("## Summary") < heads.index("## Exercises") < heads.index("## References")
    assert _text(cells[-1]).startswith("## References"), "References close the chapter"
    refs = _text(cells[-1])
    links = re.findall(r"https://\S+", refs)
    assert links, "at least one followable link"
    for url in re.findall(r"https://lore\.kernel\.org/\S+", refs):
        assert re.search(r"lore\.kernel\.org/[\w-]+/[^/\s]+@[^/\s]+/", url), f"lore link without a Message-ID: {url}"
    assert "http://" not in refs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_has_a_hidden_runnable_solution(path):
    cells = _cells(path)
    exercises = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                 and re.match(r"\*\*Exercise \d+\.\*\*", _text(c))]
    assert 2 <= len(exercises) <= 4
    for n, i in enumerate(exercises, 1):
        sol = cells[i + 1]
        assert sol["cell_type"] == "code" and _text(sol).startswith(f"# Solution to exercise {n}")
        assert {"hide-cell", "hide-input"} & set(sol["metadata"].get("tags", [])), "solutions are hidden by default"
        assert "nbval-ignore-output" not in sol["metadata"].get("tags", []), "solutions are nbval-checked"
        assert sol.get("outputs"), "the solution was run and its output saved (nbval compares it)"
    assert any(re.search(r"\bpredict\b", _text(cells[i]), re.I) for i in exercises), \
        "at least one exercise asks the reader to predict before running"


def test_reading_paths_on_the_landing_page_link_their_chapters():
    intro = (BOOK / "intro.md").read_text(encoding="utf-8")
    section = intro.split("## Reading paths", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| a")]
    assert len(rows) == 4
    for row in rows:
        assert re.findall(r"\{doc\}`notebooks/0\d_\w+`", row), row


# -- the built book --------------------------------------------------------------------------------------------

def _html_pages():
    if not BOOK_HTML.is_dir():
        pytest.skip("book not built (bash scripts/build_book.sh)")
    return sorted(p for p in BOOK_HTML.rglob("*.html") if "_static" not in p.parts)


def test_built_book_has_no_internal_citation_and_no_bare_file_link():
    bad = {}
    for page in _html_pages():
        html = page.read_text(encoding="utf-8")
        found = internal_citations(html) + bare_file_links(html)
        if found:
            bad[str(page.relative_to(BOOK_HTML))] = found
    assert not bad


def test_built_chapters_have_followable_reference_links():
    pages = {p.stem: p for p in _html_pages()}
    for nb in NOTEBOOKS:
        html = pages[nb.stem].read_text(encoding="utf-8")
        refs = html.split('id="references"', 1)
        assert len(refs) == 2, f"{nb.stem}: no References section"
        assert re.search(r'<a [^>]*href="https://', refs[1]), f"{nb.stem}: no link in References"


def test_markdown_tables_from_the_model_render_as_tables():
    """The population-path review and the ABI table are Markdown outputs: they must become <table>s, not a
    paragraph of pipes (MyST-NB parses Markdown outputs as commonmark, without tables, unless told otherwise)."""
    pages = {p.stem: p for p in _html_pages()}
    html = pages["06_side_by_side"].read_text(encoding="utf-8")
    for cell in ("write() to the same page again", "write(); write()"):
        i = html.find(cell)
        assert i > 0 and html.rfind("<table", 0, i) > html.rfind("</table>", 0, i), cell
    assert "<p>| path |" not in html and "<p>| sequence" not in html


def test_state_counts_in_the_prose_are_the_ones_the_chapter_printed():
    """Chapter 6 quotes the explorer's state counts; they must be the numbers in the table printed above them."""
    cells = _cells(ROOT / "notebooks" / "06_side_by_side.ipynb")
    i = next(n for n, c in enumerate(cells) if "state_space_sizes(" in _text(c))
    table = "".join("".join(o.get("data", {}).get("text/html", "")) for o in cells[i]["outputs"])
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    counts = {tuple(re.findall(r">([^<>]+)</td>", r)[:2]): re.findall(r">([^<>]+)</td>", r)[2] for r in rows[1:]}
    prose = _text(cells[i + 1])
    quoted = {("filemap", "1"): "31 states for one page", ("filemap", "2"): "515 for two",
              ("per-folio", "1"): "1645 for a single page", ("secretmem", "1"): "599 for the secretmem"}
    for key, phrase in quoted.items():
        assert phrase in prose, phrase
        assert phrase.split()[0] == counts[key], (key, counts[key], phrase)
