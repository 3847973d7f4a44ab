"""Physical memory: RAM ranges with holes, and a deterministic page allocator.

The allocator stands for the buddy allocator plus its per-CPU lists, reduced to what the direct map cares
about: *which* PFNs a folio gets. Order-0 pages are carved from a free 2 MiB pageblock, and freed order-0 pages
are reused last-in first-out, as the per-CPU lists do; order-9 folios take a whole free pageblock. Pageblocks
are taken in a seeded random order fixed at boot (:class:`PageblockOrder`), so guest memory lands at realistic,
scattered PFNs, the same seed gives the same PFNs, and the next choice depends only on which pageblocks are free.
Modelling choice: freed order-0 pages are not merged back into order-9 blocks until a 2M allocation needs them.

The allocator also holds an *unmapped source*, the pool of Brendan Jackman's ``ALLOC_UNMAPPED`` series (RFC
"mm: Add __GFP_UNMAPPED", 2026-02-25, https://lkml.iu.edu/hypermail/linux/kernel/2602.3/03398.html): whole pageblocks
taken out of the buddy free lists and out of the direct map, whose pages are handed out and freed back without
touching the direct map again (:meth:`PageAllocator.alloc_unmapped`). The allocator only keeps the books; the
zap and the flush of a new pageblock are :func:`nbmodel.designs.alloc_unmapped_folio`'s. Modelling choice: a
pageblock stays in the pool once taken (the series can give pageblocks back; the model never needs to).
"""

from __future__ import annotations

import copy
import functools
import heapq
import random
from dataclasses import dataclass

from .errors import Errno, ModelInputError
from .units import PAGES_1G, PAGES_2M, human, pages, parse_size

#: A page's byte in the allocators' maps (here and in ``nbmodel.bulk``): not RAM, free, allocated.
PAGE_NOT_RAM, PAGE_FREE, PAGE_USED = 0, 1, 2

#: The most RAM a modelled machine may have. The model keeps a byte per 4 KiB page and boots every leaf of the
#: direct map, so 256G takes about 3 s and 360 MB to boot; larger machines are refused as bad input.
MAX_MEMORY = 256 << 30
#: The most RAM a machine of the range engine (``nbmodel.bulk.BulkSystem``) may have. It boots no page
#: table, only a byte per page and a few per 2 MiB region: 1T takes about 2 s and 1.1 GB to build.
MAX_BULK_MEMORY = 1 << 40


@dataclass(frozen=True)
class MemoryMap:
    """RAM as sorted, non-overlapping ``(start_pfn, end_pfn)`` ranges (end exclusive), like the e820 map."""

    ranges: tuple

    @classmethod
    def of(cls, ranges, limit: int = MAX_MEMORY) -> MemoryMap:
        """The map of ``ranges``, checked: none may end above ``limit`` bytes of RAM plus the PC map's 1G hole."""
        max_end = (limit >> 12) + PAGES_1G
        clean = []
        try:
            items = [tuple(r) for r in ranges]
        except TypeError:
            raise ModelInputError("RAM ranges must be (start_pfn, end_pfn) pairs") from None
        for r in items:
            if len(r) != 2 or type(r[0]) is not int or type(r[1]) is not int or r[0] < 0 or r[1] <= r[0]:
                raise ModelInputError(f"bad RAM range {r!r}"[:120])
            if r[1] > max_end:
                raise ModelInputError(f"RAM range {r!r} ends above PFN {max_end:#x} (the model's limit)")
            clean.append(r)
        if not clean:
            raise ModelInputError("a memory map needs at least one RAM range")
        clean.sort()
        for (_, e1), (s2, _) in zip(clean, clean[1:], strict=False):
            if s2 < e1:
                raise ModelInputError(f"RAM ranges overlap at PFN {s2:#x}")
        return cls(tuple(clean))

    @classmethod
    def pc(cls, size, limit: int = MAX_MEMORY) -> MemoryMap:
        """A PC-like map of ``size`` bytes of RAM: page 0 and the legacy 640K-1M hole reserved, and for more
        than 3 GiB the PCI hole from 3 GiB to 4 GiB with the rest of RAM above 4 GiB. ``size`` is from 4M to
        ``limit`` (:data:`MAX_MEMORY`, 256G; the range engine's is :data:`MAX_BULK_MEMORY`)."""
        total = pages(_memory_size(size, limit))
        if total < 2 * PAGES_2M:
            raise ModelInputError("a PC memory map needs at least 4M of RAM")
        low_end = min(total, 3 * PAGES_1G)
        ranges = [(1, 0x9F), (0x100, low_end)]
        rest = total - low_end
        if rest:
            ranges.append((4 * PAGES_1G, 4 * PAGES_1G + rest))
        return cls.of(ranges, limit)

    @classmethod
    def flat(cls, size, start=0) -> MemoryMap:
        """One RAM range of ``size`` bytes starting at PFN ``start`` (no holes): small, easy to read."""
        n = pages(_memory_size(size))
        if n == 0:
            raise ModelInputError("memory size must be positive")
        if type(start) is not int or start < 0:
            raise ModelInputError(f"start must be a PFN (an integer >= 0), not {start!r}"[:120])
        return cls.of([(start, start + n)])

    @property
    def end_pfn(self) -> int:
        return self.ranges[-1][1]

    @property
    def total_pages(self) -> int:
        return sum(e - s for s, e in self.ranges)

    def is_ram(self, pfn: int) -> bool:
        return any(s <= pfn < e for s, e in self.ranges)


