"""The modelled kernel: memory, allocator, direct map, TLBs, counters and the event trace in one object.

Methods named after kernel functions stand for them and say so. Each returns what the kernel returns (0, a
value, or a negative errno) and appends the events the kernel's work would produce to :attr:`Kernel.trace`.
"""

from __future__ import annotations

from .arm64 import Arm64LinearMap
from .counters import Counters
from .errors import Access, Errno, ModelInputError, errno_name
from .folio import Folio
from .pagetable import CONT, DEFAULT, MAPPED, RW, VALID, prot_match, translate_table
from .physmem import MemoryMap, PageAllocator
from .tlb import SPANS_BY_ARCH, TLB, arm64_flush_limit_excess, arm64_tlbi_ops
from .trace import Trace
from .units import PAGE_SHIFT, PAGE_SIZE
from .x86 import X86DirectMap

ARCHES = ("x86", "arm64")
_RESTORE, _ZAP = translate_table(VALID | RW, 0), translate_table(0, VALID | RW)  # set/clear VALID|RW
_OK, _STALE, _OOPS = Access.OK, Access.STALE, Access.OOPS  # module globals: the access path is hot
_ZAPPED = prot_match(MAPPED | VALID, MAPPED)        # mapped, not valid
_VALID, _NOT_VALID = prot_match(VALID, VALID), prot_match(VALID, 0)
_NOT_PLAIN = prot_match(VALID | CONT, VALID, equal=False)  # not (valid and outside a contiguous run)


class Touched:
    """What the kernel's primitives changed since the last invariant check, for checking the invariants
    incrementally (:class:`nbmodel.invariants.IncrementalCheck`). Kept only while someone reads it
    (``Kernel.touched`` is None otherwise), and cleared by its reader after each step.

    ``pages``: ``(first_pfn, npages)`` ranges where direct-map bits were set or cleared (or a change was asked
    for), or that a TLB entry filled from an arm64 contiguous run covers; ``slots``: ``(mapping, index)``
    page-cache slots stored or erased; ``folios``: folios whose references were taken or dropped (code that
    changes a folio holds one); ``tlb_dropped``: some TLB entry was removed (a ranged flush,
    ``flush_tlb_all()``, or a fill replacing an entry of another span).

    Not noted, because no invariant's verdict can follow from them alone: a TLB fill that covers just the leaf
    it came through (a CPU fills only through a valid leaf, and a folio with a valid page breaks (a) whatever
    its TLB holds, for that reason; an entry from a contiguous run also covers the run's other leaves, which
    may be invalid, so that one is noted), and page-table splits and collapses (they copy each leaf's MAPPED
    and VALID bits to the entries that replace it, which is all the invariants read; the ``flush_tlb_all()``
    they do is noted)."""

    __slots__ = ("pages", "slots", "folios", "tlb_dropped")

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.pages: list[tuple[int, int]] = []
        self.slots: list[tuple] = []
        self.folios: list[Folio] = []
        self.tlb_dropped = False


