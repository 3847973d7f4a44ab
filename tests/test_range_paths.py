"""The kernel's range paths take many pages at a time; each must leave the machine exactly as its page-by-page
definition does: ``Kernel._access_run`` (a zeroing or a copy through the direct map) against ``_access`` on
each page, ``PageTable.first_where`` against ``leaf()`` on each page, and the one-page change in place
(``DirectMap.in_place_run``) against ``update_range_prot()``. Machines are driven into random states of
split leaves, zapped pages and stale TLB entries first; each planted bug shows the comparison can fail."""

import random

import pytest

from nbmodel.kernel import Kernel, Touched
from nbmodel.pagetable import CONT, MAPPED, RW, VALID, prot_match

SEEDS = 40
MACHINES = [("x86", None), ("x86", "nogbpages"), ("arm64", "bbml2"), ("arm64", "rodata-full")]
BASE = 0x40000 + 3 * 512  # four 2M blocks inside the second GiB
WINDOW = 4 * 512


def _scrambled(arch: str, mode, seed: int) -> Kernel:
    """A machine after a random mix of zaps, restores, accesses and flushes over the window."""
    rng = random.Random(seed)
    k = Kernel(arch, mode=mode, memory="2G", cpus=2, trace=True)
    k.skip_flush = rng.random() < 0.3  # break-it: on arm64 only a skipped flush leaves a stale entry
    for _ in range(rng.randrange(4, 40)):
        p = BASE + rng.randrange(WINDOW)
        if rng.random() < 0.4:  # a whole contiguous run or 2M leaf changes without a split: stale entries
            p -= p % rng.choice([16, 512])
        n = min(rng.choice([1, 1, 2, 16, 17, 300, 512]), BASE + WINDOW - p)
        what = rng.random()
        if what < 0.35:
            k.set_direct_map_valid_noflush(k.page_address(p), n, rng.random() < 0.4)
        elif what < 0.55:
            k.kernel_access(p, cpu=rng.randrange(2))
        elif what < 0.75:  # fill, then zap without a flush (x86 flushes only when it splits)
            k.kernel_access_range(p, n, cpu=rng.randrange(2))
            k.set_direct_map_valid_noflush(k.page_address(p), n, False)
        elif what < 0.85:
            k.kernel_access_range(p, n, cpu=rng.randrange(2))
        elif what < 0.97:
            a = k.page_address(p)
            k.flush_tlb_kernel_range(a, a + n * 4096)
        else:
            k.flush_tlb_all()
    k.skip_flush = False
    k.touched = Touched()
    return k


def _state(k: Kernel) -> tuple:
    t = k.touched
    return (list(k.dmap.pt.leaves(BASE - 1024, BASE + WINDOW + 1024)), [dict(x.entries) for x in k.tlbs],
            dict(k.counters), list(k.trace.kinds), list(k.trace.args), list(t.pages), t.tlb_dropped)


def _access_differs(seed: int, arch: str, mode, met: set | None = None) -> str | None:
    """How one run of ``_access_run`` differs from the page-by-page loop, or None; ``met`` collects the results
    the loop met."""
    a, b = _scrambled(arch, mode, seed), _scrambled(arch, mode, seed)  # two equal machines, in step
    rng = random.Random(seed + 7)
    for _ in range(6):
        p = BASE - 8 + rng.randrange(WINDOW)
        n = rng.choice([2, 16, 300, 512, 520])
        cpu, quiet = rng.randrange(2), rng.random() < 0.5
        got = a._access_run(p, n, cpu, "zero", quiet)
        want = "ok"
        for q in range(p, p + n):
            r = b._access(q, cpu, "zero", quiet)
            if r != "ok" and want != "oops":
                want = r
            if met is not None:
                met.add(r.value)
        if got != want or _state(a) != _state(b):
            return f"seed {seed}: {arch} {mode} access run {p:#x}+{n} on CPU {cpu}: {got} vs {want}"
    return None


@pytest.mark.parametrize("arch,mode", MACHINES)
def test_access_run_is_the_page_by_page_access(arch, mode):
    met: set = set()
    bad = [d for d in (_access_differs(seed, arch, mode, met) for seed in range(SEEDS)) if d]
    assert not bad, bad[:3]
    assert met == {"ok", "stale", "oops"}  # judged on every outcome, not only on fills


def test_a_run_that_forgets_its_stale_pages_is_caught(monkeypatch):
    monkeypatch.setattr(Kernel, "_stale_pages", lambda self, p, stop, cpu, what: 0)
    bad = [d for arch, mode in MACHINES for d in (_access_differs(seed, arch, mode) for seed in range(SEEDS)) if d]
    assert bad


def test_a_run_that_fills_past_a_contiguous_bit_is_caught(monkeypatch):
    # Treat every valid PTE as outside a contiguous run: arm64 bbml2 boots with contPTE runs, so it must show.
    import nbmodel.kernel as kernel

    monkeypatch.setattr(kernel, "_NOT_PLAIN", prot_match(VALID, VALID, equal=False))
    bad = [d for d in (_access_differs(seed, "arm64", "bbml2") for seed in range(SEEDS)) if d]
    assert bad


