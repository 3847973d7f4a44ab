"""guest_memfd (``virt/kvm/guest_memfd.c``): create, mmap, fallocate, punch hole, user and guest faults,
write(), populate, release, and the file I/O syscalls 6.18 refuses (read, pread64, pwrite64,
ftruncate). The paths are mainline's; where a design changes them they call the installed
design (``k.design``, :mod:`nbmodel.designs`).

Mainline facts kept: folios are zeroed lazily at first user or guest fault (``clear_highpage()`` through the
direct map); ``fallocate()`` needs ``FALLOC_FL_KEEP_SIZE`` and page alignment and pre-creates folios without
zeroing them; the user fault SIGBUSes past ``i_size`` and without ``GUEST_MEMFD_FLAG_INIT_SHARED``; ``mmap()``
without ``GUEST_MEMFD_FLAG_MMAP`` fails with -ENODEV; punch hole is invalidate_begin -> truncate ->
invalidate_end; the mapping is ``AS_INACCESSIBLE`` and unevictable; mm-new lets non-CoCo guest_memfd folios
migrate (``filemap_migrate_folio()``).
"""

from __future__ import annotations

from .errors import OOPS, Access, Errno, ModelInputError, VmFault, vmf_error
from .pagecache import (
    AddressSpace,
    AddressSpaceOps,
    filemap_migrate_folio,
    truncate_inode_pages_range,
)
from .units import PAGE_SHIFT, PAGE_SIZE

FLAGS = {"MMAP": 1 << 0, "INIT_SHARED": 1 << 1, "NO_DIRECT_MAP": 1 << 2}  # GUEST_MEMFD_FLAG_*
VM_TYPES = ("default", "sw_protected", "snp", "tdx")
COCO = ("snp", "tdx")
PRIVATE_MEMORY = ("sw_protected", "snp", "tdx")  # VM types with private memory (kvm_arch_has_private_mem())
LOFF_MAX = (1 << 63) - 1  # loff_t is signed


class GmemFile:
    """One guest_memfd file (its inode): flags, VM type, size, and its page cache (``mapping.host`` is this)."""

    kind = "guest_memfd"

    def __init__(self, name: str, size: int, flags: frozenset, vm_type: str):
        self.name = name
        self.size = size
        self.flags = flags
        self.vm_type = vm_type
        as_flags = {"AS_INACCESSIBLE", "AS_UNEVICTABLE"}
        if "NO_DIRECT_MAP" in flags:
            as_flags.add("AS_NO_DIRECT_MAP")
        migrate = None if vm_type in COCO else filemap_migrate_folio
        self.mapping = AddressSpace(name, as_flags, AddressSpaceOps(free_folio=kvm_gmem_free_folio,
                                                                    migrate_folio=migrate), size, host=self)

    def no_direct_map(self) -> bool:
        """``kvm_gmem_no_direct_map(inode)``."""
        return "NO_DIRECT_MAP" in self.flags


def supports_no_direct_map(k, vm_type: str) -> bool:
    """``kvm_arch_gmem_supports_no_direct_map()``. x86: ``can_set_direct_map()`` and not a TDX/SNP VM.
    arm64: ``can_set_direct_map()`` and ``ARM64_HAS_STAGE2_FWB``. The what-if option ``snp_no_direct_map``
    (not mainline) lets an SNP VM have the flag, to run Sean Christopherson's mermap alternative for
    ``kvm_gmem_populate()``."""
    if k.arch == "x86":
        what_if = vm_type == "snp" and k.config is not None and k.config.snp_no_direct_map
        return k.can_set_direct_map() and (vm_type not in COCO or what_if)
    return k.can_set_direct_map() and k.fwb


def supported_flags(k, vm_type: str) -> frozenset:
    """``kvm_gmem_get_supported_flags()``: MMAP always; INIT_SHARED only for a VM without private memory
    (``kvm_arch_supports_gmem_init_shared()``); NO_DIRECT_MAP where the arch supports it (v12 10/16)."""
    out = {"MMAP"}
    if vm_type not in PRIVATE_MEMORY:
        out.add("INIT_SHARED")
    if supports_no_direct_map(k, vm_type):
        out.add("NO_DIRECT_MAP")
    return frozenset(out)


