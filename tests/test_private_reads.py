"""No module of the package reads or writes another module's private names (a leading underscore): each reaches
the others through what they make public (the page table through its methods, the allocator through
``choices()`` and ``snapshot()``). Tests may reach inside (they test private helpers and plant mutants); the
package may not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nbmodel"

#: Underscore names of other libraries that are their documented API: ``os._exit()`` ends a forked child
#: without running the parent's cleanup.
ALLOWED = {("os", "_exit")}

#: IPython's display protocol (``_repr_html_``, ``_repr_png_``, graphviz's ``_repr_image_svg_xml``): the names
#: a notebook front end calls to draw a value, public by contract although they start with an underscore.
PROTOCOL = "_repr_"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) \
        and not name.startswith(PROTOCOL)


def _owned(tree: ast.AST) -> set[str]:
    """The private names a module defines: its functions and classes, its module- and class-level names, the
    attributes its methods set on ``self`` or ``cls``, and the names it spells as strings (``__slots__``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            out.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.add(node.value)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
    return {n for n in out if _private(n)}


def private_reaches(source: str, name: str = "<module>") -> list[str]:
    """Every place in ``source`` that reads or writes a private name the module does not define itself:
    ``obj._x`` (``obj`` not ``self`` or ``cls``), and ``from <this package> import _x``."""
    tree = ast.parse(source)
    owned = _owned(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in owned:
            base = node.value
            if isinstance(base, ast.Name) and (base.id in ("self", "cls") or (base.id, node.attr) in ALLOWED):
                continue
            out.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("nbmodel")):
            out += [f"{name}:{node.lineno}: from {node.module} import {a.name}" for a in node.names
                    if _private(a.name)]
    return out


def test_no_module_reaches_into_another():
    found = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 40
    for path in modules:
        found += private_reaches(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    assert not found, "private names reached from outside their module:\n" + "\n".join(found)


def test_the_check_catches_a_read_of_the_page_tables_internals():
    """Planted: the direct map's one-page fast path reading the page table's slots itself, as it did before
    :meth:`PageTable.pte_table` (the check is run on the real module's source with that one line changed)."""
    source = (PACKAGE / "directmap.py").read_text()
    assert not private_reaches(source)
    planted = source.replace("table = pt.pte_table(start)", "table = pt._top.get(start >> 18)", 1)
    assert planted != source
    assert private_reaches(planted, "directmap.py") == [f"directmap.py:{_line(planted, '_top')}: pt._top"]
    # The page table's own module may read it.
    assert not private_reaches((PACKAGE / "pagetable.py").read_text())


@pytest.mark.parametrize("bad, shown", [
    ("def f(k):\n    return k.alloc._pcp[-1]\n", "k.alloc._pcp"),
    ("def f(k):\n    k._rng = None\n", "k._rng"),
    ("from .physmem import _carve\n", "from physmem import _carve"),
    ("from nbmodel.trace import _show\n", "from nbmodel.trace import _show"),
])
def test_the_check_catches_reads_writes_and_imports(bad, shown):
    got = private_reaches(bad, "m.py")
    assert got and got[0].endswith(shown), got


@pytest.mark.parametrize("fine", [
    "class A:\n    def __init__(self):\n        self._x = 1\n\n    def same(self, other):\n        return other._x\n",
    "import os\n\ndef child():\n    os._exit(0)\n",
    "def f(obj):\n    return obj.__class__\n",
])
def test_the_check_passes_a_modules_own_names(fine):
    assert private_reaches(fine) == []


def _line(source: str, needle: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if needle in line)
