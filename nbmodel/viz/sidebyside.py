"""The side-by-side stepper: one script, several configurations (by default every design), in lock-step.

:class:`LockStep` runs the same steps on one System per configuration and finds the *first divergence*: the
first step whose outcome differs between columns. The outcome of a step is what a reader can observe of it:

- the result the kernel returned (``"0"``, ``"EPERM"``, ``"oops"``...), what a read saw, an interrupt's result;
- which invariants are broken after it;
- whether it made a visible failure happen: an oops, a stale read, a WARN, a folio freed unmapped, a restore
  that needed a split (the counters of those events).

Events alone (a zap at fallocate in one design, at the first fault in another) are *how* the designs differ;
they do not count as a divergence until they change an outcome. :data:`SWITCH_DEMOS` holds, for each break-it
switch, a small script where switching it on changes an outcome; chapter 06 shows them.
"""

from __future__ import annotations

import html
import pickle

from nbmodel.designs import DESIGNS
from nbmodel.errors import ModelInputError
from nbmodel.system import System
from nbmodel.viz import state_view as sv
from nbmodel.viz import summary as sm
from nbmodel.viz.filmstrip import Filmstrip, FrameHTML
from nbmodel.viz.stepper import SECRET_WINDOW, WALK, busy, gc_paused, summary_note

FAILURE_COUNTERS = ("oops", "stale_reads", "warns", "freed_unmapped", "restore_splits")
SYSTEM_KEYS = ("design", "arch", "mode", "memory", "cpus", "seed", "switches", "write", "large_folios",
               "batch_flush")


def outcome(step) -> tuple:
    """What a reader can observe of one step (see the module docstring)."""
    failures = tuple((name, step.counters.get(name, 0)) for name in FAILURE_COUNTERS if step.counters.get(name))
    return (step.result, step.saw, step.interrupt, tuple(sorted(step.broken)), failures)


def describe_outcome(step) -> str:
    """One line: result, interrupt, broken invariants and failures."""
    result, saw, interrupt, broken, failures = outcome(step)
    bits = [result]
    if saw is not None:
        bits.append(f"saw {saw}")
    if interrupt is not None:
        bits.append(f"interrupt: {interrupt}")
    if broken:
        bits.append("broken " + ",".join(f"({k})" for k in broken))
    # A failure the result or interrupt already names is not repeated: an oopsing step reads "oops", not
    # "oops; oops +1"; only failures beyond it are listed.
    said = {"oops": 0, "stale_reads": 0}
    for word in (result, interrupt):
        if word == "oops":
            said["oops"] += 1
        elif word == "stale":
            said["stale_reads"] += 1
    for name, n in failures:
        extra = n - said.get(name, 0)
        if extra > 0:
            bits.append(f"{name} +{extra}" if extra == n else f"{extra} more {name}")
    return "; ".join(bits)


def looks_bad(step) -> bool:
    """Whether a step's outcome is a failure: a broken invariant, an oops or stale read by the step itself,
    a WARN, a folio freed unmapped, a restore that split. An *interrupting* read that finds no translation
    is not one: that is the protection working."""
    failures = dict(outcome(step)[4])
    if step.interrupt == "oops" and failures.get("oops"):
        failures["oops"] -= 1
    return bool(step.broken) or step.result in ("oops", "stale") or step.interrupt == "stale" or \
        any(n > 0 for n in failures.values())


