"""The range engine (nbmodel.bulk) against the traced System, and the benchmark's output.

Equivalence is checked on small machines: every counter, every step's result, the PFN of every cached page,
the page allocator (free pages, per-CPU list, carve, pageblock lists, RNG) and the direct map page by page
(validity and leaf level per 2M region). Speed targets are not asserted here: ``nbmodel bench`` checks them.
"""

from __future__ import annotations

import contextlib
import io
import json
import random

import pytest

from nbmodel import bench
from nbmodel.bulk import BulkSystem, BulkUnsupported, RunAllocator
from nbmodel.errors import ModelInputError
from nbmodel.pagetable import MAPPED, VALID
from nbmodel.physmem import MAX_BULK_MEMORY, MemoryMap, PageAllocator
from nbmodel.system import System
from nbmodel.units import PAGE_SIZE, parse_size

FAULTS = ("user_fault", "guest_fault", "secret_fault")
ARCH_MODES = [("x86", None), ("x86", "nogbpages"), ("arm64", "rodata-full"), ("arm64", "bbml2")]
DESIGNS = ("per-folio", "filemap", "secretmem")


# -- running the same ops both ways ----------------------------------------------------------------------------

def _allocator(a) -> tuple:
    """What decides PageAllocator's next allocations, through its public queries."""
    return a.free_pages, a.choices(), a.blocks.state()


def _run_allocator(ra) -> tuple:
    """The same for bulk's RunAllocator (its carve is kept next page last, the per-CPU list top last)."""
    return ra.free_pages, (tuple(reversed(ra.carve_pages())), tuple(ra.pcp_pages()), ra.blocks.free_whole()), \
        ra.blocks.state()

def run_traced(cfg: dict, ops: list, large_zap: bool) -> tuple[System, list]:
    """The traced System; a fault op with ``len`` is one fault per page (System.run_validated, the core of
    System.step, without the per-step invariant pass, which would make this quadratic)."""
    s = System(trace=False, **cfg)
    s.k.allow_large_zap = large_zap  # same as System(large_zap=...)
    results = []
    for op in ops:
        op = dict(op)
        name = op.pop("op")
        if name in FAULTS:
            off, ln = parse_size(op.pop("offset", 0)), parse_size(op.pop("len", PAGE_SIZE))
            extra = {"race": False} if name == "secret_fault" else {}
            got = "0"
            for o in range(off, off + ln, PAGE_SIZE):
                r = s.run_validated(name, {"file": op["file"], "offset": o, **extra})[0]
                got = r if got == "0" else got
            results.append(got)
        else:
            results.append(s.step(name, **op).result)
    return s, results


def traced_dmap(s: System, nreg: int) -> tuple[bytearray, bytearray]:
    inval, lvl = bytearray(nreg * 512), bytearray(nreg)
    for level, first, prot in s.k.dmap.pt.leaves():
        if prot & MAPPED and not prot & VALID:
            inval[first:first + level] = b"\x01" * level
        r = first // 512
        if level == 512 * 512:
            lvl[r:r + 512] = b"\x03" * 512
        else:
            lvl[r] = 2 if level == 512 else 1
    return inval, lvl


def differences(cfg: dict, ops: list, large_zap: bool = False) -> list:
    s, r1 = run_traced(cfg, ops, large_zap)
    b = BulkSystem(large_zap=large_zap, **cfg)
    r2 = [b.step(**dict(op)) for op in ops]
    out = []
    if r1 != r2:
        out.append(("results", r1, r2))
    bad = {k: (v, b.counters[k]) for k, v in s.k.counters.items() if v != b.counters[k]}
    if bad:
        out.append(("counters", bad))
    for name, f in s.files.items():
        pfns = {i + j: fo.pfn + j for i, fo in f.mapping.i_pages.items() for j in range(fo.nr_pages)}
        if pfns != b.files[name].pfn_map():
            out.append(("pfns", name))
    a, ra = s.k.alloc, b.alloc
    if _allocator(a) != _run_allocator(ra):
        out.append(("allocator",))
    page_states = a.snapshot()[0]
    if page_states != bytes(ra.state[:len(page_states)]):
        out.append(("allocator state",))
    inval, lvl = traced_dmap(s, len(b.dmap.lvl))
    if inval != b.dmap.inval or lvl != b.dmap.lvl:
        out.append(("direct map", inval.count(1), b.dmap.inval.count(1)))
    return out


