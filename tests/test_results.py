"""One result convention inside the model, names only at the edge.

Inside the model a fault handler returns a ``vm_fault_t`` (:class:`nbmodel.errors.VmFault`), other kernel paths
0 / a negative errno / a count, a kernel access an :class:`nbmodel.errors.Access`, and a path that oopsed
:data:`nbmodel.errors.OOPS`. Only :func:`nbmodel.system.step_result` turns them into the strings a step shows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nbmodel import guest_memfd as gm
from nbmodel import secretmem as sm
from nbmodel.errors import OOPS, VM_FAULT_ERROR, Access, Errno, ModelInputError, VmFault, vmf_error
from nbmodel.system import System, step_result
from nbmodel.units import PAGE_SIZE

NBMODEL = Path(__file__).resolve().parents[1] / "nbmodel"
ALL = ["MMAP", "INIT_SHARED", "NO_DIRECT_MAP"]


# -- vmf_error() and the edge conversion ---------------------------------------------------------------------------
def test_vmf_error_maps_enomem_to_oom_and_every_other_errno_to_sigbus():
    assert vmf_error(-Errno.ENOMEM) is VmFault.OOM
    assert vmf_error(-Errno.EHWPOISON) is VmFault.HWPOISON
    others = [e for e in Errno if e not in (Errno.ENOMEM, Errno.EHWPOISON)]
    assert len(others) > 5
    assert {vmf_error(-e) for e in others} == {VmFault.SIGBUS}
    assert all(vmf_error(-e) & VM_FAULT_ERROR for e in Errno)


@pytest.mark.parametrize("bad", [0, 12, True, -Errno.ENOMEM * 1.0, "ENOMEM", None])
def test_vmf_error_refuses_what_is_not_a_negative_errno(bad):
    with pytest.raises(ModelInputError):
        vmf_error(bad)


def test_step_result_names_each_kind_of_answer():
    assert step_result(VmFault.LOCKED) == "0"
    assert step_result(VmFault.SIGBUS) == "SIGBUS"
    assert step_result(VmFault.OOM) == "OOM"
    assert step_result(VmFault.SIGBUS | VmFault.LOCKED) == "SIGBUS"  # the error bit is what the task sees
    assert [step_result(a) for a in Access] == ["ok", "stale", "oops"]
    assert step_result(OOPS) == "oops"
    assert step_result(0) == "0" and step_result(4096) == "4096"
    assert step_result(-Errno.EINVAL) == "EINVAL" and step_result(-Errno.ENODEV) == "ENODEV"
    for r in (step_result(VmFault.OOM), step_result(Access.STALE), step_result(-Errno.EEXIST)):
        assert type(r) is str  # plain str, not an enum member: pickles, JSON and reprs stay as they were


@pytest.mark.parametrize("bad", ["SIGBUS", "oops", None, Errno.EINVAL, 1.0, True])
def test_step_result_refuses_what_no_kernel_path_returns(bad):
    """A path that returned a name (or a positive Errno member, or a bool) is a model bug: it must not pass."""
    with pytest.raises(TypeError):
        step_result(bad)


# -- the model functions, called directly ----------------------------------------------------------------------------
def _gmem(design="per-folio", flags=ALL, size=4 * PAGE_SIZE, **kw):
    s = System(design=design, **kw)
    assert s.step("gmem_create", file="g", size=size, flags=flags).result == "0"
    return s, s.files["g"]


def test_kvm_gmem_fault_user_mapping_returns_vm_fault_t():
    s, f = _gmem()
    assert gm.kvm_gmem_fault_user_mapping(s.k, f, 0) is VmFault.LOCKED
    assert gm.kvm_gmem_fault_user_mapping(s.k, f, f.size) is VmFault.SIGBUS  # past i_size
    s, f = _gmem(flags=["MMAP", "NO_DIRECT_MAP"])
    assert gm.kvm_gmem_fault_user_mapping(s.k, f, 0) is VmFault.SIGBUS  # no INIT_SHARED


def test_the_first_use_zap_failing_for_memory_is_vm_fault_oom():
    """v12's zap splits the direct map; the page-table page for the split cannot be had: -ENOMEM, and the
    handler returns ``vmf_error(-ENOMEM)``."""
    s, f = _gmem(size=2 << 20)
    s.step("fail_alloc", count=1)
    assert gm.kvm_gmem_fault_user_mapping(s.k, f, 0) is VmFault.OOM


def test_a_vmm_store_without_mmap_flag_is_mmap_enodev():
    s, f = _gmem(flags=["INIT_SHARED"])
    assert gm.vmm_store(s.k, f, 0) == -Errno.ENODEV
    s, f = _gmem()
    assert gm.vmm_store(s.k, f, 0) is VmFault.LOCKED


def test_an_oopsing_fault_path_returns_the_one_sentinel():
    # zero_after_insert: clear_highpage() through the direct map of a folio the page cache already zapped
    s, f = _gmem(design="filemap", switches=["zero_after_insert"])
    assert gm.kvm_gmem_fault_user_mapping(s.k, f, 0) is OOPS
    s, f = _gmem(design="filemap", switches=["zero_after_insert"])
    assert gm.kvm_gmem_get_pfn(s.k, f, 0) is OOPS
    # Frank's case under v12: the per-folio first fault zeroes a folio of the unmapped source
    s, f = _gmem(unmapped_source=True)
    assert gm.kvm_gmem_allocate(s.k, f, 0, PAGE_SIZE) == 0
    assert gm.kvm_gmem_fault_user_mapping(s.k, f, 0) is OOPS
    # ... and under the secretmem pattern the __GFP_ZERO allocation itself oopses, inside fallocate()
    s, f = _gmem(design="secretmem", unmapped_source=True)
    assert gm.kvm_gmem_allocate(s.k, f, 0, PAGE_SIZE) is OOPS


def test_kvm_gmem_get_pfn_returns_zero_or_a_negative_errno():
    s, f = _gmem()
    assert gm.kvm_gmem_get_pfn(s.k, f, 0) == 0
    assert gm.kvm_gmem_get_pfn(s.k, f, f.size) == -Errno.EINVAL


def test_secretmem_fault_returns_vm_fault_t():
    s = System(design="secretmem")
    s.step("secret_create", file="s", size=2 << 20)
    f = s.files["s"]
    s.step("fail_alloc", count=1)  # set_direct_map_invalid_noflush() cannot split: -ENOMEM
    assert sm.secretmem_fault(s.k, f, 0) is VmFault.OOM
    assert sm.secretmem_fault(s.k, f, 0) is VmFault.LOCKED
    assert sm.secretmem_fault(s.k, f, 0) is VmFault.LOCKED  # already cached
    assert sm.secretmem_fault(s.k, f, f.size) is VmFault.SIGBUS  # vmf_error(-EINVAL)


def test_kernel_access_returns_an_access():
    s, f = _gmem()
    s.step("user_fault", file="g")
    pfn = f.mapping.lookup(0).pfn
    assert s.k.kernel_access(pfn) is Access.OOPS  # zapped at first use
    s, f = _gmem(flags=["MMAP", "INIT_SHARED"])
    s.step("user_fault", file="g")
    assert s.k.kernel_access(f.mapping.lookup(0).pfn) is Access.OK


# -- the edge: step strings are what they always were --------------------------------------------------------------
def _results(system, steps):
    out = [system.step(**st) for st in steps]
    for st in out:
        assert type(st.result) is str and type(st.interrupt) in (str, type(None))
    return [st.result for st in out]


def test_step_strings_at_the_edge():
    create = {"op": "gmem_create", "file": "g", "size": "2M"}
    assert _results(System(design="per-folio"), [
        create, {"op": "user_fault", "file": "g", "offset": "2M"}, {"op": "guest_fault", "file": "g", "offset": "2M"},
        {"op": "fail_alloc"}, {"op": "user_fault", "file": "g"}, {"op": "user_fault", "file": "g"},
        {"op": "kernel_read", "file": "g"}, {"op": "kernel_read", "file": "g", "offset": 4096}]) == \
        ["0", "SIGBUS", "EINVAL", "0", "OOM", "0", "oops", "ENOENT"]
    assert _results(System(design="filemap", switches=["zero_after_insert"]), [
        create, {"op": "user_fault", "file": "g"}]) == ["0", "oops"]
    assert _results(System(design="filemap"), [
        {**create, "flags": ["INIT_SHARED"]}, {"op": "user_fault", "file": "g"}]) == ["0", "ENODEV"]
    assert _results(System(design="secretmem"), [
        {"op": "secret_create", "file": "s", "size": "2M"}, {"op": "fail_alloc"},
        {"op": "secret_fault", "file": "s"}, {"op": "secret_fault", "file": "s", "offset": "2M"}]) == \
        ["0", "0", "OOM", "SIGBUS"]


def test_an_interrupt_result_is_a_plain_string():
    s = System(design="filemap")
    s.step("gmem_create", file="g", size="2M")
    st = s.step("user_fault", file="g", interrupt_at="after_insert", interrupt_cpu=1)
    assert st.interrupt == "oops" and type(st.interrupt) is str
    st = s.step("punch_hole", file="g", len="2M", interrupt_at="after_restore", interrupt_cpu=1)
    assert st.interrupt == "ok" and type(st.interrupt) is str


# -- no names and no bare errno literals inside the model ----------------------------------------------------------
#: The names a kernel answer gets at the edge. "ok" is left out: it is also a dict key and a table cell.
RESULT_NAMES = frozenset({e.name for e in Errno} | {v.name for v in VmFault} | {"oops", "stale"})
ERROR_NAMES = frozenset({e.name for e in Errno} | {v.name for v in VmFault})
#: Modules that read step strings (the explorer's observations, its reports, the tables of alternatives.py) or a
#: real kernel's errno: they compare against the edge's names, and may.
FRONT_ENDS = {"explore_results.py", "explore_state.py", "explore_check.py", "alternatives.py", "realkernel.py"}


def _strs(node) -> list[ast.Constant]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _returned(node) -> list[ast.Constant]:
    """The string constants an expression can evaluate to (through ``a if c else b``, ``a or b`` and the items of
    a returned tuple), not those it merely uses (call arguments, dict keys)."""
    if isinstance(node, ast.Constant):
        return [node] if isinstance(node.value, str) else []
    if isinstance(node, ast.IfExp):
        return _returned(node.body) + _returned(node.orelse)
    if isinstance(node, ast.BoolOp):
        return [c for v in node.values for c in _returned(v)]
    if isinstance(node, ast.Tuple):
        return [c for v in node.elts for c in _returned(v)]
    return []


def convention_violations(source: str, name: str = "<module>") -> list[str]:
    """What in ``source`` breaks the convention: a ``return`` of an edge name; a bare negative integer literal
    that could be an errno (``-N`` with N >= 2, or ``return -1``); outside the front ends, a comparison with an
    edge name or ``"ok"`` and any literal errno / fault name (an event's ``ret=`` spells ``Errno.X.name``).
    The edge itself (``step_result`` in system.py) and the definitions in errors.py are not checked."""
    tree = ast.parse(source)
    out = []
    skip: set = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "step_result":
            skip |= set(ast.walk(node))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # docstrings
            skip.add(node.value)
    front = name in FRONT_ENDS
    for node in ast.walk(tree):
        if node in skip:
            continue
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Return) and node.value is not None:
            bad = [c.value for c in _returned(node.value) if c.value in RESULT_NAMES]
            if bad:
                out.append(f"{where}: returns the name {bad[0]!r}")
            if isinstance(node.value, ast.UnaryOp) and isinstance(node.value.op, ast.USub) \
                    and isinstance(node.value.operand, ast.Constant):
                out.append(f"{where}: returns the bare literal -{node.value.operand.value}")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
                and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int \
                and node.operand.value >= 2:
            out.append(f"{where}: bare negative literal -{node.operand.value} (spell it -Errno.X)")
        elif isinstance(node, ast.Compare) and not front:
            bad = [c.value for c in _strs(node) if c.value in RESULT_NAMES | {"ok"} and c not in skip]
            if bad:
                out.append(f"{where}: compares with the name {bad[0]!r}")
        elif isinstance(node, ast.Constant) and node.value in ERROR_NAMES and not front and node not in skip:
            out.append(f"{where}: the literal name {node.value!r}")
    return sorted(set(out))


def test_the_checker_catches_what_it_looks_for():
    planted = {
        'def f(k):\n    return "SIGBUS"\n': "returns the name 'SIGBUS'",
        'def f(k):\n    return "oops", None\n': "returns the name 'oops'",
        'def f(k, ok):\n    return "0" if ok else "OOM"\n': "returns the name 'OOM'",
        'def f(k):\n    return -22\n': "bare negative literal -22",
        'def f(k):\n    return -1\n': "returns the bare literal -1",
        'def f(k, r):\n    return 1 if r == "oops" else 0\n': "compares with the name 'oops'",
        'def f(k, r):\n    return r in ("ok", "stale")\n': "compares with the name",
        'def f(k):\n    k.emit("error", ret="ENOMEM")\n': "the literal name 'ENOMEM'",
        'x = {"err": -12}\n': "bare negative literal -12",
    }
    for src, want in planted.items():
        got = convention_violations(src, "planted.py")
        assert any(want in g for g in got), (src, got)
    clean = ('def f(k, lend=-1):\n    """Returns "SIGBUS" or -22 in a docstring."""\n'
             '    return -Errno.EINVAL if lend == -1 else k.emit("oops", pfn=1)\n')
    assert convention_violations(clean, "clean.py") == []
    edge = 'def step_result(ret):\n    return "SIGBUS" if ret == "oops" else -22\n'
    assert convention_violations(edge, "system.py") == []


def test_no_module_in_the_model_breaks_the_convention():
    files = [p for p in sorted(NBMODEL.rglob("*.py")) if "viz" not in p.relative_to(NBMODEL).parts
             and p.name != "errors.py"]
    assert len(files) > 20
    found = [v for p in files for v in convention_violations(p.read_text(encoding="utf-8"), p.name)]
    assert found == [], "\n".join(found)
