"""guest_memfd (``virt/kvm/guest_memfd.c``): create, fallocate, punch hole, user and guest faults, write(),
populate and release, with the zap/restore sites of whichever design is installed.

Mainline facts kept: folios are zeroed lazily at first user or guest fault (``clear_highpage()`` through the
direct map); ``fallocate()`` needs ``FALLOC_FL_KEEP_SIZE`` and page alignment and pre-creates folios without
zeroing them; the user fault SIGBUSes past ``i_size`` and without ``GUEST_MEMFD_FLAG_INIT_SHARED``; punch hole
is invalidate_begin -> truncate -> invalidate_end; the mapping is ``AS_INACCESSIBLE`` and unevictable; mm-new
lets non-CoCo guest_memfd folios migrate (``filemap_migrate_folio()``).
"""

from __future__ import annotations

from .designs import PRIVATE_NO_DIRECT_MAP
from .errors import Errno, ModelInputError
from .pagecache import (
    AddressSpace,
    AddressSpaceOps,
    filemap_grab_folio,
    filemap_migrate_folio,
    truncate_inode_pages_range,
)
from .units import PAGE_SHIFT, PAGE_SIZE, parse_size

FLAGS = {"MMAP": 1 << 0, "INIT_SHARED": 1 << 1, "NO_DIRECT_MAP": 1 << 2}  # GUEST_MEMFD_FLAG_*
VM_TYPES = ("default", "sw_protected", "snp", "tdx")
COCO = ("snp", "tdx")


class GmemFile:
    """One guest_memfd file: its flags, VM type, size, and its page cache."""

    kind = "guest_memfd"

    def __init__(self, name: str, size: int, flags: frozenset, vm_type: str, sys):
        self.name = name
        self.size = size
        self.flags = flags
        self.vm_type = vm_type
        as_flags = {"AS_INACCESSIBLE", "AS_UNEVICTABLE"}
        if "NO_DIRECT_MAP" in flags:
            as_flags.add("AS_NO_DIRECT_MAP")
        migrate = None if vm_type in COCO else filemap_migrate_folio
        self.mapping = AddressSpace(name, as_flags, AddressSpaceOps(
            free_folio=lambda k, folio: kvm_gmem_free_folio(sys, self, folio), migrate_folio=migrate), size)

    def no_direct_map(self) -> bool:
        """``kvm_gmem_no_direct_map(inode)``."""
        return "NO_DIRECT_MAP" in self.flags


def supports_no_direct_map(sys, vm_type: str) -> bool:
    """``kvm_arch_gmem_supports_no_direct_map()``. x86: ``can_set_direct_map()`` and not a TDX/SNP VM.
    arm64: ``can_set_direct_map()`` and ``ARM64_HAS_STAGE2_FWB``."""
    k = sys.k
    if k.arch == "x86":
        return k.can_set_direct_map() and vm_type not in COCO
    return k.can_set_direct_map() and sys.fwb


def kvm_gmem_create(sys, name: str, size, flags=(), vm_type: str = "default") -> int:
    """``KVM_CREATE_GUEST_MEMFD`` (``__kvm_gmem_create()``): 0 or -EINVAL for a bad size, an unknown flag, a
    flag this VM does not support (NO_DIRECT_MAP on TDX/SNP or without FWB), or INIT_SHARED without MMAP."""
    if name in sys.files:
        raise ModelInputError(f"a file named {name!r} exists already")
    if vm_type not in VM_TYPES or (vm_type in COCO and sys.k.arch != "x86"):
        raise ModelInputError(f"unknown VM type {vm_type!r} for {sys.k.arch}; choose from {VM_TYPES}")
    nbytes = parse_size(size)
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise ModelInputError(f"unknown guest_memfd flags {sorted(unknown)}; known: {', '.join(FLAGS)}")
    flags = frozenset(flags)
    if nbytes == 0 or nbytes % PAGE_SIZE:
        return _fail(sys, "kvm_gmem_create", Errno.EINVAL)
    if "NO_DIRECT_MAP" in flags and not supports_no_direct_map(sys, vm_type):
        return _fail(sys, "kvm_gmem_create", Errno.EINVAL)
    if "MMAP" in flags and vm_type in COCO:
        return _fail(sys, "kvm_gmem_create", Errno.EINVAL)
    if "INIT_SHARED" in flags and "MMAP" not in flags:
        return _fail(sys, "kvm_gmem_create", Errno.EINVAL)
    sys.files[name] = GmemFile(name, nbytes, flags, vm_type, sys)
    return 0


