"""Every scenario file holds its own expected outcome; run them all, and check the set covers what it must."""

from __future__ import annotations

import json
import pathlib

import pytest

from nbmodel import scenario as sc
from nbmodel.designs import SWITCHES

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "scenarios").glob("*.toml"))
FAILURE_RESULTS = {"oops", "stale", "SIGBUS"}
FAILURE_COUNTERS = {"warns", "oops", "stale_reads", "freed_unmapped", "restore_splits"}
FAILURE_EVENTS = ("oops(", "stale(", "warn(")


def _id(path: pathlib.Path) -> str:
    return path.stem


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_scenario_expectations_hold(path):
    scn = sc.load(path)
    runs = sc.run(scn)
    assert runs, f"{path.name} ran under no design"
    failed = [f"{r.design}/{r.arch} line {c.expect.line}: {c.expect.describe()} (got {c.got!r})"
              for r in runs for c in r.checks if not c.ok]
    assert not failed, "\n".join(failed)
    assert sum(len(r.checks) for r in runs) >= 1


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_scenario_is_named_by_its_file(path):
    scn = sc.load(path)
    assert scn.name == path.stem
    assert scn.purpose and "\n" not in scn.purpose


def test_there_are_enough_scenarios():
    assert len(FILES) >= 25


def _shows_failure(e: sc.Expectation) -> bool:
    if e.kind == "invariant":
        return e.test == "broken_at" or e.value is False
    if e.kind == "counter":
        return e.target in FAILURE_COUNTERS and (e.value >= 1 if e.test != "at_most" else False)
    if e.test in ("result", "interrupt"):
        return e.value in FAILURE_RESULTS
    if e.test == "events":
        return any(p.startswith(FAILURE_EVENTS) for p in e.value)
    if e.test == "delta":
        return any(k in FAILURE_COUNTERS and v >= 1 for k, v in e.value.items())
    return False


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_every_switch_has_a_scenario_that_fails_visibly(switch):
    found = []
    for path in FILES:
        scn = sc.load(path)
        if switch in scn.setup["switches"] and any(_shows_failure(e) for e in scn.expects):
            found.append(path.name)
    assert found, f"no scenario turns on {switch!r} and expects a visible failure"


def test_runs_are_deterministic():
    path = ROOT / "scenarios" / "NOFLUSH+READ.toml"
    one = [json.dumps(r.as_dict()) for r in sc.run(sc.load(path))]
    two = [json.dumps(r.as_dict()) for r in sc.run(sc.load(path))]
    assert one == two


def test_design_override_restricts_the_runs():
    scn = sc.load(ROOT / "scenarios" / "WRITE+WRITE.toml")
    runs = sc.run(scn, designs=["filemap"])
    assert [r.design for r in runs] == ["filemap"]
    assert all(c.ok for c in runs[0].checks)
    assert all("filemap" in c.expect.designs for c in runs[0].checks)


def test_a_design_the_file_does_not_list_checks_nothing():
    scn = sc.load(ROOT / "scenarios" / "WRITE+WRITE-MERMAP.toml")
    runs = sc.run(scn, designs=["per-folio"], arches=["arm64"])
    assert [(r.design, r.arch, r.checks) for r in runs] == [("per-folio", "arm64", [])]
    assert runs[0].system.steps[2].result == "EPERM"


def test_arch_specific_expectations_apply_only_there():
    scn = sc.load(ROOT / "scenarios" / "SPLIT-X86+ARM64-BBML2.toml")
    runs = sc.run(scn, designs=["filemap"])
    by_arch = {r.arch: {c.expect.line for c in r.checks} for r in runs}
    assert set(by_arch) == {"x86", "arm64"}
    assert by_arch["x86"] != by_arch["arm64"]


