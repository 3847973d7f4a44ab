"""``memfd_secret(2)`` (``mm/secretmem.c``) as each design would have it.

``secretmem`` design: mainline. The fault allocates a zeroed folio, ``set_direct_map_invalid_noflush()``,
``filemap_add_folio()`` (on failure ``set_direct_map_default_noflush()`` then ``folio_put()``, the order fixed by
6f86d0534fdd "mm/secretmem: fix use-after-free race in fault handler"; on -EEXIST retry), and only then
``flush_tlb_kernel_range()``. ``->free_folio`` restores and then zeroes; migration is refused with -EBUSY.
``per-folio`` design: v12 03/16, the same with ``folio_zap_direct_map()`` (flush before the add) and
``folio_restore_direct_map()``. ``filemap`` design: the prototype, where secretmem only grabs the folio and the
page cache does the rest (``->free_folio`` only zeroes).
"""

from __future__ import annotations

from .errors import Errno, ModelInputError
from .pagecache import AddressSpace, AddressSpaceOps, filemap_add_folio, filemap_grab_folio
from .units import PAGE_SHIFT, PAGE_SIZE, parse_size


class SecretFile:
    """A memfd_secret file: unevictable, ``AS_NO_DIRECT_MAP``, fixed size once set."""

    kind = "secretmem"

    def __init__(self, name: str, size: int, sys):
        self.name = name
        self.size = size
        self.mapping = AddressSpace(name, {"AS_NO_DIRECT_MAP", "AS_UNEVICTABLE"}, AddressSpaceOps(
            free_folio=lambda k, folio: secretmem_free_folio(sys, folio),
            migrate_folio=lambda k, mapping, dst, src: -Errno.EBUSY), size)

    def no_direct_map(self) -> bool:
        return True


def memfd_secret(sys, name: str, size) -> int:
    """``memfd_secret()`` + ``ftruncate()``: -ENOSYS when ``!can_set_direct_map()``; -EINVAL for a bad size."""
    if name in sys.files:
        raise ModelInputError(f"a file named {name!r} exists already")
    nbytes = parse_size(size)
    if not sys.k.can_set_direct_map():
        sys.k.emit("error", what="memfd_secret", ret="ENOSYS")
        return -Errno.ENOSYS
    if nbytes == 0 or nbytes % PAGE_SIZE:
        sys.k.emit("error", what="memfd_secret", ret="EINVAL")
        return -Errno.EINVAL
    sys.files[name] = SecretFile(name, nbytes, sys)
    return 0


def secretmem_fault(sys, name: str, offset, data: str = "secret", race: bool = False) -> str:
    """``secretmem_fault()`` and a userspace store of ``data``: ``"0"``, ``"SIGBUS"`` or ``"OOM"``. With
    ``race`` another task faults the same page in between this one's lookup and its add (-EEXIST, retry)."""
    f = sys.files.get(name)
    if not isinstance(f, SecretFile):
        raise ModelInputError(f"no memfd_secret file named {name!r}")
    off = parse_size(offset)
    if off >= f.size:
        sys.k.emit("error", what="secretmem_fault", ret="SIGBUS")
        return "SIGBUS"
    index = off >> PAGE_SHIFT
    k = sys.k
    design = sys.config.design
    folio = f.mapping.lookup(index)
    if folio is not None:
        folio.content = data
        return "0"
    if design == "filemap" and race:
        folio = k.folio_alloc(0, name=f"{name}:{index}")
        if isinstance(folio, int):
            return "OOM"
        _racing_fault(sys, f, index)
        ret = filemap_add_folio(k, f.mapping, folio, index)  # -EEXIST: the hooks restored what they zapped
        k.folio_put(folio)
        return secretmem_fault(sys, name, offset, data)
    if design == "filemap":
        folio = filemap_grab_folio(k, f.mapping, index, name=name)
        if isinstance(folio, int):
            return "OOM" if folio == -Errno.ENOMEM else "SIGBUS"
    else:
        folio = k.folio_alloc(0, zero=True, name=f"{name}:{index}")
        if isinstance(folio, int):
            return "OOM"
        addr = k.page_address(folio.pfn)
        if design == "per-folio":
            ret = k.folio_zap_direct_map(folio)
        else:
            ret = k.set_direct_map_invalid_noflush(addr)
            if ret == 0:
                k.counters["zaps"] += 1
        if ret:
            k.folio_put(folio)
            return "OOM" if ret == -Errno.ENOMEM else "SIGBUS"
        folio.flags.add("uptodate")
        if race:
            _racing_fault(sys, f, index)
        ret = filemap_add_folio(k, f.mapping, folio, index)
        if ret:
            put_first = "put_before_restore" in sys.config.switches
            if put_first:
                k.folio_put(folio)  # before 6f86d0534fdd: freed while still unmapped
            if design == "per-folio":
                k.folio_restore_direct_map(folio)
            else:
                k.set_direct_map_default_noflush(addr)
                k.counters["restores"] += 1
            if not put_first:
                k.folio_put(folio)
            if ret == -Errno.EEXIST:
                return secretmem_fault(sys, name, offset, data)  # goto retry
            return "SIGBUS"
        if design == "secretmem":
            k.flush_tlb_kernel_range(addr, addr + PAGE_SIZE)
    folio.flags.add("user_mapped")
    folio.content = data
    folio.flags.discard("locked")
    k.folio_put(folio)
    return "0"


def _racing_fault(sys, f: SecretFile, index: int) -> None:
    """Another CPU's secretmem_fault() on the same index wins the race and completes first."""
    cpu = sys.k.current_cpu
    sys.k.current_cpu = (cpu + 1) % sys.k.ncpus
    secretmem_fault(sys, f.name, index << PAGE_SHIFT, data="secret")
    sys.k.current_cpu = cpu


def secretmem_free_folio(sys, folio) -> None:
    """``secretmem_free_folio()``: restore the direct map, then zero (mainline and v12); the prototype's
    version only zeroes, because the page cache already restored it."""
    k = sys.k
    if sys.config.design == "secretmem":
        k.set_direct_map_default_noflush(k.page_address(folio.pfn))
        k.counters["restores"] += 1
        k.point("after_restore", folio.pfn)
    elif sys.config.design == "per-folio":
        k.folio_restore_direct_map(folio)
    k.folio_zero(folio)


def secretmem_release(sys, name: str) -> int:
    """Close: the inode is evicted and its page cache truncated."""
    from .pagecache import truncate_inode_pages_range
    f = sys.files.get(name)
    if not isinstance(f, SecretFile):
        raise ModelInputError(f"no memfd_secret file named {name!r}")
    truncate_inode_pages_range(sys.k, f.mapping, 0, -1)
    del sys.files[name]
    return 0
