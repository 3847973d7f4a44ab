"""``nbmodel explore``: breadth-first search over every operation sequence of a small configuration.

A configuration (:class:`~nbmodel.explore_state.Space`) is a design, its break-it switches, an arch and mode,
a guest_memfd of a few pages (optionally a memfd_secret file too) and two CPUs. From the state after the
files are created, the search applies every operation to every page (fallocate, punch hole, user and guest
fault, write, migrate, replace, a racing add, a read through the direct map on each CPU) and, for each
operation that passes one of :data:`~nbmodel.system.INTERRUPT_POINTS`, the same operation with the other
CPU reading the page at that point. Equal states are visited once, so the search ends when nothing new is
reachable (or at ``max_depth``). Because it is breadth-first, the first path found to a property's violation
is a shortest one.

Every transition is computed by the model itself: :meth:`System.run_validated` (the core of
:meth:`System.step`) on a scratch System
(:mod:`nbmodel.explore_state`), running the one copy of the designs (:mod:`nbmodel.designs`) through the
kernel paths the book teaches. What makes that affordable is memoization, not a second model: a step on one
page is a function of that page's record and the shared state ``G``, and most steps read none or only the top
of the allocator's per-CPU list, so a transition is computed once per ``(move, record, view of G)`` and reused as
a delta (:class:`Engine`); a state is one int (:class:`Search`), so the search's inner loop adds and looks up
ints. :mod:`nbmodel.explore_check` (the tests, ``--check``) replays sampled states on fresh
Systems and compares every memoized successor with the whole-state step. Every counterexample is replayed on a
fresh System before it is reported.

Python API: :func:`explore` -> :class:`ExploreResult`, :func:`sweep`, :func:`state_space_sizes`,
:func:`replay`. Command line: :func:`add_arguments` and :func:`run` (``nbmodel explore --help``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from itertools import filterfalse

from .designs import DESIGNS, SWITCHES
from .errors import ModelInputError
from .explore_state import (
    GMEM,
    ExploreLimit,
    Interner,
    NeedDeeper,
    RefusedMove,
    Space,
    Universe,
    apply_delta,
    apply_delta0,
    observe,
    view0_of,
    view_of,
)
from .invariants import INVARIANTS
from .setup import Setup
from .system import INTERRUPT_POINTS, System
from .units import PAGE_SHIFT, human


# -- what the search looks for -----------------------------------------------------------------------------
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


# -- moves ---------------------------------------------------------------------------------------------------
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
        if self.index is not None:
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


def _plain_moves(space: Space, name: str, index: int) -> list[Move]:
    ops = GMEM_OPS if name == GMEM else SECRET_OPS
    ops = tuple(op for op in ops if op not in space.skip)
    reads = [Move("kernel_read", name, index, cpu=c) for c in range(space.cpus) if "kernel_read" not in space.skip]
    return [Move(op, name, index) for op in ops] + reads


def _variants(space: Space, move: Move, reached) -> list[Move]:
    if not space.interleave or move.op == "kernel_read":
        return []
    return [replace(move, at=at, icpu=c) for at in INTERRUPT_POINTS if at in reached
            for c in range(1, space.cpus)]


# -- results ---------------------------------------------------------------------------------------------------
@dataclass
class Counterexample:
    """A shortest path to a property's violation, replayed on a real System."""

    prop: str
    steps: list              # step dicts, setup included, as System.step takes them
    reason: str
    space: Space
    replay: list = field(default_factory=list)   # Step.as_dict() of the replay
    verified: bool = False

    @property
    def invariant(self) -> str:
        return self.prop

    def numbered(self) -> list[str]:
        """The replayed steps as ``N. op args -> result`` lines."""
        out = []
        for d in self.replay:
            args = " ".join(f"{k}={v}" for k, v in d["args"].items())
            extra = f" saw={d['saw']}" if "saw" in d else ""
            extra += f" interrupt={d['interrupt']}" if "interrupt" in d else ""
            out.append(f"{d['index']:>3}. {d['op']} {args} -> {d['result']}{extra}")
        return out

    def to_dict(self) -> dict:
        return {"property": self.prop, "invariant": self.prop, "kind": PROPERTIES[self.prop].kind,
                "name": PROPERTIES[self.prop].name, "reason": self.reason,
                "config": space_dict(self.space), "steps": self.steps, "replay": self.replay,
                "verified": self.verified}

    def to_toml(self) -> str:
        return scenario_toml(self)


@dataclass
class ExploreResult:
    """What one search found: sizes, time, and per property ``None`` (holds) or a :class:`Counterexample`."""

    space: Space
    states: int
    transitions: int
    depth: int
    complete: bool
    seconds: float
    per_invariant: dict
    misses: int = 0
    refused: dict = field(default_factory=dict)   # op -> why System.step refused it
    consulted: frozenset = frozenset()            # the switch names the design code asked about
    cpu_seconds: float = 0.0                      # CPU time of the search (this process)
    dm_states: int | None = None
    membership_states: int | None = None

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds else float("inf")

    def applies(self, key: str) -> bool:
        return self.space.design in PROPERTIES[key].designs

    def to_dict(self, timing: bool = True) -> dict:
        out = {"config": space_dict(self.space), "label": self.space.label(), "states": self.states,
               "transitions": self.transitions, "depth": self.depth, "complete": self.complete,
               "per_invariant": {k: (None if v is None else v.to_dict()) for k, v in self.per_invariant.items()
                                 if self.applies(k)}}
        if self.dm_states is not None:
            out.update(dm_states=self.dm_states, membership_states=self.membership_states)
        if self.refused:
            out["refused"] = dict(sorted(self.refused.items()))
        if timing:
            out.update(seconds=round(self.seconds, 3), states_per_second=round(self.states_per_second))
        return out

    def to_json(self, timing: bool = True) -> str:
        return json.dumps(self.to_dict(timing), indent=1)


def space_dict(space: Space) -> dict:
    return {"design": space.design, "arch": space.arch, "mode": space.mode, "switches": list(space.switches),
            "offsets": space.offsets, "secret": space.secret, "cpus": space.cpus, "memory": space.memory,
            "seed": space.seed, "write": space.write, "large_folios": space.large_folios,
            "batch_flush": space.batch_flush, "close": space.close, "interleave": space.interleave,
            "skip": list(space.skip)}


_MISSING = object()
#: A move's memo entry on a view that hides what the move needs (it raised NeedDeeper there).
NEEDS_MORE = "needs more than the view"