def _fail(sys, what: str, err: Errno) -> int:
    sys.k.emit("error", what=what, ret=err.name)
    return -err


def _order(sys) -> int:
    return 9 if sys.config.large_folios else 0


def kvm_gmem_get_folio(sys, f: GmemFile, index: int):
    """``kvm_gmem_get_folio()``: the locked folio at ``index``, allocated and added if absent. Under the
    ``secretmem`` design the zap happens here, before the add, and the flush after it, as secretmem does."""
    order = _order(sys)
    if sys.config.design == "secretmem" and f.no_direct_map() and f.mapping.lookup(index) is None:
        got = _secretmem_style_add(sys, f, index - index % (1 << order), order)
        if isinstance(got, int) and got == -Errno.EEXIST and order:
            # part of the 2M range is taken: one page instead, as filemap_grab_folio() falls back
            got = _secretmem_style_add(sys, f, index, 0)
        return got
    return filemap_grab_folio(sys.k, f.mapping, index, order=order, name=f.name)


def _secretmem_style_add(sys, f, base, order):
    from .pagecache import filemap_add_folio
    k = sys.k
    folio = k.folio_alloc(order, zero=True, name=f"{f.name}:{base}")  # __GFP_ZERO, as secretmem allocates
    if isinstance(folio, int):
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


def _zap(sys, f: GmemFile, folio) -> int:
    """``kvm_gmem_folio_zap_direct_map()`` (v12): idempotent; sets the private bit on success."""
    if sys.config.design != "per-folio" or not f.no_direct_map():
        return 0
    if folio.private & PRIVATE_NO_DIRECT_MAP:
        return 0
    ret = sys.k.folio_zap_direct_map(folio)
    if ret == 0:
        folio.private |= PRIVATE_NO_DIRECT_MAP
    return ret


def _prepare_contents(sys, folio) -> str:
    """Mainline lazy zeroing: ``clear_highpage()`` + ``folio_mark_uptodate()`` if not uptodate. Under the
    filemap design the page cache zeroed the folio before the add, so only the flag is set."""
    result = "ok"
    if not folio.test("uptodate"):
        if not folio.test("zeroed_at_add"):
            result = sys.k.folio_zero(folio)
        folio.flags.add("uptodate")
    return result


def _unlock_put(sys, folio) -> None:
    folio.flags.discard("locked")
    sys.k.folio_put(folio)


def _file(sys, name: str) -> GmemFile:
    f = sys.files.get(name)
    if not isinstance(f, GmemFile):
        raise ModelInputError(f"no guest_memfd named {name!r}")
    return f


def _range(f, offset, length) -> tuple[int, int]:
    off, ln = parse_size(offset), parse_size(length)
    return off, ln


def kvm_gmem_fallocate(sys, name: str, offset, length, punch_hole: bool = False, keep_size: bool = True) -> int:
    """``kvm_gmem_fallocate()``: -EOPNOTSUPP without KEEP_SIZE, -EINVAL unless page aligned (or past the end);
    PUNCH_HOLE -> ``kvm_gmem_punch_hole()``, else ``kvm_gmem_allocate()`` (folios created, not zeroed)."""
    f = _file(sys, name)
    off, ln = _range(f, offset, length)
    if not keep_size:
        return _fail(sys, "kvm_gmem_fallocate", Errno.EOPNOTSUPP)
    if off % PAGE_SIZE or ln % PAGE_SIZE or ln == 0 or off + ln > f.size:
        return _fail(sys, "kvm_gmem_fallocate", Errno.EINVAL)
    if punch_hole:
        return kvm_gmem_punch_hole(sys, f, off, ln)
    return kvm_gmem_allocate(sys, f, off, ln)


def kvm_gmem_allocate(sys, f: GmemFile, off: int, ln: int) -> int:
    """``kvm_gmem_allocate()``: get (create) each folio in the range, then unlock and put it."""
    hooks = getattr(sys.k, "pagecache_hooks", None)
    batching = sys.config.batch_flush and hooks is not None and f.no_direct_map()
    if batching:
        hooks.batch = []
    ret = 0
    index, end = off >> PAGE_SHIFT, (off + ln) >> PAGE_SHIFT
    while index < end:
        folio = kvm_gmem_get_folio(sys, f, index)
        if isinstance(folio, int):
            ret = folio
            break
        index = folio.index + folio.nr_pages
        _unlock_put(sys, folio)
    if batching:
        hooks.flush_batch(sys.k)
    return ret


