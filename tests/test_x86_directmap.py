"""x86-64 direct map: boot layout, CPA split rules, counters, flushes (arch/x86/mm/pat/set_memory.c)."""

import pytest

from nbmodel.errors import Errno
from nbmodel.kernel import Kernel
from nbmodel.pagetable import LEVEL_1G, LEVEL_2M, LEVEL_4K
from nbmodel.physmem import MemoryMap


def kb(k):
    return k.counters["DirectMap4k"], k.counters["DirectMap2M"], k.counters["DirectMap1G"]


def test_boot_layout_uses_largest_leaves_that_fit():
    # 8 GiB PC map: the first GiB has page 0 and the 640K-1M hole, 3G-4G is the PCI hole.
    k = Kernel("x86", memory="8G")
    assert k.dmap.pt.leaf(0x100000)[0] == LEVEL_1G          # 4 GiB: whole aligned GiB of RAM
    assert k.dmap.pt.leaf(0x40000)[0] == LEVEL_1G           # 1 GiB
    assert k.dmap.pt.leaf(0x200)[0] == LEVEL_2M             # 2 MiB inside the partial first GiB
    assert k.dmap.pt.leaf(0x50)[0] == LEVEL_4K              # first 2 MiB has holes
    assert k.dmap.pt.leaf(0x0)[2] == 0                      # page 0 is not RAM: pte_none
    assert k.dmap.pt.leaf(0xC0000)[2] == 0                  # the PCI hole is not mapped


def test_meminfo_counters_sum_to_mapped_ram():
    for size in ("64M", "3G", "8G", "13G"):
        k = Kernel("x86", memory=size)
        assert sum(kb(k)) == k.memmap.total_pages * 4


def test_nogbpages_has_no_1g_leaves():
    k = Kernel("x86", mode="nogbpages", memory="8G")
    assert k.counters["DirectMap1G"] == 0
    assert sum(kb(k)) == k.memmap.total_pages * 4


def test_zap_one_page_inside_1g_splits_twice_and_flushes_all_each_time():
    k = Kernel("x86", memory="8G", cpus=4)
    pfn = 0x100000 + 12345
    before = kb(k)
    assert k.set_direct_map_valid_noflush(k.page_address(pfn), 1, False) == 0
    c = k.counters
    assert c["direct_map_level3_splits"] == 1 and c["direct_map_level2_splits"] == 1
    assert c["pgtable_pages"] == 2
    assert c["tlb_full_flushes"] == 2 and c["ipis"] == 2 * 3      # flush_tlb_all() per split, IPI to 3 others
    assert c["tlb_flushes"] == 0                                  # the final PTE change is "noflush"
    # One 1G leaf became 511 2M + 512 4K.
    assert kb(k) == (before[0] + 2048, before[1] + 511 * 2048, before[2] - 1048576)
    assert not k.dmap.pt.is_valid(pfn)
    assert k.dmap.pt.is_valid(pfn + 1) and k.dmap.pt.is_valid(pfn - 1)


def test_same_protection_keeps_large_leaf():
    k = Kernel("x86", memory="8G")
    assert k.set_direct_map_default_noflush(k.page_address(0x100000 + 7)) == 0
    assert k.counters["direct_map_level3_splits"] == 0 and k.counters["tlb_full_flushes"] == 0


def test_aligned_2m_zap_keeps_non_present_2m_leaf():
    k = Kernel("x86", mode="nogbpages", memory="8G")
    pfn = 0x100000 + 512 * 3
    assert k.set_direct_map_valid_noflush(k.page_address(pfn), 512, False) == 0
    level, first, prot = k.dmap.pt.leaf(pfn + 100)
    assert (level, first) == (LEVEL_2M, pfn) and not prot & 1
    assert k.counters["direct_map_level2_splits"] == 0


