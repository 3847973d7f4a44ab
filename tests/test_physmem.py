"""Physical memory map and the deterministic page allocator."""

import pytest

from nbmodel.errors import Errno, ModelInputError
from nbmodel.physmem import MemoryMap, PageAllocator


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