def kvm_gmem_punch_hole(sys, f: GmemFile, off: int, ln: int) -> int:
    """``kvm_gmem_punch_hole()``: invalidate_begin (unmap from the guest), truncate, invalidate_end."""
    k = sys.k
    k.emit("invalidate", what="begin", file=f.name, start=off >> PAGE_SHIFT, end=(off + ln) >> PAGE_SHIFT)
    first, last = off >> PAGE_SHIFT, (off + ln) >> PAGE_SHIFT
    for folio in f.mapping.folios():
        if folio.index < last and first < folio.index + folio.nr_pages:
            folio.flags.discard("guest_mapped")  # kvm_gmem_invalidate_begin(): only the punched range
    truncate_inode_pages_range(k, f.mapping, off, off + ln - 1)
    k.emit("invalidate", what="end", file=f.name)
    return 0


def kvm_gmem_fault_user_mapping(sys, name: str, offset, data: str = "guest-secret") -> str:
    """``kvm_gmem_fault_user_mapping()`` then a userspace store of ``data``: ``"0"`` or ``"SIGBUS"`` (past
    i_size, no INIT_SHARED, a large folio on the mainline path, or an error from the zap: ``vmf_error()``)."""
    f = _file(sys, name)
    off = parse_size(offset)
    if off >= f.size or "INIT_SHARED" not in f.flags:
        sys.k.emit("error", what="kvm_gmem_fault_user_mapping", ret="SIGBUS")
        return "SIGBUS"
    folio = kvm_gmem_get_folio(sys, f, off >> PAGE_SHIFT)
    if isinstance(folio, int):
        return "SIGBUS" if folio != -Errno.ENOMEM else "OOM"
    if _prepare_contents(sys, folio) == "oops":
        _unlock_put(sys, folio)
        return "oops"  # clear_highpage() faulted on the direct map: the kernel oopses in the fault handler
    ret = _zap(sys, f, folio)
    if ret:
        _unlock_put(sys, folio)
        return "OOM" if ret == -Errno.ENOMEM else "SIGBUS"
    folio.flags.add("user_mapped")
    folio.content = data  # the VMM writes through its own (userspace) mapping: no direct map involved
    _unlock_put(sys, folio)
    return "0"


def kvm_gmem_get_pfn(sys, name: str, offset, data: str = "guest-secret") -> int | str:
    """``kvm_gmem_get_pfn()`` for a guest fault: get the folio, zero it if not uptodate, zap (per-folio:
    "zap then prepare"), ``kvm_gmem_prepare_folio()``; the guest then runs and writes ``data``. Returns 0,
    a negative errno, or ``"oops"`` if zeroing faulted on the direct map."""
    f = _file(sys, name)
    off = parse_size(offset)
    if off >= f.size:
        return _fail(sys, "kvm_gmem_get_pfn", Errno.EINVAL)
    folio = kvm_gmem_get_folio(sys, f, off >> PAGE_SHIFT)
    if isinstance(folio, int):
        return folio
    if _prepare_contents(sys, folio) == "oops":
        _unlock_put(sys, folio)
        return "oops"
    ret = _zap(sys, f, folio)
    if ret:
        _unlock_put(sys, folio)
        return ret
    sys.k.emit("prepare", file=f.name, pfn=folio.pfn)
    folio.flags.add("guest_mapped")
    folio.content = data
    _unlock_put(sys, folio)
    return 0


