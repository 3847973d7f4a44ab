"""A cost model: the model's counters times a price each, every price with its value, unit, source and a badge
saying how much to trust it. What it computes is *estimated from the cost model*, never kernel time.

Badges: ``measured here`` (this machine, this run: :func:`nbmodel.realkernel.probe`), ``published measurement``
(a number someone measured and published), ``maintainer statement`` (a number a maintainer wrote down, e.g. in a
kernel comment), ``illustrative`` (a plausible round number so the arithmetic can be shown; replace it).

The terms, and the kernel work each stands for:

================  ===========================================================================================
population        populating faults (``shmem``/``kvm_gmem`` fault, allocation, page-cache insert, one zeroing)
zeroing           zeroings beyond one per populated page (``clear_highpage()`` on removal, secretmem's free)
direct-map calls  ``set_direct_map_*_noflush()`` walks (``__change_page_attr_set_clr()`` under ``cpa_lock``)
splits            ``split_large_page()`` (x86) / ``split_kernel_leaf_mapping()`` (arm64): a page-table page
cont splits       arm64 ``split_contpte()`` / ``split_contpmd()``: rewrite 16 entries
ranged flushes    ``flush_tlb_kernel_range()`` calls plus their per-page INVLPG / TLBI
full flushes      ``flush_tlb_all()`` (after every x86 split, above the flush ceiling, batched zaps)
IPIs              ``on_each_cpu()`` shootdown interrupts, per target CPU (x86 without INVLPGB)
mermap            ``mermap_get()``/``mermap_put()`` per page and the local flush when the window wraps
================  ===========================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

BADGES = ("measured here", "published measurement", "maintainer statement", "illustrative")
LABEL = "estimated from the cost model"


@dataclass(frozen=True)
class Param:
    """One price: ``value`` in ``unit``, where it comes from, and its badge (one of :data:`BADGES`)."""

    name: str
    value: float
    unit: str
    source: str
    badge: str
    what: str

    def row(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit, "badge": self.badge,
                "what": self.what, "source": self.source}


def _p(name, value, unit, badge, what, source) -> Param:
    return Param(name, value, unit, source, badge, what)


#: The default prices. ``CostModel.from_probe()`` replaces some with figures measured on this machine.
DEFAULTS = {p.name: p for p in (
    _p("populate_page_ns", 1541, "ns/page", "published measurement",
       "a populating fault: fault, allocate, zero once, insert, map, copy 4 KiB in",
       "guest_memfd write() series v7 cover letter: 512 MiB populated by memcpy through the mapping in 202 ms "
       "(kernel-facts.md 7.2)"),
    _p("zero_bytes_per_ns", 10.0, "bytes/ns (GB/s)", "illustrative",
       "clear_highpage() / folio_zero_range() bandwidth",
       "round number for REP STOSB on a current server core; measure_zero_bandwidth() measures memset here"),
    _p("cpa_call_ns", 250, "ns/call", "illustrative",
       "one set_direct_map_*_noflush() call that needs no split (page walk, cpa_lock, PTE write)",
       "round number; the kernel has no published figure"),
    _p("split_ns", 1000, "ns/split", "illustrative",
       "split_large_page(): allocate a page-table page, fill 512 entries, install (its flush_tlb_all() is "
       "priced under full flushes)",
       "round number; Dave Hansen: \"It's sloooooooow to remove things from the direct map\" (SNP v1 thread, "
       "anchors.md P7); Michael Roth measured 8.0 vs 12.9 GB/s fault-in with on-demand splits vs a pre-split "
       "map on 128 vCPUs (anchors.md P6)"),
    _p("cont_split_ns", 100, "ns/split", "illustrative",
       "arm64 split_contpte()/split_contpmd(): rewrite 16 entries, no allocation", "round number"),
    _p("flush_call_ns", 300, "ns/flush", "illustrative",
       "fixed cost of one flush_tlb_kernel_range() (setup, local flush, wait)", "round number"),
    _p("invlpg_ns", 100, "ns/page/CPU", "maintainer statement",
       "one INVLPG (x86), counted once per CPU that runs it",
       "arch/x86/mm/tlb.c, tlb_single_page_flush_ceiling comment: \"Each single flush is about 100 ns\""),
    _p("tlbi_ns", 100, "ns/page", "illustrative",
       "one broadcast TLBI VAALE1IS (arm64) between the DSBs",
       "set equal to the x86 INVLPG figure for lack of a published arm64 number"),
    _p("full_flush_ns", 3300, "ns/flush", "maintainer statement",
       "flush_tlb_all() on the local CPU plus refilling what it dropped",
       "arch/x86/mm/tlb.c: above 33 pages a full flush is cheaper than ~100 ns INVLPGs, so one costs about "
       "33 x 100 ns"),
    _p("ipi_ns", 1000, "ns/target CPU", "illustrative",
       "one shootdown IPI: send, remote entry, INVLPG loop start, acknowledgement",
       "Nadav Amit (ATC'17): \"TLB shootdown can take microseconds\"; anchors.md P9/P10 (~1 us base + "
       "~200 ns per receiver, an educational visualizer)"),
    _p("mermap_map_ns", 50, "ns/page", "illustrative",
       "mermap_get()+mermap_put(): write and clear one local PTE, no flush", "round number (mm/mermap.c draft)"),
    _p("mermap_flush_ns", 500, "ns/flush", "illustrative",
       "arch_mermap_flush_tlb(): a local __flush_tlb_all() when the per-CPU window wraps", "round number"),
    _p("secretmem_fault_ns", 12600, "ns/page", "illustrative",
       "one memfd_secret page fault (median, net of the probe loop); a calibration point, not a term",
       "this project's build machine (2 vCPU AMD EPYC guest, Linux 6.18); from_probe() measures it here"),
)}

#: Published figures a reader can hold estimates against (none of them is a model input).
PUBLISHED = (
    ("TLB flush after each guest_memfd zap", "page faults up to 40x longer, population 5x slower",
     "Patrick Roy, [PATCH v7 06/12] (anchors.md P1)", "published measurement"),
    ("flush batched every 512 zapped pages", "within 30% of no flushes at all", "Patrick Roy (anchors.md P2)",
     "published measurement"),
    ("write() vs memcpy population of 512 MiB", "436 ms vs 202 ms", "write() series v7 cover letter",
     "published measurement"),
    ("pre-split vs on-demand split direct map, SNP fault-in", "12.9 vs 8.0 GB/s", "Michael Roth (anchors.md P6)",
     "published measurement"),
)


@dataclass
class Estimate:
    """A total and its parts in ns, always printed with :data:`LABEL`."""

    parts: dict = field(default_factory=dict)
    label: str = LABEL

    @property
    def total_ns(self) -> float:
        return sum(self.parts.values())

    def as_dict(self) -> dict:
        return {"total_ns": self.total_ns, "parts": dict(self.parts), "label": self.label}

    def __str__(self) -> str:
        return f"{self.total_ns / 1e6:.3f} ms ({self.label})"


class CostModel:
    """Prices (:class:`Param` by name) and :meth:`estimate`."""

    def __init__(self, params: dict | None = None):
        self.params = dict(DEFAULTS)
        self.params.update(params or {})

    def __getitem__(self, name: str) -> float:
        return self.params[name].value

    def with_value(self, name: str, value: float, badge: str, source: str) -> CostModel:
        """A copy with one price replaced (and its badge and source with it)."""
        if badge not in BADGES:
            raise ValueError(f"badge must be one of {BADGES}")
        new = dict(self.params)
        new[name] = replace(new[name], value=value, badge=badge, source=source)
        return CostModel(new)

    def estimate(self, counters: dict, arch: str = "x86", populated_pages: int = 0,
                 zeroed_pages: int | None = None) -> Estimate:
        """Estimated kernel time for a run with these counter values (deltas). ``zeroed_pages`` defaults to
        ``zeroings`` (4K folios); pass ``zeroings * pages_per_folio`` for large folios. Linear in every count with
        non-negative prices, so it never decreases when a count grows (populated pages aside, which absorb one
        zeroing each)."""
        c = lambda name: counters.get(name, 0)  # noqa: E731
        zeroed = c("zeroings") if zeroed_pages is None else zeroed_pages
        inval = self["invlpg_ns"] if arch == "x86" else self["tlbi_ns"]
        parts = {
            "population": populated_pages * self["populate_page_ns"],
            "zeroing": max(0, zeroed - populated_pages) * 4096 / self["zero_bytes_per_ns"],
            "direct-map calls": (c("zaps") + c("restores")) * self["cpa_call_ns"],
            "splits": (c("direct_map_level2_splits") + c("direct_map_level3_splits")) * self["split_ns"],
            "cont splits": (c("arm64_contpte_splits") + c("arm64_contpmd_splits")) * self["cont_split_ns"],
            "ranged flushes": c("tlb_flushes") * self["flush_call_ns"] + c("tlb_page_invalidations") * inval,
            "full flushes": c("tlb_full_flushes") * self["full_flush_ns"],
            "IPIs": c("ipis") * self["ipi_ns"],
            "mermap": c("mermap_maps") * self["mermap_map_ns"] + c("mermap_local_flushes") * self["mermap_flush_ns"],
        }
        return Estimate(parts)

    def table(self) -> list[dict]:
        """Every price as a row: name, value, unit, badge, what, source."""
        return [p.row() for p in self.params.values()]

    def format_table(self, sources: bool = True) -> str:
        """The prices as text: value, unit, badge, what it prices, and (``sources``) where it comes from."""
        lines = []
        for p in self.params.values():
            lines.append(f"{p.name:<20}{p.value:>9.5g} {p.unit:<16}[{p.badge}]  {p.what}")
            if sources:
                lines.append(f"{'':<20}source: {p.source}")
        return "\n".join(lines)

    # -- calibration from the live probes ---------------------------------------------------------------------
    @classmethod
    def from_probe(cls, results, zero_bytes_per_ns: float | None = None, cpus: int | None = None) -> CostModel:
        """Replace prices with this machine's figures (badge ``measured here``): the secretmem fault, the
        populate cost (guest_memfd, else memfd), zeroing bandwidth if given, and an IPI price derived so that the
        model's per-page secretmem cost (one direct-map call, one ranged flush of one page, one IPI per other CPU)
        matches the measured secretmem - guest_memfd difference; and, from a probe run with ``attribute=True``
        that saw splits, the split price (splitting faults minus plain ones, minus the flush they cause).
        ``results``: :class:`~nbmodel.realkernel.ProbeResult` objects."""
        import os
        m = cls()
        by = {r.kind: r for r in results if not r.skipped and r.ns_net_median > 0}
        if zero_bytes_per_ns:
            m = m.with_value("zero_bytes_per_ns", zero_bytes_per_ns, "measured here",
                             "userspace memset of a pre-faulted 256 MiB buffer (stands in for clear_page())")
        base = by.get("guest_memfd") or by.get("memfd")
        if base is not None:
            m = m.with_value("populate_page_ns", base.ns_net_median, "measured here",
                             f"{base.kind} populate, median per page, net of the probe loop")
        sec = by.get("secretmem")
        if sec is not None:
            m = m.with_value("secretmem_fault_ns", sec.ns_net_median, "measured here",
                             "memfd_secret populate, median per page, net of the probe loop")
        ncpus = cpus or os.cpu_count() or 1
        if sec is not None and base is not None and ncpus > 1:
            extra = sec.ns_net_median - base.ns_net_median
            rest = m["cpa_call_ns"] + m["flush_call_ns"] + ncpus * m["invlpg_ns"]
            m = m.with_value("ipi_ns", max(0.0, (extra - rest) / (ncpus - 1)), "measured here",
                             f"derived: (secretmem - {base.kind} per page = {extra:.0f} ns) minus the other "
                             f"per-page terms, over {ncpus - 1} target CPU(s)")
        timed = [r for r in results if getattr(r, "split_fault_ns", None) and getattr(r, "plain_fault_ns", None)]
        if timed:
            r = timed[0]
            extra = r.split_fault_ns - r.plain_fault_ns
            flush = m["full_flush_ns"] + (ncpus - 1) * m["ipi_ns"]
            m = m.with_value("split_ns", max(0.0, extra - flush), "measured here",
                             f"derived: a memfd_secret fault that split a 2M leaf took {extra:.0f} ns more (median) "
                             f"than one that did not, minus its flush_tlb_all() ({flush:.0f} ns)")
        return m


@dataclass(frozen=True)
class Comparison:
    """One probe kind: the cost model's per-page populate estimate beside what the probe measured here."""

    kind: str
    predicted_ns: float
    measured_ns: float
    counters: dict

    @property
    def ratio(self) -> float:
        """measured / predicted."""
        return self.measured_ns / self.predicted_ns if self.predicted_ns else float("inf")


