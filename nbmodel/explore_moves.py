"""What the explorer looks for and the moves it makes: the properties (the invariants and the observations
a step can show), the operations per file, and a move (one operation on one page, optionally with a racing
read at an interrupt point).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .designs import DESIGNS
from .explore_state import (
    GMEM,
    Space,
)
from .invariants import INVARIANTS
from .system import INTERRUPT_POINTS
from .units import PAGE_SHIFT, human


@dataclass(frozen=True)
class Property:
    """Something the search checks: a model invariant (a state predicate) or an observation of one step."""

    key: str
    name: str
    kind: str            # "invariant": checked on states; "observation": on steps; "goal": wanted reachable
    text: str
    designs: tuple = DESIGNS


def _invariant_properties() -> dict:
    return {k: Property(k, inv.name, "invariant", inv.why.split(". ")[0] + ".", inv.designs)
            for k, inv in INVARIANTS.items()}


PROPERTIES = {
    **_invariant_properties(),
    "leak": Property("leak", "guest_data_read_through_direct_map", "observation",
                     "A CPU reads guest data through the direct map (a read or a racing read returns ok or "
                     "stale on a page holding guest-secret, guest-image or secret)."),
    "oops": Property("oops", "kernel_path_oops", "observation",
                     "A kernel path of the model itself (zeroing, write(), a migration copy) faults on a "
                     "direct-map hole; reads the search makes on purpose do not count."),
    "warn": Property("warn", "warn_on", "observation", "A WARN_ON_ONCE fires (a set_direct_map_* call failed)."),
    "eperm": Property("eperm", "write_refused_after_zap", "goal",
                      "write() returns EPERM: per-folio's 'userspace can write() exactly once'."),
}


#: Which break-it switch is expected to show itself as which property (used by the tests and the book).
SWITCH_FINDS = {"skip_flush": "a", "zero_after_insert": "oops", "restore_4k": "c", "arm64_no_bbml2": "warn",
                "unhooked_migration": "a", "put_before_restore": "b"}


GMEM_OPS = ("fallocate", "punch_hole", "user_fault", "guest_fault", "write", "migrate", "replace", "race_add")


SECRET_OPS = ("secret_fault", "secret_fault+race", "migrate", "replace")


SIZED_OPS = ("fallocate", "punch_hole", "write")


@dataclass(frozen=True)
class Move:
    """One operation the search can take: an op on a file index, maybe with a racing read by another CPU."""

    op: str
    file: str
    index: int | None = None
    cpu: int | None = None
    at: str | None = None
    icpu: int | None = None

    def step(self, space: Space) -> dict:
        """The ``System.step`` arguments (sizes as strings) for this move."""
        if self.op in ("gmem_create", "secret_create"):
            return space.create_step(self.file)
        out = {"op": "secret_fault" if self.op == "secret_fault+race" else self.op, "file": self.file}
        if self.index is not None and self.op != "close":
            out["offset"] = human(self.index << PAGE_SHIFT)
        if self.op in SIZED_OPS:
            out["len"] = "4K"
        if self.op == "secret_fault+race":
            out["race"] = True
        if self.cpu is not None:
            out["cpu"] = self.cpu
        if self.at is not None:
            out.update(interrupt_at=self.at, interrupt_cpu=self.icpu)
        return out


def plain_moves(space: Space, name: str, index: int, there: bool = True) -> list[Move]:
    """The moves on one page of one file: each op of its kind (not skipped), a kernel read by each CPU, and close
    when the file has this one page (:func:`closes_alone`). Of a file that does not exist (``there`` false): its
    create, when the file has this one page, else none."""
    if not there:
        return [create_move(name, index)] if closes_alone(space, name) else []
    ops = GMEM_OPS if name == GMEM else SECRET_OPS
    ops = tuple(op for op in ops if op not in space.skip)
    reads = [Move("kernel_read", name, index, cpu=c) for c in range(space.cpus) if "kernel_read" not in space.skip]
    return [Move(op, name, index) for op in ops] + reads + ([Move("close", name, index)]
                                                            if closes_alone(space, name) else [])


def move_variants(space: Space, move: Move, reached) -> list[Move]:
    """``move`` with a racing read by each other CPU at each interrupt point in ``reached`` (none without
    interleaving, nor for a kernel read)."""
    if not space.interleave or move.op == "kernel_read":
        return []
    return [replace(move, at=at, icpu=c) for at in INTERRUPT_POINTS if at in reached
            for c in range(1, space.cpus)]


def closes(space: Space) -> bool:
    return space.close or space.config().large_folios


def closes_alone(space: Space, name: str) -> bool:
    """Are closing and creating file ``name`` moves on one record? Yes when the space closes files and this one
    has one page: the close then reads and changes that page's record and ``G``, as any move on a page does, and
    the create (no record yet) changes only ``G`` (their steps have no offset, :meth:`Move.step`)."""
    return closes(space) and dict(space.files())[name] == 1


def create_move(name: str, index: int | None = None) -> Move:
    return Move("gmem_create" if name == GMEM else "secret_create", name, index)


def whole_moves(space: Space, exists, full: bool) -> list[Move]:
    """Create for a file that does not exist and close of an existing one, when the space closes files or has 2M
    folios (whose only way back to the allocator is a truncation of the whole folio), for a file of several
    pages; with ``full``, every plain move too and the create and close of a one-page file
    (:func:`closes_alone`), which are otherwise moves on its page."""
    out = []
    for (name, n), there in zip(space.files(), exists, strict=False):
        if not there:
            if full or not closes_alone(space, name):
                out.append(create_move(name))
            continue
        if full:
            for i in range(n):
                out.extend(plain_moves(space, name, i))
        if closes(space) and not closes_alone(space, name):
            out.append(Move("close", name))
    return out


def file_number(space: Space, name: str) -> int:
    """The index of file ``name`` in ``space.files()`` (and in the ``exists`` part of ``G``)."""
    return [n for n, _ in space.files()].index(name)


__all__ = ["Property", "PROPERTIES", "SWITCH_FINDS", "GMEM_OPS", "SECRET_OPS", "Move", "plain_moves", "move_variants",
           "whole_moves", "closes", "closes_alone", "create_move", "file_number"]
