"""The page cache: ``struct address_space`` and the ``mm/filemap.c`` / ``mm/truncate.c`` paths a folio takes in
and out of it.

The functions are mainline's. Where the filemap-level design adds its hooks (Brendan Jackman's prototype,
``bjackman/linux`` e267797c: ``prep_add_unmapped_folio()`` before ``__filemap_add_folio()``,
``prep_remove_unmapped_folio()`` after the xarray delete and before ``filemap_free_folio()``), the model calls
the installed design (``kernel.design``, :mod:`nbmodel.designs`) if it hooks the mapping. Without hooks this is
the mainline page cache.

Modelling choices: no shadow entries, no memcg, no LRU; the xarray is a dict keyed by the folio's first index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import OOPS, Access, Errno, ModelInputError
from .folio import Folio
from .units import PAGE_SHIFT, PAGE_SIZE

AS_FLAGS = ("AS_NO_DIRECT_MAP", "AS_INACCESSIBLE", "AS_UNEVICTABLE")


@dataclass
class AddressSpaceOps:
    """``struct address_space_operations``, the two callbacks that matter here."""

    free_folio: Callable | None = None      # (kernel, mapping, folio) -> None
    migrate_folio: Callable | None = None   # (kernel, mapping, dst, src) -> int


class AddressSpace:
    """``struct address_space``: flags, ``i_pages`` (index -> folio) and ``nrpages``."""

    def __init__(self, name: str, flags=(), aops: AddressSpaceOps | None = None, size: int = 0, host=None):
        unknown = set(flags) - set(AS_FLAGS)
        if unknown:
            raise ModelInputError(f"unknown mapping flags {sorted(unknown)}; known: {', '.join(AS_FLAGS)}")
        self.name = name
        self.flags = set(flags)
        self.aops = aops or AddressSpaceOps()
        self.i_pages: dict[int, Folio] = {}
        self.nrpages = 0
        self.size = size  # i_size in bytes
        self.host = host  # mapping->host: the file (inode) that owns this page cache

    def no_direct_map(self) -> bool:
        """``mapping_no_direct_map()``."""
        return "AS_NO_DIRECT_MAP" in self.flags

    def inaccessible(self) -> bool:
        """``mapping_inaccessible()``."""
        return "AS_INACCESSIBLE" in self.flags

    def lookup(self, index: int) -> Folio | None:
        """``filemap_get_entry()`` without the reference: the folio covering ``index``, or None."""
        folio = self.i_pages.get(index)
        if folio is None:
            base = self.i_pages.get(index & ~511)
            if base is not None and base.order == 9:
                return base
        return folio

    def folios(self) -> list[Folio]:
        return [self.i_pages[i] for i in sorted(self.i_pages)]

    def folios_in(self, first: int, last: int | None) -> list[Folio]:
        """The folios overlapping indices ``[first, last)`` (``last`` None: to the end), in index order, as
        ``find_lock_entries()`` walks the xarray from ``first``. The work is the smaller of the range and the
        cache: a short range probes its own indices (and the 2M folio that may start before ``first``), so a
        one-page punch costs the same with 16 folios cached as with 16k."""
        pages = self.i_pages
        if last is not None and last - first <= len(pages):
            out = []
            base = pages.get(first & ~511)
            if base is not None and base.order and first & 511:
                out.append(base)
                first = (first & ~511) + base.nr_pages
            i = first
            while i < last:
                folio = pages.get(i)
                if folio is None:
                    i += 1
                    continue
                out.append(folio)
                i += folio.nr_pages
            return out
        keys = sorted(i for i, f in pages.items() if i + f.nr_pages > first and (last is None or i < last))
        return [pages[i] for i in keys]

    def snapshot(self) -> tuple:
        return (self.name, tuple(sorted(self.flags)), self.nrpages, self.size,
                tuple((i, f.key()) for i, f in sorted(self.i_pages.items())))

    def __repr__(self) -> str:
        return f"<AddressSpace {self.name} {sorted(self.flags)} nrpages={self.nrpages}>"


def _hooks(k, mapping):
    """The installed design, if it hooks this mapping's page cache (the filemap-level design, for
    ``AS_NO_DIRECT_MAP`` mappings)."""
    design = k.design
    return design if design is not None and design.hooks_mapping(mapping) else None


def _touch_slot(k, mapping: AddressSpace, index: int) -> None:
    """Note for the invariant check that this page-cache slot was stored or erased (see ``Kernel.touched``)."""
    t = k.touched
    if t is not None:
        t.slots.append((mapping, index))


def _conflict(mapping: AddressSpace, folio: Folio, index: int) -> bool:
    if folio.order == 0:
        return mapping.lookup(index) is not None
    return bool(mapping.folios_in(index, index + folio.nr_pages))


def filemap_add_folio(k, mapping: AddressSpace, folio: Folio, index: int) -> int:
    """``filemap_add_folio()``: lock the folio, insert it at ``index``; 0 with the folio locked and the cache
    holding ``nr`` references, or ``-EEXIST`` (index occupied) with folio and cache as they were. With the
    filemap-level design's hooks: zero and zap before the insert, restore on the error path."""
    if folio.mapping is not None or folio.refcount < 1 or "locked" in folio.flags:
        raise ModelInputError(f"filemap_add_folio: {folio!r} is in a cache, freed or locked already")
    if not isinstance(index, int) or index < 0 or index % folio.nr_pages:
        raise ModelInputError(f"filemap_add_folio: index {index!r} is not aligned to an order-{folio.order} folio")
    folio.flags.add("locked")  # __folio_set_locked()
    hooks = _hooks(k, mapping)
    if hooks is not None:
        ret = hooks.prep_add_unmapped_folio(k, mapping, folio)
        if ret:
            folio.flags.discard("locked")
            k.emit("error", what="filemap_add_folio", ret=Errno(-ret).name)
            return ret
    ret = __filemap_add_folio(k, mapping, folio, index)
    if ret:
        if hooks is not None:
            hooks.prep_remove_unmapped_folio(k, mapping, folio)  # err_restore
        folio.flags.discard("locked")  # __folio_clear_locked()
        return ret
    if hooks is not None:
        hooks.after_add(k, mapping, folio)
    return 0


