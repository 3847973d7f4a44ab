"""What a search reports: an :class:`ExploreResult` per configuration and a :class:`Counterexample` per
broken property, each counterexample replayed on a fresh :class:`~nbmodel.system.System` (:func:`verify`) and
written as a scenario file (:func:`scenario_toml`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .explore_moves import PROPERTIES
from .explore_state import (
    Space,
    observe,
)
from .system import System


@dataclass
class Counterexample:
    """A shortest path to a property's violation, replayed on a real System."""

    prop: str
    steps: list              # step dicts, setup included, as System.step takes them
    reason: str
    space: Space
    replay: list = field(default_factory=list)   # Step.as_dict() of the replay
    verified: bool = False

    @property
    def invariant(self) -> str:
        return self.prop

    def numbered(self) -> list[str]:
        """The replayed steps as ``N. op args -> result`` lines."""
        out = []
        for d in self.replay:
            args = " ".join(f"{k}={v}" for k, v in d["args"].items())
            extra = f" saw={d['saw']}" if "saw" in d else ""
            extra += f" interrupt={d['interrupt']}" if "interrupt" in d else ""
            out.append(f"{d['index']:>3}. {d['op']} {args} -> {d['result']}{extra}")
        return out

    def to_dict(self) -> dict:
        return {"property": self.prop, "invariant": self.prop, "kind": PROPERTIES[self.prop].kind,
                "name": PROPERTIES[self.prop].name, "reason": self.reason,
                "config": space_dict(self.space), "steps": self.steps, "replay": self.replay,
                "verified": self.verified}

    def to_toml(self) -> str:
        return scenario_toml(self)


@dataclass
class ExploreResult:
    """What one search found: sizes, time, and per property ``None`` (holds) or a :class:`Counterexample`."""

    space: Space
    states: int
    transitions: int
    depth: int
    complete: bool
    seconds: float
    per_invariant: dict
    misses: int = 0
    refused: dict = field(default_factory=dict)   # op -> why System.step refused it
    consulted: frozenset = frozenset()            # the switch names the design code asked about
    cpu_seconds: float = 0.0                      # CPU time of the search (this process)
    dm_states: int | None = None
    membership_states: int | None = None

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds else float("inf")

    def applies(self, key: str) -> bool:
        return self.space.design in PROPERTIES[key].designs

    def to_dict(self, timing: bool = True) -> dict:
        out = {"config": space_dict(self.space), "label": self.space.label(), "states": self.states,
               "transitions": self.transitions, "depth": self.depth, "complete": self.complete,
               "per_invariant": {k: (None if v is None else v.to_dict()) for k, v in self.per_invariant.items()
                                 if self.applies(k)}}
        if self.dm_states is not None:
            out.update(dm_states=self.dm_states, membership_states=self.membership_states)
        if self.refused:
            out["refused"] = dict(sorted(self.refused.items()))
        if timing:
            out.update(seconds=round(self.seconds, 3), states_per_second=round(self.states_per_second))
        return out

    def to_json(self, timing: bool = True) -> str:
        return json.dumps(self.to_dict(timing), indent=1)


def exhaustive_rates(results: list) -> dict:
    """The exhaustive searches' own rate, apart from the budget-capped ones (whose memo is warmer); CPU time is
    each search's own (:attr:`ExploreResult.cpu_seconds`, in its worker)."""
    done = [r for r in results if r.complete]
    cpu = sum(r.cpu_seconds for r in done)
    states = sum(r.states for r in done)
    out = {"complete": len(done), "complete_states": states, "complete_cpu_seconds": round(cpu, 2),
           "complete_states_per_cpu_second": round(states / cpu) if cpu else 0,
           "bounded": len(results) - len(done),
           "bounded_cpu_seconds": round(sum(r.cpu_seconds for r in results if not r.complete), 2)}
    # A 2M state costs tens of 4K ones (512 pages per step), so the mixed rate alone would hide either.
    for size, large in (("4k", False), ("2m", True)):
        part = [r for r in done if r.space.config().large_folios == large]
        cpu_part = sum(r.cpu_seconds for r in part)
        out[f"complete_{size}"] = len(part)
        out[f"complete_{size}_states_per_cpu_second"] = round(sum(r.states for r in part) / cpu_part) if cpu_part else 0
    return out


def space_dict(space: Space) -> dict:
    return {"design": space.design, "arch": space.arch, "mode": space.mode, "switches": list(space.switches),
            "offsets": space.offsets, "secret": space.secret, "cpus": space.cpus, "memory": space.memory,
            "seed": space.seed, "write": space.write, "large_folios": space.large_folios,
            "batch_flush": space.batch_flush, "close": space.close, "interleave": space.interleave,
            "skip": list(space.skip)}


