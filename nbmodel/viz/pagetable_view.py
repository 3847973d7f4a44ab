"""Graphviz diagrams of the direct-map page-table tree, cut down to the parts that hold folios of interest.

The direct map of a 4 GiB machine has about a million 4K entries; a diagram of all of them says nothing. This
view draws the walk from the top-level entry down to the leaves that map the *marked* pages (the folios a
reader follows) and folds every other entry into a summary node per run of siblings ("PMD[0..223]: 223 x 2M
valid, 1 table"). Each drawn entry is coloured by what it is:

- a valid leaf, by level (1G blue, 2M green, 4K yellow);
- an invalid leaf (not present: the zap happened) in red, or orange when some CPU still caches it (stale TLB);
- a table, grey when it was a large leaf split at run time, light grey when boot already built it;
- a thick purple border when the entry maps a marked folio, with the folio's name in the label.

Colours are light fills with dark text on a transparent background, so a diagram reads the same on a light
and a dark page. The view only reads the kernel's state and trace; it never changes them.
"""

from __future__ import annotations

import bisect
import html
from dataclasses import dataclass

from nbmodel.pagetable import CONT, LEVEL_1G, LEVEL_2M, LEVEL_4K, MAPPED, VALID
from nbmodel.viz.dot import Diagram, Digraph, svg
from nbmodel.viz.state_view import kinds_and_args

# -- palette: fills light enough for dark text, borders and edges mid-grey (visible on white and on black) --
FILL = {
    "1G": "#a9c9f2",         # valid 1G leaf
    "2M": "#b5e0ad",         # valid 2M leaf
    "4K": "#f3e29c",         # valid 4K leaf
    "invalid": "#f2a3a3",    # not present
    "stale": "#ffb347",      # not present, but a CPU still caches the translation
    "split": "#c4c4c4",      # a table that replaced a large leaf at run time
    "table": "#eeeeee",      # a table built at boot
    "summary": "#f7f7f7",    # siblings folded into one node
    "root": "#dcd3f0",       # the upper levels of the walk
}
TEXT = "#1a1a1a"
BORDER = "#5f5f5f"
EDGE = "#8c8c8c"
FOLIO_BORDER = "#7b1fa2"

LEVEL_INDEX_SHIFT = {LEVEL_1G: 18, LEVEL_2M: 9, LEVEL_4K: 0}
LEVEL_TABLE = {LEVEL_1G: "PUD", LEVEL_2M: "PMD", LEVEL_4K: "PTE"}
LEVEL_SIZE = {LEVEL_1G: "1G", LEVEL_2M: "2M", LEVEL_4K: "4K"}
MAX_RUNS = 24  # more drawn runs than this under one table are folded into one "more" node


class TooManyNodes(Exception):
    """Raised by the builder when a drawing would need more nodes than its ``max_nodes`` bound."""


@dataclass(frozen=True)
class Mark:
    """Pages a reader follows: ``label`` for ``npages`` pages from ``pfn``. ``kind`` is ``"cached"`` (in a page
    cache), ``"freed"`` (was a folio, now back in the allocator) or ``"page"`` (any page named by hand)."""

    label: str
    pfn: int
    npages: int = 1
    kind: str = "page"


def folio_marks(system, freed: bool = True) -> list[Mark]:
    """Marks for every folio cached in any file of ``system`` and, with ``freed``, for every folio the trace
    shows allocated and since freed (so a reader still sees the leaves a punched-out folio left behind)."""
    marks, cached = [], set()
    for name in sorted(system.files):
        for folio in system.files[name].mapping.folios():
            marks.append(Mark(folio.name or f"{name}:{folio.index}", folio.pfn, folio.nr_pages, "cached"))
            cached.add(folio.pfn)
    if freed:
        seen = set()
        for kind, args in kinds_and_args(system.k.trace):
            if kind == "free":
                pfn = args.get("pfn")
                if pfn not in cached and pfn not in seen:
                    seen.add(pfn)
                    marks.append(Mark(f"freed {pfn:#x}", pfn, 1 << args.get("order", 0), "freed"))
    return sorted(marks, key=lambda m: (m.pfn, m.label))