# -- engines ----------------------------------------------------------------------------------------------
class Engine:
    """Transitions computed by :meth:`System.run_validated` (the core of :meth:`System.step`) on the
    :class:`~nbmodel.explore_state.Universe`'s scratch System, memoized twice: per ``(file, record, G)`` (all the
    moves of a record), and per ``(move, record, view of G)`` as a delta. A move runs on the smallest view it
    needs: without the per-CPU list (:func:`~nbmodel.explore_state.view0_of`), with its top entry
    (:func:`~nbmodel.explore_state.view_of`), or the whole ``G``; a move that needs what a view hides raises
    NeedDeeper there. Records are run at index 0 and shared by every index of their file: an operation on one page
    does not read its index."""

    def __init__(self, space: Space):
        self.space = space
        self.u = Universe(space)
        # A 2M folio spans indexes, so one index is no longer a unit of locality (unless a file has one page).
        self.full = space.config().large_folios and any(n > 1 for _, n in space.files())
        self.root = self.u.root
        self.positions = self.u.positions
        self.records, self.globals = self.u.records, self.u.globals
        self.files = [name for name, _ in self.positions]
        self.tlist: list = []
        self.tids: dict = {}
        self.table = {name: self._table(name) for name, _ in space.files()}
        self.memo = {name: {} for name, _ in space.files()}
        self.vmemo: tuple = ({}, {})   # per view level: (tid, rid, view id) -> Outcome, NEEDS_MORE or None
        self.view_ids = (Interner(), Interner())   # per view level; a view is hashed once per record and G
        self.inv_g: dict = {}
        self.inv_rec: dict = {}
        self.inv_cover: dict = {}
        self.misses = self.view_misses = 0
        self.refused: dict = {}
        self.step_of: dict = {}   # move -> System.validate_step's tuple, or why the model refuses it

    def _tid(self, move: Move) -> int:
        got = self.tids.get(move)
        if got is None:
            got = self.tids[move] = len(self.tlist)
            self.tlist.append(move)
        return got

    def _table(self, name: str) -> list:
        """Per plain move: (move at index 0, tid, {point: [(variant at index 0, tid)]})."""
        out = []
        for move in _plain_moves(self.space, name, 0):
            variants = {at: [(v, self._tid(replace(v, index=None))) for v in _variants(self.space, move, (at,))]
                        for at in INTERRUPT_POINTS}
            out.append((move, self._tid(replace(move, index=None)), variants))
        return out

    def move(self, pos, tid) -> Move:
        move = self.tlist[tid]
        return move if pos is None else replace(move, index=self.positions[pos - 1][1])

    def local(self, pos: int, rid: int, gid: int) -> tuple:
        name = self.files[pos - 1]
        memo = self.memo[name]
        key = (rid << 32) | gid
        got = memo.get(key)
        if got is None:
            got = memo[key] = self._local(name, rid, gid)
        return got

    def _local(self, name: str, rid: int, gid: int) -> tuple:
        """The transitions of one record under ``G``: ``((tid, rid2, gid2, flush_all), ...)`` and the properties
        the moves showed, each move taken from the smallest view of ``G`` it ran on (:meth:`_outcome`)."""
        self.misses += 1
        g = self.globals.value(gid)
        if not g[0][_file_number(self.space, name)]:
            return (), ()
        v0, v1 = view0_of(g), view_of(g)
        views = ((v0, self.view_ids[0].id(v0)), (v1, self.view_ids[1].id(v1)))
        trans, props, seen = [], {}, set()
        for move, tid, variants in self.table[name]:
            got = self._outcome(tid, move, rid, gid, g, views)
            if got is None:
                continue
            todo = [(tid, got)] + [(vtid, self._outcome(vtid, var, rid, gid, g, views))
                                   for at in got[4] for var, vtid in variants[at]]
            for t, out in todo:
                if out is None:
                    continue
                rid2, gid2, flush_all, found, _ = out
                for p in found:
                    props.setdefault(p, t)
                key = (rid2, gid2, flush_all)
                if (rid2 == rid and gid2 == gid and not flush_all) or key in seen:
                    continue
                seen.add(key)
                trans.append((t, rid2, gid2, flush_all))
        return tuple(trans), tuple(props.items())

    def _outcome(self, tid: int, move: Move, rid: int, gid: int, g: tuple, views: tuple):
        """One move of one record under ``G``: ``(rid2, gid2, flush_all, properties, interrupt points reached)``
        or None (refused). Run first on the view without the per-CPU list (:func:`view0_of`: most moves allocate
        nothing), then on the view with its top entry (:func:`view_of`), then on the whole ``G``; each view's
        result is memoized per ``(move, record, view)`` as a delta that applies to every ``G`` with that view."""
        for level, (view, vid) in enumerate(views):
            key = (tid, rid, vid)
            memo = self.vmemo[level]
            got = memo.get(key, _MISSING)
            if got is _MISSING:
                self.view_misses += 1
                got = memo[key] = self._try(lambda step, lv=level, v=view: self.u.run_view(v, self.rec(move, rid),
                                                                                          step, lv), move)
            if got is NEEDS_MORE:
                continue
            if got is None:
                return None
            apply = apply_delta0 if level == 0 else apply_delta
            return got.records[(move.file, 0)], self.globals.id(apply(g, got.delta)), got.flush_all, \
                got.props, got.reached
        got = self._try(lambda step: self.u.run(gid, self.rec(move, rid), step), move)
        if got is None or got is NEEDS_MORE:
            return None
        return got.records[(move.file, 0)], got.gid, got.flush_all, got.props, got.reached

    @staticmethod
    def rec(move: Move, rid: int) -> dict:
        return {(move.file, 0): rid}

    def _try(self, run, move: Move):
        step = self.step_of.get(move)
        if step is None:
            args = move.step(self.space)
            try:
                step = self.u.sys.validate_step(args.pop("op"), args)
            except ModelInputError as e:
                step = str(e)
            self.step_of[move] = step
        if type(step) is str:
            self.refused.setdefault(move.op, step)
            return None
        try:
            return run(step)
        except RefusedMove as e:
            self.refused.setdefault(move.op, str(e))
            return None
        except NeedDeeper:
            return NEEDS_MORE

    def whole(self, state: tuple) -> tuple:
        """Moves that need every record: create and close, and every move when folios may span indexes."""
        self.misses += 1
        gid = state[0]
        recs = dict(zip(self.positions, state[1:], strict=False))
        trans, props, seen = [], {}, set()
        for move in _whole_moves(self.space, self.globals.value(gid)[0], self.full):
            got = self._try(lambda step: self.u.run(gid, recs, step), move)
            if got is None:
                continue
            variants = [(move, got)] + [(v, self._try(lambda step: self.u.run(gid, recs, step), v))
                                        for v in _variants(self.space, move, got.reached)]
            for mv, out in variants:
                if out is None:
                    continue
                tid = self._tid(mv)
                for p in out.props:
                    props.setdefault(p, tid)
                ns = (out.gid,) + tuple(out.records[p] for p in self.positions)
                if ns != state and ns not in seen:
                    seen.add(ns)
                    trans.append((tid, ns))
        return tuple(trans), tuple(props.items())

    def broken(self, state: tuple, pending=()) -> frozenset:
        gid = state[0]
        if self.full:
            return self.u.broken_keys(gid, dict(zip(self.positions, state[1:], strict=False)))
        out = self.inv_g.get(gid)
        if out is None:
            out = self.inv_g[gid] = self.u.broken_keys(gid, {})
        cache = self.inv_rec
        for pos in range(1, len(state)):
            rid = state[pos]
            if rid:
                key = (pos, rid, gid)
                got = cache.get(key)
                if got is None:
                    got = cache[key] = self._record_breaks(pos, rid, gid)
                out = out | got
        return out

    def _record_breaks(self, pos: int, rid: int, gid: int) -> frozenset:
        """What one record breaks under ``G``. Invariants (a) and (d) read a folio's own page (its valid bits
        are in the record; its MAPPED bit is always set, as every page of the carved pageblock is in the direct
        map) and the TLB entries that cover it; only entries larger than a page live in ``G``, so the answer is
        shared by every ``G`` with the same covering entries. ``explore_check`` compares it with the full check."""
        name = self.files[pos - 1]
        pfn = self.records.value(rid)[0]
        cover = tuple(tuple(e for e in entries if e[1] > 1 and e[0] <= pfn < e[0] + e[1])
                      for entries in self.globals.value(gid)[2])
        key = (name, rid, cover)
        got = self.inv_cover.get(key)
        if got is None:
            got = self.inv_cover[key] = self.u.broken_keys(gid, {(name, 0): rid}) - self.inv_g[gid]
        return got

    def clear_tlb(self, rid: int) -> int:
        return self.u.clear_tlb(rid)

    @staticmethod
    def view(rec: tuple) -> tuple:
        """A record's direct-map view: (valid bits, private bit)."""
        return bool(rec[7] if rec[7] is not None else 3), rec[3] & 1


