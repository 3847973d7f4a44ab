"""nbmodel explore: the filemap design proves (a)-(c); every break-it switch yields a replayable
counterexample; per-folio reaches the "ad hoc" state and the write-once refusal."""

import itertools
import json
import random
import subprocess
import sys
import threading
from dataclasses import replace

import pytest
from conftest import ROOT, give_back_last

from nbmodel.designs import SWITCHES
from nbmodel.errors import ModelInputError
from nbmodel.explore import explore
from nbmodel.explore_results import scenario_toml
from nbmodel.physmem import PageblockOrder

FAILURES = ("a", "b", "c", "d", "oops", "warn", "leak")
SWITCH_HOME = {"arm64_no_bbml2": ("filemap", "arm64", None), "put_before_restore": ("secretmem", "x86", None)}


def test_filemap_proves_a_to_c_on_every_arch():
    for arch in ("x86", "arm64"):
        r = explore(design="filemap", arch=arch)
        assert r.complete and r.states > 1000
        for key in ("a", "b", "c"):
            assert r.per_invariant[key] is None, f"{arch}: {key} broken: {r.per_invariant[key]}"


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_every_switch_has_a_verified_counterexample(switch, tmp_path):
    design, arch, mode = SWITCH_HOME.get(switch, ("filemap", "x86", None))
    r = explore(design=design, arch=arch, mode=mode, switches=(switch,))
    found = {k: ce for k, ce in r.per_invariant.items() if ce is not None and k in FAILURES}
    assert found, f"{switch}: nothing breaks"
    key, ce = sorted(found.items())[0]
    assert ce.verified, f"{switch}: counterexample for {key} does not replay"
    if key in ("a", "b", "c", "d"):
        # The emitted scenario replays through `nbmodel run` to the same broken invariant (exit 0: expectation met).
        path = tmp_path / "ce.toml"
        path.write_text(scenario_toml(ce))
        done = subprocess.run([sys.executable, "-m", "nbmodel", "run", "-q", str(path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_per_folio_reaches_ad_hoc_state_and_write_once_refusal():
    r = explore(design="per-folio", arch="x86")
    a = r.per_invariant["a"]
    assert a is not None and a.verified
    assert any(st["op"] == "fallocate" for st in a.steps) or any(st["op"] == "write" for st in a.steps)
    eperm = r.per_invariant.get("eperm")
    assert eperm is not None and eperm.verified
    assert eperm.replay[-1]["result"] == "EPERM"


def test_membership_is_the_state_under_filemap():
    r = explore(design="filemap", arch="x86", offsets=2, sizes=True)
    assert r.dm_states == r.membership_states
    v12 = explore(design="per-folio", arch="x86", offsets=2, sizes=True)
    assert v12.dm_states > v12.membership_states


def test_cli_explore_one_configuration_is_deterministic():
    cmd = [sys.executable, "-m", "nbmodel", "explore", "--design", "filemap", "--arch", "x86", "--no-timing"]
    a = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    b = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert a.returncode == 0 and a.stdout == b.stdout
    assert "holds in all" in a.stdout


def test_cli_bad_arguments_exit_2():
    done = subprocess.run([sys.executable, "-m", "nbmodel", "explore", "--design", "v13"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2


# -- the memoized search against fresh Systems --------------------------------------------------------------
from nbmodel import explore as ex  # noqa: E402
from nbmodel import explore_cli, explore_engine, explore_moves, explore_results, explore_search  # noqa: E402
from nbmodel import explore_state as es  # noqa: E402
from nbmodel import scenario as sc  # noqa: E402
from nbmodel.explore_check import check_conformance  # noqa: E402
from nbmodel.explore_state import Space  # noqa: E402

SPACES = ex.default_spaces(offsets=2, skip=())  # every op, race_add too: the memo is checked on all


@pytest.mark.slow  # conformance: up to ~25 s per case (pytest --durations)
@pytest.mark.parametrize("space", SPACES, ids=lambda sp: sp.label())
def test_memoized_search_conforms_to_fresh_systems(space):
    """Sampled states: the explorer's state, its invariants, and every successor and property agree with
    each move run on a fresh System replaying the state's path."""
    assert check_conformance(space, depth=4, sample=6, seed=1) == []


@pytest.mark.slow  # conformance: up to ~25 s per case (pytest --durations)
@pytest.mark.parametrize("design", ["filemap", "per-folio", "secretmem"])
def test_memoized_search_conforms_with_a_secret_file_and_close(design):
    space = Space(design=design, offsets=1, secret=1, close=True)
    assert check_conformance(space, depth=4, sample=15, seed=2) == []


SWEEP_2M = [sp for sp in ex.default_spaces() if sp.config().large_folios]


def _memo_breaks_differ(space: Space, depth: int) -> list[str]:
    """States (within ``depth`` steps) whose invariants as the search composes them from its memos
    (:meth:`Engine.broken`) differ from the model's check of the whole decoded state."""
    search = explore_search.Search(space)
    parent, *_ = search.run(depth, None)
    e, out = search.e, []
    for s in parent:
        state = search.unpack(s)
        whole = e.u.broken_keys(state[0], dict(zip(e.positions, state[1:], strict=True)))
        if whole != e.broken(state):
            out.append(f"{sorted(whole)} != {sorted(e.broken(state))}")
    return out


@pytest.mark.parametrize("space", SWEEP_2M, ids=lambda sp: sp.label())
def test_the_sweeps_2m_states_break_what_the_whole_check_says(space):
    """The default sweep runs its 2M spaces at one page, where a state's invariants come from the per-record memo
    (the conformance tests above use two pages, where every state is checked whole). A 2M folio's leaves and
    TLB entries are in ``G``, so the memo's key must hold them."""
    assert space.offsets == 1 and space.config().large_folios
    assert _memo_breaks_differ(space, depth=7) == []


def test_the_2m_memo_check_catches_a_key_without_the_folios_page_table(monkeypatch):
    # Planted: the per-record memo keys a 2M folio as a 4K one, without its block's page-table entry (as it did
    # before this test). The key also holds the TLB entries over all the folio's pages, since (a) reads them
    # (tlb_holders over the folio); no state of these spaces within 10 steps has one that decides, so leaving
    # them out is not caught here.
    monkeypatch.setattr(explore_engine, "pt_entry", lambda pt, pfn: None)
    space = next(sp for sp in SWEEP_2M if sp.design == "per-folio" and sp.mode == "rodata-full")
    assert _memo_breaks_differ(space, depth=7)


def test_close_of_a_one_page_file_is_a_move_on_its_page():
    """A file of one page: closing it reads and changes that page's record and ``G`` only, so the search takes it
    with the page's other moves (on the views of ``G``). A longer file's close needs every record."""
    one = Space("filemap", "x86", None, ("restore_4k",), 1)

    def closes(moves):
        return [m for m in moves if m.op == "close"]
    assert closes(explore_moves.plain_moves(one, "g", 0)) and not closes(explore_moves.whole_moves(one, (True,), False))
    assert closes(explore_moves.plain_moves(one, "g", 0))[0].step(one) == {"op": "close", "file": "g"}
    two = replace(one, offsets=2)
    assert not closes(explore_moves.plain_moves(two, "g", 0)) and closes(explore_moves.whole_moves(two, (True,), True))
    assert not closes(explore_moves.plain_moves(Space("filemap", offsets=1), "g", 0))  # 4K files close on request


def test_create_of_a_one_page_file_is_a_move_on_its_page():
    """With the file closed, its one page's only move is the create (no record: it changes ``G`` alone); a longer
    file is created by a move on every record, and so is every file when folios may span indexes."""
    one = Space("filemap", "x86", None, ("restore_4k",), 1)
    assert explore_moves.plain_moves(one, "g", 0, there=False) == [explore_moves.Move("gmem_create", "g", 0)]
    assert explore_moves.plain_moves(one, "g", 0, there=False)[0].step(one) == one.create_step("g")
    assert explore_moves.whole_moves(one, (False,), False) == []
    assert explore_moves.whole_moves(one, (False,), True) == [explore_moves.Move("gmem_create", "g")]
    two = replace(one, offsets=2)
    assert explore_moves.plain_moves(two, "g", 0, there=False) == []
    assert explore_moves.whole_moves(two, (False,), True) == [explore_moves.Move("gmem_create", "g")]
    assert explore_moves.plain_moves(Space("filemap", offsets=1), "g", 0, there=False) == []


def _results(space: Space) -> tuple:
    r = ex.explore_space(space)
    return r.states, r.transitions, r.depth, r.complete, {
        k: ce and [str(st) for st in ce.steps] for k, ce in sorted(r.per_invariant.items())}


CLOSE_SPACES = [sp for sp in SWEEP_2M if sp.mode != "bbml2" and sp.design != "per-folio"] + [
    Space(design, offsets=1, secret=1, close=True) for design in ("filemap", "secretmem")]


@pytest.mark.parametrize("space", CLOSE_SPACES, ids=lambda sp: sp.label())
def test_close_on_its_page_finds_what_the_close_on_every_record_finds(space, monkeypatch):
    """The one-page close run on the views of ``G`` reaches the same states by the same shortest paths as run on
    the whole ``G``: the same counts, depth and counterexamples."""
    on_page = _results(space)
    assert on_page[3]
    monkeypatch.setattr(explore_moves, "closes_alone", lambda sp, name: False)
    assert _results(space) == on_page


@pytest.mark.parametrize("space", SWEEP_2M, ids=lambda sp: sp.label())
def test_the_sweeps_2m_searches_conform_to_fresh_systems(space):
    """The sweep's 2M spaces have one page, so their close is a move on its page (the conformance tests above
    use two pages, where it runs on the whole ``G``)."""
    assert check_conformance(space, depth=4, sample=6, seed=1) == []


def _plant_a_close_that_keeps_the_file(monkeypatch) -> None:
    # Planted: a step run on the view without the per-CPU list leaves which files exist as they were in G
    # (only close, on a one-page file, changes them there): the closed file's record is gone but G still has it.
    real = es.apply_delta0
    monkeypatch.setattr(explore_engine, "apply_delta0", lambda g, delta, memo=None: (lambda out: g[:1] + out[1:])(
        real(g, delta, memo)))


def test_the_2m_conformance_catches_a_close_that_keeps_the_file(monkeypatch):
    _plant_a_close_that_keeps_the_file(monkeypatch)
    assert any("'op': 'close'" in p for p in check_conformance(SWEEP_2M[0], depth=4, sample=6, seed=1))


def test_the_2m_conformance_catches_a_create_on_its_page_that_leaves_the_file_closed(monkeypatch):
    # Planted: the create of a one-page file, a move on its page since it changes G only, is applied to G without
    # its one change: the file still does not exist, and the states a fresh System reaches after it are missing.
    real = es.apply_delta0
    monkeypatch.setattr(explore_engine, "apply_delta0", lambda g, delta, memo=None: (
        lambda out: out if any(g[0]) else (g[0],) + out[1:])(real(g, delta, memo)))
    space = next(sp for sp in SWEEP_2M if sp.design == "filemap" and sp.arch == "x86")
    assert any("'op': 'close'" in p and "missing" in p for p in check_conformance(space, depth=5, sample=40, seed=1))


def test_the_close_comparison_catches_a_close_that_keeps_the_file(monkeypatch):
    _plant_a_close_that_keeps_the_file(monkeypatch)
    space = CLOSE_SPACES[0]
    planted = _results(space)
    monkeypatch.undo()
    monkeypatch.setattr(explore_moves, "closes_alone", lambda sp, name: False)
    assert _results(space) != planted


def _depth_results(space: Space) -> tuple:
    """:func:`_results` within 8 steps: the 2M spaces on arm64 with block mappings take seconds whole when the
    views are not windowed."""
    r = ex.explore_space(space, max_depth=8)
    return r.states, r.transitions, r.depth, r.complete, {
        k: ce and [str(st) for st in ce.steps] for k, ce in sorted(r.per_invariant.items())}


WINDOW_SPACES = SWEEP_2M + [Space(design, "arm64", "rodata-full", ("restore_4k",), 1, secret=1, skip=("race_add",))
                            for design in ("filemap", "secretmem")]


@pytest.mark.parametrize("space", WINDOW_SPACES, ids=lambda sp: f"{sp.label()} secret {sp.secret}")
def test_windowed_tlbs_find_what_the_whole_tlbs_find(space, monkeypatch):
    """Views whose TLBs show 4 KiB entries over the record's folio and the pages the allocator hands out next only
    (:func:`~nbmodel.explore_state.windows_tlbs`) reach the same states by the same shortest paths as views
    with every entry: the same counts, depth and counterexamples."""
    assert es.windows_tlbs(space)
    windowed = _depth_results(space)
    monkeypatch.setattr(es, "windows_tlbs", lambda sp: False)
    assert _depth_results(space) == windowed


def _windowed_results_differ(space: Space, monkeypatch) -> bool:
    planted = _depth_results(space)
    monkeypatch.undo()
    monkeypatch.setattr(es, "windows_tlbs", lambda sp: False)
    return _depth_results(space) != planted


def test_the_window_comparison_catches_a_step_that_drops_the_entries_outside_its_window(monkeypatch):
    # Planted: G after a step on a windowed view keeps only the entries the view showed: the stale 4 KiB entries
    # over a freed pageblock, outside the window, are lost.
    monkeypatch.setattr(explore_engine, "tlbs_after", lambda tlbs, got, window, flushed: got)
    assert _windowed_results_differ(SWEEP_2M[0], monkeypatch)


def _window_tlbs_by_tlbs(self, tlbs, window):
    memo = self.__dict__.setdefault("planted", {})
    if tlbs not in memo:
        memo[tlbs] = self.u.parts(es.window_tlbs(tlbs, window))
    return memo[tlbs]


def _tlbs_after_by_tlbs(self, tlbs, got, window, flushed):
    memo = self.__dict__.setdefault("planted", {})
    if (tlbs, got, flushed) not in memo:
        memo[tlbs, got, flushed] = self.u.parts(es.tlbs_after(tlbs, got, window, flushed))
    return memo[tlbs, got, flushed]


@pytest.mark.parametrize(("memo", "plant"), [("_window_tlbs", _window_tlbs_by_tlbs),
                                             ("_tlbs_after", _tlbs_after_by_tlbs)])
def test_the_window_comparison_catches_a_tlbs_memo_keyed_without_the_window(memo, plant, monkeypatch):
    # Planted: what a view shows of G's TLBs (_window_tlbs), or G's TLBs after a step on a view (_tlbs_after), is
    # looked up without the window, so a view of one window gets the entries of another.
    monkeypatch.setattr(explore_engine.Engine, memo, plant)
    space = next(sp for sp in SWEEP_2M if sp.design == "per-folio" and sp.mode == "rodata-full")
    assert _windowed_results_differ(space, monkeypatch)


def test_parts_give_one_object_per_value():
    parts = es.Parts()
    a = parts(((1, 512), (2, 1, 3)))
    assert parts(((1, 512), (2, 1, 3))) is a and parts(a) is a
    b = parts(((1, 512),))
    assert b is not a and b == ((1, 512),) and len(parts) == 2


def test_the_window_comparison_catches_a_renamed_outcome_that_keeps_its_window(monkeypatch):
    # Planted: an outcome moved to another 4 KiB page of its group (a race_add's folio in the 2M file) keeps the
    # window of the page it ran on, so the merge drops G's entries over that page and keeps none over the new one.
    real = explore_engine.Engine._moved
    monkeypatch.setattr(explore_engine.Engine, "_moved", lambda self, rid2, delta, level, rename: (
        lambda got: (got[0], got[1][:-1] + (delta[-1],)))(real(self, rid2, delta, level, rename)))
    space = next(sp for sp in SWEEP_2M if sp.design == "filemap" and sp.mode == "bbml2")
    assert _windowed_results_differ(space, monkeypatch)


def test_a_windowed_step_stops_where_it_would_read_tlb_entries_outside_its_window():
    """Every way a step reads or changes a TLB entry at a page raises NeedDeeper outside the window (a page of a
    loaded per-CPU-list entry excepted), and so does a page left to a record or the list whose 4 KiB holders the
    view did not show. None of the sweep's searches reaches one; this is what keeps them right if one does."""
    u = es.Universe(SWEEP_2M[0])
    u.decode(u.root[0], {})
    block = u.window_of((), u.globals.value(u.root[0])[5])[0][0]
    u.window, u.window_pages = ((block, block + 512),), frozenset({block + 1024})
    k = u.k
    assert k.kernel_access(block + 7, 0).value == "ok" and k.tlb_holders(block + 7) == [0]
    k.kernel_access(block + 1024, 1)
    for outside in (lambda: k.kernel_access(block + 512, 0), lambda: k.kernel_access_range(block + 500, 20, 0),
                    lambda: k.tlb_holders(block + 511, 2), lambda: k.flush_pfn_range(block - 1, 2, "test")):
        with pytest.raises(es.NeedDeeper):
            outside()
    u.alloc.pcp, u.alloc.low = [block + 600], 0
    with pytest.raises(es.NeedDeeper):
        u._masked_inside()
    u.alloc.pcp = [block + 3]
    u._masked_inside()


def test_the_explore_allocators_memoized_pageblock_draws_are_the_orders():
    """The explore allocator memoizes what its PageblockOrder draws from a pool and what a freed pageblock makes of
    it: drawn again from the same pool, the blocks are those the order itself hands out."""
    u = es.Universe(SWEEP_2M[0])
    a = u.alloc
    start = a.pool
    first = [a.alloc(9) for _ in range(3)]
    a.free(first[1], 9)
    again = a.alloc(9)
    blocks = a.blocks.copy()
    blocks.load(a.pools.value(start))
    want = [blocks.take(False) << 9 for _ in range(3)]
    blocks.give_back(first[1] >> 9)
    assert first == want and again == blocks.take(False) << 9 == first[1]
    a.pool = start
    assert [a.alloc(9) for _ in range(3)] == want


def test_a_flush_is_known_where_loaded_and_fresh_ranges_cover_it():
    u = es.Universe(SWEEP_2M[0])
    u.loaded, u.fresh = [(10, 20)], [(20, 25), (30, 31)]
    assert u._known(12, 25) and u._known(30, 31) and u._known(10, 11)
    assert not u._known(24, 27) and not u._known(5, 11) and not u._known(25, 30)


def test_windowed_tlbs_merge_back_into_g():
    """:func:`~nbmodel.explore_state.window_tlbs` cuts 4 KiB runs at the window's edges and keeps larger entries;
    after a step ``G``'s entries outside the window come back, joined to the step's where they meet, unless it
    flushed everything, and a larger entry the step filled replaces a 4 KiB one at its first page."""
    g = (((0, 1, 10), (20, 512), (600, 1, 4)), ())
    window = ((4, 8),)
    assert es.window_tlbs(g, window) == (((20, 512), (4, 1, 4)), ())
    got = (((4, 1, 4), (20, 512)), ())
    assert es.tlbs_after(g, got, window, False) == (((0, 1, 10), (20, 512), (600, 1, 4)), ())
    assert es.tlbs_after(g, got, window, True) == got
    assert es.tlbs_after(g, (((5, 1, 1), (600, 512)), ()), window, False) == (
        ((0, 1, 4), (5, 1, 1), (8, 1, 2), (600, 512), (601, 1, 3)), ())
    assert es.tlbs_after(g, ((), ()), None, False) == ((), ())


def _page_tables_differ(space: Space, depth: int, sample: int = 25) -> int:
    """Sampled states (within ``depth`` steps) whose decoded page tables are not, entry for entry, those of a
    fresh System that replayed the state's path. The codec keeps only the blocks :meth:`Universe.touch` noted,
    and the state comparison of the conformance check sees only those too: this one compares the whole table."""
    from nbmodel.explore_check import replay

    search = explore_search.Search(space)
    parent, *_ = search.run(depth, None)
    e, n = search.e, 0
    for s in random.Random(1).sample(list(parent), min(sample, len(parent))):
        try:
            path = search.path(parent, s)
        except StopIteration:  # the search's own moves no longer lead to it: its codec lost something
            n += 1
            continue
        real, _ = replay(space, path)
        state = search.unpack(s)
        e.u.decode(state[0], dict(zip(e.positions, state[1:], strict=True)))
        n += e.u.pt.snapshot() != real.k.dmap.pt.snapshot()
    return n


TOUCH_SPACES = [Space("per-folio", arch, mode, ("restore_4k",), 1) for arch, mode in ex.ARCHES] + [
    Space("filemap", "x86", None, ("skip_flush",), 3)]


@pytest.mark.parametrize("space", TOUCH_SPACES, ids=lambda sp: sp.label())
def test_decoded_page_tables_are_the_replayed_ones_whole(space):
    assert _page_tables_differ(space, depth=6) == 0


def test_the_whole_table_check_catches_a_touch_that_misses_a_block(monkeypatch):
    # Planted: the codec notes the blocks of 4K allocations only, so a 2M folio's zap or split is not saved.
    real = es.Universe.touch
    monkeypatch.setattr(es.Universe, "touch", lambda self, pfn, npages: real(self, pfn, npages) if npages == 1
                        else None)
    assert _page_tables_differ(TOUCH_SPACES[0], depth=6)


def test_sizes_refuse_2m_folios_whose_views_the_records_do_not_hold():
    with pytest.raises(ModelInputError, match="4K folios only"):
        ex.state_space_sizes("filemap", range(1, 2), switches=("restore_4k",))
    assert ex.state_space_sizes("filemap", range(1, 2))[0]["dm_states"] >= 1


def test_conformance_check_catches_a_wrong_delta(monkeypatch):
    """Plant: a delta applied to the whole G forgets that the step took the top page of the per-CPU list."""
    def forgetful(g, delta, memo=None):
        popped, pushed, rest, flushed, window = delta
        return rest[:3] + (g[3] + pushed,) + rest[3:]

    monkeypatch.setattr(explore_engine, "apply_delta", forgetful)
    assert check_conformance(Space(design="filemap", offsets=2), depth=5, sample=40, seed=3, first=40)


def test_conformance_check_catches_a_view_that_hides_what_a_step_reads(monkeypatch):
    """Plant: the allocator on a view takes a new page when its loaded part of the per-CPU list runs out, instead
    of stopping (a racing secretmem fault takes two pages in one step)."""
    def blind(self):
        if self.pcp:
            pfn = self.pcp.pop()
            self.low = min(self.low, len(self.pcp))
            return pfn
        self.carved += 1
        return self.carve[self.carved - 1]

    monkeypatch.setattr(es.ExploreAllocator, "_alloc0", blind)
    assert check_conformance(Space(design="secretmem", offsets=1, secret=1), depth=5, sample=40, seed=3, first=40)


def test_conformance_check_catches_a_view_without_the_list_that_drops_it(monkeypatch):
    """Plant: a step run on the view without the per-CPU list (most moves) loses the list below what it pushed."""
    def dropping(g, delta, memo=None):
        pushed, rest, flushed, window = delta
        return rest[:3] + (pushed, g[4], rest[3], rest[4])

    monkeypatch.setattr(explore_engine, "apply_delta0", dropping)
    assert check_conformance(Space(design="filemap", offsets=2), depth=5, sample=40, seed=3, first=40)


def test_conformance_check_catches_counters_that_are_not_carried(monkeypatch):
    """Plant: the views leave the invariants' two counters out; a delta that then forgets the ones ``G`` had
    (a freed-unmapped page seen earlier) makes (b) heal, which a fresh System does not."""
    real = es.apply_delta0

    def forgetting(g, delta, memo=None):
        out = real(g, delta)
        return out[:6] + (delta[1][4],)

    monkeypatch.setattr(explore_engine, "apply_delta0", forgetting)
    assert check_conformance(Space(design="per-folio", offsets=1), depth=6, sample=60, seed=3, first=60)


def _frontiers(space: Space, depth: int, monkeypatch) -> list:
    """The frontiers a search of ``space`` expands, level by level, to ``depth``."""
    seen_levels = []
    real = explore_search.Search._level

    def level(self, frontier, *rest):
        seen_levels.append(list(frontier))
        return real(self, frontier, *rest)

    monkeypatch.setattr(explore_search.Search, "_level", level)
    explore_search.Search(space).run(max_depth=depth)
    return seen_levels


def test_each_state_is_expanded_once(monkeypatch):
    """A state joins the frontier once, whether a plain move, a move ending in flush_tlb_all() or a whole-G move
    reaches it first: the search's set of states seen is kept with ``parent``."""
    space = Space(design="filemap", offsets=2)
    levels = _frontiers(space, 5, monkeypatch)
    states = [s for lv in levels for s in lv]
    assert len(levels) == 5 and len(states) == len(set(states)) > 100


def test_the_expanded_once_check_catches_a_state_not_marked_seen(monkeypatch):
    """Planted: a state first reached by a flushing or whole-G move is not added to the set of states seen."""
    def take(s, pos, states, props, parent, nxt, found, seen):
        for ns in states:
            if ns not in seen:
                parent[ns] = s
                nxt.append(ns)
        for key, tid in props:
            if key not in found:
                found[key] = ("step", s, (pos, tid))

    monkeypatch.setattr(explore_search.Search, "_take", staticmethod(take))
    with pytest.raises(AssertionError):
        test_each_state_is_expanded_once(monkeypatch)


def test_packed_states_add_one_difference_per_move():
    """A packed state is a number in base RADIX; changing one position's id is adding one difference, and
    unpacking gives the tuple back, for ids up to the bound the interners keep them under."""
    search = explore_search.Search(Space(design="filemap", offsets=3))
    assert es.ID_BOUND < explore_search.RADIX < 1 << 30
    top = es.ID_BOUND - 1
    for state in [(0, 0, 0, 0), (top, top, top, top), (5, 0, top, 7), (8253, 371, 0, 12)]:
        s = search.pack(state)
        assert search.unpack(s) == state
        for pos in range(1, 4):
            for new in (0, 1, top):
                moved = state[:pos] + (new,) + state[pos + 1:]
                assert search.pack(moved) == s + (new - state[pos]) * explore_search.RADIX ** pos
                assert search.unpack(s + (new - state[pos]) * explore_search.RADIX ** pos) == moved


def test_an_interner_refuses_ids_past_its_bound():
    """A record or ``G`` id is a digit of a packed state: the interners stop at their bound with ExploreLimit
    (which the command line reports) rather than hand out an id that would alias another state."""
    names = es.Interner(3)
    assert [names.id(v) for v in "abcab"] == [0, 1, 2, 0, 1]
    with pytest.raises(es.ExploreLimit, match="more than 3 distinct"):
        names.id("d")
    assert len(names) == 3 and names.id("c") == 2
    u = explore_engine.Engine(Space(design="filemap", offsets=1)).u
    assert u.records.bound == u.globals.bound == es.ID_BOUND


def test_default_sweep_sizes_follow_the_table():
    spaces = ex.default_spaces()
    pages = {(sp.design, sp.switches): sp.offsets for sp in spaces}
    assert pages["per-folio", ()] == pages["secretmem", ()] == 1 and pages["filemap", ()] == 3
    assert pages["filemap", ("unhooked_migration",)] == 2 and pages["per-folio", ("unhooked_migration",)] == 1
    assert pages["per-folio", ("arm64_no_bbml2",)] == pages["secretmem", ("arm64_no_bbml2",)] == 3
    assert all(sp.offsets == 4 for sp in ex.default_spaces(offsets=4))  # --offsets wins over the table


#: Run in a fresh interpreter: a sweep's workers are forked only from a process with no other thread (the test
#: process may hold some, from the browser and live tests), and these tests must see the pool fork.
SUMMARY = """
import json, sys
from nbmodel import explore as ex
METHOD = ex.pool_context().get_start_method()  # as the first sweep below will start its workers
def summary(results):
    return [list(r) if isinstance(r, tuple) else [r.space.label(), r.states, r.transitions, r.complete,
            r.space.config().large_folios, {k: ce and [str(st) for st in ce.steps]
                                            for k, ce in sorted(r.per_invariant.items())}] for r in results]
def show(results):
    print(json.dumps([METHOD, summary(results)], default=str))
"""


def _fresh(code: str) -> list:
    """``[start method, summary]`` printed by ``code`` (after :data:`SUMMARY`) in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", SUMMARY + code], cwd=ROOT, capture_output=True, text=True,
                         timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def _here(results) -> list:
    scope: dict = {}
    exec(SUMMARY, scope)
    return json.loads(json.dumps(scope["summary"](results), default=str))


@pytest.mark.slow  # the whole default sweep: about 30 CPU-s here, in two processes as `nbmodel explore` runs it
def test_default_sweep_is_exhaustive():
    method, results = _fresh("show(ex.sweep(ex.default_spaces(), jobs=2))")
    assert method == "fork"
    spaces = ex.default_spaces()
    explored = 0
    for sp, r in zip(spaces, results, strict=True):
        if r[0] == "same":
            continue
        label, states, _, complete, _, _ = r
        assert label == sp.label()
        assert complete, label
        explored += 1
    assert explored == 45
    skipped = {sp.label() for sp in spaces if sp.skip}
    assert skipped == {"per-folio [restore_4k] on x86 4-level without race_add",
                       "per-folio [restore_4k] on arm64 bbml2 without race_add"}


def test_the_sweep_leaves_out_only_what_sweep_skip_names_and_skip_replaces_it():
    spaces = ex.default_spaces(designs=("per-folio",), switch_sets=[(), ("restore_4k",)])
    assert [sp.skip for sp in spaces] == [(), (), (), ("race_add",), ("race_add",), ()]
    left_out = ex.default_spaces(designs=("per-folio",), switch_sets=[("restore_4k",)])[0]
    assert "race_add" not in {m.op for m in explore_moves.plain_moves(left_out, "g", 0)}
    assert all(sp.skip == ("migrate",) for sp in ex.default_spaces(
        designs=("per-folio",), switch_sets=[("restore_4k",)], skip=("migrate",)))
    assert all(sp.skip == () for sp in ex.default_spaces(designs=("per-folio",), switch_sets=[("restore_4k",)],
                                                         skip=()))


def test_the_left_out_op_is_what_keeps_the_search_from_ending():
    """Why SWEEP_SKIP holds race_add: with it, per-folio restore_4k on x86 is still growing at the 2M budget;
    without it the same search is complete."""
    space = ex.default_spaces(designs=("per-folio",), arches=(("x86", None),), switch_sets=[("restore_4k",)])[0]
    assert ex.explore_space(space).complete
    bounded = ex.explore_space(replace(space, skip=()))
    assert not bounded.complete and bounded.states >= ex.BUDGET_2M


FILEMAP_SWEEP = ("ex.default_spaces(designs=('filemap',), switch_sets=[(), ('skip_flush',), ('restore_4k',)], "
                 "offsets=1)")


def test_a_sweep_in_two_processes_finds_what_one_process_finds():
    spaces = eval(FILEMAP_SWEEP)
    assert any(sp.config().large_folios for sp in spaces) and not spaces[0].config().large_folios
    method, two = _fresh(f"show(ex.sweep({FILEMAP_SWEEP}, jobs=2, max_depth=5))")
    assert method == "fork"
    # In the order given, although the pool starts the 2M searches first.
    assert two == _here(ex.sweep(spaces, jobs=1, max_depth=5))


def test_forked_workers_run_a_planted_mutant():
    # Planted: the filemap remove hook forgets to restore the direct map. A worker that imported the package
    # afresh (spawn, forkserver) would run the unmutated code and find nothing.
    method, found = _fresh(f"""
from nbmodel import designs
designs.Filemap.prep_remove_unmapped_folio = lambda self, k, m, folio: k.folio_zero(folio)
spaces = {FILEMAP_SWEEP}[:3]
show(ex.sweep(spaces, jobs=2, max_depth=4) + ex.sweep(spaces, jobs=1, max_depth=4))
""")
    assert method == "fork" and len(found) == 6
    assert all(r[5]["b"] for r in found), [r[0] for r in found if not r[5]["b"]]


def test_the_pool_does_not_fork_while_another_thread_runs():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert ex.pool_context().get_start_method() != "fork"
    finally:
        stop.set()
        t.join()


def _filemap_2m(**kw):
    return explore(design="filemap", arch="arm64", mode="rodata-full", switches=("restore_4k",), offsets=1,
                   large_folios=True, **kw)


def test_a_2m_space_ends_because_a_freed_pageblock_takes_its_old_place():
    r = _filemap_2m(max_states=None)
    assert r.complete and r.states == 334


@pytest.mark.slow  # about 3 s: a thousand 2M states
def test_the_2m_space_would_not_end_if_a_freed_pageblock_came_back_last(monkeypatch):
    # Planted: the allocator's order gives a freed pageblock a fresh place at the end (a list append), so each
    # 2M allocation after a free takes a new pageblock and the states never repeat.
    monkeypatch.setattr(PageblockOrder, "give_back", give_back_last)
    r = _filemap_2m(max_states=1_000)
    assert not r.complete and r.states > 334


def test_filemap_at_four_pages_completes_within_the_default_budget():
    r = explore(design="filemap", arch="x86", offsets=4)
    assert r.complete and r.states <= ex.BUDGET
    assert all(r.per_invariant[k] is None for k in ("a", "b", "c"))


@pytest.mark.slow
def test_memoized_search_equals_the_whole_state_search(monkeypatch):
    """The per-record memo and the views change nothing: the same space searched with every move run on the
    whole state (no locality assumed) has the same states and the same shortest counterexamples."""
    for design, depth in (("filemap", None), ("per-folio", 4), ("secretmem", 5)):
        memo = explore(design=design, offsets=2, max_depth=depth, max_states=None)
        with monkeypatch.context() as mp:
            mp.setattr(explore_engine.Engine, "__init__", _whole_state_init)
            whole = explore(design=design, offsets=2, max_depth=depth, max_states=None)
        assert (memo.states, memo.complete) == (whole.states, whole.complete)
        lengths = {k: len(v.steps) for k, v in memo.per_invariant.items() if v}
        assert lengths == {k: len(v.steps) for k, v in whole.per_invariant.items() if v}


def _first_breaks(space: Space) -> tuple[dict, dict]:
    """Per invariant: the first state (in BFS order) the search noted as breaking it, and the first one the
    composed check (:meth:`Engine.broken`, every record read) finds, over the same states."""
    search = explore_search.Search(space)
    parent, found, *_ = search.run(None, None)
    noted = {k: how[1] for k, how in found.items() if how[0] == "state"}
    first: dict = {}
    for s in parent:
        for key in search.e.broken(search.unpack(s)) - first.keys():
            first[key] = s
    return noted, first


@pytest.mark.parametrize("design", ["per-folio", "secretmem"])
def test_the_search_notes_the_first_state_breaking_each_invariant(design):
    """The search stops reading records once (a) and (d) are found (:data:`RECORD_INVARIANTS`); what it notes
    is still the first state breaking each invariant."""
    noted, first = _first_breaks(Space(design=design, offsets=1))
    assert set(first) >= {"a", "b"} and noted == first


def test_the_first_breaks_check_catches_a_gate_that_forgets_an_invariant(monkeypatch):
    # Planted: the search's gate leaves out (d), so once (a) is found it stops reading records with (d) pending.
    monkeypatch.setattr(explore_search, "RECORD_INVARIANTS", frozenset({"a"}))
    noted, first = _first_breaks(Space(design="per-folio", offsets=1))
    assert noted != first and "d" in first


def test_a_record_breaking_an_invariant_outside_the_gate_is_refused(monkeypatch):
    # Planted: the engine's set leaves out (d); a per-folio record that breaks (d) must not pass unnoticed.
    monkeypatch.setattr(explore_engine, "RECORD_INVARIANTS", frozenset({"a"}))
    with pytest.raises(AssertionError, match="RECORD_INVARIANTS"):
        explore(design="per-folio", offsets=1, max_states=None)


def _search_signature(space: Space, max_states: int | None) -> tuple:
    r = ex.explore_space(space, max_states=max_states)
    return r.states, r.transitions, r.depth, r.complete, {
        k: v and tuple(json.dumps(st, sort_keys=True) for st in v.steps) for k, v in r.per_invariant.items()}


def _no_page_symmetry(mp) -> None:
    """Key the explorer's view memo by the record's and the top-of-list page's PFNs, not their groups."""
    mp.setattr(explore_engine.Engine, "top_group", staticmethod(lambda v1: (v1, v1[3][0][0] if v1[3] else None)))
    mp.setattr(explore_engine.Engine, "record_group", lambda self, rid: (self.record_ids.id(rid), None))


#: Spaces where the view memo's page symmetry is used: 4K folios with several pages on the list, a secret file
#: beside the guest_memfd, and a 2M space whose splits take page-table pages from the list.
PAGE_SPACES = [(Space(design="per-folio", offsets=1, secret=1, switches=("put_before_restore",)), None),
               (Space(design="secretmem", arch="arm64", mode="bbml2"), 20_000),
               (Space(design="per-folio", arch="arm64", mode="bbml2", offsets=1, switches=("restore_4k",)), 1200)]


@pytest.mark.parametrize(("space", "budget"), PAGE_SPACES, ids=[sp.label() for sp, _ in PAGE_SPACES])
def test_the_page_symmetry_changes_no_search(space, budget, monkeypatch):
    """Keying the view memo by the record's and the top-of-list page's 16-page groups and renaming the pages
    (:meth:`Engine._moved`) finds the same states, transitions and counterexamples as keying it by the pages
    themselves, with fewer runs."""
    engines = []
    real = explore_engine.Engine.__init__

    def counted(self, sp):
        real(self, sp)
        engines.append(self)

    monkeypatch.setattr(explore_engine.Engine, "__init__", counted)
    grouped = _search_signature(space, budget)
    _no_page_symmetry(monkeypatch)
    exact = _search_signature(space, budget)
    assert grouped == exact
    assert engines[0].view_misses < engines[1].view_misses


def test_the_page_group_is_what_arm64_contiguous_entries_need():
    """Why the memo keys a page by its 16-page group, not just its block: on arm64 with BBML2 a zap clears the
    contiguous bit over its page's group, so a fallocate that takes the list's top page gives the renamed
    outcome for another page of that group, and a different one for a page of the next group. The explored
    spaces never carve past one group (a search keyed without the group finds the same states), so no search
    comparison can show that a key without it would be wrong; this test checks the fact the key is built on."""
    space = Space(design="filemap", arch="arm64", mode="bbml2", offsets=1)
    search = explore_search.Search(space)
    parent, *_ = search.run(6, None)
    e = search.e
    state = next(st for st in map(search.unpack, parent) if e.globals.value(st[0])[3] and st[1] == 0)
    g = e.globals.value(state[0])
    top, bits, tlb = g[3][-1]
    assert g[4] < 15 and top & 15 < 15  # page 15 of the top's group is not carved yet
    args = next(m for m, _, _ in e.table["g"] if m.op == "fallocate").step(space)
    step = e.u.sys.validate_step(args.pop("op"), args)
    v1 = es.view_of(g)

    def on_top(pfn):
        out = e.u.run_view(v1[:3] + (((pfn, bits, tlb),),) + v1[4:], {("g", 0): 0}, step, 1)
        return out.records[("g", 0)], out.delta

    ran = on_top(top)
    for other, same in ((top | 15, True), ((top | 15) + 1, False)):
        assert (e._moved(*ran, 1, {top: other}) == on_top(other)) is same


PLANTS = ["every run movable", "no rename", "list below shown"]


@pytest.mark.parametrize("plant", PLANTS)
def test_the_page_symmetry_comparison_catches_a_wrong_symmetry(plant, monkeypatch):
    # Planted: the outcome is moved for runs that left a page where the encoding shows its place (or flushed
    # beyond what they loaded); or moved without renaming the pages; or a level-1 view, keyed without "more
    # below" and the carve position, runs with the list below shown when nothing is there (a step that takes a
    # second page then carves, at a position the key does not hold).
    space, budget = PAGE_SPACES[2] if plant == "every run movable" else PAGE_SPACES[0]
    grouped = _search_signature(space, budget)
    with monkeypatch.context() as mp:
        _no_page_symmetry(mp)
        exact = _search_signature(space, budget)
    assert grouped == exact
    if plant == "every run movable":
        monkeypatch.setattr(explore_engine.Engine, "_movable", lambda self, got, move, level, pages: got is not None)
    elif plant == "no rename":
        monkeypatch.setattr(explore_engine.Engine, "_moved", lambda self, rid2, delta, level, rename: (rid2, delta))
    else:
        monkeypatch.setattr(es.Universe, "run_view", lambda self, view, recs, step, level=1: self._run(
            view[:3] + view[3:4] + view[5:] + (es.NO_FLAGS,), recs, step, view[4]) if level == 1 else
            self._run(view[:3] + ((), 0) + view[3:] + (es.NO_FLAGS,), recs, step, True, level=0))
    assert _search_signature(space, budget) != exact


def _no_plans(mp) -> None:
    """Work out what the views give each record under each ``G`` afresh: no plan is ever found again."""
    fresh = itertools.count()
    mp.setattr(explore_engine.Engine, "plan_key", staticmethod(lambda name, rid, views: next(fresh)))


#: Plan keys too coarse: one that keys the record by its 16-page group (the renames need its page), and one that
#: leaves out the list's top entry as it is (the level-1 key holds only its group).
PLAN_PLANTS = {
    "record group": lambda self, name, rid, views: _PLAN_KEY(name, self.record_group(rid)[0], views),
    "no top entry": lambda self, name, rid, views: _PLAN_KEY(name, rid, views)[:4],
}
_PLAN_KEY = explore_engine.Engine.plan_key


@pytest.mark.parametrize(("space", "budget"), PAGE_SPACES[:2], ids=[sp.label() for sp, _ in PAGE_SPACES[:2]])
def test_plans_change_no_search(space, budget, monkeypatch):
    """A plan (what the views give one record, :meth:`Engine._plan`), kept per record and views and applied to
    every ``G`` with them, finds the same states, transitions and counterexamples as working each ``G`` out
    afresh; and it is found again (fewer plans than records under a ``G``)."""
    engines = []

    def kept(self, sp):
        _INIT(self, sp)
        engines.append(self)

    monkeypatch.setattr(explore_engine.Engine, "__init__", kept)
    planned = _search_signature(space, budget)
    assert len(engines[0].plans) < engines[0].misses
    with monkeypatch.context() as mp:
        _no_plans(mp)
        assert _search_signature(space, budget) == planned


def _ungrouped(plan: tuple) -> tuple:
    """:meth:`Engine.grouped` declining every plan: each move of a plan applied in turn, as for a plan with a
    move that needs the whole ``G``."""
    return plan, None


def _last_move_per_outcome(plan: tuple) -> tuple:
    """A planted :meth:`Engine.grouped` that names each outcome by the last move giving it, not the first."""
    if any(e[1] is None for e in plan):
        return plan, None
    outcomes, props = {}, {}
    for t, rid2, did, flush_all, found in plan:
        outcomes[(rid2, did, flush_all)] = t
        for p in found:
            props.setdefault(p, t)
    return tuple((t,) + key for key, t in outcomes.items()), tuple(props.items())


def _props_of_first_moves(plan: tuple) -> tuple:
    """A planted :meth:`Engine.grouped` that keeps the properties of the first move per outcome only."""
    if any(e[1] is None for e in plan):
        return plan, None
    outcomes, props = {}, {}
    for t, rid2, did, flush_all, found in plan:
        if (rid2, did, flush_all) not in outcomes:
            outcomes[(rid2, did, flush_all)] = t
            for p in found:
                props.setdefault(p, t)
    return tuple((t,) + key for key, t in outcomes.items()), tuple(props.items())


@pytest.mark.parametrize(("space", "budget"), PAGE_SPACES[:2], ids=[sp.label() for sp, _ in PAGE_SPACES[:2]])
def test_grouped_plans_change_no_search(space, budget, monkeypatch):
    """A plan applied once per distinct outcome (:meth:`Engine.grouped`) finds the same states, transitions and
    counterexamples (each move and racing step named as before) as applying each of its moves in turn."""
    grouped = _search_signature(space, budget)
    monkeypatch.setattr(explore_engine.Engine, "grouped", staticmethod(_ungrouped))
    assert _search_signature(space, budget) == grouped


@pytest.mark.parametrize("plant", [_last_move_per_outcome, _props_of_first_moves])
def test_the_grouped_comparison_catches_a_wrong_grouping(plant, monkeypatch):
    space, budget = PAGE_SPACES[0]
    with monkeypatch.context() as mp:
        mp.setattr(explore_engine.Engine, "grouped", staticmethod(_ungrouped))
        each = _search_signature(space, budget)
    monkeypatch.setattr(explore_engine.Engine, "grouped", staticmethod(plant))
    assert _search_signature(space, budget) != each


@pytest.mark.parametrize("plant", PLAN_PLANTS)
def test_the_plan_comparison_catches_a_key_too_coarse(plant, monkeypatch):
    space, budget = PAGE_SPACES[0]
    with monkeypatch.context() as mp:
        _no_plans(mp)
        fresh = _search_signature(space, budget)
    monkeypatch.setattr(explore_engine.Engine, "plan_key", PLAN_PLANTS[plant])
    assert _search_signature(space, budget) != fresh


_INIT = explore_engine.Engine.__init__


def _whole_state_init(self, space):
    _INIT(self, space)
    self.full = True


# -- sweeps skip what a switch cannot change ------------------------------------------------------------------
def _skipped_wrongly(spaces) -> list[str]:
    """Skipped sweep entries whose own search finds something other than the search they were skipped for."""
    results = ex.sweep(spaces, max_depth=4)
    out = []
    for sp, r in zip(spaces, results, strict=True):
        if isinstance(r, tuple):
            own, base = ex.explore_space(sp, max_depth=4), results[r[1]]
            n = len(sp.setup_steps())
            if (own.states, own.transitions) != (base.states, base.transitions) or {
                    k: v and v.steps[n:] for k, v in own.per_invariant.items()} != {
                    k: v and v.steps[n:] for k, v in base.per_invariant.items()}:
                out.append(sp.label())
    return out


SWEEP = dict(designs=("per-folio", "filemap"), arches=(("x86", None),), offsets=2,
             switch_sets=[(), ("zero_after_insert",), ("unhooked_migration",), ("skip_flush",)])


def test_sweep_skips_only_switches_the_design_never_consulted():
    spaces = ex.default_spaces(**SWEEP)
    results = ex.sweep(spaces, max_depth=4)
    same = {sp.label(): spaces[r[1]].label() for sp, r in zip(spaces, results, strict=True) if isinstance(r, tuple)}
    assert same == {"per-folio [zero_after_insert] on x86 4-level": "per-folio on x86 4-level",
                    "per-folio [unhooked_migration] on x86 4-level": "per-folio on x86 4-level"}
    assert _skipped_wrongly(spaces) == []


def test_sweep_skip_check_catches_a_switch_set_that_forgets(monkeypatch):
    """Plant: the switch set stops noting what it is asked, so every switch looks unconsulted and filemap's
    zero_after_insert (which turns a zeroing into an oops) is skipped too: the check above must see it."""
    monkeypatch.setattr(es.Watched, "__contains__", lambda self, name: frozenset.__contains__(self, name))
    assert "filemap [zero_after_insert] on x86 4-level" in _skipped_wrongly(ex.default_spaces(**SWEEP))


# -- each switch is the cause of what it breaks ---------------------------------------------------------------
CAUSAL = {  # switch -> (explore kwargs, the property it breaks)
    "skip_flush": (dict(design="filemap"), "a"),
    "zero_after_insert": (dict(design="filemap"), "oops"),
    "restore_4k": (dict(design="filemap", offsets=1), "c"),
    "arm64_no_bbml2": (dict(design="filemap", arch="arm64"), "warn"),
    "unhooked_migration": (dict(design="filemap"), "a"),
    "put_before_restore": (dict(design="secretmem", offsets=1, secret=1, skip=("migrate", "replace")), "b"),
}


def test_every_switch_is_covered():
    assert set(CAUSAL) == set(SWITCHES) and explore_moves.SWITCH_FINDS == {k: v[1] for k, v in CAUSAL.items()}


@pytest.mark.parametrize("switch", sorted(CAUSAL))
def test_switch_breaks_what_holds_without_it(switch):
    kw, key = CAUSAL[switch]
    base = explore(**kw)
    assert base.per_invariant[key] is None, f"{key} breaks even without {switch}"
    broken = explore(switches=(switch,), **kw)
    ce = broken.per_invariant[key]
    assert ce is not None and ce.verified, f"{switch} does not break {key}"
    runs = sc.run(sc.loads(ce.to_toml(), "ce.toml"))
    assert runs and all(r.ok for r in runs), [c.got for r in runs for c in r.checks if not c.ok]


def test_put_before_restore_needs_the_race():
    ce = explore(design="secretmem", offsets=1, secret=1, skip=("migrate", "replace"),
                 switches=("put_before_restore",)).per_invariant["b"]
    assert any(st.get("race") for st in ce.steps), ce.steps


# -- shortest paths and formats ----------------------------------------------------------------------------------
def test_per_folio_shortest_paths():
    r = explore(design="per-folio")
    a, eperm = r.per_invariant["a"], r.per_invariant["eperm"]
    assert [st["op"] for st in a.steps] == ["gmem_create", "fallocate"]      # cached, still mapped
    assert [st["op"] for st in eperm.steps][0] == "gmem_create" and len(eperm.steps) == 3
    assert eperm.steps[-1]["op"] == "write" and eperm.replay[-1]["result"] == "EPERM"


def test_counterexample_as_json_toml_and_steps():
    ce = explore(design="filemap", switches=("skip_flush",)).per_invariant["a"]
    doc = json.loads(json.dumps(ce.to_dict()))
    assert doc["invariant"] == "a" and doc["verified"] and doc["steps"] == ce.steps
    assert [d["op"] for d in doc["replay"]] == [st["op"] for st in ce.steps]
    scen = sc.loads(ce.to_toml(), "ce.toml")
    assert scen.setup["designs"] == ["filemap"] and scen.setup["switches"] == ["skip_flush"]
    assert len(scen.steps) == len(ce.steps)
    assert ce.numbered()[-1].startswith(f"{len(ce.steps):>3}. ")


def test_replay_reaches_the_same_invariant():
    ce = explore(design="filemap", switches=("unhooked_migration",)).per_invariant["b"]
    sys_ = explore_results.replay(ce.steps, explore_results.setup_of(ce.space))
    assert sys_.first_broken["b"] == len(ce.steps)


def test_explore_is_deterministic_and_bounded():
    a = explore(design="per-folio", max_depth=3).to_json(timing=False)
    assert a == explore(design="per-folio", max_depth=3).to_json(timing=False)
    doc = json.loads(a)
    assert doc["depth"] <= 3 and not doc["complete"] and "seconds" not in doc
    small = explore(design="per-folio", max_states=500)
    assert 500 <= small.states < 600 and not small.complete


def test_state_space_sizes_membership_is_the_state():
    rows = ex.state_space_sizes("filemap", range(1, 3))
    assert [r["offsets"] for r in rows] == [1, 2] and all(r["complete"] for r in rows)
    assert all(r["dm_states"] == r["membership_states"] for r in rows)
    v12 = ex.state_space_sizes("per-folio", range(1, 2))
    assert v12[0]["dm_states"] > v12[0]["membership_states"]


def test_bad_spaces_are_model_input_errors():
    from nbmodel.errors import ModelInputError
    for kw in (dict(design="v13"), dict(switches=("nope",)), dict(offsets=0), dict(cpus=0)):
        with pytest.raises(ModelInputError):
            explore(**kw)


# -- the command line --------------------------------------------------------------------------------------------
def _cli(*args):
    import argparse
    import contextlib
    import io
    parser = argparse.ArgumentParser()
    explore_cli.add_arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = explore_cli.run(parser.parse_args(list(args)))
    return rc, out.getvalue()


def test_cli_sweep_table_and_json():
    rc, text = _cli("--design", "filemap", "--no-timing", "--offsets", "2")
    assert rc == 0 and "filemap on x86 4-level" in text and "states/s" not in text
    rc, text = _cli("--design", "filemap", "--arch", "x86", "--json", "--no-timing", "--offsets", "2")
    doc = json.loads(text)
    assert rc == 0 and doc["total"]["configurations"] == 1 and "seconds" not in doc["total"]
    assert doc["results"][0]["per_invariant"]["a"] is None


def _cli_spaces(*args):
    import argparse
    parser = argparse.ArgumentParser()
    explore_cli.add_arguments(parser)
    return explore_cli.spaces_from_args(parser.parse_args(list(args)))


def test_cli_skip_op_replaces_what_the_sweep_leaves_out():
    base = ("--design", "per-folio", "--switch", "restore_4k", "--arch", "x86")
    assert [sp.skip for sp in _cli_spaces(*base)] == [("race_add",)]
    assert [sp.skip for sp in _cli_spaces(*base, "--skip-op", "none")] == [()]
    assert [sp.skip for sp in _cli_spaces(*base, "--skip-op", "migrate")] == [("migrate",)]
    rc, text = _cli(*base, "--no-timing", "--json")
    assert rc == 0 and json.loads(text)["results"][0]["label"].endswith("4-level without race_add")


def test_cli_scenario_out_replays_with_nbmodel_run(tmp_path):
    rc, text = _cli("--design", "filemap", "--arch", "x86", "--switch", "skip_flush", "--no-timing",
                    "--scenario-out", str(tmp_path))
    files = sorted(tmp_path.glob("*.toml"))
    assert rc == 0 and any(f.name.endswith("-A.toml") for f in files)
    for f in files:
        runs = sc.run(sc.load(f))
        assert all(r.ok for r in runs), f


def test_cli_check_and_sizes():
    rc, text = _cli("--design", "filemap", "--arch", "x86", "--offsets", "2", "--check", "5")
    assert rc == 0 and "OK" in text
    rc, text = _cli("--design", "filemap", "--sizes", "2")
    assert rc == 0 and "memberships" in text


def test_the_sweep_rates_keep_4k_and_2m_searches_apart():
    from nbmodel.explore_results import ExploreResult

    def result(large, states, cpu, complete=True):
        # 2M folios as the sweep gets them: through the restore_4k switch, not the space's own flag
        sp = Space(design="filemap", offsets=1, switches=("restore_4k",) if large else ())
        assert sp.config().large_folios == large
        return ExploreResult(sp, states, 0, 1, complete, cpu, {}, cpu_seconds=cpu)
    rates = explore_results.exhaustive_rates([result(False, 40_000, 2.0), result(True, 1_000, 2.0),
                                              result(False, 9, 9.0, False)])
    assert rates["complete_states_per_cpu_second"] == 41_000 // 4
    assert rates["complete_4k_states_per_cpu_second"] == 20_000
    assert rates["complete_2m_states_per_cpu_second"] == 500
    assert (rates["bounded"], rates["bounded_cpu_seconds"]) == (1, 9.0)
    assert (rates["complete"], rates["complete_4k"], rates["complete_2m"]) == (2, 1, 1)


def test_tlb_entries_round_trip_as_runs():
    entries = {10: 1, 11: 1, 12: 1, 14: 1, 16: 16, 17: 1, 18: 1, 512: 512, 1024: 1, 1025: 1}
    runs = es._tlb_runs(entries, masked={11})
    assert runs == ((10, 1, 1), (12, 1, 1), (14, 1, 1), (16, 16), (17, 1, 2), (512, 512), (1024, 1, 2))
    back = es._tlb_entries(runs)
    assert back == {k: v for k, v in entries.items() if k != 11}
    assert list(back) == sorted(back)   # the decoded TLB keeps its entries in PFN order, as before


def _runs_by_definition(entries: dict, masked) -> tuple:
    out: list = []
    for s, n in sorted(entries.items()):
        if n != 1:
            out.append((s, n))
        elif s not in masked:
            if out and len(out[-1]) == 3 and out[-1][0] + out[-1][2] == s:
                out[-1] = (out[-1][0], 1, out[-1][2] + 1)
            else:
                out.append((s, 1, 1))
    return tuple(out)


def test_tlb_runs_are_the_runs_of_consecutive_4k_entries():
    # The codec finds runs by halving (one comparison for 512 consecutive pages): against the definition, on
    # runs of every length crossing the halving points, large entries and masked pages between them.
    rng = random.Random(5)
    for _ in range(3000):
        entries: dict = {}
        for _ in range(rng.randrange(0, 12)):
            kind = rng.random()
            if kind < 0.15:
                entries[rng.randrange(0, 20) * 512] = 512
            elif kind < 0.25:
                entries[rng.randrange(0, 400) * 16] = 16
            else:
                first = rng.randrange(0, 10000)
                entries.update(dict.fromkeys(range(first, first + rng.choice([1, 2, 3, 7, 64, 300, 512])), 1))
        masked = set(rng.sample(sorted(entries), min(len(entries), rng.randrange(0, 5))))
        assert es._tlb_runs(entries, masked) == _runs_by_definition(entries, masked)


def test_the_search_runs_with_the_collector_paused_and_restores_it(monkeypatch):
    import gc
    search = explore_search.Search(Space("filemap", offsets=1))
    seen = []
    level = search._level
    monkeypatch.setattr(search, "_level", lambda *a: seen.append(gc.isenabled()) or level(*a))
    assert gc.isenabled()
    search.run(2, None)
    assert seen and not any(seen) and gc.isenabled()


def _tlb_runs_reference(entries: dict, masked) -> tuple:
    """The TLB encoding written plainly: large entries as they are, the 4 KiB ones outside ``masked`` as runs."""
    out = [(f, s) for f, s in entries.items() if s != 1]
    ones = sorted(p for p, s in entries.items() if s == 1 and p not in masked)
    i = 0
    while i < len(ones):
        j = i
        while j + 1 < len(ones) and ones[j + 1] == ones[j] + 1:
            j += 1
        out.append((ones[i], 1, j - i + 1))
        i = j + 1
    return tuple(sorted(out))


def test_tlb_runs_agree_with_the_plain_encoding_on_random_tlbs():
    rng = random.Random(7)
    for _ in range(400):
        entries = {}
        for _ in range(rng.randrange(0, 40)):
            first = rng.randrange(0, 2048)
            if rng.random() < 0.8:
                entries.update(dict.fromkeys(range(first, first + rng.randrange(1, 600)), 1))
            else:
                span = rng.choice((16, 512))
                entries[first - first % span] = span
        masked = set(rng.sample(range(2048), rng.randrange(0, 6))) | set(rng.sample(sorted(entries) or [0], 1))
        assert es._tlb_runs(entries, masked) == _tlb_runs_reference(entries, masked)
