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
a delta (:class:`~nbmodel.explore_engine.Engine`); a state is one int (:class:`~nbmodel.explore_search.Search`),
so the search's inner loop adds and looks up ints. :mod:`nbmodel.explore_check` (the tests, ``--check``)
replays sampled states on fresh Systems and compares every memoized successor with the whole-state step. Every
counterexample is replayed on a fresh System before it is reported.

The parts, each a module: what the search looks for and the moves it makes (:mod:`nbmodel.explore_moves`), the
transitions (:mod:`nbmodel.explore_engine`), the search (:mod:`nbmodel.explore_search`), what it reports and
replays (:mod:`nbmodel.explore_results`), the text output (:mod:`nbmodel.explore_report`) and the command line
(:mod:`nbmodel.explore_cli`, ``nbmodel explore --help``). This module holds the entry points: :func:`explore` ->
:class:`~nbmodel.explore_results.ExploreResult`, :func:`sweep` over :func:`default_spaces`, and
:func:`state_space_sizes`.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace

from .designs import DESIGNS, SWITCHES
from .errors import ModelInputError
from .explore_moves import PROPERTIES
from .explore_results import ExploreResult
from .explore_search import Search
from .explore_state import (
    Space,
)
from .setup import Setup

#: Default state budget: the search stops as soon as it has visited this many states. Enough for the filemap
#: design at 4 pages (345,547 states) to complete.
BUDGET = 400_000


#: With 2M folios a state costs 0.06-0.8 ms of CPU time here against about 9 µs with 4K folios (the default
#: sweep's complete searches, measured 2026-12-04 on the 2-core development machine, after the TLB windows of
#: :func:`~nbmodel.explore_state.windows_tlbs`): a step still zeroes, zaps or restores 512 pages, and the
#: smallest of these spaces have a distinct (record, views of ``G``) pair for more than half their states
#: (per-folio on arm64 bbml2: 520 for 742 states), and every move runs again for each. This
#: budget bounds the wait. The spaces are finite (the allocator's next pageblock depends only on which are free,
#: :class:`~nbmodel.physmem.PageblockOrder`). The default sweep's nine (restore_4k, one page) all complete within
#: it: secretmem on x86 (786 states), arm64 bbml2 (1,210) and rodata-full (2,952), filemap on x86 (1,818), arm64
#: bbml2 (11,100) and rodata-full (334), per-folio on arm64 rodata-full (17,098), and per-folio on x86 (552) and
#: arm64 bbml2 (742) without race_add (:data:`SWEEP_SKIP`), which they would not complete with.
BUDGET_2M = 20_000


#: Why a configuration with 2M folios may stay bounded, as the sweep's legend says it.
BOUNDED_2M = (f"with 2M folios a state costs tens of 4K ones, so the budget is {BUDGET_2M:,} states; "
              "--max-states 0 lifts it")


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
    check_space(space)
    if sizes and space.config().large_folios:
        raise ModelInputError("direct-map views are counted for 4K folios only: a 2M folio's leaves are in the "
                              "shared state, not in its record")
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


def check_space(space: Space) -> None:
    """ModelInputError unless ``space`` names a known design and switches, 0..16 pages per file and 1..8 CPUs."""
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


#: Ops the sweep leaves out of a ``(design, switch, arch, mode)`` whose search would not end otherwise (the label
#: says "without ..."); a ``skip`` given to :func:`default_spaces` (``--skip-op``) replaces this. Per-folio
#: ``restore_4k`` with 2M folios on a direct map with large leaves: ``race_add`` puts a 4K folio into the 2M file
#: (as ``filemap_grab_folio()``'s fallback can), so 4K and 2M folios, split page tables and freed pages still
#: in TLBs mix. With it the levels still grow at 400,000 states on x86 (depth 24 adds 48,330) and at 150,000 on
#: arm64 bbml2 (depth 13 adds 54,505), measured 2026-12-04 (``--skip-op none --max-states 0``); without it, 552
#: states on x86 and 742 on arm64 bbml2, complete. Rodata-full keeps it (17,098 states, complete). The ``-EEXIST``
#: path race_add exercises is searched in every 4K configuration.
SWEEP_SKIP = {("per-folio", "restore_4k", "x86", None): ("race_add",),
              ("per-folio", "restore_4k", "arm64", "bbml2"): ("race_add",)}


def default_spaces(designs=DESIGNS, arches=ARCHES, switch_sets=None, **kw) -> list[Space]:
    """The sweep ``nbmodel explore`` runs: every design x arch x (no switch, each switch alone);
    ``arm64_no_bbml2`` (which forces the arm64 mode) once per design. Pages: ``offsets`` if given, else what
    :data:`SWITCH_SPACE` and :data:`DESIGN_PAGES` say, else 3. Ops left out: ``skip`` if given, else what
    :data:`SWEEP_SKIP` says."""
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
                skip = {} if "skip" in kw else {"skip": tuple(sorted({op for sw in switches for op in SWEEP_SKIP.get(
                    (design, sw, arch, mode), ())}))}
                out.append(Space(design, arch, mode, tuple(switches), **{**kw, **extra, **skip}))
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
    ``("same", i)``. The spaces without switches go first, in ``jobs`` processes (None: one); ``progress`` shows a
    tqdm bar on stderr (when it is a terminal). The results do not depend on ``jobs``."""
    from tqdm import tqdm  # here, not at the top: the chapters that import this module do not sweep

    class Bar(tqdm):
        monitor_interval = 0  # no monitor thread: the workers are forked from this process

    bar = Bar(total=len(spaces), desc="explore", unit="configuration", file=sys.stderr,
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


def default_jobs() -> int:
    """Worker processes ``nbmodel explore`` uses by default: the CPUs this process may run on (at most 64)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, 64))


def pool_context():
    """How the sweep starts its workers. Forked, where fork exists and this process runs no other thread: a forked
    worker runs the code as this process has it (a test's planted mutant included; Python 3.14 makes forkserver
    Linux's default). With other threads running (a Jupyter kernel's), a fork could copy a lock one of them
    holds into the child, which would wait on it forever; the workers then start from a fresh server process
    ("forkserver", or the platform's default), which imports the package as installed."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else None)


def _explore_all(spaces: list[Space], todo: list[int], jobs, max_depth, max_states, bar) -> dict:
    jobs = max(1, min(jobs or 1, len(todo)))
    out = {}
    if jobs == 1:
        for i in todo:
            bar.set_postfix_str(spaces[i].label(), refresh=False)
            out[i] = explore_space(spaces[i], max_depth, max_states)
            bar.update()
        return out
    # The 2M searches first: they are the long ones, and a pool that starts them last waits on them alone.
    todo = sorted(todo, key=lambda i: not spaces[i].config().large_folios)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=pool_context()) as pool:
        futs = {pool.submit(explore_space, spaces[i], max_depth, max_states): i for i in todo}
        for f in as_completed(futs):
            out[futs[f]] = f.result()
            bar.update()
    return out


__all__ = ["explore", "explore_space", "sweep", "default_jobs", "state_space_sizes", "default_spaces", "DESIGN_PAGES",
           "SWEEP_SKIP", "BUDGET", "BUDGET_2M", "SWITCH_SPACE", "pool_context"]
