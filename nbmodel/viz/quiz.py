"""Quizzes whose answers the model computes.

A quiz asks a question about what the modelled kernel will do ("how many 2M direct-map leaves does this
split?") and gets its answer by *running* :mod:`nbmodel`, never from a typed-in constant. So if the model
changes, the answer changes with it, and the tests (which recompute it) notice.

A quiz shows in two ways at once:

- **live** (JupyterLab, Voila): an input, a *Check* button and a feedback line, as ipywidgets;
- **static** (the built book): the question and an HTML ``<details><summary>Show answer</summary>...``
  block, so a reader without a Python kernel can still reveal the answer and see how the model got it.

    >>> q = counter_quiz("How many folios does this zap?",
    ...                  setup=[{"op": "gmem_create", "file": "g", "size": "64K"}],
    ...                  steps=[{"op": "user_fault", "file": "g", "offset": 0}],
    ...                  counter="zaps", system={"design": "filemap", "memory": "64M"})
    >>> q.answer
    1
    >>> q.check("1"), q.check("2")
    (True, False)
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nbmodel.system import System

__all__ = ["Quiz", "counter_quiz", "result_quiz", "run_system"]

_CODE = re.compile(r"`([^`]+)`")
_MAX_EVIDENCE = 14

# Inline styles, no colours left to the page: a light card with dark text reads the same on a light or a dark
# page, in JupyterLab and in the static book (the convention of nbmodel.viz.state_view).
TEXT = "#1a1a1a"
CARD = (f"background:#f6f7f9;color:{TEXT};border-left:4px solid #8a8a8a;padding:0.4em 0.8em;margin:0.3em 0;"
        "border-radius:3px")
CODE = f"background:#e6e8eb;color:{TEXT};padding:0 0.2em;border-radius:2px;font-size:0.92em;white-space:nowrap"
PRE = f"background:#eceef1;color:{TEXT};padding:0.4em 0.6em;margin:0.3em 0;font-size:0.85em;overflow-x:auto"


def _inline(text: str) -> str:
    """Escape ``text`` for HTML and turn `backticks` into ``<code>``."""
    return _CODE.sub(lambda m: f'<code style="{CODE}">{m.group(1)}</code>', html.escape(text, quote=False))


def run_system(system: dict | None, setup: Sequence[dict], steps: Sequence[dict]):
    """Build a :class:`~nbmodel.system.System` from ``system`` (keyword arguments), run ``setup`` and then
    ``steps`` (lists of ``{"op": ..., **args}``); returns ``(system, counted_steps)``."""
    sys = System(**dict(system or {}))
    sys.run([dict(s) for s in setup])
    counted = sys.run([dict(s) for s in steps])
    return sys, counted


@dataclass
class Quiz:
    """One question, its model-computed answer, and how it was computed.

    ``compute`` is called once, at construction; it returns ``(answer, evidence)`` where ``evidence`` is a
    list of lines (model events, step results) shown under the revealed answer. ``choices``, when given,
    turns the input into a drop-down of those answers.
    """

    question: str
    compute: Callable[[], tuple]
    explanation: str = ""
    choices: tuple = ()
    how: str = ""
    answer: object = field(init=False)
    evidence: list = field(init=False)

    def __post_init__(self):
        self.answer, evidence = self.compute()
        self.evidence = [str(e) for e in evidence]
        if self.choices and self.answer not in self.choices:
            raise ValueError(f"the model's answer {self.answer!r} is not among the choices {self.choices!r}")

    # -- checking -----------------------------------------------------------------------------------------
    def check(self, given) -> bool:
        """Whether ``given`` (what a reader typed or picked) is the model's answer."""
        if isinstance(self.answer, bool) or not isinstance(self.answer, int):
            return str(given).strip().lower() == str(self.answer).strip().lower()
        try:
            return int(str(given).strip()) == self.answer
        except ValueError:
            return False

    def feedback(self, given) -> str:
        """The line the live quiz shows after *Check*."""
        if given is None or str(given).strip() == "":
            return "Type an answer first."
        if self.check(given):
            return f"Right: {self.answer}. The model agrees."
        return f"Not {str(given).strip()}. Try again, or open the answer below."

    # -- static HTML ----------------------------------------------------------------------------------------
    def question_html(self) -> str:
        """The question card. It carries the answer (as the revealable answer below it does) so that the static
        book, which has no kernel, can answer the live widget's *Check* by the same rule as :meth:`feedback`."""
        kind = "int" if isinstance(self.answer, int) and not isinstance(self.answer, bool) else "text"
        data = f'data-answer="{html.escape(str(self.answer), quote=True)}" data-kind="{kind}"'
        return (f'<div class="nbmodel-quiz-question" {data} style="{CARD}">'
                f'<p style="margin:0.2em 0;color:{TEXT}"><strong>Quiz.</strong> {_inline(self.question)}</p></div>')

    def answer_html(self) -> str:
        """The revealable answer: a ``<details>`` block with the answer, the explanation and the evidence."""
        parts = [
            f'<details class="nbmodel-quiz-answer" style="{CARD}">',
            f'<summary style="cursor:pointer;color:{TEXT}">Show answer</summary>',
            f'<p style="color:{TEXT}">Answer: <strong>{html.escape(str(self.answer))}</strong></p>',
        ]
        if self.explanation:
            parts.append(f'<p style="color:{TEXT}">{_inline(self.explanation)}</p>')
        if self.evidence:
            shown = self.evidence[:_MAX_EVIDENCE]
            more = len(self.evidence) - len(shown)
            lines = "\n".join(html.escape(line) for line in shown)
            if more:
                lines += f"\n... ({more} more)"
            how = _inline(self.how) if self.how else "What the model did:"
            parts.append(f'<p style="color:{TEXT}">{how}</p>\n<pre style="{PRE}">{lines}</pre>')
        parts.append("</details>")
        return "\n".join(parts)

    def html(self) -> str:
        """Question plus revealable answer: everything the static book needs."""
        return self.question_html() + "\n" + self.answer_html()

    # -- live widget ----------------------------------------------------------------------------------------
    def widget(self):
        """An input, a *Check* button and a feedback line (ipywidgets), wired to :meth:`check`."""
        import ipywidgets as widgets

        if self.choices:
            box = widgets.Dropdown(options=[("choose...", "")] + [(str(c), str(c)) for c in self.choices],
                                   value="", description="answer")
        elif isinstance(self.answer, int) and not isinstance(self.answer, bool):
            box = widgets.Text(value="", placeholder="a number", description="answer")
        else:
            box = widgets.Text(value="", placeholder="your answer", description="answer")
        button = widgets.Button(description="Check")
        out = widgets.Label(value="")

        def on_click(_button):
            out.value = self.feedback(box.value)

        button.on_click(on_click)
        return widgets.HBox([box, button, out])

    def _ipython_display_(self):
        from IPython.display import HTML, display

        display(HTML(self.question_html()))
        display(self.widget())
        display(HTML(self.answer_html()))