def lifecycle(g: str = "4M") -> list[dict]:
    """One sequence touching every op the engine has: fallocate, faults, punch/refault, write, close, re-create,
    a memfd_secret file."""
    n = parse_size(g)
    q = n // 4
    f = {"file": "g"}
    return [
        {"op": "gmem_create", **f, "size": g},
        {"op": "fallocate", **f, "offset": 0, "len": 2 * q},
        {"op": "guest_fault", **f, "offset": q, "len": 2 * q},
        {"op": "write", **f, "offset": 3 * q, "len": q},
        {"op": "user_fault", **f, "offset": 0, "len": n},
        {"op": "punch_hole", **f, "offset": q, "len": 2 * q},
        {"op": "user_fault", **f, "offset": q, "len": q},
        {"op": "write", **f, "offset": 2 * q, "len": q},
        {"op": "close", **f},
        {"op": "gmem_create", **f, "size": g},
        {"op": "guest_fault", **f, "offset": 0, "len": n},
        {"op": "secret_create", "file": "s", "size": "1M"},
        {"op": "secret_fault", "file": "s", "offset": 0, "len": "1M"},
        {"op": "close", "file": "s"},
        {"op": "close", **f},
    ]


def check(cfg, ops, large_zap=False):
    diffs = differences(cfg, ops, large_zap)
    assert not diffs, f"bulk engine and traced System differ for {cfg}: {diffs}"


# -- equivalence ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("large", [False, True], ids=["4K", "2M"])
@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("arch,mode", ARCH_MODES, ids=[f"{a}-{m or 'default'}" for a, m in ARCH_MODES])
def test_bulk_matches_traced_lifecycle(arch, mode, design, large):
    cfg = dict(design=design, arch=arch, mode=mode, memory="64M", seed=0, large_folios=large, write="mermap")
    check(cfg, lifecycle(), large_zap=large)


@pytest.mark.parametrize("memory", ["12M", "5G"])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("arch,mode", [("x86", None), ("arm64", "bbml2")])
@pytest.mark.parametrize("design", ["per-folio", "filemap"])
def test_bulk_matches_traced_seeds_and_layouts(design, arch, mode, seed, memory):
    """Tight memory (partial pageblocks, reuse of freed pages) and a machine with 1G leaves, several seeds."""
    cfg = dict(design=design, arch=arch, mode=mode, memory=memory, seed=seed, cpus=3)
    check(cfg, lifecycle("4M"))


@pytest.mark.parametrize("batch", [False, True])
def test_bulk_matches_traced_64m_fallocate(batch):
    g = "64M"
    ops = [{"op": "gmem_create", "file": "g", "size": g}, {"op": "fallocate", "file": "g", "len": g},
           {"op": "punch_hole", "file": "g", "offset": "8M", "len": "16M"}, {"op": "close", "file": "g"}]
    check(dict(design="filemap", memory="5G", seed=7, batch_flush=batch), ops)