def test_json_document_has_the_contract_keys():
    scn = sc.load(ROOT / "scenarios" / "SPLIT-1G-ONE-PAGE.toml")
    doc = json.loads(json.dumps(sc.run(scn, designs=["filemap"])[0].as_dict()))
    for key in ("steps", "counters", "invariants"):
        assert key in doc
    for name in ("DirectMap4k", "DirectMap2M", "DirectMap1G", "direct_map_level2_splits",
                 "direct_map_level3_splits", "tlb_flushes", "tlb_full_flushes", "ipis", "zaps", "restores"):
        assert isinstance(doc["counters"][name], int)
    assert doc["counters"]["DirectMap1G"] == 2 * 1024 * 1024
    assert set(doc["steps"][0]) >= {"op", "result", "events"}
    assert doc["invariants"]["unmapped_while_cached"] == "held"
    assert doc["invariants"]["private_bit_iff_zapped"] == "n/a"


def test_broken_invariant_reports_the_step():
    scn = sc.load(ROOT / "scenarios" / "FALLOC+KREAD.toml")
    run = sc.run(scn, designs=["per-folio"])[0]
    assert run.invariants()["unmapped_while_cached"] == 2


# -- bad files: FILE:LINE: what is wrong ------------------------------------------------------------------------
GOOD = """name = "T"
purpose = "a test"

[setup]
designs = ["filemap"]

[[step]]
op = "gmem_create"
file = "g"
size = "2M"

[[step]]
op = "guest_fault"
file = "g"

[[expect]]
step = 2
result = "0"
"""


def _error(text: str) -> sc.ScenarioError:
    with pytest.raises(sc.ScenarioError) as info:
        scn = sc.loads(text, "t.toml")
        sc.run(scn)
    return info.value


def test_good_text_loads_and_passes():
    runs = sc.run(sc.loads(GOOD, "t.toml"))
    assert [c.ok for r in runs for c in r.checks] == [True]


@pytest.mark.parametrize("old,new,line,words", [
    ('op = "guest_fault"', 'op = "guest_fualt"', 13, "unknown op"),
    ('size = "2M"', 'size = "2 lots"', 10, "not a size"),
    ('size = "2M"', 'sise = "2M"', 10, "unknown argument"),
    ('file = "g"\n\n[[expect]]', 'file = 7\n\n[[expect]]', 14, "must be str"),
    ('size = "2M"\n', '', 7, "missing argument 'size'"),
    ('designs = ["filemap"]', 'designs = ["filemapp"]', 5, "unknown design"),
    ('designs = ["filemap"]', 'switches = ["skip_flsh"]', 5, "unknown switch 'skip_flsh'"),
    ('file = "g"\n\n[[expect]]', 'file = "g"\ninterrupt_at = "after_insert"\n\n[[expect]]', 15, "go together"),
    ('designs = ["filemap"]', 'arch = "riscv"', 5, "unknown arch"),
    ('designs = ["filemap"]', 'mode = "6-level"', 5, "unknown x86 mode"),
    ('result = "0"', 'result = "0"\ncounter = "zaps"', 16, "exactly one of step, counter, invariant"),
    ('result = "0"', 'reslt = "0"', 18, "unknown key"),
    ('step = 2\nresult = "0"', 'counter = "zapz"\nequals = 1', 17, "unknown counter"),
    ('step = 2\nresult = "0"', 'invariant = "z"\nheld = true', 17, "unknown invariant"),
    ('step = 2\n', 'step = 9\n', 17, "step number"),
    ('file = "g"\n\n[[expect]]', 'file = "h"\n\n[[expect]]', 14, "no file named 'h'"),
    ('purpose = "a test"', 'purpose = "a test', 2, "TOML syntax"),
    ('[setup]', '[setup]\nfoo = 1', 5, "unknown setup key"),
])
def test_bad_files_name_the_line(old, new, line, words):
    assert old in GOOD
    err = _error(GOOD.replace(old, new, 1))
    assert err.line == line, str(err)
    assert words in err.msg, str(err)
    assert str(err).startswith(f"t.toml:{line}: ")


def test_duplicate_key_is_found_without_tomllib_line():
    err = _error(GOOD.replace('file = "g"\n\n[[expect]]', 'file = "g"\nfile = "h"\n\n[[expect]]', 1))
    assert err.line == 15 and "TOML syntax" in err.msg


def test_no_expectations_is_a_bad_file():
    err = _error(GOOD.split("[[expect]]")[0])
    assert "expect" in err.msg
