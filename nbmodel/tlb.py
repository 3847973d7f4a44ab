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
        end = start + npages
        if not self.entries:
            return
        if npages > 4 * len(self.entries):
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
