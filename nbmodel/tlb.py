"""Per-CPU TLBs holding kernel (direct-map) translations.

An entry is filled when a CPU touches a page through the direct map and covers the whole leaf it came from
(a 2M leaf gives one 2M entry; an arm64 contiguous run gives one entry for the run). It stays until a flush
removes it, even if the page-table entry behind it has been made invalid since: that is a stale entry, and a
read through it still reaches the page. Nothing here ever drops an entry silently.
"""

from __future__ import annotations

from .units import PAGES_1G, PAGES_2M

# Spans a kernel TLB entry can have, in pages: 4K, 64K (arm64 contPTE), 2M, 32M (arm64 contPMD), 1G.
SPANS = (1, 16, PAGES_2M, 16 * PAGES_2M, PAGES_1G)
SPANS_BY_ARCH = {"x86": (1, PAGES_2M, PAGES_1G), "arm64": SPANS}


class TLB:
    """The kernel-address entries one CPU has cached: ``{first_pfn: span_in_pages}``. ``spans`` lists the
    entry sizes the arch has (x86 has no contiguous-bit entries), so a lookup only tries those."""

    __slots__ = ("cpu", "entries", "spans")

    def __init__(self, cpu: int, spans: tuple = SPANS):
        self.cpu = cpu
        self.entries: dict[int, int] = {}
        self.spans = spans

    def lookup(self, pfn: int) -> int | None:
        """First PFN of the entry covering ``pfn``, or None."""
        if not self.entries:
            return None
        for span in self.spans:
            start = pfn - pfn % span
            got = self.entries.get(start)
            if got is not None and pfn < start + got:
                return start
        return None

    def fill(self, start: int, span: int) -> None:
        self.entries[start] = span

    def invalidate_page(self, pfn: int) -> int:
        """INVLPG / TLBI VAALE1IS for one page: drop any entry covering it; returns how many were dropped."""
        dropped = 0
        if not self.entries:
            return 0
        for span in self.spans:
            start = pfn - pfn % span
            got = self.entries.get(start)
            if got is not None and pfn < start + got:
                del self.entries[start]
                dropped += 1
        return dropped

    def invalidate_range(self, start: int, npages: int) -> None:
        if npages == 1:
            self.invalidate_page(start)
            return
        end = start + npages
        if not self.entries:
            return
        if len(self.entries) < npages * len(self.spans):  # fewer entries to test than per-page lookups
            for first, span in list(self.entries.items()):
                if first < end and start < first + span:
                    del self.entries[first]
            return
        for pfn in range(start, end):
            self.invalidate_page(pfn)

    def flush_all(self) -> None:
        self.entries.clear()

    def holds(self, start: int, npages: int) -> list[int]:
        """First PFNs of the entries overlapping ``[start, start+npages)``, sorted."""
        end = start + npages
        return sorted(f for f, s in self.entries.items() if f < end and start < f + s)

    def snapshot(self) -> tuple:
        return tuple(sorted(self.entries.items()))


# -- arm64 flush_tlb_kernel_range() since 6.13 ---------------------------------------------------------------
#: ``MAX_DVM_OPS`` (``arch/arm64/include/asm/tlbflush.h``): ``PTRS_PER_PTE``, 512 with the 4K granule.
MAX_DVM_OPS = 512
#: ``MAX_TLBI_RANGE_PAGES`` = ``__TLBI_RANGE_PAGES(31, 3)`` = (31 + 1) << (5 * 3 + 1) pages (8 GiB of 4K pages).
MAX_TLBI_RANGE_PAGES = 32 << 16
_TLBI_RANGE_MASK = 0x1F


def arm64_flush_limit_excess(pages: int, tlbirange: bool) -> bool:
    """``__flush_tlb_range_limit_excess(pages, PAGE_SIZE)`` (``arch/arm64/include/asm/tlbflush.h``, added by
    7ffc13e23395 "arm64: tlbflush: add __flush_tlb_range_limit_excess()" and used by ``flush_tlb_kernel_range()``
    since a923705c69f7 "arm64: optimize flush tlb kernel range", both v6.13): with ``FEAT_TLBIRANGE`` the range
    is too big only above ``MAX_TLBI_RANGE_PAGES``; without it at ``MAX_DVM_OPS`` pages already (``>=``), so a
    2M (512-page) range becomes ``flush_tlb_all()``."""
    if tlbirange:
        return pages > MAX_TLBI_RANGE_PAGES
    return pages >= MAX_DVM_OPS


def arm64_tlbi_ops(pages: int, tlbirange: bool) -> tuple[int, int]:
    """The TLBI instructions ``__flush_tlb_range_op(vaale1is, start, pages, PAGE_SIZE, ...)`` issues for a
    range below the limit, as ``(single, ranged)``: ``(pages, 0)`` without ``FEAT_TLBIRANGE`` (one ``TLBI
    VAALE1IS`` per page); with it, range operations (``TLBI RVAALE1IS``) from scale 3 down to 0, each covering
    ``__TLBI_RANGE_PAGES(num, scale)`` = (num + 1) << (5 * scale + 1) pages, and one single op when one page is
    left (no LPA2 alignment steps: 4K granule, 48-bit VA)."""
    if not tlbirange:
        return pages, 0
    single = ranged = 0
    scale = 3
    while pages > 0:
        if pages == 1:
            single += 1
            pages -= 1
            continue
        if scale < 0:  # unreachable for pages <= MAX_TLBI_RANGE_PAGES (the limit check runs first)
            raise ValueError(f"{pages} pages left after scale 0")
        shift = 5 * scale + 1
        num = (min(pages, (_TLBI_RANGE_MASK + 1) << shift) >> shift) - 1  # __TLBI_RANGE_NUM(pages, scale)
        if num >= 0:
            ranged += 1
            pages -= (num + 1) << shift  # __TLBI_RANGE_PAGES(num, scale)
        scale -= 1
    return single, ranged
