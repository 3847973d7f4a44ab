"""The ``nbmodel`` command as a user runs it: output, JSON lines, exit status 0/1/2, FILE:LINE errors, help."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from nbmodel import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOOD = ROOT / "scenarios" / "WRITE+WRITE.toml"
CONTRACT_COUNTERS = ("DirectMap4k", "DirectMap2M", "DirectMap1G", "direct_map_level2_splits",
                     "direct_map_level3_splits", "tlb_flushes", "tlb_full_flushes", "ipis", "zaps", "restores")


def nbmodel(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbmodel", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_run_good_file_exits_0_and_prints_steps_counters_verdicts():
    p = nbmodel("run", GOOD)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "2. write file=g offset=0 len=4096 -> 4096" in out
    assert "zap(pfn=" in out
    assert "counters: DirectMap4k=" in out and "direct_map_level3_splits=" in out
    assert "invariants: unmapped_while_cached=held" in out
    assert "PASS line" in out and "FAIL" not in out


def test_run_json_is_json_lines_with_the_contract_keys():
    p = nbmodel("run", GOOD, ROOT / "scenarios" / "FALLOC+KREAD.toml", "--json")
    assert p.returncode == 0, p.stderr
    docs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [(d["scenario"], d["design"]) for d in docs] == [
        ("WRITE+WRITE", "per-folio"), ("WRITE+WRITE", "filemap"), ("WRITE+WRITE", "secretmem"),
        ("FALLOC+KREAD", "per-folio"), ("FALLOC+KREAD", "filemap")]
    for d in docs:
        assert {"steps", "counters", "invariants", "expectations", "ok", "arch"} <= set(d)
        assert all(isinstance(d["counters"][c], int) for c in CONTRACT_COUNTERS)
        assert all({"op", "result", "events"} <= set(s) for s in d["steps"])
    assert docs[3]["invariants"]["unmapped_while_cached"] == 2
    assert docs[4]["invariants"]["unmapped_while_cached"] == "held"


def test_run_json_single_design_is_one_document():
    p = nbmodel("run", GOOD, "--json", "--design", "filemap")
    assert p.returncode == 0
    doc = json.loads(p.stdout)
    assert doc["design"] == "filemap" and doc["steps"][2]["result"] == "EOPNOTSUPP"


def test_failing_expectation_exits_1(tmp_path):
    bad = tmp_path / "WRONG.toml"
    bad.write_text(GOOD.read_text().replace('result = "EPERM"', 'result = "EEXIST"'))
    p = nbmodel("run", bad)
    assert p.returncode == 1
    assert "FAIL line" in p.stdout and "(got 'EPERM')" in p.stdout


@pytest.mark.parametrize("old,new,line,words", [
    ('op = "write"', 'op = "wirte"', 13, "unknown op 'wirte'"),
    ('size = "2M"', 'size = "two"', 10, "not a size"),
    ('designs = ["per-folio", "filemap", "secretmem"]', 'designs = ["v13"]', 5, "unknown design"),
    ('step = 3\nresult = "EPERM"', 'step = 3\nresult = "EPERM"\ncounter = "zaps"', 26, "exactly one of"),
    ('[[step]]\nop = "write"\nfile = "g"\n\n[[step]]', '[[step]]\nop = "write"\nfile = "nope"\n\n[[step]]', 14,
     "no file named 'nope'"),
    ('name = "WRITE+WRITE"', 'name = WRITE+WRITE', 1, "TOML syntax"),
])
def test_bad_file_exits_2_with_file_and_line(tmp_path, old, new, line, words):
    text = GOOD.read_text()
    assert old in text
    bad = tmp_path / "BAD.toml"
    bad.write_text(text.replace(old, new, 1))
    p = nbmodel("run", bad)
    assert p.returncode == 2
    errors = p.stderr.strip().splitlines()
    assert len(errors) == 1, p.stderr
    assert errors[0].startswith(f"{bad}:{line}: "), errors[0]
    assert words in errors[0]


def test_bad_file_among_good_ones_still_exits_2(tmp_path):
    bad = tmp_path / "BAD.toml"
    bad.write_text("name = 1\n")
    p = nbmodel("run", GOOD, bad, "-q")
    assert p.returncode == 2
    assert "WRITE+WRITE" in p.stdout and f"{bad}:1:" in p.stderr


def test_help_explains_with_examples():
    top = nbmodel("--help")
    assert top.returncode == 0 and "example" in top.stdout and "run" in top.stdout
    run = nbmodel("run", "--help")
    assert run.returncode == 0 and "example" in run.stdout and "--json" in run.stdout
    assert "exit status" in run.stdout


def test_list_and_abi_in_process(capsys):
    assert cli.main(["list", str(ROOT / "scenarios")]) == 0
    out = capsys.readouterr().out
    assert "WRITE+WRITE" in out and "SPLIT-1G-ONE-PAGE" in out
    assert cli.main(["abi"]) == 0
    assert "| write(); write() | `EPERM` | `EOPNOTSUPP` |" in capsys.readouterr().out


def test_run_overrides_in_process(capsys):
    code = cli.main(["run", "-q", str(ROOT / "scenarios" / "SPLIT-X86+ARM64-BBML2.toml"), "--arch", "arm64",
                     "--design", "per-folio"])
    out = capsys.readouterr().out
    assert code == 0
    assert "[per-folio on arm64]: PASS" in out and "x86" not in out


def test_missing_external_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(cli.EXTERNAL, "explore", ("nbmodel.not_written_yet", "exhaustive search"))
    assert cli.main(["explore", "--depth", "3"]) == 2
    assert "nbmodel.not_written_yet is not available" in capsys.readouterr().err
    assert cli.main(["run", "-q", str(GOOD)]) == 0


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: nbmodel" in capsys.readouterr().out