def closes(space: Space) -> bool:
    return space.close or space.config().large_folios


def _whole_moves(space: Space, exists, full: bool) -> list[Move]:
    """Create for a file that does not exist; close when the space closes files or has 2M folios (whose only
    way back to the allocator is a truncation of the whole folio); with ``full``, every plain move too."""
    out = []
    for (name, n), there in zip(space.files(), exists, strict=False):
        if not there:
            out.append(Move("gmem_create" if name == GMEM else "secret_create", name))
            continue
        if full:
            for i in range(n):
                out.extend(_plain_moves(space, name, i))
        if closes(space):
            out.append(Move("close", name))
    return out


# -- the search ---------------------------------------------------------------------------------------------
#: The radix of a packed state: ``G``'s id is its lowest digit, then one digit per file index. Ids stay below
#: 2**32 < RADIX. Not a power of two: Python hashes an int by its value modulo 2**61 - 1, so 32-bit fields would
#: alias (``2**64`` is 8 there) and crowd the dict's low hash bits; an odd radix with mixed bits spreads them.
RADIX = 0x19E3779B9


class Search:
    """Breadth-first search over one :class:`Space`; its :class:`Engine` computes (and memoizes) the transitions.

    A state is packed into one int, in base :data:`RADIX`: ``G``'s id, then each file index's record id
    (:meth:`pack`). A move on index ``i`` that changes only its record and ``G`` is then the addition of one
    precomputed difference, ``(gid2 - gid) + (rid2 - rid) * RADIX**i``, the same for every state with that
    record and ``G``: the inner loop adds and looks up ints, and ``parent`` maps a state to the state it was first
    reached from (the move is found again for the few paths printed, :meth:`path`)."""

    def __init__(self, space: Space):
        self.space = space
        self.e = Engine(space)
        self.n = len(self.e.positions)
        self.diffs = [None] + [{} for _ in range(self.n)]   # per position: (rid << 32 | gid) -> entry
        self._whole: dict = {}                                 # gid -> are the whole moves taken there?

    def pack(self, state: tuple) -> int:
        out = 0
        for x in reversed(state):
            out = out * RADIX + x
        return out

    def unpack(self, s: int) -> tuple:
        out = []
        for _ in range(self.n + 1):
            s, x = divmod(s, RADIX)
            out.append(x)
        return tuple(out)

    def run(self, max_depth: int | None = None, max_states: int | None = None):
        """BFS to a fixpoint, ``max_depth`` steps, or ``max_states`` states (checked as states are added, so a
        budget stops mid-level; every counterexample found is still a shortest one). Returns ``parent`` (packed
        state -> packed state it was first reached from, None for the root), the first breaking state or step per
        property, the transitions taken, the depth and whether the search is complete."""
        e = self.e
        root = self.pack(e.root)
        parent = {root: None}
        found: dict = {}
        self.pending = {k for k, inv in INVARIANTS.items() if self.space.design in inv.designs}
        self._note([root], found)
        self.budget = max_states
        frontier, depth, transitions, cut = [root], 0, 0, False
        while frontier and (max_depth is None or depth < max_depth):
            steps: dict = {}
            frontier, count, cut = self._level(frontier, parent, steps)
            transitions += count
            depth += 1
            self._note(frontier, found)  # a state found by a plain move reads better than a racing step
            for key, how in steps.items():
                if key not in found:
                    found[key] = how
                    self.pending.discard(key)
            if cut:
                break
        complete = not frontier and not cut
        return parent, found, transitions, (depth if frontier or cut else depth - 1), complete

    def _note(self, states: list, found: dict) -> None:
        """Record the first state (in BFS order) breaking each invariant not yet broken."""
        if not self.pending:
            return
        broken, unpack = self.e.broken, self.unpack
        for s in states:
            for key in broken(unpack(s), self.pending):
                if key in self.pending:
                    self.pending.discard(key)
                    found.setdefault(key, ("state", s, None))
            if not self.pending:
                return

    def _entry(self, pos: int, rid: int, gid: int) -> tuple:
        """``(differences, flushing transitions, properties, count)`` of the moves on position ``pos``."""
        trans, props = self.e.local(pos, rid, gid)
        weight = RADIX ** pos
        diffs = tuple((gid2 - gid) + (rid2 - rid) * weight for _, rid2, gid2, fa in trans if not fa)
        slow = tuple((rid2, gid2) for _, rid2, gid2, fa in trans if fa)
        got = self.diffs[pos][(rid << 32) | gid] = (diffs, slow, props, len(trans))
        return got

    def whole_needed(self, gid: int) -> bool:
        """Are the moves on every record (:meth:`Engine.whole`) taken in states with this ``G``?"""
        got = self._whole.get(gid)
        if got is None:
            got = self._whole[gid] = (self.e.full or closes(self.space)
                                            or not all(self.e.globals.value(gid)[0]))
        return got

    def _level(self, frontier: list, parent: dict, found: dict) -> tuple[list, int, bool]:
        """Expand one BFS level: the next frontier, how many transitions were taken, whether the budget cut
        the level short."""
        e = self.e
        nxt, count = [], 0
        budget = self.budget
        append = nxt.append
        slots = [(pos, self.diffs[pos]) for pos in range(1, self.n + 1)] if not e.full else []
        entry_of, whole_needed = self._entry, self.whole_needed
        contains = parent.__contains__
        for s in frontier:
            q, gid = divmod(s, RADIX)
            for pos, cache in slots:
                q, rid = divmod(q, RADIX)
                entry = cache.get((rid << 32) | gid)
                if entry is None:
                    entry = entry_of(pos, rid, gid)
                diffs, slow, props, n = entry
                count += n
                # Only the new states reach Python code: the sums and the lookups run inside filterfalse/map.
                for ns in filterfalse(contains, map(s.__add__, diffs)):
                    parent[ns] = s
                    append(ns)
                if slow or props:
                    self._take(s, pos, [self._flushed(s, pos, rid2, gid2) for rid2, gid2 in slow], props, parent,
                               nxt, found)
            if whole_needed(gid):
                trans, props = e.whole(self.unpack(s))
                count += len(trans)
                self._take(s, None, [self.pack(ns) for _, ns in trans], props, parent, nxt, found)
            if budget is not None and len(parent) >= budget:
                return nxt, count, True
        return nxt, count, False

    @staticmethod
    def _take(s: int, pos, states: list, props: tuple, parent: dict, nxt: list, found: dict) -> None:
        """Add the states not seen yet (reached from ``s`` by moves on ``pos``) and the properties not found yet."""
        for ns in states:
            if ns not in parent:
                parent[ns] = s
                nxt.append(ns)
        for key, tid in props:
            if key not in found:
                found[key] = ("step", s, (pos, tid))

    def _flushed(self, s: int, pos: int, rid2: int, gid2: int) -> int:
        """The packed state after a move on ``pos`` that ended in ``flush_tlb_all()``."""
        state = self.unpack(s)
        return self.pack(self.flushed(state, pos, rid2, gid2))

    def flushed(self, state: tuple, pos: int, rid2: int, gid2: int) -> tuple:
        clear = self.e.clear_tlb
        rest = [clear(r) for r in state[1:]]
        rest[pos - 1] = rid2
        return (gid2,) + tuple(rest)

    # -- counterexamples ---------------------------------------------------------------------------------------
    def successors(self, s: int):
        """``(move, next state)`` for every transition out of packed state ``s``, in the order the search takes
        them (so the first one reaching a state is the move its ``parent`` entry stands for)."""
        e, state = self.e, self.unpack(s)
        gid = state[0]
        if not e.full:
            for pos in range(1, self.n + 1):
                trans, _ = e.local(pos, state[pos], gid)
                for tid, rid2, gid2, fa in sorted(trans, key=lambda t: t[3]):  # as _level: plain, then flushing
                    ns = self.flushed(state, pos, rid2, gid2) if fa else (
                        (gid2,) + state[1:pos] + (rid2,) + state[pos + 1:])
                    yield e.move(pos, tid), self.pack(ns)
        if self.whole_needed(gid):
            for tid, ns in e.whole(state)[0]:
                yield e.move(None, tid), self.pack(ns)

    def path(self, parent: dict, state: int) -> list[Move]:
        """The moves from the root to packed ``state`` along ``parent``: for each edge, the first move (in search
        order) from the parent that reaches the child."""
        out = []
        while parent[state] is not None:
            prev = parent[state]
            out.append(next(m for m, ns in self.successors(prev) if ns == state))
            state = prev
        return out[::-1]

    def counterexample(self, parent: dict, key: str, how) -> Counterexample:
        kind, s, last = how
        moves = self.path(parent, s) + ([self.e.move(*last)] if kind == "step" else [])
        steps = self.space.setup_steps() + [m.step(self.space) for m in moves]
        return verify(Counterexample(key, steps, "", self.space))


