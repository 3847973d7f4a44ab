"""The storage both direct-map models share: a three-level table of leaves over PFNs.

The table (``PageTable._top``, read and written only through its methods) maps a 1 GiB slot (``pfn >> 18``) to
either a leaf (an ``int`` of protection bits) or a PMD table; a PMD table is a list of 512 entries, each a leaf or a
PTE table; a PTE table is a ``bytearray`` of 512 leaves. The upper levels (PGD, P4D) never hold leaves in the direct
map, so they are not stored; ``levels`` only changes the addresses and the walk a reader sees. A leaf value of 0 is
an empty entry (``pte_none``).

Internal module: :class:`PageTable` does no argument checking. Like the kernel's page-table helpers
(``pte_offset_kernel()``, ``set_pte()``), it trusts its callers, the direct-map models
(:meth:`nbmodel.directmap.DirectMap.apply_range`, which validates its range first) and
:class:`nbmodel.kernel.Kernel`, whose entry points validate every PFN. A wrong-typed PFN passed directly
here raises whatever Python raises; nothing outside the model's own code calls it.
"""

from __future__ import annotations

from functools import cache

from .units import PAGES_1G, PAGES_2M

MAPPED = 8   # the entry exists (not pte_none); the PFN it maps is implied by its position
VALID = 1    # x86 _PAGE_PRESENT / arm64 PTE_VALID
RW = 2       # x86 _PAGE_RW / arm64 PTE_WRITE (and !PTE_RDONLY)
CONT = 4     # arm64 PTE_CONT: one of 16 entries mapped by one TLB entry
DEFAULT = MAPPED | VALID | RW

LEVEL_1G, LEVEL_2M, LEVEL_4K = PAGES_1G, PAGES_2M, 1
LEVEL_NAMES = {LEVEL_1G: "1G", LEVEL_2M: "2M", LEVEL_4K: "4K"}


@cache
def translate_table(set_mask: int, clear_mask: int) -> bytes:
    """A ``bytes.translate`` table applying ``(v & ~clear) | set`` to every mapped entry, leaving 0 alone."""
    return bytes(((v & ~clear_mask) | set_mask) if v & MAPPED else v for v in range(256))


@cache
def prot_match(mask: int, want: int, equal: bool = True) -> bytes:
    """The 256-byte table :meth:`PageTable.first_where` reads: 1 where ``(v & mask == want) == equal``."""
    return bytes(int((v & mask == want) == equal) for v in range(256))