def __filemap_add_folio(k, mapping: AddressSpace, folio: Folio, index: int) -> int:
    """``__filemap_add_folio()``: take ``nr`` references, store in the xarray or fail with -EEXIST."""
    if _conflict(mapping, folio, index):
        k.emit("error", what="__filemap_add_folio", index=index, ret=Errno.EEXIST.name)
        return -Errno.EEXIST
    folio.refcount += folio.nr_pages
    folio.mapping, folio.index = mapping, index
    mapping.i_pages[index] = folio
    mapping.nrpages += folio.nr_pages
    _touch_slot(k, mapping, index)
    if k.trace_enabled:  # the arguments are not even built with the trace off
        k.emit("insert", mapping=mapping.name, index=index, pfn=folio.pfn)
    k.point("after_insert", folio.pfn)
    return 0


def _page_cache_delete(k, folio: Folio) -> AddressSpace:
    mapping = folio.mapping
    del mapping.i_pages[folio.index]
    mapping.nrpages -= folio.nr_pages
    folio.mapping = None
    _touch_slot(k, mapping, folio.index)
    if k.trace_enabled:
        k.emit("delete", mapping=mapping.name, index=folio.index, pfn=folio.pfn)
    k.point("after_delete", folio.pfn)
    return mapping


def filemap_free_folio(k, mapping: AddressSpace, folio: Folio) -> None:
    """``filemap_free_folio()``: ``->free_folio`` if the mapping has one, then drop the cache's references."""
    if mapping.aops.free_folio is not None:
        if k.trace_enabled:
            k.emit("free_folio", mapping=mapping.name, pfn=folio.pfn)
        mapping.aops.free_folio(k, mapping, folio)
    k.folio_put(folio, folio.nr_pages)


def _check_removable(folio: Folio) -> None:
    if folio.mapping is None or folio.mapping.i_pages.get(folio.index) is not folio:
        raise ModelInputError(f"{folio!r} is not in a page cache")
    if "locked" not in folio.flags:
        raise ModelInputError(f"{folio!r} must be locked to leave the page cache (BUG_ON(!folio_test_locked))")


def filemap_remove_folio(k, folio: Folio) -> None:
    """``filemap_remove_folio()``: delete from the xarray under the locks, drop them, (hook: restore), then
    ``filemap_free_folio()``. The caller still holds its own reference and the folio lock."""
    _check_removable(folio)
    mapping = _page_cache_delete(k, folio)
    hooks = _hooks(k, mapping)
    if hooks is not None:
        hooks.prep_remove_unmapped_folio(k, mapping, folio)
    filemap_free_folio(k, mapping, folio)


