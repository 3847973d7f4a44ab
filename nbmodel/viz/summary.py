"""The summary view: what a stepper shows instead of a drawing too large to draw.

A step can put thousands of folios in a page cache (``fallocate`` of 256M is 65,536 folios). Drawing all of
them means page-table nodes by the thousand and a row per folio: a stepper took 12-19 s per click for a 256M
fallocate, almost all of it drawing, and did not return within minutes for 4G. Above a bound
(:data:`MAX_FOLIOS` marked folios, or a tree of more than :data:`MAX_NODES` page-table nodes) the views draw
this summary instead, and say so in a banner ("summary: 65536 folios; the full drawing is limited to 256"):

- the folios (cached, and freed since they were allocated) counted by direct-map state and TLB state;
- the direct map's leaves counted per level, valid and invalid, with the split counters;
- the first and last few folios, as the full folio table shows them;
- each file's page cache with its first and last entries;
- each CPU's TLB: how many entries of each size, how many are stale.

Every count is computed from the model's state in one pass over the folios, the TLB entries and the page
table; nothing is sampled. The functions only read the System.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from nbmodel.pagetable import LEVEL_1G, LEVEL_2M, LEVEL_4K, MAPPED, VALID
from nbmodel.viz import state_view as sv
from nbmodel.viz.dot import svgs
from nbmodel.viz.pagetable_view import TooManyNodes, fit_svg, folio_marks, pagetable_graph

#: More marked folios than this (cached, or freed and still followed) and the views show the summary.
MAX_FOLIOS = 256
#: More page-table nodes than this in the cut-down tree and the views show the summary.
MAX_NODES = 64
#: How many folios the summary lists at each end of the folio table.
ENDS = 4

SPAN_NAMES = {1: "4K", 16: "64K", 512: "2M", 8192: "32M", 262144: "1G"}
LEVEL_WORDS = ((LEVEL_1G, "1G"), (LEVEL_2M, "2M"), (LEVEL_4K, "4K"))


@dataclass(frozen=True)
class Drawing:
    """The page-table picture of one state: ``svg`` (inline SVG text, "" when not drawn) or, when the state
    is over a bound, ``note`` (the banner text saying why the summary is shown)."""

    svg: str
    note: str | None = None
    folios: int = 0


def choose(system, marks=None, draw: bool = True, max_folios: int = MAX_FOLIOS,
           max_nodes: int = MAX_NODES) -> Drawing:
    """Draw ``system``'s direct-map tree cut down to ``marks`` (default: :func:`folio_marks`) unless it is over
    a bound; then return the note instead. With ``draw`` false nothing is laid out, only the folio bound is
    checked (the tables of a frame without a diagram grow with the folios too)."""
    return choose_many([system], [marks], draw, max_folios, max_nodes)[0]


def choose_many(systems, marks=None, draw: bool = True, max_folios: int = MAX_FOLIOS,
                max_nodes: int = MAX_NODES) -> list[Drawing]:
    """:func:`choose` for several systems (a side-by-side row); the drawings are laid out at the same time."""
    marks = list(marks) if marks is not None else [None] * len(systems)
    out: list = []
    graphs = []
    for system, m in zip(systems, marks, strict=True):
        m = folio_marks(system) if m is None else m
        n = len(m)
        if n > max_folios:
            out.append(Drawing("", f"summary: {n} folios; the full drawing is limited to {max_folios}", n))
            continue
        if not draw:
            out.append(Drawing("", None, n))
            continue
        try:
            graphs.append(pagetable_graph(system, m, max_nodes=max_nodes))
        except TooManyNodes:
            out.append(Drawing("", f"summary: {n} folios need more than {max_nodes} page-table nodes; the full "
                                   f"drawing is limited to {max_nodes}", n))
            continue
        out.append(n)  # drawn below, all at once
    pictures = iter(svgs(graphs))
    return [Drawing(fit_svg(next(pictures)), None, d) if isinstance(d, int) else d for d in out]


# -- the counts -----------------------------------------------------------------------------------------------
def _dm_state(k, pfn: int, npages: int) -> str:
    """:func:`~nbmodel.viz.state_view.direct_map_state`, with one lookup when one leaf maps the whole folio."""
    level, first, prot = k.dmap.pt.leaf(pfn)
    if first + level >= pfn + npages:
        if not prot & MAPPED:
            return "unmapped"
        return "valid" if prot & VALID else "invalid"
    return sv.direct_map_state(k, pfn, npages)


def tlb_holders_by_mark(k, marks) -> dict[int, set[int]]:
    """``{i: cpus}`` for each mark ``marks[i]`` (sorted by PFN) that some CPU's TLB has an entry overlapping:
    one bisection per TLB entry instead of a TLB probe per folio."""
    starts = [m.pfn for m in marks]
    longest = max((m.npages for m in marks), default=1)
    out: dict[int, set[int]] = {}
    for tlb in k.tlbs:
        for first, span in tlb.entries.items():
            lo = bisect.bisect_left(starts, first - longest + 1)
            hi = bisect.bisect_left(starts, first + span)
            for i in range(lo, hi):
                if first < marks[i].pfn + marks[i].npages:
                    out.setdefault(i, set()).add(tlb.cpu)
    return out


def folio_states(system, marks=None) -> dict[tuple[str, str, str], int]:
    """``{(kind, direct-map state, TLB): count}`` over the marks: ``kind`` is ``cached`` or ``freed``; the
    direct-map state as the folio table gives it (valid, invalid, mixed, unmapped); TLB is ``-`` (no CPU holds
    it), ``held`` or ``stale`` (held while its direct map is invalid, as the folio table marks it)."""
    marks = folio_marks(system) if marks is None else marks
    if any(a.pfn > b.pfn for a, b in zip(marks, marks[1:], strict=False)):
        marks = sorted(marks, key=lambda m: (m.pfn, m.label))
    holders = tlb_holders_by_mark(system.k, marks)
    out: dict[tuple[str, str, str], int] = {}
    for i, m in enumerate(marks):
        state = _dm_state(system.k, m.pfn, m.npages)
        tlb = "-" if i not in holders else ("stale" if state == "invalid" else "held")
        key = (m.kind, state, tlb)
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def leaf_counts(k) -> dict[tuple[str, str], int]:
    """``{(level, "valid" | "invalid"): count}`` of the direct map's leaves (an invalid leaf is mapped but not
    present: a zapped page) and ``("table", "PMD" | "PTE")`` for the tables under the top level."""
    out: dict[tuple[str, str], int] = {}

    def add(key, n=1):
        if n:
            out[key] = out.get(key, 0) + n

    def leaf(word, prot, n=1):
        if prot & MAPPED:
            add((word, "valid" if prot & VALID else "invalid"), n)

    for _, e in k.dmap.pt.items():
        if type(e) is int:
            leaf("1G", e)
            continue
        add(("table", "PMD"))
        for e2 in e:
            if type(e2) is int:
                leaf("2M", e2)
                continue
            add(("table", "PTE"))
            for value in set(e2):  # a PTE table is a bytearray of 512 leaf values, few of them distinct
                leaf("4K", value, e2.count(value))
    return out


def tlb_summary(k) -> list[dict]:
    """Per CPU: ``{"cpu", "entries", "sizes": {size: n}, "stale"}``; an entry is stale when a page it covers
    has an invalid (zapped) page-table entry now."""
    pt = k.dmap.pt
    rows = []
    for tlb in k.tlbs:
        sizes: dict[str, int] = {}
        stale = 0
        for first, span in sorted(tlb.entries.items()):
            name = SPAN_NAMES.get(span, f"{span} pages")
            sizes[name] = sizes.get(name, 0) + 1
            if any(prot & MAPPED and not prot & VALID for _, _, prot in pt.leaves(first, first + span)):
                stale += 1
        rows.append({"cpu": tlb.cpu, "entries": len(tlb.entries), "sizes": sizes, "stale": stale})
    return rows


# -- the tables -----------------------------------------------------------------------------------------------
def folio_states_table(system, marks=None) -> str:
    rows = []
    for (kind, state, tlb), n in folio_states(system, marks).items():
        bad = (kind == "cached" and tlb == "stale") or (kind == "freed" and state == "invalid")
        rows.append([kind, state, tlb, sv.cell(str(n), sv.BAD if bad else None)])
    return sv.table("folios by state (cached, and freed since allocated)", ["folios", "direct map", "TLB",
                                                                             "count"], rows, empty="no folios")


def leaf_table(system) -> str:
    k = system.k
    counts = leaf_counts(k)
    rows = []
    for _, word in LEVEL_WORDS:
        valid, invalid = counts.get((word, "valid"), 0), counts.get((word, "invalid"), 0)
        if valid or invalid:
            rows.append([f"{word} leaves", str(valid), sv.cell(str(invalid), sv.WARN if invalid else None)])
    for table in ("PMD", "PTE"):
        if counts.get(("table", table)):
            rows.append([f"{table} tables", str(counts[("table", table)]), ""])
    for name in ("direct_map_level3_splits", "direct_map_level2_splits"):
        rows.append([sv.cell(sv.esc(name), None, "splits so far (counter)"), str(k.counters[name]), ""])
    return sv.table(f"direct map ({k.dmap.describe()})", ["", "valid", "invalid"], rows)


def tlb_summary_table(system) -> str:
    rows = []
    k = system.k
    for r in tlb_summary(k):
        sizes = ", ".join(f"{n} x {size}" for size, n in r["sizes"].items()) or "-"
        cpu = f"CPU {r['cpu']}" + (" (current)" if r["cpu"] == k.current_cpu else "")
        rows.append([cpu, str(r["entries"]), sizes, sv.cell(str(r["stale"]), sv.BAD if r["stale"] else None)])
    return sv.table("TLB entries per CPU (counts)", ["cpu", "entries", "sizes", "stale"], rows)


def pagecache_summary_table(system, ends: int = 3) -> str:
    """:func:`~nbmodel.viz.state_view.pagecache_table` with each file's first and last ``ends`` entries."""
    rows = []
    for name in sorted(system.files):
        f = system.files[name]
        m = f.mapping
        index = sorted(m.i_pages)
        shown = [f"[{i}] {m.i_pages[i].name}" for i in (index if len(index) <= 2 * ends else index[:ends])]
        if len(index) > 2 * ends:
            shown += [f"... {len(index) - 2 * ends} more ..."] + \
                [f"[{i}] {m.i_pages[i].name}" for i in index[-ends:]]
        extra = f" flags={'|'.join(sorted(f.flags)) or '0'} vm={f.vm_type}" if f.kind == "guest_memfd" else ""
        rows.append([name, f"{f.kind}{extra}", " ".join(sorted(m.flags)), str(m.nrpages), str(len(index)),
                     ", ".join(shown) or "empty"])
    return sv.table("page cache (first and last entries)", ["file", "kind", "mapping flags", "nrpages", "entries",
                                                             "i_pages"], rows, empty="no files yet")


