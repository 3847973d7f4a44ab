"""Every page of the built book in a real browser (Debian chromium driven by Playwright), on a desktop
(1366x900) and a phone (390x844).

The book is served on a localhost port; every request for another host is aborted and counted as a failure,
as are console errors, page errors, failed or 4xx/5xx responses, and the ajv strict-mode warning. On each
page and viewport: the page does not scroll sideways; diagrams are visible SVG that fit their column, with
their highlighted nodes on screen; every saved widget is rendered by the vendored html-manager; math is
typeset by the vendored MathJax. A full-page screenshot per page and viewport goes to
artifacts/screenshots/book-<page>-<width>.png.

Then what a reader does: every control on every page is clicked (a control either changes what the page
shows or is visibly disabled with the "recorded" note); the quizzes answer Check without a kernel; the
chapter navigation opens on a touch screen at 390 and 900 px; a diagram opens full size on click.
"""

from __future__ import annotations

import contextlib
import urllib.parse

import pytest
from conftest import CHROMIUM_ARGS, toc_docnames
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

PAGES = toc_docnames()
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
NOTE = "recorded \u2014 run this chapter live to change it"

# Widgets are rendered by embed.js after the load event; nbmodel-book.js then marks every widget area it has
# handled (disabled with the note, or a quiz wired to its answer).
WIDGETS_SETTLED_JS = """n => {
    const areas = document.querySelectorAll('.bd-article .widget-subarea');
    return document.querySelectorAll('.jupyter-widgets').length >= n &&
        [...areas].every(a => a.hasAttribute('data-nbmodel-static'));
}"""


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def book_page(browser, book_server, doc, viewport=DESKTOP, screenshot=None, **context_args):
    """Open ``doc`` with every request, console message and error watched; yields ``(page, problems)``.
    The caller asserts on ``problems`` (a list of strings) after the block."""
    host = urllib.parse.urlsplit(book_server).netloc
    problems: list[str] = []
    context = browser.new_context(viewport=viewport, **context_args)
    page = context.new_page()

    def route(r):
        if urllib.parse.urlsplit(r.request.url).netloc == host or r.request.url.startswith("data:"):
            r.continue_()
        else:
            problems.append(f"request outside the book: {r.request.url}")
            r.abort()

    def console(m):
        if m.type == "error" or "strict mode" in m.text:
            problems.append(f"console {m.type}: {m.text}")

    page.route("**/*", route)
    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    try:
        page.goto(book_server + doc + ".html", wait_until="load", timeout=60_000)
        try:
            # Heavy pages (filmstrips of many SVG frames) can keep the network busy for a while; requests
            # outside the book are caught by the route handler whatever happens here.
            page.wait_for_load_state("networkidle", timeout=30_000)
        except PlaywrightTimeoutError:
            pass
        page.locator("main").first.wait_for(state="visible", timeout=10_000)
        views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
        if views:
            page.wait_for_function(WIDGETS_SETTLED_JS, arg=views, timeout=30_000)
        yield page, problems
        page.wait_for_timeout(300)  # let late console errors arrive
    finally:
        if screenshot:
            with contextlib.suppress(Exception):
                page.evaluate("() => window.scrollTo(0, 0)")
                page.screenshot(path=str(screenshot), full_page=True)
        context.close()


