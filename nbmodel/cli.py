"""The ``nbmodel`` command: run scenarios, list them, print the ABI table; explore, bench and probe are
provided by :mod:`nbmodel.explore`, :mod:`nbmodel.bench` and :mod:`nbmodel.realkernel` and imported only
when asked for.

Exit status of every command: 0 success; 1 an expectation (or ``bench --strict`` speed check) failed; 2 bad
input, with one line on stderr (``FILE:LINE: what is wrong`` for a scenario file, ``nbmodel CMD: ...``
otherwise) and never a traceback; 130 interrupted (Ctrl-C), with one line. A closed output pipe
(``nbmodel run ... | head -1``) never changes the status: output stops, the work and its verdict go on.
:func:`guarded` gives any command (``explore``, ``probe``) that contract; :func:`int_range` and
:func:`size_list` are the argparse types that give numeric options their documented range.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys

from . import scenario as sc
from .counters import COUNTERS
from .designs import DESIGNS
from .errors import ModelInputError
from .kernel import ARCHES
from .units import human, parse_size

#: Counters always shown (the command-line contract); others are shown when not zero.
SHOWN_COUNTERS = ("DirectMap4k", "DirectMap2M", "DirectMap1G", "direct_map_level2_splits",
                  "direct_map_level3_splits", "tlb_flushes", "tlb_full_flushes", "ipis", "zaps", "restores")

#: Subcommands implemented elsewhere: name -> (module, one-line help).
EXTERNAL = {
    "explore": ("nbmodel.explore_cli", "exhaustive search over small configurations; shortest counterexamples"),
    "bench": ("nbmodel.bench", "workloads and counters under each design; the cost model"),
    "probe": ("nbmodel.realkernel", "probe the running kernel (memfd_secret, guest_memfd, vmstat, meminfo)"),
}

MAIN_EPILOG = """examples:
  nbmodel run scenarios/WRITE+WRITE.toml           run one scenario under the designs it names
  nbmodel run scenarios/ --design filemap --json   every scenario, filemap design only, JSON lines
  nbmodel list                                     scenario names and purposes
  nbmodel abi                                      what each design returns to userspace, as a table
  nbmodel explore --help                           (likewise bench, probe)
"""

RUN_EPILOG = """example:
  nbmodel run scenarios/FALLOC+KREAD.toml
  nbmodel run scenarios/ --design per-folio --arch arm64 -q

output: each step with its result and events, the final counters and invariants, then PASS/FAIL for each
expectation. With --json: JSON lines, one document per (scenario, design, arch) run, each with keys scenario,
file, purpose, design, arch, mode, config, steps [{index, op, args, result, events, broken, saw?,
interrupt?}], counters {name: int; DirectMap* in kB}, invariants {name: "held" | step number | "n/a"},
expectations [{line, expect, ok, got}], ok.

