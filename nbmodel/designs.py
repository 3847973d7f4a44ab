"""Where the direct map is zapped and restored: the three designs and the switches that break them.

``per-folio``  v12 (2026-04-10): guest_memfd zaps each folio at first use and keeps
               ``KVM_GMEM_FOLIO_NO_DIRECT_MAP`` in ``folio->private``; ``->free_folio`` restores.
``filemap``    the agreed direction (seed mail, 2026-05-08; prototype ``bjackman/linux`` e267797c): the page
               cache zeroes and zaps a folio before it enters an ``AS_NO_DIRECT_MAP`` mapping and restores it
               when it leaves, by any path. No per-folio state.
``secretmem``  mainline ``mm/secretmem.c``'s pattern: the owner zaps before the add, flushes after it, and
               restores in ``->free_folio``; applied to guest_memfd it is "do what secretmem does".
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Errno, ModelInputError

DESIGNS = ("per-folio", "filemap", "secretmem")

#: Break-it switches: name -> what it does. Each makes some scenario fail visibly.
SWITCHES = {
    "skip_flush": "flush_tlb_kernel_range() after a zap does nothing: other CPUs keep stale entries",
    "zero_after_insert": "filemap: do not zero before the add; guest_memfd zeroes through the direct map after it",
    "restore_4k": "allow 2M folios to be zapped whole, then restore them one 4K page at a time",
    "arm64_no_bbml2": "arm64 with block mappings but no BBML2: a partial-block change cannot split",
    "unhooked_migration": "filemap: migration and replace_page_cache_folio() bypass the hooks",
    "put_before_restore": "secretmem before 6f86d0534fdd: on a lost -EEXIST race the folio is freed, then restored",
}

#: Options that are not bugs: choices a reader can compare.
OPTIONS = {
    "write": ("refuse", "mermap"),   # filemap design: what write() does
    "large_folios": (False, True),   # 2M guest_memfd folios (ahead of mainline)
    "large_zap": (False, True),      # folio_zap_direct_map() takes 2M folios whole (ahead of v12)
    "batch_flush": (False, True),    # filemap: one flush per fallocate() instead of one per folio
}

PRIVATE_NO_DIRECT_MAP = 1 << 0  # KVM_GMEM_FOLIO_NO_DIRECT_MAP, BIT(0) of folio->private (v12)


@dataclass
class FilemapHooks:
    """``prep_add_unmapped_folio()`` / ``prep_remove_unmapped_folio()`` of the prototype's slow path
    (``CONFIG_ARCH_HAS_SET_DIRECT_MAP``): zero, then ``folio_zap_direct_map()`` (which flushes) before the
    insert; ``folio_restore_direct_map()`` then zero after the delete."""

    zero_before_add: bool = True
    restore_granule: int | None = None
    hook_replace: bool = True
    hook_migrate: bool = True
    batch: list | None = None  # PFNs whose flush was deferred by a batched fallocate()

    def prep_add_unmapped_folio(self, k, mapping, folio, zero: bool = True) -> int:
        if zero and self.zero_before_add:
            k.folio_zero(folio)
        if self.batch is not None:
            return self._zap_deferred(k, folio)
        return k.folio_zap_direct_map(folio)

    def _zap_deferred(self, k, folio) -> int:
        if folio.order and not k.allow_large_zap:
            return -Errno.EINVAL
        ret = k.set_direct_map_valid_noflush(k.page_address(folio.pfn), folio.nr_pages, False)
        if ret == 0:
            k.counters["zaps"] += 1
            self.batch.append((folio.pfn, folio.nr_pages))
        return ret

    def prep_remove_unmapped_folio(self, k, mapping, folio) -> None:
        k.folio_restore_direct_map(folio, granule_pages=self.restore_granule)
        k.folio_zero(folio)

    def after_add(self, k, mapping, folio) -> None:
        if self.zero_before_add:
            folio.flags.add("zeroed_at_add")

    def flush_batch(self, k) -> None:
        """End a batched fallocate(): the deferred zaps hit scattered PFNs, so one ``flush_tlb_all()``."""
        batch, self.batch = self.batch, None
        if batch and not k.skip_flush:
            k.flush_tlb_all(reason="batched zap")


@dataclass(frozen=True)
class Config:
    """A design with its switches and options, validated."""

    design: str = "filemap"
    switches: frozenset = frozenset()
    write: str = "refuse"
    large_folios: bool = False
    batch_flush: bool = False
    large_zap: bool = False

    @classmethod
    def make(cls, design="filemap", switches=(), write="refuse", large_folios=False, batch_flush=False,
             large_zap=False):
        if design not in DESIGNS:
            raise ModelInputError(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}")
        unknown = set(switches) - set(SWITCHES)
        if unknown:
            raise ModelInputError(f"unknown switches {sorted(unknown)}; known: {', '.join(SWITCHES)}")
        if write not in OPTIONS["write"]:
            raise ModelInputError(f"write must be one of {OPTIONS['write']}, not {write!r}")
        return cls(design, frozenset(switches), write, bool(large_folios or "restore_4k" in switches),
                   bool(batch_flush), bool(large_zap or "restore_4k" in switches))

    def label(self) -> str:
        extra = sorted(self.switches)
        if self.design == "filemap" and self.write != "refuse":
            extra.append(f"write={self.write}")
        if self.large_folios and "restore_4k" not in self.switches:
            extra.append("large_folios")
        if self.batch_flush:
            extra.append("batch_flush")
        if self.large_zap and "restore_4k" not in self.switches:
            extra.append("large_zap")
        return self.design + (f" [{', '.join(extra)}]" if extra else "")

    def install(self, k) -> None:
        """Configure the kernel for this design: page-cache hooks and break-it switches."""
        k.skip_flush = "skip_flush" in self.switches
        k.allow_large_zap = self.large_zap
        if self.design == "filemap":
            k.pagecache_hooks = FilemapHooks(
                zero_before_add="zero_after_insert" not in self.switches,
                restore_granule=1 if "restore_4k" in self.switches else None,
                hook_replace="unhooked_migration" not in self.switches,
                hook_migrate="unhooked_migration" not in self.switches,
            )
        else:
            k.pagecache_hooks = None
