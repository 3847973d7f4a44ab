"""Plots for the cost chapter: counts against guest size, designs, folio sizes and arches, from
:class:`nbmodel.bench.BenchRun` records; and the live kernel against the model. Rendering only: every number
comes from :mod:`nbmodel.bench`, :mod:`nbmodel.costmodel` or :mod:`nbmodel.crosscheck`.

Each function returns a :class:`Plot`: the figure shows as an image, and its text form (``text/plain``) is the
data behind the figure, every series and bar with its values. nbval does not compare images, but it compares
that text, so a notebook whose plots drift from their saved numbers fails.

Two renderers draw the same figure from the same description (panels, series, colours, markers, dashes, axis
scales, legend): matplotlib (``image/png``) where it is installed, and otherwise this module's own SVG
(``text/html``: one inline SVG per panel, side by side, wrapping on a narrow screen). The second is what the
book's live chapters show: matplotlib is a compiled package the browser's Python (Pyodide) cannot load from
what the book serves. :data:`BACKEND` says which one is used.
"""

from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass, field

try:
    import matplotlib.pyplot as plt
except ImportError:  # the live chapters (Pyodide): drawn as SVG by this module instead
    plt = None

from nbmodel.costmodel import LABEL
from nbmodel.units import human

#: "matplotlib" (PNG) when matplotlib imports, else "svg" (drawn here). Tests set it to draw SVG natively.
BACKEND = "matplotlib" if plt is not None else "svg"

COLORS = {"per-folio": "#d62728", "filemap": "#1f77b4", "secretmem": "#7f7f7f", "x86": "#1f77b4",
          "arm64": "#2ca02c", "arm64-bbml2": "#ff7f0e", "4K": "#9467bd", "2M": "#8c564b"}
#: matplotlib's "tab10" colour cycle, as hex (the same colours in both renderers).
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf")
MARKERS = ("o", "s", "^", "D")
DASHES = ("-", "--", ":", "-.")


# -- what a figure is: panels of lines or bars, independent of the renderer ---------------------------------
@dataclass
class Line:
    name: str
    xs: list
    ys: list
    color: str
    marker: str
    dash: str
    size: float  # marker size in points
    hollow: bool


@dataclass
class Bars:
    name: str
    values: list
    color: str
    offset: float = 0.0  # grouped bars: x offset of this series from the category's centre


@dataclass
class Panel:
    ylabel: str
    lines: list = field(default_factory=list)     # [Line]: x = guest size (log 2 axis)
    bars: list = field(default_factory=list)      # [Bars]
    categories: list = field(default_factory=list)  # bar panels: one label per x position
    stacked: bool = False
    width: float = 0.8    # bar width, in category units
    log: bool = True      # line panels: symlog y axis (linear below 1), as matplotlib's symlog, linthresh=1
    legend: bool = False
    legend_cols: int = 1
    legend_size: float = 8


@dataclass
class Figure:
    size: tuple  # matplotlib figsize, inches
    panels: list
    suptitle: str = ""   # over all panels
    title: str = ""      # over the (single) panel


class Plot:
    """A figure and the data drawn in it. Shown as PNG (matplotlib) or as inline SVG drawn by this module
    (:data:`BACKEND`); ``repr()`` is the data as text (counts exact, times to six significant digits), so it is
    deterministic and comparable. With matplotlib, attributes of the figure (``axes``, ``savefig``...) are
    reached through it; ``figure`` is None when the SVG renderer drew it."""

    def __init__(self, spec: Figure, kind: str, title: str, data: list):
        self.spec = spec
        self.kind = kind
        self.title = title
        self.data = data  # [(panel label, [(series name, [(x label, value), ...]), ...]), ...]
        self.figure = _matplotlib(spec) if BACKEND == "matplotlib" else None

    def __getattr__(self, name):
        figure = self.__dict__.get("figure")
        if figure is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (drawn as SVG, no matplotlib)")
        return getattr(figure, name)

    def _repr_png_(self) -> bytes | None:
        if self.figure is None:
            return None
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()

    def _repr_html_(self) -> str | None:
        if self.figure is not None:
            return None
        return self.html()

    def svg_panels(self) -> list[str]:
        """The figure drawn as SVG, one document per panel (what :meth:`html` lays out)."""
        return [_svg_panel(p, i, self.spec) for i, p in enumerate(self.spec.panels)]

    def html(self) -> str:
        """The SVG figure as HTML: the title, then the panels side by side, wrapping on a narrow screen."""
        heading = self.spec.suptitle or self.spec.title
        head = (f'<div style="font:600 13px sans-serif;text-align:center;margin:2px 0 4px">{_esc(heading)}</div>'
                if heading else "")
        cells = "".join(f'<div style="min-width:0">{svg}</div>' for svg in self.svg_panels())
        return (f'<figure class="nbmodel-plot" style="margin:0;max-width:{_PANEL_W * len(self.spec.panels)}px">'
                f'{head}<div style="display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:4px 8px">'
                f'{cells}</div>'
                '<figcaption style="font:11px sans-serif;color:#555">drawn as SVG by nbmodel (matplotlib cannot '
                'load here); the numbers behind it are the text form of this figure</figcaption></figure>')

    def __repr__(self) -> str:
        lines = [f"{self.kind}: {self.title}" if self.title else self.kind]
        for panel, series in self.data:
            lines.append(f"  [{panel}]")
            for name, points in series:
                values = ", ".join(f"{x}={_num(y)}" for x, y in points)
                lines.append(f"    {name}: {values}")
        return "\n".join(lines)


