"""Large steps in the views: the summary view above the drawing bound, its counts against the model's state, and
the widgets' busy state (controls disabled and a "working" status while the kernel works, restored after,
also after an exception or an interrupt). No wall-clock assertions: the timings are printed by
``python -m nbmodel.viz.widget_bench``."""

from __future__ import annotations

import re

import pytest

from nbmodel.kernel import Kernel
from nbmodel.pagetable import MAPPED, VALID
from nbmodel.viz import state_view as sv
from nbmodel.viz import summary as sm
from nbmodel.viz.filmstrip import filmstrip
from nbmodel.viz.pagetable_view import Mark, TooManyNodes, folio_marks, pagetable_graph
from nbmodel.viz.sidebyside import LockStep, side_by_side
from nbmodel.viz.stepper import BUSY_CLASS, WALK, FolioStepper, Stepper


def _fill(npages: int, extra=()) -> list[dict]:
    return [{"op": "gmem_create", "file": "g", "size": "4M"},
            {"op": "fallocate", "file": "g", "offset": 0, "len": npages * 4096}, *extra]


#: 300 folios in every state the summary counts: cached with an invalid direct map, cached and still in a
#: (stale) TLB because skip_flush left it there, freed and restored, held by a TLB.
MIXED = _fill(300, [{"op": "guest_fault", "file": "g", "offset": "8K"},
                    {"op": "kernel_read", "file": "g", "offset": "8K"},
                    {"op": "cpu_touch", "cpu": 1, "file": "g", "offset": "400K"},
                    {"op": "punch_hole", "file": "g", "offset": "600K", "len": "400K"}])


# -- the bound ------------------------------------------------------------------------------------------------
def test_summary_above_the_folio_bound_full_drawing_at_it():
    at = Stepper(_fill(sm.MAX_FOLIOS))
    at.run_all()
    f = at.frame()
    assert f.summary is None and f.svg.startswith("<svg")
    assert "nbmodel-summary" not in f.html and "folios by state" not in f.html
    assert f"... {sm.MAX_FOLIOS - 64} more folios" in f.html  # the full panel's folio table: 64 rows, then a count

    over = Stepper(_fill(sm.MAX_FOLIOS + 1))
    over.run_all()
    f = over.frame()
    n = sm.MAX_FOLIOS + 1
    assert f.summary == f"summary: {n} folios; the full drawing is limited to {sm.MAX_FOLIOS}"
    assert f.svg == "" and "<svg" not in f.html and "nbmodel-summary" in f.html
    # The folio table lists the ends only, and says how many it left out.
    assert f"... {n - 2 * sm.ENDS} more folios" in f.html
    assert f.html.count("<td") < 600  # the full panel has a row of 10 cells per folio (2,570 cells here)
    html = over.frame_html()
    assert f.summary in html and "nbmodel-diagram" not in html


def test_the_widget_and_the_filmstrip_say_summary_and_draw_nothing():
    w = FolioStepper(script=_fill(sm.MAX_FOLIOS + 1), start=2)
    assert f"summary: {sm.MAX_FOLIOS + 1} folios" in w.picture.value
    assert "<svg" not in w.picture.value and "<svg" not in w.tables.value
    fs = filmstrip(_fill(sm.MAX_FOLIOS + 1), diagram=True)
    frames = [fr.html for fr in fs.frames]
    assert "<svg" not in frames[1] and "summary: 257 folios" in frames[1]
    assert "summary:" not in frames[0]  # step 1 (create) has no folio
    w.click("back")
    assert w.picture.value.count("<svg") == 1 and "summary:" not in w.picture.value


def test_show_parts_use_the_summary_over_the_bound():
    s = Stepper(_fill(sm.MAX_FOLIOS + 1))
    out = s.show(2, "diagram", "folios", "pagecache", "tlb")
    assert "<svg" not in out and "summary: 257 folios" in out
    assert "folios by state" in out and "TLB entries per CPU (counts)" in out and "more folios" in out
    small = Stepper(WALK).show(2, "diagram", "folios")
    assert "<svg" in small and "summary" not in small


def test_node_bound_summarises_a_tree_of_few_folios_and_many_nodes():
    # One page zapped in each of 40 different 2M ranges: 40 folios, but each needs its own PMD and PTE
    # branch, well over MAX_NODES nodes.
    k = Kernel("x86", None, memory="4G", cpus=2)
    base = 1 << 18  # 1 GiB
    marks = [Mark(f"p{i}", base + i * 512 + 7) for i in range(40)]
    for m in marks:
        k.set_direct_map_invalid_noflush(k.page_address(m.pfn))
    full = pagetable_graph(k, marks).source
    assert len(re.findall(r"^\s*n\d+ \[", full, re.M)) > sm.MAX_NODES
    with pytest.raises(TooManyNodes):
        pagetable_graph(k, marks, max_nodes=sm.MAX_NODES)

    class Sys:  # choose() reads only .k (and the marks it is given)
        pass

    s = Sys()
    s.k = k
    d = sm.choose(s, marks)
    assert d.svg == "" and d.note == (f"summary: 40 folios need more than {sm.MAX_NODES} page-table nodes; the "
                                      f"full drawing is limited to {sm.MAX_NODES}")
    few = sm.choose(s, marks[:3])
    assert few.note is None and few.svg.startswith("<svg")