class LockStep:
    """``script`` run on one System per entry of ``columns`` (dicts of System settings; by default one per
    design, all sharing ``common`` settings such as arch and mode)."""

    def __init__(self, script, columns=None, **common):
        unknown = set(common) - set(SYSTEM_KEYS)
        if unknown:
            raise ModelInputError(f"unknown setting(s) {sorted(unknown)}; known: {', '.join(SYSTEM_KEYS)}")
        if columns is None:
            columns = [{"design": d} for d in DESIGNS]
        self.columns = [{**common, **c} for c in columns]
        self.script = [dict(s) for s in script]
        booted = [System(**c) for c in self.columns]
        self.labels = self._labels(booted)
        # Pickled boot states: unpickling is the fastest way back to a fresh machine (see Stepper._boot).
        self._pristine = [pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL) for s in booted]
        self.systems = booted

    @staticmethod
    def _labels(systems) -> list[str]:
        archs = {s.k.dmap.describe() for s in systems}
        out = []
        for s in systems:
            label = s.config.label()
            if len(archs) > 1:
                label += f" on {s.k.dmap.describe()}"
            out.append(label)
        return out

    @property
    def pos(self) -> int:
        return len(self.systems[0].steps)

    @property
    def total(self) -> int:
        return len(self.script)

    def forward(self) -> None:
        i = self.pos
        if i >= self.total:
            return
        for s in self.systems:
            spec = dict(self.script[i])
            s.step(spec.pop("op"), **spec)

    def goto(self, n: int) -> None:
        n = max(0, min(int(n), self.total))
        if n < self.pos:
            self.systems = [pickle.loads(b) for b in self._pristine]
        while self.pos < n:
            self.forward()

    def back(self) -> None:
        if self.pos:
            self.goto(self.pos - 1)

    def run_all(self) -> LockStep:
        self.goto(self.total)
        return self

    def rows(self) -> list[list]:
        """``rows()[i][j]`` is step ``i + 1`` of column ``j``."""
        return [list(steps) for steps in zip(*(s.steps for s in self.systems), strict=True)]

    def first_divergence(self) -> int | None:
        """The 1-based index of the first step run so far whose outcome differs between columns, or None."""
        for i, row in enumerate(self.rows(), start=1):
            if len({outcome(st) for st in row}) > 1:
                return i
        return None

    def diverging_columns(self, index: int) -> list[int]:
        """Columns whose outcome at step ``index`` differs from the first column's."""
        row = self.rows()[index - 1]
        base = outcome(row[0])
        return [j for j, st in enumerate(row) if outcome(st) != base]

    # -- views -------------------------------------------------------------------------------------------------
    def table_html(self, current: int | None = None) -> str:
        """One row per step of the script, one column per configuration; the first divergence is marked."""
        first = self.first_divergence()
        rows = self.rows()
        head = "".join(f"<th {sv.TH}>{html.escape(label)}</th>" for label in self.labels)
        body = []
        for i, spec in enumerate(self.script, start=1):
            mark = i == first
            title = sv.script_title(spec)
            bg = sv.CURRENT if i == current else None
            label = f"<b>{i}</b>" + (' <span style="color:#b71c1c;font-weight:700">first divergence</span>'
                                     if mark else "")
            cells = [sv.cell(label, "#ffe0e0" if mark else bg), sv.cell(html.escape(title), bg)]
            if i <= len(rows):
                base = outcome(rows[i - 1][0])
                for st in rows[i - 1]:
                    differs = outcome(st) != base
                    bad = looks_bad(st)
                    colour = sv.BAD if bad else (sv.WARN if differs else bg)
                    text = html.escape(describe_outcome(st))
                    if mark and differs:
                        text = f"<b>{text}</b>"
                    cells.append(sv.cell(text, colour))
            else:
                cells += [sv.cell(f'<span style="color:{sv.MUTED}">not run</span>')] * len(self.systems)
            body.append("<tr>" + "".join(cells) + "</tr>")
        note = ("all columns agree on every step so far" if first is None else
                f"first divergence at step {first}: {sv.script_title(self.script[first - 1])}")
        return (f"<table {sv.TABLE}><caption {sv.CAPTION}>{html.escape(note)}</caption>"
                f"<tr><th {sv.TH}>#</th><th {sv.TH}>step</th>{head}</tr>{''.join(body)}</table>")

    def step_details_html(self, index: int | None = None, diagrams: bool = True) -> str:
        """For step ``index`` (default: the last run), each column's events and, optionally, its diagram."""
        index = index or self.pos
        if not index:
            return sv.banner("nothing has run yet", "info")
        cells = []
        drawings = sm.choose_many(self.systems) if diagrams and index == self.pos else [None] * len(self.systems)
        for label, s, drawing in zip(self.labels, self.systems, drawings, strict=True):
            st = s.steps[index - 1]
            pic = ""
            if drawing is not None:
                pic = summary_note(drawing.note) if drawing.note else \
                    f'<div class="nbmodel-diagram" style="overflow-x:auto">{drawing.svg}</div>'
            cells.append(f"<div style=\"flex:1 1 320px;min-width:0;max-width:100%;overflow-x:auto\">"
                         f"{sv.banner(f'{label}: {sv.step_title(st)}', 'bad' if looks_bad(st) else 'info')}"
                         f"<div style=\"font-size:0.82em\">{sv.timeline(st.events)}</div>{pic}</div>")
        return f'<div style="display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start">{"".join(cells)}</div>'

    def invariants_html(self) -> str:
        rows = []
        names = list(self.systems[0].invariant_status())
        for name in names:
            cells = [name]
            for s in self.systems:
                st = s.invariant_status()[name]
                cells.append(sv.cell(html.escape(st), sv.GOOD if st == "held" else
                                      (sv.BAD if st.startswith("broken") else None)))
            rows.append(cells)
        return sv.table("invariants per column", ["invariant"] + self.labels, rows)

    def counters_html(self, names, caption: str = "counters over the steps run so far") -> str:
        """Per column, the sum of every step's counter changes (``DirectMap*`` in kB)."""
        rows = []
        for label, s in zip(self.labels, self.systems, strict=True):
            total: dict = {}
            for st in s.steps:
                for name, n in st.counters.items():
                    total[name] = total.get(name, 0) + n
            rows.append((label, total))
        return sv.delta_table(caption, rows, names)

    def _repr_html_(self) -> str:
        return self.table_html()

    def __repr__(self) -> str:
        return f"LockStep({', '.join(self.labels)}; step {self.pos}/{self.total})"