class Kernel:
    """One machine: ``arch`` is ``"x86"`` or ``"arm64"``; ``mode`` is the arm64 mode or x86 ``"4-level"``,
    ``"5-level"``, ``"nogbpages"``; ``memory`` is a size (a PC-like map) or a :class:`MemoryMap`.

    ``tlbirange`` (arm64 only) is whether the CPUs have ``FEAT_TLBIRANGE`` (``system_supports_tlb_range()``),
    which decides how ``flush_tlb_kernel_range()`` flushes since v6.13 (see :meth:`flush_tlb_kernel_range`).
    ``None`` means the arch's default: on arm64 **True**, as a current Neoverse server part has it: Neoverse
    V2 (Arm v9.0-A; NVIDIA Grace, AWS Graviton4) and N2 implement the TLB range instructions, which are
    mandatory from Arm v8.4-A (only the older v8.2 Neoverse N1, e.g. Graviton2 and Ampere Altra, lacks them).
    Pass ``False`` for such a part. On x86 it is ``None`` (x86 has no such feature; ``True`` is refused)."""

    def __init__(self, arch: str = "x86", mode: str | None = None, memory="4G", cpus: int = 2, seed: int = 0,
                 reserved_pages: int = 64, trace: bool = True, fwb: bool = True, tlbirange: bool | None = None):
        if arch not in ARCHES:
            raise ModelInputError(f"unknown arch {arch!r}; choose x86 or arm64")
        if tlbirange is not None and not isinstance(tlbirange, bool):
            raise ModelInputError(f"tlbirange must be True, False or None (the arch default), not {tlbirange!r}")
        if tlbirange and arch != "arm64":
            raise ModelInputError("tlbirange (FEAT_TLBIRANGE) is an arm64 CPU feature; x86 has none")
        if not isinstance(cpus, int) or not 1 <= cpus <= 64:
            raise ModelInputError(f"cpus must be an integer from 1 to 64, not {cpus!r}")
        memmap = memory if isinstance(memory, MemoryMap) else MemoryMap.pc(memory)
        self.arch = arch
        self.tlbirange = (arch == "arm64") if tlbirange is None else tlbirange
        self.ncpus = cpus
        self.memmap = memmap
        self.counters = Counters()
        self.trace_enabled = trace
        self.trace = Trace()
        self.system_running = False
        self.current_cpu = 0
        self.tlbs = [TLB(c, SPANS_BY_ARCH[arch]) for c in range(cpus)]
        self.pgtable_pfns: list[int] = []
        self.fail_pgtable_allocs = 0  # fault injection: the next N page-table allocations fail
        self.skip_flush = False       # break-it: flush_tlb_kernel_range() does nothing
        self.allow_large_zap = False  # ahead of the kernel: folio_zap_direct_map() accepts large folios
        self.design = None            # the installed design (nbmodel.designs): its hooks run in mm and KVM paths
        self.config = None            # ... and its configuration (designs.Config)
        self.fwb = fwb                # arm64 ARM64_HAS_STAGE2_FWB (a CPU capability)
        self.interrupt = None         # callable(kernel, point, pfn): another CPU runs at a named point
        self.touched: Touched | None = None  # what the primitives changed, while an invariant checker reads it
        if arch == "x86":
            levels, gbpages = 4, True
            for word in (mode or "4-level").replace(",", " ").split():
                if word in ("4-level", "5-level"):
                    levels = int(word[0])
                elif word == "nogbpages":
                    gbpages = False
                else:
                    raise ModelInputError(f"unknown x86 mode {word!r}; use 4-level, 5-level, nogbpages")
            self.dmap = X86DirectMap(self, memmap, levels=levels, gbpages=gbpages)
        else:
            self.dmap = Arm64LinearMap(self, memmap, mode=mode or "rodata-full")
        self.alloc = PageAllocator(memmap, seed=seed, reserved=reserved_pages)
        self.system_running = True  # boot is over: from here splits count in /proc/vmstat
        # Fixed for the machine's lifetime (boot-time choices), read on every folio: looked up once.
        self._can_set = self.dmap.can_set_direct_map()
        self._ceiling = self.dmap.flush_ceiling()
        self._apply = self.dmap.apply_range if arch == "x86" else self.dmap.update_range_prot

    # -- events ---------------------------------------------------------------------------------------------
    def emit(self, kind: str, **args) -> None:
        if self.trace_enabled:
            # The model's hottest line: nothing is built here (Trace makes the Event when it is read).
            trace = self.trace
            trace.kinds.append(kind)
            trace.args.append(args)

    def point(self, name: str, pfn: int) -> None:
        """A place where another CPU may run in between (the explorer and race scenarios use it)."""
        if self.interrupt is not None:
            hook, self.interrupt = self.interrupt, None
            try:
                hook(self, name, pfn)
            finally:
                self.interrupt = hook

    def warn(self, what: str) -> None:
        """``WARN_ON_ONCE()`` fired: counted and traced, execution goes on as in the kernel."""
        self.counters["warns"] += 1
        self.emit("warn", what=what)

    # -- addresses --------------------------------------------------------------------------------------------
    def page_address(self, pfn: int) -> int:
        """``page_address()`` / ``pfn_to_kaddr()``: the direct-map virtual address of ``pfn``."""
        self._check_pfn(pfn)
        return self.dmap.page_offset() + (pfn << PAGE_SHIFT)

    def virt_to_pfn(self, addr: int) -> int:
        """``virt_to_pfn()`` for a direct-map address; anything else is bad input."""
        if type(addr) is not int:  # checked before any arithmetic: a str or float is bad input, not a TypeError
            raise ModelInputError(f"{addr!r} is not a page-aligned direct-map address"[:120])
        off = addr - self.dmap.page_offset()
        if off < 0 or off % PAGE_SIZE or (off >> PAGE_SHIFT) >= self.memmap.end_pfn:
            raise ModelInputError(f"{addr!r} is not a page-aligned direct-map address")
        return off >> PAGE_SHIFT

    def _check_pfn(self, pfn, npages: int = 1) -> None:
        if type(pfn) is not int or type(npages) is not int:  # bool is an int subclass: refused here too
            raise ModelInputError(f"PFN and page count must be integers, not {pfn!r}, {npages!r}")
        if npages < 1 or pfn < 0 or pfn + npages > self.memmap.end_pfn:
            raise ModelInputError(f"PFN range {pfn:#x}+{npages} is outside memory (end {self.memmap.end_pfn:#x})")

    # -- page allocator -------------------------------------------------------------------------------------
    def alloc_pgtable(self) -> int:
        """``pagetable_alloc(GFP_KERNEL, 0)`` for a split; a PFN or ``-ENOMEM``."""
        if self.fail_pgtable_allocs:
            self.fail_pgtable_allocs -= 1
            self.emit("error", what="pagetable_alloc", ret=Errno.ENOMEM.name)
            return -Errno.ENOMEM
        pfn = self.alloc.alloc(0)
        if pfn < 0:
            self.emit("error", what="pagetable_alloc", ret=Errno.ENOMEM.name)
            return pfn
        self.pgtable_pfns.append(pfn)
        self.counters["pgtable_pages"] += 1
        return pfn

    def free_pgtable(self) -> None:
        """Free a page-table page released by a collapse."""
        self.alloc.free(self.pgtable_pfns.pop(), 0)
        self.counters["pgtable_pages"] -= 1

    def folio_alloc(self, order: int = 0, zero: bool = False, name: str = "") -> Folio | int:
        """``folio_alloc(gfp, order)``; ``zero`` is ``__GFP_ZERO`` (the allocator clears the pages through the
        direct map before handing them out). Returns a Folio or ``-ENOMEM``. Bad arguments raise
        ModelInputError before anything is allocated."""
        if type(order) is not int or order not in (0, 9):
            raise ModelInputError(f"the model allocates order 0 or 9 folios, not order {order!r}"[:120])
        if not isinstance(zero, bool) or not isinstance(name, str):
            raise ModelInputError(f"folio_alloc: zero must be True or False and name a string, not {zero!r}, "
                                  f"{name!r}"[:120])
        pfn = self.alloc.alloc(order)
        if pfn < 0:
            return pfn
        folio = Folio(pfn, order, name=name)
        if self.trace_enabled:  # the arguments are not even built with the trace off
            self.emit("alloc", pfn=pfn, order=order)
        if zero:
            self.folio_zero(folio)
        return folio

    def folio_get(self, folio: Folio) -> None:
        """``folio_get()``."""
        if folio.refcount <= 0:
            raise ModelInputError(f"folio_get on a freed folio {folio!r}")
        folio.refcount += 1
        if self.touched is not None:
            self.touched.folios.append(folio)

    def folio_put(self, folio: Folio, refs: int = 1) -> None:
        """``folio_put_refs()``: at zero the folio goes back to the page allocator. A folio whose direct map
        is still invalid is freed anyway, as the kernel would; that is what invariant (b) watches for."""
        if refs < 1 or folio.refcount < refs:
            raise ModelInputError(f"folio_put({refs}) on {folio!r}: refcount would go below zero")
        folio.refcount -= refs
        if self.touched is not None:
            self.touched.folios.append(folio)
        if folio.refcount:
            return
        invalid = self.first_invalid(folio.pfn, folio.nr_pages)
        if invalid is not None:
            self.counters["freed_unmapped"] += 1
        self.alloc.free(folio.pfn, folio.order)
        if self.trace_enabled:
            self.emit("free", pfn=folio.pfn, order=folio.order, unmapped=invalid is not None)

    # -- direct map -----------------------------------------------------------------------------------------
    def can_set_direct_map(self) -> bool:
        """``can_set_direct_map()``."""
        return self._can_set

    def first_invalid(self, pfn: int, npages: int) -> int | None:
        """First PFN in the range whose direct-map entry is mapped but not valid, or None."""
        if npages == 1:
            prot = self.dmap.pt.leaf(pfn)[2]
            return pfn if prot & MAPPED and not prot & VALID else None
        return self.dmap.pt.first_where(pfn, npages, _ZAPPED)

    def _change(self, pfn: int, npages: int, valid: bool) -> int:
        if self.touched is not None:
            self.touched.pages.append((pfn, npages))
        if not self._can_set:
            return 0  # arm64 set_direct_map_*: "if (!can_set_direct_map()) return 0;"
        if npages == 1:
            # One page already mapped by a 4K PTE (a 4K folio, after its region's first split) that no split
            # touches (DirectMap.in_place_run): the change in place, as DirectMap.apply_range() would make it,
            # without its argument checks (the callers checked the PFN: _check_pfn / virt_to_pfn) or its range
            # walk.
            table = self.dmap.pt.pte_table(pfn)
            if table is not None and self.dmap.in_place_run(pfn, 1, table):
                self._in_place(pfn, 1, table, valid)
                return 0
        if valid:
            ret = self._apply(pfn, npages, VALID | RW, 0)
            if self.trace_enabled:
                self.emit("restore", pfn=pfn, pages=npages, ret=errno_name(ret))
        else:
            ret = self._apply(pfn, npages, 0, VALID | RW)
            if self.trace_enabled:
                self.emit("zap", pfn=pfn, pages=npages, ret=errno_name(ret))
        return ret

    def _change_each(self, pfn: int, nr: int, valid: bool) -> bool:
        """:meth:`_change` on each page of ``[pfn, pfn + nr)`` in turn, one page per call; whether any call
        failed. A run of pages whose calls would each change only its own PTE (:meth:`DirectMap.in_place_run`)
        is changed a slice at a time, with the same entries, events and notes as the calls."""
        end, pte_table, failed = pfn + nr, self.dmap.pt.pte_table, False
        while pfn < end:
            run = 0
            if self._can_set:
                table = pte_table(pfn)
                if table is not None:
                    run = self.dmap.in_place_run(pfn, end - pfn, table)
            if not run:
                failed |= bool(self._change(pfn, 1, valid))
                pfn += 1
                continue
            if self.touched is not None:
                self.touched.pages.extend((p, 1) for p in range(pfn, pfn + run))
            self._in_place(pfn, run, table, valid)
            pfn += run
        return failed

    def _in_place(self, pfn: int, run: int, table: bytearray, valid: bool) -> None:
        """``run`` one-page changes from ``pfn``, each in its own PTE of ``table``, as ``DirectMap.apply_range()``
        makes them, without its argument checks or its walk; an event per page, as each call emits one."""
        i = pfn & 511
        table[i:i + run] = table[i:i + run].translate(_RESTORE if valid else _ZAP)
        if self.trace_enabled:
            for p in range(pfn, pfn + run):
                self.emit("restore" if valid else "zap", pfn=p, pages=1, ret="0")

    def set_direct_map_invalid_noflush(self, addr: int) -> int:
        """``set_direct_map_invalid_noflush()``: one page not present; no TLB flush on any arch."""
        return self._change(self.virt_to_pfn(addr), 1, False)

    def set_direct_map_default_noflush(self, addr: int) -> int:
        """``set_direct_map_default_noflush()``: one page present and writable again; no TLB flush."""
        return self._change(self.virt_to_pfn(addr), 1, True)

    def set_direct_map_valid_noflush(self, addr: int, numpages: int, valid: bool) -> int:
        """``set_direct_map_valid_noflush()``. x86: ``__set_pages_p/np`` with no flush of the final change (a
        split still does ``flush_tlb_all()``). arm64: ``set_memory_valid()``, which *does* flush the range when
        invalidating (``__change_memory_common()``) and not when only setting PTE_VALID."""
        pfn = self.virt_to_pfn(addr)
        self._check_pfn(pfn, numpages)
        if not isinstance(valid, bool):
            raise ModelInputError(f"valid must be True or False, not {valid!r}")
        return self._set_valid(pfn, numpages, valid)

    def _set_valid(self, pfn: int, numpages: int, valid: bool) -> int:
        ret = self._change(pfn, numpages, valid)
        if not valid and self.arch == "arm64" and self._can_set:
            self.flush_pfn_range(pfn, numpages, reason="set_memory_valid")
        return ret

    def folio_zap_direct_map(self, folio: Folio) -> int:
        """``folio_zap_direct_map()`` (v12 02/16): -EINVAL for a large folio; otherwise
        ``set_direct_map_valid_noflush(addr, nr, false)`` and then, whatever it returned,
        ``flush_tlb_kernel_range()`` over the folio. Returns the set call's result."""
        if folio.order and not self.allow_large_zap:
            self.emit("error", what="folio_zap_direct_map", ret=Errno.EINVAL.name)
            return -Errno.EINVAL
        self._check_pfn(folio.pfn, folio.nr_pages)
        ret = self._set_valid(folio.pfn, folio.nr_pages, False)
        if ret == 0:
            self.counters["zaps"] += 1
        self.point("after_zap", folio.pfn)
        self.flush_pfn_range(folio.pfn, folio.nr_pages, reason="flush_tlb_kernel_range")
        return ret

    def folio_restore_direct_map(self, folio: Folio, granule_pages: int | None = None) -> None:
        """``folio_restore_direct_map()``: ``WARN_ON_ONCE(set_direct_map_valid_noflush(addr, nr, true))``, no
        flush. ``granule_pages`` (break-it) restores in pieces of that many pages instead of all at once."""
        c = self.counters
        nr = folio.nr_pages
        step = granule_pages or nr
        splits_before = c["direct_map_level2_splits"] + c["direct_map_level3_splits"]
        self._check_pfn(folio.pfn, nr)
        if step == nr:
            failed = bool(self._change(folio.pfn, nr, True))  # valid=true: no flush on either arch
        elif step == 1:
            failed = self._change_each(folio.pfn, nr, True)
        else:
            failed = False
            for off in range(0, nr, step):
                if self._change(folio.pfn + off, min(step, nr - off), True):
                    failed = True
        c["restore_splits"] += c["direct_map_level2_splits"] + c["direct_map_level3_splits"] - splits_before
        if failed:
            self.warn("folio_restore_direct_map: set_direct_map_valid_noflush failed")
        else:
            self.counters["restores"] += 1
        self.point("after_restore", folio.pfn)

    # -- TLB ------------------------------------------------------------------------------------------------
    def flush_tlb_kernel_range(self, start: int, end: int) -> None:
        """``flush_tlb_kernel_range()``. x86 (``arch/x86/mm/tlb.c``): above ``tlb_single_page_flush_ceiling``
        (33) pages a full flush, else INVLPG per page on every CPU by IPI. arm64 (``flush_tlb_kernel_range()`` in
        ``arch/arm64/include/asm/tlbflush.h`` since v6.13: a923705c69f7 "arm64: optimize flush tlb kernel range"
        and 7ffc13e23395 "arm64: tlbflush: add __flush_tlb_range_limit_excess()"): ``flush_tlb_all()`` when
        ``__flush_tlb_range_limit_excess()`` says so (without FEAT_TLBIRANGE at ``pages >= MAX_DVM_OPS``, so
        a 2M range already; with it above ``MAX_TLBI_RANGE_PAGES``), else ``__flush_tlb_range_op(vaale1is,
        ...)``: one ``TLBI VAALE1IS`` per page without FEAT_TLBIRANGE, a few ``TLBI RVAALE1IS`` range
        operations with it (counted in ``tlbi_range_ops``); broadcast in hardware, no IPIs."""
        pfn = self.virt_to_pfn(start)
        if not isinstance(end, int) or end <= start or (end - start) % PAGE_SIZE:
            raise ModelInputError(f"bad flush range {start:#x}..{end!r}")
        npages = (end - start) >> PAGE_SHIFT
        self._check_pfn(pfn, npages)
        self.flush_pfn_range(pfn, npages, reason="flush_tlb_kernel_range")

    def flush_pfn_range(self, pfn: int, npages: int, reason: str) -> None:
        """:meth:`flush_tlb_kernel_range` on PFNs, unchecked: the body every range flush of the model runs (and
        the one an observer wraps, as the explorer does)."""
        if self.skip_flush:
            self.emit("flush", pfn=pfn, pages=npages, skipped=True)
            return
        x86 = self.arch == "x86"
        if npages > self._ceiling if x86 else arm64_flush_limit_excess(npages, self.tlbirange):
            self.flush_tlb_all(reason=reason)
            return
        touched = self.touched
        for tlb in self.tlbs:
            if tlb.entries:
                tlb.invalidate_range(pfn, npages)
                if touched is not None:
                    touched.tlb_dropped = True
        self.counters["tlb_flushes"] += 1
        if self.trace_enabled:
            self.emit("flush", pfn=pfn, pages=npages)
        if x86:
            self.counters["tlb_page_invalidations"] += npages * self.ncpus
            self._ipi(reason)
        else:
            single, ranged = arm64_tlbi_ops(npages, self.tlbirange)
            self.counters["tlb_page_invalidations"] += single
            self.counters["tlbi_range_ops"] += ranged

    def flush_tlb_all(self, reason: str = "") -> None:
        """``flush_tlb_all()``: every CPU drops every kernel translation (x86: by IPI; arm64: TLBI VMALLE1IS)."""
        for tlb in self.tlbs:
            tlb.flush_all()
        if self.touched is not None:
            self.touched.tlb_dropped = True
        self.counters["tlb_full_flushes"] += 1
        if self.trace_enabled:
            self.emit("flush_all", reason=reason)
        if self.arch == "x86":
            self._ipi(reason)

    def _ipi(self, reason: str) -> None:
        if self.ncpus > 1:
            self.counters["ipis"] += self.ncpus - 1
            if self.trace_enabled:
                self.emit("ipi", cpus=self.ncpus - 1, reason=reason)

    # -- kernel accesses through the direct map ---------------------------------------------------------------
    def kernel_access(self, pfn: int, cpu: int | None = None, write: bool = False, what: str = "read") -> Access:
        """The kernel touches ``pfn`` through the direct map on ``cpu``: :class:`~nbmodel.errors.Access` ``OK``,
        ``STALE`` (served by a TLB entry whose page-table entry is no longer valid) or ``OOPS`` (not present: a
        kernel page fault)."""
        self._check_pfn(pfn)
        cpu = self.current_cpu if cpu is None else cpu
        if not isinstance(cpu, int) or not 0 <= cpu < self.ncpus:
            raise ModelInputError(f"no CPU {cpu!r} (this machine has {self.ncpus})")
        return self._access(pfn, cpu, what)

    def kernel_access_range(self, pfn: int, npages: int, cpu: int | None = None, write: bool = False,
                            what: str = "read") -> Access:
        """The kernel touches every page of the range through the direct map, in order, as a copy into a folio
        does (``copy_page_from_iter()`` page by page): :meth:`kernel_access` on each page; returns the worst
        result (``OOPS`` over ``STALE`` over ``OK``)."""
        self._check_pfn(pfn, npages)
        cpu = self.current_cpu if cpu is None else cpu
        if not isinstance(cpu, int) or not 0 <= cpu < self.ncpus:
            raise ModelInputError(f"no CPU {cpu!r} (this machine has {self.ncpus})")
        return self._access_run(pfn, npages, cpu, what, False)

    def _access(self, pfn: int, cpu: int, what: str, quiet: bool = False) -> Access:
        """One access; ``quiet`` leaves a successful access out of the trace (a "zero" event summarises)."""
        tlb = self.tlbs[cpu]
        level, first, prot = self.dmap.pt.leaf(pfn)
        valid = prot & VALID
        if tlb.entries and tlb.lookup(pfn) is not None:
            if valid:
                if not quiet:
                    self.emit("access", cpu=cpu, pfn=pfn, what=what)
                return _OK
            self.counters["stale_reads"] += 1
            self.emit("stale", cpu=cpu, pfn=pfn, what=what)
            return _STALE
        if not valid:
            self.counters["oops"] += 1
            self.emit("oops", cpu=cpu, pfn=pfn, what=what)
            return _OOPS
        span = level * 16 if prot & CONT else level  # DirectMap.tlb_span() without a second walk
        start = pfn - pfn % span
        touched = self.touched
        if touched is not None:
            if span != level:  # a contiguous run's entry also covers the run's other leaves, valid or not
                touched.pages.append((start, span))
            if start in tlb.entries:
                touched.tlb_dropped = True  # the new entry replaces one of another span
        tlb.fill(start, span)
        if not quiet:
            self.emit("access", cpu=cpu, pfn=pfn, what=what)
        return _OK

    def folio_zero(self, folio: Folio, cpu: int | None = None) -> Access:
        """``clear_highpage()`` / ``folio_zero_segment()``: the kernel writes zeroes through the direct map.
        Returns the worst :class:`~nbmodel.errors.Access` over the folio's pages (``OOPS`` if any page oopsed)."""
        pfn, nr = folio.pfn, folio.nr_pages
        self._check_pfn(pfn, nr)
        if cpu is None:
            cpu = self.current_cpu
        elif type(cpu) is not int or not 0 <= cpu < self.ncpus:
            raise ModelInputError(f"no CPU {cpu!r} (this machine has {self.ncpus})")
        worst = self._access(pfn, cpu, "zero", True) if nr == 1 else self._access_run(pfn, nr, cpu, "zero", True)
        if worst is not _OOPS:
            folio.content = "zero"
        self.counters["zeroings"] += 1
        if self.trace_enabled:
            self.emit("zero", pfn=pfn, pages=nr, result=worst.value)
        return worst

    def _access_run(self, pfn: int, nr: int, cpu: int, what: str, quiet: bool) -> Access:
        """:meth:`_access` on every page of ``[pfn, pfn + nr)`` in order; the worst result (``OOPS`` over ``STALE``
        over ``OK``). The same results, counters, events and TLB entries as that loop, taken a run of pages at a
        time. Why runs are exact: a page's access hits when some entry covers it, and a fill only adds cover
        for pages at or after the one filled (it replaces an entry only at a start that did not cover that
        page). So the cover the TLB had on entry, plus each fill, tells every later page whether it hits."""
        if not quiet and self.trace_enabled:  # an "access" event for every page, in page order
            worst = _OK
            for p in range(pfn, pfn + nr):
                got = self._access(p, cpu, what)
                if got is not _OK and worst is not _OOPS:
                    worst = got
            return worst
        tlb, pt, end = self.tlbs[cpu], self.dmap.pt, pfn + nr
        entries, first_where = tlb.entries, pt.first_where
        covers = _merged(sorted((f, f + s) for f, s in entries.items() if f < end and pfn < f + s))
        covers.append((end, end))
        stale = oops = c = 0
        p = pfn
        while p < end:
            if covers[c][1] <= p:
                c += 1
                continue
            if covers[c][0] <= p:  # hits: stale where the entry is not valid
                stop = min(end, covers[c][1])
                stale += self._stale_pages(p, stop, cpu, what)
                p = stop
                continue
            gap = covers[c][0]
            level, first, prot = pt.leaf(p)
            if not prot & VALID:  # misses on invalid entries: each oopses, nothing is filled
                q = first_where(p, gap - p, _VALID)
                stop = gap if q is None else q
                self.counters["oops"] += stop - p
                oops += stop - p
                if self.trace_enabled:
                    for q in range(p, stop):
                        self.emit("oops", cpu=cpu, pfn=q, what=what)
                p = stop
                continue
            if level == 1 and not prot & CONT:  # valid PTEs outside a contiguous run: a 4K entry each
                q = first_where(p, min(gap, (p | 511) + 1) - p, _NOT_PLAIN)
                stop = min(gap, (p | 511) + 1) if q is None else q
                entries.update(dict.fromkeys(range(p, stop), 1))
                p = stop
                continue
            self._access(p, cpu, what, True)  # one fill, whose entry covers the pages after p too
            start = tlb.lookup(p)
            stop = min(end, start + entries[start])
            stale += self._stale_pages(p + 1, stop, cpu, what)
            p = stop
        return _OOPS if oops else _STALE if stale else _OK

    def _stale_pages(self, p: int, stop: int, cpu: int, what: str) -> int:
        """Pages of ``[p, stop)``, all served by a TLB entry, whose page-table entry is not valid: each is a stale
        access (:meth:`_access`). Returns how many."""
        n = 0
        first_where = self.dmap.pt.first_where
        while p < stop:
            q = first_where(p, stop - p, _NOT_VALID)
            if q is None:
                break
            n += 1
            self.emit("stale", cpu=cpu, pfn=q, what=what)
            p = q + 1
        self.counters["stale_reads"] += n
        return n

    def tlb_holders(self, pfn: int, npages: int = 1) -> list[int]:
        """CPUs whose TLB holds an entry overlapping the range."""
        if npages == 1:
            return [t.cpu for t in self.tlbs if t.lookup(pfn) is not None]
        return [t.cpu for t in self.tlbs if t.holds(pfn, npages)]

    # -- whole-state operations ---------------------------------------------------------------------------------
    def snapshot(self) -> tuple:
        """Everything that defines this machine's state, comparable with ``==`` (trace length included)."""
        return (self.arch, self.dmap.snapshot(), self.alloc.snapshot(), tuple(t.snapshot() for t in self.tlbs),
                tuple(sorted(self.counters.items())), tuple(self.pgtable_pfns), len(self.trace),
                self.fail_pgtable_allocs, self.current_cpu)

    def leaf_counts(self) -> dict:
        """``direct_pages_count[]`` as ``{"4K": n, "2M": n, "1G": n}``."""
        return {"4K": self.dmap.count[1], "2M": self.dmap.count[512], "1G": self.dmap.count[512 * 512]}


def _merged(spans: list) -> list:
    """Sorted ``(start, end)`` spans with overlapping and touching ones joined."""
    out: list = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


__all__ = ["Kernel", "Touched", "ARCHES", "DEFAULT"]
