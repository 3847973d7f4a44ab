"""The explorer's text output: one row per configuration with a verdict per property, the legend, and the
counterexamples step by step.
"""

from __future__ import annotations

from .explore import BOUNDED_2M
from .explore_moves import PROPERTIES, Property
from .explore_results import ExploreResult
from .explore_state import (
    Space,
)

COLUMNS = ("a", "b", "c", "d", "leak", "oops", "warn", "eperm")


def verdict(r: ExploreResult, key: str) -> str:
    """A table cell: ``ok`` (holds, complete), ``ok<`` (holds in the bounded search), ``N`` (shortest
    counterexample has N steps), ``-`` (does not apply)."""
    if not r.applies(key):
        return "-"
    ce = r.per_invariant.get(key)
    if ce is None:
        return "ok" if r.complete else "ok<"
    return str(len(ce.steps)) + ("" if ce.verified else "!")


def format_result(r: ExploreResult, timing: bool = True, details: bool = True, toml: bool = False) -> str:
    """One configuration: sizes, then per property ``holds`` or the shortest counterexample."""
    sp = r.space
    files = f"guest_memfd of {sp.offsets} page(s)" + (f" + memfd_secret of {sp.secret}" if sp.secret else "")
    lines = [f"== {sp.label()}: {files}, {sp.cpus} CPUs, interleavings {'on' if sp.interleave else 'off'}"]
    scope = "complete: every reachable state visited" if r.complete else "bounded: state budget or --depth"
    lines.append(f"   {r.states} states, {r.transitions} transitions, depth {r.depth} ({scope})")
    if timing:
        lines.append(f"   {r.seconds:.2f} s, {r.states_per_second:,.0f} states/s")
    for key, prop in PROPERTIES.items():
        lines.extend(_property_lines(r, key, prop, details, toml))
    for op, why in sorted(r.refused.items()):
        lines.append(f"   note: the model refused {op} in some states: {why}")
    return "\n".join(lines)


def _property_lines(r: ExploreResult, key: str, prop: Property, details: bool, toml: bool = False) -> list[str]:
    head = f"   {key:<5} {prop.name:<36}"
    if not r.applies(key):
        return [f"{head} n/a ({', '.join(prop.designs)} only)"]
    ce = r.per_invariant.get(key)
    where = "all" if r.complete else "all explored"
    if ce is None:
        if prop.kind == "goal":
            return [f"{head} not reachable in {where} {r.transitions} transitions"]
        unit = f"{r.states} states" if prop.kind == "invariant" else f"{r.transitions} transitions"
        return [f"{head} holds in {where} {unit}"]
    what = "reachable" if prop.kind == "goal" else "COUNTEREXAMPLE"
    out = [f"{head} {what}, {len(ce.steps)} steps{'' if ce.verified else ' (NOT reproduced on replay!)'}"]
    if details:
        out += [f"        {line}" for line in ce.numbered()]
        out.append(f"        -> {ce.reason}")
    if toml:
        out += [f"        | {line}" for line in ce.to_toml().splitlines()]
    return out


def format_table(spaces: list[Space], results: list, timing: bool = True) -> str:
    """The sweep as one line per configuration."""
    width = max(len(sp.label()) for sp in spaces) + 2
    head = f"{'configuration':<{width}}{'states':>9}{'depth':>7} " + "".join(f"{c:>6}" for c in COLUMNS)
    lines = [head + ("   seconds" if timing else "")]
    for sp, r in zip(spaces, results, strict=False):
        if isinstance(r, tuple):
            lines.append(f"{sp.label():<{width}}= {spaces[r[1]].label()} (the switch changes nothing here)")
            continue
        depth = f"{r.depth}{'' if r.complete else '<'}"
        row = f"{sp.label():<{width}}{r.states:>9}{depth:>7} " + "".join(
            f"{verdict(r, c):>6}" for c in COLUMNS)
        lines.append(row + (f"{r.seconds:>10.2f}" if timing else ""))
    return "\n".join(lines)


LEGEND = ("ok: holds in every reachable state (complete search)  ok<: holds in every state the bounded search "
          "visited  N: shortest counterexample has N steps (setup included; --details prints it)  -: n/a  "
          "depth N<: bounded (" + BOUNDED_2M + ")")


__all__ = ["format_result", "format_table", "verdict", "LEGEND", "COLUMNS"]