def probe_counters(kind: str, pages: int, splits: tuple[int, int], cpus: int) -> dict:
    """The modelled kernel work of populating ``pages`` pages of a probe ``kind`` on an x86 machine with ``cpus``
    CPUs: memfd and guest_memfd (no NO_DIRECT_MAP flag in mainline) do none; ``secretmem_fault()`` does one
    ``set_direct_map_invalid_noflush()`` and one ``flush_tlb_kernel_range()`` of one page per page (INVLPG on
    every CPU, an IPI to each other one), and every split the kernel counted adds ``flush_tlb_all()`` + IPIs."""
    if kind != "secretmem":
        return {}
    l2, l3 = splits
    n = l2 + l3
    return {"zaps": pages, "tlb_flushes": pages, "tlb_page_invalidations": pages * cpus,
            "direct_map_level2_splits": l2, "direct_map_level3_splits": l3, "tlb_full_flushes": n,
            "ipis": (pages + n) * (cpus - 1)}


def compare_with_probe(results, model: CostModel | None = None, cpus: int | None = None) -> list[Comparison]:
    """Predicted (``model``, default prices unless given) vs measured populate cost per page for each probe that
    ran, using the splits the kernel really counted. With :meth:`CostModel.from_probe` prices the secretmem row
    agrees by construction (its IPI price is fitted to it); the default prices make it a real prediction."""
    import os
    model = model or CostModel()
    ncpus = cpus or os.cpu_count() or 1
    out = []
    for r in results:
        if r.skipped or r.pages <= 0 or r.ns_net_median <= 0:
            continue
        splits = (r.populate.get("direct_map_level2_splits", 0), r.populate.get("direct_map_level3_splits", 0))
        counters = probe_counters(r.kind, r.pages, splits, ncpus)
        est = model.estimate(counters, "x86", populated_pages=r.pages, zeroed_pages=r.pages)
        out.append(Comparison(r.kind, est.total_ns / r.pages, r.ns_net_median, counters))
    return out


