"""Conformance of the explorer's fast engine (:mod:`nbmodel.explore_fast`) with the real System.

For a sample of the states a bounded search reaches, :func:`check_conformance` replays the state's path on a
fresh :class:`~nbmodel.system.System` and compares, move by move:

* the state: :func:`~nbmodel.explore_fast.project` of the real System equals the explorer's state;
* the invariants broken in it (the model's own :func:`~nbmodel.invariants.broken`);
* every move from it (each op on each page, each reached interrupt point): the real step's result, racing
  read, observations and invariants broken inside the step, and the real state after it, against the fast
  engine's step on the whole state;
* the explorer's memoized successors (per record, through views and deltas) against those whole-state steps.

It returns a list of mismatches (empty when the engines agree). The tests run it on every design, arch and
switch; ``nbmodel explore --check`` runs it on the configurations given.
"""

from __future__ import annotations

import copy
import random
from dataclasses import replace

from . import explore_fast as fast
from .errors import ModelInputError
from .explore import Search, _variants, _whole_moves, setup_of
from .explore_state import Space, observe
from .invariants import broken
from .system import System

INVARIANT_KEYS = frozenset("abcd")


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


def _replay(space: Space, moves) -> tuple[System, list]:
    sys, racing = instrumented(space)
    for st in space.setup_steps() + [m.step(space) for m in moves]:
        sys.step(**st)
    return sys, racing


def check_conformance(space: Space, depth: int = 5, sample: int = 60, seed: int = 0, first: int = 0) -> list[str]:
    """Mismatches between the fast engine and System on the ``first`` states in breadth-first order (the
    shallowest) and ``sample`` more drawn from those reached within ``depth`` steps."""
    search = Search(space, "fast")
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


def _check_state(search: Search, parent: dict, s: tuple) -> list[str]:
    space, e = search.space, search.e
    path = search.path(parent, s)
    where = " ; ".join(str(m.step(space)) for m in path) or "(setup only)"
    real, _ = _replay(space, path)
    want = e.u.expand(s)
    got = fast.project(e.m, real)
    if got != want:
        return [f"{space.label()}: state after [{where}]\n  real {got}\n  fast {want}"]
    out = []
    if frozenset(broken(real)) != e.broken(s, "ad"):
        out.append(f"{space.label()}: invariants after [{where}]: real {sorted(broken(real))}, "
                   f"fast {sorted(e.broken(s, 'ad'))}")
    full = set()
    for move in _moves(space, e, s):
        out += _check_move(search, path, s, move, where, full)
    memo = set(_memo_successors(search, s))
    if memo != full - {s}:
        out.append(f"{space.label()}: memoized successors differ from whole-state steps after [{where}]: "
                   f"{len(memo - full)} extra, {len(full - {s} - memo)} missing")
    return out


def _moves(space: Space, e, s: tuple):
    g = e.globals.value(s[0])
    for name, i in e.positions:
        if g[0][e.m.names.index(name)]:
            for move, _, _ in e.table[name]:
                yield replace(move, index=i)
    yield from _whole_moves(space, g[0], False)


def _check_move(search: Search, path, s: tuple, move, where: str, full: set) -> list[str]:
    space, e = search.space, search.e
    g = e.globals.value(s[0])
    recs = {p: e.records.value(r) for p, r in zip(e.positions, s[1:], strict=True)}
    out = []
    try:
        fout = fast.step(e.m, g, recs, move)
    except fast.Invalid:
        return out
    for var in [move] + _variants(space, move, fout.reached):
        out += _compare_step(search, path, s, var, g, recs, where, full)
    return out


def _compare_step(search, path, s, move, g, recs, where, full) -> list[str]:
    space, e = search.space, search.e
    fout = fast.step(e.m, g, recs, move)
    real, racing = _replay(space, path)
    pre = {r[0]: r[4] for r in recs.values() if r is not None}
    racing.clear()
    try:
        st = real.step(**move.step(space))
    except ModelInputError as err:
        return [f"{space.label()}: {move} after [{where}] refused by System: {err}"]
    label = f"{space.label()}: {move.step(space)} after [{where}]"
    proj = fast.project(e.m, real)
    want = (fout.g,) + tuple(fout.records[p] for p in e.positions)
    full.add((e.globals.id(fout.g),) + tuple(e.records.id(fout.records[p]) for p in e.positions))
    out = []
    if proj != want:
        out.append(f"{label}: state\n  real {proj}\n  fast {want}")
    if (st.result, st.interrupt) != (fout.result, fout.interrupt):
        out.append(f"{label}: result real {st.result}/{st.interrupt}, fast {fout.result}/{fout.interrupt}")
    real_obs = observe(st, pre, racing) | (frozenset(st.broken) - frozenset(broken(real)))
    fast_obs = fout.props - (frozenset(fout.props & INVARIANT_KEYS) & frozenset(broken(real)))
    if real_obs != fast_obs:
        out.append(f"{label}: observations real {sorted(real_obs)}, fast {sorted(fast_obs)}")
    return out


def _memo_successors(search: Search, s: tuple):
    e = search.e
    gid = s[0]
    for pos in range(1, len(s)):
        trans, _ = e.local(pos, s[pos], gid)
        for _, rid2, gid2, fa in trans:
            yield search._flushed(s, pos, rid2, gid2) if fa else (gid2,) + s[1:pos] + (rid2,) + s[pos + 1:]
    if not all(e.globals.value(gid)[0]) or search.space.close:
        for _, ns in e.whole(s)[0]:
            yield ns


__all__ = ["check_conformance", "instrumented"]