def kvm_gmem_create(k, name: str, size: int, flags=(), vm_type: str = "default") -> GmemFile | int:
    """``KVM_CREATE_GUEST_MEMFD`` (``kvm_gmem_create()``): the new file, or -EINVAL for a size that is not
    positive as a signed ``loff_t`` or not page aligned, or a flag outside ``kvm_gmem_get_supported_flags()``."""
    if vm_type not in VM_TYPES or (vm_type in COCO and k.arch != "x86"):
        raise ModelInputError(f"unknown VM type {vm_type!r} for {k.arch}; choose from {VM_TYPES}")
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise ModelInputError(f"unknown guest_memfd flags {sorted(unknown)}; known: {', '.join(FLAGS)}")
    flags = frozenset(flags)
    if flags - supported_flags(k, vm_type):
        return _fail(k, "kvm_gmem_create", Errno.EINVAL)
    if not 0 < size <= LOFF_MAX or size % PAGE_SIZE:
        return _fail(k, "kvm_gmem_create", Errno.EINVAL)
    return GmemFile(name, size, flags, vm_type)


def kvm_gmem_mmap(k, f: GmemFile) -> int:
    """``kvm_gmem_mmap()`` of a ``MAP_SHARED`` mapping: 0, or -ENODEV without ``GUEST_MEMFD_FLAG_MMAP``."""
    if "MMAP" not in f.flags:
        return _fail(k, "kvm_gmem_mmap", Errno.ENODEV)
    return 0


def _fail(k, what: str, err: Errno) -> int:
    k.emit("error", what=what, ret=err.name)
    return -err


def kvm_gmem_get_folio(k, f: GmemFile, index: int):
    """``kvm_gmem_get_folio()``: the locked folio at ``index``, allocated and added if absent (as the design
    decides), a negative errno, or :data:`~nbmodel.errors.OOPS` if the allocation faulted on the direct map
    (``__GFP_ZERO`` on a folio of the unmapped source)."""
    return k.design.gmem_get_folio(k, f, index, 9 if k.config.large_folios else 0)


def _prepare_contents(k, folio) -> Access:
    """Mainline lazy zeroing: ``clear_highpage()`` + ``folio_mark_uptodate()`` if not uptodate. A folio the page
    cache zeroed before the add (``zeroed_at_add``) only gets the flag. Returns the zeroing's access outcome."""
    result = Access.OK
    if not folio.test("uptodate"):
        if not folio.test("zeroed_at_add"):
            result = k.folio_zero(folio)
        folio.flags.add("uptodate")
    return result


def _unlock_put(k, folio) -> None:
    folio.flags.discard("locked")
    k.folio_put(folio)


def fallocate_errno(size: int, off: int, ln: int, punch_hole: bool = False, keep_size: bool = True) -> Errno | None:
    """The checks of ``vfs_fallocate()`` and ``kvm_gmem_fallocate()``, in their order: -EINVAL for a negative
    offset or a length <= 0; -EOPNOTSUPP without KEEP_SIZE; -EINVAL unless page aligned. An allocation (not a
    punch) past i_size is -EINVAL, and a hole punched at or past i_size punches nothing and succeeds, as
    ``test_fallocate()`` in ``tools/testing/selftests/kvm/guest_memfd_test.c`` expects (checked live on 6.18)."""
    if off < 0 or ln <= 0 or off + ln > LOFF_MAX:
        return Errno.EINVAL
    if not keep_size:
        return Errno.EOPNOTSUPP
    if off % PAGE_SIZE or ln % PAGE_SIZE or (not punch_hole and off + ln > size):
        return Errno.EINVAL
    return None


