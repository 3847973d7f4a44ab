"""arm64 linear map: modes, BBML2 split chain, internal flush, no-split failures (arch/arm64/mm/pageattr.c)."""

import pytest

from nbmodel.errors import Errno, ModelInputError
from nbmodel.kernel import Kernel
from nbmodel.system import System

PFN = 0x100000 + 4096 + 17   # inside the 1G block at 4 GiB, not aligned to anything


def test_rodata_full_is_page_mapped_and_never_splits():
    k = Kernel("arm64", mode="rodata-full", memory="8G")
    assert k.counters["DirectMap2M"] == 0 and k.counters["DirectMap1G"] == 0
    assert k.dmap.leaf_kind(PFN) == "PTE"
    k.set_direct_map_valid_noflush(k.page_address(PFN), 1, False)
    assert k.counters["direct_map_level2_splits"] == 0 and k.counters["pgtable_pages"] == 0


def test_bbml2_split_chain_pud_contpmd_pmd_contpte():
    k = Kernel("arm64", mode="bbml2", memory="8G")
    assert k.dmap.leaf_kind(PFN) == "PUD block"
    assert k.set_direct_map_valid_noflush(k.page_address(PFN), 1, False) == 0
    kinds = [(e.get("level"), e.get("into")) for e in k.trace if e.kind == "split"]
    assert kinds == [("1G", "contPMD"), ("contPMD", "2M"), ("2M", "contPTE"), ("contPTE", "4K")]
    assert k.dmap.leaf_kind(PFN) == "PTE"
    assert k.dmap.leaf_kind(PFN + 16) == "contPTE"            # the next 64K run keeps its contiguous bit
    assert k.dmap.leaf_kind(PFN + 1024) == "PMD block"          # the rest of the 32M run lost CONT only
    assert k.dmap.leaf_kind(PFN + 16 * 512 * 2) == "contPMD"    # other 32M runs untouched
    assert k.counters["tlb_full_flushes"] == 0                  # BBML2: no break-before-make, no flush_all


def test_arm64_invalidate_flushes_internally_so_zap_flushes_twice():
    k = Kernel("arm64", memory="8G", cpus=4)
    f = k.folio_alloc(0)
    assert k.folio_zap_direct_map(f) == 0
    assert k.counters["tlb_flushes"] == 2                       # set_memory_valid() + folio_zap's own
    assert k.counters["ipis"] == 0                              # broadcast TLBI, no IPIs
    k.folio_restore_direct_map(f)
    assert k.counters["tlb_flushes"] == 2                       # setting PTE_VALID only: no TLBI


def test_arm64_flush_without_tlbirange_512_pages_is_a_full_flush():
    """Since 6.13 (a923705c69f7 "arm64: optimize flush tlb kernel range", 7ffc13e23395 "arm64: tlbflush: add
    __flush_tlb_range_limit_excess()"), without FEAT_TLBIRANGE ``pages >= MAX_DVM_OPS`` -> flush_tlb_all():
    511 pages are 511 TLBI VAALE1IS, 512 (a 2M range) already a full flush (the pre-6.13 rule was > 512)."""
    k = Kernel("arm64", memory="8G", tlbirange=False)
    a = k.page_address(0x100000)
    k.flush_tlb_kernel_range(a, a + 511 * 4096)
    assert (k.counters["tlb_full_flushes"], k.counters["tlb_page_invalidations"]) == (0, 511)
    k.flush_tlb_kernel_range(a, a + 512 * 4096)
    assert k.counters["tlb_full_flushes"] == 1 and k.counters["tlb_page_invalidations"] == 511
    assert k.counters["tlbi_range_ops"] == 0 and k.counters["ipis"] == 0


