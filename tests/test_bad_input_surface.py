"""Generated bad input against the public surface: the scenario format and ``nbmodel run``, ``System.step``,
the CLI's numeric options, and the kernel-layer entry points. Every case must end in the error the surface
promises (ScenarioError ``FILE:LINE: ...`` / exit 2 with one line / ModelInputError / argparse exit 2) with the
state unchanged, or succeed because the generated value happened to be valid. Any other exception fails."""

from __future__ import annotations

import argparse
import json
import math
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nbmodel import bench, cli
from nbmodel import scenario as sc
from nbmodel.errors import ModelInputError
from nbmodel.kernel import Kernel
from nbmodel.physmem import MemoryMap, PageAllocator
from nbmodel.system import INTERRUPT_POINTS, OPS, REQUIRED, System
from nbmodel.units import parse_size

MEM = "16M"
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- values a careless user or a fuzzer gives where a scalar belongs -------------------------------------------
huge_ints = st.sampled_from([2**63, 2**64, -(2**63), 10**30, 2**63 - 1])
bad_scalars = st.one_of(
    st.booleans(), st.integers(-5, 5), huge_ints, st.integers(4097, 4200),
    st.sampled_from([math.nan, math.inf, -math.inf, 1.5, -0.0]),
    st.sampled_from(["", " ", "abc", "-1", "4097", "1K", "1T", "257G", "99999999999999999999G", "9" * 30 + "K",
                     "0x1000", "4G", "x\x1b[31m", "\u202e", "nope", "after_zap", "per-folio", "EPERM"]),
)
# None stands for "the key is missing" in a file (TOML has no null) and is passed as None to Python calls.
bad_values = st.one_of(st.none(), bad_scalars, st.lists(bad_scalars, max_size=3),
                       st.dictionaries(st.sampled_from(["a", "x86", "op"]), bad_scalars, max_size=2))
py_values = st.one_of(bad_values, st.lists(st.one_of(st.none(), bad_scalars), min_size=1, max_size=2))


