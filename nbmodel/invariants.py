"""The invariants, as plain predicates over a :class:`~nbmodel.system.System`, each with its reasoning.

Each returns None when it holds, or a short sentence naming the folio that breaks it.

:func:`broken` checks everything, over the whole page cache. :class:`IncrementalCheck` gives the same answer
after each step from what the step touched (``System.step`` uses it): invariants (a) and (d) are properties of
each cached folio, so only the folios whose inputs changed are checked again (see :meth:`IncrementalCheck.broken`).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from .designs import DESIGN_CLASSES, DESIGNS, PRIVATE_NO_DIRECT_MAP
from .errors import Access
from .kernel import Touched
from .pagetable import MAPPED, VALID, prot_match


@dataclass(frozen=True)
class Invariant:
    key: str
    name: str
    why: str
    check: Callable
    designs: tuple = DESIGNS


def _cached_folios(sys, kind: str | None = None):
    for f in sys.files.values():
        if f.mapping.no_direct_map() and kind in (None, f.kind):
            yield from f.mapping.folios()


_NOT_ZAPPED = prot_match(MAPPED | VALID, MAPPED, equal=False)


def _first_valid(k, folio) -> int | None:
    """The folio's first page whose direct-map entry is not zapped (mapped and not valid), or None."""
    return k.dmap.pt.first_where(folio.pfn, folio.nr_pages, _NOT_ZAPPED)


def folio_unmapped_while_cached(k, folio, tlb: bool = True) -> str | None:
    """Invariant (a) for one cached folio: why it breaks it, or None."""
    valid = _first_valid(k, folio)
    if valid is not None:
        return f"{folio.name} is cached with a valid direct-map entry (pfn {valid:#x})"
    holders = k.tlb_holders(folio.pfn, folio.nr_pages) if tlb else []
    if holders:
        return f"{folio.name} is cached but CPU {holders[0]} still holds a TLB entry for it"
    return None


def check_unmapped_while_cached(sys, tlb: bool = True) -> str | None:
    """Between steps both halves are checked; inside a step (``tlb=False``) only the page tables, because the
    TLB half is promised only once the add has returned (a racing read through a stale entry is reported by
    :func:`racing_read_breaks`)."""
    k = sys.k
    for folio in _cached_folios(sys):
        reason = folio_unmapped_while_cached(k, folio, tlb)
        if reason:
            return reason
    return None


def racing_read_breaks(sys, pfn: int, result: Access) -> dict[str, str]:
    """Invariants broken *inside* a step, seen by another CPU at an interrupt point: the page-table half of
    (a), (b) and (c) as between steps, and (a) again if the racing read reached a cached folio's data."""
    # (d) is left out: v12 sets the bit only after the zap returns, so inside the step it lags by design.
    out = {key: reason for key, reason in broken(sys).items() if key not in ("a", "d")}
    reason = check_unmapped_while_cached(sys, tlb=False)
    if reason is None and result in (Access.OK, Access.STALE):
        for folio in _cached_folios(sys):
            if folio.pfn <= pfn < folio.pfn + folio.nr_pages:
                reason = f"another CPU read {folio.name} through the direct map ({result}) while it was cached"
    if reason is not None and "a" in _applicable(sys):
        out["a"] = reason
    return out


def _applicable(sys) -> set[str]:
    return {key for key, inv in INVARIANTS.items() if sys.config.design in inv.designs}


def check_never_freed_unmapped(sys) -> str | None:
    """Scoped to the source a folio came from: a folio of the unmapped source is freed back into it unmapped on
    purpose (``unmapped_pool_frees``), and must not come back mapped."""
    c = sys.k.counters
    n = c["freed_unmapped"] - c["unmapped_pool_frees"]
    if n:
        return f"{n} folio(s) went back to the page allocator with an invalid direct map"
    m = c["freed_mapped_to_unmapped_pool"]
    return f"{m} folio(s) went back to the unmapped source with a valid direct map" if m else None


def check_restore_without_split(sys) -> str | None:
    k = sys.k
    if k.counters["restore_splits"]:
        return f"a restore needed {k.counters['restore_splits']} split(s), so it could fail"
    return None


