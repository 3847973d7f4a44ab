"""Mutants of the design code: each plants one plausible patch bug in the one copy of the semantics
(``nbmodel.designs`` and the hooked ``nbmodel.pagecache`` paths) and asks every front end whether it sees it.

- scenarios: ``scenarios/*.toml`` run through :mod:`nbmodel.scenario` (System): caught when an expectation fails;
- explore: :func:`nbmodel.explore.explore` on a small space (every transition is System.step on the one copy):
  caught when a property gets a counterexample the unmutated model does not have, and that counterexample
  reproduces on replay;
- bench: ``nbmodel.bench.run_workload`` results and counters against the unmutated run (the range engine learns
  each design's per-folio effects by running the design code, :mod:`nbmodel.policy`).

The test prints the table (mutant x front end) and asserts what must hold today: the scenarios and the explorer
catch every mutant.
"""

from __future__ import annotations

import pytest

from nbmodel import designs as dz
from nbmodel import explore_check
from nbmodel import pagecache as pc
from nbmodel.bench import run_workload
from nbmodel.bulk import BulkUnsupported
from nbmodel.explore import explore
from nbmodel.scenario import find_files, load
from nbmodel.scenario import run as run_scenario

pytestmark = pytest.mark.slow


def _filemap_no_restore(mp):
    mp.setattr(dz.Filemap, "prep_remove_unmapped_folio", lambda self, k, m, folio: k.folio_zero(folio))


def _restore_before_delete(mp):
    real_delete = pc._page_cache_delete

    def remove(k, folio):
        pc._check_removable(folio)
        hooks = pc._hooks(k, folio.mapping)
        if hooks is not None:
            hooks.prep_remove_unmapped_folio(k, folio.mapping, folio)
        mapping = real_delete(k, folio)
        pc.filemap_free_folio(k, mapping, folio)

    def batch(k, mapping, folios):
        hooks = pc._hooks(k, mapping)
        for f in folios:
            if hooks is not None:
                hooks.prep_remove_unmapped_folio(k, mapping, f)
            real_delete(k, f)
        for f in folios:
            pc.filemap_free_folio(k, mapping, f)
    mp.setattr(pc, "filemap_remove_folio", remove)
    mp.setattr(pc, "delete_from_page_cache_batch", batch)


def _zap_after_insert(mp):
    real_add = pc.__dict__["__filemap_add_folio"]

    def add(k, mapping, folio, index):
        folio.flags.add("locked")
        ret = real_add(k, mapping, folio, index)
        if ret:
            folio.flags.discard("locked")
            return ret
        hooks = pc._hooks(k, mapping)
        if hooks is not None:
            hooks.prep_add_unmapped_folio(k, mapping, folio)
            hooks.after_add(k, mapping, folio)
        return 0
    mp.setattr(pc, "filemap_add_folio", add)
    mp.setattr(dz, "filemap_add_folio", add)


def _skip_zap_flush(mp):
    def prep(self, k, mapping, folio, zero=True):
        if zero and self.zero_before_add:
            k.folio_zero(folio)
        ret = k.set_direct_map_valid_noflush(k.page_address(folio.pfn), folio.nr_pages, False)
        if ret == 0:
            k.counters["zaps"] += 1
        return ret
    mp.setattr(dz.Filemap, "prep_add_unmapped_folio", prep)


def _skip_zeroing(mp):
    def prep(self, k, mapping, folio, zero=True):
        return k.folio_zap_direct_map(folio)
    mp.setattr(dz.Filemap, "prep_add_unmapped_folio", prep)


def _forget_private_bit(mp):
    def first_use(self, k, f, folio):
        if not f.no_direct_map():
            return 0
        return k.folio_zap_direct_map(folio)
    mp.setattr(dz.PerFolio, "gmem_first_use", first_use)


def _put_before_restore(mp):
    real_init = dz.Design.__init__

    def init(self, config):
        real_init(self, config)
        self.switches = self.switches | {"put_before_restore"}
    mp.setattr(dz.Design, "__init__", init)


def _restore_4k(mp):
    real_init = dz.Design.__init__

    def init(self, config):
        real_init(self, config)
        self.restore_granule = 1
    mp.setattr(dz.Design, "__init__", init)