MATCHES = [prot_match(MAPPED | VALID, MAPPED), prot_match(VALID, VALID), prot_match(VALID, 0),
           prot_match(VALID | CONT, VALID, equal=False), prot_match(RW, 0)]


@pytest.mark.parametrize("arch,mode", MACHINES)
def test_first_where_is_the_first_matching_leaf(arch, mode):
    for seed in range(40):
        k = _scrambled(arch, mode, seed)
        pt, rng = k.dmap.pt, random.Random(seed)
        for _ in range(20):
            p = BASE - 600 + rng.randrange(WINDOW + 600)
            n = rng.randrange(1, 1500)
            match = rng.choice(MATCHES)
            want = next((q for q in range(p, p + n) if match[pt.leaf(q)[2]]), None)
            assert pt.first_where(p, n, match) == want, (seed, hex(p), n)


def _change_differs(seed: int, arch: str, mode) -> str | None:
    a, b = _scrambled(arch, mode, seed), _scrambled(arch, mode, seed)
    b.dmap.in_place_run = lambda pfn, npages, table: 0  # always the walk: update_range_prot() / apply_range()
    rng = random.Random(seed + 11)
    for _ in range(30):
        p = BASE + rng.randrange(WINDOW)
        if a.dmap.pt.pte_table(p) is None:
            continue
        valid = rng.random() < 0.5
        got, want = a._change(p, 1, valid), b._change(p, 1, valid)
        if got != want or _state(a) != _state(b):
            return f"seed {seed}: {arch} {mode} one-page change at {p:#x} (valid={valid})"
    return None


@pytest.mark.parametrize("arch,mode", MACHINES)
def test_one_page_change_in_place_is_the_walk(arch, mode):
    bad = [d for d in (_change_differs(seed, arch, mode) for seed in range(40)) if d]
    assert not bad, bad[:3]


def test_a_change_in_place_inside_a_contiguous_run_is_caught(monkeypatch):
    from nbmodel.arm64 import Arm64LinearMap

    monkeypatch.setattr(Arm64LinearMap, "in_place_run", lambda self, pfn, npages, table: 1)
    bad = [d for d in (_change_differs(seed, "arm64", "bbml2") for seed in range(40)) if d]
    assert bad


def _each_differs(seed: int, arch: str, mode) -> str | None:
    a, b = _scrambled(arch, mode, seed), _scrambled(arch, mode, seed)
    b.dmap.in_place_run = lambda pfn, npages, table: 0  # each call walks: update_range_prot() / apply_range()
    rng = random.Random(seed + 13)
    for _ in range(4):
        p = BASE + rng.randrange(WINDOW - 600)
        if rng.random() < 0.5:
            p -= p % 512
        n, valid = rng.choice([2, 15, 16, 17, 512, 600]), rng.random() < 0.6
        got = a._change_each(p, n, valid)
        want = False
        for q in range(p, p + n):
            want |= bool(b._change(q, 1, valid))
        if got != want or _state(a) != _state(b):
            return f"seed {seed}: {arch} {mode} page-by-page change of {p:#x}+{n} (valid={valid})"
    return None


@pytest.mark.parametrize("arch,mode", MACHINES)
def test_a_change_page_by_page_is_the_calls_one_by_one(arch, mode):
    # folio_restore_direct_map() with restore_4k: one set_direct_map_valid_noflush() call per page
    bad = [d for d in (_each_differs(seed, arch, mode) for seed in range(SEEDS)) if d]
    assert not bad, bad[:3]


def test_a_page_by_page_run_that_crosses_a_contiguous_run_is_caught(monkeypatch):
    from nbmodel.arm64 import Arm64LinearMap
    from nbmodel.directmap import DirectMap

    monkeypatch.setattr(Arm64LinearMap, "in_place_run", DirectMap.in_place_run)  # the BBML2 splits forgotten
    bad = [d for d in (_each_differs(seed, "arm64", "bbml2") for seed in range(SEEDS)) if d]
    assert bad


def test_a_range_invalidation_drops_what_invalidating_each_page_drops():
    # TLB.invalidate_range() tests the entries or looks up each page, whichever is fewer: both must drop the same.
    from nbmodel.tlb import SPANS, TLB

    rng = random.Random(3)
    for _ in range(2000):
        a, b = TLB(0, SPANS), TLB(0, SPANS)
        for _ in range(rng.randrange(1, 40)):
            span = rng.choice(SPANS[:4])
            first = rng.randrange(0, 64 * 512) // span * span
            a.fill(first, span)
            b.fill(first, span)
        start, n = rng.randrange(0, 64 * 512), rng.choice([1, 2, 7, 16, 100, 512, 3000])
        if rng.random() < 0.7:  # ends at an entry's edges, where an off-by-one would show
            firsts = sorted(a.entries)
            start = max(0, rng.choice(firsts) + rng.choice([-1, 0, 1]))
            end = rng.choice(firsts) + rng.choice([0, 1, 2])
            start, n = (start, end - start) if end > start else (end, start - end + 1)
        a.invalidate_range(start, n)
        for p in range(start, start + n):
            b.invalidate_page(p)
        assert a.entries == b.entries, (start, n)