def _num(v) -> str:
    """Counts exactly; times (floats) to six significant digits."""
    return str(v) if isinstance(v, int) else f"{v:.6g}"


# -- the figures ------------------------------------------------------------------------------------------------
def _series(runs, key, value, ylabel, log=True, legend=False) -> tuple[Panel, tuple]:
    """One line per ``key(run)``, x = guest size, y = ``value(run)``. Lines that coincide stay visible: each has
    its own marker and dash; zero is drawn on a symlog axis, not left out."""
    groups: dict = {}
    for r in runs:
        groups.setdefault(key(r), []).append(r)
    panel = Panel(ylabel, log=log, legend=legend)
    drawn = []
    for i, (name, rs) in enumerate(groups.items()):
        rs = sorted(rs, key=lambda r: r.size)
        drawn.append((str(name).replace("\n", " "), [(human(r.size), value(r)) for r in rs]))
        panel.lines.append(Line(str(name), [r.size for r in rs], [value(r) for r in rs],
                                COLORS.get(name, TAB10[i % 10]), MARKERS[i % len(MARKERS)], DASHES[i % len(DASHES)],
                                9 - 2 * (i % 3), bool(i % 2)))
    return panel, (ylabel, drawn)


def flushes(r) -> int:
    return r.counters["tlb_flushes"] + r.counters["tlb_full_flushes"]


def counts_vs_size(runs, key=lambda r: r.design, title=""):
    """Three panels against guest size: 2M->4K splits, TLB flushes (ranged + full), IPIs."""
    made = [_series(runs, key, lambda r: r.counters["direct_map_level2_splits"], "2M -> 4K splits", legend=True),
            _series(runs, key, flushes, "TLB flushes (ranged + full)"),
            _series(runs, key, lambda r: r.counters["ipis"], "IPIs")]
    spec = Figure((12, 3.4), [p for p, _ in made], suptitle=title)
    return Plot(spec, "counts vs guest size", title, [d for _, d in made])


def estimate_vs_size(runs, key=lambda r: r.design, title=""):
    """Estimated kernel time against guest size (log-log), one line per ``key``."""
    panel, data = _series(runs, key, lambda r: r.estimate_ns / 1e6, f"ms, {LABEL}", legend=True)
    return Plot(Figure((5.5, 3.4), [panel], title=title), "estimate vs guest size", title, [data])


def breakdown(runs, label=lambda r: r.design, title=""):
    """Stacked bars: where the estimated time goes, one bar per run."""
    parts = [p for p in runs[0].estimate_parts if any(r.estimate_parts[p] for r in runs)]
    names = [label(r) for r in runs]
    panel = Panel(f"ms, {LABEL}", categories=names, stacked=True, legend=True, legend_cols=2, legend_size=7)
    drawn = []
    for i, p in enumerate(parts):
        vals = [r.estimate_parts[p] / 1e6 for r in runs]
        panel.bars.append(Bars(p, vals, TAB10[i % 10]))
        drawn.append((p, [(n.replace("\n", " "), v) for n, v in zip(names, vals, strict=True)]))
    spec = Figure((7, 3.6), [panel], title=title)
    return Plot(spec, "estimated time, stacked by part", title, [(f"ms, {LABEL}", drawn)])


