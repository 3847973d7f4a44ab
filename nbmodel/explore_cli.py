"""``nbmodel explore`` on the command line: the arguments, the sweep they select, and what is printed
(``nbmodel explore --help``).
"""

from __future__ import annotations

import json
import os
import sys
import time

from .designs import DESIGNS, SWITCHES
from .errors import ModelInputError
from .explore import (
    ARCHES,
    AUTO,
    BUDGET,
    BUDGET_2M,
    check_space,
    default_jobs,
    default_spaces,
    state_space_sizes,
    sweep,
)
from .explore_moves import GMEM_OPS, SECRET_OPS
from .explore_report import LEGEND, format_result, format_table
from .explore_results import exhaustive_rates, scenario_name
from .explore_state import (
    ExploreLimit,
    Space,
)

EPILOG = """examples:
  nbmodel explore                                   every design x arch x switch, one line each
  nbmodel explore --design filemap --arch x86       one configuration: sizes and per property
                                                    "holds in all N states" or the shortest counterexample
  nbmodel explore --design filemap --switch skip_flush --scenario-out /tmp/ce
                                                    ... and write each counterexample as a scenario file
                                                    that `nbmodel run /tmp/ce/*.toml` replays
  nbmodel explore --design per-folio --offsets 3 --depth 6 --json
  nbmodel explore --design filemap --check 50     the memoized search against fresh Systems, 50 states

properties: a-d are the model's invariants (nbmodel.invariants), checked after every step and, at interrupt
points, inside it; leak: a CPU reads guest data through the direct map; oops: a kernel path faults on a
direct-map hole; warn: a WARN_ON fires; eperm: write() refused after a zap (a goal, not a bug).

exit status: 0 (a counterexample is a result, not an error); 2 for bad arguments; with --check, 1 when the
memoized search and a fresh System disagree."""


def add_arguments(parser) -> None:
    """The ``nbmodel explore`` options."""
    parser.epilog = EPILOG
    parser.add_argument("--design", action="append", choices=DESIGNS, help="explore this design (repeatable)")
    parser.add_argument("--arch", action="append", choices=("x86", "arm64"), help="this arch (repeatable)")
    parser.add_argument("--mode", help="the arch's mode (x86: 4-level, 5-level, nogbpages; arm64: bbml2, "
                        "rodata-full); default: x86 4-level, arm64 bbml2 and rodata-full")
    parser.add_argument("--switch", action="append", choices=list(SWITCHES), metavar="SWITCH",
                        help="turn this break-it switch on (repeatable; together): " + ", ".join(SWITCHES))
    parser.add_argument("--no-switches", action="store_true", help="the sweep without any switch")
    parser.add_argument("--offsets", type=int, default=None, help="pages of the guest_memfd, 0..16 (default 3)")
    parser.add_argument("--secret", type=int, default=None, help="pages of a memfd_secret file too, 0..16 (default 0)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs, 1..8 (default 2)")
    parser.add_argument("--depth", type=int, default=None, help="stop after this many steps, 0..1000 (default: none)")
    parser.add_argument("--max-states", type=int, default=None,
                        help=f"state budget per configuration (default {BUDGET}; {BUDGET_2M} with 2M folios); "
                        "0: none")
    parser.add_argument("--no-interleave", action="store_true", help="no racing reads at interrupt points")
    parser.add_argument("--close", action="store_true", help="also close and re-create files")
    parser.add_argument("--skip-op", action="append", default=[], metavar="OP",
                        choices=sorted(set(GMEM_OPS + SECRET_OPS + ("kernel_read", "none"))),
                        help="leave this op out (repeatable), e.g. secret_fault+race; replaces the ops the sweep "
                        "leaves out of a configuration (SWEEP_SKIP); none: leave nothing out")
    parser.add_argument("--write", choices=("refuse", "mermap"), default="refuse", help="filemap write()")
    parser.add_argument("--jobs", type=int, default=None,
                        help=f"worker processes for a sweep, 1..64 (default: the CPUs this process may use, "
                        f"{default_jobs()} here)")
    parser.add_argument("--details", action="store_true", help="in a sweep, print every counterexample")
    parser.add_argument("--toml", action="store_true", help="print each counterexample's scenario file too")
    parser.add_argument("--json", action="store_true", help="one JSON document (results, counterexamples)")
    parser.add_argument("--scenario-out", metavar="DIR", help="write each counterexample as DIR/NAME.toml")
    parser.add_argument("--no-timing", action="store_true", help="no times or rates (deterministic output)")
    parser.add_argument("--check", type=int, metavar="K", default=None,
                        help="instead of exploring, check the search's memoized transitions against fresh "
                        "Systems on K (1..10000) sampled states per configuration (every move from each; --depth "
                        "bounds the search, default 4); exit 1 on a mismatch")
    parser.add_argument("--sizes", type=int, metavar="N", default=None,
                        help="print reachable states and direct-map views for 1..N pages per design (N from 1 to 4)")


def spaces_from_args(args) -> list[Space]:
    kw = {"cpus": args.cpus, "interleave": not args.no_interleave, "close": args.close, "write": args.write}
    if args.skip_op:
        kw["skip"] = tuple(sorted(set(args.skip_op) - {"none"}))
    if args.offsets is not None:
        kw["offsets"] = args.offsets
    if args.secret is not None:
        kw["secret"] = args.secret
    arches = [(a, m) for a, m in ARCHES if a in (args.arch or ("x86", "arm64"))]
    if args.mode is not None:
        arches = [(a, args.mode) for a in dict.fromkeys(a for a, _ in arches)]
    if args.switch:
        switch_sets = [tuple(sorted(set(args.switch)))]
    elif args.no_switches or args.design or args.arch:
        switch_sets = [()]
    else:
        switch_sets = None
    return default_spaces(tuple(args.design or DESIGNS), tuple(arches), switch_sets, **kw)


