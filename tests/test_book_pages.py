"""The book's reference pages: the glossary covers every term the chapters use, the reading paths point at
chapters and scenarios that exist, the API page documents every core module, and the defense page lists the
model's simplifications. These checks read the sources; the build itself (-W -n) is tested elsewhere.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import re

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"

CHAPTERS = ("01_why", "02_direct_map", "03_page_cache", "04_v12_per_folio", "05_filemap", "06_side_by_side",
            "07_cost", "08_landing")
CORE_MODULES = ("system", "designs", "invariants", "guest_memfd", "secretmem", "pagecache", "kernel", "directmap",
                "x86", "arm64", "pagetable", "tlb", "physmem", "folio", "trace", "counters", "units", "errors",
                "scenario")
# The words a student meets first (the brief for the glossary); each must be a term or an alias.
REQUIRED_TERMS = ("direct map", "linear map", "PFN", "folio", "page cache", "xarray", "TLB", "INVLPG", "IPI",
                  "TLBI broadcast", "BBML2_NOABORT", "contPTE", "rodata=full", "CPA", "split", "collapse", "zap",
                  "restore", "AS_NO_DIRECT_MAP", "guest_memfd", "secretmem", "mermap", "CoCo", "TDX", "SNP", "FWB",
                  "AS_INACCESSIBLE", "AS_UNEVICTABLE", "leaf", "refcount", "order", "->free_folio", "GUP",
                  "INVLPGB", "KASLR", "shadow entry", "memcg", "stale TLB entry", "ALLOC_UNMAPPED")

TERM_ROLE = re.compile(r"\{term\}`([^`]+)`")
DOC_ROLE = re.compile(r"\{doc\}`([^`]+)`")


def _term_target(text: str) -> str:
    """``{term}`label <target>``` -> target; ``{term}`target``` -> target."""
    m = re.fullmatch(r"(?s).*<([^<>]+)>\s*", text)
    return (m.group(1) if m else text).strip()


def glossary_terms() -> set[str]:
    """Every term (and alias) defined in book/glossary.md's glossary block, lower-cased as Sphinx matches them."""
    text = (BOOK / "glossary.md").read_text()
    block = re.search(r"```\{glossary\}\n(.*?)\n```", text, re.S)
    assert block, "book/glossary.md has no ```{glossary} block"
    terms = set()
    for line in block.group(1).splitlines():
        if line.strip() and not line.startswith((" ", "\t", ":")):
            terms.add(line.strip().lower())
    return terms


def markdown_sources() -> dict[str, str]:
    """Markdown text of every chapter notebook and book page, by name."""
    out = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        out[f"notebooks/{path.name}"] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for path in sorted(BOOK.glob("*.md")):
        out[path.name] = path.read_text()
    return out


# -- glossary ------------------------------------------------------------------------------------------------------
def test_glossary_defines_the_required_terms():
    terms = glossary_terms()
    missing = [t for t in REQUIRED_TERMS if t.lower() not in terms]
    assert not missing, f"book/glossary.md lacks: {missing}"


def test_glossary_has_every_term_the_book_uses():
    terms = glossary_terms()
    missing = {}
    for name, text in markdown_sources().items():
        for used in TERM_ROLE.findall(text):
            if _term_target(used).lower() not in terms:
                missing.setdefault(name, []).append(used)
    assert not missing, f"{{term}} roles with no glossary entry (add them to book/glossary.md): {missing}"


def test_glossary_terms_are_unique_and_defined():
    text = re.search(r"```\{glossary\}\n(.*?)\n```", (BOOK / "glossary.md").read_text(), re.S).group(1)
    names = [ln.strip().lower() for ln in text.splitlines() if ln.strip() and not ln.startswith((" ", ":"))]
    assert len(names) == len(set(names)), "a glossary term is defined twice"
    # every run of term lines is followed by an indented definition
    entries = re.split(r"\n\s*\n", text.strip())
    for entry in entries:
        if entry.startswith(":"):
            continue
        lines = entry.splitlines()
        assert any(ln.startswith("  ") for ln in lines), f"glossary entry without a definition: {lines[0]!r}"


# -- reading paths -------------------------------------------------------------------------------------------------
def reading_paths() -> str:
    return (BOOK / "reading-paths.md").read_text()


def test_reading_paths_name_every_chapter_in_order():
    docs = [d for d in DOC_ROLE.findall(reading_paths()) if d.startswith("notebooks/")]
    listed = list(dict.fromkeys(d.removeprefix("notebooks/") for d in docs))
    assert listed[: len(CHAPTERS)] == list(CHAPTERS), "the numbered chapter list should come first, in order"


def test_reading_paths_link_to_pages_that_exist():
    for target in set(DOC_ROLE.findall(reading_paths())):
        candidates = [BOOK / f"{target}.md", BOOK / f"{target}.ipynb"]
        if target.startswith("notebooks/"):
            candidates.append(NOTEBOOKS / f"{target.removeprefix('notebooks/')}.ipynb")
        assert any(c.exists() for c in candidates), f"reading-paths.md links to {target}, which does not exist"


