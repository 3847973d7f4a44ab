"""What every direct-map model shares: leaf counts, boot-time layout helpers, and the CPA-style range walk.

An architecture subclass decides the boot layout, when a large leaf must split and how, and whether the
architecture can change the direct map at all (``can_set_direct_map()``).

Entry validation: :meth:`DirectMap.apply_range` (the range walk every change goes through) checks its PFN range
and masks and raises ModelInputError before changing anything. The other methods (the boot layout, the split
helpers, the leaf counts) are internal: like the kernel's static helpers in ``arch/x86/mm/pat/set_memory.c``
they trust their caller, :class:`nbmodel.kernel.Kernel`, which validates every address and size it is given.
"""

from __future__ import annotations

import functools

from .errors import Errno, ModelInputError
from .pagetable import (
    CONT,
    DEFAULT,
    LEVEL_1G,
    LEVEL_2M,
    LEVEL_4K,
    MAPPED,
    RW,
    VALID,
    PageTable,
    translate_table,
)
from .units import PAGES_1G, PAGES_2M


class DirectMap:
    """The kernel's linear mapping of all RAM. ``kernel`` provides allocation, flushes, events and counters."""

    arch = "?"
    mode = ""

    def __init__(self, kernel, memmap):
        self.kernel = kernel
        self.memmap = memmap
        self.pt = PageTable()
        self.count = {LEVEL_1G: 0, LEVEL_2M: 0, LEVEL_4K: 0}  # direct_pages_count[]

    # -- boot ---------------------------------------------------------------------------------------------
    def _map_boot(self, use_1g: bool, use_2m: bool, cont: bool) -> None:
        """Map every RAM page with the largest leaves allowed (``init_memory_mapping`` / ``map_mem``)."""
        slots, counts = _boot_layout(self.memmap, use_1g, use_2m, cont)
        for slot, entry in slots:
            if type(entry) is tuple:  # a page directory: the table gets its own lists and PTE pages
                entry = [bytearray(e) if type(e) is bytes else e for e in entry]
            self.pt.set_slot(slot, entry)
        for level, n in counts:
            self.count[level] += n

    # -- what the rest of the model asks --------------------------------------------------------------------
    def can_set_direct_map(self) -> bool:
        """``can_set_direct_map()``: whether this configuration may change direct-map permissions."""
        return True

    def tlb_span(self, pfn: int) -> tuple[int, int]:
        """``(first_pfn, pages)`` one TLB entry covers when a CPU touches ``pfn``."""
        level, first, prot = self.pt.leaf(pfn)
        span = level * 16 if prot & CONT else level
        return pfn - pfn % span, span

    def page_offset(self) -> int:
        raise NotImplementedError

    def levels_for_walk(self) -> list[str]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.arch} {self.mode}".strip()

    # -- the shared range walk ------------------------------------------------------------------------------
    def apply_range(self, start: int, npages: int, set_mask: int, clear_mask: int) -> int:
        """Apply ``(prot & ~clear) | set`` to ``[start, start+npages)``, splitting large leaves only where the
        change covers part of them. Returns 0 or a negative errno; work done before an error stays done (as in
        ``__change_page_attr_set_clr()``). Arguments outside the machine raise ModelInputError before any change."""
        if (type(start) is not int or type(npages) is not int or npages < 1 or start < 0
                or start + npages > self.memmap.end_pfn):
            raise ModelInputError(f"apply_range: PFN range {start!r}+{npages!r} is not inside memory "
                                  f"(end {self.memmap.end_pfn:#x})"[:160])
        if type(set_mask) is not int or type(clear_mask) is not int or not 0 <= set_mask <= RW | VALID \
                or not 0 <= clear_mask <= RW | VALID:
            raise ModelInputError(f"apply_range: masks must be VALID/RW bits, not {set_mask!r}, {clear_mask!r}"[:160])
        tr = translate_table(set_mask, clear_mask)
        pt = self.pt
        if npages == 1:  # one 4K page already mapped by a PTE: the common case of a 4K folio, done in place
            table = pt.pte_table(start)
            if table is not None:
                table[start & 511] = tr[table[start & 511]]
                return 0
        pfn, end = start, start + npages
        while pfn < end:
            level, first, prot = pt.leaf(pfn)
            if not prot & MAPPED:
                # A hole inside the direct-map range: __cpa_process_fault() skips it and returns 0.
                pfn = min(end, first + level) if level > LEVEL_4K else pfn + 1
                continue
            if level == LEVEL_4K:
                table = pt.pte_table(pfn)
                i = pfn & 511
                j = min(512, i + end - pfn)
                table[i:j] = table[i:j].translate(tr)
                pfn += j - i
                continue
            new = (prot & ~clear_mask) | set_mask
            leaf_end = first + level
            if new == prot:
                pfn = min(end, leaf_end)
                continue
            if pfn == first and end >= leaf_end:
                pt.set_leaf(level, first, new)
                pfn = leaf_end
                continue
            ret = self.split_for_change(level, first, prot)
            if ret:
                return ret
        return 0

    def in_place_run(self, pfn: int, npages: int, table: bytearray) -> int:
        """How many pages from ``pfn`` (up to ``npages``, within ``table``, the PTE table mapping ``pfn``) a change
        of one page at a time changes each in its own PTE, with no split. :meth:`apply_range` changes a PTE in
        place; an arch that splits around a change says more."""
        return min(npages, 512 - (pfn & 511))

    def split_for_change(self, level: int, first: int, prot: int) -> int:
        """Make the large leaf at ``first`` smaller so part of it can change; 0 or a negative errno."""
        return -Errno.EINVAL

    def split_counts(self, level: int) -> None:
        """``split_page_count(level)``: one leaf of ``level`` becomes 512 of the next level down."""
        self.count[level] -= 1
        self.count[level // 512] += 512
        self.publish_counts()

    def publish_counts(self) -> None:
        self.kernel.counters.set_direct_map(self.count[LEVEL_4K], self.count[LEVEL_2M], self.count[LEVEL_1G])

    def snapshot(self) -> tuple:
        return (self.pt.snapshot(), tuple(sorted(self.count.items())))


@functools.lru_cache(maxsize=32)
def _boot_layout(memmap, use_1g: bool, use_2m: bool, cont: bool) -> tuple[tuple, tuple]:
    """The boot direct map of ``memmap`` as ``((slot, entry), ...)`` with read-only entries (a leaf, or a page
    directory as a tuple of leaves and PTE pages as bytes) and ``(level, leaves)`` pairs. Worked out once per layout:
    it took a third of building a System, and the explorer, the tests and the widgets build thousands."""
    ram = bytearray(memmap.end_pfn)
    for s, e in memmap.ranges:
        ram[s:e] = b"\x01" * (e - s)
    leaf = DEFAULT
    slots, count = [], {LEVEL_1G: 0, LEVEL_2M: 0, LEVEL_4K: 0}
    for slot in range((memmap.end_pfn + PAGES_1G - 1) // PAGES_1G):
        base = slot * PAGES_1G
        chunk = ram[base:base + PAGES_1G].ljust(PAGES_1G, b"\x00")
        if not chunk.count(1):
            continue
        if use_1g and chunk.count(1) == PAGES_1G:
            slots.append((slot, leaf))
            count[LEVEL_1G] += 1
            continue
        pmd = [0] * 512
        whole = [use_2m and chunk[i * PAGES_2M:(i + 1) * PAGES_2M].count(1) == PAGES_2M for i in range(512)]
        for i in range(512):
            if whole[i]:
                group = i - i % 16
                in_cont = cont and all(whole[group:group + 16])
                pmd[i] = leaf | (CONT if in_cont else 0)
                count[LEVEL_2M] += 1
                continue
            part = chunk[i * PAGES_2M:(i + 1) * PAGES_2M]
            ram_pages = part.count(1)
            if not ram_pages:
                continue
            if ram_pages == PAGES_2M:
                pmd[i] = bytes([leaf | (CONT if cont else 0)]) * 512
                count[LEVEL_4K] += 512
                continue
            pte = bytearray(512)
            for j in range(512):
                if part[j]:
                    group = j - j % 16
                    in_cont = cont and part[group:group + 16].count(1) == 16
                    pte[j] = leaf | (CONT if in_cont else 0)
                    count[LEVEL_4K] += 1
            pmd[i] = bytes(pte)
        slots.append((slot, tuple(pmd)))
    return tuple(slots), tuple(count.items())
