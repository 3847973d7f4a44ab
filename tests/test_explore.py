"""nbmodel explore: the filemap design proves (a)-(c); every break-it switch yields a replayable
counterexample; per-folio reaches the "ad hoc" state and the write-once refusal."""

import subprocess
import sys

import pytest
from conftest import ROOT

from nbmodel.designs import SWITCHES
from nbmodel.explore import explore, scenario_toml

FAILURES = ("a", "b", "c", "d", "oops", "warn", "leak")
SWITCH_HOME = {"arm64_no_bbml2": ("filemap", "arm64", None), "put_before_restore": ("secretmem", "x86", None)}


def test_filemap_proves_a_to_c_on_every_arch():
    for arch in ("x86", "arm64"):
        r = explore(design="filemap", arch=arch)
        assert r.complete and r.states > 1000
        for key in ("a", "b", "c"):
            assert r.per_invariant[key] is None, f"{arch}: {key} broken: {r.per_invariant[key]}"


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_every_switch_has_a_verified_counterexample(switch, tmp_path):
    design, arch, mode = SWITCH_HOME.get(switch, ("filemap", "x86", None))
    r = explore(design=design, arch=arch, mode=mode, switches=(switch,))
    found = {k: ce for k, ce in r.per_invariant.items() if ce is not None and k in FAILURES}
    assert found, f"{switch}: nothing breaks"
    key, ce = sorted(found.items())[0]
    assert ce.verified, f"{switch}: counterexample for {key} does not replay"
    if key in ("a", "b", "c", "d"):
        # The emitted scenario replays through `nbmodel run` to the same broken invariant (exit 0: expectation met).
        path = tmp_path / "ce.toml"
        path.write_text(scenario_toml(ce))
        done = subprocess.run([sys.executable, "-m", "nbmodel", "run", "-q", str(path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_per_folio_reaches_ad_hoc_state_and_write_once_refusal():
    r = explore(design="per-folio", arch="x86")
    a = r.per_invariant["a"]
    assert a is not None and a.verified
    assert any(st["op"] == "fallocate" for st in a.steps) or any(st["op"] == "write" for st in a.steps)
    eperm = r.per_invariant.get("eperm")
    assert eperm is not None and eperm.verified
    assert eperm.replay[-1]["result"] == "EPERM"


def test_membership_is_the_state_under_filemap():
    r = explore(design="filemap", arch="x86", offsets=2, sizes=True)
    assert r.dm_states == r.membership_states
    v12 = explore(design="per-folio", arch="x86", offsets=2, sizes=True)
    assert v12.dm_states > v12.membership_states


def test_cli_explore_one_configuration_is_deterministic():
    cmd = [sys.executable, "-m", "nbmodel", "explore", "--design", "filemap", "--arch", "x86", "--no-timing"]
    a = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    b = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert a.returncode == 0 and a.stdout == b.stdout
    assert "holds in all" in a.stdout


def test_cli_bad_arguments_exit_2():
    done = subprocess.run([sys.executable, "-m", "nbmodel", "explore", "--design", "v13"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