def folio_private_bit_iff_zapped(k, folio) -> str | None:
    """Invariant (d) for one cached guest_memfd folio: why it breaks it, or None."""
    bit = bool(folio.private & PRIVATE_NO_DIRECT_MAP)
    zapped = _first_valid(k, folio) is None
    if bit != zapped:
        state = "set" if bit else "clear"
        return f"{folio.name}: private bit {state} but direct map {'invalid' if zapped else 'valid'}"
    return None


def check_private_bit_iff_zapped(sys) -> str | None:
    k = sys.k
    for folio in _cached_folios(sys, kind="guest_memfd"):
        reason = folio_private_bit_iff_zapped(k, folio)
        if reason:
            return reason
    return None


INVARIANTS = {
    "a": Invariant(
        "a", "unmapped_while_cached",
        "While a folio sits in an AS_NO_DIRECT_MAP mapping's page cache, no direct-map entry maps it and no CPU "
        "holds a TLB entry for it. The seed mail states the first half (the direct map is invalid for the whole time "
        "the folio sits in the page cache); the TLB clause is this book's strengthening. It is what makes a "
        "speculative read through the direct map impossible: the MMU has nothing to translate. Any lockless page-cache "
        "lookup (filemap_get_entry + folio_try_get) may find the folio the moment it is in the xarray, so the "
        "zap and the flush must both be done before the insert.",
        check_unmapped_while_cached),
    "b": Invariant(
        "b", "never_freed_unmapped",
        "No folio goes back to the page allocator with its direct map invalid. The next owner of those pages "
        "(a slab, a page table, another file) would oops on its first kernel access; and the allocator's own "
        "zeroing of __GFP_ZERO pages writes through the direct map. It is scoped to where a folio came from: "
        "the designs restore before freeing a folio of the ordinary (mapped) allocator; a folio of an unmapped "
        "source (Jackman's ALLOC_UNMAPPED, option unmapped_source) goes back into that pool unmapped on purpose, "
        "and breaks the rule the other way if a remove path maps it again before it goes back.",
        check_never_freed_unmapped),
    "c": Invariant(
        "c", "restore_without_split",
        "Restoring the direct map never needs a split. A split allocates a page-table page and can fail with "
        "-ENOMEM, and the restore runs on paths that cannot fail (->free_folio, the page-cache removal). It "
        "holds when every restore covers exactly what the matching zap covered, because the zap already split.",
        check_restore_without_split),
    "d": Invariant(
        "d", "private_bit_iff_zapped",
        "per-folio (v12) only: KVM_GMEM_FOLIO_NO_DIRECT_MAP in folio->private is set exactly when the folio's "
        "direct map is invalid. The bit is the only record of the zap: restore trusts it, so a bit out of step "
        "with the page tables means a restore skipped (freed unmapped) or done twice.",
        check_private_bit_iff_zapped, designs=tuple(n for n, c in DESIGN_CLASSES.items() if c.private_bit)),
}


def broken(sys) -> dict[str, str]:
    """``{key: reason}`` for every invariant that applies to the installed design and does not hold."""
    out = {}
    for key, inv in INVARIANTS.items():
        if sys.config.design not in inv.designs:
            continue
        reason = inv.check(sys)
        if reason:
            out[key] = reason
    return out


# -- incremental checking ---------------------------------------------------------------------------------------


