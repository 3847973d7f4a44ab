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
    tlbs_after,
    view0_of,
    view_of,
    window_tlbs,
)
from .system import INTERRUPT_POINTS

#: A move's memo entry on a view that hides what the move needs (it raised NeedDeeper there).
NEEDS_MORE = "needs more than the view"

#: What :meth:`Engine._on_views` answers for a move that both views hide too much for: run it on the whole ``G``.
WHOLE = "needs the whole G"

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
    does not read its index. In the second memo a 4 KiB record's page and the list's top page are keyed by their
    16-page groups, and an outcome is renamed to the pages at hand (:meth:`_moved`). Between the two, what the views
    give one record is kept as a plan per record and views (:meth:`plan_key`), so a record under a new ``G`` with
    the same views only has its deltas applied. Deltas are interned, so a rename and a delta applied to a ``G`` are
    each worked out once and then looked up by ints."""

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
        self.table = {name: self._table(plain_moves(space, name, 0)) for name, _ in space.files()}
        self.absent = {name: self._table(plain_moves(space, name, 0, False)) for name, _ in space.files()}
        self.memo = {name: {} for name, _ in space.files()}
        # Per view level: (tid, record key, view key) -> NEEDS_MORE, or (record page and top page it ran with,
        # Outcome or None, can it be moved to other pages of their groups, its delta's id)
        self.vmemo: tuple = ({}, {})
        self.view_ids = (Interner(), Interner(), Interner())   # per view level, and exact views (_exact)
        # gid (rid << 32 | gid when windowed) -> _views(): G is met again with each record and position
        self.views: dict = {}
        self.file_numbers = {name: file_number(space, name) for name, _ in space.files()}
        self.exact: dict = {}   # (level, tid, rid, exact view id) -> (Outcome, delta id), for runs _moved cannot move
        # Deltas interned as (level, delta), so applying one to a G is looked up by two ints (_applied)
        self.deltas = Interner()
        self.applied: dict = {}   # gid << 32 | delta id -> the G it gives
        self.renamed: dict = {}   # (delta id, rid2, pages ran, pages at hand) -> (rid2, delta id) (_moved)
        self.plans: dict = {}     # plan_key(): (file, rid, view ids, the list's top entry) -> _plan's tuple
        self.record_ids = Interner()   # memo keys of records (record_group)
        self._record_keys: dict = {}   # rid -> (record key id, its 4K page or None)
        self.inv_g: dict = {}       # gid -> global_breaks()
        self.inv_flags: dict = {}   # G's two counters -> global_breaks()
        self.inv_rec = [None] + [{} for _ in self.positions]   # per position: rid << 32 | gid -> keys
        self.inv_cover: dict = {}
        self.window_views: dict = {}   # (G's TLBs, window) -> what a view shows of them (_window_tlbs)
        # (G's TLBs, the view's after the step, window, flushed all) -> G's TLBs after it (_tlbs_after)
        self.after: dict = {}
        self.misses = self.view_misses = 0
        self.refused: dict = {}
        self.step_of: dict = {}   # move -> System.validate_step's tuple, or why the model refuses it

    def _tid(self, move: Move) -> int:
        got = self.tids.get(move)
        if got is None:
            got = self.tids[move] = len(self.tlist)
            self.tlist.append(move)
        return got

    def _table(self, moves: list) -> list:
        """Per plain move at index 0: (move, tid, {point: [(variant at index 0, tid)]})."""
        out = []
        for move in moves:
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
        the moves showed, each move taken from the smallest view of ``G`` it ran on (:meth:`_outcome`). What the
        views give is the same for every ``G`` with the same record and exact views, so it is kept as a plan
        (:meth:`_plan`) and only its deltas are applied to each ``G``."""
        self.misses += 1
        g = self.globals.value(gid)
        if not g[0][self.file_numbers[name]] and not self.absent[name]:
            return (), ()
        vkey = (rid << 32 | gid) if self.u.windowed else gid
        views = self.views.get(vkey)
        if views is None:
            views = self.views[vkey] = self._views(g, rid)
        pkey = self.plan_key(name, rid, views)
        got = self.plans.get(pkey)
        if got is None:
            got = self.plans[pkey] = self.grouped(self._plan(name, rid, views))
        plan, props_items = got
        applied, base, outs = self.applied, gid << 32, []
        if props_items is not None:  # no move needs the whole G: one pass over the plan's distinct outcomes
            for t, rid2, did, flush_all in plan:
                gid2 = applied.get(base | did)
                outs.append((t, rid2, self._applied(gid, g, did) if gid2 is None else gid2, flush_all))
            return self.distinct(outs, rid, gid), props_items
        props = {}
        for t, rid2, did, flush_all, found in plan:
            if rid2 is None:  # needs the whole G: did is the move, flush_all its variants (None: it is one)
                for out in self._on_whole(t, did, flush_all, rid, gid, g, views):
                    outs.append(out[:4])
                    for p in out[4]:
                        props.setdefault(p, out[0])
                continue
            gid2 = applied.get(base | did)
            outs.append((t, rid2, self._applied(gid, g, did) if gid2 is None else gid2, flush_all))
            for p in found:
                props.setdefault(p, t)
        return self.distinct(outs, rid, gid), tuple(props.items())

    @staticmethod
    def distinct(outs: list, rid: int, gid: int) -> tuple:
        """The transitions among the outcomes ``(tid, rid2, gid2, flush_all)`` of a record's moves under ``G``:
        each that changes something, once, named by the first move that gives it."""
        trans, seen = [], set()
        for out in outs:
            t, rid2, gid2, flush_all = out
            if gid2 == gid and rid2 == rid and not flush_all:
                continue
            key = (rid2, gid2, flush_all)
            if key not in seen:
                seen.add(key)
                trans.append(out)
        return tuple(trans)

    @staticmethod
    def grouped(plan: tuple) -> tuple:
        """A plan as :meth:`_local` applies it: ``(plan, None)`` when a move in it needs the whole ``G``; else
        ``((tid, rid2, delta id, flush_all), ...)`` once per distinct outcome, each with the first move giving it,
        and the properties as :meth:`_local` returns them, ``((key, tid), ...)`` in the order the moves show them.
        Neither depends on ``G`` (a plan's moves ran on its views), so they are worked out once per plan. In four
        of the default sweep's 4K spaces a plan has 13 to 18 moves on average, and 6 to 8 distinct outcomes."""
        if any(rid2 is None for _, rid2, _, _, _ in plan):
            return plan, None
        outcomes, props = {}, {}
        for t, rid2, did, flush_all, found in plan:
            outcomes.setdefault((rid2, did, flush_all), t)
            for p in found:
                props.setdefault(p, t)
        return tuple((t,) + key for key, t in outcomes.items()), tuple(props.items())

    def _views(self, g: tuple, rid: int) -> tuple:
        """``G``'s two views as :meth:`_plan` takes them: per level ``(view, its memo key's id, top page)``. With
        windowed TLBs (:attr:`Universe.windowed`) each view shows the 4 KiB TLB entries of the window of the
        record ``rid`` and ``G``'s pool only (:func:`~nbmodel.explore_state.window_tlbs`)."""
        v0, v1 = view0_of(g), view_of(g)
        if self.u.windowed:
            window = self.u.window_of((rid,), g[5])
            v0 = v0[:2] + (self._window_tlbs(g[2], window),) + v0[3:]
            if not g[3]:  # the level-1 view shows the carve position: its window holds the page carved next
                window = self.u.window_of((rid,), g[5], g[4])
            v1 = v1[:2] + (self._window_tlbs(g[2], window),) + v1[3:]
        key, top = self.top_group(v1)
        return (v0, self.view_ids[0].id(v0), None), (v1, self.view_ids[1].id(key), top)

    def _window_tlbs(self, tlbs: tuple, window: tuple) -> tuple:
        """:func:`~nbmodel.explore_state.window_tlbs`, memoized per TLBs and window; the answer is kept one object
        per value (:class:`~nbmodel.explore_state.Parts`), as ``G``'s TLBs are."""
        key = (tlbs, window)
        got = self.window_views.get(key)
        if got is None:
            got = self.window_views[key] = self.u.parts(window_tlbs(tlbs, window))
        return got

    def _tlbs_after(self, tlbs: tuple, got: tuple, window, flushed: bool) -> tuple:
        """:func:`~nbmodel.explore_state.tlbs_after`, memoized the same way: ``G``'s TLBs after a step on a view."""
        key = (tlbs, got, window, flushed)
        out = self.after.get(key)
        if out is None:
            out = self.after[key] = self.u.parts(tlbs_after(tlbs, got, window, flushed))
        return out

    @staticmethod
    def plan_key(name: str, rid: int, views: tuple) -> tuple:
        """What a plan depends on: the file, the record itself (its page, for the renames) and the views: their
        memo keys and the list's top entry as it is (the level-1 key holds only its group). Not "more below" nor
        the carve position, which the exact level-1 view also holds: with a page on the list a level-1 step runs
        with both hidden (:meth:`top_group`), and with none the key holds them."""
        return name, rid, views[0][1], views[1][1], views[1][0][3]

    def _plan(self, name: str, rid: int, views: tuple) -> tuple:
        """Every move of a record (and its variants at the interrupt points it reached) as the views give it, in
        the order :meth:`_local` takes them: ``(tid, rid2, delta id, flush_all, properties)``, or ``(tid, None,
        move, variants, ())`` for a move that needs the whole ``G`` (``variants`` None for a variant)."""
        crid, page = self.record_group(rid)
        plan = []
        there = views[0][0][0][self.file_numbers[name]]
        for move, tid, variants in self.table[name] if there else self.absent[name]:
            got = self._on_views(tid, move, rid, views, crid, page)
            if got is None:
                continue
            if got is WHOLE:
                plan.append((tid, None, move, variants, ()))
                continue
            plan.append((tid,) + got[:4])
            for at in got[4]:
                for var, vtid in variants[at]:
                    out = self._on_views(vtid, var, rid, views, crid, page)
                    if out is not None:
                        plan.append((vtid, None, var, None, ()) if out is WHOLE else (vtid,) + out[:4])
        return tuple(plan)

    def _on_whole(self, tid: int, move: Move, variants, rid: int, gid: int, g: tuple, views: tuple) -> list:
        """A planned move that needs the whole ``G``, with its variants when it is a main move: ``[(tid, rid2,
        gid2, flush_all, properties)]``."""
        crid, page = self.record_group(rid)
        # _plan found that the views hide too much for this move: a main move runs on G itself; a variant may be
        # a different step, so it asks the views first
        got = self._outcome(tid, move, rid, gid, g, views, crid, page) if variants is None else \
            self._on_g(move, rid, gid)
        if got is None:
            return []
        outs = [(tid,) + got[:4]]
        if variants is not None:
            for at in got[4]:
                for var, vtid in variants[at]:
                    out = self._outcome(vtid, var, rid, gid, g, views, crid, page)
                    if out is not None:
                        outs.append((vtid,) + out[:4])
        return outs

    def _outcome(self, tid: int, move: Move, rid: int, gid: int, g: tuple, views: tuple, crid: int, page):
        """One move of one record under ``G``: ``(rid2, gid2, flush_all, properties, interrupt points reached)``
        or None (refused): from the views (:meth:`_on_views`), else run on the whole ``G``."""
        got = self._on_views(tid, move, rid, views, crid, page)
        if got is not WHOLE:
            return None if got is None else (got[0], self._applied(gid, g, got[1])) + got[2:]
        return self._on_g(move, rid, gid)

    def _on_g(self, move: Move, rid: int, gid: int):
        """One move of one record run on the whole ``G``: as :meth:`_outcome` answers, or None (refused)."""
        got = self._try(lambda step: self.u.run(gid, self.rec(move, rid), step), move)
        if got is None or got is NEEDS_MORE:
            return None
        return got.records[(move.file, 0)], got.gid, got.flush_all, got.props, got.reached

    def _on_views(self, tid: int, move: Move, rid: int, views: tuple, crid: int, page):
        """One move of one record on the views of a ``G``: ``(rid2, delta id, flush_all, properties, interrupt
        points reached)``, None (refused), or WHOLE (both views hide what it needs). Run first on the view without
        the per-CPU list (:func:`view0_of`: most moves allocate nothing), then on the view with its top entry
        (:func:`view_of`); each view's result is memoized per ``(move, record, view)`` as a delta that applies to
        every ``G`` with that view. The memo keys the record's page and the list's top page by their 16-page
        groups (:meth:`_moved`)."""
        for level in (0, 1):
            view, vid, top = views[level]
            key = (tid, crid, vid)
            memo = self.vmemo[level]
            entry = memo.get(key)
            if entry is None:
                self.view_misses += 1
                got = self._try(lambda step, lv=level, v=view: self.u.run_view(v, self.rec(move, rid), step, lv),
                                move)
                entry = memo[key] = got if got is NEEDS_MORE else (
                    page, top, got, self._movable(got, move, level, (page, top)), self._delta_id(level, got))
            if entry is NEEDS_MORE:
                continue
            ran_page, ran_top, got, movable, did = entry
            moved = ran_page != page or ran_top != top
            if moved and not movable:
                (got, did), moved = self._exact(level, tid, rid, view, move), False
                if got is NEEDS_MORE:
                    continue
            if got is None:
                return None
            rid2 = got.records[(move.file, 0)]
            if moved:
                rid2, did = self._renamed(rid2, did, level, ran_page, page, ran_top, top)
            return rid2, did, got.flush_all, got.props, got.reached
        return WHOLE

    def _applied(self, gid: int, g: tuple, did: int) -> int:
        """The id of ``G`` (id ``gid``) after the delta ``did``, memoized."""
        key = gid << 32 | did
        got = self.applied.get(key)
        if got is None:
            level, delta = self.deltas.value(did)
            got = self.applied[key] = self.globals.id((apply_delta0 if level == 0 else apply_delta)(
                g, delta, self._tlbs_after))
        return got

    @staticmethod
    def top_group(v1: tuple) -> tuple:
        """A level-1 view's memo key and the PFN on top of its list (None if empty). With a page on the list, the
        key holds the top entry's 16-page group, not its PFN (:meth:`_moved` says why that is sound), and
        neither whether more lie below nor the carve position: such a step runs with the list below its top
        hidden (:meth:`Universe.run_view`), so a second page it takes, from the list or the carve, sends it to
        the whole ``G``, and its delta leaves the rest of the list and the position as they were."""
        if not v1[3]:
            return v1, None
        top = v1[3][0]
        return v1[:3] + (((top[0] >> 4,) + top[1:],), None, None) + v1[6:], top[0]

    def record_group(self, rid: int) -> tuple:
        """A record's memo key and its page: a 4 KiB folio's record with its PFN replaced by its 16-page group
        (:meth:`_moved` says why that is sound); any other record (none, a 2M folio) as itself, page None."""
        got = self._record_keys.get(rid)
        if got is None:
            rec = self.records.value(rid)
            if rec is None or rec[1] != 0:
                got = (self.record_ids.id(("exact", rid)), None)
            else:
                got = (self.record_ids.id((rec[0] >> 4, "group") + rec[1:]), rec[0])
            self._record_keys[rid] = got
        return got

    def _exact(self, level: int, tid: int, rid: int, view: tuple, move: Move):
        """The outcome for this record and view themselves, where the memo's entry for their groups cannot be
        moved to them (:meth:`_moved`); kept apart from the grouped memo."""
        exact = (level, tid, rid, self.view_ids[2].id(view))
        got = self.exact.get(exact)
        if got is None:
            self.view_misses += 1
            out = self._try(lambda step: self.u.run_view(view, self.rec(move, rid), step, level), move)
            got = self.exact[exact] = out, self._delta_id(level, out)
        return got

    def _delta_id(self, level: int, got) -> int | None:
        """The interned ``(level, delta)`` of an outcome on a view (None for a refused or NEEDS_MORE run)."""
        return None if got is None or got is NEEDS_MORE else self.deltas.id((level, got.delta))

    def _renamed(self, rid2: int, did: int, level: int, ran_page, page, ran_top, top) -> tuple:
        """:meth:`_moved`, memoized: ``(rid2, delta id)`` for the pages at hand."""
        key = (did, rid2, ran_page, page, ran_top, top)
        got = self.renamed.get(key)
        if got is None:
            moved, delta = self._moved(rid2, self.deltas.value(did)[1], level, {ran_page: page, ran_top: top})
            got = self.renamed[key] = moved, self.deltas.id((level, delta))
        return got

    def _movable(self, got, move: Move, level: int, pages: tuple) -> bool:
        """Can this outcome be moved to other pages of the same groups (:meth:`_moved`)? Yes when the step flushed
        no range beyond the pages it loaded or allocated, and each renamed page ends in the record or on the list."""
        if got is None or self.u.stray:
            return False
        rec = self.records.value(got.records[(move.file, 0)])
        pushed = got.delta[0 if level == 0 else 1]
        return all(p is None or (rec is not None and rec[0] == p and rec[1] == 0) or any(q == p for q, _, _ in pushed)
                   for p in pages)

    def _moved(self, rid2: int, delta: tuple, level: int, rename: dict) -> tuple:
        """An outcome computed for one record page and top-of-list page, for others of the same 16-page groups.

        Symmetry: the memo keys a 4 KiB record and the list's top entry by their contents and their pages' 16-page
        groups (so their 2 MiB blocks), not their PFNs (:meth:`record_group`, :meth:`top_group`). The encoding
        masks both pages (their bits and 4 KiB TLB holders are in the record and the list entry), so a view shows
        nothing of where in its group either page lies. Two states equal but for that give the same outcome with
        the pages renamed, when the run it came from (:meth:`_movable`) left each page only in the record or on
        the list and flushed no range beyond the pages it loaded or allocated: every other page-table change a
        one-page step makes is per leaf, per 2 MiB block (a split) or per contiguous group (arm64's CONT bit), the
        same for every page of the group. Otherwise the exact state is run (:meth:`_exact`).
        ``tests/test_explore.py`` compares searches with and without this, and plants each way it could go wrong."""
        rec = self.records.value(rid2)
        if rec is not None and rec[0] in rename:
            rid2 = self.records.id((rename[rec[0]],) + rec[1:])
        i = 0 if level == 0 else 1
        pushed = tuple((rename.get(p, p), b, t) for p, b, t in delta[i])
        window = delta[-1]
        if window is not None:  # a renamed page's window is its own (Universe.window_of)
            window = tuple(sorted((rename.get(a, a), rename.get(a, a) + b - a) if b - a == 1 else (a, b)
                                  for a, b in window))
        return rid2, delta[:i] + (pushed,) + delta[i + 1:-1] + (window,)

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
        """Moves that need every record: create, close of a file of several pages, and every move when folios may
        span indexes (:func:`~nbmodel.explore_moves.whole_moves`)."""
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
        """What ``G`` breaks with no record loaded, memoized per ``G``'s two counters (its last part): with no
        folio in any page cache, (a) and (d) have nothing to judge, and (b) and (c) read only those counters
        (every other counter is zero after decoding). So every ``G`` with the same two has the same answer."""
        out = self.inv_g.get(gid)
        if out is None:
            flags = self.globals.value(gid)[6]
            out = self.inv_flags.get(flags)
            if out is None:
                out = self.inv_flags[flags] = self.u.broken_keys(gid, {})
            self.inv_g[gid] = out
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
