"""Live memfd_secret PFNs replayed through the x86 model: does the model split where the kernel split?

Every fault is attributed: ``/proc/vmstat`` ``direct_map_level{2,3}_splits`` is re-read after each page fault,
so the kernel's splits are known fault by fault (:func:`nbmodel.realkernel.probe` with ``attribute=True``).
The kernel's page tables are not visible, so a fault is **judged** (model == kernel, exactly) only where the
state of its direct-map region is known before the fault:

- the 2M region is in the **ledger**: this probe saw it split (or faulted a memfd_secret page in it) earlier in
  this boot. x86 never merges a ``set_direct_map_*`` split back (only ``set_memory_rox()`` collapses), so it is
  still 4K-mapped: both must split nothing;
- the 2M region was touched earlier **in this run**: 4K-mapped, both must split nothing;
- the kernel split the **1G leaf** around it during this run (at this fault or before): until then every 2M
  region inside was part of one 1G leaf, so each is a 2M leaf until its first fault, which must split it
  exactly once (at the 1G split's own fault: the 1G leaf and then the 2M region);
- otherwise the region's state is unknown (another user may have split it since boot) and the fault is not
  judged; the report says how many regions were not judged. A run that judges nothing is not a PASS.

The ledger is one JSON file per boot (``/proc/sys/kernel/random/boot_id``) in ``$XDG_CACHE_HOME/nbmodel`` (or
``~/.cache/nbmodel``), so later runs start from known state. It records the 2M and 1G regions seen split.

Also checked, per round: a) the meminfo deltas follow the vmstat deltas (``split_page_count()`` in
``arch/x86/mm/pat/set_memory.c``); c) close restores every page (``secretmem_free_folio()``) without any split
or collapse; d) the per-fault attributions add up to the round's totals (another task splitting meanwhile
breaks this, and is reported as such).

:func:`judge_trace` judges a recorded trace (the live run's PFNs and per-fault counters), so the judgement is
testable without the kernel: ``tests/fixtures/`` holds traces recorded on a real 6.18 kernel, and the tests
show that wrong models (one counting each split twice, one never splitting a 1G leaf, one splitting on every
fault) FAIL on them.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import realkernel as rk
from .kernel import Kernel
from .pagetable import LEVEL_1G
from .physmem import MemoryMap
from .units import PAGES_1G, PAGES_2M

KB_2M, KB_1G = 2048, 1 << 20
TRACE_VERSION = 1


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
    seen_before: int = 0             # pages in regions the ledger knew before this round
    judged: int = 0                  # faults judged (region state known)
    judged_regions: int = 0          # distinct 2M regions with at least one judged fault
    unknown_regions: int = 0         # 2M regions whose first fault could not be judged
    mismatches: list = field(default_factory=list)   # [(pfn, kernel (l2, l3), model (l2, l3), why known)]
    checks: list = field(default_factory=list)


@dataclass
class CrossCheck:
    size: int
    skipped: str | None = None
    ram: str = ""
    mode: str = ""
    ledger: str = ""                 # where the ledger is, or why there is none
    rounds: list = field(default_factory=list)
    final_ledger: dict = field(default_factory=dict)   # what is known after the last round
    provenance: str = ""             # where it ran: "recorded on ..." (see crosscheck_for_book) or empty

    @property
    def judged(self) -> int:
        return sum(r.judged for r in self.rounds)

    @property
    def ok(self) -> bool:
        """True only when something was judged and every check held: never PASS on nothing."""
        return self.skipped is None and self.judged > 0 and all(c.ok for r in self.rounds for c in r.checks)

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "SKIPPED"
        if not all(c.ok for r in self.rounds for c in r.checks):
            return "FAIL"
        return "PASS" if self.judged else "NOT JUDGED"

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "verdict": self.verdict, "judged": self.judged}

    def report(self) -> str:
        head = [self.provenance] if self.provenance else []
        if self.skipped:
            return "\n".join([*head, f"crosscheck skipped: {self.skipped}"])
        lines = [*head, f"crosscheck: memfd_secret PFNs replayed through the x86 model ({self.mode}; RAM from "
                        f"{self.ram}; ledger: {self.ledger})"]
        for i, r in enumerate(self.rounds, 1):
            k = r.kernel
            lines.append(f" round {i}: {r.pages} pages in {r.regions_2m} 2M / {r.regions_1g} 1G regions; kernel "
                         f"L2 +{k.get('direct_map_level2_splits')} L3 +{k.get('direct_map_level3_splits')}, "
                         f"model L2 +{r.model_level2} L3 +{r.model_level3}")
            lines += [f"   {'PASS' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in r.checks]
            lines.append(f"   not judged: {r.unknown_regions} regions of unknown state")
        lines.append(f" {self.verdict}: {self.judged} fault(s) judged exactly"
                     + ("" if self.judged else " -- nothing was judged, so this is not a pass"))
        return "\n".join(lines)


# -- the per-boot ledger --------------------------------------------------------------------------------------
def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _shown(path: Path) -> str:
    """``path`` as printed: the home directory as ``~`` (reports and the book carry no machine paths)."""
    home = os.path.expanduser("~")
    text = str(path)
    return "~" + text[len(home):] if home not in ("", "/") and text.startswith(home + "/") else text


def cache_dir() -> Path | None:
    """``$XDG_CACHE_HOME/nbmodel``, else ``~/.cache/nbmodel``; None when there is no usable home."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        home = os.path.expanduser("~")
        if not home or home == "~" or not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return Path(base) / "nbmodel"


