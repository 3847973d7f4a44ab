"""The seed mail's population-path review, computed by running each path under each design (nbmodel.population)."""

from __future__ import annotations

import ast
from pathlib import Path

from nbmodel import population
from nbmodel.population import DESIGNS, PATHS, review, review_markdown, run_path

COLS = [name for name, _ in DESIGNS]


def _table():
    return {p.name: dict(zip(COLS, cells, strict=True)) for p, cells in review()}


def test_memcpy_through_the_vmm_mapping_never_touches_the_direct_map():
    row = _table()["memcpy through the VMM's mapping"]
    assert {c.result for c in row.values()} == {"0"}
    assert {c.via for c in row.values()} == {"VMM's mapping"}


def test_write_is_once_under_v12_refused_under_filemap_and_repeatable_with_the_mermap():
    t = _table()
    assert t["write() to a new page"]["per-folio (v12)"].via == "direct map"
    assert t["write() to the same page again"]["per-folio (v12)"].result == "EPERM"       # "exactly once"
    assert t["write() after the VMM faulted the page"]["per-folio (v12)"].result == "EPERM"
    assert t["write() to a new page"]["filemap"].result == "EOPNOTSUPP"
    for name in ("write() to a new page", "write() to the same page again", "write() after the VMM faulted the page"):
        cell = t[name]["filemap + mermap write()"]
        assert cell.result == "4096" and cell.via == "mermap" and not cell.broken


def test_populate_is_refused_with_no_direct_map_and_goes_through_the_direct_map_without_it():
    t = _table()
    assert {c.result for c in t["kvm_gmem_populate(), SNP, NO_DIRECT_MAP"].values()} == {"EINVAL"}
    assert {c.via for c in t["kvm_gmem_populate(), SNP, direct map kept"].values()} == {"direct map"}


def test_no_path_breaks_an_invariant_under_any_design():
    assert all(not c.broken for _, cells in review() for c in cells)


def test_a_path_that_breaks_an_invariant_is_reported():
    # plant it: fallocate without a fault under v12 leaves a cached folio in the direct map (invariant a)
    planted = population.Path("fallocate only", "-", (
        {"op": "gmem_create", "file": "g", "size": "64K"},
        {"op": "fallocate", "file": "g", "len": "4K"}))
    assert run_path(planted, {"design": "per-folio"}).broken == ("unmapped_while_cached",)
    assert run_path(planted, {"design": "filemap"}).broken == ()


def test_markdown_has_one_row_per_path_and_one_column_per_design():
    lines = review_markdown().splitlines()
    assert len(lines) == 2 + len(PATHS)
    assert all(line.count("|") == len(DESIGNS) + 3 for line in lines)


def test_population_module_imports_no_view_library():
    tree = ast.parse(Path(population.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not names & {"IPython", "ipywidgets", "graphviz", "matplotlib"}
