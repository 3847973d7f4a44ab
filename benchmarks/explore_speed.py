"""How fast ``nbmodel explore`` is on this machine: the default sweep, and one large configuration.

    .venv/bin/python benchmarks/explore_speed.py [--jobs N]

Prints states, transitions, seconds and states per second: for the whole default sweep (as ``nbmodel
explore`` runs it), for its fast-engine and real-engine parts separately, and for one configuration large
enough that the memo is warm (per-folio, 3 pages, 400 000 states). Timings vary between runs; nothing here is
compared in a test.
"""

from __future__ import annotations

import argparse
import time

from nbmodel.explore import default_spaces, explore, sweep


def run_sweep(jobs: int) -> None:
    spaces = default_spaces()
    start = time.perf_counter()
    results = sweep(spaces, jobs)
    wall = time.perf_counter() - start
    done = [r for r in results if not isinstance(r, tuple)]
    states = sum(r.states for r in done)
    print(f"default sweep, {jobs} process(es): {len(spaces)} configurations ({len(done)} explored), "
          f"{states} states, {sum(r.transitions for r in done)} transitions in {wall:.1f} s: "
          f"{states / wall:,.0f} states/s")
    for engine in ("fast", "real"):
        part = [r for r in done if r.engine == engine]
        if part:
            secs = sum(r.seconds for r in part)
            n = sum(r.states for r in part)
            print(f"  {engine} engine: {len(part)} configurations, {n} states in {secs:.1f} s of work: "
                  f"{n / secs:,.0f} states/s")


def run_large() -> None:
    r = explore(design="per-folio", offsets=3, max_states=400_000)
    print(f"per-folio, 3 pages, 400k-state budget: {r.states} states, {r.transitions} transitions, depth "
          f"{r.depth} in {r.seconds:.1f} s: {r.states_per_second:,.0f} states/s ({r.misses} memo misses)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1, help="worker processes for the sweep (default 1)")
    args = p.parse_args()
    run_sweep(args.jobs)
    run_large()


if __name__ == "__main__":
    main()
