"""The explorer's fast engine: the model's order-0 paths on a compact per-page state machine.

Every function here mirrors one in :mod:`nbmodel.kernel`, :mod:`nbmodel.pagecache`,
:mod:`nbmodel.guest_memfd`, :mod:`nbmodel.secretmem`, :mod:`nbmodel.designs` or :mod:`nbmodel.system`, step
for step and under the same name, restricted to what the explorer covers: order-0 folios, one 2 MiB block of
PFNs (the pageblock the allocator carves), one or two CPUs' TLBs. It exists for speed (about a hundred times
faster than decoding into a real System) and it cannot drift silently: ``tests/test_explore.py`` runs every
transition of small explorations, and random longer sequences, through both this engine and the real
:class:`~nbmodel.system.System`, comparing :func:`project` of the real state with this engine's state after
every step.

State. ``G = (exists, pcp, carved, split, noncont, big, groups, freed_unmapped, restore_split)``:
which files exist; the allocator's per-CPU list as ``(pfn, valid, tlb)`` (free pages keep their direct-map
bit and the CPUs holding a 4 KiB TLB entry for them) and how many PFNs of the block were carved; whether the
block's large leaf was split; which 16-page groups lost their contiguous bit (arm64 BBML2); which CPUs hold a
TLB entry for the large leaf, and per CPU which contiguous groups they hold; the two counters invariants (b)
and (c) read. A record is one file index: ``(pfn, uptodate, zeroed_at_add, private, content, race_named,
valid, tlb)``, or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .designs import PRIVATE_NO_DIRECT_MAP
from .explore_state import GMEM, GUEST_DATA, SECRET, ExploreLimit, Interner, Space
from .pagetable import CONT, VALID
from .system import System

EPERM, EINVAL, EEXIST, EOPNOTSUPP, EBUSY, ENOENT = "EPERM", "EINVAL", "EEXIST", "EOPNOTSUPP", "EBUSY", "ENOENT"


class Invalid(Exception):
    """The model refuses this move with ModelInputError; the explorer skips it (as the real engine does)."""


class NeedDeeper(Exception):
    """A step run on a view of G popped more per-CPU-list pages than the view shows."""


# -- the machine: constants read from a real System once -----------------------------------------------------
@dataclass
class Machine:
    """What a configuration fixes: arch behaviour, the carve order, design hooks, file flags."""

    space: Space
    kind: str            # "x86" | "bbml2" | "rodata" | "noblocks"
    carve: list
    base: int            # first PFN of the carved 2 MiB block
    split_allocs: int    # page-table pages the first change in the block allocates (= splits counted)
    boot_split: bool
    boot_noncont: int
    ncpus: int
    design: str
    hooks: bool          # filemap design: page-cache zap/restore hooks installed
    zero_before_add: bool
    hook_migrate: bool
    skip_flush: bool
    batch_flush: bool
    write_mode: str
    put_first: bool
    gmem_nodm: bool
    gmem_shared: bool
    names: tuple = ()

    @classmethod
    def of(cls, space: Space) -> Machine:
        """The machine of ``space`` (cached: building it boots a System)."""
        return _machine(space)

    @classmethod
    def _build(cls, space: Space) -> Machine:
        sys = System(**space.system_kwargs(), trace=False)
        k, cfg = sys.k, sys.config
        if cfg.large_folios:
            raise ExploreLimit("large folios: use the real engine")
        if not space.fwb:
            raise ExploreLimit("arm64 without FWB: use the real engine")
        kind = {"x86": "x86", "bbml2": "bbml2", "rodata-full": "rodata", "blocks-no-bbml2": "noblocks"}.get(
            "x86" if k.arch == "x86" else k.dmap.mode)
        if kind is None:
            raise ExploreLimit(f"arm64 mode {k.dmap.mode}: use the real engine")
        carve = list(reversed(k.alloc._carve))
        base = carve[0] & ~511
        if any(p & ~511 != base for p in carve):
            raise ExploreLimit("the carve block is not one 2 MiB block")
        allocs, split, noncont = _boot_shape(k, kind, base)
        return cls(space, kind, carve, base, allocs, split, noncont, k.ncpus, cfg.design,
                   k.design.hooks_page_cache, "zero_after_insert" not in cfg.switches,
                   "unhooked_migration" not in cfg.switches, k.skip_flush, cfg.batch_flush, cfg.write,
                   "put_before_restore" in cfg.switches, "NO_DIRECT_MAP" in space.flags,
                   "INIT_SHARED" in space.flags and "MMAP" in space.flags, tuple(n for n, _ in space.files()))

    def root(self) -> tuple:
        exists = tuple(True for _ in self.space.files())
        g = (exists, (), 0, self.boot_split, self.boot_noncont, 0, (0,) * self.ncpus, False, False)
        return g


@lru_cache(maxsize=128)
def _machine(space: Space) -> Machine:
    return Machine._build(space)


def _boot_shape(k, kind: str, base: int) -> tuple[int, bool, int]:
    """(page-table pages the first change allocates, already 4K-mapped?, groups without CONT)."""
    level, _, prot = k.dmap.pt.leaf(base + 256)
    if kind == "x86":
        return {512 * 512: 2, 512: 1, 1: 0}[level], level == 1, (1 << 32) - 1
    if kind == "rodata":
        return 0, True, (1 << 32) - 1
    if kind == "noblocks":
        return 0, False, 0
    if level == 1:
        noncont = sum(1 << g for g in range(32) if not k.dmap.pt.prot(base + 16 * g) & CONT)
        return 0, True, noncont
    return (2 if level == 512 * 512 else 1), False, 0


# -- one step in flight ---------------------------------------------------------------------------------------
class Folio:
    """The fields of :class:`nbmodel.folio.Folio` the paths read."""

    __slots__ = ("pfn", "uptodate", "zeroed", "private", "content", "race", "refcount", "index", "file")

    def __init__(self, pfn, uptodate=False, zeroed=False, private=0, content="stale-kernel-data", race=False,
                 refcount=1, index=None, file=None):
        self.pfn, self.uptodate, self.zeroed, self.private = pfn, uptodate, zeroed, private
        self.content, self.race, self.refcount, self.index, self.file = content, race, refcount, index, file


class Work:
    """A state being stepped: the machine, mutable copies of ``G``, the loaded records, and what happened."""

    def __init__(self, m: Machine, g: tuple, recs: dict, at=None, icpu=None, deeper: bool = False):
        self.m = m
        exists, pcp, self.carved, self.split, self.noncont, self.big, groups, self.freed_bad, self.restore_bad = g
        self.exists = dict(zip(m.names, exists, strict=False))
        self.pages = {pfn: [valid, tlb] for pfn, valid, tlb in pcp}
        self.pcp = [e[0] for e in pcp]
        self.deeper, self.low, self.view_len = deeper, len(pcp), len(pcp)
        self.groups = list(groups)
        self.cache = {}  # (file, index) -> Folio
        for pos, rec in recs.items():
            if rec is not None:
                self._load(pos, rec)
        self.cpu = 0
        self.at, self.icpu, self.fired, self.racing, self.inside = at, icpu, False, None, frozenset()
        self.reached = []
        self.oops = self.stale = self.warns = 0
        self.flushed_all = False
        self.batch = None

    def _load(self, pos, rec) -> None:
        pfn, uptodate, zeroed, private, content, race, valid, tlb = rec
        self.cache[pos] = Folio(pfn, uptodate, zeroed, private, content, race, 1, pos[1], pos[0])
        self.pages[pfn] = [valid, tlb]

    # -- encoding ---------------------------------------------------------------------------------------------
    def g(self) -> tuple:
        exists = tuple(self.exists[n] for n in self.m.names)
        return (exists, self.pcp_tail(0), self.carved, self.split, self.noncont, self.big, tuple(self.groups),
                self.freed_bad, self.restore_bad)

    def pcp_tail(self, start: int) -> tuple:
        pages = self.pages
        return tuple((p, pages[p][0], pages[p][1]) for p in self.pcp[start:])

    def delta(self) -> tuple:
        """What the step did to G relative to the view it ran on: ``(popped, pushed, carved, split, noncont,
        big, groups, freed_unmapped, restore_split, flushed_all)``."""
        return (self.view_len - self.low, self.pcp_tail(self.low), self.carved, self.split, self.noncont, self.big,
                tuple(self.groups), self.freed_bad, self.restore_bad, self.flushed_all)

    def record(self, pos) -> tuple | None:
        f = self.cache.get(pos)
        if f is None:
            return None
        valid, tlb = self.pages[f.pfn]
        return (f.pfn, f.uptodate, f.zeroed, f.private, f.content, f.race, valid, tlb)

    # -- kernel.py --------------------------------------------------------------------------------------------
    def point(self, name: str, pfn: int) -> None:
        self.reached.append(name)
        if name == self.at and not self.fired:
            self.fired = True
            self.racing = (pfn, self.kernel_access(pfn, self.icpu))
            self.inside = self.racing_read_breaks(pfn, self.racing[1])

    def racing_read_breaks(self, pfn: int, result: str) -> frozenset:
        """``invariants.racing_read_breaks()`` over the loaded folios: the page-table half of (a), (a) again
        if the racing read reached a cached folio, (b) and (c) as between steps ((d) lags by design)."""
        out = set()
        if self.freed_bad:
            out.add("b")
        if self.restore_bad:
            out.add("c")
        for (file, _), folio in self.cache.items():
            if not (file == SECRET or self.m.gmem_nodm):
                continue
            if self.pages[folio.pfn][0] or (folio.pfn == pfn and result in ("ok", "stale")):
                out.add("a")
        return frozenset(out)

    def kernel_access(self, pfn: int, cpu: int | None = None) -> str:
        cpu = self.cpu if cpu is None else cpu
        page = self.pages[pfn]
        group = (pfn & 511) >> 4
        if page[1] >> cpu & 1 or self.big >> cpu & 1 or self.groups[cpu] >> group & 1:
            if page[0]:
                return "ok"
            self.stale += 1
            return "stale"
        if not page[0]:
            self.oops += 1
            return "oops"
        if not self.split:
            self.big |= 1 << cpu
        elif not self.noncont >> group & 1:
            self.groups[cpu] |= 1 << group
        else:
            page[1] |= 1 << cpu
        return "ok"

    def folio_zero(self, folio: Folio) -> str:
        got = self.kernel_access(folio.pfn)
        if got != "oops":
            folio.content = "zero"
        return got

    def alloc0(self) -> int:
        if self.pcp:
            pfn = self.pcp.pop()
            if len(self.pcp) < self.low:
                self.low = len(self.pcp)
            return pfn
        if self.deeper:
            raise NeedDeeper
        m = self.m
        if self.carved >= len(m.carve) or m.carve[self.carved] & 511 == 511:
            raise ExploreLimit("the explored configuration needs more pages than one pageblock holds")
        pfn = m.carve[self.carved]
        self.carved += 1
        self.pages[pfn] = [True, 0]
        return pfn

    def folio_alloc(self, zero: bool = False, race: bool = False) -> Folio:
        folio = Folio(self.alloc0(), race=race)
        if zero:
            self.folio_zero(folio)
        return folio

    def folio_put(self, folio: Folio, refs: int = 1) -> None:
        folio.refcount -= refs
        if folio.refcount:
            return
        if not self.pages[folio.pfn][0]:
            self.freed_bad = True
        self.pcp.append(folio.pfn)

    def _change(self, pfn: int, valid: bool) -> int:
        """``Kernel._change()`` for one page: the arch's split rules, then the valid bits."""
        m, page = self.m, self.pages[pfn]
        kind = m.kind
        if kind == "noblocks":
            if page[0] == valid:
                return 0
            self.warns += 1
            return -22
        splits = 0
        if not self.split and (kind == "bbml2" or page[0] != valid):
            for _ in range(m.split_allocs):
                self.alloc0()
                if kind == "x86":
                    self.flush_tlb_all()
            splits = m.split_allocs
            self.split = True
        if kind == "bbml2":
            self.noncont |= 1 << ((pfn & 511) >> 4)
        page[0] = valid
        return splits

    def set_direct_map_valid_noflush(self, pfn: int, valid: bool) -> tuple[int, int]:
        """(ret, counted splits); arm64 flushes the range when invalidating (set_memory_valid())."""
        splits = self._change(pfn, valid)
        ret = splits if splits < 0 else 0
        if self.m.kind != "x86" and not valid:
            self.flush_range(pfn)
        return ret, max(splits, 0)

    def flush_range(self, pfn: int) -> None:
        if self.m.skip_flush:
            return
        group = 1 << ((pfn & 511) >> 4)
        self.pages[pfn][1] = 0
        self.big = 0
        self.groups = [g & ~group for g in self.groups]

    def flush_tlb_all(self) -> None:
        self.flushed_all = True
        self.big = 0
        self.groups = [0] * len(self.groups)
        for page in self.pages.values():
            page[1] = 0

    def folio_zap_direct_map(self, folio: Folio) -> int:
        ret, _ = self.set_direct_map_valid_noflush(folio.pfn, False)
        self.point("after_zap", folio.pfn)
        self.flush_range(folio.pfn)
        return ret

    def folio_restore_direct_map(self, folio: Folio) -> None:
        ret, splits = self.set_direct_map_valid_noflush(folio.pfn, True)
        if splits:
            self.restore_bad = True
        if ret:
            self.warns += 1
        self.point("after_restore", folio.pfn)

    # -- pagecache.py -----------------------------------------------------------------------------------------
    def lookup(self, file: str, index: int) -> Folio | None:
        return self.cache.get((file, index))

    def hooked(self, file: str) -> bool:
        return self.m.hooks and (file == SECRET or self.m.gmem_nodm)

    def filemap_add_folio(self, file: str, folio: Folio, index: int) -> int:
        hooks = self.hooked(file)
        if hooks:
            ret = self.prep_add_unmapped_folio(folio)
            if ret:
                return ret
        ret = self.__filemap_add_folio(file, folio, index)
        if ret:
            if hooks:
                self.prep_remove_unmapped_folio(folio)
            return ret
        if hooks and self.m.zero_before_add:
            folio.zeroed = True
        return 0

    def __filemap_add_folio(self, file: str, folio: Folio, index: int) -> int:
        if (file, index) in self.cache:
            return -17
        folio.refcount += 1
        folio.index, folio.file = index, file
        self.cache[(file, index)] = folio
        self.point("after_insert", folio.pfn)
        return 0

    def prep_add_unmapped_folio(self, folio: Folio, zero: bool = True) -> int:
        if zero and self.m.zero_before_add:
            self.folio_zero(folio)
        if self.batch is not None:
            ret, _ = self.set_direct_map_valid_noflush(folio.pfn, False)
            if ret == 0:
                self.batch.append(folio.pfn)
            return ret
        return self.folio_zap_direct_map(folio)

    def prep_remove_unmapped_folio(self, folio: Folio) -> None:
        self.folio_restore_direct_map(folio)
        self.folio_zero(folio)

    def page_cache_delete(self, folio: Folio) -> None:
        del self.cache[(folio.file, folio.index)]
        folio.file = None
        self.point("after_delete", folio.pfn)

    def filemap_free_folio(self, file: str, folio: Folio) -> None:
        self.free_folio(file, folio)
        self.folio_put(folio)

    def free_folio(self, file: str, folio: Folio) -> None:
        """The mapping's ``->free_folio``: kvm_gmem_free_folio() or secretmem_free_folio()."""
        design = self.m.design
        if file == GMEM:
            if folio.private & PRIVATE_NO_DIRECT_MAP and design in ("per-folio", "secretmem"):
                self.folio_restore_direct_map(folio)
                folio.private &= ~PRIVATE_NO_DIRECT_MAP
                if design == "secretmem":
                    self.folio_zero(folio)
            return
        if design == "secretmem":
            self._change(folio.pfn, True)
            self.point("after_restore", folio.pfn)
        elif design == "per-folio":
            self.folio_restore_direct_map(folio)
        self.folio_zero(folio)

    def truncate(self, file: str, indexes) -> None:
        """``truncate_inode_pages_range()`` over whole order-0 folios: one delete_from_page_cache_batch()."""
        whole = [self.cache[(file, i)] for i in sorted(indexes) if (file, i) in self.cache]
        for folio in whole:
            folio.refcount += 1
        for folio in whole:
            self.page_cache_delete(folio)
        if self.hooked(file):
            for folio in whole:
                self.prep_remove_unmapped_folio(folio)
        for folio in whole:
            self.filemap_free_folio(file, folio)
        for folio in whole:
            self.folio_put(folio)

    def filemap_grab_folio(self, file: str, index: int) -> Folio | int:
        folio = self.lookup(file, index)
        if folio is not None:
            folio.refcount += 1
            return folio
        folio = self.folio_alloc()
        ret = self.filemap_add_folio(file, folio, index)
        if ret:
            self.folio_put(folio)
            return ret
        return folio

    def migrate_folio(self, src: Folio) -> int:
        if src.file == SECRET:
            dst = self.folio_alloc()
            src.refcount += 1
            self.folio_put(dst)
            self.folio_put(src)
            return -16
        dst = self.folio_alloc()
        src.refcount += 1
        ret = self.filemap_migrate_folio(src, dst)
        self.folio_put(dst)
        self.folio_put(src)
        return ret

    def filemap_migrate_folio(self, src: Folio, dst: Folio) -> int:
        hooked = self.hooked(src.file) and self.m.hook_migrate
        src_read = "ok"
        if not hooked:
            src_read = self.kernel_access(src.pfn)
            self.kernel_access(dst.pfn)
        dst.content = src.content if src_read != "oops" else "garbage"
        dst.race = src.race
        if hooked:
            ret = self.prep_add_unmapped_folio(dst, zero=False)
            if ret:
                return ret
        pos = (src.file, src.index)
        dst.refcount += 1
        src.refcount -= 1
        dst.file, dst.index = pos
        self.cache[pos] = dst
        src.file = None
        dst.private, src.private = src.private, 0
        dst.uptodate, dst.zeroed = src.uptodate, src.zeroed  # folio_migrate_flags(), as pagecache.py does
        if hooked:
            self.prep_remove_unmapped_folio(src)
        return 0

    def replace_page_cache_folio(self, old: Folio, new: Folio) -> None:
        hooked = self.hooked(old.file) and self.m.hook_migrate
        if hooked and self.prep_add_unmapped_folio(new, zero=False):
            self.warns += 1  # void function: the hook can only WARN and go on, as pagecache.py does
        new.refcount += 1
        pos = (old.file, old.index)
        new.file, new.index = pos
        self.cache[pos] = new
        file, old.file = old.file, None
        if hooked:
            self.prep_remove_unmapped_folio(old)
        self.free_folio(file, old)
        self.folio_put(old)

    # -- guest_memfd.py ---------------------------------------------------------------------------------------
    def kvm_gmem_get_folio(self, index: int) -> Folio | int:
        if self.m.design == "secretmem" and self.m.gmem_nodm and self.lookup(GMEM, index) is None:
            return self._secretmem_style_add(index)
        return self.filemap_grab_folio(GMEM, index)

    def _secretmem_style_add(self, index: int) -> Folio | int:
        folio = self.folio_alloc(zero=True)
        folio.zeroed = True
        ret, _ = self.set_direct_map_valid_noflush(folio.pfn, False)
        if ret:
            self.folio_put(folio)
            return ret
        folio.private |= PRIVATE_NO_DIRECT_MAP
        ret = self.filemap_add_folio(GMEM, folio, index)
        if ret:
            self.set_direct_map_valid_noflush(folio.pfn, True)
            self.folio_put(folio)
            return ret
        self.flush_range(folio.pfn)
        return folio

    def _zap(self, folio: Folio) -> int:
        if self.m.design != "per-folio" or not self.m.gmem_nodm:
            return 0
        if folio.private & PRIVATE_NO_DIRECT_MAP:
            return 0
        ret = self.folio_zap_direct_map(folio)
        if ret == 0:
            folio.private |= PRIVATE_NO_DIRECT_MAP
        return ret

    def _prepare_contents(self, folio: Folio) -> str:
        result = "ok"
        if not folio.uptodate:
            if not folio.zeroed:
                result = self.folio_zero(folio)
            folio.uptodate = True
        return result

    def op_fallocate(self, index: int) -> str:
        batching = self.m.batch_flush and self.m.hooks and self.m.gmem_nodm
        if batching:
            self.batch = []
        folio = self.kvm_gmem_get_folio(index)
        ret = folio if isinstance(folio, int) else 0
        if not isinstance(folio, int):
            self.folio_put(folio)
        if batching:
            batch, self.batch = self.batch, None
            if batch and not self.m.skip_flush:
                self.flush_tlb_all()
        return _errno(ret)

    def op_punch_hole(self, index: int) -> str:
        self.truncate(GMEM, [index])
        return "0"

    def _fault_in(self, index: int) -> int | str:
        """Get, prepare and (v12) zap the folio, then the store: 0, ``"oops"`` or a negative errno."""
        folio = self.kvm_gmem_get_folio(index)
        if isinstance(folio, int):
            return folio
        if self._prepare_contents(folio) == "oops":
            self.folio_put(folio)
            return "oops"
        ret = self._zap(folio)
        if not ret:
            folio.content = "guest-secret"
        self.folio_put(folio)
        return ret

    def op_user_fault(self, index: int) -> str:
        if not self.m.gmem_shared:
            return "SIGBUS"
        got = self._fault_in(index)
        return got if got == "oops" else ("SIGBUS" if got else "0")

    def op_guest_fault(self, index: int) -> str:
        got = self._fault_in(index)
        return got if got == "oops" else _errno(got)

    def op_write(self, index: int) -> str:
        m = self.m
        if m.gmem_nodm and m.design == "secretmem":
            return EINVAL
        if m.gmem_nodm and m.design == "filemap" and m.write_mode == "refuse":
            return EOPNOTSUPP
        folio = self.kvm_gmem_get_folio(index)
        if isinstance(folio, int):
            return _errno(folio)
        if m.design == "per-folio" and folio.private & PRIVATE_NO_DIRECT_MAP:
            self.folio_put(folio)
            return EPERM
        if not (m.gmem_nodm and m.design == "filemap"):
            self.kernel_access(folio.pfn)
        folio.content = "guest-image"
        folio.uptodate = True
        ret = self._zap(folio)
        self.folio_put(folio)
        return _errno(ret) if ret else "4096"

    # -- secretmem.py -----------------------------------------------------------------------------------------
    def op_secret_fault(self, index: int, race: bool = False, data: str = "secret") -> str:
        design = self.m.design
        folio = self.lookup(SECRET, index)
        if folio is not None:
            folio.content = data
            return "0"
        if design == "filemap" and race:
            folio = self.folio_alloc()
            self._racing_fault(index)
            self.filemap_add_folio(SECRET, folio, index)
            self.folio_put(folio)
            return self.op_secret_fault(index, data=data)
        if design == "filemap":
            folio = self.filemap_grab_folio(SECRET, index)
            if isinstance(folio, int):
                return "SIGBUS"
        else:
            folio = self.folio_alloc(zero=True)
            if design == "per-folio":
                ret = self.folio_zap_direct_map(folio)
            else:
                ret = min(self._change(folio.pfn, False), 0)
            if ret:
                self.folio_put(folio)
                return "SIGBUS"
            folio.uptodate = True
            if race:
                self._racing_fault(index)
            ret = self.filemap_add_folio(SECRET, folio, index)
            if ret:
                self._secret_undo(folio)
                return self.op_secret_fault(index, data=data) if ret == -17 else "SIGBUS"
            if design == "secretmem":
                self.flush_range(folio.pfn)
        folio.content = data
        self.folio_put(folio)
        return "0"

    def _secret_undo(self, folio: Folio) -> None:
        if self.m.put_first:
            self.folio_put(folio)
        if self.m.design == "per-folio":
            self.folio_restore_direct_map(folio)
        else:
            self._change(folio.pfn, True)
        if not self.m.put_first:
            self.folio_put(folio)

    def _racing_fault(self, index: int) -> None:
        cpu = self.cpu
        self.cpu = (cpu + 1) % self.m.ncpus
        self.op_secret_fault(index)
        self.cpu = cpu

    # -- system.py --------------------------------------------------------------------------------------------
    def op_kernel_read(self, file: str, index: int, cpu: int) -> tuple[str, str | None]:
        folio = self.lookup(file, index)
        if folio is None:
            return ENOENT, None
        got = self.kernel_access(folio.pfn, cpu)
        return got, (folio.content if got != "oops" else None)

    def op_migrate(self, file: str, index: int) -> str:
        folio = self.lookup(file, index)
        if folio is None:
            return ENOENT
        return _errno(self.migrate_folio(folio))

    def op_replace(self, file: str, index: int) -> str:
        old = self.lookup(file, index)
        if old is None:
            return ENOENT
        new = self.folio_alloc(race=old.race)
        new.content = old.content
        new.uptodate, new.zeroed = old.uptodate, old.zeroed
        old.refcount += 1
        self.replace_page_cache_folio(old, new)
        self.folio_put(old)
        self.folio_put(new)
        return "0"

    def op_race_add(self, file: str, index: int) -> str:
        folio = self.folio_alloc(race=True)
        ret = self.filemap_add_folio(file, folio, index)
        self.folio_put(folio)
        return _errno(ret)

    def op_close(self, file: str) -> str:
        self.truncate(file, [i for (f, i) in self.cache if f == file])
        self.exists[file] = False
        return "0"

    def op_create(self, file: str) -> str:
        self.exists[file] = True
        return "0"