def format_comparison(rows: list[Comparison]) -> str:
    """The comparison as text, with the secretmem / guest_memfd ratio predicted and measured."""
    if not rows:
        return "predicted vs measured: no probe ran"
    lines = [f"predicted ({LABEL}) vs measured here, populate cost per page:"]
    for c in rows:
        lines.append(f"  {c.kind:<12} predicted {c.predicted_ns:>8.0f} ns   measured {c.measured_ns:>8.0f} ns   "
                     f"measured/predicted {c.ratio:.2f}")
    by = {c.kind: c for c in rows}
    base = by.get("guest_memfd") or by.get("memfd")
    sec = by.get("secretmem")
    if base is not None and sec is not None:
        lines.append(f"  secretmem / {base.kind}: predicted {sec.predicted_ns / base.predicted_ns:.2f}x, "
                     f"measured {sec.measured_ns / base.measured_ns:.2f}x")
    return "\n".join(lines)


def measure_zero_bandwidth(size: int = 256 << 20) -> float:
    """Bytes per ns of a userspace ``memset()`` over a pre-faulted buffer (``clear_page()`` stands behind it)."""
    import ctypes
    import time
    buf = ctypes.create_string_buffer(size)
    ctypes.memset(buf, 1, size)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter_ns()
        ctypes.memset(buf, 0, size)
        best = min(best, time.perf_counter_ns() - t)
    return size / best


__all__ = ["BADGES", "LABEL", "Param", "DEFAULTS", "PUBLISHED", "Estimate", "CostModel", "Comparison",
           "probe_counters", "compare_with_probe", "format_comparison", "measure_zero_bandwidth"]