def _eexist_skips_restore(mp):
    real_add = pc.__dict__["__filemap_add_folio"]

    def add(k, mapping, folio, index):
        folio.flags.add("locked")
        hooks = pc._hooks(k, mapping)
        if hooks is not None:
            ret = hooks.prep_add_unmapped_folio(k, mapping, folio)
            if ret:
                folio.flags.discard("locked")
                return ret
        ret = real_add(k, mapping, folio, index)
        if ret:
            folio.flags.discard("locked")  # err_restore forgotten
            return ret
        if hooks is not None:
            hooks.after_add(k, mapping, folio)
        return 0
    mp.setattr(pc, "filemap_add_folio", add)
    mp.setattr(dz, "filemap_add_folio", add)


def _batch_skips_one(mp):
    real_delete = pc._page_cache_delete

    def batch(k, mapping, folios):
        for f in folios:
            real_delete(k, f)
        hooks = pc._hooks(k, mapping)
        if hooks is not None:
            for f in folios[:-1]:
                hooks.prep_remove_unmapped_folio(k, mapping, f)
        for f in folios:
            pc.filemap_free_folio(k, mapping, f)
    mp.setattr(pc, "delete_from_page_cache_batch", batch)


def _free_folio_restores_twice(mp):
    def free(self, k, f, folio):
        if folio.private & dz.PRIVATE_NO_DIRECT_MAP:
            k.folio_restore_direct_map(folio, granule_pages=self.restore_granule)
            k.folio_restore_direct_map(folio, granule_pages=self.restore_granule)
            folio.private &= ~dz.PRIVATE_NO_DIRECT_MAP
    mp.setattr(dz.PerFolio, "gmem_free_folio", free)


def _write_ignores_zap(mp):
    mp.setattr(dz.PerFolio, "gmem_write_folio_refused", lambda self, k, f, folio: 0)


def _secretmem_no_flush(mp):
    mp.setattr(dz.Secretmem, "flush_after_add", False)


def _gmem_first_use_errno(mp):
    def first_use(self, k, f, folio):
        if not f.no_direct_map() or folio.private & dz.PRIVATE_NO_DIRECT_MAP:
            return 0
        folio.private |= dz.PRIVATE_NO_DIRECT_MAP  # bit set, zap never done
        return 0
    mp.setattr(dz.PerFolio, "gmem_first_use", first_use)


#: name -> (plant, explore space (kwargs of explore()), bench workload (workload, design) or None)
MUTANTS = {
    "remove hook skips restore": (_filemap_no_restore, dict(design="filemap", offsets=1),
                                  ("boot-fallocate", "filemap")),
    "restore before delete": (_restore_before_delete, dict(design="filemap", offsets=1), ("boot-fallocate", "filemap")),
    "zap after insert": (_zap_after_insert, dict(design="filemap", offsets=1), ("boot-fallocate", "filemap")),
    "skip the zap flush": (_skip_zap_flush, dict(design="filemap", offsets=1), ("boot-fallocate", "filemap")),
    "skip zeroing": (_skip_zeroing, dict(design="filemap", offsets=1), ("boot-fallocate", "filemap")),
    "per-folio forgets the private bit": (_forget_private_bit, dict(design="per-folio", offsets=1),
                                          ("boot-fallocate", "per-folio")),
    "per-folio sets the bit without zapping": (_gmem_first_use_errno, dict(design="per-folio", offsets=1),
                                               ("boot-fallocate", "per-folio")),
    "secretmem put-before-restore": (_put_before_restore, dict(design="secretmem", offsets=0, secret=1), None),
    "secretmem flush skipped after add": (_secretmem_no_flush, dict(design="secretmem", offsets=0, secret=1), None),
    "4K restore of a 2M zap": (_restore_4k, dict(design="filemap", offsets=1, large_folios=True, large_zap=True,
                                                 max_depth=3),
                               ("boot-fallocate", "filemap", "2M")),
    "-EEXIST path skips restore": (_eexist_skips_restore, dict(design="filemap", offsets=1), None),
    "truncate batch skips one folio": (_batch_skips_one, dict(design="filemap", offsets=2),
                                       ("boot-fallocate", "filemap")),
    "free_folio restores twice": (_free_folio_restores_twice, dict(design="per-folio", offsets=1),
                                  ("boot-fallocate", "per-folio")),
    "write() ignores the zap state": (_write_ignores_zap, dict(design="per-folio", offsets=1), None),
}

