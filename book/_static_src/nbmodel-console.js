/*
 * Loaded before embed.js. @jupyter-widgets/html-manager 1.0.15 compiles its widget-state JSON schema with ajv in
 * strict mode, and ajv warns on the console ("strict mode: use allowUnionTypes ...") on every page with a
 * widget: a message about the vendored library's own schema that a reader can do nothing about. This one
 * message is dropped; every other warning passes through unchanged.
 */
(function () {
  "use strict";
  var warn = console.warn;
  console.warn = function () {
    var first = arguments[0];
    if (typeof first === "string" && first.indexOf("strict mode: use allowUnionTypes") === 0) {
      return;
    }
    return warn.apply(console, arguments);
  };
})();
