"""The explorer's compact state: a :class:`~nbmodel.system.System` encoded as small interned tuples, and back.

The explorer never re-implements the model. It keeps one *scratch* System per configuration and, for each transition
it has not seen yet, **decodes** a compact state into that System, runs the real :meth:`System.run_validated` (the
core of :meth:`System.step`), and **encodes** the result. The compact state drops only what no decision of the model
reads (the ``user_mapped``/``guest_mapped`` flags, counters other than the two invariants (b) and (c) read, the
trace) and keeps page tables and TLBs only for the 2 MiB blocks the run has allocated from.

Locality. With order-0 folios an operation on one file index touches only that index's folio, the pages the
allocator hands out or takes back, and shared structure (page-table shape, large TLB entries, the allocator).
So the state is split into a global part ``G`` and one *record* per file index; a record carries its folio
and the two per-page facts that belong to it: its direct-map entry's valid bits and which CPUs hold a 4 KiB
TLB entry for it. An operation on index ``i`` is then a function of ``(record_i, G)`` alone, and the explorer
memoizes it on that pair. The one effect that reaches other records, ``flush_tlb_all()``, is reported so the
caller clears their TLB bits. :meth:`Universe.encode` checks locality on every call (an operation that
changes another index raises :class:`LocalityError`), and :mod:`nbmodel.explore_check` (run by
``tests/test_explore.py``) checks the encoding and every memoized successor against fresh Systems.

Free pages carry their own bits too. The allocator's per-CPU list is part of ``G`` as ``(pfn, bits, TLB
holders)`` entries, so most steps read only a *view* of ``G``: a step that allocates nothing reads no part of
the list (:func:`view0_of`), one that takes one page reads its top entry (:func:`view_of`). Neither view holds
the invariants' two counters: no kernel path decides anything on them, only invariants (b) and (c) read them,
and once set they stay set, so a state that has them already breaks (b) or (c) itself. A step run on a view
returns a delta that :func:`apply_delta0` / :func:`apply_delta` applies to any ``G`` with that view; a step
that reaches below the view (a second allocation, a range flush over a page it does not know) raises
:class:`NeedDeeper` and runs on the whole ``G``. A step on a view with a page on the list runs with the rest of
the list hidden, whether or not more lie there, and so with the carve position unread too (a step carves only
once the list is empty): the explorer keys those outcomes without either.

Windows. A 2M folio's record has no room for its 512 pages' bits and TLB holders, so they live in ``G``, with the
stale 4 KiB TLB entries over freed pageblocks. Where folios are 2M and each file has one page
(:func:`windows_tlbs`), a view shows the 4 KiB TLB entries only over a *window*: the record's folio, the
pageblock the allocator hands out next, and the page it carves next when the view shows the carve position
(:meth:`Universe.window_of`). A step that reads or changes an entry outside it raises NeedDeeper
(:meth:`Universe._outside`), and its delta carries the window, so ``G``'s entries outside it come back after the
step (:func:`tlbs_after`).

The allocator is replaced in the scratch System by :class:`ExploreAllocator`, which hands out the same PFNs
as :class:`~nbmodel.physmem.PageAllocator` for order 0 (per-CPU list, then the pageblock being carved) and
order 9 (the allocator's own :class:`~nbmodel.physmem.PageblockOrder`, loaded for each draw) with a state small
enough to hash: the per-CPU list, how far the pageblock has been carved, and which whole pageblocks are free.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, replace
from itertools import compress

from .counters import Counters
from .designs import Config
from .errors import Errno, ModelInputError
from .folio import Folio
from .invariants import broken
from .pagetable import CONT, RW, VALID
from .system import System
from .units import PAGE_SHIFT, human

GUEST_DATA = ("guest-secret", "guest-image", "secret")
_ZERO_COUNTERS = dict(Counters())
UNREAD_FLAGS = frozenset({"user_mapped", "guest_mapped"})
NO_FLAGS = (False, False)
PAGE_BITS = VALID | RW
GMEM, SECRET = "g", "s"


class ExploreLimit(Exception):
    """The configuration needs more than the explorer's abstraction covers (e.g. more pages than one block)."""


class RefusedMove(Exception):
    """System.step raised ModelInputError for a move the explorer generated (a model limitation or bug:
    the explorer skips the move and counts it)."""


class NeedDeeper(Exception):
    """A step run on a view of ``G`` reached below the part of the per-CPU list the view shows."""


class LocalityError(AssertionError):
    """An operation on one file index changed another: the per-record memo would be wrong."""


@dataclass(frozen=True)
class Space:
    """One configuration to explore: a machine, a design, its switches, and how many pages of which files."""

    design: str = "filemap"
    arch: str = "x86"
    mode: str | None = None
    switches: tuple = ()
    offsets: int = 3
    secret: int = 0
    cpus: int = 2
    memory: str = "4G"
    seed: int = 0
    write: str = "refuse"
    large_folios: bool = False
    batch_flush: bool = False
    close: bool = False
    interleave: bool = True
    flags: tuple = ("MMAP", "INIT_SHARED", "NO_DIRECT_MAP")
    skip: tuple = ()       # ops the search leaves out (e.g. "secret_fault+race", "migrate")
    large_zap: bool = False
    fwb: bool = True

    def config(self) -> Config:
        return Config.make(self.design, self.switches, self.write, self.large_folios, self.batch_flush,
                           self.large_zap)

    def system_kwargs(self) -> dict:
        return dict(design=self.design, arch=self.arch, mode=self.mode, memory=self.memory, cpus=self.cpus,
                    seed=self.seed, switches=tuple(self.switches), write=self.write,
                    large_folios=self.large_folios, batch_flush=self.batch_flush, large_zap=self.large_zap,
                    fwb=self.fwb)

    def files(self) -> list[tuple[str, int]]:
        """``[(file name, pages)]`` in state order: the guest_memfd first, then the memfd_secret file."""
        out = [(GMEM, self.offsets)] if self.offsets else []
        return out + ([(SECRET, self.secret)] if self.secret else [])

    def create_step(self, name: str) -> dict:
        pages = dict(self.files())[name]
        if name == GMEM:
            return {"op": "gmem_create", "file": GMEM, "size": human(pages << PAGE_SHIFT),
                    "flags": list(self.flags)}
        return {"op": "secret_create", "file": SECRET, "size": human(pages << PAGE_SHIFT)}

    def setup_steps(self) -> list[dict]:
        return [self.create_step(name) for name, _ in self.files()]

    def label(self) -> str:
        mode = self.mode or ("4-level" if self.arch == "x86" else "rodata-full")
        if "arm64_no_bbml2" in self.switches:
            mode = "blocks-no-bbml2"
        without = f" without {', '.join(self.skip)}" if self.skip else ""
        return f"{self.config().label()} on {self.arch} {mode}{without}"


