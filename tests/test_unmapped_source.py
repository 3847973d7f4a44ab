"""Frank van der Linden's never-mapped memory (option ``unmapped_source``) and Sean Christopherson's kmap_local
alternative (options ``populate="mermap"`` and the ``snp_no_direct_map`` what-if), run under each design.

Every outcome below comes from running the design code; each test that guards a rule also plants the bug that
breaks the rule (``monkeypatch`` on the design layer) and shows the same check fails."""

from __future__ import annotations

import pytest

from nbmodel import designs
from nbmodel.designs import Config, Design, Filemap
from nbmodel.errors import ModelInputError
from nbmodel.pagetable import VALID
from nbmodel.physmem import MemoryMap, PageAllocator
from nbmodel.setup import Setup
from nbmodel.system import System

FRANK = [("gmem_create", {"file": "g", "size": "64K"}), ("fallocate", {"file": "g", "len": "16K"}),
         ("user_fault", {"file": "g", "offset": 0}), ("punch_hole", {"file": "g", "offset": 0, "len": "16K"})]
SNP = [("gmem_create", {"file": "g", "size": "64K", "flags": ["NO_DIRECT_MAP"], "vm_type": "snp"}),
       ("populate", {"file": "g", "offset": 0}), ("guest_fault", {"file": "g", "offset": 0}),
       ("close", {"file": "g"})]


def run(script, **setup):
    s = System(seed=0, **setup)
    results = [s.step(op, **args).result for op, args in script]
    return s, results


def events(s, step):
    return [str(e) for e in s.steps[step - 1].events]


# -- the unmapped source ---------------------------------------------------------------------------------------
def frank_filemap_problems(s) -> list[str]:
    """What must hold after FRANK under the filemap design with the unmapped source."""
    c = s.k.counters
    out = []
    if c["unmapped_pageblocks"] != 1:
        out.append(f"{c['unmapped_pageblocks']} pageblocks taken, expected one")
    if c["zaps"] or c["direct_map_level2_splits"]:
        out.append(f"the add hook zapped ({c['zaps']}) or split ({c['direct_map_level2_splits']})")
    if c["tlb_flushes"]:
        out.append(f"{c['tlb_flushes']} ranged flushes after the pageblock's one")
    if c["oops"]:
        out.append(f"{c['oops']} oops")
    if c["restores"]:
        out.append(f"{c['restores']} restores of never-mapped folios")
    if sum("via=mermap" in e for e in events(s, 2)) != 4:
        out.append("the folios were not zeroed through the mermap")
    if s.steps[2].result != "0":
        out.append(f"user_fault -> {s.steps[2].result}")
    broken = [n for n, v in s.invariant_status().items() if v.startswith("broken")]
    if broken:
        out.append(f"broken: {broken}")
    return out


def test_filemap_tolerates_folios_that_arrive_unmapped():
    s, results = run(FRANK, design="filemap", unmapped_source=True)
    assert results == ["0", "0", "0", "0"]
    assert frank_filemap_problems(s) == []
    assert any("alloc(pfn=" in e and "unmapped=True" in e for e in events(s, 2))
    assert s.k.counters["unmapped_pool_frees"] == 4 and s.k.counters["freed_mapped_to_unmapped_pool"] == 0


def test_the_pool_is_reused_without_more_direct_map_work():
    s, _ = run(FRANK, design="filemap", unmapped_source=True)
    before = dict(s.k.counters)
    st = s.step("fallocate", file="g", len="16K")
    assert st.result == "0"
    for name in ("unmapped_pageblocks", "zaps", "tlb_flushes", "tlb_full_flushes", "direct_map_level3_splits"):
        assert s.k.counters[name] == before[name], name


def test_every_page_handed_out_is_already_invalid():
    s = System(design="per-folio", seed=0, unmapped_source=True)
    s.step("gmem_create", file="g", size="64K")
    s.step("fallocate", file="g", len="64K")
    leaf = s.k.dmap.pt.leaf
    assert all(not leaf(f.pfn)[2] & VALID for f in s.files["g"].mapping.folios())
    assert not any(s.k.tlb_holders(f.pfn) for f in s.files["g"].mapping.folios())


