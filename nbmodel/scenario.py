"""Litmus-style scenario files (``scenarios/*.toml``): load, validate, run, and check expectations.

A scenario is one small idea with its expected outcome inside the file, named by its shape
(``WRITE+WRITE``, ``FALLOC+PUNCH+REFAULT``)::

    name = "WRITE+WRITE"                      # required; by convention the file name without .toml
    purpose = "write() twice: ..."            # required, one line

    [setup]                                   # optional; every key has a default
    arch = "x86"                              # "x86" | "arm64" | a list of both (runs once per arch)
    mode = "4-level"                          # that arch's mode, or a table {x86 = "nogbpages", arm64 = "bbml2"}
    memory = "4G"                             # PC-like memory map of this size, from 4M to 256G
    cpus = 2                                  # from 1 to 64
    seed = 0                                  # from 0 to 2**64 - 1
    designs = ["per-folio", "filemap", "secretmem"]   # default: all three; runs once per design
    switches = []                             # break-it switches (nbmodel.designs.SWITCHES)
    write = "refuse"                          # filemap write(): "refuse" | "mermap"
    large_folios = false
    batch_flush = false
    fwb = true                                # arm64 ARM64_HAS_STAGE2_FWB
    tlbirange = true                          # arm64 FEAT_TLBIRANGE (default: the Kernel's, true); x86 ignores it
    unmapped_source = false                   # guest_memfd NO_DIRECT_MAP folios from an unmapped page pool
    populate = "kmap_local"                   # kvm_gmem_populate()'s copy: "kmap_local" | "mermap"
    snp_no_direct_map = false                 # what-if: allow NO_DIRECT_MAP on an SNP VM (mainline refuses)

    [[step]]                                  # one table per step, run in order, numbered from 1
    op = "gmem_create"                        # an op of nbmodel.system.OPS ...
    file = "g"                                # ... with its arguments exactly as System.step takes them,
    size = "2M"                               # plus optional interrupt_at / interrupt_cpu; sizes and
                                              # offsets are bytes or "64K"/"2M"/"4G", at most 2**63 - 1

    [[expect]]                                # any number; each checked on every run it applies to
    design = "per-folio"                      # optional: a design or a list (default: the file's designs)
    arch = "x86"                              # optional: an arch or a list (default: the file's arches)
    why = "..."                               # optional: the kernel reasoning, printed with the result
    # and exactly one of these selectors:
    step = 3                                  #   a step, with exactly one of: result = "EPERM" (a string,
    result = "EPERM"                          #   or an integer for a byte count), saw = "zero",
                                              #   interrupt = "stale", events = ["invalidate", "restore"]
                                              #   (str(event) prefixes that occur in this order), or
                                              #   delta = {tlb_full_flushes = 1} (what the step changed)
    # counter = "zaps"  with one of  equals = 1 | at_least = 1 | at_most = 1   (final value)
    # invariant = "a"   (key or name)  with one of  held = true | held = false | broken_at = 4

An expectation about an invariant that does not apply to a design (``d`` outside per-folio) is skipped there.
``nbmodel run --design/--arch`` may run a file under a design or arch it does not list; the expectations are
claims about the configurations the file names, so such a run shows its trace and checks nothing.
A bad file raises :class:`ScenarioError`, whose text is ``FILE:LINE: what is wrong``: also a file that is not
UTF-8, a TOML type where another belongs (``op = ["..."]``), arrays nested more than 100 deep, or an integer
of thousands of digits. Loading is linear in the file's size; locating a syntax error reported "at end of
document" (an unclosed array or string) takes O(log n) parses of the file's prefixes, O(n log n) in all.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .arm64 import MODES as ARM64_MODES
from .counters import COUNTERS
from .designs import DESIGNS, OPTIONS, SWITCHES
from .errors import ModelInputError
from .invariants import INVARIANTS
from .kernel import ARCHES
from .physmem import MemoryMap
from .system import INTERRUPT_POINTS, OPS, System, validate_args

X86_MODE_WORDS = ("4-level", "5-level", "nogbpages")
SETUP_DEFAULTS = {"arch": "x86", "mode": None, "memory": "4G", "cpus": 2, "seed": 0, "designs": list(DESIGNS),
                  "switches": [], "write": "refuse", "large_folios": False, "batch_flush": False, "fwb": True,
                  "large_zap": False, "tlbirange": None, "unmapped_source": False, "populate": "kmap_local",
                  "snp_no_direct_map": False}
STEP_SELECTORS = ("result", "saw", "interrupt", "events", "delta")
COUNTER_TESTS = ("equals", "at_least", "at_most")
EXPECT_KEYS = {"design", "arch", "why", "step", "counter", "invariant", "held", "broken_at", *STEP_SELECTORS,
               *COUNTER_TESTS}
_INV_BY_NAME = {inv.name: key for key, inv in INVARIANTS.items()}


class ScenarioError(Exception):
    """A bad scenario file: ``FILE:LINE: what is wrong``."""

    def __init__(self, path, line: int, msg: str):
        super().__init__(f"{path}:{line}: {msg}")
        self.path, self.line, self.msg = path, line, msg


# -- where things are in the text (tomllib gives no line numbers) --------------------------------------------
_HEADER = re.compile(r"""^\s*\[(\[)?\s*([A-Za-z0-9_."' -]+?)\s*\]\]?\s*(#.*)?$""")


class _Lines:
    """Line numbers of tables and keys, found by scanning the text once (lookups cost O(1) per table and
    O(lines of that table) per key, so loading a file is linear in its size)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.headers = []  # (line number, table name, is array table)
        self._tables: dict = {}  # (name, is array table) -> [line numbers]
        for n, line in enumerate(self.lines, 1):
            if "[" not in line:
                continue
            m = _HEADER.match(line)
            if m:
                name, arr = m.group(2).strip(), bool(m.group(1))
                self.headers.append((n, name, arr))
                self._tables.setdefault((name, arr), []).append(n)
        self._heads = frozenset(h for h, _, _ in self.headers)

    def table(self, name: str, i: int | None = None) -> int:
        """Line of ``[name]``, or of the ``i``-th (0-based) ``[[name]]``; 1 if absent."""
        found = self._tables.get((name, i is not None), ())
        if i is None:
            return found[0] if found else 1
        return found[i] if i < len(found) else (found[-1] if found else 1)

    def key(self, start: int, key: str) -> int:
        """Line of ``key = ...`` inside the table whose header is on line ``start`` (0: before any table)."""
        pat = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
        heads = self._heads
        for n in range(start + 1, len(self.lines) + 1):
            if n in heads:
                break
            if pat.match(self.lines[n - 1]):
                return n
        return max(start, 1)


def _syntax_line(text: str, err: tomllib.TOMLDecodeError) -> tuple[int, str]:
    msg = str(err)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if m:
        return int(m.group(1)), f"{msg[:m.start()].strip()} (column {m.group(2)})"
    # "At end of document" (an unclosed array, inline table or multi-line string): the line that opens it,
    # found in one pass over the text.
    return _unclosed_line(text), msg.replace(" (at end of document)", "")


def _unclosed_line(text: str) -> int:
    """The line of the outermost bracket or string still open at the end of ``text`` (one linear scan)."""
    opened: list[int] = []  # lines of the open [ and {
    last = 1
    for kind, line in _brackets(text):
        last = line
        if kind == "string":
            return line
        if kind == "open":
            opened.append(line)
        elif opened:
            opened.pop()
    return opened[0] if opened else max(len(text.splitlines()), 1) if text else last


# -- the parsed file ---------------------------------------------------------------------------------------
@dataclass
class Expectation:
    """One ``[[expect]]`` table, validated."""

    line: int
    kind: str                  # "step" | "counter" | "invariant"
    target: object             # step number, counter name, or invariant key
    test: str                  # result/saw/interrupt/events | equals/at_least/at_most | held/broken_at
    value: object
    designs: tuple = DESIGNS   # the designs it is about: its own ``design`` key, else the file's designs
    arches: tuple = ARCHES     # likewise ``arch``
    why: str = ""

    def applies(self, design: str, arch: str) -> bool:
        return design in self.designs and arch in self.arches

    def describe(self) -> str:
        if self.kind == "step":
            ops = {"events": "events include", "result": "result ==", "delta": "changed"}
            op = ops.get(self.test, f"{self.test} ==")
            return f"step {self.target} {op} {self.value!r}"
        if self.kind == "counter":
            return f"{self.target} {dict(equals='==', at_least='>=', at_most='<=')[self.test]} {self.value}"
        name = INVARIANTS[self.target].name
        if self.test == "broken_at":
            return f"invariant {self.target} ({name}) broken at step {self.value}"
        return f"invariant {self.target} ({name}) {'held' if self.value else 'broken'}"


@dataclass
class Scenario:
    path: str
    name: str
    purpose: str
    setup: dict
    steps: list            # [(line, {"op": ..., **args})]
    expects: list          # [Expectation]
    lines: _Lines = field(repr=False, default=None)

    def mode_for(self, arch: str):
        mode = self.setup["mode"]
        if isinstance(mode, dict):
            return mode.get(arch)
        return mode if arch in self.setup["arch"] else None


def load(path) -> Scenario:
    """Read and validate a scenario file; raises :class:`ScenarioError` (``FILE:LINE: ...``)."""
    path = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ScenarioError(path, 0, f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ScenarioError(path, line, f"not UTF-8 text: byte {raw[e.start]:#04x} at column {column} "
                            "(TOML files are UTF-8)") from None
    return loads(text, path)


#: Arrays and inline tables nested deeper than this are refused (no scenario needs more than 3 levels; the
#: TOML reader recurses once per level).
MAX_NESTING = 100
_DIGITS = re.compile(r"[0-9_]{4000,}")


def loads(text: str, path: str = "<scenario>") -> Scenario:
    if not isinstance(text, str):
        raise ScenarioError(path, 0, f"a scenario is text (str), not {type(text).__name__}")
    deep = _too_deep(text)
    if deep:
        raise ScenarioError(path, deep, f"arrays or inline tables nested more than {MAX_NESTING} deep")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line, msg = _syntax_line(text, e)
        raise ScenarioError(path, line, f"TOML syntax: {msg}") from None
    except (ValueError, RecursionError) as e:  # tomllib: an integer of more than 4300 digits; deep nesting
        m = _DIGITS.search(text)
        line = text.count("\n", 0, m.start()) + 1 if m else 1
        what = "a number with thousands of digits" if m else f"the file cannot be read ({type(e).__name__})"
        raise ScenarioError(path, line, f"TOML: {what}") from None
    lines = _Lines(text)

    def bad(line, msg):
        raise ScenarioError(path, line, msg)

    for key in data:
        if key not in ("name", "purpose", "setup", "step", "expect"):
            bad(_top_line(lines, key), f"unknown top-level key {key!r} (known: name, purpose, setup, step, expect)")
    for key in ("name", "purpose"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            bad(lines.key(0, key) if key in data else 1, f"{key!r} must be a non-empty string")
    if "\n" in data["purpose"].strip():
        bad(lines.key(0, "purpose"), "'purpose' must be one line")
    setup = _setup(data.get("setup", {}), lines, bad)
    steps = _steps(data.get("step"), setup, lines, bad)
    expects = _expects(data.get("expect"), setup, len(steps), lines, bad)
    return Scenario(path, data["name"], data["purpose"].strip(), setup, steps, expects, lines)


def _too_deep(text: str) -> int:
    """The line where ``[``/``{`` nesting first exceeds MAX_NESTING (strings and comments skipped), or 0.
    One pass over the text; the parser's own limit is Python's recursion limit, reached as a RecursionError."""
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return 0
    depth = 0
    for kind, line in _brackets(text):
        if kind == "open":
            depth += 1
            if depth > MAX_NESTING:
                return line
        elif kind == "close":
            depth = max(0, depth - 1)
    return 0


def _brackets(text: str):
    """TOML's ``[ { ] }`` outside strings and comments, in one pass: ``("open" | "close", line)``, and a last
    ``("string", line)`` for a string that opens on that line and never closes."""
    line, i, n = 1, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "\"'":
            quote = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else c
            j = i + len(quote)
            while j < n:
                if text[j] == "\\" and quote[0] == '"':
                    j += 2
                    continue
                if text.startswith(quote, j) or (len(quote) == 1 and text[j] == "\n"):
                    break
                j += 1
            if j >= n:
                yield "string", line
                return
            line += text.count("\n", i, j)
            i = j + len(quote)
            continue
        elif c in "[{":
            yield "open", line
        elif c in "]}":
            yield "close", line
        i += 1


def _top_line(lines: _Lines, key: str) -> int:
    for n, t, _ in lines.headers:
        if t == key:
            return n
    return lines.key(0, key)


def _listify(value, what, allowed, line, bad) -> list:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        bad(line, f"{what} must be a name or a non-empty list of names")
    for v in items:
        if v not in allowed:
            bad(line, f"unknown {what} {v!r}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def _setup(raw, lines, bad) -> dict:
    at = lines.table("setup")
    if not isinstance(raw, dict):
        bad(_top_line(lines, "setup"), "'setup' must be a table")
    out = dict(SETUP_DEFAULTS)
    for key, value in raw.items():
        line = lines.key(at, key)
        if key not in SETUP_DEFAULTS:
            bad(line, f"unknown setup key {key!r}; known: {', '.join(SETUP_DEFAULTS)}")
        if key in ("large_folios", "large_zap", "batch_flush", "fwb", "tlbirange", "unmapped_source",
                   "snp_no_direct_map") and not isinstance(value, bool):
            bad(line, f"setup {key} must be true or false")
        if key in ("cpus", "seed") and (not isinstance(value, int) or isinstance(value, bool)):
            bad(line, f"setup {key} must be an integer")
        if key == "seed" and not 0 <= value <= MAX_SEED:
            bad(line, "setup seed must be from 0 to 2**64 - 1")
        if key == "memory" and (isinstance(value, bool) or not isinstance(value, int | str)):
            bad(line, "setup memory must be a size such as \"4G\" (from 4M to 256G)")
        out[key] = value
    out["arch"] = _listify(out["arch"], "arch", ARCHES, lines.key(at, "arch"), bad)
    out["designs"] = _listify(out["designs"], "design", DESIGNS, lines.key(at, "designs"), bad)
    if not isinstance(out["switches"], list):
        bad(lines.key(at, "switches"), f"switches must be a list of: {', '.join(SWITCHES)}")
    for name in out["switches"]:
        if not isinstance(name, str) or name not in SWITCHES:
            bad(lines.key(at, "switches"), f"unknown switch {name!r}; known: {', '.join(SWITCHES)}")
    if not isinstance(out["write"], str) or out["write"] not in OPTIONS["write"]:
        bad(lines.key(at, "write"), f"write must be one of {', '.join(OPTIONS['write'])}")
    if not isinstance(out["populate"], str) or out["populate"] not in OPTIONS["populate"]:
        bad(lines.key(at, "populate"), f"populate must be one of {', '.join(OPTIONS['populate'])}")
    if not 1 <= out["cpus"] <= 64:
        bad(lines.key(at, "cpus"), "cpus must be from 1 to 64")
    try:
        MemoryMap.pc(out["memory"])
    except ModelInputError as e:
        bad(lines.key(at, "memory"), f"memory: {e}")
    mode = out["mode"]
    modes = mode if isinstance(mode, dict) else {a: mode for a in out["arch"]} if mode is not None else {}
    for arch, m in modes.items():
        line = lines.key(at, "mode")
        if arch not in ARCHES:
            bad(line, f"mode table key {arch!r} is not an arch ({', '.join(ARCHES)})")
        if not isinstance(m, str) or not _mode_ok(arch, m):
            known = ", ".join(X86_MODE_WORDS if arch == "x86" else ARM64_MODES)
            bad(line, f"unknown {arch} mode {m!r}; known: {known}")
    return out


MAX_SEED = (1 << 64) - 1


def _toml_type(value) -> str:
    return {list: "array", dict: "table", bool: "boolean", int: "integer", float: "float", str: "string"}.get(
        type(value), type(value).__name__)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mode_ok(arch: str, mode: str) -> bool:
    if arch == "arm64":
        return mode in ARM64_MODES
    words = mode.replace(",", " ").split()
    return bool(words) and all(w in X86_MODE_WORDS for w in words)


def _steps(raw, setup, lines, bad) -> list:
    if not isinstance(raw, list) or not raw:
        bad(_top_line(lines, "step") if raw is not None else 1, "a scenario needs at least one [[step]] table")
    out = []
    for i, step in enumerate(raw):
        at = lines.table("step", i)
        if not isinstance(step, dict):
            bad(at, f"step {i + 1} must be a table")
        op = step.get("op")
        if op is None:
            bad(at, f"step {i + 1} has no 'op'")
        if not isinstance(op, str):
            bad(lines.key(at, "op"), f"step {i + 1}: op must be a string (an op name), not a TOML "
                f"{_toml_type(op)}")
        if op not in OPS:
            bad(lines.key(at, "op"), f"step {i + 1}: unknown op {_short(op)}; known: {', '.join(OPS)}")
        args = {k: v for k, v in step.items() if k != "op"}
        try:
            validate_args(op, args)
        except ModelInputError as e:
            bad(_arg_line(lines, at, args, str(e)), f"step {i + 1}: {e}")
        where, cpu = args.get("interrupt_at"), args.get("interrupt_cpu")
        if where is not None and (not isinstance(where, str) or where not in INTERRUPT_POINTS):
            bad(lines.key(at, "interrupt_at"),
                f"step {i + 1}: interrupt_at must be one of {', '.join(INTERRUPT_POINTS)}")
        if (where is None) != (cpu is None):
            bad(lines.key(at, "interrupt_cpu" if where is None else "interrupt_at"),
                f"step {i + 1}: interrupt_at and interrupt_cpu go together")
        if cpu is not None and (not isinstance(cpu, int) or isinstance(cpu, bool) or not 0 <= cpu < setup["cpus"]):
            bad(lines.key(at, "interrupt_cpu"),
                f"step {i + 1}: interrupt_cpu must be a CPU from 0 to {setup['cpus'] - 1}")
        out.append((at, dict(step)))
    return out


def _arg_line(lines, at, args, msg) -> int:
    """The line of the argument a model error is about (by quoted name, bare name, then value)."""
    for key in args:
        if repr(key) in msg:
            return lines.key(at, key)
    for key in args:
        words = {re.escape(key), re.escape(key.replace("_", " "))}
        if any(re.search(rf"\b{w}\b", msg, re.IGNORECASE) for w in words):
            return lines.key(at, key)
    for key, value in args.items():
        if repr(value) in msg:
            return lines.key(at, key)
    return at


def _expects(raw, setup, nsteps, lines, bad) -> list:
    if raw is None:
        bad(1, "a scenario needs at least one [[expect]] table: the expected outcome belongs in the file")
    if not isinstance(raw, list):
        bad(_top_line(lines, "expect"), "'expect' must be [[expect]] tables")
    out = []
    for i, exp in enumerate(raw):
        at = lines.table("expect", i)
        if not isinstance(exp, dict):
            bad(at, f"expectation {i + 1} must be a table")

        def line(key, _at=at):
            return lines.key(_at, key)

        for key in exp:
            if key not in EXPECT_KEYS:
                bad(line(key), f"expectation {i + 1}: unknown key {key!r}; known: {', '.join(sorted(EXPECT_KEYS))}")
        designs = _listify(exp["design"], "design", DESIGNS, line("design"), bad) if "design" in exp else None
        arches = _listify(exp["arch"], "arch", ARCHES, line("arch"), bad) if "arch" in exp else None
        if designs is not None and not set(designs) & set(setup["designs"]):
            bad(line("design"), f"expectation {i + 1} is for {designs}, but the file runs {setup['designs']}")
        if arches is not None and not set(arches) & set(setup["arch"]):
            bad(line("arch"), f"expectation {i + 1} is for {arches}, but the file runs {setup['arch']}")
        kinds = [k for k in ("step", "counter", "invariant") if k in exp]
        if len(kinds) != 1:
            bad(at, f"expectation {i + 1} needs exactly one of step, counter, invariant (has {kinds or 'none'})")
        kind = kinds[0]
        tests = {"step": STEP_SELECTORS, "counter": COUNTER_TESTS, "invariant": ("held", "broken_at")}[kind]
        for k, ks in (("step", STEP_SELECTORS), ("counter", COUNTER_TESTS), ("invariant", ("held", "broken_at"))):
            for t in ks:
                if k != kind and t in exp:
                    bad(line(t), f"expectation {i + 1}: {t!r} goes with {k!r}, not {kind!r}")
        given = [t for t in tests if t in exp]
        if len(given) != 1:
            bad(at, f"expectation {i + 1}: {kind} needs exactly one of {', '.join(tests)}")
        test, value, target = given[0], exp[given[0]], exp[kind]
        if kind == "step":
            if not isinstance(target, int) or isinstance(target, bool) or not 1 <= target <= nsteps:
                bad(line("step"), f"expectation {i + 1}: step must be a step number from 1 to {nsteps}")
            if test == "events":
                if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                    bad(line(test), f"expectation {i + 1}: events must be a non-empty list of strings")
            elif test == "delta":
                if not isinstance(value, dict) or not value or not all(
                        k in COUNTERS and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items()):
                    bad(line(test), f"expectation {i + 1}: delta must be a table of counter names to integers")
            elif test == "result" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            elif not isinstance(value, str):
                bad(line(test), f"expectation {i + 1}: {test} must be a string")
        elif kind == "counter":
            if not isinstance(target, str) or target not in COUNTERS:
                bad(line("counter"), f"expectation {i + 1}: unknown counter {target!r}; known: {', '.join(COUNTERS)}")
            if not isinstance(value, int) or isinstance(value, bool):
                bad(line(test), f"expectation {i + 1}: {test} must be an integer")
        else:
            key = None if not isinstance(target, str) else target if target in INVARIANTS else _INV_BY_NAME.get(target)
            if key is None:
                names = ", ".join(f"{k} ({v.name})" for k, v in INVARIANTS.items())
                bad(line("invariant"), f"expectation {i + 1}: unknown invariant {target!r}; known: {names}")
            target = key
            if test == "held" and not isinstance(value, bool):
                bad(line("held"), f"expectation {i + 1}: held must be true or false")
            if test == "broken_at" and (not isinstance(value, int) or isinstance(value, bool)
                                        or not 1 <= value <= nsteps):
                bad(line("broken_at"), f"expectation {i + 1}: broken_at must be a step number from 1 to {nsteps}")
        why = exp.get("why", "")
        if not isinstance(why, str):
            bad(line("why"), f"expectation {i + 1}: why must be a string")
        out.append(Expectation(at, kind, target, test, value, tuple(designs or setup["designs"]),
                               tuple(arches or setup["arch"]), why))
    return out


# -- running ---------------------------------------------------------------------------------------------------
@dataclass
class Check:
    expect: Expectation
    ok: bool
    got: object

    def as_dict(self) -> dict:
        return {"line": self.expect.line, "expect": self.expect.describe(), "ok": self.ok, "got": self.got}


@dataclass
class Run:
    """One scenario run under one design on one arch."""

    scenario: Scenario
    design: str
    arch: str
    system: System
    checks: list

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def invariants(self) -> dict:
        """``{name: "held" | step number where it first broke | "n/a"}``."""
        out = {}
        for key, inv in INVARIANTS.items():
            if self.design not in inv.designs:
                out[inv.name] = "n/a"
            else:
                out[inv.name] = self.system.first_broken.get(key, "held")
        return out

    def as_dict(self) -> dict:
        s = self.scenario
        return {"scenario": s.name, "file": s.path, "purpose": s.purpose, "design": self.design,
                "arch": self.arch, "mode": self.system.k.dmap.mode, "config": self.system.config.label(),
                "steps": [st.as_dict() for st in self.system.steps], "counters": dict(self.system.k.counters),
                "invariants": self.invariants(), "expectations": [c.as_dict() for c in self.checks],
                "ok": self.ok}


def run(scn: Scenario, designs=None, arches=None) -> list[Run]:
    """Run ``scn`` under each design and arch (the file's, or the given overrides); raises ScenarioError if the
    model refuses the setup or a step (e.g. a step names a file that was never created)."""
    setup = scn.setup
    at = scn.lines.table("setup") if scn.lines else 1
    out = []
    for arch in arches or setup["arch"]:
        for design in designs or setup["designs"]:
            try:
                system = System(design=design, arch=arch, mode=scn.mode_for(arch), memory=setup["memory"],
                                cpus=setup["cpus"], seed=setup["seed"], switches=setup["switches"],
                                write=setup["write"], large_folios=setup["large_folios"],
                                batch_flush=setup["batch_flush"], fwb=setup["fwb"],
                                large_zap=setup["large_zap"], unmapped_source=setup["unmapped_source"],
                                populate=setup["populate"], snp_no_direct_map=setup["snp_no_direct_map"],
                                tlbirange=setup["tlbirange"] if arch == "arm64" else None)
            except ModelInputError as e:
                line = scn.lines.key(at, "switches") if scn.lines and "switch" in str(e) else at
                raise ScenarioError(scn.path, line, f"setup ({design} on {arch}): {e}") from None
            for i, (line, step) in enumerate(scn.steps):
                args = {k: v for k, v in step.items() if k != "op"}
                try:
                    system.step(step["op"], **args)
                except ModelInputError as e:
                    where = _arg_line(scn.lines, line, args, str(e)) if scn.lines else line
                    raise ScenarioError(scn.path, where, f"step {i + 1} ({step['op']}, {design} on {arch}): {e}") \
                        from None
            checks = [_check(e, system, design) for e in scn.expects if e.applies(design, arch)]
            out.append(Run(scn, design, arch, system, [c for c in checks if c is not None]))
    return out


def _check(e: Expectation, system: System, design: str) -> Check | None:
    if e.kind == "step":
        step = system.steps[e.target - 1]
        if e.test == "events":
            got = [str(ev) for ev in step.events]
            return Check(e, _in_order(e.value, got), got)
        if e.test == "delta":
            got = {name: step.counters.get(name, 0) for name in e.value}
            return Check(e, got == e.value, got)
        got = getattr(step, e.test)
        return Check(e, got == e.value, got)
    if e.kind == "counter":
        got = system.k.counters[e.target]
        ok = {"equals": got == e.value, "at_least": got >= e.value, "at_most": got <= e.value}[e.test]
        return Check(e, ok, got)
    if design not in INVARIANTS[e.target].designs:
        return None
    broke = system.first_broken.get(e.target)
    got = "held" if broke is None else broke
    if e.test == "held":
        return Check(e, (broke is None) == e.value, got)
    return Check(e, broke == e.value, got)


def _in_order(patterns: list, events: list) -> bool:
    """Each pattern is a prefix of some event, in order (a subsequence match)."""
    it = iter(events)
    return all(any(ev.startswith(p) for ev in it) for p in patterns)


def find_files(paths) -> list[str]:
    """Expand directories to their ``*.toml`` files (sorted); keep files as given."""
    out = []
    for p in paths:
        pp = Path(p)
        out.extend(sorted(str(f) for f in pp.glob("*.toml")) if pp.is_dir() else [str(p)])
    return out


def default_dir() -> Path:
    """``./scenarios`` if it exists, else the repository's ``scenarios/`` next to the package."""
    here = Path("scenarios")
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / "scenarios"


__all__ = ["Scenario", "Expectation", "ScenarioError", "Run", "Check", "load", "loads", "run", "find_files",
           "default_dir"]