def windows_tlbs(space: Space) -> bool:
    """Do the views of ``G`` show the 4 KiB TLB entries over a window of pages only (:meth:`Universe.window_of`)?
    Where folios are 2M and each file has one page: a 2M folio's 4 KiB TLB entries are in ``G`` (its record has
    no room for 512 pages' holders), and so are the stale ones over freed pageblocks, which make views of ``G``
    as many as the states. A step reads and changes TLB entries only over the pages it works on; one that
    reaches outside its window raises NeedDeeper (:meth:`Universe._outside`) and runs on the whole ``G``. With
    several pages per file a 2M folio's moves run on the whole ``G`` anyway (``Engine.full``); with 4K folios a
    record or a per-CPU-list entry carries its page's 4 KiB holders itself."""
    return space.config().large_folios and all(n == 1 for _, n in space.files())


# -- the allocator -------------------------------------------------------------------------------------------
class ExploreAllocator:
    """:class:`~nbmodel.physmem.PageAllocator`'s choices with a hashable state ``(pcp, carved, pool)``.

    On a *view* (``hidden`` set: the per-CPU list has more entries below the ones loaded) popping past the loaded
    ones raises :class:`NeedDeeper`; ``low`` is the shortest the loaded list got, so what the step pushed is
    ``pcp[low:]``."""

    def __init__(self, real, universe):
        self.universe = universe
        carve, pcp, _ = real.choices()
        self.carve = list(carve)  # next PFN first
        self.blocks = real.blocks.copy()   # order 9: the allocator's own pageblock order, loaded per draw
        self.pools = Interner()
        self.taken: dict = {}   # pool id -> (pageblock drawn or None, pool id after)
        self.given: dict = {}   # (pool id, pageblock given back) -> pool id after
        self.boot_pool = self.pools.id(self.blocks.ranks())
        self.pcp, self.carved, self.pool = [], 0, self.boot_pool
        self.hidden, self.low = False, 0
        self.boot_state = (pcp, 0, self.boot_pool)
        self.set_state(self.boot_state)

    def state(self) -> tuple:
        return (tuple(self.pcp), self.carved, self.pool)

    def set_state(self, st: tuple, hidden: bool = False) -> None:
        self.pcp, self.carved, self.pool = list(st[0]), st[1], st[2]
        self.hidden, self.low = hidden, len(self.pcp)

    def alloc(self, order: int) -> int:
        if order not in (0, 9):
            raise ModelInputError(f"the model allocates order 0 or 9 folios, not order {order}")
        pfn = self._alloc0() if order == 0 else self._alloc9()
        self.universe.touch(pfn, 1 << order)
        self.universe.fresh.append((pfn, pfn + (1 << order)))
        return pfn

    def _alloc0(self) -> int:
        if self.pcp:
            pfn = self.pcp.pop()
            self.low = min(self.low, len(self.pcp))
            return pfn
        if self.hidden:
            raise NeedDeeper("the step pops more per-CPU-list pages than the view shows")
        if self.carved >= len(self.carve):
            raise ExploreLimit("the explored configuration needs more pages than one pageblock holds")
        self.carved += 1
        return self.carve[self.carved - 1]

    def _alloc9(self) -> int:
        got = self.taken.get(self.pool)
        if got is None:   # the PageblockOrder's draw from this pool, memoized: ranks() sorts every free block
            blocks = self.blocks
            blocks.load(self.pools.value(self.pool))
            block = blocks.take(allow_partial=False)
            got = self.taken[self.pool] = (block, None if block is None else self.pools.id(blocks.ranks()))
        if got[0] is None:
            raise ExploreLimit("no whole free pageblock left for a 2M folio")
        self.pool = got[1]
        return got[0] << 9

    def free(self, pfn: int, order: int) -> None:
        self.universe.fresh.append((pfn, pfn + (1 << order)))
        if order == 0:
            self.pcp.append(pfn)
            return
        key = (self.pool, pfn >> 9)
        got = self.given.get(key)
        if got is None:
            blocks = self.blocks
            blocks.load(self.pools.value(self.pool))
            blocks.give_back(pfn >> 9)
            got = self.given[key] = self.pools.id(blocks.ranks())
        self.pool = got

    def snapshot(self) -> tuple:
        return self.state()


def project_allocator(real, allocator: ExploreAllocator) -> tuple:
    """A real PageAllocator's state in :class:`ExploreAllocator` terms (for conformance checks)."""
    carve, pcp, _ = real.choices()
    return pcp, len(allocator.carve) - len(carve), allocator.pools.id(real.blocks.ranks())


class Watched(frozenset):
    """A set of switch names that notes every name it is asked about: after a search, the switches the code
    consulted. One it never consulted cannot have changed a decision, so turning it on explores the same space
    (:func:`nbmodel.explore.sweep` relies on this)."""

    def __new__(cls, items, log: set):
        self = super().__new__(cls, items)
        self.log = log
        return self

    def __contains__(self, name) -> bool:
        self.log.add(name)
        return frozenset.__contains__(self, name)


