"""The views: page-table diagrams, state tables, the folio stepper, filmstrips and the side-by-side stepper.

Latency figures are printed (run with ``-s`` to see them), never asserted: they depend on the machine.
"""

from __future__ import annotations

import re

import pytest

from nbmodel.errors import ModelInputError
from nbmodel.kernel import Kernel
from nbmodel.system import System
from nbmodel.viz import state_view as sv
from nbmodel.viz.filmstrip import Filmstrip, filmstrip, from_stepper
from nbmodel.viz.pagetable_view import FILL, Mark, folio_marks, pagetable_graph, pagetable_svg
from nbmodel.viz.sidebyside import (
    SWITCH_DEMOS,
    LockStep,
    lockstep,
    lockstep_filmstrip,
    side_by_side,
    switch_demo,
)
from nbmodel.viz.stepper import (
    FOLIOS_64,
    SCENARIOS,
    SECRET_WINDOW,
    WALK,
    FolioStepper,
    Stepper,
    latency_summary,
    measure_latency,
)

ONE_G = 1 << 18  # pages


def _zap_one_page_in_1g(arch="x86", mode=None):
    k = Kernel(arch, mode, memory="8G", cpus=2)
    pfn = 5 * ONE_G + 12345  # inside the 1G leaf at 5 GiB
    assert k.dmap.pt.leaf(pfn)[0] == ONE_G
    addr = k.page_address(pfn)
    assert k.set_direct_map_invalid_noflush(addr) == 0
    k.flush_tlb_kernel_range(addr, addr + 4096)
    return k, pfn


# -- page-table view ------------------------------------------------------------------------------------------
def test_x86_zap_in_1g_leaf_shows_split_1g_and_invalid_4k():
    k, pfn = _zap_one_page_in_1g()
    dot = pagetable_graph(k, [Mark("page", pfn)]).source
    assert "was a 1G leaf: split" in dot
    assert "was a 2M leaf: split" in dot
    assert re.search(rf"PTE\[\d+\]\n4K leaf INVALID\npfn {pfn:#x}", dot)
    assert FILL["invalid"] in dot and FILL["split"] in dot
    out = pagetable_svg(k, [Mark("page", pfn)])
    assert out.startswith("<svg")
    assert "was a 1G leaf: split" in out and "4K leaf INVALID" in out
    assert FILL["invalid"] in out  # the invalid leaf's fill colour reaches the SVG


def test_arm64_bbml2_zap_shows_the_split_chain_and_rodata_full_shows_no_split():
    k, pfn = _zap_one_page_in_1g("arm64", "bbml2")
    dot = pagetable_graph(k, [Mark("page", pfn)]).source
    assert "was a 1G leaf: split" in dot and "was a 2M leaf: split" in dot
    assert "4K page INVALID" in dot
    assert "contPTE 4K valid" in dot or "contPMD 2M block valid" in dot  # siblings keep their contiguous bit
    kinds = [str(e) for e in k.trace if e.kind == "split"]
    assert [e.split("into=")[1].rstrip(")") for e in kinds] == ["contPMD", "2M", "contPTE", "4K"]

    r = Kernel("arm64", "rodata-full", memory="8G", cpus=2)
    pfn = 5 * ONE_G + 12345
    r.set_direct_map_invalid_noflush(r.page_address(pfn))
    dot = pagetable_graph(r, [Mark("page", pfn)]).source
    assert "split" not in dot.replace("siblings", "")
    assert "4K page INVALID" in dot


def test_view_marks_cached_folios_and_stale_tlb_entries():
    s = System(design="filemap", switches=["skip_flush"])
    for st in SWITCH_DEMOS["skip_flush"][1][:2]:
        s.step(**st)
    marks = folio_marks(s)
    assert [m.label for m in marks] == ["g:0", "g:1"]
    dot = pagetable_graph(s).source
    assert "STALE in TLB of CPU 0" in dot
    assert FILL["stale"] in dot
    panel = sv.folio_table(s)
    assert "(stale)" in panel


