"""The incremental invariant check (``System.step``, :class:`nbmodel.invariants.IncrementalCheck`) against the
full one (:func:`nbmodel.invariants.broken`): after every step of random programs, for every design, both arches
(x86 with and without 1G pages, arm64 rodata-full and BBML2), with break-it switches and options drawn at boot,
the two give the same ``{key: reason}``; so a broken invariant is reported at the same step with the same
reason. Then bugs are planted in what the kernel notes for the incremental check (a flush_tlb_all() that is
not noted, a TLB fill from an arm64 contiguous run that is not noted, a page-cache delete that is not noted):
the same comparison must fail on each, on a short program written out here and on the random programs.

The per-step cost (flat in the page-cache size) is a benchmark figure, printed by ``nbmodel bench``.
"""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from nbmodel import kernel as kmod
from nbmodel import pagecache as pc
from nbmodel.designs import DESIGNS, SWITCHES
from nbmodel.errors import ModelInputError
from nbmodel.invariants import broken
from nbmodel.physmem import MemoryMap
from nbmodel.system import System

MEM = MemoryMap.of([(1, 0x9F), (0x100, 0x8000)])   # ~128 MiB with the low holes: splits still happen
FILE = 4 << 20                                      # two 2M folios' worth, so large folios fit
OFFSETS = st.sampled_from([0, 4096, 8192, 12288, 2 << 20, (2 << 20) + 4096])
CPUS = st.integers(0, 1)
ARCHES = [("x86", None), ("x86", "nogbpages"), ("arm64", "rodata-full"), ("arm64", "bbml2")]
POINTS = st.none() | st.sampled_from(["after_zap", "after_insert", "after_delete", "after_restore"])


def same(sys: System) -> None:
    """The incremental answer (what the last step recorded, asked again: nothing changed since) is the full one."""
    inc, full = sys.checker.broken(), broken(sys)
    assert inc == full, f"after step {len(sys.steps)} ({sys.steps[-1] if sys.steps else 'boot'}): " \
                        f"incremental {inc} != full {full}"
    last = sys.steps[-1] if sys.steps else None
    if last is not None and last.interrupt is None:
        assert last.broken == full, f"step {last}: recorded {last.broken} != full {full}"


def machine_for(design: str, arch: str, mode, fixed: dict | None = None):
    """Random programs on one design and arch; switches and options drawn at boot, or ``fixed`` ones."""
    class Machine(RuleBasedStateMachine):
        @initialize(seed=st.integers(0, 3), switches=st.sets(st.sampled_from(sorted(SWITCHES)), max_size=2),
                    large=st.booleans(), batch=st.booleans(), mermap=st.booleans())
        def boot(self, seed, switches, large, batch, mermap):
            if fixed is not None:
                self.sys = System(design, arch=arch, mode=mode, cpus=2, trace=False,
                                  **{"memory": MEM, "seed": seed, **fixed})
                self.sys.step("gmem_create", file="g", size=FILE)
                self.sys.step("secret_create", file="s", size="8K")
                return
            try:
                self.sys = System(design, arch=arch, mode=mode, memory=MEM, cpus=2, seed=seed, trace=False,
                                  switches=sorted(switches), large_folios=large, large_zap=large,
                                  batch_flush=batch, write="mermap" if mermap else "refuse")
            except ModelInputError:   # a switch this arch refuses: run the plain design
                self.sys = System(design, arch=arch, mode=mode, memory=MEM, cpus=2, seed=seed, trace=False)
            self.sys.step("gmem_create", file="g", size=FILE)
            self.sys.step("secret_create", file="s", size="8K")

        def _step(self, op, **args):
            try:
                self.sys.step(op, **args)
            except ModelInputError:
                pass   # e.g. a file this program closed, or replace of a 2M folio: refused, nothing changed

        @rule(off=OFFSETS, n=st.sampled_from([4096, 65536]))
        def fallocate(self, off, n):
            self._step("fallocate", file="g", offset=off, len=n)

        @rule(off=OFFSETS, n=st.sampled_from([4096, 65536, 2 << 20]))
        def punch(self, off, n):
            self._step("punch_hole", file="g", offset=off, len=n)

        @rule(off=OFFSETS, point=POINTS, cpu=CPUS)
        def user_fault(self, off, point, cpu):
            extra = {} if point is None else {"interrupt_at": point, "interrupt_cpu": cpu}
            self._step("user_fault", file="g", offset=off, **extra)

        @rule(off=OFFSETS, point=POINTS, cpu=CPUS)
        def guest_fault(self, off, point, cpu):
            extra = {} if point is None else {"interrupt_at": point, "interrupt_cpu": cpu}
            self._step("guest_fault", file="g", offset=off, **extra)

        @rule(off=OFFSETS)
        def write(self, off):
            self._step("write", file="g", offset=off, len="4K")

        @rule(off=OFFSETS, cpu=CPUS)
        def kernel_read(self, off, cpu):
            self._step("kernel_read", file="g", offset=off, cpu=cpu)

        @rule(off=OFFSETS, cpu=CPUS)
        def cpu_touch(self, off, cpu):
            self._step("cpu_touch", file="g", offset=off, cpu=cpu)

        @rule(off=st.sampled_from([0, 4096]), race=st.booleans(), cpu=CPUS)
        def secret(self, off, race, cpu):
            self._step("secret_fault", file="s", offset=off, race=race)
            self._step("cpu_touch", file="s", offset=off, cpu=cpu)

        @rule(off=OFFSETS, op=st.sampled_from(["migrate", "replace", "race_add"]))
        def cache_paths(self, off, op):
            self._step(op, file="g", offset=off)

        @rule(cpu=CPUS)
        def set_cpu(self, cpu):
            self._step("set_cpu", cpu=cpu)

        @rule(count=st.integers(1, 2))
        def fail_alloc(self, count):
            self._step("fail_alloc", count=count)

        @rule(which=st.sampled_from(["g", "s"]))
        def recreate(self, which):
            self._step("close", file=which)
            if which == "g":
                self._step("gmem_create", file="g", size=FILE)
            else:
                self._step("secret_create", file="s", size="8K")

        @invariant()
        def incremental_is_full(self):
            same(self.sys)

    Machine.__name__ = f"Machine_{design.replace('-', '_')}_{arch}_{mode}"
    return Machine


