"""The range engine's extent index (:class:`nbmodel.bulk.BulkFile`: extents in chunks, a two-level B-tree) against
a plain sorted list doing the same splits and replacements, with chunks of 2 to 6 extents so that every path
(a range across chunks, a chunk split, an emptied or merged chunk) is taken; and a fragmenting workload run with
tiny chunks against the traced System (counters, results, every cached page's PFN).

Speed (O(log n) per operation, linear in the guest size) is a benchmark figure: ``nbmodel bench --json`` prints
the fragmenting workload at 64M, 256M and 1G.
"""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbmodel.bulk import BulkFile, BulkSystem, BulkUnsupported
from nbmodel.system import System
from nbmodel.units import PAGE_SIZE


class ListFile:
    """The extents as one sorted list, split and replaced by slicing: what BulkFile must behave like."""

    def __init__(self):
        self.ext = []

    def split_at(self, idx):
        keys = [e[0] for e in self.ext]
        i = bisect.bisect_right(keys, idx) - 1
        if i < 0:
            return
        e = self.ext[i]
        if e[0] < idx < e[0] + (e[2] << e[4]):
            k = (idx - e[0]) >> e[4]
            if not k or e[4]:
                raise BulkUnsupported("a range that cuts a large folio")
            self.ext.insert(i + 1, [idx, e[1] + k * e[3], e[2] - k, e[3], e[4], e[5]])
            e[2] = k

    def _bounds(self, lo, hi):
        self.split_at(lo)
        self.split_at(hi)
        keys = [e[0] for e in self.ext]
        return bisect.bisect_left(keys, lo), bisect.bisect_left(keys, hi)

    def window(self, lo, hi):
        i, j = self._bounds(lo, hi)
        return self.ext[i:j]

    def replace(self, lo, hi, new):
        i, j = self._bounds(lo, hi)
        self.ext[i:j] = new

    def take(self, lo, hi):
        i, j = self._bounds(lo, hi)
        out = self.ext[i:j]
        del self.ext[i:j]
        return out


def _fill(lo, hi, pfn, flags, large):
    """Extents covering ``[lo, hi)``: one 2M folio per 512 aligned indices if ``large``, else runs of 4K."""
    if large:
        return [[i, pfn + i, 1, 0, 9, flags] for i in range(lo, hi, 512)]
    out, i = [], lo
    while i < hi:
        n = min(hi - i, 3)
        out.append([i, pfn + i, n, 1, 0, flags])
        i += n
    return out


ops = st.lists(st.tuples(st.sampled_from(["fill", "take", "window"]), st.integers(0, 120), st.integers(1, 40),
                         st.integers(0, 3)), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(load=st.integers(1, 6), program=ops)
def test_chunked_extents_behave_like_one_sorted_list(load, program):
    f, ref = BulkFile("g", "guest_memfd", 1 << 30), ListFile()
    f.LOAD = load   # chunks of at most 2 * load extents
    for what, lo, n, flags in program:
        hi = lo + n
        if what == "fill":
            # a fill replaces the window with fresh extents (as _populate does)
            new = _fill(lo, hi, 1000 * (flags + 1), flags, large=False)
            try:
                ref.replace(lo, hi, [list(e) for e in new])
            except BulkUnsupported:
                continue
            f.window(lo, hi)
            f.replace(lo, hi, [list(e) for e in new])
        elif what == "take":
            assert f.take(lo, hi) == ref.take(lo, hi)
        else:
            assert f.window(lo, hi) == ref.window(lo, hi)
        assert f.ext == ref.ext
        assert len(f) == len(ref.ext) and f.count == sum(len(c) for c in f.chunks)
        assert all(c for c in f.chunks), "an empty chunk was left behind"
        assert all(len(c) <= 2 * load for c in f.chunks)
        assert f.mins == [c[0][0] for c in f.chunks]
        assert f.ckeys == [[e[0] for e in c] for c in f.chunks]


def test_large_folios_are_never_cut():
    f = BulkFile("g", "guest_memfd", 1 << 30)
    f.LOAD = 1
    f.replace(0, 2048, _fill(0, 2048, 1 << 20, 0, large=True))
    with pytest.raises(BulkUnsupported):
        f.take(100, 200)
    assert [e[0] for e in f.take(512, 1024)] == [512]
    assert [e[0] for e in f] == [0, 1024, 1536]


def _fragment_ops(size: int) -> list[dict]:
    """Fallocate, punch every other page one op at a time, fault the range back, punch a middle part, close."""
    ops = [{"op": "gmem_create", "file": "g", "size": size, "flags": ["MMAP", "INIT_SHARED", "NO_DIRECT_MAP"]},
           {"op": "fallocate", "file": "g", "offset": 0, "len": size}]
    ops += [{"op": "punch_hole", "file": "g", "offset": off, "len": PAGE_SIZE} for off in range(0, size, 2 * PAGE_SIZE)]
    ops += [{"op": "guest_fault", "file": "g", "offset": 0, "len": size},
            {"op": "punch_hole", "file": "g", "offset": size // 4, "len": size // 2},
            {"op": "close", "file": "g"}]
    return ops


@pytest.mark.parametrize("design", ["filemap", "per-folio", "secretmem"])
@pytest.mark.parametrize("arch,mode", [("x86", None), ("arm64", "bbml2")])
def test_fragmenting_workload_with_tiny_chunks_matches_the_traced_system(design, arch, mode, monkeypatch):
    size = 4 << 20
    monkeypatch.setattr(BulkFile, "LOAD", 2)
    b = BulkSystem(design=design, arch=arch, mode=mode, memory="64M")
    s = System(design=design, arch=arch, mode=mode, memory="64M", trace=False)
    pfns = None
    for op in _fragment_ops(size):
        op = dict(op)
        name = op.pop("op")
        got = b.step(name, **op)
        if name == "guest_fault":
            want = "0"
            for off in range(0, op["len"], PAGE_SIZE):
                r = s.run_validated("guest_fault", {"file": "g", "offset": off})[0]
                want = r if want == "0" else want
        else:
            want = s.step(name, **op).result
        assert got == want, (name, op)
        if name == "guest_fault":   # every cached page at the same PFN, with chunks split many times over
            pfns = b.files["g"].pfn_map()
            assert len(b.files["g"].chunks) > 100
            assert pfns == {i + j: fo.pfn + j for i, fo in s.files["g"].mapping.i_pages.items()
                            for j in range(fo.nr_pages)}
    assert pfns
    assert dict(b.counters) == dict(s.k.counters)
