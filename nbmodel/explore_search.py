"""The breadth-first search: states packed into one int (:data:`RADIX`), moves as added differences, and the
paths back to the root that counterexamples are made of (:class:`Search`).
"""

from __future__ import annotations

from itertools import filterfalse

from .explore_engine import RECORD_INVARIANTS, Engine
from .explore_moves import Move, whole_moves
from .explore_results import Counterexample, verify
from .explore_state import (
    Space,
)
from .gcpause import gc_paused
from .invariants import INVARIANTS

#: The radix of a packed state: ``G``'s id is its lowest digit, then one digit per file index. Ids stay below
#: :data:`~nbmodel.explore_state.ID_BOUND` < RADIX. Below 2**30, one digit of CPython's ints: the search divides
#: by it up to twice per state and file index (expanding the state, and checking it while (a) or (d) is
#: pending), and a one-digit divisor takes the short division (105 against 167 ns a divmod of a 4-index state
#: here). Not a power of two: Python hashes an int by its value modulo 2**61 - 1, so 30-bit fields would alias
#: (``2**61`` is 1 there) and crowd the dict's low hash bits; an odd radix with mixed bits (a prime) spreads them.
RADIX = 0x3C6EF35F


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
        self.weights = [RADIX ** pos for pos in range(self.n + 1)]
        self._whole: dict = {}                                 # gid -> are the whole moves taken there?
        self._whole_exists: dict = {}                          # G's "which files exist" -> the same

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
        property, the transitions taken, the depth and whether the search is complete. The cyclic collector is
        paused meanwhile (:func:`~nbmodel.gcpause.gc_paused`): the memos only grow, and each full collection
        walks them all again; the few cycles a search makes (21,797 objects for filemap's 345,547 states at 4
        pages) wait for the next collection after it."""
        with gc_paused():
            return self._run(max_depth, max_states)

    def _run(self, max_depth, max_states):
        e = self.e
        root = self.pack(e.root)
        parent = {root: None}
        # The states seen, again as a set: the inner loop's membership tests (one per transition, most of them
        # hits) are faster on a set than on the dict, whose entries are wider (387 against 461 ns a test, 150,000
        # packed states, a synthetic test on the development machine).
        seen = {root}
        self.found = found = {}
        self.pending = {k for k, inv in INVARIANTS.items() if self.space.design in inv.designs}
        self._note([root], found)
        self.budget = max_states
        frontier, depth, transitions, cut = [root], 0, 0, False
        while frontier and (max_depth is None or depth < max_depth):
            steps: dict = {}
            frontier, count, cut = self._level(frontier, parent, seen, steps)
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
        """Record the first state (in BFS order) breaking each invariant not yet broken: what its ``G`` breaks,
        and (while (a) or (d) is pending) what each record adds (:meth:`Engine.broken`, unpacked inline)."""
        pending = self.pending
        if not pending:
            return
        e = self.e
        if e.full:
            for s in states:
                self._found(s, e.broken(self.unpack(s)), found)
                if not pending:
                    return
            return
        global_breaks, record_breaks, n = e.global_breaks, e.record_breaks, self.n
        caches = e.inv_rec
        records = not pending.isdisjoint(RECORD_INVARIANTS)
        for s in states:
            q, gid = divmod(s, RADIX)
            out = global_breaks(gid)
            if records:
                for pos in range(1, n + 1):
                    q, rid = divmod(q, RADIX)
                    if rid:
                        got = caches[pos].get((rid << 32) | gid)
                        if got is None:
                            got = record_breaks(pos, rid, gid)
                        if got:
                            out = out | got
            if out and not pending.isdisjoint(out):
                self._found(s, out, found)
                if not pending:
                    return
                records = not pending.isdisjoint(RECORD_INVARIANTS)

    def _found(self, s: int, keys, found: dict) -> None:
        for key in keys:
            if key in self.pending:
                self.pending.discard(key)
                found.setdefault(key, ("state", s, None))

    def _entry(self, pos: int, rid: int, gid: int) -> tuple:
        """``(differences, flushing transitions, properties, count)`` of the moves on position ``pos``."""
        trans, props = self.e.local(pos, rid, gid)
        weight = self.weights[pos]
        diffs = tuple([(gid2 - gid) + (rid2 - rid) * weight for _, rid2, gid2, fa in trans if not fa])
        slow = tuple([(rid2, gid2) for _, rid2, gid2, fa in trans if fa])
        got = self.diffs[pos][(rid << 32) | gid] = (diffs, slow, props, len(trans))
        return got

    def whole_needed(self, gid: int) -> bool:
        """Are the moves on every record (:meth:`Engine.whole`) taken in states with this ``G``?"""
        got = self._whole.get(gid)
        if got is None:
            exists = self.e.globals.value(gid)[0]   # whole_moves reads only which files exist
            got = self._whole_exists.get(exists)
            if got is None:
                got = self._whole_exists[exists] = bool(whole_moves(self.space, exists, self.e.full))
            self._whole[gid] = got
        return got

    def _level(self, frontier: list, parent: dict, seen: set, found: dict) -> tuple[list, int, bool]:
        """Expand one BFS level: the next frontier, how many transitions were taken, whether the budget cut
        the level short."""
        e = self.e
        nxt, count = [], 0
        budget = self.budget
        append = nxt.append
        slots = [(pos, self.diffs[pos]) for pos in range(1, self.n + 1)] if not e.full else []
        entry_of, whole_needed, whole_known = self._entry, self.whole_needed, self._whole
        contains, add = seen.__contains__, seen.add
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
                    add(ns)
                    parent[ns] = s
                    append(ns)
                if props:
                    props = self._unfound(props, found)
                    if len(props) != len(entry[2]):  # an entry stops carrying what is found: no work here next time
                        cache[(rid << 32) | gid] = (diffs, slow, props, n)
                if slow or props:
                    self._take(s, pos, [self._flushed(s, pos, rid2, gid2) for rid2, gid2 in slow], props, parent,
                               nxt, found, seen)
            whole = whole_known.get(gid)
            if whole is None:
                whole = whole_needed(gid)
            if whole:
                trans, props = e.whole(self.unpack(s))
                count += len(trans)
                self._take(s, None, [self.pack(ns) for _, ns in trans], props, parent, nxt, found, seen)
            if budget is not None and len(parent) >= budget:
                return nxt, count, True
        return nxt, count, False

    def _unfound(self, props: tuple, found: dict) -> tuple:
        """The ``(key, tid)`` pairs whose key neither this level (``found``) nor an earlier one has found."""
        done = self.found
        return tuple(p for p in props if p[0] not in found and p[0] not in done)

    @staticmethod
    def _take(s: int, pos, states: list, props: tuple, parent: dict, nxt: list, found: dict, seen: set) -> None:
        """Add the states not seen yet (reached from ``s`` by moves on ``pos``) and the properties not found yet."""
        for ns in states:
            if ns not in seen:
                seen.add(ns)
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


__all__ = ["Search", "RADIX"]