def test_reading_paths_cover_every_audience_and_command():
    text = reading_paths()
    for audience in ("## Student", "## mm or KVM reviewer", "## VMM or cloud engineer", "## Security reviewer"):
        assert audience in text
    for command in ("nbmodel run", "nbmodel explore", "nbmodel bench", "nbmodel probe"):
        assert command in text


def test_scenarios_named_in_reading_paths_exist():
    names = set(re.findall(r"scenarios/([A-Za-z0-9_+\-]+\.toml)", reading_paths()))
    assert names, "the reading paths should point at concrete scenarios"
    missing = sorted(n for n in names if not (ROOT / "scenarios" / n).exists())
    assert not missing, f"reading-paths.md names scenarios that do not exist: {missing}"


def test_chapters_link_only_to_chapters_that_exist():
    for path in sorted(NOTEBOOKS.glob("0[1-8]_*.ipynb")):
        text = markdown_sources()[f"notebooks/{path.name}"]
        for target in DOC_ROLE.findall(text):
            target = target.strip()
            if target.startswith("/"):
                ok = (BOOK / f"{target[1:]}.md").exists() or (BOOK / f"{target[1:]}.ipynb").exists()
            else:
                ok = (NOTEBOOKS / f"{target}.ipynb").exists() or (NOTEBOOKS / f"{target}.md").exists()
            assert ok, f"{path.name} links to {target}, which does not exist"


# -- API page -------------------------------------------------------------------------------------------------------
def automodules() -> list[str]:
    return re.findall(r"^\.\. automodule:: (\S+)", (BOOK / "api.md").read_text(), re.M)


def test_api_page_documents_every_core_module():
    documented = automodules()
    missing = [m for m in CORE_MODULES if f"nbmodel.{m}" not in documented]
    assert not missing, f"book/api.md has no automodule for: {missing}"
    assert len(documented) == len(set(documented)), "a module is documented twice (duplicate object warnings)"


@pytest.mark.parametrize("module", automodules())
def test_api_page_modules_import_and_have_docstrings(module):
    mod = importlib.import_module(module)
    assert (mod.__doc__ or "").strip(), f"{module} has no module docstring for the API page"
    assert not module.startswith("nbmodel.viz"), "the API page documents the pure model, not the views"


def test_api_page_uses_eval_rst_blocks():
    text = (BOOK / "api.md").read_text()
    assert text.count("```{eval-rst}") == len(automodules())


# -- defense of design -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("topic", ["KASLR", "INVLPGB", "shadow entries", "memcg", "allocator", "arm64",
                                   "Model time is not kernel time", "speculation", "TLBs never evict", "No locks"])
def test_defense_lists_the_simplification(topic):
    assert topic.lower() in (BOOK / "defense.md").read_text().lower()


# -- the table of contents -----------------------------------------------------------------------------------------
def test_reference_pages_are_in_the_toc():
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    files = set()

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.add(str(e["file"]))
            walk(e.get("sections"))

    walk(toc.get("chapters"))
    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    missing = [p for p in ("glossary", "reading-paths", "api", "defense") if p not in files]
    assert not missing, f"book/_toc.yml does not list {missing} (only_build_toc_files: they would not be built)"


# -- the landing chapter's data (nbmodel.viz.patches) ------------------------------------------------------------
def test_patch_list_matches_the_split_plan():
    from nbmodel.viz import patches

    assert [p.number for p in patches.PATCHES] == list(range(1, 17))
    assert patches.by_tree() == {"mm": list(range(1, 7)), "KVM": list(range(7, 17))}
    assert [p.number for p in patches.PATCHES if p.kind == "selftest"] == list(range(11, 17))


def test_patch_dependencies_point_forward_and_cross_only_through_the_probes_and_the_flag():
    from nbmodel.viz import patches

    for a, b in patches.DEPENDS:
        assert a < b, f"{a:02d} -> {b:02d} points backwards"
    crossing = {(a, b) for a, b in patches.DEPENDS if patches.patch(a).tree != patches.patch(b).tree}
    assert crossing == {(2, 10), (6, 10)}
    assert patches.INFERRED == frozenset(patches.DEPENDS)


def test_patch_diagrams_render_and_name_every_patch():
    from nbmodel.viz import patches
    from nbmodel.viz.dot import svg

    for rework in (False, True):
        out = svg(patches.series_graph(rework=rework))
        for p in patches.PATCHES:
            assert f">{p.label} " in out or f">{p.label}&#160;" in out
        assert ("mm/filemap" in out) is rework
    paths = svg(patches.paths_graph())
    assert "Path A" in paths and "Path B" in paths and "stable branches" in paths
    assert svg(patches.paths_graph()) == paths  # same bytes every time