def _runtime_splits(k) -> set[tuple[int, int]]:
    """``(level_pages, first_pfn)`` of large leaves the trace shows split after boot."""
    out = set()
    for e in k.trace:
        if e.kind == "split" and e.get("level") in ("1G", "2M"):
            level = LEVEL_1G if e.get("level") == "1G" else LEVEL_2M
            pfn = e.get("pfn")
            out.add((level, pfn - pfn % level))
    return out


def _stale_or_cached(k, first: int, npages: int) -> list[int]:
    return k.tlb_holders(first, npages)


class _Builder:
    """Builds one Digraph; node names are positional (``n1``, ``n2``...) so the same state gives the same DOT."""

    def __init__(self, k, marks, title, max_runs, max_nodes=None):
        self.k = k
        self.max_nodes = max_nodes
        self.pt = k.dmap.pt
        self.arch = k.arch
        self.marks = sorted(marks, key=lambda m: (m.pfn, m.label))
        self.starts = [m.pfn for m in self.marks]
        self.longest = max((m.npages for m in self.marks), default=1)
        self.max_runs = max_runs
        self.splits = _runtime_splits(k)
        self.count = 0
        self.g = Digraph(
            "direct_map",
            graph_attr={"rankdir": "LR", "bgcolor": "transparent", "nodesep": "0.08", "ranksep": "0.35",
                        "fontname": "Helvetica", "fontsize": "10", "fontcolor": TEXT, "pad": "0.05"},
            node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "9",
                       "fontcolor": TEXT, "color": BORDER, "margin": "0.06,0.03", "height": "0.3"},
            edge_attr={"color": EDGE, "arrowsize": "0.5"},
        )
        if title:
            # A title node (filled, so it reads on dark pages too) rather than a graph label.
            self.g.node("title", title, shape="plaintext", style="filled,rounded", fillcolor=FILL["summary"],
                        fontsize="10")

    # -- helpers ---------------------------------------------------------------------------------------------
    def new(self, label: str, **attrs) -> str:
        self.count += 1
        if self.max_nodes is not None and self.count > self.max_nodes:
            raise TooManyNodes(self.count)
        name = f"n{self.count}"
        self.g.node(name, label, **attrs)
        return name

    def marks_in(self, first: int, npages: int) -> list[Mark]:
        end = first + npages
        lo = bisect.bisect_left(self.starts, first - self.longest + 1)
        hi = bisect.bisect_left(self.starts, end)
        return [m for m in self.marks[lo:hi] if first < m.pfn + m.npages]

    def names(self, marks: list[Mark]) -> str:
        labels = list(dict.fromkeys(m.label for m in marks))  # first-seen order, linear in len(marks)
        if len(labels) <= 3:
            return ", ".join(labels)
        return f"{labels[0]} ... {labels[-1]} ({len(labels)} folios)"

    def leaf_word(self, level: int, prot: int) -> str:
        cont = bool(prot & CONT)
        if self.arch == "arm64":
            return {LEVEL_1G: "1G block", LEVEL_2M: "contPMD 2M block" if cont else "2M block",
                    LEVEL_4K: "contPTE 4K" if cont else "4K page"}[level]
        return f"{LEVEL_SIZE[level]} leaf"

    def tlb_line(self, first: int, npages: int, valid: bool) -> tuple[str, bool]:
        cpus = _stale_or_cached(self.k, first, npages)
        if not cpus:
            return "", False
        who = ",".join(str(c) for c in cpus)
        if valid:
            return f"\nin TLB of CPU {who}", False
        return f"\nSTALE in TLB of CPU {who}", True

    # -- the walk ----------------------------------------------------------------------------------------------
    def root(self) -> str:
        k = self.k
        base = k.dmap.page_offset()
        levels = k.dmap.levels_for_walk()
        upper = levels[:-3]  # everything above PUD
        parts = []
        for i, name in enumerate(upper):
            shift = 39 + 9 * (len(upper) - 1 - i)
            parts.append(f"{name}[{(base >> shift) & 511}]")
        desc = k.dmap.describe()
        # Kernel addresses as Documentation/arch/x86/x86_64/mm.rst and arm64/memory.rst print them: 16 hex digits.
        label = f"{' -> '.join(parts)} -> PUD table\n{desc} direct map, PAGE_OFFSET {base:016x}"
        return self.new(label, fillcolor=FILL["root"])

    def build(self):
        top = self.root()
        self.entries(top, LEVEL_1G, [(slot << 18, e) for slot, e in self.pt.items()])
        return self.g

    def entries(self, parent: str, level: int, items: list) -> None:
        """Draw the entries of one table: ``items`` is ``[(first_pfn, entry)]`` in index order."""
        shift = LEVEL_INDEX_SHIFT[level]
        runs: list[tuple[str, list]] = []  # ("mark", [item]) or ("rest", [items...])
        marked = self.marked_entries(level, items)
        for item in items:
            first, entry = item
            if entry == 0 and level != LEVEL_4K:
                continue
            if first in marked:
                runs.append(("mark", [item]))
            elif runs and runs[-1][0] == "rest":
                runs[-1][1].append(item)
            else:
                runs.append(("rest", [item]))
        if level == LEVEL_4K:
            runs = self.merge_pte_runs(runs)
        runs = self.fold(runs)
        for kind, group in runs:
            if kind == "rest":
                node = self.summary(level, shift, group)
            elif kind == "more":
                node = self.new(group, fillcolor=FILL["summary"], style="rounded,filled,dashed")
            else:
                node = self.entry(level, shift, group)
            self.g.edge(parent, node)

    def marked_entries(self, level: int, items: list) -> set[int]:
        """The first PFNs of the entries in ``items`` (level-aligned, in order) that overlap a mark: one pass
        over the marks in the table's span, not one mark search per entry."""
        if not items:
            return set()
        lo, hi = items[0][0], items[-1][0] + level
        out = set()
        for m in self.marks_in(lo, hi - lo):
            f = max(m.pfn, lo)
            f -= f % level
            end = min(m.pfn + m.npages, hi)
            while f < end:
                out.add(f)
                f += level
        return out

    def merge_pte_runs(self, runs):
        """At the PTE level, consecutive marked entries in the same state become one node."""
        out = []
        for kind, group in runs:
            if kind == "mark" and out and out[-1][0] == "mark":
                prev = out[-1][1]
                (p_first, p_prot), (first, prot) = prev[-1], group[0]
                same = (p_prot == prot and p_first + 1 == first
                        and bool(self.k.tlb_holders(p_first, 1)) == bool(self.k.tlb_holders(first, 1)))
                if same:
                    prev.append(group[0])
                    continue
            out.append((kind, list(group)))
        return out

    def fold(self, runs):
        marked = [i for i, (kind, _) in enumerate(runs) if kind == "mark"]
        if len(runs) <= self.max_runs or len(marked) <= 2:
            return runs
        keep_first, keep_last = marked[(self.max_runs // 2) - 1], marked[-(self.max_runs // 2)]
        middle = runs[keep_first + 1:keep_last]
        pages = sum(len(g) for kind, g in middle if kind == "mark")
        hidden = sum(1 for kind, _ in middle if kind == "mark")
        text = f"... {hidden} more marked runs\n({pages} entries) not drawn"
        return runs[:keep_first + 1] + [("more", text)] + runs[keep_last:]

    def index_range(self, level: int, shift: int, group) -> str:
        first_i = (group[0][0] >> shift) & 511
        last_i = (group[-1][0] >> shift) & 511
        name = LEVEL_TABLE[level]
        return f"{name}[{first_i}]" if first_i == last_i else f"{name}[{first_i}..{last_i}]"

    def summary(self, level: int, shift: int, group) -> str:
        counts: dict[str, int] = {}
        words: dict[int, str] = {}  # leaf value -> its words (a PTE table holds few distinct values)
        for first, entry in group:
            if type(entry) is not int:
                key = "split table" if (level, first) in self.splits else "table"
            else:
                key = words.get(entry)
                if key is None:
                    if not entry & MAPPED:
                        key = "empty"
                    elif entry & VALID:
                        key = f"{self.leaf_word(level, entry)} valid"
                    else:
                        key = f"{self.leaf_word(level, entry)} invalid"
                    words[entry] = key
            counts[key] = counts.get(key, 0) + 1
        text = ", ".join(f"{n} x {key}" for key, n in counts.items())
        return self.new(f"{self.index_range(level, shift, group)}\n{text}", fillcolor=FILL["summary"],
                        style="rounded,filled,dashed")

    def entry(self, level: int, shift: int, group) -> str:
        first, entry = group[0]
        npages = level * len(group)
        marks = self.marks_in(first, npages)
        where = self.index_range(level, shift, group)
        holder = f"\n{self.names(marks)}" if marks else ""
        border = {"color": FOLIO_BORDER, "penwidth": "2.5", "class": HIGHLIGHT} \
            if any(m.kind == "cached" for m in marks) else {}
        if type(entry) is not int:
            split = (level, first) in self.splits
            what = f"was a {LEVEL_SIZE[level]} leaf: split" if split else "table"
            node = self.new(f"{where} -> {LEVEL_TABLE[level // 512]} table\n{what}",
                            fillcolor=FILL["split" if split else "table"])
            children = self.children(level, first, entry)
            self.entries(node, level // 512, children)
            return node
        if not entry & MAPPED:
            return self.new(f"{where}\nempty", fillcolor=FILL["summary"])
        valid = bool(entry & VALID)
        tlb, stale = self.tlb_line(first, npages, valid)
        count = f"{len(group)} x " if len(group) > 1 else ""
        state = "valid" if valid else "INVALID"
        pfns = f"\npfn {first:#x}" if len(group) == 1 else f"\npfn {first:#x}..{first + npages - 1:#x}"
        fill = FILL[LEVEL_SIZE[level]] if valid else FILL["stale" if stale else "invalid"]
        style = "rounded,filled" if valid else "rounded,filled,bold"
        if not valid:
            border = {**border, "class": HIGHLIGHT}
        label = f"{where}\n{count}{self.leaf_word(level, entry)} {state}{pfns}{holder}{tlb}"
        return self.new(label, fillcolor=fill, style=style, **border)

    def children(self, level: int, first: int, table) -> list:
        step = level // 512
        return [(first + i * step, e) for i, e in enumerate(table)]


def pagetable_graph(target, marks=None, title: str = "", max_runs: int = MAX_RUNS,
                    max_nodes: int | None = None) -> Digraph:
    """The direct-map tree of ``target`` (a System or a Kernel) cut down to ``marks``.

    ``marks``: a list of :class:`Mark` or ``(label, pfn[, npages])`` tuples; by default, for a System, every
    cached folio and every folio freed so far (:func:`folio_marks`); for a Kernel, none (only summaries).
    ``max_nodes``: raise :class:`TooManyNodes` as soon as the tree needs more page-table nodes than that
    (the title node does not count), before anything is laid out."""
    k = getattr(target, "k", target)
    if marks is None:
        marks = folio_marks(target) if hasattr(target, "files") else []
    clean = [m if isinstance(m, Mark) else Mark(*m) for m in marks]
    return _Builder(k, clean, title, max_runs, max_nodes).build()


#: The SVG class of the nodes a diagram is about: a leaf mapping a cached folio, an invalid (zapped) leaf.
HIGHLIGHT = "nbmodel-hl"


def fit_svg(svg_text: str) -> str:
    """Let an inline graphviz SVG shrink to its column (JupyterLab and the book): ``max-width:100%`` and an
    automatic height keep the aspect ratio from the viewBox, so the whole tree, highlighted nodes included, is
    on screen. The width/height attributes stay: they are the natural size the book's zoom view opens at."""
    if 'class="nbmodel-fit"' in svg_text[:200]:
        return svg_text
    return svg_text.replace("<svg ", '<svg class="nbmodel-fit" style="max-width:100%;height:auto" ', 1)


def pagetable_svg(target, marks=None, title: str = "", max_runs: int = MAX_RUNS) -> str:
    """:func:`pagetable_graph` rendered to inline SVG text (deterministic bytes) that fits its column."""
    return fit_svg(svg(pagetable_graph(target, marks, title, max_runs)))


def _fitted(d: Diagram) -> Diagram:
    d.svg = fit_svg(d.svg)
    return d


def pagetable_diagram(target, marks=None, title: str = "", max_runs: int = MAX_RUNS) -> Diagram:
    """:func:`pagetable_graph` as a :class:`~nbmodel.viz.dot.Diagram`: the last expression of a cell shows it
    inline (text/html with the <svg> in it), fitted to its column."""
    return _fitted(Diagram(pagetable_graph(target, marks, title, max_runs), title=title or "direct-map page table"))


def legend_graph() -> Digraph:
    """One node per colour the view uses, in a row."""
    g = Digraph("legend", graph_attr={"rankdir": "LR", "bgcolor": "transparent", "nodesep": "0.08", "pad": "0.05"},
                node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "9",
                           "fontcolor": TEXT, "color": BORDER, "margin": "0.06,0.03", "height": "0.3"},
                edge_attr={"style": "invis"})
    items = [
        ("l1", "1G leaf\nvalid", {"fillcolor": FILL["1G"]}),
        ("l2", "2M leaf\nvalid", {"fillcolor": FILL["2M"]}),
        ("l3", "4K leaf\nvalid", {"fillcolor": FILL["4K"]}),
        ("l4", "leaf INVALID\n(zapped)", {"fillcolor": FILL["invalid"], "style": "rounded,filled,bold"}),
        ("l5", "INVALID but\nSTALE in a TLB", {"fillcolor": FILL["stale"], "style": "rounded,filled,bold"}),
        ("l6", "table: a large leaf\nsplit at run time", {"fillcolor": FILL["split"]}),
        ("l7", "table built\nat boot", {"fillcolor": FILL["table"]}),
        ("l8", "siblings folded\ninto one node", {"fillcolor": FILL["summary"], "style": "rounded,filled,dashed"}),
        ("l9", "maps a folio in\na page cache", {"fillcolor": FILL["4K"], "color": FOLIO_BORDER, "penwidth": "2.5"}),
    ]
    for name, label, attrs in items:
        g.node(name, label, **attrs)
    for (a, _, _), (b, _, _) in zip(items, items[1:], strict=False):
        g.edge(a, b)
    return g


def legend_svg() -> str:
    return fit_svg(svg(legend_graph()))


def legend_diagram() -> Diagram:
    return _fitted(Diagram(legend_graph(), title="page-table view legend"))


def side_by_side_html(panels: list[tuple[str, str]]) -> str:
    """``[(caption, svg_text)]`` laid out in a row that wraps on narrow pages (captions on a light chip)."""
    cells = []
    for caption, svg_text in panels:
        cells.append(
            '<figure style="margin:0 12px 12px 0;flex:1 1 300px;min-width:0;max-width:100%">'
            f'<figcaption style="display:inline-block;background:#f2f2f2;color:{TEXT};padding:2px 6px;'
            f'border-radius:4px;font-size:0.85em;margin-bottom:4px">{html.escape(caption)}</figcaption>'
            f"\n{fit_svg(svg_text)}</figure>")
    return '<div class="nbmodel-diagram" style="display:flex;flex-wrap:wrap;align-items:flex-start">\n' + \
        "\n".join(cells) + "\n</div>"


def before_after(k, action, marks, label: str = "after", counters=None) -> str:
    """Draw ``k``'s tree, run ``action(k)`` (any calls on the kernel), draw it again; returns HTML with both
    diagrams side by side, the events ``action`` produced as a timeline, and the counters it changed."""
    from nbmodel.viz import state_view as sv

    before = svg(pagetable_graph(k, marks))
    start, counts = len(k.trace), dict(k.counters)
    action(k)
    after = svg(pagetable_graph(k, marks))
    delta = k.counters.delta(counts)
    names = counters or [n for n in k.counters if n in delta]
    events = f'<div style="font-size:0.82em;margin:4px 0">{sv.timeline(k.trace[start:], limit=24)}</div>'
    table = sv.counters_table(k, names=names, delta=delta, caption=f"counters {label} changed") if names else ""
    return side_by_side_html([("before", before), (label, after)]) + events + table


__all__ = ["Mark", "TooManyNodes", "folio_marks", "pagetable_graph", "pagetable_svg", "fit_svg", "HIGHLIGHT",
           "pagetable_diagram", "legend_graph", "legend_svg", "legend_diagram", "side_by_side_html", "before_after",
           "FILL"]
