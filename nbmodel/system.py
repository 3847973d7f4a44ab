"""A whole machine running one design: the kernel, its files, and the operations a scenario can take.

Every operation is a *step*: it returns the kernel's answer as a short string (``"0"``, ``"EEXIST"``,
``"SIGBUS"``, ``"stale"``...), appends its events, and is followed by a check of every invariant. The step
record is what the command line, the scenarios, the explorer and the widgets all read.

Inside the model the kernel paths answer as the kernel does (0 or a negative errno, a count, a ``vm_fault_t``,
an access outcome, :data:`~nbmodel.errors.OOPS`); :func:`step_result` is the one place those become the step's
string.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import guest_memfd as gm
from . import pagecache as pc
from . import secretmem as sm
from .counters import values_delta
from .errors import VM_FAULT_ERROR, Access, Errno, ModelInputError, VmFault, errno_name
from .invariants import INVARIANTS, IncrementalCheck, racing_read_breaks
from .kernel import Kernel
from .setup import Setup
from .trace import Trace
from .units import PAGE_SHIFT, parse_signed_size, parse_size

INTERRUPT_POINTS = ("after_zap", "after_insert", "after_delete", "after_restore")


class Step:
    """One operation and what the modelled kernel did for it.

    ``counters`` (the counters that changed, ``name -> new - old``) is worked out from the two snapshots of the
    kernel's counters' values the step holds when it is first read: most steps of a long run are never shown, and the
    difference of 28 counters cost a quarter of a step (one op per page, as ``bench.traced_steps`` steps: 20 µs
    with it, 15 µs with it left out, on the 2-core development machine). The snapshots are tuples of ints, not
    dict copies: 264 bytes a step instead of 832, which every step of a long run keeps (100,000 such steps with
    the collector on: 24.0 µs a step with dict copies, 22.6 with tuples, the mean of two runs each)."""

    __slots__ = ("index", "op", "args", "result", "events", "broken", "saw", "interrupt", "_counted", "_delta")

    def __init__(self, index: int, op: str, args: dict, result: str, events: Trace, counted: tuple, broken: dict,
                 saw: str | None = None, interrupt: str | None = None):
        self.index, self.op, self.args, self.result, self.events = index, op, args, result, events
        self._counted = counted  # (names, values before, values after): tuples
        self._delta = None
        self.broken, self.saw, self.interrupt = broken, saw, interrupt

    @property
    def counters(self) -> dict:
        """The counters this step changed, ``name -> new - old``."""
        if self._delta is None:
            self._delta = values_delta(*self._counted)
        return self._delta

    def _key(self) -> tuple:
        return (self.index, self.op, self.args, self.result, self.events, self.counters, self.broken, self.saw,
                self.interrupt)

    def __eq__(self, other):
        return self._key() == other._key() if type(other) is Step else NotImplemented

    __hash__ = None  # a record with dicts in it, as the dataclass it was

    def __repr__(self) -> str:
        return (f"Step(index={self.index!r}, op={self.op!r}, args={self.args!r}, result={self.result!r}, "
                f"events={self.events!r}, counters={self.counters!r}, broken={self.broken!r}, saw={self.saw!r}, "
                f"interrupt={self.interrupt!r})")

    def as_dict(self) -> dict:
        out = {"index": self.index, "op": self.op, "args": self.args, "result": self.result,
               "events": [str(e) for e in self.events], "broken": self.broken}
        if self.saw is not None:
            out["saw"] = self.saw
        if self.interrupt is not None:
            out["interrupt"] = self.interrupt
        return out

    def __str__(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.args.items())
        extra = f" saw={self.saw}" if self.saw is not None else ""
        extra += f" interrupt={self.interrupt}" if self.interrupt is not None else ""
        return f"{self.index:>3}. {self.op} {args} -> {self.result}{extra}"


@dataclass(frozen=True)
class OpSpec:
    """An operation's arguments: ``name -> (type, default)``; a default of ``REQUIRED`` must be given."""

    func: str
    args: dict
    doc: str