exit status: 0 every expectation holds, 1 one does not, 2 a bad file (FILE:LINE: what is wrong) or bad
arguments, 130 interrupted (Ctrl-C). A closed output pipe (| head) does not change it.
--live: runs each scenario whose steps exist on the running kernel for real (memfd_secret, KVM guest_memfd),
step by step beside the model, skipping the rest with the reason; exit 0 all live runs equal, 1 one differs,
2 nothing could run here.
The file format is described in nbmodel/scenario.py (python -c 'import nbmodel.scenario as s; help(s)').
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nbmodel", description="An executable model of the Linux direct map, the "
                                "page cache and guest_memfd: per-folio (v12) vs filemap-level direct-map removal.",
                                epilog=MAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser("run", help="run scenario files and check their expectations", epilog=RUN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run litmus-style scenario files (or directories of them).")
    r.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="a .toml file or a directory of them")
    r.add_argument("--design", action="append", choices=DESIGNS, help="run under this design only (repeatable)")
    r.add_argument("--arch", action="append", choices=ARCHES, help="run on this arch only (repeatable)")
    r.add_argument("--json", action="store_true", help="JSON lines: one document per scenario run")
    r.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    r.add_argument("--live", action="store_true",
                   help="also run each scenario for real on this kernel, beside the model (see nbmodel.live)")
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("list", help="list scenario names and purposes", epilog="example:\n  nbmodel list scenarios/",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (default: scenarios/)")
    ls.set_defaults(func=cmd_list)
    a = sub.add_parser("abi", help="print the user-visible ABI table generated from the model",
                       epilog="example:\n  nbmodel abi --format html > abi.html",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--format", choices=("markdown", "html", "json"), default="markdown")
    a.set_defaults(func=cmd_abi)
    for name, (_, help_text) in EXTERNAL.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


# -- the exit-status contract every command shares ------------------------------------------------------------
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, bidi overrides; not newlines) written as ``\\x1b``-style
    escapes, so a scenario's name or purpose cannot drive the terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def one_line(text: str, limit: int = 300) -> str:
    """A message as one printable line of at most ``limit`` characters."""
    text = printable(" ".join(str(text).split()))
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _StdoutGuard:
    """Wraps ``sys.stdout`` (or ``sys.stderr``): when the reader goes away (EPIPE), further output is dropped,
    never an exception, so the command finishes its work and returns the exit status its work deserves."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def write(self, text):
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self):
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def _gone(self):
        self.broken = True
        try:  # the interpreter flushes stdout at exit: point the descriptor at /dev/null so that cannot fail
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, self._stream.fileno())
            os.close(fd)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _say(msg: str) -> None:
    try:
        print(msg, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def guarded(prog: str, func, *args) -> int:
    """Run ``func(*args)`` (a command returning its exit status) under the contract every ``nbmodel`` command
    keeps: Ctrl-C -> one line ``PROG: interrupted`` and 130; :class:`~nbmodel.errors.ModelInputError` (bad
    input found late) -> one line ``PROG: message`` and 2; a closed stdout pipe -> output dropped, status
    unchanged. ``explore`` and ``probe`` call it as ``return guarded("nbmodel explore", run, args)``."""
    real_out, real_err = sys.stdout, sys.stderr
    out = real_out if isinstance(real_out, _StdoutGuard) else _StdoutGuard(real_out)
    err = real_err if isinstance(real_err, _StdoutGuard) else _StdoutGuard(real_err)
    sys.stdout, sys.stderr = out, err
    try:
        status = int(func(*args) or 0)
    except KeyboardInterrupt:
        _say(("\r" if getattr(real_err, "isatty", lambda: False)() else "") + f"{prog}: interrupted")
        status = 130
    except ModelInputError as e:
        _say(f"{prog}: {one_line(e)}")
        status = 2
    finally:
        out.flush()
        err.flush()
        sys.stdout, sys.stderr = real_out, real_err
    return status


def int_range(lo: int, hi: int, what: str = "an integer"):
    """An argparse ``type``: an integer from ``lo`` to ``hi`` (argparse then exits 2 with one line)."""
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*[-+]?\d{1,20}\s*", text):
            raise argparse.ArgumentTypeError(f"not {what}: {one_line(repr(text), 60)} (from {lo} to {hi})")
        value = int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range (from {lo} to {hi})")
        return value
    parse.__name__ = what
    return parse


def size_list(lo: int, hi: int, multiple: int):
    """An argparse ``type``: comma-separated sizes (``64M,1G``), each a multiple of ``multiple`` bytes from
    ``lo`` to ``hi``; returns the sizes in bytes."""
    def parse(text: str) -> list:
        items = text.split(",")
        if not text.strip() or len(items) > 64:
            raise argparse.ArgumentTypeError("give 1 to 64 comma-separated sizes, e.g. 64M,1G")
        out = []
        for item in items:
            if not item.strip():
                raise argparse.ArgumentTypeError(f"empty size in {one_line(repr(text), 60)}")
            try:
                n = parse_size(item)
            except ModelInputError as e:
                raise argparse.ArgumentTypeError(one_line(e)) from None
            if not lo <= n <= hi or n % multiple:
                raise argparse.ArgumentTypeError(
                    f"{one_line(item, 40)}: each size must be a multiple of {human(multiple)} from {human(lo)} "
                    f"to {human(hi)}")
            out.append(n)
        return out
    parse.__name__ = "size list"
    return parse


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"nbmodel {argv[0]}" if argv and argv[0] in ("run", "list", "abi", *EXTERNAL) else "nbmodel"
    return guarded(prog, _main, argv)


def _main(argv: list) -> int:
    if argv and argv[0] in EXTERNAL:
        return run_external(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


def run_external(name: str, argv: list) -> int:
    """``nbmodel explore|bench|probe``: import the module now, so a missing one cannot break ``run``."""
    module_name, help_text = EXTERNAL[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        print(f"nbmodel {name}: {module_name} is not available ({e})", file=sys.stderr)
        return 2
    if not (callable(getattr(module, "add_arguments", None)) and callable(getattr(module, "run", None))):
        print(f"nbmodel {name}: {module_name} does not provide add_arguments(parser) and run(args) yet",
              file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"nbmodel {name}", description=help_text,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)


# -- run -----------------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    if getattr(args, "live", False):
        from .live import run_files
        return run_files(args.scenarios, as_json=args.json, quiet=args.quiet)
    status = 0
    totals = {"runs": 0, "passed": 0, "failed": 0}
    files = sc.find_files(args.scenarios)
    if not files:
        print(one_line(f"nbmodel run: no .toml files in {' '.join(args.scenarios)}"), file=sys.stderr)
        return 2
    for path in files:
        try:
            runs = sc.run(sc.load(path), designs=args.design, arches=args.arch)
        except sc.ScenarioError as e:
            print(one_line(e, 1000), file=sys.stderr)
            status = 2
            continue
        for r in runs:
            totals["runs"] += 1
            totals["passed"] += sum(c.ok for c in r.checks)
            totals["failed"] += sum(not c.ok for c in r.checks)
            if not r.ok:
                status = max(status, 1)
            if args.json:
                print(json.dumps(r.as_dict()))
            else:
                print("\n".join(printable(line) for line in format_run(r, quiet=args.quiet).split("\n")))
    if not args.json:
        verdict = {0: "OK", 1: "FAILED", 2: "BAD FILE"}[status]
        print(f"== {totals['runs']} runs, {totals['passed'] + totals['failed']} expectations: "
              f"{totals['passed']} passed, {totals['failed']} failed: {verdict}")
    return status


def format_run(r: sc.Run, quiet: bool = False) -> str:
    """A run as text: steps and events, counters, invariants, then PASS/FAIL per expectation."""
    s, k = r.scenario, r.system.k
    lines = [f"== {s.name} [{r.system.config.label()} on {r.arch} {k.dmap.mode}]  ({s.path})", f"   {s.purpose}"]
    if quiet:
        lines = [line for c in r.checks if not c.ok for line in _check_lines(c)]
        return "\n".join([f"== {s.name} [{r.system.config.label()} on {r.arch}]: "
                          f"{'PASS' if r.ok else 'FAIL'}"] + lines)
    for step in r.system.steps:
        lines.append(f"  {step}")
        lines.extend(f"        {e}" for e in step.events)
        for key, why in step.broken.items():
            lines.append(f"        ! invariant {key} broken: {why}")
    shown = [n for n in COUNTERS if n in SHOWN_COUNTERS or k.counters[n]]
    lines.append("  counters: " + " ".join(f"{n}={k.counters[n]}" for n in shown))
    lines.append("  invariants: " + " ".join(f"{n}={_status(v)}" for n, v in r.invariants().items()))
    for c in r.checks:
        lines.extend(_check_lines(c))
    if not r.checks:
        lines.append(f"  (no expectation in this file is about {r.design} on {r.arch})")
    return "\n".join(lines)


def _status(v) -> str:
    return f"broken@{v}" if isinstance(v, int) else v


def _check_lines(c: sc.Check) -> list:
    e = c.expect
    out = [f"  {'PASS' if c.ok else 'FAIL'} line {e.line}: {e.describe()}" + ("" if c.ok else f"  (got {c.got!r})")]
    if e.why and not c.ok:
        out.append(f"       why: {e.why}")
    return out


# -- list, abi -------------------------------------------------------------------------------------------------
def cmd_list(args) -> int:
    status = 0
    for path in sc.find_files(args.paths or [sc.default_dir()]):
        try:
            s = sc.load(path)
        except sc.ScenarioError as e:
            print(one_line(e, 1000), file=sys.stderr)
            status = 2
            continue
        print(printable(f"{s.name:<32} {s.purpose}"))
    return status


def cmd_abi(args) -> int:
    from . import abi
    if args.format == "json":
        print(json.dumps(abi.abi_rows(), indent=1))
    elif args.format == "html":
        print(abi.abi_html())
    else:
        print(abi.abi_markdown())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