def delete_from_page_cache_batch(k, mapping: AddressSpace, folios: list[Folio]) -> None:
    """``delete_from_page_cache_batch()``: unaccount and delete every folio under one lock hold, (hook: restore
    the batch), then ``filemap_free_folio()`` each."""
    seen = set()
    for f in folios:
        _check_removable(f)
        if f.mapping is not mapping or id(f) in seen:
            raise ModelInputError(f"{f!r} is not in {mapping.name} or is listed twice")
        seen.add(id(f))
    for f in folios:
        _page_cache_delete(k, f)
    hooks = _hooks(k, mapping)
    if hooks is not None:
        for f in folios:
            hooks.prep_remove_unmapped_folio(k, mapping, f)
    for f in folios:
        filemap_free_folio(k, mapping, f)


def unmap_mapping_folio(k, folio: Folio) -> None:
    """``unmap_mapping_folio()``: zap the userspace PTEs that map this folio."""
    if folio.test("user_mapped"):
        folio.flags.discard("user_mapped")


def truncate_inode_pages_range(k, mapping: AddressSpace, lstart: int, lend: int) -> None:
    """``truncate_inode_pages_range()``: remove every folio wholly inside bytes ``[lstart, lend]`` (``lend``
    inclusive; -1 means to the end) through ``delete_from_page_cache_batch()``; a page only partly covered is
    zeroed through the direct map (``folio_zero_range()``) unless the mapping is ``AS_INACCESSIBLE``."""
    if not isinstance(lstart, int) or not isinstance(lend, int) or lstart < 0 or (lend != -1 and lend < lstart):
        raise ModelInputError(f"bad truncate range {lstart!r}..{lend!r}")
    last = None if lend == -1 else lend
    whole, partial = [], []
    for folio in mapping.folios_in(lstart >> PAGE_SHIFT, None if last is None else (last >> PAGE_SHIFT) + 1):
        fstart = folio.index << PAGE_SHIFT
        fend = fstart + folio.size - 1
        if fend < lstart or (last is not None and fstart > last):
            continue
        if fstart >= lstart and (last is None or fend <= last):
            whole.append(folio)
        else:
            partial.append(folio)
    for folio in whole:
        folio.flags.add("locked")
        unmap_mapping_folio(k, folio)
        folio.refcount += 1  # find_lock_entries() holds a reference while the batch is processed
    if whole:
        delete_from_page_cache_batch(k, mapping, whole)
    for folio in whole:
        folio.flags.discard("locked")
        k.folio_put(folio)
    for folio in partial:
        if not mapping.inaccessible():
            # truncate_inode_partial_folio(): folio_zero_range() through the kernel mapping
            k.folio_zero(folio)


def filemap_grab_folio(k, mapping: AddressSpace, index: int, order: int = 0, name: str = "",
                       alloc=None) -> Folio | int:
    """``__filemap_get_folio(FGP_LOCK | FGP_CREAT)``: the locked folio covering ``index``, creating it if absent
    (an order-``order`` folio at the aligned index, named ``"{name}:{first index}"``). If the large allocation
    or its add fails for any reason, it falls back to one page, as the kernel's ``do { } while (order-- >
    min_order)`` loop retries every smaller order; the model has only orders 9 and 0, and puts the one page at
    ``index`` itself, the page its caller asked for (large guest_memfd folios are ahead of mainline).
    Returns the folio with an extra reference for the caller, or a negative errno. ``alloc(order, name)``
    allocates instead of ``folio_alloc()`` (the mapping's allocation policy: an unmapped source)."""
    if type(index) is not int or index < 0 or order not in (0, 9):
        raise ModelInputError(f"filemap_grab_folio: index {index!r} / order {order!r} out of range")
    folio = mapping.lookup(index)
    if folio is not None:
        k.folio_get(folio)
        folio.flags.add("locked")
        return folio
    while True:
        start = index - index % (1 << order)
        folio = (alloc or k.folio_alloc)(order, name=f"{name}:{start}")
        if isinstance(folio, int):
            ret = folio
        else:
            ret = filemap_add_folio(k, mapping, folio, start)
            if ret == 0:
                return folio
            k.folio_put(folio)
        if order == 0:
            return ret
        order = 0


