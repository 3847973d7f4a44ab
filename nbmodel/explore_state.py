"""The explorer's compact state: a :class:`~nbmodel.system.System` encoded as small interned tuples, and back.

The explorer never re-implements the model. It keeps one *scratch* System per configuration and, for each
transition it has not seen yet, **decodes** a compact state into that System, runs the real
:meth:`System.step`, and **encodes** the result. The compact state drops only what no decision of the model
reads (the ``user_mapped``/``guest_mapped`` flags, counters other than the two invariants (b) and (c) read,
the trace) and keeps page tables and TLBs only for the 2 MiB blocks the run has allocated from.

Locality. With order-0 folios an operation on one file index touches only that index's folio, the pages the
allocator hands out or takes back, and shared structure (page-table shape, large TLB entries, the allocator).
So the state is split into a global part ``G`` and one *record* per file index; a record carries its folio
and the two per-page facts that belong to it: its direct-map entry's valid bits and which CPUs hold a 4 KiB
TLB entry for it. An operation on index ``i`` is then a function of ``(record_i, G)`` alone, and the explorer
memoizes it on that pair. The one effect that reaches other records, ``flush_tlb_all()``, is reported so the
caller clears their TLB bits. :meth:`Universe.encode` checks locality on every call (an operation that
changes another index raises :class:`LocalityError`), and ``tests/test_explore.py`` checks the whole
encoding against real Systems step by step.

The allocator is replaced in the scratch System by :class:`ExploreAllocator`, which hands out the same PFNs
as :class:`~nbmodel.physmem.PageAllocator` for order 0 (per-CPU list, then the pageblock being carved) and
order 9 (a seeded draw from the whole free pageblocks) with a state small enough to hash.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .counters import Counters
from .designs import Config
from .errors import Errno, ModelInputError
from .folio import Folio
from .invariants import broken
from .pagetable import CONT, RW, VALID
from .system import System
from .units import PAGE_SHIFT, human

GUEST_DATA = ("guest-secret", "guest-image", "secret")
UNREAD_FLAGS = frozenset({"user_mapped", "guest_mapped"})
PAGE_BITS = VALID | RW
GMEM, SECRET = "g", "s"


class ExploreLimit(Exception):
    """The configuration needs more than the explorer's abstraction covers (e.g. more pages than one block)."""


class RefusedMove(Exception):
    """System.step raised ModelInputError for a move the explorer generated (a model limitation or bug:
    the explorer skips the move and counts it)."""


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
        return f"{self.config().label()} on {self.arch} {mode}"


# -- the allocator -------------------------------------------------------------------------------------------
class ExploreAllocator:
    """:class:`~nbmodel.physmem.PageAllocator`'s choices with a hashable state ``(pcp, carved, pool)``."""

    def __init__(self, real, universe):
        self.universe = universe
        self.carve = list(reversed(real._carve))  # next PFN first
        self.pools = Interner()
        self.boot_pool = self.pools.id((tuple(real._whole), real._rng.getstate()))
        self.pcp, self.carved, self.pool = [], 0, self.boot_pool
        self.boot_state = (tuple(real._pcp), 0, self.boot_pool)
        self.set_state(self.boot_state)

    def state(self) -> tuple:
        return (tuple(self.pcp), self.carved, self.pool)

    def set_state(self, st: tuple) -> None:
        self.pcp, self.carved, self.pool = list(st[0]), st[1], st[2]

    def alloc(self, order: int) -> int:
        if order not in (0, 9):
            raise ModelInputError(f"the model allocates order 0 or 9 folios, not order {order}")
        pfn = self._alloc0() if order == 0 else self._alloc9()
        self.universe.touch(pfn, 1 << order)
        return pfn

    def _alloc0(self) -> int:
        if self.pcp:
            return self.pcp.pop()
        if self.carved >= len(self.carve):
            raise ExploreLimit("the explored configuration needs more pages than one pageblock holds")
        self.carved += 1
        return self.carve[self.carved - 1]

    def _alloc9(self) -> int:
        whole, rng_state = self.pools.value(self.pool)
        if not whole:
            raise ExploreLimit("no whole free pageblock left for a 2M folio")
        pool, rng = list(whole), random.Random()
        rng.setstate(rng_state)
        i = rng.randrange(len(pool))
        pool[i], pool[-1] = pool[-1], pool[i]
        block = pool.pop()
        self.pool = self.pools.id((tuple(pool), rng.getstate()))
        return block << 9

    def free(self, pfn: int, order: int) -> None:
        if order == 0:
            self.pcp.append(pfn)
            return
        whole, rng_state = self.pools.value(self.pool)
        self.pool = self.pools.id((whole + (pfn >> 9,), rng_state))

    def snapshot(self) -> tuple:
        return self.state()