class IncrementalCheck:
    """:func:`broken` after each step, from what the step touched, with the same result.

    Why it is the same: (b) and (c) read two counters, checked every time. (a) and (d) are "every cached folio
    of an ``AS_NO_DIRECT_MAP`` mapping satisfies P", where P for a folio reads only the folio (its PFNs, name
    and ``private``), the MAPPED/VALID bits of its PFNs' direct-map leaves and (for (a)) the TLB entries
    overlapping it. So a folio's verdict can change only if (1) it entered or left such a page cache (a slot
    stored or erased, a file created or closed), (2) direct-map bits of its PFNs changed, (3) a TLB entry
    overlapping it was added (only an entry from an arm64 contiguous run can matter: any other covers just
    the valid leaf it was filled through, and a folio with a valid page breaks (a) anyway), or one was removed
    while it broke (a) through a TLB entry (a folio with no entry has nothing to remove), or (4) its
    ``private`` changed, which the code doing it does holding a reference (``folio_get()``/``folio_put()``
    note the folio). The kernel's primitives note (1)-(4) in a
    :class:`~nbmodel.kernel.Touched` record; this class keeps every cached folio indexed by its first PFN,
    the folios that break (a) or (d) with their reasons, and re-decides only the noted folios. The
    reported reason is the first breaking folio's in :func:`broken`'s order (files in creation order, then
    page-cache index): a heap over ``(file number, index)``.

    State changed behind the kernel's back (a new ``sys.files`` dict, as the explorer's decoder builds, or a
    ``Touched`` record replaced) is noticed and the index rebuilt by a full pass; :meth:`rebuild` does it on
    request. ``tests/test_invariants_incremental.py`` compares this with :func:`broken` after every step of
    random programs, for every design, arch and break-it switch."""

    def __init__(self, sys):
        self.sys = sys
        self.touched = Touched()
        sys.k.touched = self.touched
        self._files = None      # the sys.files dict the index was built from
        self.rebuild_needed = True

    # -- the index ------------------------------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Forget everything and index the whole page cache again (a full pass)."""
        sys = self.sys
        sys.k.touched = self.touched
        self.touched.clear()
        self.applicable = _applicable(sys)
        self.check_a, self.check_d = "a" in self.applicable, "d" in self.applicable
        # (key, the full check, or None for the per-folio ones answered from the index), in broken()'s order
        self._checks = [(key, None if key in ("a", "d") else inv.check) for key, inv in INVARIANTS.items()
                        if key in self.applicable]
        self._files = sys.files
        self._names: dict = {}      # name -> file, as last seen
        self._maps: dict = {}       # mapping -> (file, file number) for AS_NO_DIRECT_MAP mappings of open files
        self._slots: dict = {}      # mapping -> {index: folio} as indexed
        self._where: dict = {}      # folio -> (file, file number, index)
        self._by_pfn: dict = {}     # first PFN -> folio
        self._bad = {"a": {}, "d": {}}   # key -> {folio: reason}
        self._tlb_bad: dict = {}    # folios breaking (a) through a TLB entry only
        self._heap = {"a": [], "d": []}  # (file number, index, n, folio): lazily deleted
        self._count = itertools.count()
        self._fileno = itertools.count()
        self.degraded = False       # two cached folios share a PFN: the full check answers
        for f in sys.files.values():
            self._open(f)
        for folio in list(self._where):
            self._decide(folio)
        self.rebuild_needed = False

    def _open(self, f) -> None:
        self._names[f.name] = f
        m = f.mapping
        if not m.no_direct_map():
            return
        self._maps[m] = (f, next(self._fileno))
        self._slots[m] = {}
        for index, folio in m.i_pages.items():
            self._add(folio, m, index)

    def _close(self, f) -> None:
        self._names.pop(f.name, None)
        m = f.mapping
        if self._maps.pop(m, None) is None:
            return
        for folio in list(self._slots.pop(m).values()):
            self._remove(folio)

    def _add(self, folio, m, index) -> None:
        if folio in self._where or folio.pfn in self._by_pfn:
            self.degraded = True
            return
        f, num = self._maps[m]
        self._slots[m][index] = folio
        self._where[folio] = (f, num, index)
        self._by_pfn[folio.pfn] = folio

    def _remove(self, folio) -> None:
        where = self._where.pop(folio, None)
        if where is None:
            return
        if self._by_pfn.get(folio.pfn) is folio:
            del self._by_pfn[folio.pfn]
        self._bad["a"].pop(folio, None)
        self._bad["d"].pop(folio, None)
        self._tlb_bad.pop(folio, None)

    def _slot(self, m, index, out: set) -> None:
        slots = self._slots.get(m)
        if slots is None:
            return
        old = slots.get(index)
        new = m.i_pages.get(index)
        if old is new:
            return
        if old is not None:
            del slots[index]
            self._remove(old)
        if new is not None:
            self._add(new, m, index)
            out.add(new)

    def _overlapping(self, pfn: int, n: int, out: set) -> None:
        """Add the indexed folios overlapping ``[pfn, pfn + n)`` to ``out``: the range's PFNs looked up one by one,
        or the index scanned when it is the smaller (so O(min(range, folios cached)))."""
        by_pfn = self._by_pfn
        end = pfn + n
        if n <= len(by_pfn):
            base = by_pfn.get(pfn & ~511)   # a 2M folio starting before the range may cover its start
            if base is not None and base.nr_pages > 1:
                out.add(base)
            for p in range(pfn, end):
                folio = by_pfn.get(p)
                if folio is not None:
                    out.add(folio)
            return
        for first, folio in by_pfn.items():
            if first < end and pfn < first + folio.nr_pages:
                out.add(folio)

    # -- verdicts --------------------------------------------------------------------------------------------------
    def _decide(self, folio) -> None:
        k = self.sys.k
        f, num, index = self._where[folio]
        if folio.nr_pages == 1 and folio not in self._bad["a"] and folio not in self._bad["d"]:
            # The common case, decided without building a reason: a 4K folio that broke nothing and whose one
            # page is zapped (mapped, not valid), that no TLB holds, with the private bit where (d) wants it.
            pfn = folio.pfn
            if k.dmap.pt.leaf(pfn)[2] & (MAPPED | VALID) == MAPPED \
                    and (not self.check_d or f.kind != "guest_memfd" or folio.private & PRIVATE_NO_DIRECT_MAP):
                for t in k.tlbs:
                    if t.entries and t.lookup(pfn) is not None:
                        break
                else:
                    return
        if self.check_a:
            reason = folio_unmapped_while_cached(k, folio)
            self._mark("a", folio, reason, num, index)
            if reason is not None and _first_valid(k, folio) is None:  # broken through a TLB entry
                self._tlb_bad[folio] = None
            else:
                self._tlb_bad.pop(folio, None)
        if self.check_d and f.kind == "guest_memfd":
            self._mark("d", folio, folio_private_bit_iff_zapped(k, folio), num, index)

    def _mark(self, key, folio, reason, num, index) -> None:
        bad = self._bad[key]
        if reason is None:
            bad.pop(folio, None)
            return
        if folio not in bad:
            heap = self._heap[key]
            if len(heap) > 2 * len(bad) + 64:  # drop the entries of folios that no longer break it
                heap[:] = [e for e in heap if e[3] in bad and self._where[e[3]][1:] == e[:2]]
                heapq.heapify(heap)
            heapq.heappush(heap, (num, index, next(self._count), folio))
        bad[folio] = reason

    def _first(self, key) -> str | None:
        bad = self._bad[key]
        if not bad:
            return None
        heap, where = self._heap[key], self._where
        while True:
            num, index, _, folio = heap[0]
            if folio in bad and where[folio][1] == num and where[folio][2] == index:
                return bad[folio]
            heapq.heappop(heap)

    # -- after a step ----------------------------------------------------------------------------------------------
    def broken(self) -> dict[str, str]:
        """``{key: reason}`` as :func:`broken` gives it now, from what changed since the last call."""
        sys = self.sys
        if (self.rebuild_needed or sys.files is not self._files or sys.k.touched is not self.touched
                or self.degraded):
            self.rebuild()
        else:
            self._update()
        if self.degraded:
            return broken(sys)
        out = {}
        bad = self._bad
        for key, check in self._checks:
            if check is None:
                reason = self._first(key) if bad[key] else None
            else:
                reason = check(sys)
            if reason:
                out[key] = reason
        return out

    def _files_changed(self) -> None:
        files, names = self.sys.files, self._names
        for name, f in list(names.items()):
            if files.get(name) is not f:
                self._close(f)
        for name, f in files.items():
            if name not in names:
                self._open(f)
                for folio in f.mapping.i_pages.values():
                    if folio in self._where:
                        self._decide(folio)

    def _update(self) -> None:
        t = self.touched
        if list(self.sys.files.values()) != list(self._names.values()):  # files have no __eq__: by identity
            self._files_changed()
        todo: set = set()
        if t.slots:
            for m, index in t.slots:
                self._slot(m, index, todo)
            t.slots = []
        if t.pages:
            by_pfn = self._by_pfn
            for pfn, n in t.pages:
                if n == 1:  # one page: the folio starting there, or a 2M folio holding it
                    folio = by_pfn.get(pfn)
                    if folio is None and pfn & 511:
                        folio = by_pfn.get(pfn & ~511)
                    if folio is not None:
                        todo.add(folio)
                else:
                    self._overlapping(pfn, n, todo)
            t.pages = []
        where = self._where
        if t.folios:
            for folio in t.folios:
                if folio in where:
                    todo.add(folio)
            t.folios = []
        if t.tlb_dropped:
            todo.update(self._tlb_bad)
            t.tlb_dropped = False
        for folio in todo:
            if folio in where:
                self._decide(folio)
