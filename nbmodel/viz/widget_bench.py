"""Per-click figures of the widgets: ``python -m nbmodel.viz.widget_bench [--quick] [--sizes 16M,256M,4G] [--json]``
(``nbmodel bench`` runs it too, in its own process: the model imports no view library).

One unit is one widget step: a button press handled in Python, as the kernel handles it (the ipywidgets
callback, the model's step and the redraw of the widget's HTML). The browser's own drawing is not included.
Three figures, each as p50 / p95 / max over its clicks, in wall-clock milliseconds on this machine:

``large step``   a reader types ``fallocate`` of the whole guest into a stepper's op builder and presses "add
                 step": one click per guest size (16M is 4,096 folios, 4G is 1,048,576); the model's share and
                 the view's share are shown apart, and whether the view drew the diagram or the summary
``stepper``      FolioStepper: "step >" through every built-in scenario, then "< back" to the start, on each
                 design (the book's sizes: at most 64 folios)
``side-by-side`` SideBySide (every design in lock-step): "step >" through every built-in scenario and back;
                 target p95 < 100 ms

A size the traced model cannot step in reasonable time or memory is not run; the figures of the largest size
run give the extrapolation. No figure here is asserted by a test (they depend on the machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

from nbmodel.units import parse_size

SIZES = ("16M", "256M", "4G")
QUICK_SIZES = ("16M", "256M")
NOT_RUN = ("64G",)  # listed with an extrapolation unless asked for by --sizes
SIDE_BY_SIDE_TARGET_MS = 100.0


def pct(values, p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))]


def spread(values) -> dict:
    return {"n": len(values), "p50_ms": statistics.median(values), "p95_ms": pct(values, 95), "max_ms": max(values)}


def large_step(size: str, clicks: int = 1, design: str = "per-folio") -> dict:
    """``clicks`` times: a fresh stepper with the guest created, ``fallocate`` of all of it typed into the op
    builder, "add step" pressed. Returns the spread of the click and of its model and view shares."""
    from nbmodel.viz.stepper import FolioStepper

    nbytes = parse_size(size)
    memory = max(4 << 30, 2 * nbytes)
    total, model, summary, html = [], [], False, 0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(clicks):
        w = FolioStepper(script=[{"op": "gmem_create", "file": "g", "size": nbytes}], start=1, design=design,
                         memory=memory)
        w.op.value = "fallocate"
        w.args.value = f"file=g offset=0 len={size}"
        add, spent = w.core.add, []

        def timed(*args, _add=add, _spent=spent, **kwargs):
            t = time.perf_counter()
            try:
                return _add(*args, **kwargs)
            finally:
                _spent.append(1e3 * (time.perf_counter() - t))

        w.core.add = timed
        t0 = time.perf_counter()
        w.click("add")
        total.append(1e3 * (time.perf_counter() - t0))
        model.append(spent[0])
        if w.core.total != 2:
            raise RuntimeError(f"the {size} fallocate did not run: {w.status.value}")
        summary = "summary:" in w.picture.value
        html = len(w.picture.value) + len(w.tables.value)
        del w
    view = [t - m for t, m in zip(total, model, strict=True)]
    return {"size": nbytes, "label": size, "folios": nbytes // 4096, "click": spread(total), "model": spread(model),
            "view": spread(view), "summary": summary, "html_bytes": html,
            "rss_growth_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0}


def stepper_clicks(designs=("per-folio", "filemap", "secretmem")) -> dict:
    from nbmodel.viz.stepper import SCENARIOS, FolioStepper

    steps, backs = [], []
    for design in designs:
        for script in SCENARIOS.values():
            w = FolioStepper(script=script, design=design)
            for _ in range(w.core.total):
                t = time.perf_counter()
                w.click("step")
                steps.append(1e3 * (time.perf_counter() - t))
            while w.core.pos:
                t = time.perf_counter()
                w.click("back")
                backs.append(1e3 * (time.perf_counter() - t))
    return {"step": spread(steps), "back": spread(backs)}


def side_by_side_clicks(rounds: int = 3) -> dict:
    from nbmodel.viz.sidebyside import side_by_side
    from nbmodel.viz.stepper import SCENARIOS

    steps, backs = [], []
    for _ in range(rounds):
        for script in SCENARIOS.values():
            s = side_by_side(script)
            for _ in range(len(script)):
                t = time.perf_counter()
                s.click("step")
                steps.append(1e3 * (time.perf_counter() - t))
            for _ in range(len(script)):
                t = time.perf_counter()
                s.click("back")
                backs.append(1e3 * (time.perf_counter() - t))
    return {"step": spread(steps), "back": spread(backs), "target_p95_ms": SIDE_BY_SIDE_TARGET_MS}


def measure(sizes=SIZES, clicks: int = 3, rounds: int = 3) -> dict:
    """Every figure of the module docstring. Sizes up to 256M get ``clicks`` clicks, larger ones one."""
    large = [large_step(size, clicks if parse_size(size) <= 256 << 20 else 1) for size in sizes]
    skipped = [s for s in NOT_RUN if s not in sizes]
    return {"large_step": large, "not_run": skipped, "stepper": stepper_clicks(),
            "side_by_side": side_by_side_clicks(rounds)}


def _line(name: str, s: dict) -> str:
    return f"{name}: p50 {s['p50_ms']:,.1f} ms, p95 {s['p95_ms']:,.1f} ms, max {s['max_ms']:,.1f} ms ({s['n']} clicks)"


def format_figures(doc: dict) -> str:
    lines = ["widgets, per click (one widget step handled in Python; wall-clock ms on this machine):"]
    for r in doc["large_step"]:
        shown = "summary view" if r["summary"] else "full drawing"
        lines.append(f"  large step, fallocate {r['label']} ({r['folios']:,} folios) typed into a stepper: "
                     + _line("click", r["click"]).replace("click: ", "")
                     + f"; model p50 {r['model']['p50_ms']:,.0f} ms, view p50 {r['view']['p50_ms']:,.0f} ms; "
                       f"{shown}, {r['html_bytes'] / 1024:,.0f} kB of HTML")
    if doc["large_step"] and doc["not_run"]:
        last = doc["large_step"][-1]
        per_folio_ms = last["model"]["p50_ms"] / last["folios"]
        rss_per_folio = last["rss_growth_kb"] * 1024 / last["folios"] if last["rss_growth_kb"] > 0 else 0
        for size in doc["not_run"]:
            folios = parse_size(size) // 4096
            mem = f", about {rss_per_folio * folios / 2**30:,.0f} GiB" if rss_per_folio else ""
            lines.append(f"  large step, fallocate {size} ({folios:,} folios): not run; the traced model's step "
                         f"alone would take about {per_folio_ms * folios / 1e3:,.0f} s{mem} (from {last['label']}): "
                         "the model step is the limit, not the view")
    st = doc["stepper"]
    lines.append("  " + _line("stepper step (book scenarios, 3 designs)", st["step"]))
    lines.append("  " + _line("stepper back", st["back"]))
    sbs = doc["side_by_side"]
    ok = "ok" if sbs["step"]["p95_ms"] < sbs["target_p95_ms"] else "OVER"
    lines.append("  " + _line("side-by-side step", sbs["step"]) + f"  [{ok}: target p95 < "
                 f"{sbs['target_p95_ms']:.0f} ms]")
    lines.append("  " + _line("side-by-side back", sbs["back"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbmodel.viz.widget_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"guest sizes {','.join(QUICK_SIZES)}, fewer clicks")
    parser.add_argument("--sizes", help=f"comma-separated guest sizes (default {','.join(SIZES)})")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes.split(",")) if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    for size in sizes:
        try:
            if parse_size(size) < 1 << 20 or parse_size(size) % 4096:
                raise ValueError
        except Exception:
            parser.error(f"--sizes: {size!r} is not a size of at least 1M in whole pages (e.g. 16M, 4G)")
    doc = measure(sizes, clicks=2 if args.quick else 3, rounds=1 if args.quick else 3)
    print(json.dumps(doc, indent=1) if args.json else format_figures(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
