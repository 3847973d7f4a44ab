"""Laws in the spirit of mm/debug_vm_pgtable.c: properties that hold for any sequence of changes."""

from hypothesis import given, settings
from hypothesis import strategies as st

from nbmodel.kernel import Kernel
from nbmodel.physmem import MemoryMap

MEM = MemoryMap.of([(1, 0x9F), (0x100, 3 * 262144 + 1000)])
CONFIGS = [("x86", None), ("x86", "nogbpages"), ("arm64", "bbml2"), ("arm64", "rodata-full")]

changes = st.lists(st.tuples(st.integers(1, MEM.end_pfn - 600), st.sampled_from([1, 2, 16, 512, 513]),
                             st.booleans()), min_size=1, max_size=12)


def prot_map(k):
    return {p: v for _, p0, v in k.dmap.pt.leaves() for p in [p0]}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from(CONFIGS), changes)
def test_counters_always_sum_to_mapped_memory(cfg, ops):
    k = Kernel(cfg[0], mode=cfg[1], memory=MEM, trace=False)
    for pfn, n, valid in ops:
        k.set_direct_map_valid_noflush(k.page_address(pfn), n, valid)
        c = k.counters
        assert c["DirectMap4k"] + c["DirectMap2M"] + c["DirectMap1G"] == MEM.total_pages * 4


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from(CONFIGS), st.integers(1, MEM.end_pfn - 600), st.sampled_from([1, 3, 512]))
def test_zap_then_restore_keeps_every_other_page(cfg, pfn, n):
    k = Kernel(cfg[0], mode=cfg[1], memory=MEM, trace=False)
    probe = [p for p in range(max(1, pfn - 600), min(MEM.end_pfn, pfn + n + 600))]
    before = {p: k.dmap.pt.is_valid(p) for p in probe}
    addr = k.page_address(pfn)
    assert k.set_direct_map_valid_noflush(addr, n, False) == 0
    for p in probe:
        if pfn <= p < pfn + n:
            assert not k.dmap.pt.is_valid(p) or not MEM.is_ram(p)
        else:
            assert k.dmap.pt.is_valid(p) == before[p]
    splits = k.counters["direct_map_level2_splits"] + k.counters["direct_map_level3_splits"]
    assert k.set_direct_map_valid_noflush(addr, n, True) == 0
    assert {p: k.dmap.pt.is_valid(p) for p in probe} == before
    # restoring exactly what was zapped never needs a split
    assert k.counters["direct_map_level2_splits"] + k.counters["direct_map_level3_splits"] == splits
