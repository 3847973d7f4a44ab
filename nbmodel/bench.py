"""``nbmodel bench``: guest-sized workloads under each design and arch, their counters, the kernel time they
would take *estimated from the cost model*, and how fast the model itself runs.

Workloads (one guest_memfd with ``MMAP | INIT_SHARED | NO_DIRECT_MAP``, closed at the end):

``boot-fallocate``  fallocate() the whole guest, then the guest faults every page in (``kvm_gmem_get_pfn()``)
``boot-fault``      the guest faults every page in, nothing pre-allocated
``balloon``         boot-fault, then three cycles of punching a quarter out and faulting it back (ballooning)
``recreate``        boot-fault, close, create again, boot-fault
``write``           population by ``write()`` (unmerged series; filemap design: through mermap)
``memcpy``          population by the VMM touching every page of its mapping (``kvm_gmem_fault_user_mapping()``)

Counts come from :mod:`nbmodel.bulk` (exactly the traced model's, per range, with each design's per-folio
effects learned by running the design code, :mod:`nbmodel.policy`; ``tests/test_bench.py`` proves it on
small machines). Speed targets (the model's own speed) are checked here, never in unit tests: bulk >= 1M
folio-ops/s with a 16 GiB populate + punch + close in <= 10 s; bulk on fragmenting work (a hole punched in every
other page of a 1G guest, one op per page) >= 200k ops/s and linear in the guest size; the traced System
stepped one op per page, as a reader steps it, >= 50k steps/s, flat in the page-cache size (16k cached folios
>= 0.8x the rate with 16); the model >= 25x faster than this machine's memfd_secret populate; and ``nbmodel
explore``'s default sweep complete in every configuration, within 120 s wall, at >= 10^5 states per CPU-second of
its exhaustive searches (:func:`explore_sweep`). ``--json`` adds a scaling table (:func:`scaling`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field

from .bulk import BulkSystem
from .cli import int_range, size_list
from .costmodel import LABEL, CostModel, sig
from .gcpause import gc_paused
from .secretmem import KIND as SECRETMEM_FILE
from .units import PAGE_SIZE, human, parse_size

try:
    import resource
except ImportError:  # Pyodide (the book's live chapters) has no resource module
    resource = None

WORKLOADS = ("boot-fallocate", "boot-fault", "balloon", "recreate", "write", "memcpy")
ARCHES = {"x86": ("x86", "4-level"), "arm64": ("arm64", "rodata-full"), "arm64-bbml2": ("arm64", "bbml2")}
DESIGNS = ("per-folio", "filemap", "secretmem")
FOLIOS = ("4K", "2M")
SIZES, QUICK_SIZES = ("1G", "4G", "16G"), ("64M", "256M")
#: The largest guest ``--sizes`` accepts: its machine (guest + 2G) stays under the model's memory limit, and a
#: run of the whole matrix at this size takes minutes, not hours.
MAX_BENCH_SIZE = 64 << 30
TARGETS = {"bulk_folio_ops_per_s": 1e6, "bulk_16g_seconds": 10.0, "model_over_live_secretmem": 25.0,
           "traced_steps_per_s": 5e4, "traced_steps_flat": 0.8, "bulk_fragment_ops_per_s": 2e5,
           "bulk_fragment_linear": 0.8, "explore_complete": 1.0, "explore_sweep_seconds": 120.0,
           "explore_states_per_cpu_s": 1e5}
#: Page-cache sizes (cached 4K folios) the one-op-per-page traced figure is taken at: small, then large.
STEP_CACHES = (16, 16384)
#: Guest sizes of the fragmenting bulk figure (a hole punched in every other page, one op per page).
FRAGMENT_SIZES = ("64M", "256M", "1G")
DM = ("DirectMap4k", "DirectMap2M", "DirectMap1G")


def workload_ops(name: str, size, no_direct_map: bool = True) -> list[dict]:
    """The ops of a workload on a guest of ``size`` bytes (fault ops take a ``len``: one fault per page).
    ``no_direct_map=False`` creates the guest_memfd without the flag: the baseline with no direct-map work."""
    n = parse_size(size)
    q = n // 4
    g = {"file": "g"}
    flags = ["MMAP", "INIT_SHARED"] + (["NO_DIRECT_MAP"] if no_direct_map else [])
    create = {"op": "gmem_create", **g, "size": n, "flags": flags}
    fault = {"op": "guest_fault", **g, "offset": 0, "len": n}
    close = {"op": "close", **g}
    if name == "boot-fallocate":
        return [create, {"op": "fallocate", **g, "offset": 0, "len": n}, fault, close]
    if name == "boot-fault":
        return [create, fault, close]
    if name == "balloon":
        cycles = []
        for c in range(3):
            cycles += [{"op": "punch_hole", **g, "offset": c * q, "len": q},
                       {"op": "guest_fault", **g, "offset": c * q, "len": q}]
        return [create, fault, *cycles, close]
    if name == "recreate":
        return [create, fault, close, create, fault, close]
    if name == "write":
        return [create, {"op": "write", **g, "offset": 0, "len": n}, close]
    if name == "memcpy":
        return [create, {"op": "user_fault", **g, "offset": 0, "len": n}, close]
    raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")


@dataclass
class BenchRun:
    """One workload on one configuration: results, counters (deltas), DirectMap before/after (kB), the estimate
    (ns, :data:`~nbmodel.costmodel.LABEL`), and the model's own speed (not deterministic)."""

    workload: str
    size: int
    folio: str
    arch: str
    design: str
    label: str
    results: list
    ok: bool
    counters: dict
    directmap_before: dict
    directmap_after: dict
    pages_added: int
    folio_ops: int
    estimate_ns: float
    estimate_parts: dict
    seconds: float = 0.0
    folio_ops_per_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def deterministic(self) -> dict:
        """Everything but the model's timing."""
        d = self.as_dict()
        d.pop("seconds")
        d.pop("folio_ops_per_s")
        return d