def test_side_by_side_columns_summarise_each_over_the_bound():
    ls = LockStep(_fill(sm.MAX_FOLIOS + 1))
    ls.run_all()
    html = ls.step_details_html()
    assert "<svg" not in html and html.count("summary: 257 folios") == len(ls.systems)


# -- the counts -----------------------------------------------------------------------------------------------
def _independent_folio_states(system) -> dict:
    """The same counts as the summary, from the model's own lookups, one page and one CPU at a time."""
    k = system.k
    out: dict = {}
    cached_pfns = set()
    for f in system.files.values():
        for folio in f.mapping.folios():
            cached_pfns.add(folio.pfn)
            items = [("cached", folio.pfn, folio.nr_pages)]
            for kind, pfn, n in items:
                state = sv.direct_map_state(k, pfn, n)
                held = k.tlb_holders(pfn, n)
                key = (kind, state, "-" if not held else ("stale" if state == "invalid" else "held"))
                out[key] = out.get(key, 0) + 1
    freed = {}
    for e in k.trace:
        if e.kind == "free" and e.get("pfn") not in cached_pfns:
            freed.setdefault(e.get("pfn"), 1 << e.get("order", 0))
    for pfn, n in freed.items():
        state = sv.direct_map_state(k, pfn, n)
        held = k.tlb_holders(pfn, n)
        key = ("freed", state, "-" if not held else ("stale" if state == "invalid" else "held"))
        out[key] = out.get(key, 0) + 1
    return out


@pytest.mark.parametrize("design,switches", [("filemap", ("skip_flush",)), ("per-folio", ()), ("filemap", ())])
def test_summary_counts_equal_the_models_state(design, switches):
    s = Stepper(MIXED, design=design, switches=switches)
    s.run_all()
    system, k = s.system, s.system.k
    states = sm.folio_states(system)
    assert states == _independent_folio_states(system)
    assert sum(states.values()) == len(folio_marks(system)) > sm.MAX_FOLIOS
    cached = sum(n for (kind, _, _), n in states.items() if kind == "cached")
    assert cached == sum(f.mapping.nrpages for f in system.files.values())

    # Leaves per level, valid and invalid, walked leaf by leaf; the 4K count agrees with /proc/meminfo.
    leaves: dict = {}
    for level, _, prot in k.dmap.pt.leaves():
        key = ({1: "4K", 512: "2M", 1 << 18: "1G"}[level], "valid" if prot & VALID else "invalid")
        leaves[key] = leaves.get(key, 0) + 1
    counts = sm.leaf_counts(k)
    assert {key: n for key, n in counts.items() if key[0] != "table"} == leaves
    assert (counts.get(("4K", "valid"), 0) + counts.get(("4K", "invalid"), 0)) * 4 == k.counters["DirectMap4k"]

    # TLB: every entry counted, stale exactly when a page it covers is mapped but invalid.
    for row, tlb in zip(sm.tlb_summary(k), k.tlbs, strict=True):
        assert row["entries"] == len(tlb.entries) == sum(row["sizes"].values())
        pt = k.dmap.pt
        stale = sum(1 for first, span in tlb.entries.items()
                    if any(pt.prot(p) & MAPPED and not pt.is_valid(p) for p in range(first, first + span)))
        assert row["stale"] == stale

    # And the view shows those numbers.
    html = s.frame().html
    for (kind, state, tlb), n in states.items():
        assert re.search(rf"<td[^>]*>{kind}</td><td[^>]*>{state}</td><td[^>]*>{re.escape(tlb)}</td><td[^>]*>{n}</td>",
                         html), (kind, state, tlb, n)
    if design == "filemap" and switches:
        assert states[("cached", "invalid", "stale")] > 0  # the state worth showing is there to be counted


# -- the busy state -------------------------------------------------------------------------------------------
def _spy(widget, real, fail=None):
    """Replace a core method by one that records the widget's state while it runs, runs the real method, and
    then, the first time only, raises ``fail`` (an exception after the machine has changed: the worst case for
    a restore, which may call the method again)."""
    seen = []

    def action(*args, **kwargs):
        seen.append({"disabled": [c.disabled for c in widget._controls()], "status": widget.status.value,
                     "classes": list(widget.widget._dom_classes), "working": widget.working})
        out = real(*args, **kwargs)
        if fail is not None and len(seen) == 1:
            raise fail
        return out

    return action, seen


