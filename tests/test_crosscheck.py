"""The live cross-check (nbmodel.crosscheck): exact per-fault judgement on traces recorded from the real kernel
(tests/fixtures/, recorded on Linux 6.18 x86-64 with memfd_secret), the wrong models it must fail, the per-boot
ledger, and one live run that skips cleanly without memfd_secret, readable PFNs or x86-64."""

from __future__ import annotations

import json
import pathlib

import pytest

from nbmodel import crosscheck as cc
from nbmodel.kernel import Kernel
from nbmodel.pagetable import LEVEL_1G
from nbmodel.physmem import MemoryMap

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
BIG = FIXTURES / "crosscheck-secretmem-1G.json"          # 262144 faults; the kernel split three 1G leaves
SMALL = FIXTURES / "crosscheck-secretmem-32M-2rounds.json"


def _trace(path):
    return json.loads(path.read_text())


def test_replay_splits_each_region_once():
    """No kernel needed: the replay of secretmem faults on the model."""
    k = Kernel("x86", memory=MemoryMap.of([(0x100, 0x40000 * 3)]), trace=False)
    pfns = [0x40000 + 5, 0x40000 + 6, 0x40000 + 600, 0x80000 + 1]
    got = cc.replay(k, pfns)
    assert got == [(1, 1), (0, 0), (1, 0), (1, 1)]
    assert cc.release(k, pfns) == 0
    assert k.counters["DirectMap4k"] >= 3 * 2048


def test_the_model_matches_the_recorded_kernel_exactly():
    """Every judged fault equal: the ledger's regions, regions touched earlier, and every 2M region inside the
    three 1G leaves the kernel split during the run (each split once, at its first fault)."""
    r = cc.judge_trace(_trace(BIG))
    print(r.report())
    assert r.verdict == "PASS" and r.ok
    rd = r.rounds[0]
    assert rd.kernel["direct_map_level3_splits"] == 3 and rd.judged > 250_000 and rd.unknown_regions < 20
    assert not rd.mismatches


def test_two_rounds_with_ledger_judge_the_second_round_from_the_first():
    r = cc.judge_trace(_trace(SMALL))
    assert r.verdict == "PASS"
    assert r.rounds[1].unknown_regions <= 2 and r.rounds[1].judged >= r.rounds[1].pages - 2


def _double(k, pfns):
    return [(2 * a, 2 * b) for a, b in cc.replay(k, pfns)]


def _never_split_1g(k, pfns):
    out = []
    for p in pfns:
        out += [(0, 0)] if k.dmap.pt.leaf(p)[0] == LEVEL_1G else cc.replay(k, [p])
    return out


def _split_every_fault(k, pfns):
    return [(1, b) for _, b in cc.replay(k, pfns)]


@pytest.mark.parametrize("wrong", [_double, _never_split_1g, _split_every_fault],
                         ids=["double-counts", "never-splits-1G", "splits-every-fault"])
def test_wrong_models_fail(wrong):
    r = cc.judge_trace(_trace(BIG), replay_fn=wrong)
    print(r.report())
    assert r.verdict == "FAIL" and not r.ok
    assert r.rounds[0].mismatches


def test_nothing_judged_is_not_a_pass():
    """One fault in a region of unknown state: nothing can be judged, and that is said, not PASSed."""
    t = _trace(BIG)
    first = t["rounds"][0]["pfn_runs"][0][0]
    t["ledger"] = {}
    t["rounds"] = [{"pfns": [first], "kernel_at": [[0, 0]], "populate": dict.fromkeys(
        ("direct_map_level2_splits", "direct_map_level3_splits", "DirectMap4k", "DirectMap2M", "DirectMap1G"), 0),
        "freed": dict.fromkeys(("direct_map_level2_splits", "direct_map_level3_splits", "direct_map_level2_collapses",
                                "direct_map_level3_collapses", "DirectMap4k"), 0)}]
    r = cc.judge_trace(t)
    assert r.verdict == "NOT JUDGED" and not r.ok
    assert "not judged: 1 regions of unknown state" in r.report()
    assert "PASS:" not in r.report()


def test_ledger_is_per_boot_and_never_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(cc, "boot_id", lambda: "boot-a")
    led = cc.Ledger.load(tmp_path / "c")
    assert led.split_2m == set()
    led.split_2m |= {5, 7}
    led.split_1g.add(0)
    led.save()
    assert oct((tmp_path / "c").stat().st_mode & 0o777) == "0o700"
    assert cc.Ledger.load(tmp_path / "c").split_2m == {5, 7}
    monkeypatch.setattr(cc, "boot_id", lambda: "boot-b")          # a reboot: a fresh ledger
    assert cc.Ledger.load(tmp_path / "c").split_2m == set()
    (tmp_path / "ro").write_text("a file, not a directory")
    bad = cc.Ledger.load(tmp_path / "ro" / "sub")
    bad.split_2m.add(1)
    bad.save()
    assert "not written" in bad.note


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cc.cache_dir() == tmp_path / "nbmodel"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cc.cache_dir() == tmp_path / "h" / ".cache" / "nbmodel"


@pytest.mark.live
def test_crosscheck_against_the_running_kernel(tmp_path):
    r = cc.crosscheck(8 << 20, rounds=2, ledger_dir=tmp_path)
    if r.skipped:
        pytest.skip(r.skipped)
    print(r.report())
    assert r.ok, r.report()
    assert all(rd.pages == 2048 for rd in r.rounds)