@pytest.mark.parametrize("program", range(8))
def test_bulk_matches_traced_random_programs(program):
    """Random op sequences (64K-aligned ranges) on random configurations."""
    rng = random.Random(program)
    arch, mode = rng.choice(ARCH_MODES)
    design = rng.choice(["per-folio", "filemap"])
    large = rng.random() < 0.3
    size = 4 << 20
    unit = (2 << 20) if large else (64 << 10)
    ops = [{"op": "gmem_create", "file": "g", "size": size}]
    for _ in range(10):
        op = rng.choice(["fallocate", "guest_fault", "user_fault", "punch_hole", "write"])
        off = rng.randrange(0, size // unit) * unit
        ln = rng.randrange(1, (size - off) // unit + 1) * unit
        ops.append({"op": op, "file": "g", "offset": off, "len": ln})
    ops.append({"op": "close", "file": "g"})
    cfg = dict(design=design, arch=arch, mode=mode, memory=rng.choice(["16M", "64M"]), seed=program,
               large_folios=large, write=rng.choice(["refuse", "mermap"]), batch_flush=rng.random() < 0.5)
    check(cfg, ops, large_zap=large)


def test_run_allocator_matches_page_allocator():
    """Random order-0 runs, single pages, order-9 blocks and frees: the same PFNs and the same state."""
    mm = MemoryMap.pc("24M")
    for seed in range(5):
        rng = random.Random(seed)
        pa, ra = PageAllocator(mm, seed=seed, reserved=64), RunAllocator(mm, seed=seed, reserved=64)
        held0, held9 = [], []
        for _ in range(300):
            r = rng.random()
            if r < 0.4:
                n = rng.randrange(1, 600)
                run = ra.take0(n) if ra.peek0() >= 0 else None
                if run is None:
                    assert pa.alloc(0) < 0
                    continue
                first, m, step = run
                assert [pa.alloc(0) for _ in range(m)] == [first + i * step for i in range(m)]
                held0.append(run)
            elif r < 0.55:
                got = ra.alloc9()
                assert got == pa.alloc(9)
                if got >= 0:
                    held9.append(got)
            elif r < 0.85 and held0:
                first, m, step = held0.pop(rng.randrange(len(held0)))
                ra.free0(first, m, step)
                for i in range(m):
                    pa.free(first + i * step, 0)
            elif held9:
                base = held9.pop(rng.randrange(len(held9)))
                ra.free9(base)
                pa.free(base, 9)
            assert _allocator(pa) == _run_allocator(ra)
        assert pa.snapshot()[0] == bytes(ra.state)


def test_bulk_refuses_what_it_does_not_model():
    with pytest.raises(BulkUnsupported):
        b = BulkSystem(design="filemap", memory="64M", large_folios=True)
        b.step("gmem_create", file="g", size="4M")
        b.step("fallocate", file="g", len="4M")   # v12 folio_zap_direct_map() refuses large folios
    with pytest.raises(BulkUnsupported):
        BulkSystem(arch="arm64", mode="blocks-no-bbml2")
    with pytest.raises(BulkUnsupported):
        BulkSystem().step("migrate", file="g")


# -- the benchmark -------------------------------------------------------------------------------------------------
def test_bench_runs_are_deterministic():
    a = bench.run_workload("balloon", "64M", "4K", "x86", "filemap")
    b = bench.run_workload("balloon", "64M", "4K", "x86", "filemap")
    assert a.deterministic() == b.deterministic()
    assert a.ok and a.counters["zaps"] == a.counters["restores"] == a.pages_added


def test_bench_quick_matrix_prints_figures(capsys):
    runs = bench.matrix(bench.QUICK_SIZES, progress=False)
    assert len(runs) == len(bench.QUICK_SIZES) * 2 * 3 * 3 * len(bench.WORKLOADS)
    print(bench.format_runs(runs))
    by = {(r.workload, r.size, r.folio, r.arch, r.design): r for r in runs}
    big = parse_size(bench.QUICK_SIZES[-1])
    r4k = by["boot-fault", big, "4K", "x86", "filemap"]
    r2m = by["boot-fault", big, "2M", "x86", "filemap"]
    assert r4k.counters["direct_map_level2_splits"] > 0 and r2m.counters["direct_map_level2_splits"] == 0
    assert r4k.directmap_after["DirectMap4k"] > r4k.directmap_before["DirectMap4k"]
    assert by["boot-fault", big, "4K", "arm64", "filemap"].counters["direct_map_level2_splits"] == 0
    assert by["write", big, "4K", "x86", "secretmem"].results[1] == "EINVAL"
    out = capsys.readouterr().out
    assert "estimated from the cost model" in out


def test_bench_json_shape():
    parser = __import__("argparse").ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--json", "--no-speed", "--workload", "boot-fault", "--arch", "x86"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert bench.run(args) == 0
    doc = json.loads(buf.getvalue())
    assert doc["version"] == 1 and doc["label"] == "estimated from the cost model"
    assert {"runs", "speed", "cost_model", "sizes", "peak_rss_kb"} <= set(doc)
    run = doc["runs"][0]
    for key in ("workload", "size", "folio", "arch", "design", "counters", "directmap_before", "directmap_after",
                "estimate_ns", "estimate_parts", "folio_ops", "folio_ops_per_s", "results"):
        assert key in run
    assert set(run["directmap_after"]) == {"DirectMap4k", "DirectMap2M", "DirectMap1G"}
    assert all({"name", "value", "unit", "badge", "source"} <= set(p) for p in doc["cost_model"])


def test_speed_report_prints_status_and_ratio_to_each_target():
    t = bench.TARGETS
    rep = bench.SpeedReport(
        bulk={"seconds": 2.0, "folio_ops_per_s": 4e6},
        steps=[{"cached_folios": 16_384, "steps": 10_000, "steps_per_s": 4e4, "worst_steps_per_s": 3e4,
                "design": "filemap", "trace": False, "runs": 3}],
        checks=[bench._check("bulk folio-ops/s", 4e6, t["bulk_folio_ops_per_s"]),
                bench._check("bulk seconds", 2.0, t["bulk_16g_seconds"], below=True),
                bench._check("traced System steps/s", 4e4, t["traced_steps_per_s"]),
                bench._check("model / live secretmem", None, t["model_over_live_secretmem"], note="no kernel")])
    text = bench.format_speed(rep)
    assert "PASS  bulk folio-ops/s: 4,000,000.00 (target >= 1,000,000, 4.00x the target)" in text
    assert "PASS  bulk seconds: 2.00 (target <= 10, 5.00x faster than that)" in text
    assert "FAIL  traced System steps/s: 40,000.00 (target >= 50,000, 0.80x the target)" in text
    assert "SKIP  model / live secretmem: n/a (target >= 25); no kernel" in text
    assert "40,000 steps/s with 16,384 cached folios" in text and "best of 3; slowest 30,000" in text


def test_the_traced_figure_is_one_op_per_page_not_three_big_steps(monkeypatch):
    """bench times the traced System as a reader steps it (one op per page), not in three big steps, whose
    invariants run three times."""
    monkeypatch.setattr(bench, "bulk_target", lambda *a, **k: {"folio_ops_per_s": 4e6, "seconds": 1.0})
    rep = bench.speed(quick=True, live=False, memory=False)
    assert "traced_folio_ops_per_s" not in bench.TARGETS and "traced" not in rep.as_dict()
    assert "traced System:" not in bench.format_speed(rep)   # the three-step line's head
    traced = [c.name for c in rep.checks if c.name.startswith("traced")]
    assert traced == ["traced System steps/s, one op per page, 16,384 cached folios",
                      "traced steps/s flat: 16,384 cached folios / 16"]


def test_directmap_table_shows_before_and_after_of_each_run():
    runs = [bench.run_workload("boot-fault", "64M", "4K", "x86", "filemap"),
            bench.run_workload("boot-fault", "64M", "4K", "arm64", "filemap")]
    lines = bench.format_directmap(runs).splitlines()
    assert "4k before" in lines[0] and "1G after" in lines[0]
    for r, line in zip(runs, lines[2:4], strict=True):
        numbers = [int(x) for x in line.split()[-6:]]
        assert numbers == [r.directmap_before[n] if i % 2 == 0 else r.directmap_after[n]
                           for n in bench.DM for i in (0, 1)]
    x86, arm = runs
    assert x86.directmap_after["DirectMap4k"] > x86.directmap_before["DirectMap4k"]   # the zaps split 2M leaves
    assert arm.directmap_after == arm.directmap_before                                # rodata=full: 4K from boot


def test_checks_carry_their_ratio_for_json():
    above = bench._check("x", 250.0, 100.0)
    below = bench._check("y seconds", 4.0, 10.0, below=True)
    missed = bench._check("z", 50.0, 100.0)
    assert (above.status, above.ratio) == ("PASS", 2.5)
    assert (below.status, below.ratio) == ("PASS", 2.5)
    assert (missed.status, missed.ratio) == ("FAIL", 0.5)
    assert bench._check("w", None, 1.0).ratio is None
    assert json.loads(json.dumps(bench.SpeedReport({}, checks=[above]).as_dict()))["checks"][0]["ratio"] == 2.5


def test_traced_steps_counts_one_op_per_page_steps_at_the_cache_size():
    got = bench.traced_steps(64, steps=100, repeats=1)
    assert (got["cached_folios"], got["steps"], got["runs"], got["trace"]) == (64, 100, 1, False)
    assert got["steps_per_s"] == got["steps"] / got["cpu_seconds"] == got["worst_steps_per_s"] > 0
    three = bench.traced_steps(64, steps=100, repeats=3)
    assert three["steps_per_s"] >= three["worst_steps_per_s"] > 0   # best of the runs, and the slowest beside it


def test_bulk_fragment_punches_every_other_page_once():
    got = bench.bulk_fragment("16M", repeats=1)
    assert got["ops"] == (16 << 20) // PAGE_SIZE // 2
    assert got["extents_after"] == got["ops"]   # every other page left: one extent each
    assert got["ops_per_s"] == got["worst_ops_per_s"] > 0


def test_scaling_rows_count_the_machine_and_say_how_they_were_measured():
    row = bench._scale_point("64M", "1G")
    assert row["folio_ops"] == 2 * (64 << 20) // PAGE_SIZE   # each folio added once and removed once
    assert row["peak_bytes"] > 0 and row["cpu_seconds"] >= row["build_cpu_seconds"] >= 0
    table = {"workload": "w", "time": "t", "memory": "tracemalloc", "max_host_memory": MAX_BULK_MEMORY,
             "by_guest": [row], "by_host": [row]}
    text = bench.format_scaling(table)
    assert "64M" in text and "1G" in text and "1T" in text and "MAX_BULK_MEMORY" in text
    assert bench.SCALE_GUESTS[0] == "256M" and bench.SCALE_GUESTS[-1] == "64G"
    assert parse_size(bench.SCALE_HOSTS[-1]) == MAX_BULK_MEMORY == 1 << 40   # the host column: up to 1T


def test_the_range_engine_boots_up_to_1t_the_traced_model_up_to_256g():
    with pytest.raises(ModelInputError, match="limit of 1T"):
        BulkSystem(memory="2T")
    with pytest.raises(ModelInputError):
        System(memory="512G")
    assert MemoryMap.pc("1T", MAX_BULK_MEMORY).total_pages == (1 << 28) - 1 - (0x100 - 0x9F)   # page 0, 640K-1M
    with pytest.raises(ModelInputError, match="limit of 256G"):
        MemoryMap.pc("512G")


def test_speed_report_prints_a_ratio_target_as_it_is():
    rep = bench.SpeedReport(bulk={"seconds": 1.0, "folio_ops_per_s": 2e6},
        checks=[bench._check("traced steps/s flat", 0.9, bench.TARGETS["traced_steps_flat"])])
    assert "PASS  traced steps/s flat: 0.90 (target >= 0.8, 1.12x the target)" in bench.format_speed(rep)


def test_the_clock_runs_with_the_collector_off_and_leaves_it_as_it_was():
    import gc
    assert gc.isenabled()
    with bench._clock_quiet():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with bench._clock_quiet():
            pass
        assert not gc.isenabled()   # a caller that had it off keeps it off
    finally:
        gc.enable()


def test_the_paused_collector_comes_back_with_what_the_body_allocated_in_the_oldest_generation():
    # Left in the youngest, the collector's next run would walk every one of them (gc_paused's docstring).
    import gc

    from nbmodel.gcpause import gc_paused
    with gc_paused():
        kept = [[] for _ in range(50_000)]
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert gc.isenabled() and all(id(o) in oldest for o in kept[::997])


def test_the_paused_collector_leaves_what_the_process_froze_frozen():
    import gc

    from nbmodel.gcpause import gc_paused
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            pass
        assert gc.get_freeze_count() == frozen > 0
    finally:
        gc.unfreeze()


def _sweep_totals(complete=45, rate_4k=100_000, rate_2m=2_000, states=822_209, cpu=29.3, seconds=18.0):
    return {"configurations": 57, "explored": 45, "states": states, "seconds": seconds, "jobs": 2,
            "complete": complete, "complete_states": states, "complete_cpu_seconds": cpu,
            "complete_states_per_cpu_second": round(states / cpu), "complete_4k": 36, "complete_2m": 9,
            "complete_4k_states_per_cpu_second": rate_4k, "complete_2m_states_per_cpu_second": rate_2m,
            "bounded": 45 - complete, "bounded_cpu_seconds": 0.0}


def test_explore_checks_judge_every_exhaustive_search_and_every_configuration():
    ok = bench.explore_checks(_sweep_totals(states=1_000_000, cpu=9.0))
    assert [c.status for c in ok] == ["PASS", "PASS", "PASS"]
    # The rate is over all the exhaustive searches: a fast 4K part does not hide a slow 2M one.
    slow_2m = bench.explore_checks(_sweep_totals(rate_4k=150_000, rate_2m=1_600))
    assert [c.status for c in slow_2m] == ["PASS", "PASS", "FAIL"]
    assert "with 4K folios 150,000 (36 configurations), with 2M folios 1,600 (9)" in slow_2m[2].note
    bounded = bench.explore_checks(_sweep_totals(complete=44, seconds=130.0, states=1_000_000, cpu=9.0))
    assert [c.status for c in bounded] == ["FAIL", "FAIL", "PASS"]
    rep = bench.SpeedReport(bulk={"seconds": 1.0, "folio_ops_per_s": 2e6},
        explore=_sweep_totals(), checks=slow_2m)
    text = bench.format_speed(rep)
    assert "explore: the default sweep, 57 configurations (45 explored), 822,209 states in 18.0 s wall" in text
    assert "PASS  explore default sweep, wall seconds (2 worker processes): 18.00 (target <= 120" in text


def test_explore_sweep_reads_the_totals_nbmodel_explore_prints():
    """The keys :func:`bench.explore_checks` reads are in ``nbmodel explore --json``'s totals."""
    import argparse

    from nbmodel import explore_cli
    parser = argparse.ArgumentParser()
    explore_cli.add_arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = explore_cli.run(parser.parse_args(["--design", "filemap", "--arch", "x86", "--json", "--offsets", "1"]))
    text = out.getvalue()
    total = json.loads(text)["total"]
    ex = {**total, "jobs": 1}
    assert rc == 0 and {c.status for c in bench.explore_checks(ex)} <= {"PASS", "FAIL"}
    assert ex["complete"] == ex["explored"] == 1 and ex["complete_4k"] == 1 and ex["complete_2m"] == 0
