"""Live memfd_secret PFNs replayed through the x86 model: does the model split where the kernel split?

The kernel's page tables are not visible, and some of its 2M leaves were split before we started, so the
comparison is exact only where it can be judged:

a) the counters agree with each other: a 2M->4K split moves 2048 kB from DirectMap2M to DirectMap4k, a 1G->2M
   split 1 GiB from DirectMap1G to DirectMap2M (``split_page_count()`` in ``arch/x86/mm/pat/set_memory.c``);
b) the kernel split at most once per distinct 2M (1G) region touched, and at most what the model predicts;
c) closing the file restores every page (``secretmem_free_folio()``) and nothing collapses back: DirectMap4k
   stays where it was and no split or collapse is counted;
d) page by page (the split counters are read after every fault): each fault the kernel split on is one the model
   splits on too. A fault the model splits on and the kernel does not is a region the kernel had split before we
   started ("already split"); once a region has been touched, later faults in it split in neither.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field

from . import realkernel as rk
from .kernel import Kernel
from .physmem import MemoryMap
from .units import PAGES_1G, PAGES_2M

KB_2M, KB_1G = 2048, 1 << 20


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Round:
    """One memfd_secret population and close, judged against the model."""

    pages: int
    regions_2m: int
    regions_1g: int
    kernel: dict                     # counter deltas over the population
    freed: dict                      # counter deltas over the close
    model_level2: int = 0
    model_level3: int = 0
    model_freed_splits: int = 0
    already_split: int = 0           # regions the model splits on first touch and the kernel did not
    seen_before: int = 0             # pages in regions touched in an earlier round
    checks: list = field(default_factory=list)


@dataclass
class CrossCheck:
    size: int
    skipped: str | None = None
    ram: str = ""
    mode: str = ""
    rounds: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.skipped is None and all(c.ok for r in self.rounds for c in r.checks)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def report(self) -> str:
        if self.skipped:
            return f"crosscheck skipped: {self.skipped}"
        lines = [f"crosscheck: memfd_secret PFNs replayed through the x86 model ({self.mode}; RAM from {self.ram})"]
        for i, r in enumerate(self.rounds, 1):
            k = r.kernel
            lines.append(f" round {i}: {r.pages} pages in {r.regions_2m} 2M / {r.regions_1g} 1G regions; kernel "
                         f"L2 +{k.get('direct_map_level2_splits')} L3 +{k.get('direct_map_level3_splits')}, "
                         f"model L2 +{r.model_level2} L3 +{r.model_level3}; already split in the kernel: "
                         f"{r.already_split} region(s); pages in regions touched before: {r.seen_before}")
            lines += [f"   {'PASS' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in r.checks]
        return "\n".join(lines)


def model_kernel(pfns) -> tuple[Kernel, str]:
    """An x86 model booted on this machine's RAM map (``/proc/iomem``), or on the PFNs' 1G-aligned span."""
    ranges = rk.ram_ranges()
    if ranges:
        where = "/proc/iomem System RAM"
    else:
        lo, hi = min(pfns), max(pfns) + 1
        ranges = [(lo - lo % PAGES_1G, hi + (-hi) % PAGES_1G)]
        where = "the PFNs' span (no /proc/iomem addresses)"
    flags = _cpu_flags()
    mode = ("5-level" if "la57" in flags else "4-level") + ("" if "pdpe1gb" in flags else " nogbpages")
    k = Kernel("x86", mode, MemoryMap.of(ranges), cpus=min(64, os.cpu_count() or 1), trace=False)
    return k, where


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def replay(k: Kernel, pfns) -> list[tuple[int, int]]:
    """``secretmem_fault()`` for each PFN: ``set_direct_map_invalid_noflush()`` then ``flush_tlb_kernel_range()``;
    returns the (level2, level3) splits each one caused in the model."""
    c = k.counters
    out = []
    for pfn in pfns:
        l2, l3 = c["direct_map_level2_splits"], c["direct_map_level3_splits"]
        addr = k.page_address(pfn)
        k.set_direct_map_invalid_noflush(addr)
        k.flush_tlb_kernel_range(addr, addr + 4096)
        out.append((c["direct_map_level2_splits"] - l2, c["direct_map_level3_splits"] - l3))
    return out


def release(k: Kernel, pfns) -> int:
    """``secretmem_free_folio()`` for each PFN: ``set_direct_map_default_noflush()``; returns splits caused."""
    c = k.counters
    before = c["direct_map_level2_splits"] + c["direct_map_level3_splits"]
    for pfn in pfns:
        k.set_direct_map_default_noflush(k.page_address(pfn))
    return c["direct_map_level2_splits"] + c["direct_map_level3_splits"] - before


def judge(r: Round, kernel_at, model_at, pfns, seen: set) -> None:
    """Fill ``r.checks`` (a-d of the module docstring) from per-page kernel and model split attributions."""
    k, f = r.kernel, r.freed
    l2, l3 = k.get("direct_map_level2_splits", 0), k.get("direct_map_level3_splits", 0)
    add = r.checks.append
    want = (KB_2M * l2, -KB_2M * l2 + KB_1G * l3, -KB_1G * l3)
    got = (k.get("DirectMap4k"), k.get("DirectMap2M"), k.get("DirectMap1G"))
    add(Check("a) meminfo follows vmstat", got == want,
              f"DirectMap4k/2M/1G deltas {got} kB, expected {want} from L2 +{l2}, L3 +{l3}"))
    add(Check("b) at most one split per region touched", l2 <= r.regions_2m and l3 <= r.regions_1g,
              f"L2 +{l2} <= {r.regions_2m} regions, L3 +{l3} <= {r.regions_1g}"))
    add(Check("b) at most what the model predicts", l2 <= r.model_level2 and l3 <= r.model_level3,
              f"kernel L2 +{l2} L3 +{l3}, model L2 +{r.model_level2} L3 +{r.model_level3}"))
    freed_splits = sum(f.get(n, 0) for n in rk.COUNTER_NAMES[:4])
    add(Check("c) close restores without splitting or collapsing",
              f.get("DirectMap4k") == 0 and freed_splits == 0 and r.model_freed_splits == 0,
              f"DirectMap4k {f.get('DirectMap4k'):+d} kB, split/collapse events {freed_splits}, "
              f"model restore splits {r.model_freed_splits}"))
    per_page = sum(a for a, _ in kernel_at), sum(b for _, b in kernel_at)
    add(Check("d) per-fault attribution adds up", per_page == (l2, l3),
              f"sum over faults L2 {per_page[0]} L3 {per_page[1]} (another task splitting meanwhile breaks this)"))
    wrong = [i for i, (kk, mm) in enumerate(zip(kernel_at, model_at, strict=True)) if kk[0] > mm[0] or kk[1] > mm[1]]
    detail = "every kernel split is a model split"
    if wrong:
        detail = f"{len(wrong)} fault(s) split in the kernel but not in the model, first PFN {pfns[wrong[0]]:#x}"
    add(Check("d) kernel splits only where the model splits", not wrong, detail))
    first_touch, later = {}, 0
    for pfn, kk, mm in zip(pfns, kernel_at, model_at, strict=True):
        region = pfn // PAGES_2M
        if region in first_touch and kk[0]:
            later += 1
        first_touch.setdefault(region, (kk, mm))
    add(Check("d) a region splits only on its first fault", later == 0,
              f"{later} fault(s) split a 2M region touched earlier in the round; so the kernel's L2 = the "
              f"regions still 2M-mapped when first touched"))
    r.already_split = sum(1 for kk, mm in first_touch.values() if mm[0] and not kk[0])
    old = [(kk, mm) for pfn, kk, mm in zip(pfns, kernel_at, model_at, strict=True) if pfn // PAGES_2M in seen]
    r.seen_before = len(old)
    if old:
        add(Check("d) regions touched before split in neither", all(kk == mm == (0, 0) for kk, mm in old),
                  f"{len(old)} fault(s) in regions an earlier round touched"))


def crosscheck(size: int = 16 << 20, rounds: int = 2) -> CrossCheck:
    """Populate and close a memfd_secret file ``rounds`` times with per-fault attribution, replay each round's
    PFNs on one model kernel, and judge (see the module docstring). Skips with a reason where it cannot run."""
    out = CrossCheck(size)
    if platform.machine() != "x86_64":
        out.skipped = f"the split counters and this replay are x86-64 only (this is {platform.machine()})"
        return out
    if rk.read_counters() is None or rk.read_counters().get("direct_map_level2_splits") is None:
        out.skipped = "/proc/vmstat has no direct_map_level2_splits"
        return out
    k, seen = None, set()
    for _ in range(rounds):
        res = rk.probe("secretmem", size, pfns=True, attribute=True)
        if res.skipped:
            out.skipped = res.skipped
            return out
        pfns = res.pfns
        if k is None:
            k, out.ram = model_kernel(pfns)
            out.mode = k.dmap.describe()
        r = Round(len(pfns), len({p // PAGES_2M for p in pfns}), len({p // PAGES_1G for p in pfns}),
                  res.populate, res.freed)
        model_at = replay(k, pfns)
        r.model_level2 = sum(a for a, _ in model_at)
        r.model_level3 = sum(b for _, b in model_at)
        r.model_freed_splits = release(k, pfns)
        judge(r, res.split_at, model_at, pfns, seen)
        seen |= {p // PAGES_2M for p in pfns}
        out.rounds.append(r)
    return out


if __name__ == "__main__":
    print(crosscheck().report())
