// The owner console's progressive enhancement. Every page works without this file: the
// server checks the typed name and the CSRF token whatever happens here.
(function () {
  "use strict";

  // "Disable {name}?" / "Delete {name}?": the button is enabled once the typed name matches exactly.
  document.querySelectorAll("form[data-confirm-name]").forEach(function (form) {
    var name = form.getAttribute("data-confirm-name");
    var input = form.querySelector("input[name=confirm_name]");
    var button = form.querySelector("button[type=submit]");
    if (!input || !button) {
      return;
    }
    var sync = function () {
      button.disabled = input.value !== name;
    };
    input.addEventListener("input", sync);
    sync();
  });

  // Escape leaves the dialog, as Cancel does.
  if (document.querySelector(".dialog")) {
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        window.location.assign("/categories");
      }
    });
  }

  // The enable switch: one press sends one request, however quickly it is pressed again.
  document.querySelectorAll("form.inline").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.getAttribute("data-sent") === "true") {
        event.preventDefault();
        return;
      }
      form.setAttribute("data-sent", "true");
    });
  });
})();