def summary_panel(system, marks=None, note: str = "", current: int | None = None, pending=(),
                  counters: bool = True) -> str:
    """The summary view (tables only, no diagram): what :func:`~nbmodel.viz.state_view.state_panel` shows,
    counted instead of listed."""
    marks = folio_marks(system) if marks is None else marks
    delta = system.steps[-1].counters if system.steps else None
    row1 = [folio_states_table(system, marks), leaf_table(system), tlb_summary_table(system)]
    row2 = [sv.folio_table(system, limit=ENDS, tail=ENDS, caption="first and last folios in page caches"),
            pagecache_summary_table(system)]
    row3 = [sv.invariant_table(system)]
    if counters:
        names = [n for n in sv.DEFAULT_COUNTERS if system.k.counters[n] or (delta or {}).get(n)]
        row3.append(sv.counters_table(system, names=names, delta=delta, caption="counters (those not zero)"))
    log = sv.event_log(system.steps, current=current, pending=pending)
    head = sv.banner(note, "warn") if note else ""
    return f'<div class="nbmodel-state nbmodel-summary">{head}{sv.flex(row1)}\n{sv.flex(row2)}\n{sv.flex(row3)}\n' \
           f"{log}</div>"


__all__ = ["MAX_FOLIOS", "MAX_NODES", "Drawing", "choose", "choose_many", "folio_states", "leaf_counts", "tlb_summary",
           "tlb_holders_by_mark", "summary_panel", "folio_states_table", "leaf_table", "tlb_summary_table",
           "pagecache_summary_table"]
