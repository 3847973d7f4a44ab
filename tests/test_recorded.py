"""Chapter 7's kernel figures come from recordings (``benchmarks/probes-6.18.json``,
``benchmarks/crosscheck-6.18.json``) unless the reader opts in: the recordings read back exactly as written,
the book's functions never open /dev/kvm nor call memfd_secret without the opt-in, and with it they probe live.
"""

import json
import os
import pathlib

import pytest

from nbmodel import bench, costmodel, crosscheck, realkernel
from nbmodel.viz import plots

SMALL = pathlib.Path(__file__).parent / "fixtures" / "crosscheck-secretmem-32M-2rounds.json"


class Probed(AssertionError):
    """Raised by the guards below: something tried to probe the running kernel."""


@pytest.fixture
def no_kernel(monkeypatch):
    """Every way this package reaches the kernel's probes raises :class:`Probed`: the probe functions, the
    openers, the memfd_secret syscall (``libc``), the cross-check's recording, and ``os.open("/dev/kvm")``."""
    monkeypatch.delenv("NBMODEL_LIVE", raising=False)

    def refuse(*a, **k):
        raise Probed("the book probed the kernel")

    for name in ("probe", "probe_all", "record_probes", "open_secretmem", "open_guest_memfd", "libc", "mapped"):
        monkeypatch.setattr(realkernel, name, refuse)
    monkeypatch.setattr(realkernel, "OPENERS", dict.fromkeys(realkernel.KINDS, refuse))
    for name in ("record", "crosscheck", "unavailable"):
        monkeypatch.setattr(crosscheck, name, refuse)
    real_open = os.open

    def guarded_open(path, *a, **k):
        if "kvm" in str(path):
            raise Probed(f"opened {path}")
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", guarded_open)


# -- round trips --------------------------------------------------------------------------------------------------
def _made_up_record() -> realkernel.ProbeRecord:
    """A record with every field away from its default (tuples, None, floats with many digits, PFNs)."""
    full = realkernel.ProbeResult(
        "secretmem", 8192, 2, None, 14175.123456789, 13160.5, 24787.0, 127.25, 14047.873456789, 13040.0,
        populate={"direct_map_level2_splits": 1, "DirectMap4k": 2048}, freed={"DirectMap4k": 0},
        before={"DirectMap1G": 1 << 20}, pfns=[0x1234, 0x1235], split_at=[(1, 0), (0, 0)],
        split_fault_ns=41000.5, plain_fault_ns=None)
    skipped = realkernel.ProbeResult("guest_memfd", 8192, 2, skipped="/dev/kvm: No such file or directory")
    head = {"kernel": "6.18.0-test", "machine": "x86_64", "cpus": 8, "cpu_model": "Some CPU @ 3.0GHz",
            "date": "2026-01-02 03:04 UTC"}
    return realkernel.ProbeRecord([full, skipped], 8192, head, 12.345678901234)


def test_probe_record_round_trips_exactly(tmp_path):
    rec = _made_up_record()
    path = tmp_path / "probes.json"
    realkernel.save_probes(rec, path)
    back = realkernel.load_probes(path)
    assert back.results == rec.results and back.head == rec.head
    assert (back.size, back.zero_bytes_per_ns) == (rec.size, rec.zero_bytes_per_ns)
    assert back.recorded and not rec.recorded
    assert type(back.results[0].split_at[0]) is tuple
    # what the chapter computes from them is the same too
    assert realkernel.ratio_line(back) == realkernel.ratio_line(rec)
    assert costmodel.compare_with_probe(back, cpus=back.cpus) == costmodel.compare_with_probe(rec, cpus=rec.cpus)
    assert (costmodel.CostModel.from_probe(back, back.zero_bytes_per_ns, back.cpus).params ==
            costmodel.CostModel.from_probe(rec, rec.zero_bytes_per_ns, rec.cpus).params)


