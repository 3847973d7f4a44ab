"""Hypothesis stateful tests: random programs over the System, invariants checked as @invariant methods.

What must hold depends on the design (nothing here turns on a break-it switch):
- filemap: (a), (b), (c) - the claim of the agreed design, racing reads at every interrupt point included;
- per-folio (v12): (b), (c), (d) - (a) is broken by design (the "ad hoc" state); migration is left out
  because mm-new's migration of a zapped v12 folio copies through the direct map (see GFAULT+MIGRATE);
- secretmem-style: (b), (c) and (a) between steps - its flush after the insert breaks (a) inside a step,
  so racing reads at after_insert are left out, and so are migration (unhooked, as for v12), race_add and
  replace (page-cache paths only the filemap design hooks).
A failure prints the shortest program that reproduces it (Hypothesis shrinks it).

BadInputMachine interleaves valid steps with generated bad ones (wrong op, missing or unknown argument, bad
value, wrong file or CPU, bad interrupt point): each must raise ModelInputError and leave System.snapshot()
unchanged. Runtime on the 2-CPU build machine: about 35 s for the whole file (each design machine 500
examples x 50 steps in about 7 s, with trace=False and a 128 MiB memory map).
"""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from nbmodel.errors import ModelInputError
from nbmodel.invariants import INVARIANTS, broken
from nbmodel.physmem import MemoryMap
from nbmodel.system import INTERRUPT_POINTS, OPS, System

# Hypothesis stateful machines: 11-20 s each on an idle machine (pytest --durations); ./test.sh --fast skips them.
pytestmark = pytest.mark.slow

MEM = MemoryMap.of([(1, 0x9F), (0x100, 0x8000)])   # ~128 MiB with the low holes: splits still happen
PAGES = 4
offsets = st.integers(0, PAGES - 1).map(lambda i: i * 4096)
cpus = st.integers(0, 1)
HOLDS = {"filemap": ("a", "b", "c"), "per-folio": ("b", "c", "d"), "secretmem": ("a", "b", "c")}
POINTS = {"filemap": ("after_zap", "after_insert", "after_delete", "after_restore"),
          "per-folio": ("after_zap", "after_insert", "after_delete", "after_restore"),
          "secretmem": ("after_zap", "after_delete")}


def machine_for(design: str, arch: str, mode):
    class Machine(RuleBasedStateMachine):
        @initialize(seed=st.integers(0, 3))
        def boot(self, seed):
            self.sys = System(design, arch=arch, mode=mode, memory=MEM, cpus=2, seed=seed, trace=False)
            self.sys.step("gmem_create", file="g", size=f"{PAGES * 4}K")
            self.sys.step("secret_create", file="s", size="8K")

        def _step(self, op, **args):
            self.sys.step(op, **args)

        @rule(off=offsets)
        def fallocate(self, off):
            self._step("fallocate", file="g", offset=off, len="4K")

        @rule(off=offsets)
        def punch(self, off):
            self._step("punch_hole", file="g", offset=off, len="4K")

        @rule(off=offsets, point=st.none() | st.sampled_from(POINTS[design]), cpu=cpus)
        def user_fault(self, off, point, cpu):
            extra = {} if point is None else {"interrupt_at": point, "interrupt_cpu": cpu}
            self._step("user_fault", file="g", offset=off, **extra)

        @rule(off=offsets)
        def guest_fault(self, off):
            self._step("guest_fault", file="g", offset=off)

        @rule(off=offsets)
        def write(self, off):
            self._step("write", file="g", offset=off, len="4K")

        @rule(off=offsets, cpu=cpus)
        def kernel_read(self, off, cpu):
            self._step("kernel_read", file="g", offset=off, cpu=cpu)

        @rule(off=st.sampled_from([0, 4096]), race=st.booleans())
        def secret_fault(self, off, race):
            self._step("secret_fault", file="s", offset=off, race=race)

        @rule(cpu=cpus)
        def set_cpu(self, cpu):
            self._step("set_cpu", cpu=cpu)

        @rule()
        def recreate(self):
            self._step("close", file="g")
            self._step("gmem_create", file="g", size=f"{PAGES * 4}K")

        @invariant()
        def checks_hold_between_steps(self):
            # The model's own predicates on the current state (nbmodel.invariants.broken), which the
            # incremental check System.step runs must give too.
            assert self.sys.checker.broken() == broken(self.sys)
            now = set(broken(self.sys)) & set(HOLDS[design])
            assert not now, {key: broken(self.sys)[key] for key in now}

        @invariant()
        def invariants_hold(self):
            for key in HOLDS[design]:
                assert key not in self.sys.first_broken, (
                    f"{INVARIANTS[key].name} broke at step {self.sys.first_broken[key]}: "
                    f"{self.sys.steps[self.sys.first_broken[key] - 1].broken.get(key)}")

    if design == "filemap":
        @rule(off=offsets)
        def migrate(self, off):
            self._step("migrate", file="g", offset=off)
        Machine.migrate = migrate
    if design != "secretmem":
        # race_add is the page cache's own add, which only the filemap design hooks; under the
        # secretmem-style design an add that bypasses the owner's zap is not part of the design.
        @rule(off=offsets)
        def race_add(self, off):
            self._step("race_add", file="g", offset=off)

        @rule(off=offsets)
        def replace(self, off):
            self._step("replace", file="g", offset=off)
        Machine.race_add = race_add
        Machine.replace = replace
    Machine.__name__ = f"Machine_{design.replace('-', '_')}_{arch}"
    return Machine


