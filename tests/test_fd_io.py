"""read / pread64 / pwrite64 / ftruncate on guest_memfd and memfd_secret fds, as the running 6.18 kernel answers
them; each test names its oracle (kernel function, and the live kernel where it exists here).

On the old code none of these ran: ``System.step("read", ...)`` (and pread, pwrite, ftruncate) raised
ModelInputError "unknown op" (see ``test_the_ops_are_new``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbmodel import live
from nbmodel.errors import Errno, ModelInputError
from nbmodel.secretmem import secretmem_ftruncate
from nbmodel.system import OPS, System

SCEN = Path(__file__).resolve().parents[1] / "scenarios"
IO_OPS = ("read", "pread", "pwrite", "ftruncate")


def _gmem():
    s = System(design="filemap")
    assert s.step("gmem_create", file="g", size="16K", flags=["MMAP", "INIT_SHARED"]).result == "0"
    return s


def _secret(size="8K"):
    s = System(design="secretmem")
    assert s.step("secret_create", file="s", size=size).result == "0"
    return s


def test_the_ops_are_new():
    """Planted bug: without the new OpSpecs (the old code) every one of these steps is refused as unknown."""
    saved = {op: OPS.pop(op) for op in IO_OPS}
    try:
        for op in IO_OPS:
            with pytest.raises(ModelInputError, match="unknown op"):
                _gmem().step(op, file="g", **({"size": "4K"} if op == "ftruncate" else {}))
    finally:
        OPS.update(saved)


@pytest.mark.parametrize("make,name", [(_gmem, "g"), (_secret, "s")])
def test_read_is_einval(make, name):
    """fs/read_write.c vfs_read(): no FMODE_CAN_READ -> -EINVAL. alloc_file() (fs/file_table.c) sets it only when
    fop->read or fop->read_iter exists, and kvm_gmem_fops / secretmem_fops have neither. Live 6.18: EINVAL."""
    s = make()
    assert s.step("read", file=name, len="4K").result == "EINVAL"
    assert s.step("read", file=name, len=0).result == "EINVAL"   # the mode check comes before the length


@pytest.mark.parametrize("make,name", [(_gmem, "g"), (_secret, "s")])
@pytest.mark.parametrize("op", ["pread", "pwrite"])
def test_positional_io_is_espipe(make, name, op):
    """fs/read_write.c ksys_pread64() / ksys_pwrite64(): pos < 0 -> -EINVAL first; then no FMODE_PREAD /
    FMODE_PWRITE (an alloc_file_pseudo() file never gets them) -> -ESPIPE. Live 6.18: ESPIPE, and EINVAL at -1."""
    s = make()
    assert s.step(op, file=name, offset="4K", len="4K").result == "ESPIPE"
    assert s.step(op, file=name, offset=-1, len="4K").result == "EINVAL"


def test_gmem_ftruncate_is_always_einval():
    """virt/kvm/guest_memfd.c kvm_gmem_setattr() returns -EINVAL (reached through do_ftruncate() -> do_truncate()
    -> notify_change()); fs/open.c do_sys_ftruncate() gives -EINVAL for a negative length first. Live 6.18:
    EINVAL for the same size, a larger one, 0 and -1. The size does not change."""
    s = _gmem()
    for size in ("16K", "32K", 0, -4096):
        assert s.step("ftruncate", file="g", size=size).result == "EINVAL"
    assert s.files["g"].size == 16384
    assert s.step("user_fault", file="g", offset="16K").result == "SIGBUS"


def test_secret_ftruncate_sets_size_once():
    """mm/secretmem.c secretmem_setattr(): ``(ia_valid & ATTR_SIZE) && inode->i_size`` -> -EINVAL, else
    simple_setattr(). Live 6.18: from size 0, ftruncate(0) and ftruncate(0) again succeed, ftruncate(6000)
    succeeds, then 6000 / 8192 / 0 are EINVAL; faults follow the size set."""
    s = _secret(size=0)
    assert s.step("ftruncate", file="s", size=0).result == "0"
    assert s.step("secret_fault", file="s", offset=0).result == "SIGBUS"   # i_size 0
    assert s.step("ftruncate", file="s", size=6000).result == "0"
    assert s.step("secret_fault", file="s", offset="4K").result == "0"      # 4096 < 6000
    for size in (6000, "8K", 0):
        assert s.step("ftruncate", file="s", size=size).result == "EINVAL"
    assert s.files["s"].size == s.files["s"].mapping.size == 6000
    assert s.step("secret_fault", file="s", offset="8K").result == "SIGBUS"


def test_secret_ftruncate_refused_before_any_page():
    """mm/secretmem.c secretmem_setattr() tests i_size, not whether pages exist: a file created with a size and
    never faulted still refuses ftruncate, even to the same size (live 6.18: EINVAL)."""
    s = _secret(size="8K")
    assert s.files["s"].mapping.nrpages == 0
    assert s.step("ftruncate", file="s", size="8K").result == "EINVAL"
    assert s.step("ftruncate", file="s", size="16K").result == "EINVAL"


def test_secret_ftruncate_efbig_and_negative():
    """fs/attr.c inode_newsize_ok(): past s_maxbytes (MAX_LFS_FILESIZE on the pseudo filesystem) -> -EFBIG;
    fs/open.c do_sys_ftruncate(): negative -> -EINVAL. State unchanged either way."""
    s = _secret(size=0)
    f = s.files["s"]
    assert s.step("ftruncate", file="s", size=-1).result == "EINVAL"
    assert secretmem_ftruncate(s.k, f, 1 << 63) == -Errno.EFBIG
    assert f.size == 0


def test_write_op_is_still_the_population_series():
    """The ``write`` op keeps modelling the unmerged write() population series (kvm_gmem_write); ``pwrite`` is
    mainline's ksys_pwrite64() and refuses."""
    s = System(design="filemap")
    s.step("gmem_create", file="g", size="16K", flags=["MMAP"])
    assert s.step("write", file="g", offset=0, len="4K").result == "4096"
    assert s.step("pwrite", file="g", offset=0, len="4K").result == "ESPIPE"


def test_bad_input_leaves_state_unchanged():
    """Model misuse (no such file, a missing size) raises ModelInputError before anything changes."""
    s = _secret()
    before = s.snapshot()
    with pytest.raises(ModelInputError):
        s.step("read", file="nope")
    with pytest.raises(ModelInputError):
        s.step("ftruncate", file="s")
    assert s.snapshot() == before


@pytest.mark.parametrize("path", sorted(SCEN.glob("ABI-IO-*.toml")), ids=lambda p: p.stem)
def test_io_scenarios_run_live_and_agree(path, tmp_path, monkeypatch):
    """The live kernel is the oracle: every ABI-IO scenario runs here with every step's result equal."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    support = live.machine_support()
    run = live.run_live(str(path), support)
    if run.skipped:
        pytest.skip(run.skipped)
    assert run.ok, run.report()
    assert {s.op for s in run.steps} & set(IO_OPS)