def _assert_idle(w):
    assert not w.working and BUSY_CLASS not in w.widget._dom_classes
    assert "working" not in w.status.value
    for c in (w.arch, w.design, w.scenario, w.op, w.args, w.b_add, w.b_drop):
        assert not c.disabled
    assert w.b_back.disabled == (w.core.pos == 0) and w.b_fwd.disabled == (w.core.pos >= w.core.total)


def test_stepper_widget_is_busy_during_a_step_and_idle_after():
    w = FolioStepper(script=WALK)
    w.core.forward, seen = _spy(w, w.core.forward)
    w.click("step")
    assert len(seen) == 1 and seen[0]["working"] and all(seen[0]["disabled"])
    assert BUSY_CLASS in seen[0]["classes"] and "working\u2026 step 1 / 9: gmem_create" in seen[0]["status"]
    _assert_idle(w)
    assert w.core.pos == 1 and "step 1 / 9" in w.status.value


@pytest.mark.parametrize("fail", [RuntimeError("boom"), KeyboardInterrupt()])
def test_stepper_widget_is_restored_after_an_exception_in_a_step(fail):
    w = FolioStepper(script=WALK, start=2)
    fresh = Stepper(WALK)
    fresh.goto(2)
    w.core.forward, seen = _spy(w, w.core.forward, fail)
    if isinstance(fail, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            w.click("step")
    else:
        w.click("step")  # ipywidgets logs an exception raised in a callback
    assert seen and seen[0]["working"]
    _assert_idle(w)
    assert f"failed: {type(fail).__name__}" in w.status.value
    # The step ran (the machine changed) before the exception: the stepper is rebuilt where it was.
    assert w.core.pos == 2 and w.core.system.snapshot() == fresh.system.snapshot()
    del w.core.forward
    w.click("step")
    assert w.core.pos == 3 and "failed" not in w.status.value


def test_stepper_widget_busy_for_add_and_settings_and_refusals():
    w = FolioStepper(script=WALK, start=1)
    w.op.value, w.args.value = "fallocate", "file=g offset=0 len=8K"
    w.core.add, seen = _spy(w, w.core.add)
    w.click("add")
    assert seen and all(seen[0]["disabled"]) and "working\u2026 fallocate file=g" in seen[0]["status"]
    _assert_idle(w)
    assert w.core.total == 2
    w.args.value = "file=nope"
    w.click("add")  # refused by the model: shown, not changed, not busy
    _assert_idle(w)
    assert "not changed" in w.status.value and w.core.total == 2
    w.core.configure, seen = _spy(w, w.core.configure)
    w.design.value = "filemap"
    assert seen and "working\u2026 rebuilding the machine with design=filemap" in seen[0]["status"]
    _assert_idle(w)
    assert w.core.config["design"] == "filemap"


def test_side_by_side_is_busy_during_a_step_and_restored_after_an_exception():
    s = side_by_side(WALK)
    s.core.goto, seen = _spy(s, s.core.goto)
    s.click("step")
    assert seen and all(seen[0]["disabled"]) and "working\u2026" in seen[0]["status"]
    assert BUSY_CLASS in seen[0]["classes"]
    assert not s.working and BUSY_CLASS not in s.widget._dom_classes and not s.b_fwd.disabled
    assert s.core.pos == 1 and "working" not in s.status.value

    del s.core.goto
    before = [x.snapshot() for x in s.core.systems]
    s.core.goto, seen = _spy(s, s.core.goto, RuntimeError("boom"))
    s.click("step")
    assert not s.working and BUSY_CLASS not in s.widget._dom_classes
    assert not s.b_fwd.disabled and not s.b_back.disabled
    assert "failed: RuntimeError" in s.status.value
    del s.core.goto
    assert s.core.pos == 1 and [x.snapshot() for x in s.core.systems] == before


# -- the layouts: in parallel and from the cache, the same bytes ----------------------------------------------
def test_layouts_in_parallel_and_from_the_cache_are_the_bytes_of_one_layout():
    from nbmodel.viz import dot

    ls = LockStep(WALK)
    ls.goto(3)
    graphs = [pagetable_graph(s) for s in ls.systems]
    dot._cache.clear()
    one_by_one = [dot.svg(g) for g in graphs]
    dot._cache.clear()
    assert dot.svgs(graphs) == one_by_one
    assert dot.svgs(graphs) == one_by_one  # now from the cache
    # A DOT text that differs in one character (same length) is laid out again, not served from the cache.
    changed = graphs[0].source.replace("PAGE_OFFSET", "PAGE=OFFSET")
    assert len(changed) == len(graphs[0].source)
    assert "PAGE=OFFSET" in dot.svg(changed) and "PAGE=OFFSET" not in dot.svg(graphs[0])
    assert len(dot._cache) <= dot.CACHE_SIZE