#: How many records, and how many ``G``, one search may name: their ids are the digits of a packed state
#: (:data:`~nbmodel.explore_search.RADIX` is above this) and the halves of the memo keys ``rid << 32 | gid``. Far
#: beyond what fits in memory: the default sweep's searches name at most 7,755 ``G`` and 349 records.
ID_BOUND = 1 << 29


class Interner:
    """Values <-> dense small integers, so states are tuples of ints that hash fast. With a ``bound``, the value
    that would take id ``bound`` raises ExploreLimit instead."""

    def __init__(self, bound: int | None = None):
        self.ids: dict = {}
        self.values: list = []
        self.bound = bound

    def id(self, value) -> int:
        got = self.ids.get(value)
        if got is None:
            got = len(self.values)
            if got == self.bound:
                raise ExploreLimit(f"more than {self.bound:,} distinct values of one part of the state: too large "
                                   "to explore")
            self.ids[value] = got
            self.values.append(value)
        return got

    def value(self, i: int):
        return self.values[i]

    def __len__(self) -> int:
        return len(self.values)


class Parts:
    """One object per value for the large parts of ``G`` (its page tables, its TLBs): calling it with an equal tuple
    gives the first one back. States of different ``G`` share a few of each (filemap on arm64 bbml2 with 2M
    folios: 7,755 ``G``, 16 page tables, 387 TLBs), so memos keyed by a part (:meth:`Engine._tlbs_after`) hit, and
    comparing two equal ``G`` finds their parts identical without walking them."""

    def __init__(self):
        self.known: dict = {}

    def __call__(self, value: tuple) -> tuple:
        got = self.known.get(value)
        if got is None:
            got = self.known[value] = value
        return got

    def __len__(self) -> int:
        return len(self.known)


# -- the universe: scratch System + codec ----------------------------------------------------------------------
@dataclass
class Outcome:
    """What one step did, in explorer terms: the new records and ``G`` (or, on a view, the delta to ``G``)."""

    step: object
    records: dict          # position -> record id after the step
    gid: int | None
    flush_all: bool
    props: frozenset
    reached: tuple = ()
    delta: tuple | None = None


