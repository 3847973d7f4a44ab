"""The static, recorded form of a stepper: one frame per step, navigated with CSS only.

A widget needs a running kernel; the static book has none. A filmstrip renders every step of a scenario up
front (diagram and tables) into one HTML block. Radio buttons and ``:checked`` selectors show one frame at a
time: click a step number, or "previous"/"next" inside a frame. No JavaScript, nothing loaded from anywhere.
If a viewer drops the ``<style>`` element, every frame shows, one under the other, which still reads.

Class names and ids start with a prefix derived from the content (a hash), so two filmstrips on one page do
not interfere and the same content always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass

from nbmodel.viz import state_view as sv
from nbmodel.viz import summary as sm
from nbmodel.viz.pagetable_view import folio_marks
from nbmodel.viz.stepper import Stepper, summary_note

ACCENT = "#7b1fa2"
CHIP_BG = "#eeeeee"
TEXT = "#1a1a1a"


@dataclass(frozen=True)
class FrameHTML:
    """One frame: the short text on its navigation chip, a tone for the chip, and the frame's HTML."""

    nav: str
    html: str
    tone: str = "info"


class Filmstrip:
    """Frames with CSS-only navigation. ``_repr_html_`` shows it in a notebook and in the static book."""

    def __init__(self, frames: list[FrameHTML], title: str = "", start: int = 1):
        if not frames:
            raise ValueError("a filmstrip needs at least one frame")
        self.frames = list(frames)
        self.title = title
        self.start = max(1, min(int(start), len(self.frames)))  # the frame shown first (1-based)
        digest = hashlib.sha1(("\x00".join(f.html for f in self.frames) + title).encode()).hexdigest()
        self.prefix = f"fs{digest[:10]}"

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return f"Filmstrip({self.title!r}, {len(self.frames)} frames)"

    def _style(self) -> str:
        p = self.prefix
        rules = [
            f".{p} > input.{p}-r {{position:absolute;opacity:0;pointer-events:none}}",
            f".{p} .{p}-frame {{display:none}}",
            f".{p} .{p}-nav label, .{p} .{p}-step label {{cursor:pointer;display:inline-block;"
            f"background:{CHIP_BG};color:{TEXT};border-radius:4px;padding:1px 7px;margin:2px 3px 2px 0;"
            "font-size:0.82em;border:1px solid #c8c8c8}",
            f".{p} .{p}-nav label.bad {{border-color:#d32f2f;border-width:2px}}",
        ]
        for i in range(1, len(self.frames) + 1):
            rules.append(f"#{p}-{i}:checked ~ .{p}-frames .{p}-f{i} {{display:block}}")
            rules.append(f"#{p}-{i}:checked ~ .{p}-nav .{p}-l{i} {{background:{ACCENT};color:#ffffff}}")
        return "<style>\n" + "\n".join(rules) + "\n</style>"

    def _repr_html_(self) -> str:
        p = self.prefix
        n = len(self.frames)
        inputs = "".join(
            f'<input type="radio" class="{p}-r" name="{p}" id="{p}-{i}"{" checked" if i == self.start else ""}>'
            for i in range(1, n + 1))
        nav = []
        for i, f in enumerate(self.frames, start=1):
            cls = f"{p}-l{i}" + (" bad" if f.tone == "bad" else "")
            nav.append(f'<label for="{p}-{i}" class="{cls}" title="{html.escape(f.nav, quote=True)}">'
                       f"{i}. {html.escape(_short(f.nav))}</label>")
        frames = []
        for i, f in enumerate(self.frames, start=1):
            prev = f'<label for="{p}-{i - 1}">&#9664; previous</label>' if i > 1 else ""
            nxt = f'<label for="{p}-{i + 1}">next &#9654;</label>' if i < n else ""
            frames.append(f'<div class="{p}-frame {p}-f{i}">'
                          f'<div class="{p}-step">{prev}{nxt}</div>\n{f.html}</div>')
        title = (f'<div style="font-weight:600;margin:2px 0;background:#f2f2f2;color:{TEXT};display:inline-block;'
                 f'padding:1px 6px;border-radius:4px">{html.escape(self.title)}</div>') if self.title else ""
        return (f'<div class="{p} nbmodel-filmstrip" style="position:relative">{self._style()}\n{title}\n'
                f'{inputs}\n<div class="{p}-nav">{"".join(nav)}</div>\n'
                f'<div class="{p}-frames">\n' + "\n".join(frames) + "\n</div></div>")


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def stepper_frame(stepper: Stepper, diagram: bool = True) -> FrameHTML:
    """The stepper's current position as a frame: title, the step's events, diagram, folios, TLBs, invariants
    and the counters that changed. Over the drawing bound, the summary (:mod:`nbmodel.viz.summary`) instead
    of the diagram, the folio rows and the TLB entries."""
    system = stepper.system
    title, tone = stepper.title()
    step = system.steps[-1] if system.steps else None
    marks = folio_marks(system)
    parts = [sv.banner(f"{stepper.label()} | {title}", tone)]
    if step is not None:
        parts.append(f'<div style="margin:2px 0 6px 0;font-size:0.82em">{sv.timeline(step.events)}</div>')
    drawing = sm.choose(system, marks, draw=diagram)
    if drawing.note:
        parts.append(summary_note(drawing.note))
        row = [sm.folio_states_table(system, marks), sm.leaf_table(system),
               sv.folio_table(system, limit=sm.ENDS, tail=sm.ENDS), sm.tlb_summary_table(system)]
    else:
        if diagram:
            parts.append(f'<div class="nbmodel-diagram" style="overflow-x:auto">{drawing.svg}</div>')
        row = [sv.folio_table(system), sv.tlb_table(system, marks)]
    row.append(sv.invariant_table(system))
    changed = sorted(step.counters) if step is not None else []
    if changed:
        row.append(sv.counters_table(system, names=changed, delta=step.counters,
                                     caption="counters this step changed"))
    parts.append(sv.flex(row))
    nav = (f"{step.op} -> {step.result}" if step is not None else "start")
    return FrameHTML(nav, "\n".join(parts), tone)


def filmstrip(script, title: str = "", diagram: bool = True, start: int = 1, **config) -> Filmstrip:
    """Run ``script`` under ``config`` (the settings :class:`~nbmodel.viz.stepper.Stepper` takes) and record
    one frame after each step; frame ``start`` (1-based) is the one shown first."""
    s = Stepper(script, **config)
    frames = []
    while s.pos < s.total:
        s.forward()
        frames.append(stepper_frame(s, diagram))
    return Filmstrip(frames, title or s.label(), start)


def from_stepper(stepper, title: str = "", diagram: bool = True) -> Filmstrip:
    """The filmstrip of a stepper's (or a FolioStepper widget's) script and settings, opened at its position."""
    core = getattr(stepper, "core", stepper)
    return filmstrip(core.script, title=title, diagram=diagram, start=max(core.pos, 1), **core.config)


__all__ = ["Filmstrip", "FrameHTML", "filmstrip", "from_stepper", "stepper_frame"]
