"""Every page of the built book in a real browser (Debian chromium driven by Playwright).

The book is served on a localhost port; every request for another host is aborted and counted as a failure,
as are console errors, page errors and failed or 4xx/5xx responses. On each page: diagrams are visible SVG,
every saved widget is rendered by the vendored html-manager, math is typeset by the vendored MathJax.
A full-page screenshot per page goes to artifacts/screenshots/book-<page>.png.
"""

from __future__ import annotations

import urllib.parse

import pytest
from conftest import CHROMIUM_ARGS, toc_docnames
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

PAGES = toc_docnames()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.parametrize("doc", PAGES)
def test_book_page_in_browser(doc, browser, book_server, screenshots_dir):
    host = urllib.parse.urlsplit(book_server).netloc
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    def route(r):
        if urllib.parse.urlsplit(r.request.url).netloc == host or r.request.url.startswith("data:"):
            r.continue_()
        else:
            problems.append(f"request outside the book: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
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

        # Inline graphviz diagrams are visible SVG. Filmstrip frames other than the selected one are hidden
        # by CSS on purpose, so only diagrams the page shows are measured, and there must be some.
        diagrams = page.locator(".nbmodel-diagram svg")
        shown = [diagrams.nth(i) for i in range(diagrams.count()) if diagrams.nth(i).is_visible()]
        assert shown or not diagrams.count(), f"{doc} has diagrams but shows none"
        for i, svg in enumerate(shown):
            svg.scroll_into_view_if_needed(timeout=10_000)
            box = svg.bounding_box()
            assert box and box["width"] > 20 and box["height"] > 20, f"diagram {i} on {doc} is not visible"

        # Every saved widget view is rendered by embed.js (it inserts a .jupyter-widgets element per view).
        views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
        if views:
            page.wait_for_function(
                "n => document.querySelectorAll('.jupyter-widgets.widget-container, "
                ".jupyter-widgets .widget-inline-hbox, .jupyter-widgets .widget-box, "
                ".jupyter-widgets .widget-slider').length >= 1 && "
                "document.querySelectorAll('.jupyter-widgets').length >= n",
                arg=views,
                timeout=30_000,
            )

        # Math, if any, is typeset by the vendored MathJax.
        if page.locator(".math").count():
            page.locator("mjx-container").first.wait_for(state="attached", timeout=30_000)

        if doc == "notebooks/00_pipeline":
            slider = page.locator(".jupyter-widgets .widget-slider").first
            slider.wait_for(state="visible", timeout=10_000)
            assert page.locator(".jupyter-widgets .widget-readout").first.inner_text().strip() == "9"
            label = page.locator(".jupyter-widgets .widget-label", has_text="pages of 4 KiB").first
            assert label.inner_text().strip() == "order 9: 512 pages of 4 KiB = 2048 KiB"
            assert page.locator(".nbmodel-diagram svg").count() == 1

        page.wait_for_timeout(300)  # let late console errors arrive
    finally:
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(screenshots_dir / f"book-{doc.replace('/', '-')}.png"), full_page=True)
        context.close()
    assert not problems, f"{doc}:\n" + "\n".join(problems)
