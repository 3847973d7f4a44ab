"""arm64 linear map with the 4K granule (``arch/arm64/mm/mmu.c``, ``pageattr.c``).

Modes:

``rodata-full``
    The default without BBML2_NOABORT: ``force_pte_mapping()`` is true, the whole linear map is PTE-mapped at
    boot with no contiguous runs, so permission changes never split (and the TLB footprint is larger).
``bbml2``
    CPUs with BBML2_NOABORT: blocks and contiguous runs at boot, split on demand by
    ``split_kernel_leaf_mapping()`` under ``pgtable_split_lock`` along PUD -> contPMD -> PMD -> contPTE -> PTE.
``no-set-direct-map``
    ``can_set_direct_map()`` is false (no rodata=full, no debug_pagealloc, no KFENCE, not a realm): the
    ``set_direct_map_*`` calls return 0 and change nothing; secretmem and NO_DIRECT_MAP are refused.
``blocks-no-bbml2``
    A break-it configuration, not a real one: block mappings and ``can_set_direct_map()`` true without BBML2.
    A change to part of a block cannot split (break-before-make on a live mapping) and the page walk WARNs and
    returns -EINVAL, as ``pageattr_pud_entry()``/``pageattr_pmd_entry()`` do.
"""

from __future__ import annotations

from .directmap import DirectMap
from .errors import Errno, ModelInputError
from .pagetable import CONT, LEVEL_1G, LEVEL_2M, LEVEL_4K, MAPPED
from .tlb import MAX_DVM_OPS
from .units import PAGES_1G, PAGES_2M

MODES = ("rodata-full", "bbml2", "no-set-direct-map", "blocks-no-bbml2")
PAGE_OFFSET = 0xFFFF000000000000  # 48-bit VA, 4K granule: _PAGE_OFFSET(VA_BITS); no KASLR in the model
CONT_PTES = 16     # ARM64_CONT_PTE_SHIFT = 4 -> 64 KiB
CONT_PMDS = 16     # ARM64_CONT_PMD_SHIFT = 4 -> 32 MiB