def live_vs_model(cross):
    """Per round of the cross-check: 2M->4K splits the kernel counted, the model predicted, and how many regions
    the kernel had split before we started."""
    rounds = [f"round {i}" for i in range(1, len(cross.rounds) + 1)]
    width = 0.27
    series = [("kernel", [r.kernel.get("direct_map_level2_splits", 0) for r in cross.rounds], "#1f77b4"),
              ("model", [r.model_level2 for r in cross.rounds], "#ff7f0e"),
              ("already split", [r.already_split for r in cross.rounds], "#7f7f7f")]
    panel = Panel("2M -> 4K splits", categories=rounds, width=width, legend=True,
                  bars=[Bars(name, vals, color, (i - 1) * width) for i, (name, vals, color) in enumerate(series)])
    data = [(name, list(zip(rounds, vals, strict=True))) for name, vals, _ in series]
    return Plot(Figure((6, 3.2), [panel]), "live kernel vs model", "", [("2M -> 4K splits", data)])


def predicted_vs_measured(rows, measured: str = "measured here"):
    """Per probe kind: the cost model's populate cost per page (``costmodel.compare_with_probe()``) beside the
    one measured (``measured`` names the bars: ``ProbeRecord.short`` says "recorded on ..." for a recording)."""
    kinds = [c.kind for c in rows]
    width = 0.38
    panel = Panel("populate cost, ns per page", categories=kinds, width=width, legend=True, bars=[
        Bars(f"predicted ({LABEL})", [c.predicted_ns for c in rows], "#ff7f0e", -width / 2),
        Bars(measured, [c.measured_ns for c in rows], "#1f77b4", width / 2)])
    data = [(f"predicted ({LABEL})", [(c.kind, c.predicted_ns) for c in rows]),
            (measured, [(c.kind, c.measured_ns) for c in rows])]
    return Plot(Figure((6, 3.2), [panel]), "predicted vs measured", "", [("populate cost, ns per page", data)])


# -- matplotlib -------------------------------------------------------------------------------------------------
def _matplotlib(spec: Figure):
    """Draw ``spec`` with matplotlib; the figure is detached from pyplot, so it is shown once: as the value of
    the cell that returns its :class:`Plot`."""
    if plt is None:
        raise RuntimeError("matplotlib is not installed: set plots.BACKEND = 'svg'")
    fig, axes = plt.subplots(1, len(spec.panels), figsize=spec.size, layout="constrained", squeeze=False)
    for ax, panel in zip(axes[0], spec.panels, strict=True):
        if panel.lines:
            for line in panel.lines:
                ax.plot(line.xs, line.ys, label=line.name, color=line.color, marker=line.marker,
                        markersize=line.size, linestyle=line.dash, markerfacecolor="none" if line.hollow else None)
            ax.set_xscale("log", base=2)
            sizes = sorted({x for line in panel.lines for x in line.xs})
            ax.set_xticks(sizes, [human(s) for s in sizes])
            ax.minorticks_off()
            if panel.log:
                ax.set_yscale("symlog", linthresh=1)
                ax.set_ylim(bottom=0)
            ax.set_xlabel("guest size")
            ax.grid(alpha=0.3)
        elif panel.stacked:
            bottom = [0.0] * len(panel.categories)
            for b in panel.bars:
                ax.bar(panel.categories, b.values, bottom=bottom, label=b.name, color=b.color)
                bottom = [x + v for x, v in zip(bottom, b.values, strict=True)]
        else:
            for b in panel.bars:
                ax.bar([x + b.offset for x in range(len(panel.categories))], b.values, panel.width, label=b.name,
                       color=b.color)
            ax.set_xticks(range(len(panel.categories)), panel.categories)
        ax.set_ylabel(panel.ylabel)
        if panel.legend:
            ax.legend(fontsize=panel.legend_size, **({"ncols": panel.legend_cols} if panel.legend_cols > 1 else {}))
    if spec.suptitle:
        fig.suptitle(spec.suptitle, fontsize=10)
    if spec.title:
        axes[0][0].set_title(spec.title, fontsize=10)
    plt.close(fig)
    return fig


# -- SVG, drawn here -------------------------------------------------------------------------------------------
_PANEL_W, _PLOT_H = 420, 200                 # px: one panel's width, its plotting area's height
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 12, 40  # margins around the plotting area
_FONT = "font-family:sans-serif"
_SVG_DASH = {"-": "", "--": "6 3", ":": "1.5 2.5", "-.": "6 2.5 1.5 2.5"}


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _fmt(v: float) -> str:
    """A coordinate: two decimals at most, no trailing zeros (small, stable SVG)."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _symlog(y: float) -> float:
    """matplotlib's symlog transform, base 10, linthresh 1, linscale 1: linear below 1, then decades."""
    scale = 1 / (1 - 1 / 10)
    a = abs(y)
    t = a * scale if a <= 1 else scale + math.log10(a)
    return math.copysign(t, y)