def test_view_is_deterministic_and_compact_for_64_folios():
    a, b = Stepper(FOLIOS_64, design="filemap"), Stepper(FOLIOS_64, design="filemap")
    a.goto(2)
    b.goto(2)
    sa, sb = pagetable_svg(a.system), pagetable_svg(b.system)
    assert sa == sb
    assert sa.count('class="node"') < 20  # 64 folios, a handful of nodes


# -- state tables -----------------------------------------------------------------------------------------------
def test_state_panel_shows_private_bit_tlb_and_invariants():
    s = Stepper(WALK, design="per-folio")
    s.goto(4)  # after the user fault: zeroed, zapped, bit set
    html = sv.state_panel(s.system, s.marks())
    assert "NO_DIRECT_MAP (bit 0)" in html
    assert "unmapped_while_cached" in html and "broken at step 2" in html
    assert "CPU 1" in html
    assert " at 0x" not in html  # no Python object addresses


# -- event chips ------------------------------------------------------------------------------------------------
def _chip_spans(text: str, keys) -> dict:
    """Cut a chip's text ``kind(k1=... k2=...)`` into each argument's span, knowing the argument names."""
    inner = text[text.index("(") + 1:-1]
    spans, rest = {}, inner
    keys = list(keys)
    for key, nxt in zip(keys, keys[1:] + [None], strict=True):
        assert rest.startswith(f"{key}="), (text, key)
        rest = rest[len(key) + 1:]
        end = rest.index(f" {nxt}=") if nxt else len(rest)
        spans[key], rest = rest[:end], rest[end + 1:]
    return spans


def _expand(span: str, n: int) -> list[str] | set[str]:
    """The values a span stands for: a range gives the sequence, a list gives the set it names."""
    if ".." in span and "," not in span:
        lo, hi = (int(x, 0) for x in span.split(".."))
        step = 1 if hi >= lo else -1
        return [str(v) for v in range(lo, hi + step, step)]
    if "," in span:
        head = span.split(" (")[0]
        return set(head.split(",")) - {"..."}
    return [span] * n


def _all_steps(script, **config):
    s = Stepper(script, **config)
    s.run_all()
    return s.system.steps


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("design", ["per-folio", "filemap", "secretmem"])
def test_event_chips_never_hide_distinct_events(name, design):
    """Every merged chip stands for exactly the events it merged: identical events show their one text; runs
    that differ show each argument's range or values, and expanding the chip gives back every event's arguments."""
    from nbmodel.trace import show_value

    merged = 0
    for step in _all_steps(SCENARIOS[name], design=design):
        events = list(step.events)
        i = 0
        for text, n, kind in sv.compress_events(events, limit=10_000):
            run = events[i:i + n]
            i += n
            assert all(e.kind == kind for e in run)
            if n == 1 or len({str(e) for e in run}) == 1:
                assert text == str(run[0])
                continue
            merged += 1
            for key, span in _chip_spans(text, run[0].args).items():
                actual = [show_value(key, e.args[key]) for e in run]
                claimed = _expand(span, n)
                if isinstance(claimed, set):  # a list: every value it names is there, nothing else
                    assert claimed <= set(actual) and (len(claimed) == len(set(actual)) or "..." in span)
                    assert span.split(",")[0] == actual[0]
                else:
                    as_int = [str(int(v, 0)) if v[:1].isdigit() else v for v in actual]
                    assert claimed == as_int, (text, key, actual)
        assert i == len(events)
    assert merged or name != "64 folios"


def test_punch_hole_chips_show_three_indices_and_three_pfns():
    steps = _all_steps(WALK, design="per-folio")
    chips = sv.compress_events(steps[-1].events, limit=100)
    deletes = [(t, n) for t, n, k in chips if k == "delete"]
    assert deletes and deletes[0][1] == 3
    assert "index=0..2" in deletes[0][0]
    pfns = {e.get("pfn") for e in steps[-1].events if e.kind == "delete"}
    assert len(pfns) == 3 and all(f"{p:#x}" in deletes[0][0] for p in pfns)
    html = sv.timeline(steps[-1].events)
    assert "&#215;3" in html and "index=0..2" in html


