"""The invariants, as plain predicates over a :class:`~nbmodel.system.System`, each with its reasoning.

Each returns None when it holds, or a short sentence naming the folio that breaks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .designs import DESIGN_CLASSES, DESIGNS, PRIVATE_NO_DIRECT_MAP
from .pagetable import MAPPED, VALID


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


def _valid_pages(k, folio) -> list[int]:
    leaf = k.dmap.pt.leaf
    return [p for p in range(folio.pfn, folio.pfn + folio.nr_pages) if leaf(p)[2] & (MAPPED | VALID) != MAPPED]


def check_unmapped_while_cached(sys, tlb: bool = True) -> str | None:
    """Between steps both halves are checked; inside a step (``tlb=False``) only the page tables, because the
    TLB half is promised only once the add has returned (a racing read through a stale entry is reported by
    :func:`racing_read_breaks`)."""
    k = sys.k
    for folio in _cached_folios(sys):
        valid = _valid_pages(k, folio)
        if valid:
            return f"{folio.name} is cached with a valid direct-map entry (pfn {valid[0]:#x})"
        holders = k.tlb_holders(folio.pfn, folio.nr_pages) if tlb else []
        if holders:
            return f"{folio.name} is cached but CPU {holders[0]} still holds a TLB entry for it"
    return None


def racing_read_breaks(sys, pfn: int, result: str) -> dict[str, str]:
    """Invariants broken *inside* a step, seen by another CPU at an interrupt point: the page-table half of
    (a), (b) and (c) as between steps, and (a) again if the racing read reached a cached folio's data."""
    # (d) is left out: v12 sets the bit only after the zap returns, so inside the step it lags by design.
    out = {key: reason for key, reason in broken(sys).items() if key not in ("a", "d")}
    reason = check_unmapped_while_cached(sys, tlb=False)
    if reason is None and result in ("ok", "stale"):
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


def check_private_bit_iff_zapped(sys) -> str | None:
    k = sys.k
    for folio in _cached_folios(sys, kind="guest_memfd"):
        bit = bool(folio.private & PRIVATE_NO_DIRECT_MAP)
        zapped = not _valid_pages(k, folio)
        if bit != zapped:
            state = "set" if bit else "clear"
            return f"{folio.name}: private bit {state} but direct map {'invalid' if zapped else 'valid'}"
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
