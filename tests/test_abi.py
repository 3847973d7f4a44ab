"""The ABI table is generated from the model: one row per sequence, the designs' answers side by side."""

from __future__ import annotations

import pytest

from nbmodel import abi


@pytest.fixture(scope="module")
def rows():
    return abi.abi_rows()


def _row(rows, sequence):
    return next(r for r in rows if r["sequence"] == sequence)


def test_one_row_per_sequence_and_a_cell_per_column(rows):
    assert [r["sequence"] for r in rows] == [s[0] for s in abi.SEQUENCES]
    assert len({r["sequence"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r["results"]) == set(abi.COLUMNS)
        assert all(isinstance(v, str) and v for v in r["results"].values())


def test_write_twice_differs_between_per_folio_and_filemap(rows):
    res = _row(rows, "write(); write()")["results"]
    assert res["per-folio (v12)"] == "EPERM"
    assert res["filemap"] == "EOPNOTSUPP"
    assert res["filemap + mermap write()"] == "4096"
    assert res["per-folio (v12)"] != res["filemap"]


def test_ad_hoc_state_and_refusals(rows):
    assert _row(rows, "fallocate(); kernel read")["results"]["per-folio (v12)"] == "ok"
    assert _row(rows, "fallocate(); kernel read")["results"]["filemap"] == "oops"
    for seq in ("create NO_DIRECT_MAP on TDX", "create NO_DIRECT_MAP on SEV-SNP",
                "create NO_DIRECT_MAP on arm64 without FWB"):
        assert set(_row(rows, seq)["results"].values()) == {"EINVAL"}
    assert set(_row(rows, "memfd_secret on arm64 without can_set_direct_map()")["results"].values()) == {"ENOSYS"}


def test_renderers_are_plain_text_and_deterministic(rows):
    md = abi.abi_markdown(rows)
    lines = md.splitlines()
    assert len(lines) == len(rows) + 2
    assert lines[0].startswith("| sequence") and "per-folio (v12)" in lines[0]
    assert "| write(); write() | `EPERM` | `EOPNOTSUPP` | `4096` |" in md
    assert abi.abi_markdown() == md
    html = abi.abi_html(rows)
    assert html.startswith('<table class="nbmodel-abi">') and html.endswith("</table>")
    assert html.count("<tr") == len(rows) + 1
    assert '<tr class="differs">' in html