# Each visible graphviz diagram: its box, its column's box, and its highlighted nodes' boxes (page coordinates).
DIAGRAMS_JS = """() => {
    const out = [];
    for (const svg of document.querySelectorAll('.bd-article svg')) {
        if (!svg.querySelector(':scope > g.graph')) continue;
        const r = svg.getBoundingClientRect();
        if (!r.width || !r.height || svg.closest('[hidden]') || getComputedStyle(svg).visibility === 'hidden') continue;
        // the column: the nearest ancestor that clips or scrolls, else the article
        let col = svg.parentElement;
        while (col && !col.matches('.bd-article')) {
            const s = getComputedStyle(col);
            if (s.overflowX !== 'visible' || s.display === 'flex' && col !== svg.parentElement) break;
            col = col.parentElement;
        }
        const c = col.getBoundingClientRect();
        const hl = [...svg.querySelectorAll('.nbmodel-hl')].map(n => {
            const b = n.getBoundingClientRect(); return [b.left, b.right];
        });
        const label = (svg.querySelector('title') || {}).textContent || '';
        out.push({label, left: r.left, right: r.right, width: r.width, height: r.height,
                  colLeft: c.left, colRight: c.right, hl, zoom: svg.hasAttribute('data-nbmodel-zoom')});
    }
    return out;
}"""


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
@pytest.mark.parametrize("doc", PAGES)
def test_book_page_in_browser(doc, viewport, browser, book_server, screenshots_dir):
    shot = screenshots_dir / f"book-{doc.replace('/', '-')}-{viewport['width']}.png"
    with book_page(browser, book_server, doc, viewport, screenshot=shot) as (page, problems):
        width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1] + 1, f"{doc} scrolls sideways at {viewport['width']} px: {width}"

        # Diagrams: visible, inside their column, highlighted nodes on screen, zoomable.
        diagrams = page.evaluate(DIAGRAMS_JS)
        assert diagrams or not page.locator(".nbmodel-diagram svg").count(), f"{doc} has diagrams but shows none"
        for d in diagrams:
            what = f"diagram {d['label']!r} on {doc} at {viewport['width']} px"
            assert d["width"] > 20 and d["height"] > 8, f"{what} is not visible: {d}"
            assert d["left"] >= d["colLeft"] - 1 and d["right"] <= d["colRight"] + 1, f"{what} overflows: {d}"
            assert d["right"] <= viewport["width"] + 1, f"{what} is cut off by the window: {d}"
            for left, right in d["hl"]:
                assert left >= d["colLeft"] - 1 and right <= d["colRight"] + 1, f"{what}: highlight off-screen"
            assert d["zoom"], f"{what} does not open full size on click"

        # Math, if any, is typeset by the vendored MathJax.
        if page.locator(".math").count():
            page.locator("mjx-container").first.wait_for(state="attached", timeout=30_000)

        if doc == "notebooks/00_pipeline":
            slider = page.locator(".jupyter-widgets .widget-slider").first
            slider.wait_for(state="visible", timeout=10_000)
            assert page.locator(".jupyter-widgets .widget-readout").first.inner_text().strip() == "9"
            label = page.locator(".jupyter-widgets .widget-label", has_text="pages of 4 KiB").first
            assert label.inner_text().strip() == "order 9: 512 pages of 4 KiB = 2048 KiB"
    assert not problems, f"{doc} at {viewport['width']} px:\n" + "\n".join(problems)


# -- every control does something, or says it cannot ----------------------------------------------------------
# Controls of the article: widget controls, filmstrip labels, <details> summaries, toggle buttons. Not the
# theme's (search, colour mode, sidebars: tested elsewhere) and not copy buttons (they write the clipboard).
CONTROLS_JS = """() => {
    const sel = 'button, select, input:not([type=radio]), textarea, summary, label[for], .noUi-target';
    const all = [...document.querySelectorAll('.bd-article')].flatMap(a => [...a.querySelectorAll(sel)]);
    return all.filter(el => !el.closest('.copybtn, #nbmodel-zoom, .headerlink') &&
                           !el.matches('.copybtn, label.widget-label'))
              .map((el, i) => { el.setAttribute('data-probe', String(i)); return i; });
}"""

# What a reader sees of the control's cell (or section): the visible text, which radios are checked, which
# <details> are open.
VIEW_JS = """i => {
    const el = document.querySelector(`[data-probe="${i}"]`);
    const box = el.closest('.cell_output, .cell, section') || document.body;
    const radios = [...box.querySelectorAll('input[type=radio]')].map(r => r.checked ? 1 : 0).join('');
    const open = [...box.querySelectorAll('details')].map(d => d.open ? 1 : 0).join('');
    return box.innerText + '|' + radios + '|' + open;
}"""

STATE_JS = """i => {
    const el = document.querySelector(`[data-probe="${i}"]`);
    const r = el.getBoundingClientRect();
    const area = el.closest('.widget-subarea');
    const radio = el.matches('label[for]') ? document.getElementById(el.htmlFor) : null;
    return {
        tag: el.tagName.toLowerCase(), text: (el.innerText || el.value || '').trim().slice(0, 60),
        visible: r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden',
        disabled: el.disabled === true || el.hasAttribute('disabled') || el.getAttribute('aria-disabled') === 'true',
        looksDisabled: getComputedStyle(el).cursor === 'not-allowed' || parseFloat(getComputedStyle(el).opacity) < 0.7,
        note: !!(area && area.querySelector('.nbmodel-recorded-note')),
        noteText: area && area.querySelector('.nbmodel-recorded-note') ?
            area.querySelector('.nbmodel-recorded-note').innerText : '',
        quiz: !!(area && area.classList.contains('nbmodel-quiz-static')),
        current: !!(radio && radio.checked),
        widget: !!area,
    };
}"""


