// "Run this chapter live": on each chapter page (notebooks/NN_*.html) a button in the page header opens the
// same notebook in the book's own JupyterLite site (lite/, built by scripts/build_lite.sh), where it runs in
// the browser with the Pyodide kernel. Nothing is fetched from outside the book.
(function () {
  "use strict";
  function addButton() {
    if (document.querySelector(".nbmodel-live-button")) return;
    const rootAttr = document.documentElement.dataset.content_root;
    if (rootAttr === undefined) return;
    const root = new URL(rootAttr, window.location.href);
    const here = new URL(window.location.href);
    here.hash = "";
    here.search = "";
    if (!here.href.startsWith(root.href)) return;
    const match = /^notebooks\/(\d\d_[\w-]+)\.html$/.exec(here.href.slice(root.href.length));
    if (!match) return;
    const target = new URL("lite/lab/index.html", root);
    target.searchParams.set("path", match[1] + ".ipynb");

    const link = document.createElement("a");
    link.className = "btn btn-sm nbmodel-live-button";
    link.href = target.href;
    link.title = "Run this chapter live in your browser (JupyterLite, Python in WebAssembly: no server)";
    link.setAttribute("aria-label", "Run this chapter live");
    link.textContent = "\u25B6 Run this chapter live";
    link.style.cssText = "font-weight:600;white-space:nowrap;border:1px solid currentColor;margin-right:.5em";

    const header = document.querySelector(".article-header-buttons");
    if (header) {
      header.prepend(link);
    } else {
      const article = document.querySelector("article") || document.body;
      article.prepend(link);
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", addButton);
  } else {
    addButton();
  }
})();
