"""Where the direct map is zapped and restored: one class per patch series, and the switches that break them.

Every decision a design makes — the order of zero, zap, insert, flush, delete, restore; the ``write()`` policy;
what ``->free_folio`` does; the per-folio private bit — is written here, once. The kernel paths
(:mod:`nbmodel.pagecache`, :mod:`nbmodel.guest_memfd`, :mod:`nbmodel.secretmem`) are mainline's and call the
installed design at the points where a patch series changes them (``k.design``):

==============================  ======================================================================================
hook                            kernel site
==============================  ======================================================================================
``hooks_mapping``               does the page cache run the two hooks below for this mapping?
``prep_add_unmapped_folio``     before ``__filemap_add_folio()`` (and the replace/migrate stores)
``prep_remove_unmapped_folio``  after the xarray delete, before ``filemap_free_folio()``
``gmem_get_folio``              ``kvm_gmem_get_folio()``: how a folio is created and added
``gmem_first_use``              ``kvm_gmem_get_pfn()`` / ``kvm_gmem_fault_user_mapping()`` once the contents are ready
``gmem_free_folio``             ``kvm_gmem_free_folio()`` (``->free_folio``)
``gmem_write_*``                ``write()`` on guest_memfd (the unmerged population series)
``gmem_populate_copy``          ``kvm_gmem_populate()``'s copy (``sev_gmem_post_populate()``)
``gmem_alloc_folio``            the allocation inside ``kvm_gmem_get_folio()`` (the mapped or the unmapped source)
``secretmem_get_folio``         ``secretmem_fault()`` between the page-cache lookup and the user mapping
``secretmem_free_folio``        ``secretmem_free_folio()`` before the zeroing
==============================  ======================================================================================

``PerFolio``   v12 (2026-04-10): guest_memfd zaps each folio at first use and keeps
               ``KVM_GMEM_FOLIO_NO_DIRECT_MAP`` in ``folio->private``; ``->free_folio`` restores.
``Filemap``    the agreed direction (seed mail, 2026-05-08; prototype ``bjackman/linux`` e267797c): the page
               cache zeroes and zaps a folio before it enters an ``AS_NO_DIRECT_MAP`` mapping and restores it
               when it leaves, by any path. No per-folio state.
``Secretmem``  mainline ``mm/secretmem.c``'s pattern: the owner zaps before the add, flushes after it, and
               restores in ``->free_folio``; applied to guest_memfd it is "do what secretmem does".

A new design (a v13, in-place conversion) is one more subclass of :class:`Design`.

**Memory that was never in the direct map** (Frank van der Linden's point, quoted in the seed mail; Message-ID
``CAPTztWb67XZvfcMVnbegDNNW0LJa9UsaTGx3M898xJUJrekk0w@mail.gmail.com``) is the option ``unmapped_source``: with it,
every folio of a guest_memfd ``NO_DIRECT_MAP`` file comes from :func:`~nbmodel.designs.alloc_unmapped_folio`, the
slow form of Brendan Jackman's ``ALLOC_UNMAPPED`` ("[PATCH RFC 00/19] mm: Add __GFP_UNMAPPED", 2026-02-25,
https://lkml.iu.edu/hypermail/linux/kernel/2602.3/03398.html; v2 Message-ID
``20260320-page_alloc-unmapped-v2-0-28bf1bd54f41@google.com``,
https://lore.kernel.org/all/20260320-page_alloc-unmapped-v2-0-28bf1bd54f41@google.com/): pages from pageblocks the
allocator has already taken out of the direct map, one zap and one flush per pageblock. Each design meets such a
folio with its own code: the filemap hooks tolerate it (zero through the mermap, no zap, no restore); v12's
private bit starts clear, so the first fault zeroes through an invalid direct map and oopses; secretmem's
``__GFP_ZERO`` allocation does the same at once.

**Sean Christopherson's first alternative** (Message-ID ``aeemS2wm38Cm4qAf@google.com``: "dedicated variants of
kmap_local_xxx()") is the option ``populate="mermap"``: ``kvm_gmem_populate()`` copies through a per-CPU mermap
window instead of ``kmap_local_page()``, which on 64-bit is the direct map. The what-if switch
``snp_no_direct_map`` lets an SNP VM create a ``NO_DIRECT_MAP`` guest_memfd, which mainline refuses
(``kvm_arch_gmem_supports_no_direct_map()``); without it nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from .errors import OOPS, Access, Errno, ModelInputError
from .folio import Folio
from .pagecache import filemap_add_folio, filemap_grab_folio
from .pagetable import VALID, prot_match
from .units import PAGE_SIZE, PAGES_2M

DESIGNS = ("per-folio", "filemap", "secretmem")

#: Break-it switches: name -> what it does. Each makes some scenario fail visibly.
SWITCHES = {
    "skip_flush": "flush_tlb_kernel_range() after a zap does nothing: other CPUs keep stale entries",
    "zero_after_insert": "filemap: do not zero before the add; guest_memfd zeroes through the direct map after it",
    "restore_4k": "allow 2M folios to be zapped whole, then restore them one 4K page at a time",
    "arm64_no_bbml2": "arm64 with block mappings but no BBML2: a partial-block change cannot split",
    "unhooked_migration": "filemap: migration and replace_page_cache_folio() bypass the hooks",
    "put_before_restore": "secretmem before 6f86d0534fdd: on a lost -EEXIST race the folio is freed, then restored",
}

#: Options that are not bugs: choices a reader can compare.
OPTIONS = {
    "write": ("refuse", "mermap"),   # filemap design: what write() does
    "large_folios": (False, True),   # 2M guest_memfd folios (ahead of mainline)
    "large_zap": (False, True),      # folio_zap_direct_map() takes 2M folios whole (ahead of v12)
    "batch_flush": (False, True),    # filemap: one flush per fallocate() instead of one per folio
    "unmapped_source": (False, True),  # guest_memfd NO_DIRECT_MAP folios come from already-unmapped pageblocks
    "populate": ("kmap_local", "mermap"),  # kvm_gmem_populate()'s copy: through the direct map, or a mermap window
    "snp_no_direct_map": (False, True),  # what-if: let an SNP VM have a NO_DIRECT_MAP guest_memfd (mainline refuses)
}

PRIVATE_NO_DIRECT_MAP = 1 << 0  # KVM_GMEM_FOLIO_NO_DIRECT_MAP, BIT(0) of folio->private (v12)
MERMAP_WINDOW_PAGES = 512  # MERMAP_CPU_REGION_SIZE = PAGE_SIZE << MAX_PAGECACHE_ORDER (draft), 4K pages


def mermap_map(k, pages: int) -> None:
    """``mermap_get()`` + ``mermap_put()`` for ``pages`` pages: a per-CPU local mapping, no direct-map access, no
    global flush; the window is flushed locally (``arch_mermap_flush_tlb()``) only when it wraps."""
    for _ in range(pages):
        k.counters["mermap_maps"] += 1
        if k.counters["mermap_maps"] % MERMAP_WINDOW_PAGES == 0:
            k.counters["mermap_local_flushes"] += 1


def mermap_clear_folio(k, folio) -> None:
    """``mermap_clear_folio()`` of the prototype's fast path (``bjackman/linux`` ``mm/filemap.c``,
    ``prep_add_unmapped_folio()`` under ``CONFIG_MERMAP``): zero a folio that has no direct map through the
    mermap. Event ``zero(... via=mermap)``."""
    mermap_map(k, folio.nr_pages)
    folio.content = "zero"
    k.counters["zeroings"] += 1
    k.emit("zero", pfn=folio.pfn, pages=folio.nr_pages, via="mermap")


def alloc_unmapped_folio(k, order: int, name: str = "") -> Folio | int:
    """The unmapped page source: a folio whose direct-map entries are already invalid and flushed, or -ENOMEM.

    It is the slow form of Brendan Jackman's ``ALLOC_UNMAPPED`` (formerly ``__GFP_UNMAPPED``; RFC 10/19 "mm: add
    definitions for allocating unmapped pages", 2026-02-25, https://lkml.iu.edu/hypermail/linux/kernel/2602.3/03409.html:
    "allocates pages from pageblocks that have the new flag, or unmaps pages if no existing ones are already
    available"): when the pool is empty, a whole free 2M pageblock is taken from the buddy allocator
    (:meth:`nbmodel.physmem.PageAllocator.alloc_unmapped`), zapped with one ``set_direct_map_valid_noflush()``
    and flushed with one ``flush_tlb_kernel_range()``, as the series' pageblock flip does; then its pages are
    handed out one by one with no further direct-map work. Event ``alloc(pfn=.. order=0 unmapped=True)``; counter
    ``unmapped_pageblocks``. Unlike Mike Rapoport's 2023 ``__GFP_UNMAPPED``
    (https://lore.kernel.org/lkml/20230308094106.227365-1-rppt@kernel.org/, a cache beside the allocator), the
    pool here is the allocator's own, as in Jackman's series. Freed pages go back to the pool, still unmapped."""
    pfn, block = k.alloc.alloc_unmapped(order)
    if pfn < 0:
        k.emit("error", what="alloc_unmapped", ret=Errno.ENOMEM.name)
        return pfn
    if block is not None:
        addr = k.page_address(block)
        ret = k.set_direct_map_valid_noflush(addr, PAGES_2M, False)
        if ret:  # the split for the zap failed (-ENOMEM): the pageblock goes back as it was
            k.set_direct_map_valid_noflush(addr, PAGES_2M, True)
            k.alloc.unmapped_block_failed(block)
            return ret
        k.flush_tlb_kernel_range(addr, addr + PAGES_2M * PAGE_SIZE)
        k.counters["unmapped_pageblocks"] += 1
    folio = Folio(pfn, order, name=name)
    k.emit("alloc", pfn=pfn, order=order, unmapped=True)
    return folio


def unmapped_returned(k, pfn: int, order: int) -> None:
    """The unmapped source takes a freed folio back (``__free_pages()`` onto the unmapped free list). It expects
    the folio still unmapped: ``unmapped_pool_frees`` counts those; a folio that comes back with a valid
    direct-map entry (a remove path restored it) counts in ``freed_mapped_to_unmapped_pool``, which invariant
    (b) reports."""
    if k.dmap.pt.first_where(pfn, 1 << order, prot_match(VALID, VALID)) is not None:
        k.counters["freed_mapped_to_unmapped_pool"] += 1
    else:
        k.counters["unmapped_pool_frees"] += 1


class Design:
    """The hook points a patch series can change; this base class is mainline (no direct-map removal)."""

    name = "mainline"
    private_bit = False         # does the design record the zap in folio->private (invariant (d))?
    hooks_page_cache = False    # does the page cache zap and restore for AS_NO_DIRECT_MAP mappings?

    def __init__(self, config: Config):
        self.config = config
        self.switches = config.switches
        self.restore_granule = 1 if "restore_4k" in config.switches else None

    # -- mm/filemap.c ------------------------------------------------------------------------------------------
    def hooks_mapping(self, mapping) -> bool:
        return False

    def prep_add_unmapped_folio(self, k, mapping, folio, zero: bool = True) -> int:
        return 0

    def prep_remove_unmapped_folio(self, k, mapping, folio) -> None:
        pass

    def after_add(self, k, mapping, folio) -> None:
        pass

    hook_replace = hook_migrate = False

    # -- virt/kvm/guest_memfd.c --------------------------------------------------------------------------------
    def gmem_get_folio(self, k, f, index: int, order: int):
        """``kvm_gmem_get_folio()``: ``__filemap_get_folio(FGP_LOCK | FGP_CREAT)``. With the unmapped source the
        allocation inside it is :meth:`~nbmodel.designs.Design.gmem_alloc_folio` (``filemap.c`` setting
        ``ALLOC_UNMAPPED`` for an ``AS_NO_DIRECT_MAP`` mapping, as Jackman's series plans); the rest is
        ``filemap_grab_folio()``."""
        if not self.unmapped_source_for(k, f):
            return filemap_grab_folio(k, f.mapping, index, order=order, name=f.name)
        return filemap_grab_folio(k, f.mapping, index, order=order, name=f.name,
                                  alloc=lambda order, name: self.gmem_alloc_folio(k, f, order, name=name))

    def unmapped_source_for(self, k, f) -> bool:
        """Do this file's folios come from the unmapped source? Only with the option, for a ``NO_DIRECT_MAP``
        guest_memfd, on a machine that can change its direct map (``can_set_direct_map()``, which gates the
        series' pageblock flip)."""
        return self.config.unmapped_source and f.no_direct_map() and k.can_set_direct_map()

    def gmem_alloc_folio(self, k, f, order: int, zero: bool = False, name: str = ""):
        """The allocation inside ``kvm_gmem_get_folio()``: ``folio_alloc()`` (``zero`` is ``__GFP_ZERO``), or a
        folio of the unmapped source (:func:`~nbmodel.designs.alloc_unmapped_folio`). ``__GFP_ZERO`` on an unmapped
        folio zeroes it through the direct map (``post_alloc_hook()`` -> ``clear_highpage()``): that oopses, and
        :data:`~nbmodel.errors.OOPS` is returned (Jackman's v4 makes ``ALLOC_UNMAPPED`` and ``__GFP_ZERO``
        incompatible)."""
        if not self.unmapped_source_for(k, f):
            return k.folio_alloc(order, zero=zero, name=name)
        folio = alloc_unmapped_folio(k, order, name=name)
        if not isinstance(folio, int) and zero and k.folio_zero(folio) is OOPS:
            k.folio_put(folio)  # the model frees it (back to the pool, still unmapped); the kernel task died
            return OOPS
        return folio

    def gmem_populate_copy(self, k, f, folio, pfn: int) -> Access:
        """``kvm_gmem_populate()``'s copy of the launch image into ``pfn`` of ``folio``
        (``sev_gmem_post_populate()``: ``kmap_local_page()`` + ``memcpy``; on 64-bit without HIGHMEM
        ``kmap_local_page()`` is ``page_address()``, the direct map). With ``populate="mermap"``, Sean
        Christopherson's "dedicated variants of kmap_local_xxx()": a mermap window, event
        ``mermap(what=populate ...)``. Returns the copy's :class:`~nbmodel.errors.Access`."""
        if self.config.populate == "mermap":
            mermap_map(k, 1)
            k.emit("mermap", what="populate", pfn=pfn, pages=1)
            return Access.OK
        return k.kernel_access(pfn, write=True, what="populate")

    def gmem_first_use(self, k, f, folio) -> int:
        """After the folio's contents are prepared, before it is handed to the guest or the VMM."""
        return 0

    def gmem_free_folio(self, k, f, folio) -> None:
        """``kvm_gmem_free_folio()`` after ``kvm_arch_gmem_invalidate()``."""

    def gmem_fallocate_begin(self, k, f) -> None:
        pass

    def gmem_fallocate_end(self, k, f) -> None:
        pass

    def gmem_write_refused(self, k, f) -> int:
        """``write()`` refused as a whole: 0 or a negative errno."""
        return 0

    def gmem_write_folio_refused(self, k, f, folio) -> int:
        """``write()`` refused for this folio: 0 or a negative errno."""
        return 0

    def gmem_copy_in(self, k, f, folio) -> None:
        """``write()`` copies the user's data into the folio: through the direct map, as mainline does."""
        k.kernel_access_range(folio.pfn, folio.nr_pages, write=True, what="write")

    # -- mm/secretmem.c ----------------------------------------------------------------------------------------
    def secretmem_get_folio(self, k, f, index: int, race=None):
        """Between ``secretmem_fault()``'s lookup and the user mapping: the locked folio with a reference for
        the caller, or a negative errno (-EEXIST means ``goto retry``). ``race`` runs another CPU's fault of the
        same index at the racy point."""
        raise NotImplementedError

    def secretmem_free_folio(self, k, folio) -> None:
        """``secretmem_free_folio()`` before ``folio_zero_segment()``."""


class OwnerZaps(Design):
    """The owner of the memory zaps before ``filemap_add_folio()`` and restores in ``->free_folio``, as
    ``mm/secretmem.c`` does. Subclasses choose the zap, the restore and whether a flush follows the add."""

    flush_after_add = False

    def zap(self, k, folio) -> int:
        raise NotImplementedError

    def restore(self, k, folio) -> None:
        raise NotImplementedError

    def secretmem_get_folio(self, k, f, index, race=None):
        folio = k.folio_alloc(0, zero=True, name=f"{f.name}:{index}")  # __GFP_ZERO
        if isinstance(folio, int):
            return folio
        ret = self.zap(k, folio)
        if ret:
            k.folio_put(folio)
            return ret
        folio.flags.add("uptodate")
        if race is not None:
            race()
        ret = filemap_add_folio(k, f.mapping, folio, index)
        if ret:
            put_first = "put_before_restore" in self.switches
            if put_first:
                k.folio_put(folio)  # before 6f86d0534fdd: freed while still unmapped
            self.restore(k, folio)
            if not put_first:
                k.folio_put(folio)
            return ret  # -EEXIST: goto retry
        if self.flush_after_add:
            addr = k.page_address(folio.pfn)
            k.flush_tlb_kernel_range(addr, addr + folio.size)
        return folio

    def secretmem_free_folio(self, k, folio) -> None:
        self.restore(k, folio)


class Secretmem(OwnerZaps):
    """Mainline ``mm/secretmem.c``: ``set_direct_map_invalid_noflush()``, ``filemap_add_folio()``, then
    ``flush_tlb_kernel_range()``; ``->free_folio`` restores with ``set_direct_map_default_noflush()``. Applied to
    guest_memfd: ``kvm_gmem_get_folio()`` allocates zeroed, zaps, adds, flushes; ``->free_folio`` restores."""

    name = "secretmem"
    flush_after_add = True

    def zap(self, k, folio) -> int:
        ret = k.set_direct_map_invalid_noflush(k.page_address(folio.pfn))
        if ret == 0:
            k.counters["zaps"] += 1
        return ret

    def restore(self, k, folio) -> None:
        k.set_direct_map_default_noflush(k.page_address(folio.pfn))
        k.counters["restores"] += 1

    def secretmem_free_folio(self, k, folio) -> None:
        self.restore(k, folio)
        k.point("after_restore", folio.pfn)

    def gmem_get_folio(self, k, f, index, order):
        if not f.no_direct_map() or f.mapping.lookup(index) is not None:
            return super().gmem_get_folio(k, f, index, order)
        got = self._gmem_add(k, f, index - index % (1 << order), order)
        if isinstance(got, int) and order:
            got = self._gmem_add(k, f, index, 0)  # as __filemap_get_folio() retries a smaller order
        return got

    def _gmem_add(self, k, f, base, order):
        folio = self.gmem_alloc_folio(k, f, order, zero=True, name=f"{f.name}:{base}")  # __GFP_ZERO, as secretmem
        if isinstance(folio, int) or folio is OOPS:
            return folio
        folio.flags.add("zeroed_at_add")
        addr = k.page_address(folio.pfn)
        ret = k.set_direct_map_valid_noflush(addr, folio.nr_pages, False)
        if ret:
            k.folio_put(folio)
            return ret
        k.counters["zaps"] += 1
        folio.private |= PRIVATE_NO_DIRECT_MAP
        ret = filemap_add_folio(k, f.mapping, folio, base)
        if ret:
            k.set_direct_map_valid_noflush(addr, folio.nr_pages, True)
            k.counters["restores"] += 1
            k.folio_put(folio)
            return ret
        k.flush_tlb_kernel_range(addr, addr + folio.size)
        return folio

    def gmem_free_folio(self, k, f, folio) -> None:
        if folio.private & PRIVATE_NO_DIRECT_MAP:
            k.folio_restore_direct_map(folio, granule_pages=self.restore_granule)
            folio.private &= ~PRIVATE_NO_DIRECT_MAP
            k.folio_zero(folio)

    def gmem_write_refused(self, k, f) -> int:
        return -Errno.EINVAL if f.no_direct_map() else 0  # secretmem has no write()


class PerFolio(OwnerZaps):
    """v12: ``kvm_gmem_folio_zap_direct_map()`` at first use sets ``KVM_GMEM_FOLIO_NO_DIRECT_MAP``;
    ``kvm_gmem_free_folio()`` restores when it is set. secretmem (v12 03/16) uses ``folio_zap_direct_map()``
    (which flushes before the add) and ``folio_restore_direct_map()``."""

    name = "per-folio"
    private_bit = True

    def zap(self, k, folio) -> int:
        return k.folio_zap_direct_map(folio)

    def restore(self, k, folio) -> None:
        k.folio_restore_direct_map(folio)

    def gmem_first_use(self, k, f, folio) -> int:
        """``kvm_gmem_folio_zap_direct_map()``: idempotent; sets the private bit on success."""
        if not f.no_direct_map() or folio.private & PRIVATE_NO_DIRECT_MAP:
            return 0
        ret = k.folio_zap_direct_map(folio)
        if ret == 0:
            folio.private |= PRIVATE_NO_DIRECT_MAP
        return ret

    def gmem_free_folio(self, k, f, folio) -> None:
        if folio.private & PRIVATE_NO_DIRECT_MAP:
            k.folio_restore_direct_map(folio, granule_pages=self.restore_granule)
            folio.private &= ~PRIVATE_NO_DIRECT_MAP

    def gmem_write_folio_refused(self, k, f, folio) -> int:
        """"userspace can write() exactly once": a folio already zapped is refused (-EPERM, the model's
        choice of errno)."""
        return -Errno.EPERM if folio.private & PRIVATE_NO_DIRECT_MAP else 0


class Filemap(Design):
    """``prep_add_unmapped_folio()`` / ``prep_remove_unmapped_folio()`` of the prototype's slow path
    (``CONFIG_ARCH_HAS_SET_DIRECT_MAP``): zero, then ``folio_zap_direct_map()`` (which flushes) before the
    insert; ``folio_restore_direct_map()`` then zero after the delete. guest_memfd and secretmem only grab the
    folio; ``secretmem_free_folio()`` only zeroes."""

    name = "filemap"
    hooks_page_cache = True

    def __init__(self, config: Config):
        super().__init__(config)
        self.zero_before_add = "zero_after_insert" not in config.switches
        self.hook_replace = self.hook_migrate = "unhooked_migration" not in config.switches
        self.batch = None  # PFNs whose flush a batched fallocate() deferred

    def hooks_mapping(self, mapping) -> bool:
        return mapping.no_direct_map()

    def prep_add_unmapped_folio(self, k, mapping, folio, zero: bool = True) -> int:
        if self.config.unmapped_source and k.alloc.in_unmapped_pool(folio.pfn):
            # The prototype's fast path (CONFIG_MERMAP): "pages are already unmapped, but need zeroing". No zap,
            # no flush, no split: the pageblock was zapped and flushed once when the unmapped source took it.
            if zero and self.zero_before_add:
                mermap_clear_folio(k, folio)
            return 0
        if zero and self.zero_before_add:
            k.folio_zero(folio)
        if self.batch is not None:
            return self._zap_deferred(k, folio)
        return k.folio_zap_direct_map(folio)

    def _zap_deferred(self, k, folio) -> int:
        if folio.order and not k.allow_large_zap:
            return -Errno.EINVAL
        ret = k.set_direct_map_valid_noflush(k.page_address(folio.pfn), folio.nr_pages, False)
        if ret == 0:
            k.counters["zaps"] += 1
            self.batch.append((folio.pfn, folio.nr_pages))
        return ret

    def prep_remove_unmapped_folio(self, k, mapping, folio) -> None:
        if self.config.unmapped_source and k.alloc.in_unmapped_pool(folio.pfn):
            return  # fast path: "Folio is not going back in the direct map"; it returns to the unmapped source
        k.folio_restore_direct_map(folio, granule_pages=self.restore_granule)
        k.folio_zero(folio)

    def after_add(self, k, mapping, folio) -> None:
        if self.zero_before_add:
            folio.flags.add("zeroed_at_add")

    def gmem_fallocate_begin(self, k, f) -> None:
        if self.config.batch_flush and f.no_direct_map():
            self.batch = []

    def gmem_fallocate_end(self, k, f) -> None:
        """End a batched fallocate(): the deferred zaps hit scattered PFNs, so one ``flush_tlb_all()``."""
        batch, self.batch = self.batch, None
        if batch and not k.skip_flush:
            k.flush_tlb_all(reason="batched zap")

    def gmem_write_refused(self, k, f) -> int:
        if f.no_direct_map() and self.config.write == "refuse":
            return -Errno.EOPNOTSUPP
        return 0

    def gmem_copy_in(self, k, f, folio) -> None:
        if not f.no_direct_map():
            return super().gmem_copy_in(k, f, folio)
        mermap_map(k, folio.nr_pages)
        k.emit("mermap", what="copy", pfn=folio.pfn, pages=folio.nr_pages)
        return None

    def secretmem_get_folio(self, k, f, index, race=None):
        if race is None:
            return filemap_grab_folio(k, f.mapping, index, name=f.name)
        folio = k.folio_alloc(0, name=f"{f.name}:{index}")
        if isinstance(folio, int):
            return folio
        race()
        ret = filemap_add_folio(k, f.mapping, folio, index)  # -EEXIST: the hooks restored what they zapped
        k.folio_put(folio)
        return ret if ret else -Errno.EEXIST


DESIGN_CLASSES = {cls.name: cls for cls in (PerFolio, Filemap, Secretmem)}


@dataclass(frozen=True)
class Config:
    """A design with its switches and options, validated."""

    design: str = "filemap"
    switches: frozenset = frozenset()
    write: str = "refuse"
    large_folios: bool = False
    batch_flush: bool = False
    large_zap: bool = False
    unmapped_source: bool = False
    populate: str = "kmap_local"
    snp_no_direct_map: bool = False

    @classmethod
    def make(cls, design="filemap", switches=(), write="refuse", large_folios=False, batch_flush=False,
             large_zap=False, unmapped_source=False, populate="kmap_local", snp_no_direct_map=False):
        if design not in DESIGNS:
            raise ModelInputError(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}")
        if isinstance(switches, str | bytes) or not all(isinstance(s, str) for s in switches):
            raise ModelInputError(f"switches must be a list of names, not {switches!r}")
        unknown = set(switches) - set(SWITCHES)
        if unknown:
            raise ModelInputError(f"unknown switches {sorted(unknown)}; known: {', '.join(SWITCHES)}")
        for name, value in (("write", write), ("populate", populate)):
            if not isinstance(value, str) or value not in OPTIONS[name]:
                raise ModelInputError(f"{name} must be one of {OPTIONS[name]}, not {value!r}"[:160])
        for name, value in (("large_folios", large_folios), ("batch_flush", batch_flush), ("large_zap", large_zap),
                            ("unmapped_source", unmapped_source), ("snp_no_direct_map", snp_no_direct_map)):
            if not isinstance(value, bool):
                raise ModelInputError(f"{name} must be True or False, not {value!r}")
        return cls(design, frozenset(switches), write, bool(large_folios or "restore_4k" in switches),
                   bool(batch_flush), bool(large_zap or "restore_4k" in switches), unmapped_source, populate,
                   snp_no_direct_map)

    def label(self) -> str:
        extra = sorted(self.switches)
        if self.design == "filemap" and self.write != "refuse":
            extra.append(f"write={self.write}")
        if self.large_folios and "restore_4k" not in self.switches:
            extra.append("large_folios")
        if self.batch_flush:
            extra.append("batch_flush")
        if self.large_zap and "restore_4k" not in self.switches:
            extra.append("large_zap")
        if self.unmapped_source:
            extra.append("unmapped_source")
        if self.populate != "kmap_local":
            extra.append(f"populate={self.populate}")
        if self.snp_no_direct_map:
            extra.append("snp_no_direct_map")
        return self.design + (f" [{', '.join(extra)}]" if extra else "")

    def build(self) -> Design:
        """A fresh instance of this configuration's design (it may hold per-kernel state)."""
        return DESIGN_CLASSES[self.design](self)

    def install(self, k) -> None:
        """Configure the kernel for this design: its hooks and break-it switches."""
        k.skip_flush = "skip_flush" in self.switches
        k.allow_large_zap = self.large_zap
        k.config = self
        k.design = self.build()
        if self.unmapped_source:
            k.alloc.unmapped_free_hook = partial(unmapped_returned, k)