def test_arm64_flush_with_tlbirange_uses_a_few_range_tlbis():
    """With FEAT_TLBIRANGE (the default, as Neoverse V2/N2 have it): __flush_tlb_range_op() issues range TLBIs;
    512 pages is one RVAALE1IS (scale 1, num 7), 513 one range + one single op; no full flush below
    MAX_TLBI_RANGE_PAGES (8 GiB of 4K pages)."""
    k = Kernel("arm64", memory="8G")
    assert k.tlbirange is True
    a = k.page_address(0x100000)
    k.flush_tlb_kernel_range(a, a + 512 * 4096)
    assert (k.counters["tlb_flushes"], k.counters["tlbi_range_ops"], k.counters["tlb_page_invalidations"]) == (1, 1, 0)
    k.flush_tlb_kernel_range(a, a + 513 * 4096)
    assert (k.counters["tlbi_range_ops"], k.counters["tlb_page_invalidations"]) == (2, 1)
    k.flush_tlb_kernel_range(a, a + (1 << 20) * 4096)  # 4 GiB: still flushed by address
    assert k.counters["tlb_full_flushes"] == 0


def test_arm64_range_flush_drops_the_tlb_entries_it_covers():
    k = Kernel("arm64", mode="bbml2", memory="8G", cpus=2)
    pfn = 0x100000 + 7
    assert k.kernel_access(pfn, cpu=1) == "ok" and k.tlb_holders(pfn) == [1]
    a = k.page_address(0x100000)
    k.flush_tlb_kernel_range(a, a + 512 * 4096)
    assert k.tlb_holders(pfn) == []


def test_tlbi_range_op_counts_follow_the_kernel_macro():
    from nbmodel.tlb import MAX_TLBI_RANGE_PAGES, arm64_flush_limit_excess, arm64_tlbi_ops
    assert [arm64_tlbi_ops(n, True) for n in (1, 2, 3, 511, 512, 513)] == [(1, 0), (0, 1), (1, 1), (1, 2), (0, 1),
                                                                            (1, 1)]
    assert arm64_tlbi_ops(MAX_TLBI_RANGE_PAGES, True) == (0, 1) and arm64_tlbi_ops(40, False) == (40, 0)
    assert not arm64_flush_limit_excess(MAX_TLBI_RANGE_PAGES, True)
    assert arm64_flush_limit_excess(MAX_TLBI_RANGE_PAGES + 1, True)
    assert arm64_flush_limit_excess(512, False) and not arm64_flush_limit_excess(511, False)


def test_tlbirange_option_is_checked():
    with pytest.raises(ModelInputError):
        Kernel("x86", tlbirange=True)
    with pytest.raises(ModelInputError):
        Kernel("arm64", tlbirange="yes")
    assert Kernel("x86").tlbirange is False


def test_no_set_direct_map_is_a_silent_noop():
    k = Kernel("arm64", mode="no-set-direct-map", memory="8G")
    assert not k.can_set_direct_map()
    assert k.set_direct_map_valid_noflush(k.page_address(PFN), 1, False) == 0
    assert k.dmap.pt.is_valid(PFN)


def test_blocks_without_bbml2_warn_and_einval():
    k = Kernel("arm64", mode="blocks-no-bbml2", memory="8G")
    assert k.set_direct_map_valid_noflush(k.page_address(PFN), 1, False) == -Errno.EINVAL
    assert k.counters["warns"] == 1 and k.dmap.pt.is_valid(PFN)


def test_same_workload_splits_differ_by_arch():
    def splits(arch, mode):
        s = System("filemap", arch=arch, mode=mode, memory="8G", seed=5)
        s.step("gmem_create", file="g", size="1M")
        s.step("fallocate", file="g", len="1M")
        c = s.k.counters
        return c["direct_map_level2_splits"] + c["direct_map_level3_splits"]
    assert splits("arm64", "rodata-full") == 0
    assert splits("x86", None) >= 1 and splits("arm64", "bbml2") >= 1


def test_unknown_mode_is_bad_input():
    with pytest.raises(ModelInputError):
        Kernel("arm64", mode="bbml3")