REQUIRED = object()
_SIZE = "size"
_SSIZE = "signed size"  # an loff_t the kernel checks itself (negative -> -EINVAL)
_U64 = "u64 size"  # a __u64 ABI field the kernel checks itself (KVM_CREATE_GUEST_MEMFD's size)
U64_MAX = (1 << 64) - 1
OPS = {
    "gmem_create": OpSpec("op_gmem_create", {"file": (str, REQUIRED), "size": (_U64, REQUIRED),
                                             "flags": (list, ["MMAP", "INIT_SHARED", "NO_DIRECT_MAP"]),
                                             "vm_type": (str, "default")},
                          "KVM_CREATE_GUEST_MEMFD"),
    "mmap": OpSpec("op_mmap", {"file": (str, REQUIRED)}, "mmap(MAP_SHARED) the file into the VMM"),
    "fallocate": OpSpec("op_fallocate", {"file": (str, REQUIRED), "offset": (_SSIZE, 0), "len": (_SSIZE, REQUIRED),
                                         "keep_size": (bool, True)}, "fallocate(KEEP_SIZE): allocate"),
    "punch_hole": OpSpec("op_punch_hole", {"file": (str, REQUIRED), "offset": (_SSIZE, 0), "len": (_SSIZE, REQUIRED)},
                         "fallocate(PUNCH_HOLE|KEEP_SIZE)"),
    "user_fault": OpSpec("op_user_fault", {"file": (str, REQUIRED), "offset": (_SIZE, 0)},
                         "the VMM touches its mmap of guest_memfd (kvm_gmem_fault_user_mapping)"),
    "guest_fault": OpSpec("op_guest_fault", {"file": (str, REQUIRED), "offset": (_SIZE, 0)},
                          "the guest touches the page (kvm_gmem_get_pfn)"),
    "write": OpSpec("op_write", {"file": (str, REQUIRED), "offset": (_SIZE, 0), "len": (_SIZE, "4K")},
                    "write() population (unmerged series)"),
    "read": OpSpec("op_read", {"file": (str, REQUIRED), "len": (_SIZE, "4K")},
                   "read() on the fd, as 6.18 answers it (vfs_read: no FMODE_CAN_READ, EINVAL)"),
    "pread": OpSpec("op_pread", {"file": (str, REQUIRED), "offset": (_SSIZE, 0), "len": (_SIZE, "4K")},
                    "pread64() on the fd (ksys_pread64: EINVAL for offset < 0, else ESPIPE)"),
    "pwrite": OpSpec("op_pwrite", {"file": (str, REQUIRED), "offset": (_SSIZE, 0), "len": (_SIZE, "4K")},
                     "pwrite64() on the fd as mainline 6.18 answers it (ksys_pwrite64: EINVAL / ESPIPE); "
                     "not the unmerged write() population modelled by 'write'"),
    "ftruncate": OpSpec("op_ftruncate", {"file": (str, REQUIRED), "size": (_SSIZE, REQUIRED)},
                        "ftruncate() (kvm_gmem_setattr: EINVAL; secretmem_setattr: only while i_size is 0)"),
    "populate": OpSpec("op_populate", {"file": (str, REQUIRED), "offset": (_SIZE, 0)},
                       "kvm_gmem_populate (SNP/TDX launch)"),
    "close": OpSpec("op_close", {"file": (str, REQUIRED)}, "close the last reference"),
    "secret_create": OpSpec("op_secret_create", {"file": (str, REQUIRED), "size": (_SIZE, REQUIRED)},
                            "memfd_secret + ftruncate"),
    "secret_fault": OpSpec("op_secret_fault", {"file": (str, REQUIRED), "offset": (_SIZE, 0),
                                               "race": (bool, False)}, "touch a memfd_secret mapping"),
    "kernel_read": OpSpec("op_kernel_read", {"file": (str, REQUIRED), "offset": (_SIZE, 0), "cpu": (int, None)},
                          "the kernel reads the page through the direct map"),
    "cpu_touch": OpSpec("op_cpu_touch", {"cpu": (int, REQUIRED), "file": (str, REQUIRED), "offset": (_SIZE, 0)},
                        "a CPU touches the page through the direct map (fills its TLB)"),
    "migrate": OpSpec("op_migrate", {"file": (str, REQUIRED), "offset": (_SIZE, 0)}, "migrate the folio"),
    "replace": OpSpec("op_replace", {"file": (str, REQUIRED), "offset": (_SIZE, 0)}, "replace_page_cache_folio"),
    "race_add": OpSpec("op_race_add", {"file": (str, REQUIRED), "offset": (_SIZE, 0)},
                       "another task's filemap_add_folio at an occupied index"),
    "fail_alloc": OpSpec("op_fail_alloc", {"count": (int, 1)}, "the next page-table allocations fail (-ENOMEM)"),
    "set_cpu": OpSpec("op_set_cpu", {"cpu": (int, REQUIRED)}, "run the following steps on this CPU"),
}
_STEP_KEYS = {"interrupt_at", "interrupt_cpu"}
_SCALARS = (int, str, bool, type(None))
# What _precheck asks of the op names, as sets
_CREATE_OPS = frozenset({"gmem_create", "secret_create"})
_GMEM_OPS = frozenset({"fallocate", "punch_hole", "user_fault", "guest_fault", "write", "populate"})
_OFFSET_OPS = frozenset({"kernel_read", "cpu_touch", "migrate", "replace", "race_add", "user_fault", "guest_fault",
                         "populate", "secret_fault"})
