"""Plots for the cost chapter: counts against guest size, designs, folio sizes and arches, from
:class:`nbmodel.bench.BenchRun` records; and the live kernel against the model. Rendering only: every number
comes from :mod:`nbmodel.bench`, :mod:`nbmodel.costmodel` or :mod:`nbmodel.crosscheck`.

Each function returns a :class:`Plot`: the figure shows as an image (``image/png``), and its text form
(``text/plain``) is the data behind the figure, every series and bar with its values. nbval does not compare
images, but it compares that text, so a notebook whose plots drift from their saved numbers fails.
"""

from __future__ import annotations

import io

import matplotlib.pyplot as plt

from nbmodel.costmodel import LABEL
from nbmodel.units import human

COLORS = {"per-folio": "#d62728", "filemap": "#1f77b4", "secretmem": "#7f7f7f", "x86": "#1f77b4",
          "arm64": "#2ca02c", "arm64-bbml2": "#ff7f0e", "4K": "#9467bd", "2M": "#8c564b"}
MARKERS = ("o", "s", "^", "D")
DASHES = ("-", "--", ":", "-.")


class Plot:
    """A matplotlib figure and the data drawn in it. Shown as PNG; ``repr()`` is the data as text (counts exact,
    times to six significant digits), so it is deterministic and comparable. Attributes of the figure (``axes``,
    ``savefig``...) are reached through it."""

    def __init__(self, fig, kind: str, title: str, data: list):
        self.figure = fig
        self.kind = kind
        self.title = title
        self.data = data  # [(panel label, [(series name, [(x label, value), ...]), ...]), ...]

    def __getattr__(self, name):
        return getattr(self.figure, name)

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()

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


def _done(fig, kind: str, title: str, data: list) -> Plot:
    """Detach the figure from pyplot, so it is shown once: as the value of the cell that returns it."""
    plt.close(fig)
    return Plot(fig, kind, title, data)


def _series(ax, runs, key, value, ylabel, log=True):
    """One line per ``key(run)``, x = guest size, y = ``value(run)``. Lines that coincide stay visible: each has
    its own marker and dash; zero is drawn on a symlog axis, not left out."""
    groups: dict = {}
    for r in runs:
        groups.setdefault(key(r), []).append(r)
    cycle = plt.get_cmap("tab10")
    drawn = []
    for i, (name, rs) in enumerate(groups.items()):
        rs = sorted(rs, key=lambda r: r.size)
        drawn.append((str(name).replace("\n", " "), [(human(r.size), value(r)) for r in rs]))
        ax.plot([r.size for r in rs], [value(r) for r in rs], label=name, color=COLORS.get(name, cycle(i % 10)),
                marker=MARKERS[i % len(MARKERS)], markersize=9 - 2 * (i % 3), linestyle=DASHES[i % len(DASHES)],
                markerfacecolor="none" if i % 2 else None)
    ax.set_xscale("log", base=2)
    sizes = sorted({r.size for r in runs})
    ax.set_xticks(sizes, [human(s) for s in sizes])
    ax.minorticks_off()
    if log:
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
    ax.set_xlabel("guest size")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return ylabel, drawn


def flushes(r) -> int:
    return r.counters["tlb_flushes"] + r.counters["tlb_full_flushes"]


def counts_vs_size(runs, key=lambda r: r.design, title=""):
    """Three panels against guest size: 2M->4K splits, TLB flushes (ranged + full), IPIs."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    data = [_series(axes[0], runs, key, lambda r: r.counters["direct_map_level2_splits"], "2M -> 4K splits"),
            _series(axes[1], runs, key, flushes, "TLB flushes (ranged + full)"),
            _series(axes[2], runs, key, lambda r: r.counters["ipis"], "IPIs")]
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _done(fig, "counts vs guest size", title, data)


def estimate_vs_size(runs, key=lambda r: r.design, title=""):
    """Estimated kernel time against guest size (log-log), one line per ``key``."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    data = [_series(ax, runs, key, lambda r: r.estimate_ns / 1e6, f"ms, {LABEL}")]
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _done(fig, "estimate vs guest size", title, data)


def breakdown(runs, label=lambda r: r.design, title=""):
    """Stacked bars: where the estimated time goes, one bar per run."""
    parts = [p for p in runs[0].estimate_parts if any(r.estimate_parts[p] for r in runs)]
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    bottom = [0.0] * len(runs)
    names = [label(r) for r in runs]
    cmap = plt.get_cmap("tab10")
    drawn = []
    for i, p in enumerate(parts):
        vals = [r.estimate_parts[p] / 1e6 for r in runs]
        ax.bar(names, vals, bottom=bottom, label=p, color=cmap(i % 10))
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        drawn.append((p, [(n.replace("\n", " "), v) for n, v in zip(names, vals, strict=True)]))
    ax.set_ylabel(f"ms, {LABEL}")
    ax.legend(fontsize=7, ncols=2)
    ax.set_title(title, fontsize=10)
    return _done(fig, "estimated time, stacked by part", title, [(f"ms, {LABEL}", drawn)])


def live_vs_model(cross):
    """Per round of the cross-check: 2M->4K splits the kernel counted, the model predicted, and how many regions
    the kernel had split before we started."""
    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    rounds = [f"round {i}" for i in range(1, len(cross.rounds) + 1)]
    width = 0.27
    series = [("kernel", [r.kernel.get("direct_map_level2_splits", 0) for r in cross.rounds], "#1f77b4"),
              ("model", [r.model_level2 for r in cross.rounds], "#ff7f0e"),
              ("already split", [r.already_split for r in cross.rounds], "#7f7f7f")]
    for i, (name, vals, color) in enumerate(series):
        ax.bar([x + (i - 1) * width for x in range(len(rounds))], vals, width, label=name, color=color)
    ax.set_xticks(range(len(rounds)), rounds)
    ax.set_ylabel("2M -> 4K splits")
    ax.legend(fontsize=8)
    data = [(name, list(zip(rounds, vals, strict=True))) for name, vals, _ in series]
    return _done(fig, "live kernel vs model", "", [("2M -> 4K splits", data)])


def predicted_vs_measured(rows, measured: str = "measured here"):
    """Per probe kind: the cost model's populate cost per page (``costmodel.compare_with_probe()``) beside the
    one measured (``measured`` names the bars: ``ProbeRecord.short`` says "recorded on ..." for a recording)."""
    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    kinds = [c.kind for c in rows]
    width = 0.38
    ax.bar([x - width / 2 for x in range(len(kinds))], [c.predicted_ns for c in rows], width,
           label=f"predicted ({LABEL})", color="#ff7f0e")
    ax.bar([x + width / 2 for x in range(len(kinds))], [c.measured_ns for c in rows], width,
           label=measured, color="#1f77b4")
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("populate cost, ns per page")
    ax.legend(fontsize=8)
    data = [(f"predicted ({LABEL})", [(c.kind, c.predicted_ns) for c in rows]),
            (measured, [(c.kind, c.measured_ns) for c in rows])]
    return _done(fig, "predicted vs measured", "", [("populate cost, ns per page", data)])


__all__ = ["Plot", "counts_vs_size", "estimate_vs_size", "breakdown", "live_vs_model", "predicted_vs_measured"]
