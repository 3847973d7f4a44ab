"""Two cases from the thread the designs are judged on, run under each design: Frank van der Linden's memory that
was never in the direct map, and Sean Christopherson's "dedicated variants of kmap_local_xxx()" for
``kvm_gmem_populate()``.

- Frank (2026-04-21, Message-ID ``CAPTztWb67XZvfcMVnbegDNNW0LJa9UsaTGx3M898xJUJrekk0w@mail.gmail.com``): "this
  approach would also allow for memory that was never in the direct map to begin with". :data:`FRANK` runs a
  guest_memfd on a machine whose ``NO_DIRECT_MAP`` folios come from an unmapped source (option
  ``unmapped_source``: :func:`nbmodel.designs.alloc_unmapped_folio`, the slow form of Brendan Jackman's
  ``ALLOC_UNMAPPED``).
- Sean (2026-04-21, Message-ID ``aeemS2wm38Cm4qAf@google.com``): "KVM could use dedicated variants of
  kmap_local_xxx() to deal with a local mapping for a folio/page without a direct map". :data:`SEAN` populates an
  SNP guest_memfd with ``NO_DIRECT_MAP``, which mainline refuses; the what-if option ``snp_no_direct_map`` allows
  it, and ``populate="mermap"`` makes the copy go through a mermap window.

Like :mod:`nbmodel.population`, every cell is computed by running :class:`nbmodel.system.System` through its
public interface (the constructor, :meth:`~nbmodel.system.System.step`,
:meth:`~nbmodel.system.System.invariant_status` and the step records); nothing here decides an outcome. No view
library: the tables are Markdown text.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ModelInputError
from .system import System

#: Frank's case: a file whose folios arrive unmapped, faulted by the VMM, then punched out.
FRANK = (
    {"op": "gmem_create", "file": "g", "size": "64K"},
    {"op": "fallocate", "file": "g", "len": "16K"},
    {"op": "user_fault", "file": "g", "offset": 0},
    {"op": "punch_hole", "file": "g", "offset": 0, "len": "16K"},
)

#: Sean's case: an SNP guest_memfd with NO_DIRECT_MAP, populated at launch, then faulted in by the guest.
SEAN = (
    {"op": "gmem_create", "file": "g", "size": "64K", "flags": ["NO_DIRECT_MAP"], "vm_type": "snp"},
    {"op": "populate", "file": "g", "offset": 0},
    {"op": "guest_fault", "file": "g", "offset": 0},
    {"op": "close", "file": "g"},
)

DESIGN_NAMES = (("per-folio (v12)", "per-folio"), ("filemap", "filemap"), ("secretmem pattern", "secretmem"))

#: Sean's rows: (label, System keyword arguments besides the design).
SEAN_OPTIONS = (
    ("mainline", {}),
    ("what-if, kmap_local populate", {"snp_no_direct_map": True}),
    ("what-if, mermap populate", {"snp_no_direct_map": True, "populate": "mermap"}),
)


@dataclass(frozen=True)
class Run:
    """One script under one configuration: each step's result, the step's counter changes summed, how the
    folios were zeroed and copied (read from the events), and the invariants broken, with the step."""

    results: tuple
    counters: dict
    zeroed: str
    copied: str
    broken: tuple


def _how(events, kind: str) -> str:
    """Through which mapping the ``zero`` events (kind "zero") or populate copies (kind "populate") went."""
    ways = []
    for e in events:
        if kind == "zero" and e.kind == "zero":
            ways.append("mermap" if e.get("via") == "mermap" else "direct map")
        elif kind == "populate" and e.get("what") == "populate" and e.kind in ("mermap", "access", "oops"):
            ways.append("mermap" if e.kind == "mermap" else "direct map")
    return ", ".join(dict.fromkeys(ways)) or "-"


def run(script, **system) -> Run:
    """Run ``script`` (a sequence of step dicts) on a fresh System built with ``seed=0`` and ``system``; a create
    that fails ends the run (the later steps would name a file that does not exist)."""
    s = System(seed=0, **system)
    steps = []
    for st in script:
        steps.append(s.step(**dict(st)))
        if st["op"].endswith("_create") and steps[-1].result != "0":
            break
    counters: dict = {}
    for st in steps:
        for name, delta in st.counters.items():
            counters[name] = counters.get(name, 0) + delta
    events = [e for st in steps for e in st.events]
    broken = tuple(f"{name} ({status[len('broken at '):]})" for name, status in s.invariant_status().items()
                   if status.startswith("broken"))
    return Run(tuple(st.result for st in steps), counters, _how(events, "zero"), _how(events, "populate"), broken)


def frank_runs() -> list[tuple[str, Run]]:
    """:data:`FRANK` with ``unmapped_source=True`` under each design."""
    return [(label, run(FRANK, design=d, unmapped_source=True)) for label, d in DESIGN_NAMES]


def sean_runs() -> list[tuple[str, str, Run]]:
    """:data:`SEAN` under each design and each row of :data:`SEAN_OPTIONS`."""
    return [(label, opt, run(SEAN, design=d, **kw)) for label, d in DESIGN_NAMES for opt, kw in SEAN_OPTIONS]


def _broken(r: Run) -> str:
    return ", ".join(r.broken) or "none"


def frank_markdown() -> str:
    """Frank's case as a Markdown table, one row per design."""
    head = ["design", "fallocate", "VMM fault", "punch hole", "pageblocks zapped", "folio zaps", "zeroed via",
            "oops", "invariants broken (step)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in frank_runs():
        c = r.counters
        row = [label, *r.results[1:], str(c.get("unmapped_pageblocks", 0)), str(c.get("zaps", 0)), r.zeroed,
               str(c.get("oops", 0)), _broken(r)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def sean_markdown() -> str:
    """Sean's case as a Markdown table, one row per design and option."""
    head = ["design", "configuration", "create", "populate", "copy via", "guest fault", "oops",
            "invariants broken (step)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, opt, r in sean_runs():
        res = list(r.results) + ["-"] * (len(SEAN) - len(r.results))
        row = [label, opt, res[0], res[1] if res[0] == "0" else "-", r.copied if res[0] == "0" else "-",
               res[2] if res[0] == "0" else "-", str(r.counters.get("oops", 0)), _broken(r)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def mermap_populate_flushes(pages: int = 1024) -> dict:
    """Populate ``pages`` pages of an SNP ``NO_DIRECT_MAP`` file through the mermap (filemap design, the what-if),
    after ``fallocate()`` has put every folio in the page cache (zapped and flushed there): what the copies
    themselves cost in flushes, the mermap's local ones against kernel TLB flushes. This is the model's answer
    to Ackerley Tng's question whether guest_memfd needs a TLB flush after mermap+memcpy."""
    if type(pages) is not int or not 1 <= pages <= 4096:
        raise ModelInputError(f"pages must be an integer from 1 to 4096, not {pages!r}")
    s = System(seed=0, design="filemap", snp_no_direct_map=True, populate="mermap")
    s.step("gmem_create", file="g", size=pages * 4096, flags=["NO_DIRECT_MAP"], vm_type="snp")
    s.step("fallocate", file="g", len=pages * 4096)
    steps = [s.step("populate", file="g", offset=i * 4096) for i in range(pages)]
    total = {n: sum(st.counters.get(n, 0) for st in steps)
             for n in ("mermap_maps", "mermap_local_flushes", "tlb_flushes", "tlb_full_flushes", "ipis", "oops")}
    return {"pages": pages, **total}


__all__ = ["FRANK", "SEAN", "SEAN_OPTIONS", "Run", "run", "frank_runs", "sean_runs", "frank_markdown",
           "sean_markdown", "mermap_populate_flushes"]