def _file_number(space: Space, name: str) -> int:
    return [n for n, _ in space.files()].index(name)


# -- replay --------------------------------------------------------------------------------------------------
def replay(scenario_steps, setup: dict) -> System:
    """Run step dicts on a fresh System built from a scenario-style ``setup`` (``designs`` or ``design``,
    arch, mode, memory, cpus, seed, switches, write, large_folios, batch_flush, fwb)."""
    design = setup.get("design") or (setup.get("designs") or ["filemap"])[0]
    kw = {k: setup[k] for k in ("arch", "mode", "memory", "cpus", "seed", "write", "large_folios", "batch_flush",
                                "fwb", "large_zap") if k in setup}
    sys = System(design=design, switches=tuple(setup.get("switches", ())), **kw)
    for st in scenario_steps:
        sys.step(**dict(st))
    return sys


def setup_of(space: Space) -> dict:
    """The scenario ``[setup]`` table for a space."""
    out = {"arch": space.arch}
    if space.mode is not None and "arm64_no_bbml2" not in space.switches:
        out["mode"] = space.mode
    out.update(memory=space.memory, cpus=space.cpus, seed=space.seed, designs=[space.design],
               switches=list(space.switches))
    if space.write != "refuse":
        out["write"] = space.write
    for key in ("large_folios", "batch_flush", "large_zap"):
        if getattr(space, key):
            out[key] = True
    if not space.fwb:
        out["fwb"] = False
    return out


def verify(ce: Counterexample) -> Counterexample:
    """Replay ``ce`` on a fresh System (trace on) and check its last step shows the property."""
    sys = replay(ce.steps, setup_of(ce.space))
    last = sys.steps[-1]
    ce.replay = [st.as_dict() for st in sys.steps]
    if PROPERTIES[ce.prop].kind == "invariant":
        ce.verified = sys.first_broken.get(ce.prop) == last.index
        ce.reason = last.broken.get(ce.prop, "not broken on replay")
    else:
        ce.verified = ce.prop in replay_observations(last)
        ce.reason = f"step {last.index}: {describe_step(last)}"
    return ce


def replay_observations(step) -> frozenset:
    """What a replayed step shows; a racing read that reached a page counts as the leak the search saw."""
    racing = [(None, step.interrupt)] if step.interrupt in ("ok", "stale") else []
    return observe(step, {None: "guest-secret"}, racing)


def describe_step(step) -> str:
    bits = [f"{step.op} -> {step.result}"]
    if step.interrupt is not None:
        bits.append(f"racing read at {step.args.get('interrupt_at')} by CPU {step.args.get('interrupt_cpu')}: "
                    f"{step.interrupt}")
    if step.saw is not None:
        bits.append(f"saw {step.saw}")
    for name in ("oops", "stale_reads", "warns"):
        if step.counters.get(name):
            bits.append(f"{name}+{step.counters[name]}")
    return "; ".join(bits)