class Arm64LinearMap(DirectMap):
    """The arm64 linear map in one of :data:`MODES`."""

    arch = "arm64"

    def __init__(self, kernel, memmap, mode: str = "rodata-full"):
        if mode not in MODES:
            raise ModelInputError(f"unknown arm64 mode {mode!r}; choose one of {', '.join(MODES)}")
        super().__init__(kernel, memmap)
        self.mode = mode
        blocks = mode != "rodata-full"
        self._map_boot(use_1g=blocks, use_2m=blocks, cont=blocks)
        self.publish_counts()

    def can_set_direct_map(self) -> bool:
        """``rodata_full || debug_pagealloc || kfence || realm``: true except in ``no-set-direct-map``."""
        return self.mode != "no-set-direct-map"

    def page_offset(self) -> int:
        return PAGE_OFFSET

    def levels_for_walk(self) -> list[str]:
        return ["PGD", "PUD", "PMD", "PTE"]

    def flush_ceiling(self) -> int:
        """``MAX_DVM_OPS``; since v6.13 the kernel's rule also depends on FEAT_TLBIRANGE and is ``>=``, not
        ``>`` (:func:`nbmodel.tlb.arm64_flush_limit_excess`, which :class:`~nbmodel.kernel.Kernel` applies)."""
        return MAX_DVM_OPS

    # -- update_range_prot() ----------------------------------------------------------------------------------
    def update_range_prot(self, start: int, npages: int, set_mask: int, clear_mask: int) -> int:
        """``update_range_prot()``: split at both ends if BBML2 allows, then walk and apply; a block only partly
        covered (possible only without BBML2) gives WARN_ON_ONCE and -EINVAL with earlier entries changed."""
        if self.mode == "bbml2":
            for boundary in (start, start + npages):
                ret = self._split_to_boundary(boundary)
                if ret:
                    self.kernel.warn("split_kernel_leaf_mapping failed")
                    return ret
        return self.apply_range(start, npages, set_mask, clear_mask)

    def in_place_run(self, pfn: int, npages: int, table: bytearray) -> int:
        """With BBML2, :meth:`update_range_prot` splits at ``pfn`` and ``pfn + 1`` first: nothing to split when
        neither is inside a contiguous run (or each starts one). Decided within one PTE table; a change never
        alters a CONT bit, so the run holds while its pages change one by one."""
        if self.mode != "bbml2":
            return super().in_place_run(pfn, npages, table)
        i = pfn & 511
        stop = min(511, i + npages)  # the last entry's end boundary is in the next 2M block: the walk decides
        j = i
        while j < stop and (not table[j] & CONT or not j % CONT_PTES) and (
                not table[j + 1] & CONT or not (j + 1) % CONT_PTES):
            j += 1
        return j - i

    def split_for_change(self, level: int, first: int, prot: int) -> int:
        # Reached only when a block is partly covered and nobody split it: pageattr_p{u,m}d_entry().
        self.kernel.warn("pageattr: partial block change without BBML2 split")
        return -Errno.EINVAL

    def _split_to_boundary(self, pfn: int) -> int:
        """``split_kernel_leaf_mapping_locked(addr)``: split only as far as needed for ``pfn`` to start a leaf."""
        if pfn >= self.memmap.end_pfn:
            return 0
        k = self.kernel
        level, first, prot = self.pt.leaf(pfn)
        if not prot & MAPPED:
            return 0
        if level == LEVEL_1G and pfn % PAGES_1G:
            if k.alloc_pgtable() < 0:
                return -Errno.ENOMEM
            self.pt.split_1g(first, prot | CONT)  # split_pud(..., to_cont=true)
            self.split_counts(LEVEL_1G)
            k.counters["direct_map_level3_splits"] += 1
            k.emit("split", pfn=first, level="1G", into="contPMD")
            level, first, prot = self.pt.leaf(pfn)
        if level == LEVEL_2M and prot & CONT and pfn % (CONT_PMDS * PAGES_2M):
            group = pfn - pfn % (CONT_PMDS * PAGES_2M)
            for i in range(CONT_PMDS):
                p = group + i * PAGES_2M
                self.pt.set_leaf(LEVEL_2M, p, self.pt.prot(p) & ~CONT)  # split_contpmd()
            k.counters["arm64_contpmd_splits"] += 1
            k.emit("split", pfn=group, level="contPMD", into="2M")
            level, first, prot = self.pt.leaf(pfn)
        if level == LEVEL_2M and pfn % PAGES_2M:
            if k.alloc_pgtable() < 0:
                return -Errno.ENOMEM
            self.pt.split_2m(first, prot | CONT)  # split_pmd(..., to_cont=true)
            self.split_counts(LEVEL_2M)
            k.counters["direct_map_level2_splits"] += 1
            k.emit("split", pfn=first, level="2M", into="contPTE")
            level, first, prot = self.pt.leaf(pfn)
        if level == LEVEL_4K and prot & CONT and pfn % CONT_PTES:
            table = self.pt.pte_table(pfn)
            i = (pfn & 511) - (pfn & 511) % CONT_PTES
            table[i:i + CONT_PTES] = bytes(v & ~CONT for v in table[i:i + CONT_PTES])  # split_contpte()
            k.counters["arm64_contpte_splits"] += 1
            k.emit("split", pfn=pfn - pfn % CONT_PTES, level="contPTE", into="4K")
        return 0

    def leaf_kind(self, pfn: int) -> str:
        """``"PUD block"``, ``"contPMD"``, ``"PMD block"``, ``"contPTE"``, ``"PTE"`` or ``"none"``."""
        level, _, prot = self.pt.leaf(pfn)
        if not prot & MAPPED:
            return "none"
        cont = bool(prot & CONT)
        return {LEVEL_1G: "PUD block", LEVEL_2M: "contPMD" if cont else "PMD block",
                LEVEL_4K: "contPTE" if cont else "PTE"}[level]
