"""Chapter 7's plots carry the data behind them as text, which nbval compares (it skips PNG)."""

import copy

from nbmodel import bench
from nbmodel.viz import plots


def runs():
    return [bench.run_workload("boot-fault", s, "4K", "x86", d) for s in ("64M", "128M")
            for d in ("per-folio", "filemap")]


def test_plot_text_is_the_data_drawn():
    rs = runs()
    p = plots.counts_vs_size(rs, title="boot-fault")
    text = repr(p)
    splits = {(r.design, r.size): r.counters["direct_map_level2_splits"] for r in rs}
    assert text.splitlines()[0] == "counts vs guest size: boot-fault"
    assert f"per-folio: 64M={splits['per-folio', 64 << 20]}, 128M={splits['per-folio', 128 << 20]}" in text
    # What is drawn is what is printed: the first panel's line for per-folio has these y values.
    line = p.axes[0].get_lines()[0]
    assert list(line.get_ydata()) == [splits["per-folio", 64 << 20], splits["per-folio", 128 << 20]]
    assert p._repr_png_().startswith(b"\x89PNG")


def test_a_changed_number_changes_the_compared_text():
    rs = runs()
    other = copy.deepcopy(rs)
    other[0].counters["ipis"] += 1  # the planted drift: one IPI more in one run
    for f in (plots.counts_vs_size, plots.estimate_vs_size):
        assert repr(f(rs)) == repr(f(copy.deepcopy(rs)))
    assert repr(plots.counts_vs_size(rs)) != repr(plots.counts_vs_size(other))
    other[1].estimate_parts["IPIs"] *= 2
    assert repr(plots.breakdown(rs)) != repr(plots.breakdown(other))


def test_repr_has_no_object_address():
    assert " at 0x" not in repr(plots.estimate_vs_size(runs()))


def test_counts_are_printed_exactly():
    rs = runs()
    rs[0].counters["ipis"] = 1234567  # more digits than six significant ones
    assert "per-folio: 64M=1234567," in repr(plots.counts_vs_size(rs))
