"""A range engine for the benchmarks: the counters :class:`~nbmodel.system.System` would produce, computed per run
of pages, per 2M/1G leaf and per range instead of one 4K folio at a time.

Why this is exact, not an estimate: under every design the counters depend only on *which* PFNs each folio
gets and on the direct-map leaf each zap lands in. So the engine reproduces the page allocator's choices
(:class:`RunAllocator`: the same seeded pageblock choice, carving order and LIFO reuse as
:class:`~nbmodel.physmem.PageAllocator`, on runs of PFNs), and the direct map per 2M region
(:class:`RunDirectMap`): a 4K zap splits its region's large leaves on the region's first zap (x86
``split_large_page()`` with ``flush_tlb_all()``, arm64 ``split_kernel_leaf_mapping()``), later zaps in the region
split nothing but arm64 contiguous-PTE groups, which are counted per 64K group. Flushes, IPIs, zaps, restores
and zeroings are counted per folio by arithmetic. Page-table pages come from the same allocator at the moment
the kernel would take them, so later folios get the same PFNs as in the traced model.

``tests/test_bench.py`` runs the same operations through the traced System and this engine, on small machines
with several seeds, every design and every arch, and compares counters, the PFN of every cached page, the
allocator and the direct map page by page: the fast path cannot drift from the model.

Not covered (raises :class:`BulkUnsupported`): break-it switches, TDX/SNP VMs, migration, races, running out of
memory, and zapping large folios without ``large_zap`` (v12's ``folio_zap_direct_map()`` refuses them).
"""

from __future__ import annotations

import bisect

from .counters import Counters
from .designs import MERMAP_WINDOW_PAGES, Config
from .errors import Errno, ModelInputError, VmFault
from .guest_memfd import fallocate_errno
from .physmem import MAX_BULK_MEMORY, PAGE_FREE, PAGE_USED, MemoryMap, PageblockOrder, pageblocks
from .policy import Policy
from .secretmem import KIND as SECRETMEM_FILE
from .system import step_result
from .tlb import arm64_flush_limit_excess, arm64_tlbi_ops
from .units import PAGE_SHIFT, PAGE_SIZE, PAGES_1G, PAGES_2M, parse_signed_size, parse_size

_FREE_BYTE, _USED_BYTE = bytes([PAGE_FREE]), bytes([PAGE_USED])
X86_CEILING = 33  # tlb_single_page_flush_ceiling; arm64: nbmodel.tlb.arm64_flush_limit_excess()
CONT_PTES, CONT_PMDS = 16, 16


class BulkUnsupported(ModelInputError):
    """The range engine does not model this; run it through the traced System instead."""