@dataclass
class Universe:
    """The scratch System of one :class:`Space`, its boot facts, and the intern tables of its states.

    ``G = (exists, page tables, TLBs, free, carved, pool, flags)``: which files exist; the touched 2 MiB blocks'
    page tables and the TLB entries, both without the pages that carry their own bits (records and free
    pages); the allocator's per-CPU list as ``(pfn, direct-map bits, CPUs holding a 4 KiB TLB entry)``, how far
    the pageblock has been carved and the pool of whole pageblocks; the two counters invariants (b) and (c)
    read. A record: ``(pfn, order, flags, private, refcount, content, name, bits, tlb)``, the name left out
    (None) when it is the usual ``file:index``, so that records of different indexes of a file are shared."""

    space: Space
    sys: System = field(init=False)
    records: Interner = field(default_factory=lambda: Interner(ID_BOUND), init=False)
    globals: Interner = field(default_factory=lambda: Interner(ID_BOUND), init=False)

    def __post_init__(self):
        sp = self.space
        self.sys = System(**sp.system_kwargs(), trace=False)
        self.k = self.sys.k
        self.consulted: set = set()  # the switches the design code asked about
        self.sys.config = replace(self.sys.config, switches=Watched(self.sys.config.switches, self.consulted))
        self.sys.config.install(self.k)
        for st in sp.setup_steps():
            got = self.sys.step(**st)
            if got.result != "0":
                raise ModelInputError(f"{st['op']} returned {got.result} on {sp.label()}: nothing to explore")
        self.k.touched = None  # nothing reads it: steps run through run_validated, states are checked whole
        self.file_objs = dict(self.sys.files)
        self.file_names = [name for name, _ in sp.files()]   # in state order, as G's first part lists them
        self.positions = [(name, i) for name, n in sp.files() for i in range(n)]
        self.arm64 = self.k.arch == "arm64"
        self.arm64_blocks = self.arm64 and self.k.dmap.mode != "rodata-full"   # block mappings in the linear map
        self.touched: dict[int, set] = {}      # 1G slot -> touched 2M blocks in it
        pt = self.pt
        self.boot = pt.copy_slots()
        for s, e in pt.copy_slots().items():
            pt.set_slot(s, e)
        self.fresh: list = []       # (first, end) PFN ranges allocated or freed by the step being run
        self.stray = False          # did the step flush a range reaching pages neither loaded nor fresh?
        self.loaded: list = []      # (first, end) PFN ranges of the records loaded for it
        self.windowed = windows_tlbs(sp)
        self.window: tuple | None = None   # the window of the view being run on, or None: all the TLBs are there
        self.window_pages: frozenset = frozenset()  # pages of the per-CPU-list entries it loaded
        self.alloc = ExploreAllocator(self.k.alloc, self)
        self.k.alloc = self.alloc
        self.records.id(None)  # record id 0: nothing at this index
        self._points: list = []
        self._racing: list = []
        self._tlb_decoded: dict = {}  # id(runs) -> (runs, entries): the runs live in interned G values
        self.parts = Parts()          # G's page tables and TLBs, one object per value
        self._instrument()
        self.root = self.encode_full()

    @property
    def pt(self):
        """The page table of the System being encoded: the scratch one, or a real one while :meth:`project`
        encodes it."""
        return self.k.dmap.pt

    # -- instrumentation of the scratch kernel (instance attributes only) ------------------------------------
    def _instrument(self) -> None:
        k = self.k
        point, access, flush = k.point, k.kernel_access, k.flush_pfn_range

        def recorded_point(name, pfn):
            self._points.append(name)
            point(name, pfn)

        def recorded_access(pfn, cpu=None, write=False, what="read"):
            got = access(pfn, cpu, write, what)
            if what == "racing read":
                self._racing.append((pfn, got))
            return got

        def guarded_flush(pfn, npages, reason):
            if self.window is not None:
                self._outside(pfn, npages)
            full = k.counters["tlb_full_flushes"]
            flush(pfn, npages, reason)
            if k.counters["tlb_full_flushes"] == full:
                if not self._known(pfn, pfn + npages):
                    if self.alloc.hidden:
                        raise NeedDeeper("a range flush reaches pages the view does not show")
                    self.stray = True

        k.point, k.kernel_access, k.flush_pfn_range = recorded_point, recorded_access, guarded_flush
        if not self.windowed:
            return
        one, many, zero, holders = k.kernel_access, k.kernel_access_range, k.folio_zero, k.tlb_holders

        def windowed_access(pfn, cpu=None, write=False, what="read"):
            if self.window is not None:
                self._outside(pfn, 1)
            return one(pfn, cpu, write, what)

        def windowed_range(pfn, npages, cpu=None, write=False, what="read"):
            if self.window is not None:
                self._outside(pfn, npages)
            return many(pfn, npages, cpu, write, what)

        def windowed_zero(folio, cpu=None):
            if self.window is not None:
                self._outside(folio.pfn, folio.nr_pages)
            return zero(folio, cpu)

        def windowed_holders(pfn, npages=1):
            if self.window is not None:
                self._outside(pfn, npages)
            return holders(pfn, npages)

        # every way a step reads or changes a TLB entry at a page: the kernel's accesses through the direct map
        # (kernel_access, kernel_access_range and folio_zero, the callers of its fills and lookups), tlb_holders,
        # and range flushes (guarded_flush); flush_tlb_all reaches every page alike
        k.kernel_access, k.kernel_access_range, k.folio_zero = windowed_access, windowed_range, windowed_zero
        k.tlb_holders = windowed_holders

    def _known(self, lo: int, end: int) -> bool:
        """Does every page of ``[lo, end)`` belong to a record loaded for the step or to what it allocated or
        freed?"""
        for a, b in sorted(self.loaded + self.fresh):
            if a > lo:
                break
            if b > lo:
                lo = b
                if lo >= end:
                    return True
        return lo >= end

    def _outside(self, pfn: int, npages: int) -> None:
        """NeedDeeper unless ``[pfn, pfn + npages)`` lies in the window of the view being run on, or is one page of
        a per-CPU-list entry it loaded (whose TLB holders the entry itself carries)."""
        end = pfn + npages
        for lo, hi in self.window:
            if lo <= pfn and end <= hi:
                return
        if npages == 1 and pfn in self.window_pages:
            return
        raise NeedDeeper("a step reaches TLB entries outside the view's window")

    def window_of(self, recs, pool: int, carved: int | None = None) -> tuple:
        """The pages whose 4 KiB TLB entries a view of ``G`` shows when the TLBs are windowed (:attr:`windowed`):
        the folios of the records ``recs`` (ids), the pageblock the allocator hands out next for a 2M folio and,
        given the carve position (a view with an empty per-CPU list shows it), the page it carves next; as sorted
        ``(first, end)`` ranges. All are in the view's memo key (the record, and ``G``'s pool and position)."""
        out = []
        if carved is not None and carved < len(self.alloc.carve):
            out.append((self.alloc.carve[carved], self.alloc.carve[carved] + 1))
        for rid in recs:
            rec = self.records.value(rid)
            if rec is not None:
                out.append((rec[0], rec[0] + (1 << rec[1])))
        ranks = self.alloc.pools.value(pool)
        if ranks:
            first = self.alloc.blocks.order[ranks[0]] << 9
            out.append((first, first + 512))
        return tuple(sorted(out))

    # -- blocks of interest --------------------------------------------------------------------------------------
    def touch(self, pfn: int, npages: int) -> None:
        """Note the 2 MiB blocks an allocation may change; give the scratch private copies of their PTE tables.
        Its own blocks; with arm64 block mappings also the next one (the boundary split at its end) and their
        whole contiguous-PMD runs. x86 changes only the leaves over the pages it is asked to (a split replaces
        the leaf holding them). Arm64 rodata-full maps every page by a PTE without the contiguous bit from boot
        (``map_mem()`` sets NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS when the linear map must be PTE-mapped), so a
        change reaches no PTE but its own."""
        if not self.arm64_blocks:
            for b in range(pfn >> 9, ((pfn + npages - 1) >> 9) + 1):
                self._touch_block(b)
            return
        first, last = pfn >> 9, (pfn + npages) >> 9
        for block in range(first, last + 1):
            for b in range(block - block % 16, block - block % 16 + 16):
                self._touch_block(b)

    def _touch_block(self, b: int) -> None:
        slot = b >> 9
        if slot not in self.boot:
            return
        blocks = self.touched.setdefault(slot, set())
        if b in blocks:
            return
        blocks.add(b)
        self.pt.own_pte_table(b)

    # -- encoding ------------------------------------------------------------------------------------------------
    def encode_full(self) -> tuple:
        """The whole scratch state as ``(gid, rid_0, rid_1, ...)`` in :attr:`positions` order."""
        gid, recs = self.encode(self.positions)
        return (gid,) + tuple(recs[p] for p in self.positions)

    def encode(self, loaded) -> tuple[int, dict]:
        """``(gid, {position: rid})`` for the positions in ``loaded``; raises LocalityError if another
        position of an existing file now holds a folio."""
        g, recs = self._encode(loaded, self.alloc.pcp, self.alloc.carved, self.alloc.pool)
        return self.globals.id(g), {p: self.records.id(r) for p, r in recs.items()}

    def _encode(self, loaded, pcp, carved, pool) -> tuple[tuple, dict]:
        folios = self._folios(loaded)
        masked = {f.pfn for f in folios.values() if f is not None and f.order == 0}
        masked.update(pcp)
        recs = {p: self._record(p, f) for p, f in folios.items()}
        free = tuple((p, self._bits(p), self._tlb(p)) for p in pcp)
        parts = self.parts
        g = (self._exists(), parts(self._encode_pt(masked)), parts(self._encode_tlbs(masked)), free, carved, pool,
             self._flags())
        return g, recs

    def _folios(self, loaded) -> dict:
        loaded = set(loaded)
        out = {}
        for name, f in self.sys.files.items():
            for index, folio in f.mapping.i_pages.items():
                pos = (name, index)
                if pos not in loaded:
                    raise LocalityError(f"{pos} changed by an operation on {sorted(loaded)}")
                out[pos] = folio
        for pos in loaded:
            out.setdefault(pos, None)
        return out

    def _bits(self, pfn: int) -> int:
        return self.k.dmap.pt.leaf(pfn)[2] & PAGE_BITS

    def _tlb(self, pfn: int) -> int:
        return sum(1 << t.cpu for t in self.k.tlbs if t.entries.get(pfn) == 1)

    def _record(self, pos, folio) -> tuple | None:
        if folio is None:
            return None
        bits = tlb = None
        if folio.order == 0:
            bits, tlb = self._bits(folio.pfn), self._tlb(folio.pfn)
        flags = tuple(sorted(folio.flags - UNREAD_FLAGS))
        name = None if folio.name == f"{pos[0]}:{pos[1]}" else folio.name
        return (folio.pfn, folio.order, flags, folio.private, folio.refcount, folio.content, name, bits, tlb)

    def _exists(self) -> tuple:
        return tuple(name in self.sys.files for name in self.file_names)

    def _flags(self) -> tuple:
        c = self.k.counters
        if self.k.fail_pgtable_allocs or self.k.current_cpu:
            raise ExploreLimit("fail_alloc and set_cpu are not explored")
        return (c["freed_unmapped"] > 0, c["restore_splits"] > 0)

    def _encode_tlbs(self, masked) -> tuple:
        return tuple(_tlb_runs(t.entries, masked) for t in self.k.tlbs)

    def _encode_pt(self, masked) -> tuple:
        pt = self.pt
        out = []
        for slot in sorted(self.touched):
            enc = self._encode_slot(slot, pt.slot(slot), self.boot[slot], masked)
            if enc is not None:
                out.append((slot, enc))
        return tuple(out)

    def _encode_slot(self, slot, cur, base, masked):
        if type(cur) is int:
            if type(base) is not int:
                raise ExploreLimit("a page table collapsed back to a leaf: not explored")
            return None if cur == base else ("L", cur)
        if type(base) is int:
            default = base | (CONT if self.arm64 else 0)
            items = tuple((b, self._entry(cur[b & 511], b, masked)) for b in sorted(self.touched[slot])
                          if type(cur[b & 511]) is not int or cur[b & 511] != default)
            return ("T", default, items)
        items = []
        marked = {p >> 9 for p in masked}
        for b in sorted(self.touched[slot]):
            now, was = cur[b & 511], base[b & 511]
            if b not in marked and type(now) is type(was) and now == was:
                continue  # what _entry would give, equal to the base: no masked page to set bits in
            e = self._entry(now, b, masked)
            if (bytes(was) if type(was) is bytearray else was) != e:
                items.append((b, e))
        return ("B", tuple(items)) if items else None

    @staticmethod
    def _entry(e, block, masked):
        if type(e) is int:
            return e
        out = bytearray(e)
        for p in masked:
            if p >> 9 == block:
                out[p & 511] |= PAGE_BITS
        return bytes(out)

    # -- decoding ------------------------------------------------------------------------------------------------
    def decode(self, gid: int, recs: dict) -> None:
        """Put the scratch System in state ``G`` with the records ``{position: rid}`` loaded (others absent)."""
        self._decode(self.globals.value(gid), recs, False)

    def _decode(self, g: tuple, recs: dict, hidden: bool) -> None:
        exists, pt, tlbs, free, carved, pool, flags = g
        sys, k = self.sys, self.k
        self.window = None
        sys.files = {}
        for name, there in zip(self.file_names, exists, strict=False):
            if there:
                f = self.file_objs[name]
                f.mapping.i_pages.clear()
                f.mapping.nrpages = 0
                sys.files[name] = f
        sys.steps, sys.first_broken = [], {}
        self._decode_pt(dict(pt))
        for t, entries in zip(k.tlbs, tlbs, strict=False):
            t.entries = self._tlb_dict(entries)
        self.alloc.set_state((tuple([p for p, _, _ in free]), carved, pool), hidden)
        for pfn, bits, tlb in free:
            self._load_page(pfn, bits, tlb)
        k.counters = counters = Counters.__new__(Counters)  # a fresh set of zeros, without the per-name loop
        dict.update(counters, _ZERO_COUNTERS)
        counters["freed_unmapped"], counters["restore_splits"] = int(flags[0]), int(flags[1])
        k.pgtable_pfns, k.interrupt = [], None
        self.fresh, self.loaded, self.stray = [], [], False
        for pos, rid in recs.items():
            rec = self.records.value(rid)
            if rec is not None:
                self._load(pos, rec)

    def _tlb_dict(self, runs: tuple) -> dict:
        """A fresh TLB dict for ``runs`` (:func:`_tlb_entries`), copied from the one decoded before for the same
        runs object: G's values are interned, so the same runs come back for every state with that G."""
        got = self._tlb_decoded.get(id(runs))
        if got is None or got[0] is not runs:
            if len(self._tlb_decoded) >= 1024:  # a bound on the memory: each dict may hold a few thousand entries
                self._tlb_decoded.clear()
            got = self._tlb_decoded[id(runs)] = (runs, _tlb_entries(runs))
        return dict(got[1])

    def _decode_pt(self, target: dict) -> None:
        set_slot = self.pt.set_slot
        for slot, blocks in self.touched.items():
            enc, base = target.get(slot), self.boot[slot]
            if enc is None:
                set_slot(slot, base if type(base) is int else _fresh_table(base, blocks))
            elif enc[0] == "L":
                set_slot(slot, enc[1])
            elif enc[0] == "T":
                table = [enc[1]] * 512
                _apply_items(table, enc[2])
                set_slot(slot, table)
            else:
                table = _fresh_table(base, blocks)
                _apply_items(table, enc[1])
                set_slot(slot, table)

    def _load(self, pos, rec) -> None:
        pfn, order, flags, private, refcount, content, name, bits, tlb = rec
        f = self.sys.files[pos[0]]
        folio = Folio(pfn, order, name=f"{pos[0]}:{pos[1]}" if name is None else name)
        folio.flags, folio.private, folio.refcount, folio.content = set(flags), private, refcount, content
        folio.mapping, folio.index = f.mapping, pos[1]
        f.mapping.i_pages[pos[1]] = folio
        f.mapping.nrpages += folio.nr_pages
        self.loaded.append((pfn, pfn + folio.nr_pages))
        if bits is not None:
            self._load_page(pfn, bits, tlb)

    def _load_page(self, pfn: int, bits: int, tlb: int) -> None:
        self._set_page(pfn, bits)
        for t in self.k.tlbs:
            if tlb >> t.cpu & 1:
                t.entries[pfn] = 1

    def _set_page(self, pfn: int, bits: int) -> None:
        table = self.pt.pte_table(pfn)
        if table is None:
            if bits != PAGE_BITS:
                raise LocalityError(f"pfn {pfn:#x} has no 4K entry but its record says bits {bits}")
            return
        table[pfn & 511] = (table[pfn & 511] & ~PAGE_BITS) | bits

    # -- running one step ----------------------------------------------------------------------------------------
    def run(self, gid: int, recs: dict, step: tuple) -> Outcome:
        """Decode, run ``step`` (:meth:`System.validate_step`'s tuple) through :meth:`System.run_validated`,
        encode: one transition."""
        return self._run(self.globals.value(gid), recs, step, None)

    def run_view(self, view: tuple, recs: dict, step: tuple, level: int = 1) -> Outcome:
        """One transition on a *view* of ``G``: level 1 is :func:`view_of` (the per-CPU list's top entry, the rest
        of the list hidden whether or not there is more, and so the carve too), level 0 :func:`view0_of` (no
        per-CPU list at all, nor the carve position). The outcome carries a delta for
        :func:`apply_delta` / :func:`apply_delta0` instead of a ``G``; raises NeedDeeper when the step needs what
        the view hides."""
        if level == 0:
            return self._run(view[:3] + ((), 0) + view[3:] + (NO_FLAGS,), recs, step, True, level=0)
        return self._run(view[:3] + view[3:4] + view[5:] + (NO_FLAGS,), recs, step, bool(view[3]))

    def _run(self, g: tuple, recs: dict, step: tuple, hidden, level: int = 1) -> Outcome:
        # The model's own check of the state after the step is left to the search, which checks every state it
        # reaches (Engine.broken); what only the step can show (a racing read's view) comes back as ``inside``.
        self._decode(g, recs, bool(hidden))
        window = None
        if hidden is not None and self.windowed:  # level 1 with nothing hidden shows the carve position
            window = self.window_of(recs.values(), g[5], None if hidden or level == 0 else g[4])
        if window is not None:
            self.window, self.window_pages = window, frozenset(p for p, _, _ in g[3])
        pre = {self.records.value(r)[0]: self.records.value(r)[5] for r in recs.values() if r}
        self._points.clear()
        self._racing.clear()
        op, clean, at, icpu = step
        try:
            result, saw, inside, interrupt = self.sys.run_validated(op, dict(clean), at, icpu)
            if window is not None:
                self._masked_inside()
        except ModelInputError as e:
            raise RefusedMove(str(e)) from None
        except NeedDeeper:
            self._abandoned()
            raise
        c = self.k.counters  # zero after decoding, but for the two flags: what this step added
        reached = tuple(dict.fromkeys(self._points))
        props = observed(op, result, saw, interrupt, c, pre, self._racing) | frozenset(inside)
        flush_all = c["tlb_full_flushes"] > 0
        a = self.alloc
        g2, recs2 = self._encode(recs, a.pcp, a.carved, a.pool)
        recs2 = {p: self.records.id(r) for p, r in recs2.items()}
        if hidden is None:
            return Outcome(None, recs2, self.globals.id(g2), flush_all, props, reached)
        if level == 0:  # nothing was popped (the list was empty and hidden); the carve position is the caller's
            return Outcome(None, recs2, None, flush_all, props, reached,
                           (g2[3], g2[:3] + g2[5:], flush_all, window))
        # A step on a hidden list cannot carve (it pops past the view first): "carve unchanged" (None) lets the
        # memo key its outcome without the position.
        delta = (len(g[3]) - a.low, g2[3][a.low:], g2[:3] + ((None,) if hidden else g2[4:5]) + g2[5:], flush_all,
                 window)
        return Outcome(None, recs2, None, flush_all, props, reached, delta)

    def _masked_inside(self) -> None:
        """NeedDeeper if a page whose TLB holders a record or a per-CPU-list entry now carries lies outside the
        window: the view did not show its 4 KiB entries, so they cannot be read from the scratch TLBs."""
        for p in self.alloc.pcp[self.alloc.low:]:
            self._outside(p, 1)
        for f in self.sys.files.values():
            for folio in f.mapping.i_pages.values():
                if folio.order == 0:
                    self._outside(folio.pfn, 1)

    def _abandoned(self) -> None:
        """A step stopped half-way (NeedDeeper): drop the state it leaves outside what :meth:`_decode` resets,
        the CPU a racing fault switched to and the design's per-call state (a batched fallocate's list)."""
        self.k.current_cpu = 0
        self.k.design = self.sys.config.build()

    def broken_keys(self, gid: int, recs: dict) -> frozenset:
        """Invariant keys broken in state ``G`` with these records loaded (the model's own checks)."""
        self.decode(gid, recs)
        return frozenset(broken(self.sys))

    def clear_tlb(self, rid: int) -> int:
        """The record after ``flush_tlb_all()``: no CPU holds a 4 KiB entry for its page."""
        rec = self.records.value(rid)
        if rec is None or not rec[8]:
            return rid
        return self.records.id(rec[:8] + (0,))

    # -- conformance -----------------------------------------------------------------------------------------
    def project(self, real: System) -> tuple:
        """A real System's state in this universe's terms, as plain tuples (for conformance checks)."""
        folios = {}
        for name, f in real.files.items():
            for index, folio in f.mapping.i_pages.items():
                folios[(name, index)] = folio
        extra = sorted(set(folios) - set(self.positions))
        saved = (self.k, self.sys)
        try:
            self.k, self.sys = real.k, real
            pcp, carved, pool = project_allocator(real.k.alloc, self.alloc)
            g, recs = self._encode(self.positions, pcp, carved, pool)
        finally:
            self.k, self.sys = saved
        return (g,) + tuple(recs[p] for p in self.positions) + ((("extra", tuple(extra)),) if extra else ())

    def expand(self, state: tuple) -> tuple:
        """An explorer state ``(gid, rid...)`` as the plain tuples :meth:`project` returns."""
        return (self.globals.value(state[0]),) + tuple(self.records.value(r) for r in state[1:])


