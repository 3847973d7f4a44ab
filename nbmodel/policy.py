"""What a design does to one folio, learned by running the design code itself on a small traced machine.

The range engine (``nbmodel.bulk``) counts guest-sized workloads by arithmetic on runs of pages; it must not
decide what a design does. It asks this module, which runs the one copy of the semantics
(:mod:`nbmodel.designs` through :class:`~nbmodel.system.System`) on a one-folio probe and reads back what
happened: was the folio zeroed, zapped (and with how many ``flush_tlb_kernel_range()`` calls), deferred to a
batched flush, refused, restored, zeroed again on the way out; which flags it ended with. A change to a design
(or a bug planted in it) reaches the benchmarks through here.

Each probe is a fresh :class:`~nbmodel.system.System` with the bulk run's own design options and arch, so arch
effects that are part of the machine (arm64's ``set_memory_valid()`` flushing inside the zap) are counted as the
traced model does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .designs import PRIVATE_NO_DIRECT_MAP
from .secretmem import KIND as SECRETMEM_FILE
from .system import System

ZAPPED, UPTODATE, ZEROED = 1, 2, 4  # a folio's state as the range engine keeps it
_FLUSH_CALL = ("flush_tlb_kernel_range", "set_memory_valid")
_PROBE_SIZE = 8 << 12


@dataclass(frozen=True)
class Effect:
    """What one op did to one folio (created or already cached)."""

    result: str               # the op's answer ("0", bytes written, or an errno name)
    created: bool             # a folio was created by this op
    zeroings: int             # folio_zero() calls on this folio
    zap_flushes: int | None   # None: not zapped by this op; else range-flush calls that followed the zap
    deferred: bool            # the zap's flush was deferred to one flush_tlb_all() at the end (batched)
    mermap_pages: int         # pages copied through a mermap window
    flags: int                # ZAPPED | UPTODATE | ZEROED after the op
    order: int                # order of the folio the op left at index 0


@dataclass(frozen=True)
class FreeEffect:
    """What truncation does to one cached folio."""

    restores: int   # the restores counter (folio_restore_direct_map() / set_direct_map_default_noflush() calls)
    zeroings: int


class Policy:
    """The design's per-folio effects for one bulk configuration (design options, arch, mode, CPUs, FWB)."""

    def __init__(self, **setup):
        self.setup = tuple(sorted(setup.items()))
        self._prefix: dict = {}  # (kind, flags, state) -> the ops that leave a folio in that state
        self._effects: dict = {}  # probe key -> what it showed (a probe runs once per key)

    def create(self, kind: str, size: int, flags=(), vm_type: str = "default") -> str:
        """The result of creating the file (the kernel's create-time checks, run for real)."""
        key = ("create", kind, size, frozenset(flags), vm_type)
        if key not in self._effects:
            s = _machine(self)
            if kind == SECRETMEM_FILE:
                step = s.step("secret_create", file="f", size=size)
            else:
                step = s.step("gmem_create", file="f", size=size, flags=sorted(flags), vm_type=vm_type)
            self._effects[key] = step.result
        return self._effects[key]

    def add(self, kind: str, flags, how: str) -> Effect:
        """``how`` on an index with no folio yet."""
        return _effect(self, kind, frozenset(flags), (), how)

    def use(self, kind: str, flags, how: str, state: int) -> Effect:
        """``how`` on a cached folio whose state is ``state``."""
        prefix = self._prefix.get((kind, frozenset(flags), state))
        if prefix is None:
            raise KeyError(f"no probe reaches state {state} for {kind} {sorted(flags)}")
        return _effect(self, kind, frozenset(flags), prefix, how)

    def free(self, kind: str, flags, state: int) -> FreeEffect:
        """Truncation of a cached folio in ``state``: restores and zeroings."""
        return _free(self, kind, frozenset(flags), self._prefix[(kind, frozenset(flags), state)])


def _machine(policy: Policy) -> System:
    """A fresh small traced machine with the bulk run's design options and arch."""
    return System(**dict(policy.setup), memory="64M", seed=0, trace=True)


def _fresh(policy: Policy, kind: str, flags: frozenset) -> System:
    s = _machine(policy)
    if kind == SECRETMEM_FILE:
        s.step("secret_create", file="f", size=_PROBE_SIZE)
    else:
        s.step("gmem_create", file="f", size=_PROBE_SIZE, flags=sorted(flags))
    return s


def _run(s: System, kind: str, how: str):
    op = {"fallocate": ("fallocate", {"len": 4096}), "write": ("write", {"len": 4096}),
          "user_fault": ("user_fault", {}), "guest_fault": ("guest_fault", {}),
          "secret_fault": ("secret_fault", {})}[how]
    return s.step(op[0], file="f", **op[1])


def _state(s: System) -> tuple[int, int]:
    folio = s.files["f"].mapping.lookup(0)
    if folio is None:
        return -1, 0
    bits = UPTODATE if folio.test("uptodate") else 0
    if folio.test("zeroed_at_add"):
        bits |= ZEROED
    if s.k.first_invalid(folio.pfn, folio.nr_pages) is not None or folio.private & PRIVATE_NO_DIRECT_MAP:
        bits |= ZAPPED
    return bits, folio.order


def _effect(policy: Policy, kind: str, flags: frozenset, prefix: tuple, how: str) -> Effect:
    key = (kind, flags, prefix, how)
    cache = policy._effects
    if key in cache:
        return cache[key]
    s = _fresh(policy, kind, flags)
    for p in prefix:
        _run(s, kind, p)
    had = s.files["f"].mapping.lookup(0) is not None
    step = _run(s, kind, how)
    kinds = [e.kind for e in step.events]
    zap_at = kinds.index("zap") if "zap" in kinds else None
    flushes = None
    if zap_at is not None:
        flushes = sum(1 for e in step.events[zap_at:] if e.kind == "flush" and not e.args.get("skipped")
                      or e.kind == "flush_all" and e.args.get("reason") in _FLUSH_CALL)
    deferred = any(e.kind == "flush_all" and e.args.get("reason") == "batched zap" for e in step.events)
    mermap = sum(e.args.get("pages", 0) for e in step.events if e.kind == "mermap")
    bits, order = _state(s)
    out = Effect(step.result, not had and bits >= 0, kinds.count("zero"), flushes, deferred, mermap,
                 max(bits, 0), order)
    if bits >= 0:
        policy._prefix.setdefault((kind, flags, bits), prefix + (how,))
    cache[key] = out
    return out


def _free(policy: Policy, kind: str, flags: frozenset, prefix: tuple) -> FreeEffect:
    key = ("free", kind, flags, prefix)
    cache = policy._effects
    if key not in cache:
        s = _fresh(policy, kind, flags)
        for p in prefix:
            _run(s, kind, p)
        step = s.step("close", file="f")
        d = step.counters
        if d.get("restore_splits") or d.get("warns"):
            raise ValueError("truncation splits or warns here: the range engine cannot count it")
        cache[key] = FreeEffect(d.get("restores", 0), d.get("zeroings", 0))
    return cache[key]


__all__ = ["Policy", "Effect", "FreeEffect", "ZAPPED", "UPTODATE", "ZEROED"]
