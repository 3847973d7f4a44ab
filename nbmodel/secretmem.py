"""``memfd_secret(2)`` (``mm/secretmem.c``): create, fault, ``->free_folio``, release. Between the fault's
page-cache lookup and the user mapping, and in ``->free_folio`` before the zeroing, the installed design
(``k.design``, :mod:`nbmodel.designs`) decides what happens to the direct map.

Mainline (the ``secretmem`` design) allocates a zeroed folio, ``set_direct_map_invalid_noflush()``,
``filemap_add_folio()`` (on failure ``set_direct_map_default_noflush()`` then ``folio_put()``, the order fixed by
6f86d0534fdd "mm/secretmem: fix use-after-free race in fault handler"; on -EEXIST retry), and only then
``flush_tlb_kernel_range()``. ``->free_folio`` restores and then zeroes; migration is refused with -EBUSY.

File I/O: ``secretmem_fops`` has only ``.release`` and ``.mmap``, so read / pread64 / pwrite64 fail as for
guest_memfd; ``ftruncate()`` sets i_size once, while it is 0 (``secretmem_setattr()``).
"""

from __future__ import annotations

from .errors import Errno, VmFault, vmf_error
from .guest_memfd import vfs_io_errno
from .pagecache import AddressSpace, AddressSpaceOps, truncate_inode_pages_range
from .units import PAGE_SHIFT

MAX_LFS_FILESIZE = (1 << 63) - 1


#: The file kind of a memfd_secret file (``SecretFile.kind``, and the live probes' name for it): a kind of
#: file, not the design of the same name.
KIND = "secretmem"


class SecretFile:
    """A memfd_secret file (its inode): unevictable, ``AS_NO_DIRECT_MAP``; ``mapping.host`` is this."""

    kind = KIND

    def __init__(self, name: str, size: int):
        self.name = name
        self.size = size
        self.mapping = AddressSpace(name, {"AS_NO_DIRECT_MAP", "AS_UNEVICTABLE"}, AddressSpaceOps(
            free_folio=secretmem_free_folio, migrate_folio=secretmem_migrate_folio), size, host=self)

    def no_direct_map(self) -> bool:
        return True


def memfd_secret(k, name: str, size: int) -> SecretFile | int:
    """``memfd_secret()`` + ``ftruncate(size)``: the new file, -ENOSYS when ``!can_set_direct_map()``
    (``secretmem_init()`` leaves it disabled), -EINVAL for a size ``ftruncate()`` refuses (negative) and -EFBIG
    past ``MAX_LFS_FILESIZE``. Size 0 and unaligned sizes are fine (``secretmem_setattr()`` only refuses a size
    change once i_size is non-zero: see :func:`secretmem_ftruncate`)."""
    if not k.can_set_direct_map():
        err, what = Errno.ENOSYS, "memfd_secret"
    elif size < 0:
        err, what = Errno.EINVAL, "ftruncate"
    elif size > MAX_LFS_FILESIZE:
        err, what = Errno.EFBIG, "ftruncate"
    else:
        return SecretFile(name, size)
    k.emit("error", what=what, ret=err.name)
    return -err


def secretmem_read(k, f: SecretFile, off: int, ln: int, positional: bool) -> int:
    """``read()`` / ``pread64()`` on a memfd_secret: ``secretmem_fops`` has no ``.read``/``.read_iter`` and
    ``secretmem_file_create()`` uses ``alloc_file_pseudo()`` (no ``FMODE_CAN_READ``, no ``FMODE_PREAD``):
    ``vfs_read()`` -EINVAL; ``ksys_pread64()`` -EINVAL for a negative position, else -ESPIPE."""
    err = vfs_io_errno(off, positional)
    k.emit("error", what="pread64" if positional else "vfs_read", ret=err.name)
    return -err


