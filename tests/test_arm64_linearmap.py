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


def test_arm64_flush_ceiling_512_pages():
    k = Kernel("arm64", memory="8G")
    a = k.page_address(0x100000)
    k.flush_tlb_kernel_range(a, a + 512 * 4096)
    assert k.counters["tlb_full_flushes"] == 0
    k.flush_tlb_kernel_range(a, a + 513 * 4096)
    assert k.counters["tlb_full_flushes"] == 1


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