def kvm_gmem_write(sys, name: str, offset, length, data: str = "guest-image") -> int:
    """``write()`` on guest_memfd (the unmerged population series, v7 2025-11-14). per-folio: a folio already
    zapped is refused (-EPERM, model's choice of errno), others are copied through the direct map and zapped on
    completion: "userspace can write() exactly once". filemap: refused (-EOPNOTSUPP) or copied through a
    mermap window. secretmem design: -EINVAL (secretmem has no write()). Returns bytes written or -errno."""
    f = _file(sys, name)
    off, ln = _range(f, offset, length)
    k = sys.k
    if off % PAGE_SIZE or ln % PAGE_SIZE or ln == 0 or off + ln > f.size:
        return _fail(sys, "kvm_gmem_write", Errno.EINVAL)
    design = sys.config.design
    if f.no_direct_map() and design == "secretmem":
        return _fail(sys, "kvm_gmem_write", Errno.EINVAL)
    if f.no_direct_map() and design == "filemap" and sys.config.write == "refuse":
        return _fail(sys, "kvm_gmem_write", Errno.EOPNOTSUPP)
    written = 0
    index, end = off >> PAGE_SHIFT, (off + ln) >> PAGE_SHIFT
    while index < end:
        folio = kvm_gmem_get_folio(sys, f, index)
        if isinstance(folio, int):
            return written or folio
        if design == "per-folio" and folio.private & PRIVATE_NO_DIRECT_MAP:
            _unlock_put(sys, folio)
            if written:
                return written
            return _fail(sys, "kvm_gmem_write", Errno.EPERM)
        if f.no_direct_map() and design == "filemap":
            _mermap_copy(sys, folio)
        else:
            for p in range(folio.pfn, folio.pfn + folio.nr_pages):
                k.kernel_access(p, write=True, what="write")
        folio.content = data
        folio.flags.add("uptodate")
        ret = _zap(sys, f, folio)
        index = folio.index + folio.nr_pages
        _unlock_put(sys, folio)
        if ret:
            return written or ret
        written += min(folio.size, off + ln - (folio.index << PAGE_SHIFT))
    return written


MERMAP_WINDOW_PAGES = 512  # MERMAP_CPU_REGION_SIZE = PAGE_SIZE << MAX_PAGECACHE_ORDER (draft), 4K pages


def _mermap_copy(sys, folio) -> None:
    """Copy through ``mermap_get()``/``mermap_put()``: a per-CPU local mapping, no direct-map access, no
    global flush; the window is flushed locally (``arch_mermap_flush_tlb()``) only when it wraps."""
    k = sys.k
    for _ in range(folio.nr_pages):
        k.counters["mermap_maps"] += 1
        if k.counters["mermap_maps"] % MERMAP_WINDOW_PAGES == 0:
            k.counters["mermap_local_flushes"] += 1
    k.emit("mermap", what="copy", pfn=folio.pfn, pages=folio.nr_pages)


def kvm_gmem_populate(sys, name: str, offset, data: str = "guest-image") -> int:
    """``kvm_gmem_populate()`` (SNP/TDX launch): -EINVAL for other VM types; SNP copies with
    ``kmap_local_page()`` + memcpy through the direct map (``sev_gmem_post_populate()``)."""
    f = _file(sys, name)
    off = parse_size(offset)
    if f.vm_type not in COCO or off >= f.size or off % PAGE_SIZE:
        return _fail(sys, "kvm_gmem_populate", Errno.EINVAL)
    folio = kvm_gmem_get_folio(sys, f, off >> PAGE_SHIFT)
    if isinstance(folio, int):
        return folio
    if f.vm_type == "snp":
        sys.k.kernel_access(folio.pfn, write=True, what="populate")
    folio.content = data
    folio.flags.add("uptodate")
    sys.k.emit("prepare", file=f.name, pfn=folio.pfn)
    _unlock_put(sys, folio)
    return 0


def kvm_gmem_free_folio(sys, f: GmemFile, folio) -> None:
    """``kvm_gmem_free_folio()`` (``->free_folio``): ``kvm_arch_gmem_invalidate()``, then (per-folio, secretmem
    designs) restore if the private bit is set: "invalidate then restore"."""
    k = sys.k
    if f.vm_type in COCO:
        k.emit("invalidate", what="arch", pfn=folio.pfn)
    if folio.private & PRIVATE_NO_DIRECT_MAP and sys.config.design in ("per-folio", "secretmem"):
        k.folio_restore_direct_map(folio, granule_pages=1 if "restore_4k" in sys.config.switches else None)
        folio.private &= ~PRIVATE_NO_DIRECT_MAP
        if sys.config.design == "secretmem":
            k.folio_zero(folio)


def kvm_gmem_release(sys, name: str) -> int:
    """Close the last reference: ``kvm_gmem_release()`` invalidates, the inode is evicted and
    ``truncate_inode_pages_final()`` empties the page cache."""
    f = _file(sys, name)
    k = sys.k
    k.emit("invalidate", what="begin", file=f.name, start=0, end=f.size >> PAGE_SHIFT)
    truncate_inode_pages_range(k, f.mapping, 0, -1)
    k.emit("invalidate", what="end", file=f.name)
    del sys.files[name]
    return 0