def _memory_size(size, limit: int = MAX_MEMORY) -> int:
    nbytes = parse_size(size)
    if nbytes > limit:
        raise ModelInputError(f"{size!r} is more RAM than the model's limit of {human(limit)}"[:120])
    return nbytes


def pageblocks(memmap: MemoryMap) -> tuple[bytearray, list[int], list[int], list[int]]:
    """An allocator's boot state: one byte per PFN (not RAM, free, used), free pages per 2M pageblock, and the
    whole free pageblocks (order-9 candidates) and partly free ones (order-0 only), in PFN order; each a new
    object the caller may change. Internal (for :class:`PageAllocator` and ``nbmodel.bulk``): trusts that
    ``memmap`` is a validated MemoryMap."""
    state, block_free, whole, partial = _boot_pageblocks(memmap)
    return bytearray(state), list(block_free), list(whole), list(partial)


@functools.lru_cache(maxsize=32)
def _boot_pageblocks(memmap: MemoryMap) -> tuple[bytes, tuple, tuple, tuple]:
    # Worked out once per memory map: a 4G machine's took about half of building a System (2 of 5 ms), and the
    # explorer, the tests and the widgets build thousands of machines of a few sizes.
    state = bytearray(memmap.end_pfn)
    for s, e in memmap.ranges:
        state[s:e] = bytes([PAGE_FREE]) * (e - s)
    nblocks = (memmap.end_pfn + PAGES_2M - 1) // PAGES_2M
    block_free = tuple(state[b * PAGES_2M:(b + 1) * PAGES_2M].count(PAGE_FREE) for b in range(nblocks))
    whole = tuple(b for b in range(nblocks) if block_free[b] == PAGES_2M)
    partial = tuple(b for b in range(nblocks) if 0 < block_free[b] < PAGES_2M)
    return bytes(state), block_free, whole, partial


