"""Machines of the same memory map boot from one remembered layout (``physmem._boot_pageblocks``,
``directmap._boot_layout``): a machine built after another has run must boot exactly as the first did."""

import functools

import pytest

from nbmodel import directmap, physmem
from nbmodel.system import System

# 1G of RAM: the one 1 GiB slot has the legacy hole, so it is a page directory (the part a zap splits), not a leaf.
MACHINES = [dict(arch="x86", memory="1G"), dict(arch="arm64", mode="bbml2", memory="1G"),
            dict(arch="x86", memory="4G", seed=3)]


def _boots_clean(kw) -> bool:
    """Build a machine, change its allocator and direct map, then build another: does it boot as the first did?"""
    first = System(design="filemap", **kw)
    booted = first.k.snapshot()
    for name in ("a", "b"):
        assert first.step("gmem_create", file=name, size="8M").result == "0"
        assert first.step("fallocate", file=name, len="8M").result == "0"
    assert first.k.counters["direct_map_level2_splits"] or first.k.counters["DirectMap2M"] < \
        System(design="filemap", **kw).k.counters["DirectMap2M"]
    try:
        again = System(design="filemap", **kw)
    except IndexError:  # an allocator map shared with the first machine can leave no page to boot with
        return False
    return again.k.snapshot() == booted


@pytest.mark.parametrize("kw", MACHINES, ids=lambda kw: " ".join(map(str, kw.values())))
def test_a_machine_boots_the_same_after_another_has_run(kw):
    assert _boots_clean(kw)


def test_the_check_catches_a_shared_allocator_map(monkeypatch):
    # Planted: pageblocks() hands every allocator the same remembered bytearray.
    shared = functools.lru_cache(maxsize=None)(lambda memmap: bytearray(physmem._boot_pageblocks(memmap)[0]))
    real = physmem.pageblocks
    monkeypatch.setattr(physmem, "pageblocks", lambda memmap: (shared(memmap),) + real(memmap)[1:])
    assert not _boots_clean(MACHINES[0])


def test_the_check_catches_a_shared_page_directory(monkeypatch):
    # Planted: the boot layout is remembered as the tables themselves, and each machine gets them uncopied.
    def layout(memmap, use_1g, use_2m, cont):
        slots, counts = real(memmap, use_1g, use_2m, cont)
        return tuple((s, [bytearray(e) if type(e) is bytes else e for e in entry] if type(entry) is tuple else entry)
                     for s, entry in slots), counts
    real = directmap._boot_layout
    monkeypatch.setattr(directmap, "_boot_layout", functools.lru_cache(maxsize=None)(layout))
    assert not _boots_clean(MACHINES[0])