def pt_entry(pt: tuple, pfn: int):
    """What ``G``'s page tables (``G[1]``, as :meth:`Universe._encode_pt` writes them) say of the 2 MiB block
    holding ``pfn``: None when its 1 GiB slot is as booted; the slot's whole entry when it is a leaf; else the
    slot's kind with the block's entry (the default or None, as booted, when the block has no item)."""
    slot, block = pfn >> 18, pfn >> 9
    for s, enc in pt:
        if s != slot:
            continue
        if enc[0] == "L":
            return enc
        items = enc[2] if enc[0] == "T" else enc[1]
        for b, e in items:
            if b == block:
                return enc[0], e
        return enc[0], enc[1] if enc[0] == "T" else None
    return None


def view_of(g: tuple) -> tuple:
    """``G`` with the per-CPU list cut to its top entry, and whether more lie below: what most steps read. The
    invariants' two counters (the last part of ``G``) are left out too: no kernel path decides on them, so a step
    runs with them at zero and its delta's counters are or-ed into ``G``'s."""
    free = g[3]
    return g[:3] + (free[-1:], len(free) > 1) + g[4:6]


def view0_of(g: tuple) -> tuple:
    """``G`` without the per-CPU list and the carve position: what a step that allocates no page reads (and, as in
    :func:`view_of`, without the invariants' two counters)."""
    return g[:3] + g[5:6]