def lockstep(script, columns=None, **common) -> LockStep:
    """Run ``script`` to the end in every column and return the :class:`LockStep`."""
    return LockStep(script, columns, **common).run_all()


def lockstep_filmstrip(script, columns=None, title: str = "", diagrams: bool = False, start: int | None = None,
                       **common) -> Filmstrip:
    """One frame per step: the comparison table with that step highlighted and each column's events. The frame
    shown first is ``start`` (1-based), by default the first divergence."""
    ls = LockStep(script, columns, **common)
    frames = []
    while ls.pos < ls.total:
        ls.forward()
        first = ls.first_divergence()
        tone = "bad" if first == ls.pos else "info"
        body = ls.table_html(current=ls.pos) + ls.step_details_html(ls.pos, diagrams=diagrams)
        frames.append(FrameHTML(sv.script_title(ls.script[ls.pos - 1], skip=("file",)), body, tone))
    if start is None:
        start = ls.first_divergence() or 1
    return Filmstrip(frames, title or " | ".join(ls.labels), start)


class SideBySide:
    """The side-by-side stepper widget: step the script in every column at once; the table marks the first
    divergence, and below it each column's events for the current step and its page-table diagram."""

    def __init__(self, script=WALK, columns=None, start: int = 0, diagrams: bool = True, **common):
        import ipywidgets as w

        self.core = LockStep(script, columns, **common)
        self.core.goto(start)
        self.diagrams = diagrams
        lay = w.Layout(width="auto", flex="0 0 auto")
        self.b_reset = w.Button(description="|< reset", layout=lay)
        self.b_back = w.Button(description="< back", layout=lay)
        self.b_fwd = w.Button(description="step >", button_style="primary", layout=lay)
        self.b_end = w.Button(description="run all >|", layout=lay)
        self.b_first = w.Button(description="to first divergence", layout=lay)
        self.status = w.HTML()  # empty unless the kernel is working on a click or a click failed
        self.table = w.HTML()
        self.details = w.HTML()
        self.working = False
        self.b_reset.on_click(lambda _: self._move(0, "back to step 0"))
        self.b_back.on_click(lambda _: self._move(self.core.pos - 1, "one step back (a replay)"))
        self.b_fwd.on_click(lambda _: self._move(self.core.pos + 1, self._next_text()))
        self.b_end.on_click(lambda _: self._move(self.core.total, "running every step"))
        self.b_first.on_click(lambda _: self._run("looking for the first divergence", self._to_first))
        buttons = w.HBox([self.b_reset, self.b_back, self.b_fwd, self.b_end, self.b_first],
                         layout=w.Layout(flex_flow="row wrap"))
        box = _stable_box()
        self.widget = box([buttons, self.status, self.table, self.details], owner=self)
        self._refresh()

    def _controls(self) -> list:
        return [self.b_reset, self.b_back, self.b_fwd, self.b_end, self.b_first]

    def _next_text(self) -> str:
        pos = self.core.pos
        return f"step {pos + 1} / {self.core.total}: {sv.script_title(self.core.script[pos])}" \
            if pos < self.core.total else "step"

    def _working(self, what: str):
        return busy(self, f"{what} in {len(self.core.systems)} columns")

    def _run(self, what: str, action) -> None:
        """Run ``action`` and redraw inside :meth:`_working`; on an exception (or an interrupt) the columns are
        rebuilt at the position they had, the failure is shown and the exception propagates."""
        if self.working:
            return
        pos = self.core.pos
        with self._working(what), gc_paused():
            try:
                action()
                self._refresh()
            except BaseException as exc:
                self.core.systems = [pickle.loads(b) for b in self.core._pristine]
                while self.core.pos < pos:
                    self.core.forward()
                self._refresh()
                self.status.value = sv.banner(f"failed: {type(exc).__name__}: {exc} (back at step {self.core.pos})",
                                              "bad")
                raise
            self.status.value = ""

    def _move(self, n: int, what: str = "moving") -> None:
        self._run(what, lambda: self.core.goto(n))

    def _to_first(self) -> None:
        probe = LockStep(self.core.script, self.core.columns).run_all()
        first = probe.first_divergence()
        self.core.goto(first if first is not None else self.core.total)

    def _refresh(self) -> None:
        table = self.core.table_html(current=self.core.pos or None)
        details = self.core.step_details_html(diagrams=self.diagrams)
        self.table.value = f'<div style="line-height:1.35;overflow-x:auto">{table}</div>'
        self.details.value = f'<div style="line-height:1.35">{details}</div>'
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        self.b_back.disabled = self.b_reset.disabled = self.core.pos == 0
        self.b_fwd.disabled = self.b_end.disabled = self.core.pos >= self.core.total

    def click(self, name: str) -> None:
        {"reset": self.b_reset, "back": self.b_back, "step": self.b_fwd, "end": self.b_end,
         "first": self.b_first}[name].click()

    def __repr__(self) -> str:
        return f"SideBySide({', '.join(self.core.labels)}; step {self.core.pos}/{self.core.total})"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _stable_box():
    from nbmodel.viz.stepper import stable_vbox_class
    return stable_vbox_class()