def kvm_gmem_fallocate(k, f: GmemFile, off: int, ln: int, punch_hole: bool = False, keep_size: bool = True) -> int:
    """``vfs_fallocate()`` -> ``kvm_gmem_fallocate()``: the checks of :func:`fallocate_errno`, then
    PUNCH_HOLE -> ``kvm_gmem_punch_hole()``, else ``kvm_gmem_allocate()``."""
    err = fallocate_errno(f.size, off, ln, punch_hole, keep_size)
    if err is not None:
        return _fail(k, "kvm_gmem_fallocate", err)
    if punch_hole:
        return kvm_gmem_punch_hole(k, f, off, ln)
    return kvm_gmem_allocate(k, f, off, ln)


def kvm_gmem_allocate(k, f: GmemFile, off: int, ln: int) -> int | Access:
    """``kvm_gmem_allocate()``: get (create) each folio in the range, then unlock and put it. 0, a negative
    errno, or :data:`~nbmodel.errors.OOPS`."""
    k.design.gmem_fallocate_begin(k, f)
    ret = 0
    index, end = off >> PAGE_SHIFT, (off + ln) >> PAGE_SHIFT
    while index < end:
        folio = kvm_gmem_get_folio(k, f, index)
        if isinstance(folio, int) or folio is OOPS:
            ret = folio
            break
        index = folio.index + folio.nr_pages
        _unlock_put(k, folio)
    k.design.gmem_fallocate_end(k, f)
    return ret


def kvm_gmem_punch_hole(k, f: GmemFile, off: int, ln: int) -> int:
    """``kvm_gmem_punch_hole()``: invalidate_begin (unmap from the guest), truncate, invalidate_end."""
    first, last = off >> PAGE_SHIFT, (off + ln) >> PAGE_SHIFT
    k.emit("invalidate", what="begin", file=f.name, start=first, end=last)
    for folio in f.mapping.folios_in(first, last):
        folio.flags.discard("guest_mapped")  # kvm_gmem_invalidate_begin(): only the punched range
    truncate_inode_pages_range(k, f.mapping, off, off + ln - 1)
    k.emit("invalidate", what="end", file=f.name)
    return 0


def vmm_store(k, f: GmemFile, off: int, data: str = "guest-secret") -> int | VmFault | Access:
    """The VMM stores ``data`` at ``off`` through its ``mmap()`` of the file: ``kvm_gmem_mmap()`` first, whose
    -ENODEV (no ``GUEST_MEMFD_FLAG_MMAP``) means the mapping the store needs cannot exist; then the store's page
    fault, :func:`kvm_gmem_fault_user_mapping`, and its ``vm_fault_t``."""
    ret = kvm_gmem_mmap(k, f)
    if ret:
        return ret
    return kvm_gmem_fault_user_mapping(k, f, off, data)


def kvm_gmem_fault_user_mapping(k, f: GmemFile, off: int, data: str = "guest-secret") -> VmFault | Access:
    """``kvm_gmem_fault_user_mapping()`` then the userspace store of ``data`` it lets complete. Returns the
    handler's ``vm_fault_t``: ``VM_FAULT_LOCKED`` (the page is there), ``VM_FAULT_SIGBUS`` past i_size or without
    INIT_SHARED, ``vmf_error()`` of an error from getting the folio or from the design's first-use step; or
    :data:`~nbmodel.errors.OOPS` when ``clear_highpage()`` (or the allocation's zeroing) faulted on the direct
    map: the kernel oopses inside the fault handler."""
    if off >= f.size or "INIT_SHARED" not in f.flags:
        k.emit("error", what="kvm_gmem_fault_user_mapping", ret=VmFault.SIGBUS.name)
        return VmFault.SIGBUS
    folio = kvm_gmem_get_folio(k, f, off >> PAGE_SHIFT)
    if folio is OOPS:
        return OOPS
    if isinstance(folio, int):
        return vmf_error(folio)
    if _prepare_contents(k, folio) is OOPS:
        _unlock_put(k, folio)
        return OOPS
    ret = k.design.gmem_first_use(k, f, folio)
    if ret:
        _unlock_put(k, folio)
        return vmf_error(ret)
    folio.flags.add("user_mapped")
    folio.content = data  # the VMM writes through its own (userspace) mapping: no direct map involved
    _unlock_put(k, folio)
    return VmFault.LOCKED


