"""A trace can be replayed and compared; steps are deterministic for a seed."""

from nbmodel.system import System

STEPS = [dict(op="gmem_create", file="g", size="64K"), dict(op="fallocate", file="g", len="16K"),
         dict(op="user_fault", file="g", offset="4K"), dict(op="kernel_read", file="g", offset="4K", cpu=1),
         dict(op="punch_hole", file="g", len="8K"), dict(op="close", file="g")]


def run(design, seed=4, **kw):
    s = System(design, memory="4G", cpus=2, seed=seed, **kw)
    s.run(STEPS)
    return s


def test_replay_gives_identical_trace_and_state():
    for design in ("per-folio", "filemap", "secretmem"):
        s = run(design)
        r = s.replay()
        assert r.trace_text() == s.trace_text() and r.snapshot() == s.snapshot()


def test_replay_prefix_equals_running_prefix():
    s = run("filemap")
    part = System("filemap", memory="4G", cpus=2, seed=4)
    part.run(STEPS[:3])
    assert s.replay(3).snapshot() == part.snapshot()


def test_different_seed_changes_pfns_not_results():
    a, b = run("filemap", seed=1), run("filemap", seed=2)
    assert [st.result for st in a.steps] == [st.result for st in b.steps]
    assert a.trace_text() != b.trace_text()


def test_step_records_events_and_counter_deltas():
    s = run("filemap")
    falloc = s.steps[1]
    kinds = [e.kind for e in falloc.events]
    assert kinds.count("insert") == 4 and kinds.count("zap") == 4
    assert falloc.counters["zaps"] == 4
    assert s.steps[3].result == "oops" and s.steps[3].saw is None
    assert s.invariant_status()["unmapped_while_cached"] == "held"


def test_every_emitted_event_kind_is_documented():
    from nbmodel import scenario
    from nbmodel.trace import EVENT_KINDS

    seen = set()
    for path in sorted(scenario.find_files(["scenarios"])):
        for run in scenario.run(scenario.load(path)):
            for st in run.system.steps:
                seen.update(e.kind for e in st.events)
    assert seen <= set(EVENT_KINDS), seen - set(EVENT_KINDS)
    assert {"zap", "restore", "split", "flush", "insert", "delete", "oops", "stale"} <= seen


def test_trace_keeps_kinds_and_dicts_and_hands_out_events():
    import copy
    import gc

    from nbmodel.trace import Event, Trace

    s = System(design="filemap", memory="1G")
    s.step("gmem_create", file="g", size="64K")
    s.step("fallocate", file="g", len="16K")
    trace = s.k.trace
    assert isinstance(trace, Trace) and len(trace) == len(trace.kinds) == len(trace.args) > 8
    assert type(trace[0]) is Event and trace[0] == (trace.kinds[0], trace.args[0])
    assert all(type(e) is Event for e in trace) and [str(e) for e in reversed(trace)] == [str(e) for e in trace][::-1]
    assert isinstance(trace[2:5], Trace) and [e.kind for e in trace[2:5]] == trace.kinds[2:5]
    assert trace[2:5] == list(trace)[2:5] and trace[2:5] != list(trace)[2:6]
    assert str(trace[-1]).startswith(trace[-1].kind) and trace[-1].get("pfn") is not None
    gc.collect()
    assert not any(gc.is_tracked(a) for a in trace.args)   # nothing per event for the collector to walk
    assert copy.deepcopy(s.k).trace == trace                 # a copied kernel keeps it
    assert s.steps[1].events == trace[len(trace) - len(s.steps[1].events):]


def _eager_deltas(steps, touch_between):
    """Each step's counter delta worked out the old way (a copy before, a difference after), with the counters
    bumped by hand between some steps, as a notebook may do."""
    s = System("filemap", memory="4G", cpus=2, seed=4)
    out = []
    for i, st in enumerate(steps):
        if i in touch_between:
            s.k.counters["warns"] += 1
        before = dict(s.k.counters)
        step = s.step(**st)
        out.append((step, s.k.counters.delta(before)))
    return s, out


