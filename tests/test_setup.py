"""One Setup reaches every front end; the explorer's options are validated and it has one engine."""

from __future__ import annotations

import dataclasses

import pytest

from nbmodel.cli import main
from nbmodel.explore import explore
from nbmodel.explore_state import Space
from nbmodel.setup import FIELDS, Setup
from nbmodel.system import System
from nbmodel.viz.stepper import WALK, Stepper


def test_stepper_takes_every_setup_option():
    s = Stepper(WALK, large_zap=True, fwb=False, tlbirange=None)
    assert s.system.setup.large_zap and not s.system.setup.fwb
    assert set(s.config) == set(FIELDS) - {"trace"}


def test_explore_space_reaches_large_zap_and_fwb():
    fields = {f.name for f in dataclasses.fields(Space)}
    assert {"large_zap", "fwb"} <= fields
    r = explore(design="filemap", offsets=1, large_folios=True, large_zap=True, max_depth=2)
    assert r.space.large_zap and r.states > 1


def test_replay_keeps_the_setup():
    s = System(design="per-folio", arch="arm64", tlbirange=False, large_zap=True)
    s.step("gmem_create", file="g", size="2M")
    assert s.replay().setup == s.setup == Setup(design="per-folio", arch="arm64", tlbirange=False, large_zap=True)


@pytest.mark.parametrize("argv", [["--check", "-1"], ["--sizes", "9"], ["--depth", "-3"], ["--jobs", "0"],
                                  ["--offsets", "17"]])
def test_explore_numeric_options_in_range(argv, capsys):
    assert main(["explore", "--design", "filemap", "--arch", "x86", *argv]) == 2
    assert "must be from" in capsys.readouterr().err


def test_explore_scenario_out_must_be_a_directory(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["explore", "--design", "filemap", "--arch", "x86", "--scenario-out", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_explore_has_one_engine(capsys):
    """There is one way to compute a transition (System.step), so --engine is gone, not ignored."""
    with pytest.raises(SystemExit) as e:
        main(["explore", "--design", "secretmem", "--arch", "x86", "--offsets", "1", "--engine", "real"])
    assert e.value.code == 2
    assert "--engine" in capsys.readouterr().err


def test_stepper_argument_parser_reads_its_own_example():
    from nbmodel.viz.stepper import _parse_args
    assert _parse_args("file=g offset=4K cpu=1 race=true flags=MMAP,INIT_SHARED") == {
        "file": "g", "offset": "4K", "cpu": 1, "race": True, "flags": ["MMAP", "INIT_SHARED"]}
    assert _parse_args("file=g, offset=8K") == {"file": "g", "offset": "8K"}
    assert _parse_args("flags=MMAP|NO_DIRECT_MAP")["flags"] == ["MMAP", "NO_DIRECT_MAP"]
