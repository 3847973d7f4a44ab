"""notebooks/00_pipeline.ipynb in a real JupyterLab with a real kernel, driven by chromium.

JupyterLab runs on a free localhost port with a token, on a copy of notebooks/ and scenarios/ (so that
running cells and autosave never touch the repository). The test waits for a connected, idle kernel, runs
all cells, and checks that the diagram, the slider and its label appear; then moves the slider with the
keyboard and checks that the kernel answered. The server's process group is always killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import CHROMIUM_ARGS, ROOT

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.slow, pytest.mark.timeout(300)]

NOTEBOOK = "notebooks/00_pipeline.ipynb"

# The execution indicator says idle before the kernel connection is usable: wait for the kernel itself.
KERNEL_READY_JS = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    work = tmp_path / "work"
    skip = shutil.ignore_patterns(".ipynb_checkpoints")
    shutil.copytree(ROOT / "notebooks", work / "notebooks", ignore=skip)
    if (ROOT / "scenarios").is_dir():
        shutil.copytree(ROOT / "scenarios", work / "scenarios")
    # No news toast, no update check, no autosave.
    settings = tmp_path / "settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    # Every cell rendered (no windowing), so that a test sees the whole notebook, not the cells in view.
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"})
    )
    if os.environ.get("NBMODEL_LAB_DISABLE"):  # to show a test fails without an extension it relies on
        (tmp_path / "config" / "labconfig").mkdir(parents=True)
        (tmp_path / "config" / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {os.environ["NBMODEL_LAB_DISABLE"]: True}})
        )
    (settings / "@jupyterlab" / "docmanager-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings").write_text(
        json.dumps({"autosave": False})
    )
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
    )
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tmp_path / "lab.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=work,
        start_new_session=True,  # its own process group: kernels die with it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited ({proc.returncode}):\n{(tmp_path / 'lab.log').read_text()}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer in 90 s:\n{(tmp_path / 'lab.log').read_text()}")
                time.sleep(0.5)
        yield base, token
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def _open_and_run_all(page, base: str, token: str, notebook: str, outside: list) -> None:
    """Open ``notebook`` in JupyterLab (requests outside the server are aborted and listed in ``outside``),
    wait for an idle kernel, and start "run all cells"."""

    def route(r):
        if r.request.url.startswith(base) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(f"{base}/lab/tree/{notebook}?token={token}", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
    page.wait_for_function(KERNEL_READY_JS, timeout=90_000)
    # Fire and forget: awaiting the command's promise has no timeout and can hang forever.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


@contextlib.contextmanager
def _lab_notebook(lab, chromium, notebook: str, viewport: dict, screenshot):
    """A page in headless chromium with ``notebook`` open in JupyterLab and "run all cells" started. The page is
    screenshot to ``screenshot`` at the end, pass or fail; a request outside the server fails the test."""
    from playwright.sync_api import sync_playwright

    base, token = lab
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=viewport)
        try:
            _open_and_run_all(page, base, token, notebook, outside)
            yield page
        finally:
            page.screenshot(path=str(screenshot), full_page=False)
            browser.close()
    assert not outside, "JupyterLab requested outside localhost:\n" + "\n".join(outside)


def test_pipeline_notebook_runs_in_jupyterlab(lab, chromium, screenshots_dir):
    with _lab_notebook(lab, chromium, NOTEBOOK, {"width": 1280, "height": 1000},
                       screenshots_dir / "lab-00_pipeline.png") as page:
        outputs = page.locator(".jp-OutputArea-output")
        outputs.locator(".nbmodel-diagram svg").first.wait_for(state="visible", timeout=60_000)
        slider = outputs.locator(".widget-slider").first
        slider.wait_for(state="visible", timeout=60_000)
        label = outputs.locator(".widget-label", has_text="pages of 4 KiB").first
        label.wait_for(timeout=30_000)
        page.wait_for_function(KERNEL_READY_JS, timeout=60_000)  # all cells done
        assert label.inner_text().strip() == "order 9: 512 pages of 4 KiB = 2048 KiB"
        assert outputs.filter(has_text="order 10: 1024 pages of 4 KiB = 4096 KiB").count() == 1

        # The widget talks to the kernel: one step right on the slider, the Python callback relabels.
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")
        outputs.locator(".widget-label", has_text="order 10: 1024 pages").first.wait_for(timeout=30_000)


def test_folio_stepper_steps_in_jupyterlab(lab, chromium, screenshots_dir):
    """Chapter 4's live stepper: run the notebook, click "step >", and the page-table view changes."""
    with _lab_notebook(lab, chromium, "notebooks/04_v12_per_folio.ipynb", {"width": 1400, "height": 1100},
                       screenshots_dir / "lab-04_stepper.png") as page:
        step = page.locator(".jp-OutputArea-output .widget-button", has_text="step >").first
        step.wait_for(state="visible", timeout=90_000)
        page.wait_for_function(KERNEL_READY_JS, timeout=90_000)  # all cells done
        out = page.locator(".jp-OutputArea-output", has=page.locator(".widget-button", has_text="step >")).last
        view = out.locator(".nbmodel-diagram").first
        view.wait_for(state="visible", timeout=30_000)
        before = view.inner_html()
        status = out.locator(".widget-html", has_text="step ").first
        status_before = status.inner_text()
        step.scroll_into_view_if_needed(timeout=10_000)
        step.click()
        for _ in range(60):  # up to 30 s for the kernel to answer the click and the view to redraw
            if view.inner_html() != before:
                break
            page.wait_for_timeout(500)
        assert view.inner_html() != before, "the page-table view did not change after 'step >'"
        assert out.locator(".widget-html", has_text="step ").first.inner_text() != status_before
        out.screenshot(path=str(screenshots_dir / "lab-04_stepper-after-step.png"))


