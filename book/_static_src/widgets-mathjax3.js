/*
 * ipywidgets' embed.js (@jupyter-widgets/html-manager 1.x) typesets widget labels with the MathJax 2 API,
 * `MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])`, whenever `window.MathJax` exists. This book
 * serves MathJax 3, which has no `Hub`, so every widget with a description threw a TypeError.
 * Give MathJax 3 a `Hub.Queue` that typesets through its own API. embed.js renders on window `load`;
 * MathJax 3 (a deferred script) has replaced `window.MathJax` by DOMContentLoaded, so install then.
 */
(function () {
  "use strict";
  function install() {
    var mj = window.MathJax;
    if (!mj || mj.Hub) {
      return;
    }
    mj.Hub = {
      Queue: function () {
        var elements = [];
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (Array.isArray(job) && job[0] === "Typeset" && job[2]) {
            elements.push(job[2]);
          }
        }
        var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
        ready
          .then(function () {
            return mj.typesetPromise ? mj.typesetPromise(elements) : null;
          })
          .catch(function (err) {
            console.warn("widget label typesetting failed", err);
          });
      },
    };
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", install);
  } else {
    install();
  }
})();