def _errno(ret: int) -> str:
    return {0: "0", -1: EPERM, -12: "ENOMEM", -16: EBUSY, -17: EEXIST, -22: EINVAL}[ret] if ret <= 0 else str(ret)


# -- one move -------------------------------------------------------------------------------------------------
@dataclass
class FastOutcome:
    """What one move did: the new G and records, observations, and what a report shows."""

    g: tuple | None
    records: dict
    flush_all: bool
    props: frozenset
    reached: tuple
    result: str
    interrupt: str | None
    delta: tuple | None = None


def step(m: Machine, g: tuple, recs: dict, move, deeper: bool | None = None) -> FastOutcome:
    """Run one :class:`~nbmodel.explore.Move` on ``(G, {position: record})``. With ``deeper`` set, ``g``
    is a view whose per-CPU list shows only its top entries (``deeper``: more exist below) and the outcome
    carries a :meth:`Work.delta` instead of a new G; a step that pops below the view raises NeedDeeper."""
    w = Work(m, g, recs, move.at, move.icpu, bool(deeper))
    if not w.exists[move.file] and move.op not in ("gmem_create", "secret_create"):
        raise Invalid(f"{move.file} does not exist")
    result, saw = _dispatch(w, move)
    records = {pos: w.record(pos) for pos in recs}
    for pos in w.cache:
        if pos not in records:
            raise ExploreLimit(f"{move} changed {pos}, which was not loaded")
    interrupt = None if move.at is None else (w.racing[1] if w.racing else "not reached")
    props = _observe(w, move, result, saw, recs, interrupt)
    reached = tuple(dict.fromkeys(w.reached))
    if deeper is not None:
        return FastOutcome(None, records, w.flushed_all, props, reached, result, interrupt, w.delta())
    return FastOutcome(w.g(), records, w.flushed_all, props, reached, result, interrupt)


