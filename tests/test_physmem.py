"""Physical memory map and the deterministic page allocator."""

import random

import pytest
from conftest import give_back_last

from nbmodel.errors import Errno, ModelInputError
from nbmodel.physmem import MemoryMap, PageAllocator, PageblockOrder, pageblocks


def test_pc_map_has_holes():
    m = MemoryMap.pc("8G")
    assert not m.is_ram(0) and not m.is_ram(0xA0) and not m.is_ram(0xC0000) and m.is_ram(0x100000)
    assert m.total_pages == 8 * 262144 - 1 - (0x100 - 0x9F)


def test_same_seed_same_pfns_different_seed_different():
    def pfns(seed):
        a = PageAllocator(MemoryMap.pc("4G"), seed=seed)
        return [a.alloc(0) for _ in range(5)] + [a.alloc(9)]
    assert pfns(1) == pfns(1)
    assert pfns(1) != pfns(2)


def _swap_pop_draws(memmap, seed, n):
    """The pageblocks a seeded random.Random draws, swapping a random entry to the end and popping it: whole free
    ones first, then partly free ones (the allocator's draw before its order was fixed at boot)."""
    _, _, whole, partial = pageblocks(memmap)
    rng, out = random.Random(seed), []
    for _ in range(n):
        pool = whole or partial
        i = rng.randrange(len(pool))
        pool[i], pool[-1] = pool[-1], pool[i]
        out.append(pool.pop())
    return out


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_pageblock_order_is_the_seeded_draw_sequence(seed):
    # 64M of the PC map: the first pageblock has holes, so the last draw comes from the partly free ones.
    m = MemoryMap.pc("64M")
    _, _, whole, partial = pageblocks(m)
    assert partial, "the PC map's first pageblock should be partly free"
    order = PageblockOrder(whole, partial, seed)
    n = len(whole) + len(partial)
    assert [order.take(allow_partial=True) for _ in range(n)] == _swap_pop_draws(m, seed, n)
    assert order.take(allow_partial=True) is None


def _cycle_states(a, cycles=5):
    """Allocator snapshots after each of ``cycles`` rounds of alloc(9) + free: a 2M folio allocated and freed."""
    out = []
    for _ in range(cycles):
        pfn = a.alloc(9)
        a.free(pfn, 9)
        out.append(a.snapshot())
    return out


def test_a_freed_pageblock_takes_its_old_place_so_the_state_repeats():
    a = PageAllocator(MemoryMap.flat("64M"), seed=5)
    a.alloc(0)
    before = a.snapshot()
    states = _cycle_states(a)
    assert states == [before] * len(states)


def test_the_repeat_check_catches_a_pageblock_that_comes_back_last(monkeypatch):
    # Planted: a freed pageblock goes to the end of the order (a fresh rank), as a list append would.
    monkeypatch.setattr(PageblockOrder, "give_back", give_back_last)
    a = PageAllocator(MemoryMap.flat("64M"), seed=5)
    a.alloc(0)
    before = a.snapshot()
    assert _cycle_states(a) != [before] * 5


def test_order9_is_aligned_and_order0_never_overlaps():
    a = PageAllocator(MemoryMap.flat("64M"), seed=3)
    big = [a.alloc(9) for _ in range(4)]
    small = [a.alloc(0) for _ in range(600)]
    assert all(p % 512 == 0 for p in big)
    covered = {p + i for p in big for i in range(512)}
    assert not covered & set(small) and len(set(small)) == 600


def test_freed_pages_are_reused_lifo_and_enomem_when_full():
    a = PageAllocator(MemoryMap.flat("4M"), seed=0)
    p = a.alloc(0)
    a.free(p, 0)
    assert a.alloc(0) == p
    while a.alloc(0) >= 0:
        pass
    assert a.alloc(0) == -Errno.ENOMEM and a.alloc(9) == -Errno.ENOMEM


def test_order9_reclaims_freed_order0_block():
    a = PageAllocator(MemoryMap.flat("2M"), seed=0)
    pages = [a.alloc(0) for _ in range(512)]
    for p in pages:
        a.free(p, 0)
    assert a.alloc(9) == 0


def test_double_free_is_bad_input_and_changes_nothing():
    a = PageAllocator(MemoryMap.flat("4M"), seed=0)
    p = a.alloc(0)
    a.free(p, 0)
    snap = a.snapshot()
    with pytest.raises(ModelInputError):
        a.free(p, 0)
    assert a.snapshot() == snap


@pytest.mark.parametrize("ranges", [[(5, 5)], [(0, 10), (5, 20)], [(-1, 4)]])
def test_bad_ranges(ranges):
    with pytest.raises(ModelInputError):
        MemoryMap.of(ranges)
