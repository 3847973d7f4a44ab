"""struct folio, reduced to the fields the direct-map question touches."""

from __future__ import annotations

from .units import PAGE_SIZE


class Folio:
    """A folio: ``2**order`` physically contiguous pages starting at ``pfn``.

    ``private`` stands for ``folio->private`` (v12 keeps ``KVM_GMEM_FOLIO_NO_DIRECT_MAP`` in bit 0);
    ``mapping``/``index`` are set while the folio is in a page cache; ``content`` is what a read of the
    folio's memory would return (``"zero"``, ``"guest-secret"``...), so a leak has a visible payload.
    """

    __slots__ = ("pfn", "order", "nr_pages", "flags", "private", "refcount", "mapping", "index", "content",
                 "name")

    def __init__(self, pfn: int, order: int, name: str = ""):
        self.pfn = pfn
        self.order = order
        self.nr_pages = 1 << order  # folio_nr_pages(); a folio's order never changes in the model
        self.flags: set[str] = set()
        self.private = 0
        self.refcount = 1
        self.mapping = None
        self.index = None
        self.content = "stale-kernel-data"
        self.name = name

    @property
    def size(self) -> int:
        """``folio_size()`` in bytes."""
        return PAGE_SIZE << self.order

    def test(self, flag: str) -> bool:
        return flag in self.flags

    def key(self) -> tuple:
        """Everything that defines this folio's state, for snapshots and state hashing."""
        mapping = self.mapping.name if self.mapping is not None else None
        return (self.pfn, self.order, tuple(sorted(self.flags)), self.private, self.refcount, mapping,
                self.index, self.content, self.name)

    def __repr__(self) -> str:
        where = f" {self.mapping.name}[{self.index}]" if self.mapping is not None else ""
        flags = ",".join(sorted(self.flags))
        label = f"{self.name} " if self.name else ""
        return (f"<Folio {label}pfn={self.pfn:#x} order={self.order} ref={self.refcount}"
                f" private={self.private:#x} [{flags}]{where}>")