def apply_delta(g: tuple, delta: tuple) -> tuple:
    """G after a step whose :meth:`Work.delta` is ``delta`` (computed on a view of a G like ``g``)."""
    popped, pushed, carved, split, noncont, big, groups, fb, rb, flushed = delta
    pcp = g[1]
    keep = pcp[:len(pcp) - popped] if popped else pcp
    if flushed and keep:
        keep = tuple((p, v, 0) for p, v, _ in keep)
    return (g[0], keep + pushed, carved, split, noncont, big, groups, fb, rb)


_HANDLERS = {
    "kernel_read": lambda w, mv: w.op_kernel_read(mv.file, mv.index, mv.cpu),
    "gmem_create": lambda w, mv: (w.op_create(mv.file), None),
    "secret_create": lambda w, mv: (w.op_create(mv.file), None),
    "close": lambda w, mv: (w.op_close(mv.file), None),
    "migrate": lambda w, mv: (w.op_migrate(mv.file, mv.index), None),
    "replace": lambda w, mv: (w.op_replace(mv.file, mv.index), None),
    "race_add": lambda w, mv: (w.op_race_add(mv.file, mv.index), None),
    "secret_fault": lambda w, mv: (w.op_secret_fault(mv.index), None),
    "secret_fault+race": lambda w, mv: (w.op_secret_fault(mv.index, race=True), None),
    "fallocate": lambda w, mv: (w.op_fallocate(mv.index), None),
    "punch_hole": lambda w, mv: (w.op_punch_hole(mv.index), None),
    "user_fault": lambda w, mv: (w.op_user_fault(mv.index), None),
    "guest_fault": lambda w, mv: (w.op_guest_fault(mv.index), None),
    "write": lambda w, mv: (w.op_write(mv.index), None),
}