#: Mutants the explorer cannot see, and why (its properties do not observe what they change).
EXPLORE_BLIND = {
    "skip zeroing": "no property observes stale kernel data handed to the guest (scenarios check the content)",
    "free_folio restores twice": "a second restore of a valid entry changes no state the invariants read; "
                                 "only the restores counter shows it",
}

#: Mutants whose bench counters cannot differ, and why.
BENCH_BLIND = {
    "restore before delete": "same calls in another order: the counters are order-free",
    "zap after insert": "same calls in another order: the counters are order-free",
}

_SCENARIOS = [load(p) for p in find_files(["scenarios"])]
_BASE: dict = {}


def _scenarios_caught() -> list[str]:
    failed = []
    for scn in _SCENARIOS:
        try:
            runs = run_scenario(scn)
        except Exception as e:  # a mutant may also make a step misbehave outright
            failed.append(f"{scn.name} ({type(e).__name__})")
            continue
        failed += [f"{r.scenario.name}/{r.design}/{r.arch}" for r in runs if not r.ok]
    return failed


def _explored(kw: dict) -> dict:
    kw = {"max_depth": 4, "max_states": 60_000, **kw}
    explore_check._BOOTED.clear()  # booted machines are cached per process; the planted code changes within it
    r = explore(**kw)
    return {k: ce for k, ce in r.per_invariant.items() if ce is not None}


def _new(found: dict, base: dict) -> list[str]:
    return sorted(k for k, ce in found.items() if (k not in base or ce.steps != base[k].steps) and ce.verified)


def _bench(workload):
    if workload is None:
        return None
    name, design, folio = (*workload, "4K")[:3]
    try:
        r = run_workload(name, size="4M", design=design, folio=folio)
    except BulkUnsupported as e:  # the range engine refuses to count what it cannot (a split restore...)
        return "refused", str(e)
    return r.results, dict(r.counters)


def _baseline(key, compute):
    if key not in _BASE:
        _BASE[key] = compute()
    return _BASE[key]


ROWS: dict = {}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mutant_is_caught(name, monkeypatch):
    plant, space, workload = MUTANTS[name]
    base_found = _baseline(("explore", tuple(sorted(space.items()))), lambda: _explored(space))
    base_bench = _baseline(("bench", workload), lambda: _bench(workload))
    assert not _baseline("scenarios", _scenarios_caught), "scenarios fail without any mutant"
    with monkeypatch.context() as mp:
        plant(mp)
        scen = _scenarios_caught()
        found = _explored(space)
        bench = _bench(workload)
    reproduced = _new(found, base_found)
    blind = EXPLORE_BLIND.get(name)
    bench_blind = BENCH_BLIND.get(name)
    bench_caught = workload is not None and bench != base_bench
    ROWS[name] = (f"caught ({len(scen)} runs fail)" if scen else "MISSED",
                  f"caught ({', '.join(reproduced)})" if reproduced else f"cannot see: {blind}" if blind else "MISSED",
                  "no workload reaches this path" if workload is None else
                  ("caught (refuses to count it)" if bench and bench[0] == "refused" else "caught (counters differ)")
                  if bench_caught else f"cannot see: {bench_blind}" if bench_blind
                  else "MISSED")
    assert scen, f"{name}: no scenario fails"
    assert bool(reproduced) != bool(blind), (f"{name}: the explorer running System finds no new counterexample "
                                             "that replays" if not blind else f"{name}: listed as blind but caught")
    if workload is not None:
        assert bench_caught != bool(bench_blind), f"{name}: bench {'missed it' if not bench_blind else 'caught it'}"


def test_print_mutant_table():
    if not ROWS:
        pytest.skip("run with the mutant tests")
    width = max(len(n) for n in ROWS)
    print()
    print(f"{'mutant':<{width}}  {'scenarios':<22}  {'nbmodel explore':<28}  bench")
    for name, (a, b, d) in ROWS.items():
        print(f"{name:<{width}}  {a:<22}  {b:<28}  {d}")