def _lazy_counters_agree(steps, touch_between=(2, 3)) -> bool:
    _, pairs = _eager_deltas(steps, set(touch_between))
    return all(step.counters == eager for step, eager in pairs)


def test_a_steps_counters_are_worked_out_when_read_and_equal_the_eager_delta():
    steps = STEPS + [dict(op="gmem_create", file="h", size="8K"), dict(op="kernel_read", file="h", offset=0)]
    assert _lazy_counters_agree(steps)
    s, pairs = _eager_deltas(steps, {2, 3})
    assert any(step.counters for step, _ in pairs) and any(not step.counters for step, _ in pairs)
    assert s.steps[1] == s.replay().steps[1] and s.steps[1] != s.steps[2]
    assert "counters={'DirectMap4k'" in repr(s.steps[1])


def test_values_delta_pairs_names_with_values_and_counts_a_name_added_since_from_zero():
    from nbmodel.counters import values_delta
    assert values_delta(("a", "b", "c"), (1, 2, 3), (1, 5, 3)) == {"b": 3}
    assert values_delta(("a", "b", "c"), (1, 2), (0, 2, 4)) == {"a": -1, "c": 4}
    assert values_delta(("a", "b", "c"), (1, 2), (1, 2, 0)) == {}


def _planted(monkeypatch, method: str, old: str, new: str) -> None:
    """Replace ``System.<method>`` by its own source with ``old`` changed to ``new`` (a planted bug)."""
    import inspect
    import textwrap

    import nbmodel.system as system_mod
    src = textwrap.dedent(inspect.getsource(getattr(System, method)))
    assert src.count(old) == 1, old
    ns: dict = {}
    exec(src.replace(old, new), vars(system_mod), ns)  # noqa: S102 - the package's own code, one line changed
    monkeypatch.setattr(System, method, ns[method])


def test_the_lazy_counters_check_catches_a_step_that_trusts_its_last_copy(monkeypatch):
    """Planted: System.step takes the copy the last step left as its "before" without comparing it with the
    counters now; a counter bumped by hand between steps then shows in the next step's delta."""
    _planted(monkeypatch, "step", "self._counters_seen == values", "True")
    assert not _lazy_counters_agree(STEPS)


def _memo_tells_bool_from_int() -> bool:
    from nbmodel.errors import ModelInputError

    s = System("filemap", memory="4G", cpus=2)
    assert s.step("set_cpu", cpu=1).result == "0"
    try:
        s.step("set_cpu", cpu=True)  # True == 1, and hashes alike: the memo must not answer for it
    except ModelInputError:
        return True
    return False


def test_validated_arguments_are_remembered_by_value_and_type():
    import pytest

    from nbmodel.errors import ModelInputError

    assert _memo_tells_bool_from_int()
    s = System("filemap", memory="4G", cpus=2)
    s.step("gmem_create", file="g", size="16K")
    a, b = s.step("fallocate", file="g", len="4K"), s.step("fallocate", file="g", len="4K")
    assert a.args == b.args and a.args is not b.args
    a.args["len"] = 0  # a reader changing one step's record changes no other
    assert s.step("punch_hole", file="g", len="4K").result == "0" and b.args["len"] == 4096
    s.step("gmem_create", file="h", size="16K", flags=["MMAP"])  # a list: not remembered, still validated
    with pytest.raises(ModelInputError, match="flags"):
        s.step("gmem_create", file="i", size="16K", flags=["MMAP", "BOGUS"])


def test_the_memo_check_catches_a_key_without_types(monkeypatch):
    """Planted: the memo keyed by the arguments' values only."""
    _planted(monkeypatch, "validate_step", ", tuple(map(type, args.values())))", ")")
    assert not _memo_tells_bool_from_int()