def replace_page_cache_folio(k, old: Folio, new: Folio) -> None:
    """``replace_page_cache_folio()``: ``new`` takes ``old``'s slot in one xarray store, then ``->free_folio``
    runs on ``old`` and its reference is dropped. Mainline has no direct-map step here; a design hooks it.

    Mainline takes one page-cache reference on ``new`` (``folio_get()``) and drops one on ``old``
    (``folio_put()``): right for small folios only, and its one caller (FUSE) passes small folios. A large
    folio is refused as bad input rather than modelled with leaked references. The function returns void, so
    a hooked zap that fails can only ``WARN`` and go on: ``new`` then sits in the cache still mapped."""
    if old.mapping is None or not old.test("locked") or not new.test("locked") or new.mapping is not None:
        raise ModelInputError("replace_page_cache_folio needs a locked cached old folio and a locked new one")
    if old.order or new.order:
        raise ModelInputError("replace_page_cache_folio takes small folios only (one page-cache reference each)")
    mapping, index = old.mapping, old.index
    hooks = _hooks(k, mapping)
    if hooks is not None and hooks.hook_replace:
        ret = hooks.prep_add_unmapped_folio(k, mapping, new, zero=False)  # new already holds the data
        if ret:
            k.warn(f"replace_page_cache_folio: folio_zap_direct_map() failed ({Errno(-ret).name})")
    k.folio_get(new)
    new.mapping, new.index = mapping, index
    mapping.i_pages[index] = new
    old.mapping = None
    _touch_slot(k, mapping, index)
    k.emit("delete", mapping=mapping.name, index=index, pfn=old.pfn)
    k.emit("insert", mapping=mapping.name, index=index, pfn=new.pfn)
    if hooks is not None and hooks.hook_replace:
        hooks.prep_remove_unmapped_folio(k, mapping, old)
    if mapping.aops.free_folio is not None:
        k.emit("free_folio", mapping=mapping.name, pfn=old.pfn)
        mapping.aops.free_folio(k, mapping, old)
    k.folio_put(old)


def migrate_folio(k, src: Folio) -> Folio | int:
    """Migrate a cached folio (``migrate_pages()`` -> ``move_to_new_folio()`` -> ``->migrate_folio``).
    Allocates the destination, calls the mapping's ``migrate_folio``; on success the source is freed (no
    ``->free_folio``: migration bypasses it). Returns the new folio or a negative errno."""
    mapping = src.mapping
    if mapping is None:
        raise ModelInputError(f"{src!r} is not in a page cache")
    if mapping.aops.migrate_folio is None:
        return -Errno.EINVAL
    dst = k.folio_alloc(src.order, name=src.name)
    if isinstance(dst, int):
        return dst
    k.folio_get(src)  # isolate_lru_folio()/isolation reference
    src.flags.add("locked")
    dst.flags.add("locked")
    ret = mapping.aops.migrate_folio(k, mapping, dst, src)
    src.flags.discard("locked")
    dst.flags.discard("locked")
    k.folio_put(dst)  # the allocation reference; on success the cache's references keep dst
    k.folio_put(src)  # the isolation reference; on success src had no other and goes back to the allocator
    if ret:
        k.emit("error", what="migrate_folio", ret=Errno(-ret).name)
        return ret
    return dst


def filemap_migrate_folio(k, mapping: AddressSpace, dst: Folio, src: Folio) -> int:
    """``filemap_migrate_folio()`` -> ``__migrate_folio()``: copy the data through kernel mappings
    (``folio_mc_copy()``), move the xarray entry (``__folio_migrate_mapping()``), carry ``private`` over."""
    hooks = _hooks(k, mapping)
    hooked = hooks is not None and hooks.hook_migrate
    src_read = k.kernel_access(src.pfn, what="migrate-copy") if not hooked else Access.OK
    if not hooked:
        k.kernel_access(dst.pfn, write=True, what="migrate-copy")
    dst.content = src.content if src_read is not OOPS else "garbage"
    if hooked:
        ret = hooks.prep_add_unmapped_folio(k, mapping, dst, zero=False)
        if ret:
            return ret
        k.emit("mermap", what="copy", src=src.pfn, dst=dst.pfn)
    index = src.index
    dst.refcount += src.nr_pages
    src.refcount -= src.nr_pages
    dst.mapping, dst.index = mapping, index
    mapping.i_pages[index] = dst
    src.mapping = None
    _touch_slot(k, mapping, index)
    dst.private, src.private = src.private, 0
    dst.flags |= src.flags - {"locked"}  # folio_migrate_flags(): uptodate, dirty... move with the data
    k.emit("delete", mapping=mapping.name, index=index, pfn=src.pfn)
    k.emit("insert", mapping=mapping.name, index=index, pfn=dst.pfn)
    if hooked:
        hooks.prep_remove_unmapped_folio(k, mapping, src)
    return 0


__all__ = ["AS_FLAGS", "AddressSpace", "AddressSpaceOps", "PAGE_SIZE", "filemap_add_folio", "filemap_remove_folio",
           "delete_from_page_cache_batch", "truncate_inode_pages_range", "filemap_grab_folio",
           "replace_page_cache_folio", "migrate_folio", "filemap_migrate_folio", "filemap_free_folio"]
