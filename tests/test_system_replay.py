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
    assert copy.deepcopy(s.k).trace == trace                 # Kernel.clone() keeps it
    assert s.steps[1].events == trace[len(trace) - len(s.steps[1].events):]