class PageblockOrder:
    """The free pageblocks an allocation may take whole, in one seeded random order fixed at boot.

    The order is the sequence of draws a ``random.Random(seed)`` makes from the boot list of whole free
    pageblocks (each draw swaps a random entry to the end and pops it), then from the partly free ones. Until a
    pageblock comes back whole, the allocator hands them out in exactly that sequence. A pageblock that comes back
    (a freed 2M folio) takes its old place in the order, so the next draw depends only on *which* pageblocks are
    free, not on how many draws came before: a machine's allocator state is finite, which the explorer needs for
    its searches to end.

    Modelling choices. The buddy allocator itself takes the head of its free lists, deterministically; the nearest
    kernel counterpart of a random order is the boot-time shuffle of those lists, ``__shuffle_zone()`` in
    mm/shuffle.c (blocks of ``SHUFFLE_ORDER``, the largest buddy order: 4 MiB on x86, where the model shuffles
    2 MiB pageblocks; ``CONFIG_SHUFFLE_PAGE_ALLOCATOR``, ``page_alloc.shuffle=1``; Dan Williams, "mm: Shuffle
    initial free memory to improve memory-side-cache utilization", Message-ID
    ``154767946196.1983228.8172988837680181734.stgit@dwillia2-desk3.amr.corp.intel.com``). The model keeps the
    random order so guest memory lands at scattered PFNs. A freed pageblock going back to its old place, rather
    than to the head of a list, is the model's own rule. Internal (for
    :class:`PageAllocator` and ``nbmodel.bulk``): trusts its caller."""

    def __init__(self, whole: list[int], partial: list[int], seed: int):
        # order: the pageblocks in draw order; rank: pageblock -> its place in it. Both fixed at boot and shared.
        self.order, self.rank = _boot_draws(tuple(whole), tuple(partial), seed)
        self._whole = list(range(len(whole)))                 # heaps of ranks; sorted lists are heaps
        self._partial = list(range(len(whole), len(self.order)))

    def take(self, allow_partial: bool) -> int | None:
        """The first free pageblock in the order: a whole one, or (if none is left and ``allow_partial``) a
        partly free one; None when there is none."""
        pool = self._whole if self._whole or not allow_partial else self._partial
        if not pool:
            return None
        return self.order[heapq.heappop(pool)]

    def give_back(self, block: int) -> None:
        """A whole free pageblock returns to its place in the order."""
        heapq.heappush(self._whole, self.rank[block])

    def ranks(self) -> tuple[int, ...]:
        """The whole free pageblocks as their places in the order, ascending: the state the next draws depend on."""
        return tuple(sorted(self._whole))

    def load(self, ranks: tuple[int, ...]) -> None:
        """Make the whole free pageblocks those at ``ranks`` (ascending, as :meth:`ranks` returns them)."""
        self._whole = list(ranks)

    def copy(self) -> PageblockOrder:
        """An independent copy (the order itself is fixed at boot, so it is shared)."""
        new = copy.copy(self)
        new._whole, new._partial = list(self._whole), list(self._partial)
        return new

    def free_whole(self) -> tuple[int, ...]:
        """The whole free pageblocks, next one first."""
        return tuple(self.order[r] for r in sorted(self._whole))

    def state(self) -> tuple:
        """``(whole free pageblocks, partly free ones)``, each next one first."""
        return self.free_whole(), tuple(self.order[r] for r in sorted(self._partial))


@functools.lru_cache(maxsize=32)  # the same machine boots the same order: drawn once
def _boot_draws(whole: tuple, partial: tuple, seed: int) -> tuple[tuple, tuple]:
    """:class:`PageblockOrder`'s boot order of the pageblocks, and each pageblock's place in it."""
    rng = random.Random(seed)
    order: list[int] = []
    for boot in (list(whole), list(partial)):
        while boot:
            i = rng.randrange(len(boot))
            boot[i], boot[-1] = boot[-1], boot[i]
            order.append(boot.pop())
    rank = [0] * (max(order) + 1 if order else 0)
    for r, b in enumerate(order):
        rank[b] = r
    return tuple(order), tuple(rank)


