"""x86-64 direct map: 4- or 5-level paging, 1G/2M/4K leaves, CPA splits (``arch/x86/mm/pat/set_memory.c``)."""

from __future__ import annotations

from .directmap import DirectMap
from .errors import ModelInputError
from .pagetable import LEVEL_1G, LEVEL_2M, LEVEL_NAMES

PAGE_OFFSET_BASE = {4: 0xFFFF888000000000, 5: 0xFF11000000000000}  # __PAGE_OFFSET_BASE_L4 / _L5
TLB_SINGLE_PAGE_FLUSH_CEILING = 33  # arch/x86/mm/tlb.c: tlb_single_page_flush_ceiling


class X86DirectMap(DirectMap):
    """The x86-64 direct map. ``gbpages=False`` is the ``nogbpages`` boot option (no 1G leaves).

    Modelling choices: no KASLR (the direct map starts at ``__PAGE_OFFSET_BASE_L4/L5``), no INVLPGB (flushes
    use IPIs, as on Intel), and the first 1 MiB is mapped like any other RAM the memory map lists.
    """

    arch = "x86"

    def __init__(self, kernel, memmap, levels: int = 4, gbpages: bool = True):
        if levels not in PAGE_OFFSET_BASE:
            raise ModelInputError(f"x86-64 paging has 4 or 5 levels, not {levels}")
        super().__init__(kernel, memmap)
        self.levels = levels
        self.gbpages = gbpages
        self.mode = f"{levels}-level" + ("" if gbpages else " nogbpages")
        self._map_boot(use_1g=gbpages, use_2m=True, cont=False)
        self.publish_counts()

    def page_offset(self) -> int:
        return PAGE_OFFSET_BASE[self.levels]

    def levels_for_walk(self) -> list[str]:
        return ["PML5", "P4D", "PUD", "PMD", "PTE"] if self.levels == 5 else ["PML4", "PUD", "PMD", "PTE"]

    def flush_ceiling(self) -> int:
        return TLB_SINGLE_PAGE_FLUSH_CEILING

    def split_for_change(self, level: int, first: int, prot: int) -> int:
        """``split_large_page()``: allocate one page-table page (may fail with -ENOMEM), fill 512 entries with
        the old protection (1G -> 2M leaves, 2M -> 4K leaves), install it, count it, ``flush_tlb_all()``."""
        k = self.kernel
        table_pfn = k.alloc_pgtable()
        if table_pfn < 0:
            return table_pfn
        if level == LEVEL_1G:
            self.pt.split_1g(first, prot)
        else:
            self.pt.split_2m(first, prot)
        self.split_counts(level)
        if k.system_running:
            k.counters["direct_map_level3_splits" if level == LEVEL_1G else "direct_map_level2_splits"] += 1
        k.emit("split", pfn=first, level=LEVEL_NAMES[level], into=LEVEL_NAMES[level // 512])
        k.flush_tlb_all(reason="split")
        return 0

    def collapse_range(self, start: int, npages: int) -> int:
        """``cpa_collapse_large_pages()``: merge PTE tables whose 512 entries are present with equal flags into a
        2M leaf, then (``direct_gbpages``) PMD tables of 512 equal 2M leaves into 1G; ``flush_tlb_all()`` once.
        Only ``set_memory_rox()`` reaches this in the kernel. Returns how many collapses happened."""
        k = self.kernel
        done = 0
        first_slot, last_slot = start >> 18, (start + npages - 1) >> 18
        for slot in range(first_slot, last_slot + 1):
            pmd = self.pt.slot(slot)
            if not isinstance(pmd, list):
                continue
            for i, e in enumerate(pmd):
                if isinstance(e, bytearray) and e[0] & 1 and e.count(e[0]) == 512:
                    pmd[i] = e[0]
                    self.count[LEVEL_2M] += 1
                    self.count[1] -= 512
                    k.counters["direct_map_level2_collapses"] += 1
                    k.emit("collapse", pfn=(slot << 18) + i * 512, level="4K", into="2M")
                    k.free_pgtable()
                    done += 1
            if self.gbpages and all(type(e) is int for e in pmd) and pmd[0] & 1 and pmd.count(pmd[0]) == 512:
                self.pt.set_slot(slot, pmd[0])
                self.count[LEVEL_1G] += 1
                self.count[LEVEL_2M] -= 512
                k.counters["direct_map_level3_collapses"] += 1
                k.emit("collapse", pfn=slot << 18, level="2M", into="1G")
                k.free_pgtable()
                done += 1
        if done:
            self.publish_counts()
            k.flush_tlb_all(reason="collapse")
        return done