def run_workload(workload: str, size="1G", folio: str = "4K", arch: str = "x86", design: str = "filemap",
                 cpus: int = 2, seed: int = 0, batch_flush: bool = False, cost: CostModel | None = None,
                 memory=None, no_direct_map: bool = True) -> BenchRun:
    """Run one workload through the range engine. 2M folios use ``large_zap`` (ahead of v12, which refuses to
    zap large folios); ``write`` under filemap goes through mermap. ``no_direct_map=False`` is the baseline."""
    nbytes = parse_size(size)
    kind, mode = ARCHES[arch]
    memory = memory or human(nbytes + (2 << 30))
    write = "mermap" if workload == "write" else "refuse"
    b = BulkSystem(design=design, arch=kind, mode=mode, memory=memory, cpus=cpus, seed=seed, write=write,
                   large_folios=folio == "2M", large_zap=folio == "2M", batch_flush=batch_flush)
    before = {k: b.counters[k] for k in DM}
    start = dict(b.counters)
    t = time.perf_counter()
    results = [b.step(**op) for op in workload_ops(workload, nbytes, no_direct_map)]
    seconds = time.perf_counter() - t
    counters = {k: v - start.get(k, 0) for k, v in b.counters.items() if k not in DM}
    after = {k: b.counters[k] for k in DM}
    order_pages = 512 if folio == "2M" else 1
    est = (cost or CostModel()).estimate(counters, kind, populated_pages=b.pages_added,
                                         zeroed_pages=counters["zeroings"] * order_pages,
                                         population="write" if workload == "write" else "memcpy")
    label = b.config.label() + (" [large_zap]" if folio == "2M" else "")
    if not no_direct_map:
        label = "baseline (no NO_DIRECT_MAP)"
    ok = all(r == "0" or r.isdigit() for r in results)
    return BenchRun(workload, nbytes, folio, arch, design, label, results, ok, counters, before, after,
                    b.pages_added, b.folio_ops, est.total_ns, est.parts, seconds,
                    b.folio_ops / seconds if seconds else 0.0)


