"""The guest_memfd and memfd_secret ABI as the running kernel answers it; each test names its oracle."""

from __future__ import annotations

import copy
import pickle

import pytest

from nbmodel.errors import ModelInputError
from nbmodel.system import System


def _create(flags, vm_type="default", size="8K", **kw):
    s = System(**kw)
    return s, s.step("gmem_create", file="g", size=size, flags=flags, vm_type=vm_type).result


@pytest.mark.parametrize("flag", ["MMAP", "INIT_SHARED", "NO_DIRECT_MAP"])
def test_each_supported_flag_alone_creates(flag):
    """tools/testing/selftests/kvm/guest_memfd_test.c test_guest_memfd_flags(): each supported flag alone is
    accepted (kvm_gmem_create() checks only ``flags & ~kvm_gmem_get_supported_flags()``)."""
    assert _create([flag])[1] == "0"


@pytest.mark.parametrize("vm_type", ["snp", "tdx", "sw_protected"])
def test_mmap_is_always_supported(vm_type):
    """include/linux/kvm_host.h kvm_gmem_get_supported_flags(): MMAP is always in the supported set."""
    assert _create(["MMAP"], vm_type)[1] == "0"


@pytest.mark.parametrize("vm_type", ["sw_protected", "snp", "tdx"])
def test_init_shared_only_without_private_memory(vm_type):
    """kvm_arch_supports_gmem_init_shared() is false for VMs with private memory: INIT_SHARED is EINVAL."""
    assert _create(["MMAP", "INIT_SHARED"], vm_type)[1] == "EINVAL"


@pytest.mark.parametrize("size", [1 << 63, (1 << 64) - 4096])
def test_size_not_positive_as_loff_t(size):
    """kvm_gmem_create(): ``loff_t size = args->size; if (size <= 0 || !PAGE_ALIGNED(size)) return -EINVAL``."""
    assert _create(["MMAP"], size=size)[1] == "EINVAL"


@pytest.mark.parametrize("offset,length", [("8K", "4K"), ("12K", "4K"), ("4K", "8K"), ("0", "1G")])
def test_punch_hole_at_or_past_i_size_succeeds(offset, length):
    """guest_memfd_test.c test_fallocate(): "fallocate(PUNCH_HOLE) at/after total_size should succeed"."""
    s, _ = _create(["MMAP", "INIT_SHARED"])
    s.step("fallocate", file="g", len="8K")
    assert s.step("punch_hole", file="g", offset=offset, len=length).result == "0"
    assert s.files["g"].mapping.nrpages == (1 if offset == "4K" else 2 if offset != "0" else 0)


def test_allocate_past_i_size_is_einval():
    """guest_memfd_test.c test_fallocate(): allocating at or past total_size fails with EINVAL."""
    s, _ = _create(["MMAP"])
    assert s.step("fallocate", file="g", offset="8K", len="4K").result == "EINVAL"


@pytest.mark.parametrize("args", [dict(offset=-4096, len="4K"), dict(offset=0, len=-4096),
                                  dict(offset="-4K", len="4K"), dict(offset=0, len=0)])
@pytest.mark.parametrize("op", ["fallocate", "punch_hole"])
def test_negative_offset_or_length_is_einval(op, args):
    """fs/open.c vfs_fallocate(): ``if (offset < 0 || len <= 0) return -EINVAL``; state unchanged."""
    s, _ = _create(["MMAP"])
    before = s.snapshot()[:2]
    assert s.step(op, file="g", **args).result == "EINVAL"
    assert s.snapshot()[:2][1] == before[1]


@pytest.mark.parametrize("size", ["0", "5000", "1"])
def test_memfd_secret_any_size(size):
    """mm/secretmem.c: memfd_secret() then ftruncate(size) accepts size 0 and unaligned sizes."""
    s = System(design="secretmem")
    assert s.step("secret_create", file="s", size=size).result == "0"


def test_memfd_secret_faults_below_i_size_only():
    """secretmem_fault(): ``if (((loff_t)vmf->pgoff << PAGE_SHIFT) >= i_size_read(inode)) return
    vmf_error(-EINVAL)`` (SIGBUS): with i_size 5000, page 1 (offset 4096) faults in, page 2 does not."""
    s = System(design="secretmem")
    s.step("secret_create", file="s", size=5000)
    assert s.step("secret_fault", file="s", offset=4100).result == "0"
    assert s.step("secret_fault", file="s", offset=8192).result == "SIGBUS"


def test_mmap_without_the_mmap_flag_is_enodev():
    """virt/kvm/guest_memfd.c kvm_gmem_mmap(): -ENODEV without GUEST_MEMFD_FLAG_MMAP, so no user fault exists."""
    s, _ = _create(["INIT_SHARED"])
    assert s.step("mmap", file="g").result == "ENODEV"
    assert s.step("user_fault", file="g").result == "ENODEV"
    s2, _ = _create(["MMAP"])
    assert s2.step("mmap", file="g").result == "0"
    assert s2.step("user_fault", file="g").result == "SIGBUS"  # private memory: no INIT_SHARED


@pytest.mark.parametrize("op", ["user_fault", "guest_fault"])
def test_filemap_large_folio_falls_back_on_any_error(op):
    """mm/filemap.c __filemap_get_folio(): ``do { ... } while (order-- > min_order)`` retries every smaller order
    whatever the add returned; here the hook's zap refuses the 2M folio (-EINVAL) and one page goes in."""
    s = System(design="filemap", large_folios=True)
    s.step("gmem_create", file="g", size="2M")
    assert s.step(op, file="g").result == "0"
    folio = s.files["g"].mapping.lookup(0)
    assert folio.order == 0 and s.k.counters["zaps"] == 1 and not s.steps[-1].broken


def test_deepcopy_and_pickle_are_independent():
    """Kernel callbacks reach their file through ``mapping->host``, not a captured System."""
    s = System(design="per-folio", memory="1G")
    s.step("gmem_create", file="g", size="2M")
    s.step("guest_fault", file="g", offset=0)
    c = copy.deepcopy(s)
    c.step("punch_hole", file="g", len="4K")
    assert s.k.counters["restores"] == 0 and c.k.counters["restores"] == 1 and not c.steps[-1].broken
    p = pickle.loads(pickle.dumps(s))
    p.step("punch_hole", file="g", len="4K")
    assert p.k.counters["restores"] == 1 and s.k.counters["restores"] == 0


@pytest.mark.parametrize("kw", [dict(seed=None), dict(switches=None), dict(mode=5), dict(large_folios="no"),
                                dict(cpus=True), dict(memory="1048576T"), dict(switches="skip_flush"),
                                dict(fwb=1), dict(design="v13")])
def test_setup_rejects_bad_options(kw):
    with pytest.raises(ModelInputError):
        System(**kw)


@pytest.mark.parametrize("kw", [dict(interrupt_cpu=1), dict(interrupt_at="after_zap", interrupt_cpu=7),
                                dict(interrupt_at="after_zap", interrupt_cpu=True)])
def test_step_rejects_bad_interrupts(kw):
    s = System()
    s.step("gmem_create", file="g", size="8K")
    before = s.snapshot()
    with pytest.raises(ModelInputError):
        s.step("fallocate", file="g", len="4K", **kw)
    assert s.snapshot() == before


def test_step_rejects_a_list_as_op():
    with pytest.raises(ModelInputError):
        System().step(["close"])