# -- scenario files ----------------------------------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def scenario_name(ce: Counterexample) -> str:
    sp = ce.space
    parts = ["EXPLORE", sp.design, sp.arch] + ([sp.mode] if sp.mode else []) + list(sp.switches) + [ce.prop]
    return "-".join(parts).upper().replace("_", "-")


def scenario_toml(ce: Counterexample) -> str:
    """The counterexample as a scenario file that ``nbmodel run`` replays to the same violation."""
    prop = PROPERTIES[ce.prop]
    n = len(ce.steps)
    lines = [f"name = {_toml_value(scenario_name(ce))}",
             f"purpose = {_toml_value(f'shortest path found by nbmodel explore to {prop.key} ({prop.name})')}",
             "", "[setup]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in setup_of(ce.space).items()]
    for st in ce.steps:
        lines += ["", "[[step]]"] + [f"{k} = {_toml_value(v)}" for k, v in st.items()]
    for table in _expectations(ce, n):
        lines += ["", "[[expect]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _expectations(ce: Counterexample, n: int) -> list[dict]:
    why = PROPERTIES[ce.prop].text
    if PROPERTIES[ce.prop].kind == "invariant":
        return [{"invariant": ce.prop, "held": False, "why": why}, {"invariant": ce.prop, "broken_at": n}]
    last = ce.replay[-1] if ce.replay else {}
    if ce.prop == "eperm":
        return [{"step": n, "result": "EPERM", "why": why}]
    if ce.prop == "leak" and last.get("interrupt") in ("ok", "stale"):
        return [{"step": n, "interrupt": last["interrupt"], "why": why}]
    if ce.prop == "leak":
        return [{"step": n, "saw": last.get("saw", ""), "why": why}]
    counter = {"oops": "oops", "warn": "warns"}[ce.prop]
    events = {"oops": ["oops("], "warn": ["warn("]}[ce.prop]
    return [{"step": n, "events": events, "why": why}, {"counter": counter, "at_least": 1}]


# -- entry points ----------------------------------------------------------------------------------------
#: Default state budget: the search stops as soon as it has visited this many states. Enough for the filemap
#: design at 4 pages (345,547 states) to complete.
BUDGET = 400_000
#: With 2M folios a step zeroes, zaps or restores 512 pages one by one, so a state costs 1-5 ms here against
#: about 60 µs with 4K folios (the default sweep's mean): this budget bounds the wait. The spaces are finite (the
#: allocator's next pageblock
#: depends only on which are free, :class:`~nbmodel.physmem.PageblockOrder`). Of the default sweep's nine
#: (restore_4k, one page), four complete within it: secretmem on x86 (786 states) and arm64 bbml2 (1,210), filemap
#: on x86 (1,818) and arm64 rodata-full (334). Beyond it: secretmem on rodata-full (2,952), filemap on bbml2
#: (11,100), per-folio on rodata-full (17,098), and per-folio on x86 and bbml2 (more than 30,000).
BUDGET_2M = 2_000
#: Why a configuration with 2M folios may stay bounded, as the sweep's legend says it.
BOUNDED_2M = (f"with 2M folios a step works on 512 pages one by one, so the budget is {BUDGET_2M:,} states; "
              "the larger of those spaces stop there")
AUTO = "auto"


def explore(design: str = "filemap", arch: str = "x86", mode: str | None = None, switches=(), offsets: int = 3,
            cpus: int = 2, max_depth: int | None = None, secret: int = 0, close: bool = False,
            interleave: bool = True, memory: str = "4G", seed: int = 0, write: str = "refuse",
            large_folios: bool = False, batch_flush: bool = False, max_states=AUTO, sizes: bool = False,
            skip=(), large_zap: bool = False, fwb: bool = True) -> ExploreResult:
    """Explore one configuration breadth-first; see the module docstring.

    ``max_states`` is a budget: the search stops after the level at which it has visited more states
    (``"auto"``: :data:`BUDGET`, or :data:`BUDGET_2M` with 2M folios; None: no budget). ``sizes`` also counts
    direct-map views."""
    space = Space(design, arch, mode, tuple(sorted(switches)), offsets, secret, cpus, memory, seed, write,
                  large_folios, batch_flush, close, interleave, skip=tuple(sorted(skip)), large_zap=large_zap,
                  fwb=fwb)
    return explore_space(space, max_depth=max_depth, max_states=max_states, sizes=sizes)


def explore_space(space: Space, max_depth=None, max_states=AUTO, sizes=False) -> ExploreResult:
    _check_space(space)
    start, cpu = time.perf_counter(), time.process_time()
    search = Search(space)
    budget = (BUDGET_2M if space.config().large_folios else BUDGET) if max_states == AUTO else max_states
    parent, found, transitions, depth, complete = search.run(max_depth, budget)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    per = {k: (search.counterexample(parent, k, found[k]) if k in found else None) for k in PROPERTIES}
    res = ExploreResult(space, len(parent), transitions, depth, complete, seconds, per, search.e.misses,
                        consulted=frozenset(search.e.u.consulted), cpu_seconds=cpu)
    res.refused.update(search.e.refused)
    if sizes:
        res.dm_states, res.membership_states = _views(search, parent)
    return res


def _check_space(space: Space) -> None:
    if space.design not in DESIGNS:
        raise ModelInputError(f"unknown design {space.design!r}; choose one of {', '.join(DESIGNS)}")
    unknown = set(space.switches) - set(SWITCHES)
    if unknown:
        raise ModelInputError(f"unknown switches {sorted(unknown)}; known: {', '.join(SWITCHES)}")
    if not 0 <= space.offsets <= 16 or not 0 <= space.secret <= 16 or space.offsets + space.secret == 0:
        raise ModelInputError("offsets and secret must be 0..16 pages, and not both 0")
    if not 1 <= space.cpus <= 8:
        raise ModelInputError("cpus must be from 1 to 8")


def _views(search: Search, parent: dict) -> tuple[int, int]:
    """Distinct direct-map views (per page: cached?, direct map valid?, private bit) and memberships."""
    value = search.e.records.value
    views, members = set(), set()
    for s in parent:
        recs = [value(r) for r in search.unpack(s)[1:]]
        views.add(tuple(None if r is None else search.e.view(r) for r in recs))
        members.add(tuple(r is None for r in recs))
    return len(views), len(members)


def state_space_sizes(design: str = "filemap", offsets_range=range(1, 4), **kw) -> list[dict]:
    """For the book: reachable states and direct-map views against the number of pages, for one design.
    ``dm_states`` counts distinct per-page (cached?, direct map valid?, private bit) views; under the
    filemap design it equals ``membership_states``: the direct map is a function of page-cache membership."""
    out = []
    for n in offsets_range:
        r = explore(design=design, offsets=n, sizes=True, **kw)
        out.append({"design": design, "offsets": n, "states": r.states, "transitions": r.transitions,
                    "complete": r.complete, "depth": r.depth, "dm_states": r.dm_states,
                    "membership_states": r.membership_states})
    return out


#: Space changes a switch needs to show itself (put_before_restore acts on memfd_secret's racing fault).
SWITCH_SPACE = {"put_before_restore": {"offsets": 1, "secret": 1}, "restore_4k": {"offsets": 1}}
#: Pages of the guest_memfd per design (and design with a switch) where the default of 3 would not complete
#: within :data:`BUDGET`: the sweep runs each configuration at the largest size (up to 3 pages) whose search is
#: exhaustive. Per-folio and secretmem free pages whose direct map is still invalid, so free pages carry state
#: too and their spaces grow fast with the pages (per-folio on x86: 1,645 states at 1 page, 1,206,537 at 2, past
#: 16 million at 3 and still growing at depth 8; filemap's direct map follows page-cache membership, 11,831
#: states at 3 pages). Measured with ``nbmodel explore --offsets N --max-states 0``.
#: A ``(design, switch)`` entry wins over the ``(design, None)`` one.
DESIGN_PAGES = {("per-folio", None): 1, ("secretmem", None): 1, ("filemap", "unhooked_migration"): 2,
                ("per-folio", "arm64_no_bbml2"): 3, ("secretmem", "arm64_no_bbml2"): 3}
ARCHES = (("x86", None), ("arm64", "bbml2"), ("arm64", "rodata-full"))


def default_spaces(designs=DESIGNS, arches=ARCHES, switch_sets=None, **kw) -> list[Space]:
    """The sweep ``nbmodel explore`` runs: every design x arch x (no switch, each switch alone);
    ``arm64_no_bbml2`` (which forces the arm64 mode) once per design. Pages: ``offsets`` if given, else what
    :data:`SWITCH_SPACE` and :data:`DESIGN_PAGES` say, else 3."""
    if switch_sets is None:
        switch_sets = [()] + [(s,) for s in SWITCHES]
    out = []
    for design in designs:
        for switches in switch_sets:
            extra = {k: v for sw in switches for k, v in SWITCH_SPACE.get(sw, {}).items() if k not in kw}
            pages = [DESIGN_PAGES[design, sw] for sw in switches if (design, sw) in DESIGN_PAGES]
            if not pages and (design, None) in DESIGN_PAGES:
                pages = [DESIGN_PAGES[design, None]]
            if pages and "offsets" not in kw and "offsets" not in extra:
                extra["offsets"] = min(pages)
            for arch, mode in arches:
                if "arm64_no_bbml2" in switches:
                    if arch != "arm64" or (arch, mode) != next(a for a in arches if a[0] == "arm64"):
                        continue
                    mode = None
                out.append(Space(design, arch, mode, tuple(switches), **{**kw, **extra}))
    return out


def same_as(space: Space, base: Space, base_result: ExploreResult) -> bool:
    """Does ``space`` explore exactly what ``base`` did? True when ``space`` is ``base`` with switches added that
    change neither the machine nor the design's options (:meth:`Setup.kernel_mode`, :meth:`Setup.config`) and
    that the design code never consulted while ``base`` was explored. Every decision the code took in ``base``'s
    search then comes out the same with the switches on, transition by transition, so the reachable states,
    the counterexamples and the verdicts are equal."""
    added = set(space.switches) - set(base.switches)
    if not added or replace(space, switches=base.switches) != base or added & base_result.consulted:
        return False
    a, b = Setup(**setup_kwargs(space)), Setup(**setup_kwargs(base))
    return a.kernel_mode() == b.kernel_mode() and replace(a.config(), switches=frozenset()) == replace(
        b.config(), switches=frozenset())


def setup_kwargs(space: Space) -> dict:
    return {k: v for k, v in space.system_kwargs().items() if k != "trace"}


def sweep(spaces: list[Space], jobs: int | None = None, max_depth=None, max_states=AUTO,
          progress: bool = False) -> list:
    """Explore several spaces; results in the order given. A space that is another one of the list with
    switches the design code never consulted there (:func:`same_as`) is not explored again: its entry is
    ``("same", i)``. The spaces without switches go first, in ``jobs`` processes; ``progress`` shows a tqdm bar
    on stderr (when it is a terminal)."""
    from tqdm import tqdm  # here, not at the top: the chapters that import this module do not sweep

    bar = tqdm(total=len(spaces), desc="explore", unit="configuration", file=sys.stderr,
               disable=None if progress else True)
    base_of = {}
    for i, sp in enumerate(spaces):
        if sp.switches:
            bases = [j for j, b in enumerate(spaces) if not b.switches and replace(sp, switches=()) == b]
            if bases:
                base_of[i] = bases[0]
    with bar:
        done = _explore_all(spaces, [i for i in range(len(spaces)) if i not in base_of], jobs, max_depth,
                            max_states, bar)
        same = {i: j for i, j in base_of.items() if same_as(spaces[i], spaces[j], done[j])}
        bar.update(len(same))
        done.update(_explore_all(spaces, [i for i in base_of if i not in same], jobs, max_depth, max_states, bar))
    return [done[i] if i in done else ("same", same[i]) for i in range(len(spaces))]


def _explore_all(spaces: list[Space], todo: list[int], jobs, max_depth, max_states, bar) -> dict:
    # One process by default: a pool of workers was seen to stall on this 2-core machine while other work ran.
    jobs = max(1, min(jobs or 1, len(todo)))
    out = {}
    if jobs == 1:
        for i in todo:
            bar.set_postfix_str(spaces[i].label(), refresh=False)
            out[i] = explore_space(spaces[i], max_depth, max_states)
            bar.update()
        return out
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futs = {pool.submit(explore_space, spaces[i], max_depth, max_states): i for i in todo}
        for f in as_completed(futs):
            out[futs[f]] = f.result()
            bar.update()
    return out


# -- text output -------------------------------------------------------------------------------------------
COLUMNS = ("a", "b", "c", "d", "leak", "oops", "warn", "eperm")


def verdict(r: ExploreResult, key: str) -> str:
    """A table cell: ``ok`` (holds, complete), ``ok<`` (holds in the bounded search), ``N`` (shortest
    counterexample has N steps), ``-`` (does not apply)."""
    if not r.applies(key):
        return "-"
    ce = r.per_invariant.get(key)
    if ce is None:
        return "ok" if r.complete else "ok<"
    return str(len(ce.steps)) + ("" if ce.verified else "!")


def format_result(r: ExploreResult, timing: bool = True, details: bool = True, toml: bool = False) -> str:
    """One configuration: sizes, then per property ``holds`` or the shortest counterexample."""
    sp = r.space
    files = f"guest_memfd of {sp.offsets} page(s)" + (f" + memfd_secret of {sp.secret}" if sp.secret else "")
    lines = [f"== {sp.label()}: {files}, {sp.cpus} CPUs, interleavings {'on' if sp.interleave else 'off'}"]
    scope = "complete: every reachable state visited" if r.complete else "bounded: state budget or --depth"
    lines.append(f"   {r.states} states, {r.transitions} transitions, depth {r.depth} ({scope})")
    if timing:
        lines.append(f"   {r.seconds:.2f} s, {r.states_per_second:,.0f} states/s")
    for key, prop in PROPERTIES.items():
        lines.extend(_property_lines(r, key, prop, details, toml))
    for op, why in sorted(r.refused.items()):
        lines.append(f"   note: the model refused {op} in some states: {why}")
    return "\n".join(lines)


def _property_lines(r: ExploreResult, key: str, prop: Property, details: bool, toml: bool = False) -> list[str]:
    head = f"   {key:<5} {prop.name:<36}"
    if not r.applies(key):
        return [f"{head} n/a ({', '.join(prop.designs)} only)"]
    ce = r.per_invariant.get(key)
    where = "all" if r.complete else "all explored"
    if ce is None:
        if prop.kind == "goal":
            return [f"{head} not reachable in {where} {r.transitions} transitions"]
        unit = f"{r.states} states" if prop.kind == "invariant" else f"{r.transitions} transitions"
        return [f"{head} holds in {where} {unit}"]
    what = "reachable" if prop.kind == "goal" else "COUNTEREXAMPLE"
    out = [f"{head} {what}, {len(ce.steps)} steps{'' if ce.verified else ' (NOT reproduced on replay!)'}"]
    if details:
        out += [f"        {line}" for line in ce.numbered()]
        out.append(f"        -> {ce.reason}")
    if toml:
        out += [f"        | {line}" for line in ce.to_toml().splitlines()]
    return out


def format_table(spaces: list[Space], results: list, timing: bool = True) -> str:
    """The sweep as one line per configuration."""
    width = max(len(sp.label()) for sp in spaces) + 2
    head = f"{'configuration':<{width}}{'states':>9}{'depth':>7} " + "".join(f"{c:>6}" for c in COLUMNS)
    lines = [head + ("   seconds" if timing else "")]
    for sp, r in zip(spaces, results, strict=False):
        if isinstance(r, tuple):
            lines.append(f"{sp.label():<{width}}= {spaces[r[1]].label()} (the switch changes nothing here)")
            continue
        depth = f"{r.depth}{'' if r.complete else '<'}"
        row = f"{sp.label():<{width}}{r.states:>9}{depth:>7} " + "".join(
            f"{verdict(r, c):>6}" for c in COLUMNS)
        lines.append(row + (f"{r.seconds:>10.2f}" if timing else ""))
    return "\n".join(lines)


LEGEND = ("ok: holds in every reachable state (complete search)  ok<: holds in every state the bounded search "
          "visited  N: shortest counterexample has N steps (setup included; --details prints it)  -: n/a  "
          "depth N<: bounded (" + BOUNDED_2M + ")")


# -- command line ------------------------------------------------------------------------------------------
EPILOG = """examples:
  nbmodel explore                                   every design x arch x switch, one line each
  nbmodel explore --design filemap --arch x86       one configuration: sizes and per property
                                                    "holds in all N states" or the shortest counterexample
  nbmodel explore --design filemap --switch skip_flush --scenario-out /tmp/ce
                                                    ... and write each counterexample as a scenario file
                                                    that `nbmodel run /tmp/ce/*.toml` replays
  nbmodel explore --design per-folio --offsets 3 --depth 6 --json
  nbmodel explore --design filemap --check 50     the memoized search against fresh Systems, 50 states

properties: a-d are the model's invariants (nbmodel.invariants), checked after every step and, at interrupt
points, inside it; leak: a CPU reads guest data through the direct map; oops: a kernel path faults on a
direct-map hole; warn: a WARN_ON fires; eperm: write() refused after a zap (a goal, not a bug).

exit status: 0 (a counterexample is a result, not an error); 2 for bad arguments; with --check, 1 when the
memoized search and a fresh System disagree."""


def add_arguments(parser) -> None:
    """The ``nbmodel explore`` options."""
    parser.epilog = EPILOG
    parser.add_argument("--design", action="append", choices=DESIGNS, help="explore this design (repeatable)")
    parser.add_argument("--arch", action="append", choices=("x86", "arm64"), help="this arch (repeatable)")
    parser.add_argument("--mode", help="the arch's mode (x86: 4-level, 5-level, nogbpages; arm64: bbml2, "
                        "rodata-full); default: x86 4-level, arm64 bbml2 and rodata-full")
    parser.add_argument("--switch", action="append", choices=list(SWITCHES), metavar="SWITCH",
                        help="turn this break-it switch on (repeatable; together): " + ", ".join(SWITCHES))
    parser.add_argument("--no-switches", action="store_true", help="the sweep without any switch")
    parser.add_argument("--offsets", type=int, default=None, help="pages of the guest_memfd, 0..16 (default 3)")
    parser.add_argument("--secret", type=int, default=None, help="pages of a memfd_secret file too, 0..16 (default 0)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs, 1..8 (default 2)")
    parser.add_argument("--depth", type=int, default=None, help="stop after this many steps, 0..1000 (default: none)")
    parser.add_argument("--max-states", type=int, default=None,
                        help=f"state budget per configuration (default {BUDGET}; {BUDGET_2M} with 2M folios); "
                        "0: none")
    parser.add_argument("--no-interleave", action="store_true", help="no racing reads at interrupt points")
    parser.add_argument("--close", action="store_true", help="also close and re-create files")
    parser.add_argument("--skip-op", action="append", default=[], metavar="OP",
                        choices=sorted(set(GMEM_OPS + SECRET_OPS + ("kernel_read",))),
                        help="leave this op out (repeatable), e.g. secret_fault+race")
    parser.add_argument("--write", choices=("refuse", "mermap"), default="refuse", help="filemap write()")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes for a sweep, 1..64 (default: 1)")
    parser.add_argument("--details", action="store_true", help="in a sweep, print every counterexample")
    parser.add_argument("--toml", action="store_true", help="print each counterexample's scenario file too")
    parser.add_argument("--json", action="store_true", help="one JSON document (results, counterexamples)")
    parser.add_argument("--scenario-out", metavar="DIR", help="write each counterexample as DIR/NAME.toml")
    parser.add_argument("--no-timing", action="store_true", help="no times or rates (deterministic output)")
    parser.add_argument("--check", type=int, metavar="K", default=None,
                        help="instead of exploring, check the search's memoized transitions against fresh "
                        "Systems on K (1..10000) sampled states per configuration (every move from each; --depth "
                        "bounds the search, default 4); exit 1 on a mismatch")
    parser.add_argument("--sizes", type=int, metavar="N", default=None,
                        help="print reachable states and direct-map views for 1..N pages per design (N from 1 to 4)")


def spaces_from_args(args) -> list[Space]:
    kw = {"cpus": args.cpus, "interleave": not args.no_interleave, "close": args.close, "write": args.write,
          "skip": tuple(sorted(set(args.skip_op)))}
    if args.offsets is not None:
        kw["offsets"] = args.offsets
    if args.secret is not None:
        kw["secret"] = args.secret
    arches = [(a, m) for a, m in ARCHES if a in (args.arch or ("x86", "arm64"))]
    if args.mode is not None:
        arches = [(a, args.mode) for a in dict.fromkeys(a for a, _ in arches)]
    if args.switch:
        switch_sets = [tuple(sorted(set(args.switch)))]
    elif args.no_switches or args.design or args.arch:
        switch_sets = [()]
    else:
        switch_sets = None
    return default_spaces(tuple(args.design or DESIGNS), tuple(arches), switch_sets, **kw)


def run(args) -> int:
    """``nbmodel explore``: 0 normally (counterexamples are results), 2 for bad arguments."""
    try:
        _check_args(args)
        if args.sizes is not None:
            return _run_sizes(args)
        spaces = spaces_from_args(args)
        for sp in spaces:
            _check_space(sp)
        if args.check is not None:
            return _run_check(spaces, args)
        budget = AUTO if args.max_states is None else (args.max_states or None)
        start = time.perf_counter()
        results = sweep(spaces, args.jobs, args.depth, budget, progress=not args.json)
        wall = time.perf_counter() - start
    except (ModelInputError, ExploreLimit) as e:
        print(f"nbmodel explore: {e}", file=sys.stderr)
        return 2
    _print_results(args, spaces, results, wall)
    if args.scenario_out:
        _write_scenarios(args.scenario_out, [r for r in results if not isinstance(r, tuple)])
    return 0


def _check_args(args) -> None:
    """Every numeric option in its documented range, and --scenario-out usable, before any search runs."""
    ranges = {"check": (1, 10_000), "sizes": (1, 4), "depth": (0, 1_000), "max_states": (0, 100_000_000),
              "jobs": (1, 64), "cpus": (1, 8), "offsets": (0, 16), "secret": (0, 16)}
    for name, (lo, hi) in ranges.items():
        value = getattr(args, name, None)
        if value is not None and not lo <= value <= hi:
            raise ModelInputError(f"--{name.replace('_', '-')} must be from {lo} to {hi}, not {value}")
    out = getattr(args, "scenario_out", None)
    if out is not None:
        if os.path.exists(out) and not os.path.isdir(out):
            raise ModelInputError(f"--scenario-out {out!r} exists and is not a directory")
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent) or not os.access(parent if not os.path.isdir(out) else out, os.W_OK):
            raise ModelInputError(f"--scenario-out {out!r}: cannot create or write that directory")


def _print_results(args, spaces, results, wall: float) -> None:
    timing = not args.no_timing
    real = [r for r in results if not isinstance(r, tuple)]
    states = sum(r.states for r in real)
    if args.json:
        doc = {"results": [r.to_dict(timing) if not isinstance(r, tuple) else {"same_as": spaces[r[1]].label(),
                                                                               "label": sp.label()}
                           for sp, r in zip(spaces, results, strict=False)],
               "total": {"configurations": len(spaces), "explored": len(real), "states": states,
                         "transitions": sum(r.transitions for r in real)}}
        if timing:
            doc["total"].update(seconds=round(wall, 3), states_per_second=round(states / wall) if wall else None,
                                **_rates(real))
        print(json.dumps(doc, indent=1))
        return
    if len(spaces) == 1:
        print(format_result(real[0], timing, toml=args.toml))
        return
    print(format_table(spaces, results, timing))
    print(LEGEND)
    if args.details or args.toml:
        for r in real:
            print()
            print(format_result(r, timing, toml=args.toml))
    line = f"{len(spaces)} configurations ({len(real)} explored), {states} states, " \
           f"{sum(r.transitions for r in real)} transitions"
    if timing:
        line += f" in {wall:.1f} s: {states / wall:,.0f} states/s"
        rates = _rates(real)
        line += (f"\n  complete searches: {rates['complete']} configurations, {rates['complete_states']} states in "
                 f"{rates['complete_cpu_seconds']:.1f} CPU-s ({rates['complete_states_per_cpu_second']:,} states per "
                 f"CPU-second); bounded: {rates['bounded']} configurations in {rates['bounded_cpu_seconds']:.1f} CPU-s")
    print(line)


def _rates(results: list) -> dict:
    """The exhaustive searches' own rate, apart from the budget-capped ones (whose memo is warmer)."""
    done = [r for r in results if r.complete]
    cpu = sum(r.cpu_seconds for r in done)
    states = sum(r.states for r in done)
    return {"complete": len(done), "complete_states": states, "complete_cpu_seconds": round(cpu, 2),
            "complete_states_per_cpu_second": round(states / cpu) if cpu else 0,
            "bounded": len(results) - len(done),
            "bounded_cpu_seconds": round(sum(r.cpu_seconds for r in results if not r.complete), 2)}


def _run_check(spaces: list, args) -> int:
    """``--check K``: the memoized search against fresh Systems, configuration by configuration."""
    from .explore_check import check_conformance
    bad = 0
    for sp in spaces:
        problems = check_conformance(sp, depth=args.depth or 4, sample=args.check)
        bad += bool(problems)
        print(f"{sp.label()}: {'OK' if not problems else f'{len(problems)} MISMATCH(ES)'}")
        for p in problems[:5]:
            print("   " + p.replace("\n", "\n   "))
    return 1 if bad else 0


def _write_scenarios(directory: str, results: list) -> None:
    os.makedirs(directory, exist_ok=True)
    for r in results:
        for ce in r.per_invariant.values():
            if ce is not None:
                path = os.path.join(directory, scenario_name(ce) + ".toml")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(ce.to_toml())
                print(f"wrote {path}")


def _run_sizes(args) -> int:
    rows = []
    for design in args.design or DESIGNS:
        rows += state_space_sizes(design, range(1, args.sizes + 1), max_states=None,
                                  interleave=not args.no_interleave)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'design':<10}{'pages':>6}{'states':>10}{'dm views':>10}{'memberships':>13}")
    for row in rows:
        print(f"{row['design']:<10}{row['offsets']:>6}{row['states']:>10}{row['dm_states']:>10}"
              f"{row['membership_states']:>13}")
    return 0


__all__ = ["explore", "explore_space", "sweep", "state_space_sizes", "replay", "default_spaces", "Space",
           "ExploreResult", "Counterexample", "PROPERTIES", "SWITCH_FINDS", "add_arguments", "run",
           "format_result", "format_table"]
