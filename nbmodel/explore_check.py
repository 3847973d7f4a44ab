"""The explorer's memoized search against fresh Systems.

The explorer (:mod:`nbmodel.explore`) computes every transition with :meth:`System.run_validated`, but on a scratch
System loaded with only what a step needs, and it reuses the answer: per page record and shared state ``G``,
per view of ``G`` as a delta, per index of a file. Those reuses are claims about locality, not about the
designs, and this module tests them. For a sample of the states a bounded search reaches,
:func:`check_conformance` replays the state's path on a fresh :class:`~nbmodel.system.System` and compares:

* the state: :meth:`Universe.project` of the fresh System equals the explorer's state;
* the invariants broken in it (the model's own :func:`~nbmodel.invariants.broken`) and the explorer's;
* the successors: every move from the state (each op on each page, each reached interrupt point, create and
  close) run on its own fresh replay, projected, against the explorer's memoized successors; and the
  observations of those steps (with the invariants a racing read breaks inside them) against the properties
  the memo recorded.

It returns a list of mismatches (empty when they agree). The tests run it on every design, arch and switch;
``nbmodel explore --check`` runs it on the configurations given.
"""

from __future__ import annotations

import copy
import random

from .errors import ModelInputError
from .explore_moves import move_variants, plain_moves, whole_moves
from .explore_results import setup_of
from .explore_search import Search
from .explore_state import Space, observed
from .invariants import broken
from .system import System

_BOOTED: dict = {}


def _booted(space: Space) -> System:
    """A fresh booted System for ``space`` (a copy of a cached one: copying beats booting 4 GiB again)."""
    key = (space.design, space.arch, space.mode, space.switches, space.memory, space.seed, space.cpus,
           space.write, space.large_folios, space.batch_flush, space.large_zap, space.fwb)
    if key not in _BOOTED:
        setup = setup_of(space)
        _BOOTED.clear()
        _BOOTED[key] = System(design=space.design, switches=tuple(space.switches), trace=False,
                              **{k: v for k, v in setup.items() if k not in ("designs", "switches")})
    return copy.deepcopy(_BOOTED[key])


def instrumented(space: Space) -> tuple[System, list]:
    """A fresh System for ``space`` whose kernel records racing reads as ``(pfn, result)``."""
    sys = _booted(space)
    racing: list = []
    access = sys.k.kernel_access

    def recorded(pfn, cpu=None, write=False, what="read"):
        got = access(pfn, cpu, write, what)
        if what == "racing read":
            racing.append((pfn, got))
        return got

    sys.k.kernel_access = recorded
    return sys, racing


def replay(space: Space, moves) -> tuple[System, list]:
    """A fresh System (its racing reads recorded) that ran ``space``'s setup and then ``moves``."""
    sys, racing = instrumented(space)
    for st in space.setup_steps() + [m.step(space) for m in moves]:
        sys.step(**st)
    return sys, racing


def check_conformance(space: Space, depth: int = 5, sample: int = 60, seed: int = 0, first: int = 0) -> list[str]:
    """Mismatches between the memoized search and fresh Systems on the ``first`` states in breadth-first
    order (the shallowest) and ``sample`` more drawn from those reached within ``depth`` steps."""
    search = Search(space)
    parent, *_ = search.run(depth, None)
    states = list(parent)  # breadth-first order
    rest = states[first:]
    picked = states[:first] + (rest if len(rest) <= sample else random.Random(seed).sample(rest, sample))
    problems: list[str] = []
    for s in picked:
        problems += _check_state(search, parent, s)
        if len(problems) > 20:
            break
    return problems


