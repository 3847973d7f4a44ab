"""Scenarios run on the real kernel, beside the model (``nbmodel run --live FILE...``), as klitmus7 runs LKMM
litmus tests on hardware.

A scenario runs live when every step exists on the running kernel:

``secret_create``  ``memfd_secret(2)`` + ``ftruncate()``
``secret_fault``   a store to the file's shared mapping (the file is mapped when first needed)
``gmem_create``    ``KVM_CREATE_GUEST_MEMFD`` on a default-type VM, with flags the kernel reports in
                   ``KVM_CAP_GUEST_MEMFD_FLAGS``
``mmap``           ``mmap(MAP_SHARED)`` of the whole file: ``"0"`` or the errno (ENODEV without MMAP)
``user_fault``     a store to the guest_memfd mapping (mapped implicitly if no ``mmap`` step came first; if that
                   mmap fails, the step's result is its errno)
``fallocate``      ``fallocate(KEEP_SIZE)`` (or without KEEP_SIZE when ``keep_size = false``)
``punch_hole``     ``fallocate(PUNCH_HOLE | KEEP_SIZE)``
``read``           ``read(fd, buf, len)``: the count or the errno
``pread``          ``pread64(fd, buf, len, offset)``
``pwrite``         ``pwrite64(fd, buf, len, offset)`` (not the model's ``write``, the unmerged population series)
``ftruncate``      ``ftruncate(fd, size)``
``close``          ``munmap()`` + ``close()``

Everything else (guest faults, kernel reads, migration, races, interrupts, fault injection, break-it switches,
large folios, other VM types, ``NO_DIRECT_MAP`` on a kernel without it) has no live counterpart, and the scenario
is skipped with the reason. The whole scenario runs in a child process, and each store in a grandchild that
shares the mapping, so a SIGBUS is a step's outcome, not a crash.

Per step the kernel's result is printed beside the model's (the file's design ``secretmem`` if it has it, the
mainline one; otherwise its first design), with the ``/proc/vmstat`` split and ``/proc/meminfo`` DirectMap
deltas. Those are **judged** only as :mod:`nbmodel.crosscheck` allows: a step that changes no direct-map entry in
the model (guest_memfd of 6.18, create, close) must change none in the kernel; a memfd_secret fault is judged
where the kernel region's state is known (the per-boot ledger, or earlier faults of this run) and equals the
model region's state before the fault; otherwise it says "not judged".
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import fcntl
import json
import mmap
import os
import platform
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import crosscheck as cc
from . import realkernel as rk
from . import scenario as sc
from .errors import Errno
from .units import PAGE_SIZE, parse_size

LIVE_OPS = ("secret_create", "secret_fault", "gmem_create", "mmap", "user_fault", "fallocate", "punch_hole",
            "read", "pread", "pwrite", "ftruncate", "close")
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
GMEM_FLAGS = {"MMAP": 1 << 0, "INIT_SHARED": 1 << 1, "NO_DIRECT_MAP": 1 << 2}
SPLITS = ("direct_map_level2_splits", "direct_map_level3_splits")
DIRECT_MAP = ("DirectMap4k", "DirectMap2M", "DirectMap1G")
ARCH = {"x86_64": "x86", "aarch64": "arm64"}


@dataclass
class LiveStep:
    index: int
    op: str
    args: dict
    model: str
    kernel: str
    model_delta: dict = field(default_factory=dict)
    kernel_delta: dict = field(default_factory=dict)
    judged: str = ""          # "equal", "differ" or "not judged: why"

    @property
    def result_equal(self) -> bool:
        return self.model == self.kernel

    def line(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.args.items() if k != "flags" or v)
        res = "equal" if self.result_equal else "DIFFER"
        md, kd = self.model_delta, self.kernel_delta
        splits = (f"L2/L3 model +{md.get(SPLITS[0], 0)}/+{md.get(SPLITS[1], 0)} kernel "
                  f"+{kd.get(SPLITS[0], 0)}/+{kd.get(SPLITS[1], 0)}, DirectMap4k model {md.get('DirectMap4k', 0):+d} "
                  f"kernel {kd.get('DirectMap4k', 0):+d} kB") if kd else "no counters"
        return (f"  {self.index:>3}. {self.op} {args}: model {self.model} | kernel {self.kernel} [{res}]; "
                f"{splits} [{self.judged}]")


@dataclass
class LiveRun:
    scenario: str
    path: str
    design: str = ""
    skipped: str | None = None
    steps: list = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.skipped is None and self.error is None and
                all(s.result_equal and not s.judged.startswith("differ") for s in self.steps))

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def report(self, kernel: str | None = None) -> str:
        head = f"== {self.scenario} live on {kernel or platform.release()} ({self.path})"
        if self.skipped:
            return f"{head}\n  SKIP: {self.skipped}"
        lines = [f"{head}, model design {self.design}"] + [s.line() for s in self.steps]
        if self.error:
            lines.append(f"  ERROR: {self.error}")
        judged = sum(1 for s in self.steps if s.judged in ("equal", "differ"))
        lines.append(f"  LIVE {'EQUAL' if self.ok else 'DIFFER'}: {len(self.steps)} steps, results "
                     f"{sum(s.result_equal for s in self.steps)} equal; direct-map deltas judged at {judged} step(s)")
        return "\n".join(lines)


# -- what can run here --------------------------------------------------------------------------------------
def machine_support() -> dict:
    """What the running kernel offers: ``{"secretmem": None | why not, "kvm": None | why not, "gmem_flags": int}``."""
    out = {"secretmem": None, "kvm": None, "gmem_flags": 0}
    try:
        fd, _ = rk.open_secretmem(PAGE_SIZE)
        os.close(fd)
    except (rk.Unavailable, OSError) as e:
        out["secretmem"] = str(e)
    try:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        out["kvm"] = f"/dev/kvm: {e.strerror}"
        return out
    try:
        vm = fcntl.ioctl(kvm, rk.KVM_CREATE_VM, 0)
        try:
            if not fcntl.ioctl(vm, rk.KVM_CHECK_EXTENSION, rk.KVM_CAP_GUEST_MEMFD):
                out["kvm"] = "KVM_CAP_GUEST_MEMFD is not supported"
            else:
                out["gmem_flags"] = fcntl.ioctl(vm, rk.KVM_CHECK_EXTENSION, rk.KVM_CAP_GUEST_MEMFD_FLAGS)
        finally:
            os.close(vm)
    except OSError as e:
        out["kvm"] = f"KVM_CREATE_VM: {e.strerror}"
    finally:
        os.close(kvm)
    return out


def why_not_live(scn: sc.Scenario, support: dict) -> str | None:
    """Why ``scn`` cannot run on this kernel, or None."""
    arch = ARCH.get(platform.machine())
    if arch not in scn.setup["arch"]:
        return f"the scenario is for {'/'.join(scn.setup['arch'])}; this machine is {platform.machine()}"
    if scn.setup["switches"]:
        return f"break-it switches {scn.setup['switches']} exist only in the model"
    if scn.setup["large_folios"] or scn.setup["large_zap"]:
        return "large guest_memfd folios are not in this kernel's guest_memfd (order 0 only)"
    if scn.setup["batch_flush"] or scn.setup["write"] != "refuse":
        return "batched flushes and write() population are unmerged series, not in this kernel"
    for i, (_, step) in enumerate(scn.steps, 1):
        op = step["op"]
        if op not in LIVE_OPS:
            return f"step {i} ({op}) has no live counterpart here (live ops: {', '.join(LIVE_OPS)})"
        if "interrupt_at" in step:
            return f"step {i} interrupts another CPU at a point inside the kernel: model only"
        if op == "secret_fault" and step.get("race"):
            return f"step {i} stages a fault race: model only"
        if op.startswith("secret") and support["secretmem"]:
            return f"step {i} needs memfd_secret: {support['secretmem']}"
        if op == "gmem_create":
            if support["kvm"]:
                return f"step {i} needs KVM guest_memfd: {support['kvm']}"
            if step.get("vm_type", "default") != "default":
                return f"step {i}: VM type {step['vm_type']!r} is not created live (default VMs only)"
            flags = step.get("flags", ["MMAP", "INIT_SHARED", "NO_DIRECT_MAP"])
            missing = [f for f in flags if not GMEM_FLAGS.get(f, 0) & support["gmem_flags"]]
            if missing:
                return (f"step {i}: guest_memfd flag(s) {', '.join(missing)} do not exist on this kernel "
                        f"(KVM_CAP_GUEST_MEMFD_FLAGS = {support['gmem_flags']:#x})")
    return None


def model_design(scn: sc.Scenario) -> str:
    return "secretmem" if "secretmem" in scn.setup["designs"] else scn.setup["designs"][0]


# -- the child that runs the steps ------------------------------------------------------------------------------
def _errname(e: int) -> str:
    """The errno's name as the model spells it (EOPNOTSUPP, not its alias ENOTSUP)."""
    try:
        return Errno(e).name
    except ValueError:
        return errno.errorcode.get(e, str(e))


