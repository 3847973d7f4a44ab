"""The folio stepper: walk a scenario through one design, one step at a time, forward and back.

Two layers:

- :class:`Stepper`, plain Python: a configuration (arch, mode, design, switches, options), a *script* (a list of
  ``{"op": ..., **args}`` steps) and a position. ``forward()`` runs the next step; ``back()`` rebuilds the
  machine and replays the first ``n - 1`` steps, so going back is exactly a fresh, deterministic replay.
  ``frame()`` renders the current state (page-table diagram and HTML tables).
- :class:`FolioStepper`, the ipywidgets front end: dropdowns for arch, mode, design, switches and scenario,
  buttons to step, and a small op builder (pick an op, type its arguments, add it).

The scenarios below are the ones the chapters walk through; :data:`SCENARIOS` maps a name to its script.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import time
from dataclasses import dataclass, field

from nbmodel.designs import DESIGNS, OPTIONS, SWITCHES
from nbmodel.errors import ModelInputError
from nbmodel.gcpause import gc_paused
from nbmodel.setup import FIELDS, Setup
from nbmodel.system import OPS, System
from nbmodel.viz import state_view as sv
from nbmodel.viz import summary as sm
from nbmodel.viz.pagetable_view import folio_marks

# -- the scenarios the chapters use ------------------------------------------------------------------------
#: One guest_memfd folio's life, the same script for every design (chapter 04 walks it under v12, chapter 05
#: under the filemap-level design, chapter 06 through all of them at once).
WALK = [
    {"op": "gmem_create", "file": "g", "size": "2M"},
    {"op": "fallocate", "file": "g", "offset": 0, "len": "4K"},
    {"op": "kernel_read", "file": "g", "offset": 0},
    {"op": "user_fault", "file": "g", "offset": 0},
    {"op": "guest_fault", "file": "g", "offset": "8K"},
    {"op": "write", "file": "g", "offset": "4K", "len": "4K"},
    {"op": "write", "file": "g", "offset": "4K", "len": "4K"},
    {"op": "kernel_read", "file": "g", "offset": "4K", "cpu": 1},
    {"op": "punch_hole", "file": "g", "offset": 0, "len": "12K"},
]

#: memfd_secret: the second fault is interrupted on CPU 0 just after the xarray insert. Mainline secretmem
#: flushes only after the insert, so CPU 0's TLB entry (filled when the page was zeroed) is still there.
SECRET_WINDOW = [
    {"op": "secret_create", "file": "s", "size": "2M"},
    {"op": "secret_fault", "file": "s", "offset": 0},
    {"op": "secret_fault", "file": "s", "offset": "4K", "interrupt_at": "after_insert", "interrupt_cpu": 0},
]

#: Sixty-four 4K folios: the size the stepper's latency is measured at.
FOLIOS_64 = [
    {"op": "gmem_create", "file": "g", "size": "2M"},
    {"op": "fallocate", "file": "g", "offset": 0, "len": "256K"},
    {"op": "cpu_touch", "cpu": 1, "file": "g", "offset": "128K"},
    {"op": "user_fault", "file": "g", "offset": "64K"},
    {"op": "guest_fault", "file": "g", "offset": "192K"},
    {"op": "kernel_read", "file": "g", "offset": "4K"},
    {"op": "punch_hole", "file": "g", "offset": "128K", "len": "128K"},
    {"op": "fallocate", "file": "g", "offset": "128K", "len": "64K"},
    {"op": "close", "file": "g"},
]

#: Every path in and out of the page cache once: add, race (-EEXIST), replace, migrate, truncate.
PAGECACHE_PATHS = [
    {"op": "gmem_create", "file": "g", "size": "2M"},
    {"op": "fallocate", "file": "g", "offset": 0, "len": "8K"},
    {"op": "race_add", "file": "g", "offset": 0},
    {"op": "replace", "file": "g", "offset": 0},
    {"op": "migrate", "file": "g", "offset": "4K"},
    {"op": "punch_hole", "file": "g", "offset": 0, "len": "8K"},
]

#: The direct map alone: the first zap splits, a read after it faults, the restore leaves the split behind and
#: the next folio in the same 2M range needs no new split.
SPLIT = [
    {"op": "gmem_create", "file": "g", "size": "2M"},
    {"op": "fallocate", "file": "g", "offset": 0, "len": "4K"},
    {"op": "kernel_read", "file": "g", "offset": 0, "cpu": 1},
    {"op": "punch_hole", "file": "g", "offset": 0, "len": "4K"},
    {"op": "fallocate", "file": "g", "offset": "4K", "len": "4K"},
]

SCENARIOS = {
    "one folio's life (fallocate, faults, write, punch hole)": WALK,
    "zap one page: the direct map splits": SPLIT,
    "memfd_secret: read just after the insert": SECRET_WINDOW,
    "64 folios": FOLIOS_64,
    "every page-cache entry and exit": PAGECACHE_PATHS,
}

X86_MODES = ("4-level", "5-level", "nogbpages")
ARM64_MODES = ("rodata-full", "bbml2", "no-set-direct-map")
MODES = {"x86": X86_MODES, "arm64": ARM64_MODES}


@dataclass
class Frame:
    """What the stepper shows at one position: a title, the diagram (SVG text) and the tables (HTML). Over the
    drawing bound (:mod:`nbmodel.viz.summary`) ``svg`` is empty, ``summary`` says why, and ``html`` holds the
    summary tables."""

    position: int
    total: int
    title: str
    svg: str
    html: str
    tone: str = "info"
    timings: dict = field(default_factory=dict)
    summary: str | None = None


def _config_defaults() -> dict:
    """Every :class:`~nbmodel.setup.Setup` option (the trace stays on: the views read it), per-folio first."""
    out = {name: getattr(Setup(), name) for name in FIELDS if name != "trace"}
    out["design"] = "per-folio"
    return out


class Stepper:
    """A scenario, a configuration and a position in the scenario. No widgets: tests and filmstrips use it."""

    def __init__(self, script=(), **config):
        self.config = _config_defaults()
        unknown = set(config) - set(self.config)
        if unknown:
            raise ModelInputError(f"unknown stepper setting(s) {sorted(unknown)}; known: {', '.join(self.config)}")
        self.config.update(config)
        self.config["switches"] = tuple(sorted(self.config["switches"]))
        self.script: list[dict] = [dict(s) for s in script]
        self._pristine = self._boot(self.config)
        self.system = self._fresh()

    # -- machine ---------------------------------------------------------------------------------------------
    @staticmethod
    def _boot(config: dict) -> bytes:
        """A freshly booted System for ``config``, pickled: unpickling it is the fastest way to a new machine
        in exactly the boot state (an arm64 PTE-mapped boot takes far longer to build or to deepcopy)."""
        system = System(setup=Setup(**config))
        return pickle.dumps(system, protocol=pickle.HIGHEST_PROTOCOL)

    def _fresh(self) -> System:
        return pickle.loads(self._pristine)

    @property
    def pos(self) -> int:
        """How many steps of the script have run."""
        return len(self.system.steps)

    @property
    def total(self) -> int:
        return len(self.script)

    def label(self) -> str:
        """``"per-folio on x86 4-level"``: the design (with switches and options) and the machine."""
        return f"{self.system.config.label()} on {self.system.k.dmap.describe()}"

    # -- moving ----------------------------------------------------------------------------------------------
    def forward(self):
        """Run the next step of the script; returns its Step, or None at the end."""
        if self.pos >= self.total:
            return None
        spec = dict(self.script[self.pos])
        return self.system.step(spec.pop("op"), **spec)

    def goto(self, n: int) -> None:
        """Be at position ``n``: forward from here if ahead, else a fresh replay of the first ``n`` steps."""
        n = max(0, min(int(n), self.total))
        if n < self.pos:
            self.system = self._fresh()
        while self.pos < n:
            self.forward()

    def back(self) -> None:
        """One step back: rebuild the machine and replay the first ``pos - 1`` steps."""
        if self.pos:
            self.goto(self.pos - 1)

    def reset(self) -> None:
        self.goto(0)

    def run_all(self) -> None:
        self.goto(self.total)

    def load(self, script, position: int = 0) -> None:
        """Replace the script and go to ``position``."""
        self.script = [dict(s) for s in script]
        self.system = self._fresh()
        self.goto(position)

    def configure(self, **changes) -> None:
        """Change settings (rebuilds the machine and replays to the same position). A setting the model rejects
        raises ModelInputError and leaves the stepper as it was."""
        new = dict(self.config)
        new.update(changes)
        new["switches"] = tuple(sorted(new["switches"]))
        if new["mode"] is not None and new["mode"] not in MODES[new["arch"]]:
            new["mode"] = None
        pristine = self._boot(new)
        pos = self.pos
        old = (self.config, self._pristine, self.system)
        self.config, self._pristine = new, pristine
        self.system = self._fresh()
        try:
            self.goto(pos)
        except ModelInputError:
            # A step of the script is not valid under the new settings: keep the old ones.
            self.config, self._pristine, self.system = old
            raise

    def add(self, op: str, **args):
        """Append a step at the current position (steps after it are dropped) and run it. A step the model
        refuses (bad op or arguments) raises ModelInputError and is not added."""
        spec = {"op": op, **args}
        trial = dict(spec)
        # System.step raises before changing anything if the op or its arguments are bad; the script is cut
        # only once the step has run, so a refused step leaves the scenario (and the position) as it was.
        step = self.system.step(trial.pop("op"), **trial)
        self.script = self.script[:self.pos - 1] + [spec]
        return step

    def remove_last(self) -> None:
        """Drop the script's last step (and go back if it had run)."""
        if not self.script:
            return
        pos = min(self.pos, self.total - 1)
        self.script = self.script[:-1]
        self.goto(pos)

    # -- showing ---------------------------------------------------------------------------------------------
    def marks(self):
        return folio_marks(self.system)

    def title(self) -> tuple[str, str]:
        if not self.pos:
            return f"step 0 / {self.total}: nothing has run yet (press step)", "info"
        st = self.system.steps[-1]
        return f"step {self.pos} / {self.total}: {sv.step_title(st)}", sv.step_tone(st)

    def frame(self, diagram: bool = True, counters: bool = True) -> Frame:
        with gc_paused():
            return self._frame(diagram, counters)

    def _frame(self, diagram: bool, counters: bool) -> Frame:
        t0 = time.perf_counter()
        marks = self.marks()
        drawing = sm.choose(self.system, marks, draw=diagram)
        t1 = time.perf_counter()
        current = self.system.steps[-1].index if self.pos else None
        panel = sm.summary_panel if drawing.note else sv.state_panel
        tables = panel(self.system, marks, current=current, pending=self.script[self.pos:], counters=counters)
        t2 = time.perf_counter()
        title, tone = self.title()
        return Frame(self.pos, self.total, title, drawing.svg, tables, tone,
                     {"diagram_ms": 1000 * (t1 - t0), "tables_ms": 1000 * (t2 - t1)}, drawing.note)

    def frame_html(self, diagram: bool = True) -> str:
        """The current frame as one HTML block (banner, diagram, tables)."""
        f = self.frame(diagram)
        head = sv.banner(f"{self.label()} | {f.title}", f.tone)
        pic = f'<div class="nbmodel-diagram" style="overflow-x:auto">{f.svg}</div>' if diagram and f.svg else ""
        if f.summary:
            pic = summary_note(f.summary)
        return f"{head}\n{pic}\n{f.html}"

    PARTS = ("diagram", "folios", "pagecache", "tlb", "invariants", "counters", "log")

    def show(self, n: int | None = None, *parts: str) -> str:
        """Go to position ``n`` and return HTML: the step's card (title and events) followed by ``parts``, any
        of :attr:`PARTS` (``"counters"`` lists only what the step changed)."""
        if n is not None:
            self.goto(n)
        unknown = set(parts) - set(self.PARTS)
        if unknown:
            raise ModelInputError(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(self.PARTS)}")
        system = self.system
        step = system.steps[-1] if system.steps else None
        out = [sv.step_card(step) if step is not None else sv.banner(self.title()[0])]
        marks = self.marks()
        big = len(marks) > sm.MAX_FOLIOS  # tables too: a row per folio or per TLB entry is not shown then
        blocks = []
        for part in parts:
            if part == "diagram":
                drawing = sm.choose(system, marks)
                out.append(summary_note(drawing.note) if drawing.note else
                           f'<div class="nbmodel-diagram" style="overflow-x:auto">{drawing.svg}</div>')
            elif part == "folios":
                blocks += [sm.folio_states_table(system, marks),
                           sv.folio_table(system, limit=sm.ENDS, tail=sm.ENDS)] if big else [sv.folio_table(system)]
            elif part == "pagecache":
                blocks.append(sm.pagecache_summary_table(system) if big else sv.pagecache_table(system))
            elif part == "tlb":
                blocks.append(sm.tlb_summary_table(system) if big else sv.tlb_table(system, marks))
            elif part == "invariants":
                blocks.append(sv.invariant_table(system))
            elif part == "counters" and step is not None and step.counters:
                blocks.append(sv.counters_table(system, names=sorted(step.counters), delta=step.counters,
                                                caption="counters this step changed"))
            elif part == "log":
                blocks.append(sv.event_log(system.steps, current=step.index if step else None))
        if blocks:
            out.append(sv.flex(blocks))
        return "\n".join(out)

    def timed_step(self, direction: str = "forward") -> dict:
        """Move one step and render, returning milliseconds spent in each part (for the latency benchmark)."""
        t0 = time.perf_counter()
        if direction == "forward":
            self.forward()
        else:
            self.back()
        t1 = time.perf_counter()
        f = self.frame()
        t2 = time.perf_counter()
        return {"model_ms": 1000 * (t1 - t0), **f.timings, "total_ms": 1000 * (t2 - t0)}


