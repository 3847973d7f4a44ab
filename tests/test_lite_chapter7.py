"""Chapter 7 in the live chapters, checked natively: the figures drawn without matplotlib (the SVG renderer
of nbmodel.viz.plots) show the data their text form prints, and in the browser (Pyodide: ``sys.platform`` is
"emscripten") nothing probes a kernel and every timing says it is the browser's. The chapter run in Pyodide
itself: tests/test_browser_lite.py."""

from __future__ import annotations

import math
import re
import sys
import xml.etree.ElementTree as ET

import pytest

from nbmodel import bench, costmodel, crosscheck, live, realkernel
from nbmodel.realkernel import ProbeResult
from nbmodel.viz import plots

SVG = "{http://www.w3.org/2000/svg}"


def runs():
    return [bench.run_workload("boot-fault", s, "4K", "x86", d) for s in ("64M", "128M", "512M")
            for d in ("per-folio", "filemap")]


@pytest.fixture
def svg(monkeypatch):
    monkeypatch.setattr(plots, "BACKEND", "svg")


def panels(plot) -> list[ET.Element]:
    return [ET.fromstring(s) for s in plot.svg_panels()]


def points(polyline) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in polyline.get("points").split()]


def test_without_matplotlib_a_plot_is_html_with_one_svg_per_panel(svg):
    p = plots.counts_vs_size(runs(), title="boot-fault")
    assert p.figure is None and p._repr_png_() is None
    html = p._repr_html_()
    assert html.count("<svg ") == 3 and "boot-fault" in html and "matplotlib cannot load here" in html
    with pytest.raises(AttributeError, match="drawn as SVG"):
        p.axes  # noqa: B018 - matplotlib's attributes are not faked
    # the text form (what nbval compares) does not depend on the renderer
    text = repr(p)
    plots.BACKEND = "matplotlib"
    try:
        assert repr(plots.counts_vs_size(runs(), title="boot-fault")) == text
    finally:
        plots.BACKEND = "svg"


def test_the_lines_drawn_are_the_data_printed(svg):
    rs = runs()
    p = plots.counts_vs_size(rs)
    for (ylabel, series), doc in zip(p.data, panels(p), strict=True):
        assert doc.get("aria-label").endswith(ylabel)
        lines = doc.findall(f".//{SVG}polyline")
        assert [pl.get("data-name") for pl in lines] == [name for name, _ in series]
        for pl, (name, values) in zip(lines, series, strict=True):
            pts = points(pl)
            assert len(pts) == len(values)
            xs = [x for x, _ in pts]
            assert xs == sorted(xs) and len(set(xs)) == len(xs)  # guest sizes left to right
            # y: a larger value is drawn higher (smaller y), an equal value at the same height
            for (_, ya), (_, yb), (_, va), (_, vb) in zip(pts, pts[1:], values, values[1:], strict=False):
                assert (ya > yb) == (va < vb) and (ya == yb) == (va == vb), (name, pts, values)
        legend = [t.text for t in doc.iter(f"{SVG}text")]
        if doc is panels(p)[0]:
            assert {"per-folio", "filemap"} <= set(legend)


def test_symlog_axis_puts_each_decade_where_matplotlib_does(svg):
    # matplotlib's symlog (base 10, linthresh 1, linscale 1): 0 -> 0, 1 -> 1/0.9, 10 -> 1/0.9 + 1
    assert plots._symlog(0) == 0
    assert math.isclose(plots._symlog(1), 1 / 0.9)
    assert math.isclose(plots._symlog(1000), 1 / 0.9 + 3)
    rs = runs()
    for r in rs:
        r.counters["ipis"] = 0 if r.design == "filemap" else 10 ** 4
    doc = panels(plots.counts_vs_size(rs))[2]
    ticks = {t.text: float(t.get("y")) for t in doc.iter(f"{SVG}text") if t.get("text-anchor") == "end"}
    zero, one = ticks["0"], ticks["10"]  # "10" + superscript: the decade labels start with "10"
    flat = next(pl for pl in doc.iter(f"{SVG}polyline") if pl.get("data-name") == "filemap")
    assert {round(y + 3.5, 2) for _, y in points(flat)} == {round(zero, 2)}  # zero is drawn, on the axis
    assert one < zero


