/*
 * The static book in a reader's browser: what the theme and the saved widgets leave undone.
 *
 * 1. Chapter navigation on phones and tablets. pydata-sphinx-theme 0.17.1 (the newest that works with
 *    jupyter-book 1's Sphinx 7) binds its "open the sidebar" handler to document.querySelector(".primary-toggle"),
 *    the FIRST such button, which sphinx-book-theme hides; the button a reader sees does nothing (upstream
 *    pydata-sphinx-theme issue 2451). A click on any other .primary-toggle / .secondary-toggle is forwarded to
 *    the first one, so the theme's own handlers (dialog on narrow screens, collapse on wide ones) run.
 * 2. Diagrams. Graphviz SVGs shrink to their column (CSS in nbmodel-book.css); a click (or Enter) opens one
 *    full-size in a dialog with zoom buttons, scrolled to its highlighted node (class nbmodel-hl).
 * 3. Saved widgets. There is no kernel behind the static book: a widget's buttons and drop-downs would look live
 *    and do nothing. Every control of a saved widget is disabled, with a note saying what to do instead. The one
 *    exception is a quiz (nbmodel.viz.quiz): its question carries the model's answer, so Check is answered here.
 */
(function () {
  "use strict";

  var NOTE = "recorded \u2014 run this chapter live to change it";

  // -- 1. sidebar toggles -------------------------------------------------------------------------------------
  function fixToggles() {
    [".primary-toggle", ".secondary-toggle"].forEach(function (selector) {
      var all = document.querySelectorAll(selector);
      if (all.length < 2) {
        return;
      }
      var bound = all[0];
      for (var i = 1; i < all.length; i++) {
        all[i].addEventListener("click", function (event) {
          event.preventDefault();
          event.stopPropagation();
          bound.click();
        });
      }
    });
  }

  // -- 2. diagrams --------------------------------------------------------------------------------------------
  function isDiagram(svg) {
    return svg && svg.tagName && svg.tagName.toLowerCase() === "svg" && svg.querySelector(":scope > g.graph") &&
      svg.closest(".bd-article") && !svg.closest("#nbmodel-zoom");
  }

  function naturalSize(svg) {
    var vb = svg.viewBox && svg.viewBox.baseVal;
    var w = vb && vb.width ? vb.width : svg.getBBox().width;
    var h = vb && vb.height ? vb.height : svg.getBBox().height;
    return { w: w * 4 / 3, h: h * 4 / 3 }; // graphviz sizes are points
  }

  function zoomDialog() {
    var dlg = document.getElementById("nbmodel-zoom");
    if (dlg) {
      return dlg;
    }
    dlg = document.createElement("dialog");
    dlg.id = "nbmodel-zoom";
    dlg.setAttribute("aria-label", "diagram, full size");
    dlg.innerHTML =
      '<div class="nbmodel-zoom-bar">' +
      '<button type="button" data-zoom="out" title="zoom out">\u2212</button>' +
      '<button type="button" data-zoom="1" title="natural size">100%</button>' +
      '<button type="button" data-zoom="in" title="zoom in">+</button>' +
      '<button type="button" data-zoom="fit" title="fit the window">fit</button>' +
      '<span class="nbmodel-zoom-level"></span>' +
      '<button type="button" data-zoom="close" title="close (Esc)">close \u2715</button>' +
      "</div>" +
      '<div class="nbmodel-zoom-body"></div>';
    document.body.appendChild(dlg);
    dlg.addEventListener("click", function (event) {
      var b = event.target.closest("button[data-zoom]");
      if (event.target === dlg) {
        dlg.close(); // a click on the backdrop
        return;
      }
      if (!b) {
        return;
      }
      var how = b.getAttribute("data-zoom");
      if (how === "close") {
        dlg.close();
      } else if (how === "in") {
        setScale(dlg, dlg._scale * 1.25);
      } else if (how === "out") {
        setScale(dlg, dlg._scale / 1.25);
      } else if (how === "1") {
        setScale(dlg, 1);
      } else if (how === "fit") {
        setScale(dlg, fitScale(dlg));
      }
    });
    dlg.addEventListener("close", function () {
      dlg.querySelector(".nbmodel-zoom-body").innerHTML = "";
      if (dlg._from && dlg._from.focus) {
        dlg._from.focus();
      }
    });
    return dlg;
  }

  function fitScale(dlg) {
    var body = dlg.querySelector(".nbmodel-zoom-body");
    var s = Math.min((body.clientWidth - 8) / dlg._size.w, (body.clientHeight - 8) / dlg._size.h);
    return Math.max(0.05, Math.min(s, 1));
  }

  function setScale(dlg, scale) {
    scale = Math.max(0.05, Math.min(scale, 8));
    dlg._scale = scale;
    var svg = dlg.querySelector(".nbmodel-zoom-body svg");
    svg.style.width = Math.round(dlg._size.w * scale) + "px";
    svg.style.height = Math.round(dlg._size.h * scale) + "px";
    dlg.querySelector(".nbmodel-zoom-level").textContent = Math.round(scale * 100) + "%";
  }

  function openZoom(svg) {
    var dlg = zoomDialog();
    var clone = svg.cloneNode(true);
    clone.removeAttribute("style");
    clone.classList.remove("nbmodel-fit");
    clone.style.maxWidth = "none";
    clone.removeAttribute("tabindex");
    var body = dlg.querySelector(".nbmodel-zoom-body");
    body.innerHTML = "";
    body.appendChild(clone);
    dlg._size = naturalSize(svg);
    dlg._from = svg;
    dlg.showModal();
    setScale(dlg, 1);
    var hl = clone.querySelector(".nbmodel-hl");
    if (hl) {
      var r = hl.getBoundingClientRect();
      var b = body.getBoundingClientRect();
      body.scrollLeft += r.left - b.left - (b.width - r.width) / 2;
      body.scrollTop += r.top - b.top - (b.height - r.height) / 2;
    }
  }

  function setupDiagrams() {
    document.querySelectorAll(".bd-article svg").forEach(function (svg) {
      if (!isDiagram(svg) || svg.hasAttribute("data-nbmodel-zoom")) {
        return;
      }
      svg.setAttribute("data-nbmodel-zoom", "1");
      svg.setAttribute("tabindex", "0");
      svg.setAttribute("role", "button");
      svg.setAttribute("aria-label", "diagram: click to open it full size");
    });
  }

  document.addEventListener("click", function (event) {
    var svg = event.target.closest && event.target.closest("svg[data-nbmodel-zoom]");
    if (svg) {
      event.preventDefault();
      openZoom(svg);
    }
  });
  document.addEventListener("keydown", function (event) {
    if ((event.key === "Enter" || event.key === " ") && event.target.matches &&
        event.target.matches("svg[data-nbmodel-zoom]")) {
      event.preventDefault();
      openZoom(event.target);
    }
  });

  // -- 3. saved widgets ---------------------------------------------------------------------------------------
  var CONTROLS = "button, select, input, textarea, .noUi-target, .widget-readout";

  function quizFor(area) {
    // A quiz shows three outputs in one cell: the question (with the answer in data attributes), the
    // input + Check widget, the revealable answer.
    var output = area.closest(".cell_output");
    var q = output && output.querySelector(".nbmodel-quiz-question[data-answer]");
    return q && area.querySelector("button") ? q : null;
  }

  function quizFeedback(q, given) {
    // The same rule as nbmodel.viz.quiz.Quiz.feedback.
    var answer = q.getAttribute("data-answer");
    given = (given || "").trim();
    if (!given) {
      return "Type an answer first.";
    }
    var right = q.getAttribute("data-kind") === "int" ?
      /^[-+]?\d+$/.test(given) && parseInt(given, 10) === parseInt(answer, 10) :
      given.toLowerCase() === answer.trim().toLowerCase();
    return right ? "Right: " + answer + ". The model agrees." : "Not " + given + ". Try again, or open the answer below.";
  }

  function wireQuiz(area, q) {
    var button = area.querySelector("button");
    var field = area.querySelector("input, select");
    var labels = area.querySelectorAll(".widget-label");
    var out = labels[labels.length - 1];
    area.classList.add("nbmodel-quiz-static");
    button.addEventListener("click", function () {
      out.textContent = quizFeedback(q, field ? field.value : "");
      out.setAttribute("role", "status");
    });
  }

  function freeze(area) {
    area.querySelectorAll(CONTROLS).forEach(function (el) {
      if (el.classList.contains("widget-readout")) {
        el.setAttribute("contenteditable", "false");
      }
      el.setAttribute("disabled", "");
      el.setAttribute("aria-disabled", "true");
      el.setAttribute("title", NOTE);
      el.tabIndex = -1;
    });
    area.classList.add("nbmodel-recorded");
    var note = document.createElement("div");
    note.className = "nbmodel-recorded-note";
    note.textContent = NOTE + ": the controls below show the settings it was recorded with.";
    area.insertBefore(note, area.firstChild);
  }

  function setupWidgets() {
    document.querySelectorAll(".bd-article .widget-subarea").forEach(function (area) {
      if (area.hasAttribute("data-nbmodel-static") || !area.querySelector(CONTROLS)) {
        return; // done, or not rendered yet
      }
      area.setAttribute("data-nbmodel-static", "1");
      var q = quizFor(area);
      if (q) {
        wireQuiz(area, q);
      } else {
        freeze(area);
      }
    });
  }

  function setupAll() {
    setupDiagrams();
    setupWidgets();
  }

  function start() {
    fixToggles();
    setupAll();
    // embed.js renders saved widgets after the page's load event; widgets (stepper pictures) can bring SVG.
    var pending = false;
    new MutationObserver(function () {
      if (!pending) {
        pending = true;
        window.requestAnimationFrame(function () {
          pending = false;
          setupAll();
        });
      }
    }).observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
