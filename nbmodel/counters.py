"""Counters the model keeps, named as the kernel names them where the kernel has them.

``DirectMap4k/2M/1G`` are ``/proc/meminfo`` values in kB, derived from the per-level leaf counts exactly as
``arch_report_meminfo()`` derives them (``count << 2``, ``<< 11``, ``<< 20``). ``direct_map_level{2,3}_splits``
and ``_collapses`` are the ``/proc/vmstat`` events (x86 only in the kernel; on arm64 the model counts the
equivalent 2M->4K and 1G->2M block splits under the same names and says so). Everything else is the model's
own bookkeeping: flushes, IPIs, zaps, restores, oopses.
"""

from __future__ import annotations

#: Counter name -> what it counts. The order is the order they are printed in.
COUNTERS = {
    "DirectMap4k": "kB of the direct map mapped by 4K leaves (/proc/meminfo)",
    "DirectMap2M": "kB mapped by 2M leaves (/proc/meminfo)",
    "DirectMap1G": "kB mapped by 1G leaves (/proc/meminfo)",
    "direct_map_level2_splits": "2M leaves split into 4K (/proc/vmstat; arm64: PMD block splits, model only)",
    "direct_map_level3_splits": "1G leaves split into 2M (/proc/vmstat; arm64: PUD block splits, model only)",
    "direct_map_level2_collapses": "4K tables merged back to a 2M leaf (/proc/vmstat; set_memory_rox only)",
    "direct_map_level3_collapses": "2M tables merged back to a 1G leaf (/proc/vmstat; set_memory_rox only)",
    "arm64_contpmd_splits": "arm64 contiguous-PMD runs broken up (split_contpmd)",
    "arm64_contpte_splits": "arm64 contiguous-PTE runs broken up (split_contpte)",
    "pgtable_pages": "page-table pages allocated by splits",
    "tlb_flushes": "ranged kernel TLB flushes (flush_tlb_kernel_range at or below the ceiling)",
    "tlb_full_flushes": "full TLB flushes (flush_tlb_all, or a range above the ceiling)",
    "tlb_page_invalidations": "per-page invalidations executed (INVLPG on each CPU, or broadcast TLBI)",
    "tlbi_range_ops": "arm64 range invalidations (TLBI RVAALE1IS, FEAT_TLBIRANGE), each covering many pages",
    "ipis": "inter-processor interrupts sent for flushes (x86; arm64 broadcasts in hardware)",
    "zaps": "folios whose direct map was made invalid",
    "restores": "folios whose direct map was made valid again",
    "zeroings": "folios zeroed by the kernel",
    "oops": "kernel accesses that hit a non-present direct-map entry",
    "stale_reads": "kernel accesses served by a stale TLB entry",
    "warns": "WARN_ON splats",
    "freed_unmapped": "folios freed to the page allocator with direct-map entries still invalid",
    "restore_splits": "splits caused by a restore (a restore that can fail)",
    "mermap_maps": "pages mapped through a temporary local mapping (mermap)",
    "mermap_local_flushes": "local TLB flushes of the mermap window when it wraps",
    "unmapped_pageblocks": "pageblocks the unmapped source took out of the direct map (one zap, one flush each)",
    "unmapped_pool_frees": "folios freed back to the unmapped source still unmapped, as it expects",
    "freed_mapped_to_unmapped_pool": "folios freed back to the unmapped source with a valid direct map",
}

_KB_SHIFT = {"DirectMap4k": 2, "DirectMap2M": 11, "DirectMap1G": 20}


class Counters(dict):
    """A dict of counter name -> int, always holding every name in :data:`COUNTERS`."""

    def __init__(self):
        super().__init__((name, 0) for name in COUNTERS)

    def set_direct_map(self, n4k: int, n2m: int, n1g: int) -> None:
        """Store ``direct_pages_count[]`` as the kB values ``arch_report_meminfo()`` prints."""
        self["DirectMap4k"] = n4k << _KB_SHIFT["DirectMap4k"]
        self["DirectMap2M"] = n2m << _KB_SHIFT["DirectMap2M"]
        self["DirectMap1G"] = n1g << _KB_SHIFT["DirectMap1G"]

    def delta(self, before: dict) -> dict:
        """Counters that changed since ``before``, as ``name -> new - old``."""
        return counters_delta(self, before)


def values_delta(names: tuple, before: tuple, after: tuple) -> dict:
    """The counters that differ between two snapshots of their values (``tuple(counters.values())``), as
    ``name -> after - before``; ``names`` name ``after``'s values in order. ``before`` may be shorter: no name is
    ever removed, so one added since comes last."""
    out = {name: a - b for name, a, b in zip(names, after, before, strict=False) if a != b}
    for name, a in zip(names[len(before):], after[len(before):], strict=True):
        if a:
            out[name] = a
    return out


def counters_delta(after: dict, before: dict) -> dict:
    """The counters that differ between two copies of a :class:`Counters`, as ``name -> after - before``."""
    if len(before) == len(after) and type(before) is dict:
        # A copy of the counters taken earlier (the explorer's conformance check and the page-table view take
        # one): the same names in the same order, paired up as values_delta pairs them.
        return values_delta(tuple(after), tuple(before.values()), tuple(after.values()))
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