def apply_delta0(g: tuple, delta: tuple, memo=None) -> tuple:
    """``G`` after a step whose outcome on ``view0_of(g)`` was ``delta``: the whole per-CPU list stays below what
    the step pushed (TLB bits cleared if it flushed everything), the carve position is unchanged, and the TLBs
    are the view's as the step left them with, for a windowed view, ``G``'s entries outside it (:func:`tlbs_after`,
    or ``memo``: the same, memoized)."""
    pushed, rest, flushed, window = delta
    return rest[:2] + ((memo or tlbs_after)(g[2], rest[2], window, flushed), _kept(g[3], flushed) + pushed, g[4],
                       rest[3], _or(g[6], rest[4]))


def apply_delta(g: tuple, delta: tuple, memo=None) -> tuple:
    """``G`` after a step whose outcome on ``view_of(g)`` was ``delta``: the entries the view hid stay below
    what the step pushed (their TLB bits cleared if it flushed everything); a carve position of None is ``G``'s;
    the TLBs as :func:`apply_delta0` has them."""
    popped, pushed, rest, flushed, window = delta
    free = g[3]
    keep = free[:len(free) - popped] if popped else free
    return rest[:2] + ((memo or tlbs_after)(g[2], rest[2], window, flushed), _kept(keep, flushed) + pushed,
                       g[4] if rest[3] is None else rest[3], rest[4], _or(g[6], rest[5]))