@pytest.mark.parametrize("bug", ["zap_again", "slow_path"])
def test_planted_add_hook_bugs_are_caught(monkeypatch, bug):
    def zap_again(self, k, mapping, folio, zero=True):
        if zero:
            designs.mermap_clear_folio(k, folio)
        return k.folio_zap_direct_map(folio)  # does not tolerate: zaps (and flushes) a second time

    def slow_path(self, k, mapping, folio, zero=True):
        k.folio_zero(folio)  # zero through the direct map, as if the folio were mapped
        return k.folio_zap_direct_map(folio)

    monkeypatch.setattr(Filemap, "prep_add_unmapped_folio", {"zap_again": zap_again, "slow_path": slow_path}[bug])
    s, _ = run(FRANK, design="filemap", unmapped_source=True)
    assert frank_filemap_problems(s) != []


def test_planted_remove_hook_restore_breaks_invariant_b(monkeypatch):
    def restore_anyway(self, k, mapping, folio):
        k.folio_restore_direct_map(folio)
        k.folio_zero(folio)

    monkeypatch.setattr(Filemap, "prep_remove_unmapped_folio", restore_anyway)
    s, _ = run(FRANK, design="filemap", unmapped_source=True)
    assert s.invariant_status()["never_freed_unmapped"] == "broken at step 4"
    assert s.k.counters["freed_mapped_to_unmapped_pool"] == 4


def test_planted_pool_without_zap_breaks_invariant_a(monkeypatch):
    real = designs.alloc_unmapped_folio

    def no_zap(k, order, name=""):
        k.set_direct_map_valid_noflush = lambda addr, n, valid: 0  # the pageblock flip forgets to zap
        try:
            return real(k, order, name)
        finally:
            del k.set_direct_map_valid_noflush

    monkeypatch.setattr(designs, "alloc_unmapped_folio", no_zap)
    s, _ = run(FRANK, design="filemap", unmapped_source=True)
    assert s.invariant_status()["unmapped_while_cached"] == "broken at step 2"


def test_invariant_b_is_scoped_to_the_source():
    """The free into the unmapped pool is on purpose; without the pool's bookkeeping (planted: the design does
    not watch the pool) the same run reports (b) broken."""
    s, _ = run(FRANK, design="filemap", unmapped_source=True)
    assert s.k.counters["freed_unmapped"] == 4 and s.invariant_status()["never_freed_unmapped"] == "held"
    s = System(design="filemap", seed=0, unmapped_source=True)
    s.k.alloc.unmapped_free_hook = None
    for op, args in FRANK:
        s.step(op, **args)
    assert s.invariant_status()["never_freed_unmapped"] == "broken at step 4"


def test_per_folio_private_bit_starts_clear_and_the_first_fault_oopses():
    s, results = run(FRANK, design="per-folio", unmapped_source=True)
    assert results == ["0", "0", "oops", "0"]
    assert s.invariant_status()["private_bit_iff_zapped"] == "broken at step 2"
    assert "zero(pfn=" in events(s, 3)[-1] and events(s, 3)[-1].endswith("result=oops)")
    assert s.k.counters["oops"] == 1


def test_secretmem_gfp_zero_oopses_at_allocation():
    s, results = run(FRANK, design="secretmem", unmapped_source=True)
    assert results[1] == "oops" and s.k.counters["oops"] >= 1
    assert any(e.startswith("zero(") and "result=oops" in e for e in events(s, 2))
    assert s.invariant_status()["never_freed_unmapped"] == "held"  # the dead task's folio went back unmapped


def test_without_the_option_nothing_changes():
    a, _ = run(FRANK, design="filemap")
    b, _ = run(FRANK, design="filemap", unmapped_source=False)
    assert a.trace_text() == b.trace_text()
    assert a.k.counters["unmapped_pageblocks"] == 0 and a.k.counters["zaps"] == 4