_ANSWERS_PAST_END = frozenset({"user_fault", "secret_fault", "guest_fault", "populate"})  # SIGBUS / EINVAL
_NO_EVENTS = Trace()  # what a step that emitted nothing holds (the trace off, or a quiet op): read-only, shared


class System:
    """A kernel plus a design plus the files created on it. Built from a :class:`~nbmodel.setup.Setup` (or
    its fields as keyword arguments), which validates every option before anything is built."""

    def __init__(self, design: str = "filemap", arch: str = "x86", mode: str | None = None, memory="4G",
                 cpus: int = 2, seed: int = 0, switches=(), write: str = "refuse", large_folios: bool = False,
                 batch_flush: bool = False, fwb: bool = True, trace: bool = True, large_zap: bool = False,
                 tlbirange: bool | None = None, unmapped_source: bool = False, populate: str = "kmap_local",
                 snp_no_direct_map: bool = False, setup: Setup | None = None):
        if setup is None:
            setup = Setup(design=design, arch=arch, mode=mode, memory=memory, cpus=cpus, seed=seed,
                          switches=switches, write=write, large_folios=large_folios, batch_flush=batch_flush,
                          fwb=fwb, trace=trace, large_zap=large_zap, tlbirange=tlbirange,
                          unmapped_source=unmapped_source, populate=populate, snp_no_direct_map=snp_no_direct_map)
        elif not isinstance(setup, Setup):
            raise ModelInputError(f"setup must be a Setup, not {setup!r}")
        self.setup = setup
        self.config = setup.config()
        self.k = Kernel(setup.arch, setup.kernel_mode(), setup.memory, setup.cpus, setup.seed, trace=setup.trace,
                        fwb=setup.fwb, tlbirange=setup.tlbirange)
        self.config.install(self.k)
        self.fwb = setup.fwb
        self.files: dict = {}
        self.steps: list[Step] = []
        self.first_broken: dict[str, int] = {}
        self._validated: dict = {}  # (op, args, their types) -> validate_step's answer, for steps run again
        self._counters_seen: tuple = ()  # the kernel's counters' values as the last step left them
        self._counter_names: tuple = ()  # their names, in that order (Step.counters pairs them up)
        self._names_of = None            # the counters those names are of
        # The invariants after each step, re-decided for what the step touched (same answer as broken(self)).
        self.checker = IncrementalCheck(self)

    # -- running steps -----------------------------------------------------------------------------------
    def step(self, op: str, **args) -> Step:
        """Run one operation; raises ModelInputError (state untouched) if the operation or arguments are bad."""
        op, clean, at, icpu = self.validate_step(op, args)
        start = len(self.k.trace)
        counters = self.k.counters
        values = tuple(counters.values())
        # The snapshot taken after the last step is this step's "before" when nothing changed the counters since:
        # consecutive steps share one.
        before = self._counters_seen if self._counters_seen == values else values
        result, saw, inside, interrupt = self.run_validated(op, clean, at, icpu)
        trace = self.k.trace
        events = trace[start:] if len(trace) > start else _NO_EVENTS
        shown = dict(clean)
        if at is not None:
            shown.update(interrupt_at=at, interrupt_cpu=icpu)
        now = self.checker.broken()
        after = tuple(counters.values())
        if after == before:
            after = before
        self._counters_seen = after
        if len(self._counter_names) != len(after) or self._names_of is not counters:
            self._counter_names, self._names_of = tuple(counters), counters
        step = Step(len(self.steps) + 1, op, shown, result, events, (self._counter_names, before, after),
                    {**inside, **now} if inside else now, saw, interrupt)
        for key in step.broken:
            self.first_broken.setdefault(key, step.index)
        self.steps.append(step)
        return step

    def validate_step(self, op: str, args: dict) -> tuple:
        """``(op, arguments with defaults and sizes in bytes, interrupt point, interrupt CPU)`` for
        :meth:`run_validated`, or ModelInputError. Depends on the machine only, not on its state, so the answer
        for arguments of plain values is remembered and handed out again: read it, do not change it."""
        try:
            # Keyed by the values' types as well: True == 1 and 1.0 == 1, and validation tells them apart.
            key = (op, tuple(args.items()), tuple(map(type, args.values())))
            known = self._validated.get(key)
        except TypeError:  # an unhashable value (a list of flags): validated each time
            key = known = None
        if known is not None:
            return known
        spec = OPS.get(op) if isinstance(op, str) else None
        if spec is None:
            raise ModelInputError(f"unknown op {op!r}; known: {', '.join(OPS)}")
        args = dict(args)
        at, icpu = args.pop("interrupt_at", None), args.pop("interrupt_cpu", None)
        clean = validate_args(op, args)
        if at is not None and at not in INTERRUPT_POINTS:
            raise ModelInputError(f"interrupt_at must be one of {', '.join(INTERRUPT_POINTS)}, not {at!r}")
        if at is not None and (type(icpu) is not int or not 0 <= icpu < self.k.ncpus):
            raise ModelInputError(f"interrupt_cpu must name a CPU from 0 to {self.k.ncpus - 1}")
        if at is None and icpu is not None:
            raise ModelInputError("interrupt_cpu needs interrupt_at (the point where that CPU runs)")
        out = op, clean, at, icpu
        # Remembered only when nothing in it can be changed in place (a default list of flags could).
        if key is not None and len(self._validated) < 4096 and all(type(v) in _SCALARS for v in clean.values()):
            self._validated[key] = out
        return out

    def run_validated(self, op: str, clean: dict, at: str | None = None, icpu: int | None = None) -> tuple:
        """The operation itself, after :meth:`validate_step`: ``(result, saw, broken inside the step, what the
        racing read at ``at`` returned)``. :meth:`step` wraps it with the trace slice, the counters, the
        invariant check and the :class:`Step` record; the explorer calls it directly (it checks each state
        itself)."""
        self._precheck(op, clean)
        if at is None:
            result, saw = getattr(self, OPS[op].func)(**clean)
            return step_result(result), saw, {}, None
        seen, inside = [], {}

        def hook(k, point, pfn, _at=at, _cpu=icpu):
            if point == _at and not seen:
                seen.append(k.kernel_access(pfn, cpu=_cpu, what="racing read"))
                inside.update(racing_read_breaks(self, pfn, seen[0]))
        self.k.interrupt = hook
        try:
            result, saw = getattr(self, OPS[op].func)(**clean)
        finally:
            self.k.interrupt = None
        return step_result(result), saw, inside, step_result(seen[0]) if seen else "not reached"

    def run(self, steps) -> list[Step]:
        """Run a list of ``{"op": ..., **args}`` dicts."""
        return [self.step(**dict(s)) for s in steps]

    def replay(self, upto: int | None = None) -> System:
        """A fresh System with the same setup that has run the first ``upto`` steps (all by default)."""
        other = System(setup=self.setup)
        for st in self.steps[:upto]:
            other.step(st.op, **st.args)
        return other

    def trace_text(self) -> list[str]:
        """Every step and its events as lines of text: two runs are equal iff these lists are equal."""
        out = []
        for st in self.steps:
            out.append(str(st))
            out.extend(f"      {e}" for e in st.events)
        return out

    def invariant_status(self) -> dict[str, str]:
        """``{name: "held" | "broken at step N" | "n/a"}`` over every step so far."""
        out = {}
        for key, inv in INVARIANTS.items():
            if self.config.design not in inv.designs:
                out[inv.name] = "n/a"
            elif key in self.first_broken:
                out[inv.name] = f"broken at step {self.first_broken[key]}"
            else:
                out[inv.name] = "held"
        return out

    def snapshot(self) -> tuple:
        return (self.k.snapshot(), tuple((n, f.mapping.snapshot()) for n, f in sorted(self.files.items())),
                len(self.steps))

    # -- validation that must happen before anything changes ------------------------------------------------
    def _precheck(self, op: str, a: dict) -> None:
        name = a.get("file")
        if name is not None:
            f = self.files.get(name)
            if op in _CREATE_OPS:
                if f is not None:
                    raise ModelInputError(f"{op}: a file named {name!r} exists already")
            elif f is None:
                raise ModelInputError(f"{op}: no file named {name!r} (create it first)")
            elif op in _GMEM_OPS and not isinstance(f, gm.GmemFile):
                raise ModelInputError(f"{op}: {name!r} is not a guest_memfd")
            elif op == "secret_fault" and not isinstance(f, sm.SecretFile):
                raise ModelInputError(f"{op}: {name!r} is not a memfd_secret file")
        if op == "gmem_create":
            unknown = set(a["flags"]) - set(gm.FLAGS)
            if unknown:
                raise ModelInputError(f"gmem_create: unknown flags {sorted(unknown)}; known: {', '.join(gm.FLAGS)}")
            if a["vm_type"] not in gm.VM_TYPES or (a["vm_type"] in gm.COCO and self.k.arch != "x86"):
                raise ModelInputError(f"gmem_create: VM type {a['vm_type']!r} does not exist on {self.k.arch}")
        cpu = a.get("cpu")
        if cpu is not None and not 0 <= cpu < self.k.ncpus:
            raise ModelInputError(f"{op}: no CPU {cpu} (this machine has {self.k.ncpus})")
        if op in _OFFSET_OPS and a["offset"] >= self.files[name].size and op not in _ANSWERS_PAST_END:
            raise ModelInputError(f"{op}: offset {a['offset']} is past the end of {name!r}")

    def _folio_at(self, name: str, offset: int):
        return self.files[name].mapping.lookup(offset >> PAGE_SHIFT)

    # -- operations: each returns (the kernel's answer as the kernel gives it, what was read) ------------------
    def _created(self, name: str, got) -> tuple:
        if isinstance(got, int):
            return got, None
        self.files[name] = got
        return 0, None

    def op_gmem_create(self, file, size, flags, vm_type):
        return self._created(file, gm.kvm_gmem_create(self.k, file, size, flags, vm_type))

    def op_mmap(self, file):
        f = self.files[file]
        return (gm.kvm_gmem_mmap(self.k, f) if isinstance(f, gm.GmemFile) else 0), None

    def op_fallocate(self, file, offset, len, keep_size):
        return gm.kvm_gmem_fallocate(self.k, self.files[file], offset, len, keep_size=keep_size), None

    def op_punch_hole(self, file, offset, len):
        return gm.kvm_gmem_fallocate(self.k, self.files[file], offset, len, punch_hole=True), None

    def op_user_fault(self, file, offset):
        return gm.vmm_store(self.k, self.files[file], offset), None

    def op_guest_fault(self, file, offset):
        return gm.kvm_gmem_get_pfn(self.k, self.files[file], offset), None

    def op_write(self, file, offset, len):
        return gm.kvm_gmem_write(self.k, self.files[file], offset, len), None

    def op_read(self, file, len):
        f = self.files[file]
        read = gm.kvm_gmem_read if isinstance(f, gm.GmemFile) else sm.secretmem_read
        return read(self.k, f, 0, len, positional=False), None

    def op_pread(self, file, offset, len):
        f = self.files[file]
        read = gm.kvm_gmem_read if isinstance(f, gm.GmemFile) else sm.secretmem_read
        return read(self.k, f, offset, len, positional=True), None

    def op_pwrite(self, file, offset, len):
        f = self.files[file]
        pwrite = gm.kvm_gmem_pwrite if isinstance(f, gm.GmemFile) else sm.secretmem_pwrite
        return pwrite(self.k, f, offset, len), None

    def op_ftruncate(self, file, size):
        f = self.files[file]
        trunc = gm.kvm_gmem_ftruncate if isinstance(f, gm.GmemFile) else sm.secretmem_ftruncate
        return trunc(self.k, f, size), None

    def op_populate(self, file, offset):
        return gm.kvm_gmem_populate(self.k, self.files[file], offset), None

    def op_close(self, file):
        f = self.files.pop(file)
        ret = gm.kvm_gmem_release(self.k, f) if isinstance(f, gm.GmemFile) else sm.secretmem_release(self.k, f)
        return ret, None

    def op_secret_create(self, file, size):
        return self._created(file, sm.memfd_secret(self.k, file, size))

    def op_secret_fault(self, file, offset, race):
        return sm.secretmem_fault(self.k, self.files[file], offset, race=race), None

    def op_kernel_read(self, file, offset, cpu, what="read"):
        folio = self._folio_at(file, offset)
        if folio is None:
            return -Errno.ENOENT, None  # nothing cached at that index: the model's answer, no kernel path
        pfn = folio.pfn + ((offset >> PAGE_SHIFT) - folio.index)
        result = self.k.kernel_access(pfn, cpu=cpu, what=what)
        return result, (folio.content if result is not Access.OOPS else None)

    def op_cpu_touch(self, cpu, file, offset):
        return self.op_kernel_read(file, offset, cpu, what="touch")

    def op_migrate(self, file, offset):
        folio = self._folio_at(file, offset)
        if folio is None:
            return -Errno.ENOENT, None
        got = pc.migrate_folio(self.k, folio)
        return (got if isinstance(got, int) else 0), None

    def op_replace(self, file, offset):
        old = self._folio_at(file, offset)
        if old is None:
            return -Errno.ENOENT, None
        if old.order:  # checked before anything is allocated: bad input leaves the state as it was
            raise ModelInputError("replace takes small folios only: replace_page_cache_folio() moves one "
                                  "page-cache reference (its one caller, FUSE, passes small folios)")
        new = self.k.folio_alloc(old.order, name=old.name)
        if isinstance(new, int):
            return new, None
        new.content = old.content
        new.flags |= old.flags - {"locked"}  # the caller hands over an uptodate copy
        old.flags.add("locked")
        new.flags.add("locked")
        self.k.folio_get(old)
        pc.replace_page_cache_folio(self.k, old, new)
        old.flags.discard("locked")
        new.flags.discard("locked")
        self.k.folio_put(old)
        self.k.folio_put(new)
        return 0, None

    def op_race_add(self, file, offset):
        f = self.files[file]
        folio = self.k.folio_alloc(0, name=f"{file}:race")
        if isinstance(folio, int):
            return folio, None
        ret = pc.filemap_add_folio(self.k, f.mapping, folio, offset >> PAGE_SHIFT)
        if ret == 0:
            folio.flags.discard("locked")
        self.k.folio_put(folio)
        return ret, None

    def op_fail_alloc(self, count):
        if count < 0:
            raise ModelInputError("fail_alloc count must not be negative")
        self.k.fail_pgtable_allocs = count
        return 0, None

    def op_set_cpu(self, cpu):
        if not 0 <= cpu < self.k.ncpus:
            raise ModelInputError(f"no CPU {cpu} (this machine has {self.k.ncpus})")
        self.k.current_cpu = cpu
        return 0, None