def project_allocator(real, allocator: ExploreAllocator) -> tuple:
    """A real PageAllocator's state in :class:`ExploreAllocator` terms (for conformance checks)."""
    carved = len(allocator.carve) - len(real._carve)
    pool = allocator.pools.id((tuple(real._whole), real._rng.getstate()))
    return (tuple(real._pcp), carved, pool)


class Interner:
    """Values <-> dense small integers, so states are tuples of ints that hash fast."""

    def __init__(self):
        self.ids: dict = {}
        self.values: list = []

    def id(self, value) -> int:
        got = self.ids.get(value)
        if got is None:
            got = self.ids[value] = len(self.values)
            self.values.append(value)
        return got

    def value(self, i: int):
        return self.values[i]

    def __len__(self) -> int:
        return len(self.values)


# -- the universe: scratch System + codec ----------------------------------------------------------------------
@dataclass
class Outcome:
    """What one step did, in explorer terms."""

    step: object
    records: dict          # position -> record id after the step
    gid: int
    flush_all: bool
    props: frozenset
    reached: tuple = ()


@dataclass
class Universe:
    """The scratch System of one :class:`Space`, its boot facts, and the intern tables of its states."""

    space: Space
    sys: System = field(init=False)
    records: Interner = field(default_factory=Interner, init=False)
    globals: Interner = field(default_factory=Interner, init=False)

    def __post_init__(self):
        sp = self.space
        self.sys = System(**sp.system_kwargs(), trace=False)
        self.k = self.sys.k
        for st in sp.setup_steps():
            got = self.sys.step(**st)
            if got.result != "0":
                raise ModelInputError(f"{st['op']} returned {got.result} on {sp.label()}: nothing to explore")
        self.file_objs = dict(self.sys.files)
        self.positions = [(name, i) for name, n in sp.files() for i in range(n)]
        self.pos_index = {p: n + 1 for n, p in enumerate(self.positions)}
        self.arm64 = self.k.arch == "arm64"
        self.touched: dict[int, set] = {}      # 1G slot -> touched 2M blocks in it
        self.boot = {s: _copy_slot(e) for s, e in self.k.dmap.pt.top.items()}
        self.k.dmap.pt.top = {s: _copy_slot(e) for s, e in self.boot.items()}
        self.alloc = ExploreAllocator(self.k.alloc, self)
        self.k.alloc = self.alloc
        self.records.id(None)  # record id 0: nothing at this index
        self._points: list = []
        self._racing: list = []
        self._instrument()
        self.root = self.encode_full()

    # -- instrumentation of the scratch kernel (instance attributes only) ------------------------------------
    def _instrument(self) -> None:
        k = self.k
        point, access = k.point, k.kernel_access

        def recorded_point(name, pfn):
            self._points.append(name)
            point(name, pfn)

        def recorded_access(pfn, cpu=None, write=False, what="read"):
            got = access(pfn, cpu, write, what)
            if what == "racing read":
                self._racing.append((pfn, got))
            return got

        k.point, k.kernel_access = recorded_point, recorded_access

    # -- blocks of interest --------------------------------------------------------------------------------------
    def touch(self, pfn: int, npages: int) -> None:
        """Note the 2 MiB blocks an allocation may change (its own, the next one for arm64's boundary split,
        and on arm64 their whole contiguous-PMD run); give the scratch private copies of their PTE tables."""
        first, last = pfn >> 9, (pfn + npages) >> 9
        for block in range(first, last + 1):
            group = range(block - block % 16, block - block % 16 + 16) if self.arm64 else (block,)
            for b in group:
                self._touch_block(b)

    def _touch_block(self, b: int) -> None:
        slot = b >> 9
        if slot not in self.boot:
            return
        blocks = self.touched.setdefault(slot, set())
        if b in blocks:
            return
        blocks.add(b)
        cur = self.k.dmap.pt.top[slot]
        if type(cur) is list and type(cur[b & 511]) is bytearray:
            cur[b & 511] = bytearray(cur[b & 511])

    # -- encoding ------------------------------------------------------------------------------------------------
    def encode_full(self) -> tuple:
        """The whole scratch state as ``(gid, rid_0, rid_1, ...)`` in :attr:`positions` order."""
        gid, recs = self.encode(self.positions)
        return (gid,) + tuple(recs[p] for p in self.positions)

    def encode(self, loaded) -> tuple[int, dict]:
        """``(gid, {position: rid})`` for the positions in ``loaded``; raises LocalityError if another
        position of an existing file now holds a folio."""
        folios = self._folios(loaded)
        masked = {f.pfn for f in folios.values() if f is not None and f.order == 0}
        recs = {p: self.records.id(self._record(f, masked)) for p, f in folios.items()}
        g = (self._exists(), self._encode_pt(masked), self._encode_tlbs(masked), self.alloc.state(),
             self._flags())
        return self.globals.id(g), recs

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

    def _record(self, folio, masked) -> tuple | None:
        if folio is None:
            return None
        bits = tlb = None
        if folio.pfn in masked:
            bits = self.k.dmap.pt.leaf(folio.pfn)[2] & PAGE_BITS
            tlb = sum(1 << t.cpu for t in self.k.tlbs if t.entries.get(folio.pfn) == 1)
        flags = tuple(sorted(folio.flags - UNREAD_FLAGS))
        return (folio.pfn, folio.order, flags, folio.private, folio.refcount, folio.content, folio.name, bits, tlb)

    def _exists(self) -> tuple:
        return tuple(name in self.sys.files for name, _ in self.space.files())

    def _flags(self) -> tuple:
        c = self.k.counters
        if self.k.fail_pgtable_allocs or self.k.current_cpu:
            raise ExploreLimit("fail_alloc and set_cpu are not explored")
        return (c["freed_unmapped"] > 0, c["restore_splits"] > 0)

    def _encode_tlbs(self, masked) -> tuple:
        out = []
        for t in self.k.tlbs:
            out.append(tuple(sorted((s, n) for s, n in t.entries.items() if not (n == 1 and s in masked))))
        return tuple(out)

    def _encode_pt(self, masked) -> tuple:
        top = self.k.dmap.pt.top
        out = []
        for slot in sorted(self.touched):
            enc = self._encode_slot(slot, top[slot], self.boot[slot], masked)
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
        for b in sorted(self.touched[slot]):
            e, was = self._entry(cur[b & 511], b, masked), base[b & 511]
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
        exists, pt, tlbs, alloc, flags = self.globals.value(gid)
        sys, k = self.sys, self.k
        sys.files = {}
        for (name, _), there in zip(self.space.files(), exists, strict=False):
            if there:
                f = self.file_objs[name]
                f.mapping.i_pages.clear()
                f.mapping.nrpages = 0
                sys.files[name] = f
        sys.steps, sys.first_broken = [], {}
        self._decode_pt(dict(pt))
        for t, entries in zip(k.tlbs, tlbs, strict=False):
            t.entries = dict(entries)
        self.alloc.set_state(alloc)
        k.counters = Counters()
        k.counters["freed_unmapped"], k.counters["restore_splits"] = int(flags[0]), int(flags[1])
        k.pgtable_pfns, k.interrupt = [], None
        for pos, rid in recs.items():
            rec = self.records.value(rid)
            if rec is not None:
                self._load(pos, rec)

    def _decode_pt(self, target: dict) -> None:
        top = self.k.dmap.pt.top
        for slot, blocks in self.touched.items():
            enc, base = target.get(slot), self.boot[slot]
            if enc is None:
                top[slot] = base if type(base) is int else _fresh_table(base, blocks)
            elif enc[0] == "L":
                top[slot] = enc[1]
            elif enc[0] == "T":
                table = [enc[1]] * 512
                _apply_items(table, enc[2])
                top[slot] = table
            else:
                table = _fresh_table(base, blocks)
                _apply_items(table, enc[1])
                top[slot] = table

    def _load(self, pos, rec) -> None:
        pfn, order, flags, private, refcount, content, name, bits, tlb = rec
        f = self.sys.files[pos[0]]
        folio = Folio(pfn, order, name=name)
        folio.flags, folio.private, folio.refcount, folio.content = set(flags), private, refcount, content
        folio.mapping, folio.index = f.mapping, pos[1]
        f.mapping.i_pages[pos[1]] = folio
        f.mapping.nrpages += folio.nr_pages
        if bits is not None:
            self._set_page(pfn, bits)
            for t in self.k.tlbs:
                if tlb >> t.cpu & 1:
                    t.entries[pfn] = 1

    def _set_page(self, pfn: int, bits: int) -> None:
        pmd = self.k.dmap.pt.top[pfn >> 18]
        table = pmd[(pfn >> 9) & 511] if type(pmd) is list else None
        if type(table) is not bytearray:
            if bits != PAGE_BITS:
                raise LocalityError(f"pfn {pfn:#x} has no 4K entry but its record says bits {bits}")
            return
        table[pfn & 511] = (table[pfn & 511] & ~PAGE_BITS) | bits

    # -- running one step ----------------------------------------------------------------------------------------
    def run(self, gid: int, recs: dict, step: dict) -> Outcome:
        """Decode, run ``step`` through the real System.step, encode: one transition."""
        self.decode(gid, recs)
        pre = {self.records.value(r)[0]: self.records.value(r)[5] for r in recs.values() if r}
        self._points.clear()
        self._racing.clear()
        try:
            st = self.sys.step(**step)
        except ModelInputError as e:
            raise RefusedMove(str(e)) from None
        reached = tuple(dict.fromkeys(self._points))
        gid2, recs2 = self.encode(recs)
        props = observe(st, pre, self._racing) | frozenset(st.broken)
        return Outcome(st, recs2, gid2, st.counters.get("tlb_full_flushes", 0) > 0, props, reached)

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
        k = real.k
        folios = {}
        for name, f in real.files.items():
            for index, folio in f.mapping.i_pages.items():
                folios[(name, index)] = folio
        masked = {f.pfn for f in folios.values() if f.order == 0}
        saved = (self.k, self.sys)
        try:
            self.k, self.sys = k, real
            recs = tuple(self._record(folios.get(p), masked) for p in self.positions)
            extra = sorted(set(folios) - set(self.positions))
            tlbs = self._encode_tlbs(masked)
            pt = self._encode_pt(masked)
            flags = self._flags()
        finally:
            self.k, self.sys = saved
        exists = tuple(name in real.files for name, _ in self.space.files())
        g = (exists, pt, tlbs, project_allocator(k.alloc, self.alloc), flags)
        return (g,) + recs + ((("extra", tuple(extra)),) if extra else ())

    def expand(self, state: tuple) -> tuple:
        """An explorer state ``(gid, rid...)`` as the plain tuples :meth:`project` returns."""
        return (self.globals.value(state[0]),) + tuple(self.records.value(r) for r in state[1:])


