"""guest_memfd paths (virt/kvm/guest_memfd.c) the explorer once had to leave out."""

import pytest

from nbmodel.system import System

FLAGS = ["MMAP", "INIT_SHARED", "NO_DIRECT_MAP"]


@pytest.mark.parametrize("design", ["filemap", "secretmem"])
def test_large_fallocate_around_a_small_folio_terminates_and_fills_the_range(design):
    # Another task's order-0 folio at index 0 of a 2M range: the 2M folio cannot go in (-EEXIST), so the
    # allocation falls back to single pages for the rest of that range and goes on past it.
    s = System(design=design, memory="1G", large_folios=True, large_zap=True)
    s.step("gmem_create", file="g", size="4M", flags=FLAGS)
    assert s.step("race_add", file="g", offset=0).result == "0"
    st = s.step("fallocate", file="g", len="4M")
    m = s.files["g"].mapping
    assert st.result == "0"
    assert all(m.lookup(i) is not None for i in range(1024))
    assert [m.lookup(i).order for i in (0, 1, 511)] == [0, 0, 0] and m.lookup(512).order == 9
    assert m.nrpages == 1024 and len(m.i_pages) == 512 + 1
    if design == "filemap":
        assert not st.broken
    else:  # nothing hooks the page cache's own add: only the other task's folio is still mapped
        assert set(st.broken) == {"a"} and "g:race" in st.broken["a"]


def test_large_fault_inside_a_partly_taken_range_gets_one_page():
    s = System(design="filemap", memory="1G", large_folios=True, large_zap=True)
    s.step("gmem_create", file="g", size="2M", flags=FLAGS)
    s.step("race_add", file="g", offset="8K")
    assert s.step("guest_fault", file="g", offset="12K").result == "0"
    m = s.files["g"].mapping
    assert m.lookup(3).order == 0 and m.lookup(3).index == 3 and m.lookup(0) is None


def test_punch_hole_unmaps_only_the_punched_range_from_the_guest():
    s = System(design="filemap", memory="1G")
    s.step("gmem_create", file="g", size="16K", flags=FLAGS)
    for off in ("0", "4K", "8K"):
        s.step("guest_fault", file="g", offset=off)
    s.step("punch_hole", file="g", offset="4K", len="4K")
    m = s.files["g"].mapping
    assert m.lookup(1) is None
    assert m.lookup(0).test("guest_mapped") and m.lookup(2).test("guest_mapped")