def step_result(ret) -> str:
    """The edge: a kernel answer as the step result users, scenarios, notebooks and the explorer read.

    - a :class:`~nbmodel.errors.VmFault` (a fault handler's ``vm_fault_t``): the name of its error bit
      (``"SIGBUS"``, ``"OOM"``...), or ``"0"`` when it has none (``VM_FAULT_LOCKED``: the store went through);
    - an :class:`~nbmodel.errors.Access` (a kernel access, or :data:`~nbmodel.errors.OOPS` from a path that
      oopsed): ``"ok"``, ``"stale"`` or ``"oops"``;
    - an ``int``: ``"0"``, the errno's name for a negative value (``"EINVAL"``), the count for a positive one.

    Nothing else is a kernel answer: anything else raises TypeError (a model bug, not bad input)."""
    if type(ret) is int:  # first: most answers are (a VmFault is an int subclass, not an int)
        return errno_name(ret)
    if isinstance(ret, VmFault):
        err = ret & VM_FAULT_ERROR
        return err.name if err else "0"
    if isinstance(ret, Access):
        return ret.value
    raise TypeError(f"not a kernel answer: {ret!r}")


def validate_args(op: str, args: dict) -> dict:
    """Check ``args`` against the op's spec; returns them with defaults filled and sizes parsed to bytes."""
    spec = OPS[op]
    unknown = set(args) - set(spec.args) - _STEP_KEYS
    if unknown:
        raise ModelInputError(f"{op}: unknown argument(s) {sorted(unknown)}; it takes {', '.join(spec.args)}")
    out = {}
    for name, (typ, default) in spec.args.items():
        if name not in args:
            if default is REQUIRED:
                raise ModelInputError(f"{op}: missing argument {name!r}")
            out[name] = list(default) if isinstance(default, list) else default
            if typ in (_SIZE, _SSIZE, _U64) and default is not None:
                out[name] = parse_size(default)
            continue
        value = args[name]
        if typ == _SIZE:
            out[name] = parse_size(value)
        elif typ == _SSIZE:
            out[name] = parse_signed_size(value)
        elif typ == _U64:
            out[name] = parse_size(value, limit=U64_MAX)
        elif typ is int and ((value is None and default is None)
                             or (isinstance(value, int) and not isinstance(value, bool))):
            out[name] = value
        elif typ is bool and isinstance(value, bool):
            out[name] = value
        elif typ is str and isinstance(value, str):
            out[name] = value
        elif typ is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[name] = list(value)
        else:
            raise ModelInputError(f"{op}: argument {name!r} must be {getattr(typ, '__name__', typ)}, not {value!r}")
    return out


__all__ = ["System", "Step", "OPS", "INTERRUPT_POINTS", "validate_args", "step_result"]