def counter_quiz(question: str, steps: Sequence[dict], counter: str, setup: Sequence[dict] = (),
                 system: dict | None = None, explanation: str = "", kinds: Sequence[str] | None = None) -> Quiz:
    """A quiz whose answer is how much ``counter`` grows over ``steps`` (after ``setup``) on a System built
    with ``system``. The evidence is the counted steps and their events (only ``kinds``, if given)."""

    def compute():
        _, counted = run_system(system, setup, steps)
        total = sum(s.counters.get(counter, 0) for s in counted)
        evidence = []
        for s in counted:
            evidence.append(str(s))
            evidence += [f"      {e}" for e in s.events if kinds is None or e.kind in kinds]
        evidence.append(f"{counter} grew by {total}")
        return total, evidence

    return Quiz(question, compute, explanation=explanation, how=_how(system))


def result_quiz(question: str, step: dict, setup: Sequence[dict] = (), system: dict | None = None,
                choices: Sequence[str] = ("ok", "stale", "oops"), explanation: str = "") -> Quiz:
    """A quiz whose answer is the result of one ``step`` (after ``setup``), picked from ``choices``."""

    def compute():
        _, counted = run_system(system, setup, [step])
        s = counted[-1]
        return s.result, [str(s)] + [f"      {e}" for e in s.events]

    return Quiz(question, compute, explanation=explanation, choices=tuple(choices), how=_how(system))


def _how(system: dict | None) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in sorted((system or {}).items()))
    return f"What the model did (`System({args})`):"