def measure_latency(script=FOLIOS_64, **config) -> list[dict]:
    """Step forward through ``script`` then back to the start, timing each move (model + render). Returns one
    dict per move: ``direction``, ``position``, ``model_ms``, ``diagram_ms``, ``tables_ms``, ``total_ms``."""
    s = Stepper(script, **config)
    out = []
    for _ in range(s.total):
        t = s.timed_step("forward")
        out.append({"direction": "forward", "position": s.pos, **t})
    while s.pos:
        t = s.timed_step("back")
        out.append({"direction": "back", "position": s.pos, **t})
    return out


def latency_summary(rows: list[dict]) -> str:
    """Text summary of :func:`measure_latency` rows: median and worst per direction (wall-clock ms on this
    machine: a property of the Python model and renderer, not of any kernel)."""
    lines = []
    for direction in ("forward", "back"):
        totals = sorted(r["total_ms"] for r in rows if r["direction"] == direction)
        if not totals:
            continue
        median = totals[len(totals) // 2]
        lines.append(f"{direction:>7}: {len(totals)} moves, median {median:.1f} ms, worst {totals[-1]:.1f} ms")
    return "\n".join(lines)


def summary_note(note: str) -> str:
    """Where the diagram would be: the summary's banner (why the full drawing is not shown)."""
    return f'<div class="nbmodel-summary-note">{sv.banner(note, "warn")}</div>'


# -- the widget ------------------------------------------------------------------------------------------
#: The CSS class the widget's box carries while the kernel works on a click.
BUSY_CLASS = "nbmodel-busy"
WORKING = "working\u2026"


@contextlib.contextmanager
def busy(view, what: str):
    """While the body runs: every control of ``view`` (a FolioStepper or a SideBySide) disabled, its box marked
    :data:`BUSY_CLASS` and its status line saying what the kernel is working on. After it, also after an
    exception or an interrupt: the controls enabled as the position allows and the class removed; a status
    still saying "working" then says "stopped"."""
    banner = sv.banner(f"{WORKING} {what}", "info")
    view.working = True
    for c in view._controls():
        c.disabled = True
    view.widget.add_class(BUSY_CLASS)
    view.status.value = banner
    try:
        yield
    finally:
        view.working = False
        for c in view._controls():
            c.disabled = False
        view._sync_buttons()
        view.widget.remove_class(BUSY_CLASS)
        if view.status.value == banner:
            view.status.value = sv.banner(f"stopped while {what}", "bad")


def _parse_args(text: str) -> dict:
    """``"file=g offset=4K cpu=1 race=true flags=MMAP,INIT_SHARED"`` -> dict (ints, bools and lists parsed).
    Arguments are separated by spaces (a comma after one is allowed); a ``flags`` list by ``,`` or ``|``."""
    out: dict = {}
    for word in text.split():
        word = word.rstrip(",")
        if not word:
            continue
        if "=" not in word:
            raise ModelInputError(f"argument {word!r} is not name=value")
        name, value = word.split("=", 1)
        out[name] = value
    for name, value in list(out.items()):
        low = value.lower()
        if low in ("true", "false"):
            out[name] = low == "true"
        elif value.isdigit():
            out[name] = int(value)
        elif name == "flags":
            out[name] = [v for v in value.replace("|", ",").split(",") if v]
    return out


class FolioStepper:
    """The folio stepper widget. ``FolioStepper(scenario=name)`` or ``FolioStepper(script=[...])``; settings
    as for :class:`Stepper`; ``start`` is the position to show first. Display it as a cell's last value."""

    def __init__(self, script=None, scenario: str | None = None, start: int = 0, **config):
        import ipywidgets as w

        if script is None:
            scenario = scenario or next(iter(SCENARIOS))
            script = SCENARIOS[scenario]
        elif scenario is None:
            scenario = next((name for name, s in SCENARIOS.items() if s == list(script)), None)
        self.core = Stepper(script, **config)
        self.core.goto(start)
        self._busy = False  # True while the controls are set from the model (their observers then do nothing)
        self.working = False  # True while the kernel works on a click (the controls are disabled meanwhile)
        c = self.core.config
        lay = w.Layout(width="auto", flex="0 0 auto")
        row = w.Layout(flex_flow="row wrap", align_items="center")
        self.arch = w.Dropdown(options=["x86", "arm64"], value=c["arch"], description="arch", layout=lay)
        self.mode = w.Dropdown(options=list(MODES[c["arch"]]), value=c["mode"] or MODES[c["arch"]][0],
                               description="mode", layout=lay)
        self.design = w.Dropdown(options=list(DESIGNS), value=c["design"], description="design", layout=lay)
        self.write = w.Dropdown(options=list(OPTIONS["write"]), value=c["write"], description="write()",
                                layout=lay)
        self.switches = w.SelectMultiple(options=list(SWITCHES), value=tuple(c["switches"]),
                                         description="break-it", rows=len(SWITCHES),
                                         layout=w.Layout(width="auto"))
        names = ["(custom)"] + list(SCENARIOS)
        current = scenario if scenario in SCENARIOS else "(custom)"
        self.scenario = w.Dropdown(options=names, value=current, description="scenario",
                                   layout=w.Layout(width="auto", max_width="100%"))
        self.b_reset = w.Button(description="|< reset", layout=lay)
        self.b_back = w.Button(description="< back", layout=lay)
        self.b_fwd = w.Button(description="step >", button_style="primary", layout=lay)
        self.b_end = w.Button(description="run all >|", layout=lay)
        self.op = w.Dropdown(options=list(OPS), value="kernel_read", description="op", layout=lay)
        self.args = w.Text(value="file=g offset=0", description="args", layout=w.Layout(width="320px"))
        self.b_add = w.Button(description="add step", layout=lay)
        self.b_drop = w.Button(description="drop last", layout=lay)
        self.status = w.HTML()
        self.picture = w.HTML()
        self.tables = w.HTML()

        for dd, key in ((self.arch, "arch"), (self.mode, "mode"), (self.design, "design"), (self.write, "write"),
                        (self.switches, "switches")):
            dd.observe(lambda ch, key=key: self._on_setting(key, ch["new"]), names="value")
        self.scenario.observe(lambda ch: self._on_scenario(ch["new"]), names="value")
        self.b_reset.on_click(lambda _: self._move(self.core.reset, "back to step 0"))
        self.b_back.on_click(lambda _: self._move(self.core.back, "one step back (a replay)"))
        self.b_fwd.on_click(lambda _: self._move(self.core.forward, self._next_text()))
        self.b_end.on_click(lambda _: self._move(self.core.run_all, "running every step"))
        self.b_add.on_click(lambda _: self._on_add())
        self.b_drop.on_click(lambda _: self._move(self.core.remove_last, "dropping the last step"))

        settings = w.HBox([w.VBox([self.arch, self.mode, self.design, self.write]), self.switches], layout=row)
        steps = w.HBox([self.scenario, self.b_reset, self.b_back, self.b_fwd, self.b_end], layout=row)
        builder = w.HBox([self.op, self.args, self.b_add, self.b_drop], layout=row)
        self.widget = stable_vbox_class()([settings, steps, builder, self.status, self.picture, self.tables],
                                           owner=self)
        self._refresh()

    # -- callbacks -------------------------------------------------------------------------------------------
    def _controls(self) -> list:
        return [self.arch, self.mode, self.design, self.write, self.switches, self.scenario, self.b_reset,
                self.b_back, self.b_fwd, self.b_end, self.op, self.args, self.b_add, self.b_drop]

    def _next_text(self) -> str:
        if self.core.pos >= self.core.total:
            return "step"
        return f"step {self.core.pos + 1} / {self.core.total}: {sv.script_title(self.core.script[self.core.pos])}"

    def _working(self, what: str):
        return busy(self, what)

    def _run(self, what: str, action) -> None:
        """Run ``action`` (it changes ``self.core``) and redraw, inside :meth:`_working`. A refusal by the model
        (ModelInputError) leaves everything as it was and is shown. Anything else (a bug, or the kernel
        interrupted in the middle of a large step) may have left the machine half-changed: the stepper is
        rebuilt at the settings, script and position it had, the failure is shown, and the exception
        propagates."""
        if self.working:  # a click that arrived while another one runs
            return
        saved = (dict(self.core.config), self.core._pristine, list(self.core.script), self.core.pos)
        with self._working(what), gc_paused():
            try:
                action()
            except ModelInputError as exc:
                self._refresh()
                self._show_error(str(exc))
                return
            except BaseException as exc:
                self._restore(*saved)
                self._sync_controls()
                self._refresh()
                self.status.value = sv.banner(f"failed: {type(exc).__name__}: {exc} (the stepper is back at step "
                                              f"{self.core.pos})", "bad")
                raise
            self._sync_controls()
            self._refresh()

    def _restore(self, config, pristine, script, pos) -> None:
        core = self.core
        core.config, core._pristine, core.script = config, pristine, script
        core.system = core._fresh()
        core.goto(pos)

    def _on_setting(self, key, value):
        if self._busy or self.working:
            return
        changes = {key: tuple(value) if key == "switches" else value}
        if key == "arch":
            changes["mode"] = None

        def action():
            try:
                self.core.configure(**changes)
            finally:
                self._sync_controls()  # a refused setting: the dropdown shows the one in force

        self._run(f"rebuilding the machine with {key}={value} and replaying {self.core.pos} steps", action)

    def _on_scenario(self, name):
        if self._busy or self.working or name not in SCENARIOS:
            return
        self._run(f"loading {name!r}", lambda: self.core.load(SCENARIOS[name]))

    def _on_add(self):
        def action():
            self.core.add(self.op.value, **_parse_args(self.args.value))
            self._busy = True
            try:
                self.scenario.value = "(custom)"
            finally:
                self._busy = False

        self._run(f"{self.op.value} {self.args.value}", action)

    def _move(self, action, what: str = "moving"):
        self._run(what, action)

    def _sync_controls(self):
        c = self.core.config
        self._busy = True
        try:
            self.arch.value = c["arch"]
            self.mode.options = list(MODES[c["arch"]])
            self.mode.value = c["mode"] or MODES[c["arch"]][0]
            self.design.value = c["design"]
            self.write.value = c["write"]
            self.switches.value = tuple(c["switches"])
        finally:
            self._busy = False

    def _show_error(self, text: str):
        self.status.value = sv.banner(f"not changed: {text}", "bad")

    def _refresh(self):
        f = self.core.frame()
        self.status.value = sv.banner(f"{self.core.label()} | {f.title}", f.tone)
        if f.summary:
            self.picture.value = summary_note(f.summary)
        else:
            self.picture.value = f'<div class="nbmodel-diagram" style="overflow-x:auto;line-height:1.2">{f.svg}</div>'
        self.tables.value = f'<div style="line-height:1.35">{f.html}</div>'
        self._sync_buttons()

    def _sync_buttons(self):
        self.b_back.disabled = self.core.pos == 0
        self.b_reset.disabled = self.core.pos == 0
        self.b_fwd.disabled = self.core.pos >= self.core.total
        self.b_end.disabled = self.core.pos >= self.core.total

    # -- what a notebook and a test use ----------------------------------------------------------------------
    def click(self, name: str) -> None:
        """Press a button by name: ``reset``, ``back``, ``step``, ``end``, ``add``, ``drop``."""
        {"reset": self.b_reset, "back": self.b_back, "step": self.b_fwd, "end": self.b_end, "add": self.b_add,
         "drop": self.b_drop}[name].click()

    def __repr__(self) -> str:
        return f"FolioStepper({self.core.label()}, step {self.core.pos}/{self.core.total})"

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = repr(self)
        return bundle


@functools.cache
def stable_vbox_class():
    """The VBox class the steppers show (built on first use: ipywidgets is imported only then)."""
    import ipywidgets as w

    class StableVBox(w.VBox):
        """A VBox whose text/plain repr names the stepper instead of listing every child's value."""

        def __init__(self, children, owner):
            super().__init__(children)
            self._owner_repr = lambda: repr(owner)

        def __repr__(self):
            return self._owner_repr()

    return StableVBox


def stepper(scenario: str | None = None, script=None, start: int = 0, **config) -> FolioStepper:
    """Build a :class:`FolioStepper` (the widget needs ipywidgets; the rest of this module does not)."""
    return FolioStepper(script=script, scenario=scenario, start=start, **config)


__all__ = ["Stepper", "FolioStepper", "Frame", "BUSY_CLASS", "busy", "gc_paused", "summary_note", "SCENARIOS",
           "WALK", "SPLIT", "SECRET_WINDOW", "FOLIOS_64", "PAGECACHE_PATHS", "MODES", "stepper", "measure_latency",
           "latency_summary"]
