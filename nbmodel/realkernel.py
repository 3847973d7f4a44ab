"""Probes of the running kernel: ``memfd_secret(2)``, ``memfd_create(2)`` and KVM guest_memfd, each mmap'd and
touched page by page, with ``/proc/vmstat`` ``direct_map_level{2,3}_splits`` and ``/proc/meminfo``
``DirectMap4k/2M/1G`` read around the population and after the file is freed.

What each probe exercises in the kernel:

``memfd``        ``shmem_fault()``: allocate, zero, add to the page cache; the direct map is not touched.
``guest_memfd``  ``kvm_gmem_fault_user_mapping()`` (``GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED``):
                 the same work in ``virt/kvm/guest_memfd.c``; the direct map is not touched (6.18 has no
                 NO_DIRECT_MAP flag).
``secretmem``    ``secretmem_fault()`` (``mm/secretmem.c``): the same plus ``set_direct_map_invalid_noflush()``
                 (a CPA split of any large leaf, with ``flush_tlb_all()``) and ``flush_tlb_kernel_range()`` per
                 page; ``secretmem_free_folio()`` restores each page at close.

So the per-page cost ratio secretmem / guest_memfd is what per-page direct-map removal costs on this machine.
Every probe skips with its reason where the kernel, the permissions or the architecture do not allow it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import mmap
import os
import platform
import stat
import statistics
import struct
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field

#: The memfd_secret probe's kind: a kind of file, not the design of the same name.
SECRETMEM_PROBE = "secretmem"

try:
    import resource
except ImportError:  # Pyodide (the book's live chapters) has no resource module
    resource = None

PAGE = mmap.PAGESIZE
SYS_MEMFD_SECRET = {"x86_64": 447, "aarch64": 447, "riscv64": 447}  # __NR_memfd_secret (unistd.h)
KVMIO = 0xAE
KVM_CREATE_VM = KVMIO << 8 | 0x01                      # _IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = KVMIO << 8 | 0x03                # _IO(KVMIO, 0x03)
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_GUEST_MEMFD_FLAGS = 244                        # returns the supported GUEST_MEMFD_FLAG_* bits
GMEM_STRUCT = struct.Struct("<QQ6Q")                   # struct kvm_create_guest_memfd {u64 size, flags, reserved[6]}
KVM_CREATE_GUEST_MEMFD = 3 << 30 | GMEM_STRUCT.size << 16 | KVMIO << 8 | 0xD4  # _IOWR(KVMIO, 0xd4, ...)
GUEST_MEMFD_FLAG_MMAP, GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 0, 1 << 1
KINDS = ("memfd", "guest_memfd", "secretmem")
COUNTER_NAMES = ("direct_map_level2_splits", "direct_map_level3_splits", "direct_map_level2_collapses",
                 "direct_map_level3_collapses", "DirectMap4k", "DirectMap2M", "DirectMap1G")
LOCK_NAME = "nbmodel-probe.lock"  # serializes our own probes, so their counter deltas do not mix


class Unavailable(Exception):
    """This probe cannot run here; ``str()`` says why."""


#: Why nothing here probes a kernel in the book's live chapters.
NO_KERNEL = "in the browser (Pyodide, WebAssembly) there is no Linux kernel to probe"


def in_browser() -> bool:
    """True inside Pyodide (the book's live chapters run there): no /proc, no memfd_secret, no /dev/kvm."""
    return sys.platform == "emscripten"


def live_hint(what: str) -> str:
    """How to get live figures instead of recorded ones: NBMODEL_LIVE=1, or, in the browser, a Linux machine."""
    if in_browser():
        return f"{NO_KERNEL}; to {what}, run this notebook in JupyterLab on Linux with NBMODEL_LIVE=1"
    return f"set NBMODEL_LIVE=1 to {what}"


# -- the machine and the lock ------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU model as ``/proc/cpuinfo`` names it: ``model name`` (x86), else ``Model name``/``Hardware`` or
    arm64's ``CPU implementer``/``CPU part`` pair, else ``platform.processor()``, else the architecture."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
    except OSError:
        pass
    for key in ("model name", "Model name", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    if "CPU part" in fields:
        return f"CPU implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    return platform.processor() or platform.machine() or "unknown CPU"


def lock_dir() -> str:
    """A directory only this user can write: ``$XDG_RUNTIME_DIR`` when it is an absolute directory we own,
    else ``/tmp/nbmodel-<uid>`` (created 0700; refused if it is a symlink or owned by someone else)."""
    uid = os.getuid()
    run = os.environ.get("XDG_RUNTIME_DIR")
    if run and os.path.isabs(run):
        try:
            st = os.lstat(run)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
                return run
        except OSError:
            pass
    path = f"/tmp/nbmodel-{uid}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        raise Unavailable(f"lock directory {path} is not a private directory owned by uid {uid}; remove it")
    return path


@contextlib.contextmanager
def probe_lock():
    """Hold the per-user probe lock (``flock``) while probing. Opened ``O_NOFOLLOW | O_CREAT`` without
    truncation; any failure becomes :class:`Unavailable` with the path and the reason, never a traceback."""
    try:
        path = os.path.join(lock_dir(), LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise Unavailable(f"probe lock {getattr(e, 'filename', None) or LOCK_NAME}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)


def memlock_note(kind: str, size: int, err: int) -> str:
    """What to say when mmap() or mlock() fails with EAGAIN/ENOMEM: name RLIMIT_MEMLOCK when the limit is why
    (memfd_secret mappings are charged as locked memory: ``secretmem_mmap()`` -> ``mlock_future_ok()``)."""
    text = os.strerror(err)
    if resource is None:
        return text
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if err in (errno.EAGAIN, errno.ENOMEM) and kind == SECRETMEM_PROBE and soft != resource.RLIM_INFINITY:
        return (f"{text}: RLIMIT_MEMLOCK is {soft} bytes (ulimit -l {soft // 1024}) and memfd_secret pages count "
                f"as locked memory; {size} bytes were asked for: raise it (ulimit -l) or probe a smaller --size")
    return text


# -- reading /proc -----------------------------------------------------------------------------------------
def _read_keyed(path: str, sep: str | None, names) -> dict:
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.replace(":", " ").split(sep)
            if parts and parts[0] in names:
                out[parts[0]] = int(parts[1])
    return out


def read_counters() -> dict | None:
    """The direct-map counters (vmstat events and meminfo kB), read until two vmstat reads agree so that a
    split landing between the two files cannot make them inconsistent. None if the kernel has none of them."""
    for _ in range(5):
        v1 = _read_keyed("/proc/vmstat", None, COUNTER_NAMES)
        m = _read_keyed("/proc/meminfo", None, COUNTER_NAMES)
        v2 = _read_keyed("/proc/vmstat", None, COUNTER_NAMES)
        if v1 == v2:
            break
    if not v2 and not m:
        return None
    return {n: {**v2, **m}.get(n) for n in COUNTER_NAMES}


def read_splits() -> tuple[int, int]:
    """``(level2, level3)`` split events only: the cheap read used between page faults."""
    got = _read_keyed("/proc/vmstat", None, COUNTER_NAMES[:2])
    return got.get("direct_map_level2_splits", 0), got.get("direct_map_level3_splits", 0)


def delta(after: dict | None, before: dict | None) -> dict:
    if not after or not before:
        return {}
    return {n: after[n] - before[n] for n in COUNTER_NAMES if after.get(n) is not None and before.get(n) is not None}


def ram_ranges() -> list[tuple[int, int]] | None:
    """Top-level ``System RAM`` ranges of ``/proc/iomem`` as PFN ranges (end exclusive); None when the
    addresses are hidden (they read as zero without CAP_SYS_ADMIN)."""
    ranges = []
    try:
        with open("/proc/iomem") as f:
            for line in f:
                if line.startswith(" ") or "System RAM" not in line:
                    continue
                lo, hi = (int(x, 16) for x in line.split(":")[0].strip().split("-"))
                start, end = (lo + PAGE - 1) // PAGE, (hi + 1) // PAGE
                if end > start:
                    ranges.append((start, end))
    except OSError:
        return None
    if not ranges or all(s == 0 for s, _ in ranges):
        return None
    return ranges


def pagemap_pfns(addr: int, npages: int) -> list[int]:
    """PFNs of ``npages`` pages from ``addr`` out of ``/proc/self/pagemap`` (bits 0-54 when bit 63, present,
    is set); raises Unavailable when the PFNs read as zero (no CAP_SYS_ADMIN)."""
    with open("/proc/self/pagemap", "rb") as f:
        f.seek((addr // PAGE) * 8)
        raw = array("Q", f.read(npages * 8))
    pfns = [e & ((1 << 55) - 1) if e >> 63 else 0 for e in raw]
    if pfns and not any(pfns):
        raise Unavailable("/proc/self/pagemap shows PFN 0 for present pages: needs root (CAP_SYS_ADMIN)")
    return pfns


# -- the three files -------------------------------------------------------------------------------------------
def libc():
    """The C library, for the syscalls Python does not wrap (``memfd_secret(2)``)."""
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib


def open_secretmem(size: int) -> tuple[int, list]:
    """``memfd_secret(O_CLOEXEC)`` + ``ftruncate()``. ENOSYS: secretmem disabled or ``!can_set_direct_map()``."""
    nr = SYS_MEMFD_SECRET.get(platform.machine())
    if nr is None:
        raise Unavailable(f"no memfd_secret syscall number known for {platform.machine()}")
    fd = libc().syscall(nr, os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        why = {38: "ENOSYS: secretmem is disabled (secretmem.enable=0) or can_set_direct_map() is false",
               1: "EPERM", 24: "EMFILE"}.get(err, os.strerror(err))
        raise Unavailable(f"memfd_secret: {why}")
    os.ftruncate(fd, size)
    return fd, []


def open_memfd(size: int) -> tuple[int, list]:
    """``memfd_create()`` + ``ftruncate()``: shmem, the baseline with no direct-map work."""
    fd = os.memfd_create("nbmodel-probe", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd, []


def open_guest_memfd(size: int) -> tuple[int, list]:
    """``KVM_CREATE_VM`` (default type) then ``KVM_CREATE_GUEST_MEMFD`` with ``MMAP | INIT_SHARED``. Returns the
    guest_memfd and the other fds to close (the VM, /dev/kvm)."""
    try:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise Unavailable(f"/dev/kvm: {e.strerror}") from None
    others = [kvm]
    try:
        vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
        others.insert(0, vm)
        want = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED
        if not fcntl.ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD):
            raise Unavailable("KVM_CAP_GUEST_MEMFD is not supported")
        have = fcntl.ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS)
        if have & want != want:
            raise Unavailable(f"guest_memfd flags MMAP|INIT_SHARED not supported (KVM_CAP_GUEST_MEMFD_FLAGS={have})")
        fd = fcntl.ioctl(vm, KVM_CREATE_GUEST_MEMFD, bytearray(GMEM_STRUCT.pack(size, want, *[0] * 6)))
    except OSError as e:
        for f in others:
            os.close(f)
        raise Unavailable(f"KVM guest_memfd: {e.strerror}") from None
    except Unavailable:
        for f in others:
            os.close(f)
        raise
    return fd, others


OPENERS = {"memfd": open_memfd, "guest_memfd": open_guest_memfd, "secretmem": open_secretmem}


@contextlib.contextmanager
def mapped(kind: str, size: int):
    """Open a file of ``kind`` and ``size`` bytes and map it shared read-write; yields the mmap object."""
    fd, others = OPENERS[kind](size)
    try:
        try:
            m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            raise Unavailable(f"{kind}: mmap: {memlock_note(kind, size, e.errno)}") from None
        try:
            yield m
        finally:
            m.close()
    finally:
        os.close(fd)
        for f in others:
            os.close(f)


def map_address(m: mmap.mmap) -> int:
    buf = ctypes.c_char.from_buffer(m)
    try:
        return ctypes.addressof(buf)
    finally:
        del buf


# -- one probe ----------------------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    """One population of a ``kind`` file: timings (ns, per page), counter deltas, and optionally the PFNs.

    ``ns_first`` is the mean time of a first touch (the page fault populates the page), ``ns_retouch`` the mean
    time of touching the populated pages again with the same loop: the Python and timer overhead. ``ns_net`` =
    ``ns_first - ns_retouch`` is the kernel's populate cost per page as seen from here; ``ns_net_median`` is the
    same from medians, robust against the other tasks sharing these CPUs (the figure ratios are taken from).
    """

    kind: str
    size: int
    pages: int = 0
    skipped: str | None = None
    ns_first: float = 0.0
    ns_median: float = 0.0
    ns_p99: float = 0.0
    ns_retouch: float = 0.0
    ns_net: float = 0.0
    ns_net_median: float = 0.0
    populate: dict = field(default_factory=dict)   # counter deltas over the population
    freed: dict = field(default_factory=dict)      # counter deltas from the end of population to after close
    before: dict = field(default_factory=dict)     # counters before
    pfns: list = field(default_factory=list)
    split_at: list = field(default_factory=list)   # per page: (level2, level3) splits its fault caused
    split_fault_ns: float | None = None            # attribute mode: median fault that split a 2M leaf
    plain_fault_ns: float | None = None            # attribute mode: median fault that split nothing

    def as_dict(self, pfns: bool = False) -> dict:
        d = asdict(self)
        if not pfns:
            d.pop("pfns")
            d.pop("split_at")
        return d


def _touch_timed(m: mmap.mmap, npages: int) -> array:
    pc = time.perf_counter_ns
    times = array("q", bytes(8 * npages))
    for i in range(npages):
        t0 = pc()
        m[i * PAGE] = 1
        times[i] = pc() - t0
    return times


def _touch_attributed(m: mmap.mmap, npages: int) -> tuple[list, array]:
    """Touch each page (timed) and read the split counters after each fault (untimed): which fault split what."""
    out, pc = [], time.perf_counter_ns
    times = array("q", bytes(8 * npages))
    last = read_splits()
    for i in range(npages):
        t0 = pc()
        m[i * PAGE] = 1
        times[i] = pc() - t0
        now = read_splits()
        out.append((now[0] - last[0], now[1] - last[1]))
        last = now
    return out, times


def probe(kind: str, size: int = 16 << 20, pfns: bool = False, attribute: bool = False) -> ProbeResult:
    """Populate a ``kind`` file (see :data:`KINDS`) of ``size`` bytes by touching each page of its mapping; read
    counters around it and after close. ``pfns`` reads ``/proc/self/pagemap``; ``attribute`` reads the split
    counters after every page fault (slower; no timings then). Never raises for an unavailable probe: the
    result's ``skipped`` says why."""
    if kind not in KINDS:
        raise ValueError(f"unknown probe {kind!r}; choose from {KINDS}")
    npages = size // PAGE
    res = ProbeResult(kind, npages * PAGE, npages)
    if in_browser():
        res.skipped = NO_KERNEL
        return res
    try:
        with probe_lock():
            _run(res, pfns, attribute)
    except Unavailable as e:
        res.skipped = str(e)
    return res


def _run(res: ProbeResult, want_pfns: bool, attribute: bool) -> None:
    before = read_counters()
    with mapped(res.kind, res.size) as m:
        res.before = before or {}
        start = read_counters()
        if attribute:
            res.split_at, times = _touch_attributed(m, res.pages)
            split = [t for t, (a, _) in zip(times, res.split_at, strict=True) if a]
            plain = [t for t, (a, b) in zip(times, res.split_at, strict=True) if not a and not b]
            res.split_fault_ns = statistics.median(split) if split else None
            res.plain_fault_ns = statistics.median(plain) if plain else None
        else:
            times = _touch_timed(m, res.pages)
        populated = read_counters()
        if not attribute:
            again = _touch_timed(m, res.pages)
            res.ns_first = sum(times) / res.pages
            res.ns_median = statistics.median(times)
            res.ns_p99 = sorted(times)[int(0.99 * (res.pages - 1))]
            res.ns_retouch = sum(again) / res.pages
            res.ns_net = max(0.0, res.ns_first - res.ns_retouch)
            res.ns_net_median = max(0.0, res.ns_median - statistics.median(again))
        res.populate = delta(populated, start)
        if want_pfns:
            res.pfns = pagemap_pfns(map_address(m), res.pages)
    res.freed = delta(read_counters(), populated)


def probe_all(size: int = 16 << 20, kinds=KINDS) -> list[ProbeResult]:
    return [probe(k, size) for k in kinds]


# -- recorded probes, for the book ------------------------------------------------------------------------------
#: Where the book's recorded probes are kept (``python benchmarks/record_book_probes.py`` writes it).
RECORDED_PROBES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                               "probes-6.18.json")
RECORD_VERSION = 1


def live_opt_in(live: bool | None = None) -> bool:
    """The one switch between recorded and live kernel probes in the book: ``live`` if given, else whether the
    environment variable ``NBMODEL_LIVE`` is ``1``. Everything the book shows from the kernel
    (:func:`probes_for_book`, :func:`nbmodel.crosscheck.crosscheck_for_book`, :func:`nbmodel.live.show`) asks it.
    Always False in the browser (:func:`in_browser`): the recording is shown, and its label says why."""
    if live is None:
        return os.environ.get("NBMODEL_LIVE") == "1" and not in_browser()
    if not isinstance(live, bool):
        raise TypeError(f"live must be True, False or None, not {live!r}")
    return live and not in_browser()


def machine_header() -> dict:
    """The running machine as a recording names it: kernel release, architecture, CPU count and model, date."""
    return {"kernel": platform.release(), "machine": platform.machine(), "cpus": os.cpu_count() or 1,
            "cpu_model": cpu_model(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def provenance(head: dict, recorded: bool) -> str:
    """One line saying where figures come from: recorded (machine, date, and how to probe live) or live now."""
    where = (f"Linux {head['kernel']} {head['machine']}, {head['cpus']} CPUs, {head['cpu_model']}")
    if recorded:
        return f"recorded on {where}, {head['date']}; {live_hint('probe this kernel instead')}"
    return f"measured live now on {where} (NBMODEL_LIVE=1); varies run to run"


@dataclass
class ProbeRecord:
    """Probe results with the machine, date and size they were taken on, and the zeroing bandwidth measured
    beside them. Iterates over its :class:`ProbeResult` objects, so it goes wherever a list of them does
    (:func:`secretmem_ratio`, ``costmodel.CostModel.from_probe``, ``bench.speed(probes=...)``)."""

    results: list
    size: int
    head: dict
    zero_bytes_per_ns: float | None = None
    recorded: bool = False

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def cpus(self) -> int:
        return self.head["cpus"]

    @property
    def label(self) -> str:
        return provenance(self.head, self.recorded)

    @property
    def where(self) -> str:
        """Where the figures were measured, to follow "measured": "here", or "on <CPU> (Linux <release>, <date>)"."""
        h = self.head
        return f"on {h['cpu_model']} (Linux {h['kernel']}, {h['date']})" if self.recorded else "here"

    @property
    def short(self) -> str:
        """For a plot legend: "measured here" or "recorded on <CPU model>"."""
        return f"recorded on {self.head['cpu_model']}" if self.recorded else "measured here"

    def as_dict(self) -> dict:
        return {"version": RECORD_VERSION, **self.head, "size": self.size, "zero_bytes_per_ns": self.zero_bytes_per_ns,
                "probes": [r.as_dict(pfns=True) for r in self.results]}

    @classmethod
    def from_dict(cls, doc: dict, recorded: bool = True) -> ProbeRecord:
        if doc.get("version") != RECORD_VERSION:
            raise ValueError(f"probe record version {doc.get('version')!r}; this nbmodel reads {RECORD_VERSION}")
        results = []
        for d in doc["probes"]:
            d = dict(d, split_at=[tuple(x) for x in d.get("split_at", [])])
            results.append(ProbeResult(**d))
        head = {k: doc[k] for k in ("kernel", "machine", "cpus", "cpu_model", "date")}
        return cls(results, doc["size"], head, doc["zero_bytes_per_ns"], recorded)


def record_probes(size: int = 16 << 20, kinds=KINDS) -> ProbeRecord:
    """Probe this kernel now (:func:`probe_all`) and measure the zeroing bandwidth, with the machine and date."""
    from .costmodel import measure_zero_bandwidth
    results = probe_all(size, kinds)
    return ProbeRecord(results, size, machine_header(), measure_zero_bandwidth(), recorded=False)


def save_probes(record: ProbeRecord, path) -> None:
    with open(path, "w") as f:
        json.dump(record.as_dict(), f, indent=1)
        f.write("\n")


def load_probes(path=RECORDED_PROBES) -> ProbeRecord:
    """A probe record written by :func:`save_probes`, marked as recorded (it probes nothing)."""
    with open(path) as f:
        return ProbeRecord.from_dict(json.load(f))


def probes_for_book(size: int = 16 << 20, live: bool | None = None, recorded=RECORDED_PROBES) -> ProbeRecord:
    """What chapter 7 shows: the **recorded** probes (see :data:`RECORDED_PROBES`; ``label`` names the machine
    and date), so building the book never opens /dev/kvm nor calls memfd_secret; probed live on this kernel
    (``size`` bytes each) only when the reader opts in (:func:`live_opt_in`: ``live=True`` or NBMODEL_LIVE=1)."""
    if live_opt_in(live):
        return record_probes(size)
    return load_probes(recorded)


def secretmem_ratio(results) -> float | None:
    """secretmem / guest_memfd median net per-page populate cost (memfd stands in when guest_memfd is absent:
    :func:`ratio_base` says which one was divided by)."""
    by = {r.kind: r for r in results if not r.skipped and r.ns_net_median > 0}
    base = by.get(ratio_base(results))
    return by["secretmem"].ns_net_median / base.ns_net_median if "secretmem" in by and base else None


def ratio_base(results) -> str | None:
    """The kind :func:`secretmem_ratio` divides by: ``guest_memfd``, else ``memfd``, else None."""
    ok = {r.kind for r in results if not r.skipped and r.ns_net_median > 0}
    return next((k for k in ("guest_memfd", "memfd") if k in ok), None)


def ratio_line(results) -> str | None:
    """The ratio as printed, naming what was divided, and why guest_memfd was not when it was skipped."""
    ratio, base = secretmem_ratio(results), ratio_base(results)
    if ratio is None:
        return None
    line = f"secretmem / {base} median net populate cost per page: {ratio:.2f}x"
    if base != "guest_memfd":
        why = next((r.skipped for r in results if r.kind == "guest_memfd" and r.skipped), "not probed")
        line += f" (divided by {base}: guest_memfd {why})"
    return line


# -- command line -------------------------------------------------------------------------------------------
EPILOG = """examples:
  nbmodel probe                     memfd, guest_memfd and memfd_secret, 16 MiB each
  nbmodel probe --size 64M --json   one JSON document
  nbmodel probe --crosscheck        memfd_secret PFNs replayed through the x86 model (see nbmodel.crosscheck)

Each probe maps its file, touches every page once (timed), again (the loop's own overhead), then closes it.
Reported per page: mean first touch, median, p99, re-touch, net = first - re-touch; counter deltas over the
population and after close. The secretmem/guest_memfd ratio is the price of per-page direct-map removal here.
"""


def add_arguments(parser) -> None:
    from .units import parse_size
    parser.epilog = EPILOG
    parser.add_argument("--size", type=parse_size, default=16 << 20, help="bytes per probe (default 16M)")
    parser.add_argument("--kind", action="append", choices=KINDS, help="probe only this kind (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--crosscheck", action="store_true",
                        help="also replay memfd_secret PFNs through the x86 model and judge the kernel's counters")


def format_result(r: ProbeResult) -> str:
    if r.skipped:
        return f"{r.kind:<12} skipped: {r.skipped}"
    p = r.populate
    return (f"{r.kind:<12} {r.pages} pages: first touch mean {r.ns_first:.0f} ns/page, median {r.ns_median:.0f}, "
            f"p99 {r.ns_p99:.0f}; re-touch {r.ns_retouch:.0f}; net median {r.ns_net_median:.0f} ns/page; "
            f"splits L2 +{p.get('direct_map_level2_splits', 0)} L3 +{p.get('direct_map_level3_splits', 0)}, "
            f"DirectMap4k {p.get('DirectMap4k', 0):+d} kB; after close DirectMap4k "
            f"{r.freed.get('DirectMap4k', 0):+d} kB")


def run(args) -> int:
    results = [probe(k, args.size) for k in (args.kind or KINDS)]
    ratio = secretmem_ratio(results)
    cross = None
    if getattr(args, "crosscheck", False):
        from . import crosscheck
        cross = crosscheck.crosscheck(args.size)
    from .costmodel import compare_with_probe, format_comparison
    compared = compare_with_probe(results)
    if args.json:
        doc = {"kernel": platform.release(), "machine": platform.machine(), "cpus": os.cpu_count(),
               "cpu_model": cpu_model(), "probes": [r.as_dict() for r in results],
               "secretmem_over_guest_memfd": ratio if ratio_base(results) == "guest_memfd" else None,
               "secretmem_ratio": {"value": ratio, "divided_by": ratio_base(results)},
               "predicted_vs_measured": [{"kind": c.kind, "predicted_ns": c.predicted_ns,
                                          "measured_ns": c.measured_ns} for c in compared]}
        if cross is not None:
            doc["crosscheck"] = cross.as_dict()
        print(json.dumps(doc, indent=1))
        return 0
    print(f"kernel {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()} "
          "(measured here; varies run to run)")
    for r in results:
        print(format_result(r))
    if ratio is not None:
        print(ratio_line(results))
    if compared:
        print(format_comparison(compared))
    if cross is not None:
        print(cross.report())
    return 0


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="nbmodel probe", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