def _dispatch(w: Work, move) -> tuple[str, str | None]:
    return _HANDLERS[move.op](w, move)


def _observe(w: Work, move, result: str, saw, recs: dict, interrupt) -> frozenset:
    """The same observations as :func:`nbmodel.explore_state.observe`."""
    probe = move.op == "kernel_read"
    if not (w.oops or w.warns or w.racing or probe or move.op == "write"):
        return w.inside
    out = set()
    oops = w.oops - (probe and result == "oops") - (interrupt == "oops")
    if oops > 0:
        out.add("oops")
    if w.warns:
        out.add("warn")
    if probe and result in ("ok", "stale") and saw in GUEST_DATA:
        out.add("leak")
    if w.racing and w.racing[1] in ("ok", "stale"):
        pre = {r[0]: r[4] for r in recs.values() if r is not None}
        if pre.get(w.racing[0]) in GUEST_DATA:
            out.add("leak")
    if move.op == "write" and result == EPERM:
        out.add("eperm")
    return frozenset(out) | w.inside


# -- invariants on the compact state ---------------------------------------------------------------------------
def broken_record(m: Machine, g: tuple, file: str, rec: tuple) -> frozenset:
    """Invariants (a) and (d) for one record under ``G``; the model's checks, on the compact state."""
    pfn, _, _, private, _, _, valid, tlb = rec
    nodm = file == SECRET or m.gmem_nodm
    out = set()
    if nodm:
        group = (pfn & 511) >> 4
        held = tlb or g[5] or any(x >> group & 1 for x in g[6])
        if valid or held:
            out.add("a")
        if file == GMEM and m.design == "per-folio" and bool(private & PRIVATE_NO_DIRECT_MAP) != (not valid):
            out.add("d")
    return frozenset(out)