def side_by_side(script=WALK, columns=None, start: int = 0, diagrams: bool = True, **common) -> SideBySide:
    return SideBySide(script, columns, start, diagrams, **common)


# -- break-it switches: each with a script where it changes an outcome -------------------------------------
_G = {"op": "gmem_create", "file": "g", "size": "2M"}

#: switch -> (the settings of the baseline column, the script, what to look at). The other column is the same
#: settings plus the switch.
SWITCH_DEMOS = {
    "skip_flush": (
        {"design": "filemap"},
        [_G, {"op": "fallocate", "file": "g", "len": "8K"}, {"op": "guest_fault", "file": "g", "offset": "4K"},
         {"op": "kernel_read", "file": "g", "offset": "4K"}],
        "The second folio was zeroed through the direct map (CPU 0 cached its translation), zapped, and the "
        "flush did nothing: the folio sits in the page cache while CPU 0 can still reach it. The guest then "
        "writes its data, and a kernel read on CPU 0 is served by the stale entry: it sees the guest's page.",
    ),
    "zero_after_insert": (
        {"design": "filemap"},
        [_G, {"op": "fallocate", "file": "g", "len": "4K"}, {"op": "user_fault", "file": "g"}],
        "The folio went into the page cache unzeroed; guest_memfd's lazy clear_highpage() at the first fault "
        "then writes through a direct map that is already gone: an oops.",
    ),
    "restore_4k": (
        {"design": "filemap"},
        [_G, {"op": "fallocate", "file": "g", "len": "2M"}, {"op": "punch_hole", "file": "g", "len": "2M"}],
        "Without the switch the 2M range is 512 order-0 folios, each zapped and restored as it was zapped. With "
        "it, one 2M folio is zapped whole (its 2M leaf just turns invalid, no split) and restored one 4K page "
        "at a time: the first 4K restore must split the 2M leaf, which allocates a page table and can fail with "
        "-ENOMEM, on a path that cannot fail.",
    ),
    "arm64_no_bbml2": (
        {"design": "filemap", "arch": "arm64", "mode": "bbml2"},
        [_G, {"op": "fallocate", "file": "g", "len": "4K"}],
        "Block mappings without BBML2_NOABORT: changing one page inside a block cannot split it on a live "
        "mapping, so the page walk WARNs and the zap fails with -EINVAL; fallocate() fails.",
    ),
    "unhooked_migration": (
        {"design": "filemap"},
        [_G, {"op": "fallocate", "file": "g", "len": "4K"}, {"op": "guest_fault", "file": "g"},
         {"op": "migrate", "file": "g"}, {"op": "kernel_read", "file": "g"}],
        "Migration bypasses the hooks: it copies the source through the direct map (an oops: the source is "
        "zapped), puts a destination with a valid direct map into the page cache, and frees the source without "
        "restoring it.",
    ),
    "put_before_restore": (
        {"design": "secretmem"},
        [{"op": "secret_create", "file": "s", "size": "2M"},
         {"op": "secret_fault", "file": "s", "offset": 0, "race": True}],
        "Two faults race on one memfd_secret page; the loser's filemap_add_folio() returns -EEXIST. Before "
        "6f86d0534fdd secretmem_fault() dropped its folio first and restored the direct map after: the page "
        "went back to the allocator unmapped (and could be reused before the restore).",
    ),
}