def toml_value(v) -> str:
    """A tiny TOML writer for the values above (inline tables and arrays)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_doc(doc: dict) -> str:
    out = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict | list) or k not in (
        "setup", "step", "expect")]
    if isinstance(doc.get("setup"), dict):
        out.append("[setup]")
        out += [f"{k} = {toml_value(v)}" for k, v in doc["setup"].items()]
    for table in ("step", "expect"):
        if isinstance(doc.get(table), list) and all(isinstance(t, dict) for t in doc[table]):
            for t in doc[table]:
                out.append(f"[[{table}]]")
                out += [f"{k} = {toml_value(v)}" for k, v in t.items()]
        elif table in doc and not isinstance(doc.get(table), list | dict):
            pass  # written above as a scalar
        elif table in doc:
            out.insert(0, f"{table} = {toml_value(doc[table])}")
    return "\n".join(out) + "\n"


def base_doc() -> dict:
    return {"name": "P", "purpose": "p",
            "setup": {"memory": MEM, "cpus": 2, "designs": ["per-folio", "filemap"]},
            "step": [{"op": "gmem_create", "file": "g", "size": "64K"},
                     {"op": "fallocate", "file": "g", "len": "4K"},
                     {"op": "kernel_read", "file": "g", "offset": 0, "cpu": 1}],
            "expect": [{"step": 1, "result": "0"}, {"counter": "zaps", "at_least": 0}]}


PLACES = [("name",), ("purpose",), ("setup",), ("step",), ("expect",),
          *[("setup", k) for k in ("arch", "mode", "memory", "cpus", "seed", "designs", "switches", "write",
                                   "large_folios", "batch_flush", "fwb", "large_zap")],
          ("step", 0, "op"), ("step", 0, "size"), ("step", 0, "flags"), ("step", 0, "vm_type"), ("step", 0, "file"),
          ("step", 1, "len"), ("step", 1, "offset"), ("step", 1, "keep_size"), ("step", 1, "interrupt_at"),
          ("step", 1, "interrupt_cpu"), ("step", 2, "cpu"), ("step", 2, "offset"),
          ("expect", 0, "step"), ("expect", 0, "result"), ("expect", 0, "design"), ("expect", 0, "arch"),
          ("expect", 1, "counter"), ("expect", 1, "at_least"), ("expect", 1, "why")]


def mutate(doc: dict, place: tuple, value) -> dict:
    target = doc
    for k in place[:-1]:
        target = target[k]
    if value is None:
        target.pop(place[-1], None) if isinstance(target, dict) else None
    else:
        target[place[-1]] = value
    return doc


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse: usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


# -- the scenario format through `nbmodel run` ---------------------------------------------------------------
@settings(max_examples=300, **SETTINGS)
@given(place=st.sampled_from(PLACES), value=bad_values)
def test_bad_scenario_values_exit_2_with_one_located_line(tmp_path_factory, capsys, place, value):
    text = toml_doc(mutate(base_doc(), place, value))
    path = tmp_path_factory.mktemp("scn") / "bad.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        scn = sc.load(path)
    except sc.ScenarioError as e:
        assert re.fullmatch(rf"{re.escape(str(path))}:\d+: \S.*", str(e)), str(e)
        scn = None
    rc, out, err = run_cli(["run", str(path)], capsys)
    event(f"exit {rc}")
    assert "Traceback" not in err
    if rc == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{path}:"), err
        assert "\x1b" not in err and "\u202e" not in err
    else:
        assert scn is not None and rc in (0, 1), (rc, err)
        assert "\x1b" not in out and "\u202e" not in out  # names and args are printed escaped


@settings(max_examples=60, **SETTINGS)
@given(junk=st.binary(min_size=1, max_size=6).filter(lambda b: not _utf8(b)), line=st.integers(1, 6))
def test_non_utf8_scenario_file_exit_2_names_the_line(tmp_path_factory, capsys, junk, line):
    text = toml_doc(base_doc()).encode()
    rows = text.split(b"\n")
    rows[line - 1] = rows[line - 1] + b" # " + junk
    path = tmp_path_factory.mktemp("scn") / "bin.toml"
    path.write_bytes(b"\n".join(rows))
    rc, _, err = run_cli(["run", str(path)], capsys)
    assert rc == 2 and "Traceback" not in err
    assert err.startswith(f"{path}:") and "not UTF-8" in err and len(err.splitlines()) == 1
    first_bad = next(i for i, r in enumerate(rows, 1) if not _utf8(r))
    assert err.startswith(f"{path}:{first_bad}:")


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("text, line, words", [
    ('name = "X"\npurpose = "p"\nx = ' + "[" * 2000 + "]" * 2000 + "\n", 3, "nested more than"),
    ('name = "X"\npurpose = "p"\n[setup]\nseed = ' + "9" * 5000 + "\n", 4, "thousands of digits"),
    ('name = "X"\npurpose = "p"\n[setup]\nmemory = "1048576T"\n[[step]]\nop = "set_cpu"\ncpu = 0\n'
     '[[expect]]\nstep = 1\nresult = "0"\n', 4, "limit of 256G"),
    ('name = "X"\npurpose = "p"\n[[step]]\nop = ["gmem_create"]\n[[expect]]\nstep = 1\nresult = "0"\n', 4,
     "not a TOML array"),
    ('name = "X"\npurpose = "p"\n[[step]]\nop = {a = 1}\n[[expect]]\nstep = 1\nresult = "0"\n', 4,
     "not a TOML table"),
    ('name = "X"\npurpose = "p"\n[[step]]\nop = "gmem_create"\nfile = "g"\nsize = "99999999999999999999999G"\n'
     '[[expect]]\nstep = 1\nresult = "0"\n', 6, "not a size"),
    ('name = "X"\npurpose = "p"\n[[step]]\nop = "gmem_create"\nfile = "g"\nsize = "16777216T"\n'
     '[[expect]]\nstep = 1\nresult = "0"\n', 6, "more than 18446744073709551615 bytes"),
])
def test_issue_cases_exit_2_with_the_line(tmp_path, capsys, text, line, words):
    path = tmp_path / "case.toml"
    path.write_text(text)
    rc, _, err = run_cli(["run", str(path)], capsys)
    assert rc == 2 and err.startswith(f"{path}:{line}: ") and words in err and len(err.splitlines()) == 1, err


# -- System.step -----------------------------------------------------------------------------------------------
def _valid_args(op: str) -> dict:
    fill = {"file": "g", "size": "64K", "len": "4K", "cpu": 1, "count": 1}
    return {k: fill[k] for k, (_, default) in OPS[op].args.items() if default is REQUIRED}


@settings(max_examples=400, **SETTINGS)
@given(design=st.sampled_from(["per-folio", "filemap", "secretmem"]), op=st.sampled_from(sorted(OPS)),
       data=st.data())
def test_bad_step_arguments_raise_model_input_error_and_change_nothing(design, op, data):
    s = System(design, memory=MEM, cpus=2, seed=3)
    s.step("gmem_create", file="g", size="64K")
    s.step("fallocate", file="g", len="8K")
    args = _valid_args(op)
    if op == "secret_fault":
        args["file"] = "s"
        s.step("secret_create", file="s", size="8K")
    names = [*OPS[op].args, "interrupt_at", "interrupt_cpu"]
    name = data.draw(st.sampled_from(names), label="argument")
    value = data.draw(py_values, label="value")
    if value is None:
        args.pop(name, None)
    else:
        args[name] = value
    if name == "interrupt_cpu" and data.draw(st.booleans(), label="with interrupt_at"):
        args["interrupt_at"] = data.draw(st.sampled_from(INTERRUPT_POINTS))
    snap = s.snapshot()
    try:
        s.step(op, **args)
    except ModelInputError as e:
        assert str(e) and s.snapshot() == snap, f"{op}({args}) raised {e} but changed the state"


# -- the command line's numeric options --------------------------------------------------------------------------
def bench_parser():
    p = argparse.ArgumentParser(prog="nbmodel bench", exit_on_error=True)
    bench.add_arguments(p)
    return p


option_text = st.one_of(st.text(max_size=12), st.integers(-10**25, 10**25).map(str),
                        st.sampled_from(["0", "-1", "abc", ",", "64M,", "1K", "4097", "1T", "9999999999999999999999G",
                                         "2M", "64G", "66G", "1000000000", "1e3", " 4 ", "٣"]))


@settings(max_examples=300, **SETTINGS)
@given(option=st.sampled_from(["--cpus", "--sizes"]), text=option_text)
def test_bench_numeric_options_parse_in_range_or_exit_2(capsys, option, text):
    try:
        args = bench_parser().parse_args([f"{option}={text}", "--no-speed"])
    except SystemExit as e:
        assert e.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and f"argument {option}:" in err.splitlines()[-1]
        return
    if option == "--cpus":
        assert 1 <= args.cpus <= 64
    else:
        assert args.sizes and all(2 << 20 <= n <= bench.MAX_BENCH_SIZE and n % (2 << 20) == 0 for n in args.sizes)


@pytest.mark.parametrize("argv", [["--sizes", v] for v in ("0", "-1", "abc", ",", "64M,", "1K", "4097", "1T",
                                                             "9999999999999999999999G")]
                         + [["--cpus", v] for v in ("0", "-1", "1000000000")])
def test_issue_bench_options_exit_2(capsys, argv):
    rc, _, err = run_cli(["bench", f"{argv[0]}={argv[1]}", "--no-speed", "--no-live"], capsys)
    assert rc == 2 and "Traceback" not in err and err.splitlines()[-1].startswith("nbmodel bench: error: argument")


def test_every_numeric_option_documents_its_range():
    """A numeric option's --help says "from LO to HI" (the bench's; explore and probe have their own)."""
    p = bench_parser()
    numeric = [a for a in p._actions if a.type is not None and a.type is not str]
    assert {a.dest for a in numeric} == {"cpus", "sizes"}
    for a in numeric:
        assert re.search(r"from \S+ to \S+", a.help), a.help


# -- kernel-layer entry points -------------------------------------------------------------------------------------
@settings(max_examples=300, **SETTINGS)
@given(call=st.sampled_from(["alloc", "free", "folio_alloc_order", "folio_alloc_zero", "folio_alloc_name",
                             "virt_to_pfn", "apply_start", "apply_npages", "apply_set", "apply_clear"]),
       value=py_values)
def test_kernel_entries_refuse_bad_input_before_any_change(call, value):
    k = Kernel("x86", memory=MemoryMap.flat(MEM), cpus=2, seed=1)
    k.folio_alloc(0)
    snap = k.snapshot()
    calls = {
        "alloc": lambda: k.alloc.alloc(value),
        "free": lambda: k.alloc.free(value, 0),
        "folio_alloc_order": lambda: k.folio_alloc(value),
        "folio_alloc_zero": lambda: k.folio_alloc(0, zero=value),
        "folio_alloc_name": lambda: k.folio_alloc(0, name=value),
        "virt_to_pfn": lambda: k.virt_to_pfn(value),
        "apply_start": lambda: k.dmap.apply_range(value, 1, 0, 3),
        "apply_npages": lambda: k.dmap.apply_range(100, value, 0, 3),
        "apply_set": lambda: k.dmap.apply_range(100, 1, value, 0),
        "apply_clear": lambda: k.dmap.apply_range(100, 1, 0, value),
    }
    try:
        calls[call]()
    except ModelInputError:
        assert k.snapshot() == snap, f"{call}({value!r}) raised but changed the state"
        return
    # Accepted: the value must have been a valid one for that argument.
    valid = {"alloc": lambda v: type(v) is int and v in (0, 9),
             "free": lambda v: False,
             "folio_alloc_order": lambda v: type(v) is int and v in (0, 9),
             "folio_alloc_zero": lambda v: isinstance(v, bool),
             "folio_alloc_name": lambda v: isinstance(v, str),
             "virt_to_pfn": lambda v: type(v) is int,
             "apply_start": lambda v: type(v) is int and 0 <= v < k.memmap.end_pfn,
             "apply_npages": lambda v: type(v) is int and 1 <= v and 100 + v <= k.memmap.end_pfn,
             "apply_set": lambda v: type(v) is int and 0 <= v <= 3,
             "apply_clear": lambda v: type(v) is int and 0 <= v <= 3}
    assert valid[call](value), f"{call}({value!r}) was accepted"


@settings(max_examples=200, **SETTINGS)
@given(value=py_values)
def test_sizes_and_memory_maps_refuse_bad_input(value):
    for f in (parse_size, MemoryMap.pc, MemoryMap.flat, lambda v: MemoryMap.of([v]), lambda v: MemoryMap.of(v),
              lambda v: PageAllocator(MemoryMap.flat("4M"), seed=value)):
        try:
            got = f(value)
        except ModelInputError:
            continue
        if f is parse_size:
            assert type(value) in (int, str) and 0 <= got <= 2**63 - 1
        elif isinstance(got, MemoryMap):
            assert got.total_pages * 4096 <= 256 << 30