def broken_global(m: Machine, g: tuple) -> frozenset:
    out = set()
    if g[7]:
        out.add("b")
    if g[8]:
        out.add("c")
    return frozenset(out)


# -- projection of a real System ------------------------------------------------------------------------------
def project(m: Machine, real: System) -> tuple:
    """A real System's state in this engine's terms: ``(G, record per position)`` (for conformance checks)."""
    k = real.k
    base = m.base

    def page(pfn):
        prot = k.dmap.pt.prot(pfn)
        tlb = sum(1 << t.cpu for t in k.tlbs if t.entries.get(pfn) == 1)
        return bool(prot & VALID), tlb

    carved = len(m.carve) - len(k.alloc._carve)
    pcp = tuple((p,) + page(p) for p in k.alloc._pcp)
    level, _, _ = k.dmap.pt.leaf(base + 256)
    split = level == 1 if m.kind != "noblocks" else False
    noncont = sum(1 << g for g in range(32) if not k.dmap.pt.prot(base + 16 * g) & CONT) if split else 0
    if m.kind in ("x86", "rodata"):
        noncont = (1 << 32) - 1
    if m.kind == "bbml2" and not split:
        noncont = 0
    big = sum(1 << t.cpu for t in k.tlbs if any(n >= 512 and s <= base < s + n for s, n in t.entries.items()))
    groups = tuple(sum(1 << ((s - base) >> 4) for s, n in t.entries.items() if n == 16 and base <= s < base + 512)
                   for t in k.tlbs)
    c = k.counters
    exists = tuple(name in real.files for name, _ in m.space.files())
    g = (exists, pcp, carved, split, noncont, big, groups, c["freed_unmapped"] > 0, c["restore_splits"] > 0)
    recs = []
    for name, n in m.space.files():
        f = real.files.get(name)
        for i in range(n):
            folio = f.mapping.i_pages.get(i) if f is not None else None
            recs.append(None if folio is None else _project_folio(folio, page))
    return (g,) + tuple(recs)