def test_failed_pageblock_zap_gives_the_pageblock_back():
    s = System(design="filemap", seed=0, unmapped_source=True)
    s.step("gmem_create", file="g", size="64K")
    s.step("fail_alloc", count=1)  # the 1G -> 2M split of the pageblock's zap cannot get its page table
    assert s.step("fallocate", file="g", len="16K").result == "ENOMEM"
    assert not s.k.alloc._pool_blocks and s.k.counters["unmapped_pageblocks"] == 0
    assert s.step("fallocate", file="g", len="16K").result == "0"
    assert all(not v.startswith("broken") for v in s.invariant_status().values())


def test_large_folios_from_the_pool_wrap_the_mermap():
    s = System(design="filemap", seed=0, unmapped_source=True, large_folios=True)
    s.step("gmem_create", file="g", size="4M")
    assert s.step("fallocate", file="g", len="4M").result == "0"
    assert s.k.counters["mermap_maps"] == 1024 and s.k.counters["mermap_local_flushes"] == 2
    assert s.step("close", file="g").result == "0"
    assert all(not v.startswith("broken") for v in s.invariant_status().values())


def test_replay_keeps_the_new_options():
    s, _ = run(FRANK, design="per-folio", unmapped_source=True, populate="mermap")
    assert s.replay().trace_text() == s.trace_text()


# -- Sean's alternative (a): kvm_gmem_populate() through the mermap ---------------------------------------------
def test_mainline_refuses_no_direct_map_on_snp():
    for design in designs.DESIGNS:
        s, results = run(SNP[:1], design=design)
        assert results == ["EINVAL"]


@pytest.mark.parametrize("design", ["filemap", "secretmem"])
def test_snp_what_if_populate_oopses_through_the_direct_map(design):
    s, results = run(SNP, design=design, snp_no_direct_map=True)
    assert results[1] == "oops" and s.k.counters["oops"] == 1
    assert any("what=populate" in e for e in events(s, 2))


def test_snp_what_if_under_per_folio_populates_before_the_zap():
    """v12 zaps at first use (kvm_gmem_get_pfn), after populate: the copy goes through a still-valid direct map,
    and the folio sits in the cache mapped meanwhile (invariant (a), the per-folio window)."""
    s, results = run(SNP, design="per-folio", snp_no_direct_map=True)
    assert results == ["0", "0", "0", "0"] and s.k.counters["oops"] == 0
    assert s.invariant_status()["unmapped_while_cached"] == "broken at step 2"


@pytest.mark.parametrize("design", ["filemap", "secretmem"])
def test_snp_what_if_with_mermap_populate_succeeds(design):
    s, results = run(SNP, design=design, snp_no_direct_map=True, populate="mermap")
    assert results == ["0", "0", "0", "0"]
    assert s.k.counters["oops"] == 0 and s.k.counters["mermap_maps"] == 1
    assert any(e.startswith("mermap(what=populate") for e in events(s, 2))
    assert not any("what=populate" in e and e.startswith("access(") for e in events(s, 2))
    assert all(not v.startswith("broken") for v in s.invariant_status().values())


def test_planted_populate_that_ignores_the_option_oopses(monkeypatch):
    monkeypatch.setattr(Design, "gmem_populate_copy",
                        lambda self, k, f, folio, pfn: k.kernel_access(pfn, write=True, what="populate"))
    s, results = run(SNP, design="filemap", snp_no_direct_map=True, populate="mermap")
    assert results[1] == "oops"


def test_mermap_populate_needs_only_a_local_flush_per_window():
    """Ackerley Tng's question (does guest_memfd need a TLB flush after mermap+memcpy?): the model counts one
    local flush each time the 512-page window wraps, and no global flush for the copies."""
    s = System(design="filemap", seed=0, snp_no_direct_map=True, populate="mermap")
    s.step("gmem_create", file="g", size="4M", flags=["NO_DIRECT_MAP"], vm_type="snp")
    for i in range(513):
        s.step("populate", file="g", offset=i * 4096)
    flushes = s.k.counters["tlb_flushes"], s.k.counters["tlb_full_flushes"]
    assert s.k.counters["mermap_maps"] == 513 and s.k.counters["mermap_local_flushes"] == 1
    s.step("populate", file="g", offset=0)  # cached already: one more copy, no zap, no kernel flush
    assert (s.k.counters["tlb_flushes"], s.k.counters["tlb_full_flushes"]) == flushes