def window_tlbs(tlbs: tuple, window: tuple) -> tuple:
    """``G``'s TLBs (``G[2]``) as a view with a window shows them (:meth:`Universe.window_of`): every entry larger
    than a page, and the 4 KiB ones over the window's pages."""
    return tuple(tuple(e for e in runs if len(e) == 2) + _clip(runs, window, True) for runs in tlbs)


def tlbs_after(tlbs: tuple, got: tuple, window, flushed: bool) -> tuple:
    """``G``'s TLBs after a step run on a view: the view's TLBs as the step left them (``got``), with, when the
    view had a window, ``G``'s 4 KiB entries outside it, which the step could not reach (it raises NeedDeeper
    there), unless it flushed everything. A larger entry the step filled replaces a 4 KiB one at its first page,
    as :meth:`TLB.fill` does."""
    if window is None or flushed:
        return got
    out = []
    for runs, now in zip(tlbs, got, strict=True):
        holes = window + tuple((e[0], e[0] + 1) for e in now if len(e) == 2)
        outside = _clip(runs, tuple(sorted(holes)), False)
        out.append(_sorted_runs(now, outside) if outside else now)
    return tuple(out)


def _clip(runs: tuple, ranges: tuple, inside: bool) -> tuple:
    """The 4 KiB runs ``(first, 1, k)`` of ``runs`` cut to the pages inside the sorted ``(first, end)`` ranges, or
    to those outside them."""
    out = []
    for e in runs:
        if len(e) == 2:
            continue
        lo, end = e[0], e[0] + e[2]
        for a, b in ranges:
            if b <= lo or end <= a:
                continue
            if inside:
                out.append((max(lo, a), 1, min(end, b) - max(lo, a)))
                continue
            if lo < a:
                out.append((lo, 1, a - lo))
            lo = max(lo, b)
            if lo >= end:
                break
        else:
            if not inside and lo < end:
                out.append((lo, 1, end - lo))
    return tuple(out)