def kvm_gmem_get_pfn(k, f: GmemFile, off: int, data: str = "guest-secret") -> int | Access:
    """``kvm_gmem_get_pfn()`` for a guest fault: get the folio, zero it if not uptodate, the design's first-use
    step (v12: "zap then prepare"), ``kvm_gmem_prepare_folio()``; the guest then runs and writes ``data``.
    Returns 0, a negative errno, or :data:`~nbmodel.errors.OOPS` if zeroing faulted on the direct map."""
    if off >= f.size:
        return _fail(k, "kvm_gmem_get_pfn", Errno.EINVAL)
    folio = kvm_gmem_get_folio(k, f, off >> PAGE_SHIFT)
    if isinstance(folio, int) or folio is OOPS:
        return folio
    if _prepare_contents(k, folio) is OOPS:
        _unlock_put(k, folio)
        return OOPS
    ret = k.design.gmem_first_use(k, f, folio)
    if ret:
        _unlock_put(k, folio)
        return ret
    k.emit("prepare", file=f.name, pfn=folio.pfn)
    folio.flags.add("guest_mapped")
    folio.content = data
    _unlock_put(k, folio)
    return 0


def kvm_gmem_write(k, f: GmemFile, off: int, ln: int, data: str = "guest-image") -> int | Access:
    """``write()`` on guest_memfd (the unmerged population series, v7 2025-11-14): bytes written, -errno, or
    :data:`~nbmodel.errors.OOPS` if getting the first folio oopsed.
    Each folio is got, copied into as the design decides (through the direct map, or a mermap window),
    marked uptodate, and given the design's first-use step; the design may refuse the whole write or a
    folio (v12: "userspace can write() exactly once")."""
    if off % PAGE_SIZE or ln % PAGE_SIZE or ln <= 0 or off < 0 or off + ln > f.size:
        return _fail(k, "kvm_gmem_write", Errno.EINVAL)
    ret = k.design.gmem_write_refused(k, f)
    if ret:
        return _fail(k, "kvm_gmem_write", Errno(-ret))
    written = 0
    index, end = off >> PAGE_SHIFT, (off + ln) >> PAGE_SHIFT
    while index < end:
        folio = kvm_gmem_get_folio(k, f, index)
        if isinstance(folio, int) or folio is OOPS:
            return written or folio
        ret = k.design.gmem_write_folio_refused(k, f, folio)
        if ret:
            _unlock_put(k, folio)
            return written or _fail(k, "kvm_gmem_write", Errno(-ret))
        k.design.gmem_copy_in(k, f, folio)
        folio.content = data
        folio.flags.add("uptodate")
        ret = k.design.gmem_first_use(k, f, folio)
        index = folio.index + folio.nr_pages
        _unlock_put(k, folio)
        if ret:
            return written or ret
        written += min(folio.size, off + ln - (folio.index << PAGE_SHIFT))
    return written


def kvm_gmem_read(k, f: GmemFile, off: int, ln: int, positional: bool) -> int:
    """``read()`` (``positional=False``) or ``pread64()`` on a guest_memfd in 6.18: ``kvm_gmem_fops`` has no
    ``.read``/``.read_iter``, and the file comes from ``alloc_file_pseudo()``, so ``alloc_file()``
    (``fs/file_table.c``) sets neither ``FMODE_CAN_READ`` nor ``FMODE_PREAD``. ``ksys_pread64()``
    (``fs/read_write.c``): -EINVAL for a negative position, else -ESPIPE (no ``FMODE_PREAD``); ``ksys_read()`` ->
    ``vfs_read()``: -EINVAL (no ``FMODE_CAN_READ``), whatever the length."""
    return _fail(k, "pread64" if positional else "vfs_read", vfs_io_errno(off, positional))


