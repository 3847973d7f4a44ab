"""The command line's exit-status contract: 2 and one line for bad input, 130 and one line on Ctrl-C, the status
unchanged by a closed output pipe, control characters escaped, and error location that stays cheap."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import tomllib

import pytest

from nbmodel import cli
from nbmodel import scenario as sc
from nbmodel.errors import ModelInputError

NBMODEL = [sys.executable, "-m", "nbmodel"]
FAILING = """name = "FAILS"
purpose = "an expectation that does not hold"
[setup]
designs = ["filemap"]
arch = "x86"
memory = "16M"
[[step]]
op = "gmem_create"
file = "g"
size = "64K"
[[expect]]
step = 1
result = "EPERM"
"""


def big_scenario(steps: int) -> str:
    return ('name = "BIG"\npurpose = "many steps"\n[setup]\ndesigns = ["filemap"]\narch = "x86"\nmemory = "16M"\n'
            + '[[step]]\nop = "set_cpu"\ncpu = 1\n' * steps + '[[expect]]\nstep = 1\nresult = "0"\n')


def slow_scenario(pairs: int) -> str:
    """Each step fills or empties 2,048 page-cache folios: tens of milliseconds a step, so the run is still
    working long after its first output (100,000 ``set_cpu`` steps finished within 0.3 s once steps got fast)."""
    return ('name = "SLOW"\npurpose = "big steps"\n[setup]\ndesigns = ["filemap"]\narch = "x86"\n'
            'memory = "64M"\n[[step]]\nop = "gmem_create"\nfile = "g"\nsize = "8M"\n'
            + '[[step]]\nop = "fallocate"\nfile = "g"\nlen = "8M"\n'
              '[[step]]\nop = "punch_hole"\nfile = "g"\nlen = "8M"\n' * pairs
            + '[[expect]]\nstep = 1\nresult = "0"\n')


# -- the helper every command runs under --------------------------------------------------------------------------
class ClosedPipe:
    """A stdout whose reader has gone: every write fails with EPIPE."""

    def __init__(self):
        self.writes = 0

    def write(self, text):
        self.writes += 1
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_guarded_keeps_the_status_when_stdout_is_a_closed_pipe(monkeypatch, capsys):
    pipe = ClosedPipe()
    monkeypatch.setattr(sys, "stdout", pipe)
    done = []

    def command():
        for i in range(3):
            print(f"line {i}")
        done.append(True)  # the work goes on after the reader left
        return 1

    assert cli.guarded("nbmodel run", command) == 1
    assert done and pipe.writes == 1 and sys.stdout is pipe  # one failed write, then output is dropped


def test_guarded_turns_ctrl_c_and_late_bad_input_into_one_line(capsys):
    def interrupted():
        raise KeyboardInterrupt

    def bad():
        raise ModelInputError("size 'x' is\nnot a size \x1b[31m")

    assert cli.guarded("nbmodel bench", interrupted) == 130
    assert capsys.readouterr().err == "nbmodel bench: interrupted\n"
    assert cli.guarded("nbmodel bench", bad) == 2
    assert capsys.readouterr().err == "nbmodel bench: size 'x' is not a size \\x1b[31m\n"


# -- the real command, as a shell pipeline and a terminal would drive it ------------------------------------------
def test_a_failing_run_into_a_closed_pipe_still_exits_1(tmp_path):
    path = tmp_path / "FAILS.toml"
    path.write_text(FAILING)
    p = subprocess.Popen([*NBMODEL, "run", str(path), str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader goes away before the first line (`| head -0`)
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1, err
    assert "Traceback" not in err and "Exception ignored" not in err
    shell = subprocess.run(["bash", "-c", f"{' '.join(NBMODEL)} run {path} | head -1; exit ${{PIPESTATUS[0]}}"],
                           capture_output=True, text=True, timeout=120)
    assert shell.returncode == 1 and shell.stdout.startswith("== FAILS")


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    (tmp_path / "a.toml").write_text(FAILING)
    (tmp_path / "b.toml").write_text(slow_scenario(2000))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # A shell's background job ignores SIGINT, and Python keeps a SIGINT it finds ignored at startup ignored:
    # the child gets the default back, as a command typed at a terminal has it.
    p = subprocess.Popen([*NBMODEL, "run", "-q", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = p.stdout.readline()  # a.toml has run: the command is inside its work on b.toml
        assert first.startswith(b"== FAILS")
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert err.decode() == "nbmodel run: interrupted\n"


# -- names and errors are printed with control characters escaped -------------------------------------------------
def test_names_with_escape_sequences_are_printed_escaped(tmp_path, capsys):
    path = tmp_path / "esc.toml"
    path.write_text(FAILING.replace('"FAILS"', '"X\\u001b[2J\\u202eY"').replace(
        "does not hold", "does not hold\\u001b]0;title\\u0007"))
    assert cli.main(["run", str(path)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert "X\\x1b[2J\\u202eY" in out
    assert cli.main(["list", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("X\\x1b[2J\\u202eY") and "\x1b" not in out


# -- error location is cheap ----------------------------------------------------------------------------------------
def test_unclosed_construct_is_located_with_logarithmically_many_parses(monkeypatch):
    n = 12000
    text = 'name = "X"\npurpose = "p"\n' + "".join(f"k{i} = {i}\n" for i in range(n)) + 'x = """\na\nb\n'
    calls = []
    real = tomllib.loads

    def counting(s, *a, **k):
        calls.append(len(s))
        return real(s, *a, **k)

    monkeypatch.setattr(tomllib, "loads", counting)
    with pytest.raises(sc.ScenarioError) as e:
        sc.loads(text, "u.toml")
    assert e.value.line == n + 3 and "Unterminated string" in str(e.value), str(e.value)
    # Trying every prefix (the quadratic way) parses ~n times; a binary search about log2(n) + 2 times.
    assert len(calls) <= math.log2(n + 3) + 3, len(calls)


def test_a_16k_step_file_loads_with_every_step_on_its_own_line():
    scn = sc.loads(big_scenario(16000), "big.toml")
    assert len(scn.steps) == 16000
    assert [line for line, _ in scn.steps[:2]] == [7, 10] and scn.steps[-1][0] == 7 + 3 * 15999