def run(args) -> int:
    """``nbmodel explore``: 0 normally (counterexamples are results), 2 for bad arguments."""
    try:
        _check_args(args)
        if args.sizes is not None:
            return _run_sizes(args)
        spaces = spaces_from_args(args)
        for sp in spaces:
            check_space(sp)
        if args.check is not None:
            return _run_check(spaces, args)
        budget = AUTO if args.max_states is None else (args.max_states or None)
        start = time.perf_counter()
        jobs = default_jobs() if args.jobs is None else args.jobs
        results = sweep(spaces, jobs, args.depth, budget, progress=not args.json)
        wall = time.perf_counter() - start
    except (ModelInputError, ExploreLimit) as e:
        print(f"nbmodel explore: {e}", file=sys.stderr)
        return 2
    _print_results(args, spaces, results, wall)
    if args.scenario_out:
        _write_scenarios(args.scenario_out, [r for r in results if not isinstance(r, tuple)])
    return 0


def _check_args(args) -> None:
    """Every numeric option in its documented range, and --scenario-out usable, before any search runs."""
    ranges = {"check": (1, 10_000), "sizes": (1, 4), "depth": (0, 1_000), "max_states": (0, 100_000_000),
              "jobs": (1, 64), "cpus": (1, 8), "offsets": (0, 16), "secret": (0, 16)}
    for name, (lo, hi) in ranges.items():
        value = getattr(args, name, None)
        if value is not None and not lo <= value <= hi:
            raise ModelInputError(f"--{name.replace('_', '-')} must be from {lo} to {hi}, not {value}")
    out = getattr(args, "scenario_out", None)
    if out is not None:
        if os.path.exists(out) and not os.path.isdir(out):
            raise ModelInputError(f"--scenario-out {out!r} exists and is not a directory")
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent) or not os.access(parent if not os.path.isdir(out) else out, os.W_OK):
            raise ModelInputError(f"--scenario-out {out!r}: cannot create or write that directory")


def _print_results(args, spaces, results, wall: float) -> None:
    timing = not args.no_timing
    real = [r for r in results if not isinstance(r, tuple)]
    states = sum(r.states for r in real)
    if args.json:
        doc = {"results": [r.to_dict(timing) if not isinstance(r, tuple) else {"same_as": spaces[r[1]].label(),
                                                                               "label": sp.label()}
                           for sp, r in zip(spaces, results, strict=False)],
               "total": {"configurations": len(spaces), "explored": len(real), "states": states,
                         "transitions": sum(r.transitions for r in real)}}
        if timing:
            doc["total"].update(seconds=round(wall, 3), states_per_second=round(states / wall) if wall else None,
                                **exhaustive_rates(real))
        print(json.dumps(doc, indent=1))
        return
    if len(spaces) == 1:
        print(format_result(real[0], timing, toml=args.toml))
        return
    print(format_table(spaces, results, timing))
    print(LEGEND)
    if args.details or args.toml:
        for r in real:
            print()
            print(format_result(r, timing, toml=args.toml))
    line = f"{len(spaces)} configurations ({len(real)} explored), {states} states, " \
           f"{sum(r.transitions for r in real)} transitions"
    if timing:
        line += f" in {wall:.1f} s: {states / wall:,.0f} states/s"
        rates = exhaustive_rates(real)
        line += (f"\n  complete searches: {rates['complete']} configurations, {rates['complete_states']} states in "
                 f"{rates['complete_cpu_seconds']:.1f} CPU-s ({rates['complete_states_per_cpu_second']:,} states per "
                 f"CPU-second; with 4K folios {rates['complete_4k_states_per_cpu_second']:,}, with 2M folios "
                 f"{rates['complete_2m_states_per_cpu_second']:,}); bounded: {rates['bounded']} configurations in "
                 f"{rates['bounded_cpu_seconds']:.1f} CPU-s")
    print(line)


def _run_check(spaces: list, args) -> int:
    """``--check K``: the memoized search against fresh Systems, configuration by configuration."""
    from .explore_check import check_conformance
    bad = 0
    for sp in spaces:
        problems = check_conformance(sp, depth=args.depth or 4, sample=args.check)
        bad += bool(problems)
        print(f"{sp.label()}: {'OK' if not problems else f'{len(problems)} MISMATCH(ES)'}")
        for p in problems[:5]:
            print("   " + p.replace("\n", "\n   "))
    return 1 if bad else 0


def _write_scenarios(directory: str, results: list) -> None:
    os.makedirs(directory, exist_ok=True)
    for r in results:
        for ce in r.per_invariant.values():
            if ce is not None:
                path = os.path.join(directory, scenario_name(ce) + ".toml")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(ce.to_toml())
                print(f"wrote {path}")


def _run_sizes(args) -> int:
    rows = []
    for design in args.design or DESIGNS:
        rows += state_space_sizes(design, range(1, args.sizes + 1), max_states=None,
                                  interleave=not args.no_interleave)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'design':<10}{'pages':>6}{'states':>10}{'dm views':>10}{'memberships':>13}")
    for row in rows:
        print(f"{row['design']:<10}{row['offsets']:>6}{row['states']:>10}{row['dm_states']:>10}"
              f"{row['membership_states']:>13}")
    return 0


__all__ = ["add_arguments", "run", "spaces_from_args", "EPILOG"]
