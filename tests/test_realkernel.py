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