def test_myst_roles_render_in_jupyterlab(lab, chromium, screenshots_dir):
    """jupyterlab-myst renders the chapters' MyST markdown: {term} and {doc} roles become text and links, not
    raw role syntax (chapter 1 uses both)."""
    import json as _json

    source = _json.loads((ROOT / "notebooks" / "01_why.ipynb").read_text())
    markdown = "".join("".join(c["source"]) for c in source["cells"] if c["cell_type"] == "markdown")
    assert "{term}`" in markdown and "{doc}`" in markdown  # what there is to render
    with _lab_notebook(lab, chromium, "notebooks/01_why.ipynb", {"width": 1280, "height": 1000},
                       screenshots_dir / "lab-01_why-myst.png") as page:
        cells = page.locator(".jp-MarkdownCell .jp-RenderedMarkdown, .jp-MarkdownCell .myst")
        cells.first.wait_for(state="visible", timeout=60_000)
        page.wait_for_function(
            "() => document.querySelectorAll('.jp-MarkdownCell').length > 3 && "
            "[...document.querySelectorAll('.jp-MarkdownCell')].every(c => !c.querySelector('.jp-MarkdownOutput') ||"
            " c.querySelector('.jp-MarkdownOutput').innerText.trim().length > 0)", timeout=60_000)
        text = page.locator(".jp-Notebook").inner_text()
        assert "{term}" not in text and "{doc}" not in text, "MyST roles are shown raw"
        assert page.locator(".jp-MarkdownCell a").count() > 0


# A stepper whose second step is a 256M fallocate (65,536 folios): long enough for the busy state to show.
BUSY_NOTEBOOK = """from nbmodel.viz.stepper import stepper
big = [{"op": "gmem_create", "file": "g", "size": "256M"}, {"op": "fallocate", "file": "g", "offset": 0, "len": "256M"}]
stepper(script=big, start=1)"""

# Watches the page from before the click: did the stepper ever show, all at once, "step >" disabled, a
# dropdown disabled, the "working..." status and the busy class on its box?
WATCH_BUSY_JS = """() => {
    const seen = window.__nbmodelBusy = {all: false, working: false};
    const check = () => {
        const out = document.querySelector('.jp-OutputArea-output .nbmodel-busy');
        const text = document.querySelector('.jp-Notebook').innerText;
        const working = text.includes('working\u2026 step 2 / 2: fallocate');
        seen.working = seen.working || working;
        if (out && working) {
            const step = [...out.querySelectorAll('button')].find(b => b.textContent.includes('step >'));
            const select = out.querySelector('select');
            seen.all = seen.all || (!!step && step.disabled && !!select && select.disabled);
        }
    };
    new MutationObserver(check).observe(document.body,
        {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def test_stepper_is_busy_while_the_kernel_steps_in_jupyterlab(lab, chromium, screenshots_dir, tmp_path):
    """A large step typed into a stepper: while the kernel works, the buttons and dropdowns are disabled and the
    status says "working..."; after it, the summary view is shown and the controls work again."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(BUSY_NOTEBOOK)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "work" / "notebooks" / "busy.ipynb"))
    with _lab_notebook(lab, chromium, "notebooks/busy.ipynb", {"width": 1280, "height": 1000},
                       screenshots_dir / "lab-busy-stepper.png") as page:
        step = page.locator(".jp-OutputArea-output .widget-button", has_text="step >").first
        step.wait_for(state="visible", timeout=90_000)
        page.wait_for_function(KERNEL_READY_JS, timeout=90_000)
        out = page.locator(".jp-OutputArea-output", has=page.locator(".widget-button", has_text="step >")).last
        assert "working" not in out.inner_text() and not step.is_disabled()
        page.evaluate(WATCH_BUSY_JS)
        step.click()
        out.get_by_text("summary: 65536 folios; the full drawing is limited to 256").wait_for(timeout=180_000)
        page.wait_for_function(KERNEL_READY_JS, timeout=60_000)
        seen = page.evaluate("() => window.__nbmodelBusy")
        assert seen["working"], "the status never said the kernel was working"
        assert seen["all"], "while working, 'step >' and the dropdowns were not all disabled in a busy box"
        # Idle again: no busy class, no "working" status, the controls enabled as the position allows.
        page.wait_for_function("() => !document.querySelector('.nbmodel-busy')", timeout=30_000)
        assert "working" not in out.inner_text()
        assert step.is_disabled()  # at the end of the script
        assert not out.locator(".widget-button", has_text="< back").first.is_disabled()
        assert not out.locator("select").first.is_disabled()
        assert out.locator(".nbmodel-diagram svg").count() == 0  # the summary, not a drawing
        out.screenshot(path=str(screenshots_dir / "lab-busy-stepper-after.png"))