def replay(scenario_steps, setup: dict) -> System:
    """Run step dicts on a fresh System built from a scenario-style ``setup`` (``designs`` or ``design``,
    arch, mode, memory, cpus, seed, switches, write, large_folios, batch_flush, fwb)."""
    design = setup.get("design") or (setup.get("designs") or ["filemap"])[0]
    kw = {k: setup[k] for k in ("arch", "mode", "memory", "cpus", "seed", "write", "large_folios", "batch_flush",
                                "fwb", "large_zap") if k in setup}
    sys = System(design=design, switches=tuple(setup.get("switches", ())), **kw)
    for st in scenario_steps:
        sys.step(**dict(st))
    return sys


def setup_of(space: Space) -> dict:
    """The scenario ``[setup]`` table for a space."""
    out = {"arch": space.arch}
    if space.mode is not None and "arm64_no_bbml2" not in space.switches:
        out["mode"] = space.mode
    out.update(memory=space.memory, cpus=space.cpus, seed=space.seed, designs=[space.design],
               switches=list(space.switches))
    if space.write != "refuse":
        out["write"] = space.write
    for key in ("large_folios", "batch_flush", "large_zap"):
        if getattr(space, key):
            out[key] = True
    if not space.fwb:
        out["fwb"] = False
    return out


def verify(ce: Counterexample) -> Counterexample:
    """Replay ``ce`` on a fresh System (trace on) and check its last step shows the property."""
    sys = replay(ce.steps, setup_of(ce.space))
    last = sys.steps[-1]
    ce.replay = [st.as_dict() for st in sys.steps]
    if PROPERTIES[ce.prop].kind == "invariant":
        ce.verified = sys.first_broken.get(ce.prop) == last.index
        ce.reason = last.broken.get(ce.prop, "not broken on replay")
    else:
        ce.verified = ce.prop in replay_observations(last)
        ce.reason = f"step {last.index}: {describe_step(last)}"
    return ce


def replay_observations(step) -> frozenset:
    """What a replayed step shows; a racing read that reached a page counts as the leak the search saw."""
    racing = [(None, step.interrupt)] if step.interrupt in ("ok", "stale") else []
    return observe(step, {None: "guest-secret"}, racing)


def describe_step(step) -> str:
    bits = [f"{step.op} -> {step.result}"]
    if step.interrupt is not None:
        bits.append(f"racing read at {step.args.get('interrupt_at')} by CPU {step.args.get('interrupt_cpu')}: "
                    f"{step.interrupt}")
    if step.saw is not None:
        bits.append(f"saw {step.saw}")
    for name in ("oops", "stale_reads", "warns"):
        if step.counters.get(name):
            bits.append(f"{name}+{step.counters[name]}")
    return "; ".join(bits)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def scenario_name(ce: Counterexample) -> str:
    sp = ce.space
    parts = ["EXPLORE", sp.design, sp.arch] + ([sp.mode] if sp.mode else []) + list(sp.switches) + [ce.prop]
    return "-".join(parts).upper().replace("_", "-")


def scenario_toml(ce: Counterexample) -> str:
    """The counterexample as a scenario file that ``nbmodel run`` replays to the same violation."""
    prop = PROPERTIES[ce.prop]
    n = len(ce.steps)
    lines = [f"name = {_toml_value(scenario_name(ce))}",
             f"purpose = {_toml_value(f'shortest path found by nbmodel explore to {prop.key} ({prop.name})')}",
             "", "[setup]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in setup_of(ce.space).items()]
    for st in ce.steps:
        lines += ["", "[[step]]"] + [f"{k} = {_toml_value(v)}" for k, v in st.items()]
    for table in _expectations(ce, n):
        lines += ["", "[[expect]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _expectations(ce: Counterexample, n: int) -> list[dict]:
    why = PROPERTIES[ce.prop].text
    if PROPERTIES[ce.prop].kind == "invariant":
        return [{"invariant": ce.prop, "held": False, "why": why}, {"invariant": ce.prop, "broken_at": n}]
    last = ce.replay[-1] if ce.replay else {}
    if ce.prop == "eperm":
        return [{"step": n, "result": "EPERM", "why": why}]
    if ce.prop == "leak" and last.get("interrupt") in ("ok", "stale"):
        return [{"step": n, "interrupt": last["interrupt"], "why": why}]
    if ce.prop == "leak":
        return [{"step": n, "saw": last.get("saw", ""), "why": why}]
    counter = {"oops": "oops", "warn": "warns"}[ce.prop]
    events = {"oops": ["oops("], "warn": ["warn("]}[ce.prop]
    return [{"step": n, "events": events, "why": why}, {"counter": counter, "at_least": 1}]


__all__ = ["Counterexample", "ExploreResult", "replay", "setup_of", "verify", "scenario_toml", "scenario_name",
           "exhaustive_rates"]