def _sorted_runs(a: tuple, b: tuple) -> tuple:
    """Two disjoint sets of TLB runs as one, sorted, with 4 KiB runs that meet joined (as :func:`_tlb_runs`
    writes them)."""
    out: list = []
    for e in sorted(a + b):
        if len(e) == 3 and out and len(out[-1]) == 3 and out[-1][0] + out[-1][2] == e[0]:
            out[-1] = (out[-1][0], 1, out[-1][2] + e[2])
        else:
            out.append(e)
    return tuple(out)


def _kept(free: tuple, flushed: bool) -> tuple:
    """The per-CPU list entries a step left alone, their TLB holders gone if it flushed everything."""
    return tuple((p, b, 0) for p, b, _ in free) if flushed and free else free


def _or(a: tuple, b: tuple) -> tuple:
    return (a[0] or b[0], a[1] or b[1])


def observe(step, pre: dict, racing: list) -> frozenset:
    """Named observations of one :class:`~nbmodel.system.Step` (see :data:`nbmodel.explore_moves.PROPERTIES`)."""
    return observed(step.op, step.result, step.saw, step.interrupt, step.counters, pre, racing)


def observed(op: str, result: str, saw, interrupt, counters: dict, pre: dict, racing: list) -> frozenset:
    """Named observations of one step from its parts: ``counters`` are what the step added, ``pre`` the
    contents of the loaded pages before it (pfn -> content), ``racing`` the racing reads as (pfn, result)."""
    out = set()
    probe = op in ("kernel_read", "cpu_touch")
    oops = counters.get("oops", 0) - (probe and result == "oops") - (interrupt == "oops")
    if oops > 0:
        out.add("oops")
    if counters.get("warns", 0) > 0:
        out.add("warn")
    if probe and result in ("ok", "stale") and saw in GUEST_DATA:
        out.add("leak")
    if any(got in ("ok", "stale") and pre.get(pfn) in GUEST_DATA for pfn, got in racing):
        out.add("leak")
    if op == "write" and result == Errno.EPERM.name:
        out.add("eperm")
    return frozenset(out)


def _fresh_table(base: list, blocks) -> list:
    table = list(base)
    for b in blocks:
        e = table[b & 511]
        if type(e) is bytearray:
            table[b & 511] = bytearray(e)
    return table


_ONE = 1


def _tlb_runs(entries: dict, masked) -> tuple:
    """One CPU's TLB entries ``{first pfn: pages}``, sorted, as ``(first, pages)`` for a large entry and
    ``(first, 1, k)`` for ``k`` 4 KiB entries on consecutive pages (a 2M folio touched through a split leaf leaves
    512 of them). The 4 KiB entries of ``masked`` pages are left out: their records hold them."""
    if not entries:
        return ()
    # The dict is walked in C (list, count, compress): a TLB here may hold thousands of 4 KiB entries, mostly
    # nothing but them, and only a few pages are masked.
    values = list(entries.values())
    if values.count(1) == len(values):
        ones, out = list(entries), []
    else:
        ones = list(compress(entries, map(_ONE.__eq__, values)))
        out = list(compress(entries.items(), map(_ONE.__ne__, values)))
    if ones:
        ones.sort()
        for p in masked:
            if entries.get(p) == 1:
                del ones[bisect_left(ones, p)]
    if ones:
        runs: list = []
        _runs(ones, 0, len(ones), runs)
        out += runs
    out.sort()
    return tuple(out)


def _runs(ones: list, lo: int, hi: int, out: list) -> None:
    """Append ``(first, 1, k)`` for each run of consecutive PFNs in sorted ``ones[lo:hi]``: a slice whose ends
    are as far apart as its length is one run, so 512 consecutive pages take one comparison."""
    if ones[hi - 1] - ones[lo] == hi - 1 - lo:
        if out and out[-1][0] + out[-1][2] == ones[lo]:  # a run the halving cut in two
            out[-1] = (out[-1][0], 1, out[-1][2] + hi - lo)
        else:
            out.append((ones[lo], 1, hi - lo))
        return
    mid = (lo + hi) // 2
    _runs(ones, lo, mid, out)
    _runs(ones, mid, hi, out)


def _tlb_entries(runs: tuple) -> dict:
    """:func:`_tlb_runs`' encoding back to the TLB's ``{first pfn: pages}``."""
    out = {}
    for e in runs:
        if len(e) == 2:
            out[e[0]] = e[1]
        else:
            out.update(dict.fromkeys(range(e[0], e[0] + e[2]), 1))
    return out


def _apply_items(table: list, items) -> None:
    for b, e in items:
        table[b & 511] = e if type(e) is int else bytearray(e)


__all__ = ["Space", "Universe", "ExploreAllocator", "ExploreLimit", "LocalityError", "NeedDeeper", "Interner",
           "ID_BOUND", "Outcome", "observe", "observed", "view_of", "apply_delta", "view0_of", "apply_delta0",
           "window_tlbs", "windows_tlbs", "tlbs_after", "Parts",
           "GUEST_DATA",
           "GMEM", "SECRET"]
