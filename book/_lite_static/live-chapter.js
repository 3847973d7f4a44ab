// "Run this chapter live": on each chapter page (notebooks/NN_*.html) a button in the page header opens the
// same notebook in the book's own JupyterLite site (lite/, built by scripts/build_lite.sh), where it runs in
// the browser with the Pyodide kernel. Nothing is fetched from outside the book. On a narrow screen the link is
// to the single-notebook interface (lite/notebooks/: no side panels), where JupyterLab's file browser would
// leave the notebook a sliver of the screen. lite/chapters.json says
// which chapters can run there; a chapter that needs a package the site cannot serve gets a disabled button
// that says which.
(function () {
  "use strict";
  const NARROW = window.matchMedia("(max-width: 700px)");
  const STYLE = "font-size:.8rem;font-weight:600;line-height:1.3;padding:.2rem .55rem;white-space:nowrap;" +
    "border:1px solid currentColor;border-radius:.3rem;margin-right:.5em;align-self:center";

  function place(el) {
    const header = document.querySelector(".article-header-buttons");
    if (header) {
      header.prepend(el);
    } else {
      (document.querySelector("article") || document.body).prepend(el);
    }
  }

  function chapterOfPage() {
    const rootAttr = document.documentElement.dataset.content_root;
    if (rootAttr === undefined) return null;
    const root = new URL(rootAttr, window.location.href);
    const here = new URL(window.location.href);
    here.hash = "";
    here.search = "";
    if (!here.href.startsWith(root.href)) return null;
    const match = /^notebooks\/(\d\d_[\w-]+)\.html$/.exec(here.href.slice(root.href.length));
    return match ? { root: root, name: match[1] } : null;
  }

  // Two labels: the short one replaces the long one on phones (nbmodel-book.css), so the header never
  // makes the page wider than the screen.
  function label(el, long, short) {
    for (const [cls, text] of [["nbmodel-live-long", long], ["nbmodel-live-short", short]]) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      el.appendChild(span);
    }
  }

  function button(chapter, info) {
    if (document.querySelector(".nbmodel-live-button")) return;
    if (info && info.live === false) {
      const note = document.createElement("span");
      note.className = "btn btn-sm nbmodel-live-button disabled";
      note.setAttribute("aria-disabled", "true");
      note.title = "This chapter cannot run in the browser: it needs " + info.missing.join(", ") +
        ", which the live site cannot serve. Run it in JupyterLab instead.";
      label(note, "\u25B6 Live: not available", "\u25B6 Live: n/a");
      note.style.cssText = STYLE + ";opacity:.6";
      place(note);
      return;
    }
    const link = document.createElement("a");
    link.className = "btn btn-sm nbmodel-live-button";
    const aim = () => {
      const target = new URL(NARROW.matches ? "lite/notebooks/index.html" : "lite/lab/index.html", chapter.root);
      target.searchParams.set("path", chapter.name + ".ipynb");
      link.href = target.href;
    };
    aim();
    NARROW.addEventListener("change", aim);
    link.title = window.location.protocol === "file:"
      ? "The live chapters need the book served over HTTP, e.g. .venv/bin/python -m http.server -d book/_build/html"
      : "Run this chapter live in your browser (JupyterLite, Python in WebAssembly: no server)" +
        (info && info.without && info.without.length
          ? ". There it runs without " + info.without.join(", ") + " (imported optionally)"
          : "");
    link.setAttribute("aria-label", "Run this chapter live");
    label(link, "\u25B6 Run this chapter live", "\u25B6 Live");
    link.style.cssText = STYLE;
    place(link);
  }

  function start() {
    const chapter = chapterOfPage();
    if (!chapter) return;
    if (window.location.protocol === "file:") {
      button(chapter, null);  // fetch() cannot read files from a file:// page
      return;
    }
    fetch(new URL("lite/chapters.json", chapter.root))
      .then((r) => (r.ok ? r.json() : {}))
      .then((all) => button(chapter, all[chapter.name] || null))
      .catch(() => button(chapter, null));
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