MACHINES = {(d, a, m): machine_for(d, a, m) for d in DESIGNS for a, m in ARCHES}
RUNS = settings(max_examples=120, stateful_step_count=40, deadline=None, derandomize=True, database=None,
                print_blob=True)


@pytest.mark.slow
@pytest.mark.parametrize("design,arch,mode", list(MACHINES), ids=[f"{d}-{a}-{m}" for d, a, m in MACHINES])
def test_incremental_equals_full_on_random_programs(design, arch, mode):
    run_state_machine_as_test(MACHINES[design, arch, mode], settings=RUNS)


# -- planted bugs: each must be caught ---------------------------------------------------------------------------
def _flush_all_not_noted(mp):
    real = kmod.Kernel.flush_tlb_all

    def flush_tlb_all(self, reason=""):
        t = self.touched
        before = t.tlb_dropped if t is not None else None
        real(self, reason)
        if t is not None:
            t.tlb_dropped = before
    mp.setattr(kmod.Kernel, "flush_tlb_all", flush_tlb_all)


def _fill_not_noted(mp):
    real = kmod.Kernel._access

    def access(self, pfn, cpu, what, quiet=False):
        t = self.touched
        n = len(t.pages) if t is not None else 0
        got = real(self, pfn, cpu, what, quiet)
        if t is not None:
            del t.pages[n:]
        return got
    mp.setattr(kmod.Kernel, "_access", access)


def _delete_not_noted(mp):
    real = pc._page_cache_delete

    def delete(k, folio):
        t = k.touched
        n = len(t.slots) if t is not None else 0
        got = real(k, folio)
        if t is not None:
            del t.slots[n:]
        return got
    mp.setattr(pc, "_page_cache_delete", delete)


#: bug -> (plant, a program that shows it: (design, arch, mode, System options, steps))
PLANTED = {
    "flush_tlb_all not noted": (_flush_all_not_noted, ("filemap", "x86", None, dict(
        memory="4G", switches=["skip_flush"], large_folios=True, large_zap=True), [
        ("gmem_create", dict(file="g", size=FILE)),
        ("secret_create", dict(file="s", size="8K")),
        ("secret_fault", dict(file="s", offset=0)),      # zeroed, zapped (splits: flush_tlb_all), flush skipped
        ("secret_fault", dict(file="s", offset=4096)),   # zeroed (TLB filled), zapped, no split, no flush: (a)
        ("guest_fault", dict(file="g", offset=0)),       # a 2M folio in a 1G leaf: split, flush_tlb_all: (a) holds
    ])),
    "contiguous-run TLB fill not noted": (_fill_not_noted, ("filemap", "arm64", "rodata-full", dict(
        seed=3, switches=["arm64_no_bbml2"], large_folios=True, large_zap=True), [
        ("gmem_create", dict(file="g", size=FILE)),
        ("guest_fault", dict(file="g", offset=0)),          # 2M folios zapped inside contiguous-PMD runs
        ("guest_fault", dict(file="g", offset=2 << 20)),    # (no BBML2: the runs are not split)
        ("migrate", dict(file="g", offset=0)),              # the copy fills a 32M entry covering g:512: (a)
    ])),
    "page-cache delete not noted": (_delete_not_noted, ("per-folio", "x86", None, {}, [
        ("gmem_create", dict(file="g", size=FILE)),
        ("fallocate", dict(file="g", offset=0, len=4096)),   # cached, direct map valid: v12 breaks (a)
        ("punch_hole", dict(file="g", offset=0, len=4096)),  # gone from the cache: (a) holds again
    ])),
}


def _run_program(design, arch, mode, opts, steps):
    sys = System(design, arch=arch, mode=mode, cpus=2, trace=False, **{"memory": MEM, **opts})
    for op, args in steps:
        sys.step(op, **args)
        same(sys)
    return sys


def test_planted_programs_pass_unmutated():
    for _, program in PLANTED.values():
        _run_program(*program)


@pytest.mark.parametrize("bug", list(PLANTED))
def test_planted_bug_is_caught_by_the_program(bug, monkeypatch):
    plant, program = PLANTED[bug]
    plant(monkeypatch)
    with pytest.raises(AssertionError, match="incremental"):
        _run_program(*program)


@pytest.mark.slow
@pytest.mark.parametrize("bug", list(PLANTED))
def test_planted_bug_is_caught_by_random_programs(bug, monkeypatch):
    """Random programs (not the one written out above) on the configuration of the bug's program."""
    plant, (design, arch, mode, opts, _) = PLANTED[bug]
    plant(monkeypatch)
    fixed = {k: v for k, v in opts.items() if k != "seed"}
    hunt = settings(max_examples=300, stateful_step_count=40, deadline=None, derandomize=True, database=None,
                    phases=[Phase.generate], print_blob=False)
    with pytest.raises(AssertionError, match="incremental"):
        run_state_machine_as_test(machine_for(design, arch, mode, fixed), settings=hunt)