def switch_demo(name: str) -> LockStep:
    """The :data:`SWITCH_DEMOS` entry for ``name`` run in two columns: without and with the switch."""
    base, script, _ = SWITCH_DEMOS[name]
    with_switch = {**base, "switches": (name,)}
    return lockstep(script, [dict(base), with_switch])


def switch_demos_table() -> str:
    """Every switch: what it does, the step where it first changes an outcome, and that step's outcomes."""
    from nbmodel.designs import SWITCHES

    rows = []
    for name, what in SWITCHES.items():
        if name not in SWITCH_DEMOS:
            rows.append([name, what, "-", "(no demo script)", ""])
            continue
        ls = switch_demo(name)
        first = ls.first_divergence()
        if first is None:
            rows.append([name, what, "none", "", ""])
            continue
        a, b = ls.rows()[first - 1]
        rows.append([name, what, f"{first}: {sv.script_title(ls.script[first - 1])}",
                     describe_outcome(a), sv.cell(html.escape(describe_outcome(b)), sv.BAD)])
    return sv.table("break-it switches: the first step each one changes", ["switch", "what it does",
                    "first divergence", "without", "with the switch"], rows)


__all__ = ["LockStep", "lockstep", "lockstep_filmstrip", "SideBySide", "side_by_side", "outcome",
           "describe_outcome", "looks_bad", "SWITCH_DEMOS", "switch_demo", "switch_demos_table", "SECRET_WINDOW",
           "WALK"]