def test_the_committed_probe_record_reads_back_as_written(tmp_path):
    rec = realkernel.load_probes()
    assert [r.kind for r in rec] == list(realkernel.KINDS)
    assert rec.size == 16 << 20 and all(r.size == rec.size for r in rec)
    assert rec.head["kernel"].startswith("6.18") and rec.head["cpu_model"] and rec.head["date"]
    realkernel.save_probes(rec, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == pathlib.Path(realkernel.RECORDED_PROBES).read_text()


@pytest.mark.parametrize("wrong", [None, "splits-every-fault"])
def test_crosscheck_round_trips_exactly(tmp_path, wrong):
    """A judged trace (and one judged by a wrong model, so mismatches and FAIL checks are in it) survives
    save and load: every round, check and mismatch, the report and the plot's data."""
    trace = json.loads(SMALL.read_text())
    replay = crosscheck.replay if wrong is None else (
        lambda k, pfns: [(1, b) for _, b in crosscheck.replay(k, pfns)])
    cross = crosscheck.judge_trace(trace, replay_fn=replay)
    assert (cross.verdict == "PASS") == (wrong is None)
    path = tmp_path / "cross.json"
    head = {"kernel": "6.18.0-test", "machine": "x86_64", "cpus": 2, "cpu_model": "Some CPU", "date": "2026-01-02"}
    crosscheck.save_crosscheck(cross, path, head)
    got_head, back = crosscheck.load_crosscheck(path)
    assert back == cross
    assert got_head == {"version": crosscheck.TRACE_VERSION, **head, "size": cross.size}
    assert back.report() == cross.report() and (back.ok, back.verdict) == (cross.ok, cross.verdict)
    if wrong:
        assert type(back.rounds[0].mismatches[0][1]) is tuple
    assert repr(plots.live_vs_model(back)) == repr(plots.live_vs_model(cross))


def test_the_committed_crosscheck_reads_back_as_written(tmp_path):
    head, cross = crosscheck.load_crosscheck()
    assert head["size"] == 8 << 20 == cross.size and head["kernel"].startswith("6.18") and head["date"]
    assert cross.verdict == "PASS" and cross.judged > 0
    crosscheck.save_crosscheck(cross, tmp_path / "again.json", {k: head[k] for k in head if k not in ("version",
                                                                                                      "size")})
    assert (tmp_path / "again.json").read_text() == crosscheck.RECORDED_CROSSCHECK.read_text()


# -- the book path probes nothing ----------------------------------------------------------------------------
def test_the_book_functions_probe_nothing_without_the_opt_in(no_kernel):
    probes = realkernel.probes_for_book(16 << 20)
    assert probes.recorded and len(probes) == 3
    head = probes.head
    assert probes.label.startswith(f"recorded on Linux {head['kernel']}") and head["cpu_model"] in probes.label
    assert head["date"] in probes.label and "NBMODEL_LIVE=1" in probes.label
    # everything chapter 7 does with them
    realkernel.ratio_line(probes)
    here = costmodel.CostModel.from_probe(probes, probes.zero_bytes_per_ns, cpus=probes.cpus)
    assert here.params["zero_bytes_per_ns"].value == probes.zero_bytes_per_ns
    compared = costmodel.compare_with_probe(probes, cpus=probes.cpus)
    assert f"measured on {head['cpu_model']} (Linux {head['kernel']}" in costmodel.format_comparison(compared,
                                                                                                     probes.where)
    assert "recorded on" in repr(plots.predicted_vs_measured(compared, probes.short))
    cross = crosscheck.crosscheck_for_book(8 << 20)
    assert cross.report().startswith("recorded on Linux 6.18") and "8 MiB per round" in cross.report()
    plots.live_vs_model(cross)


def test_the_guard_catches_a_book_function_that_probes(no_kernel, monkeypatch):
    """The planted bug: a book function that probes (here: one that always takes the live branch) is stopped."""
    monkeypatch.setattr(realkernel, "live_opt_in", lambda live=None: True)
    with pytest.raises(Probed):
        realkernel.probes_for_book()
    with pytest.raises(Probed):
        crosscheck.crosscheck_for_book()
    with pytest.raises(Probed):  # and the raw way in, in case a probe bypasses the functions
        os.open("/dev/kvm", os.O_RDWR)


def test_speed_takes_the_recorded_probes(no_kernel, monkeypatch):
    """``bench.speed(probes=recorded)``: the recorded probes and zeroing bandwidth are used, none measured, and
    the live check says where they were recorded. (The model's own speed runs are not what is tested here.)"""
    monkeypatch.setattr(bench, "bulk_target", lambda *a, **k: {"folio_ops_per_s": 4e6, "seconds": 1.0})
    monkeypatch.setattr(costmodel, "measure_zero_bandwidth", lambda *a, **k: pytest.fail("measured, not recorded"))
    probes = realkernel.probes_for_book()
    rep = bench.speed(quick=True, probes=probes, memory=False)
    assert rep.live == [r.as_dict() for r in probes] and rep.zero_bytes_per_ns == probes.zero_bytes_per_ns
    live_check = rep.checks[-1]
    assert live_check.value is not None and "recorded on Linux 6.18" in live_check.note


# -- the opt-in probes live -------------------------------------------------------------------------------------
def test_opting_in_probes_live(monkeypatch):
    calls = []
    fake = [realkernel.ProbeResult(k, 4096, 1) for k in realkernel.KINDS]

    def probe_all(size, kinds=realkernel.KINDS):
        calls.append(("probe_all", size))
        return fake

    monkeypatch.setattr(realkernel, "probe_all", probe_all)
    monkeypatch.setattr(costmodel, "measure_zero_bandwidth", lambda: 7.5)
    monkeypatch.setattr(crosscheck, "crosscheck", lambda size: calls.append(("crosscheck", size))
                        or crosscheck.CrossCheck(size, skipped="faked"))
    monkeypatch.setenv("NBMODEL_LIVE", "1")
    got = realkernel.probes_for_book(1 << 20)
    assert got.results is fake and not got.recorded and got.zero_bytes_per_ns == 7.5
    assert got.label.startswith("measured live now") and got.head["kernel"] == os.uname().release
    cross = crosscheck.crosscheck_for_book(2 << 20)
    assert cross.provenance.startswith("measured live now") and cross.report().startswith("measured live now")
    assert calls == [("probe_all", 1 << 20), ("crosscheck", 2 << 20)]
    # live=True opts in without the variable; live=False overrides it; nothing else is a switch
    monkeypatch.delenv("NBMODEL_LIVE")
    assert realkernel.probes_for_book(live=True).results is fake
    monkeypatch.setenv("NBMODEL_LIVE", "1")
    assert realkernel.probes_for_book(live=False).recorded
    monkeypatch.setenv("NBMODEL_LIVE", "yes")
    assert realkernel.probes_for_book().recorded
    with pytest.raises(TypeError):
        realkernel.probes_for_book(live="yes")
    assert len(calls) == 3