def _project_folio(folio, page) -> tuple:
    if folio.order or folio.refcount != 1 or folio.test("locked"):
        raise ExploreLimit(f"{folio!r} is not an order-0 folio at rest")
    valid, tlb = page(folio.pfn)
    return (folio.pfn, folio.test("uptodate"), folio.test("zeroed_at_add"), folio.private, folio.content,
            folio.name.endswith(":race"), valid, tlb)


class FastUniverse:
    """Interning for the fast engine; the same interface the explorer uses for the real one."""

    def __init__(self, space: Space):
        self.space = space
        self.m = Machine.of(space)
        self.records = Interner()
        self.globals = Interner()
        self.records.id(None)
        self.positions = [(name, i) for name, n in space.files() for i in range(n)]
        self.root = (self.globals.id(self.m.root()),) + (0,) * len(self.positions)
        self._clear: dict = {}

    def clear_tlb(self, rid: int) -> int:
        got = self._clear.get(rid)
        if got is None:
            rec = self.records.value(rid)
            got = rid if rec is None or not rec[7] else self.records.id(rec[:7] + (0,))
            self._clear[rid] = got
        return got

    def expand(self, state: tuple) -> tuple:
        return (self.globals.value(state[0]),) + tuple(self.records.value(r) for r in state[1:])


__all__ = ["Machine", "Work", "FastUniverse", "FastOutcome", "step", "project", "broken_record",
           "broken_global", "Invalid"]
