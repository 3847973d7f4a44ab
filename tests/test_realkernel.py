"""Live probes of the running kernel (memfd, guest_memfd, memfd_secret). Each skips with the kernel's reason
where unavailable. Figures are printed (pytest -s); only relations the kernel guarantees are asserted."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import pytest

from nbmodel import realkernel as rk

SIZE = 4 << 20


def test_ioctl_numbers_match_the_uapi():
    """_IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd) with the 64-byte struct; _IO(KVMIO, 0x01)."""
    assert rk.GMEM_STRUCT.size == 64
    assert rk.KVM_CREATE_GUEST_MEMFD == 0xC040AED4
    assert rk.KVM_CREATE_VM == 0xAE01 and rk.KVM_CHECK_EXTENSION == 0xAE03


def test_delta_and_missing_counters():
    a = dict.fromkeys(rk.COUNTER_NAMES, 1)
    b = dict.fromkeys(rk.COUNTER_NAMES, 3)
    assert rk.delta(b, a) == dict.fromkeys(rk.COUNTER_NAMES, 2)
    assert rk.delta(None, a) == {}


def _probe(kind, **kw):
    r = rk.probe(kind, SIZE, **kw)
    if r.skipped:
        pytest.skip(f"{kind}: {r.skipped}")
    print(rk.format_result(r))
    return r


@pytest.mark.live
@pytest.mark.parametrize("kind", ["memfd", "guest_memfd"])
def test_populate_without_direct_map_work(kind):
    r = _probe(kind)
    assert r.pages == SIZE // rk.PAGE and r.ns_first > 0 and r.ns_retouch > 0
    if r.populate:
        assert r.populate["direct_map_level2_splits"] == 0 and r.populate["direct_map_level3_splits"] == 0


@pytest.mark.live
def test_secretmem_counters_follow_the_kernel_rules():
    r = _probe("secretmem")
    p, f = r.populate, r.freed
    if not p:
        pytest.skip("no direct_map counters in /proc/vmstat and /proc/meminfo")
    l2, l3 = p["direct_map_level2_splits"], p["direct_map_level3_splits"]
    assert p["DirectMap4k"] == 2048 * l2                      # split_page_count(): a 2M leaf -> 512 4K leaves
    assert p["DirectMap2M"] == -2048 * l2 + (1 << 20) * l3
    assert f["DirectMap4k"] == 0 and f["direct_map_level2_collapses"] == 0   # no collapse after restore


@pytest.mark.live
def test_pagemap_pfns_of_secretmem():
    r = _probe("secretmem", pfns=True)
    assert len(r.pfns) == r.pages and all(r.pfns) and len(set(r.pfns)) == r.pages


@pytest.mark.live
def test_probe_command_json():
    parser = argparse.ArgumentParser()
    rk.add_arguments(parser)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert rk.run(parser.parse_args(["--size", "1M", "--json"])) == 0
    doc = json.loads(buf.getvalue())
    assert [p["kind"] for p in doc["probes"]] == list(rk.KINDS)
    print(json.dumps({p["kind"]: p["skipped"] or round(p["ns_net_median"]) for p in doc["probes"]}),
          "secretmem/guest_memfd:", doc["secretmem_over_guest_memfd"])


def test_cpu_model_is_read_from_proc_cpuinfo():
    want = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                None)
    got = rk.cpu_model()
    assert got and (want is None or got == want)


def test_lock_is_per_user_and_refuses_a_symlink(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    target = tmp_path / "elsewhere"
    (tmp_path / rk.LOCK_NAME).symlink_to(target)
    r = rk.probe("memfd", 1 << 20)
    assert r.skipped and "probe lock" in r.skipped and not target.exists()     # O_NOFOLLOW: ELOOP, no traceback
    (tmp_path / rk.LOCK_NAME).unlink()
    (tmp_path / rk.LOCK_NAME).write_text("kept")
    with rk.probe_lock() as path:
        assert path == str(tmp_path / rk.LOCK_NAME)
    assert (tmp_path / rk.LOCK_NAME).read_text() == "kept"                     # opened without truncation


def test_memlock_is_named_when_the_limit_is_why():
    import errno
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    note = rk.memlock_note("secretmem", 64 << 20, errno.EAGAIN)
    if soft == resource.RLIM_INFINITY:
        assert note == "Resource temporarily unavailable"
    else:
        assert "RLIMIT_MEMLOCK" in note and "ulimit -l" in note
    assert "RLIMIT_MEMLOCK" not in rk.memlock_note("memfd", 64 << 20, errno.ENODEV)


def test_ratio_names_what_it_divided_by():
    a = rk.ProbeResult("memfd", 4096, 1, ns_net_median=100.0)
    b = rk.ProbeResult("guest_memfd", 4096, 1, skipped="/dev/kvm: Permission denied")
    c = rk.ProbeResult("secretmem", 4096, 1, ns_net_median=500.0)
    line = rk.ratio_line([a, b, c])
    assert line.startswith("secretmem / memfd") and "guest_memfd /dev/kvm: Permission denied" in line


@pytest.mark.live
def test_probe_runs_clean_as_root_and_as_nobody(tmp_path):
    """After a run as root, `nobody` runs the probe with its own lock and prints no traceback."""
    import os
    import pathlib
    import shutil
    import subprocess
    py = shutil.which("python3", path="/usr/bin:/bin")
    if os.getuid() != 0 or not shutil.which("runuser") or not py:
        pytest.skip("needs root, runuser and a system python3 to switch to nobody")
    import tempfile
    src = tempfile.mkdtemp(prefix="nbmodel-nobody-")                # a copy nobody can read (the venv may not be)
    try:
        os.chmod(src, 0o755)
        shutil.copytree(pathlib.Path(__file__).parents[1] / "nbmodel", os.path.join(src, "nbmodel"),
                        ignore=shutil.ignore_patterns("__pycache__", "viz"))
        for d, _, fs in os.walk(src):
            os.chmod(d, 0o755)
            for f in fs:
                os.chmod(os.path.join(d, f), 0o644)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": src, "PYTHONDONTWRITEBYTECODE": "1"}
        for who in ([], ["runuser", "-u", "nobody", "--"]):
            who = [shutil.which(who[0]), *who[1:]] if who else who
            p = subprocess.run(who + [py, "-m", "nbmodel", "probe", "--size", "1M"], capture_output=True, text=True,
                               env=env, cwd="/", timeout=300)
            print(" ".join(who) or "root", p.returncode, p.stdout, p.stderr)
            assert p.returncode == 0 and "Traceback" not in p.stderr + p.stdout
            assert "secretmem" in p.stdout
        # a memlock-limited user: the skip names RLIMIT_MEMLOCK instead of a bare EAGAIN
        p = subprocess.run([shutil.which("runuser"), "-u", "nobody", "--", "/bin/sh", "-c",
                            f"ulimit -l 1024 && exec {py} -m nbmodel probe --kind secretmem --size 8M"],
                           capture_output=True, text=True, env=env, cwd="/", timeout=300)
        print(p.stdout, p.stderr)
        assert p.returncode == 0 and "Traceback" not in p.stderr + p.stdout
        assert "secretmem    skipped" in p.stdout and "RLIMIT_MEMLOCK" in p.stdout
    finally:
        shutil.rmtree(src)
