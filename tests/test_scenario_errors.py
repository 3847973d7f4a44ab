"""A TOML syntax error "at end of document" is located by one scan, not by re-parsing prefixes."""

from __future__ import annotations

import tomllib

import pytest

import nbmodel.scenario as sc


def _file(tail: str, steps: int = 5000) -> str:
    body = "".join('[[step]]\nop = "close"\nfile = "g"\n' for _ in range(steps))
    return 'name = "X"\npurpose = "p"\n' + body + tail


@pytest.mark.parametrize("tail,at", [('a = """\nopen string\n', 0), ("b = { c = [1,\n", 0),
                                     ("d = ['x]', '[',\n  2,\n", 0)])
def test_unclosed_at_the_end_is_found_in_one_parse(monkeypatch, tail, at):
    text = _file(tail)
    parses = []
    real = tomllib.loads
    monkeypatch.setattr(sc.tomllib, "loads", lambda t, **kw: parses.append(1) or real(t, **kw))
    with pytest.raises(sc.ScenarioError) as e:
        sc.loads(text)
    line = text.count("\n", 0, len(text) - len(tail)) + 1 + at
    assert e.value.line == line and len(parses) == 1, (e.value, len(parses))