# -- the page allocator, on runs ------------------------------------------------------------------------------
class RunAllocator:
    """:class:`~nbmodel.physmem.PageAllocator`'s PFN choices, handed out as runs ``(first, n, step)``.

    A run covers ``first, first+step, ...`` (``n`` pages, step +1 or -1) and never crosses a 2M pageblock. The
    per-CPU list is a stack of runs whose concatenation is PageAllocator's per-CPU list (``choices()``, top last)."""

    def __init__(self, memmap: MemoryMap, seed: int = 0, reserved: int = 0):
        self.state, self.block_free, whole, partial = pageblocks(memmap)
        self.blocks = PageblockOrder(whole, partial, seed)
        self.carve: list[list[int]] = []   # [start, end) free ranges of the pageblock being carved, ascending
        self.pcp: list[list[int]] = []     # [first, n, step] runs; the next page handed out is the last run's last
        self.order9: set[int] = set()
        self.free_pages = memmap.total_pages
        for _ in range(reserved):
            self.alloc0()

    # -- order 0 -----------------------------------------------------------------------------------------------
    def _source(self) -> bool:
        """Make sure the next order-0 page exists (taking a pageblock to carve, as ``_alloc_order0`` would)."""
        if self.pcp or self.carve:
            return True
        block = self._take_block(True)
        if block is None:
            return False
        base = block * PAGES_2M
        if self.block_free[block] == PAGES_2M:
            self.carve = [[base, base + PAGES_2M]]
        else:
            seg, runs, i = self.state[base:base + PAGES_2M], [], 0
            while (i := seg.find(PAGE_FREE, i)) >= 0:
                j = i
                while j < PAGES_2M and seg[j] == PAGE_FREE:
                    j += 1
                runs.append([base + i, base + j])
                i = j
            self.carve = runs
        return True

    def peek0(self) -> int:
        """The PFN the next ``alloc0()`` returns, or -ENOMEM."""
        if not self._source():
            return -Errno.ENOMEM
        if self.pcp:
            f, n, s = self.pcp[-1]
            return f + (n - 1) * s
        return self.carve[0][0]

    def take0(self, maxn: int) -> tuple[int, int, int] | None:
        """Up to ``maxn`` order-0 pages from one source, in the order ``alloc(0)`` would return them."""
        if not self._source():
            return None
        if self.pcp:
            run = self.pcp[-1]
            f, n, s = run
            m = min(maxn, n)
            top = f + (n - 1) * s
            if m == n:
                self.pcp.pop()
            else:
                run[1] = n - m
            out = (top, m, -s if m > 1 else 1)
        else:
            rng = self.carve[0]
            m = min(maxn, rng[1] - rng[0])
            out = (rng[0], m, 1)
            rng[0] += m
            if rng[0] == rng[1]:
                self.carve.pop(0)
        lo = min(out[0], out[0] + (m - 1) * out[2])
        self.state[lo:lo + m] = _USED_BYTE * m
        self.block_free[lo // PAGES_2M] -= m
        self.free_pages -= m
        return out

    def alloc0(self) -> int:
        """``alloc(0)``: one page or -ENOMEM."""
        run = self.take0(1)
        return -Errno.ENOMEM if run is None else run[0]

    def free0(self, first: int, n: int, step: int) -> None:
        """Free order-0 pages ``first, first+step, ...`` in that order (each goes on the per-CPU list)."""
        if n == 1:
            lo = first
            self.state[first] = PAGE_FREE
        else:
            lo = min(first, first + (n - 1) * step)
            self.state[lo:lo + n] = _FREE_BYTE * n
        self.block_free[lo // PAGES_2M] += n
        self.free_pages += n
        if self.pcp:
            lf, ln, ls = self.pcp[-1]
            top = lf + (ln - 1) * ls
            d = first - top
            if d in (1, -1) and top // PAGES_2M == first // PAGES_2M and (ln == 1 or ls == d) \
                    and (n == 1 or step == d):
                self.pcp[-1] = [lf, ln + n, d]
                return
        self.pcp.append([first, n, step if n > 1 else 1])

    # -- order 9 -----------------------------------------------------------------------------------------------
    def alloc9(self) -> int:
        block = self._take_block(False)
        if block is None:
            block = self._reclaim_whole_block()
            if block is None:
                return -Errno.ENOMEM
        base = block * PAGES_2M
        self.state[base:base + PAGES_2M] = bytes([PAGE_USED]) * PAGES_2M
        self.block_free[block] -= PAGES_2M
        self.order9.add(block)
        self.free_pages -= PAGES_2M
        return base

    def free9(self, base: int) -> None:
        block = base // PAGES_2M
        self.order9.remove(block)
        self.state[base:base + PAGES_2M] = bytes([PAGE_FREE]) * PAGES_2M
        self.block_free[block] += PAGES_2M
        self.free_pages += PAGES_2M
        self.blocks.give_back(block)

    def _take_block(self, allow_partial: bool):
        return self.blocks.take(allow_partial)

    def _reclaim_whole_block(self):
        blocks = sorted({r[0] // PAGES_2M for r in self.pcp if self.block_free[r[0] // PAGES_2M] == PAGES_2M})
        if not blocks:
            return None
        self.pcp = [r for r in self.pcp if r[0] // PAGES_2M != blocks[0]]
        return blocks[0]

    # -- comparison with PageAllocator (tests) ---------------------------------------------------------------------
    def pcp_pages(self) -> list[int]:
        return [f + i * s for f, n, s in self.pcp for i in range(n)]

    def carve_pages(self) -> list[int]:
        """The remaining carve, next page last (PageAllocator's ``choices()`` lists it next page first)."""
        return [p for s, e in reversed(self.carve) for p in range(e - 1, s - 1, -1)]


# -- the direct map, per 2M region --------------------------------------------------------------------------------
class RunDirectMap:
    """Leaf levels per 2M region (3: inside a 1G/PUD leaf, 2: a 2M/PMD leaf, 1: a PTE table, 0: no RAM), arm64
    contiguous bits per 2M leaf and per 64K PTE group, and page validity. Boots the layout ``_map_boot`` builds."""

    def __init__(self, eng, memmap: MemoryMap, arch: str, mode: str):
        self.eng = eng
        self.arch = arch
        end = memmap.end_pfn
        nreg = (end + PAGES_2M - 1) // PAGES_2M
        ram = [0] * nreg
        for s, e in memmap.ranges:
            for r in range(s // PAGES_2M, (e - 1) // PAGES_2M + 1):
                ram[r] += min(e, (r + 1) * PAGES_2M) - max(s, r * PAGES_2M)
        if arch == "x86":
            use_1g, use_2m, cont = "nogbpages" not in mode, True, False
        else:
            use_1g = use_2m = cont = mode != "rodata-full"
        self.lvl = bytearray(nreg)
        self.cpmd = bytearray(nreg)
        self.cpte = bytearray((nreg * PAGES_2M) // CONT_PTES)
        self.inval = bytearray(nreg * PAGES_2M)
        self.n4k = self.n2m = self.n1g = 0
        for slot in range((nreg + 511) // 512):
            regs = range(slot * 512, min(nreg, slot * 512 + 512))
            if use_1g and len(regs) == 512 and all(ram[r] == PAGES_2M for r in regs):
                self.lvl[slot * 512:slot * 512 + 512] = b"\x03" * 512
                self.n1g += 1
                continue
            whole = [use_2m and ram[r] == PAGES_2M for r in regs]
            for i, r in enumerate(regs):
                if whole[i]:
                    self.lvl[r] = 2
                    g = i - i % CONT_PMDS
                    self.cpmd[r] = cont and all(whole[g:g + CONT_PMDS]) and len(whole[g:g + CONT_PMDS]) == 16
                    self.n2m += 1
                elif ram[r]:
                    self.lvl[r] = 1
                    self.n4k += ram[r]
                    if cont:
                        self._boot_cont_ptes(memmap, r)
        self.publish()

    def _boot_cont_ptes(self, memmap, r: int) -> None:
        for g in range(r * 32, r * 32 + 32):
            lo, hi = g * CONT_PTES, (g + 1) * CONT_PTES
            self.cpte[g] = sum(max(0, min(e, hi) - max(s, lo)) for s, e in memmap.ranges) == CONT_PTES

    def publish(self) -> None:
        self.eng.counters.set_direct_map(self.n4k, self.n2m, self.n1g)

    # -- splits ---------------------------------------------------------------------------------------------
    def _pgtable(self) -> None:
        if self.eng.alloc.alloc0() < 0:
            raise BulkUnsupported("a page-table allocation ran out of memory")
        self.eng.counters["pgtable_pages"] += 1

    def _split_1g(self, slot: int, cont: bool) -> None:
        self._pgtable()
        base = slot * 512
        self.lvl[base:base + 512] = b"\x02" * 512
        if cont:
            self.cpmd[base:base + 512] = b"\x01" * 512   # split_pud(..., to_cont=true)
        self.n1g -= 1
        self.n2m += 512
        self.eng.counters["direct_map_level3_splits"] += 1
        self.publish()

    def _split_2m(self, r: int, cont: bool) -> None:
        self._pgtable()
        self.lvl[r] = 1
        if cont:
            self.cpte[r * 32:r * 32 + 32] = b"\x01" * 32  # split_pmd(..., to_cont=true)
        self.n2m -= 1
        self.n4k += PAGES_2M
        self.eng.counters["direct_map_level2_splits"] += 1
        self.publish()

    def _x86_split(self, r: int, invalid: bool) -> None:
        """What ``apply_range()`` splits for a change to part of region ``r``'s leaf (x86: each split also
        ``flush_tlb_all()``); nothing when the leaf already has the wanted protection."""
        if self.lvl[r] == 3 and invalid:  # 1G leaves are only ever valid here
            self._split_1g(r // 512, False)
            self.eng.flush_all()
        if self.lvl[r] == 2 and bool(self.inval[r * PAGES_2M]) != invalid:
            self._split_2m(r, False)
            self.eng.flush_all()

    def _arm64_boundary(self, pfn: int) -> None:
        """``split_kernel_leaf_mapping_locked(pfn)`` above the PTE level (contiguous PTEs: :meth:`_split_cptes`)."""
        if pfn >= len(self.inval):
            return
        r = pfn // PAGES_2M
        if self.lvl[r] == 3 and pfn % PAGES_1G:
            self._split_1g(r // 512, True)
        if self.lvl[r] == 2 and self.cpmd[r] and pfn % (CONT_PMDS * PAGES_2M):
            g = r - r % CONT_PMDS
            self.cpmd[g:g + CONT_PMDS] = bytes(CONT_PMDS)
            self.eng.counters["arm64_contpmd_splits"] += 1
        if self.lvl[r] == 2 and pfn % PAGES_2M:
            self._split_2m(r, True)

    def _split_cptes(self, lo: int, hi: int) -> None:
        """Every contiguous-PTE group holding a page of ``[lo, hi)`` changed one page at a time is split."""
        g0, g1 = lo // CONT_PTES, (hi - 1) // CONT_PTES + 1
        n = self.cpte[g0:g1].count(1)
        if n:
            self.cpte[g0:g1] = bytes(g1 - g0)
            self.eng.counters["arm64_contpte_splits"] += n

    def change_pages(self, lo: int, n: int, invalid: bool) -> None:
        """``n`` 4K folios at ``[lo, lo+n)`` (all in one 2M region) each changed on its own, in any order."""
        r = lo // PAGES_2M
        if self.arch == "x86":
            self._x86_split(r, invalid)
        elif self.eng.mode == "bbml2":
            self._arm64_boundary(lo)
            self._arm64_boundary(lo + 1)
            self._split_cptes(lo, lo + n)
        if self.lvl[r] == 2:
            raise BulkUnsupported("a 4K change left a 2M leaf whole")
        if n == 1:
            self.inval[lo] = invalid
        else:
            self.inval[lo:lo + n] = (b"\x01" if invalid else b"\x00") * n

    def change_block(self, base: int, invalid: bool) -> None:
        """One 2M folio at ``base`` changed as a whole (``set_direct_map_valid_noflush(addr, 512, ...)``)."""
        r = base // PAGES_2M
        if self.arch == "x86":
            if self.lvl[r] == 3:
                self._split_1g(r // 512, False)
                self.eng.flush_all()
        elif self.eng.mode == "bbml2":
            self._arm64_boundary(base)
            self._arm64_boundary(base + PAGES_2M)
        self.inval[base:base + PAGES_2M] = (b"\x01" if invalid else b"\x00") * PAGES_2M


# -- files ----------------------------------------------------------------------------------------------------
class BulkFile:
    """A guest_memfd or memfd_secret file; its page cache is a sorted sequence of extents
    ``[index, first_pfn, n, step, order, flags]``: ``n`` folios at consecutive indices (order 0: PFNs
    ``first + i*step`` inside one pageblock; order 9: one folio).

    The extents are kept in chunks of at most ``2 * LOAD`` (each with its sorted keys, and the chunks' first
    keys in ``mins``), as a B-tree of two levels: finding an index is two binary searches, and changing the
    extents of a range touches only the chunks holding them. So every operation costs O(log n) plus the extents
    it touches, whatever the cache holds (a list, as before, moved every later extent on each insert)."""

    LOAD = 256

    def __init__(self, name: str, kind: str, size: int, flags=frozenset()):
        self.name, self.kind, self.size, self.flags = name, kind, size, frozenset(flags)
        self.chunks: list[list[list[int]]] = []   # extents, in index order, chunk by chunk
        self.ckeys: list[list[int]] = []          # each chunk's extents' first indices
        self.mins: list[int] = []                 # each chunk's first index
        self.count = 0                            # extents

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        for chunk in self.chunks:
            yield from chunk

    @property
    def ext(self) -> list[list[int]]:
        """Every extent, in index order (a new list: for tests and reports)."""
        return [e for chunk in self.chunks for e in chunk]

    def _span(self, e) -> int:
        return e[2] << e[4]

    def _pos(self, idx: int) -> tuple[int, int]:
        """``(chunk, i)`` of the first extent whose index is ``>= idx`` (``i`` may be the chunk's length only
        for the last chunk)."""
        mins = self.mins
        if not mins:
            return 0, 0
        c = bisect.bisect_right(mins, idx) - 1
        if c < 0:
            return 0, 0
        i = bisect.bisect_left(self.ckeys[c], idx)
        if i == len(self.ckeys[c]) and c + 1 < len(mins):
            return c + 1, 0
        return c, i

    def split_at(self, idx: int) -> None:
        """Make ``idx`` an extent boundary (order-0 extents only ever need it)."""
        c = bisect.bisect_right(self.mins, idx) - 1
        if c < 0:
            return
        keys = self.ckeys[c]
        i = bisect.bisect_right(keys, idx) - 1
        e = self.chunks[c][i]
        if e[0] < idx < e[0] + (e[2] << e[4]):
            k = (idx - e[0]) >> e[4]
            if not k or e[4]:
                raise BulkUnsupported("a range that cuts a large folio")
            tail = [idx, e[1] + k * e[3], e[2] - k, e[3], e[4], e[5]]
            e[2] = k
            self.chunks[c].insert(i + 1, tail)
            keys.insert(i + 1, idx)
            self.count += 1
            if len(keys) > 2 * self.LOAD:
                self._split_chunk(c)

    def _split_chunk(self, c: int) -> None:
        """Cut chunk ``c`` (longer than ``2 * LOAD``) into chunks of ``LOAD`` extents (the last one longer)."""
        chunk, keys, load = self.chunks[c], self.ckeys[c], self.LOAD
        cuts = range(load, len(chunk) - load + 1, load)
        self.chunks[c + 1:c + 1] = [chunk[i:i + load] if i + 2 * load <= len(chunk) else chunk[i:] for i in cuts]
        self.ckeys[c + 1:c + 1] = [keys[i:i + load] if i + 2 * load <= len(keys) else keys[i:] for i in cuts]
        self.mins[c + 1:c + 1] = [keys[i] for i in cuts]
        del chunk[load:], keys[load:]

    def window(self, lo: int, hi: int) -> list[list[int]]:
        """Split at ``lo`` and ``hi``; the extents inside ``[lo, hi)``, in order (the extents themselves)."""
        self.split_at(lo)
        self.split_at(hi)
        c0, i0 = self._pos(lo)
        c1, i1 = self._pos(hi)
        if c0 == c1:
            return self.chunks[c0][i0:i1] if self.chunks else []
        out = self.chunks[c0][i0:]
        for c in range(c0 + 1, c1):
            out.extend(self.chunks[c])
        out.extend(self.chunks[c1][:i1])
        return out

    def take(self, lo: int, hi: int) -> list[list[int]]:
        """Remove the extents inside ``[lo, hi)`` (split at both ends first) and return them, in order."""
        c = bisect.bisect_right(self.mins, lo) - 1
        if c >= 0:
            keys, chunk = self.ckeys[c], self.chunks[c]
            i = bisect.bisect_right(keys, lo) - 1
            e = chunk[i]
            start = e[0]
            n = e[2]
            if not e[4] and hi <= start + n and lo < start + n:
                # The range lies inside one order-0 extent (a punch of a few pages): cut it out in place, giving
                # the same pieces as splitting at lo and hi would.
                k0, k1, step = lo - start, hi - start, e[3]
                mid = [lo, e[1] + k0 * step, k1 - k0, step, 0, e[5]]
                tail = [hi, e[1] + k1 * step, n - k1, step, 0, e[5]] if k1 < n else None
                if k0:
                    e[2] = k0
                    if tail is not None:
                        chunk.insert(i + 1, tail)
                        keys.insert(i + 1, hi)
                        self.count += 1
                        if len(keys) > 2 * self.LOAD:
                            self._split_chunk(c)
                    return [mid]
                if tail is not None:
                    chunk[i], keys[i] = tail, hi
                    if i == 0:
                        self.mins[c] = hi
                    return [mid]
                del chunk[i], keys[i]
                self.count -= 1
                self._rebalance(c)
                return [mid]
        self.split_at(lo)
        self.split_at(hi)
        c0, i0 = self._pos(lo)
        c1, i1 = self._pos(hi)
        if c0 != c1 or not self.chunks:
            out = self.window(lo, hi)
            self.replace(lo, hi, [])
            return out
        chunk, keys = self.chunks[c0], self.ckeys[c0]
        out = chunk[i0:i1]
        if out:
            del chunk[i0:i1]
            del keys[i0:i1]
            self.count -= len(out)
            self._rebalance(c0)
        return out

    def replace(self, lo: int, hi: int, new: list[list[int]]) -> None:
        """Put ``new`` (sorted extents inside ``[lo, hi)``) in place of the extents :meth:`window` returned."""
        if not self.chunks:
            if new:
                self.chunks.append(list(new))
                self.ckeys.append([e[0] for e in new])
                self.mins.append(new[0][0])
                self.count = len(new)
                self._rebalance(0)
            return
        c0, i0 = self._pos(lo)
        c1, i1 = self._pos(hi)
        chunks, ckeys = self.chunks, self.ckeys
        if c0 == c1:
            self.count += len(new) - (i1 - i0)
            chunks[c0][i0:i1] = new
            ckeys[c0][i0:i1] = [e[0] for e in new]
        else:
            self.count += len(new) - (len(chunks[c0]) - i0) - (i1) - sum(len(chunks[c]) for c in range(c0 + 1, c1))
            chunks[c0][i0:] = new
            ckeys[c0][i0:] = [e[0] for e in new]
            del chunks[c1][:i1]
            del ckeys[c1][:i1]
            if ckeys[c1]:
                self.mins[c1] = ckeys[c1][0]
            del chunks[c0 + 1:c1]
            del ckeys[c0 + 1:c1]
            del self.mins[c0 + 1:c1]
            if not ckeys[c0 + 1]:
                del chunks[c0 + 1], ckeys[c0 + 1], self.mins[c0 + 1]
        self._rebalance(c0)

    def _rebalance(self, c: int) -> None:
        """Chunk ``c`` after a change: dropped if empty, its first key refreshed, halved while too long."""
        if not self.ckeys[c]:
            del self.chunks[c], self.ckeys[c], self.mins[c]
            return
        if len(self.ckeys[c]) < self.LOAD // 2 and c + 1 < len(self.chunks):  # a small chunk joins the next
            self.chunks[c].extend(self.chunks.pop(c + 1))
            self.ckeys[c].extend(self.ckeys.pop(c + 1))
            del self.mins[c + 1]
        self.mins[c] = self.ckeys[c][0]
        if len(self.ckeys[c]) > 2 * self.LOAD:
            self._split_chunk(c)

    def pfn_map(self) -> dict[int, int]:
        """``{index: pfn}`` for every cached page (tests only: this is per page)."""
        out = {}
        for idx, first, n, step, order, _ in self:
            for i in range(n):
                for j in range(1 << order):
                    out[idx + (i << order) + j] = (first + i * step if order == 0 else first + j)
        return out

    @property
    def nrpages(self) -> int:
        return sum(e[2] << e[4] for e in self)


# -- the engine ---------------------------------------------------------------------------------------------------
class BulkSystem:
    """The range engine: ``step(op, **args)`` with :class:`~nbmodel.system.System`'s op names, where the fault
    ops (``user_fault``, ``guest_fault``, ``secret_fault``) take a ``len`` and stand for one fault per 4K page
    of the range, in order. ``large_zap`` lets ``folio_zap_direct_map()`` take 2M folios (ahead of v12)."""

    def __init__(self, design: str = "filemap", arch: str = "x86", mode: str | None = None, memory="4G",
                 cpus: int = 2, seed: int = 0, write: str = "refuse", large_folios: bool = False,
                 batch_flush: bool = False, large_zap: bool = False, fwb: bool = True, reserved_pages: int = 64,
                 tlbirange: bool | None = None):
        self.config = Config.make(design, (), write, large_folios, batch_flush, large_zap)
        self.design = design
        self.policy = Policy(design=design, arch=arch, mode=mode, cpus=cpus, write=write, large_folios=large_folios,
                             batch_flush=batch_flush, large_zap=large_zap, fwb=fwb, tlbirange=tlbirange)
        self.arch = arch
        self.mode = mode or ("4-level" if arch == "x86" else "rodata-full")
        if arch == "arm64" and self.mode not in ("rodata-full", "bbml2", "no-set-direct-map"):
            raise BulkUnsupported(f"arm64 mode {self.mode!r} is not in the range engine")
        if arch not in ("x86", "arm64"):
            raise ModelInputError(f"unknown arch {arch!r}")
        if arch == "x86" and set(self.mode.replace(",", " ").split()) - {"4-level", "5-level", "nogbpages"}:
            raise ModelInputError(f"unknown x86 mode {self.mode!r}; use 4-level, 5-level, nogbpages")
        self.memmap = memory if isinstance(memory, MemoryMap) else MemoryMap.pc(memory, MAX_BULK_MEMORY)
        self.ncpus = cpus
        self.tlbirange = (arch == "arm64") if tlbirange is None else tlbirange  # as Kernel(tlbirange=...)
        self.large_zap = large_zap
        self.fwb = fwb
        self.order = 9 if large_folios else 0
        self.counters = Counters()
        self.folio_ops = 0      # folios created, touched or removed by the ops so far
        self.pages_added = 0    # 4K pages of the folios created
        self.dmap = RunDirectMap(self, self.memmap, arch, self.mode)
        self.alloc = RunAllocator(self.memmap, seed=seed, reserved=reserved_pages)
        self.files: dict[str, BulkFile] = {}
        self._ops: dict = {}   # op name -> bound op_ method (step() dispatches once per op per machine)
        self.can_set = not (arch == "arm64" and self.mode == "no-set-direct-map")
        self._deferred = 0
        self._frees: dict = {}  # (kind, flags, folio state) -> the policy's FreeEffect, looked up once

    def order_of(self, f: BulkFile) -> int:
        """Folio order of a file's folios: memfd_secret always uses order 0."""
        return 0 if f.kind == SECRETMEM_FILE else self.order

    # -- flushes --------------------------------------------------------------------------------------------
    def flush_all(self, n: int = 1) -> None:
        """``flush_tlb_all()`` ``n`` times (x86: an IPI to every other CPU each time)."""
        c = self.counters
        c["tlb_full_flushes"] += n
        if self.arch == "x86" and self.ncpus > 1:
            c["ipis"] += n * (self.ncpus - 1)

    def flush_ranges(self, n: int, pages: int) -> None:
        """``n`` calls of ``flush_tlb_kernel_range()`` over ``pages`` pages each."""
        c = self.counters
        x86 = self.arch == "x86"
        if pages > X86_CEILING if x86 else arm64_flush_limit_excess(pages, self.tlbirange):
            self.flush_all(n)
            return
        c["tlb_flushes"] += n
        if x86:
            c["tlb_page_invalidations"] += n * pages * self.ncpus
            if self.ncpus > 1:
                c["ipis"] += n * (self.ncpus - 1)
        else:
            single, ranged = arm64_tlbi_ops(pages, self.tlbirange)
            c["tlb_page_invalidations"] += n * single
            c["tlbi_range_ops"] += n * ranged

    # -- the zap and the restore --------------------------------------------------------------------------
    def _zap(self, first: int, n: int, step: int, order: int, flushes: int) -> None:
        """Zap ``n`` folios (a run of 4K folios, or one 2M folio), each followed by ``flushes`` calls of
        ``flush_tlb_kernel_range()`` over it (as the design's probe counted: 0 when the flush is batched)."""
        if not self.can_set:
            raise BulkUnsupported("zap without can_set_direct_map()")
        lo = min(first, first + (n - 1) * step)
        if order:
            self.dmap.change_block(first, True)
        else:
            self.dmap.change_pages(lo, n, True)
        self.counters["zaps"] += n
        for _ in range(flushes):
            self.flush_ranges(n, 1 << order)

    def _restore(self, first: int, n: int, step: int, order: int) -> None:
        """``folio_restore_direct_map()`` / ``set_direct_map_default_noflush()`` for ``n`` folios: no flush, and
        no split, since the zap split already (the engine refuses a restore that would need one)."""
        lo = min(first, first + (n - 1) * step)
        if not order and self.dmap.lvl[lo // PAGES_2M] != 1:
            raise BulkUnsupported("a 4K restore inside a large leaf would split (restore_splits)")
        if order:
            self.dmap.change_block(first, False)
        else:
            self.dmap.change_pages(lo, n, False)
        self.counters["restores"] += n

    # -- ops ----------------------------------------------------------------------------------------------------
    def step(self, op: str, **args) -> str:
        """Run one op; returns the kernel's answer as System does (``"0"``, ``"EINVAL"``, bytes written...)."""
        fn = self._ops.get(op) if type(op) is str else None
        if fn is None:
            fn = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
            if fn is None:
                raise BulkUnsupported(f"the range engine has no op {op!r}")
            self._ops[op] = fn
        return fn(**args)

    def op_gmem_create(self, file, size, flags=("MMAP", "INIT_SHARED", "NO_DIRECT_MAP"), vm_type="default"):
        if vm_type != "default":
            raise BulkUnsupported("only the default VM type is in the range engine")
        if file in self.files:
            raise ModelInputError(f"a file named {file!r} exists already")
        nbytes = parse_size(size)
        flags = frozenset(flags)
        ret = self.policy.create("guest_memfd", nbytes, flags, vm_type)  # kvm_gmem_create(), run for real
        if ret == "0":
            self.files[file] = BulkFile(file, "guest_memfd", nbytes, flags)
        return ret

    def op_secret_create(self, file, size):
        if file in self.files:
            raise ModelInputError(f"a file named {file!r} exists already")
        nbytes = parse_size(size)
        ret = self.policy.create("secretmem", nbytes)  # memfd_secret() + ftruncate(), run for real
        if ret == "0":
            self.files[file] = BulkFile(file, "secretmem", nbytes)
        return ret

    def _file(self, name, kind):
        f = self.files.get(name)
        if f is None or f.kind != kind:
            raise ModelInputError(f"no {kind} file named {name!r}")
        return f

    def op_fallocate(self, file, offset=0, len=None, keep_size=True):
        f = self._file(file, "guest_memfd")
        off = offset if type(offset) is int else parse_signed_size(offset)
        ln = len if type(len) is int else parse_signed_size(len)
        err = fallocate_errno(f.size, off, ln, keep_size=keep_size)
        if err is not None:
            return step_result(-err)
        self._deferred = 0
        ret = self._populate(f, off >> PAGE_SHIFT, (off + ln) >> PAGE_SHIFT, "fallocate")
        if self._deferred:
            self.flush_all()  # the batched fallocate()'s one flush_tlb_all()
        return ret

    def op_punch_hole(self, file, offset=0, len=None):
        f = self._file(file, "guest_memfd")
        off = offset if type(offset) is int else parse_signed_size(offset)
        ln = len if type(len) is int else parse_signed_size(len)
        err = fallocate_errno(f.size, off, ln, punch_hole=True)
        if err is not None:
            return step_result(-err)
        self._truncate(f, off >> PAGE_SHIFT, (off + ln) >> PAGE_SHIFT)
        return "0"

    def op_close(self, file):
        f = self.files.get(file)
        if f is None:
            raise ModelInputError(f"no file named {file!r}")
        self._truncate(f, 0, f.size >> PAGE_SHIFT)
        del self.files[file]
        return "0"

    def _fault(self, f, offset, len, how):
        off, ln = parse_size(offset), parse_size(len)
        if ln <= 0 or off % PAGE_SIZE or ln % PAGE_SIZE:
            raise BulkUnsupported("fault ranges are whole pages")
        if off >= f.size and how == "guest_fault":
            return step_result(-Errno.EINVAL)  # kvm_gmem_get_pfn()
        refused = self._refused(f, how)
        if refused:
            return refused
        if off >= f.size:
            return step_result(VmFault.SIGBUS)  # the fault handlers past i_size
        if off + ln > f.size:
            raise BulkUnsupported("a fault range past the end of the file")
        return self._populate(f, off >> PAGE_SHIFT, (off + ln) >> PAGE_SHIFT, how)

    def _refused(self, f, how) -> str | None:
        """The errno the op answers on this file whatever the index (no folio created), or None."""
        eff = self.policy.add(f.kind, f.flags, how)
        return eff.result if not eff.created and not _ok(eff.result) else None

    def op_user_fault(self, file, offset=0, len=PAGE_SIZE):
        return self._fault(self._file(file, "guest_memfd"), offset, len, "user_fault")

    def op_guest_fault(self, file, offset=0, len=PAGE_SIZE):
        return self._fault(self._file(file, "guest_memfd"), offset, len, "guest_fault")

    def op_secret_fault(self, file, offset=0, len=PAGE_SIZE):
        return self._fault(self._file(file, "secretmem"), offset, len, "secret_fault")

    def op_write(self, file, offset=0, len=PAGE_SIZE):
        f = self._file(file, "guest_memfd")
        off, ln = parse_size(offset), parse_size(len)
        if off % PAGE_SIZE or ln % PAGE_SIZE or ln == 0 or off + ln > f.size:
            return step_result(-Errno.EINVAL)
        refused = self._refused(f, "write")
        if refused:
            return refused
        self._written, self._wend = 0, off + ln
        ret = self._populate(f, off >> PAGE_SHIFT, (off + ln) >> PAGE_SHIFT, "write")
        return str(self._written) if ret in ("0", "STOP") else ret

    # -- population ---------------------------------------------------------------------------------------------
    def _populate(self, f: BulkFile, lo: int, hi: int, how: str) -> str:
        """Folios for indices ``[lo, hi)`` in index order: existing ones get ``how``'s work, holes get new ones."""
        sh = self.order_of(f)
        lo_f, hi_f = lo >> sh << sh, ((hi + (1 << sh) - 1) >> sh) << sh
        old = f.window(lo_f, hi_f)
        new: list[list[int]] = []
        idx, k, ret = lo_f, 0, "0"
        while idx < hi_f and ret == "0":
            nxt = old[k][0] if k < len(old) else hi_f
            if idx < nxt:
                ret = self._add(f, idx, (nxt - idx) >> sh, how, new)
                idx = nxt if ret == "0" else idx
                continue
            e = old[k]
            k += 1
            ret = self._existing(f, e, how)
            new.append(e)
            idx = e[0] + f._span(e)
        new.extend(old[k:])
        f.replace(lo_f, hi_f, _merge(new))  # only the window changes: O(extents touched + log extents)
        return ret

    def _effect(self, f: BulkFile, how: str, state: int | None = None):
        """The design's effect on one folio (learned from the design code, :mod:`nbmodel.policy`)."""
        eff = self.policy.add(f.kind, f.flags, how) if state is None else \
            self.policy.use(f.kind, f.flags, how, state)
        if eff.created and eff.order != self.order_of(f):
            raise BulkUnsupported(f"{how} leaves an order-{eff.order} folio here (large folios need large_zap)")
        return eff

    def _add(self, f: BulkFile, idx: int, count: int, how: str, out: list) -> str:
        """Create ``count`` folios at ``idx``...: allocate each, then zero/zap it as the design does."""
        eff = self._effect(f, how)
        if not _ok(eff.result):
            raise BulkUnsupported(f"{how} fails on a new folio ({eff.result}) under {self.config.label()}")
        zap = eff.zap_flushes
        c = self.counters
        order = self.order_of(f)
        while count:
            if order:
                base = self.alloc.alloc9()
                if base < 0:
                    raise BulkUnsupported("out of memory")
                run = (base, 1, 0)
            else:
                pfn = self.alloc.peek0()
                if pfn < 0:
                    raise BulkUnsupported("out of memory")
                one = zap is not None and self._splits_at(pfn)
                run = self.alloc.take0(1 if one else count)
            n = run[1]
            c["zeroings"] += n * eff.zeroings
            if zap is not None:
                self._zap(run[0], n, run[2], order, zap)
                if eff.deferred:
                    self._deferred += n
            self._count_extra(how, idx, n, order, eff.mermap_pages)
            out.append([idx, run[0], n, run[2], order, eff.flags])
            idx += n << order
            count -= n
            self.folio_ops += n
            self.pages_added += n << order
        return "0"

    def _splits_at(self, pfn: int) -> bool:
        """Would a 4K change at ``pfn`` split something that allocates a page table?"""
        lvl = self.dmap.lvl[pfn // PAGES_2M]
        if self.arch == "x86":
            return lvl >= 2
        return self.mode == "bbml2" and lvl >= 2

    def _count_extra(self, how: str, idx: int, n: int, order: int, mermap_pages: int) -> None:
        if how == "write":
            if order:   # kvm_gmem_write(): written += min(folio_size(), end - folio start)
                self._written += sum(min(PAGE_SIZE << order, self._wend - ((idx + (i << order)) << PAGE_SHIFT))
                                     for i in range(n))
            else:
                self._written += n << PAGE_SHIFT
        if mermap_pages:
            c = self.counters
            before = c["mermap_maps"]
            c["mermap_maps"] += n * mermap_pages
            c["mermap_local_flushes"] += c["mermap_maps"] // MERMAP_WINDOW_PAGES - before // MERMAP_WINDOW_PAGES

    def _existing(self, f: BulkFile, e: list, how: str) -> str:
        """``how`` on folios already cached (extent ``e``), as the design does it to one such folio."""
        n, order = e[2], e[4]
        eff = self._effect(f, how, e[5])
        if not _ok(eff.result):
            if how == "write":   # write() refuses this folio: bytes written so far, or the errno
                return "STOP" if self._written else eff.result
            raise BulkUnsupported(f"{how} fails on a cached folio ({eff.result}) under {self.config.label()}")
        self.counters["zeroings"] += n * eff.zeroings
        if eff.zap_flushes is not None:
            if order == 0 and self._splits_at(e[1]):
                # the first folio splits; page-table pages come from the allocator in between
                self._zap(e[1], 1, 1, 0, eff.zap_flushes)
                if n > 1:
                    self._zap(e[1] + e[3], n - 1, e[3], 0, eff.zap_flushes)
            else:
                self._zap(e[1], n, e[3], order, eff.zap_flushes)
        self._count_extra(how, e[0], n, order, eff.mermap_pages)
        e[5] = eff.flags
        self.folio_ops += n
        return "0"

    # -- truncation ---------------------------------------------------------------------------------------------
    def _truncate(self, f: BulkFile, lo: int, hi: int) -> None:
        """``truncate_inode_pages_range()``: folios wholly inside leave in index order, are restored and zeroed as
        the design does, and go back to the allocator in index order."""
        if self.order_of(f):
            lo, hi = ((lo + 511) >> 9) << 9, hi >> 9 << 9   # partial 2M folios: untouched (AS_INACCESSIBLE)
            if lo >= hi:
                return
        gone = f.take(lo, hi)
        c = self.counters
        frees = self._frees
        for e in gone:
            _, first, n, step, order, flags = e
            self.folio_ops += n
            free = frees.get((f.kind, f.flags, flags))
            if free is None:
                try:
                    free = frees[f.kind, f.flags, flags] = self.policy.free(f.kind, f.flags, flags)
                except ValueError as err:
                    raise BulkUnsupported(str(err)) from None
            for _ in range(free.restores):
                self._restore(first, n, step, order)
            c["zeroings"] += n * free.zeroings
        for e in gone:
            if e[4]:
                self.alloc.free9(e[1])
            else:
                self.alloc.free0(e[1], e[2], e[3])

    # -- results -------------------------------------------------------------------------------------------------
    def leaf_counts(self) -> dict:
        return {"4K": self.dmap.n4k, "2M": self.dmap.n2m, "1G": self.dmap.n1g}


def _ok(result: str) -> bool:
    return result == "0" or result.isdigit()


def _merge(exts: list) -> list:
    """Join neighbouring order-0 extents that continue each other inside one pageblock with equal flags."""
    out: list[list[int]] = []
    for e in exts:
        if out:
            p = out[-1]
            if p[4] == e[4] == 0 and p[5] == e[5] and p[0] + p[2] == e[0]:
                last = p[1] + (p[2] - 1) * p[3]
                d = e[1] - last
                if d in (1, -1) and last // PAGES_2M == e[1] // PAGES_2M and (p[2] == 1 or p[3] == d) \
                        and (e[2] == 1 or e[3] == d):
                    p[2] += e[2]
                    p[3] = d
                    continue
        out.append(e)
    return out


__all__ = ["BulkSystem", "BulkUnsupported", "RunAllocator", "RunDirectMap", "BulkFile"]
