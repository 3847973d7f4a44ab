"""Per-CPU TLBs and kernel accesses: fills, stale entries, flush kinds."""

from nbmodel.kernel import Kernel


def test_touch_fills_entry_of_leaf_size():
    k = Kernel("x86", memory="8G", cpus=2)
    assert k.kernel_access(0x100000 + 3, cpu=1) == "ok"
    assert k.tlbs[1].entries == {0x100000: 512 * 512}           # one 1G entry
    assert k.tlbs[0].entries == {}


def test_stale_entry_survives_noflush_zap_until_flushed():
    k = Kernel("x86", mode="nogbpages", memory="8G", cpus=2)
    pfn = 0x100000 + 7
    k.set_direct_map_invalid_noflush(k.page_address(pfn + 1))   # split the 2M leaf first (flush_all)
    assert k.kernel_access(pfn, cpu=1) == "ok"                   # CPU 1 caches the 4K entry
    k.set_direct_map_invalid_noflush(k.page_address(pfn))       # no split now, so no flush at all
    assert k.kernel_access(pfn, cpu=1) == "stale"                # still readable through the TLB
    assert k.kernel_access(pfn, cpu=0) == "oops"                 # CPU 0 walks the tables and faults
    a = k.page_address(pfn)
    k.flush_tlb_kernel_range(a, a + 4096)
    assert k.kernel_access(pfn, cpu=1) == "oops"
    assert k.counters["stale_reads"] == 1 and k.counters["oops"] == 2


def test_split_flush_all_drops_every_cpu_entries():
    k = Kernel("x86", memory="8G", cpus=3)
    for cpu in range(3):
        k.kernel_access(0x100000 + cpu, cpu=cpu)
    k.set_direct_map_invalid_noflush(k.page_address(0x100000 + 100))
    assert all(not t.entries for t in k.tlbs)


def test_invlpg_drops_large_entry_covering_the_page():
    k = Kernel("arm64", mode="bbml2", memory="8G", cpus=2)
    k.kernel_access(0x100000 + 40, cpu=1)
    a = k.page_address(0x100000 + 41)
    k.flush_tlb_kernel_range(a, a + 4096)
    assert k.tlbs[1].entries == {}


def test_zero_through_invalid_direct_map_oopses():
    k = Kernel("x86", memory="8G")
    f = k.folio_alloc(0)
    k.folio_zap_direct_map(f)
    assert k.folio_zero(f) == "oops"
    assert f.content != "zero"