def test_identical_events_merge_to_their_own_text():
    from nbmodel.trace import Event

    same = [Event("flush", {"start": 0, "pages": 1})] * 4
    assert sv.compress_events(same) == [("flush(start=0 pages=1)", 4, "flush")]
    mixed = [Event("flush", {"start": 0}), Event("flush", {"pages": 1})]  # different argument names
    assert [n for _, n, _ in sv.compress_events(mixed)] == [1, 1]
    many = [Event("free", {"pfn": p}) for p in (0x10, 0x30, 0x20, 0x50, 0x40)]
    (text, n, _), = sv.compress_events(many)
    assert n == 5 and text == "free(pfn=0x10,0x30,...,0x40 (5 values))"
    down = [Event("zap", {"pfn": p}) for p in (0x12, 0x11, 0x10)]
    assert sv.compress_events(down)[0][0] == "zap(pfn=0x12..0x10)"


# -- the stepper --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("design", ["per-folio", "filemap", "secretmem"])
def test_stepper_back_equals_fresh_replay(design):
    s = Stepper(WALK, design=design)
    s.goto(6)
    s.back()
    fresh = System(design=design)
    for spec in WALK[:5]:
        spec = dict(spec)
        fresh.step(spec.pop("op"), **spec)
    assert s.pos == 5
    assert s.system.snapshot() == fresh.snapshot()
    assert [x.as_dict() for x in s.system.steps] == [x.as_dict() for x in fresh.steps]
    s.forward()
    again = Stepper(WALK, design=design)
    again.goto(6)
    assert s.system.snapshot() == again.system.snapshot()


def test_stepper_configure_replays_to_same_position_and_rejects_bad_settings():
    s = Stepper(WALK, design="per-folio")
    s.goto(3)
    s.configure(design="filemap")
    assert s.pos == 3 and s.system.config.design == "filemap"
    with pytest.raises(ModelInputError):
        s.configure(switches=("arm64_no_bbml2",))  # x86 has no BBML2
    assert s.system.config.design == "filemap" and s.pos == 3


def test_stepper_add_and_remove_steps():
    s = Stepper([])
    s.add("gmem_create", file="g", size="64K")
    step = s.add("fallocate", file="g", len="4K")
    assert step.result == "0" and s.total == 2 and s.pos == 2
    with pytest.raises(ModelInputError):
        s.add("fallocate", file="nope", len="4K")
    assert s.total == 2
    s.remove_last()
    assert s.total == 1 and s.pos == 1


def test_refused_add_changes_nothing_mid_scenario():
    s = Stepper(WALK, design="per-folio")
    s.goto(2)
    before = (list(s.script), s.pos, s.system.snapshot(), [x.as_dict() for x in s.system.steps])
    with pytest.raises(ModelInputError, match="size"):
        s.add("fallocate", file="g", offset="abc")
    with pytest.raises(ModelInputError):
        s.add("no_such_op")
    assert (list(s.script), s.pos, s.system.snapshot(), [x.as_dict() for x in s.system.steps]) == before
    s.forward()
    assert s.pos == 3 and s.total == len(WALK)
    s.run_all()
    assert s.pos == len(WALK)
    # an accepted add still cuts the rest of the script at the position it was made
    s.goto(2)
    s.add("kernel_read", file="g", offset=0, cpu=1)
    assert s.total == 3 and s.pos == 3 and s.script[:2] == WALK[:2]


