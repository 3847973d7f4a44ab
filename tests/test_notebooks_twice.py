"""Every notebook executes to the same outputs each time.

Three executions exist: the one saved in the notebook (scripts/execute_notebooks.sh), the one Jupyter Book
ran to render the book (book/_build/jupyter_execute), and nbval's own re-run. nbval compares the first and
the third; this compares the first and the second, cell by cell, skipping only cells tagged to vary.
"""

import json
import re

import pytest
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IGNORED_TAGS = {"nbval-ignore-output", "nbval-skip"}
_ADDRESS = re.compile(r" at 0x[0-9a-f]+>")


def _outputs(path):
    cells = json.loads(path.read_text())["cells"]
    out = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & IGNORED_TAGS or "".join(cell["source"]).lstrip().startswith("# NBVAL_IGNORE_OUTPUT"):
            out.append(None)
            continue
        shown = []
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                # a busy machine splits one print into several stream chunks: compare the text, not the chunks
                if shown and shown[-1][0] == "stream" and shown[-1][1] == o["name"]:
                    shown[-1] = ("stream", o["name"], shown[-1][2] + "".join(o["text"]))
                else:
                    shown.append(("stream", o["name"], "".join(o["text"])))
            elif "data" in o:
                data = {k: ("".join(v) if isinstance(v, list) else json.dumps(v, sort_keys=True))
                        for k, v in o["data"].items() if k != "application/vnd.jupyter.widget-view+json"}
                shown.append(("data", tuple(sorted((k, _ADDRESS.sub(" at 0x>", v)) for k, v in data.items()))))
            elif o["output_type"] == "error":
                shown.append(("error", o["ename"]))
        out.append(shown)
    return out


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_book_execution_matches_saved_outputs(notebook, book_html):
    executed = book_html.parent / "jupyter_execute" / "notebooks" / notebook.name
    assert executed.exists(), f"the book did not execute {notebook.name}"
    saved, again = _outputs(notebook), _outputs(executed)
    assert len(saved) == len(again)
    for i, (a, b) in enumerate(zip(saved, again, strict=True)):
        if a is not None:
            assert a == b, f"{notebook.name}: code cell {i} differs between the saved run and the book's run"