class _Files:
    """The live files of one scenario run (inside the child)."""

    def __init__(self, scn: sc.Scenario):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)
        self.libc.mmap.restype = ctypes.c_void_p
        self.libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_long)
        self.libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        self.libc.read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
        self.libc.read.restype = ctypes.c_ssize_t
        for name in ("pread64", "pwrite64"):
            getattr(self.libc, name).argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64)
            getattr(self.libc, name).restype = ctypes.c_ssize_t
        self.libc.ftruncate.argtypes = (ctypes.c_int, ctypes.c_int64)
        self.fd, self.size, self.kind, self.map = {}, {}, {}, {}
        self.kvm = self.vm = None
        self.map_len = {}   # file -> mapping length: the size, or past it when a step faults beyond i_size
        for _, step in scn.steps:
            if step["op"] in ("user_fault", "secret_fault"):
                end = parse_size(step.get("offset", 0)) + PAGE_SIZE
                self.map_len[step["file"]] = max(self.map_len.get(step["file"], 0), end)

    def _vm(self) -> int:
        if self.vm is None:
            self.kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
            self.vm = fcntl.ioctl(self.kvm, rk.KVM_CREATE_VM, 0)
        return self.vm

    def secret_create(self, file, size):
        fd = rk.libc().syscall(rk.SYS_MEMFD_SECRET[platform.machine()], os.O_CLOEXEC)
        if fd < 0:
            return _errname(ctypes.get_errno())
        try:
            os.ftruncate(fd, size)
        except OSError as e:
            os.close(fd)
            return _errname(e.errno)
        self.fd[file], self.size[file], self.kind[file] = fd, size, "secretmem"
        return "0"

    def gmem_create(self, file, size, flags, vm_type):
        bits = sum(GMEM_FLAGS[f] for f in flags)
        try:
            fd = fcntl.ioctl(self._vm(), rk.KVM_CREATE_GUEST_MEMFD,
                             bytearray(rk.GMEM_STRUCT.pack(size & (1 << 64) - 1, bits, *[0] * 6)))
        except OSError as e:
            return _errname(e.errno)
        self.fd[file], self.size[file], self.kind[file] = fd, size, "guest_memfd"
        return "0"

    def mmap(self, file):
        if file in self.map:
            return "0"
        length = max(self.size[file], self.map_len.get(file, 0), PAGE_SIZE)
        length += -length % PAGE_SIZE
        # libc mmap(), not Python's mmap module: that one refuses a length past the file size, and a mapping
        # past i_size is how a fault beyond the end is reached (the kernel answers SIGBUS).
        addr = self.libc.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, self.fd[file], 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return _errname(ctypes.get_errno())
        self.map[file] = (addr, length)
        return "0"

    def _touch(self, file, offset) -> str:
        got = self.mmap(file)
        if got != "0":
            return got
        addr, _ = self.map[file]
        pid = os.fork()
        if pid == 0:  # the grandchild: one store; a SIGBUS kills only it
            faulthandler.disable()  # (pytest enables it: the expected SIGBUS is not a crash to dump)
            try:
                ctypes.memset(addr + offset, 1, 1)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return signal.Signals(os.WTERMSIG(status)).name
        return "0" if os.WEXITSTATUS(status) == 0 else f"exit {os.WEXITSTATUS(status)}"

    def user_fault(self, file, offset):
        return self._touch(file, offset)

    def secret_fault(self, file, offset, race=False):
        return self._touch(file, offset)

    def pfn(self, file, offset) -> int | None:
        """The PFN now behind ``offset`` (read through our own mapping, which finds the page in the page cache
        and changes no direct-map entry); None without CAP_SYS_ADMIN."""
        m = self.map.get(file)
        if m is None or offset >= self.size[file]:
            return None
        ctypes.string_at(m[0] + offset, 1)  # map it here too (a read: the page is in the page cache)
        try:
            pfns = rk.pagemap_pfns(m[0] + offset - offset % PAGE_SIZE, 1)
        except (rk.Unavailable, OSError):
            return None
        return pfns[0] or None

    def _fallocate(self, file, mode, offset, length):
        if self.libc.fallocate(self.fd[file], mode, offset, length) != 0:
            return _errname(ctypes.get_errno())
        return "0"

    def fallocate(self, file, offset, len, keep_size=True):
        return self._fallocate(file, FALLOC_FL_KEEP_SIZE if keep_size else 0, offset, len)

    def punch_hole(self, file, offset, len):
        return self._fallocate(file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len)

    def _io(self, call, file, length, *offset) -> str:
        buf = ctypes.create_string_buffer(length)
        ctypes.set_errno(0)
        got = call(self.fd[file], buf, length, *offset)
        return str(got) if got >= 0 else _errname(ctypes.get_errno())

    def read(self, file, len):
        return self._io(self.libc.read, file, len)

    def pread(self, file, offset, len):
        return self._io(self.libc.pread64, file, len, offset)

    def pwrite(self, file, offset, len):
        return self._io(self.libc.pwrite64, file, len, offset)

    def ftruncate(self, file, size):
        if self.libc.ftruncate(self.fd[file], size) != 0:
            return _errname(ctypes.get_errno())
        self.size[file] = size
        return "0"

    def close(self, file):
        m = self.map.pop(file, None)
        if m is not None:
            self.libc.munmap(*m)
        os.close(self.fd.pop(file))
        return "0"

    def cleanup(self):
        for m in self.map.values():
            self.libc.munmap(*m)
        for fd in [*self.fd.values(), self.vm, self.kvm]:
            if fd is not None:
                os.close(fd)