@pytest.mark.parametrize("doc", PAGES)
def test_every_control_changes_the_view_or_is_disabled(doc, browser, book_server):
    clicked = disabled = 0
    with book_page(browser, book_server, doc) as (page, problems):
        for i in page.evaluate(CONTROLS_JS):
            st = page.evaluate(STATE_JS, i)
            what = f"{doc}: {st['tag']} {st['text']!r}"
            if st["widget"] and not st["quiz"]:
                # a saved widget without a kernel: every control disabled, visibly, with the note
                assert st["disabled"] and st["looksDisabled"], f"{what} looks live in the static book"
                assert NOTE in st["noteText"], f"{what} has no 'recorded' note"
                disabled += 1
                continue
            if not st["visible"] or st["current"] or st["tag"] in ("input", "select", "textarea"):
                continue  # hidden (another filmstrip frame), the frame already shown, a quiz's answer field
            before = page.evaluate(VIEW_JS, i)
            page.locator(f'[data-probe="{i}"]').click(timeout=5_000)
            page.wait_for_timeout(60)
            after = page.evaluate(VIEW_JS, i)
            assert after != before, f"{what} is enabled but clicking it changed nothing"
            clicked += 1
            if st["tag"] == "summary":  # close it again, so the page is as it was for the next control
                page.locator(f'[data-probe="{i}"]').click(timeout=5_000)
    assert not problems, f"{doc}:\n" + "\n".join(problems)
    print(f"{doc}: {clicked} controls clicked and changed the view, {disabled} disabled with the note")


@pytest.mark.parametrize("doc", ["notebooks/01_why", "notebooks/03_page_cache"])
def test_quiz_check_answers_in_the_static_book(doc, browser, book_server):
    with book_page(browser, book_server, doc) as (page, problems):
        question = page.locator(".nbmodel-quiz-question[data-answer]").first
        answer = question.get_attribute("data-answer")
        area = page.locator(".widget-subarea.nbmodel-quiz-static").first
        field, check = area.locator("input").first, area.locator("button", has_text="Check")
        feedback = area.locator(".widget-label").last
        check.click()
        assert feedback.inner_text() == "Type an answer first."
        wrong = str(int(answer) + 1)
        field.fill(wrong)
        check.click()
        assert feedback.inner_text() == f"Not {wrong}. Try again, or open the answer below."
        field.fill(f" {answer} ")
        check.click()
        assert feedback.inner_text() == f"Right: {answer}. The model agrees."
        # the answer it checks against is the one the page reveals
        page.locator("details.nbmodel-quiz-answer summary").first.click()
        assert f"Answer: {answer}" in page.locator("details.nbmodel-quiz-answer").first.inner_text()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("width", [390, 900])
def test_chapter_navigation_opens_on_touch(width, browser, book_server):
    viewport = {"width": width, "height": 844}
    with book_page(browser, book_server, "notebooks/04_v12_per_folio", viewport, has_touch=True,
                   is_mobile=True) as (page, problems):
        toggle = page.locator(".primary-toggle:visible")
        assert toggle.count() == 1
        dialog = page.locator("#pst-primary-sidebar-modal")
        assert not dialog.evaluate("d => d.open")
        toggle.tap()
        page.wait_for_function("() => document.getElementById('pst-primary-sidebar-modal').open", timeout=5_000)
        link = dialog.locator("a.reference.internal", has_text="Side by side").first
        link.wait_for(state="visible", timeout=5_000)
        box = link.bounding_box()
        assert box and 0 <= box["x"] < width, box
        link.tap()
        page.wait_for_url("**/06_side_by_side.html", timeout=10_000)
    assert not problems, "\n".join(problems)


def test_diagram_opens_full_size_at_its_highlighted_node(browser, book_server):
    with book_page(browser, book_server, "notebooks/02_direct_map", PHONE) as (page, problems):
        svg = page.locator("svg[data-nbmodel-zoom]:has(.nbmodel-hl)").first
        svg.scroll_into_view_if_needed()
        inline = svg.bounding_box()
        svg.click()
        dialog = page.locator("#nbmodel-zoom")
        page.wait_for_function("() => document.getElementById('nbmodel-zoom').open", timeout=5_000)
        big = dialog.locator("svg").first
        natural = big.bounding_box()
        assert natural["width"] > inline["width"] * 1.5, (inline, natural)  # full size, not the fitted one
        hl = dialog.locator(".nbmodel-hl").first.bounding_box()
        assert 0 <= hl["x"] and hl["x"] + hl["width"] <= PHONE["width"], hl  # scrolled to the highlighted node
        dialog.locator("button[data-zoom=in]").click()
        assert big.bounding_box()["width"] > natural["width"] * 1.2
        dialog.locator("button[data-zoom=close]").click()
        assert not dialog.evaluate("d => d.open")
    assert not problems, "\n".join(problems)