def test_bars_are_the_values_printed(svg):
    rs = runs()[:2]
    p = plots.breakdown(rs, title="t")
    doc = panels(p)[0]
    bars = doc.findall(f".//{SVG}rect[@class='bar']")
    (_, drawn), = p.data
    assert len(bars) == sum(len(v) for _, v in drawn)
    assert sorted(b.find(f"{SVG}title").text for b in bars) == sorted(
        f"{name}: {plots._num(v)}" for name, vals in drawn for _, v in vals)
    # stacked: in each column the heights add up in the order printed, and a bigger value is a taller bar
    heights = {}
    for b in bars:
        name, value = b.find(f"{SVG}title").text.rsplit(": ", 1)
        heights.setdefault(float(value), set()).add(round(float(b.get("height")), 1))
    by_value = sorted((v, max(h)) for v, h in heights.items())
    assert all(h1 <= h2 for (_, h1), (_, h2) in zip(by_value, by_value[1:], strict=False))
    probes = [ProbeResult("guest_memfd", 1 << 20, 256, ns_net_median=3000.0),
              ProbeResult("secretmem", 1 << 20, 256, ns_net_median=13000.0)]
    q = plots.predicted_vs_measured(costmodel.compare_with_probe(probes, cpus=2))
    doc = panels(q)[0]
    measured = [b for b in doc.findall(f".//{SVG}rect[@class='bar']") if b.get("data-name") == "measured here"]
    assert [float(b.get("height")) for b in measured][0] < [float(b.get("height")) for b in measured][1]
    labels = {t.text for t in doc.iter(f"{SVG}text")} | {t.text for t in doc.iter(f"{SVG}tspan")}
    assert {"guest_memfd", "secretmem", "measured here"} <= labels


def test_every_chapter_7_figure_draws_without_matplotlib(svg):
    head, cross = crosscheck.load_crosscheck()
    probes = realkernel.load_probes()
    figs = [plots.counts_vs_size(runs()), plots.estimate_vs_size(runs()), plots.breakdown(runs()),
            plots.live_vs_model(cross),
            plots.predicted_vs_measured(costmodel.compare_with_probe(probes, cpus=probes.cpus), probes.short)]
    for f in figs:
        html = f._repr_html_()
        assert html.count("<svg ") == len(f.data if f.kind.startswith(("counts", "estimate")) else [1])
        for doc in panels(f):
            assert float(doc.get("viewBox").split()[2]) == plots._PANEL_W
            assert doc.findall(f".//{SVG}polyline") or doc.findall(f".//{SVG}rect[@class='bar']")
        assert not re.search(r"\b(nan|inf)\b", html), f.kind


# -- in the browser: no kernel, the recordings, browser timings -------------------------------------------------
@pytest.fixture
def browser(monkeypatch):
    monkeypatch.setattr(sys, "platform", "emscripten")
    monkeypatch.setenv("NBMODEL_LIVE", "1")


def test_natively_the_labels_are_unchanged(monkeypatch):
    monkeypatch.delenv("NBMODEL_LIVE", raising=False)
    assert realkernel.probes_for_book().label.endswith("; set NBMODEL_LIVE=1 to probe this kernel instead")
    assert "; set NBMODEL_LIVE=1 to run it on this kernel\n" in live.show("SECRET-FAULT-4-PAGES")
    assert not realkernel.in_browser()


def test_in_the_browser_nothing_probes_and_the_recording_says_why(browser):
    assert realkernel.in_browser()
    assert realkernel.live_opt_in() is False and realkernel.live_opt_in(True) is False
    probes = realkernel.probes_for_book(live=True)
    assert probes.recorded and "no Linux kernel to probe" in probes.label and "JupyterLab on Linux" in probes.label
    r = realkernel.probe("secretmem", 1 << 20)
    assert r.skipped == realkernel.NO_KERNEL and r.ns_net_median == 0
    assert realkernel.format_result(r) == f"secretmem    skipped: {realkernel.NO_KERNEL}"
    assert crosscheck.unavailable() == realkernel.NO_KERNEL
    assert crosscheck.crosscheck_for_book(live=True).report().startswith("recorded on Linux 6.18")
    assert "no Linux kernel to probe" in live.show("SECRET-FAULT-4-PAGES", live=True).splitlines()[0]


def test_in_the_browser_the_speed_figures_say_they_are_browser_timings(browser):
    rep = bench.SpeedReport(bulk={"seconds": 0.5, "folio_ops_per_s": 1e7})
    head = bench.format_speed(rep).splitlines()[1]
    assert "in this browser" in head and "not kernel time" in head
    sys.platform = "linux"
    assert bench.format_speed(rep).splitlines()[1] == "speed of the model (measured now; varies run to run):"