def kvm_gmem_pwrite(k, f: GmemFile, off: int, ln: int) -> int:
    """``pwrite64()`` on a 6.18 guest_memfd: ``ksys_pwrite64()`` returns -EINVAL for a negative position, else
    -ESPIPE (``alloc_file()`` gave the file no ``FMODE_PWRITE``). (The ``write`` step models the unmerged
    population series' ``write()``, not this.)"""
    return _fail(k, "pwrite64", vfs_io_errno(off, True))


def kvm_gmem_ftruncate(k, f: GmemFile, length: int) -> int:
    """``ftruncate()``: ``do_sys_ftruncate()`` (``fs/open.c``) returns -EINVAL for a negative length; otherwise
    ``do_ftruncate()`` -> ``do_truncate()`` -> ``notify_change()`` -> ``kvm_gmem_setattr()``, which returns -EINVAL
    for every size (the size is fixed at ``KVM_CREATE_GUEST_MEMFD``)."""
    return _fail(k, "do_sys_ftruncate" if length < 0 else "kvm_gmem_setattr", Errno.EINVAL)


def vfs_io_errno(off: int, positional: bool) -> Errno:
    """The errno ``fs/read_write.c`` gives a file without read/write methods and without ``FMODE_PREAD`` /
    ``FMODE_PWRITE`` (a pseudo file from ``alloc_file_pseudo()``): ``ksys_pread64()`` / ``ksys_pwrite64()``
    check ``pos < 0`` (-EINVAL) and then the mode (-ESPIPE); ``vfs_read()`` / ``vfs_write()`` find no
    ``FMODE_CAN_READ`` / ``FMODE_CAN_WRITE`` (-EINVAL)."""
    if not positional:
        return Errno.EINVAL
    return Errno.EINVAL if off < 0 else Errno.ESPIPE


def kvm_gmem_populate(k, f: GmemFile, off: int, data: str = "guest-image") -> int | Access:
    """``kvm_gmem_populate()`` (SNP/TDX launch): -EINVAL for other VM types; SNP copies the page in
    (``sev_gmem_post_populate()``) as the design's :meth:`~nbmodel.designs.Design.gmem_populate_copy` does it:
    ``kmap_local_page()`` + memcpy through the direct map, or a mermap window with ``populate="mermap"``.
    Returns 0, a negative errno, or :data:`~nbmodel.errors.OOPS` when the copy faulted on an invalid direct map
    (possible only under the ``snp_no_direct_map`` what-if)."""
    if f.vm_type not in COCO or off >= f.size or off % PAGE_SIZE:
        return _fail(k, "kvm_gmem_populate", Errno.EINVAL)
    folio = kvm_gmem_get_folio(k, f, off >> PAGE_SHIFT)
    if isinstance(folio, int) or folio is OOPS:
        return folio
    if f.vm_type == "snp":
        pfn = folio.pfn + (off >> PAGE_SHIFT) - folio.index
        if k.design.gmem_populate_copy(k, f, folio, pfn) is OOPS:
            _unlock_put(k, folio)
            return OOPS
    folio.content = data
    folio.flags.add("uptodate")
    k.emit("prepare", file=f.name, pfn=folio.pfn)
    _unlock_put(k, folio)
    return 0


def kvm_gmem_free_folio(k, mapping: AddressSpace, folio) -> None:
    """``kvm_gmem_free_folio()`` (``->free_folio``): ``kvm_arch_gmem_invalidate()``, then the design's restore:
    "invalidate then restore"."""
    f = mapping.host
    if f.vm_type in COCO:
        k.emit("invalidate", what="arch", pfn=folio.pfn)
    k.design.gmem_free_folio(k, f, folio)


def kvm_gmem_release(k, f: GmemFile) -> int:
    """Close the last reference: ``kvm_gmem_release()`` invalidates, the inode is evicted and
    ``truncate_inode_pages_final()`` empties the page cache."""
    k.emit("invalidate", what="begin", file=f.name, start=0, end=f.size >> PAGE_SHIFT)
    truncate_inode_pages_range(k, f.mapping, 0, -1)
    k.emit("invalidate", what="end", file=f.name)
    return 0
