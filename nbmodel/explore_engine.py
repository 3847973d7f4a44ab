"""The explorer's transitions: :class:`Engine` runs each move through :meth:`System.run_validated` (the core
of :meth:`System.step`) on the scratch System of :mod:`nbmodel.explore_state`, and memoizes the outcome per
page record and per view of the shared state.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import ModelInputError
from .explore_moves import Move, file_number, move_variants, plain_moves, whole_moves
from .explore_state import (
    Interner,
    NeedDeeper,
    RefusedMove,
    Space,
    Universe,
    apply_delta,
    apply_delta0,
    pt_entry,
    view0_of,
    view_of,
)
from .system import INTERRUPT_POINTS

_MISSING = object()


#: A move's memo entry on a view that hides what the move needs (it raised NeedDeeper there).
NEEDS_MORE = "needs more than the view"

#: The invariants a record can break that its ``G`` alone does not: (a) and (d) read a folio's pages and the TLB
#: entries over them; (b) and (c) read only the two counters in ``G``. Once neither is pending, the search checks
#: ``G`` alone (:meth:`Search._note`); :meth:`Engine._record_breaks` refuses an answer outside this set.
RECORD_INVARIANTS = frozenset({"a", "d"})


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
        # Level 0: (tid, rid, view id) -> Outcome, NEEDS_MORE or None; level 1: -> (top PFN it ran with, that, movable)
        self.vmemo: tuple = ({}, {})
        self.view_ids = (Interner(), Interner(), Interner())   # per view level, and level 1 exact (_on_top)
        self.exact: dict = {}   # (tid, rid, exact level-1 view id) -> Outcome, for runs _on_top cannot move
        self.inv_g: dict = {}
        self.inv_rec = [None] + [{} for _ in self.positions]   # per position: rid << 32 | gid -> keys
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
        for move in plain_moves(self.space, name, 0):
            variants = {at: [(v, self._tid(replace(v, index=None))) for v in move_variants(self.space, move, (at,))]
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
        if not g[0][file_number(self.space, name)]:
            return (), ()
        v0, v1 = view0_of(g), view_of(g)
        key, top = self.top_group(v1)
        views = ((v0, self.view_ids[0].id(v0), None), (v1, self.view_ids[1].id(key), top))
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
        result is memoized per ``(move, record, view)`` as a delta that applies to every ``G`` with that view.
        On the second view the top entry's PFN is keyed by its 16-page group (:meth:`_exact_top`)."""
        v0, vid0, _ = views[0]
        key = (tid, rid, vid0)
        got = self.vmemo[0].get(key, _MISSING)
        if got is _MISSING:
            self.view_misses += 1
            got = self.vmemo[0][key] = self._try(lambda step: self.u.run_view(v0, self.rec(move, rid), step, 0),
                                                 move)
        if got is None:
            return None
        if got is not NEEDS_MORE:
            return got.records[(move.file, 0)], self.globals.id(apply_delta0(g, got.delta)), got.flush_all, \
                got.props, got.reached
        v1, vid1, top = views[1]
        key = (tid, rid, vid1)
        entry = self.vmemo[1].get(key)
        if entry is None:
            self.view_misses += 1
            got = self._try(lambda step: self.u.run_view(v1, self.rec(move, rid), step, 1), move)
            entry = self.vmemo[1][key] = (top, got, self._movable(got, move, top))
        ran, got, movable = entry
        if ran != top and not movable:
            got, ran = self._exact_top(key, v1, move, rid), top
        if got is None:
            return None
        if got is not NEEDS_MORE:
            rid2, delta = got.records[(move.file, 0)], got.delta
            if ran != top:
                rid2, delta = self._moved(rid2, delta, ran, top)
            return rid2, self.globals.id(apply_delta(g, delta)), got.flush_all, got.props, got.reached
        got = self._try(lambda step: self.u.run(gid, self.rec(move, rid), step), move)
        if got is None or got is NEEDS_MORE:
            return None
        return got.records[(move.file, 0)], got.gid, got.flush_all, got.props, got.reached

    @staticmethod
    def top_group(v1: tuple) -> tuple:
        """A level-1 view's memo key and the PFN on top of its list (None if empty). With a page on the list, the
        key holds the top entry's 16-page group, not its PFN (:meth:`_exact_top` says why that is sound), and
        neither whether more lie below nor the carve position: such a step runs with the list below its top
        hidden (:meth:`Universe.run_view`), so a second page it takes, from the list or the carve, sends it to
        the whole ``G``, and its delta leaves the rest of the list and the position as they were."""
        if not v1[3]:
            return v1, None
        top = v1[3][0]
        return v1[:3] + (((top[0] >> 4,) + top[1:],), None, None) + v1[6:], top[0]

    def _exact_top(self, key: tuple, view: tuple, move: Move, rid: int):
        """The level-1 outcome for ``view`` itself, where the memo's entry for its group cannot be moved to it.

        Symmetry: the level-1 key holds the top entry's bits, its TLB holders and its 16-page group (so its 2 MiB
        block), not its PFN. Two views equal but for which page of one group is on top give the same outcome with
        that page renamed (:meth:`_moved`), when the run it came from (:meth:`_movable`) left the page only in the
        record or back on the list (where the encoding masks it, so nothing else in ``G`` shows its place) and
        flushed no range beyond the pages it loaded or allocated. Every other page-table change a one-page step
        makes is per leaf, per 2 MiB block (a split) or per contiguous group (arm64's CONT bit), the same for every
        page of the group. Otherwise the exact view is run here and kept apart. ``tests/test_explore.py``
        compares searches with and without this over whole sweeps."""
        exact = (key[0], key[1], self.view_ids[2].id(view))
        got = self.exact.get(exact, _MISSING)
        if got is _MISSING:
            self.view_misses += 1
            got = self.exact[exact] = self._try(lambda step: self.u.run_view(view, self.rec(move, rid), step, 1),
                                                move)
        return got

    def _movable(self, got, move: Move, top) -> bool:
        """Can a level-1 outcome run with page ``top`` on the list be moved to another page (:meth:`_exact_top`)?"""
        if top is None or got is None or got is NEEDS_MORE or self.u.stray:
            return False
        rec = self.records.value(got.records[(move.file, 0)])
        return (rec is not None and rec[0] == top and rec[1] == 0) or any(p == top for p, _, _ in got.delta[1])

    def _moved(self, rid2: int, delta: tuple, was: int, now: int) -> tuple:
        """A level-1 outcome computed with page ``was`` on top of the list, for the view with page ``now`` there."""
        rec = self.records.value(rid2)
        if rec is not None and rec[0] == was:
            rid2 = self.records.id((now,) + rec[1:])
        popped, pushed, rest, flushed = delta
        return rid2, (popped, tuple((now if p == was else p, b, t) for p, b, t in pushed), rest, flushed)

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
        for move in whole_moves(self.space, self.globals.value(gid)[0], self.full):
            got = self._try(lambda step: self.u.run(gid, recs, step), move)
            if got is None:
                continue
            variants = [(move, got)] + [(v, self._try(lambda step: self.u.run(gid, recs, step), v))
                                        for v in move_variants(self.space, move, got.reached)]
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

    def broken(self, state: tuple) -> frozenset:
        """The invariants ``state`` breaks, composed from :meth:`global_breaks` and :meth:`record_breaks`."""
        gid = state[0]
        if self.full:
            return self.u.broken_keys(gid, dict(zip(self.positions, state[1:], strict=False)))
        out = self.global_breaks(gid)
        for pos in range(1, len(state)):
            if state[pos]:
                out = out | self.record_breaks(pos, state[pos], gid)
        return out

    def global_breaks(self, gid: int) -> frozenset:
        """What ``G`` breaks with no record loaded: (b) and (c), which read its counters."""
        out = self.inv_g.get(gid)
        if out is None:
            out = self.inv_g[gid] = self.u.broken_keys(gid, {})
        return out

    def record_breaks(self, pos: int, rid: int, gid: int) -> frozenset:
        """What the record at ``pos`` adds under ``G`` (memoized per position on ``rid << 32 | gid``)."""
        cache = self.inv_rec[pos]
        key = (rid << 32) | gid
        got = cache.get(key)
        if got is None:
            got = cache[key] = self._record_breaks(pos, rid, gid)
        return got

    def _record_breaks(self, pos: int, rid: int, gid: int) -> frozenset:
        """What one record breaks under ``G``. Invariants (a) and (d) read a folio's own pages and the TLB
        entries that cover them. A 4K folio's valid bits are in its record (its MAPPED bit is always set, as every
        page of the carved pageblock is in the direct map), and of its TLB entries only those larger than a page
        live in ``G``. A 2M folio's leaves and 4K TLB entries live in ``G``: its block's page-table entry and every
        TLB entry over its pages. The answer is shared by every ``G`` with the same of those.
        ``explore_check`` compares it with the full check."""
        name = self.files[pos - 1]
        pfn, order = self.records.value(rid)[:2]
        g = self.globals.value(gid)
        if order == 0:
            cover = tuple(tuple(e for e in entries if e[1] > 1 and e[0] <= pfn < e[0] + e[1]) for entries in g[2])
            key = (name, rid, cover)
        else:
            end = pfn + (1 << order)
            cover = tuple(tuple(e for e in entries if e[0] < end and pfn < e[0] + (e[1] if e[1] > 1 else e[2]))
                          for entries in g[2])
            key = (name, rid, cover, pt_entry(g[1], pfn))
        got = self.inv_cover.get(key)
        if got is None:
            got = self.inv_cover[key] = self.u.broken_keys(gid, {(name, 0): rid}) - self.global_breaks(gid)
            if not got <= RECORD_INVARIANTS:
                raise AssertionError(f"a record broke {sorted(got)}: RECORD_INVARIANTS must name them")
        return got

    def clear_tlb(self, rid: int) -> int:
        return self.u.clear_tlb(rid)

    @staticmethod
    def view(rec: tuple) -> tuple:
        """A record's direct-map view: (valid bits, private bit)."""
        return bool(rec[7] if rec[7] is not None else 3), rec[3] & 1


__all__ = ["Engine", "NEEDS_MORE", "RECORD_INVARIANTS"]