def test_widget_steps_forward_and_back():
    w = FolioStepper(scenario=next(iter(SCENARIOS)))
    assert w.core.pos == 0
    w.click("step")
    w.click("step")
    assert w.core.pos == 2 and "fallocate" in w.status.value
    w.click("back")
    assert w.core.pos == 1
    w.design.value = "filemap"
    assert w.core.config["design"] == "filemap" and w.core.pos == 1
    w.click("end")
    assert w.core.pos == len(WALK)
    assert "<svg" in w.picture.value
    assert "FolioStepper(filemap on x86 4-level, step 9/9)" == repr(w)
    assert repr(w.widget) == repr(w)  # the text/plain of the displayed widget: no model id, stable
    w.op.value = "kernel_read"
    w.args.value = "file=g offset=4K cpu=1"
    w.click("add")  # punch hole keeps the file, so g is still there
    assert w.core.total == len(WALK) + 1


def test_widget_refused_add_keeps_the_scenario_usable():
    name = "one folio's life (fallocate, faults, write, punch hole)"
    w = FolioStepper(scenario=name)
    w.click("step")
    w.click("step")
    w.op.value = "fallocate"
    w.args.value = "file=g offset=abc"
    w.click("add")
    assert "not changed" in w.status.value
    assert w.core.total == len(WALK) and w.core.pos == 2 and w.scenario.value == name
    assert not w.b_fwd.disabled and not w.b_end.disabled
    w.click("step")
    assert w.core.pos == 3 and f"step 3 / {len(WALK)}" in w.status.value
    w.click("end")
    assert w.core.pos == len(WALK)
    # a good add makes the script custom; picking the scenario again brings it back whole
    w.op.value = "kernel_read"
    w.args.value = "file=g offset=4K cpu=1"
    w.click("add")
    assert w.scenario.value == "(custom)" and w.core.total == len(WALK) + 1
    w.scenario.value = name
    assert w.core.script == WALK and w.core.pos == 0 and not w.b_fwd.disabled


