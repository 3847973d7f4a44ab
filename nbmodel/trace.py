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
        inner = " ".join(f"{k}={_show(k, v)}" for k, v in self.args.items())
        return f"{self.kind}({inner})" if inner else self.kind


_new_event = tuple.__new__


class Trace(list):
    """The event trace. It stores each event as a plain ``(kind, args)`` tuple and hands it out as an
    :class:`Event` when indexed, sliced (a slice is a Trace too) or iterated. Appending a plain tuple is the
    cheapest thing the model's hottest line can do; building a tuple subclass costs a second allocation."""

    __slots__ = ()

    def __getitem__(self, i):
        got = list.__getitem__(self, i)
        if type(i) is slice:
            return Trace(got)
        return _new_event(Event, got)

    def __iter__(self):
        for t in list.__iter__(self):
            yield _new_event(Event, t)

    def __reversed__(self):
        for t in list.__reversed__(self):
            yield _new_event(Event, t)


_PFN_KEYS = ("pfn", "src", "dst")


def _show(key: str, value) -> str:
    """PFNs print in hex, as the kernel prints them; everything else as is."""
    if key in _PFN_KEYS and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:#x}"
    return str(value)


def event(kind: str, **args) -> Event:
    """Build an event; keyword order is kept, so the same call always prints the same text."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    return Event(kind, args)
