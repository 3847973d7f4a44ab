"""The seed mail's review of guest_memfd's population paths, as one table computed by running each path under each
design.

Takahiro Itazuri's reply (2026-05-08) goes through every way guest memory gets its first contents and asks whether
the filemap-level invariant (no direct map while the folio is in the page cache) gets in its way:

- memcpy from the VMM through its own mapping of guest_memfd: not through the direct map, so unaffected, but slow;
- ``write()`` (an unmerged series): a copy *in the kernel*, which needs some kernel mapping; the mermap would give
  one, and "mermap is not a blocker" because this series does not add ``write()``;
- ``kvm_gmem_populate()``: SNP/TDX only, and ``NO_DIRECT_MAP`` is refused for those VM types.

:func:`review` runs each path as a short script of :class:`nbmodel.system.System` steps under each design and
reports what the last step returned, which mapping the copy went through (read from the step's events), and any
invariant it broke. It uses only System's public interface (the constructor, :meth:`~nbmodel.system.System.step`,
:meth:`~nbmodel.system.System.invariant_status`), so it describes the designs without reaching into them. No view
library: :func:`review_markdown` renders the table as Markdown text.
"""

from __future__ import annotations

from dataclasses import dataclass

from .system import System

#: ``(name, System keyword arguments)``: the columns.
DESIGNS = (
    ("per-folio (v12)", {"design": "per-folio"}),
    ("filemap", {"design": "filemap"}),
    ("filemap + mermap write()", {"design": "filemap", "write": "mermap"}),
    ("secretmem pattern", {"design": "secretmem"}),
)

_NDM = ["MMAP", "INIT_SHARED", "NO_DIRECT_MAP"]


@dataclass(frozen=True)
class Path:
    """One population path: a name, what the seed mail says about it, and the steps (the last one is judged)."""

    name: str
    seed_says: str
    steps: tuple


#: The rows, in the order of the seed mail's review.
PATHS = (
    Path("memcpy through the VMM's mapping", "does not go through the direct map; unaffected, but slow",
         ({"op": "gmem_create", "file": "g", "size": "64K", "flags": _NDM},
          {"op": "user_fault", "file": "g", "offset": 0})),
    Path("write() to a new page", "needs temporary kernel access: the mermap; not a blocker for this series",
         ({"op": "gmem_create", "file": "g", "size": "64K", "flags": _NDM},
          {"op": "write", "file": "g", "offset": 0})),
    Path("write() to the same page again", "Sean: with per-folio zapping, userspace can write() exactly once",
         ({"op": "gmem_create", "file": "g", "size": "64K", "flags": _NDM},
          {"op": "write", "file": "g", "offset": 0},
          {"op": "write", "file": "g", "offset": 0})),
    Path("write() after the VMM faulted the page", "the write() series: pages already removed from the direct map "
         "are refused",
         ({"op": "gmem_create", "file": "g", "size": "64K", "flags": _NDM},
          {"op": "user_fault", "file": "g", "offset": 0},
          {"op": "write", "file": "g", "offset": 0})),
    Path("kvm_gmem_populate(), SNP, NO_DIRECT_MAP", "refused for SNP/TDX VMs, its only callers",
         ({"op": "gmem_create", "file": "g", "size": "64K", "flags": ["NO_DIRECT_MAP"], "vm_type": "snp"},)),
    Path("kvm_gmem_populate(), SNP, direct map kept", "copies with kmap_local_page() + memcpy: through the direct "
         "map",
         ({"op": "gmem_create", "file": "g", "size": "64K", "flags": [], "vm_type": "snp"},
          {"op": "populate", "file": "g", "offset": 0})),
)


@dataclass(frozen=True)
class Cell:
    """What one path did under one design: the last step's result, the mapping its copy went through, the
    direct-map zaps it caused, and the invariants it broke (names)."""

    result: str
    via: str
    zaps: int
    broken: tuple

    def text(self) -> str:
        out = self.result + (f", via {self.via}" if self.via else "")
        if self.zaps:
            out += f", {self.zaps} zap" + ("s" if self.zaps > 1 else "")
        if self.broken:
            out += "; breaks " + ", ".join(self.broken)
        return out


def _via(step) -> str:
    """Which mapping the step's copy went through, read from its events."""
    kinds = [(e.kind, e.get("what")) for e in step.events]
    if any(kind == "mermap" for kind, _ in kinds):
        return "mermap"
    if any(kind == "access" and what in ("write", "populate") for kind, what in kinds):
        return "direct map"
    if step.op == "user_fault" and step.result == "0":
        return "VMM's mapping"
    return ""


def run_path(path: Path, system: dict) -> Cell:
    """Run one path on a fresh :class:`~nbmodel.system.System` built with ``system`` keyword arguments."""
    s = System(seed=0, **system)
    steps = [s.step(**dict(st)) for st in path.steps]
    last = steps[-1]
    broken = tuple(sorted(name for name, status in s.invariant_status().items() if status.startswith("broken")))
    zaps = sum(e.kind == "zap" for e in last.events)
    return Cell(last.result, _via(last), zaps, broken)


def review(paths=PATHS, designs=DESIGNS) -> list[tuple[Path, list[Cell]]]:
    """Every path under every design: ``[(path, [cell per design])]``."""
    return [(p, [run_path(p, kw) for _, kw in designs]) for p in paths]


def review_markdown(paths=PATHS, designs=DESIGNS) -> str:
    """The review as a Markdown table: one row per path, the seed mail's verdict, one column per design."""
    head = ["path", "the seed mail (or the series it cites)"] + [name for name, _ in designs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path, cells in review(paths, designs):
        lines.append("| " + " | ".join([path.name, path.seed_says] + [c.text() for c in cells]) + " |")
    return "\n".join(lines)


__all__ = ["DESIGNS", "PATHS", "Path", "Cell", "run_path", "review", "review_markdown"]