def observe(step, pre: dict, racing: list) -> frozenset:
    """Named observations of one step (see :data:`nbmodel.explore.PROPERTIES`)."""
    out = set()
    c = step.counters
    probe = step.op in ("kernel_read", "cpu_touch")
    oops = c.get("oops", 0) - (probe and step.result == "oops") - (step.interrupt == "oops")
    if oops > 0:
        out.add("oops")
    if c.get("warns", 0) > 0:
        out.add("warn")
    if probe and step.result in ("ok", "stale") and step.saw in GUEST_DATA:
        out.add("leak")
    if any(got in ("ok", "stale") and pre.get(pfn) in GUEST_DATA for pfn, got in racing):
        out.add("leak")
    if step.op == "write" and step.result == Errno.EPERM.name:
        out.add("eperm")
    return frozenset(out)


def _copy_slot(e):
    if type(e) is int:
        return e
    return [x if type(x) is int else bytearray(x) for x in e]


def _fresh_table(base: list, blocks) -> list:
    table = list(base)
    for b in blocks:
        e = table[b & 511]
        if type(e) is bytearray:
            table[b & 511] = bytearray(e)
    return table


def _apply_items(table: list, items) -> None:
    for b, e in items:
        table[b & 511] = e if type(e) is int else bytearray(e)


__all__ = ["Space", "Universe", "ExploreAllocator", "ExploreLimit", "LocalityError", "Interner", "Outcome",
           "observe", "GUEST_DATA", "GMEM", "SECRET"]