def secretmem_pwrite(k, f: SecretFile, off: int, ln: int) -> int:
    """``pwrite64()`` on a memfd_secret: ``ksys_pwrite64()`` -EINVAL for a negative position, else -ESPIPE."""
    err = vfs_io_errno(off, True)
    k.emit("error", what="pwrite64", ret=err.name)
    return -err


def secretmem_ftruncate(k, f: SecretFile, length: int) -> int:
    """``ftruncate()`` -> ``secretmem_setattr()``: ``do_sys_ftruncate()`` -EINVAL for a negative length;
    ``secretmem_setattr()`` -EINVAL for any ``ATTR_SIZE`` change while i_size is non-zero (even to the same size,
    even with no page faulted in); while i_size is 0, ``simple_setattr()`` sets it (-EFBIG past the pseudo
    filesystem's ``s_maxbytes``, ``MAX_LFS_FILESIZE``, from ``inode_newsize_ok()``), and later faults follow it."""
    if length < 0:
        err, what = Errno.EINVAL, "do_sys_ftruncate"
    elif f.size:
        err, what = Errno.EINVAL, "secretmem_setattr"
    elif length > MAX_LFS_FILESIZE:
        err, what = Errno.EFBIG, "inode_newsize_ok"
    else:
        f.size = f.mapping.size = length
        return 0
    k.emit("error", what=what, ret=err.name)
    return -err


def secretmem_fault(k, f: SecretFile, off: int, data: str = "secret", race: bool = False) -> VmFault:
    """``secretmem_fault()`` and the userspace store of ``data`` it lets complete. Returns the handler's
    ``vm_fault_t``: ``VM_FAULT_LOCKED``, ``vmf_error(-EINVAL)`` (``VM_FAULT_SIGBUS``) past i_size, or
    ``vmf_error()`` of the design's error (``VM_FAULT_OOM`` for -ENOMEM: mainline returns ``VM_FAULT_OOM``
    directly when ``folio_alloc()`` fails, the same value). With ``race`` another task faults the same page in
    between this one's lookup and its add (-EEXIST, retry)."""
    index = off >> PAGE_SHIFT
    if index << PAGE_SHIFT >= f.size:  # (loff_t)vmf->pgoff << PAGE_SHIFT >= i_size_read(inode)
        ret = vmf_error(-Errno.EINVAL)
        k.emit("error", what="secretmem_fault", ret=ret.name)
        return ret
    while True:  # retry:
        folio = f.mapping.lookup(index)
        if folio is not None:
            folio.content = data
            return VmFault.LOCKED
        racer = (lambda: _racing_fault(k, f, index)) if race else None
        folio = k.design.secretmem_get_folio(k, f, index, racer)
        if not isinstance(folio, int):
            break
        if folio != -Errno.EEXIST:
            return vmf_error(folio)
        race = False  # goto retry: the other task's folio is there now
    folio.flags.add("user_mapped")
    folio.content = data
    folio.flags.discard("locked")
    k.folio_put(folio)
    return VmFault.LOCKED


def _racing_fault(k, f: SecretFile, index: int) -> None:
    """Another CPU's secretmem_fault() on the same index wins the race and completes first."""
    cpu = k.current_cpu
    k.current_cpu = (cpu + 1) % k.ncpus
    secretmem_fault(k, f, index << PAGE_SHIFT, data="secret")
    k.current_cpu = cpu


def secretmem_free_folio(k, mapping: AddressSpace, folio) -> None:
    """``secretmem_free_folio()``: the design's restore (mainline: ``set_direct_map_default_noflush()``), then
    ``folio_zero_segment()``."""
    k.design.secretmem_free_folio(k, folio)
    k.folio_zero(folio)


def secretmem_migrate_folio(k, mapping: AddressSpace, dst, src) -> int:
    """``secretmem_migrate_folio()``: secret memory is unmovable, -EBUSY."""
    return -Errno.EBUSY


def secretmem_release(k, f: SecretFile) -> int:
    """Close: the inode is evicted and its page cache truncated."""
    truncate_inode_pages_range(k, f.mapping, 0, -1)
    return 0