# -- filmstrip ------------------------------------------------------------------------------------------------------
def test_filmstrip_has_one_frame_per_step():
    fs = filmstrip(WALK, design="per-folio")
    assert isinstance(fs, Filmstrip) and len(fs) == len(WALK)
    out = fs._repr_html_()
    assert out.count('type="radio"') == len(WALK)
    assert out.count(f'class="{fs.prefix}-frame ') == len(WALK)
    assert "<script" not in out and "http" not in out.replace('xmlns="http://www.w3.org/2000/svg"', "") \
        .replace('xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    assert out == filmstrip(WALK, design="per-folio")._repr_html_()  # deterministic
    assert f'id="{fs.prefix}-1" checked' in out
    third = filmstrip(WALK, design="per-folio", start=3)
    assert f'id="{third.prefix}-3" checked' in third._repr_html_()
    w = FolioStepper(scenario="memfd_secret: read just after the insert", design="secretmem")
    assert len(from_stepper(w)) == len(SECRET_WINDOW)


# -- side by side -----------------------------------------------------------------------------------------------------
def test_side_by_side_marks_first_divergence():
    ls = lockstep(WALK)
    assert ls.labels == ["per-folio", "filemap", "secretmem"]
    assert ls.first_divergence() == 2  # fallocate: v12 caches the folio with a valid direct map
    assert ls.diverging_columns(2) == [1, 2]
    assert "first divergence at step 2" in ls.table_html()

    secret = lockstep(SECRET_WINDOW)
    assert secret.first_divergence() == 3
    row = secret.rows()[2]
    assert [st.interrupt for st in row] == ["oops", "oops", "stale"]


def test_side_by_side_stepping_and_filmstrip():
    ls = LockStep(SECRET_WINDOW)
    ls.goto(2)
    assert ls.first_divergence() is None
    ls.forward()
    assert ls.first_divergence() == 3
    ls.back()
    assert ls.pos == 2 and ls.first_divergence() is None
    fs = lockstep_filmstrip(SECRET_WINDOW)
    assert len(fs) == len(SECRET_WINDOW)


def test_side_by_side_widget_steps_and_jumps_to_first_divergence():
    w = side_by_side(WALK, diagrams=False)
    assert w.core.pos == 0
    w.click("first")
    assert w.core.pos == 2 and "first divergence" in w.table.value
    w.click("step")
    w.click("back")
    w.click("back")
    assert w.core.pos == 1
    assert repr(w.widget) == "SideBySide(per-folio, filemap, secretmem; step 1/9)"


@pytest.mark.parametrize("name", sorted(SWITCH_DEMOS))
def test_every_switch_demo_diverges(name):
    ls = switch_demo(name)
    first = ls.first_divergence()
    assert first is not None, f"{name}: switching it on changed no outcome"
    _, with_switch = ls.rows()[first - 1]
    bad = with_switch.broken or with_switch.result not in ("0", "ok") or any(
        with_switch.counters.get(c) for c in ("oops", "stale_reads", "warns", "freed_unmapped", "restore_splits"))
    assert bad


# -- latency (printed, not asserted) ---------------------------------------------------------------------------
@pytest.mark.parametrize("config", [{"design": "per-folio"}, {"design": "filemap"},
                                    {"design": "filemap", "arch": "arm64"},
                                    {"design": "filemap", "arch": "arm64", "mode": "bbml2"}])
def test_print_stepper_latency_64_folios(config, capsys):
    rows = measure_latency(FOLIOS_64, **config)
    assert len(rows) == 2 * len(FOLIOS_64)
    with capsys.disabled():
        print(f"\nstepper latency, 64-folio scenario, {config} (wall clock, this machine):")
        print(latency_summary(rows))


def test_predicted_vs_measured_plot_draws_both_figures_per_kind():
    from nbmodel import costmodel
    from nbmodel.realkernel import ProbeResult
    from nbmodel.viz import plots
    probes = [ProbeResult("guest_memfd", 1 << 20, 256, ns_net_median=3000.0),
              ProbeResult("secretmem", 1 << 20, 256, ns_net_median=13000.0)]
    rows = costmodel.compare_with_probe(probes, cpus=2)
    fig = plots.predicted_vs_measured(rows)
    predicted, measured = fig.axes[0].containers
    assert [b.get_height() for b in predicted] == [r.predicted_ns for r in rows]
    assert [b.get_height() for b in measured] == [3000.0, 13000.0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["guest_memfd", "secretmem"]


def test_lockstep_outcomes_do_not_repeat_the_result_as_a_counter():
    from types import SimpleNamespace

    from nbmodel.viz.sidebyside import describe_outcome

    def step(result, interrupt=None, **counters):
        return SimpleNamespace(result=result, saw=None, interrupt=interrupt, broken={}, counters=counters)

    assert describe_outcome(step("oops", oops=1)) == "oops"
    assert describe_outcome(step("oops", oops=2)) == "oops; 1 more oops"
    assert describe_outcome(step("0", interrupt="stale", stale_reads=1, warns=1)) == "0; interrupt: stale; warns +1"
    assert describe_outcome(step("0", oops=1)) == "0; oops +1"  # an oops the result does not name is listed
    seen = 0
    for name in SWITCH_DEMOS:
        html = switch_demo(name).table_html()
        seen += html.count("oops")
        assert "oops; oops" not in html and "stale; stale_reads" not in html, name
    assert seen  # the demos do show oopses


def test_widget_arch_switch_shows_an_arm64_machine_never_an_x86_mode():
    w = FolioStepper(scenario="zap one page: the direct map splits", start=3)
    x86_picture = w.picture.value
    w.arch.value = "arm64"
    assert list(w.mode.options) == ["rodata-full", "bbml2", "no-set-direct-map"]
    assert w.mode.value in w.mode.options and w.core.config["arch"] == "arm64"
    assert "on arm64" in w.status.value and "4-level" not in w.status.value
    assert w.picture.value != x86_picture and "PML4" not in w.picture.value  # an arm64 tree, not the x86 one
    assert w.core.pos == 3
    w.mode.value = "bbml2"
    assert "bbml2" in w.core.label().lower() or "BBML2" in w.core.label()
    w.arch.value = "x86"
    assert list(w.mode.options) == ["4-level", "5-level", "nogbpages"] and "on x86" in w.status.value