class PageTable:
    """Leaves over PFN space; callers decide what a split or a protection change means on their arch."""

    def __init__(self):
        self._top: dict[int, int | list] = {}

    # -- lookup -------------------------------------------------------------------------------------------
    def leaf(self, pfn: int) -> tuple[int, int, int]:
        """``(level, first_pfn, prot)`` of the leaf mapping ``pfn``; prot 0 where nothing is mapped."""
        e = self._top.get(pfn >> 18, 0)
        if type(e) is int:
            return LEVEL_1G, pfn & ~(PAGES_1G - 1), e
        e2 = e[(pfn >> 9) & 511]
        if type(e2) is int:
            return LEVEL_2M, pfn & ~(PAGES_2M - 1), e2
        return LEVEL_4K, pfn, e2[pfn & 511]

    def prot(self, pfn: int) -> int:
        return self.leaf(pfn)[2]

    def is_valid(self, pfn: int) -> bool:
        return bool(self.leaf(pfn)[2] & VALID)

    def first_where(self, pfn: int, npages: int, match: bytes) -> int | None:
        """First PFN of ``[pfn, pfn + npages)`` whose leaf's protection ``v`` has ``match[v]`` true (a
        :func:`prot_match` table), or None: :meth:`leaf` on each page in turn, with a large leaf read once and a
        run of PTEs in one pass."""
        end = pfn + npages
        top = self._top
        while pfn < end:
            e = top.get(pfn >> 18, 0)
            if type(e) is int:
                if match[e]:
                    return pfn
                pfn = (pfn | (PAGES_1G - 1)) + 1
                continue
            e = e[(pfn >> 9) & 511]
            if type(e) is int:
                if match[e]:
                    return pfn
                pfn = (pfn | (PAGES_2M - 1)) + 1
                continue
            i = pfn & 511
            j = min(512, i + end - pfn)
            k = e[i:j].translate(match).find(1)
            if k >= 0:
                return pfn + k
            pfn += j - i
        return None

    # -- structure changes --------------------------------------------------------------------------------
    def split_1g(self, pfn: int, child_prot: int) -> None:
        """Replace the 1G leaf holding ``pfn`` by a PMD table of 512 2M leaves of ``child_prot``."""
        self._top[pfn >> 18] = [child_prot] * 512

    def split_2m(self, pfn: int, child_prot: int) -> None:
        """Replace the 2M leaf holding ``pfn`` by a PTE table of 512 4K leaves of ``child_prot``."""
        self._top[pfn >> 18][(pfn >> 9) & 511] = bytearray([child_prot]) * 512

    def set_leaf(self, level: int, pfn: int, prot: int) -> None:
        if level == LEVEL_1G:
            self._top[pfn >> 18] = prot
        elif level == LEVEL_2M:
            self._top[pfn >> 18][(pfn >> 9) & 511] = prot
        else:
            self._top[pfn >> 18][(pfn >> 9) & 511][pfn & 511] = prot

    def pte_table(self, pfn: int) -> bytearray | None:
        """The PTE table mapping ``pfn``, or None when a 1G or 2M leaf maps it."""
        pmd = self._top.get(pfn >> 18)
        if type(pmd) is not list:
            return None
        e = pmd[(pfn >> 9) & 511]
        return e if type(e) is bytearray else None

    # -- the table as data (for a model that saves and restores it: nbmodel.explore_state) --------------------
    def slot(self, slot: int) -> int | list | None:
        """One 1 GiB slot's entry as stored (see the module docstring), None where the slot has none; the caller
        changes it only as the direct-map models do, to split or collapse a leaf in place."""
        return self._top.get(slot)

    def set_slot(self, slot: int, entry: int | list) -> None:
        """Replace one 1 GiB slot's entry; the table keeps ``entry`` itself, not a copy."""
        self._top[slot] = entry

    def items(self) -> list[tuple[int, int | list]]:
        """``(slot, entry)`` for every 1 GiB slot that has an entry, in slot order; the caller must not change them."""
        return sorted(self._top.items())

    def copy_slots(self) -> dict[int, int | list]:
        """Every slot's entry, copied down to the PTE tables."""
        return {s: e if type(e) is int else [x if type(x) is int else bytearray(x) for x in e]
                for s, e in self._top.items()}

    def own_pte_table(self, block: int) -> None:
        """Give 2 MiB block ``block``'s PTE table, if it has one, a private copy: a table shared with a saved
        state is changed only through its copy."""
        pmd = self._top.get(block >> 9)
        if type(pmd) is list and type(pmd[block & 511]) is bytearray:
            pmd[block & 511] = bytearray(pmd[block & 511])

    # -- walks ----------------------------------------------------------------------------------------------
    def leaves(self, start: int = 0, end: int | None = None):
        """Yield ``(level, first_pfn, prot)`` for every mapped leaf overlapping ``[start, end)``, in order."""
        for slot in sorted(self._top):
            base = slot << 18
            if end is not None and base >= end:
                break
            if base + PAGES_1G <= start:
                continue
            e = self._top[slot]
            if type(e) is int:
                if e:
                    yield LEVEL_1G, base, e
                continue
            for i, e2 in enumerate(e):
                b2 = base + i * PAGES_2M
                if b2 + PAGES_2M <= start or (end is not None and b2 >= end):
                    continue
                if type(e2) is int:
                    if e2:
                        yield LEVEL_2M, b2, e2
                    continue
                for j, v in enumerate(e2):
                    p = b2 + j
                    if v and p >= start and (end is None or p < end):
                        yield LEVEL_4K, p, v

    def snapshot(self) -> tuple:
        out = []
        for slot in sorted(self._top):
            e = self._top[slot]
            if type(e) is int:
                out.append((slot, e))
            else:
                out.append((slot, tuple(x if type(x) is int else bytes(x) for x in e)))
        return tuple(out)