def matrix(sizes=SIZES, folios=FOLIOS, arches=tuple(ARCHES), designs=DESIGNS, workloads=WORKLOADS, cpus: int = 2,
           batch_flush: bool = False, cost: CostModel | None = None, progress: bool = True) -> list[BenchRun]:
    """Every combination, in a stable order."""
    from tqdm import tqdm
    combos = [(w, s, f, a, d) for w in workloads for s in sizes for f in folios for a in arches for d in designs]
    out = []
    for w, s, f, a, d in tqdm(combos, desc="bench", unit="run", file=sys.stderr, disable=None if progress else True):
        out.append(run_workload(w, s, f, a, d, cpus=cpus, batch_flush=batch_flush, cost=cost))
    return out


# -- speed -----------------------------------------------------------------------------------------------------
def bulk_target(size="16G", measure_memory: bool = False) -> dict:
    """The bulk speed target: populate (fallocate) + punch + close a ``size`` guest of 4K folios, filemap, x86.
    The peak memory (``measure_memory``) counts building the machine too."""
    if measure_memory:
        tracemalloc.start()
    b = BulkSystem(design="filemap", memory=human(parse_size(size) + (2 << 30)))
    t = time.perf_counter()
    for op in ({"op": "gmem_create", "file": "g", "size": size}, {"op": "fallocate", "file": "g", "len": size},
               {"op": "punch_hole", "file": "g", "len": size}, {"op": "close", "file": "g"}):
        b.step(**op)
    seconds = time.perf_counter() - t
    out = {"size": parse_size(size), "seconds": seconds, "folio_ops": b.folio_ops,
           "folio_ops_per_s": b.folio_ops / seconds}
    if measure_memory:
        out["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out



@contextlib.contextmanager
def _clock_quiet():
    """The collector off while the clock runs, as ``timeit`` has it (and one collection before, here), so a figure
    does not depend on how many other objects the process holds (a notebook kernel holds some 400k, which made
    the fragmenting figure 25% slower there than in a fresh process)."""
    gc.collect()
    with gc_paused():
        yield


def traced_steps(cached: int, steps: int = 20000, repeats: int = 3, design: str = "filemap", trace: bool = False,
                 arch: str = "x86") -> dict:
    """The traced System stepped one op per page, as a scenario, a widget or the explorer steps it: with
    ``cached`` 4K folios in the page cache (put there by one fallocate, not timed), ``steps`` steps that
    fallocate one page past them and punch it again, each a full ``System.step`` (events if ``trace``, and
    the invariants after every step). CPU seconds (``time.process_time``: other work on the machine is not
    counted), best of ``repeats`` fresh machines, with the slowest beside it (``worst_steps_per_s``)."""
    from .system import System
    cpus = []
    for _ in range(repeats):
        s = System(design=design, arch=arch, memory="4G", trace=trace)
        s.step("gmem_create", file="g", size=(cached + 1024) * PAGE_SIZE)
        if cached:
            s.step("fallocate", file="g", len=cached * PAGE_SIZE)
        off = (cached + 8) * PAGE_SIZE
        step = s.step
        with _clock_quiet():
            t = time.process_time()
            for _ in range(steps // 2):
                step("fallocate", file="g", offset=off, len=PAGE_SIZE)
                step("punch_hole", file="g", offset=off, len=PAGE_SIZE)
            cpus.append(time.process_time() - t)
    n, best, worst = steps // 2 * 2, min(cpus), max(cpus)
    return {"cached_folios": cached, "steps": n, "cpu_seconds": best, "runs": repeats,
            "steps_per_s": n / best if best else 0.0, "worst_steps_per_s": n / worst if worst else 0.0,
            "design": design, "arch": arch, "trace": trace}


def bulk_fragment(size="1G", repeats: int = 3) -> dict:
    """The range engine on fragmenting work: fallocate a ``size`` guest (filemap, x86, 4K folios), then punch
    a hole in every other page, one op per page (a balloon returning scattered pages); CPU seconds of the
    punches, best of ``repeats``, with the slowest beside it (``worst_ops_per_s``)."""
    n = parse_size(size)
    cpus = []
    for _ in range(repeats):
        b = BulkSystem(design="filemap", memory=human(n + (2 << 30)))
        b.step(op="gmem_create", file="g", size=n)
        b.step(op="fallocate", file="g", len=n)
        step = b.step
        with _clock_quiet():
            t = time.process_time()
            for off in range(0, n, 2 * PAGE_SIZE):
                step("punch_hole", file="g", offset=off, len=PAGE_SIZE)
            cpus.append(time.process_time() - t)
    ops, best, worst = n // PAGE_SIZE // 2, min(cpus), max(cpus)
    return {"size": n, "ops": ops, "cpu_seconds": best, "runs": repeats, "ops_per_s": ops / best if best else 0.0,
            "worst_ops_per_s": ops / worst if worst else 0.0, "extents_after": len(b.files["g"])}


#: The scaling table's points: guest sizes (host = guest + 2G) and host sizes (guest 1G). The range engine's
#: largest machine is :data:`nbmodel.physmem.MAX_BULK_MEMORY` (1T); the traced model's is 256G.
SCALE_GUESTS, SCALE_HOSTS = ("256M", "1G", "4G", "16G", "64G"), ("4G", "16G", "64G", "256G", "1T")
QUICK_SCALE_GUESTS, QUICK_SCALE_HOSTS = ("256M", "1G", "4G"), ("4G", "16G")


def _scale_point(guest, host) -> dict:
    """Build a BulkSystem of ``host`` RAM and populate + punch + close a ``guest`` guest_memfd (filemap, x86,
    4K folios). Time: CPU seconds from before the machine is built to the close. Memory: the tracemalloc peak
    of a second, identical run, tracing started before the machine is built (Python allocations: the model's
    arrays and objects, not the interpreter itself)."""
    ops = ({"op": "gmem_create", "file": "g", "size": guest}, {"op": "fallocate", "file": "g", "len": guest},
           {"op": "punch_hole", "file": "g", "len": guest}, {"op": "close", "file": "g"})
    gc.collect()
    t = time.process_time()
    b = BulkSystem(design="filemap", memory=host)
    built = time.process_time()
    for op in ops:
        b.step(**op)
    cpu = time.process_time() - t
    folio_ops = b.folio_ops
    del b
    gc.collect()
    tracemalloc.start()
    b = BulkSystem(design="filemap", memory=host)
    for op in ops:
        b.step(**op)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"guest": parse_size(guest), "host": parse_size(host), "cpu_seconds": cpu,
            "build_cpu_seconds": built - t, "folio_ops": folio_ops, "peak_bytes": peak}


def scaling(quick: bool = False) -> dict:
    """How the range engine's time and memory grow: guest 256M...64G on a host of guest + 2G, and host
    4G...1T (the range engine's limit, :data:`nbmodel.physmem.MAX_BULK_MEMORY`) with a 1G guest."""
    from .physmem import MAX_BULK_MEMORY
    guests, hosts = (QUICK_SCALE_GUESTS, QUICK_SCALE_HOSTS) if quick else (SCALE_GUESTS, SCALE_HOSTS)
    return {"workload": "populate (fallocate) + punch + close, filemap, x86, 4K folios, bulk engine",
            "time": "CPU seconds (time.process_time), from before the machine is built to the close",
            "memory": "tracemalloc peak (Python allocations), tracing started before the machine is built",
            "max_host_memory": MAX_BULK_MEMORY,
            "by_guest": [_scale_point(g, human(parse_size(g) + (2 << 30))) for g in guests],
            "by_host": [_scale_point("1G", h) for h in hosts]}


def format_scaling(table: dict) -> str:
    """The scaling table as text: one row per machine, time and peak memory."""
    lines = [f"{'guest':>6} {'host':>6} {'CPU s':>8} {'of it building':>15} {'folio-ops':>11} {'peak MiB':>9}"]
    for part in ("by_guest", "by_host"):
        lines.append("-" * len(lines[0]))
        for row in table[part]:
            lines.append(f"{human(row['guest']):>6} {human(row['host']):>6} {row['cpu_seconds']:>8.3f} "
                         f"{row['build_cpu_seconds']:>15.3f} {row['folio_ops']:>11,} "
                         f"{row['peak_bytes'] / 2**20:>9.1f}")
    lines.append(f"{table['workload']}; time: {table['time']}; memory: {table['memory']}. The host column "
                 f"stops at {human(table['max_host_memory'])}, the range engine's largest machine (MAX_BULK_MEMORY).")
    return "\n".join(lines)


@dataclass
class Check:
    name: str
    value: float | None
    target: float
    status: str   # PASS, FAIL or SKIP
    note: str = ""
    ratio: float | None = None  # how many times the target is met: > 1 PASS, < 1 FAIL (seconds: target / value)


@dataclass
class SpeedReport:
    bulk: dict
    live: list = field(default_factory=list)   # ProbeResult dicts
    zero_bytes_per_ns: float | None = None
    checks: list = field(default_factory=list)
    steps: list = field(default_factory=list)      # traced_steps() at each of STEP_CACHES
    fragment: list = field(default_factory=list)   # bulk_fragment() at each of FRAGMENT_SIZES
    explore: dict | None = None                     # explore_sweep(), when asked for

    def as_dict(self) -> dict:
        return asdict(self)


def explore_sweep() -> dict:
    """``nbmodel explore``'s default sweep as a user runs it: the command in a fresh process (one worker per CPU),
    its ``--json`` totals: wall seconds and :func:`~nbmodel.explore_results.exhaustive_rates` (CPU time of each
    search)."""
    from .explore import default_jobs

    out = subprocess.run([sys.executable, "-m", "nbmodel", "explore", "--json"], capture_output=True, text=True,
                         check=True)
    total = json.loads(out.stdout)["total"]
    return {**total, "jobs": default_jobs()}


def explore_checks(ex: dict) -> list:
    """The explorer's speed checks from :func:`explore_sweep`'s totals: every configuration complete, the wall
    time, and the states per CPU-second of all the exhaustive searches (with the 4K and 2M parts in the note)."""
    t = TARGETS
    return [
        _check(f"explore default sweep: configurations complete / explored ({ex['complete']} of "
               f"{ex['explored']})", ex["complete"] / ex["explored"], t["explore_complete"]),
        _check(f"explore default sweep, wall seconds ({ex['jobs']} worker processes)", ex["seconds"],
               t["explore_sweep_seconds"], below=True),
        _check(f"explore exhaustive states per CPU-second, all {ex['complete']} complete configurations",
               ex["complete_states_per_cpu_second"] or None, t["explore_states_per_cpu_s"],
               note=f"with 4K folios {ex['complete_4k_states_per_cpu_second']:,} ({ex['complete_4k']} "
               f"configurations), with 2M folios {ex['complete_2m_states_per_cpu_second']:,} ({ex['complete_2m']})"),
    ]


def speed(quick: bool = False, live: bool = True, probe_size="16M", probes=None, memory: bool = True,
          explore: bool = False) -> SpeedReport:
    """Measure the model's speed figures and check them against :data:`TARGETS`. ``probes``:
    :class:`~nbmodel.realkernel.ProbeResult` objects already taken, or a :class:`~nbmodel.realkernel.ProbeRecord`
    (live or recorded: its zeroing bandwidth is used and the live check's note says where it was measured); else
    they are taken here if ``live``. ``memory``: also run the 16G target once more under tracemalloc for its
    peak memory. ``explore``: also time ``nbmodel explore``'s default sweep (:func:`explore_sweep`)."""
    bulk = bulk_target("16G")
    if memory:
        bulk["tracemalloc_peak_bytes"] = bulk_target("16G", measure_memory=True)["tracemalloc_peak_bytes"]
    rep = SpeedReport(bulk)
    # Best of 3 in both modes: one run of the same 10,000 steps read 34-67k steps/s here, back to back.
    rep.steps = [traced_steps(n, steps=10000 if quick else 20000, repeats=3) for n in STEP_CACHES]
    rep.fragment = [bulk_fragment(size, repeats=3) for size in FRAGMENT_SIZES]   # best of 3: one run varies ±25% here
    live_rate, why = None, "live probes not run (--no-live)"
    if live or probes:
        from . import realkernel as rk
        from .costmodel import measure_zero_bandwidth
        results = probes or rk.probe_all(parse_size(probe_size))
        rep.live = [r.as_dict() for r in results]
        rep.zero_bytes_per_ns = getattr(results, "zero_bytes_per_ns", None) or measure_zero_bandwidth()
        where = f" ({results.label})" if isinstance(results, rk.ProbeRecord) else ""
        sec = next((r for r in results if r.kind == SECRETMEM_FILE), None)
        why = (sec.skipped if sec is not None else "no secretmem probe") or ""
        if sec is not None and not sec.skipped and sec.ns_first > 0:
            live_rate = 1e9 / sec.ns_first
    t = TARGETS
    rep.checks = [
        _check("bulk folio-ops/s (16G populate + punch + close)", bulk["folio_ops_per_s"],
               t["bulk_folio_ops_per_s"]),
        _check("bulk 16G populate + punch + close, seconds", bulk["seconds"], t["bulk_16g_seconds"], below=True),
        _check(f"traced System steps/s, one op per page, {rep.steps[-1]['cached_folios']:,} cached folios",
               rep.steps[-1]["steps_per_s"], t["traced_steps_per_s"], note="trace off, invariants after each step"),
        _check(f"traced steps/s flat: {rep.steps[-1]['cached_folios']:,} cached folios / "
               f"{rep.steps[0]['cached_folios']:,}", rep.steps[-1]["steps_per_s"] / rep.steps[0]["steps_per_s"],
               t["traced_steps_flat"]),
        _check(f"bulk fragmenting ops/s ({human(rep.fragment[-1]['size'])}: a hole in every other page, one op "
               "each)", rep.fragment[-1]["ops_per_s"], t["bulk_fragment_ops_per_s"]),
        _check(f"bulk fragmenting linear: ops/s at {human(rep.fragment[-1]['size'])} / at "
               f"{human(rep.fragment[0]['size'])}", rep.fragment[-1]["ops_per_s"] / rep.fragment[0]["ops_per_s"],
               t["bulk_fragment_linear"]),
        _check("model (bulk) / live secretmem populate, pages per second",
               bulk["folio_ops_per_s"] / live_rate if live_rate else None, t["model_over_live_secretmem"],
               note=why if not live_rate else f"live secretmem {live_rate:,.0f} pages/s (mean first touch){where}"),
    ]
    if explore:
        rep.explore = explore_sweep()
        rep.checks += explore_checks(rep.explore)
    return rep


def _check(name, value, target, below=False, note=""):
    if value is None:
        return Check(name, None, target, "SKIP", note)
    ok = value <= target if below else value >= target
    ratio = (target / value if value else float("inf")) if below else value / target
    return Check(name, value, target, "PASS" if ok else "FAIL", note, ratio)


# -- command line ------------------------------------------------------------------------------------------------
EPILOG = f"""examples:
  nbmodel bench --quick                  small guests, every workload/arch/design (CI; well under a minute)
  nbmodel bench --sizes 1G,4G,16G        the full matrix (default)
  nbmodel bench --workload balloon --arch x86 --design filemap --batch-flush
  nbmodel bench --quick --json > bench.json

Times labelled "{LABEL}" are counters times the prices in nbmodel.costmodel (each with its source
and badge), not kernel measurements. "model" times are how long this Python model took. The speed checks
print PASS/FAIL against the speed targets (--strict: exit 1 on a FAIL); the live figure needs memfd_secret
(skipped with its reason).
"""


def add_arguments(parser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--quick", action="store_true", help=f"sizes {','.join(QUICK_SIZES)} (CI)")
    parser.add_argument("--sizes", type=size_list(2 << 20, MAX_BENCH_SIZE, 2 << 20), metavar="SIZES",
                        help=f"comma-separated guest sizes, each a multiple of 2M from 2M to "
                        f"{human(MAX_BENCH_SIZE)} (default {','.join(SIZES)})")
    parser.add_argument("--workload", action="append", choices=WORKLOADS, help="only this workload (repeatable)")
    parser.add_argument("--arch", action="append", choices=tuple(ARCHES), help="only this arch (repeatable)")
    parser.add_argument("--design", action="append", choices=DESIGNS, help="only this design (repeatable)")
    parser.add_argument("--folio", action="append", choices=FOLIOS, help="only this folio size (repeatable)")
    parser.add_argument("--cpus", type=int_range(1, 64), default=2, metavar="N",
                        help="CPUs of the modelled machine, from 1 to 64 (default 2)")
    parser.add_argument("--batch-flush", action="store_true", help="filemap: one flush per fallocate()")
    parser.add_argument("--no-live", action="store_true", help="do not probe the running kernel")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed checks")
    parser.add_argument("--no-explore", action="store_true",
                        help="leave nbmodel explore's default sweep out of the speed checks (about 20 s on 2 CPUs)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a speed check FAILs")


def run(args) -> int:
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    runs = matrix(sizes, tuple(args.folio or FOLIOS), tuple(args.arch or ARCHES), tuple(args.design or DESIGNS),
                  tuple(args.workload or WORKLOADS), cpus=args.cpus, batch_flush=args.batch_flush)
    rep = None if args.no_speed else speed(quick=args.quick, live=not args.no_live, explore=not args.no_explore)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.json:
        doc = {"version": 1, "quick": args.quick, "sizes": [parse_size(s) for s in sizes], "label": LABEL,
               "runs": [r.as_dict() for r in runs], "speed": rep.as_dict() if rep else None,
               "cost_model": CostModel().table(), "peak_rss_kb": peak,
               "scaling": None if args.no_speed else scaling(quick=args.quick)}
        print(json.dumps(doc, indent=1))
    else:
        print(format_runs(runs))
        print()
        print(format_directmap(runs))
        if rep:
            print(format_speed(rep))
        if rep:  # the widgets' per-click figures (nbmodel.viz.widget_bench), apart: this module imports no view library
            sys.stdout.flush()
            subprocess.run([sys.executable, "-m", "nbmodel.viz.widget_bench"] + ["--quick"] * args.quick, check=False)
        print(f"peak RSS of this process: {peak / 1024:.0f} MiB (the live probes' buffers included)")
    return 1 if args.strict and rep and any(c.status == "FAIL" for c in rep.checks) else 0


_HEAD = f"{'workload':<15}{'size':>5} {'folio':<6}{'arch':<12}{'design':<16}"


def _row(r) -> str:
    """The columns every table starts with: which workload, guest size, folio size, arch and design."""
    design = "baseline" if r.label.startswith("baseline") else r.design + (
        "+batch" if "batch_flush" in r.label else "")
    return f"{r.workload:<15}{human(r.size):>5} {r.folio:<6}{r.arch:<12}{design:<16}"


def format_runs(runs, timing: bool = True) -> str:
    """A table of runs; ``timing=False`` leaves out the model's own (varying) run time."""
    head = (_HEAD + f"{'L2':>7}{'L3':>4}{'flush':>9}{'full':>7}{'IPIs':>9}{'zaps':>9}{'rest.':>9}{'4k after':>11}"
            f"  {'est. ms':>9}" + (f"  {'model s':>7}" if timing else ""))
    lines = [head, "-" * len(head)]
    for r in runs:
        c = r.counters
        res = "" if r.ok else f"  ({', '.join(sorted(set(x for x in r.results if not x.isdigit() and x != '0')))})"
        lines.append(_row(r) + f"{c['direct_map_level2_splits']:>7}{c['direct_map_level3_splits']:>4}"
                     f"{c['tlb_flushes']:>9}{c['tlb_full_flushes']:>7}{c['ipis']:>9}{c['zaps']:>9}{c['restores']:>9}"
                     f"{r.directmap_after['DirectMap4k'] // 1024:>9}M  {sig(r.estimate_ns / 1e6):>9}"
                     + (f"  {r.seconds:>7.3f}" if timing else "") + res)
    lines.append(f"L2/L3 = 2M->4K / 1G->2M splits; flush = ranged flushes; full = flush_tlb_all(); 4k after = "
                 f"DirectMap4k at the end; est. ms = {LABEL}" + ("; model s = time this model took" if timing
                                                                   else ""))
    return "\n".join(lines)


def format_directmap(runs) -> str:
    """``DirectMap4k/2M/1G`` of each run before and after it, in kB as ``/proc/meminfo`` prints them."""
    head = _HEAD + "".join(f"{short + ' before':>12}{short + ' after':>11}" for short in ("4k", "2M", "1G"))
    lines = [head, "-" * len(head)]
    for r in runs:
        lines.append(_row(r) + "".join(f"{r.directmap_before[name]:>12}{r.directmap_after[name]:>11}"
                                       for name in DM))
    lines.append("DirectMap4k/2M/1G in kB (as /proc/meminfo prints them), before the workload's first step and "
                 "after its last; arm64: the model's leaf counts under the x86 names")
    return "\n".join(lines)


def format_speed(rep: SpeedReport) -> str:
    # in the live chapters (Pyodide) these are the browser's timings of the model, nothing the kernel took
    where = ("measured now in this browser: Pyodide (WebAssembly) timings of the model, not kernel time, slower "
             "than native CPython, for which the targets are set" if sys.platform == "emscripten" else "measured now")
    lines = ["", f"speed of the model ({where}; varies run to run):",
             f"  bulk: 16G populate + punch + close in {rep.bulk['seconds']:.3f} s, "
             f"{rep.bulk['folio_ops_per_s']:,.0f} folio-ops/s" + (
                 f", peak Python memory {rep.bulk['tracemalloc_peak_bytes'] / 2**20:.1f} MiB (tracemalloc, "
                 "separate run, building the machine included)" if "tracemalloc_peak_bytes" in rep.bulk else "")]
    for st in rep.steps:
        lines.append(f"  traced System, one op per page: {st['steps_per_s']:,.0f} steps/s with "
                     f"{st['cached_folios']:,} cached folios ({st['steps']:,} steps of fallocate/punch one page, "
                     f"{st['design']}, trace {'on' if st['trace'] else 'off'}, CPU time, best of {st['runs']}; "
                     f"slowest {st['worst_steps_per_s']:,.0f})")
    for fr in rep.fragment:
        lines.append(f"  bulk, fragmenting: {fr['ops_per_s']:,.0f} ops/s punching every other page of a "
                     f"{human(fr['size'])} guest ({fr['ops']:,} ops, {fr['extents_after']:,} extents after, CPU "
                     f"time, best of {fr['runs']}; slowest {fr['worst_ops_per_s']:,.0f})")
    if rep.explore:
        ex = rep.explore
        lines.append(f"  explore: the default sweep, {ex['configurations']} configurations ({ex['explored']} "
                     f"explored), {ex['states']:,} states in {ex['seconds']:.1f} s wall on {ex['jobs']} worker "
                     f"processes; its exhaustive searches {ex['complete_states']:,} states in "
                     f"{ex['complete_cpu_seconds']:.1f} CPU-s")
    for r in rep.live:
        if r["skipped"]:
            lines.append(f"  live {r['kind']}: skipped: {r['skipped']}")
        else:
            lines.append(f"  live {r['kind']}: {r['ns_first']:.0f} ns/page mean first touch, median net "
                         f"{r['ns_net_median']:.0f} ns/page")
    for c in rep.checks:
        value = "n/a" if c.value is None else f"{c.value:,.2f}"
        below = "seconds" in c.name
        margin = ""
        if c.ratio is not None:
            margin = f", {c.ratio:,.2f}x faster than that" if below else f", {c.ratio:,.2f}x the target"
        target = f"{c.target:,.0f}" if c.target >= 10 or float(c.target).is_integer() else f"{c.target:g}"
        lines.append(f"  {c.status}  {c.name}: {value} (target {'<=' if below else '>='} "
                     f"{target}{margin}){'; ' + c.note if c.note else ''}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="nbmodel bench", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