def _nice_ticks(top: float) -> list[float]:
    """0 and round steps (1, 2 or 5 times a power of ten) up to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def _tick_text(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.0e}".replace("e+0", "e").replace("e+", "e")


def _legend_rows(names: list[str], cols: int, width: float, size: float) -> list[list[tuple[str, float]]]:
    """Legend entries (name, x) in rows: as many as fit in ``width``, or ``cols`` aligned columns."""
    widths = [26 + 0.58 * size * len(name) + 14 for name in names]
    if cols > 1:
        col = max(widths)
        cols = max(1, min(cols, int(width // col)))
        return [[(name, (i % cols) * col) for i, name in enumerate(names[r:r + cols], start=r)]
                for r in range(0, len(names), cols)]
    rows, row, x = [], [], 0.0
    for name, w in zip(names, widths, strict=True):
        if row and x + w > width:
            rows.append(row)
            row, x = [], 0.0
        row.append((name, x))
        x += w
    if row:
        rows.append(row)
    return rows


def _marker(kind: str, x: float, y: float, r: float, color: str, hollow: bool) -> str:
    fill = "#fff" if hollow else color
    style = f'fill="{fill}" stroke="{color}" stroke-width="1.3"'
    if kind == "o":
        return f'<circle cx="{_fmt(x)}" cy="{_fmt(y)}" r="{_fmt(r)}" {style}/>'
    if kind == "s":
        return f'<rect x="{_fmt(x - r)}" y="{_fmt(y - r)}" width="{_fmt(2 * r)}" height="{_fmt(2 * r)}" {style}/>'
    pts = ([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)] if kind == "^"
           else [(x, y - r), (x + r * 0.8, y), (x, y + r), (x - r * 0.8, y)])
    return f'<polygon points="{" ".join(f"{_fmt(a)},{_fmt(b)}" for a, b in pts)}" {style}/>'


def _svg_panel(panel: Panel, index: int, spec: Figure) -> str:
    """One panel as a standalone SVG document: axes, grid, ticks, the lines or bars, a legend below."""
    w, ph = _PANEL_W, _PLOT_H
    pw = w - _LEFT - _RIGHT
    x0, y0 = _LEFT, _TOP
    out: list[str] = []

    # y axis: symlog decades for line panels (as matplotlib draws them), round linear steps for bars
    if panel.lines:
        top = max([0.0, *(y for line in panel.lines for y in line.ys)])
        if panel.log:
            decades = max(1, math.ceil(math.log10(top)) if top > 1 else 1)
            ymax = _symlog(10 ** decades)
            ticks = [(0.0, "0")] + [(_symlog(10 ** k), f"10^{k}") for k in range(decades + 1)]
            if decades > 6:
                ticks = [t for i, t in enumerate(ticks) if i == 0 or (i - 1) % 2 == 0]
            fy = _symlog
        else:
            values = _nice_ticks(top)
            ymax, ticks, fy = values[-1], [(v, _tick_text(v)) for v in values], float
    else:
        totals = ([sum(col) for col in zip(*(b.values for b in panel.bars), strict=True)] if panel.stacked
                  else [v for b in panel.bars for v in b.values])
        values = _nice_ticks(max([0.0, *totals]) * 1.02)
        ymax, ticks, fy = values[-1], [(v, _tick_text(v)) for v in values], float

    def ypx(v: float) -> float:
        return y0 + ph - (fy(v) / ymax) * ph if ymax else y0 + ph

    for t, text in ticks:
        y = y0 + ph - t / ymax * ph
        out.append(f'<line x1="{x0}" y1="{_fmt(y)}" x2="{x0 + pw}" y2="{_fmt(y)}" stroke="#000" '
                   f'stroke-opacity="0.12"/>')
        if text.startswith("10^"):
            label = f'10<tspan dy="-5" font-size="8">{text[3:]}</tspan>'
        else:
            label = _esc(text)
        out.append(f'<text x="{x0 - 5}" y="{_fmt(y + 3.5)}" text-anchor="end" font-size="10">{label}</text>')
    out.append(f'<text transform="translate(13 {_fmt(y0 + ph / 2)}) rotate(-90)" text-anchor="middle" '
               f'font-size="10.5">{_esc(panel.ylabel)}</text>')

    # x axis, and what is drawn on it
    if panel.lines:
        sizes = sorted({x for line in panel.lines for x in line.xs})
        lo, hi = math.log2(sizes[0]), math.log2(sizes[-1])
        pad = (hi - lo) * 0.05 or 1.0

        def xpx(size: float) -> float:
            return x0 + (math.log2(size) - lo + pad) / (hi - lo + 2 * pad) * pw

        for s in sizes:
            out.append(f'<line x1="{_fmt(xpx(s))}" y1="{y0}" x2="{_fmt(xpx(s))}" y2="{y0 + ph}" stroke="#000" '
                       f'stroke-opacity="0.12"/>')
            out.append(f'<text x="{_fmt(xpx(s))}" y="{y0 + ph + 14}" text-anchor="middle" font-size="10">'
                       f'{_esc(human(s))}</text>')
        out.append(f'<text x="{_fmt(x0 + pw / 2)}" y="{y0 + ph + 30}" text-anchor="middle" font-size="10.5">'
                   f'guest size</text>')
        for line in panel.lines:
            pts = [(xpx(x), ypx(y)) for x, y in zip(line.xs, line.ys, strict=True)]
            dash = _SVG_DASH[line.dash]
            out.append(f'<polyline class="series" data-name="{_esc(line.name)}" fill="none" stroke="{line.color}" '
                       f'stroke-width="1.6"{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""} '
                       f'points="{" ".join(f"{_fmt(a)},{_fmt(b)}" for a, b in pts)}"/>')
            r = line.size * 0.62
            out.extend(_marker(line.marker, a, b, r, line.color, line.hollow) for a, b in pts)
        keys = [(line.name, line) for line in panel.lines]
    else:
        n = len(panel.categories)
        slot = pw / max(n, 1)

        def cx(i: float) -> float:
            return x0 + (i + 0.5) * slot

        bar_w = slot * (panel.width if not panel.stacked else 0.8) * 0.9
        bottom = [0.0] * n
        for b in panel.bars:
            for i, v in enumerate(b.values):
                base = bottom[i] if panel.stacked else 0.0
                ytop, ybase = ypx(base + v), ypx(base)
                left = cx(i + b.offset * 0.9) - bar_w / 2
                out.append(f'<rect class="bar" data-name="{_esc(b.name)}" x="{_fmt(left)}" y="{_fmt(ytop)}" '
                           f'width="{_fmt(bar_w)}" height="{_fmt(max(0.0, ybase - ytop))}" fill="{b.color}">'
                           f'<title>{_esc(b.name)}: {_esc(_num(v))}</title></rect>')
                if panel.stacked:
                    bottom[i] += v
        for i, cat in enumerate(panel.categories):
            lines = str(cat).split("\n")
            spans = "".join(f'<tspan x="{_fmt(cx(i))}" dy="{0 if k == 0 else 11}">{_esc(t)}</tspan>'
                            for k, t in enumerate(lines))
            out.append(f'<text x="{_fmt(cx(i))}" y="{y0 + ph + 14}" text-anchor="middle" font-size="10">'
                       f'{spans}</text>')
        keys = [(b.name, b) for b in panel.bars]
    out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#333" stroke-width="0.8"/>')

    # the legend, below the axes
    legend_h = 0
    if panel.legend:
        rows = _legend_rows([name for name, _ in keys], panel.legend_cols, pw, 10)
        ly = y0 + ph + _BOTTOM + 4
        by_name = dict(keys)
        for row in rows:
            for name, dx in row:
                item, lx = by_name[name], x0 + dx
                if isinstance(item, Line):
                    dash = _SVG_DASH[item.dash]
                    out.append(f'<line x1="{_fmt(lx)}" y1="{ly}" x2="{_fmt(lx + 22)}" y2="{ly}" stroke="{item.color}" '
                               f'stroke-width="1.6"{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""}/>')
                    out.append(_marker(item.marker, lx + 11, ly, item.size * 0.5, item.color, item.hollow))
                else:
                    out.append(f'<rect x="{_fmt(lx + 4)}" y="{ly - 5}" width="14" height="10" fill="{item.color}"/>')
                out.append(f'<text x="{_fmt(lx + 26)}" y="{ly + 3.5}" font-size="10">{_esc(name)}</text>')
            ly += 15
        legend_h = 15 * len(rows) + 4

    h = _TOP + ph + _BOTTOM + (10 if not panel.lines and any("\n" in str(c) for c in panel.categories) else 0)
    if legend_h:
        h += legend_h
    label = f"{spec.suptitle or spec.title or 'figure'}: {panel.ylabel}".strip(": ")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="nbmodel-plot-panel" role="img" '
            f'aria-label="{_esc(label)}" viewBox="0 0 {w} {h}" width="100%" style="{_FONT};display:block">'
            f'<title>{_esc(label)}</title><rect width="{w}" height="{h}" fill="#fff"/>{"".join(out)}</svg>')


__all__ = ["Plot", "BACKEND", "counts_vs_size", "estimate_vs_size", "breakdown", "live_vs_model",
           "predicted_vs_measured"]