@dataclass
class Ledger:
    """2M and 1G regions (PFN // 512, PFN // 262144) this probe has seen split during one boot."""

    boot: str | None = None
    split_2m: set = field(default_factory=set)
    split_1g: set = field(default_factory=set)
    path: Path | None = None
    note: str = ""

    @classmethod
    def load(cls, directory: Path | None = None) -> Ledger:
        """The ledger of the running boot (empty if none yet); ``note`` says where, or why it is not kept."""
        boot = boot_id()
        directory = cache_dir() if directory is None else directory
        if boot is None:
            return cls(note="none (no /proc/sys/kernel/random/boot_id)")
        if directory is None:
            return cls(boot=boot, note="none (no $XDG_CACHE_HOME and no home directory)")
        path = Path(directory) / f"crosscheck-ledger-{boot}.json"
        led = cls(boot=boot, path=path, note=_shown(path))
        try:
            data = json.loads(path.read_text())
            if data.get("boot_id") == boot:
                led.split_2m = set(data.get("split_2m", []))
                led.split_1g = set(data.get("split_1g", []))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            led.note = f"{_shown(path)} unreadable ({e}); starting empty"
        return led

    def save(self) -> None:
        """Write atomically (temporary file + rename) in a 0700 directory; a failure is noted, never raised."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"boot_id": self.boot, "split_2m": sorted(self.split_2m),
                                       "split_1g": sorted(self.split_1g)}))
            os.replace(tmp, self.path)
        except OSError as e:
            self.note = f"{self.path} not written ({e.strerror or e})"

    def as_trace(self) -> dict:
        return {"split_2m": sorted(self.split_2m), "split_1g": sorted(self.split_1g)}


# -- the model side ----------------------------------------------------------------------------------------
def model_kernel(pfns, ranges=None, flags=None) -> tuple[Kernel, str]:
    """An x86 model booted on this machine's RAM map (``/proc/iomem``; or ``ranges``), or on the PFNs'
    1G-aligned span; 1G leaves only if the CPU has ``pdpe1gb``, 5 levels if ``la57``."""
    where = "the recorded RAM map"
    if ranges is None:
        ranges = rk.ram_ranges()
        where = "/proc/iomem System RAM"
    if not ranges:
        lo, hi = min(pfns), max(pfns) + 1
        ranges = [(lo - lo % PAGES_1G, hi + (-hi) % PAGES_1G)]
        where = "the PFNs' span (no /proc/iomem addresses)"
    flags = _cpu_flags() if flags is None else set(flags)
    k = Kernel("x86", x86_mode(flags), MemoryMap.of([tuple(r) for r in ranges]),
               cpus=min(64, os.cpu_count() or 1), trace=False)
    return k, where


def x86_mode(flags) -> str:
    return ("5-level" if "la57" in flags else "4-level") + ("" if "pdpe1gb" in flags else " nogbpages")


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def apply_ledger(k: Kernel, ledger: dict) -> None:
    """Put the model in the state the ledger knows: each 1G region split to 2M leaves (a whole-2M change keeps
    the 2M leaf), each 2M region split to 4K (a one-page change). Direct-map entries end valid again."""
    end = k.memmap.end_pfn
    for r1 in ledger.get("split_1g", []):
        for base in range(r1 * PAGES_1G, min(end, (r1 + 1) * PAGES_1G), PAGES_2M):
            if k.dmap.pt.leaf(base)[0] == LEVEL_1G and base + PAGES_2M <= end and _all_ram(k, base, PAGES_2M):
                addr = k.page_address(base)
                k.set_direct_map_valid_noflush(addr, PAGES_2M, False)
                k.set_direct_map_valid_noflush(addr, PAGES_2M, True)
                break
    for r2 in ledger.get("split_2m", []):
        for pfn in range(r2 * PAGES_2M, min(end, (r2 + 1) * PAGES_2M)):
            if k.memmap.is_ram(pfn):
                addr = k.page_address(pfn)
                k.set_direct_map_invalid_noflush(addr)
                k.set_direct_map_default_noflush(addr)
                break


def _all_ram(k: Kernel, pfn: int, n: int) -> bool:
    return all(k.memmap.is_ram(p) for p in (pfn, pfn + n - 1))


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


# -- judging -----------------------------------------------------------------------------------------------
class Knowledge:
    """What is known of each region's direct-map state, from the ledger and from the faults seen so far."""

    def __init__(self, ledger: dict):
        self.state2m = {r: "4K" for r in ledger.get("split_2m", [])}   # region -> "4K" | "2M"
        self.split1g = set(ledger.get("split_1g", [])) | {r // 512 for r in ledger.get("split_2m", [])}
        self.ledger_2m = set(self.state2m)

    def expect(self, pfn: int, kernel: tuple) -> tuple[tuple | None, str]:
        """The exact (level2, level3) the kernel must show at a fault on ``pfn``, and why; (None, why) if the
        region's state is unknown."""
        r2 = pfn // PAGES_2M
        state = self.state2m.get(r2)
        if state == "4K":
            return (0, 0), "ledger: split earlier this boot" if r2 in self.ledger_2m else "touched earlier this run"
        if state == "2M":
            return (1, 0), "inside a 1G leaf the kernel split this run"
        if kernel[1] and pfn // PAGES_1G not in self.split1g:
            return (1, 1), "the kernel split the 1G leaf around it at this fault"
        return None, "unknown"

    def learn(self, pfn: int, kernel: tuple) -> None:
        r2, r1 = pfn // PAGES_2M, pfn // PAGES_1G
        if kernel[1] and r1 not in self.split1g:
            for s in range(r1 * 512, (r1 + 1) * 512):
                self.state2m.setdefault(s, "2M")
        self.state2m[r2] = "4K"
        self.split1g.add(r1)

    def ledger(self) -> dict:
        return {"split_2m": sorted(r for r, s in self.state2m.items() if s == "4K"), "split_1g": sorted(self.split1g)}


def judge_round(r: Round, pfns, kernel_at, model_at, know: Knowledge) -> None:
    """Judge one round fault by fault (see the module docstring) and fill ``r.checks``."""
    k, f = r.kernel, r.freed
    l2, l3 = k.get("direct_map_level2_splits", 0), k.get("direct_map_level3_splits", 0)
    add = r.checks.append
    want = (KB_2M * l2, -KB_2M * l2 + KB_1G * l3, -KB_1G * l3)
    got = (k.get("DirectMap4k"), k.get("DirectMap2M"), k.get("DirectMap1G"))
    add(Check("a) meminfo follows vmstat", got == want,
              f"DirectMap4k/2M/1G deltas {got} kB, expected {want} from L2 +{l2}, L3 +{l3}"))
    freed_splits = sum(f.get(n, 0) for n in rk.COUNTER_NAMES[:4])
    add(Check("c) close restores without splitting or collapsing",
              f.get("DirectMap4k") == 0 and freed_splits == 0 and r.model_freed_splits == 0,
              f"DirectMap4k {f.get('DirectMap4k'):+d} kB, split/collapse events {freed_splits}, "
              f"model restore splits {r.model_freed_splits}"))
    per_page = sum(a for a, _ in kernel_at), sum(b for _, b in kernel_at)
    add(Check("d) per-fault attribution adds up", per_page == (l2, l3),
              f"sum over faults L2 {per_page[0]} L3 {per_page[1]} (another task splitting meanwhile breaks this)"))
    judged_regions, unknown = set(), set()
    r.seen_before = sum(1 for p in pfns if p // PAGES_2M in know.ledger_2m)
    for pfn, kk, mm in zip(pfns, kernel_at, model_at, strict=True):
        kk, mm = tuple(kk), tuple(mm)
        expected, why = know.expect(pfn, kk)
        if expected is None:
            unknown.add(pfn // PAGES_2M)
            if mm[0] and not kk[0]:
                r.already_split += 1
        else:
            r.judged += 1
            judged_regions.add(pfn // PAGES_2M)
            if not kk == mm == expected:
                r.mismatches.append((pfn, kk, mm, why))
        know.learn(pfn, kk)
    r.judged_regions, r.unknown_regions = len(judged_regions), len(unknown)
    detail = (f"{r.judged} fault(s) in {r.judged_regions} 2M region(s) of known state: kernel == model == "
              f"the state's rule at each")
    if r.mismatches:
        pfn, kk, mm, why = r.mismatches[0]
        detail = (f"{len(r.mismatches)} of {r.judged} judged fault(s) differ; first PFN {pfn:#x} ({why}): kernel "
                  f"L2/L3 {kk}, model {mm}")
    add(Check("e) judged faults: model == kernel exactly", not r.mismatches,
              detail if r.judged else "no fault of known state this round"))


def compact(trace: dict) -> dict:
    """The trace with each round's PFNs as ``[first, count]`` runs and its per-fault splits as ``[index, l2,
    l3]`` for the faults that split (fixtures stay small; :func:`expand_round` undoes it)."""
    out = dict(trace, rounds=[])
    for rd in trace["rounds"]:
        runs = []
        for p in rd["pfns"]:
            if runs and runs[-1][0] + runs[-1][1] == p:
                runs[-1][1] += 1
            else:
                runs.append([p, 1])
        splits = [[i, a, b] for i, (a, b) in enumerate(rd["kernel_at"]) if a or b]
        out["rounds"].append({"pfn_runs": runs, "splits": splits, "populate": rd["populate"], "freed": rd["freed"]})
    return out


def expand_round(rd: dict) -> tuple[list, list]:
    """``(pfns, kernel_at)`` of a round, compact or not."""
    if "pfns" in rd:
        return rd["pfns"], [tuple(x) for x in rd["kernel_at"]]
    pfns = [p for first, n in rd["pfn_runs"] for p in range(first, first + n)]
    kernel_at = [(0, 0)] * len(pfns)
    for i, a, b in rd["splits"]:
        kernel_at[i] = (a, b)
    return pfns, kernel_at


def judge_trace(trace: dict, replay_fn=replay) -> CrossCheck:
    """Judge a recorded trace (see :func:`record`) against a model: ``replay_fn(kernel, pfns)`` returns the
    model's (level2, level3) per fault (default: :func:`replay`, the model itself)."""
    out = CrossCheck(trace.get("size", 0), ram="the recorded /proc/iomem map", mode=x86_mode(trace["cpu_flags"]),
                     ledger=trace.get("ledger_note", "recorded"))
    rounds = [expand_round(rd) for rd in trace["rounds"]]
    k, _ = model_kernel(rounds[0][0] if rounds else [0], ranges=trace["ram"], flags=trace["cpu_flags"])
    apply_ledger(k, trace.get("ledger", {}))
    know = Knowledge(trace.get("ledger", {}))
    for rd, (pfns, kernel_at) in zip(trace["rounds"], rounds, strict=True):
        r = Round(len(pfns), len({p // PAGES_2M for p in pfns}), len({p // PAGES_1G for p in pfns}),
                  rd["populate"], rd["freed"])
        model_at = replay_fn(k, pfns)
        r.model_level2 = sum(a for a, _ in model_at)
        r.model_level3 = sum(b for _, b in model_at)
        r.model_freed_splits = release(k, pfns)
        judge_round(r, pfns, kernel_at, model_at, know)
        out.rounds.append(r)
    out.final_ledger = know.ledger()
    return out


# -- the live run ----------------------------------------------------------------------------------------------
def unavailable() -> str | None:
    """Why the live cross-check cannot run here, or None."""
    if rk.in_browser():
        return rk.NO_KERNEL
    if platform.machine() != "x86_64":
        return f"the split counters and this replay are x86-64 only (this is {platform.machine()})"
    counters = rk.read_counters()
    if counters is None or counters.get("direct_map_level2_splits") is None:
        return "/proc/vmstat has no direct_map_level2_splits"
    return None


def record(size: int = 16 << 20, rounds: int = 2, ledger: Ledger | None = None) -> tuple[dict | None, str | None]:
    """Populate and close a memfd_secret file ``rounds`` times with per-fault attribution; returns the trace
    (JSON-able: RAM map, CPU flags, ledger before, per round PFNs and per-fault splits) or (None, why)."""
    why = unavailable()
    if why:
        return None, why
    ledger = ledger if ledger is not None else Ledger.load()
    trace = {"version": TRACE_VERSION, "size": size, "kernel": platform.release(), "machine": platform.machine(),
             "cpu_model": rk.cpu_model(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
             "ram": rk.ram_ranges(), "cpu_flags": sorted(_cpu_flags() & {"la57", "pdpe1gb"}),
             "ledger": ledger.as_trace(), "ledger_note": ledger.note, "rounds": []}
    for _ in range(rounds):
        res = rk.probe("secretmem", size, pfns=True, attribute=True)
        if res.skipped:
            return None, res.skipped
        trace["rounds"].append({"pfns": res.pfns, "kernel_at": [list(x) for x in res.split_at],
                                "populate": res.populate, "freed": res.freed})
    return trace, None


def crosscheck(size: int = 16 << 20, rounds: int = 2, keep_ledger: bool = True, save_trace: str | None = None,
               ledger_dir: Path | None = None) -> CrossCheck:
    """Record ``rounds`` live rounds, judge them against the model, and (``keep_ledger``) add what was learnt
    to this boot's ledger. Skips with the reason where it cannot run."""
    ledger = Ledger.load(ledger_dir) if keep_ledger else Ledger(note="not kept (keep_ledger=False)")
    trace, why = record(size, rounds, ledger)
    if trace is None:
        return CrossCheck(size, skipped=why)
    if save_trace:
        Path(save_trace).write_text(json.dumps(compact(trace)))
    out = judge_trace(trace)
    out.ram = "/proc/iomem System RAM" if trace["ram"] else "the PFNs' span"
    if keep_ledger:
        ledger.split_2m |= set(out.final_ledger["split_2m"])
        ledger.split_1g |= set(out.final_ledger["split_1g"])
        ledger.save()
    out.ledger = ledger.note
    return out


# -- recorded, for the book ------------------------------------------------------------------------------------
#: The cross-check recorded for the book (``python benchmarks/record_book_probes.py`` writes it).
RECORDED_CROSSCHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "crosscheck-6.18.json"


def save_crosscheck(cross: CrossCheck, path, head: dict | None = None) -> None:
    """Write ``cross`` (every round, check and mismatch) with the machine it ran on (``head``, default this one:
    :func:`nbmodel.realkernel.machine_header`) as JSON; :func:`load_crosscheck` reads it back equal."""
    head = rk.machine_header() if head is None else head
    doc = {"version": TRACE_VERSION, **head, "size": cross.size, "crosscheck": asdict(cross)}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def crosscheck_from_dict(d: dict) -> CrossCheck:
    rounds = []
    for rd in d["rounds"]:
        rd = dict(rd, checks=[Check(**c) for c in rd["checks"]],
                  mismatches=[(pfn, tuple(kk), tuple(mm), why) for pfn, kk, mm, why in rd["mismatches"]])
        rounds.append(Round(**rd))
    return CrossCheck(**dict(d, rounds=rounds))


def load_crosscheck(path=RECORDED_CROSSCHECK) -> tuple[dict, CrossCheck]:
    """A cross-check written by :func:`save_crosscheck`: its header (kernel, machine, CPUs, CPU model, date,
    size) and the :class:`CrossCheck` as it was, ``provenance`` unchanged."""
    doc = json.loads(Path(path).read_text())
    if doc.get("version") != TRACE_VERSION:
        raise ValueError(f"crosscheck record version {doc.get('version')!r}; this nbmodel reads {TRACE_VERSION}")
    return {k: v for k, v in doc.items() if k != "crosscheck"}, crosscheck_from_dict(doc["crosscheck"])


def crosscheck_for_book(size: int = 16 << 20, live: bool | None = None, recorded=RECORDED_CROSSCHECK) -> CrossCheck:
    """What chapter 7 shows: the **recorded** cross-check, its ``provenance`` (first line of ``report()``) naming
    the machine and date, so building the book probes nothing; run live on this kernel (``size`` bytes per round)
    only when the reader opts in (:func:`nbmodel.realkernel.live_opt_in`: ``live=True`` or NBMODEL_LIVE=1)."""
    if rk.live_opt_in(live):
        out = crosscheck(size)
        out.provenance = rk.provenance(rk.machine_header(), recorded=False)
        return out
    head, out = load_crosscheck(recorded)
    out.provenance = rk.provenance(head, recorded=True) + f" ({head['size'] >> 20} MiB per round)"
    return out


if __name__ == "__main__":
    print(crosscheck().report())