# -- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{"unmapped_source": "yes"}, {"unmapped_source": 1}, {"populate": "memcpy"},
                                    {"populate": None}, {"snp_no_direct_map": "true"},
                                    {"snp_no_direct_map": True, "arch": "arm64"}])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ModelInputError):
        System(seed=0, **kwargs)
    with pytest.raises(ModelInputError):
        Setup(**kwargs)


def test_bad_config_make_is_refused():
    with pytest.raises(ModelInputError):
        Config.make("filemap", (), "refuse", False, False, False, "no", "kmap_local", False)
    with pytest.raises(ModelInputError):
        Config.make(populate="direct")


def test_bad_steps_leave_an_unmapped_source_system_unchanged():
    s, _ = run(FRANK[:2], design="filemap", unmapped_source=True)
    before = s.snapshot()
    for op, args in [("fallocate", {"file": "nope", "len": "4K"}), ("populate", {"file": "g", "offset": "x"}),
                     ("fallocate", {"file": "g", "len": "4K", "bogus": 1})]:
        with pytest.raises(ModelInputError):
            s.step(op, **args)
    assert s.snapshot() == before


def test_allocator_unmapped_calls_check_their_arguments():
    a = PageAllocator(MemoryMap.flat("16M"), seed=3)
    before = a.snapshot()
    for bad in (1, 3, "0", 0.0, None):
        with pytest.raises(ModelInputError):
            a.alloc_unmapped(bad)
    with pytest.raises(ModelInputError):
        a.unmapped_block_failed(0)
    assert a.snapshot() == before
    pfn, block = a.alloc_unmapped(0)
    assert block == pfn and a.in_unmapped_pool(pfn) and a.is_allocated(pfn)
    assert a.alloc_unmapped(0) == (pfn + 1, None)
    a.free(pfn, 0)
    assert not a.is_allocated(pfn) and a.alloc_unmapped(0) == (pfn, None)
    with pytest.raises(ModelInputError):
        a.free(pfn + 2, 0)  # in the pool but not handed out


# -- the chapter's tables (nbmodel.alternatives) -------------------------------------------------------------------
def test_frank_table_is_what_each_design_does():
    from nbmodel.alternatives import frank_runs
    runs = dict(frank_runs())
    assert runs["filemap"].results[1:] == ("0", "0", "0") and runs["filemap"].zeroed == "mermap"
    assert runs["per-folio (v12)"].results[2] == "oops" and runs["per-folio (v12)"].broken
    assert runs["secretmem pattern"].results[1] == "oops"


def test_frank_table_follows_a_planted_bug(monkeypatch):
    from nbmodel.alternatives import frank_runs

    def slow_path(self, k, mapping, folio, zero=True):
        k.folio_zero(folio)
        return k.folio_zap_direct_map(folio)

    monkeypatch.setattr(Filemap, "prep_add_unmapped_folio", slow_path)
    assert dict(frank_runs())["filemap"].counters.get("oops", 0) > 0


def test_sean_table_is_what_each_design_does():
    from nbmodel.alternatives import sean_runs
    rows = {(d, o): r for d, o, r in sean_runs()}
    assert all(rows[(d, "mainline")].results == ("EINVAL",) for d, _ in designs_labels())
    assert rows[("filemap", "what-if, kmap_local populate")].results[1] == "oops"
    assert rows[("filemap", "what-if, mermap populate")].results == ("0", "0", "0", "0")
    assert not rows[("filemap", "what-if, mermap populate")].broken


def designs_labels():
    from nbmodel.alternatives import DESIGN_NAMES
    return DESIGN_NAMES


def test_mermap_populate_flushes_counts_and_checks_its_argument():
    from nbmodel.alternatives import mermap_populate_flushes
    got = mermap_populate_flushes(513)
    assert got["mermap_maps"] == 513 and got["mermap_local_flushes"] == 1
    assert got["tlb_flushes"] == got["tlb_full_flushes"] == got["ipis"] == got["oops"] == 0
    for bad in (0, 4097, "8", 1.0, True):
        with pytest.raises(ModelInputError):
            mermap_populate_flushes(bad)