def _check_state(search: Search, parent: dict, packed: int) -> list[str]:
    space, e = search.space, search.e
    path = search.path(parent, packed)
    s = search.unpack(packed)
    where = " ; ".join(str(m.step(space)) for m in path) or "(setup only)"
    try:
        real, _ = replay(space, path)
    except ModelInputError as err:  # the explorer took a move a fresh System refuses on this path
        return [f"{space.label()}: the path [{where}] does not replay: {err}"]
    want = e.u.expand(s)
    got = e.u.project(real)
    if got != want:
        return [f"{space.label()}: state after [{where}]\n  fresh    {got}\n  explorer {want}"]
    out = []
    already = frozenset(broken(real))
    if already != e.broken(s):
        out.append(f"{space.label()}: invariants after [{where}]: fresh {sorted(broken(real))}, "
                   f"explorer {sorted(e.broken(s))}")
    fresh_next, fresh_props = set(), set()
    for move in _moves(space, e, s):
        out += _step_fresh(search, path, s, move, where, fresh_next, fresh_props)
    memo_next, memo_props = _memoized(search, s)
    if memo_next != fresh_next - {want}:
        out.append(f"{space.label()}: memoized successors differ from fresh steps after [{where}]: "
                   f"{len(memo_next - fresh_next)} extra, {len(fresh_next - {want} - memo_next)} missing")
    # An invariant the state itself breaks is found at the state; inside a step the fresh System also sees it
    # through the other pages, which a step on one page leaves alone, so it is left out on both sides.
    memo_props, fresh_props = memo_props - already, fresh_props - already
    if memo_props != fresh_props:
        out.append(f"{space.label()}: properties after [{where}]: fresh {sorted(fresh_props)}, "
                   f"memoized {sorted(memo_props)}")
    return out


def _moves(space: Space, e, s: tuple):
    exists = e.globals.value(s[0])[0]
    if e.full:
        yield from whole_moves(space, exists, True)
        return
    names = [n for n, _ in space.files()]
    for name, i in e.positions:
        yield from plain_moves(space, name, i, exists[names.index(name)])
    yield from whole_moves(space, exists, False)


def _step_fresh(search: Search, path, s: tuple, move, where: str, nxt: set, props: set) -> list[str]:
    """``move`` and its racing variants, each on a fresh replay of ``path``."""
    space, e = search.space, search.e
    pre = {r[0]: r[5] for r in e.u.expand(s)[1:] if r is not None}
    out, todo, first = [], [move], True
    while todo:
        mv = todo.pop(0)
        real, racing = replay(space, path)
        args = mv.step(space)
        before = dict(real.k.counters)
        try:  # the step as the explorer runs it: the state after it is checked on its own (Engine.broken)
            op, clean, at, icpu = real.validate_step(args.pop("op"), args)
            result, saw, inside, interrupt = real.run_validated(op, clean, at, icpu)
        except ModelInputError as err:
            if first:
                return []  # the explorer skips a move System refuses (counted in ExploreResult.refused)
            out.append(f"{space.label()}: {mv} after [{where}] refused by System: {err}")
            continue
        if first:
            todo += move_variants(space, mv, tuple(dict.fromkeys(p for p in _points(space, path, mv))))
            first = False
        nxt.add(e.u.project(real))
        props.update(observed(op, result, saw, interrupt, real.k.counters.delta(before), pre, racing) | set(inside))
    return out


def _points(space: Space, path, move) -> list[str]:
    """The interrupt points ``move`` passes, on a fresh replay."""
    real, _ = replay(space, path)
    seen: list = []
    point = real.k.point

    def recorded(name, pfn):
        seen.append(name)
        point(name, pfn)

    real.k.point = recorded
    real.step(**move.step(space))
    return seen


def _memoized(search: Search, s: tuple) -> tuple[set, set]:
    """The explorer's successors of ``s`` (as plain tuples) and the properties its memo recorded."""
    e, gid = search.e, s[0]
    nxt = {e.u.expand(search.unpack(ns)) for _, ns in search.successors(search.pack(s))}
    props = set()
    if not e.full:
        for pos in range(1, len(s)):
            props.update(k for k, _ in e.local(pos, s[pos], gid)[1])
    if search.whole_needed(gid):
        props.update(k for k, _ in e.whole(s)[1])
    return nxt, props


__all__ = ["check_conformance", "instrumented"]