class PageAllocator:
    """Hands out order-0 and order-9 blocks of PFNs, deterministically for a given seed.

    Its methods validate their arguments (ModelInputError, nothing changed): ``alloc`` an order of 0 or 9,
    ``free`` a block that is allocated with that order."""

    def __init__(self, memmap: MemoryMap, seed: int = 0, reserved: int = 0):
        if not isinstance(memmap, MemoryMap):
            raise ModelInputError(f"memmap must be a MemoryMap, not {type(memmap).__name__}")
        if type(seed) is not int or type(reserved) is not int or reserved < 0:
            raise ModelInputError(f"seed and reserved must be integers (reserved >= 0), not {seed!r}, {reserved!r}")
        self.memmap = memmap
        self.seed = seed
        self._state, self._block_free, whole, partial = pageblocks(memmap)
        self.blocks = PageblockOrder(whole, partial, seed)
        self._carve: list[int] = []   # PFNs left in the pageblock being carved, next one last
        self._pcp: list[int] = []     # freed order-0 PFNs, reused LIFO
        self._orders: dict[int, int] = {}
        self.free_pages = memmap.total_pages
        self._pool_blocks: set[int] = set()   # pageblocks of the unmapped source (the pageblock flag)
        self._pool_free: list[int] = []       # their free pages, reused LIFO
        #: Called as ``hook(pfn, order)`` when a folio of the unmapped source is freed back to it (set by
        #: :meth:`nbmodel.designs.Config.install`); None when no design watches.
        self.unmapped_free_hook = None
        # The kernel image, initial page tables and friends: taken at boot, never freed.
        for _ in range(reserved):
            self.alloc(0)

    # -- queries ------------------------------------------------------------------------------------------
    def is_allocated(self, pfn: int) -> bool:
        return pfn in self._orders

    def order_of(self, pfn: int) -> int:
        return self._orders[pfn]

    def in_unmapped_pool(self, pfn: int) -> bool:
        """Is ``pfn`` in a pageblock of the unmapped source (the series' pageblock flag)?"""
        return bool(self._pool_blocks) and pfn // PAGES_2M in self._pool_blocks

    def choices(self) -> tuple:
        """What decides the next allocations, for a model that replays them (the explorer's allocator):
        ``(PFNs left in the pageblock being carved, next first; the per-CPU list, top last; the whole free
        pageblocks, next first)``. A pageblock freed whole goes back to its place in the order of
        :class:`PageblockOrder`."""
        return tuple(reversed(self._carve)), tuple(self._pcp), self.blocks.free_whole()

    def snapshot(self) -> tuple:
        base = (bytes(self._state), self.blocks.state(), tuple(self._carve), tuple(self._pcp),
                tuple(sorted(self._orders.items())))
        if self._pool_blocks:
            return (*base, tuple(sorted(self._pool_blocks)), tuple(self._pool_free))
        return base

    # -- allocation ---------------------------------------------------------------------------------------
    def alloc(self, order: int) -> int:
        """Allocate ``2**order`` pages; returns the first PFN or ``-ENOMEM`` (``__alloc_pages``, order 0 or 9)."""
        if type(order) is not int or order not in (0, 9):  # 0.0 == 0 and False == 0: refused before any change
            raise ModelInputError(f"the model allocates order 0 or 9 folios, not order {order!r}"[:120])
        pfn = self._alloc_order0() if order == 0 else self._alloc_order9()
        if pfn < 0:
            return pfn
        n = 1 << order
        if n == 1:
            self._state[pfn] = PAGE_USED
        else:
            self._state[pfn:pfn + n] = bytes([PAGE_USED]) * n
        self._block_free[pfn // PAGES_2M] -= n
        self._orders[pfn] = order
        self.free_pages -= n
        return pfn

    def _alloc_order0(self) -> int:
        if self._pcp:
            return self._pcp.pop()
        if not self._carve:
            block = self._take_block(allow_partial=True)
            if block is None:
                return -Errno.ENOMEM
            base = block * PAGES_2M
            self._carve = [p for p in range(base + PAGES_2M - 1, base - 1, -1) if self._state[p] == PAGE_FREE]
        return self._carve.pop()

    def _alloc_order9(self) -> int:
        block = self._take_block(allow_partial=False)
        if block is None:
            block = self._reclaim_whole_block()
            if block is None:
                return -Errno.ENOMEM
        return block * PAGES_2M

    def _take_block(self, allow_partial: bool):
        return self.blocks.take(allow_partial)

    def _reclaim_whole_block(self):
        """Merge freed order-0 pages back into a whole free pageblock (the buddy allocator's coalescing)."""
        candidates = sorted({p // PAGES_2M for p in self._pcp if self._block_free[p // PAGES_2M] == PAGES_2M})
        if not candidates:
            return None
        block = candidates[0]
        self._pcp = [p for p in self._pcp if p // PAGES_2M != block]
        return block

    # -- the unmapped source --------------------------------------------------------------------------------
    def alloc_unmapped(self, order: int) -> tuple[int, int | None]:
        """Allocate ``2**order`` pages from the unmapped source: ``(pfn, new_block)``, where ``new_block`` is the
        first PFN of a pageblock this call took from the buddy free lists (its direct map is still valid: the
        caller zaps and flushes it before handing any page out) or None; ``(-ENOMEM, None)`` when no whole free
        pageblock is left. Order 0 reuses the pool's free pages first; order 9 takes a new pageblock."""
        if type(order) is not int or order not in (0, 9):
            raise ModelInputError(f"the model allocates order 0 or 9 folios, not order {order!r}"[:120])
        block = None
        if order == 0 and self._pool_free:
            pfn = self._pool_free.pop()
        else:
            block = self._take_block(allow_partial=False)
            if block is None:
                block = self._reclaim_whole_block()
                if block is None:
                    return -Errno.ENOMEM, None
            base = block * PAGES_2M
            self._state[base:base + PAGES_2M] = bytes([PAGE_USED]) * PAGES_2M
            self._block_free[block] -= PAGES_2M
            self.free_pages -= PAGES_2M
            self._pool_blocks.add(block)
            if order == 0:
                self._pool_free.extend(range(base + PAGES_2M - 1, base, -1))
            pfn = base
        self._orders[pfn] = order
        return pfn, (None if block is None else block * PAGES_2M)

    def unmapped_block_failed(self, first_pfn: int) -> None:
        """Undo :meth:`~nbmodel.physmem.PageAllocator.alloc_unmapped` after the zap of its new pageblock failed: the
        pageblock goes back to the buddy free lists whole, and nothing of it stays in the pool."""
        block = first_pfn // PAGES_2M
        if block not in self._pool_blocks:
            raise ModelInputError(f"PFN {first_pfn:#x} is not a pageblock of the unmapped source")
        base = block * PAGES_2M
        self._pool_blocks.discard(block)
        self._pool_free = [p for p in self._pool_free if p // PAGES_2M != block]
        for p in range(base, base + PAGES_2M):
            self._orders.pop(p, None)
        self._state[base:base + PAGES_2M] = bytes([PAGE_FREE]) * PAGES_2M
        self._block_free[block] += PAGES_2M
        self.free_pages += PAGES_2M
        self.blocks.give_back(block)

    def free(self, pfn: int, order: int) -> None:
        """Return a block to the allocator (``__free_pages``). Freeing what is not allocated is bad input. A
        block of the unmapped source goes back to that pool, not to the buddy free lists."""
        if type(pfn) is not int or type(order) is not int or self._orders.get(pfn) != order:
            where = f"{pfn:#x}" if type(pfn) is int else repr(pfn)[:40]
            raise ModelInputError(f"PFN {where} is not an allocated order-{order!r} block (double free?)"[:120])
        n = 1 << order
        if self._pool_blocks and pfn // PAGES_2M in self._pool_blocks:
            del self._orders[pfn]
            self._pool_free.extend(range(pfn + n - 1, pfn - 1, -1))
            if self.unmapped_free_hook is not None:
                self.unmapped_free_hook(pfn, order)
            return
        del self._orders[pfn]
        if n == 1:
            self._state[pfn] = PAGE_FREE
        else:
            self._state[pfn:pfn + n] = bytes([PAGE_FREE]) * n
        self._block_free[pfn // PAGES_2M] += n
        self.free_pages += n
        if order == 0:
            self._pcp.append(pfn)
        else:
            self.blocks.give_back(pfn // PAGES_2M)
