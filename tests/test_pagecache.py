"""Page cache paths (mm/filemap.c, mm/truncate.c) with and without the filemap-level hooks."""

import pytest

from nbmodel.designs import Config
from nbmodel.errors import Errno, ModelInputError
from nbmodel.kernel import Kernel
from nbmodel.pagecache import (
    AddressSpace,
    AddressSpaceOps,
    delete_from_page_cache_batch,
    filemap_add_folio,
    filemap_remove_folio,
    replace_page_cache_folio,
    truncate_inode_pages_range,
)


def setup(hooks=False, flags=("AS_NO_DIRECT_MAP",)):
    k = Kernel("x86", memory="4G", cpus=2)
    if hooks:
        Config.make("filemap").install(k)
    freed = []
    m = AddressSpace("m", flags, AddressSpaceOps(free_folio=lambda k, mapping, f: freed.append(f.pfn)))
    return k, m, freed


def test_add_then_remove_references_and_free_folio():
    k, m, freed = setup()
    f = k.folio_alloc(0)
    assert filemap_add_folio(k, m, f, 3) == 0
    assert f.refcount == 2 and f.test("locked") and m.nrpages == 1 and m.lookup(3) is f
    filemap_remove_folio(k, f)
    assert freed == [f.pfn] and f.refcount == 1 and f.mapping is None and m.nrpages == 0


def test_eexist_leaves_everything_untouched_without_hooks():
    k, m, _ = setup()
    a, b = k.folio_alloc(0), k.folio_alloc(0)
    filemap_add_folio(k, m, a, 0)
    snap, bkey = k.snapshot(), b.key()
    assert filemap_add_folio(k, m, b, 0) == -Errno.EEXIST
    assert b.key() == bkey and m.lookup(0) is a
    assert k.snapshot()[:-3] == snap[:-3]  # all state except the trace length, fault knobs, cpu


def test_eexist_with_hooks_restores_but_split_stays():
    k, m, _ = setup(hooks=True)
    a, b = k.folio_alloc(0), k.folio_alloc(0)
    filemap_add_folio(k, m, a, 0)
    splits = k.counters["direct_map_level2_splits"]
    assert filemap_add_folio(k, m, b, 0) == -Errno.EEXIST
    assert k.dmap.pt.is_valid(b.pfn)                    # err_restore ran
    assert k.counters["zaps"] == 2 and k.counters["restores"] == 1
    assert k.counters["direct_map_level2_splits"] >= splits


def test_hooks_zap_before_insert_and_restore_after_delete():
    k, m, _ = setup(hooks=True)
    f = k.folio_alloc(0)
    filemap_add_folio(k, m, f, 0)
    kinds = [e.kind for e in k.trace]
    assert kinds.index("zero") < kinds.index("zap") < kinds.index("flush") < kinds.index("insert")
    assert not k.dmap.pt.is_valid(f.pfn)
    n = len(k.trace)
    filemap_remove_folio(k, f)
    kinds = [e.kind for e in k.trace[n:]]
    assert kinds.index("delete") < kinds.index("restore") < kinds.index("free_folio")
    assert k.dmap.pt.is_valid(f.pfn)


def test_truncate_uses_batch_and_skips_partial_zero_when_inaccessible():
    k, m, freed = setup(flags=("AS_INACCESSIBLE",))
    folios = [k.folio_alloc(0) for _ in range(4)]
    for i, f in enumerate(folios):
        filemap_add_folio(k, m, f, i)
        f.flags.discard("locked")
        k.folio_put(f)
    truncate_inode_pages_range(k, m, 4096, 3 * 4096 - 1)
    assert sorted(freed) == sorted([folios[1].pfn, folios[2].pfn]) and m.nrpages == 2
    truncate_inode_pages_range(k, m, 100, 200)            # partial page: inaccessible -> no zeroing
    assert k.counters["zeroings"] == 0
    m.flags.discard("AS_INACCESSIBLE")
    truncate_inode_pages_range(k, m, 100, 200)
    assert k.counters["zeroings"] == 1


def test_batch_delete_rejects_folio_of_other_mapping():
    k, m, _ = setup()
    other = AddressSpace("o")
    f = k.folio_alloc(0)
    filemap_add_folio(k, other, f, 0)
    snap = k.snapshot()
    with pytest.raises(ModelInputError):
        delete_from_page_cache_batch(k, m, [f])
    assert k.snapshot() == snap


def test_replace_without_hooks_leaves_new_folio_mapped():
    k, m, freed = setup()
    old, new = k.folio_alloc(0), k.folio_alloc(0)
    filemap_add_folio(k, m, old, 0)
    new.flags.add("locked")
    replace_page_cache_folio(k, old, new)
    assert m.lookup(0) is new and freed == [old.pfn] and k.dmap.pt.is_valid(new.pfn)


@pytest.mark.parametrize("bad", [
    lambda k, m, f: filemap_add_folio(k, m, f, -1),
    lambda k, m, f: filemap_remove_folio(k, f),
    lambda k, m, f: truncate_inode_pages_range(k, m, 10, 5),
])
def test_bad_page_cache_calls_change_nothing(bad):
    k, m, _ = setup()
    f = k.folio_alloc(0)
    snap, fkey = k.snapshot(), f.key()
    with pytest.raises(ModelInputError):
        bad(k, m, f)
    assert k.snapshot() == snap and f.key() == fkey and m.nrpages == 0


def test_replace_refuses_large_folios_before_changing_anything():
    k, m, _ = setup()
    old, new = k.folio_alloc(9), k.folio_alloc(9)
    filemap_add_folio(k, m, old, 0)
    new.flags.add("locked")
    snap, keys = k.snapshot(), (old.key(), new.key())
    with pytest.raises(ModelInputError, match="small folios"):
        replace_page_cache_folio(k, old, new)
    assert k.snapshot() == snap and (old.key(), new.key()) == keys and m.lookup(0) is old


def test_replace_with_failing_hooked_zap_warns_and_completes():
    # The new folio lies in a 2M leaf not split yet and the split's page-table allocation fails: the hook's
    # zap returns -ENOMEM inside a function that returns void.
    k, m, freed = setup(hooks=True)
    old = k.folio_alloc(0)
    assert filemap_add_folio(k, m, old, 0) == 0
    new = k.folio_alloc(0)
    while new.pfn >> 9 == old.pfn >> 9:
        new = k.folio_alloc(0)
    new.flags.add("locked")
    k.fail_pgtable_allocs = 1
    replace_page_cache_folio(k, old, new)
    assert m.lookup(0) is new and old.mapping is None and freed == [old.pfn]
    assert k.counters["warns"] == 1 and k.trace[-1].kind != "warn"
    assert any(e.kind == "warn" and "replace_page_cache_folio" in e.get("what") for e in k.trace)
    assert k.dmap.pt.is_valid(new.pfn)       # cached with its direct map still valid: what (a) reports
    assert k.dmap.pt.is_valid(old.pfn)       # the old folio was restored on its way out


def test_large_replace_step_is_bad_input_and_leaves_state():
    from nbmodel.system import System
    s = System(design="filemap", memory="1G", large_folios=True, large_zap=True)
    s.step("gmem_create", file="g", size="4M", flags=["MMAP", "INIT_SHARED", "NO_DIRECT_MAP"])
    assert s.step("fallocate", file="g", len="2M").result == "0"
    assert s.files["g"].mapping.lookup(0).order == 9
    snap = s.snapshot()
    with pytest.raises(ModelInputError, match="small folios"):
        s.step("replace", file="g", offset=0)
    assert s.snapshot() == snap
