"""A cost model: the model's counters times a price each, every price with its value, unit, source and a badge
saying how much to trust it. What it computes is *estimated from the cost model*, never kernel time.

Badges are computed from how a value was obtained (its origin), never typed in: ``published`` (a figure someone
published, in a mail or a kernel comment, possibly divided into a per-page price), ``measured here`` (this machine,
this run: ``nbmodel.realkernel.probe()``), ``measured elsewhere`` (a measurement of another machine that nobody
published), ``derived`` (computed by this project from other prices or measurements, e.g. a fitted residual) and
``illustrative`` (a round number so the arithmetic can be shown; replace it). Estimates print with two significant
figures (:func:`sig`): no price is known better than that.

Population is priced per path: ``write()`` and ``memcpy`` through the VMM's mapping each from their own published
figure (202 ms and 436 ms for 512 MiB), so the two differ by the published ratio.

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

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

#: The memfd_secret probe's kind: a kind of file, not the design of the same name.
SECRETMEM_PROBE = "secretmem"

#: How a price was obtained, most trusted first. A badge is never typed in: ``Param.badge`` computes it from the
#: price's origin (:class:`Published`, :class:`Measured`, :class:`Derived`, :class:`Illustrative`).
BADGES = ("published", "measured here", "measured elsewhere", "derived", "illustrative")
#: The label every estimate carries: it is model time, never kernel time.
LABEL = "estimated from the cost model"

#: 512 MiB in 4 KiB pages: the unit of the write() series' published population figures.
PAGES_512M = (512 << 20) >> 12


@dataclass(frozen=True)
class Published:
    """A figure someone published: ``amount`` (in the price's unit times ``per``) and where (``citation``). The
    price is ``amount / per``: e.g. 202 ms for 512 MiB is 202e6 ns per 131072 pages."""

    amount: float
    per: float
    citation: str
    division: str = ""
    badge = "published"

    def resolve(self, prices: dict) -> float:
        return self.amount / self.per

    def source(self) -> str:
        return self.citation + (f" ({self.division})" if self.division else "")


@dataclass(frozen=True)
class Measured:
    """A figure measured by running something: ``where`` is ``"here"`` (this machine, this run) or the machine it was
    measured on; ``how`` says what was timed."""

    amount: float
    where: str
    how: str

    @property
    def badge(self) -> str:
        return "measured here" if self.where == "here" else "measured elsewhere"

    def resolve(self, prices: dict) -> float:
        return self.amount

    def source(self) -> str:
        return self.how if self.where == "here" else f"{self.how} (measured on {self.where})"


@dataclass(frozen=True)
class Derived:
    """A price computed by this project from other prices or figures: ``formula`` says how, ``inputs`` names the
    prices ``fn`` takes (in order). A residual fitted from measurements is derived too, not measured."""

    formula: str
    inputs: tuple = ()
    fn: Callable = None
    badge = "derived"

    def resolve(self, prices: dict) -> float:
        return float(self.fn(*(prices[name] for name in self.inputs)))

    def source(self) -> str:
        return f"derived: {self.formula}"


@dataclass(frozen=True)
class Illustrative:
    """A round number so the arithmetic can be shown; ``why`` says what it leans on. Replace it."""

    amount: float
    why: str
    badge = "illustrative"

    def resolve(self, prices: dict) -> float:
        return self.amount

    def source(self) -> str:
        return f"round number; {self.why}"


@dataclass(frozen=True)
class Param:
    """One price: ``value`` in ``unit``, what it prices, and its ``origin``; ``badge`` and ``source`` follow from the
    origin."""

    name: str
    value: float
    unit: str
    what: str
    origin: object

    @property
    def badge(self) -> str:
        return self.origin.badge

    @property
    def source(self) -> str:
        return self.origin.source()

    def row(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit, "badge": self.badge,
                "what": self.what, "source": self.source}


def _resolve(params: dict) -> dict:
    """Every param with its value computed from its origin (derived prices after the prices they use)."""
    values: dict = {}
    pending = dict(params)
    while pending:
        progressed = False
        for name, p in list(pending.items()):
            needs = getattr(p.origin, "inputs", ())
            if all(n in values for n in needs):
                values[name] = p.origin.resolve(values)
                del pending[name]
                progressed = True
        if not progressed:
            raise ValueError(f"derived prices with missing or circular inputs: {', '.join(pending)}")
    return {name: replace(p, value=values[name]) for name, p in params.items()}


def _p(name, unit, what, origin) -> Param:
    return Param(name, float("nan"), unit, what, origin)


WRITE_SERIES = ("Nikita Kalyazin, \"[PATCH v7 0/2] KVM: guest_memfd: use write for population\", 2025-11-14, "
                "https://lore.kernel.org/all/20251114151828.98165-1-kalyazin@amazon.com/: populating 512 MiB on x86")
TLB_C = ("arch/x86/mm/tlb.c, comment on tlb_single_page_flush_ceiling: \"Each single flush is about 100 ns\"")

#: The default prices (``CostModel().format_table()`` prints them). ``CostModel.from_probe()`` replaces some
#: with figures measured on this machine.
#:
#: :meta hide-value:
DEFAULTS = _resolve({p.name: p for p in (
    _p("populate_page_ns", "ns/page",
       "a populating fault with a copy in: fault, allocate, zero once, insert, map, memcpy 4 KiB through the VMM's "
       "mapping (memcpy population; also the price of a plain populating fault)",
       Published(436e6, PAGES_512M, WRITE_SERIES + " via memcpy in 436 ms", "436 ms / 131072 pages")),
    _p("populate_write_page_ns", "ns/page",
       "a page populated by write(): allocate, zero once, insert, copy 4 KiB in the kernel (no fault, no user PTE)",
       Published(202e6, PAGES_512M, WRITE_SERIES + " via write() in 202 ms", "202 ms / 131072 pages")),
    _p("zero_bytes_per_ns", "bytes/ns (GB/s)", "clear_highpage() / folio_zero_range() bandwidth",
       Illustrative(10.0, "REP STOSB on a current server core; measure_zero_bandwidth() measures memset here")),
    _p("cpa_call_ns", "ns/call",
       "one set_direct_map_*_noflush() call that needs no split (page walk, cpa_lock, PTE write)",
       Illustrative(250, "the kernel has no published figure")),
    _p("split_ns", "ns/split",
       "split_large_page(): allocate a page-table page, fill 512 entries, install (its flush_tlb_all() is "
       "priced under full flushes)",
       Illustrative(1000, "no per-split figure is published; Michael Roth measured 8.0 vs 12.9 GB/s fault-in with "
                          "on-demand splits vs a pre-split map on 128 vCPUs (SNP v1 thread, 2024-01-16)")),
    _p("cont_split_ns", "ns/split", "arm64 split_contpte()/split_contpmd(): rewrite 16 entries, no allocation",
       Illustrative(100, "a tenth of split_ns: no allocation, 16 entries")),
    _p("flush_call_ns", "ns/flush", "fixed cost of one flush_tlb_kernel_range() (setup, local flush, wait)",
       Illustrative(300, "no published figure")),
    _p("invlpg_ns", "ns/page/CPU", "one INVLPG (x86), counted once per CPU that runs it", Published(100, 1, TLB_C)),
    _p("tlbi_ns", "ns/page", "one broadcast TLBI VAALE1IS (arm64) between the DSBs",
       Illustrative(100, "set equal to the x86 INVLPG figure for lack of a published arm64 number")),
    _p("full_flush_ns", "ns/flush", "flush_tlb_all() on the local CPU plus refilling what it dropped",
       Derived("33 x invlpg_ns: arch/x86/mm/tlb.c flushes everything above 33 pages because by then a full flush "
               "is cheaper than the INVLPGs (the comment caps the overhead at \"about 3,000 ns\")",
               ("invlpg_ns",), lambda invlpg: 33 * invlpg)),
    _p("ipi_ns", "ns/target CPU", "one shootdown IPI: send, remote entry, INVLPG loop start, acknowledgement",
       Illustrative(1000, "Nadav Amit (USENIX ATC 2017): \"TLB shootdown can take microseconds\"")),
    _p("mermap_map_ns", "ns/page", "mermap_get()+mermap_put(): write and clear one local PTE, no flush",
       Illustrative(50, "mm/mermap.c in Brendan Jackman's draft series has no published figure")),
    _p("mermap_flush_ns", "ns/flush",
       "arch_mermap_flush_tlb(): a local __flush_tlb_all() when the per-CPU window wraps",
       Illustrative(500, "no published figure")),
    _p("secretmem_fault_ns", "ns/page",
       "one memfd_secret page fault (median, net of the probe loop); a calibration point, not a term",
       Measured(12600, "this project's build machine (2 vCPU AMD EPYC guest, Linux 6.18)",
                "realkernel.probe('secretmem'); from_probe() measures it here")),
)})

#: Published figures a reader can hold estimates against (none of them is a model input except the write() pair).
#:
#: :meta hide-value:
PUBLISHED = (
    ("TLB flush after each guest_memfd zap", "page faults up to 40x longer (growing with the number of cores); "
     "population 5x slower", "Patrick Roy, direct map removal series v7 (2025-09-24), as quoted in review",
     "published"),
    ("flush batched every 512 zapped pages", "within 30% of no flushes at all", "Patrick Roy, same thread",
     "published"),
    ("memcpy vs write() population of 512 MiB", "436 ms vs 202 ms", WRITE_SERIES, "published"),
    ("pre-split vs on-demand split direct map, SNP fault-in", "12.9 vs 8.0 GB/s", "Michael Roth, SNP v1 thread, "
     "2024-01-16", "published"),
)


#: Which price a population path pays per page.
POPULATION_PRICES = {"memcpy": "populate_page_ns", "write": "populate_write_page_ns"}


def sig(x: float, digits: int = 2) -> str:
    """``x`` rounded to ``digits`` significant figures, printed without an exponent: 1038.36 -> ``1000``,
    465.49 -> ``470``, 3.326 -> ``3.3``. Estimates are printed this way: their prices are round numbers."""
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(x)))
    r = round(x, decimals)
    if r != 0 and math.floor(math.log10(abs(r))) != math.floor(math.log10(abs(x))):   # 99.6 -> 100: one digit fewer
        decimals -= 1
        r = round(x, decimals)
    return f"{r:.{max(decimals, 0)}f}"


def ms(ns: float) -> str:
    """An estimate in ns as ``"470 ms"`` (two significant figures)."""
    return f"{sig(ns / 1e6)} ms"


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
        return f"{ms(self.total_ns)} ({self.label})"


class CostModel:
    """Prices (:class:`Param` by name) and :meth:`estimate`."""

    def __init__(self, params: dict | None = None):
        merged = dict(DEFAULTS)
        merged.update(params or {})
        self.params = _resolve(merged)   # a derived price follows the prices it is computed from

    def __getitem__(self, name: str) -> float:
        return self.params[name].value

    def with_origin(self, name: str, origin) -> CostModel:
        """A copy with one price replaced by a value of the given origin (its badge and source follow from it)."""
        if name not in self.params:
            raise ValueError(f"unknown price {name!r}; known: {', '.join(self.params)}")
        if not isinstance(origin, (Published, Measured, Derived, Illustrative)):
            raise ValueError("origin must be Published, Measured, Derived or Illustrative")
        new = dict(self.params)
        new[name] = replace(new[name], origin=origin)
        return CostModel(new)

    def with_value(self, name: str, value: float, badge: str, source: str) -> CostModel:
        """A copy with one price replaced by ``value``, obtained as ``badge`` says (one of :data:`BADGES`)."""
        origins = {"published": lambda: Published(value, 1, source),
                   "measured here": lambda: Measured(value, "here", source),
                   "measured elsewhere": lambda: Measured(value, "elsewhere", source),
                   "derived": lambda: Derived(source, (), lambda: value),
                   "illustrative": lambda: Illustrative(value, source)}
        if badge not in origins:
            raise ValueError(f"badge must be one of {BADGES}")
        return self.with_origin(name, origins[badge]())

    def estimate(self, counters: dict, arch: str = "x86", populated_pages: int = 0,
                 zeroed_pages: int | None = None, population: str = "memcpy") -> Estimate:
        """Estimated kernel time for a run with these counter values (deltas). ``population`` is how the pages were
        populated: ``"memcpy"`` (a fault per page; also any faulting population) or ``"write"`` (``write()``), each
        priced from its own published figure. ``zeroed_pages`` defaults to
        ``zeroings`` (4K folios); pass ``zeroings * pages_per_folio`` for large folios. Linear in every count with
        non-negative prices, so it never decreases when a count grows (populated pages aside, which absorb one
        zeroing each)."""
        if population not in POPULATION_PRICES:
            raise ValueError(f"population must be one of {', '.join(POPULATION_PRICES)}, not {population!r}")
        c = lambda name: counters.get(name, 0)  # noqa: E731
        zeroed = c("zeroings") if zeroed_pages is None else zeroed_pages
        inval = self["invlpg_ns"] if arch == "x86" else self["tlbi_ns"]
        parts = {
            "population": populated_pages * self[POPULATION_PRICES[population]],
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
        populate cost (guest_memfd, else memfd), zeroing bandwidth if given; and (badge ``derived``) an IPI
        price so that the
        model's per-page secretmem cost (one direct-map call, one ranged flush of one page, one IPI per other CPU)
        matches the measured secretmem - guest_memfd difference; and, from a probe run with ``attribute=True``
        that saw splits, the split price (splitting faults minus plain ones, minus the flush they cause).
        ``results``: ``nbmodel.realkernel.ProbeResult`` objects."""
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
            m = m.with_value("ipi_ns", max(0.0, (extra - rest) / (ncpus - 1)), "derived",
                             f"(secretmem - {base.kind} per page = {extra:.0f} ns) minus the other "
                             f"per-page terms, over {ncpus - 1} target CPU(s)")
        timed = [r for r in results if getattr(r, "split_fault_ns", None) and getattr(r, "plain_fault_ns", None)]
        if timed:
            r = timed[0]
            extra = r.split_fault_ns - r.plain_fault_ns
            flush = m["full_flush_ns"] + (ncpus - 1) * m["ipi_ns"]
            m = m.with_value("split_ns", max(0.0, extra - flush), "derived",
                             f"a memfd_secret fault that split a 2M leaf took {extra:.0f} ns more (median) "
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
    if kind != SECRETMEM_PROBE:
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


def format_comparison(rows: list[Comparison], where: str = "here") -> str:
    """The comparison as text, with the secretmem / guest_memfd ratio predicted and measured; ``where`` the
    probes were measured (e.g. ``ProbeRecord.label``)."""
    if not rows:
        return "predicted vs measured: no probe ran"
    lines = [f"predicted ({LABEL}) vs measured {where}, populate cost per page:"]
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


__all__ = ["BADGES", "LABEL", "Param", "Published", "Measured", "Derived", "Illustrative", "DEFAULTS", "PUBLISHED",
           "POPULATION_PRICES", "sig", "ms", "Estimate", "CostModel", "Comparison",
           "probe_counters", "compare_with_probe", "format_comparison", "measure_zero_bandwidth"]