def _child(scn: sc.Scenario, out) -> None:
    files = _Files(scn)
    try:
        with rk.probe_lock():
            for i, (_, step) in enumerate(scn.steps, 1):
                args = sc.validate_args(step["op"], {k: v for k, v in step.items() if k != "op"})
                before = rk.read_counters()
                try:
                    result = getattr(files, step["op"])(**args)
                except OSError as e:
                    result = _errname(e.errno)
                after = rk.read_counters()
                pfn = None
                if step["op"] == "secret_fault" and result == "0":
                    pfn = files.pfn(args["file"], args["offset"])
                out.write(json.dumps({"i": i, "result": result, "delta": rk.delta(after, before), "pfn": pfn}) + "\n")
                out.flush()
    except rk.Unavailable as e:
        out.write(json.dumps({"error": str(e)}) + "\n")
    finally:
        files.cleanup()


def run_kernel(scn: sc.Scenario) -> tuple[list, str | None]:
    """Run the steps for real in a child process; returns per-step records and an error (or None)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        out = os.fdopen(w, "w")
        try:
            _child(scn, out)
        except BaseException as e:  # the child must never return into the parent's code
            code = 1
            try:
                out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
            except BaseException:
                pass
        finally:
            try:
                out.close()
            except BaseException:
                pass
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as inp:
        records = [json.loads(line) for line in inp if line.strip()]
    _, status = os.waitpid(pid, 0)
    error = next((rec["error"] for rec in records if "error" in rec), None)
    if os.WIFSIGNALED(status):
        error = f"the child died of {signal.Signals(os.WTERMSIG(status)).name}"
    elif os.WEXITSTATUS(status) and error is None:
        error = f"the child exited with status {os.WEXITSTATUS(status)}"
    return [rec for rec in records if "i" in rec], error


# -- judging the direct-map deltas --------------------------------------------------------------------------------
_STATE = {(0, 0): "4K", (1, 0): "2M", (1, 1): "1G"}


def _judge(step, model_delta: dict, kernel_delta: dict, pfn, know: cc.Knowledge | None) -> str:
    mm = (model_delta.get(SPLITS[0], 0), model_delta.get(SPLITS[1], 0))
    if not kernel_delta:
        return "not judged: no direct-map counters in /proc"
    kk = (kernel_delta.get(SPLITS[0], 0), kernel_delta.get(SPLITS[1], 0))
    dm_model = tuple(model_delta.get(n, 0) for n in DIRECT_MAP)
    dm_kernel = tuple(kernel_delta.get(n, 0) for n in DIRECT_MAP)
    if step["op"] != "secret_fault" or pfn is None and kernel_delta.get(SPLITS[0], 0) == 0 and mm == (0, 0):
        if mm == (0, 0) and dm_model == (0, 0, 0):
            return "equal" if kk == (0, 0) and dm_kernel == (0, 0, 0) else "differ"
        return "not judged: the model changed the direct map at a step the kernel runs without a known state"
    if pfn is None or know is None:
        return "not judged: no PFN (needs root for /proc/self/pagemap)"
    expected, why = know.expect(pfn, kk)
    know.learn(pfn, kk)
    if expected is None:
        return "not judged: kernel region of unknown state"
    if _STATE.get(mm) != _STATE.get(expected):
        return f"not judged: kernel region known {_STATE[expected]}-mapped ({why}), the model's was not"
    return "equal" if kk == mm == expected and dm_kernel == dm_model else "differ"


def run_live(path: str, support: dict | None = None, ledger: cc.Ledger | None = None) -> LiveRun:
    """Run one scenario file live (or say why not) beside the model."""
    scn = sc.load(path)
    out = LiveRun(scn.name, path)
    support = machine_support() if support is None else support
    out.skipped = why_not_live(scn, support)
    if out.skipped:
        return out
    arch = ARCH[platform.machine()]
    out.design = model_design(scn)
    model = sc.run(scn, designs=[out.design], arches=[arch])[0]
    records, out.error = run_kernel(scn)
    ledger = cc.Ledger.load() if ledger is None else ledger
    know = cc.Knowledge(ledger.as_trace()) if ledger.boot else None
    for (_, step), mstep in zip(scn.steps, model.system.steps, strict=True):
        rec = next((r for r in records if r["i"] == mstep.index), None)
        if rec is None:
            break
        args = {k: v for k, v in mstep.args.items() if k not in ("interrupt_at", "interrupt_cpu")}
        ls = LiveStep(mstep.index, mstep.op, args, mstep.result, rec["result"], dict(mstep.counters), rec["delta"])
        ls.judged = _judge(step, ls.model_delta, ls.kernel_delta, rec.get("pfn"), know)
        out.steps.append(ls)
    if know is not None and ledger.path is not None:
        learnt = know.ledger()
        ledger.split_2m |= set(learnt["split_2m"])
        ledger.split_1g |= set(learnt["split_1g"])
        ledger.save()
    return out


def run_files(paths, as_json: bool = False, quiet: bool = False, printer=print) -> int:
    """``nbmodel run --live``: 0 when every live-run scenario's results and judged deltas are equal, 1 when one
    differs, 2 when none could run here (each skip printed with its reason)."""
    support = machine_support()
    ledger = cc.Ledger.load()
    runs = []
    for path in sc.find_files(paths):
        try:
            run = run_live(path, support, ledger)
        except sc.ScenarioError as e:
            run = LiveRun(os.path.basename(path), path, skipped=f"bad scenario file: {e}")
        runs.append(run)
        if as_json:
            printer(json.dumps(run.as_dict()))
        elif not (quiet and run.skipped):
            printer(run.report())
    live = [r for r in runs if not r.skipped]
    equal = sum(r.ok for r in live)
    if not as_json:
        printer(f"== live on {platform.release()} {platform.machine()} ({rk.cpu_model()}), "
                f"{time.strftime('%Y-%m-%d', time.gmtime())}: {len(runs)} scenarios, {len(live)} run live, "
                f"{equal} equal, {len(live) - equal} differ, {len(runs) - len(live)} skipped")
    if not live:
        return 2
    return 0 if equal == len(live) else 1


#: The live run recorded for the book (``nbmodel run --live scenarios/ --json``, kept with its machine and date).
RECORDED = Path(__file__).resolve().parents[1] / "benchmarks" / "live-run-6.18.json"


def show(scenario: str, live: bool | None = None, recorded=RECORDED) -> str:
    """One scenario's live run beside the model, as text. By default the **recorded** run (with the machine and
    date it was recorded on), so building the book never probes the kernel; ``live=True``, or ``None`` with the
    environment variable ``NBMODEL_LIVE=1``, runs it on this kernel now instead."""
    if rk.live_opt_in(live):
        path = Path(recorded).resolve().parents[1] / "scenarios" / f"{scenario}.toml"
        return run_live(str(path)).report() + "\n(run now on this kernel: NBMODEL_LIVE=1)"
    head, runs = load_recorded(recorded)
    run = next((r for r in runs if r.scenario == scenario), None)
    if run is None:
        names = ", ".join(r.scenario for r in runs)
        raise ValueError(f"{scenario!r} is not in {Path(recorded).name}; recorded: {names}")
    return (f"recorded {head['recorded']} on Linux {head['kernel']} {head['machine']} ({head['cpu_model']}) by "
            f"`{head['command']}`; {rk.live_hint('run it on this kernel')}\n" + run.report(head["kernel"]))


def load_recorded(path) -> tuple[dict, list]:
    """A recorded ``nbmodel run --live --json`` result file (see ``benchmarks/live-run-*.json``): its header
    (kernel, machine, CPU model, date) and its runs as :class:`LiveRun` objects, to show without probing."""
    with open(path) as f:
        doc = json.load(f)
    runs = []
    for d in doc["runs"]:
        steps = [LiveStep(**s) for s in d["steps"]]
        runs.append(LiveRun(d["scenario"], d["path"], d["design"], d["skipped"], steps, d["error"]))
    return {k: v for k, v in doc.items() if k != "runs"}, runs


__all__ = ["show", "load_recorded", "LiveRun", "LiveStep", "run_live", "run_files", "why_not_live", "machine_support",
           "LIVE_OPS"]
