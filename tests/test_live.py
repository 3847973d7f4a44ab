"""nbmodel run --live: scenarios run on the running kernel beside the model. The live tests run when /dev/kvm and
memfd_secret exist and skip with the reason otherwise; the rest needs no kernel."""

from __future__ import annotations

import pathlib

import pytest

from nbmodel import live
from nbmodel import scenario as sc

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCEN = ROOT / "scenarios"
SUPPORT_618 = {"secretmem": None, "kvm": None, "gmem_flags": 0x3}   # Linux 6.18 x86-64: MMAP | INIT_SHARED


def test_why_not_live_names_the_reason(monkeypatch):
    monkeypatch.setattr(live.platform, "machine", lambda: "x86_64")
    why = lambda name: live.why_not_live(sc.load(SCEN / f"{name}.toml"), SUPPORT_618)  # noqa: E731
    assert "NO_DIRECT_MAP do not exist on this kernel" in why("GFAULT+PUNCH")
    assert "this machine is x86_64" in why("ARM64-NO-FWB")
    assert "break-it switches" in why("RESTORE-4K")
    assert "fault race" in why("SECRET-FAULT+RACE")
    assert why("SECRET-FAULT+CLOSE") is None and why("GMEM-FALLOC+PUNCH") is None
    no_kvm = dict(SUPPORT_618, kvm="/dev/kvm: No such file or directory")
    assert "/dev/kvm" in live.why_not_live(sc.load(SCEN / "GMEM-UFAULT+CLOSE.toml"), no_kvm)


def test_errno_names_as_the_model_spells_them():
    assert live._errname(95) == "EOPNOTSUPP" and live._errname(19) == "ENODEV"


def test_recorded_live_run_loads_without_the_kernel():
    head, runs = live.load_recorded(ROOT / "benchmarks" / "live-run-6.18.json")
    assert head["kernel"].startswith("6.18") and head["machine"] == "x86_64"
    assert len(runs) >= 12 and all(r.ok for r in runs)
    text = next(r for r in runs if r.scenario == "SECRET-FAULT-4-PAGES").report(head["kernel"])
    assert "LIVE EQUAL" in text and "model 0 | kernel 0" in text


def test_show_uses_the_recording_unless_the_reader_opts_in(monkeypatch):
    monkeypatch.delenv("NBMODEL_LIVE", raising=False)
    text = live.show("SECRET-FAULT-4-PAGES")
    assert text.startswith("recorded ") and "6.18" in text and "NBMODEL_LIVE=1" in text
    monkeypatch.setattr(live, "run_live", lambda path: pytest.fail("the book must not probe the kernel"))
    live.show("GMEM-UFAULT+CLOSE")
    with pytest.raises(ValueError):
        live.show("NO-SUCH-SCENARIO")


def test_a_differing_step_makes_the_run_differ():
    run = live.LiveRun("X", "x.toml", "filemap", steps=[live.LiveStep(1, "fallocate", {}, "EINVAL", "0")])
    assert not run.ok and "DIFFER" in run.report()
    judged_differ = live.LiveRun("Y", "y.toml", "filemap", steps=[live.LiveStep(1, "close", {}, "0", "0",
                                                                               judged="differ")])
    assert not judged_differ.ok


@pytest.mark.live
def test_scenarios_run_live_and_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    support = live.machine_support()
    if support["secretmem"] and support["kvm"]:
        pytest.skip(f"memfd_secret: {support['secretmem']}; KVM: {support['kvm']}")
    lines = []
    status = live.run_files([str(SCEN)], printer=lines.append)
    text = "\n".join(lines)
    print(text)
    summary = lines[-1]
    assert status == 0, text
    n_live = int(summary.split(" run live")[0].rsplit(" ", 1)[1])
    assert n_live >= (12 if not (support["secretmem"] or support["kvm"]) else 1), summary
    assert "SIGBUS | kernel SIGBUS" in text          # a SIGBUS was an outcome, not a crash
    assert "SKIP: " in text                          # the rest skipped, each with its reason
