"""The v12 series as data, and diagrams of how it could land (Path A and Path B).

Sources: the v12 cover letter "[PATCH v12 00/16] Direct Map Removal Support for guest_memfd" (Nikita Kalyazin,
2026-04-10) for the patch subjects, files and authors; Takahiro Itazuri's mail of 2026-05-06 for the split
("patches 1-6 (mm) going through the mm tree and patches 7-16 (KVM) through the KVM tree on top of a stable
branch/tag from mm"); the seed mail of 2026-05-08 for Path A and Path B. Subjects of the selftest patches
(11-16) are summaries, not the exact subject lines.

The *dependency* edges between patches are **inferences** from what each patch touches and uses (a patch
that calls ``folio_zap_direct_map()`` needs the patch that adds it); the series itself only gives an order.
Every edge says why it is there, and :data:`INFERRED` marks which ones are inferred.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from nbmodel.viz.dot import Digraph

__all__ = ["ALLOC_UNMAPPED", "Patch", "PATCHES", "DEPENDS", "INFERRED", "REWORK", "PATHS", "STABLE_BRANCH_NOTE",
           "STYLE", "by_tree", "patch", "series_graph", "paths_graph", "table_html"]


@dataclass(frozen=True)
class Patch:
    """One patch of the v12 series."""

    number: int
    subject: str
    kind: str        # "mm", "KVM" or "selftest"
    tree: str        # the tree it goes through under the split plan: "mm" or "KVM"
    files: tuple
    author: str

    @property
    def label(self) -> str:
        return f"{self.number:02d}"

    @property
    def exact(self) -> bool:
        """Whether :attr:`subject` is the posted subject line (01-10) or a summary (the selftests, 11-16)."""
        return self.kind != "selftest"


_K, _R = "Nikita Kalyazin", "Patrick Roy"
PATCHES = (
    Patch(1, "set_memory: set_direct_map_* to take address", "mm", "mm",
          ("arch/*/mm/pageattr.c", "include/linux/set_memory.h", "kernel/power/snapshot.c", "mm/execmem.c",
           "mm/secretmem.c", "mm/vmalloc.c"), _K),
    Patch(2, "set_memory: add folio_{zap,restore}_direct_map probes", "mm", "mm",
          ("include/linux/set_memory.h", "mm/memory.c"), _K),
    Patch(3, "mm/secretmem: make use of folio_{zap,restore}_direct_map", "mm", "mm", ("mm/secretmem.c",), _K),
    Patch(4, "mm/gup: drop secretmem optimization from gup_fast_folio_allowed", "mm", "mm", ("mm/gup.c",), _R),
    Patch(5, "mm/gup: drop local variable in gup_fast_folio_allowed", "mm", "mm", ("mm/gup.c",), _K),
    Patch(6, "mm: introduce AS_NO_DIRECT_MAP", "mm", "mm",
          ("include/linux/pagemap.h", "include/linux/secretmem.h", "lib/buildid.c", "mm/gup.c", "mm/mlock.c",
           "mm/secretmem.c"), _R),
    Patch(7, "KVM: guest_memfd: Add stub for kvm_arch_gmem_invalidate", "KVM", "KVM",
          ("include/linux/kvm_host.h",), _R),
    Patch(8, "KVM: x86: define kvm_arch_gmem_supports_no_direct_map()", "KVM", "KVM",
          ("arch/x86/kvm/x86.c", "arch/x86/include/asm/kvm_host.h"), _R),
    Patch(9, "KVM: arm64: define kvm_arch_gmem_supports_no_direct_map()", "KVM", "KVM",
          ("arch/arm64/include/asm/kvm_host.h",), _R),
    Patch(10, "KVM: guest_memfd: Add flag to remove from direct map", "KVM", "KVM",
          ("Documentation/virt/kvm/api.rst", "include/linux/kvm_host.h", "include/uapi/linux/kvm.h",
           "virt/kvm/guest_memfd.c"), _R),
    Patch(11, "selftests: load guest ELF images via a bounce buffer", "selftest", "KVM",
          ("tools/testing/selftests/kvm/",), _R),
    Patch(12, "selftests: KVM_MEM_GUEST_MEMFD in vm_mem_add()", "selftest", "KVM",
          ("tools/testing/selftests/kvm/",), _R),
    Patch(13, "selftests: guest_memfd backing types incl. VM_MEM_SRC_GUEST_MEMFD_NO_DIRECT_MAP", "selftest", "KVM",
          ("tools/testing/selftests/kvm/",), _R),
    Patch(14, "selftests: cover GUEST_MEMFD_FLAG_NO_DIRECT_MAP in existing tests", "selftest", "KVM",
          ("tools/testing/selftests/kvm/",), _R),
    Patch(15, "selftests: vm_shape for the new backing types", "selftest", "KVM",
          ("tools/testing/selftests/kvm/",), _R),
    Patch(16, "selftests: guest execution from direct-map-removed guest_memfd", "selftest", "KVM",
          ("tools/testing/selftests/kvm/",), _R),
)

#: ``(needed, needing) -> why``: patch ``needing`` uses something patch ``needed`` adds or changes.
DEPENDS = {
    (1, 2): "the probes call set_direct_map_valid_noflush() with the address-based signature of 01",
    (2, 3): "secretmem switches to folio_zap_direct_map() / folio_restore_direct_map()",
    (4, 5): "both edit gup_fast_folio_allowed()",
    (5, 6): "06 rewrites the secretmem check left in gup_fast_folio_allowed()",
    (3, 6): "06 makes secretmem set AS_NO_DIRECT_MAP in mm/secretmem.c",
    (2, 10): "kvm_gmem_folio_zap_direct_map() calls folio_zap_direct_map()",
    (6, 10): "__kvm_gmem_create() calls mapping_set_no_direct_map()",
    (7, 10): "kvm_gmem_free_folio() calls kvm_arch_gmem_invalidate() before the restore",
    (8, 10): "the flag is offered only if kvm_arch_gmem_supports_no_direct_map() (x86)",
    (9, 10): "the flag is offered only if kvm_arch_gmem_supports_no_direct_map() (arm64)",
    (10, 13): "the NO_DIRECT_MAP backing type creates guest_memfd with the new flag",
    (12, 13): "guest_memfd backing types need vm_mem_add() to take a guest_memfd",
    (13, 14): "existing tests are run with the new backing types",
    (13, 15): "vm_shape carries the backing type",
    (15, 16): "the guest-execution test creates its VM from a vm_shape",
    (11, 16): "a guest whose memory has no direct map is loaded through a bounce buffer",
}
#: Every edge of :data:`DEPENDS` is inferred from the patches' contents, none is stated by the series.
INFERRED = frozenset(DEPENDS)

#: What the filemap-level rework would change (all inferred from the seed mail and Jackman's prototype,
#: ``bjackman/linux`` e267797c): a new mm patch with the page-cache hooks, and a smaller patch 10.
REWORK = {
    "new_mm": ("mm/filemap: zap/restore AS_NO_DIRECT_MAP folios in filemap_add_folio() / "
               "filemap_remove_folio() / delete_from_page_cache_batch()"),
    "patch10": "10 keeps the flag and mapping_set_no_direct_map(); loses the folio->private bit and its zap/restore",
    "patch3": "03: secretmem only grabs the folio; the page cache zaps, restores and zeroes",
}

#: The two ways to land it, as the seed mail describes them: ordered steps, each ``(who, what)``.
PATHS = {
    "A": (
        ("author", "v13 as one series (filemap hooks included) on the KVM list"),
        ("KVM reviewers", "agree on the design and the ABI"),
        ("author", "split: rebase the mm part on an mm branch, post it to linux-mm"),
        ("mm maintainers", "review and take the mm part"),
        ("KVM tree", "take the KVM part on top of the mm part"),
    ),
    "B": (
        ("author", "split now: post the mm part (filemap hooks included) to linux-mm"),
        ("mm maintainers", "review the mm part while KVM reviewers look at the KVM part"),
        ("mm tree", "take the mm part"),
        ("KVM tree", "take the KVM part on top of the mm part"),
    ),
}

#: Brendan Jackman's ``ALLOC_UNMAPPED`` series (v4, 26 patches, on mm-new per his backport notes in
#: ``bjackman/linux``): ``(first, last, what, v12 patch it carries or None)``. Its first three patches carry the
#: subjects of v12 02, 03 and 06; patch 26 is the fast path for ``AS_NO_DIRECT_MAP``.
ALLOC_UNMAPPED = (
    (1, 1, "set_memory: add folio_{zap,restore}_direct_map probes", 2),
    (2, 2, "mm/secretmem: make use of folio_{zap,restore}_direct_map", 3),
    (3, 3, "mm: introduce AS_NO_DIRECT_MAP (the slow path)", 6),
    (4, 8, "x86: an mm-local address region", None),
    (9, 12, "the mermap: per-CPU, per-mm temporary mappings", None),
    (13, 15, "freetypes: free lists by migratetype and flags", None),
    (16, 25, "ALLOC_UNMAPPED: pageblocks handed out already unmapped", None),
    (26, 26, "mm: add fast path for AS_NO_DIRECT_MAP", None),
)

#: Colours that read on light and dark pages: light fills with dark text, mid-grey lines and labels.
STYLE = {
    "mm": "#cfe3f7",
    "KVM": "#f9dcc4",
    "selftest": "#e4e4e4",
    "new": "#d8f0d0",
    "line": "#8a8a8a",
    "text": "#1a1a1a",
}


def patch(number: int) -> Patch:
    """The patch with this number (1 to 16)."""
    for p in PATCHES:
        if p.number == number:
            return p
    raise KeyError(f"v12 has patches 1 to 16, not {number!r}")


def by_tree() -> dict[str, list[int]]:
    """``{"mm": [1..6], "KVM": [7..16]}``: which tree takes which patches under the split plan."""
    out: dict[str, list[int]] = {"mm": [], "KVM": []}
    for p in PATCHES:
        out[p.tree].append(p.number)
    return out


def _graph(name: str, rankdir: str = "LR") -> Digraph:
    return Digraph(name, graph_attr={"rankdir": rankdir, "bgcolor": "transparent", "fontname": "Helvetica",
                                     "fontcolor": STYLE["line"], "fontsize": "11", "nodesep": "0.15",
                                     "ranksep": "0.35"},
                   node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "10",
                              "fontcolor": STYLE["text"], "color": STYLE["line"]},
                   edge_attr={"color": STYLE["line"], "fontcolor": STYLE["line"], "fontname": "Helvetica",
                              "fontsize": "9", "arrowsize": "0.6"})


def _short(subject: str, width: int = 34) -> str:
    words, lines, line = subject.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines)


def series_graph(rework: bool = False) -> Digraph:
    """The 16 patches grouped by the tree that takes them, with the (inferred) dependency edges.

    ``rework=True`` adds what the filemap-level design would change (dashed: an inference, not a posting).
    """
    g = _graph("v12_series" + ("_rework" if rework else ""), rankdir="TB")
    groups = (("mm", "mm tree (01-06)", ("mm",)), ("KVM", "KVM tree (07-16, selftests included)", ("KVM", "selftest")))
    for tree, title, kinds in groups:
        with g.subgraph(name=f"cluster_{tree}") as c:
            c.attr(label=title, style="rounded,dashed", color=STYLE["line"], fontcolor=STYLE["line"])
            for p in PATCHES:
                if p.kind in kinds:
                    c.node(p.label, f"{p.label}  {_short(p.subject)}", fillcolor=STYLE[p.kind])
            if rework and tree == "mm":
                c.node("new", "new  " + _short(REWORK["new_mm"], 40), fillcolor=STYLE["new"],
                       style="rounded,filled,dashed")
    for (a, b) in DEPENDS:
        cross = patch(a).tree != patch(b).tree
        g.edge(f"{a:02d}", f"{b:02d}", penwidth="2" if cross else "1")
    if rework:
        g.edge("02", "new", style="dashed")
        g.edge("06", "new", style="dashed")
        g.edge("new", "10", style="dashed", penwidth="2", label="replaces the zap/restore\nin 10")
    return g


#: The constraint both paths meet at their last step (Ackerley Tng, 2026-05-14, relaying Vlastimil Babka).
STABLE_BRANCH_NOTE = ("the mm tree \"cannot do stable branches shared between trees now\"\n"
                      "(Vlastimil, via Ackerley, 2026-05-14)\n"
                      "inference: the KVM part waits until the mm part is in mainline")


def paths_graph(notes: bool = True) -> Digraph:
    """Path A and Path B side by side, from v12 to both parts merged; ``notes`` adds the stable-branch
    constraint both last steps meet."""
    g = _graph("landing_paths", rankdir="TB")
    g.node("v12", "v12 (2026-04-10)\nper-folio zap/restore in guest_memfd", fillcolor=STYLE["selftest"])
    g.node("rework", "filemap-level rework\n(agreed in the thread, 2026-05-08)", fillcolor=STYLE["new"])
    g.edge("v12", "rework")
    for path in PATHS:
        with g.subgraph(name=f"cluster_{path}") as c:
            c.attr(label=f"Path {path}", style="rounded,dashed", color=STYLE["line"], fontcolor=STYLE["line"])
            prev = "rework"
            for i, (who, what) in enumerate(PATHS[path]):
                node = f"{path}{i}"
                fill = STYLE["KVM"] if "KVM" in who else STYLE["mm"] if "mm" in who else STYLE["selftest"]
                c.node(node, f"{who}:\n{_short(what, 30)}", fillcolor=fill)
                g.edge(prev, node)
                prev = node
    if notes:
        g.node("note", STABLE_BRANCH_NOTE, shape="note", fillcolor=STYLE["selftest"], style="filled")
        for path in PATHS:
            g.edge(f"{path}{len(PATHS[path]) - 1}", "note", style="dashed", arrowhead="none")
    return g


_TABLE = (f"border-collapse:collapse;background:#fbfbfb;color:{STYLE['text']};font-size:0.85em;"
          "margin:2px 0 8px 0")
_CELL = "padding:2px 6px;border:1px solid #d8d8d8;vertical-align:top;text-align:left"
_HEAD = f"{_CELL};background:#e6e6e6;color:{STYLE['text']}"
_CODE = f"background:#eceef1;color:{STYLE['text']};padding:0 0.2em;font-size:0.95em"


def table_html() -> str:
    """The patch list as an HTML table: number, subject, kind, tree under the split plan, author.

    Inline styles (a light table with dark text) so it reads the same on a light or a dark page."""
    heads = "".join(f'<th style="{_HEAD}">{h}</th>' for h in ("#", "subject", "kind", "tree", "author"))
    rows = [f'<table class="nbmodel-patches" style="{_TABLE}">', f"<thead><tr>{heads}</tr></thead>", "<tbody>"]
    for p in PATCHES:
        subject = (f'<code style="{_CODE}">{html.escape(p.subject)}</code>' if p.exact
                   else f"{html.escape(p.subject)} (summary)")
        fill = STYLE[p.kind]
        cells = [f'<td style="{_CELL}">{p.label}</td>', f'<td style="{_CELL}">{subject}</td>',
                 f'<td style="{_CELL};background:{fill}">{p.kind}</td>', f'<td style="{_CELL}">{p.tree}</td>',
                 f'<td style="{_CELL};white-space:nowrap">{html.escape(p.author)}</td>']
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)
