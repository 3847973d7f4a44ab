"""Quizzes: the answer is what the model computes, the static HTML can reveal it, the live widget checks it.

The chapters' own quizzes are re-evaluated from their notebook source and compared with the answer saved in
the notebook's output, so a model change that changes an answer is caught here as well as by nbval.
"""

from __future__ import annotations

import ast
import json
import pathlib
import re

import pytest

from nbmodel.system import System
from nbmodel.viz.quiz import Quiz, counter_quiz, result_quiz, run_system

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SHOW_ANSWER = re.compile(r"<details\b[^>]*>\s*<summary\b[^>]*>Show answer</summary>", re.S)
SAVED_ANSWER = re.compile(r"Answer: <strong>([^<]*)</strong>")

SETUP = [{"op": "gmem_create", "file": "g", "size": "2M"}]
FAULTS = [{"op": "user_fault", "file": "g", "offset": off} for off in ("0", "4K", "8K")]


def splits_quiz(**system) -> Quiz:
    return counter_quiz("How many 2M leaves split?", setup=SETUP, steps=FAULTS,
                        counter="direct_map_level2_splits", system=system, kinds=("split",))


def model_splits(**system) -> int:
    """The same question, asked of the model directly."""
    sys = System(**system)
    for s in SETUP:
        sys.step(**s)
    before = sys.k.counters["direct_map_level2_splits"]
    for s in FAULTS:
        sys.step(**s)
    return sys.k.counters["direct_map_level2_splits"] - before


@pytest.mark.parametrize("system", [
    {"design": "filemap", "seed": 0},
    {"design": "per-folio", "seed": 3},
    {"design": "filemap", "arch": "arm64", "mode": "bbml2", "seed": 1},
    {"design": "filemap", "arch": "x86", "mode": "nogbpages"},
])
def test_counter_quiz_answer_is_what_the_model_computes(system):
    q = splits_quiz(**system)
    assert q.answer == model_splits(**system)
    assert q.evidence[-1] == f"direct_map_level2_splits grew by {q.answer}"


def test_counter_quiz_counts_only_the_counted_steps():
    # The setup creates the file and faults nothing: a quiz over no fault steps answers 0.
    q = counter_quiz("zaps?", setup=SETUP + FAULTS, steps=[], counter="zaps", system={"design": "filemap"})
    assert q.answer == 0


def test_result_quiz_answer_is_the_step_result():
    hidden = result_quiz("What does the read return?", setup=SETUP + FAULTS[:1],
                         step={"op": "kernel_read", "file": "g", "offset": 0, "cpu": 1},
                         system={"design": "filemap"})
    sys, steps = run_system({"design": "filemap"}, SETUP + FAULTS[:1],
                            [{"op": "kernel_read", "file": "g", "offset": 0, "cpu": 1}])
    assert hidden.answer == steps[-1].result == "oops"
    plain = result_quiz("And without NO_DIRECT_MAP?",
                        setup=[{"op": "gmem_create", "file": "g", "size": "2M", "flags": ["MMAP", "INIT_SHARED"]},
                               FAULTS[0]],
                        step={"op": "kernel_read", "file": "g", "offset": 0, "cpu": 1})
    assert plain.answer == "ok"


def test_an_answer_outside_the_choices_is_refused():
    with pytest.raises(ValueError, match="not among the choices"):
        result_quiz("?", setup=SETUP + FAULTS[:1], step={"op": "kernel_read", "file": "g", "offset": 0},
                    choices=("ok", "stale"))


def test_static_html_reveals_the_answer_in_details():
    q = splits_quiz(design="filemap")
    page = q.html()
    assert SHOW_ANSWER.search(page)
    assert page.count("<details") == 1 and page.count("</details>") == 1
    assert SAVED_ANSWER.search(page).group(1) == str(q.answer)
    assert "How many 2M leaves split?" in page
    assert "split(" in page  # the model's own events are the evidence
    assert " at 0x" not in page and "model_id" not in page


def test_html_escapes_and_formats_inline_code():
    q = Quiz("Is `a<b` & c?", lambda: (1, ["x<y"]), explanation="see `->free_folio`")
    page = q.html()
    assert ">a&lt;b</code>" in page and "&amp; c?" in page
    assert ">-&gt;free_folio</code>" in page
    assert "x&lt;y" in page


def test_same_question_same_bytes():
    assert splits_quiz(design="filemap").html() == splits_quiz(design="filemap").html()


@pytest.mark.parametrize("given, ok", [("1", True), (" 1 ", True), (1, True), ("2", False), ("one", False),
                                       ("", False)])
def test_check_numbers(given, ok):
    q = Quiz("?", lambda: (1, []))
    assert q.check(given) is ok


def test_check_words_ignores_case_and_spaces():
    q = Quiz("?", lambda: ("oops", []), choices=("ok", "stale", "oops"))
    assert q.check(" OOPS ") and not q.check("ok")


def test_live_widget_checks_against_the_model():
    q = splits_quiz(design="filemap")
    box, button, feedback = q.widget().children
    box.value = str(q.answer + 1)
    button.click()
    assert feedback.value.startswith("Not ")
    box.value = str(q.answer)
    button.click()
    assert feedback.value == f"Right: {q.answer}. The model agrees."
    box.value = ""
    button.click()
    assert feedback.value == "Type an answer first."


def test_live_widget_with_choices_is_a_dropdown():
    q = Quiz("?", lambda: ("oops", []), choices=("ok", "stale", "oops"))
    box, button, feedback = q.widget().children
    assert [v for _, v in box.options] == ["", "ok", "stale", "oops"]
    box.value = "oops"
    button.click()
    assert feedback.value.startswith("Right")


# -- the chapters' quizzes --------------------------------------------------------------------------------------
def _quiz_cells():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            html_out = "".join("".join(o.get("data", {}).get("text/html", "")) for o in cell.get("outputs", []))
            if "nbmodel-quiz-answer" in html_out:
                yield pytest.param(path, i, "".join(cell["source"]), html_out, id=f"{path.stem}-cell{i}")


QUIZ_CELLS = list(_quiz_cells())


def test_the_chapters_have_quizzes():
    stems = {p.values[0].stem for p in QUIZ_CELLS}
    assert {"01_why", "03_page_cache"} <= stems


@pytest.mark.parametrize("path, index, source, saved", QUIZ_CELLS)
def test_chapter_quiz_saved_answer_is_what_the_model_computes_now(path, index, source, saved):
    tree = ast.parse(source)
    last = tree.body.pop()
    assert isinstance(last, ast.Expr), "a quiz cell ends with the expression that shows the quiz"
    namespace: dict = {}
    exec(compile(tree, f"{path.name}[{index}]", "exec"), namespace)
    quiz = eval(compile(ast.Expression(last.value), f"{path.name}[{index}]", "eval"), namespace)
    assert isinstance(quiz, Quiz)
    assert SHOW_ANSWER.search(saved), "the saved output has no revealable answer"
    assert SAVED_ANSWER.search(saved).group(1) == str(quiz.answer)
    assert quiz.answer_html() in saved