RUNS = settings(max_examples=500, stateful_step_count=50, deadline=None, derandomize=True, print_blob=True)

TestFilemapX86 = machine_for("filemap", "x86", None).TestCase
TestFilemapX86.settings = RUNS
TestFilemapArm64 = machine_for("filemap", "arm64", "bbml2").TestCase
TestFilemapArm64.settings = RUNS
TestPerFolioX86 = machine_for("per-folio", "x86", None).TestCase
TestPerFolioX86.settings = RUNS
TestSecretmemX86 = machine_for("secretmem", "x86", None).TestCase
TestSecretmemX86.settings = RUNS


# -- bad input: a ModelInputError, and nothing changed -------------------------------------------------------
GOOD = {"file": "g", "offset": 0, "len": "4K", "size": "8K", "cpu": 1, "flags": ["MMAP"], "vm_type": "default",
        "race": False, "keep_size": True, "count": 1}
BAD_VALUES = st.sampled_from([None, -1, -4096, 3.5, "4Q", "", "-1", True, [], ["NOPE"], {"a": 1}, 1 << 70, "g",
                              "nope", 99])


@st.composite
def bad_steps(draw):
    """A step with one thing wrong: the op, a missing or unknown argument, a value, a file, a CPU, an
    interrupt point. Some draws turn out valid (the model answers them); the test accepts those."""
    op = draw(st.sampled_from(sorted(OPS)))
    args = {"op": op}
    for name, (_, default) in OPS[op].args.items():
        args[name] = GOOD.get(name, default)
    how = draw(st.sampled_from(["op", "drop", "extra", "value", "file", "interrupt", "icpu"]))
    if how == "op":
        args["op"] = draw(st.sampled_from(["", "fallocat", "mmap", "FALLOCATE"]))
    elif how == "drop" and len(args) > 1:
        args.pop(draw(st.sampled_from(sorted(set(args) - {"op"}))))
    elif how == "extra":
        args[draw(st.sampled_from(["bogus", "pfn", "interrupt"]))] = 1
    elif how == "value" and len(args) > 1:
        args[draw(st.sampled_from(sorted(set(args) - {"op"})))] = draw(BAD_VALUES)
    elif how == "file" and "file" in args:
        args["file"] = draw(st.sampled_from(["missing", "s" if op != "secret_fault" else "g"]))
    elif how == "interrupt":
        args.update(interrupt_at=draw(st.sampled_from(["later", "after_zap ", None, 3])), interrupt_cpu=1)
    else:
        args.update(interrupt_at=draw(st.sampled_from(INTERRUPT_POINTS)), interrupt_cpu=draw(
            st.sampled_from([-1, 2, 7, None, "1"])))
    return args


class BadInputMachine(RuleBasedStateMachine):
    """Valid steps build up state; every bad step in between must raise ModelInputError and leave
    System.snapshot() exactly as it was."""

    @initialize(design=st.sampled_from(["per-folio", "filemap", "secretmem"]), arch=st.sampled_from(["x86", "arm64"]))
    def boot(self, design, arch):
        self.sys = System(design, arch=arch, memory=MEM, cpus=2, trace=False)
        self.sys.step("gmem_create", file="g", size="16K")
        self.sys.step("secret_create", file="s", size="8K")

    @rule(op=st.sampled_from(["fallocate", "punch_hole", "user_fault", "guest_fault", "write", "migrate"]),
          off=offsets)
    def valid(self, op, off):
        if "g" not in self.sys.files:  # a "bad" draw that was valid after all (close) took it away
            self.sys.step("gmem_create", file="g", size="16K")
        args = {"file": "g", "offset": off} | ({"len": "4K"} if op in ("fallocate", "punch_hole", "write") else {})
        if op == "migrate" and self.sys.files["g"].mapping.lookup(off >> 12) is None:
            return
        self.sys.step(op, **args)

    @rule(bad=bad_steps())
    def bad(self, bad):
        snap = self.sys.snapshot()
        try:
            self.sys.step(**dict(bad))
        except ModelInputError:
            assert self.sys.snapshot() == snap, f"{bad} raised ModelInputError but changed the state"


TestBadInput = BadInputMachine.TestCase
TestBadInput.settings = settings(max_examples=200, stateful_step_count=30, deadline=None, derandomize=True)
