"""Shared fixtures: the repository root, the built book, the TOC, a local HTTP server, and chromium."""

from __future__ import annotations

import functools
import heapq
import http.server
import os
import pathlib
import subprocess
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
BOOK_HTML = BOOK / "_build" / "html"
CHROMIUM = pathlib.Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "artifacts" / "screenshots"

# Chromium flags for this machine: root (no sandbox), no GPU, and no background traffic to Google's hosts
# (the network is closed; without these flags chromium keeps retrying connections).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("NBMODEL_SKIP_BROWSER") == "1":
        skip = pytest.mark.skip(reason="NBMODEL_SKIP_BROWSER=1: browser tests skipped")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path to Debian's chromium. Missing is a failure, not a skip: ./test.sh installs it."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run ./test.sh (it installs Debian's chromium), or "
            "apt-get install -y chromium, or set NBMODEL_SKIP_BROWSER=1 to skip browser tests"
        )
    return str(CHROMIUM)


def toc_docnames() -> list[str]:
    """Document names of every page in book/_toc.yml, in reading order (root first, no suffix)."""
    import yaml

    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(str(entry["file"]).removesuffix(".ipynb").removesuffix(".md"))
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    return names


def _book_sources() -> list[pathlib.Path]:
    sources = list(BOOK.glob("*.md")) + list(BOOK.glob("*.yml")) + list((BOOK / "_static_src").glob("*"))
    sources += list((ROOT / "notebooks").glob("*.ipynb"))
    sources += list((ROOT / "nbmodel").rglob("*.py")) + list((ROOT / "scenarios").rglob("*.toml"))
    return sources


def book_is_stale() -> bool:
    log = BOOK / "_build" / "build.log"
    if not (BOOK_HTML / "index.html").exists() or not log.exists():
        return True
    built = log.stat().st_mtime
    return any(p.stat().st_mtime > built for p in _book_sources())


@pytest.fixture(scope="session")
def book_html() -> pathlib.Path:
    """book/_build/html, built by scripts/build_book.sh (as test.sh does) if missing or older than a source."""
    if book_is_stale():
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "build_book.sh")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            pytest.fail(f"the book did not build:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
    return BOOK_HTML


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass


@pytest.fixture(scope="session")
def book_server(book_html):
    """Serve the built book on a free localhost port; yields the base URL (ending in '/')."""
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def screenshots_dir() -> pathlib.Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def give_back_last(self, block):
    """A planted allocator bug (monkeypatched over ``PageblockOrder.give_back``): a freed pageblock goes to the end
    of the order with a fresh place, as a list append would, instead of taking its old place. The order is fixed
    at boot and shared by machines alike, so this allocator gets its own, longer one."""
    self.rank = self.rank[:block] + (len(self.order),) + self.rank[block + 1:]
    self.order = self.order + (block,)
    heapq.heappush(self._whole, self.rank[block])
