"""Live memfd_secret PFNs replayed through the x86 model (issue #3). Skips cleanly without memfd_secret, without
readable PFNs, or off x86-64; prints the figures (pytest -s)."""

from __future__ import annotations

import pytest

from nbmodel import crosscheck as cc
from nbmodel.kernel import Kernel
from nbmodel.physmem import MemoryMap


def test_replay_splits_each_region_once():
    """No kernel needed: the replay of secretmem faults on the model."""
    k = Kernel("x86", memory=MemoryMap.of([(0x100, 0x40000 * 3)]), trace=False)
    pfns = [0x40000 + 5, 0x40000 + 6, 0x40000 + 600, 0x80000 + 1]
    got = cc.replay(k, pfns)
    assert got == [(1, 1), (0, 0), (1, 0), (1, 1)]
    assert cc.release(k, pfns) == 0
    assert k.counters["DirectMap4k"] >= 3 * 2048


@pytest.mark.live
def test_crosscheck_against_the_running_kernel():
    r = cc.crosscheck(8 << 20, rounds=2)
    if r.skipped:
        pytest.skip(r.skipped)
    print(r.report())
    assert r.ok, r.report()
    assert all(rd.pages == 2048 for rd in r.rounds)