def test_restore_after_zap_needs_no_split_and_no_collapse():
    k = Kernel("x86", memory="8G")
    addr = k.page_address(0x100000 + 999)
    k.set_direct_map_invalid_noflush(addr)
    splits = dict(k.counters)
    assert k.set_direct_map_default_noflush(addr) == 0
    assert k.counters["direct_map_level2_splits"] == splits["direct_map_level2_splits"]
    assert k.dmap.pt.leaf(0x100000 + 999)[0] == LEVEL_4K      # splits never come back on their own
    assert k.counters["direct_map_level2_collapses"] == 0


def test_collapse_only_through_cpa_collapse():
    k = Kernel("x86", memory="8G")
    pfn = 0x100000 + 999
    k.set_direct_map_invalid_noflush(k.page_address(pfn))
    k.set_direct_map_default_noflush(k.page_address(pfn))
    assert k.dmap.collapse_range(pfn, 1) == 2                 # 4K table -> 2M, then 2M table -> 1G
    assert k.dmap.pt.leaf(pfn)[0] == LEVEL_1G
    assert k.counters["direct_map_level2_collapses"] == 1 and k.counters["direct_map_level3_collapses"] == 1
    assert sum(kb(k)) == k.memmap.total_pages * 4


def test_split_enomem_leaves_earlier_split_in_place():
    k = Kernel("x86", memory="8G")
    k.fail_pgtable_allocs = 0
    pfn = 0x100000 + 5
    # First allocation (1G split) succeeds, the second (2M split) fails.
    orig = k.alloc_pgtable
    calls = []

    def alloc_once():
        calls.append(1)
        if len(calls) == 2:
            k.fail_pgtable_allocs = 1
        return orig()
    k.alloc_pgtable = alloc_once
    ret = k.set_direct_map_valid_noflush(k.page_address(pfn), 1, False)
    assert ret == -Errno.ENOMEM
    assert k.counters["direct_map_level3_splits"] == 1 and k.counters["direct_map_level2_splits"] == 0
    assert k.dmap.pt.leaf(pfn)[0] == LEVEL_2M and k.dmap.pt.is_valid(pfn)


def test_flush_ceiling_33_pages():
    k = Kernel("x86", memory="8G", cpus=2)
    a = k.page_address(0x100000)
    k.flush_tlb_kernel_range(a, a + 33 * 4096)
    assert k.counters["tlb_flushes"] == 1 and k.counters["tlb_full_flushes"] == 0
    assert k.counters["tlb_page_invalidations"] == 33 * 2 and k.counters["ipis"] == 1
    k.flush_tlb_kernel_range(a, a + 34 * 4096)
    assert k.counters["tlb_full_flushes"] == 1 and k.counters["ipis"] == 2


def test_five_level_paging_changes_addresses_not_leaves():
    k4, k5 = Kernel("x86", memory="8G"), Kernel("x86", mode="5-level", memory="8G")
    assert k4.page_address(1) == 0xFFFF888000001000 and k5.page_address(1) == 0xFF11000000001000
    assert kb(k4) == kb(k5) and k5.dmap.levels_for_walk()[0] == "PML5"


def test_holes_inside_direct_map_are_skipped_like_cpa_process_fault():
    k = Kernel("x86", memory=MemoryMap.of([(0, 100), (200, 1024)]))
    assert k.set_direct_map_valid_noflush(k.page_address(90), 20, False) == 0
    assert not k.dmap.pt.is_valid(95)
    assert k.dmap.pt.prot(105) == 0 and k.dmap.pt.prot(150) == 0   # holes stay pte_none
    assert k.dmap.pt.is_valid(200) and k.dmap.pt.is_valid(89)


@pytest.mark.parametrize("size", ["64M", "8G"])
def test_vmstat_splits_not_counted_during_boot(size):
    k = Kernel("x86", memory=size)
    assert k.counters["direct_map_level2_splits"] == 0 and k.counters["direct_map_level3_splits"] == 0
