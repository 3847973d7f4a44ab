"""Events: what one model step did, in the order the kernel would do it."""

from __future__ import annotations

from typing import NamedTuple

#: Every event kind the model emits, with what it means to a reader.
EVENT_KINDS = {
    "alloc": "a folio or page-table page taken from the page allocator",
    "free": "pages returned to the page allocator",
    "zero": "the kernel zeroed a folio through the direct map",
    "zap": "direct-map entries made invalid (set_direct_map_*_noflush with valid=false)",
    "restore": "direct-map entries made valid again",
    "split": "a large direct-map leaf split into a table of smaller leaves",
    "collapse": "a table of identical small leaves merged back into one large leaf",
    "flush": "a TLB flush of a kernel range (per-page invalidations)",
    "flush_all": "a full TLB flush on every CPU",
    "ipi": "inter-processor interrupts sent to run a flush on other CPUs",
    "insert": "a folio stored in a page cache (xarray)",
    "delete": "a folio removed from a page cache (xarray)",
    "free_folio": "the mapping's ->free_folio callback ran",
    "access": "a CPU touched a page through the direct map and the MMU allowed it",
    "stale": "a CPU read a page through a stale TLB entry after its direct-map entry was invalidated",
    "oops": "a CPU touched a page whose direct-map entry is not present: kernel page fault (oops)",
    "warn": "a WARN_ON fired in the kernel",
    "error": "a kernel function returned an error",
    "invalidate": "KVM invalidation of guest mappings (invalidate_begin/end, arch invalidate)",
    "prepare": "guest_memfd prepared a folio for the guest",
    "mermap": "a temporary local mapping (mermap) was set up or torn down",
}


class Event(NamedTuple):
    """One thing the modelled kernel did; ``args`` maps names to values in the order the kernel gave them.
    Treat it as read-only: the trace keeps the keyword dict of the call that emitted the event."""

    kind: str
    args: dict

    def get(self, name, default=None):
        return self.args.get(name, default)

    def as_dict(self) -> dict:
        return {"kind": self.kind, **self.args}

    def __str__(self) -> str:
        inner = " ".join(f"{k}={show_value(k, v)}" for k, v in self.args.items())
        return f"{self.kind}({inner})" if inner else self.kind


_new_event = tuple.__new__


class Trace:
    """The event trace, a read-only sequence of :class:`Event` (index it, slice it — a slice is a Trace too —
    iterate it, compare it). It keeps two parallel lists, the kinds and the keyword dicts, and builds an Event only
    when one is read: appending a str and a dict of plain values allocates nothing the garbage collector tracks,
    and the model appends about eleven events per folio. :meth:`Kernel.emit` is the only writer."""

    __slots__ = ("kinds", "args")

    def __init__(self, kinds=None, args=None):
        self.kinds: list[str] = kinds if kinds is not None else []
        self.args: list[dict] = args if args is not None else []

    def __len__(self) -> int:
        return len(self.kinds)

    def __getitem__(self, i):
        if type(i) is slice:
            return Trace(self.kinds[i], self.args[i])
        return _new_event(Event, (self.kinds[i], self.args[i]))

    def __iter__(self):
        for pair in zip(self.kinds, self.args, strict=True):
            yield _new_event(Event, pair)

    def __reversed__(self):
        for pair in zip(reversed(self.kinds), reversed(self.args), strict=True):
            yield _new_event(Event, pair)

    def __eq__(self, other) -> bool:
        if isinstance(other, Trace):
            return self.kinds == other.kinds and self.args == other.args
        return list(self) == other

    __hash__ = None

    def __repr__(self) -> str:
        return f"Trace({list(self)!r})"


_PFN_KEYS = ("pfn", "src", "dst")


def show_value(key: str, value) -> str:
    """PFNs print in hex, as the kernel prints them; everything else as is."""
    if key in _PFN_KEYS and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:#x}"
    return str(value)


def event(kind: str, **args) -> Event:
    """Build an event; keyword order is kept, so the same call always prints the same text."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    return Event(kind, args)
